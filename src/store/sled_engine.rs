//! The embedded engine: the store in sled trees, their keys and encodings, one batch per
//! poll, flush. Implements every trait of [`super::Engine`]; nothing outside `store` sees it.
//!
//! Trees (keys big-endian so that sled's ordered iteration is newest first):
//!
//! | tree | key | value |
//! | --- | --- | --- |
//! | `items` | item id (16 bytes) | the item's content hash and where its record lies in the record log (`record_log`; the record, [`Item`] as JSON compressed with the store's dictionary once it has one, is in `item_record`'s format 2 or 3; before version 4 the value was the record itself) |
//! | `by_time` | reverse time (8) + id | empty |
//! | `by_source` | source name, 0, reverse time, id | empty |
//! | `feed_index` | feed name, 0, reverse time, id | empty |
//! | `urls` | hash of canonical URL (16) | [`UrlClaim`]: tag, flags, item id, source (`item_record`; JSON before format 3) |
//! | `stories` | story id (16) + member id (16) | how the member joined ([`StoryLink`] as JSON), or empty for the first |
//! | `fingerprints` | item id | [`FingerprintRecord`] in its compact binary form |
//! | `sources` | source name | [`SourceState`] as JSON |
//! | `tombstones` | source name, 0, item id | when retention pruned it (8 bytes, microseconds) |
//! | `meta` | text key | schema version, feed fingerprints, term statistics and the terms version they were built with, text index cursor, count of polls written, item dictionaries, bytes of dead records in the record log |
//!
//! Item records live outside sled, in the record log (`records/` in the store's directory,
//! `record_log`): sled rewrote them several times over as it rewrote the leaves they sat in.
//! The log is synced before every flush of sled, so a durable locator never points to a lost
//! record; its garbage collection (`prune`) removes segments whose records all died.
//!
//! `fingerprints` (the text index) holds only items published since the text index cursor, which
//! [`TextIndex::drop_text_index_before`] moves (`dedup.index_age`).
//!
//! The key terms of every fingerprint are indexed in memory only (`text_index::postings`, built
//! from the fingerprints on the first lookup): as a sled tree of six keys per item they took a
//! fifth of the files and of sled's page table. The fingerprints of recently published items
//! are also kept in memory (`text_index::recent`), so that near-duplicate lookups, nearly all
//! about the last few days, do not read sled.
//!
//! One file per concern, each implementing its trait: `write` ([`Ingest`]), `states`
//! ([`SourceStates`]), `items` ([`Items`]), `text_index` ([`TextIndex`], with `postings` and `recent` in
//! memory), `feed_index` ([`FeedIndex`]), `prune` ([`Retention`]), `health` ([`Health`]:
//! failed writes, reopening, flushes, checkpoints, the item format upgrade); beside them
//! `keys` (the key layouts), `item_record`, `record_log` (the files of item records), `mark` (the write mark), `export` ([`super::Copying`])
//! and `compact`. Opening and the schema stay here.
//!
//! Beside sled's files, `feedmux.mark` holds the count of polls written that the last flush
//! made durable; a store whose log holds fewer is refused at open (a log cut short).
//!
//! A poll's writes go in index-first order and are flushed before the poll counts as done, so a
//! crash leaves at worst an index entry without its item (readers skip those, and the store
//! deletes them: `FeedIndex::current_item`), never an item
//! that no index lists.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::dedup::fingerprint::TermStats;
use crate::dedup::record::{
    FingerprintRecord, IndexedFingerprint, IngestPlan, StoryLeave, StoryLink, StoryMerge, UrlClaim,
};
use crate::model::{Item, ItemId, SourceState};

use super::engine::*;
use super::{FeedMembership, StoreError, Stored};

mod compact;
mod export;
mod feed_index;
mod health;
mod item_record;
mod items;
mod keys;
mod mark;
mod prune;
mod record_log;
mod states;
mod text_index;
mod write;
pub(super) use compact::compact;
use keys::*;
use mark::{check_write_mark, write_mark};
use text_index::recent::RecentIndex;
use text_index::text_index_writes;

