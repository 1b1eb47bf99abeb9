//! Explaining dedup to people: which story groups exist and why two items are (not) one story.
//!
//! Read-only views over the store for `feedmux stories` and `feedmux why`; the decisions
//! themselves are made in the parent module and re-derived here with the same functions.

use chrono::{DateTime, Utc};

use super::fingerprint::{Conflict, Fingerprint, TextVerdict, MIN_TITLE_SIMILARITY};
use super::{item_fingerprint, item_meaning, DedupConfig, MergeKind, StoryLink};
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
    let same_source = a.source == b.source;
    if same_source {
        lines.push("same source: items of one source are never merged (different GUIDs are different items)".to_owned());
    }
    let same_url = matches!((&a.canonical_url, &b.canonical_url), (Some(x), Some(y)) if x == y);
    match (&a.canonical_url, &b.canonical_url) {
        (Some(x), Some(y)) if x == y => lines.push(format!("same canonical URL: {x}")),
        (Some(x), Some(y)) => lines.push(format!("different canonical URLs: {x} / {y}")),
        _ => lines.push("at least one has no URL".to_owned()),
    }
    let gap = (a.published - b.published).abs();
    let window = chrono::Duration::from_std(config.window).unwrap_or(chrono::Duration::MAX);
    let within = gap <= window;
    lines.push(format!(
        "published {} h apart (window {} h): {}",
        gap.num_hours(),
        window.num_hours(),
        if within { "within" } else { "outside" }
    ));
    let stats = store.ingest_guard();
    let mut past_index_age = Vec::new();
    let mut fingerprint_of = |item: &Item| -> Result<Fingerprint, StoreError> {
        if let Some(record) = store.fingerprint(item.id)? {
            return Ok(record.fingerprint);
        }
        let who = if item.id == a.id { "A" } else { "B" };
        lines.push(format!(
            "{who} is not in the text index (published more than dedup.index_age = {} ago, it is matched by link only); its fingerprint is computed from the stored item",
            humantime::format_duration(config.index_age)
        ));
        past_index_age.push(who);
        let mut fingerprint = item_fingerprint(item, &stats);
        fingerprint.meaning = item_meaning(config.model.as_ref(), item);
        Ok(fingerprint)
    };
    let (fa, fb) = (fingerprint_of(a)?, fingerprint_of(b)?);
    let s = fa.similarity(&fb, &stats);
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
    let compared = shared > 0 || close_in_meaning;
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
    let facts = Facts {
        same_source,
        same_url,
        within,
        past_index_age,
        text,
        compared,
    };
    lines.push(if grouped {
        format!(
            "verdict: one story: {}",
            joined_because(a, b, &links, config.threshold)
        )
    } else {
        format!("verdict: two stories: {}", apart_because(&facts, config))
    });
    Ok(lines)
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

/// What decides whether two items of different stories could have been one.
struct Facts {
    same_source: bool,
    same_url: bool,
    within: bool,
    past_index_age: Vec<&'static str>,
    text: TextVerdict,
    compared: bool,
}

/// Why two items are two stories, the first reason that planning checks.
fn apart_because(facts: &Facts, config: &DedupConfig) -> String {
    if facts.same_source {
        return "refused: the same source".to_owned();
    }
    if facts.same_url {
        return "the same link, but one of them was already in a story with an item of the other's source".to_owned();
    }
    if !facts.within {
        return format!(
            "outside dedup.window ({})",
            humantime::format_duration(config.window)
        );
    }
    if !facts.past_index_age.is_empty() {
        return format!(
            "{} past dedup.index_age, matched by link only",
            facts.past_index_age.join(" and ")
        );
    }
    if !config.enabled {
        return "dedup.enabled is false: only links merge".to_owned();
    }
    match facts.text {
        TextVerdict::Numbers => "refused: the titles disagree on a number or version".to_owned(),
        TextVerdict::TitlesApart => format!(
            "the titles share too little (below {MIN_TITLE_SIMILARITY:.2})"
        ),
        TextVerdict::Below => "the score and the meaning are below their thresholds".to_owned(),
        TextVerdict::Words | TextVerdict::Meaning if !facts.compared => {
            "their texts match, but no key term in common made them candidates".to_owned()
        }
        TextVerdict::Words | TextVerdict::Meaning => "their texts match, but joining would have put two items of one source in one story (or one was stored before the other could be compared)".to_owned(),
    }
}
