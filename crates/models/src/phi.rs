//! Phi (`transformers.PhiForCausalLM`, `model_type: "phi"`: Phi-1, Phi-1.5, Phi-2) for causal-LM fine-tuning on
//! the engine's kernels.
//!
//! token embedding → N parallel blocks (one LayerNorm feeds both branches: q/k/v projections with biases → a
//! partial rotary embedding on the first `partial_rotary_factor · head_dim` columns of each head → causal
//! grouped-query attention → `dense`; and `fc1` → GELU (tanh approximation, `gelu_new`) → `fc2`; the block's
//! output is `attention + MLP + input`) → final LayerNorm → LM head with a bias.
//!
//! Same conventions as [`crate::llama`] (whose layout and backward this file follows): parameters in a
//! [`ParamStore`] by Hugging Face name, nn.Linear weights `[out, in]` with q/k/v stored consecutively so they run
//! as one projection, a [`Workspace`] per (batch, sequence) shape, the loss of transformers' `ForCausalLMLoss`
//! through the chunked fused LM-head cross-entropy (with the head's bias), batches, KV cache and cached attention
//! from [`crate::decoder`].
//!
//! Not supported (refused when the config asks for them): `qk_layernorm`, rope scaling, activations other than
//! `gelu_new`/`gelu_pytorch_tanh`, attention dropout. Residual and embedding dropout (`resid_pdrop`,
//! `embd_pdrop`) are not applied: training runs as `model.eval()` would, as for GPT-2.

use finetune_engine::bf16::linear as bf16lin;
use finetune_engine::kernels::causal_attention::Shape;
use finetune_engine::kernels::linear_cross_entropy::{self as lce, Scratch};
use finetune_engine::kernels::{gelu_tanh, layernorm, residual, rope};
use finetune_engine::StateDict;
use serde::Deserialize;

use crate::acts;
use crate::decoder::{
    self, bias_grad, input_grad, layernorm_backward, weight_grad, Architecture, DecodeBuffers, Geometry, Head, KvDims,
    LmHead, StepRows,
};
pub use crate::decoder::{Batch, KvCache};
use crate::error::ModelError;
use crate::lora::{LoraWorkspace, Module};
use crate::params::{Layout, LoraTargets, ParamStore, Parts};

fn default_eps() -> f32 {
    1e-5
}
fn default_act() -> String {
    "gelu_new".into()
}

/// The fields of a Hugging Face Phi `config.json` this model uses.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PhiConfig {
    /// Sizes shared with the other decoders; `cfg.hidden_size` reads them through `Deref`.
    #[serde(flatten)]
    pub geometry: Geometry,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f32,
    /// transformers 4.x keeps θ and the rotary fraction at the top level; 5.x in `rope_parameters`.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(default)]
    pub partial_rotary_factor: Option<f64>,
    #[serde(default)]
    pub rope_parameters: Option<serde_json::Value>,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub attention_dropout: f32,
    #[serde(default)]
    pub qk_layernorm: bool,
}

