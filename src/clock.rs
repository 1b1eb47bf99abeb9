//! The wall clock, and noticing when it jumps.
//!
//! Everything the daemon dates (polls, items first seen, next polls, retention cutoffs, the
//! status page) reads the time from one [`Clock`] held by the daemon, so tests can step it
//! ([`SteppedClock`]) without touching the machine's clock. Waiting is never done on the wall
//! clock: the scheduler and every loop sleep on tokio's monotonic clock.
//!
//! A jump (a VM resumed after a pause, an NTP step, someone running `date -s`) is the wall
//! clock moving more or less than the monotonic clock between two looks at both:
//! [`ClockWatch::check`] answers it, signed (forward is positive), once it exceeds
//! [`JUMP_THRESHOLD`]. What the daemon does about one is in `daemon` (log, metrics, status
//! page, a pause of age-based retention) and docs/reliability.md, "Faults".
//!
//! A jump while the daemon runs is one thing; a clock that was already wrong when it started
//! is another, and only the outside world can tell. Every feed server dates its answers
//! (HTTP `Date`, plus `Age` when a cache answered): [`ClockWatch::compare_with_server`] keeps
//! the last difference to each server, and [`ClockWatch::skew`] answers the median, which
//! one server with a wrong clock cannot move. A clock more than [`SKEW_THRESHOLD`] ahead of
//! the servers pauses pruning by age, as a forward jump does.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// Where the daemon reads the time of day.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock (`Utc::now`).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The system clock as a shared [`Clock`].
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// A clock for tests: it runs with tokio's monotonic clock (so with paused time too) from
/// the time it was made with, and [`step`](SteppedClock::step) makes it jump.
#[derive(Debug)]
pub struct SteppedClock {
    started: Instant,
    start: DateTime<Utc>,
    offset: Mutex<chrono::Duration>,
}

impl SteppedClock {
    /// A clock reading `start` now.
    pub fn new(start: DateTime<Utc>) -> SteppedClock {
        SteppedClock {
            started: Instant::now(),
            start,
            offset: Mutex::new(chrono::Duration::zero()),
        }
    }

    /// Makes the clock jump by `by` (negative: backward).
    pub fn step(&self, by: chrono::Duration) {
        let mut offset = self.offset.lock().unwrap_or_else(|p| p.into_inner());
        *offset += by;
    }
}

impl Clock for SteppedClock {
    fn now(&self) -> DateTime<Utc> {
        let ran = chrono::Duration::from_std(self.started.elapsed()).unwrap_or_default();
        let offset = *self.offset.lock().unwrap_or_else(|p| p.into_inner());
        self.start + ran + offset
    }
}

/// A difference between wall-clock and monotonic time larger than this is a jump. NTP
/// slewing changes the wall clock by at most 0.5 ms a second, far below it.
pub const JUMP_THRESHOLD: Duration = Duration::from_secs(60);

/// A jump of the wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockJump {
    /// The wall-clock time when it was noticed (after the jump).
    pub at: DateTime<Utc>,
    /// How far the wall clock moved beyond (positive) or short of (negative) the time that
    /// actually elapsed.
    pub by: chrono::Duration,
    /// When it was noticed, on the monotonic clock.
    pub noticed: Instant,
}

impl ClockJump {
    /// The signed amount in whole seconds, rounded.
    pub fn seconds(&self) -> i64 {
        let ms = self.by.num_milliseconds();
        (ms + 500 * ms.signum()) / 1000
    }

    pub fn forward(&self) -> bool {
        self.by > chrono::Duration::zero()
    }

    /// "forward by 3 h 0 min", "backward by 30 days 2 h".
    pub fn describe(&self) -> String {
        format!(
            "{} by {}",
            if self.forward() {
                "forward"
            } else {
                "backward"
            },
            human(self.by.abs())
        )
    }
}

