//! Self-test of the fake hosted providers in `common::providers`: every route answers the
//! documented shapes, and every fault does what it says, seen from plain HTTP and WebSocket
//! clients.

mod common;

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

use common::providers::{
    speech_pcm_len, word_pieces, FakeProvider, Fault, Route, DEFAULT_REPLY, DEFAULT_TRANSCRIPT,
};
use common::Ws;

const SECOND: Duration = Duration::from_secs(1);

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

fn wav_1s() -> Vec<u8> {
    common::wav_file(&common::tone(1000, 16000, 0.3), 16000)
}

fn transcription_form(fields: &[(&str, &str)], file: bool) -> Form {
    let mut form = Form::new();
    if file {
        let part = Part::bytes(wav_1s())
            .file_name("audio.wav")
            .mime_str("audio/wav")
            .unwrap();
        form = form.part("file", part);
    }
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    form
}

async fn transcribe(fake: &FakeProvider, form: Form) -> reqwest::Response {
    http()
        .post(format!("{}/v1/audio/transcriptions", fake.base()))
        .multipart(form)
        .send()
        .await
        .unwrap()
}

fn chat_request(stream: bool) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi there"}],
        "stream": stream,
        "max_tokens": 200,
        "temperature": 0.7,
    })
}

async fn chat(fake: &FakeProvider, body: &Value) -> reqwest::Response {
    http()
        .post(format!("{}/v1/chat/completions", fake.base()))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn speech(fake: &FakeProvider, body: &Value) -> reqwest::Response {
    http()
        .post(format!("{}/v1/audio/speech", fake.base()))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn eleven(fake: &FakeProvider, voice: &str, format: &str, body: &Value) -> reqwest::Response {
    http()
        .post(format!(
            "{}/v1/text-to-speech/{voice}/stream?output_format={format}",
            fake.base()
        ))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The body read chunk by chunk: the bytes that arrived, the chunk sizes, and whether the
/// stream ended in an error (a dropped connection) rather than cleanly.
async fn read_body(mut resp: reqwest::Response) -> (Vec<u8>, Vec<usize>, bool) {
    let (mut bytes, mut sizes) = (Vec::new(), Vec::new());
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                sizes.push(c.len());
                bytes.extend_from_slice(&c);
            }
            Ok(None) => return (bytes, sizes, false),
            Err(_) => return (bytes, sizes, true),
        }
    }
}

/// SSE `data:` payloads in order (comments skipped), and whether `[DONE]` ended the stream.
fn sse_data(text: &str) -> (Vec<String>, bool) {
    let mut data = Vec::new();
    let mut done = false;
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("data: ") {
            if d == "[DONE]" {
                done = true;
            } else {
                data.push(d.to_string());
            }
        }
    }
    (data, done)
}

fn contents(events: &[Value]) -> String {
    events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect()
}

#[tokio::test]
async fn transcription_answers_json_text_and_validates() {
    let fake = FakeProvider::start().await;
    let resp = transcribe(&fake, transcription_form(&[("model", "whisper-1")], true)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"text": DEFAULT_TRANSCRIPT})
    );

    fake.set_transcript("turn on the lights");
    let fields = [
        ("model", "whisper-1"),
        ("response_format", "text"),
        ("language", "en"),
    ];
    let resp = transcribe(&fake, transcription_form(&fields, true)).await;
    assert_eq!(resp.text().await.unwrap(), "turn on the lights\n");

    let resp = transcribe(&fake, transcription_form(&[], true)).await;
    assert_eq!(resp.status(), 400);
    let error = resp.json::<Value>().await.unwrap();
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("model"));
    let resp = transcribe(&fake, transcription_form(&[("model", "whisper-1")], false)).await;
    assert_eq!(resp.status(), 400);

    let seen = fake.requests(Route::Transcriptions);
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[1].form["language"], "en");
    assert_eq!(seen[1].file_bytes, Some(wav_1s().len()));
    assert_eq!(seen[3].file_bytes, None);
    assert!(seen[0].headers["content-type"].starts_with("multipart/form-data"));
}