impl PhiConfig {
    pub fn from_json(text: &str) -> Result<Self, ModelError> {
        let c: PhiConfig = serde_json::from_str(text).map_err(|e| ModelError::Config(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    fn rope_value(&self, key: &str) -> Option<f64> {
        self.rope_parameters.as_ref().and_then(|p| p.get(key)).and_then(|v| v.as_f64())
    }

    /// θ of the rotary embedding (default 10000).
    pub fn rope_theta(&self) -> f64 {
        self.rope_theta.or_else(|| self.rope_value("rope_theta")).unwrap_or(10000.0)
    }

    /// Columns of each head that rotate: `int(head_dim · partial_rotary_factor)` (factor 0.5 by default).
    pub fn rotary_dim(&self) -> usize {
        let factor = self.partial_rotary_factor.or_else(|| self.rope_value("partial_rotary_factor")).unwrap_or(0.5);
        (self.head_dim() as f64 * factor) as usize
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let err = |m: String| Err(ModelError::Config(m));
        self.geometry.validate()?;
        let d = self.head_dim();
        let rot = self.rotary_dim();
        if rot == 0 || rot > d || !rot.is_multiple_of(2) {
            return err(format!("partial_rotary_factor gives {rot} rotary columns of a {d}-wide head (must be even)"));
        }
        let scaled = [&self.rope_scaling, &self.rope_parameters].into_iter().flatten().find_map(|v| {
            let t = v.get("rope_type").or_else(|| v.get("type")).and_then(|t| t.as_str())?;
            (t != "default").then(|| t.to_string())
        });
        if let Some(t) = scaled {
            return err(format!("rope scaling {t:?} is not supported (only the default rotary embedding)"));
        }
        if !matches!(self.hidden_act.as_str(), "gelu_new" | "gelu_pytorch_tanh") {
            return err(format!(
                "hidden_act {:?} is not supported (only \"gelu_new\" and \"gelu_pytorch_tanh\")",
                self.hidden_act
            ));
        }
        if self.qk_layernorm {
            return err("qk_layernorm is not supported".into());
        }
        if self.attention_dropout != 0.0 {
            return err("attention_dropout is not supported (must be 0)".into());
        }
        Ok(())
    }
}

impl std::ops::Deref for PhiConfig {
    type Target = Geometry;
    fn deref(&self) -> &Geometry {
        &self.geometry
    }
}

impl KvDims for PhiConfig {
    fn kv_dims(&self) -> (usize, usize, usize) {
        (self.num_hidden_layers, self.kv_heads(), self.head_dim())
    }
}

/// Parameter indices of one layer. q, k, v weights are consecutive (one `[(H + 2·KV)·d, C]` matrix), as are
/// their biases.
#[derive(Debug, Clone, Copy)]
struct LayerIdx {
    q_w: usize,
    k_w: usize,
    v_w: usize,
    q_b: usize,
    v_b: usize,
    dense_w: usize,
    dense_b: usize,
    fc1_w: usize,
    fc1_b: usize,
    fc2_w: usize,
    fc2_b: usize,
    ln_w: usize,
    ln_b: usize,
}

#[derive(Debug, Clone)]
struct Idx {
    embed: usize,
    layers: Vec<LayerIdx>,
    lnf_w: usize,
    lnf_b: usize,
    /// The LM head's weight: `embed` when tied.
    head: usize,
    head_b: usize,
}

fn layout(cfg: &PhiConfig) -> (Layout, Idx) {
    let (c, f, h, kv, d) =
        (cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
    let mut l = Layout::default();
    // Hugging Face Trainer: no weight decay for biases and LayerNorm weights.
    let mut add = |name: String, shape: Vec<usize>| {
        let decay = !(name.ends_with("bias") || name.contains("layernorm"));
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
        let q_b = add(format!("{a}.q_proj.bias"), vec![h * d]);
        add(format!("{a}.k_proj.bias"), vec![kv * d]);
        let v_b = add(format!("{a}.v_proj.bias"), vec![kv * d]);
        layers.push(LayerIdx {
            q_w,
            k_w,
            v_w,
            q_b,
            v_b,
            dense_w: add(format!("{a}.dense.weight"), vec![c, h * d]),
            dense_b: add(format!("{a}.dense.bias"), vec![c]),
            fc1_w: add(format!("{p}.mlp.fc1.weight"), vec![f, c]),
            fc1_b: add(format!("{p}.mlp.fc1.bias"), vec![f]),
            fc2_w: add(format!("{p}.mlp.fc2.weight"), vec![c, f]),
            fc2_b: add(format!("{p}.mlp.fc2.bias"), vec![c]),
            ln_w: add(format!("{p}.input_layernorm.weight"), vec![c]),
            ln_b: add(format!("{p}.input_layernorm.bias"), vec![c]),
        });
    }
    let lnf_w = add("model.final_layernorm.weight".into(), vec![c]);
    let lnf_b = add("model.final_layernorm.bias".into(), vec![c]);
    let head = if cfg.tie_word_embeddings { embed } else { add("lm_head.weight".into(), vec![cfg.vocab_size, c]) };
    let head_b = add("lm_head.bias".into(), vec![cfg.vocab_size]);
    (l, Idx { embed, layers, lnf_w, lnf_b, head, head_b })
}

/// The linears LoRA can target (PEFT's names), in the order adapters are laid out in each layer. q/k/v stay
/// fused: each adapter adds into its columns of the fused output.
fn lora_targets(cfg: &PhiConfig) -> LoraTargets {
    let (e, f, h, kv, d) =
        (cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
    let w = (h + 2 * kv) * d;
    let md = |path, c_in, c_out, width, col| Module { path, c_in, c_out, width, col };
    LoraTargets {
        modules: vec![
            md("self_attn.q_proj", e, h * d, w, 0),
            md("self_attn.k_proj", e, kv * d, w, h * d),
            md("self_attn.v_proj", e, kv * d, w, (h + kv) * d),
            Module::plain("self_attn.dense", h * d, e),
            Module::plain("mlp.fc1", e, f),
            Module::plain("mlp.fc2", f, e),
        ],
        layer_prefixes: (0..cfg.num_hidden_layers).map(|i| format!("model.layers.{i}")).collect(),
        fan_in_fan_out: false,
    }
}

struct LayerActs {
    ln: Vec<f32>,
    mean: Vec<f32>,
    rstd: Vec<f32>,
    /// q/k/v after the rotary embedding.
    qkv: Vec<f32>,
    probs: Vec<f32>,
    ctx: Vec<f32>,
    fc: Vec<f32>,
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
    tmp: Vec<f32>,
    /// LoRA scratch, sized on the first pass with adapters.
    lora: LoraWorkspace,
}

impl Workspace {
    pub fn new(cfg: &PhiConfig, batch: usize, seq: usize) -> Self {
        Self::build(cfg, batch, seq, false)
    }

    /// A workspace for losses and logits without gradients: two layers' activations used in turn, no gradient
    /// buffers.
    pub fn for_inference(cfg: &PhiConfig, batch: usize, seq: usize) -> Self {
        Self::build(cfg, batch, seq, true)
    }

    fn build(cfg: &PhiConfig, batch: usize, seq: usize, inference: bool) -> Self {
        let chunk_rows = Scratch::rows_for_budget(decoder::HEAD_CHUNK_FLOATS, cfg.vocab_size);
        let (c, f, h, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads, cfg.head_dim());
        let w = (h + 2 * cfg.kv_heads()) * d;
        let n = batch * seq;
        let z = |k: usize| vec![0.0f32; k];
        let zb = |k: usize| if inference { Vec::new() } else { vec![0.0f32; k] };
        let probs = batch * h * seq * seq;
        let (cos, sin) = rope::tables(seq, cfg.rotary_dim(), cfg.rope_theta());
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
                    ln: z(n * c),
                    mean: z(n),
                    rstd: z(n),
                    qkv: z(n * w),
                    probs: z(probs),
                    ctx: z(n * h * d),
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
            dctx: zb(n * h * d),
            dqkv: zb(n * w),
            dscores: zb(probs),
            tmp: Vec::new(),
            lora: LoraWorkspace::default(),
        }
    }
}

pub struct PhiForCausalLM {
    pub config: PhiConfig,
    idx: Idx,
    /// Parameters, gradients, optimizer state and LoRA adapters (q/k/v, dense, fc1, fc2).
    pub store: ParamStore,
    /// Int8 copies of the decode step's weights (`--int8`), empty otherwise.
    int8: decoder::Int8Weights,
}

impl PhiForCausalLM {
    pub fn from_state_dict(config: PhiConfig, sd: &StateDict) -> Result<Self, ModelError> {
        config.validate()?;
        config.check_against(sd, "model.layers.0.mlp.fc1.weight")?;
        let (layout, idx) = layout(&config);
        let (store, _) = ParamStore::from_state_dict(layout, sd, &["model."], |_| false)?;
        let store = store.with_lora_targets(lora_targets(&config));
        Ok(PhiForCausalLM { config, idx, store, int8: Default::default() })
    }

    fn head(&self) -> Head<'_> {
        let (weight, bias) = (self.store.get(self.idx.head), Some(self.store.get(self.idx.head_b)));
        Head { weight, bias, version: decoder::weight_version(&self.store, self.idx.head, self.idx.head_b) }
    }

    fn check_batch(&self, ws: &Workspace, b: &Batch<'_>) -> Result<(), ModelError> {
        let cfg = &self.config;
        let n = ws.batch * ws.seq;
        let w = (cfg.num_attention_heads + 2 * cfg.kv_heads()) * cfg.head_dim();
        let sized = ws.layers.len() == acts::sets(cfg.num_hidden_layers, ws.inference)
            && ws.emb.len() == n * cfg.hidden_size
            && ws.layers.iter().all(|a| a.qkv.len() == n * w && a.act.len() == n * cfg.intermediate_size)
            && ws.cos.len() == ws.seq * cfg.rotary_dim() / 2;
        if !sized {
            return Err(ModelError::Batch("the workspace was created for a different model configuration".into()));
        }
        decoder::check_batch(b, n, ws.batch, ws.seq, cfg.vocab_size).map_err(ModelError::Batch)?;
        if let Some(&q) = b.position_ids.and_then(|pos| pos.iter().find(|&&q| q as usize >= ws.seq)) {
            return Err(ModelError::Batch(format!("position id {q} is not below the sequence length {}", ws.seq)));
        }
        Ok(())
    }

    /// Embedding, the parallel blocks and the final LayerNorm: leaves the LM head's input in `ws.lm`.
    fn trunk(&self, ws: &mut Workspace, batch: &Batch<'_>) -> Result<(), ModelError> {
        self.check_batch(ws, batch)?;
        let cfg = &self.config;
        let (bsz, t, c, f) = (ws.batch, ws.seq, cfg.hidden_size, cfg.intermediate_size);
        let (h, kv, d, rot) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim(), cfg.rotary_dim());
        let (n, w) = (bsz * t, (h + 2 * kv) * d);
        let shape = Shape { batch: bsz, seq: t, heads: h, kv_heads: kv, head_dim: d };
        let st = &self.store;
        let s = |k: usize| st.get(k);
        let eps = cfg.layer_norm_eps;
        st.lora_prepare(&mut ws.lora, n);
        let w16 = ws.lm.bf16.clone();
        let lc = |a: usize, b: usize| decoder::lin_ctx(&w16, st, a, b);

        ws.tok.load(batch, t, u32::MAX);
        decoder::embed(&mut ws.emb, s(self.idx.embed), &ws.tok.ids, c);

        for (li, lx) in self.idx.layers.iter().enumerate() {
            let (prev, a) = acts::layer_pair(&mut ws.layers, li);
            let inp: &[f32] = prev.map_or(&ws.emb, |p| &p.out);
            layernorm::forward(&mut a.ln, &mut a.mean, &mut a.rstd, inp, s(lx.ln_w), s(lx.ln_b), n, c, eps);
            let (wqkv, bqkv) = (st.span(lx.q_w, lx.v_w), Some(st.span(lx.q_b, lx.v_b)));
            bf16lin::forward(lc(lx.q_w, lx.v_w), &mut a.qkv, &a.ln, wqkv, bqkv, n, c, w);
            st.lora_forward(&mut ws.lora, li, 0..3, &mut a.qkv, &a.ln, n);
            decoder::rope_qk(&mut a.qkv, (h, kv, d), rot, &ws.tok.pos, &ws.cos, &ws.sin, false);
            let seg = ws.tok.segments();
            decoder::attention_forward(&mut a.ctx, &mut a.probs, &a.qkv, &ws.tok.mask_add, seg, shape);
            // out = input + dense(attention) + fc2(gelu(fc1(ln))).
            let (dw, db) = (s(lx.dense_w), Some(s(lx.dense_b)));
            bf16lin::forward(lc(lx.dense_w, lx.dense_w), &mut a.out, &a.ctx, dw, db, n, h * d, c);
            st.lora_forward(&mut ws.lora, li, 3..4, &mut a.out, &a.ctx, n);
            bf16lin::forward(lc(lx.fc1_w, lx.fc1_w), &mut a.fc, &a.ln, s(lx.fc1_w), Some(s(lx.fc1_b)), n, c, f);
            st.lora_forward(&mut ws.lora, li, 4..5, &mut a.fc, &a.ln, n);
            gelu_tanh::forward(&mut a.act, &a.fc);
            ws.tmp.resize(n * c, 0.0);
            bf16lin::forward(lc(lx.fc2_w, lx.fc2_w), &mut ws.tmp, &a.act, s(lx.fc2_w), Some(s(lx.fc2_b)), n, f, c);
            st.lora_forward(&mut ws.lora, li, 5..6, &mut ws.tmp, &a.act, n);
            residual::add_assign(&mut a.out, &ws.tmp);
            residual::add_assign(&mut a.out, inp);
        }
        let last: &[f32] = acts::last(&ws.layers, self.idx.layers.len()).map_or(&ws.emb, |a| &a.out);
        let (lw, lb) = (s(self.idx.lnf_w), s(self.idx.lnf_b));
        layernorm::forward(&mut ws.lm.hidden, &mut ws.lnf_mean, &mut ws.lnf_rstd, last, lw, lb, n, c, eps);
        Ok(())
    }

    /// Forward and backward in one pass: returns the loss and adds its gradient to the store's for every
    /// parameter that requires one.
    pub fn forward_backward(&mut self, ws: &mut Workspace, batch: &Batch<'_>) -> Result<f32, ModelError> {
        let labels = batch.labels.ok_or_else(|| ModelError::Batch("training needs labels".into()))?;
        if ws.inference {
            return Err(ModelError::Batch("training needs a workspace from Workspace::new, not for_inference".into()));
        }
        ws.lora.train_seed = self.store.lora_train_seed();
        self.trunk(ws, batch)?;
        let cfg = &self.config;
        let (bsz, t, c, f, v) = (ws.batch, ws.seq, cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let (h, kv, d, rot) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim(), cfg.rotary_dim());
        let (n, w) = (bsz * t, (h + 2 * kv) * d);
        let shape = Shape { batch: bsz, seq: t, heads: h, kv_heads: kv, head_dim: d };
        let idx = &self.idx;
        let w16 = ws.lm.bf16.clone();
        // The input-gradient matmuls' bf16 contexts, taken before the store is split into its parts.
        let ctxs = decoder::layer_ctxs(&w16, &self.store, &idx.layers, |lx| {
            [(lx.q_w, lx.v_w), (lx.dense_w, lx.dense_w), (lx.fc1_w, lx.fc1_w), (lx.fc2_w, lx.fc2_w)]
        });
        let bf = w16.is_some();
        let head_version = decoder::weight_version(&self.store, idx.head, idx.head_b);
        let Parts { infos, params: p, grads: g, lora, hook } = self.store.parts();
        let rg = |k: usize| infos[k].requires_grad;
        let r = |k: usize| infos[k].range();
        let s = |k: usize| &p[r(k)];

        let head = Head { weight: s(idx.head), bias: Some(s(idx.head_b)), version: head_version };
        let loss = {
            // The bias lies after the weight in the buffers: split once to borrow both gradients.
            let (lo, hi) = g.split_at_mut(r(idx.head_b).start);
            let dweight = rg(idx.head).then(|| &mut lo[r(idx.head)]);
            let dbias = rg(idx.head_b).then(|| &mut hi[..v]);
            let grads = lce::Grads { dhidden: None, dweight, dbias };
            ws.lm.loss(head, batch, labels, (t, c, v), Some(grads))
        };
        let mut tmp = std::mem::take(&mut ws.tmp);
        {
            let last: &[f32] = ws.layers.last().map_or(&ws.emb, |a| &a.out);
            let stats = (&ws.lnf_mean[..], &ws.lnf_rstd[..]);
            let ln = (idx.lnf_w, idx.lnf_b);
            layernorm_backward((infos, p, g), ln, &mut ws.dx, false, &ws.lm.dhidden, last, stats, (n, c), &mut tmp);
        }
        for li in (0..idx.layers.len()).rev() {
            let lx = idx.layers[li];
            let (prev, rest) = ws.layers.split_at(li);
            let inp: &[f32] = if li == 0 { &ws.emb } else { &prev[li - 1].out };
            let a = &rest[0];
            // ws.dx, the gradient of the block's output, is also its input's through the residual.

            let [lc_qkv, lc_dense, lc_fc1, lc_fc2] = ctxs[li];
            // MLP branch: fc2(gelu(fc1(ln))).
            input_grad(lc_fc2, &mut ws.dact, &ws.dx, s(lx.fc2_w), n, f, c, false);
            lora.backward(&mut ws.lora, infos, p, g, li, 5..6, &mut ws.dact, &ws.dx, &a.act, n);
            if rg(lx.fc2_w) {
                weight_grad(&mut g[r(lx.fc2_w)], &ws.dx, c, 0, c, &a.act, n, f, bf);
            }
            if rg(lx.fc2_b) {
                bias_grad(&mut g[r(lx.fc2_b)], &ws.dx[..n * c], c, 0);
            }
            gelu_tanh::backward(&mut ws.dact[..n * f], &a.fc);
            input_grad(lc_fc1, &mut ws.dln, &ws.dact, s(lx.fc1_w), n, c, f, false);
            lora.backward(&mut ws.lora, infos, p, g, li, 4..5, &mut ws.dln, &ws.dact, &a.ln, n);
            if rg(lx.fc1_w) {
                weight_grad(&mut g[r(lx.fc1_w)], &ws.dact, f, 0, f, &a.ln, n, c, bf);
            }
            if rg(lx.fc1_b) {
                bias_grad(&mut g[r(lx.fc1_b)], &ws.dact[..n * f], f, 0);
            }

            // Attention branch: dense(attention(rope(qkv(ln)))).
            input_grad(lc_dense, &mut ws.dctx, &ws.dx, s(lx.dense_w), n, h * d, c, false);
            lora.backward(&mut ws.lora, infos, p, g, li, 3..4, &mut ws.dctx, &ws.dx, &a.ctx, n);
            if rg(lx.dense_w) {
                weight_grad(&mut g[r(lx.dense_w)], &ws.dx, c, 0, c, &a.ctx, n, h * d, bf);
            }
            if rg(lx.dense_b) {
                bias_grad(&mut g[r(lx.dense_b)], &ws.dx[..n * c], c, 0);
            }
            let seg = ws.tok.segments();
            let (mask, dscores) = (&ws.tok.mask_add, &mut ws.dscores);
            decoder::attention_backward(&mut ws.dqkv, dscores, &ws.dctx, &a.qkv, &a.probs, mask, seg, shape);
            decoder::rope_qk(&mut ws.dqkv, (h, kv, d), rot, &ws.tok.pos, &ws.cos, &ws.sin, true);
            let qkv = infos[lx.q_w].offset..r(lx.v_w).end;
            // Both branches read the same LayerNorm output: add the attention's share to the MLP's.
            input_grad(lc_qkv, &mut ws.dln, &ws.dqkv, &p[qkv], n, c, w, true);
            lora.backward(&mut ws.lora, infos, p, g, li, 0..3, &mut ws.dln, &ws.dqkv, &a.ln, n);
            let (qkv_w, qkv_b) = ([lx.q_w, lx.k_w, lx.v_w], [lx.q_b, lx.q_b + 1, lx.v_b]);
            decoder::qkv_param_grads((infos, g), qkv_w, Some(qkv_b), &ws.dqkv, &a.ln, (h, kv, d), (n, c), bf);
            let stats = (&a.mean[..], &a.rstd[..]);
            let ln = (lx.ln_w, lx.ln_b);
            layernorm_backward((infos, p, g), ln, &mut ws.dx, true, &ws.dln, inp, stats, (n, c), &mut tmp);
            hook.layer_done(infos, g, li);
        }
        ws.tmp = tmp;
        if rg(idx.embed) {
            decoder::scatter_rows(&mut g[r(idx.embed)], &ws.dx, &ws.tok.ids, c);
        }
        ws.lora.train_seed = None;
        Ok(loss)
    }
}

/// Activations of the KV-cache decode steps ([`Architecture::decode`]) for up to `max_new` new tokens per row
/// and `max_len` tokens in all, allocated once so that decode steps allocate nothing.
pub struct PhiDecodeWorkspace {
    /// The buffers every decoder has alike.
    buf: DecodeBuffers,
    cos: Vec<f32>,
    sin: Vec<f32>,
    ln: Vec<f32>,
    mean: Vec<f32>,
    rstd: Vec<f32>,
    qkv: Vec<f32>,
    fc: Vec<f32>,
    act: Vec<f32>,
}

impl PhiDecodeWorkspace {
    pub fn new(cfg: &PhiConfig, batch: usize, max_new: usize, max_len: usize) -> Self {
        let (c, f, h, d) = (cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads, cfg.head_dim());
        let w = (h + 2 * cfg.kv_heads()) * d;
        let n = batch * max_new;
        let z = |k: usize| vec![0.0f32; k];
        let (cos, sin) = rope::tables(max_len, cfg.rotary_dim(), cfg.rope_theta());
        PhiDecodeWorkspace {
            buf: DecodeBuffers::new((batch, max_new, max_len), c, (h, d), cfg.vocab_size),
            cos,
            sin,
            ln: z(n * c),
            mean: z(n.max(batch)),
            rstd: z(n.max(batch)),
            qkv: z(n * w),
            fc: z(n * f),
            act: z(n * f),
        }
    }
}

impl Architecture for PhiForCausalLM {
    const CLASS: &'static str = "PhiForCausalLM";
    const MODEL_TYPES: &'static [&'static str] = &["phi"];
    decoder::architecture_plumbing!(Workspace, PhiDecodeWorkspace);

    fn head(&self) -> Head<'_> {
        // The file's own `head` (inherent items come first in a path).
        Self::head(self)
    }
    fn from_config(config_json: &str, state: &StateDict) -> Result<Self, ModelError> {
        PhiForCausalLM::from_state_dict(PhiConfig::from_json(config_json)?, state)
    }
    fn int8_spans(&self) -> Vec<decoder::Int8Span> {
        use decoder::Int8Span as S;
        let cfg = &self.config;
        let (c, f) = (cfg.hidden_size, cfg.intermediate_size);
        let w = (cfg.num_attention_heads + 2 * cfg.kv_heads()) * cfg.head_dim();
        let mut spans = Vec::new();
        for lx in &self.idx.layers {
            spans.extend([
                S::linear(lx.q_w, lx.v_w, w),
                S::linear(lx.dense_w, lx.dense_w, c),
                S::linear(lx.fc1_w, lx.fc1_w, f),
                S::linear(lx.fc2_w, lx.fc2_w, c),
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
        ws: &'w mut PhiDecodeWorkspace,
        input_ids: &[u32],
        rows: StepRows<'_>,
    ) -> Result<&'w [f32], ModelError> {
        let _prof = finetune_engine::profile::scope("phi.decode");
        let cfg = &self.config;
        let (c, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
        let (h, kv, d, rot) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim(), cfg.rotary_dim());
        let w = (h + 2 * kv) * d;
        let step = decoder::begin_step(cache, &mut ws.buf, c, cfg.kv_dims(), h, v, input_ids, rows)?;
        let (bsz, n_new) = (step.attn.batch, step.attn.n_new);
        let (n, eps) = (bsz * n_new, cfg.layer_norm_eps);
        let st = &self.store;
        let s = |k: usize| st.get(k);
        let q8 = |key: usize| (&self.int8, st, key);
        decoder::embed(&mut ws.buf.x[..n * c], s(self.idx.embed), input_ids, c);
        let pos = &ws.buf.pos[..n];

        for (li, lx) in self.idx.layers.iter().enumerate() {
            let x = &mut ws.buf.x[..n * c];
            layernorm::forward(&mut ws.ln, &mut ws.mean, &mut ws.rstd, x, s(lx.ln_w), s(lx.ln_b), n, c, eps);
            let (wqkv, bqkv) = (st.span(lx.q_w, lx.v_w), Some(st.span(lx.q_b, lx.v_b)));
            decoder::decode_linear(q8(lx.q_w), &mut ws.buf.xq, &mut ws.qkv, &ws.ln, wqkv, bqkv, n, (c, w))?;
            decoder::rope_qk(&mut ws.qkv, (h, kv, d), rot, pos, &ws.cos, &ws.sin, false);
            let (kc, vc) = (&mut step.k[li], &mut step.v[li]);
            step.attn.append(kc, vc, &ws.qkv, w, h * d, (h + kv) * d);
            step.attn.attend(kc, vc, &ws.qkv, w, &mut ws.buf.scores, &mut ws.buf.heads_out, &mut ws.buf.ctx);
            let (dw, db) = (s(lx.dense_w), Some(s(lx.dense_b)));
            decoder::decode_linear(
                q8(lx.dense_w),
                &mut ws.buf.xq,
                &mut ws.buf.tmp,
                &ws.buf.ctx,
                dw,
                db,
                n,
                (h * d, c),
            )?;
            let x = &mut ws.buf.x[..n * c];
            residual::add_assign(x, &ws.buf.tmp[..n * c]);
            let (w1, b1) = (s(lx.fc1_w), Some(s(lx.fc1_b)));
            decoder::decode_linear(q8(lx.fc1_w), &mut ws.buf.xq, &mut ws.fc, &ws.ln, w1, b1, n, (c, f))?;
            gelu_tanh::forward(&mut ws.act[..n * f], &ws.fc[..n * f]);
            let (w2, b2) = (s(lx.fc2_w), Some(s(lx.fc2_b)));
            decoder::decode_linear(q8(lx.fc2_w), &mut ws.buf.xq, &mut ws.buf.tmp, &ws.act, w2, b2, n, (f, c))?;
            residual::add_assign(x, &ws.buf.tmp[..n * c]);
        }
        decoder::advance(cache, rows, n_new);
        decoder::last_rows(&mut ws.buf.tmp, &ws.buf.x, bsz, n_new, c);
        let (lw, lb) = (s(self.idx.lnf_w), s(self.idx.lnf_b));
        layernorm::forward(&mut ws.buf.last, &mut ws.mean, &mut ws.rstd, &ws.buf.tmp[..bsz * c], lw, lb, bsz, c, eps);
        let (logits, hw, hb) = (&mut ws.buf.logits[..bsz * v], s(self.idx.head), Some(s(self.idx.head_b)));
        decoder::decode_linear(q8(self.idx.head), &mut ws.buf.xq, logits, &ws.buf.last, hw, hb, bsz, (c, v))?;
        Ok(&ws.buf.logits[..bsz * v])
    }
}
