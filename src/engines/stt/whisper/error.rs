//! The engine's error type: every message names the file (or input) involved and the reason.

use std::path::PathBuf;

use super::ct2::Ct2Error;

#[derive(Debug, thiserror::Error)]
pub enum WhisperError {
    /// `model.bin` is missing, unreadable, truncated or malformed.
    #[error(transparent)]
    Model(#[from] Ct2Error),
    /// The weights parse but do not describe a Whisper model this engine can run.
    #[error("{path}: unsupported Whisper model: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    /// `config.json` or `tokenizer.json` is missing or invalid.
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
    /// The audio cannot be transcribed (e.g. non-finite samples).
    #[error("invalid audio: {0}")]
    Audio(String),
    /// The tokenizer could not turn output ids into text.
    #[error("tokenizer failed: {0}")]
    Tokenizer(String),
    /// A tensor operation failed while running the model.
    #[error("whisper inference failed: {0}")]
    Inference(#[from] candle_core::Error),
    /// The caller's cancel check returned true.
    #[error("transcription cancelled")]
    Cancelled,
}

impl WhisperError {
    pub(crate) fn config(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Self::Config {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}
