//! The kernels with AVX2, FMA and F16C, for CPUs that have them (checked at run time by
//! [`Avx2::detect`], so one binary still runs on older x86-64). This is the only file with
//! `unsafe` code: the calls into `#[target_feature]` functions, which need the features to be
//! present, and the unaligned vector loads and stores, which need their bytes in bounds. The
//! helpers below assert the bounds; [`Avx2`] values exist only on CPUs with the features.
//!
//! The arithmetic is that of the portable kernels in [`super::blocks`]: decoding gives f32
//! weights (`q * d + m` as a product then a sum, so the weights are the f32 path's, bit for
//! bit); dot products multiply the weights' integers with activations quantized to 8 bits
//! (`vpmaddubsw`), scaling once per block (`d_w d_x Σ q_w q_x + m_w s_x`).

#![allow(unsafe_code)]

mod attention;
mod quantize;

use std::arch::x86_64::*;

use super::blocks::{BlockFormat, BLOCK};
use super::q8::{Q8Activations, Q8Quad, Q8Slice};

/// Proof that this CPU has AVX2, FMA and F16C.
#[derive(Debug, Clone, Copy)]
pub struct Avx2(());

impl Avx2 {
    /// `Some` when the CPU has AVX2, FMA and F16C.
    pub fn detect() -> Option<Self> {
        let ok = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        ok.then_some(Self(()))
    }

    /// `row · x` for a row of blocks and activations quantized to 8 bits.
    pub fn dot_row_q8(self, format: BlockFormat, row: &[u8], x: Q8Slice) -> f32 {
        check_q8(format, row, x);
        match format {
            // SAFETY: `self` exists only on a CPU with AVX2, FMA and F16C (`detect`).
            BlockFormat::Q4_1 => unsafe { dot_q4_1_q8(row, x) },
            // SAFETY: as above.
            BlockFormat::Q8_0 => unsafe { dot_q8_0_q8(row, x) },
        }
    }

    /// `row · x[t]` for four interleaved tokens: the row's blocks are loaded and unpacked
    /// once for the four. Each result is bit for bit [`Avx2::dot_row_q8`]'s.
    pub fn dot_row_q8_quad(self, format: BlockFormat, row: &[u8], x: &Q8Quad) -> [f32; 4] {
        let blocks = x.blocks();
        assert!(x.q.len() == blocks * 4 * BLOCK && x.d.len() == blocks * 4);
        assert!(x.s.len() == blocks * 4 && row.len() == blocks * format.block_bytes());
        match format {
            // SAFETY: `self` exists only on a CPU with AVX2, FMA and F16C (`detect`).
            BlockFormat::Q4_1 => unsafe { dot_q4_1_q8_x4(row, x) },
            // SAFETY: as above.
            BlockFormat::Q8_0 => unsafe { dot_q8_0_q8_x4(row, x) },
        }
    }

    /// `x` quantized to 8 bits per block of 32, exactly as [`Q8Activations::quantize`].
    pub fn quantize(self, x: &[f32]) -> Q8Activations {
        // SAFETY: `self` exists only on a CPU with AVX2 and FMA (`detect`).
        unsafe { quantize::quantize(x) }
    }

    /// Decodes a row of blocks into `out` (`out.len()` weights, a multiple of 32).
    pub fn decode_row(self, format: BlockFormat, row: &[u8], out: &mut [f32]) {
        let blocks = out.len() / BLOCK;
        assert!(out.len().is_multiple_of(BLOCK) && row.len() == blocks * format.block_bytes());
        match format {
            // SAFETY: `self` exists only on a CPU with AVX2, FMA and F16C (`detect`).
            BlockFormat::Q4_1 => unsafe { decode_q4_1(row, out) },
            // SAFETY: as above.
            BlockFormat::Q8_0 => unsafe { decode_q8_0(row, out) },
        }
    }

