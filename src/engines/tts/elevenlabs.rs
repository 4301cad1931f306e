//! ElevenLabs' streaming text-to-speech: one HTTP request per sentence, answered with raw
//! 16-bit mono PCM at the rate asked for, turned into samples as it arrives. Retries, timeouts,
//! key scrubbing and PCM decoding are the shared HTTP layer's.

use futures::stream::BoxStream;
use futures::StreamExt;
use reqwest::header::HeaderValue;
use reqwest::Url;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::TextToSpeech;
use crate::engines::http::HttpApi;
use crate::engines::providers::{ProviderKind, ProviderSpec};
use crate::engines::{EngineError, EngineInitError};

/// The PCM rates the API offers.
pub const RATES: [u32; 4] = [16_000, 22_050, 24_000, 44_100];
const DEFAULT_RATE: u32 = 24_000;

pub struct ElevenLabsTts {
    api: HttpApi,
    /// The `xi-api-key` header, marked sensitive so it is never printed.
    key: Option<HeaderValue>,
    /// e.g. `elevenlabs (eleven_flash_v2_5, 24000 Hz)`.
    label: String,
    /// The provider's name in `providers.toml`, for usage.
    provider: String,
    /// API root: voices and the rest are path segments added to it.
    base: Url,
    model: String,
    rate: u32,
    spec: ProviderSpec,
}

impl ElevenLabsTts {
    /// The engine for provider `name` of `providers.toml`.
    pub fn new(name: &str, spec: &ProviderSpec) -> Result<Self, EngineInitError> {
        let err = |reason: String| EngineInitError {
            kind: "text-to-speech",
            name: name.to_string(),
            reason,
        };
        if spec.kind != ProviderKind::Elevenlabs {
            return Err(err(format!(
                "it is a {:?} provider, not elevenlabs",
                spec.kind
            )));
        }
        let model = spec
            .tts_model
            .clone()
            .ok_or_else(|| err("it sets no tts_model".into()))?;
        if spec.tts_voice.is_none() {
            return Err(err("it sets no tts_voice (the default voice id)".into()));
        }
        let rate = spec.tts_sample_rate.unwrap_or(DEFAULT_RATE);
        if !RATES.contains(&rate) {
            return Err(err(format!(
                "tts_sample_rate {rate} is not one of 16000, 22050, 24000, 44100"
            )));
        }
        if let (None, Some(var)) = (&spec.api_key, &spec.api_key_env) {
            return Err(err(format!("no API key: {var} is not set")));
        }
        let key = match &spec.api_key {
            Some(k) => {
                let mut value = HeaderValue::from_str(k.expose())
                    .map_err(|_| err("the API key holds characters a header cannot".into()))?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let base = Url::parse(spec.base())
            .ok()
            .filter(|u| !u.cannot_be_a_base())
            .ok_or_else(|| err(format!("bad base_url `{}`", spec.base_url)))?;
        let api = HttpApi::new(
            format!("{name} text-to-speech"),
            spec.api_key.clone(),
            spec.policy(),
        )
        .map_err(|e| err(e.to_string()))?;
        Ok(Self {
            api,
            key,
            label: format!("{name} ({model}, {rate} Hz)"),
            provider: name.to_string(),
            base,
            model,
            rate,
            spec: spec.clone(),
        })
    }
}

impl TextToSpeech for ElevenLabsTts {
    fn name(&self) -> String {
        self.label.clone()
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
        let Some(voice_id) = self.spec.voice_id(voice.as_deref()) else {
            let err = self.api.fail("no voice configured", false);
            return futures::stream::once(async move { Err(err) }).boxed();
        };
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty()
                .extend(["text-to-speech", &voice_id, "stream"]);
        }
        url.set_query(Some(&format!("output_format=pcm_{}", self.rate)));
        let body = json!({ "text": text, "model_id": self.model });
        let (api, key) = (self.api.clone(), self.key.clone());
        let build = move || {
            let request = api.client().post(url.clone()).json(&body);
            match &key {
                Some(k) => request.header("xi-api-key", k.clone()),
                None => request,
            }
        };
        self.api.pcm_stream(build, cancel)
    }
}
