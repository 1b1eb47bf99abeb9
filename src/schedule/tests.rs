//! schedule's tests: when a source is due (never polled, a missed slot), hints and backoff,
//! Retry-After, jitter.

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
