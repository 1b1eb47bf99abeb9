//! Deleting items: retention (`prune`: by age and count), a source's quota (`prune_source`)
//! and tombstones. Each deletion is one transaction with everything that refers to the items.

use std::collections::{HashMap, HashSet};

use postgres::Transaction;

use super::*;

impl Retention for PgEngine {
    fn is_pruned(&self, source: &str, id: ItemId) -> Result<bool, StoreError> {
        let source = source.to_owned();
        self.run(move |client| {
            Ok(client
                .query_opt(
                    "SELECT 1 FROM tombstones WHERE source = $1 AND id = $2",
                    &[&source, &id_bytes(id)],
                )?
                .is_some())
        })
    }

    fn pruned_among(&self, source: &str, ids: &[ItemId]) -> Result<HashSet<ItemId>, StoreError> {
        let (source, asked) = (
            source.to_owned(),
            ids.iter().map(|id| id_bytes(*id)).collect::<Vec<_>>(),
        );
        let rows = self.run(move |client| {
            Ok(client.query(
                "SELECT id FROM tombstones WHERE source = $1 AND id = ANY($2)",
                &[&source, &asked],
            )?)
        })?;
        rows.iter()
            .map(|row| id_of(row.get::<_, &[u8]>(0)))
            .collect()
    }

    fn tombstone_count(&self) -> usize {
        self.run(|client| {
            let n: i64 = client
                .query_one("SELECT count(*) FROM tombstones", &[])?
                .get(0);
            Ok(n as usize)
        })
        .unwrap_or(0)
    }

    fn prune(
        &self,
        cutoff: Option<DateTime<Utc>>,
        max_items: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<HashMap<String, u64>, StoreError> {
        let _guard = self.ingest_guard();
        self.forget_fingerprints_read();
        let cutoff = cutoff.map(micros);
        let keep = max_items.map(|n| n.min(i64::MAX as u64) as i64);
        let now = micros(now);
        let instance = self.instance.clone();
        self.run(move |client| {
            let mut tx = client.transaction()?;
            // The victims: older than the cutoff, or beyond the newest `keep`.
            let victims: Vec<Vec<u8>> = tx
                .query(
                    "SELECT id FROM (
                         SELECT id, published_us,
                                row_number() OVER (ORDER BY published_us DESC, id) AS n
                         FROM items) ranked
                     WHERE ($1::int8 IS NOT NULL AND published_us < $1)
                        OR ($2::int8 IS NOT NULL AND n > $2)",
                    &[&cutoff, &keep],
                )?
                .iter()
                .map(|row| row.get(0))
                .collect();
            remove_and_tell(tx, &victims, now, &instance)
        })
    }

    fn prune_source(&self, source: &str, keep: u64, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let _guard = self.ingest_guard();
        self.forget_fingerprints_read();
        let source = source.to_owned();
        let keep = keep.min(i64::MAX as u64) as i64;
        let now = micros(now);
        let instance = self.instance.clone();
        self.run(move |client| {
            let mut tx = client.transaction()?;
            let victims: Vec<Vec<u8>> = tx
                .query(
                    "SELECT id FROM items WHERE source = $1
                     ORDER BY published_us DESC, id OFFSET $2",
                    &[&source, &keep],
                )?
                .iter()
                .map(|row| row.get(0))
                .collect();
            Ok(remove_and_tell(tx, &victims, now, &instance)?
                .values()
                .sum())
        })
    }
}

/// [`remove_items`], then tells the other instances when any went, and commits.
fn remove_and_tell(
    mut tx: Transaction<'_>,
    victims: &[Vec<u8>],
    now: i64,
    instance: &str,
) -> Result<HashMap<String, u64>, StoreError> {
    let lost = remove_items(&mut tx, victims, now)?;
    if !lost.is_empty() {
        changes::notify(&mut tx, instance, None, true)?;
    }
    tx.commit()?;
    Ok(lost)
}

/// Deletes the items `victims` with everything that refers to them, leaves a tombstone for
/// each, and sets the affected sources' counts. Returns how many items each source lost.
fn remove_items(
    tx: &mut Transaction<'_>,
    victims: &[Vec<u8>],
    now: i64,
) -> Result<HashMap<String, u64>, StoreError> {
    let mut lost: HashMap<String, u64> = HashMap::new();
    if victims.is_empty() {
        return Ok(lost);
    }
    for table in ["feed_entries", "fingerprints", "key_terms"] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE id = ANY($1)"),
            &[&victims],
        )?;
    }
    tx.execute(
        "DELETE FROM story_members WHERE member = ANY($1)",
        &[&victims],
    )?;
    tx.execute("DELETE FROM url_claims WHERE item = ANY($1)", &[&victims])?;
    let gone = tx.query(
        "DELETE FROM items WHERE id = ANY($1) RETURNING source, id",
        &[&victims],
    )?;
    let (mut sources, mut ids) = (Vec::new(), Vec::new());
    for row in &gone {
        let source: String = row.get(0);
        *lost.entry(source.clone()).or_default() += 1;
        sources.push(source);
        ids.push(row.get::<_, Vec<u8>>(1));
    }
    tx.execute(
        "INSERT INTO tombstones (source, id, pruned_us)
         SELECT s, i, $3 FROM unnest($1::text[], $2::bytea[]) AS u(s, i)
         ON CONFLICT (source, id) DO UPDATE SET pruned_us = excluded.pruned_us",
        &[&sources, &ids, &now],
    )?;
    let affected: Vec<&String> = lost.keys().collect();
    tx.execute(
        "UPDATE source_states s SET item_count =
             (SELECT count(*) FROM items i WHERE i.source = s.source)
         WHERE s.source = ANY($1)",
        &[&affected],
    )?;
    Ok(lost)
}
