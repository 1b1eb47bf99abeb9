//! Checking the raw file section by section (`[server]`, `[poll]`, `[dedup]`, the sources)
//! into a [`Config`], every problem reported with its place, none stopping the others.

use super::*;

pub(super) fn validate(
    raw: RawConfig,
    path: &Path,
    env: &Environment,
    report: &mut Reporter<'_>,
) -> Config {
    let server = validate_server(raw.server, report);
    let storage = StorageConfig {
        engine: storage::validate_engine(raw.storage.engine, raw.storage.url, env, report),
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

pub(super) fn validate_server(raw: RawServer, report: &mut Reporter<'_>) -> ServerConfig {
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

pub(super) fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

pub(super) fn validate_poll(raw: RawPoll, report: &mut Reporter<'_>) -> PollConfig {
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
pub(super) fn parse_network(text: &str) -> Result<ipnet::IpNet, String> {
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

pub(super) fn validate_dedup(
    raw: RawDedup,
    config_dir: &Path,
    report: &mut Reporter<'_>,
) -> DedupConfig {
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

pub(super) fn validate_sources(
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
