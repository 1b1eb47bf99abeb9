//! Upkeep of the near-duplicate (text) index, in one place: re-deriving it when this version
//! cuts text into terms differently from the one that built it ([`upgrade_text_index`]),
//! giving stored items a meaning when `dedup.model` is first set or changed
//! ([`backfill_meanings`]), and dropping the entries of items older than `dedup.index_age`
//! ([`drop_aged`]).
//!
//! This module decides what each of them writes, through the store's
//! [`TextIndex`](crate::store::TextIndex); the daemon decides when (at start, after a reload,
//! on the sweeper's schedule) and on which thread. It must not know the service manager or
//! the async runtime: long work reports its progress through a callback.

use chrono::{DateTime, Utc};
use tracing::info;

use super::DedupConfig;
use crate::store::{Store, StoreError};

/// Re-derives the near-duplicate index when this version cuts text into terms differently
/// from the one that built it ([`super::fingerprint::TERMS_VERSION`]): the term
/// statistics afresh from the indexed items, then each one's fingerprint and index keys
/// under them, so that reports stored before an upgrade are still found by reports that
/// arrive after it. Holds the ingest guard throughout; calls `progress` with a line saying how
/// far it is after each slice (the daemon tells the service manager it is still starting: a
/// big store takes longer than the start timeout) and says in the log what it did. Returns how many items were re-derived, or `None` when the index was
/// current.
pub fn upgrade_text_index(
    store: &Store,
    progress: &mut dyn FnMut(&str),
) -> Result<Option<usize>, StoreError> {
    use super::fingerprint::TERMS_VERSION;
    if store.terms_version()? == TERMS_VERSION {
        return Ok(None);
    }
    let started = std::time::Instant::now();
    let mut guard = store.ingest_guard();
    let items = store.text_indexed_items()?;
    let total = items.len();
    // Two passes over the items: every key depends on the finished statistics, and keeping
    // each fingerprint between the passes would hold the whole index in memory.
    let mut stats = super::fingerprint::TermStats::default();
    for (n, chunk) in items.chunks(REDERIVE_CHUNK).enumerate() {
        progress(&format!(
            "upgrading the near-duplicate index: counting terms, {} of {total} items",
            n * REDERIVE_CHUNK
        ));
        super::count_terms(store, chunk, &mut stats)?;
    }
    let mut rederived = 0;
    for chunk in items.chunks(REDERIVE_CHUNK) {
        progress(&format!(
            "upgrading the near-duplicate index: {rederived} of {total} items re-derived"
        ));
        let records = super::rederive_fingerprints(store, chunk, &stats)?;
        rederived += records.len();
        store.replace_fingerprints(&records)?;
    }
    store.finish_text_index_rebuild(&mut guard, stats, TERMS_VERSION)?;
    info!(
        items = rederived,
        took_ms = started.elapsed().as_millis() as u64,
        "re-derived the near-duplicate index with this version's text terms"
    );
    Ok(Some(rederived))
}

/// Items re-derived per write by [`upgrade_text_index`].
const REDERIVE_CHUNK: usize = 1024;

/// Gives the recent items of the last `dedup.window` this model's meaning when they have
/// none or another model's: after `dedup.model` is first set or names another file. Runs
/// beside polling (a poll that edits one of the items meanwhile wins); returns how many
/// items it gave a meaning.
pub fn backfill_meanings(
    store: &Store,
    dedup: &DedupConfig,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    if dedup.model.is_none() {
        return Ok(0);
    }
    let started = std::time::Instant::now();
    let mut added = 0;
    let mut records = super::meanings_to_add(store, dedup, now)?;
    while !records.is_empty() {
        let rest = records.split_off(records.len().min(BACKFILL_CHUNK));
        let _guard = store.ingest_guard();
        records.retain(|r| store.fingerprint(r.id).ok().flatten() == r.replaces);
        store.replace_fingerprints(&records)?;
        added += records.len();
        records = rest;
    }
    if added > 0 {
        info!(
            items = added,
            took_ms = started.elapsed().as_millis() as u64,
            "gave the items of the last dedup.window a meaning with dedup.model"
        );
    }
    Ok(added)
}

/// Items written at once by [`backfill_meanings`].
const BACKFILL_CHUNK: usize = 256;

/// Drops the text index entries of items published more than `dedup.index_age` before `now`
/// (see [`TextIndex::drop_text_index_before`](crate::store::TextIndex::drop_text_index_before)):
/// they are matched by link only from then on. Returns the cut-off and how many items lost
/// their entries, or `None` when `dedup.index_age` reaches before any representable time.
pub fn drop_aged(
    store: &Store,
    dedup: &DedupConfig,
    now: DateTime<Utc>,
) -> Result<Option<(DateTime<Utc>, usize)>, StoreError> {
    let Some(before) = dedup.index_from(now) else {
        return Ok(None);
    };
    Ok(Some((before, store.drop_text_index_before(before)?)))
}

