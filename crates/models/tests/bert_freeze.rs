//! Parameter freezing for the BERT-family encoders on the tiny fixtures: frozen parameters get no gradient
//! (their buffers are not written), the others get exactly the gradients of an unfrozen run, AdamW leaves
//! frozen parameters bitwise unchanged and the gradient-norm clipping ignores them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use finetune_engine::kernels::adamw::Hyper;
use finetune_engine::kernels::clip_grad;
use finetune_engine::{StateDict, Tensor};
use finetune_models::bert::{Batch, BertConfig, BertForSequenceClassification, Labels, Mode, Task, Workspace};
use safetensors::{Dtype, SafeTensors};

const SENTINEL: f32 = 7.0;

fn fixture(dir: &str, file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(dir).join(file)
}

/// The f32 and i64 tensors of a safetensors file.
fn load(path: PathBuf) -> (StateDict, BTreeMap<String, Vec<i64>>) {
    let bytes = std::fs::read(&path).expect("fixture readable");
    let st = SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let (mut f32s, mut i64s) = (StateDict::new(), BTreeMap::new());
    for (name, view) in st.tensors() {
        let d = view.data();
        match view.dtype() {
            Dtype::F32 => {
                let v = d.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                f32s.insert(name, Tensor::new(view.shape().to_vec(), v));
            }
            Dtype::I64 => {
                let v = d.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect();
                i64s.insert(name, v);
            }
            _ => {}
        }
    }
    (f32s, i64s)
}

/// A fixture model with its batch; token classification for `tiny_bert_token`, masked LM for `*_mlm`.
struct Case {
    cfg: BertConfig,
    weights: StateDict,
    ids: Vec<u32>,
    mask: Vec<u32>,
    tt: Option<Vec<u32>>,
    labels: Vec<i64>,
    batch: usize,
}

fn case(dir: &str) -> Case {
    let text = std::fs::read_to_string(fixture(dir, "config.json")).expect("config");
    let mut cfg = BertConfig::from_json(&text).expect("config parses");
    let token = dir.ends_with("_token") || dir.ends_with("_mlm");
    if dir.ends_with("_mlm") {
        cfg.task = Task::MaskedLM;
    } else if token {
        cfg.task = Task::TokenClassification;
    }
    let (weights, _) = load(fixture(dir, "model.safetensors"));
    let (_, i64s) = load(fixture(dir, "expected.safetensors"));
    let u = |k: &str| i64s.get(k).map(|v| v.iter().map(|&v| v as u32).collect::<Vec<u32>>());
    let labels = i64s["labels"].clone();
    // The token fixture is a batch of 3 sequences with one label per token.
    let batch = if token { 3 } else { labels.len() };
    Case {
        cfg,
        weights,
        ids: u("input_ids").expect("ids"),
        mask: u("attention_mask").expect("mask"),
        tt: u("token_type_ids"),
        labels,
        batch,
    }
}

impl Case {
    fn model(&self, frozen: &dyn Fn(&str) -> bool) -> BertForSequenceClassification {
        let (mut m, fresh) =
            BertForSequenceClassification::from_state_dict(self.cfg.clone(), &self.weights, 0).expect("loads");
        assert!(fresh.is_empty(), "{fresh:?}");
        let names: Vec<String> = m.store.param_infos().iter().map(|i| i.name.clone()).collect();
        for n in names.iter().filter(|n| frozen(n)) {
            m.store.set_requires_grad(n, false).expect("known name");
        }
        m
    }

    fn workspace(&self) -> Workspace {
        Workspace::new(&self.cfg, self.batch, self.ids.len() / self.batch)
    }

    /// Forward (with dropout) and backward into the model's gradient buffers as they are.
    fn forward_backward(&self, m: &mut BertForSequenceClassification, ws: &mut Workspace, step: u64) {
        let labels = match self.cfg.task {
            Task::TokenClassification | Task::MaskedLM => Labels::TokenClasses(&self.labels),
            Task::SequenceClassification => Labels::Classes(&self.labels),
        };
        let batch = Batch {
            input_ids: &self.ids,
            attention_mask: &self.mask,
            token_type_ids: self.tt.as_deref(),
            labels: Some(labels),
        };
        m.forward(ws, &batch, Mode::Train { seed: 11 + step }).expect("forward").expect("loss");
        m.backward(ws, &batch).expect("backward");
    }
}

