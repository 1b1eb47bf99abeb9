//! The benchmark suite of BENCHMARKS.md: each row prints feedmux's figure, the ceiling it is
//! held against (measured in the same run, because shared machines drift), and their ratio.
//!
//! ```text
//! cargo bench --bench suite                      # every row, 1,000,000 stored items
//! FEEDMUX_SUITE_ITEMS=200000 cargo bench --bench suite
//! FEEDMUX_SUITE_ROWS=serve,poll cargo bench --bench suite   (poll304 or poll200: one sweep)
//! FEEDMUX_SUITE_SWEEPS=50 measures the poll rows over 50 sweeps, not 3 (for profiling)
//! FEEDMUX_SUITE_KEEP=1 keeps the stores and their configs afterwards (for profiling)
//! FEEDMUX_SUITE_DAEMON_LOG=FILE appends the daemons' stderr to FILE
//! ```
//!
//! Rows: `ingest`, `serve` (plain and gzip), `poll` (304 and 200 sweeps), `scale`, `memory`,
//! `startup`. The load tool is wrk (Debian package `wrk`); the upstream server and the data
//! generator are below. Everything listens on 127.0.0.1 only.

use std::collections::HashSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use feedmux::config::Config;
use feedmux::fetch::{Fetched, Validators};
use feedmux::filter::FeedFilter;
use feedmux::model::SourceState;
use feedmux::refresh::{ingest, SourceCtx};
use feedmux::store::Store;
use url::Url;

/// Items per generated feed (the issue's 5,000-item RSS 2.0 feed).
/// The allocator the `feedmux` binary uses (jemalloc), so the figures are the product's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const FEED_ITEMS: usize = 5_000;
/// Threads filling the big store, and the seed its feeds are generated from.
const FILL_THREADS: usize = 2;
const FILL_SEED: u64 = 0x1234_5678_9ABC_DEF1;
/// Sources polled by the daemon in the memory row.
const LIVE_SOURCES: usize = 1_000;
/// Sources of the poll sweep.
const SWEEP_SOURCES: usize = 10_000;
/// Concurrency of the poll sweep, for feedmux and for the bare loop alike.
const SWEEP_CONCURRENCY: usize = 64;
/// wrk's run length per measurement.
const WRK_SECONDS: u64 = 8;

