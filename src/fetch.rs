//! Fetching: the one HTTP client, conditional GET, politeness, limits, and `file://` sources.
//!
//! `fetch` turns a URL and the validators from the last poll into the bytes of the body and the
//! HTTP facts that later stages need (content type, final URL, new validators, caching and
//! retry hints, a permanent redirect), or into [`FetchOutcome::NotModified`]. Every request
//! waits for its host's turn (at most N at once per host, a minimum gap between requests to one
//! host). Redirects are followed here, at most [`MAX_REDIRECTS`], with loops detected. The body
//! is read with an idle timeout between chunks and a size limit counted on the decompressed
//! bytes as they stream, so a gzip bomb stops at the limit. A `file:` source must be a regular
//! file (never a device, FIFO, socket or directory: [`FetchError::NotAFile`]) and is read under
//! the same size limit and whole-request timeout. This module knows nothing about feed formats
//! and never touches the store. Only configured hosts may lead into private networks: every
//! other host a fetch reaches must be public or allowed ([`address`]). It also sends WebSub
//! publish pings
//! ([`Fetcher::publish_to_hub`]). reqwest is used here and nowhere else.
//!
//! The full URL goes only to the server: no error of this module says more of a URL than
//! [`redact::url()`] (reqwest's errors are taken [`without_url`](reqwest::Error::without_url)).

use std::collections::HashMap;
use std::fs::FileType;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use reqwest::header::{self, HeaderValue};
use reqwest::{redirect, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use url::Url;

use crate::config::PollConfig;
use crate::redact;

pub mod address;
mod headers;

use address::{AddressPolicy, GuardedResolver, Refused};
pub use headers::retry_after;
use headers::{header_text, header_value, http_date, max_age, server_time};

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

/// What the server said about when to come back, and where the feed now lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpHints {
    /// `Cache-Control: max-age`.
    pub max_age: Option<Duration>,
    /// `Expires`.
    pub expires: Option<DateTime<Utc>>,
    /// `Retry-After` (on any response), as a time.
    pub retry_after: Option<DateTime<Utc>>,
    /// Set when every redirect on the way was permanent (301/308): the URL they led to.
    pub permanent_redirect: Option<Url>,
    /// The time on the server's clock when it answered: its `Date`, plus the `Age` a cache
    /// added (for comparing clocks, see `clock::ClockWatch::compare_with_server`).
    pub server_time: Option<DateTime<Utc>>,
}

/// A body fetched successfully.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub body: Bytes,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The URL that was asked for.
    pub requested_url: Url,
    /// The URL the body came from after redirects; relative links resolve against it.
    pub final_url: Url,
    pub validators: Validators,
    pub hints: HttpHints,
}

#[derive(Debug, Clone)]
pub enum FetchOutcome {
    /// The server answered 304: nothing changed since the validators were issued.
    NotModified(HttpHints),
    Fetched(Box<Fetched>),
}

