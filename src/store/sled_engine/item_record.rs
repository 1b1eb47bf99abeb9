//! How an item is kept in the `items` tree: format 2 is a tag byte, the item's content hash
//! (8 bytes, little-endian, so a poll tells an unchanged item without decompressing it) and
//! the item's JSON as one zstd frame; format 3 is the same compressed with the store's
//! dictionary (its id, 4 bytes, before the hash); format 1, written before, is the bare JSON
//! (it starts with `{`). All are read; format 3 is written once the store has a dictionary, 2
//! before, and a store's format-1 records are rewritten once at start
//! ([`Health::compress_items`](crate::store::Health::compress_items)).
//!
//! The dictionary: zstd compresses a 1–2 KB news item poorly on its own, for want of
//! context; a dictionary of 64 KB trained on the store's own items holds the markup, field
//! names and phrases its sources repeat. On the XML of 6,559 items of the real feeds of the
//! shared corpus (half to train on, half to compress) it gave 0.66 of the size without one.
//! A store trains it from its newest items when it first holds [`DICTIONARY_AFTER`] items,
//! and again whenever it has grown [`RETRAIN_GROWTH`] times since (its sources change); records written before stay as they are until `feedmux compact` compresses them with
//! it. Every dictionary a store used stays in its
//! `meta` tree, and [`register`] makes them known to this process (by an id derived from
//! their bytes).
//!
//! Since store version 4 the `items` tree holds none of these: it holds format 4, a tag
//! byte, the content hash and where the record lies in the record log (`record_log`), 21
//! bytes; the record log holds the record in format 2 or 3. Records of the formats before
//! are moved there once at start.
//!
//! And how a link claim is kept in the `urls` tree: a tag byte, a flags byte (ambiguous or
//! not), the claiming item's id (16 bytes) and its source's name, about 30 bytes where the
//! JSON written before (read still; it starts with `{`) took about 70.

use super::record_log::Locator;
use super::StoreError;
use crate::dedup::record::UrlClaim;
use crate::model::{Item, ItemId};

/// The first byte of a format-2 record.
const COMPRESSED: u8 = 2;
/// The first byte of a format-3 record.
const WITH_DICTIONARY: u8 = 3;
/// The bytes before the zstd frame: the tag and the content hash (and in format 3 the
/// dictionary's id between them).
const HEADER: usize = 9;
const DICTIONARY_HEADER: usize = 13;
/// The first byte of a format-4 value: the content hash and a [`Locator`].
const IN_LOG: u8 = 4;
/// The length of a format-4 value.
const IN_LOG_BYTES: usize = 21;
/// Items a store holds before it trains its dictionary.
pub const DICTIONARY_AFTER: usize = 1_000;
/// A store trains a new dictionary each time it has grown this many times since the last.
pub const RETRAIN_GROWTH: usize = 8;
/// Once a store has a dictionary, whether another is due is looked at every this many polls
/// that wrote items (the count adds up every source's state).
pub const RETRAIN_CHECK_EVERY: u64 = 256;
/// Items the dictionary is trained on at most (the newest).
pub const DICTIONARY_SAMPLES: usize = 2_000;
/// The dictionary's size: 64 KB compressed the corpus's items to 0.66, 16 KB to 0.72.
const DICTIONARY_BYTES: usize = 64 * 1024;
/// zstd's level: about 3x on news items' JSON and HTML, at hundreds of MB/s.
const LEVEL: i32 = 3;

/// The record of `item`: format 3 with the dictionary `dictionary` names (registered), else
/// format 2.
pub fn encode(item: &Item, dictionary: Option<u32>) -> Vec<u8> {
    let json = super::encode(item);
    let dictionary = dictionary.and_then(|id| Some((id, registered(id)?)));
    let mut out = Vec::with_capacity(DICTIONARY_HEADER + json.len() / 2);
    let frame = match dictionary {
        Some((id, (encoder, _))) => {
            out.push(WITH_DICTIONARY);
            out.extend_from_slice(&id.to_le_bytes());
            compress_with(&json, encoder)
        }
        None => {
            out.push(COMPRESSED);
            compress(&json)
        }
    };
    out.extend_from_slice(&item.content_hash.to_le_bytes());
    match frame {
        Ok(frame) => {
            out.extend_from_slice(&frame);
            out
        }
        // zstd fails only on allocation; the JSON form is still a valid record.
        Err(_) => json,
    }
}

type Prepared = (
    &'static zstd::dict::EncoderDictionary<'static>,
    &'static zstd::dict::DecoderDictionary<'static>,
);

