//! A small mutation fuzzer on stable Rust for `tests/fuzz.rs`: seeded RNG, byte-level
//! mutations (bit flips, interesting values, huge length fields, truncation, insertion,
//! splicing, duplication), a corpus that keeps inputs with a new outcome, and a panic hook that
//! also sees panics something caught on the way out.
//!
//! `VOXWIRE_FUZZ_SECS` (default 8) bounds each target; `VOXWIRE_FUZZ_SEED` replays a run;
//! `VOXWIRE_FUZZ_DUMP=dir` writes each target's seeds to `dir/<target>/` as a cargo-fuzz corpus.

#![allow(dead_code)]

pub mod seeds;

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

thread_local! {
    /// Panics seen on this thread while an input runs: (message, location).
    static PANICS: RefCell<Option<Vec<(String, String)>>> = const { RefCell::new(None) };
}

fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let recorded = PANICS.with(|p| {
                let mut p = p.borrow_mut();
                let Some(list) = p.as_mut() else {
                    return false;
                };
                let msg = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                let at = info
                    .location()
                    .map(|l| format!("{}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                // A panic inside the standard library (an allocation, a slice index) is
                // placed at the first frame outside it.
                let at = if at.starts_with("/rustc/") {
                    first_caller(&std::backtrace::Backtrace::force_capture().to_string())
                        .unwrap_or(at)
                } else {
                    at
                };
                list.push((msg, at));
                true
            });
            if !recorded {
                default(info);
            }
        }));
    });
}

/// The first source location in a backtrace outside the standard library and this harness.
fn first_caller(trace: &str) -> Option<String> {
    trace
        .lines()
        .filter_map(|l| l.trim().strip_prefix("at "))
        .find(|at| {
            !at.starts_with("/rustc/") && !at.contains("fuzz_common") && !at.contains("/std/src/")
        })
        .map(|at| at.trim_start_matches("./").to_string())
}

/// A panic location in voxwire's own source (dependencies' paths are absolute).
fn in_voxwire(at: &str) -> bool {
    at.starts_with("src/")
}

/// Hex of the first bytes of `input`, for reproducing a failure.
pub fn hex(input: &[u8]) -> String {
    let mut s = String::new();
    for b in input.iter().take(512) {
        let _ = write!(s, "{b:02x}");
    }
    if input.len() > 512 {
        let _ = write!(s, "... ({} bytes)", input.len());
    }
    s
}

/// How one input went: `Err` describes a panic that escaped, or one inside voxwire that
/// something caught. Panics caught inside third-party code are returned for reporting.
pub fn run_one<T>(run: &dyn Fn(&[u8]) -> T, input: &[u8]) -> Result<(T, Vec<String>), String> {
    install_hook();
    PANICS.with(|p| *p.borrow_mut() = Some(Vec::new()));
    let out = catch_unwind(AssertUnwindSafe(|| run(input)));
    let panics = PANICS.with(|p| p.borrow_mut().take()).unwrap_or_default();
    let describe = |(msg, at): &(String, String)| format!("{msg} at {at}");
    match out {
        Err(_) => Err(format!(
            "panicked: {}",
            panics
                .iter()
                .map(describe)
                .collect::<Vec<_>>()
                .join("; then ")
        )),
        Ok(_) if panics.iter().any(|(_, at)| in_voxwire(at)) => Err(format!(
            "voxwire code panicked (caught on the way out): {}",
            panics.iter().map(describe).collect::<Vec<_>>().join("; ")
        )),
        Ok(v) => Ok((v, panics.iter().map(describe).collect())),
    }
}

/// Runs `input` and fails the test on any panic, naming `what`.
pub fn must_not_panic<T>(what: &str, run: &dyn Fn(&[u8]) -> T, input: &[u8]) -> T {
    match run_one(run, input) {
        Ok((v, _)) => v,
        Err(e) => panic!("{what}: {e}\ninput: {}", hex(input)),
    }
}

