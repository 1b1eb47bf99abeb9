//! Publishing: output feeds rendered as Atom 1.0, RSS 2.0 and JSON Feed 1.1, kept in memory.
//!
//! [`Publisher::render`] reads a feed's newest items from the store (one entry per story
//! group, the group's first item shown and the other sources listed), renders the three
//! formats with every piece of HTML passed through ammonia, compresses them, and swaps them in.
//! The `ETag` is a hash of the bytes, and `Last-Modified` moves only when the bytes change, so
//! re-rendering unchanged content costs readers nothing. Requests read the cached bytes and
//! never render. This module does not fetch and does not write the store.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::{Config, FeedConfig};
use crate::model::{Item, ItemId};
use crate::store::{Store, StoreError};
use crate::text::html_to_text;

const GENERATOR: &str = "feedmux";
const HOMEPAGE: &str = env!("CARGO_PKG_HOMEPAGE");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The three output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Atom,
    Rss,
    Json,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Atom, Format::Rss, Format::Json];

    pub fn from_extension(ext: &str) -> Option<Format> {
        match ext {
            "atom" => Some(Format::Atom),
            "rss" => Some(Format::Rss),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Atom => "atom",
            Format::Rss => "rss",
            Format::Json => "json",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Atom => "application/atom+xml; charset=utf-8",
            Format::Rss => "application/rss+xml; charset=utf-8",
            Format::Json => "application/feed+json; charset=utf-8",
        }
    }
}

/// One rendered document with its compressed form and validator.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub body: Bytes,
    pub gzip: Bytes,
    /// A strong ETag, quoted.
    pub etag: String,
}

/// The three renderings of one output feed.
#[derive(Debug, Clone)]
pub struct RenderedFeed {
    pub name: String,
    pub title: String,
    pub formats: HashMap<Format, Rendered>,
    /// When the rendered content last changed.
    pub last_modified: DateTime<Utc>,
    pub entries: usize,
}

impl RenderedFeed {
    pub fn get(&self, format: Format) -> Option<&Rendered> {
        self.formats.get(&format)
    }
}

/// What a rendered entry says about its source.
#[derive(Debug, Clone, Default)]
pub struct SourceInfo {
    pub title: String,
    pub feed_url: String,
    pub site_url: Option<String>,
}

/// An entry as it goes out: the item shown, its source, and the other reports of its story.
#[derive(Debug, Clone)]
pub struct OutputEntry {
    pub item: Item,
    pub source: SourceInfo,
    pub also: Vec<(SourceInfo, Option<String>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("unknown feed {0:?}")]
    UnknownFeed(String),
}

/// The in-memory cache of rendered output feeds.
#[derive(Debug, Default)]
pub struct Publisher {
    outputs: RwLock<HashMap<String, Arc<RenderedFeed>>>,
}

impl Publisher {
    pub fn new() -> Publisher {
        Publisher::default()
    }

    /// The cached rendering of `feed`, if any.
    pub fn get(&self, feed: &str) -> Option<Arc<RenderedFeed>> {
        self.outputs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(feed)
            .cloned()
    }

    /// Renders `feed` from the store and swaps it into the cache.
    pub fn render(
        &self,
        store: &Store,
        config: &Config,
        feed: &str,
    ) -> Result<Arc<RenderedFeed>, PublishError> {
        let feed_config = config
            .feed(feed)
            .ok_or_else(|| PublishError::UnknownFeed(feed.to_owned()))?;
        let entries = collect(store, config, feed_config)?;
        let previous = self.get(feed);
        let mut rendered = render_all(config, feed_config, &entries);
        if let Some(previous) = previous {
            let same = Format::ALL
                .iter()
                .all(|f| previous.get(*f).map(|r| &r.etag) == rendered.get(*f).map(|r| &r.etag));
            if same {
                rendered.last_modified = previous.last_modified;
            }
        }
        let rendered = Arc::new(rendered);
        self.outputs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(feed.to_owned(), rendered.clone());
        Ok(rendered)
    }

    /// Renders every feed of the config and drops feeds that left it.
    pub fn render_all(&self, store: &Store, config: &Config) -> Result<(), PublishError> {
        for feed in &config.feeds {
            self.render(store, config, &feed.name)?;
        }
        let keep: HashSet<&str> = config.feeds.iter().map(|f| f.name.as_str()).collect();
        self.outputs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|name, _| keep.contains(name.as_str()));
        Ok(())
    }
}

