//! Parsing and normalising: feed bytes in, [`Entry`] values out.
//!
//! The body is decoded to UTF-8 by [`charset`], parsed by feed-rs (RSS 0.9x/1.0/2.0, Atom,
//! JSON Feed), and each entry is normalised by [`normalise`]: plain-text titles, absolute links,
//! UTC dates, sanitised HTML. feed-rs is used here and nowhere else. This module knows nothing
//! about the store, about HTTP, or about other sources.

pub mod charset;
pub mod dublin_core;
pub mod normalise;
pub mod repair;

use chrono::{DateTime, Utc};
use url::Url;

use crate::model::{Entry, FeedMeta};

/// A parsed, normalised feed.
#[derive(Debug, Clone, Default)]
pub struct ParsedFeed {
    pub meta: FeedMeta,
    pub entries: Vec<Entry>,
    /// What was wrong with the body and mended to read it ("unescaped &", "cut off", "read
    /// as GBK, declared UTF-8"); empty for a body read as it is.
    pub recovered: Vec<String>,
}

impl ParsedFeed {
    /// "recovered (a, b)" when the body needed mending, for source health.
    pub fn recovery_note(&self) -> Option<String> {
        (!self.recovered.is_empty()).then(|| format!("recovered ({})", self.recovered.join(", ")))
    }
}

/// Why a body is not a usable feed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the body is empty")]
    Empty,
    #[error("got an HTML page, not a feed{}", advertised.as_ref().map(|u| format!(" (the page advertises a feed at {u})")).unwrap_or_default())]
    HtmlPage { advertised: Option<String> },
    #[error("not a feed: {0}")]
    NotAFeed(String),
    #[error("malformed feed: {0}")]
    Malformed(String),
}

/// Parses `body` (served with `content_type`, fetched from `base`) into normalised entries.
/// `now` stands in for missing or impossible dates.
///
/// The body is read strictly first; when feed-rs refuses it, the [`repair`] pass rewrites
/// it as well-formed XML and feed-rs reads that; when feed-rs still refuses, each entry is
/// read alone and the ones it refuses are skipped, so one bad entry never costs the feed.
pub fn parse_feed(
    body: &[u8],
    content_type: Option<&str>,
    base: &Url,
    now: DateTime<Utc>,
) -> Result<ParsedFeed, ParseError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ParseError::Empty);
    }
    let decoded = charset::decode(body, content_type, Some(base));
    let recovered = decoded.notes();
    let utf8 = rss_root_as_feed_rs_reads_it(legacy_namespace_renamed(windows_1252_references(
        decoded.utf8,
    )));
    let first = utf8.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let is_json = first == Some(b'{');
    // A strict reading that kept fewer entries than the document has `<item>` or `<entry>`
    // tags lost some (an item feed-rs drops, a namespace it does not know): try the repair.
    let scan = if is_json {
        Scan::default()
    } else {
        scan(&utf8)
    };
    let strict_error = match read(&utf8, base) {
        Ok(feed) => {
            let strict = Reading::of(feed, &utf8);
            let kept = strict.feed.entries.len();
            let damaged = scan.damaged;
            let repaired = (kept < scan.entry_tags || damaged)
                .then(|| repaired_reading(&utf8, base))
                .flatten()
                .filter(|r| {
                    let found = r.feed.entries.len();
                    found > kept || (damaged && found == kept && !r.repairs.is_empty())
                })
                .map(|mut r| {
                    let more = r.feed.entries.len() - kept;
                    if more > 0 {
                        r.repairs.push(format!(
                            "{more} entr{} the strict reading dropped",
                            if more == 1 { "y" } else { "ies" }
                        ));
                    }
                    r
                });
            let reading = repaired.unwrap_or(strict);
            return Ok(reading.normalised(base, now, recovered));
        }
        Err(e) => e,
    };
    if is_json {
        return Err(classify(strict_error, &utf8, base));
    }
    // A web page is a page, unless a feed with entries sits inside it (an Atom feed in an
    // XHTML page's body, as some blog engines serve).
    let page = is_html_page(&utf8);
    match repaired_reading(&utf8, base) {
        Some(reading) if !page || !reading.feed.entries.is_empty() => {
            Ok(reading.normalised(base, now, recovered))
        }
        _ => Err(classify(strict_error, &utf8, base)),
    }
}