/// Zeroes the gradients, then fills the frozen parameters' gradients with the sentinel.
fn seed_grads(m: &mut BertForSequenceClassification) {
    m.store.zero_grad();
    let frozen: Vec<(usize, usize)> =
        m.store.param_infos().iter().filter(|i| !i.requires_grad).map(|i| (i.offset, i.len())).collect();
    for (off, len) in frozen {
        m.store.grads[off..off + len].fill(SENTINEL);
    }
}

fn base(m: &BertForSequenceClassification) -> String {
    let first = &m.store.param_infos()[0].name;
    first.split('.').next().expect("prefixed name").to_string()
}

fn is_layer(name: &str, i: usize) -> bool {
    name.contains(&format!(".layer.{i}."))
}

type Scenario = (&'static str, fn(&str) -> bool);

/// Which parameters each scenario freezes (names of all three architectures).
const SCENARIOS: &[Scenario] = &[
    ("embeddings and layer 0", |n| n.contains(".embeddings.") || is_layer(n, 0)),
    ("encoder (head only)", |n| n.starts_with("bert.") || n.starts_with("roberta.") || n.starts_with("distilbert.")),
    ("scattered parts", |n| {
        // One of the fused q/k/v weights, one LayerNorm weight, a head bias and the word embeddings.
        (is_layer(n, 1) && (n.ends_with("key.weight") || n.ends_with("k_lin.weight")))
            || (is_layer(n, 0) && (n.ends_with("output.LayerNorm.weight") || n.ends_with("sa_layer_norm.weight")))
            || n.ends_with("pooler.dense.bias")
            || n == "classifier.dense.bias"
            || n == "pre_classifier.bias"
            || n.ends_with("word_embeddings.weight")
    }),
    ("layer 1 attention and all biases", |n| (is_layer(n, 1) && n.contains("attention")) || n.ends_with(".bias")),
    ("everything", |_| true),
];

const DIRS: &[&str] = &[
    "tiny_bert",
    "tiny_roberta",
    "tiny_distilbert",
    "tiny_bert_token",
    "tiny_bert_mlm",
    "tiny_roberta_mlm",
    "tiny_distilbert_mlm",
];

#[test]
fn frozen_gradients_are_not_written_and_the_others_match_an_unfrozen_run() {
    for dir in DIRS {
        let c = case(dir);
        let mut full = c.model(&|_| false);
        let mut ws = c.workspace();
        full.store.zero_grad();
        c.forward_backward(&mut full, &mut ws, 0);
        for (what, frozen) in SCENARIOS {
            let mut m = c.model(frozen);
            let n_frozen = m.store.param_infos().iter().filter(|i| !i.requires_grad).count();
            assert!(n_frozen > 0, "{dir} {what}: freezes something");
            seed_grads(&mut m);
            let mut ws = c.workspace();
            c.forward_backward(&mut m, &mut ws, 0);
            for info in m.store.param_infos() {
                let got = m.store.grad(&info.name).expect("grad");
                if info.requires_grad {
                    let want = full.store.grad(&info.name).expect("grad");
                    let same = got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{dir} {what}: gradient of {} differs from the unfrozen run", info.name);
                } else {
                    assert!(got.iter().all(|&g| g == SENTINEL), "{dir} {what}: {} was written", info.name);
                }
            }
        }
    }
}

#[test]
fn adamw_leaves_frozen_parameters_unchanged_and_updates_the_others_as_without_freezing() {
    let hp = Hyper { lr: 1e-2, weight_decay: 0.01, ..Hyper::default() };
    for dir in DIRS {
        let c = case(dir);
        for (what, frozen) in SCENARIOS {
            let mut m = c.model(frozen);
            // Reference: nothing frozen, but the frozen parameters are put back after every step.
            let mut r = c.model(&|_| false);
            let initial = m.store.state_dict();
            let (mut ws, mut wr) = (c.workspace(), c.workspace());
            for step in 0..3 {
                m.store.zero_grad();
                c.forward_backward(&mut m, &mut ws, step);
                m.store.adamw_step(hp);

                r.store.zero_grad();
                c.forward_backward(&mut r, &mut wr, step);
                r.store.adamw_step(hp);
                for (name, t) in &initial {
                    if frozen(name) {
                        r.store.param_mut(name).expect("param").copy_from_slice(&t.data);
                    }
                }
            }
            assert_eq!(m.store.steps(), 3);
            for info in m.store.param_infos() {
                let got = m.store.param(&info.name).expect("param");
                if !info.requires_grad {
                    let same = got.iter().zip(&initial[&info.name].data).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{dir} {what}: frozen {} changed", info.name);
                } else {
                    let want = r.store.param(&info.name).expect("param");
                    let same = got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{dir} {what}: {} differs from the reference run", info.name);
                    let moved = got.iter().zip(&initial[&info.name].data).any(|(a, b)| a != b);
                    assert!(moved, "{dir} {what}: trainable {} did not move", info.name);
                }
            }
        }
    }
}

#[test]
fn clip_grad_norm_covers_only_trainable_gradients() {
    for dir in DIRS {
        let c = case(dir);
        let mut full = c.model(&|_| false);
        let mut ws = c.workspace();
        full.store.zero_grad();
        c.forward_backward(&mut full, &mut ws, 0);
        let all: Vec<&[f32]> =
            full.store.param_infos().iter().map(|i| full.store.grad(&i.name).expect("grad")).collect();
        let full_norm = clip_grad::global_norm(&all) as f32;
        for (what, frozen) in SCENARIOS {
            let mut m = c.model(frozen);
            seed_grads(&mut m);
            c.forward_backward(&mut m, &mut ws, 0);
            let trainable: Vec<&[f32]> = full
                .store
                .param_infos()
                .iter()
                .filter(|i| !frozen(&i.name))
                .map(|i| full.store.grad(&i.name).expect("grad"))
                .collect();
            let want = clip_grad::global_norm(&trainable) as f32;
            let max_norm = want / 4.0;
            let norm = m.store.clip_grad_norm(max_norm);
            assert_eq!(norm.to_bits(), want.to_bits(), "{dir} {what}: norm {norm} vs {want}");
            if trainable.is_empty() {
                assert_eq!(norm, 0.0);
            } else {
                assert!(norm < full_norm, "{dir} {what}: {norm} should leave out frozen gradients ({full_norm})");
            }
            let coef = (max_norm / (want + 1e-6)).min(1.0);
            for info in m.store.param_infos() {
                let got = m.store.grad(&info.name).expect("grad");
                if info.requires_grad {
                    let want: Vec<f32> = full.store.grad(&info.name).expect("grad").iter().map(|g| g * coef).collect();
                    assert_eq!(got, &want[..], "{dir} {what}: {} not scaled by {coef}", info.name);
                } else {
                    assert!(got.iter().all(|&g| g == SENTINEL), "{dir} {what}: frozen {} was scaled", info.name);
                }
            }
        }
    }
}

#[test]
fn requires_grad_api() {
    let c = case("tiny_bert");
    let mut m = c.model(&|_| false);
    assert_eq!(base(&m), "bert");
    assert_eq!(m.store.requires_grad("bert.embeddings.word_embeddings.weight"), Some(true));
    assert_eq!(m.store.requires_grad("bert.nope"), None);
    assert!(m.store.set_requires_grad("bert.nope", false).is_err());
    // word, position, token type, LayerNorm weight and bias.
    assert_eq!(m.store.freeze_prefix("bert.embeddings.").expect("matches"), 5);
    assert_eq!(m.store.requires_grad("bert.embeddings.LayerNorm.bias"), Some(false));
    assert_eq!(m.store.requires_grad("bert.encoder.layer.0.output.dense.weight"), Some(true));
    assert!(m.store.freeze_prefix("bert.embedings.").is_err(), "a misspelt prefix is an error");
    // 16 parameters per layer: fused q/k/v as 6 names, attention output, 2 LayerNorms, 2 FFN denses.
    assert_eq!(m.store.freeze_prefix("bert.encoder.layer.1.").expect("matches"), 16);
    m.store.set_requires_grad("bert.encoder.layer.1.attention.self.key.weight", true).expect("known");
    assert_eq!(m.store.requires_grad("bert.encoder.layer.1.attention.self.key.weight"), Some(true));
    let frozen = m.store.param_infos().iter().filter(|i| !i.requires_grad).count();
    assert_eq!(frozen, 5 + 15);

    // freeze_prefix freezes exactly what the equivalent name filter does, gradients included.
    let mut p = c.model(&|_| false);
    p.store.freeze_prefix("bert.embeddings.").expect("matches");
    let f = c.model(&|n| n.starts_with("bert.embeddings."));
    let flags =
        |m: &BertForSequenceClassification| m.store.param_infos().iter().map(|i| i.requires_grad).collect::<Vec<_>>();
    assert_eq!(flags(&p), flags(&f));
}
