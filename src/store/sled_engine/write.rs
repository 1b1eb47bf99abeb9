//! A poll's writes: `apply_poll`, one batch per tree per slice of items, index entries before
//! items, flushed before the poll counts as done; the term statistics saved with them.

use super::*;

impl Ingest for SledEngine {
    fn apply_poll(
        &self,
        source: &str,
        plan: &IngestPlan,
        feeds: &[String],
        memberships: &[FeedMembership],
        state: &SourceState,
        term_stats: IngestGuard<'_>,
    ) -> Result<(), StoreError> {
        self.guarded(|| {
            self.apply_poll_unguarded(source, plan, feeds, memberships, state, term_stats)
        })
    }

    fn ingest_guard(&self) -> IngestGuard<'_> {
        IngestGuard::local(self.ingest.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn watch_others(&self, _on_change: Box<dyn Fn(StoreChange) + Send>) {
        // sled's lock keeps every other process out: nothing to watch.
    }
}

/// Moves each leaving item into a story of its own, where it is the only member; the member
/// that joined through a leaving lead leads its story now.
fn leave_stories(trees: &Trees, leaves: &[StoryLeave]) -> Result<(), StoreError> {
    let mut stories = sled::Batch::default();
    let mut records = Vec::new();
    for leave in leaves {
        stories.remove(&story_key(leave.story, leave.member));
        stories.insert(&story_key(leave.into, leave.member), &[]);
        if let Some(lead) = leave.new_lead {
            stories.insert(&story_key(leave.story, lead), &[]);
        }
        restory(trees, &mut records, leave.member, leave.into)?;
    }
    trees.stories.apply_batch(stories)?;
    let mut items = sled::Batch::default();
    trees.put_records(&mut items, &records)?;
    trees.items.apply_batch(items)?;
    Ok(())
}

/// Moves every member of each merged story into the story it joins (the one that led it
/// joins by the merge's link) and rewrites the members' items with their new story. A crash
/// between the two batches leaves some members shown apart, as before the merge.
fn merge_stories(trees: &Trees, merges: &[StoryMerge]) -> Result<(), StoreError> {
    for merge in merges {
        let mut stories = sled::Batch::default();
        let mut records = Vec::new();
        for entry in trees.stories.scan_prefix(merge.from.0) {
            let (key, link) = entry?;
            let member = ItemId::from_slice(&key[16..]).ok_or(StoreError::Corrupt {
                what: "story key",
                message: format!("{} bytes", key.len()),
            })?;
            let link = if link.is_empty() {
                encode(&merge.link)
            } else {
                link.to_vec()
            };
            stories.remove(key);
            stories.insert(&story_key(merge.into, member), link);
            restory(trees, &mut records, member, merge.into)?;
        }
        trees.stories.apply_batch(stories)?;
        let mut items = sled::Batch::default();
        trees.put_records(&mut items, &records)?;
        trees.items.apply_batch(items)?;
    }
    Ok(())
}

/// Adds to `records` the record of `member` (if stored) rewritten with its new story; the
/// old record is dead.
fn restory(
    trees: &Trees,
    records: &mut Vec<(ItemId, u64, Vec<u8>)>,
    member: ItemId,
    story: ItemId,
) -> Result<(), StoreError> {
    if let Some(record) = trees.record(member)? {
        let mut item = item_record::decode(&record)?;
        item.story = story;
        trees.count_dead_record(record.len());
        records.push((
            member,
            item.content_hash,
            item_record::encode(&item, trees.dictionary()),
        ));
    }
    Ok(())
}

impl SledEngine {
    pub(super) fn apply_poll_unguarded(
        &self,
        source: &str,
        plan: &IngestPlan,
        feeds: &[String],
        memberships: &[FeedMembership],
        state: &SourceState,
        term_stats: IngestGuard<'_>,
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
            let mut records = Vec::with_capacity(chunk.len());
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
                let record = item_record::encode(item, trees.dictionary());
                if write.previous.is_some() {
                    // The stored version's record, about the size of this one.
                    trees.count_dead_record(record.len());
                }
                records.push((item.id, item.content_hash, record));
            }
            // Records before their index entries and locators.
            let mut items = sled::Batch::default();
            let appended = trees.put_records(&mut items, &records)?;
            trees
                .written
                .fetch_add(appended, std::sync::atomic::Ordering::Relaxed);
            trees.by_time.apply_batch(by_time)?;
            trees.by_source.apply_batch(by_source)?;
            trees.feed_index.apply_batch(feed_index)?;
            trees.stories.apply_batch(stories)?;
            trees.items.apply_batch(items)?;
        }
        leave_stories(&trees, &plan.story_leaves)?;
        merge_stories(&trees, &plan.story_merges)?;
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
            trees
                .fingerprints
                .apply_batch(text_index_writes(chunk, indexed_now))?;
        }
        if !plan.fingerprints.is_empty() {
            {
                let mut recent = self.recent();
                if !recent.is_warm() {
                    // Before adding: the fill reads what sled holds, these included.
                    self.warm_recent(&mut recent)?;
                }
            }
            self.index_in_memory(&plan.fingerprints, indexed_now);
        }
        let mut urls = sled::Batch::default();
        for (url, claim) in &plan.claims {
            urls.insert(&url_key(url), item_record::encode_claim(claim));
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
        if !plan.writes.is_empty() {
            trees.count_poll_written()?;
        }
        // Written: the next poll may plan against it. The flush, the slow part, runs without
        // the guard, so polls of many sources flush side by side instead of in a queue.
        drop(term_stats);
        if plan.writes.is_empty()
            && plan.claims.is_empty()
            && plan.fingerprints.is_empty()
            && plan.story_merges.is_empty()
        {
            // Nothing but the source's state changed (every item unchanged).
            return self.flush_lazily();
        }
        trees.flush()?;
        self.train_dictionary_if_due(&trees);
        Ok(())
    }

    /// Trains the store's item dictionary once it holds [`item_record::DICTIONARY_AFTER`]
    /// items and has none, from the newest, and again each time the store has grown
    /// [`item_record::RETRAIN_GROWTH`] times since (its sources change); later records are
    /// compressed with the newest. A failure is logged and tried again once the store doubled.
    pub(super) fn train_dictionary_if_due(&self, trees: &Trees) {
        use std::sync::atomic::Ordering;
        let Ok(mut failed_at) = trees.training.try_lock() else {
            return; // another poll is training it
        };
        let current = trees.dictionary();
        // Once a store has a dictionary (or failed to train one) it looks at every 256th
        // poll that wrote items.
        let polls = trees.polls_written.load(Ordering::Acquire);
        if (current.is_some() || *failed_at > 0)
            && polls < trees.dictionary_next_check.load(Ordering::Relaxed)
        {
            return;
        }
        let every = trees.dictionary_check_every.load(Ordering::Relaxed).max(1);
        trees
            .dictionary_next_check
            .store(polls.saturating_add(every), Ordering::Relaxed);
        let Ok(items) = trees.stored_item_count() else {
            return;
        };
        let due = match current {
            None => items >= item_record::DICTIONARY_AFTER,
            Some(_) => {
                let trained_at = trees.dictionary_items.load(Ordering::Acquire);
                items >= trained_at.saturating_mul(item_record::RETRAIN_GROWTH)
            }
        };
        if !due || items < failed_at.saturating_mul(2) {
            return;
        }
        let started = std::time::Instant::now();
        let mut records = Vec::new();
        for key in trees
            .by_time
            .iter()
            .keys()
            .take(item_record::DICTIONARY_SAMPLES)
        {
            let Ok(key) = key else { break };
            if let Some((_, id)) = parse_time_key(&key) {
                if let Ok(Some(record)) = trees.record(id) {
                    records.push(record);
                }
            }
        }
        let Some(dictionary) = item_record::train(&records) else {
            *failed_at = items;
            tracing::warn!(
                samples = records.len(),
                "cannot train the item dictionary (tried again once the store has doubled); items stay compressed without one"
            );
            return;
        };
        let id = item_record::register(&dictionary);
        let stored = (|| -> Result<(), StoreError> {
            // In the log before any record compressed with it, so never a record without it.
            trees
                .meta
                .insert(dictionary_key(id), dictionary.as_slice())?;
            trees.meta.insert(ITEM_DICTIONARY_KEY, &id.to_le_bytes())?;
            trees
                .meta
                .insert(ITEM_DICTIONARY_ITEMS_KEY, &(items as u64).to_le_bytes())?;
            trees.flush()
        })();
        match stored {
            Ok(_) => {
                *trees
                    .item_dictionary
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = Some(id);
                trees.dictionary_items.store(items, Ordering::Release);
                tracing::info!(
                    items,
                    samples = records.len(),
                    bytes = dictionary.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "trained the item dictionary: new item records are compressed with it"
                );
            }
            Err(e) => tracing::warn!(error = %e, "cannot store the item dictionary"),
        }
    }

    /// Writes the term statistics when [`TERM_STATS_SAVE_EVERY`] has passed (or `always`).
    pub(super) fn save_term_stats(
        &self,
        stats: &TermStats,
        always: bool,
    ) -> Result<(), StoreError> {
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
}
