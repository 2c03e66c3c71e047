//! Scalar helpers shared by kernels: vectorisable `exp`/`erf`, 16-lane reductions and the row-parallel loop.

use rayon::prelude::*;

/// Work below this many elements runs on the calling thread; spawning costs more than it saves.
pub const PAR_THRESHOLD: usize = 1 << 14;

/// `f(row_index, row)` for every `row_len`-long row of `data`, in parallel when the data is large.
pub fn for_each_row<F>(data: &mut [f32], row_len: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    if row_len == 0 {
        return;
    }
    if data.len() >= PAR_THRESHOLD {
        data.par_chunks_mut(row_len).enumerate().for_each(|(i, r)| f(i, r));
    } else {
        data.chunks_mut(row_len).enumerate().for_each(|(i, r)| f(i, r));
    }
}

/// Sum with 16 independent accumulators so the loop vectorises (a single f32 accumulator cannot be reordered).
#[inline(always)]
pub fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let chunks = xs.chunks_exact(16);
    let rem = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            acc[i] += c[i];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for &x in rem {
        s += x;
    }
    s
}

/// `xs[i] = exp(xs[i] − shift)` in place, returning the sum of the results: one pass instead of an exp pass
/// and a [`sum`] pass, with the same sum bit for bit (the same 16 lanes, then the same tail order).
#[inline(always)]
pub fn exp_sum(xs: &mut [f32], shift: f32) -> f32 {
    let mut acc = [0.0f32; 16];
    let mut chunks = xs.chunks_exact_mut(16);
    for c in &mut chunks {
        for i in 0..16 {
            c[i] = exp(c[i] - shift);
            acc[i] += c[i];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for x in chunks.into_remainder() {
        *x = exp(*x - shift);
        s += *x;
    }
    s
}

/// Dot product with 16 independent accumulators.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 16];
    let ca = a.chunks_exact(16);
    let cb = b.chunks_exact(16);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = acc.iter().sum::<f32>();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Maximum of a non-empty slice (−inf for an empty one).
#[inline(always)]
pub fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let chunks = xs.chunks_exact(16);
    let rem = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            acc[i] = acc[i].max(c[i]);
        }
    }
    let mut m = acc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &x in rem {
        m = m.max(x);
    }
    m
}

/// e^x in f32, branch-free so loops over it vectorise; relative error about 2 ulp. Returns 0 below −87.3
/// (so an additive mask of `f32::MIN` gives exactly zero probability) and +inf above 88.7.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.3, 88.7);
    // Round to nearest via the 1.5·2^23 trick: the sum's low mantissa bits then hold n as an integer, so 2^n
    // is built with integer adds and shifts only (a float→int conversion would block vectorisation).
    let shifter = 12_582_912.0f32;
    let biased = xc * LOG2E + shifter;
    let n = biased - shifter;
    let r = xc - n * LN2_HI - n * LN2_LO;
    // Cephes expf polynomial on [−ln2/2, ln2/2].
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.500_000_06;
    let y = p * r * r + r + 1.0;
    let scale = f32::from_bits(biased.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127) << 23);
    let out = y * scale;
    let out = if x < -87.3 { 0.0 } else { out };
    if x > 88.7 {
        f32::INFINITY
    } else {
        out
    }
}

/// erf(x) as a rational approximation (the one used by Eigen and XLA, 6.5e-8 from the true value), evaluated
/// in f64 so that f32 rounding inside the ratio does not add error: absolute error below 1e-7. Branch-free so
/// that GELU loops vectorise.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = (x as f64).clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_258_013_06e-10f64;
    p = p * x2 + 2.770_681_424_959_02e-8;
    p = p * x2 + -2.101_024_020_825_08e-6;
    p = p * x2 + -5.692_506_394_623_46e-5;
    p = p * x2 + -7.349_906_303_268_55e-4;
    p = p * x2 + -2.954_599_808_540_25e-3;
    p = p * x2 + -1.609_603_332_624_15e-2;
    p *= x;
    let mut q = -1.456_607_184_649_96e-5f64;
    q = q * x2 + -2.133_740_552_789_05e-4;
    q = q * x2 + -1.682_826_974_382_03e-3;
    q = q * x2 + -7.373_329_167_204_68e-3;
    q = q * x2 + -1.426_473_905_141_89e-2;
    (p / q) as f32
}

/// [`erf`]'s rational evaluated in f32 (as Eigen does; the coefficients are repeated as f32 literals because
/// folding over one shared array measured slower in the GELU loop): a few 1e-7 from the true value instead of below 1e-7, at
/// twice the vector width and without f64 division, about half the cost. For the bf16 path, whose matmul
/// outputs carry bf16 operand rounding (2⁻⁹ relative) anyway.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 + -2.101_024e-6;
    p = p * x2 + -5.692_506_4e-5;
    p = p * x2 + -7.349_906_3e-4;
    p = p * x2 + -2.9546e-3;
    p = p * x2 + -1.609_603_3e-2;
    p *= x;
    let mut q = -1.456_607_2e-5f32;
    q = q * x2 + -2.133_740_6e-4;
    q = q * x2 + -1.682_827e-3;
    q = q * x2 + -7.373_329e-3;
    q = q * x2 + -1.426_473_9e-2;
    p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_f32_within_a_few_1e7() {
        let mut worst = 0.0f64;
        for i in -100_000..=100_000 {
            let x = i as f32 * 6e-5;
            worst = worst.max((erf_f32(x) as f64 - libm::erf(x as f64)).abs());
        }
        assert!(worst < 5e-7, "erf_f32 max abs error {worst}");
    }

    #[test]
    fn exp_sum_is_the_two_passes_bit_for_bit() {
        for n in [0, 5, 16, 37, 128, 1000] {
            let xs: Vec<f32> = (0..n).map(|i| ((i * 7919) % 997) as f32 * 0.013 - 6.0).collect();
            let mut two = xs.clone();
            for x in two.iter_mut() {
                *x = exp(*x - 1.5);
            }
            let want = sum(&two);
            let mut one = xs.clone();
            let got = exp_sum(&mut one, 1.5);
            assert_eq!(got.to_bits(), want.to_bits(), "n = {n}");
            assert_eq!(one, two);
        }
    }

    #[test]
    fn exp_matches_std() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let rel = ((exp(x) as f64 - want) / want).abs();
            worst = worst.max(rel);
            x += 0.001_7;
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert_eq!(exp(f32::MIN), 0.0);
        assert_eq!(exp(-1e30), 0.0);
    }

    #[test]
    fn erf_matches_libm() {
        let mut worst = 0.0f64;
        let mut x = -6.0f32;
        while x < 6.0 {
            let want = libm::erf(x as f64);
            worst = worst.max((erf(x) as f64 - want).abs());
            x += 0.000_37;
        }
        assert!(worst < 1e-7, "worst absolute error {worst}");
    }

    #[test]
    fn reductions() {
        let xs: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let ys: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let s: f32 = xs.iter().sum();
        assert!((sum(&xs) - s).abs() < 1e-5);
        let d: f32 = xs.iter().zip(&ys).map(|(a, b)| a * b).sum();
        assert!((dot(&xs, &ys) - d).abs() < 1e-5);
        assert_eq!(max(&xs), xs.iter().copied().fold(f32::MIN, f32::max));
    }
}
