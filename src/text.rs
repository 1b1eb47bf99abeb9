//! Small text helpers shared by several stages: HTML to plain text, whitespace clean-up, and the
//! matching form of a text (NFKC, then Unicode case folding) used by filters and fingerprints.
//!
//! Pure functions only: no I/O, no knowledge of feeds or the store.

use unicode_normalization::UnicodeNormalization;

/// The plain text of an HTML fragment: tags dropped, entities decoded, whitespace collapsed.
/// `<script>` and `<style>` bodies are dropped with their tags.
pub fn html_to_text(html: &str) -> String {
    if !html.contains(['<', '&']) {
        return collapse_whitespace(html);
    }
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        if !looks_like_tag(after) {
            out.push('<');
            rest = &after[1..];
            continue;
        }
        let lower_head: String = after
            .chars()
            .take(8)
            .collect::<String>()
            .to_ascii_lowercase();
        let skip_to = if lower_head.starts_with("<script") {
            find_ci(after, "</script>").map(|i| i + "</script>".len())
        } else if lower_head.starts_with("<style") {
            find_ci(after, "</style>").map(|i| i + "</style>".len())
        } else if after.starts_with("<!--") {
            after.find("-->").map(|i| i + 3)
        } else {
            after.find('>').map(|i| i + 1)
        };
        match skip_to {
            Some(n) => {
                // Block-level tags separate words; inline tags do not.
                out.push(' ');
                rest = &after[n..];
            }
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    let decoded = html_escape::decode_html_entities(&out);
    collapse_whitespace(&decoded)
}

fn looks_like_tag(s: &str) -> bool {
    let mut chars = s.chars().skip(1);
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '/' || c == '!' || c == '?')
}

fn find_ci(haystack: &str, needle: &str) -> Option<usize> {
    haystack.to_ascii_lowercase().find(needle)
}

/// Runs of whitespace become one space; control characters are dropped; ends are trimmed.
pub fn collapse_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.chars() {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
        } else if c.is_control() {
            continue;
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
    }
    out
}

/// The form in which texts are compared: NFKC (so full-width and half-width forms are equal),
/// then Unicode default case folding.
pub fn matching_form(s: &str) -> String {
    let nfkc: std::borrow::Cow<'_, str> = if s.is_ascii()
        || unicode_normalization::is_nfkc_quick(s.chars())
            == unicode_normalization::IsNormalized::Yes
    {
        std::borrow::Cow::Borrowed(s)
    } else {
        std::borrow::Cow::Owned(s.nfkc().collect())
    };
    // Case folding maps each character on its own, so the characters that have no case
    // (ASCII is lowercased by hand; CJK has none) skip the folding tables.
    let mut out = String::with_capacity(nfkc.len());
    let mut buf = [0u8; 4];
    for c in nfkc.chars() {
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
        } else if is_cjk(c) {
            out.push(c);
        } else {
            out.push_str(&caseless::default_case_fold_str(c.encode_utf8(&mut buf)));
        }
    }
    out
}

/// Whether `c` counts as a word character at a Latin edge of a keyword (a letter or digit
/// that is not Chinese, Japanese or Korean).
pub fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() && !is_cjk(c)
}

/// Whether `c` is a Chinese, Japanese or Korean character (these match anywhere).
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x11FF      // Hangul Jamo
        | 0x2E80..=0x2FDF    // CJK radicals
        | 0x3000..=0x30FF    // CJK punctuation, Hiragana, Katakana
        | 0x3100..=0x31FF    // Bopomofo, Hangul compatibility, Katakana ext.
        | 0x3400..=0x4DBF    // CJK ext. A
        | 0x4E00..=0x9FFF    // CJK unified
        | 0xA960..=0xA97F
        | 0xAC00..=0xD7FF    // Hangul syllables
        | 0xF900..=0xFAFF    // CJK compatibility
        | 0xFF65..=0xFFDC    // half-width Katakana and Hangul
        | 0x20000..=0x3FFFF) // CJK ext. B and later
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_becomes_text() {
        assert_eq!(
            html_to_text("<p>Hello&nbsp;<b>world</b> &amp; co</p><script>x()</script>"),
            "Hello world & co"
        );
        assert_eq!(html_to_text("a < b and c > d"), "a < b and c > d");
        assert_eq!(html_to_text("  many \n\t spaces "), "many spaces");
    }

    #[test]
    fn matching_form_folds_width_and_case() {
        assert_eq!(matching_form("ＡＩ芯片"), "ai芯片");
        assert_eq!(matching_form("Straße"), "strasse");
        assert_eq!(matching_form("ΣΊΣΥΦΟΣ Ⅻ ﬁ"), "σίσυφοσ xii fi");
        assert_eq!(matching_form("㍿ Ａ"), "株式会社 a");
        for s in [
            "ÀÉÎõü İstanbul",
            "ǅ ﬀ Ω ẞ",
            "混元 ＧＰＴ-５ 한국어 カタカナ",
        ] {
            let nfkc: String = s.nfkc().collect();
            assert_eq!(
                matching_form(s),
                caseless::default_case_fold_str(&nfkc),
                "{s}"
            );
        }
    }
}
