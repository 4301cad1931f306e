//! Activations quantized to 8 bits with AVX2: the same bytes, scales and sums as
//! [`Q8Activations::quantize`], a block of 32 in a few vector operations instead of 32 calls
//! to `roundf`. Rounding is to nearest with ties away from zero, as `f32::round`.

use std::arch::x86_64::*;

use super::super::blocks::BLOCK;
use super::super::q8::Q8Activations;
use super::load8;

/// [`Q8Activations::quantize`], bit for bit.
#[target_feature(enable = "avx2,fma")]
pub(super) fn quantize(x: &[f32]) -> Q8Activations {
    let blocks = x.len() / BLOCK;
    let mut out = Q8Activations {
        q: vec![0; blocks * BLOCK],
        d: vec![0.0; blocks],
        s: vec![0.0; blocks],
    };
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    let sign_mask = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MIN));
    let (half, one) = (_mm256_set1_ps(0.5), _mm256_set1_ps(1.0));
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (b, xb) in x.chunks_exact(BLOCK).enumerate() {
        let v = [0, 1, 2, 3].map(|i| load8(&xb[i * 8..]));
        let m = [0, 1, 2, 3].map(|i| _mm256_and_ps(v[i], abs_mask));
        let m = _mm256_max_ps(_mm256_max_ps(m[0], m[1]), _mm256_max_ps(m[2], m[3]));
        let m = _mm_max_ps(_mm256_extractf128_ps::<1>(m), _mm256_castps256_ps128(m));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        let d = amax / 127.0;
        let inv = _mm256_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
        let q = v.map(|v| {
            let y = _mm256_mul_ps(v, inv);
            let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(y);
            let frac = _mm256_and_ps(_mm256_sub_ps(y, t), abs_mask);
            let away = _mm256_or_ps(_mm256_and_ps(y, sign_mask), one);
            let up = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(frac, half), away);
            _mm256_cvttps_epi32(_mm256_add_ps(t, up))
        });
        let sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let sum = _mm_add_epi32(
            _mm256_extracti128_si256::<1>(sum),
            _mm256_castsi256_si128(sum),
        );
        let sum = _mm_add_epi32(sum, _mm_unpackhi_epi64(sum, sum));
        let sum = _mm_cvtsi128_si32(_mm_add_epi32(sum, _mm_shuffle_epi32::<1>(sum)));
        let bytes = _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        let bytes = _mm256_permutevar8x32_epi32(bytes, order);
        store32_i8(&mut out.q[b * BLOCK..], bytes);
        out.d[b] = d;
        out.s[b] = d * sum as f32;
    }
    out
}

/// Stores thirty-two signed bytes at the start of `s`.
#[inline]
#[target_feature(enable = "avx2")]
fn store32_i8(s: &mut [i8], v: __m256i) {
    assert!(s.len() >= 32);
    // SAFETY: the assertion keeps the 32 bytes written inside `s`.
    unsafe { _mm256_storeu_si256(s.as_mut_ptr().cast(), v) }
}

#[cfg(test)]
mod tests {
    use super::super::super::blocks::tests::Rng;
    use super::super::super::q8::Q8Activations;
    use super::super::Avx2;

    /// The same bytes, scales and sums as the portable quantizer, ties included.
    #[test]
    fn matches_the_portable_quantizer_bit_for_bit() {
        let Some(k) = Avx2::detect() else {
            return;
        };
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let mut inputs: Vec<Vec<f32>> = [32, 64, 576, 1536]
            .iter()
            .map(|&n| rng.floats(n).iter().map(|v| v * 3.0).collect())
            .collect();
        // Ties: with a largest magnitude of 127 the scale is 1 and x.5 values round away.
        let mut ties: Vec<f32> = (0..32).map(|i| i as f32 - 15.5).collect();
        ties[31] = 127.0;
        ties[30] = -2.5;
        inputs.push(ties);
        inputs.push(vec![0.0; 64]);
        inputs.push((0..32).map(|i| if i == 3 { -1e-30 } else { 0.0 }).collect());
        for x in inputs {
            let (a, b) = (k.quantize(&x), Q8Activations::quantize(&x));
            assert_eq!(a.q, b.q);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a.d), bits(&b.d));
            assert_eq!(bits(&a.s), bits(&b.s));
        }
    }
}
