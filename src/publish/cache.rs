//! Searches and pages already rendered ([`ViewCache`]), and how many may be rendered at once
//! ([`SearchSlots`]).
//!
//! A search (`?q=`) or a later page reads the feed's index up to the whole of it, so a
//! repeated one is served from an LRU bounded by entries and bytes. A feed's entries are
//! dropped whenever the feed is rendered again (its items changed, or the config did): each
//! feed has a generation, a rendering started under an older one is not kept, so nothing
//! rendered from the store before a change outlives it. Views that miss the cache take one of
//! a few slots to be rendered; a request that waits too long for one is refused (the server
//! answers 503). Memory and locking only: this module reads no store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{Format, Rendered, View};

/// Default most views kept.
pub const VIEW_CACHE_ENTRIES: usize = 256;
/// Default most bytes of views kept (bodies and their compressed forms).
pub const VIEW_CACHE_BYTES: usize = 32 * 1024 * 1024;
/// Default most views rendered at once.
pub const SEARCHES_AT_ONCE: usize = 2;
/// Default longest wait for a slot to render a view in.
pub const SEARCH_WAIT: Duration = Duration::from_secs(10);

/// One view of one feed in one format: the feed's name, and the view's query string in the
/// one form `View` writes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ViewKey {
    feed: String,
    format: Format,
    query: String,
}

impl ViewKey {
    pub fn new(feed: &str, format: Format, view: &View) -> ViewKey {
        ViewKey {
            feed: feed.to_owned(),
            format,
            query: view.query_string(view.before),
        }
    }
}

/// What a feed's cached views were rendered under: views rendered under an older generation
/// are not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation(u64);

#[derive(Debug)]
struct Slot {
    doc: Arc<Rendered>,
    size: usize,
    last_used: u64,
}

#[derive(Debug, Default)]
struct Views {
    slots: HashMap<ViewKey, Slot>,
    generations: HashMap<String, u64>,
    bytes: usize,
    clock: u64,
}

impl Views {
    fn remove(&mut self, key: &ViewKey) {
        if let Some(slot) = self.slots.remove(key) {
            self.bytes -= slot.size;
        }
    }

    /// Drops the least recently used view.
    fn evict_one(&mut self) {
        let oldest = self
            .slots
            .iter()
            .min_by_key(|(_, slot)| slot.last_used)
            .map(|(key, _)| key.clone());
        if let Some(key) = oldest {
            self.remove(&key);
        }
    }
}

/// Rendered searches and pages, least recently used dropped first.
#[derive(Debug)]
pub struct ViewCache {
    views: Mutex<Views>,
    max_entries: usize,
    max_bytes: usize,
}

impl Default for ViewCache {
    fn default() -> Self {
        ViewCache::new(VIEW_CACHE_ENTRIES, VIEW_CACHE_BYTES)
    }
}

