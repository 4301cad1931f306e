//! ElevenLabs text-to-speech against the local fake provider: audio length and rate, the
//! request it makes, retries, timeouts, broken streams and cancellation.

mod common;

use std::time::Duration;

use common::hosted::{spec, KEY};
use common::providers::{FakeProvider, Fault, Route};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use voxwire::engines::http::ApiKey;
use voxwire::engines::providers::ProviderSpec;
use voxwire::engines::tts::elevenlabs::ElevenLabsTts;
use voxwire::engines::tts::TextToSpeech;
use voxwire::engines::EngineError;

const ROUTE: Route = Route::ElevenLabs;
const TEXT: &str = "Hello there, how are you?";

async fn fake() -> FakeProvider {
    let fake = FakeProvider::start().await;
    fake.require_key(KEY);
    fake
}

/// The engine for the shared `elevenlabs` entry (short timeouts) with `key`, after `change`.
fn engine_with_key(
    fake: &FakeProvider,
    key: &str,
    change: impl FnOnce(&mut ProviderSpec),
) -> Result<ElevenLabsTts, String> {
    let mut spec = spec(fake, "elevenlabs");
    spec.api_key = Some(ApiKey::new(key));
    change(&mut spec);
    ElevenLabsTts::new("elevenlabs", &spec).map_err(|e| e.to_string())
}

fn engine(fake: &FakeProvider, change: impl FnOnce(&mut ProviderSpec)) -> ElevenLabsTts {
    engine_with_key(fake, KEY, change).unwrap()
}

/// Every chunk of one sentence, or the error that ended it (with the samples before it).
async fn speak(
    tts: &ElevenLabsTts,
    text: &str,
    voice: Option<&str>,
) -> (usize, Option<EngineError>) {
    let mut stream = tts.synthesize(
        text.to_string(),
        voice.map(str::to_string),
        CancellationToken::new(),
    );
    let mut samples = 0;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => samples += c.len(),
            Err(e) => return (samples, Some(e)),
        }
    }
    (samples, None)
}

