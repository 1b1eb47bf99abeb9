//! What the daemon did, exposed at `/metrics` in the Prometheus text format (0.0.4).
//!
//! Counters are atomics, or a small map under a mutex for the per-source poll counts;
//! recording takes nanoseconds and reading never waits on a poll. This module only counts and
//! formats: the daemon, the refresh pipeline and the server call it.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Upper bounds (seconds) of the fetch duration histogram's buckets.
pub const FETCH_BUCKETS: [f64; 11] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// How a poll ended, the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PollResult {
    Ok,
    NotModified,
    /// A 200 with the body of the last poll.
    SameBody,
    Error,
}

impl PollResult {
    fn label(self) -> &'static str {
        match self {
            PollResult::Ok => "ok",
            PollResult::NotModified => "not_modified",
            PollResult::SameBody => "same_body",
            PollResult::Error => "error",
        }
    }
}

/// A histogram with fixed buckets.
#[derive(Debug, Default)]
struct Histogram {
    /// Observations at most each bound of [`FETCH_BUCKETS`] (not cumulative here).
    buckets: [AtomicU64; FETCH_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = FETCH_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    /// Polls by (source, result).
    polls: Mutex<BTreeMap<(String, PollResult), u64>>,
    /// Polls whose body could be read only by mending it, by source.
    polls_recovered: Mutex<BTreeMap<String, u64>>,
    fetch_duration: Histogram,
    pub items_new: AtomicU64,
    pub items_updated: AtomicU64,
    pub merged_url: AtomicU64,
    pub merged_text: AtomicU64,
    pub merged_meaning: AtomicU64,
    /// Items removed by retention.
    pub items_pruned: AtomicU64,
    pub feed_requests: AtomicU64,
    pub feed_not_modified: AtomicU64,
    /// Output feed responses by HTTP status code.
    feed_responses: Mutex<BTreeMap<u16, u64>>,
    /// Searches and pages of output feeds served from the publisher's cache of them.
    pub feed_views_hit: AtomicU64,
    /// Searches and pages of output feeds not in that cache (rendered, or refused).
    pub feed_views_miss: AtomicU64,
    /// Searches and pages refused (503) because too many were being rendered.
    pub searches_refused: AtomicU64,
    /// The last write to the store failed (cleared by the next poll that writes).
    pub store_failing: AtomicBool,
    /// What is known of the store's failure while it lasts, for the status page.
    store_fault: Mutex<Option<StoreFault>>,
    /// Jumps of the wall clock noticed, forward and backward.
    clock_jumps_forward: AtomicU64,
    clock_jumps_backward: AtomicU64,
}

/// A store failing its writes, from the first failed write until one succeeds again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFault {
    /// The first failed write.
    pub since: DateTime<Utc>,
    /// The error of the first failed write (later ones follow from it).
    pub error: String,
    /// Failed writes so far.
    pub failed_writes: u64,
    /// Times the daemon tried to reopen the store so far.
    pub reopen_attempts: u32,
}

