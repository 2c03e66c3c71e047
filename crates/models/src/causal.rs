//! Causal LMs on disk: a Llama-family model (`LlamaForCausalLM`) from a GGUF file or a Hugging Face directory, or
//! a GPT-2 model (`GPT2LMHeadModel`, `model_type: "gpt2"`) from a Hugging Face directory (safetensors or a
//! restricted `.bin`); saved back as a directory that `transformers` loads (`config.json`, `model.safetensors`,
//! `generation_config.json` and the tokenizer files). [`CausalModel`] holds either, dispatches generation to it
//! and exposes its parameter store (training, freezing, LoRA).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::checkpoint::{
    copy_tokenizer_files, load_state_dict, resolve_model_dir, save_safetensors, write_atomic, CheckpointError,
};
use finetune_engine::bf16::linear::SharedWeights;
use finetune_engine::StateDict;

use crate::decoder::{Architecture, Batch, KvCache, StepRows};
use crate::error::ModelError;
use crate::generate::{CachedDecoder, GenerateError};
use crate::gguf::{load_llama, GgufTokenizer};
use crate::gpt2::Gpt2LMHeadModel;
use crate::llama::{LlamaConfig, LlamaForCausalLM};
use crate::params::ParamStore;
use crate::phi::PhiForCausalLM;

