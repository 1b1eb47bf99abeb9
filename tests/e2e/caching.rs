//! Cheap to poll: a reader revalidating or fetching a feed costs the daemon no rendering and
//! no compression; validators change only with the content; max-age follows the next poll.

use std::io::Read;
use std::time::Duration;

use reqwest::header;

use crate::served::Served;
use crate::upstream::Upstream;
use crate::{rss_feed, tempdir, RssItem};

fn client() -> reqwest::Client {
    // No automatic decompression: the test looks at the bytes on the wire.
    reqwest::Client::builder()
        .no_gzip()
        .no_brotli()
        .build()
        .unwrap()
}

fn rss(titles: &[&str]) -> String {
    let words = format!(
        "<description>{}</description>",
        "Some words to compress. ".repeat(40)
    );
    let items = titles.iter().enumerate().map(|(i, t)| {
        RssItem::new(i, t, format!("https://t.example/{i}"))
            .with(&words)
            .dated(&format!("Wed, 25 Nov 2026 0{i}:00:00 GMT"))
    });
    rss_feed("T", "https://t.example/", items)
}

async fn get(
    http: &reqwest::Client,
    url: &str,
    headers: &[(header::HeaderName, &str)],
) -> reqwest::Response {
    let mut request = http.get(url);
    for (k, v) in headers {
        request = request.header(k.clone(), *v);
    }
    request.send().await.unwrap()
}

