//! The training loop against a small exact model: logistic regression with its own gradient and AdamW in f64.

use std::collections::BTreeMap;
use std::path::Path;

use finetune_train::{
    train, Batch, BatchSource, EvalOutput, IntervalStrategy, ProgressMode, Resume, Sampler, SaveStrategy, TrainError,
    TrainOptions, TrainOutput, TrainableModel, TrainerState, TrainingArguments,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

const DIM: usize = 4;

#[derive(Clone)]
struct Examples(Vec<([f64; DIM], f64)>);

impl Batch for Examples {
    fn num_items(&self) -> usize {
        self.0.len()
    }
    fn num_examples(&self) -> usize {
        self.0.len()
    }
}

/// Linearly separable-ish synthetic data from a fixed true weight vector.
fn dataset(n: usize, seed: u64) -> Vec<([f64; DIM], f64)> {
    let mut rng = finetune_data::Rng::new(seed);
    let mut u = move || (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
    let w = [1.5, -2.0, 0.5, 1.0];
    (0..n)
        .map(|_| {
            let x = [u(), u(), u(), u()];
            let z: f64 = x.iter().zip(w).map(|(a, b)| a * b).sum::<f64>() + 0.3 * u();
            (x, if z > 0.0 { 1.0 } else { 0.0 })
        })
        .collect()
}

struct Source {
    data: Vec<([f64; DIM], f64)>,
    sampler: Sampler,
}

impl Source {
    fn new(n: usize, batch: usize, seed: u64) -> Self {
        Source { data: dataset(n, 7), sampler: Sampler::new(n, batch, seed) }
    }
}

impl BatchSource for Source {
    type Batch = Examples;
    fn num_examples(&self) -> usize {
        self.data.len()
    }
    fn num_batches(&self) -> usize {
        self.sampler.num_batches()
    }
    fn epoch_batches(&self, epoch: u64, skip: usize) -> Box<dyn Iterator<Item = Examples> + '_> {
        let batches = self.sampler.epoch_batches(epoch);
        Box::new(batches.into_iter().skip(skip).map(|idx| Examples(idx.iter().map(|&i| self.data[i]).collect())))
    }
}

#[derive(Clone, Serialize, Deserialize, PartialEq, Debug)]
struct Adam {
    m: Vec<f64>,
    v: Vec<f64>,
    t: u64,
}

/// Logistic regression: params = weights + bias, loss = binary cross-entropy with logits.
struct LogReg {
    p: Vec<f64>,
    g: Vec<f64>,
    adam: Adam,
    wd: f64,
    betas: (f64, f64),
    eps: f64,
    /// Makes the n-th `train_batch` call return NaN (counted from construction).
    nan_at_call: Option<usize>,
    calls: usize,
}

impl LogReg {
    fn new(args: &TrainingArguments) -> Self {
        LogReg {
            p: vec![0.1, -0.1, 0.05, 0.0, 0.0],
            g: vec![0.0; DIM + 1],
            adam: Adam { m: vec![0.0; DIM + 1], v: vec![0.0; DIM + 1], t: 0 },
            wd: args.weight_decay,
            betas: (args.adam_beta1, args.adam_beta2),
            eps: args.adam_epsilon,
            nan_at_call: None,
            calls: 0,
        }
    }

    fn logit(&self, x: &[f64; DIM]) -> f64 {
        x.iter().zip(&self.p).map(|(a, b)| a * b).sum::<f64>() + self.p[DIM]
    }

    fn mean_loss(&self, data: &[([f64; DIM], f64)]) -> f64 {
        data.iter().map(|(x, y)| bce(self.logit(x), *y)).sum::<f64>() / data.len() as f64
    }
}

fn bce(z: f64, y: f64) -> f64 {
    z.max(0.0) - z * y + (-z.abs()).exp().ln_1p()
}

fn io(e: std::io::Error) -> TrainError {
    TrainError::Model(e.to_string())
}

impl TrainableModel for LogReg {
    type Batch = Examples;

    fn train_batch(&mut self, batch: &Examples, num_items_in_window: usize) -> finetune_train::Result<f64> {
        self.calls += 1;
        if self.nan_at_call == Some(self.calls) {
            return Ok(f64::NAN);
        }
        let n = num_items_in_window as f64;
        let mut loss = 0.0;
        // Per-example accumulation into the gradient buffer: splitting a window into micro-batches then adds
        // the same terms in the same order.
        for (x, y) in &batch.0 {
            let z = self.logit(x);
            loss += bce(z, *y);
            let d = (1.0 / (1.0 + (-z).exp()) - y) / n;
            for (g, xj) in self.g.iter_mut().zip(x) {
                *g += d * xj;
            }
            self.g[DIM] += d;
        }
        Ok(loss / n)
    }

    fn clip_and_step(&mut self, lr: f64, max_grad_norm: f64) -> finetune_train::Result<f64> {
        let norm = self.g.iter().map(|g| g * g).sum::<f64>().sqrt();
        if max_grad_norm > 0.0 {
            // torch.nn.utils.clip_grad_norm_
            let coef = (max_grad_norm / (norm + 1e-6)).min(1.0);
            self.g.iter_mut().for_each(|g| *g *= coef);
        }
        // torch.optim.AdamW
        let a = &mut self.adam;
        a.t += 1;
        let (b1, b2) = self.betas;
        let bc1 = 1.0 - b1.powi(a.t as i32);
        let bc2 = 1.0 - b2.powi(a.t as i32);
        for i in 0..self.p.len() {
            self.p[i] *= 1.0 - lr * self.wd;
            a.m[i] = b1 * a.m[i] + (1.0 - b1) * self.g[i];
            a.v[i] = b2 * a.v[i] + (1.0 - b2) * self.g[i] * self.g[i];
            let denom = a.v[i].sqrt() / bc2.sqrt() + self.eps;
            self.p[i] -= lr / bc1 * a.m[i] / denom;
            self.g[i] = 0.0;
        }
        Ok(norm)
    }

    fn save_model(&self, dir: &Path) -> finetune_train::Result<()> {
        std::fs::write(dir.join("model.json"), serde_json::to_string(&self.p).unwrap()).map_err(io)
    }
    fn load_model(&mut self, dir: &Path) -> finetune_train::Result<()> {
        let t = std::fs::read_to_string(dir.join("model.json")).map_err(io)?;
        self.p = serde_json::from_str(&t).map_err(|e| TrainError::Model(e.to_string()))?;
        Ok(())
    }
    fn save_training_state(&self, dir: &Path) -> finetune_train::Result<()> {
        std::fs::write(dir.join("optimizer.json"), serde_json::to_string(&self.adam).unwrap()).map_err(io)
    }
    fn load_training_state(&mut self, dir: &Path) -> finetune_train::Result<()> {
        let t = std::fs::read_to_string(dir.join("optimizer.json")).map_err(io)?;
        self.adam = serde_json::from_str(&t).map_err(|e| TrainError::Model(e.to_string()))?;
        Ok(())
    }
}

fn eval_data() -> Vec<([f64; DIM], f64)> {
    dataset(64, 99)
}

/// Evaluator returning eval loss and accuracy on a fixed set.
fn evaluator(data: Vec<([f64; DIM], f64)>) -> impl FnMut(&mut LogReg) -> finetune_train::Result<EvalOutput> {
    move |m: &mut LogReg| {
        let correct = data.iter().filter(|(x, y)| (m.logit(x) > 0.0) == (*y == 1.0)).count();
        let mut metrics = BTreeMap::new();
        metrics.insert("loss".into(), m.mean_loss(&data));
        metrics.insert("accuracy".into(), correct as f64 / data.len() as f64);
        Ok(EvalOutput { metrics, num_samples: data.len(), num_batches: data.len().div_ceil(8) })
    }
}

fn args_in(dir: &Path, f: impl FnOnce(&mut TrainingArguments)) -> TrainingArguments {
    let mut a = TrainingArguments {
        output_dir: dir.display().to_string(),
        learning_rate: 0.05,
        per_device_train_batch_size: 8,
        num_train_epochs: 4.0,
        logging_steps: 2.0,
        save_steps: 4.0,
        ..Default::default()
    };
    f(&mut a);
    a.finalize().unwrap();
    a
}

fn run(
    args: &TrainingArguments,
    model: &mut LogReg,
    src: &Source,
    eval: bool,
    resume: Option<Resume>,
) -> finetune_train::Result<TrainOutput> {
    let opts = TrainOptions { resume, progress: ProgressMode::Off, ..Default::default() };
    if eval {
        let mut ev = evaluator(eval_data());
        train(args, model, src, Some(&mut ev), &opts)
    } else {
        train::<_, _, fn(&mut LogReg) -> finetune_train::Result<EvalOutput>>(args, model, src, None, &opts)
    }
}

fn checkpoint_names(dir: &Path) -> Vec<String> {
    finetune_train::sorted_checkpoints(dir)
        .unwrap()
        .into_iter()
        .map(|(_, p)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// log_history without wall-clock keys.
fn deterministic_history(state: &TrainerState) -> Vec<BTreeMap<String, Value>> {
    state
        .log_history
        .iter()
        .map(|e| {
            e.iter()
                .filter(|(k, _)| !k.ends_with("_runtime") && !k.ends_with("_per_second"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .collect()
}

#[test]
fn loss_decreases_and_files_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let args = args_in(dir.path(), |a| a.eval_strategy = IntervalStrategy::Epoch);
    let src = Source::new(100, 8, 42);
    let mut m = LogReg::new(&args);
    let before = m.mean_loss(&src.data);
    let out = run(&args, &mut m, &src, true, None).unwrap();
    let after = m.mean_loss(&src.data);
    assert!(after < 0.6 * before, "{before} -> {after}");

    // 100 examples / 8 = 13 batches per epoch, 4 epochs = 52 steps.
    assert_eq!(out.global_step, 52);
    assert_eq!(out.state.max_steps, 52);
    let losses: Vec<f64> = out.state.log_history.iter().filter_map(|e| e.get("loss").and_then(Value::as_f64)).collect();
    assert_eq!(losses.len(), 26);
    assert!(losses.last().unwrap() < &losses[0]);
    let first = &out.state.log_history[0];
    for k in ["loss", "grad_norm", "learning_rate", "epoch", "step"] {
        assert!(first.contains_key(k), "{k} missing in {first:?}");
    }
    assert_eq!(first["step"], 2);
    assert_eq!(first["epoch"].as_f64().unwrap(), 2.0 / 13.0);
    // LR of step 2 (0-based index 1) under linear decay without warmup.
    assert_eq!(first["learning_rate"].as_f64().unwrap(), 0.05 * (51.0 / 52.0));
    let evals: Vec<_> = out.state.log_history.iter().filter(|e| e.contains_key("eval_loss")).collect();
    assert_eq!(evals.len(), 5, "one per epoch plus the final evaluation");
    assert_eq!(evals[0]["epoch"].as_f64().unwrap(), 1.0);
    assert!(evals[0].contains_key("eval_accuracy") && evals[0].contains_key("eval_runtime"));

    // Checkpoints every 4 steps plus the last step; no limit.
    let names = checkpoint_names(dir.path());
    assert_eq!(names.len(), 13, "{names:?}");
    assert_eq!(names.last().unwrap(), "checkpoint-52");
    let ck = dir.path().join("checkpoint-8");
    for f in ["trainer_state.json", "model.json", "optimizer.json", "scheduler.json", "rng_state.json"] {
        assert!(ck.join(f).is_file(), "{f}");
    }
    let st: Value = serde_json::from_str(&std::fs::read_to_string(ck.join("trainer_state.json")).unwrap()).unwrap();
    for k in [
        "best_global_step",
        "best_metric",
        "best_model_checkpoint",
        "epoch",
        "eval_steps",
        "global_step",
        "is_hyper_param_search",
        "is_local_process_zero",
        "is_world_process_zero",
        "log_history",
        "logging_steps",
        "max_steps",
        "num_input_tokens_seen",
        "num_train_epochs",
        "save_steps",
        "stateful_callbacks",
        "total_flos",
        "train_batch_size",
        "trial_name",
        "trial_params",
    ] {
        assert!(st.get(k).is_some(), "trainer_state.json lacks {k}");
    }
    assert_eq!(st["global_step"], 8);
    assert!(!dir.path().join("checkpoint-8.tmp").exists());

    let tr: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("train_results.json")).unwrap()).unwrap();
    for k in ["train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss", "epoch"] {
        assert!(tr.get(k).is_some(), "train_results.json lacks {k}");
    }
    assert_eq!(tr["train_loss"].as_f64().unwrap(), out.training_loss);
    // train_loss is the mean of the logged step losses (every log covers 2 steps).
    let mean: f64 = losses.iter().sum::<f64>() / losses.len() as f64;
    assert!((out.training_loss - mean).abs() < 1e-12);
    let all: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("all_results.json")).unwrap()).unwrap();
    assert!(all.get("eval_loss").is_some() && all.get("train_loss").is_some());
    assert!(dir.path().join("eval_results.json").is_file());
    let events = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
    assert!(events.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()));
    assert!(events.contains("\"event\":\"train_begin\"") && events.contains("\"event\":\"train_end\""));
}

#[test]
fn gradient_accumulation_2x4_equals_1x8() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let a1 = args_in(d1.path(), |a| {
        a.per_device_train_batch_size = 8;
        a.save_strategy = SaveStrategy::No;
        a.max_grad_norm = 0.5;
        a.weight_decay = 0.01;
    });
    let a2 = args_in(d2.path(), |a| {
        a.per_device_train_batch_size = 4;
        a.gradient_accumulation_steps = 2;
        a.save_strategy = SaveStrategy::No;
        a.max_grad_norm = 0.5;
        a.weight_decay = 0.01;
    });
    // 96 examples: 12 batches of 8, or 24 of 4 (the windows hold the same examples in the same order).
    let (s1, s2) = (Source::new(96, 8, 3), Source::new(96, 4, 3));
    let (mut m1, mut m2) = (LogReg::new(&a1), LogReg::new(&a2));
    let o1 = run(&a1, &mut m1, &s1, false, None).unwrap();
    let o2 = run(&a2, &mut m2, &s2, false, None).unwrap();
    assert_eq!(o1.global_step, o2.global_step);
    assert_eq!(m1.p, m2.p, "parameters differ");
    let h1 = deterministic_history(&o1.state);
    let h2 = deterministic_history(&o2.state);
    assert_eq!(h1.len(), h2.len());
    for (e1, e2) in h1.iter().zip(&h2) {
        for (k, v1) in e1 {
            let (x, y) = (v1.as_f64().unwrap(), e2[k].as_f64().unwrap());
            assert!((x - y).abs() <= 1e-12 * x.abs().max(1.0), "{k}: {x} vs {y}");
        }
    }
}

