//! Voice activity detection on 16 kHz audio. A [`SpeechScorer`] gives each fixed-length frame a
//! speech probability (the Silero model in `silero`, or frame energy here); the
//! [`TurnDetector`] turns those scores into the caller's utterances: where speech started, where
//! it paused, whether it came back, and where it stopped. `smart_turn` judges, at a pause,
//! whether what was said so far is a complete turn.

pub mod silero;
pub mod smart_turn;

use super::ENGINE_RATE;

/// Scores audio frame by frame.
pub trait SpeechScorer: Send {
    /// Samples per frame at 16 kHz.
    fn frame_len(&self) -> usize;
    /// Feeds samples; returns the speech probability (0-1) of each frame they completed.
    fn push(&mut self, samples: &[f32]) -> Result<Vec<f32>, String>;
    /// Forgets all state.
    fn reset(&mut self);
}

/// RMS level of a frame in dBFS.
pub fn level_db(frame: &[f32]) -> f32 {
    if frame.is_empty() {
        return -120.0;
    }
    let mean_sq = frame
        .iter()
        .map(|s| if s.is_finite() { s * s } else { 0.0 })
        .sum::<f32>()
        / frame.len() as f32;
    10.0 * mean_sq.max(1e-12).log10()
}

/// 20 ms frames whose level is above a threshold count as speech (probability 1), others not.
pub struct EnergyScorer {
    threshold_db: f32,
    pending: Vec<f32>,
}

const ENERGY_FRAME: usize = (ENGINE_RATE / 50) as usize;

impl EnergyScorer {
    pub fn new(threshold_db: f32) -> Self {
        Self {
            threshold_db,
            pending: Vec::with_capacity(ENERGY_FRAME),
        }
    }
}

impl SpeechScorer for EnergyScorer {
    fn frame_len(&self) -> usize {
        ENERGY_FRAME
    }

    fn push(&mut self, samples: &[f32]) -> Result<Vec<f32>, String> {
        let mut out = Vec::with_capacity((self.pending.len() + samples.len()) / ENERGY_FRAME);
        for &s in samples {
            self.pending.push(s);
            if self.pending.len() == ENERGY_FRAME {
                let speech = level_db(&self.pending) > self.threshold_db;
                out.push(if speech { 1.0 } else { 0.0 });
                self.pending.clear();
            }
        }
        Ok(out)
    }

    fn reset(&mut self) {
        self.pending.clear();
    }
}

/// A change in the caller's speech, with offsets in ms of the call's input stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// Speech began at `at_ms` (it has lasted `min_speech` by now).
    Started { at_ms: u64 },
    /// Speech has been silent since `at_ms` for `pause` (the turn may be ending).
    Paused { at_ms: u64 },
    /// Speech has been silent since `at_ms` for `check`: time to ask the end-of-turn model
    /// whether the turn is complete (semantic mode).
    Check { at_ms: u64 },
    /// Speech came back after a `Paused` or a `Check`.
    Resumed,
    /// Silent since `at_ms` for `silence`: the utterance is over.
    Stopped { at_ms: u64 },
}

/// Timing rules of the detector, in ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorParams {
    /// Probability at or above which a frame is speech.
    pub threshold: f32,
    /// Speech needed before `Started`.
    pub min_speech_ms: u64,
    /// Silence that gives `Paused` (0: never).
    pub pause_ms: u64,
    /// Silence that gives `Check` (0: never).
    pub check_ms: u64,
    /// Silence that gives `Stopped`.
    pub silence_ms: u64,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Idle {
        /// Start of the current run of speech frames, if any.
        run_start: Option<u64>,
    },
    Speech {
        start: u64,
        /// End of the last speech frame.
        voiced_end: u64,
        /// Start of the current run of silent frames, if any.
        silent_since: Option<u64>,
        paused: bool,
        checked: bool,
    },
}

/// Turns per-frame speech probabilities into utterances.
pub struct TurnDetector {
    scorer: Box<dyn SpeechScorer>,
    params: DetectorParams,
    state: State,
    /// Samples scored so far (the input stream's clock).
    clock: u64,
    /// Samples fed so far (scored, or waiting in the scorer for a whole frame).
    fed: u64,
}

fn ms_of(samples: u64) -> u64 {
    samples * 1000 / u64::from(ENGINE_RATE)
}

impl TurnDetector {
    pub fn new(scorer: Box<dyn SpeechScorer>, params: DetectorParams) -> Self {
        Self {
            scorer,
            params,
            state: State::Idle { run_start: None },
            clock: 0,
            fed: 0,
        }
    }

    /// A detector whose clock starts at `samples` into the stream (when detection is turned on
    /// mid-call).
    pub fn starting_at(mut self, samples: u64) -> Self {
        self.clock = samples;
        self.fed = samples;
        self
    }

    pub fn set_params(&mut self, params: DetectorParams) {
        self.params = params;
    }

