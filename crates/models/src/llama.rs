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
//! As in `bert.rs`: parameters, gradients and AdamW moments live in flat buffers addressed by Hugging Face
//! names, activations in a [`Workspace`] allocated once per (batch, sequence) shape, the forward is
//! straight-line code and the backward calls each kernel's backward in reverse. Every parameter has a
//! `requires_grad` flag; a frozen one gets no weight-gradient matmul at all and is skipped by AdamW.
//!
//! Packed rows: with `Batch::position_ids` a row may hold several sequences (a new one wherever the position is
//! 0), each attending only to itself. Inference: [`LlamaForCausalLM::forward_cached`] runs prefill and decode
//! steps over a [`KvCache`] (used by [`crate::generate`]).
//!
//! Rotary embedding: the default rope type and Llama 3.1's `llama3` frequency scaling. Not supported (rejected
//! with a clear error): other rope scaling types (linear, dynamic, yarn, longrope), partial rotary factors, sliding-window attention on sequences longer than the window, attention dropout,
//! MLP biases and activations other than SiLU.
//!
//! LoRA ([`LlamaForCausalLM::add_lora`], PEFT adapter files): see [`crate::lora`].

use std::collections::BTreeMap;

use finetune_engine::kernels::causal_attention::{self, Shape};
use finetune_engine::kernels::cross_entropy::IGNORE_INDEX;
use finetune_engine::kernels::linear_cross_entropy::{self as lce, Scratch};
use finetune_engine::kernels::{adamw, clip_grad, dropout, linear, residual, rmsnorm, rope, swiglu};
use finetune_engine::matmul::{gemm_view, matmul, Par, View};
use finetune_engine::{StateDict, Tensor};
use serde::Deserialize;

use crate::lora::{self, LoraConfig, LoraError, LoraWorkspace};

