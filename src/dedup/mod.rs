//! Deduplication: item identity, canonical URLs, and story groups by URL and by similar text.
//!
//! * The same GUID from the same source is one item (its id is a hash of both); when its text
//!   changes it is updated in place, never stored twice. Items of one source with different
//!   GUIDs stay different items even when they share a link.
//! * The same canonical URL from different sources is one story: the later item joins the
//!   story group of the first. A URL that several items of one source share (a home page or
//!   section link) identifies nothing and is marked ambiguous.
//! * Items of different sources whose text is similar enough (see [`fingerprint`]) and that
//!   were published within `dedup.window` of each other are one story too; candidates are
//!   the items that share one of the new item's rarest terms (the store's key-term index),
//!   never a scan. Term rarity comes from [`TermStats`], which planning keeps up to date.
//! * A new item that is one story with items of several stories joins the strongest match's
//!   and merges the others into it ([`StoryMerge`]), so the groups do not depend on the order
//!   of polls; never so that a story would hold two items of one source.
//!
//! [`plan`] reads the store and returns the writes for one poll as an [`IngestPlan`]; it never
//! writes. Applying the plan is the store's job.

pub mod explain;
pub mod fingerprint;
pub mod identity;
pub mod meaning;
mod numbers;
pub mod record;
pub mod upkeep;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use url::Url;

use crate::model::{Entry, Item, ItemId};
use crate::store::{Store, StoreError, Stored};
use crate::text::html_to_text;
use fingerprint::{Fingerprint, Similarity, TermStats};
pub use identity::{guid_of, guids, item_id};
use meaning::{Meaning, MeaningModel};
pub use record::{
    FingerprintRecord, IndexedFingerprint, IngestPlan, ItemWrite, MergeKind, StoryLink, StoryMerge,
    UrlClaim, DEFAULT_MEMORY_ITEMS, DEFAULT_WINDOW,
};

/// Query parameters that only track where a click came from.
const TRACKING_PARAMS: &[&str] = &[
    "spm",
    "fbclid",
    "gclid",
    "dclid",
    "msclkid",
    "yclid",
    "mc_cid",
    "mc_eid",
    "ref",
    "ref_src",
    "_hsenc",
    "_hsmi",
    "igshid",
    "mkt_tok",
    "vero_id",
    "wt_mc",
    "cmpid",
    "scm",
    "share_token",
];
/// `from=`/`source=` values that name a channel rather than select content.
const TRACKING_ORIGINS: &[&str] = &[
    "rss",
    "feed",
    "feeds",
    "atom",
    "feedly",
    "inoreader",
    "newsletter",
    "email",
    "mail",
    "timeline",
    "singlemessage",
    "groupmessage",
    "twitter",
    "x",
    "weibo",
    "wechat",
    "weixin",
    "share",
    "social",
    "homepage",
    "home",
    "app",
    "ios",
    "android",
    "google",
    "facebook",
    "fb",
    "linkedin",
    "reddit",
    "hn",
    "hackernews",
    "toutiao",
    "zhihu",
    "douban",
    "telegram",
    "web",
];

/// The settings of `[dedup]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DedupConfig {
    /// Whether items of different sources with similar text are merged (same-URL merging is
    /// always on).
    pub enabled: bool,
    /// The similarity score at or above which two items are one story.
    pub threshold: f32,
    /// Only items published at most this far apart can merge.
    pub window: std::time::Duration,
    /// Recently published items whose dedup entries are kept in memory at most.
    pub memory_items: usize,
    /// Items published longer ago than this are matched by link only: their text is not
    /// indexed, and the index entries of items that reach this age are dropped.
    pub index_age: std::time::Duration,
    /// The sentence model (`dedup.model`), if one is configured.
    pub model: Option<MeaningModel>,
    /// The cosine of two items' meanings at or above which they are one story (unless their
    /// titles disagree on a number).
    pub meaning_threshold: f32,
    /// New items one poll may add (`[poll] max_new_items`): the feed's other new entries are
    /// left for later polls (`IngestPlan::over_quota`).
    pub max_new_items: usize,
}

