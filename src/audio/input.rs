//! Client audio in a call's input format (PCM16, mu-law or WAV chunks, at one of the supported
//! rates) decoded to mono samples at the engine rate.

use super::decode::{decode_wav, mulaw_to_f32, pcm16_to_f32};
use super::resample::StreamResampler;
use super::{check_rate, AudioError, ENGINE_RATE};
use crate::protocol::{AudioFormat, Encoding};

/// Turns client chunks of the call's input format into 16 kHz samples. One resampler per call,
/// made when the call starts: a chunk never builds one.
pub struct InputDecoder {
    format: AudioFormat,
    carry: Option<u8>,
    resampler: StreamResampler,
}

impl InputDecoder {
    pub fn new(format: AudioFormat) -> Result<Self, AudioError> {
        check_rate(format.sample_rate)?;
        Ok(Self {
            format,
            carry: None,
            resampler: StreamResampler::new(format.sample_rate, ENGINE_RATE)?,
        })
    }

    pub fn decode(&mut self, bytes: &[u8]) -> Result<Vec<f32>, AudioError> {
        match self.format.encoding {
            Encoding::Pcm16 => Ok(self.resampler.push(&pcm16_to_f32(bytes, &mut self.carry))),
            Encoding::Mulaw => Ok(self.resampler.push(&mulaw_to_f32(bytes))),
            Encoding::Wav => {
                let d = decode_wav(bytes)?;
                if d.sample_rate != self.format.sample_rate {
                    return Err(AudioError::Decode(format!(
                        "WAV chunk at {} Hz in a call whose audio_format.sample_rate is {} Hz",
                        d.sample_rate, self.format.sample_rate
                    )));
                }
                Ok(self.resampler.push(&d.samples))
            }
        }
    }
}
