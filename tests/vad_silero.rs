//! Silero VAD on the real model: speech scores high, silence and quiet noise low, results do not
//! depend on how audio is chunked, `reset` gives a fresh stream, and bad files are clear errors.
//! Probabilities are printed (`cargo test --test vad_silero -- --nocapture`).

#[path = "stt_common/mod.rs"]
mod stt;
#[path = "tts_common/mod.rs"]
mod tts;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use voxwire::audio::vad::silero::{SileroError, SileroStream, SileroVad};
use voxwire::audio::vad::{DetectorParams, TurnDetector, VadEvent};
use voxwire::models::{manifest, ModelStore};

const FRAME: usize = SileroStream::FRAME;
const RATE: usize = 16_000;
/// A frame this loud (RMS, dBFS) is inside an utterance, not a pause.
const LOUD_DB: f32 = -30.0;

fn model_path() -> PathBuf {
    ModelStore::from_env().file(manifest::SILERO_VAD, "silero_vad.onnx")
}

/// The model, loaded once per test binary, with two sessions.
fn vad() -> Arc<SileroVad> {
    static VAD: OnceLock<Arc<SileroVad>> = OnceLock::new();
    VAD.get_or_init(|| {
        let model = model_path();
        match SileroVad::load(&tts::ort_lib(), &model, 2) {
            Ok(v) => Arc::new(v),
            Err(e) => panic!("Silero VAD does not load (run `voxwire models fetch`): {e}"),
        }
    })
    .clone()
}

fn probs(audio: &[f32]) -> Vec<f32> {
    vad().stream().push(audio).expect("inference")
}

fn level_db(frame: &[f32]) -> f32 {
    20.0 * tts::rms(frame).max(1e-9).log10()
}

fn silence(ms: usize) -> Vec<f32> {
    vec![0.0; ms * 16]
}

/// Digital silence on each side of an utterance: 500 ms.
const PAD: usize = 8_000;

/// `speech` between half a second of silence on each side.
fn padded(speech: &[f32]) -> Vec<f32> {
    let mut audio = vec![0.0; PAD];
    audio.extend_from_slice(speech);
    audio.extend(vec![0.0; PAD]);
    audio
}

/// Fraction of frames above 0.5 between the first and the last loud frame.
fn speech_fraction(audio: &[f32], p: &[f32]) -> (f32, usize, usize) {
    let loud: Vec<usize> = audio
        .chunks_exact(FRAME)
        .enumerate()
        .filter(|(_, f)| level_db(f) > LOUD_DB)
        .map(|(i, _)| i)
        .collect();
    let (first, last) = (loud[0], loud[loud.len() - 1]);
    let inside = &p[first..=last];
    let high = inside.iter().filter(|&&x| x > 0.5).count();
    (high as f32 / inside.len() as f32, first, last)
}

#[test]
fn speech_frames_score_high() {
    let utterances = [
        (
            "espeak: meeting",
            stt::espeak("Please schedule a meeting with the marketing team for next Tuesday."),
        ),
        (
            "espeak: station",
            stt::espeak("Can you tell me how to get to the nearest train station?"),
        ),
        (
            "human: librivox 0870",
            stt::read_wav(&stt::fixture("librivox_sense_and_sensibility_0870.wav")),
        ),
        (
            "human: librivox 0920",
            stt::read_wav(&stt::fixture("librivox_sense_and_sensibility_0920.wav")),
        ),
    ];
    for (what, speech) in utterances {
        let audio = padded(&speech);
        let p = probs(&audio);
        assert_eq!(p.len(), audio.len() / FRAME);
        let (fraction, first, last) = speech_fraction(&audio, &p);
        let inside = &p[first..=last];
        let mean = inside.iter().sum::<f32>() / inside.len() as f32;
        // Frames wholly inside the padding: all of the silence before, the last 250 ms after.
        let lead = p[..PAD / FRAME].iter().cloned().fold(0.0, f32::max);
        let tail_from = (audio.len() - PAD / 2).div_ceil(FRAME);
        let tail = p[tail_from..].iter().cloned().fold(0.0, f32::max);
        println!(
            "{what}: {} frames inside speech, {:.0}% above 0.5, mean {mean:.3}; \
             silence before: max {lead:.3}, after: max {tail:.3}",
            inside.len(),
            fraction * 100.0
        );
        assert!(fraction >= 0.85, "{what}: only {fraction:.2} above 0.5");
        assert!(mean > 0.8, "{what}: mean {mean:.3}");
        assert!(
            lead < 0.05,
            "{what}: silence before speech scored {lead:.3}"
        );
        assert!(tail < 0.05, "{what}: silence after speech scored {tail:.3}");
    }
}

