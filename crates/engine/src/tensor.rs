//! A named parameter as it comes from or goes to a checkpoint: a shape and row-major f32 data.

/// Row-major f32 data with its shape. Checkpoint I/O produces and consumes these; kernels work on slices.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Tensor { shape, data }
    }

    pub fn zeros(shape: &[usize]) -> Self {
        Tensor { shape: shape.to_vec(), data: vec![0.0; shape.iter().product()] }
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }
}

/// Parameters by their Hugging Face names (e.g. `bert.encoder.layer.0.attention.self.query.weight`).
pub type StateDict = std::collections::BTreeMap<String, Tensor>;
