//! The browser view: headless Chromium opens `/feeds/{name}.html`, and `/feeds/{name}.atom`
//! and `.rss` directly, and is shown the readable page with the feed's items; feed readers
//! asking for the same URLs get the feed. `FEEDMUX_SKIP_BROWSER=1` skips the Chromium part.

use reqwest::header;

use crate::served::Served;
use crate::tempdir;
use crate::tools::{browser_skipped, chromium_dom};
use crate::upstream::Upstream;

const ITEMS: [(&str, &str); 3] = [
    ("大模型发布：GPT と 한국어 😀", "https://q.example/1"),
    ("AT&T <lab> ships", "https://q.example/2"),
    ("Podcast: episode 12", "https://q.example/3"),
];

async fn start() -> (Upstream, tempfile::TempDir, Served) {
    let upstream = Upstream::start().await;
    let mut body = String::from("<rss version=\"2.0\"><channel><title>量子位</title><link>https://q.example/</link><description>d</description>");
    for (i, (title, link)) in ITEMS.iter().enumerate() {
        let title = html_escape::encode_text(title);
        body.push_str(&format!(
            "<item><guid>{i}</guid><title>{title}</title><link>{link}</link><description>&lt;p&gt;Body {i}&lt;/p&gt;</description><pubDate>Wed, 25 Nov 2026 1{i}:00:00 GMT</pubDate></item>"
        ));
    }
    body.push_str("</channel></rss>");
    upstream.put("/zh.xml", &[("content-type", "application/rss+xml")], body);
    let dir = tempdir();
    let served = Served::start(
        dir.path(),
        &format!(
            "[[source]]\nname = \"zh\"\nurl = \"{}\"\ntitle = \"量子位\"\n\n[[feed]]\nname = \"ai\"\ntitle = \"AI news\"\ndescription = \"One feed of AI news\"\n",
            upstream.url("/zh.xml")
        ),
    )
    .await;
    served.wait_for("ai", ITEMS.len()).await;
    (upstream, dir, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_url_answers_browsers_with_the_page_and_readers_with_the_feed() {
    let (_upstream, _dir, served) = start().await;
    let http = reqwest::Client::new();
    let chromium_accept =
        "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";
    let reader_accept = "application/atom+xml,application/rss+xml,application/xml;q=0.9,*/*;q=0.1";
    for format in ["atom", "rss"] {
        let url = served.url(&format!("/feeds/ai.{format}"));
        for (accept, expected) in [
            (Some(chromium_accept), "text/html"),
            (Some(reader_accept), "application/"),
            (Some("*/*"), "application/"),
            (None, "application/"),
        ] {
            let mut request = http.get(&url);
            if let Some(a) = accept {
                request = request.header(header::ACCEPT, a);
            }
            let r = request.send().await.unwrap();
            let content_type = r.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(
                content_type.starts_with(expected),
                "{url} {accept:?}: {content_type}"
            );
            assert!(r.headers()[header::VARY]
                .to_str()
                .unwrap()
                .contains("Accept"));
        }
    }
    let page = http.get(served.url("/feeds/ai.html")).send().await.unwrap();
    assert_eq!(
        page.headers()[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    let csp = page.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = page.text().await.unwrap();
    for needle in [
        "<link rel=\"alternate\" type=\"application/atom+xml\"",
        "/feeds/ai.atom",
        "/feeds/ai.rss",
        "/feeds/ai.json",
        "Subscribe",
        "量子位",
        "AT&amp;T &lt;lab&gt; ships",
    ] {
        assert!(
            html.contains(needle),
            "{needle} missing from the page:\n{html}"
        );
    }
    assert!(!html.contains("<script"), "no script in the view");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium: run by .ci/run, or cargo test -- --include-ignored"]
async fn chromium_shows_the_feeds_items() {
    if browser_skipped() {
        return;
    }
    let (_upstream, _dir, served) = start().await;
    for path in ["/feeds/ai.html", "/feeds/ai.atom", "/feeds/ai.rss"] {
        let dom = chromium_dom(&served.url(path)).await;
        assert!(dom.contains("<article>"), "{path}: not the page:\n{dom}");
        for (title, link) in ITEMS {
            let shown = format!(
                "<a href=\"{link}\" rel=\"noopener noreferrer\">{}</a>",
                html_escape::encode_text(title)
            );
            assert!(dom.contains(&shown), "{path}: {shown} not shown:\n{dom}");
        }
        assert!(dom.contains("/feeds/ai.json"), "{path}: subscribe links");
    }
    served.stop().await;
}
