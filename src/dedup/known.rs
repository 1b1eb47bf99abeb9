//! What the store holds for a poll's entries ([`Known`]), read in three questions before
//! the planner plans any of them, rather than three for each entry. Reads only.

use super::record::UrlClaim;
use super::*;

/// What the store holds for a poll's entries, read before planning any of them: a question
/// per entry, each a round trip to a database server, would cost more than the planning.
/// Planning writes nothing, so what was read stays true until the plan is applied.
pub(super) struct Known {
    /// The entries retention pruned.
    pub pruned: HashSet<ItemId>,
    /// How each entry not pruned is stored.
    pub stored: HashMap<ItemId, Stored>,
    /// The claims on the canonical URLs of entries not stored yet.
    pub claims: HashMap<String, UrlClaim>,
}

impl Known {
    /// Reads what the store holds for the entries `ids` of `source`, whose content hashes
    /// are `hashes` and canonical URLs `canonical`.
    pub fn read(
        store: &Store,
        source: &str,
        ids: &[ItemId],
        hashes: &[u64],
        canonical: &[Option<String>],
    ) -> Result<Known, StoreError> {
        let pruned = store.pruned_among(source, ids)?;
        let asked: Vec<(ItemId, u64)> = ids
            .iter()
            .copied()
            .zip(hashes.iter().copied())
            .filter(|(id, _)| !pruned.contains(id))
            .collect();
        let stored = store.stored_versions(&asked)?;
        let new_urls: Vec<&str> = ids
            .iter()
            .zip(canonical)
            .filter(|(id, _)| matches!(stored.get(id), Some(Stored::Missing)))
            .filter_map(|(_, url)| url.as_deref())
            .collect();
        let claims = store.url_claims(&new_urls)?;
        Ok(Known {
            pruned,
            stored,
            claims,
        })
    }
}
