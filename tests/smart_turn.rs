//! Smart Turn v3.2 on the real model: our features match Pipecat's own (`_whisper_features.py`,
//! values in `tests/fixtures/smart_turn/reference.json`, written by `make_reference.py` there),
//! so does the model's probability on the same audio; a complete question scores high and an
//! unfinished clause low; bad files are clear errors. Probabilities are printed
//! (`cargo test --release --test smart_turn -- --nocapture`).

#[path = "tts_common/mod.rs"]
mod tts;
#[path = "turn_common/mod.rs"]
mod turn;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde_json::Value;
use voxwire::audio::vad::smart_turn::{Features, SmartTurn, SmartTurnError, FRAMES, N_MELS};
use voxwire::models::{manifest, ModelStore};

/// Largest difference allowed between a feature value here and Pipecat's (features are about
/// -1.5 to 2; Pipecat computes the spectrum in f64, we do in f32).
const FEATURE_TOLERANCE: f32 = 2e-3;
/// Largest difference allowed between the model's probability here and under Pipecat. The
/// model is quantized to 8 bits, activations included, so a feature moving by a few millionths
/// can cross a rounding step: under Python, noise of 3e-6 on `opening_hours.wav`'s features
/// moves its probability between 0.954 and 0.974 (0.972 without noise).
const PROBABILITY_TOLERANCE: f32 = 0.03;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/smart_turn")
        .join(name)
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixture("reference.json")).expect("reference.json");
    serde_json::from_str(&text).expect("reference.json is JSON")
}

fn f(v: &Value) -> f32 {
    v.as_f64().expect("a number") as f32
}

fn model_path() -> PathBuf {
    ModelStore::from_env().file(manifest::SMART_TURN, "smart-turn-v3.2-cpu.onnx")
}

/// The model, loaded once per test binary.
fn model() -> Arc<SmartTurn> {
    static MODEL: OnceLock<Arc<SmartTurn>> = OnceLock::new();
    MODEL
        .get_or_init(
            || match SmartTurn::load(&tts::ort_lib(), &model_path(), 2) {
                Ok(m) => Arc::new(m),
                Err(e) => panic!("Smart Turn does not load (run `voxwire models fetch`): {e}"),
            },
        )
        .clone()
}

/// What the turn detector gives the model at a pause: a little silence before the speech, the
/// speech, then the 200 ms of silence that made it ask.
fn at_pause(speech: &[f32]) -> Vec<f32> {
    let mut audio = turn::silence(300);
    audio.extend_from_slice(speech);
    audio.extend(turn::silence(200));
    audio
}

