//! The output-feed indexes: `feed_entries`, each feed's items newest first, rebuilt when the
//! feed's rules change; `feeds`, the fingerprint of the rules each was built with.

use super::items::item_of;
use super::*;
use crate::model::Item;

/// Items read per batch while rebuilding a feed's index.
const REBUILD_BATCH: i64 = 1000;

impl PgEngine {
    /// The entries of `feed` after `after` (or from its newest), a page at a time.
    fn feed_pages(&self, feed: &str, after: Option<(i64, ItemId)>) -> FeedEntries<'_> {
        let feed = feed.to_owned();
        Box::new(Pages::new(after, move |after| {
            let feed = feed.clone();
            let rows = self.run(move |client| {
                Ok(match after {
                    None => client.query(
                        "SELECT published_us, id FROM feed_entries WHERE feed = $1
                         ORDER BY published_us DESC, id LIMIT $2",
                        &[&feed, &PAGE],
                    )?,
                    Some((t, id)) => client.query(
                        &format!(
                            "SELECT published_us, id FROM feed_entries WHERE feed = $1 AND {}
                             ORDER BY published_us DESC, id LIMIT $4",
                            after_clause(2)
                        ),
                        &[&feed, &t, &id_bytes(id), &PAGE],
                    )?,
                })
            })?;
            rows.iter()
                .map(|row| {
                    let (t, id) = (row.get(0), id_of(row.get(1))?);
                    Ok((
                        t,
                        id,
                        FeedEntry {
                            published: time_of(t)?,
                            id,
                        },
                    ))
                })
                .collect()
        }))
    }
}

