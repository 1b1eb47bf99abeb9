//! The daemon: wires the stages together and runs them until told to stop.
//!
//! [`run`] opens the store, brings the output-feed indexes in line with the config, renders
//! every output feed, serves HTTP on the listener it is given, and polls each source on its
//! schedule. [`Control`] messages reload the config (validated first; an invalid one leaves the
//! running config in place) or stop cleanly: polls in flight finish, the server stops, the
//! store is flushed. [`poll_once`] is the same pipeline without the server, for `feedmux poll`.
//!
//! The daemon owns the [`Clock`] every stage dates things by ([`run_with_clock`] takes one;
//! [`run`] uses the system's) and watches it: a jump of the wall clock is logged
//! (`clock jumped`), counted, shown on the status page, and pauses pruning by age until the
//! clock has kept time for [`RETENTION_SETTLE`]. It also compares the clock with the feed
//! servers' (each poll's `Date`): a clock found ahead of them, or not yet compared after a
//! start, pauses pruning by age too (`AgePause`). Neither is a fault: `/readyz` stays 200.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::clock::{self, Clock, ClockJump, ClockWatch};
use crate::config::{self, Config, SourceConfig};
use crate::dedup::upkeep;
use crate::fetch::address::AddressPolicy;
use crate::fetch::{ClientError, Fetcher};
use crate::filter::FeedFilter;
use crate::metrics::{Metrics, PollResult};
use crate::model::{Hold, ReloadFailure, SourceState};
use crate::publish::{feed_url, Format, PublishError, Publisher};
use crate::redact::{self, Public};
use crate::refresh::{Pipeline, PollError, PollReport, ServerClock};
use crate::schedule;
use crate::server::{self, AppState};
use crate::service;
use crate::store::{Store, StoreError};
use crate::watcher;

/// What the daemon can be told while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Read the config file again and apply it.
    Reload,
    /// Stop cleanly.
    Shutdown,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("HTTP server failed: {0}")]
    Server(std::io::Error),
    #[error("the store at {0} failed a write and this process cannot open it again (sled still holds the failed database); exiting so that the supervisor restarts feedmux, which loses nothing")]
    StoreStuck(std::path::PathBuf),
}

/// A poll the store failed ([`PollError::is_store_failure`]), not the source.
struct StoreFailed;

/// The parts every task shares.
struct Shared {
    config: Arc<RwLock<Arc<Config>>>,
    filters: RwLock<Arc<Vec<FeedFilter>>>,
    pipeline: Pipeline,
    publisher: Arc<Publisher>,
    metrics: Arc<Metrics>,
    /// Why the last reload was refused, until one succeeds.
    reload_failure: Arc<RwLock<Option<ReloadFailure>>>,
    /// Wakes [`recover_store`] after a write failed in a way only reopening the store clears.
    reopen: tokio::sync::Notify,
    /// Told by [`recover_store`] when only a restart can bring the store back.
    store_stuck: tokio::sync::Notify,
    /// Counts the store coming back: reopened by [`recover_store`], or a write succeeding
    /// after failures. Sources waiting for the store ([`wait_for_store`]) watch it.
    store_back: watch::Sender<u64>,
    /// Set while a [`Health::checkpoint_if_due`](crate::store::Health::checkpoint_if_due) runs.
    checkpointing: Arc<AtomicBool>,
    /// The clock everything is dated by, its jumps, and how it compares with the servers'.
    clock: Arc<ClockWatch>,
    /// Whether the clock was last found wrong against the servers' (logged when it changes).
    clock_wrong: AtomicBool,
    /// When the daemon started (monotonic): pruning by age waits for the clock to be
    /// compared with a server's, at most [`RETENTION_SETTLE`] after this.
    started: tokio::time::Instant,
}

impl Shared {
    fn now(&self) -> DateTime<Utc> {
        self.clock.clock().now()
    }

    /// Reads the clock, and reports a jump since the last look (log, metrics).
    fn check_clock(&self) -> DateTime<Utc> {
        let (now, jump) = self.clock.check();
        if let Some(jump) = jump {
            clock_jumped(&self.metrics, &jump);
        }
        now
    }

    /// Compares the clock with a server's, and logs when it turns wrong or right.
    fn compare_clock(&self, server_clock: &ServerClock) {
        let Some(skew) = self.clock.compare_with_server(
            &server_clock.server,
            server_clock.theirs,
            server_clock.ours,
        ) else {
            return;
        };
        let wrong = skew.is_wrong();
        if self.clock_wrong.swap(wrong, Ordering::AcqRel) == wrong {
            return;
        }
        let ahead_secs = skew.ahead_by.num_seconds();
        if !wrong {
            info!(
                ahead_secs,
                "the system clock agrees with the feed servers' clocks again"
            );
        } else if skew.is_ahead() {
            warn!(
                ahead_secs,
                servers = skew.servers,
                "the system clock is {}: items are not pruned by age while it is ahead; set the clock right (NTP)",
                skew.describe()
            );
        } else {
            warn!(
                ahead_secs,
                servers = skew.servers,
                "the system clock is {}: what is first seen now is dated by it; set the clock right (NTP)",
                skew.describe()
            );
        }
    }

    /// Why pruning by age must wait now, if it must.
    fn age_pause(&self, config: &Config) -> Option<AgePause> {
        let servers = config
            .sources
            .iter()
            .any(|s| s.enabled && matches!(s.url.scheme(), "http" | "https"));
        age_pause(&self.clock, self.started.elapsed(), servers)
    }

    fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn filters(&self) -> Arc<Vec<FeedFilter>> {
        self.filters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Polls one source, counts the result, re-renders its feeds if anything changed, and
    /// answers when the source is next due (`None`: not again, the feed is gone), or, when
    /// the store failed, that it waits for the store ([`wait_for_store`]; `store_waits`
    /// counts the source's polls failed by the store in a row).
    async fn poll(&self, source: &SourceConfig, store_waits: &AtomicU32) -> schedule::Next {
        // Subscribed before the poll: a reopen while it runs ends the wait at once.
        let store_back = self.store_back.subscribe();
        match self.poll_and_plan(source).await {
            Ok(next) => {
                store_waits.store(0, Ordering::Relaxed);
                self.publisher.set_next_poll(&source.name, next);
                schedule::Next::At(next)
            }
            Err(StoreFailed) => {
                let waits = store_waits
                    .fetch_add(1, Ordering::Relaxed)
                    .saturating_add(1);
                let delay = store_retry_delay(waits);
                let retry = self.now() + chrono::Duration::from_std(delay).unwrap_or_default();
                self.publisher.set_next_poll(&source.name, Some(retry));
                tracing::debug!(
                    source = %source.name,
                    delay_ms = delay.as_millis() as u64,
                    "waiting for the store before polling again (not backed off: the store failed, not the source)"
                );
                schedule::Next::Retry(Box::pin(wait_for_store(store_back, delay)))
            }
        }
    }

    /// [`Shared::poll`]'s work: when the source is next due, or [`StoreFailed`].
    async fn poll_and_plan(
        &self,
        source: &SourceConfig,
    ) -> Result<Option<DateTime<Utc>>, StoreFailed> {
        let config = self.config();
        let filters = self.filters();
        let result = self
            .pipeline
            .refresh_source(&config, &filters, source)
            .await;
        match result {
            Ok(report) => {
                self.count(&source.name, &report);
                if report.changed() {
                    self.render_feeds_of(&config, &source.name, report.merged_stories > 0)
                        .await;
                    self.checkpoint_store();
                }
            }
            Err(e) => {
                self.metrics.poll(&source.name, PollResult::Error);
                if let PollError::Store(store_error) = &e {
                    self.store_failed(store_error);
                }
                if e.is_store_failure() {
                    return Err(StoreFailed);
                }
            }
        }
        let state = match self.pipeline.store.source_state(&source.name) {
            Ok(state) => state,
            Err(e) if e.needs_reopen() => {
                error!(source = %source.name, error = %e, "cannot read the source's state");
                return Err(StoreFailed);
            }
            Err(e) => {
                error!(source = %source.name, error = %e, "cannot read the source's state");
                return Ok(Some(
                    self.now()
                        + chrono::Duration::from_std(config.poll.backoff_base).unwrap_or_default(),
                ));
            }
        };
        let now = self.now();
        if state.hold(source.url.as_str(), now) == Some(Hold::Gone) {
            return Ok(None);
        }
        Ok(Some(state.next_poll.unwrap_or_else(|| {
            schedule::next_slot(&source.schedule, now).unwrap_or(now)
        })))
    }

    /// Records a failed write to the store and, when only reopening the store clears the
    /// error, wakes [`recover_store`].
    fn store_failed(&self, e: &StoreError) {
        if self.metrics.store_failed(&e.to_string(), self.now()) {
            error!(error = %e, "the store failed a write; serving what is stored until it recovers");
        }
        if e.needs_reopen() {
            self.reopen.notify_one();
        }
    }

    fn count(&self, source: &str, report: &PollReport) {
        if let Some(server_clock) = &report.server_clock {
            self.compare_clock(server_clock);
        }
        let m = &self.metrics;
        m.poll(
            source,
            if report.same_body {
                PollResult::SameBody
            } else if report.not_modified {
                PollResult::NotModified
            } else {
                PollResult::Ok
            },
        );
        if !report.recovered.is_empty() {
            m.poll_recovered(source);
        }
        if let Some(fault) = m.store_succeeded() {
            self.store_back.send_modify(|n| *n = n.wrapping_add(1));
            info!(
                source,
                since = %fault.since,
                failed_writes = fault.failed_writes,
                reopen_attempts = fault.reopen_attempts,
                "store recovered: writes succeed again"
            );
        }
        Metrics::add(&m.items_new, report.new_items as u64);
        Metrics::add(&m.items_pruned, report.pruned_over_quota);
        Metrics::add(&m.items_updated, report.updated_items as u64);
        Metrics::add(&m.merged_url, report.merged_url as u64);
        Metrics::add(&m.merged_text, report.merged_text as u64);
        Metrics::add(&m.merged_meaning, report.merged_meaning as u64);
    }

    /// Lets the store reopen itself in the background when it has written enough since it
    /// was opened (one at a time; see [`Health::checkpoint_if_due`](crate::store::Health::checkpoint_if_due)).
    fn checkpoint_store(&self) {
        if !self.pipeline.store.checkpoint_is_due()
            || self.checkpointing.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let store = self.pipeline.store.clone();
        let running = self.checkpointing.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = store.checkpoint_if_due() {
                error!(error = %e, "reopening the store for a snapshot failed; it is reopened as after a failed write");
            }
            running.store(false, Ordering::Release);
        });
    }

    /// Renders the feeds of `source` again, or every feed when the poll merged stories (their
    /// other members may be of any source).
    async fn render_feeds_of(&self, config: &Arc<Config>, source: &str, merged_stories: bool) {
        let feeds: Vec<String> = config
            .feeds
            .iter()
            .filter(|f| merged_stories || f.sources.iter().any(|s| s == source))
            .map(|f| f.name.clone())
            .collect();
        let store = self.pipeline.store.clone();
        let publisher = self.publisher.clone();
        let for_render = config.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut changed = Vec::new();
            for feed in feeds {
                if let Some(formats) =
                    publisher.render_when_free(&store, for_render.clone(), &feed)?
                {
                    changed.push((feed, formats));
                }
            }
            Ok::<_, PublishError>(changed)
        })
        .await;
        match result {
            Ok(Ok(changed)) => self.ping_hub(config, changed),
            Ok(Err(e)) => error!(source, error = %e, "cannot render output feeds"),
            Err(e) => error!(source, error = %e, "rendering task failed"),
        }
    }

    /// Tells the WebSub hub, if one is configured, about every feed URL whose bytes changed.
    /// The pings run in the background; a failing hub is logged and changes nothing else.
    fn ping_hub(&self, config: &Config, changed: Vec<(String, Vec<Format>)>) {
        let Some(websub) = &config.websub else {
            return;
        };
        for (feed, formats) in changed {
            for format in formats {
                let topic = feed_url(config, &feed, format);
                let hub = websub.hub.clone();
                let fetcher = self.pipeline.fetcher.clone();
                tokio::spawn(async move {
                    match fetcher.publish_to_hub(&hub, &topic).await {
                        Ok(status) => {
                            info!(hub = %Public(&hub), topic, status, "told the WebSub hub")
                        }
                        Err(e) => {
                            warn!(hub = %Public(&hub), topic, error = %e, "WebSub publish ping failed")
                        }
                    }
                });
            }
        }
    }
}

