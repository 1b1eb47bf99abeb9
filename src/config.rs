//! Configuration: the TOML file of the contract, read in two phases.
//!
//! Phase one deserialises the text into `Raw*` structs that mirror the file (unknown keys are an
//! error, and every value the validator may complain about keeps its byte span). Phase two turns
//! them into a [`Config`] with every default filled in, URLs parsed, cron schedules and regexes
//! compiled, and cross references checked. Every problem is reported as a [`ConfigError`] naming
//! `file:line:column`, and all problems are reported at once rather than the first only.
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
/// the directory of `path`).
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
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
    let config = validate(raw, path, &mut report);
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    storage: RawStorage,
    #[serde(default)]
    poll: RawPoll,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    dedup: RawDedup,
    #[serde(default, rename = "source")]
    sources: Vec<Spanned<RawSource>>,
    #[serde(default, rename = "feed")]
    feeds: Vec<Spanned<RawFeed>>,
    #[serde(default)]
    websub: Option<RawWebSub>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebSub {
    hub: Spanned<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Spanned<String>>,
    base_url: Option<Spanned<String>>,
    show_source_urls: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    path: Option<String>,
    retention_days: Option<Spanned<u32>>,
    max_items: Option<Spanned<u64>>,
    max_items_per_source: Option<Spanned<u64>>,
    prune_interval: Option<Spanned<String>>,
    cache_size: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPoll {
    schedule: Option<Spanned<String>>,
    concurrency: Option<Spanned<usize>>,
    connect_timeout: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    max_body_size: Option<Spanned<String>>,
    per_host_concurrency: Option<Spanned<usize>>,
    per_host_interval: Option<Spanned<String>>,
    max_interval: Option<Spanned<String>>,
    backoff_base: Option<Spanned<String>>,
    backoff_max: Option<Spanned<String>>,
    max_new_items: Option<Spanned<usize>>,
    #[serde(default)]
    allow_private_networks: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDedup {
    enabled: Option<bool>,
    threshold: Option<Spanned<f64>>,
    window: Option<Spanned<String>>,
    memory_items: Option<usize>,
    index_age: Option<Spanned<String>>,
    model: Option<Spanned<String>>,
    meaning_threshold: Option<Spanned<f64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: Spanned<String>,
    url: Spanned<String>,
    schedule: Option<Spanned<String>>,
    #[serde(default)]
    tags: Vec<Spanned<String>>,
    title: Option<String>,
    enabled: Option<bool>,
    priority: Option<i32>,
    max_items: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeed {
    name: Spanned<String>,
    title: Option<String>,
    description: Option<String>,
    sources: Option<Vec<Spanned<String>>>,
    tags: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    include: Vec<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    #[serde(default)]
    include_regex: Vec<Spanned<String>>,
    #[serde(default)]
    exclude_regex: Vec<Spanned<String>>,
    limit: Option<Spanned<i64>>,
    group_stories: Option<bool>,
    max_per_source: Option<Spanned<i64>>,
    max_age: Option<Spanned<String>>,
    match_in: Option<Spanned<String>>,
}

fn validate(raw: RawConfig, path: &Path, report: &mut Reporter<'_>) -> Config {
    let server = validate_server(raw.server, report);
    let storage = StorageConfig {
        path: PathBuf::from(
            raw.storage
                .path
                .unwrap_or_else(|| DEFAULT_STORE_PATH.to_owned()),
        ),
        retention_days: positive(raw.storage.retention_days, "retention_days", report),
        max_items: positive(raw.storage.max_items, "max_items", report),
        max_items_per_source: positive(
            raw.storage.max_items_per_source,
            "max_items_per_source",
            report,
        )
        .unwrap_or(DEFAULT_MAX_ITEMS_PER_SOURCE),
        prune_interval: parse_duration_field(
            raw.storage.prune_interval,
            DEFAULT_PRUNE_INTERVAL,
            false,
            report,
        ),
        cache_bytes: parse_size_field(
            raw.storage.cache_size,
            crate::store::DEFAULT_CACHE_BYTES,
            report,
        ),
    };
    let poll = validate_poll(raw.poll, report);
    let mut dedup = validate_dedup(raw.dedup, path.parent().unwrap_or(Path::new(".")), report);
    dedup.max_new_items = poll.max_new_items;
    let log_level = match raw.log.level {
        Some(level) => {
            let text = level.get_ref().trim().to_owned();
            if tracing_subscriber::EnvFilter::try_new(&text).is_err() {
                report.at(level.span(), format!("invalid log level {text:?}"));
            }
            text
        }
        None => DEFAULT_LOG_LEVEL.to_owned(),
    };
    let config_dir = path.parent().unwrap_or(Path::new("."));
    let declared: HashSet<String> = raw
        .sources
        .iter()
        .map(|s| s.get_ref().name.get_ref().clone())
        .collect();
    let sources = validate_sources(raw.sources, &poll.schedule, config_dir, report);
    let feeds = validate_feeds(raw.feeds, &sources, &declared, report);
    let websub = raw
        .websub
        .and_then(|w| match Url::parse(w.hub.get_ref().trim()) {
            Ok(hub) if matches!(hub.scheme(), "http" | "https") => Some(WebSubConfig { hub }),
            _ => {
                report.at(
                    w.hub.span(),
                    format!(
                        "invalid websub hub {:?}: expected an http(s) URL",
                        w.hub.get_ref()
                    ),
                );
                None
            }
        });
    Config {
        path: path.to_owned(),
        server,
        storage,
        poll,
        dedup,
        log_level,
        sources,
        feeds,
        websub,
    }
}

fn validate_server(raw: RawServer, report: &mut Reporter<'_>) -> ServerConfig {
    let listen = match raw.listen {
        Some(text) => match text.get_ref().parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                report.at(
                    text.span(),
                    format!(
                        "invalid listen address {:?}: expected IP:PORT such as \"127.0.0.1:8080\"",
                        text.get_ref()
                    ),
                );
                default_listen()
            }
        },
        None => default_listen(),
    };
    let base_url = match raw.base_url {
        Some(text) => match Url::parse(text.get_ref()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {
                url.as_str().trim_end_matches('/').to_owned()
            }
            _ => {
                report.at(
                    text.span(),
                    format!(
                        "invalid base_url {:?}: expected an http(s) URL",
                        text.get_ref()
                    ),
                );
                String::new()
            }
        },
        None => format!("http://{listen}"),
    };
    let source_urls = match raw.show_source_urls {
        Some(false) => Urls::Hidden,
        Some(true) | None => Urls::Redacted,
    };
    ServerConfig {
        listen,
        base_url,
        source_urls,
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn validate_poll(raw: RawPoll, report: &mut Reporter<'_>) -> PollConfig {
    let schedule = match raw.schedule {
        Some(text) => parse_schedule(&text, report),
        None => None,
    }
    .unwrap_or_else(default_schedule);
    let concurrency = match raw.concurrency {
        Some(n) if *n.get_ref() == 0 => {
            report.at(n.span(), "concurrency must be at least 1".to_owned());
            DEFAULT_CONCURRENCY
        }
        Some(n) => *n.get_ref(),
        None => DEFAULT_CONCURRENCY,
    };
    let connect_timeout =
        parse_duration_field(raw.connect_timeout, DEFAULT_CONNECT_TIMEOUT, false, report);
    let timeout = parse_duration_field(raw.timeout, DEFAULT_TIMEOUT, false, report);
    let idle_timeout = parse_duration_field(raw.idle_timeout, DEFAULT_IDLE_TIMEOUT, false, report);
    let per_host_interval = parse_duration_field(
        raw.per_host_interval,
        DEFAULT_PER_HOST_INTERVAL,
        true,
        report,
    );
    let max_interval = parse_duration_field(raw.max_interval, DEFAULT_MAX_INTERVAL, false, report);
    let backoff_base = parse_duration_field(raw.backoff_base, DEFAULT_BACKOFF_BASE, false, report);
    let backoff_max = parse_duration_field(raw.backoff_max, DEFAULT_BACKOFF_MAX, false, report);
    let per_host_concurrency = match raw.per_host_concurrency {
        Some(n) if *n.get_ref() == 0 => {
            report.at(
                n.span(),
                "per_host_concurrency must be at least 1".to_owned(),
            );
            DEFAULT_PER_HOST_CONCURRENCY
        }
        Some(n) => *n.get_ref(),
        None => DEFAULT_PER_HOST_CONCURRENCY,
    };
    let max_body_bytes = parse_size_field(raw.max_body_size, DEFAULT_MAX_BODY_BYTES, report);
    PollConfig {
        schedule,
        concurrency,
        connect_timeout,
        timeout,
        idle_timeout,
        max_body_bytes,
        per_host_concurrency,
        per_host_interval,
        max_interval,
        backoff_base,
        backoff_max: backoff_max.max(backoff_base),
        max_new_items: positive(raw.max_new_items, "max_new_items", report)
            .unwrap_or(DEFAULT_MAX_NEW_ITEMS),
        allow_private_networks: raw
            .allow_private_networks
            .iter()
            .filter_map(|text| match parse_network(text.get_ref()) {
                Ok(net) => Some(net),
                Err(e) => {
                    report.at(text.span(), e);
                    None
                }
            })
            .collect(),
    }
}

/// One entry of `[poll] allow_private_networks`: `10.0.0.0/8`, `fd00::/8`, or an address.
fn parse_network(text: &str) -> Result<ipnet::IpNet, String> {
    let trimmed = text.trim();
    trimmed
        .parse::<ipnet::IpNet>()
        .or_else(|_| trimmed.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| {
            format!(
                "allow_private_networks: {text:?} is not a network (10.0.0.0/8, fd00::/8) or an address"
            )
        })
}

fn validate_dedup(raw: RawDedup, config_dir: &Path, report: &mut Reporter<'_>) -> DedupConfig {
    let defaults = DedupConfig::default();
    let meaning_threshold = match raw.meaning_threshold {
        Some(t) if !(0.0..=1.0).contains(t.get_ref()) || *t.get_ref() == 0.0 => {
            report.at(
                t.span(),
                "dedup.meaning_threshold must be above 0 and at most 1".to_owned(),
            );
            defaults.meaning_threshold
        }
        Some(t) => *t.get_ref() as f32,
        None => defaults.meaning_threshold,
    };
    // A model that cannot be loaded is a config error: the daemon keeps its running config
    // on reload, and refuses to start with it.
    let model = raw.model.and_then(|m| {
        let path = config_dir.join(m.get_ref().trim());
        match MeaningModel::load(&path) {
            Ok(model) => Some(model),
            Err(e) => {
                report.at(m.span(), format!("dedup.model {}: {e}", path.display()));
                None
            }
        }
    });
    let threshold = match raw.threshold {
        Some(t) if !(0.0..=1.0).contains(t.get_ref()) || *t.get_ref() == 0.0 => {
            report.at(
                t.span(),
                "dedup.threshold must be above 0 and at most 1 (1 merges only identical texts)"
                    .to_owned(),
            );
            defaults.threshold
        }
        Some(t) => *t.get_ref() as f32,
        None => defaults.threshold,
    };
    // An error about the two is shown at index_age, or at window when index_age is unset.
    let span = (raw.index_age.as_ref())
        .or(raw.window.as_ref())
        .map(|s| s.span());
    let window = parse_duration_field(raw.window, defaults.window, false, report);
    let mut index_age = parse_duration_field(raw.index_age, defaults.index_age, false, report);
    if index_age < window {
        let shown = |d: Duration| humantime::format_duration(d).to_string();
        let message = format!(
            "dedup.index_age ({}) must be at least dedup.window ({}): items published within the window of each other are matched by their text",
            shown(index_age),
            shown(window)
        );
        report.at(span.unwrap_or_default(), message);
        index_age = window;
    }
    DedupConfig {
        enabled: raw.enabled.unwrap_or(defaults.enabled),
        threshold,
        window,
        memory_items: raw.memory_items.unwrap_or(defaults.memory_items),
        index_age,
        model,
        meaning_threshold,
        // Set from `[poll] max_new_items` by the caller.
        max_new_items: defaults.max_new_items,
    }
}

fn default_schedule() -> Schedule {
    Schedule {
        text: DEFAULT_SCHEDULE.to_owned(),
        cron: std::sync::Arc::new(
            cron::Schedule::from_str(DEFAULT_SCHEDULE).expect("the default schedule is valid"),
        ),
    }
}

fn parse_schedule(text: &Spanned<String>, report: &mut Reporter<'_>) -> Option<Schedule> {
    let trimmed = text.get_ref().trim();
    match cron::Schedule::from_str(trimmed) {
        Ok(cron) => Some(Schedule {
            text: trimmed.to_owned(),
            cron: std::sync::Arc::new(cron),
        }),
        Err(e) => {
            report.at(
                text.span(),
                format!(
                    "invalid cron schedule {trimmed:?}: {e} (expected 6 or 7 fields, seconds first, e.g. \"0 */15 * * * *\")"
                ),
            );
            None
        }
    }
}

/// A count that must be at least 1 when given.
fn positive<T: Copy + PartialEq + From<u8>>(
    raw: Option<Spanned<T>>,
    key: &str,
    report: &mut Reporter<'_>,
) -> Option<T> {
    let value = raw?;
    if *value.get_ref() == T::from(0) {
        report.at(
            value.span(),
            format!("{key} must be at least 1 (leave it out to keep everything)"),
        );
        return None;
    }
    Some(*value.get_ref())
}

fn parse_duration_field(
    raw: Option<Spanned<String>>,
    default: Duration,
    allow_zero: bool,
    report: &mut Reporter<'_>,
) -> Duration {
    match raw {
        Some(text) => match humantime::parse_duration(text.get_ref().trim()) {
            Ok(d) if allow_zero || !d.is_zero() => d,
            _ => {
                report.at(
                    text.span(),
                    format!(
                        "invalid duration {:?}: expected e.g. \"30s\", \"5m\" or \"1h\"",
                        text.get_ref()
                    ),
                );
                default
            }
        },
        None => default,
    }
}

/// A size field (`"10MiB"`), `default` when absent; an invalid or zero size is reported.
fn parse_size_field(raw: Option<Spanned<String>>, default: u64, report: &mut Reporter<'_>) -> u64 {
    let Some(text) = raw else {
        return default;
    };
    match parse_size(text.get_ref()) {
        Some(n) if n > 0 => n,
        _ => {
            report.at(
                text.span(),
                format!(
                    "invalid size {:?}: expected e.g. \"10MiB\", \"512KiB\" or a number of bytes",
                    text.get_ref()
                ),
            );
            default
        }
    }
}

/// Parses "10MiB", "512 KiB", "2MB", "1048576" into bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// Whether `name` is a valid source, feed or tag name: `[a-z0-9_-]+`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn check_name(kind: &str, name: &Spanned<String>, report: &mut Reporter<'_>) {
    if !valid_name(name.get_ref()) {
        report.at(
            name.span(),
            format!(
                "invalid {kind} name {:?}: use lowercase letters, digits, '-' and '_'",
                name.get_ref()
            ),
        );
    }
}

fn validate_sources(
    raw: Vec<Spanned<RawSource>>,
    default_schedule: &Schedule,
    config_dir: &Path,
    report: &mut Reporter<'_>,
) -> Vec<SourceConfig> {
    let mut seen = HashSet::new();
    let mut sources = Vec::with_capacity(raw.len());
    for spanned in raw {
        let raw = spanned.into_inner();
        check_name("source", &raw.name, report);
        if !seen.insert(raw.name.get_ref().clone()) {
            report.at(
                raw.name.span(),
                format!("duplicate source name {:?}", raw.name.get_ref()),
            );
        }
        let url = match parse_source_url(raw.url.get_ref(), config_dir) {
            Ok(url) => url,
            Err(message) => {
                report.at(raw.url.span(), message);
                continue;
            }
        };
        let schedule = match &raw.schedule {
            // An invalid schedule is reported; the default stands in so that later checks
            // do not report the source as missing.
            Some(text) => parse_schedule(text, report).unwrap_or_else(|| default_schedule.clone()),
            None => default_schedule.clone(),
        };
        let mut tags = Vec::new();
        for tag in &raw.tags {
            if !valid_name(tag.get_ref()) {
                report.at(
                    tag.span(),
                    format!(
                        "invalid tag {:?}: use lowercase letters, digits, '-' and '_'",
                        tag.get_ref()
                    ),
                );
            }
            tags.push(tag.get_ref().clone());
        }
        sources.push(SourceConfig {
            name: raw.name.into_inner(),
            url,
            schedule,
            tags,
            title: raw.title.filter(|t| !t.trim().is_empty()),
            enabled: raw.enabled.unwrap_or(true),
            priority: raw.priority.unwrap_or(0),
            max_items: positive(raw.max_items, "max_items", report),
        });
    }
    sources
}

/// Parses a source URL: http(s), absolute `file:///path`, or relative `file:path` (resolved
/// against the config file's directory).
pub fn parse_source_url(text: &str, config_dir: &Path) -> Result<Url, String> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix("file:") {
        if !rest.starts_with('/') {
            let dir = if config_dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                config_dir
            };
            let joined = dir.join(rest);
            let absolute = std::path::absolute(&joined)
                .map_err(|e| format!("cannot resolve file path {rest:?}: {e}"))?;
            return Url::from_file_path(&absolute)
                .map_err(|()| format!("cannot turn {} into a file URL", absolute.display()));
        }
    }
    let url = Url::parse(text).map_err(|e| format!("invalid URL {text:?}: {e}"))?;
    match url.scheme() {
        "http" | "https" => {
            if url.host_str().is_none_or(str::is_empty) {
                return Err(format!("invalid URL {text:?}: no host"));
            }
            Ok(url)
        }
        "file" => Ok(url),
        other => Err(format!(
            "unsupported URL scheme {other:?} in {text:?}: use http, https or file"
        )),
    }
}

