//! Elements: the root and the format it implies, start tags (dropped, closed, taken as text
//! or written with mended attributes), end tags closing what is open, and the end of input
//! closing everything still open.

use super::*;

impl Repairer {
    /// Notes the format from the root element, and opens what RSS 2.0 has and the root's
    /// format lacks: an `<rss>` around CDF's bare `<channel>`, an `<rss><channel>` (with the
    /// root's namespace declarations) for RDF's root.
    pub(super) fn begin_root(&mut self, tag: &BytesStart<'_>) {
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
    pub(super) fn add(&mut self, tag: &str, name: &str) {
        let mut open = Open::new(name.to_owned(), Written::Added, self.out.len());
        self.out.push('<');
        self.out.push_str(tag);
        self.out.push('>');
        open.content_start = self.out.len();
        self.stack.push(open);
    }

    pub(super) fn in_text_only(&self) -> bool {
        self.stack.last().is_some_and(|o| o.text_only)
    }

    /// Whether what comes now is left out (inside an Atom `content` with a `src`).
    pub(super) fn discarding(&self) -> bool {
        self.stack.last().is_some_and(|o| o.discard)
    }

    /// Where in the stack the element holding entries is: the channel in RSS, the root
    /// otherwise.
    pub(super) fn entry_parent(&self) -> Option<usize> {
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

    pub(super) fn start(&mut self, tag: &BytesStart<'_>, empty: bool) {
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
    pub(super) fn markup_as_text(&mut self, tag: &BytesStart<'_>, empty: bool) {
        let raw: &str = tag;
        self.text_escaped(&format!("<{raw}{}>", if empty { "/" } else { "" }));
    }

    /// Writes `<name attr="value"...` (without the closing `>`).
    pub(super) fn write_start_tag(&mut self, name: &str, attributes: &[(String, String)]) {
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
    pub(super) fn holds_only_text(&self, prefix: Option<&str>, local: &str, attrs: &Attrs) -> bool {
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
    pub(super) fn close_to_entry_parent(&mut self) {
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
    pub(super) fn dropped(&self, local: &str, unprefixed: bool) -> bool {
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
    pub(super) fn attributes(
        &mut self,
        tag: &BytesStart<'_>,
        prefix: Option<&str>,
        local: &str,
    ) -> Attrs {
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
            // feed-rs reads `<rss>` only with version 2.0, 0.91 or 0.92 (see `crate::parse`).
            let version = value_of(&written, "version");
            if !version
                .as_deref()
                .is_some_and(|v| crate::parse::RSS_VERSIONS_READ.contains(&v.trim()))
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
    pub(super) fn note_context(&mut self) {
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

    pub(super) fn declared(&self, prefix: &str) -> bool {
        self.stack
            .iter()
            .any(|o| o.declares.iter().any(|d| d == prefix))
    }

    /// The name as the format spells it, when it is one of RSS's or Atom's in another case.
    pub(super) fn canonical(&mut self, name: &str) -> String {
        let canonical = canonical_name(name);
        if canonical != name {
            self.repairs.insert(Repair::ElementCase);
        }
        canonical
    }

    pub(super) fn end(&mut self, raw_name: &str) {
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

    pub(super) fn close_top(&mut self) {
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
    pub(super) fn finish(&mut self) {
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
}

/// A start tag's attributes, mended (see [`Repairer::attributes`]).
pub(super) struct Attrs {
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
