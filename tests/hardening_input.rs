//! Hostile values from clients: tokens with absurd or future times, oversized tokens, sample
//! rates that would make resampling expensive, and push-to-talk bodies at and over the limit.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use voxwire::engines::Engines;
use voxwire::Config;

const SECRET: &str = "test-secret-0123456789abcdef";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Opens `/ws` with `token`: `Ok(connected frame)` or `Err((status, body))`.
async fn open(server: &TestServer, token: &str) -> Result<Value, (u16, String)> {
    let mut req = server.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((mut ws, _)) => {
            let hello = recv(&mut ws).await;
            // The connection must survive its first call, where the token's expiry is used.
            send(&mut ws, json!({"type": "start_call"})).await;
            let started = recv(&mut ws).await;
            assert_eq!(started["type"], "call_started", "{started}");
            assert_alive(&mut ws).await;
            Ok(hello)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).to_string())
                .unwrap_or_default();
            Err((resp.status().as_u16(), body))
        }
        Err(e) => panic!("unexpected failure: {e}"),
    }
}

fn refused(r: Result<Value, (u16, String)>, says: &str) {
    match r {
        Ok(hello) => panic!("accepted: {hello}"),
        Err((status, body)) => {
            assert_eq!(status, 401, "{body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["error"]["code"], "unauthorized");
            let message = v["error"]["message"].as_str().unwrap();
            assert!(message.contains(says), "{message}");
        }
    }
}

#[tokio::test]
async fn an_expiry_at_the_end_of_time_is_refused_not_a_crash() {
    let server = start().await;
    let token = sign(json!({"sub": "mallory", "exp": u64::MAX}));
    refused(open(&server, &token).await, "lifetime");
    // Just over the lifetime limit, and just under it.
    let max = server.state.config.net.max_token_ttl.as_secs();
    let token = sign(json!({"sub": "mallory", "exp": now() + max + 60}));
    refused(open(&server, &token).await, "lifetime");
    let token = sign(json!({"sub": "bob", "exp": now() + max - 60}));
    assert!(open(&server, &token).await.is_ok());
    // Issued long ago with a lifetime over the limit, even if little of it is left.
    let token = sign(json!({"sub": "mallory", "iat": now() - max, "exp": now() + 3600}));
    refused(open(&server, &token).await, "lifetime");
    // The server is fine.
    let (mut ws, _) = server.call("alice", json!({})).await;
    assert_alive(&mut ws).await;
}

#[tokio::test]
async fn a_token_is_refused_before_its_nbf() {
    let server = start().await;
    let token = sign(json!({"sub": "eve", "exp": now() + 7200, "nbf": now() + 3600}));
    refused(open(&server, &token).await, "not valid yet");
    let token = sign(json!({"sub": "eve", "exp": now() + 7200, "nbf": now() - 10}));
    assert!(open(&server, &token).await.is_ok());
}

#[tokio::test]
async fn an_oversized_token_is_refused() {
    let server = start().await;
    let token = sign(json!({"sub": "x".repeat(5_000), "exp": now() + 60}));
    refused(open(&server, &token).await, "larger than 4096 bytes");
    let r = reqwest::Client::new()
        .post(server.url("/api/voice/turn"))
        .bearer_auth(&token)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

async fn expect_error(ws: &mut Ws, code: &str) -> Value {
    let frames = recv_until(ws, "error").await;
    let e = frames.last().unwrap().clone();
    assert_eq!(e["code"], code, "{e}");
    assert_eq!(e["fatal"], false, "{e}");
    e
}

#[tokio::test]
async fn a_call_keeps_one_sample_rate() {
    let server = start().await;
    let (mut ws, _) = server
        .call(
            "alice",
            json!({"audio_format": {"encoding": "wav", "sample_rate": 16000}}),
        )
        .await;
    // Chunks at changing odd rates each used to build a new resampler on the runtime.
    for rate in [95_003u32, 95_009, 22_050] {
        let wav = wav_file(&tone(100, rate, 0.3), rate);
        send(&mut ws, json!({"type": "audio", "audio": b64(&wav)})).await;
        let e = expect_error(&mut ws, "invalid_audio").await;
        assert!(
            e["message"].as_str().unwrap().contains(&rate.to_string()),
            "{e}"
        );
    }
    // Chunks at the call's rate are heard.
    let wav = wav_file(&tone(800, 16_000, 0.3), 16_000);
    send(&mut ws, json!({"type": "audio", "audio": b64(&wav)})).await;
    send(&mut ws, json!({"type": "commit"})).await;
    let frames = recv_until(&mut ws, "response_done").await;
    let t = frames.iter().find(|f| f["type"] == "transcript").unwrap();
    assert_eq!(t["text"], "audio of 0.8 seconds");

    // Odd rates are refused when the call starts, in and out.
    let (mut ws, _) = server.connect("bob").await;
    for format in ["audio_format", "output_format"] {
        let mut start = json!({"type": "start_call"});
        start[format] = json!({"encoding": "pcm16", "sample_rate": 95003});
        send(&mut ws, start).await;
        let e = expect_error(&mut ws, "unsupported_format").await;
        assert!(e["message"].as_str().unwrap().contains("44100"), "{e}");
    }
    assert_alive(&mut ws).await;
}

async fn ptt_status(server: &TestServer, req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.bearer_auth(server.token("alice")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn multipart_and_raw_uploads_share_one_limit() {
    let mut config = Config::for_tests();
    config.max_upload_bytes = 4 << 20;
    config.limits.max_turn_audio_ms = 120_000;
    let server = start_with(config, Engines::fake()).await;
    // 95 s at 16 kHz: a 2.9 MiB WAV, over axum's default multipart limit of 2 MB.
    let wav = wav_file(&tone(95_000, 16_000, 0.3), 16_000);
    assert!(wav.len() > 2_900_000 && wav.len() < 4 << 20);
    let client = reqwest::Client::new();
    let url = server.url("/api/voice/turn");
    let raw = client
        .post(&url)
        .header("content-type", "audio/wav")
        .body(wav.clone());
    let (s, b) = ptt_status(&server, raw).await;
    assert_eq!(s, 200, "{b}");
    let part = reqwest::multipart::Part::bytes(wav)
        .file_name("a.wav")
        .mime_str("audio/wav")
        .unwrap();
    let form = reqwest::multipart::Form::new().part("audio", part);
    let (s, b) = ptt_status(&server, client.post(&url).multipart(form)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["transcript"], "audio of 95.0 seconds");

    // Over the limit: 413 either way.
    let big = vec![0u8; (4 << 20) + 1];
    let raw = client
        .post(&url)
        .header("content-type", "audio/wav")
        .body(big.clone());
    let (s, b) = ptt_status(&server, raw).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    let part = reqwest::multipart::Part::bytes(big).file_name("a.wav");
    let form = reqwest::multipart::Form::new().part("audio", part);
    let (s, b) = ptt_status(&server, client.post(&url).multipart(form)).await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
}

#[tokio::test]
async fn a_body_that_trickles_in_is_cut_off() {
    let mut config = Config::for_tests();
    config.net.body_timeout = Duration::from_secs(1);
    let server = start_with(config, Engines::fake()).await;
    // A body stream that sends a little and then nothing.
    let stream = futures::stream::unfold(0u32, |n| async move {
        if n > 0 {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Some((Ok::<_, std::io::Error>(vec![0u8; 16]), n + 1))
    });
    let req = reqwest::Client::new()
        .post(server.url("/api/voice/turn"))
        .header("content-type", "audio/wav")
        .body(reqwest::Body::wrap_stream(stream));
    let (s, b) = tokio::time::timeout(Duration::from_secs(20), ptt_status(&server, req))
        .await
        .expect("the server waited for the body");
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (408, Some("request_timeout"))
    );
}

#[tokio::test]
async fn a_large_chunk_is_heard_whole() {
    // 3 s at 48 kHz in one frame (384 KB of base64): decoded on a blocking thread.
    let server = start().await;
    let (mut ws, _) = server
        .call(
            "alice",
            json!({"audio_format": {"encoding": "pcm16", "sample_rate": 48000},
                   "turn_detection": {"mode": "manual"}}),
        )
        .await;
    let pcm = tone_pcm16(3_000, 48_000, 0.3);
    send(&mut ws, json!({"type": "audio", "audio": b64(&pcm)})).await;
    send(&mut ws, json!({"type": "commit"})).await;
    let frames = recv_until(&mut ws, "response_done").await;
    let t = frames.iter().find(|f| f["type"] == "transcript").unwrap();
    // The resampler holds back its last block until more audio comes (as in other tests).
    let text = t["text"].as_str().unwrap();
    assert!(
        text == "audio of 2.9 seconds" || text == "audio of 3.0 seconds",
        "{text}"
    );
}
