//! How an item is kept in the `items` tree: format 2 is a tag byte, the item's content hash
//! (8 bytes, little-endian, so a poll tells an unchanged item without decompressing it) and
//! the item's JSON as one zstd frame; format 1, written before, is the bare JSON (it starts
//! with `{`). Both are read; only format 2 is written, and a store's format-1 records are
//! rewritten once at start ([`Health::compress_items`](crate::store::Health::compress_items)).
//!
//! And how a link claim is kept in the `urls` tree: a tag byte, a flags byte (ambiguous or
//! not), the claiming item's id (16 bytes) and its source's name, about 30 bytes where the
//! JSON written before (read still; it starts with `{`) took about 70.

use super::StoreError;
use crate::dedup::record::UrlClaim;
use crate::model::{Item, ItemId};

/// The first byte of a format-2 record.
const COMPRESSED: u8 = 2;
/// The bytes before the zstd frame: the tag and the content hash.
const HEADER: usize = 9;
/// zstd's level: about 3x on news items' JSON and HTML, at hundreds of MB/s.
const LEVEL: i32 = 3;

/// The record of `item`, in format 2.
pub fn encode(item: &Item) -> Vec<u8> {
    let json = super::encode(item);
    let mut out = Vec::with_capacity(HEADER + json.len() / 2);
    out.push(COMPRESSED);
    out.extend_from_slice(&item.content_hash.to_le_bytes());
    match compress(&json) {
        Ok(frame) => {
            out.extend_from_slice(&frame);
            out
        }
        // zstd fails only on allocation; the JSON form is still a valid record.
        Err(_) => json,
    }
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

/// The largest JSON a frame may claim to hold before it is read as a stream instead (a
/// damaged header must not make a huge allocation): ten times the largest feed body.
const MAX_JSON: usize = 100 * 1024 * 1024;

/// The item a record holds, in either format.
pub fn decode(bytes: &[u8]) -> Result<Item, StoreError> {
    if !is_compressed(bytes) {
        return super::decode(bytes, "item");
    }
    let frame = bytes.get(HEADER..).unwrap_or_default();
    let json = decompress(frame).map_err(|e| StoreError::Corrupt {
        what: "item",
        message: format!("compressed record: {e}"),
    })?;
    super::decode(&json, "item")
}

/// The content hash of the item a record holds, without decompressing it.
pub fn content_hash(bytes: &[u8]) -> Result<u64, StoreError> {
    #[derive(serde::Deserialize)]
    struct HashOnly {
        content_hash: u64,
    }
    if !is_compressed(bytes) {
        return Ok(super::decode::<HashOnly>(bytes, "item")?.content_hash);
    }
    let hash: [u8; 8] = bytes
        .get(1..HEADER)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt {
            what: "item",
            message: format!("a compressed record of {} bytes", bytes.len()),
        })?;
    Ok(u64::from_le_bytes(hash))
}

/// Whether a record is in format 2 (format 1 is JSON, which starts with `{`).
pub fn is_compressed(bytes: &[u8]) -> bool {
    bytes.first() == Some(&COMPRESSED)
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
        let record = encode(&item);
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
        let written = encode(&item);
        assert!(matches!(
            zstd::zstd_safe::get_frame_content_size(&written[HEADER..]),
            Ok(Some(_))
        ));
    }

    #[test]
    fn a_damaged_record_is_an_error_not_a_panic() {
        let record = encode(&item());
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
}