/// Errors loading or saving a causal LM.
#[derive(Debug, thiserror::Error)]
pub enum CausalError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{path}: {message}")]
    Gguf { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Model { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Arch(#[from] crate::error::ModelError),
    #[error(transparent)]
    Params(#[from] crate::params::ParamError),
}

/// The architecture table: one line per architecture file, `Variant(Type)`. The type implements
/// [`Architecture`], which names the `model_type` values it loads; everything below (the [`CausalModel`] enum,
/// its workspaces, loading by `model_type`, and the dispatch of training and generation) comes from this list.
macro_rules! architectures {
    ($($variant:ident($ty:ty)),+ $(,)?) => {
        /// A causal LM of one of the supported architectures.
        pub enum CausalModel {
            $($variant($ty)),+
        }

        /// The decode workspace of a [`CausalModel`].
        pub enum CausalDecodeWorkspace {
            $($variant(<$ty as Architecture>::DecodeWorkspace)),+
        }

        /// The training/evaluation workspace of a [`CausalModel`] for one (batch, seq) shape.
        pub enum CausalWorkspace {
            $($variant(<$ty as Architecture>::Workspace)),+
        }

        /// Every `model_type` a Hugging Face directory may name, by architecture.
        pub const MODEL_TYPES: &[&[&str]] = &[$(<$ty as Architecture>::MODEL_TYPES),+];

        /// The model for `config.json` whose `model_type` is `model_type` (`None`: the Llama family, as a GGUF
        /// file's config).
        fn from_model_type(
            model_type: Option<&str>,
            config_json: &str,
            state: &StateDict,
        ) -> Option<Result<CausalModel, ModelError>> {
            let mt = model_type.unwrap_or("llama");
            $(
                if <$ty as Architecture>::MODEL_TYPES.contains(&mt) {
                    return Some(<$ty as Architecture>::from_config(config_json, state).map(CausalModel::$variant));
                }
            )+
            None
        }

        /// Calls the same [`Architecture`] method on whichever model it holds.
        macro_rules! each {
            ($self_:expr, $m:ident => $e:expr) => {
                match $self_ {
                    $(CausalModel::$variant($m) => $e),+
                }
            };
        }

        impl CausalModel {
            /// The Hugging Face class name written into `config.json`'s `architectures`.
            pub fn architecture(&self) -> &'static str {
                match self {
                    $(CausalModel::$variant(_) => <$ty as Architecture>::CLASS),+
                }
            }

            /// The `model_type` written into a saved `config.json` that has none.
            pub fn model_type(&self) -> &'static str {
                match self {
                    $(CausalModel::$variant(_) => <$ty as Architecture>::MODEL_TYPES[0]),+
                }
            }

            /// A workspace for training or evaluating `batch × seq` batches.
            pub fn new_workspace(&self, batch: usize, seq: usize) -> CausalWorkspace {
                match self {
                    $(CausalModel::$variant(m) => CausalWorkspace::$variant(Architecture::new_workspace(m, batch, seq))),+
                }
            }

            /// A forward-only workspace for evaluating `batch × seq` batches (no gradients; about 2/L of a
            /// training workspace's activation memory for L layers).
            pub fn new_inference_workspace(&self, batch: usize, seq: usize) -> CausalWorkspace {
                match self {
                    $(CausalModel::$variant(m) => {
                        CausalWorkspace::$variant(Architecture::new_inference_workspace(m, batch, seq))
                    })+
                }
            }

            /// The loss of `batch` in `ws` with label smoothing `label_smoothing`, with its gradient added to the
            /// store's when `train`.
            pub fn loss(
                &mut self,
                ws: &mut CausalWorkspace,
                batch: &Batch<'_>,
                label_smoothing: f32,
                train: bool,
            ) -> Result<f32, ModelError> {
                match (self, ws) {
                    $((CausalModel::$variant(m), CausalWorkspace::$variant(w)) => {
                        <$ty as Architecture>::lm_head(w).label_smoothing = label_smoothing;
                        if train { m.loss_backward(w, batch) } else { Architecture::forward(m, w, batch) }
                    })+
                    #[allow(unreachable_patterns)]
                    _ => Err(ModelError::Batch("the workspace was made for another architecture".into())),
                }
            }
        }

        impl CausalModel {
            /// Logits of `batch` in `ws` (see [`Architecture::logits`]).
            pub fn logits<'w>(
                &self,
                ws: &'w mut CausalWorkspace,
                batch: &Batch<'_>,
                last_only: bool,
            ) -> Result<&'w [f32], ModelError> {
                match (self, ws) {
                    $((CausalModel::$variant(m), CausalWorkspace::$variant(w)) => {
                        Architecture::logits(m, w, batch, last_only)
                    })+
                    #[allow(unreachable_patterns)]
                    _ => Err(ModelError::Batch("the workspace was made for another architecture".into())),
                }
            }
        }

        impl CausalWorkspace {
            /// The (batch, seq) shape it was made for.
            pub fn shape(&self) -> (usize, usize) {
                match self {
                    $(CausalWorkspace::$variant(w) => <$ty as Architecture>::workspace_shape(w)),+
                }
            }

            /// `bf16 = true`: the trunk's linear layers in bf16 with f32 accumulation, the weights' bf16 copies
            /// kept in `weights` (one for all of a model's workspaces); `None`: f32.
            pub fn set_bf16(&mut self, weights: Option<SharedWeights>) {
                match self {
                    $(CausalWorkspace::$variant(w) => <$ty as Architecture>::lm_head(w).bf16 = weights),+
                }
            }
        }

        impl CausalModel {
            /// Whether the architecture runs `bf16 = true` (its linear layers through the bf16 kernels).
            pub fn supports_bf16(&self) -> bool {
                match self {
                    $(CausalModel::$variant(_) => <$ty as Architecture>::BF16),+
                }
            }

            /// Generation from int8 (Q8_0) copies of the weights ([`crate::decoder::quantize_int8`]); returns their
            /// bytes.
            pub fn quantize_int8(&mut self) -> Result<usize, ModelError> {
                match self {
                    $(CausalModel::$variant(m) => crate::decoder::quantize_int8(m)),+
                }
            }
        }

        impl CachedDecoder for CausalModel {
            type Workspace = CausalDecodeWorkspace;
            fn vocab_size(&self) -> usize {
                CausalModel::vocab_size(self)
            }
            fn new_cache(&self, batch: usize, max_len: usize) -> KvCache {
                each!(self, m => Architecture::new_cache(m, batch, max_len))
            }
            fn new_workspace(&self, batch: usize, max_new: usize, max_len: usize) -> CausalDecodeWorkspace {
                match self {
                    $(CausalModel::$variant(m) => {
                        CausalDecodeWorkspace::$variant(m.new_decode_workspace(batch, max_new, max_len))
                    })+
                }
            }
            fn step<'w>(
                &self,
                cache: &mut KvCache,
                ws: &'w mut CausalDecodeWorkspace,
                input_ids: &[u32],
                attention_mask: &[u32],
            ) -> Result<&'w [f32], GenerateError> {
                self.decode(cache, ws, input_ids, StepRows::Padded(attention_mask))
            }
            fn step_rows<'w>(
                &self,
                cache: &mut KvCache,
                ws: &'w mut CausalDecodeWorkspace,
                rows: &[usize],
                input_ids: &[u32],
            ) -> Result<&'w [f32], GenerateError> {
                self.decode(cache, ws, input_ids, StepRows::Slots(rows))
            }
        }

        impl CausalModel {
            fn decode<'w>(
                &self,
                cache: &mut KvCache,
                ws: &'w mut CausalDecodeWorkspace,
                input_ids: &[u32],
                rows: StepRows<'_>,
            ) -> Result<&'w [f32], GenerateError> {
                // The KV-cache path reads the base weights only.
                if self.store().lora_config().is_some() {
                    return Err(GenerateError::Config(
                        "generation needs merged LoRA adapters (merge_lora first)".into(),
                    ));
                }
                match (self, ws) {
                    $((CausalModel::$variant(m), CausalDecodeWorkspace::$variant(w)) => {
                        Ok(m.decode(cache, w, input_ids, rows)?)
                    })+
                    #[allow(unreachable_patterns)]
                    _ => Err(GenerateError::Config("the decode workspace was made for another architecture".into())),
                }
            }
        }
    };
}

