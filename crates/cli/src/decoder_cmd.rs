//! Decoder commands: `finetune sft` (instruction SFT and continued pretraining of Llama-family decoders, full or
//! LoRA, as TRL's `trl sft` with `SFTConfig`/`ModelConfig` names), `finetune generate`, `finetune perplexity`,
//! `finetune compare` (base vs fine-tuned, with paired significance) and `finetune merge` (LoRA into the base).
//! Glue only: data in `finetune_data::sft`, models in `finetune_models`, the loop in `finetune_train`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use finetune_data::sft::{
    encode_sft, group_texts, pack, read_sft, read_sft_split, CausalExample, CausalTokenize, Fit, GroupTexts,
    SftContent, SftFormat, SftOptions, SftRecord, SftTokenizer, TruncationMode,
};
use finetune_models::causal_tokenizer::CausalTokenizer;
use finetune_models::generate::{generate, GenerationConfig};
use finetune_models::lora::{LoraConfig, TargetModules};
use finetune_train::decoder::pad_id;
use finetune_train::{
    train, CausalBatches, CausalLm, CausalRow, Evaluator, ProgressMode, Resume, Sampler, TrainOptions, TrainableModel,
    TrainingArguments,
};
use serde_json::{json, Map};

use crate::gen_eval::{self, MetricSet};
use crate::train_cmd::{closest, one_line, print_metrics, save_metrics, training_keys};

const SFT_EXAMPLES: &str = "\
Examples:
  finetune sft --config examples/sft/email_subject.toml
  finetune sft --config examples/sft/review_text.toml --set max_steps=20 --set output_dir=bench-out/quick
  finetune generate --model bench-out/email_subject --base assets/SmolLM2-135M-Instruct \\
      --data assets/data/sft/email_subject.test.jsonl --out preds.jsonl
  finetune compare --base assets/SmolLM2-135M-Instruct --tuned bench-out/email_subject \\
      --data assets/data/sft/email_subject.test.jsonl
  finetune perplexity --model assets/SmolLM2-135M-Instruct --data assets/data/sft/movie_reviews_text.validation.jsonl
  finetune merge --base assets/SmolLM2-135M-Instruct --adapter bench-out/email_subject --output-dir merged";

/// (key, default, meaning) of the SFT run keys.
const SFT_KEYS: &[(&str, &str, &str)] = &[
    ("model_name_or_path", "(required)", "GGUF file, directory with one, HF model directory or hub-cache id"),
    (
        "train_file",
        "none",
        "JSONL or Parquet/save_to_disk: prompt/completion, alpaca (instruction/input/output), messages, or text",
    ),
    ("validation_file", "none", "like train_file; evaluated for eval_loss and eval_perplexity"),
    (
        "test_file",
        "none",
        "like train_file: test_loss/test_perplexity, and generation metrics for prompt/completion data",
    ),
    ("dataset_format", "\"auto\"", "auto, prompt_completion, alpaca, chat or text (auto: from the first record)"),
    ("max_seq_length", "1024", "tokens per example (longer ones are cut by truncation_mode)"),
    (
        "truncation_mode",
        "\"keep_completion\"",
        "keep_completion (cut the middle of the prompt's user content so the completion fits), keep_start or keep_end",
    ),
    ("block_size", "max_seq_length", "text data: run_clm's group_texts block length"),
    ("packing", "false", "pack examples into max_seq_length rows (positions restart, no cross-attention)"),
    ("use_chat_template", "true", "render prompt/completion and alpaca records with the tokenizer's chat template"),
    ("completion_only_loss", "true", "loss on completion tokens only (the prompt gets label -100)"),
    ("assistant_only_loss", "true", "chat data: loss on assistant turns only"),
    ("use_peft", "false", "train LoRA adapters (PEFT layout) instead of all weights"),
    ("lora_r", "16", "LoRA rank"),
    ("lora_alpha", "32", "LoRA scaling numerator (scale = lora_alpha / lora_r)"),
    ("lora_dropout", "0.05", "dropout on the LoRA input while training"),
    ("lora_target_modules", "\"all-linear\"", "comma-separated module names (q_proj,v_proj,...) or all-linear"),
    ("max_new_tokens", "64", "test generation: new tokens per prompt"),
    ("generation_batch_size", "8", "test generation: prompts per batch"),
    ("entity_metrics", "false", "test generation: entity P/R/F1 over \"type: text\" lines"),
    ("do_train", "auto", "train (auto: when train_file is set)"),
    ("do_eval", "auto", "evaluate on validation_file (auto: when set)"),
    ("do_predict", "auto", "evaluate and generate on test_file (auto: when set)"),
    ("resume_from_checkpoint", "none", "a checkpoint-N directory, or \"latest\""),
];

#[derive(Debug, Clone)]
struct SftRun {
    model_name_or_path: Option<String>,
    train_file: Option<String>,
    validation_file: Option<String>,
    test_file: Option<String>,
    dataset_format: SftFormat,
    max_seq_length: usize,
    truncation_mode: TruncationMode,
    block_size: Option<usize>,
    packing: bool,
    use_chat_template: bool,
    completion_only_loss: bool,
    assistant_only_loss: bool,
    use_peft: bool,
    lora_r: usize,
    lora_alpha: f32,
    lora_dropout: f32,
    lora_target_modules: String,
    max_new_tokens: usize,
    generation_batch_size: usize,
    entity_metrics: bool,
    do_train: Option<bool>,
    do_eval: Option<bool>,
    do_predict: Option<bool>,
    resume_from_checkpoint: Option<String>,
}

