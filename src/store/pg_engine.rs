//! The PostgreSQL engine: the store in a database that several feedmux instances can share.
//! Implements every trait of [`super::Engine`]; nothing outside `store` sees it.
//!
//! Tables (`schema`): `items` (each item's JSON with its source, time, content hash and
//! story), `story_members`, `url_claims`, `fingerprints` and `key_terms` (the text index),
//! `feed_entries` (each output feed's index), `feeds` (their rules' fingerprints),
//! `source_states`, `tombstones`, `meta`. A poll's writes are one transaction, so a reader
//! never sees an index entry without its item, and a crash loses a whole poll or nothing.
//!
//! Every call runs on a connection of `pool`, whose worker threads keep the blocking client out
//! of the daemon's async runtime and reconnect after the database went away.
//!
//! One file per concern, each implementing its trait, as in the sled engine: `write`
//! ([`Ingest`]), `states` ([`SourceStates`]), `items` ([`Items`]), `text_index`
//! ([`TextIndex`]), `feed_index` ([`FeedIndex`]), `prune` ([`Retention`]), `health`
//! ([`Health`]); beside them `pool`, `schema`, `credentials` and `tls` (the connector every
//! connection is opened with: `sslmode`, `sslrootcert`). Opening stays here.
//!
//! Instances sharing the database: the [`IngestGuard`] holds an advisory lock of the
//! database's (polls of all instances are planned and written one at a time, so two cannot
//! both claim one story); each adds the term statistics it counted to the stored ones every
//! minute; and polls are claimed in `poll_claims` ([`SourceStates::claim_poll`]), with each
//! host's last poll in `host_polls`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use postgres::Client;

use crate::config::DatabaseTls;
use crate::dedup::fingerprint::TermStats;
use crate::dedup::record::FingerprintRecord;
use crate::model::ItemId;

use super::engine::*;
use super::StoreError;

mod changes;
mod credentials;
mod feed_index;
mod health;
mod import;
mod items;
mod pool;
mod prune;
pub(super) mod schema;
mod states;
mod text_index;
mod tls;
mod write;

use pool::Pool;
use tls::Connector;

/// In `meta`: the term statistics.
const TERM_STATS_KEY: &str = "term_stats";
/// In `meta`: the version of the way text is cut into terms (4 bytes, big-endian).
const TERMS_VERSION_KEY: &str = "terms_version";
/// In `meta`: no item published before this has text index entries (8 bytes, big-endian).
const TEXT_INDEX_FROM_KEY: &str = "text_index_from";
/// Term statistics are written at most this often while ingesting (and at every flush).
const TERM_STATS_SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// Rows read per page by the iterators over feeds and items.
const PAGE: i64 = 500;
/// Connections of the pool for the engine's calls (calls beyond them wait for one).
const CONNECTIONS: usize = 4;
/// The advisory lock that serialises ingestion across instances (held by [`IngestGuard`]).
const INGEST_LOCK: i64 = 0x6665_6564_6d75_7802;

pub(super) struct PgEngine {
    pool: Pool,
    /// One connection, that holds the ingest lock of the database ([`INGEST_LOCK`]) while
    /// an [`IngestGuard`] of this process is held: the lock belongs to a session.
    lock: Pool,
    /// The database's URL without its password, for messages.
    shown: PathBuf,
    /// Held from reading the store for a poll's plan until the plan is written; guards the
    /// term statistics that planning updates.
    ingest: Mutex<TermStats>,
    /// When the term statistics were last written.
    term_stats_saved: Mutex<std::time::Instant>,
    /// The stored term statistics as this process last read or wrote them: what it counted
    /// since is the difference, which it adds to the stored ones (other instances count too).
    term_stats_synced: Mutex<TermStats>,
    /// No item published before this (microseconds) has text index entries.
    text_index_from: AtomicI64,
    /// This process among the instances sharing the database, in poll claims: host name,
    /// process id and a random part (a restarted process is another instance).
    instance: String,
    /// The fingerprints that [`TextIndex::candidates`] read with its candidates, kept for
    /// the planner's reads of them that follow: only while one ingest guard is held (no
    /// instance writes fingerprints meanwhile), emptied when it is taken and let go.
    fingerprints_read: Mutex<HashMap<ItemId, Arc<FingerprintRecord>>>,
    /// The connection settings and TLS, for the listener of other instances' changes.
    connector: Connector,
    /// Set when the engine is dropped: the listener stops.
    stop_listening: Arc<AtomicBool>,
}

