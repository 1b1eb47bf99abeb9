//! Explaining dedup to people: which story groups exist and why two items are (not) one story.
//!
//! Read-only views over the store for `feedmux stories` and `feedmux why`; the decisions
//! themselves are the planner's: `why` gives [`judge`]'s reason for the two items.

use chrono::{DateTime, Utc};

use super::fingerprint::{
    Conflict, Fingerprint, Similarity, TermStats, TextVerdict, MIN_TITLE_SIMILARITY,
};
use super::judge::{window, within_window};
use super::{
    item_fingerprint, item_meaning, judge, DedupConfig, Judgement, MergeKind, Side, StoryLink,
};
use crate::model::{Item, ItemId};
use crate::store::{Store, StoreError};

/// One story group with its members, first member first.
#[derive(Debug)]
pub struct StoryReport {
    pub story: ItemId,
    pub members: Vec<(Item, Option<StoryLink>)>,
}

/// Story groups with more than one member whose newest item was published since `since`,
/// newest first.
pub fn stories(store: &Store, since: DateTime<Utc>) -> Result<Vec<StoryReport>, StoreError> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for id in store.all_items() {
        let Some(item) = store.item(id?)? else {
            continue;
        };
        if item.published < since {
            break;
        }
        if !seen.insert(item.story) {
            continue;
        }
        let links = store.story_links(item.story)?;
        if links.len() < 2 {
            continue;
        }
        let mut members = Vec::new();
        for (member, link) in links {
            if let Some(m) = store.item(member)? {
                members.push((m, link));
            }
        }
        members.sort_by_key(|(m, link)| (link.is_some(), m.first_seen));
        out.push(StoryReport {
            story: item.story,
            members,
        });
    }
    Ok(out)
}

/// Finds an item by its id or a unique prefix of it (at least 6 hex digits).
pub fn find_item(store: &Store, text: &str) -> Result<Option<Item>, StoreError> {
    let text = text.trim().to_ascii_lowercase();
    if text.len() < 6 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let mut found = None;
    for id in store.all_items() {
        let id = id?;
        if id.to_hex().starts_with(&text) {
            if found.is_some() {
                return Ok(None); // ambiguous prefix
            }
            found = Some(id);
        }
    }
    match found {
        Some(id) => store.item(id),
        None => Ok(None),
    }
}

