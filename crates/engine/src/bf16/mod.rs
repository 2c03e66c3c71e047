//! bfloat16 matrix multiplication with f32 accumulation: `C(f32) = scale · bf16(A) · bf16(B)` (+ C), the
//! arithmetic of `torch.autocast("cpu", dtype=torch.bfloat16)` for `matmul`/`linear`.
//!
//! A and B are rounded to bfloat16 (round to nearest, ties to even, as `torch.Tensor.bfloat16()`), every
//! product of two bf16 values is exact in f32 and the sums are kept in f32. The interface mirrors
//! [`crate::matmul::gemm_view`]: strided [`View`]s (so transposed operands cost nothing extra), `scale`,
//! `accumulate` and [`Par`].
//!
//! Three kernels, chosen at run time ([`Kernel::detect`]: AMX, else AVX512-BF16 on AMD, else f32; or forced
//! with `FINETUNE_BF16_KERNEL`):
//! - [`Kernel::Amx`]: Intel AMX tiles (`tdpbf16ps`, Sapphire Rapids and later), 32 × 32 blocks of C held in
//!   four tile registers while the whole k dimension streams through two A and two B tiles.
//! - [`Kernel::Avx512Bf16`]: `vdpbf16ps` on 512-bit registers (AMD Zen 4, Intel Cooper Lake / without AMX),
//!   8 × 32 register blocks.
//! - [`Kernel::F32`]: the f32 `gemm` crate, for CPUs with neither (no rounding to bf16 at all).
//!
//! Why our own kernels and not oneDNN: the product stays one statically linked binary with no system library
//! to install (`libdnnl` is a 30 MB shared object with its own thread pool that would fight rayon), and the
//! shapes of fine-tuning (k ≤ a few thousand, row-major activations) need only one blocking scheme. The
//! kernels are `core::arch` intrinsics (AVX512-BF16) and `asm!` (AMX: its intrinsics are not stable Rust).
//!
//! Both bf16 kernels read the same packed operands: A as row-major bf16 rows (`[m_pad, k_pad]`, padded with
//! zeros to multiples of 32) and B in the "VNNI" pair layout `[n_pad / 16][k_pad / 2][16][2]`, where the two
//! bf16 values that one `dpbf16` lane multiplies (rows 2p and 2p + 1 of one column) sit side by side. B is
//! packed once per call, or once per optimizer step for a weight through [`PackedB`] / [`WeightCache`].

mod amx;
mod avx512;
pub mod linear;

use std::sync::OnceLock;

use rayon::prelude::*;

use crate::matmul::{Par, View};

/// The environment variable that forces a kernel: `amx`, `avx512bf16` or `f32`.
pub const KERNEL_ENV: &str = "FINETUNE_BF16_KERNEL";

/// Rows and columns of C computed per block (one AMX 2 × 2 tile block; four AVX-512 8 × 32 blocks).
const BLOCK: usize = 32;

/// Arithmetic precision of a model's matmuls, set by `bf16 = true`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

/// A bf16 matmul implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Amx,
    Avx512Bf16,
    F32,
}