impl Drop for PgEngine {
    fn drop(&mut self) {
        self.stop_listening.store(true, Ordering::Relaxed);
    }
}

impl PgEngine {
    /// Connects to the database `config` names with the TLS of `tls` (the URL's `sslmode`
    /// and `sslrootcert`), migrates it and loads what the engine keeps in memory. `shown` is
    /// the URL without a password, for messages.
    pub(super) fn open(
        config: postgres::Config,
        tls: &DatabaseTls,
        shown: &str,
    ) -> Result<PgEngine, StoreError> {
        let connector = Connector::new(config, tls).map_err(|message| StoreError::Open {
            path: PathBuf::from(shown),
            message,
        })?;
        let engine = PgEngine {
            pool: Pool::new(connector.clone(), shown, CONNECTIONS),
            lock: Pool::new(connector.clone(), shown, 1),
            connector,
            stop_listening: Arc::new(AtomicBool::new(false)),
            shown: PathBuf::from(shown),
            ingest: Mutex::new(TermStats::default()),
            term_stats_saved: Mutex::new(std::time::Instant::now()),
            term_stats_synced: Mutex::new(TermStats::default()),
            text_index_from: AtomicI64::new(i64::MIN),
            instance: instance_name(),
            fingerprints_read: Mutex::new(HashMap::new()),
        };
        let shown_owned = shown.to_owned();
        engine.run(move |client| schema::migrate(client, &shown_owned))?;
        engine.load()?;
        Ok(engine)
    }

    /// Reads the term statistics and the text index's start, and records the terms version
    /// of a new database.
    fn load(&self) -> Result<(), StoreError> {
        if let Some(bytes) = self.meta(TERM_STATS_KEY)? {
            match TermStats::from_bytes(&bytes) {
                Some(stats) => {
                    *self.lock_ingest() = stats.clone();
                    *self.synced() = stats;
                }
                None => tracing::warn!(
                    "the stored term statistics are unreadable; starting them afresh (near-duplicate detection is weaker until they refill)"
                ),
            }
        }
        if let Some(bytes) = self.meta(TEXT_INDEX_FROM_KEY)? {
            let from = <[u8; 8]>::try_from(bytes.as_slice())
                .map(i64::from_be_bytes)
                .map_err(|_| corrupt("text index start", bytes.len()))?;
            self.text_index_from.store(from, Ordering::Relaxed);
        }
        let version = crate::dedup::fingerprint::TERMS_VERSION
            .to_be_bytes()
            .to_vec();
        self.run(move |client| {
            // Only a database without a text index starts at this version's terms.
            client.execute(
                "INSERT INTO meta (key, value) SELECT $1, $2
                 WHERE NOT EXISTS (SELECT 1 FROM fingerprints)
                 ON CONFLICT (key) DO NOTHING",
                &[&TERMS_VERSION_KEY, &version],
            )?;
            Ok(())
        })
    }

    /// Runs `job` on a pooled connection.
    fn run<R, F>(&self, job: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Client) -> Result<R, StoreError> + Send + 'static,
    {
        self.pool.run(job)
    }

