//! Decoding of client audio: base64 text, raw PCM16 and mu-law chunks, WAV chunks (hound) and
//! whole files in any container symphonia reads (WAV, FLAC, MP3, OGG/Vorbis). Output is mono f32.

use std::io::Cursor;

use base64::Engine as _;
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use super::{check_rate, duration_ms, mulaw, AudioError};

/// Decodes standard base64 (padding optional, surrounding whitespace ignored).
pub fn base64_decode(text: &str) -> Result<Vec<u8>, AudioError> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim().as_bytes())
        .or_else(|_| {
            base64::engine::general_purpose::STANDARD_NO_PAD.decode(text.trim().as_bytes())
        })
        .map_err(|e| AudioError::Base64(e.to_string()))
}

/// Encodes bytes as standard base64.
pub fn base64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Little-endian PCM16 bytes to samples. An odd trailing byte is returned for the next chunk.
pub fn pcm16_to_f32(bytes: &[u8], carry: &mut Option<u8>) -> Vec<f32> {
    let mut out = Vec::with_capacity(bytes.len() / 2 + 1);
    let mut rest = bytes;
    if let (Some(lo), Some((&hi, tail))) = (*carry, bytes.split_first()) {
        out.push(f32::from(i16::from_le_bytes([lo, hi])) / 32_768.0);
        *carry = None;
        rest = tail;
    }
    let mut pairs = rest.chunks_exact(2);
    out.extend(
        pairs
            .by_ref()
            .map(|p| f32::from(i16::from_le_bytes([p[0], p[1]])) / 32_768.0),
    );
    if let [b] = pairs.remainder() {
        *carry = Some(*b);
    }
    out
}

/// Mu-law bytes to samples.
pub fn mulaw_to_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .iter()
        .map(|&b| f32::from(mulaw::decode_sample(b)) / 32_768.0)
        .collect()
}

/// Decoded audio: mono samples and their rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
}

/// A WAV file with hound (PCM 8/16/24/32-bit integer or 32-bit float), mixed down to mono.
/// Its length is bounded by the bytes given, so no duration limit applies.
pub fn decode_wav(bytes: &[u8]) -> Result<Decoded, AudioError> {
    decode_wav_within(bytes, u64::MAX)
}

/// The most frames (samples per channel) that `max_ms` of audio at `rate` may hold.
fn frame_budget(rate: u32, max_ms: u64) -> u64 {
    max_ms.saturating_mul(u64::from(rate)) / 1000
}

fn too_long(frames: u64, rate: u32, max_ms: u64) -> AudioError {
    AudioError::TooLong {
        audio_ms: duration_ms(usize::try_from(frames).unwrap_or(usize::MAX), rate),
        max_ms,
    }
}

/// Like [`decode_wav`], but stops with [`AudioError::TooLong`] as soon as the audio passes
/// `max_ms`, before decoding the rest.
pub fn decode_wav_within(bytes: &[u8], max_ms: u64) -> Result<Decoded, AudioError> {
    let mut reader = hound::WavReader::new(Cursor::new(bytes))
        .map_err(|e| AudioError::Decode(format!("WAV: {e}")))?;
    let spec = reader.spec();
    let rate = check_rate(spec.sample_rate)?;
    let channels = usize::from(spec.channels.max(1));
    let budget = frame_budget(rate, max_ms);
    // The header's length is only a claim (the bytes bound the truth): refuse early when even
    // the claim is too long, and count what is really read.
    if u64::from(reader.duration()) > budget {
        return Err(too_long(u64::from(reader.duration()), rate, max_ms));
    }
    let most = usize::try_from(budget.saturating_add(1))
        .unwrap_or(usize::MAX)
        .saturating_mul(channels);
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .take(most)
            .map(|s| s.map(in_range))
            .collect::<Result<_, _>>()
            .map_err(|e| AudioError::Decode(format!("WAV: {e}")))?,
        hound::SampleFormat::Int => {
            let bits = u32::from(spec.bits_per_sample).clamp(1, 32);
            let scale = (1u64 << (bits - 1)) as f32;
            reader
                .samples::<i32>()
                .take(most)
                .map(|s| s.map(|v| v as f32 / scale))
                .collect::<Result<_, _>>()
                .map_err(|e| AudioError::Decode(format!("WAV: {e}")))?
        }
    };
    let frames = (interleaved.len() / channels) as u64;
    if frames > budget {
        return Err(too_long(frames, rate, max_ms));
    }
    Ok(Decoded {
        samples: downmix(&interleaved, channels),
        sample_rate: rate,
    })
}

/// A float sample as the engines take it: in [-1, 1], silence for NaN and infinities. Float
/// files can hold any bit pattern, and one NaN would otherwise spread through the resampler's
/// FFT and reach the detector and speech-to-text.
fn in_range(s: f32) -> f32 {
    if s.is_finite() {
        s.clamp(-1.0, 1.0)
    } else {
        0.0
    }
}

fn downmix(interleaved: &[f32], channels: usize) -> Vec<f32> {
    if channels <= 1 {
        return interleaved.to_vec();
    }
    interleaved
        .chunks_exact(channels)
        .map(|frame| frame.iter().sum::<f32>() / channels as f32)
        .collect()
}

