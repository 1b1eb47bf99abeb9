//! The encoder's forward pass over one text: embeddings, then per layer self-attention and a
//! feed-forward block (each followed by a residual layer norm), then the mean over tokens.
//!
//! Matrices are kept as 4-bit blocks (32 weights sharing one scale). Each matrix product
//! first rounds the activations to 8-bit blocks of 32 with their own scale, so that a block's
//! dot product is integer arithmetic: sum(w·a) over nibbles `w` (0..15, meaning w − 8) and
//! bytes `a` is sum(w·a) − 8·sum(a). On x86-64 with AVX2 and FMA (checked at run time) the
//! whole pass is compiled for those instructions and the block dot uses them directly.

pub(crate) const BLOCK: usize = 32;

/// A matrix of `rows` × `cols` weights in 4-bit blocks: per block a scale and 16 bytes of
/// nibbles (byte j holds weight j in its low half and weight j + 16 in its high half).
pub(crate) struct Q4Matrix {
    pub rows: usize,
    pub cols: usize,
    scales: Vec<f32>,
    nibbles: Vec<u8>,
}

impl Q4Matrix {
    /// From the file's blocks (an f16 scale, then 16 bytes); `None` if a scale is not finite.
    pub fn from_blocks(bytes: &[u8], rows: usize, cols: usize) -> Option<Q4Matrix> {
        let blocks = rows * cols / BLOCK;
        let mut scales = Vec::with_capacity(blocks);
        let mut nibbles = Vec::with_capacity(blocks * 16);
        for block in bytes.chunks_exact(18) {
            let scale = f16_to_f32(u16::from_le_bytes([block[0], block[1]]));
            if !scale.is_finite() {
                return None;
            }
            scales.push(scale);
            nibbles.extend_from_slice(&block[2..]);
        }
        Some(Q4Matrix {
            rows,
            cols,
            scales,
            nibbles,
        })
    }

    fn blocks_per_row(&self) -> usize {
        self.cols / BLOCK
    }

    /// Row `r` as floats.
    fn row(&self, r: usize, out: &mut [f32]) {
        let nb = self.blocks_per_row();
        for b in 0..nb {
            let scale = self.scales[r * nb + b];
            let nib = &self.nibbles[(r * nb + b) * 16..][..16];
            let o = &mut out[b * BLOCK..][..BLOCK];
            for j in 0..16 {
                o[j] = (f32::from(nib[j] & 0x0F) - 8.0) * scale;
                o[j + 16] = (f32::from(nib[j] >> 4) - 8.0) * scale;
            }
        }
    }
}

pub(crate) struct Linear {
    pub weight: Q4Matrix,
    pub bias: Vec<f32>,
}

pub(crate) struct LayerNorm {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

pub(crate) struct Layer {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub attention_out: Linear,
    pub attention_norm: LayerNorm,
    pub ff_in: Linear,
    pub ff_out: Linear,
    pub out_norm: LayerNorm,
}

pub(crate) struct Weights {
    pub hidden: usize,
    pub heads: usize,
    pub ff: usize,
    pub positions: usize,
    pub eps: f32,
    pub words: Q4Matrix,
    pub position: Vec<f32>,
    pub token_type: Vec<f32>,
    pub embedding_norm: LayerNorm,
    pub layers: Vec<Layer>,
}

pub(crate) fn kernel_name() -> &'static str {
    if avx2::available() {
        "avx2"
    } else {
        "portable"
    }
}

/// The mean of the last layer's token states (not yet unit length). `ids` must be valid rows
/// of the vocabulary and at most `positions` long; out-of-range ids are read as row 0.
pub(crate) fn mean_pooled(w: &Weights, ids: &[u32]) -> Vec<f32> {
    if avx2::available() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        unsafe { avx2::mean_pooled(w, ids) }
    } else {
        run::<Portable>(w, ids)
    }
}

/// The one operation that differs between kernels: a row of 4-bit weights against a row of
/// 8-bit activations, both `nb` blocks long.
trait BlockDot {
    fn dot(scales: &[f32], nibbles: &[u8], acts: &Q8Row<'_>) -> f32;
}

/// One row of activations rounded to 8-bit blocks.
struct Q8Row<'a> {
    values: &'a [i8],
    scales: &'a [f32],
    sums: &'a [i32],
}

struct Portable;

