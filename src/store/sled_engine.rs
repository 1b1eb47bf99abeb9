//! The embedded engine: the store in sled trees, their keys and encodings, one batch per
//! poll, flush. Implements every trait of [`super::Engine`]; nothing outside `store` sees it.
//!
//! Trees (keys big-endian so that sled's ordered iteration is newest first):
//!
//! | tree | key | value |
//! | --- | --- | --- |
//! | `items` | item id (16 bytes) | [`Item`]: its content hash and its JSON compressed, with the store's dictionary once it has one (`item_record`; JSON alone in a version-1 store) |
//! | `by_time` | reverse time (8) + id | empty |
//! | `by_source` | source name, 0, reverse time, id | empty |
//! | `feed_index` | feed name, 0, reverse time, id | empty |
//! | `urls` | hash of canonical URL (16) | [`UrlClaim`]: tag, flags, item id, source (`item_record`; JSON before format 3) |
//! | `stories` | story id (16) + member id (16) | how the member joined ([`StoryLink`] as JSON), or empty for the first |
//! | `fingerprints` | item id | [`FingerprintRecord`] in its compact binary form |
//! | `sources` | source name | [`SourceState`] as JSON |
//! | `tombstones` | source name, 0, item id | when retention pruned it (8 bytes, microseconds) |
//! | `meta` | text key | schema version, feed fingerprints, term statistics and the terms version they were built with, text index cursor, count of polls written, item dictionaries |
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
//! `keys` (the key layouts) and `item_record`. Opening, the schema and compaction stay here.
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
    FingerprintRecord, IndexedFingerprint, IngestPlan, StoryLink, StoryMerge, UrlClaim,
};
use crate::model::{Item, ItemId, SourceState};

use super::engine::*;
use super::{FeedMembership, StoreError, Stored};

mod feed_index;
mod health;
mod item_record;
mod items;
mod keys;
mod prune;
mod states;
mod text_index;
mod write;
use keys::*;
use text_index::recent::RecentIndex;
use text_index::text_index_writes;

/// The layout version this build reads and writes. 2: item records compressed
/// (`item_record`); a version-1 store is read as it is and its items rewritten once. 3: no
/// `key_terms` tree (key terms are indexed in memory, from the fingerprints); a version-2
/// store's tree is dropped at open.
pub const SCHEMA_VERSION: u32 = 3;
const SCHEMA_KEY: &[u8] = b"schema_version";
/// In `meta`: 2 once every item record is in format 2 (absent: some may be JSON still).
const ITEM_FORMAT_KEY: &[u8] = b"item_format";
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
/// In `meta`, followed by a dictionary's id: the dictionary (every one the store used).
const ITEM_DICTIONARY_PREFIX: &[u8] = b"item_dictionary/";
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
    }
    Ok(())
}

/// The `meta` key of the item dictionary `id`.
fn dictionary_key(id: u32) -> Vec<u8> {
    let mut key = ITEM_DICTIONARY_PREFIX.to_vec();
    key.extend_from_slice(&id.to_le_bytes());
    key
}

/// Writes `polls` to the mark file beside sled's files (a new file renamed over the old, so a
/// crash leaves the old mark or the new one).
fn write_mark(path: &Path, polls: u64) -> std::io::Result<()> {
    let fresh = path.join(format!("{WRITE_MARK_FILE}.new"));
    std::fs::write(&fresh, format!("{polls}\n"))?;
    std::fs::rename(&fresh, path.join(WRITE_MARK_FILE))
}

/// The count the mark file holds; `None` when there is none (a new store, one written before
/// marks, one just compacted) or it cannot be read.
fn read_mark(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path.join(WRITE_MARK_FILE)).ok()?;
    match text.trim().parse() {
        Ok(polls) => Some(polls),
        Err(_) => {
            tracing::warn!(path = %path.display(), "the store's write mark is unreadable; not checked");
            None
        }
    }
}

