//! The `feedmux` command: parses arguments, starts logging, loads the config and calls the
//! library. Errors become messages and exit statuses here and nowhere else.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::sync::mpsc;
use tracing::{error, info};

use feedmux::config::{self, Config};
use feedmux::daemon::{self, Control, Polled};
use feedmux::fetch::address::{self, AddressPolicy};
use feedmux::fetch::{FetchOutcome, Fetcher, Validators};
use feedmux::model::{Hold, SourceState};
use feedmux::opml::FeedUrls;
use feedmux::publish::{Format, Publisher};
use feedmux::redact::{self, Urls};
use feedmux::store::{Store, StoreError};

/// jemalloc: glibc's allocator took a quarter of ingest time in profiles (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options (read at start; `_RJEM_MALLOC_CONF` in the environment overrides them):
/// freed memory goes back to the system after a second, not ten, so the daemon's resident
/// size follows what it uses (the memory row at 300,000 items: 356 -> 338 MiB peak, at no
/// measurable ingest cost; returning it at once cost a third of ingest speed). One arena,
/// not four per core: memory one thread frees is reused by the next instead of sitting in
/// another thread's arena (`feedmux poll` of 50 x 1,000 items, benches/store.rs: 387 -> 212
/// MiB peak, 20.3 -> 19.9 s).
#[export_name = "_rjem_malloc_conf"]
static JEMALLOC_OPTIONS: &[u8; 30] = b"narenas:1,dirty_decay_ms:1000\0";

