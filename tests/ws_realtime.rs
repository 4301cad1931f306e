//! Real-time turn-taking over a real WebSocket with deterministic engines and the energy
//! detector: speech events, partial transcripts, item ids, speculative replies that never leak,
//! barge-in with honest history, backchannels, `interrupt`, `playback` and `update_call`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn pcm(parts: &[(u32, f32)]) -> Vec<u8> {
    let mut out = Vec::new();
    for &(ms, amp) in parts {
        out.extend(tone_pcm16(ms, 16000, amp));
    }
    out
}

/// Streams PCM16 at 16 kHz in `chunk_ms` chunks with `gap` between them.
async fn stream_paced(ws: &mut Ws, pcm: &[u8], chunk_ms: usize, gap: Duration) {
    for c in pcm.chunks(chunk_ms * 32) {
        send(ws, json!({"type": "audio", "audio": b64(c)})).await;
        tokio::time::sleep(gap).await;
    }
}

fn of_type<'a>(frames: &'a [Value], t: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == t).collect()
}

#[tokio::test]
async fn a_spoken_turn_reports_speech_partials_items_and_latency() {
    let mut config = voxwire::Config::for_tests();
    config.turn.partial_interval_ms = 1;
    let server = start_with(config, voxwire::engines::Engines::fake()).await;
    let (mut ws, _) = server.call("alice", json!({})).await;
    let audio = pcm(&[(500, 0.0), (2500, 0.3), (1500, 0.0)]);
    stream_paced(&mut ws, &audio, 500, Duration::from_millis(60)).await;
    let frames = recv_until(&mut ws, "metrics").await;
    let kinds: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    let pos = |t: &str| kinds.iter().position(|k| *k == t).unwrap();

    let started = of_type(&frames, "speech_started")[0];
    assert_eq!(started["item_id"], 1);
    assert_eq!(started["audio_start_ms"], 500);
    let stopped = of_type(&frames, "speech_stopped")[0];
    assert_eq!(stopped["item_id"], 1);
    assert_eq!(stopped["audio_end_ms"], 3000);

    let transcripts = of_type(&frames, "transcript");
    let partials: Vec<_> = transcripts
        .iter()
        .filter(|t| t["is_final"] == false)
        .collect();
    assert!(!partials.is_empty(), "no partial transcript in {kinds:?}");
    for p in &partials {
        assert_eq!(p["item_id"], 1);
        assert_eq!(p["turn_id"], 1);
    }
    let first_transcript = kinds.iter().position(|k| *k == "transcript").unwrap();
    assert!(pos("speech_started") < first_transcript);
    assert!(
        first_transcript < pos("speech_stopped"),
        "partials come while speaking"
    );
    let fin = transcripts.iter().find(|t| t["is_final"] == true).unwrap();
    // 300 ms of padding before, 2500 ms of speech, 250 ms after.
    assert_eq!(fin["text"], "audio of 3.0 seconds");
    assert_eq!(fin["item_id"], 1);

    for f in frames.iter().filter(|f| {
        ["response", "audio_response", "response_done"].contains(&f["type"].as_str().unwrap())
    }) {
        assert_eq!(f["item_id"], 2, "{f}");
        assert_eq!(f["turn_id"], 1, "{f}");
    }
    let metrics = frames.last().unwrap();
    let eos = metrics["end_of_speech_ms"].as_f64().unwrap();
    let v2v = metrics["voice_to_voice_ms"].as_f64().unwrap();
    assert!(
        eos >= 500.0,
        "end of speech detected after the silence: {metrics}"
    );
    assert!(v2v >= eos, "{metrics}");

    let text = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("stage=\"end_of_speech\""), "{text}");
    assert!(text.contains("stage=\"voice_to_voice\""), "{text}");
}

#[tokio::test]
async fn a_pause_shorter_than_the_silence_never_leaks_a_speculative_reply() {
    let server = start().await;
    let (mut ws, call_id) = server.call("alice", json!({})).await;
    // 400 ms of quiet mid-sentence: long enough to start a speculative reply (100 ms), too
    // short to end the turn (500 ms).
    let audio = pcm(&[(900, 0.3), (400, 0.0), (1000, 0.3), (1000, 0.0)]);
    stream_paced(&mut ws, &audio, 100, Duration::from_millis(25)).await;
    let frames = recv_until(&mut ws, "response_done").await;
    let finals: Vec<_> = of_type(&frames, "transcript")
        .into_iter()
        .filter(|t| t["is_final"] == true)
        .collect();
    assert_eq!(finals.len(), 1, "{frames:?}");
    // The whole utterance (900 + 400 + 1000 ms, and the 100 ms of silence after which the
    // reply was prepared), not its first part.
    assert_eq!(finals[0]["text"], "audio of 2.4 seconds");
    assert_eq!(of_type(&frames, "speech_started").len(), 1);
    assert_eq!(frames.last().unwrap()["reason"], "completed");
    let h = history(&server, &call_id, "alice");
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[0].1, "audio of 2.4 seconds");
}

