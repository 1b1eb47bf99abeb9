//! `feedmux copy-store`: a sled store filled through the normal pipeline (stories across
//! sources, output feeds, a pruned source's tombstones) is copied into PostgreSQL by the real
//! binary, and reads back the same through every engine trait; a database that already holds
//! items is refused and left as it was.

use std::path::Path;
use std::process::{Command, Output};

use chrono::Utc;
use feedmux::config::{Config, DatabaseUrl};
use feedmux::model::ItemId;
use feedmux::publish::{Format, Publisher};
use feedmux::store::{FeedEntry, Store};

use crate::real::{free_port, RealDaemon};
use crate::upstream::Upstream;
use crate::{binary, config, poll_all, read_back, rss_feed, source, tempdir, titles, RssItem};

/// Three sources: `a` and `b` report five stories under the same links (one story each), `b`
/// and `c` two under the same words; `c` has eight items of its own, of which retention
/// prunes the oldest five; the text index of items over five hours old is aged out. Two output feeds: every item, and those about storms. Returns the
/// config and the ids of the pruned items.
async fn filled_store(upstream: &Upstream, dir: &Path) -> (Config, Vec<ItemId>) {
    let now = Utc::now();
    let dated = |item: RssItem, hours: i64| {
        item.dated(&(now - chrono::Duration::hours(hours)).to_rfc2822())
    };
    let a = (0..10).map(|i| {
        let title = if i % 2 == 0 { "Storm" } else { "Budget" };
        dated(
            RssItem::new(
                format!("a{i}"),
                format!("{title} report number {i} from the coast"),
                format!("https://news.example/{i}"),
            ),
            i,
        )
    });
    let b = (0..5)
        .map(|i| {
            dated(
                RssItem::new(
                    format!("b{i}"),
                    format!("Wire copy {i}"),
                    format!("https://news.example/{i}"),
                ),
                i,
            )
        })
        .chain((0..2).map(|i| {
            dated(
                RssItem::new(
                    format!("bw{i}"),
                    format!("Harbour authority closes the northern pier after crane collapse {i}"),
                    format!("https://b.example/pier{i}"),
                ),
                1,
            )
        }));
    let c = (0..2)
        .map(|i| {
            dated(
                RssItem::new(
                    format!("cw{i}"),
                    format!("Harbour authority closes the northern pier after crane collapse {i}"),
                    format!("https://c.example/pier{i}"),
                ),
                1,
            )
        })
        .chain((0..8).map(|i| {
            dated(
                RssItem::new(
                    format!("c{i}"),
                    format!("Local note {i}"),
                    format!("https://c.example/{i}"),
                ),
                2 + i,
            )
        }));
    let rss = [("content-type", "application/rss+xml")];
    upstream.put("/a.xml", &rss, rss_feed("a", "https://news.example/", a));
    upstream.put("/b.xml", &rss, rss_feed("b", "https://b.example/", b));
    upstream.put("/c.xml", &rss, rss_feed("c", "https://c.example/", c));
    let config = config(
        dir,
        &format!(
            "{}{}{}[[feed]]\nname = \"all\"\n\n[[feed]]\nname = \"storms\"\ninclude = [\"Storm\"]\n",
            source("a", &upstream.url("/a.xml")),
            source("b", &upstream.url("/b.xml")),
            source("c", &upstream.url("/c.xml")),
        ),
    );
    poll_all(&config).await;
    // Rendering builds the output feeds' indexes, as the daemon does at start.
    assert!(!titles(&config, "all").is_empty());
    assert!(!titles(&config, "storms").is_empty());
    let store = Store::open(&config.storage.path).unwrap();
    let of_c = |store: &Store| -> Vec<ItemId> {
        let items = store.source_items("c", usize::MAX).unwrap();
        items.into_iter().map(|item| item.id).collect()
    };
    let before = of_c(&store);
    assert_eq!(store.prune_source("c", 5, Utc::now()).unwrap(), 5);
    // The text index of items published over five hours ago is aged out: they are matched by
    // link only from now on, and the store remembers from when it indexes.
    let aged = store.drop_text_index_before(now - chrono::Duration::hours(5));
    assert!(
        aged.unwrap() > 0,
        "some items are past the text index's age"
    );
    let kept = of_c(&store);
    let pruned = before.into_iter().filter(|id| !kept.contains(id)).collect();
    (config, pruned)
}

