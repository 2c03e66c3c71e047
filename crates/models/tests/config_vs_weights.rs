//! A `config.json` whose sizes are absurd next to its weights is one error naming the field, never an attempt to
//! allocate what the config claims (which aborted the process with a failed allocation of petabytes).

use finetune_models::bert::{BertConfig, BertForSequenceClassification};
use finetune_models::causal::load_causal_lm;
use finetune_models::checkpoint::load_pretrained;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture(dir: &str, file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(dir).join(file)
}

/// Copies a fixture model into a temporary directory with `edit` applied to its `config.json`.
fn doctored(fixture_dir: &str, edit: impl Fn(&mut serde_json::Map<String, Value>)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = std::fs::read_to_string(fixture(fixture_dir, "config.json")).expect("config");
    let mut config: Value = serde_json::from_str(&text).expect("json");
    edit(config.as_object_mut().expect("object"));
    std::fs::write(dir.path().join("config.json"), config.to_string()).expect("write config");
    std::fs::copy(fixture(fixture_dir, "model.safetensors"), dir.path().join("model.safetensors")).expect("copy");
    dir
}

fn set(field: &'static str, value: u64) -> impl Fn(&mut serde_json::Map<String, Value>) {
    move |m| {
        m.insert(field.into(), value.into());
    }
}

/// What the encoder workflows do: the HF config, then the model's own config, then the weights.
fn load_encoder(dir: &Path) -> Result<(), String> {
    let loaded = load_pretrained(dir.to_str().expect("utf-8")).map_err(|e| e.to_string())?;
    let cfg = BertConfig::from_json(&loaded.config.to_json().to_string()).map_err(|e| e.to_string())?;
    BertForSequenceClassification::from_state_dict(cfg, &loaded.state, 0).map(|_| ()).map_err(|e| e.to_string())
}

fn one_line_naming(err: &str, field: &str) {
    assert!(!err.contains('\n'), "one line: {err}");
    assert!(err.contains(&format!("`{field}`")), "names the field `{field}`: {err}");
    assert!(err.contains("config.json"), "names the file: {err}");
}

#[test]
fn the_fixture_itself_loads() {
    let dir = doctored("tiny_bert", |_| {});
    load_encoder(dir.path()).expect("loads");
    let dir = doctored("tiny_llama", |_| {});
    load_causal_lm(dir.path().to_str().unwrap()).map_err(|e| e.to_string()).expect("loads");
    let dir = doctored("tiny_gpt2", |_| {});
    load_causal_lm(dir.path().to_str().unwrap()).map_err(|e| e.to_string()).expect("loads");
}

#[test]
fn encoder_sizes_absurd_or_off_by_one_are_refused_by_field() {
    let cases: &[(&'static str, u64)] = &[
        ("vocab_size", 1 << 50),
        ("vocab_size", 1_000_000),
        ("max_position_embeddings", 1 << 45),
        ("max_position_embeddings", 4096),
        ("hidden_size", 1 << 40),
        ("num_hidden_layers", 1 << 40),
        ("num_hidden_layers", 1000),
        ("intermediate_size", 1 << 44),
        ("intermediate_size", 1 << 20),
        ("type_vocab_size", 1 << 40),
        ("type_vocab_size", 7),
        ("num_labels", 1 << 40),
    ];
    for &(field, value) in cases {
        let dir = doctored("tiny_bert", |m| {
            set(field, value)(m);
            if field == "num_labels" {
                m.remove("id2label");
                m.remove("label2id");
            }
        });
        let err = load_encoder(dir.path()).expect_err(field);
        one_line_naming(&err, field);
    }
}

#[test]
fn a_classifier_head_larger_than_the_checkpoint_is_refused() {
    // 60 000 named labels on a hidden size of the tiny model: a fresh head bigger than every weight loaded.
    let dir = doctored("tiny_bert", |m| {
        let labels: serde_json::Map<String, Value> =
            (0..60_000).map(|i| (i.to_string(), Value::from(format!("L{i}")))).collect();
        m.insert("id2label".into(), Value::Object(labels));
        m.remove("label2id");
        m.remove("num_labels");
    });
    let loaded = load_pretrained(dir.path().to_str().unwrap()).expect("reads");
    let cfg = BertConfig::from_json(&loaded.config.to_json().to_string()).expect("config");
    let mut state = loaded.state;
    // As the workflows do when the label count changes: the old head is dropped, a new one initialised.
    state.retain(|k, _| !k.starts_with("classifier"));
    // 60 000 × 32 values: more than every weight of the tiny checkpoint (and over the 2^20 floor).
    let Err(err) = BertForSequenceClassification::from_state_dict(cfg, &state, 0) else { panic!("must be refused") };
    let err = err.to_string();
    assert!(err.contains("classifier.weight") && err.contains("too large") && !err.contains('\n'), "{err}");
}

#[test]
fn decoder_sizes_absurd_or_off_by_one_are_refused_by_field() {
    let llama: &[(&'static str, u64)] = &[
        ("vocab_size", 1 << 50),
        ("vocab_size", 3),
        ("hidden_size", 1 << 40),
        ("intermediate_size", 1 << 50),
        ("num_hidden_layers", 1 << 40),
        ("num_hidden_layers", 9),
        ("num_key_value_heads", 1),
        ("head_dim", 1 << 30),
        // Found by scripts/fuzz.sh: the rotary table was sized by head_dim before the weights were compared.
        ("head_dim", 1 << 22),
    ];
    for &(field, value) in llama {
        let dir = doctored("tiny_llama", set(field, value));
        let Err(err) = load_causal_lm(dir.path().to_str().unwrap()) else { panic!("{field}: loaded") };
        let err = err.to_string();
        assert!(!err.contains('\n') && err.contains(field), "{field}: {err}");
        assert!(err.contains(dir.path().to_str().unwrap()), "names the model: {err}");
    }
    let gpt2: &[(&'static str, u64)] =
        &[("vocab_size", 1 << 50), ("n_positions", 1 << 50), ("n_positions", 5), ("n_layer", 1 << 40), ("n_inner", 3)];
    for &(field, value) in gpt2 {
        let dir = doctored("tiny_gpt2", set(field, value));
        let Err(err) = load_causal_lm(dir.path().to_str().unwrap()) else { panic!("{field}: loaded") };
        let err = err.to_string();
        assert!(!err.contains('\n') && err.contains(field), "{field}: {err}");
    }
}
