//! The sled engine's tests: polls written, read back, dropped and upgraded through the
//! engine's traits, on stores in temporary directories.

use super::*;
use crate::dedup::fingerprint::Fingerprint;
use crate::dedup::record::ItemWrite;
use prune::{Moved, Moving};

fn indexed(n: u8, source: &str, at: DateTime<Utc>) -> IndexedFingerprint {
    IndexedFingerprint {
        id: ItemId([n; 16]),
        record: FingerprintRecord {
            source: source.into(),
            published: at,
            fingerprint: Fingerprint::new("t", ""),
            keys: vec![7],
        },
        replaces: None,
    }
}

fn written(
    n: u8,
    source: &str,
    at: DateTime<Utc>,
    keys: Vec<u32>,
) -> (ItemWrite, IndexedFingerprint) {
    let id = ItemId([
        n,
        n.wrapping_mul(7),
        1,
        2,
        3,
        4,
        5,
        6,
        7,
        8,
        9,
        10,
        11,
        12,
        13,
        14,
    ]);
    let item = plain_item(id, source, &format!("g{n}"), &format!("item {n}"), at);
    let mut indexed = indexed(n, source, at);
    indexed.id = id;
    indexed.record.keys = keys;
    let write = ItemWrite {
        item,
        previous: None,
        link: None,
    };
    (write, indexed)
}

/// An item `id` of `source` with the GUID `guid` and the title `title`, published at `at`,
/// its own story, and nothing else.
fn plain_item(id: ItemId, source: &str, guid: &str, title: &str, at: DateTime<Utc>) -> Item {
    Item {
        id,
        source: source.into(),
        guid: guid.into(),
        url: None,
        canonical_url: None,
        title: title.into(),
        summary_html: None,
        content_html: None,
        authors: vec![],
        categories: vec![],
        enclosures: vec![],
        published: at,
        updated: None,
        first_seen: at,
        modified: at,
        content_hash: 0,
        story: id,
        sanitised: 0,
    }
}

/// Writes new items `(n, published, key terms)` of `source` as one poll; returns the plan.
fn apply_new(
    store: &SledEngine,
    source: &str,
    items: impl Iterator<Item = (u8, DateTime<Utc>, Vec<u32>)>,
) -> IngestPlan {
    let mut plan = IngestPlan::default();
    for (n, at, keys) in items {
        let (write, indexed) = written(n, source, at, keys);
        plan.writes.push(write);
        plan.fingerprints.push(indexed);
    }
    apply(store, source, &plan);
    plan
}

/// Writes `plan` as a poll of `source` that keeps the default state.
fn apply(store: &SledEngine, source: &str, plan: &IngestPlan) {
    let stats = store.ingest_guard();
    store
        .apply_poll(source, plan, &[], &[], &SourceState::default(), stats)
        .expect("apply");
}

/// An item of `n` with a title and summary of news-like words.
fn news_item(n: u32) -> Item {
    let words = [
        "model",
        "chips",
        "release",
        "benchmark",
        "open weights",
        "模型",
        "发布",
        "芯片",
        "融资",
        "agents",
    ];
    let pick =
        |k: u32| words[(n.wrapping_mul(2654435761).rotate_left(k) % words.len() as u32) as usize];
    let mut id = [0u8; 16];
    id[..4].copy_from_slice(&n.to_le_bytes());
    id[4] = 0xD1;
    let id = ItemId(id);
    let link = format!("https://news.example/{n}");
    Item {
        url: Some(link.clone()),
        title: format!("{} {} {} number {n}", pick(1), pick(5), pick(9)),
        summary_html: Some(format!(
            "<p>The <b>{}</b> of {} was announced today, {} and {} as reported, 第{n}期: {} {}.</p>",
            pick(2), pick(3), pick(4), pick(6), pick(7), pick(8)
        )),
        content_hash: u64::from(n),
        ..plain_item(id, "news", &link, "", Utc::now())
    }
}

