//! The process-wide ONNX Runtime: loaded once from a shared library path
//! (`load-dynamic`), then shared by every model that runs on it (Piper voices,
//! the Silero speech detector, the Smart Turn end-of-turn model).
//!
//! ONNX Runtime allows one environment per process. If another part of the
//! process already built one, hand it over with `use_runtime_environment`.
//! `SessionPool` keeps the sessions of one model for reuse.

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;

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

/// A session of a small model on one thread that never spins waiting for work (the speech
/// detector's and the end-of-turn model's: many calls share two cores).
pub(crate) fn single_thread_session(env: &Environment, model: &[u8]) -> ort::Result<Session> {
    Session::builder(env)?
        .with_optimization_level(GraphOptimizationLevel::All)?
        .with_intra_threads(1)?
        .with_inter_threads(1)?
        .with_intra_op_spinning(false)?
        .with_inter_op_spinning(false)?
        .commit_from_memory(model)
}

/// A few sessions of one model, created once and reused: `Session::run` needs
/// `&mut`, so each request borrows one and requests beyond the pool's size
/// wait for one to come back.
pub(crate) struct SessionPool {
    idle: Mutex<Vec<Session>>,
    returned: Condvar,
    /// Sessions the pool was made with; an empty pool never waits.
    size: usize,
}

/// A borrowed session; goes back to the pool when dropped.
pub(crate) struct Lease<'a> {
    pool: &'a SessionPool,
    session: Option<Session>,
}

impl SessionPool {
    pub(crate) fn new(sessions: Vec<Session>) -> Self {
        SessionPool {
            size: sessions.len(),
            idle: Mutex::new(sessions),
            returned: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Session>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for an idle session (none at all if the pool is empty).
    pub(crate) fn borrow(&self) -> Lease<'_> {
        if self.size == 0 {
            return Lease {
                pool: self,
                session: None,
            };
        }
        let mut idle = self.lock();
        loop {
            if let Some(session) = idle.pop() {
                return Lease {
                    pool: self,
                    session: Some(session),
                };
            }
            idle = self.returned.wait(idle).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Lease<'_> {
    /// The borrowed session; `None` only from an empty pool.
    pub(crate) fn session(&mut self) -> Option<&mut Session> {
        self.session.as_mut()
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.pool.lock().push(session);
            self.pool.returned.notify_one();
        }
    }
}
