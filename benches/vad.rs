//! Silero VAD benchmark: runtime and model load time, cost per 32 ms frame (median of several
//! passes over 10 s of human speech), and cost per push of a 500 ms and a 20 ms chunk. Nothing
//! asserts a timing.
//! Paths: env `VOXWIRE_ORT_LIB`, default the fetched models.
//! Run: `cargo bench --bench vad`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use voxwire::audio::vad::silero::{SileroError, SileroStream, SileroVad};
use voxwire::engines::onnx::init_runtime;
use voxwire::models::{manifest, ModelStore};

const RATE: usize = 16_000;
const SECONDS: usize = 10;
const RUNS: usize = 7;
const FIXTURES: [&str; 3] = [
    "librivox_sense_and_sensibility_0870.wav",
    "librivox_sense_and_sensibility_0890.wav",
    "librivox_sense_and_sensibility_0920.wav",
];

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// CPU time this thread has run (Linux `/proc/thread-self/schedstat`), to tell compute from
/// waiting for a core on a shared machine. With one intra-op thread ONNX Runtime computes on
/// the calling thread.
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// 16 kHz mono 16-bit WAV as f32 samples.
fn read_wav(path: &Path) -> Vec<f32> {
    let mut reader = match hound::WavReader::open(path) {
        Ok(r) => r,
        Err(e) => panic!("{}: {e}", path.display()),
    };
    assert_eq!(
        reader.spec().sample_rate as usize,
        RATE,
        "{}",
        path.display()
    );
    reader
        .samples::<i16>()
        .map(|s| f32::from(s.unwrap_or(0)) / 32768.0)
        .collect()
}

/// Ten seconds of human speech (the test recordings, repeated as needed).
fn speech() -> Vec<f32> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/speech");
    let clips: Vec<Vec<f32>> = FIXTURES.iter().map(|f| read_wav(&dir.join(f))).collect();
    clips
        .iter()
        .cycle()
        .flatten()
        .copied()
        .take(SECONDS * RATE)
        .collect()
}

/// Pushes `audio` in chunks of `chunk` samples into a fresh stream; the time of each push that
/// completed at least one frame.
fn pushes(vad: &Arc<SileroVad>, audio: &[f32], chunk: usize) -> Vec<Duration> {
    let mut stream = vad.stream();
    let mut times = Vec::new();
    for c in audio.chunks(chunk) {
        let t = Instant::now();
        let probs = stream.push(c).expect("inference");
        if !probs.is_empty() {
            times.push(t.elapsed());
        }
    }
    times
}

fn main() -> Result<(), SileroError> {
    let store = ModelStore::from_env();
    let lib = std::env::var_os("VOXWIRE_ORT_LIB").map_or_else(
        || store.file(manifest::ONNXRUNTIME, "libonnxruntime.so"),
        PathBuf::from,
    );
    let model = store.file(manifest::SILERO_VAD, "silero_vad.onnx");

    let t = Instant::now();
    init_runtime(&lib)?;
    println!("runtime init: {:.0} ms", ms(t.elapsed()));
    for sessions in [1, 2] {
        let t = Instant::now();
        SileroVad::load(&lib, &model, sessions)?;
        println!(
            "model load, {sessions} session(s): {:.1} ms",
            ms(t.elapsed())
        );
    }
    let vad = Arc::new(SileroVad::load(&lib, &model, 1)?);

    let audio = speech();
    let frames = audio.len() / SileroStream::FRAME;
    println!("\naudio: {SECONDS} s of speech, {frames} frames of 32 ms");
    vad.stream().push(&audio)?; // warm-up

    let mut per_frame = Vec::new();
    let mut cpu_per_frame = Vec::new();
    for _ in 0..RUNS {
        let mut stream = vad.stream();
        let c = thread_cpu();
        let t = Instant::now();
        let probs = stream.push(&audio)?;
        let took = t.elapsed();
        assert_eq!(probs.len(), frames);
        per_frame.push(took / frames as u32);
        if let (Some(before), Some(after)) = (c, thread_cpu()) {
            cpu_per_frame.push(after.saturating_sub(before) / frames as u32);
        }
    }
    let frame = median(per_frame);
    println!(
        "per 32 ms frame: {:.0} µs (median of {RUNS} passes; {:.0} µs on a core), \
         real-time factor {:.4}: one core keeps up with ~{:.0} streams",
        us(frame),
        us(median(cpu_per_frame)),
        frame.as_secs_f64() / 0.032,
        0.032 / frame.as_secs_f64()
    );

    for (label, chunk) in [("500 ms", RATE / 2), ("20 ms", RATE / 50)] {
        let times: Vec<Duration> = (0..RUNS)
            .flat_map(|_| pushes(&vad, &audio, chunk))
            .collect();
        let worst = times.iter().max().copied().unwrap_or_default();
        println!(
            "per push of a {label} chunk (pushes that completed a frame): median {:.2} ms, max {:.2} ms",
            ms(median(times)),
            ms(worst),
        );
    }
    Ok(())
}
