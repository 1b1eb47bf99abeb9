//! Choosing a feed's entries: the newest items its filter keeps, one per story (the story's
//! representative), within the feed's limits (`max_per_source`, `max_age`, `limit`), a page at
//! a time from a cursor ([`collect_page`]). Reads the store's feed index; renders nothing.

use super::*;
use crate::store::FeedEntry;

/// The most entries a reader's query (`?limit=`, `?before=`, `?q=`) returns at once.
pub const MAX_QUERY_LIMIT: usize = 1000;

/// Where a page of a feed starts: after the index entry of the item published at `published`
/// with id `id`. Written in URLs as `<microseconds since 1970>-<item id in hex>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub published: DateTime<Utc>,
    pub id: ItemId,
}

impl Cursor {
    pub(super) fn of(item: &Item) -> Cursor {
        Cursor {
            published: item.published,
            id: item.id,
        }
    }

    /// Reads a cursor from its URL form; `None` for anything else.
    pub fn parse(text: &str) -> Option<Cursor> {
        let (micros, hex) = text.split_once('-')?;
        let published = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut id = [0u8; 16];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Cursor {
            published,
            id: ItemId(id),
        })
    }

    pub fn to_param(self) -> String {
        format!("{}-{}", self.published.timestamp_micros(), self.id.to_hex())
    }
}

/// Which entries a document shows: the whole feed, or what a reader's query asks for.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// `?q=`: the search as written, and as matched.
    pub query: Option<(String, Query)>,
    /// `?before=`: the page after this cursor.
    pub before: Option<Cursor>,
    /// `?limit=`: at most this many entries (capped at [`MAX_QUERY_LIMIT`]).
    pub limit: Option<usize>,
}

impl View {
    /// Whether this is the feed as configured (served from the cache).
    pub fn is_whole_feed(&self) -> bool {
        self.query.is_none() && self.before.is_none() && self.limit.is_none()
    }

    pub(super) fn page_size(&self, feed: &FeedConfig) -> usize {
        match (self.limit, self.is_whole_feed()) {
            (_, true) => feed.limit,
            (Some(n), false) => n.min(MAX_QUERY_LIMIT),
            (None, false) => feed.limit.min(MAX_QUERY_LIMIT),
        }
    }

    /// The query string of this view starting at `before` (`""` when it has no parameter).
    pub(super) fn query_string(&self, before: Option<Cursor>) -> String {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        if let Some((q, _)) = &self.query {
            form.append_pair("q", q);
        }
        if let Some(n) = self.limit {
            form.append_pair("limit", &n.min(MAX_QUERY_LIMIT).to_string());
        }
        if let Some(c) = before {
            form.append_pair("before", &c.to_param());
        }
        let query = form.finish();
        if query.is_empty() {
            query
        } else {
            format!("?{query}")
        }
    }
}

/// One page of a feed's entries, and where the next (older) page starts, if there is one.
#[derive(Debug, Clone)]
pub struct Page {
    pub entries: Vec<OutputEntry>,
    /// The feed's sources, as output shows them.
    pub sources: Vec<SourceInfo>,
    pub view: View,
    pub next: Option<Cursor>,
    /// When feedmux last stored or saw a change of an item the page shows (its stories'
    /// other reports included); `None` for an empty page.
    pub changed: Option<DateTime<Utc>>,
}

