//! The real SmolLM2-135M-Instruct (Q4_1 GGUF) against transformers 5.23.0 loading the same file: token ids,
//! logits and the causal-LM loss (fixture from scripts/reference/gen_smollm2_logits.py). The GGUF file is
//! git-ignored, so that test prints SKIPPED when it is absent; the second test runs the same path (GGUF loader,
//! tokenizer, model) on the tiny random fixtures/gguf/tiny_llama.gguf, so CI covers it too.

mod common;

use std::io::Write as _;
use std::path::Path;

use finetune_models::decoder::Architecture;
use finetune_models::gguf::load_llama;
use finetune_models::llama::{Batch, LlamaConfig, LlamaForCausalLM, Workspace};
use serde_json::Value;

/// Logits: max |ours − transformers| over every stored value.
const LOGIT_TOL: f32 = 1e-3;
const LOSS_TOL: f64 = 1e-4;

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array().expect("id list").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

#[test]
fn smollm2_135m_instruct_matches_transformers() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.exists() {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: {} is absent; run scripts/fetch.sh SmolLM2-135M-Instruct",
            path.display()
        );
        return;
    }
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(common::fixture("smollm2", "cases.json")).expect("cases.json"))
            .expect("cases.json parses");
    let fx = common::load(common::fixture("smollm2", "logits.safetensors"));
    let top_k = meta["top_k"].as_u64().expect("top_k") as usize;

    let m = load_llama(&path).expect("GGUF loads");
    let cfg = LlamaConfig::from_json(&m.config.to_string()).expect("config");
    let v = cfg.vocab_size;
    let model = LlamaForCausalLM::from_state_dict(cfg.clone(), &m.state).expect("state dict");
    let tok = m.tokenizer.expect("the file carries a tokenizer");

    let mut report = Vec::new();
    for case in meta["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let texts = case["texts"].as_array().expect("texts");

        // Token ids: ours against transformers' GGUF tokenizer, text by text.
        for (text, want) in texts.iter().zip(case["ids"].as_array().expect("ids")) {
            let text = text.as_str().expect("text");
            let ours = tok.tokenizer.encode(text, true).expect("encodes");
            assert_eq!(ours.get_ids(), &ids_of(want)[..], "{name}: token ids of {text:?}");
        }

        // The padded batch exactly as transformers built it.
        let ids: Vec<u32> = fx.i64s[&format!("{name}.input_ids")].iter().map(|&x| x as u32).collect();
        let mask: Vec<u32> = fx.i64s[&format!("{name}.attention_mask")].iter().map(|&x| x as u32).collect();
        let b = texts.len();
        let t = ids.len() / b;
        let pad = case["pad_token_id"].as_u64().expect("pad id") as u32;
        for (row, want) in ids.chunks_exact(t).zip(case["ids"].as_array().expect("ids")) {
            let want = ids_of(want);
            assert_eq!(&row[..want.len()], &want[..], "{name}: batch row");
            assert!(row[want.len()..].iter().all(|&x| x == pad), "{name}: right padding with {pad}");
        }

        let mut ws = Workspace::new(&cfg, b, t);
        let batch =
            Batch { input_ids: &ids, attention_mask: &mask, labels: None, loss_normalizer: None, position_ids: None };
        let logits = model.logits(&mut ws, &batch, false).expect("logits").to_vec();
        assert_eq!(logits.len(), b * t * v);

        // The full vocabulary row at each sequence's last real token.
        let last = &fx.f32s[&format!("{name}.last_logits")].data;
        let mut worst_last = 0.0f32;
        for r in 0..b {
            let len = mask[r * t..(r + 1) * t].iter().filter(|&&x| x == 1).count();
            let ours = &logits[(r * t + len - 1) * v..(r * t + len) * v];
            for (a, w) in ours.iter().zip(&last[r * v..(r + 1) * v]) {
                worst_last = worst_last.max((a - w).abs());
            }
            let argmax = |x: &[f32]| (0..v).max_by(|&i, &j| x[i].total_cmp(&x[j])).expect("non-empty");
            assert_eq!(argmax(ours), argmax(&last[r * v..(r + 1) * v]), "{name} row {r}: next-token argmax");
        }

        // Transformers' top-k logits at every position, padding included (its rows still attend to the real
        // tokens before it, as in transformers).
        let top_ids = &fx.i64s[&format!("{name}.top_ids")];
        let top_vals = &fx.f32s[&format!("{name}.top_values")].data;
        let mut worst_top = 0.0f32;
        for (p, (idk, valk)) in top_ids.chunks_exact(top_k).zip(top_vals.chunks_exact(top_k)).enumerate() {
            for (&id, &want) in idk.iter().zip(valk) {
                worst_top = worst_top.max((logits[p * v + id as usize] - want).abs());
            }
        }

        // Loss with labels = input_ids (padding included, as transformers computes it), and with padding
        // set to -100 where the batch is padded.
        let labels: Vec<i64> = ids.iter().map(|&x| i64::from(x)).collect();
        let batch = Batch { labels: Some(&labels), ..batch };
        let loss = f64::from(model.forward(&mut ws, &batch).expect("loss"));
        let want = fx.f64s[&format!("{name}.loss")][0];
        let mut loss_err = (loss - want).abs();
        if let Some(want_masked) = fx.f64s.get(&format!("{name}.loss_masked")) {
            let masked: Vec<i64> = labels.iter().zip(&mask).map(|(&l, &m)| if m == 1 { l } else { -100 }).collect();
            let batch = Batch { labels: Some(&masked), ..batch };
            let loss = f64::from(model.forward(&mut ws, &batch).expect("loss"));
            loss_err = loss_err.max((loss - want_masked[0]).abs());
        }
        report.push(format!(
            "{name} [{b}x{t}]: max |Δlogit| last row {worst_last:.2e}, top-{top_k} {worst_top:.2e}; |Δloss| {loss_err:.2e}"
        ));
        let _ = writeln!(std::io::stderr(), "{}", report.last().expect("just pushed"));
        assert!(worst_last <= LOGIT_TOL, "{name}: last-row logits differ by {worst_last}");
        assert!(worst_top <= LOGIT_TOL, "{name}: top-{top_k} logits differ by {worst_top}");
        assert!(loss_err <= LOSS_TOL, "{name}: loss differs by {loss_err} (ours {loss}, transformers {want})");
    }
    assert_eq!(report.len(), 4, "plain, chat, unicode and padded-batch cases");
}

