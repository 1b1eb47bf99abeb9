//! The repair pass: a feed that the strict parser refused, rewritten as well-formed XML.
//!
//! Publishers break XML in a handful of ways: a bare `&` or an HTML entity (`&nbsp;`) in a
//! title, markup pasted unescaped into a description and left unclosed, a namespace prefix
//! used but never declared, PHP warnings before the root, garbage after it, a document cut
//! off mid-item, element names in upper case, Atom text types feed-rs does not know. This
//! module reads such a document with quick-xml in its lenient mode and writes it out again
//! as XML that feed-rs accepts, keeping every complete entry and saying what it repaired.
//!
//! It runs only after the strict parse failed, in one pass over the input (linear time,
//! whatever the input), and it never expands entities declared in a doctype. It knows
//! nothing of feed-rs or of what the entries mean: [`super`] parses its output.
//!
//! Here: the pass itself ([`repair`]) and its state (`Repairer`); beside it `elements` (start
//! and end tags, the root), `text` (character data, entities, attribute values) and `names`
//! (the prefixes, names and text types it knows).

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

mod elements;
mod names;
mod text;
use names::*;
use text::*;

/// One kind of damage the repair pass mended (shown as "recovered (…)" in source health).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Repair {
    /// A bare `&`, or an entity XML does not define and HTML does not know.
    BareAmpersand,
    /// HTML's named entities (`&nbsp;`, `&eacute;`), which XML does not define.
    HtmlEntities,
    /// A namespace prefix used without its declaration.
    UndeclaredPrefix,
    /// Elements left open, or end tags that close nothing.
    UnclosedTags,
    /// Text or markup before the root element (a server's warnings, a stray line).
    TextBeforeRoot,
    /// Text or markup after the root element closed.
    TextAfterRoot,
    /// The document ends before its root closes: the last, incomplete entry is dropped.
    CutOff,
    /// Element names in another case than the format's (`<ITEM>`).
    ElementCase,
    /// An Atom text type feed-rs does not read (read as HTML instead).
    TextType,
    /// Markup where only text belongs (HTML pasted unescaped into a description, `a < b`).
    UnescapedMarkup,
    /// Elements nested deeper, or with more attributes, than any feed needs.
    Excess,
    /// References to characters XML forbids (`&#1;`).
    ControlCharacters,
}

impl fmt::Display for Repair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Repair::BareAmpersand => "unescaped &",
            Repair::HtmlEntities => "HTML entities",
            Repair::UndeclaredPrefix => "undeclared namespace prefix",
            Repair::UnclosedTags => "unclosed or mismatched tags",
            Repair::TextBeforeRoot => "text before the root element",
            Repair::TextAfterRoot => "text after the root element",
            Repair::CutOff => "cut off",
            Repair::ElementCase => "upper-case element names",
            Repair::TextType => "unknown text type",
            Repair::UnescapedMarkup => "unescaped markup in text",
            Repair::Excess => "nesting or attributes beyond bounds",
            Repair::ControlCharacters => "control characters",
        })
    }
}

/// A repaired document, with where its entries are so that they can be read one by one.
#[derive(Debug, Clone)]
pub struct Repaired {
    /// The whole document, well-formed, in UTF-8, without XML declaration or doctype.
    pub xml: String,
    /// What was mended, each kind once, in order of kind.
    pub repairs: Vec<Repair>,
    /// Every entry (`item` or `entry` element directly under the channel or root) in `xml`.
    pub entries: Vec<Range<usize>>,
    /// The start tags enclosing the entries (root, and channel in RSS) and their end tags:
    /// `open + entry + close` is a document holding that entry alone.
    pub open: String,
    pub close: String,
}

impl Repaired {
    /// The document without its entries: the feed's own metadata.
    pub fn without_entries(&self) -> String {
        let mut out = String::with_capacity(self.xml.len());
        let mut at = 0;
        for range in &self.entries {
            out.push_str(&self.xml[at..range.start]);
            at = range.end;
        }
        out.push_str(&self.xml[at..]);
        out
    }

    /// A document holding entry `index` alone, inside the feed's root (and channel).
    pub fn with_entry_alone(&self, index: usize) -> Option<String> {
        let range = self.entries.get(index)?;
        Some(format!(
            "{}{}{}",
            self.open,
            &self.xml[range.clone()],
            self.close
        ))
    }
}

