//! What the phone tests (Twilio, Telnyx) share: a simulated carrier's side of the media socket
//! (JSON frames out, the server's frames in, marks sent back) and the operator's view of the
//! calls it made.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::{TestServer, Ws};

/// The server's public address, as the carriers know it.
pub const PUBLIC_URL: &str = "http://voxwire.test";
pub const CALLER: &str = "+15551230000";
/// The number the tests call, answered by `acme`'s `phone` agent.
pub const NUMBER: &str = "+15550001111";

/// Agents for phone calls: `desk` (the default org's default) and `phone`, whose prompt and
/// greeting name the numbers.
pub const PHONE_AGENTS: &str = r#"
default = "desk"

[[agent]]
name = "desk"
system_prompt = "You answer the phone."
greeting = "Nobody here."

[[agent]]
name = "phone"
system_prompt = "You answer calls from {{caller_number}}."
greeting = "Hello {{caller_number}}, you called {{called_number}}."
max_tokens = 40

[[agent.tools]]
name = "transfer"
kind = "transfer"
"#;

/// The number the `phone` agent transfers callers to, as the caller asks.
pub const DESK: &str = "+15557770000";

/// A recogniser that hears every utterance as the caller asking to be put through to `DESK`:
/// the fake language model then calls the `transfer` tool.
pub struct AsksForTransfer;

impl voxwire::engines::stt::SpeechToText for AsksForTransfer {
    fn name(&self) -> String {
        "asks for a transfer (test engine)".into()
    }

    fn transcribe(
        &self,
        _audio: std::sync::Arc<[f32]>,
        _cancel: tokio_util::sync::CancellationToken,
    ) -> futures::future::BoxFuture<
        'static,
        Result<voxwire::engines::stt::Transcription, voxwire::engines::EngineError>,
    > {
        Box::pin(async {
            Ok(voxwire::engines::stt::Transcription {
                text: format!(r#"Put me through. [tool:transfer {{"to": "{DESK}"}}]"#),
            })
        })
    }
}

/// Reads the server's frames until the socket closes, sending back every mark as `echo`
/// writes it (the caller hears everything); returns the close code.
pub async fn listen_until_closed(ws: &mut Ws, echo: impl Fn(&Value) -> Value) -> Option<u16> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("timed out waiting for the socket to close");
        match msg {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["event"] == "mark" {
                    send_json(ws, echo(&v["mark"])).await;
                }
            }
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            _ => return None,
        }
    }
}

/// A test config with `agents`, the public address, and `NUMBER` routed to `acme/phone` in
/// `numbers` (one carrier's).
pub fn phone_config(
    agents: &str,
    numbers: impl FnOnce(
        &mut voxwire::config::TelephonySettings,
    ) -> &mut std::collections::HashMap<String, voxwire::config::NumberRoute>,
) -> voxwire::Config {
    let mut c = voxwire::Config::for_tests();
    c.agents = voxwire::agents::Agents::parse(agents).unwrap();
    c.net.public_url = Some(PUBLIC_URL.into());
    numbers(&mut c.telephony).insert(
        NUMBER.into(),
        voxwire::config::NumberRoute {
            org: Some("acme".into()),
            agent: "phone".into(),
        },
    );
    c
}

/// Fake engines whose voice speaks 250 ms per word, so that replies last long enough to be
/// talked over.
pub fn slow_voice() -> voxwire::engines::Engines {
    let mut engines = voxwire::engines::Engines::fake();
    engines.tts = std::sync::Arc::new(voxwire::engines::tts::fake::FakeTts {
        rate: 16_000,
        ms_per_word: 250,
    });
    engines
}

pub async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// 8 kHz silence.
pub fn silence(ms: usize) -> Vec<f32> {
    vec![0.0; ms * 8]
}

/// Frames from the server until none comes for `quiet`.
pub async fn frames_until_quiet(ws: &mut Ws, quiet: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(quiet, ws.next()).await {
        if let Message::Text(t) = msg {
            out.push(serde_json::from_str(&t).unwrap());
        }
    }
    out
}

/// Frames from the server until (and including) the first `event`.
pub async fn frames_until(ws: &mut Ws, event: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("timed out waiting for a frame")
            .expect("socket closed")
            .expect("socket error");
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            let done = v["event"] == event;
            out.push(v);
            if done {
                return out;
            }
        }
    }
}

/// Sends back every mark of `frames` as the carrier does once their audio has played, each
/// written by `echo` from the mark's `mark` object.
pub async fn echo_marks(ws: &mut Ws, frames: &[Value], echo: impl Fn(&Value) -> Value) -> usize {
    let marks: Vec<&Value> = frames.iter().filter(|f| f["event"] == "mark").collect();
    for m in &marks {
        send_json(ws, echo(&m["mark"])).await;
    }
    marks.len()
}

/// An operator of the org `acme`.
pub fn operator(server: &TestServer) -> String {
    server
        .state
        .auth
        .issue_with_role(
            "sup",
            Some("acme"),
            None,
            voxwire::auth::Role::Operator,
            Duration::from_secs(600),
        )
        .unwrap()
}

pub async fn get_json(server: &TestServer, path: &str, token: &str) -> Value {
    reqwest::Client::new()
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// What history says of a phone call that ended on `stop`: the org's, under the caller's
/// number, with the `phone` agent; its greeting; the reply talked over keeps only what was
/// heard (its first words, as the marks reported); the keys pressed are a turn. Returns the
/// call's id.
pub async fn assert_phone_history(server: &TestServer, caller: &str, number: &str) -> String {
    let operator = operator(server);
    let svc = &server.state.call_services;
    assert!(svc.writer.flush(Duration::from_secs(10)).await);
    let list = get_json(server, "/api/calls", &operator).await;
    let calls = list["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1, "{list}");
    assert_eq!(calls[0]["sub"], caller);
    assert_eq!(calls[0]["agent"], "phone");
    let id = calls[0]["call_id"].as_str().unwrap().to_string();
    let call = get_json(server, &format!("/api/calls/{id}"), &operator).await;
    assert_eq!(call["end_reason"], "client_ended", "{call}");
    let items = call["items"].as_array().unwrap();
    assert_eq!(
        items[0]["text"],
        format!("Hello {caller}, you called {number}.")
    );
    let cut_item = items
        .iter()
        .find(|i| i["role"] == "assistant" && !i["heard"].is_null())
        .unwrap_or_else(|| panic!("no cut reply in {call}"));
    let heard = cut_item["heard"].as_str().unwrap();
    let text = cut_item["text"].as_str().unwrap();
    assert!(
        !heard.is_empty() && heard.len() < text.len(),
        "{heard:?} of {text:?}"
    );
    assert!(text.starts_with(heard), "{heard:?} of {text:?}");
    let keyed = items
        .iter()
        .find(|i| i["source"] == "dtmf")
        .unwrap_or_else(|| panic!("no keyed turn in {call}"));
    assert_eq!(keyed["text"], "Pressed keys: 4 2 #");
    id
}

/// Serves `app` on a free loopback port (a carrier's REST API stand-in); returns its root URL.
pub async fn serve_fake(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A request's `Authorization` header, or "".
pub fn authorization(headers: &axum::http::HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The server's Prometheus metrics.
pub async fn metrics_text(server: &TestServer) -> String {
    reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