#[test]
fn uneven_accumulation_window_at_epoch_end() {
    // 13 batches with accumulation 4: windows of 4, 4, 4, 1 per epoch, so 4 updates per epoch.
    let dir = tempfile::tempdir().unwrap();
    let args = args_in(dir.path(), |a| {
        a.gradient_accumulation_steps = 4;
        a.num_train_epochs = 2.0;
        a.logging_steps = 1.0;
        a.save_strategy = SaveStrategy::No;
    });
    let src = Source::new(100, 8, 1);
    let mut m = LogReg::new(&args);
    let out = run(&args, &mut m, &src, false, None).unwrap();
    assert_eq!(out.global_step, 8);
    let epochs: Vec<f64> =
        out.state.log_history.iter().filter(|e| e.contains_key("loss")).map(|e| e["epoch"].as_f64().unwrap()).collect();
    assert_eq!(
        epochs,
        vec![4.0 / 13.0, 8.0 / 13.0, 12.0 / 13.0, 1.0, 1.0 + 4.0 / 13.0, 1.0 + 8.0 / 13.0, 1.0 + 12.0 / 13.0, 2.0]
    );
    assert_eq!(m.adam.t, 8);
}

#[test]
fn checkpoint_rotation_keeps_newest_and_best() {
    let dir = tempfile::tempdir().unwrap();
    let args = args_in(dir.path(), |a| {
        a.save_total_limit = Some(2);
        a.eval_strategy = IntervalStrategy::Steps;
        a.eval_steps = Some(4.0);
        a.save_steps = 4.0;
        a.metric_for_best_model = Some("accuracy".into());
        a.greater_is_better = None;
    });
    let src = Source::new(100, 8, 42);
    let mut m = LogReg::new(&args);
    let out = run(&args, &mut m, &src, true, None).unwrap();
    let names = checkpoint_names(dir.path());
    assert!(names.len() <= 2, "{names:?}");
    assert!(names.contains(&"checkpoint-52".to_string()), "{names:?}");
    let best = out.state.best_model_checkpoint.clone().expect("best checkpoint");
    let best_name = Path::new(&best).file_name().unwrap().to_string_lossy().into_owned();
    assert!(names.contains(&best_name), "best {best_name} deleted: {names:?}");
    assert_eq!(out.state.best_global_step.map(|s| format!("checkpoint-{s}")), Some(best_name));
    // The recorded best metric is the maximum eval accuracy seen.
    let max_acc = out
        .state
        .log_history
        .iter()
        .filter_map(|e| e.get("eval_accuracy").and_then(Value::as_f64))
        .fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(out.state.best_metric, Some(max_acc));
}

