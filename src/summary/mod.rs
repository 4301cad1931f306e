//! Call summaries: when a call ends, its agent's language model writes what the call was about,
//! with the agent's structured fields (`summary_fields`), and the store keeps it with the call.
//! Returning callers' agents may read them back (`{{previous_summary}}`,
//! `{{conversation_context}}`).
//!
//! Off the call's path: the ended call hands its conversation to [`Summaries`], which never
//! waits (a bounded queue; a job that does not fit is skipped and counted). A few workers make
//! the summaries one at a time each, within [`SUMMARY_TIMEOUT`]. The call's `call.ended`
//! webhook is sent once its summary is stored (or skipped), so it carries it.

pub mod fields;
pub mod make;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agents::Agent;
use crate::call::record::now_ms;
use crate::call::CallMeta;
use crate::engines::llm::{ChatMessage, LanguageModel};
use crate::metrics::SummaryMetrics;
use crate::redact::Redactor;
use crate::store::{
    day_of, org_key, StoreWriter, SummaryRow, UsageRow, Write, LLM_COMPLETION_TOKENS,
    LLM_PROMPT_TOKENS,
};

/// Calls waiting for their summary, at most.
pub const QUEUE: usize = 1024;
/// Summaries made at once.
const WORKERS: usize = 2;
/// The longest one summary may take; after it the call keeps none.
pub const SUMMARY_TIMEOUT: Duration = Duration::from_secs(60);
/// The earlier summaries `{{conversation_context}}` holds, at most.
pub const CONTEXT_CALLS: i64 = 3;

/// What runs once the job is done or skipped (the call's `call.ended` webhook).
pub type Then = Box<dyn FnOnce() + Send>;

/// One ended call to summarise.
pub struct SummaryJob {
    pub meta: CallMeta,
    pub agent: Arc<Agent>,
    pub llm: Arc<dyn LanguageModel>,
    /// The conversation as the caller heard it.
    pub messages: Vec<ChatMessage>,
    pub then: Option<Then>,
}

impl SummaryJob {
    fn done(&mut self) {
        if let Some(f) = self.then.take() {
            f();
        }
    }
}

/// The summaries of a server; clones share its workers.
#[derive(Clone, Default)]
pub struct Summaries {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    tx: mpsc::Sender<SummaryJob>,
    metrics: SummaryMetrics,
    /// Stop taking new jobs; the workers skip what is queued.
    closing: CancellationToken,
    /// Stop now: the summary being made is abandoned.
    abort: CancellationToken,
    workers: TaskTracker,
}

impl Summaries {
    /// No summaries: ended calls go straight to their webhook.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Starts the workers, which write what they make through `writer`.
    pub fn spawn(writer: StoreWriter, metrics: SummaryMetrics) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let inner = Arc::new(Inner {
            tx,
            metrics: metrics.clone(),
            closing: CancellationToken::new(),
            abort: CancellationToken::new(),
            workers: TaskTracker::new(),
        });
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..WORKERS {
            let worker = Worker {
                rx: rx.clone(),
                writer: writer.clone(),
                metrics: metrics.clone(),
                closing: inner.closing.clone(),
                abort: inner.abort.clone(),
            };
            inner.workers.spawn(worker.run());
        }
        inner.workers.close();
        Self { inner: Some(inner) }
    }

    /// Queues the job, or runs its `then` at once when summaries are off or the queue is full.
    pub fn submit(&self, mut job: SummaryJob) {
        let Some(inner) = &self.inner else {
            return job.done();
        };
        if let Err(e) = inner.tx.try_send(job) {
            let mut job = match e {
                mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => j,
            };
            inner.metrics.add("skipped");
            tracing::warn!(call_id = %job.meta.call_id, "the summary queue is full or closed; the call keeps no summary");
            job.done();
        }
    }

    /// Lets the summary being made finish within `timeout` (queued calls are skipped, their
    /// webhooks sent without one), then abandons it. True if nothing was abandoned.
    pub async fn close(&self, timeout: Duration) -> bool {
        let Some(inner) = &self.inner else {
            return true;
        };
        inner.closing.cancel();
        let finished = tokio::time::timeout(timeout, inner.workers.wait())
            .await
            .is_ok();
        inner.abort.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), inner.workers.wait()).await;
        finished
    }
}

