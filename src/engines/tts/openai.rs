//! Text-to-speech over the OpenAI speech API (`POST {base}/audio/speech` with
//! `response_format: "pcm"`): raw 16-bit mono PCM (24 kHz for OpenAI) streamed as it is made,
//! so the first audio goes out before the sentence is finished. Retried like every hosted
//! request (see [`crate::engines::http`]); cancelling drops the response and its connection.

use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::TextToSpeech;
use crate::engines::http::HttpApi;
use crate::engines::providers::ProviderSpec;
use crate::engines::{EngineError, EngineInitError};

pub struct OpenAiTts {
    api: HttpApi,
    url: String,
    model: String,
    spec: ProviderSpec,
    rate: u32,
    provider: String,
}

impl OpenAiTts {
    pub fn new(name: &str, spec: &ProviderSpec) -> Result<Self, EngineInitError> {
        let err = |reason: String| EngineInitError {
            kind: "text-to-speech",
            name: name.to_string(),
            reason,
        };
        let model = spec
            .tts_model
            .clone()
            .ok_or_else(|| err("no tts_model".into()))?;
        if spec.tts_voice.is_none() {
            return Err(err("no tts_voice (the voice used by default)".into()));
        }
        let rate = spec.tts_sample_rate.unwrap_or(24_000);
        crate::audio::check_rate(rate).map_err(|e| err(e.to_string()))?;
        let api = HttpApi::new(
            format!("{name} text-to-speech"),
            spec.api_key.clone(),
            spec.policy(),
        )
        .map_err(|e| err(e.to_string()))?;
        Ok(Self {
            api,
            url: format!("{}/audio/speech", spec.base()),
            model,
            spec: spec.clone(),
            rate,
            provider: name.to_string(),
        })
    }
}

impl TextToSpeech for OpenAiTts {
    fn name(&self) -> String {
        format!("{} ({}, {} Hz)", self.provider, self.model, self.rate)
    }

    fn usage_label(&self) -> String {
        self.provider.clone()
    }

    fn sample_rate(&self) -> u32 {
        self.rate
    }

    fn has_voice(&self, name: &str) -> bool {
        self.spec.voices.contains_key(name)
    }

    fn synthesize(
        &self,
        text: String,
        voice: Option<String>,
        cancel: CancellationToken,
    ) -> BoxStream<'static, Result<Vec<f32>, EngineError>> {
        if text.trim().is_empty() {
            return futures::stream::empty().boxed();
        }
        let body = json!({
            "model": self.model,
            "input": text,
            "voice": self.spec.voice_id(voice.as_deref()),
            "response_format": "pcm",
        });
        let api = self.api.clone();
        let url = self.url.clone();
        self.api.pcm_stream(
            move || api.bearer(api.client().post(&url).json(&body)),
            cancel,
        )
    }
}
