//! ONNX export of the BERT-family encoders (`…ForSequenceClassification`, `…ForTokenClassification`) with the
//! inputs and output HF Optimum's `optimum-cli export onnx` gives the same checkpoints: `input_ids`, `attention_mask`
//! (and `token_type_ids` for BERT), int64 `[batch_size, sequence_length]`; output `logits`, f32 `[batch_size,
//! num_labels]` or `[batch_size, sequence_length, num_labels]`; both axes dynamic; opset 17 (LayerNormalization).
//! ONNX Runtime, transformers.js and Triton's ONNX backend load it.
//!
//! The graph is the forward of [`crate::bert`] written as ONNX operators: embeddings (RoBERTa's position ids
//! counted over non-padding tokens, `CumSum`), post-LN layers with the additive mask (`finfo(float32).min` at
//! padding), exact GELU (`Erf`), and each member's head on the first token or on every token. Weights are stored
//! transposed (`MatMul` takes `[in, out]`) as raw little-endian f32 initializers. Masked-LM heads are refused.

pub mod proto;

use std::collections::BTreeMap;

use prost::Message;

use crate::bert::{Arch, BertForSequenceClassification, Task};
use proto::{
    attribute_type, data_type, AttributeProto, DimValue, Dimension, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TensorTypeProto, TypeProto,
    ValueInfoProto,
};

/// The opset written: 17 is the first with `LayerNormalization`.
pub const OPSET: i64 = 17;
/// ONNX IR version 8, what ONNX 1.12 (the release of opset 17) writes; runtimes from 2022 on read it.
pub const IR_VERSION: i64 = 8;
/// protobuf messages cannot exceed 2 GiB; larger models need ONNX's external-data files (not written).
const MAX_BYTES: usize = (1 << 31) - 1;

#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("parameter `{0}` is missing from the model")]
    Missing(String),
    #[error("{0}")]
    Invalid(String),
}

/// Accumulates nodes and initializers under unique value names.
struct Builder {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    bytes: usize,
    next: usize,
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: name.into(), i, r#type: attribute_type::INT, ..Default::default() }
}

fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto { name: name.into(), f, r#type: attribute_type::FLOAT, ..Default::default() }
}

fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), ints: ints.to_vec(), r#type: attribute_type::INTS, ..Default::default() }
}

impl Builder {
    fn new() -> Self {
        Builder { nodes: Vec::new(), inits: Vec::new(), bytes: 0, next: 0 }
    }

    /// One node; returns its (single) output's name, `{op}_{n}`.
    fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        self.next += 1;
        let out = format!("{}_{}", op.to_ascii_lowercase(), self.next);
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: format!("{op}_{}", self.next),
            op_type: op.into(),
            attribute: attrs,
            domain: String::new(),
        });
        out
    }

    fn f32_init(&mut self, name: &str, dims: &[usize], values: &[f32]) -> Result<String, OnnxError> {
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.add_init(name, dims, data_type::FLOAT, raw)
    }

    fn i64_init(&mut self, name: &str, dims: &[usize], values: &[i64]) -> Result<String, OnnxError> {
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.add_init(name, dims, data_type::INT64, raw)
    }

    fn add_init(&mut self, name: &str, dims: &[usize], ty: i32, raw: Vec<u8>) -> Result<String, OnnxError> {
        self.bytes += raw.len();
        if self.bytes > MAX_BYTES {
            return Err(OnnxError::Unsupported("a model over 2 GiB (ONNX external-data files are not written)".into()));
        }
        let dims = dims.iter().map(|&d| d as i64).collect();
        self.inits.push(TensorProto { dims, data_type: ty, name: name.into(), raw_data: raw });
        Ok(name.into())
    }

    /// `x · Wᵀ + b` for an nn.Linear weight `[out, in]` stored as the initializer `{name}.weight` `[in, out]`.
    fn linear(&mut self, m: &Params<'_>, x: &str, name: &str) -> Result<String, OnnxError> {
        let (w, shape) = m.get(&format!("{name}.weight"))?;
        let [out, inp] = shape[..] else {
            return Err(OnnxError::Invalid(format!("`{name}.weight` is not a matrix")));
        };
        let mut t = vec![0f32; w.len()];
        for r in 0..out {
            for c in 0..inp {
                t[c * out + r] = w[r * inp + c];
            }
        }
        let wt = self.f32_init(&format!("{name}.weight"), &[inp, out], &t)?;
        let b = self.param(m, &format!("{name}.bias"))?;
        let y = self.op("MatMul", &[x, &wt], vec![]);
        Ok(self.op("Add", &[&y, &b], vec![]))
    }

    /// A parameter as an initializer under its Hugging Face name, in its own shape.
    fn param(&mut self, m: &Params<'_>, name: &str) -> Result<String, OnnxError> {
        let (v, shape) = m.get(name)?;
        self.f32_init(name, &shape, v)
    }

    fn layer_norm(&mut self, m: &Params<'_>, x: &str, name: &str, eps: f32) -> Result<String, OnnxError> {
        let w = self.param(m, &format!("{name}.weight"))?;
        let b = self.param(m, &format!("{name}.bias"))?;
        Ok(self.op("LayerNormalization", &[x, &w, &b], vec![attr_int("axis", -1), attr_float("epsilon", eps)]))
    }

    fn scalar(&mut self, name: &str, v: f32) -> Result<String, OnnxError> {
        self.f32_init(name, &[], &[v])
    }
}

