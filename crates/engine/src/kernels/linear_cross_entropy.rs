//! Language-model head fused with cross-entropy: `loss = Σ_i −log softmax(h_i · Wᵀ + b)[y_i] / normaliser` over
//! rows whose target is not `IGNORE_INDEX`, as `transformers`' `ForCausalLMLoss` (normaliser = number of
//! kept targets for the mean, or a caller-given token count for gradient accumulation).
//!
//! The kept rows are processed `chunk_rows` at a time: logits for the chunk, softmax and the loss, then (when
//! gradients are asked for) the logits gradient in place, `dW += dlogitsᵀ · h` and `dh = dlogits · W`. So the
//! `[tokens × vocab]` logits never exist at once, and ignored rows cost nothing.

use super::cross_entropy::IGNORE_INDEX;
use crate::bf16::linear as bf16lin;
use crate::math::{exp_sum, max};
use crate::matmul::{gemm_view, matmul, Par, View};
use rayon::prelude::*;

/// Reusable buffers for [`forward_backward`], sized for `chunk_rows` rows.
pub struct Scratch {
    pub chunk_rows: usize,
    rows: Vec<usize>,
    h: Vec<f32>,
    logits: Vec<f32>,
    dh: Vec<f32>,
    nll: Vec<f64>,
}

impl Scratch {
    pub fn new(chunk_rows: usize, c: usize, vocab: usize) -> Self {
        let r = chunk_rows.max(1);
        Scratch {
            chunk_rows: r,
            rows: Vec::with_capacity(r),
            h: vec![0.0; r * c],
            logits: vec![0.0; r * vocab],
            dh: vec![0.0; r * c],
            nll: vec![0.0; r],
        }
    }

    /// Rows per chunk so that one chunk of logits is about `budget_floats` floats.
    pub fn rows_for_budget(budget_floats: usize, vocab: usize) -> usize {
        (budget_floats / vocab.max(1)).max(1)
    }
}

/// Gradient outputs: `dhidden` (`[n, c]`, overwritten, zero for ignored rows), `dweight` (`[vocab, c]`,
/// accumulated) and `dbias` (`[vocab]`, accumulated, for a head with a bias); any may be `None` (a frozen head
/// computes no weight gradient).
#[derive(Default)]
pub struct Grads<'a> {
    pub dhidden: Option<&'a mut [f32]>,
    pub dweight: Option<&'a mut [f32]>,
    pub dbias: Option<&'a mut [f32]>,
}

/// Number of targets that are not ignored.
pub fn count_targets(targets: &[i64]) -> usize {
    targets.iter().filter(|&&y| y != IGNORE_INDEX).count()
}

