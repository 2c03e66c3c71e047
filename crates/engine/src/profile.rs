//! Opt-in wall-clock accounting per kernel, for benchmarks. Disabled by default: a kernel then pays one
//! relaxed atomic load per call. Kernels are invoked from the model's thread (they parallelise inside), so
//! each scope measures the kernel's whole parallel execution.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ENABLED: AtomicBool = AtomicBool::new(false);
static TABLE: Mutex<BTreeMap<&'static str, (Duration, u64)>> = Mutex::new(BTreeMap::new());

pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn reset() {
    if let Ok(mut t) = TABLE.lock() {
        t.clear();
    }
}

/// (kernel, total time, calls), largest total first.
pub fn report() -> Vec<(&'static str, Duration, u64)> {
    let mut v: Vec<_> = TABLE.lock().map(|t| t.iter().map(|(k, (d, n))| (*k, *d, *n)).collect()).unwrap_or_default();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    v
}

/// Records the time until the guard is dropped under `name` (when profiling is enabled).
pub struct Scope {
    name: &'static str,
    start: Option<Instant>,
}

#[inline]
pub fn scope(name: &'static str) -> Scope {
    let start = if ENABLED.load(Ordering::Relaxed) { Some(Instant::now()) } else { None };
    Scope { name, start }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if let Some(s) = self.start {
            let d = s.elapsed();
            if let Ok(mut t) = TABLE.lock() {
                let e = t.entry(self.name).or_default();
                e.0 += d;
                e.1 += 1;
            }
        }
    }
}