    /// `a · b` over the shorter of the two.
    pub fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        // SAFETY: `self` exists only on a CPU with AVX2 and FMA (`detect`).
        unsafe { dot_f32(&a[..n], &b[..n]) }
    }

    /// `y += a * x` over the shorter of the two.
    #[cfg(test)]
    pub fn axpy(self, a: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        // SAFETY: `self` exists only on a CPU with AVX2 and FMA (`detect`).
        unsafe { axpy_f32(a, &x[..n], &mut y[..n]) }
    }

    /// Attention scores of heads sharing their keys: `out[h * n + j] = q_h · key_j`, each
    /// exactly [`Avx2::dot`]'s result (see [`Kernels::scores`](super::Kernels::scores)).
    pub fn scores(self, q: &[f32], hd: usize, keys: &[f32], stride: usize, out: &mut [f32]) {
        // SAFETY: `self` exists only on a CPU with AVX2 and FMA (`detect`).
        unsafe { attention::scores(q, hd, keys, stride, out) }
    }

    /// Weighted sums of values for heads sharing them, each exactly [`Avx2::axpy`] for each
    /// position in order into zeros (see [`Kernels::weighted_sum`](super::Kernels::weighted_sum)).
    pub fn weighted_sum(
        self,
        p: &[f32],
        hd: usize,
        values: &[f32],
        stride: usize,
        out: &mut [f32],
    ) {
        // SAFETY: `self` exists only on a CPU with AVX2 and FMA (`detect`).
        unsafe { attention::weighted_sum(p, hd, values, stride, out) }
    }

    /// `out[t][r] = w[r] · x[t]` for a panel of 4 weight rows and one of 3 tokens, both
    /// interleaved by 8 columns (`w[s * 32 + r * 8 + l]`, `x[s * 24 + t * 8 + l]`).
    pub fn tile(self, w: &[f32], x: &[f32]) -> [[f32; 4]; 3] {
        assert!(w.len() / 32 == x.len() / 24);
        // SAFETY: `self` exists only on a CPU with AVX2 and FMA (`detect`).
        unsafe { tile_4x3(w, x) }
    }
}

/// Checks that `x` has the row's blocks, whole.
fn check_q8(format: BlockFormat, row: &[u8], x: Q8Slice) {
    let blocks = x.blocks();
    assert!(x.q.len() == blocks * BLOCK && x.s.len() == blocks);
    assert!(row.len() == blocks * format.block_bytes());
}

/// Eight floats from the start of `s`.
#[inline]
#[target_feature(enable = "avx")]
fn load8(s: &[f32]) -> __m256 {
    assert!(s.len() >= 8);
    // SAFETY: the assertion keeps the 8 floats read inside `s`.
    unsafe { _mm256_loadu_ps(s.as_ptr()) }
}

/// Stores eight floats at the start of `s`.
#[inline]
#[target_feature(enable = "avx")]
fn store8(s: &mut [f32], v: __m256) {
    assert!(s.len() >= 8);
    // SAFETY: the assertion keeps the 8 floats written inside `s`.
    unsafe { _mm256_storeu_ps(s.as_mut_ptr(), v) }
}

/// Sixteen bytes from the start of `s`.
#[inline]
#[target_feature(enable = "avx2")]
fn load16_bytes(s: &[u8]) -> __m128i {
    assert!(s.len() >= 16);
    // SAFETY: the assertion keeps the 16 bytes read inside `s`.
    unsafe { _mm_loadu_si128(s.as_ptr().cast()) }
}

