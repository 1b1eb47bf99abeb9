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
//! the config and the source states. A source's URL leaves only
//! as `[server] show_source_urls` says, redacted or not at all (`redact::Urls`), and so do
//! the URLs in its errors. Nothing here fetches or parses feeds, and no route changes
//! anything. axum is used here and nowhere else.

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

/// An output feed (`/feeds/{name}.{ext}`): the request and its response's status counted.
async fn feed(
    State(state): State<AppState>,
    Path(file): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let metrics = state.metrics.clone();
    Metrics::add(&metrics.feed_requests, 1);
    let response = feed_response(state, file, query, headers).await;
    metrics.feed_response(response.status().as_u16());
    response
}

async fn feed_response(
    state: AppState,
    file: String,
    query: Option<String>,
    headers: HeaderMap,
) -> Response {
    let Some((name, ext)) = file.rsplit_once('.') else {
        return not_found();
    };
    let (Some(mut format), Some(rendered)) =
        (Format::from_extension(ext), state.publisher.get(name))
    else {
        return not_found();
    };
    // A browser opening the Atom or RSS feed gets the readable page; readers get the feed.
    if matches!(format, Format::Atom | Format::Rss) && prefers_html(&headers) {
        format = Format::Html;
    }
    let view = match view_of(query.as_deref().unwrap_or_default()) {
        Ok(view) => view,
        Err(message) => return (StatusCode::BAD_REQUEST, message).into_response(),
    };
    let config = state.config();
    let next_poll = config
        .feed(name)
        .and_then(|f| state.publisher.next_poll_of(&f.sources));
    let cache_control = format!(
        "public, max-age={}",
        publish::max_age(next_poll, state.clock.clock().now())
    );
    if view.is_whole_feed() {
        let Some(doc) = rendered.get(format) else {
            return not_found();
        };
        return serve_document(&state, &headers, doc, format.content_type(), &cache_control);
    }
    // A search or a page: from the cache of them, else rendered in one of a few slots (the
    // store is read off the async threads).
    let publisher = state.publisher.clone();
    if let Some(doc) = publisher.cached_view(name, &view, format) {
        Metrics::add(&state.metrics.feed_views_hit, 1);
        return serve_document(
            &state,
            &headers,
            &doc,
            format.content_type(),
            &cache_control,
        );
    }
    Metrics::add(&state.metrics.feed_views_miss, 1);
    let Ok(slot) = publisher.search_slots().take().await else {
        Metrics::add(&state.metrics.searches_refused, 1);
        return too_busy();
    };
    let (store, feed_name) = (state.store.clone(), name.to_owned());
    let rendered = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        publisher.view(&store, &config, &feed_name, &view, format)
    })
    .await;
    match rendered {
        Ok(Ok(doc)) => serve_document(
            &state,
            &headers,
            &doc,
            format.content_type(),
            &cache_control,
        ),
        Ok(Err(PublishError::UnknownFeed(_))) => not_found(),
        Ok(Err(e)) => {
            tracing::error!(feed = name, error = %e, "cannot render a page of a feed");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot read the store\n").into_response()
        }
        Err(e) => {
            tracing::error!(feed = name, error = %e, "rendering task failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "rendering failed\n").into_response()
        }
    }
}

/// Seconds a refused search is told to wait (`Retry-After`).
const SEARCH_RETRY_AFTER: &str = "60";

/// 503 for a search or page that found no slot to be rendered in.
fn too_busy() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, SEARCH_RETRY_AFTER)],
        "too many searches at once: try again in a minute\n",
    )
        .into_response()
}

/// The view a feed URL's query string asks for: `q` (a search), `limit` (1 or more, capped
/// at [`publish::MAX_QUERY_LIMIT`]) and `before` (a page cursor). Other parameters are
/// ignored (readers add cache-busting ones); a bad value is an error for the reader.
fn view_of(query: &str) -> Result<View, String> {
    let mut view = View::default();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "q" => view.query = Query::parse(&value).map(|q| (value.trim().to_owned(), q)),
            "limit" => match value.parse::<usize>() {
                Ok(n) if n >= 1 => view.limit = Some(n.min(publish::MAX_QUERY_LIMIT)),
                _ => {
                    return Err(format!(
                        "limit must be a whole number from 1 (got {value:?})\n"
                    ))
                }
            },
            "before" => match Cursor::parse(&value) {
                Some(c) => view.before = Some(c),
                None => return Err(format!("before is not a page cursor (got {value:?})\n")),
            },
            _ => {}
        }
    }
    Ok(view)
}