#[tokio::test]
async fn chat_stream_sends_one_delta_per_word_then_done() {
    let fake = FakeProvider::start().await;
    let resp = chat(&fake, &chat_request(true)).await;
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let text = resp.text().await.unwrap();
    assert!(text.contains(": keep-alive\n\n"));
    assert!(text.ends_with("data: [DONE]\n\n"));
    let (data, done) = sse_data(&text);
    assert!(done);
    let events: Vec<Value> = data
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(events[0]["object"], "chat.completion.chunk");
    assert_eq!(events[0]["model"], "gpt-4o-mini");
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    let words = DEFAULT_REPLY.split_whitespace().count();
    assert_eq!(events.len(), words + 2, "role, one per word, finish");
    assert_eq!(contents(&events), DEFAULT_REPLY);
    let deltas: Vec<&str> = events[1..=words]
        .iter()
        .map(|e| e["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, word_pieces(DEFAULT_REPLY));
    assert_eq!(deltas[0], "Hello ");
    let last = events.last().unwrap();
    assert_eq!(last["choices"][0]["delta"], json!({}));
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        fake.requests(Route::ChatCompletions)[0].json,
        Some(chat_request(true))
    );

    // Usage chunk on request, before [DONE].
    let mut body = chat_request(true);
    body["stream_options"] = json!({"include_usage": true});
    let (data, _) = sse_data(&chat(&fake, &body).await.text().await.unwrap());
    let usage: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], words);
}

#[tokio::test]
async fn chat_json_answer_max_tokens_and_validation() {
    let fake = FakeProvider::start().await;
    fake.set_reply("Sure, the lights are on.");
    let answer: Value = chat(&fake, &chat_request(false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Sure, the lights are on."
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");

    let mut short = chat_request(false);
    short["max_completion_tokens"] = json!(2);
    let answer: Value = chat(&fake, &short).await.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "Sure, the ");
    assert_eq!(answer["choices"][0]["finish_reason"], "length");

    let mut empty = chat_request(true);
    empty["messages"] = json!([]);
    assert_eq!(chat(&fake, &empty).await.status(), 400);
    let missing = json!({"model": "m", "stream": true});
    let resp = chat(&fake, &missing).await;
    assert_eq!(resp.status(), 400);
    let error: Value = resp.json().await.unwrap();
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("messages"));
    assert_eq!(fake.count(Route::ChatCompletions), 4);
}

#[tokio::test]
async fn speech_pcm_and_wav_have_the_documented_length() {
    let fake = FakeProvider::start().await;
    let input = "Hello, world. This is a test.";
    let body =
        json!({"model": "tts-1", "input": input, "voice": "alloy", "response_format": "pcm"});
    let resp = speech(&fake, &body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "audio/pcm");
    let (pcm, sizes, cut) = read_body(resp).await;
    assert!(!cut);
    assert_eq!(pcm.len(), input.chars().count() * 1440 * 2);
    assert_eq!(pcm.len(), speech_pcm_len(input, 24000));
    assert!(sizes.iter().all(|s| *s <= 4800), "{sizes:?}");
    let peak = pcm
        .chunks(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]).unsigned_abs())
        .max()
        .unwrap();
    assert!((9700..=9900).contains(&peak), "amplitude 0.3: {peak}");

    let body =
        json!({"model": "tts-1", "input": "abc", "voice": "alloy", "response_format": "wav"});
    let resp = speech(&fake, &body).await;
    assert_eq!(resp.headers()["content-type"], "audio/wav");
    let wav = resp.bytes().await.unwrap();
    let reader = hound::WavReader::new(std::io::Cursor::new(wav.to_vec())).unwrap();
    assert_eq!(reader.spec().sample_rate, 24000);
    assert_eq!(reader.spec().channels, 1);
    assert_eq!(reader.duration(), 3 * 1440);

    for bad in [
        json!({"model": "tts-1", "input": "abc", "voice": "alloy"}),
        json!({"model": "tts-1", "input": "", "voice": "alloy", "response_format": "pcm"}),
        json!({"model": "tts-1", "input": "abc", "response_format": "pcm"}),
    ] {
        assert_eq!(speech(&fake, &bad).await.status(), 400, "{bad}");
    }
    assert_eq!(fake.open_streams(), 0);
}

