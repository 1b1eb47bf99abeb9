//! Deleting items: retention (`prune`: by age and count), a source's quota (`prune_source`)
//! and tombstones. (Dropping the text index of items past `dedup.index_age` is `text_index`'s.)

use super::*;

impl Retention for SledEngine {
    fn is_pruned(&self, source: &str, id: ItemId) -> Result<bool, StoreError> {
        Ok(self
            .trees()?
            .tombstones
            .contains_key(tombstone_key(source, id))?)
    }

    fn tombstone_count(&self) -> usize {
        self.trees().map_or(0, |t| t.tombstones.len())
    }

    fn prune(
        &self,
        cutoff: Option<DateTime<Utc>>,
        max_items: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, u64>, StoreError> {
        self.guarded(|| self.prune_unguarded(cutoff, max_items, now))
    }

    fn prune_source(&self, source: &str, keep: u64, now: DateTime<Utc>) -> Result<u64, StoreError> {
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
}

impl SledEngine {
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
            let mut unindexed = Vec::new();
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
                    unindexed.push((item.id, record));
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
            trees.fingerprints.apply_batch(fingerprints)?;
            trees.urls.apply_batch(urls)?;
            trees.items.apply_batch(items)?;
            let mut recent = self.recent();
            for (_, id) in chunk {
                recent.remove(*id);
            }
            drop(recent);
            let mut postings = self.postings();
            for (id, record) in &unindexed {
                postings.remove(*id, record);
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
}
