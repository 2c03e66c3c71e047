//! The training engine: f32 buffers on CPU, transformer kernels each with an explicit forward and backward,
//! and optimizers. No autograd tape: models call forward kernels in order and backward kernels in reverse.

pub mod tensor;

pub use tensor::{StateDict, Tensor};
