//! The causal-LM loss with transformers' `label_smoothing_factor` (the Trainer's `LabelSmoother`, the same as
//! `torch.nn.functional.cross_entropy(label_smoothing=ε)` over the shifted targets) on the tiny decoders: the loss
//! equals the engine's reference definition applied to the model's own logits, its gradients match finite
//! differences, and ε = 0 keeps the fused loss unchanged.

use finetune_engine::kernels::cross_entropy::{self, IGNORE_INDEX};
use finetune_models::decoder::Architecture;
use finetune_models::gpt2::{self, Gpt2Config, Gpt2LMHeadModel};
use finetune_models::llama::{Batch, LlamaConfig, LlamaForCausalLM, Workspace};

mod common;
use common::{fixture, load};

const EPS: f32 = 0.1;

fn llama() -> (LlamaForCausalLM, Vec<u32>, Vec<u32>, Vec<i64>) {
    let text = std::fs::read_to_string(fixture("tiny_llama", "config.json")).expect("config");
    let cfg = LlamaConfig::from_json(&text).expect("config parses");
    let model =
        LlamaForCausalLM::from_state_dict(cfg, &load(fixture("tiny_llama", "model.safetensors")).f32s).expect("loads");
    let expected = load(fixture("tiny_llama", "expected.safetensors"));
    let u = |k: &str| expected.i64s[k].iter().map(|&v| v as u32).collect::<Vec<u32>>();
    (model, u("input_ids"), u("attention_mask"), expected.i64s["labels"].clone())
}

/// Mean over kept shifted targets of the smoothed cross-entropy, by the engine's reference definition.
fn reference_loss(logits: &[f32], labels: &[i64], batch: usize, seq: usize, vocab: usize) -> f64 {
    let mut targets = vec![IGNORE_INDEX; batch * seq];
    for b in 0..batch {
        targets[b * seq..(b + 1) * seq - 1].copy_from_slice(&labels[b * seq + 1..(b + 1) * seq]);
    }
    let opt = cross_entropy::Options { weight: None, label_smoothing: EPS };
    cross_entropy::reference::forward(logits, &targets, batch * seq, vocab, opt)
}

#[test]
fn llama_smoothed_loss_matches_the_reference_and_finite_differences() {
    let (mut m, ids, mask, labels) = llama();
    let (b, t, v) = (3, ids.len() / 3, m.config.vocab_size);
    let mut ws = Workspace::new(&m.config, b, t);
    let nolabels = Batch { input_ids: &ids, attention_mask: &mask, ..Default::default() };
    let logits = m.logits(&mut ws, &nolabels, false).expect("logits").to_vec();
    let batch = Batch { labels: Some(&labels), ..nolabels };
    let plain = m.forward(&mut ws, &batch).expect("forward");
    ws.lm.label_smoothing = EPS;
    let smoothed = m.forward(&mut ws, &batch).expect("forward");
    let want = reference_loss(&logits, &labels, b, t, v);
    assert!(((smoothed as f64 - want) / want).abs() < 1e-5, "smoothed {smoothed} vs reference {want}");
    assert!((smoothed - plain).abs() > 1e-3, "label smoothing changes the loss ({plain} vs {smoothed})");
    ws.lm.label_smoothing = 0.0;
    assert_eq!(m.forward(&mut ws, &batch).expect("forward"), plain, "ε = 0 is the fused loss");

    ws.lm.label_smoothing = EPS;
    let loss = m.forward_backward(&mut ws, &batch).expect("forward_backward");
    assert!((loss - smoothed).abs() <= 1e-6 * smoothed.abs());
    let grads = m.store.grads_state_dict();
    let step = 1e-2f32;
    for name in ["model.embed_tokens.weight", "model.layers.1.mlp.down_proj.weight", "model.norm.weight"] {
        let g = &grads[name].data;
        let mut idx: Vec<usize> = (0..g.len()).collect();
        idx.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
        for &i in &idx[..2] {
            let orig = m.store.param(name).expect("param")[i];
            let mut at = |x: f32| {
                m.store.param_mut(name).expect("param")[i] = x;
                m.forward(&mut ws, &batch).expect("forward") as f64
            };
            let fd = (at(orig + step) - at(orig - step)) / (2.0 * step as f64);
            at(orig);
            let an = g[i] as f64;
            assert!((fd - an).abs() <= 2e-2 * an.abs() + 2e-4, "{name}[{i}]: analytic {an} vs fd {fd}");
        }
    }
}

#[test]
fn gpt2_smoothed_loss_matches_the_reference() {
    let text = std::fs::read_to_string(fixture("tiny_gpt2", "config.json")).expect("config");
    let cfg = Gpt2Config::from_json(&text).expect("config parses");
    let m =
        Gpt2LMHeadModel::from_state_dict(cfg, &load(fixture("tiny_gpt2", "model.safetensors")).f32s).expect("loads");
    let (_, ids, mask, labels) = llama();
    let v = m.config.vocab_size;
    let ids: Vec<u32> = ids.iter().map(|&i| i % v as u32).collect();
    let labels: Vec<i64> = labels.iter().map(|&y| if y == IGNORE_INDEX { y } else { y % v as i64 }).collect();
    let (b, t) = (3, ids.len() / 3);
    let mut ws = gpt2::Workspace::new(&m.config, b, t);
    let nolabels = Batch { input_ids: &ids, attention_mask: &mask, ..Default::default() };
    let logits = m.logits(&mut ws, &nolabels, false).expect("logits").to_vec();
    ws.lm.label_smoothing = EPS;
    let smoothed = m.forward(&mut ws, &Batch { labels: Some(&labels), ..nolabels }).expect("forward");
    let want = reference_loss(&logits, &labels, b, t, v);
    assert!(((smoothed as f64 - want) / want).abs() < 1e-5, "smoothed {smoothed} vs reference {want}");
}
