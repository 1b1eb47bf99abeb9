//! Clock jumps: a daemon in this process whose clock the test steps (the machine's clock is
//! never touched). A jump is reported (log, metrics, status page) without failing `/readyz`,
//! prunes nothing merely "old" by the jumped clock, and polling and serving go on.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use feedmux::clock::SteppedClock;

use crate::served::Served;
use crate::upstream::Upstream;
use crate::{config, read_back, rss_feed, source, tempdir, RssItem};

/// Log lines written by the daemon's tasks on this test's thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Captures what the daemon's tasks on this test's thread log, at INFO and above, until
    /// the guard is dropped.
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn rss(items: &[(&str, Option<chrono::Duration>)]) -> String {
    let now = Utc::now();
    let items = items.iter().map(|(title, age)| {
        let item = RssItem::new(
            title,
            title,
            format!("https://c.example/{}", title.replace(' ', "-")),
        );
        match age {
            Some(a) => item.dated(&(now - *a).to_rfc2822()),
            None => item,
        }
    });
    rss_feed("c", "https://c.example/", items)
}

/// A daemon config polling `url` every second as source `c` into feed `all`, keeping 3 days
/// of items, with a retention pass every 300 ms.
fn keeping_three_days(dir: &std::path::Path, url: &str) -> feedmux::config::Config {
    let mut config = config(
        dir,
        &format!(
            "{}schedule = \"* * * * * *\"\n\n[[feed]]\nname = \"all\"\n",
            source("c", url)
        ),
    );
    config.storage.retention_days = Some(3);
    config.storage.prune_interval = Duration::from_millis(300);
    config
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// The clock jumps 30 days forward under a daemon keeping 3 days of items, then 31 days back
/// (a day behind the real time): nothing is pruned, each jump is logged, counted and shown on
/// the status page while `/readyz` answers 200, and the source goes on being polled and its
/// new item served, dated by the clock.
#[tokio::test]
async fn a_clock_jump_prunes_nothing_is_reported_and_polling_goes_on() {
    let (logs, _logging) = Logs::capture();

    let fresh = ("Fresh one", Some(chrono::Duration::hours(1)));
    let older = ("Two days old", Some(chrono::Duration::days(2)));
    let upstream = Upstream::start().await;
    let rss_type = [("content-type", "application/rss+xml")];
    upstream.put("/c.xml", &rss_type, rss(&[fresh, older]));
    let dir = tempdir();
    let config = keeping_three_days(dir.path(), &upstream.url("/c.xml"));
    let clock = Arc::new(SteppedClock::new(Utc::now()));
    let served = Served::with_clock(config, clock.clone()).await;
    let base = served.base.clone();
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let request = http.get(format!("{base}{path}"));
        async move { request.send().await.unwrap() }
    };
    let text = |path: &'static str| {
        let response = get(path);
        async move { response.await.text().await.unwrap() }
    };
    let titles = || async {
        let mut titles: Vec<String> = read_back(text("/feeds/all.atom").await.as_bytes())
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        titles.sort();
        titles
    };
    // The titles once there are `n` (waiting at most 15 s), or those there are then.
    let titles_of = |n: usize| async move {
        let mut shown = Vec::new();
        for _ in 0..150 {
            shown = titles().await;
            if shown.len() == n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        shown
    };
    // Waits (at most 15 s) until `check` holds for /metrics; returns them.
    let metrics_once = |check: &'static dyn Fn(&str) -> bool| async move {
        let mut metrics = String::new();
        for _ in 0..150 {
            metrics = text("/metrics").await;
            if check(&metrics) {
                return metrics;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("/metrics never became as expected:\n{metrics}");
    };
    let polls = || upstream.requests("/c.xml").len();
    let wait_for_polls = |n: usize| async move {
        let until = polls() + n;
        for _ in 0..150 {
            if polls() >= until {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("fewer than {n} polls in 15 s");
    };

    metrics_once(&|m| metric(m, "feedmux_items_stored") == 2.0).await;
    // Stored, then rendered: the feed follows the count a moment later.
    assert_eq!(titles_of(2).await, ["Fresh one", "Two days old"]);

    // 30 days forward: both items are "past retention" by the jumped clock.
    clock.step(chrono::Duration::days(30));
    let metrics =
        metrics_once(&|m| metric(m, "feedmux_clock_jumps_total{direction=\"forward\"}") == 1.0)
            .await;
    assert_eq!(
        metric(
            &metrics,
            "feedmux_clock_jumps_total{direction=\"backward\"}"
        ),
        0.0
    );
    // Several polls and retention sweeps (every 300 ms) later: nothing pruned, all served.
    wait_for_polls(3).await;
    let metrics = text("/metrics").await;
    assert_eq!(metric(&metrics, "feedmux_items_pruned_total"), 0.0);
    assert_eq!(metric(&metrics, "feedmux_items_stored"), 2.0);
    assert_eq!(titles().await, ["Fresh one", "Two days old"]);
    let readyz = get("/readyz").await;
    assert_eq!(readyz.status(), 200);
    let readyz = readyz.text().await.unwrap();
    assert!(
        readyz.starts_with("ready\nwarning: the system clock jumped forward by 30 days 0 h at "),
        "{readyz}"
    );
    let status = text("/").await;
    assert!(
        status.contains("The system clock jumped forward by 30 days 0 h</strong>"),
        "{status}"
    );
    let log = logs.text();
    assert!(log.contains("clock jumped forward by 30 days 0 h"), "{log}");
    assert!(log.contains("jump_secs=2592000"), "{log}");
    assert!(log.contains("not pruning items by age"), "{log}");

    // 31 days back, a day behind the real time: a new undated item is still polled, dated by
    // the clock, and served.
    clock.step(-chrono::Duration::days(31));
    metrics_once(&|m| metric(m, "feedmux_clock_jumps_total{direction=\"backward\"}") == 1.0).await;
    upstream.put(
        "/c.xml",
        &rss_type,
        rss(&[fresh, older, ("After the jump", None)]),
    );
    assert_eq!(
        titles_of(3).await,
        ["After the jump", "Fresh one", "Two days old"]
    );
    let json: serde_json::Value = serde_json::from_str(&text("/feeds/all.json").await).unwrap();
    let new_item = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["title"] == "After the jump")
        .unwrap()
        .clone();
    let published =
        chrono::DateTime::parse_from_rfc3339(new_item["date_published"].as_str().unwrap()).unwrap();
    let behind = Utc::now() - published.with_timezone(&Utc);
    assert!(
        behind > chrono::Duration::hours(23) && behind < chrono::Duration::hours(25),
        "first seen a day behind the real time, by the clock: {published}"
    );
    wait_for_polls(2).await;
    let response = get("/feeds/all.atom").await;
    let cache_control = response.headers()["cache-control"].to_str().unwrap();
    let max_age: u64 = cache_control
        .rsplit("max-age=")
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!((60..=3600).contains(&max_age), "{cache_control}");
    assert_eq!(get("/readyz").await.status(), 200);
    let metrics = text("/metrics").await;
    assert_eq!(metric(&metrics, "feedmux_items_pruned_total"), 0.0);
    assert_eq!(metric(&metrics, "feedmux_items_stored"), 3.0);
    let status = text("/").await;
    assert!(
        status.contains("The system clock jumped backward by 31 days 0 h</strong>"),
        "{status}"
    );
    let log = logs.text();
    assert!(
        log.contains("clock jumped backward by 31 days 0 h"),
        "{log}"
    );
    println!(
        "{} polls in all; forward jump 30 days, backward 31 days; 0 items pruned",
        polls()
    );

    served.stop().await;
}

/// The clock is already 30 days ahead when the daemon starts (a bad RTC, a restored VM): the
/// first retention pass waits until a feed server's `Date` has been compared with it, then
/// every pass waits while it is ahead; the skew is logged, shown on the status page and in
/// `/metrics`, and `/readyz` stays 200. Once the clock is set right, pruning by age resumes:
/// the item really past the 3 days goes, the fresh one stays.
#[tokio::test]
async fn a_clock_wrong_at_start_is_found_by_the_servers_dates_and_prunes_nothing() {
    let (logs, _logging) = Logs::capture();

    let upstream = Upstream::start().await;
    upstream.put(
        "/c.xml",
        &[("content-type", "application/rss+xml")],
        rss(&[
            ("Fresh one", Some(chrono::Duration::hours(1))),
            ("Five days old", Some(chrono::Duration::days(5))),
        ]),
    );
    let dir = tempdir();
    let config = keeping_three_days(dir.path(), &upstream.url("/c.xml"));
    let clock = Arc::new(SteppedClock::new(Utc::now() + chrono::Duration::days(30)));
    let served = Served::with_clock(config, clock.clone()).await;
    let base = served.base.clone();
    let http = reqwest::Client::new();
    let text = |path: &'static str| {
        let request = http.get(format!("{base}{path}"));
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    let wait_until = |what: &'static str, check: &'static dyn Fn(&str) -> bool, path| async move {
        let mut body = String::new();
        for _ in 0..150 {
            body = text(path).await;
            if check(&body) {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{what} not seen within 15 s:\n{body}");
    };

    let status = wait_until(
        "the skew on the status page",
        &|p| p.contains("id=\"clock-skew\""),
        "/",
    )
    .await;
    assert!(
        status.contains("The system clock is 30 days 0 h ahead of the feed servers' clocks (median of 1)</strong>"),
        "{status}"
    );
    let metrics = text("/metrics").await;
    let skew = metric(&metrics, "feedmux_clock_skew_seconds");
    assert!((skew - 2_592_000.0).abs() < 10.0, "{skew}");
    // Many retention passes (every 300 ms) and polls (every second) later: nothing pruned.
    let polls = upstream.requests("/c.xml").len();
    for _ in 0..100 {
        if upstream.requests("/c.xml").len() >= polls + 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = text("/metrics").await;
    assert_eq!(metric(&metrics, "feedmux_items_stored"), 2.0);
    assert_eq!(metric(&metrics, "feedmux_items_pruned_total"), 0.0);
    let response = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        "ready\nwarning: the system clock is 30 days 0 h ahead of the feed servers' clocks (median of 1)\n"
    );
    let log = logs.text();
    assert!(
        log.contains("not pruning items by age yet: the clock has not been compared"),
        "the first pass waited for a server's answer:\n{log}"
    );
    assert!(
        log.contains("the system clock is 30 days 0 h ahead of the feed servers' clocks"),
        "{log}"
    );
    assert!(
        log.contains("not pruning items by age: the clock is 30 days 0 h ahead"),
        "{log}"
    );

    // The clock is set right: the next answer agrees, and pruning by age resumes.
    clock.step(-chrono::Duration::days(30));
    wait_until(
        "the item past retention pruned",
        &|m| metric(m, "feedmux_items_pruned_total") == 1.0,
        "/metrics",
    )
    .await;
    let mut shown: Vec<String> = read_back(text("/feeds/all.atom").await.as_bytes())
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    shown.sort();
    assert_eq!(shown, ["Fresh one"]);
    assert!(!text("/").await.contains("id=\"clock-skew\""));
    assert!(
        !text("/readyz").await.contains("ahead of the feed servers"),
        "the warning goes once the clock agrees"
    );
    let log = logs.text();
    assert!(
        log.contains("the system clock agrees with the feed servers' clocks again"),
        "{log}"
    );
    println!(
        "clock 30 days ahead at start: 0 items pruned while it was; 1 (5 days old) once set right"
    );

    served.stop().await;
}
