//! Causal grouped-query self-attention (Llama, Mistral, Qwen2): `H` query heads share `KV` key/value heads
//! (query head h reads key/value head `h / (H / KV)`, as transformers' `repeat_kv`),
//! `P = softmax(Q Kᵀ / √d + mask)`, `out = P V`, where the mask adds the most negative f32 for future keys and
//! for padding keys (as transformers' eager path does, so even a row with every key masked gives the same
//! uniform probabilities).
//!
//! `qkv` is the output of one fused projection, rows `[B, T, (H + 2·KV)·d]`: query heads, then key heads, then
//! value heads. `out` is `[B, T, H·d]`. The forward keeps the probabilities `[B, H, T, T]` for the backward.

use crate::math::{exp_sum, max};
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

/// Query rows per block. Each block of queries is multiplied with the keys up to its last row only, so the
/// future half of the score matrix (zero probability) is never computed, as flash-attention's causal path.
const ROW_BLOCK: usize = 64;

/// The query blocks (`rb` rows) of a run of `l` tokens, last first, as `(i0, i1, keys)`: rows `i0..i1` read keys
/// `0..keys` of the run. `keys` is `i1`, or the whole run for a block holding a query that sees no key at all
/// (left padding: `first_visible` is the run's first unmasked key), which is then uniform over the run's keys
/// as in transformers' eager path. The last block always reads every key, so it is the one that starts dK/dV.
fn blocks(l: usize, first_visible: usize, rb: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..l.div_ceil(rb)).rev().map(move |b| {
        let (i0, i1) = (b * rb, ((b + 1) * rb).min(l));
        (i0, i1, if i0 < first_visible { l } else { i1 })
    })
}