#[test]
fn features_match_pipecats() {
    let reference = reference();
    let features = Features::new();
    let files = reference.as_object().expect("an object of files");
    assert_eq!(files.len(), 2);
    for (name, want) in files {
        let got = features.compute(&turn::read_wav(&fixture(name)));
        assert_eq!(got.len(), N_MELS * FRAMES);
        assert_eq!(want["shape"], serde_json::json!([N_MELS, FRAMES]));
        let n = got.len() as f64;
        let mean = got.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let std = (got
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        let max = got.iter().copied().fold(f32::MIN, f32::max);
        let min = got.iter().copied().fold(f32::MAX, f32::min);
        println!(
            "{name}: mean {mean:.6} (Pipecat {}), std {std:.6} ({}), min {min} ({}), max {max} ({})",
            want["mean"], want["std"], want["min"], want["max"]
        );
        assert!(
            (mean as f32 - f(&want["mean"])).abs() < 1e-4,
            "{name}: mean"
        );
        assert!((std as f32 - f(&want["std"])).abs() < 1e-4, "{name}: std");
        assert!(
            (min - f(&want["min"])).abs() < FEATURE_TOLERANCE,
            "{name}: min"
        );
        assert!(
            (max - f(&want["max"])).abs() < FEATURE_TOLERANCE,
            "{name}: max"
        );

        let stride = want["stride"].as_u64().expect("stride") as usize;
        let values = want["values"].as_array().expect("values");
        assert_eq!(values.len(), 400);
        let mut worst = 0.0f32;
        for (i, v) in values.iter().enumerate() {
            let at = i * stride % got.len();
            let diff = (got[at] - f(v)).abs();
            worst = worst.max(diff);
            assert!(
                diff < FEATURE_TOLERANCE,
                "{name}: value {at} (band {}, frame {}) is {}, Pipecat's {}",
                at / FRAMES,
                at % FRAMES,
                got[at],
                f(v)
            );
        }
        let bands = want["band_means_last_200"].as_array().expect("band means");
        assert_eq!(bands.len(), N_MELS);
        for (band, v) in bands.iter().enumerate() {
            let row = &got[band * FRAMES + FRAMES - 200..(band + 1) * FRAMES];
            let mean = row.iter().sum::<f32>() / 200.0;
            let diff = (mean - f(v)).abs();
            worst = worst.max(diff);
            assert!(diff < FEATURE_TOLERANCE, "{name}: band {band} mean {mean}");
        }
        println!("{name}: largest difference from Pipecat's features {worst:.2e}");
    }
}

#[test]
fn probability_matches_pipecats() {
    let reference = reference();
    for (name, want) in reference.as_object().expect("files") {
        let p = model()
            .predict(&turn::read_wav(&fixture(name)))
            .expect("inference");
        let want = f(&want["probability"]);
        println!("{name}: probability {p:.5}, Pipecat {want:.5}");
        assert!(
            (p - want).abs() < PROBABILITY_TOLERANCE,
            "{name}: {p} vs Pipecat's {want}"
        );
    }
}

#[test]
fn a_complete_question_scores_high() {
    for text in [
        "Can you tell me the opening hours on Saturday?",
        "I need to cancel my appointment for Friday.",
    ] {
        let p = model()
            .predict(&at_pause(&turn::say(text)))
            .expect("inference");
        println!("{p:.3} {text:?}");
        assert!(p > 0.8, "{text:?} scored {p}");
    }
}

#[test]
fn an_unfinished_clause_scores_low() {
    let p = model()
        .predict(&at_pause(&turn::say("I'm calling because")))
        .expect("inference");
    println!("{p:.3} \"I'm calling because\"");
    assert!(p < 0.2, "\"I'm calling because\" scored {p}");
    // The words before a pause in the middle of a sentence, with the sentence's intonation.
    let paused = turn::say_with_pause("Can you tell me", "the opening hours on Saturday?");
    let before = model()
        .predict(&at_pause(&paused.before))
        .expect("inference");
    let whole = model()
        .predict(&at_pause(&paused.with_pause(700)))
        .expect("inference");
    println!("{before:.3} \"Can you tell me\" (before the pause), {whole:.3} the whole sentence");
    assert!(before < 0.3, "the words before the pause scored {before}");
    assert!(whole > 0.8, "the whole sentence scored {whole}");
}

#[test]
fn only_the_last_8_seconds_count() {
    let speech = at_pause(&turn::say("Can you tell me the opening hours on Saturday?"));
    let mut long = turn::say("I'm calling because");
    long.extend(turn::silence(8_000));
    long.extend_from_slice(&speech);
    let tail = &long[long.len() - 8 * turn::RATE..];
    let m = model();
    assert_eq!(
        m.predict(&long).expect("inference"),
        m.predict(tail).expect("inference")
    );
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let m = model();
    for audio in [vec![], vec![f32::NAN; 1000], vec![1e9; 16_000]] {
        let p = m.predict(&audio).expect("any audio is accepted");
        assert!((0.0..=1.0).contains(&p), "{p}");
    }
    let err = m
        .predict_features(&[0.0; 10])
        .expect_err("too few features");
    assert!(matches!(err, SmartTurnError::InvalidArgument(_)), "{err}");
}

#[test]
fn missing_and_corrupt_files_are_clear_errors() {
    let lib = tts::ort_lib();
    let missing = Path::new("/nonexistent/smart-turn.onnx");
    let err = SmartTurn::load(&lib, missing, 1)
        .err()
        .expect("missing file");
    assert!(matches!(err, SmartTurnError::Io { .. }), "{err}");
    assert!(
        err.to_string().contains("/nonexistent/smart-turn.onnx"),
        "{err}"
    );

    let dir = std::env::temp_dir().join(format!("voxwire-smart-turn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let corrupt = dir.join("smart-turn.onnx");
    std::fs::write(&corrupt, b"not an onnx model").expect("write");
    let err = SmartTurn::load(&lib, &corrupt, 1)
        .err()
        .expect("corrupt file");
    assert!(matches!(err, SmartTurnError::Model { .. }), "{err}");
    // Another ONNX model (Silero VAD) is refused by its signature.
    let silero = ModelStore::from_env().file(manifest::SILERO_VAD, "silero_vad.onnx");
    let err = SmartTurn::load(&lib, &silero, 1)
        .err()
        .expect("not Smart Turn");
    assert!(
        err.to_string().contains("not a Smart Turn v3 model"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
