//! A poll's writes: `apply_poll`, one transaction for the items, their indexes and story
//! groups, the URL claims, the text index entries, tombstones and the source's state.

use std::collections::HashMap;

use postgres::types::Json;
use postgres::Transaction;

use super::*;
use crate::dedup::record::{IndexedFingerprint, IngestPlan, StoryLeave, StoryLink, StoryMerge};
use crate::model::{Item, SourceState};
use crate::store::FeedMembership;

impl Ingest for PgEngine {
    fn ingest_guard(&self) -> IngestGuard<'_> {
        self.guard_ingest()
    }

    fn watch_others(&self, on_change: Box<dyn Fn(StoreChange) + Send>) {
        changes::listen(
            self.connector.clone(),
            self.instance.clone(),
            self.stop_listening.clone(),
            on_change,
        );
    }

    fn apply_poll(
        &self,
        source: &str,
        plan: &IngestPlan,
        feeds: &[String],
        memberships: &[FeedMembership],
        state: &SourceState,
        mut term_stats: IngestGuard<'_>,
    ) -> Result<(), StoreError> {
        let mut poll = PollWrites::of(
            source,
            plan,
            feeds,
            memberships,
            state,
            self.index_from(plan),
        );
        poll.instance = self.instance.clone();
        // The poll replaces fingerprints: none read before may be kept.
        self.forget_fingerprints_read();
        self.run(move |client| {
            let mut transaction = client.transaction()?;
            poll.write(&mut transaction)?;
            transaction.commit()?;
            Ok(())
        })?;
        if !plan.fingerprints.is_empty() {
            self.sync_term_stats(&mut term_stats, false)?;
        }
        Ok(())
    }
}

impl PgEngine {
    /// Items published before this (microseconds) are not text-indexed by a poll.
    fn index_from(&self, plan: &IngestPlan) -> i64 {
        plan.index_from
            .map_or(i64::MIN, micros)
            .max(self.text_index_from.load(Ordering::Relaxed))
    }
}

/// What one poll writes, owned so that it can go to a connection's thread.
struct PollWrites {
    source: String,
    feeds: Vec<String>,
    writes: Vec<(Item, Option<Item>, Option<StoryLink>)>,
    memberships: HashMap<ItemId, Vec<String>>,
    merges: Vec<StoryMerge>,
    leaves: Vec<StoryLeave>,
    fingerprints: Vec<IndexedFingerprint>,
    index_from: i64,
    claims: Vec<(String, crate::dedup::record::UrlClaim)>,
    present: Vec<Vec<u8>>,
    state: SourceState,
    new_items: i64,
    /// The writing instance, in the change notification.
    instance: String,
}

impl PollWrites {
    fn of(
        source: &str,
        plan: &IngestPlan,
        feeds: &[String],
        memberships: &[FeedMembership],
        state: &SourceState,
        index_from: i64,
    ) -> PollWrites {
        let mut memberships_of: HashMap<ItemId, Vec<String>> = HashMap::new();
        for m in memberships {
            memberships_of
                .entry(m.item)
                .or_default()
                .push(m.feed.clone());
        }
        PollWrites {
            source: source.to_owned(),
            feeds: feeds.to_vec(),
            writes: plan
                .writes
                .iter()
                .map(|w| (w.item.clone(), w.previous.clone(), w.link))
                .collect(),
            memberships: memberships_of,
            merges: plan.story_merges.clone(),
            leaves: plan.story_leaves.clone(),
            fingerprints: plan.fingerprints.clone(),
            index_from,
            claims: plan.claims.clone(),
            present: plan.present.iter().map(|id| id_bytes(*id)).collect(),
            state: state.clone(),
            new_items: plan.new_items() as i64,
            instance: String::new(),
        }
    }

