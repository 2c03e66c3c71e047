//! The parameter store every architecture keeps its weights in: one [`ParamStore`] owns the parameter metadata
//! (Hugging Face names, shapes, weight-decay and `requires_grad` flags), the flat f32 parameters and gradients,
//! the AdamW moments and step count, and the LoRA adapters. An architecture file declares its layout (which
//! names, which shapes: a [`Layout`]) and which linears can carry adapters ([`LoraTargets`], as data); its
//! forward and backward read and write the store's buffers by parameter index. Everything else that a model
//! needs for training is here once: lookups by name, freezing by name or prefix, `state_dict` and loading,
//! `zero_grad`, `clip_grad_norm`, `adamw_step` (frozen parameters are skipped: no update, no weight decay),
//! optimizer-state files for exact resume, and the LoRA lifecycle (add, unload, merge, PEFT files).
//!
//! AdamW moments are allocated by the first optimizer step (or when a saved optimizer state is restored), so a
//! model loaded for inference or evaluation holds parameters and gradients only.

mod adapters;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use finetune_engine::kernels::{adamw, clip_grad, dropout};
use finetune_engine::{StateDict, Tensor};

use crate::checkpoint::{self, CheckpointError};
use crate::lora::{self, LoraConfig, LoraError, LoraWorkspace, Module};
use adapters::{Adapters, Store};

/// File of the AdamW moments in a checkpoint (`exp_avg`, `exp_avg_sq`, one `[n]` tensor each over the flat
/// parameter buffer).
pub const OPTIMIZER_WEIGHTS: &str = "optimizer.safetensors";

#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    #[error("no parameter named {0}")]
    Unknown(String),
    #[error("no parameter name starts with {0:?}")]
    NoPrefix(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("{path}: {message}")]
    OptimizerFile { path: std::path::PathBuf, message: String },
    #[error("LoRA: {0}")]
    Adapters(String),
    #[error(transparent)]
    Lora(#[from] LoraError),
    #[error(transparent)]
    File(#[from] CheckpointError),
}

/// Where one named parameter sits in the flat buffers.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamInfo {
    pub name: String,
    pub offset: usize,
    pub shape: Vec<usize>,
    /// Whether AdamW applies weight decay (Hugging Face: not to biases or normalisation weights).
    pub decay: bool,
    /// Frozen parameters get no gradient and no optimizer update.
    pub requires_grad: bool,
}

impl ParamInfo {
    /// Number of values (saturating: a layout from absurd sizes is rejected before anything is allocated).
    pub fn len(&self) -> usize {
        self.shape.iter().fold(1usize, |n, &d| n.saturating_mul(d))
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len()
    }
    /// The transformer layer the parameter belongs to: the first all-digit part of its Hugging Face name
    /// (`bert.encoder.layer.3.…`, `model.layers.3.…`, `transformer.h.3.…`, and their LoRA adapters); `None`
    /// for embeddings, final norms and heads.
    pub fn layer(&self) -> Option<usize> {
        self.name.split('.').find(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))?.parse().ok()
    }
}

/// What a backward pass tells its caller as it goes: [`layer_done`](LayerHook::layer_done)`(li)` once the
/// gradients of every parameter of layers `li..` (by [`ParamInfo::layer`]) are final for this pass, so that a
/// data-parallel trainer can start sending them while the earlier layers' backward runs. Parameters outside the
/// layers (embeddings, heads, possibly tied to each other) are final only when the pass returns.
#[derive(Default)]
pub struct LayerHook(Option<Box<LayerDone>>);

/// What a [`LayerHook`] calls: the store's metadata, its gradients, the layer just finished.
pub type LayerDone = dyn FnMut(&[ParamInfo], &mut [f32], usize) + Send;

impl LayerHook {
    pub fn new(f: Box<LayerDone>) -> Self {
        LayerHook(Some(f))
    }

    /// Called by the backward passes after layer `li`, with the store's metadata and gradients.
    pub fn layer_done(&mut self, infos: &[ParamInfo], grads: &mut [f32], li: usize) {
        if let Some(f) = &mut self.0 {
            f(infos, grads, li)
        }
    }
}

impl std::fmt::Debug for LayerHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "LayerHook(set)" } else { "LayerHook(none)" })
    }
}

/// A copy of a store does not inherit its hook (it belongs to one training loop).
impl Clone for LayerHook {
    fn clone(&self) -> Self {
        LayerHook(None)
    }
}

/// An architecture's parameters in order: each [`add`](Layout::add) appends one after the previous ones in the
/// flat buffers and returns its index.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    infos: Vec<ParamInfo>,
    len: usize,
}