/// Writes the new items `from..to` of [`news_item`] as one poll of the source `news`.
fn poll_news(store: &SledEngine, from: u32, to: u32) {
    let mut plan = IngestPlan::default();
    for n in from..to {
        plan.writes.push(ItemWrite {
            item: news_item(n),
            previous: None,
            link: None,
        });
    }
    apply(store, "news", &plan);
}

/// Once the store holds `DICTIONARY_AFTER` items it trains its item dictionary: records
/// written after it are compressed with it (format 3) and smaller than without, and every
/// item reads back the same, also once the store is opened again.
#[test]
fn a_store_trains_its_item_dictionary_and_reads_every_item_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s");
    let store = SledEngine::open(&path, DEFAULT_CACHE_BYTES).expect("store");
    let after = item_record::DICTIONARY_AFTER as u32;
    poll_news(&store, 0, after - 1);
    assert_eq!(
        store.trees().unwrap().dictionary(),
        None,
        "trained too early"
    );
    poll_news(&store, after - 1, after + 200);
    assert!(
        store.trees().unwrap().dictionary().is_some(),
        "no dictionary"
    );
    poll_news(&store, after + 200, after + 300);
    let trees = store.trees().unwrap();
    for n in after + 200..after + 300 {
        let bytes = trees.record(news_item(n).id).unwrap().expect("stored");
        assert_eq!(bytes[0], 3, "item {n} not compressed with the dictionary");
        assert!(bytes.len() < item_record::encode(&news_item(n), None).len());
    }
    drop(trees);
    let reads_back = |store: &SledEngine| {
        for n in 0..after + 300 {
            let item = store.item(news_item(n).id).unwrap().expect("stored");
            assert_eq!(item.title, news_item(n).title);
            assert_eq!(item.summary_html, news_item(n).summary_html);
        }
    };
    reads_back(&store);
    drop(store);
    let store = SledEngine::open(&path, DEFAULT_CACHE_BYTES).expect("reopen");
    assert!(store.trees().unwrap().dictionary().is_some());
    reads_back(&store);
    let first = store.trees().unwrap().record(news_item(0).id).unwrap();
    assert_eq!(
        first.map(|b| b[0]),
        Some(2),
        "written before the dictionary"
    );
    drop(store);

    // Compacting compresses the records written before it with the dictionary too.
    compact(&path).expect("compact");
    let store = SledEngine::open(&path, DEFAULT_CACHE_BYTES).expect("compacted");
    let trees = store.trees().unwrap();
    for entry in trees.items.iter() {
        let (key, value) = entry.unwrap();
        let bytes = trees.record_of(&value).unwrap().expect("its record");
        assert_eq!(bytes[0], 3, "{key:?} not compressed with the dictionary");
    }
    drop(trees);
    reads_back(&store);
}

