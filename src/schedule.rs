//! Scheduling: when each source is due, and the loop that polls it then.
//!
//! After a successful poll the next one is the source's cron slot, pushed later by the largest
//! of the publisher's hints (RSS `<ttl>`, `Cache-Control: max-age`, `Expires`, `Retry-After`),
//! the push clamped to `[poll] max_interval`. After a failure it is the slot or the backoff,
//! whichever is later: `backoff_base` doubling with each consecutive failure up to
//! `backoff_max`, spread by a jitter derived from the source's name (so sources that fail
//! together do not retry together), or the server's `Retry-After` if that is later.
//!
//! Each source runs in its own task: sleep until it is due (plus a little jitter, so that
//! sources on the same schedule do not fire in the same second), take a permit from the global
//! concurrency limit, poll, repeat. A source whose slot passed while feedmux was not running (or
//! that was never polled) is due at once. The scheduler knows nothing about HTTP, parsing or the
//! store: it calls the poll function it is given, which answers when the source is next due,
//! or ([`Next::Retry`]) that it could not poll for a reason not the source's and when to try
//! again (at once when that comes, no backoff, no jitter).
//!
//! Times of day come from the daemon's [`Clock`]; waits are slept on tokio's monotonic clock,
//! so a jump of the wall clock during a wait changes nothing, and [`wait_until`] reads a due
//! time against both the wall clock when it was computed and now, taking the shorter wait: a
//! jump can make a poll earlier (once), never postpone it until the wall clock catches up.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::sync::{watch, Semaphore};

use crate::clock::Clock;
use crate::config::Schedule;

/// The largest jitter added to a slot.
pub const MAX_JITTER: Duration = Duration::from_secs(30);

/// The first cron slot strictly after `after`.
pub fn next_slot(schedule: &Schedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule.cron.after(&after).next()
}

/// When a source is first due: at once if it was never polled or a slot passed since its last
/// poll, else at its next slot.
pub fn first_due(
    schedule: &Schedule,
    last_poll: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    match last_poll.and_then(|last| next_slot(schedule, last)) {
        Some(slot) if slot > now => slot,
        _ => now,
    }
}

/// The timing rules of `[poll]` that decide the next poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub max_interval: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl From<&crate::config::PollConfig> for Timing {
    fn from(poll: &crate::config::PollConfig) -> Timing {
        Timing {
            max_interval: poll.max_interval,
            backoff_base: poll.backoff_base,
            backoff_max: poll.backoff_max,
        }
    }
}

fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// `t + d`, or the latest representable time if that overflows.
fn later(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t.checked_add_signed(chrono(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The next poll after a success at `now`: the cron slot, pushed later by the latest of
/// `hints` (each clamped to `now + max_interval`).
pub fn next_after_success(
    schedule: &Schedule,
    now: DateTime<Utc>,
    hints: &[Option<DateTime<Utc>>],
    timing: &Timing,
) -> DateTime<Utc> {
    let cap = later(now, timing.max_interval);
    let slot = next_slot(schedule, now).unwrap_or(cap);
    match hints.iter().flatten().max() {
        Some(hint) => slot.max((*hint).min(cap)),
        None => slot,
    }
}

/// The delay after `failures` consecutive failures (1 for the first): `backoff_base * 2^(n-1)`,
/// times a factor between 0.75 and 1.25 derived from `seed`, at most `backoff_max`.
pub fn backoff(failures: u32, seed: &str, timing: &Timing) -> Duration {
    let doublings = failures.saturating_sub(1).min(30);
    let raw = timing.backoff_base.saturating_mul(1u32 << doublings);
    let raw = raw.min(timing.backoff_max);
    let spread = 0.75 + 0.5 * unit_fraction(seed, failures);
    raw.mul_f64(spread).min(timing.backoff_max)
}

/// A number in [0, 1) fixed by `seed` and `n`.
fn unit_fraction(seed: &str, n: u32) -> f64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(seed.as_bytes())
        .chain_update(n.to_be_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// After a failure at `now`: (the next poll, the time before which no poll may happen).
pub fn next_after_failure(
    schedule: &Schedule,
    now: DateTime<Utc>,
    failures: u32,
    retry_after: Option<DateTime<Utc>>,
    seed: &str,
    timing: &Timing,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let mut hold = later(now, backoff(failures, seed, timing));
    if let Some(asked) = retry_after {
        hold = hold.max(asked.min(later(now, timing.max_interval)));
    }
    let slot = next_slot(schedule, now).unwrap_or(hold);
    (slot.max(hold), hold)
}

/// A random delay of up to a tenth of the schedule's interval, at most [`MAX_JITTER`].
pub fn jitter(schedule: &Schedule, now: DateTime<Utc>) -> Duration {
    let interval = next_slot(schedule, now)
        .and_then(|a| next_slot(schedule, a).map(|b| b - a))
        .and_then(|d| d.to_std().ok())
        .unwrap_or(MAX_JITTER);
    let cap = (interval / 10).min(MAX_JITTER);
    if cap.is_zero() {
        return Duration::ZERO;
    }
    let millis = rand::thread_rng().gen_range(0..=cap.as_millis() as u64);
    Duration::from_millis(millis)
}

/// How long to wait, now, for `due`, computed at `computed` (wall clock, monotonic clock):
/// the shorter of `due` read on today's wall clock and read on the wall clock as it was then
/// (plus the monotonic time since). Without a jump in between both are the same; a backward
/// jump would make the first a wait until the clock catches up, a forward one the second a
/// wait of the whole jump. Never negative.
pub fn wait_until(
    due: DateTime<Utc>,
    computed: (DateTime<Utc>, tokio::time::Instant),
    now: (DateTime<Utc>, tokio::time::Instant),
) -> Duration {
    let by_now = due - now.0;
    let since = now.1.saturating_duration_since(computed.1);
    let by_then = (due - computed.0).checked_sub(&chrono(since));
    let wait = match by_then {
        Some(by_then) => by_now.min(by_then),
        None => by_now,
    };
    wait.to_std().unwrap_or(Duration::ZERO)
}

/// What a poll answers: when to poll the source again.
pub enum Next {
    /// When the source is next due (jitter is added); `None`: never (e.g. the feed is gone).
    At(Option<DateTime<Utc>>),
    /// Poll again as soon as this resolves, without jitter: the poll could not be done for a
    /// reason that is not the source's (the caller's store failing), and the future resolves
    /// when trying again is worth it. The loop holds no permit while it waits.
    Retry(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>),
}

impl From<Option<DateTime<Utc>>> for Next {
    fn from(due: Option<DateTime<Utc>>) -> Next {
        Next::At(due)
    }
}

/// Polls one source until `stop` turns true. The first poll is at `first`; `poll` runs with a
/// permit of `limit` held and answers when the source is next due ([`Next`]; `None`: never,
/// e.g. the feed is gone). `clock` is the one `first` and the answers of `poll` are read on.
pub async fn run_source<F, Fut, N>(
    schedule: Schedule,
    clock: Arc<dyn Clock>,
    first: Option<DateTime<Utc>>,
    limit: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    poll: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = N>,
    N: Into<Next>,
{
    let Some(mut due) = first else {
        let _ = stop.wait_for(|s| *s).await;
        return;
    };
    // When `due` was computed, on both clocks (the poll reads the time when it starts).
    let mut computed = (clock.now(), tokio::time::Instant::now());
    let mut first = true;
    let mut retry = None;
    loop {
        if let Some(retry) = retry.take() {
            tokio::select! {
                () = retry => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        } else {
            let now = clock.now();
            let mut wait = wait_until(due, computed, (now, tokio::time::Instant::now()));
            if !first || wait > Duration::ZERO {
                wait += jitter(&schedule, now);
            } else {
                // First polls at start-up are spread out too, but by less.
                wait += jitter(&schedule, now) / 10;
            }
            first = false;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.wait_for(|s| *s) => return,
        };
        computed = (clock.now(), tokio::time::Instant::now());
        // Boxed: the loop waits between polls without the poll's state (fetch, parse and
        // store futures, kilobytes), and a daemon keeps one loop per source.
        let next = Box::pin(poll()).await.into();
        drop(permit);
        if *stop.borrow() {
            return;
        }
        match next {
            Next::At(Some(next)) => due = next,
            Next::Retry(when) => retry = Some(when),
            Next::At(None) => {
                let _ = stop.wait_for(|s| *s).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod loop_tests;
