//! Exporting the store for a copy into another engine ([`Copying::export`]): each tree read
//! straight through, one record at a time, items first. The derived trees (`by_time`,
//! `by_source`) are not exported: an importer derives its own order from the items. The
//! embedded store is only ever copied from, never into.

use super::super::{Copying, Record};
use super::*;

type Sink<'a> = &'a mut dyn FnMut(Record) -> Result<(), StoreError>;

impl Copying for SledEngine {
    fn export(&self, into: Sink<'_>) -> Result<(), StoreError> {
        let trees = self.trees()?;
        export_items(&trees, into)?;
        export_stories(&trees, into)?;
        export_claims(&trees, into)?;
        export_fingerprints(&trees, into)?;
        self.export_feeds(&trees, into)?;
        export_states(&trees, into)?;
        export_tombstones(&trees, into)?;
        self.export_meta(&trees, into)
    }

    fn import(&self, _records: Vec<Record>) -> Result<(), StoreError> {
        Err(StoreError::CannotCopy {
            reason: format!(
                "the embedded store at {} is copied from, never into",
                self.path.display()
            ),
        })
    }
}

fn export_items(trees: &Trees, into: Sink<'_>) -> Result<(), StoreError> {
    for entry in trees.items.iter() {
        let (_, value) = entry?;
        // An item whose record is gone is not copied (its index entries are, and are skipped).
        if let Some(record) = trees.record_of(&value)? {
            into(Record::Item(Box::new(item_record::decode(&record)?)))?;
        }
    }
    Ok(())
}

fn export_stories(trees: &Trees, into: Sink<'_>) -> Result<(), StoreError> {
    for entry in trees.stories.iter() {
        let (key, value) = entry?;
        let corrupt = || corrupt_key("story key", &key);
        let story = key
            .get(..16)
            .and_then(ItemId::from_slice)
            .ok_or_else(corrupt)?;
        let member = key
            .get(16..)
            .and_then(ItemId::from_slice)
            .ok_or_else(corrupt)?;
        let link = if value.is_empty() {
            None
        } else {
            Some(decode(&value, "story link")?)
        };
        into(Record::StoryMember {
            story,
            member,
            link,
        })?;
    }
    Ok(())
}

fn export_claims(trees: &Trees, into: Sink<'_>) -> Result<(), StoreError> {
    for entry in trees.urls.iter() {
        let (key, value) = entry?;
        let url_hash =
            <[u8; 16]>::try_from(key.as_ref()).map_err(|_| corrupt_key("url claim key", &key))?;
        into(Record::UrlClaim {
            url_hash,
            claim: item_record::decode_claim(&value)?,
        })?;
    }
    Ok(())
}

fn export_fingerprints(trees: &Trees, into: Sink<'_>) -> Result<(), StoreError> {
    for entry in trees.fingerprints.iter() {
        let (key, value) = entry?;
        let id = ItemId::from_slice(&key).ok_or_else(|| corrupt_key("fingerprint key", &key))?;
        let record = FingerprintRecord::from_bytes(&value).ok_or(StoreError::Corrupt {
            what: "fingerprint",
            message: format!("{} bytes", value.len()),
        })?;
        into(Record::Fingerprint {
            id,
            record: Box::new(record),
        })?;
    }
    Ok(())
}

fn export_states(trees: &Trees, into: Sink<'_>) -> Result<(), StoreError> {
    for entry in trees.sources.iter() {
        let (key, value) = entry?;
        into(Record::SourceState {
            source: name_of(&key, "source state key")?,
            state: Box::new(decode(&value, "source state")?),
        })?;
    }
    Ok(())
}

fn export_tombstones(trees: &Trees, into: Sink<'_>) -> Result<(), StoreError> {
    for entry in trees.tombstones.iter() {
        let (key, value) = entry?;
        let corrupt = || corrupt_key("tombstone key", &key);
        let end = key.iter().position(|b| *b == 0).ok_or_else(corrupt)?;
        let source = name_of(&key[..end], "tombstone key")?;
        let id = ItemId::from_slice(&key[end + 1..]).ok_or_else(corrupt)?;
        let pruned = <[u8; 8]>::try_from(value.as_ref())
            .ok()
            .and_then(|b| DateTime::from_timestamp_micros(i64::from_be_bytes(b)))
            .ok_or(StoreError::Corrupt {
                what: "tombstone",
                message: format!("{} bytes", value.len()),
            })?;
        into(Record::Tombstone { source, id, pruned })?;
    }
    Ok(())
}

impl SledEngine {
    /// Each output feed's rules fingerprint, then every feed's entries.
    fn export_feeds(&self, trees: &Trees, into: Sink<'_>) -> Result<(), StoreError> {
        for feed in self.indexed_feeds()? {
            if let Some(fingerprint) = self.feed_fingerprint(&feed)? {
                into(Record::FeedRules { feed, fingerprint })?;
            }
        }
        for entry in trees.feed_index.iter() {
            let (key, _) = entry?;
            let corrupt = || corrupt_key("feed index key", &key);
            let end = key.iter().position(|b| *b == 0).ok_or_else(corrupt)?;
            let feed = name_of(&key[..end], "feed index key")?;
            let published = time_at(&key, end + 1).ok_or_else(corrupt)?;
            let id = key
                .get(end + 9..)
                .and_then(ItemId::from_slice)
                .ok_or_else(corrupt)?;
            into(Record::FeedEntry {
                feed,
                entry: FeedEntry { published, id },
            })?;
        }
        Ok(())
    }

    /// The term statistics (as held in memory, the freshest), the terms version and, when
    /// the text index was ever aged, where it starts.
    fn export_meta(&self, trees: &Trees, into: Sink<'_>) -> Result<(), StoreError> {
        let stats = self.ingest_guard().clone();
        into(Record::TermStats(Box::new(stats)))?;
        into(Record::TermsVersion(self.terms_version()?))?;
        let from = trees
            .text_index_from
            .load(std::sync::atomic::Ordering::Relaxed);
        if from != i64::MIN {
            let at = DateTime::from_timestamp_micros(from).ok_or(StoreError::Corrupt {
                what: "text index cursor",
                message: format!("{from} microseconds"),
            })?;
            into(Record::TextIndexFrom(at))?;
        }
        Ok(())
    }
}

/// A name (a source's, a feed's) from its key bytes.
fn name_of(bytes: &[u8], what: &'static str) -> Result<String, StoreError> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| corrupt_key(what, bytes))
}

fn corrupt_key(what: &'static str, key: &[u8]) -> StoreError {
    StoreError::Corrupt {
        what,
        message: format!("{} bytes", key.len()),
    }
}
