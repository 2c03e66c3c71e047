//! config.json parsing, defaults per architecture, validation errors and writing back.

use std::path::{Path, PathBuf};

use finetune_models::config::{Arch, ConfigError, EncoderConfig, ProblemType};
use serde_json::json;

/// Writes to stderr directly (not through `eprintln!`, which the test harness captures) so that a skipped
/// real-model test is visible in a normal `cargo test` run.
macro_rules! skipped {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "SKIPPED: {}", format!($($arg)*));
    }};
}

fn parse(v: serde_json::Value) -> Result<EncoderConfig, ConfigError> {
    EncoderConfig::from_json_str(&v.to_string(), "config.json")
}

fn field_error(e: &ConfigError) -> &str {
    match e {
        ConfigError::Field { field, .. } => field,
        other => panic!("expected a field error, got {other}"),
    }
}

#[test]
fn minilm_style_bert_config() {
    let c = parse(json!({
        "_name_or_path": "nreimers/MiniLM-L6-H384-uncased",
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1, "gradient_checkpointing": false, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "hidden_size": 384, "initializer_range": 0.02, "intermediate_size": 1536,
        "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
        "num_hidden_layers": 6, "pad_token_id": 0, "position_embedding_type": "absolute",
        "transformers_version": "4.8.2", "type_vocab_size": 2, "use_cache": true, "vocab_size": 30522
    }))
    .unwrap();
    assert_eq!(c.arch, Arch::Bert);
    assert_eq!((c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size), (384, 6, 12, 1536));
    assert_eq!(c.head_dim(), 32);
    assert_eq!(c.layer_norm_eps, 1e-12);
    assert_eq!(c.pad_token_id, Some(0));
    // No id2label: two default labels, as transformers.
    assert_eq!(c.num_labels, 2);
    assert_eq!(c.id2label[&1], "LABEL_1");
    assert_eq!(c.label2id["LABEL_0"], 0);
    assert_eq!(c.problem_type, None);
    assert_eq!(c.classifier_dropout, None);
}

#[test]
fn bert_defaults_when_fields_are_absent() {
    let c = parse(json!({"model_type": "bert"})).unwrap();
    assert_eq!((c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_attention_heads), (30522, 768, 12, 12));
    assert_eq!((c.intermediate_size, c.max_position_embeddings, c.type_vocab_size), (3072, 512, 2));
    assert_eq!(c.hidden_act, "gelu");
    assert_eq!((c.hidden_dropout_prob, c.attention_probs_dropout_prob), (0.1, 0.1));
}

#[test]
fn roberta_config_and_defaults() {
    let c = parse(json!({
        "architectures": ["RobertaForMaskedLM"], "model_type": "roberta", "vocab_size": 50265,
        "max_position_embeddings": 514, "type_vocab_size": 1, "layer_norm_eps": 1e-05, "pad_token_id": 1,
        "classifier_dropout": 0.2
    }))
    .unwrap();
    assert_eq!(c.arch, Arch::Roberta);
    assert_eq!((c.max_position_embeddings, c.type_vocab_size, c.pad_token_id), (514, 1, Some(1)));
    assert_eq!(c.layer_norm_eps, 1e-5);
    assert_eq!(c.classifier_dropout, Some(0.2));
    assert_eq!(parse(json!({"model_type": "roberta"})).unwrap().pad_token_id, Some(1));
    // Old configs without model_type are recognised from architectures.
    assert_eq!(parse(json!({"architectures": ["RobertaModel"]})).unwrap().arch, Arch::Roberta);
}

#[test]
fn distilbert_names_map_onto_one_config_and_back() {
    let c = parse(json!({
        "model_type": "distilbert", "architectures": ["DistilBertForSequenceClassification"],
        "dim": 768, "n_layers": 6, "n_heads": 12, "hidden_dim": 3072, "activation": "gelu", "dropout": 0.1,
        "attention_dropout": 0.1, "seq_classif_dropout": 0.2, "qa_dropout": 0.1, "sinusoidal_pos_embds": false,
        "id2label": {"0": "NEGATIVE", "1": "POSITIVE"}, "label2id": {"NEGATIVE": 0, "POSITIVE": 1}
    }))
    .unwrap();
    assert_eq!(c.arch, Arch::DistilBert);
    assert_eq!((c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size), (768, 6, 12, 3072));
    assert_eq!(c.type_vocab_size, 0);
    assert_eq!(c.classifier_dropout, Some(0.2));
    assert_eq!(c.id2label[&1], "POSITIVE");
    let out = c.to_json();
    assert_eq!(out["dim"], 768);
    assert_eq!(out["n_layers"], 6);
    assert_eq!(out["seq_classif_dropout"], 0.2);
    assert_eq!(out["sinusoidal_pos_embds"], false, "unknown fields are preserved");
    assert!(out.get("hidden_size").is_none(), "DistilBERT configs keep DistilBERT names");
    assert_eq!(out["id2label"]["0"], "NEGATIVE");
    assert_eq!(EncoderConfig::from_json_str(&out.to_string(), "x").unwrap(), {
        let mut c2 = c.clone();
        c2.raw = out.as_object().unwrap().clone();
        c2
    });
}

