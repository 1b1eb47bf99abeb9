//! Property tests (proptest): invariants that must hold for arbitrary input, not just the
//! examples the other tests pick. Case counts are bounded so that `cargo test` stays fast;
//! `PROPTEST_CASES=10000 cargo test --test e2e properties` runs a longer search.
//!
//! - rendering then parsing an output feed gives back the same entries (titles, links, ids), in
//!   every format, whatever the strings (control characters, CJK, `]]>`, `<`, `&`, bidi marks);
//! - canonical URLs are idempotent;
//! - a feed with no rules keeps every item of its sources;
//! - dedup never puts two items of one source with different GUIDs into one story.

use chrono::{TimeZone, Utc};
use feedmux::config::{self, Config};
use feedmux::dedup::{self, canonical_url, DedupConfig};
use feedmux::filter::FeedFilter;
use feedmux::model::{Entry, Item, ItemId};
use feedmux::publish::{entry_id, render_entries, Format, OutputEntry, SourceInfo};
use feedmux::store::Store;
use feedmux::text::collapse_whitespace;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

/// Characters that break naive XML/JSON writers, mixed with ordinary and CJK text.
fn nasty_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("]]>".to_owned()),
        Just("<".to_owned()),
        Just("&".to_owned()),
        Just("&amp;".to_owned()),
        Just("<script>alert(1)</script>".to_owned()),
        Just("\"'".to_owned()),
        Just("\u{202E}".to_owned()), // right-to-left override
        Just("\u{200B}".to_owned()), // zero-width space
        Just("\u{FEFF}".to_owned()),
        Just("\u{FFFE}".to_owned()),
        Just("\r\n\t".to_owned()),
        Just("人工智能大模型".to_owned()),
        Just("量子位".to_owned()),
        "[\\x00-\\x1f]{1,3}",
        "[a-zA-Z0-9 ]{1,12}",
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..6).prop_map(|parts| parts.concat())
}

/// Absolute http(s) URLs with arbitrary paths, queries and fragments (percent-encoded by the
/// URL parser as a real link is).
fn url_string() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("http"), Just("https"), Just("HTTPS")],
        "[a-zA-Z][a-zA-Z0-9-]{0,10}(\\.[a-zA-Z]{2,5}){1,2}",
        prop_oneof![Just(""), Just(":80"), Just(":443"), Just(":8080")],
        nasty_string(),
        prop::collection::vec(
            (
                prop_oneof![
                    Just("utm_source".to_owned()),
                    Just("from".to_owned()),
                    Just("spm".to_owned()),
                    Just("a".to_owned()),
                    "[a-z]{1,4}",
                    nasty_string()
                ],
                prop_oneof![Just("rss".to_owned()), nasty_string()],
            ),
            0..4,
        ),
        prop::option::of(nasty_string()),
    )
        .prop_filter_map(
            "not a URL",
            |(scheme, host, port, path, query, fragment)| {
                let mut url = url::Url::parse(&format!("{scheme}://{host}{port}/")).ok()?;
                url.set_path(&path);
                if !query.is_empty() {
                    url.query_pairs_mut().extend_pairs(query);
                }
                url.set_fragment(fragment.as_deref());
                Some(url.to_string())
            },
        )
}

