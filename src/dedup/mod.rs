//! Deduplication: item identity, canonical URLs, and story groups by URL and by similar text.
//!
//! * The same GUID from the same source is one item (its id is a hash of both); when its text
//!   changes it is updated in place, never stored twice. Items of one source with different
//!   GUIDs stay different items even when they share a link.
//! * The same canonical URL from different sources is one story: the later item joins the
//!   story group of the first. A URL that several items of one source share (a home page or
//!   section link) identifies nothing and is marked ambiguous.
//! * Items of different sources whose text is similar enough (see [`fingerprint`]) and that
//!   were published within `dedup.window` of each other are one story too; candidates are
//!   the items that share one of the new item's rarest terms (the store's key-term index),
//!   never a scan. Term rarity comes from [`TermStats`], which planning keeps up to date
//!   (a poll's new items are all counted before any is compared).
//! * A new item that is one story with items of several stories joins the strongest match's
//!   and merges the others into it ([`StoryMerge`]), so the groups do not depend on the order
//!   of polls; never so that a story would hold two items of one source. A new report closer
//!   to a story than the report of its own source stored there takes that one's place
//!   ([`StoryLeave`]), so which of the two came first does not decide.
//!
//! [`plan`] reads the store and returns the writes for one poll as an [`IngestPlan`]; it never
//! writes. Applying the plan is the store's job.
//!
//! Here: the settings ([`DedupConfig`]) and re-deriving fingerprints; beside it `identity`
//! (item ids, GUIDs), `canonical` (links and content hashes), `plan` (a poll's plan), `judge`
//! (whether two items' texts make them one story), `record` (what the store keeps),
//! `fingerprint` and `numbers` (text), `meaning` (the sentence model), `explain` (`stories`,
//! `why`) and `upkeep` (the text index over time).

pub mod explain;
pub mod fingerprint;
pub mod identity;
pub mod meaning;
mod numbers;
pub mod record;
pub mod upkeep;

mod canonical;
mod judge;
mod known;
mod plan;
pub use canonical::{canonical_url, content_hash};
pub use judge::{judge, Judgement, Side};
pub(crate) use plan::item_meaning;
pub use plan::{best_match, matches, meanings_to_add, plan, plan_prepared, prepare, Prepared};

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use url::Url;

use crate::model::{Entry, Item, ItemId};
use crate::store::{Store, StoreError, Stored};
use crate::text::html_to_text;
use fingerprint::{Fingerprint, Similarity, TermStats, TextVerdict};
pub use identity::{guid_of, guids, item_id};
use meaning::{Meaning, MeaningModel};
pub use record::{
    FingerprintRecord, IndexedFingerprint, IngestPlan, ItemWrite, MergeKind, StoryLeave, StoryLink,
    StoryMerge, UrlClaim, DEFAULT_MEMORY_ITEMS, DEFAULT_WINDOW,
};

/// The settings of `[dedup]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DedupConfig {
    /// Whether items of different sources with similar text are merged (same-URL merging is
    /// always on).
    pub enabled: bool,
    /// The similarity score at or above which two items are one story.
    pub threshold: f32,
    /// Only items published at most this far apart can merge.
    pub window: std::time::Duration,
    /// Recently published items whose dedup entries are kept in memory at most.
    pub memory_items: usize,
    /// Items published longer ago than this are matched by link only: their text is not
    /// indexed, and the index entries of items that reach this age are dropped.
    pub index_age: std::time::Duration,
    /// The sentence model (`dedup.model`), if one is configured.
    pub model: Option<MeaningModel>,
    /// The cosine of two items' meanings at or above which they are one story (unless their
    /// titles disagree on a number).
    pub meaning_threshold: f32,
    /// New items one poll may add (`[poll] max_new_items`): the feed's other new entries are
    /// left for later polls (`IngestPlan::over_quota`).
    pub max_new_items: usize,
}

/// Default `dedup.threshold`, tuned on tests/fixtures/stories.
pub const DEFAULT_THRESHOLD: f32 = 0.50;
/// Default `dedup.meaning_threshold`, tuned on tests/fixtures/stories with e5-small.
pub const DEFAULT_MEANING_THRESHOLD: f32 = 0.9675;
/// Default `dedup.index_age`: 30 days.
pub const DEFAULT_INDEX_AGE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);
/// Items read for one key term when looking for candidates.
const CANDIDATES_PER_TERM: usize = 16;
/// Candidates scored for a new item at most (those sharing most key terms).
const MAX_CANDIDATES: usize = 32;
/// Recent items of the window whose meanings a new item's is compared with, at most (newest
/// first): about 4 ms when all are scanned.
const MEANING_SCAN: usize = 20_000;
/// Candidates found by meaning alone that are scored, at most (the closest).
const MEANING_CANDIDATES: usize = 8;

impl DedupConfig {
    /// The publication time before which items are not in the text index at `now`.
    pub fn index_from(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        chrono::Duration::from_std(self.index_age)
            .ok()
            .and_then(|age| now.checked_sub_signed(age))
    }
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            enabled: true,
            threshold: DEFAULT_THRESHOLD,
            window: DEFAULT_WINDOW,
            memory_items: DEFAULT_MEMORY_ITEMS,
            index_age: DEFAULT_INDEX_AGE,
            model: None,
            meaning_threshold: DEFAULT_MEANING_THRESHOLD,
            max_new_items: crate::config::DEFAULT_MAX_NEW_ITEMS,
        }
    }
}

/// The plain text an item's fingerprint is made of, besides its title.
pub fn body_text(summary_html: Option<&str>, content_html: Option<&str>) -> String {
    summary_html
        .or(content_html)
        .map(html_to_text)
        .unwrap_or_default()
}