/// The layout version this build reads and writes. 2: item records compressed
/// (`item_record`); a version-1 store is read as it is and its items rewritten once. 3: no
/// `key_terms` tree (key terms are indexed in memory, from the fingerprints); a version-2
/// store's tree is dropped at open. 4: item records in the record log (`record_log`), the
/// `items` tree holding where; a version-3 store's records are moved there once at start.
pub const SCHEMA_VERSION: u32 = 4;
const SCHEMA_KEY: &[u8] = b"schema_version";
/// In `meta`: [`ITEM_FORMAT_IN_LOG`] once every item record is in the record log (2: every
/// record compressed, in sled; absent: some may be JSON still).
const ITEM_FORMAT_KEY: &[u8] = b"item_format";
/// The [`ITEM_FORMAT_KEY`] of a store whose records are all in the record log.
const ITEM_FORMAT_IN_LOG: u8 = 4;
/// Item records rewritten per batch by [`SledEngine::compress_items`].
const COMPRESS_SLICE: usize = 1024;
const FINGERPRINT_PREFIX: &str = "feed_fingerprint/";
const TERM_STATS_KEY: &[u8] = b"term_stats";
/// Where [`SledEngine::drop_text_index_before`] records how far it got (microseconds, big-endian).
const TEXT_INDEX_FROM_KEY: &[u8] = b"text_index_from";
/// In `meta`: how many polls wrote items into the store (big-endian), against which
/// [`WRITE_MARK_FILE`] is checked at every open.
const POLLS_WRITTEN_KEY: &[u8] = b"polls_written";
/// In `meta`: the id of the dictionary new item records are compressed with (4 bytes).
const ITEM_DICTIONARY_KEY: &[u8] = b"item_dictionary";
/// In `meta`: how many items the store held when its current dictionary was trained (8 bytes).
const ITEM_DICTIONARY_ITEMS_KEY: &[u8] = b"item_dictionary_items";
/// In `meta`, followed by a dictionary's id: the dictionary (every one the store used).
const ITEM_DICTIONARY_PREFIX: &[u8] = b"item_dictionary/";
/// In `meta`: bytes of records that died in the record log since its last garbage collection
/// (big-endian), so that a daemon restarted more often than a quarter of its records die
/// still collects them.
const RECORDS_DEAD_KEY: &[u8] = b"records_dead";
/// Beside sled's files: the count of polls written that the last flush made durable.
const WRITE_MARK_FILE: &str = "feedmux.mark";
/// The version of the way text is cut into terms that the text index was built with.
const TERMS_VERSION_KEY: &[u8] = b"terms_version";
/// Items whose text index entries one slice of [`SledEngine::drop_text_index_before`] drops at
/// most, holding the ingest guard.
const TEXT_INDEX_SLICE: usize = 1024;
/// How stale a state-only write may get before a flush (see [`SledEngine::put_source_state`]).
const LAZY_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);
/// Term statistics are written at most this often while ingesting (and at every flush): a
/// crash loses at most this much of them, which only shifts term weights a little.
const TERM_STATS_SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// How long `open` waits for a store that is being released: 20 × 50 ms.
const LOCK_RETRIES: u32 = 20;
/// What [`SledEngine::reopen`] first writes to check that the disk has room again (sled starts new
/// segments of 512 KiB when it opens).
const ROOM_PROBE_BYTES: usize = 2 * 1024 * 1024;
/// Item bytes written after which [`SledEngine::checkpoint_if_due`] reopens the database.
const CHECKPOINT_AFTER_BYTES: u64 = 256 * 1024 * 1024;
/// sled's cache when `[storage] cache_size` does not say. Measured (`feedmux poll` of 50
/// sources x 1,000 items, benches/store.rs): 64 MiB peaks at 212 MiB resident in 20 s,
/// 32 MiB at 175 MiB in 22 s, 16 MiB at 158 MiB in 25 s, 8 MiB at 148 MiB in 28 s.
pub const DEFAULT_CACHE_BYTES: u64 = 32 * 1024 * 1024;
/// Items written per sled batch.
const WRITE_CHUNK: usize = 32;
/// Records the record log's garbage collection moves between two syncs of the log.
const MOVE_CHUNK: usize = 1024;
/// Chunks written between flushes of a large poll (sled keeps dirty pages until a flush).
const FLUSH_EVERY_CHUNKS: usize = 32;
const LOCK_RETRY_DELAY: std::time::Duration = std::time::Duration::from_millis(50);

