//! Hyper-parameter search over training runs (`finetune sweep`), as Optuna does it: a search space of run and
//! `TrainingArguments` keys, a sampler (`grid`, `random`, `tpe`), a pruner (`median`, `successive_halving`, `hyperband`) on the
//! per-evaluation validation metric, and a study store (SQLite, `output_dir/sweep.db`) that several workers share.
//! The objective is `metric_for_best_model` on the validation data (`greater_is_better` gives the direction);
//! trials never see the test data, which is scored once, for the best trial, at the end.
//!
//! ```text
//! let table = workflow::read_table(Path::new("sweep.toml"))?;          // run file with a [sweep] table
//! let sweep = Sweep::from_run_table("sweep.toml", table, None, &[])?;  // space + settings + base run
//! let result = run_sweep(&sweep, &SweepOptions::default())?;           // trials, best trial, test metrics
//! ```

pub mod pruner;
pub mod sampler;
pub mod space;
pub mod storage;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use pruner::Pruner;
pub use sampler::{Sampler, TpeSettings};
pub use space::{Distribution, SearchSpace};
pub use storage::{Storage, StudySpec};

use crate::workflow::{self, RunConfig, RunOptions, WorkflowError};
use crate::{EvalCallback, ProgressMode, TrainingArguments};

/// Errors of a sweep. Messages are one line naming the file, table and key.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("{0}")]
    Input(String),
    /// The study store (SQLite).
    #[error("{0}")]
    Store(String),
    #[error(transparent)]
    Workflow(#[from] WorkflowError),
}

pub type Result<T> = std::result::Result<T, SweepError>;

/// Optimisation direction of the objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    Maximize,
    Minimize,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Maximize => "maximize",
            Direction::Minimize => "minimize",
        }
    }

    /// Whether `a` is better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Direction::Maximize => a > b,
            Direction::Minimize => a < b,
        }
    }
}

/// Optuna's trial states (`WAITING` is a queued grid point).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrialState {
    #[default]
    Waiting,
    Running,
    Complete,
    Pruned,
    Fail,
}

impl TrialState {
    pub fn as_str(self) -> &'static str {
        match self {
            TrialState::Waiting => "WAITING",
            TrialState::Running => "RUNNING",
            TrialState::Complete => "COMPLETE",
            TrialState::Pruned => "PRUNED",
            TrialState::Fail => "FAIL",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "RUNNING" => TrialState::Running,
            "COMPLETE" => TrialState::Complete,
            "PRUNED" => TrialState::Pruned,
            "FAIL" => TrialState::Fail,
            _ => TrialState::Waiting,
        }
    }
}

/// A trial as stored (Optuna's `FrozenTrial`): parameters in internal representation, intermediate values by
/// step, attributes (successive-halving rungs), timings and its output directory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FrozenTrial {
    pub trial_id: i64,
    pub number: u64,
    pub state: TrialState,
    pub value: Option<f64>,
    pub params: BTreeMap<String, f64>,
    pub intermediate: BTreeMap<u64, f64>,
    pub attrs: BTreeMap<String, f64>,
    pub worker: Option<String>,
    pub heartbeat: Option<f64>,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
    pub output_dir: Option<String>,
    pub message: Option<String>,
    pub attempts: u32,
}

impl FrozenTrial {
    pub fn duration(&self) -> Option<f64> {
        Some(self.finished_at? - self.started_at?)
    }
}

/// Which trials keep their model files at the end (results files are always kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepModels {
    Best,
    All,
}

/// The `[sweep]` settings (scalars of the table; its tables are the search space).
#[derive(Debug, Clone, PartialEq)]
pub struct SweepSettings {
    pub sampler: Sampler,
    pub pruner: Pruner,
    /// Trials in the study (all workers together; a grid defaults to its size).
    pub n_trials: Option<u64>,
    pub keep_models: KeepModels,
    /// A RUNNING trial without a heartbeat for this many seconds belongs to a dead worker and is re-run.
    pub heartbeat_timeout: f64,
    pub study_name: String,
}

