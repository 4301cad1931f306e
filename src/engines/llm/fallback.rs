//! A language-model chain (see [`crate::engines::chain`]): each member is asked in turn until
//! one produces its first piece of text; from then on that member's stream is the reply. A
//! failure after text went out is not hidden by switching model mid-sentence: it ends the turn
//! with an error.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use tokio_util::sync::CancellationToken;

use super::{ChatRequest, LanguageModel};
use crate::engines::chain::{first_that_streams, Health};
use crate::engines::EngineError;

pub struct FallbackLlm {
    members: Vec<Arc<dyn LanguageModel>>,
    health: Arc<Health>,
}

impl FallbackLlm {
    pub fn new(members: Vec<Arc<dyn LanguageModel>>, cooldown: std::time::Duration) -> Self {
        let names = members.iter().map(|m| m.name()).collect();
        Self {
            members,
            health: Arc::new(Health::new(names, cooldown)),
        }
    }
}

impl LanguageModel for FallbackLlm {
    fn name(&self) -> String {
        self.health.name()
    }

    fn usage_label(&self) -> String {
        crate::engines::chain::lead_label(&self.health, &self.members, |m| m.usage_label())
    }

    /// As the first member does: the one that answers unless it is failing (a local fallback
    /// then answers a JSON request in its own way, which the caller must allow for).
    fn json_output(&self) -> bool {
        self.members.first().is_some_and(|m| m.json_output())
    }

    fn stream(
        &self,
        request: ChatRequest,
        cancel: CancellationToken,
    ) -> BoxStream<'static, Result<String, EngineError>> {
        let members = self.members.clone();
        first_that_streams(
            self.health.clone(),
            move |i| members[i].stream(request.clone(), cancel.clone()),
            String::is_empty,
        )
    }

    fn warm_up(&self, request: ChatRequest, cancel: CancellationToken) -> BoxFuture<'static, ()> {
        let first = self.health.order().first().copied().unwrap_or(0);
        match self.members.get(first) {
            Some(m) => m.warm_up(request, cancel),
            None => Box::pin(async {}),
        }
    }

    fn release(&self, session_id: &str) {
        for m in &self.members {
            m.release(session_id);
        }
    }
}
