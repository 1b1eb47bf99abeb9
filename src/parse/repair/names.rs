//! The names the repair pass knows: namespace prefixes feeds use without declaring them,
//! element and attribute names in their canonical case, which elements hold only text, and
//! Atom's and Media RSS's text types.

use super::*;

/// Namespaces that feeds use by a well-known prefix, for prefixes used undeclared.
pub(super) const KNOWN_PREFIXES: &[(&str, &str)] = &[
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
pub(super) const CANONICAL_NAMES: &[&str] = &[
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
pub(super) fn is_feed_root(local: &str) -> bool {
    ["rss", "feed", "rdf", "channel"]
        .iter()
        .any(|r| local.eq_ignore_ascii_case(r))
}

/// Elements of RSS that hold only text: markup inside them is text that was not escaped.
pub(super) const RSS_TEXT: &[&str] = &[
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
pub(super) const ATOM_TEXT_CONSTRUCTS: &[&str] =
    &["title", "subtitle", "summary", "content", "rights"];

/// Atom elements that hold only text.
pub(super) const ATOM_TEXT: &[&str] = &[
    "id",
    "updated",
    "published",
    "name",
    "email",
    "uri",
    "icon",
    "logo",
];

pub(super) fn local_of<'a>(tag: &'a BytesStart<'_>) -> &'a str {
    let name = tag.name().0;
    name.rsplit(':').next().unwrap_or(name)
}

/// Prefixes a start tag declares with `xmlns:`.
pub(super) fn declared_prefixes(tag: &BytesStart<'_>) -> Vec<String> {
    let mut attrs = tag.html_attributes();
    attrs.with_checks(false);
    attrs
        .flatten()
        .filter_map(|a| a.key.0.strip_prefix("xmlns:").map(str::to_owned))
        .collect()
}

/// Attribute names of RSS and Atom, for names written in another case (`VERSION=`).
pub(super) const CANONICAL_ATTRIBUTES: &[&str] = &[
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
pub(super) fn canonical_attribute(key: &str) -> &str {
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
pub(super) fn canonical_name(name: &str) -> String {
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
pub(super) fn media_text_type(kind: &str) -> &str {
    match kind.trim().to_ascii_lowercase().as_str() {
        "plain" | "text" | "text/plain" => "plain",
        _ => "html",
    }
}

/// Atom text types as feed-rs reads them: `text`, `html`, `xhtml`, or (for content) a MIME
/// type. Anything else is read as HTML, as feed readers do.
pub(super) fn atom_text_type(kind: &str, content: bool) -> &str {
    let lower = kind.trim().to_ascii_lowercase();
    match lower.as_str() {
        "text" | "text/plain" => "text",
        "html" | "text/html" | "escaped" => "html",
        "xhtml" | "application/xhtml+xml" => "xhtml",
        _ if content && kind.contains('/') && !kind.contains(char::is_whitespace) => kind,
        _ => "html",
    }
}

pub(super) fn split_name(name: &str) -> (Option<&str>, &str) {
    match name.split_once(':') {
        Some((prefix, local)) => (Some(prefix), local),
        None => (None, name),
    }
}
