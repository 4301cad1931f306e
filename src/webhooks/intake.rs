//! The intake: takes the calls' webhook events off their queue, writes each body once and
//! stores it as a delivery (retrying while the database is away), then wakes the worker. A
//! `call.ended` waits for the call's last writes to reach the store, then reads its row, items
//! and metrics from there.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::payload::{self, Ending};
use super::{HookEvent, HookKind};
use crate::agents::Agents;
use crate::call::record::now_ms;
use crate::call::CallMeta;
use crate::config::WebhookTarget;
use crate::metrics::WebhookMetrics;
use crate::store::{NewDelivery, Store, StoreError, StoreWriter};

/// How long one wait for the store writer lasts before it is checked again.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

pub(super) struct Intake {
    pub(super) rx: mpsc::Receiver<HookEvent>,
    pub(super) store: Store,
    pub(super) writer: StoreWriter,
    pub(super) targets: Arc<HashMap<String, WebhookTarget>>,
    pub(super) agents: Agents,
    pub(super) metrics: WebhookMetrics,
    pub(super) wake: Arc<Notify>,
    pub(super) links: super::Links,
    pub(super) closing: CancellationToken,
    pub(super) abort: CancellationToken,
}

/// A new delivery's id: also its `Voxwire-Delivery-Id`.
fn delivery_id() -> String {
    format!("whd_{:032x}", rand::random::<u128>())
}

impl Intake {
    pub(super) async fn run(mut self) {
        loop {
            let event = tokio::select! {
                biased;
                e = self.rx.recv() => e,
                () = self.closing.cancelled() => None,
            };
            match event {
                Some(e) => self.store_event(e).await,
                None => break,
            }
        }
        // Closing: what is queued is still stored, unless time runs out.
        self.rx.close();
        while let Ok(e) = self.rx.try_recv() {
            if self.abort.is_cancelled() {
                self.lost(&e.call, "the server stopped before it could be stored");
            } else {
                self.store_event(e).await;
            }
        }
    }

    fn lost(&self, call: &CallMeta, why: &str) {
        self.metrics.add_dropped(1);
        tracing::error!(call_id = %call.call_id, agent = %call.agent, "a webhook event is lost: {why}");
    }

    async fn store_event(&self, e: HookEvent) {
        let Some(target) = self.targets.get(&e.call.agent) else {
            return;
        };
        let id = delivery_id();
        let (event, data) = match &e.kind {
            HookKind::Started { resumed } => (
                payload::CALL_STARTED,
                payload::started(&e.call, e.at_ms, *resumed),
            ),
            HookKind::Takeover { started, operator } => (
                if *started {
                    payload::TAKEOVER_STARTED
                } else {
                    payload::TAKEOVER_ENDED
                },
                payload::takeover(&e.call, e.at_ms, operator),
            ),
            HookKind::Message {
                name,
                callback,
                message,
            } => (
                payload::MESSAGE_TAKEN,
                payload::message(&e.call, e.at_ms, name, callback, message),
            ),
            HookKind::Tool {
                name,
                arguments,
                result,
                error,
                ms,
            } => (
                payload::TOOL_CALLED,
                payload::tool(&e.call, e.at_ms, name, arguments, result, *error, *ms),
            ),
            HookKind::Ended { reason, turns } => {
                let end = Ending {
                    at_ms: e.at_ms,
                    reason,
                    turns: *turns,
                };
                (payload::CALL_ENDED, self.ended(&e.call, &end).await)
            }
        };
        let created_at_ms = now_ms();
        let delivery = NewDelivery {
            body: payload::envelope(&id, event, created_at_ms, data),
            id,
            org: e.call.org.clone(),
            sub: e.call.sub.clone(),
            agent: e.call.agent.clone(),
            call_id: e.call.call_id.clone(),
            event: event.to_string(),
            url: target.url.clone(),
            created_at_ms,
        };
        match self.retried(|| self.store.insert_delivery(&delivery)).await {
            Some(Ok(())) => self.wake.notify_one(),
            Some(Err(err)) => {
                self.lost(&e.call, "the store refused it");
                tracing::error!(error = %err, "storing a webhook delivery failed");
            }
            None => self.lost(&e.call, "the server stopped while the store was away"),
        }
    }

    /// `call.ended`'s data: the call as the store has it once its last writes are in.
    async fn ended(
        &self,
        call: &CallMeta,
        end: &Ending<'_>,
    ) -> serde_json::Map<String, serde_json::Value> {
        // The call's writes were queued before this event: once flushed, they are stored.
        while !self.writer.flush(FLUSH_WAIT).await {
            if self.abort.is_cancelled() {
                break;
            }
            tracing::warn!(call_id = %call.call_id, "waiting for the store before a call.ended webhook");
        }
        let id = call.call_id.as_str();
        let stored = payload::Stored {
            row: self.read(|| self.store.call(id)).await.flatten(),
            items: self.read(|| self.store.items(id)).await.unwrap_or_default(),
            metrics: self
                .read(|| self.store.turn_metrics(id))
                .await
                .unwrap_or_default(),
            summary: self.read(|| self.store.summary(id)).await.flatten(),
            recording_url: self.links.recording_url(id).await,
        };
        let redactor = self
            .agents
            .get_in(call.org.as_deref(), Some(&call.agent))
            .map(|a| a.redactor())
            .unwrap_or_default();
        payload::ended(call, end, &stored, &redactor)
    }

    /// A read for a payload: `None` if the store refused it or the server stopped meanwhile
    /// (the payload then says less).
    async fn read<T, F, Fut>(&self, f: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        match self.retried(f).await {
            Some(Ok(v)) => Some(v),
            Some(Err(e)) => {
                tracing::error!(error = %e, "reading a call for its webhook failed");
                None
            }
            None => None,
        }
    }

    /// Retries `f` with backoff while its errors are retryable; `None` if the server stops
    /// meanwhile.
    async fn retried<T, F, Fut>(&self, f: F) -> Option<Result<T, StoreError>>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times();
        let attempt = f.retry(backoff).when(StoreError::retryable).notify(|e, delay| {
            tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "the store is unavailable for webhooks; retrying");
        });
        tokio::select! {
            r = attempt => Some(r),
            () = self.abort.cancelled() => None,
        }
    }
}
