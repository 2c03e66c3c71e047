//! GELU with the tanh approximation, as GPT-2's `gelu_new` (`NewGELUActivation`) and
//! `torch.nn.functional.gelu(approximate="tanh")`: `½ x (1 + tanh(√(2/π) (x + 0.044715 x³)))`.

use crate::math::for_each_row;

const K: f32 = 0.797_884_6; // √(2/π)
const A: f32 = 0.044_715;
const CHUNK: usize = 4096;

pub fn forward(out: &mut [f32], inp: &[f32]) {
    let _prof = crate::profile::scope("gelu_tanh.forward");
    let n = inp.len();
    for_each_row(&mut out[..n], CHUNK, |i, o| {
        for (o, &x) in o.iter_mut().zip(&inp[i * CHUNK..]) {
            *o = 0.5 * x * (1.0 + (K * (x + A * x * x * x)).tanh());
        }
    });
}

/// `d ← d · gelu'(inp)` in place.
pub fn backward(d: &mut [f32], inp: &[f32]) {
    let _prof = crate::profile::scope("gelu_tanh.backward");
    let n = inp.len();
    for_each_row(&mut d[..n], CHUNK, |i, g| {
        for (g, &x) in g.iter_mut().zip(&inp[i * CHUNK..]) {
            let th = (K * (x + A * x * x * x)).tanh();
            let dth = (1.0 - th * th) * K * (1.0 + 3.0 * A * x * x);
            *g *= 0.5 * (1.0 + th) + 0.5 * x * dth;
        }
    });
}

pub mod reference {
    pub fn forward(out: &mut [f32], inp: &[f32]) {
        let k = (2.0 / std::f64::consts::PI).sqrt();
        for (o, &x) in out.iter_mut().zip(inp) {
            let x = x as f64;
            *o = (0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::*;

    #[test]
    fn matches_reference_and_finite_differences() {
        for n in [37, 10_000] {
            let x: Vec<f32> = rand_vec(n, 1).iter().map(|v| v * 5.0).collect();
            let (mut o, mut r) = (vec![0.0; n], vec![0.0; n]);
            forward(&mut o, &x);
            reference::forward(&mut r, &x);
            assert_close(&o, &r, 1e-6, "gelu_tanh");
            let dout = rand_vec(n, 2);
            let mut d = dout.clone();
            backward(&mut d, &x);
            check_fd(&x, &d, 1e-2, 2e-3, "fd gelu_tanh", |xs| {
                let mut o = vec![0.0; n];
                reference::forward(&mut o, xs);
                weighted(&o, &dout)
            });
        }
    }
}
