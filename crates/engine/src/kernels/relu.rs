//! ReLU, `max(x, 0)`, as DistilBERT's classification head uses it. The backward needs only the output.

/// `out = max(inp, 0)`.
pub fn forward(out: &mut [f32], inp: &[f32]) {
    let _prof = crate::profile::scope("relu.forward");
    for (o, &x) in out.iter_mut().zip(inp) {
        *o = x.max(0.0);
    }
}

/// `dinp = dout · [out > 0]` (overwritten).
pub fn backward(dinp: &mut [f32], dout: &[f32], out: &[f32]) {
    let _prof = crate::profile::scope("relu.backward");
    for ((d, &g), &y) in dinp.iter_mut().zip(dout).zip(out) {
        *d = if y > 0.0 { g } else { 0.0 };
    }
}

pub mod reference {
    pub fn forward(out: &mut [f32], inp: &[f32]) {
        for i in 0..out.len() {
            out[i] = if inp[i] > 0.0 { inp[i] } else { 0.0 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::*;

    #[test]
    fn matches_reference_and_finite_differences() {
        let x = rand_vec(40, 1);
        let (mut o, mut r) = (vec![0.0; 40], vec![0.0; 40]);
        forward(&mut o, &x);
        reference::forward(&mut r, &x);
        assert_eq!(o, r);
        let dout = rand_vec(40, 2);
        let mut d = vec![0.0; 40];
        backward(&mut d, &dout, &o);
        check_fd(&x, &d, 1e-4, 1e-3, "fd relu", |v| {
            let mut o = vec![0.0; 40];
            reference::forward(&mut o, v);
            weighted(&o, &dout)
        });
    }
}
