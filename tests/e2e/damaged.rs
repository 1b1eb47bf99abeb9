//! A damaged store: the real daemon started on it refuses it in one line of stderr (the
//! store's path, what is wrong, what to do) and exits non-zero within seconds. It never
//! panics, hangs, or starts as if the store were new and empty.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::upstream::Upstream;
use crate::{binary, copy_dir, rss_feed, tempdir, RssItem};

/// An RSS feed of `n` entries.
fn rss(n: usize) -> String {
    let words = "with some words to store ".repeat(20);
    let items = (0..n).map(|k| {
        RssItem::new(
            format!("d-{k}"),
            format!("entry {k}"),
            format!("https://d.example/{k}"),
        )
        .with(&format!(
            "<description>Entry {k} of a store about to be damaged, {words}</description>"
        ))
    });
    rss_feed("d", "https://d.example/", items)
}

/// The files of the store at `store` whose names start with `prefix` (`snap.` for sled's
/// snapshots).
fn files_starting(store: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect()
}

/// Bytes that are no store: the same pattern over and over.
fn garbage(len: usize) -> Vec<u8> {
    (0..len).map(|k| (k * 7 + 13) as u8).collect()
}

/// The ways a store is damaged, each done to a copy of a good store. sled itself reads a log
/// cut short, or overwritten from some point on, up to the damage and opens what it holds
/// there without a word; feedmux's write mark (the count of polls flushed, kept beside the
/// log) tells. (A log cut to half of its length loses nothing here: sled's file runs to the
/// end of its 512 KiB segment, and this store's data ends well before.)
const DAMAGES: &[&str] = &[
    "log emptied",
    "garbage over the whole log",
    "conf deleted and log emptied",
    "snapshot garbage",
    "log cut before the last poll",
    "garbage over the last poll's writes",
];

/// `last_poll_at`: the log's length before the last poll that wrote items.
fn damage(store: &Path, how: &str, last_poll_at: u64) {
    let log = store.join("db");
    let len = std::fs::metadata(&log).unwrap().len();
    let write_at = |at: u64, bytes: &[u8]| {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
        file.write_all_at(bytes, at).unwrap();
    };
    match how {
        "log emptied" => std::fs::write(&log, b"").unwrap(),
        "garbage over the whole log" => write_at(0, &garbage(len as usize)),
        "conf deleted and log emptied" => {
            std::fs::remove_file(store.join("conf")).unwrap();
            std::fs::write(&log, b"").unwrap();
        }
        "log cut before the last poll" => cut_log(&log, last_poll_at),
        "garbage over the last poll's writes" => {
            write_at(last_poll_at, &garbage((len - last_poll_at) as usize))
        }
        "snapshot garbage" => {
            let mut snapshots = files_starting(store, "snap.");
            if snapshots.is_empty() {
                // A store this small has none yet: sled reads the newest it finds.
                snapshots.push(store.join("snap.00000000000F0000"));
            }
            for snapshot in snapshots {
                let len = std::fs::metadata(&snapshot).map_or(0, |m| m.len()).max(64);
                std::fs::write(&snapshot, garbage(len as usize)).unwrap();
            }
        }
        other => panic!("no such damage: {other}"),
    }
}

fn cut_log(log: &Path, len: u64) {
    let file = std::fs::OpenOptions::new().write(true).open(log).unwrap();
    file.set_len(len).unwrap();
}

/// `feedmux poll` on the config in `dir`, which must succeed.
async fn poll(dir: &Path) {
    let config = dir.join("feedmux.toml");
    let polled = tokio::task::spawn_blocking(move || {
        Command::new(binary())
            .args(["poll", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(polled.status.success(), "{polled:?}");
}

/// `feedmux run` on the config in `dir`: its exit status and stderr, or a panic when it has
/// not exited within `limit` (it hung, or started on the damaged store).
fn run_until_exit(dir: &Path, limit: Duration) -> (std::process::ExitStatus, String, Duration) {
    let stderr = dir.join("stderr");
    let mut child = Command::new(binary())
        .args(["run", "--config"])
        .arg(dir.join("feedmux.toml"))
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let took = started.elapsed();
            return (status, std::fs::read_to_string(&stderr).unwrap(), took);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "feedmux still running after {limit:?}:\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A store written by the real binary (`feedmux poll`), damaged in several ways: each time `feedmux run` exits
/// non-zero within seconds, with one line naming the store's path, saying it is damaged and
/// what to do, and no panic. The good store still opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_store_is_refused_in_one_clear_line_never_a_panic() {
    let upstream = Upstream::start().await;
    upstream.put(
        "/d.xml",
        &[("content-type", "application/rss+xml")],
        rss(40),
    );
    let good = tempdir();
    let tables = crate::source("d", &upstream.url("/d.xml"));
    crate::config(good.path(), &tables);
    poll(good.path()).await;
    let good_store = good.path().join("store");
    let last_poll_at = std::fs::metadata(good_store.join("db")).unwrap().len();
    // A second poll with 40 new entries: the one a cut log loses.
    upstream.put(
        "/d.xml",
        &[("content-type", "application/rss+xml")],
        rss(80),
    );
    poll(good.path()).await;

    for how in DAMAGES {
        let dir = tempdir();
        crate::config(dir.path(), &tables);
        let store = dir.path().join("store");
        copy_dir(&good_store, &store);
        damage(&store, how, last_poll_at);
        let dir_path = dir.path().to_owned();
        let (status, stderr, took) =
            tokio::task::spawn_blocking(move || run_until_exit(&dir_path, Duration::from_secs(20)))
                .await
                .unwrap();
        assert!(!status.success(), "{how}: {status}\n{stderr}");
        assert!(
            !stderr.contains("panicked"),
            "{how}: a panic shown:\n{stderr}"
        );
        let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("damaged")).collect();
        assert_eq!(lines.len(), 1, "{how}: not one line saying so:\n{stderr}");
        let line = lines[0];
        assert!(
            line.contains(&store.display().to_string()),
            "{how}: the path not named: {line}"
        );
        assert!(
            line.contains("restore it from a backup") && line.contains("move the directory away"),
            "{how}: what to do not said: {line}"
        );
        // Nothing was created in its place: the damaged files are as they were left.
        assert!(!stderr.contains("serving output feeds"), "{how}:\n{stderr}");
        println!("{how}: refused in {took:?}: {line}");
        if line.contains("feedmux.mark") {
            // Deleting the mark, as the line says, opens what the log still holds: the
            // first poll's 40 entries.
            std::fs::remove_file(store.join("feedmux.mark")).unwrap();
            let sources = Command::new(binary())
                .args(["sources", "--config"])
                .arg(dir.path().join("feedmux.toml"))
                .output()
                .unwrap();
            let table = String::from_utf8_lossy(&sources.stdout);
            assert!(sources.status.success(), "{how}: {sources:?}");
            assert!(
                table
                    .lines()
                    .any(|l| l.starts_with("d ") && l.contains(" 40 ")),
                "{how}: not the first poll's 40 entries:\n{table}"
            );
        }
    }
}
