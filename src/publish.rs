//! Publishing: output feeds rendered as Atom 1.0, RSS 2.0 and JSON Feed 1.1, kept in memory.
//!
//! [`Publisher::render`] reads a feed's newest items from the store (one entry per story
//! group, the group's first item shown and the other sources listed), renders the three
//! formats with every piece of HTML passed through ammonia, compresses them, and swaps them in.
//! The `ETag` is a hash of the bytes, and `Last-Modified` moves only when the bytes change, so
//! re-rendering unchanged content costs readers nothing. Requests for a whole feed read the
//! cached bytes and never render; searches and pages are rendered by [`render_view`] and kept
//! by [`Publisher::view`] in a bounded LRU until their feed is rendered again, at most a few
//! at once (`cache`). This module does not fetch and does not write the store.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use quick_xml::Writer;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::{Config, FeedConfig};
use crate::filter::Query;
use crate::model::{Item, ItemId};
use crate::store::{Store, StoreError};
use crate::text::html_to_text;

mod cache;
mod html;

pub use cache::{Busy, Generation, SearchSlots, ViewCache, ViewKey};
pub use cache::{SEARCHES_AT_ONCE, SEARCH_WAIT, VIEW_CACHE_BYTES, VIEW_CACHE_ENTRIES};

const GENERATOR: &str = "feedmux";
const HOMEPAGE: &str = env!("CARGO_PKG_HOMEPAGE");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The output formats: the three feed formats, and the page a browser shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Atom,
    Rss,
    Json,
    /// The feed as a readable web page (`/feeds/{name}.html`).
    Html,
}

impl Format {
    /// The feed formats, for readers.
    pub const ALL: [Format; 3] = [Format::Atom, Format::Rss, Format::Json];
    /// Everything rendered into the cache: the feed formats and the HTML view.
    pub const CACHED: [Format; 4] = [Format::Atom, Format::Rss, Format::Json, Format::Html];

    pub fn from_extension(ext: &str) -> Option<Format> {
        match ext {
            "atom" => Some(Format::Atom),
            "rss" => Some(Format::Rss),
            "json" => Some(Format::Json),
            "html" => Some(Format::Html),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Atom => "atom",
            Format::Rss => "rss",
            Format::Json => "json",
            Format::Html => "html",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Atom => "application/atom+xml; charset=utf-8",
            Format::Rss => "application/rss+xml; charset=utf-8",
            Format::Json => "application/feed+json; charset=utf-8",
            Format::Html => "text/html; charset=utf-8",
        }
    }

    /// The media type without parameters.
    pub fn media_type(self) -> &'static str {
        let full = self.content_type();
        full.split(';').next().unwrap_or(full)
    }
}

/// A content coding a rendered document is kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coding {
    Identity,
    Gzip,
    Brotli,
}

impl Coding {
    /// The `Content-Encoding` token, `None` for identity.
    pub fn token(self) -> Option<&'static str> {
        match self {
            Coding::Identity => None,
            Coding::Gzip => Some("gzip"),
            Coding::Brotli => Some("br"),
        }
    }
}

/// How hard to compress: cached renderings are compressed once and served many times, so they
/// get the best ratio; documents rendered for one request get a fast setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    Cached,
    OnDemand,
}

/// One rendered document with its compressed forms and validator, so that serving it costs
/// neither rendering nor compression. A cached document is swapped in first and compressed
/// right after ([`Rendered::compress`]); until then it is served uncompressed.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub body: Bytes,
    gzip: std::sync::OnceLock<Bytes>,
    brotli: std::sync::OnceLock<Bytes>,
    effort: Effort,
    /// A strong ETag of the uncompressed bytes, quoted. Each coding is a different
    /// representation, so its ETag carries a suffix (see [`Rendered::etag_of`]).
    pub etag: String,
    etag_gzip: String,
    etag_brotli: String,
    /// When these bytes were first rendered (cached documents only): moves only when the
    /// bytes change.
    pub last_modified: Option<DateTime<Utc>>,
}

impl Rendered {
    /// Hashes `body`; an on-demand document is compressed at once (it is served at once).
    pub fn new(body: Vec<u8>, effort: Effort) -> Rendered {
        let doc = Rendered::uncompressed(body, effort);
        if effort == Effort::OnDemand {
            doc.compress();
        }
        doc
    }

    /// A document served to one request only (the status page): compressed, quickly, only
    /// in the coding that request takes ([`Rendered::encoded`]).
    pub fn for_one_request(body: Vec<u8>) -> Rendered {
        Rendered::uncompressed(body, Effort::OnDemand)
    }

    fn uncompressed(body: Vec<u8>, effort: Effort) -> Rendered {
        let digest = Sha256::digest(&body);
        let hash: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        Rendered {
            body: Bytes::from(body),
            gzip: std::sync::OnceLock::new(),
            brotli: std::sync::OnceLock::new(),
            effort,
            etag: format!("\"{hash}\""),
            etag_gzip: format!("\"{hash}-gzip\""),
            etag_brotli: format!("\"{hash}-br\""),
            last_modified: None,
        }
    }

    /// Makes the gzip and brotli forms, unless they are made already.
    pub fn compress(&self) {
        self.compress_to(Coding::Gzip);
        self.compress_to(Coding::Brotli);
    }

