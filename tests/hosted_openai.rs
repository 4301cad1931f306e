//! The OpenAI-compatible engines and the fallback chains against a local server that speaks the
//! OpenAI API and injects faults: retries, backoff, Retry-After, timeouts, truncated and
//! malformed streams, cancellation, and keys kept out of errors.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::hosted::{spec, KEY};
use common::providers::{word_pieces, FakeProvider, Fault, Route, DEFAULT_REPLY};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use voxwire::engines::llm::fallback::FallbackLlm;
use voxwire::engines::llm::openai::OpenAiLlm;
use voxwire::engines::llm::{ChatMessage, ChatRequest, LanguageModel};
use voxwire::engines::stt::openai::OpenAiStt;
use voxwire::engines::stt::SpeechToText;
use voxwire::engines::tts::openai::OpenAiTts;
use voxwire::engines::tts::TextToSpeech;
use voxwire::engines::EngineError;

fn request(text: &str) -> ChatRequest {
    ChatRequest {
        session_id: "call-1".into(),
        system: "You are terse.".into(),
        messages: vec![ChatMessage::user(text)],
        max_tokens: 50,
        temperature: 0.2,
        json: false,
        tokens: None,
        tools: None,
        first_words: None,
    }
}

/// Every delta until the end, and the error that ended it, if any.
async fn collect(
    llm: &dyn LanguageModel,
    cancel: CancellationToken,
) -> (String, Option<EngineError>) {
    let mut s = llm.stream(request("hi"), cancel);
    let mut text = String::new();
    while let Some(d) = s.next().await {
        match d {
            Ok(d) => text.push_str(&d),
            Err(e) => return (text, Some(e)),
        }
    }
    (text, None)
}

async fn setup() -> (FakeProvider, OpenAiLlm) {
    let fake = FakeProvider::start().await;
    fake.require_key(KEY);
    let llm = OpenAiLlm::new("openai", &spec(&fake, "openai")).unwrap();
    (fake, llm)
}

