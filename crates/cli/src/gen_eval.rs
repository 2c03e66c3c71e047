//! Scores of generated text against references, for `finetune generate` and `finetune compare`: BLEU and chrF
//! (sacrebleu), ROUGE-1/2/L (rouge-score, mean F-measure), exact match (HF evaluate) and, for "type: text" line
//! outputs, entity-level F1. Each metric is a function of per-item statistics summed over items, so a paired
//! bootstrap between two systems rescores resamples without re-tokenising.

use anyhow::{anyhow, Result};
use finetune_metrics::generation::{bleu, chrf, NumRefs};
use finetune_metrics::qa::ExactMatchOptions;
use finetune_metrics::rouge::RougeScorer;
use finetune_metrics::significance::{self, PairedResult, System};
use serde_json::{json, Map, Value};

/// Sums per-item statistics into a score.
type ScoreFn = Box<dyn Fn(&[f64]) -> f64>;

/// One metric: `k` statistics per item and the score of their sum.
pub struct ItemMetric {
    pub name: &'static str,
    k: usize,
    rows: Vec<f64>,
    score: ScoreFn,
}

impl ItemMetric {
    fn sum(&self, idx: &[usize]) -> Vec<f64> {
        let mut out = vec![0.0; self.k];
        significance::sum_rows(&self.rows, self.k, idx, &mut out);
        out
    }

    /// The score over the items at `idx` (repeats allowed).
    pub fn score_of(&self, idx: &[usize]) -> f64 {
        (self.score)(&self.sum(idx))
    }

    pub fn score(&self) -> f64 {
        let all: Vec<usize> = (0..self.rows.len() / self.k.max(1)).collect();
        self.score_of(&all)
    }
}

/// The entity set of a "type: text" line output ("none" or nothing means no entity); duplicates kept, compared
/// case-sensitively after trimming, as seqeval compares (type, span) pairs.
pub fn parse_entity_lines(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| {
            let (t, v) = l.split_once(':')?;
            let (t, v) = (t.trim(), v.trim());
            (!t.is_empty() && !v.is_empty()).then(|| (t.to_string(), v.to_string()))
        })
        .collect();
    out.sort();
    out
}

/// (true positives, predicted, gold) of two entity multisets.
fn entity_counts(pred: &[(String, String)], gold: &[(String, String)]) -> [f64; 3] {
    let (mut i, mut j, mut tp) = (0, 0, 0usize);
    while i < pred.len() && j < gold.len() {
        match pred[i].cmp(&gold[j]) {
            std::cmp::Ordering::Equal => {
                tp += 1;
                i += 1;
                j += 1;
            }
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
        }
    }
    [tp as f64, pred.len() as f64, gold.len() as f64]
}

/// Which metrics to compute.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricSet {
    /// Entity-level precision/recall/F1 over "type: text" lines.
    pub entities: bool,
}

