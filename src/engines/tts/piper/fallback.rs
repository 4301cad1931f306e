//! espeak-ng's own formant voice (robotic but instant), for use only when a
//! caller explicitly chooses it — e.g. if the Piper model is missing. Uses the
//! pure-Rust `espeak-ng` crate with the same bundled data as the phonemiser.

use espeak_ng::EspeakNg;

use super::phonemize::espeak_data_dir;
use super::PiperError;
use crate::engines::tts::text::normalize;

/// The espeak-ng formant synthesiser. `Send + Sync`.
pub struct EspeakVoice {
    engine: EspeakNg,
}

impl EspeakVoice {
    /// An espeak-ng voice such as "en-us", speaking at `words_per_minute`
    /// (espeak's default is 175).
    pub fn new(voice: &str, words_per_minute: u32) -> Result<Self, PiperError> {
        let dir = espeak_data_dir()?;
        let engine = EspeakNg::builder()
            .voice(voice)
            .rate(words_per_minute)
            .data_dir(&dir)
            .build()
            .map_err(|e| PiperError::Fallback(format!("voice {voice:?}: {e}")))?;
        Ok(EspeakVoice { engine })
    }

    /// Output sample rate (espeak-ng always renders at 22050 Hz).
    pub fn sample_rate(&self) -> u32 {
        self.engine.sample_rate()
    }

    /// Speak `text` (normalised inside): mono f32 samples in [-1, 1].
    pub fn synthesize(&self, text: &str) -> Result<Vec<f32>, PiperError> {
        let text = normalize(text);
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let (pcm, _rate) = self
            .engine
            .synth(&text)
            .map_err(|e| PiperError::Fallback(e.to_string()))?;
        Ok(pcm.iter().map(|&s| f32::from(s) / 32768.0).collect())
    }
}
