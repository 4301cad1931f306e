//! Operators acting on live calls over real sockets: taking a call over silences the agent
//! mid-reply while the caller is still transcribed, `say` reaches the caller as a reply marked
//! as the operator's, release hands the call back with the operator's line and notes in the
//! agent's context, conflicts between operators, roles and orgs, and ending a call.

mod common;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use eventsource_stream::Eventsource;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;
use voxwire::auth::Role;
use voxwire::engines::llm::fake::FakeLlm;
use voxwire::engines::llm::{ChatRequest, LanguageModel};
use voxwire::engines::{EngineError, Engines};
use voxwire::Config;

/// The fake model, slowed down, keeping every request it was given.
struct Recording {
    inner: FakeLlm,
    seen: Arc<Mutex<Vec<ChatRequest>>>,
}

impl LanguageModel for Recording {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn stream(
        &self,
        request: ChatRequest,
        cancel: CancellationToken,
    ) -> BoxStream<'static, Result<String, EngineError>> {
        self.seen.lock().unwrap().push(request.clone());
        self.inner.stream(request, cancel)
    }
}

async fn recording_server(word_ms: u64) -> (TestServer, Arc<Mutex<Vec<ChatRequest>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut engines = Engines::fake();
    engines.llm = Arc::new(Recording {
        inner: FakeLlm {
            word_delay: Duration::from_millis(word_ms),
        },
        seen: seen.clone(),
    });
    (start_with(Config::for_tests(), engines).await, seen)
}

fn token(server: &TestServer, sub: &str, org: Option<&str>, role: Role) -> String {
    server
        .state
        .auth
        .issue_with_role(sub, org, None, role, Duration::from_secs(600))
        .unwrap()
}

