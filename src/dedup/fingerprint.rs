//! Story fingerprints: what two reports of the same story have in common, as numbers.
//!
//! A title is normalised (NFKC, case folding, a site's prefix like 【独家】 or "Exclusive:" and
//! suffix like " | 量子位" removed) and cut into shingles: Latin words (stopwords dropped) and
//! pairs of adjacent Chinese, Japanese or Korean characters. Titles are compared by the exact
//! Jaccard similarity of those sets. The body (summary or content, as text) is cut into word
//! pairs and character pairs and kept as a MinHash signature, whose agreement estimates the
//! bodies' Jaccard similarity. A second, short MinHash of the title feeds the LSH bands that
//! find candidates, so a new item is compared with a handful of items, never the whole store.
//!
//! Pure functions only; the index lives in the store.

use serde::{Deserialize, Serialize};

use crate::text::{is_cjk, matching_form};

/// MinHash values kept of a body (16 bits each).
pub const BODY_HASHES: usize = 64;
/// MinHash values of a title used for banding.
pub const TITLE_HASHES: usize = 16;
/// Rows per LSH band: `TITLE_HASHES / ROWS` bands.
pub const ROWS: usize = 2;
/// Characters of body text that count (the lead, where reposts agree most).
const BODY_CHARS: usize = 600;

const STOPWORDS: &[&str] = &[
    "a", "an", "the", "of", "to", "in", "on", "for", "and", "or", "with", "at", "by", "from", "is",
    "are", "be", "as", "its", "it", "this", "that", "new", "how", "why", "what", "after", "into",
    "about", "over", "says", "say", "will", "now", "has", "have",
];
/// Labels outlets put before a title.
const TITLE_PREFIXES: &[&str] = &[
    "exclusive",
    "breaking",
    "report",
    "reports",
    "update",
    "updated",
    "just in",
    "news",
    "独家",
    "快讯",
    "重磅",
    "突发",
    "最新",
    "速递",
    "首发",
    "热点",
    "深度",
];

/// The numbers kept of one item's text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Hashes of the title's shingles, sorted, without repeats.
    pub title: Vec<u32>,
    /// The numbers in the title (hashed), sorted: two titles that each have a number the
    /// other lacks ("11月5日" / "11月6日", "Part 1" / "Part 2") are different stories.
    #[serde(default)]
    pub numbers: Vec<u32>,
    /// MinHash signature of the body's shingles; empty when the item has no body text.
    pub body: Vec<u16>,
}

/// How alike two fingerprints are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    /// Jaccard similarity of the titles' shingles.
    pub title: f32,
    /// Estimated Jaccard similarity of the bodies, when both have one.
    pub body: Option<f32>,
    /// The combined score compared with `dedup.threshold`.
    pub score: f32,
}

/// Weight of the title in the combined score when both items have a body.
const TITLE_WEIGHT: f32 = 0.6;
/// Below this title similarity, bodies alone never merge two items (a shared boilerplate
/// paragraph must not make unrelated stories one).
pub const MIN_TITLE_SIMILARITY: f32 = 0.2;
/// How much a conflict of numbers between two titles weighs on their score.
const NUMBER_CONFLICT_FACTOR: f32 = 0.5;
/// Shared title shingles below which title similarity is discounted.
const MIN_SHARED: usize = 3;

impl Fingerprint {
    pub fn new(title: &str, body_text: &str) -> Fingerprint {
        // 32-bit shingle hashes: collisions among a title's few dozen shingles are negligible
        // and the stored record stays small.
        let cleaned = clean_title(title);
        let mut numbers: Vec<u32> = tokens(&cleaned)
            .into_iter()
            .filter_map(|t| match t {
                Token::Word(w) if w.chars().all(|c| c.is_ascii_digit()) => {
                    Some((hash_str(w) >> 32) as u32)
                }
                _ => None,
            })
            .collect();
        numbers.sort_unstable();
        numbers.dedup();
        let mut title: Vec<u32> = title_shingles(&cleaned)
            .into_iter()
            .map(|h| (h >> 32) as u32)
            .collect();
        title.sort_unstable();
        title.dedup();
        let body_shingles = body_shingles(body_text);
        Fingerprint {
            body: if body_shingles.is_empty() {
                Vec::new()
            } else {
                minhash(&body_shingles, BODY_HASHES, 0x5EED_0002)
                    .into_iter()
                    .map(|v| (v >> 16) as u16)
                    .collect()
            },
            title,
            numbers,
        }
    }

    /// Whether each title has a number the other lacks.
    fn numbers_conflict(&self, other: &Fingerprint) -> bool {
        let extra = |a: &[u32], b: &[u32]| a.iter().any(|n| b.binary_search(n).is_err());
        extra(&self.numbers, &other.numbers) && extra(&other.numbers, &self.numbers)
    }