architectures! {
    Llama(LlamaForCausalLM),
    Gpt2(Gpt2LMHeadModel),
    Phi(PhiForCausalLM),
}

impl CausalModel {
    pub fn vocab_size(&self) -> usize {
        each!(self, m => Architecture::vocab_size(m))
    }

    /// The longest sequence the model can read: GPT-2's `n_positions` (learned positions); `None` for rotary
    /// models.
    pub fn max_positions(&self) -> Option<usize> {
        each!(self, m => m.max_positions())
    }

    /// Parameters, gradients, optimizer state and LoRA adapters of whichever model it holds.
    pub fn store(&self) -> &ParamStore {
        each!(self, m => Architecture::store(m))
    }

    pub fn store_mut(&mut self) -> &mut ParamStore {
        each!(self, m => Architecture::store_mut(m))
    }
}

/// Where the weights came from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A GGUF file: weights, config, tokenizer and chat template all come from its metadata.
    Gguf { path: PathBuf, tokenizer: Option<Box<GgufTokenizer>>, chat_template: Option<String> },
    /// A Hugging Face model directory: tokenizer files sit next to the weights.
    Dir(PathBuf),
}

/// A causal LM with the `config.json` it was built from.
pub struct CausalCheckpoint {
    pub model: CausalModel,
    /// `config.json` (from the directory, or built from GGUF metadata as transformers does).
    pub config: Value,
    pub source: Source,
}

impl CausalCheckpoint {
    /// The directory holding the source's tokenizer files, if it is a directory.
    pub fn dir(&self) -> Option<&Path> {
        match &self.source {
            Source::Dir(d) => Some(d),
            Source::Gguf { .. } => None,
        }
    }
}

fn is_gguf(p: &Path) -> bool {
    p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// The single `.gguf` file of a directory that has no `config.json`, if there is exactly one.
fn lone_gguf(dir: &Path) -> Option<PathBuf> {
    if dir.join("config.json").is_file() {
        return None;
    }
    let mut found = std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| is_gguf(p));
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// Loads a causal LM from `spec`: a `.gguf` file (Llama family), a directory holding exactly one `.gguf` (and no
/// `config.json`), a Hugging Face model directory (`model_type` `"gpt2"` gives GPT-2, anything else the Llama
/// family), or a model id in the hub cache.
pub fn load_causal_lm(spec: &str) -> Result<CausalCheckpoint, CausalError> {
    let found = resolve_model_dir(spec)?;
    let gguf = if is_gguf(&found) { Some(found.clone()) } else { lone_gguf(&found) };
    if let Some(path) = gguf {
        let g = load_llama(&path).map_err(|e| CausalError::Gguf { path: path.clone(), message: e.to_string() })?;
        let config = g.config;
        let model = CausalModel::Llama(build(&config, &g.state, &path)?);
        let source = Source::Gguf { path, tokenizer: g.tokenizer.map(Box::new), chat_template: g.chat_template };
        return Ok(CausalCheckpoint { model, config, source });
    }
    let dir = if found.is_file() { found.parent().unwrap_or(Path::new(".")).to_path_buf() } else { found.clone() };
    let cfg_path = dir.join("config.json");
    let text =
        std::fs::read_to_string(&cfg_path).map_err(|source| CausalError::Io { path: cfg_path.clone(), source })?;
    let config: Value = serde_json::from_str(&text)
        .map_err(|e| CausalError::Model { path: cfg_path.clone(), message: format!("invalid JSON: {e}") })?;
    let state = load_state_dict(&found)?;
    let model_type = config.get("model_type").and_then(Value::as_str);
    let err = |message: String| CausalError::Model { path: cfg_path.clone(), message };
    let model = match from_model_type(model_type, &text, &state) {
        Some(m) => m.map_err(|e| err(e.to_string()))?,
        None => {
            let known: Vec<&str> = MODEL_TYPES.iter().flat_map(|t| t.iter().copied()).collect();
            return Err(err(format!(
                "model_type {:?} is not a supported decoder ({})",
                model_type.unwrap_or(""),
                known.join(", ")
            )));
        }
    };
    Ok(CausalCheckpoint { model, config, source: Source::Dir(dir) })
}

fn build(config: &Value, state: &finetune_engine::StateDict, path: &Path) -> Result<LlamaForCausalLM, CausalError> {
    let err = |message: String| CausalError::Model { path: path.to_path_buf(), message };
    let cfg: LlamaConfig = LlamaConfig::from_json(&config.to_string()).map_err(|e| err(e.to_string()))?;
    LlamaForCausalLM::from_state_dict(cfg, state).map_err(|e| err(e.to_string()))
}

/// Tokenizer files to write next to a saved model.
pub enum TokenizerOut<'a> {
    /// Copy the tokenizer files of this directory.
    CopyFrom(&'a Path),
    /// Write `tokenizer.json` from this tokenizer and this `tokenizer_config.json`.
    Write {
        tokenizer: &'a tokenizers::Tokenizer,
        tokenizer_config: Value,
    },
    None,
}

/// The `tokenizer_config.json` transformers needs to use a GGUF tokenizer saved as `tokenizer.json`.
pub fn gguf_tokenizer_config(tok: &GgufTokenizer, chat_template: Option<&str>, max_length: Option<usize>) -> Value {
    let name = |id: Option<u32>| id.and_then(|i| tok.tokenizer.id_to_token(i));
    let mut c = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": tok.add_bos_token,
        "add_eos_token": tok.add_eos_token,
        "clean_up_tokenization_spaces": false,
    });
    if let Some(b) = name(tok.bos_token_id) {
        c["bos_token"] = json!(b);
    }
    if let Some(e) = name(tok.eos_token_id) {
        c["eos_token"] = json!(e);
    }
    if let Some(t) = chat_template {
        c["chat_template"] = json!(t);
    }
    if let Some(m) = max_length {
        c["model_max_length"] = json!(m);
    }
    c
}