impl Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Amx => "amx",
            Kernel::Avx512Bf16 => "avx512bf16",
            Kernel::F32 => "f32",
        }
    }

    /// Whether this CPU (and OS) can run the kernel.
    pub fn available(self) -> bool {
        match self {
            Kernel::Amx => amx::usable(),
            Kernel::Avx512Bf16 => avx512::usable(),
            Kernel::F32 => true,
        }
    }

    /// Why the kernel cannot run here (`None` when it can).
    pub fn unavailable_reason(self) -> Option<String> {
        if self.available() {
            return None;
        }
        Some(match self {
            Kernel::Amx => amx::why_not(),
            Kernel::Avx512Bf16 => "the CPU lacks AVX512-BF16 (avx512f + avx512bf16)".into(),
            Kernel::F32 => unreachable!("the f32 kernel always runs"),
        })
    }

    /// The default kernel: AMX where the CPU has it; AVX512-BF16 on AMD (Zen 4 and later), where it beats the
    /// f32 kernel (MiniLM step 617 vs 806 ms on an AMD EPYC, BENCHMARKS.md "bf16"); else f32. On Intel without
    /// AMX the AVX512-BF16 kernel reaches only half of the f32 kernel's throughput (measured on a Sapphire
    /// Rapids), so it runs there only when forced (`FINETUNE_BF16_KERNEL=avx512bf16`).
    pub fn detect() -> Kernel {
        if Kernel::Amx.available() {
            Kernel::Amx
        } else if Kernel::Avx512Bf16.available() && cpu_is_amd() {
            Kernel::Avx512Bf16
        } else {
            Kernel::F32
        }
    }

    /// Parses a `FINETUNE_BF16_KERNEL` value and checks that the CPU runs it.
    pub fn parse(s: &str) -> Result<Kernel, String> {
        let k = match s.trim().to_ascii_lowercase().as_str() {
            "amx" => Kernel::Amx,
            "avx512bf16" | "avx512_bf16" | "avx512-bf16" => Kernel::Avx512Bf16,
            "f32" => Kernel::F32,
            other => {
                return Err(format!("{KERNEL_ENV}={other:?}: expected one of amx, avx512bf16, f32"));
            }
        };
        match k.unavailable_reason() {
            None => Ok(k),
            Some(why) => Err(format!("{KERNEL_ENV}={}: {why}", k.name())),
        }
    }

    /// The kernel in use: `FINETUNE_BF16_KERNEL` when set, else [`detect`](Self::detect). An unknown or
    /// unavailable value is an error (callers that accept `bf16 = true` check this before training).
    pub fn active() -> Result<Kernel, String> {
        static ACTIVE: OnceLock<Result<Kernel, String>> = OnceLock::new();
        ACTIVE
            .get_or_init(|| match std::env::var(KERNEL_ENV) {
                Ok(v) if !v.trim().is_empty() => Kernel::parse(&v),
                _ => Ok(Kernel::detect()),
            })
            .clone()
    }

    /// [`active`](Self::active), falling back to [`detect`](Self::detect) when the variable is invalid (the
    /// command line refuses such a value up front, so this only matters to library users).
    pub fn current() -> Kernel {
        Kernel::active().unwrap_or_else(|_| Kernel::detect())
    }
}

/// f32 → bf16 bits, round to nearest even (NaN stays a quiet NaN), as `torch.Tensor.bfloat16()`.
#[inline(always)]
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if (b & 0x7fff_ffff) > 0x7f80_0000 {
        ((b >> 16) | 0x40) as u16
    } else {
        let round = 0x7fff + ((b >> 16) & 1);
        (b.wrapping_add(round) >> 16) as u16
    }
}

/// bf16 bits → f32 (exact).
#[inline(always)]
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// `x` rounded to the nearest bf16, as f32.
pub fn round_bf16(x: f32) -> f32 {
    from_bf16(to_bf16(x))
}

crate::simd_fn! {
fn convert_row(dst: &mut [u16], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = to_bf16(*s);
    }
}
}

fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}