#[test]
fn labels_problem_type_and_write_back() {
    let mut c = parse(json!({
        "model_type": "bert", "num_labels": 3, "problem_type": "multi_label_classification",
        "custom_field": {"nested": [1, 2]}
    }))
    .unwrap();
    assert_eq!(c.num_labels, 3);
    assert_eq!(c.problem_type, Some(ProblemType::MultiLabelClassification));
    c.set_labels(&["B-PER", "I-PER", "O", "B-LOC"]);
    c.set_head("ForTokenClassification");
    let dir = tempfile::tempdir().unwrap();
    let path = c.write(dir.path()).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["architectures"], json!(["BertForTokenClassification"]));
    assert_eq!(v["id2label"], json!({"0": "B-PER", "1": "I-PER", "2": "O", "3": "B-LOC"}));
    assert_eq!(v["label2id"]["B-LOC"], 3);
    assert_eq!(v["custom_field"], json!({"nested": [1, 2]}));
    assert_eq!(v["problem_type"], "multi_label_classification");
    assert!(v.get("num_labels").is_none(), "num_labels is derived from id2label");
    let back = EncoderConfig::from_file(&path).unwrap();
    assert_eq!(back.num_labels, 4);
    assert_eq!(back.id2label, c.id2label);
    assert_eq!(back.label2id, c.label2id);
    // No stray temporary files.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn invalid_fields_are_named() {
    let cases = [
        (json!({"model_type": "bert", "hidden_size": "big"}), "hidden_size"),
        (json!({"model_type": "bert", "hidden_size": -1}), "hidden_size"),
        (json!({"model_type": "bert", "hidden_size": 100, "num_attention_heads": 12}), "hidden_size"),
        (json!({"model_type": "distilbert", "dim": 100, "n_heads": 12}), "dim"),
        (json!({"model_type": "bert", "num_attention_heads": 0}), "num_attention_heads"),
        (json!({"model_type": "bert", "hidden_dropout_prob": 1.5}), "hidden_dropout_prob"),
        (json!({"model_type": "bert", "layer_norm_eps": 0.0}), "layer_norm_eps"),
        (json!({"model_type": "bert", "problem_type": "ranking"}), "problem_type"),
        (json!({"model_type": "bert", "num_labels": 1, "problem_type": "single_label_classification"}), "problem_type"),
        (json!({"model_type": "bert", "id2label": {"0": "a", "2": "b"}}), "id2label"),
        (json!({"model_type": "bert", "id2label": {"x": "a"}}), "id2label"),
        (json!({"model_type": "bert", "id2label": {"0": "a"}, "num_labels": 2}), "num_labels"),
        (json!({"model_type": "bert", "label2id": {"a": "zero"}}), "label2id"),
        (json!({"model_type": "gpt2"}), "model_type"),
        (json!({"hidden_size": 768}), "model_type"),
        (json!({"model_type": "bert", "architectures": "BertModel"}), "architectures"),
    ];
    for (v, field) in cases {
        let e = parse(v.clone()).unwrap_err();
        assert_eq!(field_error(&e), field, "{v}: {e}");
        assert!(e.to_string().contains("config.json") && e.to_string().contains(field), "{e}");
    }
}

#[test]
fn file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing: PathBuf = dir.path().join("config.json");
    let e = EncoderConfig::from_file(&missing).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }) && e.to_string().contains("config.json"), "{e}");
    std::fs::write(&missing, "{ nope").unwrap();
    let e = EncoderConfig::from_file(dir.path()).unwrap_err();
    assert!(matches!(e, ConfigError::Json { .. }) && e.to_string().contains("config.json"), "{e}");
    std::fs::write(&missing, "[1, 2]").unwrap();
    assert!(matches!(EncoderConfig::from_file(&missing).unwrap_err(), ConfigError::Invalid { .. }));
}

#[test]
fn real_minilm_config_round_trips() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/all-MiniLM-L6-v2");
    if !dir.join("config.json").is_file() {
        skipped!("{} is absent; run scripts/fetch.sh", dir.display());
        return;
    }
    let c = EncoderConfig::from_file(&dir).unwrap();
    assert_eq!((c.arch, c.hidden_size, c.num_hidden_layers), (Arch::Bert, 384, 6));
    let original: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let written = c.to_json();
    for (k, v) in original.as_object().unwrap() {
        assert_eq!(&written[k], v, "field {k} must be preserved");
    }
}
