//! `sklearn.metrics.classification_report`: per-class precision / recall / F1 / support and the micro (or
//! "accuracy"), macro and weighted averages, rendered as sklearn's text table or its `output_dict` form.

use serde_json::{Map, Value};

use super::Table;
use crate::common::{Average, ZeroDivision};
use crate::error::{MetricError, Result};
use crate::json::num;

/// Options of `classification_report` (besides the data and `sample_weight`).
#[derive(Debug, Clone)]
pub struct ReportOptions<'a, L> {
    /// Labels to include, in this order; `None`: all present labels, sorted.
    pub labels: Option<&'a [L]>,
    /// Display names for the labels (default: the labels' `Display`).
    pub target_names: Option<&'a [String]>,
    pub zero_division: ZeroDivision,
}

impl<L> Default for ReportOptions<'_, L> {
    fn default() -> Self {
        ReportOptions { labels: None, target_names: None, zero_division: ZeroDivision::Warn }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    pub name: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: f64,
}

/// A computed classification report.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassificationReport {
    /// Per-class rows (as many as both labels and target names have, like Python's `zip`).
    pub rows: Vec<ReportRow>,
    /// Micro average; named "accuracy" when the labels cover every label of `y_true` ∪ `y_pred`, else "micro avg".
    pub micro: ReportRow,
    pub macro_avg: ReportRow,
    pub weighted_avg: ReportRow,
    /// Whether the micro row is the "accuracy" row.
    pub micro_is_accuracy: bool,
    /// Supports are weighted sums (printed as Python floats) rather than counts.
    pub weighted_support: bool,
    /// Longest target name in characters (`None` when there are no target names: text form fails like sklearn).
    name_width: Option<usize>,
}

pub(crate) fn build(
    t: &Table,
    labels: Option<&[Option<usize>]>,
    label_names: Vec<String>,
    covers_present: bool,
    target_names: Option<&[String]>,
    zd: ZeroDivision,
) -> Result<ClassificationReport> {
    if let Some(tn) = target_names {
        if tn.len() != label_names.len() && labels.is_none() {
            return Err(MetricError::value(format!(
                "Number of classes, {}, does not match size of target_names, {}. Try specifying the labels parameter",
                label_names.len(),
                tn.len()
            )));
        }
    }
    let names: Vec<String> = match target_names {
        Some(tn) => tn.to_vec(),
        None => label_names,
    };
    let name_width = names.iter().map(|n| n.chars().count()).max();
    let pos = super::PosLabel { position: None, name: String::new() };
    let per = t.prfs(labels, &pos, Average::None, 1.0, zd)?;
    let support = per.support.unwrap_or_default();
    let total_support = super::np_sum(&support);
    let rows = names
        .iter()
        .zip(&per.precision)
        .zip(&per.recall)
        .zip(&per.fbeta)
        .zip(&support)
        .map(|((((n, &p), &r), &f), &s)| ReportRow { name: n.clone(), precision: p, recall: r, f1: f, support: s })
        .collect();
    let avg = |average: Average, name: &str| -> Result<ReportRow> {
        let a = t.prfs(labels, &pos, average, 1.0, zd)?;
        Ok(ReportRow {
            name: name.into(),
            precision: a.precision[0],
            recall: a.recall[0],
            f1: a.fbeta[0],
            support: total_support,
        })
    };
    let micro_is_accuracy = labels.is_none() || covers_present;
    Ok(ClassificationReport {
        rows,
        micro: avg(Average::Micro, if micro_is_accuracy { "accuracy" } else { "micro avg" })?,
        macro_avg: avg(Average::Macro, "macro avg")?,
        weighted_avg: avg(Average::Weighted, "weighted avg")?,
        micro_is_accuracy,
        weighted_support: t.float_counts,
        name_width,
    })
}

/// Python's `'{:.{digits}f}'.format(x)`: Rust's fixed formatting is also exact with ties to even; only the
/// spelling of non-finite values differs.
fn fixed(x: f64, digits: usize) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        format!("{x:.digits$}")
    }
}

/// Python's `repr(float)` / `format(x, "")`: shortest round-trip digits, scientific notation outside
/// `1e-4 <= |x| < 1e16`.
pub fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if x == 0.0 || (-4..16).contains(&exp) {
        let s = format!("{x}");
        if s.contains('.') {
            s
        } else {
            s + ".0"
        }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

impl ClassificationReport {
    fn support_text(&self, s: f64) -> String {
        if self.weighted_support {
            py_float_repr(s)
        } else {
            format!("{}", s as i64)
        }
    }

    /// The text table, byte for byte as sklearn prints it with `digits` decimals.
    pub fn to_text(&self, digits: usize) -> Result<String> {
        let name_width = self.name_width.ok_or_else(|| MetricError::value("max() arg is an empty sequence"))?;
        let width = name_width.max("weighted avg".len()).max(digits);
        let mut out = format!("{:>width$} ", "");
        for h in ["precision", "recall", "f1-score", "support"] {
            out.push_str(&format!(" {h:>9}"));
        }
        out.push_str("\n\n");
        let line = |out: &mut String, r: &ReportRow| {
            out.push_str(&format!(
                "{:>width$}  {:>9} {:>9} {:>9} {:>9}\n",
                r.name,
                fixed(r.precision, digits),
                fixed(r.recall, digits),
                fixed(r.f1, digits),
                self.support_text(r.support)
            ));
        };
        for r in &self.rows {
            line(&mut out, r);
        }
        out.push('\n');
        if self.micro_is_accuracy {
            out.push_str(&format!(
                "{:>width$}  {:>9} {:>9} {:>9} {:>9}\n",
                self.micro.name,
                "",
                "",
                fixed(self.micro.f1, digits),
                self.support_text(self.micro.support)
            ));
        } else {
            line(&mut out, &self.micro);
        }
        line(&mut out, &self.macro_avg);
        line(&mut out, &self.weighted_avg);
        Ok(out)
    }

    /// sklearn's `output_dict=True` form: `{name: {"precision", "recall", "f1-score", "support"}}` for each
    /// class and average, with `"accuracy"` a plain number.
    pub fn to_json(&self) -> Value {
        let entry = |r: &ReportRow| {
            let mut m = Map::new();
            m.insert("precision".into(), num(r.precision));
            m.insert("recall".into(), num(r.recall));
            m.insert("f1-score".into(), num(r.f1));
            m.insert("support".into(), num(r.support));
            Value::Object(m)
        };
        let mut m = Map::new();
        for r in &self.rows {
            m.insert(r.name.clone(), entry(r));
        }
        if self.micro_is_accuracy {
            m.insert("accuracy".into(), num(self.micro.precision));
        } else {
            m.insert("micro avg".into(), entry(&self.micro));
        }
        m.insert("macro avg".into(), entry(&self.macro_avg));
        m.insert("weighted avg".into(), entry(&self.weighted_avg));
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::py_float_repr;

    #[test]
    fn float_repr_matches_python() {
        for (x, s) in [
            (3.0, "3.0"),
            (0.25003, "0.25003"),
            (1e-7, "1e-07"),
            (3.0001e20, "3.0001e+20"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (0.00012, "0.00012"),
            (-2.5e-5, "-2.5e-05"),
            (0.1 + 0.2, "0.30000000000000004"),
        ] {
            assert_eq!(py_float_repr(x), s);
        }
    }
}
