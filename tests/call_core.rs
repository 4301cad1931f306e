//! The call core reached from outside its socket: live call handles (input from anywhere,
//! subscribers that see every event, slow subscribers that lose events without slowing the
//! call), and one call used by push-to-talk and the WebSocket in turn.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use voxwire::call::{CallEvent, CallInput, Received};

#[tokio::test]
async fn a_live_call_takes_input_and_is_watched_through_its_handle() {
    let server = start().await;
    let (mut ws, call_id) = server.call("alice", json!({})).await;
    let handle = server
        .state
        .calls
        .handle(&call_id)
        .expect("a live call has a handle");
    assert_eq!(server.state.calls.live_ids(), vec![call_id.clone()]);
    let mut watcher = handle.subscribe();
    // Input from outside the socket: the caller sees the turn, and so does the watcher.
    handle
        .send(CallInput::Text("sent from elsewhere".into()))
        .await
        .unwrap();
    let frames = recv_until(&mut ws, "metrics").await;
    let reply = frames
        .iter()
        .find(|f| f["type"] == "response" && f["is_final"] == true)
        .unwrap();
    assert_eq!(
        reply["text"],
        "You said: sent from elsewhere. That is turn 1."
    );
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), watcher.recv())
            .await
            .expect("the watcher got nothing")
        {
            Received::Event(CallEvent::Metrics { .. }) => break,
            Received::Event(e) => seen.push(e),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(seen.iter().any(|e| matches!(e,
        CallEvent::Transcript { text, is_final: true, .. } if text == "sent from elsewhere")));
    assert!(seen.iter().any(|e| matches!(e,
        CallEvent::ResponseText { text, .. } if text.starts_with("You said"))));
    assert!(seen.iter().any(|e| matches!(e, CallEvent::Audio { .. })));
    // Ending the call: the watcher hears the end, the handle is gone from the registry.
    send(&mut ws, json!({"type": "end_call"})).await;
    recv_until(&mut ws, "call_ended").await;
    let ended = loop {
        match watcher.recv().await {
            Received::Event(CallEvent::Ended { reason, .. }) => break reason,
            Received::Closed => panic!("closed before Ended"),
            _ => {}
        }
    };
    assert_eq!(ended, voxwire::protocol::EndReason::ClientEnded);
    assert!(matches!(watcher.recv().await, Received::Closed));
    assert!(server.state.calls.handle(&call_id).is_none());
    assert!(handle.send(CallInput::Commit).await.is_err());
}

#[tokio::test]
async fn a_slow_subscriber_loses_events_and_the_call_goes_on() {
    let server = start().await;
    let (mut ws, call_id) = server.call("alice", json!({})).await;
    let handle = server.state.calls.handle(&call_id).unwrap();
    let mut sleepy = handle.subscribe();
    // Many replies, far more events than a subscriber may hold (256), never read by it.
    let long = "word ".repeat(300);
    for _ in 0..6 {
        send(&mut ws, json!({"type": "text", "text": long})).await;
        recv_until(&mut ws, "metrics").await;
    }
    // The caller got every turn; the subscriber is told what it missed, then goes on.
    assert_alive(&mut ws).await;
    match sleepy.recv().await {
        Received::Missed(n) => assert!(n > 0),
        other => panic!("expected missed events, got {other:?}"),
    }
    assert!(matches!(sleepy.recv().await, Received::Event(_)));
}

