//! Question-answering metrics of HF evaluate 0.4.6: `evaluate.load("squad")` (the official SQuAD v1.1
//! script) and `evaluate.load("exact_match")`.
//!
//! * SQuAD: answers are normalized (Python `str.lower()`, ASCII punctuation removed, the words `a`, `an`,
//!   `the` removed, whitespace collapsed); per question, exact match and token F1 are the maximum over its
//!   ground truths; results are `100 × sum / number of references`. A reference whose id has no prediction
//!   scores 0; no references is a `ZeroDivisionError`; a question with no ground truth is a `ValueError`
//!   (Python's `max()` of an empty sequence).
//! * exact_match: after removing every `regexes_to_ignore` match (in order) and optionally lowercasing and
//!   deleting ASCII punctuation / ASCII digits, the fraction of pairs whose strings are equal; no pairs gives
//!   NaN (numpy's mean of an empty array). Regexes use the `regex` crate's syntax, which matches Python's `re`
//!   for ordinary patterns (no look-around or back-references).

use std::collections::HashMap;

use regex::Regex;
use serde_json::{json, Value};

use crate::call::MetricInfo;
use crate::error::{MetricError, Result};
use crate::json::{num, Args};

pub(crate) const METRICS: &[MetricInfo] = &[
    MetricInfo { name: "squad", reference: "evaluate.load('squad')" },
    MetricInfo { name: "exact_match", reference: "evaluate.load('exact_match')" },
];

const PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// Python `str.isspace()` (Unicode White_Space plus the ASCII information separators U+001C..U+001F).
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// A character of Python's `\w` for `str` patterns: letters, numbers and `_`.
fn py_word(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '_';
    }
    // Python's \w is narrower than Rust's alphanumeric (no combining marks), so check categories L and N.
    static WORD: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    c.is_alphanumeric()
        && WORD.get_or_init(|| Regex::new(r"^[\p{L}\p{N}]$").expect("valid regex")).is_match(c.encode_utf8(&mut [0; 4]))
}

/// `normalize_answer` of the SQuAD v1.1 script, as whitespace-separated tokens.
pub fn normalize_answer(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punc: String = lower.chars().filter(|c| !PUNCTUATION.contains(*c)).collect();
    // `re.sub(r"\b(a|an|the)\b", " ", text)`: a match is exactly a maximal run of word characters equal
    // to one of the articles.
    let mut no_articles = String::with_capacity(no_punc.len());
    let mut run_start: Option<usize> = None;
    let flush = |out: &mut String, run: &str| {
        if matches!(run, "a" | "an" | "the") {
            out.push(' ');
        } else {
            out.push_str(run);
        }
    };
    for (i, c) in no_punc.char_indices() {
        if py_word(c) {
            run_start.get_or_insert(i);
        } else {
            if let Some(st) = run_start.take() {
                flush(&mut no_articles, &no_punc[st..i]);
            }
            no_articles.push(c);
        }
    }
    if let Some(st) = run_start {
        flush(&mut no_articles, &no_punc[st..]);
    }
    let mut out = String::with_capacity(no_articles.len());
    for tok in no_articles.split(py_isspace).filter(|t| !t.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(tok);
    }
    out
}