fn message(e: Option<EngineError>) -> (String, bool) {
    match e {
        Some(EngineError::Failed {
            message, retryable, ..
        }) => (message, retryable),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn speech_is_as_long_as_the_text_at_the_rate_asked() {
    let fake = fake().await;
    for rate in [16_000u32, 22_050, 44_100] {
        let tts = engine(&fake, |s| s.tts_sample_rate = Some(rate));
        assert_eq!(tts.sample_rate(), rate);
        assert_eq!(tts.name(), format!("elevenlabs (eleven-test, {rate} Hz)"));
        let (samples, error) = speak(&tts, TEXT, Some("rachel")).await;
        assert_eq!(error, None);
        let expected = TEXT.chars().count() as f64 * 0.060 * rate as f64;
        let ratio = samples as f64 / expected;
        assert!((0.9..=1.1).contains(&ratio), "{rate} Hz: {samples} samples");

        let request = fake.last(ROUTE).unwrap();
        assert_eq!(
            request.path_and_query,
            format!("/v1/text-to-speech/rachel-id/stream?output_format=pcm_{rate}")
        );
        let body = request.json.unwrap();
        assert_eq!(body["text"], TEXT);
        assert_eq!(body["model_id"], "eleven-test");
        assert_eq!(request.headers["xi-api-key"], KEY);
    }
}

#[tokio::test]
async fn voices_map_to_ids_and_unknown_ones_use_the_default() {
    let fake = fake().await;
    let tts = engine(&fake, |s| s.tts_sample_rate = None);
    assert_eq!(tts.sample_rate(), 24_000, "the default rate");
    assert!(tts.has_voice("rachel"));
    assert!(!tts.has_voice("joe"));
    for voice in [None, Some("joe")] {
        let (samples, error) = speak(&tts, "Hi.", voice).await;
        assert_eq!(error, None);
        assert!(samples > 0);
        let path = fake.last(ROUTE).unwrap().path_and_query;
        assert!(
            path.starts_with("/v1/text-to-speech/default-voice/stream"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn empty_text_is_no_audio_and_no_request() {
    let fake = fake().await;
    let tts = engine(&fake, |_| {});
    assert_eq!(speak(&tts, "  ", None).await, (0, None));
    assert_eq!(fake.count(ROUTE), 0);
}

#[test]
fn rates_the_api_does_not_offer_are_refused() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(fake());
    let e = engine_with_key(&fake, KEY, |s| s.tts_sample_rate = Some(48000))
        .err()
        .unwrap();
    assert!(e.contains("48000"), "{e}");
}

#[tokio::test]
async fn a_rejected_key_fails_without_showing_it_or_retrying() {
    let fake = fake().await;
    let wrong = "el-wrong-key-9876543210";
    let tts = engine_with_key(&fake, wrong, |_| {}).unwrap();
    let (message, retryable) = message(speak(&tts, TEXT, None).await.1);
    assert!(message.contains("401"), "{message}");
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
    let tts = engine(&fake, |_| {});
    let (samples, error) = speak(&tts, TEXT, None).await;
    assert_eq!(error, None);
    assert!(samples > 0);
    assert_eq!(fake.count(ROUTE), 2);
}

#[tokio::test]
async fn server_errors_are_retried_up_to_the_limit() {
    let fake = fake().await;
    fake.push_fault(ROUTE, Fault::Status(500));
    fake.push_fault(ROUTE, Fault::Status(500));
    let tts = engine(&fake, |s| s.retries = 2);
    let (samples, error) = speak(&tts, TEXT, None).await;
    assert_eq!(error, None);
    assert!(samples > 0);
    assert_eq!(fake.count(ROUTE), 3);
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
    let tts = engine(&fake, |s| s.max_retry_wait_ms = 1000);
    let (message, retryable) = message(speak(&tts, TEXT, None).await.1);
    assert!(
        message.contains("429") && message.contains("30000 ms"),
        "{message}"
    );
    assert!(retryable);
    assert_eq!(fake.count(ROUTE), 1);
}

#[tokio::test]
async fn a_silent_provider_fails_after_the_timeout() {
    let fake = fake().await;
    fake.push_fault(ROUTE, Fault::Hang);
    let tts = engine(&fake, |s| {
        s.timeout_ms = 300;
        s.retries = 0;
    });
    let (message, retryable) = message(speak(&tts, TEXT, None).await.1);
    assert!(message.contains("300 ms"), "{message}");
    assert!(retryable);
}

#[tokio::test]
async fn a_stalled_stream_fails_after_the_stream_timeout() {
    let fake = fake().await;
    fake.push_fault(ROUTE, Fault::SlowStream(Duration::from_millis(800)));
    let tts = engine(&fake, |s| s.stream_timeout_ms = 300);
    let (samples, error) = speak(&tts, TEXT, None).await;
    let (message, retryable) = message(error);
    assert!(message.contains("stalled"), "{message}");
    assert!(retryable);
    assert!(samples > 0, "the first chunk came before the stall");
}

#[tokio::test]
async fn a_truncated_stream_is_an_error_not_short_audio() {
    let fake = fake().await;
    fake.push_fault(ROUTE, Fault::Truncate { after: 2 });
    let tts = engine(&fake, |_| {});
    let (samples, error) = speak(&tts, TEXT, None).await;
    let (message, _) = message(error);
    assert!(message.contains("broke off"), "{message}");
    assert_eq!(samples, 2 * 4800 / 2, "the two chunks sent before the cut");
}

#[tokio::test]
async fn a_malformed_error_body_is_still_an_error() {
    let fake = fake().await;
    fake.push_fault(ROUTE, Fault::MalformedJson);
    let tts = engine(&fake, |s| s.retries = 0);
    let (message, retryable) = message(speak(&tts, TEXT, None).await.1);
    assert!(message.contains("500"), "{message}");
    assert!(retryable);
}

#[tokio::test]
async fn cancelling_or_dropping_mid_stream_closes_the_request() {
    for drop_it in [false, true] {
        let fake = fake().await;
        fake.push_fault(ROUTE, Fault::SlowStream(Duration::from_millis(200)));
        let tts = engine(&fake, |_| {});
        let cancel = CancellationToken::new();
        let mut stream = tts.synthesize(TEXT.to_string(), None, cancel.clone());
        assert!(stream.next().await.unwrap().is_ok());
        if drop_it {
            drop(stream);
        } else {
            cancel.cancel();
            assert_eq!(stream.next().await, Some(Err(EngineError::Cancelled)));
        }
        assert!(
            fake.wait_aborted(ROUTE, Duration::from_secs(2)).await,
            "dropped: {drop_it}"
        );
    }
}
