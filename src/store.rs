//! The store: sled trees, their keys and encodings, one batch per poll, flush.
//!
//! Trees (keys big-endian so that sled's ordered iteration is newest first):
//!
//! | tree | key | value |
//! | --- | --- | --- |
//! | `items` | item id (16 bytes) | [`Item`]: its content hash and its JSON compressed (`item_record`; JSON alone in a version-1 store) |
//! | `by_time` | reverse time (8) + id | empty |
//! | `by_source` | source name, 0, reverse time, id | empty |
//! | `feed_index` | feed name, 0, reverse time, id | empty |
//! | `urls` | hash of canonical URL (16) | [`UrlClaim`] as JSON |
//! | `stories` | story id (16) + member id (16) | how the member joined ([`StoryLink`] as JSON), or empty for the first |
//! | `fingerprints` | item id | [`FingerprintRecord`] in its compact binary form |
//! | `key_terms` | term hash (4) + reverse time (8) + item id + source tag (4) | empty |
//! | `sources` | source name | [`SourceState`] as JSON |
//! | `tombstones` | source name, 0, item id | when retention pruned it (8 bytes, microseconds) |
//! | `meta` | text key | schema version, feed fingerprints, term statistics and the terms version they were built with, text index cursor |
//!
//! `fingerprints` and `key_terms` (the text index) hold only items published since the text
//! index cursor, which [`Store::drop_text_index_before`] moves (`dedup.index_age`).
//!
//! The key-term entries and fingerprints of recently published items are also kept in memory
//! (`store::recent`), so that near-duplicate lookups, nearly all about the last few days, do not
//! read sled.
//!
//! One file per concern: `keys` (the key layouts), `item_record`, `states` (source states),
//! `write` (a poll's writes), `prune` (retention, quotas, the text index's age),
//! `text_index` (near-duplicate candidates, with `recent` in memory), `feed_index`; opening,
//! reopening, checkpoints, the schema and compaction stay here.
//!
//! A poll's writes go in index-first order and are flushed before the poll counts as done, so a
//! crash leaves at worst an index entry without its item (readers skip those), never an item
//! that no index lists. sled is used here and nowhere else; this module knows nothing of HTTP
//! or feed formats.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::dedup::fingerprint::TermStats;
use crate::dedup::record::{
    FingerprintRecord, IndexedFingerprint, IngestPlan, StoryLink, UrlClaim,
};
use crate::model::{Item, ItemId, SourceState};

mod feed_index;
mod item_record;
mod keys;
mod prune;
mod recent;
mod states;
mod text_index;
mod write;
use keys::*;
use recent::RecentIndex;
use text_index::text_index_writes;

