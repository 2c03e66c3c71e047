//! The causal-LM adapter on the tiny random decoders of crates/models/tests/fixtures.

use std::path::PathBuf;

use finetune_train::{CausalLm, TrainingArguments};
use serde_json::Value;

fn model_dir(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures").join(name).display().to_string()
}

fn load(name: &str) -> CausalLm {
    match CausalLm::from_pretrained(&model_dir(name), TrainingArguments::default().adamw()) {
        Ok(m) => m,
        Err(e) => panic!("loading {name}: {e}"),
    }
}

/// HF perplexity guide's sliding-window loop (scripts/reference/gen_window_perplexity.py).
#[test]
fn sliding_window_perplexity_matches_the_hf_guide() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/window_perplexity.json");
    let text = std::fs::read_to_string(&path).expect("fixture");
    let fixture: Value = serde_json::from_str(&text).expect("json");
    let cases = fixture["cases"].as_array().expect("cases");
    assert!(cases.len() >= 12);
    for case in cases {
        let mut model = load(case["model"].as_str().expect("model"));
        let ids: Vec<u32> =
            case["input_ids"].as_array().expect("ids").iter().map(|v| v.as_u64().expect("id") as u32).collect();
        let (max_length, stride) =
            (case["max_length"].as_u64().expect("ml") as usize, case["stride"].as_u64().expect("s") as usize);
        let got = model.sliding_window_perplexity(&ids, max_length, stride).expect("perplexity");
        let want_loss = case["loss"].as_f64().expect("loss");
        let want_ppl = case["perplexity"].as_f64().expect("ppl");
        assert_eq!(got.num_tokens as u64, case["num_tokens"].as_u64().expect("n"), "{case}");
        assert!((got.loss - want_loss).abs() < 1e-5, "loss {} vs {want_loss} for {}", got.loss, case["model"]);
        assert!((got.perplexity / want_ppl - 1.0).abs() < 1e-5, "ppl {} vs {want_ppl}", got.perplexity);
    }
}

#[test]
fn sliding_window_rejects_bad_arguments() {
    let mut model = load("tiny_llama");
    assert!(model.sliding_window_perplexity(&[1, 2, 3], 1, 1).is_err());
    assert!(model.sliding_window_perplexity(&[1, 2, 3], 8, 0).is_err());
    assert!(model.sliding_window_perplexity(&[1, 2, 3], 8, 9).is_err());
}
