//! Ingest benchmark: a 5,000-item RSS 2.0 feed (about 2 KB per item, half of them Chinese)
//! through parse -> normalise -> dedup -> filter -> store, into a new store and again into the
//! same store (every item unchanged), against feed-rs parsing the same bytes alone, measured in
//! the same run. Run with `cargo bench --bench ingest`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use feedmux::config::FeedConfig;
use feedmux::fetch::{Fetched, Validators};
use feedmux::filter::FeedFilter;
use feedmux::model::SourceState;
use feedmux::refresh::ingest;
use feedmux::store::Store;
use url::Url;

mod common;
use common::{bench_source, median};

/// The allocator the `feedmux` binary uses (jemalloc), so the figures are the product's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const ITEMS: usize = 5_000;

fn feed() -> Vec<u8> {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<rss version=\"2.0\"><channel><title>Bench</title><link>https://bench.example/</link><description>bench</description>\n");
    let en = "Researchers describe a new training method for large language models that reduces the compute needed for alignment while keeping quality on standard benchmarks. ";
    let zh = "研究人员提出一种新的大模型训练方法，在保持基准测试表现的同时显著降低对齐所需的算力，并公开了代码与数据。";
    let newest = Utc::now() - chrono::Duration::hours(1);
    for i in 0..ITEMS {
        let (title, para) = if i % 2 == 0 {
            (format!("AI model release number {i}"), en)
        } else {
            (format!("第{i}号大模型发布：人工智能新进展"), zh)
        };
        let mut body = String::new();
        while body.len() < 1_700 {
            body.push_str("&lt;p&gt;");
            body.push_str(para);
            body.push_str("&lt;a href=\"/more\"&gt;more&lt;/a&gt;&lt;/p&gt;");
        }
        out.push_str(&format!(
            "<item><title>{title}</title><link>https://bench.example/posts/{i}?utm_source=rss</link><guid>bench-{i}</guid><pubDate>{}</pubDate><description>{body}</description></item>\n",
            // A second apart, the newest an hour ago: inside dedup.index_age whenever run.
            (newest - chrono::Duration::seconds(i as i64)).to_rfc2822()
        ));
    }
    out.push_str("</channel></rss>\n");
    out.into_bytes()
}

fn main() {
    let body = Bytes::from(feed());
    println!("feed: {ITEMS} items, {} bytes", body.len());
    let fetched = Fetched {
        body: body.clone(),
        content_type: Some("application/rss+xml; charset=utf-8".into()),
        requested_url: Url::parse("https://bench.example/feed.xml").unwrap(),
        final_url: Url::parse("https://bench.example/feed.xml").unwrap(),
        validators: Validators::default(),
        hints: Default::default(),
    };
    let ctx = bench_source(Default::default());
    let filter = FeedFilter::new(&FeedConfig {
        name: "ai".into(),
        title: "AI".into(),
        description: None,
        sources: vec!["bench".into()],
        include: vec!["AI".into(), "大模型".into(), "人工智能".into()],
        exclude: vec!["广告".into(), "sponsored".into()],
        include_regex: vec![],
        exclude_regex: vec![],
        limit: 100,
        group_stories: true,
        max_per_source: None,
        max_age: None,
        match_in: Default::default(),
    });

    let runs = 5;
    let mut baseline = Vec::new();
    let mut fresh = Vec::new();
    let mut again = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let parsed = feed_rs::parser::parse(body.as_ref()).unwrap();
        assert_eq!(parsed.entries.len(), ITEMS);
        baseline.push(t.elapsed());

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let t = Instant::now();
        let report = ingest(
            &store,
            std::slice::from_ref(&filter),
            &ctx,
            &fetched,
            SourceState::default(),
            Utc::now(),
        )
        .unwrap();
        fresh.push(t.elapsed());
        assert_eq!(report.new_items, ITEMS);

        let state = store.source_state("bench").unwrap();
        let t = Instant::now();
        let report = ingest(
            &store,
            std::slice::from_ref(&filter),
            &ctx,
            &fetched,
            state,
            Utc::now(),
        )
        .unwrap();
        again.push(t.elapsed());
        assert_eq!(report.unchanged, ITEMS);
    }
    let (b, f, a) = (median(baseline), median(fresh), median(again));
    let rate = |d: Duration| ITEMS as f64 / d.as_secs_f64();
    println!(
        "{:<44} {:>10} {:>12}",
        "benchmark (median of 5)", "time", "items/s"
    );
    println!(
        "{:<44} {:>8.0}ms {:>12.0}",
        "feed-rs parse alone (ceiling)",
        b.as_secs_f64() * 1e3,
        rate(b)
    );
    println!(
        "{:<44} {:>8.0}ms {:>12.0}",
        "feedmux ingest, new store",
        f.as_secs_f64() * 1e3,
        rate(f)
    );
    println!(
        "{:<44} {:>8.0}ms {:>12.0}",
        "feedmux ingest, all items unchanged",
        a.as_secs_f64() * 1e3,
        rate(a)
    );
    println!(
        "ratio new-store ingest / feed-rs parse (throughput): {:.2}",
        rate(f) / rate(b)
    );
    println!(
        "ratio unchanged re-ingest / feed-rs parse (throughput): {:.2}",
        rate(a) / rate(b)
    );
}
