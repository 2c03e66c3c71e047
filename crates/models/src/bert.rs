//! BERT-family encoders for sequence and token classification on the engine's kernels:
//! `transformers.BertForSequenceClassification`, `RobertaForSequenceClassification` and
//! `DistilBertForSequenceClassification` (picked by `model_type`, see [`Arch`]), and their
//! `…ForTokenClassification` and `…ForMaskedLM` counterparts (picked by [`BertConfig::task`], see [`Task`]).
//!
//! embeddings (word + position [+ token type] → LayerNorm → dropout) → N post-LN encoder layers (fused QKV
//! projection → attention → output dense → dropout → residual → LayerNorm; dense → GELU → dense → dropout →
//! residual → LayerNorm) → head on the first token (BERT: tanh pooler → dropout → classifier), or for token
//! classification dropout → classifier on every token.
//!
//! All parameters live in the model's [`ParamStore`] (one flat buffer, with gradients and AdamW moments beside
//! it in the same layout), addressed by their Hugging Face names; all activations live in a [`Workspace`]
//! allocated once per (batch, sequence) shape. [`BertForSequenceClassification::forward`] is straight-line code and
//! [`BertForSequenceClassification::backward`] calls the layers' backward kernels in reverse.
//!
//! Every parameter has a `requires_grad` flag ([`ParamStore::set_requires_grad`], [`ParamStore::freeze_prefix`]).
//! A frozen parameter gets no weight-gradient matmul or bias reduction, its gradient buffer is left as it was,
//! AdamW never changes it and `clip_grad_norm` leaves it out of the norm (torch: its `.grad` is `None`). When
//! nothing below a point of the network requires a gradient, the backward stops there.

use std::collections::BTreeMap;

use finetune_engine::bf16::linear as bf16lin;
use finetune_engine::bf16::linear::SharedWeights;
use finetune_engine::kernels::attention::{self, Shape};
use finetune_engine::kernels::dropout::{self, Dropout};
use finetune_engine::kernels::{
    bce_with_logits, cross_entropy, embedding, gelu, layernorm, mse, pooler, relu, residual,
};
use finetune_engine::matmul::matmul;
use finetune_engine::StateDict;
use serde::Deserialize;

use crate::acts;
use crate::error::ModelError;
pub use crate::params::ParamInfo;
use crate::params::{check_config_against, DimCheck, Layout, ParamStore, Parts};

/// Prefixes a base-model checkpoint's names lack.
const STRIP: &[&str] = &["bert.", "roberta.", "distilbert."];

/// This architecture's errors: the crate's [`ModelError`].
pub type BertError = ModelError;

fn default_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f32 {
    0.1
}
fn default_max_pos() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f32 {
    1e-12
}

/// The fields of a Hugging Face BERT `config.json` this model uses (defaults as in `transformers.BertConfig`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    // Aliases are DistilBERT's names for the same quantities.
    #[serde(alias = "dim")]
    pub hidden_size: usize,
    #[serde(alias = "n_layers")]
    pub num_hidden_layers: usize,
    #[serde(alias = "n_heads")]
    pub num_attention_heads: usize,
    #[serde(alias = "hidden_dim")]
    pub intermediate_size: usize,
    #[serde(default = "default_act", alias = "activation")]
    pub hidden_act: String,
    #[serde(default = "default_dropout", alias = "dropout")]
    pub hidden_dropout_prob: f32,
    #[serde(default = "default_dropout", alias = "attention_dropout")]
    pub attention_probs_dropout_prob: f32,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f32,
    #[serde(default)]
    pub num_labels: Option<usize>,
    #[serde(default)]
    pub id2label: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub problem_type: Option<String>,
    #[serde(default)]
    pub classifier_dropout: Option<f32>,
    /// "bert" or "roberta" (also "xlm-roberta", "camembert"); picks weight names, position ids and the head.
    #[serde(default)]
    pub model_type: Option<String>,
    /// Padding id; RoBERTa derives position ids from it.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// DistilBERT's dropout before its classifier (default 0.2).
    #[serde(default)]
    pub seq_classif_dropout: Option<f32>,
    /// DistilBERT's fixed sinusoidal position table (not supported; the learned table is).
    #[serde(default)]
    pub sinusoidal_pos_embds: bool,
    /// Which head; not part of `config.json` (set it to load a checkpoint for token classification).
    #[serde(skip)]
    pub task: Task,
}

/// The head on top of the encoder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Task {
    /// `…ForSequenceClassification`: one prediction per sequence from its first token; [`Labels::Classes`],
    /// [`Labels::MultiLabel`] or [`Labels::Regression`].
    #[default]
    SequenceClassification,
    /// `…ForTokenClassification`: dropout → `classifier` on every token's final hidden state, logits
    /// `[batch, seq, num_labels]`, cross-entropy over all tokens not labelled −100 ([`Labels::TokenClasses`]).
    /// No pooler; a checkpoint's pooler weights are ignored.
    TokenClassification,
    /// `…ForMaskedLM`: dense → GELU → LayerNorm → decoder on each token's final hidden state, the decoder's
    /// weight tied to the word embeddings (its own bias), logits over the vocabulary and cross-entropy over the
    /// tokens not labelled −100 ([`Labels::TokenClasses`] with vocabulary ids). With labels, the last layer
    /// and the head run on the labelled rows only (the loss is the same); without, on every row. No pooler.
    MaskedLM,
}

/// Which member of the BERT family: they share the encoder and differ in names, positions and head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `BertForSequenceClassification`: positions 0..T, pooler (tanh dense on [CLS]) → dropout → classifier.
    Bert,
    /// `RobertaForSequenceClassification`: positions count non-padding tokens from `pad_token_id + 1`; head
    /// is dropout → dense → tanh → dropout → out_proj on the first token; no pooler.
    Roberta,
    /// `DistilBertForSequenceClassification`: no token types, no dropout after the attention projection,
    /// head is pre_classifier → ReLU → dropout → classifier on the first token.
    DistilBert,
}

impl Arch {
    /// The base model's name prefix in a task checkpoint (`bert.`, `roberta.`, `distilbert.`).
    pub fn prefix(self) -> &'static str {
        match self {
            Arch::Bert => "bert",
            Arch::Roberta => "roberta",
            Arch::DistilBert => "distilbert",
        }
    }

    /// Layer `i`'s name prefix.
    pub fn layer_prefix(self, i: usize) -> String {
        match self {
            Arch::DistilBert => format!("{}.transformer.layer.{i}", self.prefix()),
            _ => format!("{}.encoder.layer.{i}", self.prefix()),
        }
    }

    /// A layer's module names: q, k, v, attention output, its LayerNorm, FFN in, FFN out, its LayerNorm.
    pub fn layer_names(self) -> [&'static str; 8] {
        match self {
            Arch::DistilBert => [
                "attention.q_lin",
                "attention.k_lin",
                "attention.v_lin",
                "attention.out_lin",
                "sa_layer_norm",
                "ffn.lin1",
                "ffn.lin2",
                "output_layer_norm",
            ],
            _ => [
                "attention.self.query",
                "attention.self.key",
                "attention.self.value",
                "attention.output.dense",
                "attention.output.LayerNorm",
                "intermediate.dense",
                "output.dense",
                "output.LayerNorm",
            ],
        }
    }
}