fn validate_feeds(
    raw: Vec<Spanned<RawFeed>>,
    sources: &[SourceConfig],
    declared: &HashSet<String>,
    report: &mut Reporter<'_>,
) -> Vec<FeedConfig> {
    let mut seen = HashSet::new();
    let mut feeds = Vec::with_capacity(raw.len());
    for spanned in raw {
        let raw = spanned.into_inner();
        check_name("feed", &raw.name, report);
        if !seen.insert(raw.name.get_ref().clone()) {
            report.at(
                raw.name.span(),
                format!("duplicate feed name {:?}", raw.name.get_ref()),
            );
        }
        let mut selected: Vec<String> = match &raw.sources {
            Some(names) => {
                let mut list = Vec::new();
                for name in names {
                    if sources.iter().any(|s| &s.name == name.get_ref()) {
                        list.push(name.get_ref().clone());
                    } else if !declared.contains(name.get_ref()) {
                        report.at(
                            name.span(),
                            format!(
                                "feed {:?} names unknown source {:?}",
                                raw.name.get_ref(),
                                name.get_ref()
                            ),
                        );
                    }
                }
                list
            }
            None => sources.iter().map(|s| s.name.clone()).collect(),
        };
        if let Some(tags) = &raw.tags {
            let known: HashSet<&str> = sources
                .iter()
                .flat_map(|s| s.tags.iter().map(String::as_str))
                .collect();
            for tag in tags {
                if !known.contains(tag.get_ref().as_str()) {
                    report.at(
                        tag.span(),
                        format!("no source carries tag {:?}", tag.get_ref()),
                    );
                }
            }
            selected.retain(|name| {
                sources
                    .iter()
                    .find(|s| &s.name == name)
                    .is_some_and(|s| tags.iter().any(|t| s.tags.contains(t.get_ref())))
            });
        }
        selected.dedup();
        let include = keywords(&raw.include, report);
        let exclude = keywords(&raw.exclude, report);
        let include_regex = regexes(&raw.include_regex, report);
        let exclude_regex = regexes(&raw.exclude_regex, report);
        let limit = match raw.limit {
            Some(n) if *n.get_ref() < 1 || *n.get_ref() as u64 > MAX_FEED_LIMIT as u64 => {
                report.at(
                    n.span(),
                    format!("limit must be between 1 and {MAX_FEED_LIMIT}"),
                );
                DEFAULT_FEED_LIMIT
            }
            Some(n) => *n.get_ref() as usize,
            None => DEFAULT_FEED_LIMIT,
        };
        let feed = raw.name.get_ref().as_str();
        let max_per_source = feed_max_per_source(feed, raw.max_per_source, report);
        let max_age = feed_max_age(feed, raw.max_age, report);
        let match_in = feed_match_in(feed, raw.match_in, report);
        let name = raw.name.into_inner();
        feeds.push(FeedConfig {
            title: raw
                .title
                .filter(|t| !t.trim().is_empty())
                .unwrap_or_else(|| name.clone()),
            name,
            description: raw.description,
            sources: selected,
            include,
            exclude,
            include_regex,
            exclude_regex,
            limit,
            group_stories: raw.group_stories.unwrap_or(true),
            max_per_source,
            max_age,
            match_in,
        });
    }
    feeds
}