impl Default for SftRun {
    fn default() -> Self {
        SftRun {
            model_name_or_path: None,
            train_file: None,
            validation_file: None,
            test_file: None,
            dataset_format: SftFormat::Auto,
            max_seq_length: 1024,
            truncation_mode: TruncationMode::KeepCompletion,
            block_size: None,
            packing: false,
            use_chat_template: true,
            completion_only_loss: true,
            assistant_only_loss: true,
            use_peft: false,
            lora_r: 16,
            lora_alpha: 32.0,
            lora_dropout: 0.05,
            lora_target_modules: "all-linear".into(),
            max_new_tokens: 64,
            generation_batch_size: 8,
            entity_metrics: false,
            do_train: None,
            do_eval: None,
            do_predict: None,
            resume_from_checkpoint: None,
        }
    }
}

fn is_sft_key(k: &str) -> bool {
    SFT_KEYS.iter().any(|(n, _, _)| *n == k)
}

fn parse<T: std::str::FromStr>(key: &str, v: &str, what: &str) -> Result<T> {
    v.parse().map_err(|_| anyhow!("--set {key}={v}: expected {what}"))
}

impl SftRun {
    fn set(&mut self, key: &str, v: &str) -> Result<()> {
        let opt = |v: &str| (!matches!(v, "none" | "None" | "null")).then(|| v.to_string());
        let b = |v: &str| match v {
            "true" | "True" => Ok(true),
            "false" | "False" => Ok(false),
            _ => Err(anyhow!("--set {key}={v}: expected a boolean (true or false)")),
        };
        match key {
            "model_name_or_path" => self.model_name_or_path = opt(v),
            "train_file" => self.train_file = opt(v),
            "validation_file" => self.validation_file = opt(v),
            "test_file" => self.test_file = opt(v),
            "dataset_format" => self.dataset_format = v.parse().map_err(|e| anyhow!("--set {key}={v}: {e}"))?,
            "max_seq_length" => self.max_seq_length = parse(key, v, "an integer")?,
            "truncation_mode" => self.truncation_mode = v.parse().map_err(|e| anyhow!("--set {key}={v}: {e}"))?,
            "block_size" => self.block_size = opt(v).map(|s| parse(key, &s, "an integer")).transpose()?,
            "packing" => self.packing = b(v)?,
            "use_chat_template" => self.use_chat_template = b(v)?,
            "completion_only_loss" => self.completion_only_loss = b(v)?,
            "assistant_only_loss" => self.assistant_only_loss = b(v)?,
            "use_peft" => self.use_peft = b(v)?,
            "lora_r" => self.lora_r = parse(key, v, "an integer")?,
            "lora_alpha" => self.lora_alpha = parse(key, v, "a number")?,
            "lora_dropout" => self.lora_dropout = parse(key, v, "a number")?,
            "lora_target_modules" => self.lora_target_modules = v.to_string(),
            "max_new_tokens" => self.max_new_tokens = parse(key, v, "an integer")?,
            "generation_batch_size" => self.generation_batch_size = parse(key, v, "an integer")?,
            "entity_metrics" => self.entity_metrics = b(v)?,
            "do_train" => self.do_train = Some(b(v)?),
            "do_eval" => self.do_eval = Some(b(v)?),
            "do_predict" => self.do_predict = Some(b(v)?),
            "resume_from_checkpoint" => self.resume_from_checkpoint = opt(v),
            _ => bail!("unknown key `{key}`"),
        }
        if self.max_seq_length < 2 || self.lora_r == 0 || self.generation_batch_size == 0 {
            bail!("--set {key}={v}: max_seq_length must be >= 2, lora_r and generation_batch_size >= 1");
        }
        Ok(())
    }

    fn sft_options(&self) -> SftOptions {
        SftOptions {
            use_chat_template: self.use_chat_template,
            completion_only_loss: self.completion_only_loss,
            assistant_only_loss: self.assistant_only_loss,
            max_seq_length: Some(self.max_seq_length),
            truncation_mode: self.truncation_mode,
        }
    }

