//! BERT pooler: `pooled = tanh(dense(x[:, 0]))` on the first ([CLS]) token of each sequence.
//! The forward keeps the gathered [CLS] rows and the tanh output, which is all the backward needs.

use super::linear;

#[allow(clippy::too_many_arguments)]
pub fn forward(
    pooled: &mut [f32],
    cls: &mut [f32],
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    b: usize,
    t: usize,
    c: usize,
) {
    let _prof = crate::profile::scope("pooler.forward");
    for i in 0..b {
        cls[i * c..(i + 1) * c].copy_from_slice(&x[i * t * c..i * t * c + c]);
    }
    linear::forward(pooled, cls, weight, Some(bias), b, c, c);
    for v in pooled[..b * c].iter_mut() {
        *v = v.tanh();
    }
}

/// Overwrites all of `dx` (`[B·T, C]`, zero except the [CLS] rows); `dpre` is a `[B, C]` scratch buffer.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    dx: &mut [f32],
    dweight: &mut [f32],
    dbias: &mut [f32],
    dpre: &mut [f32],
    dpooled: &[f32],
    pooled: &[f32],
    cls: &[f32],
    weight: &[f32],
    b: usize,
    t: usize,
    c: usize,
) {
    let _prof = crate::profile::scope("pooler.backward");
    for ((d, g), y) in dpre[..b * c].iter_mut().zip(dpooled).zip(pooled) {
        *d = g * (1.0 - y * y);
    }
    dx[..b * t * c].fill(0.0);
    // The [CLS] rows are T·C apart in dx, so the input gradient goes to a contiguous scratch first: reuse
    // `dpooled`'s shape by computing it row by row into dx directly.
    for i in 0..b {
        let row = &mut dx[i * t * c..i * t * c + c];
        crate::matmul::matmul(row, &dpre[i * c..(i + 1) * c], weight, 1, c, c, false, false, false);
    }
    linear::backward(None, dweight, Some(dbias), dpre, cls, weight, b, c, c, false);
}

pub mod reference {
    pub fn forward(pooled: &mut [f32], x: &[f32], weight: &[f32], bias: &[f32], b: usize, t: usize, c: usize) {
        for i in 0..b {
            for o in 0..c {
                let s: f64 =
                    (0..c).map(|k| x[i * t * c + k] as f64 * weight[o * c + k] as f64).sum::<f64>() + bias[o] as f64;
                pooled[i * c + o] = s.tanh() as f32;
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
        let (b, t, c) = (3, 4, 6);
        let x = rand_vec(b * t * c, 1);
        let w = rand_vec(c * c, 2);
        let bias = rand_vec(c, 3);
        let (mut p, mut r, mut cls) = (vec![0.0; b * c], vec![0.0; b * c], vec![0.0; b * c]);
        forward(&mut p, &mut cls, &x, &w, &bias, b, t, c);
        reference::forward(&mut r, &x, &w, &bias, b, t, c);
        assert_close(&p, &r, 1e-5, "pooler");
        let dout = rand_vec(b * c, 4);
        let (mut dx, mut dw, mut db, mut dpre) =
            (vec![1.0; b * t * c], vec![0.0; c * c], vec![0.0; c], vec![0.0; b * c]);
        backward(&mut dx, &mut dw, &mut db, &mut dpre, &dout, &p, &cls, &w, b, t, c);
        let loss = |x: &[f32], w: &[f32], bias: &[f32]| {
            let mut o = vec![0.0; b * c];
            reference::forward(&mut o, x, w, bias, b, t, c);
            weighted(&o, &dout)
        };
        check_fd(&x, &dx, 1e-2, 1e-3, "fd x", |v| loss(v, &w, &bias));
        check_fd(&w, &dw, 1e-2, 1e-3, "fd w", |v| loss(&x, v, &bias));
        check_fd(&bias, &db, 1e-2, 1e-3, "fd b", |v| loss(&x, &w, v));
    }
}