/// Values that break length fields and arithmetic.
const INTERESTING: [u64; 14] = [
    0,
    1,
    0x7F,
    0x80,
    0xFF,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFF,
    1 << 32,
    1 << 60,
    u64::MAX,
];

pub struct Mutator {
    pub rng: StdRng,
}

impl Mutator {
    fn pos(&mut self, len: usize) -> usize {
        if len == 0 {
            0
        } else {
            self.rng.random_range(0..len)
        }
    }

    /// One random mutation of `data`, spliced with `other` when that is picked.
    pub fn mutate(&mut self, data: &mut Vec<u8>, other: &[u8], max_len: usize) {
        let len = data.len();
        match self.rng.random_range(0..11) {
            0 if len > 0 => {
                let i = self.pos(len);
                data[i] ^= 1 << self.rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = self.pos(len);
                data[i] = [0u8, 0xFF, 0x7F, 0x80, 1, 0x10, 0x40][self.rng.random_range(0..7)];
            }
            2 if len > 0 => {
                // A length or count field set to a huge (or zero) value.
                let width = [1usize, 2, 4, 8][self.rng.random_range(0..4)];
                let v = INTERESTING[self.rng.random_range(0..INTERESTING.len())];
                let bytes = v.to_le_bytes();
                let i = self.pos(len);
                for (k, b) in bytes.iter().take(width).enumerate() {
                    if let Some(slot) = data.get_mut(i + k) {
                        *slot = *b;
                    }
                }
            }
            3 if len > 0 => {
                let i = self.pos(len);
                data[i] = data[i].wrapping_add(self.rng.random_range(1..=16) as u8);
            }
            4 if len > 0 => {
                let i = self.pos(len);
                data[i] = data[i].wrapping_sub(self.rng.random_range(1..=16) as u8);
            }
            5 => {
                let n = self.pos(len + 1);
                data.truncate(n);
            }
            6 => {
                let i = self.pos(len + 1);
                let n = self.rng.random_range(1..=16);
                let bytes: Vec<u8> = (0..n).map(|_| self.rng.random()).collect();
                data.splice(i..i, bytes);
            }
            7 if len > 0 => {
                let i = self.pos(len);
                let n = self.rng.random_range(1..=(len - i).min(64));
                data.drain(i..i + n);
            }
            8 if !other.is_empty() => {
                // Splice: a prefix of this input, then a suffix of another.
                let i = self.pos(len + 1);
                let j = self.pos(other.len());
                data.truncate(i);
                data.extend_from_slice(&other[j..]);
            }
            9 if len > 0 => {
                // Duplicate a chunk somewhere else.
                let i = self.pos(len);
                let n = self.rng.random_range(1..=(len - i).min(256));
                let chunk = data[i..i + n].to_vec();
                let at = self.pos(len + 1);
                data.splice(at..at, chunk);
            }
            _ if len > 0 => {
                let i = self.pos(len);
                let n = self.rng.random_range(1..=(len - i).min(8));
                for b in &mut data[i..i + n] {
                    *b = self.rng.random();
                }
            }
            _ => data.push(self.rng.random()),
        }
        data.truncate(max_len);
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Seconds each target runs (`VOXWIRE_FUZZ_SECS`, default 8).
pub fn budget() -> Duration {
    Duration::from_secs_f64(
        std::env::var("VOXWIRE_FUZZ_SECS")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(8.0),
    )
}

/// The run's RNG seed: `VOXWIRE_FUZZ_SEED`, else the clock.
pub fn seed() -> u64 {
    env_u64("VOXWIRE_FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    })
}

/// Writes the seeds as a cargo-fuzz corpus when `VOXWIRE_FUZZ_DUMP` names a folder.
fn dump(name: &str, seeds: &[Vec<u8>]) {
    let Some(dir) = std::env::var_os("VOXWIRE_FUZZ_DUMP") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir).join(name);
    std::fs::create_dir_all(&dir).expect("corpus folder");
    for (i, s) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), s).expect("corpus file");
    }
}