    /// LSH band keys of the title: items sharing any band are candidates.
    pub fn bands(&self) -> Vec<u64> {
        if self.title.is_empty() {
            return Vec::new();
        }
        let shingles: Vec<u64> = self.title.iter().map(|h| u64::from(*h)).collect();
        minhash(&shingles, TITLE_HASHES, 0x5EED_0001)
            .chunks(ROWS)
            .enumerate()
            .map(|(i, rows)| {
                let mut h = 0xB4D5_u64 ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                for r in rows {
                    h = mix(h ^ u64::from(*r));
                }
                h
            })
            .collect()
    }

    pub fn similarity(&self, other: &Fingerprint) -> Similarity {
        let (jaccard, shared) = jaccard(&self.title, &other.title);
        // Two titles that share only a word or two ("item 0" / "item 1") say little, whatever
        // their Jaccard similarity: below MIN_SHARED shared shingles it is scaled down.
        let title = if self.title == other.title || shared >= MIN_SHARED {
            jaccard
        } else {
            jaccard * shared as f32 / MIN_SHARED as f32
        };
        let body = (!self.body.is_empty() && self.body.len() == other.body.len()).then(|| {
            let same = self
                .body
                .iter()
                .zip(&other.body)
                .filter(|(a, b)| a == b)
                .count();
            same as f32 / self.body.len() as f32
        });
        let mut score = match body {
            Some(b) if title >= MIN_TITLE_SIMILARITY => {
                (TITLE_WEIGHT * title + (1.0 - TITLE_WEIGHT) * b).max(title)
            }
            _ => title,
        };
        if self.numbers_conflict(other) || substitution(&self.title, &other.title) {
            score *= NUMBER_CONFLICT_FACTOR;
        }
        Similarity { title, body, score }
    }
}

/// Whether two titles are one template with a word swapped ("…（上）" / "…（下）", "第十批" /
/// "第十一批", "AI 耳机项目" / "AI 手机项目"): each has one to three shingles the other lacks.
/// Reposts of one story add or drop words (a prefix, a clause) rather than swap a few.
fn substitution(a: &[u32], b: &[u32]) -> bool {
    let only = |x: &[u32], y: &[u32]| x.iter().filter(|h| y.binary_search(h).is_err()).count();
    let (only_a, only_b) = (only(a, b), only(b, a));
    (1..=3).contains(&only_a) && (1..=3).contains(&only_b)
}

/// Jaccard similarity of two sorted sets, and the size of their intersection.
fn jaccard(a: &[u32], b: &[u32]) -> (f32, usize) {
    if a.is_empty() || b.is_empty() {
        return (0.0, 0);
    }
    let (mut i, mut j, mut both) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                both += 1;
                i += 1;
                j += 1;
            }
        }
    }
    (both as f32 / (a.len() + b.len() - both) as f32, both)
}

/// The title without the labels outlets add around it, in matching form.
pub fn clean_title(title: &str) -> String {
    let mut t = matching_form(title).trim().to_owned();
    // 【独家】, [快讯], (updated) at the start.
    loop {
        let before = t.clone();
        for (open, close) in [
            ('【', '】'),
            ('[', ']'),
            ('(', ')'),
            ('〔', '〕'),
            ('「', '」'),
        ] {
            if let Some(rest) = t.strip_prefix(open) {
                if let Some(end) = rest.find(close) {
                    if rest[..end].chars().count() <= 8 {
                        t = rest[end + close.len_utf8()..].trim().to_owned();
                    }
                }
            }
        }
        for prefix in TITLE_PREFIXES {
            if let Some(rest) = t.strip_prefix(prefix) {
                let rest = rest.trim_start();
                if let Some(rest) = rest
                    .strip_prefix(':')
                    .or_else(|| rest.strip_prefix('!'))
                    .or_else(|| rest.strip_prefix('|'))
                    .or_else(|| rest.strip_prefix('-'))
                {
                    t = rest.trim().to_owned();
                }
            }
        }
        if t == before {
            break;
        }
    }
    // " | 量子位", " - The Verge", " — TechCrunch" at the end.
    for sep in [" | ", " - ", " — ", " – ", "|", "丨"] {
        if let Some(at) = t.rfind(sep) {
            let tail = &t[at + sep.len()..];
            // A site name, not a date or an issue number.
            let site_like = !tail.chars().any(|c| c.is_ascii_digit());
            if site_like && !tail.is_empty() && tail.chars().count() <= 20 && at > 0 {
                t = t[..at].trim().to_owned();
                break;
            }
        }
    }
    t
}

