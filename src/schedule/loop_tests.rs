//! The per-source loop's tests, on tokio's paused clock: polls when due and stops when told,
//! retries, disabled sources, and the wall clock jumping forward and back.

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

/// A source's loop holds its poll's state only while it polls: a daemon keeps one loop per
/// source, waiting most of the time, and a poll's future is kilobytes.
#[test]
fn a_waiting_loop_does_not_carry_the_size_of_its_poll() {
    let (_stop_tx, stop) = watch::channel(false);
    let looped = run_source(
        hourly(),
        crate::clock::system(),
        Some(Utc::now()),
        Arc::new(Semaphore::new(1)),
        stop,
        || async {
            let held = [7u8; 16 * 1024];
            tokio::task::yield_now().await;
            std::hint::black_box(&held);
            None::<DateTime<Utc>>
        },
    );
    let size = std::mem::size_of_val(&looped);
    assert!(size < 2048, "the loop's future is {size} bytes");
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
