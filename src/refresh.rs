//! Refreshing one source: the only place that calls every pipeline stage in turn.
//!
//! fetch -> parse (and normalise) -> dedup -> filter (feed memberships) -> store. A failure at
//! any stage is recorded on the source's state and returned; it never changes or deletes the
//! source's stored items, and it never affects another source. A failure of the store itself
//! ([`PollError::is_store_failure`]: a full disk) is returned without touching the source's
//! state: it is not the source's fault, and the source is not backed off for it.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tracing::{info, warn, Instrument};
use url::Url;

use crate::clock::Clock;
use crate::config::{Config, Schedule, SourceConfig};
use crate::dedup::{self, DedupConfig, IngestPlan};
use crate::fetch::{FetchError, FetchOutcome, Fetched, Fetcher, HttpHints, Validators};
use crate::filter::FeedFilter;
use crate::metrics::Metrics;
use crate::model::{SourceState, SourceStatus};
use crate::parse::{self, ParseError};
use crate::redact;
use crate::schedule::{self, Timing};
use crate::store::{FeedMembership, Store, StoreError};

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("fetch failed: {0}")]
    Fetch(#[from] FetchError),
    #[error("{0}")]
    Parse(#[from] ParseError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl PollError {
    /// Whether the store failed (a write's I/O error such as a full disk, or the store closed
    /// after one): not the source's fault, so the source is neither marked failing nor backed
    /// off; its state stays as it was and the poll is tried again once the store recovers.
    pub fn is_store_failure(&self) -> bool {
        matches!(self, PollError::Store(e) if e.needs_reopen())
    }
}

/// What a successful poll did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    /// Nothing changed: a 304, or a 200 with the body of the last poll (`same_body`).
    pub not_modified: bool,
    /// A 200 whose body is the one the last poll parsed and stored; not parsed again.
    pub same_body: bool,
    pub entries: usize,
    pub new_items: usize,
    pub updated_items: usize,
    pub unchanged: usize,
    /// New items that joined another source's story (`merged_url + merged_text +
    /// merged_meaning`).
    pub merged: usize,
    pub merged_url: usize,
    pub merged_text: usize,
    pub merged_meaning: usize,
    /// Stories that became one because a new item matched both: feeds of other sources may
    /// show one entry fewer.
    pub merged_stories: usize,
    /// Stored reports of this source that left their story to a closer new report of it:
    /// feeds of other sources may show another entry for the story.
    pub left_stories: usize,
    /// What the body needed mending to be read (empty when it was read as it was).
    pub recovered: Vec<String>,
    /// New entries left for later polls (`[poll] max_new_items` reached).
    pub over_quota: usize,
    /// The source's oldest items deleted to keep it within its quota of stored items.
    pub pruned_over_quota: u64,
    /// The server (`host:port`) and its clock when it answered, with ours at that moment.
    pub server_clock: Option<ServerClock>,
}

/// A server's clock as its answer dated it (HTTP `Date` plus `Age`), and ours when it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerClock {
    pub server: String,
    pub theirs: DateTime<Utc>,
    pub ours: DateTime<Utc>,
}

impl PollReport {
    /// Whether output feeds of this source need rendering again.
    pub fn changed(&self) -> bool {
        self.new_items > 0 || self.updated_items > 0
    }

    /// Whether the poll regrouped stories (merged some, or took a report out of one), whose
    /// other members may be in any feed.
    pub fn regrouped_stories(&self) -> bool {
        self.merged_stories > 0 || self.left_stories > 0
    }
}

/// Everything a refresh needs, shared by all sources.
#[derive(Clone)]
pub struct Pipeline {
    pub fetcher: Fetcher,
    pub store: Store,
    /// Where fetch durations are recorded.
    pub metrics: Arc<Metrics>,
    /// What a poll, and the items it first sees, are dated by.
    pub clock: Arc<dyn Clock>,
    /// Fetched bodies being parsed, planned and written at once: see [`ingest_slots`].
    pub ingest_slots: Arc<tokio::sync::Semaphore>,
}

