//! Parquet files and `datasets` `save_to_disk` folders (crates/data/tests/fixtures/columnar, written by
//! scripts/reference/gen_parquet_fixtures.py) end to end: `finetune train` (sequence and token
//! classification), `finetune sft`, `finetune data`, and bad files named by file, row group and column with exit
//! status 2.

mod common;

use std::path::{Path, PathBuf};

use common::{finetune, model_dir, ok, read_json, sft_with, stderr};

fn columnar(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/tests/fixtures/columnar").join(name).display().to_string()
}

fn run_file(root: &Path, lines: &[(&str, String)]) -> PathBuf {
    let mut text = String::from(
        "max_seq_length = 16\nper_device_train_batch_size = 4\nper_device_eval_batch_size = 4\n\
         learning_rate = 1e-3\nmax_steps = 2\nlogging_steps = 1\nsave_steps = 2\n",
    );
    for (k, v) in lines {
        text.push_str(&format!("{k} = {v:?}\n"));
    }
    let p = root.join("run.toml");
    std::fs::write(&p, text).expect("write run file");
    p
}

fn train(cfg: &Path) -> std::process::Output {
    finetune(&["train", "--config", cfg.to_str().expect("path"), "--progress", "off"])
}

#[test]
fn train_on_parquet_and_save_to_disk_folders() {
    let tmp = tempfile::tempdir().expect("tmp");
    let model = model_dir(tmp.path()).display().to_string();
    let out = tmp.path().join("out");
    // A DatasetDict folder is read at the split of its role: train -> "train", test -> "test".
    let cfg = run_file(
        tmp.path(),
        &[
            ("model_name_or_path", model),
            ("train_file", columnar("sentiment_dict")),
            ("validation_file", columnar("sentiment.parquet")),
            ("test_file", columnar("sentiment_dict")),
            ("output_dir", out.display().to_string()),
        ],
    );
    ok(train(&cfg));
    let all = read_json(&out.join("all_results.json"));
    assert_eq!(all["eval_samples"], 11, "{all}");
    assert_eq!(all["test_samples"], 3, "{all}");
    // ClassLabel names, not integers, name the classes.
    let config = read_json(&out.join("config.json"));
    assert_eq!(config["label2id"], serde_json::json!({"neg": 0, "pos": 1}));

    // Parquet shards in a hub dataset's layout (data/train-0000N-of-00002.parquet, data/test-...): the same.
    let hub = tmp.path().join("hub");
    let cfg = run_file(
        tmp.path(),
        &[
            ("model_name_or_path", model_dir(tmp.path()).display().to_string()),
            ("train_file", columnar("sentiment_hub")),
            ("validation_file", columnar("sentiment.parquet")),
            ("test_file", columnar("sentiment_hub")),
            ("output_dir", hub.display().to_string()),
        ],
    );
    ok(train(&cfg));
    let all = read_json(&hub.join("all_results.json"));
    assert_eq!((all["train_samples"].as_u64(), all["test_samples"].as_u64()), (Some(8), Some(3)), "{all}");
}

#[test]
fn token_classification_on_parquet_token_lists() {
    let tmp = tempfile::tempdir().expect("tmp");
    let model = model_dir(tmp.path()).display().to_string();
    let out = tmp.path().join("out");
    let cfg = run_file(
        tmp.path(),
        &[
            ("task", "token-classification".into()),
            ("model_name_or_path", model),
            ("train_file", columnar("ner.parquet")),
            ("validation_file", columnar("ner_str.parquet")),
            ("output_dir", out.display().to_string()),
        ],
    );
    ok(train(&cfg));
    assert_eq!(read_json(&out.join("all_results.json"))["eval_samples"], 5);
    let config = read_json(&out.join("config.json"));
    assert_eq!(config["id2label"].as_object().map(|m| m.len()), Some(5), "{config}");
}

