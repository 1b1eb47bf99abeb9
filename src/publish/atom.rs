//! The Atom 1.0 document of a feed's entries (RFC 4287).

use super::*;

pub(super) fn atom(feed: &FeedConfig, entries: &[OutputEntry], links: &Links) -> Vec<u8> {
    let mut x = Xml::new();
    x.open("feed", &[("xmlns", "http://www.w3.org/2005/Atom")]);
    x.text("id", &[], &links.id);
    x.text("title", &[("type", "text")], &feed.title);
    if let Some(d) = &feed.description {
        x.text("subtitle", &[("type", "text")], d);
    }
    x.text("updated", &[], &rfc3339(newest_change(entries)));
    x.empty(
        "link",
        &[
            ("rel", "self"),
            ("type", "application/atom+xml"),
            ("href", &links.self_url),
        ],
    );
    x.empty(
        "link",
        &[
            ("rel", "alternate"),
            ("type", "text/html"),
            ("href", &links.home),
        ],
    );
    for (rel, href) in links.paging() {
        if rel == "hub" {
            x.empty("link", &[("rel", rel), ("href", href)]);
            continue;
        }
        x.empty(
            "link",
            &[
                ("rel", rel),
                ("type", "application/atom+xml"),
                ("href", href),
            ],
        );
    }
    x.open("author", &[]);
    x.text("name", &[], &feed.title);
    x.close("author");
    x.text(
        "generator",
        &[("uri", HOMEPAGE), ("version", VERSION)],
        GENERATOR,
    );
    for e in entries {
        let item = &e.item;
        x.open("entry", &[]);
        x.text("id", &[], &entry_id(item.id));
        x.text("title", &[("type", "text")], &item.title);
        if let Some(url) = &item.url {
            x.empty(
                "link",
                &[("rel", "alternate"), ("type", "text/html"), ("href", url)],
            );
        }
        for enc in &item.enclosures {
            let length = enc.length.map(|l| l.to_string());
            let mut attrs = vec![("rel", "enclosure"), ("href", enc.url.as_str())];
            if let Some(t) = &enc.mime_type {
                attrs.push(("type", t));
            }
            if let Some(l) = &length {
                attrs.push(("length", l));
            }
            x.empty("link", &attrs);
        }
        x.text("published", &[], &rfc3339(item.published));
        let updated = entry_updated(item).unwrap_or(item.published);
        x.text("updated", &[], &rfc3339(updated));
        for author in &item.authors {
            x.open("author", &[]);
            x.text("name", &[], author);
            x.close("author");
        }
        for c in &item.categories {
            x.empty("category", &[("term", c)]);
        }
        if let (Some(s), Some(_)) = (summary_text(e), &item.content_html) {
            x.text("summary", &[("type", "text")], &s);
        }
        match body_html(e) {
            Some(html) => x.text("content", &[("type", "html")], &html),
            // RFC 4287 4.1.2: an entry without an alternate link must have content.
            None if item.url.is_none() => x.text("content", &[("type", "text")], ""),
            None => {}
        }
        x.open("source", &[]);
        if let Some(feed_url) = &e.source.feed_url {
            x.text("id", &[], feed_url);
        }
        x.text("title", &[("type", "text")], &e.source.title);
        if let Some(site) = &e.source.site_url {
            x.empty(
                "link",
                &[("rel", "alternate"), ("type", "text/html"), ("href", site)],
            );
        }
        if let Some(feed_url) = &e.source.feed_url {
            x.empty("link", &[("rel", "self"), ("href", feed_url)]);
        }
        x.close("source");
        x.close("entry");
    }
    x.close("feed");
    x.finish()
}
