//! LlamaForCausalLM (Llama with tied embeddings, Qwen2 with q/k/v biases and a separate head) against
//! PyTorch/transformers on tiny random models (fixtures from scripts/reference/gen_tiny_decoders.py).

use finetune_engine::kernels::adamw::Hyper;
use finetune_models::decoder::Architecture;
use finetune_models::llama::{Batch, LlamaConfig, LlamaForCausalLM, Workspace};

mod common;
use common::{fixture, load, Loaded};

struct Case {
    cfg: LlamaConfig,
    model: LlamaForCausalLM,
    expected: Loaded,
    ids: Vec<u32>,
    mask: Vec<u32>,
    labels: Vec<i64>,
    ws: Workspace,
}

impl Case {
    fn batch(&self) -> (Vec<u32>, Vec<u32>, Vec<i64>) {
        (self.ids.clone(), self.mask.clone(), self.labels.clone())
    }
}

fn tiny(dir: &str) -> Case {
    let text = std::fs::read_to_string(fixture(dir, "config.json")).expect("config");
    let cfg = LlamaConfig::from_json(&text).expect("config parses");
    let weights = load(fixture(dir, "model.safetensors"));
    let model = LlamaForCausalLM::from_state_dict(cfg.clone(), &weights.f32s).expect("loads");
    let expected = load(fixture(dir, "expected.safetensors"));
    let u = |k: &str| expected.i64s[k].iter().map(|&v| v as u32).collect::<Vec<u32>>();
    let (ids, mask) = (u("input_ids"), u("attention_mask"));
    let labels = expected.i64s["labels"].clone();
    let (b, t) = (3, ids.len() / 3);
    let ws = Workspace::new(&cfg, b, t);
    Case { cfg, model, expected, ids, mask, labels, ws }
}

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>().sqrt();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>().sqrt();
    num / den.max(1e-30)
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn matches_pytorch(dir: &str) {
    let mut c = tiny(dir);
    let (ids, mask, labels) = c.batch();
    let batch = Batch {
        input_ids: &ids,
        attention_mask: &mask,
        labels: Some(&labels),
        loss_normalizer: None,
        position_ids: None,
    };
    let want = c.expected.f32s["logits"].data.clone();
    let logits = c.model.logits(&mut c.ws, &batch, false).expect("logits").to_vec();
    let err = max_abs(&logits, &want);
    assert!(err <= 1e-5, "{dir}: logits differ by {err}");

    // Last real token of each row: the matching rows of the full logits.
    let last = c.model.logits(&mut c.ws, &batch, true).expect("logits").to_vec();
    let (t, v) = (c.ws.seq, c.cfg.vocab_size);
    for b in 0..3 {
        let len = mask[b * t..(b + 1) * t].iter().filter(|&&m| m == 1).count();
        assert_eq!(&last[b * v..(b + 1) * v], &logits[(b * t + len - 1) * v..(b * t + len) * v]);
    }

    let want_loss = c.expected.f32s["loss"].data[0];
    let eval_loss = c.model.forward(&mut c.ws, &batch).expect("forward");
    assert!((eval_loss - want_loss).abs() <= 1e-5, "{dir}: loss {eval_loss} vs {want_loss}");
    c.model.store.zero_grad();
    let loss = c.model.forward_backward(&mut c.ws, &batch).expect("forward_backward");
    assert_eq!(loss, eval_loss);

    let mut worst = 0.0f64;
    let mut checked = 0;
    for info in c.model.store.param_infos() {
        let want = &c.expected.f32s[&format!("grad.{}", info.name)].data;
        let e = rel_err(c.model.store.grad(&info.name).expect("grad"), want);
        assert!(e <= 1e-4, "{dir}: gradient of {} off by {e} relative", info.name);
        worst = worst.max(e);
        checked += 1;
    }
    assert_eq!(checked, c.expected.f32s.keys().filter(|k| k.starts_with("grad.")).count());
    eprintln!(
        "{dir}: logits max abs diff {err}, loss diff {}, worst relative gradient diff {worst}",
        (loss - want_loss).abs()
    );
}

