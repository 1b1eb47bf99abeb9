//! Safety: XSS and filter-evasion vectors (tests/fixtures/xss/vectors.txt) arrive in RSS,
//! Atom and JSON Feed sources; every HTML field of every output format, and the HTML view,
//! holds only harmless tags and attributes, no script URL, no hidden content and no tracking
//! pixel, and relative URLs come out absolute against the item's link.

use std::collections::HashSet;

use feedmux::publish::Format;
use regex::Regex;

use crate::upstream::Upstream;
use crate::{config, fixture, poll_all, render, source, tempdir};

fn vectors() -> Vec<String> {
    String::from_utf8(fixture("xss/vectors.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

fn xml_text(s: &str) -> String {
    html_escape::encode_text(s).into_owned()
}

/// Tags a reader may be given (ammonia's allow-list, and what the HTML view itself uses).
const TAGS: &[&str] = &[
    "a",
    "abbr",
    "acronym",
    "area",
    "article",
    "aside",
    "b",
    "bdi",
    "bdo",
    "blockquote",
    "br",
    "caption",
    "center",
    "cite",
    "code",
    "col",
    "colgroup",
    "data",
    "dd",
    "del",
    "details",
    "dfn",
    "div",
    "dl",
    "dt",
    "em",
    "figcaption",
    "figure",
    "footer",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hgroup",
    "hr",
    "i",
    "img",
    "ins",
    "kbd",
    "li",
    "map",
    "mark",
    "nav",
    "ol",
    "p",
    "pre",
    "q",
    "rp",
    "rt",
    "rtc",
    "ruby",
    "s",
    "samp",
    "small",
    "span",
    "strike",
    "strong",
    "sub",
    "summary",
    "sup",
    "table",
    "tbody",
    "td",
    "th",
    "thead",
    "time",
    "tr",
    "tt",
    "u",
    "ul",
    "var",
    "wbr",
    "tfoot",
];
const ATTRIBUTES: &[&str] = &[
    "href", "src", "alt", "title", "width", "height", "lang", "rel", "hreflang", "cite",
    "datetime", "align", "class", "colspan", "rowspan", "headers", "scope", "start", "dir", "span",
    "char", "charoff", "summary", "size",
];

/// Every problem in an HTML fragment a reader would render.
fn problems(html: &str) -> Vec<String> {
    let tag = Regex::new(r"<([A-Za-z][A-Za-z0-9:-]*)([^>]*)>").unwrap();
    let attr = Regex::new(r#"([^\s=/]+)(?:="([^"]*)")?"#).unwrap();
    let tags: HashSet<&str> = TAGS.iter().copied().collect();
    let attrs: HashSet<&str> = ATTRIBUTES.iter().copied().collect();
    let mut out = Vec::new();
    for t in tag.captures_iter(html) {
        let name = t[1].to_ascii_lowercase();
        if !tags.contains(name.as_str()) {
            out.push(format!("tag <{name}>"));
        }
        for a in attr.captures_iter(&t[2]) {
            let key = a[1].to_ascii_lowercase();
            let value =
                html_escape::decode_html_entities(a.get(2).map_or("", |m| m.as_str())).into_owned();
            if !attrs.contains(key.as_str()) {
                out.push(format!("attribute {key}=\"{value}\" on <{name}>"));
            }
            if value.contains("alert(") || value.contains("msgbox(") {
                out.push(format!("script in {key}=\"{value}\""));
            }
            // Loads from these hosts are attacks or tracking (as text they are harmless).
            for host in ["tracker.example", "pixel.wp.com", "evil.example"] {
                if value.contains(host) {
                    out.push(format!("{key}=\"{value}\" loads from {host}"));
                }
            }
            if matches!(key.as_str(), "href" | "src" | "cite")
                && !["http://", "https://", "mailto:"]
                    .iter()
                    .any(|s| value.starts_with(s))
            {
                out.push(format!("URL {key}=\"{value}\" on <{name}>"));
            }
        }
    }
    out
}

/// The HTML fields of each entry of a feed document, by entry link.
fn html_fields(bytes: &[u8]) -> Vec<(String, String)> {
    let feed = feed_rs::parser::parse(bytes).unwrap();
    feed.entries
        .into_iter()
        .map(|e| {
            let link = e.links.first().map(|l| l.href.clone()).unwrap_or_default();
            let mut html = String::new();
            if let Some(c) = e.content.and_then(|c| c.body) {
                html.push_str(&c);
            }
            // A summary in plain text is shown as text; only HTML is rendered.
            if let Some(s) = e
                .summary
                .filter(|s| s.content_type.to_string().contains("html"))
            {
                html.push('\n');
                html.push_str(&s.content);
            }
            (link, html)
        })
        .collect()
}

#[tokio::test]
async fn xss_vectors_come_out_harmless_in_every_format_and_the_html_view() {
    let vectors = vectors();
    assert!(vectors.len() >= 60, "{}", vectors.len());
    let mut rss = String::from("<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>R</title><link>https://site.example/</link><description>d</description>\n");
    let mut atom = String::from("<?xml version=\"1.0\"?><feed xmlns=\"http://www.w3.org/2005/Atom\"><id>urn:x:atom</id><title>A</title><updated>2026-11-25T00:00:00Z</updated>\n");
    let mut json_items = Vec::new();
    for (i, v) in vectors.iter().enumerate() {
        let v = xml_text(v);
        rss.push_str(&format!(
            "<item><guid>r{i}</guid><title>R{i} {v}</title><link>https://site.example/posts/{i}/</link><description>{v}</description><author>x@site.example ({v})</author><category>{v}</category></item>\n"
        ));
        atom.push_str(&format!(
            "<entry><id>urn:x:a{i}</id><title type=\"html\">A{i} {}</title><link href=\"https://atom.example/posts/{i}/\"/><updated>2026-11-25T00:00:00Z</updated><author><name>N</name></author><content type=\"html\">{v}</content><summary type=\"html\">{v}</summary></entry>\n",
            xml_text(&v)
        ));
        json_items.push(serde_json::json!({
            "id": format!("j{i}"),
            "url": format!("https://json.example/posts/{i}/"),
            "title": format!("J{i} {}", vectors[i]),
            "content_html": vectors[i],
            "summary": vectors[i],
        }));
    }
    // Links readers follow: only http(s) survives.
    rss.push_str("<item><guid>badlink</guid><title>Bad link</title><link>javascript:alert('link')</link><description>x</description></item>\n");
    rss.push_str("</channel></rss>\n");
    atom.push_str("<entry><id>urn:x:badlink</id><title>Bad Atom link</title><link href=\"data:text/html,hi\"/><updated>2026-11-25T00:00:00Z</updated><author><name>N</name></author><content>x</content></entry>\n</feed>\n");
    let json = serde_json::json!({"version": "https://jsonfeed.org/version/1.1", "title": "J", "items": json_items});

    let _turn = crate::served::sled_turn().await;
    let upstream = Upstream::start().await;
    upstream.put("/r.xml", &[("content-type", "application/rss+xml")], rss);
    upstream.put("/a.xml", &[("content-type", "application/atom+xml")], atom);
    upstream.put(
        "/j.json",
        &[("content-type", "application/feed+json")],
        json.to_string(),
    );
    let dir = tempdir();
    let config = config(
        dir.path(),
        &format!(
            "{}{}{}[[feed]]\nname = \"all\"\nlimit = 1000\ngroup_stories = false\n",
            source("r", &upstream.url("/r.xml")),
            source("a", &upstream.url("/a.xml")),
            source("j", &upstream.url("/j.json")),
        ),
    );
    poll_all(&config).await;

    let expected_entries = vectors.len() * 3 + 2;
    for format in Format::ALL {
        let bytes = render(&config, "all", format);
        let fields = html_fields(&bytes);
        assert_eq!(fields.len(), expected_entries, "{format:?}");
        let mut failures = Vec::new();
        for (link, html) in &fields {
            for p in problems(html) {
                failures.push(format!("{link}: {p}\n    in {html}"));
            }
        }
        assert!(failures.is_empty(), "{format:?}:\n{}", failures.join("\n"));
        let feed = feed_rs::parser::parse(bytes.as_slice()).unwrap();
        for e in &feed.entries {
            for l in &e.links {
                assert!(
                    l.href.starts_with("https://"),
                    "{format:?}: link {}",
                    l.href
                );
            }
        }
        // What must survive: ordinary images, and relative URLs made absolute against the
        // item's link.
        let of = |link: &str| {
            fields
                .iter()
                .find(|(l, _)| l == link)
                .map(|(_, h)| h.clone())
                .unwrap_or_else(|| panic!("{format:?}: no entry {link}"))
        };
        for site in ["site", "atom", "json"] {
            let photo = of(&format!("https://{site}.example/posts/58/"));
            assert!(
                photo.contains("src=\"https://ok.example/photo.jpg\""),
                "{format:?}: {photo}"
            );
            let relative = of(&format!("https://{site}.example/posts/59/"));
            assert!(
                relative.contains(&format!("href=\"https://{site}.example/relative/page-60\"")),
                "{format:?}: {relative}"
            );
            let image = of(&format!("https://{site}.example/posts/60/"));
            assert!(
                image.contains(&format!(
                    "src=\"https://{site}.example/posts/60/pictures/pic-61.png\""
                )),
                "{format:?}: {image}"
            );
            // (The JSON Feed items also carry the vector as a plain-text summary, shown as
            // text when sanitising leaves no HTML content.)
            if site != "json" {
                for hidden in 46..=48 {
                    let html = of(&format!("https://{site}.example/posts/{hidden}/"));
                    assert!(!html.contains("HIDDEN"), "{format:?}: {html}");
                }
            }
        }
    }

    let page = String::from_utf8(render(&config, "all", Format::Html)).unwrap();
    let main = &page[page.find("<main>").unwrap() + "<main>".len()..page.find("</main>").unwrap()];
    let failures = problems(main);
    assert!(
        failures.is_empty(),
        "the HTML view:\n{}",
        failures.join("\n")
    );
    assert!(
        !page[..page.find("<main>").unwrap()].contains("alert("),
        "head and header"
    );
    // Titles carrying vectors are shown as text: escaped, never as markup.
    assert!(
        main.contains("A0 &lt;script&gt;alert('xss-1')&lt;/script&gt;"),
        "{main}"
    );
}