fn header_of(r: &reqwest::Response, name: header::HeaderName) -> String {
    r.headers()
        .get(&name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brotli_and_gzip_are_chosen_by_q_value_and_every_coding_revalidates() {
    let upstream = Upstream::start().await;
    upstream.put(
        "/t.xml",
        &[("content-type", "application/rss+xml")],
        rss(&["One", "Two"]),
    );
    let dir = tempdir();
    let served = Served::start(
        dir.path(),
        &format!(
            "[[source]]\nname = \"t\"\nurl = \"{}\"\n\n[[feed]]\nname = \"all\"\n",
            upstream.url("/t.xml")
        ),
    )
    .await;
    served.wait_for("all", 2).await;
    let http = client();
    for format in ["atom", "rss", "json"] {
        let url = served.url(&format!("/feeds/all.{format}"));
        let plain = get(&http, &url, &[]).await;
        assert_eq!(plain.status(), 200);
        assert_eq!(header_of(&plain, header::CONTENT_ENCODING), "");
        assert_eq!(header_of(&plain, header::VARY), "Accept-Encoding, Accept");
        let plain_etag = header_of(&plain, header::ETAG);
        let plain_body = plain.bytes().await.unwrap();

        let br = get(
            &http,
            &url,
            &[(header::ACCEPT_ENCODING, "gzip, deflate, br")],
        )
        .await;
        assert_eq!(header_of(&br, header::CONTENT_ENCODING), "br", "{url}");
        let br_etag = header_of(&br, header::ETAG);
        assert_ne!(br_etag, plain_etag, "each coding is its own representation");
        let compressed = br.bytes().await.unwrap();
        assert!(
            compressed.len() * 3 < plain_body.len(),
            "{} vs {}",
            compressed.len(),
            plain_body.len()
        );
        let mut unpacked = Vec::new();
        brotli::Decompressor::new(&compressed[..], 4096)
            .read_to_end(&mut unpacked)
            .unwrap();
        assert_eq!(unpacked, plain_body, "brotli body of {url}");

        let gz = get(
            &http,
            &url,
            &[(header::ACCEPT_ENCODING, "br;q=0.2, gzip;q=0.9")],
        )
        .await;
        assert_eq!(header_of(&gz, header::CONTENT_ENCODING), "gzip", "{url}");
        let gz_etag = header_of(&gz, header::ETAG);
        let compressed = gz.bytes().await.unwrap();
        let mut unpacked = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_end(&mut unpacked)
            .unwrap();
        assert_eq!(unpacked, plain_body, "gzip body of {url}");

        let refused = get(
            &http,
            &url,
            &[(header::ACCEPT_ENCODING, "br;q=0, gzip;q=0")],
        )
        .await;
        assert_eq!(header_of(&refused, header::CONTENT_ENCODING), "");
        assert_eq!(refused.bytes().await.unwrap(), plain_body);

        // Every ETag revalidates, whatever coding the new request would get.
        for (etag, accept) in [
            (&plain_etag, "br"),
            (&gz_etag, "br"),
            (&br_etag, "identity"),
        ] {
            let r = get(
                &http,
                &url,
                &[
                    (header::IF_NONE_MATCH, etag),
                    (header::ACCEPT_ENCODING, accept),
                ],
            )
            .await;
            assert_eq!(r.status(), 304, "{url} {etag} {accept}");
            assert!(r.bytes().await.unwrap().is_empty());
        }
        let r = get(
            &http,
            &url,
            &[(header::IF_NONE_MATCH, "\"nope\", \"other\"")],
        )
        .await;
        assert_eq!(r.status(), 200);
        let last_modified = header_of(&r, header::LAST_MODIFIED);
        let r = get(&http, &url, &[(header::IF_MODIFIED_SINCE, &last_modified)]).await;
        assert_eq!(r.status(), 304, "If-Modified-Since {last_modified}");
        let r = get(
            &http,
            &url,
            &[(header::IF_MODIFIED_SINCE, "Thu, 01 Jan 2015 00:00:00 GMT")],
        )
        .await;
        assert_eq!(r.status(), 200, "modified since 2015");
    }
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_change_only_when_the_content_does() {
    let upstream = Upstream::start().await;
    upstream.put(
        "/t.xml",
        &[("content-type", "application/rss+xml")],
        rss(&["One"]),
    );
    let dir = tempdir();
    // Polled every second: unchanged polls must not move the validators.
    let served = Served::start(
        dir.path(),
        &format!("[[source]]\nname = \"t\"\nurl = \"{}\"\nschedule = \"* * * * * *\"\n\n[[feed]]\nname = \"all\"\n", upstream.url("/t.xml")),
    )
    .await;
    served.wait_for("all", 1).await;
    let http = client();
    let url = served.url("/feeds/all.atom");
    let first = get(&http, &url, &[]).await;
    let (etag, last_modified) = (
        header_of(&first, header::ETAG),
        header_of(&first, header::LAST_MODIFIED),
    );
    let polls_before = upstream.requests("/t.xml").len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        upstream.requests("/t.xml").len() > polls_before,
        "the source was polled again"
    );
    let again = get(&http, &url, &[]).await;
    assert_eq!(
        header_of(&again, header::ETAG),
        etag,
        "unchanged content, same ETag"
    );
    assert_eq!(header_of(&again, header::LAST_MODIFIED), last_modified);

    upstream.put(
        "/t.xml",
        &[("content-type", "application/rss+xml")],
        rss(&["One", "Two"]),
    );
    served.wait_for("all", 2).await;
    let changed = get(&http, &url, &[(header::IF_NONE_MATCH, &etag)]).await;
    assert_eq!(changed.status(), 200, "the old ETag no longer matches");
    assert_ne!(header_of(&changed, header::ETAG), etag);
    let new_lm = httpdate::parse_http_date(&header_of(&changed, header::LAST_MODIFIED)).unwrap();
    let old_lm = httpdate::parse_http_date(&last_modified).unwrap();
    assert!(new_lm > old_lm, "Last-Modified moved with the content");
    served.stop().await;
}

fn max_age_of(r: &reqwest::Response) -> u64 {
    let cc = header_of(r, header::CACHE_CONTROL);
    cc.split(',')
        .find_map(|d| d.trim().strip_prefix("max-age="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no max-age in {cc:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_lasts_until_the_next_poll_of_the_feeds_sources() {
    let upstream = Upstream::start().await;
    upstream.put(
        "/t.xml",
        &[("content-type", "application/rss+xml")],
        rss(&["One"]),
    );
    let url = upstream.url("/t.xml");
    let dir = tempdir();
    let served = Served::start(
        dir.path(),
        &format!(
            "[[source]]\nname = \"fast\"\nurl = \"{url}\"\nschedule = \"*/5 * * * * *\"\n\n\
             [[source]]\nname = \"ten\"\nurl = \"{url}?ten\"\nschedule = \"0 */10 * * * *\"\n\n\
             [[source]]\nname = \"daily\"\nurl = \"{url}?daily\"\nschedule = \"0 0 0 29 2 *\"\n\n\
             [[source]]\nname = \"off\"\nurl = \"{url}?off\"\nenabled = false\n\n\
             [[feed]]\nname = \"fast\"\nsources = [\"fast\", \"daily\"]\n\n\
             [[feed]]\nname = \"ten\"\nsources = [\"ten\"]\n\n\
             [[feed]]\nname = \"daily\"\nsources = [\"daily\"]\n\n\
             [[feed]]\nname = \"off\"\nsources = [\"off\"]\n"
        ),
    )
    .await;
    served.wait_for("fast", 1).await;
    served.wait_for("daily", 1).await;
    served.wait_for("ten", 1).await;
    let http = client();
    let age = |feed: &'static str| {
        let http = http.clone();
        let url = served.url(&format!("/feeds/{feed}.rss"));
        async move { max_age_of(&get(&http, &url, &[]).await) }
    };
    // Polled every 5 s: the shortest max-age.
    assert_eq!(age("fast").await, 60);
    // Every 10 minutes: until the next slot (up to a tenth of the interval of jitter).
    let ten = age("ten").await;
    assert!((60..=660).contains(&ten), "{ten}");
    let now = chrono::Utc::now();
    let to_slot = 600 - (now.timestamp() % 600) as u64;
    if to_slot < 590 {
        // (Just after a slot, the poll may have been planned for the slot that just passed.)
        assert!(
            ten + 5 >= to_slot.max(60) && ten <= (to_slot + 60).max(60),
            "{ten} vs {to_slot}"
        );
    }
    // Once a day: bounded to an hour.
    assert_eq!(age("daily").await, 3600);
    // Nothing scheduled: only a reload changes it.
    assert_eq!(age("off").await, 3600);
    served.stop().await;
}

/// The value of the metric series `series` (name and labels) at `/metrics`.
async fn metric(served: &Served, series: &str) -> u64 {
    let text = reqwest::get(served.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// A repeated search is served from the cache of rendered views (the same bytes, counted as a
/// hit) until the feed changes; then the search is rendered again and finds the new item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_search_is_served_from_the_cache_until_the_feed_changes() {
    let upstream = Upstream::start().await;
    upstream.put(
        "/t.xml",
        &[("content-type", "application/rss+xml")],
        rss(&["Rust one", "Go two"]),
    );
    let dir = tempdir();
    // Polled every second: unchanged polls must not drop the cached search.
    let served = Served::start(
        dir.path(),
        &format!("[[source]]\nname = \"t\"\nurl = \"{}\"\nschedule = \"* * * * * *\"\n\n[[feed]]\nname = \"all\"\n", upstream.url("/t.xml")),
    )
    .await;
    served.wait_for("all", 2).await;
    let http = client();
    let url = served.url("/feeds/all.json?q=rust");
    let hits = r#"feedmux_feed_views_total{cache="hit"}"#;
    let misses = r#"feedmux_feed_views_total{cache="miss"}"#;

    let first = get(&http, &url, &[]).await;
    assert_eq!(first.status(), 200);
    let first = first.bytes().await.unwrap();
    let titles: Vec<String> = crate::read_back(&first)
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(titles, ["Rust one"]);
    assert_eq!(
        (metric(&served, hits).await, metric(&served, misses).await),
        (0, 1)
    );
    let polls_before = upstream.requests("/t.xml").len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        upstream.requests("/t.xml").len() > polls_before,
        "polled again, unchanged"
    );
    for n in 1..=3 {
        let again = get(&http, &url, &[]).await.bytes().await.unwrap();
        assert_eq!(again, first, "the same search, the same bytes");
        assert_eq!(metric(&served, hits).await, n, "served from the cache");
    }
    assert_eq!(metric(&served, misses).await, 1);

    upstream.put(
        "/t.xml",
        &[("content-type", "application/rss+xml")],
        rss(&["Rust one", "Go two", "Rust three"]),
    );
    served.wait_for("all", 3).await;
    let after = get(&http, &url, &[]).await.bytes().await.unwrap();
    let titles: Vec<String> = crate::read_back(&after)
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(titles, ["Rust three", "Rust one"], "the new item is found");
    assert_eq!(
        metric(&served, misses).await,
        2,
        "rendered again after the change"
    );
    served.stop().await;
}

/// A sloppy publisher dates a post minutes ahead: Last-Modified still never passes the
/// response's Date. After a restart with nothing changed, a reader revalidating with only
/// If-Modified-Since gets 304, not the whole feed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_modified_is_never_ahead_of_date_and_holds_across_a_restart() {
    let upstream = Upstream::start().await;
    let ahead = (chrono::Utc::now() + chrono::Duration::minutes(8)).to_rfc2822();
    let body = rss(&["One", "Two"]).replacen("Wed, 25 Nov 2026 00:00:00 GMT", &ahead, 1);
    upstream.put("/t.xml", &[("content-type", "application/rss+xml")], body);
    let dir = tempdir();
    let tables = format!(
        "[[source]]\nname = \"t\"\nurl = \"{}\"\nschedule = \"* * * * * *\"\n\n[[feed]]\nname = \"all\"\n",
        upstream.url("/t.xml")
    );
    let http = client();
    let served = Served::start(dir.path(), &tables).await;
    served.wait_for("all", 2).await;
    let mut held = Vec::new();
    for format in ["atom", "rss", "json"] {
        let r = get(&http, &served.url(&format!("/feeds/all.{format}")), &[]).await;
        let date = httpdate::parse_http_date(&header_of(&r, header::DATE)).unwrap();
        let last_modified = header_of(&r, header::LAST_MODIFIED);
        let lm = httpdate::parse_http_date(&last_modified).unwrap();
        assert!(
            lm <= date,
            "{format}: Last-Modified {last_modified} is ahead of Date"
        );
        let text = r.text().await.unwrap();
        assert!(text.contains("One"), "{format}: {text}");
        held.push((format, last_modified));
    }
    served.stop().await;

    let polls_before = upstream.requests("/t.xml").len();
    let served = Served::start(dir.path(), &tables).await;
    served.wait_for("all", 2).await;
    // The restarted daemon polls again (every second) and finds nothing new.
    for _ in 0..100 {
        if upstream.requests("/t.xml").len() > polls_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        upstream.requests("/t.xml").len() > polls_before,
        "polled after the restart"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (format, last_modified) in &held {
        let url = served.url(&format!("/feeds/all.{format}"));
        let r = get(&http, &url, &[(header::IF_MODIFIED_SINCE, last_modified)]).await;
        assert_eq!(
            r.status(),
            304,
            "{format}: nothing changed, yet the restart answered If-Modified-Since {last_modified} with Last-Modified {}",
            header_of(&r, header::LAST_MODIFIED)
        );
        let r = get(&http, &url, &[]).await;
        let date = httpdate::parse_http_date(&header_of(&r, header::DATE)).unwrap();
        let lm = httpdate::parse_http_date(&header_of(&r, header::LAST_MODIFIED)).unwrap();
        assert!(
            lm <= date,
            "{format}: Last-Modified ahead of Date after the restart"
        );
        assert!(lm <= httpdate::parse_http_date(last_modified).unwrap());
    }
    served.stop().await;
}

/// While every slot for rendering searches and pages is taken (two renders running: the test
/// holds the daemon's own slots), a new search waits its turn, then gets 503 with
/// `Retry-After: 60`; the whole feed and a search already rendered are served meanwhile, and
/// once the slots free the same search is answered. One slot taken is not yet too busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_gets_503_with_retry_after_while_every_render_slot_is_taken() {
    use std::sync::Arc;

    use feedmux::publish::{Publisher, SearchSlots, SEARCHES_AT_ONCE};

    let upstream = Upstream::start().await;
    upstream.put(
        "/t.xml",
        &[("content-type", "application/rss+xml")],
        rss(&["Rust one", "Go two", "Zig three"]),
    );
    let dir = tempdir();
    // The daemon's number of slots, with a wait of a fraction of the 10 s default.
    let wait = Duration::from_millis(400);
    let publisher = Arc::new(Publisher::with_search_slots(SearchSlots::new(
        SEARCHES_AT_ONCE,
        wait,
    )));
    let served = Served::start_with(
        dir.path(),
        &format!(
            "[[source]]\nname = \"t\"\nurl = \"{}\"\n\n[[feed]]\nname = \"all\"\n",
            upstream.url("/t.xml")
        ),
        publisher.clone(),
    )
    .await;
    served.wait_for("all", 3).await;
    let http = client();
    let titles = |body: &[u8]| -> Vec<String> {
        crate::read_back(body).into_iter().map(|(t, _)| t).collect()
    };
    let search = |q: &str| served.url(&format!("/feeds/all.json?q={q}"));
    let refused = "feedmux_searches_refused_total";

    let cached = get(&http, &search("rust"), &[]).await;
    assert_eq!(cached.status(), 200);
    let cached = cached.bytes().await.unwrap();
    assert_eq!(titles(&cached), ["Rust one"]);

    assert_eq!(SEARCHES_AT_ONCE, 2, "the documented limit");
    let first = publisher.search_slots().take().await.unwrap();
    let r = get(&http, &search("go"), &[]).await;
    assert_eq!(r.status(), 200, "one render running leaves a slot");
    assert_eq!(titles(&r.bytes().await.unwrap()), ["Go two"]);

    let second = publisher.search_slots().take().await.unwrap();
    for url in [search("zig"), served.url("/feeds/all.atom?limit=1")] {
        let started = std::time::Instant::now();
        let r = get(&http, &url, &[]).await;
        assert_eq!(r.status(), 503, "{url}: both slots taken");
        assert!(
            started.elapsed() >= wait,
            "{url}: refused after {:?}, without waiting its turn",
            started.elapsed()
        );
        assert_eq!(header_of(&r, header::RETRY_AFTER), "60", "{url}");
        let text = r.text().await.unwrap();
        assert!(text.contains("too many searches"), "{url}: {text}");
    }
    assert_eq!(metric(&served, refused).await, 2);
    // Meanwhile, what needs no render is served at once.
    let whole = get(&http, &served.url("/feeds/all.json"), &[]).await;
    assert_eq!(whole.status(), 200, "the whole feed never waits");
    assert!(!whole.bytes().await.unwrap().is_empty());
    let again = get(&http, &search("rust"), &[]).await;
    assert_eq!(again.status(), 200, "a search already rendered never waits");
    assert_eq!(again.bytes().await.unwrap(), cached);

    drop((first, second));
    let r = get(&http, &search("zig"), &[]).await;
    assert_eq!(r.status(), 200, "the slots are free again");
    assert_eq!(titles(&r.bytes().await.unwrap()), ["Zig three"]);
    let r = get(&http, &served.url("/feeds/all.atom?limit=1"), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(metric(&served, refused).await, 2, "nothing refused since");
    served.stop().await;
}