fn adamw_matches_pytorch(dir: &str) {
    let mut c = tiny(dir);
    let (ids, mask, labels) = c.batch();
    let batch = Batch {
        input_ids: &ids,
        attention_mask: &mask,
        labels: Some(&labels),
        loss_normalizer: None,
        position_ids: None,
    };
    let lrs = c.expected.f64s["lrs"].clone();
    let norms = c.expected.f64s["grad_norms"].clone();
    for (step, lr) in lrs.iter().enumerate() {
        c.model.store.zero_grad();
        c.model.forward_backward(&mut c.ws, &batch).expect("forward_backward");
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
        let got = c.model.store.param(&info.name).expect("param");
        let g0 = &c.expected.f32s[&format!("grad.{}", info.name)].data;
        let init = &initial[&info.name].data;
        let g_max = g0.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for i in 0..want.len() {
            // Adam divides by √v + 1e-8, so an entry whose gradient is near 1e-8, or is a near-total
            // cancellation (below 1e-5 of its tensor's largest entry: the key bias in the slowest rotary
            // dimensions, where it is almost a constant score shift that softmax ignores), moves by an amount
            // set by rounding-level gradient differences; such entries get the Adam step bound instead.
            let tiny = g0[i] != 0.0 && (g0[i].abs() < 1e-7 || g0[i].abs() < 1e-5 * g_max);
            if tiny {
                tiny_grad_entries += 1;
                assert!(((got[i] - init[i]).abs() as f64) <= lr_sum * 1.01, "{}[{i}] moved too far", info.name);
            } else {
                let err = (got[i] - want[i]).abs();
                worst = worst.max(err);
                assert!(err <= 1e-5, "{dir}: {}[{i}] after 3 steps differs by {err}", info.name);
            }
        }
    }
    assert!(tiny_grad_entries < 20, "{tiny_grad_entries} entries with near-zero gradients");
    eprintln!("{dir}: worst parameter difference after 3 AdamW steps {worst}; {tiny_grad_entries} near-zero entries");
}

#[test]
fn llama_logits_loss_and_gradients_match_pytorch() {
    matches_pytorch("tiny_llama");
}

#[test]
fn qwen2_logits_loss_and_gradients_match_pytorch() {
    matches_pytorch("tiny_qwen2");
}

#[test]
fn llama_three_adamw_steps_match_pytorch() {
    adamw_matches_pytorch("tiny_llama");
}

#[test]
fn qwen2_three_adamw_steps_match_pytorch() {
    adamw_matches_pytorch("tiny_qwen2");
}

#[test]
fn llama3_rope_scaling_and_attention_bias_match_pytorch() {
    matches_pytorch("tiny_llama3");
    adamw_matches_pytorch("tiny_llama3");
    let c = tiny("tiny_llama3");
    assert!(c.model.store.param("model.layers.0.self_attn.o_proj.bias").is_some());
    assert!(c.model.store.param("model.layers.0.self_attn.k_proj.bias").is_some());
}

#[test]
fn fixtures_cover_tied_untied_biases_and_grouped_query_attention() {
    let l = tiny("tiny_llama");
    assert!(l.cfg.tie_word_embeddings && l.model.store.param("lm_head.weight").is_none());
    assert!(l.model.store.param("model.layers.0.self_attn.q_proj.bias").is_none());
    assert!(l.cfg.kv_heads() < l.cfg.num_attention_heads);
    let q = tiny("tiny_qwen2");
    assert!(!q.cfg.tie_word_embeddings && q.model.store.param("lm_head.weight").is_some());
    assert!(q.model.store.param("model.layers.1.self_attn.v_proj.bias").is_some());
    assert!(q.model.store.param("model.layers.1.self_attn.o_proj.bias").is_none());
    assert_eq!(q.cfg.rope_theta(), 1e6);
}