    /// Makes the form in `coding`, unless it is made already.
    fn compress_to(&self, coding: Coding) {
        // Brotli quality 11 takes most of a second on 128 KiB (measured: 0.77 s, against
        // 0.07 s for 512 KiB at quality 9, which compressed feed XML as well): 9 it is.
        let (gzip_level, brotli_quality) = match self.effort {
            Effort::Cached => (flate2::Compression::best(), 9),
            Effort::OnDemand => (flate2::Compression::fast(), 4),
        };
        let body = &self.body;
        match coding {
            Coding::Identity => {}
            Coding::Gzip => {
                self.gzip.get_or_init(|| to_gzip(body, gzip_level));
            }
            Coding::Brotli => {
                self.brotli.get_or_init(|| to_brotli(body, brotli_quality));
            }
        }
    }

    /// The bytes in `coding`, compressed now if they are not yet; identity's when that
    /// coding cannot be produced.
    pub fn encoded(&self, coding: Coding) -> (&Bytes, Coding) {
        self.compress_to(coding);
        self.bytes_of(coding)
    }

    /// Bytes held: the body and its compressed forms made so far.
    pub fn size(&self) -> usize {
        let made = |form: &std::sync::OnceLock<Bytes>| form.get().map_or(0, Bytes::len);
        self.body.len() + made(&self.gzip) + made(&self.brotli)
    }

    /// The bytes in `coding`; identity's when that coding could not be produced or is not
    /// made yet.
    pub fn bytes_of(&self, coding: Coding) -> (&Bytes, Coding) {
        fn made(form: &std::sync::OnceLock<Bytes>) -> Option<&Bytes> {
            form.get().filter(|b| !b.is_empty())
        }
        match coding {
            Coding::Gzip => match made(&self.gzip) {
                Some(bytes) => (bytes, Coding::Gzip),
                None => (&self.body, Coding::Identity),
            },
            Coding::Brotli => match made(&self.brotli) {
                Some(bytes) => (bytes, Coding::Brotli),
                None => (&self.body, Coding::Identity),
            },
            Coding::Identity => (&self.body, Coding::Identity),
        }
    }

    /// The strong ETag of the representation in `coding`.
    pub fn etag_of(&self, coding: Coding) -> &str {
        match coding {
            Coding::Identity => &self.etag,
            Coding::Gzip => &self.etag_gzip,
            Coding::Brotli => &self.etag_brotli,
        }
    }

    /// Whether an entity tag a client sent names this document in any coding (a cache that
    /// stored the gzip form may revalidate a request that would get brotli).
    pub fn matches(&self, tag: &str) -> bool {
        let tag = tag.trim().trim_start_matches("W/");
        tag == "*" || tag == self.etag || tag == self.etag_gzip || tag == self.etag_brotli
    }
}

/// `body` gzipped at `level`; empty if that failed.
fn to_gzip(body: &[u8], level: flate2::Compression) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), level);
    let gzip = encoder
        .write_all(body)
        .and_then(|()| encoder.finish())
        .unwrap_or_default();
    Bytes::from(gzip)
}

/// `body` in brotli at `quality`; empty if that failed.
fn to_brotli(body: &[u8], quality: u32) -> Bytes {
    let mut brotli = Vec::new();
    // A window as large as the body compresses as well as any larger one, and the
    // encoder's memory grows with the window.
    let lgwin = (body.len().max(1) as u64)
        .next_power_of_two()
        .trailing_zeros()
        .clamp(16, 22);
    let mut writer = brotli::CompressorWriter::new(&mut brotli, 4096, quality, lgwin);
    let written = writer.write_all(body).and_then(|()| writer.flush());
    drop(writer);
    if written.is_err() {
        brotli.clear();
    }
    Bytes::from(brotli)
}

/// The three renderings of one output feed.
#[derive(Debug, Clone)]
pub struct RenderedFeed {
    pub name: String,
    pub title: String,
    pub formats: HashMap<Format, Rendered>,
    /// When the feed formats' content last changed.
    pub last_modified: DateTime<Utc>,
    pub entries: usize,
    /// The feed formats whose bytes differ from the rendering this one replaced (empty for
    /// the first rendering): what a WebSub hub is told about.
    pub changed: Vec<Format>,
}

impl RenderedFeed {
    /// Dates every format, and the feed, as last modified at `when`.
    fn set_last_modified(&mut self, when: DateTime<Utc>) {
        self.last_modified = when;
        for doc in self.formats.values_mut() {
            doc.last_modified = Some(when);
        }
    }

    pub fn get(&self, format: Format) -> Option<&Rendered> {
        self.formats.get(&format)
    }

    /// Makes every format's compressed forms (see [`Rendered::compress`]).
    pub fn compress(&self) {
        for doc in self.formats.values() {
            doc.compress();
        }
    }
}