/// Why two items are, or are not, one story: one line per fact, then the verdict, which
/// names the reason (a link, words, meaning, a linking item; or a same source, the window,
/// `dedup.index_age`, numbers or versions, too little in common).
pub fn why(
    store: &Store,
    a: &Item,
    b: &Item,
    config: &DedupConfig,
) -> Result<Vec<String>, StoreError> {
    let mut lines = vec![
        format!("A {} [{}] {}", a.id, a.source, a.title),
        format!("B {} [{}] {}", b.id, b.source, b.title),
    ];
    if a.id == b.id {
        lines.push("verdict: the same item".to_owned());
        return Ok(lines);
    }
    let grouped = a.story == b.story;
    let mut links = Vec::new();
    if grouped {
        for (member, link) in store.story_links(a.story)? {
            if member == a.id || member == b.id {
                let who = if member == a.id { "A" } else { "B" };
                lines.push(match &link {
                    None => format!("{who} leads the story group"),
                    Some(l) => format!("{who} joined the group {}", how_joined(l)),
                });
                links.push((member, link));
            }
        }
    }
    if a.source == b.source {
        lines.push("same source: items of one source are never merged (different GUIDs are different items)".to_owned());
    }
    let same_url = matches!((&a.canonical_url, &b.canonical_url), (Some(x), Some(y)) if x == y);
    match (&a.canonical_url, &b.canonical_url) {
        (Some(x), Some(y)) if x == y => lines.push(format!("same canonical URL: {x}")),
        (Some(x), Some(y)) => lines.push(format!("different canonical URLs: {x} / {y}")),
        _ => lines.push("at least one has no URL".to_owned()),
    }
    lines.push(format!(
        "published {} h apart (window {} h): {}",
        (a.published - b.published).abs().num_hours(),
        window(config).num_hours(),
        if within_window(a.published, b.published, config) {
            "within"
        } else {
            "outside"
        }
    ));
    let stats = store.ingest_guard();
    let compared = compare(store, a, b, config, &stats)?;
    for (who, indexed) in [("A", compared.indexed.0), ("B", compared.indexed.1)] {
        if !indexed {
            lines.push(format!(
                "{who} is not in the text index (published more than dedup.index_age = {} ago, it is matched by link only); its fingerprint is computed from the stored item",
                humantime::format_duration(config.index_age)
            ));
        }
    }
    let (fa, fb, s) = (
        &compared.fingerprints.0,
        &compared.fingerprints.1,
        &compared.similarity,
    );
    let text = s.verdict(config.threshold, config.meaning_threshold);
    lines.push(format!(
        "similarity: titles {:.2}, title and lead {:.2}{}, score {:.2} (threshold {:.2}; titles below {MIN_TITLE_SIMILARITY:.2} never merge)",
        s.title,
        s.text,
        match s.conflict {
            Some(Conflict::Numbers) => format!(", refused: {}", Conflict::Numbers),
            Some(conflict) => format!(", halved: {conflict}"),
            None => String::new(),
        },
        s.score,
        config.threshold
    ));
    lines.push(match (s.meaning, &config.model) {
        (Some(m), _) => format!(
            "meaning: {m:.3} (dedup.meaning_threshold {:.4}){}",
            config.meaning_threshold,
            if m < config.meaning_threshold {
                ": below"
            } else if text == TextVerdict::Numbers {
                ": reached, but the titles disagree on a number or version"
            } else {
                ": reached, enough on its own"
            }
        ),
        (None, None) => "meaning: not compared (no dedup.model)".to_owned(),
        (None, Some(_)) => {
            "meaning: not compared (an item was indexed before dedup.model was set)".to_owned()
        }
    });
    let keys_a = fa.key_terms(&stats);
    let shared = fb
        .key_terms(&stats)
        .iter()
        .filter(|x| keys_a.contains(x))
        .count();
    let close_in_meaning = s.meaning.is_some_and(|m| m >= config.meaning_threshold);
    let candidates = shared > 0 || close_in_meaning;
    lines.push(format!(
        "key terms shared: {shared} of {} ({})",
        keys_a.len(),
        if shared > 0 {
            "they are compared"
        } else if close_in_meaning {
            "they are compared by meaning, among the recent items held in memory"
        } else {
            "they are never compared"
        }
    ));
    drop(stats);
    lines.push(if grouped {
        format!(
            "verdict: one story: {}",
            joined_because(a, b, &links, config.threshold)
        )
    } else {
        let matched = matches!(
            compared.judgement,
            Judgement::Text(TextVerdict::Words | TextVerdict::Meaning)
        ) && candidates;
        let taken = if matched {
            report_held_instead(store, a, b)?
        } else {
            None
        };
        let reason = match taken {
            Some((story, source, report)) => format!(
                "their texts match, but {story}'s story holds another report of {source}'s source, closer to it or there first: {} {}",
                report.id, report.title
            ),
            None => apart_because(compared.judgement, same_url, candidates, config),
        };
        format!("verdict: two stories: {reason}")
    });
    Ok(lines)
}

/// The report that B's story holds of A's source (or A's story of B's), which kept the two
/// apart: ("B", "A", that report) or ("A", "B", that report).
fn report_held_instead(
    store: &Store,
    a: &Item,
    b: &Item,
) -> Result<Option<(&'static str, &'static str, Item)>, StoreError> {
    if let Some(report) = report_of_source_in_story(store, b.story, &a.source)? {
        return Ok(Some(("B", "A", report)));
    }
    Ok(report_of_source_in_story(store, a.story, &b.source)?.map(|r| ("A", "B", r)))
}

/// A member of `story` from `source`, if it has one (a story holds one report per source).
fn report_of_source_in_story(
    store: &Store,
    story: ItemId,
    source: &str,
) -> Result<Option<Item>, StoreError> {
    for member in store.story_members(story)? {
        if let Some(item) = store.item(member)?.filter(|i| i.source == source) {
            return Ok(Some(item));
        }
    }
    Ok(None)
}

/// Two stored items as the planner compares them.
struct Compared {
    /// Their fingerprints: the indexed ones, or computed from the stored items.
    fingerprints: (Fingerprint, Fingerprint),
    /// Whether each is in the text index.
    indexed: (bool, bool),
    similarity: Similarity,
    /// The planner's verdict on the two ([`judge`]).
    judgement: Judgement,
}

