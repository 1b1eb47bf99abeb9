//! Several instances on one PostgreSQL (issue 20): a sweep of 10,000 sources by 1, 2 and 3
//! `feedmux run` processes sharing one database, against one instance on sled, measured in
//! the same run.
//!
//! ```text
//! cargo bench --bench instances                              # 10,000 sources (slow, see below)
//! FEEDMUX_SWEEP_SOURCES=2000 cargo bench --bench instances   # a quicker run (~9 min here)
//! FEEDMUX_SWEEP_RUNS=sled,1,3 cargo bench --bench instances  # some rows
//! ```
//!
//! `cargo bench` builds the `feedmux` binary with the bench (release) profile: the processes
//! run `target/release/feedmux`. PostgreSQL comes from a private cluster of this process (the
//! tests' `pg_cluster`: `initdb` into a temporary directory, 127.0.0.1 at a free port, `fsync`
//! off), each row on a fresh database.
//!
//! The upstream (axum on 127.0.0.1, in this process) serves each source a small RSS feed of its
//! own (3 items, distinct words) at `/f/{n}` and counts the requests of each path. Every
//! instance has the same config: the sources on `schedule = "0 0 0 1 1 *"` (a source never
//! polled is due at once, then not before next January), `[poll] per_host_interval = "0s"` and
//! `per_host_concurrency` equal to `concurrency` (every source is on 127.0.0.1: the per-host
//! limits would otherwise be the figure), dedup as by default (words only, no model), one
//! output feed of every item.
//!
//! A row's time runs from starting the processes until the upstream has served every source
//! once ("polled"); "stored" is when the instances' `/metrics` count a finished poll of every
//! source. Then the row waits 2 s more and counts the requests: polls beyond one per source
//! are duplicates (the claims in `poll_claims` should make them 0). Peak RSS is each
//! process's `VmHWM` from /proc just before it is stopped.
//!
//! On 2 shared cores (BENCHMARKS.md) one instance on PostgreSQL polled about 20 sources a
//! second, so the 10,000-source default takes far over the 5 minutes aimed at: half an hour
//! and more for the three PostgreSQL rows.

#[path = "../tests/e2e/support/pg_cluster.rs"]
#[allow(dead_code)]
mod pg_cluster;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use pg_cluster::PgCluster;

/// Sources of the full run (FEEDMUX_SWEEP_SOURCES overrides).
const SOURCES: usize = 10_000;
/// Items in each source's feed.
const ITEMS: usize = 3;
/// `[poll] concurrency` of every instance (the default).
const CONCURRENCY: usize = 8;
/// Never due again during a run once polled: next January the 1st at midnight.
const SCHEDULE: &str = "0 0 0 1 1 *";
/// How long a row may take before it is given up.
const LIMIT: Duration = Duration::from_secs(900);
/// How long a row waits after the last first poll, for duplicates.
const SETTLE: Duration = Duration::from_secs(2);

/// The requests the upstream has answered, per source, since its start.
struct Counts {
    start: Instant,
    per_source: Vec<AtomicU32>,
    /// Sources requested at least once.
    distinct: AtomicUsize,
    total: AtomicUsize,
    /// Nanoseconds from `start` to the first request of any source, and of the last source to
    /// be requested first.
    first: AtomicU64,
    last_first: AtomicU64,
}

#[derive(Clone)]
struct Upstream {
    counts: Arc<Counts>,
    words: Arc<Vec<String>>,
    published: Arc<String>,
}

impl Upstream {
    /// A fresh upstream (counts at zero) on a port of its own; its address.
    async fn start(sources: usize, words: Arc<Vec<String>>) -> (Upstream, String) {
        let counts = Arc::new(Counts {
            start: Instant::now(),
            per_source: (0..sources).map(|_| AtomicU32::new(0)).collect(),
            distinct: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
            first: AtomicU64::new(u64::MAX),
            last_first: AtomicU64::new(0),
        });
        let published = chrono::Utc::now() - chrono::Duration::hours(1);
        let upstream = Upstream {
            counts,
            words,
            published: Arc::new(published.to_rfc2822()),
        };
        let app = Router::new()
            .route("/f/{n}", get(feed))
            .with_state(upstream.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the upstream");
        let addr = listener.local_addr().expect("an address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (upstream, format!("http://{addr}"))
    }

    /// The feed of source `n`: its own 3 items, titles of words picked by `n`.
    fn body(&self, n: usize) -> String {
        let mut rng = n as u64 * 0x9E37_79B9_7F4A_7C15 + 1;
        let mut word = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            self.words[(rng % self.words.len() as u64) as usize].as_str()
        };
        let mut xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\"><channel><title>Source {n}</title><link>http://example.com/{n}/</link><description>Source {n}</description>\n"
        );
        for i in 0..ITEMS {
            let title: Vec<&str> = (0..7).map(|_| word()).collect();
            let summary: Vec<&str> = (0..20).map(|_| word()).collect();
            xml.push_str(&format!(
                "<item><title>{}</title><link>http://example.com/{n}/{i}</link><guid>s{n}-{i}</guid><pubDate>{}</pubDate><description>{}</description></item>\n",
                title.join(" "),
                self.published,
                summary.join(" ")
            ));
        }
        xml.push_str("</channel></rss>\n");
        xml
    }
}

