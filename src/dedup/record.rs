//! What dedup hands the store, and what the store keeps for dedup: the plan of one poll's
//! writes (`IngestPlan`, `ItemWrite`), fingerprint records and their binary form, URL claims,
//! story links, and the defaults the store's in-memory index is sized by.
//!
//! A leaf: it uses the model and dedup's `fingerprint` and `meaning`, and nothing of the store,
//! so that `store` depends on these types without `store` and `dedup` depending on each other.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::fingerprint::{Fingerprint, Term};
use super::meaning::Meaning;
use crate::model::{Item, ItemId};

/// Default `dedup.memory_items`: about 60 MB at the most.
pub const DEFAULT_MEMORY_ITEMS: usize = 50_000;
/// Default `dedup.window`.
pub const DEFAULT_WINDOW: std::time::Duration = std::time::Duration::from_secs(72 * 3600);

/// Who first claimed a canonical URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlClaim {
    pub item: ItemId,
    pub source: String,
    /// Set once two items of one source share the URL: it then identifies nothing.
    pub ambiguous: bool,
}

/// What the store keeps of an item for near-duplicate matching.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FingerprintRecord {
    pub source: String,
    pub published: DateTime<Utc>,
    pub fingerprint: Fingerprint,
    /// The terms it is indexed under (kept so that an edit can remove them).
    pub keys: Vec<u32>,
}

impl FingerprintRecord {
    /// A compact binary form: version, time, source, title hashes, numbers, terms.
    pub fn to_bytes(&self) -> Vec<u8> {
        let source = self.source.as_bytes();
        let source = &source[..source.len().min(255)];
        let fp = &self.fingerprint;
        let mut out = Vec::with_capacity(
            16 + source.len() + 4 * (fp.title.len() + fp.numbers.len()) + 6 * fp.terms.len(),
        );
        out.push(RECORD_VERSION);
        out.extend_from_slice(&self.published.timestamp_micros().to_le_bytes());
        out.push(source.len() as u8);
        out.extend_from_slice(source);
        let put_hashes = |out: &mut Vec<u8>, hashes: &[u32]| {
            let n = hashes.len().min(255);
            out.push(n as u8);
            for h in &hashes[..n] {
                out.extend_from_slice(&h.to_le_bytes());
            }
        };
        put_hashes(&mut out, &fp.title);
        put_hashes(&mut out, &fp.numbers);
        let n = fp.terms.len().min(u16::MAX as usize);
        out.extend_from_slice(&(n as u16).to_le_bytes());
        for t in &fp.terms[..n] {
            out.extend_from_slice(&t.hash.to_le_bytes());
            out.push(t.in_title);
            out.push(t.in_body);
        }
        put_hashes(&mut out, &self.keys);
        let (model, values) = fp
            .meaning
            .as_ref()
            .map_or((0, &[][..]), |m| (m.model, &m.values[..]));
        let n = values.len().min(u16::MAX as usize);
        out.extend_from_slice(&(n as u16).to_le_bytes());
        if n > 0 {
            out.extend_from_slice(&model.to_le_bytes());
            out.extend(values[..n].iter().map(|v| *v as u8));
        }
        out
    }

