//! The HTTP routes: read-only, over what the daemon already has.
//!
//! Output feeds are served from the publisher's cache: the coding `Accept-Encoding` prefers
//! (brotli, gzip, none), 304 for matching validators, `max-age` until the feed's next poll,
//! and the HTML view for a browser asking for `.atom` or `.rss` (`Accept`). Searches and pages
//! (`?q=`, `?limit=`, `?before=`) are the one thing rendered per request, by
//! `Publisher::view` on a blocking thread: from its cache when the same view was rendered
//! since the feed last changed, else in one of its few slots (a request that waits 10 s for
//! one gets 503 with `Retry-After`). The status page (built by `status`, off the
//! async threads, a page of sources at a time and compressed like the feeds) and OPML read
//! the config and the source states; every store read is off the async threads (`read_store`).
//! A source's URL leaves only
//! as `[server] show_source_urls` says, redacted or not at all (`redact::Urls`), and so do
//! the URLs in its errors. Nothing here fetches or parses feeds, and no route changes
//! anything. axum is used here and nowhere else.
//!
//! Here: the shared state ([`AppState`]) and the [`router`]; beside it `feeds` (the output
//! feeds, searches and pages), `respond` (a rendered document, its validators and coding),
//! `negotiate` (what the request's headers ask for), `health` (`/readyz`, `/metrics`), `api`
//! (`/api/*`, `/opml`) and `home` (the status page at `/`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::{Path, Query as UrlQuery, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};

use crate::clock::ClockWatch;
use crate::config::Config;
use crate::filter::Query;
use crate::http::status_page;
use crate::metrics::Metrics;
use crate::model::{ReloadFailure, SourceState, SourceStatus};
use crate::opml;
use crate::publish::{self, Coding, Cursor, Format, PublishError, Publisher, Rendered, View};
use crate::store::Store;
use api::{api_items, api_sources, opml};
use feeds::feed;
use health::{metrics, readyz};
use home::status_page;
use negotiate::{preferred_coding, prefers_html};
use respond::{insert, not_modified, serve_document};

mod api;
mod feeds;
mod health;
mod home;
mod negotiate;
mod respond;

pub use api::MAX_API_ITEMS;

/// What the routes read.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<RwLock<Arc<Config>>>,
    pub store: Store,
    pub publisher: Arc<Publisher>,
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    /// Why the last config reload was refused, if it was.
    pub reload_failure: Arc<RwLock<Option<ReloadFailure>>>,
    /// The daemon's clock (times of day, `max-age`) and its recent jumps (the status page).
    pub clock: Arc<ClockWatch>,
}

impl AppState {
    fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The router of every endpoint in the contract.
/// Runs `read` on a blocking thread, off the async runtime's few threads: an engine on a
/// database server waits for each answer (up to its connect timeout while the database is
/// down), which must not hold up the requests that need no store. `None` if `read` panicked.
async fn read_store<T: Send + 'static>(
    store: &Store,
    read: impl FnOnce(&Store) -> T + Send + 'static,
) -> Option<T> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || read(&store)).await.ok()
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/feeds/{file}", get(feed))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/opml", get(opml))
        .route("/api/sources", get(api_sources))
        .route("/api/items", get(api_items))
        .with_state(state)
}
