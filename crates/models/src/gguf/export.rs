//! Export of a causal LM to GGUF as llama.cpp's `convert_hf_to_gguf.py` writes it, the reverse mapping used to
//! read an export back, and the logits / perplexity comparison of two models (the drift check).
//!
//! Architectures:
//! - Llama family (`model_type` `llama`, `mistral`; SmolLM2 is `llama`): `general.architecture = "llama"`, q/k
//!   rows permuted per head (`LlamaModel.permute`), `output.weight` omitted when the embeddings are tied.
//! - Qwen2: `general.architecture = "qwen2"`, q/k/v biases, no permutation (`Qwen2Model`).
//! - Phi (Phi-1, 1.5, 2): `general.architecture = "phi2"` (`Phi2Model`), separate q/k/v with biases, no
//!   permutation (NeoX rotary halves), `rope.dimension_count` the rotary columns, `output.weight` always written.
//! - GPT-2: `general.architecture = "gpt2"`, `attn_qkv` / `attn_output` / `ffn_up` / `ffn_down` with the Conv1D
//!   weights transposed to `[out, in]` (`GPT2Model.modify_tensors`), `position_embd` kept F32.
//!
//! Tensor types follow `ModelBase.prepare_tensors`: 1-D tensors, norms, biases and `position_embd` stay F32;
//! the other matrices get the requested type, and a matrix whose rows are not whole Q8_0 blocks falls back to
//! F16 (the converter's `QuantError` fallback).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use finetune_engine::{StateDict, Tensor};
use serde_json::Value;

use super::llama::{llama_config, llama_state_dict, permute_rows, unpermute_rows, LLAMA_ARCHS};
use super::reader::{GgmlType, GgufFile, MetaArray, MetaValue};
use super::tokenizer::LLAMA3_SPLIT_REGEX;
use super::writer::{encode_bf16, encode_f16, encode_f32, quantize_q8_0, write_gguf, TensorSpec, WriteError};
use super::GgufError;
use crate::causal::CausalModel;
use crate::decoder::Batch;
use crate::gpt2::Gpt2LMHeadModel;
use crate::llama::{LlamaConfig, LlamaForCausalLM};
use crate::phi::PhiForCausalLM;

/// Errors of an export: one line naming the file, tensor or key.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("tensor `{tensor}`: {message}")]
    Tensor { tensor: String, message: String },
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{0}")]
    Model(String),
}

fn file_err(path: &Path, message: impl Into<String>) -> ExportError {
    ExportError::File { path: path.to_path_buf(), message: message.into() }
}

/// `--outtype`: the type of the 2-D weight matrices.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutType {
    F32,
    F16,
    BF16,
    Q8_0,
}

impl std::str::FromStr for OutType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(OutType::F32),
            "f16" => Ok(OutType::F16),
            "bf16" => Ok(OutType::BF16),
            "q8_0" => Ok(OutType::Q8_0),
            _ => Err(format!("`{s}` is not an output type (f32, f16, bf16, q8_0)")),
        }
    }
}

impl OutType {
    /// `general.file_type` (`LlamaFileType`: ALL_F32 = 0, MOSTLY_F16 = 1, MOSTLY_Q8_0 = 7, MOSTLY_BF16 = 32).
    pub fn file_type(self) -> u32 {
        match self {
            OutType::F32 => 0,
            OutType::F16 => 1,
            OutType::BF16 => 32,
            OutType::Q8_0 => 7,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            OutType::F32 => "f32",
            OutType::F16 => "f16",
            OutType::BF16 => "bf16",
            OutType::Q8_0 => "q8_0",
        }
    }

    fn ggml(self) -> GgmlType {
        match self {
            OutType::F32 => GgmlType::F32,
            OutType::F16 => GgmlType::F16,
            OutType::BF16 => GgmlType::BF16,
            OutType::Q8_0 => GgmlType::Q8_0,
        }
    }
}

/// How a Hugging Face tensor becomes its GGUF tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Layout {
    /// Same row-major values.
    Same,
    /// llama.cpp's q/k row permutation with this many heads.
    Permute(usize),
    /// A `[rows, cols]` Conv1D weight stored transposed.
    Transpose,
}

/// One tensor of the export: GGUF name and spec, the HF parameter it comes from, its HF shape and layout.
#[derive(Debug, Clone)]
pub struct Planned {
    pub spec: TensorSpec,
    pub hf: String,
    pub hf_shape: Vec<usize>,
    pub layout: Layout,
    /// Values computed from the config rather than read from a parameter (`rope_freqs.weight`); `hf` is empty.
    pub constant: Option<Vec<f32>>,
}

/// Everything to write: metadata in order and the tensors.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    pub arch: &'static str,
    pub metadata: Vec<(String, MetaValue)>,
    pub tensors: Vec<Planned>,
}

/// The type a tensor gets (`ModelBase.prepare_tensors`).
fn tensor_type(gguf_name: &str, hf_shape: &[usize], out: OutType) -> GgmlType {
    if hf_shape.len() <= 1
        || gguf_name.ends_with("_norm.weight")
        || !gguf_name.ends_with(".weight")
        || gguf_name == "position_embd.weight"
    {
        return GgmlType::F32;
    }
    let inner = hf_shape.last().copied().unwrap_or(0);
    match out {
        OutType::Q8_0 if !inner.is_multiple_of(32) => GgmlType::F16,
        o => o.ggml(),
    }
}

