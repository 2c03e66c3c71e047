//! Causal grouped-query self-attention (Llama, Mistral, Qwen2): `H` query heads share `KV` key/value heads
//! (query head h reads key/value head `h / (H / KV)`, as transformers' `repeat_kv`),
//! `P = softmax(Q Kᵀ / √d + mask)`, `out = P V`, where the mask adds the most negative f32 for future keys and
//! for padding keys (as transformers' eager path does, so even a row with every key masked gives the same
//! uniform probabilities).
//!
//! `qkv` is the output of one fused projection, rows `[B, T, (H + 2·KV)·d]`: query heads, then key heads, then
//! value heads. `out` is `[B, T, H·d]`. The forward keeps the probabilities `[B, H, T, T]` for the backward.

use crate::math::{exp, max, sum};
use crate::matmul::{gemm_ptr, gemm_view, Par, View};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl Shape {
    /// Width of a fused q/k/v row.
    pub fn qkv_width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }
    /// Width of an output row.
    pub fn out_width(&self) -> usize {
        self.heads * self.head_dim
    }
    /// Length of a probabilities buffer `[B, H, T, T]`.
    pub fn probs_len(&self) -> usize {
        self.batch * self.heads * self.seq * self.seq
    }
    fn rep(&self) -> usize {
        self.heads / self.kv_heads
    }
    /// Column offsets of query head h and of its key and value head.
    fn cols(&self, h: usize) -> (usize, usize, usize) {
        let (d, kv) = (self.head_dim, h / self.rep());
        (h * d, (self.heads + kv) * d, (self.heads + self.kv_heads + kv) * d)
    }
    fn check(&self) {
        assert!(self.kv_heads > 0 && self.heads.is_multiple_of(self.kv_heads), "heads must be a multiple of kv_heads");
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

crate::simd_fn! {
/// Adds the key mask and the causal mask to each score row and turns it into probabilities in place.
fn softmax_rows(p: &mut [f32], mask: &[f32], t: usize) {
    for (i, row) in p.chunks_exact_mut(t).enumerate() {
        for (j, (x, mv)) in row.iter_mut().zip(mask).enumerate() {
            *x += if j > i { f32::MIN } else { *mv };
        }
        let mx = max(row);
        for x in row.iter_mut() {
            *x = exp(*x - mx);
        }
        let inv = 1.0 / sum(row);
        for x in row.iter_mut() {
            *x *= inv;
        }
    }
}
}

crate::simd_fn! {
/// `dS = P ⊙ (dP − Σ_j P dP)` per row, in place over dP.
fn softmax_backward(ds: &mut [f32], p: &[f32], t: usize) {
    for (g, pr) in ds.chunks_exact_mut(t).zip(p.chunks_exact(t)) {
        let dotp = crate::math::dot(g, pr);
        for (gv, pv) in g.iter_mut().zip(pr) {
            *gv = pv * (*gv - dotp);
        }
    }
}
}

/// `mask` is the additive key mask `[B, T]` (0 for tokens, `f32::MIN` for padding).
pub fn forward(out: &mut [f32], probs: &mut [f32], qkv: &[f32], mask: &[f32], s: Shape) {
    let _prof = crate::profile::scope("causal_attention.forward");
    s.check();
    let (t, w, ow, hd) = (s.seq, s.qkv_width(), s.out_width(), s.head_dim);
    assert!(out.len() >= s.batch * t * ow && qkv.len() >= s.batch * t * w && mask.len() >= s.batch * t);
    assert!(probs.len() >= s.probs_len());
    let scale = 1.0 / (hd as f32).sqrt();
    let out_ptr = SendPtr(out.as_mut_ptr());
    probs[..s.probs_len()].par_chunks_mut(t * t).enumerate().for_each(|(bh, p)| {
        let (bi, h) = (bh / s.heads, bh % s.heads);
        let (qc, kc, vc) = s.cols(h);
        let base = bi * t * w;
        let q = View { data: &qkv[base + qc..], rs: w, cs: 1 };
        let kt = View { data: &qkv[base + kc..], rs: 1, cs: w };
        gemm_view(p, t, q, kt, t, t, hd, scale, false, Par::Seq);
        softmax_rows(p, &mask[bi * t..(bi + 1) * t], t);
        let v = View { data: &qkv[base + vc..], rs: w, cs: 1 };
        // SAFETY: this (batch, head) owns columns h·d..(h+1)·d of rows bi·T..(bi+1)·T of `out`; the assert at
        // the top bounds them by out.len().
        unsafe {
            gemm_ptr(
                out_ptr.get().add(bi * t * ow + h * hd),
                ow,
                View::new(p, t, false),
                v,
                t,
                hd,
                t,
                1.0,
                false,
                Par::Seq,
            )
        };
    });
}

/// Writes all of `dqkv` (`[B, T, (H + 2·KV)·d]`). `scratch` is a `[B, H, T, T]` buffer for score gradients.
pub fn backward(dqkv: &mut [f32], scratch: &mut [f32], dout: &[f32], qkv: &[f32], probs: &[f32], s: Shape) {
    let _prof = crate::profile::scope("causal_attention.backward");
    s.check();
    let (t, w, ow, hd, rep) = (s.seq, s.qkv_width(), s.out_width(), s.head_dim, s.rep());
    assert!(dqkv.len() >= s.batch * t * w && dout.len() >= s.batch * t * ow && scratch.len() >= s.probs_len());
    assert!(probs.len() >= s.probs_len() && qkv.len() >= s.batch * t * w);
    let scale = 1.0 / (hd as f32).sqrt();
    let dptr = SendPtr(dqkv.as_mut_ptr());
    // One task per (batch, key/value head): its query heads add into the same dK and dV blocks.
    scratch[..s.probs_len()].par_chunks_mut(rep * t * t).enumerate().for_each(|(bg, ds_group)| {
        let (bi, g) = (bg / s.kv_heads, bg % s.kv_heads);
        let base = bi * t * w;
        for (r, ds) in ds_group.chunks_exact_mut(t * t).enumerate() {
            let h = g * rep + r;
            let (qc, kc, vc) = s.cols(h);
            let p = &probs[(bi * s.heads + h) * t * t..][..t * t];
            let dctx = View { data: &dout[bi * t * ow + h * hd..], rs: ow, cs: 1 };
            let acc = r > 0;
            // dP = dout · Vᵀ
            gemm_view(ds, t, dctx, View { data: &qkv[base + vc..], rs: 1, cs: w }, t, t, hd, 1.0, false, Par::Seq);
            // SAFETY: this (batch, kv head) task owns the q blocks of its query heads and its k and v blocks in
            // rows bi·T..(bi+1)·T of dqkv, bounded by the asserts above.
            unsafe {
                // dV += Pᵀ · dout
                gemm_ptr(dptr.get().add(base + vc), w, View::new(p, t, true), dctx, t, hd, t, 1.0, acc, Par::Seq);
            }
            softmax_backward(ds, p, t);
            // SAFETY: as above.
            unsafe {
                // dQ = scale · dS · K ; dK += scale · dSᵀ · Q
                let k = View { data: &qkv[base + kc..], rs: w, cs: 1 };
                gemm_ptr(dptr.get().add(base + qc), w, View::new(ds, t, false), k, t, hd, t, scale, false, Par::Seq);
                let q = View { data: &qkv[base + qc..], rs: w, cs: 1 };
                gemm_ptr(dptr.get().add(base + kc), w, View::new(ds, t, true), q, t, hd, t, scale, acc, Par::Seq);
            }
        }
    });
}

pub mod reference {
    use super::Shape;

    /// Straight loops in f64 with an explicit causal and padding mask (masked keys skipped; a row with no
    /// visible key is uniform over all keys).
    pub fn forward(out: &mut [f32], qkv: &[f32], mask: &[f32], s: Shape) {
        let (t, w, ow, hd) = (s.seq, s.qkv_width(), s.out_width(), s.head_dim);
        let scale = 1.0 / (hd as f64).sqrt();
        for bi in 0..s.batch {
            for h in 0..s.heads {
                let (qc, kc, vc) = s.cols(h);
                for i in 0..t {
                    let row = |j: usize| (bi * t + j) * w;
                    let visible: Vec<bool> = (0..t).map(|j| j <= i && mask[bi * t + j] == 0.0).collect();
                    let any = visible.iter().any(|&v| v);
                    let sc: Vec<f64> = (0..t)
                        .map(|j| {
                            (0..hd).map(|d| qkv[row(i) + qc + d] as f64 * qkv[row(j) + kc + d] as f64).sum::<f64>()
                                * scale
                        })
                        .collect();
                    let mx = (0..t).filter(|&j| visible[j]).map(|j| sc[j]).fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = (0..t)
                        .map(|j| {
                            if !any {
                                1.0
                            } else if visible[j] {
                                (sc[j] - mx).exp()
                            } else {
                                0.0
                            }
                        })
                        .collect();
                    let z: f64 = e.iter().sum();
                    for d in 0..hd {
                        let acc: f64 = (0..t).map(|j| e[j] / z * qkv[row(j) + vc + d] as f64).sum();
                        out[(bi * t + i) * ow + h * hd + d] = acc as f32;
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

    fn run(s: Shape, fd: bool) {
        let (t, w, ow) = (s.seq, s.qkv_width(), s.out_width());
        let n = s.batch * t;
        let qkv = rand_vec(n * w, 1);
        // The last two keys of batch row 0 are padding.
        let mut mask = vec![0.0f32; n];
        mask[t - 1] = f32::MIN;
        mask[t - 2] = f32::MIN;
        let (mut o, mut r) = (vec![0.0; n * ow], vec![0.0; n * ow]);
        let mut probs = vec![0.0; s.probs_len()];
        forward(&mut o, &mut probs, &qkv, &mask, s);
        reference::forward(&mut r, &qkv, &mask, s);
        assert_close(&o, &r, 1e-5, "attention out");
        for i in 0..t {
            for j in i + 1..t {
                assert_eq!(probs[i * t + j], 0.0, "future key gets zero probability");
            }
        }
        let dout = rand_vec(n * ow, 2);
        let mut dqkv = vec![f32::NAN; n * w];
        let mut scratch = vec![0.0; s.probs_len()];
        backward(&mut dqkv, &mut scratch, &dout, &qkv, &probs, s);
        assert!(dqkv.iter().all(|v| v.is_finite()), "every gradient entry written");
        if fd {
            check_fd(&qkv, &dqkv, 1e-2, 2e-3, "fd attention", |x| {
                let mut o = vec![0.0; n * ow];
                reference::forward(&mut o, x, &mask, s);
                weighted(&o, &dout)
            });
        }
    }

    #[test]
    fn grouped_query_small_with_padding() {
        run(Shape { batch: 2, seq: 5, heads: 4, kv_heads: 2, head_dim: 3 }, true);
        run(Shape { batch: 2, seq: 4, heads: 2, kv_heads: 2, head_dim: 4 }, true);
        run(Shape { batch: 1, seq: 6, heads: 3, kv_heads: 1, head_dim: 2 }, true);
    }

    #[test]
    fn larger_shape() {
        run(Shape { batch: 2, seq: 33, heads: 6, kv_heads: 2, head_dim: 16 }, false);
    }

    #[test]
    fn fully_masked_row_is_uniform_like_transformers() {
        // Left padding: the first query sees only padding, and transformers' additive mask then gives every
        // key the same score.
        let s = Shape { batch: 1, seq: 3, heads: 1, kv_heads: 1, head_dim: 2 };
        let qkv = rand_vec(3 * s.qkv_width(), 3);
        let mask = [f32::MIN, 0.0, 0.0];
        let mut o = vec![0.0; 3 * 2];
        let mut probs = vec![0.0; 9];
        forward(&mut o, &mut probs, &qkv, &mask, s);
        assert_close(&probs[..3], &[1.0 / 3.0; 3], 1e-6, "uniform row");
        let mut r = vec![0.0; 3 * 2];
        reference::forward(&mut r, &qkv, &mask, s);
        assert_close(&o, &r, 1e-5, "out");
    }
}