/// A label value, escaped as the text format wants.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one poll of `source`.
    pub fn poll(&self, source: &str, result: PollResult) {
        let mut polls = self.polls.lock().unwrap_or_else(|p| p.into_inner());
        *polls.entry((source.to_owned(), result)).or_default() += 1;
    }

    /// Counts one poll of `source` whose body was read only by mending it.
    pub fn poll_recovered(&self, source: &str) {
        let mut polls = self
            .polls_recovered
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *polls.entry(source.to_owned()).or_default() += 1;
    }

    /// Records a write to the store that failed at `now` with `error`; answers whether the
    /// store was working until then.
    pub fn store_failed(&self, error: &str, now: DateTime<Utc>) -> bool {
        self.store_failing.store(true, Ordering::Relaxed);
        let mut fault = self.store_fault.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *fault {
            Some(f) => {
                f.failed_writes += 1;
                false
            }
            None => {
                *fault = Some(StoreFault {
                    since: now,
                    error: error.to_owned(),
                    failed_writes: 1,
                    reopen_attempts: 0,
                });
                true
            }
        }
    }

    /// Records a write to the store that succeeded; answers the fault it ends, if any.
    pub fn store_succeeded(&self) -> Option<StoreFault> {
        self.store_failing.store(false, Ordering::Relaxed);
        self.store_fault
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Counts an attempt to reopen the failing store; answers the fault as it is now (`None`
    /// when the store is not failing).
    pub fn store_reopen_attempted(&self) -> Option<StoreFault> {
        let mut fault = self.store_fault.lock().unwrap_or_else(|p| p.into_inner());
        let f = fault.as_mut()?;
        f.reopen_attempts += 1;
        Some(f.clone())
    }

    /// The store's current fault, if it is failing.
    pub fn store_fault(&self) -> Option<StoreFault> {
        self.store_fault
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Counts a jump of the wall clock.
    pub fn clock_jumped(&self, forward: bool) {
        let counter = if forward {
            &self.clock_jumps_forward
        } else {
            &self.clock_jumps_backward
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Records how long one fetch took (the HTTP request and body, or the failure).
    /// Counts one output feed response with status `code`.
    pub fn feed_response(&self, code: u16) {
        *self
            .feed_responses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(code)
            .or_default() += 1;
    }

    pub fn fetch_took(&self, d: Duration) {
        self.fetch_duration.observe(d);
    }

    /// The Prometheus text exposition of every metric, plus the given gauges.
    pub fn render(&self, items_stored: u64, store_bytes: u64) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, lines: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in lines {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        family(
            "feedmux_build_info",
            "gauge",
            "Always 1; its label is the version of feedmux serving these metrics.",
            &[(
                format!("{{version=\"{}\"}}", label(env!("CARGO_PKG_VERSION"))),
                1,
            )],
        );
        let polls: Vec<(String, u64)> = self
            .polls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((source, result), n)| {
                (
                    format!(
                        "{{source=\"{}\",result=\"{}\"}}",
                        label(source),
                        result.label()
                    ),
                    *n,
                )
            })
            .collect();
        family(
            "feedmux_polls_total",
            "counter",
            "Source polls by source and result.",
            &polls,
        );
        let recovered: Vec<(String, u64)> = self
            .polls_recovered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(source, n)| (format!("{{source=\"{}\"}}", label(source)), *n))
            .collect();
        family(
            "feedmux_polls_recovered_total",
            "counter",
            "Polls whose body was broken (bad XML, a wrong encoding label) and was read by mending it, by source.",
            &recovered,
        );
        family(
            "feedmux_items_ingested_total",
            "counter",
            "Items stored, by kind of write.",
            &[
                ("{kind=\"new\"}".into(), get(&self.items_new)),
                ("{kind=\"updated\"}".into(), get(&self.items_updated)),
            ],
        );
        family(
            "feedmux_items_pruned_total",
            "counter",
            "Items removed by retention (retention_days, max_items) and by sources' quotas (max_items_per_source).",
            &[(String::new(), get(&self.items_pruned))],
        );
        family(
            "feedmux_duplicates_merged_total",
            "counter",
            "New items that joined another source's story, by how they matched.",
            &[
                ("{kind=\"url\"}".into(), get(&self.merged_url)),
                ("{kind=\"text\"}".into(), get(&self.merged_text)),
                ("{kind=\"meaning\"}".into(), get(&self.merged_meaning)),
            ],
        );
        let responses: Vec<(String, u64)> = self
            .feed_responses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(code, n)| (format!("{{code=\"{code}\"}}"), *n))
            .collect();
        family(
            "feedmux_feed_responses_total",
            "counter",
            "Output feed responses by HTTP status code (each response counted once).",
            &responses,
        );
        family(
            "feedmux_feed_views_total",
            "counter",
            "Searches and pages of output feeds (?q=, ?limit=, ?before=), by whether they were served from the cache of rendered views.",
            &[
                ("{cache=\"hit\"}".into(), get(&self.feed_views_hit)),
                ("{cache=\"miss\"}".into(), get(&self.feed_views_miss)),
            ],
        );
        family(
            "feedmux_searches_refused_total",
            "counter",
            "Searches and pages of output feeds answered 503: too many were being rendered for the 10 s the request waited.",
            &[(String::new(), get(&self.searches_refused))],
        );
        family(
            "feedmux_feed_requests_total",
            "counter",
            "Deprecated (its series overlap: any includes 304): use feedmux_feed_responses_total. Output feed requests, and those answered 304.",
            &[
                ("{response=\"any\"}".into(), get(&self.feed_requests)),
                ("{response=\"304\"}".into(), get(&self.feed_not_modified)),
            ],
        );
        family(
            "feedmux_items_stored",
            "gauge",
            "Items in the store.",
            &[(String::new(), items_stored)],
        );
        family(
            "feedmux_store_bytes",
            "gauge",
            "Bytes the store occupies on disk.",
            &[(String::new(), store_bytes)],
        );
        family(
            "feedmux_store_failing",
            "gauge",
            "1 when the last write to the store failed.",
            &[(
                String::new(),
                u64::from(self.store_failing.load(Ordering::Relaxed)),
            )],
        );
        family(
            "feedmux_clock_jumps_total",
            "counter",
            "Jumps of the wall clock (more than a minute off the monotonic clock), by direction.",
            &[
                (
                    "{direction=\"forward\"}".into(),
                    get(&self.clock_jumps_forward),
                ),
                (
                    "{direction=\"backward\"}".into(),
                    get(&self.clock_jumps_backward),
                ),
            ],
        );
        let h = &self.fetch_duration;
        let name = "feedmux_fetch_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to fetch a source (request and body), failures included; waits for the host's turn (per-host limits) are not counted.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (bound, n) in FETCH_BUCKETS.iter().zip(&h.buckets) {
            cumulative += get(n);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = get(&h.count);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            get(&h.sum_micros) as f64 / 1_000_000.0
        );
        let _ = writeln!(out, "{name}_count {count}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_cumulative_and_ends_with_every_observation() {
        let m = Metrics::default();
        for ms in [10, 80, 80, 700, 200_000] {
            m.fetch_took(Duration::from_millis(ms));
        }
        let text = m.render(0, 0);
        assert!(text.contains("feedmux_fetch_duration_seconds_bucket{le=\"0.05\"} 1\n"));
        assert!(text.contains("feedmux_fetch_duration_seconds_bucket{le=\"0.1\"} 3\n"));
        assert!(text.contains("feedmux_fetch_duration_seconds_bucket{le=\"1\"} 4\n"));
        assert!(text.contains("feedmux_fetch_duration_seconds_bucket{le=\"120\"} 4\n"));
        assert!(text.contains("feedmux_fetch_duration_seconds_bucket{le=\"+Inf\"} 5\n"));
        assert!(text.contains("feedmux_fetch_duration_seconds_count 5\n"));
        assert!(
            text.contains("feedmux_fetch_duration_seconds_sum 200.87\n"),
            "{text}"
        );
    }

    #[test]
    fn polls_are_counted_by_source_and_result() {
        let m = Metrics::default();
        m.poll("a", PollResult::Ok);
        m.poll("a", PollResult::Ok);
        m.poll("b\"x", PollResult::Error);
        m.poll("a", PollResult::SameBody);
        let text = m.render(0, 0);
        assert!(text.contains("feedmux_polls_total{source=\"a\",result=\"ok\"} 2\n"));
        assert!(text.contains("feedmux_polls_total{source=\"a\",result=\"same_body\"} 1\n"));
        assert!(text.contains("feedmux_polls_total{source=\"b\\\"x\",result=\"error\"} 1\n"));
    }
}