#[derive(Debug, thiserror::Error)]
pub enum LlamaError {
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
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Defaults to `num_attention_heads` (no grouping).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
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

impl LlamaConfig {
    pub fn from_json(text: &str) -> Result<Self, LlamaError> {
        let c: LlamaConfig = serde_json::from_str(text).map_err(|e| LlamaError::Config(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
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
            Some(t) => Err(LlamaError::Config(format!(
                "rope scaling {t:?} is not supported (only the default rotary embedding and \"llama3\")"
            ))),
        }
    }

    pub fn validate(&self) -> Result<(), LlamaError> {
        let err = |m: String| Err(LlamaError::Config(m));
        let (h, kv, d) = (self.num_attention_heads, self.kv_heads(), self.head_dim());
        if self.hidden_size == 0 || h == 0 || kv == 0 || self.vocab_size == 0 {
            return err("hidden_size, num_attention_heads, num_key_value_heads and vocab_size must be positive".into());
        }
        if !h.is_multiple_of(kv) {
            return err(format!("num_attention_heads {h} is not a multiple of num_key_value_heads {kv}"));
        }
        if d == 0 || !d.is_multiple_of(2) {
            return err(format!("head_dim {d} must be positive and even for the rotary embedding"));
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
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

fn layout(cfg: &LlamaConfig) -> (Vec<ParamInfo>, Idx) {
    let (c, f, h, kv, d) =
        (cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
    let mut infos: Vec<ParamInfo> = Vec::new();
    let mut total = 0usize;
    let mut add = |name: String, shape: Vec<usize>| -> usize {
        let decay = !(name.ends_with("bias") || name.contains("norm"));
        let offset = total;
        total += shape.iter().product::<usize>();
        infos.push(ParamInfo { name, offset, shape, decay, requires_grad: true });
        infos.len() - 1
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
    (infos, Idx { embed, layers, norm, head })
}

/// One batch of `batch × seq` tokens, row-major. `Default` gives empty slices and no options, for
/// `Batch { input_ids, attention_mask, ..Default::default() }`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Batch<'a> {
    pub input_ids: &'a [u32],
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: &'a [u32],
    /// Unshifted labels `[batch, seq]` (position t is scored against `labels[t + 1]`); −100 is ignored.
    pub labels: Option<&'a [i64]>,
    /// Divide the summed loss by this instead of the number of kept targets (the token count of a whole
    /// accumulated batch, as transformers' `num_items_in_batch`).
    pub loss_normalizer: Option<f32>,
    /// Positions `[batch, seq]` for packed rows (transformers' `DataCollatorWithFlattening`): a new sequence
    /// starts wherever the position is 0; the rotary embedding uses these positions and attention stays inside
    /// each sequence. `None`: positions 0..seq in every row.
    pub position_ids: Option<&'a [u32]>,
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

/// Default size of one chunk of LM-head logits (floats): 32 MiB.
const HEAD_CHUNK_FLOATS: usize = 1 << 23;

/// Every activation and activation-gradient buffer for one (batch, seq) shape, allocated once and reused.
pub struct Workspace {
    pub batch: usize,
    pub seq: usize,
    ids: Vec<u32>,
    pos: Vec<u32>,
    /// Packed-sequence index of each token, used when `packed` (the batch has position ids).
    seg: Vec<u32>,
    packed: bool,
    mask_add: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    targets: Vec<i64>,
    emb: Vec<f32>,
    layers: Vec<LayerActs>,
    final_rstd: Vec<f32>,
    /// Final-norm output: the LM head's input.
    hidden: Vec<f32>,
    /// Output of the last [`LlamaForCausalLM::logits`] call.
    pub logits: Vec<f32>,
    head: Scratch,
    dx: Vec<f32>,
    dln: Vec<f32>,
    dact: Vec<f32>,
    dgate_up: Vec<f32>,
    dctx: Vec<f32>,
    dqkv: Vec<f32>,
    dscores: Vec<f32>,
    dhidden: Vec<f32>,
    /// LoRA scratch, sized on the first pass with adapters.
    lora: LoraWorkspace,
}

impl Workspace {
    pub fn new(cfg: &LlamaConfig, batch: usize, seq: usize) -> Self {
        Self::with_head_chunk(cfg, batch, seq, Scratch::rows_for_budget(HEAD_CHUNK_FLOATS, cfg.vocab_size))
    }

    /// As [`new`](Self::new) with an explicit number of token rows per LM-head chunk.
    pub fn with_head_chunk(cfg: &LlamaConfig, batch: usize, seq: usize, chunk_rows: usize) -> Self {
        let (c, f, h, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads, cfg.head_dim());
        let w = (h + 2 * cfg.kv_heads()) * d;
        let n = batch * seq;
        let z = |k: usize| vec![0.0f32; k];
        let probs = batch * h * seq * seq;
        // The config was validated when the model was built, so its rope parameters are known to be usable.
        let inv = cfg.rope_inv_freq().unwrap_or_else(|_| rope::default_inv_freq(d, cfg.rope_theta()));
        let (cos, sin) = rope::tables_from_inv_freq(seq, &inv);
        Workspace {
            batch,
            seq,
            ids: vec![0; n],
            pos: (0..n).map(|i| (i % seq.max(1)) as u32).collect(),
            seg: vec![0; n],
            packed: false,
            mask_add: z(n),
            cos,
            sin,
            targets: vec![IGNORE_INDEX; n],
            emb: z(n * c),
            layers: (0..cfg.num_hidden_layers)
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
            hidden: z(n * c),
            logits: Vec::new(),
            head: Scratch::new(chunk_rows.min(n.max(1)), c, cfg.vocab_size),
            dx: z(n * c),
            dln: z(n * c),
            dact: z(n * f),
            dgate_up: z(n * 2 * f),
            dctx: z(n * h * d),
            dqkv: z(n * w),
            dscores: z(probs),
            dhidden: z(n * c),
            lora: LoraWorkspace::default(),
        }
    }
}

/// Small deterministic normal generator for initialising new parameters (splitmix64 + Box–Muller).
fn normal_fill(out: &mut [f32], std: f32, seed: u64) {
    for (i, v) in out.iter_mut().enumerate() {
        let u1 = dropout::uniform(seed, 2 * i as u64).max(1e-7) as f64;
        let u2 = dropout::uniform(seed, 2 * i as u64 + 1) as f64;
        *v = ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32 * std;
    }
}

pub struct LlamaForCausalLM {
    pub config: LlamaConfig,
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

/// `dW[rows, c_in] += dout[:, col..col + rows]ᵀ · inp` where dout rows are `width` wide.
#[allow(clippy::too_many_arguments)]
fn weight_grad(
    dw: &mut [f32],
    dout: &[f32],
    width: usize,
    col: usize,
    rows: usize,
    inp: &[f32],
    n: usize,
    c_in: usize,
) {
    let a = View { data: &dout[col..], rs: 1, cs: width };
    let par = if rows * c_in * n >= 1 << 18 { Par::Rayon } else { Par::Seq };
    gemm_view(dw, c_in, a, View::new(inp, c_in, false), rows, c_in, n, 1.0, true, par);
}

/// `db[j] += Σ_i dout[i, col + j]`.
fn bias_grad(db: &mut [f32], dout: &[f32], width: usize, col: usize) {
    for row in dout.chunks_exact(width) {
        for (d, g) in db.iter_mut().zip(&row[col..]) {
            *d += g;
        }
    }
}

/// LoRA module short names (PEFT's `target_modules`), in the order adapters are laid out in each layer.
pub const LORA_TARGETS: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

/// LoRA: adapters, merging and PEFT adapter files.
impl LlamaForCausalLM {
    fn lora_store(&mut self) -> lora::Store<'_> {
        lora::Store {
            infos: &mut self.infos,
            index: &mut self.index,
            bufs: [&mut self.params, &mut self.grads, &mut self.exp_avg, &mut self.exp_avg_sq],
        }
    }

    /// The adapter forward for modules `mods` of layer `li`, added into their columns of `y`.
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

    /// Adds PEFT LoRA adapters to the targeted linears of every layer and freezes every base parameter.
    /// `lora_A` `[r, in]` is drawn from U(−1/√in, 1/√in) (PEFT's `kaiming_uniform_(a=√5)`) with `seed`,
    /// `lora_B` `[out, r]` is zero, so the model's output is unchanged until training moves B. The adapters
    /// (`model.layers.{i}.self_attn.q_proj.lora_A.weight`, …) are trainable, decayed by AdamW, and share the
    /// flat gradient and moment buffers with the base. q/k/v and gate/up stay fused: each adapter adds into
    /// its columns of the fused output.
    pub fn add_lora(&mut self, cfg: &LoraConfig, seed: u64) -> Result<(), LlamaError> {
        if self.lora.is_some() {
            return Err(LlamaError::Config(
                "the model already has LoRA adapters (merge_lora or unload_lora first)".into(),
            ));
        }
        // As PEFT does for nn.Linear targets (with a warning): the weights are [out, in].
        let cfg = &LoraConfig { fan_in_fan_out: false, ..cfg.clone() };
        let c = &self.config;
        let (e, f, h, kv, d) = (c.hidden_size, c.intermediate_size, c.num_attention_heads, c.kv_heads(), c.head_dim());
        let w = (h + 2 * kv) * d;
        let md = |path, c_in, c_out, width, col| lora::Module { path, c_in, c_out, width, col };
        let modules = vec![
            md("self_attn.q_proj", e, h * d, w, 0),
            md("self_attn.k_proj", e, kv * d, w, h * d),
            md("self_attn.v_proj", e, kv * d, w, (h + kv) * d),
            md("self_attn.o_proj", h * d, e, e, 0),
            md("mlp.gate_proj", e, f, 2 * f, 0),
            md("mlp.up_proj", e, f, 2 * f, f),
            md("mlp.down_proj", f, e, e, 0),
        ];
        let prefixes: Vec<String> = (0..c.num_hidden_layers).map(|i| format!("model.layers.{i}")).collect();
        self.lora = Some(lora::Adapters::add(cfg, seed, modules, &prefixes, self.lora_store())?);
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

    /// PEFT's `merge_and_unload`: `W += scale · B · A` for every adapter, then the adapters are removed as by
    /// [`unload_lora`](Self::unload_lora) (base parameters get back their `requires_grad` from before
    /// [`add_lora`](Self::add_lora), so the merged model trains as the base did).
    pub fn merge_lora(&mut self) -> Result<(), LlamaError> {
        let l = self.lora.as_ref().ok_or_else(|| LlamaError::Config("the model has no LoRA adapters".into()))?;
        let layers = &self.idx.layers;
        let base = |li: usize, m: usize| {
            let x = layers[li];
            [x.q_w, x.k_w, x.v_w, x.o_w, x.gate_w, x.up_w, x.down_w][m]
        };
        l.merge_into(&self.infos, &mut self.params, base);
        self.unload_lora();
        Ok(())
    }

    /// The adapter weights with PEFT's saved names (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`);
    /// empty without adapters.
    pub fn lora_state_dict(&self) -> StateDict {
        self.lora.as_ref().map(|l| l.state_dict(&self.infos, &self.params)).unwrap_or_default()
    }

    /// Saves the adapters as PEFT's `save_pretrained` does: `adapter_config.json` (with `inference_mode`
    /// true and the targeted modules listed) and `adapter_model.safetensors`, each written atomically.
    pub fn save_adapter(&self, dir: impl AsRef<std::path::Path>) -> Result<(), LlamaError> {
        let l =
            self.lora.as_ref().ok_or_else(|| LlamaError::Config("the model has no LoRA adapters to save".into()))?;
        Ok(l.save(dir.as_ref(), &self.infos, &self.params)?)
    }

    /// Adds adapters from a PEFT adapter directory (`adapter_config.json` and `adapter_model.safetensors`, or
    /// `adapter_model.bin`) and loads their weights; base parameters are frozen as by
    /// [`add_lora`](Self::add_lora). A missing, unexpected or wrongly shaped tensor is an error naming the file
    /// and the tensor, and leaves the model without adapters.
    pub fn load_adapter(&mut self, dir: impl AsRef<std::path::Path>) -> Result<(), LlamaError> {
        let dir = dir.as_ref();
        let (cfg, sd, path) = lora::read_adapter_dir(dir)?;
        self.add_lora(&cfg, 0).map_err(|e| match e {
            LlamaError::Lora(e) => LlamaError::Lora(lora::in_config_file(e, dir)),
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

impl LlamaForCausalLM {
    fn empty(config: LlamaConfig) -> Result<Self, LlamaError> {
        config.validate()?;
        let (infos, idx) = layout(&config);
        let total = infos.last().map_or(0, |i| i.offset + i.len());
        let index = infos.iter().enumerate().map(|(k, i)| (i.name.clone(), k)).collect();
        Ok(LlamaForCausalLM {
            config,
            infos,
            index,
            idx,
            params: vec![0.0; total],
            grads: vec![0.0; total],
            exp_avg: vec![0.0; total],
            exp_avg_sq: vec![0.0; total],
            step: 0,
            lora: None,
        })
    }

    /// Initialised as `transformers` does for a new model: weights N(0, initializer_range), biases 0, norms 1.
    pub fn random(config: LlamaConfig, seed: u64) -> Result<Self, LlamaError> {
        let mut m = Self::empty(config)?;
        let std = m.config.initializer_range;
        for k in 0..m.infos.len() {
            let info = &m.infos[k];
            let dst = &mut m.params[info.offset..info.offset + info.len()];
            if info.name.contains("norm") {
                dst.fill(1.0);
            } else if info.name.ends_with("bias") {
                dst.fill(0.0);
            } else {
                normal_fill(dst, std, seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            }
        }
        Ok(m)
    }

    /// Loads parameters by Hugging Face name (also base-model checkpoints without the `model.` prefix). With
    /// tied embeddings a stored `lm_head.weight` is ignored.
    pub fn from_state_dict(config: LlamaConfig, sd: &StateDict) -> Result<Self, LlamaError> {
        let mut m = Self::empty(config)?;
        for info in &m.infos {
            let found = sd.get(&info.name).or_else(|| info.name.strip_prefix("model.").and_then(|n| sd.get(n)));
            let t = found.ok_or_else(|| LlamaError::Checkpoint(format!("missing parameter {}", info.name)))?;
            if t.shape != info.shape || t.data.len() != info.len() {
                return Err(LlamaError::Checkpoint(format!(
                    "{}: shape {:?} does not match the config's {:?}",
                    info.name, t.shape, info.shape
                )));
            }
            m.params[info.offset..info.offset + info.len()].copy_from_slice(&t.data);
        }
        Ok(m)
    }

    pub fn param_infos(&self) -> &[ParamInfo] {
        &self.infos
    }

    /// Optimizer steps taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// AdamW state over the flat parameter buffer: first and second moments and the step count (for
    /// checkpoints that resume exactly).
    pub fn optimizer_state(&self) -> (&[f32], &[f32], u64) {
        (&self.exp_avg, &self.exp_avg_sq, self.step)
    }

    /// Restores what [`optimizer_state`](Self::optimizer_state) returned.
    pub fn set_optimizer_state(&mut self, exp_avg: &[f32], exp_avg_sq: &[f32], step: u64) -> Result<(), LlamaError> {
        restore_moments(&mut self.exp_avg, &mut self.exp_avg_sq, exp_avg, exp_avg_sq)
            .map_err(LlamaError::Checkpoint)?;
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

    /// Freezes (`false`) or unfreezes a parameter. A frozen parameter's gradient is left untouched (zero after
    /// [`zero_grad`](Self::zero_grad)) and AdamW does not update it.
    pub fn set_requires_grad(&mut self, name: &str, requires_grad: bool) -> Result<(), LlamaError> {
        let k = *self.index.get(name).ok_or_else(|| LlamaError::Config(format!("no parameter named {name}")))?;
        self.infos[k].requires_grad = requires_grad;
        Ok(())
    }

    pub fn requires_grad(&self, name: &str) -> Option<bool> {
        self.info(name).map(|i| i.requires_grad)
    }

    fn to_state_dict(&self, data: &[f32]) -> StateDict {
        self.infos
            .iter()
            .map(|i| (i.name.clone(), Tensor::new(i.shape.clone(), data[i.offset..i.offset + i.len()].to_vec())))
            .collect()
    }

    pub fn state_dict(&self) -> StateDict {
        self.to_state_dict(&self.params)
    }

    /// Gradients keyed by parameter name.
    pub fn grads_state_dict(&self) -> StateDict {
        self.to_state_dict(&self.grads)
    }

    pub fn zero_grad(&mut self) {
        let _prof = finetune_engine::profile::scope("zero_grad");
        self.grads.fill(0.0);
    }

    fn check_batch(&self, ws: &Workspace, b: &Batch<'_>) -> Result<(), LlamaError> {
        let cfg = &self.config;
        let n = ws.batch * ws.seq;
        let bad = |m: String| Err(LlamaError::Batch(m));
        let w = (cfg.num_attention_heads + 2 * cfg.kv_heads()) * cfg.head_dim();
        let sized = ws.layers.len() == cfg.num_hidden_layers
            && ws.emb.len() == n * cfg.hidden_size
            && ws.layers.iter().all(|a| a.qkv.len() == n * w && a.act.len() == n * cfg.intermediate_size)
            && ws.cos.len() == ws.seq * cfg.head_dim() / 2;
        if !sized {
            return bad("the workspace was created for a different model configuration".into());
        }
        if b.input_ids.len() != n || b.attention_mask.len() != n {
            return bad(format!("expected {n} input ids and mask entries for a {}×{} workspace", ws.batch, ws.seq));
        }
        if let Some(&id) = b.input_ids.iter().find(|&&i| i as usize >= cfg.vocab_size) {
            return bad(format!("input id {id} out of range for vocab_size {}", cfg.vocab_size));
        }
        if b.attention_mask.iter().any(|&m| m > 1) {
            return bad("attention_mask entries must be 0 or 1".into());
        }
        if let Some(win) = cfg.active_sliding_window() {
            if ws.seq > win {
                return bad(format!(
                    "sequence length {} exceeds sliding_window {win}; sliding-window attention is not supported",
                    ws.seq
                ));
            }
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
        if let Some(pos) = b.position_ids {
            if pos.len() != n {
                return bad(format!("expected {n} position_ids, one per token, got {}", pos.len()));
            }
            if let Some(&q) = pos.iter().find(|&&q| q as usize >= ws.seq) {
                return bad(format!("position id {q} is not below the sequence length {}", ws.seq));
            }
        }
        Ok(())
    }

    fn range(&self, k: usize) -> std::ops::Range<usize> {
        let i = &self.infos[k];
        i.offset..i.offset + i.len()
    }

    /// Embedding, decoder layers and final norm: leaves the LM head's input in `ws.hidden`.
    fn trunk(&self, ws: &mut Workspace, batch: &Batch<'_>) -> Result<(), LlamaError> {
        self.check_batch(ws, batch)?;
        let cfg = &self.config;
        let (bsz, t, c, f) = (ws.batch, ws.seq, cfg.hidden_size, cfg.intermediate_size);
        let (h, kv, d) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
        let (n, w) = (bsz * t, (h + 2 * kv) * d);
        let shape = Shape { batch: bsz, seq: t, heads: h, kv_heads: kv, head_dim: d };
        let p = &self.params;
        let s = |k: usize| &p[self.range(k)];
        let eps = cfg.rms_norm_eps;
        if let Some(l) = &self.lora {
            l.prepare(&mut ws.lora, n);
        }

        ws.ids.copy_from_slice(batch.input_ids);
        match batch.position_ids {
            Some(pos) => {
                ws.pos.copy_from_slice(pos);
                // A packed sequence starts at each position 0 (and at each row start).
                ws.packed = true;
                let mut k = 0u32;
                for (i, (sg, &q)) in ws.seg.iter_mut().zip(pos).enumerate() {
                    if q == 0 || i % t == 0 {
                        k += 1;
                    }
                    *sg = k;
                }
            }
            None => {
                for (i, q) in ws.pos.iter_mut().enumerate() {
                    *q = (i % t) as u32;
                }
                ws.packed = false;
            }
        }
        for (m, &a) in ws.mask_add.iter_mut().zip(batch.attention_mask) {
            // transformers' additive mask: 0 for tokens, the most negative f32 for padding.
            *m = if a == 0 { f32::MIN } else { 0.0 };
        }
        let table = s(self.idx.embed);
        for (o, &id) in ws.emb.chunks_exact_mut(c).zip(&ws.ids) {
            o.copy_from_slice(&table[id as usize * c..(id as usize + 1) * c]);
        }

        for (li, lx) in self.idx.layers.iter().enumerate() {
            let (prev, rest) = ws.layers.split_at_mut(li);
            let inp: &[f32] = if li == 0 { &ws.emb } else { &prev[li - 1].out };
            let a = &mut rest[0];
            rmsnorm::forward(&mut a.ln1, &mut a.rstd1, inp, s(lx.ln1), n, c, eps);
            // q, k, v weights (and biases) are consecutive: one [w, C] projection.
            let wqkv = &p[self.infos[lx.q_w].offset..self.range(lx.v_w).end];
            let bqkv = lx.qkv_b.map(|[bq, _, bv]| &p[self.infos[bq].offset..self.range(bv).end]);
            linear::forward(&mut a.qkv, &a.ln1, wqkv, bqkv, n, c, w);
            self.lora_forward(&mut ws.lora, li, 0..3, &mut a.qkv, &a.ln1, n);
            rope::apply(&mut a.qkv, w, 0, h, d, &ws.pos, &ws.cos, &ws.sin, false);
            rope::apply(&mut a.qkv, w, h * d, kv, d, &ws.pos, &ws.cos, &ws.sin, false);
            match ws.packed.then_some(&ws.seg) {
                Some(seg) => {
                    causal_attention::forward_segmented(&mut a.ctx, &mut a.probs, &a.qkv, &ws.mask_add, seg, shape)
                }
                None => causal_attention::forward(&mut a.ctx, &mut a.probs, &a.qkv, &ws.mask_add, shape),
            }
            linear::forward(&mut a.mid, &a.ctx, s(lx.o_w), lx.o_b.map(s), n, h * d, c);
            self.lora_forward(&mut ws.lora, li, 3..4, &mut a.mid, &a.ctx, n);
            residual::add_assign(&mut a.mid, inp);
            rmsnorm::forward(&mut a.ln2, &mut a.rstd2, &a.mid, s(lx.ln2), n, c, eps);
            let wgu = &p[self.infos[lx.gate_w].offset..self.range(lx.up_w).end];
            linear::forward(&mut a.gate_up, &a.ln2, wgu, None, n, c, 2 * f);
            self.lora_forward(&mut ws.lora, li, 4..6, &mut a.gate_up, &a.ln2, n);
            swiglu::forward(&mut a.act, &a.gate_up, n, f);
            linear::forward(&mut a.out, &a.act, s(lx.down_w), None, n, f, c);
            self.lora_forward(&mut ws.lora, li, 6..7, &mut a.out, &a.act, n);
            residual::add_assign(&mut a.out, &a.mid);
        }
        let last: &[f32] = match ws.layers.last() {
            Some(a) => &a.out,
            None => &ws.emb,
        };
        rmsnorm::forward(&mut ws.hidden, &mut ws.final_rstd, last, s(self.idx.norm), n, c, eps);
        Ok(())
    }

    /// Shifted targets from `labels`; returns the loss normaliser (kept targets, or the caller's).
    fn prepare_targets(ws: &mut Workspace, batch: &Batch<'_>, labels: &[i64]) -> f32 {
        let t = ws.seq;
        for (row_t, row_y) in ws.targets.chunks_exact_mut(t).zip(labels.chunks_exact(t)) {
            row_t[..t - 1].copy_from_slice(&row_y[1..]);
            row_t[t - 1] = IGNORE_INDEX;
        }
        batch.loss_normalizer.unwrap_or(lce::count_targets(&ws.targets) as f32)
    }

    /// The causal-LM loss of `batch` (which must have labels), without gradients. NaN when every target is
    /// ignored (as PyTorch's mean over no elements).
    pub fn forward(&self, ws: &mut Workspace, batch: &Batch<'_>) -> Result<f32, LlamaError> {
        let labels = batch.labels.ok_or_else(|| LlamaError::Batch("the loss needs labels".into()))?;
        ws.lora.train_seed = None;
        self.trunk(ws, batch)?;
        let norm = Self::prepare_targets(ws, batch, labels);
        let (n, c, v) = (ws.batch * ws.seq, self.config.hidden_size, self.config.vocab_size);
        let head = &self.params[self.range(self.idx.head)];
        Ok(lce::forward_backward(&ws.hidden, head, &ws.targets, n, c, v, norm, None, &mut ws.head))
    }

    /// Logits `[batch, seq, vocab]` into `ws.logits`, or with `last_only` `[batch, vocab]` at each sequence's
    /// last real token (the last position whose attention mask is 1), for generation.
    pub fn logits<'w>(
        &self,
        ws: &'w mut Workspace,
        batch: &Batch<'_>,
        last_only: bool,
    ) -> Result<&'w [f32], LlamaError> {
        ws.lora.train_seed = None;
        self.trunk(ws, batch)?;
        let (bsz, t, c, v) = (ws.batch, ws.seq, self.config.hidden_size, self.config.vocab_size);
        let head = &self.params[self.range(self.idx.head)];
        if last_only {
            let mut rows = vec![0.0f32; bsz * c];
            for b in 0..bsz {
                let m = &batch.attention_mask[b * t..(b + 1) * t];
                let last = m.iter().rposition(|&x| x == 1).unwrap_or(t - 1);
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
    /// parameter that requires one. The LM head's logits gradient is formed chunk by chunk during the loss.
    pub fn forward_backward(&mut self, ws: &mut Workspace, batch: &Batch<'_>) -> Result<f32, LlamaError> {
        let labels = batch.labels.ok_or_else(|| LlamaError::Batch("training needs labels".into()))?;
        // LoRA dropout masks: a fresh seed per training pass, reused by the backward.
        ws.lora.train_seed = self.lora.as_mut().and_then(|l| l.next_train_seed());
        self.trunk(ws, batch)?;
        let norm = Self::prepare_targets(ws, batch, labels);
        let cfg = &self.config;
        let (bsz, t, c, f, v) = (ws.batch, ws.seq, cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let (h, kv, d) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
        let (n, w) = (bsz * t, (h + 2 * kv) * d);
        let shape = Shape { batch: bsz, seq: t, heads: h, kv_heads: kv, head_dim: d };
        let Self { params: p, grads: g, infos, idx, lora, .. } = self;
        let lora = lora.as_ref();
        let rg = |k: usize| infos[k].requires_grad;
        let r = |k: usize| infos[k].offset..infos[k].offset + infos[k].len();
        let s = |k: usize| &p[r(k)];

        let loss = {
            let head_rg = rg(idx.head);
            let grads = lce::Grads {
                dhidden: Some(&mut ws.dhidden),
                dweight: if head_rg { Some(&mut g[r(idx.head)]) } else { None },
            };
            lce::forward_backward(&ws.hidden, s(idx.head), &ws.targets, n, c, v, norm, Some(grads), &mut ws.head)
        };

        // Final norm: ws.dx becomes the gradient of the last layer's output.
        {
            let last: &[f32] = match ws.layers.last() {
                Some(a) => &a.out,
                None => &ws.emb,
            };
            let dw = if rg(idx.norm) { Some(&mut g[r(idx.norm)]) } else { None };
            rmsnorm::backward(&mut ws.dx, dw, &ws.dhidden, last, s(idx.norm), &ws.final_rstd, n, c, false);
        }

        for li in (0..idx.layers.len()).rev() {
            let lx = idx.layers[li];
            let (prev, rest) = ws.layers.split_at(li);
            let inp: &[f32] = if li == 0 { &ws.emb } else { &prev[li - 1].out };
            let a = &rest[0];

            // MLP: out = mid + down(swiglu(gate_up(ln2(mid)))).
            matmul(&mut ws.dact, &ws.dx, s(lx.down_w), n, c, f, false, false, false);
            if let Some(l) = lora {
                l.backward(&mut ws.lora, infos, p, g, li, 6..7, &mut ws.dact, &ws.dx, &a.act, n);
            }
            if rg(lx.down_w) {
                weight_grad(&mut g[r(lx.down_w)], &ws.dx, c, 0, c, &a.act, n, f);
            }
            swiglu::backward(&mut ws.dgate_up, &ws.dact, &a.gate_up, n, f);
            let gu = infos[lx.gate_w].offset..r(lx.up_w).end;
            matmul(&mut ws.dln, &ws.dgate_up, &p[gu], n, 2 * f, c, false, false, false);
            if let Some(l) = lora {
                l.backward(&mut ws.lora, infos, p, g, li, 4..6, &mut ws.dln, &ws.dgate_up, &a.ln2, n);
            }
            for (k, col) in [(lx.gate_w, 0), (lx.up_w, f)] {
                if rg(k) {
                    weight_grad(&mut g[r(k)], &ws.dgate_up, 2 * f, col, f, &a.ln2, n, c);
                }
            }
            let dw = if rg(lx.ln2) { Some(&mut g[r(lx.ln2)]) } else { None };
            rmsnorm::backward(&mut ws.dx, dw, &ws.dln, &a.mid, s(lx.ln2), &a.rstd2, n, c, true);

            // Attention: mid = inp + o_proj(attn(rope(qkv(ln1(inp))))).
            matmul(&mut ws.dctx, &ws.dx, s(lx.o_w), n, c, h * d, false, false, false);
            if let Some(l) = lora {
                l.backward(&mut ws.lora, infos, p, g, li, 3..4, &mut ws.dctx, &ws.dx, &a.ctx, n);
            }
            if rg(lx.o_w) {
                weight_grad(&mut g[r(lx.o_w)], &ws.dx, c, 0, c, &a.ctx, n, h * d);
            }
            if let Some(ob) = lx.o_b.filter(|&k| rg(k)) {
                bias_grad(&mut g[r(ob)], &ws.dx[..n * c], c, 0);
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
            rope::backward(&mut ws.dqkv, w, 0, h, d, &ws.pos, &ws.cos, &ws.sin);
            rope::backward(&mut ws.dqkv, w, h * d, kv, d, &ws.pos, &ws.cos, &ws.sin);
            let qkv = infos[lx.q_w].offset..r(lx.v_w).end;
            matmul(&mut ws.dln, &ws.dqkv, &p[qkv], n, w, c, false, false, false);
            if let Some(l) = lora {
                l.backward(&mut ws.lora, infos, p, g, li, 0..3, &mut ws.dln, &ws.dqkv, &a.ln1, n);
            }
            let cols = [(0, h * d), (h * d, kv * d), ((h + kv) * d, kv * d)];
            for (k, (col, rows)) in [lx.q_w, lx.k_w, lx.v_w].into_iter().zip(cols) {
                if rg(k) {
                    weight_grad(&mut g[r(k)], &ws.dqkv, w, col, rows, &a.ln1, n, c);
                }
            }
            if let Some(bs) = lx.qkv_b {
                for (k, (col, _)) in bs.into_iter().zip(cols) {
                    if rg(k) {
                        bias_grad(&mut g[r(k)], &ws.dqkv[..n * w], w, col);
                    }
                }
            }
            let dw = if rg(lx.ln1) { Some(&mut g[r(lx.ln1)]) } else { None };
            rmsnorm::backward(&mut ws.dx, dw, &ws.dln, inp, s(lx.ln1), &a.rstd1, n, c, true);
        }

        if rg(idx.embed) {
            let ge = &mut g[r(idx.embed)];
            // Rows repeat across tokens, so the scatter is serial; it is O(n·c), small next to the matmuls.
            for (dx, &id) in ws.dx.chunks_exact(c).zip(&ws.ids) {
                for (t, v) in ge[id as usize * c..(id as usize + 1) * c].iter_mut().zip(dx) {
                    *t += v;
                }
            }
        }
        ws.lora.train_seed = None;
        Ok(loss)
    }

    /// `torch.nn.utils.clip_grad_norm_` over the gradients of trainable parameters; returns the norm before
    /// clipping.
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

    /// One AdamW step over every trainable parameter, without weight decay for biases and norm weights.
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

/// Keys and values of every layer, `[batch, kv_heads, max_len, head_dim]` each, allocated once for a whole
/// generation. Keys are stored after the rotary embedding, as transformers' `DynamicCache`.
pub struct KvCache {
    pub batch: usize,
    pub max_len: usize,
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) k: Vec<Vec<f32>>,
    pub(crate) v: Vec<Vec<f32>>,
    pub(crate) len: usize,
}

impl KvCache {
    pub fn new(cfg: &LlamaConfig, batch: usize, max_len: usize) -> Self {
        Self::with_dims(cfg.num_hidden_layers, batch, cfg.kv_heads(), cfg.head_dim(), max_len)
    }

    /// A cache of `layers` layers for any decoder with these key/value dimensions.
    pub fn with_dims(layers: usize, batch: usize, kv_heads: usize, head_dim: usize, max_len: usize) -> Self {
        let z = || vec![0.0f32; batch * kv_heads * max_len * head_dim];
        KvCache {
            batch,
            max_len,
            kv_heads,
            head_dim,
            k: (0..layers).map(|_| z()).collect(),
            v: (0..layers).map(|_| z()).collect(),
            len: 0,
        }
    }

    /// Tokens per row held so far (padding included).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every cached token (the buffers are kept).
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// Activations of [`LlamaForCausalLM::forward_cached`] for up to `max_new` new tokens per row and `max_len`
/// tokens in all, allocated once so that decode steps allocate nothing.
pub struct DecodeWorkspace {
    pub batch: usize,
    pub max_new: usize,
    pub max_len: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
    pos: Vec<u32>,
    x: Vec<f32>,
    ln: Vec<f32>,
    rstd: Vec<f32>,
    qkv: Vec<f32>,
    /// Attention output per (row, head): `[batch, heads, max_new, head_dim]`.
    heads_out: Vec<f32>,
    ctx: Vec<f32>,
    tmp: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
    /// Scores per (row, head): `[batch, heads, max_new, max_len]`.
    scores: Vec<f32>,
    last: Vec<f32>,
    last_rstd: Vec<f32>,
    /// `[batch, vocab]` logits of the last new token of each row.
    pub logits: Vec<f32>,
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
            batch,
            max_new,
            max_len,
            cos,
            sin,
            pos: vec![0; n],
            x: z(n * c),
            ln: z(n * c),
            rstd: z(n),
            qkv: z(n * w),
            heads_out: z(n * h * d),
            ctx: z(n * h * d),
            tmp: z(n * c),
            gate_up: z(n * 2 * f),
            act: z(n * f),
            scores: z(batch * h * max_new * max_len),
            last: z(batch * c),
            last_rstd: z(batch),
            logits: z(batch * cfg.vocab_size),
        }
    }
}

impl LlamaForCausalLM {
    /// Runs `input_ids` (`[batch, n_new]`) on top of the tokens already in `cache`, appends their keys and values
    /// and returns the `[batch, vocab]` logits of the last new token of each row. Prefill (the whole prompt) and
    /// decode steps (`n_new = 1`) are the same call. `attention_mask` is `[batch, cache.len() + n_new]` (0 for
    /// left padding); positions are `cumsum(attention_mask) − 1` (1 on padding), as transformers' `generate`.
    pub fn forward_cached<'w>(
        &self,
        cache: &mut KvCache,
        ws: &'w mut DecodeWorkspace,
        input_ids: &[u32],
        attention_mask: &[u32],
    ) -> Result<&'w [f32], LlamaError> {
        let _prof = finetune_engine::profile::scope("llama.forward_cached");
        let cfg = &self.config;
        let (bsz, c, f, v) = (cache.batch, cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let (h, kv, d) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
        let (w, past, max_len) = ((h + 2 * kv) * d, cache.len, cache.max_len);
        let bad = |m: String| Err(LlamaError::Batch(m));
        if cache.k.len() != cfg.num_hidden_layers || cache.kv_heads != kv || cache.head_dim != d {
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
        if total > max_len {
            return bad(format!("{total} tokens per row exceed the KV cache's max_len {max_len}"));
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
        if let Some(win) = cfg.active_sliding_window() {
            if total > win {
                return bad(format!(
                    "{total} tokens exceed sliding_window {win}; sliding-window attention is not supported"
                ));
            }
        }
        let n = bsz * n_new;
        let eps = cfg.rms_norm_eps;
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
        let table = s(self.idx.embed);
        for (o, &id) in ws.x[..n * c].chunks_exact_mut(c).zip(input_ids) {
            o.copy_from_slice(&table[id as usize * c..(id as usize + 1) * c]);
        }
        let pos = &ws.pos[..n];
        let dims =
            CachedAttn { batch: bsz, heads: h, kv_heads: kv, head_dim: d, n_new, past, max_len, max_new: ws.max_new };
        for (li, lx) in self.idx.layers.iter().enumerate() {
            rmsnorm::forward(&mut ws.ln, &mut ws.rstd, &ws.x[..n * c], s(lx.ln1), n, c, eps);
            let wqkv = &p[self.infos[lx.q_w].offset..self.range(lx.v_w).end];
            let bqkv = lx.qkv_b.map(|[bq, _, bv]| &p[self.infos[bq].offset..self.range(bv).end]);
            linear::forward(&mut ws.qkv, &ws.ln, wqkv, bqkv, n, c, w);
            rope::apply(&mut ws.qkv, w, 0, h, d, pos, &ws.cos, &ws.sin, false);
            rope::apply(&mut ws.qkv, w, h * d, kv, d, pos, &ws.cos, &ws.sin, false);
            let (kc, vc) = (&mut cache.k[li], &mut cache.v[li]);
            dims.append(kc, vc, &ws.qkv, w, h * d, (h + kv) * d);
            dims.attend(kc, vc, &ws.qkv, w, attention_mask, &mut ws.scores, &mut ws.heads_out, &mut ws.ctx);
            linear::forward(&mut ws.tmp, &ws.ctx, s(lx.o_w), lx.o_b.map(s), n, h * d, c);
            residual::add_assign(&mut ws.x[..n * c], &ws.tmp[..n * c]);
            rmsnorm::forward(&mut ws.ln, &mut ws.rstd, &ws.x[..n * c], s(lx.ln2), n, c, eps);
            let wgu = &p[self.infos[lx.gate_w].offset..self.range(lx.up_w).end];
            linear::forward(&mut ws.gate_up, &ws.ln, wgu, None, n, c, 2 * f);
            swiglu::forward(&mut ws.act, &ws.gate_up, n, f);
            linear::forward(&mut ws.tmp, &ws.act, s(lx.down_w), None, n, f, c);
            residual::add_assign(&mut ws.x[..n * c], &ws.tmp[..n * c]);
        }
        cache.len = total;
        for b in 0..bsz {
            let r = b * n_new + n_new - 1;
            ws.tmp[b * c..(b + 1) * c].copy_from_slice(&ws.x[r * c..(r + 1) * c]);
        }
        rmsnorm::forward(&mut ws.last, &mut ws.last_rstd, &ws.tmp[..bsz * c], s(self.idx.norm), bsz, c, eps);
        let _prof = finetune_engine::profile::scope("llama.lm_head");
        matmul(&mut ws.logits, &ws.last, s(self.idx.head), bsz, c, v, false, true, false);
        Ok(&ws.logits)
    }
}

/// Shape of one cached attention call: `n_new` new query rows per batch row on top of `past` cached tokens, in
/// caches `[batch, kv_heads, max_len, head_dim]` (shared by the Llama family and GPT-2).
#[derive(Clone, Copy, Debug)]
pub(crate) struct CachedAttn {
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub n_new: usize,
    pub past: usize,
    pub max_len: usize,
    /// Row capacity of the `scores` and `heads_out` buffers.
    pub max_new: usize,
}

impl CachedAttn {
    /// Copies the new keys (columns `k_col..`) and values (`v_col..`) of each `w`-wide qkv row into the caches.
    pub fn append(&self, kc: &mut [f32], vc: &mut [f32], qkv: &[f32], w: usize, k_col: usize, v_col: usize) {
        let (n_new, d) = (self.n_new, self.head_dim);
        for b in 0..self.batch {
            for i in 0..n_new {
                let row = &qkv[(b * n_new + i) * w..][..w];
                for g in 0..self.kv_heads {
                    let at = ((b * self.kv_heads + g) * self.max_len + self.past + i) * d;
                    kc[at..at + d].copy_from_slice(&row[k_col + g * d..k_col + (g + 1) * d]);
                    vc[at..at + d].copy_from_slice(&row[v_col + g * d..v_col + (g + 1) * d]);
                }
            }
        }
    }

    /// `ctx[row, h·d..] = softmax(q Kᵀ / √d + mask) V` for every new row and query head (query heads in columns
    /// `0..heads·d` of `qkv`), with transformers' additive mask (the most negative f32) on padding and future
    /// keys. `mask` is `[batch, past + n_new]`.
    #[allow(clippy::too_many_arguments)]
    pub fn attend(
        &self,
        kc: &[f32],
        vc: &[f32],
        qkv: &[f32],
        w: usize,
        mask: &[u32],
        scores: &mut [f32],
        heads_out: &mut [f32],
        ctx: &mut [f32],
    ) {
        use finetune_engine::math::dot;
        let _prof = finetune_engine::profile::scope("cached_attention");
        let (h, kv, d, n_new, past, max_len) =
            (self.heads, self.kv_heads, self.head_dim, self.n_new, self.past, self.max_len);
        let (total, rep) = (past + n_new, h / kv);
        let scale = 1.0 / (d as f32).sqrt();
        // One task per (row, query head); the matmuls inside are small, so they run on the calling thread.
        let work = |(bh, (sc, out)): (usize, (&mut [f32], &mut [f32]))| {
            let (b, hh) = (bh / h, bh % h);
            let g = hh / rep;
            let kv_at = (b * kv + g) * max_len * d;
            let (kb, vb) = (&kc[kv_at..kv_at + total * d], &vc[kv_at..kv_at + total * d]);
            // Decode steps are dot products over the cache: a matmul call would cost more than the work.
            let small = n_new <= 4;
            if small {
                for i in 0..n_new {
                    let q = &qkv[(b * n_new + i) * w + hh * d..][..d];
                    for (x, k) in sc[i * total..(i + 1) * total].iter_mut().zip(kb.chunks_exact(d)) {
                        *x = dot(q, k) * scale;
                    }
                }
            } else {
                let q = View { data: &qkv[b * n_new * w + hh * d..], rs: w, cs: 1 };
                let kt = View { data: kb, rs: 1, cs: d };
                gemm_view(sc, total, q, kt, n_new, total, d, scale, false, Par::Seq);
            }
            let m = &mask[b * total..(b + 1) * total];
            for (i, row) in sc[..n_new * total].chunks_exact_mut(total).enumerate() {
                for (j, (x, &mv)) in row.iter_mut().zip(m).enumerate() {
                    if mv == 0 || j > past + i {
                        *x += f32::MIN;
                    }
                }
                let mx = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut z = 0.0f32;
                for x in row.iter_mut() {
                    *x = (*x - mx).exp();
                    z += *x;
                }
                let inv = 1.0 / z;
                row.iter_mut().for_each(|x| *x *= inv);
            }
            if small {
                for (i, o) in out[..n_new * d].chunks_exact_mut(d).enumerate() {
                    o.fill(0.0);
                    for (&pj, vr) in sc[i * total..(i + 1) * total].iter().zip(vb.chunks_exact(d)) {
                        for (a, &x) in o.iter_mut().zip(vr) {
                            *a += pj * x;
                        }
                    }
                }
            } else {
                let vv = View { data: vb, rs: d, cs: 1 };
                gemm_view(out, d, View::new(sc, total, false), vv, n_new, d, total, 1.0, false, Par::Seq);
            }
        };
        let (stride, od) = (self.max_new * max_len, self.max_new * d);
        let (scores, heads_out) = (&mut scores[..self.batch * h * stride], &mut heads_out[..self.batch * h * od]);
        // Threads pay off only once the attention work dwarfs their wake-up cost.
        if self.batch * h * n_new * total * d >= 1 << 20 {
            use rayon::prelude::*;
            scores.par_chunks_mut(stride).zip(heads_out.par_chunks_mut(od)).enumerate().for_each(work);
        } else {
            scores.chunks_mut(stride).zip(heads_out.chunks_mut(od)).enumerate().for_each(work);
        }
        for b in 0..self.batch {
            for hh in 0..h {
                for i in 0..n_new {
                    let src = &heads_out[((b * h + hh) * self.max_new + i) * d..][..d];
                    ctx[(b * n_new + i) * h * d + hh * d..][..d].copy_from_slice(src);
                }
            }
        }
    }
}

/// Copies saved AdamW moments over a model's, after checking they cover every parameter (shared by the decoders).
pub(crate) fn restore_moments(m: &mut [f32], v: &mut [f32], saved_m: &[f32], saved_v: &[f32]) -> Result<(), String> {
    if saved_m.len() != m.len() || saved_v.len() != v.len() {
        return Err(format!(
            "optimizer state has {} / {} values for {} parameters",
            saved_m.len(),
            saved_v.len(),
            m.len()
        ));
    }
    m.copy_from_slice(saved_m);
    v.copy_from_slice(saved_v);
    Ok(())
}
