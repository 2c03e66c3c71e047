//! Multi-head scaled-dot-product self-attention with an additive key mask, fused per (batch, head):
//! `P = softmax(Q Kᵀ / √d + mask)`, optional dropout on P, `out = P V`.
//!
//! Layouts avoid every transpose: `qkv` is the output of one fused `[3C, C]` projection, `[B, T, 3, H, d]`
//! (query, key and value blocks side by side on each row); `out` is `[B, T, H, d]` = `[B·T, C]`, ready for the
//! output projection. The forward keeps the probabilities (and their dropped-out copy) for the backward.

use super::dropout::Dropout;
use crate::math::{exp_sum, max};
use crate::matmul::{gemm_ptr, gemm_view, Par, View};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
}

impl Shape {
    pub fn channels(&self) -> usize {
        self.heads * self.head_dim
    }
    /// Length of a probabilities buffer `[B, H, T, T]`.
    pub fn probs_len(&self) -> usize {
        self.batch * self.heads * self.seq * self.seq
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only to write disjoint (batch, head) column blocks from different threads.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Query, key and value views of head `h` in batch row `bi`: rows `T`, stride `3C`.
fn qkv_offsets(s: Shape, bi: usize, h: usize) -> (usize, usize, usize) {
    let c = s.channels();
    let base = bi * s.seq * 3 * c + h * s.head_dim;
    (base, base + c, base + 2 * c)
}

crate::simd_fn! {
/// Adds the key mask to each score row and turns it into probabilities in place.
fn softmax_rows(p: &mut [f32], mask: &[f32], t: usize) {
    for row in p.chunks_exact_mut(t) {
        for (x, mv) in row.iter_mut().zip(mask) {
            *x += mv;
        }
        let mx = max(row);
        let inv = 1.0 / exp_sum(row, mx);
        for x in row.iter_mut() {
            *x *= inv;
        }
    }
}
}

crate::simd_fn! {
/// `out = dropout(p)` with mask indices starting at `base`.
fn dropout_copy(out: &mut [f32], p: &[f32], d: Dropout, base: usize, scale: f32) {
    for (k, (o, x)) in out.iter_mut().zip(p.iter()).enumerate() {
        *o = if d.keep(base + k) { x * scale } else { 0.0 };
    }
}
}

crate::simd_fn! {
/// From the gradient of the dropped-out probabilities to that of the scores (before the 1/√d scale):
/// undo dropout, then `dS = P ⊙ (dP − Σ_j P dP)` per row.
fn softmax_dropout_backward(ds: &mut [f32], p: &[f32], dropout: Option<Dropout>, base: usize, t: usize) {
    if let Some(d) = dropout {
        let sc = d.scale();
        for (k, g) in ds.iter_mut().enumerate() {
            *g = if d.keep(base + k) { *g * sc } else { 0.0 };
        }
    }
    for (g, pr) in ds.chunks_exact_mut(t).zip(p.chunks_exact(t)) {
        let dotp = crate::math::dot(g, pr);
        for (gv, pv) in g.iter_mut().zip(pr) {
            *gv = pv * (*gv - dotp);
        }
    }
}
}

/// `probs_drop` must be `Some` exactly when `dropout` is (with p > 0).
#[allow(clippy::too_many_arguments)]
pub fn forward(
    out: &mut [f32],
    probs: &mut [f32],
    probs_drop: Option<&mut [f32]>,
    qkv: &[f32],
    mask: &[f32],
    s: Shape,
    dropout: Option<Dropout>,
) {
    let _prof = crate::profile::scope("attention.forward");
    let (t, c, hd) = (s.seq, s.channels(), s.head_dim);
    assert!(out.len() >= s.batch * t * c && qkv.len() >= s.batch * t * 3 * c && mask.len() >= s.batch * t);
    assert!(probs.len() >= s.probs_len());
    let scale = 1.0 / (hd as f32).sqrt();
    let out_ptr = SendPtr(out.as_mut_ptr());
    let head = |bh: usize, p: &mut [f32], pd: Option<&mut [f32]>| {
        let (bi, h) = (bh / s.heads, bh % s.heads);
        let (qo, ko, vo) = qkv_offsets(s, bi, h);
        let q = View { data: &qkv[qo..], rs: 3 * c, cs: 1 };
        let kt = View { data: &qkv[ko..], rs: 1, cs: 3 * c };
        gemm_view(p, t, q, kt, t, t, hd, scale, false, Par::Seq);
        let m = &mask[bi * t..(bi + 1) * t];
        softmax_rows(p, m, t);
        let src: &[f32] = match (pd, dropout) {
            (Some(pd), Some(d)) => {
                let (sc, base) = (d.scale(), bh * t * t);
                dropout_copy(pd, p, d, base, sc);
                pd
            }
            _ => p,
        };
        let v = View { data: &qkv[vo..], rs: 3 * c, cs: 1 };
        // SAFETY: this (batch, head) owns columns h·d..(h+1)·d of rows bi·T..(bi+1)·T of `out`; the assert at
        // the top bounds them by out.len().
        unsafe {
            gemm_ptr(
                out_ptr.get().add(bi * t * c + h * hd),
                c,
                View::new(src, t, false),
                v,
                t,
                hd,
                t,
                1.0,
                false,
                Par::Seq,
            )
        };
    };
    let probs = &mut probs[..s.probs_len()];
    match (probs_drop, dropout) {
        (Some(pd), Some(d)) if d.p > 0.0 => probs
            .par_chunks_mut(t * t)
            .zip(pd[..s.probs_len()].par_chunks_mut(t * t))
            .enumerate()
            .for_each(|(bh, (p, pd))| head(bh, p, Some(pd))),
        _ => probs.par_chunks_mut(t * t).enumerate().for_each(|(bh, p)| head(bh, p, None)),
    }
}

/// Writes all of `dqkv` (`[B, T, 3C]`). `scratch` is a `[B, H, T, T]` buffer for the score gradients.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    dqkv: &mut [f32],
    scratch: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    probs: &[f32],
    probs_drop: Option<&[f32]>,
    s: Shape,
    dropout: Option<Dropout>,
) {
    let _prof = crate::profile::scope("attention.backward");
    let (t, c, hd) = (s.seq, s.channels(), s.head_dim);
    assert!(dqkv.len() >= s.batch * t * 3 * c && dout.len() >= s.batch * t * c && scratch.len() >= s.probs_len());
    let scale = 1.0 / (hd as f32).sqrt();
    let dptr = SendPtr(dqkv.as_mut_ptr());
    let dropout = dropout.filter(|d| d.p > 0.0);
    scratch[..s.probs_len()].par_chunks_mut(t * t).enumerate().for_each(|(bh, ds)| {
        let (bi, h) = (bh / s.heads, bh % s.heads);
        let (qo, ko, vo) = qkv_offsets(s, bi, h);
        let p = &probs[bh * t * t..][..t * t];
        let pd = match (probs_drop, dropout) {
            (Some(pd), Some(_)) => &pd[bh * t * t..][..t * t],
            _ => p,
        };
        let dctx = View { data: &dout[bi * t * c + h * hd..], rs: c, cs: 1 };
        // dP_dropped = dout · Vᵀ
        gemm_view(ds, t, dctx, View { data: &qkv[vo..], rs: 1, cs: 3 * c }, t, t, hd, 1.0, false, Par::Seq);
        // SAFETY: this (batch, head) owns its q, k and v column blocks of rows bi·T..(bi+1)·T in dqkv, bounded
        // by the assert above.
        unsafe {
            // dV = P_droppedᵀ · dout
            gemm_ptr(dptr.get().add(vo), 3 * c, View::new(pd, t, true), dctx, t, hd, t, 1.0, false, Par::Seq);
        }
        softmax_dropout_backward(ds, p, dropout, bh * t * t, t);
        let dsv = View::new(ds, t, false);
        // SAFETY: as above.
        unsafe {
            // dQ = scale · dS · K ; dK = scale · dSᵀ · Q
            gemm_ptr(
                dptr.get().add(qo),
                3 * c,
                dsv,
                View { data: &qkv[ko..], rs: 3 * c, cs: 1 },
                t,
                hd,
                t,
                scale,
                false,
                Par::Seq,
            );
            gemm_ptr(
                dptr.get().add(ko),
                3 * c,
                View::new(ds, t, true),
                View { data: &qkv[qo..], rs: 3 * c, cs: 1 },
                t,
                hd,
                t,
                scale,
                false,
                Par::Seq,
            );
        }
    });
}

pub mod reference {
    use super::{Dropout, Shape};

