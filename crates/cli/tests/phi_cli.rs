//! `finetune sft | merge | generate | perplexity` end to end on a tiny random Phi directory (`PhiForCausalLM`:
//! parallel blocks, a partial rotary embedding, the LM head's bias), through the same commands as every decoder:
//! an architecture added as its own file plus one line of the architecture table.

mod common;

use std::path::{Path, PathBuf};

use common::{byte_level_model, finetune, losses, ok, read_json, tiny_sft, write_sft};
use finetune_models::causal::{load_causal_lm, CausalModel};
use finetune_models::decoder::Batch;
use serde_json::{json, Value};

fn phi_dir(root: &Path) -> PathBuf {
    byte_level_model(root, "tiny_phi", &["model.embed_tokens.weight", "lm_head.weight", "lm_head.bias"])
}

fn sft(model: &Path, out: &Path, train: &Path, extra: &[&str]) {
    ok(tiny_sft(model, out, train, 64, extra));
}

fn model(dir: &Path) -> CausalModel {
    load_causal_lm(&dir.display().to_string()).expect("loads").model
}

fn logits(m: &CausalModel, ids: &[u32]) -> Vec<f32> {
    let mut ws = m.new_workspace(1, ids.len());
    let mask = vec![1u32; ids.len()];
    let b = Batch { input_ids: ids, attention_mask: &mask, ..Default::default() };
    m.logits(&mut ws, &b, false).expect("logits").to_vec()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn generate(root: &Path, name: &str, args: &[&str]) -> String {
    let out = root.join(name);
    let mut all = vec!["generate", "--out", out.to_str().expect("utf-8"), "--max-new-tokens", "6"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--use-chat-template", "false"]);
    ok(finetune(&all));
    std::fs::read_to_string(&out).expect("predictions")
}

#[test]
fn phi_full_sft_resumes_exactly_and_scores_perplexity() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path();
    let base = phi_dir(root);
    let train = write_sft(root, "train.jsonl", 16);
    let out = root.join("full");
    sft(&base, &out, &train, &[]);
    let l = losses(&out);
    assert!(l[11] < 0.5 * l[0], "loss did not decrease: {l:?}");
    let resumed = root.join("resumed");
    let from = format!("resume_from_checkpoint={}", out.join("checkpoint-6").display());
    sft(&base, &resumed, &train, &[&from]);
    let weights = |d: &Path| std::fs::read(d.join("model.safetensors")).expect("weights");
    assert!(weights(&out) == weights(&resumed), "the resumed weights differ from the uninterrupted run");
    let cfg = read_json(&out.join("config.json"));
    assert_eq!((cfg["architectures"].clone(), cfg["model_type"].clone()), (json!(["PhiForCausalLM"]), json!("phi")));
    let ids: Vec<u32> = "Greet anna.".bytes().map(u32::from).collect();
    assert!(max_abs(&logits(&model(&base), &ids), &logits(&model(&out), &ids)) > 1e-2, "training changed nothing");

    let text = root.join("text.jsonl");
    std::fs::write(&text, "{\"text\": \"anna met bob at noon.\"}\n{\"text\": \"carl met dora.\"}\n").expect("text");
    let (m, t) = (out.to_str().expect("utf-8"), text.to_str().expect("utf-8"));
    let o = ok(finetune(&["perplexity", "--model", m, "--data", t, "--json"]));
    let got: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(got["perplexity"].as_f64().is_some_and(|p| p.is_finite() && p > 1.0), "{got}");
}

#[test]
fn phi_lora_sft_merge_equals_the_adapter_applied_model() {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path();
    let base = phi_dir(root);
    let train = write_sft(root, "train.jsonl", 16);
    let out = root.join("lora");
    sft(&base, &out, &train, &["use_peft=true", "lora_r=4", "lora_alpha=8", "learning_rate=2e-2", "packing=true"]);
    let l = losses(&out);
    assert!(l[l.len() - 1] < l[0], "loss did not decrease: {l:?}");
    // `all-linear` wraps every projection of the parallel block (PEFT's names for Phi).
    let ac = read_json(&out.join("adapter_config.json"));
    let mut targets: Vec<&str> =
        ac["target_modules"].as_array().expect("list").iter().filter_map(Value::as_str).collect();
    targets.sort_unstable();
    assert_eq!(targets, ["dense", "fc1", "fc2", "k_proj", "q_proj", "v_proj"], "{ac}");

    let merged = root.join("merged");
    let (b, a, m) = (base.to_str().expect("utf-8"), out.to_str().expect("utf-8"), merged.to_str().expect("utf-8"));
    ok(finetune(&["merge", "--base", b, "--adapter", a, "--output-dir", m]));
    let mut with_adapter = model(&base);
    with_adapter.store_mut().load_adapter(&out).expect("adapter");
    let ids: Vec<u32> = "Greet dora. hello".bytes().map(u32::from).collect();
    let (x, y) = (logits(&with_adapter, &ids), logits(&model(&merged), &ids));
    let err = max_abs(&x, &y);
    assert!(err <= 1e-4, "merged logits differ from the adapter-applied model by {err}");
    assert!(max_abs(&x, &logits(&model(&base), &ids)) > 1e-3, "the adapter changed nothing");

    let data = write_sft(root, "test.jsonl", 3);
    let d = data.to_str().expect("utf-8");
    let via_adapter = generate(root, "a.jsonl", &["--model", a, "--base", b, "--data", d]);
    assert_eq!(via_adapter, generate(root, "m.jsonl", &["--model", m, "--data", d]));
}