/// What a rendered entry says about its source.
#[derive(Debug, Clone, Default)]
pub struct SourceInfo {
    pub title: String,
    /// The source's feed URL in its public form (`redact`: no password, query or fragment),
    /// or `None` with `[server] show_source_urls = false`.
    pub feed_url: Option<String>,
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

/// The shortest `Cache-Control: max-age` of an output feed, in seconds.
pub const MIN_MAX_AGE: u64 = 60;
/// The longest `Cache-Control: max-age` of an output feed, in seconds.
pub const MAX_MAX_AGE: u64 = 3600;

/// How long a reader may keep a feed whose sources are next polled at `next_poll`: until
/// then (nothing can change before), within [`MIN_MAX_AGE`]..[`MAX_MAX_AGE`]. With no poll
/// scheduled the feed changes only on a reload: the longest.
pub fn max_age(next_poll: Option<DateTime<Utc>>, now: DateTime<Utc>) -> u64 {
    let Some(next) = next_poll else {
        return MAX_MAX_AGE;
    };
    let secs = (next - now).num_seconds().max(0) as u64;
    secs.clamp(MIN_MAX_AGE, MAX_MAX_AGE)
}

/// The Last-Modified of a document changed at `now` whose previous version was last modified
/// at `before`: `now`, or a second after `before` if the clock is behind it (HTTP dates have
/// whole seconds).
pub fn modified_after(before: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
    match before.and_then(|b| b.checked_add_signed(chrono::Duration::seconds(1))) {
        Some(after) if after > now => after,
        _ => now,
    }
}

/// The Last-Modified of a feed's first rendering at `now`: the newest change feedmux saw of
/// an item it shows (stored, or edited), which stays the same across restarts while nothing
/// changes; never after `now` (a clock set back). An empty feed's is 1970, as its `updated`
/// is: so the first items, often stored within a second of the start, date the feed `now`,
/// not a second after the start (ahead of the clock). Publishers' dates (a future
/// `pubDate`) play no part.
pub fn first_last_modified(page: &Page, now: DateTime<Utc>) -> DateTime<Utc> {
    page.changed.unwrap_or(DateTime::<Utc>::UNIX_EPOCH).min(now)
}

/// The in-memory cache of rendered output feeds and of searches and pages, and when each
/// source is next polled.
#[derive(Debug, Default)]
pub struct Publisher {
    outputs: RwLock<HashMap<String, Arc<RenderedFeed>>>,
    /// Searches and pages rendered for requests, dropped when their feed is rendered again.
    views: ViewCache,
    /// How many searches and pages may be rendered at once.
    searches: SearchSlots,
    next_polls: RwLock<HashMap<String, DateTime<Utc>>>,
    /// One per feed: see [`Publisher::render_when_free`].
    gates: Mutex<HashMap<String, Arc<RenderGate>>>,
}

/// Keeps renders of one feed from running side by side.
#[derive(Debug, Default)]
struct RenderGate {
    running: Mutex<()>,
    /// A render was asked for after the running one started (with the newest config).
    pending: Mutex<Option<Arc<Config>>>,
}

impl Publisher {
    pub fn new() -> Publisher {
        Publisher::default()
    }

    /// Records when `source` is next polled (`None`: not at all).
    pub fn set_next_poll(&self, source: &str, when: Option<DateTime<Utc>>) {
        let mut polls = self.next_polls.write().unwrap_or_else(|p| p.into_inner());
        match when {
            Some(t) => {
                polls.insert(source.to_owned(), t);
            }
            None => {
                polls.remove(source);
            }
        }
    }

