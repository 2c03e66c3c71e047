//! The training loop, following `transformers.Trainer._inner_training_loop` step for step.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use finetune_models::params::ParamInfo;

use crate::args::{IntervalStrategy, SaveStrategy, TrainingArguments};
use crate::data::{Batch, BatchSource};
use crate::error::{Result, TrainError};
use crate::progress::{Progress, ProgressMode};
use crate::schedule::{Schedule, TrainingPlan};
use crate::state::{
    last_checkpoint, read_json, rotate_checkpoints, same_dir, sorted_checkpoints, write_json, LogEntry, TrainerState,
    PREFIX_CHECKPOINT_DIR, TRAINER_STATE_NAME,
};

/// A model the loop can train: explicit forward + backward with gradient accumulation, and its own AdamW.
pub trait TrainableModel {
    type Batch: Batch;

    /// Forward and backward on one micro-batch. Adds to the accumulated gradients the gradient of
    /// `sum of per-item losses in batch / num_items_in_window`, and returns that same scaled loss, so the values
    /// returned over an accumulation window sum to the window's mean loss (HF `num_items_in_batch`).
    fn train_batch(&mut self, batch: &Self::Batch, num_items_in_window: usize) -> Result<f64>;

    /// Clips the accumulated gradients to total L2 norm `max_grad_norm` (no clipping when 0), as
    /// `torch.nn.utils.clip_grad_norm_`, applies one AdamW update at learning rate `lr`, and zeroes the
    /// gradients. Returns the total gradient norm before clipping.
    fn clip_and_step(&mut self, lr: f64, max_grad_norm: f64) -> Result<f64>;

    /// Writes the weights (and config) into `dir`, which exists.
    fn save_model(&self, dir: &Path) -> Result<()>;
    /// Reads weights written by [`save_model`](Self::save_model).
    fn load_model(&mut self, dir: &Path) -> Result<()>;
    /// Writes optimizer state (moments, step count) and any RNG the model draws from (dropout) into `dir`.
    fn save_training_state(&self, dir: &Path) -> Result<()>;
    /// Reads what [`save_training_state`](Self::save_training_state) wrote.
    fn load_training_state(&mut self, dir: &Path) -> Result<()>;

    /// Data-parallel training ([`crate::dist`]): the parameters of the model (ranks exchange the trainable
    /// ones' gradients).
    fn dist_params(&self) -> Result<Vec<ParamInfo>> {
        Err(TrainError::Args("this model does not support data-parallel training".into()))
    }
    /// Trains `batch` as [`train_batch`](Self::train_batch) does, but hands its gradient (its share of the
    /// window) to `red` instead of keeping it: layer by layer as the backward pass finishes them
    /// ([`Reducer::hook`](crate::dist::Reducer::hook)), the rest when it returns.
    fn train_batch_exchanged(
        &mut self,
        _batch: &Self::Batch,
        _num_items_in_window: usize,
        _red: &mut crate::dist::Reducer,
    ) -> Result<f64> {
        Err(TrainError::Args("this model does not support data-parallel training".into()))
    }
    /// Makes `grads` (the trainable parameters' gradients, packed in layout order) the gradient of the next
    /// [`clip_and_step`](Self::clip_and_step).
    fn set_grads(&mut self, _grads: &[f32]) -> Result<()> {
        Err(TrainError::Args("this model does not support data-parallel training".into()))
    }
    /// Advances what training on `batch` would draw from (dropout streams) without training on it: another rank
    /// trains it.
    fn skip_batch(&mut self, _batch: &Self::Batch) -> Result<()> {
        Err(TrainError::Args("this model does not support data-parallel training".into()))
    }
}

/// Result of one evaluation pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalOutput {
    /// Metric name → value, e.g. `loss`, `accuracy` (an `eval_` prefix is added where missing).
    pub metrics: BTreeMap<String, f64>,
    pub num_samples: usize,
    pub num_batches: usize,
}

/// Runs evaluation on the current model (a closure `FnMut(&mut M) -> Result<EvalOutput>` is one).
pub trait Evaluator<M> {
    fn evaluate(&mut self, model: &mut M) -> Result<EvalOutput>;
}

impl<M, F: FnMut(&mut M) -> Result<EvalOutput>> Evaluator<M> for F {
    fn evaluate(&mut self, model: &mut M) -> Result<EvalOutput> {
        self(model)
    }
}

/// Where to resume from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// The newest `checkpoint-N` in `output_dir`.
    Latest,
    /// A given checkpoint directory.
    From(PathBuf),
}

/// Options of one `train` call that are not training arguments.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    pub resume: Option<Resume>,
    pub progress: ProgressMode,
    /// Called after each evaluation during training; returning `true` stops the run there (as early stopping
    /// does: the checkpoint due at that step is written and the run ends normally).
    pub on_evaluate: Option<EvalCallback>,
}