/// Compares stored items `a` and `b` as planning did: their indexed fingerprints (an item
/// past `dedup.index_age` has none, and gets one from its stored text) and [`judge`].
fn compare(
    store: &Store,
    a: &Item,
    b: &Item,
    config: &DedupConfig,
    stats: &TermStats,
) -> Result<Compared, StoreError> {
    let fingerprint_of = |item: &Item| -> Result<(Fingerprint, bool), StoreError> {
        if let Some(record) = store.fingerprint(item.id)? {
            return Ok((record.fingerprint, true));
        }
        let mut fingerprint = item_fingerprint(item, stats);
        fingerprint.meaning = item_meaning(config.model.as_ref(), item);
        Ok((fingerprint, false))
    };
    let ((fa, ia), (fb, ib)) = (fingerprint_of(a)?, fingerprint_of(b)?);
    let similarity = fa.similarity(&fb, stats);
    let judgement = judge(side(a, ia), side(b, ib), &similarity, config);
    Ok(Compared {
        fingerprints: (fa, fb),
        indexed: (ia, ib),
        similarity,
        judgement,
    })
}

/// How a member joined its story, as `why` says it.
fn how_joined(link: &StoryLink) -> String {
    let meaning = link
        .meaning
        .map_or(String::new(), |m| format!(", meaning {m:.3}"));
    match link.kind {
        MergeKind::Url => format!("by the same canonical URL with {}", link.with),
        MergeKind::Text => format!(
            "by similar text with {} (score {:.2}{meaning})",
            link.with, link.score
        ),
        MergeKind::Through => format!(
            "through {}, a later report that matched both stories (score {:.2}{meaning})",
            link.with, link.score
        ),
    }
}

/// Why two members of one story are in it: directly by one's link to the other, or through
/// the other members.
fn joined_because(
    a: &Item,
    b: &Item,
    links: &[(ItemId, Option<StoryLink>)],
    threshold: f32,
) -> String {
    let direct = links.iter().find_map(|(member, link)| {
        let (who, other) = if *member == a.id {
            ("A", b.id)
        } else {
            ("B", a.id)
        };
        link.filter(|l| l.with == other).map(|l| (who, l))
    });
    if let Some((who, link)) = direct {
        let other = if who == "A" { "B" } else { "A" };
        return match link.kind {
            MergeKind::Url => "merged by link".to_owned(),
            MergeKind::Text if link.score < threshold => format!(
                "merged by meaning ({:.3}; the words scored {:.2})",
                link.meaning.unwrap_or(0.0),
                link.score
            ),
            MergeKind::Text => format!("merged by words (score {:.2})", link.score),
            MergeKind::Through => format!(
                "merged through a linking item: {other} matched {who}'s story when it joined"
            ),
        };
    }
    if links
        .iter()
        .any(|(_, l)| l.is_some_and(|l| l.kind == MergeKind::Through))
    {
        return "merged through a linking item (see the lines above)".to_owned();
    }
    "each matched another member of the story (see the lines above)".to_owned()
}

/// A stored item as [`judge`] sees it.
fn side(item: &Item, indexed: bool) -> Side<'_> {
    Side {
        source: &item.source,
        published: item.published,
        indexed,
    }
}

