//! A training process killed with SIGKILL at an arbitrary step resumes (`--resume-from-checkpoint latest`) to
//! exactly the model and metrics of an uninterrupted run, and resume never picks up a half-written checkpoint.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const SAVE_STEPS: u64 = 10;

/// `(newest "save" step, newest "log" step)` in a run's events.jsonl (complete lines only).
fn progress(out: &Path) -> (Option<u64>, Option<u64>) {
    let text = std::fs::read_to_string(out.join("events.jsonl")).unwrap_or_default();
    let (mut saved, mut logged) = (None, None);
    for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
        let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
        let step = v["step"].as_u64();
        match v["event"].as_str() {
            Some("save") => saved = saved.max(step),
            Some("log") => logged = logged.max(step),
            _ => {}
        }
    }
    (saved, logged)
}

/// `(step, loss, grad_norm, learning_rate)` of every training log entry in a trainer_state.json.
fn loss_history(p: &Path) -> Vec<(Value, Value, Value, Value)> {
    let state = read_json(p);
    let h = state["log_history"].as_array().cloned().unwrap_or_default();
    h.iter()
        .filter(|e| e.get("loss").is_some())
        .map(|e| (e["step"].clone(), e["loss"].clone(), e["grad_norm"].clone(), e["learning_rate"].clone()))
        .collect()
}

#[test]
fn sigkill_then_resume_equals_an_uninterrupted_run_bitwise() {
    let s = setup();
    let max_steps = 300;
    let cfg = config(&s, "killed", &format!("max_steps = {max_steps}\n"));
    let cfg = cfg.to_str().unwrap_or_default().to_string();
    let save = format!("save_steps={SAVE_STEPS}");
    let killed = s.root.join("killed");

    // Start, wait until a checkpoint exists and training has logged a step strictly between two checkpoints,
    // then SIGKILL. Only polling: no assumption on how fast steps are.
    let log = s.root.join("killed.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_finetune"))
        .args(["train", "--config", &cfg, "--set", &save, "--progress", "off"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn finetune");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("training ended ({status}) before it could be killed (raise max_steps): {log}");
        }
        let (saved, logged) = progress(&killed);
        if let (Some(sv), Some(lg)) = (saved, logged) {
            if lg > sv && lg % SAVE_STEPS != 0 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no checkpoint after 600 s");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().expect("SIGKILL"); // std's Child::kill is SIGKILL on Unix
    let status = child.wait().expect("wait");
    assert!(!status.success(), "the process was killed, not finished");
    assert!(!killed.join("train_results.json").exists(), "the run had finished before the kill");

    // The newest complete checkpoint is behind the last logged step: the kill lost work that resume must redo.
    let ckpts: Vec<u64> = std::fs::read_dir(&killed)
        .expect("output_dir")
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("checkpoint-")?.parse().ok())
        .collect();
    let newest = ckpts.iter().copied().max().expect("a checkpoint");
    assert!(newest < max_steps, "{ckpts:?}");
    let (_, logged) = progress(&killed);
    assert!(logged.is_some_and(|l| l > newest), "killed at step {logged:?}, newest checkpoint {newest}");

    // A kill during a checkpoint write leaves at most `checkpoint-N.tmp` (written, then renamed when complete);
    // also plant a `checkpoint-N` without trainer_state.json. Resume must skip both.
    let next = newest + SAVE_STEPS;
    let partial = killed.join(format!("checkpoint-{next}.tmp"));
    std::fs::create_dir_all(&partial).expect("mkdir");
    std::fs::write(partial.join("model.safetensors"), b"\x10\x00\x00\x00").expect("write");
    let incomplete = killed.join("checkpoint-9999");
    std::fs::create_dir_all(&incomplete).expect("mkdir");
    std::fs::write(incomplete.join("model.safetensors"), b"\x10\x00\x00\x00").expect("write");
    std::fs::write(incomplete.join("trainer_state.json"), b"{\"epoch\": 1.0, \"global_st").expect("write");

    ok(finetune(&[
        "train",
        "--config",
        &cfg,
        "--set",
        &save,
        "--progress",
        "off",
        "--resume-from-checkpoint",
        "latest",
    ]));
    assert!(!partial.exists(), "the half-written checkpoint directory was replaced by a complete one");

    // The same run without interruption.
    let full = s.root.join("full");
    let full_dir = full.to_str().unwrap_or_default();
    ok(finetune(&["train", "--config", &cfg, "--set", &save, "--progress", "off", "--output-dir", full_dir]));

    let a = std::fs::read(full.join("model.safetensors")).expect("full model");
    let b = std::fs::read(killed.join("model.safetensors")).expect("resumed model");
    assert!(a == b, "resumed final weights differ from the uninterrupted run");
    for (file, keys) in [
        ("train_results.json", &["train_loss", "epoch", "train_samples"][..]),
        ("eval_results.json", &["eval_loss", "eval_accuracy", "eval_f1", "eval_precision", "eval_recall"][..]),
        ("test_results.json", &["test_loss", "test_accuracy", "test_f1", "test_precision", "test_recall"][..]),
    ] {
        let (x, y) = (read_json(&full.join(file)), read_json(&killed.join(file)));
        for k in keys {
            assert!(x[k].is_number(), "{file} lacks {k}: {x}");
            assert_eq!(x[k], y[k], "{file} {k}");
        }
    }
    let (x, y) = (loss_history(&full.join("trainer_state.json")), loss_history(&killed.join("trainer_state.json")));
    assert_eq!(x.len(), max_steps as usize);
    assert_eq!(x, y, "per-step loss, grad_norm and learning rate differ");
    let preds = |d: &Path| std::fs::read(d.join("predictions.jsonl")).expect("predictions");
    assert!(preds(&full) == preds(&killed));
}
