//! Reading items, URL claims and story groups from the sled trees; item records through
//! the record log (`record_log`), where the `items` tree says they lie.

use super::*;

impl Items for SledEngine {
    fn item(&self, id: ItemId) -> Result<Option<Item>, StoreError> {
        self.trees()?.item(id)
    }

    fn stored_version(&self, id: ItemId, content_hash: u64) -> Result<Stored, StoreError> {
        let trees = self.trees()?;
        let Some(bytes) = trees.items.get(id.0)? else {
            return Ok(Stored::Missing);
        };
        if let Some(at) = item_record::in_log(&bytes)? {
            if !trees.records.holds(at) {
                // Its record did not reach the disk before a crash of the machine (or its
                // file was lost): stored again.
                return Ok(Stored::Missing);
            }
        }
        if item_record::content_hash(&bytes)? == content_hash {
            return Ok(Stored::Unchanged);
        }
        // From the value in hand; read again only if the record log's garbage collection
        // moved the record since.
        let item = match trees.record_of(&bytes)? {
            Some(record) => Some(item_record::decode(&record)?),
            None => trees.item(id)?,
        };
        match item {
            Some(item) => Ok(Stored::Changed(Box::new(item))),
            // Its record is gone (a crash, a damaged record log): stored again.
            None => Ok(Stored::Missing),
        }
    }

    fn item_count(&self) -> usize {
        self.trees()
            .and_then(|t| t.stored_item_count())
            .unwrap_or(0)
    }

    fn url_claim(&self, canonical: &str) -> Result<Option<UrlClaim>, StoreError> {
        match self.trees()?.urls.get(url_key(canonical))? {
            Some(bytes) => Ok(Some(item_record::decode_claim(&bytes)?)),
            None => Ok(None),
        }
    }

    fn source_item_times(
        &self,
        source: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<DateTime<Utc>>, StoreError> {
        let prefix = name_prefix(source);
        let mut times = Vec::new();
        for entry in self.trees()?.by_source.scan_prefix(&prefix) {
            let (key, _) = entry?;
            let Some(t) = time_at(&key, prefix.len()) else {
                return Err(StoreError::Corrupt {
                    what: "source index key",
                    message: format!("{} bytes", key.len()),
                });
            };
            if t < since {
                break;
            }
            times.push(t);
        }
        Ok(times)
    }

    fn source_items(&self, source: &str, limit: usize) -> Result<Vec<Item>, StoreError> {
        let prefix = name_prefix(source);
        let skip = prefix.len() + 8;
        let mut items = Vec::new();
        for key in self.trees()?.by_source.scan_prefix(&prefix).keys() {
            if items.len() >= limit {
                break;
            }
            let key = key?;
            let id = key
                .get(skip..)
                .and_then(ItemId::from_slice)
                .ok_or(StoreError::Corrupt {
                    what: "source index key",
                    message: format!("{} bytes", key.len()),
                })?;
            if let Some(item) = self.item(id)? {
                items.push(item);
            }
        }
        Ok(items)
    }

    fn all_items(&self) -> ItemIds<'_> {
        Box::new(self.iter_of(|t| t.by_time.iter()).map(|r| {
            let (key, _) = r?;
            ItemId::from_slice(&key[8..]).ok_or(StoreError::Corrupt {
                what: "time index key",
                message: format!("{} bytes", key.len()),
            })
        }))
    }

    fn story_links(&self, story: ItemId) -> Result<Vec<(ItemId, Option<StoryLink>)>, StoreError> {
        self.trees()?
            .stories
            .scan_prefix(story.0)
            .map(|r| {
                let (key, value) = r?;
                let id = ItemId::from_slice(&key[16..]).ok_or(StoreError::Corrupt {
                    what: "story key",
                    message: format!("{} bytes", key.len()),
                })?;
                let link = if value.is_empty() {
                    None
                } else {
                    Some(decode(&value, "story link")?)
                };
                Ok((id, link))
            })
            .collect()
    }

    fn story_members(&self, story: ItemId) -> Result<Vec<ItemId>, StoreError> {
        self.trees()?
            .stories
            .scan_prefix(story.0)
            .map(|r| {
                let (key, _) = r?;
                ItemId::from_slice(&key[16..]).ok_or(StoreError::Corrupt {
                    what: "story key",
                    message: format!("{} bytes", key.len()),
                })
            })
            .collect()
    }
}

impl SledEngine {
    /// Items stored for `source` (keys of the `by_source` index; no item is read).
    pub(super) fn count_of_source(&self, source: &str) -> Result<u64, StoreError> {
        let mut n = 0;
        for key in self
            .trees()?
            .by_source
            .scan_prefix(name_prefix(source))
            .keys()
        {
            key?;
            n += 1;
        }
        Ok(n)
    }
}

impl Trees {
    /// The item `id`, read from where the `items` tree says its record lies.
    pub(super) fn item(&self, id: ItemId) -> Result<Option<Item>, StoreError> {
        match self.record(id)? {
            Some(record) => Ok(Some(item_record::decode(&record)?)),
            None => Ok(None),
        }
    }

    /// The record of item `id`: from the record log, or the `items` value itself in a store
    /// not yet upgraded. `None` for an item not stored, or whose record is gone.
    pub(super) fn record(&self, id: ItemId) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(value) = self.items.get(id.0)? else {
            return Ok(None);
        };
        match self.record_of(&value)? {
            Some(record) => Ok(Some(record)),
            // The record log's garbage collection may have moved it since the value was
            // read: the value read again says where to.
            None => match self.items.get(id.0)? {
                Some(again) if again != value => self.record_of(&again),
                _ => Ok(None),
            },
        }
    }

    /// The record an `items` value holds or points to.
    pub(super) fn record_of(&self, value: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match item_record::in_log(value)? {
            Some(at) => self.records.read(at).map_err(|e| self.records_error(e)),
            None => Ok(Some(value.to_vec())),
        }
    }

    /// Appends `records` (item id, content hash, record) to the record log and adds their
    /// `items` values to `batch`. Returns the bytes appended.
    pub(super) fn put_records(
        &self,
        batch: &mut sled::Batch,
        records: &[(ItemId, u64, Vec<u8>)],
    ) -> Result<u64, StoreError> {
        let bytes: Vec<&[u8]> = records.iter().map(|(_, _, r)| r.as_slice()).collect();
        let places = self
            .records
            .append(&bytes)
            .map_err(|e| self.records_error(e))?;
        let mut appended = 0;
        for ((id, hash, _), at) in records.iter().zip(places) {
            batch.insert(&id.0, &item_record::encode_in_log(*hash, at));
            appended += at.frame_bytes();
        }
        Ok(appended)
    }

    /// An I/O error of the record log, with the log's directory.
    pub(super) fn records_error(&self, source: std::io::Error) -> StoreError {
        StoreError::Records {
            path: self.records.dir().to_owned(),
            source,
        }
    }
}
