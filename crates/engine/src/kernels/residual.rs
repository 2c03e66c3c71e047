//! Residual connection `out = a + b`. Its backward is the identity into both inputs, which models express by
//! accumulating the same gradient into two places ([`add_assign`]).

use crate::math::PAR_THRESHOLD;
use rayon::prelude::*;

pub fn forward(out: &mut [f32], a: &[f32], b: &[f32]) {
    let _prof = crate::profile::scope("residual.forward");
    if out.len() >= PAR_THRESHOLD {
        out.par_chunks_mut(4096).zip(a.par_chunks(4096)).zip(b.par_chunks(4096)).for_each(|((o, a), b)| {
            for ((o, x), y) in o.iter_mut().zip(a).zip(b) {
                *o = x + y;
            }
        });
    } else {
        for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
            *o = x + y;
        }
    }
}

/// `acc += x`: the residual's backward into the branch that already holds a gradient.
pub fn add_assign(acc: &mut [f32], x: &[f32]) {
    let _prof = crate::profile::scope("residual.add");
    if acc.len() >= PAR_THRESHOLD {
        acc.par_chunks_mut(4096).zip(x.par_chunks(4096)).for_each(|(o, x)| {
            for (o, x) in o.iter_mut().zip(x) {
                *o += x;
            }
        });
    } else {
        for (o, x) in acc.iter_mut().zip(x) {
            *o += x;
        }
    }
}

pub mod reference {
    pub fn forward(out: &mut [f32], a: &[f32], b: &[f32]) {
        for i in 0..out.len() {
            out[i] = a[i] + b[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::*;

    #[test]
    fn matches_reference() {
        for n in [5, 70_000] {
            let (a, b) = (rand_vec(n, 1), rand_vec(n, 2));
            let (mut o, mut r) = (vec![0.0; n], vec![0.0; n]);
            forward(&mut o, &a, &b);
            reference::forward(&mut r, &a, &b);
            assert_eq!(o, r);
            let mut acc = a.clone();
            add_assign(&mut acc, &b);
            assert_eq!(acc, r);
        }
    }
}
