//! Removes the agent's own voice from the caller's audio before speech detection sees it.
//!
//! The server knows exactly what it played: every piece of reply audio is given here as the
//! *reference*, placed on the caller's input timeline where it starts playing (right away, or
//! after the audio already queued, as a client playing in real time would). Its echo comes
//! back in the caller's audio some unknown time later (network both ways, the client's
//! buffers, the room): between 0 and [`MAX_DELAY_MS`], quieter and coloured by the speaker,
//! the room and the microphone.
//!
//! 1. **Delay.** While reference audio is playing, the caller's last [`WINDOW`] samples are
//!    cross-correlated with the reference over every delay (on 4 kHz copies, with the phase
//!    transform, `GCC-PHAT`, which gives speech a sharp peak), and the best delay is confirmed
//!    at full rate by its normalised correlation. Found once, it is kept for the call and
//!    checked again every second.
//! 2. **Echo path.** An adaptive filter ([`TAPS`] taps, normalised LMS) around that delay
//!    learns the gain and colour of the echo and subtracts its estimate from the caller's
//!    audio. It stops learning while the caller talks over the echo (double talk: the
//!    residual stays much louder than the echo estimate), so their voice is not learned away.
//!
//! What comes out is the caller's own voice (and noise), which is what the speech detector,
//! barge-in and the transcript get. With no reference playing, audio passes through untouched.

use std::collections::VecDeque;
use std::sync::Arc;

use realfft::num_complex::Complex32;
use realfft::{RealFftPlanner, RealToComplex};

use super::ENGINE_RATE;

/// The longest echo delay looked for.
pub const MAX_DELAY_MS: u64 = 1000;
const MAX_DELAY: usize = (ENGINE_RATE as u64 * MAX_DELAY_MS / 1000) as usize;
/// Caller audio correlated against the reference to find the delay (500 ms).
const WINDOW: usize = ENGINE_RATE as usize / 2;
/// Decimation for the delay search (16 kHz -> 4 kHz).
const DECIMATE: usize = 4;
/// FFT size of the decimated search: holds the window and every delay without wrapping.
const FFT_LEN: usize = 8192;
/// Taps of the echo-path filter (16 ms), starting [`PRE_TAPS`] before the found delay.
const TAPS: usize = 256;
const PRE_TAPS: usize = 32;
/// Normalised LMS step.
const STEP: f32 = 0.4;
/// How often the delay is searched: until found, and once found.
const SEARCH_EVERY: usize = ENGINE_RATE as usize / 50;
const RECHECK_EVERY: usize = ENGINE_RATE as usize;
/// Normalised correlation above which a delay is taken.
const MIN_CORRELATION: f32 = 0.35;
/// A correlation this close to the best one at 2-20 ms from it makes the delay ambiguous.
const AMBIGUITY: f32 = 0.9;
const AMBIGUITY_FROM: usize = ENGINE_RATE as usize / 500;
const AMBIGUITY_TO: usize = ENGINE_RATE as usize / 50;
/// Reference and caller audio this quiet (RMS) are not worth searching.
const MIN_RMS: f32 = 1e-3;
/// Reference audio held ahead of the caller's stream at most (a reply's audio comes faster
/// than it plays): 120 s.
const MAX_AHEAD: usize = ENGINE_RATE as usize * 120;
/// Blocks of the double-talk decision (10 ms).
const BLOCK: usize = ENGINE_RATE as usize / 100;
/// Sound from the caller's side while a reply plays, with no echo found in it, after which it
/// is taken for the caller's voice (a headset, a phone without echo): 250 ms. Until then it is
/// held back from speech detection, and given to it late, whole, once it is known not to be
/// echo: nothing the caller says is lost, their barge-in just comes up to this much later.
const NO_ECHO_AFTER: usize = ENGINE_RATE as usize / 4;
/// Caller audio held back at most, sound and the quiet between it (500 ms).
const MAX_HELD: usize = ENGINE_RATE as usize / 2;
/// Blocks with sound the filter learns from before its echo estimate is trusted (50 ms).
const MIN_LEARNED_BLOCKS: usize = 5;
/// Blocks of double talk in a row after which the echo is learned again (1.5 s).
const RELEARN_AFTER: usize = 150;
/// Blocks the filter stops learning for after double talk is seen (200 ms).
const DOUBLE_TALK_HOLD: usize = 20;

