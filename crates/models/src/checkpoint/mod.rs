//! Hugging Face checkpoint I/O: find a model (directory, hub cache, model id), load its weights
//! (`model.safetensors`, sharded safetensors, `pytorch_model.bin` through a restricted unpickler) as f32, and
//! save a state dict with its config and tokenizer files.
//!
//! Malformed input never panics and never makes the loader allocate more than the file's size implies; every
//! error names the file and, where there is one, the tensor.

mod hub;
mod pickle;
mod safetensors;

use std::io::Write;
use std::path::{Path, PathBuf};

use finetune_engine::StateDict;

pub use self::hub::{
    cache_roots, is_causal_lm_architecture, is_classifier_architecture, model_architecture, model_type, resolve_in,
    resolve_model_dir,
};
pub use self::pickle::load_pytorch_bin;
pub use self::safetensors::{load_safetensors, load_sharded_safetensors, save_safetensors};
use crate::config::{ConfigError, EncoderConfig};

/// Errors loading or saving a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{message}")]
    NotFound { message: String },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: tensor `{tensor}`: {message}")]
    Tensor { path: PathBuf, tensor: String, message: String },
    #[error("{path}: tensor `{tensor}` has dtype {dtype}; only F32, F16 and BF16 are supported")]
    UnsupportedDtype { path: PathBuf, tensor: String, dtype: String },
    #[error("{path}: refusing to load global `{global}`: only the globals needed to rebuild tensors are allowed")]
    RefusedGlobal { path: PathBuf, global: String },
    #[error("{path}: unsupported: {message}")]
    Unsupported { path: PathBuf, message: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Integer buffers that `transformers` recreates at load time and that some checkpoints carry
/// (`embeddings.position_ids`, `embeddings.token_type_ids`); they are skipped instead of rejected.
pub(crate) fn is_skippable_buffer(name: &str) -> bool {
    name.ends_with("position_ids") || name.ends_with("token_type_ids")
}

/// Weight file names in the order they are preferred.
pub const WEIGHT_FILES: &[&str] =
    &["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"];

/// Loads the weights of a model: `path` is a model directory or a weight file (`.safetensors`, `.bin` or a
/// sharded `*.index.json`). In a directory, safetensors are preferred over `.bin`.
pub fn load_state_dict(path: impl AsRef<Path>) -> Result<StateDict, CheckpointError> {
    let path = path.as_ref();
    if path.is_dir() {
        let found = WEIGHT_FILES.iter().map(|f| path.join(f)).find(|p| p.is_file());
        let Some(file) = found else {
            return Err(CheckpointError::NotFound {
                message: format!("{}: no weights ({} not found)", path.display(), WEIGHT_FILES.join(", ")),
            });
        };
        return load_file(&file);
    }
    load_file(path)
}

fn load_file(path: &Path) -> Result<StateDict, CheckpointError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if name.ends_with(".safetensors.index.json") {
        load_sharded_safetensors(path)
    } else if name.ends_with(".bin.index.json") {
        load_sharded_bin(path)
    } else if name.ends_with(".safetensors") {
        load_safetensors(path)
    } else if !path.exists() {
        Err(CheckpointError::NotFound { message: format!("{}: no such file", path.display()) })
    } else {
        load_pytorch_bin(path)
    }
}

fn load_sharded_bin(index: &Path) -> Result<StateDict, CheckpointError> {
    let dir = index.parent().unwrap_or(Path::new("."));
    let map = safetensors::read_weight_map(index)?;
    let mut shards: Vec<&String> = map.values().collect();
    shards.sort();
    shards.dedup();
    let mut out = StateDict::new();
    for shard in shards {
        out.extend(load_pytorch_bin(&dir.join(shard))?);
    }
    Ok(out)
}

/// A model found on disk: its directory, config and weights.
pub struct LoadedModel {
    pub dir: PathBuf,
    pub config: EncoderConfig,
    pub state: StateDict,
}

/// Resolves `spec` (directory, cache folder or model id, see [`resolve_model_dir`]) and loads config and weights.
pub fn load_pretrained(spec: &str) -> Result<LoadedModel, CheckpointError> {
    let found = resolve_model_dir(spec)?;
    // A weight file given directly: its config sits next to it.
    let dir = if found.is_file() { found.parent().unwrap_or(Path::new(".")).to_path_buf() } else { found.clone() };
    let config = EncoderConfig::from_file(dir.join("config.json"))?;
    let state = load_state_dict(&found)?;
    Ok(LoadedModel { dir, config, state })
}

/// Tokenizer files copied along with a saved model, when present in the source directory.
pub const TOKENIZER_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
];

/// Saves a model the way `save_pretrained` lays it out: `model.safetensors` (atomically), `config.json`, and
/// the tokenizer files found in `tokenizer_from` (usually the directory the model was loaded from).
pub fn save_pretrained(
    dir: impl AsRef<Path>,
    state: &StateDict,
    config: &EncoderConfig,
    tokenizer_from: Option<&Path>,
) -> Result<(), CheckpointError> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|source| CheckpointError::Io { path: dir.to_path_buf(), source })?;
    save_safetensors(state, &dir.join("model.safetensors"))?;
    config.write(dir)?;
    if let Some(src) = tokenizer_from {
        copy_tokenizer_files(src, dir)?;
    }
    Ok(())
}

/// Copies the [`TOKENIZER_FILES`] present in `src` into `dir` (atomically; a file onto itself is skipped).
pub fn copy_tokenizer_files(src: &Path, dir: &Path) -> Result<(), CheckpointError> {
    for f in TOKENIZER_FILES {
        let from = src.join(f);
        if !from.is_file() {
            continue;
        }
        let to = dir.join(f);
        if same_file(&from, &to) {
            continue;
        }
        let bytes = std::fs::read(&from).map_err(|source| CheckpointError::Io { path: from.clone(), source })?;
        write_atomic(&to, &bytes).map_err(|source| CheckpointError::Io { path: to.clone(), source })?;
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so that readers
/// never see a half-written file and a crash leaves the old file intact.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    // Unique per process and call, so concurrent writers never share a temporary file.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}-{n}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
