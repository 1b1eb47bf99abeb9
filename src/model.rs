//! The data that flows between the pipeline stages: a parsed [`Entry`], a stored [`Item`] and a
//! source's [`SourceState`].
//!
//! These are plain values with no behaviour beyond small accessors; each stage owns what it does
//! with them. `Item` and `SourceState` are what the store keeps, so new fields take
//! `#[serde(default)]` to stay readable from older stores.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::redact::{self, Urls};

/// One entry of a feed as `parse` leaves it: plain-text title, absolute links, UTC dates,
/// HTML that is already sanitised.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry {
    /// The feed's own id for the entry (RSS guid, Atom id, JSON Feed id), if it gave one.
    pub guid: Option<String>,
    /// The entry's main link, absolute.
    pub url: Option<String>,
    pub title: String,
    pub summary_html: Option<String>,
    pub content_html: Option<String>,
    pub authors: Vec<String>,
    pub categories: Vec<String>,
    pub enclosures: Vec<Enclosure>,
    pub published: Option<DateTime<Utc>>,
    pub updated: Option<DateTime<Utc>>,
}

/// What a feed says about itself, besides its entries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeedMeta {
    pub title: Option<String>,
    /// The publisher's web site, absolute.
    pub site_url: Option<String>,
    /// RSS `<ttl>`: how long the publisher asks readers to wait between polls.
    pub ttl: Option<std::time::Duration>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enclosure {
    pub url: String,
    #[serde(default)]
    pub mime_type: Option<String>,
    #[serde(default)]
    pub length: Option<u64>,
}

/// The stable identity of a stored item: a hash of its source's name and its GUID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ItemId(pub [u8; 16]);

impl ItemId {
    pub fn from_slice(bytes: &[u8]) -> Option<ItemId> {
        bytes.try_into().ok().map(ItemId)
    }

    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(32);
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

impl fmt::Debug for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ItemId({})", self.to_hex())
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// An item as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub id: ItemId,
    pub source: String,
    /// The GUID the item is known by within its source (the feed's id, or a fallback).
    pub guid: String,
    pub url: Option<String>,
    pub canonical_url: Option<String>,
    pub title: String,
    pub summary_html: Option<String>,
    pub content_html: Option<String>,
    #[serde(default)]
    pub authors: Vec<String>,
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default)]
    pub enclosures: Vec<Enclosure>,
    /// The date shown to readers: the feed's date, or when feedmux first saw the item.
    pub published: DateTime<Utc>,
    pub updated: Option<DateTime<Utc>>,
    pub first_seen: DateTime<Utc>,
    /// When the stored text last changed (first_seen for an item never edited).
    pub modified: DateTime<Utc>,
    /// A hash of the text a reader sees; an edit changes it.
    pub content_hash: u64,
    /// The story group the item belongs to, named by the id of its first item.
    pub story: ItemId,
    /// The [`crate::sanitise::POLICY`] its HTML was cleaned under (0: not known, as for
    /// items stored by older releases); the publish stage cleans again any other.
    #[serde(default)]
    pub sanitised: u32,
}

impl Item {
    /// Whether this item leads its story group.
    pub fn is_story_leader(&self) -> bool {
        self.story == self.id
    }
}

/// What a source's last poll ended as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceStatus {
    #[default]
    New,
    Ok,
    NotModified,
    Failing,
    /// The server answered 410 Gone; not polled again until the source's URL changes.
    Gone,
}

impl fmt::Display for SourceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceStatus::New => "new",
            SourceStatus::Ok => "ok",
            SourceStatus::NotModified => "not modified",
            SourceStatus::Failing => "failing",
            SourceStatus::Gone => "gone",
        })
    }
}