/// The same path on the tiny random GGUF file (runs everywhere): transformers' GGUF tokenizer ids, the full
/// `[B, T, V]` logits of a right-padded batch and both losses.
#[test]
fn tiny_gguf_matches_transformers_gguf_loading() {
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(common::fixture("smollm2", "tiny_gguf.json")).expect("json"))
            .expect("tiny_gguf.json parses");
    let fx = common::load(common::fixture("smollm2", "tiny_gguf.safetensors"));
    let m = load_llama(common::fixture("gguf", "tiny_llama.gguf")).expect("tiny GGUF loads");
    let cfg = LlamaConfig::from_json(&m.config.to_string()).expect("config");
    let model = LlamaForCausalLM::from_state_dict(cfg.clone(), &m.state).expect("state dict");
    let tok = m.tokenizer.expect("tokenizer");

    let ids: Vec<u32> = fx.i64s["input_ids"].iter().map(|&x| x as u32).collect();
    let mask: Vec<u32> = fx.i64s["attention_mask"].iter().map(|&x| x as u32).collect();
    let texts = meta["texts"].as_array().expect("texts");
    let (b, v) = (texts.len(), cfg.vocab_size);
    let t = ids.len() / b;
    for ((text, want), row) in texts.iter().zip(meta["ids"].as_array().expect("ids")).zip(ids.chunks_exact(t)) {
        let want = ids_of(want);
        let ours = tok.tokenizer.encode(text.as_str().expect("text"), true).expect("encodes");
        assert_eq!(ours.get_ids(), &want[..], "{text}");
        assert_eq!(&row[..want.len()], &want[..]);
    }

    let mut ws = Workspace::new(&cfg, b, t);
    let batch =
        Batch { input_ids: &ids, attention_mask: &mask, labels: None, loss_normalizer: None, position_ids: None };
    let logits = model.logits(&mut ws, &batch, false).expect("logits");
    let want = &fx.f32s["logits"].data;
    assert_eq!(logits.len(), b * t * v);
    let worst = logits.iter().zip(want).map(|(a, w)| (a - w).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 1e-4, "max |logit - transformers| = {worst}");

    let labels: Vec<i64> = ids.iter().map(|&x| i64::from(x)).collect();
    let loss = model.forward(&mut ws, &Batch { labels: Some(&labels), ..batch }).expect("loss");
    assert!((f64::from(loss) - fx.f64s["loss"][0]).abs() <= 1e-5, "loss {loss} vs {}", fx.f64s["loss"][0]);
    let masked: Vec<i64> = labels.iter().zip(&mask).map(|(&l, &m)| if m == 1 { l } else { -100 }).collect();
    let loss = model.forward(&mut ws, &Batch { labels: Some(&masked), ..batch }).expect("loss");
    let want = fx.f64s["loss_masked"][0];
    assert!((f64::from(loss) - want).abs() <= 1e-5, "padding-masked loss {loss} vs {want}");
}
