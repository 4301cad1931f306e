//! Phone calls through Twilio Media Streams, with a simulated Twilio over real sockets: the
//! signed webhook answers TwiML with the media socket and a stream pass, a wrong signature gets
//! 403 and no TwiML, a stream without a valid pass is refused; a call with the fake engines
//! hears 20 ms mu-law frames, answers with mu-law `media` frames and `mark`s whose echoes keep
//! history honest, sends `clear` when the caller talks over a reply, takes keypad presses as a
//! turn, and ends on `stop`, listed in `GET /api/calls` under the caller's number. An org places
//! a call through a local fake of Twilio's REST API; its TwiML connects like an incoming one.

mod common;

#[path = "stt_common/mod.rs"]
mod stt;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use common::phone::*;
use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use voxwire::config::TwilioToken;
use voxwire::transport::phone::{Carrier, StreamPass};
use voxwire::transport::twilio::signature;
use voxwire::Config;

const AUTH_TOKEN: &str = "twilio-auth-token-for-tests";

fn config() -> Config {
    let agents = format!(
        "{PHONE_AGENTS}{}",
        r#"
[[agent]]
name = "reminder"
system_prompt = "You remind {{customer}} of a visit. You called {{called_number}}."
greeting = "Hi {{customer}}, this is a reminder."
"#
    );
    let mut c = phone_config(&agents, |t| &mut t.numbers);
    c.telephony.twilio_token = Some(TwilioToken::new(AUTH_TOKEN));
    c
}

async fn server() -> TestServer {
    start_with(config(), slow_voice()).await
}