/// The longest entity name looked for after a `&` (HTML's longest is 31 characters).
const MAX_ENTITY_NAME: usize = 32;

/// How deeply elements may nest, and how many attributes one may have; beyond, tags and
/// attributes are left out (text stays). Feeds nest a dozen deep and carry a few attributes;
/// the bounds keep every lookup over open elements and attributes short, so the pass is
/// linear whatever the input.
const MAX_NESTING: usize = 256;
const MAX_ATTRIBUTES: usize = 256;

/// How an open element appears in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    /// As in the input.
    Yes,
    /// Added by the repair (the `<rss>` around a bare `<channel>`, the `<channel>` an `<rss>`
    /// lacks); never closed by an end tag of the input.
    Added,
    /// In the input but not written: its content goes to the enclosing element (the
    /// namespace-less `<rdf>` root and its `<channel>`, read as RSS 2.0's channel).
    Dropped,
}

/// An element open in the output.
struct Open {
    /// The name as written out.
    name: String,
    written: Written,
    /// Prefixes this element declares.
    declares: Vec<String>,
    /// Its content is text: markup inside is escaped.
    text_only: bool,
    /// Where its start tag begins in the output, and where its content begins.
    start: usize,
    content_start: usize,
    /// Dropped when it ends empty (an empty Atom text construct, which feed-rs refuses).
    drop_if_empty: bool,
    /// It is an entry (RSS `item`, Atom `entry`) directly under the channel or root.
    entry: bool,
    /// An RSS 1.0 item's `rdf:about`, written as its link when it has none.
    about: Option<String>,
    has_link: bool,
    /// Its content is left out (an Atom `content` with a `src` must be empty).
    discard: bool,
}

impl Open {
    fn new(name: String, written: Written, start: usize) -> Open {
        Open {
            name,
            written,
            declares: Vec::new(),
            text_only: false,
            start,
            content_start: start,
            drop_if_empty: false,
            entry: false,
            about: None,
            has_link: false,
            discard: false,
        }
    }
}

/// The format of the document, as its root says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// RSS of any version (and CDF): entries are `item`s in `channel`. RSS 1.0 and 0.90
    /// (`rdf:RDF`, entries beside the channel) are written as RSS 2.0, which feed-rs reads
    /// more leniently (an item without a link is kept).
    Rss,
    /// Atom: entries are `entry`s in the root.
    Atom,
}

/// The writer of the repaired document.
struct Repairer {
    out: String,
    stack: Vec<Open>,
    repairs: HashSet<Repair>,
    entries: Vec<Range<usize>>,
    /// The enclosing start tags of the first entry, and their end tags.
    context: Option<(String, String)>,
    format: Format,
    /// The root is RDF's (RSS 1.0 or 0.90), written as RSS 2.0.
    from_rdf: bool,
    root_closed: bool,
}