/// The dictionaries known to this process, by id. Each is prepared once and kept for the
/// process's life (a store holds one or two; tests open many stores).
fn dictionaries() -> &'static std::sync::RwLock<std::collections::HashMap<u32, Prepared>> {
    static KNOWN: std::sync::OnceLock<std::sync::RwLock<std::collections::HashMap<u32, Prepared>>> =
        std::sync::OnceLock::new();
    KNOWN.get_or_init(Default::default)
}

fn registered(id: u32) -> Option<Prepared> {
    dictionaries()
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&id)
        .copied()
}

/// The id of a dictionary: the first four bytes of its SHA-256.
pub fn dictionary_id(bytes: &[u8]) -> u32 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Makes a dictionary read from a store known to this process; returns its id.
pub fn register(bytes: &[u8]) -> u32 {
    let id = dictionary_id(bytes);
    let mut known = dictionaries().write().unwrap_or_else(|p| p.into_inner());
    known.entry(id).or_insert_with(|| {
        let encoder = Box::leak(Box::new(zstd::dict::EncoderDictionary::copy(bytes, LEVEL)));
        let decoder = Box::leak(Box::new(zstd::dict::DecoderDictionary::copy(bytes)));
        (&*encoder, &*decoder)
    });
    id
}

/// Trains a dictionary on item records (of any format); `None` when zstd cannot (too few or
/// too small samples).
pub fn train(records: &[Vec<u8>]) -> Option<Vec<u8>> {
    let samples: Vec<Vec<u8>> = records
        .iter()
        .filter_map(|bytes| decode(bytes).ok().map(|item| super::encode(&item)))
        .collect();
    zstd::dict::from_samples(&samples, DICTIONARY_BYTES).ok()
}

fn compress_with(
    json: &[u8],
    dictionary: &'static zstd::dict::EncoderDictionary<'static>,
) -> std::io::Result<Vec<u8>> {
    thread_local! {
        static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let compressor = match slot.as_mut() {
            Some(c) => c,
            None => slot.insert(zstd::bulk::Compressor::new(LEVEL)?),
        };
        compressor.set_prepared_dictionary(dictionary)?;
        compressor.compress(json)
    })
}

/// `json` as one zstd frame, by this thread's compressor: making a compression context costs
/// as much as compressing an item, so each thread keeps one.
fn compress(json: &[u8]) -> std::io::Result<Vec<u8>> {
    thread_local! {
        static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let compressor = match slot.as_mut() {
            Some(c) => c,
            None => slot.insert(zstd::bulk::Compressor::new(LEVEL)?),
        };
        compressor.compress(json)
    })
}

/// The JSON a frame holds, by this thread's decompressor when the frame says its size (every
/// frame [`compress`] writes does): reading a feed's items made a context per item, which
/// cost as much as decompressing it.
fn decompress(frame: &[u8]) -> std::io::Result<Vec<u8>> {
    thread_local! {
        static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    let size = zstd::zstd_safe::get_frame_content_size(frame)
        .ok()
        .flatten();
    let Some(size) = size
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n <= MAX_JSON)
    else {
        return zstd::stream::decode_all(frame);
    };
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let decompressor = match slot.as_mut() {
            Some(d) => d,
            None => slot.insert(zstd::bulk::Decompressor::new()?),
        };
        decompressor.decompress(frame, size)
    })
}

/// [`decompress`] with a dictionary.
fn decompress_with(
    frame: &[u8],
    dictionary: &'static zstd::dict::DecoderDictionary<'static>,
) -> std::io::Result<Vec<u8>> {
    thread_local! {
        static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    let size = zstd::zstd_safe::get_frame_content_size(frame)
        .ok()
        .flatten()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n <= MAX_JSON)
        .ok_or_else(|| std::io::Error::other("the frame does not say its size"))?;
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let decompressor = match slot.as_mut() {
            Some(d) => d,
            None => slot.insert(zstd::bulk::Decompressor::new()?),
        };
        decompressor.set_prepared_dictionary(dictionary)?;
        decompressor.decompress(frame, size)
    })
}

/// The largest JSON a frame may claim to hold before it is read as a stream instead (a
/// damaged header must not make a huge allocation): ten times the largest feed body.
const MAX_JSON: usize = 100 * 1024 * 1024;

