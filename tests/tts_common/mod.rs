//! Shared helpers for the integration tests: where the voice and runtime
//! are, and objective measures of "this is speech".

#![allow(dead_code)]

use std::path::PathBuf;

/// Path of the Piper `.onnx` (env `VOXWIRE_TTS_VOICE`, default: the fetched voice); its config is the
/// same path plus `.json`.
pub fn voice_paths() -> (PathBuf, PathBuf) {
    let store = voxwire::models::ModelStore::from_env();
    let onnx = std::env::var_os("VOXWIRE_TTS_VOICE").map_or_else(
        || store.file(voxwire::models::manifest::PIPER_JOE, "voice.onnx"),
        PathBuf::from,
    );
    let mut config = onnx.clone().into_os_string();
    config.push(".json");
    (onnx, PathBuf::from(config))
}

/// Path of `libonnxruntime.so` (env `VOXWIRE_ORT_LIB`).
pub fn ort_lib() -> PathBuf {
    let store = voxwire::models::ModelStore::from_env();
    std::env::var_os("VOXWIRE_ORT_LIB").map_or_else(
        || store.file(voxwire::models::manifest::ONNXRUNTIME, "libonnxruntime.so"),
        PathBuf::from,
    )
}

/// Where WAVs are kept for later checks (transcription by the STT engine).
pub fn out_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("test-artifacts");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

pub fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|s| s * s).sum::<f32>() / x.len().max(1) as f32).sqrt()
}

/// Objective signs of speech in mono audio at `rate`.
#[derive(Debug)]
pub struct SpeechStats {
    pub seconds: f32,
    pub rms: f32,
    /// Fraction of 20 ms frames more than 30 dB below the loudest frame
    /// (pauses between words and phrases).
    pub quiet_fraction: f32,
    /// Coefficient of variation of frame energies (a steady tone is ~0).
    pub energy_variation: f32,
    /// Spread (max/min) of zero-crossing rates among loud frames: voiced
    /// vowels and fricatives differ a lot; one tone has one rate.
    pub zcr_spread: f32,
}

pub fn speech_stats(x: &[f32], rate: u32) -> SpeechStats {
    let frame = (rate / 50) as usize;
    let frames: Vec<&[f32]> = x.chunks_exact(frame).collect();
    let energies: Vec<f32> = frames.iter().map(|f| rms(f)).collect();
    let loudest = energies.iter().cloned().fold(0.0f32, f32::max);
    let quiet = energies.iter().filter(|&&e| e < loudest * 0.0316).count();
    let mean = energies.iter().sum::<f32>() / energies.len().max(1) as f32;
    let var =
        energies.iter().map(|e| (e - mean).powi(2)).sum::<f32>() / energies.len().max(1) as f32;
    let zcrs: Vec<f32> = frames
        .iter()
        .zip(&energies)
        .filter(|(_, &e)| e > loudest * 0.1)
        .map(|(f, _)| {
            f.windows(2)
                .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
                .count() as f32
        })
        .collect();
    let zmax = zcrs.iter().cloned().fold(0.0f32, f32::max);
    let zmin = zcrs.iter().cloned().fold(f32::MAX, f32::min).max(1.0);
    SpeechStats {
        seconds: x.len() as f32 / rate as f32,
        rms: rms(x),
        quiet_fraction: quiet as f32 / frames.len().max(1) as f32,
        energy_variation: var.sqrt() / mean.max(1e-9),
        zcr_spread: zmax / zmin,
    }
}

/// Assert the stats look like speech of `words` words.
pub fn assert_speech(stats: &SpeechStats, words: usize, what: &str) {
    let per_word = stats.seconds / words as f32;
    assert!(
        (0.25..=0.7).contains(&per_word),
        "{what}: {per_word:.2} s per word ({stats:?})"
    );
    assert!(stats.rms > 0.02, "{what}: too quiet ({stats:?})");
    assert!(
        stats.energy_variation > 0.4,
        "{what}: too steady ({stats:?})"
    );
    assert!(stats.quiet_fraction > 0.03, "{what}: no pauses ({stats:?})");
    assert!(
        stats.zcr_spread > 2.0,
        "{what}: one timbre only ({stats:?})"
    );
}
