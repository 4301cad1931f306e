//! The caller's utterance: a WAV turned into 16 kHz PCM16, cut into `audio` frames of
//! `chunk_ms` (JSON encoded once and shared by every caller), plus where its speech ends.

use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::audio::decode::{base64_encode, decode_wav};
use crate::audio::encode::pcm16_bytes;
use crate::audio::resample::resample;
use crate::audio::ENGINE_RATE;

/// Frames of this length decide where speech ends.
const FRAME_MS: u64 = 20;
/// A frame louder than this (RMS, dBFS) holds speech.
const SPEECH_DB: f32 = -40.0;

/// One utterance, ready to stream.
#[derive(Debug)]
pub struct Clip {
    pub chunk_ms: u64,
    /// `audio` frames for `[k * chunk_ms, (k + 1) * chunk_ms)`; the last one padded with silence.
    pub chunks: Vec<Utf8Bytes>,
    /// One `audio` frame of `chunk_ms` of silence: what the microphone sends after the words.
    pub silence: Utf8Bytes,
    /// The WAV's own length.
    pub duration_ms: u64,
    /// End of the last 20 ms frame above -40 dBFS, from the start of the WAV.
    pub speech_end_ms: u64,
}

impl Clip {
    /// Reads a WAV (any format hound reads), mixes to mono and resamples to 16 kHz.
    pub fn from_wav(bytes: &[u8], chunk_ms: u64) -> Result<Self, String> {
        let decoded = decode_wav(bytes).map_err(|e| e.to_string())?;
        let samples = resample(&decoded.samples, decoded.sample_rate, ENGINE_RATE)
            .map_err(|e| e.to_string())?;
        Self::from_samples(&samples, chunk_ms)
    }

    /// From 16 kHz mono samples.
    pub fn from_samples(samples: &[f32], chunk_ms: u64) -> Result<Self, String> {
        if chunk_ms == 0 {
            return Err("the chunk length must be above 0 ms".into());
        }
        let speech_end_ms = speech_end_ms(samples)
            .ok_or("the WAV holds no speech (no 20 ms frame above -40 dBFS)")?;
        let per_chunk = samples_for(chunk_ms);
        let chunks = samples
            .chunks(per_chunk)
            .map(|c| {
                let mut c = c.to_vec();
                c.resize(per_chunk, 0.0);
                audio_frame(&c)
            })
            .collect();
        Ok(Self {
            chunk_ms,
            chunks,
            silence: audio_frame(&vec![0.0; per_chunk]),
            duration_ms: samples.len() as u64 * 1000 / u64::from(ENGINE_RATE),
            speech_end_ms,
        })
    }

    /// Frame `k` of the live microphone: the clip, then silence for ever.
    pub fn chunk(&self, k: usize) -> Utf8Bytes {
        self.chunks.get(k).unwrap_or(&self.silence).clone()
    }

    /// The first chunk whose end reaches `speech_end + silence_ms`: once it is sent, the server
    /// has heard enough silence to know the turn is over.
    pub fn end_of_turn_chunk(&self, silence_ms: u64) -> usize {
        let at = self.speech_end_ms + silence_ms;
        (at.div_ceil(self.chunk_ms).max(1) - 1) as usize
    }
}

fn samples_for(ms: u64) -> usize {
    (ms * u64::from(ENGINE_RATE) / 1000).max(1) as usize
}

fn audio_frame(samples: &[f32]) -> Utf8Bytes {
    let b64 = base64_encode(&pcm16_bytes(samples));
    format!(r#"{{"type":"audio","audio":"{b64}"}}"#).into()
}

/// RMS level in dBFS.
fn level_db(frame: &[f32]) -> f32 {
    let mean_sq = frame.iter().map(|s| s * s).sum::<f32>() / frame.len().max(1) as f32;
    10.0 * mean_sq.max(1e-12).log10()
}

/// End of the last 20 ms frame above -40 dBFS, in ms; `None` if there is none.
pub fn speech_end_ms(samples: &[f32]) -> Option<u64> {
    samples
        .chunks(samples_for(FRAME_MS))
        .enumerate()
        .rev()
        .find(|(_, f)| level_db(f) > SPEECH_DB)
        .map(|(i, f)| {
            let start = i as u64 * FRAME_MS;
            start + f.len() as u64 * 1000 / u64::from(ENGINE_RATE)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone_then_silence(tone_ms: u64, silence_ms: u64) -> Vec<f32> {
        let tone = samples_for(tone_ms);
        (0..tone + samples_for(silence_ms))
            .map(|i| {
                if i < tone {
                    (i as f32 * 440.0 * std::f32::consts::TAU / 16_000.0).sin() * 0.3
                } else {
                    0.0
                }
            })
            .collect()
    }

    #[test]
    fn speech_ends_at_the_last_loud_frame() {
        assert_eq!(speech_end_ms(&tone_then_silence(1000, 500)), Some(1000));
        assert_eq!(speech_end_ms(&tone_then_silence(990, 500)), Some(1000));
        assert_eq!(speech_end_ms(&tone_then_silence(1010, 0)), Some(1010));
        assert_eq!(speech_end_ms(&vec![0.001; 16_000]), None);
    }

    #[test]
    fn chunks_cover_the_clip_then_silence() {
        let clip = Clip::from_samples(&tone_then_silence(1000, 300), 500).unwrap();
        assert_eq!(clip.duration_ms, 1300);
        assert_eq!(clip.chunks.len(), 3);
        assert_eq!(clip.chunk(3), clip.silence);
        assert_eq!(clip.chunk(2).len(), clip.silence.len());
        let v: serde_json::Value = serde_json::from_str(clip.chunk(0).as_str()).unwrap();
        assert_eq!(v["type"], "audio");
        assert_eq!(
            crate::audio::decode::base64_decode(v["audio"].as_str().unwrap())
                .unwrap()
                .len(),
            16_000
        );
    }

    #[test]
    fn end_of_turn_chunk_is_the_first_reaching_the_silence() {
        let clip = Clip::from_samples(&tone_then_silence(1000, 300), 500).unwrap();
        // 1000 + 600 = 1600 ms: chunk 3 covers [1500, 2000).
        assert_eq!(clip.end_of_turn_chunk(600), 3);
        // 1000 + 500 = 1500 ms: chunk 2 ends exactly there.
        assert_eq!(clip.end_of_turn_chunk(500), 2);
    }

    #[test]
    fn a_silent_wav_is_refused() {
        assert!(Clip::from_samples(&vec![0.0; 16_000], 500).is_err());
    }
}