/// A positive duration in words a reader takes in at a glance: "75 s", "3 h 0 min",
/// "30 days 2 h".
pub fn human(d: chrono::Duration) -> String {
    // To the nearest second: a jump measured a few microseconds short of 30 days is 30 days.
    let s = (d.num_milliseconds().saturating_add(500) / 1000).max(0);
    match s {
        0..120 => format!("{s} s"),
        120..3600 => format!("{} min", s / 60),
        3600..172_800 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} days {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The jump between two looks at both clocks, if the wall clock moved more than `threshold`
/// beyond or short of the monotonic one: `(wall, monotonic)` before and after.
pub fn jump_between(
    before: (DateTime<Utc>, Instant),
    after: (DateTime<Utc>, Instant),
    threshold: Duration,
) -> Option<chrono::Duration> {
    let wall = after.0 - before.0;
    let monotonic = chrono::Duration::from_std(after.1.saturating_duration_since(before.1))
        .unwrap_or(chrono::Duration::MAX);
    let by = wall.checked_sub(&monotonic)?;
    let limit = chrono::Duration::from_std(threshold).unwrap_or(chrono::Duration::MAX);
    (by.abs() > limit).then_some(by)
}

/// How far the clock may be from the feed servers' before it is called wrong: HTTP dates are
/// whole seconds, a cache's `Age` is approximate, and minutes off harm nothing here.
pub const SKEW_THRESHOLD: Duration = Duration::from_secs(10 * 60);

/// Servers whose last answer is kept for comparing clocks (the most recent ones).
const SKEW_SERVERS: usize = 32;

/// How the clock compares with the feed servers' clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSkew {
    /// This clock minus the servers' (the median over servers): positive when it is ahead.
    pub ahead_by: chrono::Duration,
    /// How many servers the median is over.
    pub servers: usize,
}

impl ClockSkew {
    /// Whether it is off by more than [`SKEW_THRESHOLD`].
    pub fn is_wrong(&self) -> bool {
        self.ahead_by.abs() > chrono::Duration::from_std(SKEW_THRESHOLD).unwrap_or_default()
    }

    /// Whether it is ahead by more than [`SKEW_THRESHOLD`]: items would look older than they
    /// are.
    pub fn is_ahead(&self) -> bool {
        self.is_wrong() && self.ahead_by > chrono::Duration::zero()
    }

    /// "3 h 0 min ahead of the feed servers' clocks (median of 4)".
    pub fn describe(&self) -> String {
        format!(
            "{} {} the feed servers' clocks (median of {})",
            human(self.ahead_by.abs()),
            if self.ahead_by > chrono::Duration::zero() {
                "ahead of"
            } else {
                "behind"
            },
            self.servers
        )
    }
}

/// Compares the wall clock with the monotonic one at every [`check`](ClockWatch::check), and
/// keeps the last jump it saw; and compares it with the feed servers' clocks.
#[derive(Debug)]
pub struct ClockWatch {
    clock: Arc<dyn Clock>,
    state: Mutex<WatchState>,
}

#[derive(Debug)]
struct WatchState {
    last: (DateTime<Utc>, Instant),
    jumps: Vec<ClockJump>,
    /// Per server (`host:port`), the last `our time - their time`, oldest first.
    servers: std::collections::VecDeque<(String, chrono::Duration)>,
}

impl ClockWatch {
    pub fn new(clock: Arc<dyn Clock>) -> ClockWatch {
        let last = (clock.now(), Instant::now());
        ClockWatch {
            clock,
            state: Mutex::new(WatchState {
                last,
                jumps: Vec::new(),
                servers: std::collections::VecDeque::new(),
            }),
        }
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Looks at both clocks: answers the wall-clock time read, and the jump since the last
    /// look if there was one (each jump is answered once, to whoever looks first).
    pub fn check(&self) -> (DateTime<Utc>, Option<ClockJump>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = (self.clock.now(), Instant::now());
        let jump = jump_between(state.last, now, JUMP_THRESHOLD).map(|by| ClockJump {
            at: now.0,
            by,
            noticed: now.1,
        });
        state.last = now;
        if let Some(jump) = jump {
            // What the servers said was against the clock before the jump.
            state.servers.clear();
            state.jumps.push(jump);
            // Only the recent ones matter; a clock that keeps jumping must not grow this.
            if state.jumps.len() > 16 {
                state.jumps.remove(0);
            }
        }
        (now.0, jump)
    }

    /// Records that `server` (`host:port`) dated its answer `theirs` when this clock read
    /// `ours`. Answers how the clock compares with the servers now.
    pub fn compare_with_server(
        &self,
        server: &str,
        theirs: DateTime<Utc>,
        ours: DateTime<Utc>,
    ) -> Option<ClockSkew> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let ahead_by = ours.signed_duration_since(theirs);
        // A server heard from again moves to the back with its new answer.
        let known = state.servers.iter().position(|(name, _)| name == server);
        let name = match known.and_then(|i| state.servers.remove(i)) {
            Some((name, _)) => name,
            None => server.to_owned(),
        };
        state.servers.push_back((name, ahead_by));
        if state.servers.len() > SKEW_SERVERS {
            state.servers.pop_front();
        }
        median_skew(&state.servers)
    }

    /// How the clock compares with the feed servers heard from; `None` before the first.
    pub fn skew(&self) -> Option<ClockSkew> {
        median_skew(&self.state.lock().unwrap_or_else(|p| p.into_inner()).servers)
    }

    /// The last jump noticed within `within` (monotonic) of now.
    pub fn last_jump(&self, within: Duration) -> Option<ClockJump> {
        self.last_matching(within, |_| true)
    }

    /// The last forward jump noticed within `within` (monotonic) of now.
    pub fn last_forward_jump(&self, within: Duration) -> Option<ClockJump> {
        self.last_matching(within, ClockJump::forward)
    }

    fn last_matching(
        &self,
        within: Duration,
        pick: impl Fn(&ClockJump) -> bool,
    ) -> Option<ClockJump> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        state
            .jumps
            .iter()
            .rev()
            .find(|j| pick(j) && now.saturating_duration_since(j.noticed) <= within)
            .copied()
    }
}