fn json_u64(config: &Value, key: &str) -> Option<u64> {
    config.get(key).and_then(Value::as_u64)
}

/// The rope type of a non-default rope scaling (`rope_scaling` or `rope_parameters`), if any.
fn rope_scaling_kind(c: &LlamaConfig) -> Option<String> {
    [&c.rope_scaling, &c.rope_parameters]
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("rope_type").or_else(|| v.get("type")).and_then(Value::as_str))
        .find(|t| *t != "default")
        .map(str::to_owned)
}

/// The llama.cpp architecture name and whether q/k get permuted, for a Llama-family `model_type`: the loader's
/// table ([`LLAMA_ARCHS`]), Mistral written as `llama` as the converter does.
fn llama_arch(model_type: &str) -> Result<(&'static str, bool), ExportError> {
    let mt = if model_type == "mistral" { "llama" } else { model_type };
    LLAMA_ARCHS.iter().find(|a| a.model_type == mt).map(|a| (a.name, a.permuted)).ok_or_else(|| {
        ExportError::Unsupported(format!(
            "model_type `{model_type}` (export handles llama, mistral, qwen2, phi and gpt2)"
        ))
    })
}

/// Plans the export of `model` (its `config.json` in `config`) as `out`; `name` goes to `general.name`,
/// `tokenizer` is the `tokenizer.*` metadata (see [`tokenizer_meta_from_dir`], [`tokenizer_meta_from_gguf`]).
pub fn plan_export(
    model: &CausalModel,
    config: &Value,
    out: OutType,
    name: &str,
    tokenizer: Vec<(String, MetaValue)>,
) -> Result<ExportPlan, ExportError> {
    if model.store().lora_config().is_some() {
        return Err(ExportError::Model("the model has unmerged LoRA adapters (merge them first)".into()));
    }
    let mut meta: Vec<(String, MetaValue)> = Vec::new();
    let mut tensors = Vec::new();
    // Tensors computed from the config, placed first as the converter's `generate_extra_tensors` does.
    let mut computed: Vec<Planned> = Vec::new();
    let mut add = |gguf: String, hf: String, hf_shape: Vec<usize>, layout: Layout| {
        let ty = tensor_type(&gguf, &hf_shape, out);
        let dims: Vec<u64> = match layout {
            Layout::Transpose => hf_shape.iter().map(|&d| d as u64).collect(),
            _ => hf_shape.iter().rev().map(|&d| d as u64).collect(),
        };
        tensors.push(Planned { spec: TensorSpec { name: gguf, dims, ty }, hf, hf_shape, layout, constant: None });
    };
    let s = |v: &str| MetaValue::String(v.to_owned());
    let arch = match model {
        CausalModel::Llama(m) => {
            let c = &m.config;
            let model_type = c.model_type.as_deref().unwrap_or("llama");
            let (arch, permute) = llama_arch(model_type)?;
            // Llama 3.1's scaling travels as llama.cpp's per-frequency divisors; any other type is refused.
            let rope_factors = c.rope_freq_factors().map_err(|e| ExportError::Unsupported(e.to_string()))?;
            if let Some(kind) = rope_scaling_kind(c).filter(|_| arch != "llama") {
                return Err(ExportError::Unsupported(format!(
                    "rope scaling `{kind}` for model_type `{model_type}` (llama3 scaling is written for Llama models only)"
                )));
            }
            if c.mlp_bias {
                return Err(ExportError::Unsupported("mlp_bias = true (llama.cpp has no MLP biases)".into()));
            }
            let (h, f, nh, kv, d) =
                (c.hidden_size, c.intermediate_size, c.num_attention_heads, c.kv_heads(), c.head_dim());
            let ctx = json_u64(config, "max_position_embeddings").unwrap_or(2048);
            let u32v = |x: usize| MetaValue::U32(x as u32);
            let k = |key: &str| format!("{arch}.{key}");
            meta.push(("general.architecture".into(), s(arch)));
            meta.push(("general.type".into(), s("model")));
            meta.push(("general.name".into(), s(name)));
            meta.push((k("block_count"), u32v(c.num_hidden_layers)));
            meta.push((k("context_length"), MetaValue::U32(ctx.min(u64::from(u32::MAX)) as u32)));
            meta.push((k("embedding_length"), u32v(h)));
            meta.push((k("feed_forward_length"), u32v(f)));
            meta.push((k("attention.head_count"), u32v(nh)));
            meta.push((k("attention.head_count_kv"), u32v(kv)));
            meta.push((k("rope.freq_base"), MetaValue::F32(c.rope_theta() as f32)));
            meta.push((k("attention.layer_norm_rms_epsilon"), MetaValue::F32(c.rms_norm_eps)));
            if d * nh != h {
                meta.push((k("attention.key_length"), u32v(d)));
                meta.push((k("attention.value_length"), u32v(d)));
            }
            meta.push(("general.file_type".into(), MetaValue::U32(out.file_type())));
            if arch == "llama" {
                meta.push((k("vocab_size"), u32v(c.vocab_size)));
                meta.push((k("rope.dimension_count"), u32v(d)));
            }
            if let Some(factors) = rope_factors {
                // llama.cpp reads `rope_freqs.weight` [head_dim / 2], F32, shared by every layer.
                computed.push(Planned {
                    spec: TensorSpec {
                        name: "rope_freqs.weight".into(),
                        dims: vec![factors.len() as u64],
                        ty: GgmlType::F32,
                    },
                    hf: String::new(),
                    hf_shape: vec![factors.len()],
                    layout: Layout::Same,
                    constant: Some(factors),
                });
            }
            add("token_embd.weight".into(), "model.embed_tokens.weight".into(), vec![c.vocab_size, h], Layout::Same);
            for i in 0..c.num_hidden_layers {
                let p = format!("model.layers.{i}");
                let b = format!("blk.{i}");
                let (pq, pk) =
                    if permute { (Layout::Permute(nh), Layout::Permute(kv)) } else { (Layout::Same, Layout::Same) };
                add(format!("{b}.attn_q.weight"), format!("{p}.self_attn.q_proj.weight"), vec![nh * d, h], pq);
                add(format!("{b}.attn_k.weight"), format!("{p}.self_attn.k_proj.weight"), vec![kv * d, h], pk);
                add(
                    format!("{b}.attn_v.weight"),
                    format!("{p}.self_attn.v_proj.weight"),
                    vec![kv * d, h],
                    Layout::Same,
                );
                if c.qkv_bias() {
                    add(format!("{b}.attn_q.bias"), format!("{p}.self_attn.q_proj.bias"), vec![nh * d], pq);
                    add(format!("{b}.attn_k.bias"), format!("{p}.self_attn.k_proj.bias"), vec![kv * d], pk);
                    add(format!("{b}.attn_v.bias"), format!("{p}.self_attn.v_proj.bias"), vec![kv * d], Layout::Same);
                }
                add(
                    format!("{b}.attn_output.weight"),
                    format!("{p}.self_attn.o_proj.weight"),
                    vec![h, nh * d],
                    Layout::Same,
                );
                if c.o_bias() {
                    add(format!("{b}.attn_output.bias"), format!("{p}.self_attn.o_proj.bias"), vec![h], Layout::Same);
                }
                add(format!("{b}.ffn_gate.weight"), format!("{p}.mlp.gate_proj.weight"), vec![f, h], Layout::Same);
                add(format!("{b}.ffn_up.weight"), format!("{p}.mlp.up_proj.weight"), vec![f, h], Layout::Same);
                add(format!("{b}.ffn_down.weight"), format!("{p}.mlp.down_proj.weight"), vec![h, f], Layout::Same);
                add(format!("{b}.attn_norm.weight"), format!("{p}.input_layernorm.weight"), vec![h], Layout::Same);
                add(
                    format!("{b}.ffn_norm.weight"),
                    format!("{p}.post_attention_layernorm.weight"),
                    vec![h],
                    Layout::Same,
                );
            }
            add("output_norm.weight".into(), "model.norm.weight".into(), vec![h], Layout::Same);
            if !c.tie_word_embeddings {
                add("output.weight".into(), "lm_head.weight".into(), vec![c.vocab_size, h], Layout::Same);
            }
            arch
        }
        CausalModel::Phi(m) => {
            let c = &m.config;
            let (h, f, nh, kv, d) =
                (c.hidden_size, c.intermediate_size, c.num_attention_heads, c.kv_heads(), c.head_dim());
            let ctx = json_u64(config, "max_position_embeddings").unwrap_or(2048);
            let u32v = |x: usize| MetaValue::U32(x as u32);
            meta.push(("general.architecture".into(), s("phi2")));
            meta.push(("general.type".into(), s("model")));
            meta.push(("general.name".into(), s(name)));
            meta.push(("phi2.context_length".into(), MetaValue::U32(ctx.min(u64::from(u32::MAX)) as u32)));
            meta.push(("phi2.embedding_length".into(), u32v(h)));
            meta.push(("phi2.feed_forward_length".into(), u32v(f)));
            meta.push(("phi2.block_count".into(), u32v(c.num_hidden_layers)));
            meta.push(("phi2.attention.head_count".into(), u32v(nh)));
            meta.push(("phi2.attention.head_count_kv".into(), u32v(kv)));
            meta.push(("phi2.attention.layer_norm_epsilon".into(), MetaValue::F32(c.layer_norm_eps)));
            meta.push(("phi2.rope.dimension_count".into(), u32v(c.rotary_dim())));
            meta.push(("phi2.rope.freq_base".into(), MetaValue::F32(c.rope_theta() as f32)));
            if d * nh != h {
                meta.push(("phi2.attention.key_length".into(), u32v(d)));
                meta.push(("phi2.attention.value_length".into(), u32v(d)));
            }
            meta.push(("general.file_type".into(), MetaValue::U32(out.file_type())));
            add("token_embd.weight".into(), "model.embed_tokens.weight".into(), vec![c.vocab_size, h], Layout::Same);
            for i in 0..c.num_hidden_layers {
                let p = format!("model.layers.{i}");
                let b = format!("blk.{i}");
                // NeoX-style rotary halves, as transformers computes them: no q/k row permutation.
                for (g, hf, shape) in [
                    ("attn_norm.weight", "input_layernorm.weight", vec![h]),
                    ("attn_norm.bias", "input_layernorm.bias", vec![h]),
                    ("attn_q.weight", "self_attn.q_proj.weight", vec![nh * d, h]),
                    ("attn_q.bias", "self_attn.q_proj.bias", vec![nh * d]),
                    ("attn_k.weight", "self_attn.k_proj.weight", vec![kv * d, h]),
                    ("attn_k.bias", "self_attn.k_proj.bias", vec![kv * d]),
                    ("attn_v.weight", "self_attn.v_proj.weight", vec![kv * d, h]),
                    ("attn_v.bias", "self_attn.v_proj.bias", vec![kv * d]),
                    ("attn_output.weight", "self_attn.dense.weight", vec![h, nh * d]),
                    ("attn_output.bias", "self_attn.dense.bias", vec![h]),
                    ("ffn_up.weight", "mlp.fc1.weight", vec![f, h]),
                    ("ffn_up.bias", "mlp.fc1.bias", vec![f]),
                    ("ffn_down.weight", "mlp.fc2.weight", vec![h, f]),
                    ("ffn_down.bias", "mlp.fc2.bias", vec![h]),
                ] {
                    add(format!("{b}.{g}"), format!("{p}.{hf}"), shape, Layout::Same);
                }
            }
            add("output_norm.weight".into(), "model.final_layernorm.weight".into(), vec![h], Layout::Same);
            add("output_norm.bias".into(), "model.final_layernorm.bias".into(), vec![h], Layout::Same);
            // llama.cpp's phi2 always reads `output.weight`: tied embeddings are written twice.
            let head = if c.tie_word_embeddings { "model.embed_tokens.weight" } else { "lm_head.weight" };
            add("output.weight".into(), head.into(), vec![c.vocab_size, h], Layout::Same);
            add("output.bias".into(), "lm_head.bias".into(), vec![c.vocab_size], Layout::Same);
            "phi2"
        }
        CausalModel::Gpt2(m) => {
            let c = &m.config;
            let (h, f) = (c.n_embd, c.inner());
            let u32v = |x: usize| MetaValue::U32(x as u32);
            meta.push(("general.architecture".into(), s("gpt2")));
            meta.push(("general.type".into(), s("model")));
            meta.push(("general.name".into(), s(name)));
            meta.push(("gpt2.block_count".into(), u32v(c.n_layer)));
            meta.push(("gpt2.context_length".into(), u32v(c.n_positions)));
            meta.push(("gpt2.embedding_length".into(), u32v(h)));
            meta.push(("gpt2.feed_forward_length".into(), u32v(f)));
            meta.push(("gpt2.attention.head_count".into(), u32v(c.n_head)));
            meta.push(("gpt2.attention.layer_norm_epsilon".into(), MetaValue::F32(c.layer_norm_epsilon)));
            meta.push(("general.file_type".into(), MetaValue::U32(out.file_type())));
            add("token_embd.weight".into(), "transformer.wte.weight".into(), vec![c.vocab_size, h], Layout::Same);
            add("position_embd.weight".into(), "transformer.wpe.weight".into(), vec![c.n_positions, h], Layout::Same);
            for i in 0..c.n_layer {
                let p = format!("transformer.h.{i}");
                let b = format!("blk.{i}");
                for (g, hf, shape, layout) in [
                    ("attn_norm.weight", "ln_1.weight", vec![h], Layout::Same),
                    ("attn_norm.bias", "ln_1.bias", vec![h], Layout::Same),
                    ("attn_qkv.weight", "attn.c_attn.weight", vec![h, 3 * h], Layout::Transpose),
                    ("attn_qkv.bias", "attn.c_attn.bias", vec![3 * h], Layout::Same),
                    ("attn_output.weight", "attn.c_proj.weight", vec![h, h], Layout::Transpose),
                    ("attn_output.bias", "attn.c_proj.bias", vec![h], Layout::Same),
                    ("ffn_norm.weight", "ln_2.weight", vec![h], Layout::Same),
                    ("ffn_norm.bias", "ln_2.bias", vec![h], Layout::Same),
                    ("ffn_up.weight", "mlp.c_fc.weight", vec![h, f], Layout::Transpose),
                    ("ffn_up.bias", "mlp.c_fc.bias", vec![f], Layout::Same),
                    ("ffn_down.weight", "mlp.c_proj.weight", vec![f, h], Layout::Transpose),
                    ("ffn_down.bias", "mlp.c_proj.bias", vec![h], Layout::Same),
                ] {
                    add(format!("{b}.{g}"), format!("{p}.{hf}"), shape, layout);
                }
            }
            add("output_norm.weight".into(), "transformer.ln_f.weight".into(), vec![h], Layout::Same);
            add("output_norm.bias".into(), "transformer.ln_f.bias".into(), vec![h], Layout::Same);
            "gpt2"
        }
    };
    tensors.splice(0..0, computed);
    // Transposed tensors: the GGUF dims are the HF dims in order (innermost = HF rows); the type decision
    // above looked at the HF inner dim, so redo it on the GGUF row length.
    for t in &mut tensors {
        if t.layout == Layout::Transpose && t.spec.ty == GgmlType::Q8_0 && !t.hf_shape[0].is_multiple_of(32) {
            t.spec.ty = GgmlType::F16;
        }
    }
    meta.push(("general.quantization_version".into(), MetaValue::U32(2)));
    // The converter's Phi2Model sets add_bos_token = false (Phi's tokenizer adds no BOS).
    let phi_bos = arch == "phi2" && !tokenizer.iter().any(|(k, _)| k == "tokenizer.ggml.add_bos_token");
    meta.extend(tokenizer);
    if phi_bos {
        meta.push(("tokenizer.ggml.add_bos_token".into(), MetaValue::Bool(false)));
    }
    Ok(ExportPlan { arch, metadata: meta, tensors })
}

