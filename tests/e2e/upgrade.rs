//! A store written by an older feedmux is upgraded in place at start: tests/fixtures/store-v1
//! was written by the release before store version 2 (items as JSON; see its README.md).

use feedmux::publish::Format;
use feedmux::store::Store;

use crate::{config, copy_dir, poll, read_back, render, source, tempdir};

#[tokio::test]
async fn a_store_written_by_the_last_release_is_upgraded_in_place_and_reads_the_same() {
    let dir = tempdir();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    copy_dir(&fixtures.join("store-v1"), &dir.path().join("store"));
    let file = |name: &str| format!("file://{}", fixtures.join("formats").join(name).display());
    let tables = format!(
        "{}{}{}[[feed]]\nname = \"all\"\n",
        source("rss", &file("rss_2.0_spec_1.xml")),
        source("atom", &file("atom_spec_1.xml")),
        source("rdf", &file("rss_1.0_spec_1.xml")),
    );
    let config = config(dir.path(), &tables);

    // Read as it is, before the upgrade: the old records are JSON.
    let before = read_back(&render(&config, "all", Format::Atom));
    assert_eq!(before.len(), 5, "{before:?}");
    let store = Store::open(&config.storage.path).unwrap();
    assert!(store.items_to_compress().unwrap());
    assert_eq!(
        feedmux::daemon::upgrade_item_records(&store).unwrap(),
        Some(5)
    );
    assert!(!store.items_to_compress().unwrap());
    assert_eq!(feedmux::daemon::upgrade_item_records(&store).unwrap(), None);
    assert_eq!(store.item_count(), 5);
    drop(store);
    assert_eq!(read_back(&render(&config, "all", Format::Atom)), before);

    // Polling the same feeds again finds every item already stored.
    for (name, result) in poll(&config, &[]).await {
        let report = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(report.new_items, 0, "{name}");
    }
}
