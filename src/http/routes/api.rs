//! The machine-readable lists: `/api/sources` (each source's state, its URL as
//! `show_source_urls` says), `/api/items` (a source's newest items) and `/opml`.

use super::*;

/// Every configured source with its stored state, as JSON: what `feedmux sources` shows when
/// the daemon holds the store. URLs are in their public form (`SourceState::public`).
pub(super) async fn api_sources(State(state): State<AppState>) -> Response {
    let config = state.config();
    let states = read_store(&state.store, |store| store.source_states()).await;
    let mut states = states.and_then(Result::ok).unwrap_or_default();
    let list: Vec<serde_json::Value> = config
        .sources
        .iter()
        .map(|s| {
            let source_state = states
                .remove(&s.name)
                .unwrap_or_default()
                .public(s.url.as_str(), config.server.source_urls);
            serde_json::json!({ "name": s.name, "state": source_state })
        })
        .collect();
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::Value::Array(list).to_string(),
    )
        .into_response()
}

/// Most items `/api/items` gives at once.
pub const MAX_API_ITEMS: usize = 10_000;

#[derive(serde::Deserialize)]
pub(super) struct ItemsQuery {
    source: String,
    limit: Option<usize>,
}

/// The newest stored items of one configured source, as JSON (what `feedmux preview` reads
/// when the daemon holds the store). `limit` defaults to 200, at most [`MAX_API_ITEMS`].
pub(super) async fn api_items(
    State(state): State<AppState>,
    UrlQuery(query): UrlQuery<ItemsQuery>,
) -> Response {
    if state.config().source(&query.source).is_none() {
        return (StatusCode::NOT_FOUND, "no such source\n").into_response();
    }
    let limit = query.limit.unwrap_or(200).min(MAX_API_ITEMS);
    let items = read_store(&state.store, move |store| {
        store.source_items(&query.source, limit)
    });
    match items.await {
        Some(Ok(items)) => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string(&items).unwrap_or_else(|_| "[]".to_owned()),
        )
            .into_response(),
        Some(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the store: {e}\n"),
        )
            .into_response(),
        None => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "reading the store failed\n",
        )
            .into_response(),
    }
}

pub(super) async fn opml(State(state): State<AppState>) -> Response {
    let config = state.config();
    let stored = read_store(&state.store, |store| store.source_states()).await;
    let mut stored = stored.and_then(Result::ok).unwrap_or_default();
    let states: Vec<(String, crate::model::SourceState)> = config
        .sources
        .iter()
        .map(|s| (s.name.clone(), stored.remove(&s.name).unwrap_or_default()))
        .collect();
    (
        [(header::CONTENT_TYPE, "text/x-opml; charset=utf-8")],
        opml::write(
            &config,
            &states,
            opml::FeedUrls::Public(config.server.source_urls),
        ),
    )
        .into_response()
}
