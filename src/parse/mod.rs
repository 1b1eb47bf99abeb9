//! Parsing and normalising: feed bytes in, [`Entry`] values out.
//!
//! The body is decoded to UTF-8 by [`charset`], parsed by feed-rs (RSS 0.9x/1.0/2.0, Atom,
//! JSON Feed), and each entry is normalised by [`normalise`]: plain-text titles, absolute links,
//! UTC dates, sanitised HTML. feed-rs is used here and nowhere else. This module knows nothing
//! about the store, about HTTP, or about other sources.
//!
//! Here: [`parse_feed`], the readings it tries (strict, repaired, entry by entry) and what a
//! refused body is ([`ParseError`]); beside it `scan` (looking at a document: its root, a
//! page or a feed, entries a strict reading lost) and `rewrite` (what feed-rs would misread,
//! rewritten before it reads), `repair` (a broken document made well-formed) and
//! `dublin_core`.

pub mod charset;
pub mod dublin_core;
pub mod normalise;
pub mod repair;
mod rewrite;
mod scan;

use chrono::{DateTime, Utc};
use url::Url;

use crate::model::{Entry, FeedMeta};
pub(crate) use rewrite::RSS_VERSIONS_READ;
use rewrite::{legacy_namespace_renamed, rss_root_as_feed_rs_reads_it, windows_1252_references};
use scan::{attribute, is_html_page, scan, Scan};

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
