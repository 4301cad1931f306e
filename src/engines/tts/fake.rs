//! Deterministic test engine: a short tone per word. For protocol tests only; never a default.

use futures::stream::BoxStream;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::TextToSpeech;
use crate::engines::EngineError;

pub struct FakeTts {
    pub rate: u32,
    /// Milliseconds of tone per word.
    pub ms_per_word: u32,
}

impl Default for FakeTts {
    fn default() -> Self {
        Self {
            rate: 16_000,
            ms_per_word: 60,
        }
    }
}

impl TextToSpeech for FakeTts {
    fn name(&self) -> String {
        "fake (test engine)".into()
    }

    fn usage_label(&self) -> String {
        "fake".into()
    }

    fn sample_rate(&self) -> u32 {
        self.rate
    }

    fn synthesize(
        &self,
        text: String,
        _voice: Option<String>,
        cancel: CancellationToken,
    ) -> BoxStream<'static, Result<Vec<f32>, EngineError>> {
        let words = text.split_whitespace().count();
        let per_word = (self.rate * self.ms_per_word / 1000) as usize;
        let rate = self.rate as f32;
        let chunks: Vec<Result<Vec<f32>, EngineError>> = (0..words)
            .map(|w| {
                if cancel.is_cancelled() {
                    return Err(EngineError::Cancelled);
                }
                let freq = 300.0 + 20.0 * (w % 10) as f32;
                Ok((0..per_word)
                    .map(|i| (i as f32 * freq * std::f32::consts::TAU / rate).sin() * 0.3)
                    .collect())
            })
            .collect();
        futures::stream::iter(chunks).boxed()
    }
}
