//! The CLI's polls: [`poll_once`] polls sources once without the server (`feedmux poll`),
//! and [`Sweeper`] polls every source at once for the benchmarks; both run the daemon's
//! pipeline.

use super::*;
use crate::store::SeenPoll;

/// What happened to one source in `poll_once`.
pub enum Polled {
    Done(Result<PollReport, PollError>),
    /// Not polled: gone, or in backoff or under a Retry-After (see `force`).
    Skipped(Hold),
    /// Not polled: another instance sharing the store polled it while this one waited for
    /// its claim.
    PolledElsewhere,
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
        upkeep::upgrade_text_index(&store, &mut crate::systemd::still_starting)?;
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
            let state = self.store.source_state(&source.name)?;
            if !force {
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
            let seen = SeenPoll::Last(state.last_poll);
            tasks.spawn(async move {
                let _permit = permit;
                let polled = poll_claimed(&pipeline, &config, &filters, &source, seen).await;
                PollOutcome {
                    source: source.name,
                    polled,
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

/// Polls `source`, first claiming its poll when other instances share the store (they may be
/// polling it now: `feedmux poll` waits for them, and does not poll again what one just did).
async fn poll_claimed(
    pipeline: &Pipeline,
    config: &Config,
    filters: &[FeedFilter],
    source: &SourceConfig,
    seen: SeenPoll,
) -> Polled {
    if !pipeline.store.is_shared() {
        return Polled::Done(pipeline.refresh_source(config, filters, source).await);
    }
    match claims::claim_before_polling(&pipeline.store, config, source, seen).await {
        Ok(claims::OnDemand::PolledElsewhere) => Polled::PolledElsewhere,
        Ok(claim) => {
            let result = pipeline.refresh_source(config, filters, source).await;
            claim.done(&pipeline.store, source);
            Polled::Done(result)
        }
        Err(e) => Polled::Done(Err(PollError::Store(e))),
    }
}
