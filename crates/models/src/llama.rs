//! Llama-family decoders for causal-LM fine-tuning on the engine's kernels: `transformers.LlamaForCausalLM`
//! (Llama 2/3, SmolLM2), `MistralForCausalLM` and `Qwen2ForCausalLM` (q/k/v biases).
//!
//! token embedding → N pre-norm decoder layers (RMSNorm → fused q/k/v projection → rotary embedding → causal
//! grouped-query attention → o_proj → residual; RMSNorm → fused gate/up projection → SwiGLU → down_proj →
//! residual) → final RMSNorm → LM head (tied to the embedding or separate).
//!
//! The loss is transformers' `ForCausalLMLoss`: position t predicts `labels[t + 1]`, −100 is ignored, and the
//! sum is divided by the number of kept targets (or by a caller-given token count, for token-normalised
//! gradient accumulation). The LM head and the loss run fused in row chunks, so `[tokens × vocab]` logits are
//! never held for training; [`LlamaForCausalLM::logits`] computes them separately for evaluation and generation.
//!
//! Parameters, gradients and AdamW moments live in the model's [`ParamStore`] (flat buffers addressed by Hugging
//! Face names), activations in a [`Workspace`] allocated once per (batch, sequence) shape, the forward is
//! straight-line code and the backward calls each kernel's backward in reverse. A frozen parameter
//! (`store.set_requires_grad`) gets no weight-gradient matmul at all and is skipped by AdamW.
//!
//! Packed rows: with `Batch::position_ids` a row may hold several sequences (a new one wherever the position is
//! 0), each attending only to itself. Inference: [`Architecture::decode`](crate::decoder::Architecture::decode) runs prefill and decode
//! steps over a [`KvCache`] (used by [`crate::generate`]).
//!
//! Rotary embedding: the default rope type and Llama 3.1's `llama3` frequency scaling. Not supported (rejected
//! with a clear error): other rope scaling types (linear, dynamic, yarn, longrope), partial rotary factors,
//! sliding-window attention on sequences longer than the window, attention dropout, MLP biases and activations
//! other than SiLU.
//!
//! LoRA (`store.add_lora`, PEFT adapter files) on the projections listed by this file's LoRA targets: see
//! [`crate::params`] and [`crate::lora`].

use finetune_engine::bf16::linear as bf16lin;
use finetune_engine::kernels::causal_attention::Shape;
use finetune_engine::kernels::linear_cross_entropy::{self as lce, Scratch};
use finetune_engine::kernels::{residual, rmsnorm, rope, swiglu};
use finetune_engine::StateDict;
use serde::Deserialize;

use crate::acts;
use crate::decoder::{
    self, bias_grad, input_grad, weight_grad, Architecture, DecodeBuffers, Geometry, Head, KvDims, LmHead, StepRows,
};
pub use crate::decoder::{Batch, KvCache};
use crate::error::ModelError;
use crate::lora::{LoraWorkspace, Module};
pub use crate::params::ParamInfo;
use crate::params::{Layout, LoraTargets, ParamStore, Parts};

/// This architecture's errors: the crate's [`ModelError`].
pub type LlamaError = ModelError;

pub use crate::decoder::MAX_HEAD_DIM;

fn default_eps() -> f32 {
    1e-6
}
fn default_act() -> String {
    "silu".into()
}
fn default_init() -> f32 {
    0.02
}

/// The fields of a Hugging Face Llama / Mistral / Qwen2 `config.json` this model uses.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct LlamaConfig {
    /// Sizes shared with the other decoders; `cfg.hidden_size` reads them through `Deref`.
    #[serde(flatten)]
    pub geometry: Geometry,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f32,
    /// transformers 4.x keeps θ at the top level; 5.x in `rope_parameters`.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Llama: biases on q, k, v and o projections.
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub attention_dropout: f32,
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Qwen2: the sliding window applies only when this is set.
    #[serde(default)]
    pub use_sliding_window: Option<bool>,
    #[serde(default = "default_init")]
    pub initializer_range: f32,
}

fn unsupported_rope(t: &str) -> LlamaError {
    LlamaError::Config(format!(
        "rope scaling {t:?} is not supported (only the default rotary embedding and \"llama3\")"
    ))
}

