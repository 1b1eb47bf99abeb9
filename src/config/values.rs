//! The kinds of values the file holds, parsed one way everywhere: cron schedules, durations,
//! sizes, positive numbers and names.

use super::*;

pub(super) fn default_schedule() -> Schedule {
    Schedule {
        text: DEFAULT_SCHEDULE.to_owned(),
        cron: std::sync::Arc::new(
            cron::Schedule::from_str(DEFAULT_SCHEDULE).expect("the default schedule is valid"),
        ),
    }
}

pub(super) fn parse_schedule(
    text: &Spanned<String>,
    report: &mut Reporter<'_>,
) -> Option<Schedule> {
    let trimmed = text.get_ref().trim();
    match cron::Schedule::from_str(trimmed) {
        Ok(cron) => Some(Schedule {
            text: trimmed.to_owned(),
            cron: std::sync::Arc::new(cron),
        }),
        Err(e) => {
            report.at(
                text.span(),
                format!(
                    "invalid cron schedule {trimmed:?}: {e} (expected 6 or 7 fields, seconds first, e.g. \"0 */15 * * * *\")"
                ),
            );
            None
        }
    }
}

/// A count that must be at least 1 when given.
pub(super) fn positive<T: Copy + PartialEq + From<u8>>(
    raw: Option<Spanned<T>>,
    key: &str,
    report: &mut Reporter<'_>,
) -> Option<T> {
    let value = raw?;
    if *value.get_ref() == T::from(0) {
        report.at(
            value.span(),
            format!("{key} must be at least 1 (leave it out to keep everything)"),
        );
        return None;
    }
    Some(*value.get_ref())
}

pub(super) fn parse_duration_field(
    raw: Option<Spanned<String>>,
    default: Duration,
    allow_zero: bool,
    report: &mut Reporter<'_>,
) -> Duration {
    match raw {
        Some(text) => match humantime::parse_duration(text.get_ref().trim()) {
            Ok(d) if allow_zero || !d.is_zero() => d,
            _ => {
                report.at(
                    text.span(),
                    format!(
                        "invalid duration {:?}: expected e.g. \"30s\", \"5m\" or \"1h\"",
                        text.get_ref()
                    ),
                );
                default
            }
        },
        None => default,
    }
}

/// A size field (`"10MiB"`), `default` when absent; an invalid or zero size is reported.
pub(super) fn parse_size_field(
    raw: Option<Spanned<String>>,
    default: u64,
    report: &mut Reporter<'_>,
) -> u64 {
    let Some(text) = raw else {
        return default;
    };
    match parse_size(text.get_ref()) {
        Some(n) if n > 0 => n,
        _ => {
            report.at(
                text.span(),
                format!(
                    "invalid size {:?}: expected e.g. \"10MiB\", \"512KiB\" or a number of bytes",
                    text.get_ref()
                ),
            );
            default
        }
    }
}

/// Parses "10MiB", "512 KiB", "2MB", "1048576" into bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(factor)
}

/// Whether `name` is a valid source, feed or tag name: `[a-z0-9_-]+`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

pub(super) fn check_name(kind: &str, name: &Spanned<String>, report: &mut Reporter<'_>) {
    if !valid_name(name.get_ref()) {
        report.at(
            name.span(),
            format!(
                "invalid {kind} name {:?}: use lowercase letters, digits, '-' and '_'",
                name.get_ref()
            ),
        );
    }
}
