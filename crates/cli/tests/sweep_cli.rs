//! `finetune sweep` end to end on the committed tiny random BERT: results files, the best run file, resume,
//! two worker processes on one store, and one-line errors.

mod common;

use common::*;
use serde_json::Value;

const SPACE: &str = "max_steps = 4\neval_strategy = \"steps\"\neval_steps = 2\nmetric_for_best_model = \"accuracy\"\n\
[sweep]\nsampler = \"random\"\nn_trials = 3\nseed = 3\n\
learning_rate = { type = \"float\", low = 1e-4, high = 1e-2, log = true }\n\
per_device_train_batch_size = { type = \"categorical\", choices = [4, 8] }\n";

fn sweep(cfg: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["sweep", "--config", cfg.to_str().unwrap_or_default()];
    args.extend_from_slice(extra);
    finetune(&args)
}

#[test]
fn a_small_sweep_writes_results_keeps_the_best_model_and_resumes() {
    let s = setup();
    let cfg = config(&s, "sw", SPACE);
    let o = ok(sweep(&cfg, &[]));
    let out = s.root.join("sw");
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(stdout.contains("eval_accuracy") && stdout.contains("best trial"), "{stdout}");

    let r = read_json(&out.join("sweep_results.json"));
    let trials = r["trials"].as_array().expect("trials");
    assert_eq!(trials.len(), 3);
    assert!(trials.iter().all(|t| t["state"] == "COMPLETE"), "{trials:?}");
    assert!(trials.iter().all(|t| t["intermediate_values"].as_object().is_some_and(|m| m.len() == 2)));
    assert_eq!(r["objective"], "eval_accuracy");
    assert_eq!(r["direction"], "maximize");
    let best = &r["best_trial"];
    let best_n = best["number"].as_u64().expect("best number");
    let best_value = best["value"].as_f64().expect("best value");
    assert!(trials.iter().all(|t| t["value"].as_f64().unwrap_or(f64::NAN) <= best_value));
    assert!(best["test_metrics"]["test_accuracy"].is_number(), "best trial scored on test: {best}");
    // Trials never see the test data; the best trial's test score is written once, at the end.
    for t in trials {
        let dir = std::path::PathBuf::from(t["output_dir"].as_str().expect("dir"));
        assert!(dir.join("eval_results.json").is_file());
        let is_best = t["number"].as_u64() == Some(best_n);
        assert_eq!(dir.join("test_results.json").is_file(), is_best);
        assert_eq!(dir.join("model.safetensors").is_file(), is_best, "only the best model is kept");
    }
    // The report: every trial in the table (the best marked), the best-so-far curve, one plot per parameter.
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    assert!(html.contains("Hyper-parameter search") && html.contains("eval_accuracy per trial"), "sweep section");
    assert_eq!(html.matches("<tr class=\"diff\"><td>").count(), 1, "one best row");
    assert!(html.contains(&format!("<tr class=\"diff\"><td>{best_n}</td>")), "the best trial is marked");
    for p in ["learning_rate", "per_device_train_batch_size"] {
        assert!(html.contains(&format!("eval_accuracy against {p}")), "no plot for {p}");
    }
    assert!(html.contains("log10(learning_rate)"), "a log-scale parameter is plotted on a log axis");
    assert!(html.matches("<circle").count() >= 3 * 3, "trial markers in the plots");
    // The summary names the sweep, its base run's model and data, the trial count and the best trial.
    assert!(html.contains("<td>command</td><td>sweep</td>"), "summary: command");
    assert!(html.contains("<td>trials</td><td>3 (complete 3)</td>"), "summary: trials");
    assert!(html.contains(&format!("<td>best trial</td><td>#{best_n}: eval_accuracy = ")), "summary: best");
    let rc = read_json(&out.join("run_config.json"));
    assert_eq!(rc["command"], "sweep");
    assert!(rc["model_name_or_path"].is_string() && rc["train_file"].is_string(), "{rc}");
    let csv = std::fs::read_to_string(out.join("sweep_results.csv")).expect("csv");
    assert_eq!(csv.lines().count(), 4);
    assert!(csv.starts_with("number,state,value,duration_s,params_learning_rate,params_per_device_train_batch_size"));

    // The best parameters as a run file that `finetune train` accepts.
    let best_run = out.join("best_run.toml");
    let text = std::fs::read_to_string(&best_run).expect("best_run.toml");
    assert!(!text.contains("[sweep]") && text.contains("learning_rate"), "{text}");
    ok(finetune(&[
        "train",
        "--config",
        best_run.to_str().unwrap_or_default(),
        "--progress",
        "off",
        "--set",
        "max_steps=1",
    ]));

    // Started again with more trials: the three finished ones are kept, one more runs.
    let started: Vec<Value> = trials.iter().map(|t| t["started_at"].clone()).collect();
    ok(sweep(&cfg, &["--n-trials", "4"]));
    let r2 = read_json(&out.join("sweep_results.json"));
    let t2 = r2["trials"].as_array().expect("trials");
    assert_eq!(t2.len(), 4);
    for (a, b) in started.iter().zip(t2) {
        assert_eq!(a, &b["started_at"], "a finished trial was not run again");
    }
}

