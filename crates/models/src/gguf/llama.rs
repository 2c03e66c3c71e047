//! Llama-family decoders (`general.architecture` `llama` and `qwen2`): GGUF tensor names and layouts → the
//! Hugging Face `LlamaForCausalLM` / `Qwen2ForCausalLM` state dict, and the `llama.*` / `qwen2.*` metadata → an
//! HF-style `config.json`.

use std::path::Path;

use finetune_engine::{StateDict, Tensor};
use rayon::prelude::*;
use serde_json::{json, Value};

use finetune_engine::kernels::rope;

use super::reader::{GgufFile, TensorInfo};
use super::tokenizer::{gguf_tokenizer, GgufTokenizer};
use super::GgufError;
use crate::llama::LlamaConfig;

/// A Llama checkpoint read from one GGUF file.
#[derive(Debug)]
pub struct LlamaGguf {
    /// Parameters under their Hugging Face names, dequantised to f32, with llama.cpp's Q/K row permutation
    /// undone: equal to the state dict of the checkpoint the file was converted from (up to quantisation).
    pub state: StateDict,
    /// `config.json` as `transformers` writes it for `LlamaForCausalLM`.
    pub config: Value,
    /// The tokenizer, when the file carries one.
    pub tokenizer: Option<GgufTokenizer>,
    /// `tokenizer.chat_template`, verbatim (rendering happens elsewhere).
    pub chat_template: Option<String>,
}

/// Opens `path` and loads weights, config, tokenizer and chat template.
pub fn load_llama(path: impl AsRef<Path>) -> Result<LlamaGguf, GgufError> {
    let file = GgufFile::open(path)?;
    let config = llama_config(&file)?;
    let state = llama_state_dict(&file, &config)?;
    let tokenizer = gguf_tokenizer(&file)?;
    let chat_template = file.get_str("tokenizer.chat_template")?.map(str::to_owned);
    Ok(LlamaGguf { state, config, tokenizer, chat_template })
}

/// The Hugging Face name of a GGUF Llama tensor (`blk.3.attn_q.weight` → `model.layers.3.self_attn.q_proj.weight`).
pub fn gguf_to_hf_name(name: &str) -> Option<String> {
    match name {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, tail) = rest.split_once('.')?;
    if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let layer: usize = layer.parse().ok()?;
    let hf = match tail {
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_q.bias" => "self_attn.q_proj.bias",
        "attn_k.bias" => "self_attn.k_proj.bias",
        "attn_v.bias" => "self_attn.v_proj.bias",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        "attn_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}"))
}

/// llama.cpp's `permute(w, n_head, n_head_kv)` from `convert_hf_to_gguf.py`, on the rows of a row-major
/// `[rows, cols]` matrix: within each head the rows `[first half; second half]` are interleaved. None when
/// `rows` is not a multiple of `2 * n_head`.
pub fn permute_rows(data: &[f32], rows: usize, cols: usize, n_head: usize) -> Option<Vec<f32>> {
    reorder_rows(data, rows, cols, n_head, false)
}

/// The inverse of [`permute_rows`]: turns a GGUF `attn_q`/`attn_k` weight back into the Hugging Face
/// `q_proj`/`k_proj` weight (`n_head` = attention heads for q, key/value heads for k).
pub fn unpermute_rows(data: &[f32], rows: usize, cols: usize, n_head: usize) -> Option<Vec<f32>> {
    reorder_rows(data, rows, cols, n_head, true)
}

