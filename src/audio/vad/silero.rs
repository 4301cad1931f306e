//! Placeholder until the Silero model lands.
use std::sync::Arc;

pub struct SileroVad;
pub struct SileroStream;

impl SileroVad {
    pub fn stream(self: &Arc<Self>) -> SileroStream {
        SileroStream
    }
}

impl super::SpeechScorer for SileroStream {
    fn frame_len(&self) -> usize {
        512
    }
    fn push(&mut self, _samples: &[f32]) -> Result<Vec<f32>, String> {
        Err("not loaded".into())
    }
    fn reset(&mut self) {}
}