/// The values of a planned tensor in GGUF row-major order.
fn gguf_values(model: &CausalModel, t: &Planned) -> Result<Vec<f32>, ExportError> {
    let err = |message: String| ExportError::Tensor { tensor: t.spec.name.clone(), message };
    if let Some(c) = &t.constant {
        return Ok(c.clone());
    }
    let values = model.store().param(&t.hf).ok_or_else(|| err(format!("the model has no parameter `{}`", t.hf)))?;
    let n = t.hf_shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if n != Some(values.len()) {
        return Err(err(format!("`{}` has {} values, shape {:?} needs {n:?}", t.hf, values.len(), t.hf_shape)));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(err(format!("`{}` value {i} is not finite ({})", t.hf, values[i])));
    }
    let (rows, cols) = match t.hf_shape[..] {
        [r, c] => (r, c),
        [r] => (r, 1),
        _ => (values.len(), 1),
    };
    Ok(match t.layout {
        Layout::Same => values.to_vec(),
        Layout::Permute(n_head) => permute_rows(values, rows, cols, n_head)
            .ok_or_else(|| err(format!("{rows} rows cannot be split into {n_head} heads of two rotary halves")))?,
        Layout::Transpose => {
            let mut out = vec![0f32; values.len()];
            for r in 0..rows {
                for c in 0..cols {
                    out[c * rows + r] = values[r * cols + c];
                }
            }
            out
        }
    })
}

