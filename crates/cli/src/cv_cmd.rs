//! `finetune cv`: k-fold cross-validation of a `finetune train` run over its training file. Each fold trains a
//! fresh model from `model_name_or_path` with the run's TrainingArguments (output in `output_dir/fold-K/`, HF
//! layout) and evaluates it on the held-out fold; the per-fold metrics, their mean and sample standard deviation
//! (ddof=1, as `numpy.std(ddof=1)` and pandas) go to the terminal and to `output_dir/cv_results.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use finetune_data::split::{stratified_kfold, Fold};
use finetune_data::{Collator, Format, LabelMap, SeqDataset, SeqTargets, TokenDatasetEncoded, Tokenize};
use finetune_metrics::ranking::np_sum;
use finetune_models::bert::Task;
use finetune_models::config::ProblemType;
use finetune_train::{
    train, EncoderClassifier, Evaluator, ProgressMode, Sampler, SeqBatches, TokenBatches, TrainOptions, TrainableModel,
    TrainingArguments,
};
use serde_json::{json, Map, Value};

use crate::train_cmd::{self, RunConfig};

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

/// The training file, encoded once; folds are index subsets of it.
enum Data {
    Seq { data: SeqDataset, problem: ProblemType, strata: Vec<String> },
    Tokens { data: TokenDatasetEncoded, labels: LabelMap },
}

pub fn run_cv(a: CvArgs) -> Result<()> {
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
    let token_task = match run.task.as_str() {
        "sequence-classification" => false,
        "token-classification" => true,
        t => bail!("key `task`: {t:?} is not supported; use \"sequence-classification\" or \"token-classification\""),
    };
    let Some(spec) = run.model_name_or_path.clone() else {
        bail!("key `model_name_or_path` is required (--model-name-or-path or in the config)")
    };
    let Some(train_file) = run.train_file.clone() else {
        bail!("key `train_file` is required (--train-file or in the config): the data to cross-validate")
    };
    if args.label_smoothing_factor != 0.0 {
        bail!("key `label_smoothing_factor`: not supported by the encoder models yet (use 0)");
    }
    if run.resume_from_checkpoint.is_some() {
        bail!("key `resume_from_checkpoint`: cv trains every fold from the start; resume a single fold with `finetune train`");
    }
    let ignored: Vec<&str> = [
        ("split", run.split.is_some()),
        ("validation_file", run.validation_file.is_some()),
        ("test_file", run.test_file.is_some()),
    ]
    .iter()
    .filter(|(_, set)| *set)
    .map(|(k, _)| *k)
    .collect();

    let (model_dir, tok, max_len) = train_cmd::tokenizer_for(&spec, run.max_seq_length)?;
    let (data, names) = if token_task {
        load_tokens(&run, &train_file, &tok, max_len)?
    } else {
        load_seq(&run, &train_file, &tok, max_len)?
    };
    let n = match &data {
        Data::Seq { data, .. } => data.len(),
        Data::Tokens { data, .. } => data.len(),
    };
    // Stratified for single-label classification; one stratum (a seeded random k-fold) otherwise.
    let strata = match &data {
        Data::Seq { strata, problem: ProblemType::SingleLabelClassification, .. } => strata.clone(),
        _ => vec![String::new(); n],
    };
    let folds = stratified_kfold(&strata, a.folds, args.seed).map_err(|e| anyhow!("--folds {}: {e}", a.folds))?;

    // All inputs are checked; from here on files are written.
    if !ignored.is_empty() {
        eprintln!("cv: not using {} (each fold's held-out part is its evaluation set)", ignored.join(", "));
    }
    let out = PathBuf::from(&args.output_dir);
    let progress = match a.progress.as_str() {
        "lines" => ProgressMode::Lines,
        "off" => ProgressMode::Off,
        _ => ProgressMode::Auto,
    };
    let collator = Collator { pad_token_id: tok.pad_token_id(), pad_to_multiple_of: Some(8) };
    let model_path = model_dir.display().to_string();
    let mut results: Vec<BTreeMap<String, f64>> = Vec::new();
    for (i, fold) in folds.iter().enumerate() {
        let k = i + 1;
        let mut fa = args.clone();
        let fold_dir = out.join(format!("fold-{k}"));
        fa.output_dir = fold_dir.display().to_string();
        fa.finalize()?;
        eprintln!(
            "***** fold {k}/{} : {} training, {} held out ({}) *****",
            folds.len(),
            fold.train.len(),
            fold.test.len(),
            fold_dir.display()
        );
        let m = run_fold(&data, &names, fold, &fa, &model_path, collator, progress, &run.dropout)
            .with_context(|| format!("fold {k}"))?;
        train_cmd::print_metrics(&format!("fold {k} eval"), &m);
        results.push(m);
    }

    let keys = summary_keys(&results);
    let mut mean = Map::new();
    let mut std = Map::new();
    for key in &keys {
        let xs: Vec<f64> = results.iter().filter_map(|m| m.get(key).copied()).collect();
        let (mu, sd) = mean_std(&xs);
        mean.insert(key.clone(), json!(mu));
        std.insert(key.clone(), json!(sd));
    }
    let fold_values: Vec<Value> = results
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut o = Map::new();
            o.insert("fold".into(), json!(i + 1));
            for (k, v) in m {
                o.insert(k.clone(), train_cmd::metric_value(k, *v));
            }
            Value::Object(o)
        })
        .collect();
    std::fs::create_dir_all(&out).with_context(|| out.display().to_string())?;
    let path = out.join("cv_results.json");
    train_cmd::write_json_file(&path, &json!({ "folds": fold_values, "mean": mean, "std": std }))?;
    println!();
    print!("{}", table(&keys, &results));
    println!("\n{}-fold cross-validation results written to {}", folds.len(), path.display());
    Ok(())
}

