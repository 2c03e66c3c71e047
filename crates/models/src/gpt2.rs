//! GPT-2 for causal-LM fine-tuning on the engine's kernels: `transformers.GPT2LMHeadModel`.
//!
//! token + learned position embeddings → N pre-LayerNorm blocks (ln_1 → c_attn (fused q/k/v) → causal
//! multi-head attention → c_proj → residual; ln_2 → c_fc → GELU (tanh approximation, `gelu_new`) → c_proj →
//! residual) → ln_f → LM head tied to the token embedding. GPT-2's `Conv1D` stores weights `[in, out]`
//! (the transpose of `nn.Linear`), and they are used in that layout without copies.
//!
//! Same conventions as [`crate::llama`]: flat parameter/gradient/AdamW buffers by Hugging Face name,
//! per-parameter `requires_grad`, a [`Workspace`] per (batch, sequence) shape, the loss of transformers'
//! `ForCausalLMLoss` through the chunked fused LM-head cross-entropy.
//!
//! Not supported: dropout (training runs as `model.eval()` would, i.e. without dropout, so configs should
//! set `resid_pdrop`/`embd_pdrop`/`attn_pdrop` to 0 for exact parity in training), `scale_attn_weights =
//! false`, `scale_attn_by_inverse_layer_idx`, `reorder_and_upcast_attn` (the last only changes rounding),
//! activations other than `gelu_new`/`gelu_pytorch_tanh`.
//!
//! LoRA on the Conv1D layers ([`Gpt2LMHeadModel::add_lora`], PEFT adapter files): see [`crate::lora`].
//!
//! Packed rows: with `Batch::position_ids` a row may hold several sequences (a new one wherever the position is
//! 0), each attending only to itself and reading the learned position embedding at its own positions.
//! Right padding past `n_positions` (batches padded to a round length) reads the last position's embedding: it
//! is masked and takes no loss, so no real token or gradient sees it.

use std::collections::BTreeMap;

use finetune_engine::kernels::causal_attention::{self, Shape};
use finetune_engine::kernels::cross_entropy::IGNORE_INDEX;
use finetune_engine::kernels::linear_cross_entropy::{self as lce, Scratch};
use finetune_engine::kernels::{adamw, clip_grad, gelu_tanh, layernorm, residual};
use finetune_engine::matmul::matmul;
use finetune_engine::{StateDict, Tensor};
use serde::Deserialize;

pub use crate::llama::{Batch, ParamInfo};
use crate::llama::{CachedAttn, KvCache};
use crate::lora::{self, LoraConfig, LoraError, LoraWorkspace};

