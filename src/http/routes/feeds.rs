//! The output feeds (`/feeds/{name}.{ext}`): served from the publisher's cache, or a search
//! or page (`?q=`, `?limit=`, `?before=`) rendered by `Publisher::view` on a blocking thread,
//! with 503 and `Retry-After` when no slot frees up in time. A feed's compressed forms are
//! made when a request first takes them, off the async threads.

use super::*;

/// An output feed (`/feeds/{name}.{ext}`): the request and its response's status counted.
pub(super) async fn feed(
    State(state): State<AppState>,
    Path(file): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let metrics = state.metrics.clone();
    Metrics::add(&metrics.feed_requests, 1);
    let response = feed_response(state, file, query, headers).await;
    metrics.feed_response(response.status().as_u16());
    response
}

/// Makes `format` of the feed in `coding` on a blocking thread: once per rendering, when the
/// first request that takes that coding comes (a poll renders, and compresses nothing).
async fn compress(rendered: &Arc<publish::RenderedFeed>, format: Format, coding: Coding) {
    let rendered = rendered.clone();
    let compressed = tokio::task::spawn_blocking(move || {
        if let Some(doc) = rendered.get(format) {
            doc.compress_to(coding);
        }
    });
    // Failed (it panicked): the document is served uncompressed.
    let _ = compressed.await;
}

async fn feed_response(
    state: AppState,
    file: String,
    query: Option<String>,
    headers: HeaderMap,
) -> Response {
    let Some((name, ext)) = file.rsplit_once('.') else {
        return not_found();
    };
    let (Some(mut format), Some(rendered)) =
        (Format::from_extension(ext), state.publisher.get(name))
    else {
        return not_found();
    };
    // A browser opening the Atom or RSS feed gets the readable page; readers get the feed.
    if matches!(format, Format::Atom | Format::Rss) && prefers_html(&headers) {
        format = Format::Html;
    }
    let view = match view_of(query.as_deref().unwrap_or_default()) {
        Ok(view) => view,
        Err(message) => return (StatusCode::BAD_REQUEST, message).into_response(),
    };
    let config = state.config();
    let next_poll = config
        .feed(name)
        .and_then(|f| state.publisher.next_poll_of(&f.sources));
    let cache_control = format!(
        "public, max-age={}",
        publish::max_age(next_poll, state.clock.clock().now())
    );
    if view.is_whole_feed() {
        let Some(doc) = rendered.get(format) else {
            return not_found();
        };
        let coding = preferred_coding(&headers);
        if !doc.is_made(coding) && !not_modified(&headers, doc) {
            compress(&rendered, format, coding).await;
        }
        return serve_document(&state, &headers, doc, format.content_type(), &cache_control);
    }
    // A search or a page: from the cache of them, else rendered in one of a few slots (the
    // store is read off the async threads).
    let publisher = state.publisher.clone();
    if let Some(doc) = publisher.cached_view(name, &view, format) {
        Metrics::add(&state.metrics.feed_views_hit, 1);
        return serve_document(
            &state,
            &headers,
            &doc,
            format.content_type(),
            &cache_control,
        );
    }
    Metrics::add(&state.metrics.feed_views_miss, 1);
    let Ok(slot) = publisher.search_slots().take().await else {
        Metrics::add(&state.metrics.searches_refused, 1);
        return too_busy();
    };
    let (store, feed_name) = (state.store.clone(), name.to_owned());
    let rendered = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        publisher.view(&store, &config, &feed_name, &view, format)
    })
    .await;
    match rendered {
        Ok(Ok(doc)) => serve_document(
            &state,
            &headers,
            &doc,
            format.content_type(),
            &cache_control,
        ),
        Ok(Err(PublishError::UnknownFeed(_))) => not_found(),
        Ok(Err(e)) => {
            tracing::error!(feed = name, error = %e, "cannot render a page of a feed");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot read the store\n").into_response()
        }
        Err(e) => {
            tracing::error!(feed = name, error = %e, "rendering task failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "rendering failed\n").into_response()
        }
    }
}

/// Seconds a refused search is told to wait (`Retry-After`).
const SEARCH_RETRY_AFTER: &str = "60";

/// 503 for a search or page that found no slot to be rendered in.
fn too_busy() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, SEARCH_RETRY_AFTER)],
        "too many searches at once: try again in a minute\n",
    )
        .into_response()
}

/// The view a feed URL's query string asks for: `q` (a search), `limit` (1 or more, capped
/// at [`publish::MAX_QUERY_LIMIT`]) and `before` (a page cursor). Other parameters are
/// ignored (readers add cache-busting ones); a bad value is an error for the reader.
fn view_of(query: &str) -> Result<View, String> {
    let mut view = View::default();
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "q" => view.query = Query::parse(&value).map(|q| (value.trim().to_owned(), q)),
            "limit" => match value.parse::<usize>() {
                Ok(n) if n >= 1 => view.limit = Some(n.min(publish::MAX_QUERY_LIMIT)),
                _ => {
                    return Err(format!(
                        "limit must be a whole number from 1 (got {value:?})\n"
                    ))
                }
            },
            "before" => match Cursor::parse(&value) {
                Some(c) => view.before = Some(c),
                None => return Err(format!("before is not a page cursor (got {value:?})\n")),
            },
            _ => {}
        }
    }
    Ok(view)
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such feed\n").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_search_is_told_to_come_back_in_a_minute() {
        let response = too_busy();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "60");
    }
}
