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
