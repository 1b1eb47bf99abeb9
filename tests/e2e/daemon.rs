//! The running daemon, as a feed reader sees it over HTTP.

use std::io::Read;
use std::time::Duration;

use reqwest::header;

use crate::served::Served;
use crate::upstream::Upstream;
use crate::{config, read_back, rss_feed, source, tempdir, RssItem};

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_gzip().build().unwrap()
}

#[tokio::test]
async fn a_reader_subscribes_gets_304s_and_gzip_and_the_daemon_stops_cleanly() {
    let upstream = Upstream::start().await;
    upstream.put(
        "/zh.xml",
        &[("content-type", "application/rss+xml")],
        rss_feed(
            "量子位",
            "https://q.example/",
            [
                RssItem::new(1, "AI芯片：新一代发布", "https://q.example/1").with(
                    "<description>&lt;p&gt;正文&lt;script&gt;alert(1)&lt;/script&gt;&lt;/p&gt;</description>",
                ),
                RssItem::new(2, "手机评测", "https://q.example/2"),
            ],
        ),
    );
    let dir = tempdir();
    let config = config(
        dir.path(),
        &format!(
            "{}[[feed]]\nname = \"ai\"\ninclude = [\"AI\"]\n",
            source("qbit", &upstream.url("/zh.xml"))
        ),
    );
    let served = Served::with_config(config).await;
    let base = served.base.clone();
    let http = client();

    // The first poll happens at start-up; wait (bounded) until the item is served.
    let url = format!("{base}/feeds/ai.atom");
    let mut body = Vec::new();
    for _ in 0..100 {
        let response = http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        body = response.bytes().await.unwrap().to_vec();
        if !read_back(&body).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let entries = read_back(&body);
    assert_eq!(entries.len(), 1, "{}", String::from_utf8_lossy(&body));
    assert_eq!(entries[0].0, "AI芯片：新一代发布");
    assert!(
        !String::from_utf8_lossy(&body).contains("alert(1)"),
        "script removed"
    );

    let response = http.get(&url).send().await.unwrap();
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/atom+xml; charset=utf-8"
    );
    let etag = response.headers()[header::ETAG].clone();
    let last_modified = response.headers()[header::LAST_MODIFIED].clone();
    let r = http
        .get(&url)
        .header(header::IF_NONE_MATCH, etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()[header::ETAG], etag);
    let r = http
        .get(&url)
        .header(header::IF_MODIFIED_SINCE, last_modified)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    let r = http
        .get(&url)
        .header(header::IF_NONE_MATCH, "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let r = http
        .get(&url)
        .header(header::ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip");
    let compressed = r.bytes().await.unwrap();
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_end(&mut plain)
        .unwrap();
    assert_eq!(plain, body);

    for (path, content_type) in [
        ("rss", "application/rss+xml"),
        ("json", "application/feed+json"),
    ] {
        let r = http
            .get(format!("{base}/feeds/ai.{path}"))
            .send()
            .await
            .unwrap();
        assert!(r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with(content_type));
        assert_eq!(
            read_back(&r.bytes().await.unwrap())[0].0,
            "AI芯片：新一代发布"
        );
    }
    for (path, status) in [
        ("/feeds/nope.atom", 404),
        ("/feeds/ai.xml", 404),
        ("/healthz", 200),
        ("/readyz", 200),
    ] {
        assert_eq!(
            http.get(format!("{base}{path}"))
                .send()
                .await
                .unwrap()
                .status(),
            status,
            "{path}"
        );
    }
    let status_page = http
        .get(format!("{base}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        status_page.contains("qbit") && status_page.contains("/feeds/ai.atom"),
        "{status_page}"
    );
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("feedmux_polls_total{source=\"qbit\",result=\"ok\"} 1"),
        "{metrics}"
    );
    let post = http.post(&url).send().await.unwrap();
    assert_eq!(post.status(), 405, "the server is read-only");

    served.stop_within(Duration::from_secs(10)).await;
}
