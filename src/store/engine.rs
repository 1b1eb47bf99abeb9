//! The storage boundary: what the pipeline, the publisher and the daemon's upkeep need from a
//! storage engine, one trait per concern. [`Engine`] is all of them; [`super::Store`] is a
//! handle on one engine and derefs to it, so callers name no engine.
//!
//! The contract every engine keeps, whatever it stores in:
//! - A poll's writes ([`Ingest::apply_poll`]) are durable when it returns, and a crash midway
//!   leaves at worst an index entry without its item, or at another time than its item's
//!   (readers skip both, and delete them: [`FeedIndex::current_item`]), never an item that
//!   no index lists.
//! - Ingestion is serialised by [`Ingest::ingest_guard`], held from reading the store for a
//!   poll's plan until the plan is written, so that two polls cannot both claim one story.
//! - Time-ordered reads (feeds, a source's items, every item) are newest first.
//! - An engine that failed in a way only reopening clears says so
//!   ([`super::StoreError::needs_reopen`]) and is brought back by [`Health::reopen`].
//!
//! Engines: `sled_engine` (embedded, the default).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, MutexGuard};

use chrono::{DateTime, Utc};

use super::{Copying, FeedMembership, StoreError, Stored};
use crate::dedup::fingerprint::TermStats;
use crate::dedup::record::{
    FingerprintRecord, IndexedFingerprint, IngestPlan, StoryLink, UrlClaim,
};
use crate::model::{Item, ItemId, SourceState};

/// Item ids, newest first, each read possibly failing.
pub type ItemIds<'a> = Box<dyn Iterator<Item = Result<ItemId, StoreError>> + 'a>;

/// An output feed's index entries, newest first, each read possibly failing.
pub type FeedEntries<'a> = Box<dyn Iterator<Item = Result<FeedEntry, StoreError>> + 'a>;

/// One entry of an output feed's index: an item at the time it was indexed under. A crash
/// midway through a poll can leave an entry whose time is not its item's `published` (the
/// item was stored again with another): only an entry whose time is the item's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedEntry {
    pub published: DateTime<Utc>,
    pub id: ItemId,
}

impl FeedEntry {
    /// Whether this entry is `item`'s own (same item, same time to the microsecond), not one
    /// left by an earlier, interrupted write of it.
    pub fn is_current_for(&self, item: &Item) -> bool {
        self.id == item.id && self.published.timestamp_micros() == item.published.timestamp_micros()
    }
}

/// Held from reading the store for a poll's plan until the plan is written
/// ([`Ingest::ingest_guard`]); derefs to the term statistics, which planning updates. An
/// engine that several processes share holds a lock of the database's beside, so that polls
/// of different instances are serialised as polls of one are.
pub struct IngestGuard<'a> {
    /// Dropped first: the database's lock goes before the process's, so that the next local
    /// holder never waits for a lock this one still holds.
    shared: Option<Box<dyn SharedLock + 'a>>,
    stats: MutexGuard<'a, TermStats>,
}

/// A lock an engine holds beside an [`IngestGuard`]'s, let go when dropped.
pub trait SharedLock {}

impl<'a> IngestGuard<'a> {
    /// A guard of this process only.
    pub fn local(stats: MutexGuard<'a, TermStats>) -> IngestGuard<'a> {
        IngestGuard {
            shared: None,
            stats,
        }
    }

    /// A guard that also holds `shared`, a lock of the engine's, until it is dropped.
    pub fn with_shared(
        stats: MutexGuard<'a, TermStats>,
        shared: Box<dyn SharedLock + 'a>,
    ) -> IngestGuard<'a> {
        IngestGuard {
            shared: Some(shared),
            stats,
        }
    }

    /// Whether it holds a lock of the engine's beside the process's.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }
}

impl std::ops::Deref for IngestGuard<'_> {
    type Target = TermStats;

    fn deref(&self) -> &TermStats {
        &self.stats
    }
}

impl std::ops::DerefMut for IngestGuard<'_> {
    fn deref_mut(&mut self) -> &mut TermStats {
        &mut self.stats
    }
}