/// The scalar keys of `[sweep]`, with defaults and meaning (for `--help` and errors).
pub const SWEEP_KEYS: &[(&str, &str, &str)] = &[
    ("sampler", "\"tpe\"", "\"grid\", \"random\" or \"tpe\" (Optuna's TPESampler)"),
    ("n_trials", "10 (grid: its size)", "trials in the study, all workers together"),
    ("seed", "the run's seed", "sampler seed"),
    ("n_startup_trials", "10", "tpe: random trials before TPE starts"),
    ("n_ei_candidates", "24", "tpe: candidates drawn from l(x) per parameter"),
    ("prior_weight", "1.0", "tpe: weight of the prior component"),
    (
        "pruner",
        "\"none\"",
        "\"none\", \"median\" (MedianPruner), \"successive_halving\" or \"hyperband\" (HyperbandPruner)",
    ),
    ("pruner_n_startup_trials", "5", "median: complete trials before pruning starts"),
    ("n_warmup_steps", "0", "median: no pruning before this global step"),
    ("interval_steps", "1", "median: steps between pruning checks"),
    ("n_min_trials", "1", "median: values needed at a step to compare"),
    ("min_resource", "\"auto\" (hyperband: 1)", "successive_halving, hyperband: step of the first rung"),
    ("max_resource", "\"auto\"", "hyperband: steps of a full trial (auto: the longest finished trial's + 1)"),
    ("reduction_factor", "4 (hyperband: 3)", "successive_halving, hyperband: keep the top 1/reduction_factor per rung"),
    ("min_early_stopping_rate", "0", "successive_halving: first rung at min_resource*rf^rate"),
    ("keep_models", "\"best\"", "\"best\": delete other trials' model files at the end; \"all\""),
    ("heartbeat_timeout", "60", "seconds without a heartbeat before a RUNNING trial is re-run"),
    ("study_name", "\"sweep\"", "name of the study in sweep.db"),
];

