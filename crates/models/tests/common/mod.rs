//! Reading the PyTorch reference fixtures (safetensors written by scripts/reference/gen_tiny_*.py).

use std::collections::BTreeMap;
use std::path::PathBuf;

use finetune_engine::{StateDict, Tensor};
use safetensors::{Dtype, SafeTensors};

pub fn fixture(dir: &str, file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(dir).join(file)
}

/// A fixture's tensors by dtype: f32 parameters/gradients/logits, i64 ids and labels, f64 scalars.
#[allow(dead_code)] // not every test binary reads reference tensors
pub struct Loaded {
    pub f32s: StateDict,
    pub i64s: BTreeMap<String, Vec<i64>>,
    #[allow(dead_code)] // not every test binary reads f64 values
    pub f64s: BTreeMap<String, Vec<f64>>,
}

#[allow(dead_code)] // not every test binary reads reference tensors
pub fn load(path: PathBuf) -> Loaded {
    let bytes = std::fs::read(&path).expect("fixture readable");
    let st = SafeTensors::deserialize(&bytes).expect("valid safetensors");
    let mut out = Loaded { f32s: StateDict::new(), i64s: Default::default(), f64s: Default::default() };
    for (name, view) in st.tensors() {
        let d = view.data();
        match view.dtype() {
            Dtype::F32 => {
                let v = d.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                out.f32s.insert(name, Tensor::new(view.shape().to_vec(), v));
            }
            Dtype::I64 => {
                let v = d.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect();
                out.i64s.insert(name, v);
            }
            Dtype::F64 => {
                let v = d.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes"))).collect();
                out.f64s.insert(name, v);
            }
            other => panic!("unexpected dtype {other:?} for {name}"),
        }
    }
    out
}

/// `‖a − b‖ / ‖b‖` in f64.
#[allow(dead_code)] // not every test binary compares tensors
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>().sqrt();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>().sqrt();
    num / den.max(1e-30)
}

/// The largest elementwise difference.
#[allow(dead_code)] // not every test binary compares tensors
pub fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
