//! Publishing: output feeds rendered as Atom 1.0, RSS 2.0 and JSON Feed 1.1, kept in memory.
//!
//! [`Publisher::render`] reads a feed's newest items from the store (one entry per story
//! group, the group's earliest report shown and the other sources listed), renders the three
//! formats with every piece of HTML passed through ammonia, compresses them, and swaps them in.
//! The `ETag` is a hash of the bytes, and `Last-Modified` moves only when the bytes change, so
//! re-rendering unchanged content costs readers nothing. Requests for a whole feed read the
//! cached bytes and never render; searches and pages are rendered by [`render_view`] and kept
//! by [`Publisher::view`] in a bounded LRU until their feed is rendered again, at most a few
//! at once (`cache`). This module does not fetch and does not write the store.
//!
//! Here: [`Publisher`] and the render entry points; beside it `select` (which entries, a page
//! at a time), `atom`, `rss`, `json` and `html` (the documents), `entry` (what they share of an
//! entry), `rendered` (bodies, validators, compression) and `cache` (searches and pages).

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

mod atom;
mod cache;
mod entry;
mod html;
mod json;
mod rendered;
mod rss;
mod select;
use atom::*;
use entry::*;
pub use entry::{entry_id, feed_url};
use json::*;
pub use rendered::*;
use rss::*;
pub use select::*;

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

/// The least time between the starts of two renders of one feed: polls that change a feed
/// faster (a sweep of many sources, or other instances' polls) are rendered together, once a
/// second, rather than one render each. Readers cache a feed for at least [`MIN_MAX_AGE`].
pub const RENDER_GAP: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps renders of one feed from running side by side, and [`RENDER_GAP`] apart.
#[derive(Debug, Default)]
struct RenderGate {
    /// Held while rendering; when the last render started.
    running: Mutex<Option<std::time::Instant>>,
    /// A render was asked for after the running one started (with the newest config).
    pending: Mutex<Option<Arc<Config>>>,
}

impl Publisher {
    pub fn new() -> Publisher {
        Publisher::default()
    }

    /// A publisher rendering searches and pages in `slots` (tests make the wait short).
    pub fn with_search_slots(slots: SearchSlots) -> Publisher {
        Publisher {
            searches: slots,
            ..Publisher::default()
        }
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
        self.render_gated(store, config, feed, false)
    }

    /// Renders `feed` once no render of it is running (waiting for one that is): never side
    /// by side with another render, whose result, read from the store before this call, could
    /// otherwise be swapped into the cache after this one's and hide what the store holds now.
    pub fn render_after_running(
        &self,
        store: &Store,
        config: Arc<Config>,
        feed: &str,
    ) -> Result<(), PublishError> {
        self.render_gated(store, config, feed, true).map(|_| ())
    }

