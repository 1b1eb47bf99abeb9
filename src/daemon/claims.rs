//! Claims of polls in a store that several instances share: before each poll a source's task
//! asks the store ([`SourceStates::claim_poll`](crate::store::SourceStates::claim_poll))
//! whether to poll, and does not when another instance polled the source since the task last
//! saw it, or is polling it (or its host) now. On sled every claim is granted. Must not poll.

use super::*;
use crate::store::{PollClaim, SeenPoll};

/// How much longer than a poll's timeout its claim lasts (the poll's writes, a slow store).
const CLAIM_MARGIN: std::time::Duration = std::time::Duration::from_secs(15);
/// What one source's polling task remembers between its polls.
pub(super) struct PollTask {
    /// Polls the store failed in a row.
    pub(super) store_waits: AtomicU32,
    /// The source's last poll as this task last saw it in the store, for claims.
    seen: std::sync::Mutex<SeenPoll>,
}

impl PollTask {
    pub(super) fn new(seen: SeenPoll) -> PollTask {
        PollTask {
            store_waits: AtomicU32::new(0),
            seen: std::sync::Mutex::new(seen),
        }
    }

    pub(super) fn seen(&self) -> SeenPoll {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn saw(&self, seen: SeenPoll) {
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = seen;
    }
}

/// How often `feedmux poll` asks again about a source another instance is polling, at most.
const CLAIM_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);
/// The least wait before asking again about a busy source.
const BUSY_RECHECK_MIN: std::time::Duration = std::time::Duration::from_millis(50);

impl Shared {
    /// Claims the poll of `source` for this instance: `None` to poll it now, or what the task
    /// does instead (waits for the stored next poll, asks again soon, or waits for the store).
    pub(super) async fn claim_or_not(
        &self,
        source: &SourceConfig,
        task: &PollTask,
        store_back: watch::Receiver<u64>,
    ) -> Option<schedule::Next> {
        match self.claim(source, task.seen()).await {
            Ok(PollClaim::Granted) => None,
            Ok(PollClaim::PolledElsewhere { next, last_poll }) => {
                tracing::debug!(source = %source.name, "polled by another instance since it fell due");
                task.saw(SeenPoll::Last(last_poll));
                // Another instance's clock may be wrong: its next poll is believed only as far
                // as a next poll of this one's could be (hints and backoff are bounded so).
                let config = self.config();
                let bound = config.poll.max_interval.max(config.poll.backoff_max);
                let latest = self.now() + chrono::Duration::from_std(bound).unwrap_or_default();
                let next = next.map(|next| next.min(latest));
                self.publisher.set_next_poll(&source.name, next);
                Some(schedule::Next::At(next))
            }
            Ok(PollClaim::Busy { until }) => {
                // Asked again at `until`: the host's gap has passed, or the other instance's
                // claim has run out. It lets its claim go sooner, once its poll is written,
                // but asking before then would find the source polled, which the task learns
                // at `until` as well (the next poll is a slot away): the database is not
                // asked again and again about every source another instance is polling.
                let wait = (until - self.now())
                    .to_std()
                    .unwrap_or_default()
                    .max(BUSY_RECHECK_MIN);
                tracing::debug!(source = %source.name, wait_ms = wait.as_millis() as u64, "another instance is polling it or its host");
                Some(schedule::Next::Retry(Box::pin(tokio::time::sleep(wait))))
            }
            Err(e) => {
                error!(source = %source.name, error = %e, "cannot claim the poll in the store");
                self.store_failed(&e);
                Some(self.retry_when_store_is_back(source, &task.store_waits, store_back))
            }
        }
    }

    async fn claim(&self, source: &SourceConfig, seen: SeenPoll) -> Result<PollClaim, StoreError> {
        claim(&self.pipeline.store, &self.config(), source, seen).await
    }

    /// Lets the claim on `source` go, in the background (a claim kept runs out by itself).
    pub(super) fn release(&self, source: &SourceConfig) {
        release(&self.pipeline.store, source);
    }
}

/// Claims the poll of `source` in the store: instances sharing a store poll each source once
/// per slot, and keep the per-host gap between them. The claim lasts the poll's timeout and a
/// margin, so that a claim of an instance that died runs out soon.
async fn claim(
    store: &Store,
    config: &Config,
    source: &SourceConfig,
    seen: SeenPoll,
) -> Result<PollClaim, StoreError> {
    let store = store.clone();
    let name = source.name.clone();
    let host = source.url.host_str().map(str::to_owned);
    let lease = config.poll.timeout.saturating_add(CLAIM_MARGIN);
    let gap = config.poll.per_host_interval;
    tokio::task::spawn_blocking(move || store.claim_poll(&name, host.as_deref(), seen, lease, gap))
        .await
        .unwrap_or(Ok(PollClaim::Granted))
}

/// Lets the claim on `source` go, in the background (a claim kept runs out by itself).
fn release(store: &Store, source: &SourceConfig) {
    let store = store.clone();
    let name = source.name.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = store.release_poll(&name) {
            tracing::debug!(source = %name, error = %e, "cannot let the poll's claim go");
        }
    });
}

/// A poll that `feedmux poll` may make now, in a store other instances share
/// ([`claim_before_polling`]).
pub(super) enum OnDemand {
    /// Claimed: poll, then [`OnDemand::done`].
    Claimed,
    /// Another instance polled the source since its state was read: not polled again.
    PolledElsewhere,
}

/// Claims the poll of `source` for `feedmux poll`, whose state said its last poll was `seen`:
/// waits while another instance polls it or its host (as long as that instance's claim, which
/// runs out if it died), and gives up when another instance polled it meanwhile.
pub(super) async fn claim_before_polling(
    store: &Store,
    config: &Config,
    source: &SourceConfig,
    seen: SeenPoll,
) -> Result<OnDemand, StoreError> {
    loop {
        match claim(store, config, source, seen).await? {
            PollClaim::Granted => return Ok(OnDemand::Claimed),
            PollClaim::PolledElsewhere { .. } => return Ok(OnDemand::PolledElsewhere),
            PollClaim::Busy { until } => {
                let wait = (until - Utc::now())
                    .to_std()
                    .unwrap_or_default()
                    .clamp(BUSY_RECHECK_MIN, CLAIM_RECHECK);
                tokio::time::sleep(wait).await;
            }
        }
    }
}

impl OnDemand {
    /// Lets the claim of a poll made go.
    pub(super) fn done(self, store: &Store, source: &SourceConfig) {
        if let OnDemand::Claimed = self {
            release(store, source);
        }
    }
}