    /// The earliest next poll among `sources`, if any is scheduled.
    pub fn next_poll_of(&self, sources: &[String]) -> Option<DateTime<Utc>> {
        let polls = self.next_polls.read().unwrap_or_else(|p| p.into_inner());
        sources.iter().filter_map(|s| polls.get(s)).min().copied()
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
    /// Renders `feed` unless a render of it is running; then that render runs once more when
    /// it ends, with the newest `config`, and this call returns `None` at once. So when many
    /// sources of a feed finish their polls together, the feed is rendered once or twice, not
    /// once per poll side by side (each render holds its compressors' windows). Returns the
    /// formats whose bytes changed over the renders this call ran.
    pub fn render_when_free(
        &self,
        store: &Store,
        config: Arc<Config>,
        feed: &str,
    ) -> Result<Option<Vec<Format>>, PublishError> {
        let gate = self
            .gates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(feed.to_owned())
            .or_default()
            .clone();
        *gate.pending.lock().unwrap_or_else(|p| p.into_inner()) = Some(config);
        let mut changed: Option<Vec<Format>> = None;
        loop {
            let Ok(_running) = gate.running.try_lock() else {
                return Ok(changed); // the running render sees the request when it ends
            };
            loop {
                let next = gate
                    .pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                let Some(config) = next else { break };
                let rendered = self.render(store, &config, feed)?;
                let all = changed.get_or_insert_with(Vec::new);
                for format in &rendered.changed {
                    if !all.contains(format) {
                        all.push(*format);
                    }
                }
            }
            drop(_running);
            // A request that came between the last check and the release would be lost.
            if gate
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_none()
            {
                return Ok(changed);
            }
        }
    }

    /// Renders `feed` from the store, compresses it and swaps it into the cache.
    pub fn render(
        &self,
        store: &Store,
        config: &Config,
        feed: &str,
    ) -> Result<Arc<RenderedFeed>, PublishError> {
        self.render_into_cache(store, config, feed, true)
    }

    /// Renders `feed` and swaps it into the cache, compressed first when `compress`, else
    /// served uncompressed until [`RenderedFeed::compress`] runs.
    fn render_into_cache(
        &self,
        store: &Store,
        config: &Config,
        feed: &str,
        compress: bool,
    ) -> Result<Arc<RenderedFeed>, PublishError> {
        let feed_config = config
            .feed(feed)
            .ok_or_else(|| PublishError::UnknownFeed(feed.to_owned()))?;
        let page = collect_page(store, config, feed_config, &View::default())?;
        let previous = self.get(feed);
        let mut rendered = render_all(config, feed_config, &page);
        if previous.is_none() {
            // The first rendering since the start: dated by its content, so that a restart
            // with nothing changed keeps the Last-Modified readers hold.
            rendered.set_last_modified(first_last_modified(&page, rendered.last_modified));
        }
        if let Some(previous) = previous {
            let etag = |r: &RenderedFeed, f: Format| r.get(f).map(|d| d.etag.clone());
            rendered.changed = Format::ALL
                .into_iter()
                .filter(|f| etag(&previous, *f) != etag(&rendered, *f))
                .collect();
            // Each document keeps its Last-Modified while its bytes stay the same, and a
            // changed one gets a later one even if the clock was set back meanwhile (else a
            // reader sending only If-Modified-Since would get 304 until it caught up).
            for (format, doc) in rendered.formats.iter_mut() {
                match previous.get(*format) {
                    Some(before) if before.etag == doc.etag => {
                        doc.last_modified = before.last_modified;
                    }
                    Some(before) => {
                        doc.last_modified = doc
                            .last_modified
                            .map(|now| modified_after(before.last_modified, now));
                    }
                    None => {}
                }
            }
            rendered.last_modified = if rendered.changed.is_empty() {
                previous.last_modified
            } else {
                modified_after(Some(previous.last_modified), rendered.last_modified)
            };
        }
        if compress {
            rendered.compress();
        }
        let rendered = Arc::new(rendered);
        // Searches and pages rendered before may miss the items this rendering shows: they
        // go first, so that no reader sees the new feed and then an older search of it.
        self.views.invalidate(feed);
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
        self.drop_feeds_not_in(config);
        Ok(())
    }

    /// Makes the compressed forms of every cached feed that lacks them.
    pub fn compress_all(&self) {
        let feeds: Vec<Arc<RenderedFeed>> = self
            .outputs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for feed in feeds {
            feed.compress();
        }
    }

    /// [`Publisher::render_all`] without the compression, which [`Publisher::compress_all`]
    /// does later: a start is ready to serve sooner (brotli and gzip at their best were a
    /// fifth of a start with 1,000,000 items stored).
    pub fn render_all_uncompressed(
        &self,
        store: &Store,
        config: &Config,
    ) -> Result<(), PublishError> {
        for feed in &config.feeds {
            self.render_into_cache(store, config, &feed.name, false)?;
        }
        self.drop_feeds_not_in(config);
        Ok(())
    }

    /// Drops the cached feeds that left `config`, with their searches and pages.
    fn drop_feeds_not_in(&self, config: &Config) {
        let keep: HashSet<&str> = config.feeds.iter().map(|f| f.name.as_str()).collect();
        let mut outputs = self.outputs.write().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<String> = outputs
            .keys()
            .filter(|name| !keep.contains(name.as_str()))
            .cloned()
            .collect();
        for name in gone {
            outputs.remove(&name);
            self.views.invalidate(&name);
        }
    }

    /// A search or page already rendered, if it is kept.
    pub fn cached_view(&self, feed: &str, view: &View, format: Format) -> Option<Arc<Rendered>> {
        self.views.get(&ViewKey::new(feed, format, view))
    }

    /// The slots searches and pages are rendered in ([`Publisher::view`]).
    pub fn search_slots(&self) -> &SearchSlots {
        &self.searches
    }

    /// `view` of `feed` in `format`: from the cache, or rendered now ([`render_view`]) and
    /// kept unless the feed was rendered again meanwhile. Call it holding a slot of
    /// [`Publisher::search_slots`].
    pub fn view(
        &self,
        store: &Store,
        config: &Config,
        feed: &str,
        view: &View,
        format: Format,
    ) -> Result<Arc<Rendered>, PublishError> {
        let key = ViewKey::new(feed, format, view);
        // Another request may have rendered it while this one waited for its slot.
        if let Some(doc) = self.views.get(&key) {
            return Ok(doc);
        }
        let generation = self.views.generation(feed);
        let doc = Arc::new(render_view(store, config, feed, view, format)?);
        self.views.insert(key, doc.clone(), generation);
        Ok(doc)
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
                feed_url: config.server.source_urls.url(&s.url),
                site_url: state.site_url,
            };
            (s.name.clone(), info)
        })
        .collect()
}

/// The most entries a reader's query (`?limit=`, `?before=`, `?q=`) returns at once.
pub const MAX_QUERY_LIMIT: usize = 1000;

/// Where a page of a feed starts: after the index entry of the item published at `published`
/// with id `id`. Written in URLs as `<microseconds since 1970>-<item id in hex>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub published: DateTime<Utc>,
    pub id: ItemId,
}

impl Cursor {
    fn of(item: &Item) -> Cursor {
        Cursor {
            published: item.published,
            id: item.id,
        }
    }

