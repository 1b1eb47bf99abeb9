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
//! Each indexed item is held once (time, id, source tag: 32 bytes) and its entries under its
//! key terms are 4-byte slots of that table, so that the index costs about a third of what
//! whole entries under every term did (about eight terms an item). A term that one item alone
//! has is held as that slot, without a list ([`TermSlots`]).
//!
//! It is the store's: nothing else sees it.

use std::collections::HashMap;

use crate::dedup::record::FingerprintRecord;
use crate::model::ItemId;

/// One key-term entry as lookups see it: when the item was published (microseconds), which
/// item, and a tag of its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::store::sled_engine) struct Posting {
    pub micros: i64,
    pub id: ItemId,
    pub source: [u8; 4],
}

/// An indexed item, held once: its entries under each key term are only its slot (4 bytes
/// instead of the 32 of a whole [`Posting`]; an item has about eight key terms).
#[derive(Debug, Clone, Copy)]
struct Doc {
    micros: i64,
    id: ItemId,
    source: [u8; 4],
    /// Entries naming this slot; at 0 the slot is free again.
    entries: u32,
}

const _: () = assert!(std::mem::size_of::<Doc>() == 32);

#[derive(Debug, Default)]
pub(in crate::store::sled_engine) struct KeyTermPostings {
    /// Whether it was built from sled and is kept up since.
    built: bool,
    /// Indexed items by slot; a free slot is listed in `free`.
    docs: Vec<Doc>,
    free: Vec<u32>,
    slot_of: HashMap<ItemId, u32>,
    /// Each key term's entries (slots in `docs`), newest first, then by id.
    by_term: TermSlots,
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

    /// Indexes `id` under the record's key terms (once each, however often it is added). An
    /// item indexed already keeps the time and source it was first indexed with: one indexed
    /// again with another record is removed first, with the record it was indexed with.
    pub fn insert(&mut self, id: ItemId, record: &FingerprintRecord, source: [u8; 4]) {
        let micros = record.published.timestamp_micros();
        let slot = self.slot_for(id, micros, source);
        let Doc { micros, id, .. } = self.docs[slot as usize];
        for term in &record.keys {
            let slots = self.by_term.get(*term);
            let at = slots.partition_point(|s| {
                let other = &self.docs[*s as usize];
                other.micros > micros || (other.micros == micros && other.id < id)
            });
            if slots.get(at) == Some(&slot) {
                continue;
            }
            self.by_term.insert(*term, at, slot);
            self.docs[slot as usize].entries += 1;
            self.entries += 1;
        }
        self.release_if_unused(slot);
    }

    /// Removes the entries of `id` that `record` (the version it was indexed with) made.
    pub fn remove(&mut self, id: ItemId, record: &FingerprintRecord) {
        let Some(&slot) = self.slot_of.get(&id) else {
            return;
        };
        for term in &record.keys {
            let removed = self.by_term.remove(*term, slot);
            self.entries -= removed;
            let doc = &mut self.docs[slot as usize];
            doc.entries = doc.entries.saturating_sub(removed as u32);
        }
        self.release_if_unused(slot);
    }

    /// The entries of `term` published within `from..=to` (microseconds), newest first.
    pub fn postings(&self, term: u32, from: i64, to: i64) -> impl Iterator<Item = Posting> + '_ {
        let slots = self.by_term.get(term);
        let first = slots.partition_point(|s| self.docs[*s as usize].micros > to);
        slots[first..]
            .iter()
            .map(|s| {
                let doc = &self.docs[*s as usize];
                Posting {
                    micros: doc.micros,
                    id: doc.id,
                    source: doc.source,
                }
            })
            .take_while(move |p| p.micros >= from)
    }

    /// The slot of `id`, taken (a free one first) when it has none.
    fn slot_for(&mut self, id: ItemId, micros: i64, source: [u8; 4]) -> u32 {
        if let Some(&slot) = self.slot_of.get(&id) {
            // The writes remove an item's entries before they index it with another record.
            debug_assert_eq!(
                self.docs[slot as usize].micros, micros,
                "{id} indexed again at another time without being removed first"
            );
            return slot;
        }
        let doc = Doc {
            micros,
            id,
            source,
            entries: 0,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.docs[slot as usize] = doc;
                slot
            }
            None => {
                self.docs.push(doc);
                (self.docs.len() - 1) as u32
            }
        };
        self.slot_of.insert(id, slot);
        slot
    }

    /// Frees `slot` when no entry names it any more.
    fn release_if_unused(&mut self, slot: u32) {
        let doc = self.docs[slot as usize];
        if doc.entries == 0 {
            self.slot_of.remove(&doc.id);
            self.free.push(slot);
        }
    }
}