/// Slots for the CPU-bound part of polls (parse, dedup, store), one per core. Fetches run up
/// to `[poll] concurrency` at once, but planning is serialised by the store's ingest guard
/// anyway: without this bound every fetched source waited for the guard holding its parsed
/// entries, which was most of the memory of a sweep (a poll of 50 sources of 1,000 items
/// peaked 135 MiB higher). A fetched body waiting for a slot costs only its bytes.
pub fn ingest_slots() -> Arc<tokio::sync::Semaphore> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    Arc::new(tokio::sync::Semaphore::new(cores))
}

/// What a refresh needs to know about the source it polls.
#[derive(Debug, Clone)]
pub struct SourceCtx {
    pub name: String,
    /// The URL in the config (the poll may go to where it permanently moved).
    pub configured_url: Url,
    pub schedule: Schedule,
    pub timing: Timing,
    pub dedup: DedupConfig,
    /// Items of the source kept at most (`max_items`, or `[storage] max_items_per_source`).
    pub item_quota: u64,
}

impl SourceCtx {
    pub fn new(source: &SourceConfig, config: &Config) -> SourceCtx {
        SourceCtx {
            name: source.name.clone(),
            configured_url: source.url.clone(),
            schedule: source.schedule.clone(),
            timing: Timing::from(&config.poll),
            dedup: config.dedup.clone(),
            item_quota: source.item_quota(&config.storage),
        }
    }
}

/// Permanent redirects to one place on this many polls in a row move the source there.
pub const REDIRECTS_TO_MOVE: u32 = 3;

impl Pipeline {
    /// Polls `source` once, stores what changed, and records on its state when it is next due.
    pub async fn refresh_source(
        &self,
        config: &Config,
        filters: &[FeedFilter],
        source: &SourceConfig,
    ) -> Result<PollReport, PollError> {
        let span = tracing::info_span!("poll", source = %source.name);
        let ctx = SourceCtx::new(source, config);
        self.refresh_inner(ctx, filters).instrument(span).await
    }

    async fn refresh_inner(
        &self,
        ctx: SourceCtx,
        filters: &[FeedFilter],
    ) -> Result<PollReport, PollError> {
        let started = Instant::now();
        let mut state = self.read_state(&ctx.name).await?;
        let now = self.clock.now();
        state.last_poll = Some(now);
        let url_text = state.poll_url(ctx.configured_url.as_str());
        let url = if url_text == ctx.configured_url.as_str() {
            ctx.configured_url.clone()
        } else {
            Url::parse(&url_text).map_err(|e| PollError::Internal(e.to_string()))?
        };
        let validators = if state.validators_for.as_deref() == Some(url_text.as_str()) {
            Validators {
                etag: state.etag.clone(),
                last_modified: state.last_modified.clone(),
            }
        } else {
            Validators::default()
        };
        let (fetched, fetch_took) = self.fetcher.fetch_timed(&url, &validators).await;
        self.metrics.fetch_took(fetch_took);
        let server_clock = match &fetched {
            Ok(FetchOutcome::NotModified(hints)) => server_clock(&url, hints, &*self.clock),
            Ok(FetchOutcome::Fetched(f)) => server_clock(&f.final_url, &f.hints, &*self.clock),
            Err(_) => None,
        };
        let result = match fetched {
            Ok(FetchOutcome::NotModified(hints)) => {
                state.status = SourceStatus::NotModified;
                after_success(&mut state, &ctx, &hints, None, now);
                self.save_state(&ctx.name, state).await?;
                Ok(PollReport {
                    not_modified: true,
                    ..PollReport::default()
                })
            }
            Ok(FetchOutcome::Fetched(fetched)) => {
                let digest = body_digest(&fetched);
                if state.body_digest.as_deref() == Some(digest.as_str()) {
                    unchanged_body(&mut state, &ctx, &fetched, now);
                    self.save_state(&ctx.name, state).await?;
                    Ok(PollReport {
                        not_modified: true,
                        same_body: true,
                        ..PollReport::default()
                    })
                } else {
                    self.ingest_blocking(&ctx, filters, *fetched, state, now, digest)
                        .await
                }
            }
            Err(e) => Err(PollError::Fetch(e)),
        }
        .map(|report| PollReport {
            server_clock,
            ..report
        });
        let elapsed_ms = started.elapsed().as_millis() as u64;
        // The URL as logs show it: a configured one may carry a password or a token.
        let url = redact::Public(&url);
        match &result {
            Ok(r) if r.same_body => info!(
                url = %url,
                elapsed_ms,
                status = 200,
                "not modified: the same body as the last poll (not parsed again)"
            ),
            Ok(r) if r.not_modified => info!(url = %url, elapsed_ms, status = 304, "not modified"),
            Ok(r) if r.over_quota > 0 || r.pruned_over_quota > 0 => warn!(
                url = %url,
                elapsed_ms,
                entries = r.entries,
                items_new = r.new_items,
                items_updated = r.updated_items,
                left_for_later = r.over_quota,
                pruned = r.pruned_over_quota,
                quota = ctx.item_quota,
                "polled a source beyond its quota: new items past [poll] max_new_items wait for the next polls, items past its max_items (its oldest) are deleted"
            ),
            Ok(r) if !r.recovered.is_empty() => warn!(
                url = %url,
                elapsed_ms,
                entries = r.entries,
                items_new = r.new_items,
                items_updated = r.updated_items,
                merged = r.merged,
                recovered = %r.recovered.join(", "),
                "polled a broken feed: read by mending it (tell its publisher)"
            ),
            Ok(r) => info!(
                url = %url,
                elapsed_ms,
                entries = r.entries,
                items_new = r.new_items,
                items_updated = r.updated_items,
                merged = r.merged,
                stories_merged = r.merged_stories,
                stories_left = r.left_stories,
                "polled"
            ),
            Err(e) if e.is_store_failure() => {
                let error = redact::text(&e.to_string()).into_owned();
                warn!(
                    url = %url,
                    elapsed_ms,
                    error,
                    "poll failed: the store failed, not the source (polled again once the store recovers)"
                );
            }
            Err(e) => {
                let error = redact::text(&e.to_string()).into_owned();
                warn!(url = %url, elapsed_ms, error, "poll failed");
                self.record_failure(&ctx, e, error, now).await;
            }
        }
        result
    }