impl Layout {
    /// Appends a trainable parameter; `decay` says whether AdamW's weight decay applies to it.
    pub fn add(&mut self, name: impl Into<String>, shape: Vec<usize>, decay: bool) -> usize {
        let info = ParamInfo { name: name.into(), offset: self.len, shape, decay, requires_grad: true };
        self.len = self.len.saturating_add(info.len());
        self.infos.push(info);
        self.infos.len() - 1
    }

    /// Where parameter `k` starts in the flat buffers.
    pub fn offset(&self, k: usize) -> usize {
        self.infos[k].offset
    }

    /// Total number of values over all parameters (saturating).
    pub fn total_len(&self) -> usize {
        self.len
    }

    /// Checks `sd` against this layout before anything is allocated: every parameter found (by name, or with
    /// one of `strip` removed) has the layout's shape; a parameter absent must be accepted by `may_be_missing`,
    /// and the absent ones together may not be larger than what the checkpoint holds (a head sized by an absurd
    /// `num_labels` is refused here, not by a failed allocation).
    pub fn check_state_dict(
        &self,
        sd: &StateDict,
        strip: &[&str],
        may_be_missing: impl Fn(&str) -> bool,
    ) -> Result<(), ParamError> {
        let held = sd.values().fold(0usize, |n, t| n.saturating_add(t.data.len())).max(1 << 20);
        let mut fresh = 0usize;
        for info in &self.infos {
            match find_tensor(sd, &info.name, strip) {
                Some(t) => {
                    if t.shape != info.shape || t.data.len() != info.len() {
                        return Err(ParamError::Checkpoint(format!(
                            "{}: shape {:?} does not match the config's {:?}",
                            info.name, t.shape, info.shape
                        )));
                    }
                }
                None if may_be_missing(&info.name) => {
                    fresh = fresh.saturating_add(info.len());
                    if fresh > held {
                        return Err(ParamError::Checkpoint(format!(
                            "{} ({:?}) is not in the checkpoint and too large to initialise: the new parameters \
                             would hold more values than the checkpoint's weights",
                            info.name, info.shape
                        )));
                    }
                }
                None => return Err(ParamError::Checkpoint(format!("missing parameter {}", info.name))),
            }
        }
        Ok(())
    }
}

fn find_tensor<'a>(sd: &'a StateDict, name: &str, strip: &[&str]) -> Option<&'a Tensor> {
    sd.get(name).or_else(|| strip.iter().find_map(|p| name.strip_prefix(p).and_then(|n| sd.get(n))))
}

/// A config size and where the weights record the same size: axis `axis` of the first of `params` present
/// (names as in the layout; a checkpoint name may lack one of the `strip` prefixes). `value` is `None` when
/// computing it from the config overflowed.
pub(crate) struct DimCheck<'a> {
    pub field: &'a str,
    pub value: Option<usize>,
    pub params: &'a [&'a str],
    pub axis: usize,
}

/// Compares config sizes with the shapes of the weights before a layout is built or anything allocated, so that
/// a `config.json` that does not describe its weights is one error naming the field. `layers` is
/// `(field, count, layer name prefixes)`: the weights must hold at least `count` layers.
pub(crate) fn check_config_against(
    sd: &StateDict,
    strip: &[&str],
    dims: &[DimCheck<'_>],
    layers: (&str, usize, &[&str]),
) -> Result<(), crate::error::ModelError> {
    let field_err =
        |field: &str, message: String| crate::error::ModelError::ConfigField { field: field.into(), message };
    for d in dims {
        let Some((name, t)) = d.params.iter().find_map(|n| find_tensor(sd, n, strip).map(|t| (n, t))) else {
            continue;
        };
        let actual = t.shape.get(d.axis).copied();
        match d.value {
            None => return Err(field_err(d.field, "the sizes computed from it overflow".into())),
            Some(v) if Some(v) != actual => {
                return Err(field_err(
                    d.field,
                    format!("{v} does not match the weights: `{name}` has shape {:?}", t.shape),
                ))
            }
            Some(_) => {}
        }
    }
    let (field, count, prefixes) = layers;
    let mut held = 0usize;
    for key in sd.keys() {
        for p in prefixes {
            let rest = key
                .strip_prefix(p)
                .or_else(|| strip.iter().find_map(|s| p.strip_prefix(s).and_then(|short| key.strip_prefix(short))));
            if let Some(i) = rest.and_then(|r| r.split('.').next()).and_then(|i| i.parse::<usize>().ok()) {
                held = held.max(i.saturating_add(1));
            }
        }
    }
    if count > held {
        return Err(field_err(field, format!("{count} layers, but the weights hold {held}")));
    }
    Ok(())
}

/// The linears of an architecture that can carry LoRA adapters: the same modules in every layer, each a path
/// inside the layer (`self_attn.q_proj`, whose base weight is `{layer_prefix}.{path}.weight`).
#[derive(Debug, Clone, Default)]
pub struct LoraTargets {
    pub modules: Vec<Module>,
    /// `model.layers.0`, `model.layers.1`, …
    pub layer_prefixes: Vec<String>,
    /// Base weights stored `[in, out]` (GPT-2's `Conv1D`): PEFT's `fan_in_fan_out`, forced on or off.
    pub fan_in_fan_out: bool,
}

/// The parts of a store a backward pass borrows at once: metadata, parameters (read), gradients (written) and
/// the adapters.
pub struct Parts<'a> {
    pub infos: &'a [ParamInfo],
    pub params: &'a [f32],
    pub grads: &'a mut [f32],
    pub lora: LoraRef<'a>,
    pub hook: &'a mut LayerHook,
}