#[tokio::test]
async fn a_reply_streams_with_the_request_the_api_documents() {
    let (fake, llm) = setup().await;
    let (text, err) = collect(&llm, CancellationToken::new()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(text, DEFAULT_REPLY);
    let req = fake.last(Route::ChatCompletions).unwrap();
    assert_eq!(req.headers["authorization"], format!("Bearer {KEY}"));
    let body = req.json.unwrap();
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(body["stream"], true);
    assert_eq!(body["max_tokens"], 50);
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(body["messages"][0]["content"], "You are terse.");
    assert_eq!(body["messages"][1]["role"], "user");
    assert_eq!(llm.name(), "openai (gpt-test)");
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_with_backoff() {
    let (fake, llm) = setup().await;
    fake.push_fault(
        Route::ChatCompletions,
        Fault::RateLimited {
            retry_after_secs: 1,
        },
    );
    let started = std::time::Instant::now();
    let (text, err) = collect(&llm, CancellationToken::new()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(text, DEFAULT_REPLY);
    assert_eq!(fake.count(Route::ChatCompletions), 2);
    // Retry-After: 1 was honoured (a lower bound only; never an upper one).
    assert!(started.elapsed() >= Duration::from_millis(950));

    fake.push_fault(Route::ChatCompletions, Fault::Status(500));
    fake.push_fault(Route::ChatCompletions, Fault::Status(503));
    let (text, err) = collect(&llm, CancellationToken::new()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(text, DEFAULT_REPLY);
    assert_eq!(fake.count(Route::ChatCompletions), 5);
}

#[tokio::test]
async fn retries_are_bounded_and_the_error_says_what_happened() {
    let (fake, llm) = setup().await;
    for _ in 0..3 {
        fake.push_fault(Route::ChatCompletions, Fault::Status(500));
    }
    let (text, err) = collect(&llm, CancellationToken::new()).await;
    assert_eq!(text, "");
    let err = err.expect("three 500s in a row fail").to_string();
    assert!(err.contains("500"), "{err}");
    assert!(err.contains("openai language model"), "{err}");
    assert_eq!(fake.count(Route::ChatCompletions), 3, "1 try + 2 retries");

    // A 400 is the request's fault: not retried.
    fake.push_fault(Route::ChatCompletions, Fault::Status(400));
    let (_, err) = collect(&llm, CancellationToken::new()).await;
    assert!(err.unwrap().to_string().contains("400"));
    assert_eq!(fake.count(Route::ChatCompletions), 4);
}

#[tokio::test]
async fn a_long_retry_after_fails_at_once_so_a_fallback_can_answer() {
    let (fake, llm) = setup().await;
    fake.push_fault(
        Route::ChatCompletions,
        Fault::RateLimited {
            retry_after_secs: 60,
        },
    );
    let (_, err) = collect(&llm, CancellationToken::new()).await;
    let err = err.unwrap().to_string();
    assert!(err.contains("429"), "{err}");
    assert!(err.contains("60000 ms"), "{err}");
    assert_eq!(fake.count(Route::ChatCompletions), 1);
}

#[tokio::test]
async fn a_provider_that_never_answers_times_out() {
    let (fake, llm) = setup().await;
    for _ in 0..3 {
        fake.push_fault(Route::ChatCompletions, Fault::Hang);
    }
    let (_, err) = collect(&llm, CancellationToken::new()).await;
    let err = err.unwrap().to_string();
    assert!(err.contains("no response within 600 ms"), "{err}");
    assert_eq!(fake.count(Route::ChatCompletions), 3);
}

#[tokio::test]
async fn a_stream_cut_after_text_is_an_error_not_a_short_reply() {
    let (fake, llm) = setup().await;
    // The role event, then three words, then the connection drops.
    fake.push_fault(Route::ChatCompletions, Fault::Truncate { after: 4 });
    let (text, err) = collect(&llm, CancellationToken::new()).await;
    let words = word_pieces(DEFAULT_REPLY);
    assert_eq!(text, words[..3].concat());
    let err = err.expect("a truncated stream is reported").to_string();
    assert!(
        err.contains("truncated") || err.contains("broke off"),
        "{err}"
    );
    assert_eq!(
        fake.count(Route::ChatCompletions),
        1,
        "text was used: no retry"
    );
}

#[tokio::test]
async fn a_stream_cut_before_any_text_is_sent_again() {
    let (fake, llm) = setup().await;
    fake.push_fault(Route::ChatCompletions, Fault::Truncate { after: 1 });
    let (text, err) = collect(&llm, CancellationToken::new()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(text, DEFAULT_REPLY);
    assert_eq!(fake.count(Route::ChatCompletions), 2);
}

#[tokio::test]
async fn malformed_json_mid_stream_is_an_error() {
    let (fake, llm) = setup().await;
    fake.push_fault(Route::ChatCompletions, Fault::MalformedJson);
    let (text, err) = collect(&llm, CancellationToken::new()).await;
    assert_eq!(text, word_pieces(DEFAULT_REPLY)[0]);
    let err = err.unwrap().to_string();
    assert!(err.contains("malformed JSON"), "{err}");
}

#[tokio::test]
async fn a_stalled_stream_fails_after_the_stream_timeout() {
    let (fake, llm) = setup().await;
    // A stall before any text is sent again, like any failed request: three stalls fail.
    for _ in 0..3 {
        fake.push_fault(
            Route::ChatCompletions,
            Fault::SlowStream(Duration::from_millis(1500)),
        );
    }
    let (text, err) = collect(&llm, CancellationToken::new()).await;
    let err = err.unwrap().to_string();
    assert!(err.contains("stalled: nothing for 600 ms"), "{err}");
    assert_eq!(text, "");
    assert_eq!(fake.count(Route::ChatCompletions), 3);
}

#[tokio::test]
async fn cancelling_a_reply_closes_the_provider_stream() {
    let (fake, llm) = setup().await;
    fake.push_fault(
        Route::ChatCompletions,
        Fault::SlowStream(Duration::from_millis(100)),
    );
    let cancel = CancellationToken::new();
    let mut s = llm.stream(request("hi"), cancel.clone());
    let first = s.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    cancel.cancel();
    assert!(
        fake.wait_aborted(Route::ChatCompletions, Duration::from_secs(3))
            .await,
        "the provider saw its stream closed"
    );
    drop(s);
    // Dropping a stream (the turn task ending) closes it too.
    fake.push_fault(
        Route::ChatCompletions,
        Fault::SlowStream(Duration::from_millis(100)),
    );
    let mut s = llm.stream(request("hi"), CancellationToken::new());
    s.next().await.unwrap().unwrap();
    drop(s);
    assert!(
        fake.wait_for(Duration::from_secs(3), |f| f
            .aborted_on(Route::ChatCompletions)
            == 2)
            .await
    );
}

#[tokio::test]
async fn a_rejected_key_is_never_repeated() {
    let fake = FakeProvider::start().await;
    fake.require_key("sk-the-right-one-000000");
    let llm = OpenAiLlm::new("openai", &spec(&fake, "openai")).unwrap();
    let (_, err) = collect(&llm, CancellationToken::new()).await;
    let err = err.unwrap();
    let text = format!("{err} {err:?}");
    assert!(text.contains("401"), "{text}");
    assert!(text.contains("rejected the API key"), "{text}");
    assert!(!text.contains(KEY), "key leaked: {text}");
    assert_eq!(fake.count(Route::ChatCompletions), 1, "401 is not retried");
}

#[tokio::test]
async fn speech_to_text_sends_a_wav_and_reads_the_text() {
    let fake = FakeProvider::start().await;
    fake.require_key(KEY);
    fake.set_transcript("book me in for tuesday");
    let stt = OpenAiStt::new("openai", &spec(&fake, "openai")).unwrap();
    let audio: Arc<[f32]> = common::tone(800, 16_000, 0.3).into();
    let t = stt
        .transcribe(audio.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(t.text, "book me in for tuesday");
    let req = fake.last(Route::Transcriptions).unwrap();
    assert_eq!(req.form["model"], "whisper-test");
    assert_eq!(req.form["language"], "en");
    // 800 ms at 16 kHz, 16-bit, plus a 44-byte header.
    assert_eq!(req.file_bytes, Some(800 * 16 * 2 + 44));

    fake.push_fault(Route::Transcriptions, Fault::Status(502));
    let t = stt
        .transcribe(audio.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(t.text, "book me in for tuesday");
    assert_eq!(fake.count(Route::Transcriptions), 3);

    fake.push_fault(Route::Transcriptions, Fault::MalformedJson);
    let e = stt
        .transcribe(audio, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("malformed JSON"), "{e}");
}

#[tokio::test]
async fn text_to_speech_streams_pcm_in_the_agent_voice() {
    let fake = FakeProvider::start().await;
    fake.require_key(KEY);
    let tts = OpenAiTts::new("openai", &spec(&fake, "openai")).unwrap();
    assert_eq!(tts.sample_rate(), 24_000);
    assert!(tts.has_voice("nova") && !tts.has_voice("joe"));
    let text = "Hello there, caller.";
    let chunks: Vec<Vec<f32>> = tts
        .synthesize(text.into(), Some("nova".into()), CancellationToken::new())
        .map(|c| c.unwrap())
        .collect()
        .await;
    let samples: usize = chunks.iter().map(Vec::len).sum();
    assert_eq!(samples, common::providers::speech_pcm_len(text, 24_000) / 2);
    assert!(chunks.len() > 1, "audio arrives in pieces as it is made");
    let body = fake.last(Route::Speech).unwrap().json.unwrap();
    assert_eq!(body["voice"], "nova");
    assert_eq!(body["response_format"], "pcm");
    assert_eq!(body["model"], "tts-test");
    // A voice the provider does not have falls back to its default.
    let _ = tts
        .synthesize("Hi.".into(), Some("joe".into()), CancellationToken::new())
        .collect::<Vec<_>>()
        .await;
    assert_eq!(
        fake.last(Route::Speech).unwrap().json.unwrap()["voice"],
        "alloy"
    );

    fake.push_fault(Route::Speech, Fault::SlowStream(Duration::from_millis(100)));
    let cancel = CancellationToken::new();
    let mut s = tts.synthesize("A long sentence to speak.".into(), None, cancel.clone());
    s.next().await.unwrap().unwrap();
    cancel.cancel();
    assert_eq!(s.next().await, Some(Err(EngineError::Cancelled)));
    // The connection is closed then, while the stream itself is still held.
    assert!(
        fake.wait_aborted(Route::Speech, Duration::from_secs(3))
            .await
    );
    drop(s);
}

#[tokio::test]
async fn a_chain_falls_back_and_benches_the_failing_provider() {
    let fake = FakeProvider::start().await;
    fake.require_key(KEY);
    let members: Vec<Arc<dyn LanguageModel>> = vec![
        Arc::new(OpenAiLlm::new("openai", &spec(&fake, "openai")).unwrap()),
        Arc::new(voxwire::engines::llm::fake::FakeLlm::default()),
    ];
    let chain = FallbackLlm::new(members, Duration::from_secs(30));
    assert_eq!(chain.name(), "openai (gpt-test) > fake (test engine)");
    // Usage names the provider the chain tries first.
    assert_eq!(chain.usage_label(), "openai");
    for _ in 0..3 {
        fake.push_fault(Route::ChatCompletions, Fault::Status(500));
    }
    let (text, err) = collect(&chain, CancellationToken::new()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(text, "You said: hi. That is turn 1.");
    assert_eq!(fake.count(Route::ChatCompletions), 3);
    // Benched: the next reply comes from the fallback without waiting on the provider.
    let (text, _) = collect(&chain, CancellationToken::new()).await;
    assert_eq!(text, "You said: hi. That is turn 1.");
    assert_eq!(fake.count(Route::ChatCompletions), 3);
    assert_eq!(chain.usage_label(), "fake");

    // With no cooldown the provider is first again, and answers.
    let members: Vec<Arc<dyn LanguageModel>> = vec![
        Arc::new(OpenAiLlm::new("openai", &spec(&fake, "openai")).unwrap()),
        Arc::new(voxwire::engines::llm::fake::FakeLlm::default()),
    ];
    let chain = FallbackLlm::new(members, Duration::ZERO);
    fake.push_fault(Route::ChatCompletions, Fault::Status(401));
    let (text, _) = collect(&chain, CancellationToken::new()).await;
    assert_eq!(text, "You said: hi. That is turn 1.");
    let (text, _) = collect(&chain, CancellationToken::new()).await;
    assert_eq!(text, DEFAULT_REPLY);
}

#[tokio::test]
async fn when_every_member_fails_the_error_names_each() {
    let fake = FakeProvider::start().await;
    fake.require_key(KEY);
    let members: Vec<Arc<dyn LanguageModel>> = vec![
        Arc::new(OpenAiLlm::new("openai", &spec(&fake, "openai")).unwrap()),
        Arc::new(OpenAiLlm::new("backup", &spec(&fake, "openai")).unwrap()),
    ];
    let chain = FallbackLlm::new(members, Duration::from_secs(30));
    for _ in 0..6 {
        fake.push_fault(Route::ChatCompletions, Fault::Status(503));
    }
    let (_, err) = collect(&chain, CancellationToken::new()).await;
    let err = err.unwrap().to_string();
    assert!(err.contains("openai (gpt-test): 503"), "{err}");
    assert!(err.contains("backup (gpt-test): 503"), "{err}");
    assert!(!err.contains(KEY));
}