    fn lora(&self) -> LoraConfig {
        let t = self.lora_target_modules.trim();
        let target_modules = if t == "all-linear" {
            TargetModules::Str(t.to_string())
        } else {
            TargetModules::List(t.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
        };
        LoraConfig {
            r: self.lora_r,
            lora_alpha: self.lora_alpha,
            lora_dropout: self.lora_dropout,
            target_modules,
            base_model_name_or_path: self.model_name_or_path.clone(),
            ..LoraConfig::default()
        }
    }
}

/// `finetune sft`: fine-tune a decoder on instruction data or raw text.
#[derive(Args, Debug)]
#[command(after_long_help = sft_long_help(), after_help = SFT_EXAMPLES)]
pub struct SftArgs {
    /// TOML run file: TrainingArguments keys (HF names) and the SFT keys listed below; --set overrides it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Override any key, e.g. --set learning_rate=2e-4 (repeatable; applied in order).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Progress display: auto (bar on a terminal), lines, off.
    #[arg(long, default_value = "auto", value_parser = ["auto", "lines", "off"])]
    progress: String,
}

fn sft_long_help() -> String {
    let mut s = String::from("SFT keys (TOML or --set; names as TRL's SFTConfig / ModelConfig):\n");
    for (k, d, m) in SFT_KEYS {
        s.push_str(&format!("  {k:<24} default {d:<18} {m}\n"));
    }
    s.push_str("\nTrainingArguments keys: as `finetune train --help` lists them (Hugging Face names and defaults).\n");
    s.push_str(
        "\nOutput (output_dir): checkpoint-N/, the final model (HF directory: config.json, model.safetensors, \
         tokenizer) or with use_peft the adapter (adapter_config.json, adapter_model.safetensors); \
         trainer_state.json, train/eval/test_results.json, all_results.json, predictions.jsonl (test generation).\n\n",
    );
    s.push_str(SFT_EXAMPLES);
    s
}

fn load_sft_config(path: Option<&Path>, overrides: &[String]) -> Result<(SftRun, TrainingArguments)> {
    let mut run = SftRun::default();
    let mut args = TrainingArguments::default();
    let known = training_keys();
    let hint = |k: &str| {
        let all = known.iter().map(String::as_str).chain(SFT_KEYS.iter().map(|(n, _, _)| *n));
        closest(k, all).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default()
    };
    if let Some(path) = path {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).with_context(|| format!("{origin}: cannot read"))?;
        let table: toml::Table =
            toml::from_str(&text).map_err(|e| anyhow!("{origin}: {}", one_line(&e.to_string())))?;
        let mut rest = toml::Table::new();
        for (k, v) in table {
            if is_sft_key(&k) {
                let text = match &v {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Array(a) => {
                        a.iter().map(|x| x.as_str().unwrap_or_default().to_string()).collect::<Vec<_>>().join(",")
                    }
                    other => other.to_string(),
                };
                run.set(&k, &text)
                    .map_err(|e| anyhow!("{origin}: key `{k}`: {}", e.to_string().replace("--set ", "")))?;
            } else if known.contains(&k) {
                rest.insert(k, v);
            } else {
                bail!("{origin}: unknown key `{k}`{}; see `finetune sft --help` for the keys", hint(&k));
            }
        }
        args = toml::Value::Table(rest)
            .try_into()
            .map_err(|e: toml::de::Error| anyhow!("{origin}: {}", one_line(&e.to_string())))?;
    }
    for s in overrides {
        let Some((k, v)) = s.split_once('=') else { bail!("--set {s}: expected key=value") };
        let (k, v) = (k.trim(), v.trim());
        if is_sft_key(k) {
            run.set(k, v)?;
        } else if known.iter().any(|n| n == k) {
            args.set(s)?;
        } else {
            bail!("--set {k}: unknown key `{k}`{}; see `finetune sft --help` for the keys", hint(k));
        }
    }
    args.finalize()?;
    Ok((run, args))
}

/// The tokenizer of a loaded model: from the GGUF metadata or the model directory.
/// A length setting cut to what the model can read: GPT-2's learned positions stop at `n_positions`.
fn cap_to_positions(model: &CausalLm, key: &str, value: usize) -> usize {
    match model.model.max_positions() {
        Some(n) if value > n => {
            eprintln!("{key} {value} exceeds the model's n_positions {n} (config.json): using {n}");
            n
        }
        _ => value,
    }
}

/// `run` with its sequence lengths cut to the model's limit.
fn fit_run(model: &CausalLm, run: &SftRun) -> SftRun {
    let mut r = run.clone();
    r.max_seq_length = cap_to_positions(model, "max_seq_length", run.max_seq_length);
    r.block_size = run.block_size.map(|b| cap_to_positions(model, "block_size", b));
    r
}

/// A data file tokenised for training or evaluation.
struct Encoded {
    format: SftFormat,
    records: Vec<SftRecord>,
    rows: Vec<CausalRow>,
}

/// `split`: the split read from a `datasets` `DatasetDict` folder (the file's role: train, validation, test).
fn encode_file(path: &str, split: &str, run: &SftRun, tok: &CausalTokenizer, allow_pack: bool) -> Result<Encoded> {
    let (format, records) = read_sft_split(Path::new(path), run.dataset_format, Some(split))?;
    let examples: Vec<CausalExample> = if format == SftFormat::Text {
        let block = run.block_size.unwrap_or(run.max_seq_length);
        group_texts(tok, &records, GroupTexts::new(block))?
    } else {
        let enc = encode_sft(tok, &records, &run.sft_options())?;
        eprintln!(
            "{path}: {} examples, {} longer than max_seq_length {} ({}): {} fitted by cutting the prompt, {} with \
             the completion cut, {} dropped with no label token left",
            records.len(),
            enc.truncated,
            run.max_seq_length,
            run.truncation_mode,
            enc.prompt_cut,
            enc.completion_cut,
            enc.dropped_no_labels
        );
        enc.examples
    };
    if examples.is_empty() {
        bail!("{path}: no examples left after tokenisation");
    }
    let rows = if allow_pack && run.packing && format != SftFormat::Text {
        pack(&examples, run.max_seq_length)
            .into_iter()
            .map(|r| CausalRow { input_ids: r.input_ids, labels: r.labels, position_ids: Some(r.position_ids) })
            .collect()
    } else {
        examples
            .into_iter()
            .map(|e| CausalRow { input_ids: e.input_ids, labels: e.labels, position_ids: None })
            .collect()
    };
    Ok(Encoded { format, records, rows })
}