/// Encodes values as `ty`.
pub fn encode(ty: GgmlType, values: &[f32]) -> Option<Vec<u8>> {
    match ty {
        GgmlType::F32 => Some(encode_f32(values)),
        GgmlType::F16 => Some(encode_f16(values)),
        GgmlType::BF16 => Some(encode_bf16(values)),
        GgmlType::Q8_0 => quantize_q8_0(values),
        _ => None,
    }
}

/// Writes the planned file to `out` (one tensor encoded at a time). Returns the bytes written.
pub fn write_export(plan: &ExportPlan, model: &CausalModel, out: &mut impl Write) -> Result<u64, ExportError> {
    let specs: Vec<TensorSpec> = plan.tensors.iter().map(|t| t.spec.clone()).collect();
    for s in &specs {
        s.n_bytes()?;
    }
    write_gguf(out, &plan.metadata, &specs, |i| {
        let t = &plan.tensors[i];
        let values = gguf_values(model, t)?;
        encode(t.spec.ty, &values).ok_or_else(|| ExportError::Tensor {
            tensor: t.spec.name.clone(),
            message: format!("cannot encode {} values as {:?}", values.len(), t.spec.ty),
        })
    })
}

/// Reads an export back into the HF state dict through the plan's mapping (dequantise, undo the layout).
pub fn read_back_state(file: &GgufFile, plan: &ExportPlan) -> Result<StateDict, ExportError> {
    let mut sd = BTreeMap::new();
    for t in plan.tensors.iter().filter(|t| t.constant.is_none()) {
        let err = |message: String| ExportError::Tensor { tensor: t.spec.name.clone(), message };
        let info = file.tensor(&t.spec.name).ok_or_else(|| err("missing from the written file".into()))?;
        if info.dims != t.spec.dims {
            return Err(err(format!("dims {:?} in the file, {:?} planned", info.dims, t.spec.dims)));
        }
        let data = file.dequantize(info)?;
        let (rows, cols) = match t.hf_shape[..] {
            [r, c] => (r, c),
            [r] => (r, 1),
            _ => (data.len(), 1),
        };
        let hf = match t.layout {
            Layout::Same => data,
            Layout::Permute(n) => unpermute_rows(&data, rows, cols, n).ok_or_else(|| err("cannot unpermute".into()))?,
            Layout::Transpose => {
                let mut out = vec![0f32; data.len()];
                for r in 0..rows {
                    for c in 0..cols {
                        out[r * cols + c] = data[c * rows + r];
                    }
                }
                out
            }
        };
        sd.insert(t.hf.clone(), Tensor::new(t.hf_shape.clone(), hf));
    }
    Ok(sd)
}

