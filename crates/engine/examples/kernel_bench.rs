//! Microbenchmarks of single kernels at MiniLM training shapes (batch 16 × 128, hidden 384, FFN 1536,
//! 12 heads): wall time and achieved GFLOP/s for the matmuls.
//!
//! cargo run --release -p finetune-engine --example kernel_bench -- [threads]

use std::time::Instant;

use finetune_engine::kernels::attention::{self, Shape};
use finetune_engine::kernels::dropout::Dropout;
use finetune_engine::kernels::{gelu, layernorm, linear};

fn time<F: FnMut()>(name: &str, flops: f64, mut f: F) {
    f();
    let reps = 5;
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let s = Instant::now();
        f();
        best = best.min(s.elapsed().as_secs_f64());
    }
    if flops > 0.0 {
        println!("{name:<28} {:8.2} ms  {:6.1} GFLOP/s", best * 1e3, flops / best / 1e9);
    } else {
        println!("{name:<28} {:8.2} ms", best * 1e3);
    }
}

fn main() {
    let threads = std::env::args().nth(1).and_then(|v| v.parse().ok()).unwrap_or(2);
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().expect("pool");
    let (n, c, f) = (2048usize, 384usize, 1536usize);
    let x: Vec<f32> = (0..n * f).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    let w: Vec<f32> = (0..f * c).map(|i| ((i * 104_729) % 1000) as f32 / 5e4 - 0.01).collect();
    let b = vec![0.1f32; f];
    let mut out = vec![0.0f32; n * f];
    let fl = 2.0 * (n * c * f) as f64;
    time("linear fwd 384->1536", fl, || linear::forward(&mut out, &x[..n * c], &w, Some(&b), n, c, f));
    let mut dx = vec![0.0f32; n * c];
    let mut dw = vec![0.0f32; f * c];
    let mut db = vec![0.0f32; f];
    time("linear bwd 384->1536", 2.0 * fl, || {
        linear::backward(Some(&mut dx), &mut dw, Some(&mut db), &out, &x[..n * c], &w, n, c, f, false)
    });
    time("  dinp = dout·W", fl, || finetune_engine::matmul::matmul(&mut dx, &out, &w, n, f, c, false, false, false));
    time("  dW += doutᵀ·x", fl, || {
        finetune_engine::matmul::matmul(&mut dw, &out, &x[..n * c], f, n, c, true, false, true)
    });
    time("  dW += xᵀ·dout (as dWᵀ)", fl, || {
        finetune_engine::matmul::matmul(&mut dw, &x[..n * c], &out, c, n, f, true, false, true)
    });
    time("gelu fwd", 0.0, || gelu::forward(&mut out, &x));
    time("gelu bwd", 0.0, || gelu::backward(&mut out, &x));
    let (mut m, mut r) = (vec![0.0; n], vec![0.0; n]);
    let lw = vec![1.0f32; c];
    let mut lo = vec![0.0f32; n * c];
    time("layernorm fwd", 0.0, || layernorm::forward(&mut lo, &mut m, &mut r, &x[..n * c], &lw, &lw, n, c, 1e-12));
    let (mut gw, mut gb) = (vec![0.0; c], vec![0.0; c]);
    time("layernorm bwd", 0.0, || {
        layernorm::backward(&mut dx, &mut gw, &mut gb, &x[..n * c], &x[n * c..2 * n * c], &lw, &m, &r, n, c)
    });
    let s = Shape { batch: 16, seq: 128, heads: 12, head_dim: 32 };
    let qkv = &x[..n * 3 * c];
    let mask = vec![0.0f32; n];
    let mut probs = vec![0.0f32; s.probs_len()];
    let mut pd = vec![0.0f32; s.probs_len()];
    let mut ctx = vec![0.0f32; n * c];
    let afl = 4.0 * (16 * 12 * 128 * 128 * 32) as f64;
    time("attention fwd (no dropout)", afl, || attention::forward(&mut ctx, &mut probs, None, qkv, &mask, s, None));
    let d = Some(Dropout { p: 0.1, seed: 1 });
    time("attention fwd (dropout)", afl, || attention::forward(&mut ctx, &mut probs, Some(&mut pd), qkv, &mask, s, d));
    let mut dqkv = vec![0.0f32; n * 3 * c];
    let mut scratch = vec![0.0f32; s.probs_len()];
    time("attention bwd (dropout)", 2.0 * afl, || {
        attention::backward(&mut dqkv, &mut scratch, &x[..n * c], qkv, &probs, Some(&pd), s, d)
    });
    let mut big = vec![0.5f32; n * f];
    let mut g = x.clone();
    time("gelu bwd fresh", 0.0, || {
        g.copy_from_slice(&x);
        gelu::backward(&mut g, &x)
    });
    time("dropout fwd 3M", 0.0, || finetune_engine::kernels::dropout::forward(&mut big, Dropout { p: 0.1, seed: 3 }));
}