fn progress_mode(s: &str) -> ProgressMode {
    match s {
        "lines" => ProgressMode::Lines,
        "off" => ProgressMode::Off,
        _ => ProgressMode::Auto,
    }
}

fn lm_metrics(
    model: &mut CausalLm,
    rows: &[CausalRow],
    bs: usize,
    pad: u32,
    prefix: &str,
) -> Result<BTreeMap<String, f64>> {
    let start = Instant::now();
    let e = model.evaluate(rows, bs, pad)?;
    let mut m = BTreeMap::new();
    m.insert(format!("{prefix}_loss"), e.loss);
    m.insert(format!("{prefix}_perplexity"), e.perplexity);
    m.insert(format!("{prefix}_samples"), rows.len() as f64);
    m.insert(format!("{prefix}_tokens"), e.num_tokens as f64);
    m.insert(format!("{prefix}_runtime"), (start.elapsed().as_secs_f64() * 1e4).round() / 1e4);
    Ok(m)
}

pub fn run_sft(a: SftArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let (run, args) = load_sft_config(a.config.as_deref(), &a.set)?;
    let Some(spec) = run.model_name_or_path.clone() else {
        bail!("key `model_name_or_path` is required (in the config or --set)")
    };
    let explicit = run.do_train.is_some() || run.do_eval.is_some() || run.do_predict.is_some();
    let (do_train, do_eval, do_predict) = if explicit {
        (run.do_train.unwrap_or(false), run.do_eval.unwrap_or(false), run.do_predict.unwrap_or(false))
    } else {
        (run.train_file.is_some(), run.validation_file.is_some(), run.test_file.is_some())
    };
    let need = |ok: bool, what: &str, key: &str| if ok { Ok(()) } else { Err(anyhow!("{what} needs `{key}`")) };
    need(!do_train || run.train_file.is_some(), "do_train", "train_file")?;
    need(!do_eval || run.validation_file.is_some(), "do_eval", "validation_file")?;
    need(!do_predict || run.test_file.is_some(), "do_predict", "test_file")?;
    if !(do_train || do_eval || do_predict) {
        bail!("nothing to do: give train_file, validation_file or test_file");
    }

    let mut model = CausalLm::from_pretrained(&spec, args.adamw())?;
    let run = fit_run(&model, &run);
    model.max_length = Some(run.max_seq_length);
    model.label_smoothing = args.label_smoothing_factor as f32;
    let tok = model.tokenizer()?;
    let pad = pad_id(&tok);
    let encode = |file: &Option<String>, wanted: bool, split: &str, pack: bool| {
        file.as_deref().filter(|_| wanted).map(|p| encode_file(p, split, &run, &tok, pack)).transpose()
    };
    let train_set = encode(&run.train_file, do_train, "train", true)?;
    let val_set = encode(&run.validation_file, true, "validation", false)?;
    let test_set = encode(&run.test_file, do_predict, "test", false)?;
    if run.use_peft {
        model.model.store_mut().add_lora(&run.lora(), args.seed).map_err(|e| anyhow!("LoRA: {e}"))?;
    }
    let kernel = model.set_bf16(args.bf16)?;
    if args.bf16 {
        eprintln!("{}", kernel.bf16_line());
    }
    // All inputs are checked; from here on files are written.
    let out = PathBuf::from(&args.output_dir);
    let eval_bs = args.per_device_eval_batch_size;
    let mut eval_metrics = None;
    let mut mlflow_run = None;
    if let Some(t) = &train_set {
        let trainable: usize =
            model.model.store().param_infos().iter().filter(|i| i.requires_grad).map(|i| i.len()).sum();
        let total: usize = model.model.store().param_infos().iter().map(|i| i.len()).sum();
        eprintln!(
            "{}: {} training rows ({:?}{}); trainable params: {trainable} || all params: {total} || trainable%: {:.4}",
            run.train_file.as_deref().unwrap_or_default(),
            t.rows.len(),
            t.format,
            if run.packing { ", packed" } else { "" },
            100.0 * trainable as f64 / total.max(1) as f64
        );
        let lengths: Vec<usize> = t.rows.iter().map(|r| r.input_ids.len()).collect();
        let sampler = Sampler::from_args(&args, t.rows.len(), Some(lengths));
        let source = CausalBatches { rows: &t.rows, sampler, pad_id: pad };
        let resume = run.resume_from_checkpoint.as_deref().map(|r| match r {
            "latest" | "true" => Resume::Latest,
            p => Resume::From(PathBuf::from(p)),
        });
        let val_rows = val_set.as_ref().map(|v| v.rows.as_slice());
        let mut evaluator = |m: &mut CausalLm| match val_rows {
            Some(v) => m.eval_output(v, eval_bs, pad),
            None => Err(finetune_train::TrainError::Args("no validation data".into())),
        };
        let ev: Option<&mut dyn Evaluator<CausalLm>> =
            if val_set.is_some() && (do_eval || args.eval_strategy != finetune_train::IntervalStrategy::No) {
                Some(&mut evaluator)
            } else {
                None
            };
        let output = train(
            &args,
            &mut model,
            &source,
            ev,
            &TrainOptions { resume, progress: progress_mode(&a.progress), ..Default::default() },
        )?;
        if !finetune_train::dist::is_writer() {
            // Data-parallel ranks other than 0 end here: rank 0 saves the (identical) model and its results.
            return Ok(());
        }
        model.save_model(&out)?;
        mlflow_run = output.mlflow_run_id.clone();
        print_metrics("train", &output.metrics);
        if let Some(mut m) = output.eval_metrics.filter(|_| do_eval) {
            m.insert("eval_samples".into(), val_set.as_ref().map_or(0, |v| v.rows.len()) as f64);
            save_metrics(&out, "eval", &m)?;
            eval_metrics = Some(m);
        }
    } else {
        std::fs::create_dir_all(&out).with_context(|| out.display().to_string())?;
    }
    if do_eval && eval_metrics.is_none() {
        if let Some(v) = &val_set {
            let m = lm_metrics(&mut model, &v.rows, eval_bs, pad, "eval")?;
            save_metrics(&out, "eval", &m)?;
            eval_metrics = Some(m);
        }
    }
    if let Some(m) = &eval_metrics {
        print_metrics("eval", m);
    }
    if let Some(t) = &test_set {
        let mut m = lm_metrics(&mut model, &t.rows, eval_bs, pad, "test")?;
        if t.format != SftFormat::Text {
            if model.model.store().lora_config().is_some() {
                // Generation runs on merged weights (the adapter is already saved).
                model.model.store_mut().merge_lora().map_err(|e| anyhow!("{e}"))?;
            }
            let gen = GenOptions { max_new_tokens: run.max_new_tokens, batch_size: run.generation_batch_size };
            let (preds, refs) = generate_records(&model, &tok, &t.records, &run, &gen)?;
            let set = MetricSet { entities: run.entity_metrics };
            let metrics = gen_eval::item_metrics(&preds, &refs, set)?;
            for (k, v) in gen_eval::scores(&metrics) {
                m.insert(format!("test_{k}"), v.as_f64().unwrap_or(f64::NAN));
            }
            write_generations(&out.join("predictions.jsonl"), &t.records, &preds, &refs)?;
            println!("sacrebleu signatures: {}", gen_eval::signatures());
        }
        save_metrics(&out, "test", &m)?;
        print_metrics("test", &m);
    }
    let mut meta = serde_json::Map::new();
    meta.insert("command".into(), "sft".into());
    meta.insert("task".into(), (if run.use_peft { "causal-lm (LoRA)" } else { "causal-lm" }).into());
    for (k, v) in [
        ("model_name_or_path", &run.model_name_or_path),
        ("train_file", &run.train_file),
        ("validation_file", &run.validation_file),
        ("test_file", &run.test_file),
    ] {
        if let Some(v) = v {
            meta.insert(k.into(), v.clone().into());
        }
    }
    // report_to = ["mlflow"]: the output directory, final model and results included, becomes the run's artifacts.
    if let Some(id) = mlflow_run {
        finetune_train::mlflow::finish_run(&id, &out)?;
    }
    crate::report_cmd::finish_run(&out, meta, &args, started)
}

