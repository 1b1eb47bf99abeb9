//! `feedmux copy-store`: copies the embedded store named by the config into a new, empty
//! PostgreSQL database ([`Store::copy_into`]), with progress on stderr and a summary of what
//! went. The daemon must be stopped (the embedded store allows one process).

use std::time::{Duration, Instant};

use feedmux::config::{Config, DatabaseUrl};
use feedmux::store::{Copied, RecordKind, Store, StoreError};

use super::access::StoreAccess;

/// How often progress is written while copying.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Copies the store at the config's `[storage] path` into the database at `to`.
pub(crate) fn copy_store(config: &Config, to: &str) -> anyhow::Result<()> {
    // Checked before anything names it: a key=value connection string may hold a password
    // that no redaction finds.
    let to = DatabaseUrl::parse(to)
        .map_err(|_| anyhow::anyhow!("--to takes a URL: postgres://user@host:port/database"))?;
    let shown = to.to_string();
    let source = StoreAccess::open_local(config)?;
    let target = Store::open_postgres(&to)?;
    target.check_empty_for_copy()?;
    let items = source.item_count();
    let from = config.storage.path.display();
    eprintln!("copying {items} items from {from} into {shown}");
    let started = Instant::now();
    let mut told = Instant::now();
    let copied = source
        .copy_into(&target, &mut |copied| {
            if told.elapsed() >= PROGRESS_EVERY {
                told = Instant::now();
                eprintln!("{}", progress(copied, items, started.elapsed()));
            }
        })
        .map_err(|e| match e {
            StoreError::CannotCopy { .. } => anyhow::Error::from(e),
            other => anyhow::Error::from(other).context(format!(
                "the copy stopped midway; drop and create {shown} again before the next try"
            )),
        })?;
    print!("{}", summary(&copied, &shown, started.elapsed()));
    Ok(())
}

/// One line of progress: records so far, items of all.
fn progress(copied: &Copied, items: usize, elapsed: Duration) -> String {
    format!(
        "copied {} records ({} of {items} items) in {:.0} s",
        copied.total(),
        copied.count(RecordKind::Item),
        elapsed.as_secs_f64()
    )
}

/// What went, by kind, and how long it took.
fn summary(copied: &Copied, shown: &str, elapsed: Duration) -> String {
    let mut out = format!(
        "copied {} records into {shown} in {:.1} s\n",
        copied.total(),
        elapsed.as_secs_f64()
    );
    for (kind, count) in copied.by_kind() {
        out.push_str(&format!("  {:<14} {count}\n", kind.name()));
    }
    out
}
