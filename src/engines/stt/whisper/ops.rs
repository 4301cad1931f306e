//! Element-wise kernels that candle runs slowly on CPU: exact (erf) GELU through a fast
//! erf approximation (|error| < 1.5e-7, Abramowitz & Stegun 7.1.26) and a row softmax, both
//! split across the request's compute pool for the encoder's large activations. candle's own
//! `gelu_erf` is single-threaded and was the largest single cost of the encoder.

use candle_core::{Result, Tensor};
use rayon::prelude::*;

/// Tensors smaller than this are processed on the calling thread.
const PARALLEL_MIN: usize = 1 << 15;

/// erf(x) for f32, Abramowitz & Stegun 7.1.26.
fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152_1,
        1.061_405_4,
    ];
    let s = x.signum();
    let x = x.abs();
    let t = 1.0 / (1.0 + P * x);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    s * (1.0 - poly * (-x * x).exp())
}

fn gelu_scalar(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Runs `f` over `v` in place, split into one part per thread of the current rayon pool when
/// `v` is large; parts are whole multiples of `unit` elements.
fn for_parts(v: &mut [f32], unit: usize, f: impl Fn(&mut [f32]) + Send + Sync) {
    let threads = rayon::current_num_threads().max(1);
    if v.len() < PARALLEL_MIN || threads == 1 || unit == 0 {
        f(v);
        return;
    }
    let chunk = (v.len() / unit).div_ceil(threads).max(1) * unit;
    v.par_chunks_mut(chunk).for_each(f);
}

/// Softmax over the last dimension of an f32 tensor.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let shape = x.shape().clone();
    let cols = x.dim(candle_core::D::Minus1)?;
    let mut v = x.flatten_all()?.to_vec1::<f32>()?;
    for_parts(&mut v, cols, |part| {
        for row in part.chunks_exact_mut(cols) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for e in row.iter_mut() {
                *e = (*e - max).exp();
                sum += *e;
            }
            let inv = 1.0 / sum;
            row.iter_mut().for_each(|e| *e *= inv);
        }
    });
    Tensor::from_vec(v, shape, x.device())
}

/// `x * Phi(x)` (exact GELU, as Whisper was trained with) for an f32 tensor.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    let shape = x.shape().clone();
    let mut v = x.flatten_all()?.to_vec1::<f32>()?;
    for_parts(&mut v, 1, |part| {
        part.iter_mut().for_each(|e| *e = gelu_scalar(*e))
    });
    Tensor::from_vec(v, shape, x.device())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_candle_gelu_erf() {
        let xs: Vec<f32> = (-4000..4000).map(|i| i as f32 / 500.0).collect();
        let t = Tensor::new(xs.as_slice(), &candle_core::Device::Cpu).unwrap();
        let ours = gelu(&t).unwrap().to_vec1::<f32>().unwrap();
        let reference = t.gelu_erf().unwrap().to_vec1::<f32>().unwrap();
        for ((x, a), b) in xs.iter().zip(&ours).zip(&reference) {
            assert!((a - b).abs() < 1e-5, "gelu({x}) = {a}, candle says {b}");
        }
        // Large inputs take the threaded path and give the same values.
        let big = Tensor::new(vec![0.5f32; PARALLEL_MIN * 2], &candle_core::Device::Cpu).unwrap();
        let out = gelu(&big).unwrap().to_vec1::<f32>().unwrap();
        assert!(out.iter().all(|&y| (y - gelu_scalar(0.5)).abs() < 1e-7));
    }

    #[test]
    fn softmax_matches_candle() {
        let dev = candle_core::Device::Cpu;
        for (rows, cols) in [(3, 5), (300, 301)] {
            let data: Vec<f32> = (0..rows * cols)
                .map(|i| ((i * 37) % 23) as f32 - 11.0)
                .collect();
            let t = Tensor::from_vec(data, (rows, cols), &dev).unwrap();
            let ours = softmax_last_dim(&t)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let theirs = candle_nn::ops::softmax_last_dim(&t).unwrap();
            let theirs = theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (a, b) in ours.iter().zip(&theirs) {
                assert!((a - b).abs() < 1e-6, "{a} vs {b}");
            }
        }
    }
}
