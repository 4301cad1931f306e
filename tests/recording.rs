//! Call recordings with every local engine on spoken audio streamed in real time: the notice
//! opens the recording, the caller's speech is on the left, what the caller heard on the right
//! (a reply cut by the caller stops where playback stopped), the file is as long as the call
//! and seekable over HTTP; a call asked unrecorded, and a caller who opts out, leave no file.

#[path = "stt_common/mod.rs"]
mod stt;

mod common;
mod store_common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use store_common::Db;
use tokio_util::sync::CancellationToken;
use voxwire::Config;

const AGENTS: &str = r#"
default = "front-desk"

[[agent]]
name = "front-desk"
system_prompt = "You are the receptionist of a dental practice. Answer in two or three sentences."
greeting = "How can I help?"
record = true
recording_notice = "This call is recorded for quality and training."
max_tokens = 80

[[agent]]
name = "plain"
system_prompt = "You answer briefly."
"#;

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

/// Milliseconds of reply audio in `frames`.
fn audio_ms(frames: &[Value]) -> f64 {
    frames
        .iter()
        .filter(|f| f["type"] == "audio_response")
        .map(|f| {
            let bytes =
                voxwire::audio::decode::base64_decode(f["audio"].as_str().unwrap()).unwrap();
            bytes.len() as f64 / 2.0 / f["sample_rate"].as_f64().unwrap() * 1000.0
        })
        .sum()
}

/// Whether a 20 ms window is louder than -40 dBFS.
fn loud(w: &[f32]) -> bool {
    (w.iter().map(|s| s * s).sum::<f32>() / w.len() as f32).sqrt() > 0.01
}

/// 20 ms windows of `x` louder than -40 dBFS, in ms.
fn active_ms(x: &[f32]) -> f64 {
    x.chunks(320).filter(|w| loud(w)).count() as f64 * 20.0
}

async fn get(
    server: &TestServer,
    path: &str,
    token: &str,
    range: Option<&str>,
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .get(server.url(path))
        .bearer_auth(token);
    if let Some(r) = range {
        req = req.header("range", r);
    }
    req.send().await.unwrap()
}