    /// Reads a cursor from its URL form; `None` for anything else.
    pub fn parse(text: &str) -> Option<Cursor> {
        let (micros, hex) = text.split_once('-')?;
        let published = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut id = [0u8; 16];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Cursor {
            published,
            id: ItemId(id),
        })
    }

    pub fn to_param(self) -> String {
        format!("{}-{}", self.published.timestamp_micros(), self.id.to_hex())
    }
}

/// Which entries a document shows: the whole feed, or what a reader's query asks for.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// `?q=`: the search as written, and as matched.
    pub query: Option<(String, Query)>,
    /// `?before=`: the page after this cursor.
    pub before: Option<Cursor>,
    /// `?limit=`: at most this many entries (capped at [`MAX_QUERY_LIMIT`]).
    pub limit: Option<usize>,
}

impl View {
    /// Whether this is the feed as configured (served from the cache).
    pub fn is_whole_feed(&self) -> bool {
        self.query.is_none() && self.before.is_none() && self.limit.is_none()
    }

    fn page_size(&self, feed: &FeedConfig) -> usize {
        match (self.limit, self.is_whole_feed()) {
            (_, true) => feed.limit,
            (Some(n), false) => n.min(MAX_QUERY_LIMIT),
            (None, false) => feed.limit.min(MAX_QUERY_LIMIT),
        }
    }

    /// The query string of this view starting at `before` (`""` when it has no parameter).
    fn query_string(&self, before: Option<Cursor>) -> String {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        if let Some((q, _)) = &self.query {
            form.append_pair("q", q);
        }
        if let Some(n) = self.limit {
            form.append_pair("limit", &n.min(MAX_QUERY_LIMIT).to_string());
        }
        if let Some(c) = before {
            form.append_pair("before", &c.to_param());
        }
        let query = form.finish();
        if query.is_empty() {
            query
        } else {
            format!("?{query}")
        }
    }
}

/// One page of a feed's entries, and where the next (older) page starts, if there is one.
#[derive(Debug, Clone)]
pub struct Page {
    pub entries: Vec<OutputEntry>,
    /// The feed's sources, as output shows them.
    pub sources: Vec<SourceInfo>,
    pub view: View,
    pub next: Option<Cursor>,
    /// When feedmux last stored or saw a change of an item the page shows (its stories'
    /// other reports included); `None` for an empty page.
    pub changed: Option<DateTime<Utc>>,
}

/// The newest entries of `feed` as `view` selects them: one per story group, newest first.
/// A story is shown at the place of its newest member in the feed, so walking the pages
/// shows each story once; an index entry left by an interrupted write (at another time than
/// its item's) is skipped, so no item has two places. Items past the feed's `max_age`, and
/// those of a source beyond its newest `max_per_source`, are not in the feed.
pub fn collect_page(
    store: &Store,
    config: &Config,
    feed: &FeedConfig,
    view: &View,
) -> Result<Page, StoreError> {
    let infos = source_infos(store, config);
    let info_of = |source: &str| {
        infos.get(source).cloned().unwrap_or_else(|| SourceInfo {
            title: source.to_owned(),
            ..SourceInfo::default()
        })
    };
    let query = view.query.as_ref().map(|(_, q)| q);
    let matches = |item: &Item| query.is_none_or(|q| q.matches(item));
    let limits = FeedLimits::new(store, feed, Utc::now());
    let size = view.page_size(feed);
    let mut seen_stories: HashSet<ItemId> = HashSet::new();
    let mut entries = Vec::new();
    let mut next = None;
    let mut last_taken: Option<Cursor> = None;
    let mut changed: Option<DateTime<Utc>> = None;
    let index = match view.before {
        Some(c) => store.feed_items_after(&feed.name, c.published, c.id),
        None => store.feed_items(&feed.name),
    };
    for entry in index {
        let entry = entry?;
        if limits.too_old(entry.published) {
            break; // newest first: every entry after this one is older still
        }
        if entries.len() >= size {
            // There is more: the next page starts after the last entry taken.
            next = last_taken;
            break;
        }
        if limits.passes_over(entry.id) {
            continue;
        }
        let Some(item) = store.item(entry.id)? else {
            continue; // an index entry whose item is gone
        };
        if !entry.is_current_for(&item) || !limits.within_cap(&item)? || !matches(&item) {
            continue;
        }
        if feed.group_stories && !seen_stories.insert(item.story) {
            continue;
        }
        let members = if feed.group_stories {
            story_members(store, &item)?
        } else {
            vec![item.clone()]
        };
        if view.before.is_some() && members.len() > 1 {
            // Shown on an earlier page when a member comes before this item in the feed.
            let mut earlier = false;
            for m in &members {
                if place(m) < place(&item) && matches(m) && limits.shows(m)? {
                    earlier = true;
                    break;
                }
            }
            if earlier {
                continue;
            }
        }
        last_taken = Some(Cursor::of(&item));
        changed = members.iter().map(|m| m.modified).chain(changed).max();
        let shown = representative(config, &limits, item, &members)?;
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
    let sources = feed.sources.iter().map(|s| info_of(s)).collect();
    Ok(Page {
        entries,
        sources,
        view: view.clone(),
        next,
        changed,
    })
}

/// Where an item stands in a feed's index, smaller first: newer first, then by id (the
/// index's order, to the microsecond it keeps).
type Place = (std::cmp::Reverse<i64>, ItemId);

fn place(item: &Item) -> Place {
    (
        std::cmp::Reverse(item.published.timestamp_micros()),
        item.id,
    )
}

/// The stored members of `item`'s story, earliest seen first (`item` alone when it has none).
fn story_members(store: &Store, item: &Item) -> Result<Vec<Item>, StoreError> {
    let ids = store.story_members(item.story)?;
    if ids.len() <= 1 {
        return Ok(vec![item.clone()]);
    }
    let mut members = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(m) = store.item(id)? {
            members.push(m);
        }
    }
    members.sort_by_key(|m| m.first_seen);
    Ok(members)
}

