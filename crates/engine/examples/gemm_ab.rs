//! Our AVX2 f32 matmul kernel against the `gemm` crate, called alternately on the same operands (the machine's
//! drift hits both), at MiniLM's shapes: GFLOP/s of the fastest and the median call, and the median time ratio.
//!
//! cargo run --release -p finetune-engine --example gemm_ab -- [threads]

use finetune_engine::matmul::{self, F32Kernel, Par, View};
use std::time::Instant;
fn main() {
    let threads: usize = std::env::args().nth(1).and_then(|v| v.parse().ok()).unwrap_or(2);
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().unwrap();
    let par = if threads > 1 { Par::Rayon } else { Par::Seq };
    let shapes = [
        ("l1", 120, 16, 256, false, false),
        ("l2", 120, 256, 256, false, false),
        ("l2t", 120, 256, 256, false, true),
        ("qkv", 2048, 384, 384, false, true),
        ("fc1", 2048, 1536, 384, false, true),
        ("fc2", 2048, 384, 1536, false, true),
        ("dinp", 2048, 384, 1536, false, false),
        ("dW", 1536, 384, 2048, true, false),
        ("dWqkv", 384, 384, 2048, true, false),
        ("att", 128, 128, 32, false, true),
        ("m32", 1024, 384, 384, false, true),
    ];
    for (label, m, n, k, ta, tb) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 104_729) % 1000) as f32 / 5e4 - 0.01).collect();
        let av = if ta { View::new(&a, m, true) } else { View::new(&a, k, false) };
        let bv = if tb { View::new(&b, k, true) } else { View::new(&b, n, false) };
        let mut c = vec![0.0f32; m * n];
        let ks = [F32Kernel::Gemm, F32Kernel::Avx2];
        let mut t = [vec![], vec![]];
        let reps = (2e9 / (2.0 * (m * n * k) as f64)).clamp(5.0, 4000.0) as usize;
        for _ in 0..reps {
            for (i, &kk) in ks.iter().enumerate() {
                let s = Instant::now();
                matmul::gemm_view_with(kk, &mut c, n, av, bv, m, n, k, 1.0, false, par);
                t[i].push(s.elapsed().as_secs_f64());
            }
        }
        let fl = 2.0 * (m * n * k) as f64;
        let mut out = format!("{label:6}");
        for (i, v) in t.iter_mut().enumerate() {
            v.sort_by(|a, b| a.total_cmp(b));
            out +=
                &format!("  {}: min {:.1} med {:.1} GFLOP/s", ks[i].name(), fl / v[0] / 1e9, fl / v[v.len() / 2] / 1e9);
        }
        let r = t[1][t[1].len() / 2] / t[0][t[0].len() / 2];
        println!("{out}  ratio(med) {r:.2}");
    }
}