/// Answers with `doc` in the coding the request prefers, or 304 when the request's validators
/// match; the bytes are already rendered and compressed.
fn serve_document(
    state: &AppState,
    headers: &HeaderMap,
    doc: &Rendered,
    content_type: &str,
    cache_control: &str,
) -> Response {
    let (body, coding) = doc.bytes_of(preferred_coding(headers));
    let mut response_headers = HeaderMap::new();
    insert(&mut response_headers, header::ETAG, doc.etag_of(coding));
    if let Some(t) = served_last_modified(doc) {
        let http_date = httpdate::fmt_http_date(t.into());
        insert(&mut response_headers, header::LAST_MODIFIED, &http_date);
    }
    insert(&mut response_headers, header::CACHE_CONTROL, cache_control);
    insert(
        &mut response_headers,
        header::VARY,
        "Accept-Encoding, Accept",
    );
    if not_modified(headers, doc) {
        Metrics::add(&state.metrics.feed_not_modified, 1);
        return (StatusCode::NOT_MODIFIED, response_headers).into_response();
    }
    insert(&mut response_headers, header::CONTENT_TYPE, content_type);
    if let Some(token) = coding.token() {
        insert(&mut response_headers, header::CONTENT_ENCODING, token);
    }
    (StatusCode::OK, response_headers, body.clone()).into_response()
}

fn insert(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such feed\n").into_response()
}

/// The Last-Modified a response carries: the document's, but never after now, so never
/// after the response's `Date` (a change made while the clock was behind is dated a second
/// after the one before it, which may be ahead of a clock set back).
fn served_last_modified(doc: &Rendered) -> Option<DateTime<Utc>> {
    doc.last_modified.map(|t| t.min(Utc::now()))
}

/// RFC 9110: `If-None-Match` decides when present; otherwise `If-Modified-Since`.
fn not_modified(headers: &HeaderMap, doc: &Rendered) -> bool {
    if let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        return inm.split(',').any(|t| doc.matches(t));
    }
    if let (Some(ims), Some(last_modified)) = (
        headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok()),
        served_last_modified(doc),
    ) {
        let ims: DateTime<Utc> = ims.into();
        return last_modified.timestamp() <= ims.timestamp();
    }
    false
}

/// A header's comma-separated values with their `q` weights (RFC 9110 12.4.2), lowercased.
fn weighted(headers: &HeaderMap, name: header::HeaderName) -> Vec<(String, f32)> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| {
            let mut parts = item.split(';');
            let value = parts.next()?.trim().to_ascii_lowercase();
            if value.is_empty() {
                return None;
            }
            let q = parts
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("q")
                        .then(|| v.trim().parse::<f32>().ok())?
                })
                .next()
                .unwrap_or(1.0)
                .clamp(0.0, 1.0);
            Some((value, q))
        })
        .collect()
}

/// Media types a feed reader may ask for.
const FEED_TYPES: [&str; 7] = [
    "application/atom+xml",
    "application/rss+xml",
    "application/feed+json",
    "application/rdf+xml",
    "application/xml",
    "text/xml",
    "application/json",
];

/// Whether `Accept` gives `text/html` a higher `q` than every feed type: what a browser
/// sends, and never what a feed reader sends (no `Accept`, `*/*`, or feed types first). Each
/// type's `q` is that of the most specific range that names it.
fn prefers_html(headers: &HeaderMap) -> bool {
    let ranges = weighted(headers, header::ACCEPT);
    let q_of = |media: &str| {
        let (kind, _) = media.split_once('/').unwrap_or((media, ""));
        let wildcard = format!("{kind}/*");
        ranges
            .iter()
            .find(|(r, _)| r == media)
            .or_else(|| ranges.iter().find(|(r, _)| *r == wildcard))
            .or_else(|| ranges.iter().find(|(r, _)| r == "*/*"))
            .map_or(0.0, |(_, q)| *q)
    };
    let html = q_of("text/html");
    html > 0.0 && FEED_TYPES.iter().all(|t| q_of(t) < html)
}

/// The coding `Accept-Encoding` prefers among brotli, gzip and identity: the highest `q`,
/// brotli before gzip before identity on a tie. `*` stands for every coding not named;
/// identity is the fallback, acceptable unless refused by name or by `*;q=0`. No header:
/// identity.
fn preferred_coding(headers: &HeaderMap) -> Coding {
    let accepted = weighted(headers, header::ACCEPT_ENCODING);
    if accepted.is_empty() {
        return Coding::Identity;
    }
    let q_of = |name: &str, default: f32| {
        accepted
            .iter()
            .find(|(v, _)| v == name)
            .or_else(|| accepted.iter().find(|(v, _)| v == "*"))
            .map_or(default, |(_, q)| *q)
    };
    let candidates = [
        (Coding::Brotli, q_of("br", 0.0)),
        (Coding::Gzip, q_of("gzip", 0.0).max(q_of("x-gzip", 0.0))),
        // Unnamed identity is acceptable but the last choice (RFC 9110 12.5.3).
        (Coding::Identity, q_of("identity", 0.001)),
    ];
    candidates
        .iter()
        .filter(|(_, q)| *q > 0.0)
        .fold(None::<(Coding, f32)>, |best, &(c, q)| match best {
            Some((_, bq)) if bq >= q => best,
            _ => Some((c, q)),
        })
        .map_or(Coding::Identity, |(c, _)| c)
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
        let mut text = ready_text(&state.clock);
        text.push_str(&failing_sources_text(&state.config(), &state.store));
        (StatusCode::OK, text).into_response()
    }
}

