//! `finetune train` with `task = "fill-mask"` (run_mlm.py) end to end on the committed tiny random BERT: the saved
//! `BertForMaskedLM` directory, masked-token metrics, bitwise resume, `eval` and `predict` (the fill-mask
//! pipeline's output) of the saved model, fine-tuning a classifier from it, and the keys that do not apply.

mod common;
use common::*;

fn mlm_config(s: &Setup, out: &str, extra: &str) -> std::path::PathBuf {
    config(s, out, &format!("task = \"fill-mask\"\n{extra}"))
}

fn run(cfg: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["train", "--config", cfg.to_str().unwrap_or_default(), "--progress", "off"];
    args.extend_from_slice(extra);
    finetune(&args)
}

#[test]
fn fill_mask_trains_saves_a_masked_lm_and_lowers_the_masked_token_loss() {
    let s = setup();
    // The base model's masked-token loss on the validation blocks, before any training.
    let before = mlm_config(&s, "before", "");
    ok(run(&before, &["--do-eval"]));
    let loss0 = read_json(&s.root.join("before/eval_results.json"))["eval_loss"].as_f64().expect("eval_loss");

    let cfg = mlm_config(&s, "mlm", "eval_strategy = \"epoch\"\nnum_train_epochs = 10\n");
    let o = ok(run(&cfg, &[]));
    assert!(stderr(&o).contains("newly initialized"), "the base checkpoint has no LM head: {}", stderr(&o));
    let out = s.root.join("mlm");
    let config = read_json(&out.join("config.json"));
    assert_eq!(config["architectures"], serde_json::json!(["BertForMaskedLM"]));
    let names = finetune_models::checkpoint::load_state_dict(out.join("model.safetensors")).expect("weights");
    for k in
        ["cls.predictions.bias", "cls.predictions.transform.dense.weight", "bert.embeddings.word_embeddings.weight"]
    {
        assert!(names.contains_key(k), "{k} saved");
    }
    assert!(!names.contains_key("cls.predictions.decoder.weight"), "the tied decoder weight is not saved twice");
    assert!(!names.keys().any(|k| k.contains("pooler")), "BertForMaskedLM has no pooler");

    let eval = read_json(&out.join("eval_results.json"));
    let (loss, acc, ppl) = (
        eval["eval_loss"].as_f64().expect("loss"),
        eval["eval_accuracy"].as_f64().expect("accuracy"),
        eval["eval_perplexity"].as_f64().expect("perplexity"),
    );
    assert!((ppl - loss.exp()).abs() <= 1e-9 * ppl, "perplexity is exp(loss)");
    assert!((0.0..=1.0).contains(&acc));
    assert!(loss < loss0 - 0.5, "training lowers the masked-token loss: {loss0} → {loss}");

    // `finetune eval` of the saved model scores its own texts; the run's masks differ (seed), the scale not.
    let v = s.root.join("validation.csv");
    let (model, data) = (out.to_str().unwrap_or_default(), v.to_str().unwrap_or_default());
    let o = ok(finetune(&["eval", "--model", model, "--data", data, "--max-seq-length", "16"]));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).expect("metrics JSON");
    assert!(m["eval_loss"].as_f64().expect("loss") < loss0, "{m}");
}

#[test]
fn resume_from_checkpoint_matches_an_uninterrupted_run_bitwise() {
    let s = setup();
    let cfg = mlm_config(&s, "full", "max_steps = 6\nhidden_dropout_prob = 0.1\n");
    ok(run(&cfg, &["--do-train"]));
    let full = s.root.join("full");
    let resumed = s.root.join("resumed");
    let from = full.join("checkpoint-2");
    ok(run(
        &cfg,
        &[
            "--do-train",
            "--output-dir",
            resumed.to_str().unwrap_or_default(),
            "--resume-from-checkpoint",
            from.to_str().unwrap_or_default(),
        ],
    ));
    let a = std::fs::read(full.join("model.safetensors")).expect("full");
    let b = std::fs::read(resumed.join("model.safetensors")).expect("resumed");
    assert!(a == b, "resumed weights differ from the uninterrupted run");
    // Six steps over three epochs: every epoch masked anew, so the losses of the epochs' steps differ.
    let state = read_json(&full.join("trainer_state.json"));
    let losses: Vec<f64> =
        state["log_history"].as_array().expect("history").iter().filter_map(|e| e["loss"].as_f64()).collect();
    assert_eq!(losses.len(), 6, "{losses:?}");
}

