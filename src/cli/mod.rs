//! The `feedmux` command's parts: one module per group of commands, and what they share
//! (the config argument, loading the config, the runtime). Commands reach the store through
//! [`access::StoreAccess`]; errors become messages and exit statuses in `main` only.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::ValueEnum;

use feedmux::config::{self, Config, StorageEngine};
use feedmux::publish::Format;
use feedmux::store::{Store, StoreError};

pub(crate) mod access;
pub(crate) mod copy_store;
pub(crate) mod inspect;
pub(crate) mod logging;
pub(crate) mod opml;
pub(crate) mod run;

#[derive(clap::Args)]
pub(crate) struct ConfigArg {
    /// The config file [default: $FEEDMUX_CONFIG, else ./config/feedmux.toml, else /etc/feedmux/feedmux.toml]
    #[arg(long, value_name = "PATH", global = true)]
    config: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum FormatArg {
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

fn config_path(arg: &ConfigArg) -> PathBuf {
    arg.config.clone().unwrap_or_else(config::default_path)
}

/// Loads the config, or prints every problem as `file:line:column: message`.
pub(crate) fn load_config(arg: &ConfigArg) -> Result<Config, ExitCode> {
    let path = config_path(arg);
    config::load(&path).map_err(|errors| {
        for e in &errors.0 {
            eprintln!("{e}");
        }
        ExitCode::from(2)
    })
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(blocking_threads())
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Threads for blocking work (the store's reads and writes, renders, file reads): four per
/// core, at least [`MIN_BLOCKING_THREADS`]. That work is mostly CPU-bound, so more threads add
/// no speed, only memory: each keeps its own zstd contexts, allocator cache and stack, and
/// under 64 concurrent readers tokio's default of 512 grew the daemon of 300,000 items from
/// 278 to 330 MiB (BENCHMARKS.md, "memory").
fn blocking_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_mul(4)
        .max(MIN_BLOCKING_THREADS)
}

/// The fewest threads for blocking work: enough that polls waiting for the store (a
/// PostgreSQL server that is down holds each for its connect timeout) leave requests room.
const MIN_BLOCKING_THREADS: usize = 16;

pub(crate) fn check(arg: &ConfigArg) -> ExitCode {
    let path = config_path(arg);
    match config::load(&path) {
        Ok(c) => {
            println!(
                "{}: ok: {} sources, {} output feeds, listening on {}, {}",
                path.display(),
                c.sources.len(),
                c.feeds.len(),
                c.server.listen,
                store_location(&c)
            );
            if let StorageEngine::Postgres { url } = &c.storage.engine {
                println!("  storage engine postgres: instances sharing this database poll each source once per slot");
                println!("  database TLS: {}", database_tls(url.tls()));
                if url.has_password() {
                    println!(
                        "  warning: [storage] url holds a password; PGPASSWORD or ~/.pgpass keep it out of the config"
                    );
                }
            }
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

/// What the database URL's `sslmode` and `sslrootcert` ask of the connection, for
/// `feedmux check`.
fn database_tls(tls: &config::DatabaseTls) -> String {
    let roots = match &tls.root_cert {
        Some(config::RootCerts::File(path)) => format!("the CA certificates of {}", path.display()),
        _ => "the system's CA certificates".to_owned(),
    };
    let what = match tls.mode {
        config::SslMode::Disable => "never encrypted".to_owned(),
        config::SslMode::Prefer | config::SslMode::Require if !tls.verifies_chain() => {
            let when = if tls.mode == config::SslMode::Prefer {
                "encrypted when the server offers it"
            } else {
                "always encrypted"
            };
            format!("{when}; the server's certificate is not verified")
        }
        config::SslMode::Prefer => {
            format!("encrypted when the server offers it; its certificate verified against {roots}")
        }
        config::SslMode::Require | config::SslMode::VerifyCa => {
            format!("always encrypted; the server's certificate verified against {roots}")
        }
        config::SslMode::VerifyFull => format!(
            "always encrypted; the server's certificate verified against {roots}, and its host name"
        ),
    };
    format!("sslmode={}: {what}", tls.mode.name())
}

/// Where the configured store is, for `feedmux check`: the sled directory, or the
/// PostgreSQL database (its URL without the password).
fn store_location(config: &Config) -> String {
    match &config.storage.engine {
        StorageEngine::Sled => format!("store at {}", config.storage.path.display()),
        StorageEngine::Postgres { url } => format!("store in PostgreSQL at {url}"),
    }
}

/// Writes an output feed, as it is served, to stdout.
pub(crate) fn render(config: &Config, feed: &str, format: FormatArg) -> anyhow::Result<ExitCode> {
    if config.feed(feed).is_none() {
        eprintln!("feedmux: unknown feed {feed:?}");
        return Ok(ExitCode::from(2));
    }
    let body = access::StoreAccess::open(config)?.render(config, feed, format.into())?;
    std::io::Write::write_all(&mut std::io::stdout(), &body).context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// Rewrites the store into fresh files (the daemon must be stopped).
pub(crate) fn compact(config: &Config) -> anyhow::Result<()> {
    if config.storage.engine != StorageEngine::Sled {
        anyhow::bail!(
            "compact rewrites the embedded (sled) store; this config uses engine = \"{}\"",
            config.storage.engine.name()
        );
    }
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
    Ok(())
}
