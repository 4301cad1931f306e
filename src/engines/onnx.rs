//! The process-wide ONNX Runtime: loaded once from a shared library path
//! (`load-dynamic`), then shared by every model that runs on it (Piper voices,
//! the Silero speech detector).
//!
//! ONNX Runtime allows one environment per process. If another part of the
//! process already built one, hand it over with `use_runtime_environment`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;

/// The ONNX Runtime library could not be loaded.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum OnnxError {
    /// Missing file, not a shared library, or an incompatible version.
    #[error("cannot load the ONNX Runtime library {path}: {reason}")]
    Library { path: PathBuf, reason: String },
}

static ENV: OnceLock<Environment> = OnceLock::new();
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Load ONNX Runtime from `lib_path` (e.g. `libonnxruntime.so.1.31.1`) and
/// create the environment. Idempotent: later calls return `Ok(())` and keep
/// the library loaded first (a process can load only one).
pub fn init_runtime(lib_path: &Path) -> Result<(), OnnxError> {
    let _guard = INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if ENV.get().is_some() {
        return Ok(());
    }
    let fail = |reason: String| OnnxError::Library {
        path: lib_path.to_path_buf(),
        reason,
    };
    if !lib_path.is_file() {
        return Err(fail("file not found".into()));
    }
    // ort resolves relative paths against the executable: make it absolute.
    let abs = lib_path
        .canonicalize()
        .map_err(|e| fail(format!("cannot resolve path: {e}")))?;
    let builder = ort::init_from(&abs).map_err(|e| fail(e.to_string()))?;
    let env = builder
        .with_name("voxwire")
        .with_telemetry(false)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let _ = ENV.set(env);
    Ok(())
}

/// Use an environment built elsewhere in the process instead of
/// `init_runtime`. Ignored if one is already set.
pub fn use_runtime_environment(env: Environment) {
    let _ = ENV.set(env);
}

/// The environment, if `init_runtime` succeeded.
pub fn runtime_environment() -> Option<&'static Environment> {
    ENV.get()
}
