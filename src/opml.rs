//! OPML, the subscription-list format of feed readers: reading a list to import its feeds
//! into the config file, and writing the configured sources as a list.
//!
//! Import edits the config file's text with `toml_edit`, so its comments, order and layout
//! stay as they were: new `[[source]]` tables are appended, nothing else is touched. Folders
//! (outlines holding outlines) and `category` attributes become tags; a feed whose URL is
//! already a source, or appears twice, is skipped; names are made valid and unique. A list
//! written for others (`/opml`) carries each feed's URL in its public form or none
//! ([`FeedUrls`]); only the owner's `feedmux export-opml --full-urls` writes them whole. This
//! module does not validate the whole config (the caller runs `config::parse` on the result)
//! and never writes a file. `toml_edit` is used here and nowhere else.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Write;

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::QName;
use quick_xml::Reader;
use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table};
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;
use url::Url;

use crate::config::{self, Config};
use crate::model::SourceState;
use crate::redact::Urls;

#[derive(Debug, thiserror::Error)]
pub enum OpmlError {
    #[error("not a readable OPML file: {0}")]
    Xml(String),
    #[error("not an OPML file: the root element is <{0}>, not <opml>")]
    NotOpml(String),
    #[error("the config file is not valid TOML: {0}")]
    Toml(String),
    #[error("the config file's `source` is not a list of [[source]] tables")]
    SourceNotTables,
}

/// One feed of an OPML list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpmlFeed {
    /// `title`, else `text`, else empty.
    pub title: String,
    /// `xmlUrl`, as written.
    pub url: String,
    /// Folder names (outermost first) and `category` path segments, as written.
    pub categories: Vec<String>,
}

fn attribute(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.attributes().flatten().find_map(|a| {
        (a.key == QName(name))
            .then(|| {
                a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .ok()
                    .map(|v| v.trim().to_owned())
            })
            .flatten()
    })
}

/// Every feed (outline with an `xmlUrl`) of an OPML 1.0/1.1/2.0 document, in order.
pub fn parse(text: &str) -> Result<Vec<OpmlFeed>, OpmlError> {
    let mut reader = Reader::from_str(text.trim_start_matches('\u{feff}'));
    reader.config_mut().trim_text(true);
    let mut feeds = Vec::new();
    // The folder each open <outline> stands for (None: not a folder, or nameless).
    let mut open: Vec<Option<String>> = Vec::new();
    let mut root_seen = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| OpmlError::Xml(format!("at byte {}: {e}", reader.error_position())))?;
        let (e, has_children) = match &event {
            Event::Start(e) => (e, true),
            Event::Empty(e) => (e, false),
            Event::End(e) => {
                if e.local_name().as_ref() == "outline" {
                    open.pop();
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let name = e.local_name().as_ref().to_owned();
        if !root_seen {
            root_seen = true;
            if !name.eq_ignore_ascii_case("opml") {
                return Err(OpmlError::NotOpml(name));
            }
            continue;
        }
        if name != "outline" {
            continue;
        }
        let title = attribute(e, "title")
            .filter(|t| !t.is_empty())
            .or_else(|| attribute(e, "text"))
            .unwrap_or_default();
        let url = attribute(e, "xmlUrl")
            .or_else(|| attribute(e, "xmlurl"))
            .filter(|u| !u.is_empty());
        if let Some(url) = url {
            let mut categories: Vec<String> = open.iter().flatten().cloned().collect();
            if let Some(list) = attribute(e, "category") {
                for path in list.split(',') {
                    categories.extend(
                        path.split('/')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned),
                    );
                }
            }
            feeds.push(OpmlFeed {
                title: title.clone(),
                url,
                categories,
            });
        }
        if has_children {
            open.push(Some(title).filter(|t| !t.is_empty()));
        }
    }
    if !root_seen {
        return Err(OpmlError::Xml("empty document".into()));
    }
    Ok(feeds)
}

/// A valid config name (`[a-z0-9_-]+`) from any text: accents removed, ASCII letters and
/// digits kept (lowercased), runs of anything else become one `-`, at most 40 characters.
/// Empty when nothing is left (a title in Chinese, say).
pub fn slug(text: &str) -> String {
    let mut out = String::new();
    // Accents come off first: "Science étonnante" is "science-etonnante".
    for c in text.nfkd().filter(|c| !is_combining_mark(*c)) {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-');
    // Long titles make unwieldy names.
    let mut cut: String = out.chars().take(40).collect();
    while cut.ends_with('-') {
        cut.pop();
    }
    cut
}

/// Whether [`slug`] keeps every letter of `text` (accents aside): false for a title in
/// Chinese, Japanese, Cyrillic, ..., which its slug would reduce to digits or nothing.
fn slug_keeps_every_letter(text: &str) -> bool {
    text.nfkd()
        .filter(|c| !is_combining_mark(*c))
        .all(|c| !c.is_alphabetic() || c.is_ascii_alphabetic())
}

/// What an import did with each feed of the list.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// (name given, URL, tags) of each source added.
    pub added: Vec<(String, String, Vec<String>)>,
    /// (URL, why) of each feed left out.
    pub skipped: Vec<(String, String)>,
}

