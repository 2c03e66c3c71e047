//! `finetune export`: a decoder (or base + LoRA adapter, merged) written as a GGUF file for llama.cpp, then read
//! back and compared with the source on held-out text (logits and perplexity) before the file is put in place;
//! or an encoder classifier written as an ONNX model for ONNX Runtime. Glue only: the mappings, encodings and
//! comparison live in `finetune_models::gguf::export` and `finetune_models::onnx`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use finetune_data::sft::{read_sft, CausalTokenize, SftContent, SftFormat};
use finetune_models::bert::{BertConfig, BertForSequenceClassification, Task};
use finetune_models::causal::Source;
use finetune_models::causal_tokenizer::CausalTokenizer;
use finetune_models::checkpoint::load_pretrained;
use finetune_models::gguf::export::{
    compare_models, load_export, plan_export, tokenizer_meta_from_dir, tokenizer_meta_from_gguf, write_export, OutType,
};
use finetune_models::gguf::GgufFile;
use finetune_models::onnx::{self, export_bert};
use finetune_train::CausalLm;
use serde_json::json;

/// The text the drift check reads when no `--eval-file` is given: public-domain prose (Lincoln's Gettysburg
/// Address, 1863, and the opening of Dickens' "A Tale of Two Cities", 1859).
pub const BUILTIN_EVAL_TEXT: &str = "\
Four score and seven years ago our fathers brought forth on this continent, a new nation, conceived in Liberty, \
and dedicated to the proposition that all men are created equal.

Now we are engaged in a great civil war, testing whether that nation, or any nation so conceived and so \
dedicated, can long endure. We are met on a great battle-field of that war. We have come to dedicate a portion \
of that field, as a final resting place for those who here gave their lives that that nation might live. It is \
altogether fitting and proper that we should do this.

But, in a larger sense, we can not dedicate -- we can not consecrate -- we can not hallow -- this ground. The \
brave men, living and dead, who struggled here, have consecrated it, far above our poor power to add or detract. \
The world will little note, nor long remember what we say here, but it can never forget what they did here. It \
is for us the living, rather, to be dedicated here to the unfinished work which they who fought here have thus \
far so nobly advanced. It is rather for us to be here dedicated to the great task remaining before us -- that \
from these honored dead we take increased devotion to that cause for which they gave the last full measure of \
devotion -- that we here highly resolve that these dead shall not have died in vain -- that this nation, under \
God, shall have a new birth of freedom -- and that government of the people, by the people, for the people, \
shall not perish from the earth.

It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness, it \
was the epoch of belief, it was the epoch of incredulity, it was the season of Light, it was the season of \
Darkness, it was the spring of hope, it was the winter of despair, we had everything before us, we had nothing \
before us, we were all going direct to Heaven, we were all going direct the other way -- in short, the period \
was so far like the present period, that some of its noisiest authorities insisted on its being received, for \
good or for evil, in the superlative degree of comparison only.

There were a king with a large jaw and a queen with a plain face, on the throne of England; there were a king \
with a large jaw and a queen with a fair face, on the throne of France. In both countries it was clearer than \
crystal to the lords of the State preserves of loaves and fishes, that things in general were settled for ever.
";

const EXPORT_HELP: &str = "\
Drift check: after writing, the file is read back with this tool's own GGUF reader (Llama and Qwen2: the GGUF
loader, config from the metadata; GPT-2, Phi: every tensor dequantised and mapped back), both models run
on the evaluation text in disjoint windows, and the command prints the largest absolute logit difference and
the perplexity of source and export. If the perplexity moves by more than --max-ppl-drift percent, the command
fails and no file is left at --out (the file is written to OUT.tmp and renamed only after the check).