/// Returns the summed loss divided by `normaliser` (NaN for 0/0, as PyTorch's mean over no targets), and fills
/// the gradients of that loss when `grads` is given. Targets must be `IGNORE_INDEX` or below `vocab`. `bias`
/// (`[vocab]`) is the head's bias where it has one (Phi's `lm_head`). With `ctx` (`bf16 = true`) the three
/// matmuls run in bf16 with f32 accumulation; the softmax, the loss and the gradients' sums stay f32.
#[allow(clippy::too_many_arguments)]
pub fn forward_backward(
    hidden: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    targets: &[i64],
    n: usize,
    c: usize,
    vocab: usize,
    normaliser: f32,
    mut grads: Option<Grads<'_>>,
    s: &mut Scratch,
    ctx: bf16lin::Ctx<'_>,
) -> f32 {
    let _prof = crate::profile::scope("linear_cross_entropy");
    assert!(hidden.len() >= n * c && weight.len() >= vocab * c && targets.len() >= n);
    assert!(bias.is_none_or(|b| b.len() == vocab));
    if let Some(Grads { dhidden: Some(dh), .. }) = grads.as_mut() {
        dh[..n * c].fill(0.0);
    }
    let kept: Vec<usize> = (0..n).filter(|&i| targets[i] != IGNORE_INDEX).collect();
    let grad_scale = 1.0 / normaliser;
    let want_grads = grads.is_some();
    let mut total = 0.0f64;
    for chunk in kept.chunks(s.chunk_rows) {
        let m = chunk.len();
        s.rows.clear();
        s.rows.extend_from_slice(chunk);
        for (k, &i) in chunk.iter().enumerate() {
            s.h[k * c..(k + 1) * c].copy_from_slice(&hidden[i * c..(i + 1) * c]);
        }
        let logits = &mut s.logits[..m * vocab];
        match bias {
            _ if ctx.is_some() => bf16lin::forward(ctx, logits, &s.h[..m * c], weight, bias, m, c, vocab),
            Some(b) => {
                for row in logits.chunks_exact_mut(vocab) {
                    row.copy_from_slice(b);
                }
                matmul(logits, &s.h[..m * c], weight, m, c, vocab, false, true, true);
            }
            None => matmul(logits, &s.h[..m * c], weight, m, c, vocab, false, true, false),
        }
        let rows = &s.rows;
        logits.par_chunks_mut(vocab).zip(s.nll[..m].par_iter_mut()).enumerate().for_each(|(k, (row, nll))| {
            let y = targets[rows[k]] as usize;
            let target_logit = row[y];
            let (mut mx, mut z) = (0.0f32, 0.0f32);
            softmax_row(row, &mut mx, &mut z);
            *nll = (mx as f64 + (z as f64).ln()) - target_logit as f64;
            if want_grads {
                scale_row(row, grad_scale / z);
                row[y] -= grad_scale;
            }
        });
        total += s.nll[..m].iter().sum::<f64>();
        if let Some(g) = grads.as_mut() {
            let dlogits = &s.logits[..m * vocab];
            if let Some(db) = g.dbias.as_deref_mut() {
                for row in dlogits.chunks_exact(vocab) {
                    for (d, x) in db.iter_mut().zip(row) {
                        *d += x;
                    }
                }
            }
            if ctx.is_some() {
                let dh = g.dhidden.is_some().then_some(&mut s.dh[..m * c]);
                let dw = g.dweight.as_deref_mut();
                bf16lin::backward(ctx, dh, dw, None, dlogits, &s.h[..m * c], weight, m, c, vocab, false);
                if let Some(dh) = g.dhidden.as_deref_mut() {
                    for (k, &i) in chunk.iter().enumerate() {
                        dh[i * c..(i + 1) * c].copy_from_slice(&s.dh[k * c..(k + 1) * c]);
                    }
                }
                continue;
            }
            if let Some(dw) = g.dweight.as_deref_mut() {
                // dW[vocab, c] += dlogitsᵀ · h
                let par = if m * vocab * c >= 1 << 18 { Par::Rayon } else { Par::Seq };
                gemm_view(
                    dw,
                    c,
                    View::new(dlogits, vocab, true),
                    View::new(&s.h, c, false),
                    vocab,
                    c,
                    m,
                    1.0,
                    true,
                    par,
                );
            }
            if let Some(dh) = g.dhidden.as_deref_mut() {
                matmul(&mut s.dh[..m * c], dlogits, weight, m, vocab, c, false, false, false);
                for (k, &i) in chunk.iter().enumerate() {
                    dh[i * c..(i + 1) * c].copy_from_slice(&s.dh[k * c..(k + 1) * c]);
                }
            }
        }
    }
    (total / normaliser as f64) as f32
}

crate::simd_fn! {
/// Replaces the row by `exp(x − max)`; returns the max and the sum of the exponentials.
fn softmax_row(row: &mut [f32], mx: &mut f32, z: &mut f32) {
    let m = max(row);
    *mx = m;
    *z = exp_sum(row, m);
}
}

crate::simd_fn! {
fn scale_row(row: &mut [f32], k: f32) {
    for x in row.iter_mut() {
        *x *= k;
    }
}
}

pub mod reference {
    use super::IGNORE_INDEX;