/// Rewrites the item records of a store written before store version 2 compressed (once: a
/// store whose records are all compressed is left alone), telling the service manager it
/// is still starting as it goes and saying in the log what it did. Returns how many records
/// were rewritten, or `None` when there was nothing to do.
pub fn upgrade_item_records(store: &Store) -> Result<Option<usize>, StoreError> {
    if !store.items_to_compress()? {
        return Ok(None);
    }
    let started = std::time::Instant::now();
    let rewritten = store.compress_items(&mut |seen, total| {
        crate::service::still_starting(&format!(
            "upgrading the store: compressing items, {seen} of {total}"
        ));
    })?;
    tracing::info!(
        items = rewritten,
        took_ms = started.elapsed().as_millis() as u64,
        "compressed the items of a store written by an older feedmux (store version 2)"
    );
    Ok(Some(rewritten))
}

/// [`backfill_meanings`] on a blocking thread, its error logged: the daemon serves and polls
/// meanwhile.
fn spawn_backfill(store: Store, dedup: crate::dedup::DedupConfig, now: DateTime<Utc>) {
    if dedup.model.is_none() {
        return;
    }
    tokio::task::spawn_blocking(move || {
        if let Err(e) = upkeep::backfill_meanings(&store, &dedup, now) {
            warn!(error = %e, "could not give recent items a meaning: they are matched by their words");
        }
    });
}

/// Opens the configured store: `[storage] path`, with a cache of `cache_size`.
pub fn open_store(config: &Config) -> Result<Store, StoreError> {
    Store::open_with_cache(&config.storage.path, config.storage.cache_bytes)
}

/// Makes the store's output-feed indexes match the config: feeds whose selection rules
/// changed (or that are new) are rebuilt, feeds that left the config are dropped.
pub fn sync_feed_indexes(store: &Store, config: &Config) -> Result<(), StoreError> {
    for feed in &config.feeds {
        let fingerprint = feed.selection_fingerprint();
        if store.feed_fingerprint(&feed.name)?.as_deref() == Some(fingerprint.as_str()) {
            continue;
        }
        let filter = FeedFilter::new(feed);
        let count =
            store.rebuild_feed_index(&feed.name, &fingerprint, &|item| filter.selects(item))?;
        info!(feed = %feed.name, items = count, "built output feed index");
    }
    for name in store.indexed_feeds()? {
        if config.feed(&name).is_none() {
            store.drop_feed_index(&name)?;
            info!(feed = %name, "dropped index of a feed no longer configured");
        }
    }
    Ok(())
}

fn filters_of(config: &Config) -> Vec<FeedFilter> {
    config.feeds.iter().map(FeedFilter::new).collect()
}

/// Logs and counts a jump of the wall clock.
fn clock_jumped(metrics: &Metrics, jump: &ClockJump) {
    let jump_secs = jump.seconds();
    if jump.forward() {
        warn!(
            jump_secs,
            at = %jump.at,
            "clock jumped {}: polling goes on by the schedule; items are not pruned by age until the clock has kept time for {}",
            jump.describe(),
            clock::human(chrono::Duration::from_std(RETENTION_SETTLE).unwrap_or_default())
        );
    } else {
        warn!(
            jump_secs,
            at = %jump.at,
            "clock jumped {}: polling goes on by the schedule; what is first seen now is dated by the new clock",
            jump.describe()
        );
    }
    metrics.clock_jumped(jump.forward());
}