fn needed(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// A converted to bf16 rows `[m_pad, lda]` (zero padded), `lda ≥ k_pad`.
struct PackedA {
    k_pad: usize,
    lda: usize,
    data: Vec<u16>,
}

/// Row length of packed A: k_pad, plus one cache line when k_pad spans an even number of lines, so that the 16
/// rows of a tile fall into 16 different L1 sets (a stride of 4 KiB, k = 2048, would put all 16 in one).
fn lda_for(k_pad: usize) -> usize {
    if (k_pad / 32).is_multiple_of(2) {
        k_pad + 32
    } else {
        k_pad
    }
}

impl PackedA {
    fn pack(a: View<'_>, m: usize, k: usize, par: Par) -> Self {
        let k_pad = round_up(k, BLOCK);
        let lda = lda_for(k_pad);
        let m_pad = round_up(m, BLOCK);
        let mut data = vec![0u16; m_pad * lda];
        // Rows in groups of 32 (one block), converted on all threads when allowed.
        let fill = |(bi, chunk): (usize, &mut [u16])| {
            let r0 = bi * BLOCK;
            let rows = BLOCK.min(m.saturating_sub(r0));
            if a.cs == 1 {
                for r in 0..rows {
                    let s = (r0 + r) * a.rs;
                    convert_row(&mut chunk[r * lda..r * lda + k], &a.data[s..s + k]);
                }
            } else if a.rs == 1 {
                // Transposed (A's columns are contiguous): convert 32 × 32 blocks through a local tile and write
                // whole packed row segments, instead of 32 stores a row apart per source column.
                let mut tile = [[0u16; BLOCK]; BLOCK];
                for p0 in (0..k).step_by(BLOCK) {
                    let pn = BLOCK.min(k - p0);
                    for pp in 0..pn {
                        let s = (p0 + pp) * a.cs + r0;
                        convert_row(&mut tile[pp][..rows], &a.data[s..s + rows]);
                    }
                    for r in 0..rows {
                        let dst = &mut chunk[r * lda + p0..r * lda + p0 + pn];
                        for (pp, d) in dst.iter_mut().enumerate() {
                            *d = tile[pp][r];
                        }
                    }
                }
            } else {
                for r in 0..rows {
                    for p in 0..k {
                        chunk[r * lda + p] = to_bf16(a.data[(r0 + r) * a.rs + p * a.cs]);
                    }
                }
            }
        };
        if par == Par::Rayon && m * k >= 1 << 16 {
            data.par_chunks_mut(BLOCK * lda).enumerate().for_each(fill);
        } else {
            data.chunks_mut(BLOCK * lda).enumerate().for_each(fill);
        }
        PackedA { k_pad, lda, data }
    }
}

/// B (`[k, n]`) converted to bf16 in the VNNI pair layout `[n_pad / 16][k_pad / 2][16][2]`. Build it once for
/// a weight and reuse it across calls while the weight does not change.
#[derive(Clone, Debug, Default)]
pub struct PackedB {
    k: usize,
    n: usize,
    k_pad: usize,
    n_pad: usize,
    data: Vec<u16>,
}

impl PackedB {
    /// Packs the `[k, n]` matrix that `b` views.
    pub fn pack(b: View<'_>, k: usize, n: usize, par: Par) -> Self {
        let mut p = PackedB::default();
        p.repack(b, k, n, par);
        p
    }

    /// Packs again into the same allocation (after the weight changed).
    pub fn repack(&mut self, b: View<'_>, k: usize, n: usize, par: Par) {
        assert!(needed(k, n, b.rs, b.cs) <= b.data.len(), "bf16 pack: B too small");
        let k_pad = round_up(k.max(1), BLOCK);
        let n_pad = round_up(n.max(1), BLOCK);
        self.k = k;
        self.n = n;
        self.k_pad = k_pad;
        self.n_pad = n_pad;
        self.data.clear();
        self.data.resize(n_pad * k_pad, 0);
        // One panel of 16 columns: [k_pad / 2][16][2].
        let panel = k_pad * 16;
        let fill = |(jb, dst): (usize, &mut [u16])| {
            let j0 = jb * 16;
            let cols = 16.min(n.saturating_sub(j0));
            if cols == 0 {
                return; // padding panel: zeros
            }
            if b.rs == 1 {
                // Columns contiguous along k (a transposed weight): walk down each column.
                let mut tmp = vec![0u16; k];
                for jj in 0..cols {
                    let src = (j0 + jj) * b.cs;
                    convert_row(&mut tmp, &b.data[src..src + k]);
                    for (p, &v) in tmp.iter().enumerate() {
                        dst[(p / 2) * 32 + jj * 2 + (p & 1)] = v;
                    }
                }
            } else if b.cs == 1 {
                // Rows contiguous: interleave rows 2q and 2q + 1 into pairs.
                let zeros = [0.0f32; 16];
                for q in 0..k.div_ceil(2) {
                    let s0 = 2 * q * b.rs + j0;
                    let r1 = if 2 * q + 1 < k { &b.data[s0 + b.rs..s0 + b.rs + cols] } else { &zeros[..cols] };
                    interleave_pair(&mut dst[q * 32..q * 32 + 2 * cols], &b.data[s0..s0 + cols], r1);
                }
            } else {
                for p in 0..k {
                    let src = p * b.rs + j0 * b.cs;
                    let d = (p / 2) * 32 + (p & 1);
                    for jj in 0..cols {
                        dst[d + jj * 2] = to_bf16(b.data[src + jj * b.cs]);
                    }
                }
            }
        };
        if par == Par::Rayon && k * n >= 1 << 16 {
            self.data.par_chunks_mut(panel).enumerate().for_each(fill);
        } else {
            self.data.chunks_mut(panel).enumerate().for_each(fill);
        }
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// Element (p, j) as f32 (tests, and the f32 kernel's fallback).
    pub fn get(&self, p: usize, j: usize) -> f32 {
        from_bf16(self.data[((j / 16) * (self.k_pad / 2) + p / 2) * 32 + (j % 16) * 2 + (p & 1)])
    }
}

/// Too small for a tile in some dimension: the f32 kernel is faster and exact.
fn tiny(m: usize, n: usize, k: usize) -> bool {
    m < 16 || n < 16 || k < 16
}

/// `C[m, n] = scale · bf16(A)[m, k] · bf16(B)[k, n]` (+ the old C when `accumulate`), f32 accumulation, with
/// the kernel from [`Kernel::current`]. C is written at `c[i * c_rs + j]`. Products with a dimension under 16
/// run the f32 kernel unrounded.
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
    gemm_view_with(Kernel::current(), c, c_rs, a, b, m, n, k, scale, accumulate, par)
}

/// [`gemm_view`] with an explicit kernel (tests and benchmarks). Panics if the CPU cannot run it.
#[allow(clippy::too_many_arguments)]
pub fn gemm_view_with(
    kernel: Kernel,
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
    if kernel == Kernel::F32 || tiny(m, n, k) {
        return crate::matmul::gemm_view(c, c_rs, a, b, m, n, k, scale, accumulate, par);
    }
    assert!(needed(k, n, b.rs, b.cs) <= b.data.len(), "bf16 matmul: B too small");
    let pb = PackedB::pack(b, k, n, par);
    gemm_packed_with(kernel, c, c_rs, a, &pb, m, scale, accumulate, par);
}

/// `C[m, n] = scale · bf16(A)[m, k] · B` (+ C) for a pre-packed B (`[k, n]` from [`PackedB::k`]/`n`).
#[allow(clippy::too_many_arguments)]
pub fn gemm_packed(
    c: &mut [f32],
    c_rs: usize,
    a: View<'_>,
    b: &PackedB,
    m: usize,
    scale: f32,
    accumulate: bool,
    par: Par,
) {
    gemm_packed_with(Kernel::current(), c, c_rs, a, b, m, scale, accumulate, par)
}

/// [`gemm_packed`] with an explicit kernel. Panics if the CPU cannot run it.
#[allow(clippy::too_many_arguments)]
pub fn gemm_packed_with(
    kernel: Kernel,
    c: &mut [f32],
    c_rs: usize,
    a: View<'_>,
    b: &PackedB,
    m: usize,
    scale: f32,
    accumulate: bool,
    par: Par,
) {
    let (k, n) = (b.k, b.n);
    assert!(needed(m, n, c_rs, 1) <= c.len(), "bf16 matmul: C too small");
    assert!(needed(m, k, a.rs, a.cs) <= a.data.len(), "bf16 matmul: A too small");
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
    if kernel == Kernel::F32 || tiny(m, n, k) {
        // Unpack B (already rounded to bf16) and multiply in f32.
        let mut bf = vec![0.0f32; k * n];
        for p in 0..k {
            for j in 0..n {
                bf[p * n + j] = b.get(p, j);
            }
        }
        return crate::matmul::gemm_view(c, c_rs, a, View::new(&bf, n, false), m, n, k, scale, accumulate, par);
    }
    assert!(kernel.available(), "bf16 matmul: kernel {} unavailable on this CPU", kernel.name());
    let pa = PackedA::pack(a, m, k, par);
    run_blocks(kernel, &pa, b, CPtr(c.as_mut_ptr()), c_rs, m, scale, accumulate, par);
}

#[derive(Clone, Copy)]
struct CPtr(*mut f32);
// SAFETY: every task writes a disjoint set of C blocks.
unsafe impl Send for CPtr {}
unsafe impl Sync for CPtr {}

/// Writes one computed block (`acc` is `[BLOCK][BLOCK]`) into C at (i0, j0), `rows × cols` valid.
///
/// # Safety
/// C must be valid for the block's elements and not touched concurrently.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn store_block(
    c: CPtr,
    c_rs: usize,
    i0: usize,
    j0: usize,
    rows: usize,
    cols: usize,
    acc: &[f32; BLOCK * BLOCK],
    scale: f32,
    accumulate: bool,
) {
    for r in 0..rows {
        let dst = std::slice::from_raw_parts_mut(c.0.add((i0 + r) * c_rs + j0), cols);
        store_row(dst, &acc[r * BLOCK..r * BLOCK + cols], scale, accumulate);
    }
}

