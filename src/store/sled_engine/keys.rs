//! Key layouts of the trees (see the table in [`super`]): times reversed so that sled's
//! ordered iteration is newest first, names ended by 0.

use super::*;

/// Newer times sort first: the key holds `i64::MAX - microseconds since 1970`.
pub(super) fn reverse_time(t: DateTime<Utc>) -> [u8; 8] {
    let micros = t.timestamp_micros().max(0);
    ((i64::MAX - micros) as u64).to_be_bytes()
}

/// The time a [`reverse_time`] key part stands for.
pub(super) fn time_of_reverse(bytes: [u8; 8]) -> Option<DateTime<Utc>> {
    let micros = i64::MAX - i64::try_from(u64::from_be_bytes(bytes)).ok()?;
    DateTime::from_timestamp_micros(micros)
}

/// The time of the [`reverse_time`] key part at `at` in `key`.
pub(super) fn time_at(key: &[u8], at: usize) -> Option<DateTime<Utc>> {
    key.get(at..at.checked_add(8)?)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .and_then(time_of_reverse)
}

/// The time and item of a [`time_key`].
pub(super) fn parse_time_key(key: &[u8]) -> Option<(DateTime<Utc>, ItemId)> {
    Some((time_at(key, 0)?, key.get(8..).and_then(ItemId::from_slice)?))
}

pub(super) fn time_key(t: DateTime<Utc>, id: ItemId) -> Vec<u8> {
    let mut key = Vec::with_capacity(24);
    key.extend_from_slice(&reverse_time(t));
    key.extend_from_slice(&id.0);
    key
}

pub(super) fn name_prefix(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 1);
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key
}

pub(super) fn prefixed_key(name: &str, t: DateTime<Utc>, id: ItemId) -> Vec<u8> {
    let mut key = name_prefix(name);
    key.extend_from_slice(&reverse_time(t));
    key.extend_from_slice(&id.0);
    key
}

pub(super) fn tombstone_key(source: &str, id: ItemId) -> Vec<u8> {
    let mut key = name_prefix(source);
    key.extend_from_slice(&id.0);
    key
}

pub(super) fn story_key(story: ItemId, member: ItemId) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(&story.0);
    key[16..].copy_from_slice(&member.0);
    key
}

pub(super) fn url_key(canonical: &str) -> [u8; 16] {
    let digest = Sha256::digest(canonical.as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

/// Four bytes of a hash of a source's name.
pub(super) fn source_tag(source: &str) -> [u8; 4] {
    let digest = Sha256::digest(source.as_bytes());
    [digest[0], digest[1], digest[2], digest[3]]
}