/// Every metric of `hyps` against one reference each.
pub fn item_metrics(hyps: &[String], refs: &[String], set: MetricSet) -> Result<Vec<ItemMetric>> {
    if hyps.len() != refs.len() {
        return Err(anyhow!("{} predictions for {} references", hyps.len(), refs.len()));
    }
    let n = hyps.len();
    let mut out = Vec::new();

    let bopts = bleu::BleuOptions::default();
    let mut rows = Vec::with_capacity(n * bleu::BLEU_STATS);
    for (h, r) in hyps.iter().zip(refs) {
        rows.extend(bleu::bleu_stats(h, &[Some(r.as_str())], &bopts).map_err(|e| anyhow!("bleu: {e}"))?);
    }
    let o = bopts;
    out.push(ItemMetric {
        name: "bleu",
        k: bleu::BLEU_STATS,
        rows,
        score: Box::new(move |s| {
            let mut a = [0.0; bleu::BLEU_STATS];
            a.copy_from_slice(s);
            bleu::bleu_from_stats(&a, &o, NumRefs::Fixed(1)).score
        }),
    });

    let copts = chrf::ChrfOptions::default();
    let k = copts.n_stats();
    let mut rows = Vec::with_capacity(n * k);
    for (h, r) in hyps.iter().zip(refs) {
        rows.extend(chrf::chrf_stats(h, &[Some(r.as_str())], &copts).map_err(|e| anyhow!("chrf: {e}"))?);
    }
    let o = copts;
    out.push(ItemMetric {
        name: "chrf",
        k,
        rows,
        score: Box::new(move |s| chrf::chrf_f_score(s, &o).unwrap_or(f64::NAN)),
    });

    let scorer = RougeScorer::new(&["rouge1", "rouge2", "rougeL"], true, false).map_err(|e| anyhow!("rouge: {e}"))?;
    let mut r = [Vec::with_capacity(2 * n), Vec::with_capacity(2 * n), Vec::with_capacity(2 * n)];
    for (h, g) in hyps.iter().zip(refs) {
        let s = scorer.score(g, h);
        for (rows, key) in r.iter_mut().zip(["rouge1", "rouge2", "rougeL"]) {
            rows.push(s.iter().find(|(k, _)| k == key).map_or(0.0, |(_, x)| x.fmeasure));
            rows.push(1.0);
        }
    }
    let mean = |s: &[f64]| if s[1] > 0.0 { 100.0 * s[0] / s[1] } else { f64::NAN };
    for (rows, name) in r.into_iter().zip(["rouge1", "rouge2", "rougeL"]) {
        out.push(ItemMetric { name, k: 2, rows, score: Box::new(mean) });
    }

    let em = ExactMatchOptions::default();
    let mut rows = Vec::with_capacity(2 * n);
    for (h, g) in hyps.iter().zip(refs) {
        rows.push(f64::from(u8::from(em.matches(h.trim(), g.trim()))));
        rows.push(1.0);
    }
    out.push(ItemMetric { name: "exact_match", k: 2, rows, score: Box::new(mean) });

    if set.entities {
        let mut rows = Vec::with_capacity(3 * n);
        for (h, g) in hyps.iter().zip(refs) {
            rows.extend(entity_counts(&parse_entity_lines(h), &parse_entity_lines(g)));
        }
        let f1 = |s: &[f64]| if s[1] + s[2] > 0.0 { 100.0 * 2.0 * s[0] / (s[1] + s[2]) } else { 0.0 };
        let p = |s: &[f64]| if s[1] > 0.0 { 100.0 * s[0] / s[1] } else { 0.0 };
        let r = |s: &[f64]| if s[2] > 0.0 { 100.0 * s[0] / s[2] } else { 0.0 };
        out.push(ItemMetric { name: "entity_f1", k: 3, rows: rows.clone(), score: Box::new(f1) });
        out.push(ItemMetric { name: "entity_precision", k: 3, rows: rows.clone(), score: Box::new(p) });
        out.push(ItemMetric { name: "entity_recall", k: 3, rows, score: Box::new(r) });
    }
    Ok(out)
}

/// The sacrebleu signatures of the BLEU and chrF scores above.
pub fn signatures() -> Value {
    json!({
        "bleu": bleu::bleu_signature(&bleu::BleuOptions::default(), NumRefs::Fixed(1)),
        "chrf": chrf::chrf_signature(&chrf::ChrfOptions::default(), NumRefs::Fixed(1)),
    })
}

/// Scores as a JSON object (name → value).
pub fn scores(metrics: &[ItemMetric]) -> Map<String, Value> {
    metrics.iter().map(|m| (m.name.to_string(), json!(m.score()))).collect()
}

/// Paired bootstrap (sacrebleu `--paired-bs`: 1000 resamples) of `candidate` against `baseline`, metric by metric
/// (both lists from [`item_metrics`] on the same references).
pub fn paired(
    baseline: &[ItemMetric],
    candidate: &[ItemMetric],
    seed: u64,
) -> Result<Vec<(&'static str, PairedResult)>> {
    let mut out = Vec::new();
    for (b, c) in baseline.iter().zip(candidate) {
        let n = b.rows.len() / b.k.max(1);
        let r = significance::paired_bootstrap(n, 1000, seed, |system, idx| match system {
            System::Baseline => b.score_of(idx),
            System::Candidate => c.score_of(idx),
        })
        .map_err(|e| anyhow!("paired bootstrap: {e}"))?;
        out.push((b.name, r));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_lines_parse_and_count() {
        let p = parse_entity_lines("person: Bob\nnone\nloc : Paris \nperson: Bob");
        assert_eq!(p.len(), 3);
        let g = parse_entity_lines("person: Bob\nloc: London");
        assert_eq!(entity_counts(&p, &g), [1.0, 3.0, 2.0]);
        assert!(parse_entity_lines("none").is_empty());
    }

    #[test]
    fn metrics_score_identical_outputs_perfectly() {
        let refs = vec!["the cat sat on the mat".to_string(), "person: Bob".to_string()];
        let m = item_metrics(&refs, &refs, MetricSet { entities: true }).expect("metrics");
        let s = scores(&m);
        for k in ["bleu", "chrf", "rouge1", "rougeL", "exact_match", "entity_f1"] {
            assert!((s[k].as_f64().unwrap_or(0.0) - 100.0).abs() < 1e-9, "{k}: {}", s[k]);
        }
        let hyps = vec!["a dog".to_string(), "none".to_string()];
        let other = item_metrics(&hyps, &refs, MetricSet { entities: true }).expect("metrics");
        let p = paired(&other, &m, 1).expect("paired");
        assert_eq!(p.len(), m.len());
        assert!(p.iter().all(|(_, r)| r.candidate >= r.baseline));
    }
}