/// The open sled database and its trees; replaced as a whole by [`Health::reopen`].
struct Trees {
    db: sled::Db,
    items: sled::Tree,
    by_time: sled::Tree,
    by_source: sled::Tree,
    feed_index: sled::Tree,
    urls: sled::Tree,
    stories: sled::Tree,
    fingerprints: sled::Tree,
    sources: sled::Tree,
    tombstones: sled::Tree,
    meta: sled::Tree,
    /// The item records (`record_log`).
    records: record_log::RecordLog,
    /// Bytes of the record log's records that died since its last garbage collection, as
    /// far as the store saw them die (see `prune`; kept in `meta` at each flush).
    records_dead: std::sync::atomic::AtomicU64,
    /// The [`Trees::records_dead`] that `meta` holds.
    records_dead_saved: std::sync::atomic::AtomicU64,
    /// Held by the record log's garbage collection, which runs beside polls: one at a time.
    collecting: Mutex<()>,
    /// Bytes of items written since the database was opened (see [`SledEngine::checkpoint_if_due`]).
    written: std::sync::atomic::AtomicU64,
    /// The source states read or written through this database, kept in memory: every poll
    /// reads its source's state and writes it back, and decoding it from sled each time was
    /// a third of a 304 poll's cost. Only sources with a stored state are kept.
    states: Mutex<HashMap<String, SourceState>>,
    /// One lock per source, held while its state is written, so that two writes of one
    /// source's state never interleave while writes of different sources run side by side
    /// (a sled insert under one lock for all made concurrent polls wait for each other).
    state_writers: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// No item published before this (microseconds) has text index entries (key terms,
    /// fingerprint): [`SledEngine::drop_text_index_before`] moves it forward, and a poll does not
    /// index an item older than it.
    text_index_from: std::sync::atomic::AtomicI64,
    /// Polls that wrote items, as counted in `meta` ([`POLLS_WRITTEN_KEY`]); raised only after
    /// the count is inserted, so a flush that reads it flushes that insert too.
    polls_written: std::sync::atomic::AtomicU64,
    /// The count [`WRITE_MARK_FILE`] holds: written after each flush that made a higher one
    /// durable.
    marked: Mutex<u64>,
    /// The store's directory, where the mark file lives.
    path: PathBuf,
    /// The dictionary new item records are compressed with (`item_record`), once trained.
    item_dictionary: RwLock<Option<u32>>,
    /// How many items the store held when its current dictionary was trained.
    dictionary_items: std::sync::atomic::AtomicUsize,
    /// Polls that wrote items between two looks at whether a new dictionary is due
    /// (`item_record::RETRAIN_CHECK_EVERY`; tests look at every poll).
    dictionary_check_every: std::sync::atomic::AtomicU64,
    /// The count of polls that wrote items at which the next look is due (set under
    /// `training`): polls finish on several threads at once, so a look at every exact
    /// multiple could be passed over.
    dictionary_next_check: std::sync::atomic::AtomicU64,
    /// Held while the dictionary is trained, so that two polls do not both train one; holds
    /// the item count of the last failed try (the next waits until the store doubled).
    training: Mutex<usize>,
}