/// How each source presents itself in output, from the config and the store.
pub fn source_infos(store: &Store, config: &Config) -> HashMap<String, SourceInfo> {
    config
        .sources
        .iter()
        .map(|s| {
            let state = store.source_state(&s.name).unwrap_or_default();
            let title = s
                .title
                .clone()
                .or(state.title)
                .unwrap_or_else(|| s.name.clone());
            let info = SourceInfo {
                title,
                feed_url: s.url.to_string(),
                site_url: state.site_url,
            };
            (s.name.clone(), info)
        })
        .collect()
}

/// The newest entries of `feed`: one per story group, at most `limit`, newest first.
pub fn collect(
    store: &Store,
    config: &Config,
    feed: &FeedConfig,
) -> Result<Vec<OutputEntry>, StoreError> {
    let infos = source_infos(store, config);
    let info_of = |source: &str| {
        infos.get(source).cloned().unwrap_or_else(|| SourceInfo {
            title: source.to_owned(),
            ..SourceInfo::default()
        })
    };
    let priority_of = |source: &str| config.source(source).map_or(0, |s| s.priority);
    let mut seen_stories: HashSet<ItemId> = HashSet::new();
    let mut seen_items: HashSet<ItemId> = HashSet::new();
    let mut entries = Vec::new();
    for id in store.feed_items(&feed.name) {
        if entries.len() >= feed.limit {
            break;
        }
        let id = id?;
        // A poll cut short (crash, full disk) can leave an index entry at another time than
        // the item it was retried with: the item is shown once, at its newest entry.
        if !seen_items.insert(id) {
            continue;
        }
        let Some(item) = store.item(id)? else {
            continue; // an index entry whose item is gone
        };
        if !feed.group_stories {
            entries.push(OutputEntry {
                source: info_of(&item.source),
                item,
                also: Vec::new(),
            });
            continue;
        }
        if !seen_stories.insert(item.story) {
            continue;
        }
        let member_ids = store.story_members(item.story)?;
        if member_ids.len() <= 1 {
            entries.push(OutputEntry {
                source: info_of(&item.source),
                item,
                also: Vec::new(),
            });
            continue;
        }
        let mut members = Vec::new();
        for member in member_ids {
            if let Some(m) = store.item(member)? {
                members.push(m);
            }
        }
        members.sort_by_key(|m| m.first_seen);
        // The report shown: among the members this feed selects, the highest priority
        // source's, then the earliest.
        let mut shown = item;
        for m in &members {
            let better = (priority_of(&m.source), std::cmp::Reverse(m.first_seen))
                > (
                    priority_of(&shown.source),
                    std::cmp::Reverse(shown.first_seen),
                );
            if better && m.id != shown.id && in_feed(store, feed, m)? {
                shown = m.clone();
            }
        }
        let mut reported = HashSet::from([shown.source.clone()]);
        let also = members
            .iter()
            .filter(|m| reported.insert(m.source.clone()))
            .map(|m| (info_of(&m.source), m.url.clone()))
            .collect();
        entries.push(OutputEntry {
            source: info_of(&shown.source),
            item: shown,
            also,
        });
    }
    entries.sort_by(|a, b| {
        b.item
            .published
            .cmp(&a.item.published)
            .then(a.item.id.cmp(&b.item.id))
    });
    Ok(entries)
}

fn in_feed(store: &Store, feed: &FeedConfig, item: &Item) -> Result<bool, StoreError> {
    Ok(feed.sources.contains(&item.source) && store.feed_contains(&feed.name, item)?)
}

/// Renders `entries` as `feed` in every format, without a store or the cache: what the
/// property tests and fuzz targets drive with arbitrary items.
pub fn render_entries(config: &Config, feed: &FeedConfig, entries: &[OutputEntry]) -> RenderedFeed {
    render_all(config, feed, entries)
}

fn render_all(config: &Config, feed: &FeedConfig, entries: &[OutputEntry]) -> RenderedFeed {
    let mut formats = HashMap::new();
    for format in Format::ALL {
        let body = match format {
            Format::Atom => atom(config, feed, entries),
            Format::Rss => rss(config, feed, entries),
            Format::Json => json_feed(config, feed, entries),
        };
        formats.insert(format, finish(body));
    }
    RenderedFeed {
        name: feed.name.clone(),
        title: feed.title.clone(),
        formats,
        last_modified: Utc::now(),
        entries: entries.len(),
    }
}