    /// The stored state of `source`, read on a blocking thread ([`Pipeline::on_store`]).
    async fn read_state(&self, source: &str) -> Result<SourceState, PollError> {
        let source = source.to_owned();
        self.on_store(move |store| store.source_state(&source))
            .await
    }

    /// Saves the state of `source` on a blocking thread ([`Pipeline::on_store`]).
    async fn save_state(&self, source: &str, state: SourceState) -> Result<(), PollError> {
        let source = source.to_owned();
        self.on_store(move |store| store.put_source_state(&source, state))
            .await
    }

    /// Runs `work` on the store from a blocking thread: an engine on a database server waits
    /// for each answer, which must not hold up the async runtime's threads (and the requests
    /// they serve) while the database is slow.
    async fn on_store<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, PollError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|e| PollError::Internal(e.to_string()))?
            .map_err(PollError::Store)
    }

    async fn ingest_blocking(
        &self,
        ctx: &SourceCtx,
        filters: &[FeedFilter],
        fetched: Fetched,
        state: SourceState,
        now: DateTime<Utc>,
        digest: String,
    ) -> Result<PollReport, PollError> {
        let store = self.store.clone();
        let filters: Vec<FeedFilter> = filters
            .iter()
            .filter(|f| f.selects_source(&ctx.name))
            .cloned()
            .collect();
        let ctx = ctx.clone();
        let span = tracing::Span::current();
        let slot = self
            .ingest_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| PollError::Internal(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let _guard = span.enter();
            let state = SourceState {
                body_digest: Some(digest),
                ..state
            };
            ingest(&store, &filters, &ctx, &fetched, state, now)
        })
        .await
        .map_err(|e| PollError::Internal(e.to_string()))?
    }

    /// Records a failed poll on the source's state; `message` is `error` as people see it
    /// (redacted: it is stored, logged and shown).
    async fn record_failure(
        &self,
        ctx: &SourceCtx,
        error: &PollError,
        message: String,
        now: DateTime<Utc>,
    ) {
        let mut state = match self.read_state(&ctx.name).await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot read source state to record a failure");
                return;
            }
        };
        state.last_poll = Some(now);
        state.last_error = Some(message);
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        if state.failing_since.is_none() {
            state.failing_since = Some(now);
        }
        if matches!(error, PollError::Fetch(FetchError::Gone)) {
            state.status = SourceStatus::Gone;
            state.gone_url = Some(ctx.configured_url.to_string());
            state.next_poll = None;
            state.hold_until = None;
            warn!(
                "the server says this feed is gone (410): it will not be polled again until its URL in the config changes"
            );
        } else {
            state.status = SourceStatus::Failing;
            let retry_after = match error {
                PollError::Fetch(e) => e.retry_after(),
                _ => None,
            };
            let (next, hold) = schedule::next_after_failure(
                &ctx.schedule,
                now,
                state.consecutive_failures,
                retry_after,
                &ctx.name,
                &ctx.timing,
            );
            state.next_poll = Some(next);
            state.hold_until = Some(hold);
        }
        if let Err(e) = self.save_state(&ctx.name, state).await {
            warn!(error = %e, "cannot record the failure in the store");
        }
    }
}