struct GenOptions {
    max_new_tokens: usize,
    batch_size: usize,
}

/// Greedy generation for every record: the decoded completions (special tokens skipped, trimmed) and references.
fn generate_records(
    model: &CausalLm,
    tok: &CausalTokenizer,
    records: &[SftRecord],
    run: &SftRun,
    gen: &GenOptions,
) -> Result<(Vec<String>, Vec<String>)> {
    if let Some(n) = model.model.max_positions().filter(|&n| gen.max_new_tokens >= n) {
        bail!("max_new_tokens {} leaves no room for a prompt within the model's n_positions {n}", gen.max_new_tokens);
    }
    let mut prompts = Vec::with_capacity(records.len());
    let mut refs = Vec::with_capacity(records.len());
    // Every record gets a prompt that leaves room for max_new_tokens within max_seq_length, cut as training
    // examples are (truncation_mode).
    let room = run.max_seq_length.saturating_sub(gen.max_new_tokens).max(1);
    let st = SftTokenizer::new(tok)?;
    let opts = run.sft_options();
    let mut cut = 0;
    for r in records {
        let (ids, reference, fit) = st.fit_prompt(r, &opts, room)?;
        cut += usize::from(fit != Fit::Whole);
        prompts.push(ids);
        refs.push(reference);
    }
    if cut > 0 {
        eprintln!(
            "generation: {cut} of {} prompts cut to {room} tokens (max_seq_length - max_new_tokens, {})",
            records.len(),
            run.truncation_mode
        );
    }
    let eos = model.eos_token_ids(tok);
    let cfg = GenerationConfig {
        max_new_tokens: gen.max_new_tokens,
        eos_token_id: eos,
        pad_token_id: Some(pad_id(tok)),
        ..GenerationConfig::default()
    };
    let start = Instant::now();
    let mut preds = Vec::with_capacity(records.len());
    let mut new_tokens = 0usize;
    // Batches of similar prompt lengths waste less work on left padding.
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by_key(|&i| prompts[i].len());
    let mut out = vec![String::new(); prompts.len()];
    for chunk in order.chunks(gen.batch_size) {
        let batch: Vec<Vec<u32>> = chunk.iter().map(|&i| prompts[i].clone()).collect();
        let generated =
            generate(&model.model, &batch, &cfg, &mut |_, _| false).map_err(|e| anyhow!("generation: {e}"))?;
        for (&i, g) in chunk.iter().zip(generated) {
            new_tokens += g.len();
            out[i] = tok.decode(&g, true)?.trim().to_string();
        }
    }
    preds.extend(out);
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "generated {new_tokens} tokens for {} prompts in {secs:.1} s ({:.1} tokens/s)",
        prompts.len(),
        new_tokens as f64 / secs.max(1e-9)
    );
    Ok((preds, refs))
}