impl SweepSettings {
    /// Reads the scalar entries of a `[sweep]` table (tables are parameters); `seed` defaults to `default_seed`.
    pub fn from_table(origin: &str, t: &toml::Table, default_seed: u64) -> Result<Self> {
        let bad = |k: &str, m: &str| SweepError::Input(format!("{origin}: key `{k}`: {m}"));
        for (k, v) in t {
            if !v.is_table() && !SWEEP_KEYS.iter().any(|(n, _, _)| n == k) {
                let names = SWEEP_KEYS.iter().map(|(n, _, _)| *n);
                let hint = workflow::closest(k, names).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default();
                return Err(SweepError::Input(format!(
                    "{origin}: unknown sweep setting `{k}`{hint}; a searched parameter is a table such as \
                     {{ type = \"float\", low = 1e-5, high = 1e-3, log = true }}"
                )));
            }
        }
        let int = |k: &str, d: u64| -> Result<u64> {
            match t.get(k) {
                None => Ok(d),
                Some(v) => v
                    .as_integer()
                    .filter(|&i| i >= 0)
                    .map(|i| i as u64)
                    .ok_or_else(|| bad(k, "expected an integer >= 0")),
            }
        };
        let string = |k: &str, d: &str| -> Result<String> {
            match t.get(k) {
                None => Ok(d.to_string()),
                Some(v) => v.as_str().map(str::to_string).ok_or_else(|| bad(k, "expected a string")),
            }
        };
        let float = |k: &str, d: f64| -> Result<f64> {
            match t.get(k) {
                None => Ok(d),
                Some(toml::Value::Float(f)) => Ok(*f),
                Some(toml::Value::Integer(i)) => Ok(*i as f64),
                Some(_) => Err(bad(k, "expected a number")),
            }
        };
        let seed = int("seed", default_seed)?;
        let sampler = match string("sampler", "tpe")?.as_str() {
            "grid" => Sampler::Grid,
            "random" => Sampler::Random { seed },
            "tpe" => Sampler::Tpe {
                seed,
                settings: TpeSettings {
                    n_startup_trials: int("n_startup_trials", 10)? as usize,
                    n_ei_candidates: int("n_ei_candidates", 24)?.max(1) as usize,
                    prior_weight: float("prior_weight", 1.0)?,
                    ..TpeSettings::default()
                },
            },
            other => return Err(bad("sampler", &format!("{other:?} is not one of \"grid\", \"random\", \"tpe\""))),
        };
        let pruner = match string("pruner", "none")?.as_str() {
            "none" => Pruner::None,
            "median" => Pruner::Median {
                n_startup_trials: int("pruner_n_startup_trials", 5)? as usize,
                n_warmup_steps: int("n_warmup_steps", 0)?,
                interval_steps: int("interval_steps", 1)?.max(1),
                n_min_trials: int("n_min_trials", 1)?.max(1) as usize,
            },
            "successive_halving" => Pruner::SuccessiveHalving {
                min_resource: match t.get("min_resource") {
                    None => None,
                    Some(toml::Value::String(s)) if s == "auto" => None,
                    Some(_) => Some(int("min_resource", 1)?.max(1)),
                },
                reduction_factor: int("reduction_factor", 4)?.max(2),
                min_early_stopping_rate: int("min_early_stopping_rate", 0)? as u32,
            },
            "hyperband" => Pruner::Hyperband {
                min_resource: match t.get("min_resource") {
                    None => 1,
                    Some(_) => int("min_resource", 1)?.max(1),
                },
                max_resource: match t.get("max_resource") {
                    None => None,
                    Some(toml::Value::String(s)) if s == "auto" => None,
                    Some(_) => Some(int("max_resource", 1)?.max(1)),
                },
                reduction_factor: int("reduction_factor", 3)?.max(2),
                study_name: string("study_name", "sweep")?,
            },
            other => {
                return Err(bad(
                    "pruner",
                    &format!("{other:?} is not one of \"none\", \"median\", \"successive_halving\", \"hyperband\""),
                ))
            }
        };
        let (is_tpe, is_median, is_sha, is_hb) = (
            matches!(sampler, Sampler::Tpe { .. }),
            matches!(pruner, Pruner::Median { .. }),
            matches!(pruner, Pruner::SuccessiveHalving { .. }),
            matches!(pruner, Pruner::Hyperband { .. }),
        );
        let unused: Vec<&str> = ["n_startup_trials", "n_ei_candidates", "prior_weight"]
            .into_iter()
            .filter(|_| !is_tpe)
            .chain(
                ["pruner_n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials"]
                    .into_iter()
                    .filter(|_| !is_median),
            )
            .chain(["min_resource", "reduction_factor"].into_iter().filter(|_| !is_sha && !is_hb))
            .chain(["min_early_stopping_rate"].into_iter().filter(|_| !is_sha))
            .chain(["max_resource"].into_iter().filter(|_| !is_hb))
            .filter(|k| t.contains_key(*k))
            .collect();
        if let Some(k) = unused.first() {
            return Err(bad(k, &format!("not used by sampler {:?} with pruner {:?}", sampler.name(), pruner.name())));
        }
        let keep_models = match string("keep_models", "best")?.as_str() {
            "best" => KeepModels::Best,
            "all" => KeepModels::All,
            other => return Err(bad("keep_models", &format!("{other:?} is not \"best\" or \"all\""))),
        };
        let n_trials = t.get("n_trials").map(|_| int("n_trials", 0)).transpose()?;
        if n_trials == Some(0) {
            return Err(bad("n_trials", "must be >= 1"));
        }
        Ok(SweepSettings {
            sampler,
            pruner,
            n_trials,
            keep_models,
            heartbeat_timeout: float("heartbeat_timeout", 60.0)?.max(1.0),
            study_name: string("study_name", "sweep")?,
        })
    }
}

/// Run keys that a search may not set: the sweep decides them per trial.
const FIXED_KEYS: &[&str] =
    &["output_dir", "overwrite_output_dir", "do_train", "do_eval", "do_predict", "resume_from_checkpoint"];

/// A sweep: the base run (run file without `[sweep]`, then `overrides`), the search space and the settings.
#[derive(Debug, Clone)]
pub struct Sweep {
    pub origin: String,
    pub base: toml::Table,
    /// `key=value` assignments applied after the run file (flags, `--set`); searched keys are not overridden.
    pub overrides: Vec<String>,
    pub space: SearchSpace,
    pub settings: SweepSettings,
}

