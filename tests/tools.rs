//! Tools for language models that call functions: the OpenAI-compatible engine sends `tools`
//! and puts streamed `tool_calls` together; calls over a real socket with the fake language
//! model calling HTTP tools on a local tool server (results, timeouts, 500s, bad JSON), the
//! built-ins `end_call`, `transfer` and `take_message`, and barge-in during a tool call.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use common::hosted::{spec, KEY};
use common::providers::{FakeProvider, Route, DEFAULT_REPLY};
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use voxwire::agents::Agents;
use voxwire::engines::llm::fake::FakeLlm;
use voxwire::engines::llm::openai::OpenAiLlm;
use voxwire::engines::llm::{
    ChatMessage, ChatRequest, LanguageModel, ToolCall, ToolDef, ToolOffer,
};
use voxwire::engines::Engines;
use voxwire::Config;

/// The environment variable the weather tool's `Authorization` comes from.
const TOKEN_ENV: &str = "VOXWIRE_TEST_TOOL_TOKEN";
const TOKEN: &str = "Bearer tool-secret-123";

// ---- the OpenAI-compatible engine ----

#[tokio::test]
async fn the_openai_engine_sends_tools_and_puts_streamed_calls_together() {
    let fake = FakeProvider::start().await;
    fake.require_key(KEY);
    let llm = OpenAiLlm::new("openai", &spec(&fake, "openai")).unwrap();
    let tools: Arc<[ToolDef]> = vec![ToolDef {
        name: "weather".into(),
        description: "The weather in a city.".into(),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
    }]
    .into();
    let offer = ToolOffer::new(tools.clone());
    fake.push_tool_calls(&[
        (
            "call_a",
            "weather",
            r#"{"city": "Oslo", "unit": "celsius"}"#,
        ),
        ("call_b", "end_call", "{}"),
    ]);
    let request = ChatRequest {
        session_id: "call-1".into(),
        system: "You are terse.".into(),
        messages: vec![ChatMessage::user("weather in Oslo?")],
        max_tokens: 50,
        temperature: 0.2,
        json: false,
        tokens: None,
        tools: Some(offer.clone()),
        first_words: None,
    };
    let mut s = llm.stream(request.clone(), CancellationToken::new());
    let mut text = String::new();
    while let Some(d) = s.next().await {
        text.push_str(&d.unwrap());
    }
    assert_eq!(text, "", "a reply that only calls tools says nothing");
    let calls = offer.take_calls();
    assert_eq!(
        calls,
        vec![
            ToolCall {
                id: "call_a".into(),
                name: "weather".into(),
                arguments: r#"{"city": "Oslo", "unit": "celsius"}"#.into(),
            },
            ToolCall {
                id: "call_b".into(),
                name: "end_call".into(),
                arguments: "{}".into(),
            },
        ]
    );
    let body = fake.last(Route::ChatCompletions).unwrap().json.unwrap();
    assert_eq!(body["tools"][0]["type"], "function");
    assert_eq!(body["tools"][0]["function"]["name"], "weather");
    assert_eq!(
        body["tools"][0]["function"]["parameters"]["properties"]["city"]["type"],
        "string"
    );

    // The next round carries the calls and their results in the API's format.
    let mut next = request;
    next.messages
        .push(ChatMessage::tool_calls("", vec![calls[0].clone()]));
    next.messages.push(ChatMessage::tool_result(
        "call_a",
        r#"{"forecast":"sunny"}"#,
    ));
    next.tools = Some(ToolOffer::new(tools));
    let mut s = llm.stream(next, CancellationToken::new());
    let mut text = String::new();
    while let Some(d) = s.next().await {
        text.push_str(&d.unwrap());
    }
    assert_eq!(text, DEFAULT_REPLY);
    let body = fake.last(Route::ChatCompletions).unwrap().json.unwrap();
    let messages = body["messages"].as_array().unwrap();
    let call = &messages[2];
    assert_eq!(call["role"], "assistant");
    assert_eq!(call["tool_calls"][0]["id"], "call_a");
    assert_eq!(call["tool_calls"][0]["type"], "function");
    assert_eq!(call["tool_calls"][0]["function"]["name"], "weather");
    assert_eq!(
        call["tool_calls"][0]["function"]["arguments"],
        r#"{"city": "Oslo", "unit": "celsius"}"#
    );
    assert_eq!(messages[3]["role"], "tool");
    assert_eq!(messages[3]["tool_call_id"], "call_a");
    assert_eq!(messages[3]["content"], r#"{"forecast":"sunny"}"#);
}

// ---- calls with tools ----

/// What the tool server was asked: path, `Authorization`, `Voxwire-Call-Id`, body or query.
type Seen = Arc<Mutex<Vec<(String, Option<String>, Option<String>, String)>>>;

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A local tool server: `/weather` (JSON), `/lookup` (GET, echoes its query), `/slow` (never
/// answers in time), `/fail` (500), `/bad` (not JSON).
async fn tool_server() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let note = |path: &'static str| {
        move |State(seen): State<Seen>, headers: HeaderMap, body: String| async move {
            seen.lock().unwrap().push((
                path.to_string(),
                header(&headers, "authorization"),
                header(&headers, "voxwire-call-id"),
                body,
            ));
        }
    };
    let app = Router::new()
        .route(
            "/weather",
            post(move |s: State<Seen>, h: HeaderMap, b: String| async move {
                note("/weather")(s, h, b).await;
                axum::Json(json!({"forecast": "sunny", "high_c": 21}))
            }),
        )
        .route(
            "/lookup",
            get(
                move |s: State<Seen>, h: HeaderMap, q: axum::extract::RawQuery| async move {
                    let query = q.0.unwrap_or_default();
                    note("/lookup")(s, h, query.clone()).await;
                    axum::Json(json!(format!("found {query}")))
                },
            ),
        )
        .route(
            "/slow",
            post(move |s: State<Seen>, h: HeaderMap, b: String| async move {
                note("/slow")(s, h, b).await;
                tokio::time::sleep(Duration::from_secs(60)).await;
                axum::Json(json!({"late": true}))
            }),
        )
        .route(
            "/fail",
            post(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route("/bad", post(|| async { "{not json" }))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), seen)
}