/// Loads a written export as a model, with our GGUF reader. `llama` (without biases) and `qwen2`: through the GGUF
/// Llama-family loader ([`llama_config`] from the metadata, [`llama_state_dict`] with its own name mapping and
/// un-permutation), so metadata and names are checked independently of the writer. `gpt2`, `phi2` and a Llama
/// with biases (no GGUF loader for them yet): every tensor dequantised and mapped back through the plan, into the
/// source's architecture and config.
pub fn load_export(path: &Path, plan: &ExportPlan, source: &CausalModel) -> Result<CausalModel, ExportError> {
    let file = GgufFile::open(path)?;
    let llama_plain = matches!(source, CausalModel::Llama(m) if !m.config.qkv_bias() && !m.config.o_bias());
    if (plan.arch == "llama" && llama_plain) || plan.arch == "qwen2" {
        let config = llama_config(&file)?;
        let state = llama_state_dict(&file, &config)?;
        let cfg = LlamaConfig::from_json(&config.to_string()).map_err(|e| file_err(path, e.to_string()))?;
        let m = LlamaForCausalLM::from_state_dict(cfg, &state).map_err(|e| file_err(path, e.to_string()))?;
        return Ok(CausalModel::Llama(m));
    }
    let state = read_back_state(&file, plan)?;
    Ok(match source {
        CausalModel::Llama(m) => CausalModel::Llama(
            LlamaForCausalLM::from_state_dict(m.config.clone(), &state).map_err(|e| file_err(path, e.to_string()))?,
        ),
        CausalModel::Gpt2(m) => CausalModel::Gpt2(
            Gpt2LMHeadModel::from_state_dict(m.config.clone(), &state).map_err(|e| file_err(path, e.to_string()))?,
        ),
        CausalModel::Phi(m) => CausalModel::Phi(
            PhiForCausalLM::from_state_dict(m.config.clone(), &state).map_err(|e| file_err(path, e.to_string()))?,
        ),
    })
}

