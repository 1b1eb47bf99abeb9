//! Numbers and dates as reports write them, rewritten to one form so that two reports of one
//! story agree on them: "100 万", "1M" and "一百万" are all `1000000`; "$250 million" and
//! "$250M" are `250000000`; "六成" and "60%" are `60`; "November 6, 2026", "2026-11-06" and
//! "11月6日" all carry the date `1106` (and the year when given).
//!
//! Works on text in matching form (NFKC, case-folded). Pure functions only.

use crate::text::is_cjk;

/// Multipliers written after a number, longest first: (word, power of ten).
const CJK_MULTIPLIERS: &[(&str, u32)] = &[
    ("万亿", 12),
    ("千亿", 11),
    ("百亿", 10),
    ("千万", 7),
    ("百万", 6),
    ("亿", 8),
    ("万", 4),
];
const LATIN_MULTIPLIERS: &[(&str, u32)] = &[
    ("thousand", 3),
    ("million", 6),
    ("billion", 9),
    ("trillion", 12),
    ("k", 3),
    ("m", 6),
    ("mn", 6),
    ("b", 9),
    ("bn", 9),
    ("t", 12),
    ("tn", 12),
];
const MONTHS: &[&str] = &[
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// The text with every number and date it recognises in its one form. Words that merely
/// contain digits ("gpt4", "k3", "top5") are left alone. Text without a digit or a Chinese
/// numeral is returned as it is.
pub fn canonical_numbers(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(may_start_number) {
        return std::borrow::Cow::Borrowed(text);
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 16);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        // Inside a word: after a letter or digit, or after the point of a version ("qwen2.5").
        let after_word = i > 0 && chars[i - 1].is_alphanumeric() && !is_cjk(chars[i - 1])
            || i > 1 && chars[i - 1] == '.' && chars[i - 2].is_ascii_digit();
        let may_start = may_start_number(c) || c.is_ascii_alphabetic() && !after_word;
        let found = if may_start {
            read_date(&chars, i, after_word).or_else(|| read_number(&chars, i, after_word))
        } else {
            None
        };
        match found {
            Some((written, next)) => {
                push_word(&mut out, &written);
                i = next;
            }
            None => {
                out.push(c);
                i += 1;
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Whether a number can start with `c` (an English month name starts a date only before a
/// day's digits, so text without these has nothing to rewrite).
fn may_start_number(c: char) -> bool {
    c.is_ascii_digit() || chinese_digit(c).is_some() || chinese_unit(c).is_some()
}

/// Appends `word` as a word of its own.
fn push_word(out: &mut String, word: &str) {
    if out.chars().next_back().is_some_and(|c| !c.is_whitespace()) {
        out.push(' ');
    }
    out.push_str(word);
    out.push(' ');
}

/// A number at `i`: Arabic digits (with thousands commas and a decimal point) and a
/// multiplier, or Chinese numerals. Returns its one form and where it ends.
fn read_number(chars: &[char], i: usize, after_word: bool) -> Option<(String, usize)> {
    if chars[i].is_ascii_digit() {
        if after_word {
            return None;
        }
        let (digits, decimals, mut end) = read_digits(chars, i);
        // A percentage written "60%" is the number 60.
        let mut power = 0;
        let j = end + usize::from(chars.get(end) == Some(&' '));
        // "2-million" is written like "2 million", but "gpt-4-m" is no multiplier.
        let spelled = chars.get(end) == Some(&'-');
        if let Some((p, len)) = multiplier_at(chars, j, CJK_MULTIPLIERS) {
            power = p;
            end = j + len;
        } else if let Some((p, len)) = latin_multiplier_at(chars, j) {
            power = p;
            end = j + len;
        } else if let Some((p, len)) = spelled_multiplier_at(chars, end + 1).filter(|_| spelled) {
            power = p;
            end += 1 + len;
        } else if chars.get(end).is_some_and(|c| c.is_ascii_alphabetic()) {
            // "3d", "5g", "10x": a word, not a number.
            return None;
        }
        return Some((scaled(&digits, decimals, power), end));
    }
    read_chinese_number(chars, i)
}

/// Digits from `i` (commas between thousands skipped, one decimal point kept): the digits,
/// how many of them follow the point, and where they end.
fn read_digits(chars: &[char], i: usize) -> (String, u32, usize) {
    let mut digits = String::new();
    let mut decimals = 0;
    let mut seen_point = false;
    let mut j = i;
    while j < chars.len() {
        let c = chars[j];
        let next_is_digit = chars.get(j + 1).is_some_and(|d| d.is_ascii_digit());
        if c.is_ascii_digit() {
            digits.push(c);
            if seen_point {
                decimals += 1;
            }
        } else if c == '.' && !seen_point && next_is_digit {
            seen_point = true;
        } else if c == ',' && !seen_point && next_is_digit && thousands_group(chars, j + 1) {
        } else {
            break;
        }
        j += 1;
    }
    (digits, decimals, j)
}

/// Whether exactly three digits start at `i` (a thousands group after a comma).
fn thousands_group(chars: &[char], i: usize) -> bool {
    (i..i + 3).all(|k| chars.get(k).is_some_and(|c| c.is_ascii_digit()))
        && !chars.get(i + 3).is_some_and(|c| c.is_ascii_digit())
}

fn multiplier_at(chars: &[char], i: usize, table: &[(&str, u32)]) -> Option<(u32, usize)> {
    table.iter().find_map(|(word, power)| {
        let len = word.chars().count();
        let matches = chars.len() >= i + len && word.chars().zip(&chars[i..]).all(|(a, b)| a == *b);
        matches.then_some((*power, len))
    })
}

/// "m", "bn", "billion" as a whole word right after the number.
fn latin_multiplier_at(chars: &[char], i: usize) -> Option<(u32, usize)> {
    let len = chars[i.min(chars.len())..]
        .iter()
        .take_while(|c| c.is_ascii_alphabetic())
        .count();
    if len == 0 {
        return None;
    }
    let word: String = chars[i..i + len].iter().collect();
    LATIN_MULTIPLIERS
        .iter()
        .find(|(w, _)| *w == word)
        .map(|(_, p)| (*p, len))
}

/// A multiplier written out as a word ("million", not "m") at `i`: the only ones a hyphen may
/// join to a number ("2-million-token").
fn spelled_multiplier_at(chars: &[char], i: usize) -> Option<(u32, usize)> {
    latin_multiplier_at(chars, i).filter(|(_, len)| *len > 2)
}

/// `digits` with `decimals` of them after the point, times 10^`power`, without a needless
/// point or leading zeros.
fn scaled(digits: &str, decimals: u32, power: u32) -> String {
    let mut s = digits.to_owned();
    if power >= decimals {
        s.extend(std::iter::repeat_n('0', (power - decimals) as usize));
    } else {
        let point = s.len() - (decimals - power) as usize;
        let (whole, fraction) = s.split_at(point);
        let fraction = fraction.trim_end_matches('0');
        s = if fraction.is_empty() {
            whole.to_owned()
        } else {
            format!("{}.{fraction}", if whole.is_empty() { "0" } else { whole })
        };
    }
    let trimmed = s.trim_start_matches('0');
    if trimmed.is_empty() || trimmed.starts_with('.') {
        format!("0{trimmed}")
    } else {
        trimmed.to_owned()
    }
}

fn chinese_digit(c: char) -> Option<u64> {
    Some(match c {
        '零' | '〇' => 0,
        '一' => 1,
        '二' | '两' => 2,
        '三' => 3,
        '四' => 4,
        '五' => 5,
        '六' => 6,
        '七' => 7,
        '八' => 8,
        '九' => 9,
        _ => return None,
    })
}

fn chinese_unit(c: char) -> Option<u64> {
    Some(match c {
        '十' => 10,
        '百' => 100,
        '千' => 1_000,
        '万' => 10_000,
        '亿' => 100_000_000,
        _ => return None,
    })
}

/// Chinese numerals that start with a digit or 十 and hold a unit ("一千万", "十一", "三百"),
/// or a digit before 成 ("六成" = 60 %) or 倍 ("三倍" = 3 倍). A lone digit in a word ("一键", "统一") and words
/// that begin with a unit ("百度", "千万别") are left alone.
fn read_chinese_number(chars: &[char], i: usize) -> Option<(String, usize)> {
    let first = chars[i];
    let end = i + chars[i..]
        .iter()
        .take_while(|c| chinese_digit(**c).is_some() || chinese_unit(**c).is_some())
        .count();
    let run = &chars[i..end];
    // A run may begin with a unit only when it is all units: "千亿", "百万" (but "百度").
    let starts_well = chinese_digit(first).is_some()
        || first == '十'
        || run.len() >= 2 && run.iter().all(|c| chinese_unit(*c).is_some());
    if run.is_empty() || !starts_well {
        return None;
    }
    if run.len() == 1 && chinese_digit(first).is_some() {
        if chars.get(end) == Some(&'成') && first != '零' {
            let tenths = chinese_digit(first)?;
            return Some(((tenths * 10).to_string(), end + 1));
        }
        if chars.get(end) == Some(&'倍') {
            // "翻三倍" as "3 倍": the multiple is the number.
            return Some((chinese_digit(first)?.to_string(), end));
        }
        return None;
    }
    if !run.iter().any(|c| chinese_unit(*c).is_some())
        || run == ['十'] && chars.get(end) == Some(&'分')
    {
        // No unit, or 十分 ("very").
        return None;
    }
    Some((chinese_value(run)?.to_string(), end))
}

/// The value of a run of Chinese numerals: sections split by 亿 and 万, each a sum of
/// digit × unit; a leading 十 is 10.
fn chinese_value(run: &[char]) -> Option<u64> {
    let mut total: u64 = 0;
    let mut section: u64 = 0;
    let mut digit: Option<u64> = None;
    for &c in run {
        if let Some(d) = chinese_digit(c) {
            digit = Some(d);
        } else {
            let unit = chinese_unit(c)?;
            if unit == 100_000_000 && section == 0 && digit.is_none() && total > 0 {
                // 万亿: ten thousand times a hundred million.
                total = total.checked_mul(unit)?;
            } else if unit >= 10_000 {
                section += digit.take().unwrap_or(0);
                let value = if section == 0 { 1 } else { section };
                total = total.checked_add(value.checked_mul(unit)?)?;
                section = 0;
            } else {
                section += digit.take().unwrap_or(1) * unit;
            }
        }
    }
    total.checked_add(section + digit.unwrap_or(0))
}

/// A date at `i`: "2026-11-06", "november 6, 2026", "nov 6", "6 november 2026" or
/// "11月6日" becomes the word `1106` (month and day), followed by the year when given.
fn read_date(chars: &[char], i: usize, after_word: bool) -> Option<(String, usize)> {
    if after_word {
        return None;
    }
    if chars[i].is_ascii_digit() {
        return read_iso_date(chars, i)
            .or_else(|| read_chinese_date(chars, i))
            .or_else(|| read_day_month(chars, i));
    }
    read_month_day(chars, i)
}

fn date_word(month: u32, day: u32, year: Option<u32>) -> Option<String> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    Some(match year {
        Some(y) => format!("{month:02}{day:02} {y}"),
        None => format!("{month:02}{day:02}"),
    })
}

/// Up to `max` ASCII digits at `i`, not followed by another digit: (value, end).
fn small_number(chars: &[char], i: usize, max: usize) -> Option<(u32, usize)> {
    let len = chars[i.min(chars.len())..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    if len == 0 || len > max {
        return None;
    }
    let s: String = chars[i..i + len].iter().collect();
    Some((s.parse().ok()?, i + len))
}

fn read_iso_date(chars: &[char], i: usize) -> Option<(String, usize)> {
    let (year, j) = small_number(chars, i, 4)?;
    if j - i != 4 {
        return None;
    }
    let sep = *chars.get(j)?;
    if sep != '-' && sep != '/' {
        return None;
    }
    let (month, k) = small_number(chars, j + 1, 2)?;
    if chars.get(k) != Some(&sep) {
        return None;
    }
    let (day, end) = small_number(chars, k + 1, 2)?;
    Some((date_word(month, day, Some(year))?, end))
}

fn read_chinese_date(chars: &[char], i: usize) -> Option<(String, usize)> {
    let (month, j) = small_number(chars, i, 2)?;
    if chars.get(j) != Some(&'月') {
        return None;
    }
    let (day, k) = small_number(chars, j + 1, 2)?;
    match chars.get(k) {
        Some('日') | Some('号') => Some((date_word(month, day, None)?, k + 1)),
        _ => None,
    }
}

/// The month whose name (or first three letters, "sept" too, with an optional period) is
/// the word at `i`: (month, end).
fn month_at(chars: &[char], i: usize) -> Option<(u32, usize)> {
    let len = chars[i..]
        .iter()
        .take_while(|c| c.is_ascii_alphabetic())
        .count();
    if !(3..=9).contains(&len) {
        return None;
    }
    let word = &chars[i..i + len];
    let is = |name: &str| name.len() == len && name.chars().zip(word).all(|(a, b)| a == *b);
    let month = MONTHS.iter().position(|m| {
        is(m)
            || len == 3 && m.chars().zip(word).all(|(a, b)| a == *b)
            || *m == "september" && is("sept")
    })?;
    let end = i + len + usize::from(chars.get(i + len) == Some(&'.'));
    Some((month as u32 + 1, end))
}

/// ", 2026" or " 2026" after a date: (year, end).
fn year_after(chars: &[char], i: usize) -> Option<(u32, usize)> {
    let mut j = i;
    if chars.get(j) == Some(&',') {
        j += 1;
    }
    if chars.get(j) != Some(&' ') {
        return None;
    }
    let (year, end) = small_number(chars, j + 1, 4)?;
    (end - (j + 1) == 4 && (1900..=2200).contains(&year)).then_some((year, end))
}

fn read_month_day(chars: &[char], i: usize) -> Option<(String, usize)> {
    let (month, j) = month_at(chars, i)?;
    if chars.get(j) != Some(&' ') {
        return None;
    }
    let (day, k) = small_number(chars, j + 1, 2)?;
    if chars.get(k).is_some_and(|c| c.is_alphanumeric()) {
        return None;
    }
    match year_after(chars, k) {
        Some((year, end)) => Some((date_word(month, day, Some(year))?, end)),
        None => Some((date_word(month, day, None)?, k)),
    }
}

fn read_day_month(chars: &[char], i: usize) -> Option<(String, usize)> {
    let (day, j) = small_number(chars, i, 2)?;
    if chars.get(j) != Some(&' ') {
        return None;
    }
    let (month, k) = month_at(chars, j + 1)?;
    match year_after(chars, k) {
        Some((year, end)) => Some((date_word(month, day, Some(year))?, end)),
        None => Some((date_word(month, day, None)?, k)),
    }
}

#[cfg(test)]
mod tests {
    use super::canonical_numbers as c;

    fn words(s: &str) -> Vec<String> {
        c(s).split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn amounts_written_differently_agree() {
        assert!(words("上下文 100 万 token").contains(&"1000000".to_owned()));
        assert!(words("上下文长度达 1m").contains(&"1000000".to_owned()));
        assert!(words("最高补贴一千万元").iter().any(|w| w == "10000000"));
        assert!(words("补贴1000万元").iter().any(|w| w == "10000000"));
        assert_eq!(words("$250 million deal"), ["$", "250000000", "deal"]);
        assert_eq!(words("$250m deal"), ["$", "250000000", "deal"]);
        assert!(words("总参数3550亿").contains(&"355000000000".to_owned()));
        assert!(words("355b 参数").contains(&"355000000000".to_owned()));
        assert!(words("1.6 万亿参数").contains(&"1600000000000".to_owned()));
        assert!(words("1.6t 参数").contains(&"1600000000000".to_owned()));
        assert!(words("$1,500 price").contains(&"1500".to_owned()));
        assert!(words("降六成").contains(&"60".to_owned()));
        assert!(words("下降60%").contains(&"60".to_owned()));
        assert!(words("算力翻三倍").contains(&"3".to_owned()));
        assert!(words("算力提升 3 倍").contains(&"3".to_owned()));
        assert!(words("第十一批").contains(&"11".to_owned()));
        assert!(words("支持十种方言").contains(&"10".to_owned()));
        assert!(words("ios 27.1 推送").contains(&"27.1".to_owned()));
        assert!(words("一万亿").contains(&"1000000000000".to_owned()));
        assert_eq!(c("十分重要"), "十分重要");
        assert!(words("百万token").contains(&"1000000".to_owned()));
        assert!(words("市值突破千亿元").contains(&"100000000000".to_owned()));
        assert!(words("a 2-million-token context").contains(&"2000000".to_owned()));
        assert!(words("2 million tokens").contains(&"2000000".to_owned()));
        assert_eq!(words("gpt-4-m"), ["gpt-", "4", "-m"]);
    }

    #[test]
    fn words_with_digits_and_numeral_words_are_left_alone() {
        assert_eq!(c("kimi k3 and gpt4 top5"), "kimi k3 and gpt4 top5");
        assert_eq!(c("qwen2.5 and k1.5"), "qwen2.5 and k1.5");
        assert_eq!(c("百度发布"), "百度发布");
        assert_eq!(c("一键整理，统一入口"), "一键整理，统一入口");
        assert_eq!(c("3d model on 5g"), "3d model on 5g");
    }

    #[test]
    fn dates_written_differently_agree() {
        assert_eq!(words("tldr ai 2026-11-06"), ["tldr", "ai", "1106", "2026"]);
        assert_eq!(
            words("tldr ai – november 6, 2026"),
            ["tldr", "ai", "–", "1106", "2026"]
        );
        assert_eq!(words("6 nov 2026"), ["1106", "2026"]);
        assert!(words("ai早报|11月6日").contains(&"1106".to_owned()));
        assert!(words("ai早报|11月9日").contains(&"1109".to_owned()));
        assert_eq!(words("may 2026 plans"), ["may", "2026", "plans"]);
    }
}
