//! Store benchmark (issue 18): feedmux's sled store against SQLite with one row per item,
//! measured side by side in the same run, because shared machines drift.
//!
//! ```text
//! cargo build --release && cargo bench --bench store   # 50 sources x 1,000 items
//! FEEDMUX_STORE_SOURCES=10 cargo bench --bench store   # a quicker run, 10 x 1,000
//! FEEDMUX_STORE_KEEP=1 cargo bench --bench store        # keep the feeds and stores after
//! FEEDMUX_STORE_ROWS=capped cargo bench --bench store   # only the max_per_source rows
//! FEEDMUX_STORE_CAPPED_ITEMS=20000 ...                  # their big source smaller (100,000)
//! FEEDMUX_STORE_ROWS=postgres cargo bench --bench store # only sled against PostgreSQL
//! ```
//!
//! The data: deterministic news-like RSS 2.0 feeds of 1,000 items each, about 1.7 KB of text
//! per item (title, link, guid, pubDate, an HTML description), every other item in Chinese,
//! written to files in a temporary directory (no network).
//!
//! - feedmux: the sources are ingested one after another through the real pipeline
//!   (`refresh::ingest`, one poll of 1,000 items per source) into a new store, which is then
//!   flushed, measured on disk, compacted (`Store::compact`) and measured again; then the
//!   oldest half of its items pruned (`Store::prune`, as retention does), which gives the
//!   space of their records back without a compact (the record log's garbage collection).
//! - SQLite (rusqlite, bundled): the same feeds parsed by feedmux's own parser
//!   (`parse::parse_feed`, so both sides store the same text), one row per item in one table
//!   `items`, indexes on the link and the time, one transaction per source, WAL mode,
//!   synchronous=NORMAL.
//! - Ingest at N stored: three more sources of 1,000 new items each into both stores; the
//!   median poll.
//! - Peak memory: `/usr/bin/time -f %M target/release/feedmux poll` of a config listing the
//!   same feed files as `file://` sources into a new store, against this binary doing the
//!   SQLite side of the same poll in a child process; then the same store polled with the
//!   extra sources added to the config (their items new, the feed of all sources rebuilt).
//! - PostgreSQL (alone, `FEEDMUX_STORE_ROWS=postgres`): the peak-memory poll of the 50
//!   sources (`feedmux poll`, one process) into a new sled store and into a fresh database of
//!   a private PostgreSQL cluster (the tests' `pg_cluster`), alternately, twice each.
//! - Capped feeds (last, or alone): `[[feed]] max_per_source` against the same feed uncapped,
//!   over one source of 100,000 items (see `capped_feed_rows`).

#[path = "../tests/e2e/support/pg_cluster.rs"]
#[allow(dead_code)]
mod pg_cluster;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Datelike, Timelike, Utc};
use feedmux::config::Config;
use feedmux::fetch::{Fetched, Validators};
use feedmux::filter::FeedFilter;
use feedmux::model::SourceState;
use feedmux::refresh::{ingest, SourceCtx};
use feedmux::store::Store;
use url::Url;

/// The allocator the `feedmux` binary uses (jemalloc), so the figures are the product's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Items in each generated feed: one poll's worth.
const ITEMS: usize = 1_000;
/// Sources of the full run (FEEDMUX_STORE_SOURCES overrides).
const SOURCES: usize = 50;
/// Fresh sources polled once the stores are full; the median is reported.
const EXTRA: usize = 3;
/// Text per item the generator aims at: title + link + guid + pubDate + description.
const TEXT_PER_ITEM: usize = 1_700;
const CONTENT_TYPE: &str = "application/rss+xml; charset=utf-8";