#[derive(Parser)]
#[command(
    name = "feedmux",
    version,
    about = "Watches many news feeds and serves one clean, deduplicated, filtered feed"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines are written to stderr: `text` for people (under systemd's journal: no
    /// timestamps, a syslog priority prefix), `json` for log shippers (one object a line).
    #[arg(
        long,
        value_enum,
        global = true,
        default_value = "text",
        env = "FEEDMUX_LOG_FORMAT"
    )]
    log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// The config file [default: $FEEDMUX_CONFIG, else ./config/feedmux.toml, else /etc/feedmux/feedmux.toml]
    #[arg(long, value_name = "PATH", global = true)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground: poll sources on their schedules and serve output feeds.
    Run {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Poll sources once, now, store their items and exit.
    Poll {
        #[command(flatten)]
        config: ConfigArg,
        /// Poll only this source (repeatable).
        #[arg(long = "source", value_name = "NAME")]
        sources: Vec<String>,
        /// Poll even sources that are in backoff.
        #[arg(long)]
        force: bool,
    },
    /// Validate the config file.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Write an output feed, from the store, to stdout.
    Render {
        #[command(flatten)]
        config: ConfigArg,
        /// The output feed's name.
        #[arg(long)]
        feed: String,
        #[arg(long, value_enum, default_value = "atom")]
        format: FormatArg,
    },
    /// Show a table of sources: status, items, last and next poll.
    Sources {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List recent stories reported by more than one source, with their members.
    Stories {
        #[command(flatten)]
        config: ConfigArg,
        /// How far back, e.g. "24h", "7d".
        #[arg(long, default_value = "24h")]
        since: String,
    },
    /// Show which stored items an output feed keeps and drops under the config file's
    /// current rules, and which rule decided (to try rules before reloading).
    Preview {
        #[command(flatten)]
        config: ConfigArg,
        /// The output feed's name.
        #[arg(long)]
        feed: String,
        /// How many of the newest stored items of the feed's sources to judge.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Rewrite the store into fresh files holding only live records (after a large prune);
    /// the daemon must be stopped.
    Compact {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Add the feeds of an OPML subscription list to the config file as sources.
    ImportOpml {
        #[command(flatten)]
        config: ConfigArg,
        /// The OPML file (as exported by a feed reader).
        file: PathBuf,
    },
    /// Write the configured sources as an OPML 2.0 list to stdout: the list `/opml` serves
    /// (feed URLs without passwords, query or fragment, or none with
    /// `[server] show_source_urls = false`).
    ExportOpml {
        #[command(flatten)]
        config: ConfigArg,
        /// Write each feed URL as configured, password and token included (to move to
        /// another reader; keep the list private).
        #[arg(long)]
        full_urls: bool,
    },
    /// Tell whether and why two items were merged into one story.
    Why {
        #[command(flatten)]
        config: ConfigArg,
        /// An item id (as `feedmux stories` prints it) or a unique prefix of at least 6 digits.
        item_a: String,
        item_b: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Atom,
    Rss,
    Json,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Atom => Format::Atom,
            FormatArg::Rss => Format::Rss,
            FormatArg::Json => Format::Json,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("feedmux: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn config_path(arg: &ConfigArg) -> PathBuf {
    arg.config.clone().unwrap_or_else(config::default_path)
}

/// Loads the config, or prints every problem as `file:line:column: message`.
fn load_config(arg: &ConfigArg) -> Result<Config, ExitCode> {
    let path = config_path(arg);
    config::load(&path).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("{e}");
        }
        ExitCode::from(2)
    })
}

/// Starts logging at `level` (`RUST_LOG` wins). sled's own log lines (errors and warnings
/// feedmux reports in its own words, such as every failed write on a full disk) are left out
/// unless the filter names `sled` (`RUST_LOG=info,sled=warn`).
fn init_logging(level: &str, format: LogFormat) {
    let asked = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| tracing_subscriber::EnvFilter::try_new(v).is_ok())
        .unwrap_or_else(|| level.to_owned());
    let filter = tracing_subscriber::EnvFilter::try_new(&asked)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let filter = match "sled=off".parse() {
        Ok(quiet) if !asked.contains("sled") => filter.add_directive(quiet),
        _ => filter,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        // The journal stamps each line itself and reads the level from a `<N>` prefix.
        LogFormat::Text if stderr_is_journal() => builder
            .with_ansi(false)
            .without_time()
            .event_format(JournalPriority(
                tracing_subscriber::fmt::format().without_time(),
            ))
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

/// Whether stderr is systemd's journal: `JOURNAL_STREAM` names its device and inode
/// (systemd.exec(5)); a child process that inherited the variable but not the stream is not.
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// Prefixes each line with its syslog priority (`<3>` error ... `<7>` debug), which the
/// journal reads as the line's level.
struct JournalPriority<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalPriority<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            tracing::Level::DEBUG | tracing::Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

impl Command {
    fn config_arg(&self) -> &ConfigArg {
        match self {
            Command::Run { config }
            | Command::Poll { config, .. }
            | Command::Check { config }
            | Command::Render { config, .. }
            | Command::Sources { config }
            | Command::Stories { config, .. }
            | Command::Why { config, .. }
            | Command::ImportOpml { config, .. }
            | Command::Preview { config, .. }
            | Command::Compact { config }
            | Command::ExportOpml { config, .. } => config,
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Check { config } = &cli.command {
        return Ok(check(config));
    }
    let config = match load_config(cli.command.config_arg()) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    init_logging(&config.log_level, cli.log_format);
    match cli.command {
        Command::Check { .. } => unreachable!("handled above"),
        Command::Run { .. } => {
            runtime()?.block_on(run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Poll { sources, force, .. } => {
            for name in &sources {
                if config.source(name).is_none() {
                    eprintln!("feedmux: unknown source {name:?}");
                    return Ok(ExitCode::from(2));
                }
            }
            runtime()?.block_on(poll(config, sources, force))
        }
        Command::Render { feed, format, .. } => render(&config, &feed, format.into()),
        Command::Stories { since, .. } => {
            let Ok(since) = humantime::parse_duration(&since) else {
                eprintln!("feedmux: invalid --since {since:?}: expected e.g. 24h or 7d");
                return Ok(ExitCode::from(2));
            };
            stories(&config, since)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Why { item_a, item_b, .. } => why(&config, &item_a, &item_b),
        Command::Sources { .. } => {
            sources(&config)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ImportOpml { file, .. } => import_opml(&config, &file),
        Command::Preview { feed, limit, .. } => preview(&config, &feed, limit),
        Command::Compact { .. } => {
            let (before, after) = Store::compact(&config.storage.path).map_err(|e| match e {
                StoreError::Locked { .. } => {
                    anyhow::anyhow!("{e}: stop the daemon first (systemctl stop feedmux)")
                }
                other => other.into(),
            })?;
            println!(
                "{}: {} bytes before, {} after",
                config.storage.path.display(),
                before,
                after
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::ExportOpml { full_urls, .. } => {
            let states = source_states(&config)?;
            let urls = if full_urls {
                FeedUrls::Full
            } else {
                FeedUrls::Public(config.server.source_urls)
            };
            print!("{}", feedmux::opml::write(&config, &states, urls));
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn check(arg: &ConfigArg) -> ExitCode {
    let path = config_path(arg);
    match config::load(&path) {
        Ok(c) => {
            println!(
                "{}: ok: {} sources, {} output feeds, listening on {}, store at {}",
                path.display(),
                c.sources.len(),
                c.feeds.len(),
                c.server.listen,
                c.storage.path.display()
            );
            match &c.dedup.model {
                Some(model) => println!(
                    "  dedup.model {} loaded ({} kernel): reports are also matched by meaning at {}",
                    model.path().display(),
                    model.kernel(),
                    c.dedup.meaning_threshold
                ),
                None => println!("  no dedup.model: reports are matched by their words and links"),
            }
            for feed in &c.feeds {
                println!(
                    "  feed {:<12} {} sources, {} include, {} exclude, limit {}",
                    feed.name,
                    feed.sources.len(),
                    feed.include.len() + feed.include_regex.len(),
                    feed.exclude.len() + feed.exclude_regex.len(),
                    feed.limit
                );
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                println!("{e}");
            }
            ExitCode::from(2)
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(forward_signals(tx));
    daemon::run(config, listener, rx).await?;
    Ok(())
}

/// SIGHUP reloads; SIGTERM and SIGINT stop.
async fn forward_signals(tx: mpsc::Sender<Control>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers");
        return;
    };
    loop {
        let message = tokio::select! {
            _ = hup.recv() => { info!("SIGHUP: reloading the config"); Control::Reload }
            _ = term.recv() => { info!("SIGTERM: stopping"); Control::Shutdown }
            _ = int.recv() => { info!("SIGINT: stopping"); Control::Shutdown }
        };
        if tx.send(message).await.is_err() {
            return;
        }
    }
}

async fn poll(config: Config, sources: Vec<String>, force: bool) -> anyhow::Result<ExitCode> {
    let outcomes = daemon::poll_once(&config, &sources, force).await?;
    let mut failed = 0;
    for o in &outcomes {
        let result = match &o.polled {
            Polled::Skipped(Hold::Disabled) => {
                println!(
                    "{:<24} skipped: disabled in the config; --force polls it anyway",
                    o.source
                );
                continue;
            }
            Polled::Skipped(Hold::Gone) => {
                println!(
                    "{:<24} skipped: the feed is gone (410); --force polls it anyway",
                    o.source
                );
                continue;
            }
            Polled::Skipped(Hold::Until(t)) => {
                println!(
                    "{:<24} skipped: backing off until {} (after failures or the server's Retry-After); --force polls it anyway",
                    o.source,
                    t.format("%Y-%m-%d %H:%M:%S UTC")
                );
                continue;
            }
            Polled::Done(result) => result,
        };
        match result {
            Ok(r) if r.same_body => println!(
                "{:<24} not modified (the same body as the last poll)",
                o.source
            ),
            Ok(r) if r.not_modified => println!("{:<24} not modified", o.source),
            Ok(r) => println!(
                "{:<24} ok: {} entries, {} new, {} updated, {} merged into other sources' stories",
                o.source, r.entries, r.new_items, r.updated_items, r.merged
            ),
            Err(e) => {
                failed += 1;
                println!("{:<24} FAILED: {}", o.source, redact::text(&e.to_string()));
            }
        }
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn render(config: &Config, feed: &str, format: Format) -> anyhow::Result<ExitCode> {
    if config.feed(feed).is_none() {
        eprintln!("feedmux: unknown feed {feed:?}");
        return Ok(ExitCode::from(2));
    }
    let body = match daemon::open_store(config) {
        Ok(store) => {
            daemon::sync_feed_indexes(&store, config)?;
            let rendered = Publisher::new().render(&store, config, feed)?;
            rendered
                .get(format)
                .map(|doc| doc.body.to_vec())
                .unwrap_or_default()
        }
        // The daemon holds the store: ask it for what it serves.
        Err(StoreError::Locked { .. }) => {
            let path = format!("/feeds/{feed}.{}", format.extension());
            runtime()?.block_on(ask_daemon(config, &path))?
        }
        Err(e) => return Err(e.into()),
    };
    std::io::stdout()
        .write_all(&body)
        .context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

fn open_store(config: &Config) -> anyhow::Result<Store> {
    daemon::open_store(config).map_err(|e| match e {
        StoreError::Locked { .. } => anyhow::anyhow!(
            "{e}: stop the daemon first (systemctl stop feedmux), or run this on a copy of the store"
        ),
        other => other.into(),
    })
}

fn stories(config: &Config, since: std::time::Duration) -> anyhow::Result<()> {
    let store = open_store(config)?;
    // A span longer than the calendar (`--since 1000000y`) means everything.
    let since = chrono::Duration::from_std(since)
        .ok()
        .and_then(|since| chrono::Utc::now().checked_sub_signed(since))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let groups = feedmux::dedup::explain::stories(&store, since)?;
    if groups.is_empty() {
        println!("no story was reported by more than one source in that time");
    }
    for group in groups {
        println!("story {}", group.story);
        for (item, link) in group.members {
            let how = match link {
                None => "first".to_owned(),
                Some(l) => format!(
                    "{} {:.2}{}",
                    match l.kind {
                        feedmux::dedup::MergeKind::Url => "same URL",
                        feedmux::dedup::MergeKind::Text => "similar",
                        feedmux::dedup::MergeKind::Through => "through",
                    },
                    l.score,
                    l.meaning
                        .map_or(String::new(), |m| format!(" meaning {m:.3}"))
                ),
            };
            println!(
                "  {}  {:<14} {:<16} {}",
                item.id, how, item.source, item.title
            );
        }
    }
    Ok(())
}

fn why(config: &Config, a: &str, b: &str) -> anyhow::Result<ExitCode> {
    let store = open_store(config)?;
    let find = |text: &str| -> anyhow::Result<Option<feedmux::model::Item>> {
        Ok(feedmux::dedup::explain::find_item(&store, text)?)
    };
    let (Some(item_a), Some(item_b)) = (find(a)?, find(b)?) else {
        eprintln!("feedmux: no item (or more than one) matches {a:?} or {b:?}; ids are listed by `feedmux stories`");
        return Ok(ExitCode::from(2));
    };
    for line in feedmux::dedup::explain::why(&store, &item_a, &item_b, &config.dedup)? {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// GETs `path` from the daemon that serves this config.
async fn ask_daemon(config: &Config, path: &str) -> anyhow::Result<Vec<u8>> {
    let mut addr = config.server.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = url::Url::parse(&format!("http://{addr}{path}"))?;
    let fetcher = Fetcher::new(&config.poll)?;
    fetcher.set_address_policy(AddressPolicy::new([&url], Vec::new()));
    match fetcher.fetch(&url, &Validators::default()).await {
        Ok(FetchOutcome::Fetched(fetched)) => Ok(fetched.body.to_vec()),
        Ok(FetchOutcome::NotModified(_)) => anyhow::bail!("unexpected 304 from {url}"),
        Err(e) => Err(anyhow::anyhow!(
            "the store at {} is in use by a running feedmux, and asking it at {url} failed: {e}",
            config.storage.path.display()
        )),
    }
}

/// Each configured source with its state: from the store, or from the running daemon when it
/// holds the store (whose URLs are redacted: `SourceState::public`; the full configured URL
/// is put back where the daemon said the source is gone from it or moved from it).
fn source_states(config: &Config) -> anyhow::Result<Vec<(String, SourceState)>> {
    match daemon::open_store(config) {
        Ok(store) => config
            .sources
            .iter()
            .map(|s| Ok((s.name.clone(), store.source_state(&s.name)?)))
            .collect(),
        Err(StoreError::Locked { .. }) => {
            #[derive(serde::Deserialize)]
            struct Row {
                name: String,
                state: SourceState,
            }
            let body = runtime()?.block_on(ask_daemon(config, "/api/sources"))?;
            let rows: Vec<Row> =
                serde_json::from_slice(&body).context("the daemon's /api/sources is not valid")?;
            Ok(rows
                .into_iter()
                .map(|r| {
                    let state = match config.source(&r.name) {
                        Some(source) => r.state.from_public(source.url.as_str()),
                        None => r.state,
                    };
                    (r.name, state)
                })
                .collect())
        }
        Err(e) => Err(e.into()),
    }
}

fn sources(config: &Config) -> anyhow::Result<()> {
    let states = source_states(config)?;
    let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_else(|| "-".to_owned())
    };
    let width = config
        .sources
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let health = |source: &feedmux::config::SourceConfig, s: &SourceState| {
        if source.enabled {
            s.health()
        } else {
            "disabled".to_owned()
        }
    };
    let status_width = config
        .sources
        .iter()
        .map(|source| {
            let s = states
                .iter()
                .find(|(n, _)| *n == source.name)
                .map(|(_, s)| s.clone())
                .unwrap_or_default();
            health(source, &s).chars().count()
        })
        .max()
        .unwrap_or(6)
        .max(6);
    println!(
        "{:<width$}  {:<status_width$}  {:>6}  {:<16}  {:<16}  LAST ERROR / NOTE",
        "SOURCE", "STATUS", "ITEMS", "LAST POLL", "NEXT POLL"
    );
    for source in &config.sources {
        let s = states
            .iter()
            .find(|(name, _)| *name == source.name)
            .map(|(_, s)| s.clone())
            .unwrap_or_default();
        let next = match s.hold(source.url.as_str(), chrono::Utc::now()) {
            _ if !source.enabled => None,
            Some(Hold::Gone) => None,
            _ => s
                .next_poll
                .or_else(|| feedmux::schedule::next_slot(&source.schedule, chrono::Utc::now())),
        };
        println!(
            "{:<width$}  {:<status_width$}  {:>6}  {:<16}  {:<16}  {}",
            source.name,
            health(source, &s),
            s.item_count,
            when(s.last_poll),
            when(next),
            s.note(source.url.as_str(), Urls::Redacted)
        );
    }
    Ok(())
}

/// Adds the feeds of the OPML list `file` to the config file, keeping its comments and
/// layout; writes nothing when the result would not be a valid config.
fn import_opml(config: &Config, file: &std::path::Path) -> anyhow::Result<ExitCode> {
    let list = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let feeds = match feedmux::opml::parse(&String::from_utf8_lossy(&list)) {
        Ok(feeds) => feeds,
        Err(e) => {
            eprintln!("feedmux: {}: {e}", file.display());
            return Ok(ExitCode::from(2));
        }
    };
    let path = &config.path;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (new_text, report) = feedmux::opml::add_sources(&text, &feeds)
        .with_context(|| format!("cannot edit {}", path.display()))?;
    // The config is written before anything is printed: a reader of the output that goes
    // away (`| head`) must not cost the import.
    if !report.added.is_empty() {
        if let Err(errors) = config::parse(path, &new_text) {
            eprintln!(
                "feedmux: {} left unchanged: with these sources it would not be valid:",
                path.display()
            );
            for e in &errors.0 {
                eprintln!("{e}");
            }
            return Ok(ExitCode::from(2));
        }
        write_replacing(path, &new_text)?;
    }
    let mut out = String::new();
    for (name, url, tags) in &report.added {
        let url = redact::url_str(url);
        if tags.is_empty() {
            out.push_str(&format!("added    {name:<28} {url}\n"));
        } else {
            out.push_str(&format!(
                "added    {name:<28} {url}  tags: {}\n",
                tags.join(", ")
            ));
        }
    }
    for (url, why) in &report.skipped {
        out.push_str(&format!("skipped  {}: {why}\n", redact::url_str(url)));
    }
    warn_of_private_sources(&report.added);
    if report.added.is_empty() {
        out.push_str(&format!("nothing to add to {}\n", path.display()));
    } else {
        out.push_str(&format!(
            "{} added, {} skipped; {} updated (a running feedmux reloads it by itself)\n",
            report.added.len(),
            report.skipped.len(),
            path.display()
        ));
    }
    print_ignoring_closed_stdout(&out);
    Ok(ExitCode::SUCCESS)
}

/// Warns on stderr of each imported source that points into a private network: feedmux
/// trusts configured sources wherever they point, so a list from someone else must not
/// smuggle in `http://localhost:8080/admin`.
fn warn_of_private_sources(added: &[(String, String, Vec<String>)]) {
    for (name, url, _) in added {
        let Ok(parsed) = url::Url::parse(url) else {
            continue;
        };
        if let Some(why) = address::private_looking(&parsed) {
            eprintln!(
                "feedmux: warning: source {name:?} ({}) points into a private network ({why}); \
                 configured sources may reach it, so remove it unless you meant it",
                redact::url_str(url)
            );
        }
    }
}

/// Writes `text` to stdout; a closed stdout (a pipe whose reader has gone) is not an error
/// worth failing for once the work is done (`println!` would panic).
fn print_ignoring_closed_stdout(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

/// Replaces `path` with `text` in one step (a temporary file beside it, renamed over it), so
/// a daemon watching the file never reads half of it. The file's permissions are kept.
fn write_replacing(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".into());
    let temp = path.with_file_name(format!(".{name}.feedmux-new"));
    std::fs::write(&temp, text).with_context(|| format!("cannot write {}", temp.display()))?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(&temp, meta.permissions());
    }
    std::fs::rename(&temp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

/// The newest `limit` stored items of each of `sources`: from the store, or from the running
/// daemon when it holds the store.
fn stored_items(
    config: &Config,
    sources: &[String],
    limit: usize,
) -> anyhow::Result<Vec<feedmux::model::Item>> {
    let mut items = Vec::new();
    match daemon::open_store(config) {
        Ok(store) => {
            for source in sources {
                items.extend(store.source_items(source, limit)?);
            }
        }
        Err(StoreError::Locked { .. }) => {
            let rt = runtime()?;
            let limit = limit.min(feedmux::server::MAX_API_ITEMS);
            for source in sources {
                let path = format!("/api/items?source={source}&limit={limit}");
                match rt.block_on(ask_daemon(config, &path)) {
                    Ok(body) => items.extend(
                        serde_json::from_slice::<Vec<feedmux::model::Item>>(&body)
                            .context("the daemon's /api/items is not valid")?,
                    ),
                    // A source new in the edited file that the daemon does not know yet.
                    Err(e) if e.to_string().contains("404") => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Err(e) => return Err(e.into()),
    }
    items.sort_by(|a, b| b.published.cmp(&a.published).then(a.id.cmp(&b.id)));
    items.truncate(limit);
    Ok(items)
}

/// Judges the newest stored items of a feed's sources by the feed's rules in the config file.
fn preview(config: &Config, feed: &str, limit: usize) -> anyhow::Result<ExitCode> {
    let Some(feed_config) = config.feed(feed) else {
        eprintln!("feedmux: unknown feed {feed:?}");
        return Ok(ExitCode::from(2));
    };
    let filter = feedmux::filter::FeedFilter::new(feed_config);
    let items = stored_items(config, &feed_config.sources, limit)?;
    println!(
        "feed {} ({}): rules of {}, sources: {}",
        feed_config.name,
        feed_config.title,
        config.path.display(),
        feed_config.sources.join(", ")
    );
    let source_width = items
        .iter()
        .map(|i| i.source.chars().count())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut kept = 0;
    let mut why_dropped: std::collections::BTreeMap<String, usize> = Default::default();
    for item in &items {
        let decision = filter.decide(item);
        let rule = decision.rule().to_string();
        if decision.kept() {
            kept += 1;
        } else {
            *why_dropped.entry(rule.clone()).or_default() += 1;
        }
        println!(
            "{}  {}  {:<source_width$}  {:<28}  {}",
            if decision.kept() { "KEEP" } else { "DROP" },
            item.published.format("%Y-%m-%d %H:%M"),
            item.source,
            rule,
            item.title
        );
    }
    let reasons: Vec<String> = why_dropped
        .iter()
        .map(|(rule, n)| format!("{rule}: {n}"))
        .collect();
    println!(
        "{feed} keeps {kept} and drops {} of the {} newest stored items of its sources{}; it serves the newest {} kept{}",
        items.len() - kept,
        items.len(),
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        },
        feed_config.limit,
        if feed_config.group_stories {
            ", one per story"
        } else {
            ""
        }
    );
    Ok(ExitCode::SUCCESS)
}
