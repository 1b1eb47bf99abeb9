//! What the sentence model (`dedup.model`) costs at ingest: 200 news items (title and lead,
//! English and Chinese, from tests/fixtures/stories) into a new store with and without the
//! model, the same feed again (every item unchanged: nothing is embedded), and one item's
//! embedding alone, measured in the same run. Run with `tools/fetch-meaning-model && cargo
//! bench --bench meaning` (`FEEDMUX_MEANING_MODEL` names another model file).

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use feedmux::dedup::meaning::MeaningModel;
use feedmux::dedup::DedupConfig;
use feedmux::fetch::{Fetched, Validators};
use feedmux::model::SourceState;
use feedmux::refresh::ingest;
use feedmux::store::Store;
use url::Url;

mod common;
use common::{bench_source, median};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const ITEMS: usize = 200;

/// (title, lead) of the first `ITEMS` items of the labelled story pairs.
fn items() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stories/pairs.jsonl"),
    )
    .expect("tests/fixtures/stories/pairs.jsonl");
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let pair: serde_json::Value = serde_json::from_str(line).expect("a pair");
        for side in ["a", "b"] {
            let field = |f: &str| pair[side][f].as_str().unwrap_or_default().to_owned();
            out.push((field("title"), field("summary")));
        }
    }
    out.truncate(ITEMS);
    out
}

fn feed(items: &[(String, String)]) -> Vec<u8> {
    let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;");
    let mut out = String::from("<?xml version=\"1.0\"?>\n<rss version=\"2.0\"><channel><title>Bench</title><link>https://bench.example/</link><description>b</description>\n");
    let newest = Utc::now() - chrono::Duration::hours(1);
    for (i, (title, lead)) in items.iter().enumerate() {
        out.push_str(&format!(
            "<item><title>{}</title><link>https://bench.example/{i}</link><guid>b-{i}</guid><pubDate>{}</pubDate><description>{}</description></item>\n",
            escape(title),
            (newest - chrono::Duration::seconds(i as i64)).to_rfc2822(),
            escape(lead)
        ));
    }
    out.push_str("</channel></rss>\n");
    out.into_bytes()
}

fn main() {
    let path = std::env::var_os("FEEDMUX_MEANING_MODEL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/meaning/e5-small-q4.bin")
        });
    let t = Instant::now();
    let model = match MeaningModel::load(&path) {
        Ok(m) => m,
        Err(e) => {
            println!("skipped: {e} (run tools/fetch-meaning-model)");
            return;
        }
    };
    println!("model loaded in {:.2?} ({})", t.elapsed(), path.display());
    let items = items();
    let fetched = Fetched {
        body: Bytes::from(feed(&items)),
        content_type: Some("application/rss+xml".into()),
        requested_url: Url::parse("https://bench.example/feed.xml").unwrap(),
        final_url: Url::parse("https://bench.example/feed.xml").unwrap(),
        validators: Validators::default(),
        hints: Default::default(),
    };
    let words = bench_source(DedupConfig::default());
    let meant = bench_source(DedupConfig {
        model: Some(model.clone()),
        ..DedupConfig::default()
    });

    let (mut without, mut with, mut again, mut one) = (vec![], vec![], vec![], vec![]);
    for _ in 0..3 {
        for (ctx, runs) in [(&words, &mut without), (&meant, &mut with)] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&dir.path().join("store")).unwrap();
            let t = Instant::now();
            let report = ingest(
                &store,
                &[],
                ctx,
                &fetched,
                SourceState::default(),
                Utc::now(),
            )
            .unwrap();
            runs.push(t.elapsed());
            assert_eq!(report.new_items, ITEMS);
            if std::ptr::eq(ctx, &meant) {
                let state = store.source_state("bench").unwrap();
                let t = Instant::now();
                let report = ingest(&store, &[], ctx, &fetched, state, Utc::now()).unwrap();
                again.push(t.elapsed());
                assert_eq!(report.unchanged, ITEMS);
            }
        }
        let t = Instant::now();
        for (title, lead) in items.iter().take(20) {
            std::hint::black_box(model.meaning_of(title, lead));
        }
        one.push(t.elapsed() / 20);
    }
    let (w, m, a, o) = (median(without), median(with), median(again), median(one));
    let per_item = |d: Duration| d.as_secs_f64() * 1000.0 / ITEMS as f64;
    println!("kernel: {}", feedmux_meaning::Model::kernel());
    println!(
        "{:<58} {:>10} {:>12}",
        "benchmark (median of 3)", "time", "ms/item"
    );
    println!(
        "{:<58} {:>10.1?} {:>12.2}",
        format!("ingest {ITEMS} new items, words alone"),
        w,
        per_item(w)
    );
    println!(
        "{:<58} {:>10.1?} {:>12.2}",
        format!("ingest {ITEMS} new items, with dedup.model"),
        m,
        per_item(m)
    );
    println!(
        "{:<58} {:>10.1?} {:>12.2}",
        format!("ingest {ITEMS} unchanged items, with dedup.model"),
        a,
        per_item(a)
    );
    println!(
        "{:<58} {:>10.1?} {:>12.2}",
        "embed one item on one core (title and lead)",
        o,
        o.as_secs_f64() * 1000.0
    );
    println!(
        "ratio with / without the model: {:.1} (each new item costs {:.1} ms more; {} cores share the embedding)",
        m.as_secs_f64() / w.as_secs_f64(),
        per_item(m) - per_item(w),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
}
