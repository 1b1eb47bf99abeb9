//! Talking to the service manager (systemd's `sd_notify` protocol): ready, reloading,
//! stopping, status lines and watchdog pings.
//!
//! Every function here is a no-op when `NOTIFY_SOCKET` is not set (a terminal, a test, another
//! supervisor), and a failure to notify is logged, never fatal. The `sd-notify` crate is used
//! here and nowhere else. This module decides nothing about the daemon's work: the daemon
//! calls it when its state changes.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "cannot notify the service manager");
    }
}

/// The store is open, the listener bound and the sources scheduled (`READY=1`), with a
/// one-line status for `systemctl status`.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload has started (`RELOADING=1` with `MONOTONIC_USEC`, as `Type=notify-reload`
/// wants); [`ready`] ends it.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    states.push(NotifyState::Status("reloading the config"));
    send(&states);
}

/// A clean stop has started (`STOPPING=1`).
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Start-up work that takes long is still going (a one-time upgrade of the store): the
/// service manager's start timeout is pushed to [`STARTING_GRACE`] from now, with a status
/// line saying how far it got, so that a big store is not killed half-way and started again.
pub fn still_starting(status: &str) {
    let grace = u32::try_from(STARTING_GRACE.as_micros()).unwrap_or(u32::MAX);
    send(&[
        NotifyState::ExtendTimeoutUsec(grace),
        NotifyState::Status(status),
    ]);
}

/// How long past each [`still_starting`] call the service manager waits for the next sign.
pub const STARTING_GRACE: Duration = Duration::from_secs(60);

/// A new status line, without a change of state.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// How often to ping the watchdog: half the service manager's `WatchdogSec`, or `None` when
/// no watchdog is set for this process.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| d / 2)
}

/// The main loop is alive (`WATCHDOG=1`).
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A long start-up says it is still going: the start timeout is extended and the status
    /// says how far it got.
    #[test]
    fn still_starting_extends_the_start_timeout_with_a_status() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        // Other tests running meanwhile may notify this socket too: ours is found among them.
        std::env::set_var("NOTIFY_SOCKET", &path);
        still_starting("upgrading: 1024 of 5000 items");
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        loop {
            let n = socket
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("{e}; seen {seen:?}"));
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            if message
                .lines()
                .any(|l| l == "STATUS=upgrading: 1024 of 5000 items")
            {
                let lines: Vec<&str> = message.lines().collect();
                assert!(lines.contains(&"EXTEND_TIMEOUT_USEC=60000000"), "{lines:?}");
                break;
            }
            seen.push(message);
        }
    }
}