/// The candidates of [`TextIndex::candidates`] from the items each key term found, in the
/// order met: each item once, with how many of the terms found it.
pub(super) fn tally_candidates(found: impl IntoIterator<Item = ItemId>) -> Vec<(ItemId, usize)> {
    let mut out: Vec<(ItemId, usize)> = Vec::new();
    for id in found {
        match out.iter_mut().find(|(c, _)| *c == id) {
            Some((_, shared)) => *shared += 1,
            None => out.push((id, 1)),
        }
    }
    out
}

/// Every concern of a storage engine.
pub trait Engine:
    Ingest + SourceStates + Items + TextIndex + FeedIndex + Retention + Health + Copying + Send + Sync
{
}

impl<T> Engine for T where
    T: Ingest
        + SourceStates
        + Items
        + TextIndex
        + FeedIndex
        + Retention
        + Health
        + Copying
        + Send
        + Sync
{
}

/// A change that another process sharing the store wrote ([`Ingest::watch_others`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChange {
    /// A poll of `source` wrote items; `stories_merged`: it merged stories (or took a report
    /// out of one), whose other members may be in any feed.
    Source {
        source: String,
        stories_merged: bool,
    },
    /// Items of any source changed (a prune), or changes may have gone unheard.
    Everything,
}

/// Writing a poll's plan, one poll at a time.
pub trait Ingest {
    /// Serialises ingestion: hold the guard from planning a poll's writes until they are
    /// applied. It holds the term statistics, which planning updates.
    fn ingest_guard(&self) -> IngestGuard<'_>;

    /// Writes one poll: the plan's items and claims, their feed memberships and the source's
    /// new state, durably. `feeds` names every output feed the source belongs to, so that an
    /// edited item leaves the feeds it no longer matches. Lets the guard go before the slow
    /// part (the flush), so polls of many sources flush side by side.
    fn apply_poll(
        &self,
        source: &str,
        plan: &IngestPlan,
        feeds: &[String],
        memberships: &[FeedMembership],
        state: &SourceState,
        term_stats: IngestGuard<'_>,
    ) -> Result<(), StoreError>;

    /// Calls `on_change`, from a thread of the engine's, with each change another process
    /// sharing the store writes, until the engine is dropped: so that every instance serves
    /// what any of them polled. An engine that only one process opens never calls it.
    fn watch_others(&self, on_change: Box<dyn Fn(StoreChange) + Send>);
}

/// Whether this process may poll a source now ([`SourceStates::claim_poll`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollClaim {
    /// Poll it: no other process is polling it, none polled it since this one last saw its
    /// state, and its host was not polled within the gap.
    Granted,
    /// Another process polled it since this one last saw its state: the stored state's next
    /// poll and last poll.
    PolledElsewhere {
        next: Option<DateTime<Utc>>,
        last_poll: Option<DateTime<Utc>>,
    },
    /// Another process is polling it, or its host was polled too recently: ask again then
    /// (by this process's clock).
    Busy { until: DateTime<Utc> },
}

/// The last poll of a source as this process last saw it in the stored state: what a claim
/// compares with the stored one to tell whether another process polled the source since,
/// whatever the clocks of the processes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeenPoll {
    /// This process has not read the source's state.
    Unknown,
    /// The stored state said this (`None`: never polled).
    Last(Option<DateTime<Utc>>),
}

/// Each source's polling state (validators, errors, counts, next due time).
pub trait SourceStates {
    /// The stored state of `source`, or a fresh one.
    fn source_state(&self, source: &str) -> Result<SourceState, StoreError>;

    /// Saves a source's state, for polls that store no items. It may reach the disk up to a
    /// second later (and at shutdown): a state lost in a crash only means that source is
    /// polled again. Its `item_count` is the stored one (such a poll adds no item), so that a
    /// state read before a prune never brings back a stale count.
    fn put_source_state(&self, source: &str, state: SourceState) -> Result<(), StoreError>;

    /// Every stored source state, by source (a source never polled has none): what
    /// [`SourceStates::source_state`] gives for each, in one read, for the pages and renders
    /// that show every source.
    fn source_states(&self) -> Result<HashMap<String, SourceState>, StoreError>;

    /// Whether other processes may share the store, so that polls must be claimed
    /// ([`SourceStates::claim_poll`]) and others' changes watched ([`Ingest::watch_others`]).
    fn is_shared(&self) -> bool;

