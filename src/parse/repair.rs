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

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

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

/// Namespaces that feeds use by a well-known prefix, for prefixes used undeclared.
const KNOWN_PREFIXES: &[(&str, &str)] = &[
    ("dc", "http://purl.org/dc/elements/1.1/"),
    ("dcterms", "http://purl.org/dc/terms/"),
    ("content", "http://purl.org/rss/1.0/modules/content/"),
    ("media", "http://search.yahoo.com/mrss/"),
    ("itunes", "http://www.itunes.com/dtds/podcast-1.0.dtd"),
    ("atom", "http://www.w3.org/2005/Atom"),
    ("rdf", "http://www.w3.org/1999/02/22-rdf-syntax-ns#"),
    ("slash", "http://purl.org/rss/1.0/modules/slash/"),
    ("wfw", "http://wellformedweb.org/CommentAPI/"),
    ("sy", "http://purl.org/rss/1.0/modules/syndication/"),
    ("georss", "http://www.georss.org/georss"),
    ("feedburner", "http://rssnamespace.org/feedburner/ext/1.0"),
    ("podcast", "https://podcastindex.org/namespace/1.0"),
    ("xhtml", "http://www.w3.org/1999/xhtml"),
];

/// Element names of RSS and Atom as the formats spell them, for names written in another
/// case (`<ITEM>`, `<PubDate>`).
const CANONICAL_NAMES: &[&str] = &[
    "rss",
    "channel",
    "item",
    "title",
    "link",
    "description",
    "language",
    "copyright",
    "managingEditor",
    "webMaster",
    "pubDate",
    "lastBuildDate",
    "category",
    "generator",
    "docs",
    "cloud",
    "ttl",
    "image",
    "url",
    "width",
    "height",
    "textInput",
    "skipHours",
    "skipDays",
    "author",
    "comments",
    "enclosure",
    "guid",
    "source",
    "feed",
    "entry",
    "id",
    "updated",
    "published",
    "summary",
    "content",
    "subtitle",
    "rights",
    "icon",
    "logo",
    "contributor",
    "name",
    "email",
    "uri",
];

/// Roots of the formats feed-rs reads (by local name, any case).
fn is_feed_root(local: &str) -> bool {
    ["rss", "feed", "rdf", "channel"]
        .iter()
        .any(|r| local.eq_ignore_ascii_case(r))
}

/// Elements of RSS that hold only text: markup inside them is text that was not escaped.
const RSS_TEXT: &[&str] = &[
    "title",
    "description",
    "link",
    "guid",
    "author",
    "category",
    "comments",
    "pubDate",
    "lastBuildDate",
    "language",
    "copyright",
    "managingEditor",
    "webMaster",
    "generator",
    "docs",
    "ttl",
    "url",
    "name",
    "source",
];

/// Atom's text constructs: text unless their type is XHTML (or XML, for content).
const ATOM_TEXT_CONSTRUCTS: &[&str] = &["title", "subtitle", "summary", "content", "rights"];

/// Atom elements that hold only text.
const ATOM_TEXT: &[&str] = &[
    "id",
    "updated",
    "published",
    "name",
    "email",
    "uri",
    "icon",
    "logo",
];

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

fn local_of<'a>(tag: &'a BytesStart<'_>) -> &'a str {
    let name = tag.name().0;
    name.rsplit(':').next().unwrap_or(name)
}

