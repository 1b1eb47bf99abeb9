//! Story fingerprints: what two reports of the same story have in common, as numbers.
//!
//! A title is normalised (NFKC, case folding, a site's prefix like 【独家】 or "Exclusive:" and
//! suffix like " | 量子位" removed), and its numbers and dates are written one way ("100 万",
//! "1M" and "一百万" alike; see the `numbers` module). Title and the lead of the body are cut
//! into terms: Latin words (stopwords dropped, stemmed: "predicts", "predicting" → "predict")
//! and pairs of adjacent Chinese, Japanese or Korean characters. Two items are compared by
//! the cosine similarity of their terms, each weighted by how often it occurs and by how rare
//! it is among stored items (inverse document frequency from [`TermStats`]): a shared model or
//! company name counts for much, a shared "发布" or "AI" for little, and a site's standard
//! lead-in, which all its items carry, for almost nothing. Titles that share a template but
//! swap a word or a name (耳机/手机, Loopwise/Tidewell with the rest alike) have their score
//! halved ([`Conflict`]), unless their leads agree (a repost that rewords its title); titles
//! that each have a number or version the other lacks (11月5日/11月6日, DeepSeek V2/V3) are
//! never one story.
//!
//! A fingerprint keeps its [`MAX_TERMS`] strongest terms; its [`KEY_TERMS`] strongest are its
//! index keys, so a new item is compared with the items that share a rare term, never with
//! the whole store.
//!
//! Pure functions only; the index lives in the store. Here: fingerprints and how two compare;
//! beside it `terms` (cutting text into terms) and `stats` ([`TermStats`]).

use serde::{Deserialize, Serialize};

use super::meaning::Meaning;
use super::numbers::canonical_numbers;
use crate::text::{is_cjk, matching_form};

mod stats;
mod terms;
pub use stats::TermStats;
pub use terms::clean_title;
use terms::*;

/// The version of the way text is cut into terms. A store whose text index was built with
/// another has it re-derived at start (`dedup::upkeep::upgrade_text_index`). 2: numbers and dates
/// in one form, English words stemmed. 3: versions of names among a title's numbers, numbers
/// out of its template terms, "2-million" a number.
pub const TERMS_VERSION: u32 = 3;
/// Terms kept of an item (the strongest by weight).
pub const MAX_TERMS: usize = 64;
/// Terms of an item that key it in the candidate index.
pub const KEY_TERMS: usize = 6;
/// Characters of body text that count (the lead, where reposts agree most).
pub(crate) const BODY_CHARS: usize = 600;
/// Below this title similarity two items never merge, whatever their bodies share: a common
/// boilerplate paragraph must not make unrelated stories one.
pub const MIN_TITLE_SIMILARITY: f32 = 0.1;
/// How much a template swap of a word or a name between two titles weighs on the score.
const CONFLICT_FACTOR: f32 = 0.5;
/// Lead similarity from which a swapped rare name in the titles is taken for rewording, not
/// another story.
const LEADS_AGREE: f32 = 0.8;
/// Lead similarity from which a few swapped title words are taken for rewording: lower than
/// for a name, since a swapped common word ("推出" / "上线", "releases" / "is out") says
/// less than a swapped name. Chosen on the tuning pairs: the highest value with the best
/// recall there (0.45–0.55 tie), at no wrong merge.
const WORD_SWAP_FORGIVEN: f32 = 0.55;
/// Share of title terms in common from which two titles count as one template.
const TEMPLATE_OVERLAP: f32 = 0.5;
/// A term at least this fraction of the highest possible idf counts as a rare name.
const RARE_FRACTION: f32 = 0.8;
/// Count-min sketch of document frequencies: rows × columns of u32 counters.
const SKETCH_ROWS: usize = 2;
const SKETCH_COLUMNS: usize = 1 << 17;

/// One term of an item: its hash and how often it occurs in the title and in the body lead.
///
/// Packed to 6 bytes (8 aligned): an item keeps up to [`MAX_TERMS`] of them, most of what a
/// fingerprint in the store's in-memory recent index costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(C, packed(2))]
pub struct Term {
    pub hash: u32,
    pub in_title: u8,
    pub in_body: u8,
}
const _: () = assert!(std::mem::size_of::<Term>() == 6);

