//! `finetune cv`: k-fold cross-validation of a `finetune train` run over its training file. Each fold trains a
//! fresh model from `model_name_or_path` with the run's TrainingArguments (output in `output_dir/fold-K/`, HF
//! layout) and evaluates it on the held-out fold; the per-fold metrics, their mean and sample standard deviation
//! (ddof=1, as `numpy.std(ddof=1)` and pandas) go to the terminal and to `output_dir/cv_results.json`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use finetune_train::workflow::{self, RunOptions};

use crate::train_cmd;

const EXAMPLE: &str = "\
Examples:
  finetune cv --config examples/spam.toml --folds 5 --output-dir bench-out/spam-cv
  finetune cv --config examples/ner.toml --folds 3 --set num_train_epochs=1
  finetune cv --model-name-or-path assets/all-MiniLM-L6-v2 --train-file reviews.csv --output-dir bench-out/cv \\
      --folds 10 --set learning_rate=3e-5 --set max_steps=200

Output (output_dir): fold-1/ ... fold-K/ (each a `finetune train` output: checkpoints, final model,
eval_results.json on the held-out fold), cv_results.json: {\"folds\": [{\"fold\": 1, \"eval_accuracy\": ...}, ...],
\"mean\": {...}, \"std\": {...}} (sample std, ddof=1, as numpy.std(ddof=1) and pandas).
Folds: stratified by label for single-label classification (each fold holds every class within one example of
its share), seeded random otherwise (multi-label, regression, token classification); the same `seed` gives the
same folds. split, validation_file and test_file are not used: every example is held out exactly once. The
held-out fold is also what eval_strategy evaluates during training (and what load_best_model_at_end selects on).";

/// `finetune cv`: k-fold cross-validation of a training run.
#[derive(Args, Debug)]
#[command(after_help = EXAMPLE)]
pub struct CvArgs {
    /// TOML run file, as for `finetune train` (run keys and TrainingArguments; see `finetune train --help`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Number of folds K (2 <= K <= number of examples).
    #[arg(long, default_value_t = 5)]
    folds: usize,
    /// Override any key, e.g. --set learning_rate=3e-5 (repeatable; applied last, in order).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Model directory, hub cache folder or model id [config: model_name_or_path].
    #[arg(long)]
    model_name_or_path: Option<String>,
    /// Labelled data to cross-validate: CSV/TSV/JSONL, CoNLL for token-classification [config: train_file].
    #[arg(long)]
    train_file: Option<String>,
    /// Where fold-K/ and cv_results.json go [config: output_dir; default: trainer_output].
    #[arg(long)]
    output_dir: Option<String>,
    /// Seed of the folds, initialisation, data order and dropout [config: seed; default: 42].
    #[arg(long)]
    seed: Option<u64>,
    /// Replace checkpoints of an earlier run in the fold directories [config: overwrite_output_dir; default: false].
    #[arg(long)]
    overwrite_output_dir: bool,
    /// Progress display: auto (bar on a terminal), lines, off.
    #[arg(long, default_value = "auto", value_parser = ["auto", "lines", "off"])]
    progress: String,
}

pub fn run_cv(a: CvArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let (mut run, mut args) = train_cmd::load_config(a.config.as_deref())?;
    let mut flags: Vec<String> = Vec::new();
    let mut flag = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            flags.push(format!("{k}={v}"));
        }
    };
    flag("model_name_or_path", a.model_name_or_path.clone());
    flag("train_file", a.train_file.clone());
    flag("output_dir", a.output_dir.clone());
    flag("seed", a.seed.map(|v| v.to_string()));
    flag("overwrite_output_dir", a.overwrite_output_dir.then(|| "true".to_string()));
    for s in flags.iter().chain(&a.set) {
        train_cmd::apply_set(&mut run, &mut args, s)?;
    }
    args.finalize()?;
    let opts = RunOptions { progress: train_cmd::progress_mode(&a.progress), print: true, on_evaluate: None };
    let r = workflow::cross_validate(&run, &args, a.folds, &opts)?;
    println!();
    print!("{}", r.table());
    println!("\n{}-fold cross-validation results written to {}", r.folds.len(), r.results_file.display());
    let out = std::path::PathBuf::from(&args.output_dir);
    crate::report_cmd::finish_run(&out, crate::report_cmd::run_meta(&run, &args, "cv"), &args, started)
}
