//! The per-source tasks: [`Scheduler`] starts, stops and replaces one task per enabled
//! source as the config changes, and each task polls its source on its schedule
//! (`Shared::poll`), counts the result, re-renders the source's feeds and tells the hub.
//! Must not decide when a source is due (that is `schedule`) or how a poll runs (`refresh`).

use super::*;
use crate::store::SeenPoll;

impl Shared {
    /// Polls one source, counts the result, re-renders its feeds if anything changed, and
    /// answers when the source is next due (`None`: not again, the feed is gone), or, when
    /// the store failed, that it waits for the store ([`wait_for_store`]; `task` counts the
    /// source's polls failed by the store in a row). In a store that several instances share,
    /// the poll is claimed first: a source polled elsewhere since `task` saw it, or being
    /// polled elsewhere now, is not polled here.
    pub(super) async fn poll(&self, source: &SourceConfig, task: &PollTask) -> schedule::Next {
        // Subscribed before the poll: a reopen while it runs ends the wait at once.
        let store_back = self.store_back.subscribe();
        let shared = self.pipeline.store.is_shared();
        if shared {
            if let Some(not_here) = self.claim_or_not(source, task, store_back.clone()).await {
                return not_here;
            }
        }
        let polled = self.poll_and_plan(source, task).await;
        if shared {
            self.release(source);
        }
        match polled {
            Ok(next) => {
                task.store_waits.store(0, Ordering::Relaxed);
                self.publisher.set_next_poll(&source.name, next);
                schedule::Next::At(next)
            }
            Err(StoreFailed) => {
                self.retry_when_store_is_back(source, &task.store_waits, store_back)
            }
        }
    }

