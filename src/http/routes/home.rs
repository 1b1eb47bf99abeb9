//! The status page at `/`, a page of sources at a time (`?page=N`), built off the async
//! threads by `status_page` and compressed like the feeds.

use super::*;

/// A page of the status page (`/?page=N`, from 1), compressed as the request prefers.
pub(super) async fn status_page(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let number = match page_number(query.as_deref().unwrap_or_default()) {
        Ok(n) => n,
        Err(message) => return (StatusCode::BAD_REQUEST, message).into_response(),
    };
    let config = state.config();
    let failure = state
        .reload_failure
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let (store, publisher) = (state.store.clone(), state.publisher.clone());
    let store_fault = state.metrics.store_fault();
    let clock_jump = state.clock.last_jump(crate::daemon::CLOCK_JUMP_SHOWN);
    let clock_skew = state.clock.skew();
    let now = state.clock.clock().now();
    let coding = preferred_coding(&headers);
    let page = tokio::task::spawn_blocking(move || {
        let faults = status_page::Faults {
            reload_failure: failure.as_ref(),
            store_fault: store_fault.as_ref(),
            clock_jump: clock_jump.as_ref(),
            clock_skew: clock_skew.as_ref(),
        };
        let html = status_page::page(&config, &store, &publisher, faults, now, number)?;
        let doc = Rendered::for_one_request(html.into_bytes());
        let (body, coding) = doc.encoded(coding);
        Ok::<_, crate::store::StoreError>((body.clone(), coding))
    })
    .await;
    match page {
        Ok(Ok((body, coding))) => {
            let mut response_headers = HeaderMap::new();
            insert(
                &mut response_headers,
                header::CONTENT_TYPE,
                "text/html; charset=utf-8",
            );
            insert(&mut response_headers, header::CACHE_CONTROL, "no-cache");
            insert(&mut response_headers, header::VARY, "Accept-Encoding");
            if let Some(token) = coding.token() {
                insert(&mut response_headers, header::CONTENT_ENCODING, token);
            }
            (response_headers, body).into_response()
        }
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the store: {e}\n"),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("status page failed: {e}\n"),
        )
            .into_response(),
    }
}

/// The status page's `page` parameter: a whole number from 1, 1 when absent. Other
/// parameters are ignored.
fn page_number(query: &str) -> Result<usize, String> {
    let mut number = 1;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if key == "page" {
            number = match value.parse::<usize>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(format!(
                        "page must be a whole number from 1 (got {value:?})\n"
                    ))
                }
            };
        }
    }
    Ok(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_page_number_is_a_whole_number_from_one() {
        assert_eq!(page_number(""), Ok(1));
        assert_eq!(page_number("page=3&x=y"), Ok(3));
        for bad in ["page=0", "page=x", "page=-1", "page=", "page=1.5"] {
            let message = page_number(bad).unwrap_err();
            assert!(
                message.starts_with("page must be a whole number"),
                "{bad}: {message}"
            );
        }
    }
}
