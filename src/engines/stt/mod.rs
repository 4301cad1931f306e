//! Speech-to-text: turns one utterance (16 kHz mono) into text.

pub mod fake;
pub mod local;
pub mod whisper;

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::EngineError;

/// What a transcription returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transcription {
    /// The words heard; empty when the audio held no speech.
    pub text: String,
}

pub trait SpeechToText: Send + Sync {
    /// Name shown at start-up and in `connected`.
    fn name(&self) -> String;
    /// Transcribes 16 kHz mono samples. Must stop early when `cancel` fires.
    fn transcribe(
        &self,
        audio: Arc<[f32]>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<Transcription, EngineError>>;
}