#[test]
fn predict_lists_the_top_tokens_per_mask_and_a_classifier_fine_tunes_from_the_adapted_model() {
    let s = setup();
    let cfg = mlm_config(&s, "mlm", "");
    ok(run(&cfg, &[]));
    let out = s.root.join("mlm");
    let texts = s.root.join("masked.csv");
    std::fs::write(&texts, "text\ngood [MASK] great\n[MASK] awful [MASK]\n").expect("write");
    let preds = s.root.join("preds.jsonl");
    ok(finetune(&[
        "predict",
        "--model",
        out.to_str().unwrap_or_default(),
        "--data",
        texts.to_str().unwrap_or_default(),
        "--out",
        preds.to_str().unwrap_or_default(),
    ]));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&preds)
        .expect("predictions")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["masks"].as_array().expect("masks").len(), 1);
    assert_eq!(lines[1]["masks"].as_array().expect("masks").len(), 2);
    for m in lines.iter().flat_map(|l| l["masks"].as_array().expect("masks").iter()) {
        let top = m.as_array().expect("candidates");
        assert_eq!(top.len(), 5);
        let scores: Vec<f64> = top.iter().map(|c| c["score"].as_f64().expect("score")).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "sorted: {scores:?}");
        assert!(scores.iter().sum::<f64>() <= 1.0 + 1e-9);
        assert!(top.iter().all(|c| c["token_str"].is_string() && c["sequence"].is_string()));
    }
    // A text without a mask token is refused with its row.
    std::fs::write(&texts, "text\ngood [MASK]\nno mask here\n").expect("write");
    let o = finetune(&[
        "predict",
        "--model",
        out.to_str().unwrap_or_default(),
        "--data",
        texts.to_str().unwrap_or_default(),
        "--out",
        s.root.join("p2.jsonl").to_str().unwrap_or_default(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("masked.csv:3: no mask token") && e.trim_end().lines().count() == 1, "{e}");
    assert_eq!(o.status.code(), Some(2));
    assert!(!s.root.join("p2.jsonl").exists());
    // An option only classification reads is refused by name.
    let o = finetune(&[
        "eval",
        "--model",
        out.to_str().unwrap_or_default(),
        "--data",
        texts.to_str().unwrap_or_default(),
        "--text-pair-column-name",
        "other",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--text-pair-column-name"), "{}", stderr(&o));

    // Sequence classification from the adapted encoder: the LM head is dropped, pooler and classifier are new.
    let cls = config(&s, "cls", &format!("model_name_or_path = {:?}\nmax_steps = 4\n", out.display().to_string()));
    let cls = std::fs::read_to_string(&cls).expect("config").replacen("model_name_or_path", "# base", 1);
    let cls_path = s.root.join("cls2.toml");
    std::fs::write(&cls_path, cls).expect("write");
    let o = ok(finetune(&["train", "--config", cls_path.to_str().unwrap_or_default(), "--progress", "off"]));
    let e = stderr(&o);
    assert!(e.contains("bert.pooler.dense.weight") && e.contains("classifier.weight"), "{e}");
    let c = read_json(&s.root.join("cls/config.json"));
    assert_eq!(c["architectures"], serde_json::json!(["BertForSequenceClassification"]));
    assert!(read_json(&s.root.join("cls/test_results.json"))["test_accuracy"].is_number());
}

#[test]
fn keys_that_do_not_apply_are_refused_by_name() {
    let s = setup();
    for (task, extra, key) in [
        ("sequence-classification", "mlm_probability = 0.2\n", "mlm_probability"),
        ("token-classification", "whole_word_mask = true\n", "whole_word_mask"),
        ("fill-mask", "class_weight = \"balanced\"\n", "class_weight"),
        ("fill-mask", "problem_type = \"regression\"\n", "problem_type"),
        ("fill-mask", "whole_word_mask = true\nmask_replace_prob = 0.9\n", "whole_word_mask"),
        ("fill-mask", "mlm_probability = 1.5\n", "mlm_probability"),
    ] {
        let cfg = config(&s, "x", &format!("task = {task:?}\n{extra}"));
        let o = run(&cfg, &[]);
        assert!(!o.status.success(), "{task} with {extra}");
        let e = stderr(&o);
        assert!(e.contains(&format!("`{key}`")), "{task} {extra}: {e}");
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
        assert!(!s.root.join("x").exists(), "nothing written");
    }
}

#[test]
fn line_by_line_and_whole_word_masking_train() {
    let s = setup();
    // The task as a flag (`finetune train --task fill-mask`), the rest from the run file.
    let cfg = config(&s, "lbl", "line_by_line = true\nwhole_word_mask = true\nmax_steps = 3\n");
    ok(run(&cfg, &["--task", "fill-mask"]));
    let r = read_json(&s.root.join("lbl/all_results.json"));
    assert!(r["train_loss"].as_f64().expect("loss").is_finite());
    assert_eq!(r["eval_samples"], serde_json::json!(8), "one validation sequence per text");
}
