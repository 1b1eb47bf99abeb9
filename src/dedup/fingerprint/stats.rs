//! [`TermStats`]: how common each term is among the items seen, for the inverse document
//! frequency that weighs terms. Pure data; the store keeps it.

use super::*;

/// How common each term is among the items seen: a count-min sketch of document frequencies
/// (fixed size, 1 MiB) and the number of documents. Collisions can only make a term look
/// more common than it is, so a rare name is never mistaken for noise by accident of hashing
/// more than by its own count.
#[derive(Clone)]
pub struct TermStats {
    docs: u64,
    /// `ln(docs + 1)`, kept with `docs`: every idf needs it, and a store counts more items than
    /// [`LN_TABLE`] holds.
    ln_docs: f64,
    pub(super) counts: Vec<u32>,
}

impl std::fmt::Debug for TermStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TermStats")
            .field("docs", &self.docs)
            .finish()
    }
}

impl Default for TermStats {
    fn default() -> Self {
        TermStats {
            docs: 0,
            ln_docs: ln_of_one_more(0),
            counts: vec![0; SKETCH_ROWS * SKETCH_COLUMNS],
        }
    }
}

/// Document frequencies below this have their logarithm in a table: idf is computed for every
/// term of every candidate a new item is compared with, and `ln` was a tenth of a poll.
pub(super) const LN_TABLE: usize = 4096;

/// `ln(n + 1)`, from a table for small `n`.
pub(super) fn ln_of_one_more(n: u64) -> f64 {
    static TABLE: std::sync::LazyLock<Vec<f64>> =
        std::sync::LazyLock::new(|| (0..LN_TABLE).map(|n| (n as f64 + 1.0).ln()).collect());
    match usize::try_from(n) {
        Ok(small) if small < LN_TABLE => TABLE[small],
        _ => (n as f64 + 1.0).ln(),
    }
}

impl TermStats {
    /// Counts one item's terms (each once).
    pub fn add(&mut self, fingerprint: &Fingerprint) {
        self.docs += 1;
        self.ln_docs = ln_of_one_more(self.docs);
        for term in &fingerprint.terms {
            for row in 0..SKETCH_ROWS {
                let slot = &mut self.counts[Self::slot(term.hash, row)];
                *slot = slot.saturating_add(1);
            }
        }
    }

    /// Items counted.
    pub fn docs(&self) -> u64 {
        self.docs
    }

    /// Items that had `hash` (an upper bound).
    pub fn document_frequency(&self, hash: u32) -> u32 {
        (0..SKETCH_ROWS)
            .map(|row| self.counts[Self::slot(hash, row)])
            .min()
            .unwrap_or(0)
    }

    /// Inverse document frequency, smoothed: 1 for a term every item has, more for rarer ones.
    pub fn idf(&self, hash: u32) -> f32 {
        let df = u64::from(self.document_frequency(hash)).min(self.docs);
        (self.ln_docs - ln_of_one_more(df) + 1.0) as f32
    }

    /// The idf of a term no item has had.
    pub fn max_idf(&self) -> f32 {
        (self.ln_docs + 1.0) as f32
    }

    fn slot(hash: u32, row: usize) -> usize {
        let h = mix(u64::from(hash) ^ (row as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        row * SKETCH_COLUMNS + (h as usize & (SKETCH_COLUMNS - 1))
    }

    /// Adds what `now` counted beyond `base`, an earlier copy of the same statistics: how the
    /// statistics of a store that several processes write are merged (each adds what it
    /// counted since it last merged to the stored ones).
    pub fn add_changes(&mut self, base: &TermStats, now: &TermStats) {
        self.docs = self.docs.saturating_add(now.docs.saturating_sub(base.docs));
        self.ln_docs = ln_of_one_more(self.docs);
        for ((count, before), after) in self.counts.iter_mut().zip(&base.counts).zip(&now.counts) {
            *count = count.saturating_add(after.saturating_sub(*before));
        }
    }

    /// A binary form: version, document count, counters (little-endian).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + 4 * self.counts.len());
        out.push(1u8);
        out.extend_from_slice(&self.docs.to_le_bytes());
        for c in &self.counts {
            out.extend_from_slice(&c.to_le_bytes());
        }
        out
    }

    /// Reads [`TermStats::to_bytes`]'s form; `None` for anything else.
    pub fn from_bytes(bytes: &[u8]) -> Option<TermStats> {
        let (version, rest) = bytes.split_first()?;
        if *version != 1 || rest.len() != 8 + 4 * SKETCH_ROWS * SKETCH_COLUMNS {
            return None;
        }
        let (docs, counts) = rest.split_at(8);
        let docs = u64::from_le_bytes(docs.try_into().ok()?);
        Some(TermStats {
            docs,
            ln_docs: ln_of_one_more(docs),
            counts: counts
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        })
    }
}
