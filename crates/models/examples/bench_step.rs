//! Times one fine-tuning step of a MiniLM-shaped BERT (all-MiniLM-L6-v2 dimensions, random weights) on CPU:
//! forward only (eval, no dropout) and a full train step (forward with dropout + cross-entropy + backward +
//! gradient clipping + AdamW), median over timed steps after warm-up, with a per-kernel breakdown and peak RSS.
//!
//! cargo run --release -p finetune-models --example bench_step -- [--batch 16] [--seq 128] [--steps 10]
//!     [--warmup 2] [--threads 2] [--layers 6] [--bf16] [--forward-only]
//!
//! `--bf16` runs the linear layers' matmuls in bfloat16 with f32 accumulation (`bf16 = true`) on the kernel
//! `FINETUNE_BF16_KERNEL` names or the best one the CPU has.

use std::time::Instant;

use finetune_engine::bf16::linear::SharedWeights;
use finetune_engine::bf16::Kernel;
use finetune_engine::kernels::adamw::Hyper;
use finetune_engine::profile;
use finetune_models::bert::{Batch, BertConfig, BertForSequenceClassification, Labels, Mode, Workspace};

mod common;
use common::{arg, cpu_ms, flag, median, peak_rss_mib};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (b, t) = (arg(&args, "--batch", 16), arg(&args, "--seq", 128));
    let steps = arg(&args, "--steps", 10).max(1);
    let warmup = arg(&args, "--warmup", 2);
    let threads = arg(&args, "--threads", 2);
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global()?;

    let layers = arg(&args, "--layers", 6);
    // all-MiniLM-L6-v2's shape with a 2-label classification head.
    let cfg = BertConfig::from_json(&format!(
        r#"{{"model_type": "bert", "vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": {layers},
            "num_attention_heads": 12, "intermediate_size": 1536, "max_position_embeddings": 512,
            "type_vocab_size": 2, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
            "layer_norm_eps": 1e-12, "num_labels": 2}}"#
    ))?;
    let mut model = BertForSequenceClassification::random(cfg.clone(), 0)?;
    let bf16 = flag(&args, "--bf16");
    let kernel = if bf16 { Kernel::active()? } else { Kernel::F32 };
    let mut ws = Workspace::new(&cfg, b, t).with_bf16(bf16.then(SharedWeights::new));
    let ids: Vec<u32> = (0..b * t).map(|i| 1000 + (i as u32 * 7919) % 29000).collect();
    let mask = vec![1u32; b * t];
    let tt = vec![0u32; b * t];
    let labels: Vec<i64> = (0..b as i64).map(|i| i % 2).collect();
    let batch = Batch {
        input_ids: &ids,
        attention_mask: &mask,
        token_type_ids: Some(&tt),
        labels: Some(Labels::Classes(&labels)),
    };
    let hyper = Hyper { lr: 2e-5, weight_decay: 0.01, ..Hyper::default() };

    // The forward pass as evaluation and prediction run it: on a forward-only workspace.
    let mut fws = Workspace::for_inference(&cfg, b, t).with_bf16(bf16.then(SharedWeights::new));
    let mut fwd = Vec::new();
    for i in 0..warmup + steps {
        if i == warmup {
            profile::reset();
            profile::enable(true);
        }
        let s = Instant::now();
        model.forward(&mut fws, &batch, Mode::Eval)?;
        if i >= warmup {
            fwd.push(s.elapsed().as_secs_f64() * 1e3);
        }
    }
    profile::enable(false);
    let fwd_profile = profile::report();
    let fwd_total = fwd.iter().sum::<f64>() / steps as f64;
    if flag(&args, "--forward-only") {
        println!("ours forward_ms {:.1}", median(&mut fwd));
        println!("ours forward_min_ms {:.1}", fwd[0]);
        for (name, d, calls) in fwd_profile {
            println!(
                "  {name:<24} {:>8.2}  ({} calls/pass)",
                d.as_secs_f64() * 1e3 / steps as f64,
                calls / steps as u64
            );
        }
        return Ok(());
    }

    let mut step_times = Vec::new();
    let mut loss = 0.0;
    let mut cpu_start = 0.0;
    for i in 0..warmup + steps {
        if i == warmup {
            profile::reset();
            profile::enable(true);
            cpu_start = cpu_ms();
        }
        let s = Instant::now();
        loss = model.forward(&mut ws, &batch, Mode::Train { seed: i as u64 })?.unwrap_or(f32::NAN);
        model.backward(&mut ws, &batch)?;
        // As the trainer: clipping, AdamW and zero_grad in one call.
        model.store.optimizer_step(1.0, hyper);
        if i >= warmup {
            step_times.push(s.elapsed().as_secs_f64() * 1e3);
        }
    }
    profile::enable(false);
    let cpu_per_step = (cpu_ms() - cpu_start) / steps as f64;

    let params = model.store.params.len();
    println!(
        "model: MiniLM-shaped BERT, {} layers, {params} parameters; batch {b} x {t}; {threads} threads",
        cfg.num_hidden_layers
    );
    println!("ours precision {} kernel {}", if bf16 { "bf16" } else { "f32" }, kernel.name());
    println!("ours forward_ms {:.1}", median(&mut fwd));
    println!("ours step_ms {:.1}", median(&mut step_times));
    println!("ours forward_min_ms {:.1}", fwd[0]);
    println!("ours step_min_ms {:.1}", step_times[0]);
    println!("ours step_cpu_ms {cpu_per_step:.1}");
    println!("ours last_loss {loss:.4}");
    println!("ours peak_rss_mib {:.0}", peak_rss_mib());
    println!("per-kernel time per train step (ms; pooler includes its own linear):");
    let total: f64 = step_times.iter().sum::<f64>() / steps as f64;
    let mut accounted = 0.0;
    for (name, d, calls) in profile::report() {
        let ms = d.as_secs_f64() * 1e3 / steps as f64;
        if name != "pooler.forward" && name != "pooler.backward" {
            accounted += ms;
        }
        println!("  {name:<24} {ms:8.2}  ({} calls/step)", calls / steps as u64);
    }
    println!("  {:<24} {:8.2}", "other (copies, glue)", total - accounted);
    println!("per-kernel time per forward pass (eval):");
    let mut accounted = 0.0;
    for (name, d, calls) in fwd_profile {
        let ms = d.as_secs_f64() * 1e3 / steps as f64;
        if name != "pooler.forward" {
            accounted += ms;
        }
        println!("  {name:<24} {ms:8.2}  ({} calls/pass)", calls / steps as u64);
    }
    println!("  {:<24} {:8.2}", "other (copies, glue)", fwd_total - accounted);
    Ok(())
}