/// `[[feed]] max_per_source`: a whole number from 1.
fn feed_max_per_source(
    feed: &str,
    raw: Option<Spanned<i64>>,
    report: &mut Reporter<'_>,
) -> Option<usize> {
    let value = raw?;
    match usize::try_from(*value.get_ref()) {
        Ok(n) if n >= 1 => Some(n),
        _ => {
            report.at(
                value.span(),
                format!(
                    "feed {feed:?}: max_per_source must be at least 1 (got {}; leave it out for no cap)",
                    value.get_ref()
                ),
            );
            None
        }
    }
}

/// `[[feed]] max_age`: a duration above zero ("7d", "36h").
fn feed_max_age(
    feed: &str,
    raw: Option<Spanned<String>>,
    report: &mut Reporter<'_>,
) -> Option<Duration> {
    let text = raw?;
    match humantime::parse_duration(text.get_ref().trim()) {
        Ok(d) if !d.is_zero() => Some(d),
        _ => {
            report.at(
                text.span(),
                format!(
                    "feed {feed:?}: invalid max_age {:?}: expected a duration such as \"7d\", \"36h\" or \"90m\"",
                    text.get_ref()
                ),
            );
            None
        }
    }
}

/// `[[feed]] match_in`: `"all"` (title, summary and content) or `"title"`.
fn feed_match_in(feed: &str, raw: Option<Spanned<String>>, report: &mut Reporter<'_>) -> MatchIn {
    let Some(text) = raw else {
        return MatchIn::All;
    };
    match text.get_ref().trim() {
        "all" => MatchIn::All,
        "title" => MatchIn::Title,
        other => {
            report.at(
                text.span(),
                format!(
                    "feed {feed:?}: match_in must be \"title\" or \"all\" (title, summary and content), not {other:?}"
                ),
            );
            MatchIn::All
        }
    }
}