#[test]
fn bad_parquet_is_one_line_with_exit_status_2() {
    let tmp = tempfile::tempdir().expect("tmp");
    let model = model_dir(tmp.path()).display().to_string();
    let out = tmp.path().join("out");
    for (file, expected) in [
        ("bad_null_label.parquet", "bad_null_label.parquet: row group 1, row 4: column \"label\" is null"),
        ("bad_page.parquet", "bad_page.parquet: row group 1, column \"text\": cannot decode: "),
        ("bad_type.parquet", "bad_type.parquet: column \"text\" is Int64; expected a string column"),
        ("bad_truncated.parquet", "bad_truncated.parquet: not a readable Parquet file: "),
    ] {
        let cfg = run_file(
            tmp.path(),
            &[
                ("model_name_or_path", model.clone()),
                ("train_file", columnar(file)),
                ("output_dir", out.display().to_string()),
            ],
        );
        let o = train(&cfg);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{file}: {err}");
        assert!(err.contains(expected), "{file}: {err}");
        assert!(!err.contains("panicked"), "{file}: {err}");
        assert!(!out.exists(), "{file}: output written");
    }
}

#[test]
fn data_commands_read_parquet_and_folders() {
    let tmp = tempfile::tempdir().expect("tmp");
    let o = ok(finetune(&["data", "stats", "--train-file", &columnar("sentiment.parquet"), "--json"]));
    let stats: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(stats["train"]["examples"], 11, "{stats}");

    // Parquet in, JSON Lines out (Parquet is read, not written).
    let out = tmp.path().join("picked");
    ok(finetune(&[
        "data",
        "select",
        &columnar("sentiment_saved"),
        "-n",
        "4",
        "--by",
        "class",
        "-o",
        out.to_str().expect("p"),
    ]));
    assert_eq!(std::fs::read_to_string(&out).expect("read").lines().count(), 4);

    // Token lists split into CoNLL files.
    let dir = tmp.path().join("ner");
    ok(finetune(&["data", "split", &columnar("ner.parquet"), "--split", "60/40", "-o", dir.to_str().expect("p")]));
    let train = std::fs::read_to_string(dir.join("train.conll")).expect("train.conll");
    let validation = std::fs::read_to_string(dir.join("validation.conll")).expect("validation.conll");
    assert_eq!(train.matches("\n\n").count() + validation.matches("\n\n").count(), 5);

    let o = finetune(&["data", "stats", "--train-file", &columnar("sentiment.parquet"), "--delimiter", ";"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("the delimiter applies to CSV/TSV files"), "{}", stderr(&o));
}

#[test]
fn sft_reads_parquet_chats() {
    let tmp = tempfile::tempdir().expect("tmp");
    let gguf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/gguf/tiny_llama.gguf");
    let out = tmp.path().join("out");
    let sets = [
        format!("model_name_or_path={}", gguf.display()),
        format!("train_file={}", columnar("sft_chat.parquet")),
        format!("validation_file={}", columnar("sft_pc.parquet")),
        format!("output_dir={}", out.display()),
        "max_steps=2".into(),
        "per_device_train_batch_size=2".into(),
        "logging_steps=1".into(),
        "save_steps=2".into(),
        "max_seq_length=64".into(),
    ];
    ok(sft_with(&sets, &[]));
    let all = read_json(&out.join("all_results.json"));
    assert!(all["eval_loss"].is_number(), "{all}");
}

#[test]
fn cross_validation_on_a_save_to_disk_folder_and_token_lists() {
    let tmp = tempfile::tempdir().expect("tmp");
    let model = model_dir(tmp.path()).display().to_string();
    for (task, file, n) in
        [("sequence-classification", "sentiment_saved", 11), ("token-classification", "ner.parquet", 5)]
    {
        let out = tmp.path().join(task);
        let cfg = run_file(
            tmp.path(),
            &[
                ("task", task.into()),
                ("model_name_or_path", model.clone()),
                ("train_file", columnar(file)),
                ("output_dir", out.display().to_string()),
            ],
        );
        ok(finetune(&["cv", "--config", cfg.to_str().expect("path"), "--folds", "2", "--progress", "off"]));
        let r = read_json(&out.join("cv_results.json"));
        let folds = r["folds"].as_array().expect("folds");
        let held_out: u64 = folds.iter().map(|f| f["eval_samples"].as_u64().unwrap_or(0)).sum();
        assert_eq!(held_out, n, "{task}: {r}");
    }
}
