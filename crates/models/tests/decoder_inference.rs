//! Forward-only decoder workspaces (evaluation, perplexity): two layers' activation sets used in turn give the
//! same logits and loss, bit for bit, as a training workspace, and refuse a training pass.

use finetune_models::causal::load_causal_lm;
use finetune_models::decoder::Batch;

mod common;
use common::{fixture, load};

#[test]
fn inference_workspaces_equal_training_ones_and_refuse_training() {
    for dir in ["tiny_llama", "tiny_qwen2", "tiny_phi", "tiny_gpt2"] {
        let e = load(fixture(dir, "expected.safetensors"));
        let u = |k: &str| e.i64s[k].iter().map(|&v| v as u32).collect::<Vec<u32>>();
        let (ids, mask, labels) = (u("input_ids"), u("attention_mask"), e.i64s["labels"].clone());
        let batch = Batch {
            input_ids: &ids,
            attention_mask: &mask,
            labels: Some(&labels),
            loss_normalizer: None,
            position_ids: None,
        };
        let mut m = load_causal_lm(fixture(dir, "").to_str().expect("path")).expect("loads").model;
        let (b, t) = (3, ids.len() / 3);
        let mut train = m.new_workspace(b, t);
        let mut inf = m.new_inference_workspace(b, t);
        let want = m.logits(&mut train, &batch, false).expect("logits").to_vec();
        let got = m.logits(&mut inf, &batch, false).expect("logits").to_vec();
        assert!(want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "{dir}: logits differ");
        let l_train = m.loss(&mut train, &batch, 0.0, false).expect("loss");
        let l_inf = m.loss(&mut inf, &batch, 0.0, false).expect("loss");
        assert_eq!(l_train.to_bits(), l_inf.to_bits(), "{dir}: loss {l_inf} vs {l_train}");
        let e = m.loss(&mut inf, &batch, 0.0, true).expect_err("no backward on a forward-only workspace");
        assert!(e.to_string().contains("for_inference"), "{dir}: {e}");
    }
}