impl Repairer {
    /// Notes the format from the root element, and opens what RSS 2.0 has and the root's
    /// format lacks: an `<rss>` around CDF's bare `<channel>`, an `<rss><channel>` (with the
    /// root's namespace declarations) for RDF's root.
    fn begin_root(&mut self, tag: &BytesStart<'_>) {
        let local = local_of(tag);
        self.format = if local.eq_ignore_ascii_case("feed") {
            Format::Atom
        } else {
            Format::Rss
        };
        self.from_rdf = local.eq_ignore_ascii_case("rdf");
        if self.from_rdf {
            let mut declarations = String::new();
            let mut attrs = tag.html_attributes();
            attrs.with_checks(false);
            let mut declared = Vec::new();
            for attr in attrs.flatten() {
                let key = attr.key.0;
                let prefix = key.strip_prefix("xmlns:");
                if (key == "xmlns" || prefix.is_some_and(is_xml_name))
                    && !declared.iter().any(|d: &String| d == key)
                {
                    declared.push(key.to_owned());
                    declarations.push_str(&format!(" {key}=\""));
                    escape_into(&mut declarations, &attr.value);
                    declarations.push('"');
                }
            }
            self.add(&format!("rss version=\"2.0\"{declarations}"), "rss");
            if let Some(rss) = self.stack.last_mut() {
                rss.declares = declared
                    .iter()
                    .filter_map(|k| k.strip_prefix("xmlns:"))
                    .map(str::to_owned)
                    .collect();
            }
            self.add("channel", "channel");
        } else if local.eq_ignore_ascii_case("channel") {
            self.add("rss version=\"2.0\"", "rss");
        }
    }

    /// Opens an element that the input lacks.
    fn add(&mut self, tag: &str, name: &str) {
        let mut open = Open::new(name.to_owned(), Written::Added, self.out.len());
        self.out.push('<');
        self.out.push_str(tag);
        self.out.push('>');
        open.content_start = self.out.len();
        self.stack.push(open);
    }

    fn in_text_only(&self) -> bool {
        self.stack.last().is_some_and(|o| o.text_only)
    }

    /// Whether what comes now is left out (inside an Atom `content` with a `src`).
    fn discarding(&self) -> bool {
        self.stack.last().is_some_and(|o| o.discard)
    }

    /// Where in the stack the element holding entries is: the channel in RSS, the root
    /// otherwise.
    fn entry_parent(&self) -> Option<usize> {
        match self.format {
            // RDF's root, left out of the output, holds the items beside the channel.
            Format::Rss if self.from_rdf && self.stack.len() > 2 => Some(2),
            Format::Rss => self
                .stack
                .iter()
                .position(|o| o.name == "channel" && o.written != Written::Dropped),
            Format::Atom => (!self.stack.is_empty()).then_some(0),
        }
    }

    fn start(&mut self, tag: &BytesStart<'_>, empty: bool) {
        let raw_name = tag.name().0;
        if !is_xml_name(raw_name) {
            // Not markup at all, as in `a < b`: text.
            self.markup_as_text(tag, empty);
            return;
        }
        if self.stack.len() >= MAX_NESTING {
            self.repairs.insert(Repair::Excess);
            return;
        }
        if self.discarding() {
            if !empty {
                let mut open = Open::new(raw_name.to_owned(), Written::Dropped, self.out.len());
                open.discard = true;
                self.stack.push(open);
            }
            return;
        }
        let name = self.canonical(raw_name);
        let (prefix, local) = split_name(&name);
        let is_entry = prefix.is_none()
            && local
                == if self.format == Format::Atom {
                    "entry"
                } else {
                    "item"
                };
        if is_entry {
            self.close_to_entry_parent();
        } else if self.in_text_only() {
            // Markup where only text belongs: text that was not escaped.
            self.markup_as_text(tag, empty);
            return;
        }
        if self.dropped(local, prefix.is_none()) {
            let mut open = Open::new(name.clone(), Written::Dropped, self.out.len());
            if empty {
                return;
            }
            open.declares = declared_prefixes(tag);
            self.stack.push(open);
            return;
        }
        if self.format == Format::Rss
            && self.stack.len() == 1
            && self.stack[0].name == "rss"
            && local != "channel"
        {
            // `<rss>` without `<channel>`: its content is the channel's.
            self.repairs.insert(Repair::UnclosedTags);
            self.add("channel", "channel");
        }
        if local == "link" && prefix.is_none() {
            if let Some(parent) = self.stack.last_mut() {
                parent.has_link = true;
            }
        }
        let entry = is_entry
            && self
                .entry_parent()
                .is_some_and(|p| p + 1 == self.stack.len());
        let start = self.out.len();
        let attrs = self.attributes(tag, prefix, local);
        self.write_start_tag(&name, &attrs.written);
        if empty {
            if attrs.text_construct {
                // An empty text construct: feed-rs refuses it, and it says nothing.
                self.out.truncate(start);
            } else {
                self.out.push_str("/>");
                if entry {
                    self.note_context();
                    self.entries.push(start..self.out.len());
                }
            }
            return;
        }
        self.out.push('>');
        let text_only = self.holds_only_text(prefix, local, &attrs);
        if entry {
            self.note_context();
        }
        let about = (entry && self.from_rdf)
            .then(|| {
                attrs
                    .written
                    .iter()
                    .find(|(k, _)| k == "rdf:about")
                    .map(|(_, v)| v.clone())
            })
            .flatten();
        let mut open = Open::new(name.clone(), Written::Yes, start);
        open.declares = attrs.declares;
        open.text_only = text_only;
        open.content_start = self.out.len();
        open.drop_if_empty = attrs.text_construct;
        open.entry = entry;
        open.about = about;
        open.discard = attrs.src_content;
        self.stack.push(open);
    }

