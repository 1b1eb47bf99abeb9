//! Reading items, URL claims and story groups from the database.

use postgres::types::Json;
use postgres::Row;

use super::write::url_hash;
use super::*;
use crate::dedup::record::{StoryLink, UrlClaim};
use crate::model::Item;
use crate::store::Stored;

/// The item of a row of `body` and `story` (the story column is the truth: a merge moves
/// items between stories without rewriting their JSON).
pub(super) fn item_of(row: &Row) -> Result<Item, StoreError> {
    let Json(mut item): Json<Item> = row.try_get(0).map_err(|e| StoreError::Corrupt {
        what: "item",
        message: e.to_string(),
    })?;
    item.story = id_of(row.get::<_, &[u8]>(1))?;
    Ok(item)
}

impl Items for PgEngine {
    fn item(&self, id: ItemId) -> Result<Option<Item>, StoreError> {
        let row = self.run(move |client| {
            Ok(client.query_opt(
                "SELECT body, story FROM items WHERE id = $1",
                &[&id_bytes(id)],
            )?)
        })?;
        row.as_ref().map(item_of).transpose()
    }

    fn stored_version(&self, id: ItemId, content_hash: u64) -> Result<Stored, StoreError> {
        let hash = content_hash as i64;
        let row = self.run(move |client| {
            Ok(client.query_opt(
                "SELECT CASE WHEN content_hash = $2 THEN NULL ELSE body END, story
                 FROM items WHERE id = $1",
                &[&id_bytes(id), &hash],
            )?)
        })?;
        let Some(row) = row else {
            return Ok(Stored::Missing);
        };
        if row.get::<_, Option<Json<serde_json::Value>>>(0).is_none() {
            return Ok(Stored::Unchanged);
        }
        Ok(Stored::Changed(Box::new(item_of(&row)?)))
    }

    fn stored_versions(
        &self,
        entries: &[(ItemId, u64)],
    ) -> Result<HashMap<ItemId, Stored>, StoreError> {
        let ids: Vec<Vec<u8>> = entries.iter().map(|(id, _)| id_bytes(*id)).collect();
        let hashes: Vec<i64> = entries.iter().map(|(_, hash)| *hash as i64).collect();
        let rows = self.run(move |client| {
            Ok(client.query(
                "SELECT CASE WHEN i.content_hash = asked.hash THEN NULL ELSE i.body END, i.story,
                        i.id
                 FROM unnest($1::bytea[], $2::int8[]) AS asked(id, hash)
                 JOIN items i ON i.id = asked.id",
                &[&ids, &hashes],
            )?)
        })?;
        let mut stored: HashMap<ItemId, Stored> = entries
            .iter()
            .map(|(id, _)| (*id, Stored::Missing))
            .collect();
        for row in &rows {
            let id = id_of(row.get::<_, &[u8]>(2))?;
            let version = match row.get::<_, Option<Json<serde_json::Value>>>(0) {
                None => Stored::Unchanged,
                Some(_) => Stored::Changed(Box::new(item_of(row)?)),
            };
            stored.insert(id, version);
        }
        Ok(stored)
    }

    fn item_count(&self) -> usize {
        // The sources' counts, which every poll and prune keeps exact, rather than a count of
        // the items table: `/metrics` asks at every scrape, and counting rows takes time in
        // proportion to the store.
        self.run(|client| {
            let n: i64 = client
                .query_one(
                    "SELECT COALESCE(sum(item_count), 0)::int8 FROM source_states",
                    &[],
                )?
                .get(0);
            Ok(n.max(0) as usize)
        })
        .unwrap_or(0)
    }

    fn url_claim(&self, canonical: &str) -> Result<Option<UrlClaim>, StoreError> {
        let hash = url_hash(canonical);
        let row = self.run(move |client| {
            Ok(client.query_opt(
                "SELECT item, source, ambiguous FROM url_claims WHERE url_hash = $1",
                &[&hash],
            )?)
        })?;
        row.map(|row| {
            Ok(UrlClaim {
                item: id_of(row.get(0))?,
                source: row.get(1),
                ambiguous: row.get(2),
            })
        })
        .transpose()
    }