/// The turn detector on Silero's scores finds one utterance, where the sound is, through the
/// pauses at the commas.
#[test]
fn the_turn_detector_finds_the_utterance() {
    let speech = stt::espeak("Hello, I would like to book a table for two, at eight, please.");
    let mut audio = vec![0.0; PAD];
    audio.extend_from_slice(&speech);
    audio.extend(vec![0.0; 2 * RATE]);
    // Where the sound is, from 10 ms frames.
    let loud: Vec<usize> = audio
        .chunks(160)
        .enumerate()
        .filter(|(_, f)| level_db(f) > -45.0)
        .map(|(i, _)| i * 10)
        .collect();
    let (onset, end) = (loud[0] as i64, loud[loud.len() - 1] as i64 + 10);

    let params = DetectorParams {
        threshold: 0.5,
        min_speech_ms: 100,
        pause_ms: 0,
        check_ms: 0,
        silence_ms: 500,
    };
    let mut detector = TurnDetector::new(Box::new(vad().stream()), params);
    let mut events = Vec::new();
    for chunk in audio.chunks(320) {
        events.extend(detector.push(chunk).expect("scores"));
    }
    println!("sound {onset}-{end} ms; events {events:?}");
    let [VadEvent::Started { at_ms: start }, VadEvent::Stopped { at_ms: stop }] = events[..] else {
        panic!("expected one utterance, got {events:?}");
    };
    assert!((start as i64 - onset).abs() <= 100, "started at {start} ms");
    assert!((stop as i64 - end).abs() <= 150, "stopped at {stop} ms");
}

#[test]
fn silence_and_quiet_noise_score_low() {
    let p = probs(&silence(1000));
    let max = p.iter().cloned().fold(0.0, f32::max);
    println!("1 s of digital silence: {} frames, max {max:.4}", p.len());
    assert_eq!(p.len(), 31);
    assert!(max < 0.05, "silence scored {max:.4}");

    // -40 dBFS RMS white noise, and louder noise a speech-level threshold would take for speech.
    for (db, rms) in [(-40, 0.01), (-20, 0.1)] {
        for seed in 1..=3 {
            let p = probs(&stt::white_noise(16_000, rms, seed));
            let max = p.iter().cloned().fold(0.0, f32::max);
            let mean = p.iter().sum::<f32>() / p.len() as f32;
            println!("1 s of {db} dBFS white noise (seed {seed}): max {max:.4}, mean {mean:.4}");
            assert!(max < 0.1, "{db} dBFS noise scored {max:.4}");
        }
    }
}

#[test]
fn chunking_does_not_change_the_result() {
    let mut audio = padded(&stt::espeak("The weather today is sunny."));
    audio.extend(stt::white_noise(8_000, 0.01, 7));
    let whole = probs(&audio);

    let mut stream = vad().stream();
    let mut chunked = Vec::new();
    for chunk in audio.chunks(333) {
        chunked.extend(stream.push(chunk).expect("inference"));
        assert!(stream.pending() < FRAME);
    }
    assert_eq!(chunked, whole, "333-sample chunks");

    // Irregular sizes, empty pushes and single samples included.
    let mut stream = vad().stream();
    let mut chunked = Vec::new();
    let sizes = [0, 1, 511, 1, 0, 7, 1024, 2000, 513, 3];
    let mut rest = &audio[..];
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at((*size).min(rest.len()));
        chunked.extend(stream.push(chunk).expect("inference"));
        rest = tail;
    }
    assert_eq!(chunked, whole, "irregular chunks");
    assert_eq!(stream.pending(), audio.len() % FRAME);
}

