//! Token classification (`BertForTokenClassification`) against PyTorch/transformers on a tiny random model
//! (fixture from scripts/reference/gen_tiny_encoders.py: a padded batch with −100 on [CLS], [SEP] and padding).

use finetune_engine::kernels::adamw::Hyper;
use finetune_models::bert::{Batch, BertConfig, BertForSequenceClassification, Labels, Mode, Task, Workspace};

mod common;
use common::{fixture, load, Loaded};

const DIR: &str = "tiny_bert_token";

struct Case {
    model: BertForSequenceClassification,
    expected: Loaded,
    ids: Vec<u32>,
    mask: Vec<u32>,
    tt: Vec<u32>,
    labels: Vec<i64>,
    ws: Workspace,
}

fn token_config(dir: &str) -> BertConfig {
    let text = std::fs::read_to_string(fixture(dir, "config.json")).expect("config");
    let mut cfg = BertConfig::from_json(&text).expect("config parses");
    cfg.task = Task::TokenClassification;
    cfg
}

fn tiny(config_edit: impl FnOnce(&mut BertConfig)) -> Case {
    let mut cfg = token_config(DIR);
    config_edit(&mut cfg);
    let weights = load(fixture(DIR, "model.safetensors"));
    let (model, fresh) = BertForSequenceClassification::from_state_dict(cfg.clone(), &weights.f32s, 0).expect("loads");
    assert!(fresh.is_empty(), "every parameter comes from the checkpoint: {fresh:?}");
    let expected = load(fixture(DIR, "expected.safetensors"));
    let u = |k: &str| expected.i64s[k].iter().map(|&v| v as u32).collect::<Vec<u32>>();
    let (ids, mask, tt) = (u("input_ids"), u("attention_mask"), u("token_type_ids"));
    let labels = expected.i64s["labels"].clone();
    assert_eq!(labels.len(), ids.len(), "one label per token");
    let b = 3;
    let ws = Workspace::new(&cfg, b, ids.len() / b);
    Case { model, expected, ids, mask, tt, labels, ws }
}

fn batch<'a>(ids: &'a [u32], mask: &'a [u32], tt: &'a [u32], labels: Option<Labels<'a>>) -> Batch<'a> {
    Batch { input_ids: ids, attention_mask: mask, token_type_ids: Some(tt), labels }
}

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>().sqrt();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>().sqrt();
    num / den.max(1e-30)
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn logits_loss_and_gradients_match_pytorch() {
    let mut c = tiny(|_| {});
    let (ids, mask, tt, labels) = (c.ids.clone(), c.mask.clone(), c.tt.clone(), c.labels.clone());
    let batch = batch(&ids, &mask, &tt, Some(Labels::TokenClasses(&labels)));
    assert!(labels.contains(&-100) && labels.iter().any(|&y| y >= 0));
    let loss = c.model.forward(&mut c.ws, &batch, Mode::Eval).expect("forward").expect("loss");
    let want = &c.expected.f32s["logits"];
    assert_eq!(want.shape, vec![3, ids.len() / 3, 5]);
    let err = max_abs(&c.ws.logits, &want.data);
    assert!(err <= 1e-5, "logits differ by {err}");
    let want_loss = c.expected.f32s["loss"].data[0];
    assert!((loss - want_loss).abs() <= 1e-5, "loss {loss} vs {want_loss}");

    c.model.store.zero_grad();
    c.model.backward(&mut c.ws, &batch).expect("backward");
    let (mut checked, mut worst) = (0, 0.0f64);
    for info in c.model.store.param_infos() {
        let want = &c.expected.f32s[&format!("grad.{}", info.name)].data;
        let got = c.model.store.grad(&info.name).expect("grad");
        if info.name.ends_with("attention.self.key.bias") {
            // Mathematically zero (softmax ignores a per-row shift): rounding noise on both sides.
            assert!(max_abs(got, want) <= 1e-6, "gradient of {} is {got:?}, expected about 0", info.name);
        } else {
            let e = rel_err(got, want);
            worst = worst.max(e);
            assert!(e <= 1e-4, "gradient of {} off by {e} relative", info.name);
        }
        checked += 1;
    }
    // Every parameter of BertForTokenClassification, and no pooler.
    assert_eq!(checked, c.expected.f32s.keys().filter(|k| k.starts_with("grad.")).count());
    assert!(c.model.store.param_infos().iter().all(|i| !i.name.contains("pooler")));
    eprintln!("{DIR}: logits max abs difference {err}, loss {loss} vs {want_loss}, worst relative gradient {worst}");
}

