//! Offline language model: SmolLM2-135M-Instruct (GGUF) on candle, CPU only.
//!
//! [`SmolLm`] owns the weights and the tokenizer (one copy, shared through `Arc`);
//! [`ChatSession`] is one call's conversation with its own KV cache, so each turn only runs
//! the new tokens. Generation is blocking: run it on a blocking thread (`spawn_blocking`),
//! stream deltas through the callback (or forward them into a channel:
//! `&mut |d| tx.send(d.to_string()).is_ok()`), and cancel with the `cancel` check.

// `unsafe` is allowed in two files only: the AVX2 kernels (quant/avx2.rs) and the thread
// pool that runs them (pool.rs).
#![deny(unsafe_code)]

mod chat;
mod config;
mod error;
mod kv_cache;
mod model;
mod packed;
mod pool;
mod quant;
mod sampling;
mod session;
mod tensors;
mod tokenizer;

use std::io::{Read, Seek};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use candle_core::quantized::gguf_file;

pub use chat::{encode_chat, render_prompt, substitute_variables, ChatMessage, Role};
pub use config::ModelConfig;
pub use error::LlmError;
pub use session::{ChatSession, GenerateParams, GenerationStats, StopReason};
pub use tokenizer::{SmolTokenizer, Utf8Stream};

/// The model file for tests and benchmarks: `VOXWIRE_LLM_MODEL`, else the fetched model.
pub fn default_model_path() -> std::path::PathBuf {
    std::env::var_os("VOXWIRE_LLM_MODEL")
        .map(Into::into)
        .unwrap_or_else(|| {
            crate::models::ModelStore::from_env()
                .file(crate::models::manifest::SMOLLM2_135M, "model.gguf")
        })
}

/// Default context window of a session, in tokens.
pub const DEFAULT_MAX_CONTEXT: usize = 2048;

/// How the weights are held in memory, and which forward pass runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    /// The GGUF's quantized blocks as stored (Q4_1 layers, Q8_0 embedding), run by voxwire's
    /// own kernels (AVX2/FMA when the CPU has them, chosen at run time) with f32 activations:
    /// about 100 MB, the fastest, and the f32 path's arithmetic. The default.
    Packed,
    /// The stored blocks through candle's `QMatMul` (activations quantized to 8 bits; its
    /// kernels are scalar unless the binary is built for AVX): small, slow prompts.
    Quantized,
    /// Dequantized to f32 at load, candle's forward pass: about 540 MB.
    F32,
    /// Dequantized to f16 at load (activations stay f32), candle's forward pass.
    F16,
}

impl std::str::FromStr for WeightFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "packed" => Ok(Self::Packed),
            "quantized" => Ok(Self::Quantized),
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            other => Err(format!(
                "unknown weight format {other:?} (packed, quantized, f32 or f16)"
            )),
        }
    }
}

/// Which kernels the packed format runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelChoice {
    /// The fastest this CPU has (AVX2/FMA/F16C on x86-64 CPUs that have them).
    #[default]
    Detect,
    /// Plain Rust, as on a CPU without AVX2 (tests use it to check that path).
    Portable,
}

/// How to load the model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Packed (default): ~100 MB, the fastest on CPU; see [`WeightFormat`].
    pub weight_format: WeightFormat,
    /// Context window of each session (prompt + reply), capped by the model's own.
    pub max_context: usize,
    /// Threads of the packed format's forward pass (0: one per core).
    pub threads: usize,
    /// Kernels of the packed format.
    pub kernels: KernelChoice,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            weight_format: WeightFormat::Packed,
            max_context: DEFAULT_MAX_CONTEXT,
            threads: 0,
            kernels: KernelChoice::Detect,
        }
    }
}

/// The forward pass that holds the weights.
enum Backend {
    Candle(model::Weights),
    Packed(packed::PackedWeights),
}

impl Backend {
    fn config(&self) -> &ModelConfig {
        match self {
            Backend::Candle(w) => w.config(),
            Backend::Packed(w) => w.config(),
        }
    }

    fn new_cache(&self) -> kv_cache::KvCache {
        match self {
            Backend::Candle(w) => w.new_cache(),
            Backend::Packed(w) => w.new_cache(),
        }
    }

    fn forward(&self, ids: &[u32], cache: &mut kv_cache::KvCache) -> candle_core::Result<Vec<f32>> {
        match self {
            Backend::Candle(w) => w.forward(ids, cache),
            Backend::Packed(w) => w.forward(ids, cache),
        }
    }
}

/// The loaded model: weights plus tokenizer. `Send + Sync`; share with `Arc`.
pub struct SmolLm {
    weights: Backend,
    tokenizer: SmolTokenizer,
    max_context: usize,
    weight_format: WeightFormat,
    load_ms: f64,
}

impl std::fmt::Debug for SmolLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmolLm")
            .field("config", self.weights.config())
            .field("max_context", &self.max_context)
            .field("weight_format", &self.weight_format)
            .finish()
    }
}

