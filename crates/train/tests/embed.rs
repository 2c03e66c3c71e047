//! Sentence vectors of the real all-MiniLM-L6-v2 against transformers (fixture from
//! scripts/reference/gen_embeddings.py): the last layer's [CLS] state, and sentence-transformers' embedding (the
//! mean of the token states over the attention mask, L2-normalised). Skips visibly when scripts/fetch.sh has not
//! been run.

use std::path::Path;

use finetune_data::Example;
use finetune_train::workflow::{embed_examples, InferOptions};
use finetune_train::Pooling;

#[test]
fn minilm_cls_and_mean_vectors_match_transformers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/all-MiniLM-L6-v2");
    if !dir.join("model.safetensors").is_file() {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "SKIPPED: {} is absent; run scripts/fetch.sh", dir.display());
        return;
    }
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm_embeddings.json");
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture).expect("fixture")).expect("json");
    let sentences: Vec<&str> =
        fx["sentences"].as_array().expect("sentences").iter().filter_map(|s| s.as_str()).collect();
    let examples: Vec<Example> = sentences
        .iter()
        .enumerate()
        .map(|(i, s)| Example { text: s.to_string(), text_pair: None, label: None, line: i as u64 + 1 })
        .collect();
    let opts = InferOptions { max_seq_length: 128, batch_size: 4, ..Default::default() };
    let model = dir.display().to_string();
    for (key, pooling) in [("cls", Pooling::Cls), ("mean", Pooling::Mean)] {
        let got = embed_examples(&model, &examples, &opts, "fixture", pooling).expect("embed");
        let want: Vec<Vec<f64>> = serde_json::from_value(fx[key].clone()).expect("vectors");
        assert_eq!((got.len(), got[0].len()), (want.len(), want[0].len()), "{key}");
        let worst = got
            .iter()
            .flatten()
            .zip(want.iter().flatten())
            .map(|(&a, &b)| (f64::from(a) - b).abs())
            .fold(0.0f64, f64::max);
        assert!(worst <= 1e-4, "{key}: max |ours - transformers| = {worst}");
    }
}
