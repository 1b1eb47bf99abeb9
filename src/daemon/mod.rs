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
//!
//! Here: the wiring ([`run_with_clock`]), the clock watch, upgrades at start. Beside it,
//! one file per job: `tasks` (the per-source poll tasks and the `Scheduler` that starts and
//! stops them), `reload`, `retention` (the prune loop), `recovery` (a failed store) and
//! `sweep` (the CLI's [`poll_once`] and [`Sweeper`]).

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
use crate::http::routes::{self, AppState};
use crate::metrics::{Metrics, PollResult};
use crate::model::{Hold, ReloadFailure, SourceState};
use crate::publish::{feed_url, Format, PublishError, Publisher};
use crate::redact::{self, Public};
use crate::refresh::{Pipeline, PollError, PollReport, ServerClock};
use crate::schedule;
use crate::store::{Store, StoreError};
use crate::systemd;
use crate::watcher;

mod claims;
mod instances;
mod recovery;
mod reload;
mod retention;
mod sweep;
mod tasks;
use claims::*;
use instances::*;
use recovery::*;
use reload::*;
use retention::*;
pub use sweep::{poll_once, PollOutcome, Polled, Sweeper};
use tasks::*;

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
}

/// Moves the item records of a store written before store version 4 into its record log,
/// compressing those written before version 2 (once: a store whose records are all there is
/// left alone), telling the service manager it
/// is still starting as it goes and saying in the log what it did. Returns how many records
/// were rewritten, or `None` when there was nothing to do.
pub fn upgrade_item_records(store: &Store) -> Result<Option<usize>, StoreError> {
    if !store.items_to_compress()? {
        return Ok(None);
    }
    let started = std::time::Instant::now();
    let rewritten = store.compress_items(&mut |seen, total| {
        crate::systemd::still_starting(&format!(
            "upgrading the store: moving item records, {seen} of {total}"
        ));
    })?;
    tracing::info!(
        items = rewritten,
        took_ms = started.elapsed().as_millis() as u64,
        "moved the item records of a store written by an older feedmux into its record log (store version 4)"
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

/// Opens the configured store: the engine `[storage]` names ([`Store::open_configured`]).
pub fn open_store(config: &Config) -> Result<Store, StoreError> {
    Store::open_configured(&config.storage)
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
    control: mpsc::Receiver<Control>,
    clock: Arc<dyn Clock>,
) -> Result<(), DaemonError> {
    run_with_publisher(config, listener, control, clock, Arc::new(Publisher::new())).await
}

/// [`run_with_clock`], serving from `publisher` (tests hold its search slots to see the daemon
/// refuse a search when all are taken).
pub async fn run_with_publisher(
    config: Config,
    listener: TcpListener,
    mut control: mpsc::Receiver<Control>,
    clock: Arc<dyn Clock>,
    publisher: Arc<Publisher>,
) -> Result<(), DaemonError> {
    let store = open_store(&config)?;
    upgrade_item_records(&store)?;
    upkeep::upgrade_text_index(&store, &mut crate::systemd::still_starting)?;
    store.keep_recent_in_memory(config.dedup.memory_items);
    let ready = Arc::new(AtomicBool::new(false));
    sync_feed_indexes(&store, &config)?;
    publisher.render_all(&store, &config)?;
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
    let app = routes::router(AppState {
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
        crate::http::listener::serve(
            listener,
            app,
            crate::http::listener::Limits::default(),
            async move {
                let _ = server_stop_rx.wait_for(|s| *s).await;
            },
        )
        .await
    });
    info!(%addr, "serving output feeds");

    let mut scheduler = Scheduler::start(&shared);
    follow_other_instances(&shared);
    let (pruner_stop, pruner_stop_rx) = watch::channel(false);
    let pruner = tokio::spawn(prune_loop(shared.clone(), pruner_stop_rx.clone()));
    let recovery = tokio::spawn(recover_store(shared.clone(), pruner_stop_rx.clone()));
    let clock_watch = tokio::spawn(watch_clock(shared.clone(), pruner_stop_rx));
    ready.store(true, Ordering::Release);
    systemd::ready(&serving_status(&shared.config(), addr));
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
    let mut watchdog = systemd::watchdog_interval().map(tokio::time::interval);
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
                systemd::watchdog();
                continue;
            }
        };
        match message {
            None | Some(Control::Shutdown) => break,
            Some(Control::Reload) => {
                systemd::reloading();
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
                        _ = tick(&mut watchdog) => systemd::watchdog(),
                    }
                }
                match &*shared
                    .reload_failure
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                {
                    None => systemd::ready(&serving_status(&shared.config(), addr)),
                    Some(failure) => {
                        systemd::ready(&format!(
                            "{}; config reload refused: {}",
                            serving_status(&shared.config(), addr),
                            failure.errors.first().map(String::as_str).unwrap_or("")
                        ));
                    }
                }
            }
        }
    }
    systemd::stopping();
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
