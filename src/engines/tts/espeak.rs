//! espeak-ng's own formant voice: instant and robotic. Only in force when chosen explicitly
//! (`VOXWIRE_TTS=espeak`), never as a silent fallback.

use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::piper::EspeakVoice;
use super::TextToSpeech;
use crate::engines::pool::BlockingPool;
use crate::engines::{EngineError, EngineInitError};

pub struct EspeakTts {
    voice: Arc<EspeakVoice>,
    pool: Arc<BlockingPool>,
}

impl EspeakTts {
    pub fn new(max_waiting: usize) -> Result<Self, EngineInitError> {
        let voice = EspeakVoice::new("en-us", 165).map_err(|e| EngineInitError {
            kind: "text-to-speech",
            name: "espeak".into(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            voice: Arc::new(voice),
            pool: Arc::new(BlockingPool::new("espeak", 1, max_waiting)),
        })
    }
}

impl TextToSpeech for EspeakTts {
    fn name(&self) -> String {
        format!("espeak-ng formant voice ({} Hz)", self.voice.sample_rate())
    }

    fn sample_rate(&self) -> u32 {
        self.voice.sample_rate()
    }

    fn synthesize(
        &self,
        text: String,
        _voice: Option<String>,
        cancel: CancellationToken,
    ) -> BoxStream<'static, Result<Vec<f32>, EngineError>> {
        let voice = self.voice.clone();
        let pool = self.pool.clone();
        async move {
            pool.run(&cancel, move |_| {
                voice
                    .synthesize(&text)
                    .map_err(|e| EngineError::failed("espeak", e.to_string()))
            })
            .await
        }
        .into_stream()
        .boxed()
    }
}
