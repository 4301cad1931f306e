//! Signed webhooks: `call.started`, `call.ended`, `takeover.started`, `takeover.ended`,
//! `tool.called` (a tool the agent's model called, and its result) and `message.taken` (the
//! agent's `take_message` tool) sent to the URL of the call's agent, signed with its secret.
//!
//! Off the call's path: a call's recorder hands its events to [`CallHook`], which never waits
//! (a bounded queue; what does not fit is dropped and counted). The intake task makes each into
//! a delivery and stores it before any attempt, so a restart loses nothing stored. The worker
//! claims due deliveries from the store (atomically, so no two workers, of this node or of
//! others sharing the database, send the same one at once), sends them with bounded
//! concurrency and a per-request timeout, and records the outcome: delivered, failed for good,
//! or due again after an exponential backoff with jitter, for at most `retry_for`. A delivered
//! one is never sent again.

mod deliver;
mod intake;
pub mod payload;
pub mod sign;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agents::Agents;
use crate::call::record::now_ms;
use crate::call::CallMeta;
use crate::config::{WebhookSettings, WebhookTarget};
use crate::metrics::WebhookMetrics;
use crate::store::{Store, StoreWriter};

/// At most one warning per this about dropped events.
const LOG_EVERY_MS: u64 = 10_000;

/// What a call did that its webhook hears of.
#[derive(Debug, Clone)]
pub(crate) enum HookKind {
    Started {
        resumed: bool,
    },
    Ended {
        reason: String,
        turns: u64,
    },
    Takeover {
        started: bool,
        operator: String,
    },
    Message {
        name: String,
        callback: String,
        message: String,
    },
    Tool {
        name: String,
        arguments: String,
        result: String,
        error: Option<&'static str>,
        ms: f64,
    },
}

#[derive(Debug)]
pub(crate) struct HookEvent {
    call: Arc<CallMeta>,
    at_ms: i64,
    kind: HookKind,
}

/// How a webhook links to a call's recording: `{public_url}/api/calls/{id}/recording` when the
/// file exists (a path without `VOXWIRE_PUBLIC_URL`).
#[derive(Debug, Clone, Default)]
pub struct Links {
    pub public_url: Option<String>,
    pub recordings: std::path::PathBuf,
}

impl Links {
    pub(crate) async fn recording_url(&self, call_id: &str) -> Option<String> {
        use crate::call::recording::{recording_path, safe_id};
        let path = recording_path(&self.recordings, call_id);
        if !safe_id(call_id) || !tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return None;
        }
        let base = self.public_url.as_deref().unwrap_or("");
        Some(format!("{base}/api/calls/{call_id}/recording"))
    }
}

/// The webhooks of a server; clones share its tasks. Disabled when no agent has a webhook.
#[derive(Clone, Default)]
pub struct Webhooks {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    tx: mpsc::Sender<HookEvent>,
    targets: Arc<HashMap<String, WebhookTarget>>,
    metrics: WebhookMetrics,
    /// Stop taking new work: the intake stores what is queued, the worker claims no more.
    closing: CancellationToken,
    /// Stop now: attempts in flight are abandoned (their claims let go).
    abort: CancellationToken,
    intake: TaskTracker,
    worker: TaskTracker,
    /// When the next dropped-event warning may be logged (ms since the Unix epoch).
    next_warning_ms: AtomicU64,
}

