//! Int8 weights for generation: `out[n, rows] = x[n, cols] · Wᵀ` with W in llama.cpp's Q8_0 scheme (blocks of 32
//! values along a row, one scale `amax / 127` each, kept in f32 where GGUF stores f16) and x quantized the same way per call. Generation reads
//! every weight once per new token, so it is bound by memory traffic: one byte per weight instead of four is what
//! makes it faster, and integer dot products (`vpdpbusd`, AVX512-VNNI) keep the arithmetic off the critical path.
//!
//! `vpdpbusd` multiplies unsigned by signed bytes, so the weights are stored offset by 128 (`q + 128`, unsigned)
//! and the offset's share, `128 · Σ qx` per block of x, is taken off once per row: the integer block sums are exact,
//! only their scaling is rounded. CPUs with AVX2 but no VNNI (AMD Zen 3 and older, Intel before Ice Lake) take
//! the signed route of `vpmaddubsw`: |w| times x carrying w's sign, which keeps every pair sum below i16
//! saturation. Written here rather than taken from a crate: no maintained Rust crate offers a Q8_0 × Q8_0
//! product with runtime VNNI/AVX2 dispatch.

use rayon::prelude::*;

/// Values per quantization block (Q8_0's `QK8_0`).
pub const BLOCK: usize = 32;

/// A `[rows, cols]` weight (as `torch.nn.Linear` stores it) in Q8_0 blocks, weights offset to unsigned bytes.
#[derive(Debug, Clone)]
pub struct Q8Matrix {
    pub rows: usize,
    pub cols: usize,
    /// `q + 128` per weight, row-major.
    qs: Vec<u8>,
    /// One scale per block, `[rows, cols / 32]`.
    scales: Vec<f32>,
}

/// Q8_0 of one block: the scale `amax / 127` and `round(x / scale)` (0 for an all-zero block).
fn quantize_block(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
    for (q, &v) in q.iter_mut().zip(x) {
        *q = (v * inv).round().clamp(-127.0, 127.0) as i8;
    }
    d
}

impl Q8Matrix {
    /// Quantizes a row-major `[rows, cols]` matrix; `cols` must be a multiple of 32.
    pub fn quantize(w: &[f32], rows: usize, cols: usize) -> Result<Self, String> {
        if !cols.is_multiple_of(BLOCK) || w.len() != rows * cols {
            return Err(format!("int8 weights need {rows} × {cols} values with columns a multiple of {BLOCK}"));
        }
        let nb = cols / BLOCK;
        let mut qs = vec![0u8; rows * cols];
        let mut scales = vec![0.0f32; rows * nb];
        qs.par_chunks_mut(cols).zip(scales.par_chunks_mut(nb)).zip(w.par_chunks(cols)).for_each(|((q, d), w)| {
            let mut block = [0i8; BLOCK];
            for b in 0..nb {
                d[b] = quantize_block(&w[b * BLOCK..(b + 1) * BLOCK], &mut block);
                for i in 0..BLOCK {
                    q[b * BLOCK + i] = (block[i] as i16 + 128) as u8;
                }
            }
        });
        Ok(Q8Matrix { rows, cols, qs, scales })
    }

    /// The `[rows, cols]` values the blocks stand for (`scale · q`).
    pub fn dequantize(&self) -> Vec<f32> {
        let nb = self.cols / BLOCK;
        (0..self.rows * self.cols)
            .map(|i| {
                let (r, c) = (i / self.cols, i % self.cols);
                self.scales[r * nb + c / BLOCK] * (self.qs[i] as i16 - 128) as f32
            })
            .collect()
    }

    /// Bytes the weights take (what a product reads).
    pub fn bytes(&self) -> usize {
        self.qs.len() + 4 * self.scales.len()
    }
}

/// Rows of x quantized per block: the values, per block the scale and `128 · scale · Σ q` (the offset's share).
#[derive(Debug, Default)]
pub struct Q8Input {
    qs: Vec<i8>,
    scales: Vec<f32>,
    offsets: Vec<f32>,
}

