//! First words first. The local engines share a few cores, and what a caller waits for is the
//! reply's first audio: their words transcribed, the model's reading of them and its first
//! words, and the voice of those words. The rest of a reply (its later words, its later
//! pieces of speech) and the model's warm-up between turns can wait: the caller is still
//! hearing the first words.
//!
//! A turn holds an [`Urgent`] from its start until its first audio is ready. While any turn
//! does, work that can wait steps aside:
//! - the local language model pauses the tail of a reply (once its first words are written,
//!   see [`FirstWords`]) and its warm-up between tokens, at most [`TAIL_PAUSE`] per reply;
//! - with a local voice, a reply's later pieces ask for it only once no turn is urgent, or when
//!   the audio already made for the caller would otherwise run out (see [`Gate::quiet`]).
//!
//! Nothing waits without a bound, so a machine that is always busy still finishes every reply,
//! only with less of the reordering.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex};
use std::time::{Duration, Instant};

/// The longest a reply's tail (or a warm-up) is held back in all, over the whole reply.
pub const TAIL_PAUSE: Duration = Duration::from_millis(400);

/// Counts the turns on their way to their first audio, and wakes work waiting for none to be.
/// One per process ([`gate`]): the cores are the process's.
pub struct Gate {
    urgent: Mutex<usize>,
    changed: Condvar,
    notify: tokio::sync::Notify,
    /// Times work stepped aside, and for how long in all (µs), for the metrics.
    yields: AtomicUsize,
    yielded_us: AtomicUsize,
}

static GATE: LazyLock<Gate> = LazyLock::new(Gate::new);

/// The process's gate.
pub fn gate() -> &'static Gate {
    &GATE
}

/// A turn on its way to its first audio; the turn is no longer urgent once this is dropped.
#[derive(Debug)]
pub struct Urgent(&'static Gate);

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("urgent", &self.urgent_turns())
            .finish()
    }
}

impl Drop for Urgent {
    fn drop(&mut self) {
        let mut n = self.0.count();
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.0.changed.notify_all();
            self.0.notify.notify_waiters();
        }
    }
}

impl Gate {
    fn new() -> Self {
        Gate {
            urgent: Mutex::new(0),
            changed: Condvar::new(),
            notify: tokio::sync::Notify::new(),
            yields: AtomicUsize::new(0),
            yielded_us: AtomicUsize::new(0),
        }
    }

    fn count(&self) -> std::sync::MutexGuard<'_, usize> {
        self.urgent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A turn starts: urgent until the guard is dropped (at its first audio, or its end).
    pub fn begin(&'static self) -> Urgent {
        *self.count() += 1;
        Urgent(self)
    }

    /// Turns now on their way to their first audio.
    pub fn urgent_turns(&self) -> usize {
        *self.count()
    }

    /// How often work stepped aside for urgent turns, and for how long in all.
    pub fn yielded(&self) -> (usize, Duration) {
        (
            self.yields.load(Ordering::Relaxed),
            Duration::from_micros(self.yielded_us.load(Ordering::Relaxed) as u64),
        )
    }

    fn record(&self, waited: Duration) {
        self.yields.fetch_add(1, Ordering::Relaxed);
        self.yielded_us
            .fetch_add(waited.as_micros() as usize, Ordering::Relaxed);
    }

    /// Blocks this thread while any turn is urgent, at most `max`; returns how long it
    /// waited. For work on blocking threads (the language model between two tokens).
    pub fn wait_quiet(&self, max: Duration) -> Duration {
        let start = Instant::now();
        let n = self.count();
        if *n == 0 || max.is_zero() {
            return Duration::ZERO;
        }
        let _unused = self
            .changed
            .wait_timeout_while(n, max, |n| *n > 0)
            .unwrap_or_else(|p| p.into_inner());
        let waited = start.elapsed();
        self.record(waited);
        waited
    }

    /// Waits while any turn is urgent, at most `max`; returns how long it waited. For async
    /// work that can wait (a reply's later pieces).
    pub async fn quiet(&self, max: Duration) -> Duration {
        let start = Instant::now();
        let deadline = tokio::time::Instant::now() + max;
        let mut waited = false;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.urgent_turns() == 0 {
                break;
            }
            waited = true;
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        let elapsed = start.elapsed();
        if waited {
            self.record(elapsed);
        }
        elapsed
    }
}

