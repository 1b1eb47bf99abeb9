//! The store: everything feedmux keeps between polls (items, source states, the dedup
//! indexes, output feeds' indexes, tombstones), behind one boundary.
//!
//! [`Store`] is a cheap handle on a storage engine; it derefs to [`Engine`], whose traits
//! (`engine`) name every operation the rest of feedmux needs, one trait per concern:
//! [`Ingest`], [`SourceStates`], [`Items`], [`TextIndex`], [`FeedIndex`], [`Retention`],
//! [`Health`], and [`Copying`] (`copy`: a whole store into another engine, [`Store::copy_into`]).
//! Callers see those and the types here, never an engine's own.
//!
//! Engines: `sled_engine`, the embedded default (one directory, no server), and
//! `pg_engine`, PostgreSQL, which several instances can share (claims of polls, a database
//! lock on ingestion, notifications of changes).
//! [`Store::open_configured`] opens the one `[storage] engine` names. sled is used in
//! `sled_engine` and nowhere else; no engine knows anything of HTTP or feed formats.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{DatabaseUrl, StorageConfig, StorageEngine};
use crate::model::{Item, ItemId};

mod copy;
mod engine;
mod pg_engine;
mod sled_engine;

pub use copy::{Copied, Copying, Record, RecordKind, COPY_BATCH};
pub use engine::{
    Engine, FeedEntries, FeedEntry, FeedIndex, Health, Ingest, IngestGuard, ItemIds, Items,
    PollClaim, Retention, SeenPoll, SourceStates, StoreChange, TextIndex,
};
pub use sled_engine::{DEFAULT_CACHE_BYTES, SCHEMA_VERSION};

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
    /// The store's files cannot be read as a store (sled refused or panicked on them, or they
    /// hold nothing at all): only the operator can fix that.
    #[error("the store at {path} is damaged: {reason}; restore it from a backup, or move the directory away to start an empty store (every source is polled again)")]
    Damaged { path: PathBuf, reason: String },
    /// Reading or writing the store's record log (`records/` in its directory) failed; a
    /// write that fails closes the store until it is reopened, as a failed sled write does.
    #[error("cannot read or write the item records in {path}: {source}")]
    Records {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt record in the store ({what}): {message}")]
    Corrupt { what: &'static str, message: String },
    /// The database refused or failed a statement (the PostgreSQL engine).
    #[error("database error: {message}")]
    Database { message: String },
    /// No connection to the database could be opened (the PostgreSQL engine): it is down,
    /// unreachable, or refuses the credentials. Calls succeed again once it is back.
    #[error("cannot reach the database at {url}: {message}")]
    Unreachable { url: String, message: String },
    /// A copy between engines that cannot go ahead (`feedmux copy-store`): the target is not
    /// empty, or an engine cannot be copied that way.
    #[error("cannot copy the store: {reason}")]
    CannotCopy { reason: String },
}

impl StoreError {
    /// Whether the engine failed in a way only reopening it clears ([`Health::reopen`]): an
    /// I/O error of sled (a full disk: sled keeps the first one and fails every later flush
    /// with it) or of its record log, the store closed after one ([`StoreError::Closed`]), or a database that
    /// cannot be reached (whose reopening is checking that it answers again).
    pub fn needs_reopen(&self) -> bool {
        matches!(
            self,
            StoreError::Sled(sled::Error::Io(_))
                | StoreError::Records { .. }
                | StoreError::Closed { .. }
                | StoreError::Unreachable { .. }
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

/// A handle on the open store; cheap to clone. Every clone sees the same engine, also after
/// [`Health::reopen`] replaced what the engine had open.
#[derive(Clone)]
pub struct Store {
    engine: Arc<dyn Engine>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.engine.path())
            .finish()
    }
}

impl std::ops::Deref for Store {
    type Target = dyn Engine;

    fn deref(&self) -> &Self::Target {
        &*self.engine
    }
}

impl Store {
    /// Opens the store `[storage]` configures: the embedded store at `path` with a cache of
    /// `cache_size`, or the PostgreSQL database at `url`.
    pub fn open_configured(storage: &StorageConfig) -> Result<Store, StoreError> {
        match &storage.engine {
            StorageEngine::Sled => Store::open_with_cache(&storage.path, storage.cache_bytes),
            StorageEngine::Postgres { url } => Store::open_postgres(url),
        }
    }

    /// Opens (or creates) the embedded store at `path` with a cache of
    /// [`DEFAULT_CACHE_BYTES`]. A store another handle is still releasing is waited for,
    /// briefly.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// [`Store::open`] with a cache of `cache_bytes` (`[storage] cache_size`): sled's page
    /// cache, which it counts low (the process holds about twice it). Kept when the store is
    /// reopened.
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let engine = sled_engine::SledEngine::open(path, cache_bytes)?;
        Ok(Store {
            engine: Arc::new(engine),
        })
    }

    /// Connects to the PostgreSQL database at `url` and migrates it to this version's
    /// schema. A password comes from the URL, or else from `PGPASSWORD` or the password file
    /// (`PGPASSFILE`, `~/.pgpass`), as libpq finds it; no message shows it. The connection is
    /// encrypted and the server verified as the URL's `sslmode` and `sslrootcert` say.
    pub fn open_postgres(url: &DatabaseUrl) -> Result<Store, StoreError> {
        let shown = url.to_string();
        let mut config: postgres::Config =
            url.connect_string_without_tls()
                .parse()
                .map_err(|e: postgres::Error| StoreError::Open {
                    path: PathBuf::from(&shown),
                    message: format!("not a PostgreSQL URL: {e}"),
                })?;
        if config.get_password().is_none() {
            if let Some(password) = pg_engine::password_from_environment(&config) {
                config.password(password);
            }
        }
        let engine = pg_engine::PgEngine::open(config, url.tls(), &shown)?;
        Ok(Store {
            engine: Arc::new(engine),
        })
    }

    /// Rewrites the embedded store at `path` into fresh files holding only live records, then
    /// puts them in its place: sled reuses the space of deleted records but never gives it
    /// back to the file system, so after a large prune the files stay large until this runs.
    /// Needs the store to itself (the daemon stopped). Returns the sizes before and after.
    pub fn compact(path: &Path) -> Result<(u64, u64), StoreError> {
        sled_engine::compact(path)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// The `.rs` files under `dir`, recursively.
    fn sources(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                sources(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                found.push(path);
            }
        }
    }

    #[test]
    fn only_the_store_names_sled_or_an_engine() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        assert!(files.len() > 20, "found the sources: {files:?}");
        let inside =
            |path: &Path| path == src.join("store.rs") || path.starts_with(src.join("store"));
        let mut offenders = Vec::new();
        for file in files.iter().filter(|f| !inside(f)) {
            let text = std::fs::read_to_string(file).expect("read source");
            for name in ["sled::", "sled_engine", "SledEngine"] {
                if text.contains(name) {
                    offenders.push(format!("{} names {name}", file.display()));
                }
            }
        }
        assert!(offenders.is_empty(), "{offenders:#?}");
    }
}
