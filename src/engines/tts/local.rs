//! The default text-to-speech engine: Piper voices run by ONNX Runtime on the blocking pool.
//! Voices are loaded once (sessions reused, never created per request); agents pick one by name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::piper::{init_runtime, PiperError, PiperVoice, VoiceOptions};
use super::TextToSpeech;
use crate::audio::resample::resample;
use crate::engines::pool::BlockingPool;
use crate::engines::{EngineError, EngineInitError};

pub struct PiperTts {
    voices: HashMap<String, Arc<PiperVoice>>,
    default: String,
    rate: u32,
    pool: Arc<BlockingPool>,
}

/// How to load the Piper engine.
pub struct PiperSettings {
    pub ort_lib: PathBuf,
    /// `(name, path to .onnx)`; the config is the same path with `.json` appended. The first is
    /// the default voice.
    pub voices: Vec<(String, PathBuf)>,
    pub options: VoiceOptions,
    pub max_waiting: usize,
}

fn init_err(reason: impl std::fmt::Display) -> EngineInitError {
    EngineInitError {
        kind: "text-to-speech",
        name: "piper".into(),
        reason: reason.to_string(),
    }
}

fn config_path(onnx: &Path) -> PathBuf {
    let mut p = onnx.as_os_str().to_owned();
    p.push(".json");
    PathBuf::from(p)
}

impl PiperTts {
    pub fn load(settings: &PiperSettings) -> Result<Self, EngineInitError> {
        init_runtime(&settings.ort_lib).map_err(init_err)?;
        let mut voices = HashMap::new();
        let mut rate = 0;
        for (name, onnx) in &settings.voices {
            let voice = PiperVoice::load_with(onnx, &config_path(onnx), settings.options)
                .map_err(init_err)?;
            if rate == 0 {
                rate = voice.sample_rate();
            }
            voices.insert(name.clone(), Arc::new(voice));
        }
        let default = settings
            .voices
            .first()
            .map(|(n, _)| n.clone())
            .ok_or_else(|| init_err("no voice configured"))?;
        let pool = BlockingPool::new(
            "text-to-speech",
            settings.options.sessions,
            settings.max_waiting,
        );
        Ok(Self {
            voices,
            default,
            rate,
            pool: Arc::new(pool),
        })
    }

    pub fn voice_names(&self) -> Vec<String> {
        self.voices.keys().cloned().collect()
    }
}

fn engine_err(e: PiperError) -> EngineError {
    EngineError::Failed {
        engine: "piper".into(),
        retryable: e.is_retryable(),
        message: e.to_string(),
    }
}

impl TextToSpeech for PiperTts {
    fn name(&self) -> String {
        format!("piper ({}, {} Hz)", self.default, self.rate)
    }

    fn sample_rate(&self) -> u32 {
        self.rate
    }

    fn has_voice(&self, name: &str) -> bool {
        self.voices.contains_key(name)
    }

    fn synthesize(
        &self,
        text: String,
        voice: Option<String>,
        cancel: CancellationToken,
    ) -> BoxStream<'static, Result<Vec<f32>, EngineError>> {
        let name = voice.unwrap_or_else(|| self.default.clone());
        let Some(voice) = self.voices.get(&name).cloned() else {
            let err = EngineError::failed("piper", format!("unknown voice `{name}`"));
            return futures::stream::once(async move { Err(err) }).boxed();
        };
        let pool = self.pool.clone();
        let rate = self.rate;
        async move {
            pool.run(&cancel, move |cancelled| {
                if cancelled() {
                    return Err(EngineError::Cancelled);
                }
                let audio = voice.synthesize(&text).map_err(engine_err)?;
                if voice.sample_rate() == rate {
                    Ok(audio)
                } else {
                    resample(&audio, voice.sample_rate(), rate)
                        .map_err(|e| EngineError::failed("piper", e.to_string()))
                }
            })
            .await
        }
        .into_stream()
        .boxed()
    }
}
