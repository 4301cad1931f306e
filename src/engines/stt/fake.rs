//! Deterministic test engine: describes the audio instead of recognising it. For protocol tests
//! only; never a default.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use super::{SpeechToText, Transcription};
use crate::audio::{vad::level_db, ENGINE_RATE};
use crate::engines::EngineError;

pub struct FakeStt;

impl SpeechToText for FakeStt {
    fn name(&self) -> String {
        "fake (test engine)".into()
    }

    fn usage_label(&self) -> String {
        "fake".into()
    }

    fn transcribe(
        &self,
        audio: Arc<[f32]>,
        _cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<Transcription, EngineError>> {
        async move {
            // Silence yields no words, like a real recogniser should.
            if level_db(&audio) < -50.0 {
                return Ok(Transcription::default());
            }
            let tenths = audio.len() as u64 * 10 / u64::from(ENGINE_RATE);
            Ok(Transcription {
                text: format!("audio of {}.{} seconds", tenths / 10, tenths % 10),
            })
        }
        .boxed()
    }
}