    /// A start tag where no markup belongs, written as the text it was.
    fn markup_as_text(&mut self, tag: &BytesStart<'_>, empty: bool) {
        let raw: &str = tag;
        self.text_escaped(&format!("<{raw}{}>", if empty { "/" } else { "" }));
    }

    /// Writes `<name attr="value"...` (without the closing `>`).
    fn write_start_tag(&mut self, name: &str, attributes: &[(String, String)]) {
        self.out.push('<');
        self.out.push_str(name);
        for (key, value) in attributes {
            self.out.push(' ');
            self.out.push_str(key);
            self.out.push_str("=\"");
            self.escape_attribute(value);
            self.out.push('"');
        }
    }

    /// Whether an element holds only text, so that markup inside it is text not escaped:
    /// RSS's text elements, `content:encoded`, Dublin Core; Atom's text constructs (unless
    /// XHTML or XML) and its text elements.
    fn holds_only_text(&self, prefix: Option<&str>, local: &str, attrs: &Attrs) -> bool {
        match self.format {
            Format::Atom => {
                (attrs.text_construct && !attrs.markup)
                    || (prefix.is_none() && ATOM_TEXT.contains(&local))
            }
            Format::Rss => {
                (prefix.is_none() && RSS_TEXT.contains(&local))
                    || (prefix == Some("content") && local == "encoded")
                    || matches!(prefix, Some("dc" | "dcterms"))
            }
        }
    }

    /// Closes what an entry starting now is still inside of (an unclosed element, or the
    /// entry before it).
    fn close_to_entry_parent(&mut self) {
        let Some(parent) = self.entry_parent() else {
            return;
        };
        if self.stack.len() > parent + 1 {
            self.repairs.insert(Repair::UnclosedTags);
            while self.stack.len() > parent + 1 {
                self.close_top();
            }
        }
    }

    /// Whether an element of the input is left out, its content going to its parent: RDF's
    /// root and its `<channel>` (read as the RSS 2.0 channel added for them).
    fn dropped(&self, local: &str, unprefixed: bool) -> bool {
        let root = self.from_rdf
            && self.stack.len() == 2
            && self.stack.iter().all(|o| o.written == Written::Added);
        (root && local.eq_ignore_ascii_case("rdf"))
            || (self.from_rdf
                && unprefixed
                && local == "channel"
                && self.stack.len() == 3
                && self.stack[2].written == Written::Dropped)
    }