    /// Swaps the scorer (a mode change); the stream's clock goes on.
    pub fn set_scorer(&mut self, scorer: Box<dyn SpeechScorer>) {
        self.scorer = scorer;
        self.clock = self.fed;
        self.state = State::Idle { run_start: None };
    }

    pub fn in_speech(&self) -> bool {
        matches!(self.state, State::Speech { .. })
    }

    /// Length of the current utterance's speech so far (start to the last speech frame), in ms.
    pub fn speech_ms(&self) -> u64 {
        match self.state {
            State::Speech {
                start, voiced_end, ..
            } => ms_of(voiced_end - start),
            State::Idle { .. } => 0,
        }
    }

    /// Feeds 16 kHz samples; returns what changed, in order. A scorer failure is returned as an
    /// error and the samples count as silence.
    pub fn push(&mut self, samples: &[f32]) -> Result<Vec<VadEvent>, String> {
        let frame = self.scorer.frame_len() as u64;
        self.fed += samples.len() as u64;
        let scores = match self.scorer.push(samples) {
            Ok(s) => s,
            Err(e) => {
                // The scorer starts afresh; the clock skips to the end of what was fed.
                self.scorer.reset();
                self.clock = self.fed;
                return Err(e);
            }
        };
        let mut events = Vec::new();
        for p in scores {
            let start = self.clock;
            self.clock += frame;
            self.step(p, start, &mut events);
        }
        Ok(events)
    }

    fn step(&mut self, p: f32, frame_start: u64, events: &mut Vec<VadEvent>) {
        let speech = p >= self.params.threshold;
        // Below this a frame is silence; between the two it keeps the current state (hysteresis).
        let quiet = p < (self.params.threshold - 0.15).max(0.01);
        let now = self.clock;
        match &mut self.state {
            State::Idle { run_start } => {
                if !speech {
                    *run_start = None;
                    return;
                }
                let s = *run_start.get_or_insert(frame_start);
                if ms_of(now - s) >= self.params.min_speech_ms {
                    events.push(VadEvent::Started { at_ms: ms_of(s) });
                    self.state = State::Speech {
                        start: s,
                        voiced_end: now,
                        silent_since: None,
                        paused: false,
                        checked: false,
                    };
                }
            }
            State::Speech {
                voiced_end,
                silent_since,
                paused,
                checked,
                ..
            } => {
                if speech || (!quiet && silent_since.is_none()) {
                    *voiced_end = now;
                    *silent_since = None;
                    let was_paused = std::mem::take(paused);
                    if std::mem::take(checked) || was_paused {
                        events.push(VadEvent::Resumed);
                    }
                    return;
                }
                let since = *silent_since.get_or_insert(*voiced_end);
                let silent = ms_of(now - since);
                if silent >= self.params.silence_ms {
                    events.push(VadEvent::Stopped {
                        at_ms: ms_of(since),
                    });
                    self.state = State::Idle { run_start: None };
                    return;
                }
                if self.params.pause_ms > 0 && silent >= self.params.pause_ms && !*paused {
                    *paused = true;
                    events.push(VadEvent::Paused {
                        at_ms: ms_of(since),
                    });
                }
                if self.params.check_ms > 0 && silent >= self.params.check_ms && !*checked {
                    *checked = true;
                    events.push(VadEvent::Check {
                        at_ms: ms_of(since),
                    });
                }
            }
        }
    }

    /// Ends the utterance in progress now if the caller is silent (the end-of-turn model
    /// found it complete): the `Stopped` its silence would have given later. `None` while they
    /// speak or when no utterance is in progress.
    pub fn end_turn(&mut self) -> Option<VadEvent> {
        match self.state {
            State::Speech {
                silent_since: Some(since),
                ..
            } => {
                self.state = State::Idle { run_start: None };
                Some(VadEvent::Stopped {
                    at_ms: ms_of(since),
                })
            }
            _ => None,
        }
    }

    /// True while the caller is silent after speech, waiting for the turn to end.
    pub fn in_pause(&self) -> bool {
        matches!(
            self.state,
            State::Speech {
                silent_since: Some(_),
                ..
            }
        )
    }