/// Default `dedup.threshold`, tuned on tests/fixtures/stories.
pub const DEFAULT_THRESHOLD: f32 = 0.50;
/// Default `dedup.meaning_threshold`, tuned on tests/fixtures/stories with e5-small.
pub const DEFAULT_MEANING_THRESHOLD: f32 = 0.9675;
/// Default `dedup.index_age`: 30 days.
pub const DEFAULT_INDEX_AGE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);
/// Items read for one key term when looking for candidates.
const CANDIDATES_PER_TERM: usize = 16;
/// Candidates scored for a new item at most (those sharing most key terms).
const MAX_CANDIDATES: usize = 32;
/// Recent items of the window whose meanings a new item's is compared with, at most (newest
/// first): about 4 ms when all are scanned.
const MEANING_SCAN: usize = 20_000;
/// Candidates found by meaning alone that are scored, at most (the closest).
const MEANING_CANDIDATES: usize = 8;

impl DedupConfig {
    /// The publication time before which items are not in the text index at `now`.
    pub fn index_from(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        chrono::Duration::from_std(self.index_age)
            .ok()
            .and_then(|age| now.checked_sub_signed(age))
    }
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            enabled: true,
            threshold: DEFAULT_THRESHOLD,
            window: DEFAULT_WINDOW,
            memory_items: DEFAULT_MEMORY_ITEMS,
            index_age: DEFAULT_INDEX_AGE,
            model: None,
            meaning_threshold: DEFAULT_MEANING_THRESHOLD,
            max_new_items: crate::config::DEFAULT_MAX_NEW_ITEMS,
        }
    }
}

/// The plain text an item's fingerprint is made of, besides its title.
pub fn body_text(summary_html: Option<&str>, content_html: Option<&str>) -> String {
    summary_html
        .or(content_html)
        .map(html_to_text)
        .unwrap_or_default()
}

/// The most similar item of another source within the window, if it is one story with it:
/// (its id, the similarity).
pub fn best_match(
    store: &Store,
    source: &str,
    fingerprint: &Fingerprint,
    keys: &[u32],
    published: DateTime<Utc>,
    config: &DedupConfig,
    stats: &TermStats,
) -> Result<Option<(ItemId, Similarity)>, StoreError> {
    let found = matches(store, source, fingerprint, keys, published, config, stats)?;
    Ok(found.into_iter().next())
}

/// Every item of another source within the window that is one story with the new item (see
/// [`Similarity::verdict`]), the strongest match first: (its id, the similarity).
pub fn matches(
    store: &Store,
    source: &str,
    fingerprint: &Fingerprint,
    keys: &[u32],
    published: DateTime<Utc>,
    config: &DedupConfig,
    stats: &TermStats,
) -> Result<Vec<(ItemId, Similarity)>, StoreError> {
    let mut candidates =
        store.candidates(keys, published, config.window, CANDIDATES_PER_TERM, source)?;
    // Those sharing most key terms first; a stable sort keeps the nearest in time first.
    candidates.sort_by_key(|c| std::cmp::Reverse(c.1));
    candidates.truncate(MAX_CANDIDATES);
    // Reports that share no rare term ("递表" / "递交上市申请", a name in another script) are
    // found by meaning: the recent items of the window, whose meanings are compared directly.
    if let Some(meaning) = &fingerprint.meaning {
        let mut close: Vec<(ItemId, f32)> = Vec::new();
        store.visit_recent(published, config.window, MEANING_SCAN, &mut |id, record| {
            if record.source == source {
                return;
            }
            let cosine = record
                .fingerprint
                .meaning
                .as_ref()
                .and_then(|m| meaning.cosine(m));
            if let Some(c) = cosine.filter(|c| *c >= config.meaning_threshold) {
                close.push((id, c));
            }
        })?;
        close.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (id, _) in close.into_iter().take(MEANING_CANDIDATES) {
            if !candidates.iter().any(|(c, _)| *c == id) {
                candidates.push((id, 0));
            }
        }
    }
    let weighted = fingerprint.weigh(stats);
    let mut found: Vec<(ItemId, Similarity)> = Vec::new();
    for (candidate, _) in candidates {
        let record = match store.shared_fingerprint(candidate) {
            Ok(Some(record)) => record,
            Ok(None) => continue,
            // One unreadable record must not stop a poll: that candidate is skipped.
            Err(StoreError::Corrupt { what, message }) => {
                tracing::warn!(item = %candidate, "skipping an unreadable {what}: {message}");
                continue;
            }
            Err(e) => return Err(e),
        };
        if record.source == source {
            continue;
        }
        let similarity = weighted.similarity(&record.fingerprint.weigh(stats), stats);
        if similarity.same_story(config.threshold, config.meaning_threshold) {
            found.push((candidate, similarity));
        }
    }
    // Strongest first; a stable sort keeps the order of the candidates among equals.
    found.sort_by(|(_, a), (_, b)| {
        (b.score.total_cmp(&a.score)).then(
            b.meaning
                .unwrap_or(0.0)
                .total_cmp(&a.meaning.unwrap_or(0.0)),
        )
    });
    Ok(found)
}

