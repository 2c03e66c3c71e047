//! `finetune sft | generate | compare | perplexity | merge` end to end on the tiny random Llama GGUF
//! (crates/models/tests/fixtures/gguf/tiny_llama.gguf: weights, byte-level BPE tokenizer and chat template).

mod common;

use std::path::{Path, PathBuf};

use common::{finetune, ok, read_json, sft_with, stderr};

fn gguf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/gguf/tiny_llama.gguf")
}

const NAMES: &[&str] = &["anna", "bob", "carl", "dora", "emil", "fay", "gus", "hana"];

fn write_sft(dir: &Path, name: &str, n: usize) -> PathBuf {
    let mut text = String::new();
    for i in 0..n {
        let who = NAMES[i % NAMES.len()];
        let line = serde_json::json!({"prompt": format!("Greet {who}."), "completion": format!("hello {who}")});
        text.push_str(&line.to_string());
        text.push('\n');
    }
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write data");
    p
}

fn write_text(dir: &Path) -> PathBuf {
    let mut text = String::new();
    for i in 0..12 {
        let line = serde_json::json!({"text": format!("{} met {} at noon.", NAMES[i % 8], NAMES[(i + 3) % 8])});
        text.push_str(&line.to_string());
        text.push('\n');
    }
    let p = dir.join("text.jsonl");
    std::fs::write(&p, text).expect("write text");
    p
}

fn sft(out: &Path, train: &Path, test: &Path, extra: &[&str]) -> std::process::Output {
    let model = gguf();
    let sets = [
        format!("model_name_or_path={}", model.display()),
        format!("train_file={}", train.display()),
        format!("test_file={}", test.display()),
        format!("output_dir={}", out.display()),
        "max_steps=4".into(),
        "per_device_train_batch_size=4".into(),
        "learning_rate=1e-2".into(),
        "logging_steps=1".into(),
        "save_steps=2".into(),
        "max_new_tokens=4".into(),
        "max_seq_length=64".into(),
    ];
    sft_with(&sets, extra)
}