/// What feed-rs read, what was mended for it to, and each entry's Dublin Core fields.
struct Reading {
    feed: feed_rs::model::Feed,
    repairs: Vec<String>,
    dublin_core: Vec<dublin_core::DublinCore>,
}

impl Reading {
    /// A reading of `xml` as it is, with the Dublin Core fields when an entry lacks a title,
    /// a date or an author.
    fn of(feed: feed_rs::model::Feed, xml: &[u8]) -> Reading {
        let lacking = feed.entries.iter().any(|e| {
            e.title.is_none()
                || (e.published.is_none() && e.updated.is_none())
                || e.authors.is_empty()
        });
        let dublin_core = if lacking {
            dublin_core::entries(xml)
        } else {
            Vec::new()
        };
        Reading {
            feed,
            repairs: Vec::new(),
            dublin_core,
        }
    }

    fn normalised(self, base: &Url, now: DateTime<Utc>, mut recovered: Vec<String>) -> ParsedFeed {
        for repair in self.repairs {
            if !recovered.contains(&repair) {
                recovered.push(repair);
            }
        }
        normalise::feed(self.feed, base, now, recovered, &self.dublin_core)
    }
}

/// The feed read from the repaired document, with what was mended; entry by entry when
/// feed-rs refuses the whole (the feed's own metadata, then each entry inside the same root).
/// `None` when there is no feed root or feed-rs refuses even the metadata.
fn repaired_reading(utf8: &[u8], base: &Url) -> Option<Reading> {
    let text = String::from_utf8_lossy(utf8);
    let repaired = repair::repair(&text)?;
    let repairs: Vec<String> = repaired.repairs.iter().map(ToString::to_string).collect();
    if let Ok(feed) = read(repaired.xml.as_bytes(), base) {
        return Some(Reading {
            repairs,
            ..Reading::of(feed, repaired.xml.as_bytes())
        });
    }
    let meta = read(repaired.without_entries().as_bytes(), base).ok()?;
    let mut reading = Reading {
        feed: meta,
        repairs,
        dublin_core: Vec::new(),
    };
    let mut skipped = 0;
    for index in 0..repaired.entries.len() {
        let alone = repaired.with_entry_alone(index).unwrap_or_default();
        let Ok(one) = read(alone.as_bytes(), base) else {
            skipped += 1;
            continue;
        };
        let one = Reading::of(one, alone.as_bytes());
        let mut dublin_core = one.dublin_core;
        dublin_core.resize(one.feed.entries.len(), dublin_core::DublinCore::default());
        reading.feed.entries.extend(one.feed.entries);
        reading.dublin_core.extend(dublin_core);
    }
    if skipped > 0 {
        reading.repairs.push(format!(
            "{skipped} unreadable entr{} skipped",
            if skipped == 1 { "y" } else { "ies" }
        ));
    }
    Some(reading)
}

/// What one pass over a document says about feed-rs's strict reading of it.
#[derive(Debug, Default)]
struct Scan {
    /// `<item>` and `<entry>` start tags outside CDATA and comments: a bound on the entries
    /// (a strict reading with fewer lost some).
    entry_tags: usize,
    /// feed-rs reads the document without complaint but loses part of what it says: an
    /// element whose namespace prefix is never declared (feed-rs sees it as unknown and drops
    /// it: `dc:creator`, `content:encoded`), or markup inside an RSS title (feed-rs keeps the
    /// text before the first tag).
    damaged: bool,
}