impl Trees {
    /// The dictionary new item records are compressed with, if the store has one.
    fn dictionary(&self) -> Option<u32> {
        *self
            .item_dictionary
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Flushes the database, then records in [`WRITE_MARK_FILE`] how many polls are on disk.
    fn flush(&self) -> Result<(), StoreError> {
        let written = self
            .polls_written
            .load(std::sync::atomic::Ordering::Acquire);
        use std::sync::atomic::Ordering;
        let dead = self.records_dead.load(Ordering::Relaxed);
        if self.records_dead_saved.swap(dead, Ordering::Relaxed) != dead {
            self.meta.insert(RECORDS_DEAD_KEY, &dead.to_be_bytes())?;
        }
        // Records first: sled's flush makes their locators durable.
        self.records.sync().map_err(|e| self.records_error(e))?;
        self.db.flush()?;
        let mut marked = self.marked.lock().unwrap_or_else(|p| p.into_inner());
        if written > *marked {
            match write_mark(&self.path, written) {
                Ok(()) => *marked = written,
                // Only the check at the next start is weaker: it compares with an older mark.
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot write the store's write mark")
                }
            }
        }
        Ok(())
    }

    /// Counts a poll that wrote items, in the poll's writes (callers hold the ingest guard).
    fn count_poll_written(&self) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        let next = self.polls_written.load(Ordering::Acquire) + 1;
        self.meta.insert(POLLS_WRITTEN_KEY, &next.to_be_bytes())?;
        self.polls_written.store(next, Ordering::Release);
        Ok(())
    }
}

/// Makes every item dictionary the store holds known to this process, and takes the current
/// one for new records.
fn load_dictionaries(trees: &Trees) -> Result<(), StoreError> {
    for entry in trees.meta.scan_prefix(ITEM_DICTIONARY_PREFIX) {
        let (_, bytes) = entry?;
        item_record::register(&bytes);
    }
    if let Some(bytes) = trees.meta.get(ITEM_DICTIONARY_KEY)? {
        let id = <[u8; 4]>::try_from(bytes.as_ref())
            .map(u32::from_le_bytes)
            .map_err(|_| StoreError::Corrupt {
                what: "item dictionary id",
                message: format!("{} bytes", bytes.len()),
            })?;
        if trees.meta.get(dictionary_key(id))?.is_none() {
            return Err(StoreError::Corrupt {
                what: "item dictionary",
                message: format!("dictionary {id:08x} is named but not stored"),
            });
        }
        *trees
            .item_dictionary
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(id);
        let trained_at = trees
            .meta
            .get(ITEM_DICTIONARY_ITEMS_KEY)?
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map_or(item_record::DICTIONARY_AFTER, |b| {
                u64::from_le_bytes(b) as usize
            });
        trees
            .dictionary_items
            .store(trained_at, std::sync::atomic::Ordering::Release);
    }
    Ok(())
}

/// The `meta` key of the item dictionary `id`.
fn dictionary_key(id: u32) -> Vec<u8> {
    let mut key = ITEM_DICTIONARY_PREFIX.to_vec();
    key.extend_from_slice(&id.to_le_bytes());
    key
}

/// The sled engine: the open database (replaced as a whole by [`Health::reopen`]) and what it
/// keeps in memory.
pub(super) struct SledEngine {
    /// `None` only between dropping a failed database and opening it again.
    trees: RwLock<Option<Arc<Trees>>>,
    path: PathBuf,
    /// sled's cache size, for every open of the database.
    cache_bytes: u64,
    /// Held from reading the store for a poll's plan until the plan is written, so that two
    /// sources polled at once cannot both claim the same story; it guards the term statistics
    /// that planning updates.
    ingest: Mutex<TermStats>,
    /// The dedup index of recently published items, in memory.
    recent: Mutex<RecentIndex>,
    /// The key-term index of every fingerprint in sled, in memory (built on first use).
    postings: Mutex<text_index::postings::KeyTermPostings>,
    /// When the term statistics were last written.
    term_stats_saved: Mutex<std::time::Instant>,
    /// When a state-only write last started a flush.
    last_flush: Mutex<std::time::Instant>,
    /// The error of the last flush started in the background, for the next write to report.
    flush_error: Arc<Mutex<Option<StoreError>>>,
}

