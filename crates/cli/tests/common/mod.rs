//! Helpers shared by the CLI tests: the tiny random BERT with a WordPiece vocabulary, deterministic CSV and
//! CoNLL data, run files, and running the built `finetune` binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use finetune_models::checkpoint::{load_state_dict, save_safetensors};
use serde_json::{json, Value};
pub const WORDS: &[&str] = &["good", "great", "fine", "nice", "love", "bad", "awful", "hate", "boring", "dull"];

pub fn finetune(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_finetune")).args(args).output().expect("run finetune")
}

/// `finetune sft --progress off` with each of `sets` and then `extra` as a `--set key=value`.
pub fn sft_with(sets: &[String], extra: &[&str]) -> Output {
    let mut args: Vec<String> = vec!["sft".into(), "--progress".into(), "off".into()];
    for s in sets.iter().map(String::as_str).chain(extra.iter().copied()) {
        args.push("--set".into());
        args.push(s.to_string());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    finetune(&refs)
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn ok(o: Output) -> Output {
    assert!(o.status.success(), "finetune failed: {}", stderr(&o));
    o
}

pub fn read_json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).expect("valid JSON")
}

/// The tiny BERT fixture plus a WordPiece vocabulary (the fixture ships no tokenizer).
pub fn model_dir(root: &Path) -> PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/tiny_bert");
    let dir = root.join("model");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture.join(f), dir.join(f)).expect("copy fixture");
    }
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].iter().map(|s| s.to_string()).collect();
    vocab.extend(WORDS.iter().map(|s| s.to_string()));
    std::fs::write(dir.join("vocab.txt"), vocab.join("\n") + "\n").expect("vocab");
    dir
}

/// `n` labelled sentences: positive words → "pos", negative words → "neg"; deterministic.
pub fn csv(path: &Path, n: usize, offset: usize) {
    let mut s = String::from("text,label\n");
    for i in 0..n {
        let k = i + offset;
        let pos = k.is_multiple_of(2);
        let pick = |j: usize| WORDS[(if pos { 0 } else { 5 }) + (k * 7 + j * 3) % 5];
        let words: Vec<&str> = (0..2 + k % 5).map(pick).collect();
        s.push_str(&format!("{},{}\n", words.join(" "), if pos { "pos" } else { "neg" }));
    }
    std::fs::write(path, s).expect("write csv");
}

pub struct Setup {
    pub _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub model: PathBuf,
}

pub fn setup() -> Setup {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().to_path_buf();
    let model = model_dir(&root);
    csv(&root.join("train.csv"), 24, 0);
    csv(&root.join("validation.csv"), 8, 100);
    csv(&root.join("test.csv"), 8, 200);
    Setup { _tmp: tmp, root, model }
}

pub fn config(s: &Setup, out: &str, extra: &str) -> PathBuf {
    let p = s.root.join(format!("{out}.toml"));
    let text = format!(
        "model_name_or_path = {m:?}\ntrain_file = {tr:?}\nvalidation_file = {va:?}\ntest_file = {te:?}\n\
         output_dir = {o:?}\nmax_seq_length = 16\nper_device_train_batch_size = 4\nper_device_eval_batch_size = 4\n\
         learning_rate = 1e-3\nlogging_steps = 1\nsave_steps = 2\n{extra}",
        m = s.model.display().to_string(),
        tr = s.root.join("train.csv").display().to_string(),
        va = s.root.join("validation.csv").display().to_string(),
        te = s.root.join("test.csv").display().to_string(),
        o = s.root.join(out).display().to_string(),
    );
    std::fs::write(&p, text).expect("write config");
    p
}

