//! Dublin Core fallbacks: each entry's `dc:title`, `dc:date` and `dc:creator`.
//!
//! feed-rs reads `dc:date` and `dc:creator` in RSS but never `dc:title`, and none of them in
//! Atom, yet some feeds name their entries only there. This module reads them from a
//! document feed-rs has accepted (so well-formed), one record per entry in document order,
//! for [`super::normalise`] to use where the format's own element is missing. It reads only
//! documents that declare the Dublin Core namespace, in one pass.

use chrono::{DateTime, NaiveDate, Utc};
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

/// The Dublin Core elements namespace (and the terms namespace, which repeats them).
const DC_ELEMENTS: &str = "http://purl.org/dc/elements/1.1/";
const DC_TERMS: &str = "http://purl.org/dc/terms/";

/// One entry's Dublin Core fields (the first of each).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DublinCore {
    pub title: Option<String>,
    pub date: Option<String>,
    pub creator: Option<String>,
}

impl DublinCore {
    /// `dc:date` as a time: W3C-DTF (RFC 3339, or a bare date), or RFC 2822.
    pub fn date(&self) -> Option<DateTime<Utc>> {
        let text = self.date.as_deref()?.trim();
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Some(t.with_timezone(&Utc));
        }
        if let Ok(t) = DateTime::parse_from_rfc2822(text) {
            return Some(t.with_timezone(&Utc));
        }
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc())
    }
}

/// The Dublin Core fields of every entry (`item` or `entry` element), in document order;
/// empty when the document does not declare Dublin Core.
pub fn entries(xml: &[u8]) -> Vec<DublinCore> {
    let Ok(text) = std::str::from_utf8(xml) else {
        return Vec::new();
    };
    if !text.contains(DC_ELEMENTS) && !text.contains(DC_TERMS) {
        return Vec::new();
    }
    let mut reader = NsReader::from_str(text);
    let mut out = Vec::new();
    // Depth inside the current entry (0: outside any), and the field being read.
    let mut depth = 0usize;
    let mut field: Option<(Field, String)> = None;
    while let Ok(event) = reader.read_resolved_event() {
        match event {
            (ns, Event::Start(tag)) => {
                let local = tag.local_name();
                if depth == 0 {
                    if matches!(local.as_ref(), "item" | "entry") && !is_dc(&ns) {
                        out.push(DublinCore::default());
                        depth = 1;
                    }
                    continue;
                }
                depth += 1;
                if depth == 2 && is_dc(&ns) {
                    field = Field::of(local.as_ref()).map(|f| (f, String::new()));
                }
            }
            (_, Event::End(_)) if depth > 0 => {
                if let (Some((f, value)), Some(entry)) = (field.take(), out.last_mut()) {
                    f.set(entry, value);
                }
                depth -= 1;
            }
            // References come as their own events, so text and CDATA are as they read.
            (_, Event::Text(t)) => {
                if let Some((_, value)) = field.as_mut() {
                    value.push_str(&t);
                }
            }
            (_, Event::CData(t)) => {
                if let Some((_, value)) = field.as_mut() {
                    value.push_str(&t);
                }
            }
            (_, Event::GeneralRef(r)) if field.is_some() => {
                let text = html_escape::decode_html_entities(&format!("&{};", &*r)).into_owned();
                if let Some((_, value)) = field.as_mut() {
                    value.push_str(&text);
                }
            }
            (_, Event::Eof) => break,
            _ => {}
        }
    }
    out
}

fn is_dc(ns: &ResolveResult<'_>) -> bool {
    matches!(ns, ResolveResult::Bound(n) if n.0 == DC_ELEMENTS || n.0 == DC_TERMS)
}

#[derive(Debug, Clone, Copy)]
enum Field {
    Title,
    Date,
    Creator,
}

impl Field {
    fn of(local: &str) -> Option<Field> {
        match local {
            "title" => Some(Field::Title),
            "date" | "created" | "issued" => Some(Field::Date),
            "creator" => Some(Field::Creator),
            _ => None,
        }
    }

    fn set(self, entry: &mut DublinCore, value: String) {
        let value = value.trim().to_owned();
        if value.is_empty() {
            return;
        }
        let slot = match self {
            Field::Title => &mut entry.title,
            Field::Date => &mut entry.date,
            Field::Creator => &mut entry.creator,
        };
        slot.get_or_insert(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_entry_gets_its_own_fields() {
        let xml = r#"<rss version="2.0" xmlns:d="http://purl.org/dc/elements/1.1/"><channel><d:title>feed</d:title>
<item><d:title>One &amp; two</d:title><d:date>2026-11-10T08:00:00+08:00</d:date><d:creator>Li Wei</d:creator></item>
<item><title>Own title</title></item>
<item><d:title><![CDATA[Three]]></d:title><d:date>2026-11-09</d:date></item></channel></rss>"#;
        let dc = entries(xml.as_bytes());
        assert_eq!(dc.len(), 3);
        assert_eq!(dc[0].title.as_deref(), Some("One & two"));
        assert_eq!(dc[0].creator.as_deref(), Some("Li Wei"));
        assert_eq!(
            dc[0].date().map(|d| d.to_rfc3339()).as_deref(),
            Some("2026-11-10T00:00:00+00:00")
        );
        assert_eq!(dc[1], DublinCore::default());
        assert_eq!(dc[2].title.as_deref(), Some("Three"));
        assert_eq!(
            dc[2].date().map(|d| d.to_rfc3339()).as_deref(),
            Some("2026-11-09T00:00:00+00:00")
        );
    }

    #[test]
    fn a_document_without_dublin_core_is_not_read() {
        assert!(entries(b"<rss><channel><item><title>a</title></item></channel></rss>").is_empty());
    }
}
