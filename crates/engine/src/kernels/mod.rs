//! Transformer kernels, one module each, every one a `forward` and a `backward` over plain slices plus a slow
//! `reference` used by the tests. Backward kernels accumulate (`+=`) into parameter gradients so that several
//! micro-batches can add up before an optimizer step; activation gradients are overwritten unless a flag says
//! otherwise.

pub mod adamw;
pub mod attention;
pub mod bce_with_logits;
pub mod clip_grad;
pub mod cross_entropy;
pub mod dropout;
pub mod embedding;
pub mod gelu;
pub mod layernorm;
pub mod linear;
pub mod mse;
pub mod pooler;
pub mod relu;
pub mod residual;

#[cfg(test)]
pub(crate) mod testutil;
