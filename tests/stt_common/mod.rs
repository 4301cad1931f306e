//! Shared test helpers: locating the model, loading it once per test binary, WAV reading and
//! resampling, espeak-ng speech synthesis, deterministic noise, and word error rate.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use voxwire::engines::stt::whisper::Whisper;

pub const SR: usize = 16_000;

/// `VOXWIRE_STT_MODEL_DIR`, defaulting to the fetched tiny.en model.
pub fn model_dir() -> PathBuf {
    std::env::var_os("VOXWIRE_STT_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            voxwire::models::ModelStore::from_env()
                .model_dir(voxwire::models::manifest::WHISPER_TINY_EN)
        })
}

/// The model, loaded once per test binary.
pub fn whisper() -> Arc<Whisper> {
    static MODEL: OnceLock<Arc<Whisper>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = model_dir();
            let w = Whisper::load(&dir)
                .unwrap_or_else(|e| panic!("loading model from {}: {e}", dir.display()));
            Arc::new(w)
        })
        .clone()
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/speech")
        .join(name)
}

/// Reads a WAV file as mono f32 at 16 kHz (downmixing and resampling as needed).
pub fn read_wav(path: &Path) -> Vec<f32> {
    let mut reader =
        hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = reader.spec();
    let samples: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader.samples::<f32>().map(|s| s.unwrap()).collect(),
        hound::SampleFormat::Int => {
            let scale = (1i64 << (spec.bits_per_sample - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.unwrap() as f32 / scale)
                .collect()
        }
    };
    let ch = usize::from(spec.channels);
    let mono: Vec<f32> = samples
        .chunks(ch)
        .map(|c| c.iter().sum::<f32>() / ch as f32)
        .collect();
    resample(&mono, spec.sample_rate as usize, SR)
}

/// Windowed-sinc resampler (Hann window, 32 taps per side, cutoff just under the lower Nyquist).
pub fn resample(x: &[f32], from: usize, to: usize) -> Vec<f32> {
    if from == to {
        return x.to_vec();
    }
    let ratio = to as f64 / from as f64;
    let cutoff = 0.95 * ratio.min(1.0);
    let half = 32.0 / cutoff;
    let n_out = (x.len() as f64 * ratio).floor() as usize;
    (0..n_out)
        .map(|i| {
            let t = i as f64 / ratio;
            let lo = (t - half).ceil().max(0.0) as usize;
            let hi = ((t + half).floor() as usize).min(x.len().saturating_sub(1));
            let mut acc = 0.0;
            for (j, &s) in x.iter().enumerate().take(hi + 1).skip(lo) {
                let d = j as f64 - t;
                let arg = std::f64::consts::PI * d * cutoff;
                let sinc = if d == 0.0 { 1.0 } else { arg.sin() / arg };
                let w = 0.5 + 0.5 * (std::f64::consts::PI * d / half).cos();
                acc += f64::from(s) * cutoff * sinc * w;
            }
            acc as f32
        })
        .collect()
}

pub fn have_espeak() -> bool {
    Command::new("espeak-ng")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Speaks `text` with espeak-ng (en-us, 150 wpm) and returns 16 kHz mono samples.
pub fn espeak(text: &str) -> Vec<f32> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("voxwire-stt-{}-{n}.wav", std::process::id()));
    let status = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&path)
        .arg(text)
        .status()
        .expect("running espeak-ng (scripts/setup installs it)");
    assert!(status.success(), "espeak-ng failed for {text:?}");
    let pcm = read_wav(&path);
    let _ = std::fs::remove_file(&path);
    pcm
}

/// Deterministic Gaussian-ish white noise (sum of 4 uniforms) with the given RMS.
pub fn white_noise(len: usize, rms: f32, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f32 / (1u64 << 53) as f32 - 0.5
    };
    // Sum of 4 uniforms in [-0.5, 0.5) has variance 4/12.
    let k = rms / (4.0f32 / 12.0).sqrt();
    (0..len)
        .map(|_| (uniform() + uniform() + uniform() + uniform()) * k)
        .collect()
}

/// Lower-case words with punctuation removed; hyphens split words; "mr" spelled out.
pub fn normalise(text: &str) -> Vec<String> {
    let cleaned: String = text
        .chars()
        .map(|c| match c {
            '-' | '\u{2014}' | '\u{2013}' => ' ',
            c if c.is_alphanumeric() || c.is_whitespace() => c.to_ascii_lowercase(),
            _ => '\0',
        })
        .filter(|&c| c != '\0')
        .collect();
    cleaned
        .split_whitespace()
        .map(|w| match w {
            "mr" => "mister".to_string(),
            "mrs" => "missus".to_string(),
            w => w.to_string(),
        })
        .collect()
}

/// Word error rate: word-level Levenshtein distance / reference length.
pub fn wer(reference: &str, hypothesis: &str) -> f64 {
    let r = normalise(reference);
    let h = normalise(hypothesis);
    if r.is_empty() {
        return if h.is_empty() { 0.0 } else { 1.0 };
    }
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut cur = vec![i + 1; h.len() + 1];
        for (j, hw) in h.iter().enumerate() {
            let sub = prev[j] + usize::from(rw != hw);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[h.len()] as f64 / r.len() as f64
}

#[test]
fn wer_counts_substitutions_insertions_deletions() {
    assert_eq!(wer("the cat sat", "The cat sat."), 0.0);
    assert!((wer("the cat sat", "the cat") - 1.0 / 3.0).abs() < 1e-9);
    assert!((wer("the cat sat", "a cat sat down") - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!(
        wer(
            "Mr. Dashwood is cold-hearted",
            "mister dashwood is cold hearted"
        ),
        0.0
    );
}
