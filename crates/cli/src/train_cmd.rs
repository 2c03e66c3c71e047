//! `finetune train`, `finetune eval`, `finetune predict`: sequence classification with a BERT-family encoder, as
//! `transformers/examples/pytorch/text-classification/run_glue.py` runs it, and token classification (NER) on
//! CoNLL files as `transformers/examples/pytorch/token-classification/run_ner.py` runs it. Argument parsing and glue only; the
//! work is done by `finetune_train` (loop and model adapter), `finetune_data` and `finetune_models`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use finetune_data::split::{random_split, stratified_split};
use finetune_data::{
    Collator, Example, Format, LabelMap, ReadOptions, SeqDataset, SeqTask, SplitSpec, TokenDatasetEncoded,
    TokenExample, Tokenize,
};
use finetune_metrics::classification::{classification_report, ReportOptions};
use finetune_models::bert::Task;
use finetune_models::checkpoint::resolve_model_dir;
use finetune_models::config::{EncoderConfig, ProblemType};
use finetune_models::tokenizer::TextTokenizer;
use finetune_train::{
    train, EncoderClassifier, Evaluator, ProgressMode, Resume, Sampler, SeqBatches, TokenBatches, TrainOptions,
    TrainableModel, TrainingArguments,
};
use serde_json::{json, Map, Value};

const EXAMPLE: &str = "\
Examples:
  finetune train --config examples/sentiment.toml
  finetune train --config examples/ner.toml
  finetune train --config examples/spam.toml --progress lines
  finetune train --config examples/sentiment.toml --resume-from-checkpoint latest
  finetune train --config examples/sentiment.toml --set max_steps=20 --set output_dir=bench-out/quick
  finetune train --model-name-or-path assets/all-MiniLM-L6-v2 --train-file data.csv --split 80/10/10 \\
      --output-dir bench-out/run --num-train-epochs 2 --learning-rate 5e-5
  finetune eval --model bench-out/run --data test.csv
  finetune predict --model bench-out/run --data new.csv --out preds.jsonl";

/// Run settings that are not `TrainingArguments`, named as in HF's example scripts (run_glue.py).
#[derive(Debug, Clone)]
pub(crate) struct RunConfig {
    pub(crate) model_name_or_path: Option<String>,
    pub(crate) task: String,
    pub(crate) train_file: Option<String>,
    pub(crate) validation_file: Option<String>,
    pub(crate) test_file: Option<String>,
    pub(crate) text_column_name: String,
    pub(crate) text_pair_column_name: Option<String>,
    pub(crate) label_column_name: String,
    pub(crate) label_separator: Option<String>,
    pub(crate) problem_type: Option<String>,
    pub(crate) max_seq_length: usize,
    pub(crate) split: Option<String>,
    pub(crate) do_train: Option<bool>,
    pub(crate) do_eval: Option<bool>,
    pub(crate) do_predict: Option<bool>,
    pub(crate) resume_from_checkpoint: Option<String>,
    pub(crate) label_all_tokens: bool,
    pub(crate) format: Option<String>,
    /// `hidden_dropout_prob`, `attention_probs_dropout_prob`, `classifier_dropout` over `config.json`.
    pub(crate) dropout: finetune_train::DropoutOverrides,
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
        }
    }
}

/// (key, default, meaning) of the run keys, for `--help`.
pub(crate) const RUN_KEYS: &[(&str, &str, &str)] = &[
    ("model_name_or_path", "(required)", "model directory, hub cache folder or model id"),
    ("task", "\"sequence-classification\"", "or \"token-classification\" (NER on CoNLL files, run_ner.py)"),
    ("train_file", "none", "CSV/TSV/JSONL training data (CoNLL for token-classification)"),
    ("validation_file", "none", "evaluation data (eval_* metrics)"),
    ("test_file", "none", "test data (test_* metrics, report, predictions)"),
    ("text_column_name", "\"text\"", "column/field with the text"),
    ("text_pair_column_name", "none", "second text of sentence pairs"),
    ("label_column_name", "\"label\"", "column/field with the label"),
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
    ("format", "by extension", "data format: csv, tsv, jsonl, conll (token-classification: always conll)"),
    ("hidden_dropout_prob", "config.json", "overrides the model config's dropout (DistilBERT: `dropout`)"),
    (
        "attention_probs_dropout_prob",
        "config.json",
        "overrides the attention dropout (DistilBERT: `attention_dropout`)",
    ),
    ("classifier_dropout", "config.json", "overrides the head's dropout (DistilBERT: `seq_classif_dropout`)"),
];

fn is_run_key(k: &str) -> bool {
    RUN_KEYS.iter().any(|(n, _, _)| *n == k)
}

impl RunConfig {
    /// Sets one key from its text (a `--set` value or a flag).
    fn set(&mut self, key: &str, value: &str) -> Result<()> {
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
            _ if self.dropout.set(key, value)? => {}
            _ => bail!("unknown key `{key}`"),
        }
        Ok(())
    }

    /// Sets one key from a TOML value, naming the file and key on a type error.
    fn set_toml(&mut self, origin: &str, key: &str, value: &toml::Value) -> Result<()> {
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            other => bail!("{origin}: key `{key}`: unexpected {} value", other.type_str()),
        };
        let is_string_key =
            !matches!(key, "max_seq_length" | "do_train" | "do_eval" | "do_predict" | "label_all_tokens")
                && !finetune_train::DropoutOverrides::KEYS.contains(&key);
        if is_string_key && !value.is_str() {
            bail!("{origin}: key `{key}`: expected a string, got {}", value.type_str());
        }
        self.set(key, &text).map_err(|e| anyhow!("{origin}: key `{key}`: {}", e.to_string().replace("--set ", "")))
    }
}

