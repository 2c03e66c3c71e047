//! `finetune train`, `eval` and `predict` end to end on the committed tiny random BERT (no downloaded assets):
//! HF output layout, reload equality, resume equality, and one-line errors with exit status 2.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn train_writes_hf_layout_and_the_saved_model_reloads() {
    let s = setup();
    let cfg = config(&s, "out", "max_steps = 3\neval_strategy = \"steps\"\neval_steps = 2\n");
    ok(finetune(&["train", "--config", cfg.to_str().unwrap_or_default(), "--progress", "off"]));
    let out = s.root.join("out");

    let state = read_json(&out.join("checkpoint-2/trainer_state.json"));
    let history = state["log_history"].as_array().expect("log_history");
    assert!(history.iter().any(|e| e.get("loss").is_some()), "no training loss logged: {history:?}");
    assert!(history.iter().any(|e| e.get("eval_loss").is_some()), "no evaluation logged at step 2");
    assert!(out.join("checkpoint-3/optimizer.safetensors").is_file());
    assert_eq!(read_json(&out.join("trainer_state.json"))["global_step"], 3);

    let all = read_json(&out.join("all_results.json"));
    for k in ["train_loss", "eval_loss", "eval_accuracy", "eval_f1", "test_loss", "test_accuracy", "test_f1"] {
        assert!(all[k].is_number(), "all_results.json lacks {k}: {all}");
    }
    assert_eq!(all["eval_samples"], 8);

    let config = read_json(&out.join("config.json"));
    assert_eq!(config["architectures"], serde_json::json!(["BertForSequenceClassification"]));
    assert_eq!(config["id2label"], serde_json::json!({"0": "neg", "1": "pos"}));
    assert_eq!(config["label2id"], serde_json::json!({"neg": 0, "pos": 1}));
    assert_eq!(config["problem_type"], "single_label_classification");
    assert!(out.join("model.safetensors").is_file() && out.join("vocab.txt").is_file());
    let preds = std::fs::read_to_string(out.join("predictions.jsonl")).expect("predictions");
    assert_eq!(preds.lines().count(), 8);

    // The saved model gives the same validation loss through `finetune eval`.
    let val = s.root.join("validation.csv");
    let o = ok(finetune(&[
        "eval",
        "--model",
        out.to_str().unwrap_or_default(),
        "--data",
        val.to_str().unwrap_or_default(),
        "--max-seq-length",
        "16",
        "--batch-size",
        "4",
        "--json",
    ]));
    let m: Value = serde_json::from_slice(&o.stdout).expect("eval prints JSON");
    let eval = read_json(&out.join("eval_results.json"));
    let (a, b) = (m["eval_loss"].as_f64().unwrap_or(f64::NAN), eval["eval_loss"].as_f64().unwrap_or(f64::NAN));
    assert_eq!(a, b, "eval loss after reload {a} differs from the run's {b}");
    assert_eq!(m["eval_accuracy"], eval["eval_accuracy"]);

    let p = s.root.join("p.jsonl");
    ok(finetune(&[
        "predict",
        "--model",
        out.to_str().unwrap_or_default(),
        "--data",
        s.root.join("test.csv").to_str().unwrap_or_default(),
        "--out",
        p.to_str().unwrap_or_default(),
        "--max-seq-length",
        "16",
    ]));
    let first: Value =
        serde_json::from_str(std::fs::read_to_string(&p).unwrap_or_default().lines().next().unwrap_or(""))
            .expect("jsonl");
    let probs = first["probabilities"].as_object().expect("probabilities");
    let total: f64 = probs.values().filter_map(Value::as_f64).sum();
    assert!((total - 1.0).abs() < 1e-9 && probs.contains_key("pos") && first["label"].is_string());
}