#[test]
fn load_best_model_at_end_restores_best_weights() {
    let dir = tempfile::tempdir().unwrap();
    let args = args_in(dir.path(), |a| {
        a.eval_strategy = IntervalStrategy::Steps;
        a.eval_steps = Some(4.0);
        a.save_steps = 4.0;
        a.load_best_model_at_end = true;
        a.learning_rate = 0.5; // noisy enough that the last step need not be the best
    });
    let src = Source::new(100, 8, 42);
    let mut m = LogReg::new(&args);
    let out = run(&args, &mut m, &src, true, None).unwrap();
    assert_eq!(args.metric_for_best_model.as_deref(), Some("loss"));
    let best = out.state.best_model_checkpoint.clone().unwrap();
    let saved: Vec<f64> =
        serde_json::from_str(&std::fs::read_to_string(Path::new(&best).join("model.json")).unwrap()).unwrap();
    assert_eq!(m.p, saved);
    let final_eval = out.eval_metrics.unwrap();
    assert_eq!(Some(final_eval["eval_loss"]), out.state.best_metric);
}

#[test]
fn early_stopping_triggers() {
    let dir = tempfile::tempdir().unwrap();
    let args = args_in(dir.path(), |a| {
        a.num_train_epochs = 50.0;
        a.eval_strategy = IntervalStrategy::Steps;
        a.eval_steps = Some(4.0);
        a.save_steps = 4.0;
        a.metric_for_best_model = Some("loss".into());
        a.early_stopping_patience = Some(2);
        a.early_stopping_threshold = 1e-3;
    });
    let src = Source::new(100, 8, 42);
    let mut m = LogReg::new(&args);
    let out = run(&args, &mut m, &src, true, None).unwrap();
    assert!(out.global_step < 13 * 50, "did not stop early: {}", out.global_step);
    // Each of the last two evaluations before the final one did not improve by more than the threshold on the
    // best before it (HF compares with `state.best_metric`, which follows every strict improvement).
    let evals: Vec<f64> = out
        .state
        .log_history
        .iter()
        .filter(|e| e.contains_key("eval_loss") && e["step"].as_u64() <= Some(out.global_step))
        .map(|e| e["eval_loss"].as_f64().unwrap())
        .collect();
    let n = evals.len() - 1; // the final evaluation after training
    let best_before = |k: usize| evals[..k].iter().copied().fold(f64::INFINITY, f64::min);
    assert!(evals[n - 2] >= best_before(n - 2) - 1e-3, "{evals:?}");
    assert!(evals[n - 1] >= best_before(n - 1) - 1e-3, "{evals:?}");
    // ... while the one before those improved by more.
    assert!(evals[n - 3] < best_before(n - 3) - 1e-3, "{evals:?}");
    assert_eq!(out.global_step % 4, 0);
    let st: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join(format!("checkpoint-{}/trainer_state.json", out.global_step)))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(st["stateful_callbacks"]["EarlyStoppingCallback"]["attributes"]["early_stopping_patience_counter"], 2);
}

