//! Exact GELU as BERT uses it (`torch.nn.functional.gelu`, approximate="none"):
//! `gelu(x) = x · Φ(x) = ½ x (1 + erf(x / √2))`.

use crate::math::{erf, exp, PAR_THRESHOLD};
use rayon::prelude::*;

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / √(2π)
const INV_SQRT_2PI: f32 = 0.398_942_3;
const CHUNK: usize = 4096;

/// gelu(x) for one value; inlined into vectorised loops.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2))
}

/// gelu(x) with erf in f32 arithmetic ([`crate::math::erf_f32`], within 2.5e-7 · |x| of [`gelu`]): the bf16
/// matmul's fused epilogue, where it halves the cost of the activation.
#[inline(always)]
pub fn gelu_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + crate::math::erf_f32(x * FRAC_1_SQRT_2))
}

crate::simd_fn! {
fn fwd_chunk(out: &mut [f32], inp: &[f32]) {
    for (o, &x) in out.iter_mut().zip(inp) {
        *o = gelu(x);
    }
}
}

crate::simd_fn! {
fn bwd_chunk(d: &mut [f32], inp: &[f32]) {
    // Two loops over blocks that fit on the stack: LLVM vectorises the f64 erf and the f32 exp separately but
    // not a loop mixing both.
    let mut cdf = [0.0f32; 256];
    for (db, xb) in d.chunks_mut(256).zip(inp.chunks(256)) {
        let cdf = &mut cdf[..db.len()];
        for (c, &x) in cdf.iter_mut().zip(xb) {
            *c = 0.5 * (1.0 + erf(x * FRAC_1_SQRT_2));
        }
        for ((g, &x), &c) in db.iter_mut().zip(xb).zip(cdf.iter()) {
            *g *= c + x * (INV_SQRT_2PI * exp(-0.5 * x * x));
        }
    }
}
}

pub fn forward(out: &mut [f32], inp: &[f32]) {
    let _prof = crate::profile::scope("gelu.forward");
    let n = out.len();
    if n >= PAR_THRESHOLD {
        out.par_chunks_mut(CHUNK).zip(inp[..n].par_chunks(CHUNK)).for_each(|(o, x)| fwd_chunk(o, x));
    } else {
        fwd_chunk(out, &inp[..n]);
    }
}

/// In place: `d` holds the gradient of the output on entry and that of the input on return.
pub fn backward(d: &mut [f32], inp: &[f32]) {
    backward_with(d, inp, false);
}

crate::simd_fn! {
/// [`bwd_chunk`] with erf in f32 arithmetic, as [`gelu_f32`].
fn bwd_chunk_f32(d: &mut [f32], inp: &[f32]) {
    for (g, &x) in d.iter_mut().zip(inp) {
        let c = 0.5 * (1.0 + crate::math::erf_f32(x * FRAC_1_SQRT_2));
        *g *= c + x * (INV_SQRT_2PI * exp(-0.5 * x * x));
    }
}
}

/// `d ← d · gelu'(inp)`; with `f32_erf` the erf is [`crate::math::erf_f32`] (the bf16 path's GELU, whose
/// forward is [`gelu_f32`]): no f64 division, and within a few 1e-7 of the f64 erf's result.
pub fn backward_with(d: &mut [f32], inp: &[f32], f32_erf: bool) {
    let _prof = crate::profile::scope("gelu.backward");
    let n = d.len();
    let chunk = |o: &mut [f32], x: &[f32]| if f32_erf { bwd_chunk_f32(o, x) } else { bwd_chunk(o, x) };
    if n >= PAR_THRESHOLD {
        d.par_chunks_mut(CHUNK).zip(inp[..n].par_chunks(CHUNK)).for_each(|(o, x)| chunk(o, x));
    } else {
        chunk(d, &inp[..n]);
    }
}

pub mod reference {
    pub fn forward(out: &mut [f32], inp: &[f32]) {
        for (o, &x) in out.iter_mut().zip(inp) {
            let x = x as f64;
            *o = (0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::*;

    #[test]
    fn matches_reference_and_finite_differences() {
        for n in [33, 50_000] {
            let x: Vec<f32> = rand_vec(n, 1).iter().map(|v| v * 6.0).collect();
            let (mut o, mut r) = (vec![0.0; n], vec![0.0; n]);
            forward(&mut o, &x);
            reference::forward(&mut r, &x);
            assert_close(&o, &r, 3e-7, "gelu");
            let dout = rand_vec(n, 2);
            let mut d = dout.clone();
            backward(&mut d, &x);
            let mut d32 = dout.clone();
            backward_with(&mut d32, &x, true);
            assert_close(&d32, &d, 1e-6, "gelu backward with the f32 erf");
            if n < 100 {
                check_fd(&x, &d, 1e-3, 1e-3, "fd gelu", |xs| {
                    let mut o = vec![0.0; n];
                    reference::forward(&mut o, xs);
                    weighted(&o, &dout)
                });
            }
        }
    }
}
