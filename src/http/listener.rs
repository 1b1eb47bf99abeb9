//! The HTTP listener: accepts connections and serves the [`crate::http::routes`] router on them
//! within fixed limits, so that no client can exhaust the server.
//!
//! - at most [`Limits::max_connections`] connections at once (further ones wait in the
//!   kernel's accept queue until one closes);
//! - a request's head (request line and headers) must arrive within
//!   [`Limits::header_read_timeout`] and fit in [`Limits::max_header_bytes`] (larger: 431), so
//!   a slowloris client holding half-sent requests is cut off;
//! - a connection lives at most [`Limits::max_connection_age`] (then it is closed after its
//!   current response), so a client that never reads its response cannot hold a slot;
//! - only GET and HEAD are answered (anything else: 405 with `Allow`), and a request carrying
//!   a body is refused (413): the server is read-only.
//!
//! Every response, whichever route or refusal made it, gets its security headers here
//! ([`security_headers`]): `X-Content-Type-Options: nosniff` always, and on HTML a
//! `Content-Security-Policy` that allows no script.
//!
//! This module owns the connection loop and these limits; the routes are in `server`. hyper
//! is used here and nowhere else; axum only here and in `server`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::debug;

/// Default [`Limits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default [`Limits::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`Limits::max_header_bytes`].
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Default [`Limits::max_connection_age`].
pub const DEFAULT_MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);
/// How long a stop waits for open connections to finish their responses.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// A connection asked to close (age or stop) that does not within this time is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// What one client may hold of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connection_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_connection_age: DEFAULT_MAX_CONNECTION_AGE,
        }
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes; then stops
/// accepting, lets open connections finish their responses (briefly) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let app = app
        .layer(axum::middleware::from_fn(read_only))
        .layer(axum::middleware::from_fn(security_headers));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let mut stop = stop_rx.clone();
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_header_size(limits.max_header_bytes)
                .keep_alive(true);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let age = tokio::time::sleep(limits.max_connection_age);
            tokio::pin!(age);
            let result = tokio::select! {
                r = connection.as_mut() => Some(r),
                () = &mut age => None,
                _ = stop.wait_for(|s| *s) => None,
            };
            let result = match result {
                Some(r) => r,
                None => {
                    connection.as_mut().graceful_shutdown();
                    match tokio::time::timeout(CLOSE_GRACE, connection.as_mut()).await {
                        Ok(r) => r,
                        Err(_) => Ok(()),
                    }
                }
            };
            if let Err(e) = result {
                debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
    Ok(())
}

/// Answers only GET and HEAD, and only without a request body.
async fn read_only(request: Request, next: Next) -> Response {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, HEAD")],
            "feedmux is read-only: only GET and HEAD\n",
        )
            .into_response();
    }
    let headers = request.headers();
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    if has_body {
        let mut response = (
            StatusCode::PAYLOAD_TOO_LARGE,
            "requests carry no body here\n",
        )
            .into_response();
        // The unread body would otherwise be taken for the next request.
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return response;
    }
    next.run(request).await
}

/// What an HTML page of feedmux may use: its inline style and inline SVG, nothing else.
pub const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What the browser view of a feed (`/feeds/…`) may use: its inline style, and its entries'
/// images and media over the web.
pub const FEED_VIEW_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src http: https:; media-src http: https:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Adds `X-Content-Type-Options: nosniff` to every response, and to every HTML one a
/// `Content-Security-Policy` ([`FEED_VIEW_CSP`] under `/feeds/`, else [`PAGE_CSP`]). The one
/// place these headers are set: it wraps every route, the fallback and the refusals.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let feed_view = request.uri().path().starts_with("/feeds/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    let html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("text/html"));
    if html {
        let policy = if feed_view { FEED_VIEW_CSP } else { PAGE_CSP };
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            header::HeaderValue::from_static(policy),
        );
    }
    response
}