fn resume_case(configure: impl Fn(&mut TrainingArguments), resume_step: u64) {
    let full = tempfile::tempdir().unwrap();
    let args = args_in(full.path(), &configure);
    let src = Source::new(100, 8, 5);
    let mut m = LogReg::new(&args);
    let uninterrupted = run(&args, &mut m, &src, true, None).unwrap();

    // A run interrupted after `resume_step`: its output directory holds the checkpoints up to that step.
    let part = tempfile::tempdir().unwrap();
    for (step, p) in finetune_train::sorted_checkpoints(full.path()).unwrap() {
        if step <= resume_step {
            let to = part.path().join(p.file_name().unwrap());
            std::fs::create_dir_all(&to).unwrap();
            for f in std::fs::read_dir(&p).unwrap() {
                let f = f.unwrap();
                std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
            }
        }
    }
    // Checkpoint files name their directory (best_model_checkpoint); point them at the copy.
    let args2 = args_in(part.path(), &configure);
    for (_, p) in finetune_train::sorted_checkpoints(part.path()).unwrap() {
        let f = p.join("trainer_state.json");
        let t = std::fs::read_to_string(&f).unwrap();
        let from = full.path().display().to_string();
        std::fs::write(&f, t.replace(&from, &part.path().display().to_string())).unwrap();
    }
    let mut fresh = LogReg::new(&args2);
    fresh.p = vec![9.0; DIM + 1]; // must be overwritten by the checkpoint
    let resumed = run(&args2, &mut fresh, &src, true, Some(Resume::Latest)).unwrap();
    assert_eq!(resumed.global_step, uninterrupted.global_step);
    assert_eq!(fresh.p, m.p, "final parameters differ after resume from step {resume_step}");
    assert_eq!(fresh.adam, m.adam);
    let (h1, h2) = (deterministic_history(&uninterrupted.state), deterministic_history(&resumed.state));
    assert_eq!(h1.len(), h2.len());
    for (a, b) in h1.iter().zip(&h2) {
        let norm = |e: &BTreeMap<String, Value>| {
            e.iter()
                .map(|(k, v)| (k.clone(), v.to_string().replace(&full.path().display().to_string(), "")))
                .collect::<Vec<_>>()
        };
        assert_eq!(norm(a), norm(b), "log_history differs after resume from step {resume_step}");
    }
    assert_eq!(resumed.training_loss, uninterrupted.training_loss);
    assert_eq!(resumed.state.best_metric, uninterrupted.state.best_metric);
    assert_eq!(resumed.state.best_global_step, uninterrupted.state.best_global_step);
}

