//! Probabilistic metrics of a classifier: scikit-learn's `log_loss` and `calibration_curve`, with a streaming
//! accumulator for the log loss (it keeps one number per example, never the probability rows).

use crate::error::{MetricError, Result};
use crate::ranking::np_sum;

/// `np.finfo(np.float64).eps`: the clipping bound sklearn applies to float64 probabilities.
const EPS: f64 = f64::EPSILON;

/// One example's loss: `-ln(clip(p, eps, 1 - eps))` of the probability given to its true class.
fn example_loss(p_true: f64) -> f64 {
    -p_true.clamp(EPS, 1.0 - EPS).ln()
}

fn check_row(row: &[f64], y: usize, i: usize) -> Result<()> {
    if y >= row.len() {
        return Err(MetricError::value(format!(
            "y_true[{i}] = {y} is not a column of y_pred (it has {} columns)",
            row.len()
        )));
    }
    if row.iter().any(|p| !p.is_finite()) {
        return Err(MetricError::value("Input y_pred contains NaN or infinity."));
    }
    Ok(())
}

/// `sklearn.metrics.log_loss(y_true, y_pred, labels=range(n_classes))` for class indices `y_true` and
/// probability rows `y_pred` (one column per class, float64): the mean over examples of
/// `-ln(clip(y_pred[i][y_true[i]], eps, 1 - eps))` with `eps = np.finfo(float64).eps`, averaged as
/// `np.average` does (numpy's pairwise sum divided by n). Rows are used as given (sklearn 1.9 only warns
/// when they do not sum to one). Empty input is a `ValueError`, as in sklearn.
pub fn log_loss(y_true: &[usize], y_pred: &[Vec<f64>]) -> Result<f64> {
    let mut acc = LogLossAccumulator::new();
    acc.update(y_true, y_pred)?;
    acc.compute()
}

/// Streaming [`log_loss`]: batches of (class index, probability row); the result equals the one-shot call
/// on the concatenation.
#[derive(Debug, Clone, Default)]
pub struct LogLossAccumulator {
    losses: Vec<f64>,
}

impl LogLossAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, y_true: &[usize], y_pred: &[Vec<f64>]) -> Result<()> {
        if y_true.len() != y_pred.len() {
            return Err(MetricError::value(format!(
                "Found input variables with inconsistent numbers of samples: [{}, {}]",
                y_true.len(),
                y_pred.len()
            )));
        }
        for (i, (&y, row)) in y_true.iter().zip(y_pred).enumerate() {
            check_row(row, y, self.losses.len() + i)?;
        }
        self.losses.extend(y_true.iter().zip(y_pred).map(|(&y, row)| example_loss(row[y])));
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.losses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.losses.is_empty()
    }

    pub fn compute(&self) -> Result<f64> {
        if self.losses.is_empty() {
            return Err(MetricError::value(
                "Found array with 0 sample(s) (shape=(0,)) while a minimum of 1 is required.",
            ));
        }
        Ok(np_sum(&self.losses) / self.losses.len() as f64)
    }
}

/// Output of [`calibration_curve`]: for each non-empty bin, the fraction of positives (`prob_true`), the mean
/// predicted probability (`prob_pred`) and, beyond sklearn, the number of examples in it (`count`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CalibrationCurve {
    pub prob_true: Vec<f64>,
    pub prob_pred: Vec<f64>,
    pub count: Vec<u64>,
}

/// `sklearn.calibration.calibration_curve(y_true, y_prob, n_bins=n_bins, strategy="uniform")` for binary
/// truth: `n_bins` equal-width bins over [0, 1] (`np.searchsorted(bins[1:-1], y_prob)`, so a probability on an
/// inner edge falls in the lower bin), empty bins dropped. Probabilities outside [0, 1] and `n_bins` = 0 are a
/// `ValueError`; so is empty input.
pub fn calibration_curve(y_true: &[bool], y_prob: &[f64], n_bins: usize) -> Result<CalibrationCurve> {
    if y_true.len() != y_prob.len() {
        return Err(MetricError::value(format!(
            "Found input variables with inconsistent numbers of samples: [{}, {}]",
            y_true.len(),
            y_prob.len()
        )));
    }
    if y_prob.is_empty() {
        return Err(MetricError::value("Found array with 0 sample(s) (shape=(0,)) while a minimum of 1 is required."));
    }
    if n_bins == 0 {
        return Err(MetricError::value("n_bins must be a positive integer"));
    }
    if y_prob.iter().any(|p| !(0.0..=1.0).contains(p)) {
        return Err(MetricError::value("y_prob has values outside [0, 1]."));
    }
    // np.linspace(0, 1, n_bins + 1): start + i * step, the last forced to 1.
    let step = 1.0 / n_bins as f64;
    let inner: Vec<f64> = (1..n_bins).map(|i| i as f64 * step).collect();
    let mut sums = vec![0.0; n_bins];
    let mut trues = vec![0.0; n_bins];
    let mut totals = vec![0u64; n_bins];
    for (&y, &p) in y_true.iter().zip(y_prob) {
        // searchsorted(side="left"): the number of inner edges strictly below p.
        let b = inner.partition_point(|&e| e < p);
        sums[b] += p;
        trues[b] += if y { 1.0 } else { 0.0 };
        totals[b] += 1;
    }
    let mut out = CalibrationCurve { prob_true: Vec::new(), prob_pred: Vec::new(), count: Vec::new() };
    for b in 0..n_bins {
        if totals[b] > 0 {
            out.prob_true.push(trues[b] / totals[b] as f64);
            out.prob_pred.push(sums[b] / totals[b] as f64);
            out.count.push(totals[b]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_loss_of_certain_predictions_is_clipped() {
        let l = log_loss(&[0, 1], &[vec![1.0, 0.0], vec![0.0, 1.0]]).unwrap();
        assert!(l > 0.0 && l < 1e-15, "{l}");
        let wrong = log_loss(&[0], &[vec![0.0, 1.0]]).unwrap();
        assert!((wrong - -(EPS.ln())).abs() < 1e-12);
    }

    #[test]
    fn bad_input_is_a_value_error() {
        assert_eq!(log_loss(&[], &[]).unwrap_err().kind(), "ValueError");
        assert_eq!(log_loss(&[2], &[vec![0.5, 0.5]]).unwrap_err().kind(), "ValueError");
        assert_eq!(calibration_curve(&[true], &[1.5], 5).unwrap_err().kind(), "ValueError");
    }
}
