//! Identity: which entry of a poll is which stored item.
//!
//! An entry is known by its feed's own id (RSS guid, Atom id, JSON Feed id); without one, by
//! its link, which survives an edit of the title; without a link, by its title. Entries that
//! have no id and share one link (a feed that points every item at its home page, or at one
//! article's several parts) are told apart by link and title together. An item's id is a hash
//! of its source's name and that GUID. Pure functions: no store, no I/O.

use sha2::{Digest, Sha256};

use crate::model::{Entry, ItemId};

/// The GUID an entry is known by, taken alone: the feed's id, else its link, else its title.
/// [`guids`] is the same for a whole poll, where a link can be shared.
pub fn guid_of(entry: &Entry) -> String {
    entry
        .guid
        .clone()
        .or_else(|| entry.url.clone())
        .unwrap_or_else(|| format!("title:{}", entry.title))
}

/// The GUID of each entry of one poll, in order: as [`guid_of`], except that entries without
/// an id whose link another such entry with a different title shares are known by link and
/// title together, so that they stay distinct items.
pub fn guids(entries: &[Entry]) -> Vec<String> {
    // The first title seen under each link; a link seen with another title is shared.
    let mut title_of_link: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    let mut shared: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for entry in entries.iter().filter(|e| e.guid.is_none()) {
        let Some(url) = entry.url.as_deref() else {
            continue;
        };
        let first = *title_of_link.entry(url).or_insert(entry.title.as_str());
        if first != entry.title {
            shared.insert(url);
        }
    }
    entries
        .iter()
        .map(|entry| match (&entry.guid, entry.url.as_deref()) {
            (None, Some(url)) if shared.contains(url) => format!("{url}\ntitle:{}", entry.title),
            _ => guid_of(entry),
        })
        .collect()
}

/// The stable id of an item: a hash of its source's name and GUID.
pub fn item_id(source: &str, guid: &str) -> ItemId {
    id_of(&[source.as_bytes(), &[0], guid.as_bytes()])
}

/// An id made of `parts`: the first 16 bytes of their SHA-256.
fn id_of(parts: &[&[u8]]) -> ItemId {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    ItemId(id)
}

/// The story an item that leaves `story` goes to: the one named by its own id, or, when
/// `story` is named by it (it led the story, whose other members stay), one named by a hash of
/// its id, which no item's id is.
pub fn story_of_its_own(member: ItemId, story: ItemId) -> ItemId {
    if member != story {
        return member;
    }
    id_of(&[b"story left by\0", &member.0])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(guid: Option<&str>, url: Option<&str>, title: &str) -> Entry {
        Entry {
            guid: guid.map(str::to_owned),
            url: url.map(str::to_owned),
            title: title.to_owned(),
            ..Entry::default()
        }
    }

    #[test]
    fn ids_depend_on_source_and_guid() {
        assert_eq!(item_id("a", "g"), item_id("a", "g"));
        assert_ne!(item_id("a", "g"), item_id("b", "g"));
        assert_ne!(item_id("ab", "g"), item_id("a", "bg"));
    }

    #[test]
    fn entries_sharing_a_link_without_ids_stay_distinct() {
        let home = Some("https://lab.example/");
        let entries = [
            entry(None, home, "Model A released"),
            entry(None, home, "Model B released"),
            entry(None, home, "Model B released"), // the feed repeats an entry: one item
            entry(None, Some("https://lab.example/c"), "C"),
            entry(Some("g"), home, "Has its own id"),
        ];
        let guids = guids(&entries);
        assert_eq!(guids[0], "https://lab.example/\ntitle:Model A released");
        assert_eq!(guids[1], "https://lab.example/\ntitle:Model B released");
        assert_eq!(guids[1], guids[2]);
        // A link used once is the GUID, as before: a title edit keeps the item.
        assert_eq!(guids[3], "https://lab.example/c");
        assert_eq!(guids[4], "g");
    }
}