async fn feed(State(up): State<Upstream>, UrlPath(n): UrlPath<usize>) -> Response {
    let Some(count) = up.counts.per_source.get(n) else {
        return axum::http::StatusCode::NOT_FOUND.into_response();
    };
    let c = &up.counts;
    let now = c.start.elapsed().as_nanos() as u64;
    c.total.fetch_add(1, Ordering::Relaxed);
    if count.fetch_add(1, Ordering::Relaxed) == 0 {
        c.first.fetch_min(now, Ordering::Relaxed);
        c.last_first.fetch_max(now, Ordering::Relaxed);
        c.distinct.fetch_add(1, Ordering::Relaxed);
    }
    (
        [(header::CONTENT_TYPE, "application/rss+xml; charset=utf-8")],
        up.body(n),
    )
        .into_response()
}

/// A vocabulary of 4,000 made-up words, so that no two items read alike (no stories merge).
fn vocabulary() -> Vec<String> {
    let onsets = [
        "b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
    ];
    let vowels = ["a", "e", "i", "o", "u"];
    let codas = ["", "n", "r", "s", "l", "k"];
    let mut syllables = Vec::new();
    for o in onsets {
        for v in vowels {
            for c in codas {
                syllables.push(format!("{o}{v}{c}"));
            }
        }
    }
    let mut words = Vec::new();
    'outer: for (i, a) in syllables.iter().enumerate() {
        for b in syllables.iter().skip(i % 7).step_by(7) {
            words.push(format!("{a}{b}"));
            if words.len() == 4_000 {
                break 'outer;
            }
        }
    }
    words
}

/// The `feedmux` binary `cargo bench` built beside this bench.
fn feedmux_binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_feedmux"));
    assert!(
        path.is_file(),
        "{} is missing: run `cargo bench --bench instances` (it builds the binary)",
        path.display()
    );
    path
}

/// The CPU time (user + system) process `pid` used so far, in seconds; 0 when it is gone.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The fields after the command's closing parenthesis: state is the 3rd field of the line,
    // utime and stime the 14th and 15th.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / per_second
}

/// The CPU time of the PostgreSQL backends serving database `name` (their command lines name
/// it), in seconds.
fn backends_cpu_secs(name: &str) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.starts_with("postgres: ") && c.split_whitespace().any(|w| w == name)
            })
        })
        .map(cpu_secs)
        .sum()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Which store a row's instances share.
#[derive(Clone)]
enum Engine {
    Sled,
    Postgres(String),
}

/// Writes `dir/feedmux.toml` for an instance on `port`: every source of `base`.
fn write_config(dir: &Path, port: u16, engine: &Engine, base: &str, sources: usize) -> PathBuf {
    let storage = match engine {
        Engine::Sled => format!("path = {:?}", dir.join("store").display().to_string()),
        Engine::Postgres(url) => format!("engine = \"postgres\"\nurl = {url:?}"),
    };
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[storage]\n{storage}\n\n\
         [poll]\nschedule = \"{SCHEDULE}\"\nconcurrency = {CONCURRENCY}\nper_host_concurrency = {CONCURRENCY}\nper_host_interval = \"0s\"\n\n\
         [log]\nlevel = \"warn\"\n\n"
    );
    for n in 0..sources {
        text.push_str(&format!(
            "[[source]]\nname = \"s{n}\"\nurl = \"{base}/f/{n}\"\n\n"
        ));
    }
    text.push_str("[[feed]]\nname = \"all\"\n");
    let path = dir.join("feedmux.toml");
    std::fs::write(&path, text).expect("write the config");
    path
}

