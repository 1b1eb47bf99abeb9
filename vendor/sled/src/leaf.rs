//! feedmux patch 9: a leaf's entries packed in one buffer.
//!
//! A leaf held its keys and its values as two vectors of `IVec`s, 40 bytes each whatever
//! the entry's size, and every key or value over 22 bytes in an allocation of its own. An
//! entry of feedmux's index trees (20 to 60 bytes on disk) took 80 to 180 bytes in memory,
//! so the cache, which counts a node by its size on disk, held two to four times its
//! `cache_capacity`. Here a leaf is one buffer of its entries' bytes, each key followed by
//! its value, and one vector of where each ends: an entry costs its bytes and 8 more.

use std::{borrow::Cow, cmp::Ordering, convert::TryFrom};

use crate::{fastcmp, IVec};

/// Values longer than this are not copied into the buffer: each stays an [`IVec`] of its
/// own, which the leaf's clones share, so that an insert beside a large value (feedmux's
/// `meta` tree holds values of a megabyte) does not copy it.
const SHARED_VALUE_BYTES: usize = 1024;
/// Set in an entry's value end when its value is shared: the value's place in the buffer
/// then holds its index in [`Leaf::shared`], 4 bytes little-endian.
const SHARED: u32 = 1 << 31;

/// A leaf's entries, sorted by key (the node's prefix-encoded keys).
#[derive(Clone, Default, Debug)]
pub(crate) struct Leaf {
    /// Entry after entry, each key then its value (or its shared value's index).
    bytes: Vec<u8>,
    /// Where entry `i`'s key ends and where its value ends in `bytes` (with [`SHARED`] set
    /// if the value is shared); entry `i` begins where entry `i - 1`'s value ends.
    ends: Vec<(u32, u32)>,
    /// The values over [`SHARED_VALUE_BYTES`]; an empty one is a free slot.
    shared: Vec<IVec>,
}

