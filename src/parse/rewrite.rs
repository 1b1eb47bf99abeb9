//! Rewriting a document so feed-rs reads what it says: references to C1 controls as the
//! windows-1252 characters they mean, the namespaces of older formats as those of the formats
//! feed-rs knows, and an `<rss>` root's version as one it reads. Each leaves a document that
//! needs no change uncopied.

use std::borrow::Cow;

use super::scan::{attribute, root_element_start};

/// The document with character references to U+0080..U+009F (`&#150;`, `&#x93;`) replaced by
/// the windows-1252 characters of those bytes, as HTML reads them: publishers mean a dash or
/// a quote, never the control character. One pass; a document without such a reference is
/// not copied.
pub(super) fn windows_1252_references(utf8: Cow<'_, [u8]>) -> Cow<'_, [u8]> {
    /// The code point of the reference starting at `at` (`&#...;`) and its length.
    fn reference(bytes: &[u8], at: usize) -> Option<(u32, usize)> {
        let rest = bytes.get(at + 2..)?;
        let (digits, radix, skip) = match rest.first()? {
            b'x' | b'X' => (&rest[1..], 16, 3),
            _ => (rest, 10, 2),
        };
        let len = digits.iter().take(8).position(|b| *b == b';')?;
        let text = std::str::from_utf8(&digits[..len]).ok()?;
        Some((u32::from_str_radix(text, radix).ok()?, skip + len + 1))
    }
    let c1 = |code: u32| (0x80..=0x9F).contains(&code);
    let found = |bytes: &[u8]| {
        bytes
            .windows(2)
            .enumerate()
            .any(|(at, w)| w == b"&#" && reference(bytes, at).is_some_and(|(c, _)| c1(c)))
    };
    if !found(&utf8) {
        return utf8;
    }
    let mut out = Vec::with_capacity(utf8.len());
    let mut at = 0;
    while at < utf8.len() {
        if utf8[at..].starts_with(b"&#") {
            if let Some((code, len)) = reference(&utf8, at).filter(|(c, _)| c1(*c)) {
                let byte = [code as u8];
                let (text, _, _) = encoding_rs::WINDOWS_1252.decode(&byte);
                let mapped = text.chars().next().filter(|m| !c1(u32::from(*m)));
                if let Some(mapped) = mapped {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(mapped.encode_utf8(&mut buf).as_bytes());
                    at += len;
                    continue;
                }
            }
        }
        out.push(utf8[at]);
        at += 1;
    }
    Cow::Owned(out)
}

/// Namespaces of older formats that feed-rs does not know, each with the namespace of the
/// format whose elements it shares: RSS 0.90 (as specified, and as some feeds spell it) is
/// RSS 1.0's shape, Atom 0.3 is Atom 1.0's (its `issued`/`modified` dates are not read, so
/// such entries get the time they were first seen). feed-rs takes RSS 1.0's namespace for
/// RSS's own elements, so UserLand's RSS namespaces become that.
const LEGACY_NAMESPACES: [(&str, &str); 5] = [
    (
        "http://my.netscape.com/rdf/simple/0.9/",
        "http://purl.org/rss/1.0/",
    ),
    (
        "http://channel.netscape.com/rdf/simple/0.9/",
        "http://purl.org/rss/1.0/",
    ),
    ("http://purl.org/atom/ns#", "http://www.w3.org/2005/Atom"),
    // UserLand's namespace for RSS 2.0 (and 0.92), which the specification never had.
    (
        "http://backend.userland.com/rss2",
        "http://purl.org/rss/1.0/",
    ),
    (
        "http://backend.userland.com/rss",
        "http://purl.org/rss/1.0/",
    ),
];

/// Renames a legacy namespace declared near the top of the document, so feed-rs reads it.
pub(super) fn legacy_namespace_renamed(utf8: Cow<'_, [u8]>) -> Cow<'_, [u8]> {
    let head = &utf8[..utf8.len().min(4096)];
    let Some((old, new)) = LEGACY_NAMESPACES.iter().find(|(old, _)| {
        let needle = old.as_bytes();
        head.windows(needle.len()).any(|w| w == needle)
    }) else {
        return utf8;
    };
    let mut text = String::from_utf8_lossy(&utf8).replace(old, new);
    if *old == "http://purl.org/atom/ns#" {
        // Atom 0.3 names text constructs' types as MIME types; Atom 1.0 as text/html/xhtml.
        for (mime, kind) in [
            ("text/plain", "text"),
            ("text/html", "html"),
            ("application/xhtml+xml", "xhtml"),
        ] {
            text = text
                .replace(&format!("type=\"{mime}\""), &format!("type=\"{kind}\""))
                .replace(&format!("type='{mime}'"), &format!("type='{kind}'"));
        }
    }
    Cow::Owned(text.into_bytes())
}

/// RSS versions feed-rs reads as they are.
pub(crate) const RSS_VERSIONS_READ: [&str; 3] = ["2.0", "0.91", "0.92"];

/// feed-rs reads `<rss>` only with version 2.0, 0.91 or 0.92. An `<rss>` root without a
/// version, or with one of the versions that are RSS 2.0 in all but name (0.93, 0.94, 2.01,
/// 2.1, ...), is read as 2.0.
pub(super) fn rss_root_as_feed_rs_reads_it(utf8: Cow<'_, [u8]>) -> Cow<'_, [u8]> {
    let Some(start) = root_element_start(&utf8) else {
        return utf8;
    };
    let after = &utf8[start..];
    let is_rss = after.starts_with(b"<rss")
        && after
            .get(4)
            .is_some_and(|b| b.is_ascii_whitespace() || *b == b'>' || *b == b'/');
    if !is_rss {
        return utf8;
    }
    let Some(end) = after.iter().position(|b| *b == b'>') else {
        return utf8;
    };
    let tag = String::from_utf8_lossy(&after[..end]).into_owned();
    let version = attribute(&tag, "version");
    if version
        .as_deref()
        .is_some_and(|v| RSS_VERSIONS_READ.contains(&v.trim()))
    {
        return utf8;
    }
    let new_tag = match version {
        Some(v) => {
            tag.replacen(&format!("\"{v}\""), "\"2.0\"", 1)
                .replacen(&format!("'{v}'"), "'2.0'", 1)
        }
        None => tag.replacen("<rss", "<rss version=\"2.0\"", 1),
    };
    let mut out = Vec::with_capacity(utf8.len() + 16);
    out.extend_from_slice(&utf8[..start]);
    out.extend_from_slice(new_tag.as_bytes());
    out.extend_from_slice(&after[end..]);
    Cow::Owned(out)
}