/// Repairs `text` (UTF-8, the whole body). `None` when no feed root element is found.
pub fn repair(text: &str) -> Option<Repaired> {
    let (text, stray) = stray_less_than_escaped(text);
    let text = &*text;
    let mut reader = Reader::from_str(text);
    {
        let config = reader.config_mut();
        config.allow_dangling_amp = true;
        config.allow_unmatched_ends = true;
        config.check_end_names = false;
        config.check_comments = false;
        config.expand_empty_elements = false;
        config.trim_markup_names_in_closing_tags = true;
    }
    let mut r = Repairer {
        out: String::with_capacity(text.len() + text.len() / 8),
        stack: Vec::new(),
        repairs: HashSet::new(),
        entries: Vec::new(),
        context: None,
        format: Format::Rss,
        from_rdf: false,
        root_closed: false,
    };
    let mut seen_root = false;
    // quick-xml stops at what cannot be read on (an unclosed tag, comment or CDATA):
    // whatever came before is kept, as for a document cut off there.
    while let Ok(event) = reader.read_event() {
        if !seen_root {
            match &event {
                Event::Start(tag) | Event::Empty(tag) if is_feed_root(local_of(tag)) => {
                    seen_root = true;
                    r.begin_root(tag);
                }
                Event::Eof => break,
                Event::Decl(_) | Event::DocType(_) | Event::PI(_) | Event::Comment(_) => continue,
                Event::Text(t) if t.trim().is_empty() => continue,
                _ => {
                    r.repairs.insert(Repair::TextBeforeRoot);
                    continue;
                }
            }
        }
        match event {
            Event::Start(tag) => r.start(&tag, false),
            Event::Empty(tag) => r.start(&tag, true),
            Event::End(tag) => r.end(tag.name().0),
            Event::Text(t) => r.text(&t),
            Event::GeneralRef(reference) => r.entity(&reference),
            Event::CData(data) => r.cdata(&data),
            Event::Comment(_) | Event::PI(_) | Event::Decl(_) | Event::DocType(_) => {}
            Event::Eof => break,
        }
        if r.root_closed {
            let at = usize::try_from(reader.buffer_position()).unwrap_or(text.len());
            if !text.get(at..).unwrap_or_default().trim().is_empty() {
                r.repairs.insert(Repair::TextAfterRoot);
            }
            break;
        }
    }
    if !seen_root {
        return None;
    }
    if stray {
        r.repairs.insert(Repair::UnescapedMarkup);
    }
    r.finish();
    let mut repairs: Vec<Repair> = r.repairs.into_iter().collect();
    repairs.sort();
    let (open, close) = r.context.unwrap_or_default();
    Some(Repaired {
        xml: r.out,
        repairs,
        entries: r.entries,
        open,
        close,
    })
}