/// Meanings of the entries that are new or changed in the store, by item id: the slow part of
/// planning (about 50 ms an entry), computed before [`Ingest::ingest_guard`](crate::store::Ingest::ingest_guard) is taken so that
/// other sources' polls are not held up meanwhile. Empty without `dedup.model`.
pub fn meanings(
    store: &Store,
    source: &str,
    entries: &[Entry],
    dedup: &DedupConfig,
) -> Result<HashMap<ItemId, Meaning>, StoreError> {
    let Some(model) = dedup.model.as_ref() else {
        return Ok(HashMap::new());
    };
    let mut wanted: Vec<(ItemId, String, String)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (entry, guid) in entries.iter().zip(guids(entries)) {
        let id = item_id(source, &guid);
        if !seen.insert(id)
            || matches!(
                store.stored_version(id, content_hash(entry))?,
                Stored::Unchanged
            )
        {
            continue;
        }
        let body = body_text(entry.summary_html.as_deref(), entry.content_html.as_deref());
        wanted.push((id, entry.title.clone(), body));
    }
    Ok(embed_on_every_core(model, &wanted).into_iter().collect())
}

/// The meanings of `(id, title, body)` texts, every core taking a share (a first poll can
/// bring a hundred new entries). A text whose worker failed is left out (planning embeds it).
fn embed_on_every_core(
    model: &MeaningModel,
    texts: &[(ItemId, String, String)],
) -> Vec<(ItemId, Meaning)> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, texts.len().max(1));
    let share = texts.len().div_ceil(threads).max(1);
    let embed = |part: &[(ItemId, String, String)]| -> Vec<(ItemId, Meaning)> {
        part.iter()
            .map(|(id, title, body)| (*id, model.meaning_of(title, body)))
            .collect()
    };
    std::thread::scope(|scope| {
        let workers: Vec<_> = texts
            .chunks(share)
            .skip(1)
            .map(|part| scope.spawn(move || embed(part)))
            .collect();
        let mut out = embed(texts.chunks(share).next().unwrap_or(&[]));
        for worker in workers {
            out.extend(worker.join().unwrap_or_default());
        }
        out
    })
}

