//! Data-parallel training with ranks as threads (`dist::local::LocalGroup`, the same loop an MPI job runs): N ranks
//! with `gradient_accumulation_steps = G` give bitwise the weights and losses of one process with `N·G`, for an
//! encoder run end to end (`workflow::train`, dropout on, evaluation and checkpoints, a short last window) and a
//! LoRA decoder with adapter dropout; a run resumes from a checkpoint with another N.

use std::path::Path;
use std::sync::Arc;

use finetune_train::dist;
use finetune_train::dist::local::LocalGroup;
use finetune_train::workflow::{self, from_table, RunOptions};
use finetune_train::{CausalBatches, CausalLm, CausalRow, ProgressMode, Sampler, TrainOptions, TrainingArguments};
use serde_json::{json, Value};

/// Runs `f` on `n` threads, each one rank of a group (`n = 1`: one thread without a group, the reference).
fn on_ranks<T: Send>(n: usize, f: impl Fn() -> T + Sync) -> Vec<T> {
    if n == 1 {
        return vec![f()];
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = LocalGroup::new(n)
            .into_iter()
            .map(|g| {
                let f = &f;
                s.spawn(move || {
                    dist::install(Arc::new(g));
                    let out = f();
                    dist::uninstall();
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("rank thread")).collect()
    })
}

const WORDS: &[&str] = &["good", "great", "fine", "nice", "love", "bad", "awful", "hate", "boring", "dull"];

/// The tiny random BERT (dropout 0.1) with a WordPiece vocabulary, and 22 training / 6 validation sentences.
fn encoder_setup(root: &Path) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/tiny_bert");
    let dir = root.join("model");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture.join(f), dir.join(f)).expect("copy fixture");
    }
    let vocab: Vec<&str> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].iter().chain(WORDS).copied().collect();
    std::fs::write(dir.join("vocab.txt"), vocab.join("\n") + "\n").expect("vocab");
    for (name, n, offset) in [("train.csv", 22, 0), ("validation.csv", 6, 100)] {
        let mut s = String::from("text,label\n");
        for k in offset..offset + n {
            let pos = k % 2 == 0;
            let words: Vec<&str> =
                (0..2 + k % 5).map(|j| WORDS[(if pos { 0 } else { 5 }) + (k * 7 + j * 3) % 5]).collect();
            s.push_str(&format!("{},{}\n", words.join(" "), if pos { "pos" } else { "neg" }));
        }
        std::fs::write(root.join(name), s).expect("csv");
    }
}

/// `finetune train` on `ranks` ranks with `gas` micro-batches per rank, into `out`; returns the final weights.
fn train_encoder(root: &Path, out: &str, ranks: usize, gas: usize, resume: Option<&Path>) -> Vec<u8> {
    train_encoder_with(root, out, ranks, gas, resume, "")
}

/// [`train_encoder`] with more TOML lines.
fn train_encoder_with(root: &Path, out: &str, ranks: usize, gas: usize, resume: Option<&Path>, extra: &str) -> Vec<u8> {
    let mut text = format!(
        "model_name_or_path = {m:?}\ntrain_file = {tr:?}\nvalidation_file = {va:?}\noutput_dir = {o:?}\n\
         max_seq_length = 16\nper_device_train_batch_size = 3\nper_device_eval_batch_size = 4\nlearning_rate = 1e-3\n\
         num_train_epochs = 2\ngradient_accumulation_steps = {gas}\nlogging_steps = 1\nsave_steps = 1\n\
         eval_strategy = \"steps\"\neval_steps = 2\nsave_total_limit = 2\nseed = 7\n",
        m = root.join("model").display().to_string(),
        tr = root.join("train.csv").display().to_string(),
        va = root.join("validation.csv").display().to_string(),
        o = root.join(out).display().to_string(),
    );
    if let Some(r) = resume {
        text.push_str(&format!("resume_from_checkpoint = {:?}\n", r.display().to_string()));
    }
    text.push_str(extra);
    let table: toml::Table = text.parse().expect("toml");
    on_ranks(ranks, || {
        let (run, mut args) = from_table("test", table.clone()).expect("run config");
        args.finalize().expect("finalize");
        let opts = RunOptions { progress: ProgressMode::Off, print: false, on_evaluate: None };
        workflow::train(&run, &args, &opts).expect("train");
    });
    std::fs::read(root.join(out).join("model.safetensors")).expect("model written by rank 0")
}

fn log_history(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("trainer_state.json")).expect("trainer_state.json");
    serde_json::from_str::<Value>(&text).expect("json")["log_history"].clone()
}

