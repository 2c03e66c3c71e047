//! LoRA on LlamaForCausalLM against PEFT 0.21.2 (fixtures from scripts/reference/gen_tiny_lora.py): the tiny
//! Llama (GQA, tied embeddings) and Qwen2 (q/k/v biases, separate head) with adapters on all seven linears,
//! and an rsLoRA case on q_proj, v_proj and up_proj. The adapters are read from PEFT's own saved files.

use std::path::Path;

use finetune_engine::kernels::adamw::Hyper;
use finetune_models::checkpoint::load_state_dict;
use finetune_models::decoder::Architecture;
use finetune_models::gpt2::{self, Gpt2Config, Gpt2LMHeadModel};
use finetune_models::llama::{Batch, LlamaConfig, LlamaForCausalLM, Workspace, LORA_TARGETS};
use finetune_models::lora::{LoraConfig, TargetModules};

mod common;
use common::{fixture, load, Loaded};

struct Case {
    model: LlamaForCausalLM,
    expected: Loaded,
    ids: Vec<u32>,
    mask: Vec<u32>,
    labels: Vec<i64>,
    ws: Workspace,
}

fn base(dir: &str) -> (LlamaConfig, LlamaForCausalLM) {
    let text = std::fs::read_to_string(fixture(dir, "config.json")).expect("config");
    let cfg = LlamaConfig::from_json(&text).expect("config parses");
    let weights = load(fixture(dir, "model.safetensors"));
    let model = LlamaForCausalLM::from_state_dict(cfg.clone(), &weights.f32s).expect("loads");
    (cfg, model)
}

fn lora_dir(name: &str) -> std::path::PathBuf {
    fixture(name, "")
}

fn case(name: &str, base_dir: &str) -> Case {
    let (cfg, mut model) = base(base_dir);
    model.store.load_adapter(lora_dir(name)).expect("PEFT adapter loads");
    let expected = load(fixture(name, "expected.safetensors"));
    let u = |k: &str| expected.i64s[k].iter().map(|&v| v as u32).collect::<Vec<u32>>();
    let (ids, mask) = (u("input_ids"), u("attention_mask"));
    let labels = expected.i64s["labels"].clone();
    let ws = Workspace::new(&cfg, 3, ids.len() / 3);
    Case { model, expected, ids, mask, labels, ws }
}

const CASES: [(&str, &str); 3] =
    [("tiny_lora_llama", "tiny_llama"), ("tiny_lora_qwen2", "tiny_qwen2"), ("tiny_lora_llama_rslora", "tiny_llama")];

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

fn lora_names(m: &LlamaForCausalLM) -> Vec<String> {
    m.store.param_infos().iter().filter(|i| i.name.contains(".lora_")).map(|i| i.name.clone()).collect()
}

#[test]
fn logits_loss_and_adapter_gradients_match_peft() {
    for (name, base_dir) in CASES {
        let mut c = case(name, base_dir);
        let batch = Batch {
            input_ids: &c.ids,
            attention_mask: &c.mask,
            labels: Some(&c.labels),
            loss_normalizer: None,
            position_ids: None,
        };
        let logits = c.model.logits(&mut c.ws, &batch, false).expect("logits").to_vec();
        let err = max_abs(&logits, &c.expected.f32s["logits"].data);
        assert!(err <= 1e-5, "{name}: logits differ by {err}");
        let want_loss = c.expected.f32s["loss"].data[0];
        let loss = c.model.forward_backward(&mut c.ws, &batch).expect("forward_backward");
        assert!((loss - want_loss).abs() <= 1e-5, "{name}: loss {loss} vs {want_loss}");
        let names = lora_names(&c.model);
        let mut worst = 0.0f64;
        for n in &names {
            let want = &c.expected.f32s[&format!("grad.{n}")].data;
            let e = rel_err(c.model.store.grad(n).expect("grad"), want);
            assert!(e <= 1e-4, "{name}: gradient of {n} off by {e} relative");
            worst = worst.max(e);
        }
        assert_eq!(names.len(), c.expected.f32s.keys().filter(|k| k.starts_with("grad.")).count());
        // Frozen base: no gradient at all.
        for info in c.model.store.param_infos().iter().filter(|i| !i.name.contains(".lora_")) {
            assert!(!info.requires_grad, "{name}: {} is trainable", info.name);
            assert!(c.model.store.grad(&info.name).expect("grad").iter().all(|&g| g == 0.0), "{name}: {}", info.name);
        }
        eprintln!("{name}: logits max abs diff {err}, worst relative adapter gradient diff {worst}");
    }
}