fn form(call_sid: &str) -> Vec<(String, String)> {
    [
        ("AccountSid", "AC0000"),
        ("CallSid", call_sid),
        ("From", CALLER),
        ("To", NUMBER),
        ("CallStatus", "ringing"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

async fn webhook(
    server: &TestServer,
    params: &[(String, String)],
    signature: Option<&str>,
) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(server.url("/telephony/twilio/voice"))
        .form(params);
    if let Some(s) = signature {
        req = req.header("X-Twilio-Signature", s);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

/// The webhook's answer for a call, signed as Twilio signs it: the TwiML's stream URL and pass.
async fn answer_call(server: &TestServer, call_sid: &str) -> (String, String) {
    let params = form(call_sid);
    let url = format!("{PUBLIC_URL}/telephony/twilio/voice");
    let sig = signature::sign(AUTH_TOKEN.as_bytes(), &url, &params);
    let (status, body) = webhook(server, &params, Some(&sig)).await;
    assert_eq!(status, 200, "{body}");
    let attr = |name: &str| {
        let start = body.find(name).unwrap() + name.len();
        body[start..].split('"').next().unwrap().to_string()
    };
    assert!(body.contains("<Response><Connect><Stream"), "{body}");
    (attr("<Stream url=\""), attr("name=\"token\" value=\""))
}

async fn media_socket(server: &TestServer) -> Ws {
    let url = format!("ws://{}/telephony/twilio/media", server.addr);
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

async fn start_stream(ws: &mut Ws, call_sid: &str, token: &str) {
    send_json(
        ws,
        json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
    )
    .await;
    send_json(
        ws,
        json!({"event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
            "start": {"accountSid": "AC0000", "streamSid": "MZ1", "callSid": call_sid,
                "tracks": ["inbound"], "customParameters": {"token": token},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}),
    )
    .await;
}

/// Sends 8 kHz audio as 20 ms mu-law `media` frames.
async fn speak(ws: &mut Ws, samples: &[f32]) {
    let bytes = voxwire::audio::encode::mulaw_bytes(samples);
    for frame in bytes.chunks(160) {
        let payload = base64::engine::general_purpose::STANDARD.encode(frame);
        send_json(
            ws,
            json!({"event": "media", "streamSid": "MZ1",
                "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": payload}}),
        )
        .await;
    }
}

/// Speech-like noise at 8 kHz (a fixed pseudo-random sequence), unlike the agent's tones.
fn noise(ms: usize) -> Vec<f32> {
    let mut x: u32 = 12_345;
    (0..ms * 8)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            ((x >> 16) as f32 / 32_768.0 - 1.0) * 0.4
        })
        .collect()
}

/// A mark echoed as Twilio does.
fn twilio_mark(mark: &Value) -> Value {
    json!({"event": "mark", "streamSid": "MZ1", "mark": mark})
}

#[tokio::test]
async fn the_webhook_answers_signed_calls_only() {
    let server = server().await;
    let (url, token) = answer_call(&server, "CA100").await;
    assert_eq!(url, "ws://voxwire.test/telephony/twilio/media");
    let pass = StreamPass::verify(&server.state.auth, &token, Carrier::Twilio).unwrap();
    assert_eq!(pass.call_sid, "CA100");
    assert_eq!(pass.from, CALLER);
    assert_eq!(
        (pass.org.as_deref(), pass.agent.as_deref()),
        (Some("acme"), Some("phone"))
    );
    // The pass opens nothing but the media socket.
    let r = reqwest::Client::new()
        .get(server.url("/api/calls"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let params = form("CA101");
    let url = format!("{PUBLIC_URL}/telephony/twilio/voice");
    let good = signature::sign(AUTH_TOKEN.as_bytes(), &url, &params);
    let wrong_token = signature::sign(b"another-token", &url, &params);
    let mut tampered = params.clone();
    tampered[2].1 = "+15559999999".into();
    for (params, sig) in [
        (&params, Some(wrong_token.as_str())),
        (&params, None),
        (&tampered, Some(good.as_str())),
    ] {
        let (status, body) = webhook(&server, params, sig).await;
        assert_eq!(status, 403, "{body}");
        assert!(!body.contains("<Response"), "{body}");
        let e: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(e["error"]["code"], "forbidden");
    }

    // An unmapped number gets the default org and agent.
    let mut other = form("CA102");
    other[3].1 = "+15550009999".into();
    let sig = signature::sign(AUTH_TOKEN.as_bytes(), &url, &other);
    let (status, body) = webhook(&server, &other, Some(&sig)).await;
    assert_eq!(status, 200);
    let token = body
        .split("value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let pass = StreamPass::verify(&server.state.auth, token, Carrier::Twilio).unwrap();
    assert_eq!((pass.org, pass.agent), (None, None));
}

#[tokio::test]
async fn phone_routes_without_configuration_answer_503() {
    let server = start().await;
    let (status, body) = webhook(&server, &form("CA1"), Some("x")).await;
    assert_eq!(status, 503);
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["error"]["code"], "not_configured");
    let r = reqwest::get(server.url("/telephony/twilio/media"))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let (status, body) = place(
        &server,
        &admin(&server),
        &json!({"to": CALLER, "from": NUMBER}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("not_configured"))
    );
}

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const CALLED: &str = "+15557654321";

/// What the fake REST API was asked: the `Authorization` header and the form.
type Asked = Arc<std::sync::Mutex<Vec<(String, Vec<(String, String)>)>>>;

/// A local stand-in for Twilio's `Calls.json`: it keeps each request, answers 201 with a call
/// SID, and 400 with Twilio's error shape for the number `+15550009999`.
async fn fake_twilio() -> (String, Asked) {
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    let asked: Asked = Arc::default();
    let route = |State(asked): State<Asked>,
                 Path(sid): Path<String>,
                 headers: HeaderMap,
                 axum::Form(form): axum::Form<Vec<(String, String)>>| async move {
        let auth = authorization(&headers);
        let bad = form.iter().any(|(k, v)| k == "To" && v == "+15550009999");
        asked.lock().unwrap().push((auth, form));
        if bad {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(
                    json!({"code": 21211, "message": "The 'To' number +15550009999 is not a valid phone number.", "status": 400}),
                ),
            );
        }
        assert_eq!(sid.as_str(), ACCOUNT);
        (
            StatusCode::CREATED,
            axum::Json(json!({"sid": "CA0099", "status": "queued"})),
        )
    };
    let app = axum::Router::new()
        .route(
            "/2010-04-01/Accounts/{sid}/Calls.json",
            axum::routing::post(route),
        )
        .with_state(asked.clone());
    (serve_fake(app).await, asked)
}

fn admin(server: &TestServer) -> String {
    server
        .state
        .auth
        .issue_with_role(
            "boss",
            Some("acme"),
            None,
            voxwire::auth::Role::Admin,
            Duration::from_secs(600),
        )
        .unwrap()
}

async fn place(server: &TestServer, token: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(server.url("/api/calls/outbound"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_org_places_a_call_that_connects_like_an_incoming_one() {
    let (api, asked) = fake_twilio().await;
    let mut c = config();
    c.telephony.twilio_account_sid = Some(ACCOUNT.into());
    c.telephony.twilio_api_url = api;
    let server = start_with(c, voxwire::engines::Engines::fake()).await;
    let boss = admin(&server);

    // Checked before Twilio is asked.
    let caller = server
        .state
        .auth
        .issue("eve", Some("acme"), None, Duration::from_secs(60))
        .unwrap();
    let (status, _) = place(&server, &caller, &json!({"to": CALLED, "from": NUMBER})).await;
    assert_eq!(status, 403);
    for (body, code) in [
        (
            json!({"to": "5557654321", "from": NUMBER}),
            "invalid_parameter",
        ),
        (
            json!({"to": CALLED, "from": NUMBER, "variables": {"bad name": "x"}}),
            "invalid_parameter",
        ),
        (json!({"to": CALLED}), "invalid_json"),
    ] {
        let (status, answer) = place(&server, &boss, &body).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some(code)),
            "{body}"
        );
    }
    let (status, answer) = place(
        &server,
        &boss,
        &json!({"to": CALLED, "from": NUMBER, "agent": "nobody"}),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (404, Some("unknown_agent"))
    );
    assert!(asked.lock().unwrap().is_empty());

    // Twilio's refusal comes back with its reason.
    let (status, answer) = place(
        &server,
        &boss,
        &json!({"to": "+15550009999", "from": NUMBER}),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (502, Some("carrier_error")),
        "{answer}"
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a valid phone number"),
        "{answer}"
    );

    // Placed: Twilio gets the account's credentials and the TwiML that connects the media
    // socket with a pass.
    let body = json!({"to": CALLED, "from": NUMBER, "agent": "reminder", "variables": {"customer": "Ada", "called_number": "forged"}});
    let (status, answer) = place(&server, &boss, &body).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        (answer["call_sid"].as_str(), answer["agent"].as_str()),
        (Some("CA0099"), Some("reminder"))
    );
    let (auth, form) = asked.lock().unwrap().last().cloned().unwrap();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT}:{AUTH_TOKEN}"));
    assert_eq!(auth, format!("Basic {basic}"));
    let field = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(
        (field("To"), field("From")),
        (CALLED.to_string(), NUMBER.to_string())
    );
    let twiml = field("Twiml");
    let attr = |name: &str| {
        let start = twiml.find(name).unwrap() + name.len();
        twiml[start..].split('"').next().unwrap().to_string()
    };
    assert_eq!(
        attr("<Stream url=\""),
        "ws://voxwire.test/telephony/twilio/media"
    );
    let pass = attr("name=\"token\" value=\"");

    // Answered: the stream brings the pass, and the agent greets the called person.
    let mut ws = media_socket(&server).await;
    start_stream(&mut ws, "CA0099", &pass).await;
    let frames = frames_until(&mut ws, "mark").await;
    assert!(
        frames.iter().any(|f| f["event"] == "media"),
        "no audio before the mark"
    );
    send_json(&mut ws, json!({"event": "stop", "sequenceNumber": "9", "streamSid": "MZ1", "stop": {"accountSid": ACCOUNT, "callSid": "CA0099"}})).await;
    let operator = operator(&server);
    let svc = &server.state.call_services;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let id = loop {
        assert!(svc.writer.flush(Duration::from_secs(10)).await);
        let list = get_json(&server, "/api/calls", &operator).await;
        let ended = list["calls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| !c["end_reason"].is_null())
            .cloned();
        if let Some(call) = ended {
            // The person called is the call's subject.
            assert_eq!(
                (call["sub"].as_str(), call["agent"].as_str()),
                (Some(CALLED), Some("reminder")),
                "{list}"
            );
            break call["call_id"].as_str().unwrap().to_string();
        }
        assert!(tokio::time::Instant::now() < deadline, "{list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let call = get_json(&server, &format!("/api/calls/{id}"), &operator).await;
    assert_eq!(
        call["items"][0]["text"], "Hi Ada, this is a reminder.",
        "{call}"
    );
    // The numbers are the carrier's: a variable of the same name does not replace them.
    let stored = svc.store.call(&id).await.unwrap().unwrap();
    assert_eq!(
        stored.system_prompt.as_deref(),
        Some(format!("You remind Ada of a visit. You called {CALLED}.").as_str())
    );
}

#[tokio::test]
async fn a_stream_without_a_valid_pass_is_refused() {
    let server = server().await;
    let expired = StreamPass {
        exp: 1_000,
        ..StreamPass::new(Carrier::Twilio, "CA7", CALLER, NUMBER, None, None)
    }
    .sign(&server.state.auth)
    .unwrap();
    let (_, for_another_call) = answer_call(&server, "CA8").await;
    let caller_token = server.token("alice");
    for (call_sid, token) in [
        ("CA7", "garbage".to_string()),
        ("CA7", expired),
        ("CA7", for_another_call),
        ("CA7", caller_token),
    ] {
        let mut ws = media_socket(&server).await;
        start_stream(&mut ws, call_sid, &token).await;
        assert_eq!(recv_close(&mut ws).await, Some(1008));
    }
    let mut ws = media_socket(&server).await;
    send_json(&mut ws, json!({"event": "connected"})).await;
    send_json(
        &mut ws,
        json!({"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA7",
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}}}),
    )
    .await;
    assert_eq!(recv_close(&mut ws).await, Some(1008));
    let metrics = metrics_text(&server).await;
    assert!(
        metrics.contains("voxwire_errors_total{code=\"unauthorized\"} 5"),
        "{metrics}"
    );
    assert_eq!(server.state.call_services.metrics.live_calls.get(), 0);
}

#[tokio::test]
async fn a_phone_call_speaks_mulaw_with_marks_clears_on_barge_in_and_takes_keys() {
    let server = server().await;
    let (_, token) = answer_call(&server, "CA200").await;
    let mut ws = media_socket(&server).await;
    start_stream(&mut ws, "CA200", &token).await;

    // The greeting: 20 ms mu-law frames, a mark after each piece.
    let greeting = frames_until_quiet(&mut ws, Duration::from_millis(800)).await;
    let media: Vec<&Value> = greeting.iter().filter(|f| f["event"] == "media").collect();
    assert!(media.len() >= 50, "{} frames", media.len());
    for f in &media {
        assert_eq!(f["streamSid"], "MZ1");
        let payload = base64::engine::general_purpose::STANDARD
            .decode(f["media"]["payload"].as_str().unwrap())
            .unwrap();
        assert_eq!(payload.len(), 160);
    }
    assert_eq!(greeting.last().unwrap()["event"], "mark");
    assert!(echo_marks(&mut ws, &greeting, twilio_mark).await >= 2);

    // The caller speaks, then is silent: the reply comes as media and marks.
    let mut turn = noise(1200);
    turn.extend(silence(1200));
    speak(&mut ws, &turn).await;
    let mut first = Vec::new();
    for _ in 0..3 {
        first.extend(frames_until(&mut ws, "mark").await);
    }
    assert!(first.iter().any(|f| f["event"] == "media"));
    // Its first pieces have played; then the caller talks over the reply.
    echo_marks(&mut ws, &first, twilio_mark).await;
    speak(&mut ws, &noise(700)).await;
    let cut = frames_until(&mut ws, "clear").await;
    assert_eq!(cut.last().unwrap()["streamSid"], "MZ1");
    speak(&mut ws, &silence(1500)).await;
    let second = frames_until_quiet(&mut ws, Duration::from_millis(1500)).await;
    echo_marks(&mut ws, &second, twilio_mark).await;

    // Keys pressed one at a time, as Twilio sends them, ending with #.
    for digit in ["4", "2", "#"] {
        send_json(
            &mut ws,
            json!({"event": "dtmf", "streamSid": "MZ1", "dtmf": {"track": "inbound_track", "digit": digit}}),
        )
        .await;
    }
    let keyed = frames_until_quiet(&mut ws, Duration::from_millis(1500)).await;
    assert!(keyed.iter().any(|f| f["event"] == "media"));
    echo_marks(&mut ws, &keyed, twilio_mark).await;

    // The caller hangs up.
    send_json(
        &mut ws,
        json!({"event": "stop", "streamSid": "MZ1", "stop": {"callSid": "CA200"}}),
    )
    .await;
    assert_eq!(recv_close(&mut ws).await, Some(1000));

    // The call is the org's, under the caller's number, with the phone agent; the reply the
    // caller talked over keeps what its echoed marks say was heard.
    let id = assert_phone_history(&server, CALLER, NUMBER).await;
    let svc = &server.state.call_services;
    let log = svc.store.events(&id, 0, 1000).await.unwrap();
    let digits: Vec<String> = log
        .iter()
        .filter(|e| e.kind == "dtmf")
        .map(|e| e.data["digits"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(digits, ["4", "2", "#"]);
}

/// The webhook's stream pass for a call to `to`.
async fn pass_for(server: &TestServer, call_sid: &str, to: &str) -> StreamPass {
    let mut params = form(call_sid);
    params[3].1 = to.into();
    let url = format!("{PUBLIC_URL}/telephony/twilio/voice");
    let sig = signature::sign(AUTH_TOKEN.as_bytes(), &url, &params);
    let (status, body) = webhook(server, &params, Some(&sig)).await;
    assert_eq!(status, 200, "{body}");
    let token = body.split("value=\"").nth(1).unwrap().split('"').next();
    StreamPass::verify(&server.state.auth, token.unwrap(), Carrier::Twilio).unwrap()
}

#[tokio::test]
async fn an_agent_made_over_the_api_answers_its_phone_numbers() {
    let server = server().await;
    let client = reqwest::Client::new();
    let create = |token: String, name: &str, numbers: Value| {
        client
            .post(server.url("/api/agents"))
            .bearer_auth(token)
            .json(&json!({"name": name, "system_prompt": "You sell.", "phone_numbers": numbers}))
            .send()
    };
    let r = create(admin(&server), "sales", json!(["+15550007777"]))
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let pass = pass_for(&server, "CA900", "+15550007777").await;
    assert_eq!(
        (pass.org.as_deref(), pass.agent.as_deref()),
        (Some("acme"), Some("sales"))
    );

    // Another org cannot claim it, nor a number the configuration maps, nor a bad one.
    let other = server
        .state
        .auth
        .issue_with_role(
            "root",
            Some("globex"),
            None,
            voxwire::auth::Role::Admin,
            Duration::from_secs(600),
        )
        .unwrap();
    for (numbers, status, code) in [
        (json!(["+15550007777"]), 409, "number_taken"),
        (json!([NUMBER]), 409, "number_taken"),
        (json!(["555-0100"]), 400, "invalid_agent"),
    ] {
        let r = create(other.clone(), "sales", numbers.clone())
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{numbers}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    // The configuration's mapping is unchanged, and an agent's replacement keeps its number.
    let pass = pass_for(&server, "CA901", NUMBER).await;
    assert_eq!(pass.agent.as_deref(), Some("phone"));
    let r = client
        .put(server.url("/api/agents/sales"))
        .bearer_auth(admin(&server))
        .json(&json!({"system_prompt": "You sell more.", "phone_numbers": ["+15550007777", "+15550007778"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let pass = pass_for(&server, "CA902", "+15550007778").await;
    assert_eq!(pass.agent.as_deref(), Some("sales"));
    // Deleted, the number goes back to the default agent.
    let r = client
        .delete(server.url("/api/agents/sales"))
        .bearer_auth(admin(&server))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let pass = pass_for(&server, "CA903", "+15550007777").await;
    assert_eq!((pass.org, pass.agent), (None, None));
}

const CLINIC: &str = r#"{
  "name": "clinic",
  "system_prompt": "You are the receptionist of Oak Clinic, open 9 am to 5 pm on weekdays. Answer in one short sentence.",
  "phone_numbers": ["+15550004444"],
  "flow": {
    "start": "menu",
    "nodes": {
      "menu": {"type": "menu", "say": "Thanks for calling Oak Clinic. For opening hours, say hours or press 1. For anything else, press 2.",
               "options": [{"digit": "1", "keywords": ["hours", "opening"], "next": "hours"},
                           {"digit": "2", "keywords": ["else", "question"], "next": "ask"}]},
      "hours": {"type": "say", "say": "We are open nine to five, Monday to Friday.", "next": "ask"},
      "ask": {"type": "llm", "say": "What else can I do for you?", "exit_phrases": ["goodbye"], "next": "bye"},
      "bye": {"type": "hangup", "say": "Goodbye."}
    }
  }
}"#;

/// A frame from the server and when it came.
type Timed = (tokio::time::Instant, Value);

/// Sends 8 kHz audio as Twilio does: one 20 ms mu-law frame every 20 ms.
async fn speak_live<S>(sink: &mut S, samples: &[f32])
where
    S: futures::Sink<Message> + Unpin,
    S::Error: std::fmt::Debug,
{
    let bytes = voxwire::audio::encode::mulaw_bytes(samples);
    let mut next = tokio::time::Instant::now();
    for frame in bytes.chunks(160) {
        next += Duration::from_millis(20);
        tokio::time::sleep_until(next).await;
        let payload = base64::engine::general_purpose::STANDARD.encode(frame);
        let media = json!({"event": "media", "streamSid": "MZ1",
            "media": {"track": "inbound", "payload": payload}});
        // The call may end (and the socket close) while the caller's line is still open.
        if sink
            .send(Message::Text(media.to_string().into()))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Frames that came until none came for `quiet`; marks are echoed as Twilio echoes them once
/// the audio before them has played (at real pace).
async fn heard_until_quiet<S>(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Timed>,
    sink: &mut S,
    quiet: Duration,
) -> Vec<Timed>
where
    S: futures::Sink<Message> + Unpin,
    S::Error: std::fmt::Debug,
{
    let mut out: Vec<Timed> = Vec::new();
    let mut played_until = tokio::time::Instant::now();
    while let Ok(Some((at, v))) = tokio::time::timeout(quiet, rx.recv()).await {
        if v["event"] == "media" {
            played_until = played_until.max(at) + Duration::from_millis(20);
        }
        if v["event"] == "mark" {
            tokio::time::sleep_until(played_until).await;
            let echo = json!({"event": "mark", "streamSid": "MZ1", "mark": v["mark"]});
            let _ = sink.send(Message::Text(echo.to_string().into())).await;
        }
        out.push((at, v));
    }
    out
}

/// The org's calls and the first one's items and events, to show why a phone test failed.
async fn dump(server: &TestServer) -> String {
    let operator = operator(server);
    let svc = &server.state.call_services;
    assert!(svc.writer.flush(Duration::from_secs(10)).await);
    let list = get_json(server, "/api/calls", &operator).await;
    let Some(id) = list["calls"][0]["call_id"].as_str() else {
        return list.to_string();
    };
    let call = get_json(server, &format!("/api/calls/{id}"), &operator).await;
    let events: Vec<String> = svc
        .store
        .events(id, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind != "metrics")
        .map(|e| format!("{} {}", e.kind, e.data))
        .collect();
    format!("{call}\n{}", events.join("\n"))
}

/// espeak-ng's voice at the phone line's 8 kHz, with silence after it.
fn phone_speech(text: &str, then_ms: usize) -> Vec<f32> {
    let mut audio = stt::resample(&stt::espeak(text), 16_000, 8_000);
    audio.extend(silence(then_ms));
    audio
}

/// A phone call with every local engine (Silero, Whisper, SmolLM2, Piper) at real pace: the
/// flow's menu is answered by voice, the model answers a spoken question at the flow's `llm`
/// node, and an exit phrase ends the call. Prints the caller's voice-to-voice latency over the
/// line: from the end of the caller's speech to the first reply frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_call_on_the_local_engines_runs_a_flow_by_voice() {
    let mut config = config();
    config.vad = voxwire::config::VadChoice::Silero;
    let server = start_with(config, local_engines()).await;
    let r = reqwest::Client::new()
        .post(server.url("/api/agents"))
        .bearer_auth(admin(&server))
        .header("content-type", "application/json")
        .body(CLINIC)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let pass = pass_for(&server, "CA700", "+15550004444").await;
    assert_eq!(pass.agent.as_deref(), Some("clinic"));
    let token = pass.sign(&server.state.auth).unwrap();
    let mut ws = media_socket(&server).await;
    start_stream(&mut ws, "CA700", &token).await;
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Timed>();
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            if let Message::Text(t) = msg {
                let v: Value = serde_json::from_str(&t).unwrap();
                let _ = tx.send((tokio::time::Instant::now(), v));
            }
        }
    });

    // The menu, in Piper's voice as mu-law.
    let menu = heard_until_quiet(&mut rx, &mut sink, Duration::from_millis(1500)).await;
    let frames = menu.iter().filter(|(_, f)| f["event"] == "media").count();
    assert!(frames * 20 >= 3000, "{frames} frames of the menu");

    let mut v2v = Vec::new();
    for (said, quiet) in [
        ("I would like to know your opening hours.", 2500),
        ("What time do you open tomorrow?", 6000),
        ("No thanks, goodbye.", 2500),
    ] {
        let speech = phone_speech(said, 0);
        speak_live(&mut sink, &speech).await;
        let spoken = tokio::time::Instant::now();
        // The line stays open: silence goes on being sent while the reply comes.
        let silence_sender = async {
            speak_live(&mut sink, &silence(1500)).await;
            sink
        };
        let (s, reply) = tokio::join!(silence_sender, async {
            let mut got = Vec::new();
            while let Some(f) = rx.recv().await {
                let media = f.1["event"] == "media";
                got.push(f);
                if media {
                    break;
                }
            }
            got
        });
        sink = s;
        let Some(first) = reply.last().map(|(at, _)| *at) else {
            panic!("no reply to {said:?}: {}", dump(&server).await);
        };
        v2v.push(first.duration_since(spoken).as_millis());
        heard_until_quiet(&mut rx, &mut sink, Duration::from_millis(quiet)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), reader).await;

    let operator = operator(&server);
    let svc = &server.state.call_services;
    assert!(svc.writer.flush(Duration::from_secs(10)).await);
    let list = get_json(&server, "/api/calls", &operator).await;
    let id = list["calls"][0]["call_id"].as_str().unwrap().to_string();
    let call = get_json(&server, &format!("/api/calls/{id}"), &operator).await;
    let lines: Vec<(String, String)> = call["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let role = i["role"].as_str().unwrap_or_default().to_string();
            (role, i["text"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    println!("phone call on the local engines: {lines:#?}");
    println!(
        "voice to voice over the phone line (end of speech to first reply frame, ms): \
         menu choice by voice {}, the model's answer {}, the goodbye {}",
        v2v[0], v2v[1], v2v[2]
    );
    assert_eq!(call["end_reason"], "agent_ended", "{call}");
    let agent: Vec<&str> = lines
        .iter()
        .filter(|(r, _)| r == "assistant")
        .map(|(_, t)| t.as_str())
        .collect();
    // Whisper heard "hours": the menu's option, not a retry.
    assert_eq!(
        agent.get(1).copied(),
        Some("We are open nine to five, Monday to Friday. What else can I do for you?"),
        "{lines:?}"
    );
    // The model, not the flow, answered the question: a reply of its own.
    let answer = agent.get(2).copied().unwrap_or_default();
    assert!(
        answer.split_whitespace().count() >= 3 && Some(answer) != agent.get(1).copied(),
        "{lines:?}"
    );
    assert_eq!(agent.last().copied(), Some("Goodbye."), "{lines:?}");
}

/// What the fake asked to redirect: the call, the `Authorization` header and the form.
type Redirects = Arc<std::sync::Mutex<Vec<(String, String, Vec<(String, String)>)>>>;

/// A local stand-in for Twilio's `Calls/{CallSid}.json`: it keeps each redirect and answers 200,
/// or 404 with Twilio's error shape for the call `CA404`.
async fn fake_twilio_calls() -> (String, Redirects) {
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    let asked: Redirects = Arc::default();
    let route = |State(asked): State<Redirects>,
                 Path((sid, call)): Path<(String, String)>,
                 headers: HeaderMap,
                 axum::Form(form): axum::Form<Vec<(String, String)>>| async move {
        assert_eq!(sid.as_str(), ACCOUNT);
        let auth = authorization(&headers);
        let call = call.trim_end_matches(".json").to_string();
        let missing = call == "CA404";
        asked.lock().unwrap().push((call.clone(), auth, form));
        if missing {
            return (
                StatusCode::NOT_FOUND,
                axum::Json(
                    json!({"code": 20404, "message": "The requested resource was not found", "status": 404}),
                ),
            );
        }
        (
            StatusCode::OK,
            axum::Json(json!({"sid": call, "status": "in-progress"})),
        )
    };
    let app = axum::Router::new()
        .route(
            "/2010-04-01/Accounts/{sid}/Calls/{call}",
            axum::routing::post(route),
        )
        .with_state(asked.clone());
    (serve_fake(app).await, asked)
}

#[tokio::test]
async fn a_call_the_agent_transfers_to_a_number_is_redirected_to_dial_it() {
    let (api, asked) = fake_twilio_calls().await;
    let mut c = config();
    c.telephony.twilio_account_sid = Some(ACCOUNT.into());
    c.telephony.twilio_api_url = api;
    let mut engines = slow_voice();
    engines.stt = Arc::new(AsksForTransfer);
    let server = start_with(c, engines).await;
    for call_sid in ["CA300", "CA404"] {
        let (_, token) = answer_call(&server, call_sid).await;
        let mut ws = media_socket(&server).await;
        start_stream(&mut ws, call_sid, &token).await;
        let greeting = frames_until(&mut ws, "mark").await;
        echo_marks(&mut ws, &greeting, twilio_mark).await;
        // The caller asks to be put through; the agent says so, and the call ends.
        let mut turn = noise(1200);
        turn.extend(silence(1200));
        speak(&mut ws, &turn).await;
        assert_eq!(listen_until_closed(&mut ws, twilio_mark).await, Some(1000));
        // The redirect came before the stream closed.
        let redirects = asked.lock().unwrap().clone();
        let (call, auth, form) = redirects
            .iter()
            .find(|(c, _, _)| c == call_sid)
            .unwrap_or_else(|| panic!("no redirect of {call_sid}: {redirects:?}"));
        assert_eq!(call, call_sid);
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT}:{AUTH_TOKEN}"));
        assert_eq!(auth, &format!("Basic {basic}"));
        assert_eq!(
            form,
            &vec![(
                "Twiml".to_string(),
                format!("<Response><Dial>{DESK}</Dial></Response>")
            )]
        );
    }
    // The refused redirect is counted; the call ended as it would have.
    let metrics = metrics_text(&server).await;
    assert!(
        metrics.contains("voxwire_errors_total{code=\"carrier_error\"} 1"),
        "{metrics}"
    );
}