/// Logits `[ids.len(), vocab]` of one sequence.
pub fn sequence_logits(model: &CausalModel, ids: &[u32]) -> Result<Vec<f32>, ExportError> {
    let mask = vec![1u32; ids.len()];
    let batch = Batch { input_ids: ids, attention_mask: &mask, ..Default::default() };
    let e = |e: String| ExportError::Model(format!("forward pass: {e}"));
    let mut ws = model.new_workspace(1, ids.len());
    model.logits(&mut ws, &batch, false).map(<[f32]>::to_vec).map_err(|x| e(x.to_string()))
}

/// The comparison of a source model and its export on the same tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Drift {
    /// max |logit_export − logit_source| over every position and vocabulary entry.
    pub max_abs_logit_diff: f32,
    /// Mean |logit_export − logit_source|.
    pub mean_abs_logit_diff: f64,
    pub ppl_source: f64,
    pub ppl_export: f64,
    /// Next-token predictions scored (per window: its length − 1).
    pub num_tokens: usize,
    pub windows: usize,
}

impl Drift {
    /// (ppl_export − ppl_source) / ppl_source.
    pub fn relative_ppl_change(&self) -> f64 {
        (self.ppl_export - self.ppl_source) / self.ppl_source
    }
}

/// Summed next-token NLL (natural log, f64) of one window's logits.
fn window_nll(logits: &[f32], ids: &[u32], vocab: usize) -> f64 {
    let mut sum = 0.0;
    for t in 0..ids.len().saturating_sub(1) {
        let row = &logits[t * vocab..(t + 1) * vocab];
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
        let lse = max + row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
        sum += lse - row[ids[t + 1] as usize] as f64;
    }
    sum
}

/// Runs both models on `ids` in disjoint windows of `window` tokens (the last one may be shorter; a final
/// window of one token is dropped) and compares logits and perplexity.
pub fn compare_models(
    source: &CausalModel,
    export: &CausalModel,
    ids: &[u32],
    window: usize,
) -> Result<Drift, ExportError> {
    let vocab = source.vocab_size();
    if export.vocab_size() != vocab {
        return Err(ExportError::Model(format!("vocab sizes differ: {vocab} vs {}", export.vocab_size())));
    }
    if window < 2 {
        return Err(ExportError::Model(format!("window {window}: need at least 2 tokens")));
    }
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= vocab) {
        return Err(ExportError::Model(format!("token id {bad} is outside the vocabulary of {vocab}")));
    }
    let (mut max, mut abs_sum, mut n_logits) = (0f32, 0f64, 0usize);
    let (mut nll_a, mut nll_b, mut n, mut windows) = (0f64, 0f64, 0usize, 0usize);
    for chunk in ids.chunks(window).filter(|c| c.len() >= 2) {
        let a = sequence_logits(source, chunk)?;
        let b = sequence_logits(export, chunk)?;
        for (x, y) in a.iter().zip(&b) {
            let d = (x - y).abs();
            max = max.max(if d.is_nan() { f32::INFINITY } else { d });
            abs_sum += d as f64;
        }
        n_logits += a.len();
        nll_a += window_nll(&a, chunk, vocab);
        nll_b += window_nll(&b, chunk, vocab);
        n += chunk.len() - 1;
        windows += 1;
    }
    if n == 0 {
        return Err(ExportError::Model("the evaluation text has fewer than 2 tokens".into()));
    }
    Ok(Drift {
        max_abs_logit_diff: max,
        mean_abs_logit_diff: abs_sum / n_logits as f64,
        ppl_source: (nll_a / n as f64).exp(),
        ppl_export: (nll_b / n as f64).exp(),
        num_tokens: n,
        windows,
    })
}

/// The `tokenizer.*` metadata of a GGUF file, copied verbatim (a GGUF source keeps its tokenizer).
pub fn tokenizer_meta_from_gguf(file: &GgufFile) -> Vec<(String, MetaValue)> {
    file.metadata().iter().filter(|(k, _)| k.starts_with("tokenizer.")).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// llama.cpp token types.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;

/// `TextModel.does_token_look_special`.
fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<｜") && t.ends_with("｜>"))
        || (t.starts_with("<start_of_") && t.ends_with('>'))
}

