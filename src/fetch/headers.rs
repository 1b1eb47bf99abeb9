//! What a response's headers say: their text, the server's time (`Date` plus `Age`), how long
//! it may be cached (`Cache-Control: max-age`) and when to ask again (`Retry-After`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{self, HeaderMap, HeaderValue};

pub(super) fn header_value(text: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(text).ok()
}

pub(super) fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// `Date` plus `Age` (seconds a cache held the answer): the server's time when it answered.
pub(super) fn server_time(headers: &HeaderMap) -> Option<DateTime<Utc>> {
    let date = http_date(headers, header::DATE)?;
    let age = headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0);
    date.checked_add_signed(chrono::Duration::seconds(i64::from(age)))
}

pub(super) fn http_date(headers: &HeaderMap, name: header::HeaderName) -> Option<DateTime<Utc>> {
    let text = header_text(headers, name)?;
    httpdate::parse_http_date(&text)
        .ok()
        .map(DateTime::<Utc>::from)
}

/// `Cache-Control: max-age=N` (ignored with `no-cache` or `no-store`).
pub(super) fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let text = header_text(headers, header::CACHE_CONTROL)?.to_ascii_lowercase();
    let mut age = None;
    for directive in text.split(',').map(str::trim) {
        if directive == "no-cache" || directive == "no-store" {
            return None;
        }
        if let Some(n) = directive.strip_prefix("max-age=") {
            age = n
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    age
}

/// `Retry-After`, in seconds or as an HTTP date, as a time after `now`.
pub fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let text = header_text(headers, header::RETRY_AFTER)?;
    if let Ok(seconds) = text.parse::<u64>() {
        let seconds = i64::try_from(seconds).ok()?.min(365 * 86_400);
        return Some(now + chrono::Duration::seconds(seconds));
    }
    httpdate::parse_http_date(&text)
        .ok()
        .map(DateTime::<Utc>::from)
        .filter(|t| *t > now)
}

#[cfg(test)]
mod tests;