#[test]
fn chunked_head_equals_single_chunk() {
    for dir in ["tiny_llama", "tiny_qwen2"] {
        let c = tiny(dir);
        let (ids, mask, labels) = c.batch();
        let batch = Batch {
            input_ids: &ids,
            attention_mask: &mask,
            labels: Some(&labels),
            loss_normalizer: None,
            position_ids: None,
        };
        let mut results = Vec::new();
        for chunk in [1, 5, 1000] {
            let mut model = tiny(dir).model;
            let mut ws = Workspace::with_head_chunk(&c.cfg, 3, ids.len() / 3, chunk);
            let loss = model.forward_backward(&mut ws, &batch).expect("forward_backward");
            results.push((loss, model.store.grads.clone()));
        }
        for (loss, grads) in &results[1..] {
            assert!((loss - results[0].0).abs() <= 1e-6, "{dir}: {loss} vs {}", results[0].0);
            let e = rel_err(grads, &results[0].1);
            assert!(e <= 1e-6, "{dir}: chunked gradients differ by {e}");
        }
    }
}

#[test]
fn frozen_parameters_get_no_gradient_and_do_not_change_the_others() {
    for dir in ["tiny_llama", "tiny_qwen2"] {
        let mut full = tiny(dir);
        let (ids, mask, labels) = full.batch();
        let batch = Batch {
            input_ids: &ids,
            attention_mask: &mask,
            labels: Some(&labels),
            loss_normalizer: None,
            position_ids: None,
        };
        full.model.forward_backward(&mut full.ws, &batch).expect("forward_backward");

        let mut c = tiny(dir);
        let frozen: Vec<String> = c
            .model
            .store
            .param_infos()
            .iter()
            .map(|i| i.name.clone())
            .filter(|n| {
                n.contains("embed_tokens")
                    || n == "lm_head.weight"
                    || n.contains("layers.0.self_attn.k_proj")
                    || n.contains("layers.1.mlp.")
                    || n.contains("layers.0.input_layernorm")
                    || n == "model.norm.weight"
            })
            .collect();
        assert!(frozen.len() >= 6);
        for n in &frozen {
            c.model.store.set_requires_grad(n, false).expect("known name");
        }
        assert!(c.model.store.set_requires_grad("no.such.weight", false).is_err());
        // Poison the frozen gradients: they must not be written at all.
        for n in &frozen {
            let i = c.model.store.param_infos().iter().find(|i| &i.name == n).expect("info").clone();
            c.model.store.grads[i.offset..i.offset + i.len()].fill(7.0);
        }
        c.model.forward_backward(&mut c.ws, &batch).expect("forward_backward");
        for info in c.model.store.param_infos() {
            let got = c.model.store.grad(&info.name).expect("grad");
            if frozen.contains(&info.name) {
                assert!(got.iter().all(|&v| v == 7.0), "{dir}: frozen {} got a gradient", info.name);
            } else {
                assert_eq!(
                    got,
                    full.model.store.grad(&info.name).expect("grad"),
                    "{dir}: {} changed by freezing",
                    info.name
                );
            }
        }
        // AdamW leaves frozen parameters alone (no decay either).
        c.model.store.zero_grad();
        let before = c.model.store.state_dict();
        c.model.forward_backward(&mut c.ws, &batch).expect("forward_backward");
        c.model.store.adamw_step(Hyper::default());
        for info in c.model.store.param_infos() {
            let same = c.model.store.param(&info.name).expect("param") == &before[&info.name].data[..];
            assert_eq!(same, frozen.contains(&info.name), "{dir}: {} updated = {}", info.name, !same);
        }
    }
}

