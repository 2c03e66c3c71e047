//! Fuzz harnesses on stable Rust for every reader of untrusted input: a seeded PRNG mutates valid seed inputs
//! (structure-aware where the format has structure: JSON values, safetensors headers, the pickle inside a `.bin`
//! zip, GGUF length and count fields, lines of text files), each input runs under `catch_unwind`, and the
//! largest single allocation it makes is compared with what its size justifies ([`alloc_limit`]).
//!
//! `scripts/fuzz.sh` runs every target for a million inputs; `tests/smoke.rs` runs each for a few thousand so
//! that the harnesses keep compiling and passing.

pub mod alloc;
pub mod mutate;
pub mod targets;

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use mutate::Rng;
pub use targets::{all_targets, Target};

/// The largest single allocation an input of `len` bytes may cause: 64 bytes per input byte plus 1 MiB (the
/// fixed tables of a tokenizer, a template environment, a tiny model's parameters).
pub fn alloc_limit(len: usize) -> usize {
    len.saturating_mul(64).saturating_add(1 << 20)
}

/// What went wrong with one input.
#[derive(Debug, Clone)]
pub struct Finding {
    pub target: &'static str,
    pub index: u64,
    pub kind: &'static str,
    pub detail: String,
    pub input: Vec<u8>,
}

/// The outcome of running one target.
#[derive(Debug, Clone)]
pub struct Report {
    pub target: &'static str,
    pub inputs: u64,
    /// Inputs the reader accepted (the rest were refused with an error).
    pub accepted: u64,
    pub elapsed: Duration,
    pub findings: Vec<Finding>,
    /// The largest single allocation seen, and the input size it came with.
    pub peak_alloc: (usize, usize),
}

/// Runs `target` on `n` inputs generated from `seed`: input 0.. are the seeds themselves, then mutations.
/// Stops collecting after `max_findings`. Only meaningful when [`alloc::TrackingAlloc`] is the global
/// allocator (otherwise the allocation check sees nothing).
pub fn run_target(target: &Target, n: u64, seed: u64, max_findings: usize) -> Report {
    run_target_within(target, n, seed, max_findings, None)
}

/// [`run_target`], stopping early (after fewer than `n` inputs, as the report's `inputs` says) once `budget`
/// has passed.
pub fn run_target_within(target: &Target, n: u64, seed: u64, max_findings: usize, budget: Option<Duration>) -> Report {
    let mut rng = Rng::new(seed ^ fnv(target.name));
    let started = Instant::now();
    let mut findings = Vec::new();
    let mut accepted = 0;
    let mut peak = (0usize, 0usize);
    let watchdog = Watchdog::start(target.name);
    let mut inputs = 0;
    for i in 0..n {
        if budget.is_some_and(|b| i % 64 == 0 && started.elapsed() > b) {
            break;
        }
        inputs += 1;
        let input = if (i as usize) < target.seeds.len() {
            target.seeds[i as usize].clone()
        } else {
            (target.mutate)(&mut rng, &target.seeds)
        };
        watchdog.begin(i);
        alloc::reset();
        // Silent while the input runs (its panic is reported as a finding); the harness's own panics print.
        let prev_hook = panic::take_hook();
        panic::set_hook(Box::new(|_| {}));
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| (target.run)(&input)));
        let largest = alloc::largest();
        panic::set_hook(prev_hook);
        watchdog.end();
        if largest > peak.0 {
            peak = (largest, input.len());
        }
        let mut found = |kind, detail: String| {
            if findings.len() < max_findings {
                findings.push(Finding { target: target.name, index: i, kind, detail, input: input.clone() });
            }
        };
        match outcome {
            Ok(true) => accepted += 1,
            Ok(false) => {}
            Err(payload) => found("panic", panic_message(&payload)),
        }
        if largest > alloc_limit(input.len()).saturating_add(target.alloc_allowance) {
            found("allocation", format!("{largest} bytes in one allocation for a {}-byte input", input.len()));
        }
    }
    Report { target: target.name, inputs, accepted, elapsed: started.elapsed(), findings, peak_alloc: peak }
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-string payload".into())
        .replace('\n', " ")
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Aborts the process (after saying which input) when one input runs longer than a minute: a hang is a finding
/// that `catch_unwind` cannot report.
struct Watchdog {
    /// Index of the input running + 1, or 0 between inputs.
    current: Arc<AtomicU64>,
    /// When it started, in ms since `origin`.
    since_ms: Arc<AtomicU64>,
    origin: Instant,
}

impl Watchdog {
    fn start(target: &'static str) -> Self {
        let w = Watchdog { current: Arc::default(), since_ms: Arc::default(), origin: Instant::now() };
        let (c, s, origin) = (Arc::clone(&w.current), Arc::clone(&w.since_ms), w.origin);
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            if Arc::strong_count(&c) == 1 {
                return;
            }
            let i = c.load(Ordering::Relaxed);
            let now = origin.elapsed().as_millis() as u64;
            if i > 0 && now.saturating_sub(s.load(Ordering::Relaxed)) > 60_000 {
                eprintln!("fuzz: target {target}: input {} ran for more than 60 s (hang); aborting", i - 1);
                std::process::abort();
            }
        });
        w
    }

    fn begin(&self, i: u64) {
        self.since_ms.store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.current.store(i + 1, Ordering::Relaxed);
    }

    fn end(&self) {
        self.current.store(0, Ordering::Relaxed);
    }
}
