//! Global gradient-norm clipping as `torch.nn.utils.clip_grad_norm_` (L2): `total = ‖all grads‖₂`,
//! `coef = max_norm / (total + 1e-6)` clamped to at most 1, every gradient multiplied by `coef`.

use rayon::prelude::*;

/// L2 norm over several gradient buffers, accumulated in f64.
pub fn global_norm(grads: &[&[f32]]) -> f64 {
    grads
        .iter()
        .map(|g| {
            if g.len() >= crate::math::PAR_THRESHOLD {
                g.par_chunks(8192).map(sum_squares).sum::<f64>()
            } else {
                g.chunks(8192).map(sum_squares).sum::<f64>()
            }
        })
        .sum::<f64>()
        .sqrt()
}

/// Σ x² of a block: f32 lanes within the block (a few thousand terms), f64 across blocks.
fn sum_squares(block: &[f32]) -> f64 {
    let mut out = 0.0f32;
    sum_squares_f32(block, &mut out);
    out as f64
}

crate::simd_fn! {
fn sum_squares_f32(block: &[f32], out: &mut f32) {
    *out = crate::math::dot(block, block);
}
}

/// The L2 norm over all of `grads` as [`clip`] measures it (f64 inside, f32 out).
pub fn total_norm<'a>(grads: impl Iterator<Item = &'a [f32]>) -> f32 {
    grads.map(|g| global_norm(&[g]).powi(2)).sum::<f64>().sqrt() as f32
}

/// The factor [`clip`] multiplies every gradient by, in f32 arithmetic as PyTorch forms it on the f32 norm
/// tensor.
pub fn coefficient(total: f32, max_norm: f32) -> f32 {
    (max_norm / (total + 1e-6)).min(1.0)
}

/// Scales `grads` in place and returns the total norm before clipping (like PyTorch, also when it is not
/// finite, in which case the gradients become NaN).
pub fn clip(grads: &mut [&mut [f32]], max_norm: f32) -> f32 {
    let _prof = crate::profile::scope("clip_grad.clip");
    let total = total_norm(grads.iter().map(|g| &**g));
    let coef = coefficient(total, max_norm);
    for g in grads.iter_mut() {
        if g.len() >= crate::math::PAR_THRESHOLD {
            g.par_chunks_mut(8192).for_each(|c| scale(c, coef));
        } else {
            scale(g, coef);
        }
    }
    total
}

crate::simd_fn! {
fn scale(g: &mut [f32], coef: f32) {
    for x in g.iter_mut() {
        *x *= coef;
    }
}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_only_above_max() {
        let mut a = vec![3.0f32, 0.0];
        let mut b = vec![4.0f32];
        let total = clip(&mut [&mut a, &mut b], 1.0);
        assert_eq!(total, 5.0);
        let coef = 1.0 / (5.0f32 + 1e-6);
        assert_eq!(a, vec![3.0 * coef, 0.0]);
        assert_eq!(b, vec![4.0 * coef]);
        let mut c = vec![0.3f32, 0.4];
        let total = clip(&mut [&mut c], 1.0);
        assert!((total - 0.5).abs() < 1e-7);
        assert_eq!(c, vec![0.3, 0.4]);
        let mut d = vec![f32::NAN];
        clip(&mut [&mut d], 1.0);
        assert!(d[0].is_nan());
    }
}