impl SledEngine {
    /// Opens (or creates) the database at `path` with a cache of `cache_bytes`, kept when it is
    /// reopened. A database another handle is still releasing (sled finishes background work
    /// after a drop) is waited for, briefly. Files that cannot be read as a store, or that
    /// hold nothing although the store was used, are [`StoreError::Damaged`], never a panic.
    pub(super) fn open(path: &Path, cache_bytes: u64) -> Result<SledEngine, StoreError> {
        damaged_when_unreadable(path, || SledEngine::open_unguarded(path, cache_bytes))
    }

    fn open_unguarded(path: &Path, cache_bytes: u64) -> Result<SledEngine, StoreError> {
        // sled opens a store whose log was emptied as a new, empty one: whether files were
        // there before tells the two apart (see `check_schema`).
        let used_before = path.join("conf").exists() || path.join("db").exists();
        let trees = open_trees_waiting(path, cache_bytes)?;
        let store = SledEngine {
            trees: RwLock::new(Some(Arc::new(trees))),
            path: path.to_owned(),
            cache_bytes,
            ingest: Mutex::new(TermStats::default()),
            recent: Mutex::new(RecentIndex::new(crate::dedup::record::DEFAULT_MEMORY_ITEMS)),
            postings: Mutex::new(Default::default()),
            term_stats_saved: Mutex::new(std::time::Instant::now()),
            last_flush: Mutex::new(std::time::Instant::now()),
            flush_error: Arc::new(Mutex::new(None)),
        };
        store.check_schema(used_before)?;
        // The LSH bands of earlier versions, replaced by key terms; the key terms of format 2,
        // kept in memory since format 3 (their fingerprints list them).
        store.trees()?.db.drop_tree("bands")?;
        store.trees()?.db.drop_tree("key_terms")?;
        if let Some(bytes) = store.trees()?.meta.get(TERM_STATS_KEY)? {
            match TermStats::from_bytes(&bytes) {
                Some(stats) => *store.ingest_guard() = stats,
                None => tracing::warn!(
                    "the stored term statistics are unreadable; starting them afresh (near-duplicate detection is weaker until they refill)"
                ),
            }
        }
        Ok(store)
    }

    /// The open database, or [`StoreError::Closed`] while [`SledEngine::reopen`] could not open it.
    fn trees(&self) -> Result<Arc<Trees>, StoreError> {
        self.trees
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| StoreError::Closed {
                path: self.path.clone(),
            })
    }

    /// Checks the schema version, writing this one into a new store; `used_before`: the
    /// store's files were there before it was opened.
    fn check_schema(&self, used_before: bool) -> Result<(), StoreError> {
        match self.trees()?.meta.get(SCHEMA_KEY)? {
            Some(v) => {
                let found: u32 = std::str::from_utf8(&v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| StoreError::Corrupt {
                        what: "schema version",
                        message: String::from_utf8_lossy(&v).into_owned(),
                    })?;
                if found > SCHEMA_VERSION {
                    return Err(StoreError::NewerSchema {
                        path: self.path.clone(),
                        found,
                    });
                }
            }
            None => {
                let trees = self.trees()?;
                // A new store writes its version at once (flushed), so a store in use always
                // has one: files without it nor any item or source are what is left of a
                // store whose log was emptied or cut short, which sled reads as empty.
                if used_before && trees.items.is_empty() && trees.sources.is_empty() {
                    return Err(StoreError::Damaged {
                        path: self.path.clone(),
                        reason: "its files hold no data, not even the schema version every store has (its log was emptied or cut short)".to_owned(),
                    });
                }
                // A new store (or one older than the version key) starts at this version.
                trees
                    .meta
                    .insert(SCHEMA_KEY, SCHEMA_VERSION.to_string().as_bytes())?;
                if trees.items.is_empty() {
                    trees.meta.insert(ITEM_FORMAT_KEY, &[ITEM_FORMAT_IN_LOG])?;
                }
                trees.flush()?;
            }
        }
        // A version-1 store is marked version 2 at once, before any compressed record is
        // written: an older feedmux then refuses it rather than misread it.
        let trees = self.trees()?;
        if trees.meta.get(SCHEMA_KEY)?.as_deref() != Some(SCHEMA_VERSION.to_string().as_bytes()) {
            trees
                .meta
                .insert(SCHEMA_KEY, SCHEMA_VERSION.to_string().as_bytes())?;
            trees.flush()?;
        }
        // A new store's text index is built with this version's terms from the start.
        let trees = self.trees()?;
        if trees.meta.get(TERMS_VERSION_KEY)?.is_none() && trees.fingerprints.is_empty() {
            let version = crate::dedup::fingerprint::TERMS_VERSION;
            trees
                .meta
                .insert(TERMS_VERSION_KEY, &version.to_be_bytes())?;
        }
        Ok(())
    }

    /// The entries `pick` iterates over in the open database, or the one error of a closed
    /// store.
    fn iter_of(
        &self,
        pick: impl FnOnce(&Trees) -> sled::Iter,
    ) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec), StoreError>> {
        let (iter, closed) = match self.trees() {
            Ok(t) => (Some(pick(&t)), None),
            Err(e) => (None, Some(e)),
        };
        closed.into_iter().map(Err).chain(
            iter.into_iter()
                .flatten()
                .map(|r| r.map_err(StoreError::from)),
        )
    }
}

