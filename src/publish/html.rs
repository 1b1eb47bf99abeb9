//! The browser view of an output feed (`/feeds/{name}.html`): a readable page of the feed's
//! entries, its sources, how to subscribe and links to the three feed formats.
//!
//! It is one self-contained document: inline CSS, no script, no external asset, no XSLT.
//! Entry bodies are the same sanitised HTML the feeds carry; every other text is escaped and
//! only `http(s)` URLs become links. Rendering only: this module reads nothing and does not
//! decide which entries are shown (that is [`super::collect_page`]).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::{body_html, feed_url, Format, Links, OutputEntry, Page, GENERATOR, VERSION};
use crate::config::{Config, FeedConfig};

const STYLE: &str = "\
:root{color-scheme:light dark;--muted:#666;--line:#ddd;--accent:#0b57d0}\
@media (prefers-color-scheme:dark){:root{--muted:#aaa;--line:#444;--accent:#8ab4f8}}\
body{font:16px/1.55 system-ui,-apple-system,'Segoe UI','Noto Sans','PingFang SC','Microsoft YaHei',sans-serif;max-width:46rem;margin:0 auto;padding:1.5rem 1rem 3rem}\
a{color:var(--accent)}h1{font-size:1.7rem;margin:.2rem 0}h2{font-size:1.2rem;margin-top:2rem}\
.lead{color:var(--muted);margin-top:0}\
.subscribe{border:1px solid var(--line);border-radius:8px;padding:.6rem 1rem;margin:1rem 0}\
.subscribe h2{margin-top:.4rem}.subscribe ul{padding-left:1.2rem}code{font-size:.9em;word-break:break-all}\
article{border-bottom:1px solid var(--line);padding:1rem 0}\
article h3{font-size:1.1rem;margin:0 0 .2rem}\
.meta{color:var(--muted);font-size:.85rem;margin:0 0 .5rem}\
.content{overflow-wrap:anywhere}.content img,.content video{max-width:100%;height:auto}\
.content pre{overflow-x:auto}\
nav{display:flex;justify-content:space-between;margin:1.5rem 0}\
footer{color:var(--muted);font-size:.8rem;margin-top:2rem}";

fn esc(s: &str) -> String {
    html_escape::encode_text(s).into_owned()
}

fn attr(s: &str) -> String {
    html_escape::encode_double_quoted_attribute(s).into_owned()
}

/// `url` when it is a web address a page may link to; `None` for `javascript:`, `data:`,
/// `file:` and anything else.
fn web_url(url: &str) -> Option<&str> {
    let parsed = url::Url::parse(url).ok()?;
    matches!(parsed.scheme(), "http" | "https").then_some(url)
}

/// `text` linked to `url` when that is a web address, else `text` alone (both escaped).
fn link_or_text(text: &str, url: Option<&str>) -> String {
    match url.and_then(web_url) {
        Some(u) => format!(
            "<a href=\"{}\" rel=\"noopener noreferrer\">{}</a>",
            attr(u),
            esc(text)
        ),
        None => esc(text),
    }
}

fn when(t: DateTime<Utc>) -> String {
    format!(
        "<time datetime=\"{}\">{}</time>",
        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        t.format("%Y-%m-%d %H:%M UTC")
    )
}

