//! Semantic turn detection in a real call over a real WebSocket, on real speech (espeak-ng),
//! with the real Silero and Smart Turn models and deterministic engines otherwise: a complete
//! question ends the turn on the model's word, without waiting for the long silence; a sentence
//! with a 700 ms pause after an unfinished clause is one turn, not two; an unfinished clause
//! alone waits for the long silence. Each test waits for the model's answers on `/metrics`
//! (`voxwire_end_of_turn_verdicts_total`) before going on, so no outcome depends on timing.

mod common;
#[path = "tts_common/mod.rs"]
mod tts;
#[path = "turn_common/mod.rs"]
mod turn;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use voxwire::audio::vad::silero::SileroVad;
use voxwire::audio::vad::smart_turn::SmartTurn;
use voxwire::engines::turn::{TurnModel, SESSIONS};
use voxwire::engines::Engines;
use voxwire::models::{manifest, ModelStore};

/// Fake engines with the real speech detector and end-of-turn model, loaded once.
fn engines() -> Engines {
    static ENGINES: OnceLock<Engines> = OnceLock::new();
    ENGINES
        .get_or_init(|| {
            let store = ModelStore::from_env();
            let lib = tts::ort_lib();
            let fix = "(run `voxwire models fetch`)";
            let silero = store.file(manifest::SILERO_VAD, "silero_vad.onnx");
            let vad = SileroVad::load(&lib, &silero, 1)
                .unwrap_or_else(|e| panic!("Silero VAD does not load {fix}: {e}"));
            let smart = store.file(manifest::SMART_TURN, "smart-turn-v3.2-cpu.onnx");
            let model = SmartTurn::load(&lib, &smart, SESSIONS)
                .unwrap_or_else(|e| panic!("Smart Turn does not load {fix}: {e}"));
            let mut engines = Engines::fake();
            engines.vad = Some(Arc::new(vad));
            engines.turn_model = Some(Arc::new(TurnModel::new(model, 8)));
            engines
        })
        .clone()
}

/// A call in the server's default mode, which must be semantic.
async fn semantic_call() -> (TestServer, Ws) {
    let server = start_with(voxwire::Config::for_tests(), engines()).await;
    let (mut ws, _) = server.connect("alice").await;
    send(&mut ws, json!({"type": "start_call"})).await;
    let started = recv(&mut ws).await;
    assert_eq!(started["type"], "call_started", "{started}");
    let td = &started["turn_detection"];
    assert_eq!(td["mode"], "semantic", "{started}");
    assert_eq!(td["semantic_pause_ms"], 150, "{started}");
    assert_eq!(td["semantic_max_silence_ms"], 2000, "{started}");
    (server, ws)
}

