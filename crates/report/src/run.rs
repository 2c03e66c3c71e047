//! A run directory as the report reads it: the files `finetune train`/`cv` write.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::{ReportError, Result};

/// What the report knows about one run.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub dir: PathBuf,
    /// Short name shown in legends and tables (the directory name, made unique by the caller).
    pub name: String,
    /// `run_config.json`: task, model, data files, `training_args`, `non_default_args`, wall time, memory,
    /// versions.
    pub config: Map<String, Value>,
    /// Training log entries (`loss`, `learning_rate`, `grad_norm` at `step`).
    pub train_log: Vec<Map<String, Value>>,
    /// Evaluation entries (`eval_*` at `step`).
    pub eval_log: Vec<Map<String, Value>>,
    /// `all_results.json`.
    pub results: BTreeMap<String, f64>,
    /// `{split}_details.json` by split (`eval`, `test`): classification or token details.
    pub details: BTreeMap<String, Value>,
    /// `cv_results.json`: `folds`, `mean`, `std`.
    pub cv: Option<Value>,
    /// `cv`: the runs in `fold-1/`, `fold-2/`, ... (each a training run).
    pub folds: Vec<Run>,
    /// `sweep_results.json`: objective, direction, sampler, pruner, search space, trials, best trial.
    pub sweep: Option<Value>,
    /// `compare_results.json` (`finetune compare --output-dir`): base, tuned, metrics with intervals and p-values.
    pub compare: Option<Value>,
    /// The first generations beside their references: `predictions.jsonl` of `sft` (`prediction`, `reference`) or
    /// `generations.jsonl` of `compare` (`reference`, `base`, `tuned`).
    pub generations: Vec<Map<String, Value>>,
    /// `trainer_state.json`'s `global_step`: optimizer steps taken (the last logged step may be earlier).
    pub global_step: Option<u64>,
}

/// Generations shown in a report.
const GENERATION_SAMPLES: usize = 10;

/// The first [`GENERATION_SAMPLES`] JSON lines of `path` that hold a `reference`, if the file exists.
fn read_generations(path: &Path) -> Result<Vec<Map<String, Value>>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ReportError::Input(format!("{}: {e}", path.display()))),
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .map_err(|e| ReportError::Input(format!("{}: line {}: {e}", path.display(), i + 1)))?;
        match v {
            Value::Object(m) if m.contains_key("reference") => out.push(m),
            // A classifier's predictions: not generations.
            _ => return Ok(Vec::new()),
        }
        if out.len() == GENERATION_SAMPLES {
            break;
        }
    }
    Ok(out)
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ReportError::Input(format!("{}: line {}: {e}", path.display(), e.line()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ReportError::Input(format!("{}: {e}", path.display()))),
    }
}

impl Run {
    /// Reads a run directory. It must hold at least one of trainer_state.json, all_results.json,
    /// cv_results.json, sweep_results.json or compare_results.json; each file present must be valid JSON.
    pub fn load(dir: &Path) -> Result<Run> {
        if !dir.is_dir() {
            return Err(ReportError::Input(format!("{}: not a directory", dir.display())));
        }
        let mut run = Run {
            dir: dir.to_path_buf(),
            name: dir
                .canonicalize()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| dir.display().to_string()),
            ..Default::default()
        };
        let state = read_json(&dir.join("trainer_state.json"))?;
        let all = read_json(&dir.join("all_results.json"))?;
        run.cv = read_json(&dir.join("cv_results.json"))?;
        run.sweep = read_json(&dir.join("sweep_results.json"))?;
        run.compare = read_json(&dir.join("compare_results.json"))?;
        if state.is_none() && all.is_none() && run.cv.is_none() && run.sweep.is_none() && run.compare.is_none() {
            return Err(ReportError::Input(format!(
                "{}: not a run directory (no trainer_state.json, all_results.json, cv_results.json, \
                 sweep_results.json or compare_results.json)",
                dir.display()
            )));
        }
        if let Some(Value::Object(c)) = read_json(&dir.join("run_config.json"))? {
            run.config = c;
        }
        if let Some(state) = state {
            run.global_step = state.get("global_step").and_then(Value::as_u64);
            let Some(history) = state.get("log_history").and_then(Value::as_array) else {
                return Err(ReportError::Input(format!(
                    "{}: field `log_history` missing or not a list",
                    dir.join("trainer_state.json").display()
                )));
            };
            for e in history.iter().filter_map(Value::as_object) {
                if e.keys().any(|k| k.starts_with("eval_")) {
                    run.eval_log.push(e.clone());
                } else if e.contains_key("loss") {
                    run.train_log.push(e.clone());
                }
            }
        }
        if let Some(Value::Object(all)) = all {
            run.results = all.iter().filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x))).collect();
        }
        if run.cv.is_some() {
            for k in 1.. {
                let d = dir.join(format!("fold-{k}"));
                if !d.is_dir() {
                    break;
                }
                let mut f = Run::load(&d)?;
                f.name = format!("fold {k}");
                run.folds.push(f);
            }
        }
        for name in ["generations.jsonl", "predictions.jsonl"] {
            if run.generations.is_empty() {
                run.generations = read_generations(&dir.join(name))?;
            }
        }
        for split in ["eval", "test"] {
            if let Some(d) = read_json(&dir.join(format!("{split}_details.json")))? {
                run.details.insert(split.to_string(), d);
            }
        }
        Ok(run)
    }

    /// A `run_config.json` string field, or `training_args` field.
    pub fn setting(&self, key: &str) -> Option<String> {
        let v = self.config.get(key).or_else(|| self.config.get("training_args").and_then(|a| a.get(key)))?;
        Some(match v {
            Value::String(s) => s.clone(),
            Value::Null => "none".into(),
            v => v.to_string(),
        })
    }

    /// The hyper-parameters that differ from `TrainingArguments::default()` (as written by the run), else
    /// every training argument.
    pub fn non_default_args(&self) -> BTreeMap<String, String> {
        let show = |v: &Value| match v {
            Value::String(s) => s.clone(),
            Value::Null => "none".into(),
            v => v.to_string(),
        };
        match self.config.get("non_default_args").and_then(Value::as_object) {
            Some(m) => m.iter().map(|(k, v)| (k.clone(), show(v))).collect(),
            None => BTreeMap::new(),
        }
    }

    /// (step, value) points of a training-log key.
    pub fn train_series(&self, key: &str) -> Vec<(f64, f64)> {
        points(&self.train_log, key)
    }

    /// (step, value) points of an evaluation metric.
    pub fn eval_series(&self, key: &str) -> Vec<(f64, f64)> {
        points(&self.eval_log, key)
    }

    /// The evaluation metric names logged by this run (speed metrics left out).
    pub fn eval_metrics(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .eval_log
            .iter()
            .flat_map(|e| e.keys())
            .filter(|k| k.starts_with("eval_") && !is_speed(k))
            .cloned()
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// Speed and size entries that are not quality metrics.
pub fn is_speed(k: &str) -> bool {
    k.ends_with("_runtime") || k.ends_with("_per_second") || k.ends_with("_samples") || k.ends_with("_flos")
}

fn points(log: &[Map<String, Value>], key: &str) -> Vec<(f64, f64)> {
    log.iter().filter_map(|e| Some((e.get("step")?.as_f64()?, e.get(key)?.as_f64()?))).collect()
}