#[tokio::test]
async fn speech_over_a_reply_interrupts_it_and_history_keeps_what_was_played() {
    let server = slow_server(150).await;
    let (mut ws, call_id) = server.call("alice", json!({})).await;
    send(
        &mut ws,
        json!({"type": "text", "text": "tell me a long story please"}),
    )
    .await;
    let frames = recv_until(&mut ws, "audio_response").await;
    let item = frames.last().unwrap()["item_id"].as_u64().unwrap();
    assert_eq!(item, 2, "the typed text is item 1, the reply item 2");
    // The client says it has played everything it got so far: the first piece, the reply's
    // first six words, spoken without waiting for the end of the sentence.
    send(
        &mut ws,
        json!({"type": "playback", "item_id": item, "played_ms": 60_000}),
    )
    .await;
    // The caller talks over the reply for 600 ms (more than min_interrupt_ms).
    let speech = pcm(&[(600, 0.3), (800, 0.0)]);
    stream_paced(&mut ws, &speech, 100, Duration::from_millis(5)).await;
    let frames = recv_until(&mut ws, "interrupted").await;
    let interrupted = frames.last().unwrap();
    assert_eq!(interrupted["turn_id"], 1);
    assert_eq!(interrupted["item_id"], item);
    assert_eq!(interrupted["text"], "You said: tell me a long");
    let frames = recv_until(&mut ws, "response_done").await;
    assert_eq!(frames.last().unwrap()["reason"], "interrupted");
    assert_eq!(frames.last().unwrap()["turn_id"], 1);
    // The caller's words become turn 2; nothing more of turn 1 arrives.
    let frames = recv_until(&mut ws, "response_done").await;
    assert!(
        frames.iter().all(|f| f["turn_id"] != 1),
        "a frame of the interrupted turn after `interrupted`: {frames:?}"
    );
    assert_eq!(frames.last().unwrap()["reason"], "completed");
    let h = history(&server, &call_id, "alice");
    assert_eq!(
        h[1],
        ("Assistant".into(), "You said: tell me a long".into())
    );
    // 600 ms of speech and the 100 ms of silence after which the reply was prepared.
    assert_eq!(h[2].1, "audio of 0.7 seconds");

    // A late report that the client had in fact played nothing takes the reply out of history.
    send(
        &mut ws,
        json!({"type": "playback", "item_id": item, "played_ms": 0}),
    )
    .await;
    assert_alive(&mut ws).await;
    let h = history(&server, &call_id, "alice");
    assert!(
        h.iter().all(|(_, c)| !c.starts_with("You said: tell me")),
        "{h:?}"
    );
}

#[tokio::test]
async fn without_playback_reports_history_is_cut_by_real_time() {
    let server = slow_server(150).await;
    let (mut ws, call_id) = server.call("alice", json!({})).await;
    send(
        &mut ws,
        json!({"type": "text", "text": "one two three four five six"}),
    )
    .await;
    recv_until(&mut ws, "audio_response").await;
    // Interrupt at once: the first sentence's audio (about a second) cannot have been played.
    send(&mut ws, json!({"type": "interrupt"})).await;
    let frames = recv_until(&mut ws, "interrupted").await;
    let interrupted = frames.last().unwrap().clone();
    let frames = recv_until(&mut ws, "response_done").await;
    assert_eq!(frames.last().unwrap()["reason"], "interrupted");
    // Only the first sentence's audio went out, so at most that was heard; history keeps
    // exactly what the server says was heard, never the whole reply.
    let kept = interrupted["text"].as_str().unwrap();
    let first = "You said: one two three four five six.";
    assert!(first.starts_with(kept), "{interrupted}");
    let h = history(&server, &call_id, "alice");
    let replies: Vec<_> = h.iter().filter(|(r, _)| r == "Assistant").collect();
    match replies.as_slice() {
        [] => assert!(kept.is_empty(), "{h:?}"),
        [(_, c)] => assert_eq!(c, kept),
        _ => panic!("one reply expected: {h:?}"),
    }
    assert!(h.iter().all(|(_, c)| !c.contains("That is turn")), "{h:?}");
    assert_alive(&mut ws).await;
}

