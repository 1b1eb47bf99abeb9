//! Deleting items: retention (`prune`: by age and count), a source's quota (`prune_source`),
//! tombstones, and dropping the text index of items past `dedup.index_age`.

use super::*;

impl Store {
    /// Whether retention pruned item `id` of `source` (so that it is not ingested again
    /// while the source's feed still lists it).
    pub fn is_pruned(&self, source: &str, id: ItemId) -> Result<bool, StoreError> {
        Ok(self
            .trees()?
            .tombstones
            .contains_key(tombstone_key(source, id))?)
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

    pub(super) fn prune_unguarded(
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
    pub(super) fn remove_items(
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
    pub(super) fn drop_text_index_slice(
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
}
