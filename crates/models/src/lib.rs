//! Model architectures on the engine's kernels (one file per architecture, forward and backward side by side),
//! task heads, Hugging Face checkpoint I/O (safetensors, restricted `.bin` unpickling, hub cache layout) and
//! tokenizers.

mod acts;
pub mod batch;
pub mod bert;
pub mod causal;
pub mod causal_tokenizer;
pub mod checkpoint;
pub mod config;
pub mod decoder;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod gpt2;
pub mod llama;
pub mod lora;
pub mod onnx;
pub mod params;
pub mod phi;
mod tokenize_impl;
pub mod tokenizer;
