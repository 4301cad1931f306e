//! Encoding of reply audio into the format a call asked for: PCM16, WAV or mu-law, resampled
//! from the engine's rate with a streaming resampler kept per reply.

use std::io::Cursor;

use super::{mulaw, resample::StreamResampler, AudioError};
use crate::protocol::{AudioFormat, Encoding};

/// Clamps and converts one sample to i16.
pub fn to_i16(s: f32) -> i16 {
    (s.clamp(-1.0, 1.0) * 32_767.0).round() as i16
}

/// Little-endian PCM16 bytes.
pub fn pcm16_bytes(samples: &[f32]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|&s| to_i16(s).to_le_bytes())
        .collect()
}

/// A complete mono 16-bit WAV file.
pub fn wav_bytes(samples: &[f32], rate: u32) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut cursor = Cursor::new(Vec::with_capacity(44 + samples.len() * 2));
    // Writing to memory cannot fail short of allocation failure; an error yields what was written.
    if let Ok(mut w) = hound::WavWriter::new(&mut cursor, spec) {
        for &s in samples {
            if w.write_sample(to_i16(s)).is_err() {
                break;
            }
        }
        let _ = w.finalize();
    }
    cursor.into_inner()
}

/// Mu-law bytes.
pub fn mulaw_bytes(samples: &[f32]) -> Vec<u8> {
    samples
        .iter()
        .map(|&s| mulaw::encode_sample(to_i16(s)))
        .collect()
}

/// Turns engine audio (any rate) into output chunks of one format, keeping resampler state
/// across the chunks of one reply so there are no clicks at the seams.
pub struct OutputEncoder {
    format: AudioFormat,
    resampler: StreamResampler,
}

impl OutputEncoder {
    pub fn new(engine_rate: u32, format: AudioFormat) -> Result<Self, AudioError> {
        Ok(Self {
            format,
            resampler: StreamResampler::new(engine_rate, format.sample_rate)?,
        })
    }

    pub fn format(&self) -> AudioFormat {
        self.format
    }

    /// Encodes a chunk; may return an empty vector while the resampler fills.
    pub fn encode(&mut self, samples: &[f32]) -> Vec<u8> {
        let out = self.resampler.push(samples);
        self.bytes(&out)
    }

    /// Flushes the resampler's tail at the end of a reply.
    pub fn finish(&mut self) -> Vec<u8> {
        let out = self.resampler.finish();
        self.bytes(&out)
    }

    fn bytes(&self, samples: &[f32]) -> Vec<u8> {
        if samples.is_empty() {
            return Vec::new();
        }
        match self.format.encoding {
            Encoding::Pcm16 => pcm16_bytes(samples),
            Encoding::Wav => wav_bytes(samples, self.format.sample_rate),
            Encoding::Mulaw => mulaw_bytes(samples),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::decode;

    #[test]
    fn every_output_format_decodes_at_its_rate() {
        let tone: Vec<f32> = (0..22_050).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
        for (encoding, rate) in [
            (Encoding::Pcm16, 16_000),
            (Encoding::Pcm16, 24_000),
            (Encoding::Wav, 48_000),
            (Encoding::Mulaw, 8_000),
        ] {
            let mut enc = OutputEncoder::new(
                22_050,
                AudioFormat {
                    encoding,
                    sample_rate: rate,
                },
            )
            .unwrap();
            let mut bytes = Vec::new();
            let mut samples = 0usize;
            for chunk in tone.chunks(4_000) {
                let b = enc.encode(chunk);
                samples += count(&b, encoding);
                bytes.extend(b);
            }
            samples += count(&enc.finish(), encoding);
            let expected = rate as usize; // one second
            assert!(
                (samples as i64 - expected as i64).abs() < (expected / 50) as i64,
                "{encoding:?}@{rate}: {samples}"
            );
        }
    }

    fn count(bytes: &[u8], encoding: Encoding) -> usize {
        match encoding {
            Encoding::Pcm16 => bytes.len() / 2,
            Encoding::Mulaw => bytes.len(),
            Encoding::Wav if bytes.is_empty() => 0,
            Encoding::Wav => decode::decode_wav(bytes).unwrap().samples.len(),
        }
    }
}