fn write_generations(path: &Path, records: &[SftRecord], preds: &[String], refs: &[String]) -> Result<()> {
    let mut text = String::new();
    for ((r, p), g) in records.iter().zip(preds).zip(refs) {
        let line = json!({ "line": r.line, "prediction": p, "reference": g });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    finetune_train::write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// Shared options of the inference commands.
#[derive(Args, Debug, Clone)]
pub struct DecodeArgs {
    /// Tokens per prompt + completion (prompts are cut from the left to leave room for generation).
    #[arg(long, default_value_t = 1024)]
    max_seq_length: usize,
    /// New tokens per prompt (greedy decoding).
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Prompts per generation batch.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Render prompts with the tokenizer's chat template (as the model was fine-tuned).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    use_chat_template: bool,
    /// Also score "type: text" entity lines (precision, recall, F1).
    #[arg(long)]
    entity_metrics: bool,
    /// JSONL record format: auto, prompt_completion, alpaca, chat.
    #[arg(long, default_value = "auto")]
    dataset_format: String,
    /// How an over-long prompt is cut: keep_completion (the middle of the user content; the template's tokens
    /// and the generation prompt stay), or keep_start/keep_end (its last tokens stay).
    #[arg(long, default_value = "keep_completion")]
    truncation_mode: String,
}

impl DecodeArgs {
    fn run(&self) -> Result<SftRun> {
        Ok(SftRun {
            max_seq_length: self.max_seq_length,
            use_chat_template: self.use_chat_template,
            entity_metrics: self.entity_metrics,
            dataset_format: self.dataset_format.parse().map_err(|e| anyhow!("--dataset-format: {e}"))?,
            truncation_mode: self.truncation_mode.parse().map_err(|e| anyhow!("--truncation-mode: {e}"))?,
            ..SftRun::default()
        })
    }
    fn gen(&self) -> GenOptions {
        GenOptions { max_new_tokens: self.max_new_tokens, batch_size: self.batch_size.max(1) }
    }
}

/// `finetune generate`: completions of a model for prompt records, with metrics when references are there.
#[derive(Args, Debug)]
#[command(after_help = SFT_EXAMPLES)]
pub struct GenerateArgs {
    /// Model (GGUF, HF directory) or a LoRA adapter directory written by `finetune sft` (then give --base).
    #[arg(long)]
    model: String,
    /// Base model of a LoRA adapter.
    #[arg(long)]
    base: Option<String>,
    /// JSONL records: prompt/completion, alpaca or chat (the last assistant turn is the reference).
    #[arg(long)]
    data: PathBuf,
    /// Output JSON lines: {"line", "prediction", "reference"}.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    decode: DecodeArgs,
    /// Decode steps from int8 (Q8_0) copies of the weights: a quarter of the bytes read per new token
    /// (AVX512-VNNI where the CPU has it); prompts are prefilled with the f32 weights.
    #[arg(long)]
    int8: bool,
    /// Print the metrics as JSON.
    #[arg(long)]
    json: bool,
}

fn read_prompts(path: &Path, run: &SftRun) -> Result<Vec<SftRecord>> {
    let (format, records) = read_sft(path, run.dataset_format)?;
    if format == SftFormat::Text {
        bail!("{}: text records have no prompt; use prompt/completion, alpaca or chat records", path.display());
    }
    Ok(records)
}

pub fn run_generate(a: GenerateArgs) -> Result<()> {
    let run = a.decode.run()?;
    let records = read_prompts(&a.data, &run)?;
    let mut model = CausalLm::for_inference(&a.model, a.base.as_deref())?;
    if a.int8 {
        let bytes = model.model.quantize_int8()?;
        let kernel = finetune_engine::int8::kernel_name();
        eprintln!("int8: {:.0} MB of int8 weight copies for the decode steps, {kernel} kernel", bytes as f64 / 1e6);
    }
    let run = fit_run(&model, &run);
    let tok = model.inference_tokenizer(&a.model)?;
    let (preds, refs) = generate_records(&model, &tok, &records, &run, &a.decode.gen())?;
    write_generations(&a.out, &records, &preds, &refs)?;
    let metrics = gen_eval::item_metrics(&preds, &refs, MetricSet { entities: run.entity_metrics })?;
    let scores = gen_eval::scores(&metrics);
    if a.json {
        println!("{}", json!({ "metrics": scores, "signatures": gen_eval::signatures() }));
    } else {
        for (k, v) in &scores {
            println!("  {k:<20} = {:.4}", v.as_f64().unwrap_or(f64::NAN));
        }
        println!("sacrebleu signatures: {}", gen_eval::signatures());
    }
    Ok(())
}

/// `finetune compare`: the same metrics for a base and a fine-tuned model on the same data, with paired
/// bootstrap significance (sacrebleu's --paired-bs: 1000 resamples) and completion-token perplexity. For two
/// classifiers or NER models (labelled CSV/TSV/JSONL or CoNLL data): accuracy and macro-F1 (entity F1 and token
/// accuracy) with bootstrap CIs, paired bootstrap, approximate randomisation and McNemar's exact test.
#[derive(Args, Debug)]
#[command(after_help = SFT_EXAMPLES)]
pub struct CompareArgs {
    /// The model before fine-tuning.
    #[arg(long)]
    base: String,
    /// The fine-tuned model, or a LoRA adapter directory on --base.
    #[arg(long)]
    tuned: String,
    /// JSONL prompt/completion, alpaca or chat records (classifiers: labelled CSV/TSV/JSONL; NER: CoNLL).
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    decode: DecodeArgs,
    /// Seed of the bootstrap resampling.
    #[arg(long, default_value_t = 12345)]
    seed: u64,
    /// Write the base and tuned generations here (JSON lines with both), atomically.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write compare_results.json, the per-example outputs (generations.jsonl / predictions.jsonl) and
    /// report.html here.
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Print the comparison as JSON.
    #[arg(long)]
    json: bool,
}

/// `compare --output-dir`: the comparison as `compare_results.json`, the per-example lines as `examples_name`,
/// and `report.html`.
pub fn write_compare_dir(dir: &Path, results: &serde_json::Value, examples_name: &str, examples: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let mut text = serde_json::to_string_pretty(results)?;
    text.push('\n');
    finetune_train::write_atomic(&dir.join("compare_results.json"), text.as_bytes())?;
    finetune_train::write_atomic(&dir.join(examples_name), examples.as_bytes())?;
    let html = finetune_report::report_dirs(&[dir]).with_context(|| format!("report of {}", dir.display()))?;
    finetune_report::write_html(&dir.join("report.html"), &html)?;
    eprintln!("written: {}", dir.join("report.html").display());
    Ok(())
}

pub fn run_compare(a: CompareArgs) -> Result<()> {
    if crate::compare_classifiers::is_classifier(&a.base) {
        let d = &a.decode;
        // Generation settings mean nothing to a classifier: refuse them rather than ignore them.
        let generation_flags = d.max_new_tokens != 64
            || !d.use_chat_template
            || d.entity_metrics
            || d.dataset_format != "auto"
            || d.truncation_mode != "keep_completion";
        if generation_flags {
            bail!("--max-new-tokens, --use-chat-template, --entity-metrics, --dataset-format and --truncation-mode are for decoders; {} is a classifier", a.base);
        }
        return crate::compare_classifiers::run(crate::compare_classifiers::Options {
            base: &a.base,
            tuned: &a.tuned,
            data: &a.data,
            max_seq_length: d.max_seq_length,
            batch_size: d.batch_size.max(1),
            seed: a.seed,
            json: a.json,
            out: a.out.as_deref(),
            output_dir: a.output_dir.as_deref(),
        });
    }
    let run = a.decode.run()?;
    let records = read_prompts(&a.data, &run)?;
    let mut results = Vec::new();
    let mut gens = Vec::new();
    for (name, spec) in [("base", a.base.as_str()), ("tuned", a.tuned.as_str())] {
        let mut model = CausalLm::for_inference(spec, Some(&a.base))?;
        let run = fit_run(&model, &run);
        let tok = model.inference_tokenizer(spec)?;
        let enc = encode_file(&a.data.display().to_string(), "test", &run, &tok, false)?;
        let lm = model.evaluate(&enc.rows, 8, pad_id(&tok))?;
        let (preds, refs) = generate_records(&model, &tok, &records, &run, &a.decode.gen())?;
        let metrics = gen_eval::item_metrics(&preds, &refs, MetricSet { entities: run.entity_metrics })?;
        eprintln!("{name}: completion perplexity {:.4} over {} tokens", lm.perplexity, lm.num_tokens);
        results.push((lm, metrics));
        gens.push((preds, refs));
    }
    let (base_lm, base_m) = &results[0];
    let (tuned_lm, tuned_m) = &results[1];
    let paired = gen_eval::paired(base_m, tuned_m, a.seed)?;
    // With equal scores there is nothing to test; sacrebleu's formula would still print 1 / (n + 1).
    let p_value = |r: &finetune_metrics::significance::PairedResult| (r.candidate != r.baseline).then_some(r.p_value);
    let mut text = String::new();
    for (i, r) in records.iter().enumerate() {
        let line = json!({"line": r.line, "reference": gens[0].1[i], "base": gens[0].0[i], "tuned": gens[1].0[i]});
        text.push_str(&line.to_string());
        text.push('\n');
    }
    if let Some(out) = &a.out {
        finetune_train::write_atomic(out, text.as_bytes())?;
    }
    let mut m = Map::new();
    for (name, r) in &paired {
        m.insert(
            name.to_string(),
            json!({"base": r.baseline, "tuned": r.candidate, "delta": r.candidate - r.baseline, "p_value": p_value(r),
                   "tuned_mean": r.candidate_mean, "tuned_ci": r.candidate_ci}),
        );
    }
    m.insert("perplexity".into(), json!({"base": base_lm.perplexity, "tuned": tuned_lm.perplexity}));
    let doc = json!({ "metrics": m, "n": records.len(), "signatures": gen_eval::signatures() });
    if let Some(dir) = &a.output_dir {
        let mut results = doc.clone();
        results["command"] = json!("compare");
        results["base"] = json!(a.base);
        results["tuned"] = json!(a.tuned);
        results["data"] = json!(a.data.display().to_string());
        results["test"] = json!("paired bootstrap, 1000 resamples");
        write_compare_dir(dir, &results, "generations.jsonl", &text)?;
    }
    if a.json {
        println!("{doc}");
        return Ok(());
    }
    println!("{} examples from {}; paired bootstrap, 1000 resamples, seed {}", records.len(), a.data.display(), a.seed);
    println!("{:<18} {:>10} {:>10} {:>9} {:>9}", "metric", "base", "tuned", "delta", "p-value");
    for (name, r) in &paired {
        println!(
            "{name:<18} {:>10.2} {:>10.2} {:>+9.2} {:>9}",
            r.baseline,
            r.candidate,
            r.candidate - r.baseline,
            p_value(r).map_or("-".to_string(), |p| format!("{p:.4}"))
        );
    }
    println!("{:<18} {:>10.3} {:>10.3}", "perplexity", base_lm.perplexity, tuned_lm.perplexity);
    println!("sacrebleu signatures: {}", gen_eval::signatures());
    Ok(())
}

/// `finetune perplexity`: sliding-window perplexity of a text set, as Hugging Face's perplexity guide computes it.
#[derive(Args, Debug)]
#[command(
    after_help = "Example:\n  finetune perplexity --model assets/SmolLM2-135M-Instruct \\\n      --data assets/data/sft/movie_reviews_text.validation.jsonl --max-length 512 --stride 256"
)]
pub struct PerplexityArgs {
    /// Model (GGUF, HF directory) or a LoRA adapter directory (then give --base).
    #[arg(long)]
    model: String,
    #[arg(long)]
    base: Option<String>,
    /// JSONL with a `text` field, or a plain text file; texts are joined with "\n\n" as the guide does.
    #[arg(long)]
    data: PathBuf,
    /// Window length in tokens.
    #[arg(long, default_value_t = 1024)]
    max_length: usize,
    /// Window step; tokens already scored by the previous window only give context.
    #[arg(long, default_value_t = 512)]
    stride: usize,
    #[arg(long)]
    json: bool,
}

