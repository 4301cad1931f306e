//! The caller's side of a call: runs the turn detector over 16 kHz audio, and keeps the audio of the utterance in progress (with a little padding before speech
//! starts and after it stops), bounded in size.

use crate::audio::echo::EchoCanceller;
use crate::audio::vad::{
    smart_turn, DetectorParams, EnergyScorer, SpeechScorer, TurnDetector, VadEvent,
};
use crate::audio::ENGINE_RATE;
use crate::protocol::{DetectionMode, TurnDetection};

/// Audio kept after detected end of speech, when it has arrived.
const SUFFIX_MS: u64 = 250;
/// Audio kept while nobody speaks, beyond the padding and the speech needed to start.
const IDLE_MARGIN_MS: u64 = 500;

pub fn samples_for_ms(ms: u64) -> usize {
    (ms * u64::from(ENGINE_RATE) / 1000) as usize
}

/// What a chunk of audio caused.
#[derive(Debug)]
pub enum Heard {
    Started {
        at_ms: u64,
    },
    /// The caller went quiet at `at_ms`; `audio` is the utterance so far (for a speculative turn).
    Paused {
        at_ms: u64,
        audio: Vec<f32>,
    },
    /// The caller has been quiet since `at_ms` long enough to ask the end-of-turn model;
    /// `audio` is the utterance so far with the silence after it (its last 8 s at most).
    Check {
        at_ms: u64,
        audio: Vec<f32>,
    },
    Resumed,
    /// The utterance ended at `at_ms`; `speech_ms` is its length.
    Stopped {
        at_ms: u64,
        speech_ms: u64,
        audio: Vec<f32>,
    },
}

/// Makes a scorer for a detection mode; `None` for manual mode.
pub type ScorerFactory =
    dyn Fn(DetectionMode, &TurnDetection) -> Option<Box<dyn SpeechScorer>> + Send + Sync;

pub struct Listener {
    detector: Option<TurnDetector>,
    settings: TurnDetection,
    pause_ms: u64,
    /// Audio of the current utterance; `buffer[0]` is at `buffer_start` samples of the stream.
    buffer: Vec<f32>,
    buffer_start: u64,
    /// Samples received so far.
    received: u64,
    /// Speech length of the utterance in progress, kept at `Stopped`.
    speech_start_ms: u64,
    max_samples: usize,
    /// Takes the agent's own voice out of the caller's audio, when enabled.
    echo: Option<EchoCanceller>,
}

fn params(s: &TurnDetection, pause_ms: u64) -> DetectorParams {
    let semantic = s.mode == DetectionMode::Semantic;
    DetectorParams {
        threshold: match s.mode {
            DetectionMode::Energy => 0.5,
            _ => s.threshold,
        },
        min_speech_ms: s.min_speech_ms,
        pause_ms,
        // Semantic: the model is asked after a short pause; silence alone ends the turn only
        // at the longer limit.
        check_ms: if semantic { s.semantic_pause_ms } else { 0 },
        silence_ms: if semantic {
            s.semantic_max_silence_ms
        } else {
            s.silence_duration_ms
        },
    }
}

/// The energy detector as a scorer (also the fallback when the model is unavailable).
pub fn energy_scorer(s: &TurnDetection) -> Box<dyn SpeechScorer> {
    Box::new(EnergyScorer::new(s.energy_threshold_db))
}

impl Listener {
    /// `pause_ms`: silence after which a speculative turn may start (0: never).
    pub fn new(
        settings: TurnDetection,
        scorer: Option<Box<dyn SpeechScorer>>,
        pause_ms: u64,
        max_turn_ms: u64,
    ) -> Self {
        Self {
            detector: scorer.map(|s| TurnDetector::new(s, params(&settings, pause_ms))),
            settings,
            pause_ms,
            buffer: Vec::new(),
            buffer_start: 0,
            received: 0,
            speech_start_ms: 0,
            max_samples: samples_for_ms(max_turn_ms),
            echo: None,
        }
    }

    /// Cancels the agent's echo from the caller's audio before detection (reply audio is given
    /// through [`Listener::play`]).
    pub fn with_echo_cancellation(mut self, on: bool) -> Self {
        self.echo = on.then(EchoCanceller::new);
        self
    }

    /// Reply audio at 16 kHz, sent to the caller now (the echo reference).
    pub fn play(&mut self, samples: &[f32]) {
        if let Some(e) = &mut self.echo {
            e.play(samples);
        }
    }

    /// The reply was cut: the caller's client stops playing it.
    pub fn stop_playing(&mut self) {
        if let Some(e) = &mut self.echo {
            e.stop();
        }
    }

    /// True while reply audio may be echoing and the canceller has work to do.
    pub fn echo_active(&self) -> bool {
        self.echo.as_ref().is_some_and(|e| e.active())
    }

    /// The echo delay found in this call, in ms.
    pub fn echo_delay_ms(&self) -> Option<u64> {
        self.echo.as_ref().and_then(|e| e.delay_ms())
    }