/// How often the daemon compares the wall clock with the monotonic clock.
pub const CLOCK_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// After a forward jump, items are not pruned by age until the clock has kept time this long
/// (a wrong step is usually corrected within minutes; a VM resumed after days keeps its time).
pub const RETENTION_SETTLE: std::time::Duration = std::time::Duration::from_secs(3600);
/// How long the status page shows a jump of the clock.
pub const CLOCK_JUMP_SHOWN: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Runs the daemon until a [`Control::Shutdown`] arrives or `control` closes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    control: mpsc::Receiver<Control>,
) -> Result<(), DaemonError> {
    run_with_clock(config, listener, control, clock::system()).await
}

/// [`run`], with every time of day read from `clock` (tests step a [`clock::SteppedClock`]).
pub async fn run_with_clock(
    config: Config,
    listener: TcpListener,
    mut control: mpsc::Receiver<Control>,
    clock: Arc<dyn Clock>,
) -> Result<(), DaemonError> {
    let store = open_store(&config)?;
    upgrade_item_records(&store)?;
    upkeep::upgrade_text_index(&store, &mut crate::service::still_starting)?;
    store.keep_recent_in_memory(config.dedup.memory_items);
    let ready = Arc::new(AtomicBool::new(false));
    sync_feed_indexes(&store, &config)?;
    let publisher = Arc::new(Publisher::new());
    // Compressed once the daemon serves: until then (a fraction of a second) uncompressed.
    publisher.render_all_uncompressed(&store, &config)?;
    let metrics = Arc::new(Metrics::default());
    let shared = Arc::new(Shared {
        filters: RwLock::new(Arc::new(filters_of(&config))),
        pipeline: Pipeline {
            fetcher: fetcher_for(&config)?,
            store: store.clone(),
            metrics: metrics.clone(),
            clock: clock.clone(),
            ingest_slots: crate::refresh::ingest_slots(),
        },
        config: Arc::new(RwLock::new(Arc::new(config))),
        publisher: publisher.clone(),
        metrics,
        reload_failure: Arc::new(RwLock::new(None)),
        reopen: tokio::sync::Notify::new(),
        store_stuck: tokio::sync::Notify::new(),
        store_back: watch::channel(0).0,
        checkpointing: Arc::new(AtomicBool::new(false)),
        clock: Arc::new(ClockWatch::new(clock)),
        clock_wrong: AtomicBool::new(false),
        started: tokio::time::Instant::now(),
    });
    let app = server::router(AppState {
        config: shared.config.clone(),
        store: store.clone(),
        publisher,
        metrics: shared.metrics.clone(),
        ready: ready.clone(),
        reload_failure: shared.reload_failure.clone(),
        clock: shared.clock.clone(),
    });
    let (server_stop_tx, mut server_stop_rx) = watch::channel(false);
    let addr = listener.local_addr().map_err(DaemonError::Server)?;
    let server = tokio::spawn(async move {
        crate::serve::serve(listener, app, crate::serve::Limits::default(), async move {
            let _ = server_stop_rx.wait_for(|s| *s).await;
        })
        .await
    });
    info!(%addr, "serving output feeds");

    let mut scheduler = Scheduler::start(&shared);
    let (pruner_stop, pruner_stop_rx) = watch::channel(false);
    let pruner = tokio::spawn(prune_loop(shared.clone(), pruner_stop_rx.clone()));
    let recovery = tokio::spawn(recover_store(shared.clone(), pruner_stop_rx.clone()));
    let clock_watch = tokio::spawn(watch_clock(shared.clone(), pruner_stop_rx));
    ready.store(true, Ordering::Release);
    service::ready(&serving_status(&shared.config(), addr));
    let compressing = shared.publisher.clone();
    tokio::task::spawn_blocking(move || compressing.compress_all());
    spawn_backfill(
        shared.pipeline.store.clone(),
        shared.config().dedup.clone(),
        shared.clock.clock().now(),
    );

    let (file_changed, mut file_changes) = mpsc::channel(1);
    let _watch = match watcher::config_file(&shared.config().path, file_changed) {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(error = %e, "the config file is not watched; SIGHUP still reloads it");
            None
        }
    };
    // The watchdog is pinged from this loop, so a loop that stops turning stops the pings.
    let mut watchdog = service::watchdog_interval().map(tokio::time::interval);
    let mut stuck = false;
    loop {
        let message = tokio::select! {
            message = control.recv() => message,
            () = shared.store_stuck.notified() => {
                stuck = true;
                None
            }
            Some(()) = file_changes.recv() => {
                info!("the config file changed: reloading it");
                Some(Control::Reload)
            }
            _ = tick(&mut watchdog) => {
                service::watchdog();
                continue;
            }
        };
        match message {
            None | Some(Control::Shutdown) => break,
            Some(Control::Reload) => {
                service::reloading();
                // A large feed-index rebuild can take a while: the watchdog is still pinged.
                let work = async {
                    if let Some(new) = reload(&shared).await {
                        scheduler.apply(&shared, &new).await;
                    }
                };
                tokio::pin!(work);
                loop {
                    tokio::select! {
                        () = &mut work => break,
                        _ = tick(&mut watchdog) => service::watchdog(),
                    }
                }
                match &*shared
                    .reload_failure
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                {
                    None => service::ready(&serving_status(&shared.config(), addr)),
                    Some(failure) => {
                        service::ready(&format!(
                            "{}; config reload refused: {}",
                            serving_status(&shared.config(), addr),
                            failure.errors.first().map(String::as_str).unwrap_or("")
                        ));
                    }
                }
            }
        }
    }
    service::stopping();
    info!("stopping: waiting for polls in flight");
    let _ = pruner_stop.send(true);
    scheduler.stop().await;
    if let Err(e) = pruner.await {
        error!(error = %e, "pruning task failed");
    }
    if let Err(e) = recovery.await {
        error!(error = %e, "store recovery task failed");
    }
    if let Err(e) = clock_watch.await {
        error!(error = %e, "clock watching task failed");
    }
    let _ = server_stop_tx.send(true);
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(DaemonError::Server(e)),
        Err(e) => error!(error = %e, "server task failed"),
    }
    if stuck {
        return Err(DaemonError::StoreStuck(store.path().to_owned()));
    }
    store.flush()?;
    info!("stopped cleanly");
    Ok(())
}

