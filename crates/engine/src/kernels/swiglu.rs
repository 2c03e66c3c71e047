//! The gated MLP activation of Llama-family models: `out = silu(gate) ⊙ up` with `silu(x) = x·σ(x)`. Input
//! rows are the fused gate/up projection output `[n, 2F]` (gate in the first F columns, up in the last F).

use crate::math::{exp, for_each_row};

pub fn forward(out: &mut [f32], gate_up: &[f32], n: usize, f: usize) {
    let _prof = crate::profile::scope("swiglu.forward");
    for_each_row(&mut out[..n * f], f, |i, o| forward_row(o, &gate_up[i * 2 * f..(i + 1) * 2 * f]));
}

/// Writes `dgate_up` (`[n, 2F]`) from the output gradient.
pub fn backward(dgate_up: &mut [f32], dout: &[f32], gate_up: &[f32], n: usize, f: usize) {
    let _prof = crate::profile::scope("swiglu.backward");
    for_each_row(&mut dgate_up[..n * 2 * f], 2 * f, |i, d| {
        backward_row(d, &dout[i * f..(i + 1) * f], &gate_up[i * 2 * f..(i + 1) * 2 * f])
    });
}

crate::simd_fn! {
fn forward_row(o: &mut [f32], gu: &[f32]) {
    let f = o.len();
    let (g, u) = gu.split_at(f);
    for k in 0..f {
        let sig = 1.0 / (1.0 + exp(-g[k]));
        o[k] = g[k] * sig * u[k];
    }
}
}

crate::simd_fn! {
/// d gate = dout · up · σ(g)(1 + g(1 − σ(g))), d up = dout · silu(g).
fn backward_row(d: &mut [f32], dout: &[f32], gu: &[f32]) {
    let f = dout.len();
    let (g, u) = gu.split_at(f);
    let (dg, du) = d.split_at_mut(f);
    for k in 0..f {
        let sig = 1.0 / (1.0 + exp(-g[k]));
        dg[k] = dout[k] * u[k] * sig * (1.0 + g[k] * (1.0 - sig));
        du[k] = dout[k] * g[k] * sig;
    }
}
}

pub mod reference {
    pub fn forward(out: &mut [f32], gate_up: &[f32], n: usize, f: usize) {
        for i in 0..n {
            for k in 0..f {
                let g = gate_up[i * 2 * f + k] as f64;
                let u = gate_up[i * 2 * f + f + k] as f64;
                out[i * f + k] = (g / (1.0 + (-g).exp()) * u) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::*;

    #[test]
    fn matches_reference_and_finite_differences() {
        for (n, f) in [(3, 5), (64, 300)] {
            let gu: Vec<f32> = rand_vec(n * 2 * f, 1).iter().map(|v| v * 4.0).collect();
            let (mut o, mut r) = (vec![0.0; n * f], vec![0.0; n * f]);
            forward(&mut o, &gu, n, f);
            reference::forward(&mut r, &gu, n, f);
            assert_close(&o, &r, 1e-5, "swiglu");
            let dout = rand_vec(n * f, 2);
            let mut d = vec![f32::NAN; n * 2 * f];
            backward(&mut d, &dout, &gu, n, f);
            check_fd(&gu, &d, 1e-2, 2e-3, "fd swiglu", |x| {
                let mut o = vec![0.0; n * f];
                reference::forward(&mut o, x, n, f);
                weighted(&o, &dout)
            });
        }
    }
}