#[test]
fn loss_normalizer_scales_loss_and_gradients() {
    let mut a = tiny("tiny_qwen2");
    let (ids, mask, labels) = a.batch();
    let mean = Batch {
        input_ids: &ids,
        attention_mask: &mask,
        labels: Some(&labels),
        loss_normalizer: None,
        position_ids: None,
    };
    let l1 = a.model.forward_backward(&mut a.ws, &mean).expect("forward_backward");
    // Kept targets after the shift: every label except the first of each row.
    let t = ids.len() / 3;
    let kept = (0..ids.len()).filter(|&i| i % t != 0 && labels[i] != -100).count() as f32;
    let mut b = tiny("tiny_qwen2");
    let summed = Batch { loss_normalizer: Some(40.0), ..mean };
    let l2 = b.model.forward_backward(&mut b.ws, &summed).expect("forward_backward");
    assert!((l2 - l1 * kept / 40.0).abs() <= 1e-6 * l1.abs(), "{l2} vs {}", l1 * kept / 40.0);
    let scaled: Vec<f32> = a.model.store.grads.iter().map(|g| g * kept / 40.0).collect();
    assert!(rel_err(&b.model.store.grads, &scaled) <= 1e-6);
}

#[test]
fn finite_differences() {
    for dir in ["tiny_llama", "tiny_qwen2"] {
        let mut c = tiny(dir);
        let (ids, mask, labels) = c.batch();
        let batch = Batch {
            input_ids: &ids,
            attention_mask: &mask,
            labels: Some(&labels),
            loss_normalizer: None,
            position_ids: None,
        };
        c.model.forward_backward(&mut c.ws, &batch).expect("forward_backward");
        let grads = c.model.store.grads_state_dict();
        let mut names = vec![
            "model.embed_tokens.weight",
            "model.layers.0.self_attn.q_proj.weight",
            "model.layers.0.self_attn.k_proj.weight",
            "model.layers.1.self_attn.v_proj.weight",
            "model.layers.0.mlp.gate_proj.weight",
            "model.layers.1.post_attention_layernorm.weight",
            "model.norm.weight",
        ];
        if dir == "tiny_qwen2" {
            names.extend(["model.layers.0.self_attn.k_proj.bias", "lm_head.weight"]);
        }
        let eps = 1e-2f32;
        for name in names {
            let g = &grads[name].data;
            let mut idx: Vec<usize> = (0..g.len()).collect();
            idx.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
            for &i in &idx[..2] {
                let orig = c.model.store.param(name).expect("param")[i];
                let mut eval_at = |v: f32| {
                    c.model.store.param_mut(name).expect("param")[i] = v;
                    c.model.forward(&mut c.ws, &batch).expect("forward") as f64
                };
                let up = eval_at(orig + eps);
                let down = eval_at(orig - eps);
                eval_at(orig);
                let fd = (up - down) / (2.0 * eps as f64);
                let an = g[i] as f64;
                assert!((fd - an).abs() <= 2e-2 * an.abs() + 2e-4, "{dir} {name}[{i}]: analytic {an} vs fd {fd}");
            }
        }
    }
}

