//! The headers' tests: what a response's headers say about time (Date and Age, Retry-After,
//! max-age).

use super::*;

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_static(v));
    }
    h
}

#[test]
fn the_servers_time_is_its_date_plus_a_caches_age() {
    let date = DateTime::parse_from_rfc3339("2026-11-26T12:00:00Z")
        .unwrap()
        .to_utc();
    let sent = [("date", "Thu, 26 Nov 2026 12:00:00 GMT")];
    assert_eq!(server_time(&headers(&sent)), Some(date));
    let cached = [("date", "Thu, 26 Nov 2026 12:00:00 GMT"), ("age", "300")];
    assert_eq!(
        server_time(&headers(&cached)),
        Some(date + chrono::Duration::minutes(5))
    );
    let odd_age = [("date", "Thu, 26 Nov 2026 12:00:00 GMT"), ("age", "soon")];
    assert_eq!(server_time(&headers(&odd_age)), Some(date));
    assert_eq!(server_time(&headers(&[("date", "yesterday")])), None);
    assert_eq!(server_time(&headers(&[])), None);
}

#[test]
fn retry_after_in_seconds_and_as_a_date() {
    let now = DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
        .unwrap()
        .to_utc();
    assert_eq!(
        retry_after(&headers(&[("retry-after", "120")]), now),
        Some(now + chrono::Duration::seconds(120))
    );
    assert_eq!(
        retry_after(
            &headers(&[("retry-after", "Thu, 26 Nov 2026 12:00:00 GMT")]),
            now
        ),
        Some(now + chrono::Duration::hours(2))
    );
    assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
}

#[test]
fn max_age_is_read_unless_caching_is_refused() {
    assert_eq!(
        max_age(&headers(&[("cache-control", "public, max-age=3600")])),
        Some(Duration::from_secs(3600))
    );
    assert_eq!(
        max_age(&headers(&[("cache-control", "no-cache, max-age=60")])),
        None
    );
}