/// Training losses, grad norms and eval losses logged per step (timings differ).
fn logged(dir: &Path) -> Vec<Value> {
    let keys = ["step", "loss", "grad_norm", "learning_rate", "eval_loss", "eval_accuracy", "train_loss"];
    let h = log_history(dir);
    h.as_array()
        .expect("log_history")
        .iter()
        .map(|e| keys.iter().filter_map(|k| Some((k.to_string(), e.get(*k)?.clone()))).collect())
        .collect()
}

#[test]
fn encoder_ranks_match_one_process_bitwise_and_resume_across_rank_counts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    encoder_setup(root);
    // 22 rows in micro-batches of 3: 8 per epoch, windows of 4 (two steps per epoch), the last micro-batch short.
    let one = train_encoder(root, "one", 1, 4, None);
    let two = train_encoder(root, "two", 2, 2, None);
    let four = train_encoder(root, "four", 4, 1, None);
    assert!(one == two, "2 ranks × 2 micro-batches differ from one process with 4");
    assert!(one == four, "4 ranks × 1 micro-batch differ from one process with 4");
    let reference = logged(&root.join("one"));
    assert!(reference.iter().filter(|e| e.get("loss").is_some()).count() == 4, "{reference:?}");
    assert_eq!(logged(&root.join("two")), reference);
    assert_eq!(logged(&root.join("four")), reference);

    // Windows of 3 micro-batches: 3 ranks, or one process — the last window of each epoch has 2 (one rank idle).
    let one3 = train_encoder(root, "one3", 1, 3, None);
    let three = train_encoder(root, "three", 3, 1, None);
    assert!(one3 == three, "3 ranks differ from one process with 3 micro-batches per step");
    assert!(one3 != one, "another window trains to other weights (the comparisons can fail)");

    // Checkpoint 1 of the 2-rank run, resumed on 4 ranks and on one process: both end at the same bits.
    let ckpt = root.join("two/checkpoint-3");
    assert!(ckpt.is_dir(), "the 2-rank run kept checkpoint-3");
    let resumed4 = train_encoder(root, "resumed4", 4, 1, Some(&ckpt));
    let resumed1 = train_encoder(root, "resumed1", 1, 4, Some(&ckpt));
    assert!(resumed4 == one, "resumed on 4 ranks from the 2-rank checkpoint: weights differ");
    assert!(resumed1 == one, "resumed on one process from the 2-rank checkpoint: weights differ");
}

/// The `data_parallel` record of a run's `train_end` event.
fn data_parallel(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("events.jsonl")).expect("events.jsonl");
    let ends: Vec<Value> = text.lines().map(|l| serde_json::from_str::<Value>(l).expect("event")).collect();
    let end = ends.iter().rev().find(|e| e["event"] == "train_end").expect("a train_end event");
    end["data_parallel"].clone()
}

#[test]
fn encoder_buckets_leave_during_the_backward_pass_and_the_sum_stays_bitwise() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    encoder_setup(root);
    let one = train_encoder(root, "one", 1, 4, None);
    // Buckets of about 2 KiB (a parameter or two each) and DDP's default of 25 MiB (here: the layers in one
    // bucket, sent when layer 0 is done, and the embeddings and head after the pass): the same bits either way.
    let small = train_encoder_with(root, "small", 2, 2, None, "ddp_bucket_cap_mb = 0.002\n");
    let large = train_encoder_with(root, "large", 4, 1, None, "");
    assert!(small == one, "2 ranks with small buckets differ from one process");
    assert!(large == one, "4 ranks with the default buckets differ from one process");
    let (ps, pl) = (data_parallel(&root.join("small")), data_parallel(&root.join("large")));
    assert!(ps["buckets"].as_u64().unwrap_or(0) > 4, "{ps}");
    assert_eq!(pl["buckets"], 2, "{pl}");
    // Two micro-batches per rank and step: the small buckets of both layers leave while the backward runs.
    let early = |p: &Value| p["buckets_sent_during_backward_per_step"].as_f64().unwrap_or(0.0);
    assert!(early(&ps) > 2.0 * 2.0, "{ps}");
    assert_eq!(early(&pl), 1.0, "{pl}");
}

/// Decoder rows of random tokens with the first third of each masked from the loss (a prompt).
fn rows(n: usize, vocab: u32) -> Vec<CausalRow> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..n)
        .map(|i| {
            let len = 5 + (i * 7) % 11;
            let ids: Vec<u32> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % vocab as u64) as u32
                })
                .collect();
            let labels = ids.iter().enumerate().map(|(j, &t)| if j < len / 3 { -100 } else { t as i64 }).collect();
            CausalRow { input_ids: ids, labels, position_ids: None }
        })
        .collect()
}

/// LoRA (r 4, dropout 0.2) on the tiny Llama, `ranks × gas` micro-batches of 2 rows per step; every rank's
/// final parameters.
fn train_lora(out: &Path, ranks: usize, gas: usize) -> Vec<Vec<f32>> {
    train_lora_with(out, ranks, gas, None)
}

