//! Several `feedmux run` instances sharing one PostgreSQL database (issue 20): each source is
//! polled once per slot by one of them, every instance serves what any of them polled, an
//! instance killed mid-way leaves its sources to the others, and a database that goes down
//! and comes back costs nothing but the polls in between; `feedmux poll` beside them polls
//! nothing that one of them is polling or just polled.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::pg_cluster::PgCluster;
use crate::support::real::{free_port, RealDaemon};
use crate::support::upstream::Upstream;
use crate::support::{eventually, rss_feed, tempdir, RssItem};
use feedmux::daemon::{poll_once, PollOutcome, Polled};
use feedmux::store::{PollClaim, SeenPoll, Store};

const SOURCES: usize = 4;
/// Every source is due every 3 seconds.
const SCHEDULE: &str = "*/3 * * * * *";
const SLOT: Duration = Duration::from_secs(3);

/// The feed of source `n` with items `0..items`.
fn feed_of(n: usize, items: usize) -> String {
    rss_feed(
        &format!("Source {n}"),
        &format!("http://example.com/{n}/"),
        (0..items).map(|i| {
            RssItem::new(
                format!("s{n}-{i}"),
                format!("Report {i} from source {n} about topic {}", n * 100 + i),
                format!("http://example.com/{n}/{i}"),
            )
        }),
    )
}

fn publish(upstream: &Upstream, items: usize) {
    for n in 0..SOURCES {
        upstream.put(
            &format!("/s{n}.xml"),
            &[("content-type", "application/rss+xml")],
            feed_of(n, items),
        );
    }
}

/// Writes `dir/feedmux.toml` for an instance listening on `port`, on the database `url`.
fn write_config(dir: &Path, port: u16, url: &str, upstream: &Upstream) {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nbase_url = \"http://feeds.test\"\n[storage]\nengine = \"postgres\"\nurl = {url:?}\n\
         [poll]\nschedule = \"{SCHEDULE}\"\nper_host_interval = \"0s\"\ntimeout = \"5s\"\n\
         [dedup]\nenabled = false\n"
    );
    for n in 0..SOURCES {
        text.push_str(&format!(
            "[[source]]\nname = \"s{n}\"\nurl = \"{}\"\n",
            upstream.url(&format!("/s{n}.xml"))
        ));
    }
    text.push_str("[[feed]]\nname = \"all\"\n");
    std::fs::write(dir.join("feedmux.toml"), text).unwrap();
}

/// Starts an instance in its own directory (its own log), on the database `url`.
async fn instance(
    url: &str,
    upstream: &Upstream,
    http: &reqwest::Client,
) -> (RealDaemon, tempfile::TempDir) {
    let dir = tempdir();
    let port = free_port();
    write_config(dir.path(), port, url, upstream);
    let mut daemon = RealDaemon::start(dir.path(), port);
    daemon.wait_ready(http, Duration::from_secs(30)).await;
    (daemon, dir)
}

