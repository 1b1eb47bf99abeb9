//! The fuzz targets' bodies, shared by the cargo-fuzz binaries (`fuzz/fuzz_targets/*.rs`) and
//! by the seed-corpus replay in `cargo test` (`tests/e2e/fuzz_corpus.rs`), so that CI runs the
//! very checks the fuzzer runs, on stable Rust. Each function takes the fuzzer's raw bytes and
//! panics on a violated property; a panic is a crash. Nothing here does I/O.

use chrono::{TimeZone, Utc};
use feedmux::dedup::canonical_url;
use feedmux::publish::{entry_id, render_entries, Format, OutputEntry, SourceInfo};

/// The ingest path: the first byte is the length of a content type, the rest the body, as
/// fetched from `https://fuzz.example/feed`. Whatever the bytes, parsing returns entries or
/// an error; every entry's link is absolute and its title a single line.
pub fn ingest(data: &[u8]) {
    let (content_type, body) = match data.split_first() {
        Some((&n, rest)) if (n as usize) <= rest.len() && n > 0 => {
            let (ct, body) = rest.split_at(n as usize);
            (Some(String::from_utf8_lossy(ct).into_owned()), body)
        }
        Some((_, rest)) => (None, rest),
        None => (None, data),
    };
    let base = url::Url::parse("https://fuzz.example/feed").unwrap();
    let now = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    if let Ok(parsed) = feedmux::parse::parse_feed(body, content_type.as_deref(), &base, now) {
        for entry in &parsed.entries {
            if let Some(link) = &entry.url {
                assert!(url::Url::parse(link).is_ok(), "link not absolute: {link:?}");
            }
            assert!(
                !entry.title.contains(['\n', '\r']),
                "title spans lines: {:?}",
                entry.title
            );
            for html in [&entry.summary_html, &entry.content_html]
                .into_iter()
                .flatten()
            {
                let lower = html.to_ascii_lowercase();
                assert!(!lower.contains("<script"), "script survived: {html}");
            }
        }
    }
}

/// The config parser: any text is a config or a list of located errors, never a panic.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let path = std::path::Path::new("/nonexistent/fuzz.toml");
    match feedmux::config::parse(path, &text) {
        Ok(config) => {
            for feed in &config.feeds {
                assert!(feed.limit >= 1 && feed.limit <= feedmux::config::MAX_FEED_LIMIT);
            }
        }
        Err(errors) => assert!(!errors.0.is_empty(), "an error list is never empty"),
    }
}

/// URL canonicalisation: any text; a canonical form is its own canonical form, and an http(s)
/// URL.
pub fn canonical(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(once) = canonical_url(&text) {
        assert!(
            once.starts_with("http://") || once.starts_with("https://"),
            "{once}"
        );
        assert_eq!(
            canonical_url(&once).as_deref(),
            Some(once.as_str()),
            "not idempotent, from {text:?}"
        );
    }
}

/// The renderers: the bytes are cut at 0xFF into strings (lossy UTF-8) that become the
/// titles, links, bodies and source names of up to eight entries. Every format must parse
/// back (feed-rs) with the same number of entries, in order, with their ids, and no body may
/// carry a script.
pub fn render(data: &[u8]) {
    let mut parts = data
        .split(|b| *b == 0xFF)
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let feed_title = parts.next().unwrap_or_default();
    let mut entries = Vec::new();
    while entries.len() < 8 {
        let Some(title) = parts.next() else { break };
        let url = parts.next().filter(|u| !u.is_empty());
        let body = parts.next().filter(|b| !b.is_empty());
        let source = parts.next().unwrap_or_default();
        let n = entries.len();
        let id = feedmux::dedup::item_id("fuzz", &n.to_string());
        let at = Utc.timestamp_opt(1_700_000_000 - n as i64, 0).unwrap();
        entries.push(OutputEntry {
            item: feedmux::model::Item {
                id,
                source: "fuzz".into(),
                guid: n.to_string(),
                url: url.clone(),
                canonical_url: url.as_deref().and_then(canonical_url),
                title,
                summary_html: body.clone(),
                content_html: body,
                authors: vec![source.clone()],
                categories: vec![source.clone()],
                enclosures: vec![],
                published: at,
                updated: None,
                first_seen: at,
                modified: at,
                content_hash: 0,
                story: id,
                sanitised: 0,
            },
            source: SourceInfo {
                title: source.clone(),
                feed_url: Some("https://fuzz.example/feed".into()),
                site_url: url,
            },
            also: vec![(
                SourceInfo {
                    title: source,
                    feed_url: Some("https://other.example/feed".into()),
                    site_url: None,
                },
                Some("https://other.example/a?b=<c>&d=\"e\"".into()),
            )],
        });
    }
    let mut config = feedmux::config::parse(
        std::path::Path::new("/nonexistent/fuzz.toml"),
        "[storage]\npath = \"unused\"\n[[source]]\nname = \"fuzz\"\nurl = \"https://fuzz.example/feed\"\n[[feed]]\nname = \"all\"\n",
    )
    .unwrap();
    config.feeds[0].title = feed_title;
    let rendered = render_entries(&config, &config.feeds[0], &entries);
    for format in Format::ALL {
        let body = &rendered.get(format).unwrap().body;
        let feed = feed_rs::parser::parse(&body[..]).unwrap_or_else(|e| {
            panic!(
                "{format:?} does not parse back: {e}\n{}",
                String::from_utf8_lossy(body)
            )
        });
        assert_eq!(feed.entries.len(), entries.len(), "{format:?}");
        for (got, want) in feed.entries.iter().zip(&entries) {
            assert_eq!(got.id, entry_id(want.item.id), "{format:?}");
            for content in got.content.iter().filter_map(|c| c.body.as_ref()) {
                assert!(
                    !content.to_ascii_lowercase().contains("<script"),
                    "{format:?}: script in {content}"
                );
            }
        }
    }
}