/// The adapters of a store, if any, for the backward pass.
#[derive(Clone, Copy)]
pub struct LoraRef<'a>(Option<&'a Adapters>);

/// Parameters, gradients, AdamW state and LoRA adapters of one model, addressed by Hugging Face name.
#[derive(Debug, Clone)]
pub struct ParamStore {
    infos: Vec<ParamInfo>,
    index: BTreeMap<String, usize>,
    /// The flat parameter buffer (every parameter at its [`ParamInfo::offset`]).
    pub params: Vec<f32>,
    /// Gradients, same layout as `params`.
    pub grads: Vec<f32>,
    /// AdamW moments, same layout; empty until the first optimizer step or restore.
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
    step: u64,
    /// Counts the changes of parameters outside the optimizer (loads, `param_mut`, merges), so that copies of
    /// the weights (bf16) know when to refresh.
    revision: u64,
    lora_targets: LoraTargets,
    lora: Option<Adapters>,
    /// Told by the backward pass as each layer's gradients become final (data-parallel training).
    hook: LayerHook,
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Small deterministic normal generator for initialising new parameters (splitmix64 + Box–Muller).
pub(crate) fn normal_fill(out: &mut [f32], std: f32, seed: u64) {
    for (i, v) in out.iter_mut().enumerate() {
        let u1 = dropout::uniform(seed, 2 * i as u64).max(1e-7) as f64;
        let u2 = dropout::uniform(seed, 2 * i as u64 + 1) as f64;
        *v = ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32 * std;
    }
}

impl ParamStore {
    /// Zero parameters and gradients for `layout`; no adapters can be added.
    pub fn new(layout: Layout) -> Self {
        let Layout { infos, len } = layout;
        let index = infos.iter().enumerate().map(|(k, i)| (i.name.clone(), k)).collect();
        ParamStore {
            infos,
            index,
            params: vec![0.0; len],
            grads: vec![0.0; len],
            exp_avg: Vec::new(),
            exp_avg_sq: Vec::new(),
            step: 0,
            revision: 0,
            lora_targets: LoraTargets::default(),
            lora: None,
            hook: LayerHook::default(),
        }
    }

    /// Like [`new`](Self::new), but an allocation that fails is an error naming the size instead of an abort.
    pub fn try_new(layout: Layout) -> Result<Self, ParamError> {
        let len = layout.len;
        let zeros = || -> Option<Vec<f32>> {
            let mut v = Vec::new();
            v.try_reserve_exact(len).ok()?;
            v.resize(len, 0.0);
            Some(v)
        };
        let too_large = || {
            ParamError::Checkpoint(format!(
                "cannot allocate {len} parameters ({} bytes each for values and gradients)",
                len.saturating_mul(4)
            ))
        };
        if len >= usize::MAX / 8 {
            return Err(too_large());
        }
        let params = zeros().ok_or_else(too_large)?;
        let grads = zeros().ok_or_else(too_large)?;
        let Layout { infos, .. } = layout;
        let index = infos.iter().enumerate().map(|(k, i)| (i.name.clone(), k)).collect();
        Ok(ParamStore {
            infos,
            index,
            params,
            grads,
            exp_avg: Vec::new(),
            exp_avg_sq: Vec::new(),
            step: 0,
            revision: 0,
            lora_targets: LoraTargets::default(),
            lora: None,
            hook: LayerHook::default(),
        })
    }

    /// A store for `layout` loaded from `sd` (see [`load_state_dict`](Self::load_state_dict)); the shapes are
    /// checked against the layout before the buffers are allocated. Returns the names left absent.
    pub fn from_state_dict(
        layout: Layout,
        sd: &StateDict,
        strip: &[&str],
        may_be_missing: impl Fn(&str) -> bool,
    ) -> Result<(Self, Vec<String>), ParamError> {
        layout.check_state_dict(sd, strip, &may_be_missing)?;
        let mut store = Self::try_new(layout)?;
        let missing = store.load_state_dict(sd, strip, may_be_missing)?;
        Ok((store, missing))
    }