/// A value as a leaf holds it.
#[derive(Clone, Copy)]
enum Stored<'a> {
    Packed(&'a [u8]),
    Shared(&'a IVec),
}

/// A place in a leaf's buffer as stored: leaves are split long before 2 GiB.
fn offset(at: usize) -> u32 {
    match u32::try_from(at) {
        Ok(at) if at < SHARED => at,
        _ => panic!("a leaf of 2 GiB or more"),
    }
}

impl PartialEq for Leaf {
    fn eq(&self, other: &Leaf) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Leaf {
    /// A leaf of these entries, in this order.
    pub(crate) fn from_entries<'a>(
        entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Leaf {
        let mut leaf = Leaf::default();
        for (key, value) in entries {
            leaf.push(key, value);
        }
        leaf.shrink_to_fit();
        leaf
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The bytes of every key and value (what a split is decided on).
    pub(crate) fn entry_bytes(&self) -> usize {
        let live = self.shared.iter().filter(|v| !v.is_empty());
        self.bytes.len() + live.map(|v| v.len() - 4).sum::<usize>()
    }

    fn value_end(&self, idx: usize) -> usize {
        (self.ends[idx].1 & !SHARED) as usize
    }

    fn start(&self, idx: usize) -> usize {
        if idx == 0 { 0 } else { self.value_end(idx - 1) }
    }

    pub(crate) fn key(&self, idx: usize) -> &[u8] {
        &self.bytes[self.start(idx)..self.ends[idx].0 as usize]
    }

    fn stored(&self, idx: usize) -> Stored<'_> {
        let place = &self.bytes[self.ends[idx].0 as usize..self.value_end(idx)];
        if self.ends[idx].1 & SHARED == 0 {
            Stored::Packed(place)
        } else {
            Stored::Shared(&self.shared[shared_index(place)])
        }
    }

    pub(crate) fn value(&self, idx: usize) -> &[u8] {
        match self.stored(idx) {
            Stored::Packed(value) => value,
            Stored::Shared(value) => value,
        }
    }

    /// The entries in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        (0..self.len()).map(move |idx| (self.key(idx), self.value(idx)))
    }

    /// Whether the keys are in order (checked in sled's testing builds).
    #[cfg(feature = "lock_free_delays")]
    pub(crate) fn is_sorted(&self) -> bool {
        (1..self.len()).all(|idx| self.key(idx - 1) < self.key(idx))
    }

    /// Where `key` is, or where it would go.
    pub(crate) fn search(&self, key: &[u8]) -> Result<usize, usize> {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let mid = low + (high - low) / 2;
            match fastcmp(self.key(mid), key) {
                Ordering::Less => low = mid + 1,
                Ordering::Greater => high = mid,
                Ordering::Equal => return Ok(mid),
            }
        }
        Err(low)
    }

    /// Gives back the room the buffers keep beyond their entries.
    pub(crate) fn shrink_to_fit(&mut self) {
        self.bytes.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.shared.shrink_to_fit();
    }

    /// Where `value` goes in the buffer: the value itself, or the index of a shared slot
    /// now holding it.
    fn place_for<'a>(&mut self, value: Stored<'a>) -> (Cow<'a, [u8]>, u32) {
        let shared = match value {
            Stored::Packed(value) if value.len() <= SHARED_VALUE_BYTES => {
                return (Cow::Borrowed(value), 0);
            }
            Stored::Packed(value) => IVec::from(value),
            Stored::Shared(value) => value.clone(),
        };
        let slot = match self.shared.iter().position(|v| v.is_empty()) {
            Some(slot) => {
                self.shared[slot] = shared;
                slot
            }
            None => {
                self.shared.push(shared);
                self.shared.len() - 1
            }
        };
        (Cow::Owned(offset(slot).to_le_bytes().to_vec()), SHARED)
    }

    /// Frees the shared slot of entry `idx`'s value, if it has one.
    fn free_shared(&mut self, idx: usize) {
        if self.ends[idx].1 & SHARED != 0 {
            let place = &self.bytes[self.ends[idx].0 as usize..self.value_end(idx)];
            let slot = shared_index(place);
            self.shared[slot] = IVec::default();
        }
    }

    fn push_stored(&mut self, key: &[u8], value: Stored<'_>) {
        let (place, flag) = self.place_for(value);
        self.bytes.extend_from_slice(key);
        let key_end = offset(self.bytes.len());
        self.bytes.extend_from_slice(&place);
        self.ends.push((key_end, offset(self.bytes.len()) | flag));
    }

    /// Adds an entry after the last.
    pub(crate) fn push(&mut self, key: &[u8], value: &[u8]) {
        self.push_stored(key, Stored::Packed(value));
    }

    /// Adds an entry at `idx`. Room is made for this entry only: the leaf was just cloned
    /// with room for its entries and no more (patch 7).
    pub(crate) fn insert(&mut self, idx: usize, key: &[u8], value: &[u8]) {
        let (place, flag) = self.place_for(Stored::Packed(value));
        let at = self.start(idx);
        let added = key.len() + place.len();
        self.bytes.reserve_exact(added);
        self.bytes.splice(at..at, key.iter().chain(place.iter()).copied());
        self.shift_ends_from(idx, added as i64);
        self.ends.reserve_exact(1);
        self.ends
            .insert(idx, (offset(at + key.len()), offset(at + added) | flag));
    }

    /// Replaces the value of entry `idx`.
    pub(crate) fn set_value(&mut self, idx: usize, value: &[u8]) {
        self.free_shared(idx);
        let (place, flag) = self.place_for(Stored::Packed(value));
        let (from, to) = (self.ends[idx].0 as usize, self.value_end(idx));
        if place.len() > to - from {
            self.bytes.reserve_exact(place.len() - (to - from));
        }
        self.bytes.splice(from..to, place.iter().copied());
        self.ends[idx].1 = offset(from + place.len()) | flag;
        self.shift_ends_from(idx + 1, place.len() as i64 - (to - from) as i64);
    }

    /// Removes entry `idx`.
    pub(crate) fn remove(&mut self, idx: usize) {
        self.free_shared(idx);
        let (from, to) = (self.start(idx), self.value_end(idx));
        self.bytes.drain(from..to);
        self.ends.remove(idx);
        self.shift_ends_from(idx, -((to - from) as i64));
    }

    fn shift_ends_from(&mut self, idx: usize, by: i64) {
        if by == 0 {
            return;
        }
        let shift = |at: u32| offset((i64::from(at) + by) as usize);
        for (key_end, value_end) in &mut self.ends[idx..] {
            *key_end = shift(*key_end);
            *value_end = shift(*value_end & !SHARED) | (*value_end & SHARED);
        }
    }

    /// The same entries, each key replaced by `rekey` of it; shared values stay shared.
    fn rebuilt<'a>(
        &'a self,
        range: std::ops::Range<usize>,
        rekey: impl Fn(&'a [u8]) -> std::borrow::Cow<'a, [u8]>,
    ) -> Leaf {
        let mut leaf = Leaf::default();
        leaf.ends.reserve_exact(range.len());
        for idx in range {
            leaf.push_stored(&rekey(self.key(idx)), self.stored(idx));
        }
        leaf.shrink_to_fit();
        leaf
    }

    /// Moves the entries from `idx` on into a leaf of their own.
    pub(crate) fn split_off(&mut self, idx: usize) -> Leaf {
        let right = self.rebuilt(idx..self.len(), std::borrow::Cow::Borrowed);
        *self = self.rebuilt(0..idx, std::borrow::Cow::Borrowed);
        right
    }

    /// The same entries with each key replaced by `rekey` of it (a new prefix encoding, which
    /// keeps their order).
    pub(crate) fn rekeyed(&self, rekey: impl Fn(&[u8]) -> Vec<u8>) -> Leaf {
        self.rebuilt(0..self.len(), |k| std::borrow::Cow::Owned(rekey(k)))
    }
}