/// The numbers kept of one item's text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Hashes of the title's terms, sorted, without repeats (for template swaps).
    pub title: Vec<u32>,
    /// The numbers and versions in the title (hashed), sorted: two titles that each have one
    /// the other lacks ("11月5日" / "11月6日", "Part 1" / "Part 2", "DeepSeek V2" /
    /// "DeepSeek V3") are different stories.
    pub numbers: Vec<u32>,
    /// Title and body terms, sorted by hash; at most [`MAX_TERMS`] once trimmed.
    pub terms: Vec<Term>,
    /// What the title and lead mean, when `dedup.model` is set (see [`super::meaning`]).
    pub meaning: Option<Meaning>,
}

/// Why two titles look like one template told of two stories: such a pair has its score
/// halved, or, for numbers and versions, is never one story.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// Each title has a number or version the other lacks ("11月5日" / "11月6日", "Part 1" /
    /// "Part 2", "Qwen2.5" / "Qwen3"): never one story.
    Numbers,
    /// One to three words swapped ("第十批" / "第十一批", "耳机" / "手机") while the leads do
    /// not confirm each other.
    Word,
    /// A rare name swapped that the other item never mentions ("Loopwise" / "Tidewell")
    /// while the leads do not confirm each other.
    Name,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conflict::Numbers => "each title has a number or version the other lacks",
            Conflict::Word => "the titles swap a few words of one template",
            Conflict::Name => "the titles swap a rare name the other item never mentions",
        })
    }
}

/// How alike two fingerprints are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    /// Weighted cosine similarity of the titles' terms.
    pub title: f32,
    /// Weighted cosine similarity of the body leads' terms.
    pub body: f32,
    /// Weighted cosine similarity of all terms (title and body lead).
    pub text: f32,
    /// What makes the titles look like one template told of two stories, if anything.
    pub conflict: Option<Conflict>,
    /// The combined score compared with `dedup.threshold`.
    pub score: f32,
    /// Cosine similarity of the two items' meanings, when both have one.
    pub meaning: Option<f32>,
}

/// What two items' texts say about them: one story by words or by meaning, or why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextVerdict {
    /// The score reaches `dedup.threshold`.
    Words,
    /// The score does not, the meanings reach `dedup.meaning_threshold`.
    Meaning,
    /// The titles disagree on a number or a version: never one story.
    Numbers,
    /// The titles share less than [`MIN_TITLE_SIMILARITY`] and the meanings do not agree.
    TitlesApart,
    /// Neither the score nor the meanings reach their threshold.
    Below,
}

impl TextVerdict {
    /// Whether the texts make the two items one story.
    pub fn same_story(self) -> bool {
        matches!(self, TextVerdict::Words | TextVerdict::Meaning)
    }
}

impl Similarity {
    /// What the texts say: one story when their words agree (`score` reaches `threshold`),
    /// or their meanings agree (reaching `meaning_threshold`); never when the titles disagree
    /// on a number or version. A swapped word or name does not veto meaning: the model reads
    /// the whole title and lead, so a different product or company already lowers it.
    pub fn verdict(&self, threshold: f32, meaning_threshold: f32) -> TextVerdict {
        if self.conflict == Some(Conflict::Numbers) {
            TextVerdict::Numbers
        } else if self.score >= threshold {
            TextVerdict::Words
        } else if self.meaning.is_some_and(|m| m >= meaning_threshold) {
            TextVerdict::Meaning
        } else if self.title < MIN_TITLE_SIMILARITY {
            TextVerdict::TitlesApart
        } else {
            TextVerdict::Below
        }
    }

    /// Whether the two items are one story by their texts ([`Similarity::verdict`]).
    pub fn same_story(&self, threshold: f32, meaning_threshold: f32) -> bool {
        self.verdict(threshold, meaning_threshold).same_story()
    }
}

