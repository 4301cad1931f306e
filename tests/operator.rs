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
