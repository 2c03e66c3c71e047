//! Deterministic random inputs, closeness checks and central finite differences for kernel tests.

/// Prints why a test skips a kernel this CPU lacks. Written to the process's stderr directly: the test harness
/// captures `eprintln!` of passing tests, and a skip must be seen.
pub fn skipped(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {msg}");
}

pub fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(0x1234_5678);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// |a − b| ≤ tol · (1 + |b|) elementwise.
pub fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
    }
}

/// Checks `grad` against central differences of `loss` at a spread of coordinates of `x`.
pub fn check_fd(x: &[f32], grad: &[f32], eps: f32, tol: f64, what: &str, loss: impl Fn(&[f32]) -> f64) {
    let mut xs = x.to_vec();
    let step = (x.len() / 7).max(1);
    for i in (0..x.len()).step_by(step) {
        let orig = xs[i];
        xs[i] = orig + eps;
        let up = loss(&xs);
        xs[i] = orig - eps;
        let down = loss(&xs);
        xs[i] = orig;
        let fd = (up - down) / (2.0 * eps as f64);
        let g = grad[i] as f64;
        assert!((fd - g).abs() <= tol * (1.0 + g.abs()), "{what}[{i}]: analytic {g} vs finite difference {fd}");
    }
}

/// Σ out · w in f64: a scalar loss with a non-trivial gradient `w` for finite-difference checks.
pub fn weighted(out: &[f32], w: &[f32]) -> f64 {
    out.iter().zip(w).map(|(a, b)| *a as f64 * *b as f64).sum()
}
