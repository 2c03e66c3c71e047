//! JSON adapter of the classification metrics for [`crate::call`].
//!
//! Labels are JSON arrays of integers or strings. As with numpy, an array mixing both is an array of strings
//! (integers spelled in decimal); `y_true` and `y_pred` of different kinds fail like sklearn ("Mix of label
//! input types"). A `labels` argument of the other kind than the data follows numpy's promotion to strings
//! as sklearn does (see `with_labels`); a `pos_label` of the other kind matches no label.

use serde_json::{json, Value};

use super::report::ReportOptions;
use super::topk::{top_k_accuracy_score, TopKScores};
use super::{check_lengths, CmNormalize, ConfusionAccumulator, KappaWeights, Label, PosLabel};
use crate::call::MetricInfo;
use crate::common::{Average, ZeroDivision};
use crate::error::{MetricError, Result};
use crate::json::{num, nums, Args};

const fn info(name: &'static str, reference: &'static str) -> MetricInfo {
    MetricInfo { name, reference }
}

pub(crate) const METRICS: &[MetricInfo] = &[
    info("accuracy_score", "sklearn.metrics.accuracy_score"),
    info("precision_score", "sklearn.metrics.precision_score"),
    info("recall_score", "sklearn.metrics.recall_score"),
    info("f1_score", "sklearn.metrics.f1_score"),
    info("fbeta_score", "sklearn.metrics.fbeta_score"),
    info("precision_recall_fscore_support", "sklearn.metrics.precision_recall_fscore_support"),
    info("confusion_matrix", "sklearn.metrics.confusion_matrix"),
    info("classification_report", "sklearn.metrics.classification_report"),
    info("matthews_corrcoef", "sklearn.metrics.matthews_corrcoef"),
    info("cohen_kappa_score", "sklearn.metrics.cohen_kappa_score"),
    info("balanced_accuracy_score", "sklearn.metrics.balanced_accuracy_score"),
    info("top_k_accuracy_score", "sklearn.metrics.top_k_accuracy_score"),
];

pub(crate) fn dispatch(name: &str, args: &Args) -> Option<Result<Value>> {
    if !METRICS.iter().any(|m| m.name == name) {
        return None;
    }
    Some(run(name, args))
}

/// A label array as read from JSON.
enum Labels {
    Int(Vec<i64>),
    Str(Vec<String>),
}

impl Labels {
    fn len(&self) -> usize {
        match self {
            Labels::Int(v) => v.len(),
            Labels::Str(v) => v.len(),
        }
    }

    fn is_str(&self) -> bool {
        matches!(self, Labels::Str(_))
    }

    fn into_strings(self) -> Vec<String> {
        match self {
            Labels::Int(v) => v.iter().map(i64::to_string).collect(),
            Labels::Str(v) => v,
        }
    }
}

fn parse_labels(args: &Args, key: &str) -> Result<Labels> {
    let wrong = || {
        MetricError::type_error(format!("{}: argument '{key}' must be an array of integers or strings", args.metric()))
    };
    let arr = args.required(key)?.as_array().ok_or_else(wrong)?;
    if arr.iter().all(|v| v.is_i64()) {
        return Ok(Labels::Int(arr.iter().filter_map(Value::as_i64).collect()));
    }
    arr.iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.clone()),
            v if v.is_i64() => Ok(v.to_string()),
            _ => Err(wrong()),
        })
        .collect::<Result<Vec<_>>>()
        .map(Labels::Str)
}

fn opt_labels(args: &Args, key: &str) -> Result<Option<Labels>> {
    args.some(key).map(|_| parse_labels(args, key)).transpose()
}

/// Label types the JSON interface can hold.
trait JsonLabel: Label + Sized {
    /// The `labels=` argument in this type (integers for string data become strings).
    fn convert(labels: Labels) -> Result<Vec<Self>>;
    /// A `pos_label` value in this type; `None` when it cannot equal any label of this type.
    fn pos_label(v: &Value) -> Option<Self>;
}

impl JsonLabel for i64 {
    fn convert(labels: Labels) -> Result<Vec<Self>> {
        match labels {
            Labels::Int(v) => Ok(v),
            Labels::Str(_) => Err(MetricError::type_error("labels must be integers for integer targets")),
        }
    }

    fn pos_label(v: &Value) -> Option<Self> {
        v.as_i64()
    }
}

impl JsonLabel for String {
    fn convert(labels: Labels) -> Result<Vec<Self>> {
        Ok(labels.into_strings())
    }

    fn pos_label(v: &Value) -> Option<Self> {
        v.as_str().map(str::to_owned)
    }
}

