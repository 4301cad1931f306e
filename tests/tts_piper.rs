//! The real Piper voice end to end: speech that measures like speech, saved
//! as 16 kHz WAVs under target/test-artifacts/, streaming chunks, concurrency and bad files.

#[path = "tts_common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::{Arc, OnceLock};

use common::{assert_speech, ort_lib, out_dir, speech_stats, voice_paths};
use voxwire::audio::encode::{wav_bytes, OutputEncoder};
use voxwire::audio::resample::resample;
use voxwire::engines::tts::piper::{init_runtime, PiperError, PiperVoice};
use voxwire::engines::tts::text::SentenceSplitter;
use voxwire::protocol::{AudioFormat, Encoding};

/// One voice for the whole test binary (loading takes about a second).
fn voice() -> &'static PiperVoice {
    static VOICE: OnceLock<PiperVoice> = OnceLock::new();
    VOICE.get_or_init(|| {
        init_runtime(&ort_lib()).expect("ONNX Runtime loads");
        let (onnx, config) = voice_paths();
        PiperVoice::load(&onnx, &config, 2, 1).expect("voice loads")
    })
}

fn save_wav(name: &str, audio: &[f32], rate: u32) {
    let bytes = wav_bytes(&resample(audio, rate, 16000).expect("resample"), 16000);
    std::fs::write(out_dir().join(name), bytes).expect("write wav");
}

#[test]
fn synthesised_speech_measures_like_speech() {
    let v = voice();
    assert_eq!(v.sample_rate(), 22050);
    let texts = [
        ("hello.wav", "Hello, how can I help you today?"),
        (
            "tricky.wav",
            "Dr. Smith paid $5.99 at 3:30 p.m. on May 1st, e.g. 3.5% more.",
        ),
        (
            "long.wav",
            "Thanks for calling. Your order shipped this morning and should arrive \
             within three business days. If anything is missing, just reply to the \
             confirmation email and we will sort it out right away.",
        ),
    ];
    for (file, text) in texts {
        let audio = v.synthesize(text).expect("synthesis");
        // Count spoken words after normalisation ("$5.99" is five words).
        let words = voxwire::engines::tts::text::normalize(text)
            .split_whitespace()
            .count();
        // Judge the 16 kHz version, as the server would send it.
        let wav = wav_bytes(
            &resample(&audio, v.sample_rate(), 16000).expect("resample"),
            16000,
        );
        let reader = hound::WavReader::new(std::io::Cursor::new(&wav)).expect("wav reads");
        assert_eq!(reader.spec().sample_rate, 16000);
        let pcm: Vec<f32> = reader
            .into_samples::<i16>()
            .map(|s| f32::from(s.expect("sample")) / 32768.0)
            .collect();
        let stats = speech_stats(&pcm, 16000);
        println!("{file}: {words} words, {stats:?}");
        assert_speech(&stats, words, text);
        save_wav(file, &audio, v.sample_rate());
    }
}

#[test]
fn phonemes_look_like_piper_input() {
    let p = voice()
        .phonemize("Hello, world. How are you?")
        .expect("phonemes");
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].starts_with("həlˈoʊ, "), "{p:?}");
    assert!(p[0].ends_with('.'), "{p:?}");
    assert!(p[1].ends_with('?'), "{p:?}");
}

#[test]
fn streamed_chunks_synthesise_and_first_chunk_is_short() {
    let v = voice();
    let reply = "Sure, I can book that table for you, and I will send a confirmation \
                 to your phone. Is there anything else?";
    let mut splitter = SentenceSplitter::new();
    let mut chunks = Vec::new();
    for token in reply.split_inclusive(' ') {
        chunks.extend(splitter.push(token));
    }
    chunks.extend(splitter.finish());
    // No clause mark after "Sure," soon enough: the first six words go ahead.
    assert_eq!(chunks[0], "Sure, I can book that table");
    assert_eq!(
        chunks[1],
        "for you, and I will send a confirmation to your phone."
    );
    let mut all = Vec::new();
    for chunk in &chunks {
        let audio = v.synthesize(chunk).expect("chunk synthesis");
        assert!(!audio.is_empty(), "{chunk}");
        all.extend(audio);
    }
    let stats = speech_stats(&all, v.sample_rate());
    assert_speech(&stats, reply.split_whitespace().count(), reply);
    save_wav("streamed.wav", &all, v.sample_rate());
}

#[test]
fn two_threads_synthesise_at_once() {
    let v = voice();
    let texts = [
        "The first caller asked about opening hours.",
        "The second one wanted a refund.",
    ];
    let results: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = texts
            .iter()
            .map(|t| s.spawn(move || v.synthesize(t)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread").expect("synthesis"))
            .collect()
    });
    for (audio, text) in results.iter().zip(texts) {
        assert_speech(
            &speech_stats(audio, v.sample_rate()),
            text.split_whitespace().count(),
            text,
        );
    }
}