async fn transcribe(server: &TestServer, audio: &[f32]) -> String {
    let stt = server.state.call_services.engines.stt.clone();
    let audio: Arc<[f32]> = audio.into();
    stt.transcribe(audio, CancellationToken::new())
        .await
        .unwrap()
        .text
        .to_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_call_holds_the_notice_both_sides_and_only_what_was_heard() {
    let db = Db::sqlite();
    let dir = std::env::temp_dir().join(format!("voxwire-recordings-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = Config::for_tests();
    config.agents = voxwire::agents::Agents::parse(AGENTS).unwrap();
    config.store.recordings_dir = dir.clone();
    let server = start_with_store(config, local_engines(), db.store().await).await;
    let token = server.token("alice");

    let began = std::time::Instant::now();
    let (mut ws, call_id) = server.call("alice", json!({})).await;
    // The notice comes first, before the greeting, and the caller's microphone streams while
    // it plays.
    let opening = recv_until(&mut ws, "response_done").await;
    let said: String = opening
        .iter()
        .filter(|f| f["type"] == "response" && f["is_final"] == true)
        .map(|f| f["text"].as_str().unwrap().to_string())
        .collect();
    assert!(
        said.starts_with("This call is recorded for quality and training."),
        "{said}"
    );
    let opening_ms = audio_ms(&opening);
    let played = began.elapsed().as_millis() as f64;
    stream_live(
        &mut ws,
        &silence((opening_ms - played).max(0.0) as usize + 500),
        100,
    )
    .await;

    // The caller asks; the reply starts; the caller talks over it.
    let mut question = stt::espeak("What time do you open on Saturday?");
    question.extend(silence(1200));
    stream_live(&mut ws, &question, 100).await;
    let before = recv_until(&mut ws, "audio_response").await;
    let mut talk = silence(700);
    talk.extend(stt::espeak("Wait, wait, stop please."));
    stream_live(&mut ws, &talk, 100).await;
    let cut = recv_until(&mut ws, "interrupted").await;
    let interrupted = cut.last().unwrap().clone();
    let played_ms = interrupted["played_ms"].as_f64().unwrap();
    let sent_ms = audio_ms(&before) + audio_ms(&cut);
    println!("reply: {played_ms} ms played of {sent_ms} ms sent");
    assert!(
        sent_ms - played_ms > 500.0,
        "the reply was cut with audio unplayed"
    );
    send(&mut ws, json!({"type": "end_call"})).await;
    recv_until(&mut ws, "call_ended").await;
    let call_ms = began.elapsed().as_millis() as f64;

    // The file is finished once its sizes match its length.
    let path = dir.join(format!("{call_id}.wav"));
    let mut spec = None;
    for _ in 0..100 {
        if let Ok(r) = hound::WavReader::open(&path) {
            let expected = (std::fs::metadata(&path).unwrap().len() - 44) / 4;
            if u64::from(r.duration()) == expected && expected > 0 {
                spec = Some(r.spec());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let spec = spec.expect("a finished recording");
    assert_eq!((spec.channels, spec.sample_rate), (2, 16_000));

    // Over HTTP, whole and by range.
    let whole = get(
        &server,
        &format!("/api/calls/{call_id}/recording"),
        &token,
        None,
    )
    .await;
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["content-type"], "audio/wav");
    let bytes = whole.bytes().await.unwrap();
    let part = get(
        &server,
        &format!("/api/calls/{call_id}/recording"),
        &token,
        Some("bytes=44-143"),
    )
    .await;
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap(), bytes[44..144]);
    let call: Value = get(&server, &format!("/api/calls/{call_id}"), &token, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(call["recording"], true);
    let other = server.token("mallory");
    let refused = get(
        &server,
        &format!("/api/calls/{call_id}/recording"),
        &other,
        None,
    )
    .await;
    assert_eq!(refused.status(), 404);

    let reader = hound::WavReader::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let samples: Vec<f32> = reader
        .into_samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32768.0)
        .collect();
    let left: Vec<f32> = samples.iter().step_by(2).copied().collect();
    let right: Vec<f32> = samples.iter().skip(1).step_by(2).copied().collect();
    let file_ms = left.len() as f64 / 16.0;
    println!("file {file_ms:.0} ms, call {call_ms:.0} ms");
    assert!((file_ms - call_ms).abs() < 1500.0, "{file_ms} vs {call_ms}");

    // The notice opens the right channel; the caller's question is on the left.
    let start = transcribe(
        &server,
        &right[..(opening_ms as usize * 16).min(right.len())],
    )
    .await;
    println!("right channel opens with {start:?}");
    assert!(start.contains("recorded"), "{start}");
    let caller = transcribe(&server, &left).await;
    println!("left channel: {caller:?}");
    assert!(caller.contains("saturday"), "{caller}");
    // After the opening, the right channel holds what was heard of the reply (from its first
    // to its last sound), not all that was sent of it.
    let after = &right[((opening_ms as usize + 200) * 16).min(right.len())..];
    let loud: Vec<usize> = after
        .chunks(320)
        .enumerate()
        .filter(|(_, w)| loud(w))
        .map(|(i, _)| i)
        .collect();
    let span = match (loud.first(), loud.last()) {
        (Some(a), Some(b)) => (b - a + 1) as f64 * 20.0,
        _ => 0.0,
    };
    println!("reply heard on the right: {span} ms (played {played_ms} ms, sent {sent_ms} ms)");
    assert!((span - played_ms).abs() < 500.0, "{span} vs {played_ms}");
    assert!(span < sent_ms - 500.0);
    // The caller never speaks on the right, the agent never on the left.
    assert!(active_ms(&left) < file_ms * 0.6);

    // The stored record: the notice given, when, in its words.
    let svc = &server.state.call_services;
    assert!(svc.writer.flush(Duration::from_secs(10)).await);
    let log = svc.store.events(&call_id, 0, 1000).await.unwrap();
    let notice = log.iter().find(|e| e.kind == "recording_started").unwrap();
    assert_eq!(
        notice.data["notice"],
        "This call is recorded for quality and training."
    );
    assert!(notice.at_ms > 0);

    // A call asked unrecorded, and one whose caller opts out, leave no file.
    let (mut ws, quiet) = server.call("alice", json!({"record": false})).await;
    let opening = recv_until(&mut ws, "response_done").await;
    assert!(!opening
        .iter()
        .any(|f| f["text"].as_str().is_some_and(|t| t.contains("recorded"))));
    send(&mut ws, json!({"type": "end_call"})).await;
    recv_until(&mut ws, "call_ended").await;
    let (mut ws, out) = server.call("alice", json!({})).await;
    recv_until(&mut ws, "response_done").await;
    send(
        &mut ws,
        json!({"type": "text", "text": "Please do not record this call."}),
    )
    .await;
    recv_until(&mut ws, "response_done").await;
    send(&mut ws, json!({"type": "end_call"})).await;
    recv_until(&mut ws, "call_ended").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for id in [&quiet, &out] {
        let r = get(&server, &format!("/api/calls/{id}/recording"), &token, None).await;
        assert_eq!(r.status(), 404, "{id}");
        let call: Value = get(&server, &format!("/api/calls/{id}"), &token, None)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(call["recording"], false);
        assert!(!dir.join(format!("{id}.wav")).exists());
    }
    assert!(svc.writer.flush(Duration::from_secs(10)).await);
    let log = svc.store.events(&out, 0, 1000).await.unwrap();
    assert!(log.iter().any(|e| e.kind == "recording_opted_out"));

    // An agent that does not record refuses a call asked recorded.
    let (mut ws, _) = server.connect("alice").await;
    send(
        &mut ws,
        json!({"type": "start_call", "agent": "plain", "record": true}),
    )
    .await;
    let refused = recv(&mut ws).await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["code"], "invalid_setting");
}