/// Items published more than `dedup.index_age` ago are matched by link only: a poll does
/// not index them, dropping the index of items that reach the age removes their entries
/// and nothing else, a reopened store still indexes nothing older than that, and a longer
/// age lets polls index older items again.
#[test]
fn the_text_index_reaches_back_only_to_its_age() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s");
    let store = SledEngine::open(&path, DEFAULT_CACHE_BYTES).expect("store");
    let now = Utc::now();
    let days = chrono::Duration::days;
    let window = std::time::Duration::from_secs(72 * 3600);
    // Items 0-4 published 40 days ago, 5-9 20 days ago, 10-14 a day ago; item n's only
    // key term is 1000 + n.
    let age_of = |n: u8| days([40, 20, 1][usize::from(n / 5)]);
    let mut plan = IngestPlan {
        index_from: Some(now - days(30)),
        ..IngestPlan::default()
    };
    let mut ids = Vec::new();
    for n in 0..15u8 {
        let (write, indexed) = written(n, "a", now - age_of(n), vec![1000 + u32::from(n)]);
        ids.push(write.item.id);
        plan.writes.push(write);
        plan.fingerprints.push(indexed);
    }
    apply(&store, "a", &plan);
    let found = |store: &SledEngine, n: u8| {
        let hits = store
            .candidates(&[1000 + u32::from(n)], now - age_of(n), window, 32, "b")
            .expect("candidates");
        hits.iter().any(|(id, _)| *id == ids[usize::from(n)])
    };
    let count = |store: &SledEngine, tree: &str| {
        store
            .record_counts()
            .into_iter()
            .find(|(name, _)| *name == tree)
            .map(|(_, n)| n)
    };
    assert_eq!(count(&store, "fingerprints"), Some(10));
    assert_eq!(count(&store, "key_terms"), Some(10));
    assert!(!found(&store, 2) && found(&store, 7) && found(&store, 12));

    // Ten days later than the poll's cut, the 20-day-old items go too.
    assert_eq!(
        store.drop_text_index_before(now - days(10)).expect("drop"),
        5
    );
    assert_eq!(count(&store, "fingerprints"), Some(5));
    assert_eq!(count(&store, "key_terms"), Some(5));
    assert_eq!(count(&store, "items"), Some(15), "items stay");
    assert!(!found(&store, 7) && found(&store, 12));
    assert!(store.fingerprint(ids[7]).expect("read").is_none());
    assert_eq!(
        store.drop_text_index_before(now - days(10)).expect("again"),
        0
    );

    // After a reopen, a poll planned without an age still indexes nothing older.
    drop(store);
    let store = SledEngine::open(&path, DEFAULT_CACHE_BYTES).expect("reopen");
    apply_new(
        &store,
        "c",
        [
            (20, now - days(15), vec![1020]),
            (21, now - days(5), vec![1021]),
        ]
        .into_iter(),
    );
    assert_eq!(count(&store, "fingerprints"), Some(6));
    assert_eq!(count(&store, "items"), Some(17));

    // The age made longer (60 days): items of 40 days are indexed again when polled.
    assert_eq!(
        store.drop_text_index_before(now - days(60)).expect("drop"),
        0
    );
    apply_new(&store, "c", [(22, now - days(40), vec![1022])].into_iter());
    assert_eq!(count(&store, "fingerprints"), Some(7));
}

#[test]
fn a_checkpoint_reopens_only_when_due_and_unused_and_keeps_everything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledEngine::open(&dir.path().join("s"), DEFAULT_CACHE_BYTES).expect("store");
    let now = Utc::now();
    let plan = apply_new(&store, "a", (0..10).map(|n| (n, now, vec![u32::from(n)])));
    assert!(
        !store.checkpoint_if_due().expect("checkpoint"),
        "not due yet"
    );
    let in_use = store.trees().expect("open");
    assert!(!store.checkpoint_after(1).expect("checkpoint"), "in use");
    drop(in_use);
    assert!(
        store.checkpoint_after(1).expect("checkpoint"),
        "due and unused"
    );
    assert!(
        !store.checkpoint_after(1).expect("checkpoint"),
        "the count starts again"
    );
    assert_eq!(store.item_count(), 10);
    for write in &plan.writes {
        assert!(store.item(write.item.id).expect("read").is_some());
    }
}

/// A source's quota deletes that source's oldest items, with tombstones, and no other
/// source's.
#[test]
fn a_source_over_its_quota_loses_its_own_oldest_items_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledEngine::open(&dir.path().join("s"), DEFAULT_CACHE_BYTES).expect("store");
    let now = Utc::now();
    let hours_ago = |n: u8| now - chrono::Duration::hours(i64::from(n));
    let flood = apply_new(&store, "flood", (0..10).map(|n| (n, hours_ago(n), vec![])));
    apply_new(
        &store,
        "quiet",
        (20..23).map(|n| (n, hours_ago(n + 10), vec![])),
    );
    assert_eq!(store.prune_source("flood", 4, now).expect("prune"), 6);
    let titles = |source: &str| -> Vec<String> {
        let items = store.source_items(source, 100).expect("items");
        items.into_iter().map(|i| i.title).collect()
    };
    assert_eq!(titles("flood"), ["item 0", "item 1", "item 2", "item 3"]);
    assert_eq!(titles("quiet"), ["item 20", "item 21", "item 22"]);
    assert_eq!(store.source_state("flood").expect("state").item_count, 4);
    assert_eq!(store.item_count(), 7);
    let oldest = flood.writes[9].item.id;
    assert!(store.is_pruned("flood", oldest).expect("tombstone"));
    assert_eq!(store.prune_source("flood", 4, now).expect("prune"), 0);
}