impl BlockDot for Portable {
    #[inline(always)]
    fn dot(scales: &[f32], nibbles: &[u8], acts: &Q8Row<'_>) -> f32 {
        let mut total = 0.0f32;
        for (b, scale) in scales.iter().enumerate() {
            let nib = &nibbles[b * 16..][..16];
            let a = &acts.values[b * BLOCK..][..BLOCK];
            let mut sum = 0i32;
            for j in 0..16 {
                sum += i32::from(nib[j] & 0x0F) * i32::from(a[j]);
                sum += i32::from(nib[j] >> 4) * i32::from(a[j + 16]);
            }
            total += scale * acts.scales[b] * (sum - 8 * acts.sums[b]) as f32;
        }
        total
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{run, BlockDot, Q8Row, Weights, BLOCK};
    use std::arch::x86_64::*;

    pub fn available() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }

    /// The whole pass compiled for AVX2 and FMA, so that the portable loops vectorise too.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn mean_pooled(w: &Weights, ids: &[u32]) -> Vec<f32> {
        run::<Avx2>(w, ids)
    }

    struct Avx2;

    impl BlockDot for Avx2 {
        #[inline(always)]
        fn dot(scales: &[f32], nibbles: &[u8], acts: &Q8Row<'_>) -> f32 {
            // SAFETY: only reached through `mean_pooled`, whose caller checked AVX2 and FMA.
            unsafe { dot_avx2(scales, nibbles, acts) }
        }
    }

    /// The AVX2 block dot alone, for comparing the kernels.
    #[cfg(test)]
    pub unsafe fn dot_for_test(scales: &[f32], nibbles: &[u8], acts: &Q8Row<'_>) -> f32 {
        dot_avx2(scales, nibbles, acts)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_avx2(scales: &[f32], nibbles: &[u8], acts: &Q8Row<'_>) -> f32 {
        let nb = scales.len();
        assert!(nibbles.len() >= nb * 16 && acts.values.len() >= nb * BLOCK);
        assert!(acts.scales.len() >= nb && acts.sums.len() >= nb);
        let low = _mm_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        let mut offset = 0.0f32;
        for (b, weight_scale) in scales.iter().enumerate() {
            let packed = _mm_loadu_si128(nibbles.as_ptr().add(b * 16) as *const __m128i);
            let lo = _mm_and_si128(packed, low);
            let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low);
            let weights = _mm256_set_m128i(hi, lo);
            let a = _mm256_loadu_si256(acts.values.as_ptr().add(b * BLOCK) as *const __m256i);
            let pairs = _mm256_maddubs_epi16(weights, a);
            let quads = _mm256_madd_epi16(pairs, ones);
            let scale = weight_scale * acts.scales[b];
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(quads), _mm256_set1_ps(scale), acc);
            offset += scale * acts.sums[b] as f32;
        }
        let sum128 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        let sum64 = _mm_add_ps(sum128, _mm_movehl_ps(sum128, sum128));
        let sum32 = _mm_add_ss(sum64, _mm_shuffle_ps(sum64, sum64, 1));
        _mm_cvtss_f32(sum32) - 8.0 * offset
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod avx2 {
    use super::Weights;

    pub fn available() -> bool {
        false
    }

    pub unsafe fn mean_pooled(_: &Weights, _: &[u32]) -> Vec<f32> {
        unreachable!("AVX2 is never reported available off x86-64")
    }
}

/// Activations of `tokens` rows rounded to 8-bit blocks, reused between products.
struct Q8 {
    values: Vec<i8>,
    scales: Vec<f32>,
    sums: Vec<i32>,
    cols: usize,
}

impl Q8 {
    fn new() -> Q8 {
        Q8 {
            values: Vec::new(),
            scales: Vec::new(),
            sums: Vec::new(),
            cols: 0,
        }
    }

    #[inline(always)]
    fn quantise(&mut self, x: &[f32], cols: usize) {
        let rows = x.len() / cols;
        let nb = cols / BLOCK;
        self.cols = cols;
        self.values.resize(rows * cols, 0);
        self.scales.resize(rows * nb, 0.0);
        self.sums.resize(rows * nb, 0);
        for (i, block) in x.chunks_exact(BLOCK).enumerate() {
            let max = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let scale = max / 127.0;
            let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let out = &mut self.values[i * BLOCK..][..BLOCK];
            let mut sum = 0i32;
            for (o, v) in out.iter_mut().zip(block) {
                let q = (v * inverse).round().clamp(-128.0, 127.0) as i8;
                *o = q;
                sum += i32::from(q);
            }
            self.scales[i] = scale;
            self.sums[i] = sum;
        }
    }

    #[inline(always)]
    fn row(&self, r: usize) -> Q8Row<'_> {
        let nb = self.cols / BLOCK;
        Q8Row {
            values: &self.values[r * self.cols..][..self.cols],
            scales: &self.scales[r * nb..][..nb],
            sums: &self.sums[r * nb..][..nb],
        }
    }
}

