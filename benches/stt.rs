//! Latency benchmark: model load time, then 2 s / 5 s / 15 s utterances (espeak-ng sentences
//! concatenated and trimmed) transcribed several times; prints median latency and real-time
//! factor. Needs `espeak-ng` on PATH.
//!
//! `cargo run --release --example bench [-- RUNS [THREADS]]` (THREADS: compute threads per
//! request, default `WhisperOptions::default().threads`); the model directory comes from
//! `VOXWIRE_STT_MODEL_DIR` (default: the fetched tiny.en). Run: `cargo bench --bench stt -- [runs] [threads]`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use voxwire::engines::stt::whisper::{Whisper, WhisperOptions};

const SR: usize = 16_000;

fn espeak(text: &str) -> Result<Vec<f32>, Box<dyn std::error::Error>> {
    let path = std::env::temp_dir().join(format!("voxwire-stt-bench-{}.wav", std::process::id()));
    let status = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&path)
        .arg(text)
        .status()?;
    if !status.success() {
        return Err("espeak-ng failed".into());
    }
    let mut reader = hound::WavReader::open(&path)?;
    let rate = reader.spec().sample_rate as usize;
    let raw: Vec<f32> = reader
        .samples::<i16>()
        .map(|s| s.map(|v| f32::from(v) / 32768.0))
        .collect::<Result<_, _>>()?;
    std::fs::remove_file(&path).ok();
    // Linear resampling is plenty for a timing benchmark.
    let n = raw.len() * SR / rate;
    Ok((0..n)
        .map(|i| {
            let t = i as f64 * rate as f64 / SR as f64;
            let j = t as usize;
            let f = (t - j as f64) as f32;
            let a = raw[j.min(raw.len() - 1)];
            let b = raw[(j + 1).min(raw.len() - 1)];
            a + (b - a) * f
        })
        .collect())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let defaults = WhisperOptions::default();
    let threads: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(defaults.threads);
    let dir = std::env::var_os("VOXWIRE_STT_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            voxwire::models::ModelStore::from_env()
                .model_dir(voxwire::models::manifest::WHISPER_TINY_EN)
        });
    println!(
        "model {}  threads per request {threads} (0 = physical cores = {})",
        dir.display(),
        candle_core::utils::get_num_threads()
    );

    let t = Instant::now();
    let options = WhisperOptions {
        threads,
        ..defaults
    };
    let model = Whisper::load_with_options(&dir, options)?;
    println!(
        "load: {:.0} ms  dims {:?}",
        t.elapsed().as_secs_f64() * 1e3,
        model.dims()
    );

    let mut speech = Vec::new();
    for s in [
        "Hello, I would like to book a table for two people tonight.",
        "Could you also tell me whether the restaurant has vegetarian options?",
        "We will arrive at around eight o'clock, and we might bring a small dog.",
        "Please call me back on this number if anything changes before then.",
    ] {
        speech.extend(espeak(s)?);
        speech.extend(std::iter::repeat_n(0.0, SR / 4));
    }
    println!("source speech {:.1} s", speech.len() as f64 / SR as f64);

    println!(
        "{:>6} {:>10} {:>10} {:>8}  text",
        "audio", "median ms", "min ms", "RTF"
    );
    for secs in [2usize, 5, 15] {
        let pcm = &speech[..(secs * SR).min(speech.len())];
        let never = || false;
        let _ = model.transcribe(pcm, &never)?; // warm-up
        let mut times = Vec::new();
        let mut text = String::new();
        for _ in 0..runs {
            let t = Instant::now();
            text = model.transcribe(pcm, &never)?.text;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let min = times.iter().copied().fold(f64::MAX, f64::min);
        let med = median(times);
        let rtf = med / 1e3 / secs as f64;
        println!("{secs:>5}s {med:>10.0} {min:>10.0} {rtf:>8.3}  {text}");
    }
    Ok(())
}