/// Reads and encodes a sequence-classification training file; label names from the whole file (sorted, as
/// run_glue.py does), so every fold's model has the same head.
fn load_seq(
    run: &RunConfig,
    path: &str,
    tok: &finetune_models::tokenizer::TextTokenizer,
    max_len: usize,
) -> Result<(Data, Vec<String>)> {
    let problem = train_cmd::parse_problem(run.problem_type.as_deref())?;
    let mut opts = train_cmd::read_opts(
        &run.text_column_name,
        run.text_pair_column_name.as_deref(),
        Some(&run.label_column_name),
        run.label_separator.as_deref(),
    );
    opts.format = run.format.as_deref().map(Format::parse).transpose().map_err(|e| anyhow!("key `format`: {e}"))?;
    let examples = train_cmd::read(path, &opts)?;
    if let Some(i) = examples.iter().position(|e| e.label.is_none()) {
        bail!("{path}: example {} has no label; cross-validation needs labelled data", i + 1);
    }
    let labels = if problem == ProblemType::Regression {
        LabelMap::new(vec!["LABEL_0".into()])?
    } else {
        LabelMap::from_examples(&examples).with_context(|| path.to_string())?
    };
    let strata = examples.iter().map(|e| e.label.as_ref().map(|l| l.strata_key()).unwrap_or_default()).collect();
    let data = train_cmd::encode(tok, &(path.to_string(), examples), &labels, max_len, problem)?;
    Ok((Data::Seq { data, problem, strata }, labels.names().to_vec()))
}

/// Reads and encodes a CoNLL training file; tags from the whole file (sorted, as run_ner.py does).
fn load_tokens(
    run: &RunConfig,
    path: &str,
    tok: &finetune_models::tokenizer::TextTokenizer,
    max_len: usize,
) -> Result<(Data, Vec<String>)> {
    if let Some(f) = run.format.as_deref() {
        if Format::parse(f).map_err(|e| anyhow!("key `format`: {e}"))? != Format::Conll {
            bail!("key `format`: token-classification reads CoNLL files, not {f:?}");
        }
    }
    let sentences = train_cmd::read_conll(path)?;
    let labels = LabelMap::from_tags(&sentences).with_context(|| path.to_string())?;
    let split = (path.to_string(), sentences);
    let data = train_cmd::encode_tokens(tok, &split, &labels, run.label_all_tokens, max_len)?;
    let names = labels.names().to_vec();
    Ok((Data::Tokens { data, labels }, names))
}

