//! Hosted engines inside real calls over the WebSocket: what a client sees when a provider
//! fails (an `error` frame without the key, and the call goes on), a fallback that answers
//! instead, an interruption that closes the provider's stream, per-agent engine chains, and
//! logs that never hold a key.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::hosted::{providers, KEY};
use common::providers::{FakeProvider, Fault, Route, DEFAULT_REPLY};
use common::{recv, recv_until, send, start_with, TestServer};
use serde_json::{json, Value};
use voxwire::engines::Engines;
use voxwire::Config;

/// Everything logged by this test binary, at debug level and above, from every crate.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let for_writer = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || Sink(for_writer.clone()))
            .try_init();
        buf
    })
    .clone()
}

/// A server whose engines are the given chains, with `openai`, `deepgram` and `elevenlabs`
/// served by `fake`.
async fn start_server(
    fake: &FakeProvider,
    stt: &[&str],
    llm: &[&str],
    tts: &[&str],
    agents: Option<&str>,
) -> TestServer {
    logs();
    let mut config = Config::for_tests();
    config.providers = providers(fake);
    config.stt = stt.iter().map(|s| s.to_string()).collect();
    config.llm = llm.iter().map(|s| s.to_string()).collect();
    config.tts = tts.iter().map(|s| s.to_string()).collect();
    if let Some(a) = agents {
        config.agents = voxwire::agents::Agents::parse(a).unwrap();
    }
    let engines = Engines::from_config(&config).unwrap();
    start_with(config, engines).await
}

async fn text_turn(ws: &mut common::Ws, text: &str) -> Vec<Value> {
    send(ws, json!({"type": "text", "text": text})).await;
    recv_until(ws, "response_done").await
}

