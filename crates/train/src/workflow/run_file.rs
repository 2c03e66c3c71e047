//! Run files: the run keys of HF's example scripts (`run_glue.py`, `run_ner.py`: data files, columns, task,
//! `max_seq_length`, ...) beside `TrainingArguments`, in one TOML table, with `key=value` overrides (`--set`).
//! Unknown keys are refused with the nearest known key as a hint.

use std::path::Path;

use serde_json::Value;

use super::{Result, WorkflowError};
use crate::TrainingArguments;

macro_rules! bail {
    ($($t:tt)*) => { return Err(WorkflowError::Input(format!($($t)*))) };
}
macro_rules! anyhow {
    ($($t:tt)*) => { WorkflowError::Input(format!($($t)*)) };
}

/// Run settings that are not `TrainingArguments`, named as in HF's example scripts (run_glue.py).
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub model_name_or_path: Option<String>,
    pub task: String,
    pub train_file: Option<String>,
    pub validation_file: Option<String>,
    pub test_file: Option<String>,
    pub text_column_name: String,
    pub text_pair_column_name: Option<String>,
    pub label_column_name: String,
    pub label_separator: Option<String>,
    pub problem_type: Option<String>,
    pub max_seq_length: usize,
    pub split: Option<String>,
    pub do_train: Option<bool>,
    pub do_eval: Option<bool>,
    pub do_predict: Option<bool>,
    pub resume_from_checkpoint: Option<String>,
    pub label_all_tokens: bool,
    pub format: Option<String>,
    /// `hidden_dropout_prob`, `attention_probs_dropout_prob`, `classifier_dropout` over `config.json`.
    pub dropout: crate::DropoutOverrides,
    pub resample: Option<String>,
    /// Per-class weights of the cross-entropy: "balanced" (scikit-learn's `compute_class_weight`) or
    /// "label:weight,label:weight".
    pub class_weight: Option<String>,
    /// EDA augmentation of the training data (`[augment]` table, `augment.*` keys); none by default.
    pub augment: Option<Augment>,
    /// `task = "fill-mask"`: run_mlm.py's data arguments and `DataCollatorForLanguageModeling`'s.
    pub mlm: MlmKeys,
}

/// The masked-LM keys; `None` where not given (the defaults are run_mlm.py's).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MlmKeys {
    pub mlm_probability: Option<f64>,
    pub mask_replace_prob: Option<f64>,
    pub random_replace_prob: Option<f64>,
    pub whole_word_mask: Option<bool>,
    pub line_by_line: Option<bool>,
}

impl MlmKeys {
    pub const KEYS: &[&str] =
        &["mlm_probability", "mask_replace_prob", "random_replace_prob", "whole_word_mask", "line_by_line"];

    /// The first key given, for refusing them outside `task = "fill-mask"`.
    pub fn first_set(&self) -> Option<&'static str> {
        let set = [
            self.mlm_probability.is_some(),
            self.mask_replace_prob.is_some(),
            self.random_replace_prob.is_some(),
            self.whole_word_mask.is_some(),
            self.line_by_line.is_some(),
        ];
        Self::KEYS.iter().zip(set).find(|(_, s)| *s).map(|(k, _)| *k)
    }
}

/// The `[augment]` table: EDA's parameters and where WordNet is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Augment {
    pub eda: finetune_data::augment::EdaOptions,
    pub wordnet: Option<String>,
}

/// Keys of the `[augment]` table.
pub const AUGMENT_KEYS: &[&str] = &["num_aug", "alpha_sr", "alpha_ri", "alpha_rs", "alpha_rd", "wordnet"];