/// Scans `utf8` once for [`Scan`].
fn scan(utf8: &[u8]) -> Scan {
    let rss = root_element_start(utf8).is_some_and(|at| {
        let root = &utf8[at + 1..];
        !root.starts_with(b"feed") && !root.starts_with(b"entry")
    });
    let mut used: Vec<&[u8]> = Vec::new();
    let mut declared: Vec<&[u8]> = Vec::new();
    let mut entry_tags = 0;
    let name_end = |from: usize| {
        utf8[from..]
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':')))
            .map_or(utf8.len(), |n| from + n)
    };
    let mut at = 0;
    while let Some(offset) = memchr_any(&utf8[at..]) {
        let i = at + offset;
        at = i + 1;
        if utf8[i] == b'x' {
            // `xmlns:prefix=`
            if utf8[i..].starts_with(b"xmlns:") {
                let end = name_end(i + 6);
                if declared.len() < 64 && !declared.contains(&&utf8[i + 6..end]) {
                    declared.push(&utf8[i + 6..end]);
                }
                at = end;
            }
            continue;
        }
        // CDATA and comments hold text, not elements (HTML in CDATA may say `<o:p>`).
        let skip = if utf8[i..].starts_with(b"<![CDATA[") {
            Some(b"]]>".as_slice())
        } else if utf8[i..].starts_with(b"<!--") {
            Some(b"-->".as_slice())
        } else {
            None
        };
        if let Some(close) = skip {
            match utf8[i..].windows(3).position(|w| w == close) {
                Some(n) => {
                    at = i + n + 3;
                    continue;
                }
                None => break,
            }
        }
        let end = name_end(i + 1);
        let name = &utf8[i + 1..end];
        if name == b"item" || name == b"entry" {
            entry_tags += 1;
        } else if let Some(colon) = name.iter().position(|b| *b == b':') {
            let prefix = &name[..colon];
            if prefix != b"xml" && used.len() < 64 && !used.contains(&prefix) {
                used.push(prefix);
            }
        } else if rss && name == b"title" {
            // The title's text runs to the next `<`, which must end it or open CDATA.
            let Some(close) = utf8[end..].iter().position(|b| *b == b'>') else {
                break;
            };
            let content = end + close + 1;
            if let Some(next) = utf8[content..].iter().position(|b| *b == b'<') {
                let rest = &utf8[content + next..];
                if !rest.starts_with(b"</") && !rest.starts_with(b"<![CDATA[") {
                    return Scan {
                        entry_tags,
                        damaged: true,
                    };
                }
            }
        }
        at = end;
    }
    Scan {
        entry_tags,
        damaged: used.iter().any(|p| !declared.contains(p)),
    }
}

/// The offset of the next `<` or `x` (where start tags and `xmlns:` declarations begin).
fn memchr_any(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|b| *b == b'<' || *b == b'x')
}

/// The document with character references to U+0080..U+009F (`&#150;`, `&#x93;`) replaced by
/// the windows-1252 characters of those bytes, as HTML reads them: publishers mean a dash or
/// a quote, never the control character. One pass; a document without such a reference is
/// not copied.
fn windows_1252_references(utf8: std::borrow::Cow<'_, [u8]>) -> std::borrow::Cow<'_, [u8]> {
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
    std::borrow::Cow::Owned(out)
}

/// feed-rs's reading of a document (XML or JSON).
fn read(utf8: &[u8], base: &Url) -> Result<feed_rs::model::Feed, feed_rs::parser::ParseFeedError> {
    let parser = feed_rs::parser::Builder::new()
        .base_uri(Some(base.as_str()))
        // An empty id tells normalise that the feed gave none, so it can choose a fallback
        // that survives an edit of the title.
        .id_generator(|_, _, _| String::new())
        .build();
    // A panic inside the foreign parser (one was found by fuzzing) must fail this one feed,
    // not the task that polls the source.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parser.parse(utf8))).unwrap_or_else(
        |_| {
            Err(feed_rs::parser::ParseFeedError::IoError(
                std::io::Error::other("the XML parser gave up on this document"),
            ))
        },
    )
}

