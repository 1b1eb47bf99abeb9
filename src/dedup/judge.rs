//! The planner's one rule for a pair of items of different stories: whether their texts make
//! them one story, or the first reason they are not ([`Judgement`]). [`matches`](super::matches)
//! applies it to each candidate of a new item, and `feedmux why` gives it as its reason, so
//! the two cannot drift apart.

use super::*;

/// One item of a pair that [`judge`] decides on: what counts besides its text.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    pub source: &'a str,
    pub published: DateTime<Utc>,
    /// Whether its text is in the text index: an item published more than `dedup.index_age`
    /// ago is not, and is matched by link only.
    pub indexed: bool,
}

/// Whether two items are one story by their texts, or the first reason they are not, in the
/// order planning finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// Items of one source are never one story: different GUIDs are different items.
    SameSource,
    /// They were published further apart than `dedup.window`.
    OutsideWindow,
    /// The first (`a`), the second (`b`) or both are not in the text index.
    PastIndexAge { a: bool, b: bool },
    /// `dedup.enabled` is false: only links merge.
    Disabled,
    /// What their texts say ([`Similarity::verdict`]).
    Text(TextVerdict),
}

impl Judgement {
    /// Whether the two are one story.
    pub fn same_story(self) -> bool {
        matches!(self, Judgement::Text(verdict) if verdict.same_story())
    }
}

/// Whether items `a` and `b`, whose texts compare as `similarity`, are one story by their
/// texts: the planner's one rule for a candidate, and `feedmux why`'s reason. A shared link
/// is decided apart from this (by the URL claims), as is which story a match joins.
pub fn judge(a: Side, b: Side, similarity: &Similarity, config: &DedupConfig) -> Judgement {
    if a.source == b.source {
        Judgement::SameSource
    } else if !within_window(a.published, b.published, config) {
        Judgement::OutsideWindow
    } else if !(a.indexed && b.indexed) {
        Judgement::PastIndexAge {
            a: !a.indexed,
            b: !b.indexed,
        }
    } else if !config.enabled {
        Judgement::Disabled
    } else {
        Judgement::Text(similarity.verdict(config.threshold, config.meaning_threshold))
    }
}

/// Whether two items published at `a` and `b` are at most `dedup.window` apart.
pub(super) fn within_window(a: DateTime<Utc>, b: DateTime<Utc>, config: &DedupConfig) -> bool {
    (a - b).abs() <= window(config)
}

/// `dedup.window` as a signed duration (the longest one if it does not fit).
pub(super) fn window(config: &DedupConfig) -> chrono::Duration {
    chrono::Duration::from_std(config.window).unwrap_or(chrono::Duration::MAX)
}
