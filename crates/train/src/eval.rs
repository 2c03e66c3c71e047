//! Streaming evaluation accumulators producing the metric maps HF's example scripts report, built on
//! finetune-metrics' streaming accumulators (so the numbers are scikit-learn's and seqeval's).

use std::collections::BTreeMap;

use finetune_metrics::calibration::{calibration_curve, CalibrationCurve, LogLossAccumulator};
use finetune_metrics::classification::{ConfusionAccumulator, PrfOptions, ReportOptions};
use finetune_metrics::ranking::{np_sum, BinaryScoreAccumulator};
use finetune_metrics::sequence::{auto_detect, Chunking, EntityAccumulator, Scheme, Scores};
use finetune_metrics::{Average, ZeroDivision};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::trainer::EvalOutput;

fn metric_err(e: finetune_metrics::MetricError) -> TrainError {
    TrainError::Model(format!("evaluation metric: {e}"))
}

/// HF's `eval_loss`: the mean over examples of each batch's mean loss (`evaluation_loop` repeats a batch's loss
/// once per example, then averages).
#[derive(Debug, Clone, Default)]
struct LossMean {
    weighted_sum: f64,
    examples: usize,
    batches: usize,
}

impl LossMean {
    fn add(&mut self, batch_mean_loss: f64, batch_examples: usize) {
        self.weighted_sum += batch_mean_loss * batch_examples as f64;
        self.examples += batch_examples;
        self.batches += 1;
    }

    fn insert(&self, m: &mut BTreeMap<String, f64>) {
        if self.examples > 0 {
            m.insert("loss".into(), self.weighted_sum / self.examples as f64);
        }
    }
}

/// Sequence classification: `loss`, `accuracy`, macro `precision`/`recall`/`f1` (sklearn, zero_division=0),
/// `matthews_correlation` (sklearn `matthews_corrcoef`) and `balanced_accuracy`; with probabilities
/// ([`add_probabilities`](Self::add_probabilities)) also `log_loss`, `roc_auc` and `average_precision` (binary:
/// the score of class 1; multi-class: one-vs-rest, macro as sklearn's default, plus `roc_auc_weighted` and
/// `average_precision_weighted` weighted by support). A ranking metric that sklearn leaves undefined (one class
/// absent from the gold labels) is left out rather than reported as NaN.
#[derive(Debug, Clone, Default)]
pub struct ClassificationEval {
    loss: LossMean,
    confusion: ConfusionAccumulator<usize>,
    /// One-vs-rest scores, one accumulator per class (binary: the positive class only).
    scores: Vec<BinaryScoreAccumulator>,
    num_classes: usize,
    log_loss: LogLossAccumulator,
    /// Examples per gold class among those with probabilities (the one-vs-rest supports).
    class_counts: Vec<f64>,
    /// Calibration input: binary, (is class 1, p(class 1)); multi-class, (correct, top probability).
    calibration: (Vec<bool>, Vec<f64>),
}

/// What a classifier's evaluation holds beyond the scalar metrics: the data behind a report's plots.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassificationDetails {
    /// Class names in label-id order (the rows and columns of the confusion matrix).
    pub labels: Vec<String>,
    /// `sklearn.metrics.confusion_matrix(y_true, y_pred, labels=range(k))`: rows gold, columns predicted.
    pub confusion_matrix: Vec<Vec<f64>>,
    /// Per class precision, recall, F1 and support (sklearn `precision_recall_fscore_support`, zero_division=0).
    pub per_class: Vec<ClassScores>,
    /// ROC curves (`roc_curve`, drop_intermediate=True): binary, class 1 only; multi-class, one per class (OvR).
    pub roc: Vec<Curve>,
    /// Precision-recall curves (`precision_recall_curve`, drop_intermediate=True), as `roc`.
    pub pr: Vec<Curve>,
    /// `calibration_curve(n_bins=10)`: binary, of p(class 1); multi-class, of the top probability against
    /// whether the prediction is right (a reliability diagram).
    pub calibration: Option<CalibrationCurve>,
}

/// One class's row of a classification report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassScores {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: f64,
}

/// One curve: `x`/`y` are (fpr, tpr) for ROC and (recall, precision) for PR; `area` is the ROC AUC or the
/// average precision; `thresholds` as sklearn returns them (the ROC's first, +inf, is written as null).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    pub label: String,
    pub area: Option<f64>,
    pub x: Vec<f64>,
    pub y: Vec<f64>,
    pub thresholds: Vec<Option<f64>>,
}

