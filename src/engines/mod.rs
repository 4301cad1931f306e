//! Speech engines behind three traits: speech-to-text, language model and text-to-speech. Each
//! kind has one file per provider under its folder; [`Engines`] holds the ones in force, with the
//! Silero speech detector when it is chosen. `onnx` is the ONNX Runtime they share.

pub mod llm;
pub mod http;
pub mod onnx;
pub mod pool;
pub mod providers;
pub mod stt;
pub mod tts;

use std::sync::Arc;

use std::path::PathBuf;

use crate::audio::vad::silero::SileroVad;
use crate::config::{Config, EngineChoice, VadChoice};
use crate::models::{manifest, ModelError, ModelStore};

/// An engine failure. `retryable` tells a fallback wrapper whether trying again may help.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EngineError {
    #[error("the turn was cancelled")]
    Cancelled,
    #[error("{engine} is busy: {queued} requests already waiting")]
    Busy { engine: String, queued: usize },
    #[error("{engine} failed: {message}")]
    Failed {
        engine: String,
        message: String,
        retryable: bool,
    },
}

impl EngineError {
    pub fn failed(engine: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Failed {
            engine: engine.into(),
            message: message.into(),
            retryable: false,
        }
    }
}

/// Could not start an engine (missing model, bad configuration).
#[derive(Debug, thiserror::Error)]
#[error("cannot start the {kind} engine `{name}`: {reason}")]
pub struct EngineInitError {
    pub kind: &'static str,
    pub name: String,
    pub reason: String,
}

/// The engines in force for the server.
#[derive(Clone)]
pub struct Engines {
    pub stt: Arc<dyn stt::SpeechToText>,
    pub llm: Arc<dyn llm::LanguageModel>,
    pub tts: Arc<dyn tts::TextToSpeech>,
    /// The Silero speech detector shared by every call (one stream each); `None` with
    /// `VOXWIRE_VAD=energy`.
    pub vad: Option<Arc<SileroVad>>,
}

/// Concurrent Silero runs: each borrows a session for one `push`.
const VAD_SESSIONS: usize = 2;

impl Engines {
    /// Builds the engines named by the configuration, fetching missing models unless offline.
    pub fn from_config(config: &Config) -> Result<Self, EngineInitError> {
        let store = ModelStore::new(&config.models_dir);
        let stt: Arc<dyn stt::SpeechToText> = match config.stt {
            EngineChoice::Local => {
                let dir = match &config.stt_model {
                    Some(d) => d.clone(),
                    None => {
                        store
                            .ensure(&[manifest::WHISPER_TINY_EN], config.offline)
                            .map_err(|e| model_err("speech-to-text", "whisper", e))?;
                        store.model_dir(manifest::WHISPER_TINY_EN)
                    }
                };
                Arc::new(stt::local::WhisperStt::load(
                    &dir,
                    config.stt_concurrency,
                    config.engine_queue,
                )?)
            }
            _ => Arc::new(stt::fake::FakeStt),
        };
        let llm: Arc<dyn llm::LanguageModel> = match config.llm {
            EngineChoice::Local => {
                let model = match &config.llm_model {
                    Some(p) => p.clone(),
                    None => {
                        store
                            .ensure(&[manifest::SMOLLM2_135M], config.offline)
                            .map_err(|e| model_err("language model", "smollm2", e))?;
                        store.file(manifest::SMOLLM2_135M, "model.gguf")
                    }
                };
                Arc::new(llm::local::SmolLmEngine::load(
                    &llm::local::SmolLmSettings {
                        model: &model,
                        max_sessions: config.llm_sessions,
                        concurrency: config.llm_concurrency,
                        max_waiting: config.engine_queue,
                    },
                )?)
            }
            _ => Arc::new(llm::fake::FakeLlm::default()),
        };
        let tts: Arc<dyn tts::TextToSpeech> = match config.tts {
            EngineChoice::Local => Arc::new(tts::local::PiperTts::load(&piper_settings(
                config, &store,
            )?)?),
            EngineChoice::Espeak => Arc::new(tts::espeak::EspeakTts::new(config.engine_queue)?),
            EngineChoice::Fake => Arc::new(tts::fake::FakeTts::default()),
        };
        let vad = match config.vad {
            VadChoice::Silero => Some(Arc::new(silero_vad(config, &store)?)),
            VadChoice::Energy => None,
        };
        Ok(Self { stt, llm, tts, vad })
    }

    /// Deterministic engines for protocol tests.
    pub fn fake() -> Self {
        Self {
            stt: Arc::new(stt::fake::FakeStt),
            llm: Arc::new(llm::fake::FakeLlm::default()),
            tts: Arc::new(tts::fake::FakeTts::default()),
            vad: None,
        }
    }

    pub fn names(&self) -> crate::protocol::EngineNames {
        crate::protocol::EngineNames {
            stt: self.stt.name(),
            llm: self.llm.name(),
            tts: self.tts.name(),
        }
    }
}

fn model_err(kind: &'static str, name: &str, e: ModelError) -> EngineInitError {
    EngineInitError {
        kind,
        name: name.to_string(),
        reason: e.to_string(),
    }
}

/// The ONNX Runtime library: configured, or the fetched one.
pub fn ort_lib(config: &Config, store: &ModelStore) -> Result<PathBuf, ModelError> {
    if let Some(p) = &config.ort_lib {
        ModelStore::check_file(p)?;
        return Ok(p.clone());
    }
    store.ensure(&[manifest::ONNXRUNTIME], config.offline)?;
    Ok(store.file(manifest::ONNXRUNTIME, "libonnxruntime.so"))
}

fn silero_vad(config: &Config, store: &ModelStore) -> Result<SileroVad, EngineInitError> {
    let err = |reason: String| EngineInitError {
        kind: "speech detector",
        name: "silero".into(),
        reason: format!("{reason} (VOXWIRE_VAD=energy runs without it)"),
    };
    store
        .ensure(&[manifest::SILERO_VAD], config.offline)
        .map_err(|e| err(e.to_string()))?;
    let lib = ort_lib(config, store).map_err(|e| err(e.to_string()))?;
    let model = store.file(manifest::SILERO_VAD, "silero_vad.onnx");
    SileroVad::load(&lib, &model, VAD_SESSIONS).map_err(|e| err(e.to_string()))
}

fn piper_settings(
    config: &Config,
    store: &ModelStore,
) -> Result<tts::local::PiperSettings, EngineInitError> {
    let err = |e| model_err("text-to-speech", "piper", e);
    let voices = if config.tts_voices.is_empty() {
        store
            .ensure(&[manifest::PIPER_JOE], config.offline)
            .map_err(err)?;
        vec![(
            "joe".to_string(),
            store.file(manifest::PIPER_JOE, "voice.onnx"),
        )]
    } else {
        for (_, p) in &config.tts_voices {
            ModelStore::check_file(p).map_err(err)?;
        }
        config.tts_voices.clone()
    };
    Ok(tts::local::PiperSettings {
        ort_lib: ort_lib(config, store).map_err(err)?,
        voices,
        options: tts::piper::VoiceOptions {
            sessions: config.tts_sessions,
            intra_threads: config.tts_threads,
            spin: false,
        },
        max_waiting: config.engine_queue,
    })
}
