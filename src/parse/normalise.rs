//! Normalising feed-rs's model into [`Entry`] values that every later stage can trust:
//! titles as plain text, links absolute (xml:base, then the feed's URL), dates in UTC and
//! within reason, HTML sanitised by ammonia with relative URLs made absolute.

use chrono::{DateTime, Duration, TimeZone, Utc};
use feed_rs::model;
use url::Url;

use super::dublin_core::DublinCore;
use super::ParsedFeed;
use crate::model::{Enclosure, Entry, FeedMeta};
use crate::text::{collapse_whitespace, html_to_text};

/// Dates further in the future than this are treated as missing: a clock a little ahead is
/// forgiven, but not a scheduled post or a zone-less local time read as UTC.
const FUTURE_TOLERANCE: Duration = Duration::minutes(10);

/// Turns a parsed feed into normalised entries. `base` is the URL the feed was fetched from;
/// `recovered` says what was mended to read it; `dublin_core` holds each entry's Dublin Core
/// fields (used only when there is one record per entry), the fallbacks for a missing title,
/// date or author.
pub fn feed(
    feed: model::Feed,
    base: &Url,
    now: DateTime<Utc>,
    recovered: Vec<String>,
    dublin_core: &[DublinCore],
) -> ParsedFeed {
    let site_url = pick_link(&feed.links, base);
    let meta = FeedMeta {
        title: feed.title.as_ref().map(text_of).filter(|t| !t.is_empty()),
        site_url,
        ttl: feed
            .ttl
            .map(|minutes| std::time::Duration::from_secs(u64::from(minutes) * 60)),
    };
    let aligned = dublin_core.len() == feed.entries.len();
    let entries = feed
        .entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let dc = dublin_core.get(i).filter(|_| aligned);
            entry(e, base, now, dc)
        })
        .collect();
    ParsedFeed {
        meta,
        entries,
        recovered,
    }
}

fn entry(
    e: model::Entry,
    feed_base: &Url,
    now: DateTime<Utc>,
    dublin_core: Option<&DublinCore>,
) -> Entry {
    let base = e
        .base
        .as_deref()
        .and_then(|b| feed_base.join(b).ok())
        .unwrap_or_else(|| feed_base.clone());
    let url = pick_link(&e.links, &base);
    let html_base = url
        .as_deref()
        .and_then(|u| Url::parse(u).ok())
        .unwrap_or_else(|| base.clone());
    let summary_html = e
        .summary
        .as_ref()
        .map(|t| html_of(t, &html_base))
        .filter(|h| !h.trim().is_empty());
    let content_html = e
        .content
        .as_ref()
        .and_then(|c| {
            let body = c.body.as_deref()?;
            let is_html = c.content_type.to_string().contains("html");
            Some(sanitise_or_escape(body, is_html, &html_base))
        })
        .filter(|h| !h.trim().is_empty());
    let mut title = e.title.as_ref().map(text_of).unwrap_or_default();
    if title.is_empty() {
        title = dublin_core
            .and_then(|dc| dc.title.as_deref())
            .map(html_to_text)
            .unwrap_or_default();
    }
    if title.is_empty() {
        title = fallback_title(
            summary_html.as_deref().or(content_html.as_deref()),
            url.as_deref(),
        );
    }
    let guid = Some(e.id.trim().to_owned()).filter(|g| !g.is_empty());
    let mut authors: Vec<String> = e.authors.iter().filter_map(person_name).collect();
    if authors.is_empty() {
        authors.extend(
            dublin_core
                .and_then(|dc| dc.creator.as_deref())
                .map(collapse_whitespace),
        );
    }
    let published = e
        .published
        .or(e.updated)
        .or_else(|| dublin_core.and_then(DublinCore::date));
    Entry {
        guid,
        url,
        title,
        summary_html,
        content_html,
        authors,
        categories: e
            .categories
            .iter()
            .map(|c| collapse_whitespace(c.label.as_deref().unwrap_or(&c.term)))
            .filter(|c| !c.is_empty())
            .collect(),
        enclosures: enclosures(&e, &base),
        published: sane_date(published, now),
        updated: sane_date(e.updated, now),
    }
}