/// `n` CoNLL sentences: runs of positive words are POS entities, negative words NEG entities; deterministic.
pub fn conll(path: &Path, n: usize, offset: usize) {
    let mut s = String::new();
    for i in 0..n {
        let k = i + offset;
        let mut prev = "";
        for j in 0..3 + k % 4 {
            let w = WORDS[(k * 7 + j * 3) % WORDS.len()];
            let kind = if WORDS[..5].contains(&w) {
                "POS"
            } else if w == "dull" {
                ""
            } else {
                "NEG"
            };
            let tag = match kind {
                "" => "O".to_string(),
                _ if prev == kind => format!("I-{kind}"),
                _ => format!("B-{kind}"),
            };
            prev = kind;
            s.push_str(&format!("{w}\t{tag}\n"));
        }
        s.push('\n');
    }
    std::fs::write(path, s).expect("write conll");
}

pub fn ner_config(s: &Setup, out: &str, extra: &str) -> PathBuf {
    for (name, n, offset) in [("train", 24, 0), ("validation", 8, 100), ("test", 6, 200)] {
        conll(&s.root.join(format!("{name}.conll")), n, offset);
    }
    let p = s.root.join(format!("{out}.toml"));
    let file = |n: &str| s.root.join(format!("{n}.conll")).display().to_string();
    let text = format!(
        "task = \"token-classification\"\nmodel_name_or_path = {m:?}\ntrain_file = {tr:?}\n\
         validation_file = {va:?}\ntest_file = {te:?}\noutput_dir = {o:?}\nmax_seq_length = 16\n\
         per_device_train_batch_size = 4\nper_device_eval_batch_size = 4\nlearning_rate = 1e-3\n\
         logging_steps = 1\nsave_steps = 2\n{extra}",
        m = s.model.display().to_string(),
        tr = file("train"),
        va = file("validation"),
        te = file("test"),
        o = s.root.join(out).display().to_string(),
    );
    std::fs::write(&p, text).expect("write config");
    p
}

/// Names the SFT records greet.
pub const NAMES: &[&str] = &["anna", "bob", "carl", "dora", "emil", "fay", "gus", "hana"];
/// 256 byte tokens, then `<|endoftext|>` (as GPT-2's 50256).
pub const EOS: u32 = 256;
pub const VOCAB: usize = 257;

/// GPT-2's byte → printable character map (`bytes_to_unicode`).
pub fn byte_char(b: u8) -> char {
    let direct = |x: u8| (33..=126).contains(&x) || (161..=172).contains(&x) || x >= 174;
    if direct(b) {
        return char::from(b);
    }
    let shift = (0..b).filter(|&x| !direct(x)).count() as u32;
    char::from_u32(256 + shift).expect("valid char")
}

/// A byte-level BPE `tokenizer.json` without merges (one token per byte), as GPT-2's pre-tokenizer and decoder.
pub fn tokenizer_json() -> Value {
    let mut vocab = serde_json::Map::new();
    for b in 0..=255u8 {
        vocab.insert(byte_char(b).to_string(), json!(b));
    }
    vocab.insert("<|endoftext|>".into(), json!(EOS));
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [{"id": EOS, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": true, "special": true}],
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": []}
    })
}