struct Instance {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Instance {
    fn start(dir: &Path, engine: &Engine, base: &str, sources: usize) -> Instance {
        let port = free_port();
        let config = write_config(dir, port, engine, base, sources);
        let log = dir.join("feedmux.log");
        let out = std::fs::File::create(&log).expect("a log file");
        let child = Command::new(feedmux_binary())
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("a log file"))
            .stderr(out)
            .spawn()
            .expect("start feedmux run");
        Instance { child, port, log }
    }

    /// Peak RSS so far, in KiB (VmHWM).
    fn peak_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))?
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    }

    /// Polls finished by this instance, of any result, per `/metrics`; None when it does not
    /// answer.
    async fn polls(&self, http: &reqwest::Client) -> Option<u64> {
        let text = http
            .get(format!("http://127.0.0.1:{}/metrics", self.port))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        Some(
            text.lines()
                .filter(|l| l.starts_with("feedmux_polls_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum(),
        )
    }

    /// CPU time used so far (user + system), in seconds.
    fn cpu_secs(&self) -> f64 {
        cpu_secs(self.child.id())
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 10 s).
    fn stop(mut self) {
        // SAFETY: kill with a pid of our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

struct Row {
    name: String,
    instances: usize,
    /// Start of the processes to every source requested once.
    polled: Duration,
    /// Start to the first request.
    first: Duration,
    /// Start to every source's poll counted in /metrics (None: not seen within the limit).
    stored: Option<Duration>,
    requests: usize,
    duplicates: usize,
    peak_kib: Vec<u64>,
    /// CPU seconds of each instance, and of the database's backends (None: sled).
    cpu: Vec<f64>,
    backends_cpu: Option<f64>,
}

fn run_row(
    rt: &tokio::runtime::Runtime,
    name: &str,
    engine: Engine,
    instances: usize,
    sources: usize,
    words: &Arc<Vec<String>>,
    work: &Path,
) -> Row {
    let (upstream, base) = rt.block_on(Upstream::start(sources, words.clone()));
    let dirs: Vec<PathBuf> = (0..instances)
        .map(|i| {
            let dir = work.join(format!("{name}-{i}"));
            std::fs::create_dir_all(&dir).expect("a directory");
            dir
        })
        .collect();
    // The configs first, so the processes start within moments of each other.
    let started = Instant::now();
    let running: Vec<Instance> = dirs
        .iter()
        .map(|dir| Instance::start(dir, &engine, &base, sources))
        .collect();
    let counts = &upstream.counts;
    let offset = started.duration_since(counts.start);
    let since_start = |nanos: u64| Duration::from_nanos(nanos).saturating_sub(offset);
    let http = reqwest::Client::new();
    let mut stored = None;
    loop {
        let distinct = counts.distinct.load(Ordering::Relaxed);
        // /metrics lists every source: asked only once every source was requested.
        if stored.is_none() && distinct == sources {
            let polls: u64 = rt.block_on(async {
                let mut sum = 0;
                for i in &running {
                    sum += i.polls(&http).await.unwrap_or(0);
                }
                sum
            });
            if polls >= sources as u64 {
                stored = Some(started.elapsed());
            }
        }
        if distinct == sources && stored.is_some() {
            break;
        }
        if started.elapsed() > LIMIT {
            let logs: Vec<String> = running.iter().map(Instance::log_tail).collect();
            if distinct < sources {
                panic!(
                    "{name}: {distinct} of {sources} sources polled after {LIMIT:?}; the logs' ends:\n{}",
                    logs.join("\n-----\n")
                );
            }
            println!(
                "{name}: the instances' /metrics did not count {sources} polls within {LIMIT:?}"
            );
            break;
        }
        let pause = if distinct == sources { 100 } else { 10 };
        std::thread::sleep(Duration::from_millis(pause));
    }
    std::thread::sleep(SETTLE);
    let peak_kib: Vec<u64> = running.iter().map(Instance::peak_kib).collect();
    let cpu: Vec<f64> = running.iter().map(Instance::cpu_secs).collect();
    let backends_cpu = match &engine {
        Engine::Sled => None,
        Engine::Postgres(url) => url.rsplit('/').next().map(backends_cpu_secs),
    };
    for i in running {
        i.stop();
    }
    let requests = counts.total.load(Ordering::Relaxed);
    let duplicates: usize = counts
        .per_source
        .iter()
        .map(|c| (c.load(Ordering::Relaxed) as usize).saturating_sub(1))
        .sum();
    Row {
        name: name.to_owned(),
        instances,
        polled: since_start(counts.last_first.load(Ordering::Relaxed)),
        first: since_start(counts.first.load(Ordering::Relaxed)),
        stored,
        requests,
        duplicates,
        peak_kib,
        cpu,
        backends_cpu,
    }
}

fn machine_notes() {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    println!(
        "machine: {cores} cores, load average {} at the start",
        load.join(" ")
    );
}

fn main() {
    let sources: usize = std::env::var("FEEDMUX_SWEEP_SOURCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(SOURCES);
    let runs: Vec<String> = std::env::var("FEEDMUX_SWEEP_RUNS")
        .unwrap_or_else(|_| "sled,1,2,3".into())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    machine_notes();
    let binary = feedmux_binary();
    println!("binary: {}", binary.display());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let temp = tempfile::tempdir().expect("a temporary directory");
    let words = Arc::new(vocabulary());
    let cluster = runs.iter().any(|r| r != "sled").then(PgCluster::private);
    println!(
        "sweep: {sources} sources of {ITEMS} items each on one upstream (127.0.0.1), concurrency {CONCURRENCY} per instance, per_host_interval 0s\n"
    );
    let mut rows = Vec::new();
    for run in &runs {
        let row = if run == "sled" {
            run_row(&rt, "sled", Engine::Sled, 1, sources, &words, temp.path())
        } else {
            let n: usize = run.parse().unwrap_or_else(|_| {
                panic!("FEEDMUX_SWEEP_RUNS: {run:?} is neither sled nor a count")
            });
            let cluster = cluster.as_ref().expect("a cluster");
            let url = cluster.fresh_database(&format!("sweep{n}"));
            let name = format!("postgres-{n}");
            run_row(
                &rt,
                &name,
                Engine::Postgres(url),
                n,
                sources,
                &words,
                temp.path(),
            )
        };
        println!(
            "{}: polled in {:.2} s (first request at {:.2} s), stored {}, {} requests, {} duplicates, peak RSS {:?} KiB, CPU {:?} s, backends' CPU {:?} s",
            row.name,
            row.polled.as_secs_f64(),
            row.first.as_secs_f64(),
            row.stored
                .map_or("not seen".into(), |d| format!("{:.2} s", d.as_secs_f64())),
            row.requests,
            row.duplicates,
            row.peak_kib,
            row.cpu,
            row.backends_cpu
        );
        rows.push(row);
    }
    print_table(sources, &rows);
}

fn print_table(sources: usize, rows: &[Row]) {
    let one = rows
        .iter()
        .find(|r| r.name == "postgres-1")
        .map(|r| r.polled.as_secs_f64());
    let sled = rows
        .iter()
        .find(|r| r.name == "sled")
        .map(|r| r.polled.as_secs_f64());
    let ratio =
        |base: Option<f64>, secs: f64| base.map_or("—".into(), |b| format!("{:.2}", b / secs));
    println!(
        "\n{sources}-source sweep (time from starting the processes; ratio: the baseline's time / this row's, above 1 is faster)\n"
    );
    println!(
        "| engine | instances | polled (s) | sources/s | vs 1 instance | vs sled | stored (s) | first request (s) | requests | duplicate polls | peak RSS per instance (MiB) | CPU per instance (s) | CPU of its PostgreSQL backends (s) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in rows {
        let secs = r.polled.as_secs_f64();
        let engine = if r.name == "sled" { "sled" } else { "postgres" };
        let vs_one = if engine == "sled" {
            "—".into()
        } else {
            ratio(one, secs)
        };
        let rss: Vec<String> = r
            .peak_kib
            .iter()
            .map(|k| format!("{:.0}", *k as f64 / 1024.0))
            .collect();
        let cpu: Vec<String> = r.cpu.iter().map(|c| format!("{c:.1}")).collect();
        println!(
            "| {engine} | {} | {secs:.2} | {:.0} | {vs_one} | {} | {} | {:.2} | {} | {} | {} | {} | {} |",
            r.instances,
            sources as f64 / secs,
            ratio(sled, secs),
            r.stored
                .map_or("—".into(), |d| format!("{:.2}", d.as_secs_f64())),
            r.first.as_secs_f64(),
            r.requests,
            r.duplicates,
            rss.join(", "),
            cpu.join(", "),
            r.backends_cpu.map_or("—".into(), |c| format!("{c:.1}"))
        );
    }
}