/// Thirty-two bytes from the start of `s`.
#[inline]
#[target_feature(enable = "avx2")]
fn load32_bytes(s: &[u8]) -> __m256i {
    assert!(s.len() >= 32);
    // SAFETY: the assertion keeps the 32 bytes read inside `s`.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

/// How far ahead of the block being read the weights are prefetched, in bytes.
const PREFETCH_AHEAD: usize = 640;

/// Asks for the cache line `ahead` bytes past the start of `s`: the weights stream through
/// once per token, faster than the hardware prefetcher brings them in on its own.
#[inline]
#[target_feature(enable = "sse")]
fn prefetch(s: &[u8], ahead: usize) {
    // The address is only computed (wrapping), never dereferenced; a prefetch cannot fault.
    _mm_prefetch::<_MM_HINT_T0>(s.as_ptr().wrapping_add(ahead).cast());
}

/// Thirty-two signed bytes from the start of `s`.
#[inline]
#[target_feature(enable = "avx2")]
fn load32_i8(s: &[i8]) -> __m256i {
    assert!(s.len() >= 32);
    // SAFETY: the assertion keeps the 32 bytes read inside `s`.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

/// The f16 pair at the start of `s` as f32, in lanes 0 and 1.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn f16_pair(s: &[u8]) -> __m128 {
    let bits = i32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    _mm_cvtph_ps(_mm_cvtsi32_si128(bits))
}

/// The single f16 at the start of `s` as f32, in lane 0.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn f16_one(s: &[u8]) -> __m128 {
    let bits = i32::from(u16::from_le_bytes([s[0], s[1]]));
    _mm_cvtph_ps(_mm_cvtsi32_si128(bits))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum(x: __m256) -> f32 {
    let r = _mm_add_ps(_mm256_extractf128_ps::<1>(x), _mm256_castps256_ps128(x));
    let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    let r = _mm_add_ss(r, _mm_movehdup_ps(r));
    _mm_cvtss_f32(r)
}

/// The 32 weights of a Q4_1 block as four vectors of 8.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_1_block(blk: &[u8]) -> [__m256; 4] {
    let dm = f16_pair(blk);
    let d = _mm256_broadcastss_ps(dm);
    let m = _mm256_broadcastss_ps(_mm_movehdup_ps(dm));
    let q = load16_bytes(&blk[4..]);
    let mask = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(q, mask);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), mask);
    let w = |b: __m128i| {
        _mm256_add_ps(
            _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b)), d),
            m,
        )
    };
    [
        w(lo),
        w(_mm_srli_si128::<8>(lo)),
        w(hi),
        w(_mm_srli_si128::<8>(hi)),
    ]
}

/// The 32 weights of a Q8_0 block as four vectors of 8.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_0_block(blk: &[u8]) -> [__m256; 4] {
    let d = _mm256_broadcastss_ps(f16_one(blk));
    let q = load32_bytes(&blk[2..]);
    let lo = _mm256_castsi256_si128(q);
    let hi = _mm256_extracti128_si256::<1>(q);
    let w = |b: __m128i| _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), d);
    [
        w(lo),
        w(_mm_srli_si128::<8>(lo)),
        w(hi),
        w(_mm_srli_si128::<8>(hi)),
    ]
}

/// Sum of the products of unsigned bytes `u` (at most 127 with `i`'s at most 128 in
/// magnitude, so no pair overflows) and signed bytes `i`, as 8 floats.
#[inline]
#[target_feature(enable = "avx2")]
fn products_u8_i8(u: __m256i, i: __m256i) -> __m256 {
    let pairs = _mm256_maddubs_epi16(u, i);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

/// Q4_1 row · Q8 activations: `Σ_blocks d_w d_x (Σ q_w q_x) + m_w s_x`.
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q4_1_q8(row: &[u8], x: Q8Slice) -> f32 {
    let bytes = BlockFormat::Q4_1.block_bytes();
    let mask = _mm256_set1_epi8(0x0F);
    let mut acc = _mm256_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for (((blk, xq), &dx), &sx) in row
        .chunks_exact(bytes)
        .zip(x.q.chunks_exact(BLOCK))
        .zip(x.d)
        .zip(x.s)
    {
        prefetch(blk, PREFETCH_AHEAD);
        let dm = f16_pair(blk);
        let q = load16_bytes(&blk[4..]);
        let both = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(q), _mm_srli_epi16::<4>(q));
        let w = _mm256_and_si256(both, mask);
        let p = products_u8_i8(w, load32_i8(xq));
        let scale = _mm_mul_ss(dm, _mm_set_ss(dx));
        acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(scale), p, acc);
        acc_m = _mm_fmadd_ss(_mm_movehdup_ps(dm), _mm_set_ss(sx), acc_m);
    }
    hsum(acc) + _mm_cvtss_f32(acc_m)
}