struct Worker {
    rx: Arc<Mutex<mpsc::Receiver<SummaryJob>>>,
    writer: StoreWriter,
    metrics: SummaryMetrics,
    closing: CancellationToken,
    abort: CancellationToken,
}

impl Worker {
    async fn run(self) {
        loop {
            let job = {
                let mut rx = self.rx.lock().await;
                tokio::select! {
                    biased;
                    () = self.closing.cancelled() => None,
                    j = rx.recv() => j,
                }
            };
            let Some(mut job) = job else { break };
            self.summarise(&mut job).await;
            job.done();
        }
        // Closing: the calls still queued keep no summary, but their webhooks go out.
        let mut rx = self.rx.lock().await;
        rx.close();
        while let Ok(mut job) = rx.try_recv() {
            self.metrics.add("skipped");
            job.done();
        }
    }

    async fn summarise(&self, job: &mut SummaryJob) {
        let specs = job.agent.summary_field_specs();
        let session = format!("{}:summary", job.meta.call_id);
        let cancel = self.abort.child_token();
        let made = tokio::select! {
            m = tokio::time::timeout(
                SUMMARY_TIMEOUT,
                make::make(job.llm.as_ref(), &session, &job.messages, &specs, &cancel),
            ) => m,
            () = self.abort.cancelled() => {
                self.metrics.add("skipped");
                return;
            }
        };
        cancel.cancel();
        let made = match made {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(_) => {
                job.llm.release(&session);
                self.metrics.add("timed_out");
                tracing::warn!(call_id = %job.meta.call_id, "summarising the call took too long; it keeps none");
                return;
            }
        };
        self.metrics.add(made.method.as_str());
        for row in usage_rows(&job.meta, &made.spent, now_ms()) {
            self.writer.send(Write::Usage(row));
        }
        let row = summary_row(&job.meta, made, &job.agent.redactor());
        self.writer.send(Write::Summary(row));
    }
}

/// The tokens a summary cost, as the call's usage: a stretch of its own that starts when the
/// summary was made (so a resumed call's next summary counts again), with no call time.
fn usage_rows(meta: &CallMeta, spent: &make::Spent, at_ms: i64) -> Vec<UsageRow> {
    [
        (LLM_PROMPT_TOKENS, spent.prompt_tokens),
        (LLM_COMPLETION_TOKENS, spent.completion_tokens),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(metric, n)| UsageRow {
        call_id: meta.call_id.clone(),
        part_ms: at_ms,
        day: day_of(at_ms),
        org: org_key(meta.org.as_deref()).to_string(),
        sub: meta.sub.clone(),
        agent: meta.agent.clone(),
        metric: metric.to_string(),
        engine: spent.engine.clone(),
        value: i64::try_from(n).unwrap_or(i64::MAX),
    })
    .collect()
}

/// The stored row of a summary, masked as the agent's redaction says.
fn summary_row(meta: &CallMeta, made: make::Made, redactor: &Redactor) -> SummaryRow {
    let mut fields = made.fields;
    redactor.redact_json(&mut fields);
    SummaryRow {
        call_id: meta.call_id.clone(),
        org: meta.org.clone(),
        sub: meta.sub.clone(),
        agent: meta.agent.clone(),
        text: redactor.redact(&made.text).into_owned(),
        fields,
        method: made.method.as_str().to_string(),
        engine: made.engine.unwrap_or_else(|| "none".into()),
        at_ms: now_ms(),
    }
}