fn reorder_rows(data: &[f32], rows: usize, cols: usize, n_head: usize, inverse: bool) -> Option<Vec<f32>> {
    if n_head == 0 || !rows.is_multiple_of(2 * n_head) || rows.checked_mul(cols) != Some(data.len()) {
        return None;
    }
    let head_dim = rows / n_head;
    let half = head_dim / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..n_head {
        for s in 0..2 {
            for i in 0..half {
                // HF row (s, i) of head h sits at GGUF row (i, s): reshape(n_head, 2, half).swapaxes(1, 2).
                let hf = h * head_dim + s * half + i;
                let gg = h * head_dim + 2 * i + s;
                let (src, dst) = if inverse { (gg, hf) } else { (hf, gg) };
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    Some(out)
}

/// Rounds a metadata f32 to the shortest decimal that reads back as the same f32, so 1e-5 stays 1e-5 rather
/// than 9.999999747378752e-06 (what `transformers` writes in `config.json`).
fn f32_as_decimal(x: f64) -> f64 {
    let f = x as f32;
    if f64::from(f) == x {
        format!("{f}").parse().unwrap_or(x)
    } else {
        x
    }
}

/// A GGUF architecture this loader reads into the Hugging Face Llama-family model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LlamaArch {
    /// `general.architecture`, also the prefix of its metadata keys.
    pub name: &'static str,
    /// `config.json`'s `model_type` and `architectures`.
    pub model_type: &'static str,
    pub class: &'static str,
    /// `convert_hf_to_gguf.py` permutes the q/k rows of `llama` (interleaved rotary pairs), not of `qwen2`.
    pub permuted: bool,
    /// Qwen2's q/k/v projections carry biases.
    pub qkv_bias: bool,
}

/// The architectures [`load_llama`] reads.
pub const LLAMA_ARCHS: [LlamaArch; 2] = [
    LlamaArch { name: "llama", model_type: "llama", class: "LlamaForCausalLM", permuted: true, qkv_bias: false },
    LlamaArch { name: "qwen2", model_type: "qwen2", class: "Qwen2ForCausalLM", permuted: false, qkv_bias: true },
];

/// The file's `general.architecture`, if [`load_llama`] reads it.
pub fn llama_arch(file: &GgufFile) -> Result<LlamaArch, GgufError> {
    let name = file.get_str("general.architecture")?.ok_or_else(|| file.key_err("general.architecture", "missing"))?;
    LLAMA_ARCHS.iter().find(|a| a.name == name).copied().ok_or_else(|| GgufError::Unsupported {
        path: file.path().to_path_buf(),
        message: format!(
            "architecture `{name}` (supported: {})",
            LLAMA_ARCHS.iter().map(|a| a.name).collect::<Vec<_>>().join(", ")
        ),
    })
}

/// The HF config (as JSON) described by the `llama.*` / `qwen2.*` metadata.
pub fn llama_config(file: &GgufFile) -> Result<Value, GgufError> {
    let unsupported = |message: String| GgufError::Unsupported { path: file.path().to_path_buf(), message };
    let arch = llama_arch(file)?;
    let key = |k: &str| format!("{}.{k}", arch.name);
    let required = |k: &str| -> Result<u64, GgufError> { file.get_u64(k)?.ok_or_else(|| file.key_err(k, "missing")) };
    let hidden = required(&key("embedding_length"))?;
    let layers = required(&key("block_count"))?;
    // Every layer has nine tensors: a count the file cannot hold is refused before anything is sized by it.
    let held = file.tensors().len() as u64;
    if layers > held / 9 {
        return Err(file.key_err(&key("block_count"), format!("{layers} layers, but the file holds {held} tensors")));
    }
    let heads = required(&key("attention.head_count"))?;
    let intermediate = required(&key("feed_forward_length"))?;
    let kv_heads = file.get_u64(&key("attention.head_count_kv"))?.unwrap_or(heads);
    let context = required(&key("context_length"))?;
    if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
        return Err(file.key_err(
            &key("attention.head_count_kv"),
            format!("{kv_heads} key/value heads do not divide {heads} attention heads"),
        ));
    }
    let head_dim = match file.get_u64(&key("attention.key_length"))? {
        Some(d) => d,
        None if hidden % heads == 0 => hidden / heads,
        None => return Err(file.key_err(&key("attention.head_count"), format!("{heads} heads do not divide {hidden}"))),
    };
    if let Some(rot) = file.get_u64(&key("rope.dimension_count"))? {
        if rot != head_dim {
            return Err(unsupported(format!("partial rotary embedding ({rot} of {head_dim} head dimensions)")));
        }
    }
    if let Some(kind) = file.get_str(&key("rope.scaling.type"))? {
        if kind != "none" {
            return Err(unsupported(format!("rope scaling `{kind}`")));
        }
    }
    let eps = file
        .get_f64(&key("attention.layer_norm_rms_epsilon"))?
        .ok_or_else(|| file.key_err(&key("attention.layer_norm_rms_epsilon"), "missing"))?;
    let rope_theta = file.get_f64(&key("rope.freq_base"))?.unwrap_or(10000.0);
    let vocab = match file.get_u64(&key("vocab_size"))? {
        Some(v) => v,
        None => match file.get_array("tokenizer.ggml.tokens")? {
            Some(a) => a.len() as u64,
            None => file.tensor("token_embd.weight").and_then(|t| t.dims.get(1).copied()).ok_or_else(|| {
                file.key_err(&key("vocab_size"), "missing, and no tokenizer or embedding to infer it")
            })?,
        },
    };
    let tie = file.tensor("output.weight").is_none();
    let mut config = json!({
        "architectures": [arch.class],
        "model_type": arch.model_type,
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": f32_as_decimal(eps),
        "rope_theta": f32_as_decimal(rope_theta),
        "max_position_embeddings": context,
        "tie_word_embeddings": tie,
        "attention_bias": false,
        "mlp_bias": false,
    });
    if let Some(info) = file.tensor(ROPE_FREQS) {
        if arch.name != "llama" {
            return Err(unsupported(format!(
                "`{ROPE_FREQS}` in a `{}` file (llama.cpp reads it for llama)",
                arch.name
            )));
        }
        if let Some(scaling) = llama3_rope_from_factors(file, info, head_dim as usize, rope_theta)? {
            config["rope_scaling"] = scaling;
        }
    }
    for (gguf_key, hf_key) in [
        ("tokenizer.ggml.bos_token_id", "bos_token_id"),
        ("tokenizer.ggml.eos_token_id", "eos_token_id"),
        ("tokenizer.ggml.padding_token_id", "pad_token_id"),
    ] {
        if let Some(id) = file.get_u64(gguf_key)? {
            config[hf_key] = json!(id);
        }
    }
    Ok(config)
}

/// llama.cpp's per-frequency rotary divisors (Llama 3.1 scaling), not a parameter of the HF model.
const ROPE_FREQS: &str = "rope_freqs.weight";

/// Reads `rope_freqs.weight` (checked against `head_dim`) into transformers' `llama3` rope parameters.
fn llama3_rope_from_factors(
    file: &GgufFile,
    info: &TensorInfo,
    head_dim: usize,
    theta: f64,
) -> Result<Option<Value>, GgufError> {
    let terr =
        |message: String| GgufError::Tensor { path: file.path().to_path_buf(), tensor: ROPE_FREQS.into(), message };
    let half = (head_dim / 2) as u64;
    if info.dims != [half] {
        return Err(terr(format!("dims {:?}, expected [{half}] (head_dim / 2)", info.dims)));
    }
    llama3_rope_from_divisors(&file.dequantize(info)?, head_dim, theta).map_err(terr)
}

/// transformers' `llama3` rope parameters recovered from llama.cpp's per-frequency divisors (llama.cpp keeps
/// only the divisors, not the parameters they came from): `factor` is the largest divisor; the divisors between
/// 1 and `factor` are `1 / ((1 − s) / factor + s)` with `s` linear in `1 / wavelength`, which fixes
/// `original_max_position_embeddings / low_freq_factor` and `high_freq_factor − low_freq_factor`. Written with
/// `low_freq_factor = 1` (every Llama 3.x checkpoint's); with one divisor in between `high_freq_factor = 4` is
/// assumed, with none also `original_max_position_embeddings = 8192`. The result is checked by recomputing every
/// divisor; divisors that follow no `llama3` scaling are refused. None when every divisor is 1.
fn llama3_rope_from_divisors(r: &[f32], head_dim: usize, theta: f64) -> Result<Option<Value>, String> {
    if let Some(i) = r.iter().position(|v| !(v.is_finite() && *v >= 1.0)) {
        return Err(format!("divisor {i} is {} (llama3 scaling divides by 1 or more)", r[i]));
    }
    let factor = f64::from(r.iter().copied().fold(1f32, f32::max));
    if factor == 1.0 {
        return Ok(None);
    }
    let inv = rope::default_inv_freq(head_dim, theta);
    // (1 / wavelength, s) of the divisors strictly between 1 and factor.
    let mid: Vec<(f64, f64)> = r
        .iter()
        .zip(&inv)
        .map(|(&r, &f)| (f64::from(r), f64::from(f) / std::f64::consts::TAU))
        .filter(|&(r, _)| r > 1.0 + 1e-6 && r < factor * (1.0 - 1e-6))
        .map(|(r, x)| (x, (1.0 / r - 1.0 / factor) / (1.0 - 1.0 / factor)))
        .collect();
    let (high, old) = match mid[..] {
        [] => (4.0, 8192.0),
        [(x, s)] => (4.0, (3.0 * s + 1.0) / x),
        [(x0, s0), .., (x1, s1)] => {
            // s = a·x + b with a = old / (high − low), b = −low / (high − low), low = 1.
            let a = (s1 - s0) / (x1 - x0);
            let b = s0 - a * x0;
            if !(a > 0.0 && b < 0.0) {
                return Err("the divisors do not follow Llama 3's rope scaling".into());
            }
            (1.0 - 1.0 / b, a / -b)
        }
    };
    let scaling = json!({
        "rope_type": "llama3",
        "factor": f32_as_decimal(factor),
        "low_freq_factor": 1.0,
        "high_freq_factor": (high * 1e4).round() / 1e4,
        "original_max_position_embeddings": old.round() as u64,
    });
    // Recompute every divisor from the recovered parameters, as the exporter writes them.
    let cfg: LlamaConfig = serde_json::from_value(json!({
        "vocab_size": 1, "hidden_size": head_dim, "intermediate_size": 1, "num_hidden_layers": 1,
        "num_attention_heads": 1, "head_dim": head_dim, "rope_theta": theta, "rope_scaling": scaling,
    }))
    .map_err(|e| e.to_string())?;
    let want = cfg.rope_freq_factors().map_err(|e| e.to_string())?.unwrap_or_default();
    for (i, (&got, &w)) in r.iter().zip(&want).enumerate() {
        if (got - w).abs() > 1e-4 * w {
            return Err(format!("divisor {i} is {got}, the llama3 scaling {scaling} gives {w}: not a llama3 scaling"));
        }
    }
    Ok(Some(scaling))
}

/// The sizes a Llama state dict's shapes are checked against.
struct Dims {
    vocab: usize,
    hidden: usize,
    inter: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    tied: bool,
    qkv_bias: bool,
}

impl Dims {
    fn from_config(config: &Value, arch: LlamaArch) -> Self {
        let get = |key: &str| config.get(key).and_then(Value::as_u64).unwrap_or(0) as usize;
        Dims {
            vocab: get("vocab_size"),
            hidden: get("hidden_size"),
            inter: get("intermediate_size"),
            layers: get("num_hidden_layers"),
            heads: get("num_attention_heads"),
            kv_heads: get("num_key_value_heads"),
            head_dim: get("head_dim"),
            tied: config.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false),
            qkv_bias: arch.qkv_bias,
        }
    }

    /// The GGUF tensor names a complete checkpoint has.
    fn gguf_names(&self) -> Vec<String> {
        let mut names = vec!["token_embd.weight".to_owned(), "output_norm.weight".to_owned()];
        if !self.tied {
            names.push("output.weight".into());
        }
        for i in 0..self.layers {
            for t in
                ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down", "attn_norm", "ffn_norm"]
            {
                names.push(format!("blk.{i}.{t}.weight"));
            }
            if self.qkv_bias {
                names.extend(["attn_q", "attn_k", "attn_v"].map(|t| format!("blk.{i}.{t}.bias")));
            }
        }
        names
    }

    /// The HF shape of a GGUF tensor, None when the name is not part of this model.
    fn shape(&self, gguf_name: &str) -> Option<Vec<usize>> {
        let (h, q, kv) = (self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim);
        Some(match gguf_name {
            "token_embd.weight" => vec![self.vocab, h],
            "output.weight" => vec![self.vocab, h],
            "output_norm.weight" => vec![h],
            _ => {
                let (layer, tail) = gguf_name.strip_prefix("blk.")?.split_once('.')?;
                if layer.parse::<usize>().ok()? >= self.layers {
                    return None;
                }
                match tail {
                    "attn_q.weight" => vec![q, h],
                    "attn_k.weight" | "attn_v.weight" => vec![kv, h],
                    "attn_output.weight" => vec![h, q],
                    "ffn_gate.weight" | "ffn_up.weight" => vec![self.inter, h],
                    "ffn_down.weight" => vec![h, self.inter],
                    "attn_norm.weight" | "ffn_norm.weight" => vec![h],
                    "attn_q.bias" if self.qkv_bias => vec![q],
                    "attn_k.bias" | "attn_v.bias" if self.qkv_bias => vec![kv],
                    _ => return None,
                }
            }
        })
    }
}

