//! BertForSequenceClassification (BERT and RoBERTa variants) against PyTorch/transformers on tiny random
//! models (fixtures from scripts/reference/gen_tiny_encoders.py).

use finetune_engine::kernels::adamw::Hyper;
use finetune_models::bert::{Batch, BertConfig, BertForSequenceClassification, Labels, Mode, Workspace};

mod common;
use common::{fixture, load, Loaded};

struct Case {
    model: BertForSequenceClassification,
    expected: Loaded,
    ids: Vec<u32>,
    mask: Vec<u32>,
    tt: Option<Vec<u32>>,
    labels: Vec<i64>,
    ws: Workspace,
}

fn tiny(dir: &str, config_edit: impl FnOnce(&mut BertConfig)) -> Case {
    let text = std::fs::read_to_string(fixture(dir, "config.json")).expect("config");
    let mut cfg = BertConfig::from_json(&text).expect("config parses");
    config_edit(&mut cfg);
    let weights = load(fixture(dir, "model.safetensors"));
    let (model, fresh) = BertForSequenceClassification::from_state_dict(cfg.clone(), &weights.f32s, 0).expect("loads");
    assert!(fresh.is_empty(), "every parameter comes from the checkpoint: {fresh:?}");
    let expected = load(fixture(dir, "expected.safetensors"));
    let u = |k: &str| expected.i64s.get(k).map(|v| v.iter().map(|&v| v as u32).collect::<Vec<u32>>());
    let (ids, mask, tt) = (u("input_ids").expect("ids"), u("attention_mask").expect("mask"), u("token_type_ids"));
    let labels = expected.i64s["labels"].clone();
    let b = labels.len();
    let ws = Workspace::new(&cfg, b, ids.len() / b);
    Case { model, expected, ids, mask, tt, labels, ws }
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

fn logits_loss_and_gradients_match_pytorch(dir: &str) {
    let mut c = tiny(dir, |_| {});
    let batch = Batch {
        input_ids: &c.ids,
        attention_mask: &c.mask,
        token_type_ids: c.tt.as_deref(),
        labels: Some(Labels::Classes(&c.labels)),
    };
    let loss = c.model.forward(&mut c.ws, &batch, Mode::Eval).expect("forward").expect("loss");
    let want = &c.expected.f32s["logits"].data;
    let err = max_abs(&c.ws.logits, want);
    assert!(err <= 1e-5, "logits differ by {err}: {:?} vs {want:?}", c.ws.logits);
    let want_loss = c.expected.f32s["loss"].data[0];
    assert!((loss - want_loss).abs() <= 1e-5, "loss {loss} vs {want_loss}");

    c.model.store.zero_grad();
    c.model.backward(&mut c.ws, &batch).expect("backward");
    let mut checked = 0;
    let mut worst_grad = 0.0f64;
    for info in c.model.store.param_infos() {
        let want = &c.expected.f32s[&format!("grad.{}", info.name)].data;
        let got = c.model.store.grad(&info.name).expect("grad");
        if info.name.ends_with("attention.self.key.bias") || info.name.ends_with("attention.k_lin.bias") {
            // Mathematically zero (a key bias shifts every score of a row equally, and softmax ignores that):
            // both sides hold rounding noise, so compare absolutely.
            let e = max_abs(got, want);
            assert!(e <= 1e-6, "gradient of {} is {got:?}, expected about 0", info.name);
        } else {
            let e = rel_err(got, want);
            worst_grad = worst_grad.max(e);
            assert!(e <= 1e-4, "gradient of {} off by {e} relative", info.name);
        }
        checked += 1;
    }
    assert_eq!(checked, c.expected.f32s.keys().filter(|k| k.starts_with("grad.")).count());
    assert_eq!(c.model.store.grads_state_dict().len(), checked);
    eprintln!("{dir}: logits max abs difference {err}, worst relative gradient difference {worst_grad}");
}

fn three_adamw_steps_with_warmup_and_clipping_match_pytorch(dir: &str) {
    let mut c = tiny(dir, |_| {});
    let batch = Batch {
        input_ids: &c.ids,
        attention_mask: &c.mask,
        token_type_ids: c.tt.as_deref(),
        labels: Some(Labels::Classes(&c.labels)),
    };
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
    assert_eq!(c.model.store.steps(), 3);
    let initial = load(fixture(dir, "model.safetensors")).f32s;
    let lr_sum: f64 = lrs.iter().sum();
    let (mut worst, mut tiny_grad_entries) = (0.0f32, 0usize);
    for info in c.model.store.param_infos() {
        let want = &c.expected.f32s[&format!("step3.{}", info.name)].data;
        if info.name.ends_with("attention.self.key.bias") || info.name.ends_with("attention.k_lin.bias") {
            // Its true gradient is zero, so Adam normalises rounding noise into steps of up to ±lr on both
            // sides; only the bound on an Adam step can be checked.
            let moved = max_abs(c.model.store.param(&info.name).expect("param"), &initial[&info.name].data);
            assert!(moved as f64 <= lr_sum * 1.01, "{} moved {moved}", info.name);
            continue;
        }
        // Adam divides by √v + 1e-8, so an entry whose gradient is itself near 1e-8 moves by an amount set by
        // rounding-level gradient differences; those entries get the Adam step bound, all others 1e-5.
        let got = c.model.store.param(&info.name).expect("param");
        let g0 = &c.expected.f32s[&format!("grad.{}", info.name)].data;
        let init = &initial[&info.name].data;
        for i in 0..want.len() {
            let err = (got[i] - want[i]).abs();
            if g0[i] != 0.0 && g0[i].abs() < 1e-7 {
                tiny_grad_entries += 1;
                assert!(((got[i] - init[i]).abs() as f64) <= lr_sum * 1.01, "{}[{i}] moved too far", info.name);
            } else {
                worst = worst.max(err);
                assert!(err <= 1e-5, "{}[{i}] after 3 steps differs by {err}", info.name);
            }
        }
    }
    assert!(tiny_grad_entries < 20, "{tiny_grad_entries} entries with near-zero gradients");
    eprintln!(
        "{dir}: worst parameter difference after 3 steps {worst}; {tiny_grad_entries} near-zero-gradient entries"
    );
}

fn finite_differences_with_dropout(dir: &str, names: &[&str]) {
    let mut c = tiny(dir, |cfg| {
        cfg.hidden_dropout_prob = 0.1;
        cfg.attention_probs_dropout_prob = 0.2;
    });
    let (ids, mask, tt, labels) = (c.ids.clone(), c.mask.clone(), c.tt.clone(), c.labels.clone());
    let batch = Batch {
        input_ids: &ids,
        attention_mask: &mask,
        token_type_ids: tt.as_deref(),
        labels: Some(Labels::Classes(&labels)),
    };
    let mode = Mode::Train { seed: 77 };
    let base = c.model.forward(&mut c.ws, &batch, mode).expect("forward").expect("loss");
    let eval = c.model.forward(&mut c.ws, &batch, Mode::Eval).expect("forward").expect("loss");
    assert_ne!(base, eval, "dropout changes the loss");
    c.model.forward(&mut c.ws, &batch, mode).expect("forward");
    c.model.store.zero_grad();
    c.model.backward(&mut c.ws, &batch).expect("backward");
    let grads = c.model.store.grads_state_dict();
    let eps = 1e-2f32;
    for &name in names {
        let g = &grads[name].data;
        // The two largest-magnitude entries of each tensor: finite differences in f32 resolve those well.
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
fn rejects_bad_batches() {
    let mut c = tiny("tiny_bert", |_| {});
    let mut ids = c.ids.clone();
    ids[0] = 1000;
    let batch = Batch { input_ids: &ids, attention_mask: &c.mask, token_type_ids: None, labels: None };
    assert!(c.model.forward(&mut c.ws, &batch, Mode::Eval).is_err());
    let bad_labels = [0i64, 3, 1];
    let batch = Batch {
        input_ids: &c.ids,
        attention_mask: &c.mask,
        token_type_ids: None,
        labels: Some(Labels::Classes(&bad_labels)),
    };
    assert!(c.model.forward(&mut c.ws, &batch, Mode::Eval).is_err());
    let short = &c.ids[..4];
    let batch = Batch { input_ids: short, attention_mask: &c.mask[..4], token_type_ids: None, labels: None };
    assert!(c.model.forward(&mut c.ws, &batch, Mode::Eval).is_err());
}

#[test]
fn bert_logits_loss_and_gradients_match_pytorch() {
    logits_loss_and_gradients_match_pytorch("tiny_bert");
}

#[test]
fn bert_three_adamw_steps_match_pytorch() {
    three_adamw_steps_with_warmup_and_clipping_match_pytorch("tiny_bert");
}

#[test]
fn bert_finite_differences_with_dropout() {
    finite_differences_with_dropout(
        "tiny_bert",
        &[
            "bert.embeddings.word_embeddings.weight",
            "bert.embeddings.LayerNorm.weight",
            "bert.encoder.layer.0.attention.self.query.weight",
            "bert.encoder.layer.0.attention.self.value.bias",
            "bert.encoder.layer.1.intermediate.dense.weight",
            "bert.encoder.layer.1.output.LayerNorm.bias",
            "bert.pooler.dense.weight",
            "classifier.bias",
        ],
    );
}

#[test]
fn roberta_logits_loss_and_gradients_match_pytorch() {
    logits_loss_and_gradients_match_pytorch("tiny_roberta");
}

#[test]
fn roberta_three_adamw_steps_match_pytorch() {
    three_adamw_steps_with_warmup_and_clipping_match_pytorch("tiny_roberta");
}

#[test]
fn roberta_finite_differences_with_dropout() {
    finite_differences_with_dropout(
        "tiny_roberta",
        &[
            "roberta.embeddings.position_embeddings.weight",
            "roberta.encoder.layer.0.attention.output.dense.weight",
            "roberta.encoder.layer.1.output.dense.weight",
            "classifier.dense.weight",
            "classifier.out_proj.weight",
        ],
    );
}

#[test]
fn roberta_positions_past_the_table_are_rejected() {
    // Positions start at pad + 1, so a table of 9 cannot hold a 9-token sequence (positions 2..=10).
    let c = tiny("tiny_roberta", |_| {});
    let mut cfg = c.model.config.clone();
    cfg.max_position_embeddings = 9;
    let model = BertForSequenceClassification::random(cfg.clone(), 1).expect("model");
    let mut ws = Workspace::new(&cfg, c.labels.len(), c.ids.len() / c.labels.len());
    let batch = Batch { input_ids: &c.ids, attention_mask: &c.mask, token_type_ids: None, labels: None };
    assert!(model.forward(&mut ws, &batch, Mode::Eval).is_err());
    cfg.max_position_embeddings = 11;
    let model = BertForSequenceClassification::random(cfg.clone(), 1).expect("model");
    assert!(model.forward(&mut ws, &batch, Mode::Eval).is_ok());
}

#[test]
fn distilbert_logits_loss_and_gradients_match_pytorch() {
    logits_loss_and_gradients_match_pytorch("tiny_distilbert");
}

#[test]
fn distilbert_three_adamw_steps_match_pytorch() {
    three_adamw_steps_with_warmup_and_clipping_match_pytorch("tiny_distilbert");
}

#[test]
fn distilbert_finite_differences_with_dropout() {
    finite_differences_with_dropout(
        "tiny_distilbert",
        &[
            "distilbert.embeddings.word_embeddings.weight",
            "distilbert.transformer.layer.0.attention.q_lin.weight",
            "distilbert.transformer.layer.1.sa_layer_norm.weight",
            "distilbert.transformer.layer.1.ffn.lin2.bias",
            "pre_classifier.weight",
            "classifier.weight",
        ],
    );
}

#[test]
fn distilbert_layer_norms_are_not_decayed() {
    let c = tiny("tiny_distilbert", |_| {});
    for info in c.model.store.param_infos() {
        let norm = info.name.contains("layer_norm") || info.name.contains("LayerNorm");
        assert_eq!(info.decay, !(norm || info.name.ends_with("bias")), "{}", info.name);
    }
}

#[test]
fn bert_multi_label_and_regression_losses_match_pytorch() {
    let mut c = tiny("tiny_bert", |_| {});
    for problem in ["multi_label_classification", "regression"] {
        let target = c.expected.f32s[&format!("{problem}.labels")].data.clone();
        let labels = if problem == "regression" { Labels::Regression(&target) } else { Labels::MultiLabel(&target) };
        let batch =
            Batch { input_ids: &c.ids, attention_mask: &c.mask, token_type_ids: c.tt.as_deref(), labels: Some(labels) };
        let loss = c.model.forward(&mut c.ws, &batch, Mode::Eval).expect("forward").expect("loss");
        let want = c.expected.f32s[&format!("{problem}.loss")].data[0];
        assert!((loss - want).abs() <= 1e-5, "{problem}: loss {loss} vs {want}");
        c.model.store.zero_grad();
        c.model.backward(&mut c.ws, &batch).expect("backward");
        for name in ["classifier.weight", "bert.encoder.layer.0.intermediate.dense.weight"] {
            let want = &c.expected.f32s[&format!("{problem}.grad.{name}")].data;
            let e = rel_err(c.model.store.grad(name).expect("grad"), want);
            assert!(e <= 1e-4, "{problem}: gradient of {name} off by {e} relative");
        }
    }
}

#[test]
fn workspace_from_another_config_is_rejected() {
    let mut c = tiny("tiny_bert", |_| {});
    let mut other = c.model.config.clone();
    other.intermediate_size = 16;
    let mut ws = Workspace::new(&other, c.labels.len(), c.ids.len() / c.labels.len());
    let batch = Batch { input_ids: &c.ids, attention_mask: &c.mask, token_type_ids: None, labels: None };
    assert!(c.model.forward(&mut ws, &batch, Mode::Eval).is_err());
    assert!(c.model.forward(&mut c.ws, &batch, Mode::Eval).is_ok());
}

/// An inference workspace (two activation sets used in turn, no backward buffers) gives bit-identical logits and
/// loss to a training workspace in eval mode, for every architecture and both tasks, with enough layers (5) that
/// the sets are reused; it refuses training forwards and backward.
#[test]
fn inference_workspace_matches_training_workspace() {
    use finetune_models::bert::Task;
    for dir in ["tiny_bert", "tiny_roberta", "tiny_distilbert"] {
        for task in [Task::SequenceClassification, Task::TokenClassification] {
            let c = tiny(dir, |_| {});
            let mut cfg = c.model.config.clone();
            cfg.task = task;
            cfg.num_hidden_layers = 5;
            let mut model = BertForSequenceClassification::random(cfg.clone(), 7).expect("random model");
            let (b, t) = (c.labels.len(), c.ids.len() / c.labels.len());
            let token_labels: Vec<i64> = (0..b * t).map(|i| (i % cfg.labels()) as i64).collect();
            let labels = match task {
                Task::TokenClassification => Labels::TokenClasses(&token_labels),
                _ => Labels::Classes(&c.labels),
            };
            let tt = if dir == "tiny_distilbert" { None } else { c.tt.as_deref() };
            let batch = Batch { input_ids: &c.ids, attention_mask: &c.mask, token_type_ids: tt, labels: Some(labels) };
            let mut train_ws = Workspace::new(&cfg, b, t);
            let mut infer_ws = Workspace::for_inference(&cfg, b, t);
            let want = model.forward(&mut train_ws, &batch, Mode::Eval).expect("forward");
            let got = model.forward(&mut infer_ws, &batch, Mode::Eval).expect("inference forward");
            assert_eq!(got, want, "{dir} {task:?}: loss");
            assert_eq!(infer_ws.logits, train_ws.logits, "{dir} {task:?}: logits");
            assert!(model.forward(&mut infer_ws, &batch, Mode::Train { seed: 1 }).is_err(), "{dir}: train forward");
            assert!(model.backward(&mut infer_ws, &batch).is_err(), "{dir}: backward");
        }
    }
}

/// `class_weight` and `label_smoothing_factor` on the head: loss and gradients equal
/// `torch.nn.CrossEntropyLoss(weight=..., label_smoothing=...)` (scripts/reference/gen_weighted_ce.py).
#[test]
fn weighted_and_smoothed_cross_entropy_match_pytorch() {
    let mut c = tiny("tiny_bert", |_| {});
    let refs = load(fixture("tiny_bert", "weighted_ce.safetensors"));
    let weight = refs.f32s["weight"].data.clone();
    for (tag, w, ls) in [("w", Some(weight.clone()), 0.0), ("ls", None, 0.1), ("wls", Some(weight.clone()), 0.2)] {
        c.model.loss = finetune_models::bert::LossOptions { class_weight: w, label_smoothing: ls };
        let batch = Batch {
            input_ids: &c.ids,
            attention_mask: &c.mask,
            token_type_ids: c.tt.as_deref(),
            labels: Some(Labels::Classes(&c.labels)),
        };
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
