//! Silero VAD (v5/v6 ONNX model) on ONNX Runtime: the probability that each 32 ms of 16 kHz
//! audio is speech.
//!
//! The model's signature, checked at load:
//!
//! | name | type | shape | meaning |
//! |---|---|---|---|
//! | in `input` | f32 | [batch, 64 + 512] | the last 64 samples of the previous frame, then the frame |
//! | in `state` | f32 | [2, batch, 128] | recurrent state, zeros at the start |
//! | in `sr` | i64 | scalar | sample rate, 16000 |
//! | out `output` | f32 | [batch, 1] | speech probability |
//! | out `stateN` | f32 | [2, batch, 128] | the next state |
//!
//! [`SileroVad`] is the shared model (a few sessions, created once); [`SileroStream`] is one
//! call's state and a [`super::SpeechScorer`] for the turn detector, which turns the
//! probabilities into speech start/stop events.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ort::session::Session;
use ort::value::TensorRef;

use crate::engines::onnx::{self, OnnxError, SessionPool};

/// Samples of the previous frame prepended to each frame.
const CONTEXT: usize = 64;
/// Samples per model run: context, then the frame.
const WINDOW: usize = CONTEXT + SileroStream::FRAME;
/// Recurrent state: [2, 1, 128].
const STATE: usize = 2 * 128;
/// The only rate the stream accepts.
const SAMPLE_RATE: i64 = 16_000;

/// Everything that can go wrong loading or running the model. Messages name the file.
#[derive(Debug, thiserror::Error)]
pub enum SileroError {
    /// The ONNX Runtime library could not be loaded.
    #[error(transparent)]
    Runtime(#[from] OnnxError),
    /// The model file could not be read.
    #[error("cannot read the Silero VAD model {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// ONNX Runtime refused the file, or it is not a Silero VAD model.
    #[error("cannot load the Silero VAD model {path}: {reason}")]
    Model { path: PathBuf, reason: String },
    /// An argument was out of range (zero sessions).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A run failed; the stream is left as it was before the `push`.
    #[error("Silero VAD inference failed: {0}")]
    Inference(String),
}

/// The shared model: a few ONNX Runtime sessions, created once. `Send + Sync`: share it in an
/// `Arc` and make one [`SileroStream`] per call.
pub struct SileroVad {
    pool: SessionPool,
}

impl SileroVad {
    /// Loads ONNX Runtime from `ort_lib` (once per process; later calls keep the first library)
    /// and `sessions` sessions of `model` (`silero_vad.onnx`), each on one thread.
    pub fn load(ort_lib: &Path, model: &Path, sessions: usize) -> Result<Self, SileroError> {
        if sessions == 0 {
            return Err(SileroError::InvalidArgument(
                "sessions must be at least 1".into(),
            ));
        }
        onnx::init_runtime(ort_lib)?;
        let env = onnx::runtime_environment().ok_or_else(|| OnnxError::Library {
            path: ort_lib.to_path_buf(),
            reason: "the runtime did not initialise".into(),
        })?;
        let bytes = std::fs::read(model).map_err(|source| SileroError::Io {
            path: model.to_path_buf(),
            source,
        })?;
        let fail = |reason: String| SileroError::Model {
            path: model.to_path_buf(),
            reason,
        };
        let mut idle = Vec::with_capacity(sessions);
        for _ in 0..sessions {
            let mut session =
                onnx::single_thread_session(env, &bytes).map_err(|e| fail(e.to_string()))?;
            check_signature(&session).map_err(fail)?;
            // One run on silence: checks the output shapes and warms the session up.
            let mut window = [0.0; WINDOW];
            let mut state = [0.0; STATE];
            let frame = [0.0; SileroStream::FRAME];
            run_frame(&mut session, &frame, &mut window, &mut state)
                .map_err(|e| fail(e.to_string()))?;
            idle.push(session);
        }
        Ok(SileroVad {
            pool: SessionPool::new(idle),
        })
    }

    /// A fresh stream (zero state, zero context) for one call.
    pub fn stream(self: &Arc<Self>) -> SileroStream {
        SileroStream {
            vad: Arc::clone(self),
            window: [0.0; WINDOW],
            state: [0.0; STATE],
            pending: Vec::with_capacity(SileroStream::FRAME),
        }
    }