#[test]
fn resume_mid_epoch_is_bitwise_identical() {
    // Checkpoint at step 12 is inside epoch 0 (13 steps per epoch); the log window (every 5 steps) spans it.
    resume_case(
        |a| {
            a.logging_steps = 5.0;
            a.save_steps = 4.0;
            a.eval_strategy = IntervalStrategy::Epoch;
            a.weight_decay = 0.01;
            a.warmup_steps = 3.0;
            a.lr_scheduler_type = finetune_train::SchedulerType::Cosine;
        },
        12,
    );
}

#[test]
fn resume_with_accumulation_and_epoch_boundary_is_bitwise_identical() {
    // 13 batches, accumulation 3: 5 updates per epoch; step 10 ends epoch 1 exactly, and the epoch-end
    // log and evaluation come after that step's checkpoint.
    resume_case(
        |a| {
            a.gradient_accumulation_steps = 3;
            a.logging_strategy = IntervalStrategy::Epoch;
            a.save_steps = 5.0;
            a.eval_strategy = IntervalStrategy::Epoch;
        },
        10,
    );
}

#[test]
fn nan_loss_stops_with_step_and_keeps_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let args = args_in(dir.path(), |a| a.save_steps = 5.0);
    let src = Source::new(100, 8, 42);
    let mut m = LogReg::new(&args);
    m.nan_at_call = Some(23); // the 23rd micro-batch is optimizer step 23
    let e = run(&args, &mut m, &src, false, None).unwrap_err();
    match &e {
        TrainError::NonFiniteLoss { step, last_checkpoint, .. } => {
            assert_eq!(*step, 23);
            assert!(last_checkpoint.ends_with("checkpoint-20"), "{last_checkpoint}");
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(e.to_string().contains("step 23"), "{e}");
    assert_eq!(checkpoint_names(dir.path()), vec!["checkpoint-5", "checkpoint-10", "checkpoint-15", "checkpoint-20"]);
    assert_eq!(m.adam.t, 22, "no update after the NaN loss");
}

#[test]
fn existing_checkpoints_need_overwrite_or_resume() {
    let dir = tempfile::tempdir().unwrap();
    let args = args_in(dir.path(), |a| a.max_steps = 4);
    let src = Source::new(100, 8, 42);
    run(&args, &mut LogReg::new(&args), &src, false, None).unwrap();
    let e = run(&args, &mut LogReg::new(&args), &src, false, None).unwrap_err().to_string();
    assert!(e.contains("already contains checkpoints"), "{e}");
    let args = args_in(dir.path(), |a| {
        a.max_steps = 4;
        a.overwrite_output_dir = true;
    });
    run(&args, &mut LogReg::new(&args), &src, false, None).unwrap();
    let e = run(&args, &mut LogReg::new(&args), &src, false, Some(Resume::From(dir.path().join("checkpoint-99"))))
        .unwrap_err()
        .to_string();
    assert!(e.contains("checkpoint-99"), "{e}");
    let args4 = args_in(dir.path(), |a| {
        a.max_steps = 4;
        a.per_device_train_batch_size = 4;
    });
    let e = run(&args4, &mut LogReg::new(&args4), &Source::new(100, 4, 42), false, Some(Resume::Latest))
        .unwrap_err()
        .to_string();
    assert!(e.contains("per_device_train_batch_size") && e.contains("checkpoint-4"), "{e}");
}

#[test]
fn sampler_orders_are_reproducible_permutations() {
    let s = Sampler::new(103, 8, 11);
    let a = s.epoch_order(0);
    assert_eq!(a, s.epoch_order(0));
    assert_ne!(a, s.epoch_order(1));
    let mut sorted = a.clone();
    sorted.sort();
    assert_eq!(sorted, (0..103).collect::<Vec<_>>());
    let mut d = s.clone();
    d.drop_last = true;
    assert_eq!(d.epoch_batches(0).len(), 12);
    assert_eq!(s.epoch_batches(0).len(), 13);
    // group_by_length: the longest example leads, and each mega-batch is sorted by decreasing length.
    let lengths: Vec<usize> = (0..103).map(|i| (i * 37) % 101).collect();
    let g = Sampler { lengths: Some(lengths.clone()), ..s.clone() };
    let order = g.epoch_order(0);
    assert_eq!(lengths[order[0]], *lengths.iter().max().unwrap());
    let mega = 8 * (103 / 32);
    for chunk in order.chunks(mega).skip(1) {
        assert!(chunk.windows(2).all(|w| lengths[w[0]] >= lengths[w[1]]));
    }
}
