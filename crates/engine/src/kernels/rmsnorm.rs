//! RMSNorm over the last dimension as `LlamaRMSNorm`: `y = weight · x / √(mean(x²) + eps)`, in f32. The forward
//! keeps each row's reciprocal root mean square for the backward.

use crate::math::{dot, PAR_THRESHOLD};
use rayon::prelude::*;

#[allow(clippy::too_many_arguments)]
pub fn forward(out: &mut [f32], rstd: &mut [f32], inp: &[f32], weight: &[f32], n: usize, c: usize, eps: f32) {
    let _prof = crate::profile::scope("rmsnorm.forward");
    let out = &mut out[..n * c];
    let rstd = &mut rstd[..n];
    if n * c >= PAR_THRESHOLD {
        out.par_chunks_mut(c)
            .zip(rstd.par_iter_mut())
            .enumerate()
            .for_each(|(i, (o, r))| forward_row(o, r, &inp[i * c..(i + 1) * c], weight, eps));
    } else {
        for (i, (o, r)) in out.chunks_mut(c).zip(rstd.iter_mut()).enumerate() {
            forward_row(o, r, &inp[i * c..(i + 1) * c], weight, eps);
        }
    }
}

/// `dinp` is overwritten (or added to when `accumulate_dinp`); `dweight` is accumulated unless `None` (a
/// frozen weight gets no gradient computed).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    dinp: &mut [f32],
    dweight: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    rstd: &[f32],
    n: usize,
    c: usize,
    accumulate_dinp: bool,
) {
    let _prof = crate::profile::scope("rmsnorm.backward");
    let dinp = &mut dinp[..n * c];
    let rows = |i: usize, di: &mut [f32]| {
        backward_row(di, &inp[i * c..(i + 1) * c], &dout[i * c..(i + 1) * c], weight, rstd[i], accumulate_dinp)
    };
    rayon::join(
        || {
            if n * c >= PAR_THRESHOLD {
                dinp.par_chunks_mut(c).enumerate().for_each(|(i, di)| rows(i, di));
            } else {
                dinp.chunks_mut(c).enumerate().for_each(|(i, di)| rows(i, di));
            }
        },
        || {
            if let Some(dw) = dweight {
                weight_grad(&mut dw[..c], &inp[..n * c], &dout[..n * c], &rstd[..n], c);
            }
        },
    );
}

crate::simd_fn! {
fn forward_row(o: &mut [f32], rstd: &mut f32, x: &[f32], weight: &[f32], eps: f32) {
    let c = x.len();
    let r = 1.0 / (dot(x, x) / c as f32 + eps).sqrt();
    for k in 0..c {
        // PyTorch order: (x · rstd) first, then the weight.
        o[k] = weight[k] * (x[k] * r);
    }
    *rstd = r;
}
}

crate::simd_fn! {
/// `dx = r·(g⊙w) − x · r³ · mean(g⊙w⊙x)`.
fn backward_row(di: &mut [f32], x: &[f32], g: &[f32], weight: &[f32], r: f32, accumulate: bool) {
    let c = x.len();
    let mut acc = [0.0f32; 16];
    let (cg, cw, cx) = (g.chunks_exact(16), weight.chunks_exact(16), x.chunks_exact(16));
    let (rg, rw, rx) = (cg.remainder(), cw.remainder(), cx.remainder());
    for ((gv, wv), xv) in cg.zip(cw).zip(cx) {
        for k in 0..16 {
            acc[k] += gv[k] * wv[k] * xv[k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for ((gv, wv), xv) in rg.iter().zip(rw).zip(rx) {
        s += gv * wv * xv;
    }
    let coef = s / c as f32 * r * r * r;
    if accumulate {
        for k in 0..c {
            di[k] += r * g[k] * weight[k] - x[k] * coef;
        }
    } else {
        for k in 0..c {
            di[k] = r * g[k] * weight[k] - x[k] * coef;
        }
    }
}
}

crate::simd_fn! {
fn weight_grad(dw: &mut [f32], inp: &[f32], dout: &[f32], rstd: &[f32], c: usize) {
    for (i, (x, g)) in inp.chunks_exact(c).zip(dout.chunks_exact(c)).enumerate() {
        let r = rstd[i];
        for k in 0..c {
            dw[k] += x[k] * r * g[k];
        }
    }
}
}

pub mod reference {
    /// f64 throughout, straight from the definition.
    pub fn forward(out: &mut [f32], inp: &[f32], weight: &[f32], n: usize, c: usize, eps: f32) {
        for i in 0..n {
            let x = &inp[i * c..(i + 1) * c];
            let ms = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / c as f64;
            let r = 1.0 / (ms + eps as f64).sqrt();
            for k in 0..c {
                out[i * c + k] = (x[k] as f64 * r * weight[k] as f64) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::*;

    fn run(n: usize, c: usize) {
        let x: Vec<f32> = rand_vec(n * c, 1).iter().map(|v| v * 3.0 + 0.5).collect();
        let w: Vec<f32> = rand_vec(c, 2).iter().map(|v| 1.0 + 0.3 * v).collect();
        let (mut o, mut r) = (vec![0.0; n * c], vec![0.0; n * c]);
        let mut rs = vec![0.0; n];
        forward(&mut o, &mut rs, &x, &w, n, c, 1e-6);
        reference::forward(&mut r, &x, &w, n, c, 1e-6);
        assert_close(&o, &r, 1e-5, "rmsnorm out");

        let dout = rand_vec(n * c, 4);
        let (mut dx, mut dw) = (vec![0.0; n * c], vec![0.0; c]);
        backward(&mut dx, Some(&mut dw), &dout, &x, &w, &rs, n, c, false);
        check_fd(&x, &dx, 1e-2, 2e-3, "fd dinp", |xs| {
            let mut o = vec![0.0; n * c];
            reference::forward(&mut o, xs, &w, n, c, 1e-6);
            weighted(&o, &dout)
        });
        check_fd(&w, &dw, 1e-2, 2e-3, "fd dweight", |ws| {
            let mut o = vec![0.0; n * c];
            reference::forward(&mut o, &x, ws, n, c, 1e-6);
            weighted(&o, &dout)
        });
        // Accumulating adds to what is there; a frozen weight is left alone.
        let mut dx2 = vec![1.0; n * c];
        backward(&mut dx2, None, &dout, &x, &w, &rs, n, c, true);
        let shifted: Vec<f32> = dx.iter().map(|v| v + 1.0).collect();
        assert_close(&dx2, &shifted, 1e-5, "dinp accumulate");
    }

    #[test]
    fn small_and_parallel() {
        run(5, 37);
        run(200, 96);
    }
}
