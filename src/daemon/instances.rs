//! Other instances sharing the store: the feeds their polls change are rendered here too, as
//! the store reports the changes ([`Ingest::watch_others`](crate::store::Ingest::watch_others)),
//! so that every instance serves the same feeds: what was heard while a render ran is
//! rendered together (and renders of a feed start `publish::RENDER_GAP` apart). Must not
//! poll or write.

use std::collections::BTreeMap;

use super::*;
use crate::store::StoreChange;

/// Starts rendering what other instances change, until the store stops reporting.
pub(super) fn follow_other_instances(shared: &Arc<Shared>) {
    if !shared.pipeline.store.is_shared() {
        return;
    }
    let (heard, mut changes) = mpsc::unbounded_channel();
    shared.pipeline.store.watch_others(Box::new(move |change| {
        let _ = heard.send(change);
    }));
    let shared = shared.clone();
    tokio::spawn(async move {
        while let Some(first) = changes.recv().await {
            // Changes heard meanwhile are rendered together: each feed once.
            let mut sources: BTreeMap<String, bool> = BTreeMap::new();
            let mut everything = false;
            let mut next = Some(first);
            while let Some(change) = next {
                match change {
                    StoreChange::Everything => everything = true,
                    StoreChange::Source {
                        source,
                        stories_merged,
                    } => *sources.entry(source).or_default() |= stories_merged,
                }
                next = changes.try_recv().ok();
            }
            let config = shared.config();
            let every_feed = everything || sources.values().any(|merged| *merged);
            let sources: Vec<&str> = sources.keys().map(String::as_str).collect();
            shared.render_feeds_of(&config, &sources, every_feed).await;
        }
    });
}