impl Augment {
    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let num = |v: &str| -> Result<f64> {
            v.parse::<f64>()
                .ok()
                .filter(|x| (0.0..=1.0).contains(x))
                .ok_or_else(|| anyhow!("--set augment.{key}={v}: expected a number in [0, 1]"))
        };
        match key {
            "num_aug" => {
                self.eda.num_aug = value
                    .parse()
                    .ok()
                    .filter(|&n: &usize| n >= 1)
                    .ok_or_else(|| anyhow!("--set augment.num_aug={value}: expected an integer >= 1"))?
            }
            "alpha_sr" => self.eda.alpha_sr = num(value)?,
            "alpha_ri" => self.eda.alpha_ri = num(value)?,
            "alpha_rs" => self.eda.alpha_rs = num(value)?,
            "alpha_rd" => self.eda.alpha_rd = num(value)?,
            "wordnet" => self.wordnet = Some(value.to_string()),
            _ => bail!("unknown key `augment.{key}`; the [augment] keys are {}", AUGMENT_KEYS.join(", ")),
        }
        Ok(())
    }
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            model_name_or_path: None,
            task: "sequence-classification".into(),
            train_file: None,
            validation_file: None,
            test_file: None,
            text_column_name: "text".into(),
            text_pair_column_name: None,
            label_column_name: "label".into(),
            label_separator: None,
            problem_type: None,
            max_seq_length: 128,
            split: None,
            do_train: None,
            do_eval: None,
            do_predict: None,
            resume_from_checkpoint: None,
            label_all_tokens: false,
            format: None,
            dropout: Default::default(),
            resample: None,
            class_weight: None,
            augment: None,
            mlm: MlmKeys::default(),
        }
    }
}

/// (key, default, meaning) of the run keys, for `--help`.
pub const RUN_KEYS: &[(&str, &str, &str)] = &[
    ("model_name_or_path", "(required)", "model directory, hub cache folder or model id"),
    (
        "task",
        "\"sequence-classification\"",
        "or \"token-classification\" (NER on CoNLL or Parquet/Arrow token lists, run_ner.py), or \"fill-mask\" \
         (masked-LM domain adaptation on the text column, run_mlm.py)",
    ),
    ("train_file", "none", "CSV/TSV/JSONL/Parquet data or a save_to_disk folder (token-classification: CoNLL too)"),
    ("validation_file", "none", "evaluation data (eval_* metrics)"),
    ("test_file", "none", "test data (test_* metrics, report, predictions)"),
    ("text_column_name", "\"text\"", "column/field with the text (token lists: \"tokens\" when there is no \"text\")"),
    ("text_pair_column_name", "none", "second text of sentence pairs"),
    (
        "label_column_name",
        "\"label\"",
        "column/field with the label (tag lists: \"ner_tags\" when there is no \"label\")",
    ),
    ("label_separator", "none", "multi-label CSV/TSV: split label cells on this string, e.g. \"|\""),
    (
        "problem_type",
        "\"single_label_classification\"",
        "or \"multi_label_classification\" (BCE) or \"regression\" (MSE, numeric label)",
    ),
    ("max_seq_length", "128", "tokens per example after truncation (capped by the model)"),
    ("split", "none", "e.g. \"80/10/10\": stratified seeded split of train_file when no validation/test file"),
    ("do_train", "auto", "train (auto: when train_file is set)"),
    ("do_eval", "auto", "evaluate on validation (auto: when there is validation data)"),
    ("do_predict", "auto", "evaluate and predict on test (auto: when there is test data)"),
    ("resume_from_checkpoint", "none", "a checkpoint-N directory, or \"latest\" for the newest in output_dir"),
    ("label_all_tokens", "false", "token-classification: label every sub-token, not only a word's first"),
    (
        "format",
        "by extension",
        "data format: csv, tsv, jsonl, conll, parquet, arrow (token-classification: conll, parquet, arrow)",
    ),
    ("hidden_dropout_prob", "config.json", "overrides the model config's dropout (DistilBERT: `dropout`)"),
    (
        "attention_probs_dropout_prob",
        "config.json",
        "overrides the attention dropout (DistilBERT: `attention_dropout`)",
    ),
    ("classifier_dropout", "config.json", "overrides the head's dropout (DistilBERT: `seq_classif_dropout`)"),
    (
        "class_weight",
        "none",
        "cross-entropy class weights: \"balanced\" (n_samples / (n_classes * count), sklearn's) or \"neg:1,pos:3\"",
    ),
    (
        "resample",
        "none",
        "\"over\" or \"under\": random over/under-sampling of the training data to balanced classes, seeded by `seed`",
    ),
    (
        "augment",
        "none",
        "\"eda\" or an [augment] table (num_aug 9, alpha_sr/alpha_ri/alpha_rs/alpha_rd 0.1, wordnet): EDA copies of \
         each training text, seeded by `seed`; set one with --set augment.num_aug=4",
    ),
    ("mlm_probability", "0.15", "fill-mask: share of tokens (whole_word_mask: words) selected for prediction"),
    ("mask_replace_prob", "0.8", "fill-mask: share of selected tokens replaced by the mask token"),
    ("random_replace_prob", "0.1", "fill-mask: share replaced by a random token (the rest stay as they were)"),
    ("whole_word_mask", "false", "fill-mask: select whole words (every piece of a word together; only [MASK])"),
    (
        "line_by_line",
        "false",
        "fill-mask: one sequence per text (truncated), instead of texts concatenated into max_seq_length blocks",
    ),
];