/// What feedmux remembers about a source between polls.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceState {
    #[serde(default)]
    pub status: SourceStatus,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// The URL the validators belong to; they are not sent to another URL.
    #[serde(default)]
    pub validators_for: Option<String>,
    pub last_poll: Option<DateTime<Utc>>,
    pub last_success: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    #[serde(default)]
    pub failing_since: Option<DateTime<Utc>>,
    #[serde(default)]
    pub consecutive_failures: u32,
    pub next_poll: Option<DateTime<Utc>>,
    /// Items stored for this source.
    #[serde(default)]
    pub item_count: u64,
    /// The feed's own title and site, from the last successful parse.
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub site_url: Option<String>,
    /// No poll before this time (backoff after failures, or the server's Retry-After);
    /// `feedmux poll --force` ignores it.
    #[serde(default)]
    pub hold_until: Option<DateTime<Utc>>,
    /// Where a permanent redirect has led on several consecutive polls: polled instead of
    /// the configured URL, as long as the configured URL is `moved_from`.
    #[serde(default)]
    pub effective_url: Option<String>,
    #[serde(default)]
    pub moved_from: Option<String>,
    /// A permanent redirect target seen on the last `redirect_count` polls in a row.
    #[serde(default)]
    pub redirect_candidate: Option<String>,
    #[serde(default)]
    pub redirect_count: u32,
    /// The configured URL that answered 410 Gone.
    #[serde(default)]
    pub gone_url: Option<String>,
    /// What identifies the last body that was parsed and stored (see `refresh::body_digest`):
    /// a 200 with the same body again is not parsed again.
    #[serde(default)]
    pub body_digest: Option<String>,
    /// The feed's own `<ttl>` (RSS) in that body, in seconds: it still pushes the next poll
    /// back when the body is not parsed again.
    #[serde(default)]
    pub feed_ttl_secs: Option<u64>,
    /// What the last parsed body needed mending to be read ("unescaped &, cut off"); `None`
    /// when it was read as it was.
    #[serde(default)]
    pub recovered: Option<String>,
}

/// Why a source is not polled now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// The server said 410 Gone for this URL.
    Gone,
    /// The config says `enabled = false`.
    Disabled,
    /// Backoff or Retry-After until this time.
    Until(DateTime<Utc>),
}

impl SourceState {
    /// The health of the source in a few words: "ok", "not modified", "recovered (unescaped
    /// &)" (read, but only by mending the body), "failing since … (N failures)", "gone", "new".
    pub fn health(&self) -> String {
        match self.status {
            SourceStatus::Ok | SourceStatus::NotModified if self.recovered.is_some() => {
                format!(
                    "recovered ({})",
                    self.recovered.as_deref().unwrap_or_default()
                )
            }
            SourceStatus::Failing => {
                let since = self
                    .failing_since
                    .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_default();
                format!(
                    "failing since {since} ({} failure{})",
                    self.consecutive_failures,
                    if self.consecutive_failures == 1 {
                        ""
                    } else {
                        "s"
                    }
                )
            }
            other => other.to_string(),
        }
    }

    /// A note worth showing beside the health: the last error, or where the feed moved, with
    /// URLs shown as `urls` says (never in full: see [`redact`]).
    pub fn note(&self, configured: &str, urls: Urls) -> String {
        let mut note = self
            .last_error
            .as_deref()
            .map(|e| urls.text(e))
            .unwrap_or_default();
        let polled = self.poll_url(configured);
        if polled != configured {
            if !note.is_empty() {
                note.push_str("; ");
            }
            note.push_str("moved permanently");
            if let Some(to) = urls.url_str(&polled) {
                note.push_str(&format!(" to {to}"));
            }
        }
        note
    }

    /// The state as a public output (`/api/sources`) shows it, for a source configured with
    /// `configured`: every URL redacted (or [`redact::HIDDEN`]), the last error's URLs too.
    /// `gone_url` and `moved_from` are kept (in that form) only when they name `configured`,
    /// so that [`SourceState::from_public`] can tell, without the full URL, whether the
    /// source is gone or moved.
    pub fn public(&self, configured: &str, urls: Urls) -> SourceState {
        let shown = |u: &String| urls.url_str(u).unwrap_or_else(|| redact::HIDDEN.to_owned());
        let names_configured = |u: &Option<String>| u.as_deref() == Some(configured);
        let moved = names_configured(&self.moved_from);
        SourceState {
            last_error: self.last_error.as_deref().map(|e| urls.text(e)),
            validators_for: self.validators_for.as_ref().map(shown),
            effective_url: self.effective_url.as_ref().filter(|_| moved).map(shown),
            moved_from: self.moved_from.as_ref().filter(|_| moved).map(shown),
            redirect_candidate: self.redirect_candidate.as_ref().map(shown),
            gone_url: self
                .gone_url
                .as_ref()
                .filter(|_| names_configured(&self.gone_url))
                .map(shown),
            ..self.clone()
        }
    }