/// Whether the document's root element is `<html>`: a web page, not a feed.
fn is_html_page(utf8: &[u8]) -> bool {
    let Some(start) = root_element_start(utf8) else {
        return false;
    };
    let name: Vec<u8> = utf8[start + 1..]
        .iter()
        .take(5)
        .map(u8::to_ascii_lowercase)
        .collect();
    name.starts_with(b"html") && name.get(4).is_none_or(|b| !b.is_ascii_alphanumeric())
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
fn legacy_namespace_renamed(utf8: std::borrow::Cow<'_, [u8]>) -> std::borrow::Cow<'_, [u8]> {
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
    std::borrow::Cow::Owned(text.into_bytes())
}

/// RSS versions feed-rs reads as they are.
pub(crate) const RSS_VERSIONS_READ: [&str; 3] = ["2.0", "0.91", "0.92"];

/// feed-rs reads `<rss>` only with version 2.0, 0.91 or 0.92. An `<rss>` root without a
/// version, or with one of the versions that are RSS 2.0 in all but name (0.93, 0.94, 2.01,
/// 2.1, ...), is read as 2.0.
fn rss_root_as_feed_rs_reads_it(utf8: std::borrow::Cow<'_, [u8]>) -> std::borrow::Cow<'_, [u8]> {
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
    std::borrow::Cow::Owned(out)
}

/// Where the root element's `<` is: after the XML declaration, comments, processing
/// instructions and the doctype.
fn root_element_start(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'<' => {
                let rest = &bytes[i..];
                let skip_to = |end: &[u8]| {
                    rest.windows(end.len())
                        .position(|w| w == end)
                        .map(|p| i + p + end.len())
                };
                i = if rest.starts_with(b"<?") {
                    skip_to(b"?>")?
                } else if rest.starts_with(b"<!--") {
                    skip_to(b"-->")?
                } else if rest.starts_with(b"<!") {
                    // A doctype, possibly with an internal subset. Only the text up to the
                    // first `>` is searched for its `[`: every byte is looked at a bounded
                    // number of times, however many `<!` there are.
                    let close = rest.iter().position(|b| *b == b'>')?;
                    if rest[..close].contains(&b'[') {
                        skip_to(b"]>").or_else(|| skip_to(b"]"))?
                    } else {
                        i + close + 1
                    }
                } else {
                    return Some(i);
                };
            }
            _ => i += 1,
        }
    }
    None
}

fn classify(error: feed_rs::parser::ParseFeedError, body: &[u8], base: &Url) -> ParseError {
    use feed_rs::parser::{ParseErrorKind, ParseFeedError};
    let head = String::from_utf8_lossy(&body[..body.len().min(4096)]).to_ascii_lowercase();
    if is_html_page(body) || head.trim_start().starts_with("<!doctype html") {
        let full = String::from_utf8_lossy(body);
        return ParseError::HtmlPage {
            advertised: advertised_feed(&full, base),
        };
    }
    match error {
        ParseFeedError::ParseError(ParseErrorKind::NoFeedRoot) => {
            ParseError::NotAFeed("no RSS, Atom or JSON Feed root element".to_owned())
        }
        ParseFeedError::IoError(e) => ParseError::Malformed(e.to_string()),
        other => ParseError::Malformed(other.to_string()),
    }
}

/// The feed URL an HTML page advertises with `<link rel="alternate" type="application/...">`.
fn advertised_feed(html: &str, base: &Url) -> Option<String> {
    let lower = html.to_ascii_lowercase();
    let mut from = 0;
    while let Some(at) = lower[from..].find("<link") {
        let start = from + at;
        let end = start + lower[start..].find('>')?;
        let tag = &lower[start..end];
        let is_feed = tag.contains("alternate")
            && (tag.contains("rss+xml") || tag.contains("atom+xml") || tag.contains("feed+json"));
        if is_feed {
            if let Some(href) = attribute(&html[start..end], "href") {
                return base.join(&href).ok().map(|u| u.to_string());
            }
        }
        from = end;
    }
    None
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let at = lower.find(&format!("{name}="))? + name.len() + 1;
    let rest = &tag[at..];
    let quote = rest.chars().next()?;
    let value = if quote == '"' || quote == '\'' {
        let rest = &rest[1..];
        &rest[..rest.find(quote)?]
    } else {
        rest.split_whitespace().next()?
    };
    Some(html_escape::decode_html_entities(value).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://example.com/feed.xml").unwrap()
    }

    #[test]
    fn empty_body_is_an_error() {
        assert_eq!(
            parse_feed(b"  \n", None, &base(), Utc::now()).unwrap_err(),
            ParseError::Empty
        );
    }

    #[test]
    fn html_page_names_its_feed() {
        let page = br#"<!DOCTYPE html><html><head><link rel="alternate" type="application/rss+xml" href="/rss"></head><body>hi</body></html>"#;
        let err = parse_feed(page, Some("text/html"), &base(), Utc::now()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "got an HTML page, not a feed (the page advertises a feed at https://example.com/rss)"
        );
    }

    #[test]
    fn rss_without_a_version_or_with_a_2_0_variant_is_read() {
        for root in [
            "<rss>",
            "<rss version=\"0.94\">",
            "<rss version='2.01' xmlns:x=\"y\">",
            "<rss\nversion=\"\">",
        ] {
            let body = format!(
                "<?xml version=\"1.0\"?>\n<!-- a comment <rss> -->\n{root}<channel><title>t</title><item><title>Item</title><link>/a</link></item></channel></rss>"
            );
            let feed = parse_feed(body.as_bytes(), None, &base(), Utc::now()).unwrap();
            assert_eq!(feed.entries.len(), 1, "{root}");
            assert_eq!(feed.entries[0].title, "Item");
        }
    }

    #[test]
    fn truncated_xml_is_malformed() {
        let err = parse_feed(
            b"<rss version=\"2.0\"><channel><title>x</title><item><title>a",
            None,
            &base(),
            Utc::now(),
        );
        // feed-rs may recover what it read or fail; either way nothing panics and a failure is
        // reported as malformed, not as an HTML page.
        if let Err(e) = err {
            assert!(
                matches!(e, ParseError::Malformed(_) | ParseError::NotAFeed(_)),
                "{e}"
            );
        }
    }
}

#[cfg(test)]
mod lenient_tests {
    use super::*;

    fn parse(body: &str) -> ParsedFeed {
        let base = Url::parse("https://news.example.com/feed.xml").unwrap();
        parse_feed(body.as_bytes(), None, &base, Utc::now()).unwrap()
    }

    fn titles(feed: &ParsedFeed) -> Vec<&str> {
        feed.entries.iter().map(|e| e.title.as_str()).collect()
    }

    #[test]
    fn a_well_formed_feed_is_not_marked_recovered() {
        let feed = parse("<rss version=\"2.0\"><channel><title>t</title><item><title>a</title></item></channel></rss>");
        assert_eq!(titles(&feed), ["a"]);
        assert!(feed.recovered.is_empty());
        assert_eq!(feed.recovery_note(), None);
    }

    #[test]
    fn one_unterminated_entity_no_longer_loses_the_feed() {
        let feed = parse("<rss version=\"2.0\"><channel><title>t</title><item><title>Q&A: GPT &mdash; what&rsquo;s next</title><link>https://a.example/?a=1&b=2</link></item><item><title>b</title></item></channel></rss>");
        assert_eq!(titles(&feed), ["Q&A: GPT — what’s next", "b"]);
        assert_eq!(
            feed.entries[0].url.as_deref(),
            Some("https://a.example/?a=1&b=2")
        );
        assert_eq!(
            feed.recovery_note().as_deref(),
            Some("recovered (unescaped &, HTML entities)")
        );
    }

    #[test]
    fn an_entry_feed_rs_refuses_is_skipped_alone() {
        // A Media RSS title of a type feed-rs does not know, under a prefix the repair does
        // not look for: feed-rs refuses the entry, and only that one.
        let feed = parse("<feed xmlns=\"http://www.w3.org/2005/Atom\" xmlns:m=\"http://search.yahoo.com/mrss/\"><title>t</title><entry><title>good</title><id>1</id></entry><entry><title>bad</title><id>2</id><m:group><m:title type=\"bogus\">x</m:title></m:group></entry><entry><title>also good</title><id>3</id></entry><bogus></feed>");
        assert_eq!(titles(&feed), ["good", "also good"]);
        assert!(
            feed.recovered
                .iter()
                .any(|r| r == "1 unreadable entry skipped"),
            "{:?}",
            feed.recovered
        );
    }

    #[test]
    fn dublin_core_stands_in_for_missing_titles_dates_and_authors() {
        let feed = parse("<rss version=\"2.0\" xmlns:dc=\"http://purl.org/dc/elements/1.1/\"><channel><title>t</title><item><dc:title>大模型 &amp; 智能体</dc:title><dc:date>2026-11-10T08:00:00+08:00</dc:date><link>https://a.example/1</link></item><item><title>own</title><author>li@example.com (Li Wei)</author><link>https://a.example/2</link></item></channel></rss>");
        assert_eq!(titles(&feed), ["大模型 & 智能体", "own"]);
        assert_eq!(
            feed.entries[0].published.map(|d| d.to_rfc3339()).as_deref(),
            Some("2026-11-10T00:00:00+00:00")
        );
        assert_eq!(feed.entries[1].authors, ["Li Wei"]);
    }

    #[test]
    fn an_atom_feed_inside_an_xhtml_page_is_read() {
        let feed = parse("<?xml version=\"1.0\"?><!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0//EN\" \"x\"><html xmlns=\"http://www.w3.org/1999/xhtml\"><body><feed xmlns=\"http://www.w3.org/2005/Atom\"><title>t</title><entry><title>inside</title><id>1</id></entry></feed></body></html>");
        assert_eq!(titles(&feed), ["inside"]);
        assert!(!feed.recovered.is_empty());
    }

    #[test]
    fn rss_1_0_items_without_a_link_are_kept() {
        let feed = parse("<rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\" xmlns=\"http://purl.org/rss/1.0/\"><channel rdf:about=\"https://a.example/\"><title>t</title></channel><item rdf:about=\"https://a.example/1\"><title>one</title></item><item><title>two</title></item></rdf:RDF>");
        assert_eq!(titles(&feed), ["one", "two"]);
        assert_eq!(feed.entries[0].url.as_deref(), Some("https://a.example/1"));
        assert_eq!(feed.meta.title.as_deref(), Some("t"));
    }

    #[test]
    fn references_to_c1_controls_mean_windows_1252_and_raw_controls_stay_controls() {
        let out = windows_1252_references(std::borrow::Cow::Borrowed(
            "GPT-5 &#150; &#x93;new&#148; &#129; \u{85} &#8212;".as_bytes(),
        ));
        assert_eq!(
            String::from_utf8(out.into_owned()).unwrap(),
            "GPT-5 – “new” &#129; \u{85} &#8212;"
        );
        let plain = "no references here &amp; &#233;".as_bytes();
        assert!(matches!(
            windows_1252_references(std::borrow::Cow::Borrowed(plain)),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn titles_escaped_twice_are_decoded() {
        let feed = parse("<rss version=\"2.0\"><channel><title>t</title><item><title><![CDATA[AT&amp;T cuts $&#x0024;3449]]></title></item></channel></rss>");
        assert_eq!(titles(&feed), ["AT&T cuts $$3449"]);
    }
}

#[cfg(test)]
mod entity_tests {
    use super::*;

    #[test]
    fn billion_laughs_is_not_expanded() {
        let mut entities = String::from("<!ENTITY lol \"lol\">");
        for i in 1..=9 {
            let prev = if i == 1 {
                "lol".to_owned()
            } else {
                format!("lol{}", i - 1)
            };
            entities.push_str(&format!(
                "<!ENTITY lol{i} \"{}\">",
                format!("&{prev};").repeat(10)
            ));
        }
        let body = format!("<?xml version=\"1.0\"?><!DOCTYPE rss [{entities}]><rss version=\"2.0\"><channel><title>t</title><item><title>&lol9;</title><guid>1</guid></item></channel></rss>");
        let base = Url::parse("https://e.example/").unwrap();
        // The entity reference stays as written: nothing is expanded.
        let feed = parse_feed(body.as_bytes(), None, &base, Utc::now()).unwrap();
        assert_eq!(feed.entries[0].title, "&lol9;");
    }
}
