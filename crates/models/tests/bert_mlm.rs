//! Masked language modelling (`BertForMaskedLM`, `RobertaForMaskedLM`, `DistilBertForMaskedLM`) against
//! PyTorch/transformers on tiny random models (fixtures from scripts/reference/gen_tiny_mlm.py: a padded batch
//! with six masked positions, the decoder tied to the word embeddings).

use finetune_engine::kernels::adamw::Hyper;
use finetune_models::bert::{Batch, BertConfig, BertForSequenceClassification, Labels, Mode, Task, Workspace};

mod common;
use common::{fixture, load, max_abs, rel_err, Loaded};

const FIXTURES: [&str; 3] = ["tiny_bert_mlm", "tiny_roberta_mlm", "tiny_distilbert_mlm"];

struct Case {
    model: BertForSequenceClassification,
    expected: Loaded,
    ids: Vec<u32>,
    mask: Vec<u32>,
    tt: Option<Vec<u32>>,
    labels: Vec<i64>,
}

fn case(dir: &str) -> Case {
    let text = std::fs::read_to_string(fixture(dir, "config.json")).expect("config");
    let mut cfg = BertConfig::from_json(&text).expect("config parses");
    cfg.task = Task::MaskedLM;
    let weights = load(fixture(dir, "model.safetensors"));
    let (model, fresh) = BertForSequenceClassification::from_state_dict(cfg, &weights.f32s, 0).expect("loads");
    assert!(fresh.is_empty(), "{dir}: every parameter comes from the checkpoint: {fresh:?}");
    assert_eq!(model.store.param_infos().len(), weights.f32s.len(), "{dir}: the tied decoder weight is not stored");
    let expected = load(fixture(dir, "expected.safetensors"));
    let u = |k: &str| expected.i64s.get(k).map(|v| v.iter().map(|&x| x as u32).collect::<Vec<u32>>());
    let (ids, mask, tt) = (u("input_ids").expect("ids"), u("attention_mask").expect("mask"), u("token_type_ids"));
    let labels = expected.i64s["labels"].clone();
    Case { model, expected, ids, mask, tt, labels }
}

#[test]
fn logits_loss_and_gradients_match_pytorch() {
    for dir in FIXTURES {
        let mut c = case(dir);
        let (b, v) = (3, c.model.config.vocab_size);
        let t = c.ids.len() / b;
        let mut ws = Workspace::new(&c.model.config, b, t);
        // Without labels: logits of every token, [batch, seq, vocab].
        let unlabelled =
            Batch { input_ids: &c.ids, attention_mask: &c.mask, token_type_ids: c.tt.as_deref(), labels: None };
        assert!(c.model.forward(&mut ws, &unlabelled, Mode::Eval).expect("forward").is_none());
        let want = &c.expected.f32s["logits"];
        assert_eq!(want.shape, vec![b, t, v]);
        assert_eq!(ws.logits_rows(), b * t);
        let err = max_abs(&ws.logits[..b * t * v], &want.data);
        assert!(err <= 1e-4, "{dir}: logits differ by {err}");

        // With labels: only the masked rows, in order, and the mean cross-entropy over them.
        let labels = Labels::TokenClasses(&c.labels);
        let labelled = Batch { labels: Some(labels), ..unlabelled };
        let loss = c.model.forward(&mut ws, &labelled, Mode::Eval).expect("forward").expect("loss");
        let masked: Vec<usize> = (0..c.labels.len()).filter(|&i| c.labels[i] != -100).collect();
        assert_eq!(ws.logits_rows(), masked.len());
        for (r, &i) in masked.iter().enumerate() {
            let e = max_abs(&ws.logits[r * v..(r + 1) * v], &want.data[i * v..(i + 1) * v]);
            assert!(e <= 1e-4, "{dir}: masked row {i} differs by {e}");
        }
        let want_loss = c.expected.f32s["loss"].data[0];
        assert!((loss - want_loss).abs() <= 1e-5, "{dir}: loss {loss} vs {want_loss}");

        c.model.store.zero_grad();
        c.model.backward(&mut ws, &labelled).expect("backward");
        let mut worst = 0.0f64;
        for info in c.model.store.param_infos() {
            let want = &c.expected.f32s[&format!("grad.{}", info.name)].data;
            let got = c.model.store.grad(&info.name).expect("grad");
            if info.name.contains("key.bias") || info.name.contains("k_lin.bias") {
                // Mathematically zero (softmax ignores a per-row shift): rounding noise on both sides.
                assert!(max_abs(got, want) <= 1e-6, "{dir}: gradient of {} should be about 0", info.name);
                continue;
            }
            let e = rel_err(got, want);
            worst = worst.max(e);
            assert!(e <= 1e-4, "{dir}: gradient of {} off by {e} relative", info.name);
        }
        eprintln!(
            "{dir}: logits max abs difference {err}, loss {loss} vs {want_loss}, worst relative gradient {worst}"
        );
    }
}