/// The clock of the server that answered `url`, when its answer was dated.
fn server_clock(url: &Url, hints: &HttpHints, clock: &dyn Clock) -> Option<ServerClock> {
    let theirs = hints.server_time?;
    Some(ServerClock {
        server: format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or_default()
        ),
        theirs,
        ours: clock.now(),
    })
}

/// Updates `state` after a poll that reached the feed (200 or 304): failures reset, redirect
/// tracking, and the next poll from the schedule and the publisher's hints.
fn after_success(
    state: &mut SourceState,
    ctx: &SourceCtx,
    hints: &HttpHints,
    ttl: Option<std::time::Duration>,
    now: DateTime<Utc>,
) {
    state.last_success = Some(now);
    state.last_error = None;
    state.failing_since = None;
    state.consecutive_failures = 0;
    state.hold_until = None;
    state.gone_url = None;
    track_redirect(state, ctx, hints);
    let after = |d: std::time::Duration| {
        chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
    };
    let pushes = [
        ttl.and_then(after),
        hints.max_age.and_then(after),
        hints.expires,
        hints.retry_after,
    ];
    state.next_poll = Some(schedule::next_after_success(
        &ctx.schedule,
        now,
        &pushes,
        &ctx.timing,
    ));
}

/// What identifies a fetched body: its bytes, the URL its relative links resolve against,
/// its declared type (the charset decides its text) and this release of feedmux (a newer one
/// may read the same bytes differently). A 128-bit xxh3 hash: fast enough to cost nothing
/// beside the request, and a collision needs a server crafting one against its own feed.
pub fn body_digest(fetched: &Fetched) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for part in [
        env!("CARGO_PKG_VERSION").as_bytes(),
        fetched.final_url.as_str().as_bytes(),
        fetched
            .content_type
            .as_deref()
            .unwrap_or_default()
            .as_bytes(),
    ] {
        hasher.update(part);
        hasher.update(&[0]);
    }
    hasher.update(&fetched.body);
    format!("{:032x}", hasher.digest128())
}

/// Updates `state` after a 200 whose body is the one the last poll stored: as after a 304,
/// with the new validators and the feed's `<ttl>` from that body.
fn unchanged_body(state: &mut SourceState, ctx: &SourceCtx, fetched: &Fetched, now: DateTime<Utc>) {
    state.status = SourceStatus::NotModified;
    let ttl = state.feed_ttl_secs.map(std::time::Duration::from_secs);
    after_body(state, ctx, fetched, ttl, now);
}

/// [`after_success`] for a poll that got a body (`ttl`: the feed's own), keeping the
/// response's validators for the next conditional request.
fn after_body(
    state: &mut SourceState,
    ctx: &SourceCtx,
    fetched: &Fetched,
    ttl: Option<std::time::Duration>,
    now: DateTime<Utc>,
) {
    after_success(state, ctx, &fetched.hints, ttl, now);
    state.etag = fetched.validators.etag.clone();
    state.last_modified = fetched.validators.last_modified.clone();
    state.validators_for = Some(fetched.requested_url.to_string());
}

