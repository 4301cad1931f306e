//! `PiperError`: everything that can go wrong loading a voice or speaking.
//! Messages name the file involved and the reason.

use std::path::PathBuf;

/// Errors from the Piper engine and its espeak-ng fallback.
#[derive(Debug, thiserror::Error)]
pub enum PiperError {
    /// The ONNX Runtime shared library could not be loaded.
    #[error("cannot load the ONNX Runtime library {path}: {reason}")]
    Runtime { path: PathBuf, reason: String },
    /// `PiperVoice::load` was called before `init_runtime`.
    #[error("ONNX Runtime is not initialised: call init_runtime(path to libonnxruntime.so) first")]
    RuntimeNotInitialised,
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The voice's `.onnx.json` is not valid or lacks a needed field.
    #[error("invalid voice config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    /// ONNX Runtime refused the model file.
    #[error("cannot load voice model {path}: {reason}")]
    Model { path: PathBuf, reason: String },
    /// espeak-ng could not set up or phonemise.
    #[error("espeak-ng phonemisation failed: {0}")]
    Phonemize(String),
    /// Inference failed at run time (worth retrying once).
    #[error("Piper inference failed: {0}")]
    Inference(String),
    /// An argument was out of range (e.g. zero sessions).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The espeak-ng formant fallback failed.
    #[error("espeak-ng fallback synthesis failed: {0}")]
    Fallback(String),
}

impl From<crate::engines::onnx::OnnxError> for PiperError {
    fn from(e: crate::engines::onnx::OnnxError) -> Self {
        match e {
            crate::engines::onnx::OnnxError::Library { path, reason } => {
                PiperError::Runtime { path, reason }
            }
        }
    }
}

impl PiperError {
    /// Whether retrying the same request could succeed (transient run-time
    /// failure) as opposed to a broken setup.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PiperError::Inference(_))
    }
}
