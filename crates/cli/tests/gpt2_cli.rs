//! `finetune sft | generate | compare | perplexity | merge` end to end on a tiny random GPT-2 directory
//! (`config.json` with `model_type: "gpt2"`, `model.safetensors`, a byte-level BPE `tokenizer.json`), checked
//! against the library: saved directories reload as GPT-2, merged adapters equal the adapter-applied model, and
//! generation and perplexity equal the library's.

mod common;

use std::path::{Path, PathBuf};

use common::{byte_level_model, finetune, losses, ok, read_json, stderr, tiny_sft, write_sft, EOS, NAMES};
use finetune_data::sft::CausalTokenize;
use finetune_models::causal::{load_causal_lm, CausalModel};
use finetune_models::causal_tokenizer::CausalTokenizer;
use finetune_models::checkpoint::load_state_dict;
use finetune_models::decoder::Architecture;
use finetune_models::generate::{generate, GenerationConfig};
use finetune_models::gpt2::{Batch, Gpt2LMHeadModel, Workspace};
use finetune_train::{CausalLm, TrainingArguments};
use serde_json::{json, Value};

/// The tiny GPT-2 fixture (2 layers, 32 wide, 64 positions) with its vocabulary grown to the 257 byte-level
/// tokens, plus tokenizer files.
fn gpt2_dir(root: &Path) -> PathBuf {
    byte_level_model(root, "tiny_gpt2", &["transformer.wte.weight"])
}

fn write_text(dir: &Path) -> PathBuf {
    let mut text = String::new();
    for i in 0..12 {
        let line = json!({"text": format!("{} met {} at noon.", NAMES[i % 8], NAMES[(i + 3) % 8])});
        text.push_str(&line.to_string());
        text.push('\n');
    }
    let p = dir.join("text.jsonl");
    std::fs::write(&p, text).expect("write text");
    p
}

/// The tiny-decoder SFT run; `max_seq_length` 128 is above n_positions (64): cut to it with a note.
fn sft(model: &Path, out: &Path, train: &Path, extra: &[&str]) -> std::process::Output {
    tiny_sft(model, out, train, 128, extra)
}

fn gpt2(spec: &Path) -> Gpt2LMHeadModel {
    match load_causal_lm(&spec.display().to_string()).expect("loads").model {
        CausalModel::Gpt2(m) => m,
        other => panic!("{} loaded as {}", spec.display(), other.architecture()),
    }
}

