//! Errors of the training loop.

use std::path::PathBuf;

/// Everything that can stop a run. Messages are one line naming the argument, file or step concerned.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Invalid training arguments (TOML, `--set`, or a combination HF rejects).
    #[error("{0}")]
    Args(String),
    /// Reading or writing a run file.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A checkpoint or state file that cannot be used to resume.
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    /// The loss became NaN or infinite; the last good checkpoint is kept.
    #[error("loss is {value} at step {step} (epoch {epoch:.4}); stopping. Last good checkpoint: {last_checkpoint}")]
    NonFiniteLoss { step: u64, epoch: f64, value: f64, last_checkpoint: String },
    /// An evaluator's metric map lacks `metric_for_best_model`.
    #[error("The `metric_for_best_model` training argument is set to '{wanted}', which is not found in the evaluation metrics. The available evaluation metrics are: {available:?}.")]
    MissingMetric { wanted: String, available: Vec<String> },
    /// An error from the model or the evaluator.
    #[error("{0}")]
    Model(String),
}

pub type Result<T> = std::result::Result<T, TrainError>;

impl TrainError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io { path: path.into(), source }
    }
}