/// The report a story is shown as: among its members the feed shows, the one of the source
/// with the highest `priority`, then the earliest published (then the first seen).
fn representative(
    config: &Config,
    limits: &FeedLimits<'_>,
    item: Item,
    members: &[Item],
) -> Result<Item, StoreError> {
    let rank = |m: &Item| {
        let priority = config.source(&m.source).map_or(0, |s| s.priority);
        (std::cmp::Reverse(priority), m.published, m.first_seen, m.id)
    };
    let mut shown = item;
    for m in members {
        if rank(m) < rank(&shown) && limits.shows(m)? {
            shown = m.clone();
        }
    }
    Ok(shown)
}

/// What keeps an indexed item out of a feed when it is rendered: `max_age` and
/// `max_per_source` (the keyword rules decided at ingest).
struct FeedLimits<'a> {
    store: &'a Store,
    feed: &'a FeedConfig,
    /// Items published before this are left out.
    oldest: Option<DateTime<Utc>>,
    /// Under `max_per_source`, the items kept of each source worked out so far.
    capped: std::cell::RefCell<Capped>,
}

/// The sources whose newest `max_per_source` items in a feed are worked out, and those items.
#[derive(Default)]
struct Capped {
    sources: HashSet<String>,
    kept: HashSet<ItemId>,
    /// The feed's sources not worked out yet.
    remaining: usize,
}

impl<'a> FeedLimits<'a> {
    fn new(store: &'a Store, feed: &'a FeedConfig, now: DateTime<Utc>) -> FeedLimits<'a> {
        let oldest = feed
            .max_age
            .and_then(|age| chrono::Duration::from_std(age).ok())
            .and_then(|age| now.checked_sub_signed(age));
        let remaining = feed.sources.iter().collect::<HashSet<_>>().len();
        FeedLimits {
            store,
            feed,
            oldest,
            capped: std::cell::RefCell::new(Capped {
                remaining,
                ..Capped::default()
            }),
        }
    }

    fn too_old(&self, published: DateTime<Utc>) -> bool {
        self.oldest.is_some_and(|oldest| published < oldest)
    }

    /// Whether `item` is among the newest `max_per_source` items of its source in the feed.
    fn within_cap(&self, item: &Item) -> Result<bool, StoreError> {
        let Some(cap) = self.feed.max_per_source else {
            return Ok(true);
        };
        if !self.capped.borrow().sources.contains(&item.source) {
            let newest = self
                .store
                .newest_of_source(&self.feed.name, &item.source, cap)?;
            let mut capped = self.capped.borrow_mut();
            capped.sources.insert(item.source.clone());
            capped.kept.extend(newest.iter().map(|e| e.id));
            if self.feed.sources.contains(&item.source) {
                capped.remaining = capped.remaining.saturating_sub(1);
            }
        }
        Ok(self.capped.borrow().kept.contains(&item.id))
    }

    /// Whether the index entry of `id` can be passed over without reading its item: under
    /// `max_per_source`, once every source of the feed is worked out, an item none keeps. A
    /// source that floods the feed then costs a key per item past its cap, not a read.
    fn passes_over(&self, id: ItemId) -> bool {
        let capped = self.capped.borrow();
        self.feed.max_per_source.is_some() && capped.remaining == 0 && !capped.kept.contains(&id)
    }

    /// Whether the feed shows `item`: indexed for it, and within its age and cap.
    fn shows(&self, item: &Item) -> Result<bool, StoreError> {
        Ok(in_feed(self.store, self.feed, item)?
            && !self.too_old(item.published)
            && self.within_cap(item)?)
    }
}

/// Renders `view` of `feed` in `format` for one request: sanitised like the cached feed, with
/// an ETag, compressed quickly.
pub fn render_view(
    store: &Store,
    config: &Config,
    feed: &str,
    view: &View,
    format: Format,
) -> Result<Rendered, PublishError> {
    let feed_config = config
        .feed(feed)
        .ok_or_else(|| PublishError::UnknownFeed(feed.to_owned()))?;
    let page = collect_page(store, config, feed_config, view)?;
    Ok(Rendered::new(
        render_format(config, feed_config, &page, format),
        Effort::OnDemand,
    ))
}

fn in_feed(store: &Store, feed: &FeedConfig, item: &Item) -> Result<bool, StoreError> {
    Ok(feed.sources.contains(&item.source) && store.feed_contains(&feed.name, item)?)
}

fn render_format(config: &Config, feed: &FeedConfig, page: &Page, format: Format) -> Vec<u8> {
    let links = Links::new(config, feed, page, format);
    match format {
        Format::Atom => atom(feed, &page.entries, &links),
        Format::Rss => rss(config, feed, &page.entries, &links),
        Format::Json => json_feed(config, feed, &page.entries, &links),
        Format::Html => html::page(config, feed, page, &links),
    }
}