/// One chunk of caller audio after echo cancellation.
pub struct Processed {
    /// The caller's audio without the agent's echo (for the transcript).
    pub audio: Vec<f32>,
    /// What speech detection hears: the same, with silence where only echo is left. While
    /// it is not yet known whether the caller's sound is echo, it is held back, so this may be
    /// shorter than `audio`, and longer once what was held is let through; over time both
    /// cover the same stretch of the stream, [`EchoCanceller::held`] samples apart.
    pub detect: Vec<f32>,
}

/// What a block of the caller's audio is, after echo cancellation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Only the agent's echo (or quiet): detection hears silence.
    Echo,
    /// The caller's own sound.
    Voice,
    /// Sound that may be echo: held back until that is known.
    Unsure,
}

pub struct EchoCanceller {
    /// Reference samples; `reference[0]` is at input sample `ref_start`.
    reference: VecDeque<f32>,
    ref_start: u64,
    /// The caller's raw audio, the last `WINDOW` samples; `mic[0]` is at `mic_start`.
    mic: VecDeque<f32>,
    mic_start: u64,
    /// Input samples processed so far.
    received: u64,
    /// Found echo delay, in samples.
    delay: Option<usize>,
    taps: Vec<f32>,
    /// Samples until the next delay search.
    search_in: usize,
    /// Smoothed echo return loss enhancement; the filter has learned the echo once it is
    /// past 6 dB.
    erle: f32,
    converged: bool,
    /// Blocks left during which the filter does not learn (double talk).
    hold: usize,
    /// Samples of sound from the caller's side while this reply's reference played and no
    /// echo was found.
    unexplained: usize,
    /// Caller audio held back from detection while it may be echo.
    held: Vec<f32>,
    /// Blocks with sound the filter learned from, and blocks of double talk in a row.
    learned_blocks: usize,
    double_talk_blocks: usize,
    fft: Arc<dyn RealToComplex<f32>>,
    ifft: Arc<dyn realfft::ComplexToReal<f32>>,
}

impl Default for EchoCanceller {
    fn default() -> Self {
        Self::new()
    }
}

impl EchoCanceller {
    pub fn new() -> Self {
        let mut planner = RealFftPlanner::<f32>::new();
        Self {
            reference: VecDeque::new(),
            ref_start: 0,
            mic: VecDeque::with_capacity(WINDOW),
            mic_start: 0,
            received: 0,
            delay: None,
            taps: vec![0.0; TAPS],
            search_in: SEARCH_EVERY,
            erle: 1.0,
            converged: false,
            hold: 0,
            unexplained: 0,
            held: Vec::new(),
            learned_blocks: 0,
            double_talk_blocks: 0,
            fft: planner.plan_fft_forward(FFT_LEN),
            ifft: planner.plan_fft_inverse(FFT_LEN),
        }
    }

    /// The echo delay found, in ms.
    pub fn delay_ms(&self) -> Option<u64> {
        self.delay.map(|d| d as u64 * 1000 / u64::from(ENGINE_RATE))
    }

    fn ref_end(&self) -> u64 {
        self.ref_start + self.reference.len() as u64
    }

    /// Reply audio at 16 kHz, sent to the caller now: it plays from the caller's present
    /// moment, or after what is still playing.
    pub fn play(&mut self, samples: &[f32]) {
        if !self.active() {
            self.unexplained = 0;
        }
        if self.reference.is_empty() {
            self.ref_start = self.received;
        }
        // Silence between the last reply audio and now: the caller heard nothing.
        let gap = self.received.saturating_sub(self.ref_end()) as usize;
        self.reference
            .extend(std::iter::repeat_n(0.0, gap.min(MAX_AHEAD)));
        let room = (self.received + MAX_AHEAD as u64).saturating_sub(self.ref_end()) as usize;
        self.reference.extend(
            samples
                .iter()
                .take(room)
                .map(|s| if s.is_finite() { *s } else { 0.0 }),
        );
    }

    /// The reply was cut: the client stops playing now; what it already played may still echo.
    pub fn stop(&mut self) {
        let tail = self.delay.unwrap_or(MAX_DELAY) as u64;
        let keep = (self.received + tail).saturating_sub(self.ref_start) as usize;
        self.reference.truncate(keep);
    }