/// Runs `feedmux copy-store --to url` on `config`'s store.
fn copy_store(config_path: &Path, url: &str) -> Output {
    Command::new(binary())
        .arg("copy-store")
        .arg("--config")
        .arg(config_path)
        .arg("--to")
        .arg(url)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run by .ci/run, or cargo test -- --include-ignored"]
async fn a_copied_store_reads_back_the_same_from_postgresql() {
    let upstream = Upstream::start().await;
    let dir = tempdir();
    let (config, pruned) = filled_store(&upstream, dir.path()).await;
    let url = fresh_database("copy_store");
    // A password in the URL (the cluster trusts local users and ignores it) is never shown.
    let with_password = url.replacen("feedmux@", "feedmux:s3cret-pw@", 1);

    let out = copy_store(&dir.path().join("feedmux.toml"), &with_password);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "copy-store failed: {stderr}");
    assert!(
        !stdout.contains("s3cret-pw") && !stderr.contains("s3cret-pw"),
        "the password was shown:\n{stdout}\n{stderr}"
    );

    let sled = Store::open(&config.storage.path).unwrap();
    let pg = open_postgres(&url);
    let items: Vec<ItemId> = sled.all_items().map(Result::unwrap).collect();
    assert_eq!(items.len(), 10 + 7 + 5);
    assert!(
        stdout.contains(&format!("items          {}", items.len())),
        "the summary counts the items:\n{stdout}"
    );
    assert!(
        stdout.contains("meta           3"),
        "term statistics, terms version, text index start:\n{stdout}"
    );
    same_items(&sled, &pg, &items);
    same_feeds(&sled, &pg, &config);
    for name in ["a", "b", "c"] {
        assert_eq!(
            pg.source_state(name).unwrap(),
            sled.source_state(name).unwrap(),
            "state of {name}"
        );
    }
    assert_eq!(pg.source_state("c").unwrap().item_count, 5);
    assert_eq!(pg.tombstone_count(), 5);
    assert_eq!(pg.tombstone_count(), sled.tombstone_count());
    assert_eq!(pruned.len(), 5);
    for id in &pruned {
        assert!(sled.is_pruned("c", *id).unwrap());
        assert!(pg.is_pruned("c", *id).unwrap(), "{id:?} has its tombstone");
    }
    for id in &items {
        assert!(!pg.is_pruned("c", *id).unwrap(), "{id:?} is kept");
    }
    assert_eq!(pg.terms_version().unwrap(), sled.terms_version().unwrap());
    assert!(
        pg.ingest_guard().to_bytes() == sled.ingest_guard().to_bytes(),
        "the term statistics are the same"
    );
    let counts = |store: &Store| {
        let mut counts = store.record_counts();
        counts.retain(|(name, _)| !["by_time", "by_source"].contains(name));
        counts.sort();
        counts
    };
    assert_eq!(counts(&pg), counts(&sled));
    let storms = readable(&pg, &config, "storms");
    assert_eq!(storms, readable(&sled, &config, "storms"));
    assert!(storms.iter().all(|(title, _)| title.contains("Storm")));
}

/// Every item, its story's links, the claim of its canonical URL and its fingerprint.
fn same_items(sled: &Store, pg: &Store, items: &[ItemId]) {
    let pg_items: Vec<ItemId> = pg.all_items().map(Result::unwrap).collect();
    assert_eq!(pg_items, items, "every item, newest first");
    let mut stories_of_two = 0;
    for id in items {
        let item = sled.item(*id).unwrap().unwrap();
        assert_eq!(pg.item(*id).unwrap().as_ref(), Some(&item));
        let links = sled.story_links(item.story).unwrap();
        assert_eq!(pg.story_links(item.story).unwrap(), links, "{}", item.title);
        if links.len() > 1 {
            stories_of_two += 1;
        }
        let url = item.canonical_url.as_deref().unwrap();
        assert_eq!(pg.url_claim(url).unwrap(), sled.url_claim(url).unwrap());
        assert_eq!(pg.fingerprint(*id).unwrap(), sled.fingerprint(*id).unwrap());
    }
    assert!(stories_of_two >= 10, "stories across sources were copied");
}

