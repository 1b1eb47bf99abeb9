//! How much disk sled itself spends per stored item, for store layouts feedmux could choose
//! (issue 18's disk target is 1.5x SQLite per item).
//!
//! ```text
//! cargo bench --bench sled_layout                  # 30 polls of 1,000 items per layout
//! FEEDMUX_LAYOUT_POLLS=50 cargo bench --bench sled_layout
//! ```
//!
//! No feedmux code runs here: each layout writes the same synthetic records straight into
//! sled, the way the store does (batches of 40 items per tree, a flush per poll of 1,000
//! items, the store's 32 MiB cache), so that only sled's own cost differs between rows. The
//! record sizes are the live sizes `cargo bench --bench store` measured per item in a real
//! store (items 1,318 B compressed, fingerprints 470, six key-term entries of 32 B, a link
//! claim of 16 + ~100, a story entry of 32, three time-ordered index keys of 24–31 B); the
//! bytes are random, as compressed records and hashes are. Every row is a new store in a
//! temporary directory; "files" is the sum of its file sizes after the last flush, "live"
//! the keys and values a full scan returns.

use std::path::Path;
use std::time::Instant;

/// Items per poll (one source's feed), as in benches/store.rs.
const ITEMS_PER_POLL: u64 = 1_000;
/// Items per sled batch of each tree.
const BATCH: u64 = 40;
/// The store's default cache (`store::DEFAULT_CACHE_BYTES`).
const CACHE_BYTES: u64 = 32 * 1024 * 1024;
/// sled's default segment size.
const SEGMENT_BYTES: usize = 512 * 1024;

const ITEM_BYTES: usize = 1_318;
const FINGERPRINT_BYTES: usize = 470;
const KEY_TERMS_PER_ITEM: usize = 6;
const CLAIM_BYTES: usize = 100;

/// What one layout writes per item.
#[derive(Clone, Copy)]
struct Layout {
    name: &'static str,
    /// Item records and fingerprints keyed by arrival order (with an id-to-sequence tree)
    /// instead of by their random 16-byte id.
    sequential_bodies: bool,
    /// Item records and fingerprints written at all (off: kept in files of their own).
    bodies: bool,
    key_terms: bool,
    /// Only the items tree, nothing else.
    items_only: bool,
    segment_bytes: usize,
}

const CURRENT: Layout = Layout {
    name: "current layout (11 trees; items, fingerprints by random id)",
    sequential_bodies: false,
    bodies: true,
    key_terms: true,
    items_only: false,
    segment_bytes: SEGMENT_BYTES,
};

fn layouts() -> Vec<Layout> {
    vec![
        CURRENT,
        Layout {
            name: "items and fingerprints keyed by arrival order",
            sequential_bodies: true,
            ..CURRENT
        },
        Layout {
            name: "no key_terms tree (key terms in memory)",
            key_terms: false,
            ..CURRENT
        },
        Layout {
            name: "index trees only (bodies, fingerprints elsewhere)",
            bodies: false,
            ..CURRENT
        },
        Layout {
            name: "current layout, 8 MiB segments",
            segment_bytes: 8 * 1024 * 1024,
            ..CURRENT
        },
        Layout {
            name: "items tree alone, keyed by arrival order",
            sequential_bodies: true,
            items_only: true,
            ..CURRENT
        },
    ]
}

/// xorshift64: the same bytes in every run.
struct Bytes(u64);

