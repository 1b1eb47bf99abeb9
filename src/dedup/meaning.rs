//! What an item means, as a sentence model sees it: the optional second opinion on whether
//! two items are one story, for rewrites that share few words ("lays off hundreds" / "cuts
//! hundreds of jobs", "递表" / "递交上市申请").
//!
//! `dedup.model` names the model file (multilingual-e5-small in 4-bit form, see docs/deduplication.md); when
//! it is set, each new item's title and lead are embedded once at ingest and the vector is
//! kept, rounded to bytes, in its fingerprint. Comparing two items is then a dot product.
//! This module owns loading the model (once per file, shared by reloads) and the stored
//! vector; deciding what a similarity means is the fingerprint's job.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// Tokens of an item (title first, then its lead) that are embedded at most: enough for a
/// title and two or three sentences, and the cost grows with the square of it.
pub const MAX_TOKENS: usize = 160;

/// A loaded sentence model and the file it came from.
#[derive(Clone)]
pub struct MeaningModel {
    path: PathBuf,
    /// Names the model file's contents, so that meanings of two models are never compared.
    tag: u32,
    model: Arc<feedmux_meaning::Model>,
}

impl std::fmt::Debug for MeaningModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeaningModel")
            .field("path", &self.path)
            .finish()
    }
}

impl PartialEq for MeaningModel {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path && Arc::ptr_eq(&self.model, &other.model)
    }
}

/// The model last loaded, so that a config reload naming the same unchanged file does not
/// read 72 MB again.
static LOADED: Mutex<Option<(PathBuf, std::time::SystemTime, MeaningModel)>> = Mutex::new(None);

impl MeaningModel {
    /// Loads the model at `path`, or returns the one already loaded from it if the file has
    /// not changed since.
    pub fn load(path: &Path) -> Result<MeaningModel, feedmux_meaning::LoadError> {
        let modified = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(feedmux_meaning::LoadError::Io)?;
        let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((p, m, model)) = loaded.as_ref() {
            if p == path && *m == modified {
                return Ok(model.clone());
            }
        }
        let bytes = std::fs::read(path).map_err(feedmux_meaning::LoadError::Io)?;
        let model = MeaningModel {
            path: path.to_owned(),
            tag: xxhash_rust::xxh3::xxh3_64(&bytes) as u32,
            model: Arc::new(feedmux_meaning::Model::from_bytes(&bytes)?),
        };
        *loaded = Some((path.to_owned(), modified, model.clone()));
        Ok(model)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Which forward kernel this machine runs: `"avx2"` or `"portable"`.
    pub fn kernel(&self) -> &'static str {
        feedmux_meaning::Model::kernel()
    }

    /// What names this model's meanings ([`Meaning::model`]).
    pub fn tag(&self) -> u32 {
        self.tag
    }

    /// The meaning of an item's title and the lead of its body text (the first
    /// 600 characters, as its terms are taken).
    pub fn meaning_of(&self, title: &str, body: &str) -> Meaning {
        let lead: String = body.chars().take(super::fingerprint::BODY_CHARS).collect();
        let text = if lead.is_empty() {
            title.to_owned()
        } else {
            format!("{title}. {lead}")
        };
        Meaning::from_unit(self.tag, &self.model.embed(&text, MAX_TOKENS))
    }
}

/// A unit vector rounded to bytes (its largest component becomes ±127): 384 bytes for e5-small.
/// The rounding moves a cosine by well under 0.001.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meaning {
    /// The tag of the model that computed it ([`MeaningModel::tag`]).
    pub model: u32,
    pub values: Vec<i8>,
}

impl Meaning {
    fn from_unit(model: u32, v: &[f32]) -> Meaning {
        let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let scale = if max > 0.0 { 127.0 / max } else { 0.0 };
        Meaning {
            model,
            values: v
                .iter()
                .map(|x| (x * scale).round().clamp(-127.0, 127.0) as i8)
                .collect(),
        }
    }

    /// Cosine similarity; `None` for meanings of two different models, which say nothing
    /// about each other (after `dedup.model` names another file).
    pub fn cosine(&self, other: &Meaning) -> Option<f32> {
        if self.model != other.model || self.values.len() != other.values.len() {
            return None;
        }
        let (a, b) = (&self.values, &other.values);
        let (dot, na, nb) = (dot_i8(a, b), dot_i8(a, a), dot_i8(b, b));
        if na == 0 || nb == 0 {
            return Some(0.0);
        }
        Some((f64::from(dot) / (f64::from(na).sqrt() * f64::from(nb).sqrt())) as f32)
    }
}

/// Dot product of two byte vectors. A vector of up to 130,000 bytes cannot overflow (127² a
/// component); the compiler vectorises this form.
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .fold(0i32, i32::wrapping_add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_to_bytes_keeps_the_cosine() {
        let a: Vec<f32> = (0..384).map(|i| ((i * 7919) % 101) as f32 - 50.0).collect();
        let b: Vec<f32> = (0..384)
            .map(|i| ((i * 104_729) % 97) as f32 - 48.0)
            .collect();
        let unit = |v: &[f32]| {
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter().map(|x| x / n).collect::<Vec<f32>>()
        };
        let (a, b) = (unit(&a), unit(&b));
        let exact: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let rounded = Meaning::from_unit(7, &a)
            .cosine(&Meaning::from_unit(7, &b))
            .unwrap();
        assert!((exact - rounded).abs() < 0.001, "{exact} vs {rounded}");
        let same = Meaning::from_unit(7, &a).cosine(&Meaning::from_unit(7, &a));
        assert!((same.unwrap() - 1.0).abs() < 1e-6);
        // Another model's meaning is not compared at all.
        assert_eq!(
            Meaning::from_unit(8, &a).cosine(&Meaning::from_unit(7, &a)),
            None
        );
        assert_eq!(Meaning::default().cosine(&Meaning::default()), Some(0.0));
    }

    #[test]
    fn a_missing_or_foreign_file_is_a_clear_error() {
        let err = MeaningModel::load(Path::new("/nonexistent/model.bin")).unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.bin");
        std::fs::write(&path, b"<html>not found</html>").unwrap();
        let err = MeaningModel::load(&path).unwrap_err();
        assert!(err.to_string().contains("not an E5S1 model"), "{err}");
    }
}
