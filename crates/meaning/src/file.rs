//! The `E5S1` model file: a header, the tokenizer's pieces and normalisation map, and a
//! directory of named tensors (f32, or 4-bit blocks of 32 weights with an f16 scale).
//!
//! Layout, all little-endian:
//! - `"E5S1"`, version (u32), hidden, layers, heads, feed-forward width, vocabulary rows,
//!   positions, token types (i32 each), layer-norm epsilon (f32), block size (i32, 32);
//! - pieces (i32), ids of `<s>`, `</s>`, `<pad>`, `<unk>` (i32 each), piece bytes (u64), piece
//!   offsets (u32, pieces + 1), piece scores (f32, pieces), the piece bytes;
//! - normalisation entries (i32), their bytes (u32), then for each: code point (u32), count
//!   (u8), replacement code points (u32 each);
//! - tensors (i32), then for each: name length (u16), name, type (u8: 0 f32, 1 4-bit),
//!   elements (u32), offset from the file's start (u64), bytes (u64).

use std::collections::HashMap;

use crate::forward::{Layer, LayerNorm, Linear, Q4Matrix, Weights, BLOCK};
use crate::tokenizer::Tokenizer;

/// Why a model file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the model file: {0}")]
    Io(std::io::Error),
    #[error("not an E5S1 model file (it starts with {0:?})")]
    NotAModel(Vec<u8>),
    #[error("the model file is cut short or damaged: {0}")]
    Damaged(String),
}

fn damaged(message: impl Into<String>) -> LoadError {
    LoadError::Damaged(message.into())
}

pub(crate) struct Parsed {
    pub tokenizer: Tokenizer,
    pub weights: Weights,
}

/// A cursor over the file that never reads past its end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], LoadError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| damaged(format!("{what} runs past the end of the file")))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, LoadError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, LoadError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, LoadError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> Result<u64, LoadError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn f32(&mut self, what: &str) -> Result<f32, LoadError> {
        Ok(f32::from_bits(self.u32(what)?))
    }

    /// A count or size that must be positive and at most `max`.
    fn count(&mut self, what: &str, max: usize) -> Result<usize, LoadError> {
        let v = self.u32(what)? as i32;
        usize::try_from(v)
            .ok()
            .filter(|v| (1..=max).contains(v))
            .ok_or_else(|| damaged(format!("{what} is {v}, outside 1..={max}")))
    }
}

struct Shape {
    hidden: usize,
    layers: usize,
    heads: usize,
    ff: usize,
    vocab: usize,
    positions: usize,
    types: usize,
    eps: f32,
}

pub(crate) fn parse(bytes: &[u8]) -> Result<Parsed, LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"E5S1" {
        return Err(LoadError::NotAModel(bytes[..bytes.len().min(4)].to_vec()));
    }
    let mut r = Reader { bytes, at: 8 };
    let shape = Shape {
        hidden: r.count("hidden size", 4096)?,
        layers: r.count("layer count", 64)?,
        heads: r.count("head count", 64)?,
        ff: r.count("feed-forward size", 16384)?,
        vocab: r.count("vocabulary rows", 1 << 22)?,
        positions: r.count("positions", 8192)?,
        types: r.count("token types", 16)?,
        eps: r.f32("layer-norm epsilon")?,
    };
    let block = r.count("block size", 1024)?;
    if block != BLOCK
        || shape.hidden % BLOCK != 0
        || shape.ff % BLOCK != 0
        || shape.hidden % shape.heads != 0
        || !(shape.eps.is_finite() && shape.eps > 0.0)
    {
        return Err(damaged(format!(
            "unsupported shape: hidden {}, heads {}, feed-forward {}, block {block}, epsilon {}",
            shape.hidden, shape.heads, shape.ff, shape.eps
        )));
    }
    let tokenizer = read_tokenizer(&mut r, shape.vocab)?;
    let tensors = read_directory(&mut r)?;
    let weights = read_weights(bytes, &tensors, &shape)?;
    Ok(Parsed { tokenizer, weights })
}

fn read_tokenizer(r: &mut Reader<'_>, vocab: usize) -> Result<Tokenizer, LoadError> {
    let pieces = r.count("piece count", vocab)?;
    let special = |r: &mut Reader<'_>, what: &str| -> Result<u32, LoadError> {
        let id = r.u32(what)?;
        if (id as usize) < pieces {
            Ok(id)
        } else {
            Err(damaged(format!("{what} id {id} is not a piece")))
        }
    };
    let bos = special(r, "<s>")?;
    let eos = special(r, "</s>")?;
    let _pad = special(r, "<pad>")?;
    let unk = special(r, "<unk>")?;
    let blob_len = usize::try_from(r.u64("piece bytes")?)
        .map_err(|_| damaged("piece bytes do not fit in memory"))?;
    let offsets: Vec<usize> = r
        .take((pieces + 1) * 4, "piece offsets")?
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let scores: Vec<f32> = r
        .take(pieces * 4, "piece scores")?
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let blob = r.take(blob_len, "piece bytes")?;
    let mut texts = Vec::with_capacity(pieces);
    for (i, pair) in offsets.windows(2).enumerate() {
        let piece = blob
            .get(pair[0]..pair[1])
            .ok_or_else(|| damaged(format!("piece {i} lies outside the piece bytes")))?;
        let text =
            std::str::from_utf8(piece).map_err(|_| damaged(format!("piece {i} is not UTF-8")))?;
        texts.push(text.to_owned().into_boxed_str());
    }
    if scores.iter().any(|s| !s.is_finite()) {
        return Err(damaged("a piece score is not a number"));
    }

    let entries = r.u32("normalisation entries")? as usize;
    let map_len = r.u32("normalisation bytes")? as usize;
    let mut map = Reader {
        bytes: r.take(map_len, "normalisation map")?,
        at: 0,
    };
    // Each entry takes at least 5 bytes: a count beyond that is a damaged file, not a reason
    // to reserve memory.
    let mut normalise: HashMap<char, Box<[char]>> =
        HashMap::with_capacity(entries.min(map_len / 5));
    for _ in 0..entries {
        let from = map.u32("normalised code point")?;
        let n = map.u8("replacement length")? as usize;
        let mut to = Vec::with_capacity(n);
        for _ in 0..n {
            let c = map.u32("replacement code point")?;
            to.push(char::from_u32(c).ok_or_else(|| damaged(format!("U+{c:X} is no char")))?);
        }
        if let Some(from) = char::from_u32(from) {
            normalise.insert(from, to.into_boxed_slice());
        }
    }
    Ok(Tokenizer::new(texts, scores, normalise, bos, eos, unk))
}

