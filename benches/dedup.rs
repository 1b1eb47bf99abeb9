//! Dedup cost benchmark: ingesting items when the near-duplicate index already holds many
//! items (all inside the time window, the worst case) against ingesting into an empty store,
//! measured in the same run: the candidate lookup and scoring alone, and a whole ingest of
//! new items (plan, dedup, write, flush; no parsing). `cargo bench --bench dedup` (index size
//! from `FEEDMUX_BENCH_INDEX`, default 200,000; 1,000,000 takes a minute or two to fill;
//! `FEEDMUX_BENCH_SPAN_HOURS=8760` spreads the items over a year instead of the window;
//! `FEEDMUX_BENCH_MEANINGS=1` gives every item and probe a meaning, as `dedup.model` would,
//! random and so never close: the lookup then also scans the recent items' meanings in full,
//! its worst case).

use std::time::{Duration, Instant};

use chrono::Utc;
use feedmux::dedup::fingerprint::{Fingerprint, TermStats};
use feedmux::dedup::{
    best_match, plan, DedupConfig, FingerprintRecord, IndexedFingerprint, IngestPlan,
};
use feedmux::model::Entry;
use feedmux::model::{ItemId, SourceState};
use feedmux::store::Store;

/// The allocator the `feedmux` binary uses (jemalloc), so the figures are the product's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const PROBES: usize = 2_000;

/// A cheap deterministic generator (xorshift).
#[derive(Clone)]
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn words(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| format!("w{}", self.next() % 20_000))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Whether fingerprints get a (random) meaning: `FEEDMUX_BENCH_MEANINGS=1`.
fn with_meanings() -> bool {
    std::env::var("FEEDMUX_BENCH_MEANINGS").is_ok_and(|v| v == "1")
}

/// A fingerprint as planning makes it: counted in the statistics, trimmed, keyed.
fn planned(rng: &mut Rng, stats: &mut TermStats) -> (Fingerprint, Vec<u32>) {
    let mut fp = Fingerprint::new(&rng.words(8), &rng.words(30));
    if with_meanings() {
        fp.meaning = Some(feedmux::dedup::meaning::Meaning {
            model: 1,
            values: (0..384).map(|_| rng.next() as i8).collect(),
        });
    }
    stats.add(&fp);
    fp.keep_strongest(stats);
    let keys = fp.key_terms(stats);
    (fp, keys)
}

/// Fills the index with `n` items published over the last `span_secs` (by default 200,000 s,
/// all inside the 72-hour window: the worst case; `FEEDMUX_BENCH_SPAN_HOURS=8760` spreads them
/// over a year, as a store that has run for one holds them).
fn fill(store: &Store, n: usize, span_secs: u128, rng: &mut Rng) {
    let now = Utc::now();
    let mut done = 0;
    while done < n {
        let batch = (n - done).min(500);
        let mut plan = IngestPlan::default();
        for i in 0..batch {
            let k = (done + i) as u128;
            let mut id = [0u8; 16];
            id.copy_from_slice(
                &(k.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)).to_be_bytes(),
            );
            let mut stats = store.ingest_guard();
            let (fingerprint, keys) = planned(rng, &mut stats);
            plan.fingerprints.push(IndexedFingerprint {
                id: ItemId(id),
                record: FingerprintRecord {
                    source: format!("s{}", k % 1000),
                    published: now - chrono::Duration::seconds((k * span_secs / n as u128) as i64),
                    fingerprint,
                    keys,
                },
                replaces: None,
            });
        }
        let stats = store.ingest_guard();
        store
            .apply_poll(
                "bench-fill",
                &plan,
                &[],
                &[],
                &SourceState::default(),
                stats,
            )
            .unwrap();
        done += batch;
    }
}

/// Median time of finding the best match for each probe (the index keys and the scoring).
fn probe(store: &Store, probes: &[Fingerprint]) -> Duration {
    let config = DedupConfig::default();
    let now = Utc::now();
    let stats = store.ingest_guard();
    let mut times: Vec<Duration> = probes
        .iter()
        .map(|fp| {
            let t = Instant::now();
            let keys = fp.key_terms(&stats);
            let _ = best_match(store, "probe", fp, &keys, now, &config, &stats).unwrap();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// Median time per item of ingesting rounds of `per_round` new items from one source.
fn ingest(store: &Store, rng: &mut Rng, label: &str, rounds: usize, per_round: usize) -> Duration {
    let config = DedupConfig::default();
    let mut times: Vec<Duration> = (0..rounds)
        .map(|round| {
            let now = Utc::now();
            let entries: Vec<Entry> = (0..per_round)
                .map(|i| Entry {
                    guid: Some(format!("{label}-{round}-{i}")),
                    url: Some(format!("https://probe.example/{label}/{round}/{i}")),
                    title: rng.words(8),
                    summary_html: Some(rng.words(30)),
                    published: Some(now),
                    ..Entry::default()
                })
                .collect();
            let t = Instant::now();
            let mut stats = store.ingest_guard();
            let planned = plan(store, "probe", entries, now, &config, &mut stats).unwrap();
            store
                .apply_poll("probe", &planned, &[], &[], &SourceState::default(), stats)
                .unwrap();
            t.elapsed() / per_round as u32
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let n: usize = std::env::var("FEEDMUX_BENCH_INDEX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let span_secs: u128 = std::env::var("FEEDMUX_BENCH_SPAN_HOURS")
        .ok()
        .and_then(|v| v.parse::<u128>().ok())
        .map_or(200_000, |h| h * 3600);
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    let mut probe_stats = TermStats::default();
    let probes: Vec<Fingerprint> = (0..PROBES)
        .map(|_| planned(&mut rng, &mut probe_stats).0)
        .collect();

    let empty_dir = tempfile::tempdir().unwrap();
    let empty = Store::open(&empty_dir.path().join("store")).unwrap();
    let full_dir = tempfile::tempdir().unwrap();
    let full = Store::open(&full_dir.path().join("store")).unwrap();
    let t = Instant::now();
    fill(&full, n, span_secs, &mut rng);
    println!(
        "filled the index with {n} items published over {} h in {:.1} s ({} MB on disk)",
        span_secs / 3600,
        t.elapsed().as_secs_f64(),
        full.size_on_disk() / 1_000_000
    );

    // Warm both caches the same way, then measure.
    probe(&empty, &probes);
    probe(&full, &probes);
    let e = probe(&empty, &probes);
    let f = probe(&full, &probes);
    report(
        "candidate lookup + scoring, median per item",
        "empty index",
        n,
        e,
        f,
    );

    // The same new items into each store.
    let (rounds, per_round) = (20, 100);
    let mut same = rng.clone();
    ingest(&empty, &mut rng.clone(), "warm", 3, per_round);
    ingest(&full, &mut rng.clone(), "warm", 3, per_round);
    let e = ingest(&empty, &mut same.clone(), "run", rounds, per_round);
    let f = ingest(&full, &mut same, "run", rounds, per_round);
    report(
        "ingest of a new item (plan + write), median",
        "empty store",
        n,
        e,
        f,
    );
}

/// Prints one measurement: empty against full, and their ratio.
fn report(what: &str, empty_label: &str, n: usize, empty: Duration, full: Duration) {
    println!("{what:<48} {:>10}", "time");
    println!("{empty_label:<48} {:>8.1}µs", empty.as_secs_f64() * 1e6);
    println!(
        "{:<48} {:>8.1}µs",
        format!("index holding {n} items"),
        full.as_secs_f64() * 1e6
    );
    println!(
        "ratio full / empty: {:.2}",
        full.as_secs_f64() / empty.as_secs_f64().max(1e-9)
    );
}