    /// Reads [`FingerprintRecord::to_bytes`]'s form; `None` for anything else. Records of
    /// earlier versions have no terms: they are kept but never match.
    pub fn from_bytes(bytes: &[u8]) -> Option<FingerprintRecord> {
        let mut r = bytes;
        let mut take = |n: usize| -> Option<&[u8]> {
            if r.len() < n {
                return None;
            }
            let (head, tail) = r.split_at(n);
            r = tail;
            Some(head)
        };
        let version = take(1)?[0];
        if !(1..=RECORD_VERSION).contains(&version) {
            return None;
        }
        let micros = i64::from_le_bytes(take(8)?.try_into().ok()?);
        let published = DateTime::<Utc>::from_timestamp_micros(micros)?;
        let source_len = take(1)?[0] as usize;
        let source = String::from_utf8(take(source_len)?.to_vec()).ok()?;
        let hashes = |bytes: &[u8]| -> Vec<u32> {
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let fingerprint = match version {
            1 => {
                // title hashes (u16 count), a body MinHash (u8 count of u16), numbers.
                let titles = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
                let title = hashes(take(4 * titles)?);
                let bodies = take(1)?[0] as usize;
                take(2 * bodies)?;
                let count = take(1)?[0] as usize;
                let numbers = hashes(take(4 * count)?);
                (
                    Fingerprint {
                        title,
                        numbers,
                        terms: Vec::new(),
                        meaning: None,
                    },
                    Vec::new(),
                )
            }
            _ => {
                let titles = take(1)?[0] as usize;
                let title = hashes(take(4 * titles)?);
                let count = take(1)?[0] as usize;
                let numbers = hashes(take(4 * count)?);
                let terms = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
                let terms = take(6 * terms)?
                    .chunks_exact(6)
                    .map(|c| Term {
                        hash: u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                        in_title: c[4],
                        in_body: c[5],
                    })
                    .collect();
                let count = take(1)?[0] as usize;
                let keys = hashes(take(4 * count)?);
                // Version 3 adds the meaning: a u16 length, then (if not 0) the model's tag
                // and the bytes.
                let n = if version >= 3 {
                    u16::from_le_bytes(take(2)?.try_into().ok()?) as usize
                } else {
                    0
                };
                let meaning = if n > 0 {
                    let model = u32::from_le_bytes(take(4)?.try_into().ok()?);
                    let values = take(n)?.iter().map(|b| *b as i8).collect();
                    Some(Meaning { model, values })
                } else {
                    None
                };
                (
                    Fingerprint {
                        title,
                        numbers,
                        terms,
                        meaning,
                    },
                    keys,
                )
            }
        };
        Some(FingerprintRecord {
            source,
            published,
            fingerprint: fingerprint.0,
            keys: fingerprint.1,
        })
    }
}

/// The version of [`FingerprintRecord::to_bytes`]'s form (2 had no meaning; 1 had no terms).
const RECORD_VERSION: u8 = 3;

/// An item's fingerprint to index; for an edited item, the record it replaces.
#[derive(Debug, Clone)]
pub struct IndexedFingerprint {
    pub id: ItemId,
    pub record: FingerprintRecord,
    pub replaces: Option<FingerprintRecord>,
}

/// Why an item joined a story.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeKind {
    /// The same canonical URL.
    Url,
    /// Similar text.
    Text,
    /// Its story and this one became one through `with`, a later report that matched both.
    Through,
}

/// How an item joined its story: by what, with which item, how similar.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StoryLink {
    pub kind: MergeKind,
    pub with: ItemId,
    /// The word score (1 for a URL).
    pub score: f32,
    /// How close the two meanings were, when both items had one (`dedup.model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meaning: Option<f32>,
}

/// Two stories found to be one: a new item matched both. The store moves every member of
/// `from` into `into`; the member that led `from` joins with `link`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoryMerge {
    pub from: ItemId,
    pub into: ItemId,
    pub link: StoryLink,
}

/// A stored item that leaves its story for one of its own: a new report of its source is
/// closer to the story, and a story holds one report per source. The store moves it from
/// `story` into `into`, where it is the only member (see
/// [`story_of_its_own`](super::identity::story_of_its_own)); when it led `story`,
/// `new_lead`, the one member that joined through it, leads the story now (its link goes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoryLeave {
    pub member: ItemId,
    pub story: ItemId,
    pub into: ItemId,
    pub new_lead: Option<ItemId>,
}

/// The writes one poll makes.
#[derive(Debug, Default)]
pub struct IngestPlan {
    /// New and changed items, each with the version it replaces.
    pub writes: Vec<ItemWrite>,
    /// Canonical URL claims to set.
    pub claims: Vec<(String, UrlClaim)>,
    /// Fingerprints of new and edited items, to index.
    pub fingerprints: Vec<IndexedFingerprint>,
    /// Fingerprints of items published before this are not indexed (`dedup.index_age`
    /// before the poll); `None` indexes them all.
    pub index_from: Option<DateTime<Utc>>,
    /// Entries already stored with the same text.
    pub unchanged: usize,
    /// New items that joined another source's story by URL.
    pub merged: usize,
    /// New items that joined another source's story by similar text.
    pub merged_text: usize,
    /// New items that joined another source's story by meaning alone (their words scored
    /// below `dedup.threshold`).
    pub merged_meaning: usize,
    /// Stories that became one because a new item matched both, in order.
    pub story_merges: Vec<StoryMerge>,
    /// Stored items of the polled source that leave their stories to closer new reports,
    /// applied before the merges.
    pub story_leaves: Vec<StoryLeave>,
    /// Entries left out because retention pruned them (a tombstone says so).
    pub pruned: usize,
    /// New entries left for later polls: the poll had stored `dedup.max_new_items` already.
    pub over_quota: usize,
    /// The id of every entry of the poll, so that tombstones of items no longer in the
    /// source's feed can go.
    pub present: std::collections::HashSet<ItemId>,
}

#[derive(Debug)]
pub struct ItemWrite {
    pub item: Item,
    pub previous: Option<Item>,
    /// For a new item that joined another's story: how.
    pub link: Option<StoryLink>,
}

impl IngestPlan {
    pub fn new_items(&self) -> usize {
        self.writes.iter().filter(|w| w.previous.is_none()).count()
    }

    pub fn updated_items(&self) -> usize {
        self.writes.iter().filter(|w| w.previous.is_some()).count()
    }
}
