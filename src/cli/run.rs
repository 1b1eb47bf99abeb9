//! The commands that poll: `run` (the daemon, with its signals) and `poll` (once, now).

use std::process::ExitCode;

use anyhow::Context;
use tokio::sync::mpsc;
use tracing::{error, info};

use feedmux::config::Config;
use feedmux::daemon::{self, Control, Polled};
use feedmux::model::Hold;
use feedmux::redact;

/// Runs the daemon until SIGTERM or SIGINT.
pub(crate) async fn run(config: Config) -> anyhow::Result<()> {
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

/// Polls `sources` (all when empty) once, now, and prints how each went.
pub(crate) fn poll(config: Config, sources: Vec<String>, force: bool) -> anyhow::Result<ExitCode> {
    for name in &sources {
        if config.source(name).is_none() {
            eprintln!("feedmux: unknown source {name:?}");
            return Ok(ExitCode::from(2));
        }
    }
    super::runtime()?.block_on(poll_and_print(config, sources, force))
}

async fn poll_and_print(
    config: Config,
    sources: Vec<String>,
    force: bool,
) -> anyhow::Result<ExitCode> {
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
            Polled::PolledElsewhere => {
                println!(
                    "{:<24} skipped: another instance sharing the store polled it meanwhile",
                    o.source
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
