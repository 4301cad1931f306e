//! Whisper's log-mel spectrogram, computed on the real audio only (no padding to 30 s): periodic
//! Hann window of `n_fft` = 400, hop 160, centred frames with reflect padding, power spectrum,
//! Slaney-style mel filter bank (as librosa's `filters.mel`, which produced OpenAI's `mel_80.npy`),
//! then `log10(max(x, 1e-10))`, clamp to `max - 8`, and `(x + 4) / 4`. Used by the Whisper
//! speech-to-text engine and by the Smart Turn end-of-turn model.

use std::sync::Arc;

use realfft::RealFftPlanner;

pub const SAMPLE_RATE: usize = 16_000;
pub const N_FFT: usize = 400;
pub const HOP: usize = 160;

/// Precomputed window, filter bank and FFT plan; cheap to share between threads.
pub struct MelExtractor {
    n_mels: usize,
    /// `n_mels x (N_FFT / 2 + 1)`, row-major.
    filters: Vec<f32>,
    /// The bins where each filter is not zero (a triangle spans a few bins).
    support: Vec<std::ops::Range<usize>>,
    window: Vec<f32>,
    fft: Arc<dyn realfft::RealToComplex<f32>>,
}

impl std::fmt::Debug for MelExtractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MelExtractor")
            .field("n_mels", &self.n_mels)
            .finish()
    }
}

fn hz_to_mel(hz: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    let logstep = 6.4f64.ln() / 27.0;
    if hz >= MIN_LOG_HZ {
        MIN_LOG_HZ / F_SP + (hz / MIN_LOG_HZ).ln() / logstep
    } else {
        hz / F_SP
    }
}

fn mel_to_hz(mel: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    let min_log_mel = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    if mel >= min_log_mel {
        MIN_LOG_HZ * (logstep * (mel - min_log_mel)).exp()
    } else {
        F_SP * mel
    }
}

/// Slaney-normalised triangular mel filters from 0 Hz to `sample_rate / 2`, row-major
/// `n_mels x (n_fft / 2 + 1)`.
pub fn mel_filters(n_mels: usize, n_fft: usize, sample_rate: usize) -> Vec<f32> {
    let n_freqs = n_fft / 2 + 1;
    let max_mel = hz_to_mel(sample_rate as f64 / 2.0);
    let mel_f: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(max_mel * i as f64 / (n_mels + 1) as f64))
        .collect();
    let fft_f: Vec<f64> = (0..n_freqs)
        .map(|k| k as f64 * sample_rate as f64 / n_fft as f64)
        .collect();
    let mut out = vec![0f32; n_mels * n_freqs];
    for m in 0..n_mels {
        let (lo, mid, hi) = (mel_f[m], mel_f[m + 1], mel_f[m + 2]);
        let enorm = 2.0 / (hi - lo);
        for (k, &f) in fft_f.iter().enumerate() {
            let lower = (f - lo) / (mid - lo);
            let upper = (hi - f) / (hi - mid);
            out[m * n_freqs + k] = (lower.min(upper).max(0.0) * enorm) as f32;
        }
    }
    out
}

impl MelExtractor {
    pub fn new(n_mels: usize) -> Self {
        let window = (0..N_FFT)
            .map(|n| {
                let x = 2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64;
                (0.5 - 0.5 * x.cos()) as f32
            })
            .collect();
        let filters = mel_filters(n_mels, N_FFT, SAMPLE_RATE);
        let n_freqs = N_FFT / 2 + 1;
        let support = filters
            .chunks(n_freqs)
            .map(|row| {
                let first = row.iter().position(|&w| w != 0.0).unwrap_or(0);
                let last = row.iter().rposition(|&w| w != 0.0).map_or(0, |i| i + 1);
                first..last.max(first)
            })
            .collect();
        Self {
            n_mels,
            filters,
            support,
            window,
            fft: RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT),
        }
    }

    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Log-mel features, row-major `n_mels x n_frames` with `n_frames = pcm.len() / HOP`
    /// (Whisper drops the last centred frame). Returns `(features, n_frames)`.
    pub fn compute(&self, pcm: &[f32]) -> (Vec<f32>, usize) {
        let n_frames = pcm.len() / HOP;
        if n_frames == 0 {
            return (Vec::new(), 0);
        }
        let padded = reflect_pad(pcm, N_FFT / 2);
        let n_freqs = N_FFT / 2 + 1;
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0f32; n_freqs];
        let mut mel = vec![0f32; self.n_mels * n_frames];
        for t in 0..n_frames {
            let frame = &padded[t * HOP..t * HOP + N_FFT];
            for ((dst, &x), &w) in input.iter_mut().zip(frame).zip(&self.window) {
                *dst = x * w;
            }
            // Lengths come from the plan itself, so this cannot fail.
            if self
                .fft
                .process_with_scratch(&mut input, &mut spectrum, &mut scratch)
                .is_err()
            {
                continue;
            }
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.norm_sqr();
            }
            for (m, bins) in self.support.iter().enumerate() {
                // Zero weights add nothing: only the filter's own bins are summed.
                let row = &self.filters[m * n_freqs..(m + 1) * n_freqs];
                let e: f32 = row[bins.clone()]
                    .iter()
                    .zip(&power[bins.clone()])
                    .map(|(a, b)| a * b)
                    .sum();
                mel[m * n_frames + t] = e.max(1e-10).log10();
            }
        }
        let max = mel.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for v in &mut mel {
            *v = (v.max(max - 8.0) + 4.0) / 4.0;
        }
        (mel, n_frames)
    }
}