fn run(name: &str, args: &Args) -> Result<Value> {
    if name == "top_k_accuracy_score" {
        return top_k(args);
    }
    let (tk, pk) = if name == "cohen_kappa_score" { ("y1", "y2") } else { ("y_true", "y_pred") };
    let known: &[&str] = match name {
        "accuracy_score" => &["y_true", "y_pred", "normalize", "sample_weight"],
        "confusion_matrix" => &["y_true", "y_pred", "labels", "sample_weight", "normalize"],
        "precision_score" | "recall_score" | "f1_score" => {
            &["y_true", "y_pred", "labels", "pos_label", "average", "sample_weight", "zero_division"]
        }
        "fbeta_score" => {
            &["y_true", "y_pred", "beta", "labels", "pos_label", "average", "sample_weight", "zero_division"]
        }
        "precision_recall_fscore_support" => &[
            "y_true",
            "y_pred",
            "beta",
            "labels",
            "pos_label",
            "average",
            "warn_for",
            "sample_weight",
            "zero_division",
        ],
        "classification_report" => {
            &["y_true", "y_pred", "labels", "target_names", "sample_weight", "digits", "output_dict", "zero_division"]
        }
        "matthews_corrcoef" => &["y_true", "y_pred", "sample_weight"],
        "cohen_kappa_score" => &["y1", "y2", "labels", "weights", "sample_weight", "replace_undefined_by"],
        _ => &["y_true", "y_pred", "sample_weight", "adjusted"],
    };
    args.check_known(known)?;
    let yt = parse_labels(args, tk)?;
    let yp = parse_labels(args, pk)?;
    let weights = args.opt_f64_vec("sample_weight")?;
    check_lengths(yt.len(), yp.len(), weights.as_ref().map(Vec::len))?;
    let mut labels = opt_labels(args, "labels")?;
    let prf_family = known.contains(&"pos_label");
    if prf_family
        && args.average(if name == "precision_recall_fscore_support" { None } else { Some("binary") })?
            == Average::Binary
    {
        // average="binary" ignores `labels`.
        labels = None;
    }
    let w = weights.as_deref();
    match (yt, yp) {
        (a, b)
            if labels.as_ref().is_some_and(|l| l.len() > 0 && l.is_str() != a.is_str()) && a.is_str() == b.is_str() =>
        {
            // numpy promotes labels of the other kind together with the data to strings; what matches then
            // differs per function (see `Foreign`).
            let (a, b) = (a.into_strings(), b.into_strings());
            with_labels(name, args, &a, &b, w, labels, true)
        }
        (Labels::Int(a), Labels::Int(b)) => with_labels(name, args, &a, &b, w, labels, false),
        (Labels::Str(a), Labels::Str(b)) => with_labels(name, args, &a, &b, w, labels, false),
        (a, b) if a.len() == 0 => with_labels(name, args, &a.into_strings(), &b.into_strings(), w, labels, false),
        (a, b) => Err(MetricError::value(format!(
            "Mix of label input types (string and number); y_true is {} and y_pred is {}",
            if a.is_str() { "string" } else { "number" },
            if b.is_str() { "string" } else { "number" }
        ))),
    }
}

fn zero_division(args: &Args) -> Result<ZeroDivision> {
    // JSON spells the float NaN "NaN"; the Python string "nan" is not a valid value.
    if args.some("zero_division").and_then(Value::as_str).is_some_and(|s| s != "warn" && s != "NaN") {
        return Err(MetricError::value(
            "The 'zero_division' parameter must be a str among {'warn'}, a float among {0.0, 1.0, nan}.",
        ));
    }
    args.zero_division(ZeroDivision::Warn)
}

