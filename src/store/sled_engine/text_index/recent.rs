//! The recent part of the near-duplicate index, in memory.
//!
//! Looking for an item's near duplicates reads the fingerprints of the candidates the key-term
//! index (`postings`) names. In sled each of those is a random read, and with a large store
//! most of them miss sled's cache; yet almost every lookup asks about the last few days. This
//! index keeps a copy of the fingerprints of recently published items, so that those lookups
//! read memory only.
//!
//! Invariant: every indexed item published at or after [`RecentIndex::covered_from`] is here
//! (items published earlier may be here too, and are ignored). Lookups take what they need
//! at or after that time from here and the rest from sled. The index starts covering nothing;
//! it is filled from sled (newest first) on the first lookup, and afterwards kept up by the
//! store's writes. It keeps items published up to twice the dedup window ago (an item
//! published a window ago still finds its candidates here) and drops older ones and, past its
//! capacity, the oldest ones, raising `covered_from` as it does. It is the store's: nothing else sees it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::dedup::record::FingerprintRecord;
use crate::model::ItemId;

#[derive(Debug)]
pub(in crate::store::sled_engine) struct RecentIndex {
    capacity: usize,
    /// See the module's invariant; `i64::MAX` while nothing is covered.
    covered_from: i64,
    /// Whether the index has been filled from sled.
    warm: bool,
    /// How far back it keeps items (microseconds): twice the dedup window.
    reach: i64,
    records: HashMap<ItemId, Arc<FingerprintRecord>>,
    by_time: BTreeSet<(i64, ItemId)>,
}

impl RecentIndex {
    pub fn new(capacity: usize) -> RecentIndex {
        RecentIndex {
            capacity,
            covered_from: i64::MAX,
            warm: false,
            reach: reach_of(crate::dedup::record::DEFAULT_WINDOW),
            records: HashMap::new(),
            by_time: BTreeSet::new(),
        }
    }

    #[cfg(test)]
    pub fn covered_from(&self) -> i64 {
        self.covered_from
    }

