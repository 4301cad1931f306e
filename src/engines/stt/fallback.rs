//! A speech-to-text chain: the first member that transcribes wins (see [`crate::engines::chain`]).
//! Live transcription is offered when the member tried first can do it; if it fails, the turn
//! transcribes the whole utterance through the chain, where that member now comes last.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{LiveTranscription, SpeechToText, Transcription};
use crate::engines::chain::Health;
use crate::engines::EngineError;

pub struct FallbackStt {
    members: Vec<Arc<dyn SpeechToText>>,
    health: Arc<Health>,
}

impl FallbackStt {
    pub fn new(members: Vec<Arc<dyn SpeechToText>>, cooldown: std::time::Duration) -> Self {
        let names = members.iter().map(|m| m.name()).collect();
        Self {
            members,
            health: Arc::new(Health::new(names, cooldown)),
        }
    }
}

impl SpeechToText for FallbackStt {
    fn name(&self) -> String {
        self.health.name()
    }

    fn usage_label(&self) -> String {
        crate::engines::chain::lead_label(&self.health, &self.members, |m| m.usage_label())
    }

    fn transcribe(
        &self,
        audio: Arc<[f32]>,
        cancel: CancellationToken,
    ) -> BoxFuture<'static, Result<Transcription, EngineError>> {
        let members = self.members.clone();
        let health = self.health.clone();
        Box::pin(async move {
            let order = health.order();
            let mut errors = Vec::new();
            for (k, &i) in order.iter().enumerate() {
                match members[i].transcribe(audio.clone(), cancel.clone()).await {
                    Ok(t) => {
                        health.succeeded(i);
                        return Ok(t);
                    }
                    Err(EngineError::Cancelled) => return Err(EngineError::Cancelled),
                    Err(e) => {
                        health.failed(i, &e, order.get(k + 1).copied());
                        errors.push((i, e));
                    }
                }
            }
            Err(health.all_failed(errors))
        })
    }

    fn listen(
        &self,
        interims: mpsc::Sender<String>,
        cancel: CancellationToken,
    ) -> Option<Box<dyn LiveTranscription>> {
        let first = *self.health.order().first()?;
        let inner = self.members[first].listen(interims, cancel)?;
        Some(Box::new(WatchedLive {
            inner,
            member: first,
            health: self.health.clone(),
        }))
    }
}

/// A member's live transcription whose outcome updates the chain's health.
struct WatchedLive {
    inner: Box<dyn LiveTranscription>,
    member: usize,
    health: Arc<Health>,
}

impl LiveTranscription for WatchedLive {
    fn push(&mut self, audio: &[f32]) {
        self.inner.push(audio);
    }

    fn finish(self: Box<Self>) -> BoxFuture<'static, Result<Transcription, EngineError>> {
        let Self {
            inner,
            member,
            health,
        } = *self;
        Box::pin(async move {
            let r = inner.finish().await;
            match &r {
                Ok(_) => health.succeeded(member),
                Err(EngineError::Cancelled) => {}
                Err(e) => {
                    let next = health.order().into_iter().find(|&i| i != member);
                    health.failed(member, e, next);
                }
            }
            r
        })
    }
}