#[tokio::test]
async fn elevenlabs_streams_pcm_at_the_requested_rate() {
    let fake = FakeProvider::start().await;
    let text = json!({"text": "hi there", "model_id": "eleven_flash_v2_5"});
    let resp = eleven(&fake, "voice1", "pcm_16000", &text).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().len(), 8 * 960 * 2);
    let resp = eleven(&fake, "voice1", "pcm_22050", &json!({"text": "abc"})).await;
    assert_eq!(resp.bytes().await.unwrap().len(), 3 * 1323 * 2);
    let path = fake.requests(Route::ElevenLabs)[0].path_and_query.clone();
    assert_eq!(
        path,
        "/v1/text-to-speech/voice1/stream?output_format=pcm_16000"
    );

    assert_eq!(eleven(&fake, "voice1", "pcm_7", &text).await.status(), 422);
    let resp = eleven(&fake, "voice1", "mp3_44100_128", &text).await;
    assert_eq!(resp.status(), 400);
    let resp = eleven(&fake, "voice1", "pcm_16000", &json!({"model_id": "m"})).await;
    assert_eq!(resp.status(), 422);

    fake.set_elevenlabs_voices(&["voice1"]);
    let resp = eleven(&fake, "nobody", "pcm_16000", &text).await;
    assert_eq!(resp.status(), 404);
    let error: Value = resp.json().await.unwrap();
    assert_eq!(error["detail"]["status"], "voice_not_found");
    assert_eq!(
        eleven(&fake, "voice1", "pcm_16000", &text).await.status(),
        200
    );
}