    /// Declares which linears can carry LoRA adapters.
    pub fn with_lora_targets(mut self, targets: LoraTargets) -> Self {
        self.lora_targets = targets;
        self
    }

    /// Initialises parameter `k` as transformers does for a new model: N(0, `std`) from `seed` (and `k`), or a
    /// constant when `constant` is given (biases 0, norm weights 1).
    pub fn init_param(&mut self, k: usize, constant: Option<f32>, std: f32, seed: u64) {
        let dst = &mut self.params[self.infos[k].range()];
        match constant {
            Some(c) => dst.fill(c),
            None => normal_fill(dst, std, seed ^ (k as u64).wrapping_mul(GOLDEN)),
        }
    }

    pub fn param_infos(&self) -> &[ParamInfo] {
        &self.infos
    }

    /// Index of the parameter called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    pub fn info(&self, name: &str) -> Option<&ParamInfo> {
        Some(&self.infos[self.index_of(name)?])
    }

    pub fn range(&self, k: usize) -> Range<usize> {
        self.infos[k].range()
    }

    /// Parameter `k`'s values.
    pub fn get(&self, k: usize) -> &[f32] {
        &self.params[self.infos[k].range()]
    }

    /// Parameters `first..=last` (consecutive in the layout, such as fused q/k/v weights) as one slice.
    pub fn span(&self, first: usize, last: usize) -> &[f32] {
        &self.params[self.infos[first].offset..self.infos[last].range().end]
    }

    pub fn param(&self, name: &str) -> Option<&[f32]> {
        Some(&self.params[self.info(name)?.range()])
    }

    pub fn param_mut(&mut self, name: &str) -> Option<&mut [f32]> {
        let r = self.info(name)?.range();
        self.revision += 1;
        Some(&mut self.params[r])
    }

