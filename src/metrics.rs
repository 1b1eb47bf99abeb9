//! Counters of what the daemon did, exposed at `/metrics` in Prometheus text format.
//!
//! Plain atomics, incremented by the daemon and the server; reading them never blocks anyone.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub polls_ok: AtomicU64,
    pub polls_not_modified: AtomicU64,
    pub polls_failed: AtomicU64,
    pub items_new: AtomicU64,
    pub items_updated: AtomicU64,
    pub duplicates_merged: AtomicU64,
    pub feed_requests: AtomicU64,
    pub feed_not_modified: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every counter, plus the given gauges.
    pub fn render(&self, items_stored: u64, store_bytes: u64) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, lines: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, value) in lines {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        counter(
            "feedmux_polls_total",
            "Source polls by result.",
            &[
                ("{result=\"ok\"}", get(&self.polls_ok)),
                ("{result=\"not_modified\"}", get(&self.polls_not_modified)),
                ("{result=\"error\"}", get(&self.polls_failed)),
            ],
        );
        counter(
            "feedmux_items_ingested_total",
            "Items stored, by kind of write.",
            &[
                ("{kind=\"new\"}", get(&self.items_new)),
                ("{kind=\"updated\"}", get(&self.items_updated)),
            ],
        );
        counter(
            "feedmux_duplicates_merged_total",
            "New items that joined another source's story.",
            &[("{kind=\"url\"}", get(&self.duplicates_merged))],
        );
        counter(
            "feedmux_feed_requests_total",
            "Output feed requests, and those answered 304.",
            &[
                ("{response=\"any\"}", get(&self.feed_requests)),
                ("{response=\"304\"}", get(&self.feed_not_modified)),
            ],
        );
        let _ = writeln!(
            out,
            "# HELP feedmux_items_stored Items in the store.\n# TYPE feedmux_items_stored gauge\nfeedmux_items_stored {items_stored}"
        );
        let _ = writeln!(
            out,
            "# HELP feedmux_store_bytes Bytes the store occupies on disk.\n# TYPE feedmux_store_bytes gauge\nfeedmux_store_bytes {store_bytes}"
        );
        out
    }
}