#[test]
fn reset_gives_a_fresh_stream() {
    let speech = padded(&stt::espeak("Hello, can you hear me?"));
    let fresh = probs(&speech);

    let mut stream = vad().stream();
    stream
        .push(&stt::espeak("Something else entirely, then a pause."))
        .expect("inference");
    stream.push(&[0.3; 100]).expect("leaves samples pending");
    assert_eq!(stream.pending() % FRAME, stream.pending());
    assert!(stream.pending() > 0);
    stream.reset();
    assert_eq!(stream.pending(), 0);
    assert_eq!(stream.push(&speech).expect("inference"), fresh);
}

#[test]
fn hostile_samples_never_panic() {
    let mut stream = vad().stream();
    assert!(stream.push(&[]).expect("empty").is_empty());
    // Non-finite samples count as silence.
    let nan = vec![f32::NAN; 4 * FRAME];
    assert_eq!(
        stream.push(&nan).expect("nan"),
        probs(&vec![0.0; 4 * FRAME])
    );
    let mut wild = vec![f32::INFINITY; FRAME];
    wild.extend(vec![f32::NEG_INFINITY; FRAME]);
    wild.extend(vec![1e30; FRAME]);
    wild.extend((0..FRAME).map(|i| if i % 2 == 0 { -5.0 } else { 5.0 }));
    let p = stream.push(&wild).expect("wild values");
    assert_eq!(p.len(), 4);
    assert!(p.iter().all(|x| (0.0..=1.0).contains(x)), "{p:?}");
    // The stream still works on speech afterwards.
    stream.reset();
    let speech = padded(&stt::espeak("Still listening."));
    assert_eq!(stream.push(&speech).expect("speech"), probs(&speech));
}

#[test]
fn concurrent_streams_share_the_sessions() {
    let audio = padded(&stt::espeak("Four callers talk at the same time."));
    let expected = probs(&audio);
    let audio = Arc::new(audio);
    let handles: Vec<_> = (0..4)
        .map(|n| {
            let audio = Arc::clone(&audio);
            std::thread::spawn(move || {
                let mut stream = vad().stream();
                let mut out = Vec::new();
                for chunk in audio.chunks(320 + n * 97) {
                    out.extend(stream.push(chunk).expect("inference"));
                }
                out
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().expect("thread"), expected);
    }
}

#[test]
fn bad_model_files_are_clear_errors() {
    let lib = tts::ort_lib();
    let missing = Path::new("/nonexistent/silero_vad.onnx");
    let err = SileroVad::load(&lib, missing, 1).err().expect("missing");
    assert!(matches!(err, SileroError::Io { .. }), "{err}");
    assert!(
        err.to_string().contains("/nonexistent/silero_vad.onnx"),
        "{err}"
    );

    let dir = std::env::temp_dir().join(format!("voxwire-silero-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let corrupt = dir.join("silero_vad.onnx");
    std::fs::write(&corrupt, b"not an onnx model").expect("write");
    let err = SileroVad::load(&lib, &corrupt, 1).err().expect("corrupt");
    assert!(matches!(err, SileroError::Model { .. }), "{err}");
    assert!(
        err.to_string().contains(&*corrupt.to_string_lossy()),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    // A valid ONNX model that is not Silero: the Piper voice.
    let (voice, _) = tts::voice_paths();
    let err = SileroVad::load(&lib, &voice, 1).err().expect("wrong model");
    assert!(err.to_string().contains("not a Silero VAD"), "{err}");
    assert!(err.to_string().contains(&*voice.to_string_lossy()), "{err}");
}
