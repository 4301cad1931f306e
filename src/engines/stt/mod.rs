//! Speech-to-text: turns one utterance (16 kHz mono) into text.

pub mod deepgram;
pub mod fake;
pub mod fallback;
pub mod local;
pub mod openai;
pub mod whisper;

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
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
    /// Who did the work, for usage: `local`, or the provider's name (`openai`, `deepgram`);
    /// a chain names the member it tries first.
    fn usage_label(&self) -> String {
        "local".into()
    }
    /// Transcribes 16 kHz mono samples. Must stop early when `cancel` fires.
    fn transcribe(
        &self,
        audio: Arc<[f32]>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<Transcription, EngineError>>;
    /// Engines that transcribe while the caller speaks (a provider's streaming socket) start a
    /// live transcription of one utterance here; the others return `None` and get the whole
    /// utterance at its end. Interim text (the whole utterance so far) goes to `interims`,
    /// dropped when the receiver is full. Dropping the returned value, or `cancel` firing, closes
    /// the provider stream.
    fn listen(
        &self,
        _interims: mpsc::Sender<String>,
        _cancel: CancellationToken,
    ) -> Option<Box<dyn LiveTranscription>> {
        None
    }
}

/// One utterance being transcribed as it is spoken.
pub trait LiveTranscription: Send {
    /// More of the utterance, 16 kHz mono, as it arrives. Must not block.
    fn push(&mut self, audio: &[f32]);
    /// The utterance ended: the final text of all of it. On an error the caller transcribes the
    /// whole utterance again with [`SpeechToText::transcribe`], so nothing is lost.
    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<Transcription, EngineError>>;
}