#[tokio::test]
async fn a_cough_while_the_agent_talks_does_not_interrupt() {
    let server = slow_server(100).await;
    let (mut ws, _) = server.call("alice", json!({})).await;
    send(&mut ws, json!({"type": "text", "text": "hello there"})).await;
    recv_until(&mut ws, "audio_response").await;
    // 200 ms of sound, well under min_interrupt_ms (400), then quiet.
    let cough = pcm(&[(200, 0.5), (900, 0.0)]);
    stream_paced(&mut ws, &cough, 100, Duration::from_millis(5)).await;
    let frames = recv_until(&mut ws, "response_done").await;
    assert_eq!(frames.last().unwrap()["reason"], "completed", "{frames:?}");
    assert!(of_type(&frames, "interrupted").is_empty(), "{frames:?}");
    // The cough did not become a turn either.
    send(&mut ws, json!({"type": "ping", "id": 9})).await;
    let frames = recv_until(&mut ws, "pong").await;
    assert!(
        frames.iter().all(|f| f["type"] != "transcript"),
        "{frames:?}"
    );
}

#[tokio::test]
async fn update_call_changes_detection_and_checks_values() {
    let server = start().await;
    let (mut ws, _) = server.connect("alice").await;
    send(
        &mut ws,
        json!({"type": "start_call", "turn_detection": {"silence_duration_ms": 50}}),
    )
    .await;
    let err = recv(&mut ws).await;
    assert_eq!(err["code"], "invalid_setting", "{err}");
    send(
        &mut ws,
        json!({"type": "start_call", "turn_detection": {"silence_duration_ms": 700}}),
    )
    .await;
    let started = recv(&mut ws).await;
    assert_eq!(started["type"], "call_started");
    let td = &started["turn_detection"];
    assert_eq!(td["silence_duration_ms"], 700);
    assert_eq!(td["mode"], "energy", "no Silero model on this test server");
    assert_eq!(td["min_interrupt_ms"], 400);

    for bad in [
        json!({"threshold": 2.0}),
        json!({"mode": "silero"}),
        json!({"mode": "semantic"}),
        json!({"semantic_pause_ms": 10}),
        json!({"semantic_pause_ms": 500, "semantic_max_silence_ms": 400}),
        json!({"mode": "loud"}),
        json!({"silence": 3}),
    ] {
        send(
            &mut ws,
            json!({"type": "update_call", "turn_detection": bad}),
        )
        .await;
        let err = recv(&mut ws).await;
        assert_eq!(err["type"], "error", "{bad}: {err}");
        assert!(
            err["code"] == "invalid_setting" || err["code"] == "invalid_message",
            "{bad}: {err}"
        );
    }

    send(
        &mut ws,
        json!({"type": "update_call", "turn_detection": {"mode": "manual"}}),
    )
    .await;
    let updated = recv(&mut ws).await;
    assert_eq!(updated["type"], "call_updated");
    assert_eq!(updated["turn_detection"]["mode"], "manual");
    assert_eq!(updated["turn_detection"]["silence_duration_ms"], 700);
    // Manual mode: speech and silence end nothing; `commit` does.
    let audio = pcm(&[(1000, 0.3), (1500, 0.0)]);
    stream_paced(&mut ws, &audio, 500, Duration::ZERO).await;
    send(&mut ws, json!({"type": "commit"})).await;
    let frames = recv_until(&mut ws, "response_done").await;
    assert!(of_type(&frames, "speech_started").is_empty(), "{frames:?}");
    let fin = of_type(&frames, "transcript")[0];
    assert_eq!(fin["text"], "audio of 2.5 seconds");
    assert_eq!(frames.last().unwrap()["reason"], "completed");
    recv_until(&mut ws, "metrics").await;

    // Back to detection, with a longer silence.
    send(
        &mut ws,
        json!({"type": "update_call", "turn_detection": {"mode": "energy", "silence_duration_ms": 1200}}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "call_updated");
    let audio = pcm(&[(1000, 0.3), (1000, 0.0)]);
    stream_paced(&mut ws, &audio, 500, Duration::ZERO).await;
    send(&mut ws, json!({"type": "ping", "id": 1})).await;
    let frames = recv_until(&mut ws, "pong").await;
    assert!(
        of_type(&frames, "speech_stopped").is_empty(),
        "1000 ms of silence must not end a turn at 1200 ms: {frames:?}"
    );
    stream_paced(&mut ws, &pcm(&[(500, 0.0)]), 500, Duration::ZERO).await;
    let frames = recv_until(&mut ws, "speech_stopped").await;
    // Offsets count the call's whole input stream, manual stretch included.
    assert_eq!(frames.last().unwrap()["audio_end_ms"], 3500);
}
