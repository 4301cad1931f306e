//! Offline Whisper speech-to-text: loads a CTranslate2 (faster-whisper) model directory and
//! transcribes 16 kHz mono PCM. Owns the public API ([`Whisper`], [`WhisperOptions`],
//! [`Transcript`], [`Segment`], [`WhisperError`]) and the per-window pipeline: energy gate ->
//! log-mel on the real audio (+ a short silent margin) -> encoder -> greedy decoder -> no-speech
//! gate. Audio over 30 s is split into consecutive windows whose texts are joined.
//!
//! The loaded [`Whisper`] is immutable and `Send + Sync`: share it as `Arc<Whisper>`; each
//! `transcribe` call builds its own decoder state and runs on its own compute pool of
//! [`WhisperOptions::threads`] threads (candle's CPU kernels use the current rayon pool).
#![forbid(unsafe_code)]

mod audio;
pub mod ct2;
mod decode;
mod error;
mod model;
mod ops;
mod weights;

use std::path::Path;

use candle_core::{Device, Tensor};
use tokenizers::Tokenizer;

pub use crate::audio::mel::SAMPLE_RATE;
pub use error::WhisperError;
pub use model::Dims;

use crate::audio::mel::{self, MelExtractor};
use decode::{DecodeParams, Specials};
use model::WhisperModel;

/// Longest window the encoder accepts: 30 s.
const WINDOW_SAMPLES: usize = 30 * SAMPLE_RATE;
/// Where to look for a quiet cut before a window's end.
const CUT_SEARCH_SAMPLES: usize = 5 * SAMPLE_RATE;

/// Tuning knobs; `Default` gives Whisper's usual thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct WhisperOptions {
    /// Cap on text tokens decoded per 30 s window (Whisper's own limit is 224).
    pub max_tokens: usize,
    /// A window is silence when P(`<|nospeech|>`) exceeds this and the average log-probability
    /// is below `logprob_threshold` (Whisper's rule), or when P(`<|nospeech|>`) alone exceeds
    /// `no_speech_hard_threshold`.
    pub no_speech_threshold: f32,
    pub logprob_threshold: f32,
    pub no_speech_hard_threshold: f32,
    /// Windows whose loudest 30 ms is quieter than this (dBFS) are silence; the model is skipped.
    pub silence_dbfs: f32,
    /// Compute threads per request: candle's kernels and this engine's run in a rayon pool of
    /// this size created for each call; 0 = one per physical core (candle's own default).
    /// A per-request pool keeps gemm's thread hand-offs from fighting the rest of the process:
    /// with candle's global pool, 2 threads had doubled latency on the busy lab machine; with
    /// this pool 2 threads beat 1 both idle (5 s: 224 vs 282 ms) and busy (~325 vs ~370 ms).
    /// Set 1 to leave the other core to concurrent requests or engines.
    pub threads: usize,
    /// Silence appended after the real audio before encoding; Whisper was trained on padded
    /// 30 s windows, and a little trailing silence keeps its end-of-text behaviour right.
    pub encoder_margin_ms: u32,
}

impl Default for WhisperOptions {
    fn default() -> Self {
        Self {
            max_tokens: 224,
            no_speech_threshold: 0.6,
            logprob_threshold: -1.0,
            no_speech_hard_threshold: 0.9,
            silence_dbfs: -50.0,
            threads: 0,
            encoder_margin_ms: 500,
        }
    }
}

/// One transcribed window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub start_ms: u64,
    pub end_ms: u64,
    pub text: String,
}

/// The result of one `transcribe` call.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// Segment texts joined by single spaces; empty for silence or noise.
    pub text: String,
    /// Non-empty windows only.
    pub segments: Vec<Segment>,
    /// P(`<|nospeech|>`) of the most speech-like window (1.0 when every window was gated by
    /// energy, or the audio is empty).
    pub no_speech_prob: f32,
    pub audio_ms: u64,
}

/// A loaded Whisper model. `Send + Sync`; one copy of the weights serves any number of threads.
pub struct Whisper {
    model: WhisperModel,
    mel: MelExtractor,
    tokenizer: Tokenizer,
    specials: Specials,
    params: DecodeParams,
    options: WhisperOptions,
}

