//! The HTTP routes: push-to-talk (raw and multipart bodies, garbage, limits, history), health,
//! metrics, the static page, and graceful shutdown of live calls.

mod common;

use common::*;
use serde_json::{json, Value};

async fn ptt(server: &TestServer, body: Vec<u8>, content_type: &str, query: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(server.url(&format!("/api/voice/turn{query}")))
        .bearer_auth(server.token("alice"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn push_to_talk_returns_transcript_reply_audio_and_timings() {
    let server = start().await;
    let wav = wav_file(&tone(1_000, 44_100, 0.3), 44_100);
    let (status, body) = ptt(&server, wav, "audio/wav", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["transcript"], "audio of 1.0 seconds");
    assert_eq!(
        body["response"],
        "You said: audio of 1.0 seconds. That is turn 1."
    );
    let audio = voxwire::audio::decode::base64_decode(body["audio"].as_str().unwrap()).unwrap();
    let decoded = voxwire::audio::decode::decode_wav(&audio).unwrap();
    assert_eq!(decoded.sample_rate, 16_000);
    assert!(decoded.samples.len() > 1_000);
    assert!(body["timings"]["stt_ms"].is_number());
    assert!(body["timings"]["decode_ms"].is_number());

    // Continue the same call: history carries over.
    let call_id = body["call_id"].as_str().unwrap().to_string();
    let wav = wav_file(&tone(500, 16_000, 0.3), 16_000);
    let (status, body) = ptt(&server, wav, "audio/wav", &format!("?call_id={call_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(body["call_id"], call_id.as_str());
    assert_eq!(
        body["response"],
        "You said: audio of 0.5 seconds. That is turn 2."
    );
}

#[tokio::test]
async fn push_to_talk_accepts_multipart() {
    let server = start().await;
    let wav = wav_file(&tone(700, 16_000, 0.3), 16_000);
    let form = reqwest::multipart::Form::new()
        .text("note", "ignored")
        .part(
            "audio",
            reqwest::multipart::Part::bytes(wav)
                .file_name("a.wav")
                .mime_str("audio/wav")
                .unwrap(),
        );
    let r = reqwest::Client::new()
        .post(server.url("/api/voice/turn"))
        .bearer_auth(server.token("alice"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["transcript"], "audio of 0.7 seconds");
}

#[tokio::test]
async fn push_to_talk_refuses_bad_bodies_with_json_errors() {
    let mut config = voxwire::Config::for_tests();
    config.max_upload_bytes = 64 * 1024;
    let server = start_with(config, voxwire::engines::Engines::fake()).await;
    let (s, b) = ptt(&server, b"definitely not audio".to_vec(), "audio/wav", "").await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (422, Some("invalid_audio"))
    );
    let (s, b) = ptt(&server, vec![], "audio/wav", "").await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (400, Some("invalid_audio"))
    );
    let (s, b) = ptt(&server, vec![0u8; 100_000], "audio/wav", "").await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    let (s, b) = ptt(
        &server,
        wav_file(&tone(300, 16_000, 0.3), 16_000),
        "audio/wav",
        "?call_id=call_nope",
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (404, Some("call_not_found"))
    );
    let (s, b) = ptt(
        &server,
        b"--x\r\n".to_vec(),
        "multipart/form-data; boundary=x",
        "",
    )
    .await;
    assert_eq!(s, 400, "{b}");
    let r = reqwest::Client::new()
        .post(server.url("/api/voice/turn"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The server is still fine.
    let (s, _) = ptt(
        &server,
        wav_file(&tone(300, 16_000, 0.3), 16_000),
        "audio/wav",
        "",
    )
    .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn health_metrics_and_static_page() {
    let server = start().await;
    let (mut ws, _) = server.call("alice", json!({})).await;
    send(&mut ws, json!({"type": "text", "text": "hi"})).await;
    recv_until(&mut ws, "metrics").await;
    send_raw(&mut ws, "nope").await;
    recv_until(&mut ws, "error").await;

    let health: Value = reqwest::get(server.url("/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["live_calls"], 1);
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("voxwire_turns_total 1"), "{metrics}");
    assert!(
        metrics.contains("voxwire_errors_total{code=\"invalid_json\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("voxwire_turn_latency_ms_count{stage=\"total\"} 1"),
        "{metrics}"
    );
    let page = reqwest::get(server.url("/")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("voxwire"));
}

#[tokio::test]
async fn shutdown_ends_live_calls_and_closes_sockets() {
    let mut server = start().await;
    let (mut ws, call_id) = server.call("alice", json!({})).await;
    server.stop.take().unwrap().send(()).unwrap();
    let ended = recv_until(&mut ws, "call_ended").await;
    let ended = ended.last().unwrap();
    assert_eq!(ended["call_id"], call_id.as_str());
    assert_eq!(ended["reason"], "server_shutdown");
    assert_eq!(recv_close(&mut ws).await, Some(1001));
    let finished = tokio::time::timeout(std::time::Duration::from_secs(10), server.task).await;
    assert!(finished.is_ok(), "server did not stop");
}