#[test]
fn three_adamw_steps_match_peft_and_leave_the_base_unchanged() {
    for (name, base_dir) in CASES {
        let mut c = case(name, base_dir);
        let batch = Batch {
            input_ids: &c.ids,
            attention_mask: &c.mask,
            labels: Some(&c.labels),
            loss_normalizer: None,
            position_ids: None,
        };
        let lrs = c.expected.f64s["lrs"].clone();
        let norms = c.expected.f64s["grad_norms"].clone();
        for (step, lr) in lrs.iter().enumerate() {
            c.model.store.zero_grad();
            c.model.forward_backward(&mut c.ws, &batch).expect("forward_backward");
            let norm = c.model.store.clip_grad_norm(1.0) as f64;
            assert!(
                (norm - norms[step]).abs() <= 1e-4 * norms[step],
                "{name} step {step}: norm {norm} vs {}",
                norms[step]
            );
            c.model.store.adamw_step(Hyper { lr: *lr, weight_decay: 0.01, ..Hyper::default() });
        }
        let mut worst = 0.0f32;
        for n in lora_names(&c.model) {
            let e = max_abs(c.model.store.param(&n).expect("param"), &c.expected.f32s[&format!("step3.{n}")].data);
            assert!(e <= 1e-5, "{name}: {n} after 3 steps differs by {e}");
            worst = worst.max(e);
        }
        let initial = load(fixture(base_dir, "model.safetensors")).f32s;
        for (n, t) in &initial {
            if let Some(p) = c.model.store.param(n) {
                assert_eq!(p, &t.data[..], "{name}: frozen {n} changed");
            }
        }
        eprintln!("{name}: worst adapter difference after 3 AdamW steps {worst}");
    }
}

#[test]
fn merge_equals_peft_merge_and_unload() {
    for (name, base_dir) in CASES {
        let mut c = case(name, base_dir);
        c.model.store.merge_lora().expect("merge");
        assert!(lora_names(&c.model).is_empty() && c.model.store.lora_config().is_none());
        let mut worst = 0.0f32;
        for info in c.model.store.param_infos() {
            assert!(info.requires_grad, "{name}: {} should be trainable again after merging", info.name);
            let want = &c.expected.f32s[&format!("merged.{}", info.name)].data;
            let e = max_abs(c.model.store.param(&info.name).expect("param"), want);
            assert!(e <= 1e-6, "{name}: merged {} differs by {e}", info.name);
            worst = worst.max(e);
        }
        let batch = Batch {
            input_ids: &c.ids,
            attention_mask: &c.mask,
            labels: None,
            loss_normalizer: None,
            position_ids: None,
        };
        let logits = c.model.logits(&mut c.ws, &batch, false).expect("logits").to_vec();
        let err = max_abs(&logits, &c.expected.f32s["merged_logits"].data);
        assert!(err <= 1e-5, "{name}: merged logits differ by {err}");
        eprintln!("{name}: merged weights within {worst}, logits within {err}");
        assert!(c.model.store.merge_lora().is_err(), "nothing left to merge");
    }
}