/// The median of the servers' differences (the lower middle one of an even count).
fn median_skew(
    servers: &std::collections::VecDeque<(String, chrono::Duration)>,
) -> Option<ClockSkew> {
    let mut skews: Vec<chrono::Duration> = servers.iter().map(|(_, d)| *d).collect();
    skews.sort();
    let middle = *skews.get(skews.len().checked_sub(1)? / 2)?;
    Some(ClockSkew {
        ahead_by: middle,
        servers: skews.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// The median over servers decides: one server with a wrong clock does not make this one
    /// wrong, most servers agreeing does; a server answering again replaces its old answer.
    #[test]
    fn the_clock_is_compared_with_the_median_of_the_servers() {
        let watch = ClockWatch::new(Arc::new(SteppedClock::new(start())));
        assert_eq!(watch.skew(), None, "nothing heard yet");
        let ours = start();
        let at = |ahead_mins: i64| ours - chrono::Duration::minutes(ahead_mins);
        let skew = watch
            .compare_with_server("a.example:443", at(0), ours)
            .unwrap();
        assert!(!skew.is_wrong());
        // One server 3 hours behind us: the median of two is the lower one, still right.
        let skew = watch
            .compare_with_server("b.example:443", at(180), ours)
            .unwrap();
        assert_eq!((skew.ahead_by, skew.servers), (chrono::Duration::zero(), 2));
        assert!(!skew.is_wrong());
        // Two of three see us 3 hours ahead: we are.
        let skew = watch
            .compare_with_server("c.example:443", at(181), ours)
            .unwrap();
        assert_eq!(skew.ahead_by, chrono::Duration::minutes(180));
        assert!(skew.is_wrong() && skew.is_ahead());
        assert_eq!(
            skew.describe(),
            "3 h 0 min ahead of the feed servers' clocks (median of 3)"
        );
        // The clock is put right: each server's new answer replaces its old one.
        let ours = ours - chrono::Duration::hours(3);
        watch.compare_with_server("b.example:443", ours, ours);
        let skew =
            watch.compare_with_server("c.example:443", ours + chrono::Duration::seconds(2), ours);
        assert_eq!(skew.map(|s| (s.is_wrong(), s.servers)), Some((false, 3)));
        // Behind by 20 minutes is wrong, but not ahead.
        let watch = ClockWatch::new(Arc::new(SteppedClock::new(start())));
        let skew = watch
            .compare_with_server("a.example:443", ours + chrono::Duration::minutes(20), ours)
            .unwrap();
        assert!(skew.is_wrong() && !skew.is_ahead());
        assert_eq!(
            skew.describe(),
            "20 min behind the feed servers' clocks (median of 1)"
        );
        // A handful of minutes is within what HTTP dates and caches allow.
        let skew = watch
            .compare_with_server("a.example:443", ours + chrono::Duration::minutes(9), ours)
            .unwrap();
        assert!(!skew.is_wrong());
    }

    fn start() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_stepped_clock_runs_with_monotonic_time_and_jumps_when_stepped() {
        let clock = SteppedClock::new(start());
        tokio::time::sleep(Duration::from_secs(90)).await;
        assert_eq!(clock.now(), start() + chrono::Duration::seconds(90));
        clock.step(chrono::Duration::hours(-3));
        assert_eq!(
            clock.now(),
            start() + chrono::Duration::seconds(90) - chrono::Duration::hours(3)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_jump_is_noticed_once_with_its_signed_amount() {
        let clock = Arc::new(SteppedClock::new(start()));
        let watch = ClockWatch::new(clock.clone());
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(watch.check().1, None, "time passing is no jump");

        clock.step(chrono::Duration::hours(3));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (now, jump) = watch.check();
        let jump = jump.expect("a forward jump");
        assert_eq!(jump.by, chrono::Duration::hours(3));
        assert_eq!(jump.at, now);
        assert_eq!(jump.describe(), "forward by 3 h 0 min");
        assert_eq!(jump.seconds(), 3 * 3600);
        assert_eq!(watch.check().1, None, "answered once");

        clock.step(-chrono::Duration::days(30) - chrono::Duration::hours(2));
        let jump = watch.check().1.expect("a backward jump");
        assert_eq!(
            jump.by,
            -chrono::Duration::days(30) - chrono::Duration::hours(2)
        );
        assert_eq!(jump.describe(), "backward by 30 days 2 h");

        // Both are remembered for a while; the forward one is found past the backward one.
        assert_eq!(watch.last_jump(Duration::from_secs(60)), Some(jump));
        assert_eq!(
            watch
                .last_forward_jump(Duration::from_secs(60))
                .map(|j| j.by),
            Some(chrono::Duration::hours(3))
        );
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(watch.last_jump(Duration::from_secs(60)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn small_steps_are_not_jumps() {
        let clock = Arc::new(SteppedClock::new(start()));
        let watch = ClockWatch::new(clock.clone());
        clock.step(chrono::Duration::seconds(59));
        assert_eq!(watch.check().1, None);
        clock.step(chrono::Duration::seconds(-59));
        assert_eq!(watch.check().1, None);
        clock.step(chrono::Duration::seconds(61));
        assert!(watch.check().1.is_some());
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(human(chrono::Duration::seconds(75)), "75 s");
        assert_eq!(human(chrono::Duration::minutes(42)), "42 min");
        assert_eq!(human(chrono::Duration::minutes(185)), "3 h 5 min");
        assert_eq!(human(chrono::Duration::days(30)), "30 days 0 h");
        assert_eq!(
            human(chrono::Duration::days(30) - chrono::Duration::microseconds(5)),
            "30 days 0 h"
        );
    }
}
