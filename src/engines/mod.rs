//! Speech engines behind three traits: speech-to-text, language model and text-to-speech. Each
//! kind has one file per provider under its folder; [`Engines`] holds the ones in force, with the
//! Silero speech detector and the Smart Turn end-of-turn model when they are chosen. `onnx` is
//! the ONNX Runtime they share.

mod builder;
pub mod chain;
pub mod cpu;
pub mod http;
pub mod llm;
pub mod onnx;
pub mod pool;
pub mod providers;
pub mod stt;
pub mod tts;
pub mod turn;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::audio::vad::silero::SileroVad;
use crate::audio::vad::smart_turn::SmartTurn;
use crate::config::{Config, VadChoice};
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
    /// Where speech detection runs when it is more than a few microseconds of work (Silero,
    /// large chunks): a bounded pool like every other engine's.
    pub detector: Arc<pool::BlockingPool>,
    /// The end-of-turn model for semantic turn detection; `None` unless `VOXWIRE_VAD=semantic`
    /// (the default).
    pub turn_model: Option<Arc<turn::TurnModel>>,
    /// Agents with chains of their own, and the engines they use.
    per_agent: Arc<HashMap<String, Engines>>,
}

/// Concurrent Silero runs: each borrows a session for one `push`.
const VAD_SESSIONS: usize = 2;

/// Speech detection jobs allowed to wait when none is given (fake engines).
pub const DEFAULT_DETECTOR_QUEUE: usize = 256;

fn detector_pool(max_waiting: usize) -> Arc<pool::BlockingPool> {
    Arc::new(pool::BlockingPool::new(
        "speech detection",
        VAD_SESSIONS,
        max_waiting,
    ))
}

impl Engines {
    /// Builds the engines named by the configuration (the server's chains and every agent's),
    /// fetching missing models unless offline. Each engine is built once, whatever the number
    /// of chains it is in.
    pub fn from_config(config: &Config) -> Result<Self, EngineInitError> {
        let mut b = builder::Builder::new(config);
        let mut engines = Self {
            stt: b.stt_chain(&config.stt)?,
            llm: b.llm_chain(&config.llm)?,
            tts: b.tts_chain(&config.tts)?,
            vad: match config.vad {
                VadChoice::Semantic | VadChoice::Silero => {
                    Some(Arc::new(silero_vad(config, b.store())?))
                }
                VadChoice::Energy => None,
            },
            detector: detector_pool(config.detector_queue),
            turn_model: match config.vad {
                VadChoice::Semantic => Some(Arc::new(turn_model(config, b.store())?)),
                VadChoice::Silero | VadChoice::Energy => None,
            },
            per_agent: Arc::default(),
        };
        let mut per_agent = HashMap::new();
        for agent in config.agents.iter() {
            if agent.stt.is_none() && agent.llm.is_none() && agent.tts.is_none() {
                continue;
            }
            let mut e = engines.clone();
            if let Some(c) = &agent.stt {
                e.stt = b.stt_chain(c)?;
            }
            if let Some(c) = &agent.llm {
                e.llm = b.llm_chain(c)?;
            }
            if let Some(c) = &agent.tts {
                e.tts = b.tts_chain(c)?;
            }
            per_agent.insert(agent.name.clone(), e);
        }
        engines.per_agent = Arc::new(per_agent);
        Ok(engines)
    }

    /// Deterministic engines for protocol tests.
    pub fn fake() -> Self {
        Self {
            stt: Arc::new(stt::fake::FakeStt),
            llm: Arc::new(llm::fake::FakeLlm::default()),
            tts: Arc::new(tts::fake::FakeTts::default()),
            vad: None,
            detector: detector_pool(DEFAULT_DETECTOR_QUEUE),
            turn_model: None,
            per_agent: Arc::default(),
        }
    }

    /// The engines a call with `agent` uses: the agent's own chains, else the server's.
    pub fn for_agent(&self, agent: &str) -> Engines {
        self.per_agent
            .get(agent)
            .cloned()
            .unwrap_or_else(|| self.clone())
    }

    /// Every agent that has engines of its own, with them.
    pub fn agent_overrides(&self) -> impl Iterator<Item = (&String, &Engines)> {
        self.per_agent.iter()
    }

    pub fn names(&self) -> crate::protocol::EngineNames {
        crate::protocol::EngineNames {
            stt: self.stt.name(),
            llm: self.llm.name(),
            tts: self.tts.name(),
        }
    }
}

pub(crate) fn model_err(kind: &'static str, name: &str, e: ModelError) -> EngineInitError {
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

fn turn_model(config: &Config, store: &ModelStore) -> Result<turn::TurnModel, EngineInitError> {
    let err = |reason: String| EngineInitError {
        kind: "end-of-turn model",
        name: "smart-turn".into(),
        reason: format!("{reason} (VOXWIRE_VAD=silero runs without it)"),
    };
    store
        .ensure(&[manifest::SMART_TURN], config.offline)
        .map_err(|e| err(e.to_string()))?;
    let lib = ort_lib(config, store).map_err(|e| err(e.to_string()))?;
    let model = store.file(manifest::SMART_TURN, "smart-turn-v3.2-cpu.onnx");
    let model = SmartTurn::load(&lib, &model, turn::SESSIONS).map_err(|e| err(e.to_string()))?;
    Ok(turn::TurnModel::new(model, config.engine_queue))
}

pub(crate) fn piper_settings(
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
