//! Rotary position embedding as Hugging Face's `apply_rotary_pos_emb` with `rotate_half` (the two halves of
//! each head are the rotated pairs, not interleaved neighbours): for `i < d/2`,
//! `y[i] = x[i]·cos − x[i+d/2]·sin`, `y[i+d/2] = x[i+d/2]·cos + x[i]·sin` with angle `pos · θ^(−2i/d)`.
//! Applied in place to head blocks inside wider rows (the fused q/k/v projection output), so no copies.

use crate::math::for_each_row;

/// Inverse frequencies of the default rope type, in f32 as transformers computes them: `1 / θ^(2i/d)`.
pub fn default_inv_freq(head_dim: usize, theta: f64) -> Vec<f32> {
    (0..head_dim / 2).map(|i| (1.0 / theta.powf(((2 * i) as f32 / head_dim as f32) as f64)) as f32).collect()
}

/// `cos`/`sin` tables `[positions, d/2]` for the default rope type.
pub fn tables(positions: usize, head_dim: usize, theta: f64) -> (Vec<f32>, Vec<f32>) {
    tables_from_inv_freq(positions, &default_inv_freq(head_dim, theta))
}

/// `cos`/`sin` tables `[positions, inv.len()]` with `angle = f32(pos) · inv_freq` in f32, as transformers.
pub fn tables_from_inv_freq(positions: usize, inv: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let half = inv.len();
    let mut cos = vec![0.0; positions * half];
    let mut sin = vec![0.0; positions * half];
    for p in 0..positions {
        for i in 0..half {
            let a = (p as f32 * inv[i]) as f64;
            cos[p * half + i] = a.cos() as f32;
            sin[p * half + i] = a.sin() as f32;
        }
    }
    (cos, sin)
}

/// Rotates `heads` blocks of `head_dim` starting at column `col` of each `row_len`-long row of `x`; row r has
/// position `pos[r]`. `inverse` applies the transpose rotation (the backward: angle −θ).
#[allow(clippy::too_many_arguments)]
pub fn apply(
    x: &mut [f32],
    row_len: usize,
    col: usize,
    heads: usize,
    head_dim: usize,
    pos: &[u32],
    cos: &[f32],
    sin: &[f32],
    inverse: bool,
) {
    apply_partial(x, row_len, col, heads, head_dim, head_dim, pos, cos, sin, inverse);
}

/// As [`apply`], rotating only the first `rot_dim` of each head's `head_dim` columns and passing the rest
/// through (a partial rotary embedding: Phi's and GPT-NeoX's `partial_rotary_factor`). The tables hold
/// `rot_dim / 2` frequencies per position.
#[allow(clippy::too_many_arguments)]
pub fn apply_partial(
    x: &mut [f32],
    row_len: usize,
    col: usize,
    heads: usize,
    head_dim: usize,
    rot_dim: usize,
    pos: &[u32],
    cos: &[f32],
    sin: &[f32],
    inverse: bool,
) {
    let _prof = crate::profile::scope("rope.apply");
    assert!(rot_dim <= head_dim && rot_dim.is_multiple_of(2));
    let half = rot_dim / 2;
    let n = pos.len();
    for_each_row(&mut x[..n * row_len], row_len, |r, row| {
        let p = pos[r] as usize;
        let (c, s) = (&cos[p * half..(p + 1) * half], &sin[p * half..(p + 1) * half]);
        for h in 0..heads {
            let blk = &mut row[col + h * head_dim..col + h * head_dim + rot_dim];
            rotate(blk, c, s, inverse);
        }
    });
}

crate::simd_fn! {
fn rotate(blk: &mut [f32], c: &[f32], s: &[f32], inverse: bool) {
    let half = c.len();
    let (a, b) = blk.split_at_mut(half);
    if inverse {
        for i in 0..half {
            let (x1, x2) = (a[i], b[i]);
            a[i] = x1 * c[i] + x2 * s[i];
            b[i] = x2 * c[i] - x1 * s[i];
        }
    } else {
        for i in 0..half {
            let (x1, x2) = (a[i], b[i]);
            a[i] = x1 * c[i] - x2 * s[i];
            b[i] = x2 * c[i] + x1 * s[i];
        }
    }
}
}