#[cfg(test)]
mod tests {
    use super::upgrade_text_index;
    use crate::dedup::fingerprint::{Fingerprint, TERMS_VERSION};
    use crate::dedup::{
        item_id, plan, DedupConfig, FingerprintRecord, IndexedFingerprint, IngestPlan, MergeKind,
    };
    use crate::model::{Entry, SourceState};
    use crate::store::Store;
    use chrono::{DateTime, Utc};

    fn entry(guid: &str, title: &str, body: &str, at: DateTime<Utc>) -> Entry {
        Entry {
            guid: Some(guid.to_owned()),
            url: Some(format!("https://{guid}.example/story")),
            title: title.to_owned(),
            summary_html: Some(body.to_owned()),
            published: Some(at),
            ..Entry::default()
        }
    }

    fn planned(store: &Store, source: &str, entries: Vec<Entry>, now: DateTime<Utc>) -> IngestPlan {
        let mut stats = store.ingest_guard();
        plan(
            store,
            source,
            entries,
            now,
            &DedupConfig::default(),
            &mut stats,
        )
        .expect("plan")
    }

    fn poll(store: &Store, source: &str, entries: Vec<Entry>, now: DateTime<Utc>) {
        let plan = planned(store, source, entries, now);
        let stats = store.ingest_guard();
        store
            .apply_poll(source, &plan, &[], &[], &SourceState::default(), stats)
            .expect("apply");
    }

    /// A store whose text index was built with another way of cutting terms has it
    /// re-derived once: its old items are then found by new reports again.
    #[test]
    fn an_index_built_with_older_terms_is_rederived_and_matches_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("s")).expect("store");
        let now = Utc::now();
        let hour = chrono::Duration::hours(1);
        let background = [
            (
                "b1",
                "Nvidia unveils a new inference chip",
                "Nvidia unveiled a chip for inference workloads.",
            ),
            (
                "b2",
                "Anthropic raises a Series F round",
                "Anthropic raised money from new investors.",
            ),
            (
                "b3",
                "百度发布文心大模型新版本",
                "百度今天发布了文心大模型的新版本。",
            ),
            (
                "b4",
                "智谱开源新一代模型权重",
                "智谱今天开源了新一代模型的权重。",
            ),
        ];
        let mut entries: Vec<Entry> = background
            .iter()
            .map(|(g, t, b)| entry(g, t, b, now - hour * 3))
            .collect();
        let title = "Snowflake buys observability startup Tracelight for $250M";
        let body = "Snowflake agreed to acquire Tracelight, a startup that monitors AI agents in production, for $250 million in cash.";
        entries.push(entry("first", title, body, now - hour * 2));
        poll(&store, "wire", entries, now);
        let first = item_id("wire", "first");

        // As an older version would have indexed it: other terms, other keys.
        let mut stats = store.ingest_guard().clone();
        let old = Fingerprint::new("words of another era", "nothing a new report shares");
        stats.add(&old);
        let keys = old.key_terms(&stats);
        let record = |fingerprint: Fingerprint, keys: Vec<u32>| FingerprintRecord {
            source: "wire".into(),
            published: now - hour * 2,
            fingerprint,
            keys,
        };
        let current = store.fingerprint(first).expect("read").expect("indexed");
        store
            .replace_fingerprints(&[IndexedFingerprint {
                id: first,
                record: record(old, keys),
                replaces: Some(current),
            }])
            .expect("replace");
        assert_eq!(store.terms_version().expect("version"), TERMS_VERSION);
        store.forget_terms_version().expect("forget");
        assert_eq!(store.terms_version().expect("version"), 1);

        let rewrite = || {
            vec![entry(
                "again",
                "Snowflake to acquire observability startup Tracelight for $250 million",
                "Snowflake will acquire Tracelight, which monitors AI agents in production, for $250M in cash.",
                now - hour,
            )]
        };
        let before = planned(&store, "other", rewrite(), now);
        assert!(
            before.writes[0].link.is_none(),
            "the old index cannot match"
        );

        assert_eq!(
            upgrade_text_index(&store, &mut |_| {}).expect("upgrade"),
            Some(5)
        );
        assert_eq!(store.terms_version().expect("version"), TERMS_VERSION);
        let after = planned(&store, "other", rewrite(), now);
        let link = after.writes[0].link.expect("matched after the upgrade");
        assert_eq!((link.kind, link.with), (MergeKind::Text, first));
        assert_eq!(
            upgrade_text_index(&store, &mut |_| {}).expect("second run"),
            None
        );
    }
}
