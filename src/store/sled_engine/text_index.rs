//! The near-duplicate text index: fingerprints in sled (and, for the recent window, in
//! memory), key terms in memory (`postings`, built from the fingerprints); candidates for a
//! new item; its rebuild when terms change.

use super::*;

pub(super) mod postings;
pub(super) mod recent;

use postings::KeyTermPostings;

/// How many key-term entries [`SledEngine::candidates`] reads per candidate it may take.
const SCAN_PER_TAKEN: usize = 2;

impl TextIndex for SledEngine {
    fn drop_text_index_before(&self, before: DateTime<Utc>) -> Result<usize, StoreError> {
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

    fn visit_recent(
        &self,
        published: DateTime<Utc>,
        window: std::time::Duration,
        limit: usize,
        visit: &mut dyn FnMut(ItemId, &FingerprintRecord),
    ) -> Result<(), StoreError> {
        let (recent, span) = self.recent_around(published, window)?;
        for (id, record) in recent
            .published_within(
                span.oldest.timestamp_micros(),
                span.newest.timestamp_micros(),
            )
            .take(limit)
        {
            visit(id, record);
        }
        Ok(())
    }

    fn candidates(
        &self,
        terms: &[u32],
        published: DateTime<Utc>,
        window: std::time::Duration,
        per_term: usize,
        source: &str,
    ) -> Result<Vec<(ItemId, usize)>, StoreError> {
        let own = source_tag(source);
        let Span { oldest, newest } = span_around(published, window);
        let (from, to) = (oldest.timestamp_micros(), newest.timestamp_micros());
        let postings = self.built_postings()?;
        // Entries read per term at most, the item's own source's included: a term that many
        // items of the window share names no one story, and reading all of them made a poll's
        // cost grow with the store.
        let scan = per_term.saturating_mul(SCAN_PER_TAKEN);
        Ok(tally_candidates(terms.iter().flat_map(|term| {
            postings
                .postings(*term, from, to)
                .take(scan)
                .filter(|posting| posting.source != own)
                .take(per_term)
                .map(|posting| posting.id)
        })))
    }

    fn fingerprint(&self, id: ItemId) -> Result<Option<FingerprintRecord>, StoreError> {
        match self.recent().get(id) {
            Some(record) => Ok(Some((*record).clone())),
            None => self.fingerprint_in_sled(id),
        }
    }

    fn shared_fingerprint(&self, id: ItemId) -> Result<Option<Arc<FingerprintRecord>>, StoreError> {
        if let Some(record) = self.recent().get(id) {
            return Ok(Some(record));
        }
        Ok(self.fingerprint_in_sled(id)?.map(Arc::new))
    }

    fn terms_version(&self) -> Result<u32, StoreError> {
        Ok(match self.trees()?.meta.get(TERMS_VERSION_KEY)? {
            Some(bytes) => bytes
                .as_ref()
                .try_into()
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    what: "terms version",
                    message: format!("{} bytes", bytes.len()),
                })?,
            None => 1,
        })
    }

    fn text_indexed_items(&self) -> Result<Vec<ItemId>, StoreError> {
        self.trees()?
            .fingerprints
            .iter()
            .keys()
            .filter_map(|k| match k {
                Ok(k) => <[u8; 16]>::try_from(k.as_ref())
                    .ok()
                    .map(|id| Ok(ItemId(id))),
                Err(e) => Some(Err(e.into())),
            })
            .collect()
    }

    fn replace_fingerprints(&self, chunk: &[IndexedFingerprint]) -> Result<(), StoreError> {
        self.guarded(|| {
            let trees = self.trees()?;
            trees
                .fingerprints
                .apply_batch(text_index_writes(chunk, |_| true))?;
            self.index_in_memory(chunk, |_| true);
            Ok(())
        })
    }

    fn finish_text_index_rebuild(
        &self,
        guard: &mut IngestGuard<'_>,
        stats: TermStats,
        version: u32,
    ) -> Result<(), StoreError> {
        self.guarded(|| {
            **guard = stats;
            self.save_term_stats(guard, true)?;
            let trees = self.trees()?;
            trees
                .meta
                .insert(TERMS_VERSION_KEY, &version.to_be_bytes())?;
            let capacity = self.recent().capacity();
            *self.recent() = RecentIndex::new(capacity);
            self.postings().forget();
            trees.flush()
        })
    }

    fn keep_recent_in_memory(&self, items: usize) {
        *self.recent() = RecentIndex::new(items);
    }

    #[cfg(test)]
    fn forget_terms_version(&self) -> Result<(), StoreError> {
        self.trees()?.meta.remove(TERMS_VERSION_KEY)?;
        Ok(())
    }
}

