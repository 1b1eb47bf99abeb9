//! When the store fails (a full disk, an I/O error): `recover_store` reopens it with short
//! delays, and polls wait for it (`wait_for_store`) instead of backing their sources off,
//! since the fault is feedmux's, not the source's. Must not fetch while the store is down.

use super::*;

/// The wait before the first attempt to reopen a failing store; it doubles with each attempt
/// until a write succeeds, up to [`REOPEN_MAX_DELAY`]: 1, 2, 4, then every 5 s. An attempt
/// costs a 2 MiB probe file, and space freed is noticed within seconds.
pub const REOPEN_FIRST_DELAY: std::time::Duration = std::time::Duration::from_secs(1);
/// The longest wait between two attempts to reopen a failing store.
pub const REOPEN_MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(5);

/// The wait of a source whose poll the store failed, before it tries again: it doubles with
/// each such poll in a row, up to [`STORE_RETRY_MAX_DELAY`], and ends at once when the store
/// comes back (`wait_for_store`). While the store stays closed a try fails before fetching,
/// so the source's server is not asked again and again.
pub const STORE_RETRY_FIRST_DELAY: std::time::Duration = std::time::Duration::from_secs(1);
/// The longest wait of a source for a failing store.
pub const STORE_RETRY_MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(30);

/// The wait before a source's try `waits` (1 for the first) after the store failed its poll.
pub(super) fn store_retry_delay(waits: u32) -> std::time::Duration {
    STORE_RETRY_FIRST_DELAY
        .saturating_mul(1 << waits.saturating_sub(1).min(16))
        .min(STORE_RETRY_MAX_DELAY)
}

/// Waits `delay`, or less: until the store comes back (reopened, or a write succeeded; see
/// `Shared::store_back`) after `store_back` was subscribed.
pub(super) async fn wait_for_store(
    mut store_back: watch::Receiver<u64>,
    delay: std::time::Duration,
) {
    let back = async {
        if store_back.changed().await.is_err() {
            // The daemon is stopping: only the delay is left.
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        () = back => {}
    }
}

/// Reopens refused by the failed database's lock (the disk having room) before the daemon
/// gives up and exits for a restart.
pub const REOPEN_LOCKED_ATTEMPTS: u32 = 3;

/// The wait before reopen attempt `attempt` (1 for the first).
pub(super) fn reopen_delay(attempt: u32) -> std::time::Duration {
    REOPEN_FIRST_DELAY
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(REOPEN_MAX_DELAY)
}

/// Recovers a store whose writes fail with an error sled keeps until the database is reopened
/// (a full disk): woken by a failed write, it waits ([`reopen_delay`]), reopens the store in
/// place (every handle sees the new database) and renders every output feed again from it, so
/// that items the failed poll did write are shown. The next write tells whether that worked:
/// [`Shared::count`] logs `store recovered` and clears the fault; another failure wakes this
/// task again, with a longer wait. Meanwhile sources wait for the store ([`wait_for_store`],
/// which a reopen ends) instead of being backed off, and readers get the feeds rendered
/// before. Runs until `stop`.
pub(super) async fn recover_store(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    // Failed writes counted when the store was last reopened: a wake-up from a failure before
    // that reopen is stale.
    let mut failed_at_reopen = None;
    // Reopens refused because the failed database still holds the store's lock.
    let mut locked = 0;
    loop {
        tokio::select! {
            () = shared.reopen.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let Some(fault) = shared.metrics.store_fault() else {
            failed_at_reopen = None;
            continue;
        };
        if failed_at_reopen == Some(fault.failed_writes) {
            continue;
        }
        let Some(fault) = shared.metrics.store_reopen_attempted() else {
            continue;
        };
        let attempt = fault.reopen_attempts;
        let delay = reopen_delay(attempt);
        warn!(
            attempt,
            delay_ms = delay.as_millis() as u64,
            error = %fault.error,
            "store failing since {}: reopening it in {delay:?}",
            fault.since
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let store = shared.pipeline.store.clone();
        let reopened = tokio::task::spawn_blocking(move || store.reopen()).await;
        failed_at_reopen = None;
        match reopened {
            Ok(Ok(())) => {
                failed_at_reopen = shared.metrics.store_fault().map(|f| f.failed_writes);
                // Sources waiting for the store poll now: their writes show whether it is back.
                shared.store_back.send_modify(|n| *n = n.wrapping_add(1));
                info!(
                    attempt,
                    "store reopened; the next poll's write shows whether it recovered"
                );
            }
            Ok(Err(e @ StoreError::Locked { .. })) => {
                // The disk has room (the reopen checks that first), but the failed database
                // still holds the store's lock. The vendored sled lets a failed database go
                // (see vendor/sled/FEEDMUX.md); should one still hang, only a new process
                // can open the store.
                locked += 1;
                if locked >= REOPEN_LOCKED_ATTEMPTS {
                    error!(attempt, error = %e, "the failed store cannot be released in this process: stopping so that the supervisor restarts feedmux");
                    shared.store_stuck.notify_one();
                    return;
                }
                warn!(attempt, error = %e, "cannot reopen the store yet: the failed database is still being released");
                shared.reopen.notify_one();
                continue;
            }
            Ok(Err(e)) => {
                warn!(attempt, error = %e, "cannot reopen the store yet");
                shared.reopen.notify_one();
                continue;
            }
            Err(e) => {
                error!(attempt, error = %e, "store reopening task failed");
                shared.reopen.notify_one();
                continue;
            }
        }
        // Items the failed poll wrote before the error may be in the reopened store, which the
        // next poll finds unchanged: render them now, as a restart would.
        let (store, publisher, config) = (
            shared.pipeline.store.clone(),
            shared.publisher.clone(),
            shared.config(),
        );
        match tokio::task::spawn_blocking(move || publisher.render_all(&store, &config)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                error!(error = %e, "cannot render output feeds after reopening the store")
            }
            Err(e) => error!(error = %e, "rendering task failed"),
        }
    }
}
