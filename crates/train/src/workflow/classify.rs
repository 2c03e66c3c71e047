//! `finetune train`, `eval` and `predict` as functions: sequence classification with a BERT-family encoder as
//! `transformers/examples/pytorch/text-classification/run_glue.py` runs it, and token classification (NER) on
//! CoNLL files (or Parquet/Arrow token lists) as `transformers/examples/pytorch/token-classification/run_ner.py` runs it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use finetune_data::split::{random_split, stratified_split};
use finetune_data::{
    Collator, Example, Format, LabelMap, ReadOptions, SeqDataset, SeqTargets, SeqTask, SplitSpec, TokenDatasetEncoded,
    TokenExample, Tokenize,
};
use finetune_metrics::classification::{classification_report, ReportOptions};
use finetune_models::bert::Task;
use finetune_models::checkpoint::resolve_model_dir;
use finetune_models::config::{EncoderConfig, ProblemType};
use finetune_models::tokenizer::TextTokenizer;
use serde_json::{json, Map, Value};

use super::{EvalResult, InferOptions, PredictResult, Result, RunConfig, RunOptions, TrainResult, WorkflowError};
use crate::{
    trainer, write_atomic, EncoderClassifier, Evaluator, IntervalStrategy, Pooling, Sampler, SeqBatches, TokenBatches,
    TrainError, TrainableModel, TrainingArguments,
};

macro_rules! bail {
    ($($t:tt)*) => { return Err(WorkflowError::Input(format!($($t)*))) };
}
macro_rules! anyhow {
    ($($t:tt)*) => { WorkflowError::Input(format!($($t)*)) };
}

pub fn read_opts(text: &str, pair: Option<&str>, label: Option<&str>, separator: Option<&str>) -> ReadOptions {
    ReadOptions {
        text_column_name: text.to_string(),
        text_pair_column_name: pair.map(str::to_string),
        label_column_name: label.map(str::to_string),
        label_separator: separator.map(str::to_string),
        ..Default::default()
    }
}