    fn write(&self, tx: &mut Transaction<'_>) -> Result<(), StoreError> {
        self.write_items(tx)?;
        leave_stories(tx, &self.leaves)?;
        merge_stories(tx, &self.merges)?;
        write_fingerprints(tx, &self.fingerprints, |f| {
            micros(f.record.published) >= self.index_from
        })?;
        self.write_claims(tx)?;
        // Tombstones of items the feed no longer lists are not needed any more.
        tx.execute(
            "DELETE FROM tombstones WHERE source = $1 AND NOT (id = ANY($2))",
            &[&self.source, &self.present],
        )?;
        tx.execute(
            "INSERT INTO source_states (source, state, item_count) VALUES ($1, $2, $3)
             ON CONFLICT (source) DO UPDATE
             SET state = excluded.state, item_count = source_states.item_count + $3",
            &[&self.source, &Json(&self.state), &self.new_items],
        )?;
        if !self.writes.is_empty() || !self.merges.is_empty() {
            changes::notify(
                tx,
                &self.instance,
                Some(&self.source),
                // Either regroups stories whose other members may be in any feed.
                !self.merges.is_empty() || !self.leaves.is_empty(),
            )?;
        }
        Ok(())
    }

    /// The items, their feed entries and, for new ones, their story membership; an edited
    /// item's entries at its old time go first.
    fn write_items(&self, tx: &mut Transaction<'_>) -> Result<(), StoreError> {
        if self.writes.is_empty() {
            return Ok(());
        }
        let edited: Vec<Vec<u8>> = self
            .writes
            .iter()
            .filter(|(_, previous, _)| previous.is_some())
            .map(|(item, _, _)| id_bytes(item.id))
            .collect();
        if !edited.is_empty() {
            tx.execute(
                "DELETE FROM feed_entries WHERE id = ANY($1) AND feed = ANY($2)",
                &[&edited, &self.feeds],
            )?;
        }
        let mut ids = Vec::new();
        let mut sources = Vec::new();
        let mut times = Vec::new();
        let mut hashes = Vec::new();
        let mut stories = Vec::new();
        let mut bodies = Vec::new();
        let (mut entry_feeds, mut entry_times, mut entry_ids) =
            (Vec::new(), Vec::new(), Vec::new());
        let (mut members, mut member_stories, mut links) = (Vec::new(), Vec::new(), Vec::new());
        for (item, previous, link) in &self.writes {
            ids.push(id_bytes(item.id));
            sources.push(item.source.clone());
            times.push(micros(item.published));
            hashes.push(item.content_hash as i64);
            stories.push(id_bytes(item.story));
            bodies.push(Json(item));
            for feed in self.memberships.get(&item.id).into_iter().flatten() {
                entry_feeds.push(feed.clone());
                entry_times.push(micros(item.published));
                entry_ids.push(id_bytes(item.id));
            }
            if previous.is_none() {
                members.push(id_bytes(item.id));
                member_stories.push(id_bytes(item.story));
                links.push(link.as_ref().map(Json));
            }
        }
        tx.execute(
            "INSERT INTO items (id, source, published_us, content_hash, story, body)
             SELECT * FROM unnest($1::bytea[], $2::text[], $3::int8[], $4::int8[], $5::bytea[], $6::jsonb[])
             ON CONFLICT (id) DO UPDATE SET source = excluded.source,
                 published_us = excluded.published_us, content_hash = excluded.content_hash,
                 story = excluded.story, body = excluded.body",
            &[&ids, &sources, &times, &hashes, &stories, &bodies],
        )?;
        tx.execute(
            "INSERT INTO feed_entries (feed, published_us, id, source)
             SELECT f, t, i, $4 FROM unnest($1::text[], $2::int8[], $3::bytea[]) AS u(f, t, i)
             ON CONFLICT DO NOTHING",
            &[&entry_feeds, &entry_times, &entry_ids, &self.source],
        )?;
        tx.execute(
            "INSERT INTO story_members (member, story, link)
             SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::jsonb[])
             ON CONFLICT (member) DO UPDATE SET story = excluded.story, link = excluded.link",
            &[&members, &member_stories, &links],
        )?;
        Ok(())
    }

    fn write_claims(&self, tx: &mut Transaction<'_>) -> Result<(), StoreError> {
        for (url, claim) in &self.claims {
            tx.execute(
                "INSERT INTO url_claims (url_hash, item, source, ambiguous) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (url_hash) DO UPDATE SET item = excluded.item,
                     source = excluded.source, ambiguous = excluded.ambiguous",
                &[
                    &url_hash(url),
                    &id_bytes(claim.item),
                    &claim.source,
                    &claim.ambiguous,
                ],
            )?;
        }
        Ok(())
    }
}