impl Fingerprint {
    /// Every term of the title and the body's lead; see [`Fingerprint::keep_strongest`].
    pub fn new(title: &str, body_text: &str) -> Fingerprint {
        let cleaned = clean_title(title);
        let cleaned = canonical_numbers(&cleaned);
        let title_terms = terms(&cleaned);
        let mut numbers = Vec::new();
        let mut numbered_words = Vec::new();
        for token in tokens(&cleaned) {
            if let Token::Word(w) = token {
                if let Some(number) = number_or_version(w) {
                    numbers.push(short(hash_str(&number)));
                    numbered_words.push(short(hash_str(&stem(w))));
                }
            }
        }
        numbers.sort_unstable();
        numbers.dedup();
        let lead: String = body_text.chars().take(BODY_CHARS).collect();
        let lead = matching_form(&lead);
        let lead = canonical_numbers(&lead);
        let body_terms = terms(&lead);

        let mut counts: std::collections::BTreeMap<u32, (u8, u8)> = Default::default();
        for h in &title_terms {
            let c = counts.entry(*h).or_default();
            c.0 = c.0.saturating_add(1);
        }
        for h in &body_terms {
            let c = counts.entry(*h).or_default();
            c.1 = c.1.saturating_add(1);
        }
        // Numbers and versions are compared on their own (`numbers`), not as swapped words: a
        // number only one title has ("Claude 6 …" / "Claude …") is no template swap.
        let mut title: Vec<u32> = title_terms
            .into_iter()
            .filter(|h| !numbered_words.contains(h))
            .collect();
        title.sort_unstable();
        title.dedup();
        Fingerprint {
            title,
            numbers,
            meaning: None,
            terms: counts
                .into_iter()
                .map(|(hash, (in_title, in_body))| Term {
                    hash,
                    in_title,
                    in_body,
                })
                .collect(),
        }
    }

    /// Keeps the [`MAX_TERMS`] terms that weigh most with today's statistics.
    pub fn keep_strongest(&mut self, stats: &TermStats) {
        if self.terms.len() <= MAX_TERMS {
            return;
        }
        let mut ranked = self.ranked(stats, MAX_TERMS);
        ranked.sort_unstable_by_key(|t| t.hash);
        self.terms = ranked;
    }

    /// The `n` heaviest terms, heaviest first (ties by hash, so the choice is stable). Each
    /// term's weight is computed once.
    fn ranked(&self, stats: &TermStats, n: usize) -> Vec<Term> {
        let mut weighted: Vec<(f32, Term)> =
            self.terms.iter().map(|t| (weight(t, stats), *t)).collect();
        let heavier = |a: &(f32, Term), b: &(f32, Term)| {
            b.0.total_cmp(&a.0).then({ a.1.hash }.cmp(&{ b.1.hash }))
        };
        if weighted.len() > n {
            weighted.select_nth_unstable_by(n, heavier);
            weighted.truncate(n);
        }
        weighted.sort_unstable_by(heavier);
        weighted.into_iter().map(|(_, t)| t).collect()
    }

    /// The index keys: the [`KEY_TERMS`] heaviest terms.
    pub fn key_terms(&self, stats: &TermStats) -> Vec<u32> {
        self.ranked(stats, KEY_TERMS)
            .into_iter()
            .map(|t| t.hash)
            .collect()
    }

    /// Whether the titles are one template (half their terms or more in common) in which
    /// each names something rare that the other item never mentions: "摩尔线程上市首日大涨" /
    /// "沐曦上市首日大涨", "Loopwise raises $30M" / "Tidewell raises $30M".
    fn swaps_a_name(&self, other: &Fingerprint, stats: &TermStats) -> bool {
        if overlap(&self.title, &other.title) < TEMPLATE_OVERLAP {
            return false;
        }
        let rare = RARE_FRACTION * stats.max_idf();
        let names_alone = |a: &Fingerprint, b: &Fingerprint| {
            a.terms.iter().any(|t| {
                let hash = t.hash;
                a.title.binary_search(&hash).is_ok()
                    && stats.idf(hash) >= rare
                    && b.title.binary_search(&hash).is_err()
                    && b.terms.binary_search_by_key(&hash, |u| u.hash).is_err()
            })
        };
        names_alone(self, other) && names_alone(other, self)
    }

    /// Whether each title has a number the other lacks.
    fn numbers_conflict(&self, other: &Fingerprint) -> bool {
        let extra = |a: &[u32], b: &[u32]| a.iter().any(|n| b.binary_search(n).is_err());
        extra(&self.numbers, &other.numbers) && extra(&other.numbers, &self.numbers)
    }

    pub fn similarity(&self, other: &Fingerprint, stats: &TermStats) -> Similarity {
        self.weigh(stats).similarity(&other.weigh(stats), stats)
    }

    /// The fingerprint with each term's rarity looked up once, for comparing with many.
    pub fn weigh(&self, stats: &TermStats) -> Weighted<'_> {
        let idf: Vec<f32> = self.terms.iter().map(|t| stats.idf(t.hash)).collect();
        let norm = |count: fn(&Term) -> f32| {
            self.terms
                .iter()
                .zip(&idf)
                .map(|(t, w)| (count(t) * w).powi(2))
                .sum::<f32>()
                .sqrt()
        };
        Weighted {
            title_norm: norm(title_count),
            body_norm: norm(body_count),
            text_norm: norm(text_count),
            fingerprint: self,
            idf,
        }
    }
}