/// Q8_0 row · Q8 activations: `Σ_blocks d_w d_x (Σ q_w q_x)`, the signs moved onto the
/// activations so that the weights' magnitudes can be the unsigned operand.
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q8_0_q8(row: &[u8], x: Q8Slice) -> f32 {
    let bytes = BlockFormat::Q8_0.block_bytes();
    let mut acc = _mm256_setzero_ps();
    for ((blk, xq), &dx) in row
        .chunks_exact(bytes)
        .zip(x.q.chunks_exact(BLOCK))
        .zip(x.d)
    {
        prefetch(blk, PREFETCH_AHEAD);
        let w = load32_bytes(&blk[2..]);
        let p = products_u8_i8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(load32_i8(xq), w));
        let scale = _mm_mul_ss(f16_one(blk), _mm_set_ss(dx));
        acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(scale), p, acc);
    }
    hsum(acc)
}

/// Four floats from the start of `s`.
#[inline]
#[target_feature(enable = "avx")]
fn load4(s: &[f32]) -> __m128 {
    assert!(s.len() >= 4);
    // SAFETY: the assertion keeps the 4 floats read inside `s`.
    unsafe { _mm_loadu_ps(s.as_ptr()) }
}

/// [`dot_q4_1_q8`] for four interleaved tokens, each weight block unpacked once: the same
/// operations per token (scales `d_w d_x` and offsets `m_w s_x` four lanes at a time), so
/// the same results.
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q4_1_q8_x4(row: &[u8], x: &Q8Quad) -> [f32; 4] {
    let bytes = BlockFormat::Q4_1.block_bytes();
    let mask = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut acc_m = _mm_setzero_ps();
    for (((blk, xq), dx), sx) in row
        .chunks_exact(bytes)
        .zip(x.q.chunks_exact(4 * BLOCK))
        .zip(x.d.chunks_exact(4))
        .zip(x.s.chunks_exact(4))
    {
        let dm = f16_pair(blk);
        let q = load16_bytes(&blk[4..]);
        let both = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(q), _mm_srli_epi16::<4>(q));
        let w = _mm256_and_si256(both, mask);
        let mut scale = [0f32; 4];
        store4(&mut scale, _mm_mul_ps(_mm_broadcastss_ps(dm), load4(dx)));
        acc_m = _mm_fmadd_ps(_mm_broadcastss_ps(_mm_movehdup_ps(dm)), load4(sx), acc_m);
        for t in 0..4 {
            let p = products_u8_i8(w, load32_i8(&xq[t * BLOCK..]));
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(scale[t]), p, acc[t]);
        }
    }
    let mut m = [0f32; 4];
    store4(&mut m, acc_m);
    [0, 1, 2, 3].map(|t| hsum(acc[t]) + m[t])
}

/// [`dot_q8_0_q8`] for four interleaved tokens, each weight block loaded once.
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q8_0_q8_x4(row: &[u8], x: &Q8Quad) -> [f32; 4] {
    let bytes = BlockFormat::Q8_0.block_bytes();
    let mut acc = [_mm256_setzero_ps(); 4];
    for ((blk, xq), dx) in row
        .chunks_exact(bytes)
        .zip(x.q.chunks_exact(4 * BLOCK))
        .zip(x.d.chunks_exact(4))
    {
        let w = load32_bytes(&blk[2..]);
        let abs = _mm256_sign_epi8(w, w);
        let mut scale = [0f32; 4];
        store4(
            &mut scale,
            _mm_mul_ps(_mm_broadcastss_ps(f16_one(blk)), load4(dx)),
        );
        for t in 0..4 {
            let p = products_u8_i8(abs, _mm256_sign_epi8(load32_i8(&xq[t * BLOCK..]), w));
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(scale[t]), p, acc[t]);
        }
    }
    acc.map(|a| hsum(a))
}

