//! Sample-rate conversion with rubato's FFT resampler, both for whole buffers and for streams
//! that arrive in chunks of any length.

use rubato::{FftFixedIn, Resampler};

use super::AudioError;

/// A streaming mono resampler: push chunks of any length, get output as soon as a block is full.
pub struct StreamResampler {
    inner: Option<FftFixedIn<f32>>,
    pending: Vec<f32>,
    /// Output samples still to drop at the start (the resampler's delay).
    skip: usize,
    from: u32,
    to: u32,
    /// Samples pushed in and handed out so far, so the stream's length comes out exact.
    total_in: u64,
    total_out: u64,
}

impl StreamResampler {
    pub fn new(from: u32, to: u32) -> Result<Self, AudioError> {
        if from == to {
            return Ok(Self {
                inner: None,
                pending: Vec::new(),
                skip: 0,
                from,
                to,
                total_in: 0,
                total_out: 0,
            });
        }
        let chunk = (from as usize / 50).max(64);
        let inner =
            FftFixedIn::<f32>::new(from as usize, to as usize, chunk, 1, 1).map_err(|e| {
                AudioError::Unsupported(format!("cannot resample {from} -> {to} Hz: {e}"))
            })?;
        let skip = inner.output_delay();
        Ok(Self {
            inner: Some(inner),
            pending: Vec::new(),
            skip,
            from,
            to,
            total_in: 0,
            total_out: 0,
        })
    }

    /// Feeds samples; returns what is ready. Samples outside [-1, 1] are clipped and NaN or
    /// infinite ones become silence: the FFT would spread one over the whole block (and rubato
    /// panics on it).
    pub fn push(&mut self, input: &[f32]) -> Vec<f32> {
        let clean = input.iter().map(|&s| {
            if s.is_finite() {
                s.clamp(-1.0, 1.0)
            } else {
                0.0
            }
        });
        let Some(inner) = self.inner.as_mut() else {
            return clean.collect();
        };
        self.total_in += input.len() as u64;
        self.pending.extend(clean);
        let mut out = Vec::new();
        let mut start = 0;
        loop {
            let need = inner.input_frames_next();
            if self.pending.len() - start < need {
                break;
            }
            if let Ok(block) = inner.process(&[&self.pending[start..start + need]], None) {
                out.extend_from_slice(&block[0]);
            }
            start += need;
        }
        self.pending.drain(..start);
        let out = self.trim_delay(out);
        self.total_out += out.len() as u64;
        out
    }

    /// Flushes what is buffered (end of stream).
    pub fn finish(&mut self) -> Vec<f32> {
        let Some(inner) = self.inner.as_mut() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let pending = std::mem::take(&mut self.pending);
        if !pending.is_empty() {
            if let Ok(block) = inner.process_partial(Some(&[&pending[..]]), None) {
                out.extend_from_slice(&block[0]);
            }
        }
        // One more empty block pushes the delayed tail out.
        if let Ok(block) = inner.process_partial::<&[f32]>(None, None) {
            out.extend_from_slice(&block[0]);
        }
        let mut out = self.trim_delay(out);
        // Exactly `total_in * to / from` samples over the whole stream.
        let expected = self.total_in * u64::from(self.to) / u64::from(self.from);
        let left = expected.saturating_sub(self.total_out) as usize;
        out.resize(left, 0.0);
        self.total_out += out.len() as u64;
        out
    }

    fn trim_delay(&mut self, mut out: Vec<f32>) -> Vec<f32> {
        let n = self.skip.min(out.len());
        self.skip -= n;
        out.drain(..n);
        out
    }
}

/// Resamples a whole buffer; the output length is `input.len() * to / from` (rounded).
pub fn resample(input: &[f32], from: u32, to: u32) -> Result<Vec<f32>, AudioError> {
    if from == to || input.is_empty() {
        return Ok(input.to_vec());
    }
    let mut r = StreamResampler::new(from, to)?;
    let mut out = r.push(input);
    out.extend(r.finish());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f32, rate: u32, secs: f32) -> Vec<f32> {
        (0..(rate as f32 * secs) as usize)
            .map(|i| (i as f32 * freq * std::f32::consts::TAU / rate as f32).sin() * 0.5)
            .collect()
    }

    #[test]
    fn whole_buffer_keeps_length_and_tone() {
        let x = sine(440.0, 48_000, 1.0);
        let y = resample(&x, 48_000, 16_000).unwrap();
        assert_eq!(y.len(), 16_000);
        // Zero crossings of a 440 Hz tone over one second: about 880.
        let crossings = y.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count();
        assert!((435..=445).contains(&crossings), "{crossings}");
    }

    #[test]
    fn non_finite_and_loud_input_is_cleaned_not_a_panic() {
        let mut x = sine(300.0, 48_000, 0.1);
        x[7] = f32::NAN;
        x[9] = f32::INFINITY;
        x[11] = 3.0e38;
        let y = resample(&x, 48_000, 16_000).unwrap();
        assert_eq!(y.len(), 1600);
        assert!(y.iter().all(|s| s.is_finite()));
    }

    #[test]
    fn streaming_in_odd_chunks_matches_length() {
        let x = sine(300.0, 8_000, 2.0);
        let mut r = StreamResampler::new(8_000, 16_000).unwrap();
        let mut out = Vec::new();
        for chunk in x.chunks(333) {
            out.extend(r.push(chunk));
        }
        out.extend(r.finish());
        assert_eq!(out.len(), 32_000);
    }
}