/// Why a fetch failed. Every message names what happened in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("HTTP {status}{}", retry_after.map(|t| format!(" (Retry-After: {})", t.to_rfc3339())).unwrap_or_default())]
    Status {
        status: StatusCode,
        retry_after: Option<DateTime<Utc>>,
    },
    #[error("HTTP 410 Gone: the publisher has removed this feed")]
    Gone,
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("the server sent nothing for {0:?} in the middle of the body")]
    IdleTimeout(Duration),
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("too many redirects (more than {MAX_REDIRECTS})")]
    TooManyRedirects,
    #[error("redirect loop: {} was reached twice", redact::Public(.0))]
    RedirectLoop(Url),
    #[error("redirect without a usable Location header (HTTP {0})")]
    BadRedirect(StatusCode),
    #[error("body is larger than the limit of {limit} bytes (after decompression)")]
    TooLarge { limit: u64 },
    /// A host other than the configured ones that is not public: `address`.
    #[error("{0}")]
    Refused(#[from] Refused),
    #[error("request failed: {0}")]
    Request(String),
    #[error("cannot read {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A `file:` source that is not a regular file: reading a device such as `/dev/zero`
    /// never ends, and a FIFO waits for a writer forever.
    #[error("cannot read {path}: it is a {kind}, and a file: source must be a regular file")]
    NotAFile { path: PathBuf, kind: &'static str },
    /// The URL's scheme is not fetched (its public form, [`redact::url()`]).
    #[error("unsupported URL {0}")]
    Unsupported(String),
}

impl FetchError {
    /// When the server asked to be left alone until, if it did.
    pub fn retry_after(&self) -> Option<DateTime<Utc>> {
        match self {
            FetchError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Errors of the client's construction (a bad TLS set-up, say); fatal at start-up.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct ClientError(String);

/// Per-host politeness: at most `per_host` requests at once and `gap` between request starts.
#[derive(Debug)]
struct HostLimits {
    per_host: usize,
    gap: Duration,
    hosts: Mutex<HashMap<String, Arc<HostSlot>>>,
}

#[derive(Debug)]
struct HostSlot {
    permits: Arc<Semaphore>,
    next_start: tokio::sync::Mutex<Instant>,
}

impl HostLimits {
    /// Waits for the host's turn; the request may run while the permit is held.
    async fn wait_turn(&self, host: &str) -> Option<OwnedSemaphorePermit> {
        let slot = {
            let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
            hosts
                .entry(host.to_owned())
                .or_insert_with(|| {
                    Arc::new(HostSlot {
                        permits: Arc::new(Semaphore::new(self.per_host.max(1))),
                        next_start: tokio::sync::Mutex::new(Instant::now()),
                    })
                })
                .clone()
        };
        let permit = slot.permits.clone().acquire_owned().await.ok()?;
        let mut next = slot.next_start.lock().await;
        let now = Instant::now();
        if *next > now {
            tokio::time::sleep_until(*next).await;
        }
        *next = Instant::now() + self.gap;
        Some(permit)
    }
}

/// The one HTTP client, with the limits of `[poll]`.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    timeout: Duration,
    idle_timeout: Duration,
    max_body_bytes: u64,
    hosts: Arc<HostLimits>,
    resolver: GuardedResolver,
    /// Requests go through a proxy, which resolves names: see
    /// [`AddressPolicy::check_name_behind_proxy`].
    proxied: bool,
}

impl Fetcher {
    /// The client of `[poll]`, trusting no host: it may reach private networks only as
    /// `allow_private_networks` says until [`Fetcher::set_address_policy`] names the
    /// configured hosts.
    pub fn new(poll: &PollConfig) -> Result<Fetcher, ClientError> {
        let resolver = GuardedResolver::default();
        resolver.set_policy(AddressPolicy::new([], poll.allow_private_networks.clone()));
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(resolver.clone()))
            .user_agent(USER_AGENT)
            .connect_timeout(poll.connect_timeout)
            .timeout(poll.timeout)
            .redirect(redirect::Policy::none())
            .gzip(true)
            .brotli(true)
            .deflate(true)
            .build()
            .map_err(|e| ClientError(e.to_string()))?;
        Ok(Fetcher {
            client,
            timeout: poll.timeout,
            idle_timeout: poll.idle_timeout,
            max_body_bytes: poll.max_body_bytes,
            hosts: Arc::new(HostLimits {
                per_host: poll.per_host_concurrency,
                gap: poll.per_host_interval,
                hosts: Mutex::new(HashMap::new()),
            }),
            resolver,
            proxied: address::proxy_in_environment(),
        })
    }

    /// Which hosts may be reached although they are not public (the configured ones, the
    /// allowed networks); a reload sets it again.
    pub fn set_address_policy(&self, policy: AddressPolicy) {
        self.resolver.set_policy(policy);
    }

    /// Tells a WebSub hub that `topic` changed: `POST hub.mode=publish&hub.url=<topic>`
    /// (the publish ping hubs such as PubSubHubbub and WebSub.Rocks accept). Any 2xx is
    /// success; the hub then fetches the topic itself.
    pub async fn publish_to_hub(&self, hub: &Url, topic: &str) -> Result<u16, FetchError> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("hub.mode", "publish")
            .append_pair("hub.url", topic)
            .finish();
        self.check_before_request(hub).await?;
        let response = self
            .client
            .post(hub.clone())
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .body(body)
            .send()
            .await
            .map_err(|e| self.classify(e))?;
        let status = response.status();
        if status.is_success() {
            Ok(status.as_u16())
        } else {
            Err(FetchError::Status {
                status,
                retry_after: None,
            })
        }
    }

    /// Fetches `url`, sending `validators` as `If-None-Match` / `If-Modified-Since`.
    pub async fn fetch(
        &self,
        url: &Url,
        validators: &Validators,
    ) -> Result<FetchOutcome, FetchError> {
        self.fetch_timed(url, validators).await.0
    }

    /// [`Fetcher::fetch`], and how long the fetch itself took: requests, redirects and body,
    /// failures included, but not the waits for the host's turn (`[poll]
    /// per_host_concurrency` and `per_host_interval`), which are politeness, not the
    /// source's speed.
    pub async fn fetch_timed(
        &self,
        url: &Url,
        validators: &Validators,
    ) -> (Result<FetchOutcome, FetchError>, Duration) {
        let started = Instant::now();
        let mut waited = Duration::ZERO;
        let outcome = match url.scheme() {
            "http" | "https" => self.fetch_http(url, validators, &mut waited).await,
            "file" => self.fetch_file(url).await,
            _ => Err(FetchError::Unsupported(redact::url(url))),
        };
        (outcome, started.elapsed().saturating_sub(waited))
    }

    /// Fetches over HTTP, adding the time spent waiting for the host's turn to `waited`.
    async fn fetch_http(
        &self,
        url: &Url,
        validators: &Validators,
        waited: &mut Duration,
    ) -> Result<FetchOutcome, FetchError> {
        let mut current = url.clone();
        let mut visited = vec![current.clone()];
        let mut all_permanent = true;
        let (response, _host_turn) = loop {
            self.check_before_request(&current).await?;
            let (response, turn) = self.request(&current, validators, waited).await?;
            let status = response.status();
            if !status.is_redirection() || status == StatusCode::NOT_MODIFIED {
                break (response, turn);
            }
            drop(turn);
            if visited.len() > MAX_REDIRECTS {
                return Err(FetchError::TooManyRedirects);
            }
            let next = response
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| current.join(l.trim()).ok())
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .ok_or(FetchError::BadRedirect(status))?;
            if visited.contains(&next) {
                return Err(FetchError::RedirectLoop(next));
            }
            all_permanent &= matches!(
                status,
                StatusCode::MOVED_PERMANENTLY | StatusCode::PERMANENT_REDIRECT
            );
            visited.push(next.clone());
            current = next;
        };
        let status = response.status();
        let headers = response.headers().clone();
        let hints = HttpHints {
            max_age: max_age(&headers),
            expires: http_date(&headers, header::EXPIRES),
            retry_after: retry_after(&headers, Utc::now()),
            permanent_redirect: (visited.len() > 1 && all_permanent).then(|| current.clone()),
            server_time: server_time(&headers),
        };
        if status == StatusCode::NOT_MODIFIED {
            return Ok(FetchOutcome::NotModified(hints));
        }
        if status == StatusCode::GONE {
            return Err(FetchError::Gone);
        }
        if !status.is_success() {
            return Err(FetchError::Status {
                status,
                retry_after: hints.retry_after,
            });
        }
        let body = self.read_body(response).await?;
        Ok(FetchOutcome::Fetched(Box::new(Fetched {
            body,
            content_type: header_text(&headers, header::CONTENT_TYPE),
            requested_url: url.clone(),
            final_url: current,
            validators: Validators {
                etag: header_text(&headers, header::ETAG),
                last_modified: header_text(&headers, header::LAST_MODIFIED),
            },
            hints,
        })))
    }

    /// One request to one URL, after waiting for the host's turn. The returned permit is the
    /// host's turn: hold it until the body is read.
    async fn request(
        &self,
        url: &Url,
        validators: &Validators,
        waited: &mut Duration,
    ) -> Result<(reqwest::Response, Option<OwnedSemaphorePermit>), FetchError> {
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let turn_asked = Instant::now();
        let permit = self.hosts.wait_turn(&host).await;
        *waited += turn_asked.elapsed();
        let mut request = self.client.get(url.clone()).header(header::ACCEPT, ACCEPT);
        if let Some(etag) = validators.etag.as_deref().and_then(header_value) {
            request = request.header(header::IF_NONE_MATCH, etag);
        }
        if let Some(lm) = validators.last_modified.as_deref().and_then(header_value) {
            request = request.header(header::IF_MODIFIED_SINCE, lm);
        }
        let response = request.send().await.map_err(|e| self.classify(e))?;
        Ok((response, permit))
    }

    /// Refuses a URL the address policy does not allow: an address written in it, and,
    /// behind a proxy, a host name that resolves only to addresses not allowed.
    async fn check_before_request(&self, url: &Url) -> Result<(), Refused> {
        let policy = self.resolver.policy();
        policy.check_url(url)?;
        if self.proxied {
            policy.check_name_behind_proxy(url, self.timeout).await?;
        }
        Ok(())
    }

    /// Reads the (decompressed) body, stopping at the size limit or when the server stalls.
    async fn read_body(&self, response: reqwest::Response) -> Result<Bytes, FetchError> {
        let limit = self.max_body_bytes;
        let mut body = BytesMut::new();
        let mut stream = response.bytes_stream();
        loop {
            let next = tokio::time::timeout(self.idle_timeout, stream.next())
                .await
                .map_err(|_| FetchError::IdleTimeout(self.idle_timeout))?;
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| self.classify(e))?;
            if body.len() as u64 + chunk.len() as u64 > limit {
                return Err(FetchError::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    /// Reads a `file:` source: a regular file only, at most `max_body_bytes`, within the
    /// whole-request timeout (on a blocking thread, as file I/O is).
    async fn fetch_file(&self, url: &Url) -> Result<FetchOutcome, FetchError> {
        let path = url
            .to_file_path()
            .map_err(|()| FetchError::Unsupported(redact::url(url)))?;
        let limit = self.max_body_bytes;
        let read = tokio::task::spawn_blocking(move || read_regular_file(&path, limit));
        let body = match tokio::time::timeout(self.timeout, read).await {
            Err(_) => return Err(FetchError::Timeout(self.timeout)),
            Ok(Err(e)) => return Err(FetchError::Request(format!("file read task failed: {e}"))),
            Ok(Ok(read)) => read?,
        };
        Ok(FetchOutcome::Fetched(Box::new(Fetched {
            body: Bytes::from(body),
            content_type: None,
            requested_url: url.clone(),
            final_url: url.clone(),
            validators: Validators::default(),
            hints: HttpHints::default(),
        })))
    }

    fn classify(&self, e: reqwest::Error) -> FetchError {
        if let Some(refused) = refusal_in(&e) {
            FetchError::Refused(refused.clone())
        } else if e.is_timeout() {
            FetchError::Timeout(self.timeout)
        } else if e.is_connect() {
            FetchError::Connect(error_chain(&e.without_url()))
        } else {
            FetchError::Request(error_chain(&e.without_url()))
        }
    }
}

/// The bytes of the regular file at `path`, at most `limit` of them.
///
/// The path is checked before it is opened (a FIFO's `open` waits for a writer), opened
/// without blocking and without becoming a controlling terminal, and what was opened is
/// checked again (the path may have been replaced in between). The read stops one byte past
/// the limit, so a file that grows while it is read cannot take more memory than that.
fn read_regular_file(path: &Path, limit: u64) -> Result<Vec<u8>, FetchError> {
    let file_error = |source| FetchError::File {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(file_error)?;
    regular_file(path, meta.file_type())?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(file_error)?;
    let meta = file.metadata().map_err(file_error)?;
    regular_file(path, meta.file_type())?;
    if meta.len() > limit {
        return Err(FetchError::TooLarge { limit });
    }
    let mut body = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut body)
        .map_err(file_error)?;
    if body.len() as u64 > limit {
        return Err(FetchError::TooLarge { limit });
    }
    Ok(body)
}

/// `Ok` for a regular file; [`FetchError::NotAFile`] naming what `path` is otherwise.
fn regular_file(path: &Path, file_type: FileType) -> Result<(), FetchError> {
    if file_type.is_file() {
        return Ok(());
    }
    let kind = if file_type.is_dir() {
        "directory"
    } else if file_type.is_fifo() {
        "FIFO (named pipe)"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_block_device() {
        "block device"
    } else {
        "special file"
    };
    Err(FetchError::NotAFile {
        path: path.to_owned(),
        kind,
    })
}

/// The resolver's refusal, somewhere in the chain of causes of a request's error.
fn refusal_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused);
        }
        cause = e.source();
    }
    None
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
