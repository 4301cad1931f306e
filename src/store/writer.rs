//! `StoreWriter`: calls hand it writes and go on. A background task writes them in batches, one
//! transaction each, and waits out a database that is away (retrying with backoff) while the
//! queue holds what comes meanwhile. Nothing here ever makes a caller wait: when the queue is
//! full a write is dropped and counted.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Store, StoreError, Write};
use crate::metrics::StoreMetrics;

/// Writes per transaction at most.
const MAX_BATCH: usize = 256;
/// How long a batch waits for more writes after its first.
const GATHER: Duration = Duration::from_millis(20);
/// Retries start at this delay and double up to `RETRY_MAX`.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// At most one warning per this about dropped or refused writes.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A handle to the background writer; clones share its queue. The task ends when every handle
/// is dropped (after writing what is queued) or at [`StoreWriter::close`].
#[derive(Clone)]
pub struct StoreWriter {
    tx: mpsc::UnboundedSender<Write>,
    shared: Arc<Shared>,
}

/// What the handles and the task share.
struct Shared {
    capacity: usize,
    /// Writes accepted and not yet written or given up: in the channel or in the batch.
    queued: AtomicUsize,
    /// Writes accepted so far. Taken with the channel send under this lock, so its order is
    /// the channel's and [`StoreWriter::flush`] knows exactly what came before it.
    accepted: Mutex<u64>,
    /// Writes the task has finished with (written or given up), in channel order.
    done: watch::Sender<u64>,
    metrics: StoreMetrics,
    stop: CancellationToken,
    drop_log: Throttle,
}

impl StoreWriter {
    /// Starts the writer task on `tracker`. `queue` is the most writes waiting at once.
    pub fn spawn(
        store: Store,
        queue: usize,
        metrics: StoreMetrics,
        tracker: &TaskTracker,
    ) -> StoreWriter {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            capacity: queue.max(1),
            queued: AtomicUsize::new(0),
            accepted: Mutex::new(0),
            done: watch::Sender::new(0),
            metrics,
            stop: CancellationToken::new(),
            drop_log: Throttle::new(),
        });
        let task = Task {
            store,
            rx,
            shared: shared.clone(),
            outage: None,
            refused_log: Throttle::new(),
        };
        tracker.spawn(task.run());
        StoreWriter { tx, shared }
    }

    /// Queues a write. Never waits and never fails: when the queue is full (or the writer has
    /// stopped) the write is dropped, counted in `voxwire_store_dropped_total` and warned about
    /// at most once per 10 s.
    pub fn send(&self, w: Write) {
        let s = &self.shared;
        let admitted = s
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q < s.capacity).then_some(q + 1)
            })
            .is_ok();
        if !admitted {
            return self.dropped(&w, "the store queue is full");
        }
        let mut accepted = s.accepted.lock().unwrap_or_else(|e| e.into_inner());
        s.metrics.queue_add(1);
        match self.tx.send(w) {
            Ok(()) => *accepted += 1,
            Err(mpsc::error::SendError(w)) => {
                drop(accepted);
                s.metrics.queue_add(-1);
                s.queued.fetch_sub(1, Ordering::AcqRel);
                self.dropped(&w, "the store writer has stopped");
            }
        }
    }

    fn dropped(&self, w: &Write, why: &str) {
        let s = &self.shared;
        s.metrics.add_dropped(1);
        if let Some(more) = s.drop_log.check() {
            tracing::warn!(
                call_id = w.call_id(),
                write = w.kind(),
                capacity = s.capacity,
                dropped_since_last_warning = more + 1,
                "{why}: a write was dropped (see voxwire_store_dropped_total)"
            );
        }
    }

    /// Waits until every write sent before this call is finished with (written, or given up
    /// as refused by the database), at most `timeout`. False if some are still waiting, e.g.
    /// while the database is away.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let target = *self
            .shared
            .accepted
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut done = self.shared.done.subscribe();
        let reached = tokio::time::timeout(timeout, done.wait_for(|d| *d >= target)).await;
        matches!(reached, Ok(Ok(_)))
    }

    /// Flushes (at most `timeout`), then stops the task; what is still queued is dropped and
    /// counted. Later writes are dropped. Returns whether the flush finished.
    pub async fn close(&self, timeout: Duration) -> bool {
        let flushed = self.flush(timeout).await;
        self.shared.stop.cancel();
        flushed
    }

    /// Writes waiting now.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
    }
}

/// Since when the database has been failing, and how often.
struct Outage {
    since: Instant,
    failures: u64,
}

struct Task {
    store: Store,
    rx: mpsc::UnboundedReceiver<Write>,
    shared: Arc<Shared>,
    outage: Option<Outage>,
    refused_log: Throttle,
}

/// How a batch ended.
enum Outcome {
    Written,
    /// The database refused it (not worth retrying).
    Refused(StoreError),
    /// The writer was stopped while waiting for the database.
    Stopped,
}