/// `text` with every `<` that cannot start markup (`a < b`, `<100 ms`) written `&lt;`, so the
/// tokenizer does not read a tag up to the next `>` (and across a quote to the next one), and
/// whether there was any.
fn stray_less_than_escaped(text: &str) -> (std::borrow::Cow<'_, str>, bool) {
    let starts_markup = |c: char| c.is_alphabetic() || matches!(c, '_' | ':' | '/' | '!' | '?');
    let stray = |at: usize| !text[at + 1..].chars().next().is_some_and(starts_markup);
    if !text.match_indices('<').any(|(at, _)| stray(at)) {
        return (std::borrow::Cow::Borrowed(text), false);
    }
    let mut out = String::with_capacity(text.len() + 64);
    let mut from = 0;
    for (at, _) in text.match_indices('<') {
        if stray(at) {
            out.push_str(&text[from..at]);
            out.push_str("&lt;");
            from = at + 1;
        }
    }
    out.push_str(&text[from..]);
    (std::borrow::Cow::Owned(out), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repaired(text: &str) -> Repaired {
        repair(text).expect("a feed root")
    }

    #[test]
    fn bare_ampersands_and_html_entities_are_mended() {
        let r = repaired("<rss version=\"2.0\"><channel><item><title>R&D &nbsp;&eacute;t&eacute; &bogus; &amp; &#233;</title></item></channel></rss>");
        assert_eq!(
            r.xml,
            "<rss version=\"2.0\"><channel><item><title>R&amp;D \u{A0}été &amp;bogus; &amp; &#233;</title></item></channel></rss>"
        );
        assert_eq!(r.repairs, [Repair::BareAmpersand, Repair::HtmlEntities]);
    }

    #[test]
    fn markup_in_text_elements_becomes_text() {
        let r = repaired("<rss version=\"2.0\"><channel><item><title>a</title><description>Hi <b>bold<br> x</description></item></channel></rss>");
        assert_eq!(
            r.xml,
            "<rss version=\"2.0\"><channel><item><title>a</title><description>Hi &lt;b&gt;bold&lt;br&gt; x</description></item></channel></rss>"
        );
    }

    #[test]
    fn a_cut_off_document_keeps_its_complete_entries() {
        let r = repaired(
            "<rss version=\"2.0\"><channel><title>t</title><item><title>one</title></item><item><title>tw",
        );
        assert_eq!(
            r.xml,
            "<rss version=\"2.0\"><channel><title>t</title><item><title>one</title></item></channel></rss>"
        );
        assert_eq!(r.repairs, [Repair::CutOff]);
        assert_eq!(r.entries.len(), 1);
    }

    #[test]
    fn an_unclosed_item_is_closed_by_the_next() {
        let r = repaired(
            "<rss version=\"2.0\"><channel><item><title>a</title><item><title>b</title></item></channel></rss>",
        );
        assert_eq!(r.entries.len(), 2);
        assert_eq!(
            r.xml,
            "<rss version=\"2.0\"><channel><item><title>a</title></item><item><title>b</title></item></channel></rss>"
        );
    }

    #[test]
    fn undeclared_prefixes_are_declared_where_used() {
        let r = repaired("<rss version=\"2.0\"><channel><item><dc:creator>x</dc:creator><foo:bar a:b=\"1\"/></item></channel></rss>");
        assert!(r
            .xml
            .contains("<dc:creator xmlns:dc=\"http://purl.org/dc/elements/1.1/\">x</dc:creator>"));
        assert!(r.xml.contains("<foo:bar a:b=\"1\" xmlns:foo=\"urn:feedmux:undeclared:foo\" xmlns:a=\"urn:feedmux:undeclared:a\"/>"), "{}", r.xml);
    }

    #[test]
    fn text_around_the_root_and_upper_case_names() {
        let r = repaired("<br />\n<b>Warning</b>: x in <b>f.php</b>\n<?xml version=\"1.0\"?><RSS><CHANNEL><ITEM><TITLE>a</TITLE><PUBDATE>x</PUBDATE></ITEM></CHANNEL></RSS>\n<!-- 0.1s --> trailing");
        assert_eq!(
            r.xml,
            "<rss version=\"2.0\"><channel><item><title>a</title><pubDate>x</pubDate></item></channel></rss>"
        );
        assert_eq!(
            r.repairs,
            [
                Repair::TextBeforeRoot,
                Repair::TextAfterRoot,
                Repair::ElementCase
            ]
        );
    }

    #[test]
    fn atom_text_types_and_empty_constructs() {
        let r = repaired("<feed xmlns=\"http://www.w3.org/2005/Atom\"><entry><title type=\"TEXT/PLAIN\">a</title><summary type=\"text\"></summary><content type=\"application/xhtml+xml\"><div>x</div></content></entry></feed>");
        assert_eq!(
            r.xml,
            "<feed xmlns=\"http://www.w3.org/2005/Atom\"><entry><title type=\"text\">a</title><content type=\"xhtml\"><div>x</div></content></entry></feed>"
        );
    }

    #[test]
    fn each_entry_can_be_read_alone() {
        let r = repaired("<rss version=\"2.0\"><channel><title>t</title><item><title>a</title></item><item><title>b</title></item></channel></rss>");
        assert_eq!(
            r.with_entry_alone(1).unwrap(),
            "<rss version=\"2.0\"><channel><item><title>b</title></item></channel></rss>"
        );
        assert_eq!(
            r.without_entries(),
            "<rss version=\"2.0\"><channel><title>t</title></channel></rss>"
        );
    }

    #[test]
    fn nesting_and_attributes_are_bounded() {
        let deep = format!(
            "<rss version=\"2.0\"><channel><item><title>t</title>{}x{}</item></channel></rss>",
            "<a>".repeat(MAX_NESTING * 2),
            "</a>".repeat(MAX_NESTING * 2)
        );
        let r = repaired(&deep);
        assert!(r.xml.matches("<a>").count() < MAX_NESTING);
        assert_eq!(r.xml.matches("<a>").count(), r.xml.matches("</a>").count());
        assert!(r.repairs.contains(&Repair::Excess));
        assert_eq!(r.entries.len(), 1);
        let attributes: String = (0..MAX_ATTRIBUTES * 2)
            .map(|i| format!(" a{i}=\"1\""))
            .collect();
        let r = repaired(&format!(
            "<rss version=\"2.0\"><channel><item{attributes}><title>t</title></item></channel></rss>"
        ));
        assert_eq!(r.xml.matches("=\"1\"").count(), MAX_ATTRIBUTES);
    }

    #[test]
    fn no_feed_root_is_none() {
        assert!(repair("<html><body>x</body></html>").is_none());
        assert!(repair("just text").is_none());
    }

    #[test]
    fn a_less_than_sign_in_text_is_text() {
        let r =
            repaired("<rss version=\"2.0\"><channel><item><title>a < b and 3 > 2</title></item></channel></rss>");
        assert!(
            r.xml.contains("<title>a &lt; b and 3 &gt; 2</title>"),
            "{}",
            r.xml
        );
    }
}
