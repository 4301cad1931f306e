//! Barge-in that ignores the agent's own voice. The client plays the reply (real Piper speech)
//! and its "microphone" picks it up again, delayed and quieter, as a speakerphone would; the
//! Silero detector listens. The echo alone never interrupts the reply, while a caller speaking
//! over it does; and the same echo does interrupt a call without echo cancellation, so the
//! echo in these tests is loud enough to matter.

mod common;
#[path = "stt_common/mod.rs"]
mod stt;

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use voxwire::engines::Engines;
use voxwire::protocol::DetectionMode;
use voxwire::Config;

const CHUNK: usize = 1600;

/// Piper speaks, Silero listens; the recogniser and the model are the deterministic fakes.
fn engines() -> Engines {
    static ENGINES: OnceLock<Engines> = OnceLock::new();
    ENGINES
        .get_or_init(|| {
            let mut config = Config::for_tests();
            config.stt = vec!["fake".into()];
            config.llm = vec!["fake".into()];
            config.tts = vec!["local".into()];
            config.vad = voxwire::config::VadChoice::Silero;
            config.offline = true;
            Engines::from_config(&config)
                .unwrap_or_else(|e| panic!("engines do not load (run `voxwire models fetch`): {e}"))
        })
        .clone()
}

struct Echo {
    delay_ms: usize,
    gain_db: f32,
}

struct Outcome {
    frames: Vec<Value>,
    /// Microphone position (ms) at which the reply started playing.
    play_start_ms: usize,
    reply_ms: usize,
}

fn pcm16_to_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
        .collect()
}

/// One reply, played and picked up again by the caller's microphone (`echo`), with `caller`
/// speaking `(at ms after the reply starts playing, audio)` if given. The microphone streams
/// 100 ms chunks in real time until a second after the reply has played out or was cut.
async fn converse(cancel_echo: bool, echo: Echo, caller: Option<(usize, Vec<f32>)>) -> Outcome {
    let mut config = Config::for_tests();
    config.turn.detection.mode = DetectionMode::Silero;
    config.turn.echo_cancellation = cancel_echo;
    let server = start_with(config, engines()).await;
    let (mut ws, _) = server
        .call(
            "alice",
            json!({"output_format": {"encoding": "pcm16", "sample_rate": 16000}}),
        )
        .await;
    send(
        &mut ws,
        json!({"type": "text", "text":
            "tell me what the weather will be like in the mountains this weekend and whether \
             the roads up to the pass will be open"}),
    )
    .await;
    let gain = 10f32.powf(echo.gain_db / 20.0);
    let delay = echo.delay_ms * 16;
    let mut played: Vec<f32> = Vec::new();
    let mut play_start: Option<usize> = None;
    let mut frames = Vec::new();
    let mut mic_pos = 0usize;
    let mut finished = false;
    let mut cut_at: Option<usize> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // The next 100 ms of what the microphone hears: the echo of what played, and
                // the caller's voice.
                let chunk: Vec<f32> = (mic_pos..mic_pos + CHUNK)
                    .map(|n| {
                        let mut s = 0.0;
                        if let Some(p0) = play_start {
                            if let Some(i) = n.checked_sub(p0 + delay) {
                                s += played.get(i).copied().unwrap_or(0.0) * gain;
                            }
                            if let Some((at_ms, voice)) = &caller {
                                if let Some(i) = n.checked_sub(p0 + at_ms * 16) {
                                    s += voice.get(i).copied().unwrap_or(0.0);
                                }
                            }
                        }
                        s
                    })
                    .collect();
                mic_pos += CHUNK;
                send(&mut ws, json!({"type": "audio", "audio": b64(&voxwire::audio::encode::pcm16_bytes(&chunk))})).await;
                // Done a second after the reply was cut, or after all of it played and echoed.
                let played_out = play_start.map(|p0| p0 + delay + played.len());
                let end = match (cut_at, finished, played_out) {
                    (Some(c), _, _) => Some(c),
                    (None, true, Some(p)) => Some(p),
                    _ => None,
                };
                if end.is_some_and(|e| mic_pos > e + 16_000) {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "no end of reply: {frames:?}");
            }
            msg = ws.next() => {
                let Some(Ok(Message::Text(t))) = msg else { continue };
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "audio_response" {
                    play_start.get_or_insert(mic_pos);
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(v["audio"].as_str().unwrap())
                        .unwrap();
                    played.extend(pcm16_to_f32(&bytes));
                }
                if v["type"] == "response_done" && v["turn_id"] == 1 {
                    finished = true;
                }
                if v["type"] == "interrupted" {
                    cut_at.get_or_insert(mic_pos);
                }
                frames.push(v);
            }
        }
    }
    Outcome {
        frames,
        play_start_ms: play_start.expect("the reply played") / 16,
        reply_ms: played.len() / 16,
    }
}

fn of_type<'a>(frames: &'a [Value], t: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == t).collect()
}

fn assert_not_interrupted(o: &Outcome) {
    let kinds: Vec<&str> = o.frames.iter().filter_map(|f| f["type"].as_str()).collect();
    assert!(of_type(&o.frames, "interrupted").is_empty(), "{kinds:?}");
    assert!(of_type(&o.frames, "speech_started").is_empty(), "{kinds:?}");
    let done = of_type(&o.frames, "response_done");
    assert_eq!(done.len(), 1, "{kinds:?}");
    assert_eq!(done[0]["reason"], "completed");
    assert!(o.reply_ms > 3000, "the reply is {} ms", o.reply_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn its_own_voice_150_ms_later_6_db_down_does_not_interrupt_the_agent() {
    let o = converse(
        true,
        Echo {
            delay_ms: 150,
            gain_db: -6.0,
        },
        None,
    )
    .await;
    assert_not_interrupted(&o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn its_own_voice_250_ms_later_12_db_down_does_not_interrupt_the_agent() {
    let o = converse(
        true,
        Echo {
            delay_ms: 250,
            gain_db: -12.0,
        },
        None,
    )
    .await;
    assert_not_interrupted(&o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_echo_cancellation_the_same_echo_cuts_the_reply() {
    let o = converse(
        false,
        Echo {
            delay_ms: 200,
            gain_db: -9.0,
        },
        None,
    )
    .await;
    assert!(
        !of_type(&o.frames, "interrupted").is_empty(),
        "the echo alone should be heard as speech without cancellation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_speaking_over_the_echo_interrupts() {
    let voice = stt::espeak("Wait, wait, I have another question for you.");
    let at_ms = 1500;
    let o = converse(
        true,
        Echo {
            delay_ms: 200,
            gain_db: -9.0,
        },
        Some((at_ms, voice)),
    )
    .await;
    let kinds: Vec<&str> = o.frames.iter().filter_map(|f| f["type"].as_str()).collect();
    let interrupted = of_type(&o.frames, "interrupted");
    assert_eq!(interrupted.len(), 1, "{kinds:?}");
    // Speech was found where the caller started (espeak opens with a little silence), not
    // earlier in the echo.
    let started = of_type(&o.frames, "speech_started");
    let start = started[0]["audio_start_ms"].as_u64().unwrap() as usize;
    let caller_start = o.play_start_ms + at_ms;
    assert!(
        (caller_start.saturating_sub(100)..=caller_start + 400).contains(&start),
        "speech found at {start} ms, the caller started at {caller_start} ms"
    );
    // The reply was cut while it was still playing.
    let played = interrupted[0]["played_ms"].as_u64().unwrap() as usize;
    assert!(played < o.reply_ms, "played {played} of {} ms", o.reply_ms);
}