impl Q8Input {
    /// Quantizes `n` rows of `cols` values (reusing the buffers).
    pub fn quantize(&mut self, x: &[f32], n: usize, cols: usize) {
        let nb = cols / BLOCK;
        self.qs.resize(n * cols, 0);
        self.scales.resize(n * nb, 0.0);
        self.offsets.resize(n * nb, 0.0);
        for (i, (q, d)) in self.qs.chunks_mut(BLOCK).zip(self.scales.iter_mut()).enumerate().take(n * nb) {
            *d = quantize_block(&x[i * BLOCK..(i + 1) * BLOCK], q);
            let s: i32 = q.iter().map(|&v| v as i32).sum();
            self.offsets[i] = 128.0 * *d * s as f32;
        }
    }
}

/// `out[n, w.rows] = x[n, w.cols] · Wᵀ` (overwritten), x quantized into `xq` first.
pub fn matmul_t(out: &mut [f32], x: &[f32], n: usize, w: &Q8Matrix, xq: &mut Q8Input) {
    let _prof = crate::profile::scope("int8.matmul");
    let (rows, cols) = (w.rows, w.cols);
    assert!(x.len() >= n * cols && out.len() >= n * rows, "int8 matmul: operands shorter than {n} rows");
    xq.quantize(x, n, cols);
    let xq = &*xq;
    let kernel = Kernel::detect();
    // Tasks own disjoint column ranges of `out` (weight rows), each reading its weight rows once for all n rows.
    const CHUNK: usize = 64;
    let out_ptr = SendPtr(out.as_mut_ptr());
    (0..rows.div_ceil(CHUNK)).into_par_iter().for_each(|t| {
        let out_ptr = &out_ptr;
        for r in t * CHUNK..((t + 1) * CHUNK).min(rows) {
            for i in 0..n {
                // SAFETY: `kernel` comes from `detect`, so the CPU runs it.
                let v = unsafe { kernel.row_dot(w, r, xq, i) };
                // SAFETY: `i * rows + r` is within `out` (asserted) and only this task writes column r.
                unsafe { *out_ptr.0.add(i * rows + r) = v };
            }
        }
    });
}

struct SendPtr(*mut f32);
// SAFETY: the tasks write disjoint elements through it (see `matmul_t`).
unsafe impl Sync for SendPtr {}

fn vnni_usable() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn avx2_usable() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The dot-product kernels, widest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    Vnni,
    Avx2,
    Portable,
}

impl Kernel {
    fn detect() -> Kernel {
        if vnni_usable() {
            Kernel::Vnni
        } else if avx2_usable() {
            Kernel::Avx2
        } else {
            Kernel::Portable
        }
    }

    fn usable(self) -> bool {
        match self {
            Kernel::Vnni => vnni_usable(),
            Kernel::Avx2 => avx2_usable(),
            Kernel::Portable => true,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kernel::Vnni => "avx512-vnni",
            Kernel::Avx2 => "avx2",
            Kernel::Portable => "portable",
        }
    }

    /// Weight row `r` · x row `i`.
    ///
    /// # Safety
    /// The kernel is [`usable`](Self::usable) on this CPU ([`detect`](Self::detect)'s always is).
    #[inline]
    unsafe fn row_dot(self, w: &Q8Matrix, r: usize, x: &Q8Input, i: usize) -> f32 {
        debug_assert!(self.usable());
        match self {
            // SAFETY: the CPU has the kernel's features (this function's contract).
            Kernel::Vnni => unsafe { row_dot_vnni(w, r, x, i) },
            // SAFETY: as above.
            Kernel::Avx2 => unsafe { row_dot_avx2(w, r, x, i) },
            Kernel::Portable => row_dot(w, r, x, i),
        }
    }
}

/// The kernel the CPU runs: `avx512-vnni`, `avx2` or the portable one.
pub fn kernel_name() -> &'static str {
    Kernel::detect().name()
}

/// Weight row `r` · x row `i`: per block `d_w · (d_x · Σ (q_w + 128) q_x − 128 · d_x · Σ q_x)`.
fn row_dot(w: &Q8Matrix, r: usize, x: &Q8Input, i: usize) -> f32 {
    let (cols, nb) = (w.cols, w.cols / BLOCK);
    let wq = &w.qs[r * cols..(r + 1) * cols];
    let xq = &x.qs[i * cols..(i + 1) * cols];
    let mut acc = 0.0f32;
    for b in 0..nb {
        let s: i32 = (0..BLOCK).map(|k| wq[b * BLOCK + k] as i32 * xq[b * BLOCK + k] as i32).sum();
        acc += w.scales[r * nb + b] * (x.scales[i * nb + b] * s as f32 - x.offsets[i * nb + b]);
    }
    acc
}

