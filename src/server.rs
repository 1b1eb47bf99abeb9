//! The HTTP server: read-only routes over what the daemon already has.
//!
//! Output feeds are served from the publisher's cache (conditional requests answered with 304,
//! gzip when the client accepts it); the status page (built by `status`, off the async
//! threads) and OPML read the config and the source states. Nothing here fetches, parses or renders feeds, and no route changes anything. axum
//! is used here and nowhere else.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::model::ReloadFailure;
use crate::opml;
use crate::publish::{Format, Publisher};
use crate::status;
use crate::store::Store;

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

async fn feed(
    State(state): State<AppState>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    Metrics::add(&state.metrics.feed_requests, 1);
    let Some((name, ext)) = file.rsplit_once('.') else {
        return not_found();
    };
    let (Some(format), Some(rendered)) = (Format::from_extension(ext), state.publisher.get(name))
    else {
        return not_found();
    };
    let Some(doc) = rendered.get(format) else {
        return not_found();
    };
    let last_modified = httpdate::fmt_http_date(rendered.last_modified.into());
    let mut response_headers = HeaderMap::new();
    insert(&mut response_headers, header::ETAG, &doc.etag);
    insert(&mut response_headers, header::LAST_MODIFIED, &last_modified);
    insert(
        &mut response_headers,
        header::CACHE_CONTROL,
        "public, max-age=60",
    );
    insert(&mut response_headers, header::VARY, "Accept-Encoding");
    if not_modified(&headers, &doc.etag, rendered.last_modified) {
        Metrics::add(&state.metrics.feed_not_modified, 1);
        return (StatusCode::NOT_MODIFIED, response_headers).into_response();
    }
    insert(
        &mut response_headers,
        header::CONTENT_TYPE,
        format.content_type(),
    );
    let body = if accepts_gzip(&headers) && !doc.gzip.is_empty() {
        insert(&mut response_headers, header::CONTENT_ENCODING, "gzip");
        doc.gzip.clone()
    } else {
        doc.body.clone()
    };
    (StatusCode::OK, response_headers, body).into_response()
}

fn insert(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such feed\n").into_response()
}

/// RFC 9110: `If-None-Match` decides when present; otherwise `If-Modified-Since`.
fn not_modified(headers: &HeaderMap, etag: &str, last_modified: DateTime<Utc>) -> bool {
    if let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        return inm
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == "*" || t == etag);
    }
    if let Some(ims) = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    {
        let ims: DateTime<Utc> = ims.into();
        return last_modified.timestamp() <= ims.timestamp();
    }
    false
}

/// Whether `Accept-Encoding` allows gzip (a `q=0` refuses it).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// Ready once the store is open and every source has been scheduled; not while the last
/// write to the store failed.
async fn readyz(State(state): State<AppState>) -> Response {
    if !state.ready.load(Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    } else if state.metrics.store_failing.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the last write to the store failed\n",
        )
            .into_response()
    } else {
        (StatusCode::OK, "ready\n").into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let body = state
        .metrics
        .render(state.store.item_count() as u64, state.store.size_on_disk());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Every configured source with its stored state, as JSON: what `feedmux sources` shows when
/// the daemon holds the store.
async fn api_sources(State(state): State<AppState>) -> Response {
    let config = state.config();
    let list: Vec<serde_json::Value> = config
        .sources
        .iter()
        .map(|s| {
            let source_state = state.store.source_state(&s.name).unwrap_or_default();
            serde_json::json!({ "name": s.name, "state": source_state })
        })
        .collect();
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::Value::Array(list).to_string(),
    )
        .into_response()
}

/// Most items `/api/items` gives at once.
pub const MAX_API_ITEMS: usize = 10_000;

#[derive(serde::Deserialize)]
struct ItemsQuery {
    source: String,
    limit: Option<usize>,
}

/// The newest stored items of one configured source, as JSON (what `feedmux preview` reads
/// when the daemon holds the store). `limit` defaults to 200, at most [`MAX_API_ITEMS`].
async fn api_items(State(state): State<AppState>, Query(query): Query<ItemsQuery>) -> Response {
    if state.config().source(&query.source).is_none() {
        return (StatusCode::NOT_FOUND, "no such source\n").into_response();
    }
    let limit = query.limit.unwrap_or(200).min(MAX_API_ITEMS);
    let store = state.store.clone();
    let items = tokio::task::spawn_blocking(move || store.source_items(&query.source, limit)).await;
    match items {
        Ok(Ok(items)) => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string(&items).unwrap_or_else(|_| "[]".to_owned()),
        )
            .into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the store: {e}\n"),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn status_page(State(state): State<AppState>) -> Response {
    let config = state.config();
    let failure = state
        .reload_failure
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let (store, publisher) = (state.store.clone(), state.publisher.clone());
    let page = tokio::task::spawn_blocking(move || {
        status::page(&config, &store, &publisher, failure.as_ref(), Utc::now())
    })
    .await;
    match page {
        Ok(Ok(html)) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            html,
        )
            .into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the store: {e}\n"),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("status page failed: {e}\n"),
        )
            .into_response(),
    }
}

async fn opml(State(state): State<AppState>) -> Response {
    let config = state.config();
    let states: Vec<(String, crate::model::SourceState)> = config
        .sources
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                state.store.source_state(&s.name).unwrap_or_default(),
            )
        })
        .collect();
    (
        [(header::CONTENT_TYPE, "text/x-opml; charset=utf-8")],
        opml::write(&config, &states),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_acceptance() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip;q=0.8"),
        );
        assert!(accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0, identity"),
        );
        assert!(!accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        assert!(!accepts_gzip(&h));
    }
}