    pub fn settings(&self) -> &TurnDetection {
        &self.settings
    }

    /// New settings; `scorer` is given when the mode changed (`None` there means manual).
    pub fn update(
        &mut self,
        settings: TurnDetection,
        scorer: Option<Option<Box<dyn SpeechScorer>>>,
    ) {
        self.settings = settings;
        let p = params(&settings, self.pause_ms);
        match scorer {
            Some(None) => self.detector = None,
            Some(Some(s)) => match &mut self.detector {
                Some(d) => {
                    d.set_scorer(s);
                    d.set_params(p);
                }
                None => {
                    // Detection starts where it is in the stream: behind the end by whatever
                    // the echo canceller holds back.
                    let at = self.received - self.echo.as_ref().map_or(0, |e| e.held() as u64);
                    self.detector = Some(TurnDetector::new(s, p).starting_at(at))
                }
            },
            None => {
                if let Some(d) = &mut self.detector {
                    d.set_params(p)
                }
            }
        }
    }

    pub fn in_speech(&self) -> bool {
        self.detector.as_ref().is_some_and(|d| d.in_speech())
    }

    /// Speech so far in the utterance in progress, in ms.
    pub fn speech_ms(&self) -> u64 {
        self.detector.as_ref().map_or(0, |d| d.speech_ms())
    }

    /// Audio buffered for the current turn, in samples.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// A copy of the utterance so far (for a partial transcript).
    pub fn snapshot(&self) -> Vec<f32> {
        self.buffer.clone()
    }

    /// How far behind the stream's end `at_ms` is, in ms (how long ago it was spoken, for a
    /// caller streaming in real time).
    pub fn lag_ms(&self, at_ms: u64) -> u64 {
        (self.received * 1000 / u64::from(ENGINE_RATE)).saturating_sub(at_ms)
    }

