//! Attention's two products over the KV cache, with AVX2 and FMA: the scores of one query
//! against many cached keys, and the weighted sum of the cached values. They give, bit for
//! bit, what [`super::Avx2::dot`] and `Avx2::axpy` give position by position (the
//! same multiplications and additions in the same order), but several keys share each
//! query load and the sum of the values stays in registers instead of going through memory
//! once per position.

use std::arch::x86_64::*;

use super::{dot_f32, load8, store4, store8};

/// Scores of several query heads that share their keys: `out[h * n + j] = q_h · key_j` for
/// the heads `q_h = q[h * hd..(h + 1) * hd]` and keys `key_j = keys[j * stride..][..hd]`,
/// each exactly [`dot_f32`]'s result. The keys are read from memory once, four at a time,
/// for all the heads.
#[target_feature(enable = "avx2,fma")]
pub(super) fn scores(q: &[f32], hd: usize, keys: &[f32], stride: usize, out: &mut [f32]) {
    let heads = q.len() / hd.max(1);
    assert!(hd > 0 && q.len() == heads * hd && out.len().is_multiple_of(heads.max(1)));
    let n = out.len() / heads.max(1);
    if n == 0 {
        return;
    }
    assert!((n - 1) * stride + hd <= keys.len());
    let row = |j: usize| &keys[j * stride..j * stride + hd];
    let mut j = 0;
    if hd.is_multiple_of(16) {
        while j + 4 <= n {
            let rows = [row(j), row(j + 1), row(j + 2), row(j + 3)];
            for r in rows {
                prefetch_row(r, PREFETCH_ROWS * stride);
            }
            for h in 0..heads {
                store4(&mut out[h * n + j..], dot4(&q[h * hd..(h + 1) * hd], rows));
            }
            j += 4;
        }
    }
    for j in j..n {
        for h in 0..heads {
            out[h * n + j] = dot_f32(&q[h * hd..(h + 1) * hd], row(j));
        }
    }
}

/// Rows read this many positions ahead are asked for.
const PREFETCH_ROWS: usize = 8;

/// Asks for the cache lines of the `row`'s floats `ahead` floats further on.
#[inline]
#[target_feature(enable = "sse")]
fn prefetch_row(row: &[f32], ahead: usize) {
    for c in (0..row.len()).step_by(16) {
        // The address is only computed (wrapping), never dereferenced; a prefetch cannot fault.
        _mm_prefetch::<_MM_HINT_T0>(row.as_ptr().wrapping_add(ahead + c).cast());
    }
}

/// Four of [`dot_f32`]'s products at once (`q.len()` a multiple of 16): the same two
/// accumulators per row, then its horizontal sum `((v0 + v2) + (v1 + v3))` of the two
/// halves' sum `v`, done for the four rows together by a 4x4 transpose.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn dot4(q: &[f32], rows: [&[f32]; 4]) -> __m128 {
    let mut a0 = [_mm256_setzero_ps(); 4];
    let mut a1 = [_mm256_setzero_ps(); 4];
    for c in (0..q.len()).step_by(16) {
        let (qa, qb) = (load8(&q[c..]), load8(&q[c + 8..]));
        for r in 0..4 {
            a0[r] = _mm256_fmadd_ps(qa, load8(&rows[r][c..]), a0[r]);
            a1[r] = _mm256_fmadd_ps(qb, load8(&rows[r][c + 8..]), a1[r]);
        }
    }
    let v = [0, 1, 2, 3].map(|r| {
        let s = _mm256_add_ps(a0[r], a1[r]);
        _mm_add_ps(_mm256_extractf128_ps::<1>(s), _mm256_castps256_ps128(s))
    });
    let t0 = _mm_unpacklo_ps(v[0], v[1]);
    let t1 = _mm_unpacklo_ps(v[2], v[3]);
    let t2 = _mm_unpackhi_ps(v[0], v[1]);
    let t3 = _mm_unpackhi_ps(v[2], v[3]);
    let c0 = _mm_movelh_ps(t0, t1);
    let c1 = _mm_movehl_ps(t1, t0);
    let c2 = _mm_movelh_ps(t2, t3);
    let c3 = _mm_movehl_ps(t3, t2);
    let sum = _mm_add_ps(_mm_add_ps(c0, c2), _mm_add_ps(c1, c3));
    // `dot_f32` adds its (empty) scalar tail: `+ 0.0`, which turns -0.0 into 0.0.
    _mm_add_ps(sum, _mm_setzero_ps())
}

