//! Joining pieces of one phrase that a voice spoke separately. A voice ends every piece as if a
//! sentence ended there (Piper: 200-350 ms of silence) and starts each after a breath of silence
//! (about 50 ms); where a reply was cut between two words, that adds up to a pause in mid-phrase.
//! [`Seam`] trims those edges to a few milliseconds and fades what it keeps to zero, so the cut
//! neither pauses nor clicks. It works on a piece's audio as it streams in: quiet audio at the
//! end is held back until louder audio follows it or the piece ends.

/// Samples quieter than this (-40 dBFS) are silence at a piece's edges.
const QUIET: f32 = 0.01;
/// Silence kept before a piece's first sound, where it continues the piece before.
pub const LEAD_KEEP_MS: u32 = 20;
/// Silence kept after a piece's last sound, where the next piece continues it.
pub const TAIL_KEEP_MS: u32 = 40;

fn loud(s: &f32) -> bool {
    s.abs() >= QUIET
}

fn ms_to_samples(ms: u32, rate: u32) -> usize {
    (u64::from(rate) * u64::from(ms) / 1000) as usize
}

/// Trims the silence at one piece's start and/or end.
#[derive(Debug)]
pub struct Seam {
    /// Samples of silence to keep before the first sound; `None` leaves the start alone.
    lead_keep: Option<usize>,
    /// Samples of silence to keep after the last sound; `None` leaves the end alone.
    tail_keep: Option<usize>,
    /// The first sound has been heard (or the start is left alone).
    started: bool,
    /// Quiet samples not yet released: the silence so far before the first sound, or the
    /// silence so far after the last one.
    held: Vec<f32>,
}

impl Seam {
    /// A seam for audio at `rate`: `trim_start` when the piece continues the one before,
    /// `trim_end` when the next piece continues this one.
    pub fn new(rate: u32, trim_start: bool, trim_end: bool) -> Self {
        Seam {
            lead_keep: trim_start.then(|| ms_to_samples(LEAD_KEEP_MS, rate)),
            tail_keep: trim_end.then(|| ms_to_samples(TAIL_KEEP_MS, rate)),
            started: !trim_start,
            held: Vec::new(),
        }
    }

    /// The next chunk of the piece; returns the audio that may be played now.
    pub fn push(&mut self, chunk: &[f32]) -> Vec<f32> {
        let mut audio = std::mem::take(&mut self.held);
        audio.extend_from_slice(chunk);
        if !self.started {
            let keep = self.lead_keep.unwrap_or(0);
            let Some(first) = audio.iter().position(loud) else {
                // Still silence: remember only as much as will be kept.
                let from = audio.len().saturating_sub(keep);
                self.held = audio.split_off(from);
                return Vec::new();
            };
            self.started = true;
            audio.drain(..first.saturating_sub(keep));
            let kept = first.min(keep);
            fade(&mut audio[..kept], true);
        }
        if self.tail_keep.is_some() {
            let end = audio.iter().rposition(loud).map_or(0, |i| i + 1);
            self.held = audio.split_off(end);
        }
        audio
    }

    /// The piece has ended: the rest of its audio, faded out where the next piece joins.
    pub fn finish(&mut self) -> Vec<f32> {
        let mut rest = std::mem::take(&mut self.held);
        if let Some(keep) = self.tail_keep {
            rest.truncate(keep);
            fade(&mut rest, false);
        } else if !self.started {
            fade(&mut rest, true);
        }
        rest
    }
}

