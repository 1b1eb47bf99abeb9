//! Scheduling: when each source is due, and the loop that polls it then.
//!
//! Each source runs in its own task: sleep until its next cron slot (plus a little jitter, so
//! that sources on the same schedule do not fire in the same second), take a permit from the
//! global concurrency limit, poll, repeat. A source whose slot passed while feedmux was not
//! running (or that was never polled) is due at once. The scheduler knows nothing about HTTP,
//! parsing or the store: it calls the poll function it is given.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::sync::{watch, Semaphore};

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

/// Polls one source on its schedule until `stop` turns true. `poll` receives the time of the
/// slot after this one (to record as the next poll) and runs with a permit of `limit` held.
pub async fn run_source<F, Fut>(
    schedule: Schedule,
    last_poll: Option<DateTime<Utc>>,
    limit: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    poll: F,
) where
    F: Fn(Option<DateTime<Utc>>) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut due = first_due(&schedule, last_poll, Utc::now());
    let mut first = true;
    loop {
        let now = Utc::now();
        let mut wait = (due - now).to_std().unwrap_or(Duration::ZERO);
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
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.wait_for(|s| *s) => return,
        };
        let next = next_slot(&schedule, Utc::now());
        poll(next).await;
        drop(permit);
        if *stop.borrow() {
            return;
        }
        due = next.unwrap_or_else(|| Utc::now() + chrono::Duration::days(365));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::str::FromStr;

    fn every_15_minutes() -> Schedule {
        Schedule {
            text: "0 */15 * * * *".into(),
            cron: cron::Schedule::from_str("0 */15 * * * *").unwrap(),
        }
    }

    #[test]
    fn never_polled_is_due_now() {
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 10, 7, 0).unwrap();
        assert_eq!(first_due(&every_15_minutes(), None, now), now);
    }

    #[test]
    fn missed_slot_is_due_now_and_recent_poll_waits() {
        let s = every_15_minutes();
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 10, 7, 0).unwrap();
        let long_ago = Utc.with_ymd_and_hms(2026, 11, 26, 9, 0, 0).unwrap();
        assert_eq!(first_due(&s, Some(long_ago), now), now);
        let recent = Utc.with_ymd_and_hms(2026, 11, 26, 10, 1, 0).unwrap();
        assert_eq!(
            first_due(&s, Some(recent), now),
            Utc.with_ymd_and_hms(2026, 11, 26, 10, 15, 0).unwrap()
        );
    }

    #[test]
    fn jitter_stays_within_a_tenth_of_the_interval() {
        let s = every_15_minutes();
        let now = Utc::now();
        for _ in 0..100 {
            assert!(jitter(&s, now) <= MAX_JITTER);
        }
        let every_second = Schedule {
            text: "* * * * * *".into(),
            cron: cron::Schedule::from_str("* * * * * *").unwrap(),
        };
        for _ in 0..100 {
            assert!(jitter(&every_second, now) <= Duration::from_millis(100));
        }
    }
}
