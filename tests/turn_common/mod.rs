//! Speech for the end-of-turn tests and benchmark: espeak-ng sentences at 16 kHz, and sentences
//! with a pause in the middle. The pause comes from espeak's SSML `<break>`, so the words before
//! it carry espeak's own mid-sentence intonation; its silence is then replaced by exactly the
//! pause wanted (digital silence), as splicing with sox would.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const RATE: usize = 16_000;

/// Audio before and after the pause of a sentence.
pub struct Paused {
    pub before: Vec<f32>,
    pub after: Vec<f32>,
}

impl Paused {
    /// The sentence with exactly `pause_ms` of silence between its two parts.
    pub fn with_pause(&self, pause_ms: usize) -> Vec<f32> {
        let mut audio = self.before.clone();
        audio.extend(vec![0.0; pause_ms * RATE / 1000]);
        audio.extend_from_slice(&self.after);
        audio
    }
}

/// `text` (plain, or SSML when `ssml`) spoken by espeak-ng's en-us voice at 150 words a minute.
fn espeak(text: &str, ssml: bool) -> Vec<f32> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("voxwire-turn-{}-{n}.wav", std::process::id()));
    let mut cmd = Command::new("espeak-ng");
    if ssml {
        cmd.arg("-m");
    }
    let status = cmd
        .args(["-v", "en-us", "-s", "150", "-w"])
        .arg(&path)
        .arg(text)
        .status()
        .expect("running espeak-ng (scripts/setup installs it)");
    assert!(status.success(), "espeak-ng failed for {text:?}");
    let audio = read_wav(&path);
    let _ = std::fs::remove_file(&path);
    audio
}

/// A mono 16-bit WAV file as f32 samples at 16 kHz.
pub fn read_wav(path: &Path) -> Vec<f32> {
    let mut reader =
        hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = reader.spec();
    assert_eq!(spec.channels, 1, "{}", path.display());
    assert_eq!(spec.bits_per_sample, 16, "{}", path.display());
    let samples: Vec<f32> = reader
        .samples::<i16>()
        .map(|s| f32::from(s.expect("sample")) / 32768.0)
        .collect();
    voxwire::audio::resample::resample(&samples, spec.sample_rate, RATE as u32)
        .expect("resampling to 16 kHz")
}

/// A sentence spoken whole.
pub fn say(text: &str) -> Vec<f32> {
    espeak(text, false)
}

/// `before`, a pause, then `after`, spoken as one sentence.
pub fn say_with_pause(before: &str, after: &str) -> Paused {
    let audio = espeak(
        &format!("<speak>{before} <break time=\"700ms\"/> {after}</speak>"),
        true,
    );
    let (start, end) = longest_silence(&audio);
    Paused {
        before: audio[..start].to_vec(),
        after: audio[end..].to_vec(),
    }
}

/// The longest run of silent 10 ms frames strictly inside `audio`, as sample offsets.
fn longest_silence(audio: &[f32]) -> (usize, usize) {
    const FRAME: usize = RATE / 100;
    let quiet: Vec<bool> = audio
        .chunks(FRAME)
        .map(|f| f.iter().map(|s| s * s).sum::<f32>() / (f.len() as f32) < 1e-6)
        .collect();
    let (mut best, mut i) = ((0, 0), 0);
    while i < quiet.len() {
        let j = quiet[i..]
            .iter()
            .position(|q| !q)
            .map_or(quiet.len(), |k| i + k);
        if quiet[i] && i > 0 && j < quiet.len() && j - i > best.1 - best.0 {
            best = (i, j);
        }
        i = j.max(i + 1);
    }
    assert!(best.1 - best.0 >= 30, "no pause found in the sentence");
    (best.0 * FRAME, best.1 * FRAME)
}

/// Digital silence.
pub fn silence(ms: usize) -> Vec<f32> {
    vec![0.0; ms * RATE / 1000]
}
