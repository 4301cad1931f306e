//! Agents' flows over a live call (voxwire socket, fake engines): business hours, a menu by key
//! and by spoken word, answers captured and checked, a silence that asks again, the model at an
//! `llm` node until an exit phrase, a transfer to a number, the operators' queue, a hangup.
//! The flow's steps are in the event log; a bad flow is refused at load and by the agents API.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use voxwire::auth::Role;
use voxwire::Config;

const AGENTS: &str = r#"
default = "clinic"

[[agent]]
name = "clinic"
system_prompt = "You are Oak Clinic's receptionist."

[agent.flow]
start = "welcome"

[agent.flow.nodes.welcome]
type = "say"
say = "Thanks for calling Oak Clinic."
next = "hours"

[agent.flow.nodes.hours]
type = "hours"
time_zone = "Europe/London"
open = { mon = "00:00-24:00", tue = "00:00-24:00", wed = "00:00-24:00", thu = "00:00-24:00", fri = "00:00-24:00", sat = "00:00-24:00", sun = "00:00-24:00" }
open_next = "menu"
closed_next = "closed"

[agent.flow.nodes.closed]
type = "hangup"
say = "We are closed."

[agent.flow.nodes.menu]
type = "menu"
say = "For bookings press 1 or say booking. For questions press 2. For the desk press 0. To be put through to sales press 9."
options = [
  { digit = "1", keywords = ["booking", "appointment"], next = "name" },
  { digit = "2", keywords = ["question"], next = "chat" },
  { digit = "0", keywords = ["desk"], next = "desk" },
  { digit = "9", keywords = ["sales"], next = "sales" },
]
retries = 1
timeout_ms = 1000
retry_say = "Sorry, I didn't get that."
fail_next = "desk"

[agent.flow.nodes.name]
type = "listen"
say = "What is your name?"
variable = "name"
next = "dob"

[agent.flow.nodes.dob]
type = "listen"
say = "Your date of birth as eight digits, then the hash key."
variable = "dob"
expect = "digits"
pattern = "^[0-9]{8}$"
next = "confirm"

[agent.flow.nodes.confirm]
type = "listen"
say = "{{name}}, born {{dob}}. Is that right?"
variable = "confirmed"
expect = "yes_no"
next = "booked"

[agent.flow.nodes.booked]
type = "hangup"
say = "You're booked, {{name}}. Goodbye."

[agent.flow.nodes.chat]
type = "llm"
say = "Ask away."
prompt = "Answer questions about Oak Clinic."
exit_phrases = ["that's all"]
next = "bye"

[agent.flow.nodes.bye]
type = "hangup"
say = "Goodbye."

[agent.flow.nodes.desk]
type = "transfer"
say = "Please hold for the desk."
to = "operators"

[agent.flow.nodes.sales]
type = "transfer"
say = "Putting you through to sales."
to = "+15550001234"

[[agent]]
name = "night"
system_prompt = "You are closed."

[agent.flow]
start = "hours"

[agent.flow.nodes.hours]
type = "hours"
time_zone = "Asia/Tokyo"
holidays = ["2026-01-01"]
open_next = "open"
closed_next = "closed"

[agent.flow.nodes.open]
type = "llm"

[agent.flow.nodes.closed]
type = "hangup"
say = "We are closed. Please call again tomorrow."
"#;

const MENU: &str = "For bookings press 1 or say booking. For questions press 2. For the desk \
                    press 0. To be put through to sales press 9.";

async fn server() -> TestServer {
    let mut config = Config::for_tests();
    config.agents = voxwire::agents::Agents::parse(AGENTS).unwrap();
    start_with(config, voxwire::engines::Engines::fake()).await
}

