//! `finetune export` end to end on the tiny random Llama fixture with a 128-token byte-level BPE tokenizer:
//! the file is written and reads back as a Llama with the tokenizer metadata, the drift report is printed, a
//! drift over `--max-ppl-drift` fails with one line and leaves no file (nor its temporary), bad arguments fail
//! with one line.

mod common;

use std::path::{Path, PathBuf};

use common::{finetune, ok, stderr};
use finetune_models::gguf::{GgufFile, MetaArray, MetaValue};
use serde_json::{json, Value};

/// GPT-2's byte → printable character map (`bytes_to_unicode`).
fn byte_char(b: u8) -> char {
    let direct = |x: u8| (33..=126).contains(&x) || (161..=172).contains(&x) || x >= 174;
    if direct(b) {
        return char::from(b);
    }
    let shift = (0..b).filter(|&x| !direct(x)).count() as u32;
    char::from_u32(256 + shift).expect("valid char")
}

/// The tiny Llama (vocab 128) with a byte-level BPE over the 128 ASCII bytes, no merges.
fn llama_dir(root: &Path) -> PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/tiny_llama");
    let dir = root.join("llama");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture.join(f), dir.join(f)).unwrap();
    }
    let mut vocab = serde_json::Map::new();
    for b in 0..128u8 {
        vocab.insert(byte_char(b).to_string(), json!(b));
    }
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let tj = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": byte_level, "post_processor": null, "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": []}
    });
    std::fs::write(dir.join("tokenizer.json"), tj.to_string()).unwrap();
    let (bos, eos) = (byte_char(1).to_string(), byte_char(2).to_string());
    let tc = json!({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos, "eos_token": eos,
                    "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"});
    std::fs::write(dir.join("tokenizer_config.json"), tc.to_string()).unwrap();
    dir
}

#[test]
fn export_writes_a_llama_gguf_and_reports_drift() {
    let tmp = tempfile::tempdir().unwrap();
    let model = llama_dir(tmp.path());
    let out = tmp.path().join("tiny-q8_0.gguf");
    let o = ok(finetune(&[
        "export",
        "--model",
        model.to_str().unwrap(),
        "--format",
        "gguf",
        "--outtype",
        "q8_0",
        "--out",
        out.to_str().unwrap(),
        "--window",
        "64",
        "--json",
    ]));
    let report: Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).expect("JSON report");
    assert_eq!(report["arch"], "llama");
    assert_eq!(report["outtype"], "q8_0");
    assert!(report["eval_tokens"].as_u64().unwrap() > 500, "{report}");
    assert!(report["max_abs_logit_diff"].as_f64().unwrap() > 0.0);
    assert!(report["ppl_change_percent"].as_f64().unwrap().abs() < 3.0);
    assert!(report["tokenizer_check"].as_str().unwrap().starts_with("same "), "{report}");
    assert!(!tmp.path().join("tiny-q8_0.gguf.tmp").exists());

    let file = GgufFile::open(&out).expect("valid GGUF");
    assert_eq!(file.get_str("general.architecture").unwrap(), Some("llama"));
    assert_eq!(file.get_str("general.name").unwrap(), Some("llama"));
    assert_eq!(file.get_u64("general.file_type").unwrap(), Some(7));
    assert_eq!(file.get_str("tokenizer.ggml.model").unwrap(), Some("gpt2"));
    assert_eq!(file.get_str("tokenizer.ggml.pre").unwrap(), Some("gpt-2"));
    assert_eq!(file.get_u64("tokenizer.ggml.bos_token_id").unwrap(), Some(1));
    assert_eq!(file.get_u64("tokenizer.ggml.eos_token_id").unwrap(), Some(2));
    assert_eq!(file.get_u64("tokenizer.ggml.padding_token_id").unwrap(), Some(0));
    assert!(file.get_str("tokenizer.chat_template").unwrap().is_some());
    match file.get("tokenizer.ggml.tokens") {
        Some(MetaValue::Array(MetaArray::String(t))) => assert_eq!(t.len(), 128),
        other => panic!("tokens: {other:?}"),
    }

    // The human-readable report.
    let out2 = tmp.path().join("tiny-f16.gguf");
    let o = ok(finetune(&[
        "export",
        "--model",
        model.to_str().unwrap(),
        "--outtype",
        "f16",
        "--out",
        out2.to_str().unwrap(),
        "--window",
        "64",
    ]));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("max |logit diff|") && text.contains("perplexity source"), "{text}");
}

