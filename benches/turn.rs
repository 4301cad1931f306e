//! End-of-turn benchmark (Smart Turn v3.2 with Silero, as in semantic turn detection): the
//! model's load time and cost per call (features and inference apart), then, on espeak-ng
//! speech streamed through the call's listener in 20 ms chunks, the delay from the end of
//! speech to the end of the turn on complete sentences (the stream time until the decision plus
//! the model's own run time, measured here) and the share of 700 ms mid-sentence pauses wrongly
//! taken for the end of a turn. The same audio under `silero` mode (silence alone, the default
//! 500 ms) is printed for comparison. Nothing asserts a timing.
//! Paths: env `VOXWIRE_ORT_LIB`, default the fetched models. Needs espeak-ng.
//! Run: `cargo bench --bench turn`.

#[path = "../tests/turn_common/mod.rs"]
mod turn;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use voxwire::audio::vad::silero::SileroVad;
use voxwire::audio::vad::smart_turn::{SmartTurn, SmartTurnError};
use voxwire::call::listen::{Heard, Listener};
use voxwire::models::{manifest, ModelStore};
use voxwire::protocol::{DetectionMode, TurnDetection};

const RUNS: usize = 20;
/// Streamed chunk: 20 ms.
const CHUNK: usize = turn::RATE / 50;
/// Above this the model finds a turn complete.
const COMPLETE: f32 = voxwire::engines::turn::COMPLETE;

const COMPLETE_SENTENCES: [&str; 16] = [
    "Can you tell me the opening hours on Saturday?",
    "I need to cancel my appointment for Friday.",
    "What time does the pharmacy close today?",
    "My internet has not been working since this morning.",
    "Please send the invoice to my email address.",
    "I would like to speak to a manager.",
    "How much does a ticket to Boston cost?",
    "Can I change my delivery address?",
    "Thank you, that is all I needed.",
    "I'd like to book a table for two people tomorrow at seven.",
    "Where is the nearest train station?",
    "I forgot my password again.",
    "Do you deliver on Sundays?",
    "My order arrived broken.",
    "Could you repeat that, please?",
    "Yes, that works for me.",
];

/// Sentences with a pause after an unfinished clause.
const PAUSED_SENTENCES: [(&str, &str); 20] = [
    (
        "I'd like to book a table for",
        "two people tomorrow at seven.",
    ),
    ("Can you tell me", "the opening hours on Saturday?"),
    ("I need to cancel my", "appointment for Friday."),
    ("Could you send me", "the invoice for last month?"),
    ("I would like to", "speak to a manager."),
    ("Is it possible to", "change my booking?"),
    ("Do you know if", "the pharmacy is open today?"),
    ("I'm calling because", "my internet is not working."),
    ("Please tell me how", "to reset my password."),
    ("What is the best way to", "get to the airport?"),
    ("Can I get a refund for", "the shoes I bought last week?"),
    ("How long does it take to", "deliver a parcel to Boston?"),
    ("My name is", "John Smith."),
    ("I was wondering if", "you could help me."),
    ("The problem is that", "my card was charged twice."),
    ("I want to change", "my delivery address."),
    ("Could you please check whether", "my payment went through?"),
    ("I ordered a pair of", "running shoes last week."),
    ("We would like to reserve", "a room for three nights."),
    ("Can you remind me when", "my next appointment is?"),
];

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The detection settings: the server's defaults, with `pause_ms` before the model is asked.
fn settings(mode: DetectionMode, pause_ms: u64) -> TurnDetection {
    TurnDetection {
        mode,
        threshold: 0.5,
        energy_threshold_db: -40.0,
        prefix_padding_ms: 300,
        silence_duration_ms: 500,
        min_speech_ms: 100,
        min_interrupt_ms: 400,
        semantic_pause_ms: pause_ms,
        semantic_max_silence_ms: 2000,
    }
}

/// Where speech really ends in `audio`: the end of the last 10 ms louder than -50 dBFS.
fn speech_end_ms(audio: &[f32]) -> f64 {
    let frame = turn::RATE / 100;
    let last = audio
        .chunks(frame)
        .rposition(|f| voxwire::audio::vad::level_db(f) > -50.0)
        .unwrap_or(0);
    (last + 1) as f64 * 10.0
}

/// A turn the listener ended: where (stream ms), whether the model ended it, and how long the
/// model took for the decisive answer.
struct Ended {
    at_stream_ms: f64,
    by_model: bool,
    model_ms: f64,
}

/// Streams `audio` through a listener in `mode`, asking the model at each check like the call
/// does (here on this thread); every turn that ended, in order.
fn listen(vad: &Arc<SileroVad>, model: &SmartTurn, s: TurnDetection, audio: &[f32]) -> Vec<Ended> {
    let mut listener = Listener::new(s, Some(Box::new(vad.stream())), 0, 60_000);
    let mut ended = Vec::new();
    let mut fed = 0usize;
    for chunk in audio.chunks(CHUNK) {
        fed += chunk.len();
        let now_ms = fed as f64 * 1000.0 / turn::RATE as f64;
        let (heard, err) = listener.push(chunk);
        assert!(err.is_none(), "{err:?}");
        for h in heard {
            match h {
                Heard::Check { audio, .. } => {
                    let t = Instant::now();
                    let p = model.predict(&audio).expect("inference");
                    let took = ms(t.elapsed());
                    if p > COMPLETE && listener.end_turn().is_some() {
                        ended.push(Ended {
                            at_stream_ms: now_ms,
                            by_model: true,
                            model_ms: took,
                        });
                    }
                }
                Heard::Stopped { .. } => ended.push(Ended {
                    at_stream_ms: now_ms,
                    by_model: false,
                    model_ms: 0.0,
                }),
                _ => {}
            }
        }
    }
    ended
}