/// Appends a `[[source]]` table to `config_text` for each feed of `feeds` not yet in the
/// config (by URL), and returns the new text. Everything already in the text stays as it was.
pub fn add_sources(
    config_text: &str,
    feeds: &[OpmlFeed],
) -> Result<(String, ImportReport), OpmlError> {
    let mut doc: DocumentMut = config_text
        .parse()
        .map_err(|e: toml_edit::TomlError| OpmlError::Toml(e.to_string()))?;
    let mut names: HashSet<String> = HashSet::new();
    let mut urls: HashSet<String> = HashSet::new();
    if let Some(existing) = doc.get("source") {
        let tables = existing
            .as_array_of_tables()
            .ok_or(OpmlError::SourceNotTables)?;
        for t in tables.iter() {
            if let Some(n) = t.get("name").and_then(Item::as_str) {
                names.insert(n.to_owned());
            }
            if let Some(u) = t.get("url").and_then(Item::as_str) {
                urls.insert(url_key(u));
            }
        }
    }
    let mut report = ImportReport::default();
    let mut new_tables = Vec::new();
    for feed in feeds {
        let url = match Url::parse(&feed.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => u,
            _ => {
                report
                    .skipped
                    .push((feed.url.clone(), "not an http(s) URL".into()));
                continue;
            }
        };
        if !urls.insert(url_key(url.as_str())) {
            report
                .skipped
                .push((url.to_string(), "already a source".into()));
            continue;
        }
        let name = unique_name(&feed.title, &url, &mut names);
        let tags: Vec<String> = feed
            .categories
            .iter()
            .map(|c| slug(c))
            .filter(|t| !t.is_empty())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut table = Table::new();
        table.insert("name", toml_edit::value(name.clone()));
        table.insert("url", toml_edit::value(url.as_str()));
        if !tags.is_empty() {
            let mut array = Array::new();
            for t in &tags {
                array.push(t.as_str());
            }
            table.insert("tags", toml_edit::value(array));
        }
        if !feed.title.is_empty() {
            // The list's title, for people reading the file; the feed's own title is used.
            let title: String = feed.title.chars().filter(|c| !c.is_control()).collect();
            table
                .decor_mut()
                .set_prefix(format!("\n# {title} (imported from OPML)\n"));
        } else {
            table.decor_mut().set_prefix("\n# imported from OPML\n");
        }
        report.added.push((name, url.to_string(), tags));
        new_tables.push(table);
    }
    if !new_tables.is_empty() {
        let sources = doc
            .entry("source")
            .or_insert_with(|| Item::ArrayOfTables(ArrayOfTables::new()))
            .as_array_of_tables_mut()
            .ok_or(OpmlError::SourceNotTables)?;
        for t in new_tables {
            sources.push(t);
        }
    }
    Ok((doc.to_string(), report))
}

/// The form in which two URLs count as the same feed: parsed (so host case and default
/// ports do not matter), without a trailing slash.
fn url_key(text: &str) -> String {
    Url::parse(text.trim())
        .map(|u| u.to_string())
        .unwrap_or_else(|_| text.trim().to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// A valid name for a feed titled `title` at `url`, not in `taken`, which it joins: the slug
/// of the title, else of the host (without `www.`), else "feed"; `-2`, `-3`, ... when taken.
/// A title whose letters are not all Latin ("36氪", "机器之心") would lose them in its slug
/// ("36", ""), so the host names it first ("36kr", "jiqizhixin").
fn unique_name(title: &str, url: &Url, taken: &mut HashSet<String>) -> String {
    let host = slug(
        url.host_str()
            .unwrap_or_default()
            .trim_start_matches("www."),
    );
    // A list that gives the address as the title ("https://www.engadget.com/").
    let title = if Url::parse(title).is_ok_and(|u| u.host_str().is_some()) {
        ""
    } else {
        title
    };
    let candidates = if slug_keeps_every_letter(title) {
        [slug(title), host]
    } else {
        [host, slug(title)]
    };
    let base = candidates
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "feed".to_owned());
    debug_assert!(config::valid_name(&base));
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    taken.insert(name.clone());
    name
}

fn attr(s: &str) -> String {
    html_escape::encode_double_quoted_attribute(s).into_owned()
}

/// Which form of the sources' feed URLs an OPML list carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedUrls {
    /// As public outputs show them: redacted (scheme, host and path), or hidden, in which case
    /// each source is a plain outline (title, site, tags) and not a subscription.
    Public(Urls),
    /// As configured, password and token included: for the owner moving to another reader.
    Full,
}