#[test]
fn full_fine_tuning_writes_an_hf_model_and_test_metrics() {
    let tmp = tempfile::tempdir().expect("tmp");
    let train = write_sft(tmp.path(), "train.jsonl", 16);
    let test = write_sft(tmp.path(), "test.jsonl", 4);
    let out = tmp.path().join("out");
    ok(sft(&out, &train, &test, &[]));
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    assert!(out.join("checkpoint-4/trainer_state.json").is_file());
    let all = read_json(&out.join("all_results.json"));
    for k in ["train_loss", "test_loss", "test_perplexity", "test_bleu", "test_chrf", "test_rougeL", "test_exact_match"]
    {
        assert!(all[k].is_number(), "{k} missing in {all}");
    }
    let preds = std::fs::read_to_string(out.join("predictions.jsonl")).expect("predictions");
    assert_eq!(preds.lines().count(), 4);
    let report = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    assert!(report.contains("training loss") && report.contains("test_bleu"), "sft report lacks the loss or metrics");
    // The test generations beside their references.
    assert!(report.contains("(first 4)</h2>") && report.matches("<td class=\"text\">").count() == 8, "generations");
    // The saved directory loads again (as a plain HF model) for generation.
    let gen_out = tmp.path().join("gen.jsonl");
    let o = ok(finetune(&[
        "generate",
        "--model",
        &out.display().to_string(),
        "--data",
        &test.display().to_string(),
        "--out",
        &gen_out.display().to_string(),
        "--max-new-tokens",
        "4",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(v["metrics"]["bleu"].is_number());
    // Generation is deterministic (greedy) and equals what `sft` wrote for the test set.
    let a: Vec<serde_json::Value> = preds
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("line")["prediction"].clone())
        .collect();
    let b: Vec<serde_json::Value> = std::fs::read_to_string(&gen_out)
        .expect("gen")
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("line")["prediction"].clone())
        .collect();
    assert_eq!(a, b);
}

#[test]
fn lora_adapter_merge_and_compare() {
    let tmp = tempfile::tempdir().expect("tmp");
    let train = write_sft(tmp.path(), "train.jsonl", 16);
    let test = write_sft(tmp.path(), "test.jsonl", 6);
    let out = tmp.path().join("lora");
    ok(sft(&out, &train, &test, &["use_peft=true", "lora_r=4", "lora_alpha=8", "lora_target_modules=q_proj,v_proj"]));
    let cfg = read_json(&out.join("adapter_config.json"));
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["r"], 4);
    assert!(out.join("adapter_model.safetensors").is_file());
    assert!(!out.join("model.safetensors").exists(), "a LoRA run saves the adapter, not the full model");

    let base = gguf().display().to_string();
    let merged = tmp.path().join("merged");
    ok(finetune(&[
        "merge",
        "--base",
        &base,
        "--adapter",
        &out.display().to_string(),
        "--output-dir",
        &merged.display().to_string(),
    ]));
    assert!(merged.join("model.safetensors").is_file());

    // The adapter on the base and the merged model generate the same text.
    let run_gen = |model: &str, extra: &[&str], name: &str| {
        let p = tmp.path().join(name);
        let mut args = vec!["generate", "--model", model, "--data"];
        let data = test.display().to_string();
        let ps = p.display().to_string();
        args.extend([data.as_str(), "--out", ps.as_str(), "--max-new-tokens", "4"]);
        args.extend(extra);
        ok(finetune(&args));
        std::fs::read_to_string(&p).expect("gen")
    };
    let a = run_gen(&out.display().to_string(), &["--base", &base], "a.jsonl");
    let b = run_gen(&merged.display().to_string(), &[], "b.jsonl");
    assert_eq!(a, b);
    // From int8 weights (the adapter merged first): a prediction for every record.
    let c = run_gen(&out.display().to_string(), &["--base", &base, "--int8"], "c.jsonl");
    assert_eq!(c.lines().count(), a.lines().count());

    let o = ok(finetune(&[
        "compare",
        "--base",
        &base,
        "--tuned",
        &out.display().to_string(),
        "--data",
        &test.display().to_string(),
        "--max-new-tokens",
        "4",
        "--output-dir",
        &tmp.path().join("cmp").display().to_string(),
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    // --output-dir: the same comparison on disk, the generations, and a report with both.
    let cmp = tmp.path().join("cmp");
    let saved = read_json(&cmp.join("compare_results.json"));
    assert_eq!(saved["metrics"], v["metrics"]);
    assert_eq!(std::fs::read_to_string(cmp.join("generations.jsonl")).expect("generations").lines().count(), 6);
    let html = std::fs::read_to_string(cmp.join("report.html")).expect("report");
    assert!(html.contains("Comparison: cmp") && html.contains("<td>perplexity</td>"), "compare table");
    assert!(html.contains("Generations: cmp (first 6)") && html.matches("<td class=\"text\">").count() == 18);
    for k in ["bleu", "chrf", "rougeL", "exact_match"] {
        let m = &v["metrics"][k];
        assert!(m["base"].is_number() && m["tuned"].is_number(), "{k}: {m}");
        // No p-value when both score the same (nothing to test).
        match m["p_value"].as_f64() {
            Some(p) => assert!(p > 0.0 && p <= 1.0 && m["delta"] != 0.0, "{k}: {m}"),
            None => assert!(m["p_value"].is_null() && m["delta"] == 0.0, "{k}: {m}"),
        }
    }
    assert_eq!(v["n"], 6);
}

#[test]
fn continued_pretraining_on_text_and_perplexity() {
    let tmp = tempfile::tempdir().expect("tmp");
    let text = write_text(tmp.path());
    let out = tmp.path().join("clm");
    ok(sft(&out, &text, &text, &["block_size=16", "packing=false"]));
    let all = read_json(&out.join("all_results.json"));
    assert!(all["test_perplexity"].as_f64().expect("ppl") > 1.0);
    assert!(all.get("test_bleu").is_none(), "text data has no generation metrics");
    let o = ok(finetune(&[
        "perplexity",
        "--model",
        &out.display().to_string(),
        "--data",
        &text.display().to_string(),
        "--max-length",
        "16",
        "--stride",
        "8",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(v["perplexity"].as_f64().expect("ppl") > 1.0);
    assert!(v["windows"].as_u64().expect("windows") > 1);
}

#[test]
fn packed_training_runs_and_bad_records_name_file_and_line() {
    let tmp = tempfile::tempdir().expect("tmp");
    let train = write_sft(tmp.path(), "train.jsonl", 16);
    let test = write_sft(tmp.path(), "test.jsonl", 2);
    ok(sft(&tmp.path().join("packed"), &train, &test, &["packing=true"]));

    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\"}\n").expect("write");
    let out = tmp.path().join("never");
    let o = sft(&out, &bad, &test, &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("bad.jsonl:2"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!out.exists(), "nothing is written when the input is bad");

    let o = sft(&out, &train, &test, &["lora_r=abc"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("lora_r"));
    let o = sft(&out, &train, &test, &["lora_rank=4"]);
    assert!(stderr(&o).contains("did you mean `lora_r`"), "{}", stderr(&o));
}

/// Long prompts with max_seq_length 64: keep_completion (the default) keeps every test example and cuts only the
/// prompt; keep_start (TRL's default) loses the completions of long prompts and drops those examples.
#[test]
fn truncation_mode_keeps_every_long_example() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut text = String::new();
    for i in 0..6 {
        let who = NAMES[i % NAMES.len()];
        let story = format!("{who} walked to the market and bought bread. ").repeat(i);
        let line = serde_json::json!({"prompt": format!("Summarise: {story}\nWho?"), "completion": who});
        text.push_str(&line.to_string());
        text.push('\n');
    }
    let data = tmp.path().join("long.jsonl");
    std::fs::write(&data, text).expect("write");
    let out = tmp.path().join("out");
    let o = ok(sft(&out, &data, &data, &["do_predict=true"]));
    let err = stderr(&o);
    assert!(err.contains("6 examples,") && err.contains("0 dropped"), "{err}");
    let cut: usize = err
        .split("fitted by cutting the prompt")
        .next()
        .and_then(|s| s.rsplit(": ").next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in {err}"));
    assert!(cut >= 4, "{err}");
    let all = read_json(&out.join("all_results.json"));
    assert_eq!(all["test_samples"], 6.0, "{all}");
    assert_eq!(std::fs::read_to_string(out.join("predictions.jsonl")).expect("predictions").lines().count(), 6);

    let out2 = tmp.path().join("out2");
    let o = ok(sft(&out2, &data, &data, &["do_predict=true", "truncation_mode=keep_start"]));
    let err = stderr(&o);
    assert!(err.contains("(keep_start)") && !err.contains(" 0 dropped"), "{err}");
    let all = read_json(&out2.join("all_results.json"));
    assert!(all["test_samples"].as_f64().expect("samples") < 6.0, "{all}");

    let o = sft(&tmp.path().join("out3"), &data, &data, &["truncation_mode=middle"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("truncation_mode"), "{}", stderr(&o));
}

#[test]
fn label_smoothing_factor_changes_the_training_loss() {
    let tmp = tempfile::tempdir().expect("tmp");
    let train = write_sft(tmp.path(), "train.jsonl", 8);
    let test = write_sft(tmp.path(), "test.jsonl", 2);
    let loss = |name: &str, eps: &str| {
        let out = tmp.path().join(name);
        ok(sft(&out, &train, &test, &[&format!("label_smoothing_factor={eps}"), "max_new_tokens=1"]));
        read_json(&out.join("all_results.json"))["train_loss"].as_f64().expect("train_loss")
    };
    let (plain, smoothed) = (loss("plain", "0.0"), loss("smoothed", "0.3"));
    assert!(plain.is_finite() && smoothed.is_finite());
    assert!((plain - smoothed).abs() > 1e-4, "label_smoothing_factor had no effect: {plain} vs {smoothed}");
}