/// Saves `model` as a Hugging Face model directory: `model.safetensors` (tied heads stored once, as
/// transformers does), `config.json` with `architectures` and `torch_dtype`, `generation_config.json` (BOS/EOS
/// from the config) and the tokenizer files. Every file is written atomically.
pub fn save_causal_lm(
    dir: &Path,
    model: &CausalModel,
    config: &Value,
    tokenizer: TokenizerOut<'_>,
) -> Result<(), CausalError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CausalError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    save_safetensors(&model.store().state_dict(), &dir.join("model.safetensors"))?;
    let mut cfg = config.clone();
    if let Some(m) = cfg.as_object_mut() {
        m.insert("architectures".into(), json!([model.architecture()]));
        m.insert("torch_dtype".into(), json!("float32"));
        m.entry("model_type").or_insert(json!(model.model_type()));
    }
    let pretty = |v: &Value| serde_json::to_vec_pretty(v).unwrap_or_default();
    let p = dir.join("config.json");
    write_atomic(&p, &pretty(&cfg)).map_err(io(&p))?;
    let mut gen = json!({ "_from_model_config": true });
    for k in ["bos_token_id", "eos_token_id", "pad_token_id"] {
        if let Some(v) = config.get(k).filter(|v| !v.is_null()) {
            gen[k] = v.clone();
        }
    }
    let p = dir.join("generation_config.json");
    write_atomic(&p, &pretty(&gen)).map_err(io(&p))?;
    match tokenizer {
        TokenizerOut::CopyFrom(src) => copy_tokenizer_files(src, dir)?,
        TokenizerOut::Write { tokenizer, tokenizer_config } => {
            let p = dir.join("tokenizer.json");
            let text = tokenizer
                .to_string(false)
                .map_err(|e| CausalError::Model { path: p.clone(), message: format!("cannot serialise: {e}") })?;
            write_atomic(&p, text.as_bytes()).map_err(io(&p))?;
            let p = dir.join("tokenizer_config.json");
            write_atomic(&p, &pretty(&tokenizer_config)).map_err(io(&p))?;
        }
        TokenizerOut::None => {}
    }
    Ok(())
}

/// Where [`save_causal_lm`] should take tokenizer files from for a checkpoint loaded from `source`.
pub fn tokenizer_out(source: &Source, max_length: Option<usize>) -> TokenizerOut<'_> {
    match source {
        Source::Dir(d) => TokenizerOut::CopyFrom(d),
        Source::Gguf { tokenizer: Some(t), chat_template, .. } => TokenizerOut::Write {
            tokenizer: &t.tokenizer,
            tokenizer_config: gguf_tokenizer_config(t, chat_template.as_deref(), max_length),
        },
        Source::Gguf { tokenizer: None, .. } => TokenizerOut::None,
    }
}