impl ViewCache {
    pub fn new(max_entries: usize, max_bytes: usize) -> ViewCache {
        ViewCache {
            views: Mutex::new(Views::default()),
            max_entries,
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Views> {
        self.views.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The view under `key`, if it is kept.
    pub fn get(&self, key: &ViewKey) -> Option<Arc<Rendered>> {
        let mut views = self.lock();
        views.clock += 1;
        let now = views.clock;
        let slot = views.slots.get_mut(key)?;
        slot.last_used = now;
        Some(slot.doc.clone())
    }

    /// The generation of `feed`'s views now: take it before reading the store.
    pub fn generation(&self, feed: &str) -> Generation {
        Generation(self.lock().generations.get(feed).copied().unwrap_or(0))
    }

    /// Keeps `doc` under `key` if its feed has not changed since `generation` and it fits,
    /// dropping the least recently used views to make room.
    pub fn insert(&self, key: ViewKey, doc: Arc<Rendered>, generation: Generation) {
        let size = doc.size();
        if size > self.max_bytes || self.max_entries == 0 {
            return;
        }
        let mut views = self.lock();
        if views.generations.get(&key.feed).copied().unwrap_or(0) != generation.0 {
            return; // rendered from the store before the feed changed
        }
        views.remove(&key);
        while views.slots.len() >= self.max_entries || views.bytes + size > self.max_bytes {
            views.evict_one();
        }
        views.clock += 1;
        let last_used = views.clock;
        views.bytes += size;
        views.slots.insert(
            key,
            Slot {
                doc,
                size,
                last_used,
            },
        );
    }

    /// Drops `feed`'s views and starts its next generation: its items or config changed.
    pub fn invalidate(&self, feed: &str) {
        let mut views = self.lock();
        *views.generations.entry(feed.to_owned()).or_default() += 1;
        let stale: Vec<ViewKey> = views
            .slots
            .keys()
            .filter(|k| k.feed == feed)
            .cloned()
            .collect();
        for key in stale {
            views.remove(&key);
        }
    }

    /// Views kept, and their bytes.
    pub fn usage(&self) -> (usize, usize) {
        let views = self.lock();
        (views.slots.len(), views.bytes)
    }
}

/// Too many views are being rendered: the request waited its turn in vain.
#[derive(Debug, thiserror::Error)]
#[error("too many searches at once")]
pub struct Busy;

/// At most so many views rendered at once; the others wait a while for their turn.
#[derive(Debug)]
pub struct SearchSlots {
    slots: Arc<Semaphore>,
    wait: Duration,
}

impl Default for SearchSlots {
    fn default() -> Self {
        SearchSlots::new(SEARCHES_AT_ONCE, SEARCH_WAIT)
    }
}

impl SearchSlots {
    pub fn new(at_once: usize, wait: Duration) -> SearchSlots {
        SearchSlots {
            slots: Arc::new(Semaphore::new(at_once.max(1))),
            wait,
        }
    }

    /// A slot to render a view in, held until the permit is dropped; [`Busy`] when none
    /// frees within the wait.
    pub async fn take(&self) -> Result<OwnedSemaphorePermit, Busy> {
        match tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Busy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(bytes: usize) -> Arc<Rendered> {
        Arc::new(Rendered::for_one_request(vec![b'x'; bytes]))
    }

    fn key(feed: &str, q: &str) -> ViewKey {
        let view = View {
            query: crate::filter::Query::parse(q).map(|parsed| (q.to_owned(), parsed)),
            ..View::default()
        };
        ViewKey::new(feed, Format::Atom, &view)
    }

    #[test]
    fn the_least_recently_used_view_goes_first_when_entries_run_out() {
        let cache = ViewCache::new(2, 1 << 20);
        let g = cache.generation("all");
        cache.insert(key("all", "a"), doc(10), g);
        cache.insert(key("all", "b"), doc(10), g);
        assert!(cache.get(&key("all", "a")).is_some());
        cache.insert(key("all", "c"), doc(10), g);
        assert!(
            cache.get(&key("all", "b")).is_none(),
            "b was least recently used"
        );
        assert!(cache.get(&key("all", "a")).is_some());
        assert!(cache.get(&key("all", "c")).is_some());
        assert_eq!(cache.usage(), (2, 20));
    }

    #[test]
    fn views_are_dropped_to_stay_within_the_bytes() {
        let cache = ViewCache::new(100, 250);
        let g = cache.generation("all");
        for q in ["a", "b", "c"] {
            cache.insert(key("all", q), doc(100), g);
        }
        assert_eq!(cache.usage(), (2, 200));
        assert!(cache.get(&key("all", "a")).is_none());
        cache.insert(key("all", "big"), doc(251), g);
        assert!(
            cache.get(&key("all", "big")).is_none(),
            "larger than the cache"
        );
        assert_eq!(cache.usage(), (2, 200));
    }

    #[test]
    fn a_feed_rendered_again_drops_its_views_and_refuses_older_renderings() {
        let cache = ViewCache::default();
        let before = cache.generation("all");
        cache.insert(key("all", "a"), doc(10), before);
        cache.insert(key("other", "a"), doc(10), cache.generation("other"));
        cache.invalidate("all");
        assert!(cache.get(&key("all", "a")).is_none());
        assert!(
            cache.get(&key("other", "a")).is_some(),
            "other feeds keep theirs"
        );
        cache.insert(key("all", "b"), doc(10), before);
        assert!(
            cache.get(&key("all", "b")).is_none(),
            "rendered before the change: not kept"
        );
        cache.insert(key("all", "b"), doc(10), cache.generation("all"));
        assert!(cache.get(&key("all", "b")).is_some());
    }

    #[tokio::test]
    async fn a_view_waits_for_a_slot_and_is_refused_when_none_frees() {
        let slots = SearchSlots::new(2, Duration::from_millis(50));
        let first = slots.take().await.unwrap();
        let _second = slots.take().await.unwrap();
        assert!(slots.take().await.is_err(), "both slots held");
        drop(first);
        assert!(slots.take().await.is_ok(), "a slot freed");
    }
}