/// Source states are kept in memory, but every write reaches sled: a store opened again
/// reads what was written, and a state-only write keeps the count that a poll and a
/// prune set, not the one in the state its caller read before them.
#[test]
fn source_states_kept_in_memory_are_written_through() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s");
    let store = SledEngine::open(&path, DEFAULT_CACHE_BYTES).expect("store");
    let now = Utc::now();
    let read_before_poll = store.source_state("a").expect("state");
    let hours_ago = |n: u8| now - chrono::Duration::hours(i64::from(n));
    apply_new(&store, "a", (0..4).map(|n| (n, hours_ago(n), vec![])));
    assert_eq!(store.source_state("a").expect("state").item_count, 4);
    let lost = store.prune(None, Some(3), now).expect("prune");
    assert_eq!(lost.get("a"), Some(&1));
    let polled = SourceState {
        etag: Some("\"v2\"".into()),
        last_poll: Some(now),
        ..read_before_poll
    };
    store.put_source_state("a", polled.clone()).expect("put");
    let expected = SourceState {
        item_count: 3,
        ..polled
    };
    assert_eq!(store.source_state("a").expect("state"), expected);
    store.flush().expect("flush");
    drop(store);
    let again = SledEngine::open(&path, DEFAULT_CACHE_BYTES).expect("store opened again");
    assert_eq!(again.source_state("a").expect("state"), expected);
    assert_eq!(
        again.source_state("b").expect("state"),
        SourceState::default()
    );
    // All at once, as pages and renders read them: the same states, none for "b".
    let all = again.source_states().expect("states");
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all.get("a"), Some(&expected));
}

/// Polls of different sources write their states side by side, with readers beside
/// them: each source's last write is what memory and, after a reopen, sled hold.
#[test]
fn states_written_side_by_side_each_keep_their_last_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s");
    let store = SledEngine::open(&path, DEFAULT_CACHE_BYTES).expect("store");
    let state_of = |round: u32| SourceState {
        consecutive_failures: round,
        ..SourceState::default()
    };
    std::thread::scope(|scope| {
        for t in 0..4 {
            let store = &store;
            scope.spawn(move || {
                for round in 0..200 {
                    for source in [format!("own-{t}"), "shared".to_owned()] {
                        store
                            .put_source_state(&source, state_of(round))
                            .expect("put");
                        store.source_state(&source).expect("read");
                    }
                }
            });
        }
    });
    let expect_all = |store: &SledEngine| {
        for t in 0..4 {
            let state = store.source_state(&format!("own-{t}")).expect("state");
            assert_eq!(state, state_of(199), "own-{t}");
        }
        assert_eq!(store.source_state("shared").expect("state"), state_of(199));
    };
    expect_all(&store);
    store.flush().expect("flush");
    drop(store);
    expect_all(&SledEngine::open(&path, DEFAULT_CACHE_BYTES).expect("store opened again"));
}

