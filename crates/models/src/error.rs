//! The error every architecture returns (`LlamaError`, `Gpt2Error` and `BertError` are this type): a config it
//! cannot run, a checkpoint that does not fit it, a batch it cannot take, or a parameter-store error.

use crate::params::ParamError;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("invalid config: {0}")]
    Config(String),
    /// A `config.json` field that the model cannot be built with (too large, or not what the weights hold).
    #[error("field `{field}` of config.json: {message}")]
    ConfigField { field: String, message: String },
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("invalid batch: {0}")]
    Batch(String),
    #[error(transparent)]
    Params(#[from] ParamError),
}

/// Largest size field (`hidden_size`, `vocab_size`, `intermediate_size`, positions, …) a config may declare:
/// 2^24, so that products of two sizes cannot overflow and absurd values fail before anything is allocated.
pub const MAX_CONFIG_DIM: usize = 1 << 24;
/// Largest layer count a config may declare.
pub const MAX_CONFIG_LAYERS: usize = 1 << 16;

/// Rejects any size above [`MAX_CONFIG_DIM`] (layer counts: `*layers`, above [`MAX_CONFIG_LAYERS`]).
pub(crate) fn check_config_sizes(fields: &[(&str, usize)]) -> Result<(), ModelError> {
    for &(field, value) in fields {
        let max = if field.ends_with("layers") || field == "n_layer" { MAX_CONFIG_LAYERS } else { MAX_CONFIG_DIM };
        if value > max {
            return Err(ModelError::ConfigField {
                field: field.into(),
                message: format!("{value} is larger than the supported maximum {max}"),
            });
        }
    }
    Ok(())
}
