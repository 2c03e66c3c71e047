//! Fully connected layer as `torch.nn.Linear`: `out[n, c_out] = inp[n, c_in] · weightᵀ + bias`, with the
//! weight stored `[c_out, c_in]` as in PyTorch checkpoints.

use crate::math::for_each_row;
use crate::matmul::matmul;

#[allow(clippy::too_many_arguments)]
pub fn forward(
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    n: usize,
    c_in: usize,
    c_out: usize,
) {
    let _prof = crate::profile::scope("linear.forward");
    let out = &mut out[..n * c_out];
    match bias {
        Some(b) => {
            // Start from the bias and let the matmul accumulate: one pass over `out` instead of two.
            for_each_row(out, c_out, |_, row| row.copy_from_slice(&b[..c_out]));
            matmul(out, inp, weight, n, c_in, c_out, false, true, true);
        }
        None => matmul(out, inp, weight, n, c_in, c_out, false, true, false),
    }
}

/// `dinp = dout · weight` (overwritten, or added to when `accumulate_dinp`), `dweight += doutᵀ · inp`,
/// `dbias += Σ_rows dout`. Pass `None` for `dinp` when the input needs no gradient.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    dinp: Option<&mut [f32]>,
    dweight: &mut [f32],
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    n: usize,
    c_in: usize,
    c_out: usize,
    accumulate_dinp: bool,
) {
    let _prof = crate::profile::scope("linear.backward");
    if let Some(dinp) = dinp {
        matmul(dinp, dout, weight, n, c_out, c_in, false, false, accumulate_dinp);
    }
    matmul(dweight, dout, inp, c_out, n, c_in, true, false, true);
    if let Some(db) = dbias {
        column_sums(&mut db[..c_out], &dout[..n * c_out]);
    }
}

crate::simd_fn! {
/// `acc[j] += Σ_i m[i, j]` for a row-major matrix with `acc.len()` columns.
pub(crate) fn column_sums(acc: &mut [f32], m: &[f32]) {
    let c = acc.len();
    for row in m.chunks_exact(c) {
        for (d, g) in acc.iter_mut().zip(row) {
            *d += g;
        }
    }
}
}

pub mod reference {
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        out: &mut [f32],
        inp: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
        n: usize,
        c_in: usize,
        c_out: usize,
    ) {
        for i in 0..n {
            for o in 0..c_out {
                let mut s = bias.map_or(0.0, |b| b[o] as f64);
                for k in 0..c_in {
                    s += inp[i * c_in + k] as f64 * weight[o * c_in + k] as f64;
                }
                out[i * c_out + o] = s as f32;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        dinp: &mut [f32],
        dweight: &mut [f32],
        dbias: &mut [f32],
        dout: &[f32],
        inp: &[f32],
        weight: &[f32],
        n: usize,
        c_in: usize,
        c_out: usize,
    ) {
        for i in 0..n {
            for k in 0..c_in {
                dinp[i * c_in + k] =
                    (0..c_out).map(|o| dout[i * c_out + o] as f64 * weight[o * c_in + k] as f64).sum::<f64>() as f32;
            }
        }
        for o in 0..c_out {
            for k in 0..c_in {
                dweight[o * c_in + k] +=
                    (0..n).map(|i| dout[i * c_out + o] as f64 * inp[i * c_in + k] as f64).sum::<f64>() as f32;
            }
            dbias[o] += (0..n).map(|i| dout[i * c_out + o]).sum::<f32>();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::*;

    #[test]
    fn matches_reference_and_finite_differences() {
        let (n, ci, co) = (13, 24, 18);
        let x = rand_vec(n * ci, 1);
        let w = rand_vec(co * ci, 2);
        let b = rand_vec(co, 3);
        let mut out = vec![0.0; n * co];
        let mut want = vec![0.0; n * co];
        forward(&mut out, &x, &w, Some(&b), n, ci, co);
        reference::forward(&mut want, &x, &w, Some(&b), n, ci, co);
        assert_close(&out, &want, 1e-5, "out");

        let dout = rand_vec(n * co, 4);
        let (mut dx, mut dw, mut db) = (vec![0.0; n * ci], rand_vec(co * ci, 5), rand_vec(co, 6));
        let (mut rdx, mut rdw, mut rdb) = (vec![0.0; n * ci], dw.clone(), db.clone());
        backward(Some(&mut dx), &mut dw, Some(&mut db), &dout, &x, &w, n, ci, co, false);
        reference::backward(&mut rdx, &mut rdw, &mut rdb, &dout, &x, &w, n, ci, co);
        assert_close(&dx, &rdx, 1e-5, "dinp");
        assert_close(&dw, &rdw, 1e-5, "dweight");
        assert_close(&db, &rdb, 1e-5, "dbias");

        // Accumulating dinp adds to what is there.
        let mut dx2 = vec![1.0; n * ci];
        backward(Some(&mut dx2), &mut vec![0.0; co * ci], None, &dout, &x, &w, n, ci, co, true);
        let shifted: Vec<f32> = rdx.iter().map(|v| v + 1.0).collect();
        assert_close(&dx2, &shifted, 1e-5, "dinp accumulate");

        let mut gx = vec![0.0; n * ci];
        let mut gw = vec![0.0; co * ci];
        backward(Some(&mut gx), &mut gw, None, &dout, &x, &w, n, ci, co, false);
        let loss_x = |xs: &[f32]| {
            let mut o = vec![0.0; n * co];
            reference::forward(&mut o, xs, &w, Some(&b), n, ci, co);
            weighted(&o, &dout)
        };
        check_fd(&x, &gx, 1e-2, 1e-3, "fd dinp", loss_x);
        let loss_w = |ws: &[f32]| {
            let mut o = vec![0.0; n * co];
            reference::forward(&mut o, &x, ws, Some(&b), n, ci, co);
            weighted(&o, &dout)
        };
        check_fd(&w, &gw, 1e-2, 1e-3, "fd dweight", loss_w);
    }

    #[test]
    fn large_parallel_shape() {
        let (n, ci, co) = (256, 96, 160);
        let x = rand_vec(n * ci, 7);
        let w = rand_vec(co * ci, 8);
        let b = rand_vec(co, 9);
        let mut out = vec![0.0; n * co];
        let mut want = vec![0.0; n * co];
        forward(&mut out, &x, &w, Some(&b), n, ci, co);
        reference::forward(&mut want, &x, &w, Some(&b), n, ci, co);
        assert_close(&out, &want, 1e-5, "out");
    }
}
