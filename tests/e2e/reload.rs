//! Live config: editing the config file of a running daemon applies the difference without a
//! restart (new sources polled at once, removed ones no longer polled, changed schedules and
//! filters applied), and an invalid edit is refused and shown on the status page.

use std::path::Path;
use std::time::Duration;

use feedmux::config;
use feedmux::daemon::Control;
use feedmux::store::Store;

use crate::served::Served;
use crate::upstream::Upstream;
use crate::{read_back, rss_feed, tempdir, RssItem};

const EVERY_SECOND: &str = "* * * * * *";
const YEARLY: &str = "0 0 0 1 1 *";

/// The config file's text: a store in `dir`, then `tables`.
fn config_text(dir: &Path, tables: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nbase_url = \"http://feeds.test\"\n[storage]\npath = {:?}\n[poll]\nper_host_interval = \"0s\"\n\n{tables}",
        dir.join("store").display().to_string()
    )
}

fn source(name: &str, url: &str, schedule: &str) -> String {
    format!("[[source]]\nname = {name:?}\nurl = {url:?}\nschedule = {schedule:?}\n\n")
}

fn rss(items: &[(&str, &str)]) -> String {
    let items = items
        .iter()
        .map(|(guid, title)| RssItem::new(guid, title, format!("https://x.example/{guid}")));
    rss_feed("t", "https://x.example/", items)
}

/// A daemon running in this process on a config file the test edits.
struct Running {
    dir: tempfile::TempDir,
    served: Served,
    http: reqwest::Client,
}

impl Running {
    async fn start(tables: &str) -> Running {
        let dir = tempdir();
        let path = dir.path().join("feedmux.toml");
        std::fs::write(&path, config_text(dir.path(), tables)).unwrap();
        let config = config::load(&path).unwrap();
        Running {
            served: Served::with_config(config).await,
            dir,
            http: reqwest::Client::new(),
        }
    }

    /// Rewrites the config file, as a user's editor would (a new file renamed over it).
    fn edit(&self, tables: &str) {
        let path = self.dir.path().join("feedmux.toml");
        let temp = self.dir.path().join(".feedmux.toml.swp");
        std::fs::write(&temp, config_text(self.dir.path(), tables)).unwrap();
        std::fs::rename(&temp, &path).unwrap();
    }

    async fn get(&self, path: &str) -> String {
        let response = self.http.get(self.served.url(path)).send().await.unwrap();
        response.text().await.unwrap()
    }

    async fn titles(&self, feed: &str) -> Vec<String> {
        let body = self.get(&format!("/feeds/{feed}.atom")).await;
        let mut titles: Vec<String> = read_back(body.as_bytes())
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        titles.sort();
        titles
    }

