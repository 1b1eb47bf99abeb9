//! Configuration: the TOML file of the contract, read in two phases.
//!
//! Phase one deserialises the text into `Raw*` structs that mirror the file (unknown keys are an
//! error, and every value the validator may complain about keeps its byte span). Phase two turns
//! them into a [`Config`] with every default filled in, URLs parsed, cron schedules and regexes
//! compiled, and cross references checked. Every problem is reported as a [`ConfigError`] naming
//! `file:line:column`, and all problems are reported at once rather than the first only.
//!
//! Here: the [`Config`] types, loading and the error report; beside it `raw` (phase one),
//! `validate` and `feeds` (phase two) and `values` (schedules, durations, sizes, names).
//!
//! This module must not touch the network or the store.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

use crate::dedup::meaning::MeaningModel;
use crate::dedup::DedupConfig;
use crate::redact::{self, Urls};
use url::Url;

mod feeds;
mod raw;
mod storage;
mod validate;
mod values;
use feeds::*;
use raw::*;
pub use storage::{
    DatabaseTls, DatabaseUrl, Environment, RootCerts, SslMode, StorageEngine, STORAGE_URL_VAR,
};
pub use validate::parse_source_url;
use validate::*;
use values::*;
pub use values::{parse_size, valid_name};

/// Where the HTTP server listens when the config does not say.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Where the store lives when the config does not say (relative to the current directory).
pub const DEFAULT_STORE_PATH: &str = "./data";
/// The poll schedule of sources that name none, when `[poll]` names none either.
pub const DEFAULT_SCHEDULE: &str = "0 */15 * * * *";
/// How many polls run at once across all sources.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// Time allowed to open a connection to an upstream.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for a whole request, body included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest silence allowed between two chunks of a body.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Requests to one host at once.
pub const DEFAULT_PER_HOST_CONCURRENCY: usize = 2;
/// Minimum time between the starts of two requests to one host.
pub const DEFAULT_PER_HOST_INTERVAL: Duration = Duration::from_millis(500);
/// The longest a source's next poll may be pushed back by TTL, caching headers or Retry-After.
pub const DEFAULT_MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// The first delay after a failed poll; it doubles with each further failure.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(5 * 60);
/// The longest delay after failed polls.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(6 * 3600);
/// Largest feed body accepted, counted after decompression.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
/// Items an output feed holds when it names no `limit`.
pub const DEFAULT_FEED_LIMIT: usize = 100;
/// Largest `limit` an output feed may ask for.
pub const MAX_FEED_LIMIT: usize = 10_000;
/// Log level when neither `RUST_LOG` nor `[log] level` says.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Items of one source kept at most when neither `[storage] max_items_per_source` nor the
/// source's `max_items` says: far above what a news source publishes in years, far below
/// what a source inventing new GUIDs on every poll would pile up.
pub const DEFAULT_MAX_ITEMS_PER_SOURCE: u64 = 50_000;
/// New items one poll may store when `[poll] max_new_items` does not say.
pub const DEFAULT_MAX_NEW_ITEMS: usize = 10_000;

/// How often retention pruning runs when `[storage] prune_interval` does not say.
pub const DEFAULT_PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// A validated configuration, with every default filled in.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this configuration was read from.
    pub path: PathBuf,
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub poll: PollConfig,
    pub dedup: DedupConfig,
    pub log_level: String,
    pub sources: Vec<SourceConfig>,
    pub feeds: Vec<FeedConfig>,
    /// `[websub]`: the hub output feeds name and ping when they change, if any.
    pub websub: Option<WebSubConfig>,
}