crate::simd_fn! {
fn store_row(dst: &mut [f32], src: &[f32], scale: f32, accumulate: bool) {
    if accumulate {
        for (d, s) in dst.iter_mut().zip(src) {
            *d += scale * s;
        }
    } else {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = scale * s;
        }
    }
}
}

crate::simd_fn! {
/// `dst[2j] = bf16(r0[j])`, `dst[2j + 1] = bf16(r1[j])`: two rows of B into VNNI pairs.
fn interleave_pair(dst: &mut [u16], r0: &[f32], r1: &[f32]) {
    for ((d, x), y) in dst.chunks_exact_mut(2).zip(r0).zip(r1) {
        d[0] = to_bf16(*x);
        d[1] = to_bf16(*y);
    }
}
}

/// Splits C's 32 × 32 blocks over the threads (rows of blocks when there are enough, else columns) and runs
/// the kernel on each.
#[allow(clippy::too_many_arguments)]
fn run_blocks(
    kernel: Kernel,
    pa: &PackedA,
    pb: &PackedB,
    c: CPtr,
    c_rs: usize,
    m: usize,
    scale: f32,
    accumulate: bool,
    par: Par,
) {
    let n = pb.n;
    let mb = m.div_ceil(BLOCK);
    let nb = n.div_ceil(BLOCK);
    let threads = if par == Par::Rayon { rayon::current_num_threads().max(1) } else { 1 };
    let by_rows = mb >= nb || mb >= 2 * threads;
    let units = if by_rows { mb } else { nb };
    let tasks = threads.min(units).max(1);
    let task = |t: usize| {
        let (u0, u1) = (units * t / tasks, units * (t + 1) / tasks);
        let (m0, m1, n0, n1) = if by_rows { (u0, u1, 0, nb) } else { (0, mb, u0, u1) };
        // SAFETY: tasks cover disjoint block ranges of C; the packed operands cover every block.
        unsafe { run_range(kernel, pa, pb, c, c_rs, m, m0..m1, n0..n1, scale, accumulate) }
    };
    if tasks == 1 {
        task(0);
    } else {
        (0..tasks).into_par_iter().for_each(task);
    }
}

