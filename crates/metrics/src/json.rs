//! JSON conventions of the `call` interface and the fixtures.
//!
//! Floats that JSON cannot represent are written as the strings `"NaN"`, `"Infinity"` and `"-Infinity"`
//! (Python's `float()` reads them back); every other number is a plain JSON number. Arguments use the
//! reference's keyword names; a JSON `null` is Python's `None`, which is distinct from an absent argument.

use serde_json::{Map, Value};

use crate::common::{Average, ZeroDivision};
use crate::error::{MetricError, Result};

/// A float as JSON, with non-finite values as strings.
pub fn num(x: f64) -> Value {
    if x.is_nan() {
        Value::String("NaN".into())
    } else if x.is_infinite() {
        Value::String(if x > 0.0 { "Infinity" } else { "-Infinity" }.into())
    } else {
        serde_json::Number::from_f64(x).map(Value::Number).unwrap_or(Value::Null)
    }
}

/// A float array as JSON.
pub fn nums(xs: &[f64]) -> Value {
    Value::Array(xs.iter().map(|&x| num(x)).collect())
}

/// Reads a float written by [`num`] (also accepts booleans as 0/1, as numpy does).
pub fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::String(s) => match s.as_str() {
            "NaN" | "nan" => Some(f64::NAN),
            "Infinity" | "inf" => Some(f64::INFINITY),
            "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

/// Keyword arguments of one call, read with the reference's names.
pub struct Args<'a> {
    metric: &'a str,
    map: &'a Map<String, Value>,
}

static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();

impl<'a> Args<'a> {
    pub fn new(metric: &'a str, args: &'a Value) -> Result<Self> {
        match args {
            Value::Object(map) => Ok(Args { metric, map }),
            Value::Null => Ok(Args { metric, map: EMPTY.get_or_init(Map::new) }),
            _ => Err(MetricError::type_error(format!("{metric}: args must be a JSON object of keyword arguments"))),
        }
    }

    pub fn metric(&self) -> &str {
        self.metric
    }

    /// Fails like Python does on an unexpected keyword argument.
    pub fn check_known(&self, known: &[&str]) -> Result<()> {
        for k in self.map.keys() {
            if !known.contains(&k.as_str()) {
                return Err(MetricError::type_error(format!(
                    "{}() got an unexpected keyword argument '{k}'",
                    self.metric
                )));
            }
        }
        Ok(())
    }

    /// The raw value: `None` if absent, `Some(Value::Null)` for Python `None`.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    /// The value if present and not `null`.
    pub fn some(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn required(&self, key: &str) -> Result<&'a Value> {
        self.map
            .get(key)
            .ok_or_else(|| MetricError::type_error(format!("{}() missing required argument: '{key}'", self.metric)))
    }

    fn wrong(&self, key: &str, what: &str) -> MetricError {
        MetricError::type_error(format!("{}: argument '{key}' must be {what}", self.metric))
    }

    pub fn f64(&self, key: &str, default: f64) -> Result<f64> {
        match self.some(key) {
            None => Ok(default),
            Some(v) => as_f64(v).ok_or_else(|| self.wrong(key, "a number")),
        }
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        self.some(key).map(|v| as_f64(v).ok_or_else(|| self.wrong(key, "a number"))).transpose()
    }

    pub fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.some(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(self.wrong(key, "a boolean")),
        }
    }

    pub fn usize(&self, key: &str, default: usize) -> Result<usize> {
        match self.some(key) {
            None => Ok(default),
            Some(v) => v.as_u64().map(|x| x as usize).ok_or_else(|| self.wrong(key, "a non-negative integer")),
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        self.some(key).map(|v| v.as_str().ok_or_else(|| self.wrong(key, "a string"))).transpose()
    }

    pub fn str(&self, key: &str, default: &'a str) -> Result<&'a str> {
        Ok(self.opt_str(key)?.unwrap_or(default))
    }

    pub fn f64_vec(&self, key: &str) -> Result<Vec<f64>> {
        to_f64_vec(self.required(key)?).ok_or_else(|| self.wrong(key, "an array of numbers"))
    }

    pub fn opt_f64_vec(&self, key: &str) -> Result<Option<Vec<f64>>> {
        self.some(key).map(|v| to_f64_vec(v).ok_or_else(|| self.wrong(key, "an array of numbers"))).transpose()
    }

    pub fn f64_matrix(&self, key: &str) -> Result<Vec<Vec<f64>>> {
        let v = self.required(key)?;
        let rows = v.as_array().ok_or_else(|| self.wrong(key, "an array of arrays of numbers"))?;
        rows.iter().map(|r| to_f64_vec(r).ok_or_else(|| self.wrong(key, "an array of arrays of numbers"))).collect()
    }

    pub fn str_vec(&self, key: &str) -> Result<Vec<String>> {
        to_str_vec(self.required(key)?).ok_or_else(|| self.wrong(key, "an array of strings"))
    }

    pub fn str_matrix(&self, key: &str) -> Result<Vec<Vec<String>>> {
        let v = self.required(key)?;
        let rows = v.as_array().ok_or_else(|| self.wrong(key, "an array of arrays of strings"))?;
        rows.iter().map(|r| to_str_vec(r).ok_or_else(|| self.wrong(key, "an array of arrays of strings"))).collect()
    }

    /// `zero_division=`: `"warn"`, 0, 1 or NaN (`"NaN"`).
    pub fn zero_division(&self, default: ZeroDivision) -> Result<ZeroDivision> {
        match self.some("zero_division") {
            None => Ok(default),
            Some(Value::String(s)) if s == "warn" => Ok(ZeroDivision::Warn),
            Some(v) => match as_f64(v) {
                Some(x) if x.is_nan() => Ok(ZeroDivision::NaN),
                Some(0.0) => Ok(ZeroDivision::Zero),
                Some(1.0) => Ok(ZeroDivision::One),
                _ => Err(MetricError::value(format!(
                    "The 'zero_division' parameter of {} must be a str among {{'warn'}}, a float among {{0.0, 1.0, nan}}. Got {v} instead.",
                    self.metric
                ))),
            },
        }
    }

    /// `average=` with the reference's default for this metric (`None` for Python `None`).
    pub fn average(&self, default: Option<&str>) -> Result<Average> {
        match self.get("average") {
            None => Average::parse(default),
            Some(Value::Null) => Ok(Average::None),
            Some(Value::String(s)) => Average::parse(Some(s)),
            Some(_) => Err(self.wrong("average", "a string or null")),
        }
    }
}

fn to_f64_vec(v: &Value) -> Option<Vec<f64>> {
    v.as_array()?.iter().map(as_f64).collect()
}

fn to_str_vec(v: &Value) -> Option<Vec<String>> {
    v.as_array()?.iter().map(|x| x.as_str().map(str::to_owned)).collect()
}

/// Most `digits` a text report formats with: Rust's formatter refuses a precision above 65 535 (Python would print
/// that many zeros), and no f64 has more than 17 significant digits.
pub const MAX_REPORT_DIGITS: u64 = 1000;

/// Refuses a report precision above [`MAX_REPORT_DIGITS`] (a `ValueError`, as for a negative one).
pub fn check_digits(digits: u64) -> crate::error::Result<()> {
    if digits > MAX_REPORT_DIGITS {
        return Err(crate::error::MetricError::value(format!(
            "digits={digits} is larger than the supported maximum {MAX_REPORT_DIGITS}"
        )));
    }
    Ok(())
}
