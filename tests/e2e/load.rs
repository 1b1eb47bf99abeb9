//! Load: the real daemon serving 64 concurrent readers while it polls many local sources whose
//! feeds keep changing. Zero errors allowed; latency percentiles and the daemon's memory
//! (RSS from /proc, after warm-up and at the end) are printed and bounded.
//!
//! CI runs 200 sources for 10 s. The full run is 1,000 sources for 60 s:
//! `FEEDMUX_LOAD_SOURCES=1000 FEEDMUX_LOAD_SECS=60 cargo test --test e2e load:: -- --nocapture`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::real::{free_port, RealDaemon};
use crate::tempdir;
use crate::upstream::Upstream;

const READERS: usize = 64;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn feed(s: usize, newest: usize) -> String {
    let items: String = (newest.saturating_sub(10)..newest)
        .rev()
        .map(|n| {
            format!(
                "<item><guid>s{s}-{n}</guid><title>{} {s}-{n}: model release notes</title>\
                 <link>https://s{s}.example/{n}</link><description>&lt;p&gt;Entry {n} of source {s}.&lt;/p&gt;</description></item>",
                if n % 3 == 0 { "AI" } else { "News" }
            )
        })
        .collect();
    format!("<rss version=\"2.0\"><channel><title>source {s}</title><link>https://s{s}.example/</link><description>d</description>{items}</channel></rss>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_readers_while_polling_many_sources() {
    let sources = env("FEEDMUX_LOAD_SOURCES", 200);
    let seconds = env("FEEDMUX_LOAD_SECS", 10);
    let upstream = Upstream::start().await;
    let newest: Vec<usize> = vec![10; sources];
    let mut tables = String::new();
    for (s, n) in newest.iter().enumerate() {
        upstream.put(
            &format!("/s{s}.xml"),
            &[("content-type", "application/rss+xml")],
            feed(s, *n),
        );
        tables.push_str(&format!(
            "[[source]]\nname = \"s{s}\"\nurl = \"{}\"\ntags = [\"{}\"]\n\n",
            upstream.url(&format!("/s{s}.xml")),
            if s % 2 == 0 { "even" } else { "odd" }
        ));
    }
    let dir = tempdir();
    let port = free_port();
    std::fs::write(
        dir.path().join("feedmux.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[storage]\npath = \"store\"\n\
             [poll]\nschedule = \"*/5 * * * * *\"\nconcurrency = 16\nper_host_concurrency = 16\nper_host_interval = \"0s\"\n\
             [log]\nlevel = \"warn\"\n\
             {tables}\
             [[feed]]\nname = \"all\"\n\
             [[feed]]\nname = \"even\"\ntags = [\"even\"]\n\
             [[feed]]\nname = \"ai\"\ninclude = [\"AI\"]\n"
        ),
    )
    .unwrap();
    let mut daemon = RealDaemon::start(dir.path(), port);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(READERS)
        .build()
        .unwrap();
    daemon.wait_ready(&http, Duration::from_secs(20)).await;
    let base = daemon.base();

    // Warm-up: every source polled once.
    let started = Instant::now();
    loop {
        let polled = sources_with(&http, &base, "last_success").await;
        if polled == sources {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {polled} of {sources} sources polled:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let warm_up = started.elapsed();
    let rss_start = daemon.rss_kib();

    // Upstream feeds change all the time: one source gains an entry every 20 ms.
    let changer = {
        let upstream = upstream.clone();
        let mut newest = newest.clone();
        tokio::spawn(async move {
            loop {
                let s = rand::thread_rng().gen_range(0..newest.len());
                newest[s] += 1;
                upstream.put(
                    &format!("/s{s}.xml"),
                    &[("content-type", "application/rss+xml")],
                    feed(s, newest[s]),
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let deadline = Instant::now() + Duration::from_secs(seconds as u64);
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let bytes = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for r in 0..READERS {
        let http = http.clone();
        let base = base.clone();
        let errors = errors.clone();
        let bytes = bytes.clone();
        readers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = r;
            while Instant::now() < deadline {
                n += 1;
                let path = match n % 8 {
                    0 => "/feeds/all.atom",
                    1 => "/feeds/all.rss",
                    2 => "/feeds/all.json",
                    3 => "/feeds/even.atom",
                    4 => "/feeds/ai.json",
                    5 => "/feeds/ai.rss",
                    6 => "/",
                    _ => "/feeds/even.json",
                };
                let mut request = http.get(format!("{base}{path}"));
                if n % 2 == 0 {
                    request = request.header("accept-encoding", "gzip");
                }
                let sent = Instant::now();
                match request.send().await {
                    Ok(response) if response.status() == 200 => match response.bytes().await {
                        Ok(body) => {
                            bytes.fetch_add(body.len(), Ordering::Relaxed);
                            latencies.push(sent.elapsed());
                        }
                        Err(e) => errors.lock().unwrap().push(format!("{path}: body: {e}")),
                    },
                    Ok(response) => errors
                        .lock()
                        .unwrap()
                        .push(format!("{path}: status {}", response.status())),
                    Err(e) => errors.lock().unwrap().push(format!("{path}: {e}")),
                }
            }
            latencies
        }));
    }
    // Memory is sampled through the run: the first half's peak is the daemon with its
    // readers' connections, buffers and caches in place; the second half must stay near it.
    let halfway = deadline - Duration::from_secs(seconds as u64) / 2;
    let (mut rss_first_half, mut rss_second_half) = (0, 0);
    while Instant::now() < deadline {
        let rss = daemon.rss_kib();
        if Instant::now() < halfway {
            rss_first_half = rss_first_half.max(rss);
        } else {
            rss_second_half = rss_second_half.max(rss);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut latencies = Vec::new();
    for r in readers {
        latencies.extend(r.await.unwrap());
    }
    changer.abort();
    let rss_end = daemon.rss_kib();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let errors = errors.lock().unwrap().clone();
    let failing = sources_with(&http, &base, "last_error").await;
    println!(
        "load: {sources} sources (warm-up {warm_up:.1?}), {READERS} readers for {seconds} s: {} requests ({:.0}/s, {} MB), {} errors; latency p50 {:.1?} p99 {:.1?} max {:.1?}; RSS {} before, peak {} in the first half, {} in the second, {} at the end (MiB); {failing} sources failing",
        latencies.len(),
        latencies.len() as f64 / seconds as f64,
        bytes.load(Ordering::Relaxed) / 1_000_000,
        errors.len(),
        at(0.50),
        at(0.99),
        latencies.last().copied().unwrap_or_default(),
        rss_start / 1024,
        rss_first_half / 1024,
        rss_second_half / 1024,
        rss_end / 1024,
    );
    assert!(
        errors.is_empty(),
        "{} errors: {:?}",
        errors.len(),
        &errors[..errors.len().min(10)]
    );
    assert_eq!(failing, 0, "sources failed under load");
    assert!(
        latencies.len() > READERS * seconds,
        "too few requests: {}",
        latencies.len()
    );
    assert!(at(0.99) < Duration::from_secs(2), "p99 {:?}", at(0.99));
    // Memory flat: the second half's peak no more than a quarter (plus 32 MiB of caches
    // filling) above the first half's; and the load itself costs at most 128 MiB.
    let rss_peak = rss_second_half.max(rss_end);
    assert!(
        rss_peak <= rss_first_half + rss_first_half / 4 + 32 * 1024,
        "RSS grew from a peak of {rss_first_half} KiB in the first half to {rss_peak} under steady load"
    );
    assert!(
        rss_peak <= rss_start + 128 * 1024,
        "RSS grew from {rss_start} to {rss_peak} KiB under load"
    );
    daemon.kill();
}

/// How many sources `/api/sources` lists with `field` of their state set.
async fn sources_with(http: &reqwest::Client, base: &str, field: &str) -> usize {
    crate::api_sources(http, base)
        .await
        .iter()
        .filter(|s| !s["state"][field].is_null())
        .count()
}

/// Thousands of sources start on a few threads: their tasks do not each take a thread of
/// their own to read their state (once, that made 10,000 sources cost 627 MiB instead of 270).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_sources_start_on_a_few_threads() {
    let dir = tempdir();
    let port = free_port();
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nbase_url = \"http://feeds.test\"\n[storage]\npath = \"store\"\n"
    );
    // Disabled: never polled, but each has its task, which reads the source's state.
    for s in 0..3000 {
        text.push_str(&format!(
            "[[source]]\nname = \"s{s}\"\nurl = \"http://127.0.0.1:9/s{s}.xml\"\nenabled = false\n"
        ));
    }
    text.push_str("[[feed]]\nname = \"all\"\n");
    std::fs::write(dir.path().join("feedmux.toml"), text).unwrap();
    let mut daemon = RealDaemon::start(dir.path(), port);
    daemon
        .wait_ready(&reqwest::Client::new(), Duration::from_secs(60))
        .await;
    // Idle blocking threads live 10 s: any started for the tasks are still there.
    let threads = daemon.threads();
    assert!(
        (1..64).contains(&threads),
        "{threads} threads for 3,000 sources"
    );
}
