//! Generation with the KV cache: equal to recomputing the full forward each step, to transformers'
//! `model.generate(do_sample=False)` and to its logits processors (fixtures from
//! scripts/reference/gen_generate.py).

use finetune_models::generate::{self, generate, GenerationConfig, Rng};
use finetune_models::llama::{Batch, DecodeWorkspace, KvCache, LlamaConfig, LlamaForCausalLM, Workspace};

mod common;
use common::{fixture, load, Loaded};

fn model(dir: &str) -> LlamaForCausalLM {
    let text = std::fs::read_to_string(fixture(dir, "config.json")).expect("config");
    let cfg = LlamaConfig::from_json(&text).expect("config parses");
    LlamaForCausalLM::from_state_dict(cfg, &load(fixture(dir, "model.safetensors")).f32s).expect("loads")
}

fn reference(dir: &str) -> Loaded {
    load(fixture("generate", &format!("{dir}.safetensors")))
}

/// The fixture's left-padded prompts without their padding.
fn prompts(r: &Loaded) -> Vec<Vec<u32>> {
    let (ids, mask) = (&r.i64s["input_ids"], &r.i64s["attention_mask"]);
    let t = ids.len() / 3;
    (0..3).map(|b| (0..t).filter(|&i| mask[b * t + i] == 1).map(|i| ids[b * t + i] as u32).collect()).collect()
}

/// Greedy decoding that reruns the whole left-padded batch through [`LlamaForCausalLM::logits`] every step,
/// with transformers' positions (`cumsum(mask) − 1`, 1 on padding).
fn greedy_without_cache(m: &LlamaForCausalLM, prompts: &[Vec<u32>], steps: usize) -> Vec<Vec<u32>> {
    let plen = prompts.iter().map(Vec::len).max().expect("prompts");
    let mut rows: Vec<(Vec<u32>, Vec<u32>)> = prompts
        .iter()
        .map(|p| {
            let pad = plen - p.len();
            ([vec![0; pad], p.clone()].concat(), [vec![0; pad], vec![1; p.len()]].concat())
        })
        .collect();
    let mut out = vec![Vec::new(); prompts.len()];
    for _ in 0..steps {
        let t = rows[0].0.len();
        let ids: Vec<u32> = rows.iter().flat_map(|r| r.0.clone()).collect();
        let mask: Vec<u32> = rows.iter().flat_map(|r| r.1.clone()).collect();
        let pos: Vec<u32> = rows
            .iter()
            .flat_map(|r| {
                let mut c = 0;
                r.1.iter()
                    .map(|&m| {
                        c += m;
                        if m == 0 {
                            1
                        } else {
                            c - 1
                        }
                    })
                    .collect::<Vec<u32>>()
            })
            .collect();
        let mut ws = Workspace::new(&m.config, rows.len(), t);
        let b = Batch { input_ids: &ids, attention_mask: &mask, position_ids: Some(&pos), ..Default::default() };
        let logits = m.logits(&mut ws, &b, true).expect("logits").to_vec();
        let v = m.config.vocab_size;
        for (k, r) in rows.iter_mut().enumerate() {
            let tok = generate::argmax(&logits[k * v..(k + 1) * v]);
            out[k].push(tok);
            r.0.push(tok);
            r.1.push(1);
        }
    }
    out
}

fn greedy(max_new_tokens: usize, eos: Vec<u32>) -> GenerationConfig {
    GenerationConfig { max_new_tokens, eos_token_id: eos, pad_token_id: Some(0), ..Default::default() }
}

fn cache_equals_recompute(dir: &str) {
    let m = model(dir);
    let prompts = vec![vec![5, 9, 33, 7, 100, 2, 64], vec![17, 3], vec![44, 45, 46, 47]];
    let want = greedy_without_cache(&m, &prompts, 12);
    let got = generate(&m, &prompts, &greedy(12, vec![]), &mut |_, _| false).expect("generate");
    assert_eq!(got, want, "{dir}: cached greedy tokens");
    // Each prompt alone (no padding) gives the same tokens as in the batch.
    for (p, w) in prompts.iter().zip(&want) {
        let one = generate(&m, std::slice::from_ref(p), &greedy(12, vec![]), &mut |_, _| false).expect("one");
        assert_eq!(&one[0], w, "{dir}: unpadded row");
    }
}

#[test]
fn kv_cache_equals_full_recompute_llama() {
    cache_equals_recompute("tiny_llama");
}

#[test]
fn kv_cache_equals_full_recompute_qwen2() {
    cache_equals_recompute("tiny_qwen2");
}

