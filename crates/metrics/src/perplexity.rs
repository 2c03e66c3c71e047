//! Perplexity of a language model's token predictions, in float64.
//!
//! There is no single Python library function with this API; the reference (scripts/reference/
//! gen_perplexity.py) is an independent float64 implementation whose logits path computes the loss the way
//! `torch.nn.functional.cross_entropy(..., ignore_index=-100)` does for a causal LM (mean over non-ignored
//! targets).
//!
//! Definitions, for token log-probabilities `ln p` (natural log; `log2` inputs are converted with `ln 2`):
//! * `perplexity` (corpus, token-weighted): `exp(-Σ ln p / N)` over all counted tokens of all sequences.
//! * `perplexities`: the same per sequence, `exp(-Σ_seq ln p / N_seq)`.
//! * `mean_perplexity`: the arithmetic mean of `perplexities`.
//!
//! A sequence (or corpus) with no counted tokens has perplexity NaN (0/0, as torch's mean over an empty
//! selection); the mean over an empty batch or over a NaN perplexity is NaN. A probability of 0 (log-prob
//! `-inf`) makes the perplexity `inf`. Inputs that are not probabilities (p outside [0, 1], ln p > 0,
//! log2 p > 0, NaN) at counted positions are a `ValueError`; masked-out positions are never read, so padding
//! may hold anything. A mask entry must be 0 or 1 (or a boolean) and the mask must have the shape of the
//! values. Logits rows that are never read (the last position, ignored targets) are not checked.

use serde_json::{json, Value};

use crate::call::MetricInfo;
use crate::error::{MetricError, Result};
use crate::json::{as_f64, num, nums, Args};

pub(crate) const METRICS: &[MetricInfo] = &[
    MetricInfo {
        name: "perplexity",
        reference: "exp(-sum(log p) / N) over masked tokens (float64 reference in scripts/reference/gen_perplexity.py)",
    },
    MetricInfo {
        name: "perplexity_from_logits",
        reference: "exp(torch.nn.functional.cross_entropy(logits[:, :-1], labels[:, 1:], ignore_index=-100))",
    },
];

/// How token scores are given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenScores {
    /// Natural-log probabilities `ln p`.
    LogProbs,
    /// Probabilities `p`.
    Probs,
    /// Base-2 log probabilities `log2 p`.
    Log2Probs,
}

impl TokenScores {
    fn arg_name(self) -> &'static str {
        match self {
            TokenScores::LogProbs => "log_probs",
            TokenScores::Probs => "probs",
            TokenScores::Log2Probs => "log2_probs",
        }
    }

    /// The negative log-likelihood in nats of one token, or a `ValueError` if `x` is not a valid score.
    fn nll(self, x: f64) -> Result<f64> {
        let valid = match self {
            TokenScores::Probs => (0.0..=1.0).contains(&x),
            TokenScores::LogProbs | TokenScores::Log2Probs => x <= 0.0,
        };
        if !valid {
            return Err(MetricError::value(format!("{}: invalid value {x}", self.arg_name())));
        }
        Ok(match self {
            TokenScores::LogProbs => -x,
            TokenScores::Probs => -x.ln(),
            TokenScores::Log2Probs => -x * std::f64::consts::LN_2,
        })
    }
}

/// Corpus and per-sequence perplexities.
#[derive(Debug, Clone, PartialEq)]
pub struct PerplexityResult {
    /// Token-weighted corpus perplexity.
    pub perplexity: f64,
    /// One perplexity per sequence.
    pub perplexities: Vec<f64>,
    /// Mean of `perplexities` (NaN for an empty batch).
    pub mean_perplexity: f64,
}

/// Streaming perplexity: the sum of negative log-likelihoods (nats) and the token count, overall and per
/// sequence. Feeding sequences one at a time gives exactly the one-shot result.
#[derive(Debug, Clone, Default)]
pub struct PerplexityAccumulator {
    nll: f64,
    tokens: usize,
    per_sequence: Vec<f64>,
}

