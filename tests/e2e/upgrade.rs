//! A store written by an older feedmux is upgraded in place at start: tests/fixtures/store-v1
//! was written by the release before store version 2 (items as JSON), tests/fixtures/store-v2
//! by the one before version 3 (key terms in a sled tree), tests/fixtures/store-v3 by the one
//! before version 4 (item records in sled); see their README.md files.

use std::time::Duration;

use feedmux::publish::Format;
use feedmux::store::Store;

use crate::{config, copy_dir, poll, read_back, render, source, tempdir};

/// A copy of the fixture store `name` in a new directory, with the config it was written
/// with: sources `rss`, `atom` and `rdf` (tests/fixtures/formats) and the feed `all`.
fn copy_of_fixture(name: &str) -> (tempfile::TempDir, feedmux::config::Config) {
    let dir = tempdir();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    copy_dir(&fixtures.join(name), &dir.path().join("store"));
    let file = |name: &str| format!("file://{}", fixtures.join("formats").join(name).display());
    let tables = format!(
        "{}{}{}[[feed]]\nname = \"all\"\n",
        source("rss", &file("rss_2.0_spec_1.xml")),
        source("atom", &file("atom_spec_1.xml")),
        source("rdf", &file("rss_1.0_spec_1.xml")),
    );
    let config = config(dir.path(), &tables);
    (dir, config)
}

/// Opens the fixture's store and upgrades its 5 item records, once: a second upgrade finds
/// nothing to do.
fn upgrade_the_five_records(config: &feedmux::config::Config) -> Store {
    let store = Store::open(&config.storage.path).unwrap();
    assert!(store.items_to_compress().unwrap());
    assert_eq!(
        feedmux::daemon::upgrade_item_records(&store).unwrap(),
        Some(5)
    );
    assert!(!store.items_to_compress().unwrap());
    assert_eq!(feedmux::daemon::upgrade_item_records(&store).unwrap(), None);
    store
}

#[tokio::test]
async fn a_store_written_by_the_last_release_is_upgraded_in_place_and_reads_the_same() {
    let (_dir, config) = copy_of_fixture("store-v1");

    // Read as it is, before the upgrade: the old records are JSON.
    let before = read_back(&render(&config, "all", Format::Atom));
    assert_eq!(before.len(), 5, "{before:?}");
    let store = upgrade_the_five_records(&config);
    assert_eq!(store.item_count(), 5);
    drop(store);
    assert_eq!(read_back(&render(&config, "all", Format::Atom)), before);

    // Polling the same feeds again finds every item already stored.
    for (name, result) in poll(&config, &[]).await {
        let report = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(report.new_items, 0, "{name}");
    }
}

/// tests/fixtures/store-v2 was written by the release before store version 3, whose key terms
/// were a sled tree: the tree is dropped at the first open and every stored fingerprint is
/// found again under each of its key terms, from the index in memory.
#[tokio::test]
async fn a_version_2_store_finds_every_item_by_its_key_terms_from_memory() {
    let (_dir, config) = copy_of_fixture("store-v2");
    let before = read_back(&render(&config, "all", Format::Atom));
    assert_eq!(before.len(), 5, "{before:?}");

    let store = Store::open(&config.storage.path).unwrap();
    // The two undated entries, dated when they were polled; the others' dates are years
    // older than `dedup.index_age`, so they were matched by link only and have no fingerprint.
    let indexed = store.text_indexed_items().unwrap();
    assert_eq!(indexed.len(), 2);
    let mut terms = 0;
    for id in indexed {
        let record = store.fingerprint(id).unwrap().expect("its fingerprint");
        assert!(!record.keys.is_empty(), "{id} has no key terms");
        let window = Duration::from_secs(3600);
        for term in &record.keys {
            let found = store
                .candidates(&[*term], record.published, window, 32, "another source")
                .unwrap();
            assert!(
                found.iter().any(|(candidate, _)| *candidate == id),
                "{id} not found under its key term {term}"
            );
        }
        let mut distinct = record.keys.clone();
        distinct.sort_unstable();
        distinct.dedup();
        terms += distinct.len();
    }
    let counted = store
        .record_counts()
        .into_iter()
        .find(|(name, _)| *name == "key_terms")
        .map(|(_, n)| n);
    assert_eq!(counted, Some(terms));
    drop(store);
    assert_eq!(read_back(&render(&config, "all", Format::Atom)), before);
    for (name, result) in poll(&config, &[]).await {
        let report = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(report.new_items, 0, "{name}");
    }
}

/// tests/fixtures/store-v3 was written by the release before store version 4, whose item
/// records were sled values: the upgrade at start moves each into the record log
/// (`records/` in the store's directory), once, and the store reads the same items.
#[tokio::test]
async fn a_version_3_store_moves_its_records_into_the_record_log_and_reads_the_same() {
    let (dir, config) = copy_of_fixture("store-v3");
    let records = dir.path().join("store").join("records");
    assert!(!records.exists(), "the fixture has no record log yet");
    let before = read_back(&render(&config, "all", Format::Atom));
    assert_eq!(before.len(), 5, "{before:?}");
    drop(upgrade_the_five_records(&config));
    let logged: u64 = std::fs::read_dir(&records)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        logged > 5 * 100,
        "5 records in {logged} bytes of record log"
    );
    assert_eq!(read_back(&render(&config, "all", Format::Atom)), before);
    for (name, result) in poll(&config, &[]).await {
        let report = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(report.new_items, 0, "{name}");
    }
}
