//! The error every architecture returns (`LlamaError`, `Gpt2Error` and `BertError` are this type): a config it
//! cannot run, a checkpoint that does not fit it, a batch it cannot take, or a parameter-store error.

use crate::params::ParamError;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("invalid config: {0}")]
    Config(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("invalid batch: {0}")]
    Batch(String),
    #[error(transparent)]
    Params(#[from] ParamError),
}
