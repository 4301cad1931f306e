//! Runtime-library failures, in their own test binary because a process can
//! load ONNX Runtime only once.

#[path = "tts_common/mod.rs"]
mod common;

use voxwire::engines::tts::piper::{init_runtime, PiperError, PiperVoice};

#[test]
fn missing_or_corrupt_runtime_library_then_recovery() {
    let (onnx, config) = common::voice_paths();
    // Before init: a clear error, not a panic.
    let err = PiperVoice::load(&onnx, &config, 1, 1)
        .err()
        .expect("must fail");
    assert!(matches!(err, PiperError::RuntimeNotInitialised), "{err}");

    let missing = std::path::Path::new("/nonexistent/libonnxruntime.so");
    let err = init_runtime(missing).expect_err("missing library");
    assert!(
        err.to_string().contains("/nonexistent/libonnxruntime.so"),
        "{err}"
    );
    assert!(err.to_string().contains("not found"), "{err}");

    let dir = std::env::temp_dir().join(format!("voxwire-ort-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let corrupt = dir.join("libonnxruntime.so");
    std::fs::write(&corrupt, b"not a shared library").expect("write");
    let err = init_runtime(&corrupt).expect_err("corrupt library");
    assert!(matches!(err, PiperError::Runtime { .. }), "{err}");
    assert!(err.to_string().contains("libonnxruntime.so"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);

    // The real library still loads afterwards, and init is idempotent.
    init_runtime(&common::ort_lib()).expect("real library");
    init_runtime(&common::ort_lib()).expect("second call");
}
