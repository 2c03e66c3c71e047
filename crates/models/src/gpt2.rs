//! GPT-2 for causal-LM fine-tuning on the engine's kernels: `transformers.GPT2LMHeadModel`.
//!
//! token + learned position embeddings → N pre-LayerNorm blocks (ln_1 → c_attn (fused q/k/v) → causal
//! multi-head attention → c_proj → residual; ln_2 → c_fc → GELU (tanh approximation, `gelu_new`) → c_proj →
//! residual) → ln_f → LM head tied to the token embedding. GPT-2's `Conv1D` stores weights `[in, out]`
//! (the transpose of `nn.Linear`), and they are used in that layout without copies.
//!
//! Same conventions as [`crate::llama`]: parameters in a [`ParamStore`] by Hugging Face name, a [`Workspace`]
//! per (batch, sequence) shape, the loss of transformers' `ForCausalLMLoss` through the chunked fused LM-head
//! cross-entropy; batches, KV cache and cached attention from [`crate::decoder`].
//!
//! Not supported: dropout (training runs as `model.eval()` would, i.e. without dropout, so configs should
//! set `resid_pdrop`/`embd_pdrop`/`attn_pdrop` to 0 for exact parity in training), `scale_attn_weights =
//! false`, `scale_attn_by_inverse_layer_idx`, `reorder_and_upcast_attn` (the last only changes rounding),
//! activations other than `gelu_new`/`gelu_pytorch_tanh`.
//!
//! LoRA on the Conv1D layers (`store.add_lora`, PEFT adapter files): see [`crate::params`] and [`crate::lora`].
//!
//! Packed rows: with `Batch::position_ids` a row may hold several sequences (a new one wherever the position is
//! 0), each attending only to itself and reading the learned position embedding at its own positions.
//! Right padding past `n_positions` (batches padded to a round length) reads the last position's embedding: it
//! is masked and takes no loss, so no real token or gradient sees it.

use finetune_engine::int8::Q8Input;
use finetune_engine::kernels::causal_attention::Shape;
use finetune_engine::kernels::linear_cross_entropy::{self as lce, Scratch};
use finetune_engine::kernels::{gelu_tanh, layernorm, residual};
use finetune_engine::matmul::matmul;
use finetune_engine::StateDict;
use serde::Deserialize;

use crate::acts;
use crate::decoder::{self, layernorm_backward, Architecture, DecodeBuffers, Head, KvDims, LmHead, StepRows};
pub use crate::decoder::{Batch, KvCache};
use crate::error::ModelError;
use crate::lora::{LoraWorkspace, Module};
pub use crate::params::ParamInfo;
use crate::params::{check_config_against, DimCheck, Layout, LoraTargets, ParamStore, Parts};

/// This architecture's errors: the crate's [`ModelError`].
pub type Gpt2Error = ModelError;

fn default_eps() -> f32 {
    1e-5
}
fn default_act() -> String {
    "gelu_new".into()
}
fn default_true() -> bool {
    true
}

/// The fields of a Hugging Face GPT-2 `config.json` this model uses.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// Defaults to 4 · n_embd.
    #[serde(default)]
    pub n_inner: Option<usize>,
    #[serde(default = "default_act")]
    pub activation_function: String,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f32,
    #[serde(default = "default_true")]
    pub scale_attn_weights: bool,
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
}