/// # Safety
/// The C blocks in the given ranges are valid and touched by no one else.
#[allow(clippy::too_many_arguments)]
unsafe fn run_range(
    kernel: Kernel,
    pa: &PackedA,
    pb: &PackedB,
    c: CPtr,
    c_rs: usize,
    m: usize,
    mbs: std::ops::Range<usize>,
    nbs: std::ops::Range<usize>,
    scale: f32,
    accumulate: bool,
) {
    let n = pb.n;
    let (k_pad, lda) = (pa.k_pad, pa.lda);
    debug_assert_eq!(k_pad, pb.k_pad);
    // Rows of A per pass so that they stay in L2 (~1 MiB) while every column block of B streams past.
    let chunk = (((1 << 20) / (lda * 2)) / BLOCK).max(1);
    // Tiles store C in place unless its rows are a multiple of 16 cache lines apart: then a tile's 16 rows
    // would share a few L1 sets, and a contiguous buffer is faster.
    let c_direct = !c_rs.is_multiple_of(16 * 16);
    let mut acc = Box::new([0.0f32; BLOCK * BLOCK]);
    if kernel == Kernel::Amx {
        amx::configure();
    }
    let mut mc = mbs.start;
    while mc < mbs.end {
        let mc_end = (mc + chunk).min(mbs.end);
        for jb in nbs.clone() {
            let b_panel = pb.data.as_ptr().add(jb * 2 * 16 * k_pad);
            for ib in mc..mc_end {
                let a_rows = pa.data.as_ptr().add(ib * BLOCK * lda);
                let (i0, j0) = (ib * BLOCK, jb * BLOCK);
                let (rows, cols) = (BLOCK.min(m - i0), BLOCK.min(n - j0));
                match kernel {
                    // A whole block at scale 1: the tiles load and store C in place.
                    Kernel::Amx if c_direct && rows == BLOCK && cols == BLOCK && scale == 1.0 => {
                        amx::block(a_rows, lda, b_panel, k_pad, c.0.add(i0 * c_rs + j0), c_rs * 4, accumulate);
                        continue;
                    }
                    Kernel::Amx => amx::block(a_rows, lda, b_panel, k_pad, acc.as_mut_ptr(), BLOCK * 4, false),
                    Kernel::Avx512Bf16 => avx512::block(a_rows, lda, b_panel, k_pad, &mut acc),
                    Kernel::F32 => unreachable!("the f32 kernel does not use packed blocks"),
                }
                store_block(c, c_rs, i0, j0, rows, cols, &acc, scale, accumulate);
            }
        }
        mc = mc_end;
    }
    if kernel == Kernel::Amx {
        amx::release();
    }
}

