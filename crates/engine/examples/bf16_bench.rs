//! Achieved TFLOP/s of the bf16 matmul kernels against the f32 one at MiniLM's shapes (2048 tokens =
//! batch 16 × 128, hidden 384, FFN 1536), and against the CPU's peak (AMX-BF16: 1024 FLOP per cycle per core;
//! AVX512-BF16: 2 × 64; f32 FMA: two ports of 16 (AVX-512) or 8 (AVX2) lanes × 2, at the nominal clock from
//! /proc/cpuinfo; a boost clock can take a kernel past 100 %).
//!
//! cargo run --release -p finetune-engine --example bf16_bench -- [threads]
//!
//! Rows: `f32` (the gemm crate), `<kernel>` (bf16, B packed on every call), `<kernel>+packed` (B packed
//! once, as weights are during training). scripts/bench/bf16_gemm.sh runs this next to PyTorch.

use std::time::Instant;

use finetune_engine::bf16::{self, Kernel, PackedB};
use finetune_engine::matmul::{self, Par, View};

/// CPU time of the calling thread in seconds: unlike wall time, it does not count the time other processes
/// on a shared machine hold the core.
fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// (median wall seconds on all threads, minimum wall seconds, median single-thread CPU seconds of `seq`).
fn measure<F: FnMut(), G: FnMut()>(mut f: F, mut seq: G) -> (f64, f64, f64) {
    f();
    let mut t: Vec<f64> = (0..9)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    seq();
    let mut u: Vec<f64> = (0..5)
        .map(|_| {
            let s = thread_cpu_secs();
            seq();
            thread_cpu_secs() - s
        })
        .collect();
    u.sort_by(|a, b| a.total_cmp(b));
    (t[t.len() / 2], t[0], u[u.len() / 2])
}

fn mhz() -> f64 {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("cpu MHz")).and_then(|l| l.split(':').nth(1)?.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

fn main() {
    let threads: usize = std::env::args().nth(1).and_then(|v| v.parse().ok()).unwrap_or(2);
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().expect("pool");
    let ghz = mhz() / 1e3;
    let kernels: Vec<Kernel> = [Kernel::Amx, Kernel::Avx512Bf16]
        .into_iter()
        .filter(|k| match k.unavailable_reason() {
            None => true,
            Some(why) => {
                println!("# skipping {}: {why}", k.name());
                false
            }
        })
        .collect();
    // f32 FLOP per cycle per core: two FMA ports, each `lanes` wide, two FLOP per lane.
    let f32_peak = match finetune_engine::simd::level() {
        finetune_engine::simd::Level::Avx512 => 64.0,
        finetune_engine::simd::Level::Avx2 => 32.0,
        finetune_engine::simd::Level::Base => 8.0,
    };
    println!(
        "# threads {threads}, clock {ghz:.2} GHz; peak TFLOP/s: amx {:.2}, avx512bf16 {:.2}, f32 {:.2}",
        1024.0 * ghz * threads as f64 / 1e3,
        128.0 * ghz * threads as f64 / 1e3,
        f32_peak * ghz * threads as f64 / 1e3
    );
    println!(
        "{:<30} {:<18} {:>8} {:>8} {:>8} {:>6} {:>9} {:>8} {:>6}",
        "shape C[m,n]=A[m,k]·B[k,n]", "kernel", "med_ms", "min_ms", "TFLOP/s", "%peak", "1thr_cpu", "TFLOP/s", "%peak"
    );
    // (label, m, n, k, A transposed, B transposed): linear forward x·Wᵀ, input gradient dout·W, weight
    // gradient doutᵀ·x.
    let shapes = [
        ("fwd 2048x384x384 (qkv/out)", 2048, 384, 384, false, true),
        ("fwd 2048x1536x384 (fc1)", 2048, 1536, 384, false, true),
        ("fwd 2048x384x1536 (fc2)", 2048, 384, 1536, false, true),
        ("dinp 2048x384x1536", 2048, 384, 1536, false, false),
        ("dW 1536x384x2048 (doutT·x)", 1536, 384, 2048, true, false),
    ];
    for (label, m, n, k, ta, tb) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 104_729) % 1000) as f32 / 5e4 - 0.01).collect();
        let av = if ta { View::new(&a, m, true) } else { View::new(&a, k, false) };
        let bv = if tb { View::new(&b, k, true) } else { View::new(&b, n, false) };
        let mut c = vec![0.0f32; m * n];
        let flops = 2.0 * (m * n * k) as f64;
        // Throughput from the minimum wall time (the least disturbed run) and from one thread's CPU time.
        let row = |name: &str, (med, min, cpu1): (f64, f64, f64), peak_per_cycle: f64| {
            let peak = peak_per_cycle * ghz * 1e9 / 1e12;
            let (tf, tf1) = (flops / min / 1e12, flops / cpu1 / 1e12);
            println!(
                "{label:<30} {name:<18} {:>8.3} {:>8.3} {tf:>8.3} {:>5.1}% {:>9.3} {tf1:>8.3} {:>5.1}%",
                med * 1e3,
                min * 1e3,
                100.0 * tf / (peak * threads as f64),
                cpu1 * 1e3,
                100.0 * tf1 / peak
            );
        };
        let mut c2 = c.clone();
        let t = measure(
            || matmul::gemm_view(&mut c, n, av, bv, m, n, k, 1.0, false, Par::Rayon),
            || matmul::gemm_view(&mut c2, n, av, bv, m, n, k, 1.0, false, Par::Seq),
        );
        row("f32", t, f32_peak);
        for &kern in &kernels {
            let peak = if kern == Kernel::Amx { 1024.0 } else { 128.0 };
            let t = measure(
                || bf16::gemm_view_with(kern, &mut c, n, av, bv, m, n, k, 1.0, false, Par::Rayon),
                || bf16::gemm_view_with(kern, &mut c2, n, av, bv, m, n, k, 1.0, false, Par::Seq),
            );
            row(kern.name(), t, peak);
            let pb = PackedB::pack(bv, k, n, Par::Rayon);
            let t = measure(
                || bf16::gemm_packed_with(kern, &mut c, n, av, &pb, m, 1.0, false, Par::Rayon),
                || bf16::gemm_packed_with(kern, &mut c2, n, av, &pb, m, 1.0, false, Par::Seq),
            );
            row(&format!("{}+packed", kern.name()), t, peak);
        }
    }
}