async fn post(server: &TestServer, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(server.url(path))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A caller's call under its own token (its `sub` and `org`).
async fn call_as(server: &TestServer, sub: &str, org: Option<&str>) -> (Ws, String) {
    let token = server
        .state
        .auth
        .issue(sub, org, None, Duration::from_secs(600))
        .unwrap();
    let mut req = server.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(recv(&mut ws).await["type"], "connected");
    send(&mut ws, json!({"type": "start_call"})).await;
    let started = recv(&mut ws).await;
    assert_eq!(started["type"], "call_started", "{started}");
    (ws, started["call_id"].as_str().unwrap().to_string())
}

/// Every frame that arrives within `wait`.
async fn frames_for(ws: &mut Ws, wait: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(v) = tokio::time::timeout_at(deadline, recv(ws)).await {
        out.push(v);
    }
    out
}

fn types(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .map(|f| f["type"].as_str().unwrap_or_default().to_string())
        .collect()
}

type Events = Pin<Box<dyn Stream<Item = Result<eventsource_stream::Event, String>> + Send>>;

async fn monitor(server: &TestServer, token: &str) -> Events {
    let resp = reqwest::Client::new()
        .get(server.url("/api/monitor/events"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes_stream()
        .eventsource()
        .map(|r| r.map_err(|e| e.to_string()))
        .boxed()
}

/// Monitor events up to `call_ended` of `call_id`.
async fn until_ended(events: &mut Events, call_id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let e = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("timed out waiting for a monitor event")
            .expect("the monitor stream ended")
            .expect("bad monitor stream");
        let v: Value = serde_json::from_str(&e.data).unwrap();
        let done = v["type"] == "call_ended" && v["call_id"] == call_id;
        out.push(v);
        if done {
            return out;
        }
    }
}

#[tokio::test]
async fn takeover_say_note_and_release_over_a_live_call() {
    let (server, seen) = recording_server(150).await;
    let op = token(&server, "sup", None, Role::Operator);
    let mut watch = monitor(&server, &op).await;
    let (mut ws, call_id) = call_as(&server, "alice", None).await;
    let path = |action: &str| format!("/api/calls/{call_id}/{action}");

    // The agent is mid-reply when the operator takes over: it stops at once.
    send(
        &mut ws,
        json!({"type": "text", "text": "tell me everything about your prices"}),
    )
    .await;
    let before = recv_until(&mut ws, "response").await;
    assert_eq!(before.last().unwrap()["is_final"], false);
    let (status, body) = post(&server, &path("takeover"), &op, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["call_id"], call_id.as_str());
    assert_eq!(body["state"], "taken_over");
    assert_eq!(body["taken_over_by"], "sup");
    let frames = recv_until(&mut ws, "takeover_started").await;
    let t = types(&frames);
    let interrupted = t
        .iter()
        .position(|k| k == "interrupted")
        .expect("interrupted");
    assert!(interrupted < t.len() - 1, "{t:?}");
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "response_done" && f["reason"] == "interrupted"),
        "{t:?}"
    );
    // Nothing more of the cut reply.
    let after = frames_for(&mut ws, Duration::from_millis(600)).await;
    assert!(
        !types(&after)
            .iter()
            .any(|k| k.starts_with("response") || k == "audio_response"),
        "{after:?}"
    );

    // The caller is still heard, typed and spoken, but the agent does not answer.
    send(
        &mut ws,
        json!({"type": "text", "text": "hello is anyone there"}),
    )
    .await;
    let mut pcm = tone_pcm16(300, 16_000, 0.0);
    pcm.extend(tone_pcm16(1_200, 16_000, 0.3));
    pcm.extend(tone_pcm16(1_500, 16_000, 0.0));
    stream_pcm16(&mut ws, &pcm, 16_000).await;
    let heard = frames_for(&mut ws, Duration::from_millis(2_500)).await;
    let finals: Vec<&str> = heard
        .iter()
        .filter(|f| f["type"] == "transcript" && f["is_final"] == true)
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert_eq!(finals.len(), 2, "{heard:?}");
    assert_eq!(finals[0], "hello is anyone there");
    assert!(finals[1].starts_with("audio of "), "{finals:?}");
    assert!(
        !types(&heard)
            .iter()
            .any(|k| k.starts_with("response") || k == "audio_response" || k == "metrics"),
        "{heard:?}"
    );
    let asked = seen.lock().unwrap().len();
    assert_eq!(
        asked, 1,
        "the model was asked nothing while the call was taken over"
    );

    // The operator's line reaches the caller as a reply in the agent's voice, marked as theirs.
    let line = "Hi, this is Sam from support. How can I help?";
    let (status, body) = post(&server, &path("say"), &op, Some(json!({"text": line}))).await;
    assert_eq!(status, 200, "{body}");
    let said = recv_until(&mut ws, "response_done").await;
    let reply: Vec<&Value> = said
        .iter()
        .filter(|f| {
            ["response", "audio_response", "response_done"].contains(&f["type"].as_str().unwrap())
        })
        .collect();
    assert!(
        reply.iter().any(|f| f["type"] == "audio_response"),
        "{said:?}"
    );
    assert!(reply.iter().all(|f| f["from"] == "operator"), "{said:?}");
    let text = reply
        .iter()
        .find(|f| f["type"] == "response" && f["is_final"] == true)
        .unwrap();
    assert_eq!(text["text"], line);
    assert_eq!(said.last().unwrap()["reason"], "completed");

    // A note for the agent, not spoken.
    let note = "The caller is a VIP: offer the 10% discount.";
    let (status, body) = post(&server, &path("context"), &op, Some(json!({"text": note}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["notes"], 1);

    // Handed back: the caller is told, and the agent answers the next turn knowing what the
    // human said.
    let (status, body) = post(&server, &path("release"), &op, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["taken_over_by"], Value::Null);
    assert_ne!(body["state"], "taken_over");
    let back = recv_until(&mut ws, "takeover_ended").await;
    assert!(
        !types(&back).iter().any(|k| k.starts_with("response")),
        "{back:?}"
    );
    send(
        &mut ws,
        json!({"type": "text", "text": "so what about that discount"}),
    )
    .await;
    let answer = recv_until(&mut ws, "response_done").await;
    let final_text = answer
        .iter()
        .find(|f| f["type"] == "response" && f["is_final"] == true)
        .unwrap();
    assert!(final_text.get("from").is_none(), "{final_text}");
    assert!(final_text["text"]
        .as_str()
        .unwrap()
        .starts_with("You said: so what about that discount."));
    let request = seen.lock().unwrap().last().unwrap().clone();
    let context: Vec<(String, String)> = request
        .messages
        .iter()
        .map(|m| (m.role.as_str().to_string(), m.content.clone()))
        .collect();
    let has = |role: &str, text: &str| context.iter().any(|(r, c)| r == role && c == text);
    assert!(has("user", "hello is anyone there"), "{context:?}");
    assert!(has("assistant", line), "{context:?}");
    assert!(has("system", note), "{context:?}");
    assert!(has("user", "so what about that discount"), "{context:?}");
    let pos = |role: &str, text: &str| context.iter().position(|(r, c)| r == role && c == text);
    assert!(pos("assistant", line) < pos("system", note));

    send(&mut ws, json!({"type": "end_call"})).await;
    recv_until(&mut ws, "call_ended").await;

    // The monitor and the stored log name the operator on each action.
    let events = until_ended(&mut watch, &call_id).await;
    let acted: Vec<(String, String)> = events
        .iter()
        .filter(|v| v.get("operator").is_some())
        .map(|v| {
            (
                v["type"].as_str().unwrap().to_string(),
                v["operator"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        "takeover_started",
        "operator_say",
        "operator_context",
        "takeover_ended",
    ]
    .iter()
    .map(|k| (k.to_string(), "sup".to_string()))
    .collect();
    assert_eq!(acted, expected);
    assert!(events
        .iter()
        .filter(|v| v["type"] != "live_calls")
        .all(|v| v["sub"] == "alice"));
    let response = events
        .iter()
        .find(|v| v["type"] == "response" && v["text"] == line)
        .unwrap();
    assert_eq!(response["from"], "operator");
    let svc = &server.state.call_services;
    assert!(svc.writer.flush(Duration::from_secs(10)).await);
    let log = svc.store.events(&call_id, 0, 1000).await.unwrap();
    let logged: Vec<(String, Value)> = log
        .iter()
        .filter(|e| e.data.get("operator").is_some())
        .map(|e| (e.kind.clone(), e.data["operator"].clone()))
        .collect();
    assert_eq!(
        logged,
        expected
            .iter()
            .map(|(k, o)| (k.clone(), json!(o)))
            .collect::<Vec<_>>()
    );
    // The stored items say who spoke: the operator's line and the note are marked.
    let items = svc.store.items(&call_id).await.unwrap();
    assert!(items
        .iter()
        .any(|i| i.source == "operator" && i.text == line && i.role == "assistant"));
    assert!(items
        .iter()
        .any(|i| i.source == "operator_note" && i.text == note && i.role == "system"));
}

#[tokio::test]
async fn operators_conflict_plainly_roles_and_orgs_are_checked_and_end_ends() {
    let (server, _) = recording_server(0).await;
    let (mut ws, call_id) = call_as(&server, "alice", Some("acme")).await;
    let path = |action: &str| format!("/api/calls/{call_id}/{action}");
    let one = token(&server, "sup1", Some("acme"), Role::Operator);
    let two = token(&server, "sup2", Some("acme"), Role::Operator);
    let boss = token(&server, "boss", Some("acme"), Role::Admin);
    let spy = token(&server, "spy", Some("globex"), Role::Operator);
    let caller = server
        .state
        .auth
        .issue("alice", Some("acme"), None, Duration::from_secs(600))
        .unwrap();

    // Roles and orgs.
    let (status, body) = post(&server, &path("takeover"), &caller, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, body) = post(&server, &path("takeover"), &spy, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _) = post(&server, "/api/calls/call_nope/takeover", &one, None).await;
    assert_eq!(status, 404);
    let (status, _) = post(&server, &path("takeover"), "not-a-token", None).await;
    assert_eq!(status, 401);

    // Saying or releasing needs the takeover.
    let (status, body) = post(&server, &path("say"), &one, Some(json!({"text": "hi"}))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("not_taken_over"))
    );
    let (status, body) = post(&server, &path("release"), &one, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("not_taken_over"))
    );

    // Two operators: the second is told who holds the call.
    assert_eq!(post(&server, &path("takeover"), &one, None).await.0, 200);
    assert_eq!(recv_until(&mut ws, "takeover_started").await.len(), 1);
    let (status, body) = post(&server, &path("takeover"), &two, None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "already_taken_over");
    assert_eq!(body["error"]["taken_over_by"], "sup1");
    let (status, body) = post(&server, &path("release"), &two, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("not_taken_over"))
    );
    assert_eq!(body["error"]["taken_over_by"], "sup1");
    let (status, _) = post(&server, &path("say"), &two, Some(json!({"text": "hi"}))).await;
    assert_eq!(status, 409);
    // Taking over again is no change for the holder.
    let (status, body) = post(&server, &path("takeover"), &one, None).await;
    assert_eq!(
        (status, body["taken_over_by"].as_str()),
        (200, Some("sup1"))
    );
    // Only an admin may force.
    let (status, _) = post(
        &server,
        &format!("{}?force=true", path("takeover")),
        &two,
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) = post(
        &server,
        &format!("{}?force=true", path("takeover")),
        &boss,
        None,
    )
    .await;
    assert_eq!(
        (status, body["taken_over_by"].as_str()),
        (200, Some("boss"))
    );
    // The caller hears the new takeover; nothing else.
    assert_eq!(recv_until(&mut ws, "takeover_started").await.len(), 1);

    // Bad bodies are refused with a code; nothing reaches the caller.
    let long = "a".repeat(2001);
    let (status, body) = post(&server, &path("say"), &boss, Some(json!({"text": long}))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("text_too_long"))
    );
    let (status, body) = post(&server, &path("say"), &boss, Some(json!({"text": "  "}))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_message"))
    );
    let r = reqwest::Client::new()
        .post(server.url(&path("context")))
        .bearer_auth(&boss)
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_json");
    let r = reqwest::Client::new()
        .post(server.url(&path("context")))
        .bearer_auth(&boss)
        .body(vec![b' '; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Notes are bounded.
    for i in 0..20 {
        let (status, body) = post(
            &server,
            &path("context"),
            &one,
            Some(json!({"text": format!("note {i}")})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = post(
        &server,
        &path("context"),
        &one,
        Some(json!({"text": "one more"})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("too_many_notes"))
    );
    assert!(frames_for(&mut ws, Duration::from_millis(300))
        .await
        .is_empty());

    // Ending: the caller hears why; afterwards the call takes no more commands.
    let (status, body) = post(&server, &path("end"), &two, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "ended");
    assert_eq!(body["end_reason"], "ended_by_operator");
    let ended = recv_until(&mut ws, "call_ended").await;
    assert_eq!(ended.last().unwrap()["reason"], "ended_by_operator");
    let (status, body) = post(&server, &path("takeover"), &one, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("call_ended"))
    );
    let svc = &server.state.call_services;
    assert!(svc.writer.flush(Duration::from_secs(10)).await);
    let log = svc.store.events(&call_id, 0, 1000).await.unwrap();
    let end = log.iter().find(|e| e.kind == "operator_end").unwrap();
    assert_eq!(end.data["operator"], "sup2");
    let row = svc.store.call(&call_id).await.unwrap().unwrap();
    assert_eq!(row.end_reason.as_deref(), Some("ended_by_operator"));
}

/// The operator socket of `call_id`, or the HTTP status that refused it.
async fn operator_socket(server: &TestServer, call_id: &str, token: &str) -> Result<Ws, u16> {
    let url = format!(
        "ws://{}/api/calls/{call_id}/operator?token={token}",
        server.addr
    );
    match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("cannot connect: {e}"),
    }
}

/// What an operator socket sent: JSON frames, and audio frames as (stream, rate, samples).
#[derive(Default)]
struct Heard {
    frames: Vec<Value>,
    audio: Vec<(u8, u16, usize)>,
}

/// Everything the socket sends until a JSON frame of type `until` (included).
async fn heard_until(ws: &mut Ws, until: &str) -> Heard {
    use tokio_tungstenite::tungstenite::Message;
    let mut heard = Heard::default();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for `{until}`"))
            .expect("socket closed")
            .expect("socket error");
        match msg {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                let done = v["type"] == until;
                heard.frames.push(v);
                if done {
                    return heard;
                }
            }
            Message::Binary(b) => {
                assert!(b.len() >= 4 && (b.len() - 4) % 2 == 0, "{} bytes", b.len());
                assert_eq!(b[1], 0);
                let rate = u16::from_le_bytes([b[2], b[3]]);
                heard.audio.push((b[0], rate, (b.len() - 4) / 2));
            }
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

/// Sends a command on an operator socket and returns its `result` frame.
async fn command(sock: &mut Ws, cmd: Value) -> Value {
    send(sock, cmd).await;
    let frames = heard_until(sock, "result").await.frames;
    frames.last().unwrap().clone()
}

async fn send_binary(ws: &mut Ws, bytes: Vec<u8>) {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::Binary(bytes.into())).await.unwrap();
}

#[tokio::test]
async fn the_operator_socket_streams_a_call_listens_in_and_speaks_with_the_operators_voice() {
    let (server, seen) = recording_server(20).await;
    let op = token(&server, "sup", None, Role::Operator);
    let (mut ws, call_id) = call_as(&server, "alice", None).await;
    send(
        &mut ws,
        json!({"type": "text", "text": "are you open today"}),
    )
    .await;
    recv_until(&mut ws, "metrics").await;

    let mut sock = operator_socket(&server, &call_id, &op).await.unwrap();
    let ready = heard_until(&mut sock, "operator_ready").await.frames;
    let ready = ready.last().unwrap();
    assert_eq!(ready["call"]["call_id"], call_id.as_str());
    assert_eq!(ready["call"]["sub"], "alice");
    assert_eq!(ready["audio"]["caller_rate"], 16000);
    let said: Vec<&str> = ready["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(said.first(), Some(&"are you open today"), "{ready}");
    assert_eq!(said.len(), 2, "{ready}");

    // Listening in: the caller's speech and the agent's reply, each its own stream, with the
    // call's events in order.
    send(
        &mut sock,
        json!({"type": "listen", "enabled": true, "id": 1}),
    )
    .await;
    let ok = heard_until(&mut sock, "result").await.frames;
    assert_eq!(ok.last().unwrap()["listening"], true);
    assert_eq!(ok.last().unwrap()["id"], 1);
    let mut pcm = tone_pcm16(300, 16_000, 0.0);
    pcm.extend(tone_pcm16(1_200, 16_000, 0.3));
    pcm.extend(tone_pcm16(1_500, 16_000, 0.0));
    stream_pcm16(&mut ws, &pcm, 16_000).await;
    let heard = heard_until(&mut sock, "metrics").await;
    let kinds: Vec<&str> = heard
        .frames
        .iter()
        .map(|f| f["type"].as_str().unwrap())
        // The first reply may still be playing when the caller speaks over it.
        .filter(|k| *k != "response_delta" && *k != "interrupted")
        .collect();
    assert_eq!(
        kinds,
        [
            "speech_started",
            "speech_stopped",
            "transcript",
            "response",
            "metrics"
        ],
        "{:?}",
        heard.frames
    );
    assert!(heard
        .frames
        .iter()
        .all(|f| f["call_id"] == call_id.as_str()));
    assert!(heard.frames.iter().any(|f| f["type"] == "response_delta"));
    let caller_samples: usize = heard
        .audio
        .iter()
        .filter(|a| a.0 == 1)
        .map(|a| {
            assert_eq!(a.1, 16_000);
            a.2
        })
        .sum();
    assert_eq!(caller_samples, pcm.len() / 2, "every caller sample, once");
    let tts_rate = server.state.call_services.engines.tts.sample_rate();
    let agent: Vec<_> = heard.audio.iter().filter(|a| a.0 == 2).collect();
    assert!(!agent.is_empty());
    assert!(agent.iter().all(|a| u32::from(a.1) == tts_rate));
    recv_until(&mut ws, "metrics").await;

    // Voice before taking over is refused once, not passed on.
    send_binary(&mut sock, tone_pcm16(100, 16_000, 0.3)).await;
    send_binary(&mut sock, tone_pcm16(100, 16_000, 0.3)).await;
    let refused = heard_until(&mut sock, "error").await.frames;
    assert_eq!(refused.last().unwrap()["code"], "not_taken_over");

    // Taking over over the socket; a second operator is told who holds the call.
    send(&mut sock, json!({"type": "takeover", "id": "t"})).await;
    let taken = heard_until(&mut sock, "result").await.frames;
    let result = taken.last().unwrap();
    assert_eq!(
        (result["id"].as_str(), result["command"].as_str()),
        (Some("t"), Some("takeover"))
    );
    assert_eq!(result["call"]["state"], "taken_over");
    recv_until(&mut ws, "takeover_started").await;
    let other = token(&server, "sup2", None, Role::Operator);
    let mut rival = operator_socket(&server, &call_id, &other).await.unwrap();
    heard_until(&mut rival, "operator_ready").await;
    send(&mut rival, json!({"type": "takeover"})).await;
    let no = heard_until(&mut rival, "error").await.frames;
    let no = no.last().unwrap();
    assert_eq!(no["code"], "already_taken_over");
    assert_eq!(no["taken_over_by"], "sup");
    drop(rival);

    // The operator's live voice reaches the caller as reply audio marked as theirs, and goes
    // into history as their words once they stop.
    for _ in 0..12 {
        send_binary(&mut sock, tone_pcm16(100, 16_000, 0.3)).await;
    }
    // The caller talks over it (another pitch than the operator's): heard, and not cutting the
    // operator off, as on any phone line.
    let over: Vec<u8> = (0..16_000 * 2)
        .map(|i| {
            let speaking = (4_800..24_000).contains(&i);
            let s = if speaking {
                (i as f32 * 290.0 * std::f32::consts::TAU / 16_000.0).sin() * 0.4
            } else {
                0.0
            };
            (s * 32767.0) as i16
        })
        .flat_map(i16::to_le_bytes)
        .collect();
    stream_pcm16(&mut ws, &over, 16_000).await;
    let mut line = recv_until(&mut ws, "speech_stopped").await;
    let ended = command(&mut sock, json!({"type": "voice_end"})).await;
    assert_eq!(ended["command"], "voice_end");
    line.extend(recv_until(&mut ws, "response_done").await);
    assert!(!types(&line).iter().any(|t| t == "interrupted"), "{line:?}");
    let audio: usize = line
        .iter()
        .filter(|f| f["type"] == "audio_response")
        .map(|f| {
            assert_eq!(f["from"], "operator", "{f}");
            f["audio"].as_str().unwrap().len()
        })
        .sum();
    assert!(audio > 0, "{line:?}");
    let text = line
        .iter()
        .find(|f| f["type"] == "response" && f["is_final"] == true)
        .unwrap();
    assert_eq!(text["text"], "audio of 1.2 seconds");
    assert_eq!(text["from"], "operator");
    assert_eq!(line.last().unwrap()["reason"], "completed");

    // Typed lines, release, and the agent answers knowing what the operator said.
    let said = command(
        &mut sock,
        json!({"type": "say", "text": "One moment please."}),
    )
    .await;
    assert_eq!(said["command"], "say");
    let typed = recv_until(&mut ws, "response_done").await;
    assert!(typed
        .iter()
        .any(|f| f["type"] == "response" && f["text"] == "One moment please."));
    send(&mut sock, json!({"type": "release"})).await;
    let back = heard_until(&mut sock, "result").await.frames;
    assert_eq!(back.last().unwrap()["call"]["taken_over_by"], Value::Null);
    recv_until(&mut ws, "takeover_ended").await;
    send(&mut ws, json!({"type": "text", "text": "thanks"})).await;
    let answer = recv_until(&mut ws, "response_done").await;
    assert!(answer.iter().any(|f| f["type"] == "response"
        && f["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("You said: thanks"))));
    let request = seen.lock().unwrap().last().unwrap().clone();
    let context: Vec<(&str, &str)> = request
        .messages
        .iter()
        .map(|m| (m.role.as_str(), m.content.as_str()))
        .collect();
    assert!(
        context.contains(&("assistant", "audio of 1.2 seconds")),
        "{context:?}"
    );
    assert!(
        context.contains(&("assistant", "One moment please.")),
        "{context:?}"
    );

    // Ending over the socket: the result, `call_ended`, then the socket closes.
    send(&mut sock, json!({"type": "end"})).await;
    let end = heard_until(&mut sock, "call_ended").await.frames;
    let result = end.iter().find(|f| f["type"] == "result").unwrap();
    assert_eq!(result["call"]["end_reason"], "ended_by_operator");
    assert_eq!(end.last().unwrap()["reason"], "ended_by_operator");
    assert_eq!(recv_close(&mut sock).await, Some(1000));
    let svc = &server.state.call_services;
    assert!(svc.writer.flush(Duration::from_secs(10)).await);
    let items = svc.store.items(&call_id).await.unwrap();
    assert!(items.iter().any(|i| i.source == "operator"
        && i.role == "assistant"
        && i.text == "audio of 1.2 seconds"));
}

#[tokio::test]
async fn the_operator_socket_refuses_callers_other_orgs_ended_calls_and_bad_frames() {
    let (server, _) = recording_server(0).await;
    let (mut ws, call_id) = call_as(&server, "alice", Some("acme")).await;
    let op = token(&server, "sup", Some("acme"), Role::Operator);
    let spy = token(&server, "spy", Some("globex"), Role::Operator);
    let caller = server
        .state
        .auth
        .issue("alice", Some("acme"), None, Duration::from_secs(600))
        .unwrap();
    assert_eq!(
        operator_socket(&server, &call_id, &caller).await.err(),
        Some(403)
    );
    assert_eq!(
        operator_socket(&server, &call_id, &spy).await.err(),
        Some(404)
    );
    assert_eq!(
        operator_socket(&server, "call_nope", &op).await.err(),
        Some(404)
    );
    assert_eq!(
        operator_socket(&server, &call_id, "bad").await.err(),
        Some(401)
    );

    let mut sock = operator_socket(&server, &call_id, &op).await.unwrap();
    heard_until(&mut sock, "operator_ready").await;
    let code = |frames: Vec<Value>| frames.last().unwrap()["code"].as_str().unwrap().to_string();
    send_raw(&mut sock, "{nope").await;
    assert_eq!(
        code(heard_until(&mut sock, "error").await.frames),
        "invalid_json"
    );
    send(&mut sock, json!({"type": "dance", "id": 5})).await;
    let e = heard_until(&mut sock, "error").await.frames;
    assert_eq!(e.last().unwrap()["id"], 5);
    assert_eq!(code(e), "invalid_message");
    send(&mut sock, json!({"type": "say"})).await;
    assert_eq!(
        code(heard_until(&mut sock, "error").await.frames),
        "invalid_message"
    );
    send(&mut sock, json!({"type": "listen"})).await;
    assert_eq!(
        code(heard_until(&mut sock, "error").await.frames),
        "invalid_message"
    );
    send(&mut sock, json!({"type": "takeover", "force": true})).await;
    assert_eq!(
        code(heard_until(&mut sock, "error").await.frames),
        "forbidden"
    );
    send_raw(
        &mut sock,
        &format!("{{\"type\":\"say\",\"text\":\"{}\"}}", "a".repeat(10_000)),
    )
    .await;
    assert_eq!(
        code(heard_until(&mut sock, "error").await.frames),
        "payload_too_large"
    );
    send(
        &mut sock,
        json!({"type": "context", "text": "b".repeat(2001)}),
    )
    .await;
    assert_eq!(
        code(heard_until(&mut sock, "error").await.frames),
        "text_too_long"
    );
    send_binary(&mut sock, vec![0; 40_000]).await;
    assert_eq!(
        code(heard_until(&mut sock, "error").await.frames),
        "payload_too_large"
    );
    // The call is unharmed.
    assert_alive(&mut ws).await;

    // A call that ended: its socket closes after `call_ended`; a new one is refused.
    send(&mut ws, json!({"type": "end_call"})).await;
    recv_until(&mut ws, "call_ended").await;
    let end = heard_until(&mut sock, "call_ended").await.frames;
    assert_eq!(end.last().unwrap()["reason"], "client_ended");
    assert_eq!(recv_close(&mut sock).await, Some(1000));
    assert_eq!(
        operator_socket(&server, &call_id, &op).await.err(),
        Some(409)
    );
}