/// `out[t][o] = bias[o] + W[o] · x[t]` for the quantised rows of `x`.
#[inline(always)]
fn linear<K: BlockDot>(layer: &Linear, x: &Q8, tokens: usize, out: &mut Vec<f32>) {
    let (rows, nb) = (layer.weight.rows, layer.weight.blocks_per_row());
    out.resize(tokens * rows, 0.0);
    for o in 0..rows {
        let scales = &layer.weight.scales[o * nb..][..nb];
        let nibbles = &layer.weight.nibbles[o * nb * 16..][..nb * 16];
        for t in 0..tokens {
            out[t * rows + o] = layer.bias[o] + K::dot(scales, nibbles, &x.row(t));
        }
    }
}

/// `x = norm(x + add)` row by row (`add` may be empty: then `x = norm(x)`).
#[inline(always)]
fn add_and_norm(x: &mut [f32], add: &[f32], norm: &LayerNorm, cols: usize, eps: f32) {
    for (t, row) in x.chunks_exact_mut(cols).enumerate() {
        if !add.is_empty() {
            for (v, a) in row.iter_mut().zip(&add[t * cols..][..cols]) {
                *v += a;
            }
        }
        let mean = row.iter().sum::<f32>() / cols as f32;
        let variance = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / cols as f32;
        let inverse = 1.0 / (variance + eps).sqrt();
        for ((v, w), b) in row.iter_mut().zip(&norm.weight).zip(&norm.bias) {
            *v = (*v - mean) * inverse * w + b;
        }
    }
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    lanes.iter().sum::<f32>() + tail
}

/// Self-attention of every token over every token, head by head: `ctx` gets the heads'
/// weighted values side by side.
#[inline(always)]
fn attend(w: &Weights, q: &[f32], k: &[f32], v: &[f32], tokens: usize, ctx: &mut Vec<f32>) {
    let (h, heads) = (w.hidden, w.heads);
    let width = h / heads;
    let scale = 1.0 / (width as f32).sqrt();
    ctx.clear();
    ctx.resize(tokens * h, 0.0);
    let mut weights = vec![0.0f32; tokens];
    for head in 0..heads {
        let at = head * width;
        for t in 0..tokens {
            let qh = &q[t * h + at..][..width];
            let mut max = f32::NEG_INFINITY;
            for (s, weight) in weights.iter_mut().enumerate() {
                *weight = dot(qh, &k[s * h + at..][..width]) * scale;
                max = max.max(*weight);
            }
            let mut total = 0.0;
            for weight in weights.iter_mut() {
                *weight = (*weight - max).exp();
                total += *weight;
            }
            let out = &mut ctx[t * h + at..][..width];
            for (s, weight) in weights.iter().enumerate() {
                let p = weight / total;
                for (o, x) in out.iter_mut().zip(&v[s * h + at..][..width]) {
                    *o += p * x;
                }
            }
        }
    }
}

/// GELU, `x·Φ(x)`, with the error function computed inline (a libm call per value cost a
/// third of the whole pass; this form vectorises).
#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// The error function, to within 1e-6 (Abramowitz and Stegun 7.1.26, in f32).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    (1.0 - poly * exp_of_negative(-a * a)).copysign(x)
}

/// `e^x` for `x <= 0`, to within 1e-6 relative: `2^n · e^f` with `|f| <= ln 2 / 2` and
/// `e^f` by its Taylor series to the sixth power.
#[inline(always)]
fn exp_of_negative(x: f32) -> f32 {
    let x = x.clamp(-87.0, 0.0);
    let n = (x * std::f32::consts::LOG2_E).round();
    // ln 2 in two parts (Cody and Waite), so that f keeps its precision when n is large.
    let f = (x - n * 0.693_359_4) + n * 2.121_944_4e-4;
    let series = 1.0
        + f * (1.0
            + f * (0.5 + f * (1.0 / 6.0 + f * (1.0 / 24.0 + f * (1.0 / 120.0 + f / 720.0)))));
    // n is in -126..=0, so 2^n is a normal float built from its exponent bits.
    series * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[inline(always)]
fn run<K: BlockDot>(w: &Weights, ids: &[u32]) -> Vec<f32> {
    let (h, tokens) = (w.hidden, ids.len().min(w.positions));
    let mut x = vec![0.0f32; tokens * h];
    for (t, id) in ids.iter().take(tokens).enumerate() {
        let row = &mut x[t * h..][..h];
        let id = if (*id as usize) < w.words.rows {
            *id as usize
        } else {
            0
        };
        w.words.row(id, row);
        for ((v, p), ty) in row
            .iter_mut()
            .zip(&w.position[t * h..][..h])
            .zip(&w.token_type)
        {
            *v += p + ty;
        }
    }
    add_and_norm(&mut x, &[], &w.embedding_norm, h, w.eps);

    let mut acts = Q8::new();
    let (mut q, mut k, mut v) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ctx, mut projected, mut mid) = (Vec::new(), Vec::new(), Vec::new());
    for layer in &w.layers {
        acts.quantise(&x, h);
        linear::<K>(&layer.query, &acts, tokens, &mut q);
        linear::<K>(&layer.key, &acts, tokens, &mut k);
        linear::<K>(&layer.value, &acts, tokens, &mut v);
        attend(w, &q, &k, &v, tokens, &mut ctx);
        acts.quantise(&ctx, h);
        linear::<K>(&layer.attention_out, &acts, tokens, &mut projected);
        add_and_norm(&mut x, &projected, &layer.attention_norm, h, w.eps);

        acts.quantise(&x, h);
        linear::<K>(&layer.ff_in, &acts, tokens, &mut mid);
        for m in mid.iter_mut() {
            *m = gelu(*m);
        }
        acts.quantise(&mid, w.ff);
        linear::<K>(&layer.ff_out, &acts, tokens, &mut projected);
        add_and_norm(&mut x, &projected, &layer.out_norm, h, w.eps);
    }

    let mut pooled = vec![0.0f32; h];
    for row in x.chunks_exact(h) {
        for (p, v) in pooled.iter_mut().zip(row) {
            *p += v;
        }
    }
    for p in &mut pooled {
        *p /= tokens.max(1) as f32;
    }
    pooled
}