/// The model's parameters by Hugging Face name, with their shapes.
struct Params<'a> {
    model: &'a BertForSequenceClassification,
    shapes: BTreeMap<String, Vec<usize>>,
}

impl<'a> Params<'a> {
    fn get(&self, name: &str) -> Result<(&'a [f32], Vec<usize>), OnnxError> {
        let v = self.model.store.param(name).ok_or_else(|| OnnxError::Missing(name.into()))?;
        let shape = self.shapes.get(name).cloned().unwrap_or_else(|| vec![v.len()]);
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(OnnxError::Invalid(format!("`{name}` value {i} is not finite ({})", v[i])));
        }
        Ok((v, shape))
    }
}

fn value_info(name: &str, elem_type: i32, dims: &[&str]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d.parse::<i64>() {
                Ok(n) => DimValue::DimValue(n),
                Err(_) => DimValue::DimParam((*d).into()),
            }),
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto { elem_type, shape: Some(TensorShapeProto { dim }) }),
        }),
    }
}

/// Builds the ONNX model of an encoder classifier; `metadata` goes to `metadata_props` (e.g. `id2label`).
pub fn export_bert(
    model: &BertForSequenceClassification,
    metadata: &[(String, String)],
) -> Result<ModelProto, OnnxError> {
    let cfg = &model.config;
    if cfg.task == Task::MaskedLM {
        return Err(OnnxError::Unsupported(
            "ONNX export of a masked-LM head (sequence and token classification only)".into(),
        ));
    }
    let shapes = model.store.param_infos().iter().map(|i| (i.name.clone(), i.shape.clone())).collect();
    let m = Params { model, shapes };
    let arch = cfg.arch();
    let (c, heads) = (cfg.hidden_size, cfg.num_attention_heads);
    let d = c / heads;
    let eps = cfg.layer_norm_eps;
    let base = arch.prefix();
    let mut g = Builder::new();
    let i64s = |g: &mut Builder, name: &str, v: &[i64]| g.i64_init(name, &[v.len()], v);

    // Embeddings.
    let e = format!("{base}.embeddings");
    let wte = g.param(&m, &format!("{e}.word_embeddings.weight"))?;
    let words = g.op("Gather", &[&wte, "input_ids"], vec![attr_int("axis", 0)]);
    let wpe = g.param(&m, &format!("{e}.position_embeddings.weight"))?;
    let pos_ids = match arch {
        Arch::Roberta => {
            // transformers' create_position_ids_from_input_ids: pad + running count of non-padding tokens,
            // pad at padding.
            let pad = i64::from(cfg.pad_token_id.unwrap_or(1));
            let pad_c = g.i64_init("padding_idx", &[], &[pad])?;
            let is_pad = g.op("Equal", &["input_ids", &pad_c], vec![]);
            let not_pad = g.op("Not", &[&is_pad], vec![]);
            let mask = g.op("Cast", &[&not_pad], vec![attr_int("to", i64::from(data_type::INT64))]);
            let axis = g.i64_init("seq_axis", &[], &[1])?;
            let count = g.op("CumSum", &[&mask, &axis], vec![]);
            let counted = g.op("Mul", &[&count, &mask], vec![]);
            g.op("Add", &[&counted, &pad_c], vec![])
        }
        _ => {
            // 0..T on every row as a running count of ones (no Shape/Range: runtimes type Shape's output
            // differently, and the count needs none of it).
            let zero = g.i64_init("zero_scalar", &[], &[0])?;
            let one = g.i64_init("one_scalar", &[], &[1])?;
            let zeros = g.op("Mul", &["input_ids", &zero], vec![]);
            let ones = g.op("Add", &[&zeros, &one], vec![]);
            let axis = g.i64_init("seq_axis", &[], &[1])?;
            let count = g.op("CumSum", &[&ones, &axis], vec![]);
            g.op("Sub", &[&count, &one], vec![])
        }
    };
    let positions = g.op("Gather", &[&wpe, &pos_ids], vec![attr_int("axis", 0)]);
    let mut x = g.op("Add", &[&words, &positions], vec![]);
    match arch {
        Arch::Bert => {
            let wtt = g.param(&m, &format!("{e}.token_type_embeddings.weight"))?;
            let types = g.op("Gather", &[&wtt, "token_type_ids"], vec![attr_int("axis", 0)]);
            x = g.op("Add", &[&x, &types], vec![]);
        }
        Arch::Roberta => {
            // No token_type_ids input (Optimum's RoBERTa inputs): every token is type 0.
            let wtt = g.param(&m, &format!("{e}.token_type_embeddings.weight"))?;
            let zero = g.i64_init("token_type_0", &[], &[0])?;
            let row0 = g.op("Gather", &[&wtt, &zero], vec![attr_int("axis", 0)]);
            x = g.op("Add", &[&x, &row0], vec![]);
        }
        Arch::DistilBert => {}
    }
    x = g.layer_norm(&m, &x, &format!("{e}.LayerNorm"), eps)?;

    // The additive attention mask [batch, 1, 1, seq]: 0 at tokens, the most negative f32 at padding.
    let maskf = g.op("Cast", &["attention_mask"], vec![attr_int("to", i64::from(data_type::FLOAT))]);
    let one_f = g.scalar("one_f", 1.0)?;
    let inv = g.op("Sub", &[&one_f, &maskf], vec![]);
    let min_f = g.scalar("float_min", f32::MIN)?;
    let add_mask = g.op("Mul", &[&inv, &min_f], vec![]);
    let axes12 = i64s(&mut g, "axes_1_2", &[1, 2])?;
    let add_mask = g.op("Unsqueeze", &[&add_mask, &axes12], vec![]);

    let split_heads = i64s(&mut g, "split_heads", &[0, 0, heads as i64, d as i64])?;
    let merge_heads = i64s(&mut g, "merge_heads", &[0, 0, c as i64])?;
    let scale = g.scalar("attention_scale", 1.0 / (d as f32).sqrt())?;
    let half = g.scalar("half", 0.5)?;
    let sqrt2 = g.scalar("sqrt2", std::f32::consts::SQRT_2)?;
    let names = arch.layer_names();
    let [nq, nk, nv, nao, nln1, nfc, nproj, nln2] = names;
    for i in 0..cfg.num_hidden_layers {
        let p = arch.layer_prefix(i);
        let heads_of = |g: &mut Builder, y: &str, perm: &[i64]| {
            let r = g.op("Reshape", &[y, &split_heads], vec![]);
            g.op("Transpose", &[&r], vec![attr_ints("perm", perm)])
        };
        let q = g.linear(&m, &x, &format!("{p}.{nq}"))?;
        let q = heads_of(&mut g, &q, &[0, 2, 1, 3]);
        let k = g.linear(&m, &x, &format!("{p}.{nk}"))?;
        let kt = heads_of(&mut g, &k, &[0, 2, 3, 1]);
        let v = g.linear(&m, &x, &format!("{p}.{nv}"))?;
        let v = heads_of(&mut g, &v, &[0, 2, 1, 3]);
        let scores = g.op("MatMul", &[&q, &kt], vec![]);
        let scores = g.op("Mul", &[&scores, &scale], vec![]);
        let scores = g.op("Add", &[&scores, &add_mask], vec![]);
        let probs = g.op("Softmax", &[&scores], vec![attr_int("axis", -1)]);
        let ctx = g.op("MatMul", &[&probs, &v], vec![]);
        let ctx = g.op("Transpose", &[&ctx], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let ctx = g.op("Reshape", &[&ctx, &merge_heads], vec![]);
        let attn = g.linear(&m, &ctx, &format!("{p}.{nao}"))?;
        let h = g.op("Add", &[&attn, &x], vec![]);
        let h = g.layer_norm(&m, &h, &format!("{p}.{nln1}"), eps)?;
        // Exact GELU: 0.5 · y · (1 + erf(y / √2)).
        let y = g.linear(&m, &h, &format!("{p}.{nfc}"))?;
        let z = g.op("Div", &[&y, &sqrt2], vec![]);
        let z = g.op("Erf", &[&z], vec![]);
        let z = g.op("Add", &[&z, &one_f], vec![]);
        let z = g.op("Mul", &[&y, &z], vec![]);
        let y = g.op("Mul", &[&z, &half], vec![]);
        let y = g.linear(&m, &y, &format!("{p}.{nproj}"))?;
        let y = g.op("Add", &[&y, &h], vec![]);
        x = g.layer_norm(&m, &y, &format!("{p}.{nln2}"), eps)?;
    }

    // Heads (dropout is the identity at inference).
    let logits = if cfg.task == Task::TokenClassification {
        g.linear(&m, &x, "classifier")?
    } else {
        let zero = g.i64_init("first_token", &[], &[0])?;
        let first = g.op("Gather", &[&x, &zero], vec![attr_int("axis", 1)]);
        match arch {
            Arch::Bert => {
                let pooled = g.linear(&m, &first, "bert.pooler.dense")?;
                let pooled = g.op("Tanh", &[&pooled], vec![]);
                g.linear(&m, &pooled, "classifier")?
            }
            Arch::Roberta => {
                let h = g.linear(&m, &first, "classifier.dense")?;
                let h = g.op("Tanh", &[&h], vec![]);
                g.linear(&m, &h, "classifier.out_proj")?
            }
            Arch::DistilBert => {
                let h = g.linear(&m, &first, "pre_classifier")?;
                let h = g.op("Relu", &[&h], vec![]);
                g.linear(&m, &h, "classifier")?
            }
        }
    };
    // Name the graph output `logits`.
    if let Some(last) = g.nodes.last_mut() {
        debug_assert_eq!(last.output[0], logits);
        last.output[0] = "logits".into();
    }

    let batch_seq = ["batch_size", "sequence_length"];
    let mut inputs = vec![
        value_info("input_ids", data_type::INT64, &batch_seq),
        value_info("attention_mask", data_type::INT64, &batch_seq),
    ];
    if arch == Arch::Bert {
        inputs.push(value_info("token_type_ids", data_type::INT64, &batch_seq));
    }
    let labels = cfg.labels().to_string();
    let out_dims: Vec<&str> = if cfg.task == Task::TokenClassification {
        vec!["batch_size", "sequence_length", &labels]
    } else {
        vec!["batch_size", &labels]
    };
    let graph = GraphProto {
        node: g.nodes,
        name: "main_graph".into(),
        initializer: g.inits,
        doc_string: String::new(),
        input: inputs,
        output: vec![value_info("logits", data_type::FLOAT, &out_dims)],
    };
    Ok(ModelProto {
        ir_version: IR_VERSION,
        producer_name: "finetune".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        domain: String::new(),
        model_version: 1,
        doc_string: String::new(),
        graph: Some(graph),
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
        metadata_props: metadata
            .iter()
            .map(|(k, v)| StringStringEntryProto { key: k.clone(), value: v.clone() })
            .collect(),
    })
}

/// The encoded file.
pub fn encode(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// Decodes a file written by [`encode`] (or any ONNX model; unknown fields are skipped).
pub fn decode(bytes: &[u8]) -> Result<ModelProto, OnnxError> {
    ModelProto::decode(bytes).map_err(|e| OnnxError::Invalid(format!("not an ONNX model: {e}")))
}
