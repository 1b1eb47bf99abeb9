//! Refreshing one source: the only place that calls every pipeline stage in turn.
//!
//! fetch -> parse (and normalise) -> dedup -> filter (feed memberships) -> store. A failure at
//! any stage is recorded on the source's state and returned; it never changes or deletes the
//! source's stored items, and it never affects another source.

use std::time::Instant;

use chrono::{DateTime, Utc};
use tracing::{info, warn, Instrument};

use crate::config::{Config, SourceConfig};
use crate::dedup::{self, IngestPlan};
use crate::fetch::{FetchError, FetchOutcome, Fetched, Fetcher, Validators};
use crate::filter::FeedFilter;
use crate::model::{SourceState, SourceStatus};
use crate::parse::{self, ParseError};
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

/// What a successful poll did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollReport {
    pub not_modified: bool,
    pub entries: usize,
    pub new_items: usize,
    pub updated_items: usize,
    pub unchanged: usize,
    pub merged: usize,
}

impl PollReport {
    /// Whether output feeds of this source need rendering again.
    pub fn changed(&self) -> bool {
        self.new_items > 0 || self.updated_items > 0
    }
}

/// Everything a refresh needs, shared by all sources.
#[derive(Clone)]
pub struct Pipeline {
    pub fetcher: Fetcher,
    pub store: Store,
}

impl Pipeline {
    /// Polls `source` once and stores what changed. `next_poll` is recorded on its state.
    pub async fn refresh_source(
        &self,
        config: &Config,
        filters: &[FeedFilter],
        source: &SourceConfig,
        next_poll: Option<DateTime<Utc>>,
    ) -> Result<PollReport, PollError> {
        let span = tracing::info_span!("poll", source = %source.name, url = %source.url);
        self.refresh_inner(config, filters, source, next_poll)
            .instrument(span)
            .await
    }

    async fn refresh_inner(
        &self,
        config: &Config,
        filters: &[FeedFilter],
        source: &SourceConfig,
        next_poll: Option<DateTime<Utc>>,
    ) -> Result<PollReport, PollError> {
        let started = Instant::now();
        let mut state = self.store.source_state(&source.name)?;
        let now = Utc::now();
        state.last_poll = Some(now);
        state.next_poll = next_poll;
        let validators = if state.validators_for.as_deref() == Some(source.url.as_str()) {
            Validators {
                etag: state.etag.clone(),
                last_modified: state.last_modified.clone(),
            }
        } else {
            Validators::default()
        };
        let result = match self.fetcher.fetch(&source.url, &validators).await {
            Ok(FetchOutcome::NotModified) => {
                state.status = SourceStatus::NotModified;
                mark_success(&mut state, now);
                self.store.put_source_state(&source.name, &state)?;
                Ok(PollReport {
                    not_modified: true,
                    ..PollReport::default()
                })
            }
            Ok(FetchOutcome::Fetched(fetched)) => {
                self.ingest_blocking(config, filters, source, *fetched, state.clone(), now)
                    .await
            }
            Err(e) => Err(PollError::Fetch(e)),
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(r) if r.not_modified => info!(elapsed_ms, status = 304, "not modified"),
            Ok(r) => info!(
                elapsed_ms,
                entries = r.entries,
                items_new = r.new_items,
                items_updated = r.updated_items,
                merged = r.merged,
                "polled"
            ),
            Err(e) => {
                warn!(elapsed_ms, error = %e, "poll failed");
                self.record_failure(&source.name, e, now, next_poll);
            }
        }
        result
    }

    async fn ingest_blocking(
        &self,
        config: &Config,
        filters: &[FeedFilter],
        source: &SourceConfig,
        fetched: Fetched,
        state: SourceState,
        now: DateTime<Utc>,
    ) -> Result<PollReport, PollError> {
        let store = self.store.clone();
        let filters: Vec<FeedFilter> = filters
            .iter()
            .filter(|f| f.selects_source(&source.name))
            .cloned()
            .collect();
        let name = source.name.clone();
        let _ = config;
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _guard = span.enter();
            ingest(&store, &filters, &name, &fetched, state, now)
        })
        .await
        .map_err(|e| PollError::Internal(e.to_string()))?
    }

    fn record_failure(
        &self,
        source: &str,
        error: &PollError,
        now: DateTime<Utc>,
        next_poll: Option<DateTime<Utc>>,
    ) {
        let mut state = match self.store.source_state(source) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot read source state to record a failure");
                return;
            }
        };
        state.last_poll = Some(now);
        state.next_poll = next_poll;
        state.status = SourceStatus::Failing;
        state.last_error = Some(error.to_string());
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        if state.failing_since.is_none() {
            state.failing_since = Some(now);
        }
        if let Err(e) = self.store.put_source_state(source, &state) {
            warn!(error = %e, "cannot record the failure in the store");
        }
    }
}

fn mark_success(state: &mut SourceState, now: DateTime<Utc>) {
    state.last_success = Some(now);
    state.last_error = None;
    state.failing_since = None;
    state.consecutive_failures = 0;
}

/// Parses a fetched body, plans its writes, and applies them with the source's new state.
pub fn ingest(
    store: &Store,
    filters: &[FeedFilter],
    source: &str,
    fetched: &Fetched,
    mut state: SourceState,
    now: DateTime<Utc>,
) -> Result<PollReport, PollError> {
    let parsed = parse::parse_feed(
        &fetched.body,
        fetched.content_type.as_deref(),
        &fetched.final_url,
        now,
    )?;
    let entries = parsed.entries.len();
    let _guard = store.ingest_guard();
    let plan = dedup::plan(store, source, parsed.entries, now)?;
    let memberships = memberships(filters, &plan);
    let feeds: Vec<String> = filters.iter().map(|f| f.feed.clone()).collect();

    state.status = SourceStatus::Ok;
    mark_success(&mut state, now);
    state.etag = fetched.validators.etag.clone();
    state.last_modified = fetched.validators.last_modified.clone();
    state.validators_for = Some(fetched_url_key(fetched));
    state.item_count = state.item_count.saturating_add(plan.new_items() as u64);
    state.title = parsed.meta.title.or(state.title);
    state.site_url = parsed.meta.site_url.or(state.site_url);
    store.apply_poll(source, &plan, &feeds, &memberships, &state)?;
    Ok(PollReport {
        not_modified: false,
        entries,
        new_items: plan.new_items(),
        updated_items: plan.updated_items(),
        unchanged: plan.unchanged,
        merged: plan.merged,
    })
}

/// The validators belong to the configured URL (the one sent next time), even after a
/// redirect; `fetch` follows the redirect again.
fn fetched_url_key(fetched: &Fetched) -> String {
    fetched.requested_url.to_string()
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