/// A function of (global step, `eval_*` metrics) called after each evaluation during training; `true` stops
/// the run. A hyper-parameter search prunes unpromising trials with it.
#[derive(Clone)]
pub struct EvalCallback(pub std::sync::Arc<EvalFn>);

/// The function inside an [`EvalCallback`].
pub type EvalFn = dyn Fn(u64, &BTreeMap<String, f64>) -> bool + Send + Sync;

impl EvalCallback {
    pub fn new(f: impl Fn(u64, &BTreeMap<String, f64>) -> bool + Send + Sync + 'static) -> Self {
        EvalCallback(std::sync::Arc::new(f))
    }
}

impl std::fmt::Debug for EvalCallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EvalCallback")
    }
}

/// What `train` returns (HF `TrainOutput` plus the final state).
#[derive(Debug, Clone)]
pub struct TrainOutput {
    pub global_step: u64,
    pub training_loss: f64,
    /// `train_runtime`, `train_samples_per_second`, `train_steps_per_second`, `train_loss`, `epoch`.
    pub metrics: BTreeMap<String, f64>,
    /// Final evaluation (with the best model when `load_best_model_at_end`), if an evaluator was given.
    pub eval_metrics: Option<BTreeMap<String, f64>>,
    pub state: TrainerState,
    /// The MLflow run (`report_to = ["mlflow"]`), left open for [`TrainOutput::finish_tracking`].
    pub mlflow_run_id: Option<String>,
}

impl TrainOutput {
    /// Ends the run's tracking once the final model is saved in `dir`: the MLflow run gets `dir`'s files as
    /// artifacts and is marked finished (no-op without `report_to = ["mlflow"]`).
    pub fn finish_tracking(&self, dir: &Path) -> Result<()> {
        if let Some(id) = &self.mlflow_run_id {
            crate::mlflow::finish_run(id, dir)?;
        }
        Ok(())
    }
}

/// Loop state that HF keeps in memory but a bit-exact resume needs: the loss accumulated since the last log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LoopState {
    tr_loss: f64,
    total_loss_scalar: f64,
    globalstep_last_logged: u64,
    early_stopping_patience_counter: u64,
    /// Steps whose loss is in `total_loss_scalar` (all since the start of the run, across resumes).
    steps_in_total_loss: u64,
    last_grad_norm: Option<f64>,
    last_lr: Option<f64>,
    /// The checkpoint was written at the last step of an epoch (or of the run) before that epoch's end-of-epoch
    /// log/evaluate/save ran; a resume runs them first.
    epoch_end_pending: bool,
    /// Early stopping (or the step limit) had already ended the run.
    should_training_stop: bool,
}

#[derive(Debug, Default)]
struct Control {
    should_training_stop: bool,
    should_epoch_stop: bool,
    should_save: bool,
    should_evaluate: bool,
    should_log: bool,
}

const LOOP_STATE_NAME: &str = "loop_state.json";
const SCHEDULER_NAME: &str = "scheduler.json";
const RNG_STATE_NAME: &str = "rng_state.json";
const EVENTS_NAME: &str = "events.jsonl";

struct Run<'a, M: TrainableModel, E: Evaluator<M> + ?Sized> {
    args: &'a TrainingArguments,
    model: &'a mut M,
    evaluator: Option<&'a mut E>,
    output_dir: PathBuf,
    plan: TrainingPlan,
    schedule: Schedule,
    state: TrainerState,
    lp: LoopState,
    control: Control,
    progress: Progress,
    events: Option<std::fs::File>,
    in_step_end: bool,
    on_evaluate: Option<EvalCallback>,
    /// `report_to = ["tensorboard"]`.
    tensorboard: Option<crate::tensorboard::EventWriter>,
    /// `report_to = ["mlflow"]`.
    mlflow: Option<crate::mlflow::MlflowRun>,
    /// This process writes checkpoints, logs and results (rank 0 of data-parallel ranks, or the only process).
    writer: bool,
    /// Data-parallel ranks: the window's gradient sum across them.
    reducer: Option<crate::dist::Reducer>,
}

