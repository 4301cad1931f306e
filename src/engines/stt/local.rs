//! The default speech-to-text engine: Whisper (CTranslate2 weights) on candle, run on the
//! blocking pool so the async runtime never waits on it.

use std::path::Path;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use super::whisper::{Whisper, WhisperError, WhisperOptions};
use super::{SpeechToText, Transcription};
use crate::engines::pool::BlockingPool;
use crate::engines::{EngineError, EngineInitError};

pub struct WhisperStt {
    model: Arc<Whisper>,
    pool: Arc<BlockingPool>,
    label: String,
}

impl WhisperStt {
    pub fn load(
        dir: &Path,
        concurrency: usize,
        max_waiting: usize,
    ) -> Result<Self, EngineInitError> {
        let model = Whisper::load_with_options(dir, WhisperOptions::default()).map_err(|e| {
            EngineInitError {
                kind: "speech-to-text",
                name: "whisper".into(),
                reason: e.to_string(),
            }
        })?;
        let label = format!(
            "whisper ({})",
            dir.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        );
        Ok(Self {
            model: Arc::new(model),
            pool: Arc::new(BlockingPool::new(
                "speech-to-text",
                concurrency,
                max_waiting,
            )),
            label,
        })
    }
}

impl SpeechToText for WhisperStt {
    fn name(&self) -> String {
        self.label.clone()
    }

    fn transcribe(
        &self,
        audio: Arc<[f32]>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<Transcription, EngineError>> {
        let model = self.model.clone();
        let pool = self.pool.clone();
        async move {
            pool.run(&cancel, move |cancelled| {
                match model.transcribe(&audio, cancelled) {
                    Ok(t) => Ok(Transcription {
                        text: t.text.trim().to_string(),
                    }),
                    Err(WhisperError::Cancelled) => Err(EngineError::Cancelled),
                    Err(e) => Err(EngineError::failed("whisper", e.to_string())),
                }
            })
            .await
        }
        .boxed()
    }
}