async fn ptt(server: &TestServer, call_id: &str) -> Value {
    let wav = wav_file(&tone(600, 16_000, 0.3), 16_000);
    let r = reqwest::Client::new()
        .post(server.url(&format!("/api/voice/turn?call_id={call_id}")))
        .bearer_auth(server.token("alice"))
        .header("content-type", "audio/wav")
        .body(wav)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn push_to_talk_and_websocket_turns_of_one_call_interleave() {
    let server = start().await;
    let (mut ws, call_id) = server.call("alice", json!({})).await;
    send(&mut ws, json!({"type": "text", "text": "first by socket"})).await;
    recv_until(&mut ws, "metrics").await;
    // While the call is live on the socket, push-to-talk may not take it over.
    let r = reqwest::Client::new()
        .post(server.url(&format!("/api/voice/turn?call_id={call_id}")))
        .bearer_auth(server.token("alice"))
        .header("content-type", "audio/wav")
        .body(wav_file(&tone(600, 16_000, 0.3), 16_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    send(&mut ws, json!({"type": "end_call"})).await;
    recv_until(&mut ws, "call_ended").await;
    // Two push-to-talk turns continue it, then the socket resumes it again.
    let body = ptt(&server, &call_id).await;
    assert_eq!(body["call_id"], call_id.as_str());
    assert_eq!(
        body["response"],
        "You said: audio of 0.6 seconds. That is turn 2."
    );
    let body = ptt(&server, &call_id).await;
    assert_eq!(
        body["response"],
        "You said: audio of 0.6 seconds. That is turn 3."
    );
    send(&mut ws, json!({"type": "start_call", "call_id": call_id})).await;
    let started = recv_until(&mut ws, "call_started").await.pop().unwrap();
    assert_eq!(started["resumed"], true);
    assert_eq!(started["history_len"], 6);
    send(
        &mut ws,
        json!({"type": "text", "text": "and by socket again"}),
    )
    .await;
    let frames = recv_until(&mut ws, "metrics").await;
    let done = frames
        .iter()
        .find(|f| f["type"] == "response_done")
        .unwrap();
    assert_eq!(done["turn_id"], 4);
    // Ids went on in order across both doors: 2 items per turn.
    assert_eq!(done["item_id"], 8);
    let h = history(&server, &call_id, "alice");
    let said: Vec<&str> = h
        .iter()
        .filter(|(r, _)| r == "User")
        .map(|(_, t)| t.as_str())
        .collect();
    assert_eq!(
        said,
        vec![
            "first by socket",
            "audio of 0.6 seconds",
            "audio of 0.6 seconds",
            "and by socket again"
        ]
    );
    let metrics = server.state.metrics.render();
    assert!(metrics.contains("voxwire_turns_total 4"), "{metrics}");
}

#[tokio::test]
async fn memory_holds_live_calls_only_and_an_ended_call_resumes_from_the_store() {
    let server = start().await;
    let (mut ws, call_id) = server.call("alice", json!({})).await;
    assert_eq!(server.state.calls.held(), 1);
    send(
        &mut ws,
        json!({"type": "text", "text": "remember the blue door"}),
    )
    .await;
    recv_until(&mut ws, "metrics").await;
    send(&mut ws, json!({"type": "end_call"})).await;
    recv_until(&mut ws, "call_ended").await;
    // Once its writes are in the store, the ended call leaves memory.
    let mut held = usize::MAX;
    for _ in 0..200 {
        held = server.state.calls.held();
        if held == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(held, 0, "the ended call is still held in memory");
    let owner = voxwire::call::Owner {
        sub: "alice".into(),
        org: None,
    };
    assert!(server.state.calls.get_owned(&call_id, &owner).is_err());
    // Resuming reads it back from the store, with its history for the model.
    send(&mut ws, json!({"type": "start_call", "call_id": call_id})).await;
    let started = recv(&mut ws).await;
    assert_eq!(started["type"], "call_started", "{started}");
    assert_eq!(started["history_len"], 2);
    send(&mut ws, json!({"type": "text", "text": "what did I say"})).await;
    let frames = recv_until(&mut ws, "metrics").await;
    let reply = frames
        .iter()
        .find(|f| f["type"] == "response" && f["is_final"] == true)
        .unwrap();
    assert_eq!(reply["text"], "You said: what did I say. That is turn 2.");
    let h = history(&server, &call_id, "alice");
    assert_eq!(
        h[0],
        ("User".to_string(), "remember the blue door".to_string())
    );
    assert_eq!(h.len(), 4, "{h:?}");
}

#[tokio::test]
async fn a_busy_speech_detector_drops_audio_with_engine_busy_and_the_call_goes_on() {
    let mut engines = voxwire::engines::Engines::fake();
    // One detection thread and no queue: while the test holds the thread, the pool is busy.
    let pool = std::sync::Arc::new(voxwire::engines::pool::BlockingPool::new(
        "speech detection",
        1,
        0,
    ));
    engines.detector = pool.clone();
    let server = start_with(voxwire::Config::for_tests(), engines).await;
    let (mut ws, _) = server.call("alice", json!({})).await;
    let cancel = tokio_util::sync::CancellationToken::new();
    let held = pool.slot(&cancel).await.unwrap();
    // Chunks over a second are scored on the pool: this one finds it busy.
    let long = tone_pcm16(1_200, 16_000, 0.3);
    send(&mut ws, json!({"type": "audio", "audio": b64(&long)})).await;
    let error = recv(&mut ws).await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["code"], "engine_busy");
    assert!(
        error["message"].as_str().unwrap().contains("1200 ms"),
        "{error}"
    );
    assert_eq!(server.state.metrics.detector_dropped_ms.get(), 1200);
    // Once the pool is free, audio is heard again: a turn is detected and answered.
    drop(held);
    send(&mut ws, json!({"type": "audio", "audio": b64(&long)})).await;
    send(
        &mut ws,
        json!({"type": "audio", "audio": b64(&vec![0u8; 32_000])}),
    )
    .await;
    let frames = recv_until(&mut ws, "metrics").await;
    assert!(
        frames.iter().any(|f| f["type"] == "speech_started"),
        "{frames:?}"
    );
    assert_alive(&mut ws).await;
}