/// Renders `entries` as `feed` in every cached format, without a store or the cache: what
/// the property tests and fuzz targets drive with arbitrary items.
pub fn render_entries(config: &Config, feed: &FeedConfig, entries: &[OutputEntry]) -> RenderedFeed {
    let page = Page {
        entries: entries.to_vec(),
        sources: Vec::new(),
        view: View::default(),
        next: None,
        changed: entries.iter().map(|e| e.item.modified).max(),
    };
    render_all(config, feed, &page)
}

fn render_all(config: &Config, feed: &FeedConfig, page: &Page) -> RenderedFeed {
    let mut formats = HashMap::new();
    let now = Utc::now();
    for format in Format::CACHED {
        let body = render_format(config, feed, page, format);
        let mut doc = Rendered::new(body, Effort::Cached);
        doc.last_modified = Some(now);
        formats.insert(format, doc);
    }
    RenderedFeed {
        name: feed.name.clone(),
        title: feed.title.clone(),
        formats,
        last_modified: now,
        entries: page.entries.len(),
        changed: Vec::new(),
    }
}

/// The links a document carries about itself and its neighbours (RFC 5005 paging).
struct Links {
    /// The document's own URL.
    self_url: String,
    /// The logical feed's id: the feed's URL, with its search when it has one.
    id: String,
    home: String,
    /// The page of older entries.
    next: Option<String>,
    /// The first page of this view, when this is a later one.
    first: Option<String>,
    /// The WebSub hub, when one is configured.
    hub: Option<String>,
}

impl Links {
    /// The WebSub hub, then RFC 5005 links: `next` and `prev-archive` to the older entries,
    /// `first` back to the newest.
    fn paging(&self) -> Vec<(&'static str, &str)> {
        let mut out = Vec::new();
        if let Some(hub) = &self.hub {
            out.push(("hub", hub.as_str()));
        }
        if let Some(next) = &self.next {
            out.push(("next", next.as_str()));
            out.push(("prev-archive", next.as_str()));
        }
        if let Some(first) = &self.first {
            out.push(("first", first.as_str()));
        }
        out
    }