impl SmolLm {
    /// Loads a GGUF file with the default options (packed weights, 2048-token context).
    pub fn load(gguf_path: &Path) -> Result<Self, LlmError> {
        Self::load_with(gguf_path, &LoadOptions::default())
    }

    /// Loads a GGUF file. Errors name the file and the reason.
    pub fn load_with(gguf_path: &Path, options: &LoadOptions) -> Result<Self, LlmError> {
        let mut file = std::fs::File::open(gguf_path).map_err(|source| LlmError::Io {
            path: gguf_path.to_path_buf(),
            source,
        })?;
        Self::from_reader(&mut file, gguf_path, options)
    }

    /// Loads a GGUF model from any seekable source; `path` only names it in errors. The file
    /// may be anything a user points at: a panic in the third-party GGUF and tensor code on a
    /// hostile file is reported as [`LlmError::InvalidModel`], not passed on.
    pub fn from_reader<R: Read + Seek>(
        reader: &mut R,
        path: &Path,
        options: &LoadOptions,
    ) -> Result<Self, LlmError> {
        let t0 = Instant::now();
        let invalid = |reason: String| LlmError::InvalidModel {
            path: path.to_path_buf(),
            reason,
        };
        let content = tensors::guarded("the GGUF reader", || gguf_file::Content::read(reader))
            .map_err(|e| invalid(format!("cannot parse GGUF: {e}")))?;
        let tokenizer = SmolTokenizer::from_gguf(&content).map_err(invalid)?;
        let train_context = content
            .metadata
            .get("llama.context_length")
            .and_then(|v| v.to_u32().ok())
            .map_or(options.max_context, |v| v as usize);
        let max_context = options.max_context.clamp(16, train_context.max(16));
        let weights = match options.weight_format {
            WeightFormat::Packed => {
                let kernels = match options.kernels {
                    KernelChoice::Detect => quant::Kernels::detect(),
                    KernelChoice::Portable => quant::Kernels::Portable,
                };
                let threads = match options.threads {
                    0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                    n => n,
                };
                Backend::Packed(
                    packed::PackedWeights::load(&content, reader, max_context, kernels, threads)
                        .map_err(invalid)?,
                )
            }
            format => Backend::Candle(
                model::Weights::load(&content, reader, format, max_context).map_err(invalid)?,
            ),
        };
        Ok(Self {
            weights,
            tokenizer,
            max_context,
            weight_format: options.weight_format,
            load_ms: t0.elapsed().as_secs_f64() * 1000.0,
        })
    }

    /// A new conversation with an empty cache, sharing these weights.
    pub fn new_session(self: &Arc<Self>) -> ChatSession {
        ChatSession::new(Arc::clone(self))
    }

    pub fn tokenizer(&self) -> &SmolTokenizer {
        &self.tokenizer
    }

    pub fn config(&self) -> &ModelConfig {
        self.weights.config()
    }

    /// Context window of each session, in tokens.
    pub fn max_context(&self) -> usize {
        self.max_context
    }

    pub fn weight_format(&self) -> WeightFormat {
        self.weight_format
    }

    /// How long `load` took.
    pub fn load_ms(&self) -> f64 {
        self.load_ms
    }

    /// The kernels and threads of the packed format (e.g. `"avx2+fma, 2 threads"`), or
    /// `None` for the candle formats.
    pub fn kernels(&self) -> Option<String> {
        match &self.weights {
            Backend::Packed(w) => Some(format!("{}, {} threads", w.kernels().name(), w.threads())),
            Backend::Candle(_) => None,
        }
    }

    /// Bytes of weights held by the packed format (`None` for the candle formats).
    pub fn weights_memory_bytes(&self) -> Option<usize> {
        match &self.weights {
            Backend::Packed(w) => Some(w.memory_bytes()),
            Backend::Candle(_) => None,
        }
    }

    fn weights(&self) -> &Backend {
        &self.weights
    }

    /// Times `repeats` forward passes of `n` tokens, each after the same `pos` cached
    /// positions (benchmark aid: the cache is cut back to `pos` before each).
    #[doc(hidden)]
    pub fn time_forward_ms(
        &self,
        pos: usize,
        n: usize,
        repeats: usize,
    ) -> Result<Vec<f64>, LlmError> {
        let mut cache = self.weights.new_cache();
        let ids: Vec<u32> = (0..(pos + n) as u32).map(|i| 100 + i % 1000).collect();
        for chunk in ids[..pos].chunks(256) {
            self.weights.forward(chunk, &mut cache)?;
        }
        let mut times = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            cache.truncate(pos);
            let t = Instant::now();
            self.weights.forward(&ids[pos..], &mut cache)?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        Ok(times)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_is_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SmolLm>();
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err = SmolLm::load(Path::new("/nonexistent/model.gguf")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/model.gguf"), "{msg}");
        assert!(matches!(err, LlmError::Io { .. }));
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("voxwire-llm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.gguf");
        std::fs::write(&path, b"GGUF not really a model").unwrap();
        let err = SmolLm::load(&path).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LlmError::InvalidModel { .. }), "{msg}");
        assert!(msg.contains("bad.gguf"), "{msg}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
