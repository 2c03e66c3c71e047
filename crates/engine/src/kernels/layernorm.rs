//! LayerNorm over the last dimension as `torch.nn.LayerNorm` (biased variance, eps inside the square root).
//! The forward keeps each row's mean and reciprocal standard deviation for the backward.

use crate::math::{for_each_row, sum, PAR_THRESHOLD};
use rayon::prelude::*;

#[allow(clippy::too_many_arguments)]
pub fn forward(
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: &[f32],
    n: usize,
    c: usize,
    eps: f32,
) {
    let _prof = crate::profile::scope("layernorm.forward");
    let out = &mut out[..n * c];
    let row = |i: usize, o: &mut [f32]| -> (f32, f32) {
        let (mut m, mut r) = (0.0, 0.0);
        forward_row(o, &mut m, &mut r, &inp[i * c..(i + 1) * c], weight, bias, eps);
        (m, r)
    };
    if n * c >= PAR_THRESHOLD {
        out.par_chunks_mut(c).zip(mean[..n].par_iter_mut().zip(rstd[..n].par_iter_mut())).enumerate().for_each(
            |(i, (o, (mo, so)))| {
                let (m, s) = row(i, o);
                *mo = m;
                *so = s;
            },
        );
    } else {
        for (i, o) in out.chunks_mut(c).enumerate() {
            let (m, s) = row(i, o);
            mean[i] = m;
            rstd[i] = s;
        }
    }
}

/// `dinp` is overwritten; `dweight` and `dbias` are accumulated.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    dinp: &mut [f32],
    dweight: &mut [f32],
    dbias: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    mean: &[f32],
    rstd: &[f32],
    n: usize,
    c: usize,
) {
    let _prof = crate::profile::scope("layernorm.backward");
    let dinp = &mut dinp[..n * c];
    rayon::join(
        || {
            for_each_row(dinp, c, |i, di| {
                backward_row(di, &inp[i * c..(i + 1) * c], &dout[i * c..(i + 1) * c], weight, mean[i], rstd[i])
            })
        },
        || param_grads(&mut dweight[..c], &mut dbias[..c], &inp[..n * c], &dout[..n * c], mean, rstd, c),
    );
}

crate::simd_fn! {
fn forward_row(o: &mut [f32], mean: &mut f32, rstd: &mut f32, x: &[f32], weight: &[f32], bias: &[f32], eps: f32) {
    let c = x.len();
    let m = sum(x) / c as f32;
    // Second pass over the centred values: as accurate as PyTorch's Welford in f32 for these widths.
    let mut acc = [0.0f32; 16];
    let chunks = x.chunks_exact(16);
    let rem = chunks.remainder();
    for ch in chunks {
        for k in 0..16 {
            let d = ch[k] - m;
            acc[k] += d * d;
        }
    }
    let mut v: f32 = acc.iter().sum();
    for &xv in rem {
        v += (xv - m) * (xv - m);
    }
    let s = 1.0 / (v / c as f32 + eps).sqrt();
    for k in 0..c {
        o[k] = (x[k] - m) * s * weight[k] + bias[k];
    }
    *mean = m;
    *rstd = s;
}
}

crate::simd_fn! {
fn backward_row(di: &mut [f32], x: &[f32], g: &[f32], weight: &[f32], m: f32, s: f32) {
    let c = x.len();
    // di temporarily holds dnorm = dout · weight.
    for k in 0..c {
        di[k] = g[k] * weight[k];
    }
    let dnorm_mean = sum(di) / c as f32;
    let mut acc = [0.0f32; 16];
    let (cd, cx) = (di.chunks_exact(16), x.chunks_exact(16));
    let (rd, rx) = (cd.remainder(), cx.remainder());
    for (d, xv) in cd.zip(cx) {
        for k in 0..16 {
            acc[k] += d[k] * (xv[k] - m);
        }
    }
    let mut dn_norm: f32 = acc.iter().sum();
    for (d, xv) in rd.iter().zip(rx) {
        dn_norm += d * (xv - m);
    }
    let dnorm_norm_mean = dn_norm * s / c as f32;
    for k in 0..c {
        let norm = (x[k] - m) * s;
        di[k] = (di[k] - dnorm_mean - norm * dnorm_norm_mean) * s;
    }
}
}

crate::simd_fn! {
fn param_grads(dw: &mut [f32], db: &mut [f32], inp: &[f32], dout: &[f32], mean: &[f32], rstd: &[f32], c: usize) {
    for (i, (x, g)) in inp.chunks_exact(c).zip(dout.chunks_exact(c)).enumerate() {
        let (m, s) = (mean[i], rstd[i]);
        for k in 0..c {
            dw[k] += (x[k] - m) * s * g[k];
            db[k] += g[k];
        }
    }
}
}

pub mod reference {
    /// f64 throughout, straight from the definition.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(out: &mut [f32], inp: &[f32], weight: &[f32], bias: &[f32], n: usize, c: usize, eps: f32) {
        for i in 0..n {
            let x: Vec<f64> = inp[i * c..(i + 1) * c].iter().map(|&v| v as f64).collect();
            let m = x.iter().sum::<f64>() / c as f64;
            let v = x.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / c as f64;
            let s = 1.0 / (v + eps as f64).sqrt();
            for k in 0..c {
                out[i * c + k] = ((x[k] - m) * s * weight[k] as f64 + bias[k] as f64) as f32;
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
        let w = rand_vec(c, 2);
        let b = rand_vec(c, 3);
        let (mut o, mut r) = (vec![0.0; n * c], vec![0.0; n * c]);
        let (mut m, mut s) = (vec![0.0; n], vec![0.0; n]);
        forward(&mut o, &mut m, &mut s, &x, &w, &b, n, c, 1e-12);
        reference::forward(&mut r, &x, &w, &b, n, c, 1e-12);
        assert_close(&o, &r, 1e-5, "layernorm out");

        let dout = rand_vec(n * c, 4);
        let (mut dx, mut dw, mut db) = (vec![0.0; n * c], vec![0.0; c], vec![0.0; c]);
        backward(&mut dx, &mut dw, &mut db, &dout, &x, &w, &m, &s, n, c);
        let eps = 1e-2;
        check_fd(&x, &dx, eps, 2e-3, "fd dinp", |xs| {
            let mut o = vec![0.0; n * c];
            reference::forward(&mut o, xs, &w, &b, n, c, 1e-12);
            weighted(&o, &dout)
        });
        check_fd(&w, &dw, eps, 2e-3, "fd dweight", |ws| {
            let mut o = vec![0.0; n * c];
            reference::forward(&mut o, &x, ws, &b, n, c, 1e-12);
            weighted(&o, &dout)
        });
        check_fd(&b, &db, eps, 2e-3, "fd dbias", |bs| {
            let mut o = vec![0.0; n * c];
            reference::forward(&mut o, &x, &w, bs, n, c, 1e-12);
            weighted(&o, &dout)
        });
    }

    #[test]
    fn small_and_parallel() {
        run(5, 37);
        run(200, 96);
    }
}
