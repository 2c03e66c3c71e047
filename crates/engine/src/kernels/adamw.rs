//! AdamW as `torch.optim.AdamW` (single-tensor path): decoupled weight decay `p ← p·(1 − lr·wd)`, then
//! `m ← lerp(m, g, 1−β₁)`, `v ← β₂v + (1−β₂)g²`, `p ← p − (lr / (1−β₁ᵗ)) · m / (√v / √(1−β₂ᵗ) + ε)`.
//! Weight decay is per call, so a model passes 0 for parameters that must not decay (Hugging Face excludes
//! biases and LayerNorm weights).

use crate::math::PAR_THRESHOLD;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hyper {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for Hyper {
    /// PyTorch's defaults.
    fn default() -> Self {
        Hyper { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 }
    }
}

const CHUNK: usize = 8192;

crate::simd_fn! {
fn update_chunk(
    p: &mut [f32],
    g: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    decay: f32,
    w1: f32,
    b2: f32,
    w2: f32,
    step_size: f32,
    bc2_sqrt: f32,
    eps: f32,
    decays: bool,
    coef: f32,
    zero: bool,
) {
    let n = p.len().min(g.len()).min(m.len()).min(v.len());
    for i in 0..n {
        // The clipped gradient, rounded as `clip_grad_norm_`'s in-place `g *= coef` rounds it.
        let gi = g[i] * coef;
        if zero {
            g[i] = 0.0;
        }
        let pi = if decays { p[i] * decay } else { p[i] };
        let mi = m[i] + w1 * (gi - m[i]);
        let vi = v[i] * b2 + w2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step_size * (mi / (vi.sqrt() / bc2_sqrt + eps));
    }
}
}

/// One step for one parameter tensor; `step` counts from 1. Scalars are formed in f64 like PyTorch's Python
/// floats, then applied in f32. Works on a copy of `grad` (the training path, [`update_clipped`], does not).
pub fn update(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], h: Hyper, step: u64) {
    let mut g = grad.to_vec();
    update_clipped(param, &mut g, m, v, h, step, 1.0, false);
}

/// [`update`] on the gradient multiplied by `coef` (what `clip_grad_norm_` leaves in it), and with `zero`
/// the gradient zeroed in the same pass (`optimizer.zero_grad()`): one pass over the buffers instead of the
/// three that clipping's scale, the step and the zeroing take one after the other, with the same results.
#[allow(clippy::too_many_arguments)]
pub fn update_clipped(
    param: &mut [f32],
    grad: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    h: Hyper,
    step: u64,
    coef: f32,
    zero: bool,
) {
    let _prof = crate::profile::scope("adamw.update");
    let decay = (1.0 - h.lr * h.weight_decay) as f32;
    let w1 = (1.0 - h.beta1) as f32;
    let b2 = h.beta2 as f32;
    let w2 = (1.0 - h.beta2) as f32;
    let bc1 = 1.0 - h.beta1.powi(step as i32);
    let bc2 = 1.0 - h.beta2.powi(step as i32);
    let step_size = (h.lr / bc1) as f32;
    let bc2_sqrt = bc2.sqrt() as f32;
    let eps = h.eps as f32;
    let decays = h.weight_decay != 0.0;
    let body = |p: &mut [f32], g: &mut [f32], m: &mut [f32], v: &mut [f32]| {
        update_chunk(p, g, m, v, decay, w1, b2, w2, step_size, bc2_sqrt, eps, decays, coef, zero)
    };
    if param.len() >= PAR_THRESHOLD {
        param
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks_mut(CHUNK))
            .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
            .for_each(|((p, g), (m, v))| body(p, g, m, v));
    } else {
        body(param, grad, m, v);
    }
}

pub mod reference {
    use super::Hyper;

    /// The textbook algorithm (Loshchilov & Hutter, PyTorch docs) in f64.
    pub fn update(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], h: Hyper, step: u64) {
        for i in 0..param.len() {
            let mut p = param[i] as f64;
            let g = grad[i] as f64;
            p -= h.lr * h.weight_decay * p;
            let mi = h.beta1 * m[i] as f64 + (1.0 - h.beta1) * g;
            let vi = h.beta2 * v[i] as f64 + (1.0 - h.beta2) * g * g;
            let mhat = mi / (1.0 - h.beta1.powi(step as i32));
            let vhat = vi / (1.0 - h.beta2.powi(step as i32));
            p -= h.lr * mhat / (vhat.sqrt() + h.eps);
            param[i] = p as f32;
            m[i] = mi as f32;
            v[i] = vi as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::*;

    #[test]
    fn matches_reference_over_steps() {
        for n in [10, 40_000] {
            let h = Hyper { lr: 1e-2, weight_decay: 0.1, ..Hyper::default() };
            let mut p = rand_vec(n, 1);
            let mut rp = p.clone();
            let (mut m, mut v, mut rm, mut rv) = (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
            for step in 1..=5 {
                let g = rand_vec(n, 10 + step);
                update(&mut p, &g, &mut m, &mut v, h, step);
                reference::update(&mut rp, &g, &mut rm, &mut rv, h, step);
            }
            assert_close(&p, &rp, 1e-6, "param");
            assert_close(&m, &rm, 1e-6, "m");
            assert_close(&v, &rv, 1e-6, "v");
        }
    }

    #[test]
    fn clipped_and_zeroed_in_one_pass_equals_the_three_passes() {
        for n in [10, 40_000] {
            let h = Hyper { lr: 1e-2, weight_decay: 0.1, ..Hyper::default() };
            let (mut p, mut q) = (rand_vec(n, 1), rand_vec(n, 1));
            let (mut m, mut v, mut m2, mut v2) = (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
            for step in 1..=3 {
                let g = rand_vec(n, 20 + step);
                let coef = 0.37f32;
                let scaled: Vec<f32> = g.iter().map(|x| x * coef).collect();
                update(&mut p, &scaled, &mut m, &mut v, h, step);
                let mut g2 = g.clone();
                update_clipped(&mut q, &mut g2, &mut m2, &mut v2, h, step, coef, true);
                assert_eq!(p, q, "params bitwise equal");
                assert_eq!((&m, &v), (&m2, &v2), "moments bitwise equal");
                assert!(g2.iter().all(|&x| x == 0.0), "gradient zeroed");
            }
        }
    }

    #[test]
    fn zero_decay_leaves_parameter_scale() {
        // With zero gradient and no decay a parameter does not move.
        let mut p = vec![1.5f32; 4];
        let (mut m, mut v) = (vec![0.0; 4], vec![0.0; 4]);
        update(&mut p, &[0.0; 4], &mut m, &mut v, Hyper { weight_decay: 0.0, ..Hyper::default() }, 1);
        assert_eq!(p, vec![1.5; 4]);
        update(&mut p, &[0.0; 4], &mut m, &mut v, Hyper::default(), 2);
        assert!((p[0] - 1.5 * (1.0 - 1e-5)).abs() < 1e-7);
    }
}
