//! Real-time conversation with every local engine and the Silero detector, on spoken audio
//! streamed in real time: a turn yields speech events, partial and final transcripts, streamed
//! reply text and audio, and metrics; talking over the reply interrupts it and history keeps
//! only what was played; a cough-length noise does not interrupt.

#[path = "stt_common/mod.rs"]
mod stt;

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use voxwire::Config;

fn pcm16(samples: &[f32]) -> Vec<u8> {
    voxwire::audio::encode::pcm16_bytes(samples)
}

/// Streams 16 kHz audio as a microphone would: `chunk_ms` chunks, each sent when it is over.
async fn stream_live(ws: &mut Ws, samples: &[f32], chunk_ms: u64) {
    let mut next = tokio::time::Instant::now();
    for c in samples.chunks((16 * chunk_ms) as usize) {
        next += Duration::from_millis(chunk_ms);
        tokio::time::sleep_until(next).await;
        send(ws, json!({"type": "audio", "audio": b64(&pcm16(c))})).await;
    }
}

fn silence(ms: usize) -> Vec<f32> {
    vec![0.0; ms * 16]
}

fn of_type<'a>(frames: &'a [Value], t: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == t).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoken_turn_streams_every_stage() {
    let server = start_with(Config::for_tests(), local_engines()).await;
    let (mut ws, _) = server.call("alice", json!({})).await;
    let said = "Please schedule a meeting with the marketing team for next Tuesday afternoon.";
    let mut audio = silence(500);
    audio.extend(stt::espeak(said));
    audio.extend(silence(1500));
    // Frames queue up in the socket while the audio streams.
    stream_live(&mut ws, &audio, 500).await;
    let frames = recv_until(&mut ws, "metrics").await;
    let kinds: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    println!("{kinds:?}");
    let started = of_type(&frames, "speech_started");
    assert_eq!(started.len(), 1, "{kinds:?}");
    let start_ms = started[0]["audio_start_ms"].as_u64().unwrap();
    assert!(
        (400..=800).contains(&start_ms),
        "speech starts at 500 ms: {}",
        started[0]
    );
    let item = started[0]["item_id"].clone();
    let transcripts = of_type(&frames, "transcript");
    let partials: Vec<_> = transcripts
        .iter()
        .filter(|t| t["is_final"] == false)
        .collect();
    assert!(!partials.is_empty(), "no partial transcript: {kinds:?}");
    let fin = transcripts.iter().find(|t| t["is_final"] == true).unwrap();
    assert_eq!(fin["item_id"], item);
    let heard = fin["text"].as_str().unwrap();
    let wer = stt::wer(said, heard);
    assert!(wer <= 0.25, "heard {heard:?} (WER {wer})");
    let stop = kinds.iter().position(|k| *k == "speech_stopped").unwrap();
    let first_partial = kinds.iter().position(|k| *k == "transcript").unwrap();
    assert!(first_partial < stop, "a partial while speaking: {kinds:?}");
    let deltas = frames
        .iter()
        .filter(|f| f["type"] == "response" && f["is_final"] == false)
        .count();
    assert!(deltas >= 2, "reply streamed in pieces: {kinds:?}");
    assert!(!of_type(&frames, "audio_response").is_empty());
    let m = frames.last().unwrap();
    println!("{m}");
    for key in [
        "end_of_speech_ms",
        "stt_ms",
        "llm_first_token_ms",
        "tts_first_audio_ms",
        "voice_to_voice_ms",
    ] {
        assert!(
            m[key].as_f64().is_some_and(|v| v >= 0.0),
            "metrics lack {key}: {m}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn talking_over_the_reply_interrupts_it_and_history_keeps_what_was_played() {
    let server = start_with(Config::for_tests(), local_engines()).await;
    let (mut ws, call_id) = server.call("alice", json!({})).await;
    send(
        &mut ws,
        json!({"type": "text", "text": "Tell me everything about your opening hours, prices and services."}),
    )
    .await;
    let before = recv_until(&mut ws, "audio_response").await;
    let item = before.last().unwrap()["item_id"].clone();
    // The caller talks over the reply, streaming live.
    let mut audio = stt::espeak("Wait, wait, I have another question.");
    audio.extend(silence(1000));
    stream_live(&mut ws, &audio, 100).await;
    let frames = recv_until(&mut ws, "interrupted").await;
    let interrupted = frames.last().unwrap().clone();
    assert_eq!(interrupted["turn_id"], 1);
    assert_eq!(interrupted["item_id"], item);
    let sent_ms: f64 = before
        .iter()
        .chain(frames.iter())
        .filter(|f| f["type"] == "audio_response")
        .map(|f| {
            let bytes =
                voxwire::audio::decode::base64_decode(f["audio"].as_str().unwrap()).unwrap();
            bytes.len() as f64 / 2.0 / f["sample_rate"].as_f64().unwrap() * 1000.0
        })
        .sum();
    let played = interrupted["played_ms"].as_f64().unwrap();
    println!("interrupted after {played} ms of {sent_ms} ms sent: {interrupted}");
    assert!(played <= sent_ms + 1.0);
    // Nothing more of turn 1 but its end marker; the caller's words are turn 2.
    let after = recv_until(&mut ws, "metrics").await;
    assert!(
        after
            .iter()
            .all(|f| f["turn_id"] != 1
                || (f["type"] == "response_done" && f["reason"] == "interrupted")),
        "turn 1 frames after `interrupted`: {:?}",
        after.iter().map(|f| &f["type"]).collect::<Vec<_>>()
    );
    let fin = after
        .iter()
        .find(|f| f["type"] == "transcript" && f["is_final"] == true)
        .unwrap();
    let wer = stt::wer(
        "Wait, wait, I have another question.",
        fin["text"].as_str().unwrap(),
    );
    assert!(wer <= 0.4, "{fin}");
    // History: the question, what was heard of the reply (exactly the `interrupted` text), the
    // caller's interruption, the new reply.
    let h = history(&server, &call_id, "alice");
    println!("{h:?}");
    let kept = interrupted["text"].as_str().unwrap();
    let assistant: Vec<_> = h.iter().filter(|(r, _)| r == "Assistant").collect();
    if kept.is_empty() {
        assert_eq!(h[1].0, "User", "nothing heard, nothing kept: {h:?}");
    } else {
        assert_eq!(assistant[0].1, kept);
    }
    let full: String = before
        .iter()
        .chain(frames.iter())
        .filter(|f| f["type"] == "response" && f["is_final"] == false)
        .filter(|f| f["turn_id"] == 1)
        .map(|f| f["delta"].as_str().unwrap())
        .collect();
    assert!(
        kept.split_whitespace().count() <= full.split_whitespace().count(),
        "kept {kept:?} of {full:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cough_length_noise_does_not_interrupt() {
    let server = start_with(Config::for_tests(), local_engines()).await;
    let (mut ws, _) = server.call("alice", json!({})).await;
    send(
        &mut ws,
        json!({"type": "text", "text": "What are your opening hours?"}),
    )
    .await;
    recv_until(&mut ws, "audio_response").await;
    // A 250 ms noise burst with a fast decay, like a cough, then quiet.
    let mut seed = 12345u32;
    let mut cough: Vec<f32> = (0..4000)
        .map(|i| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let white = (seed >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0;
            white * 0.5 * (-(i as f32) / 1500.0).exp()
        })
        .collect();
    cough.extend(silence(1200));
    stream_live(&mut ws, &cough, 100).await;
    let frames = recv_until(&mut ws, "response_done").await;
    assert!(
        of_type(&frames, "interrupted").is_empty(),
        "{:?}",
        frames.iter().map(|f| &f["type"]).collect::<Vec<_>>()
    );
    assert_eq!(frames.last().unwrap()["reason"], "completed");
    send(&mut ws, json!({"type": "ping", "id": 1})).await;
    let frames = recv_until(&mut ws, "pong").await;
    assert!(
        frames.iter().all(|f| f["type"] != "transcript"),
        "the cough became a turn: {frames:?}"
    );
}