fn main() {
    let rows: HashSet<String> = std::env::var("FEEDMUX_SUITE_ROWS")
        .unwrap_or_else(|_| "ingest,serve,poll,scale,memory,startup".into())
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    let stored: usize = std::env::var("FEEDMUX_SUITE_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let temp = tempfile::tempdir().expect("a temporary directory");
    let work = temp.path();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let upstream = runtime.block_on(Upstream::start());
    let mut table = Table::default();
    println!(
        "suite: {stored} stored items, upstream on {}",
        upstream.addr
    );

    if rows.contains("ingest")
        || rows.contains("scale")
        || rows.contains("memory")
        || rows.contains("startup")
    {
        let big = BigStore::create(work, &upstream, stored);
        if rows.contains("ingest") {
            ingest_row(&big, &mut table);
        }
        big.fill_to(stored);
        if rows.contains("scale") {
            scale_row(work, &big, &mut table);
        }
        if rows.contains("memory") {
            memory_row(&big, &mut table);
        }
        if rows.contains("startup") {
            startup_row(&big, &mut table);
        }
    }
    if rows.contains("serve") {
        serve_rows(work, &runtime, &mut table);
    }
    let polls: Vec<&str> = ["304", "200"]
        .into_iter()
        .filter(|k| rows.contains("poll") || rows.contains(&format!("poll{k}")))
        .collect();
    if !polls.is_empty() {
        poll_rows(work, &runtime, &upstream, &polls, &mut table);
    }
    table.print();
    // FEEDMUX_SUITE_KEEP=1 keeps the stores and configs, for profiling afterwards.
    if std::env::var_os("FEEDMUX_SUITE_KEEP").is_some() {
        println!("kept {}", temp.keep().display());
    }
}

// ---------------------------------------------------------------------------------------------
// Results

#[derive(Default)]
struct Table {
    rows: Vec<[String; 5]>,
}

impl Table {
    fn add(&mut self, name: &str, feedmux: String, ceiling: String, ratio: String, target: &str) {
        println!("  {name}: {feedmux} | ceiling {ceiling} | ratio {ratio} (target {target})");
        self.rows
            .push([name.into(), feedmux, ceiling, ratio, target.into()]);
    }

    fn print(&self) {
        println!("\n| benchmark | feedmux | ceiling (same run) | ratio | target |");
        println!("| --- | --- | --- | --- | --- |");
        for r in &self.rows {
            println!("| {} | {} | {} | {} | {} |", r[0], r[1], r[2], r[3], r[4]);
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

// ---------------------------------------------------------------------------------------------
// Data generator: feeds of news-like items, half Chinese, with a skewed vocabulary so that
// some words are common and most are rare, as in real news.

struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// An index in 0..n, small ones far more often (roughly Zipf-like).
    fn skewed(&mut self, n: usize) -> usize {
        let u = (self.next() % 1_000_000) as f64 / 1_000_000.0;
        ((n as f64) * u.powi(3)) as usize
    }

    fn word(&mut self) -> String {
        const SYLLABLES: [&str; 24] = [
            "ra", "lo", "mi", "tek", "an", "vor", "el", "sun", "qua", "dex", "ni", "po", "ar",
            "ly", "zen", "cor", "ta", "vi", "mo", "ex", "in", "ul", "sa", "ke",
        ];
        let i = self.skewed(30_000);
        let mut w = String::new();
        let mut k = i + 1;
        while k > 0 {
            w.push_str(SYLLABLES[k % SYLLABLES.len()]);
            k /= SYLLABLES.len();
        }
        w
    }

    fn hanzi(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from_u32(0x4E00 + self.skewed(4_000) as u32).unwrap_or('中'))
            .collect()
    }

    fn english(&mut self, words: usize) -> String {
        (0..words)
            .map(|_| self.word())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// One RSS item of about 2 KB.
    fn item(&mut self, source: &str, i: usize, at: DateTime<Utc>) -> String {
        let chinese = i % 2 == 1;
        let title = if chinese {
            format!("{}发布{}大模型", self.hanzi(6), self.hanzi(4))
        } else {
            format!("AI lab {} releases {}", self.english(3), self.english(3))
        };
        let mut body = String::new();
        while body.len() < 1_800 {
            let para = if chinese {
                self.hanzi(60)
            } else {
                self.english(40)
            };
            body.push_str("&lt;p&gt;");
            body.push_str(&para);
            body.push_str("&lt;/p&gt;");
        }
        format!(
            "<item><title>{title}</title><link>https://{source}.example/p/{i}</link><guid>{source}-{i}</guid><pubDate>{}</pubDate><description>{body}</description></item>\n",
            at.to_rfc2822()
        )
    }

    /// A feed of `n` items from `source`, one a minute back from `newest`.
    fn feed(&mut self, source: &str, n: usize, newest: DateTime<Utc>) -> Vec<u8> {
        let mut out = String::from(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<rss version=\"2.0\"><channel><title>Generated</title><link>https://gen.example/</link><description>d</description>\n",
        );
        for i in 0..n {
            let at = newest - chrono::Duration::minutes(i as i64);
            out.push_str(&self.item(source, i, at));
        }
        out.push_str("</channel></rss>\n");
        out.into_bytes()
    }
}

fn fetched(body: Vec<u8>, name: &str) -> Fetched {
    let url = Url::parse(&format!("https://{name}.example/feed.xml")).expect("a URL");
    Fetched {
        body: Bytes::from(body),
        content_type: Some("application/rss+xml; charset=utf-8".into()),
        requested_url: url.clone(),
        final_url: url,
        validators: Validators::default(),
        hints: Default::default(),
    }
}

// ---------------------------------------------------------------------------------------------
// The upstream server: `/f/{n}` answers 304 to a matching If-None-Match and 200 with a 20 KB
// feed otherwise; `/f200/{n}` always answers 200.

struct Upstream {
    addr: SocketAddr,
}

/// Each source's feed, generated once: ten different items per source.
#[derive(Clone)]
struct UpstreamBody(Arc<Vec<Bytes>>);

impl Upstream {
    async fn start() -> Upstream {
        let mut gen = Gen(0x5EED_F00D);
        let now = Utc::now();
        let bodies = (0..SWEEP_SOURCES)
            .map(|n| Bytes::from(gen.feed(&format!("src-{n}"), 10, now)))
            .collect();
        let state = UpstreamBody(Arc::new(bodies));
        let app = Router::new()
            .route("/f/{n}", get(conditional))
            .route("/f200/{n}", get(always))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the upstream");
        let addr = listener.local_addr().expect("an address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Upstream { addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

const UPSTREAM_ETAG: &str = "\"v1\"";

async fn conditional(
    State(body): State<UpstreamBody>,
    UrlPath(n): UrlPath<usize>,
    headers: HeaderMap,
) -> Response {
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == UPSTREAM_ETAG.as_bytes())
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, UPSTREAM_ETAG)]).into_response();
    }
    always(State(body), UrlPath(n)).await
}

async fn always(State(bodies): State<UpstreamBody>, UrlPath(n): UrlPath<usize>) -> Response {
    let Some(body) = bodies.0.get(n) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    (
        [
            (header::CONTENT_TYPE, "application/rss+xml"),
            (header::ETAG, UPSTREAM_ETAG),
        ],
        body.clone(),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// The big store: generated sources ingested through the real pipeline, and a config that
// the daemon runs with (those sources disabled, LIVE_SOURCES polling the upstream).

struct BigStore {
    config_path: PathBuf,
    config: Config,
    filters: Vec<FeedFilter>,
    feeds: std::cell::Cell<usize>,
    gen: std::cell::RefCell<Gen>,
}

impl BigStore {
    fn create(work: &Path, upstream: &Upstream, stored: usize) -> BigStore {
        let dir = work.join("big");
        std::fs::create_dir_all(&dir).expect("a directory");
        let generated = stored.div_ceil(FEED_ITEMS);
        let mut text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[storage]\npath = {:?}\n\n[poll]\nconcurrency = 16\nper_host_concurrency = 16\nper_host_interval = \"0s\"\n\n[log]\nlevel = \"warn\"\n\n",
            dir.join("store")
        );
        // Room for the probes of the ingest and scale rows.
        for k in 0..generated + 16 {
            text.push_str(&format!(
                "[[source]]\nname = \"gen-{k}\"\nurl = \"https://gen-{k}.example/feed.xml\"\nenabled = false\n\n"
            ));
        }
        for j in 0..LIVE_SOURCES {
            text.push_str(&format!(
                "[[source]]\nname = \"live-{j}\"\nurl = \"{}\"\nschedule = \"*/20 * * * * *\"\n\n",
                upstream.url(&format!("/f/{j}"))
            ));
        }
        text.push_str("[[feed]]\nname = \"ai\"\ninclude = [\"AI\", \"大模型\"]\nlimit = 50\n");
        let config_path = dir.join("feedmux.toml");
        std::fs::write(&config_path, text).expect("write the config");
        let config = feedmux::config::load(&config_path).expect("a valid config");
        let filters = config.feeds.iter().map(FeedFilter::new).collect();
        // Record the feed rules the index is built with, so the daemon does not rebuild it.
        let store = Store::open(&config.storage.path).expect("open the store");
        feedmux::daemon::sync_feed_indexes(&store, &config).expect("index the feeds");
        store.flush().expect("flush");
        drop(store);
        BigStore {
            config_path,
            config,
            filters,
            feeds: std::cell::Cell::new(0),
            gen: std::cell::RefCell::new(Gen(0x1234_5678_9ABC_DEF1)),
        }
    }

    fn store(&self) -> Store {
        Store::open(&self.config.storage.path).expect("open the store")
    }

    /// Ingests generated feeds until `target` items are stored (one year back from now), on
    /// two threads: parsing and sanitising run side by side, the store's writes one at a time
    /// (as the daemon's polls of different sources do).
    fn fill_to(&self, target: usize) {
        let store = self.store();
        let t = Instant::now();
        let wanted = target.div_ceil(FEED_ITEMS).max(self.feeds.get());
        let next = std::sync::atomic::AtomicUsize::new(self.feeds.get());
        let (config, filters) = (&self.config, &self.filters);
        std::thread::scope(|scope| {
            for _ in 0..FILL_THREADS {
                scope.spawn(|| loop {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if k >= wanted {
                        break;
                    }
                    let name = format!("gen-{k}");
                    let newest = Utc::now() - chrono::Duration::hours(40 * k as i64 % (365 * 24));
                    // Each feed its own generator, so the data do not depend on thread timing.
                    let seed = FILL_SEED ^ (k as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    let body = Gen(seed.max(1)).feed(&name, FEED_ITEMS, newest);
                    ingest_bytes(&store, config, filters, &name, body);
                    // As the daemon does after a poll that stored something.
                    store.checkpoint_if_due().expect("checkpoint");
                });
            }
        });
        self.feeds.set(wanted);
        // As the daemon's pruning pass does: the items past dedup.index_age, never indexed
        // by these polls, are recorded as such, so that a start does not look for them.
        let index_from = config.dedup.index_from(Utc::now()).expect("an index age");
        store
            .drop_text_index_before(index_from)
            .expect("drop the aged text index");
        store.flush().expect("flush");
        println!(
            "  store filled to {} items in {:.0} s ({} MB on disk)",
            self.feeds.get() * FEED_ITEMS,
            t.elapsed().as_secs_f64(),
            store.size_on_disk() / 1_000_000
        );
    }
}

fn ingest_bytes(
    store: &Store,
    config: &Config,
    filters: &[FeedFilter],
    name: &str,
    body: Vec<u8>,
) -> Duration {
    let source = config
        .sources
        .iter()
        .find(|s| s.name == name)
        .expect("the source is configured");
    let ctx = SourceCtx::new(source, config);
    let selected: Vec<FeedFilter> = filters
        .iter()
        .filter(|f| f.selects_source(name))
        .cloned()
        .collect();
    let fetched = fetched(body, name);
    let t = Instant::now();
    let report = ingest(
        store,
        &selected,
        &ctx,
        &fetched,
        SourceState::default(),
        Utc::now(),
    )
    .expect("ingest");
    let took = t.elapsed();
    assert_eq!(report.new_items, FEED_ITEMS, "{name}: every item is new");
    took
}

// ---------------------------------------------------------------------------------------------
// ingest: a new 5,000-item feed into a store already holding 100,000 items, against feed-rs
// parsing the same bytes.

fn ingest_row(big: &BigStore, table: &mut Table) {
    big.fill_to(100_000);
    let store = big.store();
    let mut ours = Vec::new();
    let mut parse = Vec::new();
    for run in 0..3 {
        let name = format!("gen-{}", big.feeds.get());
        let body = big.gen.borrow_mut().feed(
            &name,
            FEED_ITEMS,
            Utc::now() - chrono::Duration::minutes(run),
        );
        for _ in 0..3 {
            let t = Instant::now();
            let parsed = feed_rs::parser::parse(body.as_slice()).expect("feed-rs parses it");
            assert_eq!(parsed.entries.len(), FEED_ITEMS);
            parse.push(t.elapsed());
        }
        ours.push(ingest_bytes(&store, &big.config, &big.filters, &name, body));
        big.feeds.set(big.feeds.get() + 1);
    }
    let (ours, parse) = (median(ours), median(parse));
    let rate = |d: Duration| FEED_ITEMS as f64 / d.as_secs_f64();
    table.add(
        "ingest (5,000 items into 100,000)",
        format!("{:.0} items/s ({})", rate(ours), ms(ours)),
        format!("feed-rs alone {:.0} items/s ({})", rate(parse), ms(parse)),
        format!("{:.2}", parse.as_secs_f64() / ours.as_secs_f64()),
        "≥ 0.7",
    );
}

// ---------------------------------------------------------------------------------------------
// scale: the same ingest with the big store full against a store of 10,000 items.

fn scale_row(work: &Path, big: &BigStore, table: &mut Table) {
    let small_dir = work.join("small");
    std::fs::create_dir_all(&small_dir).expect("a directory");
    let small_store = Store::open(&small_dir.join("store")).expect("a store");
    let gen_feed = |name: &str, minutes: i64| {
        big.gen.borrow_mut().feed(
            name,
            FEED_ITEMS,
            Utc::now() - chrono::Duration::minutes(minutes),
        )
    };
    for k in 0..2 {
        let name = format!("gen-{}", big.feeds.get() + k);
        ingest_bytes(
            &small_store,
            &big.config,
            &big.filters,
            &name,
            gen_feed(&name, 0),
        );
    }
    let store = big.store();
    let (mut small, mut large) = (Vec::new(), Vec::new());
    for run in 0..3 {
        let name = format!("gen-{}", big.feeds.get() + 2 + run);
        let body = gen_feed(&name, run as i64);
        small.push(ingest_bytes(
            &small_store,
            &big.config,
            &big.filters,
            &name,
            body.clone(),
        ));
        large.push(ingest_bytes(&store, &big.config, &big.filters, &name, body));
    }
    big.feeds.set(big.feeds.get() + 5);
    let (small, large) = (median(small), median(large));
    let rate = |d: Duration| FEED_ITEMS as f64 / d.as_secs_f64();
    table.add(
        "store scale (ingest with the big store vs 10,000 items)",
        format!("{:.0} items/s", rate(large)),
        format!("{:.0} items/s", rate(small)),
        format!("{:.2}", small.as_secs_f64() / large.as_secs_f64()),
        "≥ 0.8",
    );
}

// ---------------------------------------------------------------------------------------------
// The real binary.

struct Daemon {
    child: Child,
    addr: SocketAddr,
}

/// Where the daemons' stderr goes: FEEDMUX_SUITE_DAEMON_LOG names a file to append it to (for
/// diagnosis, e.g. with `_RJEM_MALLOC_CONF=stats_print:true`), else nowhere.
fn daemon_log() -> Stdio {
    let Some(path) = std::env::var_os("FEEDMUX_SUITE_DAEMON_LOG") else {
        return Stdio::null();
    };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_or_else(|_| Stdio::null(), Stdio::from)
}

impl Daemon {
    /// Starts `feedmux run` with `config` (whose listen address is rewritten to a free port).
    fn start(config: &Path) -> Daemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let text = std::fs::read_to_string(config).expect("read the config");
        let text = text.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        );
        let run_config = config.with_extension("run.toml");
        std::fs::write(&run_config, text).expect("write the config");
        let child = Command::new(env!("CARGO_BIN_EXE_feedmux"))
            .args(["run", "--config"])
            .arg(&run_config)
            .current_dir(config.parent().expect("a directory"))
            .stdout(Stdio::null())
            .stderr(daemon_log())
            .spawn()
            .expect("start feedmux");
        Daemon {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Waits for `path` to answer 200; returns how long since `since`.
    fn wait_for(&self, path: &str, since: Instant) -> Duration {
        loop {
            if http_status(self.addr, path) == Some(200) {
                return since.elapsed();
            }
            assert!(
                since.elapsed() < Duration::from_secs(120),
                "{path} never answered 200"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status code of a plain GET, by hand (no client library between us and the socket).
fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// wrk's requests per second and non-2xx/3xx count.
fn wrk(url: &str, headers: &[&str]) -> (f64, u64) {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t2", "-c64", &format!("-d{WRK_SECONDS}s"), "--latency"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(url)
        .output()
        .expect("wrk runs (apt-get install -y wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let errors = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (rps, errors)
}

// ---------------------------------------------------------------------------------------------
// memory: the daemon holding the big store and LIVE_SOURCES sources, serving and polling.

fn memory_row(big: &BigStore, table: &mut Table) {
    let daemon = Daemon::start(&big.config_path);
    daemon.wait_for("/healthz", Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let (rps, errors) = wrk(&daemon.url("/feeds/ai.atom"), &[]);
    // A second round of serving while the 20-second schedules poll again.
    let (rps2, errors2) = wrk(&daemon.url("/feeds/ai.atom"), &[]);
    let peak = daemon.peak_rss_kib();
    daemon.stop();
    table.add(
        &format!(
            "memory ({} items, {LIVE_SOURCES} sources, serving and polling)",
            big.feeds.get() * FEED_ITEMS
        ),
        format!(
            "peak RSS {:.0} MiB ({:.0} and {:.0} req/s, {} errors)",
            peak as f64 / 1024.0,
            rps,
            rps2,
            errors + errors2
        ),
        "—".into(),
        "—".into(),
        "≤ 150 MiB",
    );
}

// ---------------------------------------------------------------------------------------------
// start-up: exec to /readyz 200 with the big store.

fn startup_row(big: &BigStore, table: &mut Table) {
    let mut ready = Vec::new();
    let mut healthy = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let daemon = Daemon::start(&big.config_path);
        healthy.push(daemon.wait_for("/healthz", t));
        ready.push(daemon.wait_for("/readyz", t));
        daemon.stop();
    }
    table.add(
        &format!("start-up ({} items)", big.feeds.get() * FEED_ITEMS),
        format!(
            "{} to /readyz 200 ({} to /healthz)",
            ms(median(ready)),
            ms(median(healthy))
        ),
        "—".into(),
        "—".into(),
        "≤ 0.5 s",
    );
}

// ---------------------------------------------------------------------------------------------
// serve: a cached /feeds/ai.atom of about 300 KB against a minimal axum handler returning the
// same bytes, with the same load tool, plain and gzip.

fn serve_rows(work: &Path, runtime: &tokio::runtime::Runtime, table: &mut Table) {
    let dir = work.join("serve");
    std::fs::create_dir_all(&dir).expect("a directory");
    let mut gen = Gen(0xFEED_5EED);
    let mut feed = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<rss version=\"2.0\"><channel><title>Long</title><link>https://long.example/</link><description>d</description>\n",
    );
    for i in 0..60 {
        let mut item = gen.item("long", i, Utc::now() - chrono::Duration::minutes(i as i64));
        // About 5 KB each: 60 of them make a feed of about 300 KB.
        let extra = format!("&lt;p&gt;AI {}&lt;/p&gt;", gen.english(400));
        item = item.replace("</description>", &format!("{extra}</description>"));
        feed.push_str(&item);
    }
    feed.push_str("</channel></rss>\n");
    std::fs::write(dir.join("long.xml"), feed).expect("write the feed");
    let config = dir.join("feedmux.toml");
    std::fs::write(
        &config,
        format!("[server]\nlisten = \"127.0.0.1:0\"\n\n[storage]\npath = {:?}\n\n[log]\nlevel = \"warn\"\n\n[[source]]\nname = \"long\"\nurl = \"file:long.xml\"\n\n[[feed]]\nname = \"ai\"\nlimit = 60\n", dir.join("store")),
    )
    .expect("write the config");
    let polled = Command::new(env!("CARGO_BIN_EXE_feedmux"))
        .args(["poll", "--config"])
        .arg(&config)
        .current_dir(&dir)
        .output()
        .expect("feedmux poll");
    assert!(
        polled.status.success(),
        "{}",
        String::from_utf8_lossy(&polled.stderr)
    );

    let daemon = Daemon::start(&config);
    daemon.wait_for("/readyz", Instant::now());
    let client = raw_client();
    let plain = runtime.block_on(fetch(&client, &daemon.url("/feeds/ai.atom"), None));
    let gzip = runtime.block_on(fetch(&client, &daemon.url("/feeds/ai.atom"), Some("gzip")));
    println!(
        "  serving /feeds/ai.atom: {} KB ({} KB gzip)",
        plain.len() / 1024,
        gzip.len() / 1024
    );
    let baseline = runtime.block_on(minimal_server(plain, gzip));
    let base = |path: &str| format!("http://{baseline}{path}");
    let gzip_header = "Accept-Encoding: gzip";
    let (ours, ours_err) = wrk(&daemon.url("/feeds/ai.atom"), &[]);
    let (theirs, theirs_err) = wrk(&base("/plain"), &[]);
    let (ours_gz, ours_gz_err) = wrk(&daemon.url("/feeds/ai.atom"), &[gzip_header]);
    let (theirs_gz, theirs_gz_err) = wrk(&base("/gzip"), &[gzip_header]);
    let (health, _) = wrk(&daemon.url("/healthz"), &[]);
    daemon.stop();
    let errors = ours_err + theirs_err + ours_gz_err + theirs_gz_err;
    table.add(
        "serve /feeds/ai.atom, 64 connections",
        format!("{ours:.0} req/s (/healthz {health:.0} req/s)"),
        format!("minimal axum handler {theirs:.0} req/s"),
        format!("{:.2}", ours / theirs.max(1.0)),
        "≥ 0.9",
    );
    table.add(
        "serve gzip",
        format!("{ours_gz:.0} req/s"),
        format!("minimal handler, pre-compressed {theirs_gz:.0} req/s"),
        format!("{:.2}", ours_gz / theirs_gz.max(1.0)),
        "≥ 0.9",
    );
    if errors > 0 {
        println!("  WARNING: {errors} non-2xx/3xx responses during the serve rows");
    }
}

/// A client that does not decompress, so compressed bytes arrive as sent.
fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_gzip()
        .no_brotli()
        .no_deflate()
        .build()
        .expect("a client")
}

/// The body of `url` in `encoding`. A daemon that just started serves its feeds uncompressed
/// until it has compressed them (a fraction of a second): asked again until it is compressed.
async fn fetch(client: &reqwest::Client, url: &str, encoding: Option<&str>) -> Bytes {
    let since = Instant::now();
    loop {
        let mut request = client.get(url);
        if let Some(e) = encoding {
            request = request.header("Accept-Encoding", e);
        }
        let response = request.send().await.expect("a response");
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        let coding = response
            .headers()
            .get("content-encoding")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if coding.as_deref() == encoding {
            return response.bytes().await.expect("a body");
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "{url} is not served {encoding:?}-compressed (got {coding:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The ceiling: axum returning fixed bytes, nothing else.
async fn minimal_server(plain: Bytes, gzip: Bytes) -> SocketAddr {
    let app = Router::new()
        .route(
            "/plain",
            get(move || {
                let body = plain.clone();
                async move { ([(header::CONTENT_TYPE, "application/atom+xml")], body) }
            }),
        )
        .route(
            "/gzip",
            get(move || {
                let body = gzip.clone();
                async move {
                    (
                        [
                            (header::CONTENT_TYPE, "application/atom+xml"),
                            (header::CONTENT_ENCODING, "gzip"),
                        ],
                        body,
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the minimal server");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// poll: SWEEP_SOURCES sources on the local upstream, answering 304 (then 200 with 20 KB
// bodies), against a bare reqwest loop with the same concurrency against the same server.

fn poll_rows(
    work: &Path,
    runtime: &tokio::runtime::Runtime,
    upstream: &Upstream,
    kinds: &[&str],
    table: &mut Table,
) {
    // FEEDMUX_SUITE_SWEEPS: how many sweeps the figure is the median of (more, for profiling).
    let sweeps: usize = std::env::var("FEEDMUX_SUITE_SWEEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for (kind, path, label, target) in [
        ("304", "/f/", "poll sweep, 304", "≥ 0.8"),
        ("200", "/f200/", "poll sweep, 200 (20 KB)", "≥ 0.8"),
    ] {
        if !kinds.contains(&kind) {
            continue;
        }
        // Both rows use one store: the feeds behind `/f/` and `/f200/` are the same bytes, so
        // after the 304 row the 200 row's first sweep finds every item stored already (it
        // parses each feed once, for its new URL) instead of storing 100,000 items again.
        let dir = work.join("poll");
        std::fs::create_dir_all(&dir).expect("a directory");
        let mut text = format!(
            "[storage]\npath = {:?}\n\n[poll]\nconcurrency = {SWEEP_CONCURRENCY}\nper_host_concurrency = {SWEEP_CONCURRENCY}\nper_host_interval = \"0s\"\n\n[log]\nlevel = \"error\"\n\n",
            dir.join("store")
        );
        let urls: Vec<String> = (0..SWEEP_SOURCES)
            .map(|j| upstream.url(&format!("{path}{j}")))
            .collect();
        for (j, url) in urls.iter().enumerate() {
            text.push_str(&format!("[[source]]\nname = \"s{j}\"\nurl = \"{url}\"\n\n"));
        }
        text.push_str("[[feed]]\nname = \"all\"\n");
        let config_path = dir.join(format!("feedmux-{kind}.toml"));
        std::fs::write(&config_path, text).expect("write the config");
        let config = feedmux::config::load(&config_path).expect("a valid config");
        let check = |outcomes: Vec<feedmux::daemon::PollOutcome>| {
            let failed = outcomes
                .iter()
                .filter(|o| !matches!(&o.polled, feedmux::daemon::Polled::Done(Ok(_))))
                .count();
            assert_eq!(failed, 0, "every poll of the sweep succeeds");
        };
        // `feedmux poll`: opens the store (sled replays what the last sweep wrote), sweeps.
        let cli_sweep = |config: &Config| {
            let t = Instant::now();
            check(
                runtime
                    .block_on(feedmux::daemon::poll_once(config, &[], true))
                    .expect("a sweep"),
            );
            t.elapsed()
        };
        // The first sweep stores every source's items and validators. The second is the CLI's
        // (shown beside the figure). Then, after a warm-up of each, sweeps with the store kept
        // open (as the daemon keeps it) alternate with the bare loop's; each figure is the
        // median of its sweeps.
        let first = cli_sweep(&config);
        let cli = cli_sweep(&config);
        eprintln!(
            "  {label}: first sweep {}, `feedmux poll` {}",
            ms(first),
            ms(cli)
        );
        let sweeper = feedmux::daemon::Sweeper::open(&config).expect("open the store");
        let open_sweep = || {
            let t = Instant::now();
            check(runtime.block_on(sweeper.sweep(&[], true)).expect("a sweep"));
            t.elapsed()
        };
        let client = reqwest::Client::new();
        open_sweep();
        runtime.block_on(bare_sweep(&client, &urls));
        // Alternated, so that both figures see the same moments of a shared machine.
        let (mut ours, mut bare) = (Vec::new(), Vec::new());
        for _ in 0..sweeps {
            ours.push(open_sweep());
            bare.push(runtime.block_on(bare_sweep(&client, &urls)));
        }
        let (ours, bare) = (median(ours), median(bare));
        drop(sweeper);
        table.add(
            label,
            format!(
                "{SWEEP_SOURCES} sources in {} ({:.0}/s; first sweep {}; `feedmux poll`, which opens the store, {})",
                ms(ours),
                SWEEP_SOURCES as f64 / ours.as_secs_f64(),
                ms(first),
                ms(cli)
            ),
            format!(
                "bare reqwest loop {} ({:.0}/s)",
                ms(bare),
                SWEEP_SOURCES as f64 / bare.as_secs_f64()
            ),
            format!("{:.2}", bare.as_secs_f64() / ours.as_secs_f64()),
            target,
        );
    }
}

/// GETs every URL with If-None-Match, SWEEP_CONCURRENCY at a time, reading each body.
async fn bare_sweep(client: &reqwest::Client, urls: &[String]) -> Duration {
    let limit = Arc::new(tokio::sync::Semaphore::new(SWEEP_CONCURRENCY));
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for url in urls {
        let permit = limit.clone().acquire_owned().await.expect("a permit");
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            let response = client
                .get(&url)
                .header("If-None-Match", UPSTREAM_ETAG)
                .send()
                .await
                .expect("a response");
            let status = response.status().as_u16();
            let _ = response.bytes().await.expect("a body");
            drop(permit);
            status
        });
    }
    while let Some(status) = tasks.join_next().await {
        let status = status.expect("the task");
        assert!(status == 200 || status == 304, "status {status}");
    }
    t.elapsed()
}