/// Whatever part of the window memory holds, lookups find what sled alone finds.
#[test]
fn lookups_through_memory_find_what_sled_finds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledEngine::open(&dir.path().join("s"), DEFAULT_CACHE_BYTES).expect("store");
    let now = Utc::now();
    let window = std::time::Duration::from_secs(72 * 3600);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let sources = ["a", "b", "c"];
    // Two polls: the first before the index is warm, the second after.
    for poll in 0..2u8 {
        let mut plan = IngestPlan::default();
        for k in 0..60u8 {
            let n = poll * 60 + k;
            let hours = (next() % 200) as i64 - 20; // some in the future, most in the past
            let keys = (0..3).map(|_| (next() % 6) as u32).collect();
            let (write, indexed) = written(
                n,
                sources[n as usize % 3],
                now - chrono::Duration::hours(hours),
                keys,
            );
            plan.writes.push(write);
            plan.fingerprints.push(indexed);
        }
        apply(&store, "a", &plan);
        if poll == 0 {
            store.candidates(&[0], now, window, 8, "x").expect("warm");
        }
    }
    let lookups: Vec<(Vec<u32>, DateTime<Utc>, &str)> = (0..40)
        .map(|k| {
            let at = now - chrono::Duration::hours((next() % 150) as i64);
            (vec![k % 6, (k + 1) % 6], at, sources[k as usize % 3])
        })
        .collect();
    let answers = |store: &SledEngine| -> Vec<Vec<(ItemId, usize)>> {
        lookups
            .iter()
            .map(|(terms, at, source)| {
                let mut found = store
                    .candidates(terms, *at, window, 8, source)
                    .expect("lookup");
                found.sort();
                found
            })
            .collect()
    };
    let warm = answers(&store);
    store.keep_recent_in_memory(0);
    let sled_only = answers(&store);
    store.keep_recent_in_memory(25);
    let partly = answers(&store);
    assert!(sled_only.iter().any(|found| found.len() > 3));
    for (k, (a, b)) in warm.iter().zip(&sled_only).enumerate() {
        assert_eq!(a, b, "lookup {k}: {:?}", lookups[k]);
    }
    assert_eq!(partly, sled_only);
}

#[test]
fn a_prolific_source_does_not_crowd_others_out_of_the_candidates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledEngine::open(&dir.path().join("s"), DEFAULT_CACHE_BYTES).expect("store");
    let now = Utc::now();
    let mut plan = IngestPlan::default();
    plan.fingerprints
        .push(indexed(200, "other", now - chrono::Duration::hours(2)));
    for n in 0..40 {
        plan.fingerprints.push(indexed(n, "busy", now));
    }
    let stats = store.ingest_guard();
    store
        .apply_poll("busy", &plan, &[], &[], &SourceState::default(), stats)
        .expect("apply");
    let window = std::time::Duration::from_secs(72 * 3600);
    let found = store
        .candidates(&[7], now, window, 32, "busy")
        .expect("lookup");
    assert_eq!(found, vec![(ItemId([200; 16]), 1)]);
    let from_elsewhere = store
        .candidates(&[7], now, window, 32, "new")
        .expect("lookup");
    assert_eq!(from_elsewhere.len(), 32);
}

/// A store that has grown `RETRAIN_GROWTH` times since it trained its dictionary trains
/// another (its sources change); records are compressed with the newest, and the records
/// of every dictionary read back, also once the store is opened again.
#[test]
fn a_grown_store_trains_a_new_dictionary_and_reads_the_old_records_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s");
    let store = SledEngine::open(&path, DEFAULT_CACHE_BYTES).expect("store");
    let dictionary_of = |store: &SledEngine, n: u32| {
        let bytes = store.trees().unwrap().record(news_item(n).id).unwrap();
        bytes.map(|b| b[1..5].to_vec())
    };
    // Looked at after every poll here, not every 256th.
    store
        .trees()
        .unwrap()
        .dictionary_check_every
        .store(1, std::sync::atomic::Ordering::Relaxed);
    let first = item_record::DICTIONARY_AFTER as u32;
    poll_news(&store, 0, first);
    let trained = store
        .trees()
        .unwrap()
        .dictionary()
        .expect("a first dictionary");
    poll_news(&store, first, first + 10);
    assert_eq!(
        dictionary_of(&store, first),
        Some(trained.to_le_bytes().to_vec())
    );

    let grown = first * item_record::RETRAIN_GROWTH as u32;
    for from in (first + 10..grown).step_by(1_000) {
        poll_news(&store, from, (from + 1_000).min(grown));
    }
    let retrained = store.trees().unwrap().dictionary().expect("a dictionary");
    assert_ne!(retrained, trained, "no new dictionary at {grown} items");
    poll_news(&store, grown, grown + 10);
    assert_eq!(
        dictionary_of(&store, grown),
        Some(retrained.to_le_bytes().to_vec())
    );
    drop(store);

    let store = SledEngine::open(&path, DEFAULT_CACHE_BYTES).expect("reopen");
    assert_eq!(store.trees().unwrap().dictionary(), Some(retrained));
    for n in [0, first - 1, first, first + 5, grown - 1, grown, grown + 9] {
        let item = store.item(news_item(n).id).unwrap().expect("stored");
        assert_eq!(item.summary_html, news_item(n).summary_html, "item {n}");
    }
}