/// A permanent redirect to the same place on [`REDIRECTS_TO_MOVE`] polls in a row moves the
/// source there (in the store; the config file is not rewritten).
fn track_redirect(state: &mut SourceState, ctx: &SourceCtx, hints: &HttpHints) {
    let Some(target) = hints.permanent_redirect.as_ref().map(Url::to_string) else {
        state.redirect_candidate = None;
        state.redirect_count = 0;
        return;
    };
    if state.redirect_candidate.as_deref() == Some(target.as_str()) {
        state.redirect_count = state.redirect_count.saturating_add(1);
    } else {
        state.redirect_candidate = Some(target.clone());
        state.redirect_count = 1;
    }
    if state.redirect_count >= REDIRECTS_TO_MOVE {
        warn!(
            from = %redact::url_str(&state.poll_url(ctx.configured_url.as_str())),
            to = %redact::url_str(&target),
            "the feed has moved permanently; polling its new address from now on (update the config to make it stick)"
        );
        state.effective_url = Some(target);
        state.moved_from = Some(ctx.configured_url.to_string());
        state.redirect_candidate = None;
        state.redirect_count = 0;
    }
}

/// Parses a fetched body, plans its writes, and applies them with the source's new state.
pub fn ingest(
    store: &Store,
    filters: &[FeedFilter],
    ctx: &SourceCtx,
    fetched: &Fetched,
    mut state: SourceState,
    now: DateTime<Utc>,
) -> Result<PollReport, PollError> {
    // Relative links resolve against the feed's URL without its password, query or
    // fragment: items are published, and a link must not inherit them.
    let parsed = parse::parse_feed(
        &fetched.body,
        fetched.content_type.as_deref(),
        &redact::public_url(&fetched.final_url),
        now,
    )?;
    let entries = parsed.entries.len();
    let prepared = dedup::prepare(store, &ctx.name, &parsed.entries, &ctx.dedup)?;
    let mut term_stats = store.ingest_guard();
    let plan = dedup::plan_prepared(
        store,
        &ctx.name,
        parsed.entries,
        prepared,
        now,
        &ctx.dedup,
        &mut term_stats,
    )?;
    let memberships = memberships(filters, &plan);
    let feeds: Vec<String> = filters.iter().map(|f| f.feed.clone()).collect();

    state.status = SourceStatus::Ok;
    after_body(&mut state, ctx, fetched, parsed.meta.ttl, now);
    state.item_count = state.item_count.saturating_add(plan.new_items() as u64);
    state.feed_ttl_secs = parsed.meta.ttl.map(|t| t.as_secs());
    state.recovered = (!parsed.recovered.is_empty()).then(|| parsed.recovered.join(", "));
    state.title = parsed.meta.title.or(state.title);
    state.site_url = parsed.meta.site_url.or(state.site_url);
    store.apply_poll(&ctx.name, &plan, &feeds, &memberships, &state, term_stats)?;
    let pruned_over_quota = if state.item_count > ctx.item_quota {
        store.prune_source(&ctx.name, ctx.item_quota, now)?
    } else {
        0
    };
    Ok(PollReport {
        not_modified: false,
        same_body: false,
        entries,
        new_items: plan.new_items(),
        updated_items: plan.updated_items(),
        unchanged: plan.unchanged,
        merged: plan.merged + plan.merged_text + plan.merged_meaning,
        merged_url: plan.merged,
        merged_text: plan.merged_text,
        merged_meaning: plan.merged_meaning,
        merged_stories: plan.story_merges.len(),
        left_stories: plan.story_leaves.len(),
        recovered: parsed.recovered,
        over_quota: plan.over_quota,
        pruned_over_quota,
        // Filled in by the caller, which saw the answer.
        server_clock: None,
    })
}

fn memberships(filters: &[FeedFilter], plan: &IngestPlan) -> Vec<FeedMembership> {
    let mut out = Vec::new();
    for write in &plan.writes {
        for filter in filters {
            if filter.selects(&write.item) {
                out.push(FeedMembership {
                    feed: filter.feed.clone(),
                    item: write.item.id,
                });
            }
        }
    }
    out
}
