use super::*;

pub(crate) fn empty() -> &'static [u8] {
    &[]
}

pub(crate) fn reencode(
    old_prefix: &[u8],
    old_encoded_key: &IVec,
    new_prefix_length: usize,
) -> IVec {
    IVec::from(reencode_slice(old_prefix, old_encoded_key, new_prefix_length))
}

/// feedmux patch 9: [`reencode`] of a key in a packed leaf (`leaf.rs`).
pub(crate) fn reencode_slice(
    old_prefix: &[u8],
    old_encoded_key: &[u8],
    new_prefix_length: usize,
) -> Vec<u8> {
    old_prefix
        .iter()
        .chain(old_encoded_key.iter())
        .skip(new_prefix_length)
        .copied()
        .collect()
}

pub(crate) fn decode(old_prefix: &[u8], old_encoded_key: &[u8]) -> IVec {
    let mut decoded_key =
        Vec::with_capacity(old_prefix.len() + old_encoded_key.len());
    decoded_key.extend_from_slice(old_prefix);
    decoded_key.extend_from_slice(old_encoded_key);

    IVec::from(decoded_key)
}
