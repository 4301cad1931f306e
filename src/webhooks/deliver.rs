//! The worker: looks in the store for due deliveries of the agents it can sign for, claims
//! each in one statement, sends it signed (at most `concurrency` at once, each within
//! `timeout`), and settles it: a 2xx is delivered; a 4xx other than 408 and 429 (or a 3xx: no
//! redirect is followed) failed for good; anything else (5xx, 408, 429, a timeout, no
//! connection) is due again after `retry_min * 2^(attempts - 1)`, at most `retry_max`, with
//! ±25 % jitter, until `retry_for` after the delivery was made.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::sign;
use crate::call::record::now_ms;
use crate::config::{WebhookSettings, WebhookTarget};
use crate::metrics::WebhookMetrics;
use crate::store::{ClaimedDelivery, Settle, Store, StoreError, DELIVERED, FAILED, PENDING};

/// A claim lasts the request's timeout and this much more: a worker that dies holding one lets
/// the delivery be claimed again after it.
const CLAIM_MARGIN: Duration = Duration::from_secs(30);

pub(super) fn client(settings: &WebhookSettings) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("voxwire-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// What the attempts share.
struct Shared {
    store: Store,
    client: reqwest::Client,
    targets: Arc<HashMap<String, WebhookTarget>>,
    retry_for: Duration,
    retry_min: Duration,
    retry_max: Duration,
    metrics: WebhookMetrics,
    wake: Arc<Notify>,
    abort: CancellationToken,
}

pub(super) struct Worker {
    shared: Arc<Shared>,
    /// The agents this server has a secret for: only their deliveries are claimed.
    agents: Vec<String>,
    slots: Arc<Semaphore>,
    lease: Duration,
    poll: Duration,
    closing: CancellationToken,
}

impl Worker {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        store: Store,
        client: reqwest::Client,
        targets: Arc<HashMap<String, WebhookTarget>>,
        settings: &WebhookSettings,
        metrics: WebhookMetrics,
        wake: Arc<Notify>,
        closing: CancellationToken,
        abort: CancellationToken,
    ) -> Self {
        let mut agents: Vec<String> = targets.keys().cloned().collect();
        agents.sort();
        Self {
            shared: Arc::new(Shared {
                store,
                client,
                targets,
                retry_for: settings.retry_for,
                retry_min: settings.retry_min,
                retry_max: settings.retry_max.max(settings.retry_min),
                metrics,
                wake,
                abort,
            }),
            agents,
            slots: Arc::new(Semaphore::new(settings.concurrency.max(1))),
            lease: settings.timeout + CLAIM_MARGIN,
            poll: settings.poll,
            closing,
        }
    }

    /// Runs until closing; attempts run on `tracker`.
    pub(super) async fn run(self, tracker: TaskTracker) {
        let mut store_down = false;
        loop {
            match self.claim_due(&tracker).await {
                Ok(()) if store_down => {
                    store_down = false;
                    tracing::info!("the store is available again for webhook deliveries");
                }
                Ok(()) => {}
                Err(e) if !store_down => {
                    store_down = true;
                    tracing::warn!(error = %e, "cannot look for due webhook deliveries");
                }
                Err(_) => {}
            }
            tokio::select! {
                () = self.closing.cancelled() => break,
                () = self.shared.wake.notified() => {}
                () = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    /// Claims as many due deliveries as there are free slots and starts their attempts.
    async fn claim_due(&self, tracker: &TaskTracker) -> Result<(), StoreError> {
        let free = self.slots.available_permits();
        if free == 0 || self.closing.is_cancelled() {
            return Ok(());
        }
        let store = &self.shared.store;
        let ids = store
            .due_deliveries(&self.agents, now_ms(), free as i64)
            .await?;
        for id in ids {
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                break;
            };
            let claim = format!("{:032x}", rand::random::<u128>());
            let now = now_ms();
            let until = now.saturating_add(self.lease.as_millis() as i64);
            if let Some(d) = store.claim_delivery(&id, &claim, now, until).await? {
                tracker.spawn(attempt(self.shared.clone(), d, claim, permit));
            }
        }
        Ok(())
    }
}

/// How an attempt went.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Delivered(u16),
    /// Not worth retrying: the receiver refused it.
    Refused(u16),
    /// Worth retrying: the receiver's status, if it answered, and what went wrong.
    Retry(Option<u16>, String),
}

fn classify(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered(status),
        408 | 429 | 500..=599 => {
            Outcome::Retry(Some(status), format!("the receiver answered {status}"))
        }
        _ => Outcome::Refused(status),
    }
}

fn request_error(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return "the receiver did not answer in time".into();
    }
    let what = if e.is_connect() {
        "cannot connect to the receiver"
    } else {
        "the request failed"
    };
    // The causes, without the URL (it may hold a token of the receiver's).
    let e = e.without_url();
    let mut text = what.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// The delay before the retry that follows attempt number `attempts` (1 for the first).
fn backoff(min: Duration, max: Duration, attempts: i64, jitter: f64) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let base = min.saturating_mul(1u32 << doublings).min(max);
    base.mul_f64(0.75 + 0.5 * jitter.clamp(0.0, 1.0))
}