    /// Ends any utterance in progress without an event (after `commit`).
    pub fn reset(&mut self) {
        self.state = State::Idle { run_start: None };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> DetectorParams {
        DetectorParams {
            threshold: 0.5,
            min_speech_ms: 60,
            pause_ms: 200,
            check_ms: 0,
            silence_ms: 400,
        }
    }

    fn energy() -> TurnDetector {
        TurnDetector::new(Box::new(EnergyScorer::new(-40.0)), params())
    }

    fn tone(ms: usize, amp: f32) -> Vec<f32> {
        (0..ms * 16).map(|i| (i as f32 * 0.3).sin() * amp).collect()
    }

    #[test]
    fn speech_then_silence_gives_start_pause_and_stop_at_the_right_offsets() {
        let mut v = energy();
        let mut audio = tone(500, 0.0);
        audio.extend(tone(1000, 0.3));
        audio.extend(tone(1000, 0.0));
        let events = v.push(&audio).unwrap();
        assert_eq!(
            events,
            vec![
                VadEvent::Started { at_ms: 500 },
                VadEvent::Paused { at_ms: 1500 },
                VadEvent::Stopped { at_ms: 1500 }
            ]
        );
    }

    #[test]
    fn short_clicks_and_quiet_noise_are_not_speech() {
        let mut v = energy();
        let mut audio = tone(20, 0.5);
        audio.extend(tone(500, 0.001));
        assert!(v.push(&audio).unwrap().is_empty());
        assert!(!v.in_speech());
    }

    #[test]
    fn a_short_pause_resumes_and_does_not_end_speech() {
        let mut v = energy();
        let mut audio = tone(300, 0.3);
        audio.extend(tone(300, 0.0));
        audio.extend(tone(300, 0.3));
        let events = v.push(&audio).unwrap();
        assert_eq!(
            events,
            vec![
                VadEvent::Started { at_ms: 0 },
                VadEvent::Paused { at_ms: 300 },
                VadEvent::Resumed
            ]
        );
        assert!(v.in_speech());
        assert_eq!(v.speech_ms(), 900);
    }

    #[test]
    fn chunking_does_not_change_the_events() {
        let mut audio = tone(200, 0.0);
        audio.extend(tone(700, 0.3));
        audio.extend(tone(900, 0.0));
        let whole = energy().push(&audio).unwrap();
        let mut v = energy();
        let mut chunked = Vec::new();
        for c in audio.chunks(333) {
            chunked.extend(v.push(c).unwrap());
        }
        assert_eq!(whole, chunked);
    }

    #[test]
    fn a_check_comes_once_per_pause_and_the_turn_can_end_there() {
        let mut v = TurnDetector::new(
            Box::new(EnergyScorer::new(-40.0)),
            DetectorParams {
                check_ms: 300,
                silence_ms: 2000,
                ..params()
            },
        );
        let mut audio = tone(500, 0.3);
        audio.extend(tone(400, 0.0));
        audio.extend(tone(500, 0.3));
        audio.extend(tone(400, 0.0));
        let events = v.push(&audio).unwrap();
        assert_eq!(
            events,
            vec![
                VadEvent::Started { at_ms: 0 },
                VadEvent::Paused { at_ms: 500 },
                VadEvent::Check { at_ms: 500 },
                VadEvent::Resumed,
                VadEvent::Paused { at_ms: 1400 },
                VadEvent::Check { at_ms: 1400 },
            ]
        );
        assert!(v.in_pause());
        assert_eq!(v.end_turn(), Some(VadEvent::Stopped { at_ms: 1400 }));
        assert!(!v.in_speech());
        assert_eq!(v.end_turn(), None);
        // Without a verdict the long silence ends the turn.
        let mut v = TurnDetector::new(
            Box::new(EnergyScorer::new(-40.0)),
            DetectorParams {
                check_ms: 300,
                silence_ms: 2000,
                ..params()
            },
        );
        let mut audio = tone(500, 0.3);
        audio.extend(tone(2500, 0.0));
        let events = v.push(&audio).unwrap();
        assert_eq!(events.last(), Some(&VadEvent::Stopped { at_ms: 500 }));
    }

    #[test]
    fn a_turn_is_not_ended_while_the_caller_speaks() {
        let mut v = energy();
        v.push(&tone(500, 0.3)).unwrap();
        assert!(v.in_speech() && !v.in_pause());
        assert_eq!(v.end_turn(), None);
        assert!(v.in_speech());
    }

    /// Scores from a list, one per 32 ms frame, like the neural model.
    struct Scripted(Vec<f32>, Vec<f32>);

    impl SpeechScorer for Scripted {
        fn frame_len(&self) -> usize {
            512
        }
        fn push(&mut self, samples: &[f32]) -> Result<Vec<f32>, String> {
            self.1.extend_from_slice(samples);
            let n = self.1.len() / 512;
            self.1.drain(..n * 512);
            Ok(self.0.drain(..n.min(self.0.len())).collect())
        }
        fn reset(&mut self) {}
    }

    #[test]
    fn hysteresis_keeps_middling_frames_in_speech() {
        let mut scores = vec![0.9; 5];
        scores.extend([0.4; 20]); // between threshold-0.15 and threshold: still speech
        scores.extend([0.1; 20]);
        let mut v = TurnDetector::new(Box::new(Scripted(scores, vec![])), params());
        let events = v.push(&vec![0.0; 45 * 512]).unwrap();
        assert_eq!(
            events,
            vec![
                VadEvent::Started { at_ms: 0 },
                VadEvent::Paused { at_ms: 800 },
                VadEvent::Stopped { at_ms: 800 }
            ]
        );
    }
}