impl Gpt2Config {
    pub fn from_json(text: &str) -> Result<Self, Gpt2Error> {
        let c: Gpt2Config = serde_json::from_str(text).map_err(|e| Gpt2Error::Config(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    pub fn inner(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    pub fn validate(&self) -> Result<(), Gpt2Error> {
        let err = |m: String| Err(Gpt2Error::Config(m));
        if self.n_embd == 0 || self.n_head == 0 || !self.n_embd.is_multiple_of(self.n_head) || self.vocab_size == 0 {
            return err("n_embd must be a positive multiple of n_head, vocab_size positive".into());
        }
        crate::error::check_config_sizes(&[
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_inner", self.n_inner.unwrap_or(0)),
        ])?;
        if !matches!(self.activation_function.as_str(), "gelu_new" | "gelu_pytorch_tanh") {
            return err(format!(
                "activation_function {:?} is not supported (only \"gelu_new\" and \"gelu_pytorch_tanh\")",
                self.activation_function
            ));
        }
        if !self.scale_attn_weights || self.scale_attn_by_inverse_layer_idx {
            return err("only scale_attn_weights = true without scale_attn_by_inverse_layer_idx is supported".into());
        }
        if !self.tie_word_embeddings {
            return err("GPT2LMHeadModel ties lm_head to wte; tie_word_embeddings = false is not supported".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
struct LayerIdx {
    ln1_w: usize,
    ln1_b: usize,
    attn_w: usize,
    attn_b: usize,
    aproj_w: usize,
    aproj_b: usize,
    ln2_w: usize,
    ln2_b: usize,
    fc_w: usize,
    fc_b: usize,
    mproj_w: usize,
    mproj_b: usize,
}

#[derive(Debug, Clone)]
struct Idx {
    wte: usize,
    wpe: usize,
    layers: Vec<LayerIdx>,
    lnf_w: usize,
    lnf_b: usize,
}

fn layout(cfg: &Gpt2Config) -> (Layout, Idx) {
    let (c, f) = (cfg.n_embd, cfg.inner());
    let mut l = Layout::default();
    let mut add = |name: String, shape: Vec<usize>| {
        // Hugging Face Trainer: no decay for biases and LayerNorm (ln_1, ln_2, ln_f) parameters.
        let decay = !(name.ends_with("bias") || name.contains(".ln_"));
        l.add(name, shape, decay)
    };
    let wte = add("transformer.wte.weight".into(), vec![cfg.vocab_size, c]);
    let wpe = add("transformer.wpe.weight".into(), vec![cfg.n_positions, c]);
    let mut layers = Vec::new();
    for i in 0..cfg.n_layer {
        let p = format!("transformer.h.{i}");
        layers.push(LayerIdx {
            ln1_w: add(format!("{p}.ln_1.weight"), vec![c]),
            ln1_b: add(format!("{p}.ln_1.bias"), vec![c]),
            attn_w: add(format!("{p}.attn.c_attn.weight"), vec![c, 3 * c]),
            attn_b: add(format!("{p}.attn.c_attn.bias"), vec![3 * c]),
            aproj_w: add(format!("{p}.attn.c_proj.weight"), vec![c, c]),
            aproj_b: add(format!("{p}.attn.c_proj.bias"), vec![c]),
            ln2_w: add(format!("{p}.ln_2.weight"), vec![c]),
            ln2_b: add(format!("{p}.ln_2.bias"), vec![c]),
            fc_w: add(format!("{p}.mlp.c_fc.weight"), vec![c, f]),
            fc_b: add(format!("{p}.mlp.c_fc.bias"), vec![f]),
            mproj_w: add(format!("{p}.mlp.c_proj.weight"), vec![f, c]),
            mproj_b: add(format!("{p}.mlp.c_proj.bias"), vec![c]),
        });
    }
    let lnf_w = add("transformer.ln_f.weight".into(), vec![c]);
    let lnf_b = add("transformer.ln_f.bias".into(), vec![c]);
    (l, Idx { wte, wpe, layers, lnf_w, lnf_b })
}

/// LoRA on the Conv1D layers (`attn.c_attn`, `attn.c_proj`, `mlp.c_fc`, `mlp.c_proj`; PEFT's `"c_proj"` selects
/// both projections). As PEFT does for `Conv1D` layers, `fan_in_fan_out` is on: the base weights are
/// `[in, out]`, the adapters keep `lora_A [r, in]`, `lora_B [out, r]`.
fn lora_targets(cfg: &Gpt2Config) -> LoraTargets {
    let (c, f) = (cfg.n_embd, cfg.inner());
    let md = Module::plain;
    LoraTargets {
        modules: vec![
            md("attn.c_attn", c, 3 * c),
            md("attn.c_proj", c, c),
            md("mlp.c_fc", c, f),
            md("mlp.c_proj", f, c),
        ],
        layer_prefixes: (0..cfg.n_layer).map(|i| format!("transformer.h.{i}")).collect(),
        fan_in_fan_out: true,
    }
}

impl KvDims for Gpt2Config {
    fn kv_dims(&self) -> (usize, usize, usize) {
        (self.n_layer, self.n_head, self.n_embd / self.n_head)
    }
}

struct LayerActs {
    ln1: Vec<f32>,
    ln1_mean: Vec<f32>,
    ln1_rstd: Vec<f32>,
    qkv: Vec<f32>,
    probs: Vec<f32>,
    ctx: Vec<f32>,
    mid: Vec<f32>,
    ln2: Vec<f32>,
    ln2_mean: Vec<f32>,
    ln2_rstd: Vec<f32>,
    fc: Vec<f32>,
    act: Vec<f32>,
    out: Vec<f32>,
}

/// Every activation and activation-gradient buffer for one (batch, seq) shape, allocated once and reused.
pub struct Workspace {
    pub batch: usize,
    pub seq: usize,
    /// Built by [`Workspace::for_inference`]: two activation sets used in turn, no gradient buffers.
    inference: bool,
    /// The batch's ids, positions, segments and attention mask.
    tok: decoder::Tokens,
    emb: Vec<f32>,
    layers: Vec<LayerActs>,
    lnf_mean: Vec<f32>,
    lnf_rstd: Vec<f32>,
    /// The LM head's input, targets and logits (`lm.logits`: output of the last `logits` call).
    pub lm: LmHead,
    dx: Vec<f32>,
    dln: Vec<f32>,
    dact: Vec<f32>,
    dctx: Vec<f32>,
    dqkv: Vec<f32>,
    dscores: Vec<f32>,
    /// LoRA scratch, sized on the first pass with adapters.
    lora: LoraWorkspace,
}

impl Workspace {
    pub fn new(cfg: &Gpt2Config, batch: usize, seq: usize) -> Self {
        Self::with_head_chunk(cfg, batch, seq, Scratch::rows_for_budget(decoder::HEAD_CHUNK_FLOATS, cfg.vocab_size))
    }

    /// A workspace for losses and logits without gradients: two layers' activations used in turn, no gradient
    /// buffers.
    pub fn for_inference(cfg: &Gpt2Config, batch: usize, seq: usize) -> Self {
        let chunk = Scratch::rows_for_budget(decoder::HEAD_CHUNK_FLOATS, cfg.vocab_size);
        Self::build(cfg, batch, seq, chunk, true)
    }

    pub fn with_head_chunk(cfg: &Gpt2Config, batch: usize, seq: usize, chunk_rows: usize) -> Self {
        Self::build(cfg, batch, seq, chunk_rows, false)
    }

    fn build(cfg: &Gpt2Config, batch: usize, seq: usize, chunk_rows: usize, inference: bool) -> Self {
        let (c, f, h) = (cfg.n_embd, cfg.inner(), cfg.n_head);
        let n = batch * seq;
        let z = |k: usize| vec![0.0f32; k];
        let zb = |k: usize| if inference { Vec::new() } else { vec![0.0f32; k] };
        let probs = batch * h * seq * seq;
        Workspace {
            batch,
            seq,
            inference,
            tok: decoder::Tokens::new(n),
            emb: z(n * c),
            layers: (0..acts::sets(cfg.n_layer, inference))
                .map(|_| LayerActs {
                    ln1: z(n * c),
                    ln1_mean: z(n),
                    ln1_rstd: z(n),
                    qkv: z(n * 3 * c),
                    probs: z(probs),
                    ctx: z(n * c),
                    mid: z(n * c),
                    ln2: z(n * c),
                    ln2_mean: z(n),
                    ln2_rstd: z(n),
                    fc: z(n * f),
                    act: z(n * f),
                    out: z(n * c),
                })
                .collect(),
            lnf_mean: z(n),
            lnf_rstd: z(n),
            lm: LmHead::new(n, c, cfg.vocab_size, chunk_rows),
            dx: zb(n * c),
            dln: zb(n * c),
            dact: zb(n * f),
            dctx: zb(n * c),
            dqkv: zb(n * 3 * c),
            dscores: zb(probs),
            lora: LoraWorkspace::default(),
        }
    }
}

/// Conv1D forward: `out[n, c_out] = inp[n, c_in] · W[c_in, c_out] + b`.
fn conv1d_forward(out: &mut [f32], inp: &[f32], w: &[f32], b: &[f32], n: usize, c_in: usize, c_out: usize) {
    for row in out[..n * c_out].chunks_exact_mut(c_out) {
        row.copy_from_slice(b);
    }
    matmul(out, inp, w, n, c_in, c_out, false, false, true);
}

/// Conv1D backward: `dinp = dout · Wᵀ` (added when `acc`), `dW += inpᵀ · dout`, `db += Σ dout` (each only
/// when asked for).
#[allow(clippy::too_many_arguments)]
fn conv1d_backward(
    dinp: &mut [f32],
    acc: bool,
    dw: Option<&mut [f32]>,
    db: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    w: &[f32],
    n: usize,
    c_in: usize,
    c_out: usize,
) {
    matmul(dinp, dout, w, n, c_out, c_in, false, true, acc);
    if let Some(dw) = dw {
        matmul(dw, inp, dout, c_in, n, c_out, true, false, true);
    }
    if let Some(db) = db {
        for row in dout[..n * c_out].chunks_exact(c_out) {
            for (d, g) in db.iter_mut().zip(row) {
                *d += g;
            }
        }
    }
}

pub struct Gpt2LMHeadModel {
    pub config: Gpt2Config,
    idx: Idx,
    /// Parameters, gradients, optimizer state and LoRA adapters (on the Conv1D layers).
    pub store: ParamStore,
    /// Int8 copies of the decode step's weights (`--int8`), empty otherwise.
    int8: decoder::Int8Weights,
}

impl Gpt2LMHeadModel {
    /// Loads parameters by Hugging Face name (also base-model checkpoints without the `transformer.` prefix,
    /// as the original GPT-2 releases are stored). A stored `lm_head.weight` is ignored (tied to wte).
    pub fn from_state_dict(config: Gpt2Config, sd: &StateDict) -> Result<Self, Gpt2Error> {
        config.validate()?;
        let dims = [
            DimCheck {
                field: "vocab_size",
                value: Some(config.vocab_size),
                params: &["transformer.wte.weight"],
                axis: 0,
            },
            DimCheck { field: "n_embd", value: Some(config.n_embd), params: &["transformer.wte.weight"], axis: 1 },
            DimCheck {
                field: "n_positions",
                value: Some(config.n_positions),
                params: &["transformer.wpe.weight"],
                axis: 0,
            },
            DimCheck {
                field: "n_inner",
                value: Some(config.inner()),
                params: &["transformer.h.0.mlp.c_fc.weight"],
                axis: 1,
            },
        ];
        let strip = &["transformer."];
        check_config_against(sd, strip, &dims, ("n_layer", config.n_layer, &["transformer.h."]))?;
        let (layout, idx) = layout(&config);
        let (store, _) = ParamStore::from_state_dict(layout, sd, strip, |_| false)?;
        let store = store.with_lora_targets(lora_targets(&config));
        Ok(Gpt2LMHeadModel { config, idx, store, int8: Default::default() })
    }

    fn check_batch(&self, ws: &Workspace, b: &Batch<'_>) -> Result<(), Gpt2Error> {
        let cfg = &self.config;
        let n = ws.batch * ws.seq;
        let bad = |m: String| Err(Gpt2Error::Batch(m));
        let sized = ws.layers.len() == acts::sets(cfg.n_layer, ws.inference)
            && ws.emb.len() == n * cfg.n_embd
            && ws.layers.iter().all(|a| a.fc.len() == n * cfg.inner() && a.probs.len() == n * cfg.n_head * ws.seq);
        if !sized {
            return bad("the workspace was created for a different model configuration".into());
        }
        decoder::check_batch(b, n, ws.batch, ws.seq, cfg.vocab_size).map_err(Gpt2Error::Batch)?;
        // Only real tokens need a learned position; padding past the table is clamped in `trunk`.
        let limit = cfg.n_positions;
        match b.position_ids {
            Some(pos) => {
                if let Some((&q, _)) = pos.iter().zip(b.attention_mask).find(|&(&q, &m)| m == 1 && q as usize >= limit)
                {
                    return bad(format!("position id {q} is not below n_positions {limit}"));
                }
            }
            None => {
                let longest =
                    b.attention_mask.chunks_exact(ws.seq.max(1)).filter_map(|r| r.iter().rposition(|&m| m == 1)).max();
                if let Some(last) = longest.filter(|&l| l >= limit) {
                    return bad(format!("sequence length {} exceeds n_positions {limit}", last + 1));
                }
            }
        }
        Ok(())
    }

    fn trunk(&self, ws: &mut Workspace, batch: &Batch<'_>) -> Result<(), Gpt2Error> {
        self.check_batch(ws, batch)?;
        let cfg = &self.config;
        let (bsz, t, c, f, h) = (ws.batch, ws.seq, cfg.n_embd, cfg.inner(), cfg.n_head);
        let n = bsz * t;
        let shape = Shape { batch: bsz, seq: t, heads: h, kv_heads: h, head_dim: c / h };
        let st = &self.store;
        let s = |k: usize| st.get(k);
        let eps = cfg.layer_norm_epsilon;
        st.lora_prepare(&mut ws.lora, n);

        ws.tok.load(batch, t, (cfg.n_positions as u32).saturating_sub(1));
        let (wte, wpe) = (s(self.idx.wte), s(self.idx.wpe));
        for ((o, &id), &q) in ws.emb.chunks_exact_mut(c).zip(&ws.tok.ids).zip(&ws.tok.pos) {
            let (wr, pr) = (&wte[id as usize * c..][..c], &wpe[q as usize * c..][..c]);
            for k in 0..c {
                o[k] = wr[k] + pr[k];
            }
        }
        for (li, lx) in self.idx.layers.iter().enumerate() {
            let (prev, a) = acts::layer_pair(&mut ws.layers, li);
            let inp: &[f32] = prev.map_or(&ws.emb, |p| &p.out);
            layernorm::forward(&mut a.ln1, &mut a.ln1_mean, &mut a.ln1_rstd, inp, s(lx.ln1_w), s(lx.ln1_b), n, c, eps);
            conv1d_forward(&mut a.qkv, &a.ln1, s(lx.attn_w), s(lx.attn_b), n, c, 3 * c);
            st.lora_forward(&mut ws.lora, li, 0..1, &mut a.qkv, &a.ln1, n);
            let seg = ws.tok.segments();
            decoder::attention_forward(&mut a.ctx, &mut a.probs, &a.qkv, &ws.tok.mask_add, seg, shape);
            conv1d_forward(&mut a.mid, &a.ctx, s(lx.aproj_w), s(lx.aproj_b), n, c, c);
            st.lora_forward(&mut ws.lora, li, 1..2, &mut a.mid, &a.ctx, n);
            residual::add_assign(&mut a.mid, inp);
            layernorm::forward(
                &mut a.ln2,
                &mut a.ln2_mean,
                &mut a.ln2_rstd,
                &a.mid,
                s(lx.ln2_w),
                s(lx.ln2_b),
                n,
                c,
                eps,
            );
            conv1d_forward(&mut a.fc, &a.ln2, s(lx.fc_w), s(lx.fc_b), n, c, f);
            st.lora_forward(&mut ws.lora, li, 2..3, &mut a.fc, &a.ln2, n);
            gelu_tanh::forward(&mut a.act, &a.fc);
            conv1d_forward(&mut a.out, &a.act, s(lx.mproj_w), s(lx.mproj_b), n, f, c);
            st.lora_forward(&mut ws.lora, li, 3..4, &mut a.out, &a.act, n);
            residual::add_assign(&mut a.out, &a.mid);
        }
        let last: &[f32] = acts::last(&ws.layers, self.idx.layers.len()).map_or(&ws.emb, |a| &a.out);
        let (w, b) = (s(self.idx.lnf_w), s(self.idx.lnf_b));
        layernorm::forward(&mut ws.lm.hidden, &mut ws.lnf_mean, &mut ws.lnf_rstd, last, w, b, n, c, eps);
        Ok(())
    }

    /// Forward and backward in one pass: returns the loss and adds its gradient to `self.grads` for every
    /// parameter that requires one.
    pub fn forward_backward(&mut self, ws: &mut Workspace, batch: &Batch<'_>) -> Result<f32, Gpt2Error> {
        let labels = batch.labels.ok_or_else(|| Gpt2Error::Batch("training needs labels".into()))?;
        if ws.inference {
            return Err(Gpt2Error::Batch("training needs a workspace from Workspace::new, not for_inference".into()));
        }
        // LoRA dropout masks: a fresh seed per training pass, reused by the backward.
        ws.lora.train_seed = self.store.lora_train_seed();
        self.trunk(ws, batch)?;
        let cfg = &self.config;
        let (bsz, t, c, f, v, h) = (ws.batch, ws.seq, cfg.n_embd, cfg.inner(), cfg.vocab_size, cfg.n_head);
        let n = bsz * t;
        let shape = Shape { batch: bsz, seq: t, heads: h, kv_heads: h, head_dim: c / h };
        let idx = &self.idx;
        let Parts { infos, params: p, grads: g, lora, hook } = self.store.parts();
        let rg = |k: usize| infos[k].requires_grad;
        let r = |k: usize| infos[k].range();
        let s = |k: usize| &p[r(k)];
        // Disjoint gradient slices of a (weight, bias) pair, each only when it requires a gradient.
        fn pair(
            g: &mut [f32],
            w: std::ops::Range<usize>,
            b: std::ops::Range<usize>,
            rw: bool,
            rb: bool,
        ) -> (Option<&mut [f32]>, Option<&mut [f32]>) {
            debug_assert!(w.end <= b.start);
            let (lo, hi) = g.split_at_mut(b.start);
            let gw = rw.then(|| &mut lo[w]);
            let gb = rb.then(|| &mut hi[..b.end - b.start]);
            (gw, gb)
        }

        let dhead = rg(idx.wte).then(|| &mut g[r(idx.wte)]);
        let loss = ws.lm.loss(
            Head { weight: s(idx.wte), bias: None, version: 0 },
            batch,
            labels,
            (t, c, v),
            Some(lce::Grads { dweight: dhead, ..Default::default() }),
        );
        let mut tmp = Vec::new();
        {
            let last: &[f32] = match ws.layers.last() {
                Some(a) => &a.out,
                None => &ws.emb,
            };
            let (mean, rstd) = (&ws.lnf_mean, &ws.lnf_rstd);
            let ln = (idx.lnf_w, idx.lnf_b);
            layernorm_backward(
                (infos, p, g),
                ln,
                &mut ws.dx,
                false,
                &ws.lm.dhidden,
                last,
                (mean, rstd),
                (n, c),
                &mut tmp,
            );
        }
        for li in (0..idx.layers.len()).rev() {
            let lx = idx.layers[li];
            let (prev, rest) = ws.layers.split_at(li);
            let inp: &[f32] = if li == 0 { &ws.emb } else { &prev[li - 1].out };
            let a = &rest[0];
            let (gw, gb) = pair(g, r(lx.mproj_w), r(lx.mproj_b), rg(lx.mproj_w), rg(lx.mproj_b));
            conv1d_backward(&mut ws.dact, false, gw, gb, &ws.dx, &a.act, s(lx.mproj_w), n, f, c);
            lora.backward(&mut ws.lora, infos, p, g, li, 3..4, &mut ws.dact, &ws.dx, &a.act, n);
            gelu_tanh::backward(&mut ws.dact[..n * f], &a.fc);
            let (gw, gb) = pair(g, r(lx.fc_w), r(lx.fc_b), rg(lx.fc_w), rg(lx.fc_b));
            conv1d_backward(&mut ws.dln, false, gw, gb, &ws.dact, &a.ln2, s(lx.fc_w), n, c, f);
            lora.backward(&mut ws.lora, infos, p, g, li, 2..3, &mut ws.dln, &ws.dact, &a.ln2, n);
            let stats = (&a.ln2_mean[..], &a.ln2_rstd[..]);
            let ln = (lx.ln2_w, lx.ln2_b);
            layernorm_backward((infos, p, g), ln, &mut ws.dx, true, &ws.dln, &a.mid, stats, (n, c), &mut tmp);
            let (gw, gb) = pair(g, r(lx.aproj_w), r(lx.aproj_b), rg(lx.aproj_w), rg(lx.aproj_b));
            conv1d_backward(&mut ws.dctx, false, gw, gb, &ws.dx, &a.ctx, s(lx.aproj_w), n, c, c);
            lora.backward(&mut ws.lora, infos, p, g, li, 1..2, &mut ws.dctx, &ws.dx, &a.ctx, n);
            let seg = ws.tok.segments();
            let (mask, dscores) = (&ws.tok.mask_add, &mut ws.dscores);
            decoder::attention_backward(&mut ws.dqkv, dscores, &ws.dctx, &a.qkv, &a.probs, mask, seg, shape);
            let (gw, gb) = pair(g, r(lx.attn_w), r(lx.attn_b), rg(lx.attn_w), rg(lx.attn_b));
            conv1d_backward(&mut ws.dln, false, gw, gb, &ws.dqkv, &a.ln1, s(lx.attn_w), n, c, 3 * c);
            lora.backward(&mut ws.lora, infos, p, g, li, 0..1, &mut ws.dln, &ws.dqkv, &a.ln1, n);
            let stats = (&a.ln1_mean[..], &a.ln1_rstd[..]);
            let ln = (lx.ln1_w, lx.ln1_b);
            layernorm_backward((infos, p, g), ln, &mut ws.dx, true, &ws.dln, inp, stats, (n, c), &mut tmp);
            hook.layer_done(infos, g, li);
        }
        for (k, rows) in [(idx.wte, &ws.tok.ids), (idx.wpe, &ws.tok.pos)] {
            if rg(k) {
                decoder::scatter_rows(&mut g[r(k)], &ws.dx, rows, c);
            }
        }
        Ok(loss)
    }
}

/// Activations of the KV-cache decode steps ([`Architecture::decode`]) for up to `max_new` new tokens per row and `max_len`
/// tokens in all, allocated once so that decode steps allocate nothing.
pub struct Gpt2DecodeWorkspace {
    /// The buffers every decoder has alike.
    buf: DecodeBuffers,
    ln: Vec<f32>,
    mean: Vec<f32>,
    rstd: Vec<f32>,
    qkv: Vec<f32>,
    fc: Vec<f32>,
    act: Vec<f32>,
}

impl Gpt2DecodeWorkspace {
    pub fn new(cfg: &Gpt2Config, batch: usize, max_new: usize, max_len: usize) -> Self {
        let (c, f, h) = (cfg.n_embd, cfg.inner(), cfg.n_head);
        let n = batch * max_new;
        let z = |k: usize| vec![0.0f32; k];
        Gpt2DecodeWorkspace {
            buf: DecodeBuffers::new((batch, max_new, max_len), c, (h, c / h.max(1)), cfg.vocab_size),
            ln: z(n * c),
            mean: z(n.max(batch)),
            rstd: z(n.max(batch)),
            qkv: z(n * 3 * c),
            fc: z(n * f),
            act: z(n * f),
        }
    }
}

impl Architecture for Gpt2LMHeadModel {
    const CLASS: &'static str = "GPT2LMHeadModel";
    const MODEL_TYPES: &'static [&'static str] = &["gpt2"];
    // Conv1D weights are stored transposed (`[c_in, c_out]`), which the bf16 weight cache does not pack yet.
    const BF16: bool = false;
    decoder::architecture_plumbing!(Workspace, Gpt2DecodeWorkspace);

    fn head(&self) -> Head<'_> {
        Head { weight: self.store.get(self.idx.wte), bias: None, version: 0 }
    }
    fn from_config(config_json: &str, state: &StateDict) -> Result<Self, ModelError> {
        Gpt2LMHeadModel::from_state_dict(Gpt2Config::from_json(config_json)?, state)
    }
    fn int8_spans(&self) -> Vec<decoder::Int8Span> {
        use decoder::Int8Span as S;
        let (c, f) = (self.config.n_embd, self.config.inner());
        // Conv1D weights are stored `[in, out]`.
        let conv = |k: usize, rows: usize| S { first: k, last: k, rows, transposed: true };
        let mut spans = Vec::new();
        for lx in &self.idx.layers {
            spans.extend([conv(lx.attn_w, 3 * c), conv(lx.aproj_w, c), conv(lx.fc_w, f), conv(lx.mproj_w, c)]);
        }
        spans.push(S::linear(self.idx.wte, self.idx.wte, self.config.vocab_size));
        spans
    }
    fn int8_weights(&mut self) -> Option<&mut decoder::Int8Weights> {
        Some(&mut self.int8)
    }
    fn max_positions(&self) -> Option<usize> {
        Some(self.config.n_positions)
    }

    fn decode<'w>(
        &self,
        cache: &mut KvCache,
        ws: &'w mut Gpt2DecodeWorkspace,
        input_ids: &[u32],
        rows: StepRows<'_>,
    ) -> Result<&'w [f32], Gpt2Error> {
        let _prof = finetune_engine::profile::scope("gpt2.forward_cached");
        let cfg = &self.config;
        let (c, f, h, v) = (cfg.n_embd, cfg.inner(), cfg.n_head, cfg.vocab_size);
        let step = decoder::begin_step(cache, &mut ws.buf, c, cfg.kv_dims(), h, v, input_ids, rows)?;
        let (bsz, n_new) = (step.attn.batch, step.attn.n_new);
        if step.longest > cfg.n_positions {
            return Err(Gpt2Error::Batch(format!(
                "{} tokens per row exceed n_positions {}",
                step.longest, cfg.n_positions
            )));
        }
        let (n, eps) = (bsz * n_new, cfg.layer_norm_epsilon);
        let st = &self.store;
        let s = |k: usize| st.get(k);
        let (wte, wpe) = (s(self.idx.wte), s(self.idx.wpe));
        for ((o, &id), &q) in ws.buf.x[..n * c].chunks_exact_mut(c).zip(input_ids).zip(&ws.buf.pos) {
            let (wr, pr) = (&wte[id as usize * c..][..c], &wpe[q as usize * c..][..c]);
            for k in 0..c {
                o[k] = wr[k] + pr[k];
            }
        }

        // A Conv1D layer from its int8 copy when the model has one.
        let conv = |k: usize, xq: &mut Q8Input, out: &mut [f32], inp: &[f32], b: usize, (c_in, c_out)| {
            if !decoder::int8_linear((&self.int8, st, k), xq, out, inp, Some(s(b)), n, c_out)? {
                conv1d_forward(out, inp, s(k), s(b), n, c_in, c_out);
            }
            Ok::<(), ModelError>(())
        };
        for (li, lx) in self.idx.layers.iter().enumerate() {
            let x = &mut ws.buf.x[..n * c];
            layernorm::forward(&mut ws.ln, &mut ws.mean, &mut ws.rstd, x, s(lx.ln1_w), s(lx.ln1_b), n, c, eps);
            conv(lx.attn_w, &mut ws.buf.xq, &mut ws.qkv, &ws.ln, lx.attn_b, (c, 3 * c))?;
            let (kc, vc) = (&mut step.k[li], &mut step.v[li]);
            step.attn.append(kc, vc, &ws.qkv, 3 * c, c, 2 * c);
            step.attn.attend(kc, vc, &ws.qkv, 3 * c, &mut ws.buf.scores, &mut ws.buf.heads_out, &mut ws.buf.ctx);
            conv(lx.aproj_w, &mut ws.buf.xq, &mut ws.buf.tmp, &ws.buf.ctx, lx.aproj_b, (c, c))?;
            let x = &mut ws.buf.x[..n * c];
            residual::add_assign(x, &ws.buf.tmp[..n * c]);
            layernorm::forward(&mut ws.ln, &mut ws.mean, &mut ws.rstd, x, s(lx.ln2_w), s(lx.ln2_b), n, c, eps);
            conv(lx.fc_w, &mut ws.buf.xq, &mut ws.fc, &ws.ln, lx.fc_b, (c, f))?;
            gelu_tanh::forward(&mut ws.act[..n * f], &ws.fc[..n * f]);
            conv(lx.mproj_w, &mut ws.buf.xq, &mut ws.buf.tmp, &ws.act, lx.mproj_b, (f, c))?;
            residual::add_assign(x, &ws.buf.tmp[..n * c]);
        }
        decoder::advance(cache, rows, n_new);
        decoder::last_rows(&mut ws.buf.tmp, &ws.buf.x, bsz, n_new, c);
        let (w, bb) = (s(self.idx.lnf_w), s(self.idx.lnf_b));
        layernorm::forward(&mut ws.buf.last, &mut ws.mean, &mut ws.rstd, &ws.buf.tmp[..bsz * c], w, bb, bsz, c, eps);
        let logits = &mut ws.buf.logits[..bsz * v];
        decoder::decode_linear(
            (&self.int8, st, self.idx.wte),
            &mut ws.buf.xq,
            logits,
            &ws.buf.last,
            wte,
            None,
            bsz,
            (c, v),
        )?;
        Ok(&ws.buf.logits[..bsz * v])
    }
}