struct Tensor<'a> {
    quantised: bool,
    elements: usize,
    bytes: std::ops::Range<usize>,
    name: &'a str,
}

fn read_directory<'a>(r: &mut Reader<'a>) -> Result<HashMap<&'a str, Tensor<'a>>, LoadError> {
    let count = r.count("tensor count", 100_000)?;
    let mut out = HashMap::with_capacity(count);
    for _ in 0..count {
        let len = r.u16("tensor name length")? as usize;
        let name = std::str::from_utf8(r.take(len, "tensor name")?)
            .map_err(|_| damaged("a tensor name is not UTF-8"))?;
        let kind = r.u8("tensor type")?;
        let elements = r.u32("tensor elements")? as usize;
        let offset = r.u64("tensor offset")?;
        let size = r.u64("tensor bytes")?;
        let start = usize::try_from(offset).map_err(|_| damaged("tensor offset too large"))?;
        let size = usize::try_from(size).map_err(|_| damaged("tensor size too large"))?;
        let end = start
            .checked_add(size)
            .filter(|end| *end <= r.bytes.len())
            .ok_or_else(|| damaged(format!("tensor {name} lies past the end of the file")))?;
        if kind > 1 {
            return Err(damaged(format!("tensor {name} has unknown type {kind}")));
        }
        out.insert(
            name,
            Tensor {
                quantised: kind == 1,
                elements,
                bytes: start..end,
                name,
            },
        );
    }
    Ok(out)
}

fn read_weights(
    bytes: &[u8],
    tensors: &HashMap<&str, Tensor<'_>>,
    shape: &Shape,
) -> Result<Weights, LoadError> {
    let find = |name: &str| {
        tensors
            .get(name)
            .ok_or_else(|| damaged(format!("tensor {name} is missing")))
    };
    let floats = |name: &str, len: usize| -> Result<Vec<f32>, LoadError> {
        let t = find(name)?;
        if t.quantised || t.elements != len || t.bytes.len() != len * 4 {
            return Err(damaged(format!(
                "tensor {} is not {len} f32 values",
                t.name
            )));
        }
        let out: Vec<f32> = bytes[t.bytes.clone()]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if out.iter().any(|v| !v.is_finite()) {
            return Err(damaged(format!(
                "tensor {name} holds a value that is not a number"
            )));
        }
        Ok(out)
    };
    let matrix = |name: &str, rows: usize, cols: usize| -> Result<Q4Matrix, LoadError> {
        let t = find(name)?;
        let blocks = rows * cols / BLOCK;
        if !t.quantised || t.elements != rows * cols || t.bytes.len() != blocks * 18 {
            return Err(damaged(format!(
                "tensor {} is not a {rows}×{cols} matrix of 4-bit blocks",
                t.name
            )));
        }
        Q4Matrix::from_blocks(&bytes[t.bytes.clone()], rows, cols)
            .ok_or_else(|| damaged(format!("tensor {name} has a scale that is not a number")))
    };
    let (h, ff) = (shape.hidden, shape.ff);
    let linear = |prefix: String, rows: usize, cols: usize| -> Result<Linear, LoadError> {
        Ok(Linear {
            weight: matrix(&format!("{prefix}.w"), rows, cols)?,
            bias: floats(&format!("{prefix}.b"), rows)?,
        })
    };
    let norm = |prefix: String| -> Result<LayerNorm, LoadError> {
        Ok(LayerNorm {
            weight: floats(&format!("{prefix}.w"), h)?,
            bias: floats(&format!("{prefix}.b"), h)?,
        })
    };
    let mut layers = Vec::with_capacity(shape.layers);
    for l in 0..shape.layers {
        layers.push(Layer {
            query: linear(format!("l{l}.q"), h, h)?,
            key: linear(format!("l{l}.k"), h, h)?,
            value: linear(format!("l{l}.v"), h, h)?,
            attention_out: linear(format!("l{l}.ao"), h, h)?,
            attention_norm: norm(format!("l{l}.aln"))?,
            ff_in: linear(format!("l{l}.fi"), ff, h)?,
            ff_out: linear(format!("l{l}.fo"), h, ff)?,
            out_norm: norm(format!("l{l}.oln"))?,
        });
    }
    let token_types = floats("emb.type", shape.types * h)?;
    Ok(Weights {
        hidden: h,
        heads: shape.heads,
        ff,
        positions: shape.positions,
        eps: shape.eps,
        words: matrix("emb.word", shape.vocab, h)?,
        position: floats("emb.pos", shape.positions * h)?,
        token_type: token_types[..h].to_vec(),
        embedding_norm: norm("emb.ln".to_owned())?,
        layers,
    })
}