impl PerplexityAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one sequence of token scores; `mask[i] == false` skips token `i` (padding).
    pub fn update(&mut self, kind: TokenScores, values: &[f64], mask: Option<&[bool]>) -> Result<()> {
        if let Some(m) = mask {
            if m.len() != values.len() {
                return Err(MetricError::value(format!(
                    "mask has {} positions but the sequence has {}",
                    m.len(),
                    values.len()
                )));
            }
        }
        let (mut nll, mut n) = (0.0, 0usize);
        for (i, &x) in values.iter().enumerate() {
            if mask.is_none_or(|m| m[i]) {
                nll += kind.nll(x)?;
                n += 1;
            }
        }
        self.add_sequence(nll, n);
        Ok(())
    }

    /// Adds one sequence of a causal LM: `logits[t]` (over the vocabulary) scores `labels[t + 1]`; labels
    /// equal to `ignore_index` are skipped. A label outside `0..vocab` is an `IndexError` as in torch.
    pub fn update_logits(&mut self, logits: &[Vec<f64>], labels: &[i64], ignore_index: i64) -> Result<()> {
        if logits.len() != labels.len() {
            return Err(MetricError::value(format!(
                "logits have {} positions but labels have {}",
                logits.len(),
                labels.len()
            )));
        }
        let (mut nll, mut n) = (0.0, 0usize);
        for (row, &label) in logits.iter().zip(labels.iter().skip(1)) {
            if label == ignore_index {
                continue;
            }
            let k = usize::try_from(label)
                .ok()
                .filter(|&k| k < row.len())
                .ok_or_else(|| MetricError::Index(format!("Target {label} is out of bounds.")))?;
            nll -= log_softmax_at(row, k);
            n += 1;
        }
        self.add_sequence(nll, n);
        Ok(())
    }

    fn add_sequence(&mut self, nll: f64, n: usize) {
        self.nll += nll;
        self.tokens += n;
        self.per_sequence.push((nll / n as f64).exp());
    }

    /// The sum of negative log-likelihoods (nats) and the number of counted tokens so far.
    pub fn totals(&self) -> (f64, usize) {
        (self.nll, self.tokens)
    }

    pub fn compute(&self) -> PerplexityResult {
        let mean = self.per_sequence.iter().sum::<f64>() / self.per_sequence.len() as f64;
        PerplexityResult {
            perplexity: (self.nll / self.tokens as f64).exp(),
            perplexities: self.per_sequence.clone(),
            mean_perplexity: mean,
        }
    }
}

/// `log_softmax(row)[k]`, stable (max-subtracted), in f64.
pub fn log_softmax_at(row: &[f64], k: usize) -> f64 {
    let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = row.iter().map(|&x| (x - m).exp()).sum();
    row[k] - m - sum.ln()
}

/// Perplexity of a batch of token scores (`values[b][t]`), with an optional padding mask of the same shape.
pub fn perplexity(kind: TokenScores, values: &[Vec<f64>], mask: Option<&[Vec<bool>]>) -> Result<PerplexityResult> {
    if let Some(m) = mask {
        if m.len() != values.len() {
            return Err(MetricError::value(format!("mask has {} sequences but there are {}", m.len(), values.len())));
        }
    }
    let mut acc = PerplexityAccumulator::new();
    for (b, v) in values.iter().enumerate() {
        acc.update(kind, v, mask.map(|m| m[b].as_slice()))?;
    }
    Ok(acc.compute())
}

