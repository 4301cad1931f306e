//! Smart Turn v3 (Pipecat's end-of-turn model, ONNX) on ONNX Runtime: given the caller's audio
//! up to a pause, the probability that what they said is a complete turn, judged from the sound
//! alone (words and intonation), not from a transcript.
//!
//! The preprocessing is Pipecat's (`local_smart_turn_v3.py` and `_whisper_features.py` in the
//! `pipecat-ai` wheel): the last 8 s of 16 kHz audio, zeros in front when shorter; the whole
//! window normalised to zero mean and unit variance; Whisper's 80-band log-mel spectrogram
//! (`crate::audio::mel`), 800 frames of 10 ms.
//!
//! The model's signature, checked at load:
//!
//! | name | type | shape | meaning |
//! |---|---|---|---|
//! | in `input_features` | f32 | [batch, 80, 800] | log-mel features |
//! | out (the first) | f32 | [batch, 1] | probability that the turn is complete (a sigmoid already) |
//!
//! [`SmartTurn`] is the shared model (a few sessions, created once); `predict` runs it on the
//! calling thread, so async code calls it through the engine's blocking pool.

use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::TensorRef;

use crate::audio::mel::{MelExtractor, HOP, SAMPLE_RATE};
use crate::engines::onnx::{self, OnnxError, SessionPool};

/// Audio the model sees: the last 8 s.
pub const WINDOW_SAMPLES: usize = 8 * SAMPLE_RATE;
/// Mel bands.
pub const N_MELS: usize = 80;
/// Feature frames: one per 10 ms of the window.
pub const FRAMES: usize = WINDOW_SAMPLES / HOP;
/// The model's input.
const INPUT: &str = "input_features";
/// Added to the variance before normalising (Pipecat's `_NORM_VARIANCE_EPS`).
const VARIANCE_EPS: f64 = 1e-7;

/// Everything that can go wrong loading or running the model. Messages name the file.
#[derive(Debug, thiserror::Error)]
pub enum SmartTurnError {
    /// The ONNX Runtime library could not be loaded.
    #[error(transparent)]
    Runtime(#[from] OnnxError),
    /// The model file could not be read.
    #[error("cannot read the Smart Turn model {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// ONNX Runtime refused the file, or it is not a Smart Turn v3 model.
    #[error("cannot load the Smart Turn model {path}: {reason}")]
    Model { path: PathBuf, reason: String },
    /// An argument was out of range (zero sessions).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A run failed.
    #[error("Smart Turn inference failed: {0}")]
    Inference(String),
}

/// Pipecat's Smart Turn features of 16 kHz audio. Cheap to share between threads.
pub struct Features {
    mel: MelExtractor,
}

impl Default for Features {
    fn default() -> Self {
        Self::new()
    }
}

impl Features {
    pub fn new() -> Self {
        Self {
            mel: MelExtractor::new(N_MELS),
        }
    }

    /// The model's input for `audio` (16 kHz, the end of it is the moment judged): `N_MELS x
    /// FRAMES` values, row-major. Non-finite samples count as 0 and samples are clamped to
    /// [-1, 1]; any length is accepted (empty audio is 8 s of silence).
    pub fn compute(&self, audio: &[f32]) -> Vec<f32> {
        let window = normalized_window(audio);
        let (features, frames) = self.mel.compute(&window);
        debug_assert_eq!(frames, FRAMES);
        features
    }
}

/// The last `WINDOW_SAMPLES` of `audio`, zeros in front when shorter, scaled to zero mean and
/// unit variance over the whole window (padding included, as Pipecat does).
fn normalized_window(audio: &[f32]) -> Vec<f32> {
    let tail = &audio[audio.len().saturating_sub(WINDOW_SAMPLES)..];
    let mut window = vec![0.0f32; WINDOW_SAMPLES - tail.len()];
    window.extend(tail.iter().copied().map(sanitize));
    let n = window.len() as f64;
    let mean = window.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = window
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / n;
    let scale = 1.0 / (var + VARIANCE_EPS).sqrt();
    for x in &mut window {
        *x = ((f64::from(*x) - mean) * scale) as f32;
    }
    window
}

/// What the model may see of a sample: finite and within [-1, 1].
fn sanitize(s: f32) -> f32 {
    if s.is_finite() {
        s.clamp(-1.0, 1.0)
    } else {
        0.0
    }
}

/// The shared model: a few ONNX Runtime sessions, created once. `Send + Sync`: share it in an
/// `Arc`.
pub struct SmartTurn {
    pool: SessionPool,
    features: Features,
}

impl SmartTurn {
    /// Loads ONNX Runtime from `ort_lib` (once per process; later calls keep the first library)
    /// and `sessions` sessions of `model` (`smart-turn-v3.2-cpu.onnx`), each on one thread.
    pub fn load(ort_lib: &Path, model: &Path, sessions: usize) -> Result<Self, SmartTurnError> {
        if sessions == 0 {
            return Err(SmartTurnError::InvalidArgument(
                "sessions must be at least 1".into(),
            ));
        }
        onnx::init_runtime(ort_lib)?;
        let env = onnx::runtime_environment().ok_or_else(|| OnnxError::Library {
            path: ort_lib.to_path_buf(),
            reason: "the runtime did not initialise".into(),
        })?;
        let bytes = std::fs::read(model).map_err(|source| SmartTurnError::Io {
            path: model.to_path_buf(),
            source,
        })?;
        let fail = |reason: String| SmartTurnError::Model {
            path: model.to_path_buf(),
            reason,
        };
        let features = Features::new();
        let silence = features.compute(&[]);
        let mut idle = Vec::with_capacity(sessions);
        for _ in 0..sessions {
            let mut session =
                onnx::single_thread_session(env, &bytes).map_err(|e| fail(e.to_string()))?;
            check_signature(&session).map_err(fail)?;
            // One run on silence: checks the output's shape and warms the session up.
            run(&mut session, &silence).map_err(|e| fail(e.to_string()))?;
            idle.push(session);
        }
        Ok(SmartTurn {
            pool: SessionPool::new(idle),
            features,
        })
    }

