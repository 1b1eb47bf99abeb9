//! Paging and querying: `?limit=`, RFC 5005 `next`/`prev-archive` pages a reader can walk back
//! through, and `?q=` searches with the filters' matching rules.

use std::collections::HashSet;

use reqwest::header;

use crate::served::Served;
use crate::tempdir;
use crate::tools::xmllint_atom;
use crate::upstream::Upstream;

fn rss(items: &[(String, String, String, String)]) -> String {
    let mut body = String::from("<rss version=\"2.0\"><channel><title>T</title><link>https://t.example/</link><description>d</description>");
    for (guid, title, link, date) in items {
        body.push_str(&format!(
            "<item><guid>{guid}</guid><title>{title}</title><link>{link}</link><description>&lt;p&gt;Body of {guid}&lt;/p&gt;</description><pubDate>{date}</pubDate></item>"
        ));
    }
    body + "</channel></rss>"
}

fn date(minutes_ago: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::minutes(minutes_ago)).to_rfc2822()
}

/// The `href` of the document's link with `rel`, if any (Atom `<link>`, RSS `<atom:link>`).
fn link(doc: &str, rel: &str) -> Option<String> {
    let re = regex::Regex::new(&format!(r#"<(?:atom:)?link[^>]*\brel="{rel}"[^>]*>"#)).unwrap();
    let tag = re.find(doc)?.as_str();
    let href = regex::Regex::new(r#"\bhref="([^"]*)""#).unwrap();
    Some(href.captures(tag)?[1].replace("&amp;", "&"))
}

async fn text(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn titles_of(url: &str) -> Vec<(String, Option<String>)> {
    let (status, body) = text(url).await;
    assert_eq!(status, 200, "{url}: {body}");
    crate::read_back(body.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs xmllint: run by .ci/run, or cargo test -- --include-ignored"]
async fn a_reader_walks_back_through_every_story_page_by_page() {
    let upstream = Upstream::start().await;
    // Two sources report the same 12 stories (same links), half an hour apart, so the members
    // of a story fall on different pages; 13 more stories only one source has.
    let a: Vec<_> = (0..25)
        .map(|i| {
            (
                format!("a{i}"),
                format!("Story {i:02}"),
                format!("https://news.example/{i}"),
                date(i * 60),
            )
        })
        .collect();
    let b: Vec<_> = (0..12)
        .map(|i| {
            (
                format!("b{i}"),
                format!("Story {i:02} (B)"),
                format!("https://news.example/{i}?utm_source=b"),
                date(i * 60 + 30),
            )
        })
        .collect();
    upstream.put(
        "/a.xml",
        &[("content-type", "application/rss+xml")],
        rss(&a),
    );
    upstream.put(
        "/b.xml",
        &[("content-type", "application/rss+xml")],
        rss(&b),
    );
    let dir = tempdir();
    let served = Served::start(
        dir.path(),
        &format!(
            "[[source]]\nname = \"a\"\nurl = \"{}\"\npriority = 1\n\n[[source]]\nname = \"b\"\nurl = \"{}\"\n\n[[feed]]\nname = \"all\"\nlimit = 5\n",
            upstream.url("/a.xml"),
            upstream.url("/b.xml")
        ),
    )
    .await;
    served.wait_for("all", 5).await;
    // Wait until both sources are in (37 items, 25 stories) and the cached first page is
    // rendered from both.
    for _ in 0..100 {
        let (_, page) = text(&served.url("/feeds/all.json?limit=1000")).await;
        let (_, first) = text(&served.url("/feeds/all.json")).await;
        if page.matches("\"id\": \"urn:uuid:").count() == 25
            && first.contains("\"title\": \"Story 00\"")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    for format in ["atom", "rss", "json"] {
        let mut url = served.url(&format!("/feeds/all.{format}"));
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let (status, body) = text(&url).await;
            assert_eq!(status, 200, "{url}");
            let entries = crate::read_back(body.as_bytes());
            assert!(entries.len() <= 5, "{url}: {} entries", entries.len());
            seen.extend(entries.into_iter().map(|(t, l)| (t, l.unwrap_or_default())));
            pages += 1;
            let next = if format == "json" {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                v["next_url"].as_str().map(str::to_owned)
            } else {
                let next = link(&body, "next");
                assert_eq!(
                    next,
                    link(&body, "prev-archive"),
                    "{url}: prev-archive is the next page"
                );
                if pages > 1 {
                    assert_eq!(
                        link(&body, "first").as_deref(),
                        Some(served.url(&format!("/feeds/all.{format}")).as_str())
                    );
                }
                if format == "atom" && pages == 2 {
                    let file = dir.path().join("page2.atom");
                    std::fs::write(&file, &body).unwrap();
                    let (ok, out) = xmllint_atom(&file);
                    assert!(ok, "a page is valid Atom: {out}");
                }
                next
            };
            match next {
                Some(n) => url = n,
                None => break,
            }
            assert!(pages < 20, "pages never end");
        }
        let links: HashSet<&str> = seen.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(
            seen.len(),
            25,
            "{format}: each story once across the pages: {seen:#?}"
        );
        assert_eq!(links.len(), 25, "{format}: {seen:#?}");
        // Newest first across pages, each story as the priority source reports it.
        let expected: Vec<String> = (0..25).map(|i| format!("Story {i:02}")).collect();
        let titles: Vec<String> = seen.iter().map(|(t, _)| t.clone()).collect();
        assert_eq!(titles, expected, "{format}");
        assert_eq!(pages, 5, "{format}");
    }

    // ?limit=
    assert_eq!(
        titles_of(&served.url("/feeds/all.atom?limit=3"))
            .await
            .len(),
        3
    );
    assert_eq!(
        titles_of(&served.url("/feeds/all.rss?limit=5000"))
            .await
            .len(),
        25
    );
    let (_, capped) = text(&served.url("/feeds/all.atom?limit=5000")).await;
    assert!(
        link(&capped, "self").unwrap().ends_with("?limit=1000"),
        "capped at 1000"
    );
    for bad in [
        "limit=0",
        "limit=many",
        "before=yesterday",
        "before=123-xyz",
    ] {
        let (status, body) = text(&served.url(&format!("/feeds/all.atom?{bad}"))).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    // Unknown parameters are ignored: the cached feed.
    assert_eq!(
        titles_of(&served.url("/feeds/all.atom?_=12345"))
            .await
            .len(),
        5
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q_searches_with_the_filters_rules_and_answers_with_etags() {
    let upstream = Upstream::start().await;
    let titles = [
        "AI chips arrive",
        "ＡＩ芯片发布",
        "OpenAI hires",
        "Said the maid",
        "New chips for phones",
        "大模型 AI 评测",
    ];
    let items: Vec<_> = titles
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (
                format!("g{i}"),
                t.to_string(),
                format!("https://s.example/{i}"),
                date(i as i64),
            )
        })
        .collect();
    let mut body = rss(&items);
    // One item mentions AI only in its (hostile) content.
    body = body.replace(
        "&lt;p&gt;Body of g4&lt;/p&gt;",
        "&lt;p onclick=alert(1)&gt;Made for AI&lt;script&gt;alert(2)&lt;/script&gt;&lt;/p&gt;",
    );
    upstream.put("/s.xml", &[("content-type", "application/rss+xml")], body);
    let dir = tempdir();
    let served = Served::start(
        dir.path(),
        &format!(
            "[[source]]\nname = \"s\"\nurl = \"{}\"\n\n[[feed]]\nname = \"all\"\n",
            upstream.url("/s.xml")
        ),
    )
    .await;
    served.wait_for("all", 6).await;
    let search = |q: &str| {
        let url = served.url(&format!(
            "/feeds/all.atom?q={}",
            url::form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>()
        ));
        async move {
            let mut t: Vec<String> = titles_of(&url).await.into_iter().map(|(t, _)| t).collect();
            t.sort();
            t
        }
    };
    assert_eq!(
        search("ai").await,
        [
            "AI chips arrive",
            "New chips for phones",
            "大模型 AI 评测",
            "ＡＩ芯片发布"
        ],
        "AI as a whole word, full-width too, in titles and content; not OpenAI or maid"
    );
    assert_eq!(search("\"AI chips\"").await, ["AI chips arrive"]);
    assert_eq!(search("chips phones").await, ["New chips for phones"]);
    assert_eq!(search("芯片").await, ["ＡＩ芯片发布"]);
    assert!(search("nothing-like-this").await.is_empty());

    let url = served.url("/feeds/all.json?q=AI");
    let r = reqwest::get(&url).await.unwrap();
    let etag = r.headers()[header::ETAG].to_str().unwrap().to_owned();
    let body = r.text().await.unwrap();
    assert!(body.contains("Made for AI"), "{body}");
    assert!(
        !body.contains("alert") && !body.contains("onclick"),
        "sanitised: {body}"
    );
    let again = reqwest::Client::new()
        .get(&url)
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304, "a search revalidates by its ETag");
    served.stop().await;
}

/// Polls cut short by crashes and retried: a dateless item is dated when it is first stored,
/// so a poll interrupted after its index batch and retried gives it a second index entry at
/// a later time. Many items share one second too (a busy source publishes in bursts). After
/// a restart, a reader walking every page, in every format, sees each entry exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_after_interrupted_polls_show_every_entry_once() {
    use chrono::{TimeZone, Utc};
    use feedmux::dedup::{IngestPlan, ItemWrite};
    use feedmux::store::{FeedMembership, Store};

    let upstream = Upstream::start().await;
    upstream.put(
        "/s.xml",
        &[("content-type", "application/rss+xml")],
        rss(&[]),
    );
    let dir = tempdir();
    let tables = format!(
        "[[source]]\nname = \"s\"\nurl = \"{}\"\n\n[[feed]]\nname = \"all\"\n",
        upstream.url("/s.xml")
    );
    let config = crate::config(dir.path(), &tables);
    let base = Utc.timestamp_opt(1_790_000_000, 0).unwrap();
    {
        let store = Store::open_configured(&config.storage).unwrap();
        feedmux::daemon::sync_feed_indexes(&store, &config).unwrap();
        // 6 polls of 8 items; within a poll, four items share each second. Polls 2 and 4
        // were cut short and retried a minute later: their items are written again, later.
        for poll in 0..6i64 {
            let at = |n: i64, retry: i64| {
                base + chrono::Duration::seconds(poll * 600 + n / 4 + retry * 60)
            };
            let retries = if poll == 2 || poll == 4 { 2 } else { 1 };
            for retry in 0..retries {
                let mut plan = IngestPlan::default();
                let mut memberships = Vec::new();
                for n in 0..8 {
                    let guid = format!("p{poll}-{n}");
                    let id = feedmux::dedup::item_id("s", &guid);
                    let when = at(n, retry);
                    plan.writes.push(ItemWrite {
                        item: feedmux::model::Item {
                            id,
                            source: "s".into(),
                            guid: guid.clone(),
                            url: Some(format!("https://s.example/{guid}")),
                            canonical_url: None,
                            title: format!("Entry {guid}"),
                            summary_html: None,
                            content_html: None,
                            authors: vec![],
                            categories: vec![],
                            enclosures: vec![],
                            published: when,
                            updated: None,
                            first_seen: when,
                            modified: when,
                            content_hash: 1,
                            story: id,
                            sanitised: feedmux::sanitise::POLICY,
                        },
                        previous: None,
                        link: None,
                    });
                    memberships.push(FeedMembership {
                        feed: "all".into(),
                        item: id,
                    });
                }
                store
                    .apply_poll(
                        "s",
                        &plan,
                        &["all".into()],
                        &memberships,
                        &Default::default(),
                        store.ingest_guard(),
                    )
                    .unwrap();
            }
        }
        assert_eq!(
            store.feed_items("all").count(),
            64,
            "16 entries left by retries"
        );
    }

    let served = Served::start(dir.path(), &tables).await;
    served.wait_for("all", 48).await;
    for format in ["atom", "rss", "json"] {
        let mut url = served.url(&format!("/feeds/all.{format}?limit=5"));
        let mut seen = Vec::new();
        for _ in 0..20 {
            let (status, body) = text(&url).await;
            assert_eq!(status, 200, "{url}");
            seen.extend(
                crate::read_back(body.as_bytes())
                    .into_iter()
                    .map(|(t, _)| t),
            );
            let next = if format == "json" {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                v["next_url"].as_str().map(str::to_owned)
            } else {
                link(&body, "next")
            };
            match next {
                Some(n) => url = n,
                None => break,
            }
        }
        let distinct: HashSet<&String> = seen.iter().collect();
        assert_eq!(distinct.len(), 48, "{format}: every entry: {seen:#?}");
        assert_eq!(seen.len(), 48, "{format}: an entry shown twice: {seen:#?}");
    }
    served.stop().await;
}