    /// True while reply audio may be echoing (played, within the longest delay).
    pub fn active(&self) -> bool {
        let reach = self.delay.map_or(MAX_DELAY, |d| d + TAPS);
        self.ref_end() + reach as u64 > self.received && !self.reference.is_empty()
    }

    /// The reference sample heard at input sample `at`, 0 outside it.
    fn reference_at(&self, at: i64) -> f32 {
        if at < self.ref_start as i64 {
            return 0.0;
        }
        self.reference
            .get((at - self.ref_start as i64) as usize)
            .copied()
            .unwrap_or(0.0)
    }

    /// Caller audio in: the audio with the agent's echo taken out, and what speech detection
    /// should hear of it (silence where it is, or may be, only the agent's echo).
    pub fn process(&mut self, input: &[f32]) -> Processed {
        let mut out = Processed {
            audio: Vec::with_capacity(input.len()),
            detect: Vec::with_capacity(input.len()),
        };
        for block in input.chunks(BLOCK) {
            let active = self.active();
            for &s in block {
                self.mic.push_back(s);
            }
            while self.mic.len() > WINDOW {
                self.mic.pop_front();
                self.mic_start += 1;
            }
            let start = out.audio.len();
            let verdict = if active {
                self.cancel_block(block, &mut out.audio)
            } else {
                out.audio.extend_from_slice(block);
                self.received += block.len() as u64;
                Verdict::Voice
            };
            let cleaned = &out.audio[start..];
            match verdict {
                Verdict::Echo => {
                    self.release(false, &mut out.detect);
                    out.detect.extend(std::iter::repeat_n(0.0, cleaned.len()));
                }
                Verdict::Voice => {
                    self.release(true, &mut out.detect);
                    out.detect.extend_from_slice(cleaned);
                }
                Verdict::Unsure => {
                    self.held.extend_from_slice(cleaned);
                    if self.held.len() >= MAX_HELD {
                        // Held too long without an echo found: the caller's.
                        self.unexplained = self.unexplained.max(NO_ECHO_AFTER);
                        self.release(true, &mut out.detect);
                    }
                }
            }
            self.search_in = self.search_in.saturating_sub(block.len());
            if active && self.search_in == 0 {
                self.search_in = if self.delay.is_some() {
                    RECHECK_EVERY
                } else {
                    SEARCH_EVERY
                };
                self.search_delay();
            }
            self.forget_played();
        }
        out
    }

    /// Samples of the caller's audio held back from detection.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Lets held audio through to detection: as it was (`voice`), or as silence (echo).
    fn release(&mut self, voice: bool, detect: &mut Vec<f32>) {
        if voice {
            detect.append(&mut self.held);
        } else {
            detect.extend(std::iter::repeat_n(0.0, self.held.len()));
            self.held.clear();
        }
    }