/// The input running now and since when, for the watchdog.
type Current = Arc<Mutex<Option<(Instant, Vec<u8>)>>>;

/// What a run did, for the test's own assertions.
#[derive(Debug)]
pub struct Report {
    pub execs: u64,
    pub outcomes: usize,
    pub corpus: usize,
}

/// Fuzzes `run` from `seeds` for the time budget. `key` names an outcome's kind (inputs with a
/// new kind join the corpus). Fails the test on the first failing input, printing the seed, the
/// number of the input and the input. A watchdog fails a run whose single input hangs.
pub fn fuzz<T>(
    name: &str,
    seeds: Vec<Vec<u8>>,
    max_len: usize,
    run: &dyn Fn(&[u8]) -> T,
    key: &dyn Fn(&T) -> String,
) -> Report {
    dump(name, &seeds);
    let seed = seed();
    let budget = budget();
    eprintln!(
        "fuzz {name}: seed {seed} (VOXWIRE_FUZZ_SEED={seed} to replay), {:.0} s",
        budget.as_secs_f64()
    );
    let mut m = Mutator {
        rng: StdRng::seed_from_u64(seed),
    };
    let mut corpus = seeds;
    let mut seen = HashSet::new();
    let mut caught = HashSet::new();
    let current: Current = Arc::default();
    let watchdog = spawn_watchdog(name, seed, Arc::clone(&current));
    let start = Instant::now();
    let mut execs = 0u64;
    while execs == 0 || start.elapsed() < budget {
        let a = m.rng.random_range(0..corpus.len());
        let b = m.rng.random_range(0..corpus.len());
        let mut input = corpus[a].clone();
        let rounds = 1 + m.rng.random_range(0..4);
        for _ in 0..rounds {
            let other = corpus[b].clone();
            m.mutate(&mut input, &other, max_len);
        }
        if let Ok(mut c) = current.lock() {
            *c = Some((Instant::now(), input.clone()));
        }
        execs += 1;
        match run_one(run, &input) {
            Ok((out, panics)) => {
                for p in panics {
                    if caught.insert(p.clone()) {
                        eprintln!("fuzz {name}: third-party panic caught by voxwire: {p}");
                    }
                }
                if seen.insert(key(&out)) && corpus.len() < 512 {
                    corpus.push(input);
                }
            }
            Err(e) => panic!(
                "fuzz {name}: {e}\nseed {seed}, input #{execs} ({} bytes): {}",
                input.len(),
                hex(&input)
            ),
        }
    }
    if let Ok(mut c) = current.lock() {
        *c = None;
    }
    drop(watchdog);
    eprintln!(
        "fuzz {name}: {execs} inputs in {:.1} s, {} outcome kinds, corpus {}",
        start.elapsed().as_secs_f64(),
        seen.len(),
        corpus.len()
    );
    Report {
        execs,
        outcomes: seen.len(),
        corpus: corpus.len(),
    }
}

/// Stops the whole test run when one input has run longer than `VOXWIRE_FUZZ_HANG_SECS`
/// (default 60), printing it: a hang cannot be interrupted from inside the thread.
fn spawn_watchdog(name: &str, seed: u64, current: Current) -> Arc<()> {
    let alive = Arc::new(());
    let weak = Arc::downgrade(&alive);
    let limit = Duration::from_secs(env_u64("VOXWIRE_FUZZ_HANG_SECS").unwrap_or(60));
    let name = name.to_string();
    std::thread::spawn(move || {
        while weak.upgrade().is_some() {
            std::thread::sleep(Duration::from_millis(500));
            let Ok(c) = current.lock() else { return };
            if let Some((since, input)) = c.as_ref() {
                if since.elapsed() > limit {
                    eprintln!(
                        "fuzz {name}: one input ran over {} s (a hang); seed {seed}, input ({} bytes): {}",
                        limit.as_secs(),
                        input.len(),
                        hex(input)
                    );
                    std::process::exit(101);
                }
            }
        }
    });
    alive
}
