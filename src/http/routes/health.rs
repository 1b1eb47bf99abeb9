//! `/readyz` (ready, or why not: failing sources, the clock) and `/metrics` (Prometheus).

use super::*;

/// Ready once the store is open and every source has been scheduled; not while the last
/// write to the store failed.
pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    if !state.ready.load(Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    } else if state.metrics.store_failing.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the last write to the store failed\n",
        )
            .into_response()
    } else {
        let mut text = ready_text(&state.clock);
        let config = state.config();
        let failing = read_store(&state.store, move |store| {
            failing_sources_text(&config, store)
        });
        text.push_str(&failing.await.unwrap_or_default());
        (StatusCode::OK, text).into_response()
    }
}

/// At most this many failing sources are named in `/readyz`.
const READYZ_FAILING_SHOWN: usize = 10;

/// A `warning:` line for each failing source (at most [`READYZ_FAILING_SHOWN`], then a
/// count): the others go on, so `/readyz` still answers 200.
fn failing_sources_text(config: &Config, store: &Store) -> String {
    let mut states = store.source_states().unwrap_or_default();
    let failing: Vec<(String, SourceState)> = config
        .sources
        .iter()
        .filter(|s| s.enabled)
        .filter_map(|s| Some((s.name.clone(), states.remove(&s.name)?)))
        .filter(|(_, st)| st.status == SourceStatus::Failing)
        .collect();
    let mut text = String::new();
    for (name, st) in failing.iter().take(READYZ_FAILING_SHOWN) {
        text.push_str(&format!(
            "warning: source {name} failing{}: {}\n",
            st.failing_since
                .map(|t| format!(" since {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
                .unwrap_or_default(),
            config
                .server
                .source_urls
                .text(st.last_error.as_deref().unwrap_or("unknown error"))
        ));
    }
    if failing.len() > READYZ_FAILING_SHOWN {
        text.push_str(&format!(
            "warning: and {} more sources failing (see /api/sources)\n",
            failing.len() - READYZ_FAILING_SHOWN
        ));
    }
    text
}

/// `ready`, and what is wrong with the clock if anything is: a fault worth knowing about
/// that does not stop feedmux from serving, so `/readyz` still answers 200.
fn ready_text(clock: &ClockWatch) -> String {
    let mut text = String::from("ready\n");
    if let Some(jump) = clock.last_jump(crate::daemon::CLOCK_JUMP_SHOWN) {
        text.push_str(&format!(
            "warning: the system clock jumped {} at {}\n",
            jump.describe(),
            jump.at.format("%Y-%m-%d %H:%M:%S UTC")
        ));
    }
    if let Some(skew) = clock.skew().filter(|s| s.is_wrong()) {
        text.push_str(&format!(
            "warning: the system clock is {}\n",
            skew.describe()
        ));
    }
    text
}

pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    let sizes = read_store(&state.store, |store| {
        (store.item_count(), store.size_on_disk())
    });
    let (items, bytes) = sizes.await.unwrap_or_default();
    let mut body = state.metrics.render(items as u64, bytes);
    if let Some(skew) = state.clock.skew() {
        body.push_str(&format!(
            "# HELP feedmux_clock_skew_seconds The system clock minus the feed servers' clocks (median over the servers last heard from; HTTP Date plus Age).\n# TYPE feedmux_clock_skew_seconds gauge\nfeedmux_clock_skew_seconds {}\n",
            skew.ahead_by.num_seconds()
        ));
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