    /// Claims the poll of `source` (on `host`, when it has one) for this process, which saw
    /// its last poll as `seen`, for at most `lease`: how processes sharing a store poll each
    /// source once per slot and keep `host_gap` between the starts of polls of one host.
    /// Leases and gaps are timed by the store's clock, so processes whose clocks disagree
    /// still take turns. A claim that runs out (its process died) is granted to the next
    /// that asks. An engine only one process opens grants every claim.
    fn claim_poll(
        &self,
        source: &str,
        host: Option<&str>,
        seen: SeenPoll,
        lease: std::time::Duration,
        host_gap: std::time::Duration,
    ) -> Result<PollClaim, StoreError>;

    /// Lets this process's claim on `source` go (its poll is written).
    fn release_poll(&self, source: &str) -> Result<(), StoreError>;
}

/// Reading items, URL claims and story groups.
pub trait Items {
    fn item(&self, id: ItemId) -> Result<Option<Item>, StoreError>;

    /// The stored version of an item against an entry's content hash: an unchanged item (the
    /// common case of a poll) is recognised without decoding it.
    fn stored_version(&self, id: ItemId, content_hash: u64) -> Result<Stored, StoreError>;

    /// [`Items::stored_version`] of each of `entries` (id, content hash), by id, every id
    /// there: a poll asks about all its entries at once, which an engine on a database server
    /// answers in one round trip rather than one each.
    fn stored_versions(
        &self,
        entries: &[(ItemId, u64)],
    ) -> Result<HashMap<ItemId, Stored>, StoreError> {
        entries
            .iter()
            .map(|&(id, hash)| Ok((id, self.stored_version(id, hash)?)))
            .collect()
    }

    /// Items stored (0 when the store cannot be read).
    fn item_count(&self) -> usize;

    /// Which item holds a canonical URL.
    fn url_claim(&self, canonical: &str) -> Result<Option<UrlClaim>, StoreError>;

    /// [`Items::url_claim`] of each of `urls` that an item holds, by URL, asked at once as
    /// [`Items::stored_versions`] is.
    fn url_claims(&self, urls: &[&str]) -> Result<HashMap<String, UrlClaim>, StoreError> {
        let mut claims = HashMap::new();
        for url in urls {
            if let Some(claim) = self.url_claim(url)? {
                claims.insert((*url).to_owned(), claim);
            }
        }
        Ok(claims)
    }

    /// When each item of `source` published at or after `since` was published, newest first,
    /// without decoding any item.
    fn source_item_times(
        &self,
        source: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<DateTime<Utc>>, StoreError>;

    /// The newest `limit` items of `source`, newest first.
    fn source_items(&self, source: &str, limit: usize) -> Result<Vec<Item>, StoreError>;

    /// Ids of every item, newest first.
    fn all_items(&self) -> ItemIds<'_>;

    /// The members of a story group with how each joined (`None` for the first).
    fn story_links(&self, story: ItemId) -> Result<Vec<(ItemId, Option<StoryLink>)>, StoreError>;

    /// The members of a story group, in no particular order.
    fn story_members(&self, story: ItemId) -> Result<Vec<ItemId>, StoreError>;
}

/// The near-duplicate text index: fingerprints and key terms of recently published items,
/// with the term statistics and the version of the way text is cut into terms. Its one owner
/// of upkeep (rebuild, meaning backfill, age) is [`crate::dedup::upkeep`].
pub trait TextIndex {
    /// Calls `visit` with the record of each item published within `window` of `published`,
    /// newest first, at most `limit` of them, from the recent index in memory only (items
    /// before its covered time, or all with `dedup.memory_items = 0`, are not visited). For
    /// looking by meaning, which has no index key to follow.
    fn visit_recent(
        &self,
        published: DateTime<Utc>,
        window: std::time::Duration,
        limit: usize,
        visit: &mut dyn FnMut(ItemId, &FingerprintRecord),
    ) -> Result<(), StoreError>;

