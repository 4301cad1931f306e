//! Keys pressed on a keypad (`dtmf`) over the voxwire socket: an entry ending in `#` or a pause
//! is a caller turn the agent answers, stored as `source: dtmf` and logged as `dtmf` events;
//! bad keys are refused; the agent's opt-out keys delete the recording.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use voxwire::Config;

async fn events(server: &TestServer, call_id: &str) -> Vec<(String, Value)> {
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

#[tokio::test]
async fn keys_ending_in_hash_or_a_pause_are_a_turn() {
    let server = start().await;
    let (mut ws, call_id) = server.call("alice", json!({})).await;

    send(&mut ws, json!({"type": "dtmf", "digits": "12#"})).await;
    let frames = recv_until(&mut ws, "response_done").await;
    let transcript = frames.iter().find(|f| f["type"] == "transcript").unwrap();
    assert_eq!(transcript["text"], "Pressed keys: 1 2 #");
    let reply = frames
        .iter()
        .find(|f| f["type"] == "response" && f["is_final"] == true)
        .unwrap();
    assert_eq!(
        reply["text"],
        "You said: Pressed keys: 1 2 #. That is turn 1."
    );

    // Keys one by one, then a pause.
    let sent = std::time::Instant::now();
    send(&mut ws, json!({"type": "dtmf", "digits": "4"})).await;
    send(&mut ws, json!({"type": "dtmf", "digits": "*"})).await;
    let frames = recv_until(&mut ws, "transcript").await;
    assert_eq!(frames.last().unwrap()["text"], "Pressed keys: 4 *");
    assert!(sent.elapsed() >= Duration::from_millis(1400));
    recv_until(&mut ws, "metrics").await;

    // Bad keys are refused, and the call goes on.
    for bad in [
        json!({"type": "dtmf", "digits": "12x"}),
        json!({"type": "dtmf", "digits": ""}),
        json!({"type": "dtmf", "digits": "1".repeat(33)}),
        json!({"type": "dtmf", "digits": 5}),
    ] {
        send(&mut ws, bad).await;
        let e = recv(&mut ws).await;
        assert_eq!(e["type"], "error", "{e}");
        assert_eq!(e["code"], "invalid_message", "{e}");
    }
    assert_alive(&mut ws).await;
    send(&mut ws, json!({"type": "end_call"})).await;
    recv_until(&mut ws, "call_ended").await;

    let log = events(&server, &call_id).await;
    let token = server.token("alice");
    let call: Value = reqwest::Client::new()
        .get(server.url(&format!("/api/calls/{call_id}")))
        .bearer_auth(&token)
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
        .collect();
    assert_eq!(keyed.len(), 2, "{call}");
    assert_eq!(keyed[0]["text"], "Pressed keys: 1 2 #");
    assert_eq!(keyed[0]["role"], "user");
    let digits: Vec<&Value> = log
        .iter()
        .filter(|(k, _)| k == "dtmf")
        .map(|(_, d)| &d["digits"])
        .collect();
    assert_eq!(digits, vec!["12#", "4", "*"]);
}

#[tokio::test]
async fn dtmf_before_a_call_is_refused() {
    let server = start().await;
    let (mut ws, _) = server.connect("alice").await;
    send(&mut ws, json!({"type": "dtmf", "digits": "1"})).await;
    let e = recv(&mut ws).await;
    assert_eq!(e["code"], "no_active_call");
}

const AGENTS: &str = r#"
default = "desk"

[[agent]]
name = "desk"
system_prompt = "You answer briefly."
record = true
recording_opt_out_digits = "*9"
"#;

#[tokio::test]
async fn the_opt_out_keys_delete_the_recording() {
    let dir = std::env::temp_dir().join(format!("voxwire-dtmf-rec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = Config::for_tests();
    config.agents = voxwire::agents::Agents::parse(AGENTS).unwrap();
    config.store.recordings_dir = dir.clone();
    let server = start_with(config, voxwire::engines::Engines::fake()).await;
    let (mut ws, call_id) = server.call("alice", json!({})).await;
    recv_until(&mut ws, "response_done").await;
    send(&mut ws, json!({"type": "dtmf", "digits": "*"})).await;
    send(&mut ws, json!({"type": "dtmf", "digits": "9"})).await;
    recv_until(&mut ws, "response_done").await;
    send(&mut ws, json!({"type": "end_call"})).await;
    recv_until(&mut ws, "call_ended").await;
    let log = events(&server, &call_id).await;
    assert!(log.iter().any(|(k, _)| k == "recording_started"), "{log:?}");
    assert!(
        log.iter().any(|(k, _)| k == "recording_opted_out"),
        "{log:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!dir.join(format!("{call_id}.wav")).exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_agent_with_bad_opt_out_keys_is_refused() {
    let bad = AGENTS.replace("\"*9\"", "\"*9x\"");
    let Err(e) = voxwire::agents::Agents::parse(&bad) else {
        panic!("an agent with bad keys was taken");
    };
    assert!(e.contains("recording_opt_out_digits"), "{e}");
}