/// Polls finish on several threads at once, so the count of polls that wrote items can pass
/// a multiple of the check interval before the poll that made it looks: the next look is
/// due at a count, not at its exact multiples.
#[test]
fn a_grown_store_trains_a_new_dictionary_when_polls_finish_side_by_side() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledEngine::open(&dir.path().join("s"), DEFAULT_CACHE_BYTES).expect("store");
    let trees = store.trees().unwrap();
    trees
        .dictionary_check_every
        .store(2, std::sync::atomic::Ordering::Relaxed);
    let first = item_record::DICTIONARY_AFTER as u32;
    poll_news(&store, 0, first);
    let trained = trees.dictionary().expect("a first dictionary");
    let grown = first * item_record::RETRAIN_GROWTH as u32;
    for from in (first..grown).step_by(1_000) {
        // Another poll's count lands first: every look sees an odd count.
        trees.count_poll_written().expect("count");
        poll_news(&store, from, (from + 1_000).min(grown));
    }
    let retrained = trees.dictionary().expect("a dictionary");
    assert_ne!(retrained, trained, "no new dictionary at {grown} items");
}

/// An export gives each record once, and every item before any feed entry (an importer takes
/// an entry's source from its item).
#[test]
fn an_export_gives_every_record_and_items_before_feed_entries() {
    use crate::store::{Copying, RecordKind};
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledEngine::open(&dir.path().join("store"), DEFAULT_CACHE_BYTES).expect("store");
    let now = Utc::now();
    let items = (1..=3).map(|n| (n, now - chrono::Duration::minutes(i64::from(n)), vec![7]));
    apply_new(&store, "a", items);
    store
        .rebuild_feed_index("all", "rules", &|_| true)
        .expect("feed index");
    let mut kinds = Vec::new();
    store
        .export(&mut |record| {
            kinds.push(record.kind());
            Ok(())
        })
        .expect("export");
    let count = |kind| kinds.iter().filter(|k| **k == kind).count();
    assert_eq!(count(RecordKind::Item), 3);
    assert_eq!(count(RecordKind::StoryMember), 3);
    assert_eq!(count(RecordKind::Fingerprint), 3);
    assert_eq!(count(RecordKind::FeedEntry), 3);
    assert_eq!(count(RecordKind::FeedRules), 1);
    assert_eq!(count(RecordKind::SourceState), 1);
    assert_eq!(
        count(RecordKind::Meta),
        2,
        "term statistics and terms version"
    );
    let last_item = kinds.iter().rposition(|k| *k == RecordKind::Item);
    let first_entry = kinds.iter().position(|k| *k == RecordKind::FeedEntry);
    assert!(last_item < first_entry, "{kinds:?}");
}