Default --max-ppl-drift: f32 0.1 % (only the summation order can differ), f16 1 % (f16 keeps 11 significant
bits: each weight moves by at most 2^-11 of itself, far below 1 % of perplexity; SmolLM2-135M moves 0.005 to
0.05 %), q8_0 3 % (each block of 32 weights is rounded to 255 levels of its largest magnitude; llama.cpp reports
well under 1 % for 7B models, small models are more sensitive; SmolLM2-135M moves 0.4 to 0.7 %). Measured
figures: BENCHMARKS.md.

Without --eval-file the check reads a built-in public-domain text (the Gettysburg Address and the opening of
\"A Tale of Two Cities\", about 550 SmolLM2 tokens): give held-out text from your own domain for a meaningful
figure.

--format onnx: an encoder classifier saved by `finetune train` (BERT, RoBERTa, DistilBERT; sequence or token
classification) as one ONNX file, opset 17, the inputs and output HF Optimum gives it (input_ids,
attention_mask, and token_type_ids for BERT; logits), batch and sequence axes dynamic, id2label in the
metadata; weights f32. The file is decoded again and every weight compared before it is put in place. The
tokenizer stays in the model directory (tokenizer.json).

Examples:
  finetune export --model assets/SmolLM2-135M-Instruct --format gguf --outtype q8_0 --out smollm2-q8_0.gguf
  finetune export --model bench-out/sentiment --format onnx --out sentiment.onnx
  finetune export --model bench-out/email_subject --base assets/SmolLM2-135M-Instruct --outtype f16 \\
      --out email_subject-f16.gguf --eval-file assets/data/sft/movie_reviews_text.validation.jsonl
  llama-cli -m smollm2-q8_0.gguf -p \"Hello\"";

/// `finetune export`: a decoder as a GGUF file, with a drift check.
#[derive(Args, Debug)]
#[command(after_help = EXPORT_HELP)]
pub struct ExportArgs {
    /// Model: HF directory (Llama, SmolLM2, Mistral, Qwen2, Phi, GPT-2), GGUF file, or a LoRA adapter directory
    /// written by `finetune sft` (then give --base; the adapter is merged first); for --format onnx an encoder
    /// classifier directory.
    #[arg(long)]
    model: String,
    /// Base model of a LoRA adapter.
    #[arg(long)]
    base: Option<String>,
    /// Output format: gguf (decoders, for llama.cpp) or onnx (encoder classifiers, for ONNX Runtime).
    #[arg(long, default_value = "gguf")]
    format: String,
    /// Type of the weight matrices: f32, f16, bf16 or q8_0 (norms, biases and GPT-2's position table stay f32);
    /// default f16. ONNX: f32 only.
    #[arg(long)]
    outtype: Option<String>,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
    /// Held-out text for the drift check: JSONL with a `text` field (joined with blank lines) or plain text.
    /// Default: a built-in public-domain text (see below).
    #[arg(long)]
    eval_file: Option<PathBuf>,
    /// Largest allowed relative perplexity change, in percent (default: f32 0.1, f16 and bf16 1, q8_0 3).
    #[arg(long)]
    max_ppl_drift: Option<f64>,
    /// Evaluation window in tokens (disjoint windows; capped at GPT-2's n_positions).
    #[arg(long, default_value_t = 512)]
    window: usize,
    /// Evaluate at most this many tokens of the text.
    #[arg(long, default_value_t = 2048)]
    max_eval_tokens: usize,
    /// `general.name` (default: the model's file or directory name).
    #[arg(long)]
    name: Option<String>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

fn default_drift(t: OutType) -> f64 {
    match t {
        OutType::F32 => 0.1,
        OutType::F16 | OutType::BF16 => 1.0,
        OutType::Q8_0 => 3.0,
    }
}

/// Removes the temporary file unless the export went through.
struct TempFile(PathBuf, bool);

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.1 {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

fn read_eval_text(path: &Path) -> Result<String> {
    let name = path.display().to_string();
    let is_jsonl = path.extension().is_some_and(|e| e == "jsonl" || e == "json");
    if is_jsonl {
        let (_, records) = read_sft(path, SftFormat::Text)?;
        Ok(records
            .iter()
            .filter_map(|r| match &r.content {
                SftContent::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n\n"))
    } else {
        std::fs::read_to_string(path).with_context(|| format!("{name}: cannot read"))
    }
}

pub fn run_export(a: ExportArgs) -> Result<()> {
    match a.format.as_str() {
        "gguf" => {}
        "onnx" => return run_onnx_export(&a),
        other => bail!("--format {other}: not a format (gguf, onnx)"),
    }
    let outtype: OutType = a.outtype.as_deref().unwrap_or("f16").parse().map_err(|e| anyhow!("--outtype: {e}"))?;
    let max_drift = a.max_ppl_drift.unwrap_or(default_drift(outtype));
    if !(max_drift.is_finite() && max_drift >= 0.0) {
        bail!("--max-ppl-drift {max_drift}: must be a non-negative percentage");
    }
    let tmp_path = tmp_path_for(&a.out)?;
    let text = match &a.eval_file {
        Some(p) => read_eval_text(p)?,
        None => BUILTIN_EVAL_TEXT.to_owned(),
    };

    let start = Instant::now();
    let model = CausalLm::for_inference(&a.model, a.base.as_deref())?;
    let adapter_dir = Path::new(&a.model);
    let tokenizer_meta =
        if adapter_dir.join("adapter_config.json").is_file() && adapter_dir.join("tokenizer.json").is_file() {
            tokenizer_meta_from_dir(adapter_dir, &model.config)?
        } else {
            match &model.source {
                Source::Gguf { path, .. } => tokenizer_meta_from_gguf(&GgufFile::open(path)?),
                Source::Dir(d) => tokenizer_meta_from_dir(d, &model.config)?,
            }
        };
    let name = a.name.clone().unwrap_or_else(|| {
        let p = Path::new(
            a.base.as_deref().filter(|_| adapter_dir.join("adapter_config.json").is_file()).unwrap_or(&a.model),
        );
        let stem = if p.is_file() { p.file_stem() } else { p.file_name() };
        stem.map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into())
    });
    let plan = plan_export(&model.model, &model.config, outtype, &name, tokenizer_meta)?;

    let mut tmp = TempFile(tmp_path.clone(), false);
    let bytes = {
        let f = std::fs::File::create(&tmp_path).with_context(|| format!("{}: cannot create", tmp_path.display()))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        let n = write_export(&plan, &model.model, &mut w).with_context(|| format!("{}", a.out.display()))?;
        let f = w.into_inner().map_err(|e| anyhow!("{}: {}", tmp_path.display(), e.error()))?;
        f.sync_all().with_context(|| format!("{}: cannot sync", tmp_path.display()))?;
        n
    };
    let write_secs = start.elapsed().as_secs_f64();

    let exported = load_export(&tmp_path, &plan, &model.model)
        .with_context(|| format!("{}: reading the export back", a.out.display()))?;
    let tok = model.inference_tokenizer(&a.model)?;
    let mut ids = tok.encode_plain(&text)?;
    if let Some((_, b)) = tok.bos_token().filter(|_| tok.add_bos_token()) {
        ids.insert(0, b);
    }
    ids.truncate(a.max_eval_tokens.max(2));
    let window = model.model.max_positions().map_or(a.window, |n| a.window.min(n));
    let drift = compare_models(&model.model, &exported, &ids, window)?;
    // The tokenizer as read back from the file, where this tool can rebuild it (byte-level BPE; see
    // SUPPORTED_PRE_TOKENIZERS).
    let tokenizer_check = match CausalTokenizer::from_gguf(&tmp_path) {
        Ok(t) => match t.encode_plain(&text) {
            Ok(back) => {
                let src = tok.encode_plain(&text)?;
                match src.iter().zip(&back).position(|(x, y)| x != y) {
                    None if src.len() == back.len() => format!("same {} ids", src.len()),
                    Some(i) => format!("ids differ from position {i}"),
                    None => format!("{} ids vs {}", back.len(), src.len()),
                }
            }
            Err(e) => format!("cannot encode: {e}"),
        },
        Err(e) => format!("not checked ({e})"),
    };
    let change = drift.relative_ppl_change() * 100.0;
    let eval_name = a.eval_file.as_ref().map_or("built-in text".to_owned(), |p| p.display().to_string());
    if a.json {
        println!(
            "{}",
            json!({"out": a.out, "outtype": outtype.name(), "arch": plan.arch, "bytes": bytes,
                   "tensors": plan.tensors.len(), "max_abs_logit_diff": drift.max_abs_logit_diff,
                   "mean_abs_logit_diff": drift.mean_abs_logit_diff, "ppl_source": drift.ppl_source,
                   "ppl_export": drift.ppl_export, "ppl_change_percent": change,
                   "max_ppl_drift_percent": max_drift, "eval_tokens": drift.num_tokens, "windows": drift.windows,
                   "eval": eval_name, "tokenizer_check": tokenizer_check})
        );
    } else {
        println!(
            "wrote {} tensors ({} {}, {:.1} MB) in {write_secs:.1} s",
            plan.tensors.len(),
            plan.arch,
            outtype.name(),
            bytes as f64 / 1e6
        );
        println!(
            "drift on {} tokens of {eval_name} ({} windows): max |logit diff| {:.5}, mean {:.6}; perplexity source \
             {:.4}, export {:.4} ({change:+.3} %, limit {max_drift} %)",
            drift.num_tokens,
            drift.windows,
            drift.max_abs_logit_diff,
            drift.mean_abs_logit_diff,
            drift.ppl_source,
            drift.ppl_export
        );
        println!("tokenizer read back from the file: {tokenizer_check}");
    }
    std::io::stdout().flush().ok();
    if change.is_nan() || change.abs() > max_drift {
        bail!(
            "{}: perplexity moved {change:+.3} % ({:.4} -> {:.4}), more than --max-ppl-drift {max_drift} %; no file written",
            a.out.display(),
            drift.ppl_source,
            drift.ppl_export
        );
    }
    std::fs::rename(&tmp_path, &a.out)
        .with_context(|| format!("{}: cannot rename from {}", a.out.display(), tmp_path.display()))?;
    tmp.1 = true;
    if !a.json {
        println!("{} ready ({:.1} s)", a.out.display(), start.elapsed().as_secs_f64());
    }
    Ok(())
}

/// The temporary file beside `--out` (whose directory must exist), renamed to it once the export is checked.
fn tmp_path_for(out: &Path) -> Result<PathBuf> {
    let file_name = out.file_name().ok_or_else(|| anyhow!("--out {}: not a file path", out.display()))?;
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        bail!("--out {}: directory {} does not exist", out.display(), parent.display());
    }
    if out.is_dir() {
        bail!("--out {}: is a directory", out.display());
    }
    Ok(parent.join(format!("{}.tmp", file_name.to_string_lossy())))
}

/// `--format onnx`: an encoder classifier as one ONNX file.
fn run_onnx_export(a: &ExportArgs) -> Result<()> {
    // The drift check's options belong to GGUF; refused rather than ignored.
    let gguf_only = [
        ("--base", a.base.is_some()),
        ("--eval-file", a.eval_file.is_some()),
        ("--max-ppl-drift", a.max_ppl_drift.is_some()),
        ("--window", a.window != 512),
        ("--max-eval-tokens", a.max_eval_tokens != 2048),
    ];
    if let Some((flag, _)) = gguf_only.iter().find(|(_, set)| *set) {
        bail!("{flag}: applies to --format gguf only");
    }
    if let Some(t) = a.outtype.as_deref().filter(|t| !t.eq_ignore_ascii_case("f32")) {
        bail!("--outtype {t}: --format onnx writes f32 weights");
    }
    let tmp_path = tmp_path_for(&a.out)?;
    let start = Instant::now();
    let loaded = load_pretrained(&a.model).map_err(|e| anyhow!("{}: {e}", a.model))?;
    let cfg = &loaded.config;
    let arch = cfg.architectures.first().cloned().unwrap_or_default();
    let task = if arch.ends_with("ForTokenClassification") {
        Task::TokenClassification
    } else if arch.ends_with("ForSequenceClassification") {
        Task::SequenceClassification
    } else {
        bail!(
            "{}: architectures {:?} is not an encoder classifier (…ForSequenceClassification or \
             …ForTokenClassification); ONNX export covers those",
            loaded.dir.join("config.json").display(),
            cfg.architectures
        );
    };
    let mut bert_cfg = BertConfig::from_json(&cfg.to_json().to_string())
        .map_err(|e| anyhow!("{}: {e}", loaded.dir.join("config.json").display()))?;
    bert_cfg.task = task;
    let (model, fresh) = BertForSequenceClassification::from_state_dict(bert_cfg, &loaded.state, 0)
        .map_err(|e| anyhow!("{}: {e}", loaded.dir.display()))?;
    if let Some(name) = fresh.first() {
        bail!("{}: the checkpoint has no `{name}` (an untrained head is not exported)", loaded.dir.display());
    }
    let id2label: serde_json::Map<String, serde_json::Value> =
        cfg.id2label.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    let name = a.name.clone().unwrap_or_else(|| {
        loaded.dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into())
    });
    let metadata = vec![
        ("name".to_owned(), name),
        ("architectures".to_owned(), arch.clone()),
        ("id2label".to_owned(), serde_json::Value::Object(id2label).to_string()),
    ];
    let proto = export_bert(&model, &metadata)?;
    let bytes = onnx::encode(&proto);

    let mut tmp = TempFile(tmp_path.clone(), false);
    {
        let mut f =
            std::fs::File::create(&tmp_path).with_context(|| format!("{}: cannot create", tmp_path.display()))?;
        f.write_all(&bytes).with_context(|| format!("{}: cannot write", tmp_path.display()))?;
        f.sync_all().with_context(|| format!("{}: cannot sync", tmp_path.display()))?;
    }
    // Read the file back: it must decode to the same model, every parameter in it.
    let back = std::fs::read(&tmp_path).with_context(|| format!("{}: cannot read back", tmp_path.display()))?;
    let decoded = onnx::decode(&back).with_context(|| format!("{}: reading the export back", a.out.display()))?;
    if decoded != proto {
        bail!("{}: the file read back differs from the model written", a.out.display());
    }
    let graph = decoded.graph.as_ref().ok_or_else(|| anyhow!("{}: no graph", a.out.display()))?;
    let stored: std::collections::BTreeSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    if let Some(p) = model.store.param_infos().iter().find(|p| !stored.contains(p.name.as_str())) {
        bail!("{}: parameter `{}` is not in the file", a.out.display(), p.name);
    }
    std::fs::rename(&tmp_path, &a.out)
        .with_context(|| format!("{} -> {}: cannot rename", tmp_path.display(), a.out.display()))?;
    tmp.1 = true;
    let secs = start.elapsed().as_secs_f64();
    let inputs: Vec<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
    if a.json {
        println!(
            "{}",
            json!({"out": a.out, "format": "onnx", "opset": onnx::OPSET, "architecture": arch,
                   "bytes": bytes.len(), "inputs": inputs, "nodes": graph.node.len(),
                   "initializers": graph.initializer.len(), "seconds": secs})
        );
    } else {
        eprintln!(
            "wrote {} ({arch}, ONNX opset {}, {:.1} MB, {} nodes, {} initializers, inputs {}) in {secs:.1} s",
            a.out.display(),
            onnx::OPSET,
            bytes.len() as f64 / 1e6,
            graph.node.len(),
            graph.initializer.len(),
            inputs.join(", ")
        );
    }
    Ok(())
}
