//! Passwords and tokens in source and hub URLs stay in the daemon: the real `feedmux run`,
//! with sources and a WebSub hub configured as `http://user:password@host/path?token=…#…`,
//! is read through every public endpoint and output format, its CLI and its log, and shows
//! scheme, host and path only; with `[server] show_source_urls = false`, no source URL at all.

use std::path::Path;
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::real::{free_port, RealDaemon};
use crate::tempdir;
use crate::tools::{feedcheck, repo_path, xmllint_atom};
use crate::upstream::{Page, Upstream};

/// Every secret of the test's URLs contains this.
const SECRET: &str = "SECRET";
/// The credentials and the query put on every configured URL.
const USERINFO: &str = "SECRETUSER:SECRET_PW@";
const QUERY: &str = "?token=SECRET123&api_key=SECRET_KEY#SECRET_FRAG";

/// Two items with absolute links, and one whose link, enclosure and content are relative
/// (resolved against the feed's URL, which must not lend them its password or query).
fn rss(prefix: &str) -> String {
    let mut items: String = (0..2)
        .map(|i| {
            format!("<item><guid>{prefix}-{i}</guid><title>{prefix} story {i}</title><link>https://news.example/{prefix}/{i}</link></item>")
        })
        .collect();
    items.push_str(&format!("<item><guid>{prefix}-rel</guid><title>{prefix} relative story</title><link>articles/rel</link><enclosure url=\"media/ep.mp3\" length=\"1\" type=\"audio/mpeg\"/><description>&lt;a href=\"?page=2\"&gt;more&lt;/a&gt; &lt;img src=\"img/a.png\" width=\"300\" height=\"200\"&gt;</description></item>"));
    format!("<rss version=\"2.0\"><channel><title>{prefix}</title><link>https://news.example/</link><description>d</description>{items}</channel></rss>")
}

/// `http://SECRETUSER:SECRET_PW@127.0.0.1:port/path?token=…#…`.
fn secret_url(port: u16, path: &str) -> String {
    format!("http://{USERINFO}127.0.0.1:{port}{path}{QUERY}")
}

fn assert_no_secret(what: &str, text: &str) {
    assert!(
        !text.contains(SECRET),
        "{what} shows a secret of a configured URL:\n{text}"
    );
}

/// Polls `check` every 50 ms for at most 15 s.
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not after 15 s");
}

async fn get(http: &reqwest::Client, url: &str, accept: &str) -> String {
    let response = http
        .get(url)
        .header("accept", accept)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    response.text().await.unwrap()
}

/// Every public route and output format, as (what, body).
async fn every_public_output(http: &reqwest::Client, base: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, accept) in [
        ("/", "text/html"),
        ("/readyz", "*/*"),
        ("/healthz", "*/*"),
        ("/metrics", "*/*"),
        ("/opml", "*/*"),
        ("/api/sources", "application/json"),
        ("/api/items?source=good", "application/json"),
        ("/feeds/all.atom", "application/atom+xml"),
        ("/feeds/all.rss", "application/rss+xml"),
        ("/feeds/all.json", "application/feed+json"),
        ("/feeds/all.html", "text/html"),
        (
            "/feeds/all.atom",
            "text/html,application/xhtml+xml,*/*;q=0.8",
        ),
        // Searches and pages are rendered per request.
        ("/feeds/all.atom?q=story", "application/atom+xml"),
        ("/feeds/all.rss?limit=1", "application/rss+xml"),
        ("/feeds/all.json?q=story&limit=1", "application/feed+json"),
        ("/feeds/all.html?limit=1", "text/html"),
    ] {
        let body = get(http, &format!("{base}{path}"), accept).await;
        out.push((format!("GET {path} (Accept: {accept})"), body));
    }
    out
}

