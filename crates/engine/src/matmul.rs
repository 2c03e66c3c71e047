//! Matrix multiplication on the `gemm` crate (runtime-dispatched AVX-512/AVX2/FMA micro-kernels).
//!
//! Everything is row-major. Transposition is expressed through strides, so no kernel ever copies a matrix
//! to transpose it.

use gemm::{gemm, Parallelism};

/// A read-only matrix view: element (i, j) lives at `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A contiguous row-major matrix whose stored rows are `row_len` long; when `transposed`, the view is its
    /// transpose, i.e. view (i, j) = `data[j * row_len + i]`.
    pub fn new(data: &'a [f32], row_len: usize, transposed: bool) -> Self {
        if transposed {
            View { data, rs: 1, cs: row_len }
        } else {
            View { data, rs: row_len, cs: 1 }
        }
    }
}

/// How a matmul may use threads: all rayon threads, or only the calling one (inside an outer parallel loop).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Par {
    Rayon,
    Seq,
}

fn needed(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// `C[m, n] = scale · A[m, k] · B[k, n]`, plus the old C when `accumulate` (gradient accumulation).
/// C is written at `c[i * c_rs + j]`. Bounds are checked once up front.
#[allow(clippy::too_many_arguments)]
pub fn gemm_view(
    c: &mut [f32],
    c_rs: usize,
    a: View<'_>,
    b: View<'_>,
    m: usize,
    n: usize,
    k: usize,
    scale: f32,
    accumulate: bool,
    par: Par,
) {
    assert!(needed(m, n, c_rs, 1) <= c.len(), "matmul: C too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[i * c_rs..i * c_rs + n].fill(0.0);
            }
        }
        return;
    }
    assert!(needed(m, k, a.rs, a.cs) <= a.data.len(), "matmul: A too small");
    assert!(needed(k, n, b.rs, b.cs) <= b.data.len(), "matmul: B too small");
    // SAFETY: the asserts above bound every offset gemm touches by the slice lengths, and C (&mut) does not
    // alias A or B.
    unsafe { gemm_ptr(c.as_mut_ptr(), c_rs, a, b, m, n, k, scale, accumulate, par) }
}

/// As [`gemm_view`] with C as a raw pointer, for callers that write disjoint strided blocks of one buffer from
/// several threads (attention heads interleaved in `[B, T, heads, head_dim]`).
///
/// # Safety
/// `c + i * c_rs + j` must be valid for writes for all i < m, j < n and not be written or read concurrently by
/// anyone else; A and B must hold every element their views address for i < m / k and j < k / n.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_ptr(
    c: *mut f32,
    c_rs: usize,
    a: View<'_>,
    b: View<'_>,
    m: usize,
    n: usize,
    k: usize,
    scale: f32,
    accumulate: bool,
    par: Par,
) {
    debug_assert!(needed(m, k, a.rs, a.cs) <= a.data.len());
    debug_assert!(needed(k, n, b.rs, b.cs) <= b.data.len());
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    let parallelism = match par {
        Par::Rayon => Parallelism::Rayon(0),
        Par::Seq => Parallelism::None,
    };
    gemm(
        m,
        n,
        k,
        c,
        1,
        c_rs as isize,
        accumulate,
        a.data.as_ptr(),
        a.cs as isize,
        a.rs as isize,
        b.data.as_ptr(),
        b.cs as isize,
        b.rs as isize,
        1.0,
        scale,
        false,
        false,
        false,
        parallelism,
    );
}

/// `C[m, n] = op(A) · op(B)` (+ C when `accumulate`), all row-major and contiguous. `op(A)` is `[m, k]`: A is
/// stored `[m, k]`, or `[k, m]` when `trans_a`. `op(B)` is `[k, n]`: B is stored `[k, n]`, or `[n, k]` when
/// `trans_b`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
    accumulate: bool,
) {
    let av = if trans_a { View { data: a, rs: 1, cs: m } } else { View { data: a, rs: k, cs: 1 } };
    let bv = if trans_b { View { data: b, rs: 1, cs: k } } else { View { data: b, rs: n, cs: 1 } };
    let par = if m * n * k >= 1 << 18 { Par::Rayon } else { Par::Seq };
    gemm_view(c, n, av, bv, m, n, k, 1.0, accumulate, par);
}

/// Slow triple loop in f64: the reference for `matmul`.
#[allow(clippy::too_many_arguments)]
pub fn reference(
    c: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
    accumulate: bool,
) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for p in 0..k {
                let x = if trans_a { a[p * m + i] } else { a[i * k + p] };
                let y = if trans_b { b[j * k + p] } else { b[p * n + j] };
                s += x as f64 * y as f64;
            }
            let old = if accumulate { c[i * n + j] as f64 } else { 0.0 };
            c[i * n + j] = (old + s) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{assert_close, rand_vec};

    #[test]
    fn all_transpositions_and_accumulate() {
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 7), (17, 33, 9), (64, 128, 96), (130, 70, 65)] {
            for ta in [false, true] {
                for tb in [false, true] {
                    for acc in [false, true] {
                        let a = rand_vec(m * k, 1);
                        let b = rand_vec(k * n, 2);
                        let mut c = rand_vec(m * n, 3);
                        let mut r = c.clone();
                        matmul(&mut c, &a, &b, m, k, n, ta, tb, acc);
                        reference(&mut r, &a, &b, m, k, n, ta, tb, acc);
                        assert_close(&c, &r, 1e-5, "matmul");
                    }
                }
            }
        }
    }

    #[test]
    fn strided_views_with_scale() {
        // A is every other column of a [4, 6] matrix; C rows are 5 apart.
        let base = rand_vec(24, 4);
        let b = rand_vec(3 * 2, 5);
        let mut c = vec![0.0; 4 * 5];
        let av = View { data: &base, rs: 6, cs: 2 };
        gemm_view(&mut c, 5, av, View::new(&b, 2, false), 4, 2, 3, 0.5, false, Par::Seq);
        for i in 0..4 {
            for j in 0..2 {
                let want: f32 = (0..3).map(|p| base[i * 6 + p * 2] * b[p * 2 + j]).sum::<f32>() * 0.5;
                assert!((c[i * 5 + j] - want).abs() < 1e-5);
            }
        }
    }
}
