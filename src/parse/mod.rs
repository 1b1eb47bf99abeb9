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
    let utf8 = rss090_as_rss10(decoded.utf8);
    let parser = feed_rs::parser::Builder::new()
        .base_uri(Some(base.as_str()))
        // An empty id tells normalise that the feed gave none, so it can choose a fallback
        // that survives an edit of the title.
        .id_generator(|_, _, _| String::new())
        .build();
    let feed = parser
        .parse(utf8.as_ref())
        .map_err(|e| classify(e, &utf8, base))?;
    Ok(normalise::feed(feed, base, now))
}

/// The namespaces of RSS 0.90 (as specified, and as some feeds spell it), which feed-rs does
/// not know.
const RSS_090_NS: [&str; 2] = [
    "http://my.netscape.com/rdf/simple/0.9/",
    "http://channel.netscape.com/rdf/simple/0.9/",
];
/// The namespace of RSS 1.0, whose elements RSS 0.90 shares.
const RSS_10_NS: &str = "http://purl.org/rss/1.0/";

/// RSS 0.90 is RSS 1.0's shape under another namespace: renaming the namespace lets feed-rs
/// read its items.
fn rss090_as_rss10(utf8: std::borrow::Cow<'_, [u8]>) -> std::borrow::Cow<'_, [u8]> {
    let head = &utf8[..utf8.len().min(2048)];
    let Some(ns) = RSS_090_NS.iter().find(|ns| {
        let needle = ns.as_bytes();
        head.windows(needle.len()).any(|w| w == needle)
    }) else {
        return utf8;
    };
    let text = String::from_utf8_lossy(&utf8).replacen(ns, RSS_10_NS, 1);
    std::borrow::Cow::Owned(text.into_bytes())
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
