//! Times the real SmolLM2-135M-Instruct (loaded from its GGUF file, dequantised to f32) on CPU: the causal-LM
//! loss forward and a full fine-tuning step (forward + backward + gradient clipping + AdamW over every
//! parameter), median over timed steps after warm-up, with a per-kernel breakdown and peak RSS. The PyTorch
//! side is scripts/bench/decoder_torch.py; scripts/bench/decoder.sh runs both.
//!
//! cargo run --release -p finetune-models --example bench_decoder -- [--batch 4] [--seq 256] [--steps 5]
//!     [--warmup 1] [--threads 2] [--gguf PATH] [--lora] [--generate] [--new-tokens 128] [--bf16]
//!
//! `--lora-only` trains LoRA only (no forward, full steps or generation before it) and prints its peak RSS.
//! `--bf16` runs the forward passes and steps with `bf16 = true` (generation stays f32; `--generate` also times
//! generation from int8 weight copies, `--int8`). `--lora` times a PEFT-style LoRA step (r 16, alpha 32, all linears) and `--generate` greedy generation with the
//! KV cache (tokens/s); both as decoder_torch.py measures them.

use std::time::Instant;

use finetune_engine::bf16::linear::SharedWeights;
use finetune_engine::bf16::Kernel;
use finetune_engine::kernels::adamw::Hyper;
use finetune_engine::profile;
use finetune_models::decoder::Architecture;
use finetune_models::generate::{generate, GenerationConfig};
use finetune_models::gguf::load_llama;
use finetune_models::llama::{Batch, LlamaConfig, LlamaForCausalLM, Workspace};
use finetune_models::lora::{LoraConfig, TargetModules};

mod common;
use common::{arg, cpu_ms, flag, median, peak_rss_mib};

const DEFAULT_GGUF: &str = "assets/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (b, t) = (arg(&args, "--batch", 4), arg(&args, "--seq", 256));
    let steps = arg(&args, "--steps", 5).max(1);
    let warmup = arg(&args, "--warmup", 1);
    let threads = arg(&args, "--threads", 2);
    let new_tokens = arg(&args, "--new-tokens", 128);
    let path = args
        .iter()
        .position(|a| a == "--gguf")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| DEFAULT_GGUF.to_owned());
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global()?;

    let start = Instant::now();
    let m = load_llama(&path)?;
    let cfg = LlamaConfig::from_json(&m.config.to_string())?;
    let mut model = LlamaForCausalLM::from_state_dict(cfg.clone(), &m.state)?;
    drop(m);
    let load_s = start.elapsed().as_secs_f64();

    let mut ws = Workspace::new(&cfg, b, t);
    // --bf16: the linear layers in bf16 with f32 accumulation (`bf16 = true`); weights and AdamW stay f32.
    let bf16 = flag(&args, "--bf16");
    if bf16 {
        ws.lm.bf16 = Some(SharedWeights::new());
    }
    // The same deterministic token pattern as decoder_torch.py; labels = input_ids (all positions scored).
    let ids: Vec<u32> = (0..b * t).map(|i| 1000 + (i as u32 * 7919) % 29000).collect();
    let mask = vec![1u32; b * t];
    let labels: Vec<i64> = ids.iter().map(|&x| i64::from(x)).collect();
    let batch = Batch {
        input_ids: &ids,
        attention_mask: &mask,
        labels: Some(&labels),
        loss_normalizer: None,
        position_ids: None,
    };
    let hyper = Hyper { lr: 2e-5, weight_decay: 0.01, ..Hyper::default() };
    if flag(&args, "--lora-only") {
        // A process that only trains LoRA (as a LoRA SFT run does): its peak memory, nothing else before it.
        let mut r = lora_steps(&mut model, &mut ws, &batch, hyper, warmup, steps)?;
        println!("ours batch {b} x {t}, {}", if bf16 { "bf16 = true" } else { "f32" });
        println!("ours lora_step_ms {:.1}", median(&mut r.times));
        println!("ours lora_trainable_params {}", r.trainable);
        println!("ours peak_rss_lora_mib {:.0}", peak_rss_mib());
        print_profile("per-kernel time per LoRA step (ms):", &r.times, steps);
        return Ok(());
    }

    let mut fwd = Vec::new();
    let mut first_loss = f32::NAN;
    for i in 0..warmup + steps {
        let s = Instant::now();
        let loss = model.forward(&mut ws, &batch)?;
        if i == 0 {
            first_loss = loss;
        }
        if i >= warmup {
            fwd.push(s.elapsed().as_secs_f64() * 1e3);
        }
    }

    let mut step_times = Vec::new();
    let mut loss = f32::NAN;
    let mut cpu_start = 0.0;
    for i in 0..warmup + steps {
        if i == warmup {
            profile::reset();
            profile::enable(true);
            cpu_start = cpu_ms();
        }
        let s = Instant::now();
        loss = model.forward_backward(&mut ws, &batch)?;
        // As the trainer: clipping, AdamW and zero_grad in one call.
        model.store.optimizer_step(1.0, hyper);
        if i >= warmup {
            step_times.push(s.elapsed().as_secs_f64() * 1e3);
        }
    }
    profile::enable(false);
    let cpu_per_step = (cpu_ms() - cpu_start) / steps as f64;
    let rss_full = peak_rss_mib();

    let params: usize = model.store.param_infos().iter().map(|i| i.len()).sum();
    println!(
        "model: SmolLM2-135M-Instruct from {path} ({}), {} layers, {params} parameters; batch {b} x {t}; \
         {threads} threads; loaded in {load_s:.1} s",
        if bf16 { format!("bf16 = true, {} kernel", Kernel::current().name()) } else { "f32".into() },
        cfg.num_hidden_layers
    );
    println!("ours forward_ms {:.1}", median(&mut fwd));
    println!("ours step_ms {:.1}", median(&mut step_times));
    println!("ours forward_min_ms {:.1}", fwd[0]);
    println!("ours step_min_ms {:.1}", step_times[0]);
    println!("ours step_cpu_ms {cpu_per_step:.1}");
    println!("ours first_loss {first_loss:.4}");
    println!("ours last_loss {loss:.4}");
    println!("ours peak_rss_full_mib {rss_full:.0}");
    if flag(&args, "--generate") {
        // Greedy generation with the KV cache from the original weights, one sequence, 32-token prompt (as
        // decoder_torch.py); the EOS is not a stop token so exactly `new_tokens` are produced.
        let m = load_llama(&path)?;
        let fresh = LlamaForCausalLM::from_state_dict(cfg.clone(), &m.state)?;
        drop(m);
        let prompt = vec![ids[..32.min(t)].to_vec()];
        let gcfg = GenerationConfig { max_new_tokens: new_tokens, eos_token_id: vec![], ..GenerationConfig::default() };
        let mut rates = Vec::new();
        for i in 0..2 {
            let s = Instant::now();
            let out = generate(&fresh, &prompt, &gcfg, &mut |_, _| false)?;
            if i >= 1 {
                rates.push(out[0].len() as f64 / s.elapsed().as_secs_f64());
            }
        }
        println!("ours gen_tokens_per_s {:.1}", median(&mut rates));
        // The same from int8 copies of the weights (`--int8`), and how long its greedy tokens stay those of
        // the f32 weights.
        let f32_tokens = generate(&fresh, &prompt, &gcfg, &mut |_, _| false)?;
        let mut q = fresh;
        let bytes = finetune_models::decoder::quantize_int8(&mut q)?;
        let mut rates = Vec::new();
        let mut int8_tokens = Vec::new();
        for i in 0..2 {
            let s = Instant::now();
            let out = generate(&q, &prompt, &gcfg, &mut |_, _| false)?;
            if i >= 1 {
                rates.push(out[0].len() as f64 / s.elapsed().as_secs_f64());
            }
            int8_tokens = out;
        }
        let same = f32_tokens[0].iter().zip(&int8_tokens[0]).take_while(|(a, b)| a == b).count();
        println!("ours gen_int8_tokens_per_s {:.1}", median(&mut rates));
        println!("ours gen_int8_kernel {}", finetune_engine::int8::kernel_name());
        println!("ours gen_int8_weight_mib {:.0}", bytes as f64 / (1 << 20) as f64);
        println!("ours gen_int8_same_greedy_tokens {same}/{}", f32_tokens[0].len());
    }
    if flag(&args, "--lora") {
        // PEFT-equivalent LoRA on the full-step model.
        let mut r = lora_steps(&mut model, &mut ws, &batch, hyper, warmup, steps)?;
        println!("ours lora_step_ms {:.1}", median(&mut r.times));
        println!("ours lora_step_cpu_ms {:.1}", r.cpu_ms);
        println!("ours lora_trainable_params {}", r.trainable);
        println!("ours lora_last_loss {:.4}", r.loss);
    }
    println!("ours peak_rss_mib {:.0}", peak_rss_mib());
    print_profile("per-kernel time per full step (ms):", &step_times, steps);
    Ok(())
}