#[test]
fn save_then_load_adapter_is_exact_and_uses_peft_names() {
    let mut c = case("tiny_lora_qwen2", "tiny_qwen2");
    let batch = Batch {
        input_ids: &c.ids,
        attention_mask: &c.mask,
        labels: Some(&c.labels),
        loss_normalizer: None,
        position_ids: None,
    };
    c.model.forward_backward(&mut c.ws, &batch).expect("forward_backward");
    c.model.store.adamw_step(Hyper { lr: 1e-2, ..Hyper::default() });
    let dir = tempfile::tempdir().expect("tempdir");
    c.model.store.save_adapter(dir.path()).expect("save");
    let logits = c.model.logits(&mut c.ws, &batch, false).expect("logits").to_vec();

    let (_, mut again) = base("tiny_qwen2");
    again.store.load_adapter(dir.path()).expect("reload");
    assert_eq!(again.store.lora_state_dict(), c.model.store.lora_state_dict());
    assert_eq!(again.logits(&mut c.ws, &batch, false).expect("logits"), &logits[..]);

    let ours = load_state_dict(dir.path().join("adapter_model.safetensors")).expect("ours");
    let peft = load_state_dict(lora_dir("tiny_lora_qwen2").join("adapter_model.safetensors")).expect("peft");
    assert_eq!(ours.keys().collect::<Vec<_>>(), peft.keys().collect::<Vec<_>>());
    assert!(ours.contains_key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
    for (k, t) in &peft {
        assert_eq!(ours[k].shape, t.shape, "{k}");
    }
}

#[test]
fn saved_adapter_config_has_peft_keys_and_values() {
    let c = case("tiny_lora_llama_rslora", "tiny_llama");
    let dir = tempfile::tempdir().expect("tempdir");
    c.model.store.save_adapter(dir.path()).expect("save");
    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p.join("adapter_config.json")).expect("read")).expect("json")
    };
    let ours = read(dir.path());
    let peft = read(&lora_dir("tiny_lora_llama_rslora"));
    let ours = ours.as_object().expect("object");
    let peft = peft.as_object().expect("object");
    for k in ours.keys() {
        assert!(peft.contains_key(k), "{k} is not a PEFT adapter_config.json key");
    }
    for k in [
        "r",
        "lora_alpha",
        "lora_dropout",
        "bias",
        "use_rslora",
        "peft_type",
        "task_type",
        "fan_in_fan_out",
        "inference_mode",
        "base_model_name_or_path",
        "use_dora",
        "modules_to_save",
        "layers_to_transform",
        "rank_pattern",
        "alpha_pattern",
        "init_lora_weights",
        "lora_bias",
    ] {
        assert!(ours.contains_key(k), "missing {k}");
        // Numbers compare as f64 (PEFT writes lora_alpha as an integer).
        let (a, b) = (&ours[k], &peft[k]);
        match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => assert_eq!(x, y, "{k}"),
            _ => assert_eq!(a, b, "{k}"),
        }
    }
    let set = |v: &serde_json::Value| {
        let mut s: Vec<String> =
            v.as_array().expect("list").iter().map(|x| x.as_str().expect("str").to_string()).collect();
        s.sort();
        s
    };
    assert_eq!(set(&ours["target_modules"]), set(&peft["target_modules"]));
}

fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(fixture(name, f), dir.path().join(f)).expect("copy");
    }
    dir
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("adapter_config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("json");
    f(&mut v);
    std::fs::write(&p, v.to_string()).expect("write");
}

fn edit_weights(dir: &Path, f: impl FnOnce(&mut finetune_engine::StateDict)) {
    let p = dir.join("adapter_model.safetensors");
    let mut sd = load_state_dict(&p).expect("load");
    f(&mut sd);
    finetune_models::checkpoint::save_safetensors(&sd, &p).expect("save");
}

fn load_err(dir: &Path) -> String {
    let (_, mut m) = base("tiny_llama");
    let before = m.store.params.len();
    let e = m.store.load_adapter(dir).expect_err("bad adapter is rejected").to_string();
    // A failed load leaves the base model as it was.
    assert!(m.store.lora_config().is_none() && m.store.params.len() == before, "{e}");
    assert!(m.store.param_infos().iter().all(|i| i.requires_grad));
    e
}