/// [`train_lora`] with a gradient bucket size.
fn train_lora_with(out: &Path, ranks: usize, gas: usize, ddp_bucket_cap_mb: Option<f64>) -> Vec<Vec<f32>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/tiny_llama");
    let data = rows(14, 64);
    let lengths: Vec<usize> = data.iter().map(|r| r.input_ids.len()).collect();
    on_ranks(ranks, || {
        let mut args = TrainingArguments {
            output_dir: out.display().to_string(),
            per_device_train_batch_size: 2,
            gradient_accumulation_steps: gas,
            num_train_epochs: 2.0,
            learning_rate: 5e-3,
            logging_steps: 1.0,
            save_strategy: finetune_train::SaveStrategy::No,
            seed: 3,
            ddp_bucket_cap_mb,
            ..Default::default()
        };
        args.finalize().expect("finalize");
        let mut model = CausalLm::from_pretrained(&dir.display().to_string(), args.adamw()).expect("tiny llama");
        let lora = json!({"r": 4, "lora_alpha": 8, "lora_dropout": 0.2, "target_modules": ["q_proj", "v_proj"]});
        let cfg = serde_json::from_value(lora).expect("LoRA config");
        model.model.store_mut().add_lora(&cfg, args.seed).expect("add LoRA");
        let source = CausalBatches {
            rows: &data,
            sampler: Sampler::from_args(&args, data.len(), Some(lengths.clone())),
            pad_id: 0,
        };
        let opts = TrainOptions { progress: ProgressMode::Off, ..Default::default() };
        finetune_train::train(&args, &mut model, &source, None::<&mut dyn finetune_train::Evaluator<CausalLm>>, &opts)
            .expect("train");
        model.model.store().params.clone()
    })
}

#[test]
fn lora_decoder_ranks_match_one_process_bitwise() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let one = train_lora(&tmp.path().join("one"), 1, 2);
    let two = train_lora(&tmp.path().join("two"), 2, 1);
    let base = train_lora(&tmp.path().join("base"), 1, 1);
    assert_eq!(two.len(), 2);
    for (r, p) in two.iter().enumerate() {
        assert!(p == &one[0], "rank {r} of 2 differs from one process with 2 micro-batches per step");
    }
    let (one3, three) = (train_lora(&tmp.path().join("one3"), 1, 3), train_lora(&tmp.path().join("three"), 3, 1));
    for (r, p) in three.iter().enumerate() {
        assert!(p == &one3[0], "rank {r} of 3 differs from one process with 3 micro-batches per step");
    }
    // The check can fail: a different window (1 micro-batch per step) trains to other weights.
    assert!(base[0] != one[0]);
    let h = |d: &str| logged(&tmp.path().join(d));
    assert_eq!(h("two"), h("one"));
    // Adapter buckets of one or two matrices, leaving as each layer's backward ends.
    let small = train_lora_with(&tmp.path().join("small"), 2, 1, Some(0.0002));
    for (r, p) in small.iter().enumerate() {
        assert!(p == &one[0], "rank {r} of 2 with small buckets differs from one process");
    }
    let dp = data_parallel(&tmp.path().join("small"));
    assert!(dp["buckets_sent_during_backward_per_step"].as_f64().unwrap_or(0.0) > 0.0, "{dp}");
}

#[test]
fn local_group_collectives() {
    let out = on_ranks(3, || {
        let w = dist::world().expect("a world of 3");
        let (r, n) = (w.rank(), w.size());
        let gathered = w.all_gather_f64(&[r as f64, 10.0 + r as f64]);
        // Rank r sends k + 1 values to rank k: each value names its sender and receiver.
        let send_counts: Vec<usize> = (0..n).map(|k| k + 1).collect();
        let send: Vec<f32> = (0..n).flat_map(|k| std::iter::repeat_n((10 * r + k) as f32, k + 1)).collect();
        let recv_counts = vec![r + 1; n];
        let mut recv = vec![0.0; (r + 1) * n];
        w.all_to_all_v(&send, &send_counts, &mut recv, &recv_counts);
        let mut bytes = if r == 0 { b"rank0".to_vec() } else { Vec::new() };
        w.broadcast_bytes(&mut bytes);
        (gathered, recv, bytes, dist::is_writer())
    });
    for (r, (gathered, recv, bytes, writer)) in out.into_iter().enumerate() {
        assert_eq!(gathered, vec![0.0, 10.0, 1.0, 11.0, 2.0, 12.0]);
        let want: Vec<f32> = (0..3).flat_map(|k| std::iter::repeat_n((10 * k + r) as f32, r + 1)).collect();
        assert_eq!(recv, want, "rank {r}");
        assert_eq!(bytes, b"rank0");
        assert_eq!(writer, r == 0);
    }
}
