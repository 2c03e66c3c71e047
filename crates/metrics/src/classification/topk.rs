//! `sklearn.metrics.top_k_accuracy_score`.

use std::cmp::Ordering;

use super::{check_lengths, Label};
use crate::error::{MetricError, Result};

/// `y_score` of `top_k_accuracy_score`: one score per sample (binary case: the score of the greater label) or
/// one row of per-class scores per sample, columns in sorted label order.
#[derive(Debug, Clone, Copy)]
pub enum TopKScores<'a> {
    Binary(&'a [f64]),
    Matrix(&'a [Vec<f64>]),
}

/// `sklearn.metrics.top_k_accuracy_score(y_true, y_score, k=, normalize=, sample_weight=, labels=)`: the
/// (weighted) fraction of samples whose true class is among the `k` highest scores. Ties rank the higher
/// class index first (sklearn sorts with a stable ascending argsort and reverses it). In the binary case
/// with `k == 1`, a sample is predicted positive when its score exceeds 0.5 (scores within [0, 1]) or 0.
pub fn top_k_accuracy_score<L: Label>(
    y_true: &[L],
    y_score: TopKScores,
    k: usize,
    normalize: bool,
    sample_weight: Option<&[f64]>,
    labels: Option<&[L]>,
) -> Result<f64> {
    if k < 1 {
        return Err(MetricError::value(format!(
            "The 'k' parameter of top_k_accuracy_score must be an int in the range [1, inf). Got {k} instead."
        )));
    }
    if y_true.is_empty() {
        return Err(MetricError::value("Found array with 0 sample(s) (shape=(0,)) while a minimum of 1 is required."));
    }
    let mut uniq: Vec<&L> = y_true.iter().collect();
    uniq.sort();
    uniq.dedup();
    let binary = uniq.len() <= 2 && !matches!(labels, Some(l) if l.len() > 2);
    let scores_finite = match y_score {
        TopKScores::Binary(s) => s.iter().all(|x| x.is_finite()),
        TopKScores::Matrix(m) => m.iter().flatten().all(|x| x.is_finite()),
    };
    if !scores_finite {
        return Err(MetricError::value("Input contains NaN, infinity or a value too large for dtype('float64')."));
    }
    if let TopKScores::Matrix(m) = y_score {
        if m.iter().any(|r| r.len() != m.first().map_or(0, Vec::len)) {
            return Err(MetricError::value("setting an array element with a sequence: inhomogeneous shape"));
        }
        if m.is_empty() {
            return Err(MetricError::value("Found array with 0 sample(s) while a minimum of 1 is required."));
        }
    }
    let column: Vec<f64>;
    let y_score = match y_score {
        TopKScores::Matrix(m) if binary => {
            let cols = m.first().map_or(0, Vec::len);
            if cols != 1 {
                return Err(MetricError::value(format!(
                    "`y_true` is binary while y_score is 2d with {cols} classes. If `y_true` does not contain all the labels, `labels` must be provided."
                )));
            }
            column = m.iter().map(|r| r[0]).collect();
            TopKScores::Binary(&column)
        }
        TopKScores::Binary(_) if !binary => {
            return Err(MetricError::value(
                "`y_score` needs to be of shape `(n_samples, n_classes)`, since `y_true` contains multiple classes.",
            ))
        }
        s => s,
    };
    let (n_rows, n_score_classes) = match y_score {
        TopKScores::Binary(s) => (s.len(), 2),
        TopKScores::Matrix(m) => (m.len(), m.first().map_or(0, Vec::len)),
    };
    check_lengths(y_true.len(), n_rows, sample_weight.map(<[f64]>::len))?;
    let classes: Vec<&L> = match labels {
        None => {
            if uniq.len() != n_score_classes {
                return Err(MetricError::value(format!(
                    "Number of classes in 'y_true' ({}) not equal to the number of classes in 'y_score' ({n_score_classes}).",
                    uniq.len()
                )));
            }
            uniq
        }
        Some(l) => {
            let mut c: Vec<&L> = l.iter().collect();
            c.sort();
            c.dedup();
            if c.len() != l.len() {
                return Err(MetricError::value("Parameter 'labels' must be unique."));
            }
            if c.iter().zip(l).any(|(a, b)| *a != b) {
                return Err(MetricError::value("Parameter 'labels' must be ordered."));
            }
            if c.len() != n_score_classes {
                return Err(MetricError::value(format!(
                    "Number of given labels ({}) not equal to the number of classes in 'y_score' ({n_score_classes}).",
                    c.len()
                )));
            }
            c
        }
    };
    let mut encoded = Vec::with_capacity(y_true.len());
    for t in y_true {
        match classes.binary_search(&t) {
            Ok(i) => encoded.push(i),
            Err(_) => return Err(MetricError::value("'y_true' contains labels not in parameter 'labels'.")),
        }
    }
    let hits: Vec<bool> = match y_score {
        TopKScores::Binary(s) => {
            if k == 1 {
                let (lo, hi) = s.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
                let threshold = if lo >= 0.0 && hi <= 1.0 { 0.5 } else { 0.0 };
                s.iter().zip(&encoded).map(|(&x, &e)| usize::from(x > threshold) == e).collect()
            } else {
                vec![true; s.len()]
            }
        }
        TopKScores::Matrix(m) => m
            .iter()
            .zip(&encoded)
            .map(|(row, &t)| {
                // Rank of the true class in the reversed stable ascending order.
                let st = row[t];
                let ahead = row
                    .iter()
                    .enumerate()
                    .filter(|&(j, &x)| match x.partial_cmp(&st) {
                        Some(Ordering::Greater) => true,
                        Some(Ordering::Equal) => j > t,
                        _ => false,
                    })
                    .count();
                ahead < k
            })
            .collect(),
    };
    let hit = |h: bool| f64::from(u8::from(h));
    match (normalize, sample_weight) {
        (true, None) => Ok(hits.iter().map(|&h| hit(h)).sum::<f64>() / hits.len() as f64),
        (true, Some(w)) => {
            let ws: f64 = w.iter().sum();
            if ws == 0.0 {
                return Err(MetricError::ZeroDivision("Weights sum to zero, can't be normalized".into()));
            }
            Ok(hits.iter().zip(w).map(|(&h, &x)| hit(h) * x).sum::<f64>() / ws)
        }
        (false, None) => Ok(hits.iter().map(|&h| hit(h)).sum()),
        (false, Some(w)) => Ok(hits.iter().zip(w).map(|(&h, &x)| hit(h) * x).sum()),
    }
}