#[test]
fn bad_adapter_files_are_clear_errors() {
    let t = "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight";
    let d = copy_fixture("tiny_lora_llama");
    edit_weights(d.path(), |sd| {
        sd.remove(t);
    });
    let e = load_err(d.path());
    assert!(e.contains(t) && e.contains("adapter_model.safetensors") && e.contains("missing"), "{e}");

    let d = copy_fixture("tiny_lora_llama");
    edit_weights(d.path(), |sd| {
        let x = sd.get_mut(t).expect("tensor");
        x.shape = vec![x.shape[1], x.shape[0]];
    });
    let e = load_err(d.path());
    assert!(e.contains(t) && e.contains("shape"), "{e}");

    let d = copy_fixture("tiny_lora_llama");
    edit_config(d.path(), |v| v["r"] = serde_json::json!(2));
    let e = load_err(d.path());
    assert!(e.contains("shape") && e.contains("r = 2"), "{e}");

    let d = copy_fixture("tiny_lora_llama");
    edit_config(d.path(), |v| v["target_modules"] = serde_json::json!(["q_proj", "c_attn"]));
    let e = load_err(d.path());
    assert!(e.contains("c_attn") && e.contains("adapter_config.json"), "{e}");

    // Adapters in the file that the config does not ask for.
    let d = copy_fixture("tiny_lora_llama");
    edit_config(d.path(), |v| v["target_modules"] = serde_json::json!(["q_proj", "k_proj", "v_proj"]));
    let e = load_err(d.path());
    assert!(e.contains("down_proj.lora_A.weight") && e.contains("not an adapter tensor"), "{e}");

    for (key, value, word) in [
        ("bias", serde_json::json!("lora_only"), "bias"),
        ("use_dora", serde_json::json!(true), "DoRA"),
        ("peft_type", serde_json::json!("IA3"), "IA3"),
        ("target_modules", serde_json::json!(".*proj"), "regular expressions"),
        ("rank_pattern", serde_json::json!({"q_proj": 8}), "rank_pattern"),
    ] {
        let d = copy_fixture("tiny_lora_llama");
        edit_config(d.path(), |v| v[key] = value);
        let e = load_err(d.path());
        assert!(e.contains(word) && e.contains("adapter_config.json"), "{key}: {e}");
    }

    let d = tempfile::tempdir().expect("tempdir");
    let e = load_err(d.path());
    assert!(e.contains("adapter_config.json"), "{e}");

    // As PEFT (with a warning): fan_in_fan_out is corrected to false for nn.Linear layers.
    let d = copy_fixture("tiny_lora_llama");
    edit_config(d.path(), |v| v["fan_in_fan_out"] = serde_json::json!(true));
    let (_, mut m) = base("tiny_llama");
    m.store.load_adapter(d.path()).expect("fan_in_fan_out is corrected");
    assert!(!m.store.lora_config().expect("adapters").fan_in_fan_out);
}

#[test]
fn add_lora_initialises_as_peft_and_leaves_the_output_unchanged() {
    let (cfg, mut m) = base("tiny_qwen2");
    let ids: Vec<u32> = (0..12).map(|i| (i * 7 % 128) as u32).collect();
    let mask = vec![1u32; 12];
    let batch =
        Batch { input_ids: &ids, attention_mask: &mask, labels: None, loss_normalizer: None, position_ids: None };
    let mut ws = Workspace::new(&cfg, 2, 6);
    let before = m.logits(&mut ws, &batch, false).expect("logits").to_vec();
    let lc = LoraConfig {
        r: 4,
        lora_alpha: 16.0,
        target_modules: TargetModules::Str("all-linear".into()),
        ..LoraConfig::default()
    };
    m.store.add_lora(&lc, 7).expect("add");
    assert!(m.store.add_lora(&lc, 7).is_err(), "adapters twice");
    let names = lora_names(&m);
    assert_eq!(names.len(), cfg.num_hidden_layers * LORA_TARGETS.len() * 2);
    for n in &names {
        let info = m.store.param_infos().iter().find(|i| &i.name == n).expect("info").clone();
        assert!(info.requires_grad && info.decay, "{n}");
        let p = m.store.param(n).expect("param");
        if n.ends_with("lora_B.weight") {
            assert!(p.iter().all(|&v| v == 0.0), "{n}");
        } else {
            let bound = 1.0 / (info.shape[1] as f32).sqrt();
            assert!(p.iter().all(|v| v.abs() <= bound), "{n}");
            let spread = p.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            assert!(spread > 0.5 * bound, "{n}: {spread} vs {bound}");
        }
    }
    assert_eq!(m.store.param("model.layers.1.mlp.gate_proj.lora_A.weight").expect("A").len(), 4 * 32);
    assert_eq!(m.store.param("model.layers.1.self_attn.o_proj.lora_B.weight").expect("B").len(), 32 * 4);
    assert_eq!(m.logits(&mut ws, &batch, false).expect("logits"), &before[..], "B = 0 leaves the output");
    m.store.unload_lora().expect("had adapters");
    assert!(m.store.param_infos().iter().all(|i| i.requires_grad));
}