/// Packed bf16 copies of weights, rebuilt lazily when the weights' version changes (once per optimizer step)
/// and shared by the forward and backward passes. Keyed by the weight's address, length and orientation.
#[derive(Default)]
pub struct WeightCache {
    entries: std::collections::HashMap<(usize, usize, bool), (u64, PackedB)>,
}

impl WeightCache {
    /// The packed `[k, n]` operand of a weight stored row-major `[rows, cols]`: `transposed` packs `weightᵀ`
    /// (`k = cols`, `n = rows`, as `linear`'s forward uses it), else `weight` itself (`k = rows`, `n = cols`).
    /// Repacks when `version` differs from the one the entry was packed at.
    pub fn get(&mut self, version: u64, weight: &[f32], rows: usize, cols: usize, transposed: bool) -> &PackedB {
        let w = &weight[..rows * cols];
        let key = (w.as_ptr() as usize, w.len(), transposed);
        let (view, k, n) =
            if transposed { (View::new(w, cols, true), cols, rows) } else { (View::new(w, cols, false), rows, cols) };
        let e = self.entries.entry(key).or_insert_with(|| (version.wrapping_add(1), PackedB::default()));
        if e.0 != version || e.1.k != k || e.1.n != n {
            e.1.repack(view, k, n, Par::Rayon);
            e.0 = version;
        }
        &e.1
    }

    /// Drops every entry (memory goes back).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.entries.values().map(|(_, p)| p.data.len() * 2).sum()
    }
}

/// `C = op(A) · op(B)` (+ C) in bf16 with f32 accumulation, the bf16 twin of [`crate::matmul::matmul`]; with
/// `Precision::F32` it is that function.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    prec: Precision,
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
    if prec == Precision::F32 {
        return crate::matmul::matmul(c, a, b, m, k, n, trans_a, trans_b, accumulate);
    }
    let av = if trans_a { View { data: a, rs: 1, cs: m } } else { View { data: a, rs: k, cs: 1 } };
    let bv = if trans_b { View { data: b, rs: 1, cs: k } } else { View { data: b, rs: n, cs: 1 } };
    let par = if m * n * k >= 1 << 18 { Par::Rayon } else { Par::Seq };
    gemm_view(c, n, av, bv, m, n, k, 1.0, accumulate, par);
}

/// f64 reference of the bf16 product: both operands rounded to bf16, products and sums in f64.
#[allow(clippy::too_many_arguments)]
pub fn reference(
    c: &mut [f32],
    c_rs: usize,
    a: View<'_>,
    b: View<'_>,
    m: usize,
    n: usize,
    k: usize,
    scale: f32,
    accumulate: bool,
) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for p in 0..k {
                let x = round_bf16(a.data[i * a.rs + p * a.cs]) as f64;
                let y = round_bf16(b.data[p * b.rs + j * b.cs]) as f64;
                s += x * y;
            }
            let old = if accumulate { c[i * c_rs + j] as f64 } else { 0.0 };
            c[i * c_rs + j] = (old + scale as f64 * s) as f32;
        }
    }
}

#[cfg(test)]
mod tests;

/// Whether the CPU's vendor string (CPUID leaf 0) is AMD's.
fn cpu_is_amd() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: CPUID leaf 0 exists on every x86_64 CPU. (`__cpuid` is a safe fn in newer Rust; the block
        // keeps the crate building on its minimum Rust version.)
        #[allow(unused_unsafe)]
        let r = unsafe { std::arch::x86_64::__cpuid(0) };
        let mut v = [0u8; 12];
        v[..4].copy_from_slice(&r.ebx.to_le_bytes());
        v[4..8].copy_from_slice(&r.edx.to_le_bytes());
        v[8..].copy_from_slice(&r.ecx.to_le_bytes());
        &v == b"AuthenticAMD"
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