/// Stores four floats at the start of `s`.
#[inline]
#[target_feature(enable = "avx")]
fn store4(s: &mut [f32], v: __m128) {
    assert!(s.len() >= 4);
    // SAFETY: the assertion keeps the 4 floats written inside `s`.
    unsafe { _mm_storeu_ps(s.as_mut_ptr(), v) }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn decode_q4_1(row: &[u8], out: &mut [f32]) {
    let bytes = BlockFormat::Q4_1.block_bytes();
    for (blk, o) in row.chunks_exact(bytes).zip(out.chunks_exact_mut(BLOCK)) {
        let w = q4_1_block(blk);
        for (i, v) in w.into_iter().enumerate() {
            store8(&mut o[i * 8..], v);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn decode_q8_0(row: &[u8], out: &mut [f32]) {
    let bytes = BlockFormat::Q8_0.block_bytes();
    for (blk, o) in row.chunks_exact(bytes).zip(out.chunks_exact_mut(BLOCK)) {
        let w = q8_0_block(blk);
        for (i, v) in w.into_iter().enumerate() {
            store8(&mut o[i * 8..], v);
        }
    }
}

#[target_feature(enable = "avx2,fma")]
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 2];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let mut tail = 0f32;
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        acc[0] = _mm256_fmadd_ps(load8(x), load8(y), acc[0]);
        acc[1] = _mm256_fmadd_ps(load8(&x[8..]), load8(&y[8..]), acc[1]);
    }
    for (x, y) in ar.iter().zip(br) {
        tail += x * y;
    }
    hsum(_mm256_add_ps(acc[0], acc[1])) + tail
}

#[cfg(test)]
#[target_feature(enable = "avx2,fma")]
fn axpy_f32(a: f32, x: &[f32], y: &mut [f32]) {
    let av = _mm256_set1_ps(a);
    let mut xc = x.chunks_exact(8);
    let mut yc = y.chunks_exact_mut(8);
    for (xs, ys) in (&mut xc).zip(&mut yc) {
        store8(ys, _mm256_fmadd_ps(av, load8(xs), load8(ys)));
    }
    for (xs, ys) in xc.remainder().iter().zip(yc.into_remainder()) {
        *ys += a * xs;
    }
}

/// Twelve accumulators, the three tokens' vectors and one weight vector: the 16 registers.
#[target_feature(enable = "avx2,fma")]
fn tile_4x3(w: &[f32], x: &[f32]) -> [[f32; 4]; 3] {
    let mut acc = [[_mm256_setzero_ps(); 4]; 3];
    for (ws, xs) in w.chunks_exact(32).zip(x.chunks_exact(24)) {
        let xv = [load8(xs), load8(&xs[8..]), load8(&xs[16..])];
        for r in 0..4 {
            let wv = load8(&ws[r * 8..]);
            for t in 0..3 {
                acc[t][r] = _mm256_fmadd_ps(wv, xv[t], acc[t][r]);
            }
        }
    }
    acc.map(|row| row.map(|a| hsum(a)))
}

#[cfg(test)]
mod tests {
    use super::super::blocks::{self, tests::Rng};
    use super::super::q8::{Q8Activations, Q8Tokens};
    use super::super::Kernels;
    use super::*;

    /// Within a few units of f32 precision of the magnitudes summed (`scale`).
    fn close(got: f32, want: f64, scale: f64) -> bool {
        (got as f64 - want).abs() <= 1e-6 * (scale + 1e-3)
    }

    fn exact_dot(a: &[f32], b: &[f32]) -> (f64, f64) {
        a.iter().zip(b).fold((0.0, 0.0), |(s, m), (&x, &y)| {
            let p = x as f64 * y as f64;
            (s + p, m + p.abs())
        })
    }

    #[test]
    fn block_kernels_match_the_portable_ones() {
        let Some(k) = Avx2::detect() else {
            eprintln!("no AVX2/FMA/F16C on this CPU: nothing to compare");
            return;
        };
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        for format in [BlockFormat::Q4_1, BlockFormat::Q8_0] {
            for nb in [1, 2, 3, 18, 48] {
                let row = rng.blocks(format, nb);
                let x = rng.floats(nb * BLOCK);
                // Decoding is exact: the same bits as the portable decoder.
                let (mut a, mut b) = (vec![0f32; x.len()], vec![1f32; x.len()]);
                k.decode_row(format, &row, &mut a);
                blocks::decode_row(format, &row, &mut b);
                assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
            }
        }
    }

    #[test]
    fn integer_kernels_match_the_reference() {
        let Some(k) = Avx2::detect() else {
            return;
        };
        let mut rng = Rng(0x5851_F42D_4C95_7F2D);
        for format in [BlockFormat::Q4_1, BlockFormat::Q8_0] {
            for nb in [1, 2, 3, 18, 48] {
                let row = rng.blocks(format, nb);
                let mut xf = rng.floats(nb * BLOCK);
                // Extremes: a block whose largest value quantizes to -127 and -128 weights.
                xf[..BLOCK].iter_mut().for_each(|v| *v = -v.abs());
                let x = Q8Activations::quantize(&xf);
                let (want, scale) = blocks::tests::reference_dot_q8(format, &row, x.slice());
                let got = k.dot_row_q8(format, &row, x.slice());
                assert!(close(got, want, scale), "{format:?} {nb}: {got} vs {want}");
                let portable = blocks::dot_row_q8(format, &row, x.slice());
                assert!(close(got, portable as f64, scale), "{got} vs {portable}");
                // Several tokens at once (4 at a time and the rest one by one): each result
                // the single-token kernel's, bit for bit, here and in the portable kernels.
                for n in [1, 3, 4, 5, 9] {
                    let xs = Q8Activations::quantize(&rng.floats(n * nb * BLOCK));
                    let toks = Q8Tokens::new(&xs, n, nb);
                    assert_eq!(toks.len(), n);
                    for kernels in [Kernels::Avx2(k), Kernels::Portable] {
                        let mut out = vec![f32::NAN; n];
                        kernels.dot_row_q8_tokens(format, &row, &toks, &mut out);
                        for (t, &o) in out.iter().enumerate() {
                            let one = kernels.dot_row_q8(format, &row, xs.range(t * nb, nb));
                            assert_eq!(o.to_bits(), one.to_bits(), "{format:?} {nb} {n} {t}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn float_kernels_match_the_portable_ones() {
        let Some(k) = Avx2::detect() else {
            return;
        };
        let mut rng = Rng(42);
        for n in [0, 1, 7, 8, 15, 16, 17, 64, 100] {
            let (a, b) = (rng.floats(n), rng.floats(n));
            let (want, scale) = exact_dot(&a, &b);
            assert!(close(k.dot(&a, &b), want, scale), "{n}");
            let mut y1 = rng.floats(n);
            let mut y2 = y1.clone();
            k.axpy(0.37, &a, &mut y1);
            blocks::axpy(0.37, &a, &mut y2);
            // One fused multiply-add against a product then a sum: within one rounding.
            assert!(y1.iter().zip(&y2).all(|(p, q)| (p - q).abs() <= 1e-6));
        }
        // Panels of 4 rows and 3 tokens, 72 vectors of 8 wide.
        let (w, x) = (rng.floats(32 * 72), rng.floats(24 * 72));
        let got = k.tile(&w, &x);
        for t in 0..3 {
            for r in 0..4 {
                let wr: Vec<f32> = w
                    .chunks(32)
                    .flat_map(|c| c[r * 8..r * 8 + 8].to_vec())
                    .collect();
                let xt: Vec<f32> = x
                    .chunks(24)
                    .flat_map(|c| c[t * 8..t * 8 + 8].to_vec())
                    .collect();
                let (want, scale) = exact_dot(&wr, &xt);
                assert!(close(got[t][r], want, scale), "{t} {r}");
            }
        }
    }
}