#[test]
fn lora_dropout_only_while_training() {
    let mut c = case("tiny_lora_llama", "tiny_llama");
    let batch = Batch {
        input_ids: &c.ids,
        attention_mask: &c.mask,
        labels: Some(&c.labels),
        loss_normalizer: None,
        position_ids: None,
    };
    let dir = copy_fixture("tiny_lora_llama");
    edit_config(dir.path(), |v| v["lora_dropout"] = serde_json::json!(0.3));
    let (_, mut d) = base("tiny_llama");
    d.store.load_adapter(dir.path()).expect("loads");
    let eval_plain = c.model.forward(&mut c.ws, &batch).expect("forward");
    let eval_drop = d.forward(&mut c.ws, &batch).expect("forward");
    assert_eq!(eval_plain, eval_drop, "no dropout in evaluation");
    let train_plain = c.model.forward_backward(&mut c.ws, &batch).expect("train");
    assert_eq!(train_plain, eval_plain);
    let t1 = d.forward_backward(&mut c.ws, &batch).expect("train");
    let g1 = d.store.grads.clone();
    d.store.zero_grad();
    let t2 = d.forward_backward(&mut c.ws, &batch).expect("train");
    assert!(t1 != eval_drop && t2 != t1, "masks change the loss and differ per pass: {t1} {t2} {eval_drop}");
    assert!(d.store.grads != g1);
    // The same seed gives the same masks.
    let (_, mut e) = base("tiny_llama");
    e.store.load_adapter(dir.path()).expect("loads");
    assert_eq!(e.forward_backward(&mut c.ws, &batch).expect("train"), t1);
    assert_eq!(e.store.grads, g1);
    assert_eq!(d.forward(&mut c.ws, &batch).expect("forward"), eval_drop, "evaluation after training");
}

/// Writes an adapter trained here for scripts/reference/check_peft_reload.py (run by hand):
/// `FINETUNE_LORA_CHECK_DIR=/tmp/lora-check cargo test -p finetune-models --test lora -- --ignored`.
#[test]
#[ignore]
fn write_adapter_for_peft_check() {
    let out = std::env::var("FINETUNE_LORA_CHECK_DIR").unwrap_or_else(|_| "target/lora-check".into());
    let out = Path::new(&out);
    let mut c = case("tiny_lora_llama", "tiny_llama");
    c.model.store.unload_lora();
    let lc = LoraConfig {
        r: 8,
        lora_alpha: 16.0,
        lora_dropout: 0.1,
        use_rslora: true,
        target_modules: TargetModules::Str("all-linear".into()),
        base_model_name_or_path: Some("tiny_llama".into()),
        ..LoraConfig::default()
    };
    c.model.store.add_lora(&lc, 3).expect("add");
    let batch = Batch {
        input_ids: &c.ids,
        attention_mask: &c.mask,
        labels: Some(&c.labels),
        loss_normalizer: None,
        position_ids: None,
    };
    for _ in 0..5 {
        c.model.store.zero_grad();
        c.model.forward_backward(&mut c.ws, &batch).expect("train");
        c.model.store.adamw_step(Hyper { lr: 2e-2, ..Hyper::default() });
    }
    c.model.store.save_adapter(out).expect("save");
    let logits = c.model.logits(&mut c.ws, &batch, false).expect("logits").to_vec();
    let (b, t) = (3, c.ids.len() / 3);
    let as_f32 = |v: &[u32]| finetune_engine::Tensor::new(vec![b, t], v.iter().map(|&x| x as f32).collect());
    let mut sd = finetune_engine::StateDict::new();
    sd.insert("logits".into(), finetune_engine::Tensor::new(vec![b, t, logits.len() / (b * t)], logits));
    sd.insert("input_ids".into(), as_f32(&c.ids));
    sd.insert("attention_mask".into(), as_f32(&c.mask));
    finetune_models::checkpoint::save_safetensors(&sd, &out.join("ours_logits.safetensors")).expect("save logits");
    eprintln!("wrote {}", out.display());
}