#[test]
fn one_session_serialises_concurrent_requests() {
    init_runtime(&ort_lib()).expect("runtime");
    let (onnx, config) = voice_paths();
    let v = Arc::new(PiperVoice::load(&onnx, &config, 1, 1).expect("load"));
    let handles: Vec<_> = (0..3)
        .map(|i| {
            let v = Arc::clone(&v);
            std::thread::spawn(move || v.synthesize(&format!("Request number {}.", i + 1)))
        })
        .collect();
    for h in handles {
        let audio = h.join().expect("thread").expect("synthesis");
        assert!(audio.len() > 11025, "at least half a second");
    }
}

#[test]
fn every_format_from_real_speech() {
    let v = voice();
    let audio = v.synthesize("Testing every format.").expect("synthesis");
    let secs = audio.len() as f64 / f64::from(v.sample_rate());
    for (encoding, rate) in [
        (Encoding::Pcm16, 8000),
        (Encoding::Pcm16, 16000),
        (Encoding::Pcm16, 24000),
        (Encoding::Pcm16, 48000),
        (Encoding::Mulaw, 8000),
        (Encoding::Wav, 16000),
    ] {
        let format = AudioFormat {
            encoding,
            sample_rate: rate,
        };
        let mut enc = OutputEncoder::new(v.sample_rate(), format).expect("encoder");
        let mut samples = 0usize;
        let mut chunks: Vec<Vec<u8>> = audio.chunks(4096).map(|c| enc.encode(c)).collect();
        chunks.push(enc.finish());
        for chunk in chunks {
            samples += match encoding {
                Encoding::Pcm16 => chunk.len() / 2,
                Encoding::Mulaw => chunk.len(),
                Encoding::Wav if chunk.is_empty() => 0,
                Encoding::Wav => {
                    let d = voxwire::audio::decode::decode_wav(&chunk)
                        .expect("each chunk is a WAV file");
                    assert_eq!(d.sample_rate, rate);
                    d.samples.len()
                }
            };
        }
        let got = samples as f64 / f64::from(rate);
        assert!((got - secs).abs() < 0.01, "{format:?}: {got} s vs {secs} s");
    }
}

#[test]
fn empty_and_punctuation_only_text_give_no_audio() {
    assert!(voice().synthesize("").expect("empty").is_empty());
    assert!(voice()
        .synthesize(" ... !? ")
        .expect("punctuation")
        .is_empty());
}

#[test]
fn bad_voice_files_are_clear_errors() {
    init_runtime(&ort_lib()).expect("runtime");
    let (onnx, config) = voice_paths();
    let missing = Path::new("/nonexistent/voice.onnx");
    let err = PiperVoice::load(missing, &config, 1, 1)
        .err()
        .expect("must fail");
    assert!(matches!(err, PiperError::Io { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/voice.onnx"), "{err}");

    let err = PiperVoice::load(&onnx, Path::new("/nonexistent/v.json"), 1, 1)
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("/nonexistent/v.json"), "{err}");

    let dir = std::env::temp_dir().join(format!("voxwire-tts-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let corrupt = dir.join("corrupt.onnx");
    std::fs::write(&corrupt, b"this is not an onnx model").expect("write");
    let err = PiperVoice::load(&corrupt, &config, 1, 1)
        .err()
        .expect("must fail");
    assert!(matches!(err, PiperError::Model { .. }), "{err}");
    assert!(err.to_string().contains("corrupt.onnx"), "{err}");

    let bad_json = dir.join("bad.onnx.json");
    std::fs::write(&bad_json, b"{\"audio\": {}}").expect("write");
    let err = PiperVoice::load(&onnx, &bad_json, 1, 1)
        .err()
        .expect("must fail");
    assert!(matches!(err, PiperError::Config { .. }), "{err}");
    assert!(err.to_string().contains("bad.onnx.json"), "{err}");

    let err = PiperVoice::load(&onnx, &config, 0, 1)
        .err()
        .expect("must fail");
    assert!(matches!(err, PiperError::InvalidArgument(_)), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_speech_measures_reject_a_steady_tone_and_silence() {
    let rate = 16000u32;
    let tone: Vec<f32> = (0..rate * 2)
        .map(|i| 0.3 * (2.0 * std::f32::consts::PI * 220.0 * i as f32 / rate as f32).sin())
        .collect();
    let result = std::panic::catch_unwind(|| assert_speech(&speech_stats(&tone, rate), 5, "tone"));
    assert!(result.is_err(), "a steady tone must not pass as speech");
    let silence = vec![0.0f32; rate as usize * 2];
    let result =
        std::panic::catch_unwind(|| assert_speech(&speech_stats(&silence, rate), 5, "silence"));
    assert!(result.is_err(), "silence must not pass as speech");
}