    /// Cancels the echo from one block and tells what is left.
    fn cancel_block(&mut self, block: &[f32], out: &mut Vec<f32>) -> Verdict {
        let Some(delay) = self.delay else {
            // No echo found yet: the block may be echo until the reference has played with
            // sound on the caller's side for a while and nothing correlated.
            out.extend_from_slice(block);
            self.received += block.len() as u64;
            return self.unexplained_block(block);
        };
        // The reference each sample of the block is filtered against: from `first` samples
        // before it back over the taps.
        let first = self.received as i64 - (delay as i64 - PRE_TAPS as i64);
        let span: Vec<f32> = (first - TAPS as i64 + 1..first + block.len() as i64)
            .map(|at| self.reference_at(at))
            .collect();
        let window = |i: usize| &span[i..i + TAPS];
        let filter = |taps: &[f32], x: &[f32]| -> f32 {
            // Tap k applies to the sample k before: the window runs oldest first.
            taps.iter().zip(x.iter().rev()).map(|(w, x)| w * x).sum()
        };
        // Double talk: once the filter has learned the echo, a residual much louder than the
        // echo estimate is the caller speaking; the filter must not learn their voice.
        let (mut e_pow, mut y_pow, mut m_pow) = (0f32, 0f32, 0f32);
        for (i, &m) in block.iter().enumerate() {
            let y = filter(&self.taps, window(i));
            e_pow += (m - y) * (m - y);
            y_pow += y * y;
            m_pow += m * m;
        }
        if self.converged && e_pow > 2.0 * y_pow + 1e-9 {
            self.hold = DOUBLE_TALK_HOLD;
            // Talk over the echo for this long is more likely an echo path that changed (a
            // speaker moved, a volume turned): learn again.
            self.double_talk_blocks += 1;
            if self.double_talk_blocks > RELEARN_AFTER {
                self.relearn();
            }
        } else {
            self.double_talk_blocks = 0;
        }
        let adapt = self.hold == 0;
        self.hold = self.hold.saturating_sub(1);
        let double_talk = e_pow > 2.0 * y_pow + 1e-9;
        let mut e_after = 0f32;
        for (i, &m) in block.iter().enumerate() {
            let x = window(i);
            let y = filter(&self.taps, x);
            let e = m - y;
            let norm: f32 = x.iter().map(|v| v * v).sum();
            if adapt && norm > 1e-6 {
                let g = STEP * e / (norm + 1e-3);
                for (w, xk) in self.taps.iter_mut().zip(x.iter().rev()) {
                    *w += g * xk;
                }
            }
            e_after += e * e;
            out.push(e);
        }
        self.received += block.len() as u64;
        let n = block.len().max(1) as f32;
        if adapt && m_pow / n > MIN_RMS * MIN_RMS {
            // Echo return loss enhancement over blocks with sound, smoothed: how far the echo
            // is pushed down.
            let erle = m_pow / (e_after + 1e-12);
            self.erle = 0.95 * self.erle + 0.05 * erle.min(1e4);
            self.learned_blocks += 1;
            self.converged = self.erle > 4.0 && self.learned_blocks >= MIN_LEARNED_BLOCKS;
        }
        // Left-over echo is still speech to a neural detector, however quiet: only a residual
        // well above the echo estimate (the caller talking over it) is let through. Until the
        // filter has learned the echo, sound is held back as while no echo was found.
        if self.converged {
            if double_talk {
                Verdict::Voice
            } else {
                Verdict::Echo
            }
        } else {
            self.unexplained_block(block)
        }
    }

    /// A block that may be echo (the last one received): unsure while it may still be, the
    /// caller's voice once their side has had sound for [`NO_ECHO_AFTER`] without the echo being
    /// found or learned, or at once when it is louder than anything the agent played within
    /// echo reach (an echo is never louder than its source).
    fn unexplained_block(&mut self, block: &[f32]) -> Verdict {
        if rms(block) < MIN_RMS {
            // Quiet: nothing to hear, but kept in order behind held sound.
            return if self.held.is_empty() {
                Verdict::Echo
            } else {
                Verdict::Unsure
            };
        }
        self.unexplained += block.len();
        if self.unexplained >= NO_ECHO_AFTER || peak(block) > self.reference_peak(block.len()) {
            self.unexplained = self.unexplained.max(NO_ECHO_AFTER);
            Verdict::Voice
        } else {
            Verdict::Unsure
        }
    }

    /// The loudest reference sample that can echo into the last `n` samples received.
    fn reference_peak(&self, n: usize) -> f32 {
        let to = self.received as i64;
        let from = to - (n + MAX_DELAY + TAPS) as i64;
        let lo = (from - self.ref_start as i64).max(0) as usize;
        let hi = ((to - self.ref_start as i64).max(0) as usize).min(self.reference.len());
        self.reference
            .range(lo.min(hi)..hi)
            .fold(0.0, |m, v| m.max(v.abs()))
    }

    /// Drops reference audio that can no longer echo into the search window or the filter.
    fn forget_played(&mut self) {
        let needed = self
            .mic_start
            .saturating_sub((MAX_DELAY + TAPS + WINDOW) as u64);
        while self.ref_start < needed && !self.reference.is_empty() {
            self.reference.pop_front();
            self.ref_start += 1;
        }
    }

    fn relearn(&mut self) {
        self.taps.fill(0.0);
        self.erle = 1.0;
        self.converged = false;
        self.learned_blocks = 0;
        self.double_talk_blocks = 0;
        self.hold = 0;
    }