    /// A state read from a public output ([`SourceState::public`]) made usable with the full
    /// `configured` URL again: [`SourceState::hold`] and [`SourceState::poll_url`] tell gone
    /// and moved sources as they would from the store (the place moved to stays redacted).
    pub fn from_public(self, configured: &str) -> SourceState {
        SourceState {
            gone_url: self.gone_url.map(|_| configured.to_owned()),
            moved_from: self.moved_from.map(|_| configured.to_owned()),
            ..self
        }
    }

    /// The URL to poll for a source configured with `configured`.
    pub fn poll_url(&self, configured: &str) -> String {
        match (&self.effective_url, &self.moved_from) {
            (Some(effective), Some(from)) if from == configured => effective.clone(),
            _ => configured.to_owned(),
        }
    }

    /// Whether the source may not be polled at `now` (ignored by `--force`).
    pub fn hold(&self, configured: &str, now: DateTime<Utc>) -> Option<Hold> {
        if self.status == SourceStatus::Gone && self.gone_url.as_deref() == Some(configured) {
            return Some(Hold::Gone);
        }
        self.hold_until.filter(|t| *t > now).map(Hold::Until)
    }
}

/// Why the last reload of the config was refused (the running config stays); cleared by the
/// next reload that succeeds. Shown on the status page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadFailure {
    pub at: DateTime<Utc>,
    /// Each problem, as `file:line:column: message` where the config module can tell.
    pub errors: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIGURED: &str = "https://u:SECRET@h.example/feed?token=SECRET";

    fn moved_and_failing() -> SourceState {
        SourceState {
            status: SourceStatus::Failing,
            last_error: Some(
                "fetch failed: redirect loop: https://u:SECRET@h.example/a?t=SECRET was reached twice"
                    .into(),
            ),
            validators_for: Some("https://u:SECRET@n.example/feed?token=SECRET".into()),
            effective_url: Some("https://u:SECRET@n.example/feed?token=SECRET".into()),
            moved_from: Some(CONFIGURED.into()),
            redirect_candidate: Some("https://n.example/next?token=SECRET".into()),
            ..SourceState::default()
        }
    }

    #[test]
    fn notes_never_show_a_url_in_full() {
        let state = moved_and_failing();
        assert_eq!(
            state.note(CONFIGURED, Urls::Redacted),
            "fetch failed: redirect loop: https://h.example/a was reached twice; moved permanently to https://n.example/feed"
        );
        assert_eq!(
            state.note(CONFIGURED, Urls::Hidden),
            "fetch failed: redirect loop: (URL hidden) was reached twice; moved permanently"
        );
    }

    #[test]
    fn a_public_state_shows_no_secret_and_still_tells_moved_and_gone() {
        for urls in [Urls::Redacted, Urls::Hidden] {
            let public = moved_and_failing().public(CONFIGURED, urls);
            let json = serde_json::to_string(&public).unwrap();
            assert!(!json.contains("SECRET"), "{json}");
            let back = public.from_public(CONFIGURED);
            assert_ne!(back.poll_url(CONFIGURED), CONFIGURED, "{urls:?}: moved");

            let gone = SourceState {
                status: SourceStatus::Gone,
                gone_url: Some(CONFIGURED.into()),
                ..SourceState::default()
            };
            let back = gone.public(CONFIGURED, urls).from_public(CONFIGURED);
            assert_eq!(
                back.hold(CONFIGURED, Utc::now()),
                Some(Hold::Gone),
                "{urls:?}"
            );
        }
        // Gone from, or moved from, a URL the config no longer has: not gone, not moved.
        let old = SourceState {
            status: SourceStatus::Gone,
            gone_url: Some("https://old.example/".into()),
            ..moved_and_failing()
        };
        let back = old
            .public("https://other.example/", Urls::Redacted)
            .from_public("https://other.example/");
        assert_eq!(back.hold("https://other.example/", Utc::now()), None);
        assert_eq!(
            back.poll_url("https://other.example/"),
            "https://other.example/"
        );
        assert_eq!(
            moved_and_failing()
                .public(CONFIGURED, Urls::Redacted)
                .effective_url
                .as_deref(),
            Some("https://n.example/feed")
        );
    }
}
