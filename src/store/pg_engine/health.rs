//! Durability, recovery and upkeep. A committed transaction is durable and a broken connection
//! is opened again by the pool, so most of the sled engine's upkeep has nothing to do here.

use super::*;

/// The tables counted by [`Health::record_counts`], by the sled engine's names for the same
/// records where it has one.
const COUNTED: &[(&str, &str)] = &[
    ("items", "items"),
    ("feed_index", "feed_entries"),
    ("urls", "url_claims"),
    ("stories", "story_members"),
    ("fingerprints", "fingerprints"),
    ("key_terms", "key_terms"),
    ("sources", "source_states"),
    ("tombstones", "tombstones"),
];

impl Health for PgEngine {
    fn path(&self) -> &Path {
        self.shown()
    }

    fn flush(&self) -> Result<(), StoreError> {
        let mut stats = self.ingest_guard();
        self.sync_term_stats(&mut stats, true)
    }

    fn reopen(&self) -> Result<(), StoreError> {
        // The pool reconnects by itself: reopening is checking that the database answers.
        self.run(|client| {
            client.simple_query("SELECT 1")?;
            Ok(())
        })
    }

    fn checkpoint_if_due(&self) -> Result<bool, StoreError> {
        Ok(false)
    }

    fn checkpoint_is_due(&self) -> bool {
        false
    }

    fn items_to_compress(&self) -> Result<bool, StoreError> {
        Ok(false)
    }

    fn compress_items(&self, _progress: &mut dyn FnMut(usize, usize)) -> Result<usize, StoreError> {
        Ok(0)
    }

    fn size_on_disk(&self) -> u64 {
        self.run(|client| {
            let bytes: i64 = client
                .query_one("SELECT pg_database_size(current_database())", &[])?
                .get(0);
            Ok(bytes.max(0) as u64)
        })
        .unwrap_or(0)
    }

    fn record_counts(&self) -> Vec<(&'static str, usize)> {
        let counted = self.run(|client| {
            let mut counts = Vec::new();
            for (name, table) in COUNTED {
                let n: i64 = client
                    .query_one(&format!("SELECT count(*) FROM {table}"), &[])?
                    .get(0);
                counts.push((*name, n.max(0) as usize));
            }
            Ok(counts)
        });
        counted.unwrap_or_default()
    }
}