#[test]
fn three_adamw_steps_with_warmup_and_clipping_match_pytorch() {
    let mut c = tiny(|_| {});
    let (ids, mask, tt, labels) = (c.ids.clone(), c.mask.clone(), c.tt.clone(), c.labels.clone());
    let batch = batch(&ids, &mask, &tt, Some(Labels::TokenClasses(&labels)));
    let lrs = c.expected.f64s["lrs"].clone();
    let norms = c.expected.f64s["grad_norms"].clone();
    for (step, lr) in lrs.iter().enumerate() {
        c.model.store.zero_grad();
        c.model.forward(&mut c.ws, &batch, Mode::Eval).expect("forward");
        c.model.backward(&mut c.ws, &batch).expect("backward");
        let norm = c.model.store.clip_grad_norm(1.0) as f64;
        assert!((norm - norms[step]).abs() <= 1e-4 * norms[step], "step {step}: grad norm {norm} vs {}", norms[step]);
        c.model.store.adamw_step(Hyper { lr: *lr, weight_decay: 0.01, ..Hyper::default() });
    }
    let initial = load(fixture(DIR, "model.safetensors")).f32s;
    let lr_sum: f64 = lrs.iter().sum();
    let (mut worst, mut tiny_grad_entries) = (0.0f32, 0usize);
    for info in c.model.store.param_infos() {
        let want = &c.expected.f32s[&format!("step3.{}", info.name)].data;
        let got = c.model.store.param(&info.name).expect("param");
        let init = &initial[&info.name].data;
        if info.name.ends_with("attention.self.key.bias") {
            // Zero true gradient: Adam normalises rounding noise, so only the step bound can be checked.
            assert!(max_abs(got, init) as f64 <= lr_sum * 1.01, "{} moved too far", info.name);
            continue;
        }
        // Entries whose gradient is itself near Adam's ε move by rounding-level amounts: step bound only.
        let g0 = &c.expected.f32s[&format!("grad.{}", info.name)].data;
        for i in 0..want.len() {
            if g0[i] != 0.0 && g0[i].abs() < 1e-7 {
                tiny_grad_entries += 1;
                assert!(((got[i] - init[i]).abs() as f64) <= lr_sum * 1.01, "{}[{i}] moved too far", info.name);
            } else {
                let err = (got[i] - want[i]).abs();
                worst = worst.max(err);
                assert!(err <= 1e-5, "{}[{i}] after 3 steps differs by {err}", info.name);
            }
        }
    }
    assert!(tiny_grad_entries < 20, "{tiny_grad_entries} entries with near-zero gradients");
    eprintln!(
        "{DIR}: worst parameter difference after 3 steps {worst}; {tiny_grad_entries} near-zero-gradient entries"
    );
}

#[test]
fn finite_differences_with_dropout() {
    let mut c = tiny(|cfg| {
        cfg.hidden_dropout_prob = 0.1;
        cfg.attention_probs_dropout_prob = 0.2;
        cfg.classifier_dropout = Some(0.3);
    });
    let (ids, mask, tt, labels) = (c.ids.clone(), c.mask.clone(), c.tt.clone(), c.labels.clone());
    let batch = batch(&ids, &mask, &tt, Some(Labels::TokenClasses(&labels)));
    let mode = Mode::Train { seed: 77 };
    let base = c.model.forward(&mut c.ws, &batch, mode).expect("forward").expect("loss");
    let eval = c.model.forward(&mut c.ws, &batch, Mode::Eval).expect("forward").expect("loss");
    assert_ne!(base, eval, "dropout changes the loss");
    c.model.forward(&mut c.ws, &batch, mode).expect("forward");
    c.model.store.zero_grad();
    c.model.backward(&mut c.ws, &batch).expect("backward");
    let grads = c.model.store.grads_state_dict();
    let eps = 1e-2f32;
    for name in [
        "bert.embeddings.word_embeddings.weight",
        "bert.embeddings.token_type_embeddings.weight",
        "bert.encoder.layer.0.attention.self.query.weight",
        "bert.encoder.layer.1.attention.output.dense.weight",
        "bert.encoder.layer.1.intermediate.dense.bias",
        "bert.encoder.layer.1.output.LayerNorm.weight",
        "classifier.weight",
        "classifier.bias",
    ] {
        let g = &grads[name].data;
        // The two largest-magnitude entries: finite differences in f32 resolve those well.
        let mut idx: Vec<usize> = (0..g.len()).collect();
        idx.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
        for &i in &idx[..2] {
            let orig = c.model.store.param(name).expect("param")[i];
            let mut eval_at = |v: f32| {
                c.model.store.param_mut(name).expect("param")[i] = v;
                c.model.forward(&mut c.ws, &batch, mode).expect("forward").expect("loss") as f64
            };
            let up = eval_at(orig + eps);
            let down = eval_at(orig - eps);
            eval_at(orig);
            let fd = (up - down) / (2.0 * eps as f64);
            let an = g[i] as f64;
            assert!((fd - an).abs() <= 2e-2 * an.abs() + 2e-4, "{name}[{i}]: analytic {an} vs finite difference {fd}");
        }
    }
}