    /// The features the model is given for `audio` (see [`Features::compute`]).
    pub fn features(&self, audio: &[f32]) -> Vec<f32> {
        self.features.compute(audio)
    }

    /// Probability (0 to 1) that the turn ending with `audio` (16 kHz, any length; only the
    /// last 8 s count) is complete. Runs the model on this thread, blocking while every
    /// session is busy: call it from a blocking thread, not from async code.
    pub fn predict(&self, audio: &[f32]) -> Result<f32, SmartTurnError> {
        let features = self.features.compute(audio);
        self.predict_features(&features)
    }

    /// Probability from features made by [`Features::compute`] (`N_MELS x FRAMES` values).
    pub fn predict_features(&self, features: &[f32]) -> Result<f32, SmartTurnError> {
        if features.len() != N_MELS * FRAMES {
            return Err(SmartTurnError::InvalidArgument(format!(
                "{} feature values, expected {}",
                features.len(),
                N_MELS * FRAMES
            )));
        }
        let mut lease = self.pool.borrow();
        let session = lease
            .session()
            .ok_or_else(|| SmartTurnError::Inference("session pool is empty".into()))?;
        run(session, features)
    }
}

/// One model run on one window's features.
fn run(session: &mut Session, features: &[f32]) -> Result<f32, SmartTurnError> {
    let err = |e: ort::Error| SmartTurnError::Inference(e.to_string());
    let input = TensorRef::from_array_view(([1usize, N_MELS, FRAMES], features)).map_err(err)?;
    let outputs = session.run(ort::inputs![INPUT => input]).map_err(err)?;
    if outputs.len() == 0 {
        return Err(SmartTurnError::Inference("the model gave no output".into()));
    }
    let (_, data) = outputs[0].try_extract_tensor::<f32>().map_err(err)?;
    match data {
        [p] if p.is_finite() => Ok(p.clamp(0.0, 1.0)),
        [p] => Err(SmartTurnError::Inference(format!(
            "the model gave {p} for a probability"
        ))),
        other => Err(SmartTurnError::Inference(format!(
            "the output has {} values, expected 1",
            other.len()
        ))),
    }
}

/// The model must take `input_features` and give one output.
fn check_signature(session: &Session) -> Result<(), String> {
    let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
    if inputs != [INPUT] {
        return Err(format!(
            "not a Smart Turn v3 model: expected one input named {INPUT:?}, found {inputs:?}"
        ));
    }
    if session.outputs().is_empty() {
        return Err("not a Smart Turn v3 model: no output".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_8_s_of_800_frames() {
        assert_eq!(WINDOW_SAMPLES, 128_000);
        assert_eq!(FRAMES, 800);
    }

    #[test]
    fn short_audio_is_padded_in_front_and_long_audio_keeps_its_end() {
        let w = normalized_window(&[0.5; 1000]);
        assert_eq!(w.len(), WINDOW_SAMPLES);
        assert!(
            w[0] < 0.0 && w[WINDOW_SAMPLES - 1] > 0.0,
            "speech at the end"
        );
        let mut long = vec![0.0; WINDOW_SAMPLES];
        long.extend(vec![0.5; 1000]);
        assert_eq!(normalized_window(&long), w);
    }

    #[test]
    fn the_window_has_zero_mean_and_unit_variance() {
        let audio: Vec<f32> = (0..50_000).map(|i| (i as f32 * 0.01).sin() * 0.3).collect();
        let w = normalized_window(&audio);
        let mean = w.iter().map(|&x| f64::from(x)).sum::<f64>() / w.len() as f64;
        let var = w.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / w.len() as f64;
        assert!(mean.abs() < 1e-6, "{mean}");
        assert!((var - 1.0).abs() < 1e-4, "{var}");
    }

    #[test]
    fn silence_and_bad_samples_give_finite_features() {
        let f = Features::new();
        for audio in [
            vec![],
            vec![0.0; 500],
            vec![f32::NAN, f32::INFINITY, -7.0, 0.2],
        ] {
            let x = f.compute(&audio);
            assert_eq!(x.len(), N_MELS * FRAMES);
            assert!(x.iter().all(|v| v.is_finite()));
        }
    }

    #[test]
    fn zero_sessions_is_refused_before_touching_files() {
        let err = SmartTurn::load(Path::new("/nonexistent/lib.so"), Path::new("/x.onnx"), 0)
            .err()
            .expect("zero sessions");
        assert!(matches!(err, SmartTurnError::InvalidArgument(_)), "{err}");
    }

    #[test]
    fn public_types_are_send_and_sync() {
        fn sync<T: Send + Sync>() {}
        sync::<SmartTurn>();
        sync::<Features>();
        sync::<SmartTurnError>();
    }
}
