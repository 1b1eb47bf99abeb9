//! Changes other instances write: a poll's or a prune's transaction notifies
//! [`CHANNEL`] with the writing instance and the source, and a listener thread per engine hands
//! other instances' notifications to the daemon, which renders the feeds they changed. Each
//! time the listener starts listening (at start, and after it lost its connection) it reports
//! [`StoreChange::Everything`], since it may have missed some before.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::Transaction;

use super::*;

/// The channel of change notifications.
const CHANNEL: &str = "feedmux_changes";
/// How often the listener looks whether its engine is gone.
const TICK: Duration = Duration::from_secs(1);
/// The wait before the listener connects again after losing its connection.
const RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// Tells the other instances, when `tx` commits, that `instance` wrote `source`'s items
/// (`None`: items of any source, a prune), and whether it merged stories (whose other members
/// may be in any feed).
pub(super) fn notify(
    tx: &mut Transaction<'_>,
    instance: &str,
    source: Option<&str>,
    stories_merged: bool,
) -> Result<(), StoreError> {
    let payload = format!(
        "{instance}\t{}\t{}",
        source.unwrap_or_default(),
        u8::from(stories_merged || source.is_none())
    );
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])?;
    Ok(())
}

/// What a notification of another instance says; `None` for this instance's own.
fn change_of(payload: &str, instance: &str) -> Option<StoreChange> {
    let mut parts = payload.splitn(3, '\t');
    let (from, source, merged) = (parts.next()?, parts.next()?, parts.next()?);
    if from == instance {
        return None;
    }
    if source.is_empty() {
        return Some(StoreChange::Everything);
    }
    Some(StoreChange::Source {
        source: source.to_owned(),
        stories_merged: merged == "1",
    })
}

/// Listens on its own connection until `stop`, calling `on_change` with other instances'
/// changes.
pub(super) fn listen(
    mut connector: Connector,
    instance: String,
    stop: Arc<AtomicBool>,
    on_change: Box<dyn Fn(StoreChange) + Send>,
) {
    connector
        .config
        .connect_timeout(RECONNECT_DELAY.saturating_mul(3));
    connector.config.application_name("feedmux (changes)");
    let started = std::thread::Builder::new()
        .name("feedmux-db-changes".to_owned())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut client = match connector.connect() {
                    Ok(client) => client,
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot listen for other instances' changes yet");
                        std::thread::sleep(RECONNECT_DELAY);
                        continue;
                    }
                };
                if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")) {
                    tracing::debug!(error = %e, "cannot listen for other instances' changes yet");
                    std::thread::sleep(RECONNECT_DELAY);
                    continue;
                }
                // Whatever was written before it listened (the daemon's first render may have
                // been read before some commit) or while its connection was down went
                // unheard: everything is rendered again once it listens.
                on_change(StoreChange::Everything);
                while !stop.load(Ordering::Relaxed) && !client.is_closed() {
                    let mut notifications = client.notifications();
                    let mut heard = notifications.timeout_iter(TICK);
                    loop {
                        match heard.next() {
                            Ok(Some(n)) => {
                                if let Some(change) = change_of(n.payload(), &instance) {
                                    on_change(change);
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                tracing::debug!(error = %e, "lost the connection that listens for other instances' changes");
                                break;
                            }
                        }
                    }
                }
            }
        });
    if let Err(e) = started {
        tracing::warn!(error = %e, "cannot start the thread that listens for other instances' changes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_hears_the_others_and_not_itself() {
        assert_eq!(change_of("a:1:ff\tnews\t0", "a:1:ff"), None);
        assert_eq!(
            change_of("a:1:ff\tnews\t1", "b:2:00"),
            Some(StoreChange::Source {
                source: "news".into(),
                stories_merged: true
            })
        );
        assert_eq!(
            change_of("a:1:ff\t\t1", "b:2:00"),
            Some(StoreChange::Everything)
        );
        assert_eq!(change_of("garbage", "b:2:00"), None);
    }
}