/// The index a shared value's place holds.
fn shared_index(place: &[u8]) -> usize {
    let mut index = [0; 4];
    index.copy_from_slice(place);
    u32::from_le_bytes(index) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(leaf: &Leaf) -> Vec<(Vec<u8>, Vec<u8>)> {
        leaf.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
    }

    #[test]
    fn inserts_replacements_and_removals_keep_every_entry_whole() {
        let mut leaf = Leaf::default();
        for key in [b"m".as_ref(), b"c", b"x", b"a"] {
            let idx = leaf.search(key).unwrap_err();
            leaf.insert(idx, key, &[key[0]; 3]);
        }
        assert_eq!(leaf.search(b"c"), Ok(1));
        assert_eq!(leaf.search(b"d"), Err(2));
        leaf.set_value(1, b"longer value");
        leaf.set_value(2, b"");
        leaf.remove(0);
        assert_eq!(
            entries(&leaf),
            vec![
                (b"c".to_vec(), b"longer value".to_vec()),
                (b"m".to_vec(), vec![]),
                (b"x".to_vec(), b"xxx".to_vec()),
            ]
        );
        let right = leaf.split_off(1);
        assert_eq!(entries(&leaf), vec![(b"c".to_vec(), b"longer value".to_vec())]);
        assert_eq!(
            entries(&right),
            vec![(b"m".to_vec(), vec![]), (b"x".to_vec(), b"xxx".to_vec())]
        );
        let rekeyed = right.rekeyed(|k| [b"p".as_ref(), k].concat());
        assert_eq!(rekeyed.key(1), b"px");
        assert_eq!(rekeyed.value(1), b"xxx");
        assert_eq!(rekeyed.entry_bytes(), 2 + 5);
    }

    #[test]
    fn large_values_are_shared_by_clones_and_freed_with_their_entry() {
        let big = vec![7; SHARED_VALUE_BYTES + 1];
        let mut leaf = Leaf::from_entries(vec![
            (b"a".as_ref(), big.as_ref()),
            (b"b".as_ref(), b"small".as_ref()),
        ]);
        assert_eq!(leaf.entry_bytes(), 1 + big.len() + 1 + 5);
        let clone = leaf.clone();
        assert_eq!(clone.value(0).as_ptr(), leaf.value(0).as_ptr());
        leaf.insert(1, b"ab", &big);
        leaf.set_value(0, b"now small");
        assert_eq!(leaf.value(0), b"now small");
        assert_eq!(leaf.value(1), big.as_slice());
        assert_eq!(leaf.value(2), b"small");
        leaf.set_value(2, &[8; SHARED_VALUE_BYTES * 2]);
        // the slot "a" freed was taken again, by "b"
        assert_eq!(leaf.shared.len(), 2);
        leaf.remove(1);
        assert_eq!(leaf.value(1), [8; SHARED_VALUE_BYTES * 2].as_ref());
        let right = leaf.split_off(1);
        assert_eq!(leaf, Leaf::from_entries(vec![(b"a".as_ref(), b"now small".as_ref())]));
        assert_eq!(right.value(0), [8; SHARED_VALUE_BYTES * 2].as_ref());
        assert_eq!(clone.value(0), big.as_slice());
        assert_eq!(clone.value(1), b"small");
    }
}