/// The configured sources as an OPML 2.0 list: each with its title (configured, else the
/// feed's own, else its name), feed URL in the form `urls` says, site URL when known, and its
/// tags as a category.
pub fn write(config: &Config, states: &[(String, SourceState)], urls: FeedUrls) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<opml version=\"2.0\">\n<head><title>feedmux sources</title></head>\n<body>\n",
    );
    for source in &config.sources {
        let state = states
            .iter()
            .find(|(n, _)| *n == source.name)
            .map(|(_, s)| s);
        let title = source
            .title
            .clone()
            .or_else(|| state.and_then(|s| s.title.clone()))
            .unwrap_or_else(|| source.name.clone());
        let feed_url = match urls {
            FeedUrls::Full => Some(source.url.to_string()),
            FeedUrls::Public(urls) => urls.url(&source.url),
        };
        let _ = write!(out, "<outline");
        if feed_url.is_some() {
            out.push_str(" type=\"rss\"");
        }
        let _ = write!(out, " text=\"{}\" title=\"{}\"", attr(&title), attr(&title));
        if let Some(feed_url) = &feed_url {
            let _ = write!(out, " xmlUrl=\"{}\"", attr(feed_url));
        }
        if let Some(site) = state.and_then(|s| s.site_url.as_deref()) {
            let _ = write!(out, " htmlUrl=\"{}\"", attr(site));
        }
        if !source.tags.is_empty() {
            let _ = write!(out, " category=\"{}\"", attr(&source.tags.join(",")));
        }
        out.push_str("/>\n");
    }
    out.push_str("</body>\n</opml>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_and_category_attributes_become_categories() {
        let feeds = parse(
            "<?xml version=\"1.0\"?><opml version=\"2.0\"><head/><body>\
             <outline text=\"AI &amp; ML\"><outline text=\"Lab\" xmlUrl=\"https://lab.example/feed\"/>\
             <outline title=\"Inner\"><outline text=\"Deep\" xmlUrl=\"https://deep.example/rss\" category=\"/News/Tech,zh\"/></outline></outline>\
             <outline text=\"Top\" xmlUrl=\"https://top.example/\"/><outline text=\"folder only\"/></body></opml>",
        )
        .unwrap();
        assert_eq!(feeds.len(), 3);
        assert_eq!(feeds[0].categories, ["AI & ML"]);
        assert_eq!(
            feeds[1].categories,
            ["AI & ML", "Inner", "News", "Tech", "zh"]
        );
        assert_eq!(feeds[2].title, "Top");
        assert!(feeds[2].categories.is_empty());
    }

    #[test]
    fn html_or_other_xml_is_not_opml() {
        assert!(matches!(
            parse("<rss version=\"2.0\"><channel/></rss>"),
            Err(OpmlError::NotOpml(n)) if n == "rss"
        ));
        assert!(parse("<opml><body><outline").is_err());
    }

    #[test]
    fn names_are_valid_and_unique() {
        let mut taken = HashSet::from(["ars-technica".to_owned()]);
        let url = Url::parse("https://www.qbitai.com/feed").unwrap();
        assert_eq!(
            unique_name("Ars Technica", &url, &mut taken),
            "ars-technica-2"
        );
        assert_eq!(unique_name("量子位", &url, &mut taken), "qbitai-com");
        assert_eq!(unique_name("量子位", &url, &mut taken), "qbitai-com-2");
        // A slug that would keep only the digits of a Chinese title gives way to the host.
        let kr = Url::parse("https://36kr.com/feed").unwrap();
        assert_eq!(unique_name("36氪", &kr, &mut taken), "36kr-com");
        let habr = Url::parse("https://habr.com/ru/rss/all/").unwrap();
        assert_eq!(unique_name("Хабр 2024", &habr, &mut taken), "habr-com");
        // Accented Latin titles keep their own name.
        let science = Url::parse("https://example.org/feed").unwrap();
        assert_eq!(
            unique_name("Science étonnante", &science, &mut taken),
            "science-etonnante"
        );
        assert_eq!(slug("  C++ / Rust: Weekly!! "), "c-rust-weekly");
        assert_eq!(slug("Science étonnante"), "science-etonnante");
        let engadget = Url::parse("https://www.engadget.com/rss.xml").unwrap();
        assert_eq!(
            unique_name("https://www.engadget.com/", &engadget, &mut taken),
            "engadget-com"
        );
    }
}