/// Trains a fresh model on `fold.train` and evaluates it on `fold.test`; returns `train_loss`, `eval_*` metrics
/// and sample counts.
#[allow(clippy::too_many_arguments)]
fn run_fold(
    data: &Data,
    names: &[String],
    fold: &Fold,
    args: &TrainingArguments,
    model_path: &str,
    collator: Collator,
    progress: ProgressMode,
    dropout: &finetune_train::DropoutOverrides,
) -> Result<BTreeMap<String, f64>> {
    let options = TrainOptions { resume: None, progress };
    let eval_bs = args.per_device_eval_batch_size;
    let out = PathBuf::from(&args.output_dir);
    let (output, model, eval_samples) = match data {
        Data::Seq { data, problem, .. } => {
            let (train_set, held_out) = (subset_seq(data, &fold.train), subset_seq(data, &fold.test));
            let mut model = EncoderClassifier::from_pretrained(model_path, names, *problem, args.adamw(), args.seed)?;
            model.set_dropout(dropout)?;
            let sampler = Sampler::from_args(args, train_set.len(), Some(train_set.lengths()));
            let source = SeqBatches { data: &train_set, sampler, collator };
            let mut evaluator = |m: &mut EncoderClassifier| m.evaluate(&held_out, eval_bs, collator).map(|e| e.metrics);
            let ev: Option<&mut dyn Evaluator<EncoderClassifier>> = Some(&mut evaluator);
            let output = train(args, &mut model, &source, ev, &options)?;
            (output, model, held_out.len())
        }
        Data::Tokens { data, labels } => {
            let (train_set, held_out) = (subset_tokens(data, &fold.train), subset_tokens(data, &fold.test));
            let mut model = EncoderClassifier::from_pretrained_for(
                model_path,
                names,
                ProblemType::SingleLabelClassification,
                Task::TokenClassification,
                args.adamw(),
                args.seed,
            )?;
            model.set_dropout(dropout)?;
            let sampler = Sampler::from_args(args, train_set.len(), Some(train_set.lengths()));
            let source = TokenBatches { data: &train_set, sampler, collator };
            let mut evaluator = |m: &mut EncoderClassifier| {
                m.evaluate_tokens(&held_out, labels, eval_bs, collator, true).map(|e| e.metrics)
            };
            let ev: Option<&mut dyn Evaluator<EncoderClassifier>> = Some(&mut evaluator);
            let output = train(args, &mut model, &source, ev, &options)?;
            (output, model, held_out.len())
        }
    };
    // Trainer.save_model: the fold's final (or best) model in its directory.
    model.save_model(&out)?;
    let mut m = output.eval_metrics.unwrap_or_default();
    m.insert("eval_samples".into(), eval_samples as f64);
    train_cmd::save_metrics(&out, "eval", &m)?;
    m.insert("train_samples".into(), fold.train.len() as f64);
    m.insert("train_loss".into(), output.training_loss);
    m.remove("epoch");
    Ok(m)
}

/// The examples `ix` of an encoded sequence dataset, in that order.
fn subset_seq(d: &SeqDataset, ix: &[usize]) -> SeqDataset {
    let encodings: Vec<_> = ix.iter().map(|&i| d.encodings[i].clone()).collect();
    let targets = match &d.targets {
        SeqTargets::None => SeqTargets::None,
        SeqTargets::Class(v) => SeqTargets::Class(ix.iter().map(|&i| v[i]).collect()),
        SeqTargets::Regression(v) => SeqTargets::Regression(ix.iter().map(|&i| v[i]).collect()),
        SeqTargets::MultiHot { num_labels, values } => SeqTargets::MultiHot {
            num_labels: *num_labels,
            values: ix.iter().flat_map(|&i| values[i * num_labels..(i + 1) * num_labels].iter().copied()).collect(),
        },
    };
    let truncated = encodings.iter().filter(|e| e.truncated).count();
    SeqDataset { encodings, targets, truncated }
}

/// The sentences `ix` of an encoded token-classification dataset, in that order.
fn subset_tokens(d: &TokenDatasetEncoded, ix: &[usize]) -> TokenDatasetEncoded {
    let encodings: Vec<_> = ix.iter().map(|&i| d.encodings[i].clone()).collect();
    let truncated_sentences = encodings.iter().filter(|e| e.truncated).count();
    TokenDatasetEncoded {
        encodings,
        labels: ix.iter().map(|&i| d.labels[i].clone()).collect(),
        word_counts: ix.iter().map(|&i| d.word_counts[i]).collect(),
        truncated_sentences,
        // Per-sentence counts are not kept; these two only feed warnings at encoding time.
        truncated_words: 0,
        empty_words: 0,
    }
}

