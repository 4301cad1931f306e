//! Phone calls through Telnyx, with a simulated Telnyx over real sockets and a local fake of its
//! Call Control REST API: a signed `call.initiated` webhook answers the call through the API with
//! a bidirectional PCMU stream to the media socket and a stream pass; a wrong, tampered or stale
//! signature gets 403 and no answer; a media socket without a valid pass is refused. A call
//! with the fake engines hears espeak-ng speech as 20 ms mu-law frames sent at real pace,
//! answers with `media` frames and `mark`s, sends `clear` when the caller talks over a reply,
//! takes keypad presses as a turn, and ends on `stop`, listed under the caller's number; a call
//! ended on the server's side is hung up through the API.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::phone::*;
use common::*;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};
use voxwire::config::Secret;
use voxwire::transport::phone::{Carrier, StreamPass};
use voxwire::Config;

const API_KEY: &str = "KEY-telnyx-api-key-for-tests";
const STREAM: &str = "32DE0DEA-53CB-4B21-89A4-9E1819C043BC";

/// Telnyx's signing key, as the fake holds it; the server has its public half.
fn telnyx_key() -> SigningKey {
    SigningKey::from_bytes(&[11; 32])
}

fn config(api: &str) -> Config {
    let mut c = phone_config(PHONE_AGENTS, |t| &mut t.telnyx_numbers);
    c.telephony.telnyx_public_key = Some(telnyx_key().verifying_key());
    c.telephony.telnyx_api_key = Some(Secret::new(API_KEY));
    c.telephony.telnyx_api_url = api.to_string();
    c
}

/// What the fake REST API was asked: the `Authorization` header, the call, the action and the
/// JSON body.
#[derive(Debug, Clone)]
struct Asked {
    auth: String,
    call: String,
    action: String,
    body: Value,
}

type Log = Arc<std::sync::Mutex<Vec<Asked>>>;

/// A local stand-in for Telnyx's Call Control: it keeps each command and answers 200, or 422
/// with Telnyx's error shape for the call `v3:gone`.
async fn fake_telnyx() -> (String, Log) {
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    let log: Log = Arc::default();
    let route = |State(log): State<Log>,
                 Path((call, action)): Path<(String, String)>,
                 headers: HeaderMap,
                 axum::Json(body): axum::Json<Value>| async move {
        let auth = authorization(&headers);
        // A call that is over, and one whose transfer Telnyx refuses.
        let gone = call == "v3:gone" || (call == "v3:no-transfer" && action == "transfer");
        log.lock().unwrap().push(Asked {
            auth,
            call,
            action,
            body,
        });
        if gone {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(
                    json!({"errors": [{"code": "90018", "title": "Call has already ended",
                    "detail": "This call is no longer active and can't receive commands."}]}),
                ),
            );
        }
        (
            StatusCode::OK,
            axum::Json(json!({"data": {"result": "ok"}})),
        )
    };
    let app = axum::Router::new()
        .route(
            "/v2/calls/{call}/actions/{action}",
            axum::routing::post(route),
        )
        .with_state(log.clone());
    (serve_fake(app).await, log)
}