/// `feedmux ARGS --config PATH` run in `dir`: (exit code, stdout, stderr).
async fn feedmux(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(crate::binary())
        .args(args)
        .arg("--config")
        .arg(dir.join("feedmux.toml"))
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Sends SIGTERM and waits (bounded) for a clean exit.
fn stop(daemon: &mut RealDaemon) {
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &daemon.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        if let Ok(Some(status)) = daemon.child.try_wait() {
            assert!(status.success(), "{status}:\n{}", daemon.log_text());
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("feedmux did not stop:\n{}", daemon.log_text());
}

struct Setup {
    dir: tempfile::TempDir,
    upstream: Upstream,
    daemon: RealDaemon,
    http: reqwest::Client,
}

/// The daemon on a config whose three sources (`good`, `loop`: a redirect loop, `down`: a
/// refused connection) and WebSub hub all carry a password, a token and a fragment; `server`
/// is added to `[server]`. Returns once `good` is in the feed and the others failed.
async fn start(server: &str) -> Setup {
    let upstream = Upstream::start().await;
    let up = upstream.addr.port();
    upstream.put(
        "/feed.xml",
        &[("content-type", "application/rss+xml")],
        rss("good"),
    );
    upstream.put_page(
        "/loop.xml",
        Page::new(301, &[("location", &format!("/loop.xml{QUERY}"))], ""),
    );
    upstream.put_page("/hub", Page::new(202, &[], ""));
    let closed = free_port();
    let dir = tempdir();
    let port = free_port();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n{server}\n[storage]\npath = \"store\"\n[log]\nlevel = \"debug\"\n[poll]\nper_host_interval = \"0s\"\nschedule = \"0 0 0 1 1 *\"\n[websub]\nhub = \"{hub}\"\n\n[[source]]\nname = \"good\"\nurl = \"{good}\"\n\n[[source]]\nname = \"loop\"\nurl = \"{looping}\"\n\n[[source]]\nname = \"down\"\nurl = \"{down}\"\n\n[[feed]]\nname = \"all\"\n",
        hub = secret_url(up, "/hub"),
        good = secret_url(up, "/feed.xml"),
        looping = secret_url(up, "/loop.xml"),
        down = secret_url(closed, "/down.xml"),
    );
    std::fs::write(dir.path().join("feedmux.toml"), text).unwrap();
    let http = reqwest::Client::new();
    let mut daemon = RealDaemon::start(dir.path(), port);
    daemon.wait_ready(&http, Duration::from_secs(20)).await;
    let base = daemon.base();
    wait_until(
        "the good source's items in the feed and both failures stored",
        || {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let feed = get(&http, &format!("{base}/feeds/all.json"), "*/*").await;
                let items = serde_json::from_str::<serde_json::Value>(&feed)
                    .ok()
                    .and_then(|v| v["items"].as_array().map(Vec::len));
                let sources = crate::api_sources(&http, &base).await;
                let failed = sources
                    .iter()
                    .filter(|s| s["state"]["last_error"].is_string())
                    .count();
                items == Some(3) && failed == 2
            }
        },
    )
    .await;
    // The hub was told of the feeds' change, and said so in the log.
    let log = daemon.log.clone();
    wait_until("the WebSub ping's log line", || {
        let log = log.clone();
        async move {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("told the WebSub hub")
        }
    })
    .await;
    assert!(!upstream.requests("/hub").is_empty());
    Setup {
        dir,
        upstream,
        daemon,
        http,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_and_tokens_of_source_and_hub_urls_never_leave_the_daemon() {
    let Setup {
        dir,
        upstream,
        mut daemon,
        http,
    } = start("").await;
    let base = daemon.base();
    let up = upstream.addr.port();
    let public = |path: &str| format!("http://127.0.0.1:{up}{path}");
    // The fetcher used the full URL: the password went to the server (basic auth).
    let sent = upstream.requests("/feed.xml");
    assert!(
        sent[0]
            .get("authorization")
            .is_some_and(|v| v.to_str().unwrap().starts_with("Basic ")),
        "{sent:?}"
    );

    let outputs = every_public_output(&http, &base).await;
    for (what, body) in &outputs {
        assert_no_secret(what, body);
    }
    let body = |what: &str| output_of(&outputs, what);
    // Scheme, host (with port) and path are shown where the source's URL is.
    let feed_url = public("/feed.xml");
    assert!(body("/feeds/all.atom").contains(&format!("<id>{feed_url}</id>")));
    assert!(
        body("/feeds/all.atom").contains(&format!("<link rel=\"hub\" href=\"{}\"", public("/hub")))
    );
    assert!(body("/feeds/all.rss").contains(&format!("<source url=\"{feed_url}\">")));
    let json: serde_json::Value = serde_json::from_str(body("/feeds/all.json")).unwrap();
    assert_eq!(
        json["items"][0]["_feedmux"]["source"]["feed_url"],
        feed_url.as_str()
    );
    assert_eq!(json["hubs"][0]["url"], public("/hub").as_str());
    assert!(body("/feeds/all.html").contains(&format!("href=\"{feed_url}\"")));
    assert!(body("/").contains(&format!("href=\"{feed_url}\"")));
    // Relative links of the feed resolve against its public URL.
    let item = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["title"] == "good relative story")
        .unwrap();
    assert_eq!(item["url"], public("/articles/rel").as_str(), "{item}");
    assert_eq!(
        item["attachments"][0]["url"],
        public("/media/ep.mp3").as_str()
    );
    let content = item["content_html"].as_str().unwrap();
    assert!(
        content.contains(&public("/articles/img/a.png")),
        "{content}"
    );
    assert!(body("/opml").contains(&format!("xmlUrl=\"{feed_url}\"")));
    // The failures say what happened, with the URL in its public form.
    let readyz = body("/readyz");
    assert!(
        readyz.contains("warning: source loop failing since")
            && readyz.contains(&format!(
                "redirect loop: {} was reached twice",
                public("/loop.xml")
            )),
        "{readyz}"
    );
    assert!(readyz.contains("warning: source down failing"), "{readyz}");
    assert!(body("/").contains(&format!("redirect loop: {}", public("/loop.xml"))));
    let sources: serde_json::Value = serde_json::from_str(body("/api/sources")).unwrap();
    let good = &sources[0]["state"];
    assert_eq!(good["validators_for"], feed_url.as_str(), "{sources}");

    // The CLI asks the running daemon, and shows what it shows.
    // (Their logs, at the config's debug level, say nothing of the URLs either.)
    let (code, table, log) = feedmux(dir.path(), &["sources"]).await;
    assert_eq!(code, Some(0), "{table}{log}");
    assert_no_secret("feedmux sources", &format!("{table}{log}"));
    assert!(table.contains("redirect loop"), "{table}");
    let (code, list, log) = feedmux(dir.path(), &["export-opml"]).await;
    assert_eq!(code, Some(0), "{list}{log}");
    assert_no_secret("feedmux export-opml", &format!("{list}{log}"));
    assert_eq!(list, body("/opml"));
    // Unless the owner asks for the URLs as configured.
    let (code, full, log) = feedmux(dir.path(), &["export-opml", "--full-urls"]).await;
    assert_eq!(code, Some(0), "{full}{log}");
    assert!(
        full.contains(&secret_url(up, "/feed.xml").replace('&', "&amp;")),
        "{full}"
    );
    let (code, checked, log) = feedmux(dir.path(), &["check"]).await;
    assert_eq!(code, Some(0), "{checked}{log}");
    assert_no_secret("feedmux check", &format!("{checked}{log}"));

    // A config that cannot be applied: its errors are logged and shown on the status page,
    // and the URL in them is redacted too (here one with a space, which does not parse).
    let path = dir.path().join("feedmux.toml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[[source]]\nname = \"typo\"\nurl = \"https://{USERINFO}exa mple.com/x{QUERY}\"\n"
    ));
    std::fs::write(&path, text).unwrap();
    let (code, checked, log) = feedmux(dir.path(), &["check"]).await;
    assert_eq!(code, Some(2), "{checked}{log}");
    assert_no_secret("feedmux check of a bad config", &format!("{checked}{log}"));
    assert!(checked.contains("https://exa mple.com/x"), "{checked}");
    wait_until("the refused reload on the status page", || {
        let (http, base) = (http.clone(), base.clone());
        async move {
            get(&http, &format!("{base}/"), "text/html")
                .await
                .contains("id=\"reload-error\"")
        }
    })
    .await;
    let page = get(&http, &format!("{base}/"), "text/html").await;
    assert_no_secret("the status page with a refused reload", &page);
    assert!(page.contains("https://exa mple.com/x"), "{page}");

    stop(&mut daemon);
    let log = daemon.log_text();
    assert_no_secret("the daemon's log", &log);
    assert!(
        log.lines()
            .any(|l| l.contains("polled") && l.contains(&format!("url={feed_url}"))),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("poll failed")
                && l.contains(&format!("url={}", public("/loop.xml")))),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("told the WebSub hub")
                && l.contains(&format!("hub={}", public("/hub")))),
        "{log}"
    );
    assert!(log.contains("config reload refused"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python3 with jsonschema and feedparser, xmllint: run by .ci/run, or cargo test -- --include-ignored"]
async fn show_source_urls_false_hides_source_urls_from_every_public_output() {
    let Setup {
        dir,
        upstream: _upstream,
        mut daemon,
        http,
    } = start("show_source_urls = false").await;
    let base = daemon.base();
    let outputs = every_public_output(&http, &base).await;
    for (what, body) in &outputs {
        assert_no_secret(what, body);
        // (The hub is not a source: subscribers need its public URL. Item links are the
        // items', even when they were relative to the source's address.)
        for path in ["/feed.xml", "/loop.xml", "/down.xml"] {
            assert!(!body.contains(path), "{what} shows a source's URL:\n{body}");
        }
    }
    let body = |what: &str| output_of(&outputs, what);
    // The feeds still name each entry's source, and are still valid.
    let atom = body("/feeds/all.atom");
    let source = &atom[atom.find("<source>").unwrap()..atom.find("</source>").unwrap()];
    assert!(
        source.contains(">good</title>") && !source.contains("<id>"),
        "{source}"
    );
    let json: serde_json::Value = serde_json::from_str(body("/feeds/all.json")).unwrap();
    assert_eq!(json["items"][0]["_feedmux"]["source"]["title"], "good");
    assert!(json["items"][0]["_feedmux"]["source"]
        .get("feed_url")
        .is_none());
    assert!(!body("/feeds/all.rss").contains("<source"));
    for (path, check) in [
        ("/feeds/all.atom", "atom"),
        ("/feeds/all.rss", "rss"),
        ("/feeds/all.json", "json"),
    ] {
        let entries = crate::read_back(body(path).as_bytes());
        assert_eq!(entries.len(), 3, "{path}");
        let file = dir.path().join(format!("all.{check}"));
        std::fs::write(&file, body(path)).unwrap();
        let file_str = file.to_str().unwrap();
        let schema = repo_path("tests/fixtures/schemas/jsonfeed-1.1.schema.json");
        let (ok, out) = match check {
            "atom" => {
                let (ok, out) = xmllint_atom(&file);
                assert!(ok, "{path} fails RFC 4287's RELAX NG schema: {out}");
                feedcheck(&["atom", file_str])
            }
            "json" => feedcheck(&["json", file_str, schema.to_str().unwrap()]),
            _ => feedcheck(&[check, file_str]),
        };
        assert!(ok, "{path} is not valid without source URLs: {out}");
    }
    assert!(body("/readyz").contains("redirect loop: (URL hidden) was reached twice"));
    let opml = body("/opml");
    assert!(
        opml.contains("<outline text=\"good\"") && !opml.contains("xmlUrl"),
        "{opml}"
    );
    let (code, table, log) = feedmux(dir.path(), &["sources"]).await;
    assert_eq!(code, Some(0), "{table}{log}");
    assert_no_secret("feedmux sources", &format!("{table}{log}"));
    stop(&mut daemon);
    assert_no_secret("the daemon's log", &daemon.log_text());
}

/// The body `GET {path}` answered, among [`every_public_output`]'s.
fn output_of<'a>(outputs: &'a [(String, String)], path: &str) -> &'a str {
    outputs
        .iter()
        .find(|(what, _)| what.starts_with(&format!("GET {path} ")))
        .map(|(_, body)| body.as_str())
        .unwrap_or_else(|| panic!("no output of GET {path}"))
}
