//! The daemon: wires the stages together and runs them until told to stop.
//!
//! [`run`] opens the store, brings the output-feed indexes in line with the config, renders
//! every output feed, serves HTTP on the listener it is given, and polls each source on its
//! schedule. [`Control`] messages reload the config (validated first; an invalid one leaves the
//! running config in place) or stop cleanly: polls in flight finish, the server stops, the
//! store is flushed. [`poll_once`] is the same pipeline without the server, for `feedmux poll`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::config::{self, Config, SourceConfig};
use crate::fetch::{ClientError, Fetcher};
use crate::filter::FeedFilter;
use crate::metrics::Metrics;
use crate::model::{Hold, SourceState};
use crate::publish::{PublishError, Publisher};
use crate::refresh::{Pipeline, PollError, PollReport};
use crate::schedule;
use crate::server::{self, AppState};
use crate::store::{Store, StoreError};

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
}

/// The parts every task shares.
struct Shared {
    config: Arc<RwLock<Arc<Config>>>,
    filters: RwLock<Arc<Vec<FeedFilter>>>,
    pipeline: Pipeline,
    publisher: Arc<Publisher>,
    metrics: Arc<Metrics>,
}

impl Shared {
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
    /// answers when the source is next due (`None`: not again, the feed is gone).
    async fn poll(&self, source: &SourceConfig) -> Option<DateTime<Utc>> {
        let config = self.config();
        let filters = self.filters();
        let result = self
            .pipeline
            .refresh_source(&config, &filters, source)
            .await;
        match result {
            Ok(report) => {
                self.count(&report);
                if report.changed() {
                    self.render_feeds_of(&config, &source.name).await;
                }
            }
            Err(_) => Metrics::add(&self.metrics.polls_failed, 1),
        }
        let state = match self.pipeline.store.source_state(&source.name) {
            Ok(state) => state,
            Err(e) => {
                error!(source = %source.name, error = %e, "cannot read the source's state");
                return Some(
                    Utc::now()
                        + chrono::Duration::from_std(config.poll.backoff_base).unwrap_or_default(),
                );
            }
        };
        if state.hold(source.url.as_str(), Utc::now()) == Some(Hold::Gone) {
            return None;
        }
        Some(state.next_poll.unwrap_or_else(|| {
            schedule::next_slot(&source.schedule, Utc::now()).unwrap_or_else(Utc::now)
        }))
    }

    fn count(&self, report: &PollReport) {
        let m = &self.metrics;
        if report.not_modified {
            Metrics::add(&m.polls_not_modified, 1);
        } else {
            Metrics::add(&m.polls_ok, 1);
        }
        Metrics::add(&m.items_new, report.new_items as u64);
        Metrics::add(&m.items_updated, report.updated_items as u64);
        Metrics::add(&m.duplicates_merged, report.merged as u64);
    }

