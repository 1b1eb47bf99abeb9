//! The store: sled trees, their keys and encodings, one batch per poll, flush.
//!
//! Trees (keys big-endian so that sled's ordered iteration is newest first):
//!
//! | tree | key | value |
//! | --- | --- | --- |
//! | `items` | item id (16 bytes) | [`Item`] as JSON |
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

mod item_record;
mod recent;
use recent::RecentIndex;

/// The layout version this build reads and writes. 2: item records compressed
/// ([`item_record`]); a version-1 store is read as it is and its items rewritten once.
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
    fn states(&self) -> MutexGuard<'_, HashMap<String, SourceState>> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The kept state of `source`, read from sled on first use. A state read from sled never
    /// replaces one a writer kept meanwhile.
    fn state(&self, source: &str) -> Result<SourceState, StoreError> {
        if let Some(state) = self.states().get(source) {
            return Ok(state.clone());
        }
        let Some(bytes) = self.sources.get(source.as_bytes())? else {
            return Ok(SourceState::default());
        };
        let state: SourceState = decode(&bytes, "source state")?;
        Ok(self
            .states()
            .entry(source.to_owned())
            .or_insert(state)
            .clone())
    }

    /// Writes the state `change` makes of the stored one: sled first, then the kept copy,
    /// under the source's own lock.
    fn update_state(
        &self,
        source: &str,
        change: impl FnOnce(SourceState) -> SourceState,
    ) -> Result<(), StoreError> {
        let writer = self.state_writer(source);
        let _writing = writer.lock().unwrap_or_else(|p| p.into_inner());
        let next = change(self.state(source)?);
        self.write_state(source, next)
    }

    /// Writes `state` with the stored item count (a poll that stores no item), under the
    /// source's own lock: as [`Trees::update_state`], without copying the stored state.
    fn put_state_keeping_count(&self, source: &str, state: SourceState) -> Result<(), StoreError> {
        let writer = self.state_writer(source);
        let _writing = writer.lock().unwrap_or_else(|p| p.into_inner());
        let kept = self.states().get(source).map(|kept| kept.item_count);
        let item_count = match kept {
            Some(count) => count,
            None => self.state(source)?.item_count,
        };
        self.write_state(
            source,
            SourceState {
                item_count,
                ..state
            },
        )
    }

    /// The lock held while `source`'s state is written.
    fn state_writer(&self, source: &str) -> Arc<Mutex<()>> {
        let mut writers = self.state_writers.lock().unwrap_or_else(|p| p.into_inner());
        match writers.get(source) {
            Some(writer) => writer.clone(),
            None => writers.entry(source.to_owned()).or_default().clone(),
        }
    }

    /// sled first, then the kept copy; the caller holds the source's lock.
    fn write_state(&self, source: &str, next: SourceState) -> Result<(), StoreError> {
        self.sources.insert(source.as_bytes(), encode(&next))?;
        let mut states = self.states();
        match states.get_mut(source) {
            Some(kept) => *kept = next,
            None => {
                states.insert(source.to_owned(), next);
            }
        }
        Ok(())
    }

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
    /// Opens (or creates) the store at `path`. A store another handle is still releasing (sled
    /// finishes background work after a drop) is waited for, briefly.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let trees = open_trees_waiting(path)?;
        let store = Store {
            trees: Arc::new(RwLock::new(Some(Arc::new(trees)))),
            path: path.to_owned(),
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
        *slot = Some(Arc::new(open_trees_waiting(&self.path)?));
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
        *slot = Some(Arc::new(open_trees_waiting(&self.path)?));
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
    /// batches of [`COMPRESS_SLICE`], each flushed: an upgrade stopped midway goes on from
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

    pub fn source_state(&self, source: &str) -> Result<SourceState, StoreError> {
        self.trees()?.state(source)
    }

    /// Saves a source's state; used for polls that store no items. It reaches the disk with
    /// the next flush, started at most `LAZY_FLUSH` (1 s) later (on a thread of its own)
    /// while the daemon keeps writing, and at shutdown: a state lost in a crash only means
    /// that source is polled again. Its `item_count` is the stored one (such a poll adds no item), so that a state read before
    /// a prune never brings back a stale count.
    pub fn put_source_state(&self, source: &str, state: SourceState) -> Result<(), StoreError> {
        self.guarded(|| {
            self.trees()?.put_state_keeping_count(source, state)?;
            self.flush_lazily()
        })
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

    /// Whether retention pruned item `id` of `source` (so that it is not ingested again
    /// while the source's feed still lists it).
    pub fn is_pruned(&self, source: &str, id: ItemId) -> Result<bool, StoreError> {
        Ok(self
            .trees()?
            .tombstones
            .contains_key(tombstone_key(source, id))?)
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

    /// Tombstones held, over all sources.
    pub fn tombstone_count(&self) -> usize {
        self.trees().map_or(0, |t| t.tombstones.len())
    }

    /// Deletes the items published before `cutoff` and those beyond the newest `max_items`,
    /// with everything that refers to them (indexes, feed memberships, story membership,
    /// URL claims they hold, fingerprints and key-term index entries), leaves a tombstone for each, sets
    /// the affected sources' counts, and flushes. Serialised with ingestion. Returns how many
    /// items each source lost.
    pub fn prune(
        &self,
        cutoff: Option<DateTime<Utc>>,
        max_items: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, u64>, StoreError> {
        self.guarded(|| self.prune_unguarded(cutoff, max_items, now))
    }

    fn prune_unguarded(
        &self,
        cutoff: Option<DateTime<Utc>>,
        max_items: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, u64>, StoreError> {
        let _guard = self.ingest_guard();
        // One database for the whole sweep, even if another thread reopens the store.
        let trees = self.trees()?;
        let mut victims: Vec<(Vec<u8>, ItemId)> = Vec::new();
        for (n, entry) in trees.by_time.iter().enumerate() {
            let (key, _) = entry?;
            let Some((time, id)) = parse_time_key(&key) else {
                return Err(StoreError::Corrupt {
                    what: "time index key",
                    message: format!("{} bytes", key.len()),
                });
            };
            let too_many = max_items.is_some_and(|max| n as u64 >= max);
            let too_old = cutoff.is_some_and(|c| time < c);
            if too_many || too_old {
                victims.push((key.to_vec(), id));
            }
        }
        self.remove_items(&trees, &victims, now)
    }

    /// Deletes the items of `source` beyond its newest `keep`, as [`Store::prune`] deletes
    /// (tombstones, indexes, the source's count), and flushes when it deleted any: a source's
    /// quota, so that a source which floods the store loses its own oldest items, never other
    /// sources'. Only that source's index is read. Serialised with ingestion. Returns how many
    /// items went.
    pub fn prune_source(
        &self,
        source: &str,
        keep: u64,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.guarded(|| {
            let _guard = self.ingest_guard();
            let trees = self.trees()?;
            let prefix = name_prefix(source);
            let mut victims: Vec<(Vec<u8>, ItemId)> = Vec::new();
            // Newest first: the index key is the source, then the reversed time.
            for key in trees
                .by_source
                .scan_prefix(&prefix)
                .keys()
                .skip(keep as usize)
            {
                let key = key?;
                let time_key = key[prefix.len()..].to_vec();
                let Some((_, id)) = parse_time_key(&time_key) else {
                    return Err(StoreError::Corrupt {
                        what: "source index key",
                        message: format!("{} bytes", key.len()),
                    });
                };
                victims.push((time_key, id));
            }
            if victims.is_empty() {
                return Ok(0);
            }
            let lost = self.remove_items(&trees, &victims, now)?;
            Ok(lost.values().sum())
        })
    }

    /// Deletes `victims` (time index key and id) with everything that refers to them, leaves
    /// a tombstone for each, sets the affected sources' counts, and flushes. The caller holds
    /// the ingest guard. Returns how many items each source lost.
    fn remove_items(
        &self,
        trees: &Trees,
        victims: &[(Vec<u8>, ItemId)],
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, u64>, StoreError> {
        let feeds = self.indexed_feeds()?;
        let pruned_at = now.timestamp_micros().to_be_bytes();
        let mut lost: HashMap<String, u64> = HashMap::new();
        for chunk in victims.chunks(WRITE_CHUNK) {
            let mut items = sled::Batch::default();
            let mut by_time = sled::Batch::default();
            let mut by_source = sled::Batch::default();
            let mut feed_index = sled::Batch::default();
            let mut stories = sled::Batch::default();
            let mut fingerprints = sled::Batch::default();
            let mut key_terms = sled::Batch::default();
            let mut urls = sled::Batch::default();
            let mut tombstones = sled::Batch::default();
            for (time_key, id) in chunk {
                by_time.remove(time_key.as_slice());
                let Some(item) = self.item(*id)? else {
                    continue; // an index entry left by a crash: nothing else to remove
                };
                items.remove(&id.0);
                by_source.remove(prefixed_key(&item.source, item.published, item.id));
                for feed in &feeds {
                    feed_index.remove(prefixed_key(feed, item.published, item.id));
                }
                stories.remove(&story_key(item.story, item.id));
                if let Some(record) = self.fingerprint(item.id)? {
                    for term in &record.keys {
                        key_terms.remove(key_term_entry(
                            *term,
                            record.published,
                            item.id,
                            &record.source,
                        ));
                    }
                }
                fingerprints.remove(&item.id.0);
                if let Some(url) = &item.canonical_url {
                    if self.url_claim(url)?.is_some_and(|c| c.item == item.id) {
                        urls.remove(&url_key(url));
                    }
                }
                tombstones.insert(tombstone_key(&item.source, item.id), &pruned_at);
                *lost.entry(item.source.clone()).or_default() += 1;
            }
            trees.tombstones.apply_batch(tombstones)?;
            trees.feed_index.apply_batch(feed_index)?;
            trees.by_source.apply_batch(by_source)?;
            trees.by_time.apply_batch(by_time)?;
            trees.stories.apply_batch(stories)?;
            trees.key_terms.apply_batch(key_terms)?;
            trees.fingerprints.apply_batch(fingerprints)?;
            trees.urls.apply_batch(urls)?;
            trees.items.apply_batch(items)?;
            let mut recent = self.recent();
            for (_, id) in chunk {
                recent.remove(*id);
            }
        }
        for source in lost.keys() {
            let item_count = self.count_of_source(source)?;
            trees.update_state(source, |stored| SourceState {
                item_count,
                ..stored
            })?;
        }
        trees.flush()?;
        Ok(lost)
    }

    /// Drops the text index entries (key terms and fingerprint) of items published before
    /// `before`, so that they are matched by link only: oldest first, from where the last
    /// call stopped, in slices that each hold the ingest guard only briefly. Items published
    /// before `before` are not indexed by later polls either; a `before` earlier than the
    /// last one (a longer age) lets polls index from it again. Returns how many items'
    /// entries went.
    pub fn drop_text_index_before(&self, before: DateTime<Utc>) -> Result<usize, StoreError> {
        self.guarded(|| {
            let trees = self.trees()?;
            let mut dropped = 0;
            let mut resume: Option<Vec<u8>> = None;
            while let Some((n, last)) = self.drop_text_index_slice(&trees, before, resume)? {
                dropped += n;
                resume = Some(last);
            }
            // Moved back as well when the age was made longer: nothing before an earlier time
            // is indexed either, and polls index from it again.
            let before = before.timestamp_micros();
            let from = &trees.text_index_from;
            if from.load(std::sync::atomic::Ordering::Relaxed) != before {
                from.store(before, std::sync::atomic::Ordering::Relaxed);
                trees
                    .meta
                    .insert(TEXT_INDEX_FROM_KEY, &before.to_be_bytes())?;
                trees.flush()?;
            }
            Ok(dropped)
        })
    }

    /// One slice of [`Store::drop_text_index_before`]: up to [`TEXT_INDEX_SLICE`] items
    /// published before `before`, oldest first, from the cursor or after the time-index key
    /// `resume`. Returns how many had entries and the last key seen, or `None` when none
    /// was left.
    fn drop_text_index_slice(
        &self,
        trees: &Trees,
        before: DateTime<Utc>,
        resume: Option<Vec<u8>>,
    ) -> Result<Option<(usize, Vec<u8>)>, StoreError> {
        use std::ops::Bound;
        let _guard = self.ingest_guard();
        let from = trees
            .text_index_from
            .load(std::sync::atomic::Ordering::Relaxed);
        if from >= before.timestamp_micros() {
            return Ok(None);
        }
        // by_time runs newest first: the items published before `before` lie after its key,
        // those published at or after the cursor up to the cursor's last key.
        let newest = Bound::Excluded(time_key(before, ItemId([0xFF; 16])));
        let oldest = match (resume, DateTime::from_timestamp_micros(from)) {
            (Some(key), _) => Bound::Excluded(key),
            (None, Some(from)) if from.timestamp_micros() > 0 => {
                Bound::Included(time_key(from, ItemId([0xFF; 16])))
            }
            (None, _) => Bound::Unbounded,
        };
        let mut last = None;
        let mut dropped = 0;
        let mut key_terms = sled::Batch::default();
        let mut fingerprints = sled::Batch::default();
        let mut gone = Vec::new();
        for key in trees
            .by_time
            .range((newest, oldest))
            .keys()
            .rev()
            .take(TEXT_INDEX_SLICE)
        {
            let key = key?;
            if let Some((time, id)) = parse_time_key(&key) {
                if let Some(record) = self.fingerprint_in_sled(id)? {
                    for term in &record.keys {
                        let entry = key_term_entry(*term, record.published, id, &record.source);
                        key_terms.remove(entry);
                    }
                    fingerprints.remove(&id.0);
                    gone.push(id);
                    dropped += 1;
                }
                // Every item published before this one's time has been seen.
                let micros = time.timestamp_micros();
                if micros > from {
                    trees
                        .text_index_from
                        .store(micros, std::sync::atomic::Ordering::Relaxed);
                }
            }
            last = Some(key.to_vec());
        }
        trees.key_terms.apply_batch(key_terms)?;
        trees.fingerprints.apply_batch(fingerprints)?;
        let mut recent = self.recent();
        for id in gone {
            recent.remove(id);
        }
        Ok(last.map(|last| (dropped, last)))
    }

    /// Writes one poll: the plan's items and claims, their feed memberships and the source's
    /// new state, then flushes. `feeds` names every output feed the source belongs to, so that
    /// an edited item leaves the feeds it no longer matches.
    pub fn apply_poll(
        &self,
        source: &str,
        plan: &IngestPlan,
        feeds: &[String],
        memberships: &[FeedMembership],
        state: &SourceState,
        term_stats: MutexGuard<'_, TermStats>,
    ) -> Result<(), StoreError> {
        self.guarded(|| {
            self.apply_poll_unguarded(source, plan, feeds, memberships, state, term_stats)
        })
    }

    fn apply_poll_unguarded(
        &self,
        source: &str,
        plan: &IngestPlan,
        feeds: &[String],
        memberships: &[FeedMembership],
        state: &SourceState,
        term_stats: MutexGuard<'_, TermStats>,
    ) -> Result<(), StoreError> {
        // One database for the whole poll, flush included, even if the store is reopened.
        let trees = self.trees()?;
        // Written in chunks: sled holds a whole batch in memory several times over, so one
        // batch for a 20,000-item feed costs a gigabyte; chunks keep a poll's memory flat.
        // The poll still counts as done only after the state is written and flushed.
        let mut memberships_of: HashMap<ItemId, Vec<&str>> = HashMap::new();
        for m in memberships {
            memberships_of.entry(m.item).or_default().push(&m.feed);
        }
        for (n, chunk) in plan.writes.chunks(WRITE_CHUNK).enumerate() {
            if n > 0 && n % FLUSH_EVERY_CHUNKS == 0 {
                trees.flush()?;
            }
            let mut by_time = sled::Batch::default();
            let mut by_source = sled::Batch::default();
            let mut feed_index = sled::Batch::default();
            let mut stories = sled::Batch::default();
            let mut items = sled::Batch::default();
            for write in chunk {
                let item = &write.item;
                if let Some(old) = &write.previous {
                    by_time.remove(time_key(old.published, old.id));
                    by_source.remove(prefixed_key(source, old.published, old.id));
                    for feed in feeds {
                        feed_index.remove(prefixed_key(feed, old.published, old.id));
                    }
                }
                by_time.insert(time_key(item.published, item.id), &[]);
                by_source.insert(prefixed_key(source, item.published, item.id), &[]);
                if write.previous.is_none() {
                    let link = write.link.as_ref().map(encode).unwrap_or_default();
                    stories.insert(&story_key(item.story, item.id), link);
                }
                for feed in memberships_of.get(&item.id).into_iter().flatten() {
                    feed_index.insert(prefixed_key(feed, item.published, item.id), &[]);
                }
                let bytes = item_record::encode(item);
                trees
                    .written
                    .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
                items.insert(&item.id.0, bytes);
            }
            trees.by_time.apply_batch(by_time)?;
            trees.by_source.apply_batch(by_source)?;
            trees.feed_index.apply_batch(feed_index)?;
            trees.stories.apply_batch(stories)?;
            trees.items.apply_batch(items)?;
        }
        // Items published before this are matched by link only: their text is not indexed.
        let index_from = plan
            .index_from
            .map_or(i64::MIN, |t| t.timestamp_micros())
            .max(
                trees
                    .text_index_from
                    .load(std::sync::atomic::Ordering::Relaxed),
            );
        let indexed_now = |indexed: &IndexedFingerprint| {
            indexed.record.published.timestamp_micros() >= index_from
        };
        for chunk in plan.fingerprints.chunks(WRITE_CHUNK) {
            let (key_terms, fingerprints) = text_index_writes(chunk, indexed_now);
            trees.key_terms.apply_batch(key_terms)?;
            trees.fingerprints.apply_batch(fingerprints)?;
        }
        if !plan.fingerprints.is_empty() {
            let mut recent = self.recent();
            if !recent.is_warm() {
                // Before adding: the fill reads what sled holds, these included.
                self.warm_recent(&mut recent)?;
            }
            for indexed in &plan.fingerprints {
                if !indexed_now(indexed) {
                    recent.remove(indexed.id);
                    continue;
                }
                let record = Arc::new(indexed.record.clone());
                recent.insert(indexed.id, record, source_tag(&indexed.record.source));
            }
            recent.forget_out_of_reach(Utc::now().timestamp_micros());
        }
        let mut urls = sled::Batch::default();
        for (url, claim) in &plan.claims {
            urls.insert(&url_key(url), encode(claim));
        }
        trees.urls.apply_batch(urls)?;
        // Tombstones of items the feed no longer lists are not needed any more.
        let mut gone = sled::Batch::default();
        let prefix = name_prefix(source);
        for key in trees.tombstones.scan_prefix(&prefix).keys() {
            let key = key?;
            let listed = ItemId::from_slice(&key[prefix.len()..])
                .is_some_and(|id| plan.present.contains(&id));
            if !listed {
                gone.remove(key);
            }
        }
        trees.tombstones.apply_batch(gone)?;
        // The count from the stored state (callers hold the ingest guard, as `prune` does),
        // not from the state the caller read before its fetch.
        trees.update_state(source, |stored| SourceState {
            item_count: stored.item_count.saturating_add(plan.new_items() as u64),
            ..state.clone()
        })?;
        if !plan.fingerprints.is_empty() {
            self.save_term_stats(&term_stats, false)?;
        }
        // Written: the next poll may plan against it. The flush, the slow part, runs without
        // the guard, so polls of many sources flush side by side instead of in a queue.
        drop(term_stats);
        if plan.writes.is_empty() && plan.claims.is_empty() && plan.fingerprints.is_empty() {
            // Nothing but the source's state changed (every item unchanged).
            return self.flush_lazily();
        }
        trees.flush()?;
        Ok(())
    }

    /// Writes the term statistics when [`TERM_STATS_SAVE_EVERY`] has passed (or `always`).
    fn save_term_stats(&self, stats: &TermStats, always: bool) -> Result<(), StoreError> {
        let mut saved = self
            .term_stats_saved
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if always || saved.elapsed() >= TERM_STATS_SAVE_EVERY {
            self.trees()?
                .meta
                .insert(TERM_STATS_KEY, stats.to_bytes())?;
            *saved = std::time::Instant::now();
        }
        Ok(())
    }

    /// Ids of the items in an output feed, newest first.
    pub fn feed_items(&self, feed: &str) -> impl Iterator<Item = Result<ItemId, StoreError>> + '_ {
        let prefix = name_prefix(feed);
        let skip = prefix.len() + 8;
        self.iter_of(|t| t.feed_index.scan_prefix(prefix))
            .map(move |r| {
                let (key, _) = r?;
                ItemId::from_slice(&key[skip..]).ok_or(StoreError::Corrupt {
                    what: "feed index key",
                    message: format!("{} bytes", key.len()),
                })
            })
    }

    /// Ids in the index of output feed `feed` that come after the entry of an item published
    /// at `published` with id `id` (newest first, as [`Store::feed_items`]); the item itself
    /// need not be there any more.
    pub fn feed_items_after(
        &self,
        feed: &str,
        published: DateTime<Utc>,
        id: ItemId,
    ) -> impl Iterator<Item = Result<ItemId, StoreError>> + '_ {
        let prefix = name_prefix(feed);
        let skip = prefix.len() + 8;
        let mut end = prefix.clone();
        end.extend_from_slice(&[0xff; 25]);
        let start = prefixed_key(feed, published, id);
        self.iter_of(|t| {
            t.feed_index.range((
                std::ops::Bound::Excluded(start),
                std::ops::Bound::Included(end),
            ))
        })
        .map(move |r| {
            let (key, _) = r?;
            ItemId::from_slice(&key[skip..]).ok_or(StoreError::Corrupt {
                what: "feed index key",
                message: format!("{} bytes", key.len()),
            })
        })
    }

    /// Whether `item` is in the index of output feed `feed`.
    pub fn feed_contains(&self, feed: &str, item: &Item) -> Result<bool, StoreError> {
        Ok(self
            .trees()?
            .feed_index
            .contains_key(prefixed_key(feed, item.published, item.id))?)
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

    /// Items of sources other than `source` keyed by any of `terms`, published within
    /// `window` of `published`, each with how many of `terms` key it; at most `per_term` for
    /// each term, the latest first. A prolific source's own items never fill the quota.
    /// Calls `visit` with the record of each item published within `window` of `published`,
    /// newest first, at most `limit` of them, from the recent index in memory only (items
    /// before its covered time, or all with `dedup.memory_items = 0`, are not visited). For
    /// looking by meaning, which has no index key to follow.
    pub fn visit_recent(
        &self,
        published: DateTime<Utc>,
        window: std::time::Duration,
        limit: usize,
        mut visit: impl FnMut(ItemId, &FingerprintRecord),
    ) -> Result<(), StoreError> {
        let (recent, span) = self.recent_around(published, window)?;
        for (id, record) in recent
            .published_within(
                span.oldest.timestamp_micros(),
                span.newest.timestamp_micros(),
            )
            .take(limit)
        {
            visit(id, record);
        }
        Ok(())
    }

    /// The recent index, warmed and following `window`, and the span of `window` either side
    /// of `published`.
    fn recent_around(
        &self,
        published: DateTime<Utc>,
        window: std::time::Duration,
    ) -> Result<(MutexGuard<'_, RecentIndex>, Span), StoreError> {
        let mut recent = self.recent();
        recent.set_window(window);
        if !recent.is_warm() {
            self.warm_recent(&mut recent)?;
        }
        let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
        let newest = published.checked_add_signed(window).unwrap_or(published);
        let oldest = published.checked_sub_signed(window).unwrap_or(published);
        Ok((recent, Span { oldest, newest }))
    }

    pub fn candidates(
        &self,
        terms: &[u32],
        published: DateTime<Utc>,
        window: std::time::Duration,
        per_term: usize,
        source: &str,
    ) -> Result<Vec<(ItemId, usize)>, StoreError> {
        let own = source_tag(source);
        let (recent, Span { oldest, newest }) = self.recent_around(published, window)?;
        let (from, to) = (oldest.timestamp_micros(), newest.timestamp_micros());
        // Published at or after this, memory has them all; before it, sled does.
        let covered = recent.covered_from();
        // Opened only when some term needs sled.
        let mut trees: Option<Arc<Trees>> = None;
        let mut out: Vec<(ItemId, usize)> = Vec::new();
        let mut count = |id: ItemId| match out.iter_mut().find(|(c, _)| *c == id) {
            Some((_, shared)) => *shared += 1,
            None => out.push((id, 1)),
        };
        for term in terms {
            let mut taken = 0;
            for posting in recent
                .postings(*term, from, to)
                .filter(|p| p.source != own)
                .take(per_term)
            {
                count(posting.id);
                taken += 1;
            }
            if taken == per_term || from >= covered {
                continue;
            }
            let upper = DateTime::from_timestamp_micros(to.min(covered.saturating_sub(1)))
                .unwrap_or(newest);
            let start = key_term_key(*term, upper, ItemId([0; 16]));
            let mut end = key_term_key(*term, oldest, ItemId([0xFF; 16]));
            end.extend_from_slice(&[0xFF; 4]);
            let trees = match &trees {
                Some(t) => t,
                None => trees.insert(self.trees()?),
            };
            let others = trees
                .key_terms
                .range(start..=end)
                .keys()
                .filter(|key| match key {
                    Ok(key) => key.get(28..32) != Some(&own[..]),
                    Err(_) => true,
                });
            for key in others.take(per_term - taken) {
                let key = key?;
                if let Some(id) = key.get(12..28).and_then(ItemId::from_slice) {
                    count(id);
                }
            }
        }
        Ok(out)
    }

    fn recent(&self) -> MutexGuard<'_, RecentIndex> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fills the recent index from sled: the fingerprints of items published within its
    /// reach of now (or later), newest first, up to its capacity.
    fn warm_recent(&self, recent: &mut RecentIndex) -> Result<(), StoreError> {
        let since = Utc::now().timestamp_micros().saturating_sub(recent.reach());
        let mut covered = since;
        for key in self.trees()?.by_time.iter().keys() {
            let key = key?;
            let Some((time, id)) = parse_time_key(&key) else {
                continue;
            };
            let micros = time.timestamp_micros();
            if micros < since {
                break;
            }
            if recent.len() >= recent.capacity() {
                // Everything after this item's time is in; from it on, sled answers.
                covered = micros.saturating_add(1);
                break;
            }
            match self.fingerprint_in_sled(id) {
                Ok(Some(record)) => {
                    let tag = source_tag(&record.source);
                    recent.insert_any(id, Arc::new(record), tag);
                }
                Ok(None) => {}
                Err(StoreError::Corrupt { what, message }) => {
                    tracing::warn!(item = %id, "skipping an unreadable {what}: {message}");
                }
                Err(e) => return Err(e),
            }
        }
        recent.warmed(covered);
        tracing::debug!(
            items = recent.len(),
            "filled the in-memory index of recent items"
        );
        Ok(())
    }

    pub fn fingerprint(&self, id: ItemId) -> Result<Option<FingerprintRecord>, StoreError> {
        match self.recent().get(id) {
            Some(record) => Ok(Some((*record).clone())),
            None => self.fingerprint_in_sled(id),
        }
    }

    /// An item's fingerprint, shared with the recent index when it is there.
    pub fn shared_fingerprint(
        &self,
        id: ItemId,
    ) -> Result<Option<Arc<FingerprintRecord>>, StoreError> {
        if let Some(record) = self.recent().get(id) {
            return Ok(Some(record));
        }
        Ok(self.fingerprint_in_sled(id)?.map(Arc::new))
    }

    fn fingerprint_in_sled(&self, id: ItemId) -> Result<Option<FingerprintRecord>, StoreError> {
        match self.trees()?.fingerprints.get(id.0)? {
            Some(bytes) => {
                FingerprintRecord::from_bytes(&bytes)
                    .map(Some)
                    .ok_or(StoreError::Corrupt {
                        what: "fingerprint",
                        message: format!("{} bytes", bytes.len()),
                    })
            }
            None => Ok(None),
        }
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

    /// The fingerprint of the selection rules the feed's index was built with.
    pub fn feed_fingerprint(&self, feed: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .trees()?
            .meta
            .get(format!("{FINGERPRINT_PREFIX}{feed}"))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Rebuilds a feed's index from every stored item for which `selects` is true, and records
    /// the fingerprint of the rules used. Returns the number of items indexed.
    pub fn rebuild_feed_index(
        &self,
        feed: &str,
        fingerprint: &str,
        selects: impl Fn(&Item) -> bool,
    ) -> Result<usize, StoreError> {
        self.drop_feed_index(feed)?;
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for entry in self.trees()?.items.iter() {
            let (_, bytes) = entry?;
            let item = item_record::decode(&bytes)?;
            if selects(&item) {
                batch.insert(prefixed_key(feed, item.published, item.id), &[]);
                count += 1;
            }
        }
        self.trees()?.feed_index.apply_batch(batch)?;
        self.trees()?.meta.insert(
            format!("{FINGERPRINT_PREFIX}{feed}"),
            fingerprint.as_bytes(),
        )?;
        self.trees()?.flush()?;
        Ok(count)
    }

    /// Removes a feed's index and fingerprint (the feed left the config).
    pub fn drop_feed_index(&self, feed: &str) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for key in self
            .trees()?
            .feed_index
            .scan_prefix(name_prefix(feed))
            .keys()
        {
            batch.remove(key?);
        }
        self.trees()?.feed_index.apply_batch(batch)?;
        self.trees()?
            .meta
            .remove(format!("{FINGERPRINT_PREFIX}{feed}"))?;
        Ok(())
    }

    /// Names of the feeds that have an index.
    pub fn indexed_feeds(&self) -> Result<Vec<String>, StoreError> {
        self.trees()?
            .meta
            .scan_prefix(FINGERPRINT_PREFIX)
            .keys()
            .map(|k| {
                let k = k?;
                Ok(String::from_utf8_lossy(&k[FINGERPRINT_PREFIX.len()..]).into_owned())
            })
            .collect()
    }

    /// The version of the way text is cut into terms ([`crate::dedup::fingerprint::TERMS_VERSION`])
    /// that the text index and term statistics were built with: 1 when none was recorded.
    pub fn terms_version(&self) -> Result<u32, StoreError> {
        Ok(match self.trees()?.meta.get(TERMS_VERSION_KEY)? {
            Some(bytes) => bytes
                .as_ref()
                .try_into()
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    what: "terms version",
                    message: format!("{} bytes", bytes.len()),
                })?,
            None => 1,
        })
    }

    /// Makes the store look built by a version that cut text into terms another way.
    #[cfg(test)]
    pub(crate) fn forget_terms_version(&self) -> Result<(), StoreError> {
        self.trees()?.meta.remove(TERMS_VERSION_KEY)?;
        Ok(())
    }

    /// The ids of the items whose text is indexed (those with a fingerprint).
    pub fn text_indexed_items(&self) -> Result<Vec<ItemId>, StoreError> {
        self.trees()?
            .fingerprints
            .iter()
            .keys()
            .filter_map(|k| match k {
                Ok(k) => <[u8; 16]>::try_from(k.as_ref())
                    .ok()
                    .map(|id| Ok(ItemId(id))),
                Err(e) => Some(Err(e.into())),
            })
            .collect()
    }

    /// Replaces indexed items' fingerprints and key-term entries with re-derived ones (each
    /// [`IndexedFingerprint`] names the record it replaces). Part of
    /// [`crate::daemon::upgrade_text_index`]; the caller holds the ingest guard.
    pub fn replace_fingerprints(&self, chunk: &[IndexedFingerprint]) -> Result<(), StoreError> {
        self.guarded(|| {
            let trees = self.trees()?;
            let (key_terms, fingerprints) = text_index_writes(chunk, |_| true);
            trees.key_terms.apply_batch(key_terms)?;
            trees.fingerprints.apply_batch(fingerprints)?;
            let mut recent = self.recent();
            if recent.is_warm() {
                for indexed in chunk {
                    let record = Arc::new(indexed.record.clone());
                    recent.insert(indexed.id, record, source_tag(&indexed.record.source));
                }
            }
            Ok(())
        })
    }

    /// Ends a rebuild of the text index: keeps `stats` (in place of the guarded ones) and
    /// `version`, forgets the in-memory copy of the old index, and flushes.
    pub fn finish_text_index_rebuild(
        &self,
        guard: &mut MutexGuard<'_, TermStats>,
        stats: TermStats,
        version: u32,
    ) -> Result<(), StoreError> {
        self.guarded(|| {
            **guard = stats;
            self.save_term_stats(guard, true)?;
            let trees = self.trees()?;
            trees
                .meta
                .insert(TERMS_VERSION_KEY, &version.to_be_bytes())?;
            let capacity = self.recent().capacity();
            *self.recent() = RecentIndex::new(capacity);
            trees.flush()
        })
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
fn open_trees_waiting(path: &Path) -> Result<Trees, StoreError> {
    let mut attempts = 0;
    loop {
        match open_trees(path) {
            Err(StoreError::Locked { .. }) if attempts < LOCK_RETRIES => {
                attempts += 1;
                std::thread::sleep(LOCK_RETRY_DELAY);
            }
            other => return other,
        }
    }
}

/// Opens the sled database at `path` and its trees.
fn open_trees(path: &Path) -> Result<Trees, StoreError> {
    let db = sled::Config::new()
        .path(path)
        .cache_capacity(64 * 1024 * 1024)
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

/// Newer times sort first: the key holds `i64::MAX - microseconds since 1970`.
fn reverse_time(t: DateTime<Utc>) -> [u8; 8] {
    let micros = t.timestamp_micros().max(0);
    ((i64::MAX - micros) as u64).to_be_bytes()
}

/// The time a [`reverse_time`] key part stands for.
fn time_of_reverse(bytes: [u8; 8]) -> Option<DateTime<Utc>> {
    let micros = i64::MAX - i64::try_from(u64::from_be_bytes(bytes)).ok()?;
    DateTime::from_timestamp_micros(micros)
}

/// The time of the [`reverse_time`] key part at `at` in `key`.
fn time_at(key: &[u8], at: usize) -> Option<DateTime<Utc>> {
    key.get(at..at.checked_add(8)?)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .and_then(time_of_reverse)
}

/// The time and item of a [`time_key`].
fn parse_time_key(key: &[u8]) -> Option<(DateTime<Utc>, ItemId)> {
    Some((time_at(key, 0)?, key.get(8..).and_then(ItemId::from_slice)?))
}

fn time_key(t: DateTime<Utc>, id: ItemId) -> Vec<u8> {
    let mut key = Vec::with_capacity(24);
    key.extend_from_slice(&reverse_time(t));
    key.extend_from_slice(&id.0);
    key
}

/// A key-term index entry: term, time, item, and a tag of the item's source.
/// The writes that index `chunk`: each replaced record's key-term entries and fingerprint go,
/// then each record that `indexed_now` accepts is indexed under its keys.
fn text_index_writes(
    chunk: &[IndexedFingerprint],
    indexed_now: impl Fn(&IndexedFingerprint) -> bool,
) -> (sled::Batch, sled::Batch) {
    let mut key_terms = sled::Batch::default();
    let mut fingerprints = sled::Batch::default();
    for indexed in chunk {
        let id = indexed.id;
        if let Some(old) = &indexed.replaces {
            for term in &old.keys {
                key_terms.remove(key_term_entry(*term, old.published, id, &old.source));
            }
            fingerprints.remove(&id.0);
        }
        if !indexed_now(indexed) {
            continue;
        }
        let record = &indexed.record;
        for term in &record.keys {
            key_terms.insert(
                key_term_entry(*term, record.published, id, &record.source),
                &[],
            );
        }
        fingerprints.insert(&id.0, record.to_bytes());
    }
    (key_terms, fingerprints)
}

fn key_term_entry(term: u32, t: DateTime<Utc>, id: ItemId, source: &str) -> Vec<u8> {
    let mut key = key_term_key(term, t, id);
    key.extend_from_slice(&source_tag(source));
    key
}

/// Four bytes of a hash of a source's name.
fn source_tag(source: &str) -> [u8; 4] {
    let digest = Sha256::digest(source.as_bytes());
    [digest[0], digest[1], digest[2], digest[3]]
}

fn key_term_key(term: u32, t: DateTime<Utc>, id: ItemId) -> Vec<u8> {
    let mut key = Vec::with_capacity(32);
    key.extend_from_slice(&term.to_be_bytes());
    key.extend_from_slice(&reverse_time(t));
    key.extend_from_slice(&id.0);
    key
}

fn name_prefix(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 1);
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key
}

fn prefixed_key(name: &str, t: DateTime<Utc>, id: ItemId) -> Vec<u8> {
    let mut key = name_prefix(name);
    key.extend_from_slice(&reverse_time(t));
    key.extend_from_slice(&id.0);
    key
}

fn tombstone_key(source: &str, id: ItemId) -> Vec<u8> {
    let mut key = name_prefix(source);
    key.extend_from_slice(&id.0);
    key
}

fn story_key(story: ItemId, member: ItemId) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(&story.0);
    key[16..].copy_from_slice(&member.0);
    key
}

fn url_key(canonical: &str) -> [u8; 16] {
    let digest = Sha256::digest(canonical.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
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
