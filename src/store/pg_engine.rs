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
//! ([`Health`]); beside them `pool`, `schema` and `credentials`. Opening stays here.
//!
//! Not yet shared between instances: the ingest guard and the term statistics are each
//! instance's own (issue 20 goes on with leases and a database-wide guard).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use postgres::Client;

use crate::dedup::fingerprint::TermStats;
use crate::model::ItemId;

use super::engine::*;
use super::StoreError;

mod feed_index;
mod health;
mod import;
mod items;
mod pool;
mod prune;
pub(super) mod schema;
mod states;
mod text_index;
mod write;

use pool::Pool;

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

pub(super) struct PgEngine {
    pool: Pool,
    /// The database's URL without its password, for messages.
    shown: PathBuf,
    /// Held from reading the store for a poll's plan until the plan is written; guards the
    /// term statistics that planning updates.
    ingest: Mutex<TermStats>,
    /// When the term statistics were last written.
    term_stats_saved: Mutex<std::time::Instant>,
    /// No item published before this (microseconds) has text index entries.
    text_index_from: AtomicI64,
}

impl PgEngine {
    /// Connects to the database at `url` (a `postgres://` URL), migrates it and loads what
    /// the engine keeps in memory. `shown` is the URL without a password, for messages.
    pub(super) fn open(config: postgres::Config, shown: &str) -> Result<PgEngine, StoreError> {
        let engine = PgEngine {
            pool: Pool::new(config, shown),
            shown: PathBuf::from(shown),
            ingest: Mutex::new(TermStats::default()),
            term_stats_saved: Mutex::new(std::time::Instant::now()),
            text_index_from: AtomicI64::new(i64::MIN),
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
                Some(stats) => *self.ingest_guard() = stats,
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
            client.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&key, &value],
            )?;
            Ok(())
        })
    }

    /// Writes the term statistics when [`TERM_STATS_SAVE_EVERY`] has passed (or `always`).
    fn save_term_stats(&self, stats: &TermStats, always: bool) -> Result<(), StoreError> {
        let mut saved = self
            .term_stats_saved
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if always || saved.elapsed() >= TERM_STATS_SAVE_EVERY {
            self.put_meta(TERM_STATS_KEY, stats.to_bytes())?;
            *saved = std::time::Instant::now();
        }
        Ok(())
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
