//! espeak-ng's formant voice, the explicit fallback engine.

#[path = "tts_common/mod.rs"]
mod common;

use common::{assert_speech, out_dir, speech_stats};
use voxwire::audio::encode::wav_bytes;
use voxwire::audio::resample::resample;
use voxwire::engines::tts::piper::EspeakVoice;

#[test]
fn espeak_formant_voice_speaks() {
    let v = EspeakVoice::new("en-us", 175).expect("espeak voice");
    assert_eq!(v.sample_rate(), 22050);
    let text = "This is the fallback voice, used only when chosen.";
    let audio = v.synthesize(text).expect("synthesis");
    let stats = speech_stats(&audio, v.sample_rate());
    println!("{stats:?}");
    assert_speech(&stats, text.split_whitespace().count(), text);
    let wav = wav_bytes(
        &resample(&audio, v.sample_rate(), 16000).expect("resample"),
        16000,
    );
    std::fs::write(out_dir().join("espeak_fallback.wav"), wav).expect("write");
    assert!(v.synthesize("").expect("empty").is_empty());
}