impl Bytes {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

struct Written {
    items: u64,
    live: u64,
    files: u64,
    seconds: f64,
}

const TREES: [&str; 9] = [
    "items",
    "fingerprints",
    "key_terms",
    "urls",
    "stories",
    "by_time",
    "by_source",
    "feed_index",
    "ids",
];

fn write(layout: Layout, polls: u64, dir: &Path) -> Written {
    let db = sled::Config::new()
        .path(dir)
        .segment_size(layout.segment_bytes)
        .cache_capacity(CACHE_BYTES)
        .flush_every_ms(None)
        .open()
        .expect("a sled database in the temporary directory");
    let trees: Vec<sled::Tree> = TREES
        .iter()
        .map(|name| db.open_tree(name).expect("a tree"))
        .collect();
    let mut bytes = Bytes(88_172_645_463_325_252);
    let started = Instant::now();
    let mut sequence: u64 = 0;
    for poll in 0..polls {
        let source = format!("source-{poll:03}");
        for batch in 0..ITEMS_PER_POLL / BATCH {
            let mut batches: Vec<sled::Batch> =
                TREES.iter().map(|_| sled::Batch::default()).collect();
            for n in 0..BATCH {
                sequence += 1;
                let id = bytes.take(16);
                // One item every 20 minutes back from the newest, reversed as the store does.
                let age = (batch * BATCH + n) * 1_200_000_000;
                let mut time_key = (u64::MAX / 2 + age).to_be_bytes().to_vec();
                time_key.extend_from_slice(&id);
                let body_key = if layout.sequential_bodies {
                    sequence.to_be_bytes().to_vec()
                } else {
                    id.clone()
                };
                if layout.bodies {
                    batches[0].insert(body_key.clone(), bytes.take(ITEM_BYTES));
                }
                if layout.items_only {
                    continue;
                }
                if layout.bodies {
                    batches[1].insert(body_key, bytes.take(FINGERPRINT_BYTES));
                }
                if layout.key_terms {
                    for _ in 0..KEY_TERMS_PER_ITEM {
                        let mut key = ((bytes.next() % 5_000) as u32).to_be_bytes().to_vec();
                        key.extend_from_slice(&time_key);
                        key.extend_from_slice(&bytes.take(4));
                        batches[2].insert(key, &[]);
                    }
                }
                batches[3].insert(bytes.take(16), bytes.take(CLAIM_BYTES));
                let mut story = id.clone();
                story.extend_from_slice(&id);
                batches[4].insert(story, &[]);
                batches[5].insert(time_key.clone(), &[]);
                for (tree, name) in [(6, source.as_str()), (7, "ai")] {
                    let mut key = name.as_bytes().to_vec();
                    key.push(0);
                    key.extend_from_slice(&time_key);
                    batches[tree].insert(key, &[]);
                }
                if layout.sequential_bodies && layout.bodies {
                    batches[8].insert(id, &sequence.to_be_bytes());
                }
            }
            for (tree, batch) in trees.iter().zip(batches) {
                tree.apply_batch(batch).expect("a batch written");
            }
        }
        db.flush().expect("a flush");
    }
    let seconds = started.elapsed().as_secs_f64();
    let live = trees
        .iter()
        .flat_map(|tree| tree.iter())
        .map(|entry| entry.map_or(0, |(k, v)| (k.len() + v.len()) as u64))
        .sum();
    drop(trees);
    drop(db);
    Written {
        items: sequence,
        live,
        files: size_of_files(dir),
        seconds,
    }
}

fn size_of_files(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => size_of_files(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

fn main() {
    let polls: u64 = std::env::var("FEEDMUX_LAYOUT_POLLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let temp = tempfile::tempdir().expect("a temporary directory");
    println!(
        "{polls} polls of {ITEMS_PER_POLL} items, flushed after each, batches of {BATCH}; B = bytes per item\n"
    );
    println!(
        "{:<58} {:>8} {:>8} {:>7} {:>9} {:>7}",
        "layout", "live B", "files B", "files/", "vs first", "time s"
    );
    println!(
        "{:<58} {:>8} {:>8} {:>7} {:>9} {:>7}",
        "", "", "", "live", "row", ""
    );
    let mut first: Option<f64> = None;
    for (n, layout) in layouts().into_iter().enumerate() {
        let written = write(layout, polls, &temp.path().join(format!("layout-{n}")));
        let files = written.files as f64 / written.items as f64;
        let live = written.live as f64 / written.items as f64;
        let baseline = *first.get_or_insert(files);
        println!(
            "{:<58} {:>8.0} {:>8.0} {:>6.2}x {:>8.2}x {:>7.1}",
            layout.name,
            live,
            files,
            files / live,
            files / baseline,
            written.seconds
        );
    }
}
