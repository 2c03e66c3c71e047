//! `bf16 = true` from the command line on the committed tiny random BERT: training runs and reports its
//! kernel, checkpoints stay f32, `eval --bf16` agrees with the f32 evaluation within bf16 rounding, and a bad
//! `FINETUNE_BF16_KERNEL` is refused with exit status 2; LoRA SFT on a Llama decoder in bf16 follows f32, and
//! GPT-2 (no bf16 path) is refused.

mod common;

use std::process::Command;

use common::*;
use finetune_engine::bf16::Kernel;
use serde_json::Value;

fn eval_loss(s: &Setup, model: &std::path::Path, extra: &[&str]) -> f64 {
    let val = s.root.join("validation.csv");
    let mut args = vec![
        "eval",
        "--model",
        model.to_str().unwrap_or_default(),
        "--data",
        val.to_str().unwrap_or_default(),
        "--max-seq-length",
        "16",
        "--batch-size",
        "4",
        "--json",
    ];
    args.extend_from_slice(extra);
    let o = ok(finetune(&args));
    let m: Value = serde_json::from_slice(&o.stdout).expect("eval prints JSON");
    m["eval_loss"].as_f64().unwrap_or(f64::NAN)
}

#[test]
fn bf16_training_runs_saves_f32_and_evaluates_close_to_f32() {
    let s = setup();
    let cfg = config(&s, "out16", "max_steps = 4\nbf16 = true\n");
    let o = ok(finetune(&["train", "--config", cfg.to_str().unwrap_or_default(), "--progress", "off"]));
    let err = stderr(&o);
    assert!(err.contains(&Kernel::current().bf16_line()), "no kernel line:\n{err}");
    let out = s.root.join("out16");
    let all = read_json(&out.join("all_results.json"));
    let train_loss = all["train_loss"].as_f64().unwrap_or(f64::NAN);
    assert!(train_loss.is_finite() && train_loss > 0.0, "train_loss {train_loss}");
    // Checkpoints stay f32: the safetensors header names F32 tensors only.
    let bytes = std::fs::read(out.join("model.safetensors")).expect("model.safetensors");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("header length")) as usize;
    let header = String::from_utf8_lossy(&bytes[8..8 + n]);
    assert!(header.contains("\"F32\"") && !header.contains("BF16"), "checkpoint not f32: {header}");

    let f32_loss = eval_loss(&s, &out, &[]);
    let bf16_loss = eval_loss(&s, &out, &["--bf16"]);
    assert!(
        (f32_loss - bf16_loss).abs() <= 0.02 * f32_loss.abs().max(1.0),
        "eval loss f32 {f32_loss} vs bf16 {bf16_loss}"
    );
}

#[test]
fn a_bad_kernel_variable_is_refused() {
    let s = setup();
    let cfg = config(&s, "bad", "max_steps = 1\nbf16 = true\n");
    let o = Command::new(env!("CARGO_BIN_EXE_finetune"))
        .args(["train", "--config", cfg.to_str().unwrap_or_default(), "--progress", "off"])
        .env("FINETUNE_BF16_KERNEL", "tpu")
        .output()
        .expect("run finetune");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("FINETUNE_BF16_KERNEL"), "{}", stderr(&o));
    assert!(!s.root.join("bad").exists(), "nothing written on refusal");
}

/// `finetune sft` with `bf16 = true`: LoRA SFT on the tiny Llama GGUF trains with losses within bf16 rounding of
/// the f32 run's and saves f32 adapters; GPT-2 (no bf16 path yet) is refused by name before anything is written.
#[test]
fn sft_trains_in_bf16_and_gpt2_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let gguf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/gguf/tiny_llama.gguf");
    let train = write_sft(root, "train.jsonl", 16);
    let run = |name: &str, bf16: bool| {
        let out = root.join(name);
        let o = ok(tiny_sft(&gguf, &out, &train, 64, &["use_peft=true", &format!("bf16={bf16}")]));
        (out, o)
    };
    let (f32_out, _) = run("f32", false);
    let (bf16_out, o) = run("bf16", true);
    assert!(stderr(&o).contains(&Kernel::current().bf16_line()), "{}", stderr(&o));
    let (a, b) = (losses(&f32_out), losses(&bf16_out));
    assert_eq!(a.len(), b.len());
    for (step, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!((x - y).abs() <= 0.03 * x.abs().max(1.0), "step {}: bf16 loss {y} vs f32 {x}", step + 1);
    }
    let adapter = finetune_models::checkpoint::load_state_dict(bf16_out.join("adapter_model.safetensors"));
    assert!(!adapter.expect("adapter").is_empty());

    let gpt2 = byte_level_model(root, "tiny_gpt2", &["transformer.wte.weight"]);
    let o = tiny_sft(&gpt2, &root.join("gpt2"), &train, 64, &["bf16=true"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("GPT2LMHeadModel"), "{}", stderr(&o));
    assert!(!root.join("gpt2").exists(), "nothing written on refusal");
}