/// The titles `daemon` serves in `/feeds/all.json`, or none when it does not answer.
async fn served(http: &reqwest::Client, daemon: &RealDaemon) -> Vec<String> {
    let Ok(response) = http
        .get(format!("{}/feeds/all.json", daemon.base()))
        .send()
        .await
    else {
        return Vec::new();
    };
    let Ok(body) = response.bytes().await else {
        return Vec::new();
    };
    let Ok(feed) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return Vec::new();
    };
    feed["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["title"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits (at most `limit`) until every daemon serves `count` items; panics with their logs.
async fn wait_served(
    http: &reqwest::Client,
    daemons: &[&RealDaemon],
    count: usize,
    limit: Duration,
) {
    let started = Instant::now();
    loop {
        let mut all = true;
        for daemon in daemons {
            all &= served(http, daemon).await.len() == count;
        }
        if all {
            return;
        }
        if started.elapsed() > limit {
            let logs: Vec<String> = daemons.iter().map(|d| d.log_text()).collect();
            panic!(
                "not every instance serves {count} items after {limit:?}:\n{}",
                logs.join("\n-----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run by .ci/run, or cargo test -- --include-ignored"]
async fn three_instances_poll_each_source_once_per_slot_and_serve_what_any_polled() {
    let upstream = Upstream::start().await;
    publish(&upstream, 2);
    let cluster = PgCluster::private();
    let url = cluster.fresh_database("cluster");
    let http = reqwest::Client::new();
    let (a, _da) = instance(&url, &upstream, &http).await;
    let (b, _db) = instance(&url, &upstream, &http).await;
    let (mut c, _dc) = instance(&url, &upstream, &http).await;
    wait_served(&http, &[&a, &b, &c], 2 * SOURCES, Duration::from_secs(20)).await;
    // Any instance serves any feed, byte for byte: the same ETag from each (they share the
    // public base URL, as instances behind one load balancer do).
    let mut served_atom = Vec::new();
    for daemon in [&a, &b, &c] {
        let response = http
            .get(format!("{}/feeds/all.atom", daemon.base()))
            .send()
            .await
            .unwrap();
        // The ETag of the bytes, whichever coding this instance has made yet (`-br`, `-gzip`).
        let etag = response.headers()["etag"].to_str().unwrap();
        let etag = etag.trim_matches('"').split('-').next().unwrap().to_owned();
        served_atom.push((etag, response.text().await.unwrap()));
    }
    assert!(
        served_atom.iter().all(|(e, _)| *e == served_atom[0].0),
        "{served_atom:#?}"
    );

    // Over 8 slots, each source is polled about once per slot, by one instance: never
    // three times a slot, and never twice within a moment.
    let from = Instant::now();
    tokio::time::sleep(SLOT * 8).await;
    for n in 0..SOURCES {
        let polls: Vec<Instant> = upstream
            .arrivals_of(&format!("/s{n}.xml"))
            .into_iter()
            .filter(|at| *at >= from)
            .collect();
        assert!(
            (6..=10).contains(&polls.len()),
            "source {n} polled {} times in 8 slots by 3 instances",
            polls.len()
        );
        for pair in polls.windows(2) {
            assert!(
                pair[1] - pair[0] >= Duration::from_millis(500),
                "source {n} polled twice within {:?}",
                pair[1] - pair[0]
            );
        }
    }

    // A new item, polled by whichever instance, is served by all three.
    publish(&upstream, 3);
    wait_served(&http, &[&a, &b, &c], 3 * SOURCES, Duration::from_secs(15)).await;

    // One instance dies (SIGKILL, perhaps holding a claim): the others poll every source
    // within 60 s, and serve what they poll.
    c.kill();
    let killed = Instant::now();
    publish(&upstream, 4);
    wait_served(&http, &[&a, &b], 4 * SOURCES, Duration::from_secs(60)).await;
    assert!(killed.elapsed() < Duration::from_secs(60));

    // The database restarts: the two go on serving meanwhile, and store and serve what
    // they poll once it is back.
    cluster.stop();
    publish(&upstream, 5);
    tokio::time::sleep(SLOT * 2).await;
    assert_eq!(served(&http, &a).await.len(), 4 * SOURCES);
    assert_eq!(served(&http, &b).await.len(), 4 * SOURCES);
    cluster.start();
    wait_served(&http, &[&a, &b], 5 * SOURCES, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run by .ci/run, or cargo test -- --include-ignored"]
async fn two_instances_keep_the_per_host_gap_between_them() {
    let upstream = Upstream::start().await;
    publish(&upstream, 1);
    let url = PgCluster::shared().fresh_database("gap");
    let http = reqwest::Client::new();
    let mut instances = Vec::new();
    for _ in 0..2 {
        let dir = tempdir();
        let port = free_port();
        write_config(dir.path(), port, &url, &upstream);
        // Every source on the one host, due once at start, a second apart whoever polls.
        let text = std::fs::read_to_string(dir.path().join("feedmux.toml"))
            .unwrap()
            .replace("per_host_interval = \"0s\"", "per_host_interval = \"1s\"")
            .replace(SCHEDULE, "0 0 0 1 1 *");
        std::fs::write(dir.path().join("feedmux.toml"), text).unwrap();
        let mut daemon = RealDaemon::start(dir.path(), port);
        daemon.wait_ready(&http, Duration::from_secs(30)).await;
        instances.push((daemon, dir));
    }
    let daemons: Vec<&RealDaemon> = instances.iter().map(|(d, _)| d).collect();
    wait_served(&http, &daemons, SOURCES, Duration::from_secs(30)).await;
    let mut polls: Vec<Instant> = (0..SOURCES)
        .flat_map(|n| upstream.arrivals_of(&format!("/s{n}.xml")))
        .collect();
    polls.sort();
    assert_eq!(polls.len(), SOURCES, "each source polled once");
    for pair in polls.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(900),
            "two polls of one host {:?} apart",
            pair[1] - pair[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run by .ci/run, or cargo test -- --include-ignored"]
async fn an_instance_keeps_serving_while_the_database_is_down_and_catches_up_after() {
    let cluster = PgCluster::private();
    let url = cluster.fresh_database("down");
    let upstream = Upstream::start().await;
    publish(&upstream, 2);
    let http = reqwest::Client::new();
    let (mut a, _da) = instance(&url, &upstream, &http).await;
    wait_served(&http, &[&a], 2 * SOURCES, Duration::from_secs(20)).await;

    cluster.stop();
    publish(&upstream, 3);
    // Polls fail for the database, not the sources: the feeds stay served as they were,
    // and /readyz says the store is failing.
    let readyz = format!("{}/readyz", a.base());
    let started = Instant::now();
    loop {
        let status = http.get(&readyz).send().await.unwrap().status();
        if status == 503 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still ready with the database down:\n{}",
            a.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(served(&http, &a).await.len(), 2 * SOURCES);
    assert!(a.child.try_wait().unwrap().is_none(), "{}", a.log_text());

    cluster.start();
    // Back: the next polls store the new items, and the instance is ready again.
    wait_served(&http, &[&a], 3 * SOURCES, Duration::from_secs(45)).await;
    a.wait_ready(&http, Duration::from_secs(30)).await;
    let log = a.log_text();
    assert!(log.contains("cannot reach the database"), "{log}");
}

/// The feed of source `name`: `stories` reports, each linking to the story's page (as two
/// outlets quoting one announcement do), under the source's own GUIDs and titles.
fn reports_of(name: &str, stories: usize) -> String {
    rss_feed(
        name,
        &format!("http://{name}.example/"),
        (0..stories).map(|i| {
            RssItem::new(
                format!("{name}-{i}"),
                format!("{name} reports announcement {i}"),
                format!("http://lab.example/news/{i}"),
            )
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run by .ci/run, or cargo test -- --include-ignored"]
async fn two_instances_ingesting_the_same_stories_at_once_make_each_one_story() {
    const STORIES: usize = 40;
    let upstream = Upstream::start().await;
    for name in ["a", "b"] {
        upstream.put(
            &format!("/{name}.xml"),
            &[("content-type", "application/rss+xml")],
            reports_of(name, STORIES),
        );
    }
    for round in 0..3 {
        // Two instances (two processes' worth of engines, each with its own connections
        // and database lock session) poll one source each, at the same moment.
        let url = PgCluster::shared().fresh_database("race");
        let configs: Vec<(tempfile::TempDir, feedmux::config::Config)> = (0..2)
            .map(|_| {
                let dir = tempdir();
                let text = format!(
                    "[storage]\nengine = \"postgres\"\nurl = {url:?}\n[poll]\nper_host_interval = \"0s\"\n\
                     [[source]]\nname = \"a\"\nurl = \"{}\"\n[[source]]\nname = \"b\"\nurl = \"{}\"\n\
                     [[feed]]\nname = \"all\"\n",
                    upstream.url("/a.xml"),
                    upstream.url("/b.xml")
                );
                let path = dir.path().join("feedmux.toml");
                std::fs::write(&path, text).unwrap();
                let config = feedmux::config::load(&path).unwrap();
                (dir, config)
            })
            .collect();
        let polls: Vec<_> = configs
            .iter()
            .zip(["a", "b"])
            .map(|((_, config), name)| {
                let config = config.clone();
                tokio::spawn(async move { crate::poll(&config, &[name]).await })
            })
            .collect();
        for poll in polls {
            for (source, result) in poll.await.unwrap() {
                assert!(result.is_ok(), "round {round}, {source}: {result:?}");
            }
        }
        // Each announcement is one story of two reports, whichever poll was planned first.
        let titles = crate::titles(&configs[0].1, "all");
        assert_eq!(titles.len(), STORIES, "round {round}: {titles:?}");
    }
}

/// The outcome of `source` among `feedmux poll`'s.
fn outcome_of<'a>(outcomes: &'a [PollOutcome], source: &str) -> &'a Polled {
    &outcomes
        .iter()
        .find(|o| o.source == source)
        .unwrap_or_else(|| panic!("no outcome for {source}"))
        .polled
}

/// `feedmux poll` of `sources`, in the background, as a user runs it beside the instances.
fn poll_in_background(
    config: &feedmux::config::Config,
    sources: &[&str],
) -> tokio::task::JoinHandle<Vec<PollOutcome>> {
    let config = config.clone();
    let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
    tokio::spawn(async move { poll_once(&config, &sources, false).await.unwrap() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run by .ci/run, or cargo test -- --include-ignored"]
async fn feedmux_poll_waits_while_an_instance_polls_a_source_and_does_not_poll_it_again() {
    let upstream = Upstream::start().await;
    publish(&upstream, 1);
    let url = PgCluster::shared().fresh_database("on_demand");
    let dir = tempdir();
    write_config(dir.path(), free_port(), &url, &upstream);
    let config = feedmux::config::load(&dir.path().join("feedmux.toml")).unwrap();
    // Another instance, polling s0: its claim is held.
    let other = Store::open_configured(&config.storage).unwrap();
    let claim = |seen| {
        other.claim_poll(
            "s0",
            Some("127.0.0.1"),
            seen,
            Duration::from_secs(60),
            Duration::ZERO,
        )
    };
    assert_eq!(claim(SeenPoll::Last(None)).unwrap(), PollClaim::Granted);

    let poll = poll_in_background(&config, &["s0", "s1"]);
    eventually("s1 polled", || upstream.arrivals_of("/s1.xml").len() == 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        upstream.arrivals_of("/s0.xml").is_empty(),
        "s0 polled while another instance was polling it"
    );
    // The other instance's poll is written and its claim let go: s0 is not polled again.
    let mut state = other.source_state("s0").unwrap();
    state.last_poll = Some(chrono::Utc::now());
    other.put_source_state("s0", state.clone()).unwrap();
    other.release_poll("s0").unwrap();
    let outcomes = poll.await.unwrap();
    assert!(matches!(
        outcome_of(&outcomes, "s0"),
        Polled::PolledElsewhere
    ));
    assert!(matches!(outcome_of(&outcomes, "s1"), Polled::Done(Ok(_))));
    assert!(upstream.arrivals_of("/s0.xml").is_empty());

    // A claim let go without polling: `feedmux poll` waits for it, then polls.
    assert_eq!(
        claim(SeenPoll::Last(state.last_poll)).unwrap(),
        PollClaim::Granted
    );
    let poll = poll_in_background(&config, &["s0"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(upstream.arrivals_of("/s0.xml").is_empty());
    other.release_poll("s0").unwrap();
    let outcomes = poll.await.unwrap();
    assert!(matches!(outcome_of(&outcomes, "s0"), Polled::Done(Ok(_))));
    assert_eq!(upstream.arrivals_of("/s0.xml").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL: run by .ci/run, or cargo test -- --include-ignored"]
async fn feeds_are_served_while_requests_that_read_the_store_wait_for_the_database() {
    let upstream = Upstream::start().await;
    publish(&upstream, 2);
    let url = PgCluster::shared().fresh_database("stalled");
    let http = reqwest::Client::new();
    let (daemon, _dir) = instance(&url, &upstream, &http).await;
    wait_served(&http, &[&daemon], 2 * SOURCES, Duration::from_secs(30)).await;

    // Another session locks the source states: every read of them waits until it lets go.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let locker = std::thread::spawn({
        let url = url.clone();
        move || {
            let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
            let mut tx = client.transaction().unwrap();
            tx.batch_execute("LOCK TABLE source_states IN ACCESS EXCLUSIVE MODE")
                .unwrap();
            locked_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(Duration::from_secs(60));
            tx.rollback().unwrap();
        }
    });
    locked_rx.recv().unwrap();
    // More waiting requests than the daemon has threads, of every route that reads the store.
    let waiting: Vec<_> = ["/api/sources", "/opml", "/readyz", "/metrics"]
        .iter()
        .cycle()
        .take(16)
        .map(|path| {
            let request = http.get(format!("{}{path}", daemon.base())).send();
            tokio::spawn(request)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        waiting.iter().all(|w| !w.is_finished()),
        "a request that reads the store answered while the store was locked"
    );
    let feed = http
        .get(format!("{}/feeds/all.json", daemon.base()))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("the feed is served while the database holds the other requests");
    assert_eq!(feed.status(), 200);
    release_tx.send(()).unwrap();
    locker.join().unwrap();
    for request in waiting {
        let response = request.await.unwrap().unwrap();
        assert_eq!(response.status(), 200, "{}", response.url());
    }
}