    /// Straight loops in f64.
    pub fn forward(out: &mut [f32], qkv: &[f32], mask: &[f32], s: Shape, dropout: Option<Dropout>) {
        let (t, c, hd) = (s.seq, s.channels(), s.head_dim);
        let scale = 1.0 / (hd as f64).sqrt();
        for bi in 0..s.batch {
            for h in 0..s.heads {
                let bh = bi * s.heads + h;
                for i in 0..t {
                    let q = |d: usize| qkv[(bi * t + i) * 3 * c + h * hd + d] as f64;
                    let mut sc = vec![0.0f64; t];
                    for (j, sv) in sc.iter_mut().enumerate() {
                        let k = |d: usize| qkv[(bi * t + j) * 3 * c + c + h * hd + d] as f64;
                        *sv = (0..hd).map(|d| q(d) * k(d)).sum::<f64>() * scale + mask[bi * t + j] as f64;
                    }
                    let mx = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = sc.iter().map(|v| (v - mx).exp()).sum();
                    for d in 0..hd {
                        let mut acc = 0.0;
                        for j in 0..t {
                            let mut p = (sc[j] - mx).exp() / z;
                            if let Some(dr) = dropout {
                                p = if dr.keep(bh * t * t + i * t + j) { p / (1.0 - dr.p as f64) } else { 0.0 };
                            }
                            acc += p * qkv[(bi * t + j) * 3 * c + 2 * c + h * hd + d] as f64;
                        }
                        out[(bi * t + i) * c + h * hd + d] = acc as f32;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::*;

    fn run(s: Shape, dropout: Option<Dropout>, fd: bool) {
        let (t, c) = (s.seq, s.channels());
        let n = s.batch * t;
        let qkv = rand_vec(n * 3 * c, 1);
        // Last two keys of batch row 0 are padding.
        let mut mask = vec![0.0f32; n];
        mask[t - 1] = f32::MIN;
        mask[t - 2] = f32::MIN;
        let (mut o, mut r) = (vec![0.0; n * c], vec![0.0; n * c]);
        let mut probs = vec![0.0; s.probs_len()];
        let mut pd = vec![0.0; s.probs_len()];
        forward(&mut o, &mut probs, dropout.map(|_| &mut pd[..]), &qkv, &mask, s, dropout);
        reference::forward(&mut r, &qkv, &mask, s, dropout);
        assert_close(&o, &r, 1e-5, "attention out");
        for i in 0..t {
            assert_eq!(probs[i * t + t - 1], 0.0, "padding key gets zero probability");
        }
        let dout = rand_vec(n * c, 2);
        let mut dqkv = vec![f32::NAN; n * 3 * c];
        let mut scratch = vec![0.0; s.probs_len()];
        let pdr = dropout.map(|_| &pd[..]);
        backward(&mut dqkv, &mut scratch, &dout, &qkv, &probs, pdr, s, dropout);
        assert!(dqkv.iter().all(|v| v.is_finite()), "every gradient entry written");
        if fd {
            check_fd(&qkv, &dqkv, 1e-2, 2e-3, "fd attention", |x| {
                let mut o = vec![0.0; n * c];
                reference::forward(&mut o, x, &mask, s, dropout);
                weighted(&o, &dout)
            });
        }
    }

    #[test]
    fn small_with_mask_and_dropout() {
        let s = Shape { batch: 2, seq: 5, heads: 2, head_dim: 3 };
        run(s, None, true);
        run(s, Some(Dropout { p: 0.3, seed: 9 }), true);
    }

    #[test]
    fn larger_shape() {
        run(Shape { batch: 2, seq: 33, heads: 3, head_dim: 16 }, Some(Dropout { p: 0.1, seed: 3 }), false);
    }
}
