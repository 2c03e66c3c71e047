//! Mean squared error, `torch.nn.functional.mse_loss` with mean reduction (regression heads).

pub fn forward(pred: &[f32], target: &[f32]) -> f32 {
    let n = pred.len() as f64;
    (pred.iter().zip(target).map(|(&p, &t)| (p as f64 - t as f64).powi(2)).sum::<f64>() / n) as f32
}

/// `dpred = dloss · 2 (pred − target) / n`.
pub fn backward(dpred: &mut [f32], pred: &[f32], target: &[f32], dloss: f32) {
    let n = pred.len() as f64;
    for ((d, &p), &t) in dpred.iter_mut().zip(pred).zip(target) {
        *d = (2.0 * (p as f64 - t as f64) / n * dloss as f64) as f32;
    }
}

pub mod reference {
    pub fn forward(pred: &[f32], target: &[f32]) -> f64 {
        let mut s = 0.0;
        for i in 0..pred.len() {
            let e = pred[i] as f64 - target[i] as f64;
            s += e * e;
        }
        s / pred.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::*;

    #[test]
    fn matches_reference_and_finite_differences() {
        let p = rand_vec(9, 1);
        let t = rand_vec(9, 2);
        assert!((forward(&p, &t) as f64 - reference::forward(&p, &t)).abs() < 1e-7);
        let mut d = vec![0.0; 9];
        backward(&mut d, &p, &t, 1.0);
        check_fd(&p, &d, 1e-3, 1e-3, "fd mse", |v| reference::forward(v, &t));
    }
}
