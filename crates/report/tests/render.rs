//! Rendering from run directories written by hand: plots per section, several runs overlaid, escaping, errors.

use std::path::Path;

use finetune_report::{report_dirs, Run};
use serde_json::json;

fn write(dir: &Path, name: &str, v: serde_json::Value) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), serde_json::to_string(&v).unwrap()).unwrap();
}

fn fake_run(dir: &Path, lr: f64, label: &str) {
    let mut log = vec![];
    for step in 1..=6 {
        log.push(json!({"loss": 1.0 / step as f64, "learning_rate": lr * (6 - step) as f64 / 6.0, "epoch": step as f64 / 3.0, "step": step}));
        if step % 3 == 0 {
            log.push(json!({"eval_loss": 0.9 / step as f64, "eval_accuracy": 0.5 + step as f64 / 20.0, "eval_runtime": 0.1, "epoch": step as f64 / 3.0, "step": step}));
        }
    }
    // One step after the last logged one, as when logging_steps does not divide max_steps.
    write(dir, "trainer_state.json", json!({"global_step": 7, "log_history": log}));
    write(
        dir,
        "all_results.json",
        json!({"train_loss": 0.4, "eval_accuracy": 0.8, "eval_samples": 4, "train_samples": 12}),
    );
    write(
        dir,
        "run_config.json",
        json!({"task": "sequence-classification", "model_name_or_path": "m",
               "training_args": {"learning_rate": lr, "seed": 42}, "non_default_args": {"learning_rate": lr, "num_train_epochs": 2.0}}),
    );
    write(
        dir,
        "eval_details.json",
        json!({"labels": ["neg", label], "confusion_matrix": [[2.0, 0.0], [1.0, 1.0]],
               "per_class": [{"label": "neg", "precision": 0.67, "recall": 1.0, "f1": 0.8, "support": 2.0},
                             {"label": label, "precision": 1.0, "recall": 0.5, "f1": 0.67, "support": 2.0}],
               "roc": [{"label": label, "area": 0.75, "x": [0.0, 0.0, 1.0], "y": [0.0, 0.5, 1.0], "thresholds": [null, 0.9, 0.1]}],
               "pr": [{"label": label, "area": 0.8, "x": [1.0, 0.5, 0.0], "y": [0.5, 1.0, 1.0], "thresholds": [0.1, 0.9]}],
               "calibration": {"prob_true": [0.0, 1.0], "prob_pred": [0.2, 0.8], "count": [2, 2]}}),
    );
}

#[test]
fn two_runs_overlaid_with_differences_highlighted_and_names_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("run-a"), tmp.path().join("run-b"));
    fake_run(&a, 1e-3, "<pos>");
    fake_run(&b, 5e-4, "<pos>");
    let html = report_dirs(&[&a, &b]).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.ends_with("</html>\n"));
    // training loss + learning rate, eval_accuracy + eval_loss, and per run: 2 heat maps, ROC, PR, bars, calibration
    assert_eq!(html.matches("<svg class=\"plot").count(), 4 + 2 * 6);
    // both runs in the overlaid loss plot
    let loss = html.split("<figure>").find(|f| f.contains(">training loss<")).unwrap();
    assert_eq!(loss.matches("<path ").count(), 2);
    assert!(loss.contains("run-a") && loss.contains("run-b"));
    // learning_rate differs: highlighted; num_train_epochs does not
    let row = |k: &str| html.split("<tr").find(|r| r.contains(&format!(">{k}<"))).unwrap().to_string();
    assert!(row("learning_rate").contains("class=\"diff\""));
    assert!(!row("num_train_epochs").contains("class=\"diff\""));
    assert!(row("steps").contains("<td>7</td><td>7</td>"), "steps taken, not the last logged: {}", row("steps"));
    // labels are escaped everywhere
    assert!(html.contains("&lt;pos&gt;") && !html.contains("<pos>"));
    assert!(html.contains("AUC = 0.750") && html.contains("AP = 0.800"));
    assert!(!html.contains("<script") && !html.contains("https://"));
    // One run alone: its curves carry no legend to cover them (the title names the run).
    let one = report_dirs(&[&a]).unwrap();
    let loss = one.split("<figure>").find(|f| f.contains(">training loss<")).unwrap();
    assert!(loss.contains("<path ") && !loss.contains("class=\"legend\""));
}

#[test]
fn bad_run_directories_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Run::load(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("not a run directory"), "{err}");
    std::fs::write(tmp.path().join("all_results.json"), "{\n\"a\": ").unwrap();
    let err = Run::load(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("all_results.json: line 2"), "{err}");
    let err = Run::load(&tmp.path().join("missing")).unwrap_err().to_string();
    assert!(err.contains("not a directory"), "{err}");
}

#[test]
fn runs_table_lists_sorts_and_diffs() {
    use finetune_report::runs::{diff, find_runs, runs_table};
    let tmp = tempfile::tempdir().unwrap();
    fake_run(&tmp.path().join("a"), 1e-3, "pos");
    fake_run(&tmp.path().join("sub/b"), 5e-4, "pos");
    std::fs::create_dir_all(tmp.path().join("a/checkpoint-3")).unwrap();
    write(&tmp.path().join("a/checkpoint-3"), "trainer_state.json", json!({"log_history": []}));
    let runs = find_runs(tmp.path()).unwrap();
    assert_eq!(runs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["a", "sub/b"]);
    let t = runs_table(&runs, Some("lr"), false).unwrap();
    let lines: Vec<&str> = t.lines().collect();
    assert!(lines[0].starts_with("run") && lines[0].contains("eval_accuracy") && lines[0].contains("lr"));
    assert!(lines[1].starts_with("sub/b") && lines[2].starts_with("a "), "{t}");
    let t = runs_table(&runs, Some("lr"), true).unwrap();
    assert!(t.lines().nth(1).unwrap().starts_with("a "));
    let err = runs_table(&runs, Some("nope"), false).unwrap_err().to_string();
    assert!(err.contains("--sort nope: no such column") && err.contains("eval_accuracy"));
    let d = diff(&runs[0], &runs[1]);
    assert!(d.lines().any(|l| l.starts_with("learning_rate") && l.contains("0.001") && l.contains("0.0005")), "{d}");
    assert!(!d.lines().any(|l| l.starts_with("seed")));
}

#[test]
fn evaluations_at_a_single_step_are_a_table_row_not_a_curve() {
    // The epoch's evaluation and the final one, both logged at the last step.
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("one-epoch");
    fake_run(&a, 1e-3, "pos");
    let log = json!([{"loss": 0.5, "learning_rate": 1e-3, "step": 1}, {"loss": 0.4, "learning_rate": 5e-4, "step": 2},
                     {"eval_accuracy": 0.75, "eval_loss": 0.5, "step": 2},
                     {"eval_accuracy": 0.75, "eval_loss": 0.5, "step": 2}]);
    write(&a, "trainer_state.json", json!({"global_step": 2, "log_history": log}));
    let html = report_dirs(&[&a]).unwrap();
    assert!(!html.contains("Evaluation during training"), "a one-point curve was drawn");
    assert!(html.contains("Final metrics") && html.contains("training loss"));
}