#[test]
fn three_adamw_steps_match_pytorch() {
    for dir in FIXTURES {
        let mut c = case(dir);
        let b = 3;
        let mut ws = Workspace::new(&c.model.config, b, c.ids.len() / b);
        let labels = Some(Labels::TokenClasses(&c.labels));
        let batch = Batch { input_ids: &c.ids, attention_mask: &c.mask, token_type_ids: c.tt.as_deref(), labels };
        for _ in 0..3 {
            c.model.store.zero_grad();
            c.model.forward(&mut ws, &batch, Mode::Eval).expect("forward");
            c.model.backward(&mut ws, &batch).expect("backward");
            c.model.store.clip_grad_norm(1.0);
            c.model.store.adamw_step(Hyper { lr: 1e-3, weight_decay: 0.01, ..Hyper::default() });
        }
        let initial = load(fixture(dir, "model.safetensors")).f32s;
        let mut worst = 0.0f32;
        for info in c.model.store.param_infos() {
            let want = &c.expected.f32s[&format!("step3.{}", info.name)].data;
            let got = c.model.store.param(&info.name).expect("param");
            if info.name.contains("key.bias") || info.name.contains("k_lin.bias") {
                // Zero true gradient: Adam normalises rounding noise; only the step bound holds.
                assert!(max_abs(got, &initial[&info.name].data) <= 3e-3 * 1.01, "{dir}: {} moved too far", info.name);
                continue;
            }
            let e = max_abs(got, want);
            worst = worst.max(e);
            assert!(e <= 2e-5, "{dir}: {} after 3 steps differs by {e}", info.name);
        }
        eprintln!("{dir}: worst parameter difference after 3 AdamW steps {worst}");
    }
}

#[test]
fn a_batch_without_masked_tokens_has_zero_loss_and_no_gradient() {
    let mut c = case("tiny_bert_mlm");
    let b = 3;
    let mut ws = Workspace::new(&c.model.config, b, c.ids.len() / b);
    let none = vec![-100i64; c.labels.len()];
    let batch = Batch {
        input_ids: &c.ids,
        attention_mask: &c.mask,
        token_type_ids: c.tt.as_deref(),
        labels: Some(Labels::TokenClasses(&none)),
    };
    assert_eq!(c.model.forward(&mut ws, &batch, Mode::Eval).expect("forward"), Some(0.0));
    c.model.store.zero_grad();
    c.model.backward(&mut ws, &batch).expect("backward");
    assert!(c.model.store.grads.iter().all(|&g| g == 0.0));
}

#[test]
fn labels_must_be_vocabulary_ids() {
    let c = case("tiny_bert_mlm");
    let b = 3;
    let mut ws = Workspace::new(&c.model.config, b, c.ids.len() / b);
    let mut bad = c.labels.clone();
    bad[1] = c.model.config.vocab_size as i64;
    let batch = Batch {
        input_ids: &c.ids,
        attention_mask: &c.mask,
        token_type_ids: c.tt.as_deref(),
        labels: Some(Labels::TokenClasses(&bad)),
    };
    let e = c.model.forward(&mut ws, &batch, Mode::Eval).expect_err("label out of range");
    assert!(e.to_string().contains("99"), "{e}");
}

#[test]
fn a_base_checkpoint_gets_a_fresh_head() {
    // A sequence-classification checkpoint has no LM head: transform and LayerNorm are initialised as
    // transformers does (normal 0.02; weight 1, bias 0), the decoder bias 0, the decoder weight is the embeddings.
    let text = std::fs::read_to_string(fixture("tiny_bert", "config.json")).expect("config");
    let mut cfg = BertConfig::from_json(&text).expect("config");
    cfg.task = Task::MaskedLM;
    let weights = load(fixture("tiny_bert", "model.safetensors")).f32s;
    let (m, mut fresh) = BertForSequenceClassification::from_state_dict(cfg, &weights, 7).expect("loads");
    fresh.sort();
    assert_eq!(
        fresh,
        [
            "cls.predictions.bias",
            "cls.predictions.transform.LayerNorm.bias",
            "cls.predictions.transform.LayerNorm.weight",
            "cls.predictions.transform.dense.bias",
            "cls.predictions.transform.dense.weight"
        ]
    );
    assert!(m.store.param("cls.predictions.transform.LayerNorm.weight").expect("ln").iter().all(|&w| w == 1.0));
    assert!(m.store.param("cls.predictions.bias").expect("bias").iter().all(|&w| w == 0.0));
    let dense = m.store.param("cls.predictions.transform.dense.weight").expect("dense");
    let std = (dense.iter().map(|&w| (w as f64).powi(2)).sum::<f64>() / dense.len() as f64).sqrt();
    assert!((0.015..0.025).contains(&std), "init std {std}");
    assert!(m.store.param("bert.pooler.dense.weight").is_none(), "no pooler");
}
