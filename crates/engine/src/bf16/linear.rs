//! `torch.nn.Linear` under bf16 autocast: the forward and both gradient matmuls in bf16 with f32 accumulation,
//! the bias and its gradient in f32. The weight's bf16 copies (`weightᵀ` for the forward, `weight` for the
//! input gradient) come from a [`SharedWeights`] cache that repacks them only when the weights' version (the
//! optimizer step) changes, so each weight is cast once per step and reused by every forward and backward.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    gemm_gelu_packed_with, gemm_packed, gemm_packed_fused, gemm_prepacked_fused_with, gemm_view, tiny, Epilogue,
    Kernel, PackedActs, WeightCache,
};
use crate::kernels::{gelu, linear, residual};
use crate::matmul::{Par, View};

/// A model's bf16 weight copies, shared by all its workspaces (one per batch shape), and a counter of weight
/// changes: the owner calls [`weights_changed`](Self::weights_changed) after every optimizer update or load,
/// and the copies are rebuilt at their next use.
#[derive(Clone, Default)]
pub struct SharedWeights {
    cache: Arc<Mutex<WeightCache>>,
    version: Arc<AtomicU64>,
}

impl SharedWeights {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, WeightCache> {
        // A panic while packing leaves at worst a stale entry; its version check repacks it.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks every copy stale (the weights were updated or loaded).
    pub fn weights_changed(&self) {
        self.version.fetch_add(1, Ordering::Relaxed);
    }

    /// The number of [`weights_changed`](Self::weights_changed) calls; callers fold in their own counters
    /// (a model's optimizer step) to form the version they pass in [`Ctx`].
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Relaxed)
    }

    /// Forgets every copy (memory goes back).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Bytes of bf16 copies held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes()
    }
}

/// The bf16 weights and the weights' version (the optimizer step count), or `None` for f32.
pub type Ctx<'a> = Option<(&'a SharedWeights, u64)>;

fn active(ctx: Ctx<'_>, m: usize, n: usize, k: usize) -> Option<(&SharedWeights, u64)> {
    ctx.filter(|_| Kernel::current() != Kernel::F32 && !tiny(m, n, k))
}

fn par(m: usize, n: usize, k: usize) -> Par {
    if m * n * k >= 1 << 18 {
        Par::Rayon
    } else {
        Par::Seq
    }
}

/// [`linear::forward`] in bf16 when `ctx` is set (and the CPU has a bf16 kernel).
#[allow(clippy::too_many_arguments)]
pub fn forward(
    ctx: Ctx<'_>,
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    n: usize,
    c_in: usize,
    c_out: usize,
) {
    forward_fused(ctx, out, inp, weight, bias, None, None, n, c_in, c_out)
}

/// [`forward`] followed by `out += residual` (laid out as `out`) and `gelu_out = gelu(out)` when given. In
/// bf16 both run on each block of the output while it is in cache; in f32 they are the separate kernels.
#[allow(clippy::too_many_arguments)]
pub fn forward_fused(
    ctx: Ctx<'_>,
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    gelu_out: Option<&mut [f32]>,
    n: usize,
    c_in: usize,
    c_out: usize,
) {
    let Some((w16, version)) = active(ctx, n, c_out, c_in) else {
        linear::forward(out, inp, weight, bias, n, c_in, c_out);
        if let Some(r) = residual {
            residual::add_assign(&mut out[..n * c_out], &r[..n * c_out]);
        }
        if let Some(g) = gelu_out {
            gelu::forward(&mut g[..n * c_out], &out[..n * c_out]);
        }
        return;
    };
    let _prof = crate::profile::scope("linear.forward");
    let out = &mut out[..n * c_out];
    let mut cache = w16.lock();
    let wt = cache.get(version, weight, c_out, c_in, true);
    let epilogue = Epilogue { bias: bias.map(|b| &b[..c_out]), residual: residual.map(|r| &r[..n * c_out]) };
    let gelu_out = gelu_out.map(|g| &mut g[..n * c_out]);
    let inp = View::new(&inp[..n * c_in], c_in, false);
    gemm_packed_fused(out, c_out, inp, wt, n, epilogue, gelu_out, par(n, c_out, c_in));
}