fn agents(base: &str) -> Agents {
    Agents::parse(&format!(
        r#"
default = "desk"
[[agent]]
name = "desk"
system_prompt = "You answer the phone."

[[agent.tools]]
name = "weather"
description = "The weather in a city."
kind = "http"
url = "{base}/weather"
auth_header_env = "{TOKEN_ENV}"
[agent.tools.parameters]
type = "object"
[agent.tools.parameters.properties.city]
type = "string"

[[agent.tools]]
name = "lookup"
kind = "http"
method = "GET"
url = "{base}/lookup"

[[agent.tools]]
name = "slow"
kind = "http"
url = "{base}/slow"
timeout_ms = 300

[[agent.tools]]
name = "patient"
kind = "http"
url = "{base}/slow"
timeout_ms = 30000

[[agent.tools]]
name = "fail"
kind = "http"
url = "{base}/fail"

[[agent.tools]]
name = "bad"
kind = "http"
url = "{base}/bad"

[[agent.tools]]
name = "hang_up"
kind = "end_call"

[[agent.tools]]
name = "transfer"
kind = "transfer"

[[agent.tools]]
name = "note"
kind = "take_message"
"#
    ))
    .unwrap()
}

/// A server with fake engines whose language model writes a word every `word_ms` and calls
/// the tools of [`agents`].
async fn server(word_ms: u64) -> (TestServer, Seen) {
    // Once for the whole binary (Rust's own reads of the environment are locked).
    static SET: std::sync::Once = std::sync::Once::new();
    SET.call_once(|| std::env::set_var(TOKEN_ENV, TOKEN));
    let (base, seen) = tool_server().await;
    let mut config = Config::for_tests();
    config.agents = agents(&base);
    let mut engines = Engines::fake();
    engines.llm = Arc::new(FakeLlm {
        word_delay: Duration::from_millis(word_ms),
    });
    (start_with(config, engines).await, seen)
}