/// [`open_trees`], waiting briefly for a database another handle is still releasing (sled
/// finishes background work after a drop).
fn open_trees_waiting(path: &Path, cache_bytes: u64) -> Result<Trees, StoreError> {
    let mut attempts = 0;
    loop {
        match open_trees(path, cache_bytes) {
            Err(StoreError::Locked { .. }) if attempts < LOCK_RETRIES => {
                attempts += 1;
                std::thread::sleep(LOCK_RETRY_DELAY);
            }
            other => return other,
        }
    }
}

/// Opens the sled database at `path` and its trees. sled panics on some damaged files (and
/// on others answers an error): both are [`StoreError::Damaged`], and sled's panic message
/// goes to the debug log, not to stderr (see `quietly`).
fn open_trees(path: &Path, cache_bytes: u64) -> Result<Trees, StoreError> {
    damaged_when_unreadable(path, || open_trees_unguarded(path, cache_bytes))
}

/// Runs `open`, something that reads the store's files, `quietly`: a panic, a corruption sled
/// found or a record that cannot be decoded become [`StoreError::Damaged`].
fn damaged_when_unreadable<T>(
    path: &Path,
    open: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let damaged = |reason: String| StoreError::Damaged {
        path: path.to_owned(),
        reason,
    };
    match quietly(open) {
        Ok(Err(StoreError::Sled(
            e @ (sled::Error::Corruption { .. } | sled::Error::ReportableBug(_)),
        ))) => {
            tracing::debug!(error = %e, "sled refused the store's files");
            Err(damaged(format!("sled cannot read its files ({e})")))
        }
        Ok(Err(StoreError::Corrupt { what, message })) => {
            Err(damaged(format!("its {what} is unreadable ({message})")))
        }
        Ok(result) => result,
        Err(panic) => {
            tracing::debug!(panic = %panic, "sled panicked reading the store's files");
            Err(damaged(
                "sled cannot read its files (it gave up reading them)".to_owned(),
            ))
        }
    }
}