/// IEEE half precision to single.
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exponent = u32::from((h >> 10) & 0x1F);
    let mantissa = u32::from(h & 0x3FF);
    let bits = match (exponent, mantissa) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: scale up until the leading one is in place.
            let shift = m.leading_zeros() - 21;
            let m = (m << shift) & 0x3FF;
            sign | ((127 - 15 + 1 - shift) << 23) | (m << 13)
        }
        (31, m) => sign | 0x7F80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inline_error_function_matches_libm() {
        let mut worst = 0.0f32;
        for i in -80_000..=80_000 {
            let x = i as f32 / 10_000.0;
            worst = worst.max((erf(x) - libm::erff(x)).abs());
        }
        assert!(worst < 1e-6, "worst error {worst}");
        assert!(erf(0.0).abs() < 1e-6);
        assert_eq!(erf(9.0), 1.0);
        assert_eq!(erf(-9.0), -1.0);
        for i in 0..=870 {
            let x = -(i as f32) / 10.0;
            let (ours, exact) = (exp_of_negative(x), x.exp());
            assert!(
                (ours - exact).abs() <= 1e-6 * exact,
                "e^{x}: {ours} vs {exact}"
            );
        }
    }

    #[test]
    fn half_precision_reads_as_expected() {
        assert_eq!(f16_to_f32(0x3C00), 1.0);
        assert_eq!(f16_to_f32(0xC000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert_eq!(f16_to_f32(0x0000), 0.0);
        assert!(f16_to_f32(0x7C00).is_infinite());
    }

    #[test]
    fn both_kernels_agree_on_a_block_dot() {
        let scales = [0.5f32, -0.25, 2.0];
        let nibbles: Vec<u8> = (0..48u32).map(|i| (i * 37 % 256) as u8).collect();
        let values: Vec<i8> = (0..96i32).map(|i| ((i * 53) % 255 - 127) as i8).collect();
        let act_scales = [0.1f32, 0.2, 0.05];
        let sums: Vec<i32> = values
            .chunks(32)
            .map(|c| c.iter().map(|v| i32::from(*v)).sum())
            .collect();
        let acts = Q8Row {
            values: &values,
            scales: &act_scales,
            sums: &sums,
        };
        // The same sum computed from dequantised weights.
        let mut expected = 0.0f32;
        for b in 0..3 {
            for j in 0..16 {
                let n = nibbles[b * 16 + j];
                let w_lo = (f32::from(n & 0x0F) - 8.0) * scales[b];
                let w_hi = (f32::from(n >> 4) - 8.0) * scales[b];
                expected += w_lo * f32::from(values[b * 32 + j]) * act_scales[b];
                expected += w_hi * f32::from(values[b * 32 + j + 16]) * act_scales[b];
            }
        }
        let portable = Portable::dot(&scales, &nibbles, &acts);
        assert!(
            (portable - expected).abs() < 1e-3,
            "{portable} vs {expected}"
        );
        #[cfg(target_arch = "x86_64")]
        if avx2::available() {
            // SAFETY: checked just above.
            let fast = unsafe { avx2::dot_for_test(&scales, &nibbles, &acts) };
            assert!((fast - expected).abs() < 1e-3, "{fast} vs {expected}");
        }
    }
}