/// Each output feed's rules fingerprint and entries.
fn same_feeds(sled: &Store, pg: &Store, config: &Config) {
    assert_eq!(pg.indexed_feeds().unwrap(), sled.indexed_feeds().unwrap());
    for feed in &config.feeds {
        let entries = |store: &Store| -> Vec<FeedEntry> {
            store.feed_items(&feed.name).map(Result::unwrap).collect()
        };
        assert!(!entries(sled).is_empty());
        assert_eq!(entries(pg), entries(sled), "entries of {}", feed.name);
        assert_eq!(
            pg.feed_fingerprint(&feed.name).unwrap(),
            sled.feed_fingerprint(&feed.name).unwrap()
        );
    }
}

/// The (title, link) of each entry of `feed` as a reader reads its Atom document.
fn readable(store: &Store, config: &Config, feed: &str) -> Vec<(String, Option<String>)> {
    let rendered = Publisher::new().render(store, config, feed).unwrap();
    read_back(&rendered.get(Format::Atom).unwrap().body)
}

#[tokio::test]
#[ignore = "needs PostgreSQL: run by .ci/run, or cargo test -- --include-ignored"]
async fn copying_into_a_database_that_holds_items_is_refused_and_changes_nothing() {
    let upstream = Upstream::start().await;
    let dir = tempdir();
    let (_config, _) = filled_store(&upstream, dir.path()).await;
    let url = fresh_database("copy_store_refused");
    let config_path = dir.path().join("feedmux.toml");
    assert!(copy_store(&config_path, &url).status.success());
    let before = open_postgres(&url).record_counts();

    let out = copy_store(&config_path, &url);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("already holds 22 items"),
        "the error names the items: {stderr}"
    );
    assert!(text(&out.stdout).is_empty());
    assert_eq!(open_postgres(&url).record_counts(), before);
}

#[tokio::test]
async fn copy_store_asks_to_stop_the_daemon_that_holds_the_store() {
    let upstream = Upstream::start().await;
    upstream.put(
        "/a.xml",
        &[("content-type", "application/rss+xml")],
        rss_feed("a", "https://a.example/", []),
    );
    let dir = tempdir();
    let port = free_port();
    std::fs::write(
        dir.path().join("feedmux.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[storage]\npath = {:?}\n\n{}",
            dir.path().join("store").display().to_string(),
            source("a", &upstream.url("/a.xml"))
        ),
    )
    .unwrap();
    let mut daemon = RealDaemon::start(dir.path(), port);
    let http = reqwest::Client::new();
    daemon
        .wait_ready(&http, std::time::Duration::from_secs(30))
        .await;

    // No database is reached: the store is asked for first.
    let out = copy_store(
        &dir.path().join("feedmux.toml"),
        "postgres://feedmux@127.0.0.1:1/none",
    );
    daemon.kill();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("stop the daemon first"), "{stderr}");
}

#[test]
fn a_connection_string_is_refused_without_being_shown() {
    let dir = tempdir();
    config(dir.path(), &source("a", "http://127.0.0.1:1/a.xml"));
    let out = copy_store(
        &dir.path().join("feedmux.toml"),
        "host=127.0.0.1 user=feedmux password=s3cret-pw",
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("postgres://"),
        "says what it takes: {stderr}"
    );
    assert!(!stderr.contains("s3cret-pw"), "{stderr}");
}

/// A new, empty database of the tests' PostgreSQL cluster, named after `hint`; its URL.
fn fresh_database(hint: &str) -> String {
    crate::support::pg_cluster::PgCluster::shared().fresh_database(hint)
}

/// The engine on the database at `url`.
fn open_postgres(url: &str) -> Store {
    Store::open_postgres(&DatabaseUrl::parse(url).unwrap()).unwrap()
}