    fn meta(&self, key: &'static str) -> Result<Option<Vec<u8>>, StoreError> {
        self.run(move |client| {
            Ok(client
                .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])?
                .map(|row| row.get(0)))
        })
    }

    fn put_meta(&self, key: &'static str, value: Vec<u8>) -> Result<(), StoreError> {
        self.run(move |client| {
            let mut tx = client.transaction()?;
            put_meta_in(&mut tx, key, value)?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Merges the term statistics with the stored ones when [`TERM_STATS_SAVE_EVERY`] has
    /// passed (or `always`): adds what this process counted since it last did to what the
    /// database holds (which other instances add to), and takes the sum as its own.
    fn sync_term_stats(&self, stats: &mut TermStats, always: bool) -> Result<(), StoreError> {
        let mut saved = self
            .term_stats_saved
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !always && saved.elapsed() < TERM_STATS_SAVE_EVERY {
            return Ok(());
        }
        let (base, now) = (self.synced().clone(), stats.clone());
        let merged = self.run(move |client| {
            let mut tx = client.transaction()?;
            let stored = tx
                .query_opt(
                    "SELECT value FROM meta WHERE key = $1 FOR UPDATE",
                    &[&TERM_STATS_KEY],
                )?
                .and_then(|row| TermStats::from_bytes(row.get(0)))
                .unwrap_or_default();
            let mut merged = stored;
            merged.add_changes(&base, &now);
            put_meta_in(&mut tx, TERM_STATS_KEY, merged.to_bytes())?;
            tx.commit()?;
            Ok(merged)
        })?;
        *stats = merged.clone();
        *self.synced() = merged;
        *saved = std::time::Instant::now();
        Ok(())
    }

    /// Stores `stats` in place of the stored term statistics (a rebuild of the text index).
    fn replace_term_stats(&self, stats: &TermStats) -> Result<(), StoreError> {
        self.put_meta(TERM_STATS_KEY, stats.to_bytes())?;
        *self.synced() = stats.clone();
        Ok(())
    }

    fn synced(&self) -> MutexGuard<'_, TermStats> {
        self.term_stats_synced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Empties the fingerprints kept from [`TextIndex::candidates`] (see `fingerprints_read`).
    fn forget_fingerprints_read(&self) {
        self.fingerprints_read
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn lock_ingest(&self) -> MutexGuard<'_, TermStats> {
        self.ingest.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> StoreError {
        // The database's own message says what went wrong; the client's alone ("db error")
        // does not.
        let message = match e.as_db_error() {
            Some(db) => db.to_string(),
            None => match std::error::Error::source(&e) {
                Some(source) => format!("{e}: {source}"),
                None => e.to_string(),
            },
        };
        StoreError::Database { message }
    }
}

fn put_meta_in(
    tx: &mut postgres::Transaction<'_>,
    key: &'static str,
    value: Vec<u8>,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ($1, $2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[&key, &value],
    )?;
    Ok(())
}

/// The database's ingest lock, held by this process's [`IngestGuard`] until it is dropped.
struct IngestLock<'a> {
    lock: &'a Pool,
    fingerprints_read: &'a Mutex<HashMap<ItemId, Arc<FingerprintRecord>>>,
}

impl SharedLock for IngestLock<'_> {}

impl Drop for IngestLock<'_> {
    fn drop(&mut self) {
        // Other instances may write fingerprints once the lock is let go.
        self.fingerprints_read
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let unlocked = self.lock.run(|client| {
            client.execute("SELECT pg_advisory_unlock($1)", &[&INGEST_LOCK])?;
            Ok(())
        });
        // Lost with its connection otherwise: the database lets a session's locks go with it.
        if let Err(e) = unlocked {
            tracing::debug!(error = %e, "cannot let the database's ingest lock go");
        }
    }
}

impl PgEngine {
    /// This process's ingest guard with the database's ingest lock, waiting for other
    /// instances to let it go. When the database cannot be reached, the process's alone: the
    /// writes it guards fail then anyway.
    fn guard_ingest(&self) -> IngestGuard<'_> {
        let stats = self.lock_ingest();
        self.forget_fingerprints_read();
        let locked = self.lock.run(|client| {
            client.execute("SELECT pg_advisory_lock($1)", &[&INGEST_LOCK])?;
            Ok(())
        });
        match locked {
            Ok(()) => IngestGuard::with_shared(
                stats,
                Box::new(IngestLock {
                    lock: &self.lock,
                    fingerprints_read: &self.fingerprints_read,
                }),
            ),
            Err(e) => {
                tracing::debug!(error = %e, "cannot take the database's ingest lock");
                IngestGuard::local(stats)
            }
        }
    }
}

