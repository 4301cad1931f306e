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

    pub fn stt_chain(
        &mut self,
        chain: &[String],
    ) -> Result<Arc<dyn stt::SpeechToText>, EngineInitError> {
        let (config, store) = (self.config, &self.store);
        build(
            &mut self.stt,
            chain,
            |name| stt_one(config, store, name),
            |members| {
                Arc::new(stt::fallback::FallbackStt::new(
                    members,
                    config.fallback_cooldown,
                ))
            },
        )
    }

    pub fn llm_chain(
        &mut self,
        chain: &[String],
    ) -> Result<Arc<dyn llm::LanguageModel>, EngineInitError> {
        let (config, store) = (self.config, &self.store);
        build(
            &mut self.llm,
            chain,
            |name| llm_one(config, store, name),
            |members| {
                Arc::new(llm::fallback::FallbackLlm::new(
                    members,
                    config.fallback_cooldown,
                ))
            },
        )
    }

    pub fn tts_chain(
        &mut self,
        chain: &[String],
    ) -> Result<Arc<dyn tts::TextToSpeech>, EngineInitError> {
        let (config, store) = (self.config, &self.store);
        build(
            &mut self.tts,
            chain,
            |name| tts_one(config, store, name),
            |members| {
                Arc::new(tts::fallback::FallbackTts::new(
                    members,
                    config.fallback_cooldown,
                ))
            },
        )
    }
}

/// The engine for `chain` from `cache`, else made: each member once (by `one`), then the
/// members wrapped in a fallback chain (by `wrap`) when there are several.
fn build<T: ?Sized>(
    cache: &mut HashMap<Vec<String>, Arc<T>>,
    chain: &[String],
    mut one: impl FnMut(&str) -> Result<Arc<T>, EngineInitError>,
    wrap: impl FnOnce(Vec<Arc<T>>) -> Arc<T>,
) -> Result<Arc<T>, EngineInitError> {
    if let Some(e) = cache.get(chain) {
        return Ok(e.clone());
    }
    let mut members = Vec::with_capacity(chain.len());
    for name in chain {
        let key = vec![name.clone()];
        let member = match cache.get(&key) {
            Some(e) => e.clone(),
            None => {
                let e = one(name)?;
                cache.insert(key, e.clone());
                e
            }
        };
        members.push(member);
    }
    let built = match <[Arc<T>; 1]>::try_from(members) {
        Ok([single]) => single,
        Err(members) => wrap(members),
    };
    cache.insert(chain.to_vec(), built.clone());
    Ok(built)
}

fn provider<'a>(
    config: &'a Config,
    kind: EngineKind,
    name: &str,
) -> Result<&'a ProviderSpec, EngineInitError> {
    config
        .providers
        .get(name)
        .ok_or_else(|| unknown(kind, name))
}

fn stt_one(
    config: &Config,
    store: &ModelStore,
    name: &str,
) -> Result<Arc<dyn stt::SpeechToText>, EngineInitError> {
    Ok(match name {
        "local" => {
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
        "fake" => Arc::new(stt::fake::FakeStt),
        _ => {
            let spec = provider(config, EngineKind::Stt, name)?;
            match spec.kind {
                ProviderKind::Openai => Arc::new(stt::openai::OpenAiStt::new(name, spec)?),
                ProviderKind::Deepgram => Arc::new(stt::deepgram::DeepgramStt::new(name, spec)?),
                ProviderKind::Elevenlabs => return Err(unknown(EngineKind::Stt, name)),
            }
        }
    })
}

fn llm_one(
    config: &Config,
    store: &ModelStore,
    name: &str,
) -> Result<Arc<dyn llm::LanguageModel>, EngineInitError> {
    Ok(match name {
        "local" => {
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
                    weights: config.llm_weights,
                    threads: config.llm_threads,
                },
            )?)
        }
        "fake" => Arc::new(llm::fake::FakeLlm::default()),
        _ => {
            let spec = provider(config, EngineKind::Llm, name)?;
            match spec.kind {
                ProviderKind::Openai => Arc::new(llm::openai::OpenAiLlm::new(name, spec)?),
                _ => return Err(unknown(EngineKind::Llm, name)),
            }
        }
    })
}

fn tts_one(
    config: &Config,
    store: &ModelStore,
    name: &str,
) -> Result<Arc<dyn tts::TextToSpeech>, EngineInitError> {
    Ok(match name {
        "local" => Arc::new(tts::local::PiperTts::load(&piper_settings(config, store)?)?),
        "espeak" => Arc::new(tts::espeak::EspeakTts::new(config.engine_queue)?),
        "fake" => Arc::new(tts::fake::FakeTts::default()),
        _ => {
            let spec = provider(config, EngineKind::Tts, name)?;
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
