//! Output validity: awkward content goes through the real pipeline (an upstream on 127.0.0.1,
//! a poll, the store, the renderer) and every output document is checked by an independent
//! validator: Atom by xmllint against RFC 4287's RELAX NG schema plus the RFC's prose rules,
//! RSS 2.0 by the RSS Advisory Board's rules, JSON Feed 1.1 by its JSON Schema plus the
//! spec's rules (tests/tools/feedcheck.py).

use feedmux::publish::Format;

use crate::tools::{feedcheck, repo_path, xmllint_atom};
use crate::upstream::Upstream;
use crate::{config, poll_all, read_back, render, source, tempdir};

/// An RSS 2.0 source with the content that breaks naive renderers.
fn awkward_rss() -> String {
    let long_body = "<p>段落 paragraph with <b>bold</b> &amp; more.</p>".repeat(4000);
    let long_title = "很长的标题 a very long title ".repeat(80);
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Awkward &amp; Co &lt;test&gt;</title><link>https://awk.example/</link><description>d</description>
<item><guid>cjk</guid><title>大模型🤖发布：GPT と 한국어 😀👩‍💻</title><link>https://awk.example/cjk</link><description>&lt;p&gt;中文正文 🎉&lt;/p&gt;</description><pubDate>Wed, 25 Nov 2026 10:00:00 GMT</pubDate><author>ed@awk.example (Editor)</author></item>
<item><guid>amp</guid><title>AT&amp;T &amp; Q&amp;A: 5 &lt; 6 &gt; 4 "quoted" 'single'</title><link>https://awk.example/amp?a=1&amp;b=2</link><description>&lt;p&gt;Tom &amp;amp; Jerry &amp;lt;3&lt;/p&gt;</description><pubDate>Wed, 25 Nov 2026 09:00:00 GMT</pubDate><category>C&amp;C &lt;x&gt;</category></item>
<item><guid>cdata</guid><title>CDATA end ]]&gt; in the title</title><link>https://awk.example/cdata</link><description><![CDATA[<p>code: a]]]]><![CDATA[>b and <code>x &lt; y</code></p>]]></description><pubDate>Wed, 25 Nov 2026 08:00:00 GMT</pubDate></item>
<item><guid>long</guid><title>{long_title}</title><link>https://awk.example/long</link><description><![CDATA[{long_body}]]></description><pubDate>Wed, 25 Nov 2026 07:00:00 GMT</pubDate></item>
<item><guid>bare</guid><title>No date, no author, no body</title><link>https://awk.example/bare</link></item>
<item><guid>nolink</guid><title>No link and no body</title></item>
<item><guid>podcast</guid><title>Episode with enclosure</title><link>https://awk.example/ep</link><enclosure url="https://awk.example/ep.mp3" length="12345" type="audio/mpeg"/><pubDate>Wed, 25 Nov 2026 06:00:00 GMT</pubDate></item>
<item><guid>enc2</guid><title>Enclosure without length or type</title><link>https://awk.example/ep2</link><enclosure url="/relative/ep2.ogg"/><pubDate>Wed, 25 Nov 2026 05:00:00 GMT</pubDate></item>
<item><guid>notitle</guid><link>https://awk.example/notitle</link><description>Only a description, no title</description><pubDate>Wed, 25 Nov 2026 04:00:00 GMT</pubDate></item>
</channel></rss>
"#
    )
}

/// A JSON Feed source: JSON can carry control characters and noncharacters that XML cannot.
fn awkward_json() -> String {
    serde_json::json!({
        "version": "https://jsonfeed.org/version/1.1",
        "title": "JSON source",
        "home_page_url": "https://json.example/",
        "items": [
            {
                "id": "ctl",
                "url": "https://json.example/ctl",
                "title": "Control\u{1}\u{8}\u{b}\u{1b} characters\u{7f}\u{85} and \u{fffe}\u{ffff} noncharacters",
                "content_html": "<p>bell\u{7} form-feed\u{c} nul\u{0} escape\u{1b}</p>",
                "date_published": "2026-11-25T03:00:00Z",
                "authors": [{"name": "Ctl\u{1}Author"}]
            },
            {
                "id": "att",
                "url": "https://json.example/att",
                "title": "Two attachments",
                "content_text": "plain text with <angle> & ampersand",
                "date_published": "2026-11-25T02:00:00+08:00",
                "attachments": [
                    {"url": "https://json.example/a.mp3", "mime_type": "audio/mpeg", "size_in_bytes": 10},
                    {"url": "https://json.example/a.pdf", "mime_type": "application/pdf"}
                ]
            },
            {
                "id": "empty-title",
                "url": "https://json.example/empty",
                "title": "",
                "content_html": "<p>an item whose title is empty</p>"
            }
        ]
    })
    .to_string()
}

