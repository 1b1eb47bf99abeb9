//! Copying a whole store from one engine into another (`feedmux copy-store`): the
//! engine-neutral [`Record`]s an engine holds, the [`Copying`] pair of the engine boundary
//! (an engine exports its records, another imports them), and [`Store::copy_into`], which
//! streams one into the other in batches, so that memory stays flat whatever the size.
//!
//! Only what an engine needs to answer every call as the other did is copied: each engine
//! derives its own indexes (time and source order, key terms, an entry's source) from these
//! records, and keeps its own bookkeeping (sled's dictionaries and write mark, a database's
//! schema version).

use chrono::{DateTime, Utc};

use super::{FeedEntry, Store, StoreError};
use crate::dedup::fingerprint::TermStats;
use crate::dedup::record::{FingerprintRecord, StoryLink, UrlClaim};
use crate::model::{Item, ItemId, SourceState};

/// Records handed to [`Copying::import`] at once: one transaction each.
pub const COPY_BATCH: usize = 1000;

/// One record of a store, as every engine understands it. An export gives every [`Record::Item`]
/// before any [`Record::FeedEntry`], so that an importer can take an entry's source from its
/// item.
#[derive(Debug, Clone)]
pub enum Record {
    /// An item, its story included.
    Item(Box<Item>),
    /// A member of a story group and how it joined (`None` for the first).
    StoryMember {
        story: ItemId,
        member: ItemId,
        link: Option<StoryLink>,
    },
    /// Which item holds a canonical URL, keyed by the first 16 bytes of the URL's SHA-256.
    UrlClaim { url_hash: [u8; 16], claim: UrlClaim },
    /// An item's entry in the near-duplicate text index (its key terms are in it).
    Fingerprint {
        id: ItemId,
        record: Box<FingerprintRecord>,
    },
    /// An entry of an output feed's index.
    FeedEntry { feed: String, entry: FeedEntry },
    /// The fingerprint of the rules an output feed's index was built with.
    FeedRules { feed: String, fingerprint: String },
    /// A source's polling state, its item count included.
    SourceState {
        source: String,
        state: Box<SourceState>,
    },
    /// An item retention pruned, and when.
    Tombstone {
        source: String,
        id: ItemId,
        pruned: DateTime<Utc>,
    },
    /// The term statistics that weigh terms for near-duplicate matching.
    TermStats(Box<TermStats>),
    /// The version of the way text is cut into terms the text index was built with.
    TermsVersion(u32),
    /// No item published before this has text index entries.
    TextIndexFrom(DateTime<Utc>),
}

/// The kinds of [`Record`], for counting them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Item,
    StoryMember,
    UrlClaim,
    Fingerprint,
    FeedEntry,
    FeedRules,
    SourceState,
    Tombstone,
    Meta,
}

impl RecordKind {
    /// Every kind, in the order summaries list them.
    pub const ALL: [RecordKind; 9] = [
        RecordKind::Item,
        RecordKind::StoryMember,
        RecordKind::UrlClaim,
        RecordKind::Fingerprint,
        RecordKind::FeedEntry,
        RecordKind::FeedRules,
        RecordKind::SourceState,
        RecordKind::Tombstone,
        RecordKind::Meta,
    ];

    /// What a summary calls records of this kind.
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Item => "items",
            RecordKind::StoryMember => "story members",
            RecordKind::UrlClaim => "url claims",
            RecordKind::Fingerprint => "fingerprints",
            RecordKind::FeedEntry => "feed entries",
            RecordKind::FeedRules => "feed rules",
            RecordKind::SourceState => "source states",
            RecordKind::Tombstone => "tombstones",
            RecordKind::Meta => "meta",
        }
    }
}