/// Streams 16 kHz audio as PCM16 in 100 ms messages, faster than real time.
async fn stream(ws: &mut Ws, audio: &[f32]) {
    for chunk in voxwire::audio::encode::pcm16_bytes(audio).chunks(3200) {
        send(ws, json!({"type": "audio", "audio": b64(chunk)})).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// (complete, incomplete, failed) answers of the end-of-turn model so far.
async fn verdicts(server: &TestServer) -> (u64, u64, u64) {
    let text = reqwest::get(server.url("/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    let count = |verdict: &str| {
        let prefix = format!("voxwire_end_of_turn_verdicts_total{{verdict=\"{verdict}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0, |n| n.trim().parse().expect("a count"))
    };
    (count("complete"), count("incomplete"), count("failed"))
}

/// Waits until the model has answered `n` times in all; the answers.
async fn wait_for_verdicts(server: &TestServer, n: u64) -> (u64, u64, u64) {
    for _ in 0..1500 {
        let v = verdicts(server).await;
        if v.0 + v.1 + v.2 >= n {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the end-of-turn model did not answer {n} times");
}

/// Frames until `until`, asserting that no turn ended among them.
async fn frames_without_a_turn_end(ws: &mut Ws, until: &str) -> Vec<Value> {
    let frames = recv_until(ws, until).await;
    assert!(
        frames.iter().all(|f| f["type"] != "speech_stopped"),
        "{frames:?}"
    );
    frames
}

fn count(frames: &[Value], kind: &str) -> usize {
    frames.iter().filter(|f| f["type"] == kind).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_question_ends_the_turn_on_the_models_word() {
    let (server, mut ws) = semantic_call().await;
    let mut audio = turn::silence(300);
    audio.extend(turn::say("Can you tell me the opening hours on Saturday?"));
    // Enough silence for the model to be asked (200 ms), far less than the 2 s that would end
    // the turn without it; nothing more is sent, so only the model can end this turn.
    audio.extend(turn::silence(300));
    stream(&mut ws, &audio).await;

    let frames = recv_until(&mut ws, "speech_stopped").await;
    assert_eq!(count(&frames, "speech_started"), 1, "{frames:?}");
    let frames = recv_until(&mut ws, "metrics").await;
    let metrics = frames.last().expect("metrics");
    let eot = &metrics["end_of_turn"];
    println!("end of turn: {eot}");
    assert_eq!(eot["by"], "model", "{metrics}");
    assert!(
        eot["probability"].as_f64().expect("probability") > 0.5,
        "{metrics}"
    );
    assert!(eot["model_ms"].as_f64().is_some(), "{metrics}");
    assert_eq!(verdicts(&server).await, (1, 0, 0));
    assert_alive(&mut ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_after_an_unfinished_clause_does_not_end_the_turn() {
    let (server, mut ws) = semantic_call().await;
    let sentence = turn::say_with_pause("Can you tell me", "the opening hours on Saturday?");
    let mut first = turn::silence(300);
    first.extend_from_slice(&sentence.before);
    first.extend(turn::silence(700));
    stream(&mut ws, &first).await;
    // The model judges the pause before the caller goes on.
    let (complete, incomplete, failed) = wait_for_verdicts(&server, 1).await;
    assert_eq!(
        (complete, incomplete, failed),
        (0, 1, 0),
        "\"Can you tell me\" followed by a pause was taken for a whole turn"
    );
    send(&mut ws, json!({"type": "ping", "id": 1})).await;
    let frames = frames_without_a_turn_end(&mut ws, "pong").await;
    assert_eq!(count(&frames, "speech_started"), 1, "{frames:?}");

    let mut rest = sentence.after.clone();
    rest.extend(turn::silence(300));
    stream(&mut ws, &rest).await;
    let frames = recv_until(&mut ws, "speech_stopped").await;
    assert_eq!(
        count(&frames, "speech_started"),
        0,
        "one utterance: {frames:?}"
    );
    let frames = recv_until(&mut ws, "metrics").await;
    assert_eq!(count(&frames, "speech_started"), 0, "{frames:?}");
    let metrics = frames.last().expect("metrics");
    assert_eq!(metrics["end_of_turn"]["by"], "model", "{metrics}");
    // The one turn holds the whole sentence: the fake recogniser reports its length.
    let transcript = frames
        .iter()
        .find(|f| f["type"] == "transcript" && f["is_final"] == true)
        .expect("a final transcript");
    let seconds: f64 = transcript["text"]
        .as_str()
        .and_then(|t| t.strip_prefix("audio of "))
        .and_then(|t| t.strip_suffix(" seconds"))
        .and_then(|t| t.parse().ok())
        .expect("the fake recogniser's text");
    let spoken = (sentence.before.len() + 16 * 700 + sentence.after.len()) as f64 / 16_000.0;
    assert!(seconds >= spoken - 0.1, "{seconds} s of {spoken} s");
    assert_eq!(verdicts(&server).await, (1, 1, 0));
    assert_alive(&mut ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_clause_waits_for_the_long_silence() {
    let (server, mut ws) = semantic_call().await;
    let mut audio = turn::silence(300);
    audio.extend(turn::say("I'm calling because"));
    audio.extend(turn::silence(300));
    stream(&mut ws, &audio).await;
    assert_eq!(wait_for_verdicts(&server, 1).await, (0, 1, 0));
    send(&mut ws, json!({"type": "ping", "id": 1})).await;
    frames_without_a_turn_end(&mut ws, "pong").await;

    // The rest of the 2 s: the turn ends on silence.
    stream(&mut ws, &turn::silence(1800)).await;
    recv_until(&mut ws, "speech_stopped").await;
    let frames = recv_until(&mut ws, "metrics").await;
    let eot = &frames.last().expect("metrics")["end_of_turn"];
    assert_eq!(eot["by"], "silence", "{eot}");
    assert!(
        eot["probability"].as_f64().expect("probability") < 0.5,
        "{eot}"
    );
    assert_alive(&mut ws).await;
}

#[tokio::test]
async fn semantic_mode_needs_the_model() {
    let server = start().await;
    let (mut ws, _) = server.call("alice", json!({})).await;
    send(
        &mut ws,
        json!({"type": "update_call", "turn_detection": {"mode": "semantic"}}),
    )
    .await;
    let err = recv(&mut ws).await;
    assert_eq!(err["code"], "invalid_setting", "{err}");
    assert!(
        err["message"].as_str().unwrap_or("").contains("semantic"),
        "{err}"
    );
    // The timing settings can be changed in any mode, and are checked.
    send(
        &mut ws,
        json!({"type": "update_call", "turn_detection":
            {"semantic_pause_ms": 300, "semantic_max_silence_ms": 1500}}),
    )
    .await;
    let updated = recv(&mut ws).await;
    assert_eq!(updated["type"], "call_updated", "{updated}");
    assert_eq!(updated["turn_detection"]["semantic_pause_ms"], 300);
    assert_eq!(updated["turn_detection"]["semantic_max_silence_ms"], 1500);
}
