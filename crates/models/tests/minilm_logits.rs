//! The real all-MiniLM-L6-v2 with a sequence-classification head against transformers' logits (fixture from
//! scripts/reference/gen_minilm_logits.py). Skips visibly when scripts/fetch.sh has not been run.

use std::path::Path;

use finetune_models::bert::{Batch, BertConfig, BertForSequenceClassification, Mode, Workspace};
use finetune_models::checkpoint::load_state_dict;
use safetensors::{Dtype, SafeTensors};

#[test]
fn minilm_sequence_classification_logits_match_transformers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/all-MiniLM-L6-v2");
    if !dir.join("model.safetensors").is_file() {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "SKIPPED: {} is absent; run scripts/fetch.sh", dir.display());
        return;
    }
    let bytes = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm_seqcls.safetensors"))
        .expect("fixture");
    let fx = SafeTensors::deserialize(&bytes).expect("fixture safetensors");
    let f32s = |name: &str| -> Vec<f32> {
        let v = fx.tensor(name).expect(name);
        assert_eq!(v.dtype(), Dtype::F32);
        v.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    };
    let u32s = |name: &str| -> (Vec<u32>, Vec<usize>) {
        let v = fx.tensor(name).expect(name);
        assert_eq!(v.dtype(), Dtype::I32);
        (
            v.data().chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u32).collect(),
            v.shape().to_vec(),
        )
    };

    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).expect("config")).expect("json");
    config["num_labels"] = 3.into();
    let cfg = BertConfig::from_json(&config.to_string()).expect("config parses");
    let mut state = load_state_dict(dir.join("model.safetensors")).expect("weights");
    for name in ["classifier.weight", "classifier.bias"] {
        let t = fx.tensor(name).expect(name);
        state.insert(name.into(), finetune_engine::Tensor::new(t.shape().to_vec(), f32s(name)));
    }
    let (model, fresh) = BertForSequenceClassification::from_state_dict(cfg.clone(), &state, 0).expect("loads");
    assert!(fresh.is_empty(), "every parameter comes from the checkpoint or the fixture: {fresh:?}");

    let (ids, shape) = u32s("input_ids");
    let (mask, _) = u32s("attention_mask");
    let (types, _) = u32s("token_type_ids");
    let mut ws = Workspace::new(&cfg, shape[0], shape[1]);
    let batch = Batch { input_ids: &ids, attention_mask: &mask, token_type_ids: Some(&types), labels: None };
    model.forward(&mut ws, &batch, Mode::Eval).expect("forward");
    let want = f32s("logits");
    assert_eq!(ws.logits.len(), want.len());
    let worst = ws.logits.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 1e-4, "max |logit - transformers| = {worst}");
}
