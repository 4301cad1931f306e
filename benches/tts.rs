//! Piper benchmark: model load time, time to first audio (short sentence and
//! the first chunk of a long reply), real-time factor with 1 and 2 intra-op
//! threads. Run: `cargo run --release --example bench`.
//! Paths: env `VOXWIRE_TTS_VOICE` (.onnx) and `VOXWIRE_ORT_LIB`, default the fetched models.
//! Run: `cargo bench --bench tts`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use voxwire::engines::tts::piper::{init_runtime, PiperError, PiperVoice, VoiceOptions};
use voxwire::engines::tts::text::SentenceSplitter;
use voxwire::models::{manifest, ModelStore};

const SHORT: &str = "Hello, how can I help you today?";
const LONG: &str = "Thanks for waiting, I checked your account and found the problem. \
    Your last payment was applied to the wrong invoice, so the system marked the \
    newer one as overdue. I have moved it to the right invoice and removed the late \
    fee, which means you do not owe anything today.";
const RUNS: usize = 5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// CPU time this thread has run (Linux `/proc/thread-self/schedstat`), to
/// tell compute from waiting for a core on a shared machine. With one
/// intra-op thread ONNX Runtime computes on the calling thread.
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

fn first_chunk(text: &str) -> String {
    let mut s = SentenceSplitter::new();
    let mut chunks = Vec::new();
    for token in text.split_inclusive(' ') {
        chunks.extend(s.push(token));
        if !chunks.is_empty() {
            break;
        }
    }
    chunks
        .into_iter()
        .next()
        .or_else(|| s.finish())
        .unwrap_or_default()
}

fn main() -> Result<(), PiperError> {
    let store = ModelStore::from_env();
    let onnx = std::env::var_os("VOXWIRE_TTS_VOICE").map_or_else(
        || store.file(manifest::PIPER_JOE, "voice.onnx"),
        PathBuf::from,
    );
    let mut config = onnx.clone().into_os_string();
    config.push(".json");
    let config = PathBuf::from(config);
    let lib = std::env::var_os("VOXWIRE_ORT_LIB").map_or_else(
        || store.file(manifest::ONNXRUNTIME, "libonnxruntime.so"),
        PathBuf::from,
    );

    let t = Instant::now();
    init_runtime(&lib)?;
    println!("runtime init: {:.0} ms", ms(t.elapsed()));
    println!(
        "long text: {} words; first chunk: {:?}",
        LONG.split_whitespace().count(),
        first_chunk(LONG)
    );

    for (threads, spin) in [(1usize, false), (2, false), (2, true)] {
        let t = Instant::now();
        let opts = VoiceOptions {
            sessions: 1,
            intra_threads: threads,
            spin,
        };
        let voice = PiperVoice::load_with(&onnx, &config, opts)?;
        println!("\n== intra-op threads: {threads}, spinning: {spin} ==");
        println!("model load: {:.0} ms", ms(t.elapsed()));
        let rate = f64::from(voice.sample_rate());
        // Warm-up (first run allocates).
        voice.synthesize(SHORT)?;

        let first_long = first_chunk(LONG);
        let cases = [
            ("short sentence", SHORT),
            ("long reply, first chunk", &first_long),
            ("short first clause", "Sure, let me check."),
        ];
        for (label, text) in cases {
            let mut phon = Vec::new();
            let mut total = Vec::new();
            let mut cpu = Vec::new();
            let mut secs = 0.0;
            for _ in 0..RUNS {
                let t = Instant::now();
                voice.phonemize(text)?;
                phon.push(t.elapsed());
                let c = thread_cpu();
                let t = Instant::now();
                let audio = voice.synthesize(text)?;
                total.push(t.elapsed());
                if let (Some(before), Some(after)) = (c, thread_cpu()) {
                    cpu.push(after.saturating_sub(before));
                }
                secs = audio.len() as f64 / rate;
            }
            let cpu_note = if threads == 1 && !cpu.is_empty() {
                format!(", of which {:.0} ms on a core", ms(median(cpu)))
            } else {
                String::new()
            };
            println!(
                "time to first audio, {label}: {:.0} ms{cpu_note} (phonemes {:.1} ms) for {secs:.2} s of audio",
                ms(median(total)),
                ms(median(phon)),
            );
        }

        let mut rtfs = Vec::new();
        let mut whole = Duration::ZERO;
        for _ in 0..3 {
            let t = Instant::now();
            let audio = voice.synthesize(LONG)?;
            let took = t.elapsed();
            whole = took;
            rtfs.push(took.as_secs_f64() / (audio.len() as f64 / rate));
        }
        rtfs.sort_by(f64::total_cmp);
        println!(
            "real-time factor, long text: {:.3} (median of 3; last run {:.0} ms)",
            rtfs[1],
            ms(whole)
        );
    }
    Ok(())
}
