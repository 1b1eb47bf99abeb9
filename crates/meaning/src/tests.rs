//! Tests on a small model written here (two layers, width 64) and, when the real e5 file is
//! there, on that.

use super::*;

/// Writes an `E5S1` file with the given pieces and random-looking weights.
fn tiny_model(pieces: &[(&str, f32)], normalise: &[(char, &str)]) -> Vec<u8> {
    let (hidden, layers, heads, ff, positions, types) =
        (64usize, 2usize, 4usize, 128usize, 16usize, 2usize);
    let vocab = pieces.len();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let mut out = Vec::new();
    out.extend_from_slice(b"E5S1");
    out.extend_from_slice(&1u32.to_le_bytes());
    for v in [hidden, layers, heads, ff, vocab, positions, types] {
        out.extend_from_slice(&(v as i32).to_le_bytes());
    }
    out.extend_from_slice(&1e-12f32.to_le_bytes());
    out.extend_from_slice(&32i32.to_le_bytes());
    // Tokenizer: <s> <pad> </s> <unk> first.
    out.extend_from_slice(&(vocab as i32).to_le_bytes());
    for id in [0i32, 2, 1, 3] {
        out.extend_from_slice(&id.to_le_bytes());
    }
    let blob: Vec<u8> = pieces.iter().flat_map(|(p, _)| p.bytes()).collect();
    out.extend_from_slice(&(blob.len() as u64).to_le_bytes());
    let mut offset = 0u32;
    out.extend_from_slice(&offset.to_le_bytes());
    for (p, _) in pieces {
        offset += p.len() as u32;
        out.extend_from_slice(&offset.to_le_bytes());
    }
    for (_, score) in pieces {
        out.extend_from_slice(&score.to_le_bytes());
    }
    out.extend_from_slice(&blob);
    let mut map = Vec::new();
    for (from, to) in normalise {
        map.extend_from_slice(&(*from as u32).to_le_bytes());
        map.push(to.chars().count() as u8);
        for c in to.chars() {
            map.extend_from_slice(&(c as u32).to_le_bytes());
        }
    }
    out.extend_from_slice(&(normalise.len() as i32).to_le_bytes());
    out.extend_from_slice(&(map.len() as u32).to_le_bytes());
    out.extend_from_slice(&map);

    // Tensors: names and shapes, then the data after the directory.
    let mut tensors: Vec<(String, bool, usize)> = vec![
        ("emb.word".into(), true, vocab * hidden),
        ("emb.pos".into(), false, positions * hidden),
        ("emb.type".into(), false, types * hidden),
        ("emb.ln.w".into(), false, hidden),
        ("emb.ln.b".into(), false, hidden),
    ];
    for l in 0..layers {
        for (name, q, n) in [
            ("q.w", true, hidden * hidden),
            ("q.b", false, hidden),
            ("k.w", true, hidden * hidden),
            ("k.b", false, hidden),
            ("v.w", true, hidden * hidden),
            ("v.b", false, hidden),
            ("ao.w", true, hidden * hidden),
            ("ao.b", false, hidden),
            ("aln.w", false, hidden),
            ("aln.b", false, hidden),
            ("fi.w", true, ff * hidden),
            ("fi.b", false, ff),
            ("fo.w", true, hidden * ff),
            ("fo.b", false, hidden),
            ("oln.w", false, hidden),
            ("oln.b", false, hidden),
        ] {
            tensors.push((format!("l{l}.{name}"), q, n));
        }
    }
    let size = |q: bool, n: usize| if q { n / 32 * 18 } else { n * 4 };
    let directory: usize = tensors
        .iter()
        .map(|(name, _, _)| 2 + name.len() + 1 + 4 + 16)
        .sum();
    let mut data_at = out.len() + 4 + directory;
    out.extend_from_slice(&(tensors.len() as i32).to_le_bytes());
    for (name, q, n) in &tensors {
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(u8::from(*q));
        out.extend_from_slice(&(*n as u32).to_le_bytes());
        out.extend_from_slice(&(data_at as u64).to_le_bytes());
        out.extend_from_slice(&(size(*q, *n) as u64).to_le_bytes());
        data_at += size(*q, *n);
    }
    for (name, q, n) in &tensors {
        if *q {
            for _ in 0..n / 32 {
                out.extend_from_slice(&0x2C00u16.to_le_bytes()); // 1/16
                for _ in 0..16 {
                    out.push(((random() + 0.5) * 255.0) as u8);
                }
            }
        } else {
            let one = name.ends_with("ln.w");
            for _ in 0..*n {
                let v = if one { 1.0 } else { random() * 0.2 };
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    out
}

const PIECES: &[(&str, f32)] = &[
    ("<s>", 0.0),
    ("<pad>", 0.0),
    ("</s>", 0.0),
    ("<unk>", 0.0),
    ("▁", -3.0),
    ("▁a", -2.0),
    ("b", -2.0),
    ("▁ab", -3.0),
    ("c", -2.5),
    ("▁abc", -9.0),
    ("query:", -1.0),
    ("▁query:", -1.0),
    ("智", -4.0),
    ("谱", -4.0),
    ("智谱", -5.0),
];

fn tiny() -> Model {
    let bytes = tiny_model(PIECES, &[('\u{3000}', " "), ('Ａ', "a"), ('\u{200B}', "")]);
    Model::from_bytes(&bytes).expect("the tiny model loads")
}

fn tokens<'a>(model: &'a Model, text: &str) -> Vec<&'a str> {
    model
        .tokenize(text)
        .into_iter()
        .map(|id| model.piece(id).unwrap_or("?"))
        .collect()
}

#[test]
fn text_is_cut_into_its_most_probable_pieces() {
    let m = tiny();
    // "▁ab" + "c" (-5.5) beats "▁abc" (-9) and "▁a" + "b" + "c" (-6.5).
    assert_eq!(tokens(&m, "abc"), ["▁ab", "c"]);
    assert_eq!(tokens(&m, "智谱"), ["▁", "智谱"]);
    // Runs of spaces count once; the normalisation map applies first.
    assert_eq!(tokens(&m, "ab   ab"), ["▁ab", "▁ab"]);
    assert_eq!(tokens(&m, "Ａb\u{3000}ab"), ["▁ab", "▁ab"]);
    assert_eq!(tokens(&m, "a\u{200B}b"), ["▁ab"]);
    // A character no piece covers is one unknown token; control tokens never match text.
    assert_eq!(tokens(&m, "abx"), ["▁ab", "<unk>"]);
    assert_eq!(tokens(&m, "<s>"), ["▁", "<unk>", "<unk>", "<unk>"]);
}

#[test]
fn an_embedding_is_unit_length_and_the_same_each_time() {
    let m = tiny();
    assert_eq!(m.dim(), 64);
    let a = m.embed("abc 智谱", 16);
    let norm: f32 = a.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    assert_eq!(a, m.embed("abc 智谱", 16));
    assert_ne!(a, m.embed("ab 谱", 16));
    // Longer than the positions: cut to them, no panic.
    let long = m.embed(&"abc ".repeat(100), 1000);
    assert_eq!(long.len(), 64);
    assert!(long.iter().all(|v| v.is_finite()));
    assert_eq!(m.embed("", 16).len(), 64);
}

#[test]
fn damaged_files_are_errors_not_panics() {
    let bytes = tiny_model(PIECES, &[]);
    assert!(matches!(
        Model::from_bytes(b"GGUF...."),
        Err(LoadError::NotAModel(_))
    ));
    assert!(Model::from_bytes(b"").is_err());
    // Every cut of the file is refused.
    for len in (0..bytes.len() - 1).step_by(97) {
        assert!(Model::from_bytes(&bytes[..len]).is_err(), "cut at {len}");
    }
    // A flipped byte anywhere in the header and directory never panics.
    for at in (0..2_000.min(bytes.len())).step_by(3) {
        let mut bad = bytes.clone();
        bad[at] ^= 0xA5;
        let _ = Model::from_bytes(&bad);
    }
    let err = Model::load(std::path::Path::new("/nonexistent/e5.bin")).unwrap_err();
    assert!(err.to_string().contains("cannot read"), "{err}");
}

/// The real model: `FEEDMUX_MEANING_MODEL`, else where feedmux's tools/fetch-meaning-model
/// puts it (as feedmux's CI does).
fn real() -> Option<Model> {
    let path = std::env::var_os("FEEDMUX_MEANING_MODEL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/meaning/e5-small-q4.bin")
        });
    if !path.exists() {
        return None;
    }
    Some(Model::load(&path).expect("the model file loads"))
}

#[test]
fn the_real_model_tokenizes_like_xlm_roberta_and_knows_a_paraphrase() {
    let Some(m) = real() else {
        eprintln!("no model file (tools/fetch-meaning-model): the real model is not checked here");
        return;
    };
    assert_eq!(m.dim(), 384);
    // XLM-RoBERTa's ids for these words.
    assert_eq!(m.tokenize("Hello world"), [35378, 8999]);
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let a = m.embed("Meta lays off hundreds in its AI research division", 128);
    let b = m.embed("Meta cuts hundreds of AI research jobs", 128);
    let c = m.embed("Nvidia reports record data center revenue", 128);
    assert!(
        cos(&a, &b) > cos(&a, &c) + 0.03,
        "{} vs {}",
        cos(&a, &b),
        cos(&a, &c)
    );
    let zh_a = m.embed("智谱向港交所递交上市申请", 128);
    let zh_b = m.embed("智谱AI正式递表港交所", 128);
    let zh_c = m.embed("华为发布新一代昇腾芯片", 128);
    assert!(cos(&zh_a, &zh_b) > cos(&zh_a, &zh_c) + 0.03);
}