/// A person's name as a reader shows it: RSS's `email (Name)` gives `Name` (feed-rs keeps the
/// parentheses), and a person known only by an email address is left out.
fn person_name(p: &model::Person) -> Option<String> {
    let name = collapse_whitespace(p.name.as_deref().unwrap_or_default());
    let name = match name.strip_prefix('(').and_then(|n| n.strip_suffix(')')) {
        Some(inner) if !inner.contains(['(', ')']) => inner.trim().to_owned(),
        _ => name,
    };
    (!name.is_empty()).then_some(name)
}

/// The main link: the first `alternate` (or rel-less) link, made absolute.
fn pick_link(links: &[model::Link], base: &Url) -> Option<String> {
    let usable = |l: &&model::Link| {
        matches!(l.rel.as_deref(), None | Some("alternate") | Some("")) && !l.href.trim().is_empty()
    };
    let link = links
        .iter()
        .filter(usable)
        .find(|l| l.media_type.as_deref().is_none_or(|t| t.contains("html")))
        .or_else(|| links.iter().find(usable))?;
    absolute(&link.href, base)
}

fn absolute(href: &str, base: &Url) -> Option<String> {
    let url = base.join(href.trim()).ok()?;
    matches!(url.scheme(), "http" | "https").then(|| url.to_string())
}

