//! Speech engines behind three traits: speech-to-text, language model and text-to-speech. Each
//! kind has one file per provider under its folder; [`Engines`] holds the ones in force.

pub mod llm;
pub mod pool;
pub mod stt;
pub mod tts;

use std::sync::Arc;

use crate::config::{Config, EngineChoice};

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
}

impl Engines {
    /// Builds the engines named by the configuration.
    pub fn from_config(config: &Config) -> Result<Self, EngineInitError> {
        let stt: Arc<dyn stt::SpeechToText> = match config.stt {
            EngineChoice::Fake => Arc::new(stt::fake::FakeStt),
        };
        let llm: Arc<dyn llm::LanguageModel> = match config.llm {
            EngineChoice::Fake => Arc::new(llm::fake::FakeLlm::default()),
        };
        let tts: Arc<dyn tts::TextToSpeech> = match config.tts {
            EngineChoice::Fake => Arc::new(tts::fake::FakeTts::default()),
        };
        Ok(Self { stt, llm, tts })
    }

    /// Deterministic engines for protocol tests.
    pub fn fake() -> Self {
        Self {
            stt: Arc::new(stt::fake::FakeStt),
            llm: Arc::new(llm::fake::FakeLlm::default()),
            tts: Arc::new(tts::fake::FakeTts::default()),
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
