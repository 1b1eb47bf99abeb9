//! Looking at a document before feed-rs reads it, without changing it: where its root
//! element starts, whether it is a web page, a tag's attribute, and the one [`scan`] that
//! tells whether a strict reading lost entries or parts of them.

/// What one pass over a document says about feed-rs's strict reading of it.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// `<item>` and `<entry>` start tags outside CDATA and comments: a bound on the entries
    /// (a strict reading with fewer lost some).
    pub(super) entry_tags: usize,
    /// feed-rs reads the document without complaint but loses part of what it says: an
    /// element whose namespace prefix is never declared (feed-rs sees it as unknown and drops
    /// it: `dc:creator`, `content:encoded`), or markup inside an RSS title (feed-rs keeps the
    /// text before the first tag).
    pub(super) damaged: bool,
}

/// Scans `utf8` once for [`Scan`].
pub(super) fn scan(utf8: &[u8]) -> Scan {
    let rss = root_element_start(utf8).is_some_and(|at| {
        let root = &utf8[at + 1..];
        !root.starts_with(b"feed") && !root.starts_with(b"entry")
    });
    let mut used: Vec<&[u8]> = Vec::new();
    let mut declared: Vec<&[u8]> = Vec::new();
    let mut entry_tags = 0;
    let name_end = |from: usize| {
        utf8[from..]
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':')))
            .map_or(utf8.len(), |n| from + n)
    };
    let mut at = 0;
    while let Some(offset) = memchr_any(&utf8[at..]) {
        let i = at + offset;
        at = i + 1;
        if utf8[i] == b'x' {
            // `xmlns:prefix=`
            if utf8[i..].starts_with(b"xmlns:") {
                let end = name_end(i + 6);
                if declared.len() < 64 && !declared.contains(&&utf8[i + 6..end]) {
                    declared.push(&utf8[i + 6..end]);
                }
                at = end;
            }
            continue;
        }
        // CDATA and comments hold text, not elements (HTML in CDATA may say `<o:p>`).
        let skip = if utf8[i..].starts_with(b"<![CDATA[") {
            Some(b"]]>".as_slice())
        } else if utf8[i..].starts_with(b"<!--") {
            Some(b"-->".as_slice())
        } else {
            None
        };
        if let Some(close) = skip {
            match utf8[i..].windows(3).position(|w| w == close) {
                Some(n) => {
                    at = i + n + 3;
                    continue;
                }
                None => break,
            }
        }
        let end = name_end(i + 1);
        let name = &utf8[i + 1..end];
        if name == b"item" || name == b"entry" {
            entry_tags += 1;
        } else if let Some(colon) = name.iter().position(|b| *b == b':') {
            let prefix = &name[..colon];
            if prefix != b"xml" && used.len() < 64 && !used.contains(&prefix) {
                used.push(prefix);
            }
        } else if rss && name == b"title" {
            // The title's text runs to the next `<`, which must end it or open CDATA.
            let Some(close) = utf8[end..].iter().position(|b| *b == b'>') else {
                break;
            };
            let content = end + close + 1;
            if let Some(next) = utf8[content..].iter().position(|b| *b == b'<') {
                let rest = &utf8[content + next..];
                if !rest.starts_with(b"</") && !rest.starts_with(b"<![CDATA[") {
                    return Scan {
                        entry_tags,
                        damaged: true,
                    };
                }
            }
        }
        at = end;
    }
    Scan {
        entry_tags,
        damaged: used.iter().any(|p| !declared.contains(p)),
    }
}

/// The offset of the next `<` or `x` (where start tags and `xmlns:` declarations begin).
fn memchr_any(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|b| *b == b'<' || *b == b'x')
}

/// Whether the document's root element is `<html>`: a web page, not a feed.
pub(super) fn is_html_page(utf8: &[u8]) -> bool {
    let Some(start) = root_element_start(utf8) else {
        return false;
    };
    let name: Vec<u8> = utf8[start + 1..]
        .iter()
        .take(5)
        .map(u8::to_ascii_lowercase)
        .collect();
    name.starts_with(b"html") && name.get(4).is_none_or(|b| !b.is_ascii_alphanumeric())
}

/// Where the root element's `<` is: after the XML declaration, comments, processing
/// instructions and the doctype.
pub(super) fn root_element_start(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'<' => {
                let rest = &bytes[i..];
                let skip_to = |end: &[u8]| {
                    rest.windows(end.len())
                        .position(|w| w == end)
                        .map(|p| i + p + end.len())
                };
                i = if rest.starts_with(b"<?") {
                    skip_to(b"?>")?
                } else if rest.starts_with(b"<!--") {
                    skip_to(b"-->")?
                } else if rest.starts_with(b"<!") {
                    // A doctype, possibly with an internal subset. Only the text up to the
                    // first `>` is searched for its `[`: every byte is looked at a bounded
                    // number of times, however many `<!` there are.
                    let close = rest.iter().position(|b| *b == b'>')?;
                    if rest[..close].contains(&b'[') {
                        skip_to(b"]>").or_else(|| skip_to(b"]"))?
                    } else {
                        i + close + 1
                    }
                } else {
                    return Some(i);
                };
            }
            _ => i += 1,
        }
    }
    None
}

/// The value of attribute `name` in start tag `tag`, its entities decoded.
pub(super) fn attribute(tag: &str, name: &str) -> Option<String> {
    let lower = tag.to_ascii_lowercase();
    let at = lower.find(&format!("{name}="))? + name.len() + 1;
    let rest = &tag[at..];
    let quote = rest.chars().next()?;
    let value = if quote == '"' || quote == '\'' {
        let rest = &rest[1..];
        &rest[..rest.find(quote)?]
    } else {
        rest.split_whitespace().next()?
    };
    Some(html_escape::decode_html_entities(value).into_owned())
}