    /// Scores whole frames with one borrowed session, advancing `window` and `state`.
    fn score(
        &self,
        frames: &[f32],
        window: &mut [f32; WINDOW],
        state: &mut [f32; STATE],
    ) -> Result<Vec<f32>, SileroError> {
        let mut lease = self.pool.borrow();
        let session = lease
            .session()
            .ok_or_else(|| SileroError::Inference("session pool is empty".into()))?;
        frames
            .chunks_exact(SileroStream::FRAME)
            .map(|frame| run_frame(session, frame, window, state))
            .collect()
    }
}

/// One model run: `frame` after the context in `window`; updates the context and `state`.
fn run_frame(
    session: &mut Session,
    frame: &[f32],
    window: &mut [f32; WINDOW],
    state: &mut [f32; STATE],
) -> Result<f32, SileroError> {
    let err = |e: ort::Error| SileroError::Inference(e.to_string());
    window[CONTEXT..].copy_from_slice(frame);
    let input = TensorRef::from_array_view(([1usize, WINDOW], &window[..])).map_err(err)?;
    let state_in = TensorRef::from_array_view(([2usize, 1, 128], &state[..])).map_err(err)?;
    let sr = TensorRef::from_array_view(((), &[SAMPLE_RATE][..])).map_err(err)?;
    let outputs = session
        .run(ort::inputs![
            "input" => input,
            "state" => state_in,
            "sr" => sr,
        ])
        .map_err(err)?;
    let output = |name: &str| {
        outputs
            .get(name)
            .ok_or_else(|| SileroError::Inference(format!("no output named {name:?}")))?
            .try_extract_tensor::<f32>()
            .map(|(_, data)| data)
            .map_err(err)
    };
    let prob = match output("output")? {
        [p] => *p,
        other => {
            return Err(SileroError::Inference(format!(
                "`output` has {} values, expected 1",
                other.len()
            )))
        }
    };
    let next = output("stateN")?;
    if next.len() != STATE {
        return Err(SileroError::Inference(format!(
            "`stateN` has {} values, expected {STATE}",
            next.len()
        )));
    }
    // A state gone non-finite would poison every later frame: start over instead.
    if next.iter().all(|v| v.is_finite()) {
        state.copy_from_slice(next);
    } else {
        *state = [0.0; STATE];
    }
    window.copy_within(SileroStream::FRAME.., 0);
    Ok(if prob.is_finite() {
        prob.clamp(0.0, 1.0)
    } else {
        0.0
    })
}

/// The model must take Silero's three inputs and give its two outputs.
fn check_signature(session: &Session) -> Result<(), String> {
    let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
    let outputs: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
    for name in ["input", "state", "sr"] {
        if !inputs.contains(&name) {
            return Err(format!(
                "not a Silero VAD v5/v6 model: no input named {name:?} (inputs: {inputs:?})"
            ));
        }
    }
    for name in ["output", "stateN"] {
        if !outputs.contains(&name) {
            return Err(format!(
                "not a Silero VAD v5/v6 model: no output named {name:?} (outputs: {outputs:?})"
            ));
        }
    }
    Ok(())
}

/// What the model may see of a sample: finite and within [-1, 1].
fn sanitize(s: f32) -> f32 {
    if s.is_finite() {
        s.clamp(-1.0, 1.0)
    } else {
        0.0
    }
}

/// One call's detector state: the recurrent state, the 64-sample context and the samples of
/// an incomplete frame. Results depend only on the samples fed since creation or `reset`,
/// not on how they were split into pushes.
pub struct SileroStream {
    vad: Arc<SileroVad>,
    /// Context in `[..CONTEXT]` (the end of the previous frame); the frame goes after it.
    window: [f32; WINDOW],
    state: [f32; STATE],
    /// Samples of the next, incomplete frame (fewer than `FRAME` between pushes).
    pending: Vec<f32>,
}

impl SileroStream {
    /// Samples per frame: 32 ms at 16 kHz.
    pub const FRAME: usize = 512;

    /// Feeds any number of 16 kHz samples; returns the speech probability (0 to 1) of each
    /// complete 512-sample frame they completed, in order. Leftover samples are kept for the
    /// next push. Non-finite samples count as 0 and samples are clamped to [-1, 1].
    /// Runs the model on this thread (blocking while all sessions are busy): call it from a
    /// blocking thread, not from async code. On error the stream is unchanged.
    pub fn push(&mut self, samples: &[f32]) -> Result<Vec<f32>, SileroError> {
        let kept = self.pending.len();
        self.pending.extend(samples.iter().copied().map(sanitize));
        let whole = self.pending.len() / Self::FRAME * Self::FRAME;
        if whole == 0 {
            return Ok(Vec::new());
        }
        let (mut window, mut state) = (self.window, self.state);
        match self
            .vad
            .score(&self.pending[..whole], &mut window, &mut state)
        {
            Ok(probs) => {
                (self.window, self.state) = (window, state);
                self.pending.drain(..whole);
                Ok(probs)
            }
            Err(e) => {
                self.pending.truncate(kept);
                Err(e)
            }
        }
    }

    /// Samples waiting for the rest of their frame.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Back to a fresh stream: zero state and context, no pending samples.
    pub fn reset(&mut self) {
        self.window = [0.0; WINDOW];
        self.state = [0.0; STATE];
        self.pending.clear();
    }
}

/// The turn detector's view: 512-sample frames, errors as text.
impl super::SpeechScorer for SileroStream {
    fn frame_len(&self) -> usize {
        Self::FRAME
    }

    fn push(&mut self, samples: &[f32]) -> Result<Vec<f32>, String> {
        SileroStream::push(self, samples).map_err(|e| e.to_string())
    }

    fn reset(&mut self) {
        SileroStream::reset(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_made_finite_and_in_range() {
        assert_eq!(sanitize(f32::NAN), 0.0);
        assert_eq!(sanitize(f32::INFINITY), 0.0);
        assert_eq!(sanitize(f32::NEG_INFINITY), 0.0);
        assert_eq!(sanitize(3.0), 1.0);
        assert_eq!(sanitize(-3.0), -1.0);
        assert_eq!(sanitize(0.25), 0.25);
    }

    #[test]
    fn zero_sessions_is_refused_before_touching_files() {
        let err = SileroVad::load(Path::new("/nonexistent/lib.so"), Path::new("/x.onnx"), 0)
            .err()
            .expect("zero sessions");
        assert!(matches!(err, SileroError::InvalidArgument(_)), "{err}");
    }

    #[test]
    fn the_window_is_context_then_one_frame() {
        assert_eq!(WINDOW, 576);
        assert_eq!(SileroStream::FRAME * 1000 / SAMPLE_RATE as usize, 32);
    }

    /// Calls share the model across threads; a stream moves between tasks.
    #[test]
    fn public_types_are_send_and_sync() {
        fn sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        sync::<SileroVad>();
        sync::<SileroError>();
        send::<SileroStream>();
    }
}
