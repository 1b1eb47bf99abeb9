//! Cutting text into terms: a title cleaned of the labels outlets add, numbers and versions
//! read one way, Latin words stemmed and stopwords dropped, CJK characters paired, each term
//! hashed. Pure functions.

use super::*;

pub(super) const STOPWORDS: &[&str] = &[
    "a", "an", "the", "of", "to", "in", "on", "for", "and", "or", "with", "at", "by", "from", "is",
    "are", "be", "as", "its", "it", "this", "that", "new", "how", "why", "what", "after", "into",
    "about", "over", "says", "say", "said", "will", "now", "has", "have", "than", "up", "out",
    "more", "who", "was", "were", "been", "their", "they", "we", "our", "you", "your", "but",
    "not", "can", "all", "his", "her", "which", "also",
];
/// Labels outlets put before a title.
pub(super) const TITLE_PREFIXES: &[&str] = &[
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
pub(super) fn tokens(text: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut word_start = None;
    for (i, c) in text.char_indices() {
        if is_cjk(c) {
            if let Some(s) = word_start.take() {
                out.push(Token::Word(&text[s..i]));
            }
            out.push(Token::Cjk(c));
        } else if c.is_alphanumeric() || c == '.' && word_start.is_some() && decimal_point(text, i)
        {
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

/// Whether the '.' at byte `i` stands between two digits ("27.1").
pub(super) fn decimal_point(text: &str, i: usize) -> bool {
    let before = text[..i].chars().next_back();
    let after = text[i + 1..].chars().next();
    before.is_some_and(|c| c.is_ascii_digit()) && after.is_some_and(|c| c.is_ascii_digit())
}

/// Whether a word is a number in [`canonical_numbers`]'s form.
pub(super) fn is_number(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_digit())
        && word.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// The number a title word is, or the version it names: a number as it is ("2026", "2.5"), a
/// name with a version from its first digit on ("qwen2.5" → "2.5", "v3" → "3", "k1.5" →
/// "1.5", "4o" → "4o"), so that "Qwen2.5" and "Qwen 2.5" agree and "DeepSeek V2" and
/// "DeepSeek V3" do not. A version's fraction loses its trailing zeros ("v2.0" → "2"), as
/// numbers do. Other words: `None`.
pub(super) fn number_or_version(word: &str) -> Option<String> {
    if is_number(word) {
        return Some(word.to_owned());
    }
    let first_digit = word.find(|c: char| c.is_ascii_digit())?;
    let (name, version) = word.split_at(first_digit);
    let digits_end = version
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(version.len());
    let (number, suffix) = version.split_at(digits_end);
    let plain = |s: &str| s.chars().all(|c| c.is_ascii_lowercase());
    // A name, then a number, then at most a short tag ("4o", "1.5b"): "a16z" and "h100" are
    // versions too, but "covid19vaccine" is no word of this kind.
    if !plain(name) || !plain(suffix) || suffix.len() > 2 {
        return None;
    }
    let number = match number.split_once('.') {
        Some((whole, fraction)) if fraction.trim_end_matches('0').is_empty() => whole,
        _ => number,
    };
    Some(format!("{number}{suffix}"))
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Token<'a> {
    Word(&'a str),
    Cjk(char),
}

/// Terms of normalised text, in order: each Latin word that is not a stopword (a plural "s"
/// trimmed, single letters dropped), each pair of adjacent CJK characters (a lone CJK
/// character counts alone).
pub(super) fn terms(text: &str) -> Vec<u32> {
    let toks = tokens(text);
    let mut out = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        match t {
            Token::Word(w) if STOPWORDS.contains(w) => {}
            Token::Word(w) if w.chars().count() == 1 && !w.chars().all(|c| c.is_ascii_digit()) => {}
            Token::Word(w) => out.push(short(hash_str(&stem(w)))),
            Token::Cjk(c) => match toks.get(i + 1) {
                Some(Token::Cjk(d)) => out.push(short(hash_pair(*c, *d))),
                _ => {
                    let lone = i == 0 || !matches!(toks[i - 1], Token::Cjk(_));
                    if lone {
                        out.push(short(hash_pair(*c, ' ')));
                    }
                }
            },
        }
    }
    out
}

/// The English stem of a word of Latin letters ("predicts", "predicting" → "predict");
/// other words as they are.
pub(super) fn stem(word: &str) -> std::borrow::Cow<'_, str> {
    static ENGLISH: std::sync::LazyLock<rust_stemmers::Stemmer> = std::sync::LazyLock::new(|| {
        rust_stemmers::Stemmer::create(rust_stemmers::Algorithm::English)
    });
    if word.bytes().all(|b| b.is_ascii_lowercase()) {
        ENGLISH.stem(word)
    } else {
        std::borrow::Cow::Borrowed(word)
    }
}

/// A 32-bit term hash: collisions among an item's few dozen terms are negligible and the
/// stored record stays small.
pub(super) fn short(h: u64) -> u32 {
    (h >> 32) as u32
}

/// SplitMix64's finaliser: a fast, well-spread 64-bit mix.
pub(super) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a, then mixed: stable across runs and versions (it is stored).
pub(super) fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

pub(super) fn hash_pair(a: char, b: char) -> u64 {
    mix((u64::from(a as u32) << 32) | u64::from(b as u32) | 0x8000_0000_0000_0000)
}
