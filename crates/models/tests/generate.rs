//! Generation with the KV cache: equal to recomputing the full forward each step, to transformers'
//! `model.generate(do_sample=False)` and to its logits processors (fixtures from
//! scripts/reference/gen_generate.py); continuous batching: rows joining a running batch get their tokens alone.

use finetune_models::batch::{ContinuousBatch, PREFILL_CHUNK};
use finetune_models::causal::{load_causal_lm, CausalModel};
use finetune_models::decoder::Architecture;
use finetune_models::generate::{self, generate, CachedDecoder, GenerationConfig, Rng};
use finetune_models::llama::{Batch, LlamaConfig, LlamaForCausalLM, Workspace};

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

/// Any architecture, loaded from its fixture directory through the architecture table.
fn causal(dir: &str) -> CausalModel {
    load_causal_lm(&fixture(dir, "").display().to_string()).expect("loads").model
}

fn matches_transformers<M: CachedDecoder>(m: &M, dir: &str) {
    let r = reference(dir);
    let prompts = prompts(&r);
    let eos = r.i64s["eos_token_id"][0] as u32;
    let gen = &r.i64s["generated"];
    let free = &r.i64s["generated_no_eos"];
    let n = gen.len() / 3;

    let got = generate(m, &prompts, &greedy(n, vec![eos]), &mut |_, _| false).expect("generate");
    for b in 0..3 {
        let row: Vec<u32> = gen[b * n..(b + 1) * n].iter().map(|&x| x as u32).collect();
        let len = row.iter().position(|&x| x == eos).map_or(n, |i| i + 1);
        assert_eq!(got[b], row[..len], "{dir}: row {b} vs transformers");
    }
    assert!(got[1].len() < n, "{dir}: the fixture stops row 1 at its EOS");
    let got = generate(m, &prompts, &greedy(n, vec![]), &mut |_, _| false).expect("generate");
    let want: Vec<Vec<u32>> = (0..3).map(|b| free[b * n..(b + 1) * n].iter().map(|&x| x as u32).collect()).collect();
    assert_eq!(got, want, "{dir}: without EOS");

    // Prefill logits of the left-padded batch.
    let ids: Vec<u32> = r.i64s["input_ids"].iter().map(|&x| x as u32).collect();
    let mask: Vec<u32> = r.i64s["attention_mask"].iter().map(|&x| x as u32).collect();
    let t = ids.len() / 3;
    let mut cache = m.new_cache(3, t + 4);
    let mut ws = m.new_workspace(3, t, t + 4);
    let logits = m.step(&mut cache, &mut ws, &ids, &mask).expect("prefill").to_vec();
    let want = &r.f32s["prefill_logits"].data;
    let err = logits.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(err <= 1e-4, "{dir}: prefill logits differ by {err}");
    assert_eq!(cache.len(), t);

    // A decode step that does not fit the cache, and a mask of the wrong length, are errors.
    let mut full = vec![1u32; 3 * (t + 5)];
    full[..mask.len()].copy_from_slice(&mask);
    assert!(m.step(&mut cache, &mut ws, &[1, 2, 3], &mask).is_err(), "mask length");
    let mut small = m.new_cache(3, t);
    let mut ws2 = m.new_workspace(3, t, t);
    m.step(&mut small, &mut ws2, &ids, &mask).expect("prefill");
    assert!(m.step(&mut small, &mut ws2, &[1, 2, 3], &full[..3 * (t + 1)]).is_err(), "cache full");
}

#[test]
fn greedy_matches_transformers_llama() {
    matches_transformers(&model("tiny_llama"), "tiny_llama");
}

#[test]
fn greedy_matches_transformers_qwen2() {
    matches_transformers(&model("tiny_qwen2"), "tiny_qwen2");
}

