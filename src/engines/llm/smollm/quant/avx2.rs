//! The kernels with AVX2, FMA and F16C, for CPUs that have them (checked at run time by
//! [`Avx2::detect`], so one binary still runs on older x86-64). This is the only file with
//! `unsafe` code: the calls into `#[target_feature]` functions, which need the features to be
//! present, and the unaligned vector loads and stores, which need their bytes in bounds. The
//! helpers below assert the bounds; [`Avx2`] values exist only on CPUs with the features.
//!
//! The arithmetic is that of the portable kernels in [`super::blocks`]: a block is decoded to
//! f32 (`q * d + m` as a product then a sum, so the weights are the f32 path's, bit for bit)
//! and multiplied with f32 activations; only the order of the additions differs.

#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::blocks::{BlockFormat, BLOCK};

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

    /// `row · x` for a row of blocks and `x.len()` activations (a multiple of 32).
    pub fn dot_row(self, format: BlockFormat, row: &[u8], x: &[f32]) -> f32 {
        let blocks = x.len() / BLOCK;
        assert!(x.len().is_multiple_of(BLOCK) && row.len() == blocks * format.block_bytes());
        match format {
            // SAFETY: `self` exists only on a CPU with AVX2, FMA and F16C (`detect`).
            BlockFormat::Q4_1 => unsafe { dot_q4_1(row, x) },
            // SAFETY: as above.
            BlockFormat::Q8_0 => unsafe { dot_q8_0(row, x) },
        }
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
    pub fn axpy(self, a: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        // SAFETY: `self` exists only on a CPU with AVX2 and FMA (`detect`).
        unsafe { axpy_f32(a, &x[..n], &mut y[..n]) }
    }

    /// `out[t][r] = w[r] · x[t]` for 4 weight rows and 3 activation rows of one length.
    pub fn tile(self, w: [&[f32]; 4], x: [&[f32]; 3]) -> [[f32; 4]; 3] {
        let n = w[0].len();
        assert!(w.iter().chain(&x).all(|s| s.len() == n));
        // SAFETY: `self` exists only on a CPU with AVX2 and FMA (`detect`).
        unsafe { tile_4x3(w, x) }
    }
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

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_blocks(
    row: &[u8],
    x: &[f32],
    block_bytes: usize,
    decode: impl Fn(&[u8]) -> [__m256; 4],
) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 4];
    for (blk, xb) in row.chunks_exact(block_bytes).zip(x.chunks_exact(BLOCK)) {
        let w = decode(blk);
        for i in 0..4 {
            acc[i] = _mm256_fmadd_ps(w[i], load8(&xb[i * 8..]), acc[i]);
        }
    }
    hsum(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q4_1(row: &[u8], x: &[f32]) -> f32 {
    dot_blocks(row, x, BlockFormat::Q4_1.block_bytes(), |b| q4_1_block(b))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn dot_q8_0(row: &[u8], x: &[f32]) -> f32 {
    dot_blocks(row, x, BlockFormat::Q8_0.block_bytes(), |b| q8_0_block(b))
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

#[target_feature(enable = "avx2,fma")]
fn tile_4x3(w: [&[f32]; 4], x: [&[f32]; 3]) -> [[f32; 4]; 3] {
    let n = w[0].len();
    let mut acc = [[_mm256_setzero_ps(); 4]; 3];
    let mut i = 0;
    while i + 8 <= n {
        let wv = [
            load8(&w[0][i..]),
            load8(&w[1][i..]),
            load8(&w[2][i..]),
            load8(&w[3][i..]),
        ];
        for t in 0..3 {
            let xv = load8(&x[t][i..]);
            for r in 0..4 {
                acc[t][r] = _mm256_fmadd_ps(wv[r], xv, acc[t][r]);
            }
        }
        i += 8;
    }
    let mut out = acc.map(|row| row.map(|a| hsum(a)));
    for (t, o) in out.iter_mut().enumerate() {
        for (r, v) in o.iter_mut().enumerate() {
            *v += w[r][i..]
                .iter()
                .zip(&x[t][i..])
                .map(|(a, b)| a * b)
                .sum::<f32>();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::blocks::{self, tests::Rng};
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
                let got = k.dot_row(format, &row, &x);
                let want = blocks::tests::reference_dot(format, &row, &x);
                assert!(
                    blocks::tests::within_rounding(got, format, &row, &x),
                    "{format:?} {nb}: {got} vs {want}"
                );
                // Decoding is exact: the same bits as the portable decoder.
                let (mut a, mut b) = (vec![0f32; x.len()], vec![1f32; x.len()]);
                k.decode_row(format, &row, &mut a);
                blocks::decode_row(format, &row, &mut b);
                assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
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
        for n in [5, 576] {
            let w: Vec<Vec<f32>> = (0..4).map(|_| rng.floats(n)).collect();
            let x: Vec<Vec<f32>> = (0..3).map(|_| rng.floats(n)).collect();
            let wr = [&w[0][..], &w[1], &w[2], &w[3]];
            let xr = [&x[0][..], &x[1], &x[2]];
            let got = k.tile(wr, xr);
            for t in 0..3 {
                for r in 0..4 {
                    let (want, scale) = exact_dot(&w[r], &x[t]);
                    assert!(close(got[t][r], want, scale), "{t} {r}");
                }
            }
        }
    }
}
