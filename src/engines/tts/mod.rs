//! Text-to-speech: turns a sentence into audio at the engine's own rate.

pub mod fake;
pub mod split;

use futures::stream::BoxStream;
use tokio_util::sync::CancellationToken;

use super::EngineError;

pub trait TextToSpeech: Send + Sync {
    fn name(&self) -> String;
    /// Rate of the samples this engine produces.
    fn sample_rate(&self) -> u32;
    /// Synthesizes one sentence (or clause) as a stream of sample chunks. `voice` picks a voice
    /// the engine knows (`None` for its default). Must stop promptly when `cancel` fires.
    fn synthesize(
        &self,
        text: String,
        voice: Option<String>,
        cancel: CancellationToken,
    ) -> BoxStream<'static, Result<Vec<f32>, EngineError>>;
}