/// The item a record holds, in any format.
pub fn decode(bytes: &[u8]) -> Result<Item, StoreError> {
    let corrupt = |message: String| StoreError::Corrupt {
        what: "item",
        message,
    };
    let json = match bytes.first() {
        Some(&COMPRESSED) => decompress(bytes.get(HEADER..).unwrap_or_default())
            .map_err(|e| corrupt(format!("compressed record: {e}")))?,
        Some(&WITH_DICTIONARY) => {
            let id = dictionary_of(bytes)
                .ok_or_else(|| corrupt(format!("a record of {} bytes", bytes.len())))?;
            let (_, decoder) = registered(id).ok_or_else(|| {
                corrupt(format!(
                    "compressed with dictionary {id:08x}, which the store does not hold"
                ))
            })?;
            decompress_with(bytes.get(DICTIONARY_HEADER..).unwrap_or_default(), decoder)
                .map_err(|e| corrupt(format!("compressed record: {e}")))?
        }
        Some(&IN_LOG) => {
            return Err(corrupt(
                "a record's place in the record log, read as the record".to_owned(),
            ))
        }
        _ => return super::decode(bytes, "item"),
    };
    super::decode(&json, "item")
}

/// The `items` value of a record at `at` in the record log (format 4).
pub fn encode_in_log(content_hash: u64, at: Locator) -> [u8; IN_LOG_BYTES] {
    let mut out = [0u8; IN_LOG_BYTES];
    out[0] = IN_LOG;
    out[1..9].copy_from_slice(&content_hash.to_le_bytes());
    out[9..13].copy_from_slice(&at.segment.to_le_bytes());
    out[13..17].copy_from_slice(&at.offset.to_le_bytes());
    out[17..21].copy_from_slice(&at.len.to_le_bytes());
    out
}

/// Where the record of an `items` value lies in the record log: `None` for a record kept
/// in the value itself (the formats before 4); an error for a format-4 value of another
/// length.
pub fn in_log(bytes: &[u8]) -> Result<Option<Locator>, StoreError> {
    if bytes.first() != Some(&IN_LOG) {
        return Ok(None);
    }
    let word = |at: usize| {
        bytes
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
    };
    match (bytes.len(), word(9), word(13), word(17)) {
        (IN_LOG_BYTES, Some(segment), Some(offset), Some(len)) => Ok(Some(Locator {
            segment,
            offset,
            len,
        })),
        _ => Err(StoreError::Corrupt {
            what: "item",
            message: format!("a place in the record log of {} bytes", bytes.len()),
        }),
    }
}

/// The id of the dictionary a format-3 record was compressed with.
fn dictionary_of(bytes: &[u8]) -> Option<u32> {
    let id: [u8; 4] = bytes.get(1..5)?.try_into().ok()?;
    Some(u32::from_le_bytes(id))
}

/// The content hash of the item a record holds, without decompressing it.
pub fn content_hash(bytes: &[u8]) -> Result<u64, StoreError> {
    #[derive(serde::Deserialize)]
    struct HashOnly {
        content_hash: u64,
    }
    let at = match bytes.first() {
        Some(&COMPRESSED | &IN_LOG) => 1,
        Some(&WITH_DICTIONARY) => 5,
        _ => return Ok(super::decode::<HashOnly>(bytes, "item")?.content_hash),
    };
    let hash: [u8; 8] = bytes
        .get(at..at + 8)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt {
            what: "item",
            message: format!("a compressed record of {} bytes", bytes.len()),
        })?;
    Ok(u64::from_le_bytes(hash))
}

/// Whether a record is compressed with a dictionary (format 3).
pub fn uses_dictionary(bytes: &[u8]) -> bool {
    bytes.first() == Some(&WITH_DICTIONARY)
}

/// Whether a record is compressed (format 2 or 3; format 1 is JSON, which starts with `{`).
pub fn is_compressed(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(&COMPRESSED | &WITH_DICTIONARY))
}

/// The first byte of a binary link claim.
const CLAIM: u8 = 0xC1;
const AMBIGUOUS: u8 = 1;

/// The record of a link claim.
pub fn encode_claim(claim: &UrlClaim) -> Vec<u8> {
    let mut out = Vec::with_capacity(18 + claim.source.len());
    out.push(CLAIM);
    out.push(if claim.ambiguous { AMBIGUOUS } else { 0 });
    out.extend_from_slice(&claim.item.0);
    out.extend_from_slice(claim.source.as_bytes());
    out
}