/// Why two items are two stories: the planner's [`Judgement`], with what it leaves to others
/// (a shared link, which the URL claims decide; whether they were `candidates` at all).
fn apart_because(
    judgement: Judgement,
    same_url: bool,
    candidates: bool,
    config: &DedupConfig,
) -> String {
    match judgement {
        Judgement::SameSource => "refused: the same source".to_owned(),
        _ if same_url => "the same link, but one of them was already in a story with an item of the other's source".to_owned(),
        Judgement::OutsideWindow => format!(
            "outside dedup.window ({})",
            humantime::format_duration(config.window)
        ),
        Judgement::PastIndexAge { a, b } => format!(
            "{} past dedup.index_age, matched by link only",
            match (a, b) {
                (true, true) => "A and B",
                (true, false) => "A",
                _ => "B",
            }
        ),
        Judgement::Disabled => "dedup.enabled is false: only links merge".to_owned(),
        Judgement::Text(TextVerdict::Numbers) => {
            "refused: the titles disagree on a number or version".to_owned()
        }
        Judgement::Text(TextVerdict::TitlesApart) => format!(
            "the titles share too little (below {MIN_TITLE_SIMILARITY:.2})"
        ),
        Judgement::Text(TextVerdict::Below) => {
            "the score and the meaning are below their thresholds".to_owned()
        }
        Judgement::Text(TextVerdict::Words | TextVerdict::Meaning) if !candidates => {
            "their texts match, but no key term in common made them candidates".to_owned()
        }
        Judgement::Text(TextVerdict::Words | TextVerdict::Meaning) => "their texts match, but joining would have put two items of one source in one story (or one was stored before the other could be compared)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Entry;
    use std::collections::HashSet;

    /// Stores two sources' items (pairs of one story, or apart for each reason the planner
    /// has) as polls do, and the stored items of each source.
    fn polled(config: &DedupConfig) -> (tempfile::TempDir, Store, Vec<Item>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("store")).expect("store");
        let now = Utc::now();
        let entry = |title: &str, hours_ago: i64, guid: &str| Entry {
            guid: Some(guid.to_owned()),
            title: title.to_owned(),
            summary_html: Some(format!("<p>{title}, the company said on Monday.</p>")),
            published: Some(now - chrono::Duration::hours(hours_ago)),
            ..Default::default()
        };
        let loomstack = "Loomstack cuts 300 jobs in a restructuring of its cloud unit";
        let kettleford = "Kettleford opens its new harbour bridge to traffic";
        let quarry = "Quarryside council approves the budget for its tram line";
        let pellucid = "Pellucid releases the Vela compiler under an open licence";
        let a = vec![
            entry(loomstack, 1, "a1"),
            entry("Brightwave launches Orion 2 satellite into orbit", 2, "a2"),
            entry(kettleford, 5 * 24, "a3"),
            entry(quarry, 40 * 24, "a4"),
            entry(pellucid, 3, "a5"),
            entry(pellucid, 4, "a6"),
        ];
        let b = vec![
            entry(loomstack, 2, "b1"),
            entry("Brightwave launches Orion 3 satellite into orbit", 1, "b2"),
            entry(kettleford, 1, "b3"),
            entry(quarry, 40 * 24 + 1, "b4"),
            entry(
                "Garnet Street bakery wins the regional bread award",
                2,
                "b5",
            ),
        ];
        let mut items = Vec::new();
        for (source, entries) in [("a", a), ("b", b)] {
            let count = entries.len();
            let mut stats = store.ingest_guard();
            let planned =
                super::super::plan(&store, source, entries, now, config, &mut stats).expect("plan");
            store
                .apply_poll(source, &planned, &[], &[], &Default::default(), stats)
                .expect("apply");
            items.extend(store.source_items(source, count).expect("items"));
        }
        (dir, store, items)
    }

    /// `why` gives the planner's own reasons: for every pair of stored items, the
    /// [`Judgement`] it reports says one story exactly when planning made them one, and
    /// each reason the planner has is met.
    #[test]
    fn why_and_the_planner_agree_on_every_pair() {
        let enabled = DedupConfig::default();
        let disabled = DedupConfig {
            enabled: false,
            ..DedupConfig::default()
        };
        let mut seen = HashSet::new();
        for config in [enabled, disabled] {
            let (_dir, store, items) = polled(&config);
            assert_eq!(items.len(), 11);
            let stats = store.ingest_guard();
            for (i, a) in items.iter().enumerate() {
                for b in &items[i + 1..] {
                    let judgement = compare(&store, a, b, &config, &stats)
                        .expect("compare")
                        .judgement;
                    assert_eq!(
                        judgement.same_story(),
                        a.story == b.story,
                        "{} / {}: {judgement:?}",
                        a.title,
                        b.title
                    );
                    seen.insert(format!("{judgement:?}"));
                }
            }
        }
        for expected in [
            "SameSource",
            "OutsideWindow",
            "PastIndexAge { a: true, b: true }",
            "Disabled",
            "Text(Words)",
            "Text(Numbers)",
        ] {
            assert!(seen.contains(expected), "{expected} not met: {seen:?}");
        }
    }
}