/// The weighted sums of several heads that share their values: `out[h * hd..][..hd] =
/// Σ_j p[h * n + j] * values[j * stride..][..hd]` (`out` holds the heads, `p` their `n`
/// weights each), summed in order of `j` from zero exactly
/// as repeated `axpy_f32` calls do (one fused multiply-add per position for whole
/// vectors of 8, a product then a sum for the remaining columns). Positions go in runs of
/// [`RUN`]: each run's values are read from memory once for all the heads, the sums kept in
/// registers within a run.
#[target_feature(enable = "avx2,fma")]
pub(super) fn weighted_sum(p: &[f32], hd: usize, values: &[f32], stride: usize, out: &mut [f32]) {
    let heads = out.len() / hd.max(1);
    assert!(hd > 0 && out.len() == heads * hd && p.len().is_multiple_of(heads.max(1)));
    out.fill(0.0);
    let n = p.len() / heads.max(1);
    if n == 0 {
        return;
    }
    assert!((n - 1) * stride + hd <= values.len());
    let vectors = hd / 8 * 8;
    for j0 in (0..n).step_by(RUN) {
        let j1 = (j0 + RUN).min(n);
        for j in j0..j1 {
            prefetch_row(&values[j * stride..j * stride + hd], RUN * stride);
        }
        for h in 0..heads {
            let ph = &p[h * n + j0..h * n + j1];
            let vs = &values[j0 * stride..];
            let o = &mut out[h * hd..(h + 1) * hd];
            let mut c = 0;
            while c + 64 <= vectors {
                sum_columns::<8>(ph, &vs[c..], stride, &mut o[c..]);
                c += 64;
            }
            while c + 8 <= vectors {
                sum_columns::<1>(ph, &vs[c..], stride, &mut o[c..]);
                c += 8;
            }
            for (j, &pj) in ph.iter().enumerate() {
                let v = &vs[j * stride..];
                for (o, &x) in o[c..].iter_mut().zip(&v[c..hd]) {
                    *o += pj * x;
                }
            }
        }
    }
}

/// Positions whose values are summed for every head before the next ones are read.
const RUN: usize = 16;

/// `out[..8 * V] += Σ_j p[j] * values[j * stride..][..8 * V]`, in `V` registers.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn sum_columns<const V: usize>(p: &[f32], values: &[f32], stride: usize, out: &mut [f32]) {
    let mut acc = [0, 1, 2, 3, 4, 5, 6, 7].map(|i| {
        if i < V {
            load8(&out[i * 8..])
        } else {
            _mm256_setzero_ps()
        }
    });
    for (j, &pj) in p.iter().enumerate() {
        let pv = _mm256_set1_ps(pj);
        let v = &values[j * stride..j * stride + 8 * V];
        for (i, a) in acc.iter_mut().take(V).enumerate() {
            *a = _mm256_fmadd_ps(pv, load8(&v[i * 8..]), *a);
        }
    }
    for (i, a) in acc.into_iter().take(V).enumerate() {
        store8(&mut out[i * 8..], a);
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::blocks::tests::Rng;
    use super::super::Avx2;

    /// Every score and every weighted sum is, bit for bit, what the per-position kernels
    /// give, for odd head sizes, strides and position counts.
    #[test]
    fn match_the_per_position_kernels_bit_for_bit() {
        let Some(k) = Avx2::detect() else {
            return;
        };
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for hd in [8, 12, 16, 48, 64, 72, 80, 136] {
            for heads in [1, 2, 3] {
                for stride in [hd, hd + 3, 3 * hd] {
                    for n in [0, 1, 3, 4, 5, 8, 13, 17, 33] {
                        let q = rng.floats(heads * hd);
                        let keys = rng.floats(n.max(1) * stride + hd);
                        let mut got = vec![f32::NAN; heads * n];
                        k.scores(&q, hd, &keys, stride, &mut got);
                        let key = |j: usize| &keys[j * stride..j * stride + hd];
                        for (i, g) in got.iter().enumerate() {
                            let (h, j) = (i / n, i % n);
                            let want = k.dot(&q[h * hd..(h + 1) * hd], key(j));
                            let what = format!("scores {hd} {heads} {stride} {n} {h} {j}");
                            assert_eq!(g.to_bits(), want.to_bits(), "{what}");
                        }
                        let p = rng.floats(heads * n);
                        let mut sum = vec![f32::NAN; heads * hd];
                        k.weighted_sum(&p, hd, &keys, stride, &mut sum);
                        for h in 0..heads {
                            let mut want = vec![0f32; hd];
                            for j in 0..n {
                                k.axpy(p[h * n + j], key(j), &mut want);
                            }
                            let got = &sum[h * hd..(h + 1) * hd];
                            let same = got
                                .iter()
                                .zip(&want)
                                .all(|(a, b)| a.to_bits() == b.to_bits());
                            assert!(same, "weighted sum {hd} {heads} {stride} {n} {h}");
                        }
                    }
                }
            }
        }
    }
}
