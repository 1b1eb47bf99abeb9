//! Health and upkeep of the sled engine: failed writes close the database and `reopen`
//! brings it back once the disk takes writes again; flushes (lazy ones for state-only polls);
//! checkpoints that keep the next start quick; the item format upgrade; sizes and counts.

use super::*;

impl Health for SledEngine {
    fn path(&self) -> &Path {
        &self.path
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.guarded(|| self.flush_unguarded())
    }

    fn reopen(&self) -> Result<(), StoreError> {
        self.probe_room()?;
        let _ingest = self.ingest_guard();
        let mut slot = self.trees.write().unwrap_or_else(|p| p.into_inner());
        // The old database releases its lock once the last clone of it is dropped; readers
        // hold one only for the length of a call, and `open` waits for them briefly.
        drop(slot.take());
        *slot = Some(Arc::new(open_trees_waiting(&self.path, self.cache_bytes)?));
        // A background flush of the old database may have failed: not this one's fault.
        *self.flush_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        // What sled had not flushed is gone: the in-memory index refills from what it kept.
        let capacity = self.recent().capacity();
        *self.recent() = RecentIndex::new(capacity);
        self.postings().forget();
        Ok(())
    }

    fn checkpoint_if_due(&self) -> Result<bool, StoreError> {
        self.checkpoint_after(CHECKPOINT_AFTER_BYTES)
    }

    fn checkpoint_is_due(&self) -> bool {
        self.trees().is_ok_and(|t| {
            t.written.load(std::sync::atomic::Ordering::Relaxed) >= CHECKPOINT_AFTER_BYTES
        })
    }

    fn items_to_compress(&self) -> Result<bool, StoreError> {
        Ok(self.trees()?.meta.get(ITEM_FORMAT_KEY)?.as_deref() != Some(&[ITEM_FORMAT_IN_LOG][..]))
    }

    fn compress_items(&self, progress: &mut dyn FnMut(usize, usize)) -> Result<usize, StoreError> {
        self.guarded(|| {
            let _guard = self.ingest_guard();
            let trees = self.trees()?;
            let total = trees.items.len();
            let (mut seen, mut rewritten) = (0, 0);
            let mut after: Option<sled::IVec> = None;
            loop {
                progress(seen, total);
                let range = match &after {
                    Some(key) => trees.items.range::<&[u8], _>((
                        std::ops::Bound::Excluded(key.as_ref()),
                        std::ops::Bound::Unbounded,
                    )),
                    None => trees.items.iter(),
                };
                let mut records = Vec::new();
                let mut taken = 0;
                for entry in range.take(COMPRESS_SLICE) {
                    let (key, bytes) = entry?;
                    taken += 1;
                    if item_record::in_log(&bytes)?.is_none() {
                        // A compressed record moves as it is, without decompressing it.
                        let record = if item_record::is_compressed(&bytes) {
                            bytes.to_vec()
                        } else {
                            item_record::encode(&item_record::decode(&bytes)?, trees.dictionary())
                        };
                        let id = ItemId::from_slice(&key).ok_or(StoreError::Corrupt {
                            what: "item key",
                            message: format!("{} bytes", key.len()),
                        })?;
                        records.push((id, item_record::content_hash(&record)?, record));
                    }
                    after = Some(key);
                }
                seen += taken;
                rewritten += records.len();
                let mut batch = sled::Batch::default();
                trees.put_records(&mut batch, &records)?;
                trees.items.apply_batch(batch)?;
                trees.flush()?;
                if taken < COMPRESS_SLICE {
                    break;
                }
            }
            trees.meta.insert(ITEM_FORMAT_KEY, &[ITEM_FORMAT_IN_LOG])?;
            trees.flush()?;
            Ok(rewritten)
        })
    }

    fn size_on_disk(&self) -> u64 {
        self.trees()
            .ok()
            .map(|t| t.db.size_on_disk().unwrap_or(0) + t.records.size_on_disk())
            .unwrap_or(0)
    }

    fn record_counts(&self) -> Vec<(&'static str, usize)> {
        let Ok(t) = self.trees() else {
            return Vec::new();
        };
        vec![
            ("items", t.items.len()),
            ("by_time", t.by_time.len()),
            ("by_source", t.by_source.len()),
            ("feed_index", t.feed_index.len()),
            ("urls", t.urls.len()),
            ("stories", t.stories.len()),
            ("fingerprints", t.fingerprints.len()),
            // In memory, built from the fingerprints if it is not yet.
            ("key_terms", self.built_postings().map_or(0, |p| p.len())),
            ("sources", t.sources.len()),
            ("tombstones", t.tombstones.len()),
        ]
    }
}