/// `f1_score(prediction, ground_truth)` of the SQuAD script on already normalized strings.
fn f1_normalized(prediction: &str, ground_truth: &str) -> f64 {
    let p: Vec<&str> = prediction.split(' ').filter(|t| !t.is_empty()).collect();
    let g: Vec<&str> = ground_truth.split(' ').filter(|t| !t.is_empty()).collect();
    let mut counts: HashMap<&str, i64> = HashMap::with_capacity(p.len());
    for t in &p {
        *counts.entry(t).or_insert(0) += 1;
    }
    let mut same = 0usize;
    for t in &g {
        if let Some(c) = counts.get_mut(t) {
            if *c > 0 {
                *c -= 1;
                same += 1;
            }
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / p.len() as f64;
    let recall = same as f64 / g.len() as f64;
    (2.0 * precision * recall) / (precision + recall)
}

/// SQuAD exact match and F1 (both ×100).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SquadScore {
    pub exact_match: f64,
    pub f1: f64,
}

/// Streaming SQuAD: `update` once per question (in reference order), then `compute`.
#[derive(Debug, Clone, Default)]
pub struct SquadAccumulator {
    exact: f64,
    f1: f64,
    total: usize,
}

impl SquadAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one question: `prediction` is `None` when the question was not answered (scores 0).
    pub fn update<S: AsRef<str>>(&mut self, prediction: Option<&str>, ground_truths: &[S]) -> Result<()> {
        self.total += 1;
        let Some(prediction) = prediction else { return Ok(()) };
        if ground_truths.is_empty() {
            return Err(MetricError::value("max() arg is an empty sequence"));
        }
        let p = normalize_answer(prediction);
        let (mut em, mut f1) = (0.0f64, 0.0f64);
        for g in ground_truths {
            let g = normalize_answer(g.as_ref());
            em = em.max(f64::from(u8::from(p == g)));
            f1 = f1.max(f1_normalized(&p, &g));
        }
        self.exact += em;
        self.f1 += f1;
        Ok(())
    }

    pub fn compute(&self) -> Result<SquadScore> {
        if self.total == 0 {
            return Err(MetricError::ZeroDivision("float division by zero".into()));
        }
        let n = self.total as f64;
        Ok(SquadScore { exact_match: 100.0 * self.exact / n, f1: 100.0 * self.f1 / n })
    }
}

/// One SQuAD question: its id and ground-truth answer texts.
#[derive(Debug, Clone)]
pub struct SquadReference {
    pub id: String,
    pub answers: Vec<String>,
}

/// `evaluate.load("squad").compute(predictions, references)`: predictions are (id, text) pairs (a repeated
/// id keeps its last text); every reference counts, in order.
pub fn squad(predictions: &[(String, String)], references: &[SquadReference]) -> Result<SquadScore> {
    if predictions.len() != references.len() {
        return Err(MetricError::value(format!(
            "Mismatch in the number of predictions ({}) and references ({})",
            predictions.len(),
            references.len()
        )));
    }
    let by_id: HashMap<&str, &str> = predictions.iter().map(|(id, t)| (id.as_str(), t.as_str())).collect();
    let mut acc = SquadAccumulator::new();
    for r in references {
        acc.update(by_id.get(r.id.as_str()).copied(), &r.answers)?;
    }
    acc.compute()
}

/// Options of `evaluate.load("exact_match").compute(...)`.
#[derive(Debug, Clone, Default)]
pub struct ExactMatchOptions {
    pub regexes_to_ignore: Vec<Regex>,
    pub ignore_case: bool,
    pub ignore_punctuation: bool,
    pub ignore_numbers: bool,
}

impl ExactMatchOptions {
    /// Compiles `regexes_to_ignore`; a pattern the `regex` crate cannot compile is a `ValueError`.
    pub fn with_regexes<S: AsRef<str>>(mut self, patterns: &[S]) -> Result<Self> {
        self.regexes_to_ignore = patterns
            .iter()
            .map(|p| {
                Regex::new(p.as_ref())
                    .map_err(|e| MetricError::value(format!("unsupported regex {:?}: {e}", p.as_ref())))
            })
            .collect::<Result<_>>()?;
        Ok(self)
    }

    fn normalize(&self, s: &str) -> String {
        // numpy unicode arrays drop trailing NULs when the strings are stored.
        let strip = |s: &str| s.trim_end_matches('\0').to_owned();
        let mut v = if self.regexes_to_ignore.is_empty() { strip(s) } else { s.to_owned() };
        for re in &self.regexes_to_ignore {
            v = strip(&re.replace_all(&v, ""));
        }
        if self.ignore_case {
            v = v.to_lowercase();
        }
        if self.ignore_punctuation || self.ignore_numbers {
            v.retain(|c| {
                !(self.ignore_punctuation && PUNCTUATION.contains(c) || self.ignore_numbers && c.is_ascii_digit())
            });
        }
        v
    }

    /// Whether one prediction matches its reference.
    pub fn matches(&self, prediction: &str, reference: &str) -> bool {
        self.normalize(prediction) == self.normalize(reference)
    }
}

/// Streaming exact match: counts of matching pairs and pairs.
#[derive(Debug, Clone, Default)]
pub struct ExactMatchAccumulator {
    pub options: ExactMatchOptions,
    matched: usize,
    total: usize,
}

