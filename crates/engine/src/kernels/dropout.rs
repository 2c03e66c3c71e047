//! Inverted dropout with a counter-based RNG: element `i` of a call with `seed` is kept iff
//! `hash(seed, i) ≥ p`, so the backward recomputes the same mask instead of storing it, and results do not
//! depend on thread scheduling.

use crate::math::PAR_THRESHOLD;
use rayon::prelude::*;

/// One dropout site: drop probability and the seed of its mask (derive a distinct seed per site and step).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    pub p: f32,
    pub seed: u64,
}

impl Dropout {
    /// Whether element `i` survives.
    #[inline(always)]
    pub fn keep(&self, i: usize) -> bool {
        uniform(self.seed, i as u64) >= self.p
    }

    /// Multiplier applied to kept elements.
    #[inline(always)]
    pub fn scale(&self) -> f32 {
        1.0 / (1.0 - self.p)
    }

    /// The seed for site `site` derived from a per-step seed.
    pub fn site_seed(step_seed: u64, site: u64) -> u64 {
        mix(step_seed ^ mix(site.wrapping_add(0x5851_F42D_4C95_7F2D)))
    }
}

#[inline(always)]
fn mix(mut z: u64) -> u64 {
    // splitmix64 finaliser
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform in [0, 1) with 24 random bits.
#[inline(always)]
pub fn uniform(seed: u64, i: u64) -> f32 {
    let h = mix(seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    (h >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

const CHUNK: usize = 4096;

fn apply(x: &mut [f32], d: Dropout) {
    if d.p <= 0.0 {
        return;
    }
    let scale = d.scale();
    if x.len() >= PAR_THRESHOLD {
        x.par_chunks_mut(CHUNK).enumerate().for_each(|(ci, c)| apply_chunk(c, d, ci * CHUNK, scale));
    } else {
        apply_chunk(x, d, 0, scale);
    }
}

crate::simd_fn! {
fn apply_chunk(c: &mut [f32], d: Dropout, base: usize, scale: f32) {
    for (k, v) in c.iter_mut().enumerate() {
        *v = if d.keep(base + k) { *v * scale } else { 0.0 };
    }
}
}

/// In place: `x ← x · mask / (1 − p)`.
pub fn forward(x: &mut [f32], d: Dropout) {
    let _prof = crate::profile::scope("dropout.forward");
    apply(x, d)
}

/// In place: `d ← d · mask / (1 − p)` with the forward's mask.
pub fn backward(grad: &mut [f32], d: Dropout) {
    let _prof = crate::profile::scope("dropout.backward");
    apply(grad, d)
}

pub mod reference {
    use super::Dropout;

    pub fn forward(x: &mut [f32], d: Dropout) {
        for (i, v) in x.iter_mut().enumerate() {
            *v = if d.keep(i) { *v / (1.0 - d.p) } else { 0.0 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::*;

    #[test]
    fn mask_rate_and_reference() {
        let d = Dropout { p: 0.25, seed: 42 };
        let n = 100_000;
        let x = rand_vec(n, 1);
        let (mut a, mut b) = (x.clone(), x.clone());
        forward(&mut a, d);
        reference::forward(&mut b, d);
        assert_close(&a, &b, 1e-6, "dropout");
        let dropped = a.iter().filter(|v| **v == 0.0).count() as f64 / n as f64;
        assert!((dropped - 0.25).abs() < 0.01, "drop rate {dropped}");
        // The backward applies the same mask.
        let mut g = vec![1.0; n];
        backward(&mut g, d);
        for i in 0..n {
            assert_eq!(g[i] == 0.0, a[i] == 0.0 && x[i] != 0.0);
        }
        // Different seeds give different masks.
        let other = Dropout { p: 0.25, seed: 43 };
        assert!((0..1000).any(|i| d.keep(i) != other.keep(i)));
        let mut same = x.clone();
        forward(&mut same, Dropout { p: 0.0, seed: 1 });
        assert_eq!(same, x);
    }
}