#[tokio::test]
#[ignore = "needs python3 with jsonschema and feedparser, xmllint: run by .ci/run, or cargo test -- --include-ignored"]
async fn awkward_content_renders_valid_atom_rss_and_json_feed() {
    let _turn = crate::served::sled_turn().await;
    let upstream = Upstream::start().await;
    upstream.put(
        "/awk.xml",
        &[("content-type", "application/rss+xml")],
        awkward_rss(),
    );
    upstream.put(
        "/awk.json",
        &[("content-type", "application/feed+json")],
        awkward_json(),
    );
    let dir = tempdir();
    let config = config(
        dir.path(),
        &format!(
            "[websub]\nhub = \"https://hub.example/websub?a=1&b=2\"\n\n{}{}[[feed]]\nname = \"awk\"\ntitle = \"Awkward & <odd> ]]> feed 中文\"\ndescription = \"<b>not bold</b> & \\u0001 control\"\n\n[[feed]]\nname = \"empty\"\ntitle = \"Nothing\"\ninclude = [\"no-such-keyword-anywhere\"]\n",
            source("rss", &upstream.url("/awk.xml")),
            source("json", &upstream.url("/awk.json"))
        ),
    );
    poll_all(&config).await;

    let schema = repo_path("tests/fixtures/schemas/jsonfeed-1.1.schema.json");
    for feed in ["awk", "empty"] {
        let mut per_format = Vec::new();
        for format in Format::ALL {
            let bytes = render(&config, feed, format);
            let file = dir.path().join(format!("{feed}.{}", format.extension()));
            std::fs::write(&file, &bytes).unwrap();
            let file_str = file.to_str().unwrap();
            let show = || {
                String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(20_000)
                    .collect::<String>()
            };
            match format {
                Format::Atom => {
                    let (ok, out) = xmllint_atom(&file);
                    assert!(
                        ok,
                        "{feed}.atom fails RFC 4287's RELAX NG schema:\n{out}\n{}",
                        show()
                    );
                    let (ok, out) = feedcheck(&["atom", file_str]);
                    assert!(ok, "{feed}.atom breaks RFC 4287:\n{out}\n{}", show());
                }
                Format::Rss => {
                    let (ok, out) = feedcheck(&["rss", file_str]);
                    assert!(ok, "{feed}.rss breaks RSS 2.0:\n{out}\n{}", show());
                }
                Format::Json => {
                    let (ok, out) = feedcheck(&["json", file_str, schema.to_str().unwrap()]);
                    assert!(ok, "{feed}.json breaks JSON Feed 1.1:\n{out}\n{}", show());
                }
                Format::Html => unreachable!("Format::ALL holds the feed formats"),
            }
            per_format.push(read_back(&bytes));
        }
        // Every format carries the same entries, titles and links.
        assert_eq!(per_format[0], per_format[1], "{feed}: atom and rss differ");
        assert_eq!(per_format[0], per_format[2], "{feed}: atom and json differ");
        if feed == "empty" {
            assert!(per_format[0].is_empty());
            continue;
        }
        let entries = &per_format[0];
        assert_eq!(entries.len(), 12, "{entries:#?}");
        let title_of = |link: &str| {
            entries
                .iter()
                .find(|(_, l)| l.as_deref() == Some(link))
                .map(|(t, _)| t.clone())
                .unwrap_or_else(|| panic!("no entry links {link}: {entries:#?}"))
        };
        assert_eq!(
            title_of("https://awk.example/cjk"),
            "大模型🤖发布：GPT と 한국어 😀👩‍💻"
        );
        assert_eq!(
            title_of("https://awk.example/amp?a=1&b=2"),
            "AT&T & Q&A: 5 < 6 > 4 \"quoted\" 'single'"
        );
        assert_eq!(
            title_of("https://awk.example/cdata"),
            "CDATA end ]]> in the title"
        );
        assert_eq!(
            title_of("https://json.example/ctl"),
            "Control characters and  noncharacters"
        );
        assert!(title_of("https://awk.example/long").starts_with("很长的标题 a very long title"));
    }
    // The long item arrives whole, and the CDATA end marker inside content survives.
    let atom = String::from_utf8(render(&config, "awk", Format::Atom)).unwrap();
    assert!(atom.len() > 200_000, "{}", atom.len());
    // The WebSub hub link is part of what was validated (advertised without its query, which
    // may hold a token: see tests/e2e/secrets.rs).
    assert!(atom.contains("<link rel=\"hub\" href=\"https://hub.example/websub\"/>"));
    // `]]>` in content: HTML-escaped by the sanitiser, then XML-escaped.
    assert!(
        atom.contains("a]]&amp;gt;b"),
        "CDATA end marker in Atom content"
    );
    assert!(!atom.contains("]]>"), "no raw CDATA end marker anywhere");
    let rss = String::from_utf8(render(&config, "awk", Format::Rss)).unwrap();
    // A relative enclosure URL leaves absolute (resolved against the source feed's URL).
    let relative = format!("url=\"{}\"", upstream.url("/relative/ep2.ogg"));
    assert!(rss.contains(&relative), "{relative} missing");
}
