//! The HTTP server: read-only routes over what the daemon already has.
//!
//! Output feeds are served from the publisher's cache: the coding `Accept-Encoding` prefers
//! (brotli, gzip, none), 304 for matching validators, `max-age` until the feed's next poll,
//! and the HTML view for a browser asking for `.atom` or `.rss` (`Accept`). Searches and pages
//! (`?q=`, `?limit=`, `?before=`) are the one thing rendered per request, by
//! `publish::render_view` on a blocking thread. The status page and OPML read the config and
//! the source states. Nothing here fetches or parses feeds, and no route changes anything.
//! axum is used here and nowhere else.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::filter::Query;
use crate::metrics::Metrics;
use crate::publish::{
    self, feed_url, Coding, Cursor, Format, PublishError, Publisher, Rendered, View,
};
use crate::store::Store;

/// What the routes read.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<RwLock<Arc<Config>>>,
    pub store: Store,
    pub publisher: Arc<Publisher>,
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
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
        .with_state(state)
}

async fn feed(
    State(state): State<AppState>,
    Path(file): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    Metrics::add(&state.metrics.feed_requests, 1);
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
        publish::max_age(next_poll, Utc::now())
    );
    if view.is_whole_feed() {
        let Some(doc) = rendered.get(format) else {
            return not_found();
        };
        return serve_document(&state, &headers, doc, format.content_type(), &cache_control);
    }
    // A search or a page: rendered for this request (the store is read off the async threads).
    let store = state.store.clone();
    let feed_name = name.to_owned();
    let rendered = tokio::task::spawn_blocking(move || {
        publish::render_view(&store, &config, &feed_name, &view, format)
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
    if let Some(t) = doc.last_modified {
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
    if content_type.starts_with("text/html") {
        // The view has no script and loads only its entries' images and media.
        insert(
            &mut response_headers,
            header::CONTENT_SECURITY_POLICY,
            HTML_VIEW_CSP,
        );
        insert(
            &mut response_headers,
            header::X_CONTENT_TYPE_OPTIONS,
            "nosniff",
        );
    }
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
        doc.last_modified,
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

/// What the HTML view may load: its inline style, and images and media over the web.
const HTML_VIEW_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src http: https:; media-src http: https:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

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

async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
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

fn esc(s: &str) -> String {
    html_escape::encode_text(s).into_owned()
}

fn attr(s: &str) -> String {
    html_escape::encode_double_quoted_attribute(s).into_owned()
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "—".to_owned())
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

async fn status_page(State(state): State<AppState>) -> Response {
    let config = state.config();
    let mut html = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>feedmux</title>\n",
    );
    for feed in &config.feeds {
        for (format, mime) in [
            (Format::Atom, "application/atom+xml"),
            (Format::Rss, "application/rss+xml"),
            (Format::Json, "application/feed+json"),
        ] {
            html.push_str(&format!(
                "<link rel=\"alternate\" type=\"{mime}\" title=\"{}\" href=\"{}\">\n",
                attr(&feed.title),
                attr(&feed_url(&config, &feed.name, format))
            ));
        }
    }
    html.push_str("<style>body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}td,th{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}.failing{color:#b00}</style>\n</head><body>\n<h1>feedmux</h1>\n<h2>Output feeds</h2>\n<table><tr><th>feed</th><th>entries</th><th>subscribe</th></tr>\n");
    for feed in &config.feeds {
        let entries = state
            .publisher
            .get(&feed.name)
            .map(|r| r.entries.to_string())
            .unwrap_or_else(|| "—".to_owned());
        let links: Vec<String> = Format::ALL
            .iter()
            .map(|f| {
                format!(
                    "<a href=\"{}\">{}</a>",
                    attr(&feed_url(&config, &feed.name, *f)),
                    f.extension()
                )
            })
            .collect();
        html.push_str(&format!(
            "<tr><td>{}</td><td>{entries}</td><td>{}</td></tr>\n",
            esc(&feed.title),
            links.join(" · ")
        ));
    }
    html.push_str("</table>\n<h2>Sources</h2>\n<table><tr><th>source</th><th>status</th><th>items</th><th>last poll</th><th>next poll</th><th>last error</th></tr>\n");
    for source in &config.sources {
        let s = state.store.source_state(&source.name).unwrap_or_default();
        let class = if s.last_error.is_some() {
            " class=\"failing\""
        } else {
            ""
        };
        html.push_str(&format!(
            "<tr{class}><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            attr(source.url.as_str()),
            esc(&source.name),
            esc(&if source.enabled { s.health() } else { "disabled".to_owned() }),
            s.item_count,
            when(s.last_poll),
            when(s.next_poll),
            esc(&s.note(source.url.as_str()))
        ));
    }
    html.push_str("</table>\n</body></html>\n");
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        html,
    )
        .into_response()
}

async fn opml(State(state): State<AppState>) -> Response {
    let config = state.config();
    let mut body = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<opml version=\"2.0\">\n<head><title>feedmux sources</title></head>\n<body>\n",
    );
    for source in &config.sources {
        let s = state.store.source_state(&source.name).unwrap_or_default();
        let title = source
            .title
            .clone()
            .or(s.title)
            .unwrap_or_else(|| source.name.clone());
        let mut line = format!(
            "<outline type=\"rss\" text=\"{}\" title=\"{}\" xmlUrl=\"{}\"",
            attr(&title),
            attr(&title),
            attr(source.url.as_str())
        );
        if let Some(site) = &s.site_url {
            line.push_str(&format!(" htmlUrl=\"{}\"", attr(site)));
        }
        if !source.tags.is_empty() {
            line.push_str(&format!(" category=\"{}\"", attr(&source.tags.join(","))));
        }
        line.push_str("/>\n");
        body.push_str(&line);
    }
    body.push_str("</body>\n</opml>\n");
    ([(header::CONTENT_TYPE, "text/x-opml; charset=utf-8")], body).into_response()
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