fn round_to(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

/// HF `speed_metrics`.
fn speed_metrics(split: &str, start: Instant, num_samples: f64, num_steps: f64) -> BTreeMap<String, f64> {
    let runtime = round_to(start.elapsed().as_secs_f64(), 4);
    let mut m = BTreeMap::new();
    m.insert(format!("{split}_runtime"), runtime);
    if runtime > 0.0 {
        m.insert(format!("{split}_samples_per_second"), round_to(num_samples / runtime, 3));
        m.insert(format!("{split}_steps_per_second"), round_to(num_steps / runtime, 3));
    }
    m
}

fn to_entry(m: &BTreeMap<String, f64>) -> LogEntry {
    m.iter().map(|(k, v)| (k.clone(), json!(v))).collect()
}

/// Trains `model` on `data` per `args` (already [`finalize`](TrainingArguments::finalize)d), writing
/// checkpoints, `trainer_state.json`, results files and `events.jsonl` under `args.output_dir`.
pub fn train<M, S, E>(
    args: &TrainingArguments,
    model: &mut M,
    data: &S,
    evaluator: Option<&mut E>,
    options: &TrainOptions,
) -> Result<TrainOutput>
where
    M: TrainableModel,
    S: BatchSource<Batch = M::Batch>,
    E: Evaluator<M> + ?Sized,
{
    let mut args_checked = args.clone();
    args_checked.finalize()?;
    if &args_checked != args {
        return Err(TrainError::Args(
            "training arguments must be finalized (TrainingArguments::finalize) before train".into(),
        ));
    }
    if args.eval_strategy != IntervalStrategy::No && evaluator.is_none() {
        return Err(TrainError::Args(format!(
            "eval_strategy is {} but no evaluation data was given",
            args.eval_strategy.as_str()
        )));
    }
    // Data-parallel ranks: a window of N·G micro-batches, the window of one process with
    // `gradient_accumulation_steps = N·G` (plan, schedule and checkpoints are that run's).
    let world = crate::dist::world();
    let writer = world.as_ref().is_none_or(|w| w.rank() == 0);
    let scaled;
    let args = match &world {
        Some(w) => {
            scaled = TrainingArguments {
                gradient_accumulation_steps: args.gradient_accumulation_steps * w.size(),
                ..args.clone()
            };
            &scaled
        }
        None => args,
    };
    let reducer = match &world {
        Some(w) => {
            let cap = args.ddp_bucket_cap_mb.unwrap_or(crate::dist::DEFAULT_BUCKET_CAP_MB);
            Some(crate::dist::Reducer::new(w.clone(), &model.dist_params()?, cap)?)
        }
        None => None,
    };
    let output_dir = PathBuf::from(&args.output_dir);
    let plan = TrainingPlan::new(args, data.num_batches() as u64, data.num_examples() as u64)?;
    let schedule = Schedule::from_args(args, plan.max_steps);

    let resume_dir = match &options.resume {
        None => None,
        Some(Resume::From(p)) => Some(p.clone()),
        Some(Resume::Latest) => Some(last_checkpoint(&output_dir)?.ok_or_else(|| TrainError::Checkpoint {
            path: output_dir.clone(),
            message: "no checkpoint-N directory to resume from".into(),
        })?),
    };
    if resume_dir.is_none() && writer {
        let existing = sorted_checkpoints(&output_dir)?;
        if !existing.is_empty() {
            if !args.overwrite_output_dir {
                return Err(TrainError::Args(format!(
                    "Output directory ({}) already contains checkpoints. Use overwrite_output_dir = true to \
                     overcome, or resume from a checkpoint.",
                    output_dir.display()
                )));
            }
            // Stale checkpoints of an earlier run would be rotated or resumed as if they were ours.
            for (_, p) in existing {
                std::fs::remove_dir_all(&p).map_err(|e| TrainError::io(&p, e))?;
            }
        }
    }
    // Only rank 0 writes; the others wait until the output directory is ready.
    let events = if writer {
        std::fs::create_dir_all(&output_dir).map_err(|e| TrainError::io(&output_dir, e))?;
        let events_path = output_dir.join(EVENTS_NAME);
        Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&events_path)
                .map_err(|e| TrainError::io(&events_path, e))?,
        )
    } else {
        None
    };
    if let Some(w) = &world {
        w.barrier();
    }

    let mut state = TrainerState {
        max_steps: plan.max_steps,
        num_train_epochs: plan.num_train_epochs,
        logging_steps: plan.logging_steps,
        eval_steps: plan.eval_steps,
        save_steps: plan.save_steps,
        train_batch_size: Some(args.per_device_train_batch_size as u64),
        ..Default::default()
    };
    let mut lp = LoopState::default();
    if let Some(dir) = &resume_dir {
        state = TrainerState::load(&dir.join(TRAINER_STATE_NAME))?;
        if state.max_steps != plan.max_steps {
            return Err(TrainError::Checkpoint {
                path: dir.clone(),
                message: format!(
                    "checkpoint was written for max_steps {} but these arguments and data give {}; resume with \
                     the same arguments and data",
                    state.max_steps, plan.max_steps
                ),
            });
        }
        if state.train_batch_size.is_some_and(|b| b != args.per_device_train_batch_size as u64) {
            return Err(TrainError::Checkpoint {
                path: dir.clone(),
                message: format!(
                    "checkpoint was written with per_device_train_batch_size {:?} but it is now {}",
                    state.train_batch_size, args.per_device_train_batch_size
                ),
            });
        }
        if state.best_model_checkpoint.as_deref().is_some_and(|b| !Path::new(b).is_dir()) {
            state.best_model_checkpoint = None;
        }
        lp = read_json(&dir.join(LOOP_STATE_NAME))?;
        model.load_model(dir)?;
        model.load_training_state(dir)?;
    }

    let progress_mode = if writer { options.progress } else { ProgressMode::Off };
    let progress = Progress::new(progress_mode, plan.max_steps, state.global_step, plan.total_train_batch_size);
    if world.is_none() {
        if let Some(cap) = args.ddp_bucket_cap_mb {
            // Said rather than silently dropped: a run file shared with `mpirun` keeps its key.
            progress.message(&format!(
                "ddp_bucket_cap_mb = {cap}: not used, this run is one process (it sizes the gradient buckets of \
                 data-parallel runs under mpirun)"
            ));
        }
    }
    let tensorboard = if writer && args.report_to_tensorboard() {
        Some(crate::tensorboard::EventWriter::in_output_dir(&output_dir)?)
    } else {
        None
    };
    let mlflow = if writer && args.report_to_mlflow() {
        let mut params = Vec::new();
        let v = serde_json::to_value(args).map_err(|e| TrainError::Args(e.to_string()))?;
        crate::mlflow::flatten_params("", &v, &mut params);
        let name = output_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Some(crate::mlflow::MlflowRun::start(&name, &params)?)
    } else {
        None
    };
    let mut run = Run {
        args,
        model,
        evaluator,
        output_dir,
        plan,
        schedule,
        state,
        lp,
        control: Control::default(),
        progress,
        events,
        writer,
        reducer,
        in_step_end: false,
        on_evaluate: options.on_evaluate.clone(),
        tensorboard,
        mlflow,
    };
    run.event(
        "train_begin",
        json!({
            "num_examples": plan.num_examples, "num_train_epochs": plan.num_train_epochs,
            "num_update_steps_per_epoch": plan.num_update_steps_per_epoch, "max_steps": plan.max_steps,
            "total_train_batch_size": plan.total_train_batch_size,
            "num_warmup_steps": run.schedule.num_warmup_steps,
            "resume_from_checkpoint": resume_dir.as_ref().map(|p| p.display().to_string()),
            "global_step": run.state.global_step,
        }),
    );
    let result = run.train_loop(data, resume_dir.is_some());
    run.progress.finish();
    if let Err(e) = &result {
        run.event("error", json!({ "message": e.to_string(), "global_step": run.state.global_step }));
    }
    result
}

