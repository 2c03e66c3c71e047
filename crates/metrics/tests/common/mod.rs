//! Runs the reference fixtures through the `call` interface and compares with what the Python reference
//! returned. Fixtures are written by `scripts/reference/gen_*.py` (pinned versions) and committed.
//!
//! Comparison: floats to 1e-9 relative (1e-12 absolute near zero), NaN equals NaN, strings byte for byte,
//! arrays element-wise, objects key for key; an expected error matches on the Python exception class.

use serde_json::Value;

use finetune_metrics::json::as_f64;

const RTOL: f64 = 1e-9;
const ATOL: f64 = 1e-12;

fn fixture_path(file: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(file)
}

/// Loads a fixture file: `{"generator": ..., "versions": {...}, "cases": [...]}`.
pub fn load(file: &str) -> Value {
    let path = fixture_path(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Compares `actual` with `expected`; returns the first difference as a path and message.
pub fn diff(expected: &Value, actual: &Value, path: &str) -> Option<String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                match a.get(k) {
                    None => return Some(format!("{path}.{k}: missing")),
                    Some(av) => {
                        if let Some(d) = diff(ev, av, &format!("{path}.{k}")) {
                            return Some(d);
                        }
                    }
                }
            }
            a.keys().find(|k| !e.contains_key(*k)).map(|k| format!("{path}.{k}: unexpected key"))
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Some(format!("{path}: length {} != expected {}", a.len(), e.len()));
            }
            e.iter().zip(a).enumerate().find_map(|(i, (ev, av))| diff(ev, av, &format!("{path}[{i}]")))
        }
        (Value::String(e), Value::String(a)) if e == a => None,
        (Value::Bool(e), Value::Bool(a)) if e == a => None,
        (Value::Null, Value::Null) => None,
        _ => match (number(expected), number(actual)) {
            (Some(e), Some(a)) if close(e, a) => None,
            _ => Some(format!("{path}: got {actual}, expected {expected}")),
        },
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(_) | Value::String(_) => as_f64(v),
        _ => None,
    }
}

fn close(e: f64, a: f64) -> bool {
    if e.is_nan() || a.is_nan() {
        return e.is_nan() && a.is_nan();
    }
    if e.is_infinite() || a.is_infinite() {
        return e == a;
    }
    (e - a).abs() <= ATOL + RTOL * e.abs().max(a.abs())
}

/// Runs every case of a fixture file and panics with a list of all failures.
pub fn run_fixture_file(file: &str) -> usize {
    let fixture = load(file);
    let cases = fixture["cases"].as_array().unwrap_or_else(|| panic!("{file}: no cases"));
    assert!(!cases.is_empty(), "{file}: no cases");
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let id = case.get("id").and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| i.to_string());
        let metric = case["metric"].as_str().unwrap_or_else(|| panic!("{file} case {id}: no metric"));
        let got = finetune_metrics::call::call(metric, &case["args"]);
        match (case.get("error"), got) {
            (Some(err), Ok(v)) => failures.push(format!("{id} ({metric}): expected {err}, got {v}")),
            (Some(err), Err(e)) => {
                if err["kind"].as_str() != Some(e.kind()) {
                    failures.push(format!("{id} ({metric}): expected {err}, got {}: {e}", e.kind()));
                }
            }
            (None, Err(e)) => failures.push(format!("{id} ({metric}): unexpected {}: {e}", e.kind())),
            (None, Ok(v)) => {
                if let Some(d) = diff(&case["result"], &v, "result") {
                    failures.push(format!("{id} ({metric}): {d}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{file}: {} of {} cases differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
    cases.len()
}
