//! The language-neutral interface: `{"metric": NAME, "args": {...}}` in, `{"result": ...}` or
//! `{"error": {"kind": ..., "message": ...}}` out. NAME is a name from [`list`]; `args` uses the reference's
//! keyword names; results have the reference's structure and field names (see [`crate::json`] for NaN/inf).

use serde_json::{json, Value};

use crate::error::{MetricError, Result};
use crate::json::Args;

/// One metric of the `call` interface and the Python function it mirrors.
#[derive(Debug, Clone, Copy)]
pub struct MetricInfo {
    /// Name used in `{"metric": NAME}`.
    pub name: &'static str,
    /// The reference, e.g. `sklearn.metrics.f1_score`.
    pub reference: &'static str,
}

type Dispatch = fn(&str, &Args) -> Option<Result<Value>>;

/// Each family lists its metrics and answers the names it owns.
const FAMILIES: &[(&[MetricInfo], Dispatch)] = &[
    (crate::classification::METRICS, crate::classification::dispatch),
    (crate::ranking::METRICS, crate::ranking::dispatch),
    (crate::sequence::METRICS, crate::sequence::dispatch),
    (crate::generation::METRICS, crate::generation::dispatch),
    (crate::rouge::METRICS, crate::rouge::dispatch),
    (crate::qa::METRICS, crate::qa::dispatch),
    (crate::perplexity::METRICS, crate::perplexity::dispatch),
    (crate::significance::METRICS, crate::significance::dispatch),
];

/// Every metric the `call` interface answers, in a stable order.
pub fn list() -> Vec<MetricInfo> {
    FAMILIES.iter().flat_map(|(m, _)| m.iter().copied()).collect()
}

/// Calls metric `name` with keyword arguments `args` (a JSON object).
pub fn call(name: &str, args: &Value) -> Result<Value> {
    let args = Args::new(name, args)?;
    for (_, dispatch) in FAMILIES {
        if let Some(result) = dispatch(name, &args) {
            return result;
        }
    }
    Err(MetricError::Key(format!("unknown metric '{name}' (see `finetune metrics list`)")))
}

/// Answers one request line; never fails: a bad request becomes an `{"error": ...}` object.
pub fn call_line(line: &str) -> Value {
    let request: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return error_value("JSONDecodeError", &format!("invalid JSON request: {e}")),
    };
    let Some(name) = request.get("metric").and_then(Value::as_str) else {
        return error_value("ValueError", "request must be an object with a string field 'metric'");
    };
    let args = request.get("args").unwrap_or(&Value::Null);
    match call(name, args) {
        Ok(result) => json!({ "result": result }),
        Err(e) => error_value(e.kind(), &e.to_string()),
    }
}

fn error_value(kind: &str, message: &str) -> Value {
    json!({ "error": { "kind": kind, "message": message } })
}
