//! Packed rows (`position_ids` restarting at 0, as transformers' `DataCollatorWithFlattening`): one row holding
//! three sequences gives the loss, logits and parameter gradients of the three sequences run one by one (Llama,
//! Qwen2, GPT-2 with and without LoRA).

use finetune_models::decoder::Architecture;
use finetune_models::gpt2::{self, Gpt2Config, Gpt2LMHeadModel};
use finetune_models::llama::{Batch, LlamaConfig, LlamaForCausalLM, ParamInfo, Workspace};
use finetune_models::lora::{LoraConfig, TargetModules};

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

/// The calls the packing check needs, for each architecture.
trait Packable {
    type Ws;
    fn workspace(&self, batch: usize, seq: usize) -> Self::Ws;
    fn vocab(&self) -> usize;
    fn logits_of(&self, ws: &mut Self::Ws, b: &Batch<'_>) -> Vec<f32>;
    fn loss_and_grads(&mut self, ws: &mut Self::Ws, b: &Batch<'_>) -> f32;
    fn loss(&self, ws: &mut Self::Ws, b: &Batch<'_>) -> f32;
    fn zero(&mut self);
    fn all_grads(&self) -> Vec<f32>;
    fn infos(&self) -> Vec<ParamInfo>;
}

macro_rules! packable {
    ($model:ty, $ws:ty) => {
        impl Packable for $model {
            type Ws = $ws;
            fn workspace(&self, batch: usize, seq: usize) -> $ws {
                <$ws>::new(&self.config, batch, seq)
            }
            fn vocab(&self) -> usize {
                self.config.vocab_size
            }
            fn logits_of(&self, ws: &mut $ws, b: &Batch<'_>) -> Vec<f32> {
                self.logits(ws, b, false).expect("logits").to_vec()
            }
            fn loss_and_grads(&mut self, ws: &mut $ws, b: &Batch<'_>) -> f32 {
                self.forward_backward(ws, b).expect("forward_backward")
            }
            fn loss(&self, ws: &mut $ws, b: &Batch<'_>) -> f32 {
                self.forward(ws, b).expect("forward")
            }
            fn zero(&mut self) {
                self.store.zero_grad()
            }
            fn all_grads(&self) -> Vec<f32> {
                self.store.grads.clone()
            }
            fn infos(&self) -> Vec<ParamInfo> {
                self.store.param_infos().to_vec()
            }
        }
    };
}
packable!(LlamaForCausalLM, Workspace);
packable!(Gpt2LMHeadModel, gpt2::Workspace);

fn packed_equals_separate(dir: &str) {
    packed_matches(&mut model(dir), dir);
}

fn packed_matches<M: Packable>(m: &mut M, dir: &str) {
    let seqs: Vec<Vec<u32>> = [5usize, 3, 6]
        .iter()
        .enumerate()
        .map(|(k, &n)| (0..n).map(|i| 2 + ((i * 37 + k * 11 + 5) % 120) as u32).collect())
        .collect();
    let total: usize = seqs.iter().map(Vec::len).sum();
    // Every sequence predicts its own next tokens only: the collator masks each sequence's first label.
    let kept: usize = seqs.iter().map(|s| s.len() - 1).sum();
    let norm = Some(kept as f32);

    let v = m.vocab();
    let mut sep_logits = Vec::new();
    let mut sep_loss = 0.0f32;
    m.zero();
    for s in &seqs {
        let mut ws = m.workspace(1, s.len());
        let mask = vec![1u32; s.len()];
        let labels: Vec<i64> = s.iter().map(|&i| i as i64).collect();
        let b = Batch {
            input_ids: s,
            attention_mask: &mask,
            labels: Some(&labels),
            loss_normalizer: norm,
            ..Default::default()
        };
        sep_logits.extend_from_slice(&m.logits_of(&mut ws, &b));
        sep_loss += m.loss_and_grads(&mut ws, &b);
    }
    let sep_grads = m.all_grads();

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
    let mut ws = m.workspace(1, total);
    let logits = m.logits_of(&mut ws, &b);
    assert_eq!(logits.len(), total * v);
    let err = max_abs(&logits, &sep_logits);
    assert!(err <= 1e-5, "{dir}: packed logits differ by {err}");
    m.zero();
    let loss = m.loss_and_grads(&mut ws, &b);
    assert!((loss - sep_loss).abs() <= 1e-5, "{dir}: packed loss {loss} vs {sep_loss}");
    assert_eq!(m.loss(&mut ws, &b), loss);
    let grads = m.all_grads();
    for info in m.infos() {
        let r = info.offset..info.offset + info.len();
        let e = max_abs(&grads[r.clone()], &sep_grads[r]);
        assert!(e <= 1e-5, "{dir}: gradient of {} differs by {e}", info.name);
    }

    // Without position ids the same row is one long sequence: the logits after the first sequence change.
    let plain = Batch { position_ids: None, ..b };
    let unpacked = m.logits_of(&mut ws, &plain);
    assert!(max_abs(&unpacked[5 * v..], &sep_logits[5 * v..]) > 1e-3, "{dir}: packing must change the logits");
    assert_eq!(&unpacked[..5 * v], &logits[..5 * v]);
}

fn gpt2_model() -> Gpt2LMHeadModel {
    let text = std::fs::read_to_string(fixture("tiny_gpt2", "config.json")).expect("config");
    let cfg = Gpt2Config::from_json(&text).expect("config parses");
    Gpt2LMHeadModel::from_state_dict(cfg, &load(fixture("tiny_gpt2", "model.safetensors")).f32s).expect("loads")
}

#[test]
fn packed_gpt2_equals_separate_sequences() {
    packed_matches(&mut gpt2_model(), "tiny_gpt2");
}

#[test]
fn packed_gpt2_with_lora_equals_separate_sequences() {
    let mut m = gpt2_model();
    let cfg = LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        lora_dropout: 0.0,
        target_modules: TargetModules::Str("all-linear".into()),
        ..LoraConfig::default()
    };
    m.store.add_lora(&cfg, 3).expect("lora");
    // Non-zero B so that the adapters change the output and get every gradient.
    for info in m.store.param_infos().to_vec() {
        if info.name.contains("lora_B") {
            let p = m.store.param_mut(&info.name).expect("lora_B");
            for (i, x) in p.iter_mut().enumerate() {
                *x = ((i * 7 % 13) as f32 - 6.0) * 0.01;
            }
        }
    }
    packed_matches(&mut m, "tiny_gpt2 + LoRA");
}

/// Right padding past `n_positions` (batches are padded to a round length) leaves the real tokens' logits, loss
/// and gradients as without the padding; a real token past `n_positions` is an error.
#[test]
fn gpt2_padding_past_n_positions_changes_nothing() {
    let mut m = gpt2_model();
    let np = m.config.n_positions;
    let ids: Vec<u32> = (0..10).map(|i| 3 + i * 5).collect();
    let labels: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    let mask = vec![1u32; 10];
    let short = Batch { input_ids: &ids, attention_mask: &mask, labels: Some(&labels), ..Default::default() };
    let mut ws = gpt2::Workspace::new(&m.config, 1, 10);
    let want = m.logits(&mut ws, &short, false).expect("logits").to_vec();
    m.store.zero_grad();
    let want_loss = m.forward_backward(&mut ws, &short).expect("loss");
    let want_grads = m.store.grads.clone();

    let t = np + 16;
    let mut pids = ids.clone();
    pids.resize(t, 0);
    let mut plabels = labels.clone();
    plabels.resize(t, -100);
    let mut pmask = mask.clone();
    pmask.resize(t, 0);
    let padded = Batch { input_ids: &pids, attention_mask: &pmask, labels: Some(&plabels), ..Default::default() };
    let mut ws = gpt2::Workspace::new(&m.config, 1, t);
    let got = m.logits(&mut ws, &padded, false).expect("padded logits").to_vec();
    let v = m.config.vocab_size;
    assert!(max_abs(&got[..10 * v], &want) <= 1e-5);
    m.store.zero_grad();
    let loss = m.forward_backward(&mut ws, &padded).expect("padded loss");
    assert!((loss - want_loss).abs() <= 1e-6, "{loss} vs {want_loss}");
    assert!(max_abs(&m.store.grads, &want_grads) <= 1e-6);

    let mut long_mask = pmask.clone();
    long_mask[np] = 1;
    let long = Batch { attention_mask: &long_mask, ..padded };
    let e = m.logits(&mut ws, &long, false).expect_err("a real token past n_positions");
    assert!(e.to_string().contains("n_positions"), "{e}");
    let far: Vec<u32> = (0..t as u32).collect();
    let packed = Batch { position_ids: Some(&far), attention_mask: &long_mask, ..padded };
    assert!(m.logits(&mut ws, &packed, false).is_err());
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
