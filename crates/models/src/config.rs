//! Hugging Face `config.json` for the encoder family (BERT, RoBERTa, DistilBERT), normalised into one
//! [`EncoderConfig`], and written back with every field the user had preserved.
//!
//! Field names and defaults follow `transformers` (`BertConfig`, `RobertaConfig`, `DistilBertConfig` and
//! `PretrainedConfig`): a field absent from the file takes the class default, so a config written by any
//! `transformers` version loads the same model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{MAX_CONFIG_DIM, MAX_CONFIG_LAYERS};

/// Most labels a config may declare by `num_labels` alone (each gets a generated `LABEL_i` name).
pub const MAX_UNNAMED_LABELS: usize = 1 << 16;

/// Errors reading or writing a `config.json`; each names the file and, where there is one, the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not valid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: field `{field}`: {message}")]
    Field { path: PathBuf, field: String, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The encoder architectures this crate implements, by their `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    Bert,
    Roberta,
    DistilBert,
}

impl Arch {
    /// The `model_type` string `transformers` writes.
    pub fn model_type(self) -> &'static str {
        match self {
            Arch::Bert => "bert",
            Arch::Roberta => "roberta",
            Arch::DistilBert => "distilbert",
        }
    }

    /// Class name prefix used in `architectures`, e.g. `Bert` in `BertForSequenceClassification`.
    pub fn class_prefix(self) -> &'static str {
        match self {
            Arch::Bert => "Bert",
            Arch::Roberta => "Roberta",
            Arch::DistilBert => "DistilBert",
        }
    }

    fn from_model_type(s: &str) -> Option<Arch> {
        match s {
            "bert" => Some(Arch::Bert),
            "roberta" => Some(Arch::Roberta),
            "distilbert" => Some(Arch::DistilBert),
            _ => None,
        }
    }

    /// Guess from an `architectures` entry such as `RobertaForMaskedLM` (older configs lack `model_type`).
    fn from_class_name(s: &str) -> Option<Arch> {
        // Longest prefix first: "DistilBert..." also starts with neither of the others, but "Roberta" vs "Bert"
        // must not be confused.
        [Arch::DistilBert, Arch::Roberta, Arch::Bert].into_iter().find(|a| s.starts_with(a.class_prefix()))
    }
}

/// `problem_type` of a sequence-classification head, as `transformers` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemType {
    SingleLabelClassification,
    MultiLabelClassification,
    Regression,
}

impl ProblemType {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemType::SingleLabelClassification => "single_label_classification",
            ProblemType::MultiLabelClassification => "multi_label_classification",
            ProblemType::Regression => "regression",
        }
    }

    pub fn parse(s: &str) -> Option<ProblemType> {
        match s {
            "single_label_classification" => Some(ProblemType::SingleLabelClassification),
            "multi_label_classification" => Some(ProblemType::MultiLabelClassification),
            "regression" => Some(ProblemType::Regression),
            _ => None,
        }
    }
}

/// One configuration for BERT, RoBERTa and DistilBERT. DistilBERT's own field names (`dim`, `n_layers`, ...)
/// map onto the BERT names here and back to DistilBERT's names when written.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    pub arch: Arch,
    /// `architectures`, e.g. `["BertForSequenceClassification"]`; empty when the file had none.
    pub architectures: Vec<String>,
    pub vocab_size: usize,
    /// `hidden_size` (DistilBERT: `dim`).
    pub hidden_size: usize,
    /// `num_hidden_layers` (DistilBERT: `n_layers`).
    pub num_hidden_layers: usize,
    /// `num_attention_heads` (DistilBERT: `n_heads`).
    pub num_attention_heads: usize,
    /// `intermediate_size` (DistilBERT: `hidden_dim`).
    pub intermediate_size: usize,
    /// `hidden_act` (DistilBERT: `activation`), e.g. "gelu".
    pub hidden_act: String,
    /// `hidden_dropout_prob` (DistilBERT: `dropout`).
    pub hidden_dropout_prob: f64,
    /// `attention_probs_dropout_prob` (DistilBERT: `attention_dropout`).
    pub attention_probs_dropout_prob: f64,
    pub max_position_embeddings: usize,
    /// `type_vocab_size`; 0 for DistilBERT, which has no token-type embeddings.
    pub type_vocab_size: usize,
    /// `layer_norm_eps` (DistilBERT hard-codes 1e-12 and has no such field).
    pub layer_norm_eps: f64,
    pub pad_token_id: Option<usize>,
    /// Number of labels: `len(id2label)` when the file has `id2label`, else `num_labels`, else 2.
    pub num_labels: usize,
    /// Label names by class index (0..num_labels).
    pub id2label: BTreeMap<usize, String>,
    pub label2id: BTreeMap<String, usize>,
    pub problem_type: Option<ProblemType>,
    /// Dropout before the classification head: `classifier_dropout` (BERT, RoBERTa; None = use
    /// `hidden_dropout_prob`) or `seq_classif_dropout` (DistilBERT, default 0.2).
    pub classifier_dropout: Option<f64>,
    /// The file's JSON object as read, unknown fields included; [`EncoderConfig::to_json`] starts from it.
    pub raw: Map<String, Value>,
}

/// Reads typed fields out of the config object, naming the file and field in every error.
struct Fields<'a> {
    path: &'a Path,
    map: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn err(&self, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Field { path: self.path.to_path_buf(), field: field.to_string(), message: message.into() }
    }

    /// A present, non-null value.
    fn get(&self, field: &str) -> Option<&Value> {
        self.map.get(field).filter(|v| !v.is_null())
    }

    fn usize_or(&self, field: &str, default: usize) -> Result<usize, ConfigError> {
        self.opt_usize(field).map(|v| v.unwrap_or(default))
    }

    fn opt_usize(&self, field: &str) -> Result<Option<usize>, ConfigError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|u| usize::try_from(u).ok())
                .map(Some)
                .ok_or_else(|| self.err(field, format!("expected a non-negative integer, got {v}"))),
        }
    }

    fn f64_or(&self, field: &str, default: f64) -> Result<f64, ConfigError> {
        self.opt_f64(field).map(|v| v.unwrap_or(default))
    }

    fn opt_f64(&self, field: &str) -> Result<Option<f64>, ConfigError> {
        match self.get(field) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.err(field, format!("expected a number, got {v}"))),
        }
    }

    fn str_or(&self, field: &str, default: &str) -> Result<String, ConfigError> {
        match self.get(field) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(self.err(field, format!("expected a string, got {v}"))),
        }
    }

    fn probability(&self, field: &str, default: f64) -> Result<f64, ConfigError> {
        let p = self.f64_or(field, default)?;
        if !(0.0..=1.0).contains(&p) {
            return Err(self.err(field, format!("dropout probability {p} is not in [0, 1]")));
        }
        Ok(p)
    }

    fn opt_probability(&self, field: &str) -> Result<Option<f64>, ConfigError> {
        match self.opt_f64(field)? {
            Some(p) if !(0.0..=1.0).contains(&p) => {
                Err(self.err(field, format!("dropout probability {p} is not in [0, 1]")))
            }
            p => Ok(p),
        }
    }
}

impl EncoderConfig {
    /// Reads `config.json` (the file itself, or a directory holding it).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path = path.join("config.json");
        }
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io { path: path.clone(), source })?;
        let value: Value =
            serde_json::from_str(&text).map_err(|source| ConfigError::Json { path: path.clone(), source })?;
        Self::from_value(value, &path)
    }

    /// Parses a config JSON document; `path` is used only in error messages.
    pub fn from_json_str(text: &str, path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let value: Value =
            serde_json::from_str(text).map_err(|source| ConfigError::Json { path: path.to_path_buf(), source })?;
        Self::from_value(value, path)
    }

    fn from_value(value: Value, path: &Path) -> Result<Self, ConfigError> {
        let Value::Object(raw) = value else {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                message: "expected a JSON object at the top level".into(),
            });
        };
        let f = Fields { path, map: &raw };

        let architectures: Vec<String> = match f.get("architectures") {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| f.err("architectures", "expected a list of strings"))?,
            Some(v) => return Err(f.err("architectures", format!("expected a list of strings, got {v}"))),
        };
        let arch = match f.get("model_type") {
            Some(Value::String(s)) => Arch::from_model_type(s).ok_or_else(|| {
                f.err("model_type", format!("unsupported model_type {s:?} (supported: bert, roberta, distilbert)"))
            })?,
            Some(v) => return Err(f.err("model_type", format!("expected a string, got {v}"))),
            None => architectures.iter().find_map(|a| Arch::from_class_name(a)).ok_or_else(|| {
                f.err("model_type", "missing, and `architectures` names no BERT, RoBERTa or DistilBERT class")
            })?,
        };

        // Per-architecture field names and class defaults.
        let cfg = match arch {
            Arch::Bert | Arch::Roberta => {
                let (vocab, pad) = if arch == Arch::Bert { (30522, 0) } else { (50265, 1) };
                EncoderConfig {
                    arch,
                    architectures,
                    vocab_size: f.usize_or("vocab_size", vocab)?,
                    hidden_size: f.usize_or("hidden_size", 768)?,
                    num_hidden_layers: f.usize_or("num_hidden_layers", 12)?,
                    num_attention_heads: f.usize_or("num_attention_heads", 12)?,
                    intermediate_size: f.usize_or("intermediate_size", 3072)?,
                    hidden_act: f.str_or("hidden_act", "gelu")?,
                    hidden_dropout_prob: f.probability("hidden_dropout_prob", 0.1)?,
                    attention_probs_dropout_prob: f.probability("attention_probs_dropout_prob", 0.1)?,
                    max_position_embeddings: f.usize_or("max_position_embeddings", 512)?,
                    type_vocab_size: f.usize_or("type_vocab_size", 2)?,
                    layer_norm_eps: f.f64_or("layer_norm_eps", 1e-12)?,
                    pad_token_id: if raw.contains_key("pad_token_id") {
                        f.opt_usize("pad_token_id")?
                    } else {
                        Some(pad)
                    },
                    num_labels: 0,
                    id2label: BTreeMap::new(),
                    label2id: BTreeMap::new(),
                    problem_type: None,
                    classifier_dropout: f.opt_probability("classifier_dropout")?,
                    raw: Map::new(),
                }
            }
            Arch::DistilBert => EncoderConfig {
                arch,
                architectures,
                vocab_size: f.usize_or("vocab_size", 30522)?,
                hidden_size: f.usize_or("dim", 768)?,
                num_hidden_layers: f.usize_or("n_layers", 6)?,
                num_attention_heads: f.usize_or("n_heads", 12)?,
                intermediate_size: f.usize_or("hidden_dim", 3072)?,
                hidden_act: f.str_or("activation", "gelu")?,
                hidden_dropout_prob: f.probability("dropout", 0.1)?,
                attention_probs_dropout_prob: f.probability("attention_dropout", 0.1)?,
                max_position_embeddings: f.usize_or("max_position_embeddings", 512)?,
                type_vocab_size: 0,
                layer_norm_eps: 1e-12,
                pad_token_id: if raw.contains_key("pad_token_id") { f.opt_usize("pad_token_id")? } else { Some(0) },
                num_labels: 0,
                id2label: BTreeMap::new(),
                label2id: BTreeMap::new(),
                problem_type: None,
                classifier_dropout: Some(f.probability("seq_classif_dropout", 0.2)?),
                raw: Map::new(),
            },
        };
        let mut cfg = cfg;

        // Labels, as PretrainedConfig: id2label wins; otherwise num_labels (default 2) with LABEL_i names.
        let hidden_field = if arch == Arch::DistilBert { "dim" } else { "hidden_size" };
        let heads_field = if arch == Arch::DistilBert { "n_heads" } else { "num_attention_heads" };
        match f.get("id2label") {
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let id: usize = k
                        .trim()
                        .parse()
                        .map_err(|_| f.err("id2label", format!("key {k:?} is not a non-negative integer")))?;
                    let name = v.as_str().ok_or_else(|| f.err("id2label", format!("label {k} is not a string")))?;
                    cfg.id2label.insert(id, name.to_string());
                }
                let n = cfg.id2label.len();
                if cfg.id2label.keys().enumerate().any(|(i, &k)| i != k) {
                    return Err(f.err("id2label", format!("keys must be 0..{n} without gaps")));
                }
                if let Some(declared) = f.opt_usize("num_labels")? {
                    if declared != n {
                        return Err(f.err(
                            "num_labels",
                            format!("{declared} is incompatible with the {n} entries of id2label"),
                        ));
                    }
                }
                cfg.num_labels = n;
            }
            Some(v) => return Err(f.err("id2label", format!("expected an object, got {v}"))),
            None => {
                cfg.num_labels = f.usize_or("num_labels", 2)?;
                if cfg.num_labels > MAX_UNNAMED_LABELS {
                    return Err(f.err(
                        "num_labels",
                        format!(
                            "{} labels without id2label (at most {MAX_UNNAMED_LABELS}; name them in id2label)",
                            cfg.num_labels
                        ),
                    ));
                }
                cfg.id2label = (0..cfg.num_labels).map(|i| (i, format!("LABEL_{i}"))).collect();
            }
        }
        match f.get("label2id") {
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let id = v
                        .as_u64()
                        .and_then(|u| usize::try_from(u).ok())
                        .ok_or_else(|| f.err("label2id", format!("id of {k:?} is not a non-negative integer")))?;
                    cfg.label2id.insert(k.clone(), id);
                }
            }
            Some(v) => return Err(f.err("label2id", format!("expected an object, got {v}"))),
            None => cfg.label2id = cfg.id2label.iter().map(|(&i, n)| (n.clone(), i)).collect(),
        }
        if let Some(v) = f.get("problem_type") {
            let s = v.as_str().ok_or_else(|| f.err("problem_type", format!("expected a string, got {v}")))?;
            let p = ProblemType::parse(s).ok_or_else(|| {
                f.err(
                    "problem_type",
                    format!("{s:?} is not one of single_label_classification, multi_label_classification, regression"),
                )
            })?;
            if p == ProblemType::SingleLabelClassification && cfg.num_labels == 1 {
                return Err(f.err("problem_type", "single_label_classification requires num_labels > 1"));
            }
            cfg.problem_type = Some(p);
        }

        // Shape sanity that the model code relies on. Sizes are checked against the weights when a model is built;
        // values no model could have are refused here already.
        let layers_field = if arch == Arch::DistilBert { "n_layers" } else { "num_hidden_layers" };
        let inter_field = if arch == Arch::DistilBert { "hidden_dim" } else { "intermediate_size" };
        for (field, v, max) in [
            (hidden_field, cfg.hidden_size, MAX_CONFIG_DIM),
            (heads_field, cfg.num_attention_heads, MAX_CONFIG_DIM),
            ("vocab_size", cfg.vocab_size, MAX_CONFIG_DIM),
            ("max_position_embeddings", cfg.max_position_embeddings, MAX_CONFIG_DIM),
            ("type_vocab_size", cfg.type_vocab_size, MAX_CONFIG_DIM),
            (inter_field, cfg.intermediate_size, MAX_CONFIG_DIM),
            (layers_field, cfg.num_hidden_layers, MAX_CONFIG_LAYERS),
        ] {
            if v > max {
                return Err(f.err(field, format!("{v} is larger than the supported maximum {max}")));
            }
        }
        for (field, v) in [
            (hidden_field, cfg.hidden_size),
            (heads_field, cfg.num_attention_heads),
            ("vocab_size", cfg.vocab_size),
            ("max_position_embeddings", cfg.max_position_embeddings),
        ] {
            if v == 0 {
                return Err(f.err(field, "must be positive"));
            }
        }
        if cfg.hidden_size % cfg.num_attention_heads != 0 {
            return Err(f.err(
                hidden_field,
                format!("{} is not a multiple of {heads_field} = {}", cfg.hidden_size, cfg.num_attention_heads),
            ));
        }
        if !(cfg.layer_norm_eps > 0.0 && cfg.layer_norm_eps.is_finite()) {
            return Err(f.err("layer_norm_eps", "must be a positive finite number"));
        }

        cfg.raw = raw;
        Ok(cfg)
    }

    /// Per-head dimension `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Sets the label names (class index = position), rebuilding `id2label`, `label2id` and `num_labels`.
    pub fn set_labels<S: AsRef<str>>(&mut self, labels: &[S]) {
        self.id2label = labels.iter().enumerate().map(|(i, s)| (i, s.as_ref().to_string())).collect();
        self.label2id = labels.iter().enumerate().map(|(i, s)| (s.as_ref().to_string(), i)).collect();
        self.num_labels = labels.len();
    }

    /// Sets `architectures` to the single class for `head`, e.g. "ForSequenceClassification" gives
    /// `["BertForSequenceClassification"]` on a BERT config.
    pub fn set_head(&mut self, head: &str) {
        self.architectures = vec![format!("{}{}", self.arch.class_prefix(), head)];
    }

    /// The config as `transformers` would write it: the original object with the normalised fields written
    /// back under this architecture's names (unknown fields kept as they were).
    pub fn to_json(&self) -> Value {
        let mut m = self.raw.clone();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_string(), v);
        };
        put("model_type", self.arch.model_type().into());
        if !self.architectures.is_empty() {
            put("architectures", self.architectures.iter().map(|s| Value::from(s.as_str())).collect());
        }
        put("vocab_size", self.vocab_size.into());
        put("max_position_embeddings", self.max_position_embeddings.into());
        put("pad_token_id", self.pad_token_id.map_or(Value::Null, Value::from));
        match self.arch {
            Arch::Bert | Arch::Roberta => {
                put("hidden_size", self.hidden_size.into());
                put("num_hidden_layers", self.num_hidden_layers.into());
                put("num_attention_heads", self.num_attention_heads.into());
                put("intermediate_size", self.intermediate_size.into());
                put("hidden_act", self.hidden_act.as_str().into());
                put("hidden_dropout_prob", self.hidden_dropout_prob.into());
                put("attention_probs_dropout_prob", self.attention_probs_dropout_prob.into());
                put("type_vocab_size", self.type_vocab_size.into());
                put("layer_norm_eps", self.layer_norm_eps.into());
                put("classifier_dropout", self.classifier_dropout.map_or(Value::Null, Value::from));
            }
            Arch::DistilBert => {
                put("dim", self.hidden_size.into());
                put("n_layers", self.num_hidden_layers.into());
                put("n_heads", self.num_attention_heads.into());
                put("hidden_dim", self.intermediate_size.into());
                put("activation", self.hidden_act.as_str().into());
                put("dropout", self.hidden_dropout_prob.into());
                put("attention_dropout", self.attention_probs_dropout_prob.into());
                put("seq_classif_dropout", self.classifier_dropout.unwrap_or(0.2).into());
            }
        }
        // transformers writes id2label keys as strings.
        put(
            "id2label",
            Value::Object(self.id2label.iter().map(|(i, n)| (i.to_string(), Value::from(n.as_str()))).collect()),
        );
        put("label2id", Value::Object(self.label2id.iter().map(|(n, &i)| (n.clone(), Value::from(i))).collect()));
        // num_labels is derived from id2label; a stale copy would contradict it on reload.
        m.remove("num_labels");
        match self.problem_type {
            Some(p) => {
                m.insert("problem_type".into(), p.as_str().into());
            }
            None => {
                m.remove("problem_type");
            }
        }
        Value::Object(m)
    }

    /// Writes `config.json` into `dir` (pretty-printed like `transformers`, sorted keys).
    pub fn write(&self, dir: impl AsRef<Path>) -> Result<PathBuf, ConfigError> {
        let path = dir.as_ref().join("config.json");
        let mut text = serde_json::to_string_pretty(&self.to_json())
            .map_err(|source| ConfigError::Json { path: path.clone(), source })?;
        text.push('\n');
        crate::checkpoint::write_atomic(&path, text.as_bytes())
            .map_err(|source| ConfigError::Io { path: path.clone(), source })?;
        Ok(path)
    }
}
