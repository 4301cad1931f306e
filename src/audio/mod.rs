//! Audio plumbing: decoding client audio (raw PCM16, mu-law, WAV via hound, other containers via
//! symphonia), resampling (rubato), encoding replies (PCM16, WAV, mu-law), joining reply pieces
//! without a pause (`seam`), Whisper's log-mel features (for Whisper and Smart Turn) and speech
//! detection. Engines work on mono `f32` samples in [-1, 1].

pub mod decode;
pub mod echo;
pub mod encode;
pub mod input;
pub mod mel;
pub mod mulaw;
pub mod resample;
pub mod seam;
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
    #[error("unsupported sample rate {0} Hz (supported: 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000)")]
    SampleRate(u32),
    #[error("{audio_ms} ms of audio exceeds the {max_ms} ms limit")]
    TooLong { audio_ms: u64, max_ms: u64 },
}

/// The sample rates audio may come in or go out at. Converting between two rates costs work in
/// proportion to how little they have in common (an FFT of `rate / gcd` points), so arbitrary
/// rates such as 95003 Hz would let one chunk cost seconds of CPU; every rate here converts to
/// and from 16 kHz with small transforms.
pub const SAMPLE_RATES: [u32; 11] = [
    8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000, 88_200, 96_000,
];

/// Checks a sample rate is one we accept ([`SAMPLE_RATES`]).
pub fn check_rate(rate: u32) -> Result<u32, AudioError> {
    if SAMPLE_RATES.contains(&rate) {
        Ok(rate)
    } else {
        Err(AudioError::SampleRate(rate))
    }
}

/// Duration of `samples` at `rate`, in milliseconds.
pub fn duration_ms(samples: usize, rate: u32) -> u64 {
    (samples as u64 * 1000) / u64::from(rate.max(1))
}