fn matches_transformers(dir: &str) {
    let m = model(dir);
    let r = reference(dir);
    let prompts = prompts(&r);
    let eos = r.i64s["eos_token_id"][0] as u32;
    let gen = &r.i64s["generated"];
    let free = &r.i64s["generated_no_eos"];
    let n = gen.len() / 3;

    let got = generate(&m, &prompts, &greedy(n, vec![eos]), &mut |_, _| false).expect("generate");
    for b in 0..3 {
        let row: Vec<u32> = gen[b * n..(b + 1) * n].iter().map(|&x| x as u32).collect();
        let len = row.iter().position(|&x| x == eos).map_or(n, |i| i + 1);
        assert_eq!(got[b], row[..len], "{dir}: row {b} vs transformers");
    }
    assert!(got[1].len() < n, "{dir}: the fixture stops row 1 at its EOS");
    let got = generate(&m, &prompts, &greedy(n, vec![]), &mut |_, _| false).expect("generate");
    let want: Vec<Vec<u32>> = (0..3).map(|b| free[b * n..(b + 1) * n].iter().map(|&x| x as u32).collect()).collect();
    assert_eq!(got, want, "{dir}: without EOS");

    // Prefill logits of the left-padded batch.
    let ids: Vec<u32> = r.i64s["input_ids"].iter().map(|&x| x as u32).collect();
    let mask: Vec<u32> = r.i64s["attention_mask"].iter().map(|&x| x as u32).collect();
    let t = ids.len() / 3;
    let mut cache = KvCache::new(&m.config, 3, t + 4);
    let mut ws = DecodeWorkspace::new(&m.config, 3, t, t + 4);
    let logits = m.forward_cached(&mut cache, &mut ws, &ids, &mask).expect("prefill").to_vec();
    let want = &r.f32s["prefill_logits"].data;
    let err = logits.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(err <= 1e-4, "{dir}: prefill logits differ by {err}");
    assert_eq!(cache.len(), t);

    // A decode step that does not fit the cache, and a mask of the wrong length, are errors.
    let mut full = vec![1u32; 3 * (t + 5)];
    full[..mask.len()].copy_from_slice(&mask);
    assert!(m.forward_cached(&mut cache, &mut ws, &[1, 2, 3], &mask).is_err(), "mask length");
    let mut small = KvCache::new(&m.config, 3, t);
    let mut ws2 = DecodeWorkspace::new(&m.config, 3, t, t);
    m.forward_cached(&mut small, &mut ws2, &ids, &mask).expect("prefill");
    assert!(m.forward_cached(&mut small, &mut ws2, &[1, 2, 3], &full[..3 * (t + 1)]).is_err(), "cache full");
}

#[test]
fn greedy_matches_transformers_llama() {
    matches_transformers("tiny_llama");
}

#[test]
fn greedy_matches_transformers_qwen2() {
    matches_transformers("tiny_qwen2");
}

#[test]
fn logits_processors_match_transformers() {
    let r = load(fixture("generate", "processors.safetensors"));
    let scores = &r.f32s["scores"].data;
    let ids = &r.i64s["input_ids"];
    let (rows, v) = (4, scores.len() / 4);
    let hist = ids.len() / rows;
    let check = |name: &str, f: &dyn Fn(&mut Vec<f32>, &[u32])| {
        let want = &r.f32s[name].data;
        for b in 0..rows {
            let mut s = scores[b * v..(b + 1) * v].to_vec();
            let h: Vec<u32> = ids[b * hist..(b + 1) * hist].iter().map(|&x| x as u32).collect();
            f(&mut s, &h);
            for (i, (a, w)) in s.iter().zip(&want[b * v..(b + 1) * v]).enumerate() {
                let same = (a.is_infinite() && a == w) || (a - w).abs() <= 1e-6 * (1.0 + w.abs());
                assert!(same, "{name} row {b} token {i}: {a} vs {w}");
            }
        }
    };
    check("repetition_penalty_1.3", &|s, h| generate::repetition_penalty(s, h, 1.3, &mut Vec::new()));
    check("temperature_0.7", &|s, _| generate::temperature(s, 0.7));
    check("top_k_5", &|s, _| generate::top_k(s, 5, &mut Vec::new()));
    check("top_p_0.8", &|s, _| generate::top_p(s, 0.8, &mut Vec::new(), &mut Vec::new()));
    check("top_p_0.01", &|s, _| generate::top_p(s, 0.01, &mut Vec::new(), &mut Vec::new()));
    check("chain", &|s, h| {
        generate::repetition_penalty(s, h, 1.2, &mut Vec::new());
        generate::temperature(s, 0.8);
        generate::top_k(s, 10, &mut Vec::new());
        generate::top_p(s, 0.9, &mut Vec::new(), &mut Vec::new());
    });
    // top_p keeps at least one token.
    let mut s = scores[..v].to_vec();
    generate::top_p(&mut s, 0.0, &mut Vec::new(), &mut Vec::new());
    assert_eq!(s.iter().filter(|x| x.is_finite()).count(), 1);
}