    fn new(config: &Config, feed: &FeedConfig, page: &Page, format: Format) -> Links {
        let base = feed_url(config, &feed.name, format);
        let view = &page.view;
        let search = View {
            query: view.query.clone(),
            ..View::default()
        };
        Links {
            self_url: format!("{base}{}", view.query_string(view.before)),
            id: format!(
                "{}{}",
                feed_url(config, &feed.name, Format::Atom),
                search.query_string(None)
            ),
            home: format!("{}/", config.server.base_url),
            next: page
                .next
                .map(|c| format!("{base}{}", view.query_string(Some(c)))),
            first: view
                .before
                .map(|_| format!("{base}{}", view.query_string(None))),
            // Advertised without the password, query or fragment it may be configured with.
            hub: config.websub.as_ref().map(|w| crate::redact::url(&w.hub)),
        }
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

/// When an entry last changed, as readers are told (Atom `<updated>`, JSON Feed
/// `date_modified`): the later of the source's own updated date and the time feedmux saw
/// the item's text change on a later poll; never before `published`. `None` for an item
/// neither dated as updated nor edited.
fn entry_updated(item: &Item) -> Option<DateTime<Utc>> {
    let edited = (item.modified > item.first_seen).then_some(item.modified);
    item.updated.max(edited).map(|t| t.max(item.published))
}

/// The entry's body as safe HTML: its content (or summary) and the other sources of its story.
fn body_html(entry: &OutputEntry) -> Option<String> {
    let main = entry
        .item
        .content_html
        .as_deref()
        .or(entry.item.summary_html.as_deref())
        .map(|html| {
            // Stored HTML was cleaned on the way in; cleaning again on the way out keeps
            // items stored by older versions (or under an older policy) safe too.
            if entry.item.sanitised == crate::sanitise::POLICY {
                return html.to_owned();
            }
            let base = entry
                .item
                .url
                .as_deref()
                .and_then(|u| url::Url::parse(u).ok());
            crate::sanitise::clean(html, base.as_ref())
        });
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

/// Applies [`xml_safe`] to every string of a JSON value.
fn xml_safe_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => {
            if let std::borrow::Cow::Owned(clean) = xml_safe(s) {
                *s = clean;
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(xml_safe_json),
        serde_json::Value::Object(o) => o.values_mut().for_each(xml_safe_json),
        _ => {}
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

fn atom(feed: &FeedConfig, entries: &[OutputEntry], links: &Links) -> Vec<u8> {
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

fn rss(config: &Config, feed: &FeedConfig, entries: &[OutputEntry], links: &Links) -> Vec<u8> {
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

/// A source in JSON Feed's `_feedmux` extension: its title, and its feed URL when shown.
fn source_json(info: &SourceInfo) -> serde_json::Value {
    let mut source = json!({ "title": info.title });
    if let Some(feed_url) = &info.feed_url {
        source["feed_url"] = json!(feed_url);
    }
    source
}

fn json_feed(
    config: &Config,
    feed: &FeedConfig,
    entries: &[OutputEntry],
    links: &Links,
) -> Vec<u8> {
    let items: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            let item = &e.item;
            let mut value = json!({
                "id": entry_id(item.id),
                "title": item.title,
                "date_published": rfc3339(item.published),
                "_feedmux": {
                    "source": source_json(&e.source),
                    "also_reported_by": e.also.iter().map(|(info, url)| {
                        let mut also = source_json(info);
                        also["url"] = json!(url);
                        also
                    }).collect::<Vec<_>>(),
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
            if let Some(u) = entry_updated(item) {
                obj.insert("date_modified".into(), json!(rfc3339(u)));
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
        "feed_url": links.self_url,
        "items": items,
    });
    if let Some(next) = &links.next {
        doc["next_url"] = json!(next);
    }
    if let Some(hub) = &links.hub {
        doc["hubs"] = json!([{ "type": "WebSub", "url": hub }]);
    }
    if let Some(d) = &feed.description {
        doc["description"] = json!(d);
    }
    // The same characters leave as in the XML formats, so every format says the same.
    xml_safe_json(&mut doc);
    let mut out = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Store, Arc<Config>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = format!(
            "[storage]\npath = {:?}\n\n[[source]]\nname = \"a\"\nurl = \"https://a.example/feed.xml\"\n\n[[feed]]\nname = \"all\"\n",
            dir.path().join("store")
        );
        let config =
            crate::config::parse(&dir.path().join("feedmux.toml"), &text).expect("a valid config");
        let store = Store::open(&config.storage.path).expect("store");
        (dir, store, Arc::new(config))
    }

    #[test]
    fn a_render_asked_for_while_one_runs_runs_after_it_not_beside_it() {
        let (_dir, store, config) = setup();
        let publisher = Publisher::new();
        let first = publisher
            .render_when_free(&store, config.clone(), "all")
            .expect("render");
        assert!(first.is_some(), "a free feed is rendered at once");
        let gate = publisher
            .gates
            .lock()
            .expect("gates")
            .get("all")
            .cloned()
            .expect("a gate");
        {
            let _running = gate.running.lock().expect("gate");
            let folded = publisher
                .render_when_free(&store, config.clone(), "all")
                .expect("render");
            assert_eq!(folded, None, "left to the running render");
            assert!(gate.pending.lock().expect("pending").is_some());
        }
        // The next caller (or the running render, on its way out) takes the pending request.
        assert!(publisher
            .render_when_free(&store, config, "all")
            .expect("render")
            .is_some());
        assert!(gate.pending.lock().expect("pending").is_none());
    }

    /// A start renders its feeds uncompressed, so that it serves sooner: each is served
    /// uncompressed until compressed, then in the coding asked for; a render after a poll is
    /// compressed before it is swapped in.
    #[test]
    fn feeds_rendered_at_start_are_served_uncompressed_until_compressed() {
        let (_dir, store, config) = setup();
        let publisher = Publisher::new();
        publisher
            .render_all_uncompressed(&store, &config)
            .expect("render");
        let feed = publisher.get("all").expect("rendered");
        let atom = feed.get(Format::Atom).expect("atom");
        let (body, coding) = atom.bytes_of(Coding::Gzip);
        assert_eq!((body, coding), (&atom.body, Coding::Identity));
        assert_eq!(atom.etag_of(coding), atom.etag);
        publisher.compress_all();
        let (gzip, coding) = atom.bytes_of(Coding::Gzip);
        assert_eq!(coding, Coding::Gzip);
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gzip[..]), &mut plain)
            .expect("gzip");
        assert_eq!(plain, atom.body);
        assert_eq!(atom.bytes_of(Coding::Brotli).1, Coding::Brotli);

        let rendered = publisher.render(&store, &config, "all").expect("render");
        let rss = rendered.get(Format::Rss).expect("rss");
        assert_eq!(rss.bytes_of(Coding::Brotli).1, Coding::Brotli);
    }

    use chrono::TimeZone;

    /// A clock set back a month behind the stored next poll, or jumped a month past it: the
    /// `max-age` readers get stays within its bounds.
    #[test]
    fn max_age_stays_within_bounds_with_a_clock_far_from_the_next_poll() {
        let now = Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap();
        let month = chrono::Duration::days(30);
        assert_eq!(max_age(Some(now + month), now), MAX_MAX_AGE);
        assert_eq!(max_age(Some(now - month), now), MIN_MAX_AGE);
        assert_eq!(max_age(Some(DateTime::<Utc>::MAX_UTC), now), MAX_MAX_AGE);
        assert_eq!(max_age(Some(DateTime::<Utc>::MIN_UTC), now), MIN_MAX_AGE);
    }

    /// A feed changed after the clock was set back still gets a later Last-Modified, so a
    /// reader sending If-Modified-Since gets the change, not a 304.
    #[test]
    fn last_modified_moves_forward_when_the_clock_was_set_back() {
        let before = Utc.with_ymd_and_hms(2026, 11, 26, 10, 0, 0).unwrap();
        let behind = before - chrono::Duration::days(1);
        assert_eq!(
            modified_after(Some(before), behind),
            before + chrono::Duration::seconds(1)
        );
        let later = before + chrono::Duration::minutes(5);
        assert_eq!(modified_after(Some(before), later), later);
        assert_eq!(modified_after(None, behind), behind);
    }
}