/// The newest entries of `feed` as `view` selects them: one per story group, newest first.
/// A story is shown at the place of its newest member in the feed, so walking the pages
/// shows each story once; an index entry left by an interrupted write (at another time than
/// its item's) is skipped, so no item has two places. Items past the feed's `max_age`, and
/// those of a source beyond its newest `max_per_source`, are not in the feed.
pub fn collect_page(
    store: &Store,
    config: &Config,
    feed: &FeedConfig,
    view: &View,
) -> Result<Page, StoreError> {
    let infos = source_infos(store, config);
    let info_of = |source: &str| {
        infos.get(source).cloned().unwrap_or_else(|| SourceInfo {
            title: source.to_owned(),
            ..SourceInfo::default()
        })
    };
    let query = view.query.as_ref().map(|(_, q)| q);
    let matches = |item: &Item| query.is_none_or(|q| q.matches(item));
    let limits = FeedLimits::new(store, feed, Utc::now());
    let size = view.page_size(feed);
    let mut seen_stories: HashSet<ItemId> = HashSet::new();
    let mut entries = Vec::new();
    let mut next = None;
    let mut last_taken: Option<Cursor> = None;
    let mut changed: Option<DateTime<Utc>> = None;
    let mut index = match view.before {
        Some(c) => store.feed_items_after(&feed.name, c.published, c.id),
        None => store.feed_items(&feed.name),
    };
    // Under `max_per_source`, once every source is worked out, the entries left to look at
    // are the kept ones after the last entry met: the rest of the index is not walked.
    let mut kept: Option<std::vec::IntoIter<FeedEntry>> = None;
    let mut last_met: Option<FeedEntry> = None;
    loop {
        if kept.is_none() {
            kept = last_met
                .and_then(|last| limits.kept_after(last))
                .map(Vec::into_iter);
        }
        let entry = match kept.as_mut() {
            Some(rest) => match rest.next() {
                Some(entry) => entry,
                None => break,
            },
            None => match index.next() {
                Some(entry) => entry?,
                None => break,
            },
        };
        last_met = Some(entry);
        if limits.too_old(entry.published) {
            break; // newest first: every entry after this one is older still
        }
        if entries.len() >= size {
            // There is more: the next page starts after the last entry taken.
            next = last_taken;
            break;
        }
        if limits.passes_over(entry.id) {
            continue;
        }
        // An entry left by an interrupted write (its item gone, or at another time) is
        // skipped, and deleted by the store.
        let Some(item) = store.current_item(&feed.name, entry)? else {
            continue;
        };
        if !limits.within_cap(&item)? || !matches(&item) {
            continue;
        }
        if feed.group_stories && !seen_stories.insert(item.story) {
            continue;
        }
        let members = if feed.group_stories {
            story_members(store, &item)?
        } else {
            vec![item.clone()]
        };
        if view.before.is_some() && members.len() > 1 {
            // Shown on an earlier page when a member comes before this item in the feed.
            let mut earlier = false;
            for m in &members {
                if place(m) < place(&item) && matches(m) && limits.shows(m)? {
                    earlier = true;
                    break;
                }
            }
            if earlier {
                continue;
            }
        }
        last_taken = Some(Cursor::of(&item));
        changed = members.iter().map(|m| m.modified).chain(changed).max();
        let shown = representative(config, &limits, item, &members)?;
        let mut reported = HashSet::from([shown.source.clone()]);
        let also = members
            .iter()
            .filter(|m| reported.insert(m.source.clone()))
            .map(|m| (info_of(&m.source), m.url.clone()))
            .collect();
        entries.push(OutputEntry {
            source: info_of(&shown.source),
            item: shown,
            also,
        });
    }
    entries.sort_by(|a, b| {
        b.item
            .published
            .cmp(&a.item.published)
            .then(a.item.id.cmp(&b.item.id))
    });
    let sources = feed.sources.iter().map(|s| info_of(s)).collect();
    Ok(Page {
        entries,
        sources,
        view: view.clone(),
        next,
        changed,
    })
}

/// Where an item stands in a feed's index, smaller first: newer first, then by id (the
/// index's order, to the microsecond it keeps).
pub(super) type Place = (std::cmp::Reverse<i64>, ItemId);

pub(super) fn place(item: &Item) -> Place {
    (
        std::cmp::Reverse(item.published.timestamp_micros()),
        item.id,
    )
}

/// The stored members of `item`'s story, earliest seen first (`item` alone when it has none).
pub(super) fn story_members(store: &Store, item: &Item) -> Result<Vec<Item>, StoreError> {
    let ids = store.story_members(item.story)?;
    if ids.len() <= 1 {
        return Ok(vec![item.clone()]);
    }
    let mut members = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(m) = store.item(id)? {
            members.push(m);
        }
    }
    members.sort_by_key(|m| m.first_seen);
    Ok(members)
}

