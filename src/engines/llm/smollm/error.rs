//! Error type of the SmolLM engine: loading (file, GGUF, tokenizer) and running (tensor ops, limits).

use std::path::PathBuf;

/// Everything that can go wrong loading or running the model.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The model file could not be opened or read.
    #[error("cannot read model file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a usable GGUF llama model (bad header, missing metadata or tensor).
    #[error("invalid GGUF model {path}: {reason}")]
    InvalidModel { path: PathBuf, reason: String },
    /// The tokenizer could not be built or failed on some input.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    /// A tensor operation failed while running the model.
    #[error("model computation failed: {0}")]
    Compute(#[from] candle_core::Error),
    /// The prompt cannot fit in the context window even after dropping old turns.
    #[error("prompt needs {tokens} tokens but the context window holds {limit}")]
    PromptTooLong { tokens: usize, limit: usize },
    /// The caller passed messages or parameters that cannot be used.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl LlmError {
    /// True when retrying the same request could succeed (nothing here is transient today,
    /// but the server's engine layer asks).
    pub fn is_retryable(&self) -> bool {
        false
    }
}
