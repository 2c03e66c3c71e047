//! `trainer_state.json` in transformers' `TrainerState` format, checkpoint discovery and atomic file writes.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use finetune_models::checkpoint::load_state_dict;
use finetune_models::params::{ParamError, ParamStore, OPTIMIZER_WEIGHTS};

use crate::error::{Result, TrainError};

/// Loads a saved model directory's weights into `store` by name (every parameter must be there, with its shape).
pub fn load_params(store: &mut ParamStore, dir: &Path) -> Result<()> {
    let bad = |message: String| TrainError::Checkpoint { path: dir.to_path_buf(), message };
    let sd = load_state_dict(dir).map_err(|e| bad(e.to_string()))?;
    store.load_state_dict(&sd, &[], |_| false).map_err(|e| bad(e.to_string()))?;
    Ok(())
}

/// An optimizer-state file that cannot be restored, as a checkpoint error naming the file.
pub fn optimizer_err(dir: &Path, e: ParamError) -> TrainError {
    match e {
        ParamError::OptimizerFile { path, message } => TrainError::Checkpoint { path, message },
        e => TrainError::Checkpoint { path: dir.join(OPTIMIZER_WEIGHTS), message: e.to_string() },
    }
}

/// One `log_history` entry: HF keys (`loss`, `grad_norm`, `learning_rate`, `epoch`, `step`, `eval_*`, ...).
pub type LogEntry = Map<String, Value>;

pub const TRAINER_STATE_NAME: &str = "trainer_state.json";
pub const PREFIX_CHECKPOINT_DIR: &str = "checkpoint";

/// transformers' `TrainerState`, field for field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub epoch: f64,
    pub global_step: u64,
    pub max_steps: u64,
    pub logging_steps: u64,
    pub eval_steps: u64,
    pub save_steps: u64,
    pub train_batch_size: Option<u64>,
    pub num_train_epochs: u64,
    pub num_input_tokens_seen: u64,
    /// Not computed (no FLOP counter); kept at 0 for format compatibility.
    pub total_flos: f64,
    pub log_history: Vec<LogEntry>,
    pub best_metric: Option<f64>,
    pub best_global_step: Option<u64>,
    pub best_model_checkpoint: Option<String>,
    pub is_local_process_zero: bool,
    pub is_world_process_zero: bool,
    pub is_hyper_param_search: bool,
    pub trial_name: Option<String>,
    pub trial_params: Option<Value>,
    /// `TrainerControl` and `EarlyStoppingCallback` states in HF's `{"args": .., "attributes": ..}` layout.
    pub stateful_callbacks: Map<String, Value>,
}

impl Default for TrainerState {
    fn default() -> Self {
        TrainerState {
            epoch: 0.0,
            global_step: 0,
            max_steps: 0,
            logging_steps: 500,
            eval_steps: 500,
            save_steps: 500,
            train_batch_size: None,
            num_train_epochs: 0,
            num_input_tokens_seen: 0,
            total_flos: 0.0,
            log_history: Vec::new(),
            best_metric: None,
            best_global_step: None,
            best_model_checkpoint: None,
            is_local_process_zero: true,
            is_world_process_zero: true,
            is_hyper_param_search: false,
            trial_name: None,
            trial_params: None,
            stateful_callbacks: Map::new(),
        }
    }
}

impl TrainerState {
    /// JSON as HF writes it (`indent=2, sort_keys=True`, trailing newline).
    pub fn to_json(&self) -> Result<String> {
        // Through `Value` so keys come out sorted, as HF's `sort_keys=True`.
        let v = serde_json::to_value(self).map_err(|e| TrainError::Model(format!("trainer state: {e}")))?;
        let mut s = serde_json::to_string_pretty(&v).map_err(|e| TrainError::Model(format!("trainer state: {e}")))?;
        s.push('\n');
        Ok(s)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, self.to_json()?.as_bytes())
    }

    pub fn load(path: &Path) -> Result<Self> {
        read_json(path)
    }
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint { path: path.into(), message: e.to_string() })
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut s = serde_json::to_string_pretty(value)
        .map_err(|e| TrainError::Checkpoint { path: path.into(), message: e.to_string() })?;
    s.push('\n');
    write_atomic(path, s.as_bytes())
}

/// Writes `bytes` to a temporary sibling and renames it over `path`, so readers never see a partial file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        TrainError::io(path, e)
    })
}

/// Step number of a `checkpoint-N` directory name (not `checkpoint-N.tmp`).
pub fn checkpoint_step(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("checkpoint-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `checkpoint-N` directories under `output_dir`, oldest (lowest N) first.
pub fn sorted_checkpoints(output_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(output_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(TrainError::io(output_dir, e)),
    };
    for entry in rd {
        let entry = entry.map_err(|e| TrainError::io(output_dir, e))?;
        if let Some(step) = checkpoint_step(&entry.file_name().to_string_lossy()) {
            if entry.path().is_dir() {
                out.push((step, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The newest complete checkpoint (HF `get_last_checkpoint`): one whose `trainer_state.json` reads. A checkpoint
/// is written as `checkpoint-N.tmp` and renamed once its trainer_state.json (written last) is in place, so a
/// process killed mid-write leaves no `checkpoint-N`; a `checkpoint-N` without a readable state (copied by hand,
/// or half-deleted by a killed rotation) is skipped rather than resumed from.
pub fn last_checkpoint(output_dir: &Path) -> Result<Option<PathBuf>> {
    let mut ckpts = sorted_checkpoints(output_dir)?;
    while let Some((_, p)) = ckpts.pop() {
        if TrainerState::load(&p.join(TRAINER_STATE_NAME)).is_ok() {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// Deletes the oldest checkpoints beyond `save_total_limit`, never the newest nor the best (HF
/// `rotate_checkpoints`, ordered by step number).
pub fn rotate_checkpoints(output_dir: &Path, save_total_limit: Option<usize>, best: Option<&Path>) -> Result<()> {
    let Some(limit) = save_total_limit.filter(|&l| l > 0) else {
        return Ok(());
    };
    let ckpts = sorted_checkpoints(output_dir)?;
    if ckpts.len() <= limit {
        return Ok(());
    }
    let newest = ckpts.last().map(|(_, p)| p.clone());
    let is_protected = |p: &Path| newest.as_deref() == Some(p) || best.is_some_and(|b| same_dir(b, p));
    let protected = ckpts.iter().filter(|(_, p)| is_protected(p)).count();
    let keep = limit.max(protected);
    let mut remaining = ckpts.len();
    for (_, p) in &ckpts {
        if remaining <= keep {
            break;
        }
        if !is_protected(p) {
            std::fs::remove_dir_all(p).map_err(|e| TrainError::io(p, e))?;
            remaining -= 1;
        }
    }
    Ok(())
}

pub(crate) fn same_dir(a: &Path, b: &Path) -> bool {
    a == b
        || a.file_name() == b.file_name()
            && a.parent().and_then(|p| p.canonicalize().ok()) == b.parent().and_then(|p| p.canonicalize().ok())
}