fn final_response(frames: &[Value]) -> Option<String> {
    frames
        .iter()
        .find(|f| f["type"] == "response" && f["is_final"] == true)
        .map(|f| f["text"].as_str().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_provider_gives_an_error_frame_without_the_key_and_the_call_goes_on() {
    let fake = FakeProvider::start().await;
    fake.require_key(KEY);
    let server = start_server(&fake, &["fake"], &["openai"], &["fake"], None).await;
    let (mut ws, _) = server.call("alice", json!({})).await;
    for _ in 0..3 {
        fake.push_fault(Route::ChatCompletions, Fault::Status(500));
    }
    let frames = text_turn(&mut ws, "hello").await;
    let error = frames
        .iter()
        .find(|f| f["type"] == "error")
        .unwrap_or_else(|| panic!("no error frame: {frames:?}"));
    assert_eq!(error["code"], "engine_error");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("500"), "{message}");
    assert!(!message.contains(KEY), "key leaked: {message}");
    assert_eq!(frames.last().unwrap()["reason"], "error");
    assert_eq!(fake.count(Route::ChatCompletions), 3);

    // The provider recovers: the same call answers the next turn.
    let frames = text_turn(&mut ws, "hello again").await;
    assert_eq!(final_response(&frames).as_deref(), Some(DEFAULT_REPLY));
    let audio = frames
        .iter()
        .filter(|f| f["type"] == "audio_response")
        .count();
    assert!(audio > 0, "the reply is spoken: {frames:?}");

    // The key in the provider's 401 body never reaches the client.
    let other = FakeProvider::start().await;
    other.require_key("sk-another-key-000000000");
    let second = start_server(&other, &["fake"], &["openai"], &["fake"], None).await;
    let (mut ws2, _) = second.call("bob", json!({})).await;
    let frames = text_turn(&mut ws2, "hello").await;
    let error = frames.iter().find(|f| f["type"] == "error").unwrap();
    let text = error.to_string();
    assert!(text.contains("rejected the API key"), "{text}");
    assert!(!text.contains(KEY), "key leaked: {text}");

    let logged = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(logged.contains("turn failed"), "the failure is logged");
    assert!(!logged.contains(KEY), "the key is in the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_answers_when_the_hosted_model_is_down() {
    let fake = FakeProvider::start().await;
    fake.require_key(KEY);
    let server = start_server(
        &fake,
        &["fake"],
        &["openai", "fake"],
        &["openai", "fake"],
        None,
    )
    .await;
    let (mut ws, hello) = server.connect("alice").await;
    assert_eq!(
        hello["engines"]["llm"],
        "openai (gpt-test) > fake (test engine)"
    );
    send(&mut ws, json!({"type": "start_call"})).await;
    assert_eq!(recv(&mut ws).await["type"], "call_started");
    for _ in 0..3 {
        fake.push_fault(Route::ChatCompletions, Fault::Status(503));
    }
    fake.push_fault(Route::Speech, Fault::Status(400));
    let frames = text_turn(&mut ws, "hello").await;
    assert!(frames.iter().all(|f| f["type"] != "error"), "{frames:?}");
    assert_eq!(
        final_response(&frames).as_deref(),
        Some("You said: hello. That is turn 1.")
    );
    // The first sentence's audio came from the fallback voice, resampled to the call's rate.
    let audio: usize = frames
        .iter()
        .filter(|f| f["type"] == "audio_response")
        .map(|f| {
            use base64::Engine as _;
            let b64 = f["audio"].as_str().unwrap();
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap()
                .len()
        })
        .sum();
    assert!(audio > 0, "{frames:?}");
    assert_eq!(fake.count(Route::ChatCompletions), 3);
    let metrics = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("voxwire_engine_failovers_total{engine=\"openai (gpt-test)\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupting_a_reply_closes_the_provider_streams() {
    let fake = FakeProvider::start().await;
    fake.require_key(KEY);
    let server = start_server(&fake, &["fake"], &["openai"], &["openai"], None).await;
    let (mut ws, _) = server.call("alice", json!({})).await;
    fake.set_reply("One two three four five six seven eight nine ten eleven twelve.");
    fake.push_fault(
        Route::ChatCompletions,
        Fault::SlowStream(Duration::from_millis(150)),
    );
    send(&mut ws, json!({"type": "text", "text": "count for me"})).await;
    loop {
        let f = recv(&mut ws).await;
        if f["type"] == "response" {
            break;
        }
    }
    send(&mut ws, json!({"type": "interrupt"})).await;
    let frames = recv_until(&mut ws, "response_done").await;
    assert_eq!(
        frames.last().unwrap()["reason"],
        "interrupted",
        "{frames:?}"
    );
    assert!(
        fake.wait_aborted(Route::ChatCompletions, Duration::from_secs(3))
            .await,
        "the language model's stream was left open"
    );
    common::assert_alive(&mut ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_can_use_its_own_engine_chain() {
    let fake = FakeProvider::start().await;
    fake.require_key(KEY);
    let agents = r#"
default = "local-only"
[[agent]]
name = "local-only"
system_prompt = "Be brief."
[[agent]]
name = "hosted"
system_prompt = "Be helpful."
llm = ["openai", "fake"]
tts = ["elevenlabs"]
voice = "rachel"
"#;
    let server = start_server(&fake, &["fake"], &["fake"], &["fake"], Some(agents)).await;
    let (mut ws, _) = server.call("alice", json!({"agent": "hosted"})).await;
    let frames = text_turn(&mut ws, "hi").await;
    assert_eq!(final_response(&frames).as_deref(), Some(DEFAULT_REPLY));
    let body = fake.last(Route::ChatCompletions).unwrap().json.unwrap();
    assert_eq!(body["messages"][0]["content"], "Be helpful.");
    let voice = fake.last(Route::ElevenLabs).unwrap().path_and_query;
    assert!(
        voice.contains("/text-to-speech/rachel-id/stream"),
        "{voice}"
    );

    let (mut ws, _) = server.call("bob", json!({"agent": "local-only"})).await;
    let frames = text_turn(&mut ws, "hi").await;
    assert_eq!(
        final_response(&frames).as_deref(),
        Some("You said: hi. That is turn 1.")
    );
    assert_eq!(fake.count(Route::ChatCompletions), 1);
}

/// 2.5 s of tone (speech to the energy detector), then 1 s of silence, in 500 ms chunks with a
/// short pause between them so interim results can arrive while the caller "speaks".
async fn speak(ws: &mut common::Ws) {
    let mut pcm = common::tone_pcm16(2500, 16_000, 0.3);
    pcm.extend(vec![0u8; 16_000 * 2]);
    for (i, c) in pcm.chunks(16_000).enumerate() {
        send(
            ws,
            json!({"type": "audio", "audio": common::b64(c), "seq": i}),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_transcriber_gives_partials_while_the_caller_speaks() {
    let fake = FakeProvider::start().await;
    fake.require_key(KEY);
    fake.set_transcript("please book a cleaning for friday morning");
    let server = start_server(&fake, &["deepgram"], &["fake"], &["fake"], None).await;
    let (mut ws, _) = server.call("alice", json!({})).await;
    speak(&mut ws).await;
    let frames = recv_until(&mut ws, "response_done").await;
    let kinds: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    let stopped = kinds.iter().position(|k| *k == "speech_stopped").unwrap();
    let partials: Vec<&Value> = frames[..stopped]
        .iter()
        .filter(|f| f["type"] == "transcript" && f["is_final"] == false)
        .collect();
    assert!(
        !partials.is_empty(),
        "no interim results while speaking: {kinds:?}"
    );
    let first = partials[0]["text"].as_str().unwrap();
    assert!(
        "please book a cleaning for friday morning".starts_with(first),
        "{first}"
    );
    let final_text = frames
        .iter()
        .find(|f| f["type"] == "transcript" && f["is_final"] == true)
        .unwrap();
    assert_eq!(
        final_text["text"],
        "please book a cleaning for friday morning"
    );
    assert_eq!(
        final_response(&frames).as_deref(),
        Some("You said: please book a cleaning for friday morning. That is turn 1.")
    );
    let req = fake.last(Route::DeepgramListen).unwrap();
    assert!(
        req.path_and_query.contains("encoding=linear16"),
        "{}",
        req.path_and_query
    );
    assert!(req.path_and_query.contains("sample_rate=16000"));
    assert!(req.path_and_query.contains("interim_results=true"));
    // The whole utterance went up the socket: 2.5 s of speech plus padding, 32 bytes a ms.
    assert!(req.audio_bytes >= 2500 * 32, "{}", req.audio_bytes);
    assert_eq!(fake.count(Route::DeepgramListen), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_live_stream_breaks_the_utterance_is_transcribed_again() {
    let fake = FakeProvider::start().await;
    fake.require_key(KEY);
    fake.set_transcript("my tooth hurts");
    let server = start_server(&fake, &["deepgram"], &["fake"], &["fake"], None).await;
    let (mut ws, _) = server.call("alice", json!({})).await;
    // The live socket drops after its first result.
    fake.push_fault(Route::DeepgramListen, Fault::Truncate { after: 1 });
    speak(&mut ws).await;
    let frames = recv_until(&mut ws, "response_done").await;
    assert!(frames.iter().all(|f| f["type"] != "error"), "{frames:?}");
    let final_text = frames
        .iter()
        .find(|f| f["type"] == "transcript" && f["is_final"] == true)
        .unwrap();
    assert_eq!(final_text["text"], "my tooth hurts");
    assert_eq!(
        fake.count(Route::DeepgramListen),
        2,
        "live, then the whole utterance"
    );
}
