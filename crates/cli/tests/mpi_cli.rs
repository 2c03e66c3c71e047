//! `mpirun -np N finetune train|sft` (built with `--features mpi`, Open MPI installed): N ranks give bitwise the
//! model of one process with N times the gradient accumulation, only rank 0 writes, and a run resumes on another
//! number of ranks. `scripts/mpi-check.sh` runs these and the same checks on the real example tasks.
#![cfg(feature = "mpi")]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{config, ok, read_json, setup, stderr};

/// `finetune` on `np` MPI ranks of one thread each (`np = 1`: a plain process).
fn on_ranks(np: usize, args: &[&str]) -> Output {
    let bin = env!("CARGO_BIN_EXE_finetune");
    let mut c = if np == 1 {
        Command::new(bin)
    } else {
        let mut c = Command::new("mpirun");
        c.args(["--oversubscribe", "-np", &np.to_string(), "-x", "RAYON_NUM_THREADS", bin]);
        c
    };
    // mpirun refuses root without these (CI containers run as root).
    c.env("OMPI_ALLOW_RUN_AS_ROOT", "1").env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1").env("RAYON_NUM_THREADS", "1");
    c.args(args).output().unwrap_or_else(|e| panic!("cannot start mpirun (Open MPI: openmpi-bin): {e}"))
}

fn train(np: usize, cfg: &Path, sets: &[&str]) -> Output {
    let mut args = vec!["train", "--config", cfg.to_str().unwrap_or_default(), "--progress", "off"];
    for s in sets {
        args.extend(["--set", s]);
    }
    on_ranks(np, &args)
}

fn model(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("model.safetensors")).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

#[test]
fn train_on_ranks_matches_one_process_and_resumes_on_another_count() {
    let s = setup();
    // 24 rows in micro-batches of 3, windows of 4: two steps per epoch; eval and a checkpoint every step.
    let common = [
        "per_device_train_batch_size=3",
        "num_train_epochs=2",
        "eval_strategy=steps",
        "eval_steps=1",
        "save_steps=1",
        "save_total_limit=2",
    ];
    let run = |np: usize, out: &str, gas: usize, more: &[&str]| {
        let cfg = config(&s, out, "");
        let g = format!("gradient_accumulation_steps={gas}");
        let sets: Vec<&str> = common.iter().copied().chain([g.as_str()]).chain(more.iter().copied()).collect();
        train(np, &cfg, &sets)
    };
    ok(run(1, "one", 4, &[]));
    ok(run(2, "two", 2, &[]));
    // Four ranks with gradient buckets of a parameter or two, leaving on the exchange thread during the pass.
    ok(run(4, "four", 1, &["ddp_bucket_cap_mb=0.002"]));
    let (one, two, four) = (s.root.join("one"), s.root.join("two"), s.root.join("four"));
    assert!(model(&one) == model(&two), "2 ranks differ from one process");
    assert!(model(&one) == model(&four), "4 ranks with small buckets differ from one process");
    let losses = |d: &Path| -> Vec<serde_json::Value> {
        let h = read_json(&d.join("trainer_state.json"))["log_history"].clone();
        h.as_array().expect("history").iter().map(|e| e.get("loss").cloned().unwrap_or_default()).collect()
    };
    assert_eq!(losses(&two), losses(&one));
    assert_eq!(
        read_json(&two.join("all_results.json"))["test_accuracy"],
        read_json(&one.join("all_results.json"))["test_accuracy"]
    );
    // Only rank 0 logs events; it records the cost of the collectives.
    let events = std::fs::read_to_string(two.join("events.jsonl")).expect("events");
    assert_eq!(events.matches("\"event\":\"train_begin\"").count(), 1, "{events}");
    let end: Vec<serde_json::Value> = events
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &serde_json::Value| e["event"] == "train_end")
        .collect();
    assert_eq!(end.len(), 1);
    assert_eq!(end[0]["data_parallel"]["ranks"], 2);
    assert!(end[0]["data_parallel"]["bytes_sent_per_step"].as_f64().unwrap_or(0.0) > 0.0, "{}", end[0]);
    let events = std::fs::read_to_string(four.join("events.jsonl")).expect("events");
    let early = events
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|e| e["data_parallel"]["buckets_sent_during_backward_per_step"].as_f64());
    assert!(early.unwrap_or(0.0) > 1.0, "{events}");

    // The 2-rank run's checkpoint-3, resumed on 4 ranks and on one process, ends at the same bits.
    let ckpt = two.join("checkpoint-3");
    let resume = format!("resume_from_checkpoint={}", ckpt.display());
    ok(run(4, "r4", 1, &[resume.as_str()]));
    ok(run(1, "r1", 4, &[resume.as_str()]));
    assert!(model(&s.root.join("r4")) == model(&one), "resumed on 4 ranks: weights differ");
    assert!(model(&s.root.join("r1")) == model(&one), "resumed on one process: weights differ");

    // The best checkpoint reloaded at the end and early stopping: every rank makes the same decisions.
    let best = ["load_best_model_at_end=true", "metric_for_best_model=eval_loss", "early_stopping_patience=1"];
    ok(run(1, "best1", 4, &best));
    ok(run(2, "best2", 2, &best));
    assert!(model(&s.root.join("best1")) == model(&s.root.join("best2")), "best model on 2 ranks differs");
    let state = |d: &str| read_json(&s.root.join(d).join("trainer_state.json"));
    assert_eq!(state("best2")["best_global_step"], state("best1")["best_global_step"]);
    assert_eq!(state("best2")["global_step"], state("best1")["global_step"]);
}

#[test]
fn other_commands_refuse_several_ranks() {
    let s = setup();
    let cfg = config(&s, "cv", "");
    let o = on_ranks(2, &["cv", "--config", cfg.to_str().unwrap_or_default(), "--folds", "2"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("runs in one process, not on 2 MPI ranks"), "{}", stderr(&o));
}

#[test]
fn lora_sft_on_ranks_matches_one_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gguf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/gguf/tiny_llama.gguf");
    let mut text = String::new();
    for (i, who) in ["anna", "bob", "carl", "dora", "emil", "fay", "gus", "hana", "ida", "jon"].iter().enumerate() {
        let line = serde_json::json!({"prompt": format!("Greet {who}."), "completion": format!("hello {who} {i}")});
        text.push_str(&format!("{line}\n"));
    }
    let data = dir.path().join("train.jsonl");
    std::fs::write(&data, text).expect("data");
    let run = |np: usize, gas: usize, out: &str| {
        let sets = [
            format!("model_name_or_path={}", gguf.display()),
            format!("train_file={}", data.display()),
            format!("output_dir={}", dir.path().join(out).display()),
            "num_train_epochs=2".into(),
            "per_device_train_batch_size=2".into(),
            format!("gradient_accumulation_steps={gas}"),
            "learning_rate=1e-2".into(),
            "logging_steps=1".into(),
            "save_strategy=no".into(),
            "max_seq_length=64".into(),
            "use_peft=true".into(),
            "lora_r=4".into(),
            "lora_dropout=0.1".into(),
        ];
        let mut args: Vec<&str> = vec!["sft", "--progress", "off"];
        for s in &sets {
            args.extend(["--set", s.as_str()]);
        }
        ok(on_ranks(np, &args));
        std::fs::read(dir.path().join(out).join("adapter_model.safetensors")).expect("adapter written by rank 0")
    };
    let one = run(1, 2, "one");
    let two = run(2, 1, "two");
    assert!(one == two, "the adapter of 2 ranks differs from one process with 2 micro-batches per step");
}