/// Each key term's entries (slots of indexed items), in the order [`KeyTermPostings`] keeps.
/// Most key terms are rare names that one item alone has: such a term is held as its one slot
/// (8 bytes), not as a list (a map entry of 32 bytes and a block of its own on the heap).
#[derive(Debug, Default)]
struct TermSlots {
    one: HashMap<u32, u32>,
    many: HashMap<u32, Vec<u32>>,
}

impl TermSlots {
    fn get(&self, term: u32) -> &[u32] {
        match self.one.get(&term) {
            Some(slot) => std::slice::from_ref(slot),
            None => self.many.get(&term).map(Vec::as_slice).unwrap_or_default(),
        }
    }

    /// Puts `slot` at position `at` of `term`'s entries.
    fn insert(&mut self, term: u32, at: usize, slot: u32) {
        if let Some(slots) = self.many.get_mut(&term) {
            slots.insert(at, slot);
            return;
        }
        match self.one.remove(&term) {
            None => {
                self.one.insert(term, slot);
            }
            Some(other) => {
                let mut slots = vec![other];
                slots.insert(at, slot);
                self.many.insert(term, slots);
            }
        }
    }

    /// Removes `term`'s entries of `slot`: how many there were.
    fn remove(&mut self, term: u32, slot: u32) -> usize {
        if self.one.get(&term) == Some(&slot) {
            self.one.remove(&term);
            return 1;
        }
        let Some(slots) = self.many.get_mut(&term) else {
            return 0;
        };
        let before = slots.len();
        slots.retain(|s| *s != slot);
        let removed = before - slots.len();
        match slots[..] {
            [] => {
                self.many.remove(&term);
            }
            [only] => {
                self.many.remove(&term);
                self.one.insert(term, only);
            }
            _ => {}
        }
        removed
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.one.is_empty() && self.many.is_empty()
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
    fn a_term_of_one_item_then_of_several_then_of_one_again_keeps_its_order() {
        let mut index = KeyTermPostings::default();
        index.insert(id(2), &record(200, &[7]), [0; 4]);
        assert_eq!(
            index.by_term.one.len(),
            1,
            "a term of one item is held as its slot"
        );
        index.insert(id(1), &record(100, &[7]), [0; 4]);
        index.insert(id(3), &record(300, &[7]), [0; 4]);
        assert_eq!(found(&index, 7, 0, 1_000), vec![3, 2, 1]);
        index.remove(id(3), &record(300, &[7]));
        index.remove(id(2), &record(200, &[7]));
        assert_eq!(found(&index, 7, 0, 1_000), vec![1]);
        assert!(index.by_term.many.is_empty(), "back to a slot of its own");
        index.insert(id(4), &record(50, &[7]), [0; 4]);
        assert_eq!(found(&index, 7, 0, 1_000), vec![1, 4]);
        index.remove(id(1), &record(100, &[7]));
        index.remove(id(4), &record(50, &[7]));
        assert!(found(&index, 7, 0, 1_000).is_empty());
        assert!(index.by_term.is_empty());
        assert_eq!(index.len(), 0);
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
    fn a_removed_item_frees_its_slot_for_the_next_without_mixing_them_up() {
        let mut index = KeyTermPostings::default();
        let first = record(100, &[7, 8]);
        index.insert(id(1), &first, [1; 4]);
        index.insert(id(2), &record(300, &[7]), [2; 4]);
        index.remove(id(1), &first);
        index.insert(id(3), &record(200, &[8, 9]), [3; 4]);
        assert_eq!(index.docs.len(), 2, "the freed slot is taken again");
        assert_eq!(found(&index, 7, 0, 1_000), vec![2]);
        assert_eq!(found(&index, 8, 0, 1_000), vec![3]);
        let posting = index.postings(9, 0, 1_000).next().unwrap();
        assert_eq!((posting.micros, posting.source), (200, [3; 4]));
        assert_eq!(index.len(), 3);
        index.remove(id(3), &record(200, &[8, 9]));
        index.remove(id(2), &record(300, &[7]));
        assert_eq!(index.len(), 0);
        assert!(index.slot_of.is_empty() && index.by_term.is_empty());
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