/// The issue's targets, for the full run.
const DISK_TARGET: f64 = 1.5;
const INGEST_TARGET: f64 = 0.15;
const RSS_TARGET_MIB: f64 = 150.0;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--sqlite-poll") {
        sqlite_poll_child(&args[2..]);
        return;
    }
    let capped_items: usize = std::env::var("FEEDMUX_STORE_CAPPED_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(CAPPED_ITEMS);
    if std::env::var("FEEDMUX_STORE_ROWS").as_deref() == Ok("capped") {
        let temp = tempfile::tempdir().expect("a temporary directory");
        let rows = capped_feed_rows(temp.path(), capped_items);
        print_capped_rows(capped_items, &rows);
        return;
    }
    let sources: usize = std::env::var("FEEDMUX_STORE_SOURCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(SOURCES);
    if std::env::var("FEEDMUX_STORE_ROWS").as_deref() == Ok("postgres") {
        postgres_rows(sources);
        return;
    }
    let stored = sources * ITEMS;
    let full = sources == SOURCES;
    let temp = work_directory();
    let work = temp.path();

    // The feeds, written once; both sides read the same files.
    let feeds_dir = work.join("feeds");
    std::fs::create_dir_all(&feeds_dir).expect("a directory");
    let base = an_hour_ago();
    let mut names: Vec<String> = (0..sources).map(|k| format!("src-{k:02}")).collect();
    let extras: Vec<String> = (0..EXTRA).map(|k| format!("extra-{k}")).collect();
    let t = Instant::now();
    let mut feed_bytes = 0;
    for (k, name) in names.iter().chain(&extras).enumerate() {
        // Each source's newest item a few minutes after the last one's; the extra sources
        // are the freshest.
        let newest = if k < sources {
            base - chrono::Duration::minutes(7 * (sources - k) as i64)
        } else {
            base
        };
        let body = generate_feed(name, newest);
        feed_bytes += body.len();
        std::fs::write(feed_path(&feeds_dir, name), body).expect("write a feed");
    }
    let text = text_per_item(&feeds_dir, &names[0]);
    println!(
        "data: {sources} sources x {ITEMS} items (+{EXTRA} extra sources), RSS 2.0, every other item Chinese; {:.1} MB of feed files written in {:.1} s; normalised text per item (title + link + guid + summary HTML, as parse_feed gives it): {text:.0} B",
        feed_bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    // feedmux and SQLite, same items, one source after the other.
    let fm_dir = work.join("feedmux");
    std::fs::create_dir_all(&fm_dir).expect("a directory");
    let all: Vec<String> = names.iter().chain(&extras).cloned().collect();
    let config = write_config(
        &fm_dir.join("feedmux.toml"),
        &fm_dir.join("store"),
        &feeds_dir,
        &all,
    );
    let fm = Feedmux::open(&config);
    let sq_dir = work.join("sqlite");
    std::fs::create_dir_all(&sq_dir).expect("a directory");
    let mut sq = Sqlite::open(&sq_dir.join("items.db"));

    println!("\nfilling both stores to {stored} items, one poll of {ITEMS} items per source:");
    let mut fm_fill = Duration::ZERO;
    let mut sq_fill = Duration::ZERO;
    let mut sq_insert = Duration::ZERO;
    let mut merged = 0;
    for (k, name) in names.iter().enumerate() {
        let body = std::fs::read(feed_path(&feeds_dir, name)).expect("read a feed");
        let (took, report) = fm.ingest(name, body.clone());
        fm_fill += took;
        merged += report;
        let (took, insert) = sq.ingest(name, &body, &source_url(&feeds_dir, name));
        sq_fill += took;
        sq_insert += insert;
        if (k + 1) % 10 == 0 || k + 1 == sources {
            println!(
                "  {:>6} items: feedmux {:>6.1} s, SQLite {:>5.1} s",
                (k + 1) * ITEMS,
                fm_fill.as_secs_f64(),
                sq_fill.as_secs_f64()
            );
        }
    }
    let t = Instant::now();
    fm.store.flush().expect("flush");
    fm_fill += t.elapsed();
    let t = Instant::now();
    sq.checkpoint();
    sq_fill += t.elapsed();
    assert_eq!(fm.store.item_count(), stored, "every item stored");
    assert_eq!(sq.count(), stored, "every row stored");
    if merged > 0 {
        println!("  note: feedmux's dedup joined {merged} new items to other sources' stories (they are stored all the same)");
    }
    let fm_disk = dir_size(&fm.path);
    let sq_disk = dir_size(&sq_dir);

    // Ingest with the stores full: fresh sources of new items, into the same open stores.
    let mut fm_extra = Vec::new();
    let mut sq_extra = Vec::new();
    let mut sq_extra_insert = Vec::new();
    for name in &extras {
        let body = std::fs::read(feed_path(&feeds_dir, name)).expect("read a feed");
        fm_extra.push(fm.ingest(name, body.clone()).0);
        let (took, insert) = sq.ingest(name, &body, &source_url(&feeds_dir, name));
        sq_extra.push(took);
        sq_extra_insert.push(insert);
    }
    let (fm_e, sq_e, sq_ei) = (median(fm_extra), median(sq_extra), median(sq_extra_insert));
    names.extend(extras.iter().cloned());
    let total = names.len() * ITEMS;

    // Reading back: the newest items of the feed, as a render reads them (median of 5).
    let fm_read = median((0..5).map(|_| fm.read_newest(ITEMS)).collect());
    let sq_read = median((0..5).map(|_| sq.read_newest(ITEMS)).collect());

    // Where the bytes are, then compaction (the store closed first).
    fm.store.flush().expect("flush");
    sq.checkpoint();
    let sq_disk_total = dir_size(&sq_dir);
    let sq_tables = sq.table_sizes();
    let store_path = fm.path.clone();
    drop(fm);
    let files = file_sizes(&store_path);
    let trees = tree_sizes(&store_path);
    let t = Instant::now();
    let compacted = Store::compact(&store_path).map(|_| dir_size(&store_path));
    let compact_took = t.elapsed();
    let compacted_files = file_sizes(&store_path);
    let pruned = prune_half(&store_path, total);

    // Peak memory of a whole poll, each in a process of its own.
    let rss = peak_rss(work, &feeds_dir, &names[..sources], &extras);

    // ---------------------------------------------------------------------------------------
    let per = |bytes: u64, items: usize| bytes as f64 / items as f64;
    let rate = |d: Duration, items: usize| items as f64 / d.as_secs_f64();
    println!("\nfill ({stored} items, {sources} polls of {ITEMS}):");
    println!(
        "  feedmux ingest (parse, dedup, filter, store; flushed every poll): {:>6.1} s {:>8.0} items/s",
        fm_fill.as_secs_f64(),
        rate(fm_fill, stored)
    );
    println!(
        "  SQLite, parse_feed + insert (one transaction per source):         {:>6.1} s {:>8.0} items/s",
        sq_fill.as_secs_f64(),
        rate(sq_fill, stored)
    );
    println!(
        "  SQLite, the inserts alone:                                        {:>6.1} s {:>8.0} items/s",
        sq_insert.as_secs_f64(),
        rate(sq_insert, stored)
    );
    println!("\ndisk at {stored} items (sum of file sizes):");
    println!(
        "  feedmux (sled) as written: {:>12} B = {:>7.0} B/item",
        fm_disk,
        per(fm_disk, stored)
    );
    println!(
        "  SQLite after a WAL checkpoint (TRUNCATE): {:>12} B = {:>7.0} B/item",
        sq_disk,
        per(sq_disk, stored)
    );
    println!("\nsled files at {total} items (before compacting), apparent / allocated:");
    for (name, len, alloc) in &files {
        println!("  {name:<28} {len:>12} B {alloc:>12} B");
    }
    match &trees {
        Ok(trees) => {
            let live: u64 = trees.iter().map(|t| t.2).sum();
            println!(
                "sled trees, live keys + values ({} B = {:.0} B/item; the files hold {:.1}x that):",
                live,
                per(live, total),
                files.iter().map(|f| f.1).sum::<u64>() as f64 / live.max(1) as f64
            );
            for (name, count, bytes) in trees {
                println!(
                    "  {name:<28} {count:>9} records {bytes:>12} B {:>7.0} B/item",
                    per(*bytes, total)
                );
            }
        }
        Err(e) => println!("sled trees: not read ({e})"),
    }
    if !sq_tables.is_empty() {
        println!("SQLite objects at {total} items (dbstat):");
        for (name, bytes) in &sq_tables {
            println!(
                "  {name:<28} {bytes:>12} B {:>7.0} B/item",
                per(*bytes, total)
            );
        }
    }
    match &compacted {
        Ok(after) => println!(
            "\nfeedmux compact ({total} items): {:.1} s, {after} B = {:.0} B/item; SQLite at {total} items: {sq_disk_total} B = {:.0} B/item",
            compact_took.as_secs_f64(),
            per(*after, total),
            per(sq_disk_total, total)
        ),
        Err(e) => println!("\nfeedmux compact failed: {e}"),
    }
    if compacted.is_ok() {
        println!("sled files after compacting, apparent / allocated:");
        for (name, len, alloc) in &compacted_files {
            println!("  {name:<28} {len:>12} B {alloc:>12} B");
        }
    }
    match &pruned {
        Ok(p) => println!(
            "\nprune the oldest half ({} of {total} items, the compacted store): {:.1} s; record files {} -> {} B, the store {} -> {} B ({:.0} B/item kept)",
            p.items,
            p.took.as_secs_f64(),
            p.records_before,
            p.records_after,
            p.store_before,
            p.store_after,
            per(p.store_after, total - p.items)
        ),
        Err(e) => println!("\nprune the oldest half: failed: {e}"),
    }
    println!(
        "\ningest at {stored} stored (median of {EXTRA} polls of {ITEMS} new items, fresh sources):"
    );
    println!(
        "  feedmux {:>7.0} ms {:>8.0} items/s; SQLite parse_feed + insert {:>5.0} ms {:>8.0} items/s; SQLite inserts alone {:>5.0} ms {:>8.0} items/s",
        fm_e.as_secs_f64() * 1e3,
        rate(fm_e, ITEMS),
        sq_e.as_secs_f64() * 1e3,
        rate(sq_e, ITEMS),
        sq_ei.as_secs_f64() * 1e3,
        rate(sq_ei, ITEMS)
    );
    println!(
        "\nread the newest {ITEMS} items (median of 5): feedmux (feed index, item records decoded) {:.1} ms; SQLite (ORDER BY published DESC LIMIT, every column) {:.1} ms",
        fm_read.as_secs_f64() * 1e3,
        sq_read.as_secs_f64() * 1e3
    );
    match &rss {
        Ok(r) => {
            println!(
                "\n`feedmux poll` of {sources} x {ITEMS} items into a new store: peak RSS {:.0} MiB, {:.1} s ({:.0} items/s); SQLite child (parse_feed + insert, same files): peak RSS {:.0} MiB, {:.1} s",
                r.feedmux_kib as f64 / 1024.0,
                r.feedmux_wall.as_secs_f64(),
                rate(r.feedmux_wall, stored),
                r.sqlite_kib as f64 / 1024.0,
                r.sqlite_wall.as_secs_f64()
            );
            println!(
                "`feedmux poll` of the same store with {EXTRA} sources of {ITEMS} new items added to the config (the feed of all sources rebuilt): peak RSS {:.0} MiB, {:.1} s; SQLite child ({EXTRA} sources into the same database): peak RSS {:.0} MiB",
                r.added_kib as f64 / 1024.0,
                r.added_wall.as_secs_f64(),
                r.sqlite_added_kib as f64 / 1024.0,
            );
        }
        Err(why) => println!("\npeak RSS of `feedmux poll`: skipped: {why}"),
    }
    let hwm = vm_hwm_kib();

    // ---------------------------------------------------------------------------------------
    let mut table = Table::default();
    let kb = |b: f64| format!("{:.2} KB", b / 1000.0);
    let disk_ratio = per(fm_disk, stored) / per(sq_disk, stored);
    table.row(
        &format!("disk/item at {}k, as written", stored / 1000),
        kb(per(fm_disk, stored)),
        kb(per(sq_disk, stored)),
        format!("{disk_ratio:.2}x"),
        format!("<= {DISK_TARGET}x"),
        met(disk_ratio <= DISK_TARGET, full),
    );
    if let Ok(after) = compacted {
        let ratio = per(after, total) / per(sq_disk_total, total);
        table.row(
            &format!("disk/item at {}k, after compact", total / 1000),
            kb(per(after, total)),
            kb(per(sq_disk_total, total)),
            format!("{ratio:.2}x"),
            format!("<= {DISK_TARGET}x"),
            met(ratio <= DISK_TARGET, full),
        );
    }
    let ingest_ratio = rate(fm_e, ITEMS) / rate(sq_e, ITEMS);
    table.row(
        &format!("ingest at {}k stored, items/s", stored / 1000),
        format!("{:.0}", rate(fm_e, ITEMS)),
        format!("{:.0}", rate(sq_e, ITEMS)),
        format!("{ingest_ratio:.3}x"),
        format!(">= {INGEST_TARGET}x"),
        met(ingest_ratio >= INGEST_TARGET, full),
    );
    table.row(
        "  (vs SQLite inserts alone)",
        format!("{:.0}", rate(fm_e, ITEMS)),
        format!("{:.0}", rate(sq_ei, ITEMS)),
        format!("{:.3}x", rate(fm_e, ITEMS) / rate(sq_ei, ITEMS)),
        "-".into(),
        "-".into(),
    );
    table.row(
        &format!("read newest {ITEMS}, items/s"),
        format!("{:.0}", rate(fm_read, ITEMS)),
        format!("{:.0}", rate(sq_read, ITEMS)),
        format!("{:.3}x", rate(fm_read, ITEMS) / rate(sq_read, ITEMS)),
        "-".into(),
        "-".into(),
    );
    table.row(
        &format!("fill 0 -> {}k, items/s", stored / 1000),
        format!("{:.0}", rate(fm_fill, stored)),
        format!("{:.0}", rate(sq_fill, stored)),
        format!("{:.3}x", rate(fm_fill, stored) / rate(sq_fill, stored)),
        "-".into(),
        "-".into(),
    );
    let rss_rows = [
        (
            format!("peak RSS, poll of {}k items", stored / 1000),
            rss.as_ref().ok().map(|r| (r.feedmux_kib, r.sqlite_kib)),
        ),
        (
            format!("peak RSS, +{EXTRA} sources at {}k", stored / 1000),
            rss.as_ref().ok().map(|r| (r.added_kib, r.sqlite_added_kib)),
        ),
    ];
    for (name, figures) in rss_rows {
        let target = format!("<= {RSS_TARGET_MIB:.0} MiB");
        match figures {
            Some((ours, theirs)) => {
                let mib = ours as f64 / 1024.0;
                table.row(
                    &name,
                    format!("{mib:.0} MiB"),
                    format!("{:.0} MiB", theirs as f64 / 1024.0),
                    format!("{:.2}x", ours as f64 / theirs.max(1) as f64),
                    target,
                    met(mib <= RSS_TARGET_MIB, full),
                );
            }
            None => table.row(
                &name,
                "skipped".into(),
                "skipped".into(),
                "-".into(),
                target,
                "-".into(),
            ),
        }
    }
    table.row(
        "peak RSS of this bench (VmHWM)",
        hwm.map(|k| format!("{:.0} MiB", k as f64 / 1024.0))
            .unwrap_or_else(|| "?".into()),
        "-".into(),
        "-".into(),
        "-".into(),
        "-".into(),
    );
    println!();
    table.print();
    println!(
        "KB = 1,000 B. ratio: disk feedmux/SQLite (lower is better), ingest feedmux/SQLite (higher is better), RSS feedmux/SQLite child."
    );
    println!(
        "SQLite {} (bundled): table `items`, one row per item, id BLOB PRIMARY KEY + indexes on url and published; journal_mode=WAL, synchronous=NORMAL (commits are not fsynced; feedmux flushes every poll); its ingest times include parse_feed.",
        rusqlite::version()
    );
    if !full {
        println!(
            "note: a reduced run ({sources} sources); the issue's targets are for {SOURCES} sources, so `met` says n/a."
        );
    }
    let rows = capped_feed_rows(work, capped_items);
    print_capped_rows(capped_items, &rows);
    if std::env::var_os("FEEDMUX_STORE_KEEP").is_some() {
        let _kept = temp.keep();
    }
}

fn met(ok: bool, full: bool) -> String {
    match (full, ok) {
        (false, _) => "n/a".into(),
        (true, true) => "yes".into(),
        (true, false) => "no".into(),
    }
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

// ---------------------------------------------------------------------------------------------
// Machine notes.

fn machine_notes(work: &Path) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map(|k| format!("{:.1} GiB", k as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!(
        "machine: {cores} cores ({cpu}), {mem} memory, Linux {kernel}; work directory {}",
        work.display()
    );
}

// ---------------------------------------------------------------------------------------------
// The data: deterministic news-like feeds.

struct Rng(u64);

impl Rng {
    fn seeded(name: &str) -> Rng {
        // FNV-1a of the name, never zero.
        let mut h: u64 = 0xCBF2_9CE4_8422_2325;
        for b in name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01B3);
        }
        Rng(h | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// An index in 0..n, small ones more often (roughly as word frequencies go).
    fn skewed(&mut self, n: usize) -> usize {
        let u = (self.next() % 1_000_000) as f64 / 1_000_000.0;
        ((n as f64) * u * u) as usize
    }

    fn pick<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words[self.skewed(words.len())]
    }
}

const EN_WORDS: &str = "\
    the of and to a in that is for on with as was by it at from said its has have be are \
    an this will which new more than after about year company government people data model \
    models market first last would could also two over research researchers team report \
    according percent million billion week month officials industry system systems \
    software chips chip compute training language open source release released announced \
    launch launched startup investors funding round valuation revenue quarter growth \
    demand supply prices energy power data centre cloud service users customers developers \
    platform product products security privacy regulators regulation policy law court \
    ruling lawsuit copyright agency federal european commission china united states japan \
    india europe beijing washington london global local network networks benchmark \
    benchmarks performance accuracy results paper study university laboratory scientists \
    experiment method approach technique hardware inference latency memory storage cost \
    costs cheaper faster larger smaller efficient efficiency agents agent assistant robot \
    robots robotics vehicles autonomous driving medical health hospital patients drug \
    discovery protein climate weather forecast satellite space launches mission telescope \
    image images video speech translation search engine browser phone phones devices \
    laptop operating update feature features version preview beta access available pricing \
    subscription enterprise deal partnership acquisition merger shares stock analysts \
    expected forecasts earnings profit loss jobs workers employees hiring layoffs union \
    strike election campaign minister president senate parliament vote bill tariffs trade \
    exports imports sanctions military defence critics supporters concerns risks safety \
    testing evaluation transparency open-weight parameters tokens context window reasoning \
    multimodal fine-tuning dataset datasets labelled synthetic quietly sharply widely \
    roughly nearly several many some most while because however meanwhile despite amid \
    before during since";

const ZH_WORDS: &str = "\
    的 在 和 是 了 将 对 与 为 已 公司 发布 模型 大模型 人工智能 技术 \
    研究 团队 数据 用户 市场 行业 企业 平台 产品 服务 开发者 开源 训练 推理 \
    算力 芯片 成本 性能 效率 能力 应用 场景 生态 合作 投资 融资 估值 收入 \
    增长 需求 供应链 政策 监管 部门 政府 地方 国家 全球 中国 美国 欧洲 北京 \
    上海 深圳 杭州 报告 显示 表示 认为 指出 介绍 据悉 目前 今年 去年 本周 \
    上月 季度 同比 亿元 万元 百分之 多家 多个 首次 正式 推出 上线 升级 版本 \
    功能 接口 价格 下调 免费 开放 测试 评测 基准 准确率 参数 上下文 多模态 \
    智能体 机器人 自动驾驶 汽车 手机 终端 操作系统 搜索 视频 图像 语音 翻译 \
    医疗 医院 药物 蛋白质 气象 预报 卫星 航天 教育 学生 高校 实验室 论文 \
    方法 框架 架构 硬件 存储 内存 网络 安全 隐私 版权 诉讼 法院 专家 分析师 \
    投资者 股价 上涨 下跌 利润 亏损 员工 招聘 裁员 出口 进口 关税 贸易 能源 \
    电力 数据中心 云计算 进一步 持续 加快 推动 提升 降低 支持 实现 提供 采用 \
    完成 预计 可能 仍然 同时 此外 不过 随着 由于 通过 基于 围绕";

/// The English words, most frequent first.
fn en() -> &'static [&'static str] {
    static WORDS: std::sync::OnceLock<Vec<&str>> = std::sync::OnceLock::new();
    WORDS.get_or_init(|| EN_WORDS.split_whitespace().collect())
}

/// The Chinese words, most frequent first.
fn zh() -> &'static [&'static str] {
    static WORDS: std::sync::OnceLock<Vec<&str>> = std::sync::OnceLock::new();
    WORDS.get_or_init(|| ZH_WORDS.split_whitespace().collect())
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn en_sentence(rng: &mut Rng) -> String {
    let n = 10 + rng.below(13);
    let mut words: Vec<String> = (0..n).map(|_| rng.pick(en()).to_owned()).collect();
    words[0] = capitalise(&words[0]);
    if rng.below(3) == 0 {
        let at = 1 + rng.below(n - 1);
        words[at] = format!("{}.{}", 1 + rng.below(99), rng.below(10));
    }
    if rng.below(4) == 0 {
        let at = 2 + rng.below(n - 2);
        words[at - 1].push(',');
    }
    format!("{}.", words.join(" "))
}

fn zh_sentence(rng: &mut Rng) -> String {
    let n = 8 + rng.below(10);
    let mut out = String::new();
    for i in 0..n {
        if i > 0 && i % (3 + rng.below(3)) == 0 {
            out.push('，');
        }
        out.push_str(rng.pick(zh()));
        if rng.below(12) == 0 {
            out.push_str(&format!("{}", 1 + rng.below(500)));
        }
    }
    out.push('。');
    out
}

fn title(rng: &mut Rng, chinese: bool) -> String {
    if chinese {
        let n = 5 + rng.below(5);
        let mut t: String = (0..n).map(|_| rng.pick(&zh()[10..])).collect();
        if rng.below(2) == 0 {
            t.insert_str(0, &format!("{}：", rng.pick(&zh()[10..])));
        }
        t
    } else {
        let n = 6 + rng.below(6);
        (0..n)
            .map(|_| capitalise(rng.pick(&en()[26..])))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// An item's description HTML of about `target` bytes: paragraphs, a link, some emphasis.
fn description(rng: &mut Rng, chinese: bool, host: &str, target: usize) -> String {
    let mut html = String::new();
    let mut para = 0;
    while html.len() < target {
        let sentences = 2 + rng.below(3);
        let mut p: Vec<String> = (0..sentences)
            .map(|_| {
                if chinese {
                    zh_sentence(rng)
                } else {
                    en_sentence(rng)
                }
            })
            .collect();
        if para == 1 {
            let topic = rng.pick(&en()[26..]);
            p.push(format!(
                "<a href=\"https://{host}/topics/{topic}\">{}</a>",
                if chinese { "相关阅读" } else { "Read more" }
            ));
        }
        if para == 0 && rng.below(2) == 0 {
            p[0] = format!("<strong>{}</strong>", p[0]);
        }
        let sep = if chinese { "" } else { " " };
        let p = format!("<p>{}</p>", p.join(sep));
        // Stop at the paragraph that would overshoot by more than it falls short.
        if para > 0 && html.len() + p.len() / 2 > target {
            break;
        }
        html.push_str(&p);
        para += 1;
    }
    html
}

/// A source's RSS 2.0 feed of [`ITEMS`] items, twenty minutes apart back from `newest`.
fn generate_feed(source: &str, newest: DateTime<Utc>) -> Vec<u8> {
    let mut rng = Rng::seeded(source);
    let host = format!("{source}.news.example");
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<rss version=\"2.0\"><channel><title>{source} news</title><link>https://{host}/</link><description>News from {source}</description><language>en</language><lastBuildDate>{}</lastBuildDate>\n",
        newest.to_rfc2822()
    );
    for i in 0..ITEMS {
        let chinese = i % 2 == 1;
        let at = newest - chrono::Duration::minutes(20 * i as i64);
        let title = title(&mut rng, chinese);
        let serial = 100_000 + rng.below(900_000);
        let slug = if chinese {
            format!("a{serial}")
        } else {
            title
                .to_lowercase()
                .split(' ')
                .take(6)
                .collect::<Vec<_>>()
                .join("-")
        };
        let mut link = format!(
            "https://{host}/{}/{:02}/{:02}/{slug}-{i}",
            at.year(),
            at.month(),
            at.day()
        );
        if i % 4 == 0 {
            link.push_str("?utm_source=rss&amp;utm_medium=feed");
        }
        let guid = format!("{host}:{i}:{serial}");
        let date = at.to_rfc2822();
        let rest = TEXT_PER_ITEM.saturating_sub(title.len() + link.len() + guid.len() + date.len());
        let body = description(&mut rng, chinese, &host, rest);
        out.push_str(&format!(
            "<item><title>{title}</title><link>{link}</link><guid isPermaLink=\"false\">{guid}</guid><pubDate>{date}</pubDate><description><![CDATA[{body}]]></description></item>\n"
        ));
    }
    out.push_str("</channel></rss>\n");
    out.into_bytes()
}

fn feed_path(dir: &Path, source: &str) -> PathBuf {
    dir.join(format!("{source}.xml"))
}

fn source_url(dir: &Path, source: &str) -> Url {
    Url::from_file_path(feed_path(dir, source)).expect("a file URL")
}

/// The average normalised text per item of one source's feed, as parse_feed gives it.
fn text_per_item(dir: &Path, source: &str) -> f64 {
    let body = std::fs::read(feed_path(dir, source)).expect("read a feed");
    let parsed = feedmux::parse::parse_feed(
        &body,
        Some(CONTENT_TYPE),
        &source_url(dir, source),
        Utc::now(),
    )
    .expect("a feed");
    let bytes: usize = parsed
        .entries
        .iter()
        .map(|e| {
            e.title.len()
                + e.url.as_deref().map_or(0, str::len)
                + e.guid.as_deref().map_or(0, str::len)
                + e.summary_html.as_deref().map_or(0, str::len)
                + e.content_html.as_deref().map_or(0, str::len)
        })
        .sum();
    bytes as f64 / parsed.entries.len() as f64
}

/// A config with `sources` as `file://` sources, a store at `store`, one output feed of every
/// item; written to `path` and loaded as feedmux loads it.
fn write_config(path: &Path, store: &Path, feeds: &Path, sources: &[String]) -> Config {
    let storage = format!("path = {:?}", store.display().to_string());
    write_config_with(path, &storage, feeds, sources)
}

/// [`write_config`] with `storage` as the `[storage]` section's lines.
fn write_config_with(path: &Path, storage: &str, feeds: &Path, sources: &[String]) -> Config {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[storage]\n{storage}\n\n[log]\nlevel = \"warn\"\n\n"
    );
    for name in sources {
        text.push_str(&format!(
            "[[source]]\nname = \"{name}\"\nurl = \"{}\"\n\n",
            source_url(feeds, name)
        ));
    }
    text.push_str("[[feed]]\nname = \"all\"\ntitle = \"Everything\"\n");
    std::fs::write(path, text).expect("write the config");
    feedmux::config::load(path).unwrap_or_else(|e| panic!("a valid config: {e}"))
}

// ---------------------------------------------------------------------------------------------
// feedmux's side: the real ingest pipeline, as `feedmux poll` drives it.

struct Feedmux {
    store: Store,
    path: PathBuf,
    config: Config,
    filters: Vec<FeedFilter>,
}

impl Feedmux {
    fn open(config: &Config) -> Feedmux {
        let path = config.storage.path.clone();
        let store = feedmux::daemon::open_store(config).expect("open the store");
        // As `feedmux poll` opens it (daemon::Sweeper::open).
        store.keep_recent_in_memory(config.dedup.memory_items);
        feedmux::daemon::sync_feed_indexes(&store, config).expect("index the feeds");
        Feedmux {
            store,
            path,
            config: config.clone(),
            filters: config.feeds.iter().map(FeedFilter::new).collect(),
        }
    }

    /// Reads the `n` newest items of the feed "all" (ids from its index, then each item).
    fn read_newest(&self, n: usize) -> Duration {
        let t = Instant::now();
        let mut bytes = 0;
        for entry in self.store.feed_items("all").take(n) {
            let id = entry.expect("a feed index entry").id;
            let item = self.store.item(id).expect("readable").expect("stored");
            bytes += item.title.len() + item.summary_html.map_or(0, |h| h.len());
        }
        assert!(bytes > 0, "items were read");
        t.elapsed()
    }

    /// One poll of `name` answering `body`: its time (the checkpoint the daemon runs after a
    /// poll included) and how many new items dedup joined to other stories.
    fn ingest(&self, name: &str, body: Vec<u8>) -> (Duration, usize) {
        let source = self.config.source(name).expect("a configured source");
        let ctx = SourceCtx::new(source, &self.config);
        let selected: Vec<FeedFilter> = self
            .filters
            .iter()
            .filter(|f| f.selects_source(name))
            .cloned()
            .collect();
        let url = source.url.clone();
        let fetched = Fetched {
            body: Bytes::from(body),
            content_type: Some(CONTENT_TYPE.into()),
            requested_url: url.clone(),
            final_url: url,
            validators: Validators::default(),
            hints: Default::default(),
        };
        let t = Instant::now();
        let report = ingest(
            &self.store,
            &selected,
            &ctx,
            &fetched,
            SourceState::default(),
            Utc::now(),
        )
        .expect("ingest");
        self.store.checkpoint_if_due().expect("checkpoint");
        let took = t.elapsed();
        assert_eq!(report.new_items, ITEMS, "{name}: every item is new");
        (took, report.merged)
    }
}

// ---------------------------------------------------------------------------------------------
// The SQLite reference: one row per item.

struct Sqlite {
    conn: rusqlite::Connection,
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS items (
        id BLOB PRIMARY KEY,
        source TEXT NOT NULL,
        guid TEXT NOT NULL,
        url TEXT,
        title TEXT NOT NULL,
        summary_html TEXT,
        content_html TEXT,
        authors TEXT,
        categories TEXT,
        enclosures TEXT,
        published INTEGER NOT NULL,
        updated INTEGER,
        first_seen INTEGER NOT NULL
    );
    CREATE INDEX IF NOT EXISTS items_url ON items(url);
    CREATE INDEX IF NOT EXISTS items_published ON items(published);
";

impl Sqlite {
    fn open(path: &Path) -> Sqlite {
        let conn = rusqlite::Connection::open(path).expect("open SQLite");
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .expect("WAL mode");
        assert_eq!(mode, "wal");
        conn.execute_batch("PRAGMA synchronous=NORMAL;")
            .expect("synchronous=NORMAL");
        conn.execute_batch(SCHEMA).expect("the schema");
        Sqlite { conn }
    }

    /// Parses `body` and inserts its items in one transaction: the whole time, and the
    /// inserts' alone.
    fn ingest(&mut self, source: &str, body: &[u8], url: &Url) -> (Duration, Duration) {
        let t = Instant::now();
        let now = Utc::now();
        let parsed =
            feedmux::parse::parse_feed(body, Some(CONTENT_TYPE), url, now).expect("a feed");
        let guids = feedmux::dedup::guids(&parsed.entries);
        let json = |v: &[String]| (!v.is_empty()).then(|| serde_json::to_string(v).unwrap());
        let inserts = Instant::now();
        let tx = self.conn.transaction().expect("a transaction");
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO items (id, source, guid, url, title, summary_html, content_html, authors, categories, enclosures, published, updated, first_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                )
                .expect("a statement");
            for (entry, guid) in parsed.entries.iter().zip(&guids) {
                let id = feedmux::dedup::item_id(source, guid);
                let enclosures = (!entry.enclosures.is_empty())
                    .then(|| serde_json::to_string(&entry.enclosures).unwrap());
                insert
                    .execute(rusqlite::params![
                        &id.0[..],
                        source,
                        guid,
                        entry.url,
                        entry.title,
                        entry.summary_html,
                        entry.content_html,
                        json(&entry.authors),
                        json(&entry.categories),
                        enclosures,
                        entry.published.unwrap_or(now).timestamp(),
                        entry.updated.map(|u| u.timestamp()),
                        now.timestamp(),
                    ])
                    .expect("insert a row");
            }
        }
        tx.commit().expect("commit");
        let insert_took = inserts.elapsed();
        assert_eq!(parsed.entries.len(), ITEMS, "{source}: every item parsed");
        (t.elapsed(), insert_took)
    }

    fn checkpoint(&self) {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("a checkpoint");
    }

    /// Reads the `n` newest rows, every column.
    fn read_newest(&self, n: usize) -> Duration {
        let t = Instant::now();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT * FROM items ORDER BY published DESC LIMIT ?1")
            .expect("prepare");
        let mut rows = stmt.query([n as i64]).expect("query");
        let mut bytes = 0;
        while let Some(row) = rows.next().expect("a row") {
            let title: String = row.get("title").expect("title");
            let summary: Option<String> = row.get("summary_html").expect("summary");
            bytes += title.len() + summary.map_or(0, |h| h.len());
        }
        assert!(bytes > 0, "rows were read");
        t.elapsed()
    }

    fn count(&self) -> usize {
        self.conn
            .query_row("SELECT COUNT(*) FROM items", [], |r| r.get::<_, i64>(0))
            .expect("a count") as usize
    }

    /// Bytes of each table and index (the dbstat table), or nothing where it is missing.
    fn table_sizes(&self) -> Vec<(String, u64)> {
        let Ok(mut stmt) = self.conn.prepare(
            "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY SUM(pgsize) DESC",
        ) else {
            return Vec::new();
        };
        stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
            .map(|rows| rows.filter_map(Result::ok).collect())
            .unwrap_or_default()
    }
}

/// `--sqlite-poll FEEDS_DIR DB SOURCE...`: the SQLite side of a whole poll, in a process of
/// its own, for its peak RSS.
fn sqlite_poll_child(args: &[String]) {
    let feeds = Path::new(&args[0]);
    let mut sq = Sqlite::open(Path::new(&args[1]));
    for name in &args[2..] {
        let body = std::fs::read(feed_path(feeds, name)).expect("read a feed");
        sq.ingest(name, &body, &source_url(feeds, name));
    }
    sq.checkpoint();
}

// ---------------------------------------------------------------------------------------------
// Sizes.

fn walk(dir: &Path, out: &mut Vec<(PathBuf, std::fs::Metadata)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        if meta.is_dir() {
            walk(&entry.path(), out);
        } else {
            out.push((entry.path(), meta));
        }
    }
}

/// The sum of the sizes of the files under `dir`.
/// What pruning the oldest half of a store gave back.
struct Pruned {
    items: usize,
    took: Duration,
    records_before: u64,
    records_after: u64,
    store_before: u64,
    store_after: u64,
}

/// Prunes the oldest half of the `total` items of the store at `path` as retention does,
/// timing the prune (its garbage collection of the record files included).
fn prune_half(path: &Path, total: usize) -> Result<Pruned, feedmux::store::StoreError> {
    let records = path.join("records");
    let (records_before, store_before) = (dir_size(&records), dir_size(path));
    let store = Store::open(path)?;
    let t = Instant::now();
    let lost = store.prune(None, Some((total / 2) as u64), Utc::now())?;
    let took = t.elapsed();
    drop(store);
    Ok(Pruned {
        items: lost.values().sum::<u64>() as usize,
        took,
        records_before,
        records_after: dir_size(&records),
        store_before,
        store_after: dir_size(path),
    })
}

fn dir_size(dir: &Path) -> u64 {
    let mut files = Vec::new();
    walk(dir, &mut files);
    files.iter().map(|(_, m)| m.len()).sum()
}

/// Each file under `dir`: its name, size and the bytes allocated to it.
fn file_sizes(dir: &Path) -> Vec<(String, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut files = Vec::new();
    walk(dir, &mut files);
    let mut out: Vec<_> = files
        .into_iter()
        .map(|(p, m)| {
            let name = p
                .strip_prefix(dir)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            (name, m.len(), m.blocks() * 512)
        })
        .collect();
    out.sort_by_key(|f| std::cmp::Reverse(f.1));
    out
}

/// Each sled tree of the (closed) store at `path`: records and live key + value bytes.
fn tree_sizes(path: &Path) -> Result<Vec<(String, usize, u64)>, sled::Error> {
    // The store's handle may still be letting its lock go.
    let mut attempts = 0;
    let db = loop {
        match sled::Config::new().path(path).flush_every_ms(None).open() {
            Ok(db) => break db,
            Err(_) if attempts < 50 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    };
    let mut out = Vec::new();
    for name in db.tree_names() {
        let tree = db.open_tree(&name)?;
        let (mut count, mut bytes) = (0, 0u64);
        for entry in tree.iter() {
            let (k, v) = entry?;
            count += 1;
            bytes += (k.len() + v.len()) as u64;
        }
        out.push((String::from_utf8_lossy(&name).into_owned(), count, bytes));
    }
    out.sort_by_key(|t| std::cmp::Reverse(t.2));
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Peak memory.

struct PeakRss {
    feedmux_kib: u64,
    feedmux_wall: Duration,
    sqlite_kib: u64,
    sqlite_wall: Duration,
    /// The poll of the same store with the extra sources added to the config.
    added_kib: u64,
    added_wall: Duration,
    sqlite_added_kib: u64,
}

/// The release binary next to this bench's (target/release/feedmux), or the crate's.
fn feedmux_binary() -> Option<PathBuf> {
    let beside = std::env::current_exe().ok().and_then(|exe| {
        exe.parent()
            .and_then(Path::parent)
            .map(|release| release.join("feedmux"))
    });
    let in_crate = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/feedmux");
    beside.into_iter().chain([in_crate]).find(|p| p.is_file())
}

/// The newest modification time of the sources the binary is built from.
fn newest_source() -> Option<std::time::SystemTime> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "crates/meaning/src"] {
        walk(&root.join(dir), &mut files);
    }
    files.iter().filter_map(|(_, m)| m.modified().ok()).max()
}

/// GNU time, which reports a process's peak RSS (Debian package `time`).
const GNU_TIME: &str = "/usr/bin/time";

/// Runs `program args` under `/usr/bin/time -f %M`, its figure in `dir/time-{name}` and its
/// log in `dir/{name}.log`: its peak RSS in KiB and wall time.
fn time_peak(
    dir: &Path,
    name: &str,
    program: &Path,
    args: &[&std::ffi::OsStr],
) -> Result<(u64, Duration), String> {
    let out = dir.join(format!("time-{name}"));
    let log = dir.join(format!("{name}.log"));
    let stderr = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let status = Command::new(GNU_TIME)
        .args(["-f", "%M", "-o"])
        .arg(&out)
        .arg(program)
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .status()
        .map_err(|e| format!("cannot run /usr/bin/time: {e}"))?;
    let wall = t.elapsed();
    if !status.success() {
        let log = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        return Err(format!(
            "exited with {status}; its last lines:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    let text = std::fs::read_to_string(out).map_err(|e| e.to_string())?;
    let kib = text
        .lines()
        .rev()
        .find_map(|l| l.trim().parse::<u64>().ok())
        .ok_or_else(|| format!("no %M figure in {text:?}"))?;
    Ok((kib, wall))
}

fn peak_rss(
    work: &Path,
    feeds: &Path,
    sources: &[String],
    extras: &[String],
) -> Result<PeakRss, String> {
    if !Path::new(GNU_TIME).is_file() {
        return Err(
            "/usr/bin/time (GNU time) is missing; install it (Debian: apt-get install time)".into(),
        );
    }
    let Some(binary) = feedmux_binary() else {
        return Err("target/release/feedmux is missing; run `cargo build --release` first".into());
    };
    if let (Ok(built), Some(newest)) = (
        std::fs::metadata(&binary).and_then(|m| m.modified()),
        newest_source(),
    ) {
        if built < newest {
            println!(
                "warning: {} is older than the newest file under src/: run `cargo build --release` for current figures",
                binary.display()
            );
        }
    }
    let dir = work.join("poll");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let poll = |config: &Path, label: &str| {
        let args = ["poll".as_ref(), "--config".as_ref(), config.as_os_str()];
        time_peak(&dir, &format!("feedmux{label}"), &binary, &args)
            .map_err(|e| format!("`feedmux poll` failed: {e}"))
    };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let db = dir.join("poll.db");
    let sqlite = |names: &[String], label: &str| {
        let mut args = vec!["--sqlite-poll".as_ref(), feeds.as_os_str(), db.as_os_str()];
        args.extend(names.iter().map(std::ffi::OsStr::new));
        time_peak(&dir, &format!("sqlite{label}"), &exe, &args)
            .map_err(|e| format!("the SQLite child failed: {e}"))
    };
    let config = dir.join("feedmux.toml");
    write_config(&config, &dir.join("store"), feeds, sources);
    let (feedmux_kib, feedmux_wall) = poll(&config, "")?;
    let (sqlite_kib, sqlite_wall) = sqlite(sources, "")?;
    // The same store with the extra sources added to the config: their items are new, the
    // others' feeds unchanged, and the feed of all sources is rebuilt over every stored item.
    let all: Vec<String> = sources.iter().chain(extras).cloned().collect();
    let config = dir.join("feedmux-added.toml");
    write_config(&config, &dir.join("store"), feeds, &all);
    let (added_kib, added_wall) = poll(&config, "-added")?;
    let (sqlite_added_kib, _) = sqlite(extras, "-added")?;
    Ok(PeakRss {
        feedmux_kib,
        feedmux_wall,
        sqlite_kib,
        sqlite_wall,
        added_kib,
        added_wall,
        sqlite_added_kib,
    })
}

/// This process's peak RSS (VmHWM), in KiB.
fn vm_hwm_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------------------------
// The table.

#[derive(Default)]
struct Table {
    rows: Vec<[String; 6]>,
}

impl Table {
    fn row(
        &mut self,
        name: &str,
        ours: String,
        sqlite: String,
        ratio: String,
        target: String,
        met: String,
    ) {
        self.rows
            .push([name.to_owned(), ours, sqlite, ratio, target, met]);
    }

    fn print(&self) {
        let header = [
            "row",
            "feedmux",
            "SQLite (same run)",
            "ratio",
            "issue target",
            "met",
        ];
        let width = |i: usize| {
            self.rows
                .iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..6).map(width).collect();
        let line = |cells: [&str; 6]| {
            let mut s = format!("{:<w$}", cells[0], w = widths[0]);
            for i in 1..6 {
                s.push_str(&format!("  {:>w$}", cells[i], w = widths[i]));
            }
            println!("{s}");
        };
        line(header);
        println!("{}", "-".repeat(widths.iter().sum::<usize>() + 10));
        for r in &self.rows {
            line([&r[0], &r[1], &r[2], &r[3], &r[4], &r[5]]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The cost of `[[feed]] max_per_source` (issue 21): a feed capped to a source's newest few
// items against the same feed uncapped, over one big source, rendered from one store.

/// Items of the one big source of the capped-feed rows (FEEDMUX_STORE_CAPPED_ITEMS overrides).
const CAPPED_ITEMS: usize = 100_000;
/// Items of the small source beside it, spread over the big one's time.
const CAPPED_SMALL: usize = 50;
/// The cap of the capped feeds.
const CAP: usize = 5;

/// One pair of feeds, capped and not: (what, capped selection, uncapped selection, capped
/// render, uncapped render), each the median of 5 alternating runs.
struct CappedRow {
    what: &'static str,
    capped_select: Duration,
    uncapped_select: Duration,
    capped_render: Duration,
    uncapped_render: Duration,
    entries: (usize, usize),
}

/// The capped-feed rows over a store of one source of `items` items and a small one, filled
/// through `Store::apply_poll` (1,000 items a poll, feed memberships decided by each feed's
/// rules, no parsing or dedup: the rows read the store's layout, not the ingest). Three pairs
/// of feeds, each feed's `limit` 50: every item; a keyword in one of the big source's items in
/// 1,000 (its newest 5 matches lie 5,000 items deep); a keyword in only the big source's 3
/// oldest items (the cap looks for 5 and finds 3: the whole source is the worst case).
fn capped_feed_rows(work: &Path, items: usize) -> Vec<CappedRow> {
    use feedmux::dedup::{IngestPlan, ItemWrite};
    use feedmux::model::Item;
    use feedmux::publish::{collect_page, Publisher, View};
    use feedmux::store::FeedMembership;

    let dir = work.join("capped");
    std::fs::create_dir_all(&dir).expect("a directory");
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[storage]\npath = {:?}\nmax_items_per_source = {}\n\n[log]\nlevel = \"warn\"\n\n",
        dir.join("store").display().to_string(),
        items + CAPPED_SMALL
    );
    for name in ["big", "small"] {
        text.push_str(&format!(
            "[[source]]\nname = \"{name}\"\nurl = \"https://{name}.example/feed\"\n\n"
        ));
    }
    let feeds = [
        ("every", ""),
        ("sparse", "include = [\"zebra\"]\n"),
        ("oldest", "include = [\"quokka\"]\n"),
    ];
    for (name, rules) in feeds {
        text.push_str(&format!(
            "[[feed]]\nname = \"{name}\"\nlimit = 50\n{rules}\n"
        ));
        text.push_str(&format!(
            "[[feed]]\nname = \"{name}-capped\"\nlimit = 50\nmax_per_source = {CAP}\n{rules}\n"
        ));
    }
    let path = dir.join("feedmux.toml");
    std::fs::write(&path, &text).expect("write the config");
    let config = feedmux::config::load(&path).unwrap_or_else(|e| panic!("a valid config: {e}"));
    let store = Store::open(&config.storage.path).expect("open the store");
    feedmux::daemon::sync_feed_indexes(&store, &config).expect("feed indexes");
    let filters: Vec<(String, FeedFilter)> = config
        .feeds
        .iter()
        .map(|f| (f.name.clone(), FeedFilter::new(f)))
        .collect();
    let feed_names: Vec<String> = filters.iter().map(|(n, _)| n.clone()).collect();

    let newest = Utc::now() - chrono::Duration::hours(1);
    let item = |source: &str, n: usize, at: DateTime<Utc>, title: String| {
        let guid = format!("{source}-{n}");
        let id = feedmux::dedup::item_id(source, &guid);
        Item {
            id,
            source: source.into(),
            guid: guid.clone(),
            url: Some(format!("https://{source}.example/{guid}")),
            canonical_url: None,
            title,
            summary_html: Some("<p>A few words of summary.</p>".into()),
            content_html: None,
            authors: vec![],
            categories: vec![],
            enclosures: vec![],
            published: at,
            updated: None,
            first_seen: at,
            modified: at,
            content_hash: n as u64,
            story: id,
            sanitised: feedmux::sanitise::POLICY,
        }
    };
    // The big source's item n is n minutes before the newest; the small source's are spread
    // over the same time and match every feed.
    let big = (0..items).map(|n| {
        let mut title = format!("Market report number {n}");
        if n % 1000 == 999 {
            title.push_str(" zebra");
        }
        if n + 3 >= items {
            title.push_str(" quokka");
        }
        item(
            "big",
            n,
            newest - chrono::Duration::minutes(n as i64),
            title,
        )
    });
    let small = (0..CAPPED_SMALL).map(|n| {
        let at = newest - chrono::Duration::minutes((n * items / CAPPED_SMALL) as i64 + 30);
        item("small", n, at, format!("Small news {n} zebra quokka"))
    });
    let t = Instant::now();
    let (big, small): (Vec<Item>, Vec<Item>) = (big.collect(), small.collect());
    for chunk in big.chunks(ITEMS).chain(small.chunks(ITEMS)) {
        let source = chunk[0].source.clone();
        let mut plan = IngestPlan::default();
        let mut memberships = Vec::new();
        for it in chunk {
            for (feed, filter) in &filters {
                if filter.selects(it) {
                    memberships.push(FeedMembership {
                        feed: feed.clone(),
                        item: it.id,
                    });
                }
            }
            plan.writes.push(ItemWrite {
                item: it.clone(),
                previous: None,
                link: None,
            });
        }
        store
            .apply_poll(
                &source,
                &plan,
                &feed_names,
                &memberships,
                &SourceState::default(),
                store.ingest_guard(),
            )
            .expect("write a poll");
    }
    store.flush().expect("flush");
    println!(
        "\ncapped feeds: {items} items of one source and {CAPPED_SMALL} of another written in {:.1} s (apply_poll, 1,000 a poll)",
        t.elapsed().as_secs_f64()
    );

    let select = |feed: &str| {
        let feed = config.feed(feed).expect("a feed");
        let t = Instant::now();
        let page = collect_page(&store, &config, feed, &View::default()).expect("a page");
        (t.elapsed(), page.entries.len())
    };
    let render = |feed: &str| {
        let t = Instant::now();
        Publisher::new()
            .render(&store, &config, feed)
            .expect("a render");
        t.elapsed()
    };
    feeds
        .iter()
        .map(|&(name, _)| {
            let capped = format!("{name}-capped");
            // Warm-up: each once, so both find sled's cache as warm.
            let (_, uncapped_entries) = select(name);
            let (_, capped_entries) = select(&capped);
            let (mut cs, mut us, mut cr, mut ur) = (vec![], vec![], vec![], vec![]);
            for _ in 0..5 {
                us.push(select(name).0);
                cs.push(select(&capped).0);
                ur.push(render(name));
                cr.push(render(&capped));
            }
            CappedRow {
                what: name,
                capped_select: median(cs),
                uncapped_select: median(us),
                capped_render: median(cr),
                uncapped_render: median(ur),
                entries: (capped_entries, uncapped_entries),
            }
        })
        .collect()
}

fn print_capped_rows(items: usize, rows: &[CappedRow]) {
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    let what = |w: &str| match w {
        "every" => "every item",
        "sparse" => "a keyword in 1 item of 1,000",
        _ => "a keyword in the 3 oldest items only",
    };
    println!(
        "\nfeed capped at max_per_source = {CAP} against the same feed uncapped (ceiling), {items} items of one source + {CAPPED_SMALL} of another, limit 50, median of 5:"
    );
    println!(
        "  {:<38} {:>16} {:>16} {:>7} {:>16} {:>16} {:>7}",
        "feed (entries capped / uncapped)",
        "select capped",
        "uncapped",
        "ratio",
        "render capped",
        "uncapped",
        "ratio"
    );
    for r in rows {
        println!(
            "  {:<38} {:>16} {:>16} {:>7.2} {:>16} {:>16} {:>7.2}",
            format!("{} ({} / {})", what(r.what), r.entries.0, r.entries.1),
            ms(r.capped_select),
            ms(r.uncapped_select),
            r.uncapped_select.as_secs_f64() / r.capped_select.as_secs_f64(),
            ms(r.capped_render),
            ms(r.uncapped_render),
            r.uncapped_render.as_secs_f64() / r.capped_render.as_secs_f64(),
        );
    }
    println!("  select: the entries chosen from the store (publish::collect_page); render: all four formats, compressed (Publisher::render). ratio: uncapped time / capped time (1.00: the cap costs nothing).");
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL against sled (issue 20): the same `feedmux poll` into each.

/// One `feedmux poll` of every source into a new store: wall time, peak RSS (KiB) of the
/// feedmux process, bytes stored.
struct PollRun {
    wall: Duration,
    kib: u64,
    bytes: u64,
}

/// Runs `feedmux poll --config config` under `/usr/bin/time`, files in `dir`.
fn timed_poll(binary: &Path, config: &Path, dir: &Path) -> (u64, Duration) {
    let args = ["poll".as_ref(), "--config".as_ref(), config.as_os_str()];
    time_peak(dir, "feedmux", binary, &args)
        .unwrap_or_else(|e| panic!("`feedmux poll` failed: {e}"))
}

/// The size of the database at `url` (pg_database_size), in bytes.
fn database_size(url: &str) -> u64 {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        let row = client
            .query_one("SELECT pg_database_size(current_database())", &[])
            .expect("pg_database_size");
        row.get::<_, i64>(0) as u64
    })
    .join()
    .expect("the size of the database")
}

/// The run's temporary directory (named when `FEEDMUX_STORE_KEEP` is set), after the machine
/// notes.
fn work_directory() -> tempfile::TempDir {
    let temp = tempfile::tempdir().expect("a temporary directory");
    if std::env::var_os("FEEDMUX_STORE_KEEP").is_some() {
        println!("work directory (kept): {}", temp.path().display());
    }
    machine_notes(temp.path());
    temp
}

/// An hour ago, to the minute: the newest item of the generated feeds.
fn an_hour_ago() -> DateTime<Utc> {
    Utc::now()
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .expect("a time")
        - chrono::Duration::hours(1)
}

fn postgres_rows(sources: usize) {
    if !Path::new(GNU_TIME).is_file() {
        panic!("/usr/bin/time (GNU time) is missing; install it (Debian: apt-get install time)");
    }
    let binary = feedmux_binary().unwrap_or_else(|| {
        panic!("target/release/feedmux is missing; run `cargo build --release` first")
    });
    let temp = work_directory();
    let work = temp.path();
    let feeds_dir = work.join("feeds");
    std::fs::create_dir_all(&feeds_dir).expect("a directory");
    let base = an_hour_ago();
    let names: Vec<String> = (0..sources).map(|k| format!("src-{k:02}")).collect();
    for (k, name) in names.iter().enumerate() {
        let newest = base - chrono::Duration::minutes(7 * (sources - k) as i64);
        std::fs::write(feed_path(&feeds_dir, name), generate_feed(name, newest))
            .expect("write a feed");
    }
    let cluster = pg_cluster::PgCluster::private();
    println!(
        "`feedmux poll` of {sources} sources x {ITEMS} items (file:// feeds) into a new store, sled and PostgreSQL alternately, twice each:"
    );
    let (mut sled, mut pg) = (Vec::new(), Vec::new());
    for round in 0..2 {
        let dir = work.join(format!("sled-{round}"));
        std::fs::create_dir_all(&dir).expect("a directory");
        let config = dir.join("feedmux.toml");
        write_config(&config, &dir.join("store"), &feeds_dir, &names);
        let (kib, wall) = timed_poll(&binary, &config, &dir);
        let run = PollRun {
            wall,
            kib,
            bytes: dir_size(&dir.join("store")),
        };
        println!(
            "  sled:       {:>6.1} s, peak RSS {:>4.0} MiB, {:.0} MB on disk",
            run.wall.as_secs_f64(),
            run.kib as f64 / 1024.0,
            run.bytes as f64 / 1e6
        );
        sled.push(run);

        let dir = work.join(format!("postgres-{round}"));
        std::fs::create_dir_all(&dir).expect("a directory");
        let url = cluster.fresh_database("ingest");
        let config = dir.join("feedmux.toml");
        let storage = format!("engine = \"postgres\"\nurl = {url:?}");
        write_config_with(&config, &storage, &feeds_dir, &names);
        let (kib, wall) = timed_poll(&binary, &config, &dir);
        let run = PollRun {
            wall,
            kib,
            bytes: database_size(&url),
        };
        println!(
            "  PostgreSQL: {:>6.1} s, peak RSS {:>4.0} MiB, {:.0} MB in the database",
            run.wall.as_secs_f64(),
            run.kib as f64 / 1024.0,
            run.bytes as f64 / 1e6
        );
        pg.push(run);
    }
    let best = |runs: &[PollRun]| {
        runs.iter()
            .min_by_key(|r| r.wall)
            .map(|r| (r.wall, r.kib, r.bytes))
            .expect("a run")
    };
    let (sw, sk, sb) = best(&sled);
    let (pw, pk, pb) = best(&pg);
    let items = (sources * ITEMS) as f64;
    println!("\n| engine | `feedmux poll` (best of 2) | items/s | ratio to sled | peak RSS of feedmux | stored |");
    println!("| --- | --- | --- | --- | --- | --- |");
    println!(
        "| sled | {:.1} s | {:.0} | 1.00 | {:.0} MiB | {:.0} MB (store directory) |",
        sw.as_secs_f64(),
        items / sw.as_secs_f64(),
        sk as f64 / 1024.0,
        sb as f64 / 1e6
    );
    println!(
        "| PostgreSQL | {:.1} s | {:.0} | {:.2} | {:.0} MiB | {:.0} MB (pg_database_size) |",
        pw.as_secs_f64(),
        items / pw.as_secs_f64(),
        sw.as_secs_f64() / pw.as_secs_f64(),
        pk as f64 / 1024.0,
        pb as f64 / 1e6
    );
    println!("ratio: sled's time / PostgreSQL's (above 1: PostgreSQL is faster). The server's own processes are not in feedmux's peak RSS.");
}
