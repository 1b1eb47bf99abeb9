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
        let (source_prefix, feed_prefix) = (name_prefix(source), name_prefix(feed));
        // Two walks to the same entries, newest first, a step of each in turn: the source's
        // items looked up in the feed's index, and the feed's entries looked up in the
        // source's. The first to finish has them all, so a feed holding few of a big source's
        // items costs the feed's entries, and a big feed the source's items.
        let mut walks = [
            Walk::new(
                trees.by_source.scan_prefix(&source_prefix),
                source_prefix.len(),
                &trees.feed_index,
                feed,
            ),
            Walk::new(
                trees.feed_index.scan_prefix(&feed_prefix),
                feed_prefix.len(),
                &trees.by_source,
                source,
            ),
        ];
        loop {
            for walk in &mut walks {
                if walk.found.len() >= n || !walk.step(self)? {
                    return Ok(std::mem::take(&mut walk.found));
                }
            }
        }
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
        let trees = self.trees()?;
        self.clear_feed_index(&trees, feed)?;
        let mut batch = sled::Batch::default();
        let (mut count, mut pending) = (0, 0);
        for entry in trees.items.iter() {
            let (_, value) = entry?;
            let Some(record) = trees.record_of(&value)? else {
                continue; // its record is gone
            };
            let item = item_record::decode(&record)?;
            if selects(&item) {
                batch.insert(prefixed_key(feed, item.published, item.id), &[]);
                count += 1;
                pending += 1;
            }
            if pending == FEED_INDEX_SLICE {
                trees.feed_index.apply_batch(std::mem::take(&mut batch))?;
                pending = 0;
            }
        }
        trees.feed_index.apply_batch(batch)?;
        trees.meta.insert(
            format!("{FINGERPRINT_PREFIX}{feed}"),
            fingerprint.as_bytes(),
        )?;
        trees.flush()?;
        Ok(count)
    }

    fn drop_feed_index(&self, feed: &str) -> Result<(), StoreError> {
        let trees = self.trees()?;
        self.clear_feed_index(&trees, feed)?;
        trees.meta.remove(format!("{FINGERPRINT_PREFIX}{feed}"))?;
        trees.flush()?;
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

/// Feed index keys written or removed per sled batch when a feed's index is rebuilt or
/// dropped. One batch for the whole index held every key and every page it touched at once:
/// 368 MiB to rebuild the index of a feed of 50,000 items (BENCHMARKS.md, "Store (issue
/// 18)"), and a feed of all sources is rebuilt whenever a source is added or removed.
pub(super) const FEED_INDEX_SLICE: usize = 2048;

impl SledEngine {
    /// Removes every entry of `feed`'s index, a slice at a time. Its fingerprint is first set
    /// to one that no rules have, so that after a crash part way the index is neither taken
    /// as complete nor forgotten: the next sync rebuilds or drops it again.
    fn clear_feed_index(&self, trees: &Trees, feed: &str) -> Result<(), StoreError> {
        trees
            .meta
            .insert(format!("{FINGERPRINT_PREFIX}{feed}"), STALE_FINGERPRINT)?;
        loop {
            let mut batch = sled::Batch::default();
            let mut taken = 0;
            for key in trees
                .feed_index
                .scan_prefix(name_prefix(feed))
                .keys()
                .take(FEED_INDEX_SLICE)
            {
                batch.remove(key?);
                taken += 1;
            }
            trees.feed_index.apply_batch(batch)?;
            if taken < FEED_INDEX_SLICE {
                return Ok(());
            }
        }
    }
}

/// The fingerprint of an index being cleared: rules' fingerprints are never empty.
pub(super) const STALE_FINGERPRINT: &[u8] = b"";

/// One of [`FeedIndex::newest_of_source`]'s walks: the keys of one index (a source's items or
/// a feed's entries), each looked up in the other.
struct Walk<'t> {
    keys: sled::Iter,
    prefix: usize,
    other: &'t sled::Tree,
    other_name: &'t str,
    found: Vec<FeedEntry>,
}

impl<'t> Walk<'t> {
    fn new(keys: sled::Iter, prefix: usize, other: &'t sled::Tree, other_name: &'t str) -> Self {
        Walk {
            keys,
            prefix,
            other,
            other_name,
            found: Vec::new(),
        }
    }