impl Record {
    pub fn kind(&self) -> RecordKind {
        match self {
            Record::Item(_) => RecordKind::Item,
            Record::StoryMember { .. } => RecordKind::StoryMember,
            Record::UrlClaim { .. } => RecordKind::UrlClaim,
            Record::Fingerprint { .. } => RecordKind::Fingerprint,
            Record::FeedEntry { .. } => RecordKind::FeedEntry,
            Record::FeedRules { .. } => RecordKind::FeedRules,
            Record::SourceState { .. } => RecordKind::SourceState,
            Record::Tombstone { .. } => RecordKind::Tombstone,
            Record::TermStats(_) | Record::TermsVersion(_) | Record::TextIndexFrom(_) => {
                RecordKind::Meta
            }
        }
    }
}

/// Records copied so far, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Copied {
    counts: [usize; RecordKind::ALL.len()],
}

impl Copied {
    /// Records of `kind` copied.
    pub fn count(&self, kind: RecordKind) -> usize {
        self.counts[kind as usize]
    }

    /// Records copied, of every kind.
    pub fn total(&self) -> usize {
        self.counts.iter().sum()
    }

    /// Each kind with its count, in [`RecordKind::ALL`]'s order.
    pub fn by_kind(&self) -> impl Iterator<Item = (RecordKind, usize)> + '_ {
        RecordKind::ALL
            .iter()
            .map(|kind| (*kind, self.count(*kind)))
    }

    fn add(&mut self, batch: &[Record]) {
        for record in batch {
            self.counts[record.kind() as usize] += 1;
        }
    }
}

/// Moving a store's records from one engine to another.
pub trait Copying {
    /// Calls `into` with every record the engine holds, one at a time, every
    /// [`Record::Item`] before any [`Record::FeedEntry`]; stops at the first error `into`
    /// returns.
    fn export(
        &self,
        into: &mut dyn FnMut(Record) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// Writes `records` (a batch of an export, in its order) in one transaction.
    fn import(&self, records: Vec<Record>) -> Result<(), StoreError>;
}

impl Store {
    /// Copies every record of this store into `target`, which must hold nothing yet (a new,
    /// empty database): batches of [`COPY_BATCH`] records, one transaction each, `progress`
    /// told after each. Returns how many records of each kind went.
    pub fn copy_into(
        &self,
        target: &Store,
        progress: &mut dyn FnMut(&Copied),
    ) -> Result<Copied, StoreError> {
        target.check_empty_for_copy()?;
        let mut copied = Copied::default();
        let mut batch = Vec::with_capacity(COPY_BATCH);
        let mut send = |batch: &mut Vec<Record>, copied: &mut Copied| {
            let full = std::mem::replace(batch, Vec::with_capacity(COPY_BATCH));
            copied.add(&full);
            target.import(full)?;
            progress(copied);
            Ok::<(), StoreError>(())
        };
        self.export(&mut |record| {
            batch.push(record);
            if batch.len() >= COPY_BATCH {
                send(&mut batch, &mut copied)?;
            }
            Ok(())
        })?;
        if !batch.is_empty() {
            send(&mut batch, &mut copied)?;
        }
        target.flush()?;
        Ok(copied)
    }

    /// Refuses, as [`Store::copy_into`] does, a target that holds any record or cannot
    /// say what it holds: only a new, empty database can take a copy.
    pub fn check_empty_for_copy(&self) -> Result<(), StoreError> {
        let shown = self.path().display().to_string();
        let counts = self.record_counts();
        if counts.is_empty() {
            return Err(StoreError::CannotCopy {
                reason: format!("cannot count the records {shown} holds"),
            });
        }
        let items = counts
            .iter()
            .find(|(name, _)| *name == "items")
            .map_or(0, |(_, n)| *n);
        let others = counts.iter().map(|(_, n)| n).sum::<usize>() - items;
        if items > 0 || others > 0 {
            return Err(StoreError::CannotCopy {
                reason: format!(
                    "{shown} already holds {items} items and {others} other records; copy only into a new, empty database"
                ),
            });
        }
        Ok(())
    }
}
