//! What every format writes of an entry the same way: its id, its dates, its links (made
//! absolute against the feed's base), its body and summary as sanitised HTML or text, and the
//! XML and JSON escaping of text a publisher wrote. Used by `atom`, `rss`, `json` and `html`.

use super::*;

/// The links a document carries about itself and its neighbours (RFC 5005 paging).
pub(super) struct Links {
    /// The document's own URL.
    pub(super) self_url: String,
    /// The logical feed's id: the feed's URL, with its search when it has one.
    pub(super) id: String,
    pub(super) home: String,
    /// The page of older entries.
    pub(super) next: Option<String>,
    /// The first page of this view, when this is a later one.
    pub(super) first: Option<String>,
    /// The WebSub hub, when one is configured.
    pub(super) hub: Option<String>,
}

impl Links {
    /// The WebSub hub, then RFC 5005 links: `next` and `prev-archive` to the older entries,
    /// `first` back to the newest.
    pub(super) fn paging(&self) -> Vec<(&'static str, &str)> {
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

    pub(super) fn new(config: &Config, feed: &FeedConfig, page: &Page, format: Format) -> Links {
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
pub(super) fn newest_change(entries: &[OutputEntry]) -> DateTime<Utc> {
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
pub(super) fn entry_updated(item: &Item) -> Option<DateTime<Utc>> {
    let edited = (item.modified > item.first_seen).then_some(item.modified);
    item.updated.max(edited).map(|t| t.max(item.published))
}

/// The entry's body as safe HTML: its content (or summary) and the other sources of its story.
pub(super) fn body_html(entry: &OutputEntry) -> Option<String> {
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

pub(super) fn also_html(entry: &OutputEntry) -> Option<String> {
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

pub(super) fn summary_text(entry: &OutputEntry) -> Option<String> {
    let html = entry.item.summary_html.as_deref()?;
    let text = html_to_text(html);
    (!text.is_empty()).then_some(text)
}

pub(super) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Strips characters that XML 1.0 cannot carry at all.
pub(super) fn xml_safe(s: &str) -> std::borrow::Cow<'_, str> {
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
pub(super) fn xml_safe_json(value: &mut serde_json::Value) {
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

pub(super) struct Xml {
    w: Writer<Vec<u8>>,
}

impl Xml {
    pub(super) fn new() -> Xml {
        let mut w = Writer::new_with_indent(Vec::new(), b' ', 1);
        // Writing to a Vec cannot fail.
        let _ = w.write_event(Event::Decl(BytesDecl::new("1.0", Some("utf-8"), None)));
        Xml { w }
    }

    pub(super) fn open(&mut self, name: &str, attrs: &[(&str, &str)]) {
        let mut start = BytesStart::new(name);
        for (k, v) in attrs {
            start.push_attribute((*k, xml_safe(v).as_ref()));
        }
        let _ = self.w.write_event(Event::Start(start));
    }

    pub(super) fn close(&mut self, name: &str) {
        let _ = self.w.write_event(Event::End(BytesEnd::new(name)));
    }

    pub(super) fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) {
        let mut start = BytesStart::new(name);
        for (k, v) in attrs {
            start.push_attribute((*k, xml_safe(v).as_ref()));
        }
        let _ = self.w.write_event(Event::Empty(start));
    }

    pub(super) fn text(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) {
        self.open(name, attrs);
        let _ = self
            .w
            .write_event(Event::Text(BytesText::new(xml_safe(text).as_ref())));
        self.close(name);
    }

    pub(super) fn finish(self) -> Vec<u8> {
        let mut out = self.w.into_inner();
        out.push(b'\n');
        out
    }
}