/// The recent items of the last `dedup.window` before `now` (those the scan by meaning reads)
/// whose stored meaning is missing or another model's (the model was just configured or
/// changed): their records with this model's meaning, each naming the record it replaces.
/// Stories formed so far can then be joined by meaning at once, not only by reports that
/// arrive a window later.
pub fn meanings_to_add(
    store: &Store,
    dedup: &DedupConfig,
    now: DateTime<Utc>,
) -> Result<Vec<IndexedFingerprint>, StoreError> {
    let Some(model) = dedup.model.as_ref() else {
        return Ok(Vec::new());
    };
    let mut records = HashMap::new();
    store.visit_recent(now, dedup.window, MEANING_SCAN, &mut |id, record| {
        let current = record.fingerprint.meaning.as_ref().map(|m| m.model);
        if current != Some(model.tag()) {
            records.insert(id, record.clone());
        }
    })?;
    let mut texts = Vec::with_capacity(records.len());
    for id in records.keys() {
        if let Some(item) = store.item(*id)? {
            let body = body_text(item.summary_html.as_deref(), item.content_html.as_deref());
            texts.push((*id, item.title, body));
        }
    }
    Ok(embed_on_every_core(model, &texts)
        .into_iter()
        .filter_map(|(id, meaning)| {
            let old = records.remove(&id)?;
            let mut record = old.clone();
            record.fingerprint.meaning = Some(meaning);
            Some(IndexedFingerprint {
                id,
                record,
                replaces: Some(old),
            })
        })
        .collect())
}

/// Decides what `entries` of `source` change in the store. New items' terms are counted in
/// `stats` as they are planned.
pub fn plan(
    store: &Store,
    source: &str,
    entries: Vec<Entry>,
    now: DateTime<Utc>,
    dedup: &DedupConfig,
    stats: &mut TermStats,
) -> Result<IngestPlan, StoreError> {
    plan_with_meanings(store, source, entries, HashMap::new(), now, dedup, stats)
}

