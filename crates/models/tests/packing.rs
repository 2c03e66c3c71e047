//! Packed rows (`position_ids` restarting at 0, as transformers' `DataCollatorWithFlattening`): one row holding
//! three sequences gives the loss, logits and parameter gradients of the three sequences run one by one.

use finetune_models::llama::{Batch, LlamaConfig, LlamaForCausalLM, Workspace};

mod common;
use common::{fixture, load};

fn model(dir: &str) -> LlamaForCausalLM {
    let text = std::fs::read_to_string(fixture(dir, "config.json")).expect("config");
    let cfg = LlamaConfig::from_json(&text).expect("config parses");
    LlamaForCausalLM::from_state_dict(cfg, &load(fixture(dir, "model.safetensors")).f32s).expect("loads")
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn packed_equals_separate(dir: &str) {
    let seqs: Vec<Vec<u32>> = [5usize, 3, 6]
        .iter()
        .enumerate()
        .map(|(k, &n)| (0..n).map(|i| 2 + ((i * 37 + k * 11 + 5) % 120) as u32).collect())
        .collect();
    let total: usize = seqs.iter().map(Vec::len).sum();
    // Every sequence predicts its own next tokens only: the collator masks each sequence's first label.
    let kept: usize = seqs.iter().map(|s| s.len() - 1).sum();
    let norm = Some(kept as f32);

    let mut m = model(dir);
    let v = m.config.vocab_size;
    let mut sep_logits = Vec::new();
    let mut sep_loss = 0.0f32;
    m.zero_grad();
    for s in &seqs {
        let mut ws = Workspace::new(&m.config, 1, s.len());
        let mask = vec![1u32; s.len()];
        let labels: Vec<i64> = s.iter().map(|&i| i as i64).collect();
        let b = Batch {
            input_ids: s,
            attention_mask: &mask,
            labels: Some(&labels),
            loss_normalizer: norm,
            ..Default::default()
        };
        sep_logits.extend_from_slice(m.logits(&mut ws, &b, false).expect("logits"));
        sep_loss += m.forward_backward(&mut ws, &b).expect("forward_backward");
    }
    let sep_grads = m.grads.clone();

    let ids: Vec<u32> = seqs.concat();
    let pos: Vec<u32> = seqs.iter().flat_map(|s| 0..s.len() as u32).collect();
    let labels: Vec<i64> =
        seqs.iter().flat_map(|s| s.iter().enumerate().map(|(i, &t)| if i == 0 { -100 } else { t as i64 })).collect();
    let mask = vec![1u32; total];
    let b = Batch {
        input_ids: &ids,
        attention_mask: &mask,
        labels: Some(&labels),
        loss_normalizer: norm,
        position_ids: Some(&pos),
    };
    let mut ws = Workspace::new(&m.config, 1, total);
    let logits = m.logits(&mut ws, &b, false).expect("packed logits").to_vec();
    assert_eq!(logits.len(), total * v);
    let err = max_abs(&logits, &sep_logits);
    assert!(err <= 1e-5, "{dir}: packed logits differ by {err}");
    m.zero_grad();
    let loss = m.forward_backward(&mut ws, &b).expect("packed forward_backward");
    assert!((loss - sep_loss).abs() <= 1e-5, "{dir}: packed loss {loss} vs {sep_loss}");
    assert_eq!(m.forward(&mut ws, &b).expect("forward"), loss);
    for info in m.param_infos() {
        let r = info.offset..info.offset + info.len();
        let e = max_abs(&m.grads[r.clone()], &sep_grads[r]);
        assert!(e <= 1e-5, "{dir}: gradient of {} differs by {e}", info.name);
    }

    // Without position ids the same row is one long sequence: the logits after the first sequence change.
    let plain = Batch { position_ids: None, ..b };
    let unpacked = m.logits(&mut ws, &plain, false).expect("logits").to_vec();
    assert!(max_abs(&unpacked[5 * v..], &sep_logits[5 * v..]) > 1e-3, "{dir}: packing must change the logits");
    assert_eq!(&unpacked[..5 * v], &logits[..5 * v]);
}

#[test]
fn packed_llama_equals_separate_sequences() {
    packed_equals_separate("tiny_llama");
}

#[test]
fn packed_qwen2_equals_separate_sequences() {
    packed_equals_separate("tiny_qwen2");
}

#[test]
fn bad_position_ids_are_errors() {
    let m = model("tiny_llama");
    let mut ws = Workspace::new(&m.config, 1, 4);
    let ids = [3u32, 4, 5, 6];
    let mask = [1u32; 4];
    let short = Batch { input_ids: &ids, attention_mask: &mask, position_ids: Some(&[0, 1, 2]), ..Default::default() };
    let e = m.logits(&mut ws, &short, false).expect_err("length");
    assert!(e.to_string().contains("position_ids"), "{e}");
    let far = Batch { input_ids: &ids, attention_mask: &mask, position_ids: Some(&[0, 1, 2, 9]), ..Default::default() };
    assert!(m.logits(&mut ws, &far, false).is_err());
}