/// A tiny random decoder fixture of `crates/models/tests/fixtures/{fixture}` with its vocabulary grown to the 257
/// byte-level tokens (the tensors in `vocab_tensors` get deterministic extra rows), `bos`/`eos` set to
/// `<|endoftext|>`, and byte-level tokenizer files: a model directory `finetune` and transformers load.
pub fn byte_level_model(root: &Path, fixture: &str, vocab_tensors: &[&str]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures").join(fixture);
    let dir = root.join(fixture);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut sd = load_state_dict(src.join("model.safetensors")).expect("fixture weights");
    for name in vocab_tensors {
        let t = sd.get_mut(*name).unwrap_or_else(|| panic!("{fixture} has no {name}"));
        let c: usize = t.shape[1..].iter().product();
        for i in t.shape[0] * c..VOCAB * c {
            t.data.push(0.02 * (((i * 7919) % 101) as f32 / 50.0 - 1.0));
        }
        t.shape[0] = VOCAB;
    }
    save_safetensors(&sd, &dir.join("model.safetensors")).expect("save weights");
    let mut cfg = read_json(&src.join("config.json"));
    cfg["vocab_size"] = json!(VOCAB);
    cfg["bos_token_id"] = json!(EOS);
    cfg["eos_token_id"] = json!(EOS);
    cfg.as_object_mut().expect("object").remove("pad_token_id");
    std::fs::write(dir.join("config.json"), cfg.to_string()).expect("config");
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json().to_string()).expect("tokenizer");
    let tc = json!({"tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                    "add_bos_token": false, "model_max_length": 64});
    std::fs::write(dir.join("tokenizer_config.json"), tc.to_string()).expect("tokenizer config");
    dir
}

/// `n` prompt/completion records greeting the [`NAMES`] in turn.
pub fn write_sft(dir: &Path, name: &str, n: usize) -> PathBuf {
    let mut text = String::new();
    for i in 0..n {
        let who = NAMES[i % NAMES.len()];
        let line = json!({"prompt": format!("Greet {who}."), "completion": format!(" hello {who}")});
        text.push_str(&line.to_string());
        text.push('\n');
    }
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write data");
    p
}

/// `finetune sft` of a tiny decoder on `train`: 12 steps of 4 rows at learning rate 1e-2, a log every step, a
/// checkpoint every 6, no chat template, `max_seq_length` tokens; then `extra` settings.
pub fn tiny_sft(model: &Path, out: &Path, train: &Path, max_seq_length: usize, extra: &[&str]) -> Output {
    let sets = [
        format!("model_name_or_path={}", model.display()),
        format!("train_file={}", train.display()),
        format!("output_dir={}", out.display()),
        "max_steps=12".into(),
        "per_device_train_batch_size=4".into(),
        "learning_rate=1e-2".into(),
        "logging_steps=1".into(),
        "save_steps=6".into(),
        "use_chat_template=false".into(),
        format!("max_seq_length={max_seq_length}"),
    ];
    sft_with(&sets, extra)
}

/// Training losses logged by a 12-step run, in order (from its last checkpoint's trainer_state.json).
pub fn losses(out: &Path) -> Vec<f64> {
    let state = read_json(&out.join("checkpoint-12/trainer_state.json"));
    let log = state["log_history"].as_array().expect("log_history").clone();
    log.iter().filter_map(|e| e.get("loss").and_then(Value::as_f64)).collect()
}

/// A WordNet database of four synsets in WordNet's file format (index.*, data.*, *.exc), synonyms of the test
/// vocabulary: good/fine/nice and bad/awful/dull (adjectives), love/passion (noun), hate/detest (verb).
pub fn mini_wordnet(root: &Path) -> PathBuf {
    let dir = root.join("wordnet");
    std::fs::create_dir_all(&dir).expect("mkdir wordnet");
    let synsets: [(&str, char, &[&[&str]]); 4] = [
        ("noun", 'n', &[&["love", "passion"]]),
        ("verb", 'v', &[&["hate", "detest"]]),
        ("adj", 'a', &[&["good", "fine", "nice"], &["bad", "awful", "dull"]]),
        ("adv", 'r', &[]),
    ];
    for (name, c, sets) in synsets {
        let mut data = String::from("  1 a test database in WordNet's format\n");
        let mut index: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
        for words in sets {
            let offset = data.len();
            let ws: Vec<String> = words.iter().map(|w| format!("{w} 0")).collect();
            data.push_str(&format!("{offset:08} 00 {c} {:02x} {} 000 | a gloss\n", words.len(), ws.join(" ")));
            for w in *words {
                index.entry(w).or_default().push(offset);
            }
        }
        let mut idx = String::from("  1 a test database in WordNet's format\n");
        for (w, offs) in index {
            let o: Vec<String> = offs.iter().map(|o| format!("{o:08}")).collect();
            idx.push_str(&format!("{w} {c} {n} 0 {n} 0 {}\n", o.join(" "), n = offs.len()));
        }
        std::fs::write(dir.join(format!("data.{name}")), data).expect("data");
        std::fs::write(dir.join(format!("index.{name}")), idx).expect("index");
        std::fs::write(dir.join(format!("{name}.exc")), "").expect("exc");
    }
    dir
}
