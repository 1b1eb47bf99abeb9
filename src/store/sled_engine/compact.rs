//! `feedmux compact`: the store copied, tree by tree, into fresh files that hold only live
//! records (sled never gives the space of deleted ones back to the file system), item records
//! into a fresh record log, compressed with the store's dictionary on the way; the fresh
//! files then replace the old.

use super::*;

/// Rewrites the store at `path` into fresh files holding only live records (see
/// [`super::Store::compact`]).
pub(in crate::store) fn compact(path: &Path) -> Result<(u64, u64), StoreError> {
    let old = SledEngine::open(path, DEFAULT_CACHE_BYTES)?;
    let before = old.size_on_disk();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "store".to_owned());
    let fresh_path = path.with_file_name(format!("{name}.compacting"));
    let retired_path = path.with_file_name(format!("{name}.before-compacting"));
    for leftover in [&fresh_path, &retired_path] {
        if leftover.exists() {
            std::fs::remove_dir_all(leftover).map_err(|e| io_error(leftover, e))?;
        }
    }
    let fresh = sled::Config::new()
        .path(&fresh_path)
        .cache_capacity(DEFAULT_CACHE_BYTES)
        .flush_every_ms(None)
        .open()
        .map_err(|e| open_error(&fresh_path, e))?;
    let fresh_records =
        record_log::RecordLog::open(&fresh_path).map_err(|e| io_error(&fresh_path, e))?;
    let old_trees = old.trees()?;
    // Item records written before the store had its dictionary are compressed with it on
    // the way (trained first, if the store is big enough and has none yet).
    old.train_dictionary_if_due(&old_trees);
    let dictionary = old_trees.dictionary();
    for tree_name in old_trees.db.tree_names() {
        let from = old_trees.db.open_tree(&tree_name)?;
        let to = fresh.open_tree(&tree_name)?;
        let items = tree_name.as_ref() == b"items";
        let meta = tree_name.as_ref() == b"meta";
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        // Item records waiting to be appended, one write for a batch's worth.
        let mut records: Vec<(sled::IVec, u64, Vec<u8>)> = Vec::new();
        for entry in from.iter() {
            let (k, v) = entry?;
            if items {
                let Some(mut record) = old_trees.record_of(&v)? else {
                    continue; // its record is gone: so is the item
                };
                if dictionary.is_some() && !item_record::uses_dictionary(&record) {
                    let item = item_record::decode(&record)?;
                    record = item_record::encode(&item, dictionary);
                }
                let hash = item_record::content_hash(&record)?;
                records.push((k, hash, record));
            } else if meta && k == RECORDS_DEAD_KEY {
                continue; // the fresh record log holds no dead record
            } else if meta && k == ITEM_FORMAT_KEY {
                // Every record is in the record log now (written with the rest of `meta`:
                // a write after it would log its whole leaf, the term statistics, again).
                batch.insert(k, &[ITEM_FORMAT_IN_LOG]);
            } else {
                batch.insert(k, v);
            }
            in_batch += 1;
            if in_batch == 256 {
                append_records(&fresh_records, &mut records, &mut batch, &fresh_path)?;
                to.apply_batch(std::mem::take(&mut batch))?;
                in_batch = 0;
            }
        }
        append_records(&fresh_records, &mut records, &mut batch, &fresh_path)?;
        to.apply_batch(batch)?;
    }
    fresh_records.sync().map_err(|e| io_error(&fresh_path, e))?;
    drop(fresh_records);
    fresh.flush()?;
    drop(fresh);
    drop(old_trees);
    drop(old);
    std::fs::rename(path, &retired_path).map_err(|e| io_error(path, e))?;
    std::fs::rename(&fresh_path, path).map_err(|e| io_error(&fresh_path, e))?;
    std::fs::remove_dir_all(&retired_path).map_err(|e| io_error(&retired_path, e))?;
    let after = SledEngine::open(path, DEFAULT_CACHE_BYTES)?.size_on_disk();
    Ok((before, after))
}

/// Appends `records` (item key, content hash, record) to the fresh record log in one write and
/// adds where each went to `batch`.
fn append_records(
    log: &record_log::RecordLog,
    records: &mut Vec<(sled::IVec, u64, Vec<u8>)>,
    batch: &mut sled::Batch,
    path: &Path,
) -> Result<(), StoreError> {
    let bytes: Vec<&[u8]> = records.iter().map(|(_, _, r)| r.as_slice()).collect();
    let places = log.append(&bytes).map_err(|e| io_error(path, e))?;
    for ((key, hash, _), at) in records.drain(..).zip(places) {
        batch.insert(key, &item_record::encode_in_log(hash, at));
    }
    Ok(())
}
