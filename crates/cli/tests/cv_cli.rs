//! `finetune cv` end to end on the tiny random BERT: a model and held-out evaluation per fold, the summary in
//! cv_results.json (mean and sample std of the fold values), for sequence and token classification.

mod common;

use common::*;
use serde_json::Value;

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// Checks cv_results.json against its own fold values: `k` folds, every held-out example once, and mean and
/// sample standard deviation (ddof=1) of each summarised metric.
fn check_results(out: &std::path::Path, k: usize, n: u64, metrics: &[&str]) -> Value {
    let r = read_json(&out.join("cv_results.json"));
    let folds = r["folds"].as_array().expect("folds");
    assert_eq!(folds.len(), k, "{r}");
    let held_out: u64 = folds.iter().map(|f| f["eval_samples"].as_u64().unwrap_or(0)).sum();
    assert_eq!(held_out, n, "every example is held out exactly once: {r}");
    for (i, f) in folds.iter().enumerate() {
        assert_eq!(f["fold"], i + 1);
        assert_eq!(f["train_samples"].as_u64().unwrap_or(0) + f["eval_samples"].as_u64().unwrap_or(0), n);
        let dir = out.join(format!("fold-{}", i + 1));
        assert!(dir.join("model.safetensors").is_file() && dir.join("config.json").is_file(), "{}", dir.display());
        // The fold's own eval_results.json is the held-out evaluation that was summarised.
        let own = read_json(&dir.join("eval_results.json"));
        for m in metrics {
            assert_eq!(own[m], f[m], "fold {} {m}", i + 1);
        }
    }
    for m in metrics.iter().chain(["train_loss"].iter()) {
        let xs: Vec<f64> = folds.iter().map(|f| num(&f[m])).collect();
        assert!(xs.iter().all(|x| x.is_finite()), "{m}: {xs:?}");
        let mean = xs.iter().sum::<f64>() / k as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (k as f64 - 1.0);
        assert!((num(&r["mean"][m]) - mean).abs() < 1e-12, "mean {m}: {r}");
        assert!((num(&r["std"][m]) - var.sqrt()).abs() < 1e-12, "std {m}: {r}");
    }
    for skipped in ["eval_runtime", "eval_samples", "eval_samples_per_second"] {
        assert!(r["mean"].get(skipped).is_none(), "{skipped} is not a quality metric: {r}");
    }
    r
}

#[test]
fn cv_of_sequence_classification_writes_folds_and_summary() {
    let s = setup();
    let cfg = config(&s, "cv", "max_steps = 2\n");
    let o = ok(finetune(&["cv", "--config", cfg.to_str().unwrap_or_default(), "--folds", "3", "--progress", "off"]));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(stdout.contains("mean ± std") && stdout.contains("eval_accuracy") && stdout.contains("fold-3"), "{stdout}");
    assert!(stderr(&o).contains("not using validation_file, test_file"), "{}", stderr(&o));
    let out = s.root.join("cv");
    let r = check_results(&out, 3, 24, &["eval_loss", "eval_accuracy", "eval_f1", "eval_precision", "eval_recall"]);
    // Stratified: 24 examples, 12 per class, 3 folds of 8 with 4 of each class.
    assert!(r["folds"].as_array().is_some_and(|f| f.iter().all(|f| f["eval_samples"] == 8)), "{r}");

    // Same seed, same folds and same training: the same numbers again (--set overrides the config).
    let again = s.root.join("cv-again");
    ok(finetune(&[
        "cv",
        "--config",
        cfg.to_str().unwrap_or_default(),
        "--folds",
        "3",
        "--progress",
        "off",
        "--set",
        &format!("output_dir={}", again.display()),
    ]));
    let r2 = read_json(&again.join("cv_results.json"));
    assert_eq!(r["mean"]["eval_loss"], r2["mean"]["eval_loss"]);
    assert_eq!(r["std"]["eval_accuracy"], r2["std"]["eval_accuracy"]);
    let (a, b) = (out.join("fold-2/model.safetensors"), again.join("fold-2/model.safetensors"));
    assert!(std::fs::read(a).ok() == std::fs::read(b).ok(), "fold-2 models differ between identical runs");
}

#[test]
fn cv_of_token_classification() {
    let s = setup();
    let cfg = ner_config(&s, "nercv", "max_steps = 2\n");
    let o = ok(finetune(&["cv", "--config", cfg.to_str().unwrap_or_default(), "--folds", "2", "--progress", "off"]));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(stdout.contains("eval_f1"), "{stdout}");
    check_results(
        &s.root.join("nercv"),
        2,
        24,
        &["eval_loss", "eval_precision", "eval_recall", "eval_f1", "eval_accuracy"],
    );
}

#[test]
fn cv_rejects_bad_folds_in_one_line_and_writes_nothing() {
    let s = setup();
    let cfg = config(&s, "badcv", "max_steps = 1\n");
    for k in ["1", "25"] {
        let o = finetune(&["cv", "--config", cfg.to_str().unwrap_or_default(), "--folds", k]);
        assert_eq!(o.status.code(), Some(2));
        let e = stderr(&o);
        assert!(e.contains("--folds") && e.contains("k-fold"), "{e}");
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
        assert!(!s.root.join("badcv").exists());
    }
}

/// Regression has no classes to stratify by: a seeded random k-fold, summarised like the others.
#[test]
fn cv_of_regression_uses_random_folds() {
    let s = setup();
    let mut reg = String::from("text,label\n");
    for i in 0..10 {
        let w = ["good nice", "bad dull", "good bad"][i % 3];
        reg.push_str(&format!("{w},{}\n", (i % 3) as f64 * 0.5));
    }
    let data = s.root.join("reg.csv");
    std::fs::write(&data, reg).expect("write");
    let cfg = config(&s, "regcv", "max_steps = 1\nproblem_type = \"regression\"\n");
    ok(finetune(&[
        "cv",
        "--config",
        cfg.to_str().unwrap_or_default(),
        "--train-file",
        data.to_str().unwrap_or_default(),
        "--folds",
        "4",
        "--progress",
        "off",
    ]));
    let r = check_results(&s.root.join("regcv"), 4, 10, &["eval_loss", "eval_mse"]);
    let sizes: Vec<u64> =
        r["folds"].as_array().map_or(vec![], |f| f.iter().filter_map(|f| f["eval_samples"].as_u64()).collect());
    assert_eq!(sizes, vec![3, 3, 2, 2], "fold sizes differ by at most one");
}
