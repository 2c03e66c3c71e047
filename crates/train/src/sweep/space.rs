//! Search spaces in Optuna's vocabulary: `{ type = "float", low, high, log, step }`, `{ type = "int", low, high,
//! log, step }`, `{ type = "categorical", choices = [...] }` (`optuna.distributions.FloatDistribution`,
//! `IntDistribution`, `CategoricalDistribution`). A parameter's value is kept in Optuna's internal
//! representation: the number itself for float and int, the index of the choice for categorical.

use std::collections::BTreeMap;

use finetune_data::split::Rng;

use super::SweepError;

/// One parameter's distribution.
#[derive(Debug, Clone, PartialEq)]
pub enum Distribution {
    /// `low <= x <= high`; `log` samples uniformly in log space (low > 0); `step` discretises to
    /// `low + k * step` (not with `log`).
    Float { low: f64, high: f64, log: bool, step: Option<f64> },
    /// Integers `low, low + step, ... <= high`; `log` samples in log space (then step is 1).
    Int { low: i64, high: i64, log: bool, step: i64 },
    /// One of `choices` (strings, numbers or booleans).
    Categorical { choices: Vec<toml::Value> },
}

/// Parameter name → distribution, in name order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchSpace {
    pub params: BTreeMap<String, Distribution>,
}

fn num(v: &toml::Value) -> Option<f64> {
    match v {
        toml::Value::Float(f) => Some(*f),
        toml::Value::Integer(i) => Some(*i as f64),
        _ => None,
    }
}

