//! Loading (dimensions, corrupt and missing files), cancellation, and one model shared by
//! concurrent requests.

#[path = "stt_common/mod.rs"]
mod common;

use std::cell::Cell;
use std::path::Path;
use std::sync::Arc;

use common::{espeak, model_dir, whisper};
use voxwire::engines::stt::whisper::{Whisper, WhisperError};

const NEVER: &dyn Fn() -> bool = &|| false;

#[test]
fn dimensions_come_from_the_weights() {
    let d = whisper().dims();
    println!("{d:?}");
    assert_eq!(d.n_mels, 80);
    assert!(d.d_model >= 384 && d.d_model.is_multiple_of(64));
    assert_eq!(d.encoder_heads, d.d_model / 64);
    assert!(d.encoder_layers >= 4 && d.decoder_layers >= 4);
    assert!(d.vocab >= 51_864);
    assert_eq!((d.audio_ctx, d.text_ctx), (1500, 448));
}

/// A model directory whose `model.bin` is `bytes` (config and tokenizer are the real ones).
fn dir_with_model_bin(tag: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("voxwire-stt-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(model_dir().join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("model.bin"), bytes).unwrap();
    dir
}

#[test]
fn truncated_model_bin_is_an_error_naming_the_file() {
    let full = std::fs::read(model_dir().join("model.bin")).unwrap();
    for (tag, len) in [
        ("cut-header", 10),
        ("cut-1mb", 1 << 20),
        ("cut-last", full.len() - 1),
    ] {
        let dir = dir_with_model_bin(tag, &full[..len]);
        let err = Whisper::load(&dir)
            .err()
            .expect("truncated model must not load");
        let msg = err.to_string();
        println!("{tag}: {msg}");
        assert!(matches!(err, WhisperError::Model(_)));
        assert!(
            msg.contains("model.bin") && msg.contains("truncated"),
            "{msg}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn wrong_file_is_an_error() {
    let dir = dir_with_model_bin("wrong", b"{\"this is\": \"not a model\"}");
    let msg = Whisper::load(&dir)
        .err()
        .expect("must not load")
        .to_string();
    println!("{msg}");
    assert!(
        msg.contains("model.bin") && msg.contains("binary version"),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_files_are_named() {
    let dir = std::env::temp_dir().join(format!("voxwire-stt-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let msg = Whisper::load(&dir)
        .err()
        .expect("must not load")
        .to_string();
    assert!(msg.contains("config.json"), "{msg}");
    std::fs::copy(model_dir().join("config.json"), dir.join("config.json")).unwrap();
    let msg = Whisper::load(&dir)
        .err()
        .expect("must not load")
        .to_string();
    assert!(msg.contains("tokenizer.json"), "{msg}");
    std::fs::copy(
        model_dir().join("tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    let msg = Whisper::load(&dir)
        .err()
        .expect("must not load")
        .to_string();
    assert!(msg.contains("model.bin"), "{msg}");
    std::fs::remove_dir_all(&dir).ok();
    assert!(Whisper::load(Path::new("/nonexistent")).is_err());
}

#[test]
fn cancel_stops_transcription() {
    let pcm = espeak("This sentence will never be fully transcribed.");
    let model = whisper();
    let err = model.transcribe(&pcm, &|| true).unwrap_err();
    assert!(matches!(err, WhisperError::Cancelled), "{err}");
    // Cancel after a few polls, i.e. in the middle of decoding.
    let polls = Cell::new(0);
    let cancel = || {
        polls.set(polls.get() + 1);
        polls.get() > 4
    };
    let err = model.transcribe(&pcm, &cancel).unwrap_err();
    assert!(matches!(err, WhisperError::Cancelled), "{err}");
    assert_eq!(polls.get(), 5, "polled between steps, stopped at once");
}

#[test]
fn one_model_serves_concurrent_requests() {
    let texts = [
        "Turn left at the next corner.",
        "The library opens at nine.",
    ];
    let mut audio = Vec::new();
    for t in texts {
        let pcm = espeak(t);
        audio.push(pcm);
    }
    let model: Arc<Whisper> = whisper();
    let sequential: Vec<String> = audio
        .iter()
        .map(|a| model.transcribe(a, NEVER).unwrap().text)
        .collect();
    let handles: Vec<_> = audio
        .into_iter()
        .map(|a| {
            let m = Arc::clone(&model);
            std::thread::spawn(move || m.transcribe(&a, NEVER).unwrap().text)
        })
        .collect();
    let concurrent: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    println!("{concurrent:?}");
    assert_eq!(sequential, concurrent);
    assert!(concurrent.iter().all(|t| !t.is_empty()));
}
