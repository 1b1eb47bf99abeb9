//! The output-feed indexes: each feed's items newest first, rebuilt when the feed's rules change.

use super::*;

/// The entry a feed index key (after `skip` bytes of feed name) stands for.
fn feed_entry(key: &[u8], skip: usize) -> Result<FeedEntry, StoreError> {
    let corrupt = || StoreError::Corrupt {
        what: "feed index key",
        message: format!("{} bytes", key.len()),
    };
    let (published, id) = key
        .get(skip - 8..)
        .and_then(parse_time_key)
        .ok_or_else(corrupt)?;
    Ok(FeedEntry { published, id })
}

impl FeedIndex for SledEngine {
    fn feed_items(&self, feed: &str) -> FeedEntries<'_> {
        let prefix = name_prefix(feed);
        let skip = prefix.len() + 8;
        Box::new(
            self.iter_of(|t| t.feed_index.scan_prefix(prefix))
                .map(move |r| feed_entry(&r?.0, skip)),
        )
    }

    fn feed_items_after(
        &self,
        feed: &str,
        published: DateTime<Utc>,
        id: ItemId,
    ) -> FeedEntries<'_> {
        let prefix = name_prefix(feed);
        let skip = prefix.len() + 8;
        let mut end = prefix.clone();
        end.extend_from_slice(&[0xff; 25]);
        let start = prefixed_key(feed, published, id);
        Box::new(
            self.iter_of(|t| {
                t.feed_index.range((
                    std::ops::Bound::Excluded(start),
                    std::ops::Bound::Included(end),
                ))
            })
            .map(move |r| feed_entry(&r?.0, skip)),
        )
    }

    fn current_item(&self, feed: &str, entry: FeedEntry) -> Result<Option<Item>, StoreError> {
        let item = self.item(entry.id)?;
        if item.as_ref().is_some_and(|i| entry.is_current_for(i)) {
            return Ok(item);
        }
        self.drop_stale_entry(feed, entry)?;
        Ok(None)
    }

    fn newest_of_source(
        &self,
        feed: &str,
        source: &str,
        n: usize,
    ) -> Result<Vec<FeedEntry>, StoreError> {
        let trees = self.trees()?;
        let prefix = name_prefix(source);
        let mut found = Vec::new();
        for key in trees.by_source.scan_prefix(&prefix).keys() {
            if found.len() >= n {
                break;
            }
            let entry = feed_entry(&key?, prefix.len() + 8)?;
            let key = prefixed_key(feed, entry.published, entry.id);
            if !trees.feed_index.contains_key(key)? {
                continue;
            }
            if self
                .item(entry.id)?
                .is_some_and(|i| entry.is_current_for(&i))
            {
                found.push(entry);
            }
        }
        Ok(found)
    }

    fn feed_contains(&self, feed: &str, item: &Item) -> Result<bool, StoreError> {
        Ok(self
            .trees()?
            .feed_index
            .contains_key(prefixed_key(feed, item.published, item.id))?)
    }

    fn feed_fingerprint(&self, feed: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .trees()?
            .meta
            .get(format!("{FINGERPRINT_PREFIX}{feed}"))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn rebuild_feed_index(
        &self,
        feed: &str,
        fingerprint: &str,
        selects: &dyn Fn(&Item) -> bool,
    ) -> Result<usize, StoreError> {
        self.drop_feed_index(feed)?;
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for entry in self.trees()?.items.iter() {
            let (_, bytes) = entry?;
            let item = item_record::decode(&bytes)?;
            if selects(&item) {
                batch.insert(prefixed_key(feed, item.published, item.id), &[]);
                count += 1;
            }
        }
        self.trees()?.feed_index.apply_batch(batch)?;
        self.trees()?.meta.insert(
            format!("{FINGERPRINT_PREFIX}{feed}"),
            fingerprint.as_bytes(),
        )?;
        self.trees()?.flush()?;
        Ok(count)
    }

    fn drop_feed_index(&self, feed: &str) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for key in self
            .trees()?
            .feed_index
            .scan_prefix(name_prefix(feed))
            .keys()
        {
            batch.remove(key?);
        }
        self.trees()?.feed_index.apply_batch(batch)?;
        self.trees()?
            .meta
            .remove(format!("{FINGERPRINT_PREFIX}{feed}"))?;
        Ok(())
    }

    fn indexed_feeds(&self) -> Result<Vec<String>, StoreError> {
        self.trees()?
            .meta
            .scan_prefix(FINGERPRINT_PREFIX)
            .keys()
            .map(|k| {
                let k = k?;
                Ok(String::from_utf8_lossy(&k[FINGERPRINT_PREFIX.len()..]).into_owned())
            })
            .collect()
    }
}

impl SledEngine {
    /// Deletes `entry` from `feed`'s index if it is still not its item's own, unless a poll is
    /// being written (or the store pruned): the item of a poll's index entry is written just
    /// after it, under the ingest guard, so only with the guard held is a missing item gone.
    fn drop_stale_entry(&self, feed: &str, entry: FeedEntry) -> Result<(), StoreError> {
        let Ok(_guard) = self.ingest.try_lock() else {
            return Ok(()); // held (or poisoned): left for a later reader
        };
        if self
            .item(entry.id)?
            .is_some_and(|i| entry.is_current_for(&i))
        {
            return Ok(());
        }
        self.guarded(|| {
            self.trees()?
                .feed_index
                .remove(prefixed_key(feed, entry.published, entry.id))?;
            Ok(())
        })?;
        tracing::debug!(feed, id = %entry.id.to_hex(), "deleted a stale feed index entry");
        Ok(())
    }
}
