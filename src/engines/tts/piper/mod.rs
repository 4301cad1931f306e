//! Piper text-to-speech: espeak-ng phonemes and VITS inference through ONNX Runtime, plus
//! espeak-ng's formant voice as an explicit fallback. Text normalisation and splitting live in
//! `engines::tts::text`.
//!
//! ```no_run
//! # use std::path::Path;
//! # fn main() -> Result<(), voxwire::engines::tts::piper::PiperError> {
//! use voxwire::engines::tts::piper::{init_runtime, PiperVoice};
//! use voxwire::engines::tts::text::SentenceSplitter;
//! init_runtime(Path::new("libonnxruntime.so.1.31.1"))?;
//! let voice = PiperVoice::load(
//!     Path::new("en_US-joe-medium.onnx"),
//!     Path::new("en_US-joe-medium.onnx.json"),
//!     1, // sessions
//!     2, // intra-op threads
//! )?;
//! let mut splitter = SentenceSplitter::new();
//! for delta in ["Hello", ", how can", " I help? ", "Bye"] {
//!     for sentence in splitter.push(delta) {
//!         let _audio: Vec<f32> = voice.synthesize(&sentence)?; // 22050 Hz
//!     }
//! }
//! if let Some(rest) = splitter.finish() {
//!     voice.synthesize(&rest)?;
//! }
//! # Ok(())
//! # }
//! ```

mod config;
mod error;
mod fallback;
mod phonemize;
mod voice;

pub use crate::engines::onnx::{runtime_environment, use_runtime_environment};
pub use config::VoiceConfig;
pub use error::PiperError;
pub use fallback::EspeakVoice;
pub use phonemize::{espeak_data_dir, split_clauses, Phonemizer};
pub use voice::{PiperVoice, VoiceOptions};

/// Load ONNX Runtime from `lib_path` for the voices (the process-wide runtime of
/// [`crate::engines::onnx`]; idempotent). A failure is [`PiperError::Runtime`].
pub fn init_runtime(lib_path: &std::path::Path) -> Result<(), PiperError> {
    crate::engines::onnx::init_runtime(lib_path).map_err(PiperError::from)
}

#[cfg(test)]
mod tests {
    /// The server shares voices across tasks.
    #[test]
    fn public_types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<super::PiperVoice>();
        check::<super::EspeakVoice>();
        check::<super::PiperError>();
    }
}