    pub fn is_warm(&self) -> bool {
        self.warm
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How far back from now the index keeps items (microseconds).
    pub fn reach(&self) -> i64 {
        self.reach
    }

    /// Follows the configured dedup window.
    pub fn set_window(&mut self, window: std::time::Duration) {
        self.reach = reach_of(window);
    }

    /// Forgets items published longer ago than its reach before `now` (microseconds).
    pub fn forget_out_of_reach(&mut self, now: i64) {
        if self.warm {
            self.forget_before(now.saturating_sub(self.reach));
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Marks the fill from sled as done: everything published at or after `from` is here.
    /// (The fill inserts with [`RecentIndex::insert_any`], newest first.)
    pub fn warmed(&mut self, from: i64) {
        self.warm = true;
        self.covered_from = from;
        self.evict_over_capacity();
    }

    /// Adds or replaces an item written to the store; one published before the covered time
    /// is left to sled.
    pub fn insert(&mut self, id: ItemId, record: Arc<FingerprintRecord>) {
        if record.published.timestamp_micros() < self.covered_from {
            // A replaced version may be here; it must not be found any more.
            self.remove(id);
            return;
        }
        self.insert_any(id, record);
        self.evict_over_capacity();
    }

    /// Adds or replaces an item whatever its time (the fill from sled).
    pub fn insert_any(&mut self, id: ItemId, record: Arc<FingerprintRecord>) {
        self.remove(id);
        let micros = record.published.timestamp_micros();
        self.by_time.insert((micros, id));
        self.records.insert(id, record);
    }

    pub fn remove(&mut self, id: ItemId) {
        let Some(record) = self.records.remove(&id) else {
            return;
        };
        self.by_time
            .remove(&(record.published.timestamp_micros(), id));
    }

    pub fn get(&self, id: ItemId) -> Option<Arc<FingerprintRecord>> {
        self.records.get(&id).cloned()
    }

    /// Forgets items published before `micros`; they are looked up in sled from now on.
    pub fn forget_before(&mut self, micros: i64) {
        while let Some(&(oldest, id)) = self.by_time.first() {
            if oldest >= micros {
                break;
            }
            self.remove(id);
        }
        if self.warm {
            self.covered_from = self.covered_from.max(micros);
        }
    }

    fn evict_over_capacity(&mut self) {
        while self.records.len() > self.capacity {
            let Some(&(oldest, id)) = self.by_time.first() else {
                break;
            };
            self.remove(id);
            self.covered_from = self.covered_from.max(oldest.saturating_add(1));
        }
    }

    /// The records of items published within `from..=to` (microseconds, and not before the
    /// covered time), newest first.
    pub fn published_within(
        &self,
        from: i64,
        to: i64,
    ) -> impl Iterator<Item = (ItemId, &Arc<FingerprintRecord>)> {
        let from = from.max(self.covered_from);
        let range = if from <= to {
            Some((from, ItemId([0; 16]))..=(to, ItemId([0xFF; 16])))
        } else {
            None
        };
        range
            .into_iter()
            .flat_map(move |r| self.by_time.range(r).rev())
            .filter_map(|(_, id)| Some((*id, self.records.get(id)?)))
    }
}

fn reach_of(window: std::time::Duration) -> i64 {
    i64::try_from(window.as_micros().saturating_mul(2)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::fingerprint::Fingerprint;
    use chrono::{DateTime, Utc};

    fn record(at_micros: i64, keys: &[u32]) -> Arc<FingerprintRecord> {
        Arc::new(FingerprintRecord {
            source: "s".into(),
            published: DateTime::<Utc>::from_timestamp_micros(at_micros).unwrap(),
            fingerprint: Fingerprint::default(),
            keys: keys.to_vec(),
        })
    }

    fn id(n: u8) -> ItemId {
        ItemId([n; 16])
    }

    fn found(index: &RecentIndex, from: i64, to: i64) -> Vec<u8> {
        index
            .published_within(from, to)
            .map(|(id, _)| id.0[0])
            .collect()
    }

    #[test]
    fn records_come_newest_first_within_the_range() {
        let mut index = RecentIndex::new(10);
        index.warmed(0);
        for (n, at) in [(1, 100), (2, 300), (3, 200), (4, 400)] {
            index.insert(id(n), record(at, &[7]));
        }
        assert_eq!(found(&index, 0, 1_000), vec![4, 2, 3, 1]);
        assert_eq!(found(&index, 150, 350), vec![2, 3]);
    }

    #[test]
    fn a_replaced_item_is_kept_once_in_its_new_version() {
        let mut index = RecentIndex::new(10);
        index.warmed(0);
        index.insert(id(1), record(100, &[7, 8]));
        index.insert(id(1), record(200, &[9]));
        assert_eq!(found(&index, 0, 150), Vec::<u8>::new());
        assert_eq!(found(&index, 0, 1_000), vec![1]);
        assert_eq!(index.get(id(1)).unwrap().keys, vec![9]);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn past_capacity_the_oldest_go_and_the_covered_time_rises() {
        let mut index = RecentIndex::new(2);
        index.warmed(0);
        for (n, at) in [(1, 100), (2, 200), (3, 300)] {
            index.insert(id(n), record(at, &[7]));
        }
        assert_eq!(index.len(), 2);
        assert_eq!(index.covered_from(), 101);
        // An item older than the covered time is left to sled.
        index.insert(id(4), record(50, &[7]));
        assert_eq!(found(&index, 0, 1_000), vec![3, 2]);
    }

    #[test]
    fn nothing_is_covered_until_warmed() {
        let mut index = RecentIndex::new(10);
        index.insert(id(1), record(100, &[7]));
        assert!(found(&index, 0, 1_000).is_empty());
        index.insert_any(id(1), record(100, &[7]));
        index.warmed(50);
        assert_eq!(found(&index, 0, 1_000), vec![1]);
        index.forget_before(150);
        assert_eq!(index.covered_from(), 150);
        assert!(found(&index, 0, 1_000).is_empty());
    }
}