const CALIBRATION_BINS: usize = 10;

impl ClassificationEval {
    pub fn new() -> Self {
        Self::default()
    }

    /// One evaluation batch: its mean loss, gold labels and predicted labels.
    pub fn add_batch(&mut self, batch_mean_loss: f64, y_true: &[usize], y_pred: &[usize]) -> Result<()> {
        self.confusion.update(y_true, y_pred).map_err(metric_err)?;
        self.loss.add(batch_mean_loss, y_true.len());
        Ok(())
    }

    /// The same batch's class probabilities (one row per example, one column per class, rows summing to 1).
    pub fn add_probabilities(&mut self, y_true: &[usize], probs: &[Vec<f64>]) -> Result<()> {
        if y_true.len() != probs.len() {
            return Err(TrainError::Model(format!("{} labels for {} probability rows", y_true.len(), probs.len())));
        }
        let Some(k) = probs.first().map(Vec::len) else { return Ok(()) };
        if self.num_classes == 0 {
            self.num_classes = k;
            self.scores = vec![BinaryScoreAccumulator::new(); if k == 2 { 1 } else { k }];
        }
        if k != self.num_classes || probs.iter().any(|r| r.len() != k) || k < 2 {
            return Err(TrainError::Model(format!("probability rows of {k} columns for {} classes", self.num_classes)));
        }
        self.log_loss.update(y_true, probs).map_err(metric_err)?;
        self.class_counts.resize(k, 0.0);
        for &y in y_true {
            self.class_counts[y] += 1.0;
        }
        if k == 2 {
            let t: Vec<bool> = y_true.iter().map(|&y| y == 1).collect();
            let s: Vec<f64> = probs.iter().map(|r| r[1]).collect();
            self.scores[0].update(&t, &s).map_err(metric_err)?;
            self.calibration.0.extend_from_slice(&t);
            self.calibration.1.extend(s.iter().map(|p| p.clamp(0.0, 1.0)));
        } else {
            for (c, acc) in self.scores.iter_mut().enumerate() {
                let t: Vec<bool> = y_true.iter().map(|&y| y == c).collect();
                let s: Vec<f64> = probs.iter().map(|r| r[c]).collect();
                acc.update(&t, &s).map_err(metric_err)?;
            }
            for (&y, r) in y_true.iter().zip(probs) {
                let top = argmax_f64(r);
                self.calibration.0.push(top == y);
                self.calibration.1.push(r[top].clamp(0.0, 1.0));
            }
        }
        Ok(())
    }

    pub fn finish(&self) -> Result<EvalOutput> {
        let mut m = BTreeMap::new();
        self.loss.insert(&mut m);
        if self.confusion.n_samples() > 0 {
            m.insert("accuracy".into(), self.confusion.accuracy_score(true).map_err(metric_err)?);
            let opts = PrfOptions { average: Average::Macro, zero_division: ZeroDivision::Zero, ..Default::default() };
            let prf = self.confusion.precision_recall_fscore_support(&opts).map_err(metric_err)?;
            let first = |v: &[f64]| v.first().copied().unwrap_or(f64::NAN);
            m.insert("precision".into(), first(&prf.precision));
            m.insert("recall".into(), first(&prf.recall));
            m.insert("f1".into(), first(&prf.fbeta));
            m.insert("matthews_correlation".into(), self.confusion.matthews_corrcoef().map_err(metric_err)?);
            m.insert("balanced_accuracy".into(), self.confusion.balanced_accuracy_score(false).map_err(metric_err)?);
        }
        if !self.log_loss.is_empty() {
            m.insert("log_loss".into(), self.log_loss.compute().map_err(metric_err)?);
            let support = &self.class_counts;
            let auc: Option<Vec<f64>> = self.scores.iter().map(|a| a.roc_auc(None).ok()).collect();
            let ap: Option<Vec<f64>> = self.scores.iter().map(|a| a.average_precision().ok()).collect();
            if self.num_classes == 2 {
                if let Some(v) = auc.filter(|v| v[0].is_finite()) {
                    m.insert("roc_auc".into(), v[0]);
                }
                if let Some(v) = ap.filter(|v| v[0].is_finite()) {
                    m.insert("average_precision".into(), v[0]);
                }
            } else {
                // sklearn refuses multi-class OvR ROC AUC unless every class occurs in y_true.
                if let Some(v) = auc.filter(|_| support.iter().all(|&s| s > 0.0)) {
                    m.insert("roc_auc".into(), np_sum(&v) / v.len() as f64);
                    m.insert("roc_auc_weighted".into(), weighted_mean(&v, support));
                }
                if let Some(v) = ap.filter(|v| v.iter().all(|x| x.is_finite())) {
                    m.insert("average_precision".into(), np_sum(&v) / v.len() as f64);
                    m.insert("average_precision_weighted".into(), weighted_mean(&v, support));
                }
            }
        }
        Ok(EvalOutput { metrics: m, num_samples: self.loss.examples, num_batches: self.loss.batches })
    }