    /// Waits (at most 15 s) until `feed` shows exactly `expected`.
    async fn wait_for_titles(&self, feed: &str, expected: &[&str]) {
        let mut titles = Vec::new();
        for _ in 0..150 {
            titles = self.titles(feed).await;
            if titles == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{feed} shows {titles:?}, expected {expected:?}");
    }

    /// Waits (at most 15 s) until the page at `path` satisfies `check`; returns it.
    async fn wait_for_page(&self, path: &str, check: impl Fn(&str) -> bool) -> String {
        let mut page = String::new();
        for _ in 0..150 {
            page = self.get(path).await;
            if check(&page) {
                return page;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{path} never became as expected:\n{page}");
    }

    async fn stop(self) -> tempfile::TempDir {
        self.served.stop().await;
        self.dir
    }
}

async fn upstream_with(paths: &[(&str, &[(&str, &str)])]) -> Upstream {
    let upstream = Upstream::start().await;
    for (path, items) in paths {
        upstream.put(path, &[("content-type", "application/rss+xml")], rss(items));
    }
    upstream
}

#[tokio::test]
async fn a_source_added_to_the_config_file_is_polled_at_once() {
    let upstream = upstream_with(&[
        ("/a.xml", &[("a1", "Alpha one")]),
        ("/b.xml", &[("b1", "Beta one")]),
    ])
    .await;
    let a = source("a", &upstream.url("/a.xml"), YEARLY);
    let feed = "[[feed]]\nname = \"all\"\n";
    let daemon = Running::start(&format!("{a}{feed}")).await;
    daemon.wait_for_titles("all", &["Alpha one"]).await;
    assert!(upstream.requests("/b.xml").is_empty());

    // A yearly schedule: only "polled now because it is new" can bring b's item within 15 s.
    let b = source("b", &upstream.url("/b.xml"), YEARLY);
    daemon.edit(&format!("{a}{b}{feed}"));
    daemon
        .wait_for_titles("all", &["Alpha one", "Beta one"])
        .await;
    assert_eq!(upstream.requests("/b.xml").len(), 1);
    assert_eq!(
        upstream.requests("/a.xml").len(),
        1,
        "a, unchanged, is not polled again"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_source_removed_from_the_config_file_is_no_longer_polled_and_its_items_stay() {
    let upstream = upstream_with(&[
        ("/a.xml", &[("a1", "Alpha one")]),
        ("/b.xml", &[("b1", "Beta one"), ("b2", "Beta two")]),
    ])
    .await;
    let a = source("a", &upstream.url("/a.xml"), YEARLY);
    let b = source("b", &upstream.url("/b.xml"), EVERY_SECOND);
    let feed = "[[feed]]\nname = \"all\"\n";
    let daemon = Running::start(&format!("{a}{b}{feed}")).await;
    daemon
        .wait_for_titles("all", &["Alpha one", "Beta one", "Beta two"])
        .await;

    daemon.edit(&format!("{a}{feed}"));
    daemon
        .wait_for_page("/api/sources", |p| !p.contains("\"b\""))
        .await;
    daemon.wait_for_titles("all", &["Alpha one"]).await;
    let polls = upstream.requests("/b.xml").len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        upstream.requests("/b.xml").len(),
        polls,
        "b, scheduled every second, was polled after its removal"
    );
    let dir = daemon.stop().await;
    let store = Store::open(&dir.path().join("store")).unwrap();
    assert_eq!(
        store.source_state("b").unwrap().item_count,
        2,
        "the removed source's items stay in the store"
    );
}

#[tokio::test]
async fn a_changed_schedule_takes_effect_without_a_restart() {
    let upstream = upstream_with(&[("/a.xml", &[("a1", "Alpha one")])]).await;
    let feed = "[[feed]]\nname = \"all\"\n";
    let daemon = Running::start(&format!(
        "{}{feed}",
        source("a", &upstream.url("/a.xml"), YEARLY)
    ))
    .await;
    daemon.wait_for_titles("all", &["Alpha one"]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        upstream.requests("/a.xml").len(),
        1,
        "yearly: polled once, at start-up"
    );

    daemon.edit(&format!(
        "{}{feed}",
        source("a", &upstream.url("/a.xml"), EVERY_SECOND)
    ));
    let mut polls = 0;
    for _ in 0..100 {
        polls = upstream.requests("/a.xml").len();
        if polls >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        polls >= 3,
        "every second after the edit, but {polls} polls in 10 s"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn a_changed_filter_re_renders_the_feed_from_the_store_at_once() {
    let upstream = upstream_with(&[(
        "/a.xml",
        &[("a1", "AI chip launched"), ("a2", "Bike review")],
    )])
    .await;
    let a = source("a", &upstream.url("/a.xml"), YEARLY);
    let daemon = Running::start(&format!("{a}[[feed]]\nname = \"ai\"\ninclude = [\"AI\"]\n")).await;
    daemon.wait_for_titles("ai", &["AI chip launched"]).await;

    daemon.edit(&format!(
        "{a}[[feed]]\nname = \"ai\"\ntitle = \"Bikes now\"\ninclude = [\"bike\"]\n"
    ));
    daemon.wait_for_titles("ai", &["Bike review"]).await;
    assert!(daemon.get("/feeds/ai.atom").await.contains("Bikes now"));
    assert_eq!(
        upstream.requests("/a.xml").len(),
        1,
        "re-rendered from the store, without polling"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn an_invalid_edit_keeps_the_running_config_and_shows_the_error_until_fixed() {
    let upstream = upstream_with(&[("/a.xml", &[("a1", "Alpha one")])]).await;
    let a = source("a", &upstream.url("/a.xml"), YEARLY);
    let feed = "[[feed]]\nname = \"all\"\n";
    let daemon = Running::start(&format!("{a}{feed}")).await;
    daemon.wait_for_titles("all", &["Alpha one"]).await;

    daemon.edit(&format!(
        "{a}[[source]]\nname = \"<script>x\"\nurl = \"http://x.example/\"\n{feed}"
    ));
    let page = daemon
        .wait_for_page("/", |p| p.contains("not applied"))
        .await;
    assert!(
        page.contains("feedmux.toml:15:8: invalid source name \"&lt;script&gt;x\""),
        "the error, with its line and column, escaped:\n{page}"
    );
    assert!(!page.contains("<script>"));
    // The running config stays: the feed is served, the source still listed.
    assert_eq!(daemon.titles("all").await, ["Alpha one"]);
    assert!(daemon.get("/api/sources").await.contains("\"a\""));
    // SIGHUP (here the control message) with the file still invalid changes nothing.
    daemon.served.control().send(Control::Reload).await.unwrap();
    assert!(daemon.get("/").await.contains("not applied"));

    daemon.edit(&format!("{a}[[feed]]\nname = \"all\"\ntitle = \"Fixed\"\n"));
    let page = daemon
        .wait_for_page("/", |p| !p.contains("not applied"))
        .await;
    assert!(page.contains("Fixed"), "{page}");
    daemon.stop().await;
}

#[tokio::test]
async fn a_reload_does_not_wait_for_a_slow_poll_in_flight() {
    let upstream = upstream_with(&[("/fast.xml", &[("f1", "Fast one")])]).await;
    let mut slow = crate::upstream::Page::new(
        200,
        &[("content-type", "application/rss+xml")],
        rss(&[("s1", "Slow one")]),
    );
    slow.delay = Duration::from_secs(15);
    upstream.put_page("/slow.xml", slow);
    let feed = "[[feed]]\nname = \"all\"\n";
    let daemon = Running::start(&format!(
        "{}{feed}",
        source("slow", &upstream.url("/slow.xml"), YEARLY)
    ))
    .await;
    // The slow source's first poll is in flight (its upstream answers after 15 s); a first
    // poll may be spread by up to 3 s.
    for _ in 0..200 {
        if !upstream.requests("/slow.xml").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(upstream.requests("/slow.xml").len(), 1);

    let started = std::time::Instant::now();
    daemon.edit(&format!(
        "{}{feed}",
        source("fast", &upstream.url("/fast.xml"), YEARLY)
    ));
    daemon.wait_for_titles("all", &["Fast one"]).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the reload waited for the slow poll: {:?}",
        started.elapsed()
    );
    daemon.stop().await;
}

/// `match_in`, `max_age` and `max_per_source` changed in the file apply to the running
/// daemon: re-rendered (and re-indexed for `match_in`) from the store, without a poll.
#[tokio::test]
async fn a_reload_applies_a_feeds_match_in_max_age_and_max_per_source() {
    let upstream = Upstream::start().await;
    let ago = |hours: i64| (chrono::Utc::now() - chrono::Duration::hours(hours)).to_rfc2822();
    let items = [
        ("x1", "AI chip launched", "Fast.", ago(1)),
        ("x2", "Bike review", "Designed with AI.", ago(2)),
        ("x3", "Old AI essay", "Long.", ago(240)),
    ];
    let body: String = items
        .iter()
        .map(|(guid, title, text, date)| {
            format!("<item><guid>{guid}</guid><title>{title}</title><link>https://x.example/{guid}</link><description>{text}</description><pubDate>{date}</pubDate></item>")
        })
        .collect();
    upstream.put(
        "/a.xml",
        &[("content-type", "application/rss+xml")],
        format!("<rss version=\"2.0\"><channel><title>t</title><link>https://x.example/</link><description>d</description>{body}</channel></rss>"),
    );
    let a = source("a", &upstream.url("/a.xml"), YEARLY);
    let feed = "[[feed]]\nname = \"f\"\ninclude = [\"AI\"]\n";
    let daemon = Running::start(&format!("{a}{feed}")).await;
    daemon
        .wait_for_titles("f", &["AI chip launched", "Bike review", "Old AI essay"])
        .await;

    daemon.edit(&format!(
        "{a}{feed}match_in = \"title\"\nmax_age = \"7d\"\n"
    ));
    daemon.wait_for_titles("f", &["AI chip launched"]).await;

    daemon.edit(&format!("{a}{feed}max_per_source = 2\n"));
    daemon
        .wait_for_titles("f", &["AI chip launched", "Bike review"])
        .await;
    assert_eq!(upstream.requests("/a.xml").len(), 1, "no poll needed");
    daemon.stop().await;
}
