//! The call core on tokio's clock, paused: the test moves time, nothing waits in wall-clock
//! time, and every figure below is exact. Calls are started in-process through `call::start`
//! and driven through their handle, with the fake engines and the energy detector.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use voxwire::call::{self, CallEvent, CallInput, CallServices, Owner, StartRequest, Started};
use voxwire::engines::Engines;
use voxwire::protocol::EndReason;
use voxwire::store::Store;
use voxwire::{AppState, Config};

const RATE: usize = 16_000;
const CHUNK_MS: u64 = 100;

fn services(config: Config) -> Arc<CallServices> {
    AppState::with_store(config, Engines::fake(), Store::memory())
        .call_services
        .clone()
}

async fn start_call(svc: &Arc<CallServices>) -> Started {
    call::start(
        svc,
        StartRequest {
            owner: Owner {
                sub: "alice".into(),
                org: None,
            },
            agent: None,
            token_agent: None,
            resume: None,
            variables: HashMap::new(),
            detection: None,
            greet: false,
            push_to_talk: false,
            record: None,
            session: None,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("the call did not start: {}", e.message))
}

/// Events that arrive before `until` (on the paused clock), in order.
async fn events_until(events: &mut mpsc::Receiver<CallEvent>, until: Instant) -> Vec<CallEvent> {
    let mut got = Vec::new();
    loop {
        tokio::select! {
            e = events.recv() => match e {
                Some(e) => got.push(e),
                None => return got,
            },
            _ = tokio::time::sleep_until(until) => return got,
        }
    }
}

fn chunk(loud: bool) -> Vec<f32> {
    let n = RATE * CHUNK_MS as usize / 1000;
    (0..n)
        .map(|i| {
            if loud {
                (i as f32 * 440.0 * std::f32::consts::TAU / RATE as f32).sin() * 0.3
            } else {
                0.0
            }
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_call_ends_at_its_longest_duration_by_tokio_time() {
    let mut config = Config::for_tests();
    config.limits.max_call_secs = 10;
    let svc = services(config);
    let mut started = start_call(&svc).await;
    let t0 = Instant::now();
    let events = events_until(&mut started.events, t0 + Duration::from_secs(3600)).await;
    let ended_at = Instant::now();
    match events.last() {
        Some(CallEvent::Ended { reason, .. }) => assert_eq!(*reason, EndReason::MaxDuration),
        other => panic!("expected the call to end, got {other:?}"),
    }
    // Exactly the limit, on the paused clock (no time passes while the runtime is busy).
    assert_eq!(ended_at - t0, Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn a_turn_ends_after_the_configured_silence_and_its_timing_says_so() {
    let config = Config::for_tests();
    let silence_ms = config.turn.detection.silence_duration_ms;
    let svc = services(config);
    let mut started = start_call(&svc).await;
    let handle = started.handle.clone();
    let mut tick = Instant::now();
    let mut seen = Vec::new();
    // One second of speech, then silence in real-time chunks until the turn is over.
    let chunks = (0..10)
        .map(|_| chunk(true))
        .chain((0..30).map(|_| chunk(false)));
    let mut stopped_after = None;
    for (i, samples) in chunks.enumerate() {
        handle.send(CallInput::Audio(samples)).await.unwrap();
        tick += Duration::from_millis(CHUNK_MS);
        let got = events_until(&mut started.events, tick).await;
        if stopped_after.is_none()
            && got
                .iter()
                .any(|e| matches!(e, CallEvent::SpeechStopped { .. }))
        {
            stopped_after = Some(i + 1);
        }
        seen.extend(got);
    }
    seen.extend(events_until(&mut started.events, tick + Duration::from_secs(5)).await);
    let end_ms = seen
        .iter()
        .find_map(|e| match e {
            CallEvent::SpeechStopped { audio_end_ms, .. } => Some(*audio_end_ms),
            _ => None,
        })
        .expect("speech stopped");
    assert!(
        (1000..=1000 + CHUNK_MS).contains(&end_ms),
        "speech ended at {end_ms} ms"
    );
    // The turn ended once the silence setting's worth of silence had come in, no sooner.
    let chunks_heard = stopped_after.unwrap() as u64;
    let silence_heard = chunks_heard * CHUNK_MS - 1000;
    assert!(
        silence_heard >= silence_ms && silence_heard < silence_ms + 2 * CHUNK_MS,
        "stopped after {silence_heard} ms of silence (setting {silence_ms} ms)"
    );
    let timings = seen
        .iter()
        .find_map(|e| match e {
            CallEvent::Metrics { timings, .. } => Some(timings.clone()),
            _ => None,
        })
        .expect("the turn's metrics");
    // End of speech measured on the same clock: the silence the detector waited for, give or
    // take the chunk in which speech ended.
    let eos = timings.end_of_speech_ms.expect("end_of_speech_ms") as u64;
    assert!(
        eos >= silence_ms.saturating_sub(CHUNK_MS) && eos <= silence_ms + CHUNK_MS,
        "end of speech {eos} ms, silence setting {silence_ms} ms"
    );
    let said = seen.iter().find_map(|e| match e {
        CallEvent::Transcript {
            text,
            is_final: true,
            ..
        } => Some(text.as_str()),
        _ => None,
    });
    // The fake recogniser names the length of what it was given. The reply was prepared
    // speculatively from the pause (100 ms of silence, heard at the end of the first silent
    // chunk) and adopted when the turn ended, so its transcript covers the speech and those
    // 100 ms.
    assert_eq!(said, Some("audio of 1.1 seconds"), "{timings:?}");
}

#[tokio::test(start_paused = true)]
async fn without_playback_reports_the_caller_hears_the_reply_in_tokio_time() {
    let svc = services(Config::for_tests());
    let mut started = start_call(&svc).await;
    let handle = started.handle.clone();
    // Forty distinct words without digits ("waa", "wab", ...): the voice is given text read
    // for speech, where "w1" would be two words, "w one".
    let words: Vec<String> = (0..40u8)
        .map(|i| format!("w{}{}", (b'a' + i / 26) as char, (b'a' + i % 26) as char))
        .collect();
    handle.send(CallInput::Text(words.join(" "))).await.unwrap();
    // The fake voice speaks 60 ms per word; one second later the caller cuts in.
    let t0 = Instant::now();
    let mut seen = events_until(&mut started.events, t0 + Duration::from_secs(1)).await;
    handle.send(CallInput::Interrupt).await.unwrap();
    seen.extend(events_until(&mut started.events, t0 + Duration::from_secs(3)).await);
    let reply = seen
        .iter()
        .filter_map(|e| match e {
            CallEvent::ResponseDelta { delta, .. } => Some(delta.as_str()),
            _ => None,
        })
        .collect::<String>();
    let (played_ms, heard) = seen
        .iter()
        .find_map(|e| match e {
            CallEvent::Interrupted {
                played_ms, heard, ..
            } => Some((*played_ms, heard.clone())),
            _ => None,
        })
        .expect("the reply was interrupted");
    assert_eq!(played_ms, 1000);
    // 1000 ms of 60 ms words: the first 16 words (15 when the sentence split rounds down).
    let n = heard.split_whitespace().count();
    assert!((15..=16).contains(&n), "heard {n} words: {heard:?}");
    assert!(
        reply.trim_start().starts_with(&heard),
        "{heard:?} / {reply:?}"
    );
}