/// [`plan`] with the entries' [`meanings`] computed beforehand; an entry missing from them
/// (none were computed, or the store changed since) gets its meaning here.
pub fn plan_with_meanings(
    store: &Store,
    source: &str,
    entries: Vec<Entry>,
    mut meanings: HashMap<ItemId, Meaning>,
    now: DateTime<Utc>,
    dedup: &DedupConfig,
    stats: &mut TermStats,
) -> Result<IngestPlan, StoreError> {
    let mut meaning_for = |id: ItemId, title: &str, body: &str| {
        meanings
            .remove(&id)
            .or_else(|| dedup.model.as_ref().map(|m| m.meaning_of(title, body)))
    };
    let mut plan = IngestPlan {
        index_from: dedup.index_from(now),
        ..IngestPlan::default()
    };
    let canonical: Vec<Option<String>> = entries
        .iter()
        .map(|e| e.url.as_deref().and_then(canonical_url))
        .collect();
    let mut url_counts: HashMap<&str, usize> = HashMap::new();
    for c in canonical.iter().flatten() {
        *url_counts.entry(c.as_str()).or_default() += 1;
    }
    let mut seen = std::collections::HashSet::new();
    let mut pending_claims: HashMap<String, UrlClaim> = HashMap::new();
    let mut stories = Stories {
        store,
        source,
        pending: HashMap::new(),
        merged_into: HashMap::new(),
    };

    let guids = guids(&entries);
    let mut new_items = 0;
    for ((entry, canonical), guid) in entries.into_iter().zip(canonical.iter()).zip(guids) {
        let id = item_id(source, &guid);
        if !seen.insert(id) {
            continue; // the feed repeats a GUID: the first occurrence wins
        }
        if store.is_pruned(source, id)? {
            plan.pruned += 1;
            continue;
        }
        let hash = content_hash(&entry);
        match store.stored_version(id, hash)? {
            Stored::Unchanged => {
                plan.unchanged += 1;
                continue;
            }
            Stored::Changed(old) => {
                let old = *old;
                let item = updated_item(&old, entry, canonical.clone(), hash, now);
                let mut indexed = refingerprint(store, &item, stats);
                let body = body_text(item.summary_html.as_deref(), item.content_html.as_deref());
                indexed.record.fingerprint.meaning = meaning_for(id, &item.title, &body);
                plan.fingerprints.push(indexed);
                plan.writes.push(ItemWrite {
                    item,
                    previous: Some(old),
                    link: None,
                });
                continue;
            }
            Stored::Missing => {}
        }
        if new_items == dedup.max_new_items {
            plan.over_quota += 1;
            continue;
        }
        new_items += 1;
        // The stories this item may join, strongest first: a link's, then similar texts'.
        let mut found: Vec<StoryLink> = Vec::new();
        if let Some(url) = canonical {
            let shared_here = url_counts.get(url.as_str()).copied().unwrap_or(0) > 1;
            let claim = match pending_claims.get(url) {
                Some(c) => Some(c.clone()),
                None => store.url_claim(url)?,
            };
            match claim {
                None => {
                    pending_claims.insert(
                        url.clone(),
                        UrlClaim {
                            item: id,
                            source: source.to_owned(),
                            ambiguous: shared_here,
                        },
                    );
                }
                Some(claim) if claim.ambiguous => {}
                Some(mut claim) if claim.source == source => {
                    claim.ambiguous = true;
                    pending_claims.insert(url.clone(), claim);
                }
                Some(claim) if !shared_here => found.push(StoryLink {
                    kind: MergeKind::Url,
                    with: claim.item,
                    score: 1.0,
                    meaning: None,
                }),
                Some(_) => {}
            }
        }
        let published = entry.published.unwrap_or(now);
        let body = body_text(entry.summary_html.as_deref(), entry.content_html.as_deref());
        let mut fingerprint = Fingerprint::new(&entry.title, &body);
        fingerprint.meaning = meaning_for(id, &entry.title, &body);
        stats.add(&fingerprint);
        fingerprint.keep_strongest(stats);
        let keys = fingerprint.key_terms(stats);
        if dedup.enabled {
            let similar = matches(store, source, &fingerprint, &keys, published, dedup, stats)?;
            found.extend(similar.into_iter().map(|(with, similarity)| StoryLink {
                kind: MergeKind::Text,
                with,
                score: similarity.score,
                meaning: similarity.meaning,
            }));
        }
        let joined = stories.join(id, &found)?;
        match joined.link.map(|l| (l.kind, l.score)) {
            Some((MergeKind::Url, _)) => plan.merged += 1,
            Some((_, score)) if score >= dedup.threshold => plan.merged_text += 1,
            Some(_) => plan.merged_meaning += 1,
            None => {}
        }
        let (story, link) = (joined.story, joined.link);
        plan.story_merges.extend(joined.merges);
        plan.fingerprints.push(IndexedFingerprint {
            id,
            record: FingerprintRecord {
                source: source.to_owned(),
                published,
                fingerprint,
                keys,
            },
            replaces: None,
        });
        plan.writes.push(ItemWrite {
            item: new_item(id, source, guid, entry, canonical.clone(), hash, story, now),
            previous: None,
            link,
        });
    }
    plan.claims = pending_claims.into_iter().collect();
    plan.present = seen;
    Ok(plan)
}

/// The meaning of a stored item, if a model is configured.
pub(crate) fn item_meaning(model: Option<&MeaningModel>, item: &Item) -> Option<Meaning> {
    let body = body_text(item.summary_html.as_deref(), item.content_html.as_deref());
    model.map(|m| m.meaning_of(&item.title, &body))
}

/// The fingerprint of a stored item, replacing the stored one (whose index keys go). Its
/// terms are not counted again in the statistics, and its story does not change. Its meaning
/// is the stored one: the caller sets a new one when the text changed.
fn refingerprint(store: &Store, item: &Item, stats: &TermStats) -> IndexedFingerprint {
    let replaces = store.fingerprint(item.id).ok().flatten();
    let mut fingerprint = item_fingerprint(item, stats);
    fingerprint.meaning = replaces
        .as_ref()
        .and_then(|r| r.fingerprint.meaning.clone());
    let keys = fingerprint.key_terms(stats);
    IndexedFingerprint {
        id: item.id,
        record: FingerprintRecord {
            source: item.source.clone(),
            published: item.published,
            fingerprint,
            keys,
        },
        // Unreadable or missing: nothing to remove.
        replaces,
    }
}

