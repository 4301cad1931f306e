//! The packed model's threads: started once at load and kept alive, so that handing a matrix
//! product to them costs a store and a few hundred nanoseconds, not a thread wake-up.
//!
//! A forward pass hands out about 150 pieces of work per token (each layer's matrix products
//! and attention), each a few tens of microseconds long. Between them the workers spin on an
//! atomic counter, yielding the core to any thread that wants it; after [`SPIN`] without work
//! they sleep on a condition variable (so an idle
//! model costs no CPU) and the next piece of work wakes them. The caller works too: with `n`
//! threads, `n - 1` workers are started. Tasks are claimed one at a time from a shared
//! counter, so a worker that the OS pre-empts (the server runs other models beside this one)
//! delays only the task it holds.
//!
//! This file has `unsafe` code: a job borrows the caller's stack, and workers see it through
//! a pointer whose lifetime is erased; [`Pool::run`] does not return (nor unwind) before
//! every worker that joined the job is done with it.

#![allow(unsafe_code)]

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it sleeps.
const SPIN: Duration = Duration::from_micros(100);

/// A job as the workers see it: a pointer to the caller's reference to the task function,
/// its lifetime erased.
type JobRef = *const (dyn Fn(usize) + Sync + 'static);

struct Shared {
    /// Bumped for each job; idle workers wait for it to change.
    epoch: AtomicU64,
    /// The current job (a `*const JobRef`), valid while `open` is true.
    job: AtomicPtr<JobRef>,
    /// Whether workers may still join the current job.
    open: AtomicBool,
    /// Workers that joined the current job and are not done with it.
    active: AtomicUsize,
    /// Tasks of the current job and the next one to claim.
    tasks: AtomicUsize,
    next: AtomicUsize,
    /// A task of the current job panicked in a worker.
    panicked: AtomicBool,
    /// Workers asleep (or about to be) on `wake`.
    sleeping: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    stop: AtomicBool,
}

/// A fixed set of threads that run jobs for one caller at a time.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// One job at a time (a model shared by several sessions gets calls from several threads).
    running: Mutex<()>,
}

impl Pool {
    /// A pool of `threads` (the caller counts as one; at least 1).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            open: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            tasks: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            sleeping: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let mut pool = Self {
            shared,
            workers: Vec::new(),
            running: Mutex::new(()),
        };
        for i in 1..threads.max(1) {
            let shared = Arc::clone(&pool.shared);
            let handle = std::thread::Builder::new()
                .name(format!("voxwire-llm-{i}"))
                .spawn(move || worker(&shared))?;
            pool.workers.push(handle);
        }
        Ok(pool)
    }

    /// Threads that run each job, the caller's included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(0)`, …, `f(tasks - 1)` on the pool's threads and the caller's, and returns
    /// when all are done. A panic in a task is passed on to the caller.
    ///
    /// The caller never waits for a worker that has not started: workers join a job while it
    /// is open, and the caller closes it once every task is claimed, so a worker the OS has
    /// not scheduled costs nothing; only a task already taken is waited for.
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if tasks == 0 {
            return;
        }
        if self.workers.is_empty() || tasks == 1 {
            (0..tasks).for_each(f);
            return;
        }
        let _one = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // SAFETY: only the lifetime is changed. Workers dereference `job` only after joining
        // (`active`) while `open` is true, and this function closes the job and waits for
        // `active` to reach zero before it returns or unwinds, so `f` outlives every use.
        let erased: JobRef = unsafe {
            std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), JobRef>(f as *const _)
        };
        s.job
            .store((&erased as *const JobRef).cast_mut(), Ordering::Relaxed);
        s.tasks.store(tasks, Ordering::Relaxed);
        s.next.store(0, Ordering::Relaxed);
        s.panicked.store(false, Ordering::Relaxed);
        s.open.store(true, Ordering::SeqCst);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if s.sleeping.load(Ordering::SeqCst) > 0 {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| claim_tasks(s, f)));
        s.open.store(false, Ordering::SeqCst);
        let mut spins = 0u32;
        while s.active.load(Ordering::SeqCst) > 0 {
            // A worker the OS pre-empted in a task needs a core: after a while, offer this one.
            spins = spins.wrapping_add(1);
            if spins < 256 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        s.job.store(std::ptr::null_mut(), Ordering::Relaxed);
        if let Err(p) = mine {
            resume_unwind(p);
        }
        if s.panicked.load(Ordering::Relaxed) {
            panic!("a task of the model's thread pool panicked");
        }
    }

    /// Splits `data` into chunks of `chunk` items (the last one shorter) and runs
    /// `f(index, chunk)` for each on the pool.
    pub fn for_chunks_mut<T: Send>(
        &self,
        data: &mut [T],
        chunk: usize,
        f: impl Fn(usize, &mut [T]) + Sync,
    ) {
        let chunk = chunk.max(1);
        let len = data.len();
        let base = SyncMutPtr(data.as_mut_ptr());
        self.run(len.div_ceil(chunk), &|i| {
            let start = i * chunk;
            let n = chunk.min(len - start);
            let base = &base;
            // SAFETY: `run` hands out each index once, so the chunks `start..start + n` are
            // disjoint and inside `data`, which is borrowed mutably for the whole call.
            let part = unsafe { std::slice::from_raw_parts_mut(base.0.add(start), n) };
            f(i, part)
        });
    }
}