impl Sweep {
    /// Splits a run-file table into the base run and its `[sweep]` table; `space` (from `--space FILE`), when
    /// given, adds parameters and settings (its keys win).
    pub fn from_run_table(
        origin: &str,
        mut table: toml::Table,
        space: Option<(&str, toml::Table)>,
        overrides: &[String],
    ) -> Result<Self> {
        let mut sweep_table = match table.remove("sweep") {
            None => toml::Table::new(),
            Some(toml::Value::Table(t)) => t,
            Some(other) => {
                return Err(SweepError::Input(format!("{origin}: `sweep` must be a table, got {}", other.type_str())))
            }
        };
        let mut space_origin = format!("{origin}: [sweep]");
        if let Some((o, t)) = space {
            sweep_table.extend(t);
            space_origin = o.to_string();
        }
        let (run, mut args) = workflow::from_table(origin, table.clone())?;
        let mut run = run;
        for s in overrides {
            workflow::apply_set(&mut run, &mut args, s)?;
        }
        let space = SearchSpace::from_table(&space_origin, &sweep_table)?;
        if space.params.is_empty() {
            return Err(SweepError::Input(format!(
                "{space_origin}: no parameter to search; add e.g. learning_rate = {{ type = \"float\", low = 1e-5, \
                 high = 1e-3, log = true }}"
            )));
        }
        let training = workflow::training_keys();
        for k in space.params.keys() {
            if FIXED_KEYS.contains(&k.as_str()) {
                return Err(SweepError::Input(format!("{space_origin}: key `{k}` is set by the sweep for each trial")));
            }
            if !workflow::is_run_key(k) && !training.iter().any(|n| n == k) {
                let all = training.iter().map(String::as_str).chain(workflow::RUN_KEYS.iter().map(|(n, _, _)| *n));
                let hint = workflow::closest(k, all).map(|c| format!(" (did you mean `{c}`?)")).unwrap_or_default();
                return Err(SweepError::Input(format!(
                    "{space_origin}: unknown key `{k}`{hint}: a searched parameter must be a run key or a \
                     TrainingArguments key"
                )));
            }
        }
        let settings = SweepSettings::from_table(&space_origin, &sweep_table, args.seed)?;
        Ok(Sweep { origin: origin.to_string(), base: table, overrides: overrides.to_vec(), space, settings })
    }

    /// The run keys and finalized arguments of trial `number` with `params` (internal representation), writing to
    /// `output_dir/trial-NUMBER`. With `number = None`: the base run (its own output_dir).
    pub fn trial_config(
        &self,
        params: &BTreeMap<String, f64>,
        number: Option<u64>,
    ) -> Result<(RunConfig, TrainingArguments)> {
        let mut table = self.base.clone();
        for (k, &x) in params {
            if let Some(d) = self.space.params.get(k) {
                table.insert(k.clone(), d.to_toml(x));
            }
        }
        let (mut run, mut args) = workflow::from_table(&self.origin, table)?;
        for s in &self.overrides {
            let key = s.split_once('=').map_or(s.as_str(), |(k, _)| k.trim());
            if !self.space.params.contains_key(key) {
                workflow::apply_set(&mut run, &mut args, s)?;
            }
        }
        if let Some(n) = number {
            let base_out = self.output_dir()?;
            args.output_dir = base_out.join(format!("trial-{n}")).display().to_string();
            args.overwrite_output_dir = true;
            run.do_train = Some(true);
            run.do_eval = Some(true);
            run.do_predict = Some(false);
            run.resume_from_checkpoint = None;
        }
        args.finalize().map_err(WorkflowError::from)?;
        Ok((run, args))
    }

    /// The sweep's output directory (the base run's `output_dir`).
    pub fn output_dir(&self) -> Result<PathBuf> {
        let (mut run, mut args) = workflow::from_table(&self.origin, self.base.clone())?;
        for s in &self.overrides {
            workflow::apply_set(&mut run, &mut args, s)?;
        }
        Ok(PathBuf::from(args.output_dir))
    }

    /// Objective key (`eval_` + `metric_for_best_model`, default `eval_loss`) and its direction.
    pub fn objective(&self) -> Result<(String, Direction)> {
        let (_, args) = self.trial_config(&BTreeMap::new(), None)?;
        let key = args.best_metric_key().unwrap_or_else(|| "eval_loss".into());
        let greater = args.greater_is_better.unwrap_or(!key.ends_with("loss"));
        Ok((key, if greater { Direction::Maximize } else { Direction::Minimize }))
    }
}

