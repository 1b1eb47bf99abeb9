//! Importing a copied store ([`Copying::import`]): each batch of records in one transaction,
//! each kind in one statement. What the database derives is derived here: the key terms from
//! each fingerprint's keys, a feed entry's source from its item (imported before it). A
//! database is only ever copied into, for now; exporting it is refused.

use std::sync::atomic::Ordering;

use postgres::types::Json;
use postgres::Transaction;

use super::write::write_fingerprints;
use super::*;
use crate::dedup::record::IndexedFingerprint;
use crate::store::{Copying, Record};

impl Copying for PgEngine {
    fn export(
        &self,
        _into: &mut dyn FnMut(Record) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        Err(StoreError::CannotCopy {
            reason: format!(
                "copying out of the database {} is not supported yet",
                self.shown.display()
            ),
        })
    }

    fn import(&self, records: Vec<Record>) -> Result<(), StoreError> {
        let batch = Batch::of(records);
        let stats = batch.term_stats.clone();
        let from = batch.text_index_from;
        self.run(move |client| {
            let mut tx = client.transaction()?;
            batch.write(&mut tx)?;
            tx.commit()?;
            Ok(())
        })?;
        // What the engine keeps in memory follows the database, so that a flush adds nothing
        // to the statistics just stored (it adds what was counted since they were synced).
        if let Some(stats) = stats {
            *self.lock_ingest() = stats.clone();
            *self.synced() = stats;
        }
        if let Some(from) = from {
            self.text_index_from.store(from, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// One batch's records, sorted by table.
#[derive(Default)]
struct Batch {
    items: Vec<crate::model::Item>,
    members: Vec<(ItemId, ItemId, Option<crate::dedup::record::StoryLink>)>,
    claims: Vec<([u8; 16], crate::dedup::record::UrlClaim)>,
    fingerprints: Vec<IndexedFingerprint>,
    entries: Vec<(String, FeedEntry)>,
    rules: Vec<(String, String)>,
    states: Vec<(String, crate::model::SourceState)>,
    tombstones: Vec<(String, ItemId, i64)>,
    term_stats: Option<TermStats>,
    terms_version: Option<u32>,
    text_index_from: Option<i64>,
}

impl Batch {
    fn of(records: Vec<Record>) -> Batch {
        let mut batch = Batch::default();
        for record in records {
            batch.add(record);
        }
        batch
    }

    fn add(&mut self, record: Record) {
        match record {
            Record::Item(item) => self.items.push(*item),
            Record::StoryMember {
                story,
                member,
                link,
            } => self.members.push((story, member, link)),
            Record::UrlClaim { url_hash, claim } => self.claims.push((url_hash, claim)),
            Record::Fingerprint { id, record } => self.fingerprints.push(IndexedFingerprint {
                id,
                record: *record,
                replaces: None,
            }),
            Record::FeedEntry { feed, entry } => self.entries.push((feed, entry)),
            Record::FeedRules { feed, fingerprint } => self.rules.push((feed, fingerprint)),
            Record::SourceState { source, state } => self.states.push((source, *state)),
            Record::Tombstone { source, id, pruned } => {
                self.tombstones.push((source, id, micros(pruned)))
            }
            Record::TermStats(stats) => self.term_stats = Some(*stats),
            Record::TermsVersion(version) => self.terms_version = Some(version),
            Record::TextIndexFrom(from) => self.text_index_from = Some(micros(from)),
        }
    }

    /// Items first: feed entries take their source from them.
    fn write(&self, tx: &mut Transaction<'_>) -> Result<(), StoreError> {
        self.write_items(tx)?;
        self.write_members(tx)?;
        self.write_claims(tx)?;
        write_fingerprints(tx, &self.fingerprints, |_| true)?;
        self.write_feeds(tx)?;
        self.write_states(tx)?;
        self.write_tombstones(tx)?;
        self.write_meta(tx)
    }

    fn write_items(&self, tx: &mut Transaction<'_>) -> Result<(), StoreError> {
        if self.items.is_empty() {
            return Ok(());
        }
        let ids: Vec<Vec<u8>> = self.items.iter().map(|i| id_bytes(i.id)).collect();
        let sources: Vec<&str> = self.items.iter().map(|i| i.source.as_str()).collect();
        let times: Vec<i64> = self.items.iter().map(|i| micros(i.published)).collect();
        let hashes: Vec<i64> = self.items.iter().map(|i| i.content_hash as i64).collect();
        let stories: Vec<Vec<u8>> = self.items.iter().map(|i| id_bytes(i.story)).collect();
        let bodies: Vec<Json<&crate::model::Item>> = self.items.iter().map(Json).collect();
        tx.execute(
            "INSERT INTO items (id, source, published_us, content_hash, story, body)
             SELECT * FROM unnest($1::bytea[], $2::text[], $3::int8[], $4::int8[], $5::bytea[], $6::jsonb[])",
            &[&ids, &sources, &times, &hashes, &stories, &bodies],
        )?;
        Ok(())
    }

    fn write_members(&self, tx: &mut Transaction<'_>) -> Result<(), StoreError> {
        if self.members.is_empty() {
            return Ok(());
        }
        let stories: Vec<Vec<u8>> = self.members.iter().map(|m| id_bytes(m.0)).collect();
        let members: Vec<Vec<u8>> = self.members.iter().map(|m| id_bytes(m.1)).collect();
        let links: Vec<Option<Json<&_>>> = self
            .members
            .iter()
            .map(|m| m.2.as_ref().map(Json))
            .collect();
        tx.execute(
            "INSERT INTO story_members (member, story, link)
             SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::jsonb[])",
            &[&members, &stories, &links],
        )?;
        Ok(())
    }

    fn write_claims(&self, tx: &mut Transaction<'_>) -> Result<(), StoreError> {
        if self.claims.is_empty() {
            return Ok(());
        }
        let hashes: Vec<&[u8]> = self.claims.iter().map(|c| c.0.as_slice()).collect();
        let items: Vec<Vec<u8>> = self.claims.iter().map(|c| id_bytes(c.1.item)).collect();
        let sources: Vec<&str> = self.claims.iter().map(|c| c.1.source.as_str()).collect();
        let ambiguous: Vec<bool> = self.claims.iter().map(|c| c.1.ambiguous).collect();
        tx.execute(
            "INSERT INTO url_claims (url_hash, item, source, ambiguous)
             SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::text[], $4::bool[])",
            &[&hashes, &items, &sources, &ambiguous],
        )?;
        Ok(())
    }

    /// Rules fingerprints, then entries, each entry's source its item's (an entry whose item
    /// is gone, left by a crash, gets none: readers drop such entries).
    fn write_feeds(&self, tx: &mut Transaction<'_>) -> Result<(), StoreError> {
        for (feed, fingerprint) in &self.rules {
            tx.execute(
                "INSERT INTO feeds (feed, fingerprint) VALUES ($1, $2)",
                &[feed, fingerprint],
            )?;
        }
        if self.entries.is_empty() {
            return Ok(());
        }
        let feeds: Vec<&str> = self.entries.iter().map(|e| e.0.as_str()).collect();
        let times: Vec<i64> = self.entries.iter().map(|e| micros(e.1.published)).collect();
        let ids: Vec<Vec<u8>> = self.entries.iter().map(|e| id_bytes(e.1.id)).collect();
        tx.execute(
            "INSERT INTO feed_entries (feed, published_us, id, source)
             SELECT u.f, u.t, u.i, COALESCE(items.source, '')
             FROM unnest($1::text[], $2::int8[], $3::bytea[]) AS u(f, t, i)
             LEFT JOIN items ON items.id = u.i",
            &[&feeds, &times, &ids],
        )?;
        Ok(())
    }

    fn write_states(&self, tx: &mut Transaction<'_>) -> Result<(), StoreError> {
        if self.states.is_empty() {
            return Ok(());
        }
        let sources: Vec<&str> = self.states.iter().map(|s| s.0.as_str()).collect();
        let states: Vec<Json<&crate::model::SourceState>> =
            self.states.iter().map(|s| Json(&s.1)).collect();
        let counts: Vec<i64> = self
            .states
            .iter()
            .map(|s| i64::try_from(s.1.item_count).unwrap_or(i64::MAX))
            .collect();
        tx.execute(
            "INSERT INTO source_states (source, state, item_count)
             SELECT * FROM unnest($1::text[], $2::jsonb[], $3::int8[])",
            &[&sources, &states, &counts],
        )?;
        Ok(())
    }

    fn write_tombstones(&self, tx: &mut Transaction<'_>) -> Result<(), StoreError> {
        if self.tombstones.is_empty() {
            return Ok(());
        }
        let sources: Vec<&str> = self.tombstones.iter().map(|t| t.0.as_str()).collect();
        let ids: Vec<Vec<u8>> = self.tombstones.iter().map(|t| id_bytes(t.1)).collect();
        let times: Vec<i64> = self.tombstones.iter().map(|t| t.2).collect();
        tx.execute(
            "INSERT INTO tombstones (source, id, pruned_us)
             SELECT * FROM unnest($1::text[], $2::bytea[], $3::int8[])",
            &[&sources, &ids, &times],
        )?;
        Ok(())
    }

    fn write_meta(&self, tx: &mut Transaction<'_>) -> Result<(), StoreError> {
        let mut meta: Vec<(&str, Vec<u8>)> = Vec::new();
        if let Some(stats) = &self.term_stats {
            meta.push((TERM_STATS_KEY, stats.to_bytes()));
        }
        if let Some(version) = self.terms_version {
            meta.push((TERMS_VERSION_KEY, version.to_be_bytes().to_vec()));
        }
        if let Some(from) = self.text_index_from {
            meta.push((TEXT_INDEX_FROM_KEY, from.to_be_bytes().to_vec()));
        }
        for (key, value) in &meta {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[key, value],
            )?;
        }
        Ok(())
    }
}