#[test]
fn export_fails_on_drift_and_bad_arguments_without_leaving_files() {
    let tmp = tempfile::tempdir().unwrap();
    let model = llama_dir(tmp.path());
    let out = tmp.path().join("strict.gguf");
    let o = finetune(&[
        "export",
        "--model",
        model.to_str().unwrap(),
        "--outtype",
        "q8_0",
        "--out",
        out.to_str().unwrap(),
        "--window",
        "64",
        "--max-ppl-drift",
        "0",
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("--max-ppl-drift") && err.contains("strict.gguf"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!out.exists() && !tmp.path().join("strict.gguf.tmp").exists());

    for (args, want) in [
        (vec!["--outtype", "q4_k"], "--outtype"),
        (vec!["--format", "tflite"], "--format"),
        (vec!["--eval-file", "/nonexistent/eval.txt"], "eval.txt"),
    ] {
        let mut a = vec!["export", "--model", model.to_str().unwrap(), "--out", out.to_str().unwrap()];
        a.extend(args);
        let o = finetune(&a);
        assert!(!o.status.success());
        let err = stderr(&o);
        assert!(err.contains(want) && err.trim().lines().count() == 1, "{err}");
        assert!(!out.exists());
    }
    // A directory without weights.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = finetune(&["export", "--model", empty.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).trim().lines().count() == 1, "{}", stderr(&o));
}

#[test]
fn export_merges_a_lora_adapter_into_its_base() {
    let tmp = tempfile::tempdir().unwrap();
    let base = llama_dir(tmp.path());
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/tiny_lora_llama");
    let adapter = tmp.path().join("adapter");
    std::fs::create_dir_all(&adapter).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(fixture.join(f), adapter.join(f)).unwrap();
    }
    let out = tmp.path().join("merged.gguf");
    ok(finetune(&[
        "export",
        "--model",
        adapter.to_str().unwrap(),
        "--base",
        base.to_str().unwrap(),
        "--outtype",
        "f32",
        "--out",
        out.to_str().unwrap(),
        "--window",
        "64",
    ]));
    // Without --base: one line saying so.
    let o = finetune(&["export", "--model", adapter.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("--base"), "{}", stderr(&o));

    let mut merged = finetune_models::causal::load_causal_lm(base.to_str().unwrap()).unwrap();
    merged.model.store_mut().load_adapter(adapter.to_str().unwrap()).unwrap();
    merged.model.store_mut().merge_lora().unwrap();
    let plain = finetune_models::causal::load_causal_lm(base.to_str().unwrap()).unwrap();
    let back = finetune_models::causal::load_causal_lm(out.to_str().unwrap()).expect("export loads");
    let name = "model.layers.0.self_attn.q_proj.weight";
    let (m, p, b) = (
        merged.model.store().param(name).unwrap(),
        plain.model.store().param(name).unwrap(),
        back.model.store().param(name).unwrap(),
    );
    assert_ne!(m, p, "the adapter changes q_proj");
    assert_eq!(m, b, "the export holds the merged weights");
    assert_eq!(GgufFile::open(&out).unwrap().get_str("general.name").unwrap(), Some("llama"));
}

/// A tiny encoder fixture copied with the `architectures` a trained model's config.json has.
fn encoder_dir(root: &Path, fixture: &str, arch: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures").join(fixture);
    let dir = root.join(fixture);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config["architectures"] = json!([arch]);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    dir
}

#[test]
fn export_writes_encoder_classifiers_as_onnx_and_refuses_gguf_options() {
    let fails = |args: &[&str]| {
        let o = finetune(args);
        assert!(!o.status.success(), "{args:?} succeeded");
        stderr(&o)
    };
    let root = tempfile::tempdir().unwrap();
    for (fixture, arch, inputs, out_rank) in [
        ("tiny_bert", "BertForSequenceClassification", 3, 2),
        ("tiny_roberta", "RobertaForSequenceClassification", 2, 2),
        ("tiny_distilbert", "DistilBertForSequenceClassification", 2, 2),
        ("tiny_bert_token", "BertForTokenClassification", 3, 3),
    ] {
        let dir = encoder_dir(root.path(), fixture, arch);
        let out = root.path().join(format!("{fixture}.onnx"));
        let args = ["export", "--model", dir.to_str().unwrap(), "--format", "onnx", "--out", out.to_str().unwrap()];
        let o = ok(finetune(&[&args[..], &["--json"]].concat()));
        let report: Value = serde_json::from_slice(&o.stdout).expect("one JSON line");
        assert_eq!(report["architecture"], json!(arch));
        assert_eq!(report["opset"], json!(17));
        let model = finetune_models::onnx::decode(&std::fs::read(&out).unwrap()).expect("an ONNX model");
        let graph = model.graph.expect("graph");
        assert_eq!(graph.input.len(), inputs, "{fixture}");
        let shape = graph.output[0].r#type.as_ref().unwrap().tensor_type.as_ref().unwrap().shape.as_ref().unwrap();
        assert_eq!(shape.dim.len(), out_rank, "{fixture}");
        assert!(model.metadata_props.iter().any(|p| p.key == "id2label"));
        assert!(!root.path().join(format!("{fixture}.onnx.tmp")).exists());
    }

    let dir = encoder_dir(root.path(), "tiny_bert", "BertForSequenceClassification");
    let out = root.path().join("refused.onnx");
    for (extra, needle) in [
        (&["--outtype", "f16"][..], "--outtype f16"),
        (&["--eval-file", "x.txt"][..], "--eval-file"),
        (&["--window", "64"][..], "--window"),
    ] {
        let base = ["export", "--model", dir.to_str().unwrap(), "--format", "onnx", "--out", out.to_str().unwrap()];
        let e = fails(&[&base[..], extra].concat());
        assert!(e.contains(needle) && e.trim().lines().count() == 1, "{e}");
        assert!(!out.exists());
    }
    // A decoder is not an encoder classifier (refused by its model_type); an unknown format names the known ones.
    let llama = llama_dir(root.path());
    let e = fails(&["export", "--model", llama.to_str().unwrap(), "--format", "onnx", "--out", out.to_str().unwrap()]);
    assert!(e.contains("model_type") && e.contains("bert") && e.trim().lines().count() == 1, "{e}");
    let e = fails(&["export", "--model", dir.to_str().unwrap(), "--format", "tflite", "--out", out.to_str().unwrap()]);
    assert!(e.contains("--format tflite") && e.contains("onnx"), "{e}");
    assert!(!out.exists());
}