/// The report a story is shown as: among its members the feed shows, the one of the source
/// with the highest `priority`, then the earliest published (then the first seen).
pub(super) fn representative(
    config: &Config,
    limits: &FeedLimits<'_>,
    item: Item,
    members: &[Item],
) -> Result<Item, StoreError> {
    let rank = |m: &Item| {
        let priority = config.source(&m.source).map_or(0, |s| s.priority);
        (std::cmp::Reverse(priority), m.published, m.first_seen, m.id)
    };
    let mut shown = item;
    for m in members {
        if rank(m) < rank(&shown) && limits.shows(m)? {
            shown = m.clone();
        }
    }
    Ok(shown)
}

/// What keeps an indexed item out of a feed when it is rendered: `max_age` and
/// `max_per_source` (the keyword rules decided at ingest).
pub(super) struct FeedLimits<'a> {
    store: &'a Store,
    feed: &'a FeedConfig,
    /// Items published before this are left out.
    oldest: Option<DateTime<Utc>>,
    /// Under `max_per_source`, the items kept of each source worked out so far.
    capped: std::cell::RefCell<Capped>,
}

/// The sources whose newest `max_per_source` items in a feed are worked out, and those items.
#[derive(Default)]
struct Capped {
    sources: HashSet<String>,
    kept: HashSet<ItemId>,
    /// The index entries of `kept`.
    kept_entries: Vec<FeedEntry>,
    /// The feed's sources not worked out yet.
    remaining: usize,
}

impl<'a> FeedLimits<'a> {
    pub(super) fn new(
        store: &'a Store,
        feed: &'a FeedConfig,
        now: DateTime<Utc>,
    ) -> FeedLimits<'a> {
        let oldest = feed.oldest_allowed(now);
        let remaining = feed.sources.iter().collect::<HashSet<_>>().len();
        FeedLimits {
            store,
            feed,
            oldest,
            capped: std::cell::RefCell::new(Capped {
                remaining,
                ..Capped::default()
            }),
        }
    }

    pub(super) fn too_old(&self, published: DateTime<Utc>) -> bool {
        self.oldest.is_some_and(|oldest| published < oldest)
    }

    /// Whether `item` is among the newest `max_per_source` items of its source in the feed.
    pub(super) fn within_cap(&self, item: &Item) -> Result<bool, StoreError> {
        let Some(cap) = self.feed.max_per_source else {
            return Ok(true);
        };
        if !self.capped.borrow().sources.contains(&item.source) {
            let newest = self
                .store
                .newest_of_source(&self.feed.name, &item.source, cap)?;
            let mut capped = self.capped.borrow_mut();
            capped.sources.insert(item.source.clone());
            capped.kept.extend(newest.iter().map(|e| e.id));
            capped.kept_entries.extend(newest);
            if self.feed.sources.contains(&item.source) {
                capped.remaining = capped.remaining.saturating_sub(1);
            }
        }
        Ok(self.capped.borrow().kept.contains(&item.id))
    }

    /// Whether the index entry of `id` can be passed over without reading its item: under
    /// `max_per_source`, once every source of the feed is worked out, an item none keeps. A
    /// source that floods the feed then costs a key per item past its cap, not a read.
    fn passes_over(&self, id: ItemId) -> bool {
        let capped = self.capped.borrow();
        self.feed.max_per_source.is_some() && capped.remaining == 0 && !capped.kept.contains(&id)
    }

    /// Under `max_per_source`, once every source of the feed is worked out: the kept entries
    /// after `last` in the index's order (newer first, then by id), the only ones the feed
    /// can still show past it. `None` before then, or without a cap.
    fn kept_after(&self, last: FeedEntry) -> Option<Vec<FeedEntry>> {
        let capped = self.capped.borrow();
        if self.feed.max_per_source.is_none() || capped.remaining != 0 {
            return None;
        }
        let order = |e: &FeedEntry| (std::cmp::Reverse(e.published.timestamp_micros()), e.id);
        let mut rest: Vec<FeedEntry> = capped
            .kept_entries
            .iter()
            .filter(|e| order(e) > order(&last))
            .copied()
            .collect();
        rest.sort_by_key(order);
        Some(rest)
    }

    /// Whether the feed shows `item`: indexed for it, and within its age and cap.
    pub(super) fn shows(&self, item: &Item) -> Result<bool, StoreError> {
        Ok(in_feed(self.store, self.feed, item)?
            && !self.too_old(item.published)
            && self.within_cap(item)?)
    }
}