/// The fingerprint of a stored item, as indexing it would compute it.
pub(crate) fn item_fingerprint(item: &Item, stats: &TermStats) -> Fingerprint {
    let mut fingerprint = every_term_of(item);
    fingerprint.keep_strongest(stats);
    fingerprint
}

/// A stored item's fingerprint with every term (before [`Fingerprint::keep_strongest`]).
fn every_term_of(item: &Item) -> Fingerprint {
    Fingerprint::new(
        &item.title,
        &body_text(item.summary_html.as_deref(), item.content_html.as_deref()),
    )
}

/// Counts `items` (indexed items of the store) into `stats`, for re-deriving the text index
/// after the way text is cut into terms changed ([`fingerprint::TERMS_VERSION`]).
pub fn count_terms(
    store: &Store,
    items: &[ItemId],
    stats: &mut TermStats,
) -> Result<(), StoreError> {
    for id in items {
        if let Some(item) = store.item(*id)? {
            stats.add(&every_term_of(&item));
        }
    }
    Ok(())
}

/// The fingerprints and index keys of `items` derived anew under `stats`, each naming the
/// record it replaces; items no longer stored are left out.
pub fn rederive_fingerprints(
    store: &Store,
    items: &[ItemId],
    stats: &TermStats,
) -> Result<Vec<IndexedFingerprint>, StoreError> {
    let mut out = Vec::with_capacity(items.len());
    for id in items {
        if let Some(item) = store.item(*id)? {
            out.push(refingerprint(store, &item, stats));
        }
    }
    Ok(out)
}

/// The story groups as a poll leaves them: the stored ones, its new items' and the merges it
/// planned so far. A story never holds two items of one source (different GUIDs would show
/// as one entry), so a new item joins, and merges, only stories whose sources are all
/// different.
struct Stories<'a> {
    store: &'a Store,
    /// The polled source: every new item is of it.
    source: &'a str,
    /// Each new item's story.
    pending: HashMap<ItemId, ItemId>,
    /// Stories this poll merges into another.
    merged_into: HashMap<ItemId, ItemId>,
}

/// What a new item joins: its story, how it joined (`None`: it starts its own), and the other
/// stories that it found to be the same one.
struct Joined {
    story: ItemId,
    link: Option<StoryLink>,
    merges: Vec<StoryMerge>,
}

