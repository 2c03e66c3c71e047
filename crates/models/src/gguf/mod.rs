//! GGUF checkpoints (the llama.cpp format, versions 2 and 3, little-endian): a validating reader over a
//! memory-mapped file, dequantisation to f32, the Llama tensor-name mapping to Hugging Face names, and the
//! tokenizer and chat template stored in the metadata.
//!
//! The layout follows the `gguf` Python package (`gguf_reader.py`, `constants.py`, `quants.py`) and
//! llama.cpp's `ggml-quants.c`. Every count, length, offset and size read from the file is checked against the
//! file's size before anything is allocated, so a malformed or hostile file gives an error naming the file and
//! the key or tensor, never a panic or an allocation larger than the file implies.

mod dequant;
pub mod export;
mod llama;
mod reader;
mod tokenizer;
pub mod writer;

use std::path::PathBuf;

pub use self::dequant::{dequantize, DequantError};
pub use self::llama::{
    gguf_to_hf_name, llama_arch, llama_config, llama_state_dict, load_llama, permute_rows, unpermute_rows, LlamaArch,
    LlamaGguf, LLAMA_ARCHS,
};
pub use self::reader::{GgmlType, GgufFile, MetaArray, MetaValue, TensorInfo, DEFAULT_ALIGNMENT, GGUF_MAGIC};
pub use self::tokenizer::{
    gguf_tokenizer, GgufTokenizer, LLAMA3_SPLIT_REGEX, QWEN2_SPLIT_REGEX, SUPPORTED_PRE_TOKENIZERS,
};

/// Errors reading a GGUF file or turning it into a model.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The header or metadata is malformed (truncated, out of bounds, bad magic, bad version, ...).
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    /// A metadata key is malformed, missing or of the wrong type.
    #[error("{path}: metadata `{key}`: {message}")]
    Key { path: PathBuf, key: String, message: String },
    /// A tensor's info or data is malformed, or its type cannot be dequantised.
    #[error("{path}: tensor `{tensor}`: {message}")]
    Tensor { path: PathBuf, tensor: String, message: String },
    /// The file is valid GGUF but describes something this loader does not handle.
    #[error("{path}: unsupported: {message}")]
    Unsupported { path: PathBuf, message: String },
}
