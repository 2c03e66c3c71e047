//! Dataset statistics: counts, label balance, text lengths, duplicates.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::clean::count_duplicates;
use crate::example::{Example, TokenExample};
use crate::labels::label_order;

/// Percentiles of a length distribution (numpy's default linear interpolation).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LengthStats {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl LengthStats {
    /// `None` for no values.
    pub fn of(values: &mut [usize]) -> Option<LengthStats> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64;
        Some(LengthStats {
            min: values[0] as f64,
            mean,
            p50: percentile(values, 50.0),
            p90: percentile(values, 90.0),
            p95: percentile(values, 95.0),
            p99: percentile(values, 99.0),
            max: values[values.len() - 1] as f64,
        })
    }
}

/// `numpy.percentile(sorted, q)` with the default "linear" method; `sorted` must be ascending and non-empty.
pub fn percentile(sorted: &[usize], q: f64) -> f64 {
    let pos = (sorted.len() - 1) as f64 * q / 100.0;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    sorted[lo] as f64 + (sorted[hi] as f64 - sorted[lo] as f64) * frac
}

/// Statistics of a classification dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub examples: usize,
    pub labelled: usize,
    /// Examples per class, in label-map order; multi-label examples count once per class.
    pub label_counts: Vec<(String, usize)>,
    /// Share of the most frequent class over the least frequent one (1.0 is balanced).
    pub imbalance_ratio: Option<f64>,
    pub chars: Option<LengthStats>,
    pub words: Option<LengthStats>,
    /// Examples whose text duplicates an earlier one.
    pub duplicates: usize,
}

/// Computes `Stats`. Lengths are in Unicode scalar values and whitespace-separated words (of text and pair).
pub fn stats(examples: &[Example]) -> Stats {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut labelled = 0;
    let mut chars = Vec::with_capacity(examples.len());
    let mut words = Vec::with_capacity(examples.len());
    for e in examples {
        if let Some(l) = &e.label {
            labelled += 1;
            for n in l.names() {
                *counts.entry(n.as_str()).or_default() += 1;
            }
        }
        let pair = e.text_pair.as_deref().unwrap_or("");
        chars.push(e.text.chars().count() + pair.chars().count());
        words.push(e.text.split_whitespace().count() + pair.split_whitespace().count());
    }
    let mut names: Vec<String> = counts.keys().map(|s| s.to_string()).collect();
    label_order(&mut names);
    let label_counts: Vec<(String, usize)> = names.into_iter().map(|n| (n.clone(), counts[n.as_str()])).collect();
    let imbalance_ratio = {
        let max = label_counts.iter().map(|c| c.1).max();
        let min = label_counts.iter().map(|c| c.1).min();
        match (max, min) {
            (Some(a), Some(b)) if b > 0 => Some(a as f64 / b as f64),
            _ => None,
        }
    };
    Stats {
        examples: examples.len(),
        labelled,
        label_counts,
        imbalance_ratio,
        chars: LengthStats::of(&mut chars),
        words: LengthStats::of(&mut words),
        duplicates: count_duplicates(examples),
    }
}

/// Statistics of a token-classification dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenStats {
    pub sentences: usize,
    pub tokens: usize,
    /// Tokens per tag, in label-map order.
    pub tag_counts: Vec<(String, usize)>,
    /// Entity spans per type (counted from `B-`/`I-` tags: a `B-`, or an `I-` that does not continue its type).
    pub entity_counts: Vec<(String, usize)>,
    pub sentence_tokens: Option<LengthStats>,
}

pub fn token_stats(sentences: &[TokenExample]) -> TokenStats {
    let mut tags: BTreeMap<&str, usize> = BTreeMap::new();
    let mut entities: BTreeMap<&str, usize> = BTreeMap::new();
    let mut lens = Vec::with_capacity(sentences.len());
    for s in sentences {
        lens.push(s.tokens.len());
        let mut prev: Option<&str> = None;
        for t in &s.tags {
            *tags.entry(t.as_str()).or_default() += 1;
            let (prefix, ty) = match t.split_once('-') {
                Some((p, ty)) if matches!(p, "B" | "I" | "E" | "S") => (p, Some(ty)),
                _ => ("O", None),
            };
            if let Some(ty) = ty {
                if prefix == "B" || prefix == "S" || prev != Some(ty) {
                    *entities.entry(ty).or_default() += 1;
                }
            }
            prev = ty;
        }
    }
    let ordered = |m: BTreeMap<&str, usize>| -> Vec<(String, usize)> {
        let mut names: Vec<String> = m.keys().map(|s| s.to_string()).collect();
        label_order(&mut names);
        names.into_iter().map(|n| (n.clone(), m[n.as_str()])).collect()
    };
    TokenStats {
        sentences: sentences.len(),
        tokens: lens.iter().sum(),
        tag_counts: ordered(tags),
        entity_counts: ordered(entities),
        sentence_tokens: LengthStats::of(&mut lens),
    }
}