/// Any audio file: WAV through hound first, then everything symphonia can probe. Decoding
/// stops with [`AudioError::TooLong`] as soon as the audio passes `max_ms`, so a small file that
/// expands to hours of audio (a decompression bomb) costs no more than `max_ms` of samples.
pub fn decode_file(bytes: &[u8], mime: Option<&str>, max_ms: u64) -> Result<Decoded, AudioError> {
    if bytes.starts_with(b"RIFF") {
        match decode_wav_within(bytes, max_ms) {
            Ok(d) => return Ok(d),
            Err(e @ (AudioError::TooLong { .. } | AudioError::SampleRate(_))) => return Err(e),
            Err(_) => {}
        }
    }
    // symphonia reads files anyone may upload and panics on some malformed ones (a WAV header
    // with a zero sample rate): that is an undecodable file, not a reason to unwind further.
    std::panic::catch_unwind(|| decode_with_symphonia(bytes, mime, max_ms))
        .unwrap_or_else(|_| Err(AudioError::Decode("the decoder failed on this file".into())))
}

fn decode_with_symphonia(
    bytes: &[u8],
    mime: Option<&str>,
    max_ms: u64,
) -> Result<Decoded, AudioError> {
    let mut hint = Hint::new();
    if let Some(m) = mime {
        hint.mime_type(m);
    }
    let stream = MediaSourceStream::new(Box::new(Cursor::new(bytes.to_vec())), Default::default());
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            stream,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|e| AudioError::Unsupported(format!("not a recognised audio file ({e})")))?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| AudioError::Decode("no audio track".into()))?;
    let track_id = track.id;
    if let Some(rate) = track.codec_params.sample_rate {
        check_rate(rate)?;
    }
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(|e| AudioError::Unsupported(format!("codec: {e}")))?;
    let mut rate = track.codec_params.sample_rate;
    let mut samples = Vec::new();
    let mut buf: Option<SampleBuffer<f32>> = None;
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break
            }
            Err(SymphoniaError::ResetRequired) => break,
            Err(e) => return Err(AudioError::Decode(e.to_string())),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            Err(SymphoniaError::DecodeError(_)) => continue,
            Err(e) => return Err(AudioError::Decode(e.to_string())),
        };
        let spec = *decoded.spec();
        // One rate per file: a stream that changes it midway would be resampled wrongly.
        match rate {
            Some(r) if r != spec.rate && !samples.is_empty() => {
                return Err(AudioError::Decode(format!(
                    "sample rate changes within the file ({r} -> {} Hz)",
                    spec.rate
                )))
            }
            _ => rate = Some(check_rate(spec.rate)?),
        }
        let frames = decoded.frames() as u64;
        let budget = frame_budget(spec.rate, max_ms);
        let total = samples.len() as u64 + frames;
        if total > budget {
            return Err(too_long(total, spec.rate, max_ms));
        }
        let capacity = decoded.capacity() as u64;
        let fits = buf
            .as_ref()
            .is_some_and(|b| b.capacity() as u64 >= capacity * spec.channels.count() as u64);
        if !fits {
            buf = Some(SampleBuffer::<f32>::new(capacity, spec));
        }
        if let Some(b) = buf.as_mut() {
            b.copy_interleaved_ref(decoded);
            let mono = downmix(b.samples(), spec.channels.count().max(1));
            samples.extend(mono.into_iter().map(in_range));
        }
    }
    let rate = check_rate(rate.ok_or_else(|| AudioError::Decode("unknown sample rate".into()))?)?;
    if samples.is_empty() {
        return Err(AudioError::Decode("no audio samples in file".into()));
    }
    Ok(Decoded {
        samples,
        sample_rate: rate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::encode;

    #[test]
    fn pcm16_carries_odd_bytes() {
        let mut carry = None;
        let a = pcm16_to_f32(&[0x00, 0x40, 0xFF], &mut carry);
        assert_eq!(a, vec![0.5]);
        assert_eq!(carry, Some(0xFF));
        let b = pcm16_to_f32(&[0x7F], &mut carry);
        assert_eq!(b.len(), 1);
        assert!((b[0] - 32_767.0 / 32_768.0).abs() < 1e-6);
        assert_eq!(carry, None);
    }

    #[test]
    fn wav_round_trip_and_garbage() {
        let samples: Vec<f32> = (0..1600).map(|i| ((i % 50) as f32 / 50.0) - 0.5).collect();
        let wav = encode::wav_bytes(&samples, 16_000);
        let d = decode_file(&wav, Some("audio/wav"), 60_000).unwrap();
        assert_eq!(d.sample_rate, 16_000);
        assert_eq!(d.samples.len(), 1600);
        assert!(decode_file(b"this is not audio at all", None, 60_000).is_err());
        assert!(decode_file(b"RIFF\x10\x00\x00\x00WAVEfmt ", None, 60_000).is_err());
        assert!(decode_file(&[], None, 60_000).is_err());
    }

    #[test]
    fn base64_errors_are_reported() {
        assert!(matches!(base64_decode("%%%"), Err(AudioError::Base64(_))));
        assert_eq!(base64_decode("AAE=").unwrap(), vec![0, 1]);
        assert_eq!(base64_decode("AAE").unwrap(), vec![0, 1]);
    }
}
