//! Deleting items: retention (`prune`: by age and count), a source's quota (`prune_source`)
//! and tombstones; and the record log's garbage collection, which gives back the space of
//! the records that died. (Dropping the text index of items past `dedup.index_age` is `text_index`'s.)

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
        self.guarded(|| {
            let lost = self.prune_unguarded(cutoff, max_items, now)?;
            self.collect_record_garbage_if_due()?;
            Ok(lost)
        })
    }

    fn prune_source(&self, source: &str, keep: u64, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.guarded(|| {
            let lost = self.prune_source_unguarded(source, keep, now)?;
            self.collect_record_garbage_if_due()?;
            Ok(lost)
        })
    }
}

impl SledEngine {
    /// Removes the items of `source` past its newest `keep`, under the ingest guard.
    fn prune_source_unguarded(
        &self,
        source: &str,
        keep: u64,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
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
                let Some(value) = trees.items.get(id.0)? else {
                    continue; // an index entry left by a crash: nothing else to remove
                };
                items.remove(&id.0);
                if let Some(at) = item_record::in_log(&value)? {
                    trees.count_dead(at.frame_bytes());
                }
                let Some(record) = trees.record_of(&value)? else {
                    continue; // its record is gone: nothing tells what else refers to it
                };
                let item = item_record::decode(&record)?;
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

    /// Collects the record log's garbage if enough records died
    /// ([`Trees::record_garbage_due`]): after a prune, once it has let go of the ingest guard.
    fn collect_record_garbage_if_due(&self) -> Result<(), StoreError> {
        let trees = self.trees()?;
        if trees.record_garbage_due() {
            self.collect_record_garbage(&trees)?;
        }
        Ok(())
    }

    /// Removes the record log's segments that hold no live record, after moving the live
    /// records of those a quarter or more dead to the end of the log: moving at most three
    /// bytes for each one freed, so that no segment stays mostly dead (retention prunes by
    /// date, and a source's first poll writes weeks of items side by side, so the segments
    /// of a backfill die by halves). Reads the whole `items` tree (locators, 37 bytes an
    /// item), so it runs only when enough records died ([`Trees::record_garbage_due`]).
    ///
    /// Polls go on meanwhile (it does not take the ingest guard): a record is moved only if
    /// its item still points where it was read ([`SledEngine::move_records`]), and one
    /// collection runs at a time (another finds it running and leaves).
    pub(super) fn collect_record_garbage(&self, trees: &Trees) -> Result<(), StoreError> {
        let _collecting = match trees.collecting.try_lock() {
            Ok(held) => held,
            // A collection that panicked left nothing half done that the next one minds.
            Err(std::sync::TryLockError::Poisoned(held)) => held.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Ok(()),
        };
        let started = std::time::Instant::now();
        let dead_before = trees
            .records_dead
            .load(std::sync::atomic::Ordering::Relaxed);
        let sealed = trees.records.sealed_segments();
        let mut live: HashMap<u32, u64> = HashMap::new();
        for value in trees.items.iter().values() {
            if let Some(at) = item_record::in_log(&value?)? {
                *live.entry(at.segment).or_default() += at.frame_bytes();
            }
        }
        let live_in = |segment: &u32| live.get(segment).copied().unwrap_or(0);
        let (sparse, kept): (HashMap<u32, u64>, HashMap<u32, u64>) = sealed
            .into_iter()
            .partition(|(segment, size)| live_in(segment) * 4 < size * 3);
        let mut moving = Vec::new();
        let mut moved = Moved::default();
        if sparse.keys().any(|segment| live.contains_key(segment)) {
            for entry in trees.items.iter() {
                let (key, value) = entry?;
                let Some(at) = item_record::in_log(&value)? else {
                    continue;
                };
                if !sparse.contains_key(&at.segment) {
                    continue;
                }
                let (Some(id), Some(record)) = (
                    ItemId::from_slice(&key),
                    trees.records.read(at).map_err(|e| trees.records_error(e))?,
                ) else {
                    continue; // unreadable already: its locator stays, and reads as missing
                };
                moving.push(Moving { id, value, record });
                if moving.len() == MOVE_CHUNK {
                    self.move_records(trees, &mut moving, &mut moved)?;
                }
            }
            self.move_records(trees, &mut moving, &mut moved)?;
        }
        // The moved records' new places durable before their old segments go.
        trees.flush()?;
        let freed = sparse.values().sum::<u64>().saturating_sub(moved.bytes);
        for segment in sparse.keys() {
            trees
                .records
                .remove_segment(*segment)
                .map_err(|e| trees.records_error(e))?;
        }
        // What stays dead: the rest of the segments kept, each under a quarter dead, and what
        // died while it ran (records polls rewrote, moves that lost to them).
        let dead_left: u64 = kept
            .iter()
            .map(|(segment, size)| size.saturating_sub(live_in(segment)))
            .sum();
        let died_meanwhile = trees
            .records_dead
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_sub(dead_before);
        trees.records_dead.store(
            dead_left + died_meanwhile,
            std::sync::atomic::Ordering::Relaxed,
        );
        tracing::info!(
            segments = sparse.len(),
            records_moved = moved.count,
            bytes_freed = freed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "collected the record log's garbage"
        );
        Ok(())
    }

    /// Appends the records of `moving` again, syncs the log, and points each item at its new
    /// place if it still holds the value it was read with (a poll may have rewritten the item,
    /// or a prune removed it, meanwhile: then the copy is dead); empties `moving`.
    pub(super) fn move_records(
        &self,
        trees: &Trees,
        moving: &mut Vec<Moving>,
        moved: &mut Moved,
    ) -> Result<(), StoreError> {
        if moving.is_empty() {
            return Ok(());
        }
        let records: Vec<&[u8]> = moving.iter().map(|m| m.record.as_slice()).collect();
        let places = trees
            .records
            .append(&records)
            .map_err(|e| trees.records_error(e))?;
        // Synced before any item points there, as a flush would have it.
        trees.records.sync().map_err(|e| trees.records_error(e))?;
        for (m, at) in moving.iter().zip(places) {
            let hash = item_record::content_hash(&m.value)?;
            let swapped = trees.items.compare_and_swap(
                m.id.0,
                Some(&m.value),
                Some(&item_record::encode_in_log(hash, at)[..]),
            )?;
            if swapped.is_ok() {
                moved.count += 1;
                moved.bytes += at.frame_bytes();
            } else {
                trees.count_dead(at.frame_bytes());
            }
        }
        moving.clear();
        Ok(())
    }
}

/// A live record that garbage collection moves: its item, the `items` value it was read
/// with, and the record.
pub(super) struct Moving {
    pub id: ItemId,
    pub value: sled::IVec,
    pub record: Vec<u8>,
}

/// What a garbage collection moved: records, and the bytes they take in their new places.
#[derive(Debug, Default)]
pub(super) struct Moved {
    pub count: usize,
    pub bytes: u64,
}

impl Trees {
    /// Counts a record of `bytes` (frame included) that died in the record log.
    pub(super) fn count_dead(&self, bytes: u64) {
        self.records_dead
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts the record of `len` bytes an item had before it was rewritten.
    pub(super) fn count_dead_record(&self, len: usize) {
        self.count_dead(len as u64 + record_log::FRAME_HEADER);
    }

    /// Whether enough records died for a garbage collection: a segment's worth, and a
    /// quarter of the log.
    pub(super) fn record_garbage_due(&self) -> bool {
        let dead = self.records_dead.load(std::sync::atomic::Ordering::Relaxed);
        dead >= self.records.segment_bytes() && dead * 4 >= self.records.size_on_disk()
    }
}