fn finish(body: Vec<u8>) -> Rendered {
    let digest = Sha256::digest(&body);
    let etag: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let gzip = encoder
        .write_all(&body)
        .and_then(|()| encoder.finish())
        .unwrap_or_default();
    Rendered {
        body: Bytes::from(body),
        gzip: Bytes::from(gzip),
        etag: format!("\"{etag}\""),
    }
}

/// The URL of a feed in a format, under the configured base URL.
pub fn feed_url(config: &Config, feed: &str, format: Format) -> String {
    format!(
        "{}/feeds/{}.{}",
        config.server.base_url,
        feed,
        format.extension()
    )
}

/// A stable, globally unique id for an item: its 16-byte id written as a UUID URN.
pub fn entry_id(id: ItemId) -> String {
    let mut b = id.0;
    b[6] = (b[6] & 0x0f) | 0x80; // version 8: custom
    b[8] = (b[8] & 0x3f) | 0x80; // RFC 4122 variant
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The newest change among the entries; the epoch for an empty feed, so that the bytes of an
/// empty feed do not change from one render to the next.
fn newest_change(entries: &[OutputEntry]) -> DateTime<Utc> {
    entries
        .iter()
        .map(|e| e.item.modified.max(e.item.published))
        .max()
        .unwrap_or_else(|| Utc.timestamp_opt(0, 0).single().unwrap_or_default())
}

/// The entry's body as safe HTML: its content (or summary) and the other sources of its story.
fn body_html(entry: &OutputEntry) -> Option<String> {
    let main = entry
        .item
        .content_html
        .as_deref()
        .or(entry.item.summary_html.as_deref())
        .map(ammonia::clean);
    let also = also_html(entry);
    match (main, also) {
        (None, None) => None,
        (Some(m), None) => Some(m),
        (None, Some(a)) => Some(a),
        (Some(m), Some(a)) => Some(format!("{m}\n{a}")),
    }
}

fn also_html(entry: &OutputEntry) -> Option<String> {
    if entry.also.is_empty() {
        return None;
    }
    let links: Vec<String> = entry
        .also
        .iter()
        .map(|(info, url)| {
            let name = html_escape::encode_text(&info.title);
            match url {
                Some(u) => format!(
                    "<a href=\"{}\" rel=\"noopener noreferrer\">{name}</a>",
                    html_escape::encode_double_quoted_attribute(u)
                ),
                None => name.into_owned(),
            }
        })
        .collect();
    Some(format!("<p>Also reported by {}</p>", links.join(", ")))
}

fn summary_text(entry: &OutputEntry) -> Option<String> {
    let html = entry.item.summary_html.as_deref()?;
    let text = html_to_text(html);
    (!text.is_empty()).then_some(text)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Strips characters that XML 1.0 cannot carry at all.
fn xml_safe(s: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| {
        (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{FFFE}' | '\u{FFFF}')
    };
    if s.contains(bad) {
        std::borrow::Cow::Owned(s.chars().filter(|c| !bad(*c)).collect())
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

struct Xml {
    w: Writer<Vec<u8>>,
}

impl Xml {
    fn new() -> Xml {
        let mut w = Writer::new_with_indent(Vec::new(), b' ', 1);
        // Writing to a Vec cannot fail.
        let _ = w.write_event(Event::Decl(BytesDecl::new("1.0", Some("utf-8"), None)));
        Xml { w }
    }

    fn open(&mut self, name: &str, attrs: &[(&str, &str)]) {
        let mut start = BytesStart::new(name);
        for (k, v) in attrs {
            start.push_attribute((*k, xml_safe(v).as_ref()));
        }
        let _ = self.w.write_event(Event::Start(start));
    }

    fn close(&mut self, name: &str) {
        let _ = self.w.write_event(Event::End(BytesEnd::new(name)));
    }

    fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) {
        let mut start = BytesStart::new(name);
        for (k, v) in attrs {
            start.push_attribute((*k, xml_safe(v).as_ref()));
        }
        let _ = self.w.write_event(Event::Empty(start));
    }

    fn text(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) {
        self.open(name, attrs);
        let _ = self
            .w
            .write_event(Event::Text(BytesText::new(xml_safe(text).as_ref())));
        self.close(name);
    }

    fn finish(self) -> Vec<u8> {
        let mut out = self.w.into_inner();
        out.push(b'\n');
        out
    }
}

fn atom(config: &Config, feed: &FeedConfig, entries: &[OutputEntry]) -> Vec<u8> {
    let mut x = Xml::new();
    x.open("feed", &[("xmlns", "http://www.w3.org/2005/Atom")]);
    let self_url = feed_url(config, &feed.name, Format::Atom);
    x.text("id", &[], &self_url);
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
            ("href", &self_url),
        ],
    );
    let home = format!("{}/", config.server.base_url);
    x.empty(
        "link",
        &[("rel", "alternate"), ("type", "text/html"), ("href", &home)],
    );
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
        let updated = item.updated.unwrap_or(item.published).max(item.published);
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
        if let Some(html) = body_html(e) {
            x.text("content", &[("type", "html")], &html);
        }
        x.open("source", &[]);
        x.text("id", &[], &e.source.feed_url);
        x.text("title", &[("type", "text")], &e.source.title);
        if let Some(site) = &e.source.site_url {
            x.empty(
                "link",
                &[("rel", "alternate"), ("type", "text/html"), ("href", site)],
            );
        }
        x.empty("link", &[("rel", "self"), ("href", &e.source.feed_url)]);
        x.close("source");
        x.close("entry");
    }
    x.close("feed");
    x.finish()
}

fn rss(config: &Config, feed: &FeedConfig, entries: &[OutputEntry]) -> Vec<u8> {
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
    let self_url = feed_url(config, &feed.name, Format::Rss);
    x.empty(
        "atom:link",
        &[
            ("href", &self_url),
            ("rel", "self"),
            ("type", "application/rss+xml"),
        ],
    );
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
        x.text("source", &[("url", &e.source.feed_url)], &e.source.title);
        x.close("item");
    }
    x.close("channel");
    x.close("rss");
    x.finish()
}