/// Dequantises every tensor into the HF `LlamaForCausalLM` state dict. `config` is [`llama_config`]'s output
/// (its head counts undo the Q/K permutation; its sizes check every shape). Unknown, missing or misshapen
/// tensors are errors rather than silently dropped or passed on.
pub fn llama_state_dict(file: &GgufFile, config: &Value) -> Result<StateDict, GgufError> {
    let arch = llama_arch(file)?;
    let dims = Dims::from_config(config, arch);
    for name in dims.gguf_names() {
        if file.tensor(&name).is_none() {
            return Err(GgufError::Tensor {
                path: file.path().to_path_buf(),
                tensor: name,
                message: "missing from the file".into(),
            });
        }
    }
    let (heads, kv_heads) = (dims.heads, dims.kv_heads);
    let entries: Vec<(String, Tensor)> = file
        .tensors()
        .par_iter()
        .filter(|info| info.name != ROPE_FREQS)
        .map(|info| {
            let terr = |message: String| GgufError::Tensor {
                path: file.path().to_path_buf(),
                tensor: info.name.clone(),
                message,
            };
            let hf =
                gguf_to_hf_name(&info.name).ok_or_else(|| terr("not a Llama tensor name this loader knows".into()))?;
            let shape = info.shape();
            match dims.shape(&info.name) {
                Some(want) if want == shape => {}
                Some(want) => return Err(terr(format!("shape {shape:?}, the config implies {want:?}"))),
                None => return Err(terr(format!("not part of a {}-layer Llama", dims.layers))),
            }
            let mut data = file.dequantize(info)?;
            let n_head = if !arch.permuted {
                None
            } else if info.name.ends_with(".attn_q.weight") {
                Some(heads)
            } else if info.name.ends_with(".attn_k.weight") {
                Some(kv_heads)
            } else {
                None
            };
            if let Some(n_head) = n_head {
                let [rows, cols] = shape[..] else {
                    return Err(terr(format!("expected a matrix, got shape {shape:?}")));
                };
                data = unpermute_rows(&data, rows, cols, n_head).ok_or_else(|| {
                    terr(format!("{rows} rows cannot be split into {n_head} heads of two rotary halves"))
                })?;
            }
            Ok((hf, Tensor::new(shape, data)))
        })
        .collect::<Result<_, GgufError>>()?;
    Ok(entries.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The divisors of a config's llama3 scaling.
    fn divisors(head_dim: usize, theta: f64, scaling: Value) -> Vec<f32> {
        let cfg: LlamaConfig = serde_json::from_value(json!({
            "vocab_size": 1, "hidden_size": head_dim, "intermediate_size": 1, "num_hidden_layers": 1,
            "num_attention_heads": 1, "head_dim": head_dim, "rope_theta": theta, "rope_scaling": scaling,
        }))
        .unwrap();
        cfg.rope_freq_factors().unwrap().unwrap()
    }

    #[test]
    fn llama3_parameters_come_back_from_the_divisors() {
        // Llama 3.1 8B and Llama 3.2 1B: three divisors between 1 and factor, every parameter recovered.
        for (head_dim, factor) in [(128, 8.0), (64, 32.0)] {
            let scaling = json!({"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
            let r = divisors(head_dim, 500000.0, scaling.clone());
            assert!(r.iter().filter(|&&x| x > 1.0 && f64::from(x) < factor).count() >= 2, "{r:?}");
            assert_eq!(llama3_rope_from_divisors(&r, head_dim, 500000.0).unwrap(), Some(scaling));
        }
        // Other low/high: the same divisors come back with low_freq_factor 1 (the parameters are determined up
        // to that scale), and recompute to the same values.
        let odd = json!({"rope_type": "llama3", "factor": 16.0, "low_freq_factor": 2.0,
                         "high_freq_factor": 6.0, "original_max_position_embeddings": 4096});
        let r = divisors(128, 500000.0, odd);
        let back = llama3_rope_from_divisors(&r, 128, 500000.0).unwrap().unwrap();
        assert_eq!(back["low_freq_factor"], json!(1.0));
        assert_eq!(back["original_max_position_embeddings"], json!(2048));
        assert_eq!(back["high_freq_factor"], json!(3.0));
        let again = divisors(128, 500000.0, back);
        for (a, b) in r.iter().zip(&again) {
            assert!((a - b).abs() <= 1e-5 * a, "{a} vs {b}");
        }
        // All ones: no scaling. Below one, or not a llama3 curve: refused with the divisor named.
        assert_eq!(llama3_rope_from_divisors(&[1.0; 4], 8, 10000.0).unwrap(), None);
        let e = llama3_rope_from_divisors(&[1.0, 0.5, 1.0, 1.0], 8, 10000.0).unwrap_err();
        assert!(e.contains("divisor 1"), "{e}");
        let mut bent = divisors(
            64,
            500000.0,
            json!({"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
        );
        bent[2] = 2.0;
        assert!(llama3_rope_from_divisors(&bent, 64, 500000.0).is_err());
    }
}
