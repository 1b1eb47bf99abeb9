//! `file:` sources: only regular files are read, under the size limit of `[poll]`; a device
//! (`/dev/zero` never ends), a FIFO (waits for a writer forever), a directory or a socket
//! fails at once with an error naming the path, and the other sources are polled as usual.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use feedmux::fetch::FetchError;
use feedmux::refresh::PollError;

use crate::served::Served;
use crate::{config, poll, rss_feed, source, tempdir, titles, RssItem};

fn rss(prefix: &str, n: usize) -> String {
    let items = (0..n).map(|i| {
        RssItem::new(
            format!("{prefix}-{i}"),
            format!("{prefix} item {i}"),
            format!("https://files.example/{prefix}/{i}"),
        )
    });
    rss_feed(prefix, "https://files.example/", items)
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// A FIFO (named pipe) at `dir/name`, made by mkfifo(1).
fn fifo(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let status = Command::new("mkfifo").arg(&path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
    path
}

/// A healthy `file:` source, one for each of `bad` (name, path), and the feed `all`.
fn tables(dir: &Path, bad: &[(&str, &Path)], poll: &str) -> String {
    let healthy = dir.join("healthy.xml");
    std::fs::write(&healthy, rss("healthy", 3)).unwrap();
    // `poll`: more of `[poll]` (the callers add the table itself when this is empty).
    let mut text = if poll.is_empty() {
        String::new()
    } else {
        format!("[poll]\nper_host_interval = \"0s\"\n{poll}\n")
    };
    text.push_str(&source("healthy", &file_url(&healthy)));
    for (name, path) in bad {
        text.push_str(&source(name, &file_url(path)));
    }
    text.push_str("[[feed]]\nname = \"all\"\n");
    text
}

#[tokio::test]
async fn devices_fifos_and_directories_fail_at_once_and_other_sources_are_polled() {
    let dir = tempdir();
    let pipe = fifo(dir.path(), "pipe.xml");
    let folder = dir.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    let socket_path = dir.path().join("feed.sock");
    let _socket = std::os::unix::net::UnixListener::bind(&socket_path).unwrap();
    let bad: [(&str, &Path, &str); 4] = [
        ("zero", Path::new("/dev/zero"), "character device"),
        ("pipe", &pipe, "FIFO (named pipe)"),
        ("folder", &folder, "directory"),
        ("socket", &socket_path, "socket"),
    ];
    let list: Vec<(&str, &Path)> = bad.iter().map(|(n, p, _)| (*n, *p)).collect();
    let config = config(dir.path(), &tables(dir.path(), &list, ""));
    // Bounded: before, /dev/zero was read until memory ran out and the FIFO forever.
    let results = tokio::time::timeout(Duration::from_secs(20), poll(&config, &[]))
        .await
        .expect("every file: source is done with at once");
    for (name, path, kind) in bad {
        let (_, result) = results.iter().find(|(n, _)| n == name).unwrap();
        match result {
            Err(PollError::Fetch(e @ FetchError::NotAFile { path: p, kind: k })) => {
                assert_eq!((p.as_path(), *k), (path, kind), "{name}");
                assert_eq!(
                    e.to_string(),
                    format!(
                        "cannot read {}: it is a {kind}, and a file: source must be a regular file",
                        path.display()
                    )
                );
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    let (_, healthy) = results.iter().find(|(n, _)| n == "healthy").unwrap();
    assert!(healthy.is_ok(), "{healthy:?}");
    assert_eq!(titles(&config, "all").len(), 3);
}

#[tokio::test]
async fn a_regular_file_over_the_size_limit_fails_with_the_size_error() {
    let dir = tempdir();
    let big = dir.path().join("big.xml");
    std::fs::write(&big, rss("big", 100)).unwrap();
    assert!(std::fs::metadata(&big).unwrap().len() > 2048);
    let config = config(
        dir.path(),
        &tables(dir.path(), &[("big", &big)], "max_body_size = \"2KiB\""),
    );
    let results = poll(&config, &[]).await;
    let (_, big) = results.iter().find(|(n, _)| n == "big").unwrap();
    match big {
        Err(PollError::Fetch(e @ FetchError::TooLarge { limit: 2048 })) => assert_eq!(
            e.to_string(),
            "body is larger than the limit of 2048 bytes (after decompression)"
        ),
        other => panic!("{other:?}"),
    }
    let (_, healthy) = results.iter().find(|(n, _)| n == "healthy").unwrap();
    assert!(healthy.is_ok(), "{healthy:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_with_a_fifo_and_dev_zero_as_sources_serves_the_others_and_stops() {
    let dir = tempdir();
    let pipe = fifo(dir.path(), "pipe.xml");
    let served = Served::start(
        dir.path(),
        &tables(
            dir.path(),
            &[("zero", Path::new("/dev/zero")), ("pipe", &pipe)],
            "",
        ),
    )
    .await;
    served.wait_for("all", 3).await;
    let http = reqwest::Client::new();
    let mut errors = Vec::new();
    for _ in 0..200 {
        let sources = crate::api_sources(&http, &served.base).await;
        errors = sources
            .iter()
            .filter_map(|s| s["state"]["last_error"].as_str().map(str::to_owned))
            .collect();
        if errors.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    errors.sort();
    assert_eq!(
        errors,
        [
            "fetch failed: cannot read /dev/zero: it is a character device, and a file: source must be a regular file".to_owned(),
            format!("fetch failed: cannot read {}: it is a FIFO (named pipe), and a file: source must be a regular file", pipe.display()),
        ]
    );
    // Nothing waits on the FIFO: the daemon stops within `stop`'s bound.
    served.stop().await;
}
