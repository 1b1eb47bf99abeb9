//! OPML: `feedmux import-opml` adds a reader's subscription list to the config file (its
//! comments and layout kept, duplicates skipped, names valid and unique, folders as tags),
//! and `feedmux export-opml` and `GET /opml` give the sources back as a list.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use feedmux::config;
use feedmux::opml;

use crate::served::Served;
use crate::{binary, tempdir};

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/opml")
        .join(name)
}

/// The shipped example config (23 sources, many comments), with its store in `dir`.
fn example_config(dir: &Path) -> PathBuf {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/feedmux.toml"))
            .unwrap();
    let text = text.replace(
        "path = \"./data\"",
        &format!("path = {:?}", dir.join("store").display().to_string()),
    );
    let path = dir.join("feedmux.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn feedmux(config: &Path, args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

/// Every line of `before` is in `after`, in order and unchanged (comments included); the
/// lines added are those of new `[[source]]` tables.
fn assert_only_sources_added(before: &str, after: &str) {
    let mut kept = before.lines().peekable();
    for line in after.lines() {
        if kept.peek() == Some(&line) {
            kept.next();
            continue;
        }
        assert!(
            line.is_empty()
                || line == "[[source]]"
                || line.starts_with("# ")
                || ["name = ", "url = ", "tags = "]
                    .iter()
                    .any(|k| line.starts_with(k)),
            "changed or unexpected line {line:?}"
        );
    }
    assert_eq!(kept.next(), None, "a line of the original file is gone");
}

fn import(config: &Path, fixture: &str) -> String {
    let out = Command::new(binary())
        .arg("import-opml")
        .arg(fixture_path(fixture))
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn importing_opml_lists_keeps_the_config_file_and_skips_what_is_there() {
    let dir = tempdir();
    let path = example_config(dir.path());
    let original = std::fs::read_to_string(&path).unwrap();
    let before = config::load(&path).unwrap();

    let printed = import(&path, "awesome-rss-feeds-Tech.opml");
    assert!(printed.contains("26 added, 0 skipped"), "{printed}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_only_sources_added(&original, &text);
    assert!(text.contains("\n# Ars Technica (imported from OPML)\n[[source]]\nname = \"ars-technica\"\nurl = \"http://feeds.arstechnica.com/arstechnica/index\"\ntags = [\"tech\"]\n"), "{text}");
    assert!(feedmux(&path, &["check"]).status.success());
    let after = config::load(&path).unwrap();
    assert_eq!(after.sources.len(), before.sources.len() + 26);
    let engadget = after
        .sources
        .iter()
        .find(|s| s.url.as_str() == "https://www.engadget.com/rss.xml")
        .unwrap();
    assert_eq!(
        engadget.name, "engadget-com",
        "a title that is a URL gives way to the host"
    );
    assert!(after.sources[before.sources.len()..]
        .iter()
        .all(|s| s.tags == ["tech"]));

    // Folders become tags; accents leave names.
    let printed = import(&path, "picofeed-google-reader.opml");
    let after = config::load(&path).unwrap();
    let science = after
        .sources
        .iter()
        .find(|s| s.url.as_str() == "http://sciencetonnante.wordpress.com/feed/")
        .unwrap_or_else(|| panic!("{printed}"));
    assert_eq!(science.name, "science-etonnante");
    assert_eq!(science.tags, ["culture"]);

    // The same list again: every feed is already a source; the file is not touched.
    let text = std::fs::read_to_string(&path).unwrap();
    let printed = import(&path, "awesome-rss-feeds-Tech.opml");
    assert_eq!(printed.matches("already a source").count(), 26, "{printed}");
    assert!(printed.contains("nothing to add"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn a_large_list_without_titles_gets_unique_valid_names() {
    let dir = tempdir();
    let path = dir.path().join("feedmux.toml");
    std::fs::write(
        &path,
        format!(
            "# my feeds\n[storage]\npath = {:?}\n",
            dir.path().join("store").display().to_string()
        ),
    )
    .unwrap();
    let printed = import(&path, "rsparser-SubsNoTitleAttributes.opml");
    let list =
        std::fs::read_to_string(fixture_path("rsparser-SubsNoTitleAttributes.opml")).unwrap();
    let urls: HashSet<String> = opml::parse(&list)
        .unwrap()
        .into_iter()
        .map(|f| f.url)
        .collect();
    let config = config::load(&path).unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert!(config.sources.len() > 200);
    assert_eq!(
        config.sources.len() + printed.matches("skipped").count() - 1,
        urls.len(),
        "each distinct URL is added once:\n{printed}"
    );
    let names: HashSet<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), config.sources.len(), "names are unique");
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .starts_with("# my feeds\n"));
}

#[test]
fn an_invalid_list_changes_nothing() {
    let dir = tempdir();
    let path = example_config(dir.path());
    let original = std::fs::read_to_string(&path).unwrap();
    let rss = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples/technews.rss");
    let out = Command::new(binary())
        .arg("import-opml")
        .arg(&rss)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an OPML file"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
}

/// `feedmux import-opml list.opml | head -0`: the reader of its output is gone before it
/// prints. The import still lands and the command does not panic.
#[test]
fn an_import_whose_output_reader_is_gone_still_lands() {
    let dir = tempdir();
    let path = example_config(dir.path());
    let before = config::load(&path).unwrap();
    let mut child = Command::new(binary())
        .arg("import-opml")
        .arg(fixture_path("awesome-rss-feeds-Tech.opml"))
        .arg("--config")
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end of its stdout at once: every write it makes fails (EPIPE).
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    let after = config::load(&path).unwrap();
    assert_eq!(after.sources.len(), before.sources.len() + 26);
}

/// A list from someone else may hold URLs into the user's own network: they are imported (a
/// feed on the LAN is a fair choice) but each is named in a warning, public ones are not.
#[test]
fn importing_sources_that_point_into_private_networks_warns_of_each() {
    let dir = tempdir();
    let path = example_config(dir.path());
    let list = dir.path().join("shared.opml");
    std::fs::write(
        &list,
        r#"<?xml version="1.0"?>
<opml version="2.0"><head><title>shared</title></head><body>
<outline text="Admin" xmlUrl="http://localhost:8080/admin/feed"/>
<outline text="Metadata" xmlUrl="http://169.254.169.254/latest/meta-data/"/>
<outline text="Router" xmlUrl="http://[::ffff:192.168.1.1]/rss"/>
<outline text="Lab news" xmlUrl="https://lab-news.example.com/feed.xml"/>
</body></opml>"#,
    )
    .unwrap();
    let out = Command::new(binary())
        .arg("import-opml")
        .arg(&list)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("4 added"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 3, "{stderr}");
    for (name, why) in [
        ("admin", "localhost is a local name"),
        ("metadata", "169.254.169.254 is a link-local address"),
        ("router", "::ffff:192.168.1.1 is a private address"),
    ] {
        assert!(
            warnings
                .iter()
                .any(|w| w.contains(&format!("source {name:?}")) && w.contains(why)),
            "no warning of {name} ({why}): {stderr}"
        );
    }
    assert!(!stderr.contains("lab-news"), "{stderr}");
}

/// (URL, tags) of each feed in an OPML list.
fn feeds_of(list: &str) -> Vec<(String, Vec<String>)> {
    opml::parse(list)
        .unwrap()
        .into_iter()
        .map(|f| (f.url, f.categories))
        .collect()
}

#[tokio::test]
async fn export_opml_and_get_opml_list_every_source_with_its_tags() {
    let dir = tempdir();
    let path = example_config(dir.path());
    let config = config::load(&path).unwrap();
    let expected: Vec<(String, Vec<String>)> = config
        .sources
        .iter()
        .map(|s| (s.url.to_string(), s.tags.clone()))
        .collect();
    assert_eq!(expected.len(), 23);

    let out = feedmux(&path, &["export-opml"]);
    assert!(out.status.success());
    let exported = String::from_utf8(out.stdout).unwrap();
    assert_eq!(feeds_of(&exported), expected);

    // The daemon serves the same list. Its sources are disabled so that nothing is fetched
    // from the internet; the list does not depend on that.
    let mut config = config;
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    for s in &mut config.sources {
        s.enabled = false;
    }
    let daemon = Served::with_config(config).await;
    let base = daemon.base.clone();
    let response = reqwest::get(format!("{base}/opml")).await.unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "text/x-opml; charset=utf-8"
    );
    let served = response.text().await.unwrap();
    assert_eq!(feeds_of(&served), expected);
    assert_eq!(served, exported);
    daemon.stop().await;
}