    /// Items of sources other than `source` keyed by any of `terms`, published within
    /// `window` of `published`, each with how many of `terms` key it; at most `per_term` for
    /// each term, the latest first. A prolific source's own items are skipped, not taken, and
    /// the cost of a lookup does not grow with the store.
    fn candidates(
        &self,
        terms: &[u32],
        published: DateTime<Utc>,
        window: std::time::Duration,
        per_term: usize,
        source: &str,
    ) -> Result<Vec<(ItemId, usize)>, StoreError>;

    fn fingerprint(&self, id: ItemId) -> Result<Option<FingerprintRecord>, StoreError>;

    /// An item's fingerprint, shared with the recent index when it is there.
    fn shared_fingerprint(&self, id: ItemId) -> Result<Option<Arc<FingerprintRecord>>, StoreError>;

    /// Keeps at most `items` recently published items' dedup entries in memory (0: none,
    /// every lookup reads the store). The index refills on its next use.
    fn keep_recent_in_memory(&self, items: usize);

    /// The version of the way text is cut into terms ([`crate::dedup::fingerprint::TERMS_VERSION`])
    /// that the text index and term statistics were built with: 1 when none was recorded.
    fn terms_version(&self) -> Result<u32, StoreError>;

    /// The ids of the items whose text is indexed (those with a fingerprint).
    fn text_indexed_items(&self) -> Result<Vec<ItemId>, StoreError>;

    /// Replaces indexed items' fingerprints and key-term entries with re-derived ones (each
    /// [`IndexedFingerprint`] names the record it replaces). Part of
    /// [`crate::dedup::upkeep::upgrade_text_index`]; the caller holds the ingest guard.
    fn replace_fingerprints(&self, chunk: &[IndexedFingerprint]) -> Result<(), StoreError>;

    /// Ends a rebuild of the text index: keeps `stats` (in place of the guarded ones) and
    /// `version`, forgets the in-memory copy of the old index, and flushes.
    fn finish_text_index_rebuild(
        &self,
        guard: &mut IngestGuard<'_>,
        stats: TermStats,
        version: u32,
    ) -> Result<(), StoreError>;

    /// Drops the text index entries (key terms and fingerprint) of items published before
    /// `before`, so that they are matched by link only: oldest first, from where the last
    /// call stopped, in slices that each hold the ingest guard only briefly. Items published
    /// before `before` are not indexed by later polls either; a `before` earlier than the
    /// last one (a longer age) lets polls index from it again. Returns how many items'
    /// entries went.
    fn drop_text_index_before(&self, before: DateTime<Utc>) -> Result<usize, StoreError>;

    /// Makes the store look built by a version that cut text into terms another way.
    #[cfg(test)]
    fn forget_terms_version(&self) -> Result<(), StoreError>;
}

/// Each output feed's index of its items, and the fingerprint of the rules it was built with.
pub trait FeedIndex {
    /// The index entries of an output feed, newest first.
    fn feed_items(&self, feed: &str) -> FeedEntries<'_>;

    /// The entries in the index of output feed `feed` that come after the entry of an item
    /// published at `published` with id `id` (newest first, as [`FeedIndex::feed_items`]);
    /// the item itself need not be there any more.
    fn feed_items_after(&self, feed: &str, published: DateTime<Utc>, id: ItemId)
        -> FeedEntries<'_>;

    /// The item of `entry`, an entry of output feed `feed`'s index, when the entry is its own
    /// ([`FeedEntry::is_current_for`]). An entry left by an interrupted write (its item gone,
    /// or stored again at another time) gives `None` and is deleted, unless a poll is being
    /// written at that moment (the reader never waits for one; the entry is met again later).
    fn current_item(&self, feed: &str, entry: FeedEntry) -> Result<Option<Item>, StoreError>;

    /// The newest `n` entries of `source` in the index of output feed `feed`, newest first;
    /// entries left by an interrupted write (see [`FeedEntry`]) are not counted. Costs the
    /// fewer of the source's items and the feed's entries down to the `n`th found.
    fn newest_of_source(
        &self,
        feed: &str,
        source: &str,
        n: usize,
    ) -> Result<Vec<FeedEntry>, StoreError>;

    /// Whether `item` is in the index of output feed `feed`.
    fn feed_contains(&self, feed: &str, item: &Item) -> Result<bool, StoreError>;

    /// The fingerprint of the selection rules the feed's index was built with.
    fn feed_fingerprint(&self, feed: &str) -> Result<Option<String>, StoreError>;