/// `tokenizer.ggml.pre` for a Hugging Face `tokenizer.json`. llama.cpp's converter identifies pre-tokenizers by
/// hashing the ids of a test string; here the choice is by structure: `gpt2` → `gpt-2`, `qwen2` → `qwen2`, a
/// `Sequence[Digits(individual_digits), ByteLevel]` (SmolLM/SmolLM2) → `smollm`, a plain `ByteLevel` with its
/// GPT-2 regex → `gpt-2`, `Sequence[Split(Llama 3's regex), ByteLevel]` → `llama-bpe`. Anything else is refused
/// with its structure: llama.cpp would split the text its own way and the export would tokenize differently.
pub fn pre_tokenizer_name(model_type: &str, tokenizer_json: &Value) -> Result<&'static str, String> {
    match model_type {
        "gpt2" => return Ok("gpt-2"),
        "qwen2" => return Ok("qwen2"),
        _ => {}
    }
    let pre = &tokenizer_json["pre_tokenizer"];
    let ty = |v: &Value| v.get("type").and_then(Value::as_str).unwrap_or("").to_owned();
    let byte_level_regex = |v: &Value| ty(v) == "ByteLevel" && v["use_regex"].as_bool() != Some(false);
    let parts = pre["pretokenizers"].as_array().map(Vec::as_slice).unwrap_or_default();
    match (ty(pre).as_str(), parts) {
        ("ByteLevel", _) if byte_level_regex(pre) => Ok("gpt-2"),
        ("Sequence", [digits, bl])
            if ty(digits) == "Digits"
                && digits["individual_digits"].as_bool() == Some(true)
                && byte_level_regex(bl) =>
        {
            Ok("smollm")
        }
        ("Sequence", [split, bl])
            if ty(split) == "Split"
                && split["pattern"]["Regex"].as_str() == Some(LLAMA3_SPLIT_REGEX)
                && split["behavior"].as_str() == Some("Isolated")
                && split["invert"].as_bool() != Some(true)
                && ty(bl) == "ByteLevel"
                && bl["use_regex"].as_bool() == Some(false) =>
        {
            Ok("llama-bpe")
        }
        _ => Err(format!(
            "pre_tokenizer {}: no llama.cpp pre-tokenizer this exporter knows splits text the same way (known: \
             GPT-2's ByteLevel, SmolLM's Digits + ByteLevel, Llama 3's Split + ByteLevel)",
            if pre.is_null() { "null".to_owned() } else { pre.to_string().chars().take(200).collect() }
        )),
    }
}

/// Whether the post-processor puts `token` first (`first`) or last in a single sequence: gguf's `SpecialVocab`
/// reads `add_bos_token` / `add_eos_token` from a `TemplateProcessing` (alone or in a `Sequence`, as Llama 3's)
/// when `tokenizer_config.json` does not set them.
fn template_adds(tokenizer_json: &Value, token: &str, first: bool) -> bool {
    let post = &tokenizer_json["post_processor"];
    let list = post["processors"].as_array().map(Vec::as_slice).unwrap_or(std::slice::from_ref(post));
    list.iter().filter(|p| p["type"].as_str() == Some("TemplateProcessing")).any(|p| {
        let single = p["single"].as_array().map(Vec::as_slice).unwrap_or_default();
        let end = if first { single.first() } else { single.last() };
        single.len() > 1 && end.and_then(|e| e["SpecialToken"]["id"].as_str()) == Some(token)
    })
}

/// A special token's text in `tokenizer_config.json` (a string or `{"content": ...}`).
fn token_text(v: &Value) -> Option<&str> {
    v.as_str().or_else(|| v.get("content").and_then(Value::as_str))
}

