//! The Silero detector in a real call over a real WebSocket (deterministic engines otherwise):
//! a call uses it by default, and loud steady noise that the energy detector would take for
//! speech does not start a turn, while the spoken sentence after it does.

mod common;
#[path = "stt_common/mod.rs"]
mod stt;
#[path = "tts_common/mod.rs"]
mod tts;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use voxwire::audio::vad::silero::SileroVad;
use voxwire::engines::Engines;
use voxwire::models::{manifest, ModelStore};

fn engines_with_silero() -> Engines {
    let model = ModelStore::from_env().file(manifest::SILERO_VAD, "silero_vad.onnx");
    let vad = SileroVad::load(&tts::ort_lib(), &model, 1)
        .unwrap_or_else(|e| panic!("Silero VAD does not load (run `voxwire models fetch`): {e}"));
    let mut engines = Engines::fake();
    engines.vad = Some(Arc::new(vad));
    engines
}

fn pcm16(samples: &[f32]) -> Vec<u8> {
    voxwire::audio::encode::pcm16_bytes(samples)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noise_does_not_start_a_turn_and_speech_does() {
    let server = start_with(voxwire::Config::for_tests(), engines_with_silero()).await;
    let (mut ws, _) = server.connect("alice").await;
    send(&mut ws, json!({"type": "start_call"})).await;
    let started = recv(&mut ws).await;
    assert_eq!(started["type"], "call_started", "{started}");
    assert_eq!(started["turn_detection"]["mode"], "silero", "{started}");

    // 1.5 s of white noise at -20 dBFS (the energy detector's threshold is -40), a sentence,
    // then silence.
    let noise = stt::white_noise(24_000, 0.1, 3);
    let speech = stt::espeak("Can you tell me how to get to the nearest train station?");
    let mut audio = noise.clone();
    audio.extend_from_slice(&speech);
    audio.extend(vec![0.0; 24_000]);
    let speech_start_ms = (noise.len() / 16) as i64;
    let speech_end_ms = ((noise.len() + speech.len()) / 16) as i64;

    for chunk in pcm16(&audio).chunks(100 * 32) {
        send(&mut ws, json!({"type": "audio", "audio": b64(chunk)})).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let frames = recv_until(&mut ws, "speech_stopped").await;
    let starts: Vec<_> = frames
        .iter()
        .filter(|f| f["type"] == "speech_started")
        .collect();
    assert_eq!(starts.len(), 1, "{frames:?}");
    let start = starts[0]["audio_start_ms"]
        .as_i64()
        .expect("audio_start_ms");
    let stop = frames.last().expect("stopped")["audio_end_ms"]
        .as_i64()
        .expect("audio_end_ms");
    println!("speech {speech_start_ms}-{speech_end_ms} ms; detected {start}-{stop} ms");
    // espeak's audio opens and closes with a little silence of its own.
    assert!(
        (speech_start_ms - 50..=speech_start_ms + 300).contains(&start),
        "speech started at {start} ms"
    );
    assert!(
        (speech_end_ms - 500..=speech_end_ms + 300).contains(&stop),
        "speech stopped at {stop} ms"
    );
    assert_alive(&mut ws).await;
}
