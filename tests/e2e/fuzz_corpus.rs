//! The fuzz targets' seed corpora and every crash the fuzzer found, replayed through the same
//! target functions (`fuzz/targets.rs`) as ordinary tests: CI checks on stable Rust what the
//! fuzzer checks, and a fixed crash stays fixed. `fuzz/corpus/<target>/` holds the seeds,
//! `fuzz/regressions/<target>/` the inputs that once crashed.

#[path = "../../fuzz/targets.rs"]
mod targets;

use std::cell::RefCell;
use std::path::Path;
use std::sync::Once;

thread_local! {
    /// While a replay runs on this thread: every panic seen, even one caught inside feedmux
    /// (`parse_feed` catches the parser's), as the fuzzer, which aborts on any, would see it.
    static PANICS: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// Installs (once) a panic hook that records panics on threads that are replaying, then
/// calls the previous hook.
fn watch_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            // feed-rs 3.0's author bug: known, caught, and tolerated by the fuzz target too
            // (see fuzz/fuzz_targets/ingest.rs and an_author_that_panics_feed_rs_fails_only_its_feed).
            let known = location.contains("feed-rs") && location.contains("parser/util/mod.rs");
            PANICS.with(|p| {
                if let Some(list) = p.borrow_mut().as_mut() {
                    if !known {
                        list.push(location.clone());
                    }
                }
            });
            previous(info);
        }));
    });
}

/// Runs `target` on every file of the target's seed corpus and regressions; returns how many.
/// A file fails when the target panics, or when anything panics inside it, caught or not.
fn replay(name: &str, target: fn(&[u8])) -> usize {
    watch_panics();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut count = 0;
    for dir in ["corpus", "regressions"] {
        let Ok(files) = std::fs::read_dir(root.join(dir).join(name)) else {
            continue;
        };
        let mut files: Vec<_> = files.map(|f| f.unwrap().path()).collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap();
            PANICS.with(|p| *p.borrow_mut() = Some(Vec::new()));
            let outcome = std::panic::catch_unwind(|| target(&data));
            let panics = PANICS.with(|p| p.borrow_mut().take()).unwrap_or_default();
            assert!(outcome.is_ok(), "{name}: {} fails", file.display());
            assert!(
                panics.is_empty(),
                "{name}: {} panics inside (caught) at {panics:?}",
                file.display()
            );
            count += 1;
        }
    }
    count
}

#[test]
fn ingest_corpus_parses_or_fails_cleanly() {
    assert!(replay("ingest", targets::ingest) >= 20);
}

#[test]
fn config_corpus_is_a_config_or_located_errors() {
    assert!(replay("config", targets::config) >= 3);
}

#[test]
fn canonical_url_corpus_is_idempotent() {
    assert!(replay("canonical_url", targets::canonical) >= 5);
}

#[test]
fn render_corpus_parses_back() {
    assert!(replay("render", targets::render) >= 3);
}

/// feed-rs 3.0 panics on an author (`<author>`, `<managingEditor>`, `<webMaster>`) whose email
/// follows a multi-byte character (found by fuzzing the ingest path): that one feed fails with
/// a clear error instead of taking its poll down.
#[test]
fn an_author_that_panics_feed_rs_fails_only_its_feed() {
    let body = "<rss version=\"2.0\"><channel><title>t</title><webMaster>webm†††††master@example.com</webMaster>\
                <item><title>x</title><link>https://a.example/1</link></item></channel></rss>";
    let base = url::Url::parse("https://a.example/feed").unwrap();
    let result = feedmux::parse::parse_feed(body.as_bytes(), None, &base, chrono::Utc::now());
    match result {
        Err(feedmux::parse::ParseError::Malformed(message)) => {
            assert!(message.contains("gave up"), "{message}")
        }
        other => panic!("expected a malformed-feed error, got {other:?}"),
    }
}
