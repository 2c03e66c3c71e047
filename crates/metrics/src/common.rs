//! Argument types shared by the metric families (the same vocabulary as scikit-learn's keywords).

use crate::error::{MetricError, Result};

/// `average=` of sklearn / seqeval. `None` in Python (per-class scores) is [`Average::None`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Average {
    Binary,
    Micro,
    Macro,
    Weighted,
    Samples,
    /// Python `average=None`: one score per label.
    None,
}

impl Average {
    /// Parses the Python keyword value; `None` stands for Python's `None`.
    pub fn parse(s: Option<&str>) -> Result<Self> {
        Ok(match s {
            None => Average::None,
            Some("binary") => Average::Binary,
            Some("micro") => Average::Micro,
            Some("macro") => Average::Macro,
            Some("weighted") => Average::Weighted,
            Some("samples") => Average::Samples,
            Some(other) => {
                return Err(MetricError::value(format!(
                    "average has to be one of (None, 'micro', 'macro', 'weighted', 'samples', 'binary'), got '{other}'"
                )))
            }
        })
    }

    pub fn as_str(&self) -> Option<&'static str> {
        match self {
            Average::Binary => Some("binary"),
            Average::Micro => Some("micro"),
            Average::Macro => Some("macro"),
            Average::Weighted => Some("weighted"),
            Average::Samples => Some("samples"),
            Average::None => None,
        }
    }
}

/// `zero_division=` of sklearn / seqeval: the value a metric takes when its denominator is zero.
/// `Warn` behaves as `Zero` (the reference additionally emits an `UndefinedMetricWarning`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ZeroDivision {
    Warn,
    Zero,
    One,
    NaN,
}

impl ZeroDivision {
    /// The value substituted for an undefined ratio.
    pub fn value(self) -> f64 {
        match self {
            ZeroDivision::Warn | ZeroDivision::Zero => 0.0,
            ZeroDivision::One => 1.0,
            ZeroDivision::NaN => f64::NAN,
        }
    }
}