fn logits(m: &Gpt2LMHeadModel, ids: &[u32]) -> Vec<f32> {
    let mut ws = Workspace::new(&m.config, 1, ids.len());
    let mask = vec![1u32; ids.len()];
    let b = Batch { input_ids: ids, attention_mask: &mask, ..Default::default() };
    m.logits(&mut ws, &b, false).expect("logits").to_vec()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// `finetune generate` predictions of `args`, in record order.
fn predictions(root: &Path, name: &str, args: &[&str]) -> Vec<String> {
    let out = root.join(name);
    let mut all = vec!["generate", "--out", out.to_str().expect("utf-8"), "--max-new-tokens", "6"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--use-chat-template", "false"]);
    ok(finetune(&all));
    let text = std::fs::read_to_string(&out).expect("predictions");
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json line")["prediction"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn gpt2_full_fine_tuning_generation_and_perplexity() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path();
    let base = gpt2_dir(root);
    let train = write_sft(root, "train.jsonl", 16);
    let test = write_sft(root, "test.jsonl", 4);
    let out = root.join("full");
    let o = ok(sft(&base, &out, &train, &[]));
    assert!(stderr(&o).contains("n_positions 64"), "{}", stderr(&o));

    // Training learns the repeated set.
    let l = losses(&out);
    assert_eq!(l.len(), 12, "{l:?}");
    assert!(l[11] < 0.5 * l[0], "loss did not decrease: {l:?}");
    // Resuming from the step-6 checkpoint gives the uninterrupted run's weights bit for bit.
    let resumed = root.join("resumed");
    let from = format!("resume_from_checkpoint={}", out.join("checkpoint-6").display());
    ok(sft(&base, &resumed, &train, &[&from]));
    let weights = |d: &Path| std::fs::read(d.join("model.safetensors")).expect("weights");
    assert!(weights(&out) == weights(&resumed), "the resumed weights differ from the uninterrupted run");

    // A GPT-2 directory with the source's weight names and shapes, different weights, and the
    // HF class name.
    let cfg = read_json(&out.join("config.json"));
    assert_eq!(cfg["architectures"], json!(["GPT2LMHeadModel"]));
    assert_eq!(cfg["model_type"], "gpt2");
    for f in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let (src, saved) = (
        load_state_dict(base.join("model.safetensors")).expect("base"),
        load_state_dict(out.join("model.safetensors")).expect("saved"),
    );
    let src_shapes: Vec<(&String, &Vec<usize>)> = src.iter().map(|(k, t)| (k, &t.shape)).collect();
    let saved_shapes: Vec<(&String, &Vec<usize>)> = saved.iter().map(|(k, t)| (k, &t.shape)).collect();
    assert_eq!(src_shapes, saved_shapes);
    let (m0, m1) = (gpt2(&base), gpt2(&out));
    let ids: Vec<u32> = "Greet anna.".bytes().map(u32::from).collect();
    assert!(max_abs(&logits(&m0, &ids), &logits(&m1, &ids)) > 1e-2, "training changed nothing");
    // Saving the reloaded model gives the same weights back.
    for (k, t) in &saved {
        assert_eq!(m1.store.param(k).expect("param"), &t.data[..], "{k}");
    }

    // Generation: deterministic and equal to the library's greedy decoding of the same prompts.
    let model_arg = ["--model", out.to_str().expect("utf-8"), "--data", test.to_str().expect("utf-8")];
    let preds = predictions(root, "p1.jsonl", &model_arg);
    assert_eq!(preds, predictions(root, "p2.jsonl", &model_arg));
    let tok = CausalTokenizer::from_dir(&out).expect("tokenizer");
    let cfg = GenerationConfig {
        max_new_tokens: 6,
        eos_token_id: vec![EOS],
        pad_token_id: Some(EOS),
        ..GenerationConfig::default()
    };
    for (i, p) in preds.iter().enumerate() {
        let prompt = tok.encode_plain(&format!("Greet {}.", NAMES[i % NAMES.len()])).expect("encode");
        let g = generate(&m1, &[prompt], &cfg, &mut |_, _| false).expect("generate");
        assert_eq!(p, tok.decode(&g[0], true).expect("decode").trim(), "prompt {i}");
    }
    assert!(preds.iter().any(|p| p.starts_with("hello")), "the tuned model should greet: {preds:?}");

    // Perplexity: the window (1024 by default) is cut to n_positions, and the value is the library's.
    let text = write_text(root);
    let o = ok(finetune(&[
        "perplexity",
        "--model",
        out.to_str().expect("utf-8"),
        "--data",
        text.to_str().expect("utf-8"),
        "--json",
    ]));
    assert!(stderr(&o).contains("max_length 1024 exceeds the model's n_positions 64"), "{}", stderr(&o));
    let got: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(got["max_length"], 64);
    let joined: Vec<String> = std::fs::read_to_string(&text)
        .expect("text")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json")["text"].as_str().unwrap_or("").to_string())
        .collect();
    let ids = tok.encode_plain(&joined.join("\n\n")).expect("encode");
    let mut lm =
        CausalLm::from_pretrained(&out.display().to_string(), TrainingArguments::default().adamw()).expect("reload");
    let want = lm.sliding_window_perplexity(&ids, 64, 64).expect("perplexity");
    let p = got["perplexity"].as_f64().expect("perplexity");
    assert!((p - want.perplexity).abs() <= 1e-9 * want.perplexity, "{p} vs {}", want.perplexity);

    // compare: the tuned model is better on its own training prompts.
    let o = ok(finetune(&[
        "compare",
        "--base",
        base.to_str().expect("utf-8"),
        "--tuned",
        out.to_str().expect("utf-8"),
        "--data",
        test.to_str().expect("utf-8"),
        "--use-chat-template",
        "false",
        "--max-new-tokens",
        "6",
        "--json",
    ]));
    let c: Value = serde_json::from_slice(&o.stdout).expect("json");
    let ppl = &c["metrics"]["perplexity"];
    assert!(ppl["tuned"].as_f64() < ppl["base"].as_f64(), "{c}");
}

#[test]
fn gpt2_lora_sft_and_merge_equal_the_adapter_applied_model() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path();
    let base = gpt2_dir(root);
    let train = write_sft(root, "train.jsonl", 16);
    let out = root.join("lora");
    let lora = ["use_peft=true", "lora_r=4", "lora_alpha=8", "lora_dropout=0.1", "learning_rate=2e-2", "packing=true"];
    ok(sft(&base, &out, &train, &lora));
    let l = losses(&out);
    assert!(l[l.len() - 1] < l[0], "loss did not decrease: {l:?}");

    // Resuming from the step-6 checkpoint (AdamW moments, LoRA dropout stream) gives the uninterrupted run's
    // adapter bit for bit.
    let resumed = root.join("resumed");
    let from = format!("resume_from_checkpoint={}", out.join("checkpoint-6").display());
    let mut extra = lora.to_vec();
    extra.push(&from);
    ok(sft(&base, &resumed, &train, &extra));
    let adapter = |d: &Path| std::fs::read(d.join("adapter_model.safetensors")).expect("adapter");
    assert!(adapter(&out) == adapter(&resumed), "the resumed adapter differs from the uninterrupted run");
    assert!(adapter(&out) != adapter(&out.join("checkpoint-6")));
    let ac = read_json(&out.join("adapter_config.json"));
    assert_eq!(ac["fan_in_fan_out"], json!(true), "{ac}");
    assert!(out.join("adapter_model.safetensors").is_file());

    let merged = root.join("merged");
    ok(finetune(&[
        "merge",
        "--base",
        base.to_str().expect("utf-8"),
        "--adapter",
        out.to_str().expect("utf-8"),
        "--output-dir",
        merged.to_str().expect("utf-8"),
    ]));
    assert_eq!(read_json(&merged.join("config.json"))["architectures"], json!(["GPT2LMHeadModel"]));
    let mut with_adapter = gpt2(&base);
    with_adapter.store.load_adapter(&out).expect("adapter");
    let m = gpt2(&merged);
    let plain = gpt2(&base);
    let ids: Vec<u32> = "Greet dora. hello".bytes().map(u32::from).collect();
    let (a, b) = (logits(&with_adapter, &ids), logits(&m, &ids));
    let err = max_abs(&a, &b);
    assert!(err <= 1e-4, "merged logits differ from the adapter-applied model by {err}");
    assert!(max_abs(&a, &logits(&plain, &ids)) > 1e-3, "the adapter changed nothing");
    // The KV-cache path reads base weights only: generating with unmerged adapters is refused.
    let unmerged = CausalModel::Gpt2(with_adapter);
    let e = generate(&unmerged, std::slice::from_ref(&ids), &GenerationConfig::default(), &mut |_, _| false);
    assert!(e.is_err_and(|e| e.to_string().contains("merge")));

    // Generating through the adapter on its base equals generating with the merged model.
    let data = write_sft(root, "test.jsonl", 3);
    let d = data.to_str().expect("utf-8");
    let via_adapter = predictions(
        root,
        "a.jsonl",
        &["--model", out.to_str().expect("utf-8"), "--base", base.to_str().expect("utf-8"), "--data", d],
    );
    let via_merged = predictions(root, "m.jsonl", &["--model", merged.to_str().expect("utf-8"), "--data", d]);
    assert_eq!(via_adapter, via_merged);
}