/// How [`run_sweep`] runs.
#[derive(Debug, Clone, Default)]
pub struct SweepOptions {
    /// Progress display of each trial's training.
    pub progress: ProgressMode,
    /// A worker only runs trials: no summary, no test evaluation (run `finetune sweep` without `--worker` for
    /// those once the workers are done).
    pub worker: bool,
    /// Print one line per finished trial and the trials table (stderr and stdout).
    pub print: bool,
}

/// What [`run_sweep`] returns.
#[derive(Debug, Clone, Default)]
pub struct SweepResult {
    pub output_dir: PathBuf,
    pub objective: String,
    pub direction: Direction,
    pub trials: Vec<FrozenTrial>,
    /// The best COMPLETE trial.
    pub best: Option<FrozenTrial>,
    /// Test metrics of the best trial (when the run has test data; not in worker mode).
    pub test_metrics: Option<BTreeMap<String, f64>>,
    /// Files written by the summary (sweep_results.json, .csv, best_run.toml).
    pub files: Vec<PathBuf>,
}

static WORKER_SEQ: AtomicU64 = AtomicU64::new(0);

/// This worker's identity in the store: `host:pid:n` (n tells workers in one process apart).
pub fn worker_id() -> String {
    format!("{}:{}:{}", storage::host_name(), std::process::id(), WORKER_SEQ.fetch_add(1, Ordering::Relaxed))
}

/// Runs trials until the study has `n_trials` (claiming them from `output_dir/sweep.db`, shared with any other
/// worker), then — unless `opts.worker` — writes the summary and scores the best trial on the test data.
pub fn run_sweep(sweep: &Sweep, opts: &SweepOptions) -> Result<SweepResult> {
    let (objective, direction) = sweep.objective()?;
    let (base_run, base_args) = sweep.trial_config(&BTreeMap::new(), None)?;
    if base_run.validation_file.is_none() && base_run.split.is_none() {
        return Err(SweepError::Input(format!(
            "{}: a sweep needs validation data for its objective ({objective}): set validation_file or split",
            sweep.origin
        )));
    }
    if sweep.settings.pruner != Pruner::None && base_args.eval_strategy == crate::IntervalStrategy::No {
        return Err(SweepError::Input(format!(
            "{}: pruner {:?} needs evaluations during training: set eval_strategy = \"steps\" (with eval_steps) or \"epoch\"",
            sweep.origin,
            sweep.settings.pruner.name()
        )));
    }
    // Every point of the space must make a valid run: check the corners now, not in trial 7.
    for corner in [0.0, 1.0] {
        let p: BTreeMap<String, f64> = sweep
            .space
            .params
            .iter()
            .map(|(k, d)| {
                let g = d.grid().unwrap_or_default();
                let x = match d {
                    Distribution::Float { low, high, .. } => {
                        if corner == 0.0 {
                            *low
                        } else {
                            *high
                        }
                    }
                    _ => {
                        if corner == 0.0 {
                            g.first().copied().unwrap_or(0.0)
                        } else {
                            g.last().copied().unwrap_or(0.0)
                        }
                    }
                };
                (k.clone(), x)
            })
            .collect();
        sweep.trial_config(&p, Some(0))?;
    }
    let grid_size = match sweep.settings.sampler {
        Sampler::Grid => Some(sweep.space.grid_points()?.len() as u64),
        _ => None,
    };
    // All inputs are checked; from here on files are written.
    let out = sweep.output_dir()?;
    std::fs::create_dir_all(&out).map_err(|e| SweepError::Input(format!("{}: {e}", out.display())))?;
    let n_trials = sweep.settings.n_trials.or(grid_size).unwrap_or(10);
    let spec = StudySpec {
        name: sweep.settings.study_name.clone(),
        direction,
        objective: objective.clone(),
        sampler: sweep.settings.sampler.name().into(),
        pruner: sweep.settings.pruner.name().into(),
        space: sweep.space.clone(),
        n_trials,
    };
    let db = out.join("sweep.db");
    let mut store = Storage::open(&db, &spec)?;
    let worker = worker_id();
    let sampler = sweep.settings.sampler.clone();
    loop {
        let claimed =
            store.claim(&worker, n_trials, sweep.settings.heartbeat_timeout, &sweep.space, |trials, number| {
                sampler.sample(&sweep.space, trials, direction, number)
            })?;
        let Some(c) = claimed else { break };
        run_trial(sweep, &store, &c, &objective, direction, opts)?;
    }
    let trials = store.trials()?;
    let best = best_trial(&trials, direction).cloned();
    let mut result = SweepResult {
        output_dir: out.clone(),
        objective: objective.clone(),
        direction,
        trials,
        best,
        ..Default::default()
    };
    if opts.worker {
        return Ok(result);
    }
    if result.trials.iter().any(|t| t.state == TrialState::Running) {
        eprintln!("sweep: trials are still running in other workers; the summary covers the finished ones");
    }
    if let Some(b) = result.best.clone() {
        result.test_metrics = test_best(sweep, &mut store, &b)?;
        if sweep.settings.keep_models == KeepModels::Best {
            for t in &result.trials {
                if t.number != b.number
                    && matches!(t.state, TrialState::Complete | TrialState::Pruned | TrialState::Fail)
                {
                    if let Some(d) = &t.output_dir {
                        remove_model_files(Path::new(d));
                    }
                }
            }
        }
    }
    result.files = write_summary(sweep, &result)?;
    Ok(result)
}