#[test]
fn sampling_is_deterministic_and_top_k_1_is_greedy() {
    let m = model("tiny_llama");
    let prompts = vec![vec![5, 9, 33], vec![17, 3, 8, 8, 1]];
    let cfg = GenerationConfig {
        max_new_tokens: 10,
        do_sample: true,
        temperature: 1.5,
        top_k: 0,
        top_p: 0.95,
        seed: 42,
        ..Default::default()
    };
    let a = generate(&m, &prompts, &cfg, &mut |_, _| false).expect("sample");
    let b = generate(&m, &prompts, &cfg, &mut |_, _| false).expect("sample");
    assert_eq!(a, b, "same seed, same tokens");
    let others: Vec<_> = (0..4u64)
        .map(|seed| generate(&m, &prompts, &GenerationConfig { seed, ..cfg.clone() }, &mut |_, _| false).expect("s"))
        .collect();
    assert!(others.iter().any(|o| *o != a), "the seed changes the samples");
    let g = generate(&m, &prompts, &greedy(10, vec![]), &mut |_, _| false).expect("greedy");
    let k1 = GenerationConfig { top_k: 1, top_p: 1.0, ..cfg };
    assert_eq!(generate(&m, &prompts, &k1, &mut |_, _| false).expect("top_k=1"), g);

    // The stop callback ends a row after the token it saw.
    let stopped =
        generate(&m, &prompts, &greedy(10, vec![]), &mut |row, got| row == 0 && got.len() == 3).expect("stop");
    assert_eq!(stopped[0], g[0][..3]);
    assert_eq!(stopped[1], g[1]);

    // Uniform scores: every token gets drawn.
    let mut rng = Rng::new(3);
    let mut hit = [false; 4];
    for _ in 0..200 {
        hit[generate::sample(&[0.0; 4], &mut rng) as usize] = true;
    }
    assert!(hit.iter().all(|&h| h));
    assert_eq!(generate::sample(&[f32::NEG_INFINITY, 1.0, f32::NEG_INFINITY], &mut rng), 1);
}

#[test]
fn bad_generation_inputs_are_errors() {
    let m = model("tiny_llama");
    assert!(generate(&m, &[vec![]], &greedy(3, vec![]), &mut |_, _| false).is_err());
    assert!(generate(&m, &[vec![500]], &greedy(3, vec![]), &mut |_, _| false).is_err());
    let hot = GenerationConfig { temperature: 0.0, ..greedy(3, vec![]) };
    assert!(generate(&m, &[vec![5]], &hot, &mut |_, _| false).is_err());
    assert_eq!(generate(&m, &[], &greedy(3, vec![]), &mut |_, _| false).expect("empty"), Vec::<Vec<u32>>::new());
}

/// GPT-2: cached greedy decoding equals rerunning the whole sequence through `logits` (positions 0..T, so the
/// prompts in one batch share a length).
#[test]
fn gpt2_kv_cache_equals_full_recompute() {
    use finetune_models::gpt2::{Gpt2Config, Gpt2LMHeadModel, Workspace as Gpt2Workspace};
    let dir = "tiny_gpt2";
    let cfg = Gpt2Config::from_json(&std::fs::read_to_string(fixture(dir, "config.json")).expect("config"))
        .expect("config parses");
    let m = Gpt2LMHeadModel::from_state_dict(cfg, &load(fixture(dir, "model.safetensors")).f32s).expect("loads");
    let prompts = vec![vec![5u32, 9, 33, 7], vec![17, 3, 60, 2]];
    let steps = 8;
    let mut rows = prompts.clone();
    let v = m.config.vocab_size;
    for _ in 0..steps {
        let t = rows[0].len();
        let ids: Vec<u32> = rows.concat();
        let mask = vec![1u32; ids.len()];
        let mut ws = Gpt2Workspace::new(&m.config, rows.len(), t);
        let b = Batch { input_ids: &ids, attention_mask: &mask, ..Default::default() };
        let logits = m.logits(&mut ws, &b, true).expect("logits").to_vec();
        for (k, r) in rows.iter_mut().enumerate() {
            r.push(generate::argmax(&logits[k * v..(k + 1) * v]));
        }
    }
    let want: Vec<Vec<u32>> = rows.iter().map(|r| r[4..].to_vec()).collect();
    let got = generate(&m, &prompts, &greedy(steps, vec![]), &mut |_, _| false).expect("generate");
    assert_eq!(got, want);
    // A shorter, left-padded prompt in the batch does not change the other row.
    let mixed =
        generate(&m, &[prompts[0].clone(), vec![17, 3]], &greedy(steps, vec![]), &mut |_, _| false).expect("generate");
    assert_eq!(mixed[0], want[0]);
}