/// Runs metric `name` on labels of one kind. `foreign`: `labels` were of the other kind than the data and
/// everything was converted to strings. sklearn then matches them as strings in the per-label statistics
/// (precision/recall/F, the report rows), but its confusion matrix looks labels up by their original value
/// and finds none (an all-zero matrix, so kappa is undefined), and the report never calls its micro average
/// "accuracy" (a Python set of ints never contains the strings).
fn with_labels<L: JsonLabel>(
    name: &str,
    args: &Args,
    yt: &[L],
    yp: &[L],
    w: Option<&[f64]>,
    labels: Option<Labels>,
    foreign: bool,
) -> Result<Value> {
    let labels: Option<Vec<L>> = labels.map(L::convert).transpose()?;
    let mut acc = ConfusionAccumulator::new();
    match name {
        "accuracy_score" => {
            let normalize = args.bool("normalize", true)?;
            acc.update_opt(yt, yp, w)?;
            Ok(num(acc.accuracy_score(normalize)?))
        }
        "confusion_matrix" => {
            let normalize = match args.opt_str("normalize")? {
                None => None,
                Some("true") => Some(CmNormalize::True),
                Some("pred") => Some(CmNormalize::Pred),
                Some("all") => Some(CmNormalize::All),
                Some(o) => {
                    return Err(MetricError::value(format!(
                        "normalize must be one of 'true', 'pred', 'all' or None, got '{o}'"
                    )))
                }
            };
            acc.update_opt(yt, yp, w)?;
            let mut cm = acc.confusion_matrix(labels.as_deref(), normalize)?;
            if foreign {
                cm.iter_mut().flatten().for_each(|x| *x = 0.0);
            }
            Ok(Value::Array(cm.iter().map(|r| nums(r)).collect()))
        }
        "precision_score" | "recall_score" | "f1_score" | "fbeta_score" | "precision_recall_fscore_support" => {
            let prfs = name == "precision_recall_fscore_support";
            let beta = if name == "fbeta_score" {
                crate::json::as_f64(args.required("beta")?)
                    .ok_or_else(|| MetricError::type_error("fbeta_score: argument 'beta' must be a number"))?
            } else {
                args.f64("beta", 1.0)?
            };
            let average = args.average(if prfs { None } else { Some("binary") })?;
            let zd = zero_division(args)?;
            acc.update_opt(yt, yp, w)?;
            let t = acc.table()?;
            let pos_label = match args.get("pos_label") {
                None => {
                    let one = L::default_pos_label();
                    PosLabel { position: one.and_then(|l| acc.position(&l)), name: "1".into() }
                }
                Some(v) => PosLabel {
                    position: L::pos_label(v).and_then(|l| acc.position(&l)),
                    name: v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                },
            };
            let sel = labels.as_ref().map(|l| acc.select(l));
            let r = t.prfs(sel.as_deref(), &pos_label, average, beta, zd)?;
            let averaged = average != Average::None;
            let pick = |v: &[f64]| if averaged { num(v[0]) } else { nums(v) };
            Ok(match name {
                "precision_score" => pick(&r.precision),
                "recall_score" => pick(&r.recall),
                "f1_score" | "fbeta_score" => pick(&r.fbeta),
                _ => json!({
                    "precision": pick(&r.precision),
                    "recall": pick(&r.recall),
                    "fbeta": pick(&r.fbeta),
                    "support": r.support.as_deref().map_or(Value::Null, nums),
                }),
            })
        }
        "classification_report" => {
            let digits = match args.some("digits") {
                None => 2,
                Some(v) => v.as_u64().map(|d| d as usize).ok_or_else(|| {
                    MetricError::value(format!("The 'digits' parameter of classification_report must be an int in the range [0, inf). Got {v} instead."))
                })?,
            };
            crate::json::check_digits(digits as u64)?;
            let output_dict = args.bool("output_dict", false)?;
            let zd = zero_division(args)?;
            let target_names = args.some("target_names").map(|_| args.str_vec("target_names")).transpose()?;
            acc.update_opt(yt, yp, w)?;
            let opts =
                ReportOptions { labels: labels.as_deref(), target_names: target_names.as_deref(), zero_division: zd };
            let report = acc.report_impl(&opts, foreign)?;
            if output_dict {
                Ok(report.to_json())
            } else {
                Ok(Value::String(report.to_text(digits)?))
            }
        }
        "matthews_corrcoef" => {
            acc.update_opt(yt, yp, w)?;
            Ok(num(acc.matthews_corrcoef()?))
        }
        "cohen_kappa_score" => {
            let weights = match args.opt_str("weights")? {
                None => None,
                Some("linear") => Some(KappaWeights::Linear),
                Some("quadratic") => Some(KappaWeights::Quadratic),
                Some(o) => {
                    return Err(MetricError::value(format!("weights must be 'linear', 'quadratic' or None, got '{o}'")))
                }
            };
            let replace = args.f64("replace_undefined_by", f64::NAN)?;
            acc.update_opt(yt, yp, w)?;
            let k = acc.cohen_kappa_score(labels.as_deref(), weights)?;
            let k = if foreign { f64::NAN } else { k };
            Ok(num(if k.is_nan() { replace } else { k }))
        }
        _ => {
            let adjusted = args.bool("adjusted", false)?;
            acc.update_opt(yt, yp, w)?;
            Ok(num(acc.balanced_accuracy_score(adjusted)?))
        }
    }
}

fn top_k(args: &Args) -> Result<Value> {
    args.check_known(&["y_true", "y_score", "k", "normalize", "sample_weight", "labels"])?;
    let k = match args.some("k") {
        None => 2,
        Some(v) => v.as_u64().map(|k| k as usize).ok_or_else(|| {
            MetricError::value(format!(
                "The 'k' parameter of top_k_accuracy_score must be an int in the range [1, inf). Got {v} instead."
            ))
        })?,
    };
    let normalize = args.bool("normalize", true)?;
    let weights = args.opt_f64_vec("sample_weight")?;
    let score_value = args.required("y_score")?;
    let is_matrix = score_value.as_array().is_some_and(|a| a.iter().any(Value::is_array));
    let (flat, matrix) =
        if is_matrix { (Vec::new(), args.f64_matrix("y_score")?) } else { (args.f64_vec("y_score")?, Vec::new()) };
    let scores = if is_matrix { TopKScores::Matrix(&matrix) } else { TopKScores::Binary(&flat) };
    let yt = parse_labels(args, "y_true")?;
    let labels = opt_labels(args, "labels")?;
    let r = match yt {
        Labels::Int(y) => {
            let l = labels.map(i64::convert).transpose()?;
            top_k_accuracy_score(&y, scores, k, normalize, weights.as_deref(), l.as_deref())
        }
        Labels::Str(y) => {
            let l = labels.map(String::convert).transpose()?;
            top_k_accuracy_score(&y, scores, k, normalize, weights.as_deref(), l.as_deref())
        }
    }?;
    Ok(num(r))
}
