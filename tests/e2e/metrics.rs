//! `/metrics`, `/healthz` and `/readyz` of a running daemon, read the way Prometheus and a
//! load balancer read them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use feedmux::http::routes::{self, AppState};
use feedmux::metrics::Metrics;
use feedmux::publish::Publisher;
use feedmux::store::Store;
use reqwest::header;

use crate::served::Served;
use crate::upstream::{Page, Upstream};
use crate::{config, rss_feed, source, tempdir, RssItem};

/// Parses the text exposition format strictly: every sample belongs to a family declared
/// by `# TYPE` before it, and every line is a comment or `name{labels} value`.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|f| types.get(*f).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "no # TYPE before {line}");
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "duplicate series {series}"
        );
    }
    samples
}

#[tokio::test]
async fn metrics_count_polls_fetches_items_merges_and_304s() {
    let upstream = Upstream::start().await;
    let rss = |items: Vec<RssItem>| rss_feed("t", "https://x.example/", items);
    upstream.put(
        "/a.xml",
        &[("content-type", "application/rss+xml")],
        rss(vec![
            RssItem::new(1, "Lumen-4 launched", "https://news.example/lumen-4"),
            RssItem::new(2, "Other", "https://news.example/other"),
        ]),
    );
    upstream.put(
        "/b.xml",
        &[("content-type", "application/rss+xml")],
        rss(vec![RssItem::new(
            "x",
            "A new model from Lumen",
            "https://news.example/lumen-4?utm_source=rss",
        )]),
    );
    upstream.put_page("/broken.xml", Page::new(500, &[], "oops"));
    let dir = tempdir();
    // Yearly: each source is polled once, at start-up.
    let yearly = |name: &str, path: &str| {
        format!(
            "{}schedule = \"0 0 0 1 1 *\"\n\n",
            source(name, &upstream.url(path))
                .trim_end_matches('\n')
                .to_owned()
                + "\n"
        )
    };
    let config = config(
        dir.path(),
        &format!(
            "{}{}{}[[feed]]\nname = \"all\"\n",
            yearly("a", "/a.xml"),
            yearly("b", "/b.xml"),
            yearly("broken", "/broken.xml")
        ),
    );
    let served = Served::with_config(config).await;
    let base = served.base.clone();
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{base}{path}")).send();

    // Bounded wait until each source's first poll is counted.
    for _ in 0..150 {
        let samples = parse(&get("/metrics").await.unwrap().text().await.unwrap());
        let polls: f64 = samples
            .iter()
            .filter(|(k, _)| k.starts_with("feedmux_polls_total{"))
            .map(|(_, v)| v)
            .sum();
        if polls == 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let feed = get("/feeds/all.atom").await.unwrap();
    let etag = feed.headers()[header::ETAG].clone();
    let again = http
        .get(format!("{base}/feeds/all.atom"))
        .header(header::IF_NONE_MATCH, etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    let response = get("/metrics").await.unwrap();
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let samples_after = parse(&response.text().await.unwrap());

    let s = |name: &str| {
        *samples_after
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {samples_after:?}"))
    };
    assert_eq!(s("feedmux_polls_total{source=\"a\",result=\"ok\"}"), 1.0);
    assert_eq!(s("feedmux_polls_total{source=\"b\",result=\"ok\"}"), 1.0);
    assert_eq!(
        s("feedmux_polls_total{source=\"broken\",result=\"error\"}"),
        1.0
    );
    assert_eq!(s("feedmux_items_ingested_total{kind=\"new\"}"), 3.0);
    assert_eq!(s("feedmux_items_ingested_total{kind=\"updated\"}"), 0.0);
    assert_eq!(s("feedmux_duplicates_merged_total{kind=\"url\"}"), 1.0);
    assert_eq!(s("feedmux_duplicates_merged_total{kind=\"text\"}"), 0.0);
    assert_eq!(s("feedmux_duplicates_merged_total{kind=\"meaning\"}"), 0.0);
    assert_eq!(s("feedmux_feed_requests_total{response=\"any\"}"), 2.0);
    assert_eq!(s("feedmux_feed_requests_total{response=\"304\"}"), 1.0);
    // Each response counted once, by its code: the series add up to the requests.
    assert_eq!(s("feedmux_feed_responses_total{code=\"200\"}"), 1.0);
    assert_eq!(s("feedmux_feed_responses_total{code=\"304\"}"), 1.0);
    let responses: f64 = samples_after
        .iter()
        .filter(|(k, _)| k.starts_with("feedmux_feed_responses_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(
        responses,
        s("feedmux_feed_requests_total{response=\"any\"}")
    );
    assert_eq!(s("feedmux_items_stored"), 3.0);
    assert!(s("feedmux_store_bytes") > 0.0);
    assert_eq!(s("feedmux_store_failing"), 0.0);
    let version = format!(
        "feedmux_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(s(&version), 1.0, "which feedmux answers");
    // Three fetches, each in some bucket; buckets are cumulative and end at the count.
    assert_eq!(s("feedmux_fetch_duration_seconds_count"), 3.0);
    let mut buckets: Vec<(f64, f64)> = samples_after
        .iter()
        .filter_map(|(k, v)| {
            let le = k.strip_prefix("feedmux_fetch_duration_seconds_bucket{le=\"")?;
            let le = le.strip_suffix("\"}")?;
            Some((
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                },
                *v,
            ))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() > 5);
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, 3.0));
    assert!(s("feedmux_fetch_duration_seconds_sum") > 0.0);

    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    served.stop().await;
}

#[tokio::test]
async fn readyz_answers_503_until_ready_and_while_the_store_fails() {
    let dir = tempdir();
    let config = config(dir.path(), "");
    let store = Store::open_configured(&config.storage).unwrap();
    let ready = Arc::new(AtomicBool::new(false));
    let metrics = Arc::new(Metrics::default());
    let app = routes::router(AppState {
        config: Arc::new(RwLock::new(Arc::new(config))),
        store,
        publisher: Arc::new(Publisher::new()),
        metrics: metrics.clone(),
        ready: ready.clone(),
        reload_failure: Arc::new(RwLock::new(None)),
        clock: Arc::new(feedmux::clock::ClockWatch::new(feedmux::clock::system())),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/readyz", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let status = || async { reqwest::get(&url).await.unwrap().status().as_u16() };
    assert_eq!(
        status().await,
        503,
        "not ready before the first scheduling pass"
    );
    ready.store(true, Ordering::Release);
    assert_eq!(status().await, 200);
    metrics.store_failing.store(true, Ordering::Relaxed);
    assert_eq!(status().await, 503, "not ready while the store fails");
}

#[tokio::test]
async fn a_broken_feed_is_served_and_its_health_says_what_was_mended() {
    let upstream = Upstream::start().await;
    // A bare `&`, an HTML entity and a cut-off last item; and a well-formed neighbour.
    upstream.put(
        "/broken.xml",
        &[("content-type", "application/rss+xml; charset=utf-8")],
        "<rss version=\"2.0\"><channel><title>Lab & friends</title>\
         <item><guid>1</guid><title>Q&A with the team &mdash; part 1</title></item>\
         <item><guid>2</guid><title>Benchmarks</title></item>\
         <item><guid>3</guid><title>Cut o",
    );
    upstream.put(
        "/fine.xml",
        &[("content-type", "application/rss+xml")],
        "<rss version=\"2.0\"><channel><title>t</title><item><guid>a</guid><title>Fine</title></item></channel></rss>",
    );
    let dir = tempdir();
    let yearly = |name: &str, path: &str| {
        source(name, &upstream.url(path))
            .trim_end_matches('\n')
            .to_owned()
            + "\nschedule = \"0 0 0 1 1 *\"\n\n"
    };
    let config = config(
        dir.path(),
        &format!(
            "{}{}[[feed]]\nname = \"all\"\n",
            yearly("broken", "/broken.xml"),
            yearly("fine", "/fine.xml")
        ),
    );
    let served = Served::with_config(config).await;
    let base = served.base.clone();
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{base}{path}")).send();

    // Bounded wait until both first polls are counted.
    let mut samples = HashMap::new();
    for _ in 0..150 {
        samples = parse(&get("/metrics").await.unwrap().text().await.unwrap());
        let polls: f64 = samples
            .iter()
            .filter(|(k, _)| k.starts_with("feedmux_polls_total{"))
            .map(|(_, v)| v)
            .sum();
        if polls == 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        samples.get("feedmux_polls_total{source=\"broken\",result=\"ok\"}"),
        Some(&1.0)
    );
    assert_eq!(
        samples.get("feedmux_polls_recovered_total{source=\"broken\"}"),
        Some(&1.0),
        "{samples:?}"
    );
    assert_eq!(
        samples.get("feedmux_polls_recovered_total{source=\"fine\"}"),
        None
    );

    // Bounded wait until the output feed is rendered with both sources' items.
    let wanted = ["Q&A with the team — part 1", "Benchmarks", "Fine"];
    let mut titles: Vec<String> = Vec::new();
    for _ in 0..150 {
        let atom = get("/feeds/all.atom").await.unwrap().text().await.unwrap();
        titles = feed_rs::parser::parse(atom.as_bytes())
            .unwrap()
            .entries
            .into_iter()
            .map(|e| e.title.unwrap().content)
            .collect();
        if wanted.iter().all(|w| titles.iter().any(|t| t == w)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for title in wanted {
        assert!(titles.iter().any(|t| t == title), "{title} in {titles:?}");
    }
    assert!(!titles.iter().any(|t| t.starts_with("Cut")), "{titles:?}");

    let page = get("/").await.unwrap().text().await.unwrap();
    assert!(
        page.contains("recovered (unescaped &amp;, HTML entities, cut off)"),
        "the status page shows the health: {page}"
    );
    let sources = crate::api_sources(&http, &base).await;
    let broken = sources.iter().find(|s| s["name"] == "broken").unwrap();
    assert_eq!(
        broken["state"]["recovered"],
        "unescaped &, HTML entities, cut off"
    );
    let fine = sources.iter().find(|s| s["name"] == "fine").unwrap();
    assert!(fine["state"]["recovered"].is_null());
    served.stop().await;
}

/// `feedmux_fetch_duration_seconds` measures the source, not feedmux's politeness: with one
/// request per host at a time and a second between request starts, the second of two fetches
/// waits about a second for its turn, yet is timed as the quick fetch it is.
#[tokio::test]
async fn fetch_time_leaves_out_the_wait_for_the_hosts_turn() {
    let upstream = Upstream::start().await;
    upstream.put(
        "/feed.xml",
        &[("content-type", "application/rss+xml")],
        "<rss/>",
    );
    let text = format!(
        "[poll]\nper_host_concurrency = 1\nper_host_interval = \"1s\"\n\
         [[source]]\nname = \"a\"\nurl = \"{}\"\n",
        upstream.url("/feed.xml")
    );
    let config = feedmux::config::parse(std::path::Path::new("feedmux.toml"), &text)
        .unwrap_or_else(|e| panic!("{e}"));
    let fetcher = feedmux::fetch::Fetcher::new(&config.poll).unwrap();
    // As the daemon does: the configured source (on 127.0.0.1) may be fetched.
    fetcher.set_address_policy(feedmux::fetch::address::AddressPolicy::for_config(&config));
    let url = config.sources[0].url.clone();
    let none = feedmux::fetch::Validators::default();
    let (first, _) = fetcher.fetch_timed(&url, &none).await;
    assert!(first.is_ok(), "{:?}", first.err());
    let asked = std::time::Instant::now();
    let (second, took) = fetcher.fetch_timed(&url, &none).await;
    let waited = asked.elapsed();
    assert!(second.is_ok(), "{:?}", second.err());
    assert!(
        waited >= Duration::from_millis(900),
        "the second fetch waited for its turn: {waited:?}"
    );
    assert!(
        took + Duration::from_millis(800) <= waited,
        "timed {took:?} of {waited:?}: the wait for the host's turn was counted"
    );
}