/// The forward is linear in x, so `backward(dy)` is `apply(dy, inverse = true)`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    dx: &mut [f32],
    row_len: usize,
    col: usize,
    heads: usize,
    head_dim: usize,
    pos: &[u32],
    cos: &[f32],
    sin: &[f32],
) {
    apply(dx, row_len, col, heads, head_dim, pos, cos, sin, true);
}

pub mod reference {
    /// One contiguous `[n, heads·d]` array, f64, angles from the definition.
    pub fn forward(out: &mut [f32], x: &[f32], heads: usize, d: usize, pos: &[u32], theta: f64) {
        let half = d / 2;
        for (r, &p) in pos.iter().enumerate() {
            for h in 0..heads {
                let base = r * heads * d + h * d;
                for i in 0..half {
                    let a = p as f64 * theta.powf(-((2 * i) as f64) / d as f64);
                    let (x1, x2) = (x[base + i] as f64, x[base + i + half] as f64);
                    out[base + i] = (x1 * a.cos() - x2 * a.sin()) as f32;
                    out[base + i + half] = (x2 * a.cos() + x1 * a.sin()) as f32;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::*;

    #[test]
    fn matches_reference_and_finite_differences() {
        let (n, heads, d, theta) = (7, 3, 8, 10000.0);
        let (extra, row_len) = (5, 5 + heads * d + 4);
        let pos: Vec<u32> = (0..n as u32).map(|p| p * 3 % 11).collect();
        let (cos, sin) = tables(16, d, theta);
        let xs = rand_vec(n * row_len, 1);
        let mut y = xs.clone();
        apply(&mut y, row_len, extra, heads, d, &pos, &cos, &sin, false);
        let inner: Vec<f32> = (0..n).flat_map(|r| xs[r * row_len + extra..][..heads * d].to_vec()).collect();
        let mut want = vec![0.0; n * heads * d];
        reference::forward(&mut want, &inner, heads, d, &pos, theta);
        for r in 0..n {
            assert_close(&y[r * row_len + extra..][..heads * d], &want[r * heads * d..][..heads * d], 1e-5, "rope");
            // Columns outside the rotated blocks are untouched.
            assert_eq!(&y[r * row_len..r * row_len + extra], &xs[r * row_len..r * row_len + extra]);
        }
        // Inverse undoes the forward.
        apply(&mut y, row_len, extra, heads, d, &pos, &cos, &sin, true);
        assert_close(&y, &xs, 1e-5, "rope inverse");

        let dout = rand_vec(n * heads * d, 2);
        let mut g = dout.clone();
        backward(&mut g, heads * d, 0, heads, d, &pos, &cos, &sin);
        check_fd(&inner, &g, 1e-2, 1e-3, "fd rope", |x| {
            let mut o = vec![0.0; n * heads * d];
            reference::forward(&mut o, x, heads, d, &pos, theta);
            weighted(&o, &dout)
        });
    }

    /// A partial rotation is the full rotation of a `rot_dim`-wide head on the first columns, the rest kept.
    #[test]
    fn partial_rotates_the_leading_columns_only() {
        let (n, heads, d, rot, theta) = (5, 2, 12, 4, 10000.0);
        let pos: Vec<u32> = (0..n as u32).map(|p| p * 2 + 1).collect();
        let (cos, sin) = tables(16, rot, theta);
        let xs = rand_vec(n * heads * d, 3);
        let mut y = xs.clone();
        apply_partial(&mut y, heads * d, 0, heads, d, rot, &pos, &cos, &sin, false);
        for r in 0..n {
            for h in 0..heads {
                let at = r * heads * d + h * d;
                let mut want = vec![0.0; rot];
                reference::forward(&mut want, &xs[at..at + rot], 1, rot, &pos[r..r + 1], theta);
                assert_close(&y[at..at + rot], &want, 1e-5, "rotated part");
                assert_eq!(&y[at + rot..at + d], &xs[at + rot..at + d], "passed-through part");
            }
        }
        apply_partial(&mut y, heads * d, 0, heads, d, rot, &pos, &cos, &sin, true);
        assert_close(&y, &xs, 1e-5, "partial inverse");
    }
}
