//! Answering with an already rendered document: its ETag and Last-Modified, the coding the
//! request prefers, and 304 when the request's validators match.

use super::*;

/// Answers with `doc` in the coding the request prefers, or 304 when the request's validators
/// match; the bytes are already rendered, and compressed if they are to be.
pub(super) fn serve_document(
    state: &AppState,
    headers: &HeaderMap,
    doc: &Rendered,
    content_type: &str,
    cache_control: &str,
) -> Response {
    let (body, coding) = doc.bytes_of(preferred_coding(headers));
    let mut response_headers = HeaderMap::new();
    insert(&mut response_headers, header::ETAG, doc.etag_of(coding));
    if let Some(t) = served_last_modified(doc) {
        let http_date = httpdate::fmt_http_date(t.into());
        insert(&mut response_headers, header::LAST_MODIFIED, &http_date);
    }
    insert(&mut response_headers, header::CACHE_CONTROL, cache_control);
    insert(
        &mut response_headers,
        header::VARY,
        "Accept-Encoding, Accept",
    );
    if not_modified(headers, doc) {
        Metrics::add(&state.metrics.feed_not_modified, 1);
        return (StatusCode::NOT_MODIFIED, response_headers).into_response();
    }
    insert(&mut response_headers, header::CONTENT_TYPE, content_type);
    if let Some(token) = coding.token() {
        insert(&mut response_headers, header::CONTENT_ENCODING, token);
    }
    (StatusCode::OK, response_headers, body.clone()).into_response()
}

pub(super) fn insert(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// The Last-Modified a response carries: the document's, but never after now, so never
/// after the response's `Date` (a change made while the clock was behind is dated a second
/// after the one before it, which may be ahead of a clock set back).
fn served_last_modified(doc: &Rendered) -> Option<DateTime<Utc>> {
    doc.last_modified.map(|t| t.min(Utc::now()))
}

/// RFC 9110: `If-None-Match` decides when present; otherwise `If-Modified-Since`.
pub(super) fn not_modified(headers: &HeaderMap, doc: &Rendered) -> bool {
    if let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        return inm.split(',').any(|t| doc.matches(t));
    }
    if let (Some(ims), Some(last_modified)) = (
        headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok()),
        served_last_modified(doc),
    ) {
        let ims: DateTime<Utc> = ims.into();
        return last_modified.timestamp() <= ims.timestamp();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A feed changed while the clock was set back is dated a second after its previous
    /// Last-Modified, ahead of the clock: it is served as now, never after the Date.
    #[test]
    fn a_last_modified_ahead_of_the_clock_is_served_as_now() {
        let mut doc = Rendered::new(b"feed".to_vec(), publish::Effort::OnDemand);
        let ahead = Utc::now() + chrono::Duration::hours(1);
        doc.last_modified = Some(ahead);
        let served = served_last_modified(&doc).unwrap();
        assert!(served <= Utc::now(), "{served} is ahead of now");
        let past = Utc::now() - chrono::Duration::hours(1);
        doc.last_modified = Some(past);
        assert_eq!(served_last_modified(&doc), Some(past));
    }
}