fn json_feed(config: &Config, feed: &FeedConfig, entries: &[OutputEntry]) -> Vec<u8> {
    let items: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            let item = &e.item;
            let mut value = json!({
                "id": entry_id(item.id),
                "title": item.title,
                "date_published": rfc3339(item.published),
                "_feedmux": {
                    "source": {
                        "title": e.source.title,
                        "feed_url": e.source.feed_url,
                    },
                    "also_reported_by": e.also.iter().map(|(info, url)| json!({
                        "title": info.title,
                        "feed_url": info.feed_url,
                        "url": url,
                    })).collect::<Vec<_>>(),
                },
            });
            let obj = value.as_object_mut().expect("json! of an object is an object");
            if let Some(url) = &item.url {
                obj.insert("url".into(), json!(url));
            }
            obj.insert(
                "content_html".into(),
                json!(body_html(e).unwrap_or_default()),
            );
            if let Some(s) = summary_text(e) {
                obj.insert("summary".into(), json!(s));
            }
            if let Some(u) = item.updated {
                obj.insert("date_modified".into(), json!(rfc3339(u.max(item.published))));
            }
            let mut authors: Vec<serde_json::Value> =
                item.authors.iter().map(|a| json!({ "name": a })).collect();
            if authors.is_empty() {
                let mut author = json!({ "name": e.source.title });
                if let Some(site) = &e.source.site_url {
                    author["url"] = json!(site);
                }
                authors.push(author);
            }
            obj.insert("authors".into(), json!(authors));
            if !item.categories.is_empty() {
                obj.insert("tags".into(), json!(item.categories));
            }
            if !item.enclosures.is_empty() {
                let attachments: Vec<_> = item
                    .enclosures
                    .iter()
                    .map(|enc| {
                        let mut a = json!({
                            "url": enc.url,
                            "mime_type": enc.mime_type.as_deref().unwrap_or("application/octet-stream"),
                        });
                        if let Some(l) = enc.length {
                            a["size_in_bytes"] = json!(l);
                        }
                        a
                    })
                    .collect();
                obj.insert("attachments".into(), json!(attachments));
            }
            value
        })
        .collect();
    let mut doc = json!({
        "version": "https://jsonfeed.org/version/1.1",
        "title": feed.title,
        "home_page_url": format!("{}/", config.server.base_url),
        "feed_url": feed_url(config, &feed.name, Format::Json),
        "items": items,
    });
    if let Some(d) = &feed.description {
        doc["description"] = json!(d);
    }
    let mut out = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    out.push(b'\n');
    out
}
