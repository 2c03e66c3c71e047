//! `finetune train`, `finetune eval`, `finetune predict`: sequence classification with a BERT-family encoder, as
//! `transformers/examples/pytorch/text-classification/run_glue.py` runs it, token classification (NER) on
//! CoNLL files as `transformers/examples/pytorch/token-classification/run_ner.py` runs it, and masked-LM domain
//! adaptation as `transformers/examples/pytorch/language-modeling/run_mlm.py` runs it. Argument parsing and glue
//! only; the work is done by `finetune_train::workflow`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use finetune_train::workflow::{self, InferOptions, RunOptions};
pub(crate) use finetune_train::workflow::{
    apply_set, closest, load_config, one_line, print_metrics, save_metrics, training_keys, RUN_KEYS,
};
use finetune_train::{ProgressMode, TrainingArguments};
use serde_json::Value;

const EXAMPLE: &str = "\
Examples:
  finetune train --config examples/sentiment.toml
  finetune train --config examples/ner.toml
  finetune train --config examples/mlm.toml                     # masked-LM domain adaptation (fill-mask)
  finetune train --config examples/spam.toml --progress lines
  finetune train --config examples/sentiment.toml --resume-from-checkpoint latest
  finetune train --config examples/sentiment.toml --set max_steps=20 --set output_dir=bench-out/quick
  finetune train --model-name-or-path assets/all-MiniLM-L6-v2 --train-file data.csv --split 80/10/10 \\
      --output-dir bench-out/run --num-train-epochs 2 --learning-rate 5e-5
  finetune eval --model bench-out/run --data test.csv
  finetune predict --model bench-out/run --data new.csv --out preds.jsonl";

/// `finetune train`: fine-tune an encoder for sequence classification, token classification (NER) or masked
/// language modelling (`task = "fill-mask"`).
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
    /// What to train: sequence-classification, token-classification (NER) or fill-mask (masked-LM domain
    /// adaptation) [config: task; default: sequence-classification].
    #[arg(long, value_parser = ["sequence-classification", "token-classification", "fill-mask"])]
    task: Option<String>,
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
    /// Matmuls in bfloat16 with f32 accumulation (AMX or AVX512-BF16), as `bf16 = true` in training.
    #[arg(long)]
    bf16: bool,
}

impl InferArgs {
    fn options(&self) -> InferOptions {
        InferOptions {
            text_column_name: self.text_column_name.clone(),
            text_pair_column_name: self.text_pair_column_name.clone(),
            label_column_name: self.label_column_name.clone(),
            label_separator: self.label_separator.clone(),
            max_seq_length: self.max_seq_length,
            batch_size: self.batch_size,
            label_all_tokens: self.label_all_tokens,
            bf16: self.bf16,
        }
    }
}

pub(crate) fn progress_mode(s: &str) -> ProgressMode {
    match s {
        "lines" => ProgressMode::Lines,
        "off" => ProgressMode::Off,
        _ => ProgressMode::Auto,
    }
}

/// The run keys and TrainingArguments of `finetune train`'s run file, flags and `--set`s, finalized.
pub(crate) fn train_config(a: &TrainArgs) -> Result<(workflow::RunConfig, TrainingArguments)> {
    let (mut run, mut args) = load_config(a.config.as_deref())?;
    let mut flags: Vec<String> = Vec::new();
    let mut flag = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            flags.push(format!("{k}={v}"));
        }
    };
    flag("model_name_or_path", a.model_name_or_path.clone());
    flag("task", a.task.clone());
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
    Ok((run, args))
}

pub fn run_train(a: TrainArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let (run, args) = train_config(&a)?;
    let opts = RunOptions { progress: progress_mode(&a.progress), print: true, on_evaluate: None };
    let r = workflow::train(&run, &args, &opts)?;
    if !finetune_train::dist::is_writer() {
        return Ok(());
    }
    crate::report_cmd::finish_run(&r.output_dir, crate::report_cmd::run_meta(&run, &args, "train"), &args, started)
}

pub fn run_eval(a: EvalArgs) -> Result<()> {
    let r = workflow::evaluate(&a.model, &a.data, &a.common.options())?;
    let value = Value::Object(r.metrics.iter().map(|(k, v)| (k.clone(), workflow::metric_value(k, *v))).collect());
    if let Some(report) = r.report.as_ref().filter(|_| !a.json) {
        print!("{report}");
        println!();
    }
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

pub fn run_predict(a: PredictArgs) -> Result<()> {
    let r = workflow::predict(&a.model, &a.data, &a.out, &a.common.options())?;
    if r.token_classification {
        eprintln!("{} sentences tagged, written to {}", r.count, a.out.display());
    } else {
        eprintln!("{} predictions written to {}", r.count, a.out.display());
    }
    Ok(())
}