/// The page of `page`'s entries.
pub(super) fn page(config: &Config, feed: &FeedConfig, page: &Page, links: &Links) -> Vec<u8> {
    let mut h = String::with_capacity(4096 + page.entries.len() * 2048);
    let title = &feed.title;
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{} · feedmux</title>\n",
        esc(title)
    );
    let formats = [
        (Format::Atom, "Atom"),
        (Format::Rss, "RSS"),
        (Format::Json, "JSON Feed"),
    ];
    for (format, _) in formats {
        let _ = writeln!(
            h,
            "<link rel=\"alternate\" type=\"{}\" title=\"{}\" href=\"{}\">",
            format.media_type(),
            attr(title),
            attr(&feed_url(config, &feed.name, format))
        );
    }
    let _ = write!(
        h,
        "<style>{STYLE}</style>\n</head>\n<body>\n<header>\n<h1>{}</h1>\n",
        esc(title)
    );
    if let Some(d) = &feed.description {
        let _ = writeln!(h, "<p class=\"lead\">{}</p>", esc(d));
    }
    if let Some((q, _)) = &page.view.query {
        let _ = writeln!(
            h,
            "<p class=\"lead\">Entries matching <strong>{}</strong></p>",
            esc(q)
        );
    }
    h.push_str(
        "</header>\n<section class=\"subscribe\" id=\"subscribe\">\n<h2>Subscribe</h2>\n\
         <p>This is a news feed. To follow it, copy one of these addresses into your feed reader \
         (newsboat, NetNewsWire, Thunderbird, Feedly, Inoreader, Miniflux, FreshRSS, …); \
         most readers also accept the address of this page.</p>\n<ul>\n",
    );
    for (format, name) in formats {
        let url = feed_url(config, &feed.name, format);
        let _ = writeln!(
            h,
            "<li>{name}: <a href=\"{}\" type=\"{}\"><code>{}</code></a></li>",
            attr(&url),
            format.media_type(),
            esc(&url)
        );
    }
    h.push_str("</ul>\n</section>\n<main>\n");
    let _ = writeln!(
        h,
        "<h2>Entries <small class=\"meta\">({} shown)</small></h2>",
        page.entries.len()
    );
    if page.entries.is_empty() {
        h.push_str("<p class=\"meta\">No entries yet.</p>\n");
    }
    for entry in &page.entries {
        article(&mut h, entry);
    }
    if links.next.is_some() || links.first.is_some() {
        h.push_str("<nav>\n");
        match &links.first {
            Some(first) => {
                let _ = writeln!(
                    h,
                    "<a rel=\"first\" href=\"{}\">← Newest entries</a>",
                    attr(first)
                );
            }
            None => h.push_str("<span></span>\n"),
        }
        if let Some(next) = &links.next {
            let _ = writeln!(
                h,
                "<a rel=\"next\" href=\"{}\">Older entries →</a>",
                attr(next)
            );
        }
        h.push_str("</nav>\n");
    }
    h.push_str("</main>\n<section id=\"sources\">\n<h2>Sources</h2>\n<ul>\n");
    for source in &page.sources {
        let _ = write!(
            h,
            "<li>{}",
            link_or_text(&source.title, source.site_url.as_deref())
        );
        if let Some(u) = source.feed_url.as_deref().and_then(web_url) {
            let _ = write!(
                h,
                " <small>(<a href=\"{}\" rel=\"noopener noreferrer\">feed</a>)</small>",
                attr(u)
            );
        }
        h.push_str("</li>\n");
    }
    let _ = write!(
        h,
        "</ul>\n</section>\n<footer>Served by {GENERATOR} {VERSION}. <a href=\"{}\">All feeds</a></footer>\n</body>\n</html>\n",
        attr(&links.home)
    );
    h.into_bytes()
}

fn article(h: &mut String, entry: &OutputEntry) {
    let item = &entry.item;
    let title = if item.title.is_empty() {
        "(untitled)"
    } else {
        &item.title
    };
    let _ = write!(
        h,
        "<article>\n<h3>{}</h3>\n<p class=\"meta\">{} · {}",
        link_or_text(title, item.url.as_deref()),
        when(item.published),
        link_or_text(&entry.source.title, entry.source.site_url.as_deref())
    );
    if !item.authors.is_empty() {
        let _ = write!(h, " · {}", esc(&item.authors.join(", ")));
    }
    h.push_str("</p>\n");
    if let Some(body) = body_html(entry) {
        // Sanitised by ammonia, as in the feeds.
        let _ = writeln!(h, "<div class=\"content\">{body}</div>");
    }
    for enc in &item.enclosures {
        let Some(url) = web_url(&enc.url) else {
            continue;
        };
        let name = url
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or(url);
        let mut about = enc.mime_type.clone().unwrap_or_default();
        if let Some(len) = enc.length.filter(|l| *l > 0) {
            if !about.is_empty() {
                about.push_str(", ");
            }
            about.push_str(&format!("{:.1} MB", len as f64 / 1_000_000.0));
        }
        let _ = writeln!(
            h,
            "<p class=\"meta\">Attachment: <a href=\"{}\" rel=\"noopener noreferrer\">{}</a> {}</p>",
            attr(url),
            esc(name),
            if about.is_empty() {
                String::new()
            } else {
                format!("({})", esc(&about))
            }
        );
    }
    h.push_str("</article>\n");
}