/// The per-kernel profile of the last timed steps (`times`, one per step).
fn print_profile(title: &str, times: &[f64], steps: usize) {
    println!("{title}");
    let total: f64 = times.iter().sum::<f64>() / steps as f64;
    let mut accounted = 0.0;
    for (name, d, calls) in profile::report() {
        let ms = d.as_secs_f64() * 1e3 / steps as f64;
        accounted += ms;
        println!("  {name:<24} {ms:8.2}  ({} calls/step)", calls / steps as u64);
    }
    // The backward's matmuls (activation and weight gradients) have no profile scope of their own.
    println!("  {:<24} {:8.2}", "unprofiled (backward matmuls, copies)", total - accounted);
}

/// What [`lora_steps`] measured: the timed steps' times, CPU ms per step, the last loss, trainable parameters.
struct LoraRun {
    times: Vec<f64>,
    cpu_ms: f64,
    loss: f32,
    trainable: usize,
}

/// PEFT-equivalent LoRA (r 16, alpha 32, dropout 0, all seven linears) added to `model`, then `warmup + steps`
/// AdamW steps.
fn lora_steps(
    model: &mut LlamaForCausalLM,
    ws: &mut Workspace,
    batch: &Batch<'_>,
    hyper: Hyper,
    warmup: usize,
    steps: usize,
) -> Result<LoraRun, Box<dyn std::error::Error>> {
    let lcfg = LoraConfig {
        r: 16,
        lora_alpha: 32.0,
        target_modules: TargetModules::Str("all-linear".into()),
        ..LoraConfig::default()
    };
    model.store.add_lora(&lcfg, 0)?;
    let trainable: usize = model.store.param_infos().iter().filter(|i| i.requires_grad).map(|i| i.len()).sum();
    let (mut times, mut loss) = (Vec::new(), f32::NAN);
    let c0 = cpu_ms();
    for i in 0..warmup + steps {
        if i == warmup {
            profile::reset();
            profile::enable(true);
        }
        let s = Instant::now();
        loss = model.forward_backward(ws, batch)?;
        // As the trainer: clipping, AdamW and zero_grad in one call.
        model.store.optimizer_step(1.0, hyper);
        if i >= warmup {
            times.push(s.elapsed().as_secs_f64() * 1e3);
        }
    }
    profile::enable(false);
    Ok(LoraRun { times, cpu_ms: (cpu_ms() - c0) / (warmup + steps) as f64, loss, trainable })
}