/// A fingerprint with its terms' idf and its norms, under one [`TermStats`].
pub struct Weighted<'a> {
    fingerprint: &'a Fingerprint,
    idf: Vec<f32>,
    title_norm: f32,
    body_norm: f32,
    text_norm: f32,
}

impl Weighted<'_> {
    pub fn similarity(&self, other: &Weighted<'_>, stats: &TermStats) -> Similarity {
        let (a, b) = (self.fingerprint, other.fingerprint);
        let (title_dot, body_dot, text_dot) = self.dots(other);
        let cosine = |dot: f32, na: f32, nb: f32| {
            if na == 0.0 || nb == 0.0 {
                0.0
            } else {
                (dot / (na * nb)).min(1.0)
            }
        };
        let title = cosine(title_dot, self.title_norm, other.title_norm);
        let text = cosine(text_dot, self.text_norm, other.text_norm);
        let body = cosine(body_dot, self.body_norm, other.body_norm);
        // A number each title lacks always conflicts; a swapped word or name only while the
        // leads do not confirm each other (reposts reword titles around one shared lead).
        let conflict = if a.numbers_conflict(b) {
            Some(Conflict::Numbers)
        } else if body < WORD_SWAP_FORGIVEN && substitution(&a.title, &b.title) {
            Some(Conflict::Word)
        } else if body < LEADS_AGREE && a.swaps_a_name(b, stats) {
            Some(Conflict::Name)
        } else {
            None
        };
        let score = if title < MIN_TITLE_SIMILARITY || conflict == Some(Conflict::Numbers) {
            0.0
        } else if conflict.is_some() {
            text * CONFLICT_FACTOR
        } else {
            text
        };
        let meaning = match (&a.meaning, &b.meaning) {
            (Some(x), Some(y)) => x.cosine(y),
            _ => None,
        };
        Similarity {
            title,
            body,
            text,
            conflict,
            score,
            meaning,
        }
    }

    /// Dot products of the title, body and text weights (terms are hash-sorted).
    fn dots(&self, other: &Weighted<'_>) -> (f32, f32, f32) {
        let (a, b) = (&self.fingerprint.terms, &other.fingerprint.terms);
        let (mut i, mut j) = (0, 0);
        let (mut title, mut body, mut text) = (0.0f32, 0.0f32, 0.0f32);
        while i < a.len() && j < b.len() {
            match { a[i].hash }.cmp(&{ b[j].hash }) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    let idf2 = self.idf[i] * other.idf[j];
                    title += title_count(&a[i]) * title_count(&b[j]) * idf2;
                    body += body_count(&a[i]) * body_count(&b[j]) * idf2;
                    text += text_count(&a[i]) * text_count(&b[j]) * idf2;
                    i += 1;
                    j += 1;
                }
            }
        }
        (title, body, text)
    }
}

fn title_count(t: &Term) -> f32 {
    f32::from(t.in_title)
}

fn body_count(t: &Term) -> f32 {
    f32::from(t.in_body)
}

fn text_count(t: &Term) -> f32 {
    f32::from(t.in_title) + f32::from(t.in_body)
}

/// A term's weight in an item: occurrences (title and body lead) times rarity.
fn weight(term: &Term, stats: &TermStats) -> f32 {
    text_count(term) * stats.idf(term.hash)
}

/// Jaccard similarity of two sorted sets.
fn overlap(a: &[u32], b: &[u32]) -> f32 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let shared = a.iter().filter(|h| b.binary_search(h).is_ok()).count();
    shared as f32 / (a.len() + b.len() - shared) as f32
}

/// Whether two titles are one template with a word swapped ("…（上）" / "…（下）", "第十批" /
/// "第十一批", "AI 耳机项目" / "AI 手机项目"): each has one to three shingles the other lacks.
/// Reposts of one story add or drop words (a prefix, a clause) rather than swap a few.
fn substitution(a: &[u32], b: &[u32]) -> bool {
    let only = |x: &[u32], y: &[u32]| x.iter().filter(|h| y.binary_search(h).is_err()).count();
    let (only_a, only_b) = (only(a, b), only(b, a));
    (1..=3).contains(&only_a) && (1..=3).contains(&only_b)
}

#[cfg(test)]
mod tests;
