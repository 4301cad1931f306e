//! Silence and noise must come back as empty text, never as hallucinated words.

#[path = "stt_common/mod.rs"]
mod common;

use common::{whisper, white_noise, SR};

const NEVER: &dyn Fn() -> bool = &|| false;

fn assert_empty(name: &str, pcm: &[f32]) {
    let t = whisper().transcribe(pcm, NEVER).expect("transcribe");
    println!(
        "{name}: text {:?}, no_speech_prob {:.3}",
        t.text, t.no_speech_prob
    );
    assert!(t.text.is_empty(), "{name} produced {:?}", t.text);
    assert!(t.segments.is_empty());
}

#[test]
fn digital_silence_is_empty() {
    assert_empty("3 s of zeros", &vec![0.0; 3 * SR]);
}

#[test]
fn empty_and_tiny_inputs_are_empty() {
    assert_empty("no samples", &[]);
    assert_empty("5 ms", &[0.01; 80]);
}

#[test]
fn very_low_white_noise_is_empty() {
    // -60 dBFS: below the energy gate, the model is not even run.
    assert_empty("-60 dBFS noise", &white_noise(3 * SR, 0.001, 1));
}

#[test]
fn low_white_noise_is_empty() {
    // -40 dBFS: above the energy gate, so the model's no-speech judgement decides.
    assert_empty("-40 dBFS noise", &white_noise(3 * SR, 0.01, 2));
}

#[test]
fn loud_noise_burst_is_empty() {
    // 1 s of -10 dBFS noise between two seconds of near-silence.
    let mut pcm = white_noise(3 * SR, 0.0005, 3);
    for (x, n) in pcm[SR..2 * SR].iter_mut().zip(white_noise(SR, 0.3, 4)) {
        *x += n;
    }
    assert_empty("loud noise burst", &pcm);
}

#[test]
fn non_finite_audio_is_an_error() {
    let mut pcm = vec![0.0; SR];
    pcm[100] = f32::NAN;
    let err = whisper().transcribe(&pcm, NEVER).unwrap_err();
    assert!(err.to_string().contains("not a finite number"), "{err}");
}