/// Metrics summarised across folds: quality metrics and train_loss, not speed or sample counts.
fn summary_keys(results: &[BTreeMap<String, f64>]) -> Vec<String> {
    let all: BTreeSet<&String> = results.iter().flat_map(BTreeMap::keys).collect();
    let skip = |k: &str| k.ends_with("_runtime") || k.ends_with("_per_second") || k.ends_with("_samples");
    let mut keys: Vec<String> = all.into_iter().filter(|k| !skip(k)).cloned().collect();
    // eval_* first (what cross-validation is for), then train_loss.
    keys.sort_by_key(|k| (!k.starts_with("eval_"), k.clone()));
    keys
}

/// Mean and sample standard deviation (ddof=1; NaN for a single value) with numpy's pairwise sum, so they equal
/// `numpy.mean` and `numpy.std(ddof=1)` (and pandas' `.std()`) bit for bit.
fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = np_sum(xs) / n;
    let sq: Vec<f64> = xs.iter().map(|&x| (x - mean) * (x - mean)).collect();
    (mean, (np_sum(&sq) / (n - 1.0)).sqrt())
}

/// One row per metric: its value in each fold, then `mean ± std`.
fn table(keys: &[String], results: &[BTreeMap<String, f64>]) -> String {
    let width = keys.iter().map(String::len).max().unwrap_or(6).max(6);
    let mut s = format!("{:<width$}", "metric");
    for k in 1..=results.len() {
        s.push_str(&format!("  {:>8}", format!("fold-{k}")));
    }
    s.push_str(&format!("  {:>17}\n", "mean ± std"));
    for key in keys {
        s.push_str(&format!("{key:<width$}"));
        let xs: Vec<f64> = results.iter().filter_map(|m| m.get(key).copied()).collect();
        for m in results {
            match m.get(key) {
                Some(v) => s.push_str(&format!("  {v:>8.4}")),
                None => s.push_str(&format!("  {:>8}", "-")),
            }
        }
        let (mu, sd) = mean_std(&xs);
        s.push_str(&format!("  {:>17}\n", format!("{mu:.4} ± {sd:.4}")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// numpy.mean / numpy.std(ddof=1) of seeded vectors of several lengths, written by
    /// scripts/reference/gen_cv_stats.py.
    #[test]
    fn mean_and_std_equal_numpy_bitwise() {
        let text = include_str!("../tests/fixtures/cv_stats.json");
        let cases: Value = serde_json::from_str(text).expect("fixture");
        let cases = cases["cases"].as_array().expect("cases");
        assert!(cases.len() >= 10);
        for c in cases {
            let xs: Vec<f64> = c["x"].as_array().expect("x").iter().filter_map(Value::as_f64).collect();
            let (mu, sd) = mean_std(&xs);
            assert_eq!(mu.to_bits(), c["mean"].as_f64().expect("mean").to_bits(), "mean of {} values", xs.len());
            assert_eq!(sd.to_bits(), c["std"].as_f64().expect("std").to_bits(), "std of {} values", xs.len());
        }
    }

    #[test]
    fn subsets_keep_rows_and_targets_together() {
        let enc = |id: u32| finetune_data::Encoded {
            input_ids: vec![id],
            token_type_ids: vec![0],
            attention_mask: vec![1],
            word_ids: vec![None],
            truncated: id == 2,
        };
        let d = SeqDataset {
            encodings: (0..4).map(enc).collect(),
            targets: SeqTargets::MultiHot { num_labels: 2, values: vec![0., 1., 1., 0., 1., 1., 0., 0.] },
            truncated: 1,
        };
        let s = subset_seq(&d, &[2, 0]);
        assert_eq!(s.encodings.iter().map(|e| e.input_ids[0]).collect::<Vec<_>>(), vec![2, 0]);
        assert_eq!(s.targets, SeqTargets::MultiHot { num_labels: 2, values: vec![1., 1., 0., 1.] });
        assert_eq!(s.truncated, 1);
    }
}