impl Webhooks {
    /// No webhooks: calls hand nothing over.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Starts the intake and the worker when some agent has a webhook.
    pub fn spawn(
        store: Store,
        writer: StoreWriter,
        settings: &WebhookSettings,
        agents: &Agents,
        metrics: WebhookMetrics,
        links: Links,
    ) -> Self {
        if settings.targets.is_empty() {
            return Self::disabled();
        }
        let client = match deliver::client(settings) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot make the webhooks' HTTP client; webhooks are off");
                return Self::disabled();
            }
        };
        let targets = Arc::new(settings.targets.clone());
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let wake = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            tx,
            targets: targets.clone(),
            metrics: metrics.clone(),
            closing: CancellationToken::new(),
            abort: CancellationToken::new(),
            intake: TaskTracker::new(),
            worker: TaskTracker::new(),
            next_warning_ms: AtomicU64::new(0),
        });
        let intake = intake::Intake {
            rx,
            store: store.clone(),
            writer,
            targets: targets.clone(),
            agents: agents.clone(),
            metrics: metrics.clone(),
            wake: wake.clone(),
            links,
            closing: inner.closing.clone(),
            abort: inner.abort.clone(),
        };
        inner.intake.spawn(intake.run());
        let worker = deliver::Worker::new(
            store,
            client,
            targets,
            settings,
            metrics,
            wake,
            inner.closing.clone(),
            inner.abort.clone(),
        );
        inner.worker.spawn(worker.run(inner.worker.clone()));
        Self { inner: Some(inner) }
    }

    /// The hook of a call whose agent has a webhook.
    pub fn for_call(&self, call: &CallMeta) -> Option<CallHook> {
        let inner = self.inner.as_ref()?;
        inner.targets.contains_key(&call.agent).then(|| CallHook {
            inner: inner.clone(),
            call: Arc::new(call.clone()),
        })
    }

    /// Stores the events still queued and lets the attempts in flight finish, within
    /// `timeout`; then abandons what is left (events are dropped and counted; attempts let
    /// their claims go, to be made again after a restart). True if nothing was left.
    pub async fn close(&self, timeout: Duration) -> bool {
        let Some(inner) = &self.inner else {
            return true;
        };
        inner.closing.cancel();
        inner.intake.close();
        inner.worker.close();
        let finished = tokio::time::timeout(timeout, async {
            inner.intake.wait().await;
            inner.worker.wait().await;
        })
        .await
        .is_ok();
        inner.abort.cancel();
        // Abandoning takes a moment: the claims are let go.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            inner.intake.wait().await;
            inner.worker.wait().await;
        })
        .await;
        finished
    }
}

/// A call's way to its webhook. Never waits.
#[derive(Clone)]
pub struct CallHook {
    inner: Arc<Inner>,
    call: Arc<CallMeta>,
}

impl CallHook {
    pub fn started(&self, resumed: bool) {
        self.send(HookKind::Started { resumed });
    }

    pub fn ended(&self, reason: &str, turns: u64) {
        self.send(HookKind::Ended {
            reason: reason.to_string(),
            turns,
        });
    }

    pub fn takeover(&self, started: bool, operator: &str) {
        self.send(HookKind::Takeover {
            started,
            operator: operator.to_string(),
        });
    }

    /// The agent took a message (`take_message`).
    /// A tool the model called answered (or failed: `error`).
    pub fn tool(
        &self,
        name: &str,
        arguments: &str,
        result: &str,
        error: Option<&'static str>,
        ms: f64,
    ) {
        self.send(HookKind::Tool {
            name: name.to_string(),
            arguments: arguments.to_string(),
            result: result.to_string(),
            error,
            ms,
        });
    }

    pub fn message(&self, name: &str, callback: &str, message: &str) {
        self.send(HookKind::Message {
            name: name.to_string(),
            callback: callback.to_string(),
            message: message.to_string(),
        });
    }

    fn send(&self, kind: HookKind) {
        let event = HookEvent {
            call: self.call.clone(),
            at_ms: now_ms(),
            kind,
        };
        let Err(e) = self.inner.tx.try_send(event) else {
            return;
        };
        let why = match e {
            mpsc::error::TrySendError::Full(_) => "the webhook queue is full",
            mpsc::error::TrySendError::Closed(_) => "webhooks have stopped",
        };
        self.inner.metrics.add_dropped(1);
        let now = now_ms().max(0) as u64;
        let next = self.inner.next_warning_ms.load(Ordering::Acquire);
        if now >= next
            && self
                .inner
                .next_warning_ms
                .compare_exchange(
                    next,
                    now + LOG_EVERY_MS,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            tracing::warn!(
                call_id = %self.call.call_id,
                "{why}: a webhook event was dropped (see voxwire_webhook_dropped_total)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let (tx, rx) = mpsc::channel(2);
        let metrics = WebhookMetrics::default();
        let inner = Arc::new(Inner {
            tx,
            targets: Arc::default(),
            metrics: metrics.clone(),
            closing: CancellationToken::new(),
            abort: CancellationToken::new(),
            intake: TaskTracker::new(),
            worker: TaskTracker::new(),
            next_warning_ms: AtomicU64::new(0),
        });
        let hook = CallHook {
            inner,
            call: Arc::new(CallMeta {
                call_id: "call_1".into(),
                org: None,
                sub: "ada".into(),
                agent: "desk".into(),
            }),
        };
        for _ in 0..5 {
            hook.started(false);
        }
        assert_eq!(metrics.dropped(), 3);
        drop(rx);
        hook.ended("client_ended", 1);
        assert_eq!(metrics.dropped(), 4);
    }
}