fn open_trees_unguarded(path: &Path, cache_bytes: u64) -> Result<Trees, StoreError> {
    let db = sled::Config::new()
        .path(path)
        .cache_capacity(cache_bytes)
        // Every write path flushes itself (a poll is durable once flushed); without sled's
        // background flusher, dropping the store releases its lock at once.
        .flush_every_ms(None)
        .open()
        .map_err(|e| open_error(path, e))?;
    let tree = |name: &str| db.open_tree(name);
    Ok(Trees {
        items: tree("items")?,
        by_time: tree("by_time")?,
        by_source: tree("by_source")?,
        feed_index: tree("feed_index")?,
        urls: tree("urls")?,
        stories: tree("stories")?,
        fingerprints: tree("fingerprints")?,
        sources: tree("sources")?,
        tombstones: tree("tombstones")?,
        meta: tree("meta")?,
        records: record_log::RecordLog::open(path).map_err(|e| io_error(path, e))?,
        records_dead: std::sync::atomic::AtomicU64::new(0),
        records_dead_saved: std::sync::atomic::AtomicU64::new(0),
        collecting: Mutex::new(()),
        written: std::sync::atomic::AtomicU64::new(0),
        states: Mutex::new(HashMap::new()),
        state_writers: Mutex::new(HashMap::new()),
        text_index_from: std::sync::atomic::AtomicI64::new(i64::MIN),
        polls_written: std::sync::atomic::AtomicU64::new(0),
        marked: Mutex::new(0),
        path: path.to_owned(),
        item_dictionary: RwLock::new(None),
        training: Mutex::new(0),
        dictionary_items: std::sync::atomic::AtomicUsize::new(0),
        dictionary_check_every: std::sync::atomic::AtomicU64::new(item_record::RETRAIN_CHECK_EVERY),
        dictionary_next_check: std::sync::atomic::AtomicU64::new(0),
        db,
    })
    .and_then(|trees| {
        if let Some(bytes) = trees.meta.get(TEXT_INDEX_FROM_KEY)? {
            let from = <[u8; 8]>::try_from(bytes.as_ref()).map_err(|_| StoreError::Corrupt {
                what: "text index cursor",
                message: format!("{} bytes", bytes.len()),
            })?;
            trees.text_index_from.store(
                i64::from_be_bytes(from),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        // An estimate: unreadable, it starts again from nothing.
        let dead = trees
            .meta
            .get(RECORDS_DEAD_KEY)?
            .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        trees
            .records_dead
            .store(dead, std::sync::atomic::Ordering::Relaxed);
        trees
            .records_dead_saved
            .store(dead, std::sync::atomic::Ordering::Relaxed);
        if let Some(bytes) = trees.meta.get(POLLS_WRITTEN_KEY)? {
            let polls = <[u8; 8]>::try_from(bytes.as_ref()).map_err(|_| StoreError::Corrupt {
                what: "count of polls written",
                message: format!("{} bytes", bytes.len()),
            })?;
            trees.polls_written.store(
                u64::from_be_bytes(polls),
                std::sync::atomic::Ordering::Release,
            );
        }
        check_write_mark(path, &trees)?;
        load_dictionaries(&trees)?;
        Ok(trees)
    })
}

std::thread_local! {
    /// Set while this thread runs `quietly`: its panics are caught there, not printed.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, turning a panic inside it into `Err` with the panic's message; the panic is not
/// printed (a panic hook, installed once, stays silent for the thread while it runs `f`, and
/// passes every other panic to the hook it replaced).
fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned())
    })
}

fn open_error(path: &Path, e: sled::Error) -> StoreError {
    if matches!(
        e,
        sled::Error::Corruption { .. } | sled::Error::ReportableBug(_)
    ) {
        return StoreError::Sled(e);
    }
    let message = e.to_string();
    if message.contains("lock")
        || message.contains("WouldBlock")
        || message.contains("temporarily unavailable")
    {
        StoreError::Locked {
            path: path.to_owned(),
        }
    } else {
        StoreError::Open {
            path: path.to_owned(),
            message,
        }
    }
}

fn io_error(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Open {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("store records serialise to JSON")
}

fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        what,
        message: e.to_string(),
    })
}

/// The times within a dedup window either side of an item's publication.
struct Span {
    oldest: DateTime<Utc>,
    newest: DateTime<Utc>,
}

#[cfg(test)]
mod tests;