/// At most this many failing sources are named in `/readyz`.
const READYZ_FAILING_SHOWN: usize = 10;

/// A `warning:` line for each failing source (at most [`READYZ_FAILING_SHOWN`], then a
/// count): the others go on, so `/readyz` still answers 200.
fn failing_sources_text(config: &Config, store: &Store) -> String {
    let failing: Vec<(String, SourceState)> = config
        .sources
        .iter()
        .filter(|s| s.enabled)
        .filter_map(|s| Some((s.name.clone(), store.source_state(&s.name).ok()?)))
        .filter(|(_, st)| st.status == SourceStatus::Failing)
        .collect();
    let mut text = String::new();
    for (name, st) in failing.iter().take(READYZ_FAILING_SHOWN) {
        text.push_str(&format!(
            "warning: source {name} failing{}: {}\n",
            st.failing_since
                .map(|t| format!(" since {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
                .unwrap_or_default(),
            config
                .server
                .source_urls
                .text(st.last_error.as_deref().unwrap_or("unknown error"))
        ));
    }
    if failing.len() > READYZ_FAILING_SHOWN {
        text.push_str(&format!(
            "warning: and {} more sources failing (see /api/sources)\n",
            failing.len() - READYZ_FAILING_SHOWN
        ));
    }
    text
}

/// `ready`, and what is wrong with the clock if anything is: a fault worth knowing about
/// that does not stop feedmux from serving, so `/readyz` still answers 200.
fn ready_text(clock: &ClockWatch) -> String {
    let mut text = String::from("ready\n");
    if let Some(jump) = clock.last_jump(crate::daemon::CLOCK_JUMP_SHOWN) {
        text.push_str(&format!(
            "warning: the system clock jumped {} at {}\n",
            jump.describe(),
            jump.at.format("%Y-%m-%d %H:%M:%S UTC")
        ));
    }
    if let Some(skew) = clock.skew().filter(|s| s.is_wrong()) {
        text.push_str(&format!(
            "warning: the system clock is {}\n",
            skew.describe()
        ));
    }
    text
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut body = state
        .metrics
        .render(state.store.item_count() as u64, state.store.size_on_disk());
    if let Some(skew) = state.clock.skew() {
        body.push_str(&format!(
            "# HELP feedmux_clock_skew_seconds The system clock minus the feed servers' clocks (median over the servers last heard from; HTTP Date plus Age).\n# TYPE feedmux_clock_skew_seconds gauge\nfeedmux_clock_skew_seconds {}\n",
            skew.ahead_by.num_seconds()
        ));
    }
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
/// the daemon holds the store. URLs are in their public form (`SourceState::public`).
async fn api_sources(State(state): State<AppState>) -> Response {
    let config = state.config();
    let list: Vec<serde_json::Value> = config
        .sources
        .iter()
        .map(|s| {
            let source_state = state
                .store
                .source_state(&s.name)
                .unwrap_or_default()
                .public(s.url.as_str(), config.server.source_urls);
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
async fn api_items(
    State(state): State<AppState>,
    UrlQuery(query): UrlQuery<ItemsQuery>,
) -> Response {
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

/// A page of the status page (`/?page=N`, from 1), compressed as the request prefers.
async fn status_page(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let number = match page_number(query.as_deref().unwrap_or_default()) {
        Ok(n) => n,
        Err(message) => return (StatusCode::BAD_REQUEST, message).into_response(),
    };
    let config = state.config();
    let failure = state
        .reload_failure
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let (store, publisher) = (state.store.clone(), state.publisher.clone());
    let store_fault = state.metrics.store_fault();
    let clock_jump = state.clock.last_jump(crate::daemon::CLOCK_JUMP_SHOWN);
    let clock_skew = state.clock.skew();
    let now = state.clock.clock().now();
    let coding = preferred_coding(&headers);
    let page = tokio::task::spawn_blocking(move || {
        let faults = status_page::Faults {
            reload_failure: failure.as_ref(),
            store_fault: store_fault.as_ref(),
            clock_jump: clock_jump.as_ref(),
            clock_skew: clock_skew.as_ref(),
        };
        let html = status_page::page(&config, &store, &publisher, faults, now, number)?;
        let doc = Rendered::for_one_request(html.into_bytes());
        let (body, coding) = doc.encoded(coding);
        Ok::<_, crate::store::StoreError>((body.clone(), coding))
    })
    .await;
    match page {
        Ok(Ok((body, coding))) => {
            let mut response_headers = HeaderMap::new();
            insert(
                &mut response_headers,
                header::CONTENT_TYPE,
                "text/html; charset=utf-8",
            );
            insert(&mut response_headers, header::CACHE_CONTROL, "no-cache");
            insert(&mut response_headers, header::VARY, "Accept-Encoding");
            if let Some(token) = coding.token() {
                insert(&mut response_headers, header::CONTENT_ENCODING, token);
            }
            (response_headers, body).into_response()
        }
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

/// The status page's `page` parameter: a whole number from 1, 1 when absent. Other
/// parameters are ignored.
fn page_number(query: &str) -> Result<usize, String> {
    let mut number = 1;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if key == "page" {
            number = match value.parse::<usize>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(format!(
                        "page must be a whole number from 1 (got {value:?})\n"
                    ))
                }
            };
        }
    }
    Ok(number)
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
        opml::write(
            &config,
            &states,
            opml::FeedUrls::Public(config.server.source_urls),
        ),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coding_for(accept_encoding: &str) -> Coding {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(accept_encoding).unwrap(),
        );
        preferred_coding(&h)
    }

    #[test]
    fn content_coding_follows_q_values() {
        assert_eq!(preferred_coding(&HeaderMap::new()), Coding::Identity);
        assert_eq!(coding_for("gzip, deflate, br"), Coding::Brotli);
        assert_eq!(coding_for("gzip, deflate"), Coding::Gzip);
        assert_eq!(coding_for("br;q=0.5, gzip;q=0.8"), Coding::Gzip);
        assert_eq!(coding_for("br;q=0, gzip"), Coding::Gzip);
        assert_eq!(coding_for("gzip;q=0, identity"), Coding::Identity);
        assert_eq!(coding_for("identity"), Coding::Identity);
        assert_eq!(coding_for("*"), Coding::Brotli);
        assert_eq!(coding_for("*;q=0.5, br;q=0.1"), Coding::Gzip);
        assert_eq!(coding_for("deflate"), Coding::Identity);
        assert_eq!(coding_for("GZIP ; Q=0.9, identity;q=0.5"), Coding::Gzip);
        assert_eq!(coding_for("br;q=0.3, identity;q=0.9"), Coding::Identity);
    }

    /// A feed changed while the clock was set back is dated a second after its previous
    /// Last-Modified, ahead of the clock: it is served as now, never after the Date.
    #[test]
    fn a_last_modified_ahead_of_the_clock_is_served_as_now() {
        let mut doc = Rendered::new(b"feed".to_vec(), publish::Effort::OnDemand);
        let ahead = Utc::now() + chrono::Duration::hours(1);
        doc.last_modified = Some(ahead);
        let served = served_last_modified(&doc).unwrap();
        assert!(served <= Utc::now(), "{served} is ahead of now");
        let past = Utc::now() - chrono::Duration::hours(1);
        doc.last_modified = Some(past);
        assert_eq!(served_last_modified(&doc), Some(past));
    }

    #[test]
    fn a_refused_search_is_told_to_come_back_in_a_minute() {
        let response = too_busy();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "60");
    }

    #[test]
    fn the_status_page_number_is_a_whole_number_from_one() {
        assert_eq!(page_number(""), Ok(1));
        assert_eq!(page_number("page=3&x=y"), Ok(3));
        for bad in ["page=0", "page=x", "page=-1", "page=", "page=1.5"] {
            let message = page_number(bad).unwrap_err();
            assert!(
                message.starts_with("page must be a whole number"),
                "{bad}: {message}"
            );
        }
    }

    #[test]
    fn browsers_prefer_html_and_readers_do_not() {
        let prefers = |accept: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
            prefers_html(&h)
        };
        assert!(!prefers_html(&HeaderMap::new()), "no Accept: the feed");
        // Chromium and Firefox.
        assert!(prefers("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"));
        assert!(prefers(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        ));
        // feedparser, a typical reader, curl.
        assert!(!prefers("application/atom+xml,application/rdf+xml,application/rss+xml,application/x-netcdf,application/xml;q=0.9,text/xml;q=0.2,*/*;q=0.1"));
        assert!(!prefers(
            "application/rss+xml, application/atom+xml, text/html;q=0.5"
        ));
        assert!(!prefers("*/*"));
        assert!(
            !prefers("text/html, application/atom+xml"),
            "a tie is the feed"
        );
        assert!(
            !prefers("text/*, application/xml"),
            "text/xml ties text/html"
        );
    }
}