    /// The confusion matrix, per-class scores, curves and calibration of everything added, with `names` as the
    /// class names (label id `i` is `names[i]`; missing names print as the id).
    pub fn details(&self, names: &[String]) -> Result<ClassificationDetails> {
        let k =
            self.num_classes.max(names.len()).max(self.confusion.classes().iter().map(|&c| c + 1).max().unwrap_or(0));
        let name = |i: usize| names.get(i).cloned().unwrap_or_else(|| i.to_string());
        let mut d = ClassificationDetails { labels: (0..k).map(name).collect(), ..Default::default() };
        if self.confusion.n_samples() == 0 {
            return Ok(d);
        }
        let ids: Vec<usize> = (0..k).collect();
        d.confusion_matrix = self.confusion.confusion_matrix(Some(&ids), None).map_err(metric_err)?;
        let opts = PrfOptions {
            labels: Some(&ids),
            average: Average::None,
            zero_division: ZeroDivision::Zero,
            ..Default::default()
        };
        let prf = self.confusion.precision_recall_fscore_support(&opts).map_err(metric_err)?;
        let support = prf.support.clone().unwrap_or_default();
        for i in 0..k {
            d.per_class.push(ClassScores {
                label: name(i),
                precision: prf.precision[i],
                recall: prf.recall[i],
                f1: prf.fbeta[i],
                support: support.get(i).copied().unwrap_or(0.0),
            });
        }
        for (j, acc) in self.scores.iter().enumerate() {
            let c = if self.num_classes == 2 { 1 } else { j };
            if let Ok(r) = acc.roc_curve(true) {
                d.roc.push(Curve {
                    label: name(c),
                    area: acc.roc_auc(None).ok().filter(|v| v.is_finite()),
                    x: r.fpr,
                    y: r.tpr,
                    thresholds: r.thresholds.into_iter().map(|t| t.is_finite().then_some(t)).collect(),
                });
            }
            if let Ok(r) = acc.precision_recall_curve(true) {
                d.pr.push(Curve {
                    label: name(c),
                    area: acc.average_precision().ok().filter(|v| v.is_finite()),
                    x: r.recall,
                    y: r.precision,
                    thresholds: r.thresholds.into_iter().map(|t| t.is_finite().then_some(t)).collect(),
                });
            }
        }
        if !self.calibration.0.is_empty() {
            d.calibration = Some(
                calibration_curve(&self.calibration.0, &self.calibration.1, CALIBRATION_BINS).map_err(metric_err)?,
            );
        }
        Ok(d)
    }
}

/// `np.average(values, weights=weights)`: `sum(values * weights) / sum(weights)` with numpy's summation.
fn weighted_mean(values: &[f64], weights: &[f64]) -> f64 {
    let prod: Vec<f64> = values.iter().zip(weights).map(|(v, w)| v * w).collect();
    np_sum(&prod) / np_sum(weights)
}

fn argmax_f64(row: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Token classification (NER) as HF's `run_ner.py` with `seqeval`: `loss`, `precision`, `recall`, `f1`
/// (entity-level, micro, default lenient chunking) and `accuracy` (token-level). [`details`](Self::details)
/// adds the per-type entity reports (default and strict mode) and the token-level per-tag report.
pub struct TokenClassificationEval {
    loss: LossMean,
    entities: EntityAccumulator,
    /// Strict mode (`mode="strict"`), its scheme auto-detected (seqeval `auto_detect`) from the first batch's
    /// gold tags; `None` until then, or when no scheme fits the tags.
    strict: Option<(Scheme, EntityAccumulator)>,
    strict_failed: bool,
    /// Token-level tags (flattened), for sklearn's `classification_report` over tags.
    token_tags: ConfusionAccumulator<String>,
    tokens: usize,
    correct: usize,
}

/// The per-type and per-tag reports of a token-classification evaluation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenDetails {
    /// seqeval `classification_report` (default mode): one row per entity type, then the micro, macro and
    /// weighted averages.
    pub entities: Vec<ClassScores>,
    /// The same in strict mode with `scheme` (empty when no scheme fits the gold tags).
    pub entities_strict: Vec<ClassScores>,
    pub scheme: Option<String>,
    /// sklearn `classification_report` over the flattened tags: one row per tag, then accuracy, macro and
    /// weighted averages.
    pub tags: Vec<ClassScores>,
}

