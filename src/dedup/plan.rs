//! Planning a poll: for each entry, whether it is a new item, an edit or the same as stored;
//! the stories it is one with ([`matches`]: link first, then text by strength, then meaning);
//! which it joins and which it merges. Reads the store, never writes it: the result is an
//! [`IngestPlan`] the store applies. Whether two items of different stories are one by their
//! texts is [`judge`](super::judge)'s call, which `feedmux why` asks too.

use super::known::Known;
use super::*;

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
/// [`judge`](super::judge)), the strongest match first: (its id, the similarity).
pub fn matches(
    store: &Store,
    source: &str,
    fingerprint: &Fingerprint,
    keys: &[u32],
    published: DateTime<Utc>,
    config: &DedupConfig,
    stats: &TermStats,
) -> Result<Vec<(ItemId, Similarity)>, StoreError> {
    if !config.enabled {
        // `judge` says `Disabled` of every pair: no candidate need be read.
        return Ok(Vec::new());
    }
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
        let similarity = weighted.similarity(&record.fingerprint.weigh(stats), stats);
        // Both are in the text index: candidates come from it, and the new item is compared
        // as it is planned.
        let new = Side {
            source,
            published,
            indexed: true,
        };
        let theirs = Side {
            source: &record.source,
            published: record.published,
            indexed: true,
        };
        if judge(new, theirs, &similarity, config).same_story() {
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

/// The meanings of the entries that are new or changed in the store, by item id: the slow
/// part of planning (about 50 ms an entry), computed by [`prepare`] on every core before
/// [`Ingest::ingest_guard`](crate::store::Ingest::ingest_guard) is taken, so that other
/// sources' polls are not held up meanwhile. Empty without `dedup.model`.
#[derive(Debug, Default)]
pub struct Prepared {
    meanings: HashMap<ItemId, Meaning>,
}

impl Prepared {
    /// Entries whose meaning was computed.
    pub fn len(&self) -> usize {
        self.meanings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meanings.is_empty()
    }
}

/// Computes the meanings of the entries of `source` that are new or changed in the store
/// ([`Prepared`]).
pub fn prepare(
    store: &Store,
    source: &str,
    entries: &[Entry],
    dedup: &DedupConfig,
) -> Result<Prepared, StoreError> {
    let Some(model) = dedup.model.as_ref() else {
        return Ok(Prepared::default());
    };
    let asked: Vec<(ItemId, u64)> = guids(entries)
        .iter()
        .zip(entries)
        .map(|(guid, entry)| (item_id(source, guid), content_hash(entry)))
        .collect();
    let stored = store.stored_versions(&asked)?;
    let mut wanted: Vec<(ItemId, &Entry)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (entry, (id, _)) in entries.iter().zip(&asked) {
        if !seen.insert(*id) || matches!(stored.get(id), Some(Stored::Unchanged)) {
            continue;
        }
        wanted.push((*id, entry));
    }
    let meanings = on_every_core(wanted, |(id, entry)| {
        let body = body_text(entry.summary_html.as_deref(), entry.content_html.as_deref());
        (id, model.meaning_of(&entry.title, &body))
    });
    Ok(Prepared {
        meanings: meanings.into_iter().collect(),
    })
}

/// The fingerprints with every term (before [`Fingerprint::keep_strongest`]) and meanings of
/// the entries a plan indexes, by item id: the edited ones and the new ones that
/// `dedup.max_new_items` lets in, as `known` tells them. Computed on every core; a meaning
/// missing from `prepared` (none was computed, or the store changed since) is computed here.
fn texts_to_index(
    entries: &[Entry],
    ids: &[ItemId],
    known: &Known,
    mut prepared: Prepared,
    dedup: &DedupConfig,
) -> HashMap<ItemId, Fingerprint> {
    let mut wanted: Vec<(ItemId, &Entry, Option<Meaning>)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut new_items = 0;
    for (entry, id) in entries.iter().zip(ids) {
        if !seen.insert(*id) || known.pruned.contains(id) {
            continue;
        }
        match known.stored.get(id) {
            Some(Stored::Unchanged) => continue,
            Some(Stored::Changed(_)) => {}
            Some(Stored::Missing) | None if new_items == dedup.max_new_items => continue,
            Some(Stored::Missing) | None => new_items += 1,
        }
        wanted.push((*id, entry, prepared.meanings.remove(id)));
    }
    let model = dedup.model.as_ref();
    on_every_core(wanted, |(id, entry, meaning)| {
        (id, text_of(entry, meaning, model))
    })
    .into_iter()
    .collect()
}

/// An entry's fingerprint with every term, with `meaning` if it was computed beforehand, else
/// with the one `model` gives (if any).
fn text_of(entry: &Entry, meaning: Option<Meaning>, model: Option<&MeaningModel>) -> Fingerprint {
    let body = body_text(entry.summary_html.as_deref(), entry.content_html.as_deref());
    let mut fingerprint = Fingerprint::new(&entry.title, &body);
    fingerprint.meaning = meaning.or_else(|| model.map(|m| m.meaning_of(&entry.title, &body)));
    fingerprint
}

/// Entry `id`'s fingerprint from [`texts_to_index`]. Planning takes only entries that
/// function computed; computing one here only guards against the two drifting apart.
fn take_text(
    texts: &mut HashMap<ItemId, Fingerprint>,
    id: ItemId,
    entry: &Entry,
    model: Option<&MeaningModel>,
) -> Fingerprint {
    texts
        .remove(&id)
        .unwrap_or_else(|| text_of(entry, None, model))
}

/// `work` done on each of `inputs`, in their order, every core taking a share (a first poll
/// can bring a thousand new entries, each a meaning to compute and a text to compare). A
/// worker's panic is the caller's.
pub(super) fn on_every_core<T: Send, R: Send>(
    inputs: Vec<T>,
    work: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, inputs.len().max(1));
    let share = inputs.len().div_ceil(threads).max(1);
    let mut shares: Vec<Vec<T>> = Vec::with_capacity(threads);
    let mut inputs = inputs.into_iter().peekable();
    while inputs.peek().is_some() {
        shares.push(inputs.by_ref().take(share).collect());
    }
    let work = &work;
    let do_share = move |part: Vec<T>| -> Vec<R> { part.into_iter().map(work).collect() };
    std::thread::scope(|scope| {
        let mut shares = shares.into_iter();
        let first = shares.next().unwrap_or_default();
        let workers: Vec<_> = shares
            .map(|part| scope.spawn(move || do_share(part)))
            .collect();
        let mut out = do_share(first);
        for worker in workers {
            match worker.join() {
                Ok(part) => out.extend(part),
                Err(panic) => std::panic::resume_unwind(panic),
            }
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
    let meanings = on_every_core(texts, |(id, title, body)| {
        (id, model.meaning_of(&title, &body))
    });
    Ok(meanings
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
/// `stats`, all of them before any is compared with the store, so what a poll finds does not
/// depend on the order of its feed.
pub fn plan(
    store: &Store,
    source: &str,
    entries: Vec<Entry>,
    now: DateTime<Utc>,
    dedup: &DedupConfig,
    stats: &mut TermStats,
) -> Result<IngestPlan, StoreError> {
    plan_prepared(
        store,
        source,
        entries,
        Prepared::default(),
        now,
        dedup,
        stats,
    )
}

/// [`plan`] with the entries [`prepare`]d beforehand; an entry missing from `prepared` (none
/// were prepared, or the store changed since) is prepared here.
pub fn plan_prepared(
    store: &Store,
    source: &str,
    entries: Vec<Entry>,
    prepared: Prepared,
    now: DateTime<Utc>,
    dedup: &DedupConfig,
    stats: &mut TermStats,
) -> Result<IngestPlan, StoreError> {
    let model = dedup.model.as_ref();
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
        left: HashMap::new(),
    };

    let guids = guids(&entries);
    let ids: Vec<ItemId> = guids.iter().map(|guid| item_id(source, guid)).collect();
    let hashes: Vec<u64> = entries.iter().map(content_hash).collect();
    let mut known = Known::read(store, source, &ids, &hashes, &canonical)?;
    let mut texts = texts_to_index(&entries, &ids, &known, prepared, dedup);
    let mut new_items = 0;
    // New items that found stories to join (their write's index, what they found).
    let mut joining: Vec<(usize, Vec<StoryLink>)> = Vec::new();
    // Edited items' fingerprints with every term, and new items' texts (by write index).
    let mut edited: Vec<(usize, Fingerprint)> = Vec::new();
    let mut new: Vec<NewText> = Vec::new();
    for ((((entry, canonical), guid), id), hash) in entries
        .into_iter()
        .zip(canonical.iter())
        .zip(guids)
        .zip(ids)
        .zip(hashes)
    {
        if !seen.insert(id) {
            continue; // the feed repeats a GUID: the first occurrence wins
        }
        if known.pruned.contains(&id) {
            plan.pruned += 1;
            continue;
        }
        match known.stored.remove(&id).unwrap_or(Stored::Missing) {
            Stored::Unchanged => {
                plan.unchanged += 1;
                continue;
            }
            Stored::Changed(old) => {
                let old = *old;
                let fingerprint = take_text(&mut texts, id, &entry, model);
                let item = updated_item(&old, entry, canonical.clone(), hash, now);
                edited.push((plan.writes.len(), fingerprint));
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
                None => known.claims.get(url).cloned(),
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
        let fingerprint = take_text(&mut texts, id, &entry, model);
        stats.add(&fingerprint);
        new.push(NewText {
            at: plan.writes.len(),
            published: entry.published.unwrap_or(now),
            fingerprint,
            found,
        });
        plan.writes.push(ItemWrite {
            // Its own story until it joins one below.
            item: new_item(id, source, guid, entry, canonical.clone(), hash, id, now),
            previous: None,
            link: None,
        });
    }
    // Every new item's terms are counted before any is compared: what a poll finds does not
    // depend on the order of its feed. Those are the costly comparisons, done on every core.
    let stats: &TermStats = stats;
    for (at, fingerprint) in edited {
        let indexed = reindexed(store, &plan.writes[at].item, fingerprint, stats);
        plan.fingerprints.push(indexed);
    }
    let compared = on_every_core(new, |text| compare_new(store, source, text, dedup, stats));
    for compared in compared {
        let (at, record, found) = compared?;
        if !found.is_empty() {
            joining.push((at, found));
        }
        plan.fingerprints.push(IndexedFingerprint {
            id: plan.writes[at].item.id,
            record,
            replaces: None,
        });
    }
    join_stories(&mut stories, &mut plan, joining, dedup)?;
    plan.claims = pending_claims.into_iter().collect();
    plan.present = seen;
    Ok(plan)
}

/// A new item's text as planning compares it: its write's index in the plan, when it was
/// published, its fingerprint with every term, and the story links found so far (a link's).
struct NewText {
    at: usize,
    published: DateTime<Utc>,
    fingerprint: Fingerprint,
    found: Vec<StoryLink>,
}

/// A new item's text compared: its index record (the fingerprint trimmed to its strongest
/// terms, its index keys) and the stories it may join, strongest first ([`matches`]), with
/// the poll's new items counted in `stats`.
fn compare_new(
    store: &Store,
    source: &str,
    text: NewText,
    dedup: &DedupConfig,
    stats: &TermStats,
) -> Result<(usize, FingerprintRecord, Vec<StoryLink>), StoreError> {
    let NewText {
        at,
        published,
        mut fingerprint,
        mut found,
    } = text;
    fingerprint.keep_strongest(stats);
    let keys = fingerprint.key_terms(stats);
    let similar = matches(store, source, &fingerprint, &keys, published, dedup, stats)?;
    found.extend(similar.into_iter().map(|(with, similarity)| StoryLink {
        kind: MergeKind::Text,
        with,
        score: similarity.score,
        meaning: similarity.meaning,
    }));
    let record = FingerprintRecord {
        source: source.to_owned(),
        published,
        fingerprint,
        keys,
    };
    Ok((at, record, found))
}

/// Joins the poll's new items to the stories they found, the strongest link first rather
/// than in the feed's order: a story never holds two items of one source, so when two new
/// items of the source match one story, the closer one joins it whichever the feed lists
/// first. (New items find only other sources' stored items, so the order of joining changes
/// nothing else.)
fn join_stories(
    stories: &mut Stories<'_>,
    plan: &mut IngestPlan,
    mut joining: Vec<(usize, Vec<StoryLink>)>,
    dedup: &DedupConfig,
) -> Result<(), StoreError> {
    let first = |found: &[StoryLink]| found.first().map_or((0.0, 0.0), strength);
    // Stable: among equals the feed's order stands.
    joining.sort_by(|(_, a), (_, b)| {
        let ((a_score, a_meaning), (b_score, b_meaning)) = (first(a), first(b));
        b_score
            .total_cmp(&a_score)
            .then(b_meaning.total_cmp(&a_meaning))
    });
    for (at, found) in joining {
        let write = &mut plan.writes[at];
        let joined = stories.join(write.item.id, &found)?;
        match joined.link.map(|l| (l.kind, l.score)) {
            Some((MergeKind::Url, _)) => plan.merged += 1,
            Some((_, score)) if score >= dedup.threshold => plan.merged_text += 1,
            Some(_) => plan.merged_meaning += 1,
            None => {}
        }
        write.item.story = joined.story;
        write.link = joined.link;
        plan.story_merges.extend(joined.merges);
        plan.story_leaves.extend(joined.leaves);
    }
    Ok(())
}

/// The meaning of a stored item, if a model is configured.
pub(crate) fn item_meaning(model: Option<&MeaningModel>, item: &Item) -> Option<Meaning> {
    let body = body_text(item.summary_html.as_deref(), item.content_html.as_deref());
    model.map(|m| m.meaning_of(&item.title, &body))
}

/// The story groups as a poll leaves them: the stored ones, its new items', the merges and
/// the leaves it planned so far. A story never holds two items of one source (different GUIDs
/// would show as one entry), so a new item joins, and merges, only stories whose sources are
/// all different, unless it takes the place of its source's report there ([`Stories::join`]).
pub(super) struct Stories<'a> {
    store: &'a Store,
    /// The polled source: every new item is of it.
    source: &'a str,
    /// Each new item's story.
    pending: HashMap<ItemId, ItemId>,
    /// Stories this poll merges into another.
    merged_into: HashMap<ItemId, ItemId>,
    /// Stored items of the source that leave their story, with the story of their own each
    /// goes to.
    left: HashMap<ItemId, ItemId>,
}

/// What a new item joins: its story, how it joined (`None`: it starts its own), the other
/// stories that it found to be the same one, and the stored report whose place it takes.
pub(super) struct Joined {
    story: ItemId,
    link: Option<StoryLink>,
    merges: Vec<StoryMerge>,
    leaves: Vec<StoryLeave>,
}

/// How strongly a link holds two items together: the word score (1 for a URL), then the
/// closeness of their meanings.
fn strength(link: &StoryLink) -> (f32, f32) {
    (link.score, link.meaning.unwrap_or(0.0))
}

/// Whether a link of strength `a` is stronger than one of `b`.
fn stronger(a: (f32, f32), b: (f32, f32)) -> bool {
    a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)).is_gt()
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
        let story = match self.pending.get(&item).or(self.left.get(&item)) {
            Some(story) => *story,
            None => self.store.item(item)?.map_or(item, |i| i.story),
        };
        Ok(self.resolve(story))
    }

    /// The stored report of the polled source that new item `link` joins `story` without, when
    /// the link is stronger than the one link that holds that report in the story: its own
    /// (it joined by it), or, when it leads the story, that of the one member that joined
    /// through it. `None` when more than one link holds it (the story would fall apart
    /// without it), when the story's report of the source is a new item of this poll (those
    /// join strongest first) or holds tighter, and when the poll merged another story into it.
    fn displaceable(
        &self,
        story: ItemId,
        link: &StoryLink,
    ) -> Result<Option<StoryLeave>, StoreError> {
        if self.pending.values().any(|s| self.resolve(*s) == story)
            || self.merged_into.keys().any(|s| self.resolve(*s) == story)
        {
            return Ok(None);
        }
        let links = self.store.story_links(story)?;
        let mut ours = None;
        for (member, _) in &links {
            if self.left.contains_key(member) {
                continue;
            }
            if self
                .store
                .item(*member)?
                .is_some_and(|m| m.source == self.source)
            {
                ours = Some(*member);
            }
        }
        let Some(ours) = ours else { return Ok(None) };
        // Every link that holds it: its own, and those of members that joined through it.
        let mut holding = links.iter().filter_map(|(member, l)| match l {
            Some(l) if *member == ours => Some((None, *l)),
            Some(l) if l.with == ours => Some((Some(*member), *l)),
            _ => None,
        });
        let (Some((through, held_by)), None) = (holding.next(), holding.next()) else {
            return Ok(None);
        };
        if !stronger(strength(link), strength(&held_by)) {
            return Ok(None);
        }
        Ok(Some(StoryLeave {
            member: ours,
            story,
            into: super::identity::story_of_its_own(ours, story),
            new_lead: through,
        }))
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
                if self.left.contains_key(&member) {
                    continue;
                }
                if let Some(m) = self.store.item(member)? {
                    sources.insert(m.source);
                }
            }
        }
        Ok(sources)
    }

    /// Joins new item `id` to the story of the first of `found` (strongest first) whose
    /// sources it does not repeat, or whose report of its own source it is closer to than
    /// that report is held by (that report leaves: [`Stories::displaceable`]), and merges into
    /// that story every other story of `found` that repeats no source of those joined so far.
    fn join(&mut self, id: ItemId, found: &[StoryLink]) -> Result<Joined, StoreError> {
        let mut joined: Option<(ItemId, StoryLink)> = None;
        let mut merges = Vec::new();
        let mut leaves = Vec::new();
        let mut sources = HashSet::from([self.source.to_owned()]);
        let mut seen = HashSet::new();
        for link in found {
            let story = self.story_of(link.with)?;
            if !seen.insert(story) {
                continue;
            }
            let mut theirs = self.sources(story)?;
            if joined.is_none() && theirs.contains(self.source) {
                if let Some(leave) = self.displaceable(story, link)? {
                    self.left.insert(leave.member, leave.into);
                    leaves.push(leave);
                    // It was the story's one report of the source.
                    theirs.remove(self.source);
                }
            }
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
            leaves,
        })
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn new_item(
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
pub(super) fn updated_item(
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