/// A pointer to the items of a slice that `for_chunks_mut` splits among threads.
struct SyncMutPtr<T>(*mut T);

// SAFETY: threads only make disjoint sub-slices of it (see `for_chunks_mut`), and `T: Send`.
unsafe impl<T: Send> Sync for SyncMutPtr<T> {}

/// Runs tasks of the current job until none is left.
fn claim_tasks(s: &Shared, f: &(dyn Fn(usize) + Sync)) {
    let tasks = s.tasks.load(Ordering::Relaxed);
    loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= tasks {
            break;
        }
        f(i);
    }
}

fn worker(s: &Shared) {
    let mut seen = 0u64;
    loop {
        // Wait for a new job: spin, then sleep.
        let started = Instant::now();
        let mut spins = 0u32;
        while s.epoch.load(Ordering::Acquire) == seen {
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(16) {
                std::hint::spin_loop();
                continue;
            }
            if started.elapsed() < SPIN {
                // Let another thread have this core if one is waiting for it (the server's
                // other models, or this pool's caller).
                std::thread::yield_now();
                continue;
            }
            let mut g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.sleeping.fetch_add(1, Ordering::SeqCst);
            while s.epoch.load(Ordering::SeqCst) == seen {
                g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            s.sleeping.fetch_sub(1, Ordering::SeqCst);
        }
        seen = s.epoch.load(Ordering::Acquire);
        if s.stop.load(Ordering::Acquire) {
            return;
        }
        // Join the job if it is still open (see `Pool::run`).
        s.active.fetch_add(1, Ordering::SeqCst);
        if s.open.load(Ordering::SeqCst) {
            let job = s.job.load(Ordering::Relaxed);
            if !job.is_null() {
                // SAFETY: the job is open and this worker is counted in `active`, so `run`
                // keeps the reference and the function it points to alive until we leave.
                let f = unsafe { &**job };
                if catch_unwind(AssertUnwindSafe(|| claim_tasks(s, f))).is_err() {
                    s.panicked.store(true, Ordering::Relaxed);
                }
            }
        }
        s.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.stop.store(true, Ordering::SeqCst);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_every_task_once() {
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads).unwrap();
            assert_eq!(pool.threads(), threads);
            for round in 0..200 {
                let n = round % 37;
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.run(n, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                if round % 50 == 0 {
                    // Long enough for the workers to fall asleep.
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    }

    #[test]
    fn chunks_cover_the_slice() {
        let pool = Pool::new(2).unwrap();
        let mut v = vec![0usize; 1001];
        pool.for_chunks_mut(&mut v, 64, |i, c| {
            for (j, x) in c.iter_mut().enumerate() {
                *x = i * 64 + j;
            }
        });
        assert!(v.iter().enumerate().all(|(i, &x)| i == x));
    }

    #[test]
    fn a_panicking_task_reaches_the_caller_and_the_pool_survives() {
        let pool = Pool::new(2).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(64, &|i| assert!(i != 40, "task 40"));
        }));
        assert!(r.is_err());
        let count = AtomicUsize::new(0);
        pool.run(10, &|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 10);
    }
}
