//! Binary cross-entropy on logits, mean over all elements, as
//! `torch.nn.functional.binary_cross_entropy_with_logits` (multi-label classification):
//! `ℓ = max(x, 0) − x·y + log(1 + e^{−|x|})`.

pub fn forward(logits: &[f32], targets: &[f32]) -> f32 {
    let n = logits.len();
    let total: f64 = logits
        .iter()
        .zip(targets)
        .map(|(&x, &y)| {
            let x = x as f64;
            x.max(0.0) - x * y as f64 + (-x.abs()).exp().ln_1p()
        })
        .sum();
    (total / n as f64) as f32
}

/// `dlogits = dloss · (σ(x) − y) / n`.
pub fn backward(dlogits: &mut [f32], logits: &[f32], targets: &[f32], dloss: f32) {
    let n = logits.len() as f64;
    for ((d, &x), &y) in dlogits.iter_mut().zip(logits).zip(targets) {
        let s = 1.0 / (1.0 + (-(x as f64)).exp());
        *d = ((s - y as f64) / n * dloss as f64) as f32;
    }
}

pub mod reference {
    pub fn forward(logits: &[f32], targets: &[f32]) -> f64 {
        let n = logits.len() as f64;
        logits
            .iter()
            .zip(targets)
            .map(|(&x, &y)| {
                let s = 1.0 / (1.0 + (-(x as f64)).exp());
                -(y as f64 * s.ln() + (1.0 - y as f64) * (1.0 - s).ln())
            })
            .sum::<f64>()
            / n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::*;

    #[test]
    fn matches_reference_and_finite_differences() {
        let x: Vec<f32> = rand_vec(12, 1).iter().map(|v| v * 4.0).collect();
        let y: Vec<f32> = rand_vec(12, 2).iter().map(|v| if *v > 0.0 { 1.0 } else { 0.0 }).collect();
        let l = forward(&x, &y);
        assert!((l as f64 - reference::forward(&x, &y)).abs() < 1e-6);
        let mut d = vec![0.0; 12];
        backward(&mut d, &x, &y, 1.0);
        check_fd(&x, &d, 1e-3, 1e-3, "fd bce", |v| reference::forward(v, &y));
        // Large logits stay finite.
        assert!(forward(&[100.0, -100.0], &[0.0, 1.0]).is_finite());
    }
}