    /// Looks for the delay at which the reference best explains the caller's last window.
    fn search_delay(&mut self) {
        if self.mic.len() < WINDOW {
            return;
        }
        let start = self.mic_start as i64;
        let mic: Vec<f32> = self.mic.iter().copied().collect();
        let span = WINDOW + MAX_DELAY;
        let reference: Vec<f32> = (0..span)
            .map(|j| self.reference_at(start - MAX_DELAY as i64 + j as i64))
            .collect();
        if rms(&mic) < MIN_RMS || rms(&reference) < MIN_RMS {
            return;
        }
        let Some(coarse) = self.coarse_delay(&mic, &reference) else {
            return;
        };
        // Refine at full rate around the coarse delays.
        let refine = |coarse: usize| {
            let mut best = (f32::MIN, 0usize);
            let lo = coarse.saturating_sub(DECIMATE * 2);
            let hi = (coarse + DECIMATE * 2).min(MAX_DELAY);
            for d in lo..=hi {
                let c = correlation(&mic, &reference[MAX_DELAY - d..MAX_DELAY - d + WINDOW]);
                if c > best.0 {
                    best = (c, d);
                }
            }
            best
        };
        let best = refine(coarse);
        let at = |d: usize| correlation(&mic, &reference[MAX_DELAY - d..MAX_DELAY - d + WINDOW]);
        let new = self.delay.is_none_or(|d| d.abs_diff(best.1) > PRE_TAPS / 2);
        // A steady tone matches one period later as well as it does at the delay: with no one
        // clear delay there is no echo to speak of (and taking one would cancel the caller's
        // own sound). Speech changes pitch over the window, so its echo matches at one delay.
        let ambiguous = new
            && best.0 >= MIN_CORRELATION
            && (AMBIGUITY_FROM..=AMBIGUITY_TO)
                .flat_map(|shift| [best.1.checked_sub(shift), Some(best.1 + shift)])
                .flatten()
                .filter(|d| *d <= MAX_DELAY)
                .any(|d| at(d) > AMBIGUITY * best.0);
        if best.0 >= MIN_CORRELATION && !ambiguous {
            let moved = self.delay.is_none_or(|d| d.abs_diff(best.1) > PRE_TAPS / 2);
            if moved {
                // Start the filter from the echo's gain at that delay (least squares), so
                // that it cancels from the first block and only has the colour left to learn.
                self.relearn();
                let r = &reference[MAX_DELAY - best.1..MAX_DELAY - best.1 + WINDOW];
                let rr: f32 = r.iter().map(|v| v * v).sum();
                let mr: f32 = mic.iter().zip(r).map(|(m, r)| m * r).sum();
                self.taps[PRE_TAPS] = if rr > 1e-9 { mr / rr } else { 0.0 };
                self.delay = Some(best.1);
            }
        }
    }

    /// The delay of the cross-correlation peak (GCC-PHAT on 4 kHz copies), in 16 kHz samples.
    fn coarse_delay(&self, mic: &[f32], reference: &[f32]) -> Option<usize> {
        let mut m = decimate(mic);
        let mut r = decimate(reference);
        m.resize(FFT_LEN, 0.0);
        r.resize(FFT_LEN, 0.0);
        let mut mf = self.fft.make_output_vec();
        let mut rf = self.fft.make_output_vec();
        self.fft.process(&mut m, &mut mf).ok()?;
        self.fft.process(&mut r, &mut rf).ok()?;
        let mut cross: Vec<Complex32> = mf
            .iter()
            .zip(&rf)
            .map(|(m, r)| {
                let c = m.conj() * r;
                let n = c.norm();
                if n > 1e-12 {
                    c / n
                } else {
                    Complex32::new(0.0, 0.0)
                }
            })
            .collect();
        // The inverse transform wants real first and last bins.
        if let Some(c) = cross.first_mut() {
            c.im = 0.0;
        }
        if let Some(c) = cross.last_mut() {
            c.im = 0.0;
        }
        let mut corr = self.ifft.make_output_vec();
        self.ifft.process(&mut cross, &mut corr).ok()?;
        // corr[k]: the window against the reference shifted by k, i.e. delay MAX_DELAY - k.
        let lags = MAX_DELAY / DECIMATE;
        let (k, _) = corr
            .iter()
            .take(lags + 1)
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))?;
        Some(MAX_DELAY - k * DECIMATE)
    }
}