/// A server with a slow fake voice, and the fake Telnyx API it answers calls through.
async fn server() -> (TestServer, Log) {
    let (api, log) = fake_telnyx().await;
    (start_with(config(&api), slow_voice()).await, log)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A Call Control webhook body.
fn event(kind: &str, call: &str, to: &str) -> String {
    json!({"data": {"record_type": "event", "event_type": kind, "id": "0ccc7b54-4df3-4bca-a65a-3da1ecc777f0",
        "occurred_at": "2026-12-02T16:00:00.000000Z",
        "payload": {"call_control_id": call, "connection_id": "1684641123236054244",
            "call_leg_id": "2dc6fc34-f9e0-11ea-b68e-02420a0f7768", "call_session_id": "2dc1b3c8-f9e0-11ea-bc5a-02420a0f7768",
            "client_state": null, "direction": "incoming", "from": CALLER, "to": to, "state": "parked"}},
        "meta": {"attempt": 1, "delivered_to": format!("{PUBLIC_URL}/telephony/telnyx/voice")}})
    .to_string()
}

/// `telnyx-signature-ed25519` for `body` at `timestamp`, by `key`.
fn sign(key: &SigningKey, timestamp: &str, body: &str) -> String {
    let signed = format!("{timestamp}|{body}");
    base64::engine::general_purpose::STANDARD.encode(key.sign(signed.as_bytes()).to_bytes())
}

async fn webhook(server: &TestServer, body: &str, signed: Option<(&str, &str)>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(server.url("/telephony/telnyx/voice"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some((timestamp, signature)) = signed {
        req = req
            .header("telnyx-timestamp", timestamp)
            .header("telnyx-signature-ed25519", signature);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Sends `body` signed as Telnyx signs it, now.
async fn signed_webhook(server: &TestServer, body: &str) -> (u16, Value) {
    let now = unix_now().to_string();
    let sig = sign(&telnyx_key(), &now, body);
    webhook(server, body, Some((&now, &sig))).await
}

/// Rings `call`: the webhook answers it through the fake API; returns the stream URL.
async fn ring(server: &TestServer, log: &Log, call: &str) -> String {
    let (status, body) = signed_webhook(server, &event("call.initiated", call, NUMBER)).await;
    assert_eq!(status, 200, "{body}");
    let asked = log.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        (asked.call.as_str(), asked.action.as_str()),
        (call, "answer")
    );
    asked.body["stream_url"].as_str().unwrap().to_string()
}

fn pass_of(stream_url: &str) -> String {
    stream_url.split("pass=").nth(1).unwrap().to_string()
}

/// Connects to a stream URL as Telnyx does (the public host replaced by the test server).
async fn connect(server: &TestServer, stream_url: &str) -> Result<Ws, u16> {
    let path = stream_url.strip_prefix("ws://voxwire.test").unwrap();
    match tokio_tungstenite::connect_async(format!("ws://{}{path}", server.addr)).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

async fn start_stream(ws: &mut Ws, call: &str) {
    send_json(ws, json!({"event": "connected", "version": "1.0.0"})).await;
    send_json(
        ws,
        json!({"event": "start", "sequence_number": "1", "stream_id": STREAM,
            "start": {"user_id": "3E6F995F-85F7-4705-9741-53B116D28237", "call_control_id": call,
                "client_state": null, "from": CALLER, "to": NUMBER,
                "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}}}),
    )
    .await;
}

/// `text` spoken by espeak-ng, at 8 kHz.
fn espeak(text: &str) -> Vec<f32> {
    let path: PathBuf = std::env::temp_dir().join(format!(
        "voxwire-telnyx-{}-{}.wav",
        std::process::id(),
        text.len()
    ));
    let status = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "160", "-w"])
        .arg(&path)
        .arg(text)
        .status()
        .expect("running espeak-ng (scripts/setup installs it)");
    assert!(status.success());
    let mut reader = hound::WavReader::open(&path).unwrap();
    let rate = reader.spec().sample_rate;
    let samples: Vec<f32> = reader
        .samples::<i16>()
        .map(|s| f32::from(s.unwrap()) / 32768.0)
        .collect();
    let _ = std::fs::remove_file(&path);
    voxwire::audio::resample::resample(&samples, rate, 8_000).unwrap()
}

/// Sends 8 kHz audio as 20 ms mu-law `media` frames, one every 20 ms, as Telnyx does.
async fn speak(ws: &mut Ws, samples: &[f32]) {
    let bytes = voxwire::audio::encode::mulaw_bytes(samples);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for (i, frame) in bytes.chunks(160).enumerate() {
        tick.tick().await;
        let payload = base64::engine::general_purpose::STANDARD.encode(frame);
        send_json(
            ws,
            json!({"event": "media", "sequence_number": (i + 2).to_string(), "stream_id": STREAM,
                "media": {"track": "inbound", "chunk": (i + 1).to_string(), "timestamp": (i * 20).to_string(), "payload": payload}}),
        )
        .await;
    }
}

/// A mark sent back as Telnyx does.
fn telnyx_mark(mark: &Value) -> Value {
    json!({"event": "mark", "sequence_number": "99", "stream_id": STREAM, "mark": mark})
}

#[tokio::test]
async fn a_signed_webhook_answers_the_call_with_its_media_stream() {
    let (server, log) = server().await;
    let url = ring(&server, &log, "v3:call-100").await;
    let asked = log.lock().unwrap().last().cloned().unwrap();
    assert_eq!(asked.auth, format!("Bearer {API_KEY}"));
    assert_eq!(asked.body["stream_track"], "inbound_track");
    assert_eq!(asked.body["stream_bidirectional_mode"], "rtp");
    assert_eq!(asked.body["stream_bidirectional_codec"], "PCMU");
    assert!(
        url.starts_with("ws://voxwire.test/telephony/telnyx/media?pass="),
        "{url}"
    );
    let pass = StreamPass::verify(&server.state.auth, &pass_of(&url), Carrier::Telnyx).unwrap();
    assert_eq!(
        (pass.call_sid.as_str(), pass.from.as_str(), pass.to.as_str()),
        ("v3:call-100", CALLER, NUMBER)
    );
    assert_eq!(
        (pass.org.as_deref(), pass.agent.as_deref()),
        (Some("acme"), Some("phone"))
    );
    // Not a pass for Twilio's socket, nor a caller's token.
    assert!(StreamPass::verify(&server.state.auth, &pass_of(&url), Carrier::Twilio).is_err());
    let r = reqwest::Client::new()
        .get(server.url("/api/calls"))
        .bearer_auth(pass_of(&url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Wrong key, tampered body, stale or missing timestamp: 403, and Telnyx is not asked.
    let asked_before = log.lock().unwrap().len();
    let body = event("call.initiated", "v3:call-101", NUMBER);
    let now = unix_now().to_string();
    let old = (unix_now() - 600).to_string();
    let good = sign(&telnyx_key(), &now, &body);
    let wrong_key = sign(&SigningKey::from_bytes(&[12; 32]), &now, &body);
    let stale = sign(&telnyx_key(), &old, &body);
    let tampered = body.replace(CALLER, "+15559999999");
    for (body, signed) in [
        (&body, Some((now.as_str(), wrong_key.as_str()))),
        (&tampered, Some((now.as_str(), good.as_str()))),
        (&body, Some((old.as_str(), stale.as_str()))),
        (&body, Some(("", good.as_str()))),
        (&body, None),
    ] {
        let (status, answer) = webhook(&server, body, signed).await;
        assert_eq!(status, 403, "{answer}");
        assert_eq!(answer["error"]["code"], "forbidden");
    }
    assert_eq!(log.lock().unwrap().len(), asked_before);
    assert_eq!(server.state.call_services.metrics.live_calls.get(), 0);

    // Events other than an incoming call's start need nothing.
    let (status, _) = signed_webhook(&server, &event("call.hangup", "v3:call-100", NUMBER)).await;
    assert_eq!(status, 200);
    assert_eq!(log.lock().unwrap().len(), asked_before);

    // An unmapped number gets the default org and agent.
    let (status, _) = signed_webhook(
        &server,
        &event("call.initiated", "v3:call-102", "+15550009999"),
    )
    .await;
    assert_eq!(status, 200);
    let asked = log.lock().unwrap().last().cloned().unwrap();
    let pass = StreamPass::verify(
        &server.state.auth,
        &pass_of(asked.body["stream_url"].as_str().unwrap()),
        Carrier::Telnyx,
    )
    .unwrap();
    assert_eq!((pass.org, pass.agent), (None, None));

    // Telnyx refuses to answer: the webhook says so.
    let (status, answer) =
        signed_webhook(&server, &event("call.initiated", "v3:gone", NUMBER)).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (502, Some("carrier_error")),
        "{answer}"
    );
}

#[tokio::test]
async fn telnyx_routes_without_configuration_answer_503() {
    let server = start().await;
    let body = event("call.initiated", "v3:call-1", NUMBER);
    let now = unix_now().to_string();
    let sig = sign(&telnyx_key(), &now, &body);
    let (status, answer) = webhook(&server, &body, Some((&now, &sig))).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (503, Some("not_configured"))
    );
    let r = reqwest::get(server.url("/telephony/telnyx/media?pass=x"))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
}

#[tokio::test]
async fn a_media_socket_without_a_valid_pass_is_refused() {
    let (server, log) = server().await;
    let expired = StreamPass {
        exp: 1_000,
        ..StreamPass::new(Carrier::Telnyx, "v3:call-7", CALLER, NUMBER, None, None)
    }
    .sign(&server.state.auth)
    .unwrap();
    let twilio = StreamPass::new(Carrier::Twilio, "v3:call-7", CALLER, NUMBER, None, None)
        .sign(&server.state.auth)
        .unwrap();
    let caller = server.token("alice");
    let base = "ws://voxwire.test/telephony/telnyx/media";
    for url in [
        base.to_string(),
        format!("{base}?pass=garbage"),
        format!("{base}?pass={expired}"),
        format!("{base}?pass={twilio}"),
        format!("{base}?pass={caller}"),
    ] {
        assert_eq!(connect(&server, &url).await.err(), Some(401), "{url}");
    }
    // A pass for another call opens the socket, but not this call's stream.
    let other = ring(&server, &log, "v3:call-8").await;
    let mut ws = connect(&server, &other).await.unwrap();
    start_stream(&mut ws, "v3:call-7").await;
    assert_eq!(recv_close(&mut ws).await, Some(1008));
    assert_eq!(server.state.call_services.metrics.live_calls.get(), 0);
    let metrics = metrics_text(&server).await;
    assert!(
        metrics.contains("voxwire_errors_total{code=\"unauthorized\"} 6"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_telnyx_call_hears_speech_answers_clears_on_barge_in_takes_keys_and_stops() {
    let (server, log) = server().await;
    let url = ring(&server, &log, "v3:call-200").await;
    let mut ws = connect(&server, &url).await.unwrap();
    start_stream(&mut ws, "v3:call-200").await;

    // The greeting: 20 ms PCMU frames that name no stream, a mark after each piece.
    let greeting = frames_until_quiet(&mut ws, Duration::from_millis(800)).await;
    let media: Vec<&Value> = greeting.iter().filter(|f| f["event"] == "media").collect();
    assert!(media.len() >= 50, "{} frames", media.len());
    for f in &media {
        assert_eq!(f.as_object().unwrap().len(), 2, "{f}");
        let payload = base64::engine::general_purpose::STANDARD
            .decode(f["media"]["payload"].as_str().unwrap())
            .unwrap();
        assert_eq!(payload.len(), 160);
    }
    assert_eq!(greeting.last().unwrap()["event"], "mark");
    assert!(echo_marks(&mut ws, &greeting, telnyx_mark).await >= 2);

    // The caller speaks, then is silent: the reply comes as media and marks.
    let mut turn = espeak("I would like to book a table for two people tonight.");
    turn.extend(silence(1200));
    speak(&mut ws, &turn).await;
    let mut first = Vec::new();
    for _ in 0..3 {
        first.extend(frames_until(&mut ws, "mark").await);
    }
    assert!(first.iter().any(|f| f["event"] == "media"));
    // Its first pieces have played; then the caller talks over the reply.
    echo_marks(&mut ws, &first, telnyx_mark).await;
    speak(&mut ws, &espeak("No, wait, listen to me please.")).await;
    let cut = frames_until(&mut ws, "clear").await;
    assert_eq!(cut.last().unwrap(), &json!({"event": "clear"}));
    speak(&mut ws, &silence(1500)).await;
    let second = frames_until_quiet(&mut ws, Duration::from_millis(1500)).await;
    echo_marks(&mut ws, &second, telnyx_mark).await;

    // Keys pressed one at a time, as Telnyx sends them, ending with #.
    for digit in ["4", "2", "#"] {
        send_json(
            &mut ws,
            json!({"event": "dtmf", "stream_id": STREAM,
                "occurred_at": "2026-12-02T16:00:10.000000Z", "sequence_number": "200", "dtmf": {"digit": digit}}),
        )
        .await;
    }
    let keyed = frames_until_quiet(&mut ws, Duration::from_millis(1500)).await;
    assert!(keyed.iter().any(|f| f["event"] == "media"));
    echo_marks(&mut ws, &keyed, telnyx_mark).await;

    // The caller hangs up: the stream stops, and the server leaves the line alone.
    send_json(
        &mut ws,
        json!({"event": "stop", "sequence_number": "300", "stream_id": STREAM,
            "stop": {"user_id": "3E6F995F-85F7-4705-9741-53B116D28237", "call_control_id": "v3:call-200"}}),
    )
    .await;
    assert_eq!(recv_close(&mut ws).await, Some(1000));

    // The call is the org's, under the caller's number, with the phone agent; the reply the
    // caller talked over keeps what its marks say was heard.
    assert_phone_history(&server, CALLER, NUMBER).await;
    let operator = operator(&server);
    // The usage of the org counts it like any other call.
    let usage = get_json(&server, "/api/usage?group_by=sub", &operator).await;
    let rows = usage["rows"].as_array().unwrap();
    assert!(
        rows.iter().any(|r| r["sub"] == CALLER && r["calls"] == 1),
        "{usage}"
    );
    // Only the answer was asked of Telnyx: the caller hung up.
    let actions: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .map(|a| a.action.clone())
        .collect();
    assert_eq!(actions, ["answer"]);
}

#[tokio::test]
async fn a_call_ended_by_the_server_is_hung_up() {
    let (server, log) = server().await;
    let url = ring(&server, &log, "v3:call-300").await;
    let mut ws = connect(&server, &url).await.unwrap();
    start_stream(&mut ws, "v3:call-300").await;
    frames_until(&mut ws, "mark").await;

    // An operator ends the live call.
    let operator = operator(&server);
    let svc = &server.state.call_services;
    assert!(svc.writer.flush(Duration::from_secs(10)).await);
    let list = get_json(&server, "/api/calls", &operator).await;
    let id = list["calls"][0]["call_id"].as_str().unwrap().to_string();
    let r = reqwest::Client::new()
        .post(server.url(&format!("/api/calls/{id}/end")))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(recv_close(&mut ws).await, Some(1000));

    // The stream is closed; the line is hung up through Call Control.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let asked = log.lock().unwrap().clone();
        if let Some(hangup) = asked.iter().find(|a| a.action == "hangup") {
            assert_eq!(hangup.call, "v3:call-300");
            assert_eq!(hangup.auth, format!("Bearer {API_KEY}"));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{asked:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The actions the fake API was asked for `call`, once `n` have come.
async fn actions_for(log: &Log, call: &str, n: usize) -> Vec<Asked> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let asked: Vec<Asked> = log
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.call == call)
            .cloned()
            .collect();
        if asked.len() >= n {
            return asked;
        }
        assert!(tokio::time::Instant::now() < deadline, "{asked:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_call_the_agent_transfers_to_a_number_is_transferred_on_the_line() {
    let (api, log) = fake_telnyx().await;
    let mut engines = slow_voice();
    engines.stt = Arc::new(AsksForTransfer);
    let server = start_with(config(&api), engines).await;
    for call in ["v3:call-400", "v3:no-transfer"] {
        let url = ring(&server, &log, call).await;
        let mut ws = connect(&server, &url).await.unwrap();
        start_stream(&mut ws, call).await;
        let greeting = frames_until(&mut ws, "mark").await;
        echo_marks(&mut ws, &greeting, telnyx_mark).await;
        // The caller asks to be put through; the agent says so, and the call ends.
        let mut turn = espeak("Put me through to the front desk.");
        turn.extend(silence(1200));
        speak(&mut ws, &turn).await;
        assert_eq!(listen_until_closed(&mut ws, telnyx_mark).await, Some(1000));
    }
    // Telnyx transfers the line to the number the agent named.
    let asked = actions_for(&log, "v3:call-400", 2).await;
    let actions: Vec<&str> = asked.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, ["answer", "transfer"]);
    assert_eq!(asked[1].body["to"], DESK);
    assert_eq!(asked[1].auth, format!("Bearer {API_KEY}"));
    // A transfer Telnyx refuses: the call is hung up, as any call ended on the server's side.
    let asked = actions_for(&log, "v3:no-transfer", 3).await;
    let actions: Vec<&str> = asked.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(actions, ["answer", "transfer", "hangup"]);
    // Both calls ended `transferred`, with the target in their event log.
    let svc = &server.state.call_services;
    assert!(svc.writer.flush(Duration::from_secs(10)).await);
    let list = get_json(&server, "/api/calls", &operator(&server)).await;
    for call in list["calls"].as_array().unwrap() {
        assert_eq!(call["end_reason"], "transferred", "{list}");
        let id = call["call_id"].as_str().unwrap();
        let log = svc.store.events(id, 0, 1000).await.unwrap();
        let transferred = log.iter().find(|e| e.kind == "transferred").unwrap();
        assert_eq!(transferred.data["to"], DESK);
    }
    let metrics = metrics_text(&server).await;
    assert!(
        metrics.contains("voxwire_errors_total{code=\"carrier_error\"} 1"),
        "{metrics}"
    );
}
