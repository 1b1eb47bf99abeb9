//! The HTML safety policy: what of a feed's HTML may reach a reader.
//!
//! [`clean`] runs ammonia's allow-list (no script, no event handler, no `style` element or
//! attribute, no iframe, object, embed, form or input, only ordinary URL schemes, so no
//! `javascript:` or `data:`), makes relative URLs absolute against the item's link, and then
//! removes what ammonia would keep but a reader should not get: elements the publisher hid
//! with a style or the `hidden` attribute (with their content), and tracking pixels (images
//! of 1×1 or smaller, without a source, or from known tracking hosts). Elements nested more
//! than [`MAX_DEPTH`] deep lose their tags first, so that cleaning takes time in proportion to
//! the input. The parse stage cleans on the way in; the publish stage cleans again only HTML
//! cleaned under an older [`POLICY`]. Pure functions: no I/O.

use std::borrow::Cow;

use url::Url;

/// The value the attribute filter gives `style` and `hidden` attributes that hide their
/// element; every other `style` is dropped, so only these survive, and only to be found.
const HIDDEN: &str = "feedmux-hidden";

/// Hosts (and path prefixes) that serve only tracking images.
const TRACKERS: &[(&str, &str)] = &[
    ("pixel.wp.com", "/"),
    ("stats.wordpress.com", "/"),
    ("feeds.feedburner.com", "/~r/"),
    ("feeds.feedburner.com", "/~ff/"),
    ("www.google-analytics.com", "/"),
    ("google-analytics.com", "/"),
    ("pixel.quantserve.com", "/"),
    ("sb.scorecardresearch.com", "/"),
    ("b.scorecardresearch.com", "/"),
    ("ad.doubleclick.net", "/"),
    ("pubads.g.doubleclick.net", "/"),
    ("www.facebook.com", "/tr"),
    ("analytics.twitter.com", "/"),
    ("t.co", "/i/adsct"),
    ("pixel.mathtag.com", "/"),
    ("ct.pinterest.com", "/"),
    ("px.ads.linkedin.com", "/"),
];

/// Elements without content or end tag, as html5ever serialises them.
const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
    "wbr",
];

/// The version of the policy [`clean`] applies. Items remember the version their HTML was
/// cleaned under, and the publish stage cleans again only HTML cleaned under another one.
pub const POLICY: u32 = 1;

/// How deeply elements may nest; deeper start and end tags are dropped (their text stays).
/// Real articles nest a few dozen deep at most; html5ever's tree builder takes time in
/// proportion to the depth for every element, so an unbounded depth is quadratic.
pub const MAX_DEPTH: usize = 100;

/// Elements whose end tag HTML lets the author leave out (a new `<p>` or `<li>` closes the
/// last): not counted as nesting, since the parser closes them itself.
const OPTIONAL_END: &[&str] = &[
    "p", "li", "dt", "dd", "tr", "td", "th", "tbody", "thead", "tfoot", "option", "optgroup", "rb",
    "rt", "rtc", "rp", "colgroup", "caption", "html", "head", "body",
];

/// `html` made safe to show: see the module documentation. `base` (the item's link) resolves
/// relative URLs; without one they are kept as they are.
pub fn clean(html: &str, base: Option<&Url>) -> String {
    let html = &*capped_depth(html);
    let mut builder = ammonia::Builder::default();
    builder
        .add_generic_attributes(["style", "hidden"])
        .link_rel(Some("noopener noreferrer"))
        .attribute_filter(|_element, attribute, value| match attribute {
            "style" => hides(value).then_some(Cow::Borrowed(HIDDEN)),
            "hidden" => Some(Cow::Borrowed(HIDDEN)),
            _ => Some(Cow::Borrowed(value)),
        });
    if let Some(base) = base {
        builder.url_relative(ammonia::UrlRelative::RewriteWithBase(base.clone()));
    }
    let sanitised = builder.clean(html).to_string();
    if !sanitised.contains("<img") && !sanitised.contains(HIDDEN) {
        return sanitised;
    }
    drop_elements(&sanitised, |tag| {
        tag.attrs.iter().any(|(k, _)| k == "style" || k == "hidden")
            || (tag.name == "img" && is_tracking_image(tag))
    })
}

/// `html` with the start and end tags of elements nested deeper than [`MAX_DEPTH`] left out,
/// in one pass. Depth is counted by tags as written (void elements and those whose end tag
/// is optional aside), which is at least as deep as the tree html5ever builds.
fn capped_depth(html: &str) -> Cow<'_, str> {
    if html.matches('<').count() <= MAX_DEPTH {
        return Cow::Borrowed(html);
    }
    let mut out = String::with_capacity(html.len());
    let mut open: Vec<String> = Vec::new();
    // Start tags left out, by name: their end tags are left out too.
    let mut excess: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut i = 0;
    while let Some(offset) = html[i..].find('<') {
        let at = i + offset;
        out.push_str(&html[i..at]);
        let Some(tag) = read_tag_name(html, at) else {
            out.push('<');
            i = at + 1;
            continue;
        };
        let keep = if tag.end {
            match excess.get_mut(&tag.name) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    false
                }
                _ => {
                    if let Some(pos) = open.iter().rposition(|n| *n == tag.name) {
                        open.truncate(pos);
                    }
                    true
                }
            }
        } else if tag.self_closing
            || VOID.contains(&tag.name.as_str())
            || OPTIONAL_END.contains(&tag.name.as_str())
        {
            true
        } else if open.len() >= MAX_DEPTH {
            *excess.entry(tag.name.clone()).or_default() += 1;
            false
        } else {
            open.push(tag.name.clone());
            true
        };
        if keep {
            out.push_str(&html[at..tag.after]);
        }
        i = tag.after;
    }
    out.push_str(&html[i..]);
    Cow::Owned(out)
}