async fn deepgram(
    fake: &FakeProvider,
    query: &str,
    auth: Option<&str>,
) -> Result<Ws, tungstenite::Error> {
    let mut request = format!("{}/v1/listen?{query}", fake.ws_base())
        .into_client_request()
        .unwrap();
    if let Some(a) = auth {
        request
            .headers_mut()
            .insert("authorization", a.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

const DG_QUERY: &str = "encoding=linear16&sample_rate=16000&channels=1&interim_results=true\
                        &model=nova-3&punctuate=true&smart_format=true&endpointing=300";

/// The HTTP status (and body) of a refused WebSocket upgrade.
fn refused(result: Result<Ws, tungstenite::Error>) -> (u16, String, Option<String>) {
    match result {
        Err(tungstenite::Error::Http(resp)) => {
            let retry = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
            (resp.status().as_u16(), body.into_owned(), retry)
        }
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected an HTTP refusal, got an upgrade"),
    }
}

/// The next message within a second: `None` when the socket ended without one.
async fn next(ws: &mut Ws) -> Option<Message> {
    match tokio::time::timeout(SECOND, ws.next()).await {
        Ok(Some(Ok(m))) => Some(m),
        Ok(_) => None,
        Err(_) => panic!("no message within a second"),
    }
}

async fn next_json(ws: &mut Ws) -> Value {
    match next(ws).await {
        Some(Message::Text(t)) => serde_json::from_str(&t).unwrap(),
        other => panic!("expected a JSON text frame, got {other:?}"),
    }
}

fn transcript(v: &Value) -> &str {
    v["channel"]["alternatives"][0]["transcript"]
        .as_str()
        .unwrap()
}

/// Sends `ms` of 16 kHz audio in 100 ms frames.
async fn send_audio(ws: &mut Ws, ms: u32) {
    for chunk in common::tone_pcm16(ms, 16000, 0.3).chunks(3200) {
        ws.send(Message::Binary(chunk.to_vec().into()))
            .await
            .unwrap();
    }
}

async fn send_type(ws: &mut Ws, kind: &str) {
    let text = json!({ "type": kind }).to_string();
    ws.send(Message::Text(text.into())).await.unwrap();
}

#[tokio::test]
async fn deepgram_interims_final_on_finalize_and_metadata_on_close() {
    let fake = FakeProvider::start().await;
    let mut ws = deepgram(&fake, DG_QUERY, None).await.unwrap();
    send_type(&mut ws, "KeepAlive").await;
    send_audio(&mut ws, 1000).await;
    let first = next_json(&mut ws).await;
    assert_eq!(first["type"], "Results");
    assert_eq!(first["is_final"], false);
    assert_eq!(first["channel_index"], json!([0, 1]));
    assert_eq!(transcript(&first), "hello from");
    let second = next_json(&mut ws).await;
    assert_eq!(second["is_final"], false);
    assert_eq!(transcript(&second), DEFAULT_TRANSCRIPT);
    assert_eq!(second["duration"], 1.0);

    send_type(&mut ws, "Finalize").await;
    let fin = next_json(&mut ws).await;
    assert_eq!(fin["is_final"], true);
    assert_eq!(fin["speech_final"], true);
    assert_eq!(fin["from_finalize"], true);
    assert_eq!(transcript(&fin), DEFAULT_TRANSCRIPT);

    // A second utterance of half a second: half the words, finalized by CloseStream.
    fake.set_transcript("one two three four");
    send_audio(&mut ws, 500).await;
    let interim = next_json(&mut ws).await;
    assert_eq!(transcript(&interim), "one two");
    assert_eq!(interim["start"], 1.0);
    send_type(&mut ws, "CloseStream").await;
    let last = next_json(&mut ws).await;
    assert_eq!(
        (last["is_final"].clone(), last["from_finalize"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(transcript(&last), "one two");
    let meta = next_json(&mut ws).await;
    assert_eq!(meta["type"], "Metadata");
    assert_eq!(meta["duration"], 1.5);
    match next(&mut ws).await {
        Some(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1000),
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(fake.wait_for(SECOND, |f| f.open_streams() == 0).await);
    assert_eq!(fake.aborted_streams(), 0);
    let seen = &fake.requests(Route::DeepgramListen)[0];
    assert_eq!(seen.audio_bytes, 48000);
    let kinds: Vec<Value> = seen
        .text_messages
        .iter()
        .map(|t| serde_json::from_str(t).unwrap())
        .collect();
    assert_eq!(
        kinds,
        vec![
            json!({"type": "KeepAlive"}),
            json!({"type": "Finalize"}),
            json!({"type": "CloseStream"})
        ]
    );
    assert!(seen.path_and_query.contains("model=nova-3"));
}

#[tokio::test]
async fn deepgram_refuses_bad_queries_and_faulted_upgrades_and_times_out() {
    let fake = FakeProvider::start().await;
    let (status, _, _) = refused(deepgram(&fake, "encoding=linear16", None).await);
    assert_eq!(status, 400);
    let (status, _, _) = refused(deepgram(&fake, "sample_rate=16000", None).await);
    assert_eq!(status, 400);

    fake.push_fault(Route::DeepgramListen, Fault::Status(503));
    fake.push_fault(
        Route::DeepgramListen,
        Fault::RateLimited {
            retry_after_secs: 3,
        },
    );
    let (status, body, _) = refused(deepgram(&fake, DG_QUERY, None).await);
    assert_eq!(status, 503);
    assert!(serde_json::from_str::<Value>(&body).unwrap()["err_msg"].is_string());
    let (status, _, retry) = refused(deepgram(&fake, DG_QUERY, None).await);
    assert_eq!((status, retry.as_deref()), (429, Some("3")));

    fake.set_deepgram_idle_timeout(Duration::from_millis(150));
    let mut ws = deepgram(&fake, DG_QUERY, None).await.unwrap();
    match next(&mut ws).await {
        Some(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1011),
        other => panic!("expected close 1011, got {other:?}"),
    }
    assert_eq!(fake.count(Route::DeepgramListen), 5);
    assert_eq!(fake.aborted_streams(), 0);
}

#[tokio::test]
async fn deepgram_stream_faults() {
    let fake = FakeProvider::start().await;

    // Truncate: one result, then the socket closes with no close frame.
    fake.push_fault(Route::DeepgramListen, Fault::Truncate { after: 1 });
    let mut ws = deepgram(&fake, DG_QUERY, None).await.unwrap();
    send_audio(&mut ws, 1000).await;
    assert_eq!(next_json(&mut ws).await["type"], "Results");
    let after = tokio::time::timeout(SECOND, ws.next()).await.unwrap();
    assert!(
        matches!(after, None | Some(Err(_))),
        "no close frame: {after:?}"
    );

    // MalformedJson: a text frame that is not JSON before the first result.
    fake.push_fault(Route::DeepgramListen, Fault::MalformedJson);
    let mut ws = deepgram(&fake, DG_QUERY, None).await.unwrap();
    send_audio(&mut ws, 500).await;
    match next(&mut ws).await {
        Some(Message::Text(t)) => assert!(serde_json::from_str::<Value>(&t).is_err()),
        other => panic!("{other:?}"),
    }
    assert_eq!(next_json(&mut ws).await["type"], "Results");
    drop(ws);

    // SlowStream: each result waits the gap.
    fake.push_fault(
        Route::DeepgramListen,
        Fault::SlowStream(Duration::from_millis(100)),
    );
    let mut ws = deepgram(&fake, DG_QUERY, None).await.unwrap();
    let t = Instant::now();
    send_type(&mut ws, "Finalize").await;
    let fin = next_json(&mut ws).await;
    assert_eq!(
        (fin["from_finalize"].clone(), transcript(&fin)),
        (json!(true), "")
    );
    assert!(t.elapsed() >= Duration::from_millis(100));
    drop(ws);

    // Delay: the upgrade itself is late.
    fake.push_fault(
        Route::DeepgramListen,
        Fault::Delay(Duration::from_millis(100)),
    );
    let t = Instant::now();
    let ws = deepgram(&fake, DG_QUERY, None).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(100));
    drop(ws);

    // Hang: upgraded, reads, never answers; the client leaving counts as an abort.
    fake.push_fault(Route::DeepgramListen, Fault::Hang);
    let mut ws = deepgram(&fake, DG_QUERY, None).await.unwrap();
    send_audio(&mut ws, 500).await;
    send_type(&mut ws, "Finalize").await;
    assert!(tokio::time::timeout(Duration::from_millis(200), ws.next())
        .await
        .is_err());
    let before = fake.aborted_on(Route::DeepgramListen);
    drop(ws);
    let left = fake
        .wait_for(SECOND, |f| f.aborted_on(Route::DeepgramListen) > before)
        .await;
    assert!(left);
    assert!(fake.wait_aborted(Route::DeepgramListen, SECOND).await);
    assert!(fake.wait_for(SECOND, |f| f.open_streams() == 0).await);
}

#[tokio::test]
async fn keys_are_required_and_echoed_in_401_bodies() {
    let fake = FakeProvider::start().await;
    fake.require_key("sk-good");
    fake.push_fault(Route::ChatCompletions, Fault::Status(500));

    let resp = http()
        .post(format!("{}/v1/chat/completions", fake.base()))
        .bearer_auth("sk-wrong-123")
        .json(&chat_request(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let error: Value = resp.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("sk-wrong-123"), "{message}");
    assert_eq!(
        fake.pending_faults(Route::ChatCompletions),
        1,
        "401 keeps the fault"
    );
    assert_eq!(chat(&fake, &chat_request(false)).await.status(), 401);
    let resp = http()
        .post(format!("{}/v1/chat/completions", fake.base()))
        .bearer_auth("sk-good")
        .json(&chat_request(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500, "the queued fault, once authenticated");
    assert_eq!(fake.count(Route::ChatCompletions), 3);

    let resp = http()
        .post(format!(
            "{}/v1/text-to-speech/v/stream?output_format=pcm_16000",
            fake.base()
        ))
        .header("xi-api-key", "el-wrong-456")
        .json(&json!({"text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.text().await.unwrap().contains("el-wrong-456"));

    let (status, body, _) = refused(deepgram(&fake, DG_QUERY, Some("Token dg-wrong-789")).await);
    assert_eq!(status, 401);
    assert!(body.contains("dg-wrong-789"), "{body}");
    let (status, _, _) = refused(deepgram(&fake, DG_QUERY, Some("Bearer sk-good")).await);
    assert_eq!(status, 401, "Deepgram keys use the Token scheme");
    assert!(deepgram(&fake, DG_QUERY, Some("Token sk-good"))
        .await
        .is_ok());
}

#[tokio::test]
async fn status_rate_limit_delay_and_hang_faults_then_normal() {
    let fake = FakeProvider::start().await;
    let route = Route::ChatCompletions;
    fake.push_fault(route, Fault::Status(503));
    fake.push_fault(
        route,
        Fault::RateLimited {
            retry_after_secs: 7,
        },
    );
    fake.push_fault(route, Fault::Delay(Duration::from_millis(150)));
    fake.push_fault(route, Fault::Hang);

    let resp = chat(&fake, &chat_request(true)).await;
    assert_eq!(resp.status(), 503);
    let error: Value = resp.json().await.unwrap();
    assert_eq!(error["error"]["type"], "server_error");
    let resp = chat(&fake, &chat_request(true)).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    let t = Instant::now();
    let resp = chat(&fake, &chat_request(false)).await;
    assert!(t.elapsed() >= Duration::from_millis(150));
    assert_eq!(resp.status(), 200);
    let hung = http()
        .post(format!("{}/v1/chat/completions", fake.base()))
        .timeout(Duration::from_millis(200))
        .json(&chat_request(true))
        .send()
        .await;
    assert!(hung.unwrap_err().is_timeout());
    assert_eq!(chat(&fake, &chat_request(false)).await.status(), 200);
    assert_eq!(fake.count(route), 5);
}

/// (That the headers come before the first gap is shown without a clock by the engine tests: a
/// stalled stream fails in the body, "stalled", not in the request, "no response".)
#[tokio::test]
async fn slow_stream_puts_gaps_between_the_events() {
    let fake = FakeProvider::start().await;
    fake.set_reply("one two");
    fake.push_fault(
        Route::ChatCompletions,
        Fault::SlowStream(Duration::from_millis(50)),
    );
    let t = Instant::now();
    let resp = chat(&fake, &chat_request(true)).await;
    let (body, _, cut) = read_body(resp).await;
    // role, two words, finish, [DONE]: four gaps.
    assert!(t.elapsed() >= Duration::from_millis(200));
    assert!(!cut);
    let (data, done) = sse_data(&String::from_utf8(body).unwrap());
    assert!(done);
    let events: Vec<Value> = data
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(contents(&events), "one two");

    fake.push_fault(
        Route::Transcriptions,
        Fault::SlowStream(Duration::from_millis(100)),
    );
    let t = Instant::now();
    let resp = transcribe(&fake, transcription_form(&[("model", "whisper-1")], true)).await;
    assert_eq!(
        resp.json::<Value>().await.unwrap()["text"],
        DEFAULT_TRANSCRIPT
    );
    assert!(t.elapsed() >= Duration::from_millis(100));
}

#[tokio::test]
async fn truncate_drops_the_connection_without_terminator() {
    let fake = FakeProvider::start().await;
    fake.push_fault(Route::ChatCompletions, Fault::Truncate { after: 3 });
    let (body, _, cut) = read_body(chat(&fake, &chat_request(true)).await).await;
    assert!(cut, "the body ends in an error");
    let (data, done) = sse_data(&String::from_utf8(body).unwrap());
    assert!(!done);
    assert_eq!(data.len(), 3);

    fake.push_fault(Route::Speech, Fault::Truncate { after: 1 });
    let body = json!({"model": "tts-1", "input": "a long enough input", "voice": "alloy", "response_format": "pcm"});
    let (pcm, _, cut) = read_body(speech(&fake, &body).await).await;
    assert!(cut);
    assert_eq!(pcm.len(), 4800);

    fake.push_fault(Route::Transcriptions, Fault::Truncate { after: 5 });
    let resp = transcribe(&fake, transcription_form(&[("model", "whisper-1")], true)).await;
    let (bytes, _, cut) = read_body(resp).await;
    assert!(cut);
    assert_eq!(bytes, b"{\"tex");
    assert_eq!(
        fake.aborted_streams(),
        0,
        "a server-side cut is no client abort"
    );
}

#[tokio::test]
async fn malformed_json_faults() {
    let fake = FakeProvider::start().await;
    fake.push_fault(Route::ChatCompletions, Fault::MalformedJson);
    let text = chat(&fake, &chat_request(true)).await.text().await.unwrap();
    let (data, done) = sse_data(&text);
    assert!(done);
    let parsed: Vec<Option<Value>> = data.iter().map(|d| serde_json::from_str(d).ok()).collect();
    assert_eq!(parsed.iter().filter(|p| p.is_none()).count(), 1);
    assert!(parsed[0].is_some() && parsed[1].is_some() && parsed[2].is_none());
    let good: Vec<Value> = parsed.into_iter().flatten().collect();
    assert_eq!(contents(&good), DEFAULT_REPLY);

    fake.push_fault(Route::Transcriptions, Fault::MalformedJson);
    let resp = transcribe(&fake, transcription_form(&[("model", "whisper-1")], true)).await;
    assert_eq!(resp.status(), 200);
    assert!(serde_json::from_slice::<Value>(&resp.bytes().await.unwrap()).is_err());

    fake.push_fault(Route::ElevenLabs, Fault::MalformedJson);
    let resp = eleven(&fake, "v", "pcm_24000", &json!({"text": "hi"})).await;
    assert_eq!(resp.status(), 500);
    assert!(serde_json::from_slice::<Value>(&resp.bytes().await.unwrap()).is_err());
}

#[tokio::test]
async fn a_client_dropping_a_slow_stream_is_seen_as_an_abort() {
    let fake = FakeProvider::start().await;
    let full = chat(&fake, &chat_request(true)).await.text().await.unwrap();
    assert!(full.ends_with("[DONE]\n\n"));
    assert!(
        !fake
            .wait_aborted(Route::ChatCompletions, Duration::from_millis(50))
            .await
    );

    fake.push_fault(Route::Speech, Fault::SlowStream(Duration::from_millis(30)));
    let body = json!({"model": "tts-1", "input": "x".repeat(40), "voice": "alloy", "response_format": "pcm"});
    let mut resp = speech(&fake, &body).await;
    assert!(resp.chunk().await.unwrap().is_some());
    assert_eq!(fake.open_streams(), 1);
    drop(resp);
    assert!(fake.wait_aborted(Route::Speech, SECOND).await);
    assert!(fake.wait_for(SECOND, |f| f.open_streams() == 0).await);
    assert_eq!(fake.aborted_streams(), 1);
    assert_eq!(fake.aborted_on(Route::ChatCompletions), 0);
}
