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
        let next = poll().await.into();
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
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::str::FromStr;

    fn every_15_minutes() -> Schedule {
        Schedule {
            text: "0 */15 * * * *".into(),
            cron: std::sync::Arc::new(cron::Schedule::from_str("0 */15 * * * *").unwrap()),
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

    fn timing() -> Timing {
        Timing {
            max_interval: Duration::from_secs(24 * 3600),
            backoff_base: Duration::from_secs(300),
            backoff_max: Duration::from_secs(6 * 3600),
        }
    }

    #[test]
    fn hints_push_the_next_poll_but_only_up_to_the_maximum() {
        let s = every_15_minutes();
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 10, 7, 0).unwrap();
        let slot = Utc.with_ymd_and_hms(2026, 11, 26, 10, 15, 0).unwrap();
        assert_eq!(next_after_success(&s, now, &[], &timing()), slot);
        let two_hours = now + chrono::Duration::hours(2);
        assert_eq!(
            next_after_success(
                &s,
                now,
                &[
                    Some(now + chrono::Duration::minutes(1)),
                    Some(two_hours),
                    None
                ],
                &timing()
            ),
            two_hours
        );
        let far = now + chrono::Duration::days(30);
        assert_eq!(
            next_after_success(&s, now, &[Some(far)], &timing()),
            now + chrono::Duration::hours(24)
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_stops_at_the_cap() {
        let t = timing();
        let mut last = Duration::ZERO;
        for failures in 1..=12 {
            let d = backoff(failures, "src", &t);
            let nominal = (t.backoff_base * (1 << (failures - 1))).min(t.backoff_max);
            assert!(
                d >= nominal.mul_f64(0.75) && d <= nominal.mul_f64(1.25).min(t.backoff_max),
                "{failures}: {d:?}"
            );
            assert_eq!(d, backoff(failures, "src", &t), "deterministic");
            if failures > 8 {
                assert!(d <= t.backoff_max);
            }
            last = d;
        }
        assert!(last >= t.backoff_max.mul_f64(0.75));
        assert_ne!(
            backoff(3, "a", &t),
            backoff(3, "b", &t),
            "sources spread out"
        );
    }

    #[test]
    fn retry_after_beyond_the_backoff_wins() {
        let s = every_15_minutes();
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 10, 7, 0).unwrap();
        let asked = now + chrono::Duration::hours(3);
        let (next, hold) = next_after_failure(&s, now, 1, Some(asked), "x", &timing());
        assert_eq!((next, hold), (asked, asked));
        let (next, hold) = next_after_failure(&s, now, 1, None, "x", &timing());
        assert!(
            hold >= now + chrono::Duration::seconds(225)
                && hold <= now + chrono::Duration::seconds(375)
        );
        assert_eq!(
            next,
            hold.max(Utc.with_ymd_and_hms(2026, 11, 26, 10, 15, 0).unwrap())
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
            cron: std::sync::Arc::new(cron::Schedule::from_str("* * * * * *").unwrap()),
        };
        for _ in 0..100 {
            assert!(jitter(&every_second, now) <= Duration::from_millis(100));
        }
    }
}

#[cfg(test)]
mod loop_tests {
    use super::*;
    use std::str::FromStr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn hourly() -> Schedule {
        Schedule {
            text: "0 0 * * * *".into(),
            cron: std::sync::Arc::new(cron::Schedule::from_str("0 0 * * * *").unwrap()),
        }
    }

    /// In paused time: a source due now is polled at once, then whenever its poll says, and
    /// never again once the poll answers `None`; stopping ends the loop.
    #[tokio::test(start_paused = true)]
    async fn the_loop_polls_when_due_and_stops_when_told() {
        let polls = Arc::new(AtomicUsize::new(0));
        let (stop_tx, stop) = watch::channel(false);
        let counter = polls.clone();
        let task = tokio::spawn(run_source(
            hourly(),
            crate::clock::system(),
            Some(Utc::now()),
            Arc::new(Semaphore::new(1)),
            stop,
            move || {
                let counter = counter.clone();
                async move {
                    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    // Due again "in an hour" (paused time runs the wait at once), until the
                    // third poll, which answers that the feed is gone.
                    (n < 3).then(|| Utc::now() + chrono::Duration::hours(1))
                }
            },
        ));
        // Let virtual time run far ahead.
        tokio::time::sleep(Duration::from_secs(10 * 3600)).await;
        assert_eq!(polls.load(Ordering::SeqCst), 3);
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }

    /// A poll that answers `Retry` (the daemon's store failing) is polled again as soon as
    /// the retry resolves, not at its next slot an hour later, and without jitter.
    #[tokio::test(start_paused = true)]
    async fn a_retry_polls_again_when_it_resolves_not_at_the_next_slot() {
        let polls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stop_tx, stop) = watch::channel(false);
        let started = tokio::time::Instant::now();
        let seen = polls.clone();
        let task = tokio::spawn(run_source(
            hourly(),
            crate::clock::system(),
            Some(Utc::now()),
            Arc::new(Semaphore::new(1)),
            stop,
            move || {
                let seen = seen.clone();
                async move {
                    let mut seen = seen.lock().unwrap();
                    seen.push(started.elapsed());
                    if seen.len() < 3 {
                        Next::Retry(Box::pin(tokio::time::sleep(Duration::from_secs(2))))
                    } else {
                        Next::At(Some(Utc::now() + chrono::Duration::hours(1)))
                    }
                }
            },
        ));
        tokio::time::sleep(Duration::from_secs(600)).await;
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        let polls = polls.lock().unwrap();
        assert_eq!(polls.len(), 3, "{polls:?}");
        // The first poll is due now (a jitter of up to a tenth of 30 s at start-up).
        let first = polls[0];
        assert!(first <= Duration::from_secs(3), "{polls:?}");
        assert_eq!(polls[1] - first, Duration::from_secs(2), "{polls:?}");
        assert_eq!(polls[2] - first, Duration::from_secs(4), "{polls:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_disabled_or_gone_source_is_never_polled() {
        let polls = Arc::new(AtomicUsize::new(0));
        let (stop_tx, stop) = watch::channel(false);
        let counter = polls.clone();
        let task = tokio::spawn(run_source(
            hourly(),
            crate::clock::system(),
            None,
            Arc::new(Semaphore::new(1)),
            stop,
            move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async { None }
            },
        ));
        tokio::time::sleep(Duration::from_secs(48 * 3600)).await;
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(polls.load(Ordering::SeqCst), 0);
    }

    /// Polls of sources on an hourly schedule, each answering its next poll from `clock` as
    /// the pipeline does; `jump_in_poll` steps the clock by that much during the given poll
    /// (1 for the first) of every source, after it read the time.
    /// When a poll happened: on the monotonic clock, and by the clock it was given.
    type PollTime = (tokio::time::Instant, DateTime<Utc>);

    struct Polled {
        /// (monotonic, wall-clock) time of each poll, per source.
        times: Vec<Arc<std::sync::Mutex<Vec<PollTime>>>>,
        stop: watch::Sender<bool>,
        tasks: Vec<tokio::task::JoinHandle<()>>,
    }

    fn start_polling(
        clock: &Arc<crate::clock::SteppedClock>,
        sources: usize,
        jump_in_poll: Option<(usize, chrono::Duration)>,
    ) -> Polled {
        let (stop, stop_rx) = watch::channel(false);
        let limit = Arc::new(Semaphore::new(2));
        let mut times = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..sources {
            let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
            times.push(seen.clone());
            let clock = clock.clone();
            let dyn_clock: Arc<dyn Clock> = clock.clone();
            tasks.push(tokio::spawn(run_source(
                hourly(),
                dyn_clock,
                Some(clock.now()),
                limit.clone(),
                stop_rx.clone(),
                move || {
                    let (clock, seen) = (clock.clone(), seen.clone());
                    async move {
                        let now = clock.now();
                        let n = {
                            let mut seen = seen.lock().unwrap();
                            seen.push((tokio::time::Instant::now(), now));
                            seen.len()
                        };
                        let timing = Timing {
                            max_interval: Duration::from_secs(24 * 3600),
                            backoff_base: Duration::from_secs(300),
                            backoff_max: Duration::from_secs(6 * 3600),
                        };
                        let next = next_after_success(&hourly(), now, &[], &timing);
                        // The fetch takes a few seconds; the clock may jump meanwhile.
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        if let Some((at, by)) = jump_in_poll {
                            if n == at {
                                clock.step(by);
                            }
                        }
                        Some(next)
                    }
                },
            )));
        }
        Polled { times, stop, tasks }
    }

    impl Polled {
        fn of(&self, source: usize) -> Vec<PollTime> {
            self.times[source].lock().unwrap().clone()
        }

        async fn stop(self) {
            self.stop.send(true).unwrap();
            for task in self.tasks {
                task.await.unwrap();
            }
        }
    }

    fn start() -> DateTime<Utc> {
        use chrono::TimeZone;
        Utc.with_ymd_and_hms(2026, 11, 26, 10, 7, 0).unwrap()
    }

    /// The wall clock jumps 3 days 3 h 20 min forward while three hourly sources wait: none
    /// polls at once, each polls once when its wait ends (off its cron slot, by the jumped
    /// clock), then on its slots again; no two polls of a source come close together.
    #[tokio::test(start_paused = true)]
    async fn a_forward_jump_makes_each_source_poll_once_then_follow_its_schedule() {
        use chrono::Timelike;
        let clock = Arc::new(crate::clock::SteppedClock::new(start()));
        let polled = start_polling(&clock, 3, None);
        tokio::time::sleep(Duration::from_secs(2 * 3600 + 30 * 60)).await;
        let jumped = tokio::time::Instant::now();
        clock.step(chrono::Duration::days(3) + chrono::Duration::minutes(200));
        tokio::time::sleep(Duration::from_secs(6 * 3600)).await;
        for source in 0..3 {
            let polls = polled.of(source);
            for pair in polls.windows(2) {
                assert!(
                    pair[1].0 - pair[0].0 >= Duration::from_secs(30 * 60),
                    "source {source}: polls {:?} apart: {polls:?}",
                    pair[1].0 - pair[0].0
                );
            }
            let after: Vec<DateTime<Utc>> = polls
                .iter()
                .filter(|(mono, _)| *mono > jumped)
                .map(|(_, wall)| *wall)
                .collect();
            assert!(
                after.len() >= 6,
                "source {source}: {} polls in 6 h after the jump",
                after.len()
            );
            let off_slot = after.iter().filter(|t| t.minute() != 0).count();
            assert_eq!(off_slot, 1, "source {source}: {after:?}");
            assert!(after[0] > start() + chrono::Duration::days(3));
        }
        polled.stop().await;
    }

    /// The wall clock is set back a day in the middle of each source's second poll (after it
    /// computed its next poll by the old time), and once more while they wait: every source
    /// goes on polling every hour, with the times of the new clock, instead of waiting days
    /// for the clock to catch up.
    #[tokio::test(start_paused = true)]
    async fn a_backward_jump_does_not_stop_polling() {
        let clock = Arc::new(crate::clock::SteppedClock::new(start()));
        let polled = start_polling(&clock, 2, Some((2, -chrono::Duration::days(1))));
        tokio::time::sleep(Duration::from_secs(3 * 3600 + 20 * 60)).await;
        clock.step(-chrono::Duration::days(1));
        tokio::time::sleep(Duration::from_secs(6 * 3600)).await;
        for source in 0..2 {
            let polls = polled.of(source);
            assert!(polls.len() >= 9, "source {source}: {polls:?}");
            for pair in polls.windows(2) {
                assert!(
                    pair[1].0 - pair[0].0 <= Duration::from_secs(61 * 60),
                    "source {source}: {:?} without a poll: {polls:?}",
                    pair[1].0 - pair[0].0
                );
            }
            let last = polls.last().unwrap().1;
            assert!(
                last < start() - chrono::Duration::days(1) + chrono::Duration::hours(10),
                "the last poll saw {last}, the new clock's time"
            );
        }
        polled.stop().await;
    }

    #[test]
    fn a_due_time_is_read_on_the_clock_that_gives_the_shorter_wait() {
        use chrono::TimeZone;
        let t = Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap();
        let m = tokio::time::Instant::now();
        let due = t + chrono::Duration::minutes(15);
        let min = Duration::from_secs(60);
        // No jump: 15 min, less the minute that passed.
        assert_eq!(
            wait_until(due, (t, m), (t + chrono::Duration::minutes(1), m + min)),
            Duration::from_secs(14 * 60)
        );
        // The clock went back a day: still 14 min, not a day and 14 min.
        assert_eq!(
            wait_until(due, (t, m), (t - chrono::Duration::days(1), m + min)),
            Duration::from_secs(14 * 60)
        );
        // It went forward a day: due at once.
        assert_eq!(
            wait_until(due, (t, m), (t + chrono::Duration::days(1), m + min)),
            Duration::ZERO
        );
    }
}
