//! Deterministic test engine: echoes the user's last message word by word. For protocol tests
//! only; never a default.

use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{ChatRequest, LanguageModel, Role};
use crate::engines::EngineError;

#[derive(Default)]
pub struct FakeLlm {
    /// Pause between words, to let tests interrupt a reply mid-stream.
    pub word_delay: Duration,
}

impl LanguageModel for FakeLlm {
    fn name(&self) -> String {
        "fake (test engine)".into()
    }

    fn usage_label(&self) -> String {
        "fake".into()
    }

    fn stream(
        &self,
        request: ChatRequest,
        cancel: CancellationToken,
    ) -> BoxStream<'static, Result<String, EngineError>> {
        let last = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let turns = request
            .messages
            .iter()
            .filter(|m| m.role == Role::User)
            .count();
        let reply = format!("You said: {last}. That is turn {turns}.");
        let words: Vec<String> = reply.split_inclusive(' ').map(str::to_string).collect();
        let delay = self.word_delay;
        futures::stream::iter(words)
            .then(move |w| {
                let cancel = cancel.clone();
                async move {
                    if !delay.is_zero() {
                        tokio::select! {
                            _ = cancel.cancelled() => return Err(EngineError::Cancelled),
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                    if cancel.is_cancelled() {
                        return Err(EngineError::Cancelled);
                    }
                    Ok(w)
                }
            })
            .boxed()
    }
}