/// A linear fade over all of `audio`, in (from silence) or out (to silence).
fn fade(audio: &mut [f32], fade_in: bool) {
    let n = audio.len();
    for (i, s) in audio.iter_mut().enumerate() {
        let gain = if fade_in { i + 1 } else { n - i - 1 } as f32 / n as f32;
        *s *= gain;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 16_000;

    fn ms(n: u32) -> usize {
        ms_to_samples(n, RATE)
    }

    fn tone(len_ms: u32) -> Vec<f32> {
        (0..ms(len_ms))
            .map(|i| 0.3 * (i as f32 * 220.0 * std::f32::consts::TAU / RATE as f32).sin())
            .collect()
    }

    /// A piece the way a voice speaks it: silence, sound, silence, with a faint hiss in the
    /// silence (under the threshold) so trimming has something to cut.
    fn piece(lead_ms: u32, sound_ms: u32, tail_ms: u32) -> Vec<f32> {
        let hiss = |n: u32| (0..ms(n)).map(|i| if i % 2 == 0 { 0.004 } else { -0.004 });
        let mut v: Vec<f32> = hiss(lead_ms).collect();
        v.extend(tone(sound_ms));
        v.extend(hiss(tail_ms));
        v
    }

    /// Runs `audio` through `seam` in chunks of `size` samples.
    fn run(mut seam: Seam, audio: &[f32], size: usize) -> Vec<f32> {
        let mut out = Vec::new();
        for chunk in audio.chunks(size) {
            out.extend(seam.push(chunk));
        }
        out.extend(seam.finish());
        out
    }

    /// Lengths (ms) of the quiet runs longer than 5 ms.
    fn pauses(audio: &[f32]) -> Vec<u32> {
        let mut out = Vec::new();
        let mut run = 0;
        for s in audio.iter().chain([1.0].iter()) {
            if loud(s) {
                if run > ms(5) {
                    out.push((run * 1000 / RATE as usize) as u32);
                }
                run = 0;
            } else {
                run += 1;
            }
        }
        out
    }

    /// Largest jump between neighbouring samples.
    fn max_step(audio: &[f32]) -> f32 {
        audio
            .windows(2)
            .map(|w| (w[1] - w[0]).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn untrimmed_audio_passes_unchanged() {
        let audio = piece(50, 300, 300);
        for size in [1, 100, 7_000, audio.len()] {
            assert_eq!(run(Seam::new(RATE, false, false), &audio, size), audio);
        }
    }

    #[test]
    fn edges_are_trimmed_and_faded_whatever_the_chunking() {
        let audio = piece(50, 300, 300);
        let whole = run(Seam::new(RATE, true, true), &audio, audio.len());
        // The tone's first sample is 0, so the sound starts a sample late.
        assert_eq!(whole.len(), ms(LEAD_KEEP_MS + 300 + TAIL_KEEP_MS) - 1);
        assert_eq!(pauses(&whole), vec![LEAD_KEEP_MS, TAIL_KEEP_MS]);
        assert!(whole[0].abs() < 1e-3 && whole[whole.len() - 1].abs() < 1e-3);
        for size in [1, 37, 160, 5_000] {
            assert_eq!(run(Seam::new(RATE, true, true), &audio, size), whole);
        }
        // Only the end, or only the start.
        let end = run(Seam::new(RATE, false, true), &audio, 160);
        assert_eq!(pauses(&end), vec![50, TAIL_KEEP_MS]);
        let start = run(Seam::new(RATE, true, false), &audio, 160);
        assert_eq!(pauses(&start), vec![LEAD_KEEP_MS, 300]);
    }

    #[test]
    fn pauses_inside_a_piece_are_kept() {
        let mut audio = piece(50, 200, 120);
        audio.extend(piece(0, 200, 300));
        let out = run(Seam::new(RATE, true, true), &audio, 333);
        assert_eq!(pauses(&out), vec![LEAD_KEEP_MS, 120, TAIL_KEEP_MS]);
    }

    /// Two pieces of one phrase, each with the silence a voice puts around a sentence, join
    /// with a short pause and no click.
    #[test]
    fn pieces_join_without_a_long_pause_or_a_click() {
        let first = piece(50, 400, 300);
        let second = piece(60, 400, 300);
        let mut joined = run(Seam::new(RATE, false, true), &first, 512);
        let join = joined.len();
        joined.extend(run(Seam::new(RATE, true, false), &second, 512));
        assert_eq!(pauses(&joined), vec![50, LEAD_KEEP_MS + TAIL_KEEP_MS, 300]);
        // No jump bigger than the pieces already had, and at the join only hiss-sized steps.
        let input: Vec<f32> = first.iter().chain(&second).copied().collect();
        assert!(max_step(&joined) <= max_step(&input));
        let around = &joined[join - ms(30)..join + ms(15)];
        assert!(max_step(around) <= 0.008 + 1e-6, "{}", max_step(around));
    }

    #[test]
    fn a_silent_piece_keeps_no_more_than_its_edge() {
        let silence = vec![0.001; ms(500)];
        let out = run(Seam::new(RATE, true, true), &silence, 100);
        assert!(out.len() <= ms(LEAD_KEEP_MS), "{}", out.len());
        assert!(run(Seam::new(RATE, false, true), &[], 100).is_empty());
    }
}