/// Whether a reply's first words are still to be written: set by the turn when the first
/// piece of the reply goes to the voice, read by a local model to know whether it is writing
/// what the caller waits for (served first) or the rest (which steps aside).
#[derive(Debug, Clone)]
pub struct FirstWords(Arc<AtomicBool>);

impl Default for FirstWords {
    fn default() -> Self {
        FirstWords(Arc::new(AtomicBool::new(true)))
    }
}

impl FirstWords {
    /// For work with no first words anyone waits for (a summary): a tail from the start.
    pub fn background() -> Self {
        let w = FirstWords::default();
        w.written();
        w
    }

    /// The first words are written: what follows is the reply's tail.
    pub fn written(&self) {
        self.0.store(false, Ordering::Release);
    }

    pub fn pending(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Compute seats of one engine (the local language model): who computes next when a seat
/// frees. Work for first words waits ahead of tails; a tail holding a seat gives it up
/// between two steps when first words wait (see [`Seats::step`]).
pub struct Seats {
    state: Mutex<SeatState>,
    changed: Condvar,
}

struct SeatState {
    free: usize,
    /// Waiting for a seat to write first words.
    urgent_waiting: usize,
}

impl Seats {
    pub fn new(seats: usize) -> Self {
        Seats {
            state: Mutex::new(SeatState {
                free: seats.max(1),
                urgent_waiting: 0,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SeatState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a seat, blocking until one is free; a tail also waits while first words do.
    /// Gives up (returning `None`) when `cancelled` turns true, checked every few ms.
    pub fn take(&self, urgent: bool, cancelled: &dyn Fn() -> bool) -> Option<Seat<'_>> {
        let mut s = self.lock();
        if urgent {
            s.urgent_waiting += 1;
        }
        let ready = |s: &SeatState| s.free > 0 && (urgent || s.urgent_waiting == 0);
        while !ready(&s) {
            if cancelled() {
                if urgent {
                    s.urgent_waiting -= 1;
                    // A tail held back for this waiter may go on.
                    self.changed.notify_all();
                }
                return None;
            }
            s = self
                .changed
                .wait_timeout(s, Duration::from_millis(20))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if urgent {
            s.urgent_waiting -= 1;
        }
        s.free -= 1;
        Some(Seat { seats: self })
    }

    /// First words waiting for a seat now.
    pub fn urgent_waiting(&self) -> usize {
        self.lock().urgent_waiting
    }
}

/// A seat taken from [`Seats`], given back when dropped.
pub struct Seat<'a> {
    seats: &'a Seats,
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        let mut s = self.seats.lock();
        s.free += 1;
        self.seats.changed.notify_all();
    }
}

/// The scheduling of one piece of model work across its steps: call [`Turn::step`] before
/// each step. Holds a seat while it computes.
pub struct Turn<'a> {
    gate: &'a Gate,
    seats: &'a Seats,
    seat: Option<Seat<'a>>,
    first_words: Option<FirstWords>,
    /// What is left of [`TAIL_PAUSE`] for this piece of work.
    pause_left: Duration,
}

impl<'a> Turn<'a> {
    /// `first_words`: `None` for work nobody waits for (a warm-up), which is a tail from the
    /// start.
    pub fn new(gate: &'a Gate, seats: &'a Seats, first_words: Option<FirstWords>) -> Self {
        Turn {
            gate,
            seats,
            seat: None,
            first_words,
            pause_left: TAIL_PAUSE,
        }
    }

    fn urgent(&self) -> bool {
        self.first_words.as_ref().is_some_and(FirstWords::pending)
    }

    /// Before a step: takes a seat if it has none; a tail first steps aside while first words
    /// wait for a seat or any turn is on its way to its first audio (within its pause budget).
    /// False when `cancelled` turned true meanwhile.
    pub fn step(&mut self, cancelled: &dyn Fn() -> bool) -> bool {
        let urgent = self.urgent();
        if !urgent && self.seat.is_some() {
            let contended = self.seats.urgent_waiting() > 0;
            let busy = !self.pause_left.is_zero() && self.gate.urgent_turns() > 0;
            if contended || busy {
                self.seat = None;
                if busy {
                    let waited = self.gate.wait_quiet(self.pause_left);
                    self.pause_left = self.pause_left.saturating_sub(waited);
                }
            }
        }
        if self.seat.is_none() {
            self.seat = self.seats.take(urgent, cancelled);
        }
        self.seat.is_some() && !cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gate of the test's own, so other tests' turns do not count.
    fn own_gate() -> &'static Gate {
        Box::leak(Box::new(Gate::new()))
    }

    #[test]
    fn first_words_take_the_seat_from_a_tail_between_two_steps() {
        let gate = own_gate();
        let seats = Arc::new(Seats::new(1));
        let order = Arc::new(Mutex::new(Vec::new()));
        let tail_words = FirstWords::default();
        tail_words.written();
        let never = || false;
        // The tail holds the only seat.
        let mut tail = Turn::new(gate, &seats, Some(tail_words));
        assert!(tail.step(&never));
        let (s, o) = (seats.clone(), order.clone());
        let urgent = std::thread::spawn(move || {
            let mut t = Turn::new(gate, &s, Some(FirstWords::default()));
            assert!(t.step(&|| false));
            o.lock().unwrap().push("first words");
        });
        while seats.urgent_waiting() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Its next step gives the seat up and waits for it behind the first words.
        assert!(tail.step(&never));
        order.lock().unwrap().push("tail");
        urgent.join().unwrap();
        assert_eq!(*order.lock().unwrap(), ["first words", "tail"]);
        assert_eq!(tail.pause_left, TAIL_PAUSE);
    }

    #[test]
    fn first_words_keep_their_seat_and_a_waiting_tail_gives_up_when_cancelled() {
        let gate = own_gate();
        let seats = Seats::new(1);
        let mut first = Turn::new(gate, &seats, Some(FirstWords::default()));
        assert!(first.step(&|| false));
        assert!(first.step(&|| false));
        assert!(first.seat.is_some());
        // A tail asking now gives up once cancelled rather than wait for ever.
        let mut tail = Turn::new(gate, &seats, None);
        let asked = Instant::now();
        let cancelled = move || asked.elapsed() > Duration::from_millis(60);
        assert!(!tail.step(&cancelled));
        assert!(tail.seat.is_none());
        drop(first);
        assert!(tail.step(&|| false));
    }

    #[test]
    fn a_tail_waits_for_urgent_turns_within_its_budget() {
        let gate = own_gate();
        let seats = Seats::new(1);
        let urgent = gate.begin();
        assert_eq!(gate.urgent_turns(), 1);
        let mut tail = Turn::new(gate, &seats, None);
        assert!(tail.step(&|| false)); // takes the free seat
        let ended = Arc::new(AtomicBool::new(false));
        let e = ended.clone();
        let ender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            e.store(true, Ordering::SeqCst);
            drop(urgent);
        });
        assert!(tail.step(&|| false));
        // It went on once the urgent turn was over, before its whole budget was spent.
        assert!(ended.load(Ordering::SeqCst));
        assert!(tail.pause_left < TAIL_PAUSE && !tail.pause_left.is_zero());
        assert_eq!(gate.yielded().0, 1);
        ender.join().unwrap();
        assert_eq!(gate.urgent_turns(), 0);
        // A turn that stays urgent holds it back for no more than what is left of the budget.
        let _urgent = gate.begin();
        let left = tail.pause_left;
        assert!(tail.step(&|| false));
        assert!(tail.pause_left.is_zero());
        assert!(gate.yielded().1 >= TAIL_PAUSE - left);
        // With the budget spent, urgent turns no longer hold it back.
        assert!(tail.step(&|| false));
        assert_eq!(gate.yielded().0, 2);
    }

    #[tokio::test]
    async fn later_pieces_wait_for_urgent_turns_at_most_their_bound() {
        let gate = own_gate();
        // No urgent turn: it does not wait at all.
        gate.quiet(Duration::from_secs(30)).await;
        assert_eq!(gate.yielded().0, 0);
        let urgent = gate.begin();
        // Bounded: with the turn still urgent it goes on after `max`.
        let waited = gate.quiet(Duration::from_millis(30)).await;
        assert!(waited >= Duration::from_millis(30));
        assert_eq!(gate.yielded().0, 1);
        // Woken as soon as the last urgent turn ends.
        let waiter = tokio::spawn(gate.quiet(Duration::from_secs(30)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(urgent);
        let waited = waiter.await.unwrap();
        assert!(waited < Duration::from_secs(30));
        assert_eq!(gate.yielded().0, 2);
    }
}
