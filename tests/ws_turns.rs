//! Full turns over a real WebSocket: typed, spoken (server-side end of speech), committed,
//! several calls on one socket, resumption and history.

mod common;

use common::*;
use futures::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

fn types(frames: &[serde_json::Value]) -> Vec<String> {
    frames
        .iter()
        .map(|f| f["type"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test]
async fn connected_announces_protocol_limits_and_engines() {
    let server = start().await;
    let (_ws, hello) = server.connect("alice").await;
    assert_eq!(hello["protocol"], "voxwire.v1");
    assert!(hello["session_id"].as_str().unwrap().starts_with("sess_"));
    assert_eq!(hello["limits"]["max_message_bytes"], 1 << 20);
    assert_eq!(hello["limits"]["max_calls_per_user"], 4);
    assert!(hello["engines"]["stt"].as_str().unwrap().contains("fake"));
}

#[tokio::test]
async fn typed_turn_streams_transcript_reply_audio_and_metrics() {
    let server = start().await;
    let (mut ws, call_id) = server.call("alice", json!({})).await;
    send(&mut ws, json!({"type": "text", "text": "hello there"})).await;
    let frames = recv_until(&mut ws, "metrics").await;
    let t = types(&frames);
    assert_eq!(t[0], "transcript");
    assert_eq!(frames[0]["text"], "hello there");
    assert_eq!(frames[0]["is_final"], true);
    let deltas: String = frames
        .iter()
        .filter(|f| f["type"] == "response" && f["is_final"] == false)
        .map(|f| f["delta"].as_str().unwrap())
        .collect();
    let final_text = frames
        .iter()
        .find(|f| f["type"] == "response" && f["is_final"] == true)
        .unwrap();
    assert_eq!(final_text["text"], "You said: hello there. That is turn 1.");
    assert_eq!(deltas.trim(), final_text["text"].as_str().unwrap());
    let audio: Vec<_> = frames
        .iter()
        .filter(|f| f["type"] == "audio_response")
        .collect();
    assert!(!audio.is_empty());
    for (i, a) in audio.iter().enumerate() {
        assert_eq!(a["seq"], i as u64);
        assert_eq!(a["encoding"], "pcm16");
        assert_eq!(a["sample_rate"], 16000);
        assert_eq!(a["turn_id"], 1);
    }
    let done = frames
        .iter()
        .find(|f| f["type"] == "response_done")
        .unwrap();
    assert_eq!(done["reason"], "completed");
    let m = frames.last().unwrap();
    assert!(m["total_ms"].as_f64().unwrap() >= 0.0);
    assert!(m["llm_first_token_ms"].is_number());
    // Ordering: transcript, then reply, then the end marker, then metrics.
    let pos = |ty: &str| t.iter().position(|x| x == ty).unwrap();
    assert!(pos("transcript") < pos("response"));
    assert!(pos("audio_response") < pos("response_done"));
    send(&mut ws, json!({"type": "end_call"})).await;
    let ended = recv(&mut ws).await;
    assert_eq!(ended["type"], "call_ended");
    assert_eq!(ended["call_id"], call_id.as_str());
    assert_eq!(ended["reason"], "client_ended");
    assert_eq!(ended["turns"], 1);
}

#[tokio::test]
async fn spoken_turn_ends_on_silence() {
    let server = start().await;
    let (mut ws, _) = server.call("alice", json!({})).await;
    let mut pcm = tone_pcm16(500, 16_000, 0.0);
    pcm.extend(tone_pcm16(1_500, 16_000, 0.3));
    pcm.extend(tone_pcm16(1_500, 16_000, 0.0));
    stream_pcm16(&mut ws, &pcm, 16_000).await;
    let frames = recv_until(&mut ws, "metrics").await;
    let transcript = frames.iter().find(|f| f["type"] == "transcript").unwrap();
    // The fake recogniser reports the duration it got: 1.5 s of speech plus the kept margins.
    let text = transcript["text"].as_str().unwrap();
    assert!(
        text == "audio of 2.0 seconds" || text == "audio of 1.9 seconds",
        "{text}"
    );
    assert!(frames.iter().any(|f| f["type"] == "audio_response"));
    assert!(frames.last().unwrap()["stt_ms"].is_number());
}

#[tokio::test]
async fn commit_ends_the_turn_at_once_and_resampled_input_works() {
    let server = start().await;
    let (mut ws, _) = server
        .call(
            "alice",
            json!({"audio_format": {"encoding": "pcm16", "sample_rate": 48000}}),
        )
        .await;
    stream_pcm16(&mut ws, &tone_pcm16(1_000, 48_000, 0.3), 48_000).await;
    send(&mut ws, json!({"type": "commit"})).await;
    let frames = recv_until(&mut ws, "response_done").await;
    let transcript = frames.iter().find(|f| f["type"] == "transcript").unwrap();
    let text = transcript["text"].as_str().unwrap();
    assert!(
        text == "audio of 0.9 seconds" || text == "audio of 1.0 seconds",
        "{text}"
    );
}

#[tokio::test]
async fn wav_chunks_and_mulaw_output() {
    let server = start().await;
    let (mut ws, _) = server
        .call(
            "alice",
            json!({"audio_format": {"encoding": "wav", "sample_rate": 22050},
                   "output_format": {"encoding": "mulaw", "sample_rate": 8000}}),
        )
        .await;
    let wav = wav_file(&tone(800, 22_050, 0.3), 22_050);
    send(&mut ws, json!({"type": "audio", "audio": b64(&wav)})).await;
    send(&mut ws, json!({"type": "commit"})).await;
    let frames = recv_until(&mut ws, "response_done").await;
    let audio: Vec<_> = frames
        .iter()
        .filter(|f| f["type"] == "audio_response")
        .collect();
    assert!(!audio.is_empty());
    assert!(audio
        .iter()
        .all(|a| a["encoding"] == "mulaw" && a["sample_rate"] == 8000));
}

#[tokio::test]
async fn several_calls_on_one_socket_and_resumption_keeps_history() {
    let server = start().await;
    let (mut ws, first) = server.call("alice", json!({})).await;
    send(&mut ws, json!({"type": "text", "text": "my name is Ada"})).await;
    recv_until(&mut ws, "metrics").await;
    send(&mut ws, json!({"type": "end_call"})).await;
    recv_until(&mut ws, "call_ended").await;

    // A second, fresh call on the same socket.
    send(&mut ws, json!({"type": "start_call"})).await;
    let started = recv(&mut ws).await;
    assert_eq!(started["resumed"], false);
    assert_ne!(started["call_id"], first.as_str());
    send(&mut ws, json!({"type": "end_call"})).await;
    recv_until(&mut ws, "call_ended").await;

    // Resume the first: its history is passed to the model (turn 2).
    send(&mut ws, json!({"type": "start_call", "call_id": first})).await;
    let resumed = recv(&mut ws).await;
    assert_eq!(resumed["resumed"], true);
    assert_eq!(resumed["history_len"], 2);
    send(&mut ws, json!({"type": "text", "text": "what is my name"})).await;
    let frames = recv_until(&mut ws, "response_done").await;
    let reply = frames
        .iter()
        .find(|f| f["type"] == "response" && f["is_final"] == true)
        .unwrap();
    assert_eq!(reply["text"], "You said: what is my name. That is turn 2.");

    // The owner reads the history; anyone else gets 404.
    let http = reqwest::Client::new();
    let r = http
        .get(server.url(&format!("/api/calls/{first}")))
        .bearer_auth(server.token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4);
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[0]["content"], "my name is Ada");
    assert_eq!(messages[1]["role"], "assistant");
    let r = http
        .get(server.url(&format!("/api/calls/{first}")))
        .bearer_auth(server.token("mallory"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .get(server.url(&format!("/api/calls/{first}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_new_turn_interrupts_a_reply_in_progress() {
    let server = slow_server(200).await;
    let (mut ws, call_id) = server.call("alice", json!({})).await;
    send(
        &mut ws,
        json!({"type": "text", "text": "tell me a long story please"}),
    )
    .await;
    // Wait for the first piece's audio (the reply's first six words, as no punctuation came
    // sooner), say it was played, then talk over the reply.
    let frames = recv_until(&mut ws, "audio_response").await;
    let item = frames.last().unwrap()["item_id"].clone();
    send(
        &mut ws,
        json!({"type": "playback", "item_id": item, "played_ms": 60_000}),
    )
    .await;
    send(&mut ws, json!({"type": "text", "text": "stop"})).await;
    let frames = recv_until(&mut ws, "response_done").await;
    let interrupted = frames.iter().find(|f| f["type"] == "interrupted").unwrap();
    assert_eq!(interrupted["text"], "You said: tell me a long");
    let done = frames.last().unwrap();
    assert_eq!(done["turn_id"], 1);
    assert_eq!(done["reason"], "interrupted");
    let frames = recv_until(&mut ws, "response_done").await;
    assert!(frames
        .iter()
        .all(|f| f["turn_id"] == 2 || f["type"] == "pong"));
    assert_eq!(frames.last().unwrap()["reason"], "completed");
    // History holds what was played of the interrupted reply, not the whole reply.
    let rec = server
        .state
        .calls
        .get_owned(
            &call_id,
            &voxwire::call::Owner {
                sub: "alice".into(),
                org: None,
            },
        )
        .unwrap();
    let history = rec.history().messages();
    assert_eq!(history[1].content, "You said: tell me a long");
}

/// A reply whose first words bring no punctuation is not held back until its sentence ends:
/// the first words go to the voice as a piece of their own, and history keeps that piece when
/// it is all the caller heard.
#[tokio::test]
async fn the_first_words_of_a_long_sentence_are_spoken_before_it_is_written() {
    // One word every 100 ms: the sentence's last word comes 1.1 s after the first piece's.
    let server = slow_server(100).await;
    let (mut ws, call_id) = server.call("alice", json!({})).await;
    let text = "book a table for four people at the small italian place near the station tonight";
    send(&mut ws, json!({"type": "text", "text": text})).await;
    let mut written = String::new();
    let mut heard_ms = 0.0;
    let mut item = None;
    // The fake voice speaks 60 ms per word: wait for all of "You said: book a table".
    while heard_ms < 5.0 * 60.0 - 1.0 {
        let f = recv(&mut ws).await;
        match f["type"].as_str() {
            Some("response") if f["is_final"] == false => {
                written.push_str(f["delta"].as_str().unwrap())
            }
            Some("audio_response") => {
                assert!(
                    !written.contains("tonight"),
                    "the first audio waited for the whole sentence: {written:?}"
                );
                let bytes =
                    voxwire::audio::decode::base64_decode(f["audio"].as_str().unwrap()).unwrap();
                heard_ms += bytes.len() as f64 / 2.0 * 1000.0 / f["sample_rate"].as_f64().unwrap();
                item = f["item_id"].as_u64();
            }
            _ => {}
        }
    }
    assert!(
        written.starts_with("You said: book a table for"),
        "{written:?}"
    );
    // The caller has heard the first piece and stops the reply there.
    let item = item.unwrap();
    send(
        &mut ws,
        json!({"type": "playback", "item_id": item, "played_ms": 60_000}),
    )
    .await;
    send(&mut ws, json!({"type": "interrupt"})).await;
    let frames = recv_until(&mut ws, "response_done").await;
    let interrupted = frames.iter().find(|f| f["type"] == "interrupted").unwrap();
    assert_eq!(interrupted["text"], "You said: book a table");
    assert_eq!(frames.last().unwrap()["reason"], "interrupted");
    let h = history(&server, &call_id, "alice");
    assert_eq!(h[1], ("Assistant".into(), "You said: book a table".into()));
}

#[tokio::test]
async fn an_agent_with_a_greeting_speaks_first_and_remembers_it() {
    let server = start().await;
    let (mut ws, call_id) = server
        .call(
            "alice",
            json!({"agent": "greeter", "variables": {"name": "Ada"}}),
        )
        .await;
    let frames = recv_until(&mut ws, "response_done").await;
    assert!(frames.iter().all(|f| f["turn_id"] == 0), "{frames:?}");
    let reply = frames
        .iter()
        .find(|f| f["type"] == "response" && f["is_final"] == true)
        .unwrap();
    assert_eq!(reply["text"], "Welcome to Test Co, Ada.");
    assert!(frames.iter().any(|f| f["type"] == "audio_response"));
    assert_eq!(frames.last().unwrap()["reason"], "completed");
    send(&mut ws, json!({"type": "text", "text": "hi"})).await;
    let frames = recv_until(&mut ws, "response_done").await;
    assert!(
        frames
            .iter()
            .filter(|f| f["type"] != "metrics")
            .all(|f| f["turn_id"] == 1),
        "{frames:?}"
    );
    let owner = voxwire::call::Owner {
        sub: "alice".into(),
        org: None,
    };
    let history = server
        .state
        .calls
        .get_owned(&call_id, &owner)
        .unwrap()
        .history()
        .messages();
    assert_eq!(history[0].content, "Welcome to Test Co, Ada.");
    assert_eq!(history[1].content, "hi");

    let agents: serde_json::Value = reqwest::get(server.url("/api/agents"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(agents["agents"], json!(["greeter", "receptionist"]));
    assert_eq!(agents["default"], "receptionist");
}

#[tokio::test]
async fn binary_frames_carry_raw_audio() {
    let server = start().await;
    let (mut ws, _) = server.connect("alice").await;
    // Before a call, like any audio.
    ws.send(Message::Binary(vec![0u8; 320].into()))
        .await
        .unwrap();
    let e = recv_until(&mut ws, "error").await.pop().unwrap();
    assert_eq!(e["code"], "no_active_call");
    send(
        &mut ws,
        json!({"type": "start_call", "turn_detection": {"mode": "manual"},
               "audio_format": {"encoding": "mulaw", "sample_rate": 8000}}),
    )
    .await;
    recv_until(&mut ws, "call_started").await;
    // 800 ms of 8 kHz mu-law in 100 ms binary frames, then one in JSON: the same stream.
    let pcm: Vec<u8> = tone(900, 8_000, 0.3)
        .iter()
        .map(|s| voxwire::audio::mulaw::encode_sample((s * 32767.0) as i16))
        .collect();
    for chunk in pcm[..6_400].chunks(800) {
        ws.send(Message::Binary(chunk.to_vec().into()))
            .await
            .unwrap();
    }
    send(
        &mut ws,
        json!({"type": "audio", "audio": b64(&pcm[6_400..])}),
    )
    .await;
    send(&mut ws, json!({"type": "commit"})).await;
    let frames = recv_until(&mut ws, "response_done").await;
    let t = frames.iter().find(|f| f["type"] == "transcript").unwrap();
    let text = t["text"].as_str().unwrap();
    assert!(
        text == "audio of 0.8 seconds" || text == "audio of 0.9 seconds",
        "{text}"
    );
    assert_eq!(frames.last().unwrap()["reason"], "completed");
}