/// Compares the wall clock with the monotonic one every [`CLOCK_CHECK_INTERVAL`] until `stop`,
/// reporting jumps ([`Shared::check_clock`]).
async fn watch_clock(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CLOCK_CHECK_INTERVAL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        shared.check_clock();
    }
}

/// Why pruning by age waits: items merely "old" by a wrong clock must not go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AgePause {
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
    fn describe(&self) -> String {
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
fn age_pause(
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
fn retention_cutoff(
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
async fn prune_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
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
async fn drop_aged_text_index(shared: &Shared, config: &Config, now: DateTime<Utc>) {
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
fn store_retry_delay(waits: u32) -> std::time::Duration {
    STORE_RETRY_FIRST_DELAY
        .saturating_mul(1 << waits.saturating_sub(1).min(16))
        .min(STORE_RETRY_MAX_DELAY)
}

/// Waits `delay`, or less: until the store comes back (reopened, or a write succeeded; see
/// `Shared::store_back`) after `store_back` was subscribed.
async fn wait_for_store(mut store_back: watch::Receiver<u64>, delay: std::time::Duration) {
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
fn reopen_delay(attempt: u32) -> std::time::Duration {
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
async fn recover_store(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
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

/// Waits for the next watchdog tick; never, when there is no watchdog.
async fn tick(watchdog: &mut Option<tokio::time::Interval>) {
    match watchdog {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The one-line status shown by `systemctl status`, with the address actually bound.
fn serving_status(config: &Config, addr: std::net::SocketAddr) -> String {
    format!(
        "serving {} output feeds from {} sources on {addr}",
        config.feeds.len(),
        config.sources.len(),
    )
}

/// Reads the config file again and, if it is valid, makes it the running config and brings
/// the output feeds in line with it (indexes of changed rules rebuilt, every feed
/// re-rendered). Returns the new config when it was applied; the caller reschedules sources.
/// A refused config is logged and kept in `reload_failure` for the status page.
async fn reload(shared: &Arc<Shared>) -> Option<Arc<Config>> {
    let current = shared.config();
    let refuse = |errors: Vec<String>| {
        // Config errors are redacted where they are made; whatever else is said here too.
        let errors: Vec<String> = errors
            .iter()
            .map(|e| redact::text(e).into_owned())
            .collect();
        for e in &errors {
            error!(error = %e, "config reload refused; keeping the running config");
        }
        *shared
            .reload_failure
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(ReloadFailure {
            at: shared.now(),
            errors,
        });
        None
    };
    let new = match config::load(&current.path) {
        Ok(c) => c,
        Err(errors) => return refuse(errors.0.iter().map(|e| e.to_string()).collect()),
    };
    for change in restart_only_changes(&current, &new) {
        warn!("{change} changes only on restart");
    }
    let store = shared.pipeline.store.clone();
    if new.dedup.memory_items != current.dedup.memory_items {
        store.keep_recent_in_memory(new.dedup.memory_items);
    }
    if new.dedup.model != current.dedup.model {
        spawn_backfill(store.clone(), new.dedup.clone(), shared.clock.clock().now());
    }
    let publisher = shared.publisher.clone();
    let new = Arc::new(new);
    let for_render = new.clone();
    let rebuilt = tokio::task::spawn_blocking(move || {
        sync_feed_indexes(&store, &for_render)?;
        publisher.render_all(&store, &for_render)?;
        let changed: Vec<(String, Vec<Format>)> = for_render
            .feeds
            .iter()
            .filter_map(|f| {
                publisher
                    .get(&f.name)
                    .map(|r| (f.name.clone(), r.changed.clone()))
            })
            .collect();
        Ok::<_, DaemonError>(changed)
    })
    .await;
    match rebuilt {
        Ok(Ok(changed)) => shared.ping_hub(&new, changed),
        Ok(Err(e)) => {
            return refuse(vec![format!(
                "rebuilding the output feeds for the new config failed: {e}"
            )])
        }
        Err(e) => return refuse(vec![format!("config reload task failed: {e}")]),
    }
    shared
        .pipeline
        .fetcher
        .set_address_policy(AddressPolicy::for_config(&new));
    *shared.filters.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(filters_of(&new));
    *shared.config.write().unwrap_or_else(|p| p.into_inner()) = new.clone();
    *shared
        .reload_failure
        .write()
        .unwrap_or_else(|p| p.into_inner()) = None;
    info!(
        sources = new.sources.len(),
        feeds = new.feeds.len(),
        "config reloaded"
    );
    Some(new)
}

/// The HTTP client of `config`: its `[poll]` limits, its sources' and hub's hosts trusted.
fn fetcher_for(config: &Config) -> Result<Fetcher, DaemonError> {
    let fetcher = Fetcher::new(&config.poll)?;
    fetcher.set_address_policy(AddressPolicy::for_config(config));
    Ok(fetcher)
}

/// The settings that a reload cannot change in a running daemon, named when they differ.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&old.poll, &new.poll);
    let mut changes = Vec::new();
    if old.server.listen != new.server.listen {
        changes.push("[server] listen");
    }
    if old.storage.path != new.storage.path {
        changes.push("[storage] path");
    }
    if old.storage.cache_bytes != new.storage.cache_bytes {
        changes.push("[storage] cache_size");
    }
    if (
        a.connect_timeout,
        a.timeout,
        a.idle_timeout,
        a.max_body_bytes,
    ) != (
        b.connect_timeout,
        b.timeout,
        b.idle_timeout,
        b.max_body_bytes,
    ) || (a.per_host_concurrency, a.per_host_interval)
        != (b.per_host_concurrency, b.per_host_interval)
    {
        changes.push("[poll] connection settings (timeouts, body size, per-host limits)");
    }
    if old.log_level != new.log_level {
        changes.push("[log] level");
    }
    changes
}

/// One polling task of one source.
struct SourceTask {
    /// The source as this task polls it; a reload that changes it restarts the task.
    source: SourceConfig,
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

/// One task per source, under one concurrency limit.
struct Scheduler {
    limit: Arc<Semaphore>,
    concurrency: usize,
    tasks: HashMap<String, SourceTask>,
    /// Tasks of removed sources, told to stop, finishing a poll in flight.
    retiring: Vec<tokio::task::JoinHandle<()>>,
}

impl Scheduler {
    fn start(shared: &Arc<Shared>) -> Scheduler {
        let config = shared.config();
        let mut scheduler = Scheduler {
            limit: Arc::new(Semaphore::new(config.poll.concurrency)),
            concurrency: config.poll.concurrency,
            tasks: HashMap::new(),
            retiring: Vec::new(),
        };
        for source in &config.sources {
            scheduler.spawn(shared, source.clone(), None, false);
        }
        scheduler
    }

    /// Starts polling `source`, once `after` (the source's previous task, told to stop) has
    /// finished its poll in flight; `rescheduled`: its schedule changed, so a next poll stored
    /// under the old schedule no longer counts.
    fn spawn(
        &mut self,
        shared: &Arc<Shared>,
        source: SourceConfig,
        after: Option<tokio::task::JoinHandle<()>>,
        rescheduled: bool,
    ) {
        let (stop, stop_rx) = watch::channel(false);
        let shared = shared.clone();
        let limit = self.limit.clone();
        let schedule = source.schedule.clone();
        let polled = Arc::new(source.clone());
        let handle = tokio::spawn(async move {
            if let Some(previous) = after {
                let _ = previous.await;
            }
            let mut state = shared
                .pipeline
                .store
                .source_state(&polled.name)
                .unwrap_or_default();
            if rescheduled {
                state.next_poll = None;
            }
            let first = first_poll(&polled, &state, shared.now());
            shared.publisher.set_next_poll(&polled.name, first);
            let clock = shared.clock.clock().clone();
            let store_waits = Arc::new(AtomicU32::new(0));
            schedule::run_source(schedule, clock, first, limit, stop_rx, || {
                let (shared, source, store_waits) =
                    (shared.clone(), polled.clone(), store_waits.clone());
                async move { shared.poll(&source, &store_waits).await }
            })
            .await;
        });
        self.tasks.insert(
            source.name.clone(),
            SourceTask {
                source,
                stop,
                handle,
            },
        );
    }

    /// Brings the tasks in line with `config`: sources that left it stop being polled (their
    /// items stay), new ones start (a never-polled source is due at once), changed ones
    /// (URL, schedule, enabled, tags, ...) restart with their new settings; the others go on
    /// untouched. A polling task in the middle of a poll finishes it first.
    async fn apply(&mut self, shared: &Arc<Shared>, config: &Config) {
        if config.poll.concurrency != self.concurrency {
            info!(
                concurrency = config.poll.concurrency,
                "[poll] concurrency changed: restarting every source's task"
            );
            self.stop().await;
            *self = Scheduler::start(shared);
            return;
        }
        // Stopped tasks are not waited for here (a poll in flight may take until its
        // timeout): a changed source's new task waits for its old one, a removed source's
        // task is kept in `retiring` until it ends.
        let mut stopping: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        let mut rescheduled = Vec::new();
        let names: Vec<String> = self.tasks.keys().cloned().collect();
        for name in names {
            let keep = match config.source(&name) {
                None => {
                    info!(source = %name, "source removed from the config: no longer polled; its items stay");
                    false
                }
                Some(new) if self.tasks.get(&name).is_some_and(|t| t.source != *new) => {
                    info!(source = %name, schedule = %new.schedule.text, "source changed: rescheduled");
                    if self
                        .tasks
                        .get(&name)
                        .is_some_and(|t| t.source.schedule != new.schedule)
                    {
                        rescheduled.push(name.clone());
                    }
                    false
                }
                Some(_) => true,
            };
            if !keep {
                if let Some(task) = self.tasks.remove(&name) {
                    let _ = task.stop.send(true);
                    stopping.insert(name, task.handle);
                }
            }
        }
        for source in &config.sources {
            if !self.tasks.contains_key(&source.name) {
                if shared
                    .pipeline
                    .store
                    .source_state(&source.name)
                    .is_ok_and(|s| s.last_poll.is_none())
                {
                    info!(source = %source.name, "new source: polling it now");
                }
                let previous = stopping.remove(&source.name);
                self.spawn(
                    shared,
                    source.clone(),
                    previous,
                    rescheduled.contains(&source.name),
                );
            }
        }
        self.retiring.retain(|h| !h.is_finished());
        self.retiring.extend(stopping.into_values());
    }

    async fn stop(&mut self) {
        for task in self.tasks.values() {
            let _ = task.stop.send(true);
        }
        for (_, task) in self.tasks.drain() {
            let _ = task.handle.await;
        }
        for handle in self.retiring.drain(..) {
            let _ = handle.await;
        }
    }
}

/// When a source is first polled after start-up or a reload: never if it is disabled or its
/// feed is gone; not
/// before a backoff or Retry-After ends, nor before a next poll already pushed later by the
/// publisher's hints; else at its schedule's first due time. A clock behind the source's last
/// poll (set back since) reads the stored times as if that poll had just happened, instead of
/// waiting for the clock to catch up.
fn first_poll(
    source: &SourceConfig,
    state: &SourceState,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let rebased;
    let state = match state.last_poll {
        Some(last) if last > now => {
            let shift = now - last;
            let mut moved = state.clone();
            for t in [
                &mut moved.last_poll,
                &mut moved.next_poll,
                &mut moved.hold_until,
            ] {
                *t = t.and_then(|t| t.checked_add_signed(shift));
            }
            rebased = moved;
            &rebased
        }
        _ => state,
    };
    match hold_of(source, state, now) {
        Some(Hold::Gone | Hold::Disabled) => return None,
        Some(Hold::Until(t)) => return Some(t),
        None => {}
    }
    let due = schedule::first_due(&source.schedule, state.last_poll, now);
    Some(match state.next_poll {
        Some(next) if next > due && state.last_poll.is_some() => next,
        _ => due,
    })
}

/// Why `source` may not be polled at `now`, if it may not.
fn hold_of(source: &SourceConfig, state: &SourceState, now: DateTime<Utc>) -> Option<Hold> {
    if !source.enabled {
        return Some(Hold::Disabled);
    }
    state.hold(source.url.as_str(), now)
}

/// What happened to one source in `poll_once`.
pub enum Polled {
    Done(Result<PollReport, PollError>),
    /// Not polled: gone, or in backoff or under a Retry-After (see `force`).
    Skipped(Hold),
}

/// The result of polling each source once.
pub struct PollOutcome {
    pub source: String,
    pub polled: Polled,
}

/// Polls the given sources once (all when `names` is empty), concurrently within the
/// configured limit. Sources that are disabled, gone, in backoff or under a Retry-After are
/// skipped unless `force`. Does not render; output feeds read the store.
pub async fn poll_once(
    config: &Config,
    names: &[String],
    force: bool,
) -> Result<Vec<PollOutcome>, DaemonError> {
    let sweeper = Sweeper::open(config)?;
    let outcomes = sweeper.sweep(names, force).await?;
    // As the daemon does after polls that stored something: the next open stays quick.
    if let Err(e) = sweeper.store.checkpoint_if_due() {
        warn!(error = %e, "reopening the store for a snapshot failed");
    }
    Ok(outcomes)
}

/// Polls configured sources on demand with one open store: [`poll_once`] (the `feedmux poll`
/// command) sweeps once; the benchmark sweeps many times, as the daemon polls with its store
/// kept open.
pub struct Sweeper {
    store: Store,
    pipeline: Pipeline,
    filters: Arc<Vec<FeedFilter>>,
    config: Arc<Config>,
}

impl Sweeper {
    /// Opens the configured store and brings its output-feed indexes up to date.
    pub fn open(config: &Config) -> Result<Sweeper, DaemonError> {
        let store = open_store(config)?;
        upgrade_item_records(&store)?;
        upkeep::upgrade_text_index(&store, &mut crate::service::still_starting)?;
        store.keep_recent_in_memory(config.dedup.memory_items);
        sync_feed_indexes(&store, config)?;
        let pipeline = Pipeline {
            fetcher: fetcher_for(config)?,
            store: store.clone(),
            metrics: Arc::new(Metrics::default()),
            clock: clock::system(),
            ingest_slots: crate::refresh::ingest_slots(),
        };
        Ok(Sweeper {
            store,
            pipeline,
            filters: Arc::new(filters_of(config)),
            config: Arc::new(config.clone()),
        })
    }

    /// Polls the given sources once each (all when `names` is empty), at most
    /// `poll.concurrency` at a time, and flushes the store. Sources that are disabled, gone,
    /// in backoff or under a Retry-After are skipped unless `force`.
    pub async fn sweep(
        &self,
        names: &[String],
        force: bool,
    ) -> Result<Vec<PollOutcome>, DaemonError> {
        let limit = Arc::new(Semaphore::new(self.config.poll.concurrency));
        let mut tasks = JoinSet::new();
        for source in self
            .config
            .sources
            .iter()
            .filter(|s| names.is_empty() || names.contains(&s.name))
        {
            if !force {
                let state = self.store.source_state(&source.name)?;
                if let Some(hold) = hold_of(source, &state, Utc::now()) {
                    let name = source.name.clone();
                    tasks.spawn(async move {
                        PollOutcome {
                            source: name,
                            polled: Polled::Skipped(hold),
                        }
                    });
                    continue;
                }
            }
            // The permit is taken before the task starts: at most `concurrency` polls exist
            // at once, however many sources there are.
            let Ok(permit) = limit.clone().acquire_owned().await else {
                break;
            };
            let (pipeline, filters, config, source) = (
                self.pipeline.clone(),
                self.filters.clone(),
                self.config.clone(),
                source.clone(),
            );
            tasks.spawn(async move {
                let _permit = permit;
                let result = pipeline.refresh_source(&config, &filters, &source).await;
                PollOutcome {
                    source: source.name,
                    polled: Polled::Done(result),
                }
            });
        }
        let mut outcomes = Vec::new();
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(outcome) => outcomes.push(outcome),
                Err(e) => error!(error = %e, "poll task failed"),
            }
        }
        outcomes.sort_by(|a, b| a.source.cmp(&b.source));
        self.store.flush()?;
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn hourly_source() -> SourceConfig {
        let text = "[[source]]\nname = \"a\"\nurl = \"https://a.example/feed\"\nschedule = \"0 0 * * * *\"\n";
        let config = config::parse(std::path::Path::new("feedmux.toml"), text).unwrap();
        config.sources[0].clone()
    }

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, h, m, 0).unwrap()
    }

    /// The clock was set back a day since the last poll (10:30, next at 11:00, held until
    /// 10:50 by a backoff): after a restart or reload the source is due within the hour by
    /// the new clock, the hold kept for what was left of it, not a day later.
    #[test]
    fn a_clock_set_back_does_not_hold_a_source_until_it_catches_up() {
        let source = hourly_source();
        let state = SourceState {
            last_poll: Some(at(10, 30)),
            next_poll: Some(at(11, 0)),
            hold_until: Some(at(10, 50)),
            ..SourceState::default()
        };
        let day = chrono::Duration::days(1);
        // A day behind, at 10:40 of the day before: the last poll is read as just now, so
        // the hold ends 20 min later (as it would have), and then the next poll 30 min after.
        let ten = chrono::Duration::minutes(10);
        assert_eq!(
            first_poll(&source, &state, at(10, 40) - day),
            Some(at(10, 50) - day + ten)
        );
        let unheld = SourceState {
            hold_until: None,
            ..state.clone()
        };
        assert_eq!(
            first_poll(&source, &unheld, at(10, 40) - day),
            Some(at(11, 0) - day + ten)
        );
        // Without a jump, as before: the hold, then the stored next poll.
        assert_eq!(first_poll(&source, &state, at(10, 40)), Some(at(10, 50)));
        assert_eq!(first_poll(&source, &state, at(10, 55)), Some(at(11, 0)));
    }

    /// After a forward jump, the age cutoff of retention waits for the clock to settle;
    /// without one it is `retention_days` before now.
    #[tokio::test(start_paused = true)]
    async fn retention_does_not_prune_by_age_after_a_forward_jump_until_the_clock_settles() {
        let clock = Arc::new(clock::SteppedClock::new(at(10, 0)));
        let watch = ClockWatch::new(clock.clone());
        // Long after the start, so that only the jump can pause it.
        let cutoff = |watch: &ClockWatch| {
            let (now, _) = watch.check();
            let paused = age_pause(watch, RETENTION_SETTLE, true);
            retention_cutoff(Some(3), now, paused.as_ref())
        };
        assert_eq!(cutoff(&watch), Some(at(10, 0) - chrono::Duration::days(3)));
        clock.step(chrono::Duration::days(30));
        assert_eq!(cutoff(&watch), None, "the sweep right after the jump");
        tokio::time::sleep(RETENTION_SETTLE / 2).await;
        assert_eq!(cutoff(&watch), None, "half an hour later");
        // A backward jump (the forward one undone) does not end the wait early.
        clock.step(-chrono::Duration::days(30));
        assert_eq!(cutoff(&watch), None);
        tokio::time::sleep(RETENTION_SETTLE / 2 + std::time::Duration::from_secs(1)).await;
        let now = clock.now();
        assert_eq!(cutoff(&watch), Some(now - chrono::Duration::days(3)));
        assert_eq!(retention_cutoff(None, now, None), None);
    }

    /// Pruning by age waits at start until the clock has been compared with a server's (at
    /// most `RETENTION_SETTLE`), and while the servers find it ahead; not while it is behind.
    #[tokio::test(start_paused = true)]
    async fn pruning_by_age_waits_for_the_servers_to_vouch_for_the_clock() {
        let clock = Arc::new(clock::SteppedClock::new(at(10, 0)));
        let watch = ClockWatch::new(clock.clone());
        let just_started = std::time::Duration::from_secs(5);
        assert_eq!(
            age_pause(&watch, just_started, true),
            Some(AgePause::Unchecked)
        );
        assert_eq!(
            age_pause(&watch, RETENTION_SETTLE, true),
            None,
            "no server in an hour"
        );
        assert_eq!(
            age_pause(&watch, just_started, false),
            None,
            "only file: sources: no server to ask"
        );
        let ours = clock.now();
        let servers = |behind: chrono::Duration| {
            for server in ["a:443", "b:443", "c:443"] {
                watch.compare_with_server(server, ours - behind, ours);
            }
        };
        servers(chrono::Duration::days(2));
        let paused = age_pause(&watch, just_started, true);
        assert!(
            matches!(paused, Some(AgePause::Ahead(s)) if s.servers == 3),
            "{paused:?}"
        );
        assert_eq!(retention_cutoff(Some(3), ours, paused.as_ref()), None);
        servers(chrono::Duration::seconds(1));
        assert_eq!(age_pause(&watch, just_started, true), None);
        servers(-chrono::Duration::days(2));
        assert_eq!(
            age_pause(&watch, just_started, true),
            None,
            "behind: items look younger"
        );
    }
}