pub fn run_perplexity(a: PerplexityArgs) -> Result<()> {
    let name = a.data.display().to_string();
    let is_jsonl = a.data.extension().is_some_and(|e| e == "jsonl" || e == "json");
    let text = if is_jsonl {
        let (_, records) = read_sft(&a.data, SftFormat::Text)?;
        records
            .iter()
            .map(|r| match &r.content {
                SftContent::Text(t) => t.as_str(),
                _ => "",
            })
            .collect::<Vec<_>>()
            .join("\n\n")
    } else {
        std::fs::read_to_string(&a.data).with_context(|| format!("{name}: cannot read"))?
    };
    let mut model = CausalLm::for_inference(&a.model, a.base.as_deref())?;
    let tok = model.inference_tokenizer(&a.model)?;
    let mut ids = tok.encode_plain(&text)?;
    if let Some((_, b)) = tok.bos_token().filter(|_| tok.add_bos_token()) {
        ids.insert(0, b);
    }
    let max_length = cap_to_positions(&model, "max_length", a.max_length);
    // A window cut to n_positions keeps a stride that fits it.
    let stride = if max_length < a.max_length { a.stride.min(max_length) } else { a.stride };
    let start = Instant::now();
    let e = model.sliding_window_perplexity(&ids, max_length, stride)?;
    let secs = start.elapsed().as_secs_f64();
    if a.json {
        println!(
            "{}",
            json!({"perplexity": e.perplexity, "loss": e.loss, "num_tokens": e.num_tokens, "windows": e.num_rows,
                   "max_length": max_length, "stride": stride})
        );
    } else {
        println!(
            "perplexity {:.4} (mean NLL {:.5}) over {} tokens of {name}, {} windows (max_length {}, stride {}), {secs:.1} s",
            e.perplexity, e.loss, e.num_tokens, e.num_rows, max_length, stride
        );
    }
    Ok(())
}

/// `finetune merge`: a LoRA adapter merged into its base model, saved as a full HF model directory.
#[derive(Args, Debug)]
#[command(
    after_help = "Example:\n  finetune merge --base assets/SmolLM2-135M-Instruct --adapter bench-out/email_subject --output-dir merged"
)]
pub struct MergeArgs {
    #[arg(long)]
    base: String,
    /// PEFT adapter directory (adapter_config.json, adapter_model.safetensors).
    #[arg(long)]
    adapter: String,
    #[arg(long)]
    output_dir: PathBuf,
}

pub fn run_merge(a: MergeArgs) -> Result<()> {
    let model = CausalLm::for_inference(&a.adapter, Some(&a.base))?;
    if a.output_dir.join("adapter_config.json").is_file() {
        bail!("{}: holds an adapter; choose another --output-dir", a.output_dir.display());
    }
    model.save_model(&a.output_dir)?;
    println!("merged {} into {} -> {}", a.adapter, a.base, a.output_dir.display());
    Ok(())
}
