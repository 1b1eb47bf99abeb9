//! The status page at `/`, as a browser shows it: headless Chromium loads it from a running
//! daemon and the test reads the DOM it built (sources with state, polls, errors, counts and
//! charts; output feeds with subscribe links and autodiscovery; everything escaped).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::served::Served;
use crate::tools::{browser_skipped, chromium_dom};
use crate::upstream::{Page, Upstream};
use crate::{config, rss_feed, tempdir, RssItem};

fn rss_item(guid: &str, title: &str, at: DateTime<Utc>) -> RssItem {
    RssItem::new(guid, title, format!("https://lab.example/{guid}")).dated(&at.to_rfc2822())
}

/// The `<tr>` of `source` in the DOM.
fn row<'a>(dom: &'a str, source: &str) -> &'a str {
    let start = dom
        .find(&format!("<tr data-source=\"{source}\">"))
        .unwrap_or_else(|| panic!("no row for {source}:\n{dom}"));
    let end = dom[start..].find("</tr>").unwrap() + start;
    &dom[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium: run by .ci/run, or cargo test -- --include-ignored"]
async fn the_status_page_shows_sources_feeds_and_charts_in_a_browser() {
    if browser_skipped() {
        return;
    }
    let now = Utc::now();
    let dates = [
        now - chrono::Duration::minutes(30),
        now - chrono::Duration::hours(5),
        now - chrono::Duration::days(3),
        now - chrono::Duration::days(3) - chrono::Duration::minutes(1),
        now - chrono::Duration::days(12),
        now - chrono::Duration::days(45),
    ];
    let items = dates
        .iter()
        .enumerate()
        .map(|(i, at)| rss_item(&i.to_string(), &format!("Item {i}"), *at));
    let upstream = Upstream::start().await;
    upstream.put(
        "/lab.xml",
        &[("content-type", "application/rss+xml")],
        rss_feed(
            "Lab &lt;script&gt;alert(1)&lt;/script&gt;",
            "https://lab.example/",
            items,
        ),
    );
    upstream.put_page("/broken.xml", Page::new(500, &[], "oops"));
    let dir = tempdir();
    let config = config(
        dir.path(),
        &format!(
            "[[source]]\nname = \"lab\"\nurl = {:?}\ntitle = \"Lab & <Co>\"\nschedule = \"0 0 0 1 1 *\"\n\n\
             [[source]]\nname = \"broken\"\nurl = {:?}\nschedule = \"0 0 0 1 1 *\"\n\n\
             [[source]]\nname = \"off\"\nurl = \"https://off.example/feed\"\nenabled = false\n\n\
             [[feed]]\nname = \"ai\"\ntitle = \"AI <news> & more\"\n\n[[feed]]\nname = \"all\"\n",
            upstream.url("/lab.xml"),
            upstream.url("/broken.xml")
        ),
    );
    let served = Served::with_config(config).await;
    let base = served.base.clone();
    // Bounded wait for both first polls.
    for _ in 0..100 {
        let sources = reqwest::get(format!("{base}/api/sources"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if sources.contains("\"ok\"") && sources.contains("\"failing\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let raw = reqwest::get(format!("{base}/")).await.unwrap();
    assert_eq!(raw.headers()["content-type"], "text/html; charset=utf-8");
    let raw = raw.text().await.unwrap();
    assert!(!raw.contains("src="), "nothing loaded from elsewhere");
    assert!(!raw.contains("<script"), "no script at all");
    assert!(!raw.contains("stylesheet"), "styles are inline");

    let url = format!("{base}/");
    let dom = chromium_dom(&url).await;

    // Autodiscovery: each output feed in each of its three formats.
    for feed in ["ai", "all"] {
        for (ext, media) in [
            ("atom", "application/atom+xml"),
            ("rss", "application/rss+xml"),
            ("json", "application/feed+json"),
        ] {
            let tag = format!("<link rel=\"alternate\" type=\"{media}\"");
            let href = format!("href=\"http://feeds.test/feeds/{feed}.{ext}\"");
            assert!(
                dom.lines().any(|l| l.contains(&tag) && l.contains(&href)),
                "no autodiscovery of {feed}.{ext}:\n{dom}"
            );
        }
    }
    // Subscribe links, and titles escaped (the DOM holds text, not markup).
    assert!(dom.contains(
        "<a href=\"http://feeds.test/feeds/ai.json\" type=\"application/feed+json\">JSON Feed</a>"
    ));
    assert!(dom.contains("AI &lt;news&gt; &amp; more"), "{dom}");
    assert!(
        !dom.contains("<script"),
        "a feed's title became markup:\n{dom}"
    );
    assert!(!dom.contains("<news>"));

    let lab = row(&dom, "lab");
    assert!(lab.contains("Lab &amp; &lt;Co&gt;"), "{lab}");
    assert!(lab.contains("class=\"state ok\">ok<"), "{lab}");
    assert!(
        lab.contains("ago</time>") || lab.contains("just now</time>"),
        "last poll shown: {lab}"
    );
    assert!(
        lab.contains("<td class=\"num\">2</td><td class=\"num\">6</td>"),
        "2 items in the last 24 h, 6 stored: {lab}"
    );
    assert_eq!(lab.matches("<rect").count(), 30, "one bar per day: {lab}");
    let mut per_day: BTreeMap<String, usize> = BTreeMap::new();
    for at in dates
        .iter()
        .filter(|t| (now.date_naive() - t.date_naive()).num_days() < 30)
    {
        *per_day.entry(at.date_naive().to_string()).or_default() += 1;
    }
    for (day, n) in &per_day {
        let label = format!(
            "<title>{day}: {n} item{}</title>",
            if *n == 1 { "" } else { "s" }
        );
        assert!(lab.contains(&label), "no bar {label}: {lab}");
    }
    assert!(lab.contains("5 items in the last 30 days"), "{lab}");

    let broken = row(&dom, "broken");
    assert!(
        broken.contains("class=\"state failing\">failing since"),
        "{broken}"
    );
    assert!(broken.contains("500"), "the last error is shown: {broken}");
    assert!(broken.contains("<td class=\"num\">0</td>"), "{broken}");
    let off = row(&dom, "off");
    assert!(off.contains("class=\"state off\">disabled<"), "{off}");

    served.stop().await;
}

/// The names of the sources a status page lists, in order, and how many are failing.
fn listed(page: &str) -> (Vec<String>, usize) {
    let names = page
        .split("<tr data-source=\"")
        .skip(1)
        .filter_map(|row| row.split('"').next())
        .map(str::to_owned)
        .collect();
    (names, page.matches("class=\"state failing\"").count())
}

/// 250 sources, every sixth failing: the status page lists them a hundred a page, the
/// failing ones first, says where the page stands, links its neighbours, is compressed for a
/// browser that accepts it, and refuses a page number that is not one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_comes_in_pages_of_a_hundred_failing_sources_first() {
    let upstream = Upstream::start().await;
    upstream.put(
        "/ok.xml",
        &[("content-type", "application/rss+xml")],
        rss_feed("ok", "https://ok.example/", []),
    );
    upstream.put_page("/broken.xml", Page::new(500, &[], "oops"));
    let failing: Vec<String> = (0..250)
        .filter(|i| i % 6 == 5)
        .map(|i| format!("s{i:03}"))
        .collect();
    let mut tables = String::new();
    for i in 0..250 {
        let name = format!("s{i:03}");
        let path = if failing.contains(&name) {
            "/broken.xml"
        } else {
            "/ok.xml"
        };
        tables.push_str(&format!(
            "[[source]]\nname = \"{name}\"\nurl = \"{}\"\nschedule = \"0 0 0 1 1 *\"\n\n",
            upstream.url(&format!("{path}?{name}"))
        ));
    }
    tables.push_str("[[feed]]\nname = \"all\"\n");
    let dir = tempdir();
    let served = Served::start(dir.path(), &tables).await;
    // No decompression by the client: the test looks at the bytes on the wire.
    let http = reqwest::Client::builder()
        .no_gzip()
        .no_brotli()
        .build()
        .unwrap();
    // Bounded wait for every first poll.
    for _ in 0..300 {
        let sources = crate::api_sources(&http, &served.base).await;
        let polled = sources
            .iter()
            .filter(|s| !s["state"]["last_poll"].is_null())
            .count();
        if polled == 250 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let get = |page: &str, encoding: &str| {
        let request = http
            .get(served.url(&format!("/{page}")))
            .header("accept-encoding", encoding);
        async move { request.send().await.unwrap() }
    };

    let first = get("", "identity").await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers().get("content-encoding"), None);
    let first = first.text().await.unwrap();
    let (names, failing_shown) = listed(&first);
    assert_eq!(names.len(), 100, "a hundred sources on page 1");
    assert_eq!(
        names[..failing.len()],
        failing[..],
        "the failing ones first"
    );
    assert_eq!(failing_shown, failing.len());
    assert_eq!(
        names[failing.len()],
        "s000",
        "then the others in config order"
    );
    assert!(first.contains("sources 1-100 of 250"), "{first}");
    assert!(first.contains("<a href=\"?page=2\" rel=\"next\">"));
    assert!(!first.contains("rel=\"prev\""), "no page before the first");
    assert!(
        first.contains("<b>41</b>failing"),
        "the summary counts them all"
    );

    let second = get("?page=2", "identity").await.text().await.unwrap();
    let (second_names, _) = listed(&second);
    assert_eq!(second_names.len(), 100);
    assert!(second.contains("sources 101-200 of 250"));
    assert!(second.contains("<a href=\"?page=1\" rel=\"prev\">"));
    assert!(second.contains("<a href=\"?page=3\" rel=\"next\">"));
    let third = get("?page=3", "identity").await.text().await.unwrap();
    let (third_names, _) = listed(&third);
    assert_eq!(third_names.len(), 50, "the last page has the rest");
    assert!(third.contains("sources 201-250 of 250"));
    assert!(!third.contains("rel=\"next\""), "no page after the last");
    let mut every: Vec<String> = [names, second_names, third_names].concat();
    every.sort();
    every.dedup();
    assert_eq!(every.len(), 250, "each source on exactly one page");

    let past = get("?page=4", "identity").await;
    assert_eq!(past.status(), 200);
    let past = past.text().await.unwrap();
    assert_eq!(listed(&past).0.len(), 0);
    assert!(past.contains("no sources on page 4: there are 250, on pages 1-3"));
    assert!(past.contains("<a href=\"?page=3\" rel=\"prev\">"));

    for bad in ["?page=0", "?page=x", "?page=-2"] {
        let r = get(bad, "identity").await;
        assert_eq!(r.status(), 400, "{bad}");
        let message = r.text().await.unwrap();
        assert!(
            message.contains("page must be a whole number from 1"),
            "{bad}: {message}"
        );
    }

    for (encoding, token) in [("gzip", "gzip"), ("gzip, br", "br")] {
        let r = get("?page=2", encoding).await;
        assert_eq!(r.headers()["content-encoding"], token);
        assert_eq!(r.headers()["vary"], "Accept-Encoding");
        let compressed = r.bytes().await.unwrap();
        let mut unpacked = String::new();
        if token == "br" {
            std::io::Read::read_to_string(
                &mut brotli::Decompressor::new(&compressed[..], 4096),
                &mut unpacked,
            )
            .unwrap();
        } else {
            std::io::Read::read_to_string(
                &mut flate2::read::GzDecoder::new(&compressed[..]),
                &mut unpacked,
            )
            .unwrap();
        }
        assert_eq!(listed(&unpacked).0.len(), 100, "{token}");
        assert!(
            compressed.len() * 5 < unpacked.len(),
            "{token}: {} bytes for {}",
            compressed.len(),
            unpacked.len()
        );
    }
    served.stop().await;
}
