//! Streaming evaluation accumulators producing the metric maps HF's example scripts report, built on
//! finetune-metrics' streaming accumulators (so the numbers are scikit-learn's and seqeval's).

use std::collections::BTreeMap;

use finetune_metrics::classification::{ConfusionAccumulator, PrfOptions};
use finetune_metrics::sequence::{Chunking, EntityAccumulator, Scores};
use finetune_metrics::{Average, ZeroDivision};

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

/// Sequence classification: `loss`, `accuracy` and macro `precision`/`recall`/`f1` (sklearn, zero_division=0).
#[derive(Debug, Clone, Default)]
pub struct ClassificationEval {
    loss: LossMean,
    confusion: ConfusionAccumulator<usize>,
}

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
        }
        Ok(EvalOutput { metrics: m, num_samples: self.loss.examples, num_batches: self.loss.batches })
    }
}

/// Token classification (NER) as HF's `run_ner.py` with `seqeval`: `loss`, `precision`, `recall`, `f1`
/// (entity-level, micro, default lenient chunking) and `accuracy` (token-level).
pub struct TokenClassificationEval {
    loss: LossMean,
    entities: EntityAccumulator,
    tokens: usize,
    correct: usize,
}

impl Default for TokenClassificationEval {
    fn default() -> Self {
        TokenClassificationEval {
            loss: LossMean::default(),
            entities: EntityAccumulator::new(Chunking::Lenient, false),
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
        for (t, p) in y_true.iter().zip(y_pred) {
            self.tokens += t.len();
            self.correct += t.iter().zip(p).filter(|(a, b)| a.as_ref() == b.as_ref()).count();
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
}