fn render_config() -> Config {
    let dir = std::env::temp_dir();
    config::parse(
        &dir.join("properties.toml"),
        "[server]\nbase_url = \"http://feeds.test\"\n[storage]\npath = \"unused\"\n\
         [[source]]\nname = \"s\"\nurl = \"https://example.com/feed\"\n\
         [[feed]]\nname = \"all\"\ntitle = \"All\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn item(n: usize, title: String, url: Option<String>, body: Option<String>) -> Item {
    let id = dedup::item_id("s", &format!("guid-{n}"));
    let at = Utc.timestamp_opt(1_700_000_000 - n as i64 * 60, 0).unwrap();
    Item {
        id,
        source: "s".into(),
        guid: format!("guid-{n}"),
        canonical_url: url.as_deref().and_then(canonical_url),
        url,
        title,
        summary_html: None,
        content_html: body,
        authors: vec![],
        categories: vec![],
        enclosures: vec![],
        published: at,
        updated: None,
        first_seen: at,
        modified: at,
        content_hash: 0,
        story: id,
        sanitised: 0,
    }
}

/// What a reader compares of a title: XML cannot carry control characters, and readers
/// collapse whitespace, so both sides are compared in that form.
fn reader_text(s: &str) -> String {
    collapse_whitespace(
        &s.chars()
            .filter(|c| {
                !matches!(c, '\u{FFFE}' | '\u{FFFF}')
                    && (*c >= ' ' || matches!(c, '\t' | '\n' | '\r'))
            })
            .collect::<String>(),
    )
}

/// `n` cases, or `PROPTEST_CASES` when set (for long manual runs).
fn cases(n: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn rendered_feeds_parse_back_to_the_same_entries(
        entries in prop::collection::vec(
            (nasty_string(), prop::option::of(url_string()), prop::option::of(nasty_string()), nasty_string()),
            0..6,
        ),
        feed_title in nasty_string(),
    ) {
        let mut config = render_config();
        config.feeds[0].title = feed_title;
        let outputs: Vec<OutputEntry> = entries
            .into_iter()
            .enumerate()
            .map(|(n, (title, url, body, source_title))| OutputEntry {
                item: item(n, title, url, body),
                source: SourceInfo {
                    title: source_title,
                    feed_url: Some("https://example.com/feed".into()),
                    site_url: None,
                },
                also: vec![],
            })
            .collect();
        let rendered = render_entries(&config, &config.feeds[0], &outputs);
        for format in Format::ALL {
            let body = &rendered.get(format).unwrap().body;
            let feed = feed_rs::parser::parse(&body[..]).map_err(|e| {
                TestCaseError::fail(format!("{format:?} does not parse: {e}\n{}", String::from_utf8_lossy(body)))
            })?;
            prop_assert_eq!(feed.entries.len(), outputs.len(), "{:?}", format);
            for (got, want) in feed.entries.iter().zip(&outputs) {
                let title = got.title.as_ref().map(|t| t.content.clone()).unwrap_or_default();
                prop_assert_eq!(reader_text(&title), reader_text(&want.item.title), "{:?} title", format);
                prop_assert_eq!(&got.id, &entry_id(want.item.id), "{:?} id", format);
                let link = got.links.first().map(|l| l.href.clone());
                prop_assert_eq!(link, want.item.url.clone(), "{:?} link", format);
            }
        }
    }

    #[test]
    fn canonical_urls_are_idempotent(url in url_string()) {
        let once = canonical_url(&url);
        prop_assert!(once.is_some(), "an http(s) URL has a canonical form: {}", url);
        let once = once.unwrap();
        prop_assert_eq!(canonical_url(&once), Some(once.clone()), "from {}", url);
    }

    #[test]
    fn canonical_urls_of_any_text_are_idempotent(text in nasty_string()) {
        if let Some(once) = canonical_url(&text) {
            prop_assert_eq!(canonical_url(&once), Some(once.clone()), "from {:?}", text);
        }
    }

    #[test]
    fn a_feed_with_no_rules_keeps_everything(
        title in nasty_string(),
        body in prop::option::of(nasty_string()),
        url in prop::option::of(url_string()),
    ) {
        let config = render_config();
        let filter = FeedFilter::new(&config.feeds[0]);
        prop_assert!(filter.selects(&item(0, title, url, body)));
    }
}

/// An entry of one source: GUID `n`, with a title, link and body drawn from small pools so
/// that entries often share them.
fn entry_of(n: usize, title: usize, url: usize, body: usize) -> Entry {
    const TITLES: [&str; 4] = [
        "OpenAI releases GPT-7 with a million-token context",
        "阿里发布 Qwen4：支持 100 万 token 上下文",
        "OpenAI releases GPT-7 with a million-token context window",
        "Weekly digest",
    ];
    Entry {
        guid: Some(format!("g{n}")),
        url: Some(format!("https://news.example/{}", url % 3)),
        title: TITLES[title % TITLES.len()].to_owned(),
        summary_html: Some(format!("<p>{}</p>", TITLES[body % TITLES.len()])),
        published: Some(Utc.timestamp_opt(1_700_000_000 + n as i64, 0).unwrap()),
        ..Entry::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(24), failure_persistence: None, ..ProptestConfig::default() })]

    /// Polls of two sources, interleaved, whose entries share titles and links within and
    /// across sources: no story ever holds two items of one source.
    #[test]
    fn dedup_never_merges_items_of_one_source(
        polls in prop::collection::vec(
            (0..2usize, prop::collection::vec((0..4usize, 0..3usize, 0..4usize), 1..5)),
            1..6,
        ),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let now = Utc.timestamp_opt(1_700_000_100, 0).unwrap();
        let mut next_guid = 0;
        for (source, entries) in polls {
            let source = ["a", "b"][source];
            let entries: Vec<Entry> = entries
                .into_iter()
                .map(|(t, u, b)| {
                    next_guid += 1;
                    entry_of(next_guid, t, u, b)
                })
                .collect();
            let mut stats = store.ingest_guard();
            let plan = dedup::plan(&store, source, entries, now, &DedupConfig::default(), &mut stats)?;
            store.apply_poll(source, &plan, &[], &[], &Default::default(), stats)?;
        }
        let mut stories: std::collections::HashMap<ItemId, Vec<Item>> = Default::default();
        for id in store.all_items() {
            let item = store.item(id?)?.unwrap();
            stories.entry(item.story).or_default().push(item);
        }
        for members in stories.values() {
            let mut sources: Vec<&str> = members.iter().map(|m| m.source.as_str()).collect();
            sources.sort();
            let before = sources.len();
            sources.dedup();
            prop_assert_eq!(
                before,
                sources.len(),
                "one story holds two items of one source: {:?}",
                members.iter().map(|m| (&m.source, &m.guid, &m.title, &m.url)).collect::<Vec<_>>()
            );
        }
    }
}
