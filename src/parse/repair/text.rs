//! Text: character data and CDATA escaped anew, entities resolved (XML's five, numeric ones
//! and HTML's names; never a doctype's), and attribute values escaped.

use super::*;

impl Repairer {
    /// Text as quick-xml gives it: still escaped, possibly with bare `&`.
    pub(super) fn text(&mut self, raw: &str) {
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
    pub(super) fn text_escaped(&mut self, text: &str) {
        if self.stack.is_empty() {
            return;
        }
        self.repairs.insert(Repair::UnescapedMarkup);
        push_escaped(&mut self.out, text);
    }

    pub(super) fn cdata(&mut self, data: &str) {
        if self.stack.is_empty() || self.discarding() {
            return;
        }
        // Kept as CDATA, even where only text belongs: feed-rs reads CDATA as HTML there.
        self.out.push_str("<![CDATA[");
        self.out.push_str(data);
        self.out.push_str("]]>");
    }

    /// A reference `&name;` in text.
    pub(super) fn entity(&mut self, name: &str) {
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
    pub(super) fn escape_attribute(&mut self, raw: &str) {
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

/// What a reference becomes.
pub(super) enum Entity {
    /// XML's own (`&amp;` and the like, or a character reference to an allowed character).
    Keep,
    /// An HTML named entity, as the text it stands for.
    Html(String),
    /// A character reference to a character XML forbids.
    Drop,
    /// Not an entity anyone defines: the `&` was meant literally.
    Unknown,
}

pub(super) fn resolve_entity(name: &str) -> Entity {
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

pub(super) fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Whether `name` is an XML name with at most one colon, neither first nor last.
pub(super) fn is_xml_name(name: &str) -> bool {
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

/// `text` escaped for an attribute value in double quotes.
pub(super) fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '"' => out.push_str("&quot;"),
            '<' => out.push_str("&lt;"),
            c if is_xml_char(c) => out.push(c),
            _ => {}
        }
    }
}

pub(super) fn push_escaped(out: &mut String, text: &str) {
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
