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
//! | `bands` | LSH band hash (8) + reverse time (8) + item id | empty |
//! | `sources` | source name | [`SourceState`] as JSON |
//! | `meta` | text key | text value (schema version, feed fingerprints) |
//!
//! A poll's writes go in index-first order and are flushed before the poll counts as done, so a
//! crash leaves at worst an index entry without its item (readers skip those), never an item
//! that no index lists. sled is used here and nowhere else; this module knows nothing of HTTP
//! or feed formats.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::dedup::{FingerprintRecord, IngestPlan, StoryLink, UrlClaim};
use crate::model::{Item, ItemId, SourceState};

/// The layout version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;
const SCHEMA_KEY: &[u8] = b"schema_version";
const FINGERPRINT_PREFIX: &str = "feed_fingerprint/";
/// How long `open` waits for a store that is being released: 20 × 50 ms.
const LOCK_RETRIES: u32 = 20;
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
    #[error("corrupt record in the store ({what}): {message}")]
    Corrupt { what: &'static str, message: String },
}

/// One item's membership of an output feed, written with the item.
#[derive(Debug, Clone)]
pub struct FeedMembership {
    pub feed: String,
    pub item: ItemId,
}

/// A handle on the open store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    path: PathBuf,
    items: sled::Tree,
    by_time: sled::Tree,
    by_source: sled::Tree,
    feed_index: sled::Tree,
    urls: sled::Tree,
    stories: sled::Tree,
    fingerprints: sled::Tree,
    bands: sled::Tree,
    sources: sled::Tree,
    meta: sled::Tree,
    /// Held from reading the store for a poll's plan until the plan is written, so that two
    /// sources polled at once cannot both claim the same story.
    ingest: Arc<Mutex<()>>,
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
        let mut attempts = 0;
        loop {
            match Store::open_once(path) {
                Err(StoreError::Locked { .. }) if attempts < LOCK_RETRIES => {
                    attempts += 1;
                    std::thread::sleep(LOCK_RETRY_DELAY);
                }
                other => return other,
            }
        }
    }

    fn open_once(path: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(64 * 1024 * 1024)
            // Every write path flushes itself (a poll is durable once flushed); without sled's
            // background flusher, dropping the store releases its lock at once.
            .flush_every_ms(None)
            .open()
            .map_err(|e| open_error(path, e))?;
        let tree = |name: &str| db.open_tree(name);
        let store = Store {
            items: tree("items")?,
            by_time: tree("by_time")?,
            by_source: tree("by_source")?,
            feed_index: tree("feed_index")?,
            urls: tree("urls")?,
            stories: tree("stories")?,
            fingerprints: tree("fingerprints")?,
            bands: tree("bands")?,
            sources: tree("sources")?,
            meta: tree("meta")?,
            path: path.to_owned(),
            ingest: Arc::new(Mutex::new(())),
            db,
        };
        store.check_schema()?;
        Ok(store)
    }

    /// Serialises ingestion: hold the guard from planning a poll's writes until they are
    /// applied.
    pub fn ingest_guard(&self) -> MutexGuard<'_, ()> {
        self.ingest.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        match self.meta.get(SCHEMA_KEY)? {
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
                self.meta
                    .insert(SCHEMA_KEY, SCHEMA_VERSION.to_string().as_bytes())?;
            }
        }
        Ok(())
    }

    pub fn item(&self, id: ItemId) -> Result<Option<Item>, StoreError> {
        match self.items.get(id.0)? {
            Some(bytes) => Ok(Some(decode(&bytes, "item")?)),
            None => Ok(None),
        }
    }

    pub fn item_count(&self) -> usize {
        self.items.len()
    }

    pub fn url_claim(&self, canonical: &str) -> Result<Option<UrlClaim>, StoreError> {
        match self.urls.get(url_key(canonical))? {
            Some(bytes) => Ok(Some(decode(&bytes, "url claim")?)),
            None => Ok(None),
        }
    }

    pub fn source_state(&self, source: &str) -> Result<SourceState, StoreError> {
        match self.sources.get(source.as_bytes())? {
            Some(bytes) => decode(&bytes, "source state"),
            None => Ok(SourceState::default()),
        }
    }

    /// Saves a source's state and flushes; used for polls that store no items.
    pub fn put_source_state(&self, source: &str, state: &SourceState) -> Result<(), StoreError> {
        self.sources.insert(source.as_bytes(), encode(state))?;
        self.db.flush()?;
        Ok(())
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
    ) -> Result<(), StoreError> {
        // Written in chunks: sled holds a whole batch in memory several times over, so one
        // batch for a 20,000-item feed costs a gigabyte; chunks keep a poll's memory flat.
        // The poll still counts as done only after the state is written and flushed.
        let published: HashMap<ItemId, DateTime<Utc>> = plan
            .writes
            .iter()
            .map(|w| (w.item.id, w.item.published))
            .collect();
        let mut memberships_of: HashMap<ItemId, Vec<&str>> = HashMap::new();
        for m in memberships {
            memberships_of.entry(m.item).or_default().push(&m.feed);
        }
        for (n, chunk) in plan.writes.chunks(WRITE_CHUNK).enumerate() {
            if n > 0 && n % FLUSH_EVERY_CHUNKS == 0 {
                self.db.flush()?;
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
                items.insert(&item.id.0, encode(item));
            }
            self.by_time.apply_batch(by_time)?;
            self.by_source.apply_batch(by_source)?;
            self.feed_index.apply_batch(feed_index)?;
            self.stories.apply_batch(stories)?;
            self.items.apply_batch(items)?;
        }
        for chunk in plan.fingerprints.chunks(WRITE_CHUNK) {
            let mut bands = sled::Batch::default();
            let mut fingerprints = sled::Batch::default();
            for (id, record) in chunk {
                let at = published.get(id).copied().unwrap_or(record.published);
                for band in record.fingerprint.bands() {
                    let mut key = Vec::with_capacity(32);
                    key.extend_from_slice(&band.to_be_bytes());
                    key.extend_from_slice(&reverse_time(at));
                    key.extend_from_slice(&id.0);
                    bands.insert(key, &[]);
                }
                fingerprints.insert(&id.0, record.to_bytes());
            }
            self.bands.apply_batch(bands)?;
            self.fingerprints.apply_batch(fingerprints)?;
        }
        let mut urls = sled::Batch::default();
        for (url, claim) in &plan.claims {
            urls.insert(&url_key(url), encode(claim));
        }
        self.urls.apply_batch(urls)?;
        self.sources.insert(source.as_bytes(), encode(state))?;
        self.db.flush()?;
        Ok(())
    }

    /// Ids of the items in an output feed, newest first.
    pub fn feed_items(&self, feed: &str) -> impl Iterator<Item = Result<ItemId, StoreError>> + '_ {
        let prefix = name_prefix(feed);
        let skip = prefix.len() + 8;
        self.feed_index.scan_prefix(prefix).map(move |r| {
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
        self.feed_index
            .range((
                std::ops::Bound::Excluded(start),
                std::ops::Bound::Included(end),
            ))
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
            .feed_index
            .contains_key(prefixed_key(feed, item.published, item.id))?)
    }

    /// Ids of every item, newest first.
    pub fn all_items(&self) -> impl Iterator<Item = Result<ItemId, StoreError>> + '_ {
        self.by_time.iter().map(|r| {
            let (key, _) = r?;
            ItemId::from_slice(&key[8..]).ok_or(StoreError::Corrupt {
                what: "time index key",
                message: format!("{} bytes", key.len()),
            })
        })
    }

    /// Items sharing an LSH band with `bands`, published within `window` of `published`; at
    /// most `per_band` from each band, nearest in time first.
    pub fn candidates(
        &self,
        bands: &[u64],
        published: DateTime<Utc>,
        window: std::time::Duration,
        per_band: usize,
    ) -> Result<Vec<ItemId>, StoreError> {
        let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
        let newest = published.checked_add_signed(window).unwrap_or(published);
        let oldest = published.checked_sub_signed(window).unwrap_or(published);
        let mut out = Vec::new();
        for band in bands {
            let mut start = band.to_be_bytes().to_vec();
            start.extend_from_slice(&reverse_time(newest));
            let mut end = band.to_be_bytes().to_vec();
            end.extend_from_slice(&reverse_time(oldest));
            end.extend_from_slice(&[0xFF; 16]);
            for key in self.bands.range(start..=end).keys().take(per_band) {
                let key = key?;
                if let Some(id) = ItemId::from_slice(&key[16..]) {
                    if !out.contains(&id) {
                        out.push(id);
                    }
                }
            }
        }
        Ok(out)
    }

    pub fn fingerprint(&self, id: ItemId) -> Result<Option<FingerprintRecord>, StoreError> {
        match self.fingerprints.get(id.0)? {
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
        self.stories
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
        self.stories
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
        for entry in self.items.iter() {
            let (_, bytes) = entry?;
            let item: Item = decode(&bytes, "item")?;
            if selects(&item) {
                batch.insert(prefixed_key(feed, item.published, item.id), &[]);
                count += 1;
            }
        }
        self.feed_index.apply_batch(batch)?;
        self.meta.insert(
            format!("{FINGERPRINT_PREFIX}{feed}"),
            fingerprint.as_bytes(),
        )?;
        self.db.flush()?;
        Ok(count)
    }

    /// Removes a feed's index and fingerprint (the feed left the config).
    pub fn drop_feed_index(&self, feed: &str) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for key in self.feed_index.scan_prefix(name_prefix(feed)).keys() {
            batch.remove(key?);
        }
        self.feed_index.apply_batch(batch)?;
        self.meta.remove(format!("{FINGERPRINT_PREFIX}{feed}"))?;
        Ok(())
    }

    /// Names of the feeds that have an index.
    pub fn indexed_feeds(&self) -> Result<Vec<String>, StoreError> {
        self.meta
            .scan_prefix(FINGERPRINT_PREFIX)
            .keys()
            .map(|k| {
                let k = k?;
                Ok(String::from_utf8_lossy(&k[FINGERPRINT_PREFIX.len()..]).into_owned())
            })
            .collect()
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
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

fn time_key(t: DateTime<Utc>, id: ItemId) -> Vec<u8> {
    let mut key = Vec::with_capacity(24);
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
