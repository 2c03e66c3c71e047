//! `finetune train` with `task = "fill-mask"`: masked-LM domain adaptation of a BERT-family encoder as
//! `transformers/examples/pytorch/language-modeling/run_mlm.py` runs it. The texts of `text_column_name` are
//! tokenized with special tokens and concatenated into `max_seq_length` blocks (`group_texts`; or one sequence
//! per text with `line_by_line`), masked anew each epoch as `DataCollatorForLanguageModeling` masks
//! (`mlm_probability`, 80/10/10 replacement, `whole_word_mask`), and the model is saved as `…ForMaskedLM`, which
//! `AutoModelForMaskedLM` loads and `finetune train` fine-tunes for classification.

use std::path::{Path, PathBuf};

use finetune_data::mlm::{MaskOptions, MlmDataset};
use finetune_data::{BatchLabels, Encoded, Example, Format, Tokenize, IGNORE_INDEX};
use finetune_models::bert::Task;
use finetune_models::checkpoint::resolve_model_dir;
use finetune_models::config::{EncoderConfig, ProblemType};
use finetune_models::tokenizer::TextTokenizer;
use serde_json::{json, Value};

use super::classify::{
    bf16_on, phases, random_split_train, read, read_opts, save_metrics, split_opts, tokenizer_for, write_json_lines,
};
use super::{EvalResult, InferOptions, PredictResult, Result, RunConfig, RunOptions, TrainResult, WorkflowError};
use crate::{trainer, EncoderClassifier, Evaluator, IntervalStrategy, MlmBatches, Sampler, TrainingArguments};

macro_rules! bail {
    ($($t:tt)*) => { return Err(WorkflowError::Input(format!($($t)*))) };
}
macro_rules! anyhow {
    ($($t:tt)*) => { WorkflowError::Input(format!($($t)*)) };
}

/// Refuses the run keys that only classification reads.
fn refuse_classification_keys(run: &RunConfig) -> Result<()> {
    let given = [
        ("text_pair_column_name", run.text_pair_column_name.is_some()),
        ("label_separator", run.label_separator.is_some()),
        ("problem_type", run.problem_type.is_some()),
        ("label_all_tokens", run.label_all_tokens),
        ("class_weight", run.class_weight.is_some()),
        ("resample", run.resample.is_some()),
        ("augment", run.augment.is_some()),
        ("classifier_dropout", run.dropout.classifier_dropout.is_some()),
    ];
    if let Some((k, _)) = given.iter().find(|(_, on)| *on) {
        bail!("key `{k}`: does not apply to task \"fill-mask\", which reads only the text column");
    }
    Ok(())
}

type TextSplit = (String, Vec<Example>);

/// Train, validation and test texts: the files as given, or train_file split at random by `split`.
fn load_texts(run: &RunConfig, seed: u64) -> Result<[Option<TextSplit>; 3]> {
    let mut opts = read_opts(&run.text_column_name, None, None, None);
    opts.format = run.format.as_deref().map(Format::parse).transpose().map_err(|e| anyhow!("key `format`: {e}"))?;
    if opts.format == Some(Format::Conll) {
        bail!("key `format`: task \"fill-mask\" reads texts (csv, tsv, jsonl, text, parquet, arrow), not CoNLL");
    }
    let read_opt = |f: &Option<String>, split: &str| -> Result<Option<TextSplit>> {
        f.as_ref().map(|p| Ok((p.clone(), read(p, &split_opts(&opts, p, split))?))).transpose()
    };
    let mut s = [read_opt(&run.train_file, "train")?, read_opt(&run.validation_file, "validation")?, None];
    s[2] = read_opt(&run.test_file, "test")?;
    random_split_train(run, &mut s, seed)?;
    Ok(s)
}

/// run_mlm.py's preprocessing: `line_by_line` keeps each non-blank text as one sequence truncated to `max_len`;
/// otherwise every text is tokenized whole and `group_texts` cuts the concatenation into `max_len` blocks.
fn encode(tok: &TextTokenizer, split: &TextSplit, max_len: usize, line_by_line: bool) -> Result<MlmDataset> {
    let (path, examples) = split;
    let texts: Vec<(&str, Option<&str>)> = examples
        .iter()
        .map(|e| e.text.as_str())
        .filter(|t| !line_by_line || !t.trim().is_empty())
        .map(|t| (t, None))
        .collect();
    let enc =
        Tokenize::encode_batch(tok, &texts, (line_by_line).then_some(max_len)).map_err(|e| anyhow!("{path}: {e}"))?;
    let d = if line_by_line {
        MlmDataset::line_by_line(&enc)
    } else {
        MlmDataset::group_texts(&enc, max_len).map_err(|e| anyhow!("{path}: {e}"))?
    };
    if d.is_empty() {
        let total: usize = enc.iter().map(Encoded::len).sum();
        bail!("{path}: no sequence of {max_len} tokens: its texts hold {total} tokens in all");
    }
    Ok(d)
}