impl Task {
    async fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let got = tokio::select! {
                n = self.rx.recv_many(&mut batch, MAX_BATCH) => n,
                () = self.shared.stop.cancelled() => break,
            };
            if got == 0 {
                break; // every handle is gone and the queue is empty
            }
            let deadline = Instant::now() + GATHER;
            while batch.len() < MAX_BATCH {
                let room = MAX_BATCH - batch.len();
                match tokio::time::timeout_at(deadline, self.rx.recv_many(&mut batch, room)).await {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
            self.write(&batch).await;
            self.finished(batch.len());
            batch.clear();
        }
        self.rx.close();
        let mut left = 0;
        while self.rx.try_recv().is_ok() {
            left += 1;
        }
        if left > 0 {
            self.shared.metrics.add_dropped(left);
            self.finished(left);
            tracing::error!(
                store = %self.store.describe(),
                writes = left,
                "the store writer stopped before these writes could be stored"
            );
        }
    }

    fn finished(&self, n: usize) {
        self.shared.queued.fetch_sub(n, Ordering::AcqRel);
        self.shared.metrics.queue_add(-(n as i64));
        self.shared.done.send_modify(|d| *d += n as u64);
    }

    /// Writes the batch, retrying while the database is away. If the database refuses the
    /// whole batch, its writes are tried one by one so that one bad write costs only itself.
    async fn write(&mut self, batch: &[Write]) {
        match self.attempt(batch).await {
            Outcome::Written => self.shared.metrics.add_written(batch.len()),
            Outcome::Stopped => self.give_up(batch.len()),
            Outcome::Refused(e) if batch.len() == 1 => self.refused(&batch[0], &e),
            Outcome::Refused(e) => {
                tracing::warn!(
                    store = %self.store.describe(),
                    error = %e,
                    writes = batch.len(),
                    "the store refused a batch; writing its writes one by one"
                );
                for (i, w) in batch.iter().enumerate() {
                    match self.attempt(std::slice::from_ref(w)).await {
                        Outcome::Written => self.shared.metrics.add_written(1),
                        Outcome::Refused(e) => self.refused(w, &e),
                        Outcome::Stopped => return self.give_up(batch.len() - i),
                    }
                }
            }
        }
    }

    fn refused(&self, w: &Write, e: &StoreError) {
        self.shared.metrics.add_dropped(1);
        if let Some(more) = self.refused_log.check() {
            tracing::error!(
                store = %self.store.describe(),
                error = %e,
                call_id = w.call_id(),
                write = w.kind(),
                refused_since_last_report = more + 1,
                "the store refused a write; it is dropped"
            );
        }
    }

    fn give_up(&self, n: usize) {
        self.shared.metrics.add_dropped(n);
        tracing::error!(
            store = %self.store.describe(),
            writes = n,
            "the store writer stopped while the database was away; these writes are lost"
        );
    }

    /// One write of the batch, retried with backoff for as long as the errors are retryable
    /// (and the writer is not stopped). Every failure is counted; the first of an outage and
    /// the recovery are logged.
    async fn attempt(&mut self, batch: &[Write]) -> Outcome {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(RETRY_MIN)
            .with_max_delay(RETRY_MAX)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        let store = self.store.clone();
        let metrics = self.shared.metrics.clone();
        let stop = self.shared.stop.clone();
        let outage = &mut self.outage;
        let retried = (|| store.write(batch))
            .retry(backoff)
            .when(StoreError::retryable)
            .notify(|e: &StoreError, delay: Duration| {
                metrics.add_error();
                match outage {
                    Some(o) => o.failures += 1,
                    None => {
                        tracing::error!(
                            store = %store.describe(),
                            error = %e,
                            retry_in_ms = delay.as_millis() as u64,
                            "the store is unavailable; writes are queued and retried until it is back"
                        );
                        *outage = Some(Outage {
                            since: Instant::now(),
                            failures: 1,
                        });
                    }
                }
            });
        let result = tokio::select! {
            r = retried => r,
            () = stop.cancelled() => return Outcome::Stopped,
        };
        // Whether it wrote or refused, the database answered: any outage is over.
        if let Some(o) = self.outage.take() {
            tracing::info!(
                store = %self.store.describe(),
                down_for_ms = o.since.elapsed().as_millis() as u64,
                failed_attempts = o.failures,
                queued = self.shared.queued.load(Ordering::Acquire),
                "the store is available again; writing what was queued"
            );
        }
        match result {
            Ok(()) => Outcome::Written,
            Err(e) => {
                self.shared.metrics.add_error();
                Outcome::Refused(e)
            }
        }
    }
}

/// Lets one message through per [`LOG_EVERY`] and counts the ones held back.
struct Throttle {
    start: std::time::Instant,
    next_ms: AtomicU64,
    held: AtomicU64,
}

impl Throttle {
    fn new() -> Self {
        Self {
            start: std::time::Instant::now(),
            next_ms: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// `Some(messages held back since the last one)` when one may be logged now.
    fn check(&self) -> Option<u64> {
        let now = self.start.elapsed().as_millis() as u64;
        let next = self.next_ms.load(Ordering::Acquire);
        let every = LOG_EVERY.as_millis() as u64;
        if now >= next
            && self
                .next_ms
                .compare_exchange(next, now + every, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            return Some(self.held.swap(0, Ordering::AcqRel));
        }
        self.held.fetch_add(1, Ordering::AcqRel);
        None
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