pub fn parse_problem(s: Option<&str>) -> Result<ProblemType> {
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

/// `opts` for the file of one split: a `datasets` `DatasetDict` folder or a folder of Parquet shards given as
/// `train_file`, `validation_file` or `test_file` is read at its "train", "validation" or "test" split.
pub fn split_opts(opts: &ReadOptions, path: &str, split: &str) -> ReadOptions {
    let dict = finetune_data::read::has_splits(Path::new(path));
    ReadOptions { dataset_split: dict.then(|| split.to_string()), ..opts.clone() }
}

pub fn read(path: &str, opts: &ReadOptions) -> Result<Vec<Example>> {
    let ds = finetune_data::read_examples(Path::new(path), opts)?;
    if ds.examples.is_empty() {
        bail!("{path}: no examples");
    }
    Ok(ds.examples)
}

/// Model directory, tokenizer and effective max length (`min(max_seq_length, model_max_length,
/// max_position_embeddings)`, as run_glue.py caps it).
pub fn tokenizer_for(spec: &str, max_seq_length: usize) -> Result<(PathBuf, TextTokenizer, usize)> {
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
    let read_opt = |f: &Option<String>, split: &str| -> Result<Option<(String, Vec<Example>)>> {
        f.as_ref().map(|p| Ok((p.clone(), read(p, &split_opts(&opts, p, split))?))).transpose()
    };
    let mut s = Splits {
        train: read_opt(&run.train_file, "train")?,
        validation: read_opt(&run.validation_file, "validation")?,
        test: None,
    };
    s.test = match read_opt(&run.test_file, "test") {
        // run_glue.py's test files usually have no labels: predict only.
        Err(e) if missing_label_column(&e, &run.label_column_name) => {
            let unlabelled = ReadOptions { label_column_name: None, ..opts.clone() };
            let read_test =
                |p: &String| Ok::<_, WorkflowError>((p.clone(), read(p, &split_opts(&unlabelled, p, "test"))?));
            run.test_file.as_ref().map(read_test).transpose()?
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
fn missing_label_column(e: &WorkflowError, label: &str) -> bool {
    let msg = e.to_string();
    let quoted = format!("{label:?}");
    msg.contains(&format!("no column {quoted}")) || msg.contains(&format!("field {quoted} is missing"))
}

/// Encodes a split; a split without any label (a test file for prediction only) is encoded unlabelled.
pub fn encode(
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

pub fn prefixed(prefix: &str, m: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    m.iter()
        .map(
            |(k, v)| if k.starts_with(&format!("{prefix}_")) { (k.clone(), *v) } else { (format!("{prefix}_{k}"), *v) },
        )
        .collect()
}

pub fn write_json_file(path: &Path, value: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// A metric as JSON: sample counts as integers (as HF writes them), everything else as a float.
pub fn metric_value(key: &str, v: f64) -> Value {
    if key.ends_with("_samples") && v >= 0.0 && v.fract() == 0.0 && v < 9e15 {
        json!(v as u64)
    } else {
        json!(v)
    }
}

/// HF `save_metrics(split, metrics, combined=True)`: `{split}_results.json` and merged into `all_results.json`.
pub fn save_metrics(out: &Path, split: &str, metrics: &BTreeMap<String, f64>) -> Result<()> {
    let to_value =
        |m: &BTreeMap<String, f64>| Value::Object(m.iter().map(|(k, v)| (k.clone(), metric_value(k, *v))).collect());
    write_json_file(&out.join(format!("{split}_results.json")), &to_value(metrics))?;
    let all_path = out.join("all_results.json");
    let mut all: Map<String, Value> = match std::fs::read_to_string(&all_path) {
        Ok(t) => serde_json::from_str(&t).map_err(|e| anyhow!("{}: {e}", all_path.display()))?,
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
) -> Result<(BTreeMap<String, f64>, crate::Evaluation)> {
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

pub fn print_metrics(title: &str, m: &BTreeMap<String, f64>) {
    println!("***** {title} metrics *****");
    for (k, v) in m {
        println!("  {k:<28} = {v}");
    }
}

/// One prediction as run_glue.py writes it: the label name, the labels joined by "," (multi-label), or the
/// value with 3 decimals (regression).
fn prediction_text(ev: &crate::Evaluation, i: usize, names: &[String], problem: ProblemType) -> String {
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
/// One JSON object per example, as `finetune predict` writes them: `{"label", "probabilities"}` (single-label),
/// `{"labels", "probabilities"}` (multi-label) or `{"prediction"}` (regression).
fn prediction_values(ev: &crate::Evaluation, names: &[String], problem: ProblemType) -> Vec<Value> {
    let mut out = Vec::with_capacity(ev.predictions.len());
    for (i, (p, probs)) in ev.predictions.iter().zip(&ev.probabilities).enumerate() {
        let by_name: Map<String, Value> = names.iter().zip(probs).map(|(n, &v)| (n.clone(), json!(v))).collect();
        out.push(match problem {
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
        });
    }
    out
}

pub(super) fn write_json_lines(path: &Path, values: &[Value]) -> Result<()> {
    let mut text = String::new();
    for v in values {
        text.push_str(&v.to_string());
        text.push('\n');
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| anyhow!("{}: {e}", dir.display()))?;
    }
    write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// `finetune train` as a function: trains (do_train), evaluates (do_eval) and predicts (do_predict) per the run
/// keys, writing HF's output layout in `args.output_dir` (the final model, `*_results.json`, predictions).
/// `args` must be [`finalize`](TrainingArguments::finalize)d.
pub fn train(run: &RunConfig, args: &TrainingArguments, opts: &RunOptions) -> Result<TrainResult> {
    let r = train_run(run, args, opts)?;
    // report_to = ["mlflow"]: the output directory, final model and results included, becomes the run's artifacts.
    if let Some(id) = &r.mlflow_run_id {
        crate::mlflow::finish_run(id, &r.output_dir)?;
    }
    Ok(r)
}

fn train_run(run: &RunConfig, args: &TrainingArguments, opts: &RunOptions) -> Result<TrainResult> {
    let token_task = match run.task.as_str() {
        "sequence-classification" => false,
        "token-classification" => true,
        "fill-mask" => false,
        t => bail!(
            "key `task`: {t:?} is not supported; use \"sequence-classification\", \"token-classification\" or \
             \"fill-mask\""
        ),
    };
    let Some(spec) = run.model_name_or_path.clone() else {
        bail!("key `model_name_or_path` is required (--model-name-or-path or in the config)")
    };
    let explicit = run.do_train.is_some() || run.do_eval.is_some() || run.do_predict.is_some();
    if run.task == "fill-mask" {
        return super::mlm::train_mlm(run, args, &spec, explicit, opts);
    }
    if let Some(k) = run.mlm.first_set() {
        bail!("key `{k}`: applies to task \"fill-mask\" only");
    }
    if token_task {
        return train_tokens(run, args, &spec, explicit, opts);
    }
    let problem = parse_problem(run.problem_type.as_deref())?;
    let splits = load_splits(run, args.seed, problem)?;
    let have = [splits.train.is_some(), splits.validation.is_some(), splits.test.is_some()];
    let (do_train, do_eval, do_predict) = phases(run, explicit, have)?;

    let (model_dir, tok, max_len) = tokenizer_for(&spec, run.max_seq_length)?;
    // Labels: from the training data (run_glue.py sorts them), else from the model's config.
    let labels = match &splits.train {
        // run_glue.py: one output, LABEL_0.
        Some(_) if do_train && problem == ProblemType::Regression => LabelMap::new(vec!["LABEL_0".into()])?,
        Some((path, ex)) if do_train => LabelMap::from_examples(ex).map_err(|e| anyhow!("{path}: {e}"))?,
        _ => {
            let cfg = EncoderConfig::from_file(model_dir.join("config.json"))?;
            LabelMap::new(
                (0..cfg.num_labels).map(|i| cfg.id2label.get(&i).cloned().unwrap_or(format!("LABEL_{i}"))).collect(),
            )?
        }
    };
    let train_set = match (&splits.train, do_train) {
        (Some(s), true) => {
            let augmented = augment(run, s, args.seed)?;
            let s = augmented.as_ref().unwrap_or(s);
            Some(resample(run, encode(&tok, s, &labels, max_len, problem)?, args.seed, labels.names())?)
        }
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
    bf16_on(&mut model, args.bf16)?;
    model.set_dropout(&run.dropout)?;
    let counts = match train_set.as_ref().map(|d| &d.targets) {
        Some(SeqTargets::Class(y)) => Some(class_counts(y.iter(), labels.len())),
        _ => None,
    };
    set_loss(&mut model, run, args, &labels, counts)?;
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

    let mut result = TrainResult::new(&out);
    let mut last_details = None;
    if let Some(train_set) = &train_set {
        let sampler = Sampler::from_args(args, train_set.len(), Some(train_set.lengths()));
        let source = SeqBatches { data: train_set, sampler, collator };
        let val_ref = val_set.as_ref();
        let mut evaluator = |m: &mut EncoderClassifier| match val_ref {
            Some(v) => m.evaluate(v, eval_bs, collator).map(|e| {
                last_details = e.details;
                e.metrics
            }),
            None => Err(TrainError::Args("no validation data".into())),
        };
        let ev: Option<&mut dyn Evaluator<EncoderClassifier>> =
            if val_set.is_some() && (do_eval || args.eval_strategy != IntervalStrategy::No) {
                Some(&mut evaluator)
            } else {
                None
            };
        let output = trainer::train(args, &mut model, &source, ev, &opts.train_options(run))?;
        if !crate::dist::is_writer() {
            // Data-parallel ranks other than 0 end here: rank 0 saves the (identical) model and its results.
            return Ok(result);
        }
        // Trainer.save_model: the final (or best) model in output_dir itself.
        model.save_model(&out)?;
        opts.print_metrics("train", &output.metrics);
        result.record_training(&output);
        if let Some(mut m) = output.eval_metrics.filter(|_| do_eval) {
            m.insert("eval_samples".into(), val_set.as_ref().map_or(0, SeqDataset::len) as f64);
            save_metrics(&out, "eval", &m)?;
            save_details(&out, "eval", &last_details)?;
            result.eval_metrics = Some(m);
        }
    } else {
        std::fs::create_dir_all(&out).map_err(|e| anyhow!("{}: {e}", out.display()))?;
    }
    if do_eval && result.eval_metrics.is_none() {
        if let Some(v) = &val_set {
            let (m, ev) = evaluate_split(&mut model, v, eval_bs, collator, "eval")?;
            save_metrics(&out, "eval", &m)?;
            save_details(&out, "eval", &ev.details)?;
            result.eval_metrics = Some(m);
        }
    }
    if let Some(m) = &result.eval_metrics {
        opts.print_metrics("eval", m);
    }
    if let Some(t) = &test_set {
        let (m, ev) = evaluate_split(&mut model, t, eval_bs, collator, "test")?;
        if !matches!(t.targets, SeqTargets::None) {
            save_metrics(&out, "test", &m)?;
            save_details(&out, "test", &ev.details)?;
            opts.print_metrics("test", &m);
            result.test_metrics = Some(m);
        }
        // run_glue.py's predict_results file: index and predicted label name (regression: the value).
        let mut txt = String::from("index\tprediction\n");
        for i in 0..ev.predictions.len() {
            txt.push_str(&format!("{i}\t{}\n", prediction_text(&ev, i, &names, problem)));
        }
        write_atomic(&out.join("predict_results.txt"), txt.as_bytes())?;
        write_json_lines(&out.join("predictions.jsonl"), &prediction_values(&ev, &names, problem))?;
        if !ev.gold.is_empty() && opts.print {
            println!("\n***** test classification_report *****");
            print!("{}", report_text(&ev.gold, &ev.predictions, &names)?);
        }
    }
    Ok(result)
}

/// do_train, do_eval and do_predict as run_glue.py decides them: as given when any is given (`explicit`), else
/// each where its data is there (`have`: train, validation, test); an asked-for phase without its data is an
/// error naming the key.
pub(super) fn phases(run: &RunConfig, explicit: bool, have: [bool; 3]) -> Result<(bool, bool, bool)> {
    let [train, val, test] = have;
    let (do_train, do_eval, do_predict) = if explicit {
        (run.do_train.unwrap_or(false), run.do_eval.unwrap_or(false), run.do_predict.unwrap_or(false))
    } else {
        (train, val, test)
    };
    if !(do_train || do_eval || do_predict) {
        bail!("nothing to do: give train_file (and validation_file/test_file or split), or do_eval/do_predict");
    }
    let need = |ok: bool, what: &str, key: &str| if ok { Ok(()) } else { Err(anyhow!("{what} needs `{key}`")) };
    need(!do_train || train, "do_train", "train_file")?;
    need(!do_eval || val, "do_eval", "validation_file (or split)")?;
    need(!do_predict || test, "do_predict", "test_file (or split)")?;
    Ok((do_train, do_eval, do_predict))
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
        crate::TrainingArguments::default().adamw(),
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

/// `finetune eval` as a function: metrics (`eval_*`, HF-prefixed, with runtime and sample count) of a saved
/// sequence- or token-classification model on labelled data, and its classification report (scikit-learn's, or
/// seqeval's for token classification).
pub fn evaluate(model: &str, data: &Path, opts: &InferOptions) -> Result<EvalResult> {
    if super::mlm::is_mlm_model(model)? {
        return super::mlm::evaluate_fill_mask(model, data, opts);
    }
    if token_model(model)? {
        return evaluate_tokens(model, data, opts);
    }
    let (mut model, tok, max_len) = load_for_inference(model, opts.max_seq_length)?;
    bf16_on(&mut model, opts.bf16)?;
    let names = model.label_names();
    let labels = LabelMap::new(names.clone())?;
    let c = opts;
    let path = data.display().to_string();
    let ropts = read_opts(
        &c.text_column_name,
        c.text_pair_column_name.as_deref(),
        Some(&c.label_column_name),
        c.label_separator.as_deref(),
    );
    let examples = read(&path, &ropts)?;
    let problem = model.problem;
    let data = encode(&tok, &(path, examples), &labels, max_len, problem)?;
    let collator = Collator { pad_token_id: tok.pad_token_id(), pad_to_multiple_of: Some(8) };
    let (metrics, ev) = evaluate_split(&mut model, &data, c.batch_size.max(1), collator, "eval")?;
    let report = if ev.gold.is_empty() {
        None
    } else {
        let confusion = ev.details.as_ref().map(confusion_text).unwrap_or_default();
        Some(format!("{}\n{confusion}", report_text(&ev.gold, &ev.predictions, &names)?))
    };
    Ok(EvalResult { metrics, report })
}

/// The encoder's sentence vector of each example, for `finetune data select --by k-center`: the last layer's
/// `[CLS]` state or the normalised mean of its token states ([`Pooling`]). `model` is a base encoder (its head is
/// not used) or a fine-tuned classifier; `origin` names the examples in errors.
pub fn embed_examples(
    model: &str,
    examples: &[Example],
    opts: &InferOptions,
    origin: &str,
    pooling: Pooling,
) -> Result<Vec<Vec<f32>>> {
    if token_model(model)? {
        bail!("{model}: a token-classification model; embeddings come from a sequence encoder");
    }
    let (dir, tok, max_len) = tokenizer_for(model, opts.max_seq_length)?;
    let cfg = EncoderConfig::from_file(dir.join("config.json"))?;
    // The head is built (randomly, for a base encoder) and never read. Mean pooling needs every token's state,
    // which the token-classification forward keeps.
    let names: Vec<String> = (0..cfg.num_labels.max(1)).map(|i| format!("LABEL_{i}")).collect();
    let task = if pooling == Pooling::Mean { Task::TokenClassification } else { Task::SequenceClassification };
    let adamw = crate::TrainingArguments::default().adamw();
    let single = ProblemType::SingleLabelClassification;
    let mut m = EncoderClassifier::from_pretrained_for(&dir.display().to_string(), &names, single, task, adamw, 42)?;
    bf16_on(&mut m, opts.bf16)?;
    let data = SeqDataset::encode(&tok, examples, None, SeqTask::Unlabelled, Some(max_len), origin)?;
    let collator = Collator { pad_token_id: tok.pad_token_id(), pad_to_multiple_of: Some(8) };
    Ok(m.embed(&data, opts.batch_size.max(1), collator, pooling)?)
}

/// Each example's cross-entropy loss, `-ln p(label)`, under a saved single-label sequence classifier, for
/// `finetune data select --by loss`. Every example needs a label the model knows.
pub fn example_losses(model: &str, examples: &[Example], opts: &InferOptions, origin: &str) -> Result<Vec<f64>> {
    if token_model(model)? {
        bail!("{model}: a token-classification model; --by loss takes a sequence classifier");
    }
    let (mut m, tok, max_len) = load_for_inference(model, opts.max_seq_length)?;
    if m.problem != ProblemType::SingleLabelClassification {
        bail!("{model}: a {:?} model; --by loss takes a single-label classifier", m.problem);
    }
    if let Some(e) = examples.iter().find(|e| e.label.is_none()) {
        bail!("{origin}:{}: --by loss needs a label on every example", e.line);
    }
    bf16_on(&mut m, opts.bf16)?;
    let labels = LabelMap::new(m.label_names())?;
    let data = encode(&tok, &(origin.to_string(), examples.to_vec()), &labels, max_len, m.problem)?;
    let collator = Collator { pad_token_id: tok.pad_token_id(), pad_to_multiple_of: Some(8) };
    let ev = m.evaluate(&data, opts.batch_size.max(1), collator)?;
    Ok(ev.gold.iter().zip(&ev.probabilities).map(|(&y, p)| -p[y].max(f64::MIN_POSITIVE).ln()).collect())
}

/// `finetune predict` as a function: writes JSON lines to `out` (`{"label", "probabilities"}` per example, or
/// `{"tokens", "tags"}` per sentence for a token-classification model) and returns how many were written.
pub fn predict(model: &str, data: &Path, out: &Path, opts: &InferOptions) -> Result<PredictResult> {
    if super::mlm::is_mlm_model(model)? {
        return super::mlm::predict_fill_mask(model, data, out, opts);
    }
    let mut predictor = Predictor::load(model, opts)?;
    let path = data.display().to_string();
    let inputs: Vec<PredictInput> = if predictor.is_token_classification() {
        read_conll(&path)?.into_iter().map(|s| PredictInput::Words(s.tokens)).collect()
    } else {
        let ropts = read_opts(&opts.text_column_name, opts.text_pair_column_name.as_deref(), None, None);
        read(&path, &ropts)?.into_iter().map(|e| PredictInput::Text { text: e.text, text_pair: e.text_pair }).collect()
    };
    let values = predictor.predict(&inputs, &path)?;
    write_json_lines(out, &values)?;
    Ok(PredictResult { count: values.len(), token_classification: predictor.is_token_classification() })
}

// ---- token classification (run_ner.py) ----

/// A CoNLL file's sentences (`.txt` and other extensions are read as CoNLL too), or those of a Parquet file
/// or Arrow dataset with `tokens` and `ner_tags` list columns.
pub fn read_conll(path: &str) -> Result<Vec<TokenExample>> {
    read_token_data(path, &ReadOptions::default())
}

/// Token-classification sentences: a Parquet file or Arrow dataset (by `columns.format` or the path) read with
/// `columns`' column names and split (see `finetune_data::read::token_columns`), any other file as CoNLL.
pub fn read_token_data(path: &str, columns: &ReadOptions) -> Result<Vec<TokenExample>> {
    let p = Path::new(path);
    let columnar = columns.format.or_else(|| Format::from_path(p)).is_some_and(Format::is_columnar);
    let opts =
        if columnar { columns.clone() } else { ReadOptions { format: Some(Format::Conll), ..Default::default() } };
    let ds = finetune_data::read_tokens(p, &opts)?;
    if ds.sentences.is_empty() {
        bail!("{path}: no sentences");
    }
    Ok(ds.sentences)
}

/// The format and columns of a run's token-classification files: CoNLL, Parquet or Arrow.
pub fn token_read_opts(run: &RunConfig) -> Result<ReadOptions> {
    let format = run.format.as_deref().map(Format::parse).transpose().map_err(|e| anyhow!("key `format`: {e}"))?;
    if let Some(f) = format.filter(|f| !f.is_token_level() && !f.is_columnar()) {
        bail!("key `format`: token-classification reads CoNLL, Parquet or Arrow data, not {f:?}");
    }
    Ok(ReadOptions {
        format,
        text_column_name: run.text_column_name.clone(),
        label_column_name: Some(run.label_column_name.clone()),
        ..Default::default()
    })
}

pub type TokenSplit = (String, Vec<TokenExample>);

fn load_token_splits(run: &RunConfig, seed: u64) -> Result<[Option<TokenSplit>; 3]> {
    let opts = token_read_opts(run)?;
    let read_opt = |f: &Option<String>, split: &str| -> Result<Option<TokenSplit>> {
        f.as_ref().map(|p| Ok((p.clone(), read_token_data(p, &split_opts(&opts, p, split))?))).transpose()
    };
    let mut s = [
        read_opt(&run.train_file, "train")?,
        read_opt(&run.validation_file, "validation")?,
        read_opt(&run.test_file, "test")?,
    ];
    // Sentences have no single class to stratify by: a seeded random split.
    random_split_train(run, &mut s, seed)?;
    Ok(s)
}

/// Key `split` without classes to stratify by: train_file's records (`s[0]`) split at random, seeded, into train,
/// validation and test (`s`), when neither validation_file nor test_file is given.
pub(super) fn random_split_train<T: Clone>(
    run: &RunConfig,
    s: &mut [Option<(String, Vec<T>)>; 3],
    seed: u64,
) -> Result<()> {
    let Some(spec) = &run.split else { return Ok(()) };
    if s[1].is_some() || s[2].is_some() {
        bail!("key `split`: splits train_file only when neither validation_file nor test_file is given");
    }
    let Some((path, records)) = s[0].take() else { bail!("key `split`: needs train_file") };
    let spec = SplitSpec::parse(spec).map_err(|e| anyhow!("key `split`: {e}"))?;
    let parts = random_split(records.len(), &spec, seed);
    for (slot, ix) in s.iter_mut().zip(&parts) {
        let picked: Vec<T> = ix.iter().map(|&i| records[i].clone()).collect();
        *slot = (!picked.is_empty()).then(|| (path.clone(), picked));
    }
    Ok(())
}

pub fn encode_tokens(
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
) -> Result<(BTreeMap<String, f64>, crate::TokenEvaluation)> {
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
        std::fs::create_dir_all(dir).map_err(|e| anyhow!("{}: {e}", dir.display()))?;
    }
    write_atomic(jsonl, j.as_bytes())?;
    if let Some(txt) = txt {
        write_atomic(txt, t.as_bytes())?;
    }
    Ok(())
}

fn train_tokens(
    run: &RunConfig,
    args: &TrainingArguments,
    spec: &str,
    explicit: bool,
    opts: &RunOptions,
) -> Result<TrainResult> {
    let [train_split, val_split, test_split] = load_token_splits(run, args.seed)?;
    let have = [train_split.is_some(), val_split.is_some(), test_split.is_some()];
    let (do_train, do_eval, do_predict) = phases(run, explicit, have)?;

    if run.augment.is_some() {
        bail!("key `augment`: EDA augments sequence-classification texts, not token-classification sentences");
    }
    if run.resample.is_some() {
        bail!("key `resample`: needs single-label sequence classification, not token classification");
    }
    let (model_dir, tok, max_len) = tokenizer_for(spec, run.max_seq_length)?;
    // Labels: run_ner.py's sorted unique tags of the training data, else the model's own.
    let labels = match &train_split {
        Some((path, s)) if do_train => LabelMap::from_tags(s).map_err(|e| anyhow!("{path}: {e}"))?,
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
    bf16_on(&mut model, args.bf16)?;
    model.set_dropout(&run.dropout)?;
    let counts = train_set.as_ref().map(|d| class_counts(d.labels.iter().flatten(), labels.len()));
    set_loss(&mut model, run, args, &labels, counts)?;
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
    let mut result = TrainResult::new(&out);
    let mut last_details = None;
    if let Some(train_set) = &train_set {
        let sampler = Sampler::from_args(args, train_set.len(), Some(train_set.lengths()));
        let source = TokenBatches { data: train_set, sampler, collator };
        let (val_ref, labels_ref) = (val_set.as_ref(), &labels);
        let mut evaluator = |m: &mut EncoderClassifier| match val_ref {
            Some(v) => m.evaluate_tokens(v, labels_ref, eval_bs, collator, true).map(|e| {
                last_details = e.details;
                e.metrics
            }),
            None => Err(TrainError::Args("no validation data".into())),
        };
        let ev: Option<&mut dyn Evaluator<EncoderClassifier>> =
            if val_set.is_some() && (do_eval || args.eval_strategy != IntervalStrategy::No) {
                Some(&mut evaluator)
            } else {
                None
            };
        let output = trainer::train(args, &mut model, &source, ev, &opts.train_options(run))?;
        if !crate::dist::is_writer() {
            // Data-parallel ranks other than 0 end here: rank 0 saves the (identical) model and its results.
            return Ok(result);
        }
        model.save_model(&out)?;
        opts.print_metrics("train", &output.metrics);
        result.record_training(&output);
        if let Some(mut m) = output.eval_metrics.filter(|_| do_eval) {
            m.insert("eval_samples".into(), val_set.as_ref().map_or(0, TokenDatasetEncoded::len) as f64);
            save_metrics(&out, "eval", &m)?;
            save_details(&out, "eval", &last_details)?;
            result.eval_metrics = Some(m);
        }
    } else {
        std::fs::create_dir_all(&out).map_err(|e| anyhow!("{}: {e}", out.display()))?;
    }
    if do_eval && result.eval_metrics.is_none() {
        if let Some(v) = &val_set {
            let (m, ev) = evaluate_token_split(&mut model, v, &labels, eval_bs, collator, "eval")?;
            save_metrics(&out, "eval", &m)?;
            save_details(&out, "eval", &ev.details)?;
            result.eval_metrics = Some(m);
        }
    }
    if let Some(m) = &result.eval_metrics {
        opts.print_metrics("eval", m);
    }
    if let (Some(t), Some((_, sentences))) = (&test_set, &test_split) {
        let (m, ev) = evaluate_token_split(&mut model, t, &labels, eval_bs, collator, "test")?;
        save_metrics(&out, "test", &m)?;
        save_details(&out, "test", &ev.details)?;
        opts.print_metrics("test", &m);
        result.test_metrics = Some(m);
        write_token_predictions(
            &out.join("predictions.jsonl"),
            Some(&out.join("predictions.txt")),
            sentences,
            &ev.word_tags,
        )?;
        if opts.print {
            println!("\n***** test classification_report (seqeval, words) *****");
            print!("{}", token_report_text(sentences, &ev.word_tags)?);
            if let Some(d) = &ev.details {
                print!("{}", token_details_text(d));
            }
        }
    }
    Ok(result)
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

fn evaluate_tokens(model: &str, data: &Path, c: &InferOptions) -> Result<EvalResult> {
    let (mut model, tok, labels, max_len) = load_token_model(model, c.max_seq_length)?;
    bf16_on(&mut model, c.bf16)?;
    let path = data.display().to_string();
    let split = (path.clone(), read_conll(&path)?);
    let data = encode_tokens(&tok, &split, &labels, c.label_all_tokens, max_len)?;
    let collator = Collator { pad_token_id: tok.pad_token_id(), pad_to_multiple_of: Some(8) };
    let (metrics, ev) = evaluate_token_split(&mut model, &data, &labels, c.batch_size.max(1), collator, "eval")?;
    let details = ev.details.as_ref().map(token_details_text).unwrap_or_default();
    Ok(EvalResult { metrics, report: Some(format!("{}\n{details}", token_report_text(&split.1, &ev.word_tags)?)) })
}

/// Whether `spec` is a saved token-classification model (by its config.json `architectures`).
fn token_model(spec: &str) -> Result<bool> {
    let dir = resolve_model_dir(spec)?;
    let dir = if dir.is_file() { dir.parent().map(Path::to_path_buf).unwrap_or_default() } else { dir };
    Ok(is_token_model(&EncoderConfig::from_file(dir.join("config.json"))?))
}

/// Writes `{split}_details.json` (confusion matrix, curves, calibration, NER reports) for `finetune report`.
pub fn save_details<T: serde::Serialize>(out: &Path, split: &str, details: &Option<T>) -> Result<()> {
    if let Some(d) = details {
        let value = serde_json::to_value(d).map_err(|e| anyhow!("{split}_details.json: {e}"))?;
        write_json_file(&out.join(format!("{split}_details.json")), &value)?;
    }
    Ok(())
}

/// The confusion matrix as text (rows gold, columns predicted), printed after the classification report.
pub fn confusion_text(d: &crate::ClassificationDetails) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    if d.confusion_matrix.is_empty() {
        return s;
    }
    let w = d.labels.iter().map(|l| l.chars().count()).max().unwrap_or(1).max(6);
    let _ = writeln!(s, "confusion matrix (rows: gold, columns: predicted)");
    let _ = write!(s, "{:>w$}", "");
    for l in &d.labels {
        let _ = write!(s, " {l:>w$}");
    }
    let _ = writeln!(s);
    for (l, row) in d.labels.iter().zip(&d.confusion_matrix) {
        let _ = write!(s, "{l:>w$}");
        for v in row {
            let _ = write!(s, " {v:>w$}");
        }
        let _ = writeln!(s);
    }
    s
}

/// The strict-mode entity report and the token-level tag report of a NER evaluation.
pub fn token_details_text(d: &crate::TokenDetails) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let mut table = |title: &str, rows: &[crate::ClassScores]| {
        if rows.is_empty() {
            return;
        }
        let w = rows.iter().map(|r| r.label.chars().count()).max().unwrap_or(1).max(12);
        let _ = writeln!(s, "\n{title}");
        let _ = writeln!(s, "{:>w$}  {:>9} {:>9} {:>9} {:>9}", "", "precision", "recall", "f1-score", "support");
        for r in rows {
            let _ =
                writeln!(s, "{:>w$}  {:>9.4} {:>9.4} {:>9.4} {:>9}", r.label, r.precision, r.recall, r.f1, r.support);
        }
    };
    table(
        &format!("entities, strict mode ({})", d.scheme.as_deref().unwrap_or("no scheme fits the tags")),
        &d.entities_strict,
    );
    table("tokens (classification_report over tags)", &d.tags);
    s
}

/// `bf16 = true` / `--bf16`: switches the model's matmuls to bf16 and says which kernel runs them.
pub fn bf16_on(model: &mut EncoderClassifier, on: bool) -> Result<()> {
    let kernel = model.set_bf16(on)?;
    if on {
        eprintln!("{}", kernel.bf16_line());
    }
    Ok(())
}

/// `[augment]`: the training examples each followed by their EDA copies (`finetune_data::augment`, seeded by
/// `seed`), with one line on stderr saying how many were added; `None` when the run does not augment.
pub fn augment(run: &RunConfig, split: &(String, Vec<Example>), seed: u64) -> Result<Option<(String, Vec<Example>)>> {
    let Some(a) = &run.augment else { return Ok(None) };
    let dir = finetune_data::wordnet::WordNet::locate(a.wordnet.as_deref().map(std::path::Path::new))?;
    let wn = finetune_data::wordnet::WordNet::open(&dir)?;
    let (path, examples) = split;
    let (out, r) = finetune_data::augment::augment_examples(&wn, examples, &a.eda, seed)
        .map_err(|e| anyhow!("{path}: augment: {e}"))?;
    let o = &a.eda;
    eprintln!(
        "augment (EDA num_aug {} alpha_sr {} alpha_ri {} alpha_rs {} alpha_rd {}, seed {seed}, WordNet {}): {} -> {} \
         training examples ({} texts without letters left as they are)",
        o.num_aug,
        o.alpha_sr,
        o.alpha_ri,
        o.alpha_rs,
        o.alpha_rd,
        dir.display(),
        r.originals,
        out.len(),
        r.unchanged
    );
    Ok(Some((path.clone(), out)))
}

/// `resample = "over" | "under"`: the training set re-sampled to balanced classes (`finetune_data::split`'s
/// `oversample` / `undersample`, seeded by `seed`), with one line on stderr saying what changed.
pub fn resample(run: &RunConfig, data: SeqDataset, seed: u64, names: &[String]) -> Result<SeqDataset> {
    let Some(how) = run.resample.as_deref() else { return Ok(data) };
    let SeqTargets::Class(y) = &data.targets else {
        bail!("key `resample`: needs single-label classification (problem_type single_label_classification)");
    };
    let y: Vec<usize> = y.iter().map(|&c| usize::try_from(c).unwrap_or(usize::MAX)).collect();
    let ix = if how == "over" {
        finetune_data::split::oversample(&y, seed)
    } else {
        finetune_data::split::undersample(&y, seed)
    };
    let counts = |ys: &mut dyn Iterator<Item = usize>| {
        let mut c = vec![0usize; names.len()];
        for k in ys {
            if let Some(x) = c.get_mut(k) {
                *x += 1;
            }
        }
        names.iter().zip(&c).map(|(n, k)| format!("{n}: {k}")).collect::<Vec<_>>().join(", ")
    };
    let before = counts(&mut y.iter().copied());
    let after = counts(&mut ix.iter().map(|&i| y[i]));
    eprintln!(
        "resample = \"{how}\" (seed {seed}): {} -> {} training examples ({before} -> {after})",
        y.len(),
        ix.len()
    );
    Ok(super::cv::subset_seq(&data, &ix))
}

// ---- inference on texts in memory (`predict`, `finetune serve`) ----

/// One input of [`Predictor::predict`]: a text (and its pair) for sequence classification, or a sentence's words
/// for token classification.
#[derive(Debug, Clone, PartialEq)]
pub enum PredictInput {
    Text { text: String, text_pair: Option<String> },
    Words(Vec<String>),
}

enum Head {
    Sequence { names: Vec<String>, problem: ProblemType },
    Token { labels: LabelMap },
}

/// A saved sequence- or token-classification model ready to label inputs held in memory; `predict` and the
/// server's `/predict` both go through it, so their JSON is the same.
pub struct Predictor {
    model: EncoderClassifier,
    tok: TextTokenizer,
    max_len: usize,
    batch_size: usize,
    head: Head,
}

impl Predictor {
    /// Loads `spec` (a model directory or hub id) with `opts`' `max_seq_length`, `batch_size` and `bf16`.
    pub fn load(spec: &str, opts: &InferOptions) -> Result<Self> {
        let (mut model, tok, max_len, head) = if token_model(spec)? {
            let (model, tok, labels, max_len) = load_token_model(spec, opts.max_seq_length)?;
            (model, tok, max_len, Head::Token { labels })
        } else {
            let (model, tok, max_len) = load_for_inference(spec, opts.max_seq_length)?;
            let names = model.label_names();
            let problem = model.problem;
            (model, tok, max_len, Head::Sequence { names, problem })
        };
        bf16_on(&mut model, opts.bf16)?;
        // Called once per batch of requests: its workspaces stay for the next one.
        model.keep_eval_workspaces();
        Ok(Predictor { model, tok, max_len, batch_size: opts.batch_size.max(1), head })
    }

    pub fn is_token_classification(&self) -> bool {
        matches!(self.head, Head::Token { .. })
    }

    /// The label names of the head, in id order.
    pub fn label_names(&self) -> Vec<String> {
        match &self.head {
            Head::Sequence { names, .. } => names.clone(),
            Head::Token { labels } => labels.names().to_vec(),
        }
    }

    /// One JSON object per input, as `finetune predict` writes them (`{"label", "probabilities"}`, or
    /// `{"tokens", "tags"}` for token classification). `origin` names the inputs in error messages. Inputs of
    /// the wrong kind for the model are an error.
    pub fn predict(&mut self, inputs: &[PredictInput], origin: &str) -> Result<Vec<Value>> {
        let collator = Collator { pad_token_id: self.tok.pad_token_id(), pad_to_multiple_of: Some(8) };
        match &self.head {
            Head::Sequence { names, problem } => {
                let mut examples = Vec::with_capacity(inputs.len());
                for (i, x) in inputs.iter().enumerate() {
                    let PredictInput::Text { text, text_pair } = x else {
                        bail!("{origin}: input {i}: a sequence-classification model takes texts, not word lists")
                    };
                    examples.push(Example {
                        text: text.clone(),
                        text_pair: text_pair.clone(),
                        label: None,
                        line: i as u64 + 1,
                    });
                }
                let data =
                    SeqDataset::encode(&self.tok, &examples, None, SeqTask::Unlabelled, Some(self.max_len), origin)?;
                let lens: Vec<usize> = data.encodings.iter().map(|e| e.input_ids.len()).collect();
                let mut out = vec![Value::Null; lens.len()];
                for group in length_groups(&lens, self.batch_size, collator.pad_to_multiple_of.unwrap_or(1)) {
                    let sub = SeqDataset {
                        encodings: group.iter().map(|&i| data.encodings[i].clone()).collect(),
                        targets: finetune_data::SeqTargets::None,
                        truncated: 0,
                    };
                    let ev = self.model.evaluate(&sub, group.len(), collator)?;
                    for (&i, v) in group.iter().zip(prediction_values(&ev, names, *problem)) {
                        out[i] = v;
                    }
                }
                Ok(out)
            }
            Head::Token { labels } => {
                // The tag column is not read for prediction: every word gets a placeholder tag.
                let placeholder = labels.names().first().cloned().unwrap_or_default();
                let mut sentences = Vec::with_capacity(inputs.len());
                for (i, x) in inputs.iter().enumerate() {
                    let words = match x {
                        PredictInput::Words(w) => w.clone(),
                        // A text is split on whitespace into words, as a CoNLL line per word would be.
                        PredictInput::Text { text, text_pair: None } => {
                            text.split_whitespace().map(str::to_string).collect()
                        }
                        PredictInput::Text { .. } => {
                            bail!("{origin}: input {i}: a token-classification model takes no text pair")
                        }
                    };
                    let tags = vec![placeholder.clone(); words.len()];
                    sentences.push(TokenExample { tokens: words, tags, line: i as u64 + 1 });
                }
                let data =
                    encode_tokens(&self.tok, &(origin.to_string(), sentences.clone()), labels, false, self.max_len)?;
                let lens: Vec<usize> = data.encodings.iter().map(|e| e.input_ids.len()).collect();
                let mut out = vec![Value::Null; lens.len()];
                for group in length_groups(&lens, self.batch_size, collator.pad_to_multiple_of.unwrap_or(1)) {
                    let sub = TokenDatasetEncoded {
                        encodings: group.iter().map(|&i| data.encodings[i].clone()).collect(),
                        labels: group.iter().map(|&i| data.labels[i].clone()).collect(),
                        word_counts: group.iter().map(|&i| data.word_counts[i]).collect(),
                        truncated_sentences: 0,
                        truncated_words: 0,
                        empty_words: 0,
                    };
                    let ev = self.model.evaluate_tokens(&sub, labels, group.len(), collator, false)?;
                    for (&i, tags) in group.iter().zip(&ev.word_tags) {
                        out[i] = json!({ "tokens": sentences[i].tokens, "tags": tags });
                    }
                }
                Ok(out)
            }
        }
    }
}

/// Batches for prediction: the examples sorted by token count (stable), cut into batches of at most
/// `batch_size` that spend at most a quarter more tokens than they hold on padding (to `multiple`), and at least
/// 8 examples where there are that many. A server's window of short, uneven texts then runs as a few batches of
/// similar lengths instead of one padded to its longest (measured on movie reviews of 6–70 tokens, windows of
/// 32: 36 % fewer tokens); a whole file runs as full batches of near-equal lengths. Each example's result does
/// not depend on its batch mates beyond the padding's rounding (masked keys weigh exactly zero).
fn length_groups(lens: &[usize], batch_size: usize, multiple: usize) -> Vec<Vec<usize>> {
    const MIN_BATCH: usize = 8;
    const WASTE: f64 = 1.25;
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|&i| lens[i]);
    let padded = |n: usize| n.div_ceil(multiple.max(1)) * multiple.max(1);
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let (mut cur, mut real) = (Vec::new(), 0usize);
    for i in order {
        let len = lens[i];
        // Lengths ascend, so `len` is the batch's longest once added.
        let wasteful = cur.len() >= MIN_BATCH && ((cur.len() + 1) * padded(len)) as f64 > WASTE * (real + len) as f64;
        if !cur.is_empty() && (cur.len() >= batch_size.max(1) || wasteful) {
            groups.push(std::mem::take(&mut cur));
            real = 0;
        }
        cur.push(i);
        real += len;
    }
    if !cur.is_empty() {
        groups.push(cur);
    }
    groups
}

/// How often each class id occurs among `targets` (ignored positions, -100, are not counted).
pub(super) fn class_counts<'a>(targets: impl Iterator<Item = &'a i64>, classes: usize) -> Vec<usize> {
    let mut counts = vec![0usize; classes];
    for &y in targets {
        if let Some(c) = usize::try_from(y).ok().filter(|&c| c < classes) {
            counts[c] += 1;
        }
    }
    counts
}

/// Class weights of `class_weight` in label-id order: "balanced" is scikit-learn's
/// `compute_class_weight("balanced")`, n_samples / (n_classes · count), from the training targets `counts`;
/// "label:weight,..." names every weight (labels left out weigh 1).
pub fn class_weights(spec: &str, labels: &LabelMap, counts: Option<&[usize]>) -> Result<Vec<f32>> {
    let key = "key `class_weight`";
    if spec == "balanced" {
        let Some(counts) = counts else { bail!("{key}: \"balanced\" needs training data with class labels") };
        let n: usize = counts.iter().sum();
        if let Some(c) = counts.iter().position(|&k| k == 0) {
            bail!("{key}: \"balanced\" needs every class in the training data; {:?} has none", labels.names()[c]);
        }
        let k = counts.len() as f64;
        return Ok(counts.iter().map(|&c| (n as f64 / (k * c as f64)) as f32).collect());
    }
    let mut w = vec![1.0f32; labels.len()];
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, value)) = part.rsplit_once(':') else {
            bail!("{key}: {part:?} is not label:weight (or use \"balanced\")")
        };
        let Some(id) = labels.id(name.trim()) else {
            bail!("{key}: unknown label {:?} (labels: {})", name.trim(), labels.names().join(", "))
        };
        match value.trim().parse::<f32>() {
            Ok(v) if v.is_finite() && v >= 0.0 => w[id] = v,
            _ => bail!("{key}: weight of {:?} must be a number >= 0, got {:?}", name.trim(), value.trim()),
        }
    }
    if w.iter().all(|&v| v == 0.0) {
        bail!("{key}: every weight is 0");
    }
    Ok(w)
}

/// The classification head's loss: `class_weight` and `label_smoothing_factor` (as the Trainer's
/// `LabelSmoother`, which equals `CrossEntropyLoss(label_smoothing=...)`) for single-label and token
/// classification; refused for the BCE and MSE heads.
pub(super) fn set_loss(
    model: &mut EncoderClassifier,
    run: &RunConfig,
    args: &TrainingArguments,
    labels: &LabelMap,
    counts: Option<Vec<usize>>,
) -> Result<()> {
    let ce = model.problem == ProblemType::SingleLabelClassification;
    if !ce && args.label_smoothing_factor != 0.0 {
        bail!("key `label_smoothing_factor`: only for single-label and token classification (cross-entropy)");
    }
    if !ce && run.class_weight.is_some() {
        bail!("key `class_weight`: only for single-label and token classification (cross-entropy)");
    }
    let class_weight = match &run.class_weight {
        Some(spec) => Some(class_weights(spec, labels, counts.as_deref())?),
        None => None,
    };
    model.model.loss =
        finetune_models::bert::LossOptions { class_weight, label_smoothing: args.label_smoothing_factor as f32 };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::length_groups;

    #[test]
    fn length_groups_sort_cut_wasteful_batches_and_cover_every_example_once() {
        // A window of uneven lengths: sorted, then cut where padding would exceed a quarter of the tokens.
        let lens = [40, 9, 12, 70, 10, 11, 33, 9, 10, 12, 11, 10, 41, 38, 9, 8, 35, 60];
        let groups = length_groups(&lens, 32, 8);
        let mut seen: Vec<usize> = groups.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..lens.len()).collect::<Vec<_>>());
        let flat: Vec<usize> = groups.iter().flatten().map(|&i| lens[i]).collect();
        assert!(flat.windows(2).all(|w| w[0] <= w[1]), "{flat:?}");
        assert!(groups.len() > 1, "{groups:?}");
        // Each batch but the last has at least 8 examples, and the cut happened because the next one would waste.
        for g in &groups[..groups.len() - 1] {
            assert!(g.len() >= 8 || g.len() == 32, "{groups:?}");
        }
        // The point: fewer padded tokens than one batch padded to the longest (18 × 72 = 1 296).
        let padded: usize =
            groups.iter().map(|g| g.len() * g.iter().map(|&i| lens[i].div_ceil(8) * 8).max().unwrap_or(0)).sum();
        assert!(padded < 18 * 72 * 3 / 4, "{padded} tokens in {groups:?}");
        // Equal lengths fill whole batches.
        let same = length_groups(&[16; 70], 32, 8);
        assert_eq!(same.iter().map(Vec::len).collect::<Vec<_>>(), vec![32, 32, 6]);
        // Stable: equal lengths keep their input order.
        assert_eq!(same[0], (0..32).collect::<Vec<_>>());
        assert!(length_groups(&[], 32, 8).is_empty());
    }
}
