//! Audio plumbing: decoding client audio (raw PCM16, mu-law, WAV via hound, other containers via
//! symphonia), resampling (rubato), encoding replies (PCM16, WAV, mu-law) and the energy-based
//! speech detector. Engines work on mono `f32` samples in [-1, 1].

pub mod decode;
pub mod encode;
pub mod mulaw;
pub mod resample;
pub mod vad;

/// Sample rate the speech-to-text engines and the detector work at.
pub const ENGINE_RATE: u32 = 16_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AudioError {
    #[error("audio is not valid base64: {0}")]
    Base64(String),
    #[error("unsupported audio format: {0}")]
    Unsupported(String),
    #[error("audio does not decode: {0}")]
    Decode(String),
    #[error("unsupported sample rate {0} Hz (supported: 8000 to 96000)")]
    SampleRate(u32),
}

/// Checks a sample rate is one we accept.
pub fn check_rate(rate: u32) -> Result<u32, AudioError> {
    if (8_000..=96_000).contains(&rate) {
        Ok(rate)
    } else {
        Err(AudioError::SampleRate(rate))
    }
}

/// Duration of `samples` at `rate`, in milliseconds.
pub fn duration_ms(samples: usize, rate: u32) -> u64 {
    (samples as u64 * 1000) / u64::from(rate.max(1))
}
