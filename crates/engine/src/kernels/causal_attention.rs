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

/// Contiguous runs of equal `seg` values in one row: `(start, end)` of each packed sequence.
fn segments(seg: &[u32]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= seg.len() {
            return None;
        }
        let s = start;
        let mut e = s + 1;
        while e < seg.len() && seg[e] == seg[s] {
            e += 1;
        }
        start = e;
        Some((s, e))
    })
}

crate::simd_fn! {
/// As `softmax_rows` on an `l × l` diagonal block whose rows are `t` apart; the rest of each row is zeroed.
fn softmax_block(p: &mut [f32], mask: &[f32], t: usize, s: usize, l: usize) {
    for i in 0..l {
        let full = &mut p[(s + i) * t..(s + i + 1) * t];
        full[..s].fill(0.0);
        full[s + l..].fill(0.0);
        let row = &mut full[s..s + l];
        for (j, (x, mv)) in row.iter_mut().zip(&mask[s..s + l]).enumerate() {
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
/// `softmax_backward` on an `l × l` diagonal block whose rows are `t` apart.
fn softmax_backward_block(ds: &mut [f32], p: &[f32], t: usize, s: usize, l: usize) {
    for i in s..s + l {
        let g = &mut ds[i * t + s..i * t + s + l];
        let pr = &p[i * t + s..i * t + s + l];
        let dotp = crate::math::dot(g, pr);
        for (gv, pv) in g.iter_mut().zip(pr) {
            *gv = pv * (*gv - dotp);
        }
    }
}
}

/// Segment-aware (packed) variant of [`forward`]: `seg` `[B, T]` labels each token with its packed sequence
/// (contiguous runs of equal values, as derived from `position_ids` restarting at 0); a query attends causally to
/// keys of its own run only (block-diagonal, as flash-attention's varlen path). Scores are computed for the
/// diagonal blocks only; the other probabilities are zero. A query with no visible key (padding only) is uniform
/// over its run's keys.
pub fn forward_segmented(out: &mut [f32], probs: &mut [f32], qkv: &[f32], mask: &[f32], seg: &[u32], s: Shape) {
    let _prof = crate::profile::scope("causal_attention.forward_segmented");
    s.check();
    let (t, w, ow, hd) = (s.seq, s.qkv_width(), s.out_width(), s.head_dim);
    assert!(out.len() >= s.batch * t * ow && qkv.len() >= s.batch * t * w && mask.len() >= s.batch * t);
    assert!(probs.len() >= s.probs_len() && seg.len() >= s.batch * t);
    let scale = 1.0 / (hd as f32).sqrt();
    let out_ptr = SendPtr(out.as_mut_ptr());
    probs[..s.probs_len()].par_chunks_mut(t * t).enumerate().for_each(|(bh, p)| {
        let (bi, h) = (bh / s.heads, bh % s.heads);
        let (qc, kc, vc) = s.cols(h);
        let base = bi * t * w;
        for (s0, e) in segments(&seg[bi * t..(bi + 1) * t]) {
            let l = e - s0;
            let rb = base + s0 * w;
            let q = View { data: &qkv[rb + qc..], rs: w, cs: 1 };
            let kt = View { data: &qkv[rb + kc..], rs: 1, cs: w };
            gemm_view(&mut p[s0 * t + s0..], t, q, kt, l, l, hd, scale, false, Par::Seq);
            softmax_block(p, &mask[bi * t..(bi + 1) * t], t, s0, l);
            let v = View { data: &qkv[rb + vc..], rs: w, cs: 1 };
            // SAFETY: this (batch, head) owns columns h·d..(h+1)·d of rows bi·T..(bi+1)·T of `out`; the assert at
            // the top bounds them by out.len().
            unsafe {
                gemm_ptr(
                    out_ptr.get().add((bi * t + s0) * ow + h * hd),
                    ow,
                    View { data: &p[s0 * t + s0..], rs: t, cs: 1 },
                    v,
                    l,
                    hd,
                    l,
                    1.0,
                    false,
                    Par::Seq,
                )
            };
        }
    });
}

/// Backward of [`forward_segmented`]: writes all of `dqkv`, touching only the diagonal blocks.
#[allow(clippy::too_many_arguments)]
pub fn backward_segmented(
    dqkv: &mut [f32],
    scratch: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    probs: &[f32],
    seg: &[u32],
    s: Shape,
) {
    let _prof = crate::profile::scope("causal_attention.backward_segmented");
    s.check();
    let (t, w, ow, hd, rep) = (s.seq, s.qkv_width(), s.out_width(), s.head_dim, s.rep());
    assert!(dqkv.len() >= s.batch * t * w && dout.len() >= s.batch * t * ow && scratch.len() >= s.probs_len());
    assert!(probs.len() >= s.probs_len() && qkv.len() >= s.batch * t * w && seg.len() >= s.batch * t);
    let scale = 1.0 / (hd as f32).sqrt();
    let dptr = SendPtr(dqkv.as_mut_ptr());
    scratch[..s.probs_len()].par_chunks_mut(rep * t * t).enumerate().for_each(|(bg, ds_group)| {
        let (bi, g) = (bg / s.kv_heads, bg % s.kv_heads);
        for (r, ds) in ds_group.chunks_exact_mut(t * t).enumerate() {
            let h = g * rep + r;
            let (qc, kc, vc) = s.cols(h);
            let p = &probs[(bi * s.heads + h) * t * t..][..t * t];
            let acc = r > 0;
            for (s0, e) in segments(&seg[bi * t..(bi + 1) * t]) {
                let l = e - s0;
                let rb = (bi * t + s0) * w;
                let pbt = View { data: &p[s0 * t + s0..], rs: 1, cs: t };
                let dctx = View { data: &dout[(bi * t + s0) * ow + h * hd..], rs: ow, cs: 1 };
                let vt = View { data: &qkv[rb + vc..], rs: 1, cs: w };
                // dP = dout · Vᵀ on the block
                gemm_view(&mut ds[s0 * t + s0..], t, dctx, vt, l, l, hd, 1.0, false, Par::Seq);
                // SAFETY: this (batch, kv head) task owns the q blocks of its query heads and its k and v blocks
                // in rows bi·T..(bi+1)·T of dqkv, bounded by the asserts above.
                unsafe {
                    // dV += Pᵀ · dout
                    gemm_ptr(dptr.get().add(rb + vc), w, pbt, dctx, l, hd, l, 1.0, acc, Par::Seq);
                }
                softmax_backward_block(ds, p, t, s0, l);
                let dsb = View { data: &ds[s0 * t + s0..], rs: t, cs: 1 };
                let dsbt = View { data: &ds[s0 * t + s0..], rs: 1, cs: t };
                // SAFETY: as above.
                unsafe {
                    // dQ = scale · dS · K ; dK += scale · dSᵀ · Q
                    let k = View { data: &qkv[rb + kc..], rs: w, cs: 1 };
                    gemm_ptr(dptr.get().add(rb + qc), w, dsb, k, l, hd, l, scale, false, Par::Seq);
                    let q = View { data: &qkv[rb + qc..], rs: w, cs: 1 };
                    gemm_ptr(dptr.get().add(rb + kc), w, dsbt, q, l, hd, l, scale, acc, Par::Seq);
                }
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

/// Slow reference of [`forward_segmented`]: every query row sees keys `j ≤ i` with `seg[j] == seg[i]` in the
/// contiguous run of `i`; with no visible key it is uniform over the run.
pub mod reference_segmented {
    use super::Shape;

    pub fn forward(out: &mut [f32], qkv: &[f32], mask: &[f32], seg: &[u32], s: Shape) {
        let (t, w, ow, hd) = (s.seq, s.qkv_width(), s.out_width(), s.head_dim);
        let scale = 1.0 / (hd as f64).sqrt();
        for bi in 0..s.batch {
            let sg = &seg[bi * t..(bi + 1) * t];
            for h in 0..s.heads {
                let (qc, kc, vc) = s.cols(h);
                for i in 0..t {
                    let mut lo = i;
                    while lo > 0 && sg[lo - 1] == sg[i] {
                        lo -= 1;
                    }
                    let mut hi = i + 1;
                    while hi < t && sg[hi] == sg[i] {
                        hi += 1;
                    }
                    let row = |j: usize| (bi * t + j) * w;
                    let visible = |j: usize| j <= i && mask[bi * t + j] == 0.0;
                    let any = (lo..hi).any(visible);
                    let sc = |j: usize| {
                        (0..hd).map(|d| qkv[row(i) + qc + d] as f64 * qkv[row(j) + kc + d] as f64).sum::<f64>() * scale
                    };
                    let mx = (lo..hi).filter(|&j| visible(j)).map(sc).fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = (lo..hi)
                        .map(|j| {
                            if !any {
                                1.0
                            } else if visible(j) {
                                (sc(j) - mx).exp()
                            } else {
                                0.0
                            }
                        })
                        .collect();
                    let z: f64 = e.iter().sum();
                    for d in 0..hd {
                        let acc: f64 = (lo..hi).map(|j| e[j - lo] / z * qkv[row(j) + vc + d] as f64).sum();
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

    fn run_segmented(s: Shape, seg: &[u32], fd: bool) {
        let (t, w, ow) = (s.seq, s.qkv_width(), s.out_width());
        let n = s.batch * t;
        let qkv = rand_vec(n * w, 4);
        // The last key of batch row 0 is padding.
        let mut mask = vec![0.0f32; n];
        mask[t - 1] = f32::MIN;
        let (mut o, mut r) = (vec![f32::NAN; n * ow], vec![0.0; n * ow]);
        let mut probs = vec![f32::NAN; s.probs_len()];
        forward_segmented(&mut o, &mut probs, &qkv, &mask, seg, s);
        reference_segmented::forward(&mut r, &qkv, &mask, seg, s);
        assert_close(&o, &r, 1e-5, "segmented attention out");
        for i in 0..t {
            for j in 0..t {
                if j > i || seg[j] != seg[i] {
                    assert_eq!(probs[i * t + j], 0.0, "key {j} outside query {i}'s causal segment");
                }
            }
        }
        let dout = rand_vec(n * ow, 5);
        let mut dqkv = vec![f32::NAN; n * w];
        let mut scratch = vec![f32::NAN; s.probs_len()];
        backward_segmented(&mut dqkv, &mut scratch, &dout, &qkv, &probs, seg, s);
        assert!(dqkv.iter().all(|v| v.is_finite()), "every gradient entry written");
        if fd {
            check_fd(&qkv, &dqkv, 1e-2, 2e-3, "fd segmented attention", |x| {
                let mut o = vec![0.0; n * ow];
                reference_segmented::forward(&mut o, x, &mask, seg, s);
                weighted(&o, &dout)
            });
        }
    }

    #[test]
    fn segmented_matches_reference_and_finite_differences() {
        let s = Shape { batch: 2, seq: 7, heads: 4, kv_heads: 2, head_dim: 3 };
        run_segmented(s, &[0, 0, 0, 1, 1, 2, 2, 0, 0, 0, 0, 0, 0, 0], true);
        let s = Shape { batch: 1, seq: 6, heads: 3, kv_heads: 1, head_dim: 2 };
        run_segmented(s, &[0, 1, 1, 1, 2, 2], true);
        let s = Shape { batch: 2, seq: 40, heads: 6, kv_heads: 2, head_dim: 16 };
        let seg: Vec<u32> = (0..80).map(|i| [0, 0, 1, 1, 1, 2][(i % 40) / 7]).collect();
        run_segmented(s, &seg, false);
    }

    #[test]
    fn one_segment_equals_causal_attention() {
        let s = Shape { batch: 2, seq: 9, heads: 4, kv_heads: 2, head_dim: 4 };
        let n = s.batch * s.seq;
        let qkv = rand_vec(n * s.qkv_width(), 6);
        let mask = vec![0.0f32; n];
        let (mut a, mut b) = (vec![0.0; n * s.out_width()], vec![0.0; n * s.out_width()]);
        let (mut pa, mut pb) = (vec![0.0; s.probs_len()], vec![0.0; s.probs_len()]);
        forward(&mut a, &mut pa, &qkv, &mask, s);
        forward_segmented(&mut b, &mut pb, &qkv, &mask, &vec![3; n], s);
        assert_close(&b, &a, 1e-6, "one segment");
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
