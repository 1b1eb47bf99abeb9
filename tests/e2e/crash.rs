//! Crash safety: the real daemon, ingesting continuously from upstream feeds that keep
//! growing, is killed with SIGKILL at random moments and restarted, again and again. After
//! every restart the store opens, every entry a reader had been served before the kill is
//! still served, no entry appears twice (in a whole feed, or across the pages a reader walks
//! back through), and polling resumes.
//!
//! `FEEDMUX_CRASH_KILLS=300 cargo test --test e2e crash -- --nocapture` is the long run.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::real::{free_port, RealDaemon};
use crate::tempdir;
use crate::upstream::Upstream;

const SOURCES: usize = 4;
/// Entries each upstream feed shows (older ones drop out of it, as on real sites).
const WINDOW: usize = 60;

/// An RSS feed of entries `from..to` of source `s`, newest first.
fn feed(s: usize, from: usize, to: usize) -> String {
    let mut items = String::new();
    for n in (from..to).rev() {
        items.push_str(&format!(
            "<item><guid>s{s}-{n}</guid><title>source {s} entry {n}</title>\
             <link>https://site{s}.example/{n}</link>\
             <description>&lt;p&gt;Body of entry {n} of source {s}, long enough to be a real write: {}&lt;/p&gt;</description></item>",
            "lorem ipsum ".repeat(20)
        ));
    }
    format!("<rss version=\"2.0\"><channel><title>source {s}</title><link>https://site{s}.example/</link><description>d</description>{items}</channel></rss>")
}

/// The entries a reader is served, from every source's output feed: id -> title.
async fn served(http: &reqwest::Client, base: &str) -> Option<(HashMap<String, String>, usize)> {
    let mut map = HashMap::new();
    let mut count = 0;
    for s in 0..SOURCES {
        let response = http
            .get(format!("{base}/feeds/f{s}.json"))
            .send()
            .await
            .ok()?;
        if response.status() != 200 {
            return None;
        }
        let doc: serde_json::Value = serde_json::from_slice(&response.bytes().await.ok()?).ok()?;
        let items = doc["items"].as_array()?;
        // Past the feed's limit the oldest entries leave it, which is not a loss: the test
        // must stay below it.
        assert!(
            items.len() < 10_000,
            "run shorter: the feed of s{s} is full"
        );
        count += items.len();
        map.extend(items.iter().map(|i| {
            (
                i["id"].as_str().unwrap_or_default().to_owned(),
                i["title"].as_str().unwrap_or_default().to_owned(),
            )
        }));
    }
    let titles: HashSet<&str> = map.values().map(String::as_str).collect();
    assert_eq!(titles.len(), count, "an entry is served twice");
    Some((map, count))
}

