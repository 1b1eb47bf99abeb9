//! The RSS 2.0 document of a feed's entries.

use super::*;

pub(super) fn rss(
    config: &Config,
    feed: &FeedConfig,
    entries: &[OutputEntry],
    links: &Links,
) -> Vec<u8> {
    let mut x = Xml::new();
    x.open(
        "rss",
        &[
            ("version", "2.0"),
            ("xmlns:atom", "http://www.w3.org/2005/Atom"),
            ("xmlns:dc", "http://purl.org/dc/elements/1.1/"),
        ],
    );
    x.open("channel", &[]);
    x.text("title", &[], &feed.title);
    x.text("link", &[], &format!("{}/", config.server.base_url));
    let description = feed
        .description
        .clone()
        .unwrap_or_else(|| format!("{} (feedmux)", feed.title));
    x.text("description", &[], &description);
    x.empty(
        "atom:link",
        &[
            ("href", &links.self_url),
            ("rel", "self"),
            ("type", "application/rss+xml"),
        ],
    );
    for (rel, href) in links.paging() {
        if rel == "hub" {
            x.empty("atom:link", &[("href", href), ("rel", rel)]);
            continue;
        }
        x.empty(
            "atom:link",
            &[
                ("href", href),
                ("rel", rel),
                ("type", "application/rss+xml"),
            ],
        );
    }
    x.text("lastBuildDate", &[], &newest_change(entries).to_rfc2822());
    x.text("generator", &[], &format!("{GENERATOR} {VERSION}"));
    for e in entries {
        let item = &e.item;
        x.open("item", &[]);
        x.text("title", &[], &item.title);
        if let Some(url) = &item.url {
            x.text("link", &[], url);
        }
        if let Some(html) = body_html(e) {
            x.text("description", &[], &html);
        }
        for author in &item.authors {
            x.text("dc:creator", &[], author);
        }
        for c in &item.categories {
            x.text("category", &[], c);
        }
        if let Some(enc) = item.enclosures.first() {
            let length = enc.length.unwrap_or(0).to_string();
            let mime = enc
                .mime_type
                .as_deref()
                .unwrap_or("application/octet-stream");
            x.empty(
                "enclosure",
                &[("url", &enc.url), ("length", &length), ("type", mime)],
            );
        }
        x.text("guid", &[("isPermaLink", "false")], &entry_id(item.id));
        x.text("pubDate", &[], &item.published.to_rfc2822());
        // RSS 2.0's <source> must name the feed's URL: without one, there is no <source>.
        if let Some(feed_url) = &e.source.feed_url {
            x.text("source", &[("url", feed_url)], &e.source.title);
        }
        x.close("item");
    }
    x.close("channel");
    x.close("rss");
    x.finish()
}
