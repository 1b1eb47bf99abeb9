//! What the e2e tests share: feed servers in the test process ([`upstream`]), the real binary
//! as a daemon ([`real`]), a daemon inside the test process that takes its turn at sled
//! ([`served`]), a private PostgreSQL cluster ([`pg_cluster`]), certificates of a test CA
//! ([`test_ca`]), finding external programs ([`tools`]), and the helpers below: configs, polls,
//! renders read back as a reader reads them, an RSS builder ([`rss_feed`] of [`RssItem`]s) and [`eventually`].

pub mod pg_cluster;
pub mod real;
pub mod served;
pub mod test_ca;
pub mod tools;
pub mod upstream;

use std::path::{Path, PathBuf};

use feedmux::config::{self, Config};
use feedmux::daemon::{poll_once, Polled};
use feedmux::publish::{Format, Publisher};
use feedmux::refresh::{PollError, PollReport};
use feedmux::store::Store;
use pg_cluster::PgCluster;

pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The keys of `[storage]` for a test's store in `dir`: the sled store `dir/store`, or, when
/// the environment says `FEEDMUX_TEST_ENGINE=postgres`, a database of the tests' PostgreSQL
/// cluster, the same one for every config of one `dir` (so `.ci/run` runs the tests that use
/// these configs on both engines).
pub fn storage_keys(dir: &Path) -> String {
    let path = format!("path = {:?}\n", dir.join("store").display().to_string());
    if std::env::var("FEEDMUX_TEST_ENGINE").as_deref() != Ok("postgres") {
        return path;
    }
    static DATABASES: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());
    let mut databases = DATABASES.lock().unwrap_or_else(|p| p.into_inner());
    let url = match databases.iter().find(|(d, _)| d == dir) {
        Some((_, url)) => url.clone(),
        None => {
            let url = PgCluster::shared().fresh_database("e2e");
            databases.push((dir.to_owned(), url.clone()));
            url
        }
    };
    format!("{path}engine = \"postgres\"\nurl = {url:?}\n")
}

/// A config whose store lives in `dir`, with the given `[[source]]` and `[[feed]]` tables.
pub fn config(dir: &Path, tables: &str) -> Config {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nbase_url = \"http://feeds.test\"\n[storage]\n{}{}\n{tables}",
        storage_keys(dir),
        if tables.contains("[poll]") {
            ""
        } else {
            // Every test upstream is on 127.0.0.1: no politeness gap unless a test asks for one.
            "[poll]\nper_host_interval = \"0s\"\n"
        }
    );
    let path = dir.join("feedmux.toml");
    std::fs::write(&path, &text).unwrap();
    config::load(&path).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// What a running daemon's `/api/sources` lists: one object per source, with its `state`.
pub async fn api_sources(http: &reqwest::Client, base: &str) -> Vec<serde_json::Value> {
    let r = http
        .get(format!("{base}/api/sources"))
        .send()
        .await
        .unwrap();
    match serde_json::from_slice(&r.bytes().await.unwrap()).unwrap() {
        serde_json::Value::Array(list) => list,
        other => panic!("/api/sources is not a list: {other}"),
    }
}

pub fn source(name: &str, url: &str) -> String {
    format!("[[source]]\nname = {name:?}\nurl = {url:?}\n\n")
}

/// Polls the named sources (all when empty) once, with `--force`, and returns each result.
pub async fn poll(config: &Config, names: &[&str]) -> Vec<(String, Result<PollReport, PollError>)> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    poll_once(config, &names, true)
        .await
        .unwrap()
        .into_iter()
        .map(|o| match o.polled {
            Polled::Done(result) => (o.source, result),
            Polled::Skipped(hold) => panic!("{} skipped although forced: {hold:?}", o.source),
            Polled::PolledElsewhere => panic!("{} polled by another instance", o.source),
        })
        .collect()
}

/// Polls every source once and asserts that each poll succeeded.
pub async fn poll_all(config: &Config) {
    for (source, result) in poll(config, &[]).await {
        if let Err(e) = result {
            panic!("poll of {source} failed: {e}");
        }
    }
}

/// Renders `feed` from the store in `format`.
pub fn render(config: &Config, feed: &str, format: Format) -> Vec<u8> {
    let store = Store::open_configured(&config.storage).unwrap();
    feedmux::daemon::sync_feed_indexes(&store, config).unwrap();
    let rendered = Publisher::new().render(&store, config, feed).unwrap();
    rendered.get(format).unwrap().body.to_vec()
}

/// What a reader sees of an output document: (title, link) of each entry, parsed by feed-rs.
pub fn read_back(bytes: &[u8]) -> Vec<(String, Option<String>)> {
    let feed = feed_rs::parser::parse(bytes).unwrap_or_else(|e| {
        panic!(
            "output does not parse: {e}\n{}",
            String::from_utf8_lossy(bytes)
        )
    });
    feed.entries
        .into_iter()
        .map(|e| {
            (
                e.title.map(|t| t.content).unwrap_or_default(),
                e.links.first().map(|l| l.href.clone()),
            )
        })
        .collect()
}

/// Titles of `feed` as read back from every output format; asserts the formats agree.
pub fn titles(config: &Config, feed: &str) -> Vec<String> {
    let mut per_format = Vec::new();
    for format in Format::ALL {
        let entries = read_back(&render(config, feed, format));
        per_format.push(entries.into_iter().map(|(t, _)| t).collect::<Vec<_>>());
    }
    assert_eq!(per_format[0], per_format[1], "atom and rss differ");
    assert_eq!(per_format[0], per_format[2], "atom and json differ");
    per_format.swap_remove(0)
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_feedmux"))
}

/// One `<item>` of an [`rss_feed`].
pub struct RssItem {
    guid: String,
    title: String,
    link: String,
    /// Raw XML after the link: a `pubDate`, a `description`, an enclosure.
    more: String,
}

impl RssItem {
    pub fn new(guid: impl ToString, title: impl ToString, link: impl ToString) -> RssItem {
        RssItem {
            guid: guid.to_string(),
            title: title.to_string(),
            link: link.to_string(),
            more: String::new(),
        }
    }

    /// With a `<pubDate>` (RFC 2822, as RSS has it).
    pub fn dated(self, date: &str) -> RssItem {
        self.with(&format!("<pubDate>{date}</pubDate>"))
    }

    /// With `xml` (already escaped) after the link.
    pub fn with(mut self, xml: &str) -> RssItem {
        self.more.push_str(xml);
        self
    }
}

/// An RSS 2.0 document titled `title`, of the site `site`, holding `items`: the feed most
/// tests serve.
pub fn rss_feed(title: &str, site: &str, items: impl IntoIterator<Item = RssItem>) -> String {
    let mut body = format!(
        "<rss version=\"2.0\"><channel><title>{title}</title><link>{site}</link><description>d</description>"
    );
    for item in items {
        body.push_str(&format!(
            "<item><guid>{}</guid><title>{}</title><link>{}</link>{}</item>",
            item.guid, item.title, item.link, item.more
        ));
    }
    body + "</channel></rss>"
}

/// Waits until `check` holds, polling every 50 ms for at most 5 s, else fails naming `what`.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..100 {
        if check() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{what}: not within 5 s");
}

/// Copies the directory `from` into `to`, less any `README.md` (a fixture's notes).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "README.md" {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