fn best_trial(trials: &[FrozenTrial], direction: Direction) -> Option<&FrozenTrial> {
    trials.iter().filter(|t| t.state == TrialState::Complete && t.value.is_some_and(|v| !v.is_nan())).fold(
        None,
        |best: Option<&FrozenTrial>, t| match best {
            Some(b) if !direction.better(t.value.unwrap_or(f64::NAN), b.value.unwrap_or(f64::NAN)) => Some(b),
            _ => Some(t),
        },
    )
}

/// Runs one claimed trial and records its end state; input errors (bad data, a key the run refuses) stop the
/// sweep, training errors (e.g. a diverging learning rate) fail only the trial.
fn run_trial(
    sweep: &Sweep,
    store: &Storage,
    c: &storage::Claimed,
    objective: &str,
    direction: Direction,
    opts: &SweepOptions,
) -> Result<()> {
    let (run, args) = sweep.trial_config(&c.params, Some(c.number))?;
    store.set_output_dir(c.trial_id, &args.output_dir)?;
    let describe = |p: &BTreeMap<String, f64>| {
        p.iter()
            .map(|(k, &x)| {
                format!("{k}={}", sweep.space.params.get(k).map_or(x.to_string(), |d| d.to_json(x).to_string()))
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    if opts.print {
        let again = if c.attempts > 0 { " (re-run: its worker stopped)" } else { "" };
        eprintln!("sweep: trial {} started{again}: {}", c.number, describe(&c.params));
    }
    // Heartbeat: a thread refreshes the trial's row so other workers see it is alive.
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let hb_store = store.reopen()?;
    let (trial_id, period) =
        (c.trial_id, Duration::from_secs_f64((sweep.settings.heartbeat_timeout / 4.0).clamp(0.25, 15.0)));
    let heartbeat = std::thread::spawn(move || {
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(period) {
            let _ = hb_store.heartbeat(trial_id);
        }
    });
    let pruned = Arc::new(AtomicBool::new(false));
    let cb_store = Mutex::new(store.reopen()?);
    let (pruner, number, key, flag) = (sweep.settings.pruner.clone(), c.number, objective.to_string(), pruned.clone());
    let callback = EvalCallback::new(move |step, metrics| {
        let Some(&v) = metrics.get(&key) else { return false };
        let Ok(st) = cb_store.lock() else { return false };
        if let Err(e) = st.report(trial_id, step, v) {
            eprintln!("sweep: trial {number}: {e}");
        }
        if pruner == Pruner::None {
            return false;
        }
        let Ok(trials) = st.trials() else { return false };
        let Some(me) = trials.iter().find(|t| t.number == number) else { return false };
        let (prune, record) = pruner.prune(me, &trials, direction);
        for (k, x) in record {
            let _ = st.set_attr(trial_id, &k, x);
        }
        if prune {
            flag.store(true, Ordering::SeqCst);
        }
        prune
    });
    let ropts = RunOptions { progress: opts.progress, print: false, on_evaluate: Some(callback) };
    let outcome = workflow::train(&run, &args, &ropts);
    let _ = stop_tx.send(());
    let _ = heartbeat.join();
    let (state, value, message) = match &outcome {
        Ok(r) if pruned.load(Ordering::SeqCst) => {
            (TrialState::Pruned, None, Some(format!("pruned at step {}", r.global_step)))
        }
        Ok(r) => match r.eval_metrics.as_ref().and_then(|m| m.get(objective)) {
            Some(&v) => (TrialState::Complete, Some(v), None),
            None => (
                TrialState::Fail,
                None,
                Some(format!(
                    "objective {objective} not in the validation metrics ({})",
                    r.eval_metrics
                        .as_ref()
                        .map(|m| m.keys().cloned().collect::<Vec<_>>().join(", "))
                        .unwrap_or_default()
                )),
            ),
        },
        Err(e) => (TrialState::Fail, None, Some(e.to_string())),
    };
    store.finish(c.trial_id, state, value, message.as_deref())?;
    if opts.print {
        let v = value.map_or(String::new(), |v| format!(" {objective}={v:.6}"));
        let m = message.as_deref().map_or(String::new(), |m| format!(" ({m})"));
        eprintln!("sweep: trial {} {}{v}{m}", c.number, state.as_str());
    }
    match outcome {
        Err(e @ (WorkflowError::Input(_) | WorkflowError::Data(_))) => Err(e.into()),
        _ => Ok(()),
    }
}

/// Scores the best trial's model on the run's test data (once per best trial, whichever worker gets there).
fn test_best(sweep: &Sweep, store: &mut Storage, best: &FrozenTrial) -> Result<Option<BTreeMap<String, f64>>> {
    let Some(dir) = best.output_dir.clone() else { return Ok(None) };
    let (mut run, mut args) = sweep.trial_config(&best.params, Some(best.number))?;
    let has_test = run.test_file.is_some() || run.split.as_deref().is_some_and(|s| s.split('/').count() >= 3);
    if !has_test {
        return Ok(None);
    }
    let results = Path::new(&dir).join("test_results.json");
    if !store.claim_final(best.number)? {
        if let Ok(text) = std::fs::read_to_string(&results) {
            let m: BTreeMap<String, f64> = serde_json::from_str(&text).unwrap_or_default();
            return Ok(Some(m));
        }
    }
    run.model_name_or_path = Some(dir.clone());
    run.do_train = Some(false);
    run.do_eval = Some(false);
    run.do_predict = Some(true);
    args.output_dir = dir;
    args.finalize().map_err(WorkflowError::from)?;
    let r = workflow::train(&run, &args, &RunOptions { progress: ProgressMode::Off, print: false, on_evaluate: None })?;
    Ok(r.test_metrics)
}

/// Deletes a finished trial's model and checkpoints (results files stay).
fn remove_model_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if p.is_dir() && name.starts_with("checkpoint-") {
            let _ = std::fs::remove_dir_all(&p);
        } else if name.ends_with(".safetensors") || name.ends_with(".bin") {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// The trials table: number, state, value, seconds, then one column per parameter.
pub fn trials_table(sweep: &Sweep, result: &SweepResult) -> String {
    let names: Vec<&String> = sweep.space.params.keys().collect();
    let mut rows: Vec<Vec<String>> = vec![["trial", "state", result.objective.as_str(), "seconds"]
        .iter()
        .map(|s| s.to_string())
        .chain(names.iter().map(|n| n.to_string()))
        .collect()];
    for t in &result.trials {
        let mut r = vec![
            format!(
                "{}{}",
                t.number,
                if result.best.as_ref().is_some_and(|b| b.number == t.number) { "*" } else { "" }
            ),
            t.state.as_str().to_string(),
            t.value.map_or("-".into(), |v| format!("{v:.6}")),
            t.duration().map_or("-".into(), |d| format!("{d:.1}")),
        ];
        for n in &names {
            let d = &sweep.space.params[*n];
            r.push(t.params.get(*n).map_or("-".into(), |&x| match d.to_json(x) {
                serde_json::Value::Number(num) if matches!(d, Distribution::Float { .. }) => {
                    format!("{:.4e}", num.as_f64().unwrap_or(x))
                }
                serde_json::Value::String(s) => s,
                v => v.to_string(),
            }));
        }
        rows.push(r);
    }
    let widths: Vec<usize> = (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    let mut s = String::new();
    for r in &rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        s.push_str(line.join("  ").trim_end());
        s.push('\n');
    }
    s
}

fn write_summary(sweep: &Sweep, r: &SweepResult) -> Result<Vec<PathBuf>> {
    let out = &r.output_dir;
    let io = |p: &Path, e: crate::TrainError| SweepError::Input(format!("{}: {e}", p.display()));
    let params_json = |t: &FrozenTrial| -> serde_json::Value {
        serde_json::Value::Object(
            t.params
                .iter()
                .map(|(k, &x)| (k.clone(), sweep.space.params.get(k).map_or(serde_json::json!(x), |d| d.to_json(x))))
                .collect(),
        )
    };
    let trial_json = |t: &FrozenTrial| {
        serde_json::json!({
            "number": t.number,
            "state": t.state.as_str(),
            "value": t.value,
            "params": params_json(t),
            "intermediate_values": t.intermediate.iter().map(|(s, v)| (s.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            "started_at": t.started_at,
            "finished_at": t.finished_at,
            "duration_s": t.duration(),
            "output_dir": t.output_dir,
            "worker": t.worker,
            "message": t.message,
        })
    };
    let best = r.best.as_ref().map(|b| {
        let mut v = trial_json(b);
        v["test_metrics"] = serde_json::json!(r.test_metrics);
        v
    });
    let doc = serde_json::json!({
        "objective": r.objective,
        "direction": r.direction.as_str(),
        "sampler": sweep.settings.sampler.name(),
        "pruner": sweep.settings.pruner.name(),
        "search_space": sweep.space.describe(),
        "best_trial": best,
        "trials": r.trials.iter().map(trial_json).collect::<Vec<_>>(),
    });
    let json_path = out.join("sweep_results.json");
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    crate::write_atomic(&json_path, text.as_bytes()).map_err(|e| io(&json_path, e))?;

    let names: Vec<&String> = sweep.space.params.keys().collect();
    let csv_cell = |s: String| if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s };
    let mut csv = String::from("number,state,value,duration_s");
    for n in &names {
        csv.push_str(&format!(",params_{n}"));
    }
    csv.push_str(",output_dir\n");
    for t in &r.trials {
        csv.push_str(&format!(
            "{},{},{},{}",
            t.number,
            t.state.as_str(),
            t.value.map_or(String::new(), |v| v.to_string()),
            t.duration().map_or(String::new(), |d| format!("{d:.3}"))
        ));
        for n in &names {
            let cell = t.params.get(*n).map_or(String::new(), |&x| match sweep.space.params[*n].to_json(x) {
                serde_json::Value::String(s) => s,
                v => v.to_string(),
            });
            csv.push(',');
            csv.push_str(&csv_cell(cell));
        }
        csv.push(',');
        csv.push_str(&csv_cell(t.output_dir.clone().unwrap_or_default()));
        csv.push('\n');
    }
    let csv_path = out.join("sweep_results.csv");
    crate::write_atomic(&csv_path, csv.as_bytes()).map_err(|e| io(&csv_path, e))?;
    let mut files = vec![json_path, csv_path];

    if let Some(b) = &r.best {
        let mut table = sweep.base.clone();
        for (k, &x) in &b.params {
            table.insert(k.clone(), sweep.space.params[k].to_toml(x));
        }
        table.insert("output_dir".into(), toml::Value::String(out.join("best").display().to_string()));
        let header = format!(
            "# Best trial {} of the sweep in {} ({} = {}): its parameters on the base run.\n# finetune train --config {}\n",
            b.number,
            out.display(),
            r.objective,
            b.value.unwrap_or(f64::NAN),
            out.join("best_run.toml").display()
        );
        let body = toml::to_string(&table).map_err(|e| SweepError::Input(format!("best_run.toml: {e}")))?;
        let path = out.join("best_run.toml");
        crate::write_atomic(&path, format!("{header}{body}").as_bytes()).map_err(|e| io(&path, e))?;
        files.push(path);
    }
    Ok(files)
}