/// numpy-style `reflect` padding (edge sample not repeated); audio shorter than the pad is
/// zero-extended first so the reflection always has material.
fn reflect_pad(pcm: &[f32], pad: usize) -> Vec<f32> {
    let mut src = pcm.to_vec();
    if src.len() <= pad {
        src.resize(pad + 1, 0.0);
    }
    let n = src.len();
    let mut out = Vec::with_capacity(n + 2 * pad);
    out.extend((1..=pad).rev().map(|i| src[i]));
    out.extend_from_slice(&src);
    out.extend((0..pad).map(|i| src[n - 2 - i]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slaney_filters_match_librosa_reference_points() {
        let f = mel_filters(80, 400, 16_000);
        assert_eq!(f.len(), 80 * 201);
        // Values from librosa.filters.mel(sr=16000, n_fft=400, n_mels=80) (= whisper mel_80.npy).
        assert!((f[1] - 0.024_862_594).abs() < 1e-6, "{}", f[1]);
        assert!((f[201 + 2] - 0.022_871_772).abs() < 1e-6, "{}", f[203]);
        assert!((f[79 * 201..].iter().copied().fold(0.0, f32::max) - 0.003_164_712).abs() < 1e-6);
        // Every filter has some weight and none is negative.
        for m in 0..80 {
            let row = &f[m * 201..(m + 1) * 201];
            assert!(row.iter().all(|&x| x >= 0.0));
            assert!(row.iter().any(|&x| x > 0.0), "filter {m} empty");
        }
    }

    #[test]
    fn frames_and_normalisation() {
        let mel = MelExtractor::new(80);
        let pcm: Vec<f32> = (0..16_000)
            .map(|i| (i as f32 * 440.0 * 2.0 * std::f32::consts::PI / 16_000.0).sin() * 0.5)
            .collect();
        let (x, n) = mel.compute(&pcm);
        assert_eq!(n, 100);
        assert_eq!(x.len(), 80 * 100);
        let max = x.iter().copied().fold(f32::MIN, f32::max);
        let min = x.iter().copied().fold(f32::MAX, f32::min);
        assert!(
            max - min <= 2.0 + 1e-5,
            "dynamic range clamps to 8 log10 units / 4"
        );
        // 440 Hz = 6.6 Slaney mels; filter centres are 0.559 mels apart, so filter 11 (centre 12 x 0.559 = 6.7 mels) peaks.
        let loudest = (0..80).max_by(|&a, &b| x[a * n + 50].total_cmp(&x[b * n + 50]));
        assert_eq!(loudest, Some(11));
    }

    /// Summing each filter over its own bins gives what the whole row gives.
    #[test]
    fn filter_supports_hold_every_weight() {
        let mel = MelExtractor::new(80);
        let n_freqs = N_FFT / 2 + 1;
        for (m, bins) in mel.support.iter().enumerate() {
            let row = &mel.filters[m * n_freqs..(m + 1) * n_freqs];
            assert!(!bins.is_empty(), "filter {m}");
            for (k, &w) in row.iter().enumerate() {
                assert!(w == 0.0 || bins.contains(&k), "filter {m} bin {k}");
            }
        }
    }

    #[test]
    fn tiny_and_empty_inputs_do_not_panic() {
        let mel = MelExtractor::new(80);
        assert_eq!(mel.compute(&[]).1, 0);
        assert_eq!(mel.compute(&[0.1; 100]).1, 0);
        assert_eq!(mel.compute(&[0.1; 170]).1, 1);
        assert_eq!(mel.compute(&[0.0; 1600]).1, 10);
    }
}
