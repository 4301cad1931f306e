//! What the caller has heard of a reply. The server knows which sentence each stretch of reply
//! audio speaks and how much audio it sent; the client reports how much it played (`playback`).
//! Without reports, playback is assumed to run in real time from the first audio sent. When a
//! reply is interrupted, history keeps only the words whose audio was played, each written word
//! weighed by the words the voice says for it ("$15.50" is five).

use tokio::time::Instant;

use crate::engines::tts::text::spoken_word_counts;

/// One sentence's place in the reply's audio, in ms from the reply's first sample.
struct Span {
    text: String,
    start_ms: f64,
    len_ms: f64,
    /// Spoken words for each written word of `text`.
    weights: Vec<usize>,
}

#[derive(Default)]
pub struct PlaybackTrack {
    spans: Vec<Span>,
    /// Audio sent so far.
    sent_ms: f64,
    /// When the client, playing without gaps, will have played everything sent.
    est_end: Option<Instant>,
    /// The client's last report: played ms and when it came.
    reported: Option<(f64, Instant)>,
}

impl PlaybackTrack {
    /// Records `ms` of audio sent now; `sentence` when it begins a new sentence.
    pub fn sent(&mut self, sentence: Option<&str>, ms: f64, now: Instant) {
        if let Some(text) = sentence {
            self.spans.push(Span {
                text: text.trim().to_string(),
                start_ms: self.sent_ms,
                len_ms: 0.0,
                weights: spoken_word_counts(text),
            });
        }
        if let Some(last) = self.spans.last_mut() {
            last.len_ms += ms;
        }
        self.sent_ms += ms;
        let from = self.est_end.filter(|e| *e > now).unwrap_or(now);
        self.est_end = Some(from + std::time::Duration::from_secs_f64(ms / 1000.0));
    }

    /// A `playback` report from the client.
    pub fn report(&mut self, played_ms: u64, now: Instant) {
        let played = (played_ms as f64).min(self.sent_ms);
        if self.reported.is_none_or(|(p, _)| played >= p) {
            self.reported = Some((played, now));
        }
    }

    pub fn sent_ms(&self) -> f64 {
        self.sent_ms
    }

    /// Audio played by `now`: the client's last report carried forward in real time, or the
    /// real-time estimate when there is none; never more than was sent.
    pub fn played_ms(&self, now: Instant) -> f64 {
        let played = match (self.reported, self.est_end) {
            (Some((p, at)), _) => p + now.saturating_duration_since(at).as_secs_f64() * 1000.0,
            (None, Some(end)) => {
                self.sent_ms - end.saturating_duration_since(now).as_secs_f64() * 1000.0
            }
            (None, None) => 0.0,
        };
        played.clamp(0.0, self.sent_ms)
    }

    /// True while sent audio is still (probably) playing.
    pub fn playing(&self, now: Instant) -> bool {
        self.sent_ms - self.played_ms(now) > 1.0
    }

    /// The reply's words heard after `played_ms` of audio: whole sentences played, and of the
    /// sentence playing, the share of its words matching the share of its audio played.
    pub fn heard_text(&self, played_ms: f64) -> String {
        let mut out: Vec<&str> = Vec::new();
        for span in &self.spans {
            if played_ms >= span.start_ms + span.len_ms {
                out.push(&span.text);
                continue;
            }
            if played_ms > span.start_ms && span.len_ms > 0.0 {
                let share = (played_ms - span.start_ms) / span.len_ms;
                let words: Vec<&str> = span.text.split_whitespace().collect();
                let said = span.weights.iter().sum::<usize>() as f64 * share;
                let mut sum = 0;
                let n = (span.weights.iter())
                    .take_while(|w| {
                        sum += *w;
                        sum as f64 <= said
                    })
                    .count();
                if n > 0 {
                    let end = words[..n]
                        .last()
                        .map(|w| w.as_ptr() as usize - span.text.as_ptr() as usize + w.len())
                        .unwrap_or(0);
                    out.push(&span.text[..end]);
                }
            }
            break;
        }
        out.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn track(now: Instant) -> PlaybackTrack {
        let mut t = PlaybackTrack::default();
        t.sent(Some("Hello there."), 1000.0, now);
        t.sent(Some("We open at nine on Monday morning."), 1500.0, now);
        t.sent(None, 500.0, now);
        t
    }

    #[test]
    fn heard_text_follows_played_audio() {
        let t = track(Instant::now());
        assert_eq!(t.heard_text(0.0), "");
        assert_eq!(t.heard_text(400.0), "");
        assert_eq!(t.heard_text(999.0), "Hello");
        assert_eq!(t.heard_text(1000.0), "Hello there.");
        // Half of the second sentence's 2000 ms: 3 of its 7 words.
        assert_eq!(t.heard_text(2000.0), "Hello there. We open at");
        assert_eq!(
            t.heard_text(3000.0),
            "Hello there. We open at nine on Monday morning."
        );
    }

    /// A price is five spoken words: a third of the audio ends before it.
    #[test]
    fn heard_text_weighs_words_by_what_the_voice_says() {
        let mut t = PlaybackTrack::default();
        t.sent(Some("It costs $15.50 in total."), 900.0, Instant::now());
        assert_eq!(t.heard_text(300.0), "It costs");
        assert_eq!(t.heard_text(750.0), "It costs $15.50");
        assert_eq!(t.heard_text(900.0), "It costs $15.50 in total.");
    }

    #[test]
    fn without_reports_playback_runs_in_real_time() {
        let t0 = Instant::now();
        let t = track(t0);
        assert_eq!(t.played_ms(t0), 0.0);
        let later = t0 + Duration::from_millis(1200);
        assert!((t.played_ms(later) - 1200.0).abs() < 1.0);
        assert!(t.playing(later));
        assert!(!t.playing(t0 + Duration::from_secs(4)));
        assert_eq!(t.played_ms(t0 + Duration::from_secs(9)), 3000.0);
    }

    #[test]
    fn reports_win_over_the_estimate_and_never_go_back() {
        let t0 = Instant::now();
        let mut t = track(t0);
        let at = t0 + Duration::from_millis(2000);
        t.report(600, at);
        assert!((t.played_ms(at) - 600.0).abs() < 1.0);
        t.report(400, at);
        assert!((t.played_ms(at) - 600.0).abs() < 1.0);
        t.report(99_999, at);
        assert_eq!(t.played_ms(at), 3000.0);
    }
}