/// The password `PGPASSWORD` or the password file gives for `config`'s first host, port,
/// database and user (their defaults as libpq's: port 5432, database named as the user).
pub(super) fn password_from_environment(config: &postgres::Config) -> Option<String> {
    let host = match config.get_hosts().first()? {
        postgres::config::Host::Tcp(host) => host.clone(),
        postgres::config::Host::Unix(_) => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user()?;
    let database = config.get_dbname().unwrap_or(user);
    credentials::password_for(&host, port, database, user)
}

/// This process's name in poll claims.
fn instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    format!(
        "{host}:{}:{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// An item id as its column holds it.
fn id_bytes(id: ItemId) -> Vec<u8> {
    id.0.to_vec()
}

/// The item id a column holds.
fn id_of(bytes: &[u8]) -> Result<ItemId, StoreError> {
    ItemId::from_slice(bytes).ok_or_else(|| corrupt("item id", bytes.len()))
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn time_of(micros: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| StoreError::Corrupt {
        what: "time",
        message: format!("{micros} microseconds"),
    })
}

fn corrupt(what: &'static str, len: usize) -> StoreError {
    StoreError::Corrupt {
        what,
        message: format!("{len} bytes"),
    }
}

/// The row-at-a-time reads of [`FeedIndex`] and [`Items::all_items`]: pages of [`PAGE`]
/// rows, each page read after the last row of the one before, so a reader that stops early
/// reads little and a long walk never holds a transaction open.
struct Pages<T, F> {
    next_page: F,
    page: std::vec::IntoIter<T>,
    after: Option<(i64, ItemId)>,
    done: bool,
}

impl<T, F> Pages<T, F>
where
    F: FnMut(Option<(i64, ItemId)>) -> Result<Vec<(i64, ItemId, T)>, StoreError>,
{
    fn new(after: Option<(i64, ItemId)>, next_page: F) -> Self {
        Pages {
            next_page,
            page: Vec::new().into_iter(),
            after,
            done: false,
        }
    }
}

impl<T, F> Iterator for Pages<T, F>
where
    F: FnMut(Option<(i64, ItemId)>) -> Result<Vec<(i64, ItemId, T)>, StoreError>,
{
    type Item = Result<T, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(next) = self.page.next() {
            return Some(Ok(next));
        }
        if self.done {
            return None;
        }
        match (self.next_page)(self.after) {
            Ok(rows) => {
                if (rows.len() as i64) < PAGE {
                    self.done = true;
                }
                self.after = rows.last().map(|(t, id, _)| (*t, *id));
                let page: Vec<T> = rows.into_iter().map(|(_, _, value)| value).collect();
                self.page = page.into_iter();
                self.page.next().map(Ok)
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// The condition (on `published_us` and `id`, with the page's start in `$n` and `$n+1`)
/// of rows after a page's last, in the store's order: newest first, then by id.
fn after_clause(n: usize) -> String {
    format!(
        "(published_us < ${n} OR (published_us = ${n} AND id > ${}))",
        n + 1
    )
}

impl std::fmt::Debug for PgEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgEngine")
            .field("database", &self.shown)
            .finish()
    }
}

impl PgEngine {
    fn shown(&self) -> &Path {
        &self.shown
    }
}