/// [`row_dot`] with `vpdpbusd` on two blocks (64 bytes) at a time.
///
/// # Safety
/// The CPU has AVX512F, AVX512BW and AVX512-VNNI.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn row_dot_vnni(w: &Q8Matrix, r: usize, x: &Q8Input, i: usize) -> f32 {
    use std::arch::x86_64::*;
    let (cols, nb) = (w.cols, w.cols / BLOCK);
    let wq = w.qs.as_ptr().add(r * cols);
    let xq = x.qs.as_ptr().add(i * cols);
    let (ws, xs, xo) = (&w.scales[r * nb..(r + 1) * nb], &x.scales[i * nb..(i + 1) * nb], &x.offsets[i * nb..]);
    // Lanes 0–7 sum block b, lanes 8–15 block b + 1: each half is scaled by its block's d_w · d_x.
    let lo = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    let mut acc = _mm512_setzero_ps();
    let mut tail = 0.0f32;
    let mut b = 0;
    while b + 2 <= nb {
        let wv = _mm512_loadu_si512(wq.add(b * BLOCK) as *const __m512i);
        let xv = _mm512_loadu_si512(xq.add(b * BLOCK) as *const __m512i);
        let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv, xv);
        let pair = _mm512_castps128_ps512(_mm_castsi128_ps(_mm_loadl_epi64(
            [ws[b] * xs[b], ws[b + 1] * xs[b + 1]].as_ptr() as *const __m128i,
        )));
        let scale = _mm512_permutexvar_ps(lo, pair);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc);
        b += 2;
    }
    let mut corr = 0.0f32;
    for k in 0..nb {
        corr += ws[k] * xo[k];
    }
    if b < nb {
        // An odd block count: the last block the portable way.
        let s: i32 = (0..BLOCK).map(|k| *wq.add(b * BLOCK + k) as i32 * *xq.add(b * BLOCK + k) as i32).sum();
        tail = ws[b] * xs[b] * s as f32;
    }
    _mm512_reduce_add_ps(acc) + tail - corr
}

