//! The key-term index, in memory: for each key term, the items indexed under it, newest
//! first. It answers every candidate lookup of near-duplicate detection.
//!
//! It is not stored: each item's key terms are in its fingerprint record, and the index is
//! built from the `fingerprints` tree on the first lookup after the store opens (or after a
//! reopen or a rebuild of the text index made it stale), then kept up by the store's writes.
//! Once built it holds every item that has a fingerprint in sled, no more (writes go to sled
//! first, then here). A sled tree of these entries (`key_terms`, format 2) cost six keys per
//! item: a fifth of the store's files and of its page table (BENCHMARKS.md, "What sled itself
//! costs per item").
//!
//! It is the store's: nothing else sees it.

use std::collections::HashMap;

use crate::dedup::record::FingerprintRecord;
use crate::model::ItemId;

/// One key-term entry: when the item was published (microseconds), which item, and a tag of
/// its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::store::sled_engine) struct Posting {
    pub micros: i64,
    pub id: ItemId,
    pub source: [u8; 4],
}

#[derive(Debug, Default)]
pub(in crate::store::sled_engine) struct KeyTermPostings {
    /// Whether it was built from sled and is kept up since.
    built: bool,
    /// Each key term's entries, newest first, then by id.
    by_term: HashMap<u32, Vec<Posting>>,
    entries: usize,
}

impl KeyTermPostings {
    pub fn is_built(&self) -> bool {
        self.built
    }

    /// Marks the fill from sled as done (the fill inserts first).
    pub fn built(&mut self) {
        self.built = true;
    }

    /// Forgets everything: the next lookup builds it from sled again.
    pub fn forget(&mut self) {
        *self = KeyTermPostings::default();
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Indexes `id` under the record's key terms (once each, however often it is added).
    pub fn insert(&mut self, id: ItemId, record: &FingerprintRecord, source: [u8; 4]) {
        let micros = record.published.timestamp_micros();
        for term in &record.keys {
            let postings = self.by_term.entry(*term).or_default();
            let at = postings
                .partition_point(|p| p.micros > micros || (p.micros == micros && p.id < id));
            if postings.get(at).is_some_and(|p| p.id == id) {
                continue;
            }
            postings.insert(at, Posting { micros, id, source });
            self.entries += 1;
        }
    }

    /// Removes the entries of `id` that `record` (the version it was indexed with) made.
    pub fn remove(&mut self, id: ItemId, record: &FingerprintRecord) {
        for term in &record.keys {
            let Some(postings) = self.by_term.get_mut(term) else {
                continue;
            };
            let before = postings.len();
            postings.retain(|p| p.id != id);
            self.entries -= before - postings.len();
            if postings.is_empty() {
                self.by_term.remove(term);
            }
        }
    }

    /// The entries of `term` published within `from..=to` (microseconds), newest first.
    pub fn postings(&self, term: u32, from: i64, to: i64) -> impl Iterator<Item = &Posting> {
        self.by_term
            .get(&term)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .skip_while(move |p| p.micros > to)
            .take_while(move |p| p.micros >= from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::fingerprint::Fingerprint;
    use chrono::{DateTime, Utc};

    fn record(at_micros: i64, keys: &[u32]) -> FingerprintRecord {
        FingerprintRecord {
            source: "s".into(),
            published: DateTime::<Utc>::from_timestamp_micros(at_micros).unwrap(),
            fingerprint: Fingerprint::default(),
            keys: keys.to_vec(),
        }
    }

    fn id(n: u8) -> ItemId {
        ItemId([n; 16])
    }

    fn found(index: &KeyTermPostings, term: u32, from: i64, to: i64) -> Vec<u8> {
        index.postings(term, from, to).map(|p| p.id.0[0]).collect()
    }

    #[test]
    fn postings_come_newest_first_within_the_range() {
        let mut index = KeyTermPostings::default();
        for (n, at) in [(1, 100), (2, 300), (3, 200), (4, 400)] {
            index.insert(id(n), &record(at, &[7]), [0; 4]);
        }
        assert_eq!(found(&index, 7, 0, 1_000), vec![4, 2, 3, 1]);
        assert_eq!(found(&index, 7, 150, 350), vec![2, 3]);
        assert!(found(&index, 8, 0, 1_000).is_empty());
        assert_eq!(index.len(), 4);
    }

    #[test]
    fn an_item_added_twice_or_under_a_term_listed_twice_is_one_entry() {
        let mut index = KeyTermPostings::default();
        index.insert(id(1), &record(100, &[7, 7]), [0; 4]);
        index.insert(id(1), &record(100, &[7]), [0; 4]);
        assert_eq!(found(&index, 7, 0, 1_000), vec![1]);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn a_replaced_item_is_found_by_its_new_terms_only() {
        let mut index = KeyTermPostings::default();
        let old = record(100, &[7, 8]);
        index.insert(id(1), &old, [0; 4]);
        index.remove(id(1), &old);
        index.insert(id(1), &record(200, &[9]), [0; 4]);
        assert!(found(&index, 7, 0, 1_000).is_empty());
        assert!(found(&index, 8, 0, 1_000).is_empty());
        assert_eq!(found(&index, 9, 0, 1_000), vec![1]);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn forgetting_leaves_it_unbuilt_and_empty() {
        let mut index = KeyTermPostings::default();
        index.insert(id(1), &record(100, &[7]), [0; 4]);
        index.built();
        assert!(index.is_built());
        index.forget();
        assert!(!index.is_built());
        assert!(found(&index, 7, 0, 1_000).is_empty());
        assert_eq!(index.len(), 0);
    }
}