/// A feed's index is rebuilt and dropped a slice of keys at a time: over more items than a
/// slice, a rebuild lists exactly the selected items, newest first, replacing the entries of
/// the rules before; an index left part way (a crash while rebuilding) is never taken as
/// built, and dropping it leaves no entry behind.
#[test]
fn a_feed_index_is_rebuilt_and_dropped_whole_in_slices() {
    use super::feed_index::{FEED_INDEX_SLICE, STALE_FINGERPRINT};
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledEngine::open(&dir.path().join("s"), DEFAULT_CACHE_BYTES).expect("store");
    let total = 2 * FEED_INDEX_SLICE as u32 + 300;
    poll_news(&store, 0, total);
    let entries = |store: &SledEngine| -> Vec<FeedEntry> {
        store.feed_items("f").map(|e| e.expect("entry")).collect()
    };
    let every_third = |item: &Item| item.id.0[0].is_multiple_of(3);
    let count = store
        .rebuild_feed_index("f", "thirds", &|item| !every_third(item))
        .expect("rebuild");
    let kept = (0..total).filter(|n| !every_third(&news_item(*n))).count();
    assert!(kept > FEED_INDEX_SLICE, "more than one slice: {kept}");
    assert_eq!(count, kept);
    let listed = entries(&store);
    assert_eq!(listed.len(), kept);
    assert!(listed.windows(2).all(|w| w[0].published >= w[1].published));
    assert_eq!(
        store.feed_fingerprint("f").unwrap().as_deref(),
        Some("thirds")
    );

    let count = store
        .rebuild_feed_index("f", "all", &|_| true)
        .expect("rebuild");
    assert_eq!(count, total as usize);
    assert_eq!(entries(&store).len(), total as usize);

    // A rebuild stopped part way: its entries are there and its rules are not.
    let trees = store.trees().unwrap();
    trees
        .meta
        .insert(format!("{FINGERPRINT_PREFIX}f"), STALE_FINGERPRINT)
        .unwrap();
    assert_ne!(store.feed_fingerprint("f").unwrap().as_deref(), Some("all"));
    assert_eq!(store.indexed_feeds().unwrap(), vec!["f".to_owned()]);
    store.drop_feed_index("f").expect("drop");
    assert!(entries(&store).is_empty());
    assert_eq!(trees.feed_index.len(), 0);
    assert!(store.indexed_feeds().unwrap().is_empty());
    assert_eq!(store.feed_fingerprint("f").unwrap(), None);
}

/// The bytes of the record log's segments, and how many there are.
fn record_files(path: &Path) -> (u64, usize) {
    let dir = path.join(record_log::RECORDS_DIR);
    let sizes: Vec<u64> = std::fs::read_dir(dir)
        .expect("records dir")
        .map(|e| e.expect("entry").metadata().expect("metadata").len())
        .collect();
    (sizes.iter().sum(), sizes.len())
}

