//! A feed as it is served: each format's body, its ETag and Last-Modified, and its gzip and
//! brotli forms, each made once, when a reader first asks for it ([`Rendered`],
//! [`RenderedFeed`]); how long readers may cache it.

use super::*;

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

/// One rendered document with its compressed forms and validator. A cached document is
/// rendered on every poll that changes its feed, but compressed in a coding only when a
/// request first takes that coding ([`Rendered::compress_to`], which the server runs off its
/// async threads), and then served in it until the next rendering: polls cost no
/// compression, and every instance sharing a store compresses only what its readers fetch.
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

    pub(super) fn uncompressed(body: Vec<u8>, effort: Effort) -> Rendered {
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

    /// Whether the form in `coding` is made (identity always is).
    pub fn is_made(&self, coding: Coding) -> bool {
        match coding {
            Coding::Identity => true,
            Coding::Gzip => self.gzip.get().is_some(),
            Coding::Brotli => self.brotli.get().is_some(),
        }
    }

    /// Takes the compressed forms of `before`, a rendering with the same bytes.
    pub(super) fn keep_forms_of(&mut self, before: &Rendered) {
        if before.etag == self.etag {
            self.gzip = before.gzip.clone();
            self.brotli = before.brotli.clone();
        }
    }

    /// Makes the form in `coding`, unless it is made already (it takes up to a tenth of a
    /// second on a large feed: call it off the async threads).
    pub fn compress_to(&self, coding: Coding) {
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
pub(super) fn to_gzip(body: &[u8], level: flate2::Compression) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), level);
    let gzip = encoder
        .write_all(body)
        .and_then(|()| encoder.finish())
        .unwrap_or_default();
    Bytes::from(gzip)
}

/// `body` in brotli at `quality`; empty if that failed.
pub(super) fn to_brotli(body: &[u8], quality: u32) -> Bytes {
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
    pub(super) fn set_last_modified(&mut self, when: DateTime<Utc>) {
        self.last_modified = when;
        for doc in self.formats.values_mut() {
            doc.last_modified = Some(when);
        }
    }

    pub fn get(&self, format: Format) -> Option<&Rendered> {
        self.formats.get(&format)
    }
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