    /// The number of parameter changes made outside the optimizer (see [`steps`](Self::steps) for its updates):
    /// loads, [`param_mut`](Self::param_mut), LoRA merges. Writes to the public `params` buffer are not counted.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn grad(&self, name: &str) -> Option<&[f32]> {
        Some(&self.grads[self.info(name)?.range()])
    }

    /// `None` if there is no parameter of that name.
    pub fn requires_grad(&self, name: &str) -> Option<bool> {
        self.info(name).map(|i| i.requires_grad)
    }

    /// Freezes (`false`) or unfreezes a parameter by name. A frozen parameter's gradient buffer is not written
    /// by the backward (zero after [`zero_grad`](Self::zero_grad)), AdamW does not update it and
    /// [`clip_grad_norm`](Self::clip_grad_norm) leaves it out (torch: its `.grad` is `None`).
    pub fn set_requires_grad(&mut self, name: &str, requires_grad: bool) -> Result<(), ParamError> {
        let k = self.index_of(name).ok_or_else(|| ParamError::Unknown(name.into()))?;
        self.infos[k].requires_grad = requires_grad;
        self.zero_frozen_grads();
        Ok(())
    }

    /// Freezes every parameter whose name starts with `prefix` (e.g. `"bert.embeddings."`, or
    /// `"bert.encoder.layer.0."` — note the trailing dot, else layer 1 also matches layer 10); returns how many
    /// matched. An error if none does, so that a misspelt prefix is not silently ignored.
    pub fn freeze_prefix(&mut self, prefix: &str) -> Result<usize, ParamError> {
        let mut count = 0;
        for i in self.infos.iter_mut().filter(|i| i.name.starts_with(prefix)) {
            i.requires_grad = false;
            count += 1;
        }
        if count == 0 {
            return Err(ParamError::NoPrefix(prefix.into()));
        }
        self.zero_frozen_grads();
        Ok(count)
    }

    /// Frozen parameters' gradients are zero and nothing writes them, so that
    /// [`optimizer_step`](Self::optimizer_step) need not clear them; every path that freezes calls this.
    fn zero_frozen_grads(&mut self) {
        for i in self.infos.iter().filter(|i| !i.requires_grad) {
            self.grads[i.range()].fill(0.0);
        }
    }

    /// The parts a backward pass borrows together.
    /// Installs the hook the next backward passes call (see [`LayerHook`]); returns the previous one.
    pub fn set_layer_hook(&mut self, hook: LayerHook) -> LayerHook {
        std::mem::replace(&mut self.hook, hook)
    }

    pub fn parts(&mut self) -> Parts<'_> {
        Parts {
            infos: &self.infos,
            params: &self.params,
            grads: &mut self.grads,
            lora: LoraRef(self.lora.as_ref()),
            hook: &mut self.hook,
        }
    }

    fn to_state_dict(&self, data: &[f32]) -> StateDict {
        self.infos.iter().map(|i| (i.name.clone(), Tensor::new(i.shape.clone(), data[i.range()].to_vec()))).collect()
    }

    /// Parameters keyed by name (adapters included, under the model's names).
    pub fn state_dict(&self) -> StateDict {
        self.to_state_dict(&self.params)
    }

    /// Gradients keyed by parameter name.
    pub fn grads_state_dict(&self) -> StateDict {
        self.to_state_dict(&self.grads)
    }

    /// Copies every parameter from `sd` by name; a name may also be found with one of `strip` removed from its
    /// start (base-model checkpoints). A parameter that is absent is an error unless `may_be_missing` accepts
    /// its name; those are returned (left as they were). A shape that differs is an error.
    pub fn load_state_dict(
        &mut self,
        sd: &StateDict,
        strip: &[&str],
        may_be_missing: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>, ParamError> {
        let mut missing = Vec::new();
        self.revision += 1;
        for info in &self.infos {
            let found = sd
                .get(&info.name)
                .or_else(|| strip.iter().find_map(|p| info.name.strip_prefix(p).and_then(|n| sd.get(n))));
            let Some(t) = found else {
                if may_be_missing(&info.name) {
                    missing.push(info.name.clone());
                    continue;
                }
                return Err(ParamError::Checkpoint(format!("missing parameter {}", info.name)));
            };
            if t.shape != info.shape || t.data.len() != info.len() {
                return Err(ParamError::Checkpoint(format!(
                    "{}: shape {:?} does not match the config's {:?}",
                    info.name, t.shape, info.shape
                )));
            }
            self.params[info.range()].copy_from_slice(&t.data);
        }
        Ok(missing)
    }

    pub fn zero_grad(&mut self) {
        let _prof = finetune_engine::profile::scope("zero_grad");
        self.grads.fill(0.0);
    }

    /// The gradients of the parameters that require one, each as its own slice.
    fn trainable_grads(&mut self) -> Vec<&mut [f32]> {
        let mut parts: Vec<&mut [f32]> = Vec::new();
        let mut rest: &mut [f32] = &mut self.grads;
        let mut consumed = 0;
        for i in &self.infos {
            let (_, tail) = std::mem::take(&mut rest).split_at_mut(i.offset - consumed);
            let (mine, tail) = tail.split_at_mut(i.len());
            consumed = i.offset + i.len();
            rest = tail;
            if i.requires_grad {
                parts.push(mine);
            }
        }
        parts
    }

    /// `torch.nn.utils.clip_grad_norm_` over the gradients of trainable parameters (a frozen one's is `None` in
    /// torch: neither in the norm nor scaled); returns the norm before clipping. An infinite `max_norm` only
    /// measures.
    pub fn clip_grad_norm(&mut self, max_norm: f32) -> f32 {
        let mut parts = self.trainable_grads();
        if max_norm.is_infinite() {
            let views: Vec<&[f32]> = parts.iter().map(|g| &**g).collect();
            return views.iter().map(|g| clip_grad::global_norm(&[g]).powi(2)).sum::<f64>().sqrt() as f32;
        }
        clip_grad::clip(&mut parts, max_norm)
    }

    /// One AdamW step over every trainable parameter; weight decay only where the layout asks for it. Frozen
    /// parameters are skipped entirely (no update, no decay, their moments untouched). Allocates the moments on
    /// the first step.
    pub fn adamw_step(&mut self, hp: adamw::Hyper) {
        self.adamw_pass(hp, 1.0, false);
    }

    /// `clip_grad_norm_(max_norm)`, `optimizer.step()` and `optimizer.zero_grad()` as HF Trainer runs them
    /// after each accumulation window, with the same results as [`clip_grad_norm`](Self::clip_grad_norm),
    /// [`adamw_step`](Self::adamw_step) and [`zero_grad`](Self::zero_grad) in turn but in two passes over the
    /// buffers instead of five: the norm, then AdamW on the scaled gradient, zeroing it as it goes. Frozen
    /// parameters' gradients are left alone: nothing writes them (they stay zero). An infinite `max_norm` does
    /// not clip. Returns the norm before clipping.
    pub fn optimizer_step(&mut self, max_norm: f32, hp: adamw::Hyper) -> f32 {
        let total = clip_grad::total_norm(self.trainable_grads().into_iter().map(|g| &*g));
        let coef = if max_norm.is_infinite() { 1.0 } else { clip_grad::coefficient(total, max_norm) };
        self.adamw_pass(hp, coef, true);
        total
    }

    /// AdamW on `coef ·` the trainable gradients, zeroing them when `zero`.
    fn adamw_pass(&mut self, hp: adamw::Hyper, coef: f32, zero: bool) {
        self.ensure_moments();
        self.step += 1;
        let step = self.step;
        let Self { infos, params, grads, exp_avg, exp_avg_sq, .. } = self;
        for i in infos.iter().filter(|i| i.requires_grad) {
            let r = i.range();
            let h = adamw::Hyper { weight_decay: if i.decay { hp.weight_decay } else { 0.0 }, ..hp };
            let (p, g) = (&mut params[r.clone()], &mut grads[r.clone()]);
            adamw::update_clipped(p, g, &mut exp_avg[r.clone()], &mut exp_avg_sq[r], h, step, coef, zero);
        }
    }

    fn ensure_moments(&mut self) {
        let n = self.params.len();
        if self.exp_avg.len() != n {
            self.exp_avg = vec![0.0; n];
            self.exp_avg_sq = vec![0.0; n];
        }
    }

    /// Optimizer steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// Whether AdamW moments are allocated (after a step or a restore).
    pub fn has_moments(&self) -> bool {
        !self.exp_avg.is_empty()
    }

    /// AdamW state over the flat parameter buffer: first and second moments (zero before the first step) and the
    /// step count, for checkpoints that resume exactly.
    pub fn optimizer_state(&self) -> (Vec<f32>, Vec<f32>, u64) {
        let n = self.params.len();
        if self.has_moments() {
            (self.exp_avg.clone(), self.exp_avg_sq.clone(), self.step)
        } else {
            (vec![0.0; n], vec![0.0; n], self.step)
        }
    }

    /// Restores what [`optimizer_state`](Self::optimizer_state) returned, after checking it covers every
    /// parameter.
    pub fn set_optimizer_state(&mut self, exp_avg: &[f32], exp_avg_sq: &[f32], step: u64) -> Result<(), ParamError> {
        let n = self.params.len();
        if exp_avg.len() != n || exp_avg_sq.len() != n {
            return Err(ParamError::Checkpoint(format!(
                "optimizer state has {} / {} values for {n} parameters",
                exp_avg.len(),
                exp_avg_sq.len()
            )));
        }
        self.exp_avg = exp_avg.to_vec();
        self.exp_avg_sq = exp_avg_sq.to_vec();
        self.step = step;
        Ok(())
    }

    /// Writes the moments as `dir/optimizer.safetensors` (`exp_avg`, `exp_avg_sq`, `[n]` each); returns `n`.
    pub fn save_optimizer_state(&self, dir: &Path) -> Result<usize, ParamError> {
        let (m, v, _) = self.optimizer_state();
        let n = m.len();
        let sd: StateDict =
            [("exp_avg".to_string(), Tensor::new(vec![n], m)), ("exp_avg_sq".to_string(), Tensor::new(vec![n], v))]
                .into_iter()
                .collect();
        checkpoint::save_safetensors(&sd, &dir.join(OPTIMIZER_WEIGHTS))?;
        Ok(n)
    }

    /// Reads what [`save_optimizer_state`](Self::save_optimizer_state) wrote and restores it with `step`.
    pub fn load_optimizer_state(&mut self, dir: &Path, step: u64) -> Result<(), ParamError> {
        let path = dir.join(OPTIMIZER_WEIGHTS);
        let bad = |message: String| ParamError::OptimizerFile { path: path.clone(), message };
        let mut sd = checkpoint::load_state_dict(&path)?;
        let m = sd.remove("exp_avg").ok_or_else(|| bad("missing tensor exp_avg".into()))?;
        let v = sd.remove("exp_avg_sq").ok_or_else(|| bad("missing tensor exp_avg_sq".into()))?;
        self.set_optimizer_state(&m.data, &v.data, step).map_err(|e| bad(e.to_string()))
    }
}

