//! `finetune train` leaves report.html, the evaluation details and run_config.json; `finetune report` overlays
//! several runs; bad run directories are one-line errors.

mod common;

use common::*;

fn svg_count(html: &str) -> usize {
    html.matches("<svg").count()
}

#[test]
fn train_writes_details_and_a_self_contained_report() {
    let s = setup();
    let cfg =
        config(&s, "a", "max_steps = 4\neval_strategy = \"steps\"\neval_steps = 2\nreport_to = [\"tensorboard\"]\n");
    ok(finetune(&["train", "--config", cfg.to_str().unwrap_or_default(), "--progress", "off"]));
    let a = s.root.join("a");
    let all = read_json(&a.join("all_results.json"));
    for k in [
        "eval_roc_auc",
        "eval_average_precision",
        "eval_log_loss",
        "eval_matthews_correlation",
        "eval_balanced_accuracy",
    ] {
        assert!(all[k].is_number(), "all_results.json lacks {k}: {all}");
    }
    let d = read_json(&a.join("eval_details.json"));
    assert_eq!(d["labels"], serde_json::json!(["neg", "pos"]));
    let cm_total: f64 = d["confusion_matrix"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .filter_map(|v| v.as_f64())
        .sum();
    assert_eq!(cm_total, 8.0);
    assert_eq!(d["roc"].as_array().map(Vec::len), Some(1));
    assert!(a.join("test_details.json").is_file());
    let rc = read_json(&a.join("run_config.json"));
    assert_eq!(rc["non_default_args"]["max_steps"], 4, "{rc}");
    assert!(rc["wall_time_s"].is_number());

    // report_to = ["tensorboard"]: one event file under runs/<date>_<host>/, records framed with valid CRCs.
    let runs: Vec<_> = std::fs::read_dir(a.join("runs")).expect("runs/").flatten().collect();
    assert_eq!(runs.len(), 1);
    let events: Vec<_> = std::fs::read_dir(runs[0].path()).expect("run dir").flatten().collect();
    assert!(events[0].file_name().to_string_lossy().starts_with("events.out.tfevents."));
    let bytes = std::fs::read(events[0].path()).expect("event file");
    let records = finetune_train::tensorboard::read_tfrecords(&bytes).expect("valid TFRecord framing");
    // file version + one event per log entry (4 training logs, 2 evaluations, the final train summary and eval)
    assert!(records.len() >= 8, "{} records", records.len());
    let has = |tag: &[u8]| records.iter().any(|r| r.windows(tag.len()).any(|w| w == tag));
    assert!(has(b"train/loss") && has(b"train/learning_rate") && has(b"eval/accuracy") && has(b"eval/roc_auc"));

    let html = std::fs::read_to_string(a.join("report.html")).expect("report.html");
    assert!(html.starts_with("<!DOCTYPE html>"));
    // loss, learning rate, grad norm, eval metrics, confusion matrices, ROC, PR, per-class bars, calibration
    assert!(svg_count(&html) >= 12, "{} plots", svg_count(&html));
    assert!(html.contains("ROC curve") && html.contains("AUC = ") && html.contains("calibration"));
    assert!(
        !html.contains("http://")
            || html.matches("http://").count() == html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
    );
    assert!(!html.contains("<script"));

    // A second run with another learning rate, then both in one report with the difference highlighted.
    let cfg = config(&s, "b", "max_steps = 4\neval_strategy = \"steps\"\neval_steps = 2\n");
    let cfg = cfg.to_str().unwrap_or_default();
    ok(finetune(&["train", "--config", cfg, "--progress", "off", "--set", "learning_rate=5e-4"]));
    let out = s.root.join("both.html");
    ok(finetune(&[
        "report",
        a.to_str().unwrap_or_default(),
        s.root.join("b").to_str().unwrap_or_default(),
        "-o",
        out.to_str().unwrap_or_default(),
    ]));
    let both = std::fs::read_to_string(&out).expect("both.html");
    assert!(both.contains("2 runs"));
    let lr_row = both.split("<tr").find(|r| r.contains(">learning_rate<")).expect("learning_rate row");
    assert!(lr_row.contains("class=\"diff\""), "{lr_row}");
    assert!(both.contains(">a<") && both.contains(">b<"));
}

#[test]
fn ner_run_reports_entity_types_in_both_modes() {
    let s = setup();
    let cfg = ner_config(&s, "ner", "max_steps = 2\n");
    let o = ok(finetune(&["train", "--config", cfg.to_str().unwrap_or_default(), "--progress", "off"]));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        stdout.contains("entities, strict mode (IOB2)") && stdout.contains("tokens (classification_report"),
        "{stdout}"
    );
    let d = read_json(&s.root.join("ner/test_details.json"));
    assert_eq!(d["scheme"], "IOB2");
    assert!(d["tags"].as_array().is_some_and(|t| t.iter().any(|r| r["label"] == "B-POS")), "{d}");
    let html = std::fs::read_to_string(s.root.join("ner/report.html")).expect("report.html");
    assert!(html.contains("per entity type (strict, IOB2)") && html.contains("per tag (token level)"));
}

#[test]
fn unimplemented_report_to_is_refused_by_name() {
    let s = setup();
    let cfg = config(&s, "w", "report_to = [\"tensorboard\", \"wandb\"]\n");
    let o = finetune(&["train", "--config", cfg.to_str().unwrap_or_default(), "--progress", "off"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("report_to: \"wandb\" not supported"), "{err}");
    assert!(!s.root.join("w").exists());
}

#[test]
fn report_of_a_directory_that_is_not_a_run_is_a_one_line_error() {
    let s = setup();
    let out = s.root.join("r.html");
    let o = finetune(&["report", s.root.to_str().unwrap_or_default(), "-o", out.to_str().unwrap_or_default()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not a run directory") && err.lines().count() == 1, "{err}");
    assert!(!out.exists());
    std::fs::write(s.root.join("trainer_state.json"), "{\"log_history\": [").unwrap_or_default();
    let o = finetune(&["report", s.root.to_str().unwrap_or_default(), "-o", out.to_str().unwrap_or_default()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("trainer_state.json: line"));
}

#[test]
fn cv_writes_a_report_with_the_fold_table_and_fold_curves() {
    let s = setup();
    let cfg = config(&s, "cv", "max_steps = 2\n");
    ok(finetune(&["cv", "--config", cfg.to_str().unwrap_or_default(), "--folds", "2", "--progress", "off"]));
    let html = std::fs::read_to_string(s.root.join("cv/report.html")).expect("report.html");
    assert!(html.contains("Cross-validation: cv") && html.contains("<th>fold 2</th>") && html.contains("<th>std</th>"));
    let loss = html.split("<figure>").find(|f| f.contains(">training loss<")).expect("loss plot");
    assert_eq!(loss.matches("<path ").count(), 2, "one loss curve per fold");
    assert_eq!(read_json(&s.root.join("cv/run_config.json"))["command"], "cv");
}
