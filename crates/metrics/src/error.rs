//! Errors mirror the exception classes of the Python references, so that "the same error conditions" can be
//! checked mechanically: a fixture records `type(e).__name__` and we compare it with [`MetricError::kind`].

/// An invalid metric call. The variant names the Python exception the reference raises for the same input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    /// Python `ValueError`: inconsistent lengths, unknown `average`, labels not present, ...
    #[error("{0}")]
    Value(String),
    /// Python `TypeError`: an argument of the wrong type (e.g. mixed string and number labels).
    #[error("{0}")]
    Type(String),
    /// Python `KeyError`: a name that is not known (e.g. a tokenizer or scheme name).
    #[error("{0}")]
    Key(String),
    /// Python `ZeroDivisionError` (sacrebleu and rouge raise it on some empty inputs).
    #[error("{0}")]
    ZeroDivision(String),
    /// Python `IndexError`.
    #[error("{0}")]
    Index(String),
}

impl MetricError {
    /// The Python exception class name this error corresponds to.
    pub fn kind(&self) -> &'static str {
        match self {
            MetricError::Value(_) => "ValueError",
            MetricError::Type(_) => "TypeError",
            MetricError::Key(_) => "KeyError",
            MetricError::ZeroDivision(_) => "ZeroDivisionError",
            MetricError::Index(_) => "IndexError",
        }
    }

    pub fn value(msg: impl Into<String>) -> Self {
        MetricError::Value(msg.into())
    }

    pub fn type_error(msg: impl Into<String>) -> Self {
        MetricError::Type(msg.into())
    }
}

pub type Result<T, E = MetricError> = std::result::Result<T, E>;