/// The fingerprint of a stored item, replacing the stored one (whose index keys go). Its
/// terms are not counted again in the statistics, and its story does not change. Its meaning
/// is the stored one: the caller sets a new one when the text changed.
fn refingerprint(store: &Store, item: &Item, stats: &TermStats) -> IndexedFingerprint {
    let mut indexed = reindexed(store, item, every_term_of(item), stats);
    indexed.record.fingerprint.meaning = indexed
        .replaces
        .as_ref()
        .and_then(|r| r.fingerprint.meaning.clone());
    indexed
}

/// The index record of a stored item whose fingerprint with every term and meaning is
/// `fingerprint`, replacing the stored one.
fn reindexed(
    store: &Store,
    item: &Item,
    mut fingerprint: Fingerprint,
    stats: &TermStats,
) -> IndexedFingerprint {
    let replaces = store.fingerprint(item.id).ok().flatten();
    fingerprint.keep_strongest(stats);
    let keys = fingerprint.key_terms(stats);
    IndexedFingerprint {
        id: item.id,
        record: FingerprintRecord {
            source: item.source.clone(),
            published: item.published,
            fingerprint,
            keys,
        },
        // Unreadable or missing: nothing to remove.
        replaces,
    }
}

/// The fingerprint of a stored item, as indexing it would compute it.
pub(crate) fn item_fingerprint(item: &Item, stats: &TermStats) -> Fingerprint {
    let mut fingerprint = every_term_of(item);
    fingerprint.keep_strongest(stats);
    fingerprint
}

/// A stored item's fingerprint with every term (before [`Fingerprint::keep_strongest`]).
fn every_term_of(item: &Item) -> Fingerprint {
    Fingerprint::new(
        &item.title,
        &body_text(item.summary_html.as_deref(), item.content_html.as_deref()),
    )
}

/// Counts `items` (indexed items of the store) into `stats`, for re-deriving the text index
/// after the way text is cut into terms changed ([`fingerprint::TERMS_VERSION`]).
pub fn count_terms(
    store: &Store,
    items: &[ItemId],
    stats: &mut TermStats,
) -> Result<(), StoreError> {
    for id in items {
        if let Some(item) = store.item(*id)? {
            stats.add(&every_term_of(&item));
        }
    }
    Ok(())
}

/// The fingerprints and index keys of `items` derived anew under `stats`, each naming the
/// record it replaces; items no longer stored are left out.
pub fn rederive_fingerprints(
    store: &Store,
    items: &[ItemId],
    stats: &TermStats,
) -> Result<Vec<IndexedFingerprint>, StoreError> {
    let mut out = Vec::with_capacity(items.len());
    for id in items {
        if let Some(item) = store.item(*id)? {
            out.push(refingerprint(store, &item, stats));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod record_tests {
    use super::*;

    fn sample_record() -> FingerprintRecord {
        FingerprintRecord {
            source: "qbitai".into(),
            published: DateTime::<Utc>::from_timestamp_micros(1_790_000_000_123_456).unwrap(),
            fingerprint: Fingerprint::new("智谱发布 GLM-6 大模型", "智谱今天发布 GLM-6。"),
            keys: vec![7, 0xDEAD_BEEF],
        }
    }

    #[test]
    fn fingerprint_records_round_trip_and_reject_garbage() {
        let record = sample_record();
        let bytes = record.to_bytes();
        assert!(bytes.len() < 200, "{} bytes", bytes.len());
        assert_eq!(FingerprintRecord::from_bytes(&bytes), Some(record.clone()));
        assert_eq!(
            FingerprintRecord::from_bytes(&bytes[..bytes.len() - 1]),
            None
        );
        assert_eq!(FingerprintRecord::from_bytes(b"{\"json\": 1}"), None);

        // With a meaning: its model's tag and bytes come back; cut short, the record is refused.
        let mut with = record.clone();
        with.fingerprint.meaning = Some(Meaning {
            model: 0xABCD_0123,
            values: (0..384).map(|i| ((i % 255) - 127) as i8).collect(),
        });
        let bytes = with.to_bytes();
        assert_eq!(FingerprintRecord::from_bytes(&bytes), Some(with));
        assert_eq!(
            FingerprintRecord::from_bytes(&bytes[..bytes.len() - 1]),
            None
        );
    }

    #[test]
    fn records_of_version_2_still_read_without_a_meaning() {
        let record = sample_record();
        // Version 2 is version 3 without the meaning's length at the end.
        let mut v2 = record.to_bytes();
        v2[0] = 2;
        v2.truncate(v2.len() - 2);
        assert_eq!(FingerprintRecord::from_bytes(&v2), Some(record));
    }

    #[test]
    fn records_of_the_first_version_still_read_and_never_match() {
        // version 1: time, source, title hashes (u16 count), body MinHash, numbers.
        let mut v1 = vec![1u8];
        v1.extend_from_slice(&1_790_000_000_000_000i64.to_le_bytes());
        v1.extend_from_slice(&[2, b'q', b'b']);
        v1.extend_from_slice(&1u16.to_le_bytes());
        v1.extend_from_slice(&7u32.to_le_bytes());
        v1.extend_from_slice(&[1, 9, 9, 0]);
        let record = FingerprintRecord::from_bytes(&v1).expect("a version 1 record");
        assert_eq!(record.source, "qb");
        assert_eq!(record.fingerprint.title, vec![7]);
        assert!(record.fingerprint.terms.is_empty());
        let stats = fingerprint::TermStats::default();
        let other = Fingerprint::new("anything", "");
        assert_eq!(record.fingerprint.similarity(&other, &stats).score, 0.0);
    }
}