    /// Rebuilds a feed's index from every stored item for which `selects` is true, and records
    /// the fingerprint of the rules used. Returns the number of items indexed. Engines write
    /// it in slices (memory stays bounded at any size) and record the fingerprint last: until
    /// then the feed's fingerprint matches no rules, so an index left part way by a crash is
    /// rebuilt (or dropped) by the next sync, never taken as complete.
    fn rebuild_feed_index(
        &self,
        feed: &str,
        fingerprint: &str,
        selects: &dyn Fn(&Item) -> bool,
    ) -> Result<usize, StoreError>;

    /// Removes a feed's index and fingerprint (the feed left the config).
    fn drop_feed_index(&self, feed: &str) -> Result<(), StoreError>;

    /// Names of the feeds that have an index.
    fn indexed_feeds(&self) -> Result<Vec<String>, StoreError>;
}

/// Retention: deleting old items and per-source quotas, with tombstones so that a pruned item
/// the source still lists is not ingested again.
pub trait Retention {
    /// Whether retention pruned item `id` of `source`.
    fn is_pruned(&self, source: &str, id: ItemId) -> Result<bool, StoreError>;

    /// Which of `ids` of `source` retention pruned, asked at once as
    /// [`Items::stored_versions`] is.
    fn pruned_among(&self, source: &str, ids: &[ItemId]) -> Result<HashSet<ItemId>, StoreError> {
        let mut pruned = HashSet::new();
        for &id in ids {
            if self.is_pruned(source, id)? {
                pruned.insert(id);
            }
        }
        Ok(pruned)
    }

    /// Tombstones held, over all sources.
    fn tombstone_count(&self) -> usize;

    /// Deletes the items published before `cutoff` and those beyond the newest `max_items`,
    /// with everything that refers to them (indexes, feed memberships, story membership,
    /// URL claims they hold, text index entries), leaves a tombstone for each, sets the
    /// affected sources' counts, and flushes. Serialised with ingestion. Returns how many
    /// items each source lost.
    fn prune(
        &self,
        cutoff: Option<DateTime<Utc>>,
        max_items: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, u64>, StoreError>;

    /// Deletes the items of `source` beyond its newest `keep`, as [`Retention::prune`]
    /// deletes, and flushes when it deleted any: a source's quota, so that a source which
    /// floods the store loses its own oldest items, never other sources'. Serialised with
    /// ingestion. Returns how many items went.
    fn prune_source(&self, source: &str, keep: u64, now: DateTime<Utc>) -> Result<u64, StoreError>;
}

/// Durability, recovery and the engine's own upkeep.
pub trait Health {
    /// Where the store lives (for messages).
    fn path(&self) -> &Path;

    /// Writes everything out, the term statistics included.
    fn flush(&self) -> Result<(), StoreError>;

    /// Brings back an engine that failed in a way only reopening clears (see
    /// [`StoreError::needs_reopen`]): until it succeeds every call answers
    /// [`StoreError::Closed`]. What was not durable is lost, as in a crash.
    fn reopen(&self) -> Result<(), StoreError>;

    /// Runs the engine's periodic checkpoint when one is due (keeps the next start quick);
    /// returns whether it ran.
    fn checkpoint_if_due(&self) -> Result<bool, StoreError>;

    /// Whether [`Health::checkpoint_if_due`] would run now (a cheap check, for callers that
    /// run it on another thread).
    fn checkpoint_is_due(&self) -> bool;

    /// Whether some item records are still in an older format, for
    /// [`Health::compress_items`] to rewrite.
    fn items_to_compress(&self) -> Result<bool, StoreError>;

    /// Rewrites every item record still in an older format, in flushed batches, so that an
    /// upgrade stopped midway goes on next time. `progress(records looked at, of)` is called
    /// before each batch. Holds the ingest guard. Returns how many it rewrote.
    fn compress_items(&self, progress: &mut dyn FnMut(usize, usize)) -> Result<usize, StoreError>;

    /// Bytes the store occupies on disk.
    fn size_on_disk(&self) -> u64;

    /// How many records each part of the store holds, by name (for tests and diagnostics).
    fn record_counts(&self) -> Vec<(&'static str, usize)>;
}