/// The mask token of the model's tokenizer (`[MASK]` for BERT vocabularies, `<mask>` for RoBERTa's).
fn mask_token(tok: &TextTokenizer, dir: &std::path::Path) -> Result<u32> {
    ["[MASK]", "<mask>"]
        .iter()
        .find_map(|t| tok.token_to_id(t))
        .ok_or_else(|| anyhow!("{}: the tokenizer has no mask token ([MASK] or <mask>)", dir.display()))
}

pub(super) fn train_mlm(
    run: &RunConfig,
    args: &TrainingArguments,
    spec: &str,
    explicit: bool,
    opts: &RunOptions,
) -> Result<TrainResult> {
    refuse_classification_keys(run)?;
    let [train_split, val_split, test_split] = load_texts(run, args.seed)?;
    let have = [train_split.is_some(), val_split.is_some(), test_split.is_some()];
    let (do_train, do_eval, do_predict) = phases(run, explicit, have)?;

    let (model_dir, tok, max_len) = tokenizer_for(spec, run.max_seq_length)?;
    let mut model = EncoderClassifier::from_pretrained_for(
        &model_dir.display().to_string(),
        &[],
        ProblemType::SingleLabelClassification,
        Task::MaskedLM,
        args.adamw(),
        args.seed,
    )?;
    let k = &run.mlm;
    let whole_word_mask = k.whole_word_mask.unwrap_or(false);
    let mut mask_replace_prob = k.mask_replace_prob.unwrap_or(0.8);
    if whole_word_mask && mask_replace_prob < 1.0 {
        if k.mask_replace_prob.is_some() || k.random_replace_prob.is_some() {
            bail!(
                "key `whole_word_mask`: replaces every selected token by the mask token; mask_replace_prob and \
                 random_replace_prob do not apply"
            );
        }
        mask_replace_prob = 1.0;
    }
    let vocab = model.model.config.vocab_size.min(tok.vocab_size());
    let masking = MaskOptions {
        mlm_probability: k.mlm_probability.unwrap_or(0.15),
        mask_replace_prob,
        random_replace_prob: if whole_word_mask { 0.0 } else { k.random_replace_prob.unwrap_or(0.1) },
        whole_word_mask,
        mask_token_id: mask_token(&tok, &model_dir)?,
        vocab_size: vocab as u32,
    };
    masking.validate()?;
    let line_by_line = k.line_by_line.unwrap_or(false);
    let train_set = match (&train_split, do_train) {
        (Some(s), true) => Some(encode(&tok, s, max_len, line_by_line)?),
        _ => None,
    };
    let val_set = match (&val_split, do_eval || (do_train && args.eval_strategy != IntervalStrategy::No)) {
        (Some(s), true) => Some(encode(&tok, s, max_len, line_by_line)?),
        _ => None,
    };
    let test_set = match (&test_split, do_predict) {
        (Some(s), true) => Some(encode(&tok, s, max_len, line_by_line)?),
        _ => None,
    };
    bf16_on(&mut model, args.bf16)?;
    model.set_dropout(&run.dropout)?;
    if args.label_smoothing_factor > 0.0 {
        model.model.loss.label_smoothing = args.label_smoothing_factor as f32;
    }
    // All inputs are checked; from here on files are written.
    let out = PathBuf::from(&args.output_dir);
    let pad = tok.pad_token_id();
    let eval_bs = args.per_device_eval_batch_size;
    // Evaluation masks are drawn once from the run's seed, so every evaluation scores the same positions.
    let eval_seed = args.seed ^ 0x4556_414C;
    if !model.newly_initialized.is_empty() && do_train {
        eprintln!(
            "Some weights were newly initialized from the model checkpoint at {spec}: {:?}; they are trained now.",
            model.newly_initialized
        );
    }
    let mut result = TrainResult::new(&out);
    if let Some(train_set) = &train_set {
        eprintln!(
            "fill-mask: {} training sequences of up to {max_len} tokens ({} tokens){}",
            train_set.len(),
            train_set.num_tokens(),
            if line_by_line { ", one per line" } else { ", texts grouped into blocks" }
        );
        let sampler = Sampler::from_args(args, train_set.len(), Some(train_set.lengths()));
        let source = MlmBatches { data: train_set, sampler, masking, pad_token_id: pad, seed: args.seed };
        let val_ref = val_set.as_ref();
        let mut evaluator = |m: &mut EncoderClassifier| match val_ref {
            Some(v) => m.evaluate_mlm(v, eval_bs, &masking, pad, eval_seed),
            None => Err(crate::TrainError::Args("no validation data".into())),
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
        crate::TrainableModel::save_model(&model, &out)?;
        opts.print_metrics("train", &output.metrics);
        result.record_training(&output);
        if let Some(mut m) = output.eval_metrics.filter(|_| do_eval) {
            m.insert("eval_samples".into(), val_set.as_ref().map_or(0, MlmDataset::len) as f64);
            save_metrics(&out, "eval", &m)?;
            result.eval_metrics = Some(m);
        }
    } else {
        std::fs::create_dir_all(&out).map_err(|e| anyhow!("{}: {e}", out.display()))?;
    }
    let mut final_eval = |data: &MlmDataset, split: &str| -> Result<std::collections::BTreeMap<String, f64>> {
        let e = model.evaluate_mlm(data, eval_bs, &masking, pad, eval_seed)?;
        let mut m = super::prefixed(split, &e.metrics);
        m.insert(format!("{split}_samples"), data.len() as f64);
        save_metrics(&out, split, &m)?;
        Ok(m)
    };
    if do_eval && result.eval_metrics.is_none() {
        if let Some(v) = &val_set {
            result.eval_metrics = Some(final_eval(v, "eval")?);
        }
    }
    if let Some(m) = &result.eval_metrics {
        opts.print_metrics("eval", m);
    }
    if let Some(t) = &test_set {
        let m = final_eval(t, "test")?;
        opts.print_metrics("test", &m);
        result.test_metrics = Some(m);
    }
    Ok(result)
}

/// Whether `spec`'s `config.json` names a `…ForMaskedLM` architecture.
pub(super) fn is_mlm_model(spec: &str) -> Result<bool> {
    let dir = resolve_model_dir(spec)?;
    let dir = if dir.is_file() { dir.parent().map(Path::to_path_buf).unwrap_or_default() } else { dir };
    let cfg = EncoderConfig::from_file(dir.join("config.json"))?;
    Ok(cfg.architectures.iter().any(|a| a.ends_with("ForMaskedLM")))
}

/// A saved masked-LM model with its tokenizer, effective max length and mask token. The options only
/// classification reads are refused by name.
fn load_mlm(spec: &str, opts: &InferOptions) -> Result<(EncoderClassifier, TextTokenizer, usize, u32)> {
    let given = [
        ("--text-pair-column-name", opts.text_pair_column_name.is_some()),
        ("--label-separator", opts.label_separator.is_some()),
        ("--label-all-tokens", opts.label_all_tokens),
    ];
    if let Some((flag, _)) = given.iter().find(|(_, on)| *on) {
        bail!("{flag}: does not apply to a masked-LM model ({spec}), which reads only the text column");
    }
    let (dir, tok, max_len) = tokenizer_for(spec, opts.max_seq_length)?;
    let adamw = TrainingArguments::default().adamw();
    let single = ProblemType::SingleLabelClassification;
    let mut model =
        EncoderClassifier::from_pretrained_for(&dir.display().to_string(), &[], single, Task::MaskedLM, adamw, 42)?;
    if !model.newly_initialized.is_empty() {
        bail!("{}: not a masked-LM model (no trained head: {})", dir.display(), model.newly_initialized.join(", "));
    }
    bf16_on(&mut model, opts.bf16)?;
    let mask = mask_token(&tok, &dir)?;
    Ok((model, tok, max_len, mask))
}

/// `finetune eval` of a masked-LM model: the data's texts grouped into blocks as in training, masked with
/// run_mlm.py's defaults from seed 42; `eval_loss`, `eval_accuracy`, `eval_perplexity`.
pub(super) fn evaluate_fill_mask(spec: &str, data: &Path, opts: &InferOptions) -> Result<EvalResult> {
    let (mut model, tok, max_len, mask) = load_mlm(spec, opts)?;
    let path = data.display().to_string();
    let texts = read(&path, &read_opts(&opts.text_column_name, None, None, None))?;
    let set = encode(&tok, &(path, texts), max_len, false)?;
    let vocab = model.model.config.vocab_size.min(tok.vocab_size()) as u32;
    let masking = MaskOptions {
        mlm_probability: 0.15,
        mask_replace_prob: 0.8,
        random_replace_prob: 0.1,
        whole_word_mask: false,
        mask_token_id: mask,
        vocab_size: vocab,
    };
    let started = std::time::Instant::now();
    let e = model.evaluate_mlm(&set, opts.batch_size.max(1), &masking, tok.pad_token_id(), 42)?;
    let mut metrics = super::prefixed("eval", &e.metrics);
    metrics.insert("eval_samples".into(), set.len() as f64);
    metrics.insert("eval_runtime".into(), started.elapsed().as_secs_f64());
    Ok(EvalResult { metrics, report: None })
}

/// How many candidates `finetune predict` lists per mask (the fill-mask pipeline's `top_k`).
pub const FILL_MASK_TOP_K: usize = 5;

/// `finetune predict` of a masked-LM model, as `pipeline("fill-mask")`: per text, for each mask token, the
/// `FILL_MASK_TOP_K` most probable tokens with their softmax `score`, `token` id, `token_str` and the decoded
/// `sequence` with the mask filled (special tokens kept where the text has several masks, as the pipeline does). Texts without a mask token are an error naming the row.
pub(super) fn predict_fill_mask(spec: &str, data: &Path, out: &Path, opts: &InferOptions) -> Result<PredictResult> {
    let (mut model, tok, max_len, mask) = load_mlm(spec, opts)?;
    let path = data.display().to_string();
    let texts = read(&path, &read_opts(&opts.text_column_name, None, None, None))?;
    let inputs: Vec<(&str, Option<&str>)> = texts.iter().map(|e| (e.text.as_str(), None)).collect();
    let enc = Tokenize::encode_batch(&tok, &inputs, Some(max_len)).map_err(|e| anyhow!("{path}: {e}"))?;
    if let Some(i) = enc.iter().position(|e| !e.input_ids.contains(&mask)) {
        bail!("{path}:{}: no mask token in the text (after truncation to {max_len} tokens)", texts[i].line);
    }
    let v = model.model.config.vocab_size;
    let pad = tok.pad_token_id();
    let mut values = Vec::with_capacity(enc.len());
    for (chunk_no, chunk) in enc.chunks(opts.batch_size.max(1)).enumerate() {
        let t = chunk.iter().map(Encoded::len).max().unwrap_or(0);
        let n = chunk.len() * t;
        let mut b = finetune_data::Batch {
            batch_size: chunk.len(),
            seq_len: t,
            input_ids: vec![pad; n],
            token_type_ids: vec![0; n],
            attention_mask: vec![0; n],
            labels: BatchLabels::None,
            indices: (0..chunk.len()).map(|r| chunk_no * opts.batch_size.max(1) + r).collect(),
        };
        // Labels on the mask positions make the model run its head on those rows only; the loss is unused.
        let mut labels = vec![IGNORE_INDEX; n];
        for (r, e) in chunk.iter().enumerate() {
            b.input_ids[r * t..][..e.len()].copy_from_slice(&e.input_ids);
            b.attention_mask[r * t..][..e.len()].fill(1);
            for (j, &id) in e.input_ids.iter().enumerate().filter(|(_, &id)| id == mask) {
                labels[r * t + j] = id as i64;
            }
        }
        b.labels = BatchLabels::Tokens(labels);
        let (logits, _) = model.forward_eval(&b, true)?;
        let mut rows = logits.chunks_exact(v);
        for e in chunk {
            let mut masks = Vec::new();
            // The pipeline decodes without special tokens only when the text has a single mask.
            let single = e.input_ids.iter().filter(|&&id| id == mask).count() == 1;
            for j in (0..e.len()).filter(|&j| e.input_ids[j] == mask) {
                let row = rows.next().ok_or_else(|| anyhow!("{path}: fewer logits rows than mask tokens"))?;
                masks.push(top_k(row, FILL_MASK_TOP_K, &tok, (&e.input_ids, j), single)?);
            }
            values.push(json!({ "masks": masks }));
        }
    }
    for (v, e) in values.iter_mut().zip(&texts) {
        v["text"] = Value::from(e.text.as_str());
    }
    write_json_lines(out, &values)?;
    Ok(PredictResult { count: values.len(), token_classification: false })
}

/// The `k` most probable tokens of one mask position's logits, as the fill-mask pipeline lists them.
fn top_k(row: &[f32], k: usize, tok: &TextTokenizer, (ids, at): (&[u32], usize), single: bool) -> Result<Value> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    let decode = |ids: &[u32], skip: bool| tok.inner().decode(ids, skip).map_err(|e| anyhow!("tokenizer: {e}"));
    let mut out = Vec::with_capacity(k);
    for &p in order.iter().take(k) {
        let mut filled = ids.to_vec();
        filled[at] = p as u32;
        out.push(json!({
            "score": ((row[p] as f64 - max).exp() / sum),
            "token": p,
            "token_str": decode(&[p as u32], false)?,
            "sequence": decode(&filled, single)?,
        }));
    }
    Ok(Value::Array(out))
}