    /// Full logits, then the definition in f64. Returns the loss, `dhidden` and `dweight`.
    pub fn forward_backward(
        hidden: &[f32],
        weight: &[f32],
        targets: &[i64],
        n: usize,
        c: usize,
        vocab: usize,
        normaliser: f64,
    ) -> (f64, Vec<f32>, Vec<f32>) {
        let mut logits = vec![0.0f64; n * vocab];
        for i in 0..n {
            for v in 0..vocab {
                logits[i * vocab + v] = (0..c).map(|k| hidden[i * c + k] as f64 * weight[v * c + k] as f64).sum();
            }
        }
        let (mut loss, mut dh, mut dw) = (0.0, vec![0.0f32; n * c], vec![0.0f32; vocab * c]);
        for i in 0..n {
            if targets[i] == IGNORE_INDEX {
                continue;
            }
            let y = targets[i] as usize;
            let row = &logits[i * vocab..(i + 1) * vocab];
            let mx = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = row.iter().map(|v| (v - mx).exp()).sum();
            loss += mx + z.ln() - row[y];
            for v in 0..vocab {
                let g = ((row[v] - mx).exp() / z - if v == y { 1.0 } else { 0.0 }) / normaliser;
                for k in 0..c {
                    dh[i * c + k] += (g * weight[v * c + k] as f64) as f32;
                    dw[v * c + k] += (g * hidden[i * c + k] as f64) as f32;
                }
            }
        }
        (loss / normaliser, dh, dw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::*;

    #[test]
    fn chunked_equals_unchunked_reference() {
        let (n, c, vocab) = (11, 8, 37);
        let h: Vec<f32> = rand_vec(n * c, 1).iter().map(|v| v * 2.0).collect();
        let w = rand_vec(vocab * c, 2);
        let targets: Vec<i64> = (0..n as i64).map(|i| if i % 4 == 1 { IGNORE_INDEX } else { i * 7 % 37 }).collect();
        let count = count_targets(&targets) as f32;
        for normaliser in [count, 20.0] {
            let (want, wdh, wdw) = reference::forward_backward(&h, &w, &targets, n, c, vocab, normaliser as f64);
            for chunk in [1, 3, 4, 100] {
                let mut s = Scratch::new(chunk, c, vocab);
                let (mut dh, mut dw) = (vec![f32::NAN; n * c], vec![0.0; vocab * c]);
                let g = Grads { dhidden: Some(&mut dh), dweight: Some(&mut dw), dbias: None };
                let loss = forward_backward(&h, &w, None, &targets, n, c, vocab, normaliser, Some(g), &mut s, None);
                assert!((loss as f64 - want).abs() < 1e-5 * (1.0 + want.abs()), "chunk {chunk}: {loss} vs {want}");
                assert_close(&dh, &wdh, 1e-5, "dhidden");
                assert_close(&dw, &wdw, 1e-5, "dweight");
                let no_grad = forward_backward(&h, &w, None, &targets, n, c, vocab, normaliser, None, &mut s, None);
                assert_eq!(no_grad, loss);
            }
            let mut s = Scratch::new(3, c, vocab);
            let mut dh = vec![0.0; n * c];
            forward_backward(
                &h,
                &w,
                None,
                &targets,
                n,
                c,
                vocab,
                normaliser,
                Some(Grads { dhidden: Some(&mut dh), ..Grads::default() }),
                &mut s,
                None,
            );
            check_fd(&h, &dh, 1e-2, 2e-3, "fd dhidden", |x| {
                reference::forward_backward(x, &w, &targets, n, c, vocab, normaliser as f64).0
            });
        }
        // Every target ignored: NaN as PyTorch's mean over nothing.
        let mut s = Scratch::new(4, c, vocab);
        let none = vec![IGNORE_INDEX; n];
        assert!(forward_backward(&h, &w, None, &none, n, c, vocab, 0.0, None, &mut s, None).is_nan());
    }

    /// A bias is a weight column on a constant-1 input: the biased head equals the reference on `[h, 1]` and
    /// `[W, b]`, and its gradient is that column's.
    #[test]
    fn bias_is_a_weight_column_on_a_constant_input() {
        let (n, c, vocab) = (9, 6, 23);
        let h = rand_vec(n * c, 5);
        let w = rand_vec(vocab * c, 6);
        let b: Vec<f32> = rand_vec(vocab, 7).iter().map(|v| v * 3.0).collect();
        let targets: Vec<i64> = (0..n as i64).map(|i| if i == 4 { IGNORE_INDEX } else { i * 5 % 23 }).collect();
        let ext = |x: &[f32], cols: usize, last: &dyn Fn(usize) -> f32| -> Vec<f32> {
            x.chunks_exact(cols).enumerate().flat_map(|(i, r)| r.iter().copied().chain([last(i)])).collect()
        };
        let (h1, wb) = (ext(&h, c, &|_| 1.0), ext(&w, c, &|v| b[v]));
        let norm = count_targets(&targets) as f32;
        let (want, wdh, wdw) = reference::forward_backward(&h1, &wb, &targets, n, c + 1, vocab, norm as f64);
        for chunk in [2, 100] {
            let mut s = Scratch::new(chunk, c, vocab);
            let (mut dh, mut dw, mut db) = (vec![0.0; n * c], vec![0.0; vocab * c], vec![0.0; vocab]);
            let g = Grads { dhidden: Some(&mut dh), dweight: Some(&mut dw), dbias: Some(&mut db) };
            let loss = forward_backward(&h, &w, Some(&b), &targets, n, c, vocab, norm, Some(g), &mut s, None);
            assert!((loss as f64 - want).abs() < 1e-5 * (1.0 + want.abs()), "{loss} vs {want}");
            let wdh: Vec<f32> = wdh.chunks_exact(c + 1).flat_map(|r| r[..c].to_vec()).collect();
            let (wdw, wdb): (Vec<&[f32]>, Vec<f32>) = wdw.chunks_exact(c + 1).map(|r| (&r[..c], r[c])).unzip();
            assert_close(&dh, &wdh, 1e-5, "dhidden");
            assert_close(&dw, &wdw.concat(), 1e-5, "dweight");
            assert_close(&db, &wdb, 1e-5, "dbias");
        }
    }

    /// `bf16 = true`: the loss and every gradient within bf16 rounding of the f32 kernel's, on dimensions of 16 and
    /// more so that the bf16 path runs (the f32 kernel where the CPU has no bf16 one).
    #[test]
    fn bf16_follows_f32_within_rounding() {
        let (n, c, vocab) = (40, 32, 96);
        let h = rand_vec(n * c, 11);
        let w = rand_vec(vocab * c, 12);
        let b = rand_vec(vocab, 13);
        let targets: Vec<i64> = (0..n as i64).map(|i| if i % 5 == 2 { IGNORE_INDEX } else { i * 11 % 96 }).collect();
        let norm = count_targets(&targets) as f32;
        let run = |ctx: bf16lin::Ctx<'_>| {
            let mut s = Scratch::new(16, c, vocab);
            let (mut dh, mut dw, mut db) = (vec![0.0; n * c], vec![0.0; vocab * c], vec![0.0; vocab]);
            let g = Grads { dhidden: Some(&mut dh), dweight: Some(&mut dw), dbias: Some(&mut db) };
            let loss = forward_backward(&h, &w, Some(&b), &targets, n, c, vocab, norm, Some(g), &mut s, ctx);
            (loss, dh, dw, db)
        };
        let shared = bf16lin::SharedWeights::new();
        let (l32, dh32, dw32, db32) = run(None);
        let (l16, dh16, dw16, db16) = run(Some((&shared, 1)));
        let rel = |a: &[f32], b: &[f32]| {
            let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
            (num / b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>()).sqrt()
        };
        assert!((l16 - l32).abs() <= 0.01 * l32.abs(), "loss {l16} vs {l32}");
        for (what, a, b) in [("dhidden", &dh16, &dh32), ("dweight", &dw16, &dw32), ("dbias", &db16, &db32)] {
            let e = rel(a, b);
            assert!(e < 0.03, "{what}: relative error {e}");
        }
        if crate::bf16::Kernel::current() != crate::bf16::Kernel::F32 {
            assert!(l16 != l32 && rel(&dw16, &dw32) > 1e-6, "the bf16 path ran");
        }
    }
}