fn keywords(raw: &[Spanned<String>], report: &mut Reporter<'_>) -> Vec<String> {
    let mut out = Vec::with_capacity(raw.len());
    for k in raw {
        if k.get_ref().trim().is_empty() {
            report.at(k.span(), "empty keyword".to_owned());
        } else {
            out.push(k.get_ref().trim().to_owned());
        }
    }
    out
}

fn regexes(raw: &[Spanned<String>], report: &mut Reporter<'_>) -> Vec<Regex> {
    let mut out = Vec::with_capacity(raw.len());
    for r in raw {
        match Regex::new(r.get_ref()) {
            Ok(re) => out.push(re),
            Err(e) => {
                let detail = e.to_string().lines().last().unwrap_or_default().to_owned();
                report.at(
                    r.span(),
                    format!("invalid regex {:?}: {detail}", r.get_ref()),
                )
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match parse(Path::new("t.toml"), text) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(
            Path::new("config/x.toml"),
            "[[source]]\nname = \"a\"\nurl = \"https://example.com/feed\"\n",
        )
        .unwrap();
        assert_eq!(c.server.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.server.base_url, "http://127.0.0.1:8080");
        assert_eq!(c.sources[0].schedule.text, DEFAULT_SCHEDULE);
        assert_eq!(c.storage.path, PathBuf::from(DEFAULT_STORE_PATH));
    }

    #[test]
    fn websub_hub_is_optional_strict_and_located() {
        let source = "[[source]]\nname = \"a\"\nurl = \"https://example.com/feed\"\n";
        let c = parse(Path::new("t.toml"), source).unwrap();
        assert!(c.websub.is_none());
        let c = parse(
            Path::new("t.toml"),
            &format!("[websub]\nhub = \"https://hub.example/\"\n{source}"),
        )
        .unwrap();
        assert_eq!(c.websub.unwrap().hub.as_str(), "https://hub.example/");
        let e = errors(&format!("[websub]\nhub = \"ftp://hub.example/\"\n{source}"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("t.toml:2:7: invalid websub hub"), "{e:?}");
        let e = errors(&format!(
            "[websub]\nhub = \"https://h/\"\nlease = 3\n{source}"
        ));
        assert!(e.len() == 1 && e[0].contains("lease"), "{e:?}");
        let e = errors(&format!("[websub]\n{source}"));
        assert!(e.len() == 1 && e[0].contains("hub"), "{e:?}");
    }

    #[test]
    fn a_dedup_model_that_cannot_be_loaded_is_a_located_config_error() {
        let source = "[[source]]\nname = \"a\"\nurl = \"https://example.com/feed\"\n";
        let c = parse(Path::new("t.toml"), source).unwrap();
        assert!(c.dedup.model.is_none());
        assert_eq!(
            c.dedup.meaning_threshold,
            crate::dedup::DEFAULT_MEANING_THRESHOLD
        );
        let e = errors(&format!("[dedup]\nmodel = \"no-such-model.bin\"\n{source}"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(
                "t.toml:2:9: dedup.model no-such-model.bin: cannot read the model file"
            ),
            "{e:?}"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("page.html"), "<html>404</html>").unwrap();
        let e = match parse(
            &dir.path().join("t.toml"),
            &format!("[dedup]\nmodel = \"page.html\"\n{source}"),
        ) {
            Ok(_) => panic!("an HTML page is no model"),
            Err(e) => e.0[0].to_string(),
        };
        assert!(e.contains("not an E5S1 model file"), "{e}");
        let e = errors(&format!("[dedup]\nmeaning_threshold = 1.5\n{source}"));
        assert!(e.len() == 1 && e[0].contains("meaning_threshold"), "{e:?}");
    }

    #[test]
    fn dedup_index_age_defaults_to_30_days_and_reaches_at_least_the_window() {
        let source = "[[source]]\nname = \"a\"\nurl = \"https://example.com/feed\"\n";
        let c = parse(Path::new("t.toml"), source).unwrap();
        assert_eq!(c.dedup.index_age, Duration::from_secs(30 * 86_400));
        let c = parse(
            Path::new("t.toml"),
            &format!("[dedup]\nindex_age = \"1y\"\n{source}"),
        )
        .unwrap();
        assert!(c.dedup.index_age > Duration::from_secs(365 * 86_400));
        let e = errors(&format!("[dedup]\nindex_age = \"2d\"\n{source}"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(
                "t.toml:2:13: dedup.index_age (2days) must be at least dedup.window (3days)"
            ),
            "{e:?}"
        );
        let e = errors(&format!("[dedup]\nwindow = \"40d\"\n{source}"));
        assert!(
            e.len() == 1 && e[0].starts_with("t.toml:2:10: dedup.index_age (30days)"),
            "{e:?}"
        );
    }

    #[test]
    fn unknown_key_is_located() {
        let e = errors("[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("t.toml:3:1: "), "{e:?}");
        assert!(e[0].contains("listen_port"), "{e:?}");
    }

    #[test]
    fn bad_cron_regex_and_reference_are_all_reported() {
        let text = "[[source]]\nname = \"a\"\nurl = \"https://example.com/\"\nschedule = \"every minute\"\n\n[[feed]]\nname = \"f\"\nsources = [\"a\", \"nope\"]\ninclude_regex = [\"(unclosed\"]\n";
        let e = errors(text);
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].starts_with("t.toml:4:12: invalid cron schedule"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("t.toml:8:17: feed \"f\" names unknown source \"nope\""),
            "{e:?}"
        );
        assert!(e[2].starts_with("t.toml:9:18: invalid regex"), "{e:?}");
    }

    #[test]
    fn duplicate_names_and_bad_urls() {
        let text = "[[source]]\nname = \"a\"\nurl = \"ftp://x/\"\n[[source]]\nname = \"a\"\nurl = \"https://e.com/\"\n";
        let e = errors(text);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("unsupported URL scheme"), "{e:?}");
        assert!(
            e[1].starts_with("t.toml:5:8: duplicate source name"),
            "{e:?}"
        );
    }

    #[test]
    fn relative_file_url_resolves_against_config_dir() {
        let url = parse_source_url("file:samples/a.xml", Path::new("/etc/feedmux")).unwrap();
        assert_eq!(url.as_str(), "file:///etc/feedmux/samples/a.xml");
    }

    #[test]
    fn tags_select_sources() {
        let text = "[[source]]\nname = \"a\"\nurl = \"https://a.com/\"\ntags = [\"zh\"]\n[[source]]\nname = \"b\"\nurl = \"https://b.com/\"\ntags = [\"en\"]\n[[feed]]\nname = \"zh\"\ntags = [\"zh\"]\n";
        let c = parse(Path::new("t.toml"), text).unwrap();
        assert_eq!(c.feeds[0].sources, vec!["a".to_owned()]);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("10MiB"), Some(10 << 20));
        assert_eq!(parse_size("512 KiB"), Some(512 << 10));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("ten"), None);
    }

    #[test]
    fn the_store_cache_size_is_a_size_with_a_default() {
        let source = "[[source]]\nname = \"a\"\nurl = \"https://a.com/\"\n";
        let c = parse(Path::new("t.toml"), source).unwrap();
        assert_eq!(c.storage.cache_bytes, crate::store::DEFAULT_CACHE_BYTES);
        let text = format!("[storage]\ncache_size = \"8MiB\"\n{source}");
        let c = parse(Path::new("t.toml"), &text).unwrap();
        assert_eq!(c.storage.cache_bytes, 8 << 20);
        let e = errors(&format!("[storage]\ncache_size = \"lots\"\n{source}"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("t.toml:2:14: invalid size \"lots\""),
            "{e:?}"
        );
    }

    #[test]
    fn a_feeds_balance_keys_are_read_and_bad_values_name_the_key_and_feed() {
        let source = "[[source]]\nname = \"a\"\nurl = \"https://a.com/\"\n";
        let text = format!(
            "{source}[[feed]]\nname = \"f\"\nmax_per_source = 20\nmax_age = \"7d\"\nmatch_in = \"title\"\n[[feed]]\nname = \"g\"\n"
        );
        let c = parse(Path::new("t.toml"), &text).unwrap();
        let (f, g) = (&c.feeds[0], &c.feeds[1]);
        assert_eq!(f.max_per_source, Some(20));
        assert_eq!(f.max_age, Some(Duration::from_secs(7 * 24 * 3600)));
        assert_eq!(f.match_in, MatchIn::Title);
        assert_eq!(
            (g.max_per_source, g.max_age, g.match_in),
            (None, None, MatchIn::All)
        );
        assert_ne!(f.selection_fingerprint(), g.selection_fingerprint());

        let e = errors(&format!(
            "{source}[[feed]]\nname = \"arxiv\"\nmax_per_source = 0\nmax_age = \"a week\"\nmatch_in = \"body\"\n"
        ));
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].starts_with("t.toml:6:18: feed \"arxiv\": max_per_source must be at least 1"),
            "{e:?}"
        );
        assert!(
            e[1].starts_with("t.toml:7:11: feed \"arxiv\": invalid max_age \"a week\""),
            "{e:?}"
        );
        assert!(
            e[2].starts_with("t.toml:8:12: feed \"arxiv\": match_in must be \"title\" or \"all\""),
            "{e:?}"
        );
    }
}