impl SledEngine {
    /// One slice of [`SledEngine::drop_text_index_before`]: up to [`TEXT_INDEX_SLICE`] items
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
                    fingerprints.remove(&id.0);
                    gone.push((id, record));
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
        trees.fingerprints.apply_batch(fingerprints)?;
        let mut recent = self.recent();
        for (id, _) in &gone {
            recent.remove(*id);
        }
        drop(recent);
        let mut postings = self.postings();
        for (id, record) in &gone {
            postings.remove(*id, record);
        }
        Ok(last.map(|last| (dropped, last)))
    }

    /// The recent index, warmed and following `window`, and the span of `window` either side
    /// of `published`.
    pub(super) fn recent_around(
        &self,
        published: DateTime<Utc>,
        window: std::time::Duration,
    ) -> Result<(MutexGuard<'_, RecentIndex>, Span), StoreError> {
        let mut recent = self.recent();
        recent.set_window(window);
        if !recent.is_warm() {
            self.warm_recent(&mut recent)?;
        }
        Ok((recent, span_around(published, window)))
    }

    pub(super) fn recent(&self) -> MutexGuard<'_, RecentIndex> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn postings(&self) -> MutexGuard<'_, KeyTermPostings> {
        self.postings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key-term index, built from the fingerprints in sled first if it is not.
    pub(super) fn built_postings(&self) -> Result<MutexGuard<'_, KeyTermPostings>, StoreError> {
        let mut postings = self.postings();
        if postings.is_built() {
            return Ok(postings);
        }
        let started = std::time::Instant::now();
        for entry in self.trees()?.fingerprints.iter() {
            let (key, bytes) = entry?;
            let Some(id) = ItemId::from_slice(&key) else {
                continue;
            };
            match FingerprintRecord::from_bytes(&bytes) {
                Some(record) => postings.insert(id, &record, source_tag(&record.source)),
                None => tracing::warn!(item = %id, "skipping an unreadable fingerprint"),
            }
        }
        postings.built();
        tracing::debug!(
            entries = postings.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "built the in-memory key-term index from the stored fingerprints"
        );
        Ok(postings)
    }

    /// Brings the in-memory indexes up to date with fingerprints just written to sled: each
    /// replaced record's entries go, each record `indexed_now` accepts comes in.
    pub(super) fn index_in_memory(
        &self,
        chunk: &[IndexedFingerprint],
        indexed_now: impl Fn(&IndexedFingerprint) -> bool,
    ) {
        {
            let mut postings = self.postings();
            if postings.is_built() {
                for indexed in chunk {
                    if let Some(old) = &indexed.replaces {
                        postings.remove(indexed.id, old);
                    }
                    if indexed_now(indexed) {
                        let tag = source_tag(&indexed.record.source);
                        postings.insert(indexed.id, &indexed.record, tag);
                    }
                }
            }
        }
        let mut recent = self.recent();
        if recent.is_warm() {
            for indexed in chunk {
                if indexed_now(indexed) {
                    recent.insert(indexed.id, Arc::new(indexed.record.clone()));
                } else {
                    recent.remove(indexed.id);
                }
            }
            recent.forget_out_of_reach(Utc::now().timestamp_micros());
        }
    }

    /// Fills the recent index from sled: the fingerprints of items published within its
    /// reach of now (or later), newest first, up to its capacity.
    pub(super) fn warm_recent(&self, recent: &mut RecentIndex) -> Result<(), StoreError> {
        let since = Utc::now().timestamp_micros().saturating_sub(recent.reach());
        let mut covered = since;
        for key in self.trees()?.by_time.iter().keys() {
            let key = key?;
            let Some((time, id)) = parse_time_key(&key) else {
                continue;
            };
            let micros = time.timestamp_micros();
            if micros < since {
                break;
            }
            if recent.len() >= recent.capacity() {
                // Everything after this item's time is in; from it on, sled answers.
                covered = micros.saturating_add(1);
                break;
            }
            match self.fingerprint_in_sled(id) {
                Ok(Some(record)) => recent.insert_any(id, Arc::new(record)),
                Ok(None) => {}
                Err(StoreError::Corrupt { what, message }) => {
                    tracing::warn!(item = %id, "skipping an unreadable {what}: {message}");
                }
                Err(e) => return Err(e),
            }
        }
        recent.warmed(covered);
        tracing::debug!(
            items = recent.len(),
            "filled the in-memory index of recent items"
        );
        Ok(())
    }

    pub(super) fn fingerprint_in_sled(
        &self,
        id: ItemId,
    ) -> Result<Option<FingerprintRecord>, StoreError> {
        match self.trees()?.fingerprints.get(id.0)? {
            Some(bytes) => {
                FingerprintRecord::from_bytes(&bytes)
                    .map(Some)
                    .ok_or(StoreError::Corrupt {
                        what: "fingerprint",
                        message: format!("{} bytes", bytes.len()),
                    })
            }
            None => Ok(None),
        }
    }
}

/// The times within `window` either side of `published`.
fn span_around(published: DateTime<Utc>, window: std::time::Duration) -> Span {
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    Span {
        newest: published.checked_add_signed(window).unwrap_or(published),
        oldest: published.checked_sub_signed(window).unwrap_or(published),
    }
}

/// The fingerprint writes that index `chunk`: each replaced record goes, then each record that
/// `indexed_now` accepts is written (its key terms are in it, for the in-memory index).
pub(super) fn text_index_writes(
    chunk: &[IndexedFingerprint],
    indexed_now: impl Fn(&IndexedFingerprint) -> bool,
) -> sled::Batch {
    let mut fingerprints = sled::Batch::default();
    for indexed in chunk {
        if indexed.replaces.is_some() {
            fingerprints.remove(&indexed.id.0);
        }
        if indexed_now(indexed) {
            fingerprints.insert(&indexed.id.0, indexed.record.to_bytes());
        }
    }
    fingerprints
}