/// The `tokenizer.*` metadata for a Hugging Face model directory, as `convert_hf_to_gguf.py`'s `get_vocab_base`
/// and `gguf.SpecialVocab` write it, for byte-level BPE tokenizers (`tokenizer.ggml.model = "gpt2"`):
/// tokens by id up to `vocab_size` (`[PAD{i}]` for ids the tokenizer lacks), token types (added special or
/// special-looking tokens CONTROL, other added tokens USER_DEFINED), merges, BOS/EOS/UNK/PAD ids (from
/// `tokenizer_config.json`, then `config.json`), `add_bos_token`/`add_eos_token` when set, and the chat template
/// (`tokenizer_config.json` or `chat_template.jinja`).
pub fn tokenizer_meta_from_dir(dir: &Path, config: &Value) -> Result<Vec<(String, MetaValue)>, ExportError> {
    let read = |name: &str| -> Result<Option<Value>, ExportError> {
        let p = dir.join(name);
        if !p.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&p).map_err(|e| file_err(&p, e.to_string()))?;
        serde_json::from_str(&text).map(Some).map_err(|e| file_err(&p, format!("invalid JSON: {e}")))
    };
    let tj_path = dir.join("tokenizer.json");
    let tj = read("tokenizer.json")?.ok_or_else(|| file_err(&tj_path, "missing (export needs a tokenizer.json)"))?;
    let tc = read("tokenizer_config.json")?.unwrap_or(Value::Null);
    let model = &tj["model"];
    if model["type"].as_str() != Some("BPE") {
        return Err(file_err(
            &tj_path,
            format!("model.type {}: export handles byte-level BPE tokenizers only", model["type"]),
        ));
    }
    let byte_level = |v: &Value| v.to_string().contains("\"ByteLevel\"");
    if !byte_level(&tj["pre_tokenizer"]) && !byte_level(&tj["decoder"]) {
        return Err(file_err(&tj_path, "not a byte-level BPE (no ByteLevel pre-tokenizer or decoder)"));
    }
    let vocab = model["vocab"].as_object().ok_or_else(|| file_err(&tj_path, "model.vocab is not an object"))?;
    let model_type = config.get("model_type").and_then(Value::as_str).unwrap_or("llama");
    let mut by_id: BTreeMap<u64, (String, Option<bool>)> = BTreeMap::new();
    for (tok, id) in vocab {
        let id = id.as_u64().ok_or_else(|| file_err(&tj_path, format!("model.vocab[{tok:?}] is not an id")))?;
        by_id.insert(id, (tok.clone(), None));
    }
    for a in tj["added_tokens"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let (Some(id), Some(content)) = (a["id"].as_u64(), a["content"].as_str()) else {
            return Err(file_err(&tj_path, "an added_tokens entry lacks id or content"));
        };
        by_id.insert(id, (content.to_owned(), Some(a["special"].as_bool().unwrap_or(false))));
    }
    let max_id = by_id.keys().next_back().map_or(0, |&m| m + 1);
    let n = json_u64(config, "vocab_size").unwrap_or(max_id).max(max_id);
    if n > 1 << 24 {
        return Err(file_err(&tj_path, format!("{n} tokens is more than this exporter accepts (2^24)")));
    }
    let mut tokens = Vec::with_capacity(n as usize);
    let mut types = Vec::with_capacity(n as usize);
    for i in 0..n {
        match by_id.get(&i) {
            None => {
                tokens.push(format!("[PAD{i}]"));
                types.push(USER_DEFINED);
            }
            Some((t, None)) => {
                tokens.push(t.clone());
                types.push(NORMAL);
            }
            Some((t, Some(special))) => {
                if *special || looks_special(t) {
                    tokens.push(t.clone());
                    types.push(CONTROL);
                } else {
                    tokens.push(t.replace('\u{2581}', " "));
                    types.push(USER_DEFINED);
                }
            }
        }
    }
    let merges = model["merges"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, m)| match m {
            Value::String(s) => Ok(s.clone()),
            Value::Array(p) if p.len() == 2 && p.iter().all(Value::is_string) => {
                Ok(format!("{} {}", p[0].as_str().unwrap_or(""), p[1].as_str().unwrap_or("")))
            }
            _ => Err(file_err(&tj_path, format!("model.merges[{i}] is neither \"a b\" nor [\"a\", \"b\"]"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let id_of = |text: &str| tokens.iter().position(|t| t == text).map(|i| i as u32);
    let mut meta: Vec<(String, MetaValue)> = vec![
        ("tokenizer.ggml.model".into(), MetaValue::String("gpt2".into())),
        (
            "tokenizer.ggml.pre".into(),
            MetaValue::String(pre_tokenizer_name(model_type, &tj).map_err(|e| file_err(&tj_path, e))?.into()),
        ),
    ];
    let mut specials = Vec::new();
    for (kind, key) in [("bos", "bos_token"), ("eos", "eos_token"), ("unknown", "unk_token"), ("padding", "pad_token")]
    {
        let from_tc = tc.get(key).and_then(token_text).and_then(id_of);
        let hf_key = if kind == "unknown" { "unk_token_id".to_owned() } else { format!("{key}_id") };
        let from_cfg = json_u64(config, &hf_key).filter(|&i| i < n).map(|i| i as u32);
        if let Some(id) = from_tc.or(from_cfg) {
            specials.push((format!("tokenizer.ggml.{kind}_token_id"), MetaValue::U32(id)));
        }
    }
    let merges_meta = ("tokenizer.ggml.merges".to_owned(), MetaValue::Array(MetaArray::String(merges)));
    meta.push(("tokenizer.ggml.tokens".into(), MetaValue::Array(MetaArray::String(tokens))));
    meta.push(("tokenizer.ggml.token_type".into(), MetaValue::Array(MetaArray::I32(types))));
    meta.push(merges_meta);
    meta.extend(specials);
    for (key, token_key, first) in [("add_bos_token", "bos_token", true), ("add_eos_token", "eos_token", false)] {
        let from_template = || {
            let token = tc.get(token_key).and_then(token_text)?;
            template_adds(&tj, token, first).then_some(true)
        };
        if let Some(b) = tc.get(key).and_then(Value::as_bool).or_else(from_template) {
            meta.push((format!("tokenizer.ggml.{key}"), MetaValue::Bool(b)));
        }
    }
    let template = match tc.get("chat_template") {
        Some(Value::String(t)) => Some(t.clone()),
        Some(Value::Array(list)) => list
            .iter()
            .find(|e| e["name"].as_str() == Some("default"))
            .and_then(|e| e["template"].as_str())
            .map(str::to_owned),
        _ => {
            let p = dir.join("chat_template.jinja");
            if p.is_file() {
                Some(std::fs::read_to_string(&p).map_err(|e| file_err(&p, e.to_string()))?)
            } else {
                None
            }
        }
    };
    if let Some(t) = template {
        meta.push(("tokenizer.chat_template".into(), MetaValue::String(t)));
    }
    Ok(meta)
}