pub fn is_run_key(k: &str) -> bool {
    RUN_KEYS.iter().any(|(n, _, _)| *n == k) || k.starts_with("augment.")
}

impl RunConfig {
    /// Sets one key from its text (a `--set` value or a flag).
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let opt = |v: &str| (!matches!(v, "none" | "None" | "null")).then(|| v.to_string());
        let boolean = |v: &str| match v {
            "true" | "True" => Ok(true),
            "false" | "False" => Ok(false),
            _ => Err(anyhow!("--set {key}={v}: expected a boolean (true or false)")),
        };
        match key {
            "model_name_or_path" => self.model_name_or_path = opt(value),
            "task" => self.task = value.to_string(),
            "train_file" => self.train_file = opt(value),
            "validation_file" => self.validation_file = opt(value),
            "test_file" => self.test_file = opt(value),
            "text_column_name" => self.text_column_name = value.to_string(),
            "text_pair_column_name" => self.text_pair_column_name = opt(value),
            "label_column_name" => self.label_column_name = value.to_string(),
            "label_separator" => self.label_separator = opt(value),
            "problem_type" => self.problem_type = opt(value),
            "max_seq_length" => {
                self.max_seq_length = value
                    .parse()
                    .ok()
                    .filter(|&n: &usize| n >= 2)
                    .ok_or_else(|| anyhow!("--set max_seq_length={value}: expected an integer >= 2"))?
            }
            "split" => self.split = opt(value),
            "do_train" => self.do_train = Some(boolean(value)?),
            "do_eval" => self.do_eval = Some(boolean(value)?),
            "do_predict" => self.do_predict = Some(boolean(value)?),
            "resume_from_checkpoint" => self.resume_from_checkpoint = opt(value),
            "label_all_tokens" => self.label_all_tokens = boolean(value)?,
            "format" => self.format = opt(value),
            "mlm_probability" | "mask_replace_prob" | "random_replace_prob" => {
                let p = value
                    .parse::<f64>()
                    .ok()
                    .filter(|x| (0.0..=1.0).contains(x))
                    .ok_or_else(|| anyhow!("--set {key}={value}: expected a number in [0, 1]"))?;
                match key {
                    "mlm_probability" => self.mlm.mlm_probability = Some(p),
                    "mask_replace_prob" => self.mlm.mask_replace_prob = Some(p),
                    _ => self.mlm.random_replace_prob = Some(p),
                }
            }
            "whole_word_mask" => self.mlm.whole_word_mask = Some(boolean(value)?),
            "line_by_line" => self.mlm.line_by_line = Some(boolean(value)?),
            _ if self.dropout.set(key, value).map_err(|e| anyhow!("{e}"))? => {}
            "class_weight" => self.class_weight = opt(value),
            "augment" => {
                self.augment = match opt(value).as_deref() {
                    None | Some("false") => None,
                    Some("eda") => Some(self.augment.take().unwrap_or_default()),
                    Some(v) => bail!("--set augment={v}: expected \"eda\" or none"),
                }
            }
            _ if key.starts_with("augment.") => {
                self.augment.get_or_insert_with(Default::default).set(&key["augment.".len()..], value)?
            }
            "resample" => {
                self.resample = match opt(value).as_deref() {
                    None => None,
                    Some(v @ ("over" | "under")) => Some(v.to_string()),
                    Some(v) => bail!("--set resample={v}: expected \"over\", \"under\" or none"),
                }
            }
            _ => bail!("unknown key `{key}`"),
        }
        Ok(())
    }

    /// Sets one key from a TOML value, naming the file and key on a type error.
    pub fn set_toml(&mut self, origin: &str, key: &str, value: &toml::Value) -> Result<()> {
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            other => bail!("{origin}: key `{key}`: unexpected {} value", other.type_str()),
        };
        let numeric = matches!(key, "max_seq_length" | "do_train" | "do_eval" | "do_predict" | "label_all_tokens")
            || crate::DropoutOverrides::KEYS.contains(&key)
            || MlmKeys::KEYS.contains(&key)
            || (key.starts_with("augment.") && key != "augment.wordnet");
        let is_string_key = !numeric;
        if is_string_key && !value.is_str() {
            bail!("{origin}: key `{key}`: expected a string, got {}", value.type_str());
        }
        self.set(key, &text).map_err(|e| anyhow!("{origin}: key `{key}`: {}", e.to_string().replace("--set ", "")))
    }
}