async fn attempt(s: Arc<Shared>, d: ClaimedDelivery, claim: String, _slot: OwnedSemaphorePermit) {
    let Some(target) = s.targets.get(&d.agent) else {
        return;
    };
    let t = now_ms() / 1000;
    let signature = sign::signature_header(target.secret.expose(), t, d.body.as_bytes());
    s.metrics.add_attempt();
    let request = s
        .client
        .post(&d.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(sign::SIGNATURE_HEADER, signature)
        .header(sign::DELIVERY_ID_HEADER, &d.id)
        .header(sign::EVENT_HEADER, &d.event)
        .body(d.body.clone())
        .send();
    let outcome = tokio::select! {
        r = request => match r {
            Ok(resp) => classify(resp.status().as_u16()),
            Err(e) => Outcome::Retry(None, request_error(e)),
        },
        () = s.abort.cancelled() => {
            // Let the claim go: the next server to run tries again at once.
            let settle = Settle {
                state: PENDING,
                next_attempt_ms: Some(now_ms()),
                last_status: None,
                last_error: Some("interrupted by the server stopping".into()),
                delivered_at_ms: None,
            };
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                s.store.settle_delivery(&d.id, &claim, &settle),
            )
            .await;
            return;
        }
    };
    let now = now_ms();
    let settle = match outcome {
        Outcome::Delivered(status) => Settle {
            state: DELIVERED,
            next_attempt_ms: None,
            last_status: Some(i64::from(status)),
            last_error: None,
            delivered_at_ms: Some(now),
        },
        Outcome::Refused(status) => Settle {
            state: FAILED,
            next_attempt_ms: None,
            last_status: Some(i64::from(status)),
            last_error: Some(format!(
                "the receiver answered {status}, which is not retried"
            )),
            delivered_at_ms: None,
        },
        Outcome::Retry(status, error) => {
            let delay = backoff(s.retry_min, s.retry_max, d.attempts, rand::random());
            let next = now.saturating_add(delay.as_millis() as i64);
            let give_up_at = d
                .created_at_ms
                .saturating_add(s.retry_for.as_millis() as i64);
            if next > give_up_at {
                Settle {
                    state: FAILED,
                    next_attempt_ms: None,
                    last_status: status.map(i64::from),
                    last_error: Some(format!("{error}; given up after {} attempts", d.attempts)),
                    delivered_at_ms: None,
                }
            } else {
                Settle {
                    state: PENDING,
                    next_attempt_ms: Some(next),
                    last_status: status.map(i64::from),
                    last_error: Some(error),
                    delivered_at_ms: None,
                }
            }
        }
    };
    settle_outcome(&s, &d, &claim, &settle).await;
    s.wake.notify_one();
}

/// Records the outcome, retrying while the database is away (the claim keeps others off it
/// meanwhile; if it lapses first, the delivery may be attempted again).
async fn settle_outcome(s: &Shared, d: &ClaimedDelivery, claim: &str, settle: &Settle) {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times();
    let retried = (|| s.store.settle_delivery(&d.id, claim, settle))
        .retry(backoff)
        .when(StoreError::retryable)
        .notify(|e, _| {
            tracing::warn!(error = %e, delivery_id = %d.id, "cannot record a webhook attempt yet");
        });
    let settled = tokio::select! {
        r = retried => match r {
            Ok(held) => Some(held),
            Err(e) => {
                tracing::error!(error = %e, delivery_id = %d.id, "cannot record a webhook attempt");
                None
            }
        },
        () = s.abort.cancelled() => None,
    };
    if settled != Some(true) {
        return;
    }
    match settle.state {
        DELIVERED => {
            s.metrics.add_delivered();
            tracing::debug!(delivery_id = %d.id, event = %d.event, attempts = d.attempts, "webhook delivered");
        }
        FAILED => {
            s.metrics.add_failed();
            tracing::warn!(
                delivery_id = %d.id,
                event = %d.event,
                agent = %d.agent,
                attempts = d.attempts,
                error = settle.last_error.as_deref().unwrap_or_default(),
                "webhook delivery failed"
            );
        }
        _ => tracing::debug!(
            delivery_id = %d.id,
            attempts = d.attempts,
            error = settle.last_error.as_deref().unwrap_or_default(),
            "webhook attempt failed; retrying later"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_sorted() {
        assert_eq!(classify(204), Outcome::Delivered(204));
        for retried in [408, 429, 500, 503] {
            assert!(matches!(classify(retried), Outcome::Retry(Some(s), _) if s == retried));
        }
        for refused in [301, 400, 401, 404, 410, 422] {
            assert_eq!(classify(refused), Outcome::Refused(refused));
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_max_with_jitter() {
        let (min, max) = (Duration::from_secs(10), Duration::from_secs(3600));
        assert_eq!(backoff(min, max, 1, 0.5), min);
        assert_eq!(backoff(min, max, 3, 0.5), Duration::from_secs(40));
        assert_eq!(backoff(min, max, 40, 0.5), max);
        assert_eq!(backoff(min, max, 1, 0.0), Duration::from_millis(7500));
        assert_eq!(backoff(min, max, 1, 1.0), Duration::from_millis(12_500));
    }
}