    /// Feeds decoded samples: buffers them and reports what the detector saw. A detector
    /// failure is returned after the buffering; the call goes on.
    pub fn push(&mut self, samples: &[f32]) -> (Vec<Heard>, Option<String>) {
        let cleaned;
        let (samples, detect) = match &mut self.echo {
            Some(e) => {
                cleaned = e.process(samples);
                (&cleaned.audio[..], &cleaned.detect[..])
            }
            _ => (samples, samples),
        };
        self.received += samples.len() as u64;
        self.buffer.extend_from_slice(samples);
        let Some(detector) = self.detector.as_mut() else {
            return (Vec::new(), None);
        };
        let (events, err) = match detector.push(detect) {
            Ok(e) => (e, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        let heard = events.into_iter().map(|e| self.heard(e)).collect();
        if self.detector.is_some() && !self.in_speech() {
            // Audio that is not speech: keep only what could pad an utterance starting now.
            let keep = samples_for_ms(
                self.settings.prefix_padding_ms + self.settings.min_speech_ms + IDLE_MARGIN_MS,
            );
            if self.buffer.len() > 2 * keep {
                let drop = self.buffer.len() - keep;
                self.drop_front(drop);
            }
        }
        (heard, err)
    }

    fn heard(&mut self, event: VadEvent) -> Heard {
        match event {
            VadEvent::Started { at_ms } => {
                let keep = samples_for_ms(at_ms.saturating_sub(self.settings.prefix_padding_ms));
                self.drop_before(keep as u64);
                self.speech_start_ms = at_ms;
                Heard::Started { at_ms }
            }
            VadEvent::Paused { at_ms } => Heard::Paused {
                at_ms,
                audio: self.utterance_until(at_ms, false),
            },
            VadEvent::Check { at_ms } => {
                // The model hears the last 8 s: no need to copy more of a long turn.
                let end = self.offset_of(at_ms + self.settings.semantic_pause_ms);
                let start = end.saturating_sub(smart_turn::WINDOW_SAMPLES);
                Heard::Check {
                    at_ms,
                    audio: self.buffer[start..end].to_vec(),
                }
            }
            VadEvent::Resumed => Heard::Resumed,
            VadEvent::Stopped { at_ms } => Heard::Stopped {
                at_ms,
                speech_ms: at_ms.saturating_sub(self.speech_start_ms),
                audio: self.utterance_until(at_ms, true),
            },
        }
    }

    /// True while the caller is silent after speech and the turn has not ended yet.
    pub fn in_pause(&self) -> bool {
        self.detector.as_ref().is_some_and(|d| d.in_pause())
    }

    /// Ends the utterance now, as its silence would later (the end-of-turn model found it
    /// complete); `None` if the caller is speaking again or no utterance is in progress.
    pub fn end_turn(&mut self) -> Option<Heard> {
        let event = self.detector.as_mut()?.end_turn()?;
        Some(self.heard(event))
    }

    /// The utterance in progress from its `n`th sample on (empty past its end).
    pub fn utterance_from(&self, n: usize) -> &[f32] {
        self.buffer.get(n..).unwrap_or(&[])
    }

    /// True when the utterance in progress has reached the turn audio limit.
    pub fn over_limit(&self) -> bool {
        self.buffer.len() > self.max_samples
    }

    /// Everything buffered, as the turn's audio (`commit`); the detector starts afresh.
    pub fn take_all(&mut self) -> Vec<f32> {
        if let Some(d) = &mut self.detector {
            d.reset();
        }
        let audio = std::mem::take(&mut self.buffer);
        self.buffer_start += audio.len() as u64;
        audio
    }

    /// Samples of the buffer before the stream's `ms` (all of it if they have not all arrived).
    fn offset_of(&self, ms: u64) -> usize {
        (samples_for_ms(ms) as u64)
            .saturating_sub(self.buffer_start)
            .min(self.buffer.len() as u64) as usize
    }

    /// The utterance up to `at_ms` plus the suffix that has arrived; `consume` removes it.
    fn utterance_until(&mut self, at_ms: u64, consume: bool) -> Vec<f32> {
        let take = self.offset_of(at_ms + SUFFIX_MS);
        if consume {
            let audio: Vec<f32> = self.buffer.drain(..take).collect();
            self.buffer_start += take as u64;
            audio
        } else {
            self.buffer[..take].to_vec()
        }
    }

    fn drop_before(&mut self, sample: u64) {
        let drop = sample
            .saturating_sub(self.buffer_start)
            .min(self.buffer.len() as u64) as usize;
        self.drop_front(drop);
    }

    fn drop_front(&mut self, n: usize) {
        self.buffer.drain(..n);
        self.buffer_start += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> TurnDetection {
        TurnDetection {
            mode: DetectionMode::Energy,
            threshold: 0.5,
            energy_threshold_db: -40.0,
            prefix_padding_ms: 300,
            silence_duration_ms: 500,
            min_speech_ms: 100,
            min_interrupt_ms: 400,
            semantic_pause_ms: 200,
            semantic_max_silence_ms: 2000,
        }
    }

    fn listener() -> Listener {
        let s = settings();
        Listener::new(s, Some(energy_scorer(&s)), 200, 10_000)
    }

    fn tone(ms: usize, amp: f32) -> Vec<f32> {
        (0..ms * 16).map(|i| (i as f32 * 0.3).sin() * amp).collect()
    }

    #[test]
    fn an_utterance_keeps_its_padding_and_nothing_older() {
        let mut l = listener();
        let mut audio = tone(2000, 0.0);
        audio.extend(tone(1000, 0.3));
        audio.extend(tone(1000, 0.0));
        let (heard, err) = l.push(&audio);
        assert!(err.is_none());
        let Some(Heard::Stopped {
            at_ms,
            speech_ms,
            audio,
        }) = heard.last()
        else {
            panic!("no stop in {heard:?}");
        };
        assert_eq!(*at_ms, 3000);
        assert_eq!(*speech_ms, 1000);
        // 300 ms before, 1000 ms of speech, 250 ms after.
        assert_eq!(audio.len(), samples_for_ms(1550));
        assert!(matches!(heard[0], Heard::Started { at_ms: 2000 }));
        assert!(matches!(heard[1], Heard::Paused { at_ms: 3000, .. }));
    }

    #[test]
    fn semantic_mode_asks_after_the_short_pause_and_can_end_the_turn_there() {
        let s = TurnDetection {
            mode: DetectionMode::Semantic,
            ..settings()
        };
        let mut l = Listener::new(s, Some(energy_scorer(&s)), 0, 10_000);
        let mut audio = tone(500, 0.0);
        audio.extend(tone(1000, 0.3));
        audio.extend(tone(700, 0.0));
        let (heard, _) = l.push(&audio);
        assert!(
            matches!(heard[0], Heard::Started { at_ms: 500 }),
            "{heard:?}"
        );
        let Some(Heard::Check { at_ms, audio }) = heard.get(1) else {
            panic!("no check in {heard:?}");
        };
        assert_eq!(*at_ms, 1500);
        // The padding, the speech and the 200 ms of silence that made it ask.
        assert_eq!(audio.len(), samples_for_ms(300 + 1000 + 200));
        assert_eq!(
            heard.len(),
            2,
            "the 500 ms silence of other modes does not end it"
        );
        assert!(l.in_pause());
        let Some(Heard::Stopped {
            at_ms,
            speech_ms,
            audio,
        }) = l.end_turn()
        else {
            panic!("the turn does not end");
        };
        assert_eq!((at_ms, speech_ms), (1500, 1000));
        assert_eq!(audio.len(), samples_for_ms(300 + 1000 + 250));
        assert!(!l.in_speech() && l.end_turn().is_none());
    }

    #[test]
    fn long_silence_is_not_kept() {
        let mut l = listener();
        for _ in 0..30 {
            l.push(&tone(1000, 0.0));
        }
        // Padding, the speech needed to start, a margin, and at most as much again.
        assert!(l.buffered() <= 2 * samples_for_ms(300 + 100 + 500));
        assert!(!l.in_speech());
    }
}