    /// Looks at the next key: `false` when there is none.
    fn step(&mut self, engine: &SledEngine) -> Result<bool, StoreError> {
        let Some(next) = self.keys.next() else {
            return Ok(false);
        };
        let entry = feed_entry(&next?.0, self.prefix + 8)?;
        if self
            .other
            .contains_key(prefixed_key(self.other_name, entry.published, entry.id))?
            && engine
                .item(entry.id)?
                .is_some_and(|i| entry.is_current_for(&i))
        {
            self.found.push(entry);
        }
        Ok(true)
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::dedup::record::ItemWrite;

    fn item(source: &str, n: u32, at: DateTime<Utc>) -> Item {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&n.to_be_bytes());
        id[4] = source.as_bytes()[0];
        Item {
            id: ItemId(id),
            source: source.into(),
            guid: format!("g{n}"),
            url: None,
            canonical_url: None,
            title: format!("{source} {n}"),
            summary_html: None,
            content_html: None,
            authors: vec![],
            categories: vec![],
            enclosures: vec![],
            published: at,
            updated: None,
            first_seen: at,
            modified: at,
            content_hash: 0,
            story: ItemId(id),
            sanitised: 0,
        }
    }

    /// Writes `items` of `source` as one poll, each in feed `f` when `in_feed` says so.
    fn write(store: &SledEngine, source: &str, items: &[Item], in_feed: impl Fn(&Item) -> bool) {
        let plan = IngestPlan {
            writes: items
                .iter()
                .map(|i| ItemWrite {
                    item: i.clone(),
                    previous: None,
                    link: None,
                })
                .collect(),
            ..IngestPlan::default()
        };
        let memberships: Vec<FeedMembership> = items
            .iter()
            .filter(|i| in_feed(i))
            .map(|i| FeedMembership {
                feed: "f".into(),
                item: i.id,
            })
            .collect();
        store
            .apply_poll(
                source,
                &plan,
                &["f".into()],
                &memberships,
                &SourceState::default(),
                store.ingest_guard(),
            )
            .expect("apply");
    }

    /// Whichever walk finishes first, a source's newest entries in a feed are the same: a big
    /// source with few items in the feed (the feed's walk ends first), one with all of them
    /// (the source's walk), fewer than asked for, and an entry left by an interrupted write
    /// (the item written again later) not counted.
    #[test]
    fn newest_of_source_finds_the_same_entries_from_either_side() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SledEngine::open(&dir.path().join("s"), DEFAULT_CACHE_BYTES).expect("store");
        let base = DateTime::from_timestamp(1_780_000_000, 0).expect("a time");
        let at = |n: u32| base - chrono::Duration::minutes(i64::from(n));
        // Big: 2,000 items, in the feed every 500th (n = 499, 999, 1499, 1999).
        let big: Vec<Item> = (0..2000).map(|n| item("big", n, at(n))).collect();
        let in_feed: HashSet<ItemId> = (0..2000)
            .filter(|n| n % 500 == 499)
            .map(|n| big[n].id)
            .collect();
        write(&store, "big", &big, |i| in_feed.contains(&i.id));
        // All: 30 items, all in the feed, interleaved with big's.
        let all: Vec<Item> = (0..30)
            .map(|n| item("all", n, at(n * 60) + chrono::Duration::seconds(1)))
            .collect();
        write(&store, "all", &all, |_| true);
        // Item 7 of "all" written again a second later: its first entry is stale.
        let again = item("all", 7, at(7 * 60) + chrono::Duration::seconds(2));
        write(&store, "all", std::slice::from_ref(&again), |_| true);

        let entry = |i: &Item| FeedEntry {
            published: i.published,
            id: i.id,
        };
        let big_in_feed: Vec<FeedEntry> = [499, 999, 1499, 1999]
            .iter()
            .map(|&n| entry(&big[n]))
            .collect();
        assert_eq!(
            store.newest_of_source("f", "big", 3).unwrap(),
            big_in_feed[..3]
        );
        assert_eq!(store.newest_of_source("f", "big", 10).unwrap(), big_in_feed);
        let mut all_in_feed: Vec<FeedEntry> = all.iter().map(entry).collect();
        all_in_feed[7] = entry(&again);
        assert_eq!(
            store.newest_of_source("f", "all", 10).unwrap(),
            all_in_feed[..10]
        );
        assert_eq!(
            store.newest_of_source("f", "all", 100).unwrap(),
            all_in_feed
        );
        assert_eq!(store.newest_of_source("f", "none", 5).unwrap(), vec![]);
        assert_eq!(store.newest_of_source("f", "big", 0).unwrap(), vec![]);
    }
}