/// Rough speed check of LoRA (r = 16 on all seven linears, base frozen) against full fine-tuning on a
/// SmolLM2-135M-shaped model (4 of its 30 layers):
/// `cargo test --release -p finetune-models --test lora -- --ignored smollm2 --nocapture`.
#[test]
#[ignore]
fn smollm2_shaped_lora_step_timing() {
    let cfg = LlamaConfig::from_json(
        r#"{"model_type": "llama", "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
            "num_hidden_layers": 4, "num_attention_heads": 9, "num_key_value_heads": 3,
            "rope_theta": 100000.0, "tie_word_embeddings": true, "rms_norm_eps": 1e-5}"#,
    )
    .expect("config");
    let (b, t) = (4, 256);
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
    for lora in [false, true] {
        let mut m = LlamaForCausalLM::random(cfg.clone(), 0).expect("init");
        if lora {
            let lc = LoraConfig {
                r: 16,
                lora_alpha: 32.0,
                lora_dropout: 0.05,
                target_modules: TargetModules::Str("all-linear".into()),
                ..LoraConfig::default()
            };
            m.store.add_lora(&lc, 0).expect("lora");
        }
        let mut ws = Workspace::new(&cfg, b, t);
        for step in 0..3 {
            let start = std::time::Instant::now();
            m.store.zero_grad();
            let loss = m.forward_backward(&mut ws, &batch).expect("step");
            m.store.clip_grad_norm(1.0);
            m.store.adamw_step(Hyper::default());
            let s = start.elapsed().as_secs_f64();
            let what = if lora { "LoRA r=16" } else { "full" };
            eprintln!("{what} step {step}: loss {loss:.4}, {s:.3} s, {:.0} tokens/s", (b * t) as f64 / s);
        }
    }
}

fn gpt2_case() -> (Gpt2LMHeadModel, Loaded, Vec<u32>, Vec<u32>, Vec<i64>, gpt2::Workspace) {
    let text = std::fs::read_to_string(fixture("tiny_gpt2", "config.json")).expect("config");
    let cfg = Gpt2Config::from_json(&text).expect("config parses");
    let weights = load(fixture("tiny_gpt2", "model.safetensors"));
    let mut model = Gpt2LMHeadModel::from_state_dict(cfg.clone(), &weights.f32s).expect("loads");
    model.store.load_adapter(lora_dir("tiny_lora_gpt2")).expect("PEFT adapter loads");
    let expected = load(fixture("tiny_lora_gpt2", "expected.safetensors"));
    let u = |k: &str| expected.i64s[k].iter().map(|&v| v as u32).collect::<Vec<u32>>();
    let (ids, mask) = (u("input_ids"), u("attention_mask"));
    let labels = expected.i64s["labels"].clone();
    let ws = gpt2::Workspace::new(&cfg, 3, ids.len() / 3);
    (model, expected, ids, mask, labels, ws)
}