#[test]
fn sequence_classification_checkpoint_loads_without_its_pooler() {
    // tiny_bert is a BertForSequenceClassification checkpoint: its pooler is ignored, its classifier reused.
    let cfg = token_config("tiny_bert");
    let weights = load(fixture("tiny_bert", "model.safetensors")).f32s;
    assert!(weights.contains_key("bert.pooler.dense.weight"));
    let (model, fresh) = BertForSequenceClassification::from_state_dict(cfg.clone(), &weights, 0).expect("loads");
    assert!(fresh.is_empty(), "{fresh:?}");
    assert!(model.store.param("bert.pooler.dense.weight").is_none());
    assert_eq!(model.store.param("classifier.weight").expect("classifier"), &weights["classifier.weight"].data[..]);
    assert_eq!(model.store.param_infos().len() + 2, weights.len());
}

#[test]
fn rejects_mismatched_labels_and_workspaces() {
    let mut c = tiny(|_| {});
    let (ids, mask, tt, labels) = (c.ids.clone(), c.mask.clone(), c.tt.clone(), c.labels.clone());
    let n = ids.len();
    let per_sequence = [0i64, 1, 2];
    let mut bad_class = labels.clone();
    bad_class[1] = 5;
    let short = &labels[..n - 1];
    for y in [Labels::Classes(&per_sequence), Labels::TokenClasses(&bad_class), Labels::TokenClasses(short)] {
        assert!(c.model.forward(&mut c.ws, &batch(&ids, &mask, &tt, Some(y)), Mode::Eval).is_err());
    }
    // A sequence-classification model takes no token labels, nor a token-classification workspace.
    let mut seq_cfg = c.model.config.clone();
    seq_cfg.task = Task::SequenceClassification;
    let seq_model = BertForSequenceClassification::random(seq_cfg.clone(), 1).expect("model");
    let unlabelled = batch(&ids, &mask, &tt, None);
    let labelled = batch(&ids, &mask, &tt, Some(Labels::TokenClasses(&labels)));
    assert!(seq_model.forward(&mut c.ws, &unlabelled, Mode::Eval).is_err());
    let mut seq_ws = Workspace::new(&seq_cfg, 3, n / 3);
    assert!(seq_model.forward(&mut seq_ws, &labelled, Mode::Eval).is_err());
    assert!(c.model.forward(&mut seq_ws, &unlabelled, Mode::Eval).is_err());
    // Without labels: logits for every token, no loss.
    assert!(c.model.forward(&mut c.ws, &unlabelled, Mode::Eval).expect("forward").is_none());
    assert_eq!(c.ws.logits.len(), n * 5);
    assert!(max_abs(&c.ws.logits, &c.expected.f32s["logits"].data) <= 1e-5);
}

/// Token classification with `class_weight` and `label_smoothing_factor`: equal to
/// `torch.nn.CrossEntropyLoss(weight=..., label_smoothing=...)` over the tokens that carry labels.
#[test]
fn weighted_and_smoothed_cross_entropy_match_pytorch() {
    let mut c = tiny(|_| {});
    let refs = load(fixture(DIR, "weighted_ce.safetensors"));
    let weight = refs.f32s["weight"].data.clone();
    let (ids, mask, tt, labels) = (c.ids.clone(), c.mask.clone(), c.tt.clone(), c.labels.clone());
    let batch = batch(&ids, &mask, &tt, Some(Labels::TokenClasses(&labels)));
    for (tag, w, ls) in [("w", Some(weight.clone()), 0.0), ("ls", None, 0.1), ("wls", Some(weight.clone()), 0.2)] {
        c.model.loss = finetune_models::bert::LossOptions { class_weight: w, label_smoothing: ls };
        let loss = c.model.forward(&mut c.ws, &batch, Mode::Eval).expect("forward").expect("loss");
        let want = refs.f32s[&format!("{tag}.loss")].data[0];
        assert!((loss - want).abs() <= 1e-5, "{tag}: loss {loss} vs {want}");
        c.model.store.zero_grad();
        c.model.backward(&mut c.ws, &batch).expect("backward");
        for p in ["classifier.weight", "bert.encoder.layer.0.intermediate.dense.weight"] {
            let e = rel_err(c.model.store.grad(p).expect("grad"), &refs.f32s[&format!("{tag}.grad.{p}")].data);
            assert!(e <= 1e-4, "{tag}: gradient of {p} differs by {e}");
        }
    }
}