#[test]
fn two_worker_processes_split_a_grid_on_one_store() {
    let s = setup();
    let grid = "max_steps = 2\nmetric_for_best_model = \"accuracy\"\n[sweep]\nsampler = \"grid\"\n\
                learning_rate = { type = \"categorical\", choices = [1e-4, 1e-3, 1e-2] }\n\
                warmup_steps = { type = \"int\", low = 0, high = 1 }\n";
    let cfg = config(&s, "grid", grid);
    let bin = env!("CARGO_BIN_EXE_finetune");
    let spawn = || {
        std::process::Command::new(bin)
            .args(["sweep", "--config", cfg.to_str().unwrap_or_default(), "--worker"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn worker")
    };
    let (w1, w2) = (spawn(), spawn());
    for w in [w1, w2] {
        let o = w.wait_with_output().expect("worker");
        assert!(o.status.success(), "worker failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    assert!(!s.root.join("grid/sweep_results.json").exists(), "workers write no summary");
    ok(sweep(&cfg, &[]));
    let r = read_json(&s.root.join("grid/sweep_results.json"));
    let trials = r["trials"].as_array().expect("trials");
    assert_eq!(trials.len(), 6);
    let mut points: Vec<String> = trials.iter().map(|t| t["params"].to_string()).collect();
    points.sort();
    points.dedup();
    assert_eq!(points.len(), 6, "each grid point once: {points:?}");
    assert!(trials.iter().all(|t| t["state"] == "COMPLETE"));
    let workers: std::collections::BTreeSet<&str> = trials.iter().filter_map(|t| t["worker"].as_str()).collect();
    assert!(!workers.is_empty());
}

#[test]
fn sweep_input_errors_are_one_line_with_status_2() {
    let s = setup();
    let cases = [
        ("[sweep]\nlerning_rate = { type = \"float\", low = 1e-4, high = 1e-2 }\n", "did you mean `learning_rate`"),
        ("[sweep]\nlearning_rate = { type = \"float\", low = 1e-2, high = 1e-4 }\n", "key `learning_rate`: low"),
        ("[sweep]\nsamplr = \"tpe\"\nlearning_rate = { type = \"float\", low = 1e-4, high = 1e-2 }\n", "`samplr`"),
        (
            "[sweep]\nsampler = \"grid\"\nlearning_rate = { type = \"float\", low = 1e-4, high = 1e-2 }\n",
            "without `step`",
        ),
        (
            "[sweep]\npruner = \"median\"\nlearning_rate = { type = \"float\", low = 1e-4, high = 1e-2 }\n",
            "eval_strategy",
        ),
        ("[sweep]\noutput_dir = { type = \"categorical\", choices = [\"a\"] }\n", "set by the sweep"),
    ];
    for (i, (extra, want)) in cases.iter().enumerate() {
        let cfg = config(&s, &format!("bad{i}"), extra);
        let o = sweep(&cfg, &[]);
        assert_eq!(o.status.code(), Some(2), "case {i}");
        let e = stderr(&o);
        assert!(e.contains(want) && e.trim().lines().count() == 1, "case {i}: {e}");
        assert!(!s.root.join(format!("bad{i}")).exists(), "case {i}: nothing written");
    }
}

#[test]
fn successive_halving_prunes_trials_that_fall_behind() {
    let s = setup();
    let sha = "max_steps = 6\neval_strategy = \"steps\"\neval_steps = 1\nmetric_for_best_model = \"loss\"\n\
               [sweep]\nsampler = \"random\"\nn_trials = 5\nseed = 1\npruner = \"successive_halving\"\n\
               min_resource = 1\nreduction_factor = 2\n\
               learning_rate = { type = \"float\", low = 1e-5, high = 3e-2, log = true }\n";
    let cfg = config(&s, "sha", sha);
    ok(sweep(&cfg, &[]));
    let r = read_json(&s.root.join("sha/sweep_results.json"));
    assert_eq!(r["direction"], "minimize");
    let trials = r["trials"].as_array().expect("trials");
    let steps = |t: &Value| t["intermediate_values"].as_object().map_or(0, |m| m.len());
    let pruned: Vec<&Value> = trials.iter().filter(|t| t["state"] == "PRUNED").collect();
    let complete: Vec<&Value> = trials.iter().filter(|t| t["state"] == "COMPLETE").collect();
    assert!(!pruned.is_empty() && !complete.is_empty(), "{trials:?}");
    assert!(complete.iter().all(|t| steps(t) == 6));
    assert!(pruned.iter().all(|t| steps(t) < 6 && t["value"].is_null()), "{pruned:?}");
}

#[test]
fn hyperband_prunes_within_brackets_and_names_its_settings() {
    let s = setup();
    let hb = "max_steps = 8\neval_strategy = \"steps\"\neval_steps = 1\nmetric_for_best_model = \"loss\"\n\
              [sweep]\nsampler = \"random\"\nn_trials = 8\nseed = 2\npruner = \"hyperband\"\n\
              min_resource = 1\nmax_resource = 8\nreduction_factor = 2\n\
              learning_rate = { type = \"float\", low = 1e-5, high = 3e-2, log = true }\n";
    let cfg = config(&s, "hb", hb);
    ok(sweep(&cfg, &[]));
    let r = read_json(&s.root.join("hb/sweep_results.json"));
    assert_eq!(r["pruner"], "hyperband");
    let trials = r["trials"].as_array().expect("trials");
    assert_eq!(trials.len(), 8);
    let steps = |t: &Value| t["intermediate_values"].as_object().map_or(0, |m| m.len());
    let pruned: Vec<&Value> = trials.iter().filter(|t| t["state"] == "PRUNED").collect();
    assert!(!pruned.is_empty(), "{trials:?}");
    assert!(pruned.iter().all(|t| steps(t) < 8 && t["value"].is_null()), "{pruned:?}");
    assert!(trials.iter().filter(|t| t["state"] == "COMPLETE").all(|t| steps(t) == 8));
    // A setting of another pruner is refused by name.
    let bad = config(&s, "hb-bad", &hb.replace("max_resource = 8", "min_early_stopping_rate = 1"));
    let o = sweep(&bad, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("`min_early_stopping_rate`") && stderr(&o).contains("hyperband"), "{}", stderr(&o));
}
