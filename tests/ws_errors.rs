//! Bad input over the socket: each case gets an `error` frame with a stable code, and the call
//! keeps working afterwards.

mod common;

use common::*;
use serde_json::json;

async fn expect_error(ws: &mut Ws, code: &str) {
    let frames = recv_until(ws, "error").await;
    let e = frames.last().unwrap();
    assert_eq!(e["code"], code, "{e}");
    assert_eq!(e["fatal"], false, "{e}");
    assert!(!e["message"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn messages_before_start_call_are_refused() {
    let server = start().await;
    let (mut ws, _) = server.connect("alice").await;
    for msg in [
        json!({"type": "audio", "audio": "AAAA"}),
        json!({"type": "commit"}),
        json!({"type": "text", "text": "hi"}),
        json!({"type": "end_call"}),
    ] {
        send(&mut ws, msg).await;
        expect_error(&mut ws, "no_active_call").await;
    }
    assert_alive(&mut ws).await;
}

#[tokio::test]
async fn malformed_frames_get_stable_codes_and_the_call_goes_on() {
    let server = start().await;
    let (mut ws, _) = server.call("alice", json!({})).await;
    send_raw(&mut ws, "{not json").await;
    expect_error(&mut ws, "invalid_json").await;
    send_raw(&mut ws, r#"{"type":"teleport"}"#).await;
    expect_error(&mut ws, "unknown_type").await;
    send_raw(&mut ws, r#"{"no_type":1}"#).await;
    expect_error(&mut ws, "invalid_message").await;
    send_raw(&mut ws, r#"{"type":"text","text":42}"#).await;
    expect_error(&mut ws, "invalid_message").await;
    send(
        &mut ws,
        json!({"type": "audio", "audio": "***not base64***"}),
    )
    .await;
    expect_error(&mut ws, "invalid_base64").await;
    send(&mut ws, json!({"type": "text", "text": "   "})).await;
    expect_error(&mut ws, "empty_turn").await;
    send(&mut ws, json!({"type": "text", "text": "x".repeat(5000)})).await;
    expect_error(&mut ws, "text_too_long").await;
    send(&mut ws, json!({"type": "commit"})).await;
    expect_error(&mut ws, "empty_turn").await;
    send(&mut ws, json!({"type": "start_call"})).await;
    expect_error(&mut ws, "call_already_active").await;
    assert_alive(&mut ws).await;
    // And a real turn still works.
    send(&mut ws, json!({"type": "text", "text": "still there?"})).await;
    let frames = recv_until(&mut ws, "response_done").await;
    assert_eq!(frames.last().unwrap()["reason"], "completed");
}

#[tokio::test]
async fn audio_that_does_not_decode_is_reported() {
    let server = start().await;
    let (mut ws, _) = server
        .call(
            "alice",
            json!({"audio_format": {"encoding": "wav", "sample_rate": 16000}}),
        )
        .await;
    send(
        &mut ws,
        json!({"type": "audio", "audio": b64(b"RIFF garbage that is not a wave file")}),
    )
    .await;
    expect_error(&mut ws, "invalid_audio").await;
    assert_alive(&mut ws).await;
}

#[tokio::test]
async fn bad_start_call_parameters() {
    let server = start().await;
    let (mut ws, _) = server.connect("alice").await;
    send(&mut ws, json!({"type": "start_call", "agent": "nobody"})).await;
    expect_error(&mut ws, "unknown_agent").await;
    send(
        &mut ws,
        json!({"type": "start_call", "audio_format": {"encoding": "pcm16", "sample_rate": 3}}),
    )
    .await;
    expect_error(&mut ws, "unsupported_format").await;
    send(
        &mut ws,
        json!({"type": "start_call", "audio_format": {"encoding": "opus", "sample_rate": 16000}}),
    )
    .await;
    expect_error(&mut ws, "invalid_message").await;
    send(
        &mut ws,
        json!({"type": "start_call", "call_id": "call_doesnotexist"}),
    )
    .await;
    expect_error(&mut ws, "call_not_found").await;
    assert_alive(&mut ws).await;
    send(&mut ws, json!({"type": "start_call"})).await;
    assert_eq!(recv(&mut ws).await["type"], "call_started");
}

#[tokio::test]
async fn oversized_messages_are_refused_without_closing() {
    let mut config = voxwire::Config::for_tests();
    config.limits.max_message_bytes = 4096;
    let server = start_with(config, voxwire::engines::Engines::fake()).await;
    let (mut ws, _) = server.call("alice", json!({})).await;
    send(
        &mut ws,
        json!({"type": "audio", "audio": b64(&vec![0u8; 6000])}),
    )
    .await;
    expect_error(&mut ws, "message_too_large").await;
    assert_alive(&mut ws).await;
    // Far past the limit the socket is closed with 1009 after a fatal error.
    send(
        &mut ws,
        json!({"type": "audio", "audio": b64(&vec![0u8; 40_000])}),
    )
    .await;
    let frames = recv_until(&mut ws, "error").await;
    assert_eq!(frames.last().unwrap()["fatal"], true);
    let ended = recv(&mut ws).await;
    assert_eq!(ended["type"], "call_ended", "{ended}");
    assert_eq!(ended["reason"], "fatal_error", "{ended}");
    assert_eq!(recv_close(&mut ws).await, Some(1009));
}

#[tokio::test]
async fn turn_audio_limit_ends_the_turn() {
    let mut config = voxwire::Config::for_tests();
    config.limits.max_turn_audio_ms = 1_000;
    let server = start_with(config, voxwire::engines::Engines::fake()).await;
    let (mut ws, _) = server.call("alice", json!({})).await;
    stream_pcm16(&mut ws, &tone_pcm16(2_000, 16_000, 0.3), 16_000).await;
    expect_error(&mut ws, "turn_audio_limit").await;
    let frames = recv_until(&mut ws, "response_done").await;
    assert!(frames.iter().any(|f| f["type"] == "transcript"));
    assert_alive(&mut ws).await;
}

#[tokio::test]
async fn calls_per_user_are_limited() {
    let mut config = voxwire::Config::for_tests();
    config.limits.max_calls_per_user = 2;
    let server = start_with(config, voxwire::engines::Engines::fake()).await;
    let (_a, _) = server.call("bob", json!({})).await;
    let (mut b, _) = server.call("bob", json!({})).await;
    let (mut c, _) = server.connect("bob").await;
    send(&mut c, json!({"type": "start_call"})).await;
    expect_error(&mut c, "too_many_calls").await;
    // Another user is unaffected; ending one of bob's calls frees a slot.
    let (_d, _) = server.call("carol", json!({})).await;
    send(&mut b, json!({"type": "end_call"})).await;
    recv_until(&mut b, "call_ended").await;
    send(&mut c, json!({"type": "start_call"})).await;
    assert_eq!(recv(&mut c).await["type"], "call_started");
}

#[tokio::test]
async fn silence_then_commit_yields_no_speech() {
    let server = start().await;
    let (mut ws, _) = server.call("alice", json!({})).await;
    stream_pcm16(&mut ws, &tone_pcm16(1_000, 16_000, 0.0), 16_000).await;
    send(&mut ws, json!({"type": "commit"})).await;
    let frames = recv_until(&mut ws, "response_done").await;
    assert_eq!(frames[0]["type"], "transcript");
    assert_eq!(frames[0]["text"], "");
    assert_eq!(frames.last().unwrap()["reason"], "no_speech");
}