/// [`row_dot`] with AVX2, one block (32 bytes) per step: the weight bytes back to signed (`v ^ 0x80`), then
/// `vpmaddubsw` of |w| (≤ 127, unsigned) with x carrying w's sign, so each pair sum is at most 2 · 127² and never
/// saturates; `vpmaddwd` widens to 8 i32 sums. Signed products need no offset correction.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_dot_avx2(w: &Q8Matrix, r: usize, x: &Q8Input, i: usize) -> f32 {
    use std::arch::x86_64::*;
    let (cols, nb) = (w.cols, w.cols / BLOCK);
    let wq = w.qs.as_ptr().add(r * cols);
    let xq = x.qs.as_ptr().add(i * cols);
    let (ws, xs) = (&w.scales[r * nb..(r + 1) * nb], &x.scales[i * nb..(i + 1) * nb]);
    let (flip, ones) = (_mm256_set1_epi8(-128), _mm256_set1_epi16(1));
    let mut acc = _mm256_setzero_ps();
    for b in 0..nb {
        let wv = _mm256_xor_si256(_mm256_loadu_si256(wq.add(b * BLOCK) as *const __m256i), flip);
        let xv = _mm256_loadu_si256(xq.add(b * BLOCK) as *const __m256i);
        let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
        let dot = _mm256_madd_epi16(pairs, ones);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(ws[b] * xs[b]), acc);
    }
    let half = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    let quad = _mm_add_ps(half, _mm_movehl_ps(half, half));
    _mm_cvtss_f32(_mm_add_ss(quad, _mm_shuffle_ps(quad, quad, 1)))
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn row_dot_vnni(w: &Q8Matrix, r: usize, x: &Q8Input, i: usize) -> f32 {
    row_dot(w, r, x, i)
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn row_dot_avx2(w: &Q8Matrix, r: usize, x: &Q8Input, i: usize) -> f32 {
    row_dot(w, r, x, i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
            })
            .collect()
    }

    /// The product in f64 of the dequantized operands: what both kernels must give up to f32 rounding.
    fn reference(x: &[f32], n: usize, w: &Q8Matrix) -> Vec<f64> {
        let mut xq = Q8Input::default();
        xq.quantize(x, n, w.cols);
        let xd: Vec<f64> = (0..n * w.cols).map(|k| xq.scales[k / BLOCK] as f64 * xq.qs[k] as f64).collect();
        let wd = w.dequantize();
        (0..n * w.rows)
            .map(|k| {
                let (i, r) = (k / w.rows, k % w.rows);
                (0..w.cols).map(|c| xd[i * w.cols + c] * wd[r * w.cols + c] as f64).sum()
            })
            .collect()
    }

    #[test]
    fn quantize_round_trips_within_half_a_step() {
        let (rows, cols) = (5, 96);
        let w = data(rows * cols, 1);
        let q = Q8Matrix::quantize(&w, rows, cols).expect("quantize");
        let back = q.dequantize();
        for (k, (a, b)) in w.iter().zip(&back).enumerate() {
            let step = q.scales[k / BLOCK];
            assert!((a - b).abs() <= 0.5 * step + 1e-7, "{a} vs {b} (step {step})");
        }
        assert!(Q8Matrix::quantize(&w[..rows * 40], rows, 40).is_err(), "40 columns are not whole blocks");
    }

    #[test]
    fn every_kernel_matches_the_dequantized_product() {
        // 18 blocks (even) and 3 blocks (odd tail), one row and several rows of x.
        for (rows, cols, n) in [(70, 576, 1), (70, 576, 5), (9, 96, 3), (130, 64, 2)] {
            let w = Q8Matrix::quantize(&data(rows * cols, 2), rows, cols).expect("quantize");
            let x = data(n * cols, 3);
            let want = reference(&x, n, &w);
            let mut xq = Q8Input::default();
            xq.quantize(&x, n, cols);
            for kernel in [Kernel::Portable, Kernel::Avx2, Kernel::Vnni] {
                if !kernel.usable() {
                    crate::kernels::testutil::skipped(&format!(
                        "the {} int8 kernel: this CPU lacks its instructions",
                        kernel.name()
                    ));
                    continue;
                }
                for i in 0..n {
                    for r in 0..rows {
                        // SAFETY: checked usable above.
                        let got = unsafe { kernel.row_dot(&w, r, &xq, i) };
                        let e = want[i * rows + r];
                        assert!(
                            (got as f64 - e).abs() <= 1e-5 * (1.0 + e.abs()),
                            "{} {rows}x{cols} [{i},{r}]: {got} vs {e}",
                            kernel.name()
                        );
                    }
                }
            }
            let mut out = vec![0.0; n * rows];
            matmul_t(&mut out, &x, n, &w, &mut xq);
            for (k, (&o, &e)) in out.iter().zip(&want).enumerate() {
                assert!((o as f64 - e).abs() <= 1e-5 * (1.0 + e.abs()), "matmul_t [{k}]: {o} vs {e}");
            }
        }
    }

    #[test]
    fn the_int8_product_is_close_to_the_f32_one() {
        // Q8_0 on both operands: relative error of a 576-long dot product of random values around 1 %.
        let (rows, cols) = (64, 576);
        let (wf, x) = (data(rows * cols, 4), data(cols, 5));
        let w = Q8Matrix::quantize(&wf, rows, cols).expect("quantize");
        let mut out = vec![0.0; rows];
        matmul_t(&mut out, &x, 1, &w, &mut Q8Input::default());
        let exact: Vec<f32> = (0..rows).map(|r| crate::math::dot(&wf[r * cols..(r + 1) * cols], &x)).collect();
        let norm = exact.iter().map(|v| v * v).sum::<f32>().sqrt();
        let err = exact.iter().zip(&out).map(|(a, b)| (a - b) * (a - b)).sum::<f32>().sqrt();
        assert!(err / norm < 0.02, "relative error {}", err / norm);
        assert!(err > 0.0, "the int8 product is not the f32 one");
    }
}
