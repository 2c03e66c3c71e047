//! Softmax cross-entropy on logits `[n, classes]` as `torch.nn.functional.cross_entropy` with mean reduction:
//! targets equal to `ignore_index` (−100) are skipped, optional class weights, optional label smoothing ε.
//!
//! `loss = Σ_i [(1−ε)·w[y_i]·(−log p_{i,y_i}) + (ε/C)·Σ_c w[c]·(−log p_{i,c})] / Σ_i w[y_i]` over the kept
//! rows (w = 1 without weights); NaN when every target is ignored, as in PyTorch.
//! Rows are one per sequence, so these run serially in f64.

pub const IGNORE_INDEX: i64 = -100;

#[derive(Clone, Copy, Debug, Default)]
pub struct Options<'a> {
    pub weight: Option<&'a [f32]>,
    pub label_smoothing: f32,
}

/// Checks targets: each is `IGNORE_INDEX` or a class in `0..classes`.
pub fn validate(labels: &[i64], classes: usize) -> Result<(), String> {
    for &y in labels {
        if y != IGNORE_INDEX && (y < 0 || y as usize >= classes) {
            return Err(format!("target {y} is out of bounds for {classes} classes"));
        }
    }
    Ok(())
}

/// log Σ exp(row), so that log-softmax of class c is `row[c] − logsumexp(row)` without a buffer.
fn logsumexp(row: &[f32]) -> f64 {
    let mx = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let z: f64 = row.iter().map(|&v| (v as f64 - mx).exp()).sum();
    z.ln() + mx
}

/// Mean loss. Targets must have passed [`validate`].
pub fn forward(logits: &[f32], labels: &[i64], n: usize, classes: usize, opt: Options<'_>) -> f32 {
    let _prof = crate::profile::scope("cross_entropy.forward");
    let eps = opt.label_smoothing as f64;
    let w = |c: usize| opt.weight.map_or(1.0, |w| w[c] as f64);
    let (mut total, mut denom) = (0.0f64, 0.0f64);
    for i in 0..n {
        let y = labels[i];
        if y == IGNORE_INDEX {
            continue;
        }
        let y = y as usize;
        let row = &logits[i * classes..(i + 1) * classes];
        let lz = logsumexp(row);
        let nll = -(row[y] as f64 - lz) * w(y);
        let smooth: f64 = (0..classes).map(|c| -(row[c] as f64 - lz) * w(c)).sum();
        total += (1.0 - eps) * nll + eps / classes as f64 * smooth;
        denom += w(y);
    }
    (total / denom) as f32
}

/// `dlogits = dloss · ∂loss/∂logits` (overwritten; ignored rows get zeros).
pub fn backward(
    dlogits: &mut [f32],
    logits: &[f32],
    labels: &[i64],
    n: usize,
    classes: usize,
    opt: Options<'_>,
    dloss: f32,
) {
    let _prof = crate::profile::scope("cross_entropy.backward");
    let eps = opt.label_smoothing as f64;
    let w = |c: usize| opt.weight.map_or(1.0, |w| w[c] as f64);
    let denom: f64 = labels[..n].iter().filter(|&&y| y != IGNORE_INDEX).map(|&y| w(y as usize)).sum();
    let wsum: f64 = (0..classes).map(w).sum();
    for i in 0..n {
        let d = &mut dlogits[i * classes..(i + 1) * classes];
        let y = labels[i];
        if y == IGNORE_INDEX {
            d.fill(0.0);
            continue;
        }
        let y = y as usize;
        let row = &logits[i * classes..(i + 1) * classes];
        let lz = logsumexp(row);
        let coef = (1.0 - eps) * w(y) + eps / classes as f64 * wsum;
        for c in 0..classes {
            let mut g = (row[c] as f64 - lz).exp() * coef - eps / classes as f64 * w(c);
            if c == y {
                g -= (1.0 - eps) * w(y);
            }
            d[c] = (g / denom * dloss as f64) as f32;
        }
    }
}

pub mod reference {
    use super::{Options, IGNORE_INDEX};

    /// The definition with an explicit smoothed target distribution.
    pub fn forward(logits: &[f32], labels: &[i64], n: usize, classes: usize, opt: Options<'_>) -> f64 {
        let eps = opt.label_smoothing as f64;
        let w = |c: usize| opt.weight.map_or(1.0, |w| w[c] as f64);
        let (mut num, mut den) = (0.0, 0.0);
        for i in 0..n {
            if labels[i] == IGNORE_INDEX {
                continue;
            }
            let y = labels[i] as usize;
            let row = &logits[i * classes..(i + 1) * classes];
            let z: f64 = row.iter().map(|&v| (v as f64).exp()).sum();
            for c in 0..classes {
                // The true class carries (1−ε)·w[y]; smoothing spreads ε/C over every class, weighted by w[c].
                let true_w = if c == y { (1.0 - eps) * w(y) } else { 0.0 };
                let term_w = true_w + eps / classes as f64 * w(c);
                num += term_w * -((row[c] as f64).exp() / z).ln();
            }
            den += w(y);
        }
        num / den
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::*;

    #[test]
    fn matches_reference_and_finite_differences() {
        let (n, c) = (6, 4);
        let logits: Vec<f32> = rand_vec(n * c, 1).iter().map(|v| v * 3.0).collect();
        let labels = [0i64, 3, IGNORE_INDEX, 1, 2, 3];
        let weight = [0.5f32, 2.0, 1.0, 1.5];
        for opt in [
            Options::default(),
            Options { weight: Some(&weight), label_smoothing: 0.0 },
            Options { weight: None, label_smoothing: 0.1 },
            Options { weight: Some(&weight), label_smoothing: 0.2 },
        ] {
            let loss = forward(&logits, &labels, n, c, opt);
            let want = reference::forward(&logits, &labels, n, c, opt);
            assert!((loss as f64 - want).abs() < 1e-6 * (1.0 + want.abs()), "{loss} vs {want}");
            let mut d = vec![0.0; n * c];
            backward(&mut d, &logits, &labels, n, c, opt, 1.0);
            check_fd(&logits, &d, 1e-3, 1e-3, "fd ce", |x| reference::forward(x, &labels, n, c, opt));
            assert!(d[2 * c..3 * c].iter().all(|v| *v == 0.0));
        }
        assert!(forward(&logits[..c], &[IGNORE_INDEX], 1, c, Options::default()).is_nan());
        assert!(validate(&[0, 3, -100], 4).is_ok());
        assert!(validate(&[4], 4).is_err());
        assert!(validate(&[-1], 4).is_err());
    }

    #[test]
    fn known_value() {
        // torch.nn.functional.cross_entropy(torch.tensor([[1., 2., 3.]]), torch.tensor([0])) = 2.4076059644
        let loss = forward(&[1.0, 2.0, 3.0], &[0], 1, 3, Options::default());
        assert!((loss - 2.407_606).abs() < 1e-6);
    }
}