impl BertConfig {
    pub fn from_json(text: &str) -> Result<Self, BertError> {
        let c: BertConfig = serde_json::from_str(text).map_err(|e| BertError::Config(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// Number of labels: `num_labels`, else the size of `id2label`, else 2 (the `transformers` default).
    pub fn labels(&self) -> usize {
        self.num_labels.or_else(|| self.id2label.as_ref().map(|m| m.len())).unwrap_or(2)
    }

    pub fn validate(&self) -> Result<(), BertError> {
        let err = |m: &str| Err(BertError::Config(m.into()));
        if self.hidden_size == 0
            || self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return err("hidden_size must be a positive multiple of num_attention_heads");
        }
        if self.hidden_act != "gelu" {
            return Err(BertError::Config(format!(
                "hidden_act {:?} is not supported (only \"gelu\")",
                self.hidden_act
            )));
        }
        if self.sinusoidal_pos_embds {
            return err("sinusoidal_pos_embds is not supported");
        }
        if self.labels() == 0 {
            return err("num_labels must be at least 1");
        }
        let distil = self.arch() == Arch::DistilBert;
        crate::error::check_config_sizes(&[
            ("vocab_size", self.vocab_size),
            (if distil { "dim" } else { "hidden_size" }, self.hidden_size),
            (if distil { "n_layers" } else { "num_hidden_layers" }, self.num_hidden_layers),
            (if distil { "hidden_dim" } else { "intermediate_size" }, self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
            ("num_labels", self.labels()),
        ])?;
        for p in [self.hidden_dropout_prob, self.attention_probs_dropout_prob, self.classifier_dropout.unwrap_or(0.0)] {
            if !(0.0..1.0).contains(&p) {
                return err("dropout probabilities must be in [0, 1)");
            }
        }
        Ok(())
    }

    pub fn arch(&self) -> Arch {
        match self.model_type.as_deref() {
            Some("roberta") | Some("xlm-roberta") | Some("camembert") => Arch::Roberta,
            Some("distilbert") => Arch::DistilBert,
            _ => Arch::Bert,
        }
    }

    /// Width of the head's output: the vocabulary for masked LM, else the label count.
    pub fn head_width(&self) -> usize {
        if self.task == Task::MaskedLM {
            self.vocab_size
        } else {
            self.labels()
        }
    }

    /// Whether the head reads every token (token classification, masked LM) rather than the first.
    fn per_token(&self) -> bool {
        self.task != Task::SequenceClassification
    }

    fn classifier_dropout_prob(&self) -> f32 {
        if self.task == Task::TokenClassification {
            // DistilBertForTokenClassification uses `config.dropout` (our hidden_dropout_prob) and ignores
            // seq_classif_dropout; BERT and RoBERTa use classifier_dropout, else hidden_dropout_prob.
            return match self.arch() {
                Arch::DistilBert => self.hidden_dropout_prob,
                _ => self.classifier_dropout.unwrap_or(self.hidden_dropout_prob),
            };
        }
        if self.arch() == Arch::DistilBert {
            return self.seq_classif_dropout.unwrap_or(0.2);
        }
        self.classifier_dropout.unwrap_or(self.hidden_dropout_prob)
    }

    /// Token-type table rows (DistilBERT has none).
    fn token_types(&self) -> usize {
        if self.arch() == Arch::DistilBert {
            0
        } else {
            self.type_vocab_size
        }
    }

    /// Dropout after the attention output projection (DistilBERT has none).
    fn attn_output_dropout(&self) -> f32 {
        if self.arch() == Arch::DistilBert {
            0.0
        } else {
            self.hidden_dropout_prob
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct LayerOffsets {
    /// query, key, value weights back to back: one `[3C, C]` matrix.
    qkv_w: usize,
    qkv_b: usize,
    ao_w: usize,
    ao_b: usize,
    ln1_w: usize,
    ln1_b: usize,
    fc_w: usize,
    fc_b: usize,
    proj_w: usize,
    proj_b: usize,
    ln2_w: usize,
    ln2_b: usize,
}

#[derive(Debug, Clone)]
struct Offsets {
    wte: usize,
    wpe: usize,
    wtt: usize,
    emb_ln_w: usize,
    emb_ln_b: usize,
    layers: Vec<LayerOffsets>,
    /// The pooler / pre-classifier dense (sequence classification), the LM head's transform dense (masked
    /// LM); 0 for token classification.
    pool_w: usize,
    pool_b: usize,
    /// The LM head's LayerNorm (masked LM only; else 0).
    mlm_ln_w: usize,
    mlm_ln_b: usize,
    /// The output layer; for masked LM the weight is the word-embedding table (tied) and the bias its own.
    cls_w: usize,
    cls_b: usize,
}

fn layout(cfg: &BertConfig) -> (Layout, Offsets) {
    let (c, f, l) = (cfg.hidden_size, cfg.intermediate_size, cfg.labels());
    let mut lay = Layout::default();
    // Parameters are addressed by offset here; the Hugging Face Trainer's no-decay rule.
    let mut add = |name: String, shape: Vec<usize>| -> usize {
        let decay = !(name.ends_with("bias") || name.contains("LayerNorm") || name.contains("layer_norm"));
        let k = lay.add(name, shape, decay);
        lay.offset(k)
    };
    let base = cfg.arch().prefix();
    let names = cfg.arch().layer_names();
    let [nq, nk, nv, nao, nln1, nfc, nproj, nln2] = names;
    let e = format!("{base}.embeddings");
    let wte = add(format!("{e}.word_embeddings.weight"), vec![cfg.vocab_size, c]);
    let wpe = add(format!("{e}.position_embeddings.weight"), vec![cfg.max_position_embeddings, c]);
    let wtt = if cfg.token_types() > 0 {
        add(format!("{e}.token_type_embeddings.weight"), vec![cfg.token_types(), c])
    } else {
        wpe + cfg.max_position_embeddings * c
    };
    let emb_ln_w = add(format!("{e}.LayerNorm.weight"), vec![c]);
    let emb_ln_b = add(format!("{e}.LayerNorm.bias"), vec![c]);
    let mut layers = Vec::new();
    for i in 0..cfg.num_hidden_layers {
        let p = cfg.arch().layer_prefix(i);
        let qkv_w = add(format!("{p}.{nq}.weight"), vec![c, c]);
        add(format!("{p}.{nk}.weight"), vec![c, c]);
        add(format!("{p}.{nv}.weight"), vec![c, c]);
        let qkv_b = add(format!("{p}.{nq}.bias"), vec![c]);
        add(format!("{p}.{nk}.bias"), vec![c]);
        add(format!("{p}.{nv}.bias"), vec![c]);
        layers.push(LayerOffsets {
            qkv_w,
            qkv_b,
            ao_w: add(format!("{p}.{nao}.weight"), vec![c, c]),
            ao_b: add(format!("{p}.{nao}.bias"), vec![c]),
            ln1_w: add(format!("{p}.{nln1}.weight"), vec![c]),
            ln1_b: add(format!("{p}.{nln1}.bias"), vec![c]),
            fc_w: add(format!("{p}.{nfc}.weight"), vec![f, c]),
            fc_b: add(format!("{p}.{nfc}.bias"), vec![f]),
            proj_w: add(format!("{p}.{nproj}.weight"), vec![c, f]),
            proj_b: add(format!("{p}.{nproj}.bias"), vec![c]),
            ln2_w: add(format!("{p}.{nln2}.weight"), vec![c]),
            ln2_b: add(format!("{p}.{nln2}.bias"), vec![c]),
        });
    }
    if cfg.task == Task::MaskedLM {
        // The names of `…ForMaskedLM`; the decoder weight is tied to the word embeddings and not stored.
        let (dense, ln, bias) = match cfg.arch() {
            Arch::Bert => {
                ("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm", "cls.predictions.bias")
            }
            Arch::Roberta => ("lm_head.dense", "lm_head.layer_norm", "lm_head.bias"),
            Arch::DistilBert => ("vocab_transform", "vocab_layer_norm", "vocab_projector.bias"),
        };
        let pool_w = add(format!("{dense}.weight"), vec![c, c]);
        let pool_b = add(format!("{dense}.bias"), vec![c]);
        let mlm_ln_w = add(format!("{ln}.weight"), vec![c]);
        let mlm_ln_b = add(format!("{ln}.bias"), vec![c]);
        let cls_b = add(bias.to_string(), vec![cfg.vocab_size]);
        let off = Offsets {
            wte,
            wpe,
            wtt,
            emb_ln_w,
            emb_ln_b,
            layers,
            pool_w,
            pool_b,
            mlm_ln_w,
            mlm_ln_b,
            cls_w: wte,
            cls_b,
        };
        return (lay, off);
    }
    let (dense, out) = match (cfg.task, cfg.arch()) {
        (Task::TokenClassification, _) => ("", "classifier"),
        (Task::MaskedLM, _) => unreachable!("laid out above"),
        (_, Arch::Bert) => ("bert.pooler.dense", "classifier"),
        (_, Arch::Roberta) => ("classifier.dense", "classifier.out_proj"),
        (_, Arch::DistilBert) => ("pre_classifier", "classifier"),
    };
    let (pool_w, pool_b) = if dense.is_empty() {
        (0, 0)
    } else {
        (add(format!("{dense}.weight"), vec![c, c]), add(format!("{dense}.bias"), vec![c]))
    };
    let cls_w = add(format!("{out}.weight"), vec![l, c]);
    let cls_b = add(format!("{out}.bias"), vec![l]);
    (lay, Offsets { wte, wpe, wtt, emb_ln_w, emb_ln_b, layers, pool_w, pool_b, mlm_ln_w: 0, mlm_ln_b: 0, cls_w, cls_b })
}

/// Targets for the classification head; the variant picks the loss as `transformers` does from `problem_type`.
#[derive(Debug, Clone, Copy)]
pub enum Labels<'a> {
    /// Single-label classification, cross-entropy; −100 is ignored. `[B]`.
    Classes(&'a [i64]),
    /// Multi-label classification, BCE with logits. `[B, num_labels]`.
    MultiLabel(&'a [f32]),
    /// Regression, mean squared error. `[B, num_labels]`.
    Regression(&'a [f32]),
    /// Token classification, cross-entropy averaged over the tokens not labelled −100. `[B, T]`.
    TokenClasses(&'a [i64]),
}

/// One batch of `batch × seq` tokens, row-major.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub input_ids: &'a [u32],
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: &'a [u32],
    pub token_type_ids: Option<&'a [u32]>,
    pub labels: Option<Labels<'a>>,
}

/// Eval runs without dropout; Train applies dropout with masks derived from `seed` (same seed, same masks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Eval,
    Train { seed: u64 },
}

/// Activations of one encoder layer kept for the backward.
struct LayerActs {
    qkv: Vec<f32>,
    probs: Vec<f32>,
    probs_drop: Vec<f32>,
    ctx: Vec<f32>,
    res1: Vec<f32>,
    ln1_mean: Vec<f32>,
    ln1_rstd: Vec<f32>,
    h1: Vec<f32>,
    inter_pre: Vec<f32>,
    inter_act: Vec<f32>,
    res2: Vec<f32>,
    ln2_mean: Vec<f32>,
    ln2_rstd: Vec<f32>,
    /// Layer output (input of the next layer).
    out: Vec<f32>,
}

/// Every activation and activation-gradient buffer for one (batch, seq) shape, allocated once and reused.
pub struct Workspace {
    pub batch: usize,
    pub seq: usize,
    /// Built by [`Workspace::for_inference`]: `layers` holds two activation sets used in turn.
    inference: bool,
    ids: Vec<u32>,
    pos: Vec<u32>,
    tt: Vec<u32>,
    mask_add: Vec<f32>,
    emb_sum: Vec<f32>,
    emb_mean: Vec<f32>,
    emb_rstd: Vec<f32>,
    emb_out: Vec<f32>,
    layers: Vec<LayerActs>,
    cls: Vec<f32>,
    /// The last layer's attention output and input at the [CLS] rows.
    cls_ctx: Vec<f32>,
    cls_in: Vec<f32>,
    /// RoBERTa: the head's input after its first dropout.
    cls_drop: Vec<f32>,
    /// Token classification: every token's final hidden state after the head's dropout.
    tokens_drop: Vec<f32>,
    /// DistilBERT: pre_classifier output before its ReLU.
    pooled_pre: Vec<f32>,
    pooled: Vec<f32>,
    pooled_drop: Vec<f32>,
    /// The rows the last layer and the head run on: each sequence's first token (sequence classification), the
    /// labelled tokens or every token (masked LM); unused for token classification.
    sel: Vec<u32>,
    /// Masked LM: the labels of the `sel` rows.
    sel_y: Vec<i64>,
    /// Masked LM head, on the `sel` rows: input, transform dense output before and after GELU, LayerNorm
    /// output and statistics.
    mlm_x: Vec<f32>,
    mlm_pre: Vec<f32>,
    mlm_act: Vec<f32>,
    mlm_h: Vec<f32>,
    mlm_mean: Vec<f32>,
    mlm_rstd: Vec<f32>,
    /// Output of the last forward: `[batch, num_labels]`; token classification `[batch, seq, num_labels]`;
    /// masked LM `[rows, vocab_size]` for the labelled rows in order (every row without labels), see
    /// [`Workspace::logits_rows`].
    pub logits: Vec<f32>,
    dx: Vec<f32>,
    dres: Vec<f32>,
    dtmp: Vec<f32>,
    dinter: Vec<f32>,
    dctx: Vec<f32>,
    dqkv: Vec<f32>,
    dscores: Vec<f32>,
    dlogits: Vec<f32>,
    dpooled: Vec<f32>,
    dpre: Vec<f32>,
    dcls: Vec<f32>,
    dhead: Vec<f32>,
    /// Receives a frozen LayerNorm's parameter gradients, which its kernel computes with the input gradient.
    dln_scratch: Vec<f32>,
    mode: Option<Mode>,
    /// `bf16 = true`: the model's bf16 weight copies (shared by its workspaces); `None` runs in f32.
    bf16: Option<SharedWeights>,
}

impl Workspace {
    /// `[batch, hidden]`: the last layer's hidden state at each sequence's first token (`[CLS]`, `<s>`) from the
    /// last sequence-classification forward, before the pooler and any dropout: the encoder's sentence vector.
    pub fn cls_hidden(&self) -> &[f32] {
        &self.cls
    }

    /// `[batch · seq, hidden]`: every token's last-layer hidden state from the last token-classification forward
    /// (after the head's dropout, which [`Mode::Eval`] does not apply).
    pub fn token_hidden(&self) -> &[f32] {
        &self.tokens_drop
    }

    /// Masked LM: how many rows of `logits` the last forward filled (its labelled tokens, or every token).
    pub fn logits_rows(&self) -> usize {
        self.sel.len()
    }

    /// A workspace for training: every layer's activations are kept for the backward pass.
    pub fn new(cfg: &BertConfig, batch: usize, seq: usize) -> Self {
        Self::build(cfg, batch, seq, false)
    }

    /// A workspace for [`Mode::Eval`] forwards only (evaluation, prediction): no backward buffers, no dropout
    /// masks, and two layers' activations used in turn instead of one per layer, since nothing is kept for a
    /// backward pass. A 6-layer model at 64 × 256 tokens needs about a quarter of [`new`](Self::new)'s memory.
    pub fn for_inference(cfg: &BertConfig, batch: usize, seq: usize) -> Self {
        Self::build(cfg, batch, seq, true)
    }

    /// Runs the linear layers' matmuls in bf16 with f32 accumulation (`bf16 = true`), with the weights' bf16
    /// copies kept in `weights` (share one among a model's workspaces), or in f32 with `None`.
    pub fn with_bf16(mut self, weights: Option<SharedWeights>) -> Self {
        self.bf16 = weights;
        self
    }

    fn build(cfg: &BertConfig, batch: usize, seq: usize, inference: bool) -> Self {
        let (c, f, h) = (cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads);
        let n = batch * seq;
        let z = |k: usize| vec![0.0f32; k];
        // Backward-only buffers are empty in an inference workspace.
        let zb = |k: usize| if inference { Vec::new() } else { vec![0.0f32; k] };
        let probs = batch * h * seq * seq;
        let drop_probs = if cfg.attention_probs_dropout_prob > 0.0 && !inference { probs } else { 0 };
        let token_task = cfg.task == Task::TokenClassification;
        let mlm = cfg.task == Task::MaskedLM;
        let l = cfg.head_width();
        let head_rows = if cfg.per_token() { n } else { batch };
        // The rows the last layer runs on: the first tokens, or (masked LM) up to every token.
        let last_rows = if mlm { n } else { batch };
        let zm = |k: usize| if mlm { vec![0.0f32; k] } else { Vec::new() };
        let num_acts = acts::sets(cfg.num_hidden_layers, inference);
        Workspace {
            batch,
            seq,
            inference,
            ids: vec![0; n],
            pos: vec![0; n],
            tt: vec![0; n],
            mask_add: z(n),
            emb_sum: z(n * c),
            emb_mean: z(n),
            emb_rstd: z(n),
            emb_out: z(n * c),
            layers: (0..num_acts)
                .map(|_| LayerActs {
                    qkv: z(n * 3 * c),
                    probs: z(probs),
                    probs_drop: z(drop_probs),
                    ctx: z(n * c),
                    res1: z(n * c),
                    ln1_mean: z(n),
                    ln1_rstd: z(n),
                    h1: z(n * c),
                    inter_pre: z(n * f),
                    inter_act: z(n * f),
                    res2: z(n * c),
                    ln2_mean: z(n),
                    ln2_rstd: z(n),
                    out: z(n * c),
                })
                .collect(),
            cls: z(batch * c),
            cls_ctx: z(last_rows * c),
            cls_in: z(last_rows * c),
            cls_drop: z(batch * c),
            pooled_pre: z(batch * c),
            pooled: z(batch * c),
            pooled_drop: z(batch * c),
            tokens_drop: z(if token_task { n * c } else { 0 }),
            sel: Vec::with_capacity(last_rows),
            sel_y: Vec::with_capacity(if mlm { n } else { 0 }),
            mlm_x: zm(n * c),
            mlm_pre: zm(n * c),
            mlm_act: zm(n * c),
            mlm_h: zm(n * c),
            mlm_mean: zm(n),
            mlm_rstd: zm(n),
            // Masked LM on a big vocabulary: a training forward fills only the labelled rows, so most of this
            // zeroed allocation is never touched and never becomes resident.
            logits: z(head_rows * l),
            dx: zb(n * c),
            dres: zb(n * c),
            dtmp: zb(n * c),
            dinter: zb(n * f),
            dctx: zb(n * c),
            dqkv: zb(n * 3 * c),
            dscores: zb(probs),
            dlogits: zb(head_rows * l),
            dpooled: zb(batch * c),
            dpre: zb(batch * c),
            dcls: zb(last_rows * c),
            dhead: zb(batch * c),
            dln_scratch: zb(2 * c),
            mode: None,
            bf16: None,
        }
    }
}

/// Dropout sites, each with its own mask stream.
const SITE_EMB: u64 = 0;
const SITE_CLASSIFIER: u64 = 1;
const SITE_HEAD_IN: u64 = 2;
fn site_layer(layer: usize, which: u64) -> u64 {
    16 + 4 * layer as u64 + which
}

fn drop_at(mode: Mode, p: f32, site: u64) -> Option<Dropout> {
    match mode {
        Mode::Train { seed } if p > 0.0 => Some(Dropout { p, seed: Dropout::site_seed(seed, site) }),
        _ => None,
    }
}

pub struct BertForSequenceClassification {
    pub config: BertConfig,
    off: Offsets,
    /// Parameters, gradients and optimizer state.
    pub store: ParamStore,
    /// The cross-entropy of the classification heads (single-label and token classification).
    pub loss: LossOptions,
}

/// Options of the classification heads' cross-entropy, as `torch.nn.CrossEntropyLoss(weight=...,
/// label_smoothing=...)`: per-class weights (the loss is the weighted mean over targets) and label smoothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LossOptions {
    pub class_weight: Option<Vec<f32>>,
    pub label_smoothing: f32,
}

impl LossOptions {
    fn ce(&self) -> cross_entropy::Options<'_> {
        cross_entropy::Options { weight: self.class_weight.as_deref(), label_smoothing: self.label_smoothing }
    }
}

impl BertForSequenceClassification {
    fn empty(config: BertConfig) -> Result<Self, BertError> {
        config.validate()?;
        let (layout, off) = layout(&config);
        Ok(BertForSequenceClassification {
            config,
            off,
            store: ParamStore::try_new(layout)?,
            loss: LossOptions::default(),
        })
    }

    /// Compares the config's sizes with the weights' shapes, before anything is allocated.
    fn check_config_against(config: &BertConfig, sd: &StateDict) -> Result<(), BertError> {
        let base = config.arch().prefix();
        let distil = config.arch() == Arch::DistilBert;
        let e = format!("{base}.embeddings");
        let (words, positions, types) = (
            format!("{e}.word_embeddings.weight"),
            format!("{e}.position_embeddings.weight"),
            format!("{e}.token_type_embeddings.weight"),
        );
        let layer = if distil { format!("{base}.transformer.layer.") } else { format!("{base}.encoder.layer.") };
        let fc =
            if distil { format!("{layer}0.ffn.lin1.weight") } else { format!("{layer}0.intermediate.dense.weight") };
        let dims = [
            ("vocab_size", config.vocab_size, words.as_str(), 0),
            (if distil { "dim" } else { "hidden_size" }, config.hidden_size, words.as_str(), 1),
            ("max_position_embeddings", config.max_position_embeddings, positions.as_str(), 0),
            ("type_vocab_size", config.token_types(), types.as_str(), 0),
            (if distil { "hidden_dim" } else { "intermediate_size" }, config.intermediate_size, fc.as_str(), 0),
        ];
        let names: Vec<[&str; 1]> = dims.iter().map(|d| [d.2]).collect();
        let checks: Vec<DimCheck<'_>> = dims
            .iter()
            .zip(&names)
            .map(|(&(field, value, _, axis), params)| DimCheck { field, value: Some(value), params, axis })
            .collect();
        let layers_field = if distil { "n_layers" } else { "num_hidden_layers" };
        check_config_against(sd, STRIP, &checks, (layers_field, config.num_hidden_layers, &[layer.as_str()]))
    }

    /// Initialised as `transformers` does for a new model: weights N(0, 0.02), biases 0, LayerNorm 1 and 0.
    pub fn random(config: BertConfig, seed: u64) -> Result<Self, BertError> {
        let mut m = Self::empty(config)?;
        for k in 0..m.store.param_infos().len() {
            m.init_param(k, seed);
        }
        Ok(m)
    }

    fn init_param(&mut self, k: usize, seed: u64) {
        let name = &self.store.param_infos()[k].name;
        let norm = name.contains("LayerNorm.weight") || name.ends_with("layer_norm.weight");
        let constant = if norm { Some(1.0) } else { name.ends_with("bias").then_some(0.0) };
        self.store.init_param(k, constant, 0.02, seed);
    }

    /// Loads parameters by Hugging Face name. Accepts base-model checkpoints (names without the `bert.`
    /// prefix); the pooler and classifier are newly initialised when absent, as `from_pretrained` does. Returns
    /// the model and the names that were newly initialised.
    pub fn from_state_dict(config: BertConfig, sd: &StateDict, seed: u64) -> Result<(Self, Vec<String>), BertError> {
        config.validate()?;
        Self::check_config_against(&config, sd)?;
        let (layout, off) = layout(&config);
        let head = |name: &str| {
            ["bert.pooler.", "classifier", "pre_classifier", "cls.predictions.", "lm_head.", "vocab_"]
                .iter()
                .any(|p| name.starts_with(p))
        };
        let (store, fresh) = ParamStore::from_state_dict(layout, sd, STRIP, head)?;
        let mut m = BertForSequenceClassification { config, off, store, loss: LossOptions::default() };
        for name in &fresh {
            if let Some(k) = m.store.index_of(name) {
                m.init_param(k, seed);
            }
        }
        Ok((m, fresh))
    }

    fn check_batch(&self, ws: &Workspace, b: &Batch<'_>) -> Result<(), BertError> {
        let n = ws.batch * ws.seq;
        let cfg = &self.config;
        let bad = |m: String| Err(BertError::Batch(m));
        let probs = ws.batch * cfg.num_attention_heads * ws.seq * ws.seq;
        let token_task = cfg.per_token();
        let head_rows = if token_task { n } else { ws.batch };
        let num_acts = acts::sets(cfg.num_hidden_layers, ws.inference);
        let mlm = cfg.task == Task::MaskedLM;
        let sized_for_model = ws.layers.len() == num_acts
            && ws.logits.len() == head_rows * cfg.head_width()
            && ws.tokens_drop.len() == if cfg.task == Task::TokenClassification { n * cfg.hidden_size } else { 0 }
            && ws.mlm_h.len() == if mlm { n * cfg.hidden_size } else { 0 }
            && ws.cls_ctx.len() == if mlm { n } else { ws.batch } * cfg.hidden_size
            && ws.emb_out.len() == n * cfg.hidden_size
            && ws.layers.iter().all(|a| {
                a.inter_pre.len() == n * cfg.intermediate_size
                    && a.probs.len() == probs
                    && (cfg.attention_probs_dropout_prob == 0.0 || ws.inference || a.probs_drop.len() == probs)
            });
        if !sized_for_model {
            return bad("the workspace was created for a different model configuration".into());
        }
        if b.input_ids.len() != n || b.attention_mask.len() != n {
            return bad(format!("expected {n} input ids and mask entries for a {}×{} workspace", ws.batch, ws.seq));
        }
        if ws.seq > cfg.max_position_embeddings {
            return bad(format!("sequence length {} exceeds max_position_embeddings", ws.seq));
        }
        if let Some(&id) = b.input_ids.iter().find(|&&i| i as usize >= cfg.vocab_size) {
            return bad(format!("input id {id} out of range for vocab_size {}", cfg.vocab_size));
        }
        if let Some(tt) = b.token_type_ids {
            if tt.len() != n {
                return bad("token_type_ids length differs from input_ids".into());
            }
            if let Some(&t) = tt.iter().find(|&&t| t as usize >= cfg.token_types()) {
                return bad(format!("token type id {t} out of range ({} token types)", cfg.token_types()));
            }
        }
        let l = cfg.head_width();
        match (token_task, b.labels) {
            (_, None) => {}
            (true, Some(Labels::TokenClasses(y))) => {
                if y.len() != n {
                    return bad(format!("expected {n} token labels (one per token, -100 to ignore)"));
                }
                cross_entropy::validate(y, l).map_err(BertError::Batch)?;
            }
            (true, Some(_)) => return bad("token classification needs Labels::TokenClasses".into()),
            (false, Some(Labels::TokenClasses(_))) => {
                return bad("Labels::TokenClasses needs a model configured for token classification or masked LM".into())
            }
            (false, Some(Labels::Classes(y))) => {
                if y.len() != ws.batch {
                    return bad("expected one class label per sequence".into());
                }
                cross_entropy::validate(y, l).map_err(BertError::Batch)?;
            }
            (false, Some(Labels::MultiLabel(y))) | (false, Some(Labels::Regression(y))) if y.len() != ws.batch * l => {
                return bad(format!("expected {} label values ({} per sequence)", ws.batch * l, l));
            }
            _ => {}
        }
        Ok(())
    }

    /// Runs the model on `batch`, leaving logits in `ws.logits` and everything the backward needs in `ws`.
    /// Returns the mean loss when the batch has labels.
    pub fn forward(&self, ws: &mut Workspace, batch: &Batch<'_>, mode: Mode) -> Result<Option<f32>, BertError> {
        self.check_batch(ws, batch)?;
        if ws.inference && matches!(mode, Mode::Train { .. }) {
            return Err(BertError::Batch("an inference workspace only runs Mode::Eval forwards".into()));
        }
        let cfg = &self.config;
        let (bsz, t, c, f) = (ws.batch, ws.seq, cfg.hidden_size, cfg.intermediate_size);
        let (n, nl) = (bsz * t, cfg.head_width());
        let heads = cfg.num_attention_heads;
        let shape = Shape { batch: bsz, seq: t, heads, head_dim: c / heads };
        let p = &self.store.params;
        let o = &self.off;
        let s = |off: usize, len: usize| &p[off..off + len];
        // bf16 weight copies are valid for one optimizer step.
        let w16 = ws.bf16.clone();
        let lc: bf16lin::Ctx = w16.as_ref().map(|w| (w, weights_version(w, self.store.steps())));
        let eps = cfg.layer_norm_eps;
        ws.mode = Some(mode);

        ws.ids.copy_from_slice(batch.input_ids);
        match cfg.arch() {
            Arch::Bert | Arch::DistilBert => {
                for (i, v) in ws.pos.iter_mut().enumerate() {
                    *v = (i % t) as u32;
                }
            }
            Arch::Roberta => {
                // transformers' create_position_ids_from_input_ids: padding_idx + running count of
                // non-padding tokens, padding_idx at padding.
                let pad = cfg.pad_token_id.unwrap_or(1);
                for (ids, pos) in batch.input_ids.chunks(t).zip(ws.pos.chunks_mut(t)) {
                    let mut count = 0;
                    for (&id, p) in ids.iter().zip(pos) {
                        *p = if id == pad {
                            pad
                        } else {
                            count += 1;
                            pad + count
                        };
                    }
                }
            }
        }
        if let Some(&p) = ws.pos.iter().find(|&&p| p as usize >= cfg.max_position_embeddings) {
            return Err(BertError::Batch(format!(
                "position id {p} out of range for max_position_embeddings {}",
                cfg.max_position_embeddings
            )));
        }
        match batch.token_type_ids {
            Some(tt) => ws.tt.copy_from_slice(tt),
            None => ws.tt.fill(0),
        }
        for (m, &a) in ws.mask_add.iter_mut().zip(batch.attention_mask) {
            // transformers' additive mask: 0 for tokens, the most negative f32 for padding.
            *m = if a == 0 { f32::MIN } else { 0.0 };
        }

        let has_tt = cfg.token_types() > 0;
        embedding::forward(
            &mut ws.emb_sum,
            &ws.ids,
            &ws.pos,
            has_tt.then_some(&ws.tt[..]),
            s(o.wte, cfg.vocab_size * c),
            s(o.wpe, cfg.max_position_embeddings * c),
            has_tt.then(|| s(o.wtt, cfg.token_types() * c)),
            c,
        );
        layernorm::forward(
            &mut ws.emb_out,
            &mut ws.emb_mean,
            &mut ws.emb_rstd,
            &ws.emb_sum,
            s(o.emb_ln_w, c),
            s(o.emb_ln_b, c),
            n,
            c,
            eps,
        );
        if let Some(d) = drop_at(mode, cfg.hidden_dropout_prob, SITE_EMB) {
            dropout::forward(&mut ws.emb_out, d);
        }

        let token_task = cfg.task == Task::TokenClassification;
        let mlm = cfg.task == Task::MaskedLM;
        ws.sel.clear();
        ws.sel_y.clear();
        match (cfg.task, batch.labels) {
            (Task::SequenceClassification, _) => ws.sel.extend((0..bsz).map(|b| (b * t) as u32)),
            (Task::MaskedLM, Some(Labels::TokenClasses(y))) => {
                for (i, &v) in y.iter().enumerate().filter(|(_, &v)| v != cross_entropy::IGNORE_INDEX) {
                    ws.sel.push(i as u32);
                    ws.sel_y.push(v);
                }
            }
            (Task::MaskedLM, _) => ws.sel.extend(0..n as u32),
            (Task::TokenClassification, _) => {}
        }
        let layers = o.layers.len();
        for (li, lo) in o.layers.iter().enumerate() {
            let (prev, a) = acts::layer_pair(&mut ws.layers, li);
            let inp: &[f32] = prev.map_or(&ws.emb_out, |p| &p.out);
            bf16lin::forward(lc, &mut a.qkv, inp, s(lo.qkv_w, 3 * c * c), Some(s(lo.qkv_b, 3 * c)), n, c, 3 * c);
            let adrop = drop_at(mode, cfg.attention_probs_dropout_prob, site_layer(li, 0));
            let pd = if adrop.is_some() { Some(&mut a.probs_drop[..]) } else { None };
            attention::forward(&mut a.ctx, &mut a.probs, pd, &a.qkv, &ws.mask_add, shape, adrop);
            // Only the [CLS] rows of the last layer reach the pooler (the labelled rows the LM head), and after
            // attention the rows are independent: the rest of the last layer runs on those rows only (same
            // numbers, ~1/6 fewer FLOPs for a 6-layer model). Token classification needs every row.
            let last = li + 1 == layers && !token_task;
            let rows = if last { ws.sel.len() } else { n };
            let (ctx, res_in): (&[f32], &[f32]) = if last {
                gather_rows(&mut ws.cls_ctx, &a.ctx, &ws.sel, c);
                gather_rows(&mut ws.cls_in, inp, &ws.sel, c);
                (&ws.cls_ctx, &ws.cls_in)
            } else {
                (&a.ctx, inp)
            };
            let res1 = &mut a.res1[..rows * c];
            // Without dropout between them, the residual add runs fused into the projection.
            let drop1 = drop_at(mode, cfg.attn_output_dropout(), site_layer(li, 1));
            let fused_res = if drop1.is_none() { Some(&res_in[..rows * c]) } else { None };
            bf16lin::forward_fused(lc, res1, ctx, s(lo.ao_w, c * c), Some(s(lo.ao_b, c)), fused_res, None, rows, c, c);
            if let Some(d) = drop1 {
                dropout::forward(res1, d);
                residual::add_assign(res1, &res_in[..rows * c]);
            }
            layernorm::forward(
                &mut a.h1,
                &mut a.ln1_mean,
                &mut a.ln1_rstd,
                &a.res1,
                s(lo.ln1_w, c),
                s(lo.ln1_b, c),
                rows,
                c,
                eps,
            );
            let (fc_w, fc_b) = (s(lo.fc_w, f * c), s(lo.fc_b, f));
            let res2 = &mut a.res2[..rows * c];
            let drop2 = drop_at(mode, cfg.hidden_dropout_prob, site_layer(li, 2));
            let fused_res = if drop2.is_none() { Some(&a.h1[..rows * c]) } else { None };
            let (proj_w, proj_b) = (s(lo.proj_w, c * f), Some(s(lo.proj_b, c)));
            // Forward only (nothing keeps the FFN's activations for a backward pass): in bf16 the GELU output
            // goes straight into the next matmul's packed operand, never through f32 buffers.
            let packed =
                if ws.inference { bf16lin::forward_gelu_packed(lc, &a.h1, fc_w, fc_b, rows, c, f, c) } else { None };
            if let Some(act) = packed {
                bf16lin::forward_from_packed(lc, res2, &act, proj_w, proj_b, fused_res, c);
            } else {
                let act = Some(&mut a.inter_act[..rows * f]);
                bf16lin::forward_fused(lc, &mut a.inter_pre, &a.h1, fc_w, Some(fc_b), None, act, rows, c, f);
                bf16lin::forward_fused(lc, res2, &a.inter_act, proj_w, proj_b, fused_res, None, rows, f, c);
            }
            if let Some(d) = drop2 {
                dropout::forward(res2, d);
                residual::add_assign(res2, &a.h1[..rows * c]);
            }
            layernorm::forward(
                &mut a.out,
                &mut a.ln2_mean,
                &mut a.ln2_rstd,
                &a.res2,
                s(lo.ln2_w, c),
                s(lo.ln2_b, c),
                rows,
                c,
                eps,
            );
        }

        if mlm {
            return Ok(self.lm_head_forward(ws, lc, batch.labels.is_some()));
        }
        if token_task {
            let hidden = acts::last(&ws.layers, layers).map_or(&ws.emb_out, |a| &a.out);
            ws.tokens_drop.copy_from_slice(hidden);
            if let Some(d) = drop_at(mode, cfg.classifier_dropout_prob(), SITE_CLASSIFIER) {
                dropout::forward(&mut ws.tokens_drop, d);
            }
            bf16lin::forward(lc, &mut ws.logits, &ws.tokens_drop, s(o.cls_w, nl * c), Some(s(o.cls_b, nl)), n, c, nl);
            return Ok(match batch.labels {
                Some(Labels::TokenClasses(y)) => Some(cross_entropy::forward(&ws.logits, y, n, nl, self.loss.ce())),
                _ => None,
            });
        }

        // With encoder layers, the last one's output holds only the [CLS] rows (one row per sequence).
        let (last, last_t): (&[f32], usize) = match acts::last(&ws.layers, layers) {
            Some(a) => (&a.out, 1),
            None => (&ws.emb_out, t),
        };
        let (head_in, head_t): (&[f32], usize) = match cfg.arch() {
            Arch::Bert | Arch::DistilBert => (last, last_t),
            Arch::Roberta => {
                gather_first_rows(&mut ws.cls_drop, last, bsz, last_t, c);
                if let Some(d) = drop_at(mode, cfg.classifier_dropout_prob(), SITE_HEAD_IN) {
                    dropout::forward(&mut ws.cls_drop, d);
                }
                (&ws.cls_drop, 1)
            }
        };
        let (hw, hb) = (s(o.pool_w, c * c), s(o.pool_b, c));
        if cfg.arch() == Arch::DistilBert {
            // pre_classifier → ReLU on the first token.
            gather_first_rows(&mut ws.cls, head_in, bsz, head_t, c);
            bf16lin::forward(lc, &mut ws.pooled_pre, &ws.cls, hw, Some(hb), bsz, c, c);
            relu::forward(&mut ws.pooled, &ws.pooled_pre);
        } else {
            pooler::forward(&mut ws.pooled, &mut ws.cls, head_in, hw, hb, bsz, head_t, c);
        }
        ws.pooled_drop.copy_from_slice(&ws.pooled);
        if let Some(d) = drop_at(mode, cfg.classifier_dropout_prob(), SITE_CLASSIFIER) {
            dropout::forward(&mut ws.pooled_drop, d);
        }
        bf16lin::forward(lc, &mut ws.logits, &ws.pooled_drop, s(o.cls_w, nl * c), Some(s(o.cls_b, nl)), bsz, c, nl);

        Ok(match batch.labels {
            None => None,
            Some(Labels::Classes(y)) => Some(cross_entropy::forward(&ws.logits, y, bsz, nl, self.loss.ce())),
            Some(Labels::MultiLabel(y)) => Some(bce_with_logits::forward(&ws.logits, y)),
            Some(Labels::Regression(y)) => Some(mse::forward(&ws.logits, y)),
            // Rejected by check_batch for this task.
            Some(Labels::TokenClasses(_)) => None,
        })
    }

    /// The masked-LM head on the `ws.sel` rows of the last layer's output (which holds those rows alone; with no
    /// layers they are gathered from the embeddings): dense → GELU → LayerNorm → tied decoder + bias. Returns
    /// the mean cross-entropy over the labelled rows when `labelled` (0 when the batch has none).
    fn lm_head_forward(&self, ws: &mut Workspace, lc: bf16lin::Ctx<'_>, labelled: bool) -> Option<f32> {
        let cfg = &self.config;
        let (c, v, m) = (cfg.hidden_size, cfg.vocab_size, ws.sel.len());
        let o = &self.off;
        let p = &self.store.params;
        let s = |off: usize, len: usize| &p[off..off + len];
        let mc = m * c;
        match acts::last(&ws.layers, o.layers.len()) {
            Some(a) => ws.mlm_x[..mc].copy_from_slice(&a.out[..mc]),
            None => gather_rows(&mut ws.mlm_x, &ws.emb_out, &ws.sel, c),
        }
        if m == 0 {
            return labelled.then_some(0.0);
        }
        let (dense_w, dense_b) = (s(o.pool_w, c * c), Some(s(o.pool_b, c)));
        let act = Some(&mut ws.mlm_act[..mc]);
        bf16lin::forward_fused(lc, &mut ws.mlm_pre[..mc], &ws.mlm_x[..mc], dense_w, dense_b, None, act, m, c, c);
        let (mean, rstd) = (&mut ws.mlm_mean[..m], &mut ws.mlm_rstd[..m]);
        let (ln_w, ln_b) = (s(o.mlm_ln_w, c), s(o.mlm_ln_b, c));
        layernorm::forward(&mut ws.mlm_h[..mc], mean, rstd, &ws.mlm_act[..mc], ln_w, ln_b, m, c, cfg.layer_norm_eps);
        let logits = &mut ws.logits[..m * v];
        bf16lin::forward(lc, logits, &ws.mlm_h[..mc], s(o.cls_w, v * c), Some(s(o.cls_b, v)), m, c, v);
        labelled.then(|| cross_entropy::forward(&ws.logits[..m * v], &ws.sel_y, m, v, self.loss.ce()))
    }

    /// Adds the gradient of the mean loss of the last [`forward`](Self::forward) (same `ws` and `batch`, with
    /// labels) to `self.grads` for every parameter that requires one; frozen parameters' gradients are left as
    /// they were.
    pub fn backward(&mut self, ws: &mut Workspace, batch: &Batch<'_>) -> Result<(), BertError> {
        self.check_batch(ws, batch)?;
        if ws.inference {
            return Err(BertError::Batch("backward needs a workspace from Workspace::new, not for_inference".into()));
        }
        let mode = ws.mode.ok_or_else(|| BertError::Batch("backward called before forward".into()))?;
        let labels = batch.labels.ok_or_else(|| BertError::Batch("backward needs labels".into()))?;
        let Self { config: cfg, off: o, store, loss } = self;
        let w16 = ws.bf16.clone();
        let lc: bf16lin::Ctx = w16.as_ref().map(|w| (w, weights_version(w, store.steps())));
        let Parts { infos, params: p, grads: g, hook, .. } = store.parts();
        let (bsz, t, c, f) = (ws.batch, ws.seq, cfg.hidden_size, cfg.intermediate_size);
        let (n, nl) = (bsz * t, cfg.head_width());
        let heads = cfg.num_attention_heads;
        let shape = Shape { batch: bsz, seq: t, heads, head_dim: c / heads };
        let s = |off: usize, len: usize| &p[off..off + len];
        // Whether the parameter starting at `off` requires a gradient (infos are sorted by offset).
        let rg = |off: usize| infos.binary_search_by_key(&off, |i| i.offset).is_ok_and(|k| infos[k].requires_grad);
        // Whether any parameter starting in `lo..=hi` requires a gradient.
        let any_rg = |lo: usize, hi: usize| infos.iter().any(|i| (lo..=hi).contains(&i.offset) && i.requires_grad);
        // Gradient slices of a weight and its bias, `None` for a frozen one.
        macro_rules! pair {
            ($w:expr, $wl:expr, $b:expr, $bl:expr) => {{
                let (gw, gb) = split_pair(g, $w, $wl, $b, $bl);
                (rg($w).then_some(gw), rg($b).then_some(gb))
            }};
        }
        let layers = o.layers.len();
        // below[i]: some parameter of the embeddings or of layers 0..i requires a gradient, so the gradient of
        // layer i's input is needed.
        let mut below = vec![any_rg(o.wte, o.emb_ln_b)];
        for lo in &o.layers {
            let prev = below[below.len() - 1];
            below.push(prev || any_rg(lo.qkv_w, lo.ln2_b));
        }
        let enc_rg = below[layers];

        let token_task = cfg.task == Task::TokenClassification;
        let mlm = cfg.task == Task::MaskedLM;
        let ce = loss.ce();
        match labels {
            Labels::Classes(y) => cross_entropy::backward(&mut ws.dlogits, &ws.logits, y, bsz, nl, ce, 1.0),
            Labels::MultiLabel(y) => bce_with_logits::backward(&mut ws.dlogits, &ws.logits, y, 1.0),
            Labels::Regression(y) => mse::backward(&mut ws.dlogits, &ws.logits, y, 1.0),
            // Masked LM: only the labelled rows have logits.
            Labels::TokenClasses(_) if mlm => {
                let m = ws.sel.len();
                let (dl, l) = (&mut ws.dlogits[..m * nl], &ws.logits[..m * nl]);
                cross_entropy::backward(dl, l, &ws.sel_y, m, nl, ce, 1.0);
            }
            Labels::TokenClasses(y) => cross_entropy::backward(&mut ws.dlogits, &ws.logits, y, n, nl, ce, 1.0),
        }

        if mlm {
            // Decoder (tied to the word embeddings, whose gradient gets this part and the lookup's), LayerNorm,
            // GELU, transform dense; ws.dx then holds d(last layer output) on the labelled rows, in order.
            let (m, v) = (ws.sel.len(), cfg.vocab_size);
            if m == 0 {
                return Ok(());
            }
            let mc = m * c;
            let need_dh = enc_rg || [o.pool_w, o.pool_b, o.mlm_ln_w, o.mlm_ln_b].into_iter().any(rg);
            {
                let (gw, gb) = pair!(o.cls_w, v * c, o.cls_b, v);
                let dh = need_dh.then_some(&mut ws.dres[..mc]);
                let (dl, h) = (&ws.dlogits[..m * v], &ws.mlm_h[..mc]);
                bf16lin::backward(lc, dh, gw, gb, dl, h, s(o.cls_w, v * c), m, c, v, false);
            }
            if !need_dh {
                return Ok(());
            }
            let ln = pair!(o.mlm_ln_w, c, o.mlm_ln_b, c);
            let stats = (&ws.mlm_mean[..m], &ws.mlm_rstd[..m]);
            let (dres, act) = (&ws.dres[..mc], &ws.mlm_act[..mc]);
            layernorm_backward(&mut ws.dtmp[..mc], ln, &mut ws.dln_scratch, dres, act, s(o.mlm_ln_w, c), stats, m, c);
            gelu::backward(&mut ws.dtmp[..mc], &ws.mlm_pre[..mc]);
            let (gw, gb) = pair!(o.pool_w, c * c, o.pool_b, c);
            let dx = enc_rg.then_some(&mut ws.dcls[..mc]);
            bf16lin::backward(lc, dx, gw, gb, &ws.dtmp[..mc], &ws.mlm_x[..mc], s(o.pool_w, c * c), m, c, c, false);
            if !enc_rg {
                return Ok(());
            }
            if layers > 0 {
                ws.dx[..mc].copy_from_slice(&ws.dcls[..mc]);
            } else {
                scatter_rows_at(&mut ws.dx, &ws.dcls[..mc], &ws.sel, c);
            }
        } else if token_task {
            // Classifier on every token, then its dropout; ws.dx then holds d(last layer output), all rows.
            let (gw, gb) = pair!(o.cls_w, nl * c, o.cls_b, nl);
            let w = s(o.cls_w, nl * c);
            let dinp = enc_rg.then_some(&mut ws.dx[..]);
            bf16lin::backward(lc, dinp, gw, gb, &ws.dlogits, &ws.tokens_drop, w, n, c, nl, false);
            if !enc_rg {
                return Ok(());
            }
            if let Some(d) = drop_at(mode, cfg.classifier_dropout_prob(), SITE_CLASSIFIER) {
                dropout::backward(&mut ws.dx, d);
            }
        } else {
            // Classifier and pooler.
            let need_dpooled = enc_rg || rg(o.pool_w) || rg(o.pool_b);
            {
                let (gw, gb) = pair!(o.cls_w, nl * c, o.cls_b, nl);
                let dinp = need_dpooled.then_some(&mut ws.dpooled[..]);
                let w = s(o.cls_w, nl * c);
                bf16lin::backward(lc, dinp, gw, gb, &ws.dlogits, &ws.pooled_drop, w, bsz, c, nl, false);
            }
            if !need_dpooled {
                return Ok(());
            }
            if let Some(d) = drop_at(mode, cfg.classifier_dropout_prob(), SITE_CLASSIFIER) {
                dropout::backward(&mut ws.dpooled, d);
            }
            let last_t = if o.layers.is_empty() { t } else { 1 };
            let arch = cfg.arch();
            {
                let (gw, gb) = pair!(o.pool_w, c * c, o.pool_b, c);
                let (dhead, head_t) = match arch {
                    Arch::Bert => (&mut ws.dx, last_t),
                    Arch::Roberta | Arch::DistilBert => (&mut ws.dhead, 1),
                };
                let dhead = enc_rg.then_some(&mut dhead[..]);
                let w = s(o.pool_w, c * c);
                if arch == Arch::DistilBert {
                    relu::backward(&mut ws.dpre, &ws.dpooled, &ws.pooled);
                    bf16lin::backward(lc, dhead, gw, gb, &ws.dpre, &ws.cls, w, bsz, c, c, false);
                } else {
                    let acts = (&ws.dpooled[..], &ws.pooled[..], &ws.cls[..]);
                    pooler_backward(dhead, gw, gb, &mut ws.dpre, acts, w, bsz, head_t, c);
                }
            }
            if !enc_rg {
                return Ok(());
            }
            if arch == Arch::Roberta {
                if let Some(d) = drop_at(mode, cfg.classifier_dropout_prob(), SITE_HEAD_IN) {
                    dropout::backward(&mut ws.dhead, d);
                }
            }
            if arch != Arch::Bert {
                scatter_first_rows(&mut ws.dx, &ws.dhead, bsz, last_t, c);
            }
        }

        // Encoder layers in reverse; ws.dx holds the gradient of the current layer's output (only its [CLS]
        // rows for the last layer, which ran on those rows alone).
        for li in (0..layers).rev() {
            if !below[li + 1] {
                // Nothing in this layer or below it requires a gradient.
                return Ok(());
            }
            let lo = o.layers[li];
            let (prev, rest) = ws.layers.split_at(li);
            let inp: &[f32] = if li == 0 { &ws.emb_out } else { &prev[li - 1].out };
            let a = &rest[0];
            let last = li + 1 == layers && !token_task;
            let rows = if last { ws.sel.len() } else { n };
            let (rc, rf) = (rows * c, rows * f);

            let ln = pair!(lo.ln2_w, c, lo.ln2_b, c);
            let stats = (&a.ln2_mean[..], &a.ln2_rstd[..]);
            layernorm_backward(&mut ws.dres, ln, &mut ws.dln_scratch, &ws.dx, &a.res2, s(lo.ln2_w, c), stats, rows, c);
            ws.dtmp[..rc].copy_from_slice(&ws.dres[..rc]);
            if let Some(d) = drop_at(mode, cfg.hidden_dropout_prob, site_layer(li, 2)) {
                dropout::backward(&mut ws.dtmp[..rc], d);
            }
            let (gw, gb) = pair!(lo.proj_w, c * f, lo.proj_b, c);
            let w = s(lo.proj_w, c * f);
            bf16lin::backward(lc, Some(&mut ws.dinter), gw, gb, &ws.dtmp, &a.inter_act, w, rows, f, c, false);
            // The bf16 path's forward GELU evaluates erf in f32 (`gelu_f32`); its derivative does too.
            gelu::backward_with(&mut ws.dinter[..rf], &a.inter_pre[..rf], lc.is_some());
            // dh1 = residual path (dres) + FFN path; ws.dtmp holds it.
            ws.dtmp[..rc].copy_from_slice(&ws.dres[..rc]);
            let (gw, gb) = pair!(lo.fc_w, f * c, lo.fc_b, f);
            bf16lin::backward(lc, Some(&mut ws.dtmp), gw, gb, &ws.dinter, &a.h1, s(lo.fc_w, f * c), rows, c, f, true);

            let ln = pair!(lo.ln1_w, c, lo.ln1_b, c);
            let stats = (&a.ln1_mean[..], &a.ln1_rstd[..]);
            layernorm_backward(
                &mut ws.dres,
                ln,
                &mut ws.dln_scratch,
                &ws.dtmp,
                &a.res1,
                s(lo.ln1_w, c),
                stats,
                rows,
                c,
            );
            ws.dtmp[..rc].copy_from_slice(&ws.dres[..rc]);
            if let Some(d) = drop_at(mode, cfg.attn_output_dropout(), site_layer(li, 1)) {
                dropout::backward(&mut ws.dtmp[..rc], d);
            }
            // The attention backward is needed for the fused q/k/v gradients or for the layer input's gradient.
            let need_dx = below[li];
            let qkv_w_rg = (0..3).any(|k| rg(lo.qkv_w + k * c * c));
            let qkv_b_rg = (0..3).any(|k| rg(lo.qkv_b + k * c));
            let need_attn = need_dx || qkv_w_rg || qkv_b_rg;
            let (gw, gb) = pair!(lo.ao_w, c * c, lo.ao_b, c);
            let w = s(lo.ao_w, c * c);
            if last {
                let dinp = need_attn.then_some(&mut ws.dcls[..]);
                bf16lin::backward(lc, dinp, gw, gb, &ws.dtmp, &ws.cls_ctx, w, rows, c, c, false);
                if need_attn {
                    scatter_rows_at(&mut ws.dctx, &ws.dcls[..rc], &ws.sel, c);
                }
            } else {
                let dinp = need_attn.then_some(&mut ws.dctx[..]);
                bf16lin::backward(lc, dinp, gw, gb, &ws.dtmp, &a.ctx, w, n, c, c, false);
            }
            if !need_attn {
                continue;
            }
            let adrop = drop_at(mode, cfg.attention_probs_dropout_prob, site_layer(li, 0));
            let pd = if adrop.is_some() { Some(&a.probs_drop[..]) } else { None };
            attention::backward(&mut ws.dqkv, &mut ws.dscores, &ws.dctx, &a.qkv, &a.probs, pd, shape, adrop);
            // d(layer input) = residual path (dres) + attention path.
            if need_dx {
                if last {
                    scatter_rows_at(&mut ws.dx, &ws.dres[..rc], &ws.sel, c);
                } else {
                    ws.dx.copy_from_slice(&ws.dres);
                }
            }
            // q, k and v are one fused matrix: the fused gradient is computed when any part needs it, and the
            // frozen parts' gradient slices are put back afterwards.
            let parts = [0, 1, 2].map(|k| (lo.qkv_w + k * c * c, c * c, qkv_w_rg)).into_iter();
            let parts = parts.chain([0, 1, 2].map(|k| (lo.qkv_b + k * c, c, qkv_b_rg)));
            let saved: Vec<(usize, Vec<f32>)> = parts
                .filter(|&(off, _, fused)| fused && !rg(off))
                .map(|(off, len, _)| (off, g[off..off + len].to_vec()))
                .collect();
            let (gw, gb) = split_pair(g, lo.qkv_w, 3 * c * c, lo.qkv_b, 3 * c);
            let (gw, gb) = (qkv_w_rg.then_some(gw), qkv_b_rg.then_some(gb));
            let dinp = need_dx.then_some(&mut ws.dx[..]);
            bf16lin::backward(lc, dinp, gw, gb, &ws.dqkv, inp, s(lo.qkv_w, 3 * c * c), n, c, 3 * c, true);
            for (off, v) in saved {
                g[off..off + v.len()].copy_from_slice(&v);
            }
            hook.layer_done(infos, g, li);
        }

        // Embeddings.
        if !below[0] {
            return Ok(());
        }
        if let Some(d) = drop_at(mode, cfg.hidden_dropout_prob, SITE_EMB) {
            dropout::backward(&mut ws.dx, d);
        }
        {
            let ln = pair!(o.emb_ln_w, c, o.emb_ln_b, c);
            let stats = (&ws.emb_mean[..], &ws.emb_rstd[..]);
            let w = s(o.emb_ln_w, c);
            layernorm_backward(&mut ws.dres, ln, &mut ws.dln_scratch, &ws.dx, &ws.emb_sum, w, stats, n, c);
        }
        // The three tables are consecutive in the layout: word, position, token type.
        let has_tt = cfg.token_types() > 0;
        let (rw, rp, rt) = (rg(o.wte), rg(o.wpe), has_tt && rg(o.wtt));
        let (gwte, rest) = g[o.wte..].split_at_mut(o.wpe - o.wte);
        let (gwpe, rest) = rest.split_at_mut(o.wtt - o.wpe);
        let gwtt = &mut rest[..cfg.token_types() * c];
        if rw && rp && rt == has_tt {
            let gwtt = has_tt.then_some(gwtt);
            embedding::backward(gwte, gwpe, gwtt, &ws.dres, &ws.ids, &ws.pos, has_tt.then_some(&ws.tt[..]), c);
        } else {
            // Same per-token order as the kernel, so a table's gradient does not depend on which are frozen.
            for (on, table, rows) in [(rw, gwte, &ws.ids), (rp, gwpe, &ws.pos), (rt, gwtt, &ws.tt)] {
                if on {
                    scatter_add_rows(table, rows, &ws.dres, c);
                }
            }
        }
        Ok(())
    }
}

/// The bf16 copies' version: changes with the owner's [`SharedWeights::weights_changed`] and with this
/// model's own AdamW steps.
fn weights_version(w: &SharedWeights, step: u64) -> u64 {
    w.version().wrapping_add(step.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// `layernorm::backward` with frozen parameters: the kernel computes the parameter gradients together with
/// the input gradient, so a frozen one's go to `scratch` (an O(n·c) reduction, small next to the matmuls).
#[allow(clippy::too_many_arguments)]
fn layernorm_backward(
    dinp: &mut [f32],
    (dweight, dbias): (Option<&mut [f32]>, Option<&mut [f32]>),
    scratch: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    (mean, rstd): (&[f32], &[f32]),
    n: usize,
    c: usize,
) {
    scratch.fill(0.0);
    let (sw, sb) = scratch.split_at_mut(c);
    let dw = dweight.unwrap_or(sw);
    let db = dbias.unwrap_or(sb);
    layernorm::backward(dinp, dw, db, dout, inp, weight, mean, rstd, n, c);
}

/// `pooler::backward` computing only what is asked for (see [`linear_backward`]).
#[allow(clippy::too_many_arguments)]
fn pooler_backward(
    mut dx: Option<&mut [f32]>,
    mut dweight: Option<&mut [f32]>,
    mut dbias: Option<&mut [f32]>,
    dpre: &mut [f32],
    (dpooled, pooled, cls): (&[f32], &[f32], &[f32]),
    weight: &[f32],
    b: usize,
    t: usize,
    c: usize,
) {
    if let (Some(dx), Some(dw), Some(db)) = (dx.as_deref_mut(), dweight.as_deref_mut(), dbias.as_deref_mut()) {
        pooler::backward(dx, dw, db, dpre, dpooled, pooled, cls, weight, b, t, c);
        return;
    }
    // The same steps as the kernel: tanh backward, input gradient on the [CLS] rows, parameter gradients.
    for ((d, g), y) in dpre[..b * c].iter_mut().zip(dpooled).zip(pooled) {
        *d = g * (1.0 - y * y);
    }
    if let Some(dx) = dx {
        dx[..b * t * c].fill(0.0);
        for i in 0..b {
            let row = &mut dx[i * t * c..i * t * c + c];
            matmul(row, &dpre[i * c..(i + 1) * c], weight, 1, c, c, false, false, false);
        }
    }
    bf16lin::backward(None, None, dweight, dbias, dpre, cls, weight, b, c, c, false);
}

/// `table[rows[i]] += dout[i]` for every token, in token order.
fn scatter_add_rows(table: &mut [f32], rows: &[u32], dout: &[f32], c: usize) {
    for (g, &r) in dout.chunks_exact(c).zip(rows) {
        for (t, v) in table[r as usize * c..][..c].iter_mut().zip(g) {
            *t += v;
        }
    }
}

/// `out[i] = x[rows[i]]`.
fn gather_rows(out: &mut [f32], x: &[f32], rows: &[u32], c: usize) {
    for (o, &r) in out.chunks_exact_mut(c).zip(rows) {
        o.copy_from_slice(&x[r as usize * c..][..c]);
    }
}

/// `out[rows[i]] = x[i]`, every other row of `out` zero: the backward of [`gather_rows`].
fn scatter_rows_at(out: &mut [f32], x: &[f32], rows: &[u32], c: usize) {
    out.fill(0.0);
    for (v, &r) in x.chunks_exact(c).zip(rows) {
        out[r as usize * c..][..c].copy_from_slice(v);
    }
}

/// `out[b] = x[b, 0]`: the first row of each of `batch` sequences of `t` rows.
fn gather_first_rows(out: &mut [f32], x: &[f32], batch: usize, t: usize, c: usize) {
    for b in 0..batch {
        out[b * c..(b + 1) * c].copy_from_slice(&x[b * t * c..b * t * c + c]);
    }
}

/// `out[b, 0] = rows[b]`, every other row of `out` zero: the backward of [`gather_first_rows`].
fn scatter_first_rows(out: &mut [f32], rows: &[f32], batch: usize, t: usize, c: usize) {
    out[..batch * t * c].fill(0.0);
    for b in 0..batch {
        out[b * t * c..b * t * c + c].copy_from_slice(&rows[b * c..(b + 1) * c]);
    }
}

/// Two disjoint mutable ranges of one buffer (a weight's and its bias's gradient); `a` must precede `b`.
fn split_pair(buf: &mut [f32], a: usize, a_len: usize, b: usize, b_len: usize) -> (&mut [f32], &mut [f32]) {
    debug_assert!(a + a_len <= b);
    let (lo, hi) = buf.split_at_mut(b);
    (&mut lo[a..a + a_len], &mut hi[..b_len])
}