impl<M: TrainableModel, E: Evaluator<M> + ?Sized> Run<'_, M, E> {
    fn event(&mut self, kind: &str, mut fields: Value) {
        if let (Some(f), Some(obj)) = (self.events.as_mut(), fields.as_object_mut()) {
            obj.insert("event".into(), json!(kind));
            let line = format!("{}\n", Value::Object(std::mem::take(obj)));
            // The event log is a diagnostic aid; a full disk shows up on the next checkpoint write instead.
            let _ = f.write_all(line.as_bytes());
        }
    }

    fn train_loop<S: BatchSource<Batch = M::Batch>>(&mut self, data: &S, resumed: bool) -> Result<TrainOutput> {
        let args = self.args;
        let plan = self.plan;
        let gas = args.gradient_accumulation_steps as u64;
        let start = Instant::now();
        let initial_global_step = self.state.global_step;
        let epochs_trained = self.state.global_step / plan.num_update_steps_per_epoch;
        let steps_trained_in_current_epoch =
            if resumed { (self.state.global_step % plan.num_update_steps_per_epoch) * gas } else { 0 };
        let (mut last_grad_norm, mut last_lr) = (self.lp.last_grad_norm, self.lp.last_lr);
        if resumed {
            self.control.should_training_stop = self.lp.should_training_stop;
            if self.lp.epoch_end_pending {
                self.epoch_end(last_grad_norm, last_lr)?;
            }
        }

        if self.state.global_step < plan.max_steps && !self.control.should_training_stop {
            for epoch in epochs_trained..plan.num_train_epochs {
                self.control.should_epoch_stop = false;
                let skip = if epoch == epochs_trained { steps_trained_in_current_epoch } else { 0 };
                let mut step: i64 = skip as i64 - 1;
                let mut batches = data.epoch_batches(epoch, skip as usize);
                let remainder = match plan.steps_in_epoch % gas {
                    0 => gas,
                    r => r,
                };
                for update_step in skip / gas..plan.num_update_steps_per_epoch {
                    let n = if update_step != plan.num_update_steps_per_epoch - 1 { gas } else { remainder };
                    let window: Vec<M::Batch> = batches.by_ref().take(n as usize).collect();
                    if window.is_empty() {
                        break;
                    }
                    let num_items: usize = window.iter().map(Batch::num_items).sum();
                    for (i, batch) in window.iter().enumerate() {
                        step += 1;
                        let s = step as u64;
                        let do_sync = (s + 1).is_multiple_of(gas) || s + 1 == plan.steps_in_epoch;
                        if s.is_multiple_of(gas) {
                            self.control.should_log = false;
                            self.control.should_evaluate = false;
                            self.control.should_save = false;
                        }
                        let epoch_at = |s: u64| epoch as f64 + (s + 1) as f64 / plan.steps_in_epoch as f64;
                        // The losses of the micro-batches trained by now (all ranks'), in window order.
                        let losses = match self.reducer.as_mut() {
                            None => vec![self.model.train_batch(batch, num_items)?],
                            Some(red) => {
                                let (rank, n) = (red.rank(), red.size());
                                if i % n == 0 {
                                    red.begin_round(n.min(window.len() - i));
                                }
                                let loss = if i % n == rank {
                                    Some(self.model.train_batch_exchanged(batch, num_items, red)?)
                                } else {
                                    self.model.skip_batch(batch)?;
                                    None
                                };
                                if (i + 1) % n == 0 || i + 1 == window.len() {
                                    red.round(loss)?
                                } else {
                                    // A round's losses arrive at its end, in order, before any is logged.
                                    red.hold(loss);
                                    Vec::new()
                                }
                            }
                        };
                        for &loss in &losses {
                            if !loss.is_finite() {
                                return Err(self.non_finite("loss", loss, epoch_at(s)));
                            }
                            self.lp.tr_loss += loss;
                        }
                        if do_sync {
                            if let Some(red) = self.reducer.as_mut() {
                                self.model.set_grads(red.finish()?)?;
                            }
                            let loss = losses.last().copied().unwrap_or(0.0);
                            let lr = self.schedule.lr(args.learning_rate, self.state.global_step);
                            let grad_norm = self.model.clip_and_step(lr, args.max_grad_norm)?;
                            let epoch_f = epoch_at(s);
                            if !grad_norm.is_finite() {
                                return Err(self.non_finite("gradient norm", grad_norm, epoch_f));
                            }
                            last_grad_norm = Some(grad_norm);
                            last_lr = Some(lr);
                            (self.lp.last_grad_norm, self.lp.last_lr) = (last_grad_norm, last_lr);
                            self.state.global_step += 1;
                            self.state.epoch = epoch_f;
                            self.on_step_end();
                            self.progress.step(self.state.global_step, loss, lr);
                            self.in_step_end = true;
                            let r = self.maybe_log_save_evaluate(last_grad_norm, last_lr);
                            self.in_step_end = false;
                            r?;
                        }
                    }
                    if self.control.should_epoch_stop || self.control.should_training_stop {
                        break;
                    }
                }
                if step < 0 {
                    self.control.should_training_stop = true;
                }
                self.epoch_end(last_grad_norm, last_lr)?;
                if self.control.should_training_stop {
                    break;
                }
            }
        }
        self.finalize(start, initial_global_step)
    }

    /// HF DefaultFlowCallback.on_epoch_end, then log/evaluate/save.
    fn epoch_end(&mut self, grad_norm: Option<f64>, lr: Option<f64>) -> Result<()> {
        let args = self.args;
        if args.logging_strategy == IntervalStrategy::Epoch {
            self.control.should_log = true;
        }
        if args.eval_strategy == IntervalStrategy::Epoch {
            self.control.should_evaluate = true;
        }
        if args.save_strategy == SaveStrategy::Epoch {
            self.control.should_save = true;
        }
        self.maybe_log_save_evaluate(grad_norm, lr)
    }

    fn non_finite(&mut self, what: &str, value: f64, epoch: f64) -> TrainError {
        let step = self.state.global_step + 1;
        let last = last_checkpoint(&self.output_dir).ok().flatten();
        let last_checkpoint = last.map_or_else(|| "none".to_string(), |p| p.display().to_string());
        self.event("non_finite", json!({ "what": what, "value": value.to_string(), "step": step }));
        if what == "loss" {
            TrainError::NonFiniteLoss { step, epoch, value, last_checkpoint }
        } else {
            TrainError::Model(format!(
                "{what} is {value} at step {step} (epoch {epoch:.4}); stopping. Last good checkpoint: {last_checkpoint}"
            ))
        }
    }

    /// HF DefaultFlowCallback.on_step_end.
    fn on_step_end(&mut self) {
        let (args, st) = (self.args, &self.state);
        let gs = st.global_step;
        if gs == 1 && args.logging_first_step {
            self.control.should_log = true;
        }
        if args.logging_strategy == IntervalStrategy::Steps && st.logging_steps > 0 && gs % st.logging_steps == 0 {
            self.control.should_log = true;
        }
        let eval_due = st.eval_steps > 0 && gs % st.eval_steps == 0;
        if args.eval_strategy == IntervalStrategy::Steps && eval_due {
            self.control.should_evaluate = true;
        }
        if args.save_strategy == SaveStrategy::Steps && st.save_steps > 0 && gs % st.save_steps == 0 {
            self.control.should_save = true;
        }
        if gs >= st.max_steps {
            self.control.should_training_stop = true;
            if args.eval_strategy == IntervalStrategy::Steps && !eval_due {
                self.control.should_evaluate = true;
            }
            if args.save_strategy == SaveStrategy::Steps {
                self.control.should_save = true;
            }
        }
    }

    fn log(&mut self, mut logs: LogEntry) {
        logs.insert("epoch".into(), json!(self.state.epoch));
        logs.insert("step".into(), json!(self.state.global_step));
        self.event("log", Value::Object(logs.clone()));
        if let Some(tb) = &mut self.tensorboard {
            let scalars = logs.iter().filter(|(k, _)| k.as_str() != "step").filter_map(|(k, v)| Some((k, v.as_f64()?)));
            if let Err(e) = tb.add_scalars(self.state.global_step, scalars) {
                self.progress.message(&format!("TensorBoard logging stopped: {e}"));
                self.tensorboard = None;
            }
        }
        if let Some(ml) = &mut self.mlflow {
            let metrics = logs.iter().filter(|(k, _)| k.as_str() != "step").filter_map(|(k, v)| Some((k, v.as_f64()?)));
            if let Some(msg) = ml.log_metrics(self.state.global_step, metrics) {
                self.progress.message(&msg);
            }
        }
        self.state.log_history.push(logs);
    }

    fn maybe_log_save_evaluate(&mut self, grad_norm: Option<f64>, lr: Option<f64>) -> Result<()> {
        if self.control.should_log && self.state.global_step > self.lp.globalstep_last_logged {
            let tr = self.lp.tr_loss;
            self.lp.tr_loss = 0.0;
            let steps = self.state.global_step - self.lp.globalstep_last_logged;
            let loss = tr / steps as f64;
            let lr = lr.unwrap_or_else(|| self.schedule.lr(self.args.learning_rate, self.state.global_step));
            let mut logs = LogEntry::new();
            logs.insert("loss".into(), json!(loss));
            if let Some(g) = grad_norm {
                logs.insert("grad_norm".into(), json!(g));
            }
            logs.insert("learning_rate".into(), json!(lr));
            self.lp.total_loss_scalar += tr;
            self.lp.steps_in_total_loss += steps;
            self.lp.globalstep_last_logged = self.state.global_step;
            self.progress.log(self.state.global_step, self.state.epoch, loss, lr);
            self.log(logs);
            self.control.should_log = false;
        }
        if self.control.should_evaluate {
            let metrics = self.evaluate()?;
            self.control.should_evaluate = false;
            self.early_stopping(&metrics);
            if self.on_evaluate.as_ref().is_some_and(|cb| (cb.0)(self.state.global_step, &metrics)) {
                self.control.should_training_stop = true;
                self.event("stopped_by_callback", json!({ "step": self.state.global_step }));
            }
            let new_best = self.determine_best_metric(&metrics)?;
            if self.args.save_strategy == SaveStrategy::Best {
                self.control.should_save = new_best;
            }
        }
        if self.control.should_save {
            self.save_checkpoint()?;
            self.control.should_save = false;
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<BTreeMap<String, f64>> {
        let Some(ev) = self.evaluator.as_deref_mut() else {
            return Err(TrainError::Args("evaluation requested but no evaluation data was given".into()));
        };
        let start = Instant::now();
        let out = ev.evaluate(self.model)?;
        let mut metrics: BTreeMap<String, f64> = out
            .metrics
            .into_iter()
            .map(|(k, v)| if k.starts_with("eval_") { (k, v) } else { (format!("eval_{k}"), v) })
            .collect();
        metrics.extend(speed_metrics("eval", start, out.num_samples as f64, out.num_batches as f64));
        let text = metrics.iter().map(|(k, v)| format!("{k} {v:.4}")).collect::<Vec<_>>().join(" | ");
        self.progress.message(&format!("step {}: {text}", self.state.global_step));
        self.log(to_entry(&metrics));
        Ok(metrics)
    }

    /// HF EarlyStoppingCallback.on_evaluate: compares with the best metric *before* this evaluation.
    fn early_stopping(&mut self, metrics: &BTreeMap<String, f64>) {
        let Some(patience) = self.args.early_stopping_patience else { return };
        let Some(value) = self.args.best_metric_key().and_then(|k| metrics.get(&k).copied()) else { return };
        let greater = self.args.greater_is_better.unwrap_or(true);
        let improved = match self.state.best_metric {
            None => true,
            Some(best) => {
                (if greater { value > best } else { value < best })
                    && (value - best).abs() > self.args.early_stopping_threshold
            }
        };
        if improved {
            self.lp.early_stopping_patience_counter = 0;
        } else {
            self.lp.early_stopping_patience_counter += 1;
        }
        if self.lp.early_stopping_patience_counter >= patience as u64 {
            self.control.should_training_stop = true;
            self.event(
                "early_stopping",
                json!({ "step": self.state.global_step, "patience": patience, "metric": value }),
            );
        }
    }

    /// HF Trainer._determine_best_metric.
    fn determine_best_metric(&mut self, metrics: &BTreeMap<String, f64>) -> Result<bool> {
        let Some(key) = self.args.best_metric_key() else { return Ok(false) };
        let Some(&value) = metrics.get(&key) else {
            return Err(TrainError::MissingMetric { wanted: key, available: metrics.keys().cloned().collect() });
        };
        let greater = self.args.greater_is_better.unwrap_or(true);
        let best = self.state.best_metric.unwrap_or(if greater { f64::NEG_INFINITY } else { f64::INFINITY });
        self.state.best_metric = Some(best);
        if if greater { value > best } else { value < best } {
            self.state.best_metric = Some(value);
            if self.args.save_strategy != SaveStrategy::No {
                self.state.best_global_step = Some(self.state.global_step);
            }
            return Ok(true);
        }
        Ok(false)
    }

    fn checkpoint_dir(&self, step: u64) -> PathBuf {
        self.output_dir.join(format!("{PREFIX_CHECKPOINT_DIR}-{step}"))
    }

    fn stateful_callbacks(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert(
            "TrainerControl".into(),
            json!({
                "args": {
                    "should_epoch_stop": self.control.should_epoch_stop,
                    "should_evaluate": self.control.should_evaluate,
                    "should_log": self.control.should_log,
                    "should_save": self.control.should_save,
                    "should_training_stop": self.control.should_training_stop,
                },
                "attributes": {}
            }),
        );
        if let Some(p) = self.args.early_stopping_patience {
            m.insert(
                "EarlyStoppingCallback".into(),
                json!({
                    "args": {
                        "early_stopping_patience": p,
                        "early_stopping_threshold": self.args.early_stopping_threshold,
                    },
                    "attributes": { "early_stopping_patience_counter": self.lp.early_stopping_patience_counter }
                }),
            );
        }
        m
    }

    /// HF Trainer._save_checkpoint, written into `checkpoint-N.tmp` and renamed when complete.
    fn save_checkpoint(&mut self) -> Result<()> {
        if !self.writer {
            self.record_loop_state();
        } else {
            self.write_checkpoint()?;
        }
        // Data-parallel ranks: rank 0's best checkpoint (which depends on what its directory holds) on every rank,
        // sent once the checkpoint is complete.
        if let Some(red) = &self.reducer {
            let mut best = self.state.best_model_checkpoint.clone().unwrap_or_default().into_bytes();
            red.world().broadcast_bytes(&mut best);
            let best = String::from_utf8_lossy(&best).into_owned();
            self.state.best_model_checkpoint = (!best.is_empty()).then_some(best);
        }
        Ok(())
    }

    fn write_checkpoint(&mut self) -> Result<()> {
        let step = self.state.global_step;
        let final_dir = self.checkpoint_dir(step);
        let tmp = self.output_dir.join(format!("{PREFIX_CHECKPOINT_DIR}-{step}.tmp"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
        }
        // A failed write (disk full, ...) removes the partial directory: it would only hold the space and
        // the previous checkpoint stays the newest complete one.
        if let Err(e) = self.write_checkpoint_files(&tmp, step) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if final_dir.exists() {
            std::fs::remove_dir_all(&final_dir).map_err(|e| TrainError::io(&final_dir, e))?;
        }
        std::fs::rename(&tmp, &final_dir).map_err(|e| TrainError::io(&final_dir, e))?;
        self.event("save", json!({ "step": step, "checkpoint": final_dir.display().to_string() }));
        let best = self.state.best_model_checkpoint.clone().map(PathBuf::from);
        rotate_checkpoints(&self.output_dir, self.args.save_total_limit, best.as_deref())
    }

    /// Everything a checkpoint holds, written into `tmp` (created here).
    fn write_checkpoint_files(&mut self, tmp: &Path, step: u64) -> Result<()> {
        std::fs::create_dir_all(tmp).map_err(|e| TrainError::io(tmp, e))?;
        self.model.save_model(tmp)?;
        if let Some(best_step) = self.state.best_global_step.filter(|_| self.args.save_strategy != SaveStrategy::No) {
            let best_dir = self.checkpoint_dir(best_step);
            if best_step == step || best_dir.is_dir() {
                self.state.best_model_checkpoint = Some(best_dir.display().to_string());
            }
        }
        self.model.save_training_state(tmp)?;
        write_json(
            &tmp.join(SCHEDULER_NAME),
            &json!({
                "lr_scheduler_type": self.args.lr_scheduler_type.as_str(),
                "num_warmup_steps": self.schedule.num_warmup_steps,
                "num_training_steps": self.schedule.num_training_steps,
                "base_lr": self.args.learning_rate,
                "last_epoch": step,
                "last_lr": self.schedule.lr(self.args.learning_rate, step),
            }),
        )?;
        let nupe = self.plan.num_update_steps_per_epoch;
        write_json(
            &tmp.join(RNG_STATE_NAME),
            &json!({
                "seed": self.args.seed,
                "epoch": step / nupe,
                "batches_consumed_in_epoch": (step % nupe) * self.args.gradient_accumulation_steps as u64,
            }),
        )?;
        self.record_loop_state();
        write_json(&tmp.join(LOOP_STATE_NAME), &self.lp)?;
        self.state.save(&tmp.join(TRAINER_STATE_NAME))?;
        Ok(())
    }

    /// What a checkpoint records about the loop (every rank keeps the same).
    fn record_loop_state(&mut self) {
        let (gs, nupe) = (self.state.global_step, self.plan.num_update_steps_per_epoch);
        self.lp.epoch_end_pending = self.in_step_end && (gs.is_multiple_of(nupe) || gs >= self.plan.max_steps);
        self.lp.should_training_stop = self.control.should_training_stop;
        self.state.stateful_callbacks = self.stateful_callbacks();
    }

    fn finalize(&mut self, start: Instant, initial_global_step: u64) -> Result<TrainOutput> {
        self.lp.total_loss_scalar += self.lp.tr_loss;
        self.lp.steps_in_total_loss += self.state.global_step - self.lp.globalstep_last_logged;
        self.lp.tr_loss = 0.0;
        self.lp.globalstep_last_logged = self.state.global_step;
        let num_steps_trained = self.state.global_step - initial_global_step;
        // Mean over every step of the run, resumed parts included, so a resumed run reports what an
        // uninterrupted one would (HF averages over this call's steps only).
        let train_loss = self.lp.total_loss_scalar / (self.lp.steps_in_total_loss as f64).max(0.001);
        let samples = self.plan.num_train_samples * num_steps_trained as f64 / self.state.max_steps.max(1) as f64;
        let mut metrics = speed_metrics("train", start, samples, num_steps_trained as f64);
        metrics.insert("train_loss".into(), train_loss);
        metrics.insert("epoch".into(), self.state.epoch);
        self.log(to_entry(&metrics));

        if self.args.load_best_model_at_end {
            if let Some(best) = self.state.best_model_checkpoint.clone() {
                self.progress.message(&format!(
                    "Loading best model from {best} (score: {}).",
                    self.state.best_metric.unwrap_or(f64::NAN)
                ));
                self.model.load_model(Path::new(&best))?;
                self.event("load_best_model", json!({ "checkpoint": best }));
            }
        }
        if self.writer && self.state.best_model_checkpoint.is_some() && self.args.save_total_limit == Some(1) {
            let best = PathBuf::from(self.state.best_model_checkpoint.clone().unwrap_or_default());
            for (_, p) in sorted_checkpoints(&self.output_dir)? {
                if !same_dir(&p, &best) {
                    std::fs::remove_dir_all(&p).map_err(|e| TrainError::io(&p, e))?;
                }
            }
        }

        let mut train_results = metrics.clone();
        train_results.insert("train_samples".into(), self.plan.num_examples as f64);
        let mut all = train_results.clone();
        let eval_metrics = if self.evaluator.is_some() {
            let mut m = self.evaluate()?;
            m.insert("epoch".into(), self.state.epoch);
            all.extend(m.clone());
            Some(m)
        } else {
            None
        };
        self.state.stateful_callbacks = self.stateful_callbacks();
        if self.writer {
            write_json(&self.output_dir.join("train_results.json"), &train_results)?;
            if let Some(m) = &eval_metrics {
                write_json(&self.output_dir.join("eval_results.json"), m)?;
            }
            write_json(&self.output_dir.join("all_results.json"), &all)?;
            self.state.save(&self.output_dir.join(TRAINER_STATE_NAME))?;
        }
        let mut end = json!({ "global_step": self.state.global_step, "train_loss": train_loss });
        if let Some(red) = &self.reducer {
            // This rank's time in collectives, the part of it the training loop waited for, and bytes sent (the
            // cost of data parallelism).
            let steps = num_steps_trained.max(1) as f64;
            let (secs, bytes) = red.collective_stats();
            end["data_parallel"] = json!({
                "ranks": red.size(),
                "buckets": red.buckets(),
                "buckets_sent_during_backward_per_step": red.buckets_sent_early() as f64 / steps,
                "collective_seconds": secs,
                "collective_seconds_per_step": secs / steps,
                "exposed_seconds_per_step": red.exposed_secs / steps,
                "bytes_sent_per_step": bytes as f64 / steps,
                "gradient_values": red.gradient_values(),
            });
            self.progress.message(&format!(
                "data-parallel: {} ranks, {} buckets, {:.3} s per step in collectives ({:.1} MB sent per rank), \
                 {:.3} s of it not hidden behind the backward pass",
                red.size(),
                red.buckets(),
                secs / steps,
                bytes as f64 / steps / 1e6,
                red.exposed_secs / steps
            ));
        }
        self.event("train_end", end);
        Ok(TrainOutput {
            global_step: self.state.global_step,
            training_loss: train_loss,
            metrics,
            eval_metrics,
            state: self.state.clone(),
            mlflow_run_id: self.mlflow.take().map(crate::mlflow::MlflowRun::into_id),
        })
    }
}
