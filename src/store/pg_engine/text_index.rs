//! The near-duplicate text index: `fingerprints` and their `key_terms`, read by time and term;
//! candidates for a new item; its rebuild when terms change.

use std::sync::Arc;

use super::write::write_fingerprints;
use super::*;
use crate::dedup::record::{FingerprintRecord, IndexedFingerprint};

/// How many key-term entries [`TextIndex::candidates`] reads per candidate it may take (as the
/// sled engine: a term that many items share names no one story).
const SCAN_PER_TAKEN: i64 = 2;
/// Items whose text index entries one transaction of
/// [`TextIndex::drop_text_index_before`] drops at most, holding the ingest guard.
const TEXT_INDEX_SLICE: i64 = 1024;

/// The times, in microseconds, within `window` either side of `published`.
fn span_around(published: DateTime<Utc>, window: std::time::Duration) -> (i64, i64) {
    let window = i64::try_from(window.as_micros()).unwrap_or(i64::MAX);
    let at = micros(published);
    (at.saturating_sub(window), at.saturating_add(window))
}

fn record_of(bytes: &[u8]) -> Result<FingerprintRecord, StoreError> {
    FingerprintRecord::from_bytes(bytes).ok_or_else(|| corrupt("fingerprint", bytes.len()))
}

impl TextIndex for PgEngine {
    fn visit_recent(
        &self,
        published: DateTime<Utc>,
        window: std::time::Duration,
        limit: usize,
        visit: &mut dyn FnMut(ItemId, &FingerprintRecord),
    ) -> Result<(), StoreError> {
        let (oldest, newest) = span_around(published, window);
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = self.run(move |client| {
            Ok(client.query(
                "SELECT id, record FROM fingerprints WHERE published_us BETWEEN $1 AND $2
                 ORDER BY published_us DESC, id LIMIT $3",
                &[&oldest, &newest, &limit],
            )?)
        })?;
        for row in &rows {
            match record_of(row.get(1)) {
                Ok(record) => visit(id_of(row.get(0))?, &record),
                Err(e) => tracing::warn!("skipping an unreadable fingerprint: {e}"),
            }
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
        let terms: Vec<i32> = terms.iter().map(|t| *t as i32).collect();
        let (oldest, newest) = span_around(published, window);
        let take = per_term.min(i64::MAX as usize) as i64;
        let scan = take.saturating_mul(SCAN_PER_TAKEN);
        let source = source.to_owned();
        // Per term, the newest `scan` entries of the window, the item's own source's included,
        // of which the first `take` of other sources count.
        let rows = self.run(move |client| {
            Ok(client.query(
                "SELECT c.id, f.record FROM unnest($1::int4[]) WITH ORDINALITY AS t(term, n),
                 LATERAL (SELECT s.id, s.published_us FROM (
                     SELECT k.id, k.source, k.published_us FROM key_terms k
                     WHERE k.term = t.term AND k.published_us BETWEEN $2 AND $3
                     ORDER BY k.published_us DESC, k.id LIMIT $5) s
                   WHERE s.source <> $4
                   ORDER BY s.published_us DESC, s.id LIMIT $6) c
                 LEFT JOIN fingerprints f ON f.id = c.id
                 ORDER BY t.n, c.published_us DESC, c.id",
                &[&terms, &oldest, &newest, &source, &scan, &take],
            )?)
        })?;
        let mut found = Vec::with_capacity(rows.len());
        let mut read = self
            .fingerprints_read
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for row in &rows {
            let id = id_of(row.get(0))?;
            if let Some(Ok(record)) = row.get::<_, Option<&[u8]>>(1).map(record_of) {
                read.entry(id).or_insert_with(|| Arc::new(record));
            }
            found.push(id);
        }
        Ok(tally_candidates(found))
    }

    fn fingerprint(&self, id: ItemId) -> Result<Option<FingerprintRecord>, StoreError> {
        let row = self.run(move |client| {
            Ok(client.query_opt(
                "SELECT record FROM fingerprints WHERE id = $1",
                &[&id_bytes(id)],
            )?)
        })?;
        row.map(|row| record_of(row.get(0))).transpose()
    }

    fn shared_fingerprint(&self, id: ItemId) -> Result<Option<Arc<FingerprintRecord>>, StoreError> {
        let read = self
            .fingerprints_read
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned();
        match read {
            Some(record) => Ok(Some(record)),
            None => Ok(self.fingerprint(id)?.map(Arc::new)),
        }
    }

    fn keep_recent_in_memory(&self, _items: usize) {
        // Every lookup reads the database, which all instances share: nothing is kept here.
    }

    fn terms_version(&self) -> Result<u32, StoreError> {
        Ok(match self.meta(TERMS_VERSION_KEY)? {
            Some(bytes) => <[u8; 4]>::try_from(bytes.as_slice())
                .map(u32::from_be_bytes)
                .map_err(|_| corrupt("terms version", bytes.len()))?,
            None => 1,
        })
    }

    fn text_indexed_items(&self) -> Result<Vec<ItemId>, StoreError> {
        let rows =
            self.run(|client| Ok(client.query("SELECT id FROM fingerprints ORDER BY id", &[])?))?;
        rows.iter().map(|row| id_of(row.get(0))).collect()
    }

    fn replace_fingerprints(&self, chunk: &[IndexedFingerprint]) -> Result<(), StoreError> {
        self.forget_fingerprints_read();
        let chunk = chunk.to_vec();
        self.run(move |client| {
            let mut tx = client.transaction()?;
            write_fingerprints(&mut tx, &chunk, |_| true)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn finish_text_index_rebuild(
        &self,
        guard: &mut IngestGuard<'_>,
        stats: TermStats,
        version: u32,
    ) -> Result<(), StoreError> {
        self.replace_term_stats(&stats)?;
        **guard = stats;
        self.put_meta(TERMS_VERSION_KEY, version.to_be_bytes().to_vec())
    }

    fn drop_text_index_before(&self, before: DateTime<Utc>) -> Result<usize, StoreError> {
        let before = micros(before);
        let mut dropped = 0;
        self.forget_fingerprints_read();
        loop {
            let _guard = self.ingest_guard();
            let n = self.run(move |client| {
                let mut tx = client.transaction()?;
                let gone: Vec<Vec<u8>> = tx
                    .query(
                        "DELETE FROM fingerprints WHERE id IN (
                             SELECT id FROM fingerprints WHERE published_us < $1 LIMIT $2)
                         RETURNING id",
                        &[&before, &TEXT_INDEX_SLICE],
                    )?
                    .iter()
                    .map(|row| row.get(0))
                    .collect();
                tx.execute("DELETE FROM key_terms WHERE id = ANY($1)", &[&gone])?;
                tx.commit()?;
                Ok(gone.len())
            })?;
            dropped += n;
            if (n as i64) < TEXT_INDEX_SLICE {
                break;
            }
        }
        // Moved back as well when the age was made longer: polls index from it again.
        if self.text_index_from.swap(before, Ordering::Relaxed) != before {
            self.put_meta(TEXT_INDEX_FROM_KEY, before.to_be_bytes().to_vec())?;
        }
        Ok(dropped)
    }

    #[cfg(test)]
    fn forget_terms_version(&self) -> Result<(), StoreError> {
        self.run(|client| {
            client.execute("DELETE FROM meta WHERE key = $1", &[&TERMS_VERSION_KEY])?;
            Ok(())
        })
    }
}