    async fn render_feeds_of(&self, config: &Arc<Config>, source: &str) {
        let feeds: Vec<String> = config
            .feeds
            .iter()
            .filter(|f| f.sources.iter().any(|s| s == source))
            .map(|f| f.name.clone())
            .collect();
        let store = self.pipeline.store.clone();
        let publisher = self.publisher.clone();
        let config = config.clone();
        let result = tokio::task::spawn_blocking(move || {
            for feed in feeds {
                publisher.render(&store, &config, &feed)?;
            }
            Ok::<_, PublishError>(())
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!(source, error = %e, "cannot render output feeds"),
            Err(e) => error!(source, error = %e, "rendering task failed"),
        }
    }
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
            store.rebuild_feed_index(&feed.name, &fingerprint, |item| filter.selects(item))?;
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

/// Runs the daemon until a [`Control::Shutdown`] arrives or `control` closes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    mut control: mpsc::Receiver<Control>,
) -> Result<(), DaemonError> {
    let store = Store::open(&config.storage.path)?;
    let ready = Arc::new(AtomicBool::new(false));
    sync_feed_indexes(&store, &config)?;
    let publisher = Arc::new(Publisher::new());
    publisher.render_all(&store, &config)?;
    let shared = Arc::new(Shared {
        filters: RwLock::new(Arc::new(filters_of(&config))),
        pipeline: Pipeline {
            fetcher: Fetcher::new(&config.poll)?,
            store: store.clone(),
        },
        config: Arc::new(RwLock::new(Arc::new(config))),
        publisher: publisher.clone(),
        metrics: Arc::new(Metrics::default()),
    });
    let app = server::router(AppState {
        config: shared.config.clone(),
        store: store.clone(),
        publisher,
        metrics: shared.metrics.clone(),
        ready: ready.clone(),
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
    ready.store(true, Ordering::Release);

    while let Some(message) = control.recv().await {
        match message {
            Control::Shutdown => break,
            Control::Reload => {
                if reload(&shared).await {
                    scheduler.stop().await;
                    scheduler = Scheduler::start(&shared);
                }
            }
        }
    }
    info!("stopping: waiting for polls in flight");
    scheduler.stop().await;
    let _ = server_stop_tx.send(true);
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(DaemonError::Server(e)),
        Err(e) => error!(error = %e, "server task failed"),
    }
    store.flush()?;
    info!("stopped cleanly");
    Ok(())
}

/// Reads the config file again; applies it if valid. Returns whether it was applied.
async fn reload(shared: &Arc<Shared>) -> bool {
    let current = shared.config();
    let new = match config::load(&current.path) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.0 {
                error!(error = %e, "config reload refused; keeping the running config");
            }
            return false;
        }
    };
    if new.server.listen != current.server.listen {
        warn!(
            old = %current.server.listen,
            new = %new.server.listen,
            "the listen address changes only on restart"
        );
    }
    if new.storage.path != current.storage.path {
        warn!("the store path changes only on restart");
    }
    let store = shared.pipeline.store.clone();
    let publisher = shared.publisher.clone();
    let new = Arc::new(new);
    let for_render = new.clone();
    let rebuilt = tokio::task::spawn_blocking(move || {
        sync_feed_indexes(&store, &for_render)?;
        publisher.render_all(&store, &for_render)?;
        Ok::<_, DaemonError>(())
    })
    .await;
    match rebuilt {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            error!(error = %e, "config reload failed while rebuilding output feeds");
            return false;
        }
        Err(e) => {
            error!(error = %e, "config reload task failed");
            return false;
        }
    }
    *shared.filters.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(filters_of(&new));
    *shared.config.write().unwrap_or_else(|p| p.into_inner()) = new.clone();
    info!(
        sources = new.sources.len(),
        feeds = new.feeds.len(),
        "config reloaded"
    );
    true
}

/// One task per source, stopped together.
struct Scheduler {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Scheduler {
    fn start(shared: &Arc<Shared>) -> Scheduler {
        let config = shared.config();
        let (stop, stop_rx) = watch::channel(false);
        let limit = Arc::new(Semaphore::new(config.poll.concurrency));
        let mut tasks = JoinSet::new();
        for source in config.sources.iter().cloned() {
            let state = shared
                .pipeline
                .store
                .source_state(&source.name)
                .unwrap_or_default();
            let first = first_poll(&source, &state, Utc::now());
            let shared = shared.clone();
            let limit = limit.clone();
            let stop_rx = stop_rx.clone();
            let schedule = source.schedule.clone();
            tasks.spawn(async move {
                let source = Arc::new(source);
                schedule::run_source(schedule, first, limit, stop_rx, || {
                    let shared = shared.clone();
                    let source = source.clone();
                    async move { shared.poll(&source).await }
                })
                .await;
            });
        }
        Scheduler { stop, tasks }
    }

    async fn stop(&mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// When a source is first polled after start-up or a reload: never if it is disabled or its
/// feed is gone; not
/// before a backoff or Retry-After ends, nor before a next poll already pushed later by the
/// publisher's hints; else at its schedule's first due time.
fn first_poll(
    source: &SourceConfig,
    state: &SourceState,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
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
    let store = Store::open(&config.storage.path)?;
    sync_feed_indexes(&store, config)?;
    let pipeline = Pipeline {
        fetcher: Fetcher::new(&config.poll)?,
        store: store.clone(),
    };
    let filters = Arc::new(filters_of(config));
    let config = Arc::new(config.clone());
    let limit = Arc::new(Semaphore::new(config.poll.concurrency));
    let mut tasks = JoinSet::new();
    for source in config
        .sources
        .iter()
        .filter(|s| names.is_empty() || names.contains(&s.name))
    {
        let (pipeline, filters, config, limit, source) = (
            pipeline.clone(),
            filters.clone(),
            config.clone(),
            limit.clone(),
            source.clone(),
        );
        if !force {
            let state = store.source_state(&source.name)?;
            if let Some(hold) = hold_of(&source, &state, Utc::now()) {
                tasks.spawn(async move {
                    PollOutcome {
                        source: source.name.clone(),
                        polled: Polled::Skipped(hold),
                    }
                });
                continue;
            }
        }
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let result = pipeline.refresh_source(&config, &filters, &source).await;
            PollOutcome {
                source: source.name.clone(),
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
    store.flush()?;
    Ok(outcomes)
}
