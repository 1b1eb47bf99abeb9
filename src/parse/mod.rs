//! Parsing and normalising: feed bytes in, [`Entry`] values out.
//!
//! The body is decoded to UTF-8 by [`charset`], parsed by feed-rs (RSS 0.9x/1.0/2.0, Atom,
//! JSON Feed), and each entry is normalised by [`normalise`]: plain-text titles, absolute links,
//! UTC dates, sanitised HTML. feed-rs is used here and nowhere else. This module knows nothing
//! about the store, about HTTP, or about other sources.

pub mod charset;
pub mod normalise;

use chrono::{DateTime, Utc};
use url::Url;

use crate::model::{Entry, FeedMeta};

/// A parsed, normalised feed.
#[derive(Debug, Clone, Default)]
pub struct ParsedFeed {
    pub meta: FeedMeta,
    pub entries: Vec<Entry>,
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
pub fn parse_feed(
    body: &[u8],
    content_type: Option<&str>,
    base: &Url,
    now: DateTime<Utc>,
) -> Result<ParsedFeed, ParseError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ParseError::Empty);
    }
    let decoded = charset::decode(body, content_type);
    let utf8 = rss_root_as_feed_rs_reads_it(legacy_namespace_renamed(decoded.utf8));
    let parser = feed_rs::parser::Builder::new()
        .base_uri(Some(base.as_str()))
        // An empty id tells normalise that the feed gave none, so it can choose a fallback
        // that survives an edit of the title.
        .id_generator(|_, _, _| String::new())
        .build();
    // A panic inside the foreign parser (one was found by fuzzing) must fail this one feed,
    // not the task that polls the source.
    let feed =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parser.parse(utf8.as_ref())))
            .map_err(|_| ParseError::Malformed("the XML parser gave up on this document".into()))?
            .map_err(|e| classify(e, &utf8, base))?;
    Ok(normalise::feed(feed, base, now))
}

/// Namespaces of older formats that feed-rs does not know, each with the namespace of the
/// format whose elements it shares: RSS 0.90 (as specified, and as some feeds spell it) is
/// RSS 1.0's shape, Atom 0.3 is Atom 1.0's (its `issued`/`modified` dates are not read, so
/// such entries get the time they were first seen).
const LEGACY_NAMESPACES: [(&str, &str); 3] = [
    (
        "http://my.netscape.com/rdf/simple/0.9/",
        "http://purl.org/rss/1.0/",
    ),
    (
        "http://channel.netscape.com/rdf/simple/0.9/",
        "http://purl.org/rss/1.0/",
    ),
    ("http://purl.org/atom/ns#", "http://www.w3.org/2005/Atom"),
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
const RSS_VERSIONS_READ: [&str; 3] = ["2.0", "0.91", "0.92"];

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
                    // A doctype, possibly with an internal subset.
                    match rest.iter().position(|b| *b == b'[') {
                        Some(open) if open < rest.iter().position(|b| *b == b'>')? => {
                            skip_to(b"]>").or_else(|| skip_to(b"]"))?
                        }
                        _ => skip_to(b">")?,
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
    if head.contains("<html") || head.contains("<!doctype html") {
        let full = String::from_utf8_lossy(body);
        return ParseError::HtmlPage {
            advertised: advertised_feed(&full, base),
        };
    }
    match error {
        ParseFeedError::ParseError(ParseErrorKind::NoFeedRoot) => {
            ParseError::NotAFeed("no RSS, Atom or JSON Feed root element".to_owned())
        }
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
