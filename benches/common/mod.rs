//! What the ingest benchmarks share.

use std::time::Duration;

use feedmux::config::Schedule;
use feedmux::dedup::DedupConfig;
use feedmux::refresh::SourceCtx;
use feedmux::schedule::Timing;

/// The context of the one source "bench" the benchmarks ingest, polled every 15 minutes.
pub fn bench_source(dedup: DedupConfig) -> SourceCtx {
    SourceCtx {
        name: "bench".into(),
        configured_url: url::Url::parse("https://bench.example/feed.xml").unwrap(),
        schedule: Schedule {
            text: "0 */15 * * * *".into(),
            cron: std::sync::Arc::new("0 */15 * * * *".parse().unwrap()),
        },
        timing: Timing {
            max_interval: Duration::from_secs(86_400),
            backoff_base: Duration::from_secs(300),
            backoff_max: Duration::from_secs(6 * 3600),
        },
        dedup,
        item_quota: feedmux::config::DEFAULT_MAX_ITEMS_PER_SOURCE,
    }
}

/// The middle of `runs`.
pub fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}
