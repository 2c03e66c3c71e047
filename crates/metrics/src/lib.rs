//! Evaluation metrics that give exactly the numbers — and report text — of the Python references:
//! scikit-learn, seqeval, sacrebleu, rouge-score and HF evaluate. Each public function names the reference it
//! mirrors in its documentation. Every family also has a streaming accumulator (`update` … `compute`) whose
//! result equals the one-shot function, and [`call`] exposes everything as JSON for other languages.

pub mod calibration;
pub mod call;
pub mod common;
pub mod error;
pub mod json;

pub mod classification;
pub mod generation;
pub mod perplexity;
mod porter;
pub mod qa;
pub mod ranking;
pub mod rouge;
pub mod sequence;

pub use common::{Average, ZeroDivision};
pub use error::{MetricError, Result};
pub mod significance;
