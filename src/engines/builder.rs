//! Builds engine chains from configuration: each named engine is made once (a local model is
//! loaded once however many chains use it), and each distinct chain once, so agents that share
//! a chain share its health too.

use std::collections::HashMap;
use std::sync::Arc;

use super::providers::{EngineKind, ProviderKind, ProviderSpec};
use super::{llm, model_err, piper_settings, stt, tts, EngineInitError};
use crate::config::Config;
use crate::models::{manifest, ModelStore};

pub struct Builder<'a> {
    config: &'a Config,
    store: ModelStore,
    stt: HashMap<Vec<String>, Arc<dyn stt::SpeechToText>>,
    llm: HashMap<Vec<String>, Arc<dyn llm::LanguageModel>>,
    tts: HashMap<Vec<String>, Arc<dyn tts::TextToSpeech>>,
}

fn unknown(kind: EngineKind, name: &str) -> EngineInitError {
    EngineInitError {
        kind: kind.describe(),
        name: name.to_string(),
        reason: "no such engine or provider".into(),
    }
}

impl<'a> Builder<'a> {
    pub fn new(config: &'a Config) -> Self {
        Self {
            config,
            store: ModelStore::new(&config.models_dir),
            stt: HashMap::new(),
            llm: HashMap::new(),
            tts: HashMap::new(),
        }
    }

    pub fn store(&self) -> &ModelStore {
        &self.store
    }

    fn provider(&self, kind: EngineKind, name: &str) -> Result<&'a ProviderSpec, EngineInitError> {
        self.config
            .providers
            .get(name)
            .ok_or_else(|| unknown(kind, name))
    }

    pub fn stt_chain(
        &mut self,
        chain: &[String],
    ) -> Result<Arc<dyn stt::SpeechToText>, EngineInitError> {
        if let Some(e) = self.stt.get(chain) {
            return Ok(e.clone());
        }
        let built: Arc<dyn stt::SpeechToText> = match chain {
            [one] => self.stt_one(one)?,
            many => {
                let members = many
                    .iter()
                    .map(|n| self.stt_chain(std::slice::from_ref(n)))
                    .collect::<Result<_, _>>()?;
                Arc::new(stt::fallback::FallbackStt::new(
                    members,
                    self.config.fallback_cooldown,
                ))
            }
        };
        self.stt.insert(chain.to_vec(), built.clone());
        Ok(built)
    }

    pub fn llm_chain(
        &mut self,
        chain: &[String],
    ) -> Result<Arc<dyn llm::LanguageModel>, EngineInitError> {
        if let Some(e) = self.llm.get(chain) {
            return Ok(e.clone());
        }
        let built: Arc<dyn llm::LanguageModel> = match chain {
            [one] => self.llm_one(one)?,
            many => {
                let members = many
                    .iter()
                    .map(|n| self.llm_chain(std::slice::from_ref(n)))
                    .collect::<Result<_, _>>()?;
                Arc::new(llm::fallback::FallbackLlm::new(
                    members,
                    self.config.fallback_cooldown,
                ))
            }
        };
        self.llm.insert(chain.to_vec(), built.clone());
        Ok(built)
    }

    pub fn tts_chain(
        &mut self,
        chain: &[String],
    ) -> Result<Arc<dyn tts::TextToSpeech>, EngineInitError> {
        if let Some(e) = self.tts.get(chain) {
            return Ok(e.clone());
        }
        let built: Arc<dyn tts::TextToSpeech> = match chain {
            [one] => self.tts_one(one)?,
            many => {
                let members = many
                    .iter()
                    .map(|n| self.tts_chain(std::slice::from_ref(n)))
                    .collect::<Result<_, _>>()?;
                Arc::new(tts::fallback::FallbackTts::new(
                    members,
                    self.config.fallback_cooldown,
                ))
            }
        };
        self.tts.insert(chain.to_vec(), built.clone());
        Ok(built)
    }

    fn stt_one(&mut self, name: &str) -> Result<Arc<dyn stt::SpeechToText>, EngineInitError> {
        let config = self.config;
        Ok(match name {
            "local" => {
                let dir = match &config.stt_model {
                    Some(d) => d.clone(),
                    None => {
                        self.store
                            .ensure(&[manifest::WHISPER_TINY_EN], config.offline)
                            .map_err(|e| model_err("speech-to-text", "whisper", e))?;
                        self.store.model_dir(manifest::WHISPER_TINY_EN)
                    }
                };
                Arc::new(stt::local::WhisperStt::load(
                    &dir,
                    config.stt_concurrency,
                    config.engine_queue,
                )?)
            }
            "fake" => Arc::new(stt::fake::FakeStt),
            _ => {
                let spec = self.provider(EngineKind::Stt, name)?;
                match spec.kind {
                    ProviderKind::Openai => Arc::new(stt::openai::OpenAiStt::new(name, spec)?),
                    ProviderKind::Deepgram => {
                        Arc::new(stt::deepgram::DeepgramStt::new(name, spec)?)
                    }
                    ProviderKind::Elevenlabs => return Err(unknown(EngineKind::Stt, name)),
                }
            }
        })
    }

    fn llm_one(&mut self, name: &str) -> Result<Arc<dyn llm::LanguageModel>, EngineInitError> {
        let config = self.config;
        Ok(match name {
            "local" => {
                let model = match &config.llm_model {
                    Some(p) => p.clone(),
                    None => {
                        self.store
                            .ensure(&[manifest::SMOLLM2_135M], config.offline)
                            .map_err(|e| model_err("language model", "smollm2", e))?;
                        self.store.file(manifest::SMOLLM2_135M, "model.gguf")
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
            "fake" => Arc::new(llm::fake::FakeLlm::default()),
            _ => {
                let spec = self.provider(EngineKind::Llm, name)?;
                match spec.kind {
                    ProviderKind::Openai => Arc::new(llm::openai::OpenAiLlm::new(name, spec)?),
                    _ => return Err(unknown(EngineKind::Llm, name)),
                }
            }
        })
    }

    fn tts_one(&mut self, name: &str) -> Result<Arc<dyn tts::TextToSpeech>, EngineInitError> {
        let config = self.config;
        Ok(match name {
            "local" => Arc::new(tts::local::PiperTts::load(&piper_settings(
                config,
                &self.store,
            )?)?),
            "espeak" => Arc::new(tts::espeak::EspeakTts::new(config.engine_queue)?),
            "fake" => Arc::new(tts::fake::FakeTts::default()),
            _ => {
                let spec = self.provider(EngineKind::Tts, name)?;
                match spec.kind {
                    ProviderKind::Openai => Arc::new(tts::openai::OpenAiTts::new(name, spec)?),
                    ProviderKind::Elevenlabs => {
                        Arc::new(tts::elevenlabs::ElevenLabsTts::new(name, spec)?)
                    }
                    ProviderKind::Deepgram => return Err(unknown(EngineKind::Tts, name)),
                }
            }
        })
    }
}