/// Records of pruned items give their space back: segments whose records all died are
/// removed by the prune that killed them, and the live records of segments a quarter or more
/// dead (here, items rewritten with new content) move to the end of the log; every item reads back its
/// newest version, also once the store is opened again.
#[test]
fn the_record_log_gives_back_the_space_of_dead_records() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("s");
    let store = SledEngine::open(&path, DEFAULT_CACHE_BYTES).expect("store");
    store.trees().unwrap().records.set_segment_bytes(2048);
    // Published a minute apart, in order: the prune below keeps 200..300.
    let start = Utc::now() - chrono::Duration::days(1);
    let mut plan = IngestPlan::default();
    for n in 0..300 {
        plan.writes.push(ItemWrite {
            item: Item {
                published: start + chrono::Duration::minutes(i64::from(n)),
                ..news_item(n)
            },
            previous: None,
            link: None,
        });
    }
    apply(&store, "news", &plan);
    let (written, segments) = record_files(&path);
    assert!(segments > 20, "{segments} segments of {written} bytes");

    let lost = store.prune(None, Some(100), Utc::now()).expect("prune");
    assert_eq!(lost.get("news"), Some(&200));
    let (after_prune, left) = record_files(&path);
    assert!(
        after_prune * 2 < written,
        "{written} bytes before pruning two thirds, {after_prune} after"
    );
    assert!(left < segments / 2, "{segments} segments, then {left}");

    // Every other live item rewritten: the segments that held them are half dead (as a
    // backfill's are after retention), and are collected too.
    let mut plan = IngestPlan::default();
    for n in (200..300).filter(|n| n % 2 == 0) {
        let old = store.item(news_item(n).id).unwrap().expect("live");
        plan.writes.push(ItemWrite {
            item: Item {
                title: format!("rewritten {n}"),
                content_hash: u64::from(n) + 1_000_000,
                ..old.clone()
            },
            previous: Some(old),
            link: None,
        });
    }
    apply(&store, "news", &plan);
    let (grown, _) = record_files(&path);
    // What died is remembered across a restart.
    let dead = |store: &SledEngine| {
        let trees = store.trees().unwrap();
        trees
            .records_dead
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let died = dead(&store);
    assert!(died > 0);
    drop(store);
    let store = SledEngine::open(&path, DEFAULT_CACHE_BYTES).expect("reopen");
    assert_eq!(dead(&store), died);
    let trees = store.trees().unwrap();
    store.collect_record_garbage(&trees).expect("collect");
    drop(trees);
    let (collected, _) = record_files(&path);
    // What stays dead is in segments each under a quarter dead.
    assert!(
        dead(&store) * 4 < collected,
        "{} of {collected} bytes dead",
        dead(&store)
    );
    assert!(
        collected * 4 < grown * 3,
        "{grown} bytes with the old versions, {collected} after collecting"
    );
    let reads_back = |store: &SledEngine| {
        for n in 200..300 {
            let item = store.item(news_item(n).id).unwrap().expect("kept");
            let expected = if n % 2 == 1 {
                news_item(n).title
            } else {
                format!("rewritten {n}")
            };
            assert_eq!(item.title, expected);
        }
        for n in 0..200 {
            assert!(store.item(news_item(n).id).unwrap().is_none(), "{n} pruned");
        }
    };
    reads_back(&store);
    drop(store);
    reads_back(&SledEngine::open(&path, DEFAULT_CACHE_BYTES).expect("reopen"));
}

/// The record log's garbage collection runs beside polls: a record it moves whose item a poll
/// rewrote meanwhile is not put back (the item keeps its new version, the copy counts as
/// dead), and one whose item did not change is moved.
#[test]
fn a_record_moved_by_the_collection_never_replaces_a_newer_version() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledEngine::open(&dir.path().join("s"), DEFAULT_CACHE_BYTES).expect("store");
    let mut plan = IngestPlan::default();
    plan.writes.push(ItemWrite {
        item: news_item(1),
        previous: None,
        link: None,
    });
    apply(&store, "news", &plan);
    let trees = store.trees().unwrap();
    let id = news_item(1).id;
    let read_now = || {
        let value = trees.items.get(id.0).unwrap().expect("stored");
        let at = item_record::in_log(&value).unwrap().expect("in the log");
        let record = trees.records.read(at).unwrap().expect("readable");
        Moving { id, value, record }
    };
    let read_before = read_now();
    let old = store.item(id).unwrap().expect("stored");
    let mut rewrite = IngestPlan::default();
    rewrite.writes.push(ItemWrite {
        item: Item {
            title: "rewritten".into(),
            content_hash: 7,
            ..old.clone()
        },
        previous: Some(old),
        link: None,
    });
    apply(&store, "news", &rewrite);
    let dead = || {
        trees
            .records_dead
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let dead_before = dead();

    let mut moved = Moved::default();
    store
        .move_records(&trees, &mut vec![read_before], &mut moved)
        .expect("move");
    assert_eq!(
        moved.count, 0,
        "the rewritten item's old record is not moved"
    );
    assert_eq!(store.item(id).unwrap().expect("kept").title, "rewritten");
    assert!(dead() > dead_before, "the copy counts as dead");

    let current = read_now();
    let place_before = current.value.clone();
    store
        .move_records(&trees, &mut vec![current], &mut moved)
        .expect("move");
    assert_eq!(moved.count, 1);
    assert_ne!(trees.items.get(id.0).unwrap(), Some(place_before));
    assert_eq!(store.item(id).unwrap().expect("kept").title, "rewritten");
}