/// The agent's next complete line.
async fn said(ws: &mut Ws) -> String {
    let frames = recv_until(ws, "response_done").await;
    frames
        .iter()
        .rev()
        .find(|f| f["type"] == "response" && f["is_final"] == true)
        .map(|f| f["text"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

async fn text(ws: &mut Ws, words: &str) {
    send(ws, json!({"type": "text", "text": words})).await;
}

async fn keys(ws: &mut Ws, digits: &str) {
    send(ws, json!({"type": "dtmf", "digits": digits})).await;
}

async fn ended(ws: &mut Ws) -> Value {
    recv_until(ws, "call_ended").await.pop().unwrap()
}

async fn events(server: &TestServer, call_id: &str, kind: &str) -> Vec<Value> {
    let svc = &server.state.call_services;
    assert!(svc.writer.flush(Duration::from_secs(10)).await);
    svc.store
        .events(call_id, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.data)
        .collect()
}

#[tokio::test]
async fn a_booking_by_keys_and_words_is_captured_confirmed_and_ended() {
    let server = server().await;
    let (mut ws, call_id) = server.call("alice", json!({})).await;
    assert_eq!(
        said(&mut ws).await,
        format!("Thanks for calling Oak Clinic. {MENU}")
    );
    keys(&mut ws, "1").await;
    // A single key is an entry once the keypad pauses.
    assert_eq!(said(&mut ws).await, "What is your name?");
    text(&mut ws, "Alex Smith.").await;
    assert_eq!(
        said(&mut ws).await,
        "Your date of birth as eight digits, then the hash key."
    );
    // Spoken digits that are not eight: asked again; then keyed.
    text(&mut ws, "one two three").await;
    assert_eq!(
        said(&mut ws).await,
        "Sorry, I didn't catch that. Your date of birth as eight digits, then the hash key."
    );
    keys(&mut ws, "01021990#").await;
    assert_eq!(
        said(&mut ws).await,
        "Alex Smith, born 01021990. Is that right?"
    );
    text(&mut ws, "Yes, that's right.").await;
    assert_eq!(said(&mut ws).await, "You're booked, Alex Smith. Goodbye.");
    let end = ended(&mut ws).await;
    assert_eq!(end["reason"], "agent_ended", "{end}");

    let steps = events(&server, &call_id, "flow").await;
    let paths: Vec<Value> = steps.iter().map(|s| s["path"].clone()).collect();
    assert_eq!(
        paths,
        vec![
            json!(["welcome", "hours", "menu"]),
            json!(["name"]),
            json!(["dob"]),
            json!([]),
            json!(["confirm"]),
            json!(["booked"]),
        ]
    );
    let captured: Vec<&Value> = steps.iter().filter_map(|s| s.get("captured")).collect();
    assert_eq!(
        captured,
        vec![
            &json!({"name": "Alex Smith"}),
            &json!({"dob": "01021990"}),
            &json!({"confirmed": "yes"})
        ]
    );
    // The caller's keys are in history as they were pressed.
    let call: Value = reqwest::Client::new()
        .get(server.url(&format!("/api/calls/{call_id}")))
        .bearer_auth(server.token("alice"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keyed: Vec<&Value> = call["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["source"] == "dtmf")
        .map(|i| &i["text"])
        .collect();
    assert_eq!(
        keyed,
        ["Pressed keys: 1", "Pressed keys: 0 1 0 2 1 9 9 0 #"],
        "{call}"
    );
}

#[tokio::test]
async fn a_spoken_keyword_picks_the_option_and_the_model_answers_until_an_exit_phrase() {
    let server = server().await;
    let (mut ws, _) = server.call("alice", json!({})).await;
    said(&mut ws).await;
    text(&mut ws, "I have a question, please.").await;
    assert_eq!(said(&mut ws).await, "Ask away.");
    text(&mut ws, "Do you do flu jabs?").await;
    // The fake model echoes the caller: the model, not the flow, answered.
    assert_eq!(
        said(&mut ws).await,
        "You said: Do you do flu jabs?. That is turn 2."
    );
    text(&mut ws, "OK, that's all.").await;
    assert_eq!(said(&mut ws).await, "Goodbye.");
    assert_eq!(ended(&mut ws).await["reason"], "agent_ended");
}

#[tokio::test]
async fn a_silent_caller_is_asked_again_then_put_in_the_operators_queue() {
    let server = server().await;
    let (mut ws, call_id) = server.call("alice", json!({})).await;
    said(&mut ws).await;
    // Nothing for the menu's second: asked again, once.
    assert_eq!(
        said(&mut ws).await,
        format!("Sorry, I didn't get that. {MENU}")
    );
    // Still nothing: the menu's fail_next puts the caller through to the desk.
    assert_eq!(said(&mut ws).await, "Please hold for the desk.");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let live = server.state.calls.live_in_org(None);
    let call = live.iter().find(|c| c.call_id == call_id).unwrap();
    assert_eq!(
        serde_json::to_value(call.state).unwrap(),
        json!("waiting"),
        "the call waits for an operator"
    );
    // The caller's words are transcribed, not answered, while the call waits.
    text(&mut ws, "Hello? Anyone there?").await;
    let frames = recv_until(&mut ws, "transcript").await;
    assert_eq!(frames.last().unwrap()["text"], "Hello? Anyone there?");
    assert!(!frames.iter().any(|f| f["type"] == "response"));

    // An operator takes the call from the queue.
    let op = server
        .state
        .auth
        .issue_with_role("sam", None, None, Role::Operator, Duration::from_secs(600))
        .unwrap();
    let r = reqwest::Client::new()
        .post(server.url(&format!("/api/calls/{call_id}/takeover")))
        .bearer_auth(&op)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let view: Value = r.json().await.unwrap();
    assert_eq!(view["state"], "taken_over", "{view}");
    send(&mut ws, json!({"type": "end_call"})).await;
    ended(&mut ws).await;
    let kinds: Vec<String> = {
        let svc = &server.state.call_services;
        assert!(svc.writer.flush(Duration::from_secs(10)).await);
        svc.store
            .events(&call_id, 0, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .filter(|k| ["flow", "queued", "takeover_started"].contains(&k.as_str()))
            .collect()
    };
    assert_eq!(
        kinds,
        ["flow", "flow", "flow", "queued", "takeover_started"],
        "the start, the retry, the desk, the queue, the operator"
    );
}

#[tokio::test]
async fn a_transfer_to_a_number_ends_the_call_as_transferred() {
    let server = server().await;
    let (mut ws, call_id) = server.call("alice", json!({})).await;
    said(&mut ws).await;
    text(&mut ws, "Nine.").await;
    assert_eq!(said(&mut ws).await, "Putting you through to sales.");
    assert_eq!(ended(&mut ws).await["reason"], "transferred");
    let to = events(&server, &call_id, "transferred").await;
    assert_eq!(to.len(), 1);
    assert_eq!(to[0]["to"], "+15550001234");
}

#[tokio::test]
async fn closed_hours_say_so_and_hang_up() {
    let server = server().await;
    let (mut ws, _) = server.call("alice", json!({"agent": "night"})).await;
    // `night` lists no opening hours: always closed.
    assert_eq!(
        said(&mut ws).await,
        "We are closed. Please call again tomorrow."
    );
    assert_eq!(ended(&mut ws).await["reason"], "agent_ended");
}

#[test]
fn bad_flows_are_refused_at_load_with_the_reason() {
    for (from, to, why) in [
        (
            "next = \"dob\"",
            "next = \"nowhere\"",
            "agent `clinic`: flow: node `name`: next `nowhere` is not a node",
        ),
        (
            "{ digit = \"9\", keywords = [\"sales\"], next = \"sales\" },",
            "",
            "agent `clinic`: flow: node `sales` is unreachable from start `welcome`",
        ),
        (
            "closed_next = \"closed\"\n\n[agent.flow.nodes.closed]\ntype = \"hangup\"\nsay = \"We are closed.\"",
            "closed_next = \"welcome\"",
            "agent `clinic`: flow: the loop hours -> welcome -> hours never waits for the caller",
        ),
    ] {
        assert!(AGENTS.contains(from), "{from}");
        let bad = AGENTS.replacen(from, to, 1);
        let Err(e) = voxwire::agents::Agents::parse(&bad) else {
            panic!("a bad flow was taken: {why}");
        };
        assert!(e.starts_with(why), "{e}");
    }
}

#[tokio::test]
async fn the_agents_api_takes_a_flow_and_refuses_a_bad_one() {
    let server = server().await;
    let admin = server
        .state
        .auth
        .issue_with_role("root", None, None, Role::Admin, Duration::from_secs(600))
        .unwrap();
    let agent = |start: &str| {
        json!({
            "name": "pizza",
            "system_prompt": "You take orders.",
            "flow": {
                "start": start,
                "nodes": {
                    "ask": {"type": "menu", "say": "Press 1 for pizza.",
                            "options": [{"digit": "1", "next": "done"}]},
                    "done": {"type": "hangup", "say": "Pizza it is."}
                }
            }
        })
    };
    let client = reqwest::Client::new();
    let r = client
        .post(server.url("/api/agents"))
        .bearer_auth(&admin)
        .json(&agent("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_agent", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("flow: start `nope` is not a node"),
        "{body}"
    );
    let r = client
        .post(server.url("/api/agents"))
        .bearer_auth(&admin)
        .json(&agent("ask"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let (mut ws, _) = server.call("alice", json!({"agent": "pizza"})).await;
    assert_eq!(said(&mut ws).await, "Press 1 for pizza.");
    keys(&mut ws, "1#").await;
    assert_eq!(said(&mut ws).await, "Pizza it is.");
    assert_eq!(ended(&mut ws).await["reason"], "agent_ended");
}