impl ExactMatchAccumulator {
    pub fn new(options: ExactMatchOptions) -> Self {
        ExactMatchAccumulator { options, matched: 0, total: 0 }
    }

    pub fn update(&mut self, prediction: &str, reference: &str) {
        self.matched += usize::from(self.options.matches(prediction, reference));
        self.total += 1;
    }

    /// Fraction of matching pairs (NaN with no pairs).
    pub fn compute(&self) -> f64 {
        self.matched as f64 / self.total as f64
    }
}

/// `evaluate.load("exact_match").compute(predictions, references, ...)["exact_match"]`.
pub fn exact_match<S: AsRef<str>>(predictions: &[S], references: &[S], options: &ExactMatchOptions) -> Result<f64> {
    if predictions.len() != references.len() {
        return Err(MetricError::value(format!(
            "Mismatch in the number of predictions ({}) and references ({})",
            predictions.len(),
            references.len()
        )));
    }
    let mut acc = ExactMatchAccumulator::new(options.clone());
    for (p, r) in predictions.iter().zip(references) {
        acc.update(p.as_ref(), r.as_ref());
    }
    Ok(acc.compute())
}

fn bad(what: &str) -> MetricError {
    MetricError::type_error(format!("squad: {what}"))
}

/// Predictions as (id, text) pairs and the references.
type SquadInput = (Vec<(String, String)>, Vec<SquadReference>);

fn squad_args(args: &Args) -> Result<SquadInput> {
    let preds = args.required("predictions")?.as_array().ok_or_else(|| bad("predictions must be an array"))?;
    let refs = args.required("references")?.as_array().ok_or_else(|| bad("references must be an array"))?;
    let str_field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let predictions = preds
        .iter()
        .map(|p| {
            str_field(p, "id")
                .zip(str_field(p, "prediction_text"))
                .ok_or_else(|| bad("each prediction needs string 'id' and 'prediction_text'"))
        })
        .collect::<Result<Vec<_>>>()?;
    let references = refs
        .iter()
        .map(|r| {
            let id = str_field(r, "id").ok_or_else(|| bad("each reference needs a string 'id'"))?;
            let texts = r
                .get("answers")
                .and_then(|a| a.get("text"))
                .and_then(Value::as_array)
                .ok_or_else(|| bad("each reference needs 'answers': {'text': [...]}"))?;
            let answers = texts
                .iter()
                .map(|t| t.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("answer texts must be strings"))?;
            Ok(SquadReference { id, answers })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((predictions, references))
}

fn run(name: &str, args: &Args) -> Result<Value> {
    match name {
        "squad" => {
            args.check_known(&["predictions", "references"])?;
            let (p, r) = squad_args(args)?;
            let s = squad(&p, &r)?;
            Ok(json!({ "exact_match": num(s.exact_match), "f1": num(s.f1) }))
        }
        _ => {
            args.check_known(&[
                "predictions",
                "references",
                "regexes_to_ignore",
                "ignore_case",
                "ignore_punctuation",
                "ignore_numbers",
            ])?;
            let predictions = args.str_vec("predictions")?;
            let references = args.str_vec("references")?;
            let regexes =
                if args.some("regexes_to_ignore").is_some() { args.str_vec("regexes_to_ignore")? } else { Vec::new() };
            let options = ExactMatchOptions {
                regexes_to_ignore: Vec::new(),
                ignore_case: args.bool("ignore_case", false)?,
                ignore_punctuation: args.bool("ignore_punctuation", false)?,
                ignore_numbers: args.bool("ignore_numbers", false)?,
            }
            .with_regexes(&regexes)?;
            Ok(json!({ "exact_match": num(exact_match(&predictions, &references, &options)?) }))
        }
    }
}

pub(crate) fn dispatch(name: &str, args: &Args) -> Option<Result<Value>> {
    METRICS.iter().any(|m| m.name == name).then(|| run(name, args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization() {
        assert_eq!(normalize_answer("The  Cat, an apple & A dog!"), "cat apple dog");
        assert_eq!(normalize_answer("theater another"), "theater another");
        assert_eq!(normalize_answer("the"), "");
    }
}