impl Default for TokenClassificationEval {
    fn default() -> Self {
        TokenClassificationEval {
            loss: LossMean::default(),
            entities: EntityAccumulator::new(Chunking::Lenient, false),
            strict: None,
            strict_failed: false,
            token_tags: ConfusionAccumulator::new(),
            tokens: 0,
            correct: 0,
        }
    }
}

impl TokenClassificationEval {
    pub fn new() -> Self {
        Self::default()
    }

    /// One batch of sentences (tags of labelled tokens only, as `run_ner.py` drops `-100` positions).
    pub fn add_batch<S: AsRef<str>>(
        &mut self,
        batch_mean_loss: f64,
        y_true: &[Vec<S>],
        y_pred: &[Vec<S>],
    ) -> Result<()> {
        self.entities.update(y_true, y_pred).map_err(metric_err)?;
        if self.strict.is_none() && !self.strict_failed && y_true.iter().any(|s| !s.is_empty()) {
            match auto_detect(y_true, false) {
                Ok(scheme) => self.strict = Some((scheme, EntityAccumulator::new(Chunking::Strict(scheme), false))),
                Err(_) => self.strict_failed = true,
            }
        }
        if let Some((_, acc)) = &mut self.strict {
            if acc.update(y_true, y_pred).is_err() {
                self.strict = None;
                self.strict_failed = true;
            }
        }
        for (t, p) in y_true.iter().zip(y_pred) {
            self.tokens += t.len();
            self.correct += t.iter().zip(p).filter(|(a, b)| a.as_ref() == b.as_ref()).count();
            let t: Vec<String> = t.iter().map(|x| x.as_ref().to_string()).collect();
            let p: Vec<String> = p.iter().map(|x| x.as_ref().to_string()).collect();
            self.token_tags.update(&t, &p).map_err(metric_err)?;
        }
        self.loss.add(batch_mean_loss, y_true.len());
        Ok(())
    }

    pub fn finish(&self) -> Result<EvalOutput> {
        let mut m = BTreeMap::new();
        self.loss.insert(&mut m);
        if self.loss.examples > 0 {
            if let Scores::Averaged { precision, recall, fscore, .. } =
                self.entities.scores(Average::Micro, 1.0, ZeroDivision::Warn).map_err(metric_err)?
            {
                m.insert("precision".into(), precision);
                m.insert("recall".into(), recall);
                m.insert("f1".into(), fscore);
            }
            if self.tokens > 0 {
                m.insert("accuracy".into(), self.correct as f64 / self.tokens as f64);
            }
        }
        Ok(EvalOutput { metrics: m, num_samples: self.loss.examples, num_batches: self.loss.batches })
    }

    /// Per-type entity reports (both modes) and the per-tag token report of everything added.
    pub fn details(&self) -> Result<TokenDetails> {
        let mut d = TokenDetails::default();
        if self.tokens == 0 {
            return Ok(d);
        }
        let rows = |r: finetune_metrics::sequence::Report| {
            r.rows
                .into_iter()
                .chain(r.averages)
                .map(|r| ClassScores {
                    label: r.name,
                    precision: r.precision,
                    recall: r.recall,
                    f1: r.f1,
                    support: r.support as f64,
                })
                .collect::<Vec<_>>()
        };
        d.entities = rows(self.entities.report(ZeroDivision::Zero).map_err(metric_err)?);
        if let Some((scheme, acc)) = &self.strict {
            if let Ok(r) = acc.report(ZeroDivision::Zero) {
                d.entities_strict = rows(r);
                d.scheme = Some(scheme.name().to_string());
            }
        }
        let opts = ReportOptions { zero_division: ZeroDivision::Zero, ..Default::default() };
        let r = self.token_tags.classification_report(&opts).map_err(metric_err)?;
        let mut micro = r.micro.clone();
        if r.micro_is_accuracy {
            micro.name = "accuracy".into();
        }
        d.tags = r
            .rows
            .iter()
            .chain([&micro, &r.macro_avg, &r.weighted_avg])
            .map(|x| ClassScores {
                label: x.name.clone(),
                precision: x.precision,
                recall: x.recall,
                f1: x.f1,
                support: x.support,
            })
            .collect();
        Ok(d)
    }
}