impl SledEngine {
    /// Runs `write`; when it fails with an I/O error, closes the store (every call answers
    /// [`StoreError::Closed`] until [`SledEngine::reopen`]). A sled database that failed a write
    /// keeps the error and fails every later write and flush with it until it is opened
    /// again: nothing may use it any more.
    pub(super) fn guarded<T>(
        &self,
        write: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let trees = self.trees()?;
        let result = write();
        if let Err(e) = &result {
            if matches!(
                e,
                StoreError::Sled(sled::Error::Io(_)) | StoreError::Records { .. }
            ) {
                let mut slot = self.trees.write().unwrap_or_else(|p| p.into_inner());
                // Unless another thread reopened it meanwhile.
                if slot.as_ref().is_some_and(|open| Arc::ptr_eq(open, &trees)) {
                    *slot = None;
                    tracing::warn!(error = %e, "closed the store after a failed write");
                }
            }
        }
        result
    }

    /// Writes [`ROOM_PROBE_BYTES`] to a scratch file in the store's directory, syncs and
    /// removes it: whether sled would find room to open the database again.
    pub(super) fn probe_room(&self) -> Result<(), StoreError> {
        use std::io::Write;
        let probe = self.path.join(".room-probe");
        let written = std::fs::File::create(&probe).and_then(|mut file| {
            let chunk = vec![0u8; 64 * 1024];
            for _ in 0..ROOM_PROBE_BYTES / chunk.len() {
                file.write_all(&chunk)?;
            }
            file.sync_all()
        });
        let _ = std::fs::remove_file(&probe);
        written.map_err(|e| StoreError::Open {
            path: self.path.clone(),
            message: format!("{} ({e})", probe_failure(e.kind())),
        })
    }

    pub(super) fn checkpoint_after(&self, bytes: u64) -> Result<bool, StoreError> {
        let written = self
            .trees()?
            .written
            .load(std::sync::atomic::Ordering::Relaxed);
        if written < bytes {
            return Ok(false);
        }
        let _ingest = self.ingest_guard();
        let mut slot = self.trees.write().unwrap_or_else(|p| p.into_inner());
        let Some(current) = slot.as_ref() else {
            return Ok(false);
        };
        if Arc::strong_count(current) > 1 {
            return Ok(false);
        }
        current.flush()?;
        // The last handle: dropping it closes the database and lets its lock go.
        drop(slot.take());
        // On failure it is left closed: the daemon's recovery reopens it, as after a failed write.
        *slot = Some(Arc::new(open_trees_waiting(&self.path, self.cache_bytes)?));
        tracing::info!(
            written_mib = written / (1024 * 1024),
            "reopened the store so that it writes a snapshot (keeps the next start quick)"
        );
        Ok(true)
    }

    pub(super) fn flush_unguarded(&self) -> Result<(), StoreError> {
        let stats = self.ingest_guard();
        self.save_term_stats(&stats, true)?;
        drop(stats);
        self.trees()?.flush()
    }

    /// Starts a flush on a thread of its own when the last one started [`LAZY_FLUSH`] ago: a
    /// sweep of thousands of 304s costs a handful of flushes, not thousands, and none of
    /// them waits for the disk (a flush ends in `fdatasync`). A background flush that failed
    /// is reported by the next write, which then closes the store as a failed write does.
    pub(super) fn flush_lazily(&self) -> Result<(), StoreError> {
        if let Some(e) = self
            .flush_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            return Err(e);
        }
        // Another caller starting a flush now is as good.
        let mut last = match self.last_flush.try_lock() {
            Ok(last) => last,
            Err(std::sync::TryLockError::WouldBlock) => return Ok(()),
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        };
        if last.elapsed() < LAZY_FLUSH {
            return Ok(());
        }
        *last = std::time::Instant::now();
        let (trees, failed) = (self.trees()?, self.flush_error.clone());
        let flush = move || {
            if let Err(e) = trees.flush() {
                *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("store-flush".into())
            .spawn(flush)
        {
            tracing::warn!(error = %e, "cannot start a thread to flush the store; flushing here");
            self.trees()?.flush()?;
        }
        Ok(())
    }
}

/// What a failed write of the room probe says about the store's disk, for the log.
fn probe_failure(kind: std::io::ErrorKind) -> &'static str {
    use std::io::ErrorKind;
    match kind {
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => "no room to write on its disk yet",
        ErrorKind::ReadOnlyFilesystem => "its disk is still read-only",
        ErrorKind::NotFound => "its directory is missing (is its disk mounted?)",
        _ => "cannot write on its disk yet",
    }
}