/// The layout version this build reads and writes. 2: item records compressed
/// (`item_record`); a version-1 store is read as it is and its items rewritten once.
pub const SCHEMA_VERSION: u32 = 2;
const SCHEMA_KEY: &[u8] = b"schema_version";
/// In `meta`: 2 once every item record is in format 2 (absent: some may be JSON still).
const ITEM_FORMAT_KEY: &[u8] = b"item_format";
/// Item records rewritten per batch by [`Store::compress_items`].
const COMPRESS_SLICE: usize = 1024;
const FINGERPRINT_PREFIX: &str = "feed_fingerprint/";
const TERM_STATS_KEY: &[u8] = b"term_stats";
/// Where [`Store::drop_text_index_before`] records how far it got (microseconds, big-endian).
const TEXT_INDEX_FROM_KEY: &[u8] = b"text_index_from";
/// The version of the way text is cut into terms that the text index was built with.
const TERMS_VERSION_KEY: &[u8] = b"terms_version";
/// Items whose text index entries one slice of [`Store::drop_text_index_before`] drops at
/// most, holding the ingest guard.
const TEXT_INDEX_SLICE: usize = 1024;
/// How stale a state-only write may get before a flush (see [`Store::put_source_state`]).
const LAZY_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);
/// Term statistics are written at most this often while ingesting (and at every flush): a
/// crash loses at most this much of them, which only shifts term weights a little.
const TERM_STATS_SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// How long `open` waits for a store that is being released: 20 × 50 ms.
const LOCK_RETRIES: u32 = 20;
/// What [`Store::reopen`] first writes to check that the disk has room again (sled starts new
/// segments of 512 KiB when it opens).
const ROOM_PROBE_BYTES: usize = 2 * 1024 * 1024;
/// Item bytes written after which [`Store::checkpoint_if_due`] reopens the database.
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

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store at {path} is in use by another feedmux process")]
    Locked { path: PathBuf },
    #[error("cannot open the store at {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("the store at {path} has schema version {found}, newer than this feedmux understands ({SCHEMA_VERSION}); upgrade feedmux")]
    NewerSchema { path: PathBuf, found: u32 },
    #[error("store error: {0}")]
    Sled(#[from] sled::Error),
    #[error("the store at {path} is closed after a write error; feedmux is reopening it")]
    Closed { path: PathBuf },
    #[error("corrupt record in the store ({what}): {message}")]
    Corrupt { what: &'static str, message: String },
}

impl StoreError {
    /// Whether the database failed in a way only reopening it clears: an I/O error of sled
    /// (a full disk: sled keeps the first one and fails every later flush with it), or the
    /// store closed after one ([`StoreError::Closed`]).
    pub fn needs_reopen(&self) -> bool {
        matches!(
            self,
            StoreError::Sled(sled::Error::Io(_)) | StoreError::Closed { .. }
        )
    }
}

/// What the store holds of an item, against a new version of it.
#[derive(Debug)]
pub enum Stored {
    Missing,
    Unchanged,
    /// Stored with other content: the stored version.
    Changed(Box<Item>),
}

/// One item's membership of an output feed, written with the item.
#[derive(Debug, Clone)]
pub struct FeedMembership {
    pub feed: String,
    pub item: ItemId,
}

/// The open sled database and its trees; replaced as a whole by [`Store::reopen`].
struct Trees {
    db: sled::Db,
    items: sled::Tree,
    by_time: sled::Tree,
    by_source: sled::Tree,
    feed_index: sled::Tree,
    urls: sled::Tree,
    stories: sled::Tree,
    fingerprints: sled::Tree,
    key_terms: sled::Tree,
    sources: sled::Tree,
    tombstones: sled::Tree,
    meta: sled::Tree,
    /// Bytes of items written since the database was opened (see [`Store::checkpoint_if_due`]).
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
    /// fingerprint): [`Store::drop_text_index_before`] moves it forward, and a poll does not
    /// index an item older than it.
    text_index_from: std::sync::atomic::AtomicI64,
}

impl Trees {
    /// Flushes the database.
    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

/// A handle on the open store; cheap to clone. Every clone sees the same database, also after
/// [`Store::reopen`] replaced it.
#[derive(Clone)]
pub struct Store {
    /// `None` only between dropping a failed database and opening it again.
    trees: Arc<RwLock<Option<Arc<Trees>>>>,
    path: PathBuf,
    /// sled's cache size, for every open of the database.
    cache_bytes: u64,
    /// Held from reading the store for a poll's plan until the plan is written, so that two
    /// sources polled at once cannot both claim the same story; it guards the term statistics
    /// that planning updates.
    ingest: Arc<Mutex<TermStats>>,
    /// The dedup index of recently published items, in memory.
    recent: Arc<Mutex<RecentIndex>>,
    /// When the term statistics were last written.
    term_stats_saved: Arc<Mutex<std::time::Instant>>,
    /// When a state-only write last started a flush.
    last_flush: Arc<Mutex<std::time::Instant>>,
    /// The error of the last flush started in the background, for the next write to report.
    flush_error: Arc<Mutex<Option<StoreError>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the store at `path` with a cache of [`DEFAULT_CACHE_BYTES`]. A store
    /// another handle is still releasing (sled finishes background work after a drop) is
    /// waited for, briefly.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// [`Store::open`] with a cache of `cache_bytes` (`[storage] cache_size`): sled's page
    /// cache, which it counts low (the process holds about twice it). Kept when the store is
    /// reopened.
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let trees = open_trees_waiting(path, cache_bytes)?;
        let store = Store {
            trees: Arc::new(RwLock::new(Some(Arc::new(trees)))),
            path: path.to_owned(),
            cache_bytes,
            ingest: Arc::new(Mutex::new(TermStats::default())),
            recent: Arc::new(Mutex::new(RecentIndex::new(
                crate::dedup::record::DEFAULT_MEMORY_ITEMS,
            ))),
            term_stats_saved: Arc::new(Mutex::new(std::time::Instant::now())),
            last_flush: Arc::new(Mutex::new(std::time::Instant::now())),
            flush_error: Arc::new(Mutex::new(None)),
        };
        store.check_schema()?;
        // The LSH bands of earlier versions, replaced by key terms.
        store.trees()?.db.drop_tree("bands")?;
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

    /// Runs `write`; when it fails with an I/O error, closes the store (every call answers
    /// [`StoreError::Closed`] until [`Store::reopen`]). A sled database that failed a write
    /// keeps the error and fails every later write and flush with it until it is opened
    /// again: nothing may use it any more.
    fn guarded<T>(&self, write: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let trees = self.trees()?;
        let result = write();
        if let Err(e) = &result {
            if matches!(e, StoreError::Sled(sled::Error::Io(_))) {
                let mut slot = self.trees.write().unwrap_or_else(|p| p.into_inner());
                // Unless another thread reopened it meanwhile.
                if slot.as_ref().is_some_and(|open| Arc::ptr_eq(open, &trees)) {
                    *slot = None;
                    tracing::warn!(error = %e, "closed the store after a failed write");
                }
            }
        }
        result
    }

    /// Writes [`ROOM_PROBE_BYTES`] to a scratch file in the store's directory, syncs and
    /// removes it: whether sled would find room to open the database again.
    fn probe_room(&self) -> Result<(), StoreError> {
        use std::io::Write;
        let probe = self.path.join(".room-probe");
        let written = std::fs::File::create(&probe).and_then(|mut file| {
            let chunk = vec![0u8; 64 * 1024];
            for _ in 0..ROOM_PROBE_BYTES / chunk.len() {
                file.write_all(&chunk)?;
            }
            file.sync_all()
        });
        let _ = std::fs::remove_file(&probe);
        written.map_err(|e| StoreError::Open {
            path: self.path.clone(),
            message: format!("{} ({e})", probe_failure(e.kind())),
        })
    }

    /// The open database, or [`StoreError::Closed`] while [`Store::reopen`] could not open it.
    fn trees(&self) -> Result<Arc<Trees>, StoreError> {
        self.trees
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| StoreError::Closed {
                path: self.path.clone(),
            })
    }

    /// Drops the database and opens the same path again, for every clone of this handle: sled
    /// keeps the first I/O error of a write (a full disk) until reopened, and a write that
    /// fails so closes the store (see `Store::guarded`). Holds the ingest guard, so no poll
    /// or prune is half-way through its writes; what sled had not flushed is lost, as in a
    /// crash (a poll is done only once flushed). First the disk must take
    /// `ROOM_PROBE_BYTES` (2 MiB) (written and removed again); until it does, nothing changes. If
    /// the open itself fails the store stays closed (every call answers
    /// [`StoreError::Closed`]) until a later `reopen` succeeds. The in-memory term statistics
    /// are kept.
    pub fn reopen(&self) -> Result<(), StoreError> {
        self.probe_room()?;
        let _ingest = self.ingest_guard();
        let mut slot = self.trees.write().unwrap_or_else(|p| p.into_inner());
        // The old database releases its lock once the last clone of it is dropped; readers
        // hold one only for the length of a call, and `open` waits for them briefly.
        drop(slot.take());
        *slot = Some(Arc::new(open_trees_waiting(&self.path, self.cache_bytes)?));
        // A background flush of the old database may have failed: not this one's fault.
        *self.flush_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        // What sled had not flushed is gone: the in-memory index refills from what it kept.
        let capacity = self.recent().capacity();
        *self.recent() = RecentIndex::new(capacity);
        Ok(())
    }

    /// Closes and opens the database again once `CHECKPOINT_AFTER_BYTES` (256 MiB) of items were
    /// written since it was opened, so that the next start stays quick and small: sled 0.34
    /// writes the snapshot of its page table only when it opens a database, and opening replays
    /// (and holds in memory while it does) every part of the log written since the last
    /// snapshot. Skipped while any other call uses the database (its lock would not be let go)
    /// and while the store is closed after a fault. Returns whether it reopened.
    pub fn checkpoint_if_due(&self) -> Result<bool, StoreError> {
        self.checkpoint_after(CHECKPOINT_AFTER_BYTES)
    }

    /// Whether [`Store::checkpoint_if_due`] would reopen now (a cheap check, for callers that
    /// run it on another thread).
    pub fn checkpoint_is_due(&self) -> bool {
        self.trees().is_ok_and(|t| {
            t.written.load(std::sync::atomic::Ordering::Relaxed) >= CHECKPOINT_AFTER_BYTES
        })
    }

    fn checkpoint_after(&self, bytes: u64) -> Result<bool, StoreError> {
        let written = self
            .trees()?
            .written
            .load(std::sync::atomic::Ordering::Relaxed);
        if written < bytes {
            return Ok(false);
        }
        let _ingest = self.ingest_guard();
        let mut slot = self.trees.write().unwrap_or_else(|p| p.into_inner());
        let Some(current) = slot.as_ref() else {
            return Ok(false);
        };
        if Arc::strong_count(current) > 1 {
            return Ok(false);
        }
        current.flush()?;
        // The last handle: dropping it closes the database and lets its lock go.
        drop(slot.take());
        // On failure it is left closed: the daemon's recovery reopens it, as after a failed write.
        *slot = Some(Arc::new(open_trees_waiting(&self.path, self.cache_bytes)?));
        tracing::info!(
            written_mib = written / (1024 * 1024),
            "reopened the store so that it writes a snapshot (keeps the next start quick)"
        );
        Ok(true)
    }

    /// Serialises ingestion: hold the guard from planning a poll's writes until they are
    /// applied. It holds the term statistics, which planning updates.
    pub fn ingest_guard(&self) -> MutexGuard<'_, TermStats> {
        self.ingest.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps at most `items` recently published items' dedup entries in memory (0: none,
    /// every lookup reads sled). The index refills on its next use.
    pub fn keep_recent_in_memory(&self, items: usize) {
        *self.recent() = RecentIndex::new(items);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_schema(&self) -> Result<(), StoreError> {
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
                // A new store (or one older than the version key) starts at this version.
                let trees = self.trees()?;
                trees
                    .meta
                    .insert(SCHEMA_KEY, SCHEMA_VERSION.to_string().as_bytes())?;
                if trees.items.is_empty() {
                    trees.meta.insert(ITEM_FORMAT_KEY, &[2])?;
                }
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

    /// Whether some item records may still be in format 1 (a store written before version 2),
    /// for [`Store::compress_items`] to rewrite.
    pub fn items_to_compress(&self) -> Result<bool, StoreError> {
        Ok(self.trees()?.meta.get(ITEM_FORMAT_KEY)?.as_deref() != Some(&[2][..]))
    }

    /// Rewrites every item record still in format 1 (JSON) in format 2 (compressed), in
    /// batches of 1,024 (`COMPRESS_SLICE`), each flushed: an upgrade stopped midway goes on from
    /// the start next time, skipping what is done. `progress(records looked at, of)` is
    /// called before each batch. Holds the ingest guard. Returns how many it rewrote.
    pub fn compress_items(
        &self,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<usize, StoreError> {
        self.guarded(|| {
            let _guard = self.ingest_guard();
            let trees = self.trees()?;
            let total = trees.items.len();
            let (mut seen, mut rewritten) = (0, 0);
            let mut after: Option<sled::IVec> = None;
            loop {
                progress(seen, total);
                let range = match &after {
                    Some(key) => trees.items.range::<&[u8], _>((
                        std::ops::Bound::Excluded(key.as_ref()),
                        std::ops::Bound::Unbounded,
                    )),
                    None => trees.items.iter(),
                };
                let mut batch = sled::Batch::default();
                let mut taken = 0;
                for entry in range.take(COMPRESS_SLICE) {
                    let (key, bytes) = entry?;
                    taken += 1;
                    if !item_record::is_compressed(&bytes) {
                        let item = item_record::decode(&bytes)?;
                        batch.insert(key.clone(), item_record::encode(&item));
                        rewritten += 1;
                    }
                    after = Some(key);
                }
                seen += taken;
                trees.items.apply_batch(batch)?;
                trees.flush()?;
                if taken < COMPRESS_SLICE {
                    break;
                }
            }
            trees.meta.insert(ITEM_FORMAT_KEY, &[2])?;
            trees.flush()?;
            Ok(rewritten)
        })
    }

    pub fn item(&self, id: ItemId) -> Result<Option<Item>, StoreError> {
        match self.trees()?.items.get(id.0)? {
            Some(bytes) => Ok(Some(item_record::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The stored version of an item, compared with an entry's content hash with one read:
    /// an unchanged item (the common case of a poll) is recognised without decoding it.
    pub fn stored_version(&self, id: ItemId, content_hash: u64) -> Result<Stored, StoreError> {
        let Some(bytes) = self.trees()?.items.get(id.0)? else {
            return Ok(Stored::Missing);
        };
        if item_record::content_hash(&bytes)? == content_hash {
            return Ok(Stored::Unchanged);
        }
        Ok(Stored::Changed(Box::new(item_record::decode(&bytes)?)))
    }

    pub fn item_count(&self) -> usize {
        self.trees().map_or(0, |t| t.items.len())
    }

    pub fn url_claim(&self, canonical: &str) -> Result<Option<UrlClaim>, StoreError> {
        match self.trees()?.urls.get(url_key(canonical))? {
            Some(bytes) => Ok(Some(decode(&bytes, "url claim")?)),
            None => Ok(None),
        }
    }

    /// Starts a flush on a thread of its own when the last one started [`LAZY_FLUSH`] ago: a
    /// sweep of thousands of 304s costs a handful of flushes, not thousands, and none of
    /// them waits for the disk (a flush ends in `fdatasync`). A background flush that failed
    /// is reported by the next write, which then closes the store as a failed write does.
    fn flush_lazily(&self) -> Result<(), StoreError> {
        if let Some(e) = self
            .flush_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            return Err(e);
        }
        // Another caller starting a flush now is as good.
        let mut last = match self.last_flush.try_lock() {
            Ok(last) => last,
            Err(std::sync::TryLockError::WouldBlock) => return Ok(()),
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        };
        if last.elapsed() < LAZY_FLUSH {
            return Ok(());
        }
        *last = std::time::Instant::now();
        let (trees, failed) = (self.trees()?, self.flush_error.clone());
        let flush = move || {
            if let Err(e) = trees.flush() {
                *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("store-flush".into())
            .spawn(flush)
        {
            tracing::warn!(error = %e, "cannot start a thread to flush the store; flushing here");
            self.trees()?.flush()?;
        }
        Ok(())
    }

    /// Items stored for `source` (keys of the `by_source` index; no item is read).
    fn count_of_source(&self, source: &str) -> Result<u64, StoreError> {
        let mut n = 0;
        for key in self
            .trees()?
            .by_source
            .scan_prefix(name_prefix(source))
            .keys()
        {
            key?;
            n += 1;
        }
        Ok(n)
    }

    /// How many records each tree holds, by tree name (for tests and diagnostics).
    pub fn record_counts(&self) -> Vec<(&'static str, usize)> {
        let Ok(t) = self.trees() else {
            return Vec::new();
        };
        vec![
            ("items", t.items.len()),
            ("by_time", t.by_time.len()),
            ("by_source", t.by_source.len()),
            ("feed_index", t.feed_index.len()),
            ("urls", t.urls.len()),
            ("stories", t.stories.len()),
            ("fingerprints", t.fingerprints.len()),
            ("key_terms", t.key_terms.len()),
            ("sources", t.sources.len()),
            ("tombstones", t.tombstones.len()),
        ]
    }

    /// When each item of `source` published at or after `since` was published, newest first.
    /// Read from the `by_source` index alone: no item is decoded.
    pub fn source_item_times(
        &self,
        source: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<DateTime<Utc>>, StoreError> {
        let prefix = name_prefix(source);
        let mut times = Vec::new();
        for entry in self.trees()?.by_source.scan_prefix(&prefix) {
            let (key, _) = entry?;
            let Some(t) = time_at(&key, prefix.len()) else {
                return Err(StoreError::Corrupt {
                    what: "source index key",
                    message: format!("{} bytes", key.len()),
                });
            };
            if t < since {
                break;
            }
            times.push(t);
        }
        Ok(times)
    }

    /// The newest `limit` items of `source`, newest first (by the `by_source` index).
    pub fn source_items(&self, source: &str, limit: usize) -> Result<Vec<Item>, StoreError> {
        let prefix = name_prefix(source);
        let skip = prefix.len() + 8;
        let mut items = Vec::new();
        for key in self.trees()?.by_source.scan_prefix(&prefix).keys() {
            if items.len() >= limit {
                break;
            }
            let key = key?;
            let id = key
                .get(skip..)
                .and_then(ItemId::from_slice)
                .ok_or(StoreError::Corrupt {
                    what: "source index key",
                    message: format!("{} bytes", key.len()),
                })?;
            if let Some(item) = self.item(id)? {
                items.push(item);
            }
        }
        Ok(items)
    }

    /// Ids of every item, newest first.
    pub fn all_items(&self) -> impl Iterator<Item = Result<ItemId, StoreError>> + '_ {
        self.iter_of(|t| t.by_time.iter()).map(|r| {
            let (key, _) = r?;
            ItemId::from_slice(&key[8..]).ok_or(StoreError::Corrupt {
                what: "time index key",
                message: format!("{} bytes", key.len()),
            })
        })
    }

    /// The members of a story group with how each joined (`None` for the first).
    pub fn story_links(
        &self,
        story: ItemId,
    ) -> Result<Vec<(ItemId, Option<StoryLink>)>, StoreError> {
        self.trees()?
            .stories
            .scan_prefix(story.0)
            .map(|r| {
                let (key, value) = r?;
                let id = ItemId::from_slice(&key[16..]).ok_or(StoreError::Corrupt {
                    what: "story key",
                    message: format!("{} bytes", key.len()),
                })?;
                let link = if value.is_empty() {
                    None
                } else {
                    Some(decode(&value, "story link")?)
                };
                Ok((id, link))
            })
            .collect()
    }

    /// The members of a story group, in no particular order.
    pub fn story_members(&self, story: ItemId) -> Result<Vec<ItemId>, StoreError> {
        self.trees()?
            .stories
            .scan_prefix(story.0)
            .map(|r| {
                let (key, _) = r?;
                ItemId::from_slice(&key[16..]).ok_or(StoreError::Corrupt {
                    what: "story key",
                    message: format!("{} bytes", key.len()),
                })
            })
            .collect()
    }

    /// Makes the store look built by a version that cut text into terms another way.
    #[cfg(test)]
    pub(crate) fn forget_terms_version(&self) -> Result<(), StoreError> {
        self.trees()?.meta.remove(TERMS_VERSION_KEY)?;
        Ok(())
    }

    /// Writes everything out, the term statistics included.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.guarded(|| self.flush_unguarded())
    }

    fn flush_unguarded(&self) -> Result<(), StoreError> {
        let stats = self.ingest_guard();
        self.save_term_stats(&stats, true)?;
        drop(stats);
        self.trees()?.flush()
    }

    /// Rewrites the store at `path` into fresh files holding only live records, then puts
    /// them in its place: sled reuses the space of deleted records but never gives it back to
    /// the file system, so after a large prune the files stay large until this runs. Needs
    /// the store to itself (the daemon stopped). Returns the sizes before and after.
    pub fn compact(path: &Path) -> Result<(u64, u64), StoreError> {
        let old = Store::open(path)?;
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
        for tree_name in old_trees.db.tree_names() {
            let from = old_trees.db.open_tree(&tree_name)?;
            let to = fresh.open_tree(&tree_name)?;
            let mut batch = sled::Batch::default();
            let mut in_batch = 0;
            for entry in from.iter() {
                let (k, v) = entry?;
                batch.insert(k, v);
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
        let after = Store::open(path)?.size_on_disk();
        Ok((before, after))
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

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.trees()
            .ok()
            .and_then(|t| t.db.size_on_disk().ok())
            .unwrap_or(0)
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

/// Opens the sled database at `path` and its trees.
fn open_trees(path: &Path, cache_bytes: u64) -> Result<Trees, StoreError> {
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
        key_terms: tree("key_terms")?,
        sources: tree("sources")?,
        tombstones: tree("tombstones")?,
        meta: tree("meta")?,
        written: std::sync::atomic::AtomicU64::new(0),
        states: Mutex::new(HashMap::new()),
        state_writers: Mutex::new(HashMap::new()),
        text_index_from: std::sync::atomic::AtomicI64::new(i64::MIN),
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
        Ok(trees)
    })
}

/// What a failed write of the room probe says about the store's disk, for the log.
fn probe_failure(kind: std::io::ErrorKind) -> &'static str {
    use std::io::ErrorKind;
    match kind {
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => "no room to write on its disk yet",
        ErrorKind::ReadOnlyFilesystem => "its disk is still read-only",
        ErrorKind::NotFound => "its directory is missing (is its disk mounted?)",
        _ => "cannot write on its disk yet",
    }
}

fn open_error(path: &Path, e: sled::Error) -> StoreError {
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
        store: &Store,
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
    fn apply(store: &Store, source: &str, plan: &IngestPlan) {
        let stats = store.ingest_guard();
        store
            .apply_poll(source, plan, &[], &[], &SourceState::default(), stats)
            .expect("apply");
    }

    /// Items published more than `dedup.index_age` ago are matched by link only: a poll does
    /// not index them, dropping the index of items that reach the age removes their entries
    /// and nothing else, a reopened store still indexes nothing older than that, and a longer
    /// age lets polls index older items again.
    #[test]
    fn the_text_index_reaches_back_only_to_its_age() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("s");
        let store = Store::open(&path).expect("store");
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
        let found = |store: &Store, n: u8| {
            let hits = store
                .candidates(&[1000 + u32::from(n)], now - age_of(n), window, 32, "b")
                .expect("candidates");
            hits.iter().any(|(id, _)| *id == ids[usize::from(n)])
        };
        let count = |store: &Store, tree: &str| {
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
        let store = Store::open(&path).expect("reopen");
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
        let store = Store::open(&dir.path().join("s")).expect("store");
        let now = Utc::now();
        let plan = apply_new(&store, "a", (0..10).map(|n| (n, now, vec![u32::from(n)])));
        assert!(
            !store.checkpoint_if_due().expect("checkpoint"),
            "not due yet"
        );
        let in_use = store.trees().expect("open");
        assert!(!store.checkpoint_after(1).expect("checkpoint"), "in use");
        drop(in_use);
        let clone = store.clone();
        assert!(
            clone.checkpoint_after(1).expect("checkpoint"),
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
        let store = Store::open(&dir.path().join("s")).expect("store");
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
        let store = Store::open(&path).expect("store");
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
        let again = Store::open(&path).expect("store opened again");
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
        let store = Store::open(&path).expect("store");
        let state_of = |round: u32| SourceState {
            consecutive_failures: round,
            ..SourceState::default()
        };
        std::thread::scope(|scope| {
            for t in 0..4 {
                let store = store.clone();
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
        let expect_all = |store: &Store| {
            for t in 0..4 {
                let state = store.source_state(&format!("own-{t}")).expect("state");
                assert_eq!(state, state_of(199), "own-{t}");
            }
            assert_eq!(store.source_state("shared").expect("state"), state_of(199));
        };
        expect_all(&store);
        store.flush().expect("flush");
        drop(store);
        expect_all(&Store::open(&path).expect("store opened again"));
    }

    /// Whatever part of the window memory holds, lookups find what sled alone finds.
    #[test]
    fn lookups_through_memory_find_what_sled_finds() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("s")).expect("store");
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
        let answers = |store: &Store| -> Vec<Vec<(ItemId, usize)>> {
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
        let store = Store::open(&dir.path().join("s")).expect("store");
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
