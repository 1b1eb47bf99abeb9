//! The prune loop: retention by age and count on `[storage] prune_interval`, the text index
//! dropped past `dedup.index_age`, and the pauses of pruning by age while the clock is not
//! trusted (`AgePause`). Must not delete anything the config still asks to keep.

use super::*;

/// Why pruning by age waits: items merely "old" by a wrong clock must not go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum AgePause {
    /// The clock jumped forward within [`RETENTION_SETTLE`]: in case the jump is undone.
    Jumped(ClockJump),
    /// The clock is ahead of the feed servers' by more than [`clock::SKEW_THRESHOLD`].
    Ahead(clock::ClockSkew),
    /// Not compared with a server's clock yet, within [`RETENTION_SETTLE`] of the start, while
    /// some source is polled over HTTP: a clock already wrong at start would prune by its
    /// time. (With only `file:` sources no server can vouch for it.)
    Unchecked,
}

impl AgePause {
    /// Said once in the log when pruning by age starts to wait for this reason.
    pub(super) fn describe(&self) -> String {
        match self {
            AgePause::Jumped(jump) => format!(
                "the clock jumped {} at {}; pruning by age resumes once it has kept time until {}",
                jump.describe(),
                jump.at.format("%Y-%m-%d %H:%M:%S UTC"),
                (jump.at + chrono::Duration::from_std(RETENTION_SETTLE).unwrap_or_default())
                    .format("%Y-%m-%d %H:%M:%S UTC")
            ),
            AgePause::Ahead(skew) => format!(
                "the clock is {}; pruning by age resumes once it agrees",
                skew.describe()
            ),
            AgePause::Unchecked => "the clock has not been compared with a feed server's yet; pruning by age waits for the first answer (at most an hour)".to_owned(),
        }
    }
}

/// Why pruning by age must wait, `since_start` after the daemon started, if it must;
/// `servers` tells whether any source is polled over HTTP (a server could vouch for the
/// clock).
pub(super) fn age_pause(
    watch: &ClockWatch,
    since_start: std::time::Duration,
    servers: bool,
) -> Option<AgePause> {
    if let Some(jump) = watch.last_forward_jump(RETENTION_SETTLE) {
        return Some(AgePause::Jumped(jump));
    }
    match watch.skew() {
        Some(skew) if skew.is_ahead() => Some(AgePause::Ahead(skew)),
        Some(_) => None,
        None => (servers && since_start < RETENTION_SETTLE).then_some(AgePause::Unchecked),
    }
}

/// The age before which a retention sweep at `now` prunes: `retention_days` before `now`,
/// unless pruning by age must wait (`paused`, see [`AgePause`]).
pub(super) fn retention_cutoff(
    retention_days: Option<u32>,
    now: DateTime<Utc>,
    paused: Option<&AgePause>,
) -> Option<DateTime<Utc>> {
    if paused.is_some() {
        return None;
    }
    let days = chrono::Duration::days(i64::from(retention_days?));
    now.checked_sub_signed(days)
}

/// Prunes the store by `[storage] retention_days` and `max_items` at start-up and then every
/// `prune_interval` (all read afresh each time, so a reload applies), until `stop`. After a
/// forward jump of the clock, pruning by age waits until the clock has kept time for
/// [`RETENTION_SETTLE`] (`max_items` still applies).
pub(super) async fn prune_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    // The pause of pruning by age last logged.
    let mut announced = None;
    loop {
        let config = shared.config();
        let storage = &config.storage;
        // The time of the sweep is read with a look for a jump, so a jump just before it
        // cannot go unnoticed.
        let now = shared.check_clock();
        // Also holds back the text index drop below, which does not depend on retention.
        let paused = shared.age_pause(&config);
        let retention_paused = storage.retention_days.and(paused.clone());
        if let Some(pause) = retention_paused
            .as_ref()
            .filter(|p| announced.as_ref() != Some(*p))
        {
            let reason = pause.describe();
            if *pause == AgePause::Unchecked {
                info!("not pruning items by age yet: {reason}");
            } else {
                warn!("not pruning items by age: {reason}");
            }
        }
        if retention_paused.is_some() {
            announced = retention_paused.clone();
        }
        let cutoff = retention_cutoff(storage.retention_days, now, retention_paused.as_ref());
        if cutoff.is_some() || storage.max_items.is_some() {
            let max_items = storage.max_items;
            let store = shared.pipeline.store.clone();
            let started = std::time::Instant::now();
            let pruned =
                tokio::task::spawn_blocking(move || store.prune(cutoff, max_items, now)).await;
            match pruned {
                Ok(Ok(lost)) if !lost.is_empty() => {
                    let total: u64 = lost.values().sum();
                    info!(
                        items = total,
                        sources = lost.len(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "pruned items past retention"
                    );
                    let (store, publisher) =
                        (shared.pipeline.store.clone(), shared.publisher.clone());
                    let for_render = config.clone();
                    match tokio::task::spawn_blocking(move || {
                        publisher.render_all(&store, &for_render)
                    })
                    .await
                    {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            error!(error = %e, "cannot render output feeds after pruning")
                        }
                        Err(e) => error!(error = %e, "rendering task failed"),
                    }
                    // Counted once the output feeds no longer show the pruned items.
                    Metrics::add(&shared.metrics.items_pruned, total);
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    error!(error = %e, "pruning failed");
                    shared.store_failed(&e);
                }
                Err(e) => error!(error = %e, "pruning task failed"),
            }
        }
        // Not while the clock may be wrong: the index of items only "old" by it would go.
        if paused.is_none() {
            drop_aged_text_index(&shared, &config, now).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(config.storage.prune_interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// [`upkeep::drop_aged`] on a blocking thread, what it did logged.
pub(super) async fn drop_aged_text_index(shared: &Shared, config: &Config, now: DateTime<Utc>) {
    let store = shared.pipeline.store.clone();
    let dedup = config.dedup.clone();
    let started = std::time::Instant::now();
    match tokio::task::spawn_blocking(move || upkeep::drop_aged(&store, &dedup, now)).await {
        Ok(Ok(None | Some((_, 0)))) => {}
        Ok(Ok(Some((before, items)))) => info!(
            items,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "items published before {} are now matched by link only (dedup.index_age): dropped their text index entries",
            before.format("%Y-%m-%d %H:%M UTC")
        ),
        Ok(Err(e)) => {
            error!(error = %e, "cannot drop aged text index entries");
            shared.store_failed(&e);
        }
        Err(e) => error!(error = %e, "text index task failed"),
    }
}
