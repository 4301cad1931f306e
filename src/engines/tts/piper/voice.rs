//! `PiperVoice`: one loaded Piper voice — its config, its phonemiser and a
//! small pool of ONNX Runtime sessions created once at load and reused for
//! every request (`Session::run` needs `&mut`, so each request borrows one
//! session; with one session requests take turns).

use std::path::Path;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::Tensor;

use super::config::VoiceConfig;
use super::phonemize::Phonemizer;
use super::PiperError;
use crate::engines::onnx::{runtime_environment, SessionPool};
use crate::engines::tts::text::{normalize, split_sentences};

/// How to load a voice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoiceOptions {
    /// ONNX Runtime sessions (concurrent requests); each holds the weights
    /// (~60 MB plus working memory).
    pub sessions: usize,
    /// Intra-op threads per session; 0 lets ONNX Runtime pick.
    pub intra_threads: usize,
    /// Let idle intra-op threads spin-wait for work: slightly lower latency on
    /// a quiet machine, wasted CPU on a busy one (off by default).
    pub spin: bool,
}

impl Default for VoiceOptions {
    fn default() -> Self {
        VoiceOptions {
            sessions: 1,
            intra_threads: 1,
            spin: false,
        }
    }
}

/// A Piper voice ready to speak. `Send + Sync`: share it in an `Arc`.
pub struct PiperVoice {
    config: VoiceConfig,
    phonemizer: Phonemizer,
    pool: SessionPool,
}

impl PiperVoice {
    /// Load the model `onnx` and its `config` (`.onnx.json`) with `sessions`
    /// ONNX Runtime sessions of `threads` intra-op threads each (see
    /// `VoiceOptions`). `init_runtime` must have been called.
    pub fn load(
        onnx: &Path,
        config: &Path,
        sessions: usize,
        threads: usize,
    ) -> Result<Self, PiperError> {
        let opts = VoiceOptions {
            sessions,
            intra_threads: threads,
            ..VoiceOptions::default()
        };
        Self::load_with(onnx, config, opts)
    }

    /// Load with explicit options.
    pub fn load_with(onnx: &Path, config: &Path, opts: VoiceOptions) -> Result<Self, PiperError> {
        let (sessions, threads) = (opts.sessions, opts.intra_threads);
        if sessions == 0 {
            return Err(PiperError::InvalidArgument(
                "sessions must be at least 1".into(),
            ));
        }
        let config = VoiceConfig::load(config)?;
        let env = runtime_environment().ok_or(PiperError::RuntimeNotInitialised)?;
        let model = std::fs::read(onnx).map_err(|source| PiperError::Io {
            path: onnx.to_path_buf(),
            source,
        })?;
        let fail = |reason: String| PiperError::Model {
            path: onnx.to_path_buf(),
            reason,
        };
        let mut idle = Vec::with_capacity(sessions);
        for _ in 0..sessions {
            let mut builder = Session::builder(env)
                .map_err(|e| fail(e.to_string()))?
                .with_optimization_level(GraphOptimizationLevel::All)
                .map_err(|e| fail(e.to_string()))?
                .with_inter_threads(1)
                .map_err(|e| fail(e.to_string()))?
                .with_intra_op_spinning(opts.spin)
                .map_err(|e| fail(e.to_string()))?;
            if threads > 0 {
                builder = builder
                    .with_intra_threads(threads)
                    .map_err(|e| fail(e.to_string()))?;
            }
            let session = builder
                .commit_from_memory(&model)
                .map_err(|e| fail(e.to_string()))?;
            check_signature(&session).map_err(fail)?;
            idle.push(session);
        }
        let phonemizer = Phonemizer::new(&config.espeak_voice, config.phoneme_id_map.clone())?;
        Ok(PiperVoice {
            config,
            phonemizer,
            pool: SessionPool::new(idle),
        })
    }

    /// Output sample rate of this voice (22050 for the joe medium voice).
    pub fn sample_rate(&self) -> u32 {
        self.config.sample_rate
    }

    /// The voice's settings from its `.onnx.json`.
    pub fn config(&self) -> &VoiceConfig {
        &self.config
    }

    /// Piper phoneme strings for `text`, one per sentence (normalised first).
    pub fn phonemize(&self, text: &str) -> Result<Vec<String>, PiperError> {
        split_sentences(&normalize(text))
            .iter()
            .map(|s| self.phonemizer.phonemes(s))
            .collect()
    }

    /// Speak `text` (a sentence or a few; normalised inside): mono f32
    /// samples in [-1, 1] at `sample_rate()`. Empty text gives no samples.
    pub fn synthesize(&self, text: &str) -> Result<Vec<f32>, PiperError> {
        let mut audio = Vec::new();
        for phonemes in self.phonemize(text)? {
            audio.extend(self.synthesize_phonemes(&phonemes)?);
        }
        Ok(audio)
    }

    /// Run the model on one sentence's phoneme string.
    pub fn synthesize_phonemes(&self, phonemes: &str) -> Result<Vec<f32>, PiperError> {
        let ids = self.phonemizer.ids(phonemes);
        if ids.len() <= 4 {
            return Ok(Vec::new()); // nothing but BOS/EOS
        }
        self.infer(ids)
    }

    fn infer(&self, ids: Vec<i64>) -> Result<Vec<f32>, PiperError> {
        let err = |e: ort::Error| PiperError::Inference(e.to_string());
        let n = ids.len();
        let input = Tensor::from_array(([1usize, n], ids)).map_err(err)?;
        let lengths = Tensor::from_array(([1usize], vec![n as i64])).map_err(err)?;
        let c = &self.config;
        let scales = Tensor::from_array(([3usize], vec![c.noise_scale, c.length_scale, c.noise_w]))
            .map_err(err)?;
        let mut lease = self.pool.borrow();
        let session = lease
            .session()
            .ok_or_else(|| PiperError::Inference("session pool is empty".into()))?;
        let outputs = session
            .run(ort::inputs![
                "input" => input,
                "input_lengths" => lengths,
                "scales" => scales,
            ])
            .map_err(err)?;
        let (_, first) = outputs
            .iter()
            .next()
            .ok_or_else(|| PiperError::Inference("model produced no output".into()))?;
        let (_, samples) = first.try_extract_tensor::<f32>().map_err(err)?;
        Ok(samples.iter().map(|s| s.clamp(-1.0, 1.0)).collect())
    }
}

/// The model must take Piper's three inputs.
fn check_signature(session: &Session) -> Result<(), String> {
    for name in ["input", "input_lengths", "scales"] {
        if !session.inputs().iter().any(|i| i.name() == name) {
            return Err(format!(
                "not a Piper model: no input named {name:?} (inputs: {:?})",
                session
                    .inputs()
                    .iter()
                    .map(|i| i.name())
                    .collect::<Vec<_>>()
            ));
        }
    }
    if session.outputs().is_empty() {
        return Err("not a Piper model: no outputs".into());
    }
    Ok(())
}