#[test]
fn greedy_matches_transformers_phi() {
    let m = causal("tiny_phi");
    assert_eq!(m.architecture(), "PhiForCausalLM");
    matches_transformers(&m, "tiny_phi");
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

/// Runs `prompt` alone through a [`ContinuousBatch`] to its end.
fn alone<M: CachedDecoder>(m: &M, prompt: &[u32], cfg: &GenerationConfig) -> Vec<u32> {
    let mut b = ContinuousBatch::new(m, 4);
    let first = b.add(prompt, cfg.clone()).expect("add");
    let mut out = vec![first.id];
    let mut done = first.done;
    while !done {
        let t = b.step().expect("step");
        assert_eq!(t.len(), 1);
        out.push(t[0].id);
        done = t[0].done;
    }
    assert!(b.is_empty());
    out
}

/// Rows joining a running batch at different steps, with different settings: each gets exactly its tokens
/// alone, a short row that joins late ends before the long one, and a freed slot is reused.
fn joins_running_batch<M: CachedDecoder>(m: &M, name: &str) {
    let long = greedy(24, vec![]);
    let long_cfg = long.clone();
    let sampled = GenerationConfig {
        max_new_tokens: 10,
        do_sample: true,
        temperature: 0.8,
        top_k: 0,
        top_p: 0.9,
        repetition_penalty: 1.3,
        seed: 11,
        ..Default::default()
    };
    let short = greedy(3, vec![]);
    let reqs: Vec<(Vec<u32>, GenerationConfig)> = vec![
        (vec![5, 9, 33, 7, 100, 2, 64], long),
        (vec![17, 3], sampled),
        (vec![44, 45, 46, 47], short.clone()),
        (vec![8, 1, 30], GenerationConfig { seed: 3, ..short }),
    ];
    let want: Vec<Vec<u32>> = reqs.iter().map(|(p, c)| alone(m, p, c)).collect();
    // The batch path alone equals the left-padded one.
    let one = generate::generate_rows(
        m,
        &reqs[..1].iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
        &[long_cfg],
        &mut |_, _| false,
    )
    .expect("generate");
    assert_eq!(one[0], want[0], "{name}: alone vs generate_rows");

    let mut b = ContinuousBatch::new(m, 3);
    let mut got: Vec<Vec<u32>> = vec![Vec::new(); reqs.len()];
    let mut slot_of: Vec<Option<usize>> = vec![None; reqs.len()];
    let mut ended: Vec<usize> = Vec::new();
    // Request r joins after `joins[r]` decode steps.
    let joins = [0usize, 2, 5, 9];
    let mut record = |r: usize, id: u32, done: bool, ended: &mut Vec<usize>| {
        got[r].push(id);
        if done {
            ended.push(r);
        }
    };
    for step in 0..40 {
        for (r, &j) in joins.iter().enumerate() {
            if j == step {
                let t = b.add(&reqs[r].0, reqs[r].1.clone()).expect("add");
                slot_of[r] = Some(t.slot);
                record(r, t.id, t.done, &mut ended);
            }
        }
        let toks: Vec<_> = b.step().expect("step").to_vec();
        for t in toks {
            let r = (0..reqs.len())
                .rfind(|&r| slot_of[r] == Some(t.slot) && !ended.contains(&r))
                .expect("a row on that slot");
            record(r, t.id, t.done, &mut ended);
        }
    }
    assert!(b.is_empty(), "{name}: every row ended");
    assert_eq!(got, want, "{name}: rows in a running batch vs alone");
    let pos = |r: usize| ended.iter().position(|&x| x == r).expect("ended");
    assert!(pos(2) < pos(0), "{name}: the short row joining late ends first: {ended:?}");
    // Three slots, four requests: the last one took the slot the short row left.
    assert_eq!(slot_of[3], slot_of[2], "{name}: a freed slot is reused");
}

#[test]
fn continuous_batch_rows_match_alone_llama() {
    joins_running_batch(&model("tiny_llama"), "tiny_llama");
}

#[test]
fn continuous_batch_rows_match_alone_qwen2() {
    joins_running_batch(&model("tiny_qwen2"), "tiny_qwen2");
}

#[test]
fn continuous_batch_rows_match_alone_phi() {
    joins_running_batch(&causal("tiny_phi"), "tiny_phi");
}

#[test]
fn continuous_batch_rows_match_alone_gpt2() {
    use finetune_models::gpt2::{Gpt2Config, Gpt2LMHeadModel};
    let dir = "tiny_gpt2";
    let cfg = Gpt2Config::from_json(&std::fs::read_to_string(fixture(dir, "config.json")).expect("config"))
        .expect("config parses");
    let m = Gpt2LMHeadModel::from_state_dict(cfg, &load(fixture(dir, "model.safetensors")).f32s).expect("loads");
    joins_running_batch(&m, dir);
}

/// A prompt longer than one prefill chunk, and a request that grows the cache while another row runs: both
/// rows still get their tokens alone; the prefill in chunks equals recomputing the whole sequence.
#[test]
fn continuous_batch_long_prompt_and_cache_growth() {
    let m = model("tiny_llama");
    let long_prompt: Vec<u32> = (0..PREFILL_CHUNK as u32 + 40).map(|i| (i * 7 + 3) % 120).collect();
    let want = greedy_without_cache(&m, std::slice::from_ref(&long_prompt), 4);
    assert_eq!(alone(&m, &long_prompt, &greedy(4, vec![])), want[0], "chunked prefill");

    let a = (vec![5u32, 9, 33], greedy(30, vec![]));
    let c = (vec![17u32, 3, 60], greedy(300, vec![]));
    let (wa, wc) = (alone(&m, &a.0, &a.1), alone(&m, &c.0, &c.1));
    let mut b = ContinuousBatch::new(&m, 2);
    let first = b.add(&a.0, a.1.clone()).expect("add");
    let mut ga = vec![first.id];
    for _ in 0..5 {
        ga.push(b.step().expect("step")[0].id);
    }
    let before = b.max_len();
    let first = b.add(&c.0, c.1.clone()).expect("add");
    assert!(b.max_len() > before, "the cache grew for the longer request");
    let mut gc = vec![first.id];
    while !b.is_empty() {
        for t in b.step().expect("step").to_vec() {
            if t.slot == first.slot {
                gc.push(t.id);
            } else {
                ga.push(t.id);
            }
        }
    }
    assert_eq!((ga, gc), (wa, wc));
}

#[test]
fn continuous_batch_refuses_bad_requests() {
    let m = model("tiny_llama");
    let mut b = ContinuousBatch::new(&m, 1);
    assert!(b.add(&[], greedy(3, vec![])).is_err(), "empty prompt");
    assert!(b.add(&[5], greedy(0, vec![])).is_err(), "no tokens to generate");
    assert!(b.add(&[5, 500], greedy(3, vec![])).is_err(), "id beyond the vocabulary");
    let hot = GenerationConfig { temperature: 0.0, do_sample: true, ..greedy(3, vec![]) };
    assert!(b.add(&[5], hot).is_err(), "temperature 0");
    assert!(b.is_empty(), "failed adds leave no row");
    let t = b.add(&[5, 9], greedy(5, vec![])).expect("add");
    assert!(!t.done);
    assert!(b.add(&[5], greedy(3, vec![])).is_err(), "no free slot");
    b.finish(t.slot);
    assert!(b.is_empty() && b.step().expect("empty step").is_empty());
    // An EOS ends the row at once and frees its slot.
    let eos = alone(&m, &[5, 9], &greedy(5, vec![]))[0];
    let t = b.add(&[5, 9], greedy(5, vec![eos])).expect("add");
    assert!(t.done && t.id == eos && b.is_empty());
}