#[derive(serde::Deserialize)]
struct Ct2Config {
    #[serde(default)]
    suppress_ids: Vec<u32>,
    #[serde(default)]
    suppress_ids_begin: Vec<u32>,
}

/// Outcome of one window.
struct WindowText {
    text: String,
    no_speech_prob: f32,
}

impl Whisper {
    /// Loads `model.bin`, `config.json` and `tokenizer.json` from `model_dir`.
    pub fn load(model_dir: &Path) -> Result<Self, WhisperError> {
        Self::load_with_options(model_dir, WhisperOptions::default())
    }

    pub fn load_with_options(
        model_dir: &Path,
        options: WhisperOptions,
    ) -> Result<Self, WhisperError> {
        let config_path = model_dir.join("config.json");
        let raw = std::fs::read_to_string(&config_path)
            .map_err(|e| WhisperError::config(&config_path, format!("cannot read: {e}")))?;
        let config: Ct2Config = serde_json::from_str(&raw)
            .map_err(|e| WhisperError::config(&config_path, format!("invalid JSON: {e}")))?;

        let tok_path = model_dir.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(WhisperError::config(&tok_path, "file not found"));
        }
        let tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| WhisperError::config(&tok_path, format!("invalid tokenizer: {e}")))?;

        let ct2 = ct2::Ct2Model::load(&model_dir.join("model.bin"))?;
        let model = WhisperModel::from_ct2(&ct2)?;
        drop(ct2);

        let specials = Self::specials(&tokenizer, &tok_path, &model.dims)?;
        Ok(Self {
            mel: MelExtractor::new(model.dims.n_mels),
            params: DecodeParams {
                suppress: config.suppress_ids,
                suppress_begin: config.suppress_ids_begin,
                max_tokens: options.max_tokens,
            },
            model,
            tokenizer,
            specials,
            options,
        })
    }

    fn specials(tok: &Tokenizer, path: &Path, dims: &Dims) -> Result<Specials, WhisperError> {
        let id = |name: &str| -> Result<u32, WhisperError> {
            match tok.token_to_id(name) {
                Some(id) if (id as usize) < dims.vocab => Ok(id),
                Some(id) => Err(WhisperError::config(
                    path,
                    format!(
                        "token {name} has id {id}, outside the model's {} vocabulary",
                        dims.vocab
                    ),
                )),
                None => Err(WhisperError::config(
                    path,
                    format!("token {name} is missing"),
                )),
            }
        };
        // Multilingual checkpoints (vocab >= 51865) expect language and task tokens.
        let task = if dims.vocab >= 51_865 {
            vec![id("<|en|>")?, id("<|transcribe|>")?]
        } else {
            Vec::new()
        };
        Ok(Specials {
            sot: id("<|startoftranscript|>")?,
            eot: id("<|endoftext|>")?,
            no_timestamps: id("<|notimestamps|>")?,
            no_speech: id("<|nospeech|>").or_else(|_| id("<|nocaptions|>")).ok(),
            task,
        })
    }

    /// The model's dimensions as read from the weights.
    pub fn dims(&self) -> Dims {
        self.model.dims
    }

    pub fn options(&self) -> &WhisperOptions {
        &self.options
    }

    /// Transcribes 16 kHz mono samples in [-1, 1]. `cancel` is polled between windows and
    /// decoder steps; when it returns true the call ends with [`WhisperError::Cancelled`].
    pub fn transcribe(
        &self,
        pcm_16k_mono: &[f32],
        cancel: &dyn Fn() -> bool,
    ) -> Result<Transcript, WhisperError> {
        audio::validate(pcm_16k_mono).map_err(WhisperError::Audio)?;
        let ms = |samples: usize| (samples as u64 * 1000) / SAMPLE_RATE as u64;
        let mut segments = Vec::new();
        let mut no_speech_prob: f32 = 1.0;
        let windows = audio::windows(pcm_16k_mono, WINDOW_SAMPLES, CUT_SEARCH_SAMPLES);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(match self.options.threads {
                0 => candle_core::utils::get_num_threads(),
                n => n,
            })
            .build()
            .map_err(|e| {
                WhisperError::Inference(candle_core::Error::Msg(format!(
                    "cannot start compute threads: {e}"
                )))
            })?;

        for range in &windows {
            if cancel() {
                return Err(WhisperError::Cancelled);
            }
            let w = self.transcribe_window(&pcm_16k_mono[range.clone()], &pool, cancel)?;
            no_speech_prob = no_speech_prob.min(w.no_speech_prob);
            if !w.text.is_empty() {
                segments.push(Segment {
                    start_ms: ms(range.start),
                    end_ms: ms(range.end),
                    text: w.text,
                });
            }
        }
        let text = segments
            .iter()
            .map(|s| s.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Transcript {
            text,
            segments,
            no_speech_prob,
            audio_ms: ms(pcm_16k_mono.len()),
        })
    }

    fn transcribe_window(
        &self,
        pcm: &[f32],
        pool: &rayon::ThreadPool,
        cancel: &dyn Fn() -> bool,
    ) -> Result<WindowText, WhisperError> {
        let silent = WindowText {
            text: String::new(),
            no_speech_prob: 1.0,
        };
        if audio::peak_level_dbfs(pcm) < self.options.silence_dbfs {
            return Ok(silent);
        }
        let margin = self.options.encoder_margin_ms as usize * SAMPLE_RATE / 1000;
        let max_samples = (2 * self.model.dims.audio_ctx * mel::HOP).min(WINDOW_SAMPLES);
        let total = (pcm.len() + margin).min(max_samples);
        let mut padded = pcm[..pcm.len().min(total)].to_vec();
        padded.resize(total, 0.0);
        let (features, frames) = self.mel.compute(&padded);
        if frames == 0 {
            return Ok(silent);
        }
        let mel = Tensor::from_vec(features, (1, self.mel.n_mels(), frames), &Device::Cpu)?;
        let encoded = pool.install(|| self.model.encode(&mel))?;
        if cancel() {
            return Err(WhisperError::Cancelled);
        }
        let mut state = pool.install(|| self.model.start(&encoded))?;
        let step = |tokens: &[u32], state: &mut model::DecoderState| {
            pool.install(|| self.model.decode(tokens, state))
        };
        let text_ctx = self.model.dims.text_ctx;
        let out = decode::greedy(
            &step,
            &mut state,
            text_ctx,
            &self.specials,
            &self.params,
            cancel,
        )?;
        let o = &self.options;
        let is_silence = (out.no_speech_prob > o.no_speech_threshold
            && out.avg_logprob < o.logprob_threshold)
            || out.no_speech_prob > o.no_speech_hard_threshold;
        let text = if is_silence {
            String::new()
        } else {
            self.tokenizer
                .decode(&out.tokens, true)
                .map_err(|e| WhisperError::Tokenizer(e.to_string()))?
                .trim()
                .to_string()
        };
        Ok(WindowText {
            text,
            no_speech_prob: out.no_speech_prob,
        })
    }
}

/// Builds the network from a parsed `model.bin` alone, with every check [`Whisper::load`] makes
/// on the weights (no tokenizer or config needed), then runs it once: `frames` mel frames of
/// silence through the encoder and one token through the decoder. Returns the dimensions.
/// For fuzzing the reader: a file that loads must also run without panicking.
#[doc(hidden)]
pub fn check_weights(ct2: &ct2::Ct2Model, frames: usize) -> Result<Dims, WhisperError> {
    let model = WhisperModel::from_ct2(ct2)?;
    let dims = model.dims;
    let mel = Tensor::zeros(
        (1, dims.n_mels, frames),
        candle_core::DType::F32,
        &Device::Cpu,
    )?;
    let encoded = model.encode(&mel)?;
    let mut state = model.start(&encoded)?;
    model.decode(&[0], &mut state)?;
    Ok(dims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn whisper_is_send_and_sync() {
        assert_send_sync::<Whisper>();
        assert_send_sync::<std::sync::Arc<Whisper>>();
    }

    #[test]
    fn missing_directory_names_the_file() {
        let err = Whisper::load(Path::new("/nonexistent/model")).err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("/nonexistent/model/config.json"), "{msg}");
    }
}