    fn url_claims(&self, urls: &[&str]) -> Result<HashMap<String, UrlClaim>, StoreError> {
        let by_hash: HashMap<Vec<u8>, &str> =
            urls.iter().map(|url| (url_hash(url), *url)).collect();
        let hashes: Vec<Vec<u8>> = by_hash.keys().cloned().collect();
        let rows = self.run(move |client| {
            Ok(client.query(
                "SELECT url_hash, item, source, ambiguous FROM url_claims
                 WHERE url_hash = ANY($1)",
                &[&hashes],
            )?)
        })?;
        let mut claims = HashMap::new();
        for row in &rows {
            let Some(url) = by_hash.get(row.get::<_, &[u8]>(0)) else {
                continue;
            };
            let claim = UrlClaim {
                item: id_of(row.get(1))?,
                source: row.get(2),
                ambiguous: row.get(3),
            };
            claims.insert((*url).to_owned(), claim);
        }
        Ok(claims)
    }

    fn source_item_times(
        &self,
        source: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<DateTime<Utc>>, StoreError> {
        let (source, since) = (source.to_owned(), micros(since));
        let rows = self.run(move |client| {
            Ok(client.query(
                "SELECT published_us FROM items WHERE source = $1 AND published_us >= $2
                 ORDER BY published_us DESC, id",
                &[&source, &since],
            )?)
        })?;
        rows.iter().map(|row| time_of(row.get(0))).collect()
    }

    fn source_items(&self, source: &str, limit: usize) -> Result<Vec<Item>, StoreError> {
        let (source, limit) = (source.to_owned(), limit.min(i64::MAX as usize) as i64);
        let rows = self.run(move |client| {
            Ok(client.query(
                "SELECT body, story FROM items WHERE source = $1
                 ORDER BY published_us DESC, id LIMIT $2",
                &[&source, &limit],
            )?)
        })?;
        rows.iter().map(item_of).collect()
    }

    fn all_items(&self) -> ItemIds<'_> {
        Box::new(Pages::new(None, move |after| {
            let rows = self.run(move |client| {
                Ok(match after {
                    None => client.query(
                        "SELECT published_us, id FROM items
                         ORDER BY published_us DESC, id LIMIT $1",
                        &[&PAGE],
                    )?,
                    Some((t, id)) => client.query(
                        &format!(
                            "SELECT published_us, id FROM items WHERE {}
                             ORDER BY published_us DESC, id LIMIT $3",
                            after_clause(1)
                        ),
                        &[&t, &id_bytes(id), &PAGE],
                    )?,
                })
            })?;
            rows.iter()
                .map(|row| {
                    let id = id_of(row.get(1))?;
                    Ok((row.get(0), id, id))
                })
                .collect()
        }))
    }

    fn story_links(&self, story: ItemId) -> Result<Vec<(ItemId, Option<StoryLink>)>, StoreError> {
        let rows = self.run(move |client| {
            Ok(client.query(
                "SELECT member, link FROM story_members WHERE story = $1 ORDER BY member",
                &[&id_bytes(story)],
            )?)
        })?;
        rows.iter()
            .map(|row| {
                let link: Option<Json<StoryLink>> =
                    row.try_get(1).map_err(|e| StoreError::Corrupt {
                        what: "story link",
                        message: e.to_string(),
                    })?;
                Ok((id_of(row.get(0))?, link.map(|Json(link)| link)))
            })
            .collect()
    }

    fn story_members(&self, story: ItemId) -> Result<Vec<ItemId>, StoreError> {
        let rows = self.run(move |client| {
            Ok(client.query(
                "SELECT member FROM story_members WHERE story = $1 ORDER BY member",
                &[&id_bytes(story)],
            )?)
        })?;
        rows.iter().map(|row| id_of(row.get(0))).collect()
    }
}