/// A link claim from its record, binary or JSON.
pub fn decode_claim(bytes: &[u8]) -> Result<UrlClaim, StoreError> {
    let corrupt = || StoreError::Corrupt {
        what: "url claim",
        message: format!("{} bytes", bytes.len()),
    };
    match bytes.first() {
        Some(&CLAIM) => {
            let flags = *bytes.get(1).ok_or_else(corrupt)?;
            let item = bytes
                .get(2..18)
                .and_then(ItemId::from_slice)
                .ok_or_else(corrupt)?;
            let source = std::str::from_utf8(&bytes[18..]).map_err(|_| corrupt())?;
            Ok(UrlClaim {
                item,
                source: source.to_owned(),
                ambiguous: flags & AMBIGUOUS != 0,
            })
        }
        _ => super::decode(bytes, "url claim"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ItemId;
    use chrono::Utc;

    fn item() -> Item {
        let now = Utc::now();
        Item {
            id: ItemId([7; 16]),
            source: "jiqizhixin".into(),
            guid: "g".into(),
            url: Some("https://www.jiqizhixin.com/articles/1".into()),
            canonical_url: None,
            title: "大模型推理成本下降一半".into(),
            summary_html: Some("<p>研究人员提出一种新的推理方法。</p>".repeat(20)),
            content_html: None,
            authors: vec!["机器之心".into()],
            categories: vec![],
            enclosures: vec![],
            published: now,
            updated: None,
            first_seen: now,
            modified: now,
            content_hash: 0x0123_4567_89ab_cdef,
            story: ItemId([7; 16]),
            sanitised: 1,
        }
    }

    #[test]
    fn both_formats_read_and_the_new_one_is_smaller() {
        let item = item();
        let json = super::super::encode(&item);
        let record = encode(&item, None);
        assert!(is_compressed(&record) && !is_compressed(&json));
        assert!(
            record.len() * 2 < json.len(),
            "{} vs {}",
            record.len(),
            json.len()
        );
        assert_eq!(decode(&record).expect("format 2"), item);
        assert_eq!(decode(&json).expect("format 1"), item);
        assert_eq!(content_hash(&record).expect("hash"), item.content_hash);
        assert_eq!(content_hash(&json).expect("hash"), item.content_hash);
    }

    #[test]
    fn a_frame_that_does_not_say_its_size_is_read_too() {
        let item = item();
        let mut record = vec![COMPRESSED];
        record.extend_from_slice(&item.content_hash.to_le_bytes());
        let frame = zstd::stream::encode_all(&super::super::encode(&item)[..], LEVEL)
            .expect("a streamed frame");
        assert!(matches!(
            zstd::zstd_safe::get_frame_content_size(&frame),
            Ok(None)
        ));
        record.extend_from_slice(&frame);
        assert_eq!(decode(&record).expect("streamed frame"), item);
        // The frames written here say their size, so they take the reused decompressor.
        let written = encode(&item, None);
        assert!(matches!(
            zstd::zstd_safe::get_frame_content_size(&written[HEADER..]),
            Ok(Some(_))
        ));
    }

    #[test]
    fn a_damaged_record_is_an_error_not_a_panic() {
        let record = encode(&item(), None);
        for cut in [1, 5, HEADER, HEADER + 3, record.len() - 1] {
            let _ = decode(&record[..cut]);
            let _ = content_hash(&record[..cut]);
        }
        assert!(decode(&record[..HEADER + 3]).is_err());
        assert!(content_hash(&record[..5]).is_err());
    }

    #[test]
    fn a_link_claim_reads_back_from_its_record_and_from_the_json_before_it() {
        use crate::dedup::record::UrlClaim;
        let claim = UrlClaim {
            item: crate::model::ItemId([7; 16]),
            source: "机器之心".to_owned(),
            ambiguous: true,
        };
        let bytes = encode_claim(&claim);
        assert!(bytes.len() < 40, "{} bytes", bytes.len());
        assert_eq!(decode_claim(&bytes).unwrap(), claim);
        let json = serde_json::to_vec(&claim).unwrap();
        assert_eq!(decode_claim(&json).unwrap(), claim);
        assert!(decode_claim(&bytes[..10]).is_err());
        assert!(decode_claim(b"").is_err());
    }

    #[test]
    fn a_record_of_a_dictionary_the_store_does_not_hold_is_a_clear_error() {
        let mut record = vec![WITH_DICTIONARY];
        record.extend_from_slice(&0xDEAD_BEEFu32.to_le_bytes());
        record.extend_from_slice(&7u64.to_le_bytes());
        record.extend_from_slice(b"not a frame");
        assert_eq!(content_hash(&record).unwrap(), 7);
        let error = decode(&record).unwrap_err().to_string();
        assert!(error.contains("dictionary deadbeef"), "{error}");
    }
}