/// `finetune train`: fine-tune an encoder for sequence classification.
#[derive(Args, Debug)]
#[command(after_long_help = train_long_help(), after_help = EXAMPLE)]
pub struct TrainArgs {
    /// TOML run file: TrainingArguments keys (HF names) and run keys (listed below). Flags override it, and
    /// --set overrides flags.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override any key, e.g. --set learning_rate=3e-5 (repeatable; applied last, in order).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Model directory, hub cache folder or model id [config: model_name_or_path].
    #[arg(long)]
    model_name_or_path: Option<String>,
    /// Training data, CSV/TSV/JSONL (CoNLL for token-classification) [config: train_file; default: none].
    #[arg(long)]
    train_file: Option<String>,
    /// Validation data: eval_* metrics [config: validation_file; default: none].
    #[arg(long)]
    validation_file: Option<String>,
    /// Test data: test_* metrics and predictions [config: test_file; default: none].
    #[arg(long)]
    test_file: Option<String>,
    /// Split train_file, e.g. 80/10/10 (stratified by label, seeded by `seed`) [config: split; default: none].
    #[arg(long)]
    split: Option<String>,
    /// Where checkpoints, the final model and results go [config: output_dir; default: trainer_output].
    #[arg(long)]
    output_dir: Option<String>,
    /// Passes over the training data (max_steps > 0 overrides) [config: num_train_epochs; default: 3].
    #[arg(long)]
    num_train_epochs: Option<f64>,
    /// Peak AdamW learning rate [config: learning_rate; default: 5e-5].
    #[arg(long)]
    learning_rate: Option<f64>,
    /// Examples per training step (before gradient accumulation) [config: per_device_train_batch_size;
    /// default: 8].
    #[arg(long)]
    per_device_train_batch_size: Option<usize>,
    /// Tokens per example after truncation [config: max_seq_length; default: 128].
    #[arg(long)]
    max_seq_length: Option<usize>,
    /// Seed of initialisation, data order, dropout and split [config: seed; default: 42].
    #[arg(long)]
    seed: Option<u64>,
    /// Train (run_glue.py --do_train). When none of --do-train/--do-eval/--do-predict is given (flag or
    /// config), each runs when its data is there.
    #[arg(long)]
    do_train: bool,
    /// Evaluate on the validation data (eval_results.json).
    #[arg(long)]
    do_eval: bool,
    /// Evaluate and predict on the test data (test_results.json, predict_results.txt, predictions.jsonl).
    #[arg(long)]
    do_predict: bool,
    /// Replace checkpoints of an earlier run in output_dir [config: overwrite_output_dir; default: false].
    #[arg(long)]
    overwrite_output_dir: bool,
    /// Resume from a checkpoint-N directory, or "latest" for the newest complete one in output_dir; the result
    /// equals an uninterrupted run bit for bit [config: resume_from_checkpoint; default: none].
    #[arg(long)]
    resume_from_checkpoint: Option<String>,
    /// Progress display: auto (bar on a terminal), lines, off.
    #[arg(long, default_value = "auto", value_parser = ["auto", "lines", "off"])]
    progress: String,
}

fn train_long_help() -> String {
    let mut s = String::from("Run keys (TOML or --set):\n");
    for (k, d, m) in RUN_KEYS {
        s.push_str(&format!("  {k:<24} default {d:<28} {m}\n"));
    }
    s.push_str("\nTrainingArguments keys (Hugging Face names and defaults):\n");
    if let Ok(Value::Object(m)) = serde_json::to_value(TrainingArguments::default()) {
        for (k, v) in m {
            s.push_str(&format!("  {k:<30} default {v}\n"));
        }
    }
    s.push_str(
        "\nOutput (output_dir): checkpoint-N/ (model, optimizer, trainer_state.json), the final model \
         (config.json, model.safetensors, tokenizer files), trainer_state.json, train_results.json, \
         eval_results.json, test_results.json, all_results.json, predict_results.txt, predictions.jsonl.\n\
         Errors: one line naming the file:line, field or key; exit status 2; nothing is written before the \
         inputs are checked.\n\n",
    );
    s.push_str(EXAMPLE);
    s
}

/// `finetune eval`: metrics of a saved classification model on labelled data.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  finetune eval --model bench-out/sentiment --data test.csv              # report + metrics (eval_*)
  finetune eval --model bench-out/spam --data spam.jsonl --max-seq-length 256 --json
  finetune eval --model bench-out/ner --data test.conll                  # seqeval entity report")]
pub struct EvalArgs {
    /// A model directory written by `finetune train` (or any HF sequence- or token-classification model).
    #[arg(long)]
    model: String,
    /// Labelled data, CSV/TSV/JSONL (CoNLL for a token-classification model).
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    common: InferArgs,
    /// Print only the metrics as JSON.
    #[arg(long)]
    json: bool,
}

/// `finetune predict`: labels and class probabilities of a saved classification model.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  finetune predict --model bench-out/sentiment --data new.csv --out preds.jsonl
  finetune predict --model bench-out/spam --data inbox.jsonl --max-seq-length 256 --out spam-preds.jsonl
  finetune predict --model bench-out/ner --data tweets.conll --out tags.jsonl")]
pub struct PredictArgs {
    /// A model directory written by `finetune train` (or any HF sequence- or token-classification model).
    #[arg(long)]
    model: String,
    /// Data to label, CSV/TSV/JSONL (a label column, if any, is ignored); for a token-classification model a
    /// CoNLL file (token and tag columns; the tags are ignored).
    #[arg(long)]
    data: PathBuf,
    /// Output JSON lines: {"label": ..., "probabilities": {label: p, ...}} per example, in input order
    /// (token classification: {"tokens": [...], "tags": [...]} per sentence).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    common: InferArgs,
}

#[derive(Args, Debug)]
pub struct InferArgs {
    /// Column (CSV/TSV) or field (JSONL) with the text.
    #[arg(long, default_value = "text")]
    text_column_name: String,
    /// Column or field with the second text of sentence pairs.
    #[arg(long)]
    text_pair_column_name: Option<String>,
    /// Column or field with the label.
    #[arg(long, default_value = "label")]
    label_column_name: String,
    /// Multi-label CSV/TSV: split label cells on this string (e.g. "|").
    #[arg(long)]
    label_separator: Option<String>,
    /// Tokens per example after truncation (capped by the model); use the value the model was trained with.
    #[arg(long, default_value_t = 128)]
    max_seq_length: usize,
    /// Examples per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Token-classification models: score every sub-token, not only each word's first (as trained with
    /// label_all_tokens).
    #[arg(long)]
    label_all_tokens: bool,
}

