//! Runs CPU-heavy engine work on tokio's blocking threads, never on the async runtime: at most
//! `concurrency` jobs at once, waiting callers served first come first served (tokio's semaphore
//! is fair), and at most `max_waiting` callers queued; past that a job is refused at once with
//! [`EngineError::Busy`] instead of growing a queue without limit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::EngineError;

pub struct BlockingPool {
    name: String,
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// Decrements the waiting count however the wait ends.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl BlockingPool {
    pub fn new(name: impl Into<String>, concurrency: usize, max_waiting: usize) -> Self {
        Self {
            name: name.into(),
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
        }
    }

    /// Jobs waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Runs `job` on a blocking thread once a slot is free. The job gets a check that turns
    /// true when `cancel` fires, and should poll it between steps.
    pub async fn run<T, F>(&self, cancel: &CancellationToken, job: F) -> Result<T, EngineError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Fn() -> bool) -> Result<T, EngineError> + Send + 'static,
    {
        self.slot(cancel).await?.run(job).await
    }

    /// Waits for a free slot (or refuses at once with [`EngineError::Busy`] when too many are
    /// waiting), without giving up the job: a caller that is refused still has what it would
    /// have moved into the job.
    pub async fn slot(&self, cancel: &CancellationToken) -> Result<Slot, EngineError> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let queued = self.waiting.fetch_add(1, Ordering::SeqCst);
                let _waiting = Waiting(&self.waiting);
                if queued >= self.max_waiting {
                    return Err(EngineError::Busy {
                        engine: self.name.clone(),
                        queued,
                    });
                }
                tokio::select! {
                    _ = cancel.cancelled() => return Err(EngineError::Cancelled),
                    p = self.permits.clone().acquire_owned() => p.map_err(|_| EngineError::failed(&self.name, "engine closed"))?,
                }
            }
        };
        Ok(Slot {
            permit,
            cancel: cancel.clone(),
            name: self.name.clone(),
        })
    }
}

/// A slot of a [`BlockingPool`], held until its job is done.
pub struct Slot {
    permit: OwnedSemaphorePermit,
    cancel: CancellationToken,
    name: String,
}

impl Slot {
    /// Runs `job` on a blocking thread; the slot is free again when it returns.
    pub async fn run<T, F>(self, job: F) -> Result<T, EngineError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Fn() -> bool) -> Result<T, EngineError> + Send + 'static,
    {
        let Slot {
            permit,
            cancel,
            name,
        } = self;
        let handle = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let cancelled = move || cancel.is_cancelled();
            job(&cancelled)
        });
        match handle.await {
            Ok(r) => r,
            Err(e) => Err(EngineError::failed(&name, format!("worker failed: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn refuses_past_the_queue_bound_and_runs_the_rest() {
        let pool = Arc::new(BlockingPool::new("test", 1, 1));
        let cancel = CancellationToken::new();
        let slow = |ms: u64| {
            move |_: &dyn Fn() -> bool| -> Result<u64, EngineError> {
                std::thread::sleep(Duration::from_millis(ms));
                Ok(ms)
            }
        };
        let (p1, p2, c1, c2) = (pool.clone(), pool.clone(), cancel.clone(), cancel.clone());
        let a = tokio::spawn(async move { p1.run(&c1, slow(300)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let b = tokio::spawn(async move { p2.run(&c2, slow(10)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let c = pool.run(&cancel, slow(10)).await;
        assert!(matches!(c, Err(EngineError::Busy { .. })), "{c:?}");
        assert_eq!(a.await.unwrap(), Ok(300));
        assert_eq!(b.await.unwrap(), Ok(10));
        assert_eq!(pool.waiting(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_the_queue_and_jobs_see_cancellation() {
        let pool = Arc::new(BlockingPool::new("test", 1, 4));
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let p = pool.clone();
        let running = tokio::spawn(async move {
            p.run(&c, |cancelled: &dyn Fn() -> bool| {
                let mut steps = 0;
                while !cancelled() && steps < 1000 {
                    std::thread::sleep(Duration::from_millis(5));
                    steps += 1;
                }
                if cancelled() {
                    Err(EngineError::Cancelled)
                } else {
                    Ok(steps)
                }
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        let waiter_cancel = CancellationToken::new();
        let p = pool.clone();
        let wc = waiter_cancel.clone();
        let waiter = tokio::spawn(async move { p.run(&wc, |_: &dyn Fn() -> bool| Ok(1)).await });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(pool.waiting(), 1);
        waiter_cancel.cancel();
        assert_eq!(waiter.await.unwrap(), Err(EngineError::Cancelled));
        assert_eq!(pool.waiting(), 0);
        cancel.cancel();
        assert_eq!(running.await.unwrap(), Err(EngineError::Cancelled));
    }
}
