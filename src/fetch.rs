//! Fetching: the one HTTP client, conditional GET, size and time limits, and `file://` sources.
//!
//! `fetch` turns a URL and the validators from the last poll into the bytes of the body and the
//! HTTP facts that later stages need (content type, final URL, new validators), or into
//! [`FetchOutcome::NotModified`]. It knows nothing about feed formats and never touches the store.
//! reqwest is used here and nowhere else.

use std::path::PathBuf;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{redirect, StatusCode};
use url::Url;

use crate::config::PollConfig;

/// The User-Agent sent with every request.
pub const USER_AGENT: &str = concat!(
    "feedmux/",
    env!("CARGO_PKG_VERSION"),
    " (+",
    env!("CARGO_PKG_HOMEPAGE"),
    ")"
);
/// Redirects followed before a fetch fails.
pub const MAX_REDIRECTS: usize = 5;
const ACCEPT: &str = "application/atom+xml, application/rss+xml, application/feed+json, \
application/rdf+xml;q=0.9, application/xml;q=0.9, text/xml;q=0.9, application/json;q=0.8, */*;q=0.5";

/// The validators of the last successful fetch, sent back for a conditional GET.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// A body fetched successfully.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub body: Bytes,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The URL that was asked for (the source's URL).
    pub requested_url: Url,
    /// The URL the body came from after redirects; relative links resolve against it.
    pub final_url: Url,
    pub validators: Validators,
}

#[derive(Debug, Clone)]
pub enum FetchOutcome {
    /// The server answered 304: nothing changed since the validators were issued.
    NotModified,
    Fetched(Box<Fetched>),
}

/// Why a fetch failed. Every message names what happened in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("HTTP {status}")]
    Status { status: StatusCode },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("too many redirects (more than {MAX_REDIRECTS})")]
    TooManyRedirects,
    #[error("body is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("request failed: {0}")]
    Request(String),
    #[error("cannot read {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unsupported URL {0}")]
    Unsupported(String),
}

/// Errors of the client's construction (a bad TLS set-up, say); fatal at start-up.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct ClientError(String);

/// The one HTTP client, with the limits of `[poll]`.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    timeout: Duration,
    max_body_bytes: u64,
}

impl Fetcher {
    pub fn new(poll: &PollConfig) -> Result<Fetcher, ClientError> {
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(poll.connect_timeout)
            .timeout(poll.timeout)
            .redirect(redirect::Policy::limited(MAX_REDIRECTS))
            .gzip(true)
            .brotli(true)
            .deflate(true)
            .build()
            .map_err(|e| ClientError(e.to_string()))?;
        Ok(Fetcher {
            client,
            timeout: poll.timeout,
            max_body_bytes: poll.max_body_bytes,
        })
    }

    /// Fetches `url`, sending `validators` as `If-None-Match` / `If-Modified-Since`.
    pub async fn fetch(
        &self,
        url: &Url,
        validators: &Validators,
    ) -> Result<FetchOutcome, FetchError> {
        match url.scheme() {
            "http" | "https" => self.fetch_http(url, validators).await,
            "file" => self.fetch_file(url).await,
            _ => Err(FetchError::Unsupported(url.to_string())),
        }
    }

    async fn fetch_http(
        &self,
        url: &Url,
        validators: &Validators,
    ) -> Result<FetchOutcome, FetchError> {
        let mut request = self.client.get(url.clone()).header(header::ACCEPT, ACCEPT);
        if let Some(etag) = validators.etag.as_deref().and_then(header_value) {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        if let Some(lm) = validators.last_modified.as_deref().and_then(header_value) {
            request = request.header(header::IF_MODIFIED_SINCE, lm);
        }
        let response = request.send().await.map_err(|e| self.classify(e))?;
        let status = response.status();
        if status == StatusCode::NOT_MODIFIED {
            return Ok(FetchOutcome::NotModified);
        }
        if !status.is_success() {
            return Err(FetchError::Status { status });
        }
        let final_url = response.url().clone();
        let headers = response.headers().clone();
        if response
            .content_length()
            .is_some_and(|n| n > self.max_body_bytes)
        {
            return Err(FetchError::TooLarge {
                limit: self.max_body_bytes,
            });
        }
        let mut body = BytesMut::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.classify(e))?;
            if body.len() as u64 + chunk.len() as u64 > self.max_body_bytes {
                return Err(FetchError::TooLarge {
                    limit: self.max_body_bytes,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(FetchOutcome::Fetched(Box::new(Fetched {
            body: body.freeze(),
            content_type: header_text(&headers, header::CONTENT_TYPE),
            requested_url: url.clone(),
            final_url,
            validators: Validators {
                etag: header_text(&headers, header::ETAG),
                last_modified: header_text(&headers, header::LAST_MODIFIED),
            },
        })))
    }

    async fn fetch_file(&self, url: &Url) -> Result<FetchOutcome, FetchError> {
        let path = url
            .to_file_path()
            .map_err(|()| FetchError::Unsupported(url.to_string()))?;
        let file_error = |source| FetchError::File {
            path: path.clone(),
            source,
        };
        let meta = tokio::fs::metadata(&path).await.map_err(file_error)?;
        if meta.len() > self.max_body_bytes {
            return Err(FetchError::TooLarge {
                limit: self.max_body_bytes,
            });
        }
        let body = tokio::fs::read(&path).await.map_err(file_error)?;
        Ok(FetchOutcome::Fetched(Box::new(Fetched {
            body: Bytes::from(body),
            content_type: None,
            requested_url: url.clone(),
            final_url: url.clone(),
            validators: Validators::default(),
        })))
    }

    fn classify(&self, e: reqwest::Error) -> FetchError {
        if e.is_timeout() {
            FetchError::Timeout(self.timeout)
        } else if e.is_redirect() {
            FetchError::TooManyRedirects
        } else if e.is_connect() {
            FetchError::Connect(error_chain(&e))
        } else {
            FetchError::Request(error_chain(&e))
        }
    }
}

fn header_value(text: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(text).ok()
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// The error and its causes on one line, e.g. "error sending request: connection refused".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cause = c.source();
    }
    text
}