impl LlamaConfig {
    pub fn from_json(text: &str) -> Result<Self, LlamaError> {
        let c: LlamaConfig = serde_json::from_str(text).map_err(|e| LlamaError::Config(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Qwen2 always has q/k/v biases; Llama when `attention_bias`.
    pub fn qkv_bias(&self) -> bool {
        self.attention_bias || self.model_type.as_deref() == Some("qwen2")
    }

    /// Llama's `attention_bias` also puts a bias on o_proj; Qwen2's o_proj has none.
    pub fn o_bias(&self) -> bool {
        self.attention_bias
    }

    /// The sliding-window size when sliding-window attention is active.
    pub fn active_sliding_window(&self) -> Option<usize> {
        match self.model_type.as_deref() {
            Some("qwen2") if self.use_sliding_window != Some(true) => None,
            _ => self.sliding_window,
        }
    }

    /// θ of the rotary embedding (default 10000).
    pub fn rope_theta(&self) -> f64 {
        self.rope_theta
            .or_else(|| self.rope_parameters.as_ref().and_then(|p| p.get("rope_theta")).and_then(|v| v.as_f64()))
            .unwrap_or(10000.0)
    }

    /// The rope parameters dict that selects a non-default rope type, if any (`rope_scaling` in transformers
    /// 4.x, `rope_parameters` in 5.x).
    fn rope_scaling_params(&self) -> Option<&serde_json::Value> {
        let kind = |v: &serde_json::Value| {
            v.get("rope_type").or_else(|| v.get("type")).and_then(|t| t.as_str()).map(String::from)
        };
        [&self.rope_scaling, &self.rope_parameters]
            .into_iter()
            .flatten()
            .find(|v| kind(v).is_some_and(|t| t != "default"))
    }

    fn rope_type(&self) -> Option<String> {
        let v = self.rope_scaling_params()?;
        v.get("rope_type").or_else(|| v.get("type")).and_then(|t| t.as_str()).map(String::from)
    }

    fn rope_param(&self, key: &str) -> Result<f64, LlamaError> {
        self.rope_scaling_params()
            .and_then(|v| v.get(key))
            .and_then(|v| v.as_f64())
            .ok_or_else(|| LlamaError::Config(format!("rope scaling needs a numeric {key:?}")))
    }

    /// Inverse frequencies of the rotary embedding: the default ones, or with `llama3` scaling
    /// (transformers' `_compute_llama3_parameters`, same f32 operations: low frequencies divided by `factor`,
    /// high ones kept, a smooth interpolation between).
    pub fn rope_inv_freq(&self) -> Result<Vec<f32>, LlamaError> {
        let inv = rope::default_inv_freq(self.head_dim(), self.rope_theta());
        match self.rope_type().as_deref() {
            None => Ok(inv),
            Some("llama3") => {
                let factor = self.rope_param("factor")? as f32;
                let low = self.rope_param("low_freq_factor")? as f32;
                let high = self.rope_param("high_freq_factor")? as f32;
                let old = self.rope_param("original_max_position_embeddings")? as f32;
                let (low_wavelen, high_wavelen) = (old / low, old / high);
                Ok(inv
                    .iter()
                    .map(|&f| {
                        let wavelen = (1.0 / f) * std::f32::consts::TAU;
                        let scaled = if wavelen > low_wavelen { f / factor } else { f };
                        if wavelen < high_wavelen || wavelen > low_wavelen {
                            scaled
                        } else {
                            let smooth = ((1.0 / wavelen) * old - low) / (high - low);
                            (1.0 - smooth) * scaled / factor + smooth * scaled
                        }
                    })
                    .collect())
            }
            Some(t) => Err(unsupported_rope(t)),
        }
    }

    /// The `llama3` scaling as llama.cpp stores it: one divisor per frequency (`rope_freqs.weight`, the
    /// rotary angle is `pos · inv_freq / factor`), computed as `convert_hf_to_gguf.py` does (f32 frequencies, f64
    /// arithmetic) but with `original_max_position_embeddings` from the rope dict, where transformers reads it.
    /// None for the default rotary embedding.
    pub fn rope_freq_factors(&self) -> Result<Option<Vec<f32>>, LlamaError> {
        match self.rope_type().as_deref() {
            None => Ok(None),
            Some("llama3") => {
                let p = |k: &str| self.rope_param(k);
                let (factor, low, high, old) = (
                    p("factor")?,
                    p("low_freq_factor")?,
                    p("high_freq_factor")?,
                    p("original_max_position_embeddings")?,
                );
                let (low_wavelen, high_wavelen) = (old / low, old / high);
                let inv = rope::default_inv_freq(self.head_dim(), self.rope_theta());
                Ok(Some(
                    inv.iter()
                        .map(|&f| {
                            let wavelen = std::f64::consts::TAU / f64::from(f);
                            let r = if wavelen < high_wavelen {
                                1.0
                            } else if wavelen > low_wavelen {
                                factor
                            } else {
                                let smooth = (old / wavelen - low) / (high - low);
                                1.0 / ((1.0 - smooth) / factor + smooth)
                            };
                            r as f32
                        })
                        .collect(),
                ))
            }
            Some(t) => Err(unsupported_rope(t)),
        }
    }

    pub fn validate(&self) -> Result<(), LlamaError> {
        let err = |m: String| Err(LlamaError::Config(m));
        self.geometry.validate()?;
        let d = self.head_dim();
        if !d.is_multiple_of(2) {
            return err(format!("head_dim {d} must be even for the rotary embedding"));
        }
        if self.hidden_act != "silu" {
            return err(format!("hidden_act {:?} is not supported (only \"silu\")", self.hidden_act));
        }
        if self.mlp_bias {
            return err("mlp_bias is not supported".into());
        }
        if self.attention_dropout != 0.0 {
            return err("attention_dropout is not supported (must be 0)".into());
        }
        self.rope_inv_freq()?;
        let partial = [&self.rope_scaling, &self.rope_parameters]
            .into_iter()
            .flatten()
            .filter_map(|v| v.get("partial_rotary_factor").and_then(|x| x.as_f64()))
            .find(|&x| x != 1.0);
        if let Some(x) = partial {
            return err(format!("partial_rotary_factor {x} is not supported (only 1.0)"));
        }
        if let Some(mt) = self.model_type.as_deref() {
            if !matches!(mt, "llama" | "mistral" | "qwen2") {
                return err(format!("model_type {mt:?} is not a Llama-family decoder (llama, mistral, qwen2)"));
            }
        }
        Ok(())
    }
}

/// Parameter indices (into the info list) of one decoder layer. q, k, v weights are consecutive (one fused
/// `[(H + 2·KV)·d, C]` matrix), as are their biases and the gate and up weights (`[2F, C]`).
#[derive(Debug, Clone, Copy)]
struct LayerIdx {
    q_w: usize,
    k_w: usize,
    v_w: usize,
    qkv_b: Option<[usize; 3]>,
    o_w: usize,
    o_b: Option<usize>,
    gate_w: usize,
    up_w: usize,
    down_w: usize,
    ln1: usize,
    ln2: usize,
}

#[derive(Debug, Clone)]
struct Idx {
    embed: usize,
    layers: Vec<LayerIdx>,
    norm: usize,
    /// The LM head's parameter: `embed` when tied.
    head: usize,
}

fn layout(cfg: &LlamaConfig) -> (Layout, Idx) {
    let (c, f, h, kv, d) =
        (cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
    let mut l = Layout::default();
    // Hugging Face Trainer: no weight decay for biases and norm weights.
    let mut add = |name: String, shape: Vec<usize>| {
        let decay = !(name.ends_with("bias") || name.contains("norm"));
        l.add(name, shape, decay)
    };
    let embed = add("model.embed_tokens.weight".into(), vec![cfg.vocab_size, c]);
    let mut layers = Vec::new();
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let a = format!("{p}.self_attn");
        let q_w = add(format!("{a}.q_proj.weight"), vec![h * d, c]);
        let k_w = add(format!("{a}.k_proj.weight"), vec![kv * d, c]);
        let v_w = add(format!("{a}.v_proj.weight"), vec![kv * d, c]);
        let qkv_b = cfg.qkv_bias().then(|| {
            [
                add(format!("{a}.q_proj.bias"), vec![h * d]),
                add(format!("{a}.k_proj.bias"), vec![kv * d]),
                add(format!("{a}.v_proj.bias"), vec![kv * d]),
            ]
        });
        let o_w = add(format!("{a}.o_proj.weight"), vec![c, h * d]);
        let o_b = cfg.o_bias().then(|| add(format!("{a}.o_proj.bias"), vec![c]));
        let gate_w = add(format!("{p}.mlp.gate_proj.weight"), vec![f, c]);
        let up_w = add(format!("{p}.mlp.up_proj.weight"), vec![f, c]);
        let down_w = add(format!("{p}.mlp.down_proj.weight"), vec![c, f]);
        let ln1 = add(format!("{p}.input_layernorm.weight"), vec![c]);
        let ln2 = add(format!("{p}.post_attention_layernorm.weight"), vec![c]);
        layers.push(LayerIdx { q_w, k_w, v_w, qkv_b, o_w, o_b, gate_w, up_w, down_w, ln1, ln2 });
    }
    let norm = add("model.norm.weight".into(), vec![c]);
    let head = if cfg.tie_word_embeddings { embed } else { add("lm_head.weight".into(), vec![cfg.vocab_size, c]) };
    (l, Idx { embed, layers, norm, head })
}

/// The linears LoRA can target, in the order adapters are laid out in each layer. q/k/v and gate/up stay
/// fused: each adapter adds into its columns of the fused output.
fn lora_targets(cfg: &LlamaConfig) -> LoraTargets {
    let (e, f, h, kv, d) =
        (cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
    let w = (h + 2 * kv) * d;
    let md = |path, c_in, c_out, width, col| Module { path, c_in, c_out, width, col };
    LoraTargets {
        modules: vec![
            md("self_attn.q_proj", e, h * d, w, 0),
            md("self_attn.k_proj", e, kv * d, w, h * d),
            md("self_attn.v_proj", e, kv * d, w, (h + kv) * d),
            md("self_attn.o_proj", h * d, e, e, 0),
            md("mlp.gate_proj", e, f, 2 * f, 0),
            md("mlp.up_proj", e, f, 2 * f, f),
            md("mlp.down_proj", f, e, e, 0),
        ],
        layer_prefixes: (0..cfg.num_hidden_layers).map(|i| format!("model.layers.{i}")).collect(),
        // As PEFT does for nn.Linear targets (with a warning): the weights are [out, in].
        fan_in_fan_out: false,
    }
}

impl std::ops::Deref for LlamaConfig {
    type Target = Geometry;
    fn deref(&self) -> &Geometry {
        &self.geometry
    }
}

impl KvDims for LlamaConfig {
    fn kv_dims(&self) -> (usize, usize, usize) {
        (self.num_hidden_layers, self.kv_heads(), self.head_dim())
    }
}

/// Activations of one decoder layer kept for the backward.
struct LayerActs {
    ln1: Vec<f32>,
    rstd1: Vec<f32>,
    /// q/k/v after the rotary embedding.
    qkv: Vec<f32>,
    probs: Vec<f32>,
    ctx: Vec<f32>,
    /// Residual stream after attention.
    mid: Vec<f32>,
    ln2: Vec<f32>,
    rstd2: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
    /// Layer output (input of the next layer).
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
    cos: Vec<f32>,
    sin: Vec<f32>,
    emb: Vec<f32>,
    layers: Vec<LayerActs>,
    final_rstd: Vec<f32>,
    /// The LM head's input, targets and logits (`lm.logits`: output of the last `logits` call).
    pub lm: LmHead,
    dx: Vec<f32>,
    dln: Vec<f32>,
    dact: Vec<f32>,
    dgate_up: Vec<f32>,
    dctx: Vec<f32>,
    dqkv: Vec<f32>,
    dscores: Vec<f32>,
    /// LoRA scratch, sized on the first pass with adapters.
    lora: LoraWorkspace,
}

impl Workspace {
    pub fn new(cfg: &LlamaConfig, batch: usize, seq: usize) -> Self {
        Self::with_head_chunk(cfg, batch, seq, Scratch::rows_for_budget(decoder::HEAD_CHUNK_FLOATS, cfg.vocab_size))
    }

    /// A workspace for losses and logits without gradients (evaluation, perplexity): two layers' activations
    /// used in turn and no gradient buffers, about 2/L of [`new`](Self::new)'s activation memory for L layers.
    pub fn for_inference(cfg: &LlamaConfig, batch: usize, seq: usize) -> Self {
        let chunk = Scratch::rows_for_budget(decoder::HEAD_CHUNK_FLOATS, cfg.vocab_size);
        Self::build(cfg, batch, seq, chunk, true)
    }

    /// As [`new`](Self::new) with an explicit number of token rows per LM-head chunk.
    pub fn with_head_chunk(cfg: &LlamaConfig, batch: usize, seq: usize, chunk_rows: usize) -> Self {
        Self::build(cfg, batch, seq, chunk_rows, false)
    }

    fn build(cfg: &LlamaConfig, batch: usize, seq: usize, chunk_rows: usize, inference: bool) -> Self {
        let (c, f, h, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads, cfg.head_dim());
        let w = (h + 2 * cfg.kv_heads()) * d;
        let n = batch * seq;
        let z = |k: usize| vec![0.0f32; k];
        // Gradient buffers are empty in an inference workspace.
        let zb = |k: usize| if inference { Vec::new() } else { vec![0.0f32; k] };
        let probs = batch * h * seq * seq;
        // The config was validated when the model was built, so its rope parameters are known to be usable.
        let inv = cfg.rope_inv_freq().unwrap_or_else(|_| rope::default_inv_freq(d, cfg.rope_theta()));
        let (cos, sin) = rope::tables_from_inv_freq(seq, &inv);
        Workspace {
            batch,
            seq,
            inference,
            tok: decoder::Tokens::new(n),
            cos,
            sin,
            emb: z(n * c),
            layers: (0..acts::sets(cfg.num_hidden_layers, inference))
                .map(|_| LayerActs {
                    ln1: z(n * c),
                    rstd1: z(n),
                    qkv: z(n * w),
                    probs: z(probs),
                    ctx: z(n * h * d),
                    mid: z(n * c),
                    ln2: z(n * c),
                    rstd2: z(n),
                    gate_up: z(n * 2 * f),
                    act: z(n * f),
                    out: z(n * c),
                })
                .collect(),
            final_rstd: z(n),
            lm: LmHead::new(n, c, cfg.vocab_size, chunk_rows),
            dx: zb(n * c),
            dln: zb(n * c),
            dact: zb(n * f),
            dgate_up: zb(n * 2 * f),
            dctx: zb(n * h * d),
            dqkv: zb(n * w),
            dscores: zb(probs),
            lora: LoraWorkspace::default(),
        }
    }
}

pub struct LlamaForCausalLM {
    pub config: LlamaConfig,
    idx: Idx,
    /// Parameters, gradients, optimizer state and LoRA adapters (q/k/v/o and gate/up/down projections).
    pub store: ParamStore,
    /// Int8 copies of the decode step's weights (`--int8`), empty otherwise.
    int8: decoder::Int8Weights,
}

/// LoRA module short names (PEFT's `target_modules`), in the order adapters are laid out in each layer.
pub const LORA_TARGETS: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

impl LlamaForCausalLM {
    fn empty(config: LlamaConfig) -> Result<Self, LlamaError> {
        config.validate()?;
        let (layout, idx) = layout(&config);
        let store = ParamStore::try_new(layout)?.with_lora_targets(lora_targets(&config));
        Ok(LlamaForCausalLM { config, idx, store, int8: Default::default() })
    }

    /// Initialised as `transformers` does for a new model: weights N(0, initializer_range), biases 0, norms 1.
    pub fn random(config: LlamaConfig, seed: u64) -> Result<Self, LlamaError> {
        let mut m = Self::empty(config)?;
        let std = m.config.initializer_range;
        for k in 0..m.store.param_infos().len() {
            let name = &m.store.param_infos()[k].name;
            let constant = if name.contains("norm") { Some(1.0) } else { name.ends_with("bias").then_some(0.0) };
            m.store.init_param(k, constant, std, seed);
        }
        Ok(m)
    }

    /// Loads parameters by Hugging Face name (also base-model checkpoints without the `model.` prefix). With
    /// tied embeddings a stored `lm_head.weight` is ignored.
    pub fn from_state_dict(config: LlamaConfig, sd: &StateDict) -> Result<Self, LlamaError> {
        config.validate()?;
        config.check_against(sd, "model.layers.0.mlp.gate_proj.weight")?;
        let (layout, idx) = layout(&config);
        let (store, _) = ParamStore::from_state_dict(layout, sd, &["model."], |_| false)?;
        let store = store.with_lora_targets(lora_targets(&config));
        Ok(LlamaForCausalLM { config, idx, store, int8: Default::default() })
    }

    fn check_batch(&self, ws: &Workspace, b: &Batch<'_>) -> Result<(), LlamaError> {
        let cfg = &self.config;
        let n = ws.batch * ws.seq;
        let bad = |m: String| Err(LlamaError::Batch(m));
        let w = (cfg.num_attention_heads + 2 * cfg.kv_heads()) * cfg.head_dim();
        let sized = ws.layers.len() == acts::sets(cfg.num_hidden_layers, ws.inference)
            && ws.emb.len() == n * cfg.hidden_size
            && ws.layers.iter().all(|a| a.qkv.len() == n * w && a.act.len() == n * cfg.intermediate_size)
            && ws.cos.len() == ws.seq * cfg.head_dim() / 2;
        if !sized {
            return bad("the workspace was created for a different model configuration".into());
        }
        decoder::check_batch(b, n, ws.batch, ws.seq, cfg.vocab_size).map_err(LlamaError::Batch)?;
        if let Some(win) = cfg.active_sliding_window() {
            if ws.seq > win {
                return bad(format!(
                    "sequence length {} exceeds sliding_window {win}; sliding-window attention is not supported",
                    ws.seq
                ));
            }
        }
        if let Some(&q) = b.position_ids.and_then(|pos| pos.iter().find(|&&q| q as usize >= ws.seq)) {
            return bad(format!("position id {q} is not below the sequence length {}", ws.seq));
        }
        Ok(())
    }

    /// Embedding, decoder layers and final norm: leaves the LM head's input in `ws.lm`.
    fn trunk(&self, ws: &mut Workspace, batch: &Batch<'_>) -> Result<(), LlamaError> {
        self.check_batch(ws, batch)?;
        let cfg = &self.config;
        let (bsz, t, c, f) = (ws.batch, ws.seq, cfg.hidden_size, cfg.intermediate_size);
        let (h, kv, d) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
        let (n, w) = (bsz * t, (h + 2 * kv) * d);
        let shape = Shape { batch: bsz, seq: t, heads: h, kv_heads: kv, head_dim: d };
        let st = &self.store;
        let s = |k: usize| st.get(k);
        let eps = cfg.rms_norm_eps;
        st.lora_prepare(&mut ws.lora, n);
        let w16 = ws.lm.bf16.clone();
        let lc = |a: usize, b: usize| decoder::lin_ctx(&w16, st, a, b);

        ws.tok.load(batch, t, u32::MAX);
        decoder::embed(&mut ws.emb, s(self.idx.embed), &ws.tok.ids, c);

        for (li, lx) in self.idx.layers.iter().enumerate() {
            let (prev, a) = acts::layer_pair(&mut ws.layers, li);
            let inp: &[f32] = prev.map_or(&ws.emb, |p| &p.out);
            rmsnorm::forward(&mut a.ln1, &mut a.rstd1, inp, s(lx.ln1), n, c, eps);
            // q, k, v weights (and biases) are consecutive: one [w, C] projection.
            let wqkv = st.span(lx.q_w, lx.v_w);
            let bqkv = lx.qkv_b.map(|[bq, _, bv]| st.span(bq, bv));
            bf16lin::forward(lc(lx.q_w, lx.v_w), &mut a.qkv, &a.ln1, wqkv, bqkv, n, c, w);
            st.lora_forward(&mut ws.lora, li, 0..3, &mut a.qkv, &a.ln1, n);
            decoder::rope_qk(&mut a.qkv, (h, kv, d), d, &ws.tok.pos, &ws.cos, &ws.sin, false);
            let seg = ws.tok.segments();
            decoder::attention_forward(&mut a.ctx, &mut a.probs, &a.qkv, &ws.tok.mask_add, seg, shape);
            bf16lin::forward(lc(lx.o_w, lx.o_w), &mut a.mid, &a.ctx, s(lx.o_w), lx.o_b.map(s), n, h * d, c);
            st.lora_forward(&mut ws.lora, li, 3..4, &mut a.mid, &a.ctx, n);
            residual::add_assign(&mut a.mid, inp);
            rmsnorm::forward(&mut a.ln2, &mut a.rstd2, &a.mid, s(lx.ln2), n, c, eps);
            let wgu = st.span(lx.gate_w, lx.up_w);
            bf16lin::forward(lc(lx.gate_w, lx.up_w), &mut a.gate_up, &a.ln2, wgu, None, n, c, 2 * f);
            st.lora_forward(&mut ws.lora, li, 4..6, &mut a.gate_up, &a.ln2, n);
            swiglu::forward(&mut a.act, &a.gate_up, n, f);
            bf16lin::forward(lc(lx.down_w, lx.down_w), &mut a.out, &a.act, s(lx.down_w), None, n, f, c);
            st.lora_forward(&mut ws.lora, li, 6..7, &mut a.out, &a.act, n);
            residual::add_assign(&mut a.out, &a.mid);
        }
        let last: &[f32] = acts::last(&ws.layers, self.idx.layers.len()).map_or(&ws.emb, |a| &a.out);
        rmsnorm::forward(&mut ws.lm.hidden, &mut ws.final_rstd, last, s(self.idx.norm), n, c, eps);
        Ok(())
    }

    /// Forward and backward in one pass: returns the loss and adds its gradient to `self.grads` for every
    /// parameter that requires one. The LM head's logits gradient is formed chunk by chunk during the loss.
    pub fn forward_backward(&mut self, ws: &mut Workspace, batch: &Batch<'_>) -> Result<f32, LlamaError> {
        let labels = batch.labels.ok_or_else(|| LlamaError::Batch("training needs labels".into()))?;
        if ws.inference {
            return Err(LlamaError::Batch("training needs a workspace from Workspace::new, not for_inference".into()));
        }
        // LoRA dropout masks: a fresh seed per training pass, reused by the backward.
        ws.lora.train_seed = self.store.lora_train_seed();
        self.trunk(ws, batch)?;
        let cfg = &self.config;
        let (bsz, t, c, f, v) = (ws.batch, ws.seq, cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let (h, kv, d) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
        let (n, w) = (bsz * t, (h + 2 * kv) * d);
        let shape = Shape { batch: bsz, seq: t, heads: h, kv_heads: kv, head_dim: d };
        let idx = &self.idx;
        let w16 = ws.lm.bf16.clone();
        // The input-gradient matmuls' bf16 contexts, taken before the store is split into its parts.
        let ctxs = decoder::layer_ctxs(&w16, &self.store, &idx.layers, |lx| {
            [(lx.q_w, lx.v_w), (lx.o_w, lx.o_w), (lx.gate_w, lx.up_w), (lx.down_w, lx.down_w)]
        });
        let bf = w16.is_some();
        let head_version = decoder::weight_version(&self.store, idx.head, idx.head);
        let Parts { infos, params: p, grads: g, lora, hook } = self.store.parts();
        let rg = |k: usize| infos[k].requires_grad;
        let r = |k: usize| infos[k].range();
        let s = |k: usize| &p[r(k)];

        let dhead = rg(idx.head).then(|| &mut g[r(idx.head)]);
        let loss = ws.lm.loss(
            Head { weight: s(idx.head), bias: None, version: head_version },
            batch,
            labels,
            (t, c, v),
            Some(lce::Grads { dweight: dhead, ..Default::default() }),
        );

        // Final norm: ws.dx becomes the gradient of the last layer's output.
        {
            let last: &[f32] = match ws.layers.last() {
                Some(a) => &a.out,
                None => &ws.emb,
            };
            let dw = if rg(idx.norm) { Some(&mut g[r(idx.norm)]) } else { None };
            rmsnorm::backward(&mut ws.dx, dw, &ws.lm.dhidden, last, s(idx.norm), &ws.final_rstd, n, c, false);
        }

        for li in (0..idx.layers.len()).rev() {
            let lx = idx.layers[li];
            let (prev, rest) = ws.layers.split_at(li);
            let inp: &[f32] = if li == 0 { &ws.emb } else { &prev[li - 1].out };
            let a = &rest[0];

            let [lc_qkv, lc_o, lc_gu, lc_down] = ctxs[li];
            // MLP: out = mid + down(swiglu(gate_up(ln2(mid)))).
            input_grad(lc_down, &mut ws.dact, &ws.dx, s(lx.down_w), n, f, c, false);
            lora.backward(&mut ws.lora, infos, p, g, li, 6..7, &mut ws.dact, &ws.dx, &a.act, n);
            if rg(lx.down_w) {
                weight_grad(&mut g[r(lx.down_w)], &ws.dx, c, 0, c, &a.act, n, f, bf);
            }
            swiglu::backward(&mut ws.dgate_up, &ws.dact, &a.gate_up, n, f);
            let gu = infos[lx.gate_w].offset..r(lx.up_w).end;
            input_grad(lc_gu, &mut ws.dln, &ws.dgate_up, &p[gu], n, c, 2 * f, false);
            lora.backward(&mut ws.lora, infos, p, g, li, 4..6, &mut ws.dln, &ws.dgate_up, &a.ln2, n);
            for (k, col) in [(lx.gate_w, 0), (lx.up_w, f)] {
                if rg(k) {
                    weight_grad(&mut g[r(k)], &ws.dgate_up, 2 * f, col, f, &a.ln2, n, c, bf);
                }
            }
            let dw = if rg(lx.ln2) { Some(&mut g[r(lx.ln2)]) } else { None };
            rmsnorm::backward(&mut ws.dx, dw, &ws.dln, &a.mid, s(lx.ln2), &a.rstd2, n, c, true);

            // Attention: mid = inp + o_proj(attn(rope(qkv(ln1(inp))))).
            input_grad(lc_o, &mut ws.dctx, &ws.dx, s(lx.o_w), n, h * d, c, false);
            lora.backward(&mut ws.lora, infos, p, g, li, 3..4, &mut ws.dctx, &ws.dx, &a.ctx, n);
            if rg(lx.o_w) {
                weight_grad(&mut g[r(lx.o_w)], &ws.dx, c, 0, c, &a.ctx, n, h * d, bf);
            }
            if let Some(ob) = lx.o_b.filter(|&k| rg(k)) {
                bias_grad(&mut g[r(ob)], &ws.dx[..n * c], c, 0);
            }
            let seg = ws.tok.segments();
            let (mask, dscores) = (&ws.tok.mask_add, &mut ws.dscores);
            decoder::attention_backward(&mut ws.dqkv, dscores, &ws.dctx, &a.qkv, &a.probs, mask, seg, shape);
            decoder::rope_qk(&mut ws.dqkv, (h, kv, d), d, &ws.tok.pos, &ws.cos, &ws.sin, true);
            let qkv = infos[lx.q_w].offset..r(lx.v_w).end;
            input_grad(lc_qkv, &mut ws.dln, &ws.dqkv, &p[qkv], n, c, w, false);
            lora.backward(&mut ws.lora, infos, p, g, li, 0..3, &mut ws.dln, &ws.dqkv, &a.ln1, n);
            let qkv_w = [lx.q_w, lx.k_w, lx.v_w];
            decoder::qkv_param_grads((infos, g), qkv_w, lx.qkv_b, &ws.dqkv, &a.ln1, (h, kv, d), (n, c), bf);
            let dw = if rg(lx.ln1) { Some(&mut g[r(lx.ln1)]) } else { None };
            rmsnorm::backward(&mut ws.dx, dw, &ws.dln, inp, s(lx.ln1), &a.rstd1, n, c, true);
            hook.layer_done(infos, g, li);
        }

        if rg(idx.embed) {
            decoder::scatter_rows(&mut g[r(idx.embed)], &ws.dx, &ws.tok.ids, c);
        }
        ws.lora.train_seed = None;
        Ok(loss)
    }
}

/// Activations of the KV-cache decode steps ([`Architecture::decode`]) for up to `max_new` new tokens per row and `max_len`
/// tokens in all, allocated once so that decode steps allocate nothing.
pub struct DecodeWorkspace {
    /// The buffers every decoder has alike.
    buf: DecodeBuffers,
    cos: Vec<f32>,
    sin: Vec<f32>,
    ln: Vec<f32>,
    rstd: Vec<f32>,
    qkv: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
    last_rstd: Vec<f32>,
}

impl DecodeWorkspace {
    pub fn new(cfg: &LlamaConfig, batch: usize, max_new: usize, max_len: usize) -> Self {
        let (c, f, h, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads, cfg.head_dim());
        let w = (h + 2 * cfg.kv_heads()) * d;
        let n = batch * max_new;
        let z = |k: usize| vec![0.0f32; k];
        let inv = cfg.rope_inv_freq().unwrap_or_else(|_| rope::default_inv_freq(d, cfg.rope_theta()));
        let (cos, sin) = rope::tables_from_inv_freq(max_len, &inv);
        DecodeWorkspace {
            buf: DecodeBuffers::new((batch, max_new, max_len), c, (h, d), cfg.vocab_size),
            cos,
            sin,
            ln: z(n * c),
            rstd: z(n),
            qkv: z(n * w),
            gate_up: z(n * 2 * f),
            act: z(n * f),
            last_rstd: z(batch),
        }
    }
}

impl Architecture for LlamaForCausalLM {
    const CLASS: &'static str = "LlamaForCausalLM";
    const MODEL_TYPES: &'static [&'static str] = &["llama", "mistral", "qwen2"];
    decoder::architecture_plumbing!(Workspace, DecodeWorkspace);

    fn head(&self) -> Head<'_> {
        let version = decoder::weight_version(&self.store, self.idx.head, self.idx.head);
        Head { weight: self.store.get(self.idx.head), bias: None, version }
    }
    fn from_config(config_json: &str, state: &StateDict) -> Result<Self, ModelError> {
        LlamaForCausalLM::from_state_dict(LlamaConfig::from_json(config_json)?, state)
    }
    fn int8_spans(&self) -> Vec<decoder::Int8Span> {
        use decoder::Int8Span as S;
        let cfg = &self.config;
        let (c, f, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim());
        let w = (cfg.num_attention_heads + 2 * cfg.kv_heads()) * d;
        let mut spans = Vec::new();
        for lx in &self.idx.layers {
            spans.extend([
                S::linear(lx.q_w, lx.v_w, w),
                S::linear(lx.o_w, lx.o_w, c),
                S::linear(lx.gate_w, lx.up_w, 2 * f),
                S::linear(lx.down_w, lx.down_w, c),
            ]);
        }
        spans.push(S::linear(self.idx.head, self.idx.head, cfg.vocab_size));
        spans
    }
    fn int8_weights(&mut self) -> Option<&mut decoder::Int8Weights> {
        Some(&mut self.int8)
    }
    fn decode<'w>(
        &self,
        cache: &mut KvCache,
        ws: &'w mut DecodeWorkspace,
        input_ids: &[u32],
        rows: StepRows<'_>,
    ) -> Result<&'w [f32], LlamaError> {
        let _prof = finetune_engine::profile::scope("llama.forward_cached");
        let cfg = &self.config;
        let (c, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let (h, kv, d) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
        let w = (h + 2 * kv) * d;
        let step = decoder::begin_step(cache, &mut ws.buf, c, cfg.kv_dims(), h, v, input_ids, rows)?;
        let (bsz, n_new) = (step.attn.batch, step.attn.n_new);
        if let Some(win) = cfg.active_sliding_window() {
            if step.longest > win {
                return Err(LlamaError::Batch(format!(
                    "{} tokens exceed sliding_window {win}; sliding-window attention is not supported",
                    step.longest
                )));
            }
        }
        let n = bsz * n_new;
        let eps = cfg.rms_norm_eps;
        let st = &self.store;
        let s = |k: usize| st.get(k);
        let q8 = |key: usize| (&self.int8, st, key);
        decoder::embed(&mut ws.buf.x[..n * c], s(self.idx.embed), input_ids, c);
        let pos = &ws.buf.pos[..n];

        for (li, lx) in self.idx.layers.iter().enumerate() {
            rmsnorm::forward(&mut ws.ln, &mut ws.rstd, &ws.buf.x[..n * c], s(lx.ln1), n, c, eps);
            let wqkv = st.span(lx.q_w, lx.v_w);
            let bqkv = lx.qkv_b.map(|[bq, _, bv]| st.span(bq, bv));
            decoder::decode_linear(q8(lx.q_w), &mut ws.buf.xq, &mut ws.qkv, &ws.ln, wqkv, bqkv, n, (c, w))?;
            decoder::rope_qk(&mut ws.qkv, (h, kv, d), d, pos, &ws.cos, &ws.sin, false);
            let (kc, vc) = (&mut step.k[li], &mut step.v[li]);
            step.attn.append(kc, vc, &ws.qkv, w, h * d, (h + kv) * d);
            step.attn.attend(kc, vc, &ws.qkv, w, &mut ws.buf.scores, &mut ws.buf.heads_out, &mut ws.buf.ctx);
            let (o_w, o_b) = (s(lx.o_w), lx.o_b.map(s));
            decoder::decode_linear(q8(lx.o_w), &mut ws.buf.xq, &mut ws.buf.tmp, &ws.buf.ctx, o_w, o_b, n, (h * d, c))?;
            residual::add_assign(&mut ws.buf.x[..n * c], &ws.buf.tmp[..n * c]);
            rmsnorm::forward(&mut ws.ln, &mut ws.rstd, &ws.buf.x[..n * c], s(lx.ln2), n, c, eps);
            let wgu = st.span(lx.gate_w, lx.up_w);
            decoder::decode_linear(q8(lx.gate_w), &mut ws.buf.xq, &mut ws.gate_up, &ws.ln, wgu, None, n, (c, 2 * f))?;
            swiglu::forward(&mut ws.act, &ws.gate_up, n, f);
            let down = s(lx.down_w);
            decoder::decode_linear(q8(lx.down_w), &mut ws.buf.xq, &mut ws.buf.tmp, &ws.act, down, None, n, (f, c))?;
            residual::add_assign(&mut ws.buf.x[..n * c], &ws.buf.tmp[..n * c]);
        }
        decoder::advance(cache, rows, n_new);
        decoder::last_rows(&mut ws.buf.tmp, &ws.buf.x, bsz, n_new, c);
        rmsnorm::forward(&mut ws.buf.last, &mut ws.last_rstd, &ws.buf.tmp[..bsz * c], s(self.idx.norm), bsz, c, eps);
        let _prof = finetune_engine::profile::scope("llama.lm_head");
        let (logits, head) = (&mut ws.buf.logits[..bsz * v], s(self.idx.head));
        decoder::decode_linear(q8(self.idx.head), &mut ws.buf.xq, logits, &ws.buf.last, head, None, bsz, (c, v))?;
        Ok(&ws.buf.logits[..bsz * v])
    }
}
