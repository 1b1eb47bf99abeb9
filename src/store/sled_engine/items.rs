//! Reading items, URL claims and story groups from the sled trees.

use super::*;

impl Items for SledEngine {
    fn item(&self, id: ItemId) -> Result<Option<Item>, StoreError> {
        match self.trees()?.items.get(id.0)? {
            Some(bytes) => Ok(Some(item_record::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn stored_version(&self, id: ItemId, content_hash: u64) -> Result<Stored, StoreError> {
        let Some(bytes) = self.trees()?.items.get(id.0)? else {
            return Ok(Stored::Missing);
        };
        if item_record::content_hash(&bytes)? == content_hash {
            return Ok(Stored::Unchanged);
        }
        Ok(Stored::Changed(Box::new(item_record::decode(&bytes)?)))
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