fn main() -> Result<(), SmartTurnError> {
    let store = ModelStore::from_env();
    let lib = std::env::var_os("VOXWIRE_ORT_LIB").map_or_else(
        || store.file(manifest::ONNXRUNTIME, "libonnxruntime.so"),
        PathBuf::from,
    );
    let path = store.file(manifest::SMART_TURN, "smart-turn-v3.2-cpu.onnx");
    let t = Instant::now();
    let model = SmartTurn::load(&lib, &path, 1)?;
    println!(
        "Smart Turn load, 1 session (runtime included): {:.0} ms",
        ms(t.elapsed())
    );
    let silero = store.file(manifest::SILERO_VAD, "silero_vad.onnx");
    let vad = Arc::new(SileroVad::load(&lib, &silero, 1).expect("Silero VAD loads"));

    // Cost per call: any audio is an 8 s window, so one sentence will do.
    let mut audio = turn::silence(300);
    audio.extend(turn::say(COMPLETE_SENTENCES[0]));
    audio.extend(turn::silence(200));
    model.predict(&audio)?; // warm-up
    let (mut features, mut total) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let t = Instant::now();
        let f = model.features(&audio);
        features.push(ms(t.elapsed()));
        let t = Instant::now();
        model.predict_features(&f)?;
        total.push(ms(t.elapsed()) + features[features.len() - 1]);
    }
    println!(
        "per call (8 s window, one thread): {:.1} ms median ({:.1} ms of it features), \
         max {:.1} ms, {RUNS} runs",
        median(total.clone()),
        median(features),
        total.iter().copied().fold(0.0, f64::max)
    );

    // The server's default first, in detail; then shorter pauses before asking the model, and
    // silence alone.
    let runs = [
        (
            "semantic, 150 ms pause (default)",
            settings(DetectionMode::Semantic, 150),
        ),
        (
            "semantic, 200 ms pause",
            settings(DetectionMode::Semantic, 200),
        ),
        (
            "semantic, 100 ms pause",
            settings(DetectionMode::Semantic, 100),
        ),
        (
            "silero, 500 ms silence",
            settings(DetectionMode::Silero, 200),
        ),
    ];
    println!("\ncomplete sentences, end of speech to end of turn:");
    for (i, (name, s)) in runs.iter().enumerate() {
        let mut delays = Vec::new();
        let mut by_model = 0;
        for text in COMPLETE_SENTENCES {
            let speech = turn::say(text);
            let mut audio = turn::silence(500);
            audio.extend_from_slice(&speech);
            let end = 500.0 + speech_end_ms(&speech);
            audio.extend(turn::silence(3000));
            let ended = listen(&vad, &model, *s, &audio);
            let Some(first) = ended.first() else {
                println!("  {name}: no turn for {text:?}");
                continue;
            };
            let delay = first.at_stream_ms - end + first.model_ms;
            by_model += usize::from(first.by_model);
            if i == 0 {
                println!(
                    "  {delay:>6.0} ms  {}  {text:?}",
                    if first.by_model { "model  " } else { "silence" }
                );
            }
            delays.push(delay);
        }
        let by_model_delays: Vec<f64> = delays.iter().copied().filter(|&d| d < 1000.0).collect();
        println!(
            "{name}: median {:.0} ms over {} sentences; {by_model} ended by the model, \
             median {:.0} ms over those",
            median(delays.clone()),
            delays.len(),
            median(by_model_delays)
        );
    }

    println!("\n700 ms pauses after an unfinished clause, taken for the end of a turn:");
    for (i, (name, s)) in runs.iter().enumerate() {
        let mut wrong = 0;
        for (before, after) in PAUSED_SENTENCES {
            let sentence = turn::say_with_pause(before, after);
            let mut audio = turn::silence(500);
            audio.extend(sentence.with_pause(700));
            let resumed_ms = (audio.len() - sentence.after.len()) as f64 * 1000.0 / 16_000.0;
            audio.extend(turn::silence(3000));
            let ended = listen(&vad, &model, *s, &audio);
            let early = ended.iter().any(|e| e.at_stream_ms < resumed_ms);
            wrong += usize::from(early);
            if i == 0 {
                println!(
                    "  {}  {before:?} | {after:?}",
                    if early { "ended  " } else { "waited " }
                );
            }
        }
        println!(
            "{name}: {wrong} of {} ({:.0}%)",
            PAUSED_SENTENCES.len(),
            100.0 * wrong as f64 / PAUSED_SENTENCES.len() as f64
        );
    }
    Ok(())
}