/// The ids of every entry of feed `f{s}`, walking its pages of 40 back to the oldest; `None`
/// when a page could not be read.
async fn paged(http: &reqwest::Client, base: &str, s: usize) -> Option<Vec<String>> {
    let mut url = format!("{base}/feeds/f{s}.json?limit=40");
    let mut ids = Vec::new();
    for _ in 0..1000 {
        let response = http.get(&url).send().await.ok()?;
        if response.status() != 200 {
            return None;
        }
        let doc: serde_json::Value = serde_json::from_slice(&response.bytes().await.ok()?).ok()?;
        ids.extend(
            doc["items"]
                .as_array()?
                .iter()
                .map(|i| i["id"].as_str().unwrap_or_default().to_owned()),
        );
        match doc["next_url"].as_str() {
            Some(next) => url = next.to_owned(),
            None => return Some(ids),
        }
    }
    panic!("f{s}: the pages never end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_killed_at_random_moments_loses_and_duplicates_nothing() {
    let kills: usize = std::env::var("FEEDMUX_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let upstream = Upstream::start().await;
    let dir = tempdir();
    let port = free_port();
    let mut tables = String::new();
    for s in 0..SOURCES {
        tables.push_str(&format!(
            "[[source]]\nname = \"s{s}\"\nurl = \"{}\"\n\n",
            upstream.url(&format!("/s{s}.xml"))
        ));
    }
    // One output feed per source, each at the largest limit: 10,000 entries, 500 s of growth.
    for s in 0..SOURCES {
        tables.push_str(&format!(
            "[[feed]]\nname = \"f{s}\"\nsources = [\"s{s}\"]\nlimit = 10000\ngroup_stories = false\n\n"
        ));
    }
    std::fs::write(
        dir.path().join("feedmux.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[storage]\npath = \"store\"\n\
             [poll]\nschedule = \"* * * * * *\"\nper_host_interval = \"0s\"\nper_host_concurrency = 8\n\
             [log]\nlevel = \"warn\"\n\
             {tables}"
        ),
    )
    .unwrap();

    // The upstream feeds grow by one entry per source every 50 ms.
    let grower = {
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let mut n: usize = 0;
            loop {
                n += 1;
                for s in 0..SOURCES {
                    upstream.put(
                        &format!("/s{s}.xml"),
                        &[("content-type", "application/rss+xml")],
                        feed(s, n.saturating_sub(WINDOW), n),
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut rng = rand::thread_rng();
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut resumed = 0;
    let mut paged_entries = 0;
    let started = Instant::now();
    for round in 0..=kills {
        let mut daemon = RealDaemon::start(dir.path(), port);
        daemon.wait_ready(&http, Duration::from_secs(30)).await;
        // Everything served before the kill is served now, once.
        let (now_served, _) = served(&http, &daemon.base())
            .await
            .unwrap_or_else(|| panic!("round {round}: no feed:\n{}", daemon.log_text()));
        let missing: Vec<&String> = seen
            .iter()
            .filter(|(id, _)| !now_served.contains_key(*id))
            .map(|(_, title)| title)
            .collect();
        assert!(
            missing.is_empty(),
            "round {round}: lost after the kill: {missing:?}"
        );
        // A reader walking back through the pages sees no entry twice either (checked every
        // third start: a walk reads the whole feed).
        for s in (0..SOURCES).filter(|_| round % 3 == 0 || round == kills) {
            let Some(ids) = paged(&http, &daemon.base(), s).await else {
                continue;
            };
            let distinct: HashSet<&String> = ids.iter().collect();
            assert_eq!(
                distinct.len(),
                ids.len(),
                "round {round}: f{s}'s pages show {} entries twice",
                ids.len() - distinct.len()
            );
            paged_entries += ids.len();
        }
        let before = seen.len();
        if round == kills {
            // The last start: polling goes on (new entries appear) and nothing was lost.
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                let (now, _) = served(&http, &daemon.base()).await.unwrap();
                if now.len() > before {
                    resumed += 1;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            break;
        }
        // Read as a reader does for a random while, then kill without warning.
        let run_for = Duration::from_millis(rng.gen_range(50..1200));
        let until = Instant::now() + run_for;
        while Instant::now() < until {
            if let Some((now, _)) = served(&http, &daemon.base()).await {
                seen.extend(now);
            }
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..40))).await;
        }
        daemon.kill();
        if seen.len() > before {
            resumed += 1;
        }
    }
    grower.abort();
    let elapsed = started.elapsed();
    println!(
        "crash: {kills} SIGKILLs survived in {elapsed:.1?}; {} entries served and kept; polling resumed after {resumed} of {} starts; {paged_entries} entries read page by page after the restarts, none twice",
        seen.len(),
        kills + 1
    );
    assert!(
        seen.len() > kills,
        "the daemon ingested too little to prove anything: {}",
        seen.len()
    );
    // Polling resumes: most starts ingested something new before their kill (a start killed
    // within 50 ms may not have), and the last one certainly did.
    assert!(
        resumed > kills / 2,
        "polling resumed after only {resumed} of {} starts",
        kills + 1
    );
}

/// A poll cut short after its index batch (a crash, a full disk) and retried later gives its
/// dateless items a new time: the item then has two index entries and must still be shown
/// once (found by the full-disk test).
#[test]
fn an_item_indexed_twice_by_a_retried_poll_is_shown_once() {
    use chrono::{Duration as Days, TimeZone, Utc};
    use feedmux::dedup::{IngestPlan, ItemWrite};
    use feedmux::publish::{Format, Publisher};
    use feedmux::store::{FeedMembership, Store};

    let dir = tempdir();
    let config = crate::config(
        dir.path(),
        "[[source]]\nname = \"s\"\nurl = \"https://s.example/feed\"\n[[feed]]\nname = \"all\"\ngroup_stories = false\n",
    );
    let store = Store::open(&config.storage.path).unwrap();
    feedmux::daemon::sync_feed_indexes(&store, &config).unwrap();
    let first = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    let id = feedmux::dedup::item_id("s", "g1");
    let item = |at| feedmux::model::Item {
        id,
        source: "s".into(),
        guid: "g1".into(),
        url: Some("https://s.example/1".into()),
        canonical_url: None,
        title: "the one entry".into(),
        summary_html: None,
        content_html: None,
        authors: vec![],
        categories: vec![],
        enclosures: vec![],
        published: at,
        updated: None,
        first_seen: at,
        modified: at,
        content_hash: 1,
        story: id,
        sanitised: 0,
    };
    let membership = [FeedMembership {
        feed: "all".into(),
        item: id,
    }];
    for at in [first, first + Days::minutes(5)] {
        let plan = IngestPlan {
            writes: vec![ItemWrite {
                item: item(at),
                previous: None,
                link: None,
            }],
            ..IngestPlan::default()
        };
        store
            .apply_poll(
                "s",
                &plan,
                &["all".into()],
                &membership,
                &Default::default(),
                store.ingest_guard(),
            )
            .unwrap();
    }
    assert_eq!(
        store.feed_items("all").count(),
        2,
        "the retry left two index entries"
    );
    let rendered = Publisher::new().render(&store, &config, "all").unwrap();
    for format in Format::ALL {
        let entries = crate::read_back(&rendered.get(format).unwrap().body);
        assert_eq!(entries.len(), 1, "{format:?}: {entries:?}");
    }
}

/// Index entries left by interrupted writes (an item stored again at another time, and an
/// item since pruned, whose first entry outlived it) are skipped by readers, and deleted by
/// the store when a reader meets them unless a poll is being written; the pages a reader walks
/// are the same before, during and after.
#[test]
fn stale_index_entries_are_deleted_when_a_reader_meets_them_and_pages_do_not_change() {
    use chrono::{Duration as Days, TimeZone, Utc};
    use feedmux::dedup::{IngestPlan, ItemWrite};
    use feedmux::publish::{collect_page, View};
    use feedmux::store::{FeedMembership, Store};

    let dir = tempdir();
    let config = crate::config(
        dir.path(),
        "[[source]]\nname = \"s\"\nurl = \"https://s.example/feed\"\n[[source]]\nname = \"t\"\nurl = \"https://t.example/feed\"\n[[feed]]\nname = \"all\"\ngroup_stories = false\n",
    );
    let store = Store::open(&config.storage.path).unwrap();
    feedmux::daemon::sync_feed_indexes(&store, &config).unwrap();
    let base = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    let item = |source: &str, guid: &str, at| {
        let id = feedmux::dedup::item_id(source, guid);
        feedmux::model::Item {
            id,
            source: source.into(),
            guid: guid.into(),
            url: Some(format!("https://{source}.example/{guid}")),
            canonical_url: None,
            title: format!("{source} {guid}"),
            summary_html: None,
            content_html: None,
            authors: vec![],
            categories: vec![],
            enclosures: vec![],
            published: at,
            updated: None,
            first_seen: at,
            modified: at,
            content_hash: 1,
            story: id,
            sanitised: feedmux::sanitise::POLICY,
        }
    };
    let write = |items: Vec<feedmux::model::Item>| {
        let source = items[0].source.clone();
        let memberships: Vec<FeedMembership> = items
            .iter()
            .map(|i| FeedMembership {
                feed: "all".into(),
                item: i.id,
            })
            .collect();
        let plan = IngestPlan {
            writes: items
                .into_iter()
                .map(|item| ItemWrite {
                    item,
                    previous: None,
                    link: None,
                })
                .collect(),
            ..IngestPlan::default()
        };
        store
            .apply_poll(
                &source,
                &plan,
                &["all".into()],
                &memberships,
                &Default::default(),
                store.ingest_guard(),
            )
            .unwrap();
    };
    // 12 items of s, one every 10 minutes; items 3 and 8 written again 5 minutes later (a
    // retried poll), each leaving its first entry behind.
    let at = |n: i64| base + Days::minutes(10 * n);
    write(
        (0..12)
            .map(|n| item("s", &format!("g{n}"), at(n)))
            .collect(),
    );
    write(
        [3, 8]
            .map(|n| item("s", &format!("g{n}"), at(n) + Days::minutes(5)))
            .to_vec(),
    );
    // An item of t, written twice, then pruned with its source's items: its first entry
    // stays, with no item.
    write(vec![item("t", "x", at(6) + Days::minutes(1))]);
    write(vec![item("t", "x", at(6) + Days::minutes(2))]);
    store.prune_source("t", 0, Utc::now()).unwrap();
    assert_eq!(store.item(feedmux::dedup::item_id("t", "x")).unwrap(), None);
    let entries = || store.feed_items("all").count();
    assert_eq!(entries(), 15, "12 entries and 3 stale ones");

    let feed = config.feed("all").unwrap();
    let walk = || {
        let mut view = View {
            limit: Some(5),
            ..View::default()
        };
        let mut pages = Vec::new();
        loop {
            let page = collect_page(&store, &config, feed, &view).unwrap();
            pages.push(
                page.entries
                    .iter()
                    .map(|e| e.item.guid.clone())
                    .collect::<Vec<_>>(),
            );
            match page.next {
                Some(next) => view.before = Some(next),
                None => return pages,
            }
        }
    };
    let expected: Vec<Vec<String>> = [vec![11, 10, 9, 8, 7], vec![6, 5, 4, 3, 2], vec![1, 0]]
        .iter()
        .map(|page| page.iter().map(|n| format!("g{n}")).collect())
        .collect();

    // While a poll is being written (the ingest guard held), readers skip them, delete nothing.
    let guard = store.ingest_guard();
    assert_eq!(walk(), expected);
    assert_eq!(entries(), 15, "nothing deleted while a poll is written");
    drop(guard);
    assert_eq!(walk(), expected);
    assert_eq!(entries(), 12, "the stale entries met are gone");
    assert!(store
        .feed_items("all")
        .all(|e| store.item(e.unwrap().id).unwrap().is_some()));
    assert_eq!(walk(), expected, "the same pages without them");
}
