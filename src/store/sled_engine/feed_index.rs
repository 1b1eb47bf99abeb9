//! The output-feed indexes: each feed's items newest first, rebuilt when the feed's rules change.

use super::*;

impl FeedIndex for SledEngine {
    fn feed_items(&self, feed: &str) -> ItemIds<'_> {
        let prefix = name_prefix(feed);
        let skip = prefix.len() + 8;
        Box::new(
            self.iter_of(|t| t.feed_index.scan_prefix(prefix))
                .map(move |r| {
                    let (key, _) = r?;
                    ItemId::from_slice(&key[skip..]).ok_or(StoreError::Corrupt {
                        what: "feed index key",
                        message: format!("{} bytes", key.len()),
                    })
                }),
        )
    }

    fn feed_items_after(&self, feed: &str, published: DateTime<Utc>, id: ItemId) -> ItemIds<'_> {
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
            .map(move |r| {
                let (key, _) = r?;
                ItemId::from_slice(&key[skip..]).ok_or(StoreError::Corrupt {
                    what: "feed index key",
                    message: format!("{} bytes", key.len()),
                })
            }),
        )
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