#[test]
fn gpt2_conv1d_adapters_match_peft() {
    let (mut m, expected, ids, mask, labels, mut ws) = gpt2_case();
    assert!(m.store.lora_config().expect("adapters").fan_in_fan_out, "PEFT's Conv1D setting");
    let batch = Batch {
        input_ids: &ids,
        attention_mask: &mask,
        labels: Some(&labels),
        loss_normalizer: None,
        position_ids: None,
    };
    let logits = m.logits(&mut ws, &batch, false).expect("logits").to_vec();
    let err = max_abs(&logits, &expected.f32s["logits"].data);
    assert!(err <= 1e-5, "logits differ by {err}");
    let loss = m.forward_backward(&mut ws, &batch).expect("forward_backward");
    assert!((loss - expected.f32s["loss"].data[0]).abs() <= 1e-5, "loss {loss}");
    let names: Vec<String> =
        m.store.param_infos().iter().filter(|i| i.name.contains(".lora_")).map(|i| i.name.clone()).collect();
    // c_attn, both c_proj and c_fc on 2 layers.
    assert_eq!(names.len(), 2 * 4 * 2);
    assert_eq!(names.len(), expected.f32s.keys().filter(|k| k.starts_with("grad.")).count());
    for n in &names {
        let e = rel_err(m.store.grad(n).expect("grad"), &expected.f32s[&format!("grad.{n}")].data);
        assert!(e <= 1e-4, "gradient of {n} off by {e} relative");
    }

    let (mut m, _, _, _, _, _) = gpt2_case();
    let lrs = expected.f64s["lrs"].clone();
    let norms = expected.f64s["grad_norms"].clone();
    for (step, lr) in lrs.iter().enumerate() {
        m.store.zero_grad();
        m.forward_backward(&mut ws, &batch).expect("forward_backward");
        let norm = m.store.clip_grad_norm(1.0) as f64;
        assert!((norm - norms[step]).abs() <= 1e-4 * norms[step], "step {step}: norm {norm} vs {}", norms[step]);
        m.store.adamw_step(Hyper { lr: *lr, weight_decay: 0.01, ..Hyper::default() });
    }
    for n in &names {
        let e = max_abs(m.store.param(n).expect("param"), &expected.f32s[&format!("step3.{n}")].data);
        assert!(e <= 1e-5, "{n} after 3 steps differs by {e}");
    }
    let initial = load(fixture("tiny_gpt2", "model.safetensors")).f32s;
    for (n, t) in &initial {
        if let Some(p) = m.store.param(n) {
            assert_eq!(p, &t.data[..], "frozen {n} changed");
        }
    }

    // Save → load is exact, with PEFT's names and target list.
    let dir = tempfile::tempdir().expect("tempdir");
    m.store.save_adapter(dir.path()).expect("save");
    let (mut again, ..) = gpt2_case();
    again.store.unload_lora();
    again.store.load_adapter(dir.path()).expect("reload");
    assert_eq!(again.store.lora_state_dict(), m.store.lora_state_dict());
    let ours = load_state_dict(dir.path().join("adapter_model.safetensors")).expect("ours");
    let peft = load_state_dict(lora_dir("tiny_lora_gpt2").join("adapter_model.safetensors")).expect("peft");
    assert_eq!(ours.keys().collect::<Vec<_>>(), peft.keys().collect::<Vec<_>>());
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("adapter_config.json")).expect("read"))
            .expect("json");
    assert_eq!(cfg["target_modules"], serde_json::json!(["c_attn", "c_proj", "c_fc"]));
    assert_eq!(cfg["fan_in_fan_out"], serde_json::json!(true));

    // Merging into the [in, out] Conv1D weights equals PEFT's merge_and_unload.
    let (mut m, ..) = gpt2_case();
    m.store.merge_lora().expect("merge");
    for info in m.store.param_infos() {
        let e =
            max_abs(m.store.param(&info.name).expect("param"), &expected.f32s[&format!("merged.{}", info.name)].data);
        assert!(e <= 1e-6, "merged {} differs by {e}", info.name);
    }
    let batch = Batch { labels: None, ..batch };
    let logits = m.logits(&mut ws, &batch, false).expect("logits").to_vec();
    let err = max_abs(&logits, &expected.f32s["merged_logits"].data);
    assert!(err <= 1e-5, "merged logits differ by {err}");
}