#[derive(Debug, thiserror::Error)]
pub enum Gpt2Error {
    #[error("invalid config: {0}")]
    Config(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("invalid batch: {0}")]
    Batch(String),
    #[error(transparent)]
    Lora(#[from] LoraError),
}

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

fn layout(cfg: &Gpt2Config) -> (Vec<ParamInfo>, Idx) {
    let (c, f) = (cfg.n_embd, cfg.inner());
    let mut infos: Vec<ParamInfo> = Vec::new();
    let mut total = 0usize;
    let mut add = |name: String, shape: Vec<usize>| -> usize {
        // Hugging Face Trainer: no decay for biases and LayerNorm (ln_1, ln_2, ln_f) parameters.
        let decay = !(name.ends_with("bias") || name.contains(".ln_"));
        let offset = total;
        total += shape.iter().product::<usize>();
        infos.push(ParamInfo { name, offset, shape, decay, requires_grad: true });
        infos.len() - 1
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
    (infos, Idx { wte, wpe, layers, lnf_w, lnf_b })
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

const HEAD_CHUNK_FLOATS: usize = 1 << 23;

/// Every activation and activation-gradient buffer for one (batch, seq) shape, allocated once and reused.
pub struct Workspace {
    pub batch: usize,
    pub seq: usize,
    ids: Vec<u32>,
    /// Position of each token (0..T per row, or the batch's `position_ids`).
    pos: Vec<u32>,
    /// Packed-sequence label of each token; used when `packed`.
    seg: Vec<u32>,
    packed: bool,
    mask_add: Vec<f32>,
    targets: Vec<i64>,
    emb: Vec<f32>,
    layers: Vec<LayerActs>,
    lnf_mean: Vec<f32>,
    lnf_rstd: Vec<f32>,
    hidden: Vec<f32>,
    /// Output of the last [`Gpt2LMHeadModel::logits`] call.
    pub logits: Vec<f32>,
    head: Scratch,
    dx: Vec<f32>,
    dln: Vec<f32>,
    dact: Vec<f32>,
    dctx: Vec<f32>,
    dqkv: Vec<f32>,
    dscores: Vec<f32>,
    dhidden: Vec<f32>,
    /// LoRA scratch, sized on the first pass with adapters.
    lora: LoraWorkspace,
}

impl Workspace {
    pub fn new(cfg: &Gpt2Config, batch: usize, seq: usize) -> Self {
        Self::with_head_chunk(cfg, batch, seq, Scratch::rows_for_budget(HEAD_CHUNK_FLOATS, cfg.vocab_size))
    }

    pub fn with_head_chunk(cfg: &Gpt2Config, batch: usize, seq: usize, chunk_rows: usize) -> Self {
        let (c, f, h) = (cfg.n_embd, cfg.inner(), cfg.n_head);
        let n = batch * seq;
        let z = |k: usize| vec![0.0f32; k];
        let probs = batch * h * seq * seq;
        Workspace {
            batch,
            seq,
            ids: vec![0; n],
            pos: vec![0; n],
            seg: vec![0; n],
            packed: false,
            mask_add: z(n),
            targets: vec![IGNORE_INDEX; n],
            emb: z(n * c),
            layers: (0..cfg.n_layer)
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
            hidden: z(n * c),
            logits: Vec::new(),
            head: Scratch::new(chunk_rows.min(n.max(1)), c, cfg.vocab_size),
            dx: z(n * c),
            dln: z(n * c),
            dact: z(n * f),
            dctx: z(n * c),
            dqkv: z(n * 3 * c),
            dscores: z(probs),
            dhidden: z(n * c),
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
    infos: Vec<ParamInfo>,
    index: BTreeMap<String, usize>,
    idx: Idx,
    pub params: Vec<f32>,
    pub grads: Vec<f32>,
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
    step: u64,
    /// LoRA adapters, when [`add_lora`](Self::add_lora) or [`load_adapter`](Self::load_adapter) added them.
    lora: Option<lora::Adapters>,
}

/// LoRA: adapters, merging and PEFT adapter files.
impl Gpt2LMHeadModel {
    fn lora_store(&mut self) -> lora::Store<'_> {
        lora::Store {
            infos: &mut self.infos,
            index: &mut self.index,
            bufs: [&mut self.params, &mut self.grads, &mut self.exp_avg, &mut self.exp_avg_sq],
        }
    }

    fn lora_forward(
        &self,
        lw: &mut LoraWorkspace,
        li: usize,
        mods: std::ops::Range<usize>,
        y: &mut [f32],
        x: &[f32],
        n: usize,
    ) {
        if let Some(l) = &self.lora {
            l.forward(lw, &self.infos, &self.params, li, mods, y, x, n);
        }
    }

    /// Adds PEFT LoRA adapters (modules `attn.c_attn`, `attn.c_proj`, `mlp.c_fc`, `mlp.c_proj`; PEFT's
    /// `"c_proj"` selects both projections) and freezes every base parameter; see
    /// [`LlamaForCausalLM::add_lora`](crate::llama::LlamaForCausalLM::add_lora). As PEFT does for `Conv1D`
    /// layers, `fan_in_fan_out` is set to true (the base weights are `[in, out]`; the adapters keep
    /// `lora_A [r, in]`, `lora_B [out, r]`).
    pub fn add_lora(&mut self, cfg: &LoraConfig, seed: u64) -> Result<(), Gpt2Error> {
        if self.lora.is_some() {
            return Err(Gpt2Error::Config(
                "the model already has LoRA adapters (merge_lora or unload_lora first)".into(),
            ));
        }
        let cfg = LoraConfig { fan_in_fan_out: true, ..cfg.clone() };
        let (c, f) = (self.config.n_embd, self.config.inner());
        let md = |path, c_in, c_out| lora::Module { path, c_in, c_out, width: c_out, col: 0 };
        let modules =
            vec![md("attn.c_attn", c, 3 * c), md("attn.c_proj", c, c), md("mlp.c_fc", c, f), md("mlp.c_proj", f, c)];
        let prefixes: Vec<String> = (0..self.config.n_layer).map(|i| format!("transformer.h.{i}")).collect();
        self.lora = Some(lora::Adapters::add(&cfg, seed, modules, &prefixes, self.lora_store())?);
        Ok(())
    }

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

    /// Removes the adapters without merging; base parameters get back their `requires_grad`.
    pub fn unload_lora(&mut self) -> Option<LoraConfig> {
        let l = self.lora.take()?;
        Some(l.unload(self.lora_store()))
    }

    /// PEFT's `merge_and_unload`: `W += scale · (B · A)ᵀ` into the `[in, out]` Conv1D weights, then as
    /// [`unload_lora`](Self::unload_lora).
    pub fn merge_lora(&mut self) -> Result<(), Gpt2Error> {
        let l = self.lora.as_ref().ok_or_else(|| Gpt2Error::Config("the model has no LoRA adapters".into()))?;
        let layers = &self.idx.layers;
        let base = |li: usize, m: usize| {
            let x = layers[li];
            [x.attn_w, x.aproj_w, x.fc_w, x.mproj_w][m]
        };
        l.merge_into(&self.infos, &mut self.params, base);
        self.unload_lora();
        Ok(())
    }

    /// The adapter weights with PEFT's saved names (`base_model.model.transformer.h.0.attn.c_attn.lora_A.weight`).
    pub fn lora_state_dict(&self) -> StateDict {
        self.lora.as_ref().map(|l| l.state_dict(&self.infos, &self.params)).unwrap_or_default()
    }

    /// Saves `adapter_config.json` and `adapter_model.safetensors` as PEFT's `save_pretrained`.
    pub fn save_adapter(&self, dir: impl AsRef<std::path::Path>) -> Result<(), Gpt2Error> {
        let l = self.lora.as_ref().ok_or_else(|| Gpt2Error::Config("the model has no LoRA adapters to save".into()))?;
        Ok(l.save(dir.as_ref(), &self.infos, &self.params)?)
    }

    /// Adds adapters from a PEFT adapter directory and loads their weights (errors name the file and tensor and
    /// leave the model without adapters).
    pub fn load_adapter(&mut self, dir: impl AsRef<std::path::Path>) -> Result<(), Gpt2Error> {
        let dir = dir.as_ref();
        let (cfg, sd, path) = lora::read_adapter_dir(dir)?;
        self.add_lora(&cfg, 0).map_err(|e| match e {
            Gpt2Error::Lora(e) => Gpt2Error::Lora(lora::in_config_file(e, dir)),
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
}

impl Gpt2LMHeadModel {
    /// Loads parameters by Hugging Face name (also base-model checkpoints without the `transformer.` prefix,
    /// as the original GPT-2 releases are stored). A stored `lm_head.weight` is ignored (tied to wte).
    pub fn from_state_dict(config: Gpt2Config, sd: &StateDict) -> Result<Self, Gpt2Error> {
        config.validate()?;
        let (infos, idx) = layout(&config);
        let total = infos.last().map_or(0, |i| i.offset + i.len());
        let mut params = vec![0.0; total];
        for info in &infos {
            let found = sd.get(&info.name).or_else(|| info.name.strip_prefix("transformer.").and_then(|n| sd.get(n)));
            let t = found.ok_or_else(|| Gpt2Error::Checkpoint(format!("missing parameter {}", info.name)))?;
            if t.shape != info.shape || t.data.len() != info.len() {
                return Err(Gpt2Error::Checkpoint(format!(
                    "{}: shape {:?} does not match the config's {:?}",
                    info.name, t.shape, info.shape
                )));
            }
            params[info.offset..info.offset + info.len()].copy_from_slice(&t.data);
        }
        let index = infos.iter().enumerate().map(|(k, i)| (i.name.clone(), k)).collect();
        Ok(Gpt2LMHeadModel {
            config,
            infos,
            index,
            idx,
            params,
            grads: vec![0.0; total],
            exp_avg: vec![0.0; total],
            exp_avg_sq: vec![0.0; total],
            step: 0,
            lora: None,
        })
    }

    pub fn param_infos(&self) -> &[ParamInfo] {
        &self.infos
    }

    pub fn steps(&self) -> u64 {
        self.step
    }

    /// AdamW state over the flat parameter buffer: first and second moments and the step count (for
    /// checkpoints that resume exactly).
    pub fn optimizer_state(&self) -> (&[f32], &[f32], u64) {
        (&self.exp_avg, &self.exp_avg_sq, self.step)
    }

    /// Restores what [`optimizer_state`](Self::optimizer_state) returned.
    pub fn set_optimizer_state(&mut self, exp_avg: &[f32], exp_avg_sq: &[f32], step: u64) -> Result<(), Gpt2Error> {
        crate::llama::restore_moments(&mut self.exp_avg, &mut self.exp_avg_sq, exp_avg, exp_avg_sq)
            .map_err(Gpt2Error::Checkpoint)?;
        self.step = step;
        Ok(())
    }

    fn info(&self, name: &str) -> Option<&ParamInfo> {
        Some(&self.infos[*self.index.get(name)?])
    }

    pub fn param(&self, name: &str) -> Option<&[f32]> {
        let i = self.info(name)?;
        Some(&self.params[i.offset..i.offset + i.len()])
    }

    pub fn param_mut(&mut self, name: &str) -> Option<&mut [f32]> {
        let i = self.info(name)?.clone();
        Some(&mut self.params[i.offset..i.offset + i.len()])
    }

    pub fn grad(&self, name: &str) -> Option<&[f32]> {
        let i = self.info(name)?;
        Some(&self.grads[i.offset..i.offset + i.len()])
    }

    /// Freezes (`false`) or unfreezes a parameter: a frozen one gets no gradient and no AdamW update.
    pub fn set_requires_grad(&mut self, name: &str, requires_grad: bool) -> Result<(), Gpt2Error> {
        let k = *self.index.get(name).ok_or_else(|| Gpt2Error::Config(format!("no parameter named {name}")))?;
        self.infos[k].requires_grad = requires_grad;
        Ok(())
    }

    pub fn state_dict(&self) -> StateDict {
        self.infos
            .iter()
            .map(|i| (i.name.clone(), Tensor::new(i.shape.clone(), self.params[i.offset..i.offset + i.len()].to_vec())))
            .collect()
    }

    pub fn zero_grad(&mut self) {
        self.grads.fill(0.0);
    }

    fn check_batch(&self, ws: &Workspace, b: &Batch<'_>) -> Result<(), Gpt2Error> {
        let cfg = &self.config;
        let n = ws.batch * ws.seq;
        let bad = |m: String| Err(Gpt2Error::Batch(m));
        let sized = ws.layers.len() == cfg.n_layer
            && ws.emb.len() == n * cfg.n_embd
            && ws.layers.iter().all(|a| a.fc.len() == n * cfg.inner() && a.probs.len() == n * cfg.n_head * ws.seq);
        if !sized {
            return bad("the workspace was created for a different model configuration".into());
        }
        if b.input_ids.len() != n || b.attention_mask.len() != n {
            return bad(format!("expected {n} input ids and mask entries for a {}×{} workspace", ws.batch, ws.seq));
        }
        // Only real tokens need a learned position; padding past the table is clamped in `trunk`.
        let limit = cfg.n_positions;
        match b.position_ids {
            Some(pos) => {
                if pos.len() != n {
                    return bad(format!("expected {n} position_ids, one per token, got {}", pos.len()));
                }
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
        if let Some(&id) = b.input_ids.iter().find(|&&i| i as usize >= cfg.vocab_size) {
            return bad(format!("input id {id} out of range for vocab_size {}", cfg.vocab_size));
        }
        if b.attention_mask.iter().any(|&m| m > 1) {
            return bad("attention_mask entries must be 0 or 1".into());
        }
        if let Some(y) = b.labels {
            if y.len() != n {
                return bad(format!("expected {n} labels, one per token"));
            }
            if let Some(&l) = y.iter().find(|&&l| l != IGNORE_INDEX && (l < 0 || l as usize >= cfg.vocab_size)) {
                return bad(format!("label {l} is out of bounds for vocab_size {}", cfg.vocab_size));
            }
        }
        if let Some(z) = b.loss_normalizer {
            if !(z > 0.0 && z.is_finite()) {
                return bad(format!("loss_normalizer must be positive, got {z}"));
            }
        }
        Ok(())
    }

    fn range(&self, k: usize) -> std::ops::Range<usize> {
        let i = &self.infos[k];
        i.offset..i.offset + i.len()
    }

    fn trunk(&self, ws: &mut Workspace, batch: &Batch<'_>) -> Result<(), Gpt2Error> {
        self.check_batch(ws, batch)?;
        let cfg = &self.config;
        let (bsz, t, c, f, h) = (ws.batch, ws.seq, cfg.n_embd, cfg.inner(), cfg.n_head);
        let n = bsz * t;
        let shape = Shape { batch: bsz, seq: t, heads: h, kv_heads: h, head_dim: c / h };
        let p = &self.params;
        let s = |k: usize| &p[self.range(k)];
        let eps = cfg.layer_norm_epsilon;
        if let Some(l) = &self.lora {
            l.prepare(&mut ws.lora, n);
        }

        ws.ids.copy_from_slice(batch.input_ids);
        let last_pos = (cfg.n_positions as u32).saturating_sub(1);
        match batch.position_ids {
            Some(pos) => {
                // A packed sequence starts at each position 0 (and at each row start).
                ws.packed = true;
                let mut k = 0u32;
                for (i, ((sg, q), &p)) in ws.seg.iter_mut().zip(ws.pos.iter_mut()).zip(pos).enumerate() {
                    if p == 0 || i % t == 0 {
                        k += 1;
                    }
                    *sg = k;
                    *q = p.min(last_pos);
                }
            }
            None => {
                // Positions 0..T regardless of padding, as transformers without position_ids.
                for (i, q) in ws.pos.iter_mut().enumerate() {
                    *q = ((i % t) as u32).min(last_pos);
                }
                ws.packed = false;
            }
        }
        for (m, &a) in ws.mask_add.iter_mut().zip(batch.attention_mask) {
            *m = if a == 0 { f32::MIN } else { 0.0 };
        }
        let (wte, wpe) = (s(self.idx.wte), s(self.idx.wpe));
        for ((o, &id), &q) in ws.emb.chunks_exact_mut(c).zip(&ws.ids).zip(&ws.pos) {
            let (wr, pr) = (&wte[id as usize * c..][..c], &wpe[q as usize * c..][..c]);
            for k in 0..c {
                o[k] = wr[k] + pr[k];
            }
        }
        for (li, lx) in self.idx.layers.iter().enumerate() {
            let (prev, rest) = ws.layers.split_at_mut(li);
            let inp: &[f32] = if li == 0 { &ws.emb } else { &prev[li - 1].out };
            let a = &mut rest[0];
            layernorm::forward(&mut a.ln1, &mut a.ln1_mean, &mut a.ln1_rstd, inp, s(lx.ln1_w), s(lx.ln1_b), n, c, eps);
            conv1d_forward(&mut a.qkv, &a.ln1, s(lx.attn_w), s(lx.attn_b), n, c, 3 * c);
            self.lora_forward(&mut ws.lora, li, 0..1, &mut a.qkv, &a.ln1, n);
            match ws.packed.then_some(&ws.seg) {
                Some(seg) => {
                    causal_attention::forward_segmented(&mut a.ctx, &mut a.probs, &a.qkv, &ws.mask_add, seg, shape)
                }
                None => causal_attention::forward(&mut a.ctx, &mut a.probs, &a.qkv, &ws.mask_add, shape),
            }
            conv1d_forward(&mut a.mid, &a.ctx, s(lx.aproj_w), s(lx.aproj_b), n, c, c);
            self.lora_forward(&mut ws.lora, li, 1..2, &mut a.mid, &a.ctx, n);
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
            self.lora_forward(&mut ws.lora, li, 2..3, &mut a.fc, &a.ln2, n);
            gelu_tanh::forward(&mut a.act, &a.fc);
            conv1d_forward(&mut a.out, &a.act, s(lx.mproj_w), s(lx.mproj_b), n, f, c);
            self.lora_forward(&mut ws.lora, li, 3..4, &mut a.out, &a.act, n);
            residual::add_assign(&mut a.out, &a.mid);
        }
        let last: &[f32] = match ws.layers.last() {
            Some(a) => &a.out,
            None => &ws.emb,
        };
        let (w, b) = (s(self.idx.lnf_w), s(self.idx.lnf_b));
        layernorm::forward(&mut ws.hidden, &mut ws.lnf_mean, &mut ws.lnf_rstd, last, w, b, n, c, eps);
        Ok(())
    }

    fn prepare_targets(ws: &mut Workspace, batch: &Batch<'_>, labels: &[i64]) -> f32 {
        let t = ws.seq;
        for (row_t, row_y) in ws.targets.chunks_exact_mut(t).zip(labels.chunks_exact(t)) {
            row_t[..t - 1].copy_from_slice(&row_y[1..]);
            row_t[t - 1] = IGNORE_INDEX;
        }
        batch.loss_normalizer.unwrap_or(lce::count_targets(&ws.targets) as f32)
    }

    /// The causal-LM loss of `batch` (which must have labels), without gradients.
    pub fn forward(&self, ws: &mut Workspace, batch: &Batch<'_>) -> Result<f32, Gpt2Error> {
        let labels = batch.labels.ok_or_else(|| Gpt2Error::Batch("the loss needs labels".into()))?;
        ws.lora.train_seed = None;
        self.trunk(ws, batch)?;
        let norm = Self::prepare_targets(ws, batch, labels);
        let (n, c, v) = (ws.batch * ws.seq, self.config.n_embd, self.config.vocab_size);
        let head = &self.params[self.range(self.idx.wte)];
        Ok(lce::forward_backward(&ws.hidden, head, &ws.targets, n, c, v, norm, None, &mut ws.head))
    }

    /// Logits `[batch, seq, vocab]`, or with `last_only` `[batch, vocab]` at each sequence's last real token.
    pub fn logits<'w>(
        &self,
        ws: &'w mut Workspace,
        batch: &Batch<'_>,
        last_only: bool,
    ) -> Result<&'w [f32], Gpt2Error> {
        ws.lora.train_seed = None;
        self.trunk(ws, batch)?;
        let (bsz, t, c, v) = (ws.batch, ws.seq, self.config.n_embd, self.config.vocab_size);
        let head = &self.params[self.range(self.idx.wte)];
        if last_only {
            let mut rows = vec![0.0f32; bsz * c];
            for b in 0..bsz {
                let last = batch.attention_mask[b * t..(b + 1) * t].iter().rposition(|&x| x == 1).unwrap_or(t - 1);
                rows[b * c..(b + 1) * c].copy_from_slice(&ws.hidden[(b * t + last) * c..(b * t + last + 1) * c]);
            }
            ws.logits.resize(bsz * v, 0.0);
            matmul(&mut ws.logits, &rows, head, bsz, c, v, false, true, false);
        } else {
            ws.logits.resize(bsz * t * v, 0.0);
            matmul(&mut ws.logits, &ws.hidden, head, bsz * t, c, v, false, true, false);
        }
        Ok(&ws.logits)
    }

    /// Forward and backward in one pass: returns the loss and adds its gradient to `self.grads` for every
    /// parameter that requires one.
    pub fn forward_backward(&mut self, ws: &mut Workspace, batch: &Batch<'_>) -> Result<f32, Gpt2Error> {
        let labels = batch.labels.ok_or_else(|| Gpt2Error::Batch("training needs labels".into()))?;
        // LoRA dropout masks: a fresh seed per training pass, reused by the backward.
        ws.lora.train_seed = self.lora.as_mut().and_then(|l| l.next_train_seed());
        self.trunk(ws, batch)?;
        let norm = Self::prepare_targets(ws, batch, labels);
        let cfg = &self.config;
        let (bsz, t, c, f, v, h) = (ws.batch, ws.seq, cfg.n_embd, cfg.inner(), cfg.vocab_size, cfg.n_head);
        let n = bsz * t;
        let shape = Shape { batch: bsz, seq: t, heads: h, kv_heads: h, head_dim: c / h };
        let Self { params: p, grads: g, infos, idx, lora, .. } = self;
        let lora = lora.as_ref();
        let rg = |k: usize| infos[k].requires_grad;
        let r = |k: usize| infos[k].offset..infos[k].offset + infos[k].len();
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

        let loss = {
            let grads = lce::Grads {
                dhidden: Some(&mut ws.dhidden),
                dweight: if rg(idx.wte) { Some(&mut g[r(idx.wte)]) } else { None },
            };
            lce::forward_backward(&ws.hidden, s(idx.wte), &ws.targets, n, c, v, norm, Some(grads), &mut ws.head)
        };
        let layernorm_back = |g: &mut [f32],
                              dinp: &mut [f32],
                              dout: &[f32],
                              inp: &[f32],
                              wk: usize,
                              bk: usize,
                              mean: &[f32],
                              rstd: &[f32],
                              acc: bool,
                              tmp: &mut Vec<f32>| {
            // The engine's LayerNorm backward always writes both parameter gradients and overwrites dinp: give
            // it scratch for frozen ones and add dinp by hand when accumulating.
            let (gw, gb) = pair(g, r(wk), r(bk), true, true);
            let (gw, gb) = (gw.expect("asked"), gb.expect("asked"));
            let (mut sw, mut sb) = (vec![0.0f32; c], vec![0.0f32; c]);
            let dw: &mut [f32] = if rg(wk) { gw } else { &mut sw };
            let db: &mut [f32] = if rg(bk) { gb } else { &mut sb };
            if acc {
                tmp.resize(n * c, 0.0);
                layernorm::backward(tmp, dw, db, dout, inp, s(wk), mean, rstd, n, c);
                residual::add_assign(&mut dinp[..n * c], tmp);
            } else {
                layernorm::backward(dinp, dw, db, dout, inp, s(wk), mean, rstd, n, c);
            }
        };
        let mut tmp = Vec::new();
        {
            let last: &[f32] = match ws.layers.last() {
                Some(a) => &a.out,
                None => &ws.emb,
            };
            let (mean, rstd) = (&ws.lnf_mean, &ws.lnf_rstd);
            layernorm_back(g, &mut ws.dx, &ws.dhidden, last, idx.lnf_w, idx.lnf_b, mean, rstd, false, &mut tmp);
        }
        for li in (0..idx.layers.len()).rev() {
            let lx = idx.layers[li];
            let (prev, rest) = ws.layers.split_at(li);
            let inp: &[f32] = if li == 0 { &ws.emb } else { &prev[li - 1].out };
            let a = &rest[0];
            let (gw, gb) = pair(g, r(lx.mproj_w), r(lx.mproj_b), rg(lx.mproj_w), rg(lx.mproj_b));
            conv1d_backward(&mut ws.dact, false, gw, gb, &ws.dx, &a.act, s(lx.mproj_w), n, f, c);
            if let Some(l) = lora {
                l.backward(&mut ws.lora, infos, p, g, li, 3..4, &mut ws.dact, &ws.dx, &a.act, n);
            }
            gelu_tanh::backward(&mut ws.dact[..n * f], &a.fc);
            let (gw, gb) = pair(g, r(lx.fc_w), r(lx.fc_b), rg(lx.fc_w), rg(lx.fc_b));
            conv1d_backward(&mut ws.dln, false, gw, gb, &ws.dact, &a.ln2, s(lx.fc_w), n, c, f);
            if let Some(l) = lora {
                l.backward(&mut ws.lora, infos, p, g, li, 2..3, &mut ws.dln, &ws.dact, &a.ln2, n);
            }
            layernorm_back(
                g,
                &mut ws.dx,
                &ws.dln,
                &a.mid,
                lx.ln2_w,
                lx.ln2_b,
                &a.ln2_mean,
                &a.ln2_rstd,
                true,
                &mut tmp,
            );
            let (gw, gb) = pair(g, r(lx.aproj_w), r(lx.aproj_b), rg(lx.aproj_w), rg(lx.aproj_b));
            conv1d_backward(&mut ws.dctx, false, gw, gb, &ws.dx, &a.ctx, s(lx.aproj_w), n, c, c);
            if let Some(l) = lora {
                l.backward(&mut ws.lora, infos, p, g, li, 1..2, &mut ws.dctx, &ws.dx, &a.ctx, n);
            }
            match ws.packed.then_some(&ws.seg) {
                Some(seg) => causal_attention::backward_segmented(
                    &mut ws.dqkv,
                    &mut ws.dscores,
                    &ws.dctx,
                    &a.qkv,
                    &a.probs,
                    seg,
                    shape,
                ),
                None => causal_attention::backward(&mut ws.dqkv, &mut ws.dscores, &ws.dctx, &a.qkv, &a.probs, shape),
            }
            let (gw, gb) = pair(g, r(lx.attn_w), r(lx.attn_b), rg(lx.attn_w), rg(lx.attn_b));
            conv1d_backward(&mut ws.dln, false, gw, gb, &ws.dqkv, &a.ln1, s(lx.attn_w), n, c, 3 * c);
            if let Some(l) = lora {
                l.backward(&mut ws.lora, infos, p, g, li, 0..1, &mut ws.dln, &ws.dqkv, &a.ln1, n);
            }
            layernorm_back(g, &mut ws.dx, &ws.dln, inp, lx.ln1_w, lx.ln1_b, &a.ln1_mean, &a.ln1_rstd, true, &mut tmp);
        }
        // Embeddings: token and position rows repeat, so the scatter is serial.
        for (k, ids_pos) in [(idx.wte, true), (idx.wpe, false)] {
            if !rg(k) {
                continue;
            }
            let table = &mut g[r(k)];
            for (i, dx) in ws.dx.chunks_exact(c).enumerate() {
                let row = if ids_pos { ws.ids[i] } else { ws.pos[i] } as usize;
                for (tv, v) in table[row * c..(row + 1) * c].iter_mut().zip(dx) {
                    *tv += v;
                }
            }
        }
        Ok(loss)
    }

    /// `torch.nn.utils.clip_grad_norm_` over the gradients of trainable parameters.
    pub fn clip_grad_norm(&mut self, max_norm: f32) -> f32 {
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
        clip_grad::clip(&mut parts, max_norm)
    }

    /// One AdamW step over every trainable parameter, without weight decay for biases and LayerNorms.
    pub fn adamw_step(&mut self, hp: adamw::Hyper) {
        self.step += 1;
        let step = self.step;
        let Self { infos, params, grads, exp_avg, exp_avg_sq, .. } = self;
        for i in infos.iter().filter(|i| i.requires_grad) {
            let r = i.offset..i.offset + i.len();
            let h = adamw::Hyper { weight_decay: if i.decay { hp.weight_decay } else { 0.0 }, ..hp };
            adamw::update(
                &mut params[r.clone()],
                &grads[r.clone()],
                &mut exp_avg[r.clone()],
                &mut exp_avg_sq[r],
                h,
                step,
            );
        }
    }
}

/// Activations of [`Gpt2LMHeadModel::forward_cached`] for up to `max_new` new tokens per row and `max_len`
/// tokens in all, allocated once so that decode steps allocate nothing.
pub struct Gpt2DecodeWorkspace {
    pub batch: usize,
    pub max_new: usize,
    pub max_len: usize,
    pos: Vec<u32>,
    x: Vec<f32>,
    ln: Vec<f32>,
    mean: Vec<f32>,
    rstd: Vec<f32>,
    qkv: Vec<f32>,
    heads_out: Vec<f32>,
    ctx: Vec<f32>,
    tmp: Vec<f32>,
    fc: Vec<f32>,
    act: Vec<f32>,
    scores: Vec<f32>,
    last: Vec<f32>,
    /// `[batch, vocab]` logits of the last new token of each row.
    pub logits: Vec<f32>,
}

impl Gpt2DecodeWorkspace {
    pub fn new(cfg: &Gpt2Config, batch: usize, max_new: usize, max_len: usize) -> Self {
        let (c, f, h) = (cfg.n_embd, cfg.inner(), cfg.n_head);
        let n = batch * max_new;
        let z = |k: usize| vec![0.0f32; k];
        Gpt2DecodeWorkspace {
            batch,
            max_new,
            max_len,
            pos: vec![0; n],
            x: z(n * c),
            ln: z(n * c),
            mean: z(n.max(batch)),
            rstd: z(n.max(batch)),
            qkv: z(n * 3 * c),
            heads_out: z(n * c),
            ctx: z(n * c),
            tmp: z(n * c),
            fc: z(n * f),
            act: z(n * f),
            scores: z(batch * h * max_new * max_len),
            last: z(batch * c),
            logits: z(batch * cfg.vocab_size),
        }
    }
}

impl Gpt2LMHeadModel {
    /// A KV cache for this model: `batch` rows of up to `max_len` tokens.
    pub fn kv_cache(&self, batch: usize, max_len: usize) -> KvCache {
        let cfg = &self.config;
        KvCache::with_dims(cfg.n_layer, batch, cfg.n_head, cfg.n_embd / cfg.n_head, max_len)
    }

    /// As [`LlamaForCausalLM::forward_cached`](crate::llama::LlamaForCausalLM::forward_cached): runs
    /// `input_ids` (`[batch, n_new]`) on top of the cached tokens and returns the `[batch, vocab]` logits of each
    /// row's last new token. Positions are `cumsum(attention_mask) − 1` (1 on padding), as transformers'
    /// `generate`.
    pub fn forward_cached<'w>(
        &self,
        cache: &mut KvCache,
        ws: &'w mut Gpt2DecodeWorkspace,
        input_ids: &[u32],
        attention_mask: &[u32],
    ) -> Result<&'w [f32], Gpt2Error> {
        let _prof = finetune_engine::profile::scope("gpt2.forward_cached");
        let cfg = &self.config;
        let (bsz, c, f, h, v) = (cache.batch, cfg.n_embd, cfg.inner(), cfg.n_head, cfg.vocab_size);
        let (d, past, max_len) = (c / h, cache.len, cache.max_len);
        let bad = |m: String| Err(Gpt2Error::Batch(m));
        if cache.k.len() != cfg.n_layer || cache.kv_heads != h || cache.head_dim != d {
            return bad("the KV cache was created for a different model configuration".into());
        }
        if ws.batch != bsz || ws.max_len < max_len || ws.x.len() != ws.batch * ws.max_new * c {
            return bad(format!(
                "the decode workspace ({} rows, {} tokens) does not fit the cache ({bsz} rows, {max_len} tokens)",
                ws.batch, ws.max_len
            ));
        }
        if bsz == 0 || input_ids.is_empty() || !input_ids.len().is_multiple_of(bsz) {
            return bad(format!("expected batch × new tokens input ids for {bsz} rows, got {}", input_ids.len()));
        }
        let n_new = input_ids.len() / bsz;
        let total = past + n_new;
        if n_new > ws.max_new {
            return bad(format!("{n_new} new tokens per row exceed the workspace's {}", ws.max_new));
        }
        if total > max_len || total > cfg.n_positions {
            return bad(format!("{total} tokens per row exceed the KV cache's max_len {max_len} or n_positions"));
        }
        if attention_mask.len() != bsz * total {
            return bad(format!("expected an attention_mask of {bsz} × {total} entries, got {}", attention_mask.len()));
        }
        if attention_mask.iter().any(|&m| m > 1) {
            return bad("attention_mask entries must be 0 or 1".into());
        }
        if let Some(&id) = input_ids.iter().find(|&&i| i as usize >= v) {
            return bad(format!("input id {id} out of range for vocab_size {v}"));
        }
        let (n, eps) = (bsz * n_new, cfg.layer_norm_epsilon);
        let p = &self.params;
        let s = |k: usize| &p[self.range(k)];
        for b in 0..bsz {
            let m = &attention_mask[b * total..(b + 1) * total];
            let mut cum: u32 = m[..past].iter().sum();
            for i in 0..n_new {
                cum += m[past + i];
                ws.pos[b * n_new + i] = if m[past + i] == 0 { 1 } else { cum - 1 };
            }
        }
        let (wte, wpe) = (s(self.idx.wte), s(self.idx.wpe));
        for ((o, &id), &q) in ws.x[..n * c].chunks_exact_mut(c).zip(input_ids).zip(&ws.pos) {
            let (wr, pr) = (&wte[id as usize * c..][..c], &wpe[q as usize * c..][..c]);
            for k in 0..c {
                o[k] = wr[k] + pr[k];
            }
        }
        let dims =
            CachedAttn { batch: bsz, heads: h, kv_heads: h, head_dim: d, n_new, past, max_len, max_new: ws.max_new };
        for (li, lx) in self.idx.layers.iter().enumerate() {
            let x = &mut ws.x[..n * c];
            layernorm::forward(&mut ws.ln, &mut ws.mean, &mut ws.rstd, x, s(lx.ln1_w), s(lx.ln1_b), n, c, eps);
            conv1d_forward(&mut ws.qkv, &ws.ln, s(lx.attn_w), s(lx.attn_b), n, c, 3 * c);
            let (kc, vc) = (&mut cache.k[li], &mut cache.v[li]);
            dims.append(kc, vc, &ws.qkv, 3 * c, c, 2 * c);
            dims.attend(kc, vc, &ws.qkv, 3 * c, attention_mask, &mut ws.scores, &mut ws.heads_out, &mut ws.ctx);
            conv1d_forward(&mut ws.tmp, &ws.ctx, s(lx.aproj_w), s(lx.aproj_b), n, c, c);
            residual::add_assign(x, &ws.tmp[..n * c]);
            layernorm::forward(&mut ws.ln, &mut ws.mean, &mut ws.rstd, x, s(lx.ln2_w), s(lx.ln2_b), n, c, eps);
            conv1d_forward(&mut ws.fc, &ws.ln, s(lx.fc_w), s(lx.fc_b), n, c, f);
            gelu_tanh::forward(&mut ws.act[..n * f], &ws.fc[..n * f]);
            conv1d_forward(&mut ws.tmp, &ws.act, s(lx.mproj_w), s(lx.mproj_b), n, f, c);
            residual::add_assign(x, &ws.tmp[..n * c]);
        }
        cache.len = total;
        for b in 0..bsz {
            let r = b * n_new + n_new - 1;
            ws.tmp[b * c..(b + 1) * c].copy_from_slice(&ws.x[r * c..(r + 1) * c]);
        }
        let (w, bb) = (s(self.idx.lnf_w), s(self.idx.lnf_b));
        layernorm::forward(&mut ws.last, &mut ws.mean, &mut ws.rstd, &ws.tmp[..bsz * c], w, bb, bsz, c, eps);
        matmul(&mut ws.logits, &ws.last, wte, bsz, c, v, false, true, false);
        Ok(&ws.logits)
    }
}
