//! Text-to-speech: turns a sentence into audio at the engine's own rate. Replies reach every
//! engine through [`piece::speak_piece`], which prepares the text for speech.

pub mod elevenlabs;
pub mod espeak;
pub mod fake;
pub mod fallback;
pub mod local;
pub mod openai;
pub mod piece;
pub mod piper;
pub mod text;

use futures::stream::BoxStream;
use tokio_util::sync::CancellationToken;

use super::EngineError;

pub trait TextToSpeech: Send + Sync {
    fn name(&self) -> String;
    /// Who did the work, for usage: `local`, or the provider's name (`openai`, `deepgram`);
    /// a chain names the member it tries first.
    fn usage_label(&self) -> String {
        "local".into()
    }
    /// Rate of the samples this engine produces.
    fn sample_rate(&self) -> u32;
    /// Whether `name` is a voice this engine can speak with (agents are checked at start-up).
    fn has_voice(&self, _name: &str) -> bool {
        true
    }
    /// Synthesizes one sentence (or clause) as a stream of sample chunks. `voice` picks a voice
    /// the engine knows (`None` for its default). Must stop promptly when `cancel` fires.
    fn synthesize(
        &self,
        text: String,
        voice: Option<String>,
        cancel: CancellationToken,
    ) -> BoxStream<'static, Result<Vec<f32>, EngineError>>;
}
