//! Energy-based speech detector on 16 kHz audio in 20 ms frames: speech starts after
//! `min_speech` of frames above the threshold and stops after `silence` of frames below it.

use std::time::Duration;

use super::ENGINE_RATE;

const FRAME: usize = (ENGINE_RATE / 50) as usize;

/// A change of state, with its offset in the call's input stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    SpeechStarted { at_ms: u64 },
    SpeechStopped { at_ms: u64 },
}

#[derive(Debug, Clone, Copy)]
pub struct VadParams {
    /// Frame level (dBFS, RMS) above which a frame counts as speech.
    pub threshold_db: f32,
    /// Continuous speech needed before `SpeechStarted`.
    pub min_speech: Duration,
    /// Continuous silence that ends speech.
    pub silence: Duration,
}

pub struct EnergyVad {
    params: VadParams,
    pending: Vec<f32>,
    in_speech: bool,
    run_frames: u64,
    frames_seen: u64,
}

fn frames_for(d: Duration) -> u64 {
    (d.as_millis() as u64 / 20).max(1)
}

/// RMS level of a frame in dBFS.
pub fn level_db(frame: &[f32]) -> f32 {
    if frame.is_empty() {
        return -120.0;
    }
    let mean_sq = frame.iter().map(|s| s * s).sum::<f32>() / frame.len() as f32;
    10.0 * mean_sq.max(1e-12).log10()
}

impl EnergyVad {
    pub fn new(params: VadParams) -> Self {
        Self {
            params,
            pending: Vec::with_capacity(FRAME),
            in_speech: false,
            run_frames: 0,
            frames_seen: 0,
        }
    }

    pub fn in_speech(&self) -> bool {
        self.in_speech
    }

    /// Feeds 16 kHz samples; returns the state changes they caused.
    pub fn push(&mut self, samples: &[f32]) -> Vec<VadEvent> {
        let mut events = Vec::new();
        for &s in samples {
            self.pending.push(s);
            if self.pending.len() == FRAME {
                let speech = level_db(&self.pending) > self.params.threshold_db;
                self.pending.clear();
                self.frames_seen += 1;
                if let Some(e) = self.step(speech) {
                    events.push(e);
                }
            }
        }
        events
    }

    fn step(&mut self, speech: bool) -> Option<VadEvent> {
        if speech != self.in_speech {
            self.run_frames += 1;
        } else {
            self.run_frames = 0;
        }
        let needed = if self.in_speech {
            frames_for(self.params.silence)
        } else {
            frames_for(self.params.min_speech)
        };
        if self.run_frames < needed {
            return None;
        }
        // The change happened where the run began.
        let at_ms = (self.frames_seen - self.run_frames) * 20;
        self.in_speech = speech;
        self.run_frames = 0;
        Some(if speech {
            VadEvent::SpeechStarted { at_ms }
        } else {
            VadEvent::SpeechStopped { at_ms }
        })
    }

    /// Forgets the current state (after a turn was committed by other means).
    pub fn reset(&mut self) {
        self.in_speech = false;
        self.run_frames = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> VadParams {
        VadParams {
            threshold_db: -40.0,
            min_speech: Duration::from_millis(60),
            silence: Duration::from_millis(400),
        }
    }

    fn tone(ms: usize, amp: f32) -> Vec<f32> {
        (0..ms * 16).map(|i| (i as f32 * 0.3).sin() * amp).collect()
    }

    #[test]
    fn speech_then_silence_gives_start_and_stop_at_the_right_offsets() {
        let mut v = EnergyVad::new(params());
        let mut audio = tone(500, 0.0);
        audio.extend(tone(1000, 0.3));
        audio.extend(tone(1000, 0.0));
        let events = v.push(&audio);
        assert_eq!(
            events,
            vec![
                VadEvent::SpeechStarted { at_ms: 500 },
                VadEvent::SpeechStopped { at_ms: 1500 }
            ]
        );
    }

    #[test]
    fn short_clicks_and_quiet_noise_are_not_speech() {
        let mut v = EnergyVad::new(params());
        let mut audio = tone(20, 0.5);
        audio.extend(tone(500, 0.001));
        assert!(v.push(&audio).is_empty());
        assert!(!v.in_speech());
    }

    #[test]
    fn a_pause_shorter_than_silence_does_not_end_speech() {
        let mut v = EnergyVad::new(params());
        let mut audio = tone(300, 0.3);
        audio.extend(tone(200, 0.0));
        audio.extend(tone(300, 0.3));
        let events = v.push(&audio);
        assert_eq!(events, vec![VadEvent::SpeechStarted { at_ms: 0 }]);
    }
}