    /// [`Publisher::render_when_free`], or with `wait` [`Publisher::render_after_running`].
    fn render_gated(
        &self,
        store: &Store,
        config: Arc<Config>,
        feed: &str,
        mut wait: bool,
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
            let running = if std::mem::take(&mut wait) {
                Ok(gate.running.lock().unwrap_or_else(|p| p.into_inner()))
            } else {
                gate.running.try_lock()
            };
            let Ok(mut running) = running else {
                return Ok(changed); // the running render sees the request when it ends
            };
            loop {
                let pending = || gate.pending.lock().unwrap_or_else(|p| p.into_inner());
                if pending().is_none() {
                    break;
                }
                // Requests that come meanwhile are rendered with this one.
                if let Some(since) = running.map(|started| started.elapsed()) {
                    std::thread::sleep(RENDER_GAP.saturating_sub(since));
                }
                let Some(config) = pending().take() else {
                    break;
                };
                *running = Some(std::time::Instant::now());
                let rendered = self.render(store, &config, feed)?;
                let all = changed.get_or_insert_with(Vec::new);
                for format in &rendered.changed {
                    if !all.contains(format) {
                        all.push(*format);
                    }
                }
            }
            drop(running);
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

    /// Renders `feed` from the store and swaps it into the cache (compressed when first asked
    /// for: [`Rendered::compress_to`]).
    pub fn render(
        &self,
        store: &Store,
        config: &Config,
        feed: &str,
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
                        doc.keep_forms_of(before);
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

    /// Renders every feed of the config, each after any render of it already running (so that
    /// an older result never lands last), and drops feeds that left it.
    pub fn render_all(&self, store: &Store, config: &Config) -> Result<(), PublishError> {
        let shared = Arc::new(config.clone());
        for feed in &config.feeds {
            self.render_after_running(store, shared.clone(), &feed.name)?;
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
    let mut states = store.source_states().unwrap_or_default();
    config
        .sources
        .iter()
        .map(|s| {
            let state = states.remove(&s.name).unwrap_or_default();
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

    /// The render gate of `feed` (it exists once the feed was rendered).
    fn gate_of(publisher: &Publisher, feed: &str) -> Arc<RenderGate> {
        publisher
            .gates
            .lock()
            .expect("gates")
            .get(feed)
            .cloned()
            .expect("a gate")
    }

    #[test]
    fn a_render_asked_for_while_one_runs_runs_after_it_not_beside_it() {
        let (_dir, store, config) = setup();
        let publisher = Publisher::new();
        let first = publisher
            .render_when_free(&store, config.clone(), "all")
            .expect("render");
        assert!(first.is_some(), "a free feed is rendered at once");
        let gate = gate_of(&publisher, "all");
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

    /// Renders of one feed asked for faster than [`RENDER_GAP`] start that far apart, so that
    /// those asked for meanwhile are rendered together.
    #[test]
    fn renders_of_one_feed_start_a_render_gap_apart() {
        let (_dir, store, config) = setup();
        let publisher = Publisher::new();
        let started = |publisher: &Publisher| {
            gate_of(publisher, "all")
                .running
                .lock()
                .expect("gate")
                .expect("rendered")
        };
        publisher
            .render_when_free(&store, config.clone(), "all")
            .expect("render");
        let first = started(&publisher);
        publisher
            .render_when_free(&store, config.clone(), "all")
            .expect("render");
        let second = started(&publisher);
        assert!(second - first >= RENDER_GAP, "{:?} apart", second - first);
    }

    /// Renders after a change (a recovered store, a prune, a reload) wait for a render that
    /// runs, rather than run beside it: one side by side could finish first and be replaced
    /// by the older one's result.
    #[test]
    fn render_all_waits_for_a_running_render_and_renders_after_it() {
        let (_dir, store, config) = setup();
        let publisher = Arc::new(Publisher::new());
        publisher
            .render_when_free(&store, config.clone(), "all")
            .expect("render");
        let gate = gate_of(&publisher, "all");
        let running = gate.running.lock().expect("gate");
        let waiting = {
            let (publisher, store, config) = (publisher.clone(), store.clone(), config.clone());
            std::thread::spawn(move || publisher.render_all(&store, &config))
        };
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!waiting.is_finished(), "it waits for the running render");
        drop(running);
        waiting.join().expect("thread").expect("render");
        assert!(
            gate.pending.lock().expect("pending").is_none(),
            "its request was rendered"
        );
    }

    /// A render compresses nothing: each format is compressed in a coding when first asked
    /// for, once per rendering, and a rendering with the same bytes keeps the forms made.
    #[test]
    fn feeds_are_compressed_when_first_asked_for_and_kept_while_unchanged() {
        let (_dir, store, config) = setup();
        let publisher = Publisher::new();
        let feed = publisher.render(&store, &config, "all").expect("render");
        let atom = feed.get(Format::Atom).expect("atom");
        for coding in [Coding::Gzip, Coding::Brotli] {
            assert!(!atom.is_made(coding), "{coding:?} made by the render");
            assert_eq!(atom.bytes_of(coding), (&atom.body, Coding::Identity));
        }
        let (gzip, coding) = atom.encoded(Coding::Gzip);
        assert_eq!(coding, Coding::Gzip);
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gzip[..]), &mut plain)
            .expect("gzip");
        assert_eq!(plain, atom.body);
        assert_eq!(
            atom.etag_of(coding),
            format!("{}-gzip\"", atom.etag.trim_end_matches('"'))
        );
        assert!(!atom.is_made(Coding::Brotli), "brotli made with gzip");
        assert!(!feed.get(Format::Rss).expect("rss").is_made(Coding::Gzip));

        // Rendered again with nothing changed: the gzip form made is kept, not redone.
        let again = publisher.render(&store, &config, "all").expect("render");
        let atom_again = again.get(Format::Atom).expect("atom");
        assert_eq!(atom_again.etag, atom.etag);
        assert!(atom_again.is_made(Coding::Gzip));
        assert_eq!(atom_again.bytes_of(Coding::Gzip).0, gzip);
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
