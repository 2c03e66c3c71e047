//! K-fold cross-validation of a training run over its training file. Each fold trains a fresh model from
//! `model_name_or_path` with the run's TrainingArguments (output in `output_dir/fold-K/`, HF layout) and
//! evaluates it on the held-out fold; the per-fold metrics, their mean and sample standard deviation (ddof=1, as
//! `numpy.std(ddof=1)` and pandas) go to `output_dir/cv_results.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use finetune_data::split::{stratified_kfold, Fold};
use finetune_data::{Collator, Example, Format, LabelMap, SeqDataset, SeqTargets, TokenDatasetEncoded, Tokenize};
use finetune_metrics::ranking::np_sum;
use finetune_models::bert::Task;
use finetune_models::config::ProblemType;
use serde_json::{json, Map, Value};

use super::classify as train_cmd;
use super::{Result, RunConfig, RunOptions, WorkflowError};
use crate::{
    trainer::train, EncoderClassifier, Evaluator, Sampler, SeqBatches, TokenBatches, TrainOptions, TrainableModel,
    TrainingArguments,
};

macro_rules! bail {
    ($($t:tt)*) => { return Err(WorkflowError::Input(format!($($t)*))) };
}
macro_rules! anyhow {
    ($($t:tt)*) => { WorkflowError::Input(format!($($t)*)) };
}

/// What [`cross_validate`] returns: the metrics of each fold, their mean and sample std (ddof=1) per summary
/// key, and the path of `cv_results.json`.
#[derive(Debug, Clone)]
pub struct CvResult {
    pub folds: Vec<BTreeMap<String, f64>>,
    /// Metrics summarised across folds (eval_* first, then train_loss).
    pub keys: Vec<String>,
    pub mean: BTreeMap<String, f64>,
    pub std: BTreeMap<String, f64>,
    pub results_file: PathBuf,
}

impl CvResult {
    /// One row per metric: its value in each fold, then `mean ± std`.
    pub fn table(&self) -> String {
        table(&self.keys, &self.folds)
    }
}

/// The training file, encoded once; folds are index subsets of it.
enum Data {
    /// `raw`: the examples as read and their labels, kept when `[augment]` adds EDA copies to each fold's
    /// training part (encoded per fold).
    Seq {
        data: SeqDataset,
        problem: ProblemType,
        strata: Vec<String>,
        raw: Option<(String, Vec<Example>, LabelMap)>,
    },
    Tokens {
        data: TokenDatasetEncoded,
        labels: LabelMap,
    },
}