/// Reads the TOML file into run keys and TrainingArguments.
pub(crate) fn load_config(path: Option<&Path>) -> Result<(RunConfig, TrainingArguments)> {
    let mut run = RunConfig::default();
    let Some(path) = path else { return Ok((run, TrainingArguments::default())) };
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("{origin}: cannot read"))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| anyhow!("{origin}: {}", one_line(&e.to_string())))?;
    let mut rest = toml::Table::new();
    let known = training_keys();
    for (k, v) in table {
        if !is_run_key(&k) && !known.contains(&k) {
            let all = known.iter().map(String::as_str).chain(RUN_KEYS.iter().map(|(n, _, _)| *n));
            let hint = closest(&k, all).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default();
            bail!("{origin}: unknown key `{k}`{hint}; see `finetune train --help` for the keys");
        }
        if is_run_key(&k) {
            run.set_toml(&origin, &k, &v)?;
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
pub(crate) fn training_keys() -> Vec<String> {
    match serde_json::to_value(TrainingArguments::default()) {
        Ok(Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The candidate nearest to `key` by edit distance, when it is close enough to be a typo.
pub(crate) fn closest<'a>(key: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
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

pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Applies a `key=value` to the run keys or the training arguments.
pub(crate) fn apply_set(run: &mut RunConfig, args: &mut TrainingArguments, assignment: &str) -> Result<()> {
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

pub(crate) fn read_opts(text: &str, pair: Option<&str>, label: Option<&str>, separator: Option<&str>) -> ReadOptions {
    ReadOptions {
        text_column_name: text.to_string(),
        text_pair_column_name: pair.map(str::to_string),
        label_column_name: label.map(str::to_string),
        label_separator: separator.map(str::to_string),
        ..Default::default()
    }
}

pub(crate) fn parse_problem(s: Option<&str>) -> Result<ProblemType> {
    match s {
        None => Ok(ProblemType::SingleLabelClassification),
        Some(p) => ProblemType::parse(p).ok_or_else(|| {
            anyhow!(
                "key `problem_type`: {p:?} is not one of single_label_classification, multi_label_classification, \
                 regression"
            )
        }),
    }
}

fn seq_task(problem: ProblemType) -> SeqTask {
    match problem {
        ProblemType::SingleLabelClassification => SeqTask::SingleLabel,
        ProblemType::MultiLabelClassification => SeqTask::MultiLabel,
        ProblemType::Regression => SeqTask::Regression,
    }
}

pub(crate) fn read(path: &str, opts: &ReadOptions) -> Result<Vec<Example>> {
    let ds = finetune_data::read_examples(Path::new(path), opts)?;
    if ds.examples.is_empty() {
        bail!("{path}: no examples");
    }
    Ok(ds.examples)
}

/// Model directory, tokenizer and effective max length (`min(max_seq_length, model_max_length,
/// max_position_embeddings)`, as run_glue.py caps it).
pub(crate) fn tokenizer_for(spec: &str, max_seq_length: usize) -> Result<(PathBuf, TextTokenizer, usize)> {
    let dir = resolve_model_dir(spec)?;
    let dir = if dir.is_file() { dir.parent().map(Path::to_path_buf).unwrap_or_default() } else { dir };
    let tok = TextTokenizer::from_dir(&dir)?;
    let cfg = EncoderConfig::from_file(dir.join("config.json"))?;
    let mut max = max_seq_length.min(cfg.max_position_embeddings);
    if let Some(m) = tok.max_length() {
        max = max.min(m);
    }
    Ok((dir, tok, max))
}

struct Splits {
    train: Option<(String, Vec<Example>)>,
    validation: Option<(String, Vec<Example>)>,
    test: Option<(String, Vec<Example>)>,
}

fn load_splits(run: &RunConfig, seed: u64, problem: ProblemType) -> Result<Splits> {
    let mut opts = read_opts(
        &run.text_column_name,
        run.text_pair_column_name.as_deref(),
        Some(&run.label_column_name),
        run.label_separator.as_deref(),
    );
    opts.format = run.format.as_deref().map(Format::parse).transpose().map_err(|e| anyhow!("key `format`: {e}"))?;
    let read_opt = |f: &Option<String>| -> Result<Option<(String, Vec<Example>)>> {
        f.as_ref().map(|p| Ok((p.clone(), read(p, &opts)?))).transpose()
    };
    let mut s = Splits { train: read_opt(&run.train_file)?, validation: read_opt(&run.validation_file)?, test: None };
    s.test = match read_opt(&run.test_file) {
        // run_glue.py's test files usually have no labels: predict only.
        Err(e) if missing_label_column(&e, &run.label_column_name) => {
            let unlabelled = ReadOptions { label_column_name: None, ..opts.clone() };
            run.test_file.as_ref().map(|p| Ok::<_, anyhow::Error>((p.clone(), read(p, &unlabelled)?))).transpose()?
        }
        other => other?,
    };
    if let Some(spec) = &run.split {
        if s.validation.is_some() || s.test.is_some() {
            bail!("key `split`: splits train_file only when neither validation_file nor test_file is given");
        }
        let Some((path, examples)) = s.train.take() else { bail!("key `split`: needs train_file") };
        let spec = SplitSpec::parse(spec).map_err(|e| anyhow!("key `split`: {e}"))?;
        let strata: Vec<String> =
            examples.iter().map(|e| e.label.as_ref().map(|l| l.strata_key()).unwrap_or_default()).collect();
        // Numeric targets have no classes to stratify by.
        let parts = if problem == ProblemType::Regression {
            random_split(examples.len(), &spec, seed)
        } else {
            stratified_split(&strata, &spec, seed)
        };
        let pick = |ix: &Vec<usize>| ix.iter().map(|&i| examples[i].clone()).collect::<Vec<_>>();
        let mut it = parts.iter();
        s.train = it.next().map(|ix| (path.clone(), pick(ix)));
        s.validation = it.next().map(|ix| (path.clone(), pick(ix))).filter(|(_, v)| !v.is_empty());
        s.test = it.next().map(|ix| (path.clone(), pick(ix))).filter(|(_, v)| !v.is_empty());
    }
    Ok(s)
}

/// Whether a read failed only because the label column (CSV/TSV) or field (JSONL) is absent.
fn missing_label_column(e: &anyhow::Error, label: &str) -> bool {
    let msg = e.to_string();
    let quoted = format!("{label:?}");
    msg.contains(&format!("no column {quoted}")) || msg.contains(&format!("field {quoted} is missing"))
}

/// Encodes a split; a split without any label (a test file for prediction only) is encoded unlabelled.
pub(crate) fn encode(
    tok: &TextTokenizer,
    split: &(String, Vec<Example>),
    labels: &LabelMap,
    max: usize,
    problem: ProblemType,
) -> Result<SeqDataset> {
    if problem != ProblemType::Regression {
        labels.check_examples(&split.1, &split.0)?;
    }
    let task = if split.1.iter().all(|e| e.label.is_none()) { SeqTask::Unlabelled } else { seq_task(problem) };
    Ok(SeqDataset::encode(tok, &split.1, Some(labels), task, Some(max), &split.0)?)
}

pub(crate) fn prefixed(prefix: &str, m: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    m.iter()
        .map(
            |(k, v)| if k.starts_with(&format!("{prefix}_")) { (k.clone(), *v) } else { (format!("{prefix}_{k}"), *v) },
        )
        .collect()
}

pub(crate) fn write_json_file(path: &Path, value: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    finetune_train::write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// A metric as JSON: sample counts as integers (as HF writes them), everything else as a float.
pub(crate) fn metric_value(key: &str, v: f64) -> Value {
    if key.ends_with("_samples") && v >= 0.0 && v.fract() == 0.0 && v < 9e15 {
        json!(v as u64)
    } else {
        json!(v)
    }
}

/// HF `save_metrics(split, metrics, combined=True)`: `{split}_results.json` and merged into `all_results.json`.
pub(crate) fn save_metrics(out: &Path, split: &str, metrics: &BTreeMap<String, f64>) -> Result<()> {
    let to_value =
        |m: &BTreeMap<String, f64>| Value::Object(m.iter().map(|(k, v)| (k.clone(), metric_value(k, *v))).collect());
    write_json_file(&out.join(format!("{split}_results.json")), &to_value(metrics))?;
    let all_path = out.join("all_results.json");
    let mut all: Map<String, Value> = match std::fs::read_to_string(&all_path) {
        Ok(t) => serde_json::from_str(&t).with_context(|| format!("{}", all_path.display()))?,
        Err(_) => Map::new(),
    };
    for (k, v) in metrics {
        all.insert(k.clone(), metric_value(k, *v));
    }
    // HF writes sample counts as integers.
    for (k, v) in all.iter_mut() {
        if let Some(x) = v.as_f64().filter(|_| k.ends_with("_samples")) {
            *v = metric_value(k, x);
        }
    }
    write_json_file(&all_path, &Value::Object(all))
}

/// Evaluates `data` and returns HF-prefixed metrics (with runtime and `{prefix}_samples`) and the evaluation.
fn evaluate_split(
    model: &mut EncoderClassifier,
    data: &SeqDataset,
    batch_size: usize,
    collator: Collator,
    prefix: &str,
) -> Result<(BTreeMap<String, f64>, finetune_train::Evaluation)> {
    let start = Instant::now();
    let ev = model.evaluate(data, batch_size, collator)?;
    let mut m = prefixed(prefix, &ev.metrics.metrics);
    let runtime = (start.elapsed().as_secs_f64() * 1e4).round() / 1e4;
    m.insert(format!("{prefix}_runtime"), runtime);
    if runtime > 0.0 {
        m.insert(format!("{prefix}_samples_per_second"), (data.len() as f64 / runtime * 1e3).round() / 1e3);
    }
    m.insert(format!("{prefix}_samples"), data.len() as f64);
    Ok((m, ev))
}

fn report_text(gold: &[usize], pred: &[usize], names: &[String]) -> Result<String> {
    let g: Vec<&str> = gold.iter().map(|&i| names.get(i).map_or("?", String::as_str)).collect();
    let p: Vec<&str> = pred.iter().map(|&i| names.get(i).map_or("?", String::as_str)).collect();
    let r = classification_report(&g, &p, None, &ReportOptions::default())?;
    Ok(r.to_text(4)?)
}

pub(crate) fn print_metrics(title: &str, m: &BTreeMap<String, f64>) {
    println!("***** {title} metrics *****");
    for (k, v) in m {
        println!("  {k:<28} = {v}");
    }
}

/// One prediction as run_glue.py writes it: the label name, the labels joined by "," (multi-label), or the
/// value with 3 decimals (regression).
fn prediction_text(ev: &finetune_train::Evaluation, i: usize, names: &[String], problem: ProblemType) -> String {
    let name = |c: usize| names.get(c).cloned().unwrap_or_default();
    match problem {
        ProblemType::SingleLabelClassification => name(ev.predictions[i]),
        ProblemType::MultiLabelClassification => {
            ev.label_sets.get(i).map(|s| s.iter().map(|&c| name(c)).collect::<Vec<_>>().join(",")).unwrap_or_default()
        }
        ProblemType::Regression => format!("{:.3}", ev.probabilities[i].first().copied().unwrap_or(f64::NAN)),
    }
}

/// predictions.jsonl: `{"label", "probabilities"}` (single-label), `{"labels", "probabilities"}` (multi-label)
/// or `{"prediction"}` (regression; a list when the model has several outputs).
fn write_predictions(
    path: &Path,
    ev: &finetune_train::Evaluation,
    names: &[String],
    problem: ProblemType,
) -> Result<()> {
    let mut text = String::new();
    for (i, (p, probs)) in ev.predictions.iter().zip(&ev.probabilities).enumerate() {
        let by_name: Map<String, Value> = names.iter().zip(probs).map(|(n, &v)| (n.clone(), json!(v))).collect();
        let line = match problem {
            ProblemType::SingleLabelClassification => {
                json!({ "label": names.get(*p).cloned().unwrap_or_default(), "probabilities": by_name })
            }
            ProblemType::MultiLabelClassification => {
                let set = ev.label_sets.get(i).map_or(&[][..], |s| &s[..]);
                let labels: Vec<&str> = set.iter().filter_map(|&c| names.get(c).map(String::as_str)).collect();
                json!({ "labels": labels, "probabilities": by_name })
            }
            ProblemType::Regression if probs.len() == 1 => json!({ "prediction": probs[0] }),
            ProblemType::Regression => json!({ "prediction": probs }),
        };
        text.push_str(&line.to_string());
        text.push('\n');
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    }
    finetune_train::write_atomic(path, text.as_bytes())?;
    Ok(())
}

pub fn run_train(a: TrainArgs) -> Result<()> {
    let (mut run, mut args) = load_config(a.config.as_deref())?;
    let mut flags: Vec<String> = Vec::new();
    let mut flag = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            flags.push(format!("{k}={v}"));
        }
    };
    flag("model_name_or_path", a.model_name_or_path.clone());
    flag("train_file", a.train_file.clone());
    flag("validation_file", a.validation_file.clone());
    flag("test_file", a.test_file.clone());
    flag("split", a.split.clone());
    flag("output_dir", a.output_dir.clone());
    flag("num_train_epochs", a.num_train_epochs.map(|v| v.to_string()));
    flag("learning_rate", a.learning_rate.map(|v| v.to_string()));
    flag("per_device_train_batch_size", a.per_device_train_batch_size.map(|v| v.to_string()));
    flag("max_seq_length", a.max_seq_length.map(|v| v.to_string()));
    flag("seed", a.seed.map(|v| v.to_string()));
    flag("resume_from_checkpoint", a.resume_from_checkpoint.clone());
    for (on, k) in [(a.do_train, "do_train"), (a.do_eval, "do_eval"), (a.do_predict, "do_predict")] {
        flag(k, on.then(|| "true".to_string()));
    }
    flag("overwrite_output_dir", a.overwrite_output_dir.then(|| "true".to_string()));
    for s in flags.iter().chain(&a.set) {
        apply_set(&mut run, &mut args, s)?;
    }
    args.finalize()?;

    let token_task = match run.task.as_str() {
        "sequence-classification" => false,
        "token-classification" => true,
        t => bail!("key `task`: {t:?} is not supported; use \"sequence-classification\" or \"token-classification\""),
    };
    let Some(spec) = run.model_name_or_path.clone() else {
        bail!("key `model_name_or_path` is required (--model-name-or-path or in the config)")
    };
    if args.label_smoothing_factor != 0.0 {
        bail!("key `label_smoothing_factor`: not supported by the encoder models yet (use 0)");
    }
    let explicit = run.do_train.is_some() || run.do_eval.is_some() || run.do_predict.is_some();
    if token_task {
        return run_train_tokens(&a, &run, &args, &spec, explicit);
    }
    let problem = parse_problem(run.problem_type.as_deref())?;
    let splits = load_splits(&run, args.seed, problem)?;
    let (do_train, do_eval, do_predict) = if explicit {
        (run.do_train.unwrap_or(false), run.do_eval.unwrap_or(false), run.do_predict.unwrap_or(false))
    } else {
        (splits.train.is_some(), splits.validation.is_some(), splits.test.is_some())
    };
    if !(do_train || do_eval || do_predict) {
        bail!("nothing to do: give train_file (and validation_file/test_file or split), or do_eval/do_predict");
    }
    let need = |ok: bool, what: &str, key: &str| if ok { Ok(()) } else { Err(anyhow!("{what} needs `{key}`")) };
    need(!do_train || splits.train.is_some(), "do_train", "train_file")?;
    need(!do_eval || splits.validation.is_some(), "do_eval", "validation_file (or split)")?;
    need(!do_predict || splits.test.is_some(), "do_predict", "test_file (or split)")?;

    let (model_dir, tok, max_len) = tokenizer_for(&spec, run.max_seq_length)?;
    // Labels: from the training data (run_glue.py sorts them), else from the model's config.
    let labels = match &splits.train {
        // run_glue.py: one output, LABEL_0.
        Some(_) if do_train && problem == ProblemType::Regression => LabelMap::new(vec!["LABEL_0".into()])?,
        Some((path, ex)) if do_train => LabelMap::from_examples(ex).with_context(|| path.clone())?,
        _ => {
            let cfg = EncoderConfig::from_file(model_dir.join("config.json"))?;
            LabelMap::new(
                (0..cfg.num_labels).map(|i| cfg.id2label.get(&i).cloned().unwrap_or(format!("LABEL_{i}"))).collect(),
            )?
        }
    };
    let train_set = match (&splits.train, do_train) {
        (Some(s), true) => Some(encode(&tok, s, &labels, max_len, problem)?),
        _ => None,
    };
    let val_set = splits.validation.as_ref().map(|s| encode(&tok, s, &labels, max_len, problem)).transpose()?;
    let test_set = match (&splits.test, do_predict) {
        (Some(s), true) => Some(encode(&tok, s, &labels, max_len, problem)?),
        _ => None,
    };
    let mut model = EncoderClassifier::from_pretrained(
        &model_dir.display().to_string(),
        labels.names(),
        problem,
        args.adamw(),
        args.seed,
    )?;
    model.set_dropout(&run.dropout)?;
    // All inputs are checked; from here on files are written.
    let out = PathBuf::from(&args.output_dir);
    let collator = Collator { pad_token_id: tok.pad_token_id(), pad_to_multiple_of: Some(8) };
    let eval_bs = args.per_device_eval_batch_size;
    let names = labels.names().to_vec();
    if !model.newly_initialized.is_empty() && do_train {
        eprintln!(
            "Some weights were newly initialized from the model checkpoint at {spec}: {:?}; they are trained now.",
            model.newly_initialized
        );
    }

    let mut eval_metrics = None;
    if let Some(train_set) = &train_set {
        let sampler = Sampler::from_args(&args, train_set.len(), Some(train_set.lengths()));
        let source = SeqBatches { data: train_set, sampler, collator };
        let progress = match a.progress.as_str() {
            "lines" => ProgressMode::Lines,
            "off" => ProgressMode::Off,
            _ => ProgressMode::Auto,
        };
        let resume = run.resume_from_checkpoint.as_deref().map(|r| match r {
            "latest" | "true" => Resume::Latest,
            p => Resume::From(PathBuf::from(p)),
        });
        let val_ref = val_set.as_ref();
        let mut evaluator = |m: &mut EncoderClassifier| match val_ref {
            Some(v) => m.evaluate(v, eval_bs, collator).map(|e| e.metrics),
            None => Err(finetune_train::TrainError::Args("no validation data".into())),
        };
        let ev: Option<&mut dyn Evaluator<EncoderClassifier>> =
            if val_set.is_some() && (do_eval || args.eval_strategy != finetune_train::IntervalStrategy::No) {
                Some(&mut evaluator)
            } else {
                None
            };
        let output = train(&args, &mut model, &source, ev, &TrainOptions { resume, progress })?;
        // Trainer.save_model: the final (or best) model in output_dir itself.
        model.save_model(&out)?;
        print_metrics("train", &output.metrics);
        if let Some(mut m) = output.eval_metrics.filter(|_| do_eval) {
            m.insert("eval_samples".into(), val_set.as_ref().map_or(0, SeqDataset::len) as f64);
            save_metrics(&out, "eval", &m)?;
            eval_metrics = Some(m);
        }
    } else {
        std::fs::create_dir_all(&out).with_context(|| out.display().to_string())?;
    }
    if do_eval && eval_metrics.is_none() {
        if let Some(v) = &val_set {
            let (m, _) = evaluate_split(&mut model, v, eval_bs, collator, "eval")?;
            save_metrics(&out, "eval", &m)?;
            eval_metrics = Some(m);
        }
    }
    if let Some(m) = &eval_metrics {
        print_metrics("eval", m);
    }
    if let Some(t) = &test_set {
        let (m, ev) = evaluate_split(&mut model, t, eval_bs, collator, "test")?;
        if !matches!(t.targets, finetune_data::SeqTargets::None) {
            save_metrics(&out, "test", &m)?;
            print_metrics("test", &m);
        }
        // run_glue.py's predict_results file: index and predicted label name (regression: the value).
        let mut txt = String::from("index\tprediction\n");
        for i in 0..ev.predictions.len() {
            txt.push_str(&format!("{i}\t{}\n", prediction_text(&ev, i, &names, problem)));
        }
        finetune_train::write_atomic(&out.join("predict_results.txt"), txt.as_bytes())?;
        write_predictions(&out.join("predictions.jsonl"), &ev, &names, problem)?;
        if !ev.gold.is_empty() {
            println!("\n***** test classification_report *****");
            print!("{}", report_text(&ev.gold, &ev.predictions, &names)?);
        }
    }
    Ok(())
}

/// Loads a saved model for inference: model, tokenizer, label names, effective max length.
fn load_for_inference(spec: &str, max_seq_length: usize) -> Result<(EncoderClassifier, TextTokenizer, usize)> {
    let (dir, tok, max_len) = tokenizer_for(spec, max_seq_length)?;
    let cfg = EncoderConfig::from_file(dir.join("config.json"))?;
    let problem = cfg.problem_type.unwrap_or(ProblemType::SingleLabelClassification);
    let names: Vec<String> =
        (0..cfg.num_labels).map(|i| cfg.id2label.get(&i).cloned().unwrap_or(format!("LABEL_{i}"))).collect();
    let model = EncoderClassifier::from_pretrained(
        &dir.display().to_string(),
        &names,
        problem,
        finetune_train::TrainingArguments::default().adamw(),
        42,
    )?;
    if !model.newly_initialized.is_empty() {
        bail!(
            "{}: not a sequence-classification model (no trained head: {})",
            dir.display(),
            model.newly_initialized.join(", ")
        );
    }
    Ok((model, tok, max_len))
}

pub fn run_eval(a: EvalArgs) -> Result<()> {
    if token_model(&a.model)? {
        return run_eval_tokens(&a);
    }
    let (mut model, tok, max_len) = load_for_inference(&a.model, a.common.max_seq_length)?;
    let names = model.label_names();
    let labels = LabelMap::new(names.clone())?;
    let c = &a.common;
    let path = a.data.display().to_string();
    let opts = read_opts(
        &c.text_column_name,
        c.text_pair_column_name.as_deref(),
        Some(&c.label_column_name),
        c.label_separator.as_deref(),
    );
    let examples = read(&path, &opts)?;
    let problem = model.problem;
    let data = encode(&tok, &(path, examples), &labels, max_len, problem)?;
    let collator = Collator { pad_token_id: tok.pad_token_id(), pad_to_multiple_of: Some(8) };
    let (m, ev) = evaluate_split(&mut model, &data, c.batch_size.max(1), collator, "eval")?;
    let value = Value::Object(m.iter().map(|(k, v)| (k.clone(), metric_value(k, *v))).collect());
    if !a.json && !ev.gold.is_empty() {
        print!("{}", report_text(&ev.gold, &ev.predictions, &names)?);
        println!();
    }
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

pub fn run_predict(a: PredictArgs) -> Result<()> {
    if token_model(&a.model)? {
        return run_predict_tokens(&a);
    }
    let (mut model, tok, max_len) = load_for_inference(&a.model, a.common.max_seq_length)?;
    let names = model.label_names();
    let c = &a.common;
    let path = a.data.display().to_string();
    let examples = read(&path, &read_opts(&c.text_column_name, c.text_pair_column_name.as_deref(), None, None))?;
    let data = SeqDataset::encode(&tok, &examples, None, SeqTask::Unlabelled, Some(max_len), &path)?;
    let collator = Collator { pad_token_id: tok.pad_token_id(), pad_to_multiple_of: Some(8) };
    let ev = model.evaluate(&data, c.batch_size.max(1), collator)?;
    write_predictions(&a.out, &ev, &names, model.problem)?;
    eprintln!("{} predictions written to {}", ev.predictions.len(), a.out.display());
    Ok(())
}

// ---- token classification (run_ner.py) ----

/// A CoNLL file's sentences; `.txt` and other extensions are read as CoNLL too.
pub(crate) fn read_conll(path: &str) -> Result<Vec<TokenExample>> {
    let opts = ReadOptions { format: Some(Format::Conll), ..Default::default() };
    let ds = finetune_data::read_tokens(Path::new(path), &opts)?;
    if ds.sentences.is_empty() {
        bail!("{path}: no sentences");
    }
    Ok(ds.sentences)
}

pub(crate) type TokenSplit = (String, Vec<TokenExample>);

fn load_token_splits(run: &RunConfig, seed: u64) -> Result<[Option<TokenSplit>; 3]> {
    if let Some(f) = run.format.as_deref() {
        if Format::parse(f).map_err(|e| anyhow!("key `format`: {e}"))? != Format::Conll {
            bail!("key `format`: token-classification reads CoNLL files, not {f:?}");
        }
    }
    let read_opt = |f: &Option<String>| -> Result<Option<TokenSplit>> {
        f.as_ref().map(|p| Ok((p.clone(), read_conll(p)?))).transpose()
    };
    let mut s = [read_opt(&run.train_file)?, read_opt(&run.validation_file)?, read_opt(&run.test_file)?];
    if let Some(spec) = &run.split {
        if s[1].is_some() || s[2].is_some() {
            bail!("key `split`: splits train_file only when neither validation_file nor test_file is given");
        }
        let Some((path, sentences)) = s[0].take() else { bail!("key `split`: needs train_file") };
        let spec = SplitSpec::parse(spec).map_err(|e| anyhow!("key `split`: {e}"))?;
        // Sentences have no single class to stratify by: a seeded random split.
        let parts = random_split(sentences.len(), &spec, seed);
        for (slot, ix) in s.iter_mut().zip(&parts) {
            let picked: Vec<TokenExample> = ix.iter().map(|&i| sentences[i].clone()).collect();
            *slot = (!picked.is_empty()).then(|| (path.clone(), picked));
        }
    }
    Ok(s)
}

pub(crate) fn encode_tokens(
    tok: &TextTokenizer,
    split: &TokenSplit,
    labels: &LabelMap,
    label_all_tokens: bool,
    max: usize,
) -> Result<TokenDatasetEncoded> {
    Ok(TokenDatasetEncoded::encode(tok, &split.1, labels, label_all_tokens, Some(max), &split.0)?)
}

/// Evaluates a token-classification set: HF-prefixed metrics (runtime, `{prefix}_samples`) and word tags.
fn evaluate_token_split(
    model: &mut EncoderClassifier,
    data: &TokenDatasetEncoded,
    labels: &LabelMap,
    batch_size: usize,
    collator: Collator,
    prefix: &str,
) -> Result<(BTreeMap<String, f64>, finetune_train::TokenEvaluation)> {
    let start = Instant::now();
    let ev = model.evaluate_tokens(data, labels, batch_size, collator, true)?;
    let mut m = prefixed(prefix, &ev.metrics.metrics);
    let runtime = (start.elapsed().as_secs_f64() * 1e4).round() / 1e4;
    m.insert(format!("{prefix}_runtime"), runtime);
    if runtime > 0.0 {
        m.insert(format!("{prefix}_samples_per_second"), (data.len() as f64 / runtime * 1e3).round() / 1e3);
    }
    m.insert(format!("{prefix}_samples"), data.len() as f64);
    Ok((m, ev))
}

/// seqeval's `classification_report` (default mode) of word-level tags, 4 digits as run_ner.py users print it.
fn token_report_text(sentences: &[TokenExample], predicted: &[Vec<String>]) -> Result<String> {
    let gold: Vec<&[String]> = sentences.iter().map(|s| s.tags.as_slice()).collect();
    let gold: Vec<Vec<&str>> = gold.iter().map(|t| t.iter().map(String::as_str).collect()).collect();
    let opts = finetune_metrics::sequence::Options::default();
    let r = finetune_metrics::sequence::classification_report(&gold, predicted, &opts)?;
    Ok(r.text(4)?)
}

/// predictions.jsonl: `{"tokens", "tags"}` per sentence; predictions.txt (run_ner.py): the tags of a sentence
/// joined by spaces, one sentence a line.
fn write_token_predictions(
    jsonl: &Path,
    txt: Option<&Path>,
    sentences: &[TokenExample],
    tags: &[Vec<String>],
) -> Result<()> {
    let mut j = String::new();
    let mut t = String::new();
    for (s, tg) in sentences.iter().zip(tags) {
        j.push_str(&json!({ "tokens": s.tokens, "tags": tg }).to_string());
        j.push('\n');
        t.push_str(&tg.join(" "));
        t.push('\n');
    }
    if let Some(dir) = jsonl.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    }
    finetune_train::write_atomic(jsonl, j.as_bytes())?;
    if let Some(txt) = txt {
        finetune_train::write_atomic(txt, t.as_bytes())?;
    }
    Ok(())
}

fn run_train_tokens(
    a: &TrainArgs,
    run: &RunConfig,
    args: &TrainingArguments,
    spec: &str,
    explicit: bool,
) -> Result<()> {
    let [train_split, val_split, test_split] = load_token_splits(run, args.seed)?;
    let (do_train, do_eval, do_predict) = if explicit {
        (run.do_train.unwrap_or(false), run.do_eval.unwrap_or(false), run.do_predict.unwrap_or(false))
    } else {
        (train_split.is_some(), val_split.is_some(), test_split.is_some())
    };
    if !(do_train || do_eval || do_predict) {
        bail!("nothing to do: give train_file (and validation_file/test_file or split), or do_eval/do_predict");
    }
    let need = |ok: bool, what: &str, key: &str| if ok { Ok(()) } else { Err(anyhow!("{what} needs `{key}`")) };
    need(!do_train || train_split.is_some(), "do_train", "train_file")?;
    need(!do_eval || val_split.is_some(), "do_eval", "validation_file (or split)")?;
    need(!do_predict || test_split.is_some(), "do_predict", "test_file (or split)")?;

    let (model_dir, tok, max_len) = tokenizer_for(spec, run.max_seq_length)?;
    // Labels: run_ner.py's sorted unique tags of the training data, else the model's own.
    let labels = match &train_split {
        Some((path, s)) if do_train => LabelMap::from_tags(s).with_context(|| path.clone())?,
        _ => LabelMap::new(config_label_names(&EncoderConfig::from_file(model_dir.join("config.json"))?))?,
    };
    let lat = run.label_all_tokens;
    let train_set = match (&train_split, do_train) {
        (Some(s), true) => Some(encode_tokens(&tok, s, &labels, lat, max_len)?),
        _ => None,
    };
    let val_set = val_split.as_ref().map(|s| encode_tokens(&tok, s, &labels, lat, max_len)).transpose()?;
    let test_set = match (&test_split, do_predict) {
        (Some(s), true) => Some(encode_tokens(&tok, s, &labels, lat, max_len)?),
        _ => None,
    };
    let mut model = EncoderClassifier::from_pretrained_for(
        &model_dir.display().to_string(),
        labels.names(),
        ProblemType::SingleLabelClassification,
        Task::TokenClassification,
        args.adamw(),
        args.seed,
    )?;
    model.set_dropout(&run.dropout)?;
    if !do_train && !model.newly_initialized.is_empty() {
        bail!("{spec}: not a token-classification model (no trained head: {})", model.newly_initialized.join(", "));
    }
    // All inputs are checked; from here on files are written.
    let out = PathBuf::from(&args.output_dir);
    let collator = Collator { pad_token_id: tok.pad_token_id(), pad_to_multiple_of: Some(8) };
    let eval_bs = args.per_device_eval_batch_size;
    if !model.newly_initialized.is_empty() && do_train {
        eprintln!(
            "Some weights were newly initialized from the model checkpoint at {spec}: {:?}; they are trained now.",
            model.newly_initialized
        );
    }
    let mut eval_metrics = None;
    if let Some(train_set) = &train_set {
        let sampler = Sampler::from_args(args, train_set.len(), Some(train_set.lengths()));
        let source = TokenBatches { data: train_set, sampler, collator };
        let progress = match a.progress.as_str() {
            "lines" => ProgressMode::Lines,
            "off" => ProgressMode::Off,
            _ => ProgressMode::Auto,
        };
        let resume = run.resume_from_checkpoint.as_deref().map(|r| match r {
            "latest" | "true" => Resume::Latest,
            p => Resume::From(PathBuf::from(p)),
        });
        let (val_ref, labels_ref) = (val_set.as_ref(), &labels);
        let mut evaluator = |m: &mut EncoderClassifier| match val_ref {
            Some(v) => m.evaluate_tokens(v, labels_ref, eval_bs, collator, true).map(|e| e.metrics),
            None => Err(finetune_train::TrainError::Args("no validation data".into())),
        };
        let ev: Option<&mut dyn Evaluator<EncoderClassifier>> =
            if val_set.is_some() && (do_eval || args.eval_strategy != finetune_train::IntervalStrategy::No) {
                Some(&mut evaluator)
            } else {
                None
            };
        let output = train(args, &mut model, &source, ev, &TrainOptions { resume, progress })?;
        model.save_model(&out)?;
        print_metrics("train", &output.metrics);
        if let Some(mut m) = output.eval_metrics.filter(|_| do_eval) {
            m.insert("eval_samples".into(), val_set.as_ref().map_or(0, TokenDatasetEncoded::len) as f64);
            save_metrics(&out, "eval", &m)?;
            eval_metrics = Some(m);
        }
    } else {
        std::fs::create_dir_all(&out).with_context(|| out.display().to_string())?;
    }
    if do_eval && eval_metrics.is_none() {
        if let Some(v) = &val_set {
            let (m, _) = evaluate_token_split(&mut model, v, &labels, eval_bs, collator, "eval")?;
            save_metrics(&out, "eval", &m)?;
            eval_metrics = Some(m);
        }
    }
    if let Some(m) = &eval_metrics {
        print_metrics("eval", m);
    }
    if let (Some(t), Some((_, sentences))) = (&test_set, &test_split) {
        let (m, ev) = evaluate_token_split(&mut model, t, &labels, eval_bs, collator, "test")?;
        save_metrics(&out, "test", &m)?;
        print_metrics("test", &m);
        write_token_predictions(
            &out.join("predictions.jsonl"),
            Some(&out.join("predictions.txt")),
            sentences,
            &ev.word_tags,
        )?;
        println!("\n***** test classification_report (seqeval, words) *****");
        print!("{}", token_report_text(sentences, &ev.word_tags)?);
    }
    Ok(())
}

fn config_label_names(cfg: &EncoderConfig) -> Vec<String> {
    (0..cfg.num_labels).map(|i| cfg.id2label.get(&i).cloned().unwrap_or(format!("LABEL_{i}"))).collect()
}

/// Whether a saved model's `architectures` names a token-classification head.
fn is_token_model(cfg: &EncoderConfig) -> bool {
    cfg.architectures.iter().any(|a| a.ends_with("ForTokenClassification"))
}

/// A saved token-classification model, its tokenizer, label map and effective max length.
fn load_token_model(spec: &str, max_seq_length: usize) -> Result<(EncoderClassifier, TextTokenizer, LabelMap, usize)> {
    let (dir, tok, max_len) = tokenizer_for(spec, max_seq_length)?;
    let cfg = EncoderConfig::from_file(dir.join("config.json"))?;
    let names = config_label_names(&cfg);
    let model = EncoderClassifier::from_pretrained_for(
        &dir.display().to_string(),
        &names,
        ProblemType::SingleLabelClassification,
        Task::TokenClassification,
        TrainingArguments::default().adamw(),
        42,
    )?;
    if !model.newly_initialized.is_empty() {
        bail!(
            "{}: not a token-classification model (no trained head: {})",
            dir.display(),
            model.newly_initialized.join(", ")
        );
    }
    Ok((model, tok, LabelMap::new(names)?, max_len))
}

fn run_eval_tokens(a: &EvalArgs) -> Result<()> {
    let c = &a.common;
    let (mut model, tok, labels, max_len) = load_token_model(&a.model, c.max_seq_length)?;
    let path = a.data.display().to_string();
    let split = (path.clone(), read_conll(&path)?);
    let data = encode_tokens(&tok, &split, &labels, c.label_all_tokens, max_len)?;
    let collator = Collator { pad_token_id: tok.pad_token_id(), pad_to_multiple_of: Some(8) };
    let (m, ev) = evaluate_token_split(&mut model, &data, &labels, c.batch_size.max(1), collator, "eval")?;
    let value = Value::Object(m.iter().map(|(k, v)| (k.clone(), metric_value(k, *v))).collect());
    if !a.json {
        print!("{}", token_report_text(&split.1, &ev.word_tags)?);
        println!();
    }
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

fn run_predict_tokens(a: &PredictArgs) -> Result<()> {
    let c = &a.common;
    let (mut model, tok, labels, max_len) = load_token_model(&a.model, c.max_seq_length)?;
    let path = a.data.display().to_string();
    let mut sentences = read_conll(&path)?;
    // The tag column is not read for prediction: any tag (known or not) is replaced by a placeholder.
    let placeholder = labels.names().first().cloned().unwrap_or_default();
    for s in &mut sentences {
        s.tags = vec![placeholder.clone(); s.tokens.len()];
    }
    let data = encode_tokens(&tok, &(path, sentences.clone()), &labels, false, max_len)?;
    let collator = Collator { pad_token_id: tok.pad_token_id(), pad_to_multiple_of: Some(8) };
    let ev = model.evaluate_tokens(&data, &labels, c.batch_size.max(1), collator, false)?;
    write_token_predictions(&a.out, None, &sentences, &ev.word_tags)?;
    eprintln!("{} sentences tagged, written to {}", sentences.len(), a.out.display());
    Ok(())
}

/// Whether `spec` is a saved token-classification model (by its config.json `architectures`).
fn token_model(spec: &str) -> Result<bool> {
    let dir = resolve_model_dir(spec)?;
    let dir = if dir.is_file() { dir.parent().map(Path::to_path_buf).unwrap_or_default() } else { dir };
    Ok(is_token_model(&EncoderConfig::from_file(dir.join("config.json"))?))
}
