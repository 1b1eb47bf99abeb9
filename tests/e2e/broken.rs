//! Feeds as publishers actually send them: the fixture set in tests/fixtures/broken, each feed
//! broken in one way (a bare `&`, a PHP warning before the root, GBK under a UTF-8 label, a
//! document cut off mid-item...), read by `parse_feed` into the titles a careful reader sees.
//! What each feed must give is in tests/fixtures/broken/expected.json.

use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};
use feedmux::parse::{parse_feed, ParsedFeed};
use serde::Deserialize;
use url::Url;

use crate::fixture;

/// tests/fixtures/broken/expected.json.
#[derive(Deserialize)]
struct Expected {
    default_url: String,
    now: DateTime<Utc>,
    feeds: Vec<Feed>,
}

/// What one feed of the set must give.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Feed {
    file: String,
    breakage: String,
    titles: Vec<String>,
    /// `Some(true)`: the body had to be mended; `Some(false)`: it is read as it is.
    #[serde(default)]
    recovered: Option<bool>,
    #[serde(default)]
    recovered_contains: Option<String>,
    /// Where the feed is fetched from, when not `default_url` (its domain hints at an encoding).
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    urls: Option<Vec<String>>,
    #[serde(default)]
    authors: Option<Vec<Vec<String>>>,
    #[serde(default)]
    published: Option<Vec<DateTime<Utc>>>,
    /// A well-formed feed, there to show that nothing is mended when nothing is broken.
    #[serde(default)]
    control: bool,
    #[serde(default)]
    note: Option<String>,
}

const DIR: &str = "tests/fixtures/broken";

fn expected() -> Expected {
    let bytes = fixture("broken/expected.json");
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{DIR}/expected.json: {e}"))
}

/// A title as it is seen: a no-break space looks like a space.
fn seen(title: &str) -> String {
    title.replace('\u{A0}', " ")
}

/// How `parsed` differs from what `feed` expects, one line per difference.
fn differences(feed: &Feed, parsed: &ParsedFeed) -> Vec<String> {
    let mut found = Vec::new();
    let titles: Vec<String> = parsed.entries.iter().map(|e| seen(&e.title)).collect();
    let wanted: Vec<String> = feed.titles.iter().map(|t| seen(t)).collect();
    if titles != wanted {
        found.push(format!(
            "titles: expected {wanted:?}\n            got {titles:?}"
        ));
    }
    match feed.recovered {
        Some(true) if parsed.recovered.is_empty() => {
            found.push("recovered: expected a reason, got none".to_owned())
        }
        Some(false) if !parsed.recovered.is_empty() => found.push(format!(
            "recovered: expected none, got {:?}",
            parsed.recovered
        )),
        _ => {}
    }
    if let Some(reason) = &feed.recovered_contains {
        if !parsed.recovered.iter().any(|r| r.contains(reason.as_str())) {
            found.push(format!(
                "recovered: expected a reason containing {reason:?}, got {:?}",
                parsed.recovered
            ));
        }
    }
    if let Some(urls) = &feed.urls {
        let got: Vec<Option<&str>> = parsed.entries.iter().map(|e| e.url.as_deref()).collect();
        let wanted: Vec<Option<&str>> = urls.iter().map(|u| Some(u.as_str())).collect();
        if got != wanted {
            found.push(format!("urls: expected {wanted:?}\n          got {got:?}"));
        }
    }
    if let Some(authors) = &feed.authors {
        let got: Vec<&Vec<String>> = parsed.entries.iter().map(|e| &e.authors).collect();
        let wanted: Vec<&Vec<String>> = authors.iter().collect();
        if got != wanted {
            found.push(format!(
                "authors: expected {wanted:?}\n             got {got:?}"
            ));
        }
    }
    if let Some(published) = &feed.published {
        let got: Vec<Option<DateTime<Utc>>> = parsed.entries.iter().map(|e| e.published).collect();
        let wanted: Vec<Option<DateTime<Utc>>> = published.iter().copied().map(Some).collect();
        if got != wanted {
            found.push(format!(
                "published: expected {wanted:?}\n               got {got:?}"
            ));
        }
    }
    found
}

#[test]
fn every_broken_feed_in_the_fixture_set_gives_its_titles() {
    let expected = expected();
    let default_url = Url::parse(&expected.default_url).unwrap();
    let mut report = String::new();
    let mut failed = 0;
    for feed in &expected.feeds {
        let body = fixture(&format!("broken/{}", feed.file));
        let base = match &feed.url {
            Some(url) => Url::parse(url).unwrap(),
            None => default_url.clone(),
        };
        let found = match parse_feed(&body, None, &base, expected.now) {
            Ok(parsed) => {
                let mut found = differences(feed, &parsed);
                if !found.is_empty() {
                    found.push(format!("(recovered: {:?})", parsed.recovered));
                }
                found
            }
            Err(e) => vec![format!(
                "titles: expected {:?}\n            got an error: {e}",
                feed.titles
            )],
        };
        if found.is_empty() {
            continue;
        }
        failed += 1;
        let _ = writeln!(report, "\n{} ({})", feed.file, feed.breakage);
        if let Some(note) = &feed.note {
            let _ = writeln!(report, "  note: {note}");
        }
        for line in found {
            let _ = writeln!(report, "  {line}");
        }
    }
    assert!(
        failed == 0,
        "{failed} of {} feeds in {DIR} are not read as a reader sees them:\n{report}",
        expected.feeds.len()
    );
}

#[test]
fn the_fixture_set_lists_every_file_and_holds_at_least_40_broken_feeds() {
    let expected = expected();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(DIR);
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".xml"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = expected.feeds.iter().map(|f| f.file.clone()).collect();
    listed.sort();
    assert_eq!(
        listed, on_disk,
        "expected.json and the files of {DIR} differ"
    );
    let broken = expected.feeds.iter().filter(|f| !f.control).count();
    assert!(broken >= 40, "only {broken} broken feeds in {DIR}");
    for feed in expected.feeds.iter().filter(|f| f.control) {
        assert_eq!(
            feed.recovered,
            Some(false),
            "{}: a control feed must be read as it is",
            feed.file
        );
    }
}
