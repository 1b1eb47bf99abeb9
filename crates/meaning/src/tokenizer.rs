//! XLM-RoBERTa's SentencePiece unigram tokenizer: the file's per-character normalisation,
//! spaces as `▁`, then the most probable cut of the text into known pieces (Viterbi).

use std::collections::HashMap;

/// SentencePiece's mark for a space.
const SPACE_MARK: char = '\u{2581}';
/// Ids below this are the control tokens (`<s>`, `<pad>`, `</s>`, `<unk>`): never matched in
/// text.
const CONTROL_TOKENS: u32 = 4;

pub(crate) struct Tokenizer {
    ids: HashMap<Box<[u8]>, u32>,
    texts: Vec<Box<str>>,
    scores: Vec<f32>,
    normalise: HashMap<char, Box<[char]>>,
    unknown_score: f32,
    longest_piece: usize,
    pub bos: u32,
    pub eos: u32,
    unk: u32,
}

impl Tokenizer {
    pub fn new(
        texts: Vec<Box<str>>,
        scores: Vec<f32>,
        normalise: HashMap<char, Box<[char]>>,
        bos: u32,
        eos: u32,
        unk: u32,
    ) -> Tokenizer {
        let mut ids = HashMap::with_capacity(texts.len());
        for (id, text) in texts.iter().enumerate() {
            let id = id as u32;
            if id >= CONTROL_TOKENS && id != unk && !text.is_empty() {
                ids.entry(text.as_bytes().into()).or_insert(id);
            }
        }
        let lowest = scores.iter().copied().fold(0.0f32, f32::min);
        let longest_piece = texts.iter().map(|t| t.len()).max().unwrap_or(1);
        Tokenizer {
            ids,
            texts,
            scores,
            normalise,
            unknown_score: lowest - 10.0,
            longest_piece,
            bos,
            eos,
            unk,
        }
    }

    pub fn pieces(&self) -> usize {
        self.texts.len()
    }

    pub fn piece(&self, id: u32) -> Option<&str> {
        self.texts.get(id as usize).map(|t| &**t)
    }

    /// The ids of the pieces `text` is cut into.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        let marked = self.normalised(text);
        // Byte offset of each character, and of the end.
        let mut starts: Vec<usize> = marked.char_indices().map(|(i, _)| i).collect();
        starts.push(marked.len());
        let n = starts.len() - 1;
        // best[e]: the best score of a cut of the first e characters, and its last piece.
        let mut best: Vec<(f32, u32, usize)> = vec![(f32::NEG_INFINITY, 0, 0); n + 1];
        best[0].0 = 0.0;
        for i in 0..n {
            let base = best[i].0;
            if base == f32::NEG_INFINITY {
                continue;
            }
            for e in i + 1..=n {
                let piece = &marked.as_bytes()[starts[i]..starts[e]];
                if piece.len() > self.longest_piece {
                    break;
                }
                if let Some(&id) = self.ids.get(piece) {
                    let score = base + self.scores[id as usize];
                    if score > best[e].0 {
                        best[e] = (score, id, i);
                    }
                }
            }
            // A character no piece covers is one unknown token.
            let unknown = base + self.unknown_score;
            if unknown > best[i + 1].0 {
                best[i + 1] = (unknown, self.unk, i);
            }
        }
        let mut out = Vec::new();
        let mut e = n;
        while e > 0 {
            let (_, id, from) = best[e];
            out.push(id);
            e = from;
        }
        out.reverse();
        out
    }

    /// The text as the pieces spell it: each character normalised, runs of spaces made one,
    /// a leading space added, and spaces written `▁`.
    fn normalised(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 3);
        let push = |c: char, out: &mut String| {
            if c == ' ' && (out.is_empty() || out.ends_with(SPACE_MARK)) {
                if out.is_empty() {
                    out.push(SPACE_MARK);
                }
                return;
            }
            if out.is_empty() {
                out.push(SPACE_MARK);
            }
            out.push(if c == ' ' { SPACE_MARK } else { c });
        };
        for c in text.chars() {
            match self.normalise.get(&c) {
                Some(replacement) => {
                    for r in replacement.iter() {
                        push(*r, &mut out);
                    }
                }
                None => push(c, &mut out),
            }
        }
        if out.is_empty() {
            out.push(SPACE_MARK);
        }
        out
    }
}
