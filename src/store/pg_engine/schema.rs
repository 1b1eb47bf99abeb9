//! The database's tables, created and upgraded by numbered migrations at open.
//!
//! Each migration runs once, in a transaction holding an advisory lock, so that instances
//! starting together apply it once between them; `feedmux_schema` records the last applied.
//! A database migrated by a newer feedmux is refused, as a newer sled store is.
//!
//! Times are microseconds since 1970 (`bigint`), as the sled engine keys them, so that order
//! and equality are exact; item ids are their 16 bytes. Every time-ordered read is newest
//! first and, among items of one microsecond, by id ascending (the sled engine's key order).

use postgres::Client;

use crate::store::StoreError;

/// The advisory lock held while migrating (any number unlikely to clash with an application's).
const MIGRATION_LOCK: i64 = 0x6665_6564_6d75_7801;

/// Migrations in order; the schema version is how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: everything the engine keeps.
    "CREATE TABLE meta (
        key text PRIMARY KEY,
        value bytea NOT NULL
    );
    CREATE TABLE items (
        id bytea PRIMARY KEY,
        source text NOT NULL,
        published_us bigint NOT NULL,
        content_hash bigint NOT NULL,
        story bytea NOT NULL,
        body jsonb NOT NULL
    );
    CREATE INDEX items_by_time ON items (published_us DESC, id);
    CREATE INDEX items_by_source ON items (source, published_us DESC, id);
    CREATE TABLE story_members (
        member bytea PRIMARY KEY,
        story bytea NOT NULL,
        link jsonb
    );
    CREATE INDEX story_members_by_story ON story_members (story);
    CREATE TABLE url_claims (
        url_hash bytea PRIMARY KEY,
        item bytea NOT NULL,
        source text NOT NULL,
        ambiguous boolean NOT NULL
    );
    CREATE INDEX url_claims_by_item ON url_claims (item);
    CREATE TABLE fingerprints (
        id bytea PRIMARY KEY,
        source text NOT NULL,
        published_us bigint NOT NULL,
        record bytea NOT NULL
    );
    CREATE INDEX fingerprints_by_time ON fingerprints (published_us DESC, id);
    CREATE TABLE key_terms (
        term integer NOT NULL,
        published_us bigint NOT NULL,
        id bytea NOT NULL,
        source text NOT NULL,
        PRIMARY KEY (term, published_us, id)
    );
    CREATE INDEX key_terms_by_item ON key_terms (id);
    CREATE TABLE feed_entries (
        feed text NOT NULL,
        published_us bigint NOT NULL,
        id bytea NOT NULL,
        source text NOT NULL,
        PRIMARY KEY (feed, published_us, id)
    );
    CREATE INDEX feed_entries_by_source ON feed_entries (feed, source, published_us DESC, id);
    CREATE INDEX feed_entries_by_item ON feed_entries (id);
    CREATE TABLE feeds (
        feed text PRIMARY KEY,
        fingerprint text NOT NULL
    );
    CREATE TABLE source_states (
        source text PRIMARY KEY,
        state jsonb NOT NULL,
        item_count bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE tombstones (
        source text NOT NULL,
        id bytea NOT NULL,
        pruned_us bigint NOT NULL,
        PRIMARY KEY (source, id)
    );",
    // 2: polls claimed by instances, and when each host was last polled by any.
    "CREATE TABLE poll_claims (
        source text PRIMARY KEY,
        holder text NOT NULL,
        until_us bigint NOT NULL
    );
    CREATE TABLE host_polls (
        host text PRIMARY KEY,
        last_us bigint NOT NULL
    );",
];

/// The schema version this build reads and writes.
pub(super) const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Applies the migrations the database lacks, one transaction each; refuses a database of a
/// newer schema. `shown` names the database in messages.
pub(super) fn migrate(client: &mut Client, shown: &str) -> Result<(), StoreError> {
    let mut transaction = client.transaction()?;
    transaction.batch_execute("SET LOCAL client_min_messages = warning")?;
    transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    transaction
        .batch_execute("CREATE TABLE IF NOT EXISTS feedmux_schema (version integer NOT NULL);")?;
    let found: Option<i32> = transaction
        .query_opt("SELECT max(version) FROM feedmux_schema", &[])?
        .and_then(|row| row.get(0));
    let found = u32::try_from(found.unwrap_or(0)).unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: shown.into(),
            found,
        });
    }
    for (n, migration) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = n as i32 + 1;
        transaction.batch_execute(migration)?;
        transaction.execute("DELETE FROM feedmux_schema", &[])?;
        transaction.execute(
            "INSERT INTO feedmux_schema (version) VALUES ($1)",
            &[&version],
        )?;
        tracing::info!(database = shown, version, "migrated the database");
    }
    transaction.commit()?;
    Ok(())
}