impl Stories<'_> {
    /// The story `story` is now part of.
    fn resolve(&self, mut story: ItemId) -> ItemId {
        while let Some(next) = self.merged_into.get(&story) {
            story = *next;
        }
        story
    }

    /// The story of a stored or new item.
    fn story_of(&self, item: ItemId) -> Result<ItemId, StoreError> {
        let story = match self.pending.get(&item) {
            Some(story) => *story,
            None => self.store.item(item)?.map_or(item, |i| i.story),
        };
        Ok(self.resolve(story))
    }

    /// The sources of a story's members, those of the stories merged into it included.
    fn sources(&self, story: ItemId) -> Result<HashSet<String>, StoreError> {
        let mut sources = HashSet::new();
        if self.pending.values().any(|s| self.resolve(*s) == story) {
            sources.insert(self.source.to_owned());
        }
        let merged = self
            .merged_into
            .keys()
            .filter(|s| self.resolve(**s) == story);
        for part in std::iter::once(&story).chain(merged) {
            for member in self.store.story_members(*part)? {
                if let Some(m) = self.store.item(member)? {
                    sources.insert(m.source);
                }
            }
        }
        Ok(sources)
    }

    /// Joins new item `id` to the story of the first of `found` (strongest first) whose
    /// sources it does not repeat, and merges into that story every other story of `found`
    /// that repeats no source of those joined so far.
    fn join(&mut self, id: ItemId, found: &[StoryLink]) -> Result<Joined, StoreError> {
        let mut joined: Option<(ItemId, StoryLink)> = None;
        let mut merges = Vec::new();
        let mut sources = HashSet::from([self.source.to_owned()]);
        let mut seen = HashSet::new();
        for link in found {
            let story = self.story_of(link.with)?;
            if !seen.insert(story) {
                continue;
            }
            let theirs = self.sources(story)?;
            if !theirs.is_disjoint(&sources) {
                continue;
            }
            sources.extend(theirs);
            match joined {
                None => joined = Some((story, *link)),
                Some((into, _)) => {
                    self.merged_into.insert(story, into);
                    merges.push(StoryMerge {
                        from: story,
                        into,
                        link: StoryLink {
                            kind: MergeKind::Through,
                            with: id,
                            ..*link
                        },
                    });
                }
            }
        }
        let (story, link) = joined.map_or((id, None), |(story, link)| (story, Some(link)));
        self.pending.insert(id, story);
        Ok(Joined {
            story,
            link,
            merges,
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn new_item(
    id: ItemId,
    source: &str,
    guid: String,
    entry: Entry,
    canonical_url: Option<String>,
    content_hash: u64,
    story: ItemId,
    now: DateTime<Utc>,
) -> Item {
    Item {
        id,
        source: source.to_owned(),
        guid,
        url: entry.url,
        canonical_url,
        title: entry.title,
        summary_html: entry.summary_html,
        content_html: entry.content_html,
        authors: entry.authors,
        categories: entry.categories,
        enclosures: entry.enclosures,
        published: entry.published.unwrap_or(now),
        updated: entry.updated,
        first_seen: now,
        modified: now,
        content_hash,
        story,
        // Entries come from the parse stage, which cleaned their HTML.
        sanitised: crate::sanitise::POLICY,
    }
}

/// The new version of an edited item: its identity, first sighting and story are kept; an
/// entry that lost its date keeps the old one.
fn updated_item(
    old: &Item,
    entry: Entry,
    canonical_url: Option<String>,
    content_hash: u64,
    now: DateTime<Utc>,
) -> Item {
    let published = entry.published.unwrap_or(old.published);
    Item {
        published,
        first_seen: old.first_seen,
        ..new_item(
            old.id,
            &old.source,
            old.guid.clone(),
            entry,
            canonical_url,
            content_hash,
            old.story,
            now,
        )
    }
}

/// A hash of everything a reader sees of an entry; an edit changes it.
pub fn content_hash(entry: &Entry) -> u64 {
    let mut hasher = Sha256::new();
    for part in [
        entry.title.as_str(),
        entry.url.as_deref().unwrap_or_default(),
        entry.summary_html.as_deref().unwrap_or_default(),
        entry.content_html.as_deref().unwrap_or_default(),
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    for author in &entry.authors {
        hasher.update(author.as_bytes());
        hasher.update([1]);
    }
    for enclosure in &entry.enclosures {
        hasher.update(enclosure.url.as_bytes());
        hasher.update([2]);
    }
    if let Some(p) = entry.published {
        hasher.update(p.timestamp().to_be_bytes());
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The canonical form of a URL, under which the same article from two sources compares equal:
/// scheme and host lowercased, default port and fragment dropped, tracking parameters removed,
/// the remaining query keys sorted. `None` for URLs that are not http(s).
pub fn canonical_url(raw: &str) -> Option<String> {
    let mut url = Url::parse(raw.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return None;
    }
    url.set_fragment(None);
    let mut pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, v)| !is_tracking(k, v))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs.sort();
    if pairs.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    Some(url.to_string())
}

fn is_tracking(key: &str, value: &str) -> bool {
    let key = key.to_ascii_lowercase();
    if key.starts_with("utm_") || TRACKING_PARAMS.contains(&key.as_str()) {
        return true;
    }
    if key == "from" || key == "source" {
        let value = value.to_ascii_lowercase();
        return TRACKING_ORIGINS.contains(&value.as_str())
            || value.starts_with("rss")
            || value.ends_with("_rss")
            || value.ends_with("feed");
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_url_drops_tracking_and_sorts() {
        assert_eq!(
            canonical_url(
                "HTTPS://Example.COM:443/a/b?utm_source=rss&z=1&spm=a.b&a=2&from=timeline#frag"
            )
            .as_deref(),
            Some("https://example.com/a/b?a=2&z=1")
        );
        assert_eq!(
            canonical_url("http://example.com:80/x?ref=hn&fbclid=1&gclid=2&mc_cid=3&mc_eid=4")
                .as_deref(),
            Some("http://example.com/x")
        );
        // from/source that select content are kept
        assert_eq!(
            canonical_url("https://example.com/search?from=2026-01-01&source=arxiv").as_deref(),
            Some("https://example.com/search?from=2026-01-01&source=arxiv")
        );
        assert_eq!(canonical_url("mailto:a@b.c"), None);
    }

    #[test]
    fn canonical_url_is_idempotent() {
        for raw in [
            "https://example.com/a?b=1&a=2",
            "https://例子.中国/路径?q=中文&utm_medium=x",
            "http://example.com",
        ] {
            let once = canonical_url(raw).unwrap();
            assert_eq!(canonical_url(&once).unwrap(), once);
        }
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;

    fn sample_record() -> FingerprintRecord {
        FingerprintRecord {
            source: "qbitai".into(),
            published: DateTime::<Utc>::from_timestamp_micros(1_790_000_000_123_456).unwrap(),
            fingerprint: Fingerprint::new("智谱发布 GLM-6 大模型", "智谱今天发布 GLM-6。"),
            keys: vec![7, 0xDEAD_BEEF],
        }
    }

    #[test]
    fn fingerprint_records_round_trip_and_reject_garbage() {
        let record = sample_record();
        let bytes = record.to_bytes();
        assert!(bytes.len() < 200, "{} bytes", bytes.len());
        assert_eq!(FingerprintRecord::from_bytes(&bytes), Some(record.clone()));
        assert_eq!(
            FingerprintRecord::from_bytes(&bytes[..bytes.len() - 1]),
            None
        );
        assert_eq!(FingerprintRecord::from_bytes(b"{\"json\": 1}"), None);

        // With a meaning: its model's tag and bytes come back; cut short, the record is refused.
        let mut with = record.clone();
        with.fingerprint.meaning = Some(Meaning {
            model: 0xABCD_0123,
            values: (0..384).map(|i| ((i % 255) - 127) as i8).collect(),
        });
        let bytes = with.to_bytes();
        assert_eq!(FingerprintRecord::from_bytes(&bytes), Some(with));
        assert_eq!(
            FingerprintRecord::from_bytes(&bytes[..bytes.len() - 1]),
            None
        );
    }

    #[test]
    fn records_of_version_2_still_read_without_a_meaning() {
        let record = sample_record();
        // Version 2 is version 3 without the meaning's length at the end.
        let mut v2 = record.to_bytes();
        v2[0] = 2;
        v2.truncate(v2.len() - 2);
        assert_eq!(FingerprintRecord::from_bytes(&v2), Some(record));
    }

    #[test]
    fn records_of_the_first_version_still_read_and_never_match() {
        // version 1: time, source, title hashes (u16 count), body MinHash, numbers.
        let mut v1 = vec![1u8];
        v1.extend_from_slice(&1_790_000_000_000_000i64.to_le_bytes());
        v1.extend_from_slice(&[2, b'q', b'b']);
        v1.extend_from_slice(&1u16.to_le_bytes());
        v1.extend_from_slice(&7u32.to_le_bytes());
        v1.extend_from_slice(&[1, 9, 9, 0]);
        let record = FingerprintRecord::from_bytes(&v1).expect("a version 1 record");
        assert_eq!(record.source, "qb");
        assert_eq!(record.fingerprint.title, vec![7]);
        assert!(record.fingerprint.terms.is_empty());
        let stats = fingerprint::TermStats::default();
        let other = Fingerprint::new("anything", "");
        assert_eq!(record.fingerprint.similarity(&other, &stats).score, 0.0);
    }
}