impl FeedIndex for PgEngine {
    fn feed_items(&self, feed: &str) -> FeedEntries<'_> {
        self.feed_pages(feed, None)
    }

    fn feed_items_after(
        &self,
        feed: &str,
        published: DateTime<Utc>,
        id: ItemId,
    ) -> FeedEntries<'_> {
        self.feed_pages(feed, Some((micros(published), id)))
    }

    fn current_item(&self, feed: &str, entry: FeedEntry) -> Result<Option<Item>, StoreError> {
        let item = self.item(entry.id)?;
        if item.as_ref().is_some_and(|i| entry.is_current_for(i)) {
            return Ok(item);
        }
        // A poll's writes are one transaction, so such an entry is one an edit left behind
        // between this reader's two reads, or one of an item pruned meanwhile: both go.
        let feed = feed.to_owned();
        self.run(move |client| {
            client.execute(
                "DELETE FROM feed_entries WHERE feed = $1 AND published_us = $2 AND id = $3",
                &[&feed, &micros(entry.published), &id_bytes(entry.id)],
            )?;
            Ok(())
        })?;
        Ok(None)
    }

    fn newest_of_source(
        &self,
        feed: &str,
        source: &str,
        n: usize,
    ) -> Result<Vec<FeedEntry>, StoreError> {
        let (feed, source) = (feed.to_owned(), source.to_owned());
        let n = n.min(i64::MAX as usize) as i64;
        let rows = self.run(move |client| {
            Ok(client.query(
                "SELECT e.published_us, e.id FROM feed_entries e
                 JOIN items i ON i.id = e.id AND i.published_us = e.published_us
                 WHERE e.feed = $1 AND e.source = $2
                 ORDER BY e.published_us DESC, e.id LIMIT $3",
                &[&feed, &source, &n],
            )?)
        })?;
        rows.iter()
            .map(|row| {
                Ok(FeedEntry {
                    published: time_of(row.get(0))?,
                    id: id_of(row.get(1))?,
                })
            })
            .collect()
    }

    fn feed_contains(&self, feed: &str, item: &Item) -> Result<bool, StoreError> {
        let feed = feed.to_owned();
        let (t, id) = (micros(item.published), id_bytes(item.id));
        self.run(move |client| {
            Ok(client
                .query_opt(
                    "SELECT 1 FROM feed_entries WHERE feed = $1 AND published_us = $2 AND id = $3",
                    &[&feed, &t, &id],
                )?
                .is_some())
        })
    }

    fn feed_fingerprint(&self, feed: &str) -> Result<Option<String>, StoreError> {
        let feed = feed.to_owned();
        self.run(move |client| {
            Ok(client
                .query_opt("SELECT fingerprint FROM feeds WHERE feed = $1", &[&feed])?
                .map(|row| row.get(0)))
        })
    }

    fn rebuild_feed_index(
        &self,
        feed: &str,
        fingerprint: &str,
        selects: &dyn Fn(&Item) -> bool,
    ) -> Result<usize, StoreError> {
        // The entries go and the rules are marked stale (an empty fingerprint, which no rules
        // have) in one transaction: a rebuild stopped part way leaves the feed listed, to be
        // rebuilt or dropped by the next sync.
        let stale = feed.to_owned();
        self.run(move |client| {
            let mut tx = client.transaction()?;
            tx.execute("DELETE FROM feed_entries WHERE feed = $1", &[&stale])?;
            tx.execute(
                "INSERT INTO feeds (feed, fingerprint) VALUES ($1, '')
                 ON CONFLICT (feed) DO UPDATE SET fingerprint = excluded.fingerprint",
                &[&stale],
            )?;
            tx.commit()?;
            Ok(())
        })?;
        let mut count = 0;
        let mut after: Option<(i64, ItemId)> = None;
        loop {
            let rows = self.run(move |client| {
                Ok(match after {
                    None => client.query(
                        "SELECT body, story, published_us, id FROM items
                         ORDER BY published_us DESC, id LIMIT $1",
                        &[&REBUILD_BATCH],
                    )?,
                    Some((t, id)) => client.query(
                        &format!(
                            "SELECT body, story, published_us, id FROM items WHERE {}
                             ORDER BY published_us DESC, id LIMIT $3",
                            after_clause(1)
                        ),
                        &[&t, &id_bytes(id), &REBUILD_BATCH],
                    )?,
                })
            })?;
            let Some(last) = rows.last() else {
                break;
            };
            after = Some((last.get(2), id_of(last.get(3))?));
            let (mut times, mut ids, mut sources) = (vec![], vec![], vec![]);
            for row in &rows {
                let item = item_of(row)?;
                if selects(&item) {
                    times.push(micros(item.published));
                    ids.push(id_bytes(item.id));
                    sources.push(item.source);
                }
            }
            count += ids.len();
            let feed = feed.to_owned();
            self.run(move |client| {
                client.execute(
                    "INSERT INTO feed_entries (feed, published_us, id, source)
                     SELECT $1, t, i, s FROM unnest($2::int8[], $3::bytea[], $4::text[]) AS u(t, i, s)
                     ON CONFLICT DO NOTHING",
                    &[&feed, &times, &ids, &sources],
                )?;
                Ok(())
            })?;
            if (rows.len() as i64) < REBUILD_BATCH {
                break;
            }
        }
        let (feed, fingerprint) = (feed.to_owned(), fingerprint.to_owned());
        self.run(move |client| {
            client.execute(
                "INSERT INTO feeds (feed, fingerprint) VALUES ($1, $2)
                 ON CONFLICT (feed) DO UPDATE SET fingerprint = excluded.fingerprint",
                &[&feed, &fingerprint],
            )?;
            Ok(())
        })?;
        Ok(count)
    }

    fn drop_feed_index(&self, feed: &str) -> Result<(), StoreError> {
        let feed = feed.to_owned();
        self.run(move |client| {
            let mut tx = client.transaction()?;
            tx.execute("DELETE FROM feed_entries WHERE feed = $1", &[&feed])?;
            tx.execute("DELETE FROM feeds WHERE feed = $1", &[&feed])?;
            tx.commit()?;
            Ok(())
        })
    }

    fn indexed_feeds(&self) -> Result<Vec<String>, StoreError> {
        self.run(|client| {
            Ok(client
                .query("SELECT feed FROM feeds ORDER BY feed", &[])?
                .iter()
                .map(|row| row.get(0))
                .collect())
        })
    }
}