    /// Answers that `source` waits for the store before it is polled again: at once when the
    /// store is back, else after a delay that grows with `store_waits`, the polls the store
    /// failed in a row (not the source's backoff: the store failed, not the source).
    pub(super) fn retry_when_store_is_back(
        &self,
        source: &SourceConfig,
        store_waits: &AtomicU32,
        store_back: watch::Receiver<u64>,
    ) -> schedule::Next {
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

    /// [`Shared::poll`]'s work: when the source is next due, or [`StoreFailed`].
    pub(super) async fn poll_and_plan(
        &self,
        source: &SourceConfig,
        task: &PollTask,
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
                    self.render_feeds_of(&config, &[&source.name], report.regrouped_stories())
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
        let state = match stored_state(&self.pipeline.store, &source.name).await {
            Ok(state) => {
                task.saw(SeenPoll::Last(state.last_poll));
                state
            }
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
    pub(super) fn store_failed(&self, e: &StoreError) {
        if self.metrics.store_failed(&e.to_string(), self.now()) {
            error!(error = %e, "the store failed a write; serving what is stored until it recovers");
        }
        if e.needs_reopen() {
            self.reopen.notify_one();
        }
    }

    pub(super) fn count(&self, source: &str, report: &PollReport) {
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
    pub(super) fn checkpoint_store(&self) {
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

    /// Renders the feeds of any of `sources` again, each once, or every feed when a poll
    /// regrouped stories (their other members may be of any source).
    pub(super) async fn render_feeds_of(
        &self,
        config: &Arc<Config>,
        sources: &[&str],
        regrouped_stories: bool,
    ) {
        let feeds: Vec<String> = config
            .feeds
            .iter()
            .filter(|f| {
                regrouped_stories || f.sources.iter().any(|s| sources.contains(&s.as_str()))
            })
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
            Ok(Err(e)) => error!(sources = ?sources, error = %e, "cannot render output feeds"),
            Err(e) => error!(sources = ?sources, error = %e, "rendering task failed"),
        }
    }

    /// Tells the WebSub hub, if one is configured, about every feed URL whose bytes changed.
    /// The pings run in the background; a failing hub is logged and changes nothing else.
    pub(super) fn ping_hub(&self, config: &Config, changed: Vec<(String, Vec<Format>)>) {
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

/// One polling task of one source.
pub(super) struct SourceTask {
    /// The source as this task polls it; a reload that changes it restarts the task.
    source: SourceConfig,
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

/// One task per source, under one concurrency limit.
pub(super) struct Scheduler {
    limit: Arc<Semaphore>,
    concurrency: usize,
    tasks: HashMap<String, SourceTask>,
    /// Tasks of removed sources, told to stop, finishing a poll in flight.
    retiring: Vec<tokio::task::JoinHandle<()>>,
}

impl Scheduler {
    pub(super) fn start(shared: &Arc<Shared>) -> Scheduler {
        let config = shared.config();
        let mut scheduler = Scheduler {
            limit: Arc::new(Semaphore::new(config.poll.concurrency)),
            concurrency: config.poll.concurrency,
            tasks: HashMap::new(),
            retiring: Vec::new(),
        };
        // Every state in one read, not one read (and one blocking thread) per source's task.
        let mut states = match shared.pipeline.store.source_states() {
            Ok(states) => Some(states),
            Err(e) => {
                warn!(error = %e, "cannot read the sources' states: each task reads its own");
                None
            }
        };
        for source in &config.sources {
            let state = states
                .as_mut()
                .map(|states| states.remove(&source.name).unwrap_or_default());
            scheduler.spawn(shared, source.clone(), None, false, state);
        }
        scheduler
    }

    /// Starts polling `source`, once `after` (the source's previous task, told to stop) has
    /// finished its poll in flight; `rescheduled`: its schedule changed, so a next poll stored
    /// under the old schedule no longer counts. `state`: the source's stored state, when the
    /// caller read it (else the task reads it).
    fn spawn(
        &mut self,
        shared: &Arc<Shared>,
        source: SourceConfig,
        after: Option<tokio::task::JoinHandle<()>>,
        rescheduled: bool,
        state: Option<SourceState>,
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
            let stored = match state {
                Some(state) => Ok(state),
                None => stored_state(&shared.pipeline.store, &polled.name).await,
            };
            let task = Arc::new(PollTask::new(match &stored {
                Ok(state) => SeenPoll::Last(state.last_poll),
                Err(_) => SeenPoll::Unknown,
            }));
            let mut state = stored.unwrap_or_default();
            if rescheduled {
                state.next_poll = None;
            }
            let first = first_poll(&polled, &state, shared.now());
            shared.publisher.set_next_poll(&polled.name, first);
            let clock = shared.clock.clock().clone();
            schedule::run_source(schedule, clock, first, limit, stop_rx, || {
                let (shared, source, task) = (shared.clone(), polled.clone(), task.clone());
                async move { shared.poll(&source, &task).await }
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
    pub(super) async fn apply(&mut self, shared: &Arc<Shared>, config: &Config) {
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
        // Read only when a task starts: a reload that adds or changes no source reads nothing.
        let starting = config
            .sources
            .iter()
            .any(|s| !self.tasks.contains_key(&s.name));
        let mut states = starting
            .then(|| shared.pipeline.store.source_states().ok())
            .flatten();
        for source in &config.sources {
            if !self.tasks.contains_key(&source.name) {
                let previous = stopping.remove(&source.name);
                let state = states
                    .as_mut()
                    .map(|states| states.remove(&source.name).unwrap_or_default());
                if state.as_ref().is_some_and(|s| s.last_poll.is_none()) {
                    info!(source = %source.name, "new source: polling it now");
                }
                // A restarted source's state is read once its old task finished its poll.
                let state = state.filter(|_| previous.is_none());
                self.spawn(
                    shared,
                    source.clone(),
                    previous,
                    rescheduled.contains(&source.name),
                    state,
                );
            }
        }
        self.retiring.retain(|h| !h.is_finished());
        self.retiring.extend(stopping.into_values());
    }

    pub(super) async fn stop(&mut self) {
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
pub(super) fn first_poll(
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
pub(super) fn hold_of(
    source: &SourceConfig,
    state: &SourceState,
    now: DateTime<Utc>,
) -> Option<Hold> {
    if !source.enabled {
        return Some(Hold::Disabled);
    }
    state.hold(source.url.as_str(), now)
}

/// The stored state of `source`, read on a blocking thread: an engine on a database server
/// waits for the answer, which must not hold up the async runtime's threads.
async fn stored_state(store: &Store, source: &str) -> Result<SourceState, StoreError> {
    // At most a few at once: a reload that restarts thousands of tasks must not start a
    // blocking thread for each.
    static READS: Semaphore = Semaphore::const_new(4);
    let _permit = READS.acquire().await;
    let (store, source) = (store.clone(), source.to_owned());
    tokio::task::spawn_blocking(move || store.source_state(&source))
        .await
        .unwrap_or_else(|e| {
            Err(StoreError::Database {
                message: format!("reading a source's state: {e}"),
            })
        })
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