/// `[websub]`: a WebSub hub (W3C WebSub) for push subscribers.
#[derive(Debug, Clone)]
pub struct WebSubConfig {
    /// The hub's URL: advertised as `rel="hub"` and sent `hub.mode=publish` pings.
    pub hub: Url,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The public URL of the server, used for self links. Never ends with `/`.
    pub base_url: String,
    /// How public outputs (feeds, pages, OPML, the API) show source URLs:
    /// `show_source_urls = true` (the default) shows them redacted (scheme, host and path),
    /// `false` not at all.
    pub source_urls: Urls,
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// `engine` (with `url`, or `FEEDMUX_STORAGE_URL`): which engine holds the store.
    pub engine: StorageEngine,
    /// The embedded (sled) store's directory.
    pub path: PathBuf,
    /// Items published longer ago than this many days are pruned.
    pub retention_days: Option<u32>,
    /// At most this many items are kept (the newest); older ones are pruned.
    pub max_items: Option<u64>,
    /// At most this many items of one source are kept (its newest), unless the source sets
    /// its own `max_items`: a source that floods (new GUIDs every poll) loses its own oldest
    /// items, never other sources'.
    pub max_items_per_source: u64,
    /// How often pruning runs (also once at start-up).
    pub prune_interval: Duration,
    /// The database's cache in bytes (`cache_size`), read at start.
    pub cache_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct PollConfig {
    pub schedule: Schedule,
    pub concurrency: usize,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub idle_timeout: Duration,
    pub max_body_bytes: u64,
    pub per_host_concurrency: usize,
    pub per_host_interval: Duration,
    pub max_interval: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// New items one poll of a source may store; the feed's other new entries wait for the
    /// next polls.
    pub max_new_items: usize,
    /// Networks that hosts other than the configured ones (a redirect's target, say) may
    /// reach although they are not public: `fetch::address`.
    pub allow_private_networks: Vec<ipnet::IpNet>,
}

/// A cron schedule together with the text it was written as. Cheap to clone (every poll
/// carries its source's schedule; a parsed cron schedule is seven ordered sets).
#[derive(Debug, Clone)]
pub struct Schedule {
    pub text: String,
    pub cron: std::sync::Arc<cron::Schedule>,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    pub name: String,
    pub url: Url,
    pub schedule: Schedule,
    pub tags: Vec<String>,
    pub title: Option<String>,
    /// `enabled = false` keeps the source's items but stops polling it.
    pub enabled: bool,
    /// Which report of a story is shown: the highest priority, then the earliest.
    pub priority: i32,
    /// Items of this source kept at most (its newest); `[storage] max_items_per_source`
    /// when not set.
    pub max_items: Option<u64>,
}

impl SourceConfig {
    /// Items of this source kept at most under `storage`.
    pub fn item_quota(&self, storage: &StorageConfig) -> u64 {
        self.max_items.unwrap_or(storage.max_items_per_source)
    }
}

#[derive(Debug, Clone)]
pub struct FeedConfig {
    pub name: String,
    pub title: String,
    pub description: Option<String>,
    /// The sources this feed draws from, after `sources` and `tags` are applied.
    pub sources: Vec<String>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub include_regex: Vec<Regex>,
    pub exclude_regex: Vec<Regex>,
    pub limit: usize,
    /// One entry per story (true, the default), or one per item.
    pub group_stories: bool,
    /// `max_per_source`: at most this many items of one source are in the feed (its
    /// newest); a busy source cannot push the others out.
    pub max_per_source: Option<usize>,
    /// `max_age`: items published longer ago are left out.
    pub max_age: Option<Duration>,
    /// `match_in`: the text keywords and regexes look at.
    pub match_in: MatchIn,
}

/// Where a feed's `include`, `exclude` and regexes look (`match_in`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MatchIn {
    /// Title, summary and content (`"all"`, the default).
    #[default]
    All,
    /// The title only (`"title"`).
    Title,
}

impl MatchIn {
    /// The value as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchIn::All => "all",
            MatchIn::Title => "title",
        }
    }
}

impl FeedConfig {
    /// The oldest publication time `max_age` lets into the feed at `now` (`None`: no limit).
    pub fn oldest_allowed(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        let age = chrono::Duration::from_std(self.max_age?).ok()?;
        now.checked_sub_signed(age)
    }

    /// A text that changes whenever the set of items this feed selects may change.
    pub fn selection_fingerprint(&self) -> String {
        let regexes = |list: &[Regex]| {
            list.iter()
                .map(|r| r.as_str().to_owned())
                .collect::<Vec<_>>()
        };
        let mut rules = serde_json::json!({
            "sources": self.sources,
            "include": self.include,
            "exclude": self.exclude,
            "include_regex": regexes(&self.include_regex),
            "exclude_regex": regexes(&self.exclude_regex),
        });
        // Only when set: indexes built before the key existed stay valid.
        if self.match_in != MatchIn::All {
            rules["match_in"] = serde_json::json!(self.match_in.as_str());
        }
        rules.to_string()
    }
}

impl Config {
    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name == name)
    }

    pub fn feed(&self, name: &str) -> Option<&FeedConfig> {
        self.feeds.iter().find(|f| f.name == name)
    }
}

/// One problem found in a config file, located at a line and column (both 1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Every problem found in one config file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Where the config file is when `--config` is not given: `$FEEDMUX_CONFIG`, else
/// `./config/feedmux.toml` if it exists, else `/etc/feedmux/feedmux.toml`.
pub fn default_path() -> PathBuf {
    if let Some(p) = std::env::var_os("FEEDMUX_CONFIG") {
        if !p.is_empty() {
            return PathBuf::from(p);
        }
    }
    let local = PathBuf::from("config/feedmux.toml");
    if local.exists() {
        local
    } else {
        PathBuf::from("/etc/feedmux/feedmux.toml")
    }
}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_owned(),
            line: 1,
            column: 1,
            message: format!("cannot read config file: {e}"),
        }])
    })?;
    parse(path, &text)
}

/// Validates config `text` as if read from `path` (relative `file:` sources resolve against
/// the directory of `path`), with the process's environment (`FEEDMUX_STORAGE_URL`).
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    parse_with(path, text, &Environment::of_process())
}

/// [`parse`] with the environment `env` instead of the process's.
pub fn parse_with(path: &Path, text: &str, env: &Environment) -> Result<Config, ConfigErrors> {
    let mut report = Reporter {
        file: path.to_owned(),
        text,
        errors: Vec::new(),
    };
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            report.at(span, e.message().trim_end().to_owned());
            return Err(ConfigErrors(report.errors));
        }
    };
    let config = validate(raw, path, env, &mut report);
    if report.errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(report.errors))
    }
}

struct Reporter<'a> {
    file: PathBuf,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Reporter<'_> {
    /// Notes a problem at `span`. A URL in `message` is redacted: config errors are logged
    /// and shown on the status page, and a source URL may carry a password or a token.
    fn at(&mut self, span: Range<usize>, message: String) {
        let (line, column) = line_column(self.text, span.start);
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line,
            column,
            message: redact::text(&message).into_owned(),
        });
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests;