    /// The attributes to write for a start tag, mended: duplicates and bad names dropped,
    /// undeclared prefixes declared, text types feed-rs does not read replaced.
    fn attributes(&mut self, tag: &BytesStart<'_>, prefix: Option<&str>, local: &str) -> Attrs {
        let mut written: Vec<(String, String)> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        let mut declares = Vec::new();
        let mut attrs = tag.html_attributes();
        attrs.with_checks(false);
        for attr in attrs.flatten() {
            let key = canonical_attribute(attr.key.0);
            if !is_xml_name(key) || !seen.insert(key) {
                continue;
            }
            if key != attr.key.0 {
                self.repairs.insert(Repair::ElementCase);
            }
            if written.len() == MAX_ATTRIBUTES {
                self.repairs.insert(Repair::Excess);
                break;
            }
            if let Some(declared) = key.strip_prefix("xmlns:") {
                declares.push(declared.to_owned());
            }
            written.push((key.to_owned(), attr.value.into_owned()));
        }
        let value_of = |written: &[(String, String)], name: &str| {
            written
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        if self.stack.is_empty() && prefix.is_none() && local == "rss" {
            // feed-rs reads `<rss>` only with version 2.0, 0.91 or 0.92 (see `super`).
            let version = value_of(&written, "version");
            if !version
                .as_deref()
                .is_some_and(|v| super::RSS_VERSIONS_READ.contains(&v.trim()))
            {
                written.retain(|(k, _)| k != "version");
                written.insert(0, ("version".to_owned(), "2.0".to_owned()));
            }
        }
        let has_src = value_of(&written, "src").is_some();
        let text_construct = self.format == Format::Atom
            && prefix.is_none()
            && ATOM_TEXT_CONSTRUCTS.contains(&local)
            && !has_src;
        let mut markup = false;
        let kind = value_of(&written, "type");
        let fixed = if text_construct {
            kind.as_deref()
                .map(|k| atom_text_type(k, local == "content"))
        } else if prefix == Some("media") && matches!(local, "title" | "description" | "text") {
            kind.as_deref().map(media_text_type)
        } else {
            None
        };
        if let (Some(kind), Some(fixed)) = (kind.as_deref(), fixed) {
            if fixed != kind {
                self.repairs.insert(Repair::TextType);
                if let Some(a) = written.iter_mut().find(|(k, _)| k == "type") {
                    a.1 = fixed.to_owned();
                }
            }
            markup = fixed == "xhtml" || fixed.ends_with("/xml") || fixed.ends_with("+xml");
        }
        // Prefixes used but not declared are declared here, on the element using them.
        let mut used: Vec<String> = prefix.map(str::to_owned).into_iter().collect();
        let mut used_seen: HashSet<String> = used.iter().cloned().collect();
        for (key, _) in &written {
            if let Some((p, _)) = key.split_once(':') {
                if p != "xmlns" && used_seen.insert(p.to_owned()) {
                    used.push(p.to_owned());
                }
            }
        }
        for p in used {
            if p == "xml" || declares.contains(&p) || self.declared(&p) {
                continue;
            }
            self.repairs.insert(Repair::UndeclaredPrefix);
            let uri = KNOWN_PREFIXES
                .iter()
                .find(|(known, _)| *known == p)
                .map(|(_, uri)| (*uri).to_owned())
                .unwrap_or_else(|| format!("urn:feedmux:undeclared:{p}"));
            written.push((format!("xmlns:{p}"), uri));
            declares.push(p);
        }
        let src_content =
            self.format == Format::Atom && prefix.is_none() && local == "content" && has_src;
        if src_content {
            // With a `src`, the type must be a MIME type (feed-rs refuses `html`).
            let mime = kind.as_deref().and_then(|k| match k.trim() {
                "text" => Some("text/plain".to_owned()),
                "html" => Some("text/html".to_owned()),
                "xhtml" => Some("application/xhtml+xml".to_owned()),
                k if k.contains('/') && !k.contains(char::is_whitespace) => Some(k.to_owned()),
                _ => None,
            });
            if mime != kind {
                self.repairs.insert(Repair::TextType);
                written.retain(|(k, _)| k != "type");
                if let Some(mime) = mime {
                    written.push(("type".to_owned(), mime));
                }
            }
        }
        Attrs {
            written,
            declares,
            text_construct,
            markup,
            src_content,
        }
    }

    /// Notes the elements enclosing the first entry, to read entries alone.
    fn note_context(&mut self) {
        if self.context.is_some() {
            return;
        }
        let open = self
            .stack
            .iter()
            .map(|o| &self.out[o.start..o.content_start])
            .collect::<String>();
        let close = self
            .stack
            .iter()
            .rev()
            .filter(|o| o.written != Written::Dropped)
            .map(|o| format!("</{}>", o.name))
            .collect::<String>();
        self.context = Some((open, close));
    }

    fn declared(&self, prefix: &str) -> bool {
        self.stack
            .iter()
            .any(|o| o.declares.iter().any(|d| d == prefix))
    }

    /// The name as the format spells it, when it is one of RSS's or Atom's in another case.
    fn canonical(&mut self, name: &str) -> String {
        let canonical = canonical_name(name);
        if canonical != name {
            self.repairs.insert(Repair::ElementCase);
        }
        canonical
    }

    fn end(&mut self, raw_name: &str) {
        let name = if is_xml_name(raw_name) {
            canonical_name(raw_name)
        } else {
            String::new()
        };
        let matching = self
            .stack
            .iter()
            .rposition(|o| o.name == name && o.written != Written::Added);
        match matching {
            Some(at) => {
                if self.stack[at + 1..]
                    .iter()
                    .any(|o| o.written != Written::Added)
                {
                    self.repairs.insert(Repair::UnclosedTags);
                }
                while self.stack.len() > at {
                    self.close_top();
                }
                if self.stack.iter().all(|o| o.written == Written::Added) {
                    while !self.stack.is_empty() {
                        self.close_top();
                    }
                }
            }
            None if self.in_text_only() => self.text_escaped(&format!("</{raw_name}>")),
            None => {
                self.repairs.insert(Repair::UnclosedTags);
            }
        }
    }

    fn close_top(&mut self) {
        let Some(open) = self.stack.pop() else {
            return;
        };
        if open.drop_if_empty && self.out[open.content_start..].trim().is_empty() {
            self.out.truncate(open.start);
        } else if open.written != Written::Dropped {
            if let (Some(about), false) = (&open.about, open.has_link) {
                // An RSS 1.0 item without a link: its `rdf:about` is its address.
                self.out.push_str("<link>");
                self.escape_attribute(about);
                self.out.push_str("</link>");
            }
            self.out.push_str("</");
            self.out.push_str(&open.name);
            self.out.push('>');
        }
        if open.entry {
            self.entries.push(open.start..self.out.len());
        }
        if self.stack.is_empty() {
            self.root_closed = true;
        }
    }

    /// Closes what is open at the end of the input, dropping an entry cut off midway.
    fn finish(&mut self) {
        if self.stack.is_empty() {
            return;
        }
        self.repairs.insert(Repair::CutOff);
        if let Some(at) = self.stack.iter().position(|o| o.entry) {
            let start = self.stack[at].start;
            self.stack.truncate(at);
            self.out.truncate(start);
        }
        while !self.stack.is_empty() {
            self.close_top();
        }
    }

    /// Text as quick-xml gives it: still escaped, possibly with bare `&`.
    fn text(&mut self, raw: &str) {
        if self.stack.is_empty() || self.discarding() {
            return;
        }
        let mut rest = raw;
        while let Some(at) = rest.find(['&', '<', '>']) {
            self.out.push_str(&rest[..at]);
            let c = rest.as_bytes()[at];
            rest = &rest[at + 1..];
            match c {
                b'<' => self.out.push_str("&lt;"),
                b'>' => self.out.push_str("&gt;"),
                _ => {
                    // A dangling `&`: quick-xml gives complete references as their own event.
                    self.repairs.insert(Repair::BareAmpersand);
                    self.out.push_str("&amp;");
                }
            }
        }
        self.out.push_str(rest);
    }

    /// Text that is not escaped at all (markup found where only text belongs).
    fn text_escaped(&mut self, text: &str) {
        if self.stack.is_empty() {
            return;
        }
        self.repairs.insert(Repair::UnescapedMarkup);
        push_escaped(&mut self.out, text);
    }

    fn cdata(&mut self, data: &str) {
        if self.stack.is_empty() || self.discarding() {
            return;
        }
        // Kept as CDATA, even where only text belongs: feed-rs reads CDATA as HTML there.
        self.out.push_str("<![CDATA[");
        self.out.push_str(data);
        self.out.push_str("]]>");
    }

    /// A reference `&name;` in text.
    fn entity(&mut self, name: &str) {
        if self.stack.is_empty() || self.discarding() {
            return;
        }
        match resolve_entity(name) {
            Entity::Keep => {
                self.out.push('&');
                self.out.push_str(name);
                self.out.push(';');
            }
            Entity::Html(text) => {
                self.repairs.insert(Repair::HtmlEntities);
                push_escaped(&mut self.out, &text);
            }
            Entity::Drop => {
                self.repairs.insert(Repair::ControlCharacters);
            }
            Entity::Unknown => {
                self.repairs.insert(Repair::BareAmpersand);
                self.out.push_str("&amp;");
                push_escaped(&mut self.out, name);
                self.out.push(';');
            }
        }
    }

    /// An attribute value as written (escaped, possibly badly), escaped properly.
    fn escape_attribute(&mut self, raw: &str) {
        let mut rest = raw;
        while let Some(at) = rest.find(['&', '<', '>', '"']) {
            self.out.push_str(&rest[..at]);
            let c = rest.as_bytes()[at];
            rest = &rest[at + 1..];
            match c {
                b'<' => self.out.push_str("&lt;"),
                b'>' => self.out.push_str("&gt;"),
                b'"' => self.out.push_str("&quot;"),
                _ => {
                    let name_len = rest
                        .bytes()
                        .take(MAX_ENTITY_NAME + 1)
                        .position(|b| b == b';')
                        .filter(|len| {
                            *len > 0
                                && rest.as_bytes()[..*len]
                                    .iter()
                                    .all(|b| b.is_ascii_alphanumeric() || *b == b'#')
                        });
                    match name_len {
                        Some(len) => {
                            let name = rest[..len].to_owned();
                            rest = &rest[len + 1..];
                            self.entity(&name);
                        }
                        None => {
                            self.repairs.insert(Repair::BareAmpersand);
                            self.out.push_str("&amp;");
                        }
                    }
                }
            }
        }
        self.out.push_str(rest);
    }
}

/// A start tag's attributes, mended (see [`Repairer::attributes`]).
struct Attrs {
    written: Vec<(String, String)>,
    /// Prefixes the element declares (including those added for undeclared ones).
    declares: Vec<String>,
    /// An Atom text construct (dropped when empty).
    text_construct: bool,
    /// Its type says its content is markup (XHTML or XML), not text.
    markup: bool,
    /// An Atom `content` with a `src`: its body, which Atom forbids, is left out.
    src_content: bool,
}

/// Prefixes a start tag declares with `xmlns:`.
fn declared_prefixes(tag: &BytesStart<'_>) -> Vec<String> {
    let mut attrs = tag.html_attributes();
    attrs.with_checks(false);
    attrs
        .flatten()
        .filter_map(|a| a.key.0.strip_prefix("xmlns:").map(str::to_owned))
        .collect()
}

/// Attribute names of RSS and Atom, for names written in another case (`VERSION=`).
const CANONICAL_ATTRIBUTES: &[&str] = &[
    "version",
    "type",
    "href",
    "rel",
    "src",
    "url",
    "length",
    "domain",
    "term",
    "label",
    "scheme",
    "isPermaLink",
    "hreflang",
    "title",
    "lastmod",
];

/// The attribute name as RSS or Atom spells it, when it is one of theirs in another case.
fn canonical_attribute(key: &str) -> &str {
    if CANONICAL_ATTRIBUTES.contains(&key) || key.contains(':') {
        return key;
    }
    CANONICAL_ATTRIBUTES
        .iter()
        .find(|c| c.eq_ignore_ascii_case(key))
        .copied()
        .unwrap_or(key)
}

/// The name as RSS or Atom spells it, when it is one of theirs written in another case.
fn canonical_name(name: &str) -> String {
    if let (Some(prefix), local) = split_name(name) {
        if prefix.eq_ignore_ascii_case("rdf") && local.eq_ignore_ascii_case("rdf") {
            return "rdf:RDF".to_owned();
        }
        return name.to_owned();
    }
    if CANONICAL_NAMES.contains(&name) {
        return name.to_owned();
    }
    CANONICAL_NAMES
        .iter()
        .find(|c| c.eq_ignore_ascii_case(name))
        .map_or_else(|| name.to_owned(), |c| (*c).to_owned())
}

/// Media RSS text types as feed-rs reads them: `plain` or `html`.
fn media_text_type(kind: &str) -> &str {
    match kind.trim().to_ascii_lowercase().as_str() {
        "plain" | "text" | "text/plain" => "plain",
        _ => "html",
    }
}

/// What a reference becomes.
enum Entity {
    /// XML's own (`&amp;` and the like, or a character reference to an allowed character).
    Keep,
    /// An HTML named entity, as the text it stands for.
    Html(String),
    /// A character reference to a character XML forbids.
    Drop,
    /// Not an entity anyone defines: the `&` was meant literally.
    Unknown,
}

fn resolve_entity(name: &str) -> Entity {
    if let Some(number) = name.strip_prefix('#') {
        let code = match number.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => number.parse::<u32>().ok(),
        };
        return match code.and_then(char::from_u32) {
            Some(c) if is_xml_char(c) => Entity::Keep,
            Some(_) => Entity::Drop,
            None if code.is_some() => Entity::Drop,
            None => Entity::Unknown,
        };
    }
    if matches!(name, "amp" | "lt" | "gt" | "quot" | "apos") {
        return Entity::Keep;
    }
    if name.is_empty() || name.len() > MAX_ENTITY_NAME {
        return Entity::Unknown;
    }
    let reference = format!("&{name};");
    let decoded = html_escape::decode_html_entities(&reference);
    if decoded != reference {
        Entity::Html(decoded.into_owned())
    } else {
        Entity::Unknown
    }
}

fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Atom text types as feed-rs reads them: `text`, `html`, `xhtml`, or (for content) a MIME
/// type. Anything else is read as HTML, as feed readers do.
fn atom_text_type(kind: &str, content: bool) -> &str {
    let lower = kind.trim().to_ascii_lowercase();
    match lower.as_str() {
        "text" | "text/plain" => "text",
        "html" | "text/html" | "escaped" => "html",
        "xhtml" | "application/xhtml+xml" => "xhtml",
        _ if content && kind.contains('/') && !kind.contains(char::is_whitespace) => kind,
        _ => "html",
    }
}

/// Whether `name` is an XML name with at most one colon, neither first nor last.
fn is_xml_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let start = |c: char| c.is_alphabetic() || c == '_';
    let rest = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '\u{B7}');
    if !start(first) {
        return false;
    }
    let mut colons = 0;
    let mut previous = first;
    for c in chars {
        if c == ':' {
            colons += 1;
            if colons > 1 || previous == ':' {
                return false;
            }
        } else if !rest(c) {
            return false;
        }
        previous = c;
    }
    previous != ':'
}

fn split_name(name: &str) -> (Option<&str>, &str) {
    match name.split_once(':') {
        Some((prefix, local)) => (Some(prefix), local),
        None => (None, name),
    }
}

/// `text` escaped for an attribute value in double quotes.
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '"' => out.push_str("&quot;"),
            '<' => out.push_str("&lt;"),
            c if is_xml_char(c) => out.push(c),
            _ => {}
        }
    }
}

fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if is_xml_char(c) => out.push(c),
            _ => {}
        }
    }
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