crate::simd_fn! {
/// Rows `i0..i0 + rows` of a run starting at `s0` (rows `t` apart in `p`): adds the key mask and the causal
/// mask to the scores of keys `0..keys` and turns them into probabilities in place; the rest of each row is
/// zeroed.
fn softmax_rows(p: &mut [f32], mask: &[f32], t: usize, s0: usize, i0: usize, rows: usize, keys: usize) {
    for r in 0..rows {
        let i = i0 + r;
        let full = &mut p[(s0 + i) * t..(s0 + i + 1) * t];
        full[..s0].fill(0.0);
        full[s0 + keys..].fill(0.0);
        let row = &mut full[s0..s0 + keys];
        for (j, (x, mv)) in row.iter_mut().zip(mask).enumerate() {
            *x += if j > i { f32::MIN } else { *mv };
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
/// `dS = P ⊙ (dP − Σ_j P dP)` in place over dP, on the block that [`softmax_rows`] wrote.
fn softmax_backward(ds: &mut [f32], p: &[f32], t: usize, s0: usize, i0: usize, rows: usize, keys: usize) {
    for i in s0 + i0..s0 + i0 + rows {
        let g = &mut ds[i * t + s0..i * t + s0 + keys];
        let pr = &p[i * t + s0..i * t + s0 + keys];
        let dotp = crate::math::dot(g, pr);
        for (gv, pv) in g.iter_mut().zip(pr) {
            *gv = pv * (*gv - dotp);
        }
    }
}
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

/// The runs of batch row `bi`: the whole row, or each packed sequence.
fn runs(seg: Option<&[u32]>, bi: usize, t: usize) -> Vec<(usize, usize)> {
    match seg {
        Some(seg) => segments(&seg[bi * t..(bi + 1) * t]).collect(),
        None => vec![(0, t)],
    }
}

/// First key of the run `s0..e` that is not padding (`e - s0` when all are).
fn first_visible(mask: &[f32], s0: usize, e: usize) -> usize {
    mask[s0..e].iter().position(|&v| v > f32::MIN).unwrap_or(e - s0)
}

/// Head `h` of batch row `bi` over the run of tokens `s0..e`: its sizes, its columns in the fused q/k/v rows, the
/// run's first q/k/v offset, and its query blocks.
struct Run {
    t: usize,
    w: usize,
    ow: usize,
    hd: usize,
    scale: f32,
    bi: usize,
    h: usize,
    s0: usize,
    e: usize,
    cols: (usize, usize, usize),
    r0: usize,
}

impl Run {
    fn new(s: Shape, (bi, h): (usize, usize), (s0, e): (usize, usize)) -> Self {
        let (t, w) = (s.seq, s.qkv_width());
        let hd = s.head_dim;
        let scale = 1.0 / (hd as f32).sqrt();
        Run { t, w, ow: s.out_width(), hd, scale, bi, h, s0, e, cols: s.cols(h), r0: (bi * t + s0) * w }
    }

    /// The key mask of the batch row, and [`blocks`] of this run.
    fn blocks<'m>(&self, mask: &'m [f32], rb: usize) -> (&'m [f32], impl Iterator<Item = (usize, usize, usize)>) {
        let m = &mask[self.bi * self.t..(self.bi + 1) * self.t];
        (m, blocks(self.e - self.s0, first_visible(m, self.s0, self.e), rb))
    }
}

/// Forward of head `h` of batch row `bi` over the run `s0..e`; `p` is the head's `[T, T]` probabilities.
///
/// # Safety
/// `out` holds `B·T` rows of `H·d` and no one else writes columns `h·d..(h+1)·d` of rows `bi·T + s0..bi·T + e`.
unsafe fn forward_run(p: &mut [f32], out: SendPtr, qkv: &[f32], mask: &[f32], g: &Run, rb: usize) {
    let (t, w, hd, s0, r0, (qc, kc, vc)) = (g.t, g.w, g.hd, g.s0, g.r0, g.cols);
    let (m, blocks) = g.blocks(mask, rb);
    for (i0, i1, keys) in blocks {
        let rows = i1 - i0;
        let q = View { data: &qkv[r0 + i0 * w + qc..], rs: w, cs: 1 };
        let kt = View { data: &qkv[r0 + kc..], rs: 1, cs: w };
        gemm_view(&mut p[(s0 + i0) * t + s0..], t, q, kt, rows, keys, hd, g.scale, false, Par::Seq);
        softmax_rows(p, &m[s0..], t, s0, i0, rows, keys);
        let v = View { data: &qkv[r0 + vc..], rs: w, cs: 1 };
        let pb = View { data: &p[(s0 + i0) * t + s0..], rs: t, cs: 1 };
        let o = out.get().add((g.bi * t + s0 + i0) * g.ow + g.h * hd);
        gemm_ptr(o, g.ow, pb, v, rows, hd, keys, 1.0, false, Par::Seq);
    }
}

/// Backward of [`forward_run`]; `ds` is the head's `[T, T]` scratch. dK and dV are added to when `acc`, else
/// written.
///
/// # Safety
/// `dqkv` holds `B·T` rows of `(H + 2·KV)·d` and no one else touches head h's q columns or its key/value head's
/// k and v columns in rows `bi·T + s0..bi·T + e`.
#[allow(clippy::too_many_arguments)]
unsafe fn backward_run(
    ds: &mut [f32],
    dqkv: SendPtr,
    dout: &[f32],
    qkv: &[f32],
    p: &[f32],
    mask: &[f32],
    g: &Run,
    acc: bool,
    rb: usize,
) {
    let (t, w, hd, s0, r0, (qc, kc, vc)) = (g.t, g.w, g.hd, g.s0, g.r0, g.cols);
    for (n, (i0, i1, keys)) in g.blocks(mask, rb).1.enumerate() {
        let (rows, acc) = (i1 - i0, acc || n > 0);
        let at = (s0 + i0) * t + s0;
        let dctx = View { data: &dout[(g.bi * t + s0 + i0) * g.ow + g.h * hd..], rs: g.ow, cs: 1 };
        // dP = dout · Vᵀ
        let vt = View { data: &qkv[r0 + vc..], rs: 1, cs: w };
        gemm_view(&mut ds[at..], t, dctx, vt, rows, keys, hd, 1.0, false, Par::Seq);
        // dV (+)= Pᵀ · dout
        let pt = View { data: &p[at..], rs: 1, cs: t };
        gemm_ptr(dqkv.get().add(r0 + vc), w, pt, dctx, keys, hd, rows, 1.0, acc, Par::Seq);
        softmax_backward(ds, p, t, s0, i0, rows, keys);
        // dQ = scale · dS · K ; dK (+)= scale · dSᵀ · Q
        let k = View { data: &qkv[r0 + kc..], rs: w, cs: 1 };
        let dsb = View { data: &ds[at..], rs: t, cs: 1 };
        gemm_ptr(dqkv.get().add(r0 + i0 * w + qc), w, dsb, k, rows, hd, keys, g.scale, false, Par::Seq);
        let q = View { data: &qkv[r0 + i0 * w + qc..], rs: w, cs: 1 };
        let dst = View { data: &ds[at..], rs: 1, cs: t };
        gemm_ptr(dqkv.get().add(r0 + kc), w, dst, q, keys, hd, rows, g.scale, acc, Par::Seq);
    }
}

fn forward_impl(
    out: &mut [f32],
    probs: &mut [f32],
    qkv: &[f32],
    mask: &[f32],
    seg: Option<&[u32]>,
    s: Shape,
    rb: usize,
) {
    s.check();
    let (t, w, ow) = (s.seq, s.qkv_width(), s.out_width());
    assert!(out.len() >= s.batch * t * ow && qkv.len() >= s.batch * t * w && mask.len() >= s.batch * t);
    assert!(probs.len() >= s.probs_len() && seg.is_none_or(|g| g.len() >= s.batch * t));
    let out_ptr = SendPtr(out.as_mut_ptr());
    probs[..s.probs_len()].par_chunks_mut(t * t).enumerate().for_each(|(bh, p)| {
        let (bi, h) = (bh / s.heads, bh % s.heads);
        for run in runs(seg, bi, t) {
            // SAFETY: this (batch, head) owns columns h·d..(h+1)·d of rows bi·T..(bi+1)·T of `out`, which the
            // assert at the top bounds.
            unsafe { forward_run(p, out_ptr, qkv, mask, &Run::new(s, (bi, h), run), rb) };
        }
    });
}

#[allow(clippy::too_many_arguments)]
fn backward_impl(
    dqkv: &mut [f32],
    scratch: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    probs: &[f32],
    mask: &[f32],
    seg: Option<&[u32]>,
    s: Shape,
    rb: usize,
) {
    s.check();
    let (t, w, ow, rep) = (s.seq, s.qkv_width(), s.out_width(), s.rep());
    assert!(dqkv.len() >= s.batch * t * w && dout.len() >= s.batch * t * ow && scratch.len() >= s.probs_len());
    assert!(probs.len() >= s.probs_len() && qkv.len() >= s.batch * t * w && mask.len() >= s.batch * t);
    assert!(seg.is_none_or(|g| g.len() >= s.batch * t));
    let dptr = SendPtr(dqkv.as_mut_ptr());
    // One task per (batch, key/value head): its query heads add into the same dK and dV blocks.
    scratch[..s.probs_len()].par_chunks_mut(rep * t * t).enumerate().for_each(|(bg, ds_group)| {
        let (bi, g) = (bg / s.kv_heads, bg % s.kv_heads);
        for (r, ds) in ds_group.chunks_exact_mut(t * t).enumerate() {
            let h = g * rep + r;
            let p = &probs[(bi * s.heads + h) * t * t..][..t * t];
            for run in runs(seg, bi, t) {
                // SAFETY: this (batch, kv head) task owns the q columns of its query heads and its k and v columns
                // in rows bi·T..(bi+1)·T of dqkv, which the asserts above bound.
                unsafe { backward_run(ds, dptr, dout, qkv, p, mask, &Run::new(s, (bi, h), run), r > 0, rb) };
            }
        }
    });
}

/// `mask` is the additive key mask `[B, T]` (0 for tokens, `f32::MIN` for padding).
pub fn forward(out: &mut [f32], probs: &mut [f32], qkv: &[f32], mask: &[f32], s: Shape) {
    let _prof = crate::profile::scope("causal_attention.forward");
    forward_impl(out, probs, qkv, mask, None, s, ROW_BLOCK);
}

/// Writes all of `dqkv` (`[B, T, (H + 2·KV)·d]`). `scratch` is a `[B, H, T, T]` buffer for score gradients;
/// `mask` is the forward's.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    dqkv: &mut [f32],
    scratch: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    probs: &[f32],
    mask: &[f32],
    s: Shape,
) {
    let _prof = crate::profile::scope("causal_attention.backward");
    backward_impl(dqkv, scratch, dout, qkv, probs, mask, None, s, ROW_BLOCK);
}

/// Segment-aware (packed) variant of [`forward`]: `seg` `[B, T]` labels each token with its packed sequence
/// (contiguous runs of equal values, as derived from `position_ids` restarting at 0); a query attends causally to
/// keys of its own run only (block-diagonal, as flash-attention's varlen path). Scores are computed for the
/// diagonal blocks only; the other probabilities are zero. A query with no visible key (padding only) is uniform
/// over its run's keys.
pub fn forward_segmented(out: &mut [f32], probs: &mut [f32], qkv: &[f32], mask: &[f32], seg: &[u32], s: Shape) {
    let _prof = crate::profile::scope("causal_attention.forward_segmented");
    forward_impl(out, probs, qkv, mask, Some(seg), s, ROW_BLOCK);
}

/// Backward of [`forward_segmented`]: writes all of `dqkv`, touching only the diagonal blocks.
#[allow(clippy::too_many_arguments)]
pub fn backward_segmented(
    dqkv: &mut [f32],
    scratch: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    probs: &[f32],
    mask: &[f32],
    seg: &[u32],
    s: Shape,
) {
    let _prof = crate::profile::scope("causal_attention.backward_segmented");
    backward_impl(dqkv, scratch, dout, qkv, probs, mask, Some(seg), s, ROW_BLOCK);
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

    /// `rb` rows per query block; `left` padding keys at the start of the last batch row.
    fn run(s: Shape, fd: bool, rb: usize, left: usize) {
        let (t, w, ow) = (s.seq, s.qkv_width(), s.out_width());
        let n = s.batch * t;
        let qkv = rand_vec(n * w, 1);
        // The last two keys of batch row 0 are padding.
        let mut mask = vec![0.0f32; n];
        mask[t - 1] = f32::MIN;
        mask[t - 2] = f32::MIN;
        mask[n - t..n - t + left].fill(f32::MIN);
        let (mut o, mut r) = (vec![0.0; n * ow], vec![0.0; n * ow]);
        let mut probs = vec![f32::NAN; s.probs_len()];
        forward_impl(&mut o, &mut probs, &qkv, &mask, None, s, rb);
        reference::forward(&mut r, &qkv, &mask, s);
        assert_close(&o, &r, 1e-5, "attention out");
        for i in 0..t {
            for j in i + 1..t {
                assert_eq!(probs[i * t + j], 0.0, "future key gets zero probability");
            }
        }
        let mut dout = rand_vec(n * ow, 2);
        // Queries that see no key have scores swamped by the mask: their true derivative is zero, while the
        // softmax backward (ours and autograd's) passes dS on. In training their outputs reach no loss, so their
        // gradient is zero; the finite-difference check holds it so.
        dout[(n - t) * ow..(n - t + left) * ow].fill(0.0);
        let mut dqkv = vec![f32::NAN; n * w];
        let mut scratch = vec![0.0; s.probs_len()];
        backward_impl(&mut dqkv, &mut scratch, &dout, &qkv, &probs, &mask, None, s, rb);
        assert!(dqkv.iter().all(|v| v.is_finite()), "every gradient entry written");
        if rb < s.seq {
            // The same gradients as one block over every key.
            let mut one = vec![f32::NAN; n * w];
            backward_impl(&mut one, &mut scratch, &dout, &qkv, &probs, &mask, None, s, s.seq);
            assert_close(&dqkv, &one, 1e-5, "blocked backward");
        }
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
        for rb in [1, 2, ROW_BLOCK] {
            run(Shape { batch: 2, seq: 5, heads: 4, kv_heads: 2, head_dim: 3 }, true, rb, 0);
            run(Shape { batch: 2, seq: 4, heads: 2, kv_heads: 2, head_dim: 4 }, true, rb, 1);
            run(Shape { batch: 1, seq: 6, heads: 3, kv_heads: 1, head_dim: 2 }, true, rb, 0);
        }
        // Left padding over more than one query block: those blocks read every key.
        run(Shape { batch: 2, seq: 7, heads: 2, kv_heads: 1, head_dim: 3 }, true, 2, 3);
    }

    #[test]
    fn larger_shape() {
        run(Shape { batch: 2, seq: 33, heads: 6, kv_heads: 2, head_dim: 16 }, false, ROW_BLOCK, 0);
        run(Shape { batch: 2, seq: 150, heads: 2, kv_heads: 1, head_dim: 16 }, false, ROW_BLOCK, 70);
        run(Shape { batch: 2, seq: 45, heads: 2, kv_heads: 2, head_dim: 8 }, false, 7, 9);
    }

    fn run_segmented(s: Shape, seg: &[u32], fd: bool, rb: usize) {
        let (t, w, ow) = (s.seq, s.qkv_width(), s.out_width());
        let n = s.batch * t;
        let qkv = rand_vec(n * w, 4);
        // The last key of batch row 0 is padding.
        let mut mask = vec![0.0f32; n];
        mask[t - 1] = f32::MIN;
        let (mut o, mut r) = (vec![f32::NAN; n * ow], vec![0.0; n * ow]);
        let mut probs = vec![f32::NAN; s.probs_len()];
        forward_impl(&mut o, &mut probs, &qkv, &mask, Some(seg), s, rb);
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
        backward_impl(&mut dqkv, &mut scratch, &dout, &qkv, &probs, &mask, Some(seg), s, rb);
        assert!(dqkv.iter().all(|v| v.is_finite()), "every gradient entry written");
        let mut one = vec![f32::NAN; n * w];
        backward_impl(&mut one, &mut scratch, &dout, &qkv, &probs, &mask, Some(seg), s, s.seq);
        assert_close(&dqkv, &one, 1e-5, "blocked segmented backward");
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
        for rb in [1, 2, ROW_BLOCK] {
            let s = Shape { batch: 2, seq: 7, heads: 4, kv_heads: 2, head_dim: 3 };
            run_segmented(s, &[0, 0, 0, 1, 1, 2, 2, 0, 0, 0, 0, 0, 0, 0], true, rb);
            let s = Shape { batch: 1, seq: 6, heads: 3, kv_heads: 1, head_dim: 2 };
            run_segmented(s, &[0, 1, 1, 1, 2, 2], true, rb);
        }
        let s = Shape { batch: 2, seq: 40, heads: 6, kv_heads: 2, head_dim: 16 };
        let seg: Vec<u32> = (0..80).map(|i| [0, 0, 1, 1, 1, 2][(i % 40) / 7]).collect();
        run_segmented(s, &seg, false, ROW_BLOCK);
        run_segmented(s, &seg, false, 5);
        let s = Shape { batch: 1, seq: 200, heads: 2, kv_heads: 1, head_dim: 8 };
        let seg: Vec<u32> = (0..200).map(|i| u32::from(i >= 130)).collect();
        run_segmented(s, &seg, false, ROW_BLOCK);
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