/// Perplexity of a causal LM from `logits[b][t][v]` and `labels[b][t]` (shifted: position `t` predicts
/// `labels[t + 1]`): `exp` of the mean cross-entropy over targets not equal to `ignore_index`.
pub fn perplexity_from_logits(
    logits: &[Vec<Vec<f64>>],
    labels: &[Vec<i64>],
    ignore_index: i64,
) -> Result<PerplexityResult> {
    if logits.len() != labels.len() {
        return Err(MetricError::value(format!(
            "logits have {} sequences but labels have {}",
            logits.len(),
            labels.len()
        )));
    }
    let mut acc = PerplexityAccumulator::new();
    for (l, y) in logits.iter().zip(labels) {
        acc.update_logits(l, y, ignore_index)?;
    }
    Ok(acc.compute())
}

fn result_json(r: &PerplexityResult) -> Value {
    json!({
        "perplexity": num(r.perplexity),
        "perplexities": nums(&r.perplexities),
        "mean_perplexity": num(r.mean_perplexity),
    })
}

/// A batch `[[...], ...]`, or one sequence `[...]` as a batch of one.
fn batch<T>(v: &Value, item: impl Fn(&Value) -> Option<T>, what: &str, flat_ok: bool) -> Result<Vec<Vec<T>>> {
    let bad = || MetricError::type_error(format!("{what} must be an array of arrays of numbers"));
    let rows = v.as_array().ok_or_else(bad)?;
    if flat_ok && !rows.is_empty() && rows.iter().all(|r| !r.is_array()) {
        return Ok(vec![rows.iter().map(&item).collect::<Option<Vec<_>>>().ok_or_else(bad)?]);
    }
    rows.iter()
        .map(|r| r.as_array().and_then(|r| r.iter().map(&item).collect::<Option<Vec<_>>>()).ok_or_else(bad))
        .collect()
}

fn mask_value(v: &Value) -> Option<Result<bool>> {
    Some(match v {
        Value::Bool(b) => Ok(*b),
        _ => match as_f64(v)? {
            0.0 => Ok(false),
            1.0 => Ok(true),
            x => Err(MetricError::value(format!("mask entries must be 0 or 1, got {x}"))),
        },
    })
}

fn run(name: &str, args: &Args) -> Result<Value> {
    if name == "perplexity" {
        args.check_known(&["log_probs", "probs", "log2_probs", "mask"])?;
        let given: Vec<TokenScores> = [TokenScores::LogProbs, TokenScores::Probs, TokenScores::Log2Probs]
            .into_iter()
            .filter(|k| args.some(k.arg_name()).is_some())
            .collect();
        let [kind] = given[..] else {
            return Err(MetricError::value("pass exactly one of log_probs, probs, log2_probs"));
        };
        let values = batch(args.required(kind.arg_name())?, as_f64, kind.arg_name(), true)?;
        let mask = match args.some("mask") {
            None => None,
            Some(m) => Some(
                batch(m, mask_value, "mask", true)?
                    .into_iter()
                    .map(|r| r.into_iter().collect::<Result<Vec<bool>>>())
                    .collect::<Result<Vec<_>>>()?,
            ),
        };
        return Ok(result_json(&perplexity(kind, &values, mask.as_deref())?));
    }
    args.check_known(&["logits", "labels", "ignore_index"])?;
    let bad = |what: &str| MetricError::type_error(format!("perplexity_from_logits: {what}"));
    let logits = args
        .required("logits")?
        .as_array()
        .ok_or_else(|| bad("logits must be [batch][seq][vocab] numbers"))?
        .iter()
        .map(|seq| batch(seq, as_f64, "logits", false))
        .collect::<Result<Vec<_>>>()?;
    let labels = batch(args.required("labels")?, |v| v.as_i64(), "labels", false)?;
    let ignore_index = match args.some("ignore_index") {
        None => -100,
        Some(v) => v.as_i64().ok_or_else(|| bad("ignore_index must be an integer"))?,
    };
    Ok(result_json(&perplexity_from_logits(&logits, &labels, ignore_index)?))
}

pub(crate) fn dispatch(name: &str, args: &Args) -> Option<Result<Value>> {
    METRICS.iter().any(|m| m.name == name).then(|| run(name, args))
}
