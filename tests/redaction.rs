//! Redaction over a real call and a real SQLite store: an agent with `redact` hears card
//! numbers, phone numbers and emails live (the caller's reply repeats them), while the stored
//! items and events, the monitor stream, the call's history over HTTP and the database file
//! itself hold only the masks. An agent without `redact` keeps them as said. With the local
//! engines, a phone number spoken (espeak-ng) and recognised (Whisper) is stored masked.

mod common;
mod store_common;

use std::time::Duration;

use common::*;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{json, Value};
use store_common::{Db, LONG};
use voxwire::auth::Role;
use voxwire::engines::Engines;
use voxwire::Config;

const AGENTS: &str = r#"
default = "plain"

[[agent]]
name = "plain"
system_prompt = "You take messages."

[[agent]]
name = "payments"
system_prompt = "You take payments."
redact = ["card", "phone", "email"]
"#;

const SAID: &str =
    "my card is 4111 1111 1111 1111, call me on 555-123-4567 or write to jane.doe@example.com";
/// What the caller of the agent without `redact` says (another card, so that the database file
/// can be searched for each).
const SAID_PLAIN: &str = "my card is 5500 0000 0000 0004";
const MASKED: &str = "my card is [card], call me on [phone] or write to [email]";

/// `GET /api/calls/{id}` as `token` sees it.
async fn history_of(server: &TestServer, call_id: &str, token: &str) -> Value {
    reqwest::Client::new()
        .get(server.url(&format!("/api/calls/{call_id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_redacting_agent_hears_numbers_live_and_stores_only_masks() {
    let db = Db::sqlite();
    let mut config = Config::for_tests();
    config.agents = voxwire::agents::Agents::parse(AGENTS).unwrap();
    let server = start_with_store(config, Engines::fake(), db.store().await).await;
    let op = server
        .state
        .auth
        .issue_with_role("sup", None, None, Role::Operator, Duration::from_secs(600))
        .unwrap();
    let resp = reqwest::Client::new()
        .get(server.url("/api/monitor/events?deltas=true"))
        .bearer_auth(&op)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut monitor = resp.bytes_stream().eventsource();

    let (mut ws, call_id) = server.call("alice", json!({"agent": "payments"})).await;
    send(&mut ws, json!({"type": "text", "text": SAID})).await;
    let frames = recv_until(&mut ws, "response_done").await;
    // Live, the agent has the numbers: the fake model repeats what it was told.
    let reply = frames
        .iter()
        .find(|f| f["type"] == "response" && f["is_final"] == true)
        .unwrap();
    assert!(reply["text"].as_str().unwrap().contains(SAID), "{reply}");
    // The live call's history over HTTP is masked too.
    let live = history_of(&server, &call_id, &op).await;
    assert_eq!(live["live"], true);
    assert_eq!(live["messages"][0]["content"], MASKED, "{live}");
    let (mut plain_ws, plain_id) = server.call("bob", json!({})).await;
    send(&mut plain_ws, json!({"type": "text", "text": SAID_PLAIN})).await;
    recv_until(&mut plain_ws, "response_done").await;
    send(&mut ws, json!({"type": "end_call"})).await;
    recv_until(&mut ws, "call_ended").await;
    send(&mut plain_ws, json!({"type": "end_call"})).await;
    recv_until(&mut plain_ws, "call_ended").await;

    // The monitor shows masks only, and no reply deltas of the redacting call.
    let mut seen = Vec::new();
    let mut ended = 0;
    while ended < 2 {
        let e = tokio::time::timeout(Duration::from_secs(20), monitor.next())
            .await
            .expect("monitor event")
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(&e.data).unwrap();
        if v["type"] == "call_ended" {
            ended += 1;
        }
        seen.push(v);
    }
    let of = |id: &str| -> Vec<&Value> { seen.iter().filter(|v| v["call_id"] == id).collect() };
    let texts: Vec<String> = of(&call_id)
        .iter()
        .filter_map(|v| v["text"].as_str().map(str::to_string))
        .collect();
    assert!(texts.iter().any(|t| t == MASKED), "{texts:?}");
    assert!(
        texts
            .iter()
            .any(|t| t.contains(MASKED) && t.starts_with("You said")),
        "{texts:?}"
    );
    for v in of(&call_id) {
        assert_ne!(v["type"], "response_delta", "{v}");
        let s = v.to_string();
        assert!(
            !s.contains("4111") && !s.contains("4567") && !s.contains("jane"),
            "{s}"
        );
    }
    // The plain agent's call keeps what was said, deltas included.
    assert!(of(&plain_id)
        .iter()
        .any(|v| v["type"] == "transcript" && v["text"] == SAID_PLAIN));
    assert!(of(&plain_id).iter().any(|v| v["type"] == "response_delta"));

    // Stored items and events, and the history over HTTP, hold the masks.
    let svc = &server.state.call_services;
    assert!(svc.writer.flush(LONG).await);
    let items = svc.store.items(&call_id).await.unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].text, MASKED);
    assert!(items[1].text.contains(MASKED), "{:?}", items[1].text);
    let events = svc.store.events(&call_id, 0, 1000).await.unwrap();
    assert!(!events.is_empty());
    for e in &events {
        let s = e.data.to_string();
        assert!(!s.contains("4111") && !s.contains("jane"), "{s}");
    }
    let history = history_of(&server, &call_id, &op).await;
    let body = history.to_string();
    assert!(body.contains(MASKED), "{body}");
    assert!(
        !body.contains("4111") && !body.contains("jane.doe"),
        "{body}"
    );
    let plain_items = svc.store.items(&plain_id).await.unwrap();
    assert_eq!(plain_items[0].text, SAID_PLAIN);

    // On disk (the database and its write-ahead log): the plain call's card as said, the
    // redacting call's nowhere.
    drop(server);
    let count = |needle: &[u8]| -> usize {
        std::fs::read_dir(db.sqlite_dir().unwrap())
            .unwrap()
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .map(|bytes| bytes.windows(needle.len()).filter(|w| *w == needle).count())
            .sum()
    };
    assert!(count(b"5500 0000 0000 0004") >= 1);
    assert_eq!(count(b"4111 1111 1111 1111"), 0);
    assert_eq!(count(b"jane.doe"), 0);
    assert_eq!(count(b"555-123-4567"), 0);
}

#[path = "stt_common/mod.rs"]
mod stt;

/// Streams 16 kHz audio as a microphone would, in 100 ms chunks.
async fn stream_live(ws: &mut Ws, samples: &[f32]) {
    let mut next = tokio::time::Instant::now();
    for c in samples.chunks(1600) {
        next += Duration::from_millis(100);
        tokio::time::sleep_until(next).await;
        let pcm = voxwire::audio::encode::pcm16_bytes(c);
        send(ws, json!({"type": "audio", "audio": b64(&pcm)})).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoken_phone_number_is_masked_in_the_store_and_heard_live() {
    let db = Db::sqlite();
    let mut config = Config::for_tests();
    config.agents = voxwire::agents::Agents::parse(AGENTS).unwrap();
    let server = start_with_store(config, local_engines(), db.store().await).await;
    // Digits read one by one pause between groups: a turn ends only after a longer silence.
    let start = json!({"agent": "payments", "turn_detection": {"silence_duration_ms": 1500}});
    let (mut ws, call_id) = server.call("alice", start).await;
    let mut audio = vec![0.0; 8000];
    audio.extend(stt::espeak(
        "Call me back on five five five, one two three, four five six seven.",
    ));
    audio.extend(vec![0.0; 16_000 * 3]);
    stream_live(&mut ws, &audio).await;
    let frames = recv_until(&mut ws, "response_done").await;
    let heard = frames
        .iter()
        .find(|f| f["type"] == "transcript" && f["is_final"] == true)
        .unwrap()["text"]
        .as_str()
        .unwrap()
        .to_string();
    println!("live transcript: {heard:?}");
    // Live, the caller's words are as recognised, digits and all.
    let digits: String = heard.chars().filter(char::is_ascii_digit).collect();
    assert!(digits.len() >= 7, "{heard}");
    send(&mut ws, json!({"type": "end_call"})).await;
    recv_until(&mut ws, "call_ended").await;
    let svc = &server.state.call_services;
    assert!(svc.writer.flush(LONG).await);
    let items = svc.store.items(&call_id).await.unwrap();
    let stored = &items.iter().find(|i| i.role == "user").unwrap().text;
    println!("stored: {stored:?}");
    assert!(stored.contains("[phone]"), "{stored}");
    let left: String = stored.chars().filter(char::is_ascii_digit).collect();
    assert!(left.is_empty(), "{stored}");
}
