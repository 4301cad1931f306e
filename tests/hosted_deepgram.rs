//! Deepgram speech-to-text against the local fake provider: transcripts, live interims, the
//! request it makes, retries, timeouts, broken streams and cancellation.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::hosted::{spec, KEY};
use common::providers::{FakeProvider, Fault, Route};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use voxwire::engines::http::ApiKey;
use voxwire::engines::providers::ProviderSpec;
use voxwire::engines::stt::deepgram::DeepgramStt;
use voxwire::engines::stt::SpeechToText;
use voxwire::engines::EngineError;

const TRANSCRIPT: &str = "the quick brown fox jumps";
const ROUTE: Route = Route::DeepgramListen;

/// A fake that wants `KEY` and says `TRANSCRIPT`.
async fn fake() -> FakeProvider {
    let fake = FakeProvider::start().await;
    fake.require_key(KEY);
    fake.set_transcript(TRANSCRIPT);
    fake
}

/// The engine for the shared `deepgram` entry (short timeouts) with `key`, after `change`.
fn engine_with_key(
    fake: &FakeProvider,
    key: &str,
    change: impl FnOnce(&mut ProviderSpec),
) -> DeepgramStt {
    let mut spec = spec(fake, "deepgram");
    spec.api_key = Some(ApiKey::new(key));
    change(&mut spec);
    DeepgramStt::new("deepgram", &spec).unwrap()
}

fn engine(fake: &FakeProvider, change: impl FnOnce(&mut ProviderSpec)) -> DeepgramStt {
    engine_with_key(fake, KEY, change)
}

/// `secs` of a 200 Hz tone at 16 kHz.
fn tone(secs: f32) -> Vec<f32> {
    let n = (secs * 16_000.0) as usize;
    (0..n)
        .map(|i| (i as f32 * 200.0 * std::f32::consts::TAU / 16_000.0).sin() * 0.3)
        .collect()
}

async fn transcribe(engine: &DeepgramStt, secs: f32) -> Result<String, EngineError> {
    let audio: Arc<[f32]> = tone(secs).into();
    let t = engine.transcribe(audio, CancellationToken::new()).await?;
    Ok(t.text)
}