fn peak(x: &[f32]) -> f32 {
    x.iter()
        .filter(|v| v.is_finite())
        .fold(0.0, |m, v| m.max(v.abs()))
}

fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt()
}

/// Normalised correlation of two equal-length signals.
fn correlation(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa <= 1e-12 || bb <= 1e-12 {
        return 0.0;
    }
    ab / (aa * bb).sqrt()
}

/// Averages of `DECIMATE` samples: a crude low-pass and a 4x shorter signal.
fn decimate(x: &[f32]) -> Vec<f32> {
    x.chunks(DECIMATE)
        .map(|c| c.iter().sum::<f32>() / c.len() as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Speech-like noise: filtered random samples with a slow loudness wobble.
    fn voice(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        let mut prev = 0.0f32;
        (0..n)
            .map(|i| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let white = ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5;
                prev = 0.6 * prev + white;
                let envelope = 0.5 + 0.5 * (i as f32 / 1600.0).sin().abs();
                prev * 0.3 * envelope
            })
            .collect()
    }

    fn power_db(x: &[f32]) -> f32 {
        10.0 * (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32 + 1e-12).log10()
    }

    /// Runs the canceller over `mic` in 100 ms chunks, the reference sent as one reply at the
    /// start.
    fn run(reference: &[f32], mic: &[f32]) -> (EchoCanceller, Vec<f32>) {
        let mut aec = EchoCanceller::new();
        aec.play(reference);
        let mut out = Vec::new();
        for chunk in mic.chunks(1600) {
            out.extend(aec.process(chunk).audio);
        }
        (aec, out)
    }

    fn echo_of(reference: &[f32], delay: usize, gain: f32, len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| {
                i.checked_sub(delay)
                    .and_then(|j| reference.get(j))
                    .map_or(0.0, |r| r * gain)
            })
            .collect()
    }

    #[test]
    fn finds_the_delay_and_removes_a_quieter_echo() {
        let reference = voice(16_000 * 4, 1);
        for (delay_ms, db) in [(150u64, -6.0f32), (250, -12.0)] {
            let delay = (delay_ms * 16) as usize;
            let gain = 10f32.powf(db / 20.0);
            let mic = echo_of(&reference, delay, gain, reference.len());
            let (aec, out) = run(&reference, &mic);
            let found = aec.delay_ms().expect("a delay");
            assert!(
                found.abs_diff(delay_ms) <= 1,
                "found {found} ms for {delay_ms}"
            );
            // After the first second the echo is at least 25 dB down.
            let tail = 16_000..reference.len();
            let before = power_db(&mic[tail.clone()]);
            let after = power_db(&out[tail]);
            assert!(
                before - after > 25.0,
                "{delay_ms} ms {db} dB: {before} -> {after}"
            );
        }
    }

    #[test]
    fn a_voice_over_the_echo_comes_through() {
        let reference = voice(16_000 * 4, 2);
        let caller = voice(16_000, 99);
        let mut mic = echo_of(&reference, 3200, 0.35, reference.len());
        // The caller talks from 2.5 s to 3.5 s.
        for (i, c) in caller.iter().enumerate() {
            mic[40_000 + i] += c;
        }
        let (_, out) = run(&reference, &mic);
        let talk = 40_000..56_000;
        let residual = &out[talk.clone()];
        let err: Vec<f32> = residual.iter().zip(&caller).map(|(o, c)| o - c).collect();
        // What is left is the caller: the remaining echo is far below their voice.
        assert!(
            power_db(&caller) - power_db(&err) > 15.0,
            "caller {} dB, left-over echo {} dB",
            power_db(&caller),
            power_db(&err)
        );
    }

    #[test]
    fn without_a_reference_audio_passes_untouched() {
        let mic = voice(16_000, 3);
        let mut aec = EchoCanceller::new();
        let out: Vec<f32> = mic
            .chunks(1000)
            .flat_map(|c| aec.process(c).audio)
            .collect();
        assert_eq!(out, mic);
        // Played and long gone: passes untouched again.
        aec.play(&voice(1600, 4));
        let _ = aec.process(&vec![0.0; 16_000 * 2 + 3200]);
        assert!(!aec.active());
        let p: Vec<_> = mic.chunks(1000).map(|c| aec.process(c)).collect();
        let audio: Vec<f32> = p.iter().flat_map(|p| p.audio.clone()).collect();
        let detect: Vec<f32> = p.iter().flat_map(|p| p.detect.clone()).collect();
        assert_eq!(audio, mic);
        assert_eq!(detect, mic);
    }

    #[test]
    fn bounded_and_safe_on_odd_input() {
        let mut aec = EchoCanceller::new();
        aec.play(&[f32::NAN, f32::INFINITY, 0.5]);
        aec.play(&vec![0.1; MAX_AHEAD * 2]);
        assert!(aec.reference.len() <= MAX_AHEAD);
        let out = aec.process(&[f32::NAN; 100]);
        assert_eq!(out.audio.len(), 100);
        assert_eq!(out.detect.len() + aec.held(), 100);
        aec.stop();
        assert!(aec.ref_end() <= aec.received + MAX_DELAY as u64);
    }

    #[test]
    fn a_steady_tone_is_not_taken_for_echo() {
        let tone = |n: usize, amp: f32| -> Vec<f32> {
            (0..n)
                .map(|i| (i as f32 * 440.0 * std::f32::consts::TAU / 16_000.0).sin() * amp)
                .collect()
        };
        let mut aec = EchoCanceller::new();
        aec.play(&tone(32_000, 0.3));
        let mic = tone(16_000, 0.3);
        let out: Vec<f32> = mic
            .chunks(1600)
            .flat_map(|c| aec.process(c).detect)
            .collect();
        assert_eq!(aec.delay_ms(), None);
        // Held back at first (it might have been echo), then heard, all of it.
        assert_eq!(aec.held(), 0);
        assert_eq!(out, mic);
    }

    #[test]
    fn a_voice_with_no_echo_is_held_back_then_heard_whole() {
        // A headset: the reply plays, the caller talks after its first second, none of the
        // reply comes back. The caller is quieter than the reply, so could be its echo.
        let reference = voice(16_000 * 3, 5);
        let mut caller = vec![0.0; 16_000];
        caller.extend(voice(16_000, 6).iter().map(|v| v * 0.5));
        let mut aec = EchoCanceller::new();
        aec.play(&reference);
        let mut detect = Vec::new();
        let mut lag = Vec::new();
        for chunk in caller.chunks(1600) {
            detect.extend(aec.process(chunk).detect);
            lag.push(aec.held());
        }
        // Held for NO_ECHO_AFTER of sound at most, then given to detection late but whole.
        assert!(lag[10] > 0, "{lag:?}");
        assert!(lag.iter().all(|h| *h <= NO_ECHO_AFTER), "{lag:?}");
        assert_eq!(aec.held(), 0);
        assert_eq!(detect, caller);
    }

    #[test]
    fn a_voice_louder_than_the_reply_is_heard_at_once() {
        let reference: Vec<f32> = voice(16_000 * 3, 7).iter().map(|v| v * 0.2).collect();
        let caller = voice(3200, 8);
        let mut aec = EchoCanceller::new();
        aec.play(&reference);
        let p = aec.process(&caller);
        assert_eq!(p.detect, caller);
        assert_eq!(aec.held(), 0);
    }

    #[test]
    fn held_echo_becomes_silence_once_found() {
        // An echo 6 dB down: what was held while the delay was searched turns to silence;
        // detection never hears it and ends level with the stream.
        let reference = voice(16_000 * 4, 9);
        let mic = echo_of(&reference, 2400, 0.5, reference.len());
        let mut aec = EchoCanceller::new();
        aec.play(&reference);
        let (mut audio, mut detect) = (0usize, Vec::new());
        for chunk in mic.chunks(1600) {
            let p = aec.process(chunk);
            audio += p.audio.len();
            detect.extend(p.detect);
        }
        assert!(aec.delay_ms().is_some());
        assert_eq!(detect.len() + aec.held(), audio);
        let loud = detect[16_000..].iter().filter(|v| v.abs() > 1e-3).count();
        assert!(loud < 800, "{loud} samples of echo heard");
    }
}