/// Refuses a store whose log holds fewer polls than were flushed: sled reads a log that was
/// cut short, or overwritten from some point on, up to the damage and opens what it holds there
/// without a word.
fn check_write_mark(path: &Path, trees: &Trees) -> Result<(), StoreError> {
    let durable = trees
        .polls_written
        .load(std::sync::atomic::Ordering::Acquire);
    let Some(marked) = read_mark(path) else {
        return Ok(());
    };
    if durable < marked {
        return Err(StoreError::Damaged {
            path: path.to_owned(),
            reason: format!(
                "its log ends before the last poll feedmux flushed ({durable} of {marked} polls are there): the file was cut short or overwritten and the end is lost; delete {} to open what is left",
                path.join(WRITE_MARK_FILE).display()
            ),
        });
    }
    *trees.marked.lock().unwrap_or_else(|p| p.into_inner()) = marked;
    Ok(())
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
                    trees.meta.insert(ITEM_FORMAT_KEY, &[2])?;
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

/// Rewrites the store at `path` into fresh files holding only live records (see
/// [`super::Store::compact`]).
pub(super) fn compact(path: &Path) -> Result<(u64, u64), StoreError> {
    let old = SledEngine::open(path, DEFAULT_CACHE_BYTES)?;
    let before = old.size_on_disk();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "store".to_owned());
    let fresh_path = path.with_file_name(format!("{name}.compacting"));
    let retired_path = path.with_file_name(format!("{name}.before-compacting"));
    for leftover in [&fresh_path, &retired_path] {
        if leftover.exists() {
            std::fs::remove_dir_all(leftover).map_err(|e| io_error(leftover, e))?;
        }
    }
    let fresh = sled::Config::new()
        .path(&fresh_path)
        .cache_capacity(DEFAULT_CACHE_BYTES)
        .flush_every_ms(None)
        .open()
        .map_err(|e| open_error(&fresh_path, e))?;
    let old_trees = old.trees()?;
    // Item records written before the store had its dictionary are compressed with it on
    // the way (trained first, if the store is big enough and has none yet).
    old.train_dictionary_if_due(&old_trees);
    let dictionary = old_trees.dictionary();
    for tree_name in old_trees.db.tree_names() {
        let from = old_trees.db.open_tree(&tree_name)?;
        let to = fresh.open_tree(&tree_name)?;
        let recompress = dictionary.is_some() && tree_name.as_ref() == b"items";
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for entry in from.iter() {
            let (k, v) = entry?;
            if recompress && !item_record::uses_dictionary(&v) {
                let item = item_record::decode(&v)?;
                batch.insert(k, item_record::encode(&item, dictionary));
            } else {
                batch.insert(k, v);
            }
            in_batch += 1;
            if in_batch == 256 {
                to.apply_batch(std::mem::take(&mut batch))?;
                in_batch = 0;
            }
        }
        to.apply_batch(batch)?;
    }
    fresh.flush()?;
    drop(fresh);
    drop(old_trees);
    drop(old);
    std::fs::rename(path, &retired_path).map_err(|e| io_error(path, e))?;
    std::fs::rename(&fresh_path, path).map_err(|e| io_error(&fresh_path, e))?;
    std::fs::remove_dir_all(&retired_path).map_err(|e| io_error(&retired_path, e))?;
    let after = SledEngine::open(path, DEFAULT_CACHE_BYTES)?.size_on_disk();
    Ok((before, after))
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
        written: std::sync::atomic::AtomicU64::new(0),
        states: Mutex::new(HashMap::new()),
        state_writers: Mutex::new(HashMap::new()),
        text_index_from: std::sync::atomic::AtomicI64::new(i64::MIN),
        polls_written: std::sync::atomic::AtomicU64::new(0),
        marked: Mutex::new(0),
        path: path.to_owned(),
        item_dictionary: RwLock::new(None),
        training: Mutex::new(0),
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
mod tests {
    use super::*;
    use crate::dedup::fingerprint::Fingerprint;
    use crate::dedup::record::ItemWrite;

    fn indexed(n: u8, source: &str, at: DateTime<Utc>) -> IndexedFingerprint {
        IndexedFingerprint {
            id: ItemId([n; 16]),
            record: FingerprintRecord {
                source: source.into(),
                published: at,
                fingerprint: Fingerprint::new("t", ""),
                keys: vec![7],
            },
            replaces: None,
        }
    }

    fn written(
        n: u8,
        source: &str,
        at: DateTime<Utc>,
        keys: Vec<u32>,
    ) -> (ItemWrite, IndexedFingerprint) {
        let id = ItemId([
            n,
            n.wrapping_mul(7),
            1,
            2,
            3,
            4,
            5,
            6,
            7,
            8,
            9,
            10,
            11,
            12,
            13,
            14,
        ]);
        let item = Item {
            id,
            source: source.into(),
            guid: format!("g{n}"),
            url: None,
            canonical_url: None,
            title: format!("item {n}"),
            summary_html: None,
            content_html: None,
            authors: vec![],
            categories: vec![],
            enclosures: vec![],
            published: at,
            updated: None,
            first_seen: at,
            modified: at,
            content_hash: 0,
            story: id,
            sanitised: 0,
        };
        let mut indexed = indexed(n, source, at);
        indexed.id = id;
        indexed.record.keys = keys;
        let write = ItemWrite {
            item,
            previous: None,
            link: None,
        };
        (write, indexed)
    }

    /// Writes new items `(n, published, key terms)` of `source` as one poll; returns the plan.
    fn apply_new(
        store: &SledEngine,
        source: &str,
        items: impl Iterator<Item = (u8, DateTime<Utc>, Vec<u32>)>,
    ) -> IngestPlan {
        let mut plan = IngestPlan::default();
        for (n, at, keys) in items {
            let (write, indexed) = written(n, source, at, keys);
            plan.writes.push(write);
            plan.fingerprints.push(indexed);
        }
        apply(store, source, &plan);
        plan
    }

    /// Writes `plan` as a poll of `source` that keeps the default state.
    fn apply(store: &SledEngine, source: &str, plan: &IngestPlan) {
        let stats = store.ingest_guard();
        store
            .apply_poll(source, plan, &[], &[], &SourceState::default(), stats)
            .expect("apply");
    }

    /// An item of `n` with a title and summary of news-like words.
    fn news_item(n: u32) -> Item {
        let words = [
            "model",
            "chips",
            "release",
            "benchmark",
            "open weights",
            "模型",
            "发布",
            "芯片",
            "融资",
            "agents",
        ];
        let pick = |k: u32| {
            words[(n.wrapping_mul(2654435761).rotate_left(k) % words.len() as u32) as usize]
        };
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&n.to_le_bytes());
        id[4] = 0xD1;
        let id = ItemId(id);
        Item {
            id,
            source: "news".into(),
            guid: format!("https://news.example/{n}"),
            url: Some(format!("https://news.example/{n}")),
            canonical_url: None,
            title: format!("{} {} {} number {n}", pick(1), pick(5), pick(9)),
            summary_html: Some(format!(
                "<p>The <b>{}</b> of {} was announced today, {} and {} as reported, 第{n}期: {} {}.</p>",
                pick(2), pick(3), pick(4), pick(6), pick(7), pick(8)
            )),
            content_html: None,
            authors: vec![],
            categories: vec![],
            enclosures: vec![],
            published: Utc::now(),
            updated: None,
            first_seen: Utc::now(),
            modified: Utc::now(),
            content_hash: u64::from(n),
            story: id,
            sanitised: 0,
        }
    }

    /// Once the store holds `DICTIONARY_AFTER` items it trains its item dictionary: records
    /// written after it are compressed with it (format 3) and smaller than without, and every
    /// item reads back the same, also once the store is opened again.
    #[test]
    fn a_store_trains_its_item_dictionary_and_reads_every_item_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s");
        let store = SledEngine::open(&path, DEFAULT_CACHE_BYTES).expect("store");
        let poll = |store: &SledEngine, from: u32, to: u32| {
            let mut plan = IngestPlan::default();
            for n in from..to {
                plan.writes.push(ItemWrite {
                    item: news_item(n),
                    previous: None,
                    link: None,
                });
            }
            apply(store, "news", &plan);
        };
        let after = item_record::DICTIONARY_AFTER as u32;
        poll(&store, 0, after - 1);
        assert_eq!(
            store.trees().unwrap().dictionary(),
            None,
            "trained too early"
        );
        poll(&store, after - 1, after + 200);
        assert!(
            store.trees().unwrap().dictionary().is_some(),
            "no dictionary"
        );
        poll(&store, after + 200, after + 300);
        let trees = store.trees().unwrap();
        for n in after + 200..after + 300 {
            let bytes = trees.items.get(news_item(n).id.0).unwrap().expect("stored");
            assert_eq!(bytes[0], 3, "item {n} not compressed with the dictionary");
            assert!(bytes.len() < item_record::encode(&news_item(n), None).len());
        }
        drop(trees);
        let reads_back = |store: &SledEngine| {
            for n in 0..after + 300 {
                let item = store.item(news_item(n).id).unwrap().expect("stored");
                assert_eq!(item.title, news_item(n).title);
                assert_eq!(item.summary_html, news_item(n).summary_html);
            }
        };
        reads_back(&store);
        drop(store);
        let store = SledEngine::open(&path, DEFAULT_CACHE_BYTES).expect("reopen");
        assert!(store.trees().unwrap().dictionary().is_some());
        reads_back(&store);
        let first = store.trees().unwrap().items.get(news_item(0).id.0).unwrap();
        assert_eq!(
            first.map(|b| b[0]),
            Some(2),
            "written before the dictionary"
        );
        drop(store);

        // Compacting compresses the records written before it with the dictionary too.
        compact(&path).expect("compact");
        let store = SledEngine::open(&path, DEFAULT_CACHE_BYTES).expect("compacted");
        for entry in store.trees().unwrap().items.iter() {
            let (key, bytes) = entry.unwrap();
            assert_eq!(bytes[0], 3, "{key:?} not compressed with the dictionary");
        }
        reads_back(&store);
    }

    /// Items published more than `dedup.index_age` ago are matched by link only: a poll does
    /// not index them, dropping the index of items that reach the age removes their entries
    /// and nothing else, a reopened store still indexes nothing older than that, and a longer
    /// age lets polls index older items again.
    #[test]
    fn the_text_index_reaches_back_only_to_its_age() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s");
        let store = SledEngine::open(&path, DEFAULT_CACHE_BYTES).expect("store");
        let now = Utc::now();
        let days = chrono::Duration::days;
        let window = std::time::Duration::from_secs(72 * 3600);
        // Items 0-4 published 40 days ago, 5-9 20 days ago, 10-14 a day ago; item n's only
        // key term is 1000 + n.
        let age_of = |n: u8| days([40, 20, 1][usize::from(n / 5)]);
        let mut plan = IngestPlan {
            index_from: Some(now - days(30)),
            ..IngestPlan::default()
        };
        let mut ids = Vec::new();
        for n in 0..15u8 {
            let (write, indexed) = written(n, "a", now - age_of(n), vec![1000 + u32::from(n)]);
            ids.push(write.item.id);
            plan.writes.push(write);
            plan.fingerprints.push(indexed);
        }
        apply(&store, "a", &plan);
        let found = |store: &SledEngine, n: u8| {
            let hits = store
                .candidates(&[1000 + u32::from(n)], now - age_of(n), window, 32, "b")
                .expect("candidates");
            hits.iter().any(|(id, _)| *id == ids[usize::from(n)])
        };
        let count = |store: &SledEngine, tree: &str| {
            store
                .record_counts()
                .into_iter()
                .find(|(name, _)| *name == tree)
                .map(|(_, n)| n)
        };
        assert_eq!(count(&store, "fingerprints"), Some(10));
        assert_eq!(count(&store, "key_terms"), Some(10));
        assert!(!found(&store, 2) && found(&store, 7) && found(&store, 12));

        // Ten days later than the poll's cut, the 20-day-old items go too.
        assert_eq!(
            store.drop_text_index_before(now - days(10)).expect("drop"),
            5
        );
        assert_eq!(count(&store, "fingerprints"), Some(5));
        assert_eq!(count(&store, "key_terms"), Some(5));
        assert_eq!(count(&store, "items"), Some(15), "items stay");
        assert!(!found(&store, 7) && found(&store, 12));
        assert!(store.fingerprint(ids[7]).expect("read").is_none());
        assert_eq!(
            store.drop_text_index_before(now - days(10)).expect("again"),
            0
        );

        // After a reopen, a poll planned without an age still indexes nothing older.
        drop(store);
        let store = SledEngine::open(&path, DEFAULT_CACHE_BYTES).expect("reopen");
        apply_new(
            &store,
            "c",
            [
                (20, now - days(15), vec![1020]),
                (21, now - days(5), vec![1021]),
            ]
            .into_iter(),
        );
        assert_eq!(count(&store, "fingerprints"), Some(6));
        assert_eq!(count(&store, "items"), Some(17));

        // The age made longer (60 days): items of 40 days are indexed again when polled.
        assert_eq!(
            store.drop_text_index_before(now - days(60)).expect("drop"),
            0
        );
        apply_new(&store, "c", [(22, now - days(40), vec![1022])].into_iter());
        assert_eq!(count(&store, "fingerprints"), Some(7));
    }

    #[test]
    fn a_checkpoint_reopens_only_when_due_and_unused_and_keeps_everything() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SledEngine::open(&dir.path().join("s"), DEFAULT_CACHE_BYTES).expect("store");
        let now = Utc::now();
        let plan = apply_new(&store, "a", (0..10).map(|n| (n, now, vec![u32::from(n)])));
        assert!(
            !store.checkpoint_if_due().expect("checkpoint"),
            "not due yet"
        );
        let in_use = store.trees().expect("open");
        assert!(!store.checkpoint_after(1).expect("checkpoint"), "in use");
        drop(in_use);
        assert!(
            store.checkpoint_after(1).expect("checkpoint"),
            "due and unused"
        );
        assert!(
            !store.checkpoint_after(1).expect("checkpoint"),
            "the count starts again"
        );
        assert_eq!(store.item_count(), 10);
        for write in &plan.writes {
            assert!(store.item(write.item.id).expect("read").is_some());
        }
    }

    /// A source's quota deletes that source's oldest items, with tombstones, and no other
    /// source's.
    #[test]
    fn a_source_over_its_quota_loses_its_own_oldest_items_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SledEngine::open(&dir.path().join("s"), DEFAULT_CACHE_BYTES).expect("store");
        let now = Utc::now();
        let hours_ago = |n: u8| now - chrono::Duration::hours(i64::from(n));
        let flood = apply_new(&store, "flood", (0..10).map(|n| (n, hours_ago(n), vec![])));
        apply_new(
            &store,
            "quiet",
            (20..23).map(|n| (n, hours_ago(n + 10), vec![])),
        );
        assert_eq!(store.prune_source("flood", 4, now).expect("prune"), 6);
        let titles = |source: &str| -> Vec<String> {
            let items = store.source_items(source, 100).expect("items");
            items.into_iter().map(|i| i.title).collect()
        };
        assert_eq!(titles("flood"), ["item 0", "item 1", "item 2", "item 3"]);
        assert_eq!(titles("quiet"), ["item 20", "item 21", "item 22"]);
        assert_eq!(store.source_state("flood").expect("state").item_count, 4);
        assert_eq!(store.item_count(), 7);
        let oldest = flood.writes[9].item.id;
        assert!(store.is_pruned("flood", oldest).expect("tombstone"));
        assert_eq!(store.prune_source("flood", 4, now).expect("prune"), 0);
    }

    /// Source states are kept in memory, but every write reaches sled: a store opened again
    /// reads what was written, and a state-only write keeps the count that a poll and a
    /// prune set, not the one in the state its caller read before them.
    #[test]
    fn source_states_kept_in_memory_are_written_through() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s");
        let store = SledEngine::open(&path, DEFAULT_CACHE_BYTES).expect("store");
        let now = Utc::now();
        let read_before_poll = store.source_state("a").expect("state");
        let hours_ago = |n: u8| now - chrono::Duration::hours(i64::from(n));
        apply_new(&store, "a", (0..4).map(|n| (n, hours_ago(n), vec![])));
        assert_eq!(store.source_state("a").expect("state").item_count, 4);
        let lost = store.prune(None, Some(3), now).expect("prune");
        assert_eq!(lost.get("a"), Some(&1));
        let polled = SourceState {
            etag: Some("\"v2\"".into()),
            last_poll: Some(now),
            ..read_before_poll
        };
        store.put_source_state("a", polled.clone()).expect("put");
        let expected = SourceState {
            item_count: 3,
            ..polled
        };
        assert_eq!(store.source_state("a").expect("state"), expected);
        store.flush().expect("flush");
        drop(store);
        let again = SledEngine::open(&path, DEFAULT_CACHE_BYTES).expect("store opened again");
        assert_eq!(again.source_state("a").expect("state"), expected);
        assert_eq!(
            again.source_state("b").expect("state"),
            SourceState::default()
        );
    }

    /// Polls of different sources write their states side by side, with readers beside
    /// them: each source's last write is what memory and, after a reopen, sled hold.
    #[test]
    fn states_written_side_by_side_each_keep_their_last_write() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s");
        let store = SledEngine::open(&path, DEFAULT_CACHE_BYTES).expect("store");
        let state_of = |round: u32| SourceState {
            consecutive_failures: round,
            ..SourceState::default()
        };
        std::thread::scope(|scope| {
            for t in 0..4 {
                let store = &store;
                scope.spawn(move || {
                    for round in 0..200 {
                        for source in [format!("own-{t}"), "shared".to_owned()] {
                            store
                                .put_source_state(&source, state_of(round))
                                .expect("put");
                            store.source_state(&source).expect("read");
                        }
                    }
                });
            }
        });
        let expect_all = |store: &SledEngine| {
            for t in 0..4 {
                let state = store.source_state(&format!("own-{t}")).expect("state");
                assert_eq!(state, state_of(199), "own-{t}");
            }
            assert_eq!(store.source_state("shared").expect("state"), state_of(199));
        };
        expect_all(&store);
        store.flush().expect("flush");
        drop(store);
        expect_all(&SledEngine::open(&path, DEFAULT_CACHE_BYTES).expect("store opened again"));
    }

    /// Whatever part of the window memory holds, lookups find what sled alone finds.
    #[test]
    fn lookups_through_memory_find_what_sled_finds() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SledEngine::open(&dir.path().join("s"), DEFAULT_CACHE_BYTES).expect("store");
        let now = Utc::now();
        let window = std::time::Duration::from_secs(72 * 3600);
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let sources = ["a", "b", "c"];
        // Two polls: the first before the index is warm, the second after.
        for poll in 0..2u8 {
            let mut plan = IngestPlan::default();
            for k in 0..60u8 {
                let n = poll * 60 + k;
                let hours = (next() % 200) as i64 - 20; // some in the future, most in the past
                let keys = (0..3).map(|_| (next() % 6) as u32).collect();
                let (write, indexed) = written(
                    n,
                    sources[n as usize % 3],
                    now - chrono::Duration::hours(hours),
                    keys,
                );
                plan.writes.push(write);
                plan.fingerprints.push(indexed);
            }
            apply(&store, "a", &plan);
            if poll == 0 {
                store.candidates(&[0], now, window, 8, "x").expect("warm");
            }
        }
        let lookups: Vec<(Vec<u32>, DateTime<Utc>, &str)> = (0..40)
            .map(|k| {
                let at = now - chrono::Duration::hours((next() % 150) as i64);
                (vec![k % 6, (k + 1) % 6], at, sources[k as usize % 3])
            })
            .collect();
        let answers = |store: &SledEngine| -> Vec<Vec<(ItemId, usize)>> {
            lookups
                .iter()
                .map(|(terms, at, source)| {
                    let mut found = store
                        .candidates(terms, *at, window, 8, source)
                        .expect("lookup");
                    found.sort();
                    found
                })
                .collect()
        };
        let warm = answers(&store);
        store.keep_recent_in_memory(0);
        let sled_only = answers(&store);
        store.keep_recent_in_memory(25);
        let partly = answers(&store);
        assert!(sled_only.iter().any(|found| found.len() > 3));
        for (k, (a, b)) in warm.iter().zip(&sled_only).enumerate() {
            assert_eq!(a, b, "lookup {k}: {:?}", lookups[k]);
        }
        assert_eq!(partly, sled_only);
    }

    #[test]
    fn a_prolific_source_does_not_crowd_others_out_of_the_candidates() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SledEngine::open(&dir.path().join("s"), DEFAULT_CACHE_BYTES).expect("store");
        let now = Utc::now();
        let mut plan = IngestPlan::default();
        plan.fingerprints
            .push(indexed(200, "other", now - chrono::Duration::hours(2)));
        for n in 0..40 {
            plan.fingerprints.push(indexed(n, "busy", now));
        }
        let stats = store.ingest_guard();
        store
            .apply_poll("busy", &plan, &[], &[], &SourceState::default(), stats)
            .expect("apply");
        let window = std::time::Duration::from_secs(72 * 3600);
        let found = store
            .candidates(&[7], now, window, 32, "busy")
            .expect("lookup");
        assert_eq!(found, vec![(ItemId([200; 16]), 1)]);
        let from_elsewhere = store
            .candidates(&[7], now, window, 32, "new")
            .expect("lookup");
        assert_eq!(from_elsewhere.len(), 32);
    }
}