fn enclosures(e: &model::Entry, base: &Url) -> Vec<Enclosure> {
    let mut out: Vec<Enclosure> = Vec::new();
    for media in &e.media {
        for content in &media.content {
            if let Some(url) = content
                .url
                .as_ref()
                .and_then(|u| absolute(u.as_str(), base))
            {
                out.push(Enclosure {
                    url,
                    mime_type: content.content_type.as_ref().map(|t| t.to_string()),
                    length: content.size,
                });
            }
        }
    }
    for link in e
        .links
        .iter()
        .filter(|l| l.rel.as_deref() == Some("enclosure"))
    {
        if let Some(url) = absolute(&link.href, base) {
            out.push(Enclosure {
                url,
                mime_type: link.media_type.clone(),
                length: link.length,
            });
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|enc| seen.insert(enc.url.clone()));
    out
}

/// A text construct as plain text: HTML is reduced to its text, whitespace collapsed. Plain
/// text that still holds entity references (`AT&amp;T` in CDATA, `&#x0024;`) was escaped once
/// too often by its publisher, and is decoded as readers do.
fn text_of(t: &model::Text) -> String {
    let content = &t.content;
    if t.content_type.to_string().contains("html") || looks_like_markup(content) {
        html_to_text(content)
    } else if content.contains('&') {
        collapse_whitespace(&html_escape::decode_html_entities(content))
    } else {
        collapse_whitespace(content)
    }
}

fn looks_like_markup(s: &str) -> bool {
    s.contains('<')
        && [
            "<b>", "<i>", "<em>", "<strong>", "<br", "<span", "<a ", "<p>", "<code>", "</",
        ]
        .iter()
        .any(|tag| s.to_ascii_lowercase().contains(tag))
}

/// A text construct as safe HTML.
fn html_of(t: &model::Text, base: &Url) -> String {
    let is_html = t.content_type.to_string().contains("html") || looks_like_markup(&t.content);
    sanitise_or_escape(&t.content, is_html, base)
}

fn sanitise_or_escape(body: &str, is_html: bool, base: &Url) -> String {
    if is_html {
        sanitise(body, base)
    } else {
        let escaped = html_escape::encode_text(body.trim());
        format!("<p>{escaped}</p>")
    }
}

/// Sanitises HTML (see [`crate::sanitise`]), making relative URLs absolute against `base`.
pub fn sanitise(html: &str, base: &Url) -> String {
    crate::sanitise::clean(html, Some(base))
}

fn fallback_title(html: Option<&str>, url: Option<&str>) -> String {
    if let Some(text) = html.map(html_to_text).filter(|t| !t.is_empty()) {
        let mut short: String = text.chars().take(80).collect();
        if short.len() < text.len() {
            short.push('…');
        }
        return short;
    }
    url.map(str::to_owned)
        .unwrap_or_else(|| "(untitled)".to_owned())
}

/// A date is kept when it is after 1970 and not more than [`FUTURE_TOLERANCE`] ahead.
fn sane_date(date: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let earliest = Utc.timestamp_opt(86_400, 0).single()?;
    date.filter(|d| *d >= earliest && *d <= now + FUTURE_TOLERANCE)
}

#[cfg(test)]
mod tests {
    use super::super::parse_feed;
    use super::*;

    #[test]
    fn rss_item_is_normalised() {
        let xml = r#"<?xml version="1.0"?>
<rss version="2.0"><channel><title>T</title><link>https://example.com/</link>
<item><title>Hello &lt;b&gt;bold&lt;/b&gt; news</title><link>/posts/1</link><guid isPermaLink="false">g1</guid>
<pubDate>Tue, 10 Nov 2026 08:00:00 +0800</pubDate>
<description>&lt;p onclick="x()"&gt;Body &lt;a href="/a"&gt;link&lt;/a&gt;&lt;script&gt;bad()&lt;/script&gt;&lt;/p&gt;</description>
</item></channel></rss>"#;
        let base = Url::parse("https://example.com/feed.xml").unwrap();
        let feed = parse_feed(xml.as_bytes(), None, &base, Utc::now()).unwrap();
        let e = &feed.entries[0];
        assert_eq!(e.title, "Hello bold news");
        assert_eq!(e.url.as_deref(), Some("https://example.com/posts/1"));
        assert_eq!(e.guid.as_deref(), Some("g1"));
        assert_eq!(
            e.published.unwrap().to_rfc3339(),
            "2026-11-10T00:00:00+00:00"
        );
        let summary = e.summary_html.as_deref().unwrap();
        assert!(
            summary.contains(r#"href="https://example.com/a""#),
            "{summary}"
        );
        assert!(
            !summary.contains("script") && !summary.contains("onclick"),
            "{summary}"
        );
    }

    #[test]
    fn absurd_dates_in_a_feed_become_missing() {
        let now = Utc::now();
        // A local time without a zone, two hours ahead when read as UTC (as a UTC+8 site's
        // "now" would be).
        let zoneless = (now + Duration::hours(2))
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string();
        let items: String = [
            "Sat, 01 Jan 0000 00:00:00 GMT".to_owned(),
            "Fri, 31 Dec 9999 23:59:59 GMT".to_owned(),
            zoneless,
            "not a date".to_owned(),
            "Tue, 10 Nov 2026 08:00:00 +0800".to_owned(),
        ]
        .iter()
        .enumerate()
        .map(|(i, d)| {
            format!("<item><guid>{i}</guid><title>t{i}</title><pubDate>{d}</pubDate></item>")
        })
        .collect();
        let xml = format!("<rss version=\"2.0\"><channel><title>T</title>{items}</channel></rss>");
        let base = Url::parse("https://example.com/feed.xml").unwrap();
        let feed = parse_feed(xml.as_bytes(), None, &base, now).unwrap();
        let dates: Vec<_> = feed.entries.iter().map(|e| e.published).collect();
        assert_eq!(&dates[..4], &[None, None, None, None], "{dates:?}");
        assert!(dates[4].is_some());
    }

    #[test]
    fn future_and_ancient_dates_are_dropped() {
        let now = Utc::now();
        assert_eq!(sane_date(Some(now + Duration::days(30)), now), None);
        assert_eq!(sane_date(Utc.timestamp_opt(0, 0).single(), now), None);
        assert_eq!(sane_date(Some(now), now), Some(now));
    }
}
