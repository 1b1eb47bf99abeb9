//! Watching the config file: a change to it (written in place, or replaced by an editor's
//! rename) asks the daemon to reload, once the file has been quiet for a moment.
//!
//! The directory holding the file is watched, not the file itself, so that a file replaced
//! by a rename (what most editors and `sed -i` do) is still seen. Events for other files in
//! that directory are ignored. This module only says "the file changed"; reading and
//! validating it is the daemon's and the config module's. The `notify` crate is used here and
//! nowhere else.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// How long the file must stay unchanged before a reload: an editor's save (truncate, write,
/// rename) is one reload, not three.
pub const DEBOUNCE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path} for changes: {source}")]
pub struct WatchError {
    path: PathBuf,
    source: notify::Error,
}

/// Keeps the watch alive; dropping it stops watching.
pub struct ConfigWatch {
    _watcher: notify::RecommendedWatcher,
    _debouncer: tokio::task::JoinHandle<()>,
}

impl Drop for ConfigWatch {
    fn drop(&mut self) {
        self._debouncer.abort();
    }
}

/// Starts watching `file`; `changed` gets one message per burst of changes, [`DEBOUNCE`]
/// after the last one. Must be called inside a tokio runtime.
pub fn config_file(file: &Path, changed: mpsc::Sender<()>) -> Result<ConfigWatch, WatchError> {
    let file = std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let dir = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let name = file.file_name().map(|n| n.to_owned());
    let (raw_tx, raw_rx) = mpsc::unbounded_channel();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) => {
                let interesting = !matches!(event.kind, EventKind::Access(_))
                    && event.paths.iter().any(|p| p.file_name() == name.as_deref());
                if interesting {
                    let _ = raw_tx.send(());
                }
            }
            Err(e) => warn!(error = %e, "config file watch failed"),
        })
        .map_err(|source| WatchError {
            path: dir.clone(),
            source,
        })?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|source| WatchError {
            path: dir.clone(),
            source,
        })?;
    debug!(file = %file.display(), "watching the config file");
    Ok(ConfigWatch {
        _watcher: watcher,
        _debouncer: tokio::spawn(debounce(raw_rx, changed, DEBOUNCE)),
    })
}

/// Forwards one message per burst of `raw` events, `quiet` after the last of the burst.
async fn debounce(
    mut raw: mpsc::UnboundedReceiver<()>,
    changed: mpsc::Sender<()>,
    quiet: Duration,
) {
    while raw.recv().await.is_some() {
        loop {
            match tokio::time::timeout(quiet, raw.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        if changed.send(()).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_events_is_one_change_after_the_quiet_time() {
        let (raw_tx, raw_rx) = mpsc::unbounded_channel();
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(debounce(raw_rx, tx, Duration::from_secs(1)));
        for _ in 0..5 {
            raw_tx.send(()).unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert!(rx.try_recv().is_err(), "nothing while events keep coming");
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(rx.try_recv(), Ok(()));
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(rx.try_recv().is_err(), "one change per burst");
        raw_tx.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(rx.try_recv(), Ok(()), "a later burst is another change");
    }
}