/// [`linear::backward`] in bf16 when `ctx` is set, computing only what is asked for: `dinp` (overwritten, or
/// added to when `accumulate_dinp`), `dweight += doutᵀ · inp`, `dbias += Σ_rows dout` (f32).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    ctx: Ctx<'_>,
    dinp: Option<&mut [f32]>,
    dweight: Option<&mut [f32]>,
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    n: usize,
    c_in: usize,
    c_out: usize,
    accumulate_dinp: bool,
) {
    let Some((w16, version)) = active(ctx, n, c_in, c_out) else {
        if let Some(dw) = dweight {
            // The f32 kernel itself, so an f32 run is unchanged.
            return linear::backward(dinp, dw, dbias, dout, inp, weight, n, c_in, c_out, accumulate_dinp);
        }
        if let Some(dinp) = dinp {
            crate::matmul::matmul(dinp, dout, weight, n, c_out, c_in, false, false, accumulate_dinp);
        }
        if let Some(db) = dbias {
            linear::column_sums(&mut db[..c_out], &dout[..n * c_out]);
        }
        return;
    };
    let _prof = crate::profile::scope("linear.backward");
    let dout = &dout[..n * c_out];
    if let Some(dinp) = dinp {
        let mut cache = w16.lock();
        let w = cache.get(version, weight, c_out, c_in, false);
        gemm_packed(dinp, c_in, View::new(dout, c_out, false), w, n, 1.0, accumulate_dinp, par(n, c_in, c_out));
    }
    if let Some(dw) = dweight {
        let a = View::new(dout, c_out, true);
        let b = View::new(&inp[..n * c_in], c_in, false);
        gemm_view(dw, c_in, a, b, c_out, c_in, n, 1.0, true, par(c_out, c_in, n));
    }
    if let Some(db) = dbias {
        linear::column_sums(&mut db[..c_out], dout);
    }
}

/// Inference: `gelu(inp · weightᵀ + bias)` in bf16, straight into the packed bf16 operand of the next linear
/// layer ([`forward_from_packed`], `next_out` outputs) instead of f32 pre-activation and activation buffers
/// (the same values as [`forward_fused`] with a GELU output, rounded to bf16 as the next layer would).
/// `None` without a bf16 kernel or for products under a tile: the caller runs the f32-buffer path then.
#[allow(clippy::too_many_arguments)]
pub fn forward_gelu_packed(
    ctx: Ctx<'_>,
    inp: &[f32],
    weight: &[f32],
    bias: &[f32],
    n: usize,
    c_in: usize,
    c_out: usize,
    next_out: usize,
) -> Option<PackedActs> {
    let (w16, version) = active(ctx, n, c_out, c_in)?;
    if tiny(n, next_out, c_out) {
        return None;
    }
    let _prof = crate::profile::scope("linear.forward");
    let mut cache = w16.lock();
    let wt = cache.get(version, weight, c_out, c_in, true);
    let inp = View::new(&inp[..n * c_in], c_in, false);
    Some(gemm_gelu_packed_with(Kernel::current(), inp, wt, n, &bias[..c_out], par(n, c_out, c_in)))
}

/// [`forward_fused`] (bias and residual) for an input from [`forward_gelu_packed`], on the same `ctx`.
pub fn forward_from_packed(
    ctx: Ctx<'_>,
    out: &mut [f32],
    inp: &PackedActs,
    weight: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    c_out: usize,
) {
    let (w16, version) = ctx.expect("packed activations come from a bf16 context");
    let _prof = crate::profile::scope("linear.forward");
    let (n, c_in) = (inp.m(), inp.k());
    let out = &mut out[..n * c_out];
    let mut cache = w16.lock();
    let wt = cache.get(version, weight, c_out, c_in, true);
    let epilogue = Epilogue { bias: bias.map(|b| &b[..c_out]), residual: residual.map(|r| &r[..n * c_out]) };
    gemm_prepacked_fused_with(Kernel::current(), out, c_out, inp, wt, epilogue, par(n, c_out, c_in));
}
