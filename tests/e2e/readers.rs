//! Real feed readers subscribe to the running daemon: newsboat (Debian) reads the Atom and RSS
//! feeds over HTTP and stores every item with its title and link; Python feedparser (PyPI)
//! parses them with no `bozo` error.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use crate::served::Served;
use crate::tempdir;
use crate::tools::{feedcheck, python, require};
use crate::upstream::Upstream;

/// Sources with the titles that trip readers up, and what a reader must show for them.
async fn upstream_with_items() -> (Upstream, String, Vec<(&'static str, &'static str)>) {
    let upstream = Upstream::start().await;
    upstream.put(
        "/zh.xml",
        &[("content-type", "application/rss+xml; charset=utf-8")],
        r#"<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>量子位</title><link>https://q.example/</link><description>d</description>
<item><guid>1</guid><title>大模型发布：GPT と 한국어 😀</title><link>https://q.example/1</link><description>&lt;p&gt;正文&lt;/p&gt;</description><pubDate>Wed, 25 Nov 2026 10:00:00 GMT</pubDate></item>
<item><guid>2</guid><title>AT&amp;T &amp; Q&amp;A: 5 &lt; 6</title><link>https://q.example/2?a=1&amp;b=2</link><pubDate>Wed, 25 Nov 2026 09:00:00 GMT</pubDate></item>
<item><guid>3</guid><title>No date at all</title><link>https://q.example/3</link></item>
</channel></rss>
"#,
    );
    upstream.put(
        "/en.json",
        &[("content-type", "application/feed+json")],
        r#"{"version":"https://jsonfeed.org/version/1.1","title":"Lab blog","items":[
{"id":"a","url":"https://lab.example/a","title":"Lumen-4 \"released\"","content_html":"<p>Body</p>","date_published":"2026-11-25T08:00:00Z"},
{"id":"b","url":"https://lab.example/b","title":"Podcast: episode 12","content_text":"Listen","date_published":"2026-11-25T07:00:00Z",
 "attachments":[{"url":"https://lab.example/b.mp3","mime_type":"audio/mpeg","size_in_bytes":1000}]}]}"#,
    );
    let tables = format!(
        "[[source]]\nname = \"zh\"\nurl = \"{}\"\n\n[[source]]\nname = \"en\"\nurl = \"{}\"\n\n[[feed]]\nname = \"ai\"\ntitle = \"AI & more\"\n",
        upstream.url("/zh.xml"),
        upstream.url("/en.json")
    );
    let expected = vec![
        ("大模型发布：GPT と 한국어 😀", "https://q.example/1"),
        ("AT&T & Q&A: 5 < 6", "https://q.example/2?a=1&b=2"),
        ("No date at all", "https://q.example/3"),
        ("Lumen-4 \"released\"", "https://lab.example/a"),
        ("Podcast: episode 12", "https://lab.example/b"),
    ];
    (upstream, tables, expected)
}

fn as_set(pairs: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    pairs
        .iter()
        .map(|(t, l)| (t.to_string(), l.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs newsboat, python3 with jsonschema and feedparser: run by .ci/run, or cargo test -- --include-ignored"]
async fn newsboat_subscribes_and_reads_every_item_with_its_title_and_link() {
    let newsboat = require("newsboat", "Debian newsboat");
    let (_upstream, tables, expected) = upstream_with_items().await;
    let dir = tempdir();
    let served = Served::start(dir.path(), &tables).await;
    served.wait_for("ai", expected.len()).await;

    // One newsboat per format: newsboat keys its cache by guid, and the formats share ids.
    for format in ["atom", "rss"] {
        let feed = served.url(&format!("/feeds/ai.{format}"));
        let rows = read_with_newsboat(&newsboat, &dir.path().join(format), &feed).await;
        let got: BTreeSet<(String, String)> = rows
            .iter()
            .filter(|(f, _, _)| *f == feed)
            .map(|(_, t, l)| (t.clone(), l.clone()))
            .collect();
        assert_eq!(
            got,
            as_set(&expected),
            "newsboat's items of {feed}: {rows:?}"
        );
    }
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3 with jsonschema and feedparser: run by .ci/run, or cargo test -- --include-ignored"]
async fn feedparser_parses_the_atom_and_rss_feeds_without_bozo() {
    let (_upstream, tables, expected) = upstream_with_items().await;
    let dir = tempdir();
    let served = Served::start(dir.path(), &tables).await;
    served.wait_for("ai", expected.len()).await;
    for (format, version) in [("atom", "atom10"), ("rss", "rss20")] {
        let url = served.url(&format!("/feeds/ai.{format}"));
        let for_python = url.clone();
        let (ok, out) =
            tokio::task::spawn_blocking(move || feedcheck(&["feedparser", &for_python]))
                .await
                .unwrap();
        assert!(ok, "feedparser on {url}: {out}");
        let parsed: serde_json::Value =
            serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(parsed["bozo"], false, "{url}: {out}");
        assert_eq!(parsed["version"], version, "{url}: {out}");
        let got: BTreeSet<(String, String)> = parsed["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["title"].as_str().unwrap_or_default().to_owned(),
                    e["link"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        assert_eq!(got, as_set(&expected), "feedparser's entries of {url}");
    }
    // feedparser 6.0 (the newest release) has no JSON Feed reader; the JSON Feed is read by
    // Python's json module here and validated against its schema in `validity`.
    let body = reqwest::get(served.url("/feeds/ai.json"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let got: BTreeSet<(String, String)> = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["title"].as_str().unwrap_or_default().to_owned(),
                e["url"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(got, as_set(&expected));
    served.stop().await;
}

/// Subscribes a fresh newsboat (its home in `home`) to `feed`, reloads once, and returns
/// (feed URL, title, link) of every item in its cache.
async fn read_with_newsboat(
    newsboat: &std::path::Path,
    home: &std::path::Path,
    feed: &str,
) -> Vec<(String, String, String)> {
    std::fs::create_dir_all(home.join("config")).unwrap();
    std::fs::write(home.join("urls"), format!("{feed}\n")).unwrap();
    std::fs::write(
        home.join("config.newsboat"),
        "download-timeout 20\ndownload-retries 1\nmax-items 0\n",
    )
    .unwrap();
    let cache = home.join("cache.db");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(newsboat)
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_CACHE_HOME", home.join("cache"))
            .arg("-u")
            .arg(home.join("urls"))
            .arg("-c")
            .arg(&cache)
            .arg("-C")
            .arg(home.join("config.newsboat"))
            .args(["-l", "3", "-d"])
            .arg(home.join("newsboat.log"))
            .args(["-x", "reload"])
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("newsboat took over 120 s")
    .unwrap();
    let log = std::fs::read_to_string(home.join("newsboat.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "newsboat failed: {}\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors.is_empty(),
        "newsboat logged errors for {feed}: {errors:#?}"
    );
    // newsboat's cache is SQLite; Python's standard library reads it.
    let query = tokio::process::Command::new(python())
        .args([
            "-c",
            "import json, sqlite3, sys\nrows = sqlite3.connect(sys.argv[1]).execute('SELECT feedurl, title, url FROM rss_item WHERE deleted = 0').fetchall()\nprint(json.dumps(rows, ensure_ascii=False))",
        ])
        .arg(&cache)
        .output()
        .await
        .unwrap();
    assert!(
        query.status.success(),
        "cannot read newsboat's cache: {}\n{log}",
        String::from_utf8_lossy(&query.stderr)
    );
    serde_json::from_slice(&query.stdout).unwrap()
}