#[test]
fn split_of_one_file_trains_and_tests() {
    let s = setup();
    let cfg = s.root.join("split.toml");
    let text = format!(
        "model_name_or_path = {:?}\ntrain_file = {:?}\nsplit = \"80/10/10\"\noutput_dir = {:?}\nmax_steps = 2\n\
         per_device_train_batch_size = 4\nmax_seq_length = 16\n",
        s.model.display().to_string(),
        s.root.join("train.csv").display().to_string(),
        s.root.join("split-out").display().to_string()
    );
    std::fs::write(&cfg, text).expect("config");
    let o = ok(finetune(&["train", "--config", cfg.to_str().unwrap_or_default(), "--progress", "off"]));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("macro avg"), "no classification report:\n{stdout}");
    let all = read_json(&s.root.join("split-out/all_results.json"));
    // 24 examples, two balanced classes: 80/10/10 stratified gives 2 validation and 2 test examples... at least one.
    assert!(all["test_samples"].as_u64().unwrap_or(0) >= 1 && all["eval_samples"].as_u64().unwrap_or(0) >= 1);
}

#[test]
fn bad_config_key_names_the_key_and_writes_nothing() {
    let s = setup();
    let cfg = config(&s, "bad", "lerning_rate = 3e-5\n");
    let o = finetune(&["train", "--config", cfg.to_str().unwrap_or_default()]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("`lerning_rate`") && e.contains("learning_rate"), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(!s.root.join("bad").exists());

    let cfg = config(&s, "bad2", "");
    let o = finetune(&["train", "--config", cfg.to_str().unwrap_or_default(), "--set", "warmup_ration=0.1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("`warmup_ration`"), "{}", stderr(&o));
    assert!(!s.root.join("bad2").exists());
}

#[test]
fn malformed_csv_names_file_and_line() {
    let s = setup();
    let bad = s.root.join("bad.csv");
    std::fs::write(&bad, "text,label\ngood movie,pos\n\"unterminated,neg\n").expect("write");
    let cfg = config(&s, "csv", "max_steps = 1\n");
    let o = finetune(&[
        "train",
        "--config",
        cfg.to_str().unwrap_or_default(),
        "--train-file",
        bad.to_str().unwrap_or_default(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains(&format!("{}:3", bad.display())), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(!s.root.join("csv").exists());
}

#[test]
fn resume_from_checkpoint_matches_an_uninterrupted_run_bitwise() {
    let s = setup();
    let cfg = config(&s, "full", "max_steps = 4\n");
    let cfg = cfg.to_str().unwrap_or_default();
    ok(finetune(&["train", "--config", cfg, "--progress", "off", "--do-train"]));
    let full = s.root.join("full");
    let resumed = s.root.join("resumed");
    ok(finetune(&[
        "train",
        "--config",
        cfg,
        "--progress",
        "off",
        "--do-train",
        "--output-dir",
        resumed.to_str().unwrap_or_default(),
        "--resume-from-checkpoint",
        full.join("checkpoint-2").to_str().unwrap_or_default(),
    ]));
    let a = std::fs::read(full.join("model.safetensors")).expect("full model");
    let b = std::fs::read(resumed.join("model.safetensors")).expect("resumed model");
    assert!(a == b, "resumed weights differ from the uninterrupted run");
    let (x, y) = (read_json(&full.join("train_results.json")), read_json(&resumed.join("train_results.json")));
    assert_eq!(x["train_loss"], y["train_loss"]);
    // And training moved the weights at all.
    let init = std::fs::read(full.join("checkpoint-2/model.safetensors")).expect("checkpoint");
    assert!(init != a);
}

/// Without dropout, two accumulated micro-batches of 2 make the same update as one batch of 4 (up to float
/// summation order): the loss of an accumulation window is normalised over the whole window.
#[test]
fn gradient_accumulation_matches_a_larger_batch() {
    let s = setup();
    let cfg_path = s.model.join("config.json");
    let mut cfg = read_json(&cfg_path);
    cfg["hidden_dropout_prob"] = 0.0.into();
    cfg["attention_probs_dropout_prob"] = 0.0.into();
    std::fs::write(&cfg_path, cfg.to_string()).expect("config");
    let run = |out: &str, bs: &str, gas: &str| {
        let c = config(&s, out, &format!("max_steps = 3\ngradient_accumulation_steps = {gas}\n"));
        let c = c.to_str().unwrap_or_default().to_string();
        ok(finetune(&["train", "--config", &c, "--progress", "off", "--per-device-train-batch-size", bs]));
        read_json(&s.root.join(out).join("all_results.json"))
    };
    let big = run("big", "4", "1");
    let acc = run("acc", "2", "2");
    for k in ["train_loss", "eval_loss", "test_loss"] {
        let (a, b) = (big[k].as_f64().unwrap_or(f64::NAN), acc[k].as_f64().unwrap_or(f64::NAN));
        assert!((a - b).abs() < 1e-5, "{k}: batch 4 gives {a}, 2 x 2 accumulated gives {b}");
    }
}

/// A test file without labels (as run_glue.py's) is predicted only: predictions, no test metrics.
#[test]
fn unlabelled_test_file_is_predicted_only() {
    let s = setup();
    std::fs::write(s.root.join("test.csv"), "text\ngood nice\nawful dull bad\n").expect("write");
    let cfg = config(&s, "unl", "max_steps = 1\n");
    ok(finetune(&["train", "--config", cfg.to_str().unwrap_or_default(), "--progress", "off"]));
    let out = s.root.join("unl");
    let preds = std::fs::read_to_string(out.join("predict_results.txt")).expect("predict_results.txt");
    assert_eq!(preds.lines().count(), 3, "{preds}");
    assert!(!out.join("test_results.json").exists());
    assert!(read_json(&out.join("all_results.json")).get("test_loss").is_none());
}

/// Multi-label (BCE) and regression (MSE) heads train, save their problem_type and predict in their own shape.
#[test]
fn multi_label_and_regression_heads() {
    let s = setup();
    let mut multi = String::from("text,label\n");
    let mut reg = String::from("text,label\n");
    for i in 0..16 {
        let (w, tags) = match i % 3 {
            0 => ("good nice", "pos|light"),
            1 => ("bad dull", "neg"),
            _ => ("good bad", "pos|neg"),
        };
        multi.push_str(&format!("{w},{tags}\n"));
        reg.push_str(&format!("{w},{}\n", (i % 3) as f64 * 0.5));
    }
    std::fs::write(s.root.join("multi.csv"), multi).expect("write");
    std::fs::write(s.root.join("reg.csv"), reg).expect("write");
    for (name, extra) in [
        ("multi", "problem_type = \"multi_label_classification\"\nlabel_separator = \"|\"\n"),
        ("reg", "problem_type = \"regression\"\n"),
    ] {
        let data = s.root.join(format!("{name}.csv"));
        let d = data.to_str().unwrap_or_default();
        let cfg = config(&s, name, &format!("max_steps = 2\n{extra}"));
        let c = cfg.to_str().unwrap_or_default();
        ok(finetune(&[
            "train",
            "--config",
            c,
            "--progress",
            "off",
            "--train-file",
            d,
            "--validation-file",
            d,
            "--test-file",
            d,
        ]));
        let out = s.root.join(name);
        let config = read_json(&out.join("config.json"));
        let all = read_json(&out.join("all_results.json"));
        assert!(all["eval_loss"].is_number() && all["test_loss"].is_number(), "{all}");
        let first: Value = serde_json::from_str(
            std::fs::read_to_string(out.join("predictions.jsonl")).unwrap_or_default().lines().next().unwrap_or(""),
        )
        .expect("jsonl");
        if name == "multi" {
            assert_eq!(config["problem_type"], "multi_label_classification");
            assert_eq!(config["id2label"].as_object().map(|m| m.len()), Some(3));
            assert!(first["labels"].is_array() && first["probabilities"]["light"].is_number(), "{first}");
        } else {
            assert_eq!(config["problem_type"], "regression");
            assert_eq!(config["id2label"], serde_json::json!({"0": "LABEL_0"}));
            assert!(first["prediction"].is_number(), "{first}");
            assert!(all["eval_mse"].is_number());
            // eval reloads the regression head.
            let o = ok(finetune(&["eval", "--model", out.to_str().unwrap_or_default(), "--data", d, "--json"]));
            let m: Value = serde_json::from_slice(&o.stdout).expect("json");
            assert!(m["eval_mse"].is_number(), "{m}");
        }
    }
}

#[test]
fn token_classification_trains_evaluates_and_predicts_words() {
    let s = setup();
    let cfg = ner_config(&s, "ner", "max_steps = 3\neval_strategy = \"steps\"\neval_steps = 2\n");
    let o = ok(finetune(&["train", "--config", cfg.to_str().unwrap_or_default(), "--progress", "off"]));
    let out = s.root.join("ner");
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(stdout.contains("micro avg") && stdout.contains("POS"), "no seqeval report of the test set: {stdout}");

    let history = read_json(&out.join("checkpoint-2/trainer_state.json"))["log_history"].clone();
    assert!(history.as_array().is_some_and(|h| h.iter().any(|e| e.get("eval_f1").is_some())), "{history}");
    assert!(out.join("checkpoint-3/optimizer.safetensors").is_file());
    let all = read_json(&out.join("all_results.json"));
    for k in ["train_loss", "eval_loss", "eval_precision", "eval_recall", "eval_f1", "eval_accuracy", "test_f1"] {
        assert!(all[k].is_number(), "all_results.json lacks {k}: {all}");
    }
    assert_eq!(all["eval_samples"], 8);

    let config = read_json(&out.join("config.json"));
    assert_eq!(config["architectures"], serde_json::json!(["BertForTokenClassification"]));
    let id2label = serde_json::json!({"0": "B-NEG", "1": "B-POS", "2": "I-NEG", "3": "I-POS", "4": "O"});
    assert_eq!(config["id2label"], id2label);
    assert_eq!(config["label2id"]["O"], 4);
    assert!(config.get("problem_type").is_none_or(Value::is_null), "{config}");

    // Word-level predictions of the test set: one tag per word.
    let test = std::fs::read_to_string(s.root.join("test.conll")).expect("test");
    let words: Vec<usize> = test.split("\n\n").filter(|b| !b.trim().is_empty()).map(|b| b.lines().count()).collect();
    let preds = std::fs::read_to_string(out.join("predictions.jsonl")).expect("predictions");
    let got: Vec<usize> = preds
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("jsonl");
            assert_eq!(v["tokens"].as_array().map(Vec::len), v["tags"].as_array().map(Vec::len), "{v}");
            v["tags"].as_array().map_or(0, Vec::len)
        })
        .collect();
    assert_eq!(got, words);

    // `finetune eval` on the saved model reproduces the run's validation loss and metrics.
    let val = s.root.join("validation.conll");
    let eval_args = |json: bool| {
        let mut v = vec![
            "eval".to_string(),
            "--model".into(),
            out.display().to_string(),
            "--data".into(),
            val.display().to_string(),
            "--max-seq-length".into(),
            "16".into(),
            "--batch-size".into(),
            "4".into(),
        ];
        if json {
            v.push("--json".into());
        }
        v
    };
    let o = ok(finetune(&eval_args(true).iter().map(String::as_str).collect::<Vec<_>>()));
    let m: Value = serde_json::from_slice(&o.stdout).expect("eval prints JSON");
    let eval = read_json(&out.join("eval_results.json"));
    for k in ["eval_loss", "eval_f1", "eval_precision", "eval_recall", "eval_accuracy"] {
        assert!(m[k].is_number(), "{k} missing: {m}");
        assert_eq!(m[k], eval[k], "{k} after reload differs from the run's");
    }
    let o = ok(finetune(&eval_args(false).iter().map(String::as_str).collect::<Vec<_>>()));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("precision") && text.contains("micro avg") && text.contains("NEG"), "{text}");

    let p = s.root.join("p.jsonl");
    ok(finetune(&[
        "predict",
        "--model",
        out.to_str().unwrap_or_default(),
        "--data",
        s.root.join("test.conll").to_str().unwrap_or_default(),
        "--out",
        p.to_str().unwrap_or_default(),
        "--max-seq-length",
        "16",
    ]));
    let lines: Vec<Value> = std::fs::read_to_string(&p)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("jsonl"))
        .collect();
    assert_eq!(lines.iter().map(|v| v["tags"].as_array().map_or(0, Vec::len)).collect::<Vec<_>>(), words);
    let known = ["B-NEG", "B-POS", "I-NEG", "I-POS", "O"];
    assert!(lines
        .iter()
        .flat_map(|v| v["tags"].as_array().cloned().unwrap_or_default())
        .all(|t| t.as_str().is_some_and(|t| known.contains(&t))));
    assert_eq!(std::fs::read_to_string(&p).ok(), std::fs::read_to_string(out.join("predictions.jsonl")).ok());
}

#[test]
fn malformed_conll_names_file_and_line() {
    let s = setup();
    let cfg = ner_config(&s, "badner", "max_steps = 1\n");
    let bad = s.root.join("bad.conll");
    std::fs::write(&bad, "good\tB-POS\nbad\tB-NEG\n\nfine\tB-POS\ndull\n").expect("write");
    let o = finetune(&[
        "train",
        "--config",
        cfg.to_str().unwrap_or_default(),
        "--train-file",
        bad.to_str().unwrap_or_default(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains(&format!("{}:5", bad.display())), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(!s.root.join("badner").exists());
}

#[test]
fn dropout_run_keys_override_the_model_config() {
    let s = setup();
    let extra = "max_steps = 2\nhidden_dropout_prob = 0.0\nattention_probs_dropout_prob = 0.05\n";
    let cfg = config(&s, "drop", extra);
    let set = ["--set", "classifier_dropout=0.3"];
    ok(finetune(&["train", "--config", cfg.to_str().unwrap_or_default(), "--progress", "off", set[0], set[1]]));
    let saved = read_json(&s.root.join("drop/config.json"));
    assert_eq!(saved["hidden_dropout_prob"], 0.0, "{saved}");
    assert_eq!(saved["attention_probs_dropout_prob"], 0.05, "{saved}");
    assert_eq!(saved["classifier_dropout"], 0.3, "{saved}");

    // A data-parallel key in a one-process run is named as unused, not dropped silently.
    let cfg = config(&s, "ddp", "max_steps = 1\nddp_bucket_cap_mb = 5\n");
    let o = finetune(&["train", "--config", cfg.to_str().unwrap_or_default(), "--progress", "lines"]);
    ok(o.clone());
    assert!(stderr(&o).contains("ddp_bucket_cap_mb = 5: not used, this run is one process"), "{}", stderr(&o));
    let o = finetune(&["train", "--config", cfg.to_str().unwrap_or_default(), "--set", "ddp_bucket_cap_mb=0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("ddp_bucket_cap_mb must be > 0"), "{}", stderr(&o));

    let cfg = config(&s, "drop-bad", "");
    let o = finetune(&["train", "--config", cfg.to_str().unwrap_or_default(), "--set", "hidden_dropout_prob=1.5"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("hidden_dropout_prob"), "{}", stderr(&o));
    assert!(!s.root.join("drop-bad").exists());
}

#[test]
fn predictions_jsonl_is_read_as_is_by_the_metrics_commands() {
    let s = setup();
    let cfg = config(&s, "out", "max_steps = 3\n");
    ok(finetune(&["train", "--config", cfg.to_str().unwrap_or_default(), "--progress", "off"]));
    let out = s.root.join("out");
    let all = read_json(&out.join("all_results.json"));
    let preds = out.join("predictions.jsonl");
    let test = s.root.join("test.csv");
    let (p, t) = (preds.to_str().unwrap_or_default(), test.to_str().unwrap_or_default());
    let o = ok(finetune(&["metrics", "classification", "--y-true", t, "--y-pred", p, "--json"]));
    let m: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(m["accuracy_score"].as_f64(), all["test_accuracy"].as_f64(), "{m}");
    let o = ok(finetune(&["metrics", "ranking", "--data", p, "--y-true", t, "--pos-label", "pos", "--json"]));
    let r: Value = serde_json::from_slice(&o.stdout).expect("json");
    let auc = r["roc_auc_score"].as_f64().expect("roc_auc_score");
    let expected = all["test_roc_auc"].as_f64().expect("test_roc_auc");
    assert!((auc - expected).abs() < 1e-12, "{auc} vs {expected}");
    // Without gold labels the predictions alone are refused, naming the file and line.
    let o = finetune(&["metrics", "ranking", "--data", p]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("predictions.jsonl:1"), "{}", stderr(&o));
}

#[test]
fn class_weight_and_label_smoothing_change_the_loss_and_bad_values_are_named() {
    let s = setup();
    let loss = |name: &str, extra: &str| {
        let cfg = config(&s, name, &format!("max_steps = 2\n{extra}"));
        ok(finetune(&["train", "--config", cfg.to_str().unwrap_or_default(), "--progress", "off"]));
        let all = read_json(&s.root.join(name).join("all_results.json"));
        (all["train_loss"].as_f64().expect("train_loss"), all["eval_loss"].as_f64().expect("eval_loss"))
    };
    let base = loss("base", "");
    let weighted = loss("weighted", "class_weight = \"neg:1,pos:3\"\n");
    let balanced = loss("balanced", "class_weight = \"balanced\"\n");
    let smoothed = loss("smoothed", "label_smoothing_factor = 0.2\n");
    assert_ne!(base.0, weighted.0);
    assert_ne!(base.1, weighted.1, "the evaluation loss is weighted too");
    assert_ne!(base.0, smoothed.0);
    // The tiny training set is balanced 12/12: "balanced" weighs every class 1, the unweighted loss.
    assert_eq!(base, balanced);
    for (extra, needle) in [
        ("class_weight = \"neg:1,maybe:2\"\n", "unknown label \"maybe\""),
        ("class_weight = \"neg:-1\"\n", "must be a number >= 0"),
        ("class_weight = \"neg=1\"\n", "not label:weight"),
        ("problem_type = \"multi_label_classification\"\nlabel_smoothing_factor = 0.1\n", "label_smoothing_factor"),
    ] {
        let cfg = config(&s, "bad", &format!("max_steps = 1\n{extra}"));
        let o = finetune(&["train", "--config", cfg.to_str().unwrap_or_default(), "--progress", "off"]);
        assert!(!o.status.success() && stderr(&o).contains(needle), "{extra}: {}", stderr(&o));
        assert!(stderr(&o).contains("class_weight") || stderr(&o).contains("label_smoothing_factor"));
    }
}

#[test]
fn compare_two_classifiers_and_two_ner_models() {
    let s = setup();
    let train = |name: &str, cfg: std::path::PathBuf| {
        ok(finetune(&["train", "--config", cfg.to_str().unwrap_or_default(), "--progress", "off"]));
        (s.root.join(name), read_json(&s.root.join(name).join("all_results.json")))
    };
    let (a, ra) = train("a", config(&s, "a", "max_steps = 1\n"));
    let (b, rb) = train("b", config(&s, "b", "max_steps = 6\n"));
    let test = s.root.join("test.csv");
    let pairs = s.root.join("pairs.jsonl");
    let o = ok(finetune(&[
        "compare",
        "--base",
        a.to_str().unwrap_or_default(),
        "--tuned",
        b.to_str().unwrap_or_default(),
        "--data",
        test.to_str().unwrap_or_default(),
        "--max-seq-length",
        "16",
        "--out",
        pairs.to_str().unwrap_or_default(),
        "--output-dir",
        s.root.join("cmp").to_str().unwrap_or_default(),
        "--json",
    ]));
    let r: Value = serde_json::from_slice(&o.stdout).expect("json");
    let saved = read_json(&s.root.join("cmp/compare_results.json"));
    assert_eq!(saved["metrics"], r, "compare_results.json holds the printed comparison");
    let html = std::fs::read_to_string(s.root.join("cmp/report.html")).expect("report");
    assert!(html.contains("Comparison: cmp") && html.contains("McNemar") && html.contains("<td>macro_f1</td>"));
    assert_eq!(r["accuracy"]["base"]["score"].as_f64(), ra["test_accuracy"].as_f64(), "{r}");
    assert_eq!(r["accuracy"]["tuned"]["score"].as_f64(), rb["test_accuracy"].as_f64(), "{r}");
    for k in ["p_value_paired_bootstrap", "p_value_approximate_randomization"] {
        assert!(r["macro_f1"][k].as_f64().is_some_and(|p| p > 0.0 && p <= 1.0), "{k}: {r}");
    }
    let m = &r["mcnemar"];
    let (b_only, t_only) =
        (m["only_base_correct"].as_u64().unwrap_or(99), m["only_tuned_correct"].as_u64().unwrap_or(99));
    assert_eq!(m["statistic"].as_f64(), Some(b_only.min(t_only) as f64));
    assert_eq!(std::fs::read_to_string(&pairs).unwrap_or_default().lines().count(), 8);

    let (na, nra) = train("na", ner_config(&s, "na", "max_steps = 1\n"));
    let (nb, _) = train("nb", ner_config(&s, "nb", "max_steps = 4\n"));
    let conll = s.root.join("test.conll");
    let o = ok(finetune(&[
        "compare",
        "--base",
        na.to_str().unwrap_or_default(),
        "--tuned",
        nb.to_str().unwrap_or_default(),
        "--data",
        conll.to_str().unwrap_or_default(),
        "--max-seq-length",
        "16",
        "--json",
    ]));
    let r: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(r["entity_f1"]["base"]["score"].as_f64(), nra["test_f1"].as_f64(), "{r}");
    assert_eq!(r["mcnemar"]["unit"], "words");
    // Generation flags are refused for classifiers.
    let o = finetune(&[
        "compare",
        "--base",
        a.to_str().unwrap_or_default(),
        "--tuned",
        b.to_str().unwrap_or_default(),
        "--data",
        test.to_str().unwrap_or_default(),
        "--max-new-tokens",
        "3",
    ]);
    assert!(!o.status.success() && stderr(&o).contains("--max-new-tokens"), "{}", stderr(&o));
}

#[test]
fn augment_table_adds_eda_copies_to_the_training_data_only() {
    let s = setup();
    let wn = mini_wordnet(&s.root);
    let table =
        format!("max_steps = 2\n[augment]\nnum_aug = 2\nalpha_sr = 0.2\nwordnet = {:?}\n", wn.display().to_string());
    let cfg = config(&s, "aug", &table);
    let train = |sets: &[&str]| {
        let mut args = vec!["train", "--config", cfg.to_str().unwrap_or_default(), "--progress", "off"];
        for a in sets {
            args.extend(["--set", a]);
        }
        ok(finetune(&args))
    };
    let o = train(&[]);
    let e = stderr(&o);
    assert!(e.contains("augment (EDA num_aug 2 alpha_sr 0.2") && e.contains("24 -> 72 training examples"), "{e}");
    let all = read_json(&s.root.join("aug/all_results.json"));
    assert_eq!(all["train_samples"].as_u64(), Some(72));
    assert_eq!(all["eval_samples"].as_u64(), Some(8), "validation data is never augmented");
    assert_eq!(all["test_samples"].as_u64(), Some(8), "test data is never augmented");
    let html = std::fs::read_to_string(s.root.join("aug/report.html")).expect("report");
    assert!(html.contains("<td>augment</td><td>EDA num_aug 2 alpha_sr 0.2 alpha_ri 0.1"), "the report names it");
    // --set reaches the table's keys; the run without it trains on the 24 originals.
    let out1 = format!("output_dir={}", s.root.join("aug1").display());
    let o = train(&["augment.num_aug=1", &out1]);
    assert!(stderr(&o).contains("24 -> 48 training examples"), "{}", stderr(&o));
    let o = train(&["augment=none", "overwrite_output_dir=true"]);
    assert!(!stderr(&o).contains("augment ("), "{}", stderr(&o));
    assert_eq!(read_json(&s.root.join("aug/all_results.json"))["train_samples"].as_u64(), Some(24));

    // Unknown and bad keys are named.
    let bad = config(&s, "bad-aug", "[augment]\nnum_augs = 2\n");
    let o = finetune(&["train", "--config", bad.to_str().unwrap_or_default()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("`augment.num_augs`") && stderr(&o).contains("num_aug"), "{}", stderr(&o));
    let o = finetune(&["train", "--config", cfg.to_str().unwrap_or_default(), "--set", "augment.alpha_rd=2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("augment.alpha_rd=2"), "{}", stderr(&o));
    // cv augments each fold's training part, never its held-out part.
    let o = ok(finetune(&["cv", "--config", cfg.to_str().unwrap_or_default(), "--folds", "2", "--progress", "off"]));
    assert_eq!(stderr(&o).matches("12 -> 36 training examples").count(), 2, "{}", stderr(&o));
    let cv = read_json(&s.root.join("aug/cv_results.json"));
    assert_eq!(cv["folds"][0]["eval_samples"].as_u64(), Some(12), "{cv}");
}