impl Distribution {
    /// Parses `{ type = ..., ... }`; `origin` names the file and key in errors.
    pub fn from_toml(origin: &str, value: &toml::Value) -> Result<Self, SweepError> {
        let bad = |m: String| SweepError::Input(format!("{origin}: {m}"));
        let toml::Value::Table(t) = value else {
            return Err(bad(format!(
                "expected a table such as {{ type = \"float\", low = 1e-5, high = 1e-3, log = true }}, got {}",
                value.type_str()
            )));
        };
        let kind = t
            .get("type")
            .and_then(toml::Value::as_str)
            .ok_or_else(|| bad("missing `type` (\"float\", \"int\" or \"categorical\")".into()))?;
        let allowed: &[&str] = match kind {
            "float" | "int" => &["type", "low", "high", "log", "step"],
            "categorical" => &["type", "choices"],
            other => return Err(bad(format!("type {other:?} is not one of \"float\", \"int\", \"categorical\""))),
        };
        if let Some(k) = t.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(bad(format!("unknown field `{k}` for type {kind:?} (allowed: {})", allowed.join(", "))));
        }
        let log = match t.get("log") {
            None => false,
            Some(v) => v.as_bool().ok_or_else(|| bad("`log` must be true or false".into()))?,
        };
        let get = |k: &str| -> Result<f64, SweepError> {
            t.get(k).and_then(num).ok_or_else(|| bad(format!("`{k}` must be a number")))
        };
        match kind {
            "float" => {
                let (low, high) = (get("low")?, get("high")?);
                let step = t.get("step").map(|_| get("step")).transpose()?;
                if !(low.is_finite() && high.is_finite()) || low > high {
                    return Err(bad(format!("low ({low}) must be <= high ({high})")));
                }
                if log && low <= 0.0 {
                    return Err(bad(format!("log = true needs low > 0 (got {low})")));
                }
                if log && step.is_some() {
                    return Err(bad("`step` and `log = true` cannot be used together".into()));
                }
                if step.is_some_and(|s| s <= 0.0 || !s.is_finite()) {
                    return Err(bad("`step` must be > 0".into()));
                }
                Ok(Distribution::Float { low, high, log, step })
            }
            "int" => {
                let int = |k: &str| -> Result<i64, SweepError> {
                    t.get(k).and_then(toml::Value::as_integer).ok_or_else(|| bad(format!("`{k}` must be an integer")))
                };
                let (low, high) = (int("low")?, int("high")?);
                let step = if t.contains_key("step") { int("step")? } else { 1 };
                if low > high {
                    return Err(bad(format!("low ({low}) must be <= high ({high})")));
                }
                if step < 1 {
                    return Err(bad("`step` must be >= 1".into()));
                }
                if log && (low < 1 || step != 1) {
                    return Err(bad("log = true needs low >= 1 and step = 1".into()));
                }
                Ok(Distribution::Int { low, high, log, step })
            }
            _ => {
                let choices = t
                    .get("choices")
                    .and_then(toml::Value::as_array)
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| bad("`choices` must be a non-empty array".into()))?;
                if let Some(c) = choices.iter().find(|c| matches!(c, toml::Value::Table(_) | toml::Value::Array(_))) {
                    return Err(bad(format!("choices must be strings, numbers or booleans, not {}", c.type_str())));
                }
                Ok(Distribution::Categorical { choices: choices.clone() })
            }
        }
    }

    /// The run-file value of an internal representation.
    pub fn to_toml(&self, x: f64) -> toml::Value {
        match self {
            Distribution::Float { .. } => toml::Value::Float(x),
            Distribution::Int { .. } => toml::Value::Integer(x.round() as i64),
            Distribution::Categorical { choices } => {
                choices.get(x.round().max(0.0) as usize).cloned().unwrap_or(toml::Value::Float(x))
            }
        }
    }

    /// The value as JSON (for results files).
    pub fn to_json(&self, x: f64) -> serde_json::Value {
        match self.to_toml(x) {
            toml::Value::Float(f) => serde_json::json!(f),
            toml::Value::Integer(i) => serde_json::json!(i),
            toml::Value::Boolean(b) => serde_json::json!(b),
            toml::Value::String(s) => serde_json::json!(s),
            other => serde_json::json!(other.to_string()),
        }
    }

    /// Whether an internal value lies in the distribution (on its grid).
    pub fn contains(&self, x: f64) -> bool {
        match self {
            Distribution::Float { low, high, step, .. } => {
                x >= *low
                    && x <= *high
                    && step.is_none_or(|s| {
                        let k = ((x - low) / s).round();
                        (low + k * s - x).abs() <= 1e-8 * s.max(1.0)
                    })
            }
            Distribution::Int { low, high, step, .. } => {
                x.fract() == 0.0 && x >= *low as f64 && x <= *high as f64 && (x as i64 - low) % step == 0
            }
            Distribution::Categorical { choices } => x.fract() == 0.0 && x >= 0.0 && (x as usize) < choices.len(),
        }
    }

    /// Optuna's `RandomSampler`: uniform (in log space when `log`), on the step grid when there is one.
    pub fn sample_uniform(&self, rng: &mut Rng) -> f64 {
        match self {
            Distribution::Float { low, high, log: true, .. } => {
                (low.ln() + rng.uniform() * (high.ln() - low.ln())).exp().clamp(*low, *high)
            }
            Distribution::Float { low, high, step: Some(s), .. } => {
                let n = ((high - low) / s + 1e-9).floor() as usize + 1;
                (low + rng.below(n) as f64 * s).min(*high)
            }
            Distribution::Float { low, high, .. } => low + rng.uniform() * (high - low),
            Distribution::Int { low, high, log: true, .. } => {
                // Optuna: uniform in [log(low - 0.5), log(high + 0.5)], rounded.
                let (a, b) = ((*low as f64 - 0.5).ln(), (*high as f64 + 0.5).ln());
                (a + rng.uniform() * (b - a)).exp().round().clamp(*low as f64, *high as f64)
            }
            Distribution::Int { low, high, step, .. } => {
                let n = ((high - low) / step) as usize + 1;
                (*low + rng.below(n) as i64 * step) as f64
            }
            Distribution::Categorical { choices } => rng.below(choices.len()) as f64,
        }
    }

    /// Every value of a discrete distribution (grid search); `None` for a float without `step`.
    pub fn grid(&self) -> Option<Vec<f64>> {
        match self {
            Distribution::Float { step: None, .. } => None,
            Distribution::Float { low, high, step: Some(s), .. } => {
                let n = ((high - low) / s + 1e-9).floor() as usize + 1;
                Some((0..n).map(|k| (low + k as f64 * s).min(*high)).collect())
            }
            Distribution::Int { low, high, step, .. } => {
                Some((0..=((high - low) / step)).map(|k| (low + k * step) as f64).collect())
            }
            Distribution::Categorical { choices } => Some((0..choices.len()).map(|i| i as f64).collect()),
        }
    }

    /// Optuna's JSON form of the distribution (stored with the study, compared on resume).
    pub fn describe(&self) -> serde_json::Value {
        match self {
            Distribution::Float { low, high, log, step } => {
                serde_json::json!({ "type": "float", "low": low, "high": high, "log": log, "step": step })
            }
            Distribution::Int { low, high, log, step } => {
                serde_json::json!({ "type": "int", "low": low, "high": high, "log": log, "step": step })
            }
            Distribution::Categorical { .. } => {
                let choices: Vec<serde_json::Value> =
                    (0..self.grid().map_or(0, |g| g.len())).map(|i| self.to_json(i as f64)).collect();
                serde_json::json!({ "type": "categorical", "choices": choices })
            }
        }
    }
}

impl SearchSpace {
    /// Parses the parameter entries (tables) of `table`; `origin` names the file and table in errors.
    pub fn from_table(origin: &str, table: &toml::Table) -> Result<Self, SweepError> {
        let mut params = BTreeMap::new();
        for (k, v) in table {
            if v.is_table() {
                params.insert(k.clone(), Distribution::from_toml(&format!("{origin}: key `{k}`"), v)?);
            }
        }
        Ok(SearchSpace { params })
    }

    pub fn describe(&self) -> serde_json::Value {
        serde_json::Value::Object(self.params.iter().map(|(k, d)| (k.clone(), d.describe())).collect())
    }

    /// All grid points in row-major order (the last parameter varies fastest); an error names a float parameter
    /// without `step`.
    pub fn grid_points(&self) -> Result<Vec<BTreeMap<String, f64>>, SweepError> {
        let mut points = vec![BTreeMap::new()];
        for (name, d) in &self.params {
            let values = d.grid().ok_or_else(|| {
                SweepError::Input(format!(
                    "sampler \"grid\": parameter `{name}` is a float without `step`; give `step` or use \"random\"/\"tpe\""
                ))
            })?;
            points = points
                .into_iter()
                .flat_map(|p| {
                    values.iter().map(move |&v| {
                        let mut q = p.clone();
                        q.insert(name.clone(), v);
                        q
                    })
                })
                .collect();
        }
        Ok(points)
    }
}
