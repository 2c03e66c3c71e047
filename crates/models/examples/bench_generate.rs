//! Tokens per second of greedy generation with the KV cache for a Llama-family model (a GGUF file or a Hugging
//! Face directory with config.json and weights): the prefill of a prompt and the decode steps, timed apart.
//!
//! cargo run --release -p finetune-models --example bench_generate -- MODEL [--batch 1] [--tokens 128]
//!     [--prompt 32]

use std::error::Error;
use std::time::Instant;

use finetune_engine::profile;
use finetune_models::checkpoint::load_state_dict;
use finetune_models::generate::{argmax, generate, CachedDecoder, GenerationConfig};
use finetune_models::gguf::load_llama;
use finetune_models::llama::{DecodeWorkspace, KvCache, LlamaConfig, LlamaForCausalLM};

mod common;
use common::arg;

fn load(path: &str) -> Result<LlamaForCausalLM, Box<dyn Error>> {
    if path.ends_with(".gguf") {
        let g = load_llama(path)?;
        let cfg = LlamaConfig::from_json(&g.config.to_string())?;
        Ok(LlamaForCausalLM::from_state_dict(cfg, &g.state)?)
    } else {
        let dir = std::path::Path::new(path);
        let cfg = LlamaConfig::from_json(&std::fs::read_to_string(dir.join("config.json"))?)?;
        Ok(LlamaForCausalLM::from_state_dict(cfg, &load_state_dict(dir)?)?)
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .filter(|a| !a.starts_with("--"))
        .ok_or("usage: bench_generate MODEL [--batch B] [--tokens N] [--prompt P]")?;
    let (b, n, p) = (arg(&args, "--batch", 1), arg(&args, "--tokens", 128), arg(&args, "--prompt", 32));
    let t0 = Instant::now();
    let model = load(path)?;
    eprintln!("loaded {path} in {:.2} s", t0.elapsed().as_secs_f64());
    let v = model.config.vocab_size as u32;
    let prompts: Vec<Vec<u32>> =
        (0..b).map(|r| (0..p).map(|i| (100 + 7919 * (i + 31 * r) as u32) % v).collect()).collect();

    // Prefill and decode timed apart, on the same code path as `generate`.
    let mut cache = KvCache::new(&model.config, b, p + n);
    let mut ws = DecodeWorkspace::new(&model.config, b, p, p + n);
    let ids: Vec<u32> = prompts.concat();
    let mut mask = vec![1u32; b * (p + n)];
    let t = Instant::now();
    let logits = model.step(&mut cache, &mut ws, &ids, &mask[..b * p])?;
    let vs = v as usize;
    let mut next: Vec<u32> = (0..b).map(|r| argmax(&logits[r * vs..(r + 1) * vs])).collect();
    let prefill = t.elapsed().as_secs_f64();
    profile::reset();
    profile::enable(true);
    let t = Instant::now();
    for step in 1..n {
        let total = p + step;
        mask[..b * total].fill(1);
        let logits = model.step(&mut cache, &mut ws, &next, &mask[..b * total])?;
        for (r, x) in next.iter_mut().enumerate() {
            *x = argmax(&logits[r * vs..(r + 1) * vs]);
        }
    }
    let decode = t.elapsed().as_secs_f64();
    profile::enable(false);
    println!(
        "batch {b}, prompt {p}, {n} new tokens: prefill {:.1} ms ({:.0} tokens/s), decode {:.1} tokens/s ({:.2} ms per step)",
        prefill * 1e3,
        (b * p) as f64 / prefill,
        (b * (n - 1)) as f64 / decode,
        decode * 1e3 / (n - 1).max(1) as f64
    );

    println!("per decode step (ms):");
    for (name, d, calls) in profile::report() {
        let steps = (n - 1).max(1);
        println!("  {name:<32} {:8.3}  ({} calls/step)", d.as_secs_f64() * 1e3 / steps as f64, calls / steps as u64);
    }

    let cfg = GenerationConfig { max_new_tokens: n, ..Default::default() };
    let t = Instant::now();
    let out = generate(&model, &prompts, &cfg, &mut |_, _| false)?;
    let all = t.elapsed().as_secs_f64();
    let made: usize = out.iter().map(Vec::len).sum();
    println!("generate(): {made} tokens in {:.2} s = {:.1} tokens/s (prefill included)", all, made as f64 / all);
    Ok(())
}