/// A tag's name and extent, read leniently (any attribute syntax, up to the next `>` that is
/// not inside quotes).
struct TagName {
    name: String,
    end: bool,
    self_closing: bool,
    after: usize,
}

fn read_tag_name(html: &str, at: usize) -> Option<TagName> {
    let bytes = html.as_bytes();
    let (name, end, mut i) = tag_name_at(html, at)?;
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let mut quote = None;
    while i < bytes.len() {
        match (bytes[i], quote) {
            (b'"' | b'\'', None) => quote = Some(bytes[i]),
            (q, Some(open)) if q == open => quote = None,
            (b'>', None) => {
                return Some(TagName {
                    name,
                    end,
                    self_closing: i > 0 && bytes[i - 1] == b'/',
                    after: i + 1,
                })
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Whether an inline style hides its element (or shrinks it to nothing, or moves it off the
/// page).
fn hides(style: &str) -> bool {
    let s: String = style
        .chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect();
    s.split(';').any(|decl| {
        let Some((prop, value)) = decl.split_once(':') else {
            return false;
        };
        let value = value.trim_end_matches("!important");
        match prop {
            "display" => value == "none",
            "visibility" => value == "hidden" || value == "collapse",
            "opacity" => length(value).is_some_and(|(n, _)| n <= 0.05),
            "font-size" | "width" | "height" | "max-width" | "max-height" => tiny(value),
            "text-indent" | "left" | "top" | "right" => {
                value.starts_with('-') && length(&value[1..]).is_some_and(|(n, _)| n >= 100.0)
            }
            "clip" => value.starts_with("rect(0"),
            "clip-path" => value.starts_with("inset(50%"),
            "transform" => value.starts_with("scale(0)") || value.starts_with("scale(0,"),
            _ => false,
        }
    })
}

/// A CSS length or number: its value and unit.
fn length(value: &str) -> Option<(f32, &str)> {
    let digits = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let n = value[..digits].parse::<f32>().ok()?;
    Some((n, &value[digits..]))
}

/// Zero in any unit, or at most one pixel.
fn tiny(value: &str) -> bool {
    length(value.trim())
        .is_some_and(|(n, unit)| n == 0.0 || (n <= 1.0 && matches!(unit, "" | "px")))
}

fn is_tracking_image(tag: &Tag) -> bool {
    let attr = |name: &str| {
        tag.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let tiny_attr = |name: &str| attr(name).is_some_and(tiny);
    if tiny_attr("width") || tiny_attr("height") {
        return true;
    }
    let Some(src) = attr("src").filter(|s| !s.trim().is_empty()) else {
        return true; // nothing to show
    };
    let src = html_escape::decode_html_entities(src);
    Url::parse(&src).is_ok_and(|u| {
        let host = u.host_str().unwrap_or_default();
        TRACKERS
            .iter()
            .any(|(h, path)| host.eq_ignore_ascii_case(h) && u.path().starts_with(path))
    })
}

/// The lowercased name of the tag starting at `html[at]` (a `<`), whether it is an end tag,
/// and the offset just past the name. `None` when no name follows.
fn tag_name_at(html: &str, at: usize) -> Option<(String, bool, usize)> {
    let bytes = html.as_bytes();
    let mut i = at + 1;
    let end = bytes.get(i) == Some(&b'/');
    if end {
        i += 1;
    }
    let name_start = i;
    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'-') {
        i += 1;
    }
    (i > name_start).then(|| (html[name_start..i].to_ascii_lowercase(), end, i))
}

/// A start tag in serialised HTML.
struct Tag {
    name: String,
    end: bool,
    attrs: Vec<(String, String)>,
    /// Byte offset just past its `>`.
    after: usize,
}

/// Reads the tag starting at `html[at]` (a `<`), as html5ever serialises tags: attribute
/// values in double quotes, no raw `"` inside them. `None` when it is not such a tag.
fn read_tag(html: &str, at: usize) -> Option<Tag> {
    let bytes = html.as_bytes();
    let (name, end, mut i) = tag_name_at(html, at)?;
    let mut attrs = Vec::new();
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        match bytes.get(i)? {
            b'>' => {
                return Some(Tag {
                    name,
                    end,
                    attrs,
                    after: i + 1,
                })
            }
            b'/' if bytes.get(i + 1) == Some(&b'>') => {
                return Some(Tag {
                    name,
                    end,
                    attrs,
                    after: i + 2,
                })
            }
            _ => {}
        }
        let key_start = i;
        while i < bytes.len()
            && !matches!(bytes[i], b'=' | b'>' | b'/')
            && !bytes[i].is_ascii_whitespace()
        {
            i += 1;
        }
        if i == key_start {
            return None;
        }
        let key = html[key_start..i].to_ascii_lowercase();
        let mut value = String::new();
        if bytes.get(i) == Some(&b'=') {
            i += 1;
            if bytes.get(i) != Some(&b'"') {
                return None;
            }
            let close = html[i + 1..].find('"')? + i + 1;
            value = html[i + 1..close].to_owned();
            i = close + 1;
        }
        attrs.push((key, value));
    }
}

/// `html` without the elements `drop` picks, their content included.
fn drop_elements(html: &str, drop: impl Fn(&Tag) -> bool) -> String {
    let mut out = String::with_capacity(html.len());
    let mut i = 0;
    while let Some(offset) = html[i..].find('<') {
        let at = i + offset;
        out.push_str(&html[i..at]);
        let Some(tag) = read_tag(html, at) else {
            out.push('<');
            i = at + 1;
            continue;
        };
        if tag.end || !drop(&tag) {
            out.push_str(&html[at..tag.after]);
            i = tag.after;
            continue;
        }
        if VOID.contains(&tag.name.as_str()) {
            i = tag.after;
            continue;
        }
        // Skip to the matching end tag.
        let mut depth = 1;
        let mut j = tag.after;
        while depth > 0 {
            let Some(next) = html[j..].find('<') else {
                j = html.len();
                break;
            };
            let at = j + next;
            match read_tag(html, at) {
                Some(t) if t.name == tag.name => {
                    depth += if t.end { -1 } else { 1 };
                    j = t.after;
                }
                Some(t) => j = t.after,
                None => j = at + 1,
            }
        }
        i = j;
    }
    out.push_str(&html[i..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://news.example/2026/11/post.html").unwrap()
    }

    #[test]
    fn tracking_pixels_go_and_images_stay() {
        let html = r#"<p>Text <img src="https://cdn.example/chart.png" alt="a>b" width="600"><img src="https://t.example/p.gif" width="1" height="1"><IMG SRC="/open.gif" WIDTH=0><img src="https://pixel.wp.com/g.gif?x=1"><img src="https://feeds.feedburner.com/~r/x/~4/abc"><img alt="no source"> end</p>"#;
        let out = clean(html, Some(&base()));
        assert_eq!(
            out,
            r#"<p>Text <img src="https://cdn.example/chart.png" alt="a&gt;b" width="600"> end</p>"#
        );
    }

    #[test]
    fn hidden_content_goes_with_its_element() {
        let html = r#"<p>Visible</p><div style="display: none"><p>hidden <b>spam</b></p><div>nested</div></div><span hidden>also hidden</span><p style="color:red">kept, unstyled</p><p style="font-size:0px">tiny</p><p style="position:absolute;left:-9999px">off-screen</p><p style="margin-left:-20px;width:1em">kept too</p>"#;
        let out = clean(html, None);
        assert_eq!(out, "<p>Visible</p><p>kept, unstyled</p><p>kept too</p>");
    }

    #[test]
    fn relative_urls_resolve_against_the_items_link() {
        let out = clean(
            r#"<a href="../other.html">x</a><img src="pic.png" alt="p">"#,
            Some(&base()),
        );
        assert_eq!(
            out,
            r#"<a href="https://news.example/2026/other.html" rel="noopener noreferrer">x</a><img src="https://news.example/2026/11/pic.png" alt="p">"#
        );
    }

    #[test]
    fn nesting_beyond_the_cap_keeps_its_text_and_loses_its_tags() {
        let depth = MAX_DEPTH + 50;
        let html = format!(
            "{}deep text{}<p>after</p>",
            "<div><b>".repeat(depth / 2),
            "</b></div>".repeat(depth / 2)
        );
        let out = clean(&html, None);
        assert!(out.contains("deep text"), "{out}");
        assert!(out.ends_with("<p>after</p>"), "{out}");
        assert_eq!(out.matches("<div>").count(), out.matches("</div>").count());
        assert!(out.matches("<div>").count() + out.matches("<b>").count() <= MAX_DEPTH);
        // Shallow HTML, and many paragraphs without end tags, are left as they are.
        let paragraphs = "<p>para".repeat(500);
        assert_eq!(capped_depth(&paragraphs), paragraphs);
    }

    #[test]
    fn broken_markup_is_left_alone_by_the_post_pass() {
        let html = "<p>5 &lt; 6 and a <b>bold</b> move</p>";
        assert_eq!(clean(html, None), html);
        assert_eq!(
            drop_elements("<div hidden>unclosed <p>x", |t| t.name == "div"),
            ""
        );
    }
}