/// LoRA: adapters on the architecture's [`LoraTargets`], merging and PEFT adapter files.
impl ParamStore {
    fn lora_store(&mut self) -> Store<'_> {
        Store {
            infos: &mut self.infos,
            index: &mut self.index,
            bufs: [&mut self.params, &mut self.grads, &mut self.exp_avg, &mut self.exp_avg_sq],
        }
    }

    /// Adds PEFT LoRA adapters to the targeted linears of every layer and freezes every base parameter.
    /// `lora_A` `[r, in]` is drawn from U(−1/√in, 1/√in) (PEFT's `kaiming_uniform_(a=√5)`) with `seed`,
    /// `lora_B` `[out, r]` is zero, so the model's output is unchanged until training moves B. The adapters
    /// (`model.layers.{i}.self_attn.q_proj.lora_A.weight`, …) are trainable, decayed by AdamW, and share the
    /// flat gradient and moment buffers with the base. `fan_in_fan_out` is set from the architecture (as PEFT
    /// does, with a warning, for `nn.Linear` and `Conv1D` targets).
    pub fn add_lora(&mut self, cfg: &LoraConfig, seed: u64) -> Result<(), ParamError> {
        if self.lora.is_some() {
            return Err(ParamError::Adapters(
                "the model already has LoRA adapters (merge_lora or unload_lora first)".into(),
            ));
        }
        if self.lora_targets.modules.is_empty() {
            return Err(ParamError::Adapters("this architecture has no LoRA target modules".into()));
        }
        let cfg = LoraConfig { fan_in_fan_out: self.lora_targets.fan_in_fan_out, ..cfg.clone() };
        let targets = self.lora_targets.clone();
        let adapters = Adapters::add(&cfg, seed, targets.modules, &targets.layer_prefixes, self.lora_store())?;
        self.lora = Some(adapters);
        self.zero_frozen_grads();
        Ok(())
    }

    /// The adapters' config, when the model has LoRA adapters.
    pub fn lora_config(&self) -> Option<&LoraConfig> {
        self.lora.as_ref().map(|l| &l.config)
    }

    /// LoRA dropout state (seed, training passes so far), for checkpoints that resume exactly.
    pub fn lora_dropout_state(&self) -> Option<(u64, u64)> {
        self.lora.as_ref().map(|l| l.dropout_state())
    }

    /// Restores [`lora_dropout_state`](Self::lora_dropout_state); no effect without adapters.
    pub fn set_lora_dropout_state(&mut self, seed: u64, passes: u64) {
        if let Some(l) = self.lora.as_mut() {
            l.set_dropout_state(seed, passes);
        }
    }

    /// Removes the adapters without merging them (PEFT's `unload`): the buffers shrink back to the base
    /// model and base parameters get back the `requires_grad` they had before [`add_lora`](Self::add_lora).
    /// Returns the removed adapters' config.
    pub fn unload_lora(&mut self) -> Option<LoraConfig> {
        let l = self.lora.take()?;
        Some(l.unload(self.lora_store()))
    }

    /// PEFT's `merge_and_unload`: `W += scale · B · A` for every adapter (the transpose into `[in, out]`
    /// weights), then the adapters are removed as by [`unload_lora`](Self::unload_lora) (base parameters get
    /// back their `requires_grad` from before [`add_lora`](Self::add_lora), so the merged model trains as the
    /// base did).
    pub fn merge_lora(&mut self) -> Result<(), ParamError> {
        let l = self.lora.as_ref().ok_or_else(|| ParamError::Adapters("the model has no LoRA adapters".into()))?;
        let (prefixes, index) = (&self.lora_targets.layer_prefixes, &self.index);
        let base = |li: usize, m: usize| index[&format!("{}.{}.weight", prefixes[li], l.modules[m].path)];
        l.merge_into(&self.infos, &mut self.params, base);
        self.unload_lora();
        self.revision += 1;
        Ok(())
    }

    /// The adapter weights with PEFT's saved names (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`);
    /// empty without adapters.
    pub fn lora_state_dict(&self) -> StateDict {
        self.lora.as_ref().map(|l| l.state_dict(&self.infos, &self.params)).unwrap_or_default()
    }

    /// Saves the adapters as PEFT's `save_pretrained` does: `adapter_config.json` (with `inference_mode`
    /// true and the targeted modules listed) and `adapter_model.safetensors`, each written atomically.
    pub fn save_adapter(&self, dir: impl AsRef<Path>) -> Result<(), ParamError> {
        let l =
            self.lora.as_ref().ok_or_else(|| ParamError::Adapters("the model has no LoRA adapters to save".into()))?;
        Ok(l.save(dir.as_ref(), &self.infos, &self.params)?)
    }

    /// Adds adapters from a PEFT adapter directory (`adapter_config.json` and `adapter_model.safetensors`, or
    /// `adapter_model.bin`) and loads their weights; base parameters are frozen as by
    /// [`add_lora`](Self::add_lora). A missing, unexpected or wrongly shaped tensor is an error naming the file
    /// and the tensor, and leaves the model without adapters.
    pub fn load_adapter(&mut self, dir: impl AsRef<Path>) -> Result<(), ParamError> {
        let dir = dir.as_ref();
        let (cfg, sd, path) = lora::read_adapter_dir(dir)?;
        self.add_lora(&cfg, 0).map_err(|e| match e {
            ParamError::Lora(e) => ParamError::Lora(lora::in_config_file(e, dir)),
            e => e,
        })?;
        let loaded = match &self.lora {
            Some(l) => l.load_weights(&self.infos, &mut self.params, &sd, &path),
            None => Ok(()),
        };
        if let Err(e) = loaded {
            self.unload_lora();
            return Err(e.into());
        }
        Ok(())
    }

    /// Sizes the LoRA scratch for `n` rows (no-op without adapters).
    pub fn lora_prepare(&self, lw: &mut LoraWorkspace, n: usize) {
        if let Some(l) = &self.lora {
            l.prepare(lw, n);
        }
    }

    /// The dropout seed of a new training pass through the adapters (`None` without adapter dropout).
    pub fn lora_train_seed(&mut self) -> Option<u64> {
        self.lora.as_mut().and_then(|l| l.next_train_seed())
    }

    /// The adapter outputs of modules `mods` of layer `layer` (input `x`, `n` rows), added into their columns
    /// of `y` (no-op without adapters).
    #[allow(clippy::too_many_arguments)]
    pub fn lora_forward(
        &self,
        lw: &mut LoraWorkspace,
        layer: usize,
        mods: Range<usize>,
        y: &mut [f32],
        x: &[f32],
        n: usize,
    ) {
        if let Some(l) = &self.lora {
            l.forward(lw, &self.infos, &self.params, layer, mods, y, x, n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> ParamStore {
        let mut l = Layout::default();
        l.add("a.weight", vec![2, 3], true);
        l.add("a.bias", vec![3], false);
        l.add("b.weight", vec![4], true);
        let mut s = ParamStore::new(l);
        s.params.iter_mut().enumerate().for_each(|(i, p)| *p = 0.1 * i as f32 + 0.5);
        s.grads.iter_mut().enumerate().for_each(|(i, g)| *g = 0.01 * i as f32 - 0.03);
        s
    }

    #[test]
    fn moments_are_allocated_by_the_first_step_only() {
        let mut s = store();
        assert!(!s.has_moments(), "a loaded model holds no AdamW state");
        let (m, v, step) = s.optimizer_state();
        assert!(m.iter().chain(&v).all(|&x| x == 0.0) && m.len() == s.params.len() && step == 0);
        s.adamw_step(adamw::Hyper::default());
        assert!(s.has_moments() && s.steps() == 1);
    }

    #[test]
    fn frozen_parameters_get_neither_update_nor_weight_decay() {
        let mut s = store();
        s.set_requires_grad("a.weight", false).expect("known");
        let before = s.param("a.weight").expect("a").to_vec();
        let hp = adamw::Hyper { lr: 0.1, weight_decay: 0.5, ..Default::default() };
        for _ in 0..3 {
            s.adamw_step(hp);
        }
        assert_eq!(s.param("a.weight").expect("a"), &before[..]);
        assert!(s.param("b.weight").expect("b").iter().zip(&store().params[9..]).all(|(x, y)| x != y));
        // The clipped norm covers trainable gradients only.
        let want: f32 = s.grads[6..].iter().map(|g| g * g).sum::<f32>().sqrt();
        assert!((s.clip_grad_norm(f32::INFINITY) - want).abs() < 1e-6);
        assert_eq!(s.freeze_prefix("b.").expect("matches"), 1);
        assert!(s.freeze_prefix("c.").is_err() && s.set_requires_grad("c", true).is_err());
    }

    #[test]
    fn optimizer_step_equals_clip_step_and_zero_grad() {
        for max in [0.01f32, f32::INFINITY] {
            let (mut fused, mut three) = (store(), store());
            for s in [&mut fused, &mut three] {
                s.set_requires_grad("a.bias", false).expect("known");
            }
            assert!(fused.grads[6..9].iter().all(|&g| g == 0.0), "freezing zeroes the gradient");
            let hp = adamw::Hyper { lr: 0.1, weight_decay: 0.5, ..Default::default() };
            for step in 0..3 {
                let g: Vec<f32> = (0..fused.grads.len()).map(|i| 0.02 * (i + step) as f32 - 0.05).collect();
                for s in [&mut fused, &mut three] {
                    for (k, info) in s.infos.clone().iter().enumerate() {
                        if info.requires_grad {
                            let r = s.range(k);
                            s.grads[r.clone()].copy_from_slice(&g[r]);
                        }
                    }
                }
                let norm = fused.optimizer_step(max, hp);
                assert_eq!(norm, three.clip_grad_norm(max));
                three.adamw_step(hp);
                three.zero_grad();
                assert_eq!(fused.params, three.params, "max {max}: parameters bitwise equal");
                assert_eq!(fused.optimizer_state(), three.optimizer_state());
                assert!(fused.grads.iter().all(|&g| g == 0.0), "gradients zeroed");
            }
        }
    }

    #[test]
    fn optimizer_state_round_trips_and_checks_its_size() {
        let mut s = store();
        s.adamw_step(adamw::Hyper::default());
        let dir = std::env::temp_dir().join(format!("finetune-params-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        assert_eq!(s.save_optimizer_state(&dir).expect("save"), s.params.len());
        let mut t = store();
        t.load_optimizer_state(&dir, 7).expect("load");
        assert_eq!((t.optimizer_state().0, t.steps()), (s.optimizer_state().0, 7));
        assert!(t.set_optimizer_state(&[0.0; 2], &[0.0; 2], 1).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