/// `finetune cv` as a function: K-fold cross-validation of a training run over its `train_file`. Each fold
/// trains a fresh model (output in `output_dir/fold-K/`) and evaluates it on the held-out fold; the per-fold
/// metrics, their mean and sample standard deviation go to `output_dir/cv_results.json`. `args` must be
/// finalized.
pub fn cross_validate(
    run: &RunConfig,
    args: &TrainingArguments,
    num_folds: usize,
    opts: &RunOptions,
) -> Result<CvResult> {
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
    if token_task && run.augment.is_some() {
        bail!("key `augment`: EDA augments sequence-classification texts, not token-classification sentences");
    }
    if token_task && run.resample.is_some() {
        bail!("key `resample`: needs single-label sequence classification, not token classification");
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
        load_tokens(run, &train_file, &tok, max_len)?
    } else {
        load_seq(run, &train_file, &tok, max_len)?
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
    let folds = stratified_kfold(&strata, num_folds, args.seed).map_err(|e| anyhow!("--folds {num_folds}: {e}"))?;

    // All inputs are checked; from here on files are written.
    if !ignored.is_empty() {
        eprintln!("cv: not using {} (each fold's held-out part is its evaluation set)", ignored.join(", "));
    }
    let out = PathBuf::from(&args.output_dir);
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
        let m = run_fold(run, &data, &names, fold, &fa, &model_path, collator, opts, (&tok, max_len))
            .map_err(|e| anyhow!("fold {k}: {e}"))?;
        opts.print_metrics(&format!("fold {k} eval"), &m);
        results.push(m);
    }

    let keys = summary_keys(&results);
    let mut mean = Map::new();
    let mut std = Map::new();
    let (mut mean_m, mut std_m) = (BTreeMap::new(), BTreeMap::new());
    for key in &keys {
        let xs: Vec<f64> = results.iter().filter_map(|m| m.get(key).copied()).collect();
        let (mu, sd) = mean_std(&xs);
        mean.insert(key.clone(), json!(mu));
        std.insert(key.clone(), json!(sd));
        mean_m.insert(key.clone(), mu);
        std_m.insert(key.clone(), sd);
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
    std::fs::create_dir_all(&out).map_err(|e| anyhow!("{}: {e}", out.display()))?;
    let path = out.join("cv_results.json");
    train_cmd::write_json_file(&path, &json!({ "folds": fold_values, "mean": mean, "std": std }))?;
    Ok(CvResult { folds: results, keys, mean: mean_m, std: std_m, results_file: path })
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
    let examples = train_cmd::read(path, &train_cmd::split_opts(&opts, path, "train"))?;
    if let Some(i) = examples.iter().position(|e| e.label.is_none()) {
        bail!("{path}: example {} has no label; cross-validation needs labelled data", i + 1);
    }
    let labels = if problem == ProblemType::Regression {
        LabelMap::new(vec!["LABEL_0".into()])?
    } else {
        LabelMap::from_examples(&examples).map_err(|e| anyhow!("{path}: {e}"))?
    };
    let strata = examples.iter().map(|e| e.label.as_ref().map(|l| l.strata_key()).unwrap_or_default()).collect();
    let split = (path.to_string(), examples);
    let data = train_cmd::encode(tok, &split, &labels, max_len, problem)?;
    let names = labels.names().to_vec();
    let raw = run.augment.is_some().then_some((split.0, split.1, labels));
    Ok((Data::Seq { data, problem, strata, raw }, names))
}

/// Reads and encodes a CoNLL training file; tags from the whole file (sorted, as run_ner.py does).
fn load_tokens(
    run: &RunConfig,
    path: &str,
    tok: &finetune_models::tokenizer::TextTokenizer,
    max_len: usize,
) -> Result<(Data, Vec<String>)> {
    let opts = train_cmd::token_read_opts(run)?;
    let sentences = train_cmd::read_token_data(path, &train_cmd::split_opts(&opts, path, "train"))?;
    let labels = LabelMap::from_tags(&sentences).map_err(|e| anyhow!("{path}: {e}"))?;
    let split = (path.to_string(), sentences);
    let data = train_cmd::encode_tokens(tok, &split, &labels, run.label_all_tokens, max_len)?;
    let names = labels.names().to_vec();
    Ok((Data::Tokens { data, labels }, names))
}

/// Trains a fresh model on `fold.train` and evaluates it on `fold.test`; returns `train_loss`, `eval_*` metrics
/// and sample counts.
#[allow(clippy::too_many_arguments)]
fn run_fold(
    run: &RunConfig,
    data: &Data,
    names: &[String],
    fold: &Fold,
    args: &TrainingArguments,
    model_path: &str,
    collator: Collator,
    opts: &RunOptions,
    (tok, max_len): (&finetune_models::tokenizer::TextTokenizer, usize),
) -> Result<BTreeMap<String, f64>> {
    let options = TrainOptions { resume: None, progress: opts.progress, on_evaluate: opts.on_evaluate.clone() };
    let eval_bs = args.per_device_eval_batch_size;
    let out = PathBuf::from(&args.output_dir);
    let (output, model, eval_samples) = match data {
        Data::Seq { data, problem, raw, .. } => {
            let (train_set, held_out) = (subset_seq(data, &fold.train), subset_seq(data, &fold.test));
            // [augment]: this fold's training examples and their EDA copies, encoded for this fold only.
            let train_set = match raw {
                Some((path, examples, labels)) => {
                    let part = (path.clone(), fold.train.iter().map(|&i| examples[i].clone()).collect());
                    match super::classify::augment(run, &part, args.seed)? {
                        Some(aug) => train_cmd::encode(tok, &aug, labels, max_len, *problem)?,
                        None => train_set,
                    }
                }
                None => train_set,
            };
            let train_set = train_cmd::resample(run, train_set, args.seed, names)?;
            let mut model = EncoderClassifier::from_pretrained(model_path, names, *problem, args.adamw(), args.seed)?;
            super::classify::bf16_on(&mut model, args.bf16)?;
            model.set_dropout(&run.dropout)?;
            let counts = match &train_set.targets {
                finetune_data::SeqTargets::Class(y) => Some(super::classify::class_counts(y.iter(), names.len())),
                _ => None,
            };
            let label_map = finetune_data::LabelMap::new(names.to_vec())?;
            super::classify::set_loss(&mut model, run, args, &label_map, counts)?;
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
            super::classify::bf16_on(&mut model, args.bf16)?;
            model.set_dropout(&run.dropout)?;
            let counts = super::classify::class_counts(train_set.labels.iter().flatten(), names.len());
            super::classify::set_loss(&mut model, run, args, labels, Some(counts))?;
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
    output.finish_tracking(&out)?;
    let mut m = output.eval_metrics.unwrap_or_default();
    m.insert("eval_samples".into(), eval_samples as f64);
    train_cmd::save_metrics(&out, "eval", &m)?;
    m.insert("train_samples".into(), fold.train.len() as f64);
    m.insert("train_loss".into(), output.training_loss);
    m.remove("epoch");
    Ok(m)
}

/// The examples `ix` of an encoded sequence dataset, in that order.
pub(super) fn subset_seq(d: &SeqDataset, ix: &[usize]) -> SeqDataset {
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
        let text = include_str!("../../tests/fixtures/cv_stats.json");
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
            offsets: Vec::new(),
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