/// Words (Latin letters and digits) and single CJK characters, in order.
fn tokens(text: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut word_start = None;
    for (i, c) in text.char_indices() {
        if is_cjk(c) {
            if let Some(s) = word_start.take() {
                out.push(Token::Word(&text[s..i]));
            }
            out.push(Token::Cjk(c));
        } else if c.is_alphanumeric() {
            word_start.get_or_insert(i);
        } else if let Some(s) = word_start.take() {
            out.push(Token::Word(&text[s..i]));
        }
    }
    if let Some(s) = word_start {
        out.push(Token::Word(&text[s..]));
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Token<'a> {
    Word(&'a str),
    Cjk(char),
}

/// Title shingles: each Latin word that is not a stopword, each pair of adjacent CJK
/// characters (a lone CJK character counts alone).
fn title_shingles(title: &str) -> Vec<u64> {
    let toks = tokens(title);
    let mut out = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        match t {
            Token::Word(w) if !STOPWORDS.contains(w) => out.push(hash_str(w)),
            Token::Word(_) => {}
            Token::Cjk(c) => match toks.get(i + 1) {
                Some(Token::Cjk(d)) => out.push(hash_pair(*c, *d)),
                _ => {
                    let lone = i == 0 || !matches!(toks[i - 1], Token::Cjk(_));
                    if lone {
                        out.push(hash_pair(*c, ' '));
                    }
                }
            },
        }
    }
    out
}

/// Body shingles of the lead: pairs of adjacent words, pairs of adjacent CJK characters.
fn body_shingles(body: &str) -> Vec<u64> {
    let folded = matching_form(body);
    let lead: String = folded.chars().take(BODY_CHARS).collect();
    let toks = tokens(&lead);
    let mut out: Vec<u64> = toks
        .windows(2)
        .filter_map(|w| match (w[0], w[1]) {
            (Token::Cjk(a), Token::Cjk(b)) => Some(hash_pair(a, b)),
            (Token::Word(a), Token::Word(b)) => {
                Some(mix(hash_str(a) ^ hash_str(b).rotate_left(17)))
            }
            _ => None,
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn minhash(shingles: &[u64], n: usize, seed: u64) -> Vec<u32> {
    let mut sig = vec![u32::MAX; n];
    if shingles.is_empty() {
        return sig;
    }
    for &s in shingles {
        for (i, slot) in sig.iter_mut().enumerate() {
            let h = (mix(s ^ seed.wrapping_add((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)))
                >> 32) as u32;
            if h < *slot {
                *slot = h;
            }
        }
    }
    sig
}

/// SplitMix64's finaliser: a fast, well-spread 64-bit mix.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a, then mixed: stable across runs and versions (it is stored).
fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

fn hash_pair(a: char, b: char) -> u64 {
    mix((u64::from(a as u32) << 32) | u64::from(b as u32) | 0x8000_0000_0000_0000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_around_titles_are_removed() {
        assert_eq!(
            clean_title("【独家】OpenAI 发布 GPT-6 | 量子位"),
            "openai 发布 gpt-6"
        );
        assert_eq!(
            clean_title("Exclusive: Lab ships model - The Verge"),
            "lab ships model"
        );
        assert_eq!(clean_title("重磅！智谱发布新模型"), "智谱发布新模型");
        assert_eq!(clean_title("[快讯] 百度发布文心 5.0"), "百度发布文心 5.0");
    }

    #[test]
    fn reposts_score_high_and_different_stories_low() {
        let a = Fingerprint::new(
            "OpenAI 发布 GPT-6，支持百万 token 上下文",
            "OpenAI 今天发布了 GPT-6 模型，上下文长度达到一百万 token。",
        );
        let b = Fingerprint::new(
            "【快讯】OpenAI发布GPT-6:支持百万token上下文 | 新智元",
            "据悉，OpenAI 今天发布了 GPT-6 模型，上下文长度达到一百万 token。",
        );
        let c = Fingerprint::new(
            "OpenAI 成立 GPT-6 安全委员会",
            "OpenAI 宣布成立新的安全委员会，负责审查 GPT-6 的发布。",
        );
        let same = a.similarity(&b);
        let different = a.similarity(&c);
        assert!(same.score > 0.7, "{same:?}");
        assert!(different.score < 0.4, "{different:?}");
    }

    #[test]
    fn a_shared_boilerplate_body_does_not_merge_different_titles() {
        let footer = "Subscribe to our newsletter for daily AI news. Follow us for more stories about machine learning and startups.";
        let a = Fingerprint::new("Nvidia unveils new inference chip", footer);
        let b = Fingerprint::new("Anthropic raises Series F at $90B valuation", footer);
        assert!(a.similarity(&b).score < 0.2, "{:?}", a.similarity(&b));
    }

    #[test]
    fn bands_are_shared_by_similar_titles() {
        let a = Fingerprint::new("Google DeepMind releases Gemini 4 with agent mode", "");
        let b = Fingerprint::new(
            "Google DeepMind releases Gemini 4, with agent mode - TechCrunch",
            "",
        );
        let shared = a.bands().iter().filter(|x| b.bands().contains(x)).count();
        assert!(shared >= 1);
        assert_eq!(a.bands().len(), TITLE_HASHES / ROWS);
    }
}
