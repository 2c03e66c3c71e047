//! The training engine: f32 buffers on CPU, transformer kernels each with an explicit forward and backward,
//! and optimizers. No autograd tape: models call forward kernels in order and backward kernels in reverse.
//!
//! Every kernel works on plain slices with explicit sizes, never allocates, and has a slow, obviously correct
//! `reference` twin that the tests compare against.

// Numeric kernels index several parallel arrays by the same loop variable; iterator zips would obscure them.
#![allow(clippy::needless_range_loop)]

pub mod bf16;
pub mod int8;
pub mod kernels;
pub mod math;
pub mod matmul;
pub mod profile;
pub mod simd;
pub mod tensor;

pub use tensor::{StateDict, Tensor};