/// Sends a typed turn and returns its final reply text.
async fn say(ws: &mut Ws, text: &str) -> String {
    send(ws, json!({"type": "text", "text": text})).await;
    let frames = recv_until(ws, "response_done").await;
    let done = frames.last().unwrap();
    assert_eq!(done["reason"], "completed", "{frames:?}");
    frames
        .iter()
        .find(|f| f["type"] == "response" && f["is_final"] == true)
        .map(|f| f["text"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

/// The call's event log (kind, data), once its writes are in.
async fn event_log(server: &TestServer, call_id: &str) -> Vec<(String, Value)> {
    let svc = &server.state.call_services;
    assert!(svc.writer.flush(Duration::from_secs(10)).await);
    svc.store
        .events(call_id, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.kind, e.data))
        .collect()
}

async fn history_json(server: &TestServer, call_id: &str) -> Vec<Value> {
    let body: Value = reqwest::Client::new()
        .get(server.url(&format!("/api/calls/{call_id}")))
        .bearer_auth(server.token("alice"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["messages"].as_array().unwrap().clone()
}

#[tokio::test]
async fn an_http_tool_result_is_spoken_and_kept_in_history_and_the_event_log() {
    let (server, seen) = server(0).await;
    let mut feed = server.state.call_services.feed.subscribe(false);
    let (mut ws, call_id) = server.call("alice", json!({})).await;
    let reply = say(&mut ws, r#"Let me check. [tool:weather {"city": "Oslo"}]"#).await;
    assert_eq!(
        reply,
        r#"Let me check. Tool weather said: {"forecast":"sunny","high_c":21}."#
    );
    {
        let seen = seen.lock().unwrap();
        let (path, auth, id, body) = &seen[0];
        assert_eq!(path, "/weather");
        assert_eq!(auth.as_deref(), Some(TOKEN));
        assert_eq!(id.as_deref(), Some(call_id.as_str()));
        assert_eq!(
            serde_json::from_str::<Value>(body).unwrap(),
            json!({"city": "Oslo"})
        );
    }
    // GET sends the arguments as a query; a JSON string answer is given as its text.
    let reply = say(&mut ws, r#"[tool:lookup {"q": "opening hours"}]"#).await;
    assert_eq!(reply, "Tool lookup said: found q=opening+hours.");

    // History: the call, its result, then the spoken reply.
    let messages = history_json(&server, &call_id).await;
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        [
            "user",
            "assistant",
            "tool",
            "assistant",
            "user",
            "assistant",
            "tool",
            "assistant"
        ]
    );
    assert_eq!(messages[1]["tool_calls"][0]["name"], "weather");
    assert_eq!(
        messages[2]["tool_call_id"],
        messages[1]["tool_calls"][0]["id"]
    );
    assert!(messages[2]["content"].as_str().unwrap().contains("sunny"));

    // The event log and the monitor feed.
    let log = event_log(&server, &call_id).await;
    let call = log.iter().find(|(k, _)| k == "tool_call").unwrap();
    assert_eq!(call.1["name"], "weather");
    assert_eq!(call.1["arguments"], r#"{"city": "Oslo"}"#);
    let result = log.iter().find(|(k, _)| k == "tool_result").unwrap();
    assert_eq!(result.1["ok"], true);
    assert_eq!(result.1["error"], Value::Null);
    assert!(result.1["result"].as_str().unwrap().contains("sunny"));
    let mut kinds = Vec::new();
    while let Ok(Some(voxwire::call::FeedItem::Event(e))) =
        tokio::time::timeout(Duration::from_millis(200), feed.recv()).await
    {
        kinds.push(e.kind.clone());
    }
    assert!(kinds.contains(&"tool_call".to_string()), "{kinds:?}");
    assert!(kinds.contains(&"tool_result".to_string()), "{kinds:?}");
    // The caller's socket is not told of tools.
    send(&mut ws, json!({"type": "end_call"})).await;
    let frames = recv_until(&mut ws, "call_ended").await;
    assert!(frames.iter().all(|f| f["type"] != "tool_call"));
}

#[tokio::test]
async fn tool_faults_become_answers_and_the_call_goes_on() {
    let (server, _) = server(0).await;
    let (mut ws, call_id) = server.call("alice", json!({})).await;
    let started = std::time::Instant::now();
    let reply = say(&mut ws, "[tool:slow]").await;
    assert_eq!(
        reply,
        r#"Tool slow said: {"error":"the tool did not answer within 300 ms"}."#
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let reply = say(&mut ws, "[tool:fail]").await;
    assert!(reply.contains("the tool answered HTTP 500"), "{reply}");
    let reply = say(&mut ws, "[tool:bad]").await;
    assert!(reply.contains("the tool's answer is not JSON"), "{reply}");
    let reply = say(&mut ws, r#"[tool:weather not json]"#).await;
    assert!(
        reply.contains("the arguments must be a JSON object"),
        "{reply}"
    );
    let reply = say(&mut ws, "still there?").await;
    assert_eq!(reply, "You said: still there?. That is turn 5.");
    let log = event_log(&server, &call_id).await;
    let errors: Vec<&Value> = log
        .iter()
        .filter(|(k, _)| k == "tool_result")
        .map(|(_, d)| &d["error"])
        .collect();
    assert_eq!(
        errors,
        [
            &json!("timeout"),
            &json!("http_status"),
            &json!("bad_json"),
            &json!("bad_arguments")
        ]
    );
}

#[tokio::test]
async fn end_call_ends_the_call_once_the_reply_is_said() {
    let (server, _) = server(0).await;
    let (mut ws, call_id) = server.call("alice", json!({})).await;
    send(
        &mut ws,
        json!({"type": "text", "text": "Goodbye then. [tool:hang_up]"}),
    )
    .await;
    let frames = recv_until(&mut ws, "call_ended").await;
    let types: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    let pos = |t: &str| types.iter().position(|x| *x == t).unwrap();
    assert!(pos("audio_response") < pos("response_done"));
    assert!(pos("response_done") < pos("call_ended"));
    let ended = frames.last().unwrap();
    assert_eq!(ended["reason"], "agent_ended");
    assert_eq!(ended["call_id"], call_id.as_str());
    let reply = frames
        .iter()
        .find(|f| f["type"] == "response" && f["is_final"] == true)
        .unwrap();
    assert!(reply["text"].as_str().unwrap().starts_with("Goodbye then."));
}

#[tokio::test]
async fn transfer_ends_the_call_and_logs_the_target_and_messages_are_logged() {
    let (server, _) = server(0).await;
    let (mut ws, call_id) = server.call("alice", json!({})).await;
    let reply = say(
        &mut ws,
        r#"[tool:note {"name": "Ada", "callback": "the front desk", "message": "Please call back"}]"#,
    )
    .await;
    assert!(reply.contains("the message is taken"), "{reply}");
    send(
        &mut ws,
        json!({"type": "text", "text": r#"One moment. [tool:transfer {"to": "sales"}]"#}),
    )
    .await;
    let frames = recv_until(&mut ws, "call_ended").await;
    assert_eq!(frames.last().unwrap()["reason"], "transferred");
    let log = event_log(&server, &call_id).await;
    let message = log.iter().find(|(k, _)| k == "message_taken").unwrap();
    assert_eq!(
        (
            &message.1["name"],
            &message.1["callback"],
            &message.1["message"]
        ),
        (
            &json!("Ada"),
            &json!("the front desk"),
            &json!("Please call back")
        )
    );
    let transfer = log.iter().find(|(k, _)| k == "transferred").unwrap();
    assert_eq!(transfer.1["to"], "sales");
    let ended = log.iter().find(|(k, _)| k == "call_ended").unwrap();
    assert_eq!(ended.1["reason"], "transferred");
}

#[tokio::test]
async fn barge_in_during_a_slow_tool_cancels_it_and_the_call_goes_on() {
    let (server, seen) = server(0).await;
    let (mut ws, call_id) = server.call("alice", json!({})).await;
    send(
        &mut ws,
        json!({"type": "text", "text": "Hold on. [tool:patient] [tool:hang_up]"}),
    )
    .await;
    // The tool is running: the caller speaks over the reply.
    for _ in 0..200 {
        if !seen.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(seen.lock().unwrap()[0].0, "/slow");
    send(&mut ws, json!({"type": "interrupt"})).await;
    let frames = recv_until(&mut ws, "response_done").await;
    assert_eq!(
        frames.last().unwrap()["reason"],
        "interrupted",
        "{frames:?}"
    );
    // The call goes on; the end_call after the cancelled tool never ran.
    let reply = say(&mut ws, "are you there").await;
    assert_eq!(reply, "You said: are you there. That is turn 2.");
    let log = event_log(&server, &call_id).await;
    let results: Vec<&Value> = log
        .iter()
        .filter(|(k, _)| k == "tool_result")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(results[0]["error"], "cancelled");
    assert_eq!(results[0]["name"], "patient");
    // History stays whole: the call and its cancelled result.
    let messages = history_json(&server, &call_id).await;
    let tool = messages.iter().find(|m| m["role"] == "tool").unwrap();
    assert!(tool["content"].as_str().unwrap().contains("cancelled"));
    send(&mut ws, json!({"type": "end_call"})).await;
    let frames = recv_until(&mut ws, "call_ended").await;
    assert_eq!(frames.last().unwrap()["reason"], "client_ended");
}

#[tokio::test]
async fn an_interrupted_reply_does_not_end_the_call() {
    let (server, _) = server(150).await;
    let (mut ws, _) = server.call("alice", json!({})).await;
    send(&mut ws, json!({"type": "text", "text": "[tool:hang_up]"})).await;
    // end_call has answered and the reply after it is being written: cut it short.
    loop {
        let f = recv(&mut ws).await;
        if f["type"] == "response" && f["delta"].as_str().is_some_and(|d| d.contains("Tool")) {
            break;
        }
    }
    send(&mut ws, json!({"type": "interrupt"})).await;
    let frames = recv_until(&mut ws, "response_done").await;
    assert_eq!(frames.last().unwrap()["reason"], "interrupted");
    let reply = say(&mut ws, "hello").await;
    assert!(reply.starts_with("You said: hello."), "{reply}");
    send(&mut ws, json!({"type": "end_call"})).await;
    let frames = recv_until(&mut ws, "call_ended").await;
    assert_eq!(frames.last().unwrap()["reason"], "client_ended");
}

#[tokio::test]
async fn a_message_taken_reaches_the_agents_webhook_masked() {
    // A receiver that keeps every body it is sent.
    let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = Router::new()
        .route(
            "/hook",
            post(
                |State(b): State<Arc<Mutex<Vec<Value>>>>, body: String| async move {
                    b.lock().unwrap().push(serde_json::from_str(&body).unwrap());
                },
            ),
        )
        .with_state(bodies.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut config = Config::for_tests();
    config.agents = Agents::parse(&format!(
        "[[agent]]\nname = \"desk\"\nsystem_prompt = \"p\"\nredact = [\"phone\"]\n\
         webhook_url = \"{url}\"\nwebhook_secret_env = \"HOOK_SECRET\"\n\
         [[agent.tools]]\nname = \"note\"\nkind = \"take_message\"\n"
    ))
    .unwrap();
    let env = std::collections::HashMap::from([(
        "HOOK_SECRET".to_string(),
        "whsec-test-secret-0123456789abcdef".to_string(),
    )]);
    config.webhooks = voxwire::config::WebhookSettings {
        poll: Duration::from_millis(20),
        ..voxwire::config::WebhookSettings::from_env(&env, &config.agents).unwrap()
    };
    let server = start_with(config, Engines::fake()).await;
    let (mut ws, call_id) = server.call("alice", json!({})).await;
    say(
        &mut ws,
        r#"[tool:note {"name": "Ada", "callback": "555 123 4567", "message": "About my crown"}]"#,
    )
    .await;
    let mut message = None;
    for _ in 0..400 {
        message = bodies
            .lock()
            .unwrap()
            .iter()
            .find(|b| b["type"] == "message.taken")
            .cloned();
        if message.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let message = message.expect("message.taken is delivered");
    let data = &message["data"];
    assert_eq!(data["call_id"], call_id.as_str());
    assert_eq!(data["agent"], "desk");
    assert_eq!(
        (&data["name"], &data["callback"], &data["message"]),
        (&json!("Ada"), &json!("[phone]"), &json!("About my crown"))
    );
    // The tool call itself, with its arguments and result, masked alike.
    let mut called = None;
    for _ in 0..400 {
        called = (bodies.lock().unwrap().iter())
            .find(|b| b["type"] == "tool.called")
            .cloned();
        if called.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let called = called.expect("tool.called is delivered");
    let data = &called["data"];
    assert_eq!((&data["name"], &data["ok"]), (&json!("note"), &json!(true)));
    let arguments: Value = serde_json::from_str(data["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments["callback"], "[phone]", "{data}");
    assert_eq!(arguments["name"], "Ada");
    assert!(data["result"].as_str().unwrap().contains("ok"), "{data}");
    // The event log is masked the same way.
    let log = event_log(&server, &call_id).await;
    let taken = log.iter().find(|(k, _)| k == "message_taken").unwrap();
    assert_eq!(taken.1["callback"], "[phone]");
}