fn failure(result: Result<String, EngineError>) -> (String, bool) {
    match result {
        Err(EngineError::Failed {
            message, retryable, ..
        }) => (message, retryable),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_whole_utterance_is_transcribed_with_the_model_and_key_asked_for() {
    let fake = fake().await;
    let stt = engine(&fake, |_| {});
    assert_eq!(stt.name(), "deepgram (nova-test)");
    assert_eq!(transcribe(&stt, 1.2).await.unwrap(), TRANSCRIPT);

    let request = fake.last(ROUTE).unwrap();
    let query = &request.path_and_query;
    for part in [
        "/v1/listen?",
        "model=nova-test",
        "language=en",
        "encoding=linear16",
        "sample_rate=16000",
        "channels=1",
        "interim_results=true",
    ] {
        assert!(query.contains(part), "{part} missing from {query}");
    }
    assert_eq!(request.headers["authorization"], format!("Token {KEY}"));
    assert_eq!(
        request.audio_bytes,
        19_200 * 2,
        "all the audio, as 16-bit samples"
    );
    let kinds: Vec<&str> = request.text_messages.iter().map(String::as_str).collect();
    assert_eq!(
        kinds,
        [r#"{"type":"Finalize"}"#, r#"{"type":"CloseStream"}"#]
    );
}

#[tokio::test]
async fn empty_audio_is_empty_text_without_a_connection() {
    let fake = fake().await;
    let stt = engine(&fake, |_| {});
    assert_eq!(transcribe(&stt, 0.0).await.unwrap(), "");
    assert_eq!(fake.count(ROUTE), 0);
}

#[tokio::test]
async fn live_interims_arrive_before_the_final_text() {
    let fake = fake().await;
    let stt = engine(&fake, |_| {});
    let (tx, mut interims) = mpsc::channel(16);
    let mut live = stt.listen(tx, CancellationToken::new()).unwrap();
    let audio = tone(1.5);
    let mut first_interim = None;
    for chunk in audio.chunks(3_200) {
        live.push(chunk);
        tokio::time::sleep(Duration::from_millis(20)).await;
        if first_interim.is_none() {
            first_interim = interims.try_recv().ok();
        }
    }
    let first_interim = match first_interim {
        Some(i) => i,
        None => tokio::time::timeout(Duration::from_secs(2), interims.recv())
            .await
            .expect("an interim while speaking")
            .unwrap(),
    };
    assert!(!first_interim.is_empty());
    assert!(
        TRANSCRIPT.starts_with(&first_interim),
        "an interim is the utterance so far: {first_interim:?}"
    );
    let text = live.finish().await.unwrap().text;
    assert_eq!(text, TRANSCRIPT);
}

#[tokio::test]
async fn a_rejected_key_fails_without_showing_it_or_retrying() {
    let fake = fake().await;
    let wrong = "dg-wrong-key-9876543210";
    let stt = engine_with_key(&fake, wrong, |_| {});
    let (message, retryable) = failure(transcribe(&stt, 0.5).await);
    assert!(message.contains("401"), "{message}");
    assert!(message.contains("rejected the API key"), "{message}");
    assert!(
        !message.contains(wrong) && !message.contains(KEY),
        "{message}"
    );
    assert!(!retryable);
    assert_eq!(fake.count(ROUTE), 1);
}

#[tokio::test]
async fn a_rate_limit_is_waited_out_and_retried() {
    let fake = fake().await;
    fake.push_fault(
        ROUTE,
        Fault::RateLimited {
            retry_after_secs: 1,
        },
    );
    let stt = engine(&fake, |_| {});
    assert_eq!(transcribe(&stt, 1.2).await.unwrap(), TRANSCRIPT);
    assert_eq!(fake.count(ROUTE), 2);
}

#[tokio::test]
async fn server_errors_are_retried_up_to_the_limit() {
    let fake = fake().await;
    fake.push_fault(ROUTE, Fault::Status(500));
    fake.push_fault(ROUTE, Fault::Status(500));
    let stt = engine(&fake, |s| s.retries = 2);
    assert_eq!(transcribe(&stt, 1.2).await.unwrap(), TRANSCRIPT);
    assert_eq!(fake.count(ROUTE), 3);

    let fake = self::fake().await;
    fake.push_fault(ROUTE, Fault::Status(503));
    fake.push_fault(ROUTE, Fault::Status(503));
    let stt = engine(&fake, |s| s.retries = 1);
    let (message, retryable) = failure(transcribe(&stt, 1.2).await);
    assert!(message.contains("503"), "{message}");
    assert!(
        message.contains("Injected fault"),
        "the provider's message: {message}"
    );
    assert!(retryable);
    assert_eq!(fake.count(ROUTE), 2);
}

#[tokio::test]
async fn a_retry_after_longer_than_allowed_fails_at_once() {
    let fake = fake().await;
    fake.push_fault(
        ROUTE,
        Fault::RateLimited {
            retry_after_secs: 30,
        },
    );
    let stt = engine(&fake, |s| s.max_retry_wait_ms = 1000);
    let (message, retryable) = failure(transcribe(&stt, 0.5).await);
    assert!(message.contains("429"), "{message}");
    assert!(message.contains("30000 ms"), "{message}");
    assert!(retryable, "a fallback may answer instead");
    assert_eq!(fake.count(ROUTE), 1);
}

#[tokio::test]
async fn a_silent_provider_fails_after_the_timeout() {
    let fake = fake().await;
    fake.push_fault(ROUTE, Fault::Hang);
    let stt = engine(&fake, |s| {
        s.timeout_ms = 300;
        s.stream_timeout_ms = 5000;
    });
    let (message, retryable) = failure(transcribe(&stt, 0.3).await);
    assert!(message.contains("no reply within 300 ms"), "{message}");
    assert!(retryable);
}

#[tokio::test]
async fn a_stalled_stream_fails_after_the_stream_timeout() {
    let fake = fake().await;
    fake.push_fault(ROUTE, Fault::SlowStream(Duration::from_millis(800)));
    let stt = engine(&fake, |s| {
        s.timeout_ms = 3000;
        s.stream_timeout_ms = 300;
    });
    let (message, retryable) = failure(transcribe(&stt, 1.2).await);
    assert!(message.contains("stalled: nothing for 300 ms"), "{message}");
    assert!(retryable);
}

#[tokio::test]
async fn a_truncated_stream_is_an_error_not_a_short_transcript() {
    for after in [0, 1, 2] {
        let fake = fake().await;
        fake.push_fault(ROUTE, Fault::Truncate { after });
        let stt = engine(&fake, |_| {});
        let (message, retryable) = failure(transcribe(&stt, 1.2).await);
        assert!(
            message.contains("broke off") || message.contains("closed the stream"),
            "after {after}: {message}"
        );
        assert!(retryable);
    }
}

#[tokio::test]
async fn a_reply_that_is_not_json_is_an_error() {
    let fake = fake().await;
    fake.push_fault(ROUTE, Fault::MalformedJson);
    let stt = engine(&fake, |_| {});
    let (message, _) = failure(transcribe(&stt, 1.2).await);
    assert!(message.contains("not JSON"), "{message}");
}

/// Starts a live transcription and waits until the fake has some of its audio.
async fn live_and_heard(
    fake: &FakeProvider,
    stt: &DeepgramStt,
    cancel: CancellationToken,
) -> Box<dyn voxwire::engines::stt::LiveTranscription> {
    let (tx, _interims) = mpsc::channel(16);
    let mut live = stt.listen(tx, cancel).unwrap();
    live.push(&tone(0.3));
    let heard = fake
        .wait_for(Duration::from_secs(2), |f| {
            f.last(ROUTE).is_some_and(|r| r.audio_bytes > 0)
        })
        .await;
    assert!(heard, "the fake got audio");
    live
}

#[tokio::test]
async fn cancelling_closes_the_socket() {
    let fake = fake().await;
    let stt = engine(&fake, |_| {});
    let cancel = CancellationToken::new();
    let live = live_and_heard(&fake, &stt, cancel.clone()).await;
    cancel.cancel();
    assert!(fake.wait_aborted(ROUTE, Duration::from_secs(2)).await);
    assert_eq!(live.finish().await, Err(EngineError::Cancelled));
}

#[tokio::test]
async fn dropping_a_live_transcription_closes_the_socket() {
    let fake = fake().await;
    let stt = engine(&fake, |_| {});
    let live = live_and_heard(&fake, &stt, CancellationToken::new()).await;
    drop(live);
    assert!(fake.wait_aborted(ROUTE, Duration::from_secs(2)).await);
}

#[tokio::test]
async fn dropping_a_transcription_midway_closes_the_socket() {
    let fake = fake().await;
    fake.push_fault(ROUTE, Fault::Hang);
    let stt = engine(&fake, |s| s.timeout_ms = 5000);
    let audio: Arc<[f32]> = tone(0.5).into();
    let pending = stt.transcribe(audio, CancellationToken::new());
    let heard = tokio::time::timeout(Duration::from_millis(300), pending).await;
    assert!(heard.is_err(), "the fake never answers");
    assert!(fake.wait_aborted(ROUTE, Duration::from_secs(2)).await);
}
