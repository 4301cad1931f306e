//! The end-of-turn model (Smart Turn v3) as an engine: its runs go through a bounded blocking
//! pool, never on the async runtime's threads, one per session at a time; past the queue bound
//! a request is refused at once (the turn then ends on silence alone).

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::pool::BlockingPool;
use super::EngineError;
use crate::audio::vad::smart_turn::SmartTurn;

/// Concurrent model runs (one ONNX Runtime session each, one thread each).
pub const SESSIONS: usize = 2;

/// The model's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// Probability that the turn is complete.
    pub probability: f32,
    /// Time from the request to the answer, waiting for a slot included.
    pub ms: f64,
}

/// Above this probability a turn is complete (Pipecat's rule).
pub const COMPLETE: f32 = 0.5;

impl Verdict {
    pub fn complete(&self) -> bool {
        self.probability > COMPLETE
    }
}

pub struct TurnModel {
    model: Arc<SmartTurn>,
    pool: BlockingPool,
}

impl TurnModel {
    pub fn new(model: SmartTurn, max_waiting: usize) -> Self {
        Self {
            model: Arc::new(model),
            pool: BlockingPool::new("end-of-turn model", SESSIONS, max_waiting),
        }
    }

    /// Whether the caller's turn ending with `audio` (16 kHz) is complete.
    pub async fn judge(
        &self,
        audio: Arc<[f32]>,
        cancel: &CancellationToken,
    ) -> Result<Verdict, EngineError> {
        let start = Instant::now();
        let model = self.model.clone();
        let probability = self
            .pool
            .run(cancel, move |cancelled| {
                if cancelled() {
                    return Err(EngineError::Cancelled);
                }
                model
                    .predict(&audio)
                    .map_err(|e| EngineError::failed("end-of-turn model", e.to_string()))
            })
            .await?;
        Ok(Verdict {
            probability,
            ms: start.elapsed().as_secs_f64() * 1000.0,
        })
    }
}