/// Reads a TOML run file into run keys and TrainingArguments (defaults when `path` is `None`).
pub fn load_config(path: Option<&Path>) -> Result<(RunConfig, TrainingArguments)> {
    let Some(path) = path else { return Ok((RunConfig::default(), TrainingArguments::default())) };
    let origin = path.display().to_string();
    from_table(&origin, read_table(path)?)
}

/// Reads a TOML file as a table; errors name the file.
pub fn read_table(path: &Path) -> Result<toml::Table> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| anyhow!("{origin}: cannot read: {e}"))?;
    toml::from_str(&text).map_err(|e| anyhow!("{origin}: {}", one_line(&e.to_string())))
}

/// Run keys and TrainingArguments of a run-file table; `origin` names the file in errors.
pub fn from_table(origin: &str, table: toml::Table) -> Result<(RunConfig, TrainingArguments)> {
    let mut run = RunConfig::default();
    let mut rest = toml::Table::new();
    let known = training_keys();
    for (k, v) in table {
        if k == "sweep" && v.is_table() {
            bail!(
                "{origin}: the [sweep] table is read by `finetune sweep`; `finetune train` takes a run file without it"
            );
        }
        if !is_run_key(&k) && !known.contains(&k) {
            let all = known.iter().map(String::as_str).chain(RUN_KEYS.iter().map(|(n, _, _)| *n));
            let hint = closest(&k, all).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default();
            bail!("{origin}: unknown key `{k}`{hint}; see `finetune train --help` for the keys");
        }
        if let (true, toml::Value::Table(t)) = (k == "augment", &v) {
            // The [augment] table: EDA on, with these settings.
            run.augment.get_or_insert_with(Default::default);
            for (kk, vv) in t {
                run.set_toml(origin, &format!("augment.{kk}"), vv)?;
            }
        } else if is_run_key(&k) {
            run.set_toml(origin, &k, &v)?;
        } else {
            rest.insert(k, v);
        }
    }
    let args: TrainingArguments = toml::Value::Table(rest).try_into().map_err(|e: toml::de::Error| {
        let msg = one_line(&e.to_string());
        anyhow!("{origin}: {msg}{}", if msg.contains("unknown field") { " (or a run key; see --help)" } else { "" })
    })?;
    Ok((run, args))
}

/// TrainingArguments field names.
pub fn training_keys() -> Vec<String> {
    match serde_json::to_value(TrainingArguments::default()) {
        Ok(Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The candidate nearest to `key` by edit distance, when it is close enough to be a typo.
pub fn closest<'a>(key: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let dist = |a: &str, b: &str| {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = vec![i + 1; b.len() + 1];
            for (j, &cb) in b.iter().enumerate() {
                cur[j + 1] = (prev[j] + usize::from(ca != cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
            }
            prev = cur;
        }
        prev[b.len()]
    };
    candidates.map(|c| (dist(key, c), c)).filter(|(d, _)| *d <= 3).min_by_key(|(d, _)| *d).map(|(_, c)| c)
}

pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Applies a `key=value` to the run keys or the training arguments.
pub fn apply_set(run: &mut RunConfig, args: &mut TrainingArguments, assignment: &str) -> Result<()> {
    let Some((k, v)) = assignment.split_once('=') else { bail!("--set {assignment}: expected key=value") };
    let (k, v) = (k.trim(), v.trim());
    if is_run_key(k) {
        return run.set(k, v);
    }
    let known = training_keys();
    if !known.iter().any(|n| n == k) {
        let all = known.iter().map(String::as_str).chain(RUN_KEYS.iter().map(|(n, _, _)| *n));
        let hint = closest(k, all).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default();
        bail!("--set {k}: unknown key `{k}`{hint}; see `finetune train --help` for the keys");
    }
    Ok(args.set(assignment)?)
}