#[test]
fn rejects_unsupported_configs_and_bad_batches() {
    let text = std::fs::read_to_string(fixture("tiny_llama", "config.json")).expect("config");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 8.0});
    let e = LlamaConfig::from_json(&v.to_string()).expect_err("yarn rope scaling is rejected");
    assert!(e.to_string().contains("yarn"), "{e}");
    v["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0});
    let e = LlamaConfig::from_json(&v.to_string()).expect_err("llama3 needs all its parameters");
    assert!(e.to_string().contains("low_freq_factor"), "{e}");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v["rope_parameters"]["partial_rotary_factor"] = serde_json::json!(0.5);
    assert!(LlamaConfig::from_json(&v.to_string()).is_err());
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v["model_type"] = serde_json::json!("mistral");
    v["sliding_window"] = serde_json::json!(4);
    let mistral = LlamaConfig::from_json(&v.to_string()).expect("mistral parses");
    assert_eq!(mistral.active_sliding_window(), Some(4));
    let m = LlamaForCausalLM::random(mistral.clone(), 1).expect("random init");
    let mut ws = Workspace::new(&mistral, 1, 5);
    let ids = [1u32, 2, 3, 4, 5];
    let b = Batch { input_ids: &ids, attention_mask: &[1; 5], labels: None, loss_normalizer: None, position_ids: None };
    let e = m.logits(&mut ws, &b, false).expect_err("longer than the sliding window");
    assert!(e.to_string().contains("sliding_window"), "{e}");
    let mut ws = Workspace::new(&mistral, 1, 4);
    let b = Batch {
        input_ids: &ids[..4],
        attention_mask: &[1; 4],
        labels: Some(&[1, 2, 3, 4]),
        loss_normalizer: None,
        position_ids: None,
    };
    let loss = m.forward(&mut ws, &b).expect("within the window");
    // A freshly initialised model predicts nearly uniformly: loss close to ln(vocab).
    assert!((loss - (128f32).ln()).abs() < 0.5, "{loss}");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v["num_key_value_heads"] = serde_json::json!(3);
    assert!(LlamaConfig::from_json(&v.to_string()).is_err());
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v["hidden_act"] = serde_json::json!("gelu");
    assert!(LlamaConfig::from_json(&v.to_string()).is_err());
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v["rope_parameters"] = serde_json::Value::Null;
    v["rope_theta"] = serde_json::json!(500000.0);
    assert_eq!(LlamaConfig::from_json(&v.to_string()).expect("4.x layout").rope_theta(), 500000.0);

    let mut c = tiny("tiny_llama");
    let (mut ids, mask, mut labels) = c.batch();
    ids[0] = 1000;
    let batch = Batch {
        input_ids: &ids,
        attention_mask: &mask,
        labels: Some(&labels),
        loss_normalizer: None,
        position_ids: None,
    };
    assert!(c.model.forward(&mut c.ws, &batch).is_err());
    ids[0] = 3;
    labels[1] = 128;
    let batch = Batch {
        input_ids: &ids,
        attention_mask: &mask,
        labels: Some(&labels),
        loss_normalizer: None,
        position_ids: None,
    };
    assert!(c.model.forward(&mut c.ws, &batch).is_err());
    let batch = Batch {
        input_ids: &ids[..4],
        attention_mask: &mask[..4],
        labels: None,
        loss_normalizer: None,
        position_ids: None,
    };
    assert!(c.model.logits(&mut c.ws, &batch, false).is_err());
    let batch =
        Batch { input_ids: &ids, attention_mask: &mask, labels: None, loss_normalizer: None, position_ids: None };
    assert!(c.model.forward(&mut c.ws, &batch).is_err(), "the loss needs labels");
}

/// Rough speed check on a SmolLM2-135M-shaped model (4 of its 30 layers): `cargo test --release -p
/// finetune-models --test llama -- --ignored --nocapture`.
#[test]
#[ignore]
fn smollm2_shaped_step_timing() {
    let cfg = LlamaConfig::from_json(
        r#"{"model_type": "llama", "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
            "num_hidden_layers": 4, "num_attention_heads": 9, "num_key_value_heads": 3,
            "rope_theta": 100000.0, "tie_word_embeddings": true, "rms_norm_eps": 1e-5}"#,
    )
    .expect("config");
    let mut m = LlamaForCausalLM::random(cfg.clone(), 0).expect("init");
    let (b, t) = (4, 256);
    let mut ws = Workspace::new(&cfg, b, t);
    let ids: Vec<u32> = (0..b * t).map(|i| (i * 7919 % 49152) as u32).collect();
    let labels: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    let mask = vec![1u32; b * t];
    let batch = Batch {
        input_ids: &ids,
        attention_mask: &mask,
        labels: Some(&labels),
        loss_normalizer: None,
        position_ids: None,
    };
    for step in 0..3 {
        let start = std::time::Instant::now();
        m.store.zero_grad();
        let loss = m.forward_backward(&mut ws, &batch).expect("step");
        m.store.clip_grad_norm(1.0);
        m.store.adamw_step(Hyper::default());
        let s = start.elapsed().as_secs_f64();
        eprintln!("step {step}: loss {loss:.4}, {s:.3} s, {:.0} tokens/s", (b * t) as f64 / s);
    }
}