/// Moves each leaving item into a story of its own, where it is the only member; the member
/// that joined through a leaving lead leads its story now.
fn leave_stories(tx: &mut Transaction<'_>, leaves: &[StoryLeave]) -> Result<(), StoreError> {
    for leave in leaves {
        let (story, member, into) = (
            id_bytes(leave.story),
            id_bytes(leave.member),
            id_bytes(leave.into),
        );
        tx.execute(
            "UPDATE story_members SET story = $3, link = NULL WHERE story = $1 AND member = $2",
            &[&story, &member, &into],
        )?;
        tx.execute(
            "UPDATE items SET story = $2 WHERE id = $1",
            &[&member, &into],
        )?;
        if let Some(lead) = leave.new_lead {
            tx.execute(
                "UPDATE story_members SET link = NULL WHERE story = $1 AND member = $2",
                &[&story, &id_bytes(lead)],
            )?;
        }
    }
    Ok(())
}

/// Moves every member of each merged story into the story it joins (the one that led it
/// joins by the merge's link), and their items with them.
fn merge_stories(tx: &mut Transaction<'_>, merges: &[StoryMerge]) -> Result<(), StoreError> {
    for merge in merges {
        let (from, into) = (id_bytes(merge.from), id_bytes(merge.into));
        tx.execute(
            "UPDATE story_members SET story = $2, link = COALESCE(link, $3)
             WHERE story = $1",
            &[&from, &into, &Json(&merge.link)],
        )?;
        tx.execute(
            "UPDATE items SET story = $2 WHERE story = $1",
            &[&from, &into],
        )?;
    }
    Ok(())
}

/// Writes the text index entries of `chunk`: each replaced record's go, then each record that
/// `indexed_now` accepts is written with its key terms.
pub(super) fn write_fingerprints(
    tx: &mut Transaction<'_>,
    chunk: &[IndexedFingerprint],
    indexed_now: impl Fn(&IndexedFingerprint) -> bool,
) -> Result<(), StoreError> {
    let replaced: Vec<Vec<u8>> = chunk
        .iter()
        .filter(|f| f.replaces.is_some())
        .map(|f| id_bytes(f.id))
        .collect();
    if !replaced.is_empty() {
        tx.execute("DELETE FROM fingerprints WHERE id = ANY($1)", &[&replaced])?;
        tx.execute("DELETE FROM key_terms WHERE id = ANY($1)", &[&replaced])?;
    }
    let (mut ids, mut sources, mut times, mut records) = (vec![], vec![], vec![], vec![]);
    let (mut terms, mut term_times, mut term_ids, mut term_sources) =
        (vec![], vec![], vec![], vec![]);
    for indexed in chunk.iter().filter(|f| indexed_now(f)) {
        let record = &indexed.record;
        ids.push(id_bytes(indexed.id));
        sources.push(record.source.clone());
        times.push(micros(record.published));
        records.push(record.to_bytes());
        for term in &record.keys {
            terms.push(*term as i32);
            term_times.push(micros(record.published));
            term_ids.push(id_bytes(indexed.id));
            term_sources.push(record.source.clone());
        }
    }
    if ids.is_empty() {
        return Ok(());
    }
    // An item indexed again leaves no key term of its earlier text behind.
    tx.execute("DELETE FROM key_terms WHERE id = ANY($1)", &[&ids])?;
    tx.execute(
        "INSERT INTO fingerprints (id, source, published_us, record)
         SELECT * FROM unnest($1::bytea[], $2::text[], $3::int8[], $4::bytea[])
         ON CONFLICT (id) DO UPDATE SET source = excluded.source,
             published_us = excluded.published_us, record = excluded.record",
        &[&ids, &sources, &times, &records],
    )?;
    tx.execute(
        "INSERT INTO key_terms (term, published_us, id, source)
         SELECT * FROM unnest($1::int4[], $2::int8[], $3::bytea[], $4::text[])
         ON CONFLICT DO NOTHING",
        &[&terms, &term_times, &term_ids, &term_sources],
    )?;
    Ok(())
}

/// The key of a canonical URL's claim: the first 16 bytes of its SHA-256, as the sled engine
/// keys it (a URL can be longer than an index entry may be).
pub(super) fn url_hash(canonical: &str) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    Sha256::digest(canonical.as_bytes())[..16].to_vec()
}