/// What `{{previous_summary}}` and `{{conversation_context}}` say for a caller whose earlier
/// summaries are `rows` (newest first): the newest summary, and up to [`CONTEXT_CALLS`] of them
/// oldest first, each with its date and fields. Empty strings for a first call.
pub fn returning_caller(rows: &[SummaryRow]) -> (String, String) {
    let previous = rows.first().map(|r| r.text.clone()).unwrap_or_default();
    let context = rows
        .iter()
        .take(CONTEXT_CALLS as usize)
        .rev()
        .map(|r| {
            // "2025-11-24T16:06:40.000Z" as "2025-11-24 16:06 UTC".
            let t = crate::http::export::rfc3339(r.at_ms);
            let when = match (t.get(..10), t.get(11..16)) {
                (Some(day), Some(time)) => format!("{day} {time} UTC"),
                _ => t.clone(),
            };
            let facts: Vec<String> = r
                .fields
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(_, v)| !v.is_null())
                        .map(|(k, v)| match v {
                            serde_json::Value::String(s) => format!("{k}: {s}"),
                            v => format!("{k}: {v}"),
                        })
                        .collect()
                })
                .unwrap_or_default();
            if facts.is_empty() {
                format!("Call on {when}: {}", r.text)
            } else {
                format!("Call on {when}: {} ({})", r.text, facts.join("; "))
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    (previous, context)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(call: &str, at_ms: i64, text: &str, fields: serde_json::Value) -> SummaryRow {
        SummaryRow {
            call_id: call.into(),
            org: None,
            sub: "ada".into(),
            agent: "desk".into(),
            text: text.into(),
            fields,
            method: "json".into(),
            engine: "x".into(),
            at_ms,
        }
    }

    #[test]
    fn a_returning_caller_gets_the_newest_summary_and_the_last_calls_in_order() {
        let rows = [
            row(
                "c4",
                1_764_000_400_000,
                "Fourth.",
                json!({"name": "Ada", "size": null}),
            ),
            row("c3", 1_764_000_300_000, "Third.", json!({})),
            row("c2", 1_764_000_200_000, "Second.", json!({"size": 4})),
            row("c1", 1_764_000_100_000, "First.", json!({})),
        ];
        let (previous, context) = returning_caller(&rows);
        assert_eq!(previous, "Fourth.");
        let lines: Vec<&str> = context.lines().collect();
        assert_eq!(lines.len(), 3, "{context}");
        assert!(lines[0].ends_with("Second. (size: 4)"), "{context}");
        assert!(lines[2].ends_with("Fourth. (name: Ada)"), "{context}");
        assert!(lines[0].starts_with("Call on 2025-11-24 "), "{context}");
        assert_eq!(returning_caller(&[]), (String::new(), String::new()));
    }

    #[test]
    fn a_summarys_tokens_are_the_calls_usage() {
        let meta = CallMeta {
            call_id: "c1".into(),
            org: None,
            sub: "ada".into(),
            agent: "desk".into(),
        };
        let spent = make::Spent {
            engine: "local".into(),
            prompt_tokens: 120,
            completion_tokens: 0,
        };
        let rows = usage_rows(&meta, &spent, 86_400_000 + 5);
        assert_eq!(rows.len(), 1, "a metric with nothing spent has no row");
        let r = &rows[0];
        assert_eq!(
            (r.metric.as_str(), r.value, r.engine.as_str()),
            (LLM_PROMPT_TOKENS, 120, "local")
        );
        assert_eq!((r.org.as_str(), r.day.as_str()), ("", "1970-01-02"));
        assert_eq!((r.call_id.as_str(), r.part_ms), ("c1", 86_400_005));
        assert!(usage_rows(&meta, &make::Spent::default(), 1).is_empty());
    }

    #[test]
    fn a_stored_summary_is_masked_like_the_call() {
        let meta = CallMeta {
            call_id: "c1".into(),
            org: Some("acme".into()),
            sub: "ada".into(),
            agent: "desk".into(),
        };
        let made = make::Made {
            text: "Ada wants a callback on 415 555 0100.".into(),
            fields: json!({"callback": "415 555 0100", "size": 4}),
            method: make::Method::Json,
            engine: Some("hosted".into()),
            spent: make::Spent::default(),
        };
        let r = summary_row(
            &meta,
            made,
            &Redactor::new(&[crate::redact::Sensitive::Phone]),
        );
        assert_eq!(r.text, "Ada wants a callback on [phone].");
        assert_eq!(r.fields, json!({"callback": "[phone]", "size": 4}));
        assert_eq!(
            (r.method.as_str(), r.org.as_deref()),
            ("json", Some("acme"))
        );
    }
}
