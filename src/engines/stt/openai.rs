//! Speech-to-text over the OpenAI transcription API (`POST {base}/audio/transcriptions`,
//! multipart with the utterance as a 16 kHz WAV): OpenAI, Groq, and local servers that copy the
//! API. The whole utterance is sent when it ends; the request is retried on connection errors,
//! timeouts, 429 and 5xx (see [`crate::engines::http`]).

use std::sync::Arc;

use futures::future::BoxFuture;
use reqwest::multipart::{Form, Part};
use tokio_util::sync::CancellationToken;

use super::{SpeechToText, Transcription};
use crate::audio::encode::wav_bytes;
use crate::audio::ENGINE_RATE;
use crate::engines::http::HttpApi;
use crate::engines::providers::ProviderSpec;
use crate::engines::{EngineError, EngineInitError};

pub struct OpenAiStt {
    api: HttpApi,
    url: String,
    model: String,
    language: Option<String>,
    provider: String,
}

impl OpenAiStt {
    pub fn new(name: &str, spec: &ProviderSpec) -> Result<Self, EngineInitError> {
        let err = |reason: String| EngineInitError {
            kind: "speech-to-text",
            name: name.to_string(),
            reason,
        };
        let model = spec
            .stt_model
            .clone()
            .ok_or_else(|| err("no stt_model".into()))?;
        let api = HttpApi::new(
            format!("{name} speech-to-text"),
            spec.api_key.clone(),
            spec.policy(),
        )
        .map_err(|e| err(e.to_string()))?;
        Ok(Self {
            api,
            url: format!("{}/audio/transcriptions", spec.base()),
            model,
            language: spec.language.clone(),
            provider: name.to_string(),
        })
    }
}

impl SpeechToText for OpenAiStt {
    fn name(&self) -> String {
        format!("{} ({})", self.provider, self.model)
    }

    fn usage_label(&self) -> String {
        self.provider.clone()
    }

    fn transcribe(
        &self,
        audio: Arc<[f32]>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<Transcription, EngineError>> {
        let api = self.api.clone();
        let url = self.url.clone();
        let model = self.model.clone();
        let language = self.language.clone();
        Box::pin(async move {
            if audio.is_empty() {
                return Ok(Transcription::default());
            }
            let wav: Arc<[u8]> = wav_bytes(&audio, ENGINE_RATE).into();
            let form = || {
                let file = Part::bytes(wav.to_vec())
                    .file_name("utterance.wav")
                    .mime_str("audio/wav")
                    .unwrap_or_else(|_| Part::bytes(wav.to_vec()));
                let mut f = Form::new()
                    .part("file", file)
                    .text("model", model.clone())
                    .text("response_format", "json");
                if let Some(l) = &language {
                    f = f.text("language", l.clone());
                }
                f
            };
            let resp = api
                .send(
                    || api.bearer(api.client().post(&url).multipart(form())),
                    &cancel,
                )
                .await?;
            let body = tokio::select! {
                _ = cancel.cancelled() => return Err(EngineError::Cancelled),
                b = tokio::time::timeout(api.policy.stream_timeout, resp.bytes()) => b,
            };
            let body = match body {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => {
                    return Err(api.fail(
                        format!(
                            "the response broke off: {}",
                            crate::engines::http::describe(&e)
                        ),
                        true,
                    ))
                }
                Err(_) => return Err(api.fail("the response stalled", true)),
            };
            let text = parse_transcription(&body).map_err(|m| api.fail(m, true))?;
            Ok(Transcription { text })
        })
    }
}

/// `{"text": "..."}`.
fn parse_transcription(body: &[u8]) -> Result<String, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        let head: String = String::from_utf8_lossy(body).chars().take(80).collect();
        format!("malformed JSON in the transcription ({e}): {head}")
    })?;
    v.get("text")
        .and_then(serde_json::Value::as_str)
        .map(|t| t.trim().to_string())
        .ok_or_else(|| "the transcription has no `text`".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcriptions_are_read() {
        assert_eq!(
            parse_transcription(br#"{"text":" Hello there. ","usage":{}}"#).unwrap(),
            "Hello there."
        );
        assert!(parse_transcription(b"{\"text\":").is_err());
        assert!(parse_transcription(b"{\"words\":[]}").is_err());
    }
}
