//! A text-to-speech chain (see [`crate::engines::chain`]): each sentence goes to the members in
//! turn until one produces audio. The chain speaks at its first member's rate; audio of a member
//! with another rate is resampled. An agent's voice goes to the members that have it; the others
//! use their own default voice. A failure after a sentence's audio started ends the turn with an
//! error rather than repeating the sentence in another voice.

use std::sync::Arc;

use futures::stream::BoxStream;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::TextToSpeech;
use crate::audio::resample::StreamResampler;
use crate::engines::chain::{first_that_streams, Health};
use crate::engines::EngineError;

pub struct FallbackTts {
    members: Vec<Arc<dyn TextToSpeech>>,
    health: Arc<Health>,
    rate: u32,
}

impl FallbackTts {
    pub fn new(members: Vec<Arc<dyn TextToSpeech>>, cooldown: std::time::Duration) -> Self {
        let names = members.iter().map(|m| m.name()).collect();
        let rate = members.first().map_or(16_000, |m| m.sample_rate());
        Self {
            members,
            health: Arc::new(Health::new(names, cooldown)),
            rate,
        }
    }
}

type Audio = BoxStream<'static, Result<Vec<f32>, EngineError>>;

/// `audio` at `to` Hz.
fn resampled(audio: Audio, from: u32, to: u32) -> Audio {
    let Ok(resampler) = StreamResampler::new(from, to) else {
        return futures::stream::once(async move {
            Err(EngineError::failed(
                "text-to-speech",
                format!("cannot resample {from} -> {to} Hz"),
            ))
        })
        .boxed();
    };
    futures::stream::unfold(
        (audio, Some(resampler)),
        |(mut audio, mut resampler)| async move {
            loop {
                let r = resampler.as_mut()?;
                match audio.next().await {
                    Some(Ok(chunk)) => {
                        let out = r.push(&chunk);
                        if !out.is_empty() {
                            return Some((Ok(out), (audio, resampler)));
                        }
                    }
                    Some(Err(e)) => return Some((Err(e), (audio, None))),
                    None => {
                        let tail = r.finish();
                        return Some((Ok(tail), (audio, None)));
                    }
                }
            }
        },
    )
    .boxed()
}

impl TextToSpeech for FallbackTts {
    fn name(&self) -> String {
        self.health.name()
    }

    fn usage_label(&self) -> String {
        crate::engines::chain::lead_label(&self.health, &self.members, |m| m.usage_label())
    }

    fn sample_rate(&self) -> u32 {
        self.rate
    }

    fn has_voice(&self, name: &str) -> bool {
        self.members.iter().any(|m| m.has_voice(name))
    }

    fn synthesize(&self, text: String, voice: Option<String>, cancel: CancellationToken) -> Audio {
        let members = self.members.clone();
        let rate = self.rate;
        first_that_streams(
            self.health.clone(),
            move |i| {
                let m = &members[i];
                let v = voice.clone().filter(|v| m.has_voice(v));
                let s = m.synthesize(text.clone(), v, cancel.clone());
                if m.sample_rate() == rate {
                    s
                } else {
                    resampled(s, m.sample_rate(), rate)
                }
            },
            Vec::is_empty,
        )
    }
}
