//! The status page at `/`, as a browser shows it: headless Chromium loads it from a running
//! daemon and the test reads the DOM it built (sources with state, polls, errors, counts and
//! charts; output feeds with subscribe links and autodiscovery; everything escaped).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use feedmux::daemon::{self, Control};
use tokio::sync::mpsc;

use crate::tools::{browser_skipped, chromium_dom};
use crate::upstream::{Page, Upstream};
use crate::{config, tempdir};

fn rss_item(guid: &str, title: &str, at: DateTime<Utc>) -> String {
    format!(
        "<item><guid>{guid}</guid><title>{title}</title><link>https://lab.example/{guid}</link><pubDate>{}</pubDate></item>",
        at.to_rfc2822()
    )
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
    let items: String = dates
        .iter()
        .enumerate()
        .map(|(i, at)| rss_item(&i.to_string(), &format!("Item {i}"), *at))
        .collect();
    let upstream = Upstream::start().await;
    upstream.put(
        "/lab.xml",
        &[("content-type", "application/rss+xml")],
        format!("<rss version=\"2.0\"><channel><title>Lab &lt;script&gt;alert(1)&lt;/script&gt;</title><link>https://lab.example/</link><description>d</description>{items}</channel></rss>"),
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (control, rx) = mpsc::channel(1);
    let daemon = tokio::spawn(daemon::run(config, listener, rx));
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

    control.send(Control::Shutdown).await.unwrap();
    daemon.await.unwrap().unwrap();
}
