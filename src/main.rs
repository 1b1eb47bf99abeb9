//! The `feedmux` command: parses arguments, starts logging, loads the config and hands each
//! command to its module under `cli/`. Errors become messages and exit statuses here and
//! nowhere else.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;
use cli::logging::{self, LogFormat};
use cli::{inspect, opml, ConfigArg, FormatArg};

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
    /// Copy the embedded store into a new, empty PostgreSQL database, record by record; the
    /// daemon must be stopped.
    CopyStore {
        #[command(flatten)]
        config: ConfigArg,
        /// The database: `postgres://user@host:port/database`, created and empty.
        #[arg(long, value_name = "URL")]
        to: String,
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
            | Command::CopyStore { config, .. }
            | Command::ExportOpml { config, .. } => config,
        }
    }
}

const DONE: ExitCode = ExitCode::SUCCESS;

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Check { config } = &cli.command {
        return Ok(cli::check(config));
    }
    let config = match cli::load_config(cli.command.config_arg()) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    logging::init_logging(&config.log_level, cli.log_format);
    match cli.command {
        Command::Check { .. } => unreachable!("handled above"),
        Command::Run { .. } => cli::runtime()?
            .block_on(cli::run::run(config))
            .map(|()| DONE),
        Command::Poll { sources, force, .. } => cli::run::poll(config, sources, force),
        Command::Render { feed, format, .. } => cli::render(&config, &feed, format),
        Command::Stories { since, .. } => inspect::stories(&config, &since),
        Command::Why { item_a, item_b, .. } => inspect::why(&config, &item_a, &item_b),
        Command::Sources { .. } => inspect::sources(&config).map(|()| DONE),
        Command::ImportOpml { file, .. } => opml::import_opml(&config, &file),
        Command::Preview { feed, limit, .. } => inspect::preview(&config, &feed, limit),
        Command::Compact { .. } => cli::compact(&config).map(|()| DONE),
        Command::CopyStore { to, .. } => cli::copy_store::copy_store(&config, &to).map(|()| DONE),
        Command::ExportOpml { full_urls, .. } => {
            opml::export_opml(&config, full_urls).map(|()| DONE)
        }
    }
}
