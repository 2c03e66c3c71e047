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
//!   four tile registers while the whole k dimension streams through two A and two B tiles (A packed in a
//!   tile-contiguous layout).
//! - [`Kernel::Avx512Bf16`]: `vdpbf16ps` on 512-bit registers (AMD Zen 4, Intel Cooper Lake / without AMX),
//!   8 × 32 register blocks.
//! - [`Kernel::F32`]: the f32 `gemm` crate, for CPUs with neither (no rounding to bf16 at all).
//!
//! Why our own kernels and not oneDNN: the product stays one statically linked binary with no system library
//! to install (`libdnnl` is a 30 MB shared object with its own thread pool that would fight rayon), and the
//! shapes of fine-tuning (k ≤ a few thousand, row-major activations) need only one blocking scheme. The
//! kernels are `core::arch` intrinsics (AVX512-BF16) and `asm!` (AMX: its intrinsics are not stable Rust).
//!
//! Both bf16 kernels read packed operands: A as bf16 (`[m_pad, k_pad]`, padded with zeros to multiples of 32;
//! row-major for AVX512-BF16, in 16 × 32 tiles for AMX) and B in the "VNNI" pair layout `[n_pad / 16][k_pad / 2][16][2]`, where the two
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

    /// The line `bf16 = true` prints: which kernel runs the matmuls, or that this CPU has none and they run in
    /// f32 (PyTorch's autocast emulates bf16 there, at a small fraction of its f32 speed).
    pub fn bf16_line(self) -> String {
        match self {
            Kernel::F32 => "bf16: this CPU has no bf16 matmul kernel (AMX or AVX512-BF16), so the matmuls run in f32 \
                            (f32 results at f32 speed)"
                .into(),
            k => format!("bf16: matmuls in bfloat16 with f32 accumulation on the {} kernel", k.name()),
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

/// A converted to bf16, zero padded to `[m_pad, k_pad]`, in one of two layouts: rows `lda ≥ k_pad` apart (the
/// AVX512-BF16 kernel broadcasts pairs along a row), or `tiled` for AMX: `[m_pad / 16][k_pad / 32][16][32]`,
/// so that each 16 × 32 tile the kernel loads is 1 KiB of consecutive memory (a strided tile load from L2 costs
/// about 1.4x a contiguous one).
struct PackedA {
    k_pad: usize,
    lda: usize,
    tiled: bool,
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

/// Where element (r, p) of a packed A lies: in 16 × 32 tiles (`tiled`, AMX) or in rows `lda` apart.
#[inline(always)]
fn packed_at(tiled: bool, k_pad: usize, lda: usize, r: usize, p: usize) -> usize {
    if tiled {
        ((r / 16) * (k_pad / BLOCK) + p / BLOCK) * 512 + (r % 16) * BLOCK + p % BLOCK
    } else {
        r * lda + p
    }
}

impl PackedA {
    fn pack(a: View<'_>, m: usize, k: usize, tiled: bool, par: Par) -> Self {
        let k_pad = round_up(k, BLOCK);
        let lda = if tiled { k_pad } else { lda_for(k_pad) };
        let m_pad = round_up(m, BLOCK);
        // Zeros are needed only where padding is read: rows past m, or k past a multiple of 32.
        let mut data = scratch_take(m_pad * lda, m != m_pad || k != k_pad);
        // Where row r (of a 32-row chunk) and column p start a run of up to 32 values that stay contiguous.
        let at = |r: usize, p: usize| packed_at(tiled, k_pad, lda, r, p);
        // Rows in groups of 32 (one block), converted on all threads when allowed.
        let fill = |(bi, chunk): (usize, &mut [u16])| {
            let r0 = bi * BLOCK;
            let rows = BLOCK.min(m.saturating_sub(r0));
            if a.cs == 1 {
                for r in 0..rows {
                    let s = (r0 + r) * a.rs;
                    if tiled {
                        convert_row_tiled(&mut chunk[at(r, 0)..], &a.data[s..s + k]);
                    } else {
                        convert_row(&mut chunk[r * lda..r * lda + k], &a.data[s..s + k]);
                    }
                }
            } else {
                for r in 0..rows {
                    for p in 0..k {
                        chunk[at(r, p)] = to_bf16(a.data[(r0 + r) * a.rs + p * a.cs]);
                    }
                }
            }
        };
        let parallel = par == Par::Rayon && m * k >= 1 << 16;
        if a.rs == 1 && a.cs != 1 {
            // Transposed (A's columns are contiguous, as doutᵀ in a weight gradient): 32 × 32 blocks go through
            // a local tile, a group of GROUP packed rows at a time over all of k. Each source row is then read in
            // runs of GROUP values and the group's packed tiles (GROUP / 16 of them per 32 values of k) stay in
            // cache. (Per 32 rows, the walk read a 128-byte strip of every source row: a cache and TLB miss
            // each; by bands of k over all rows, the tiles written lie 64 KiB apart, in the same cache sets.)
            const GROUP: usize = 8 * BLOCK;
            let dst = UPtr(data.as_mut_ptr());
            let group = |g: usize| {
                let mut tile = [[0u16; BLOCK]; BLOCK];
                for p0 in (0..k).step_by(BLOCK) {
                    let pn = BLOCK.min(k - p0);
                    for r0 in (g * GROUP..m.min((g + 1) * GROUP)).step_by(BLOCK) {
                        let rows = BLOCK.min(m - r0);
                        for (pp, t) in tile.iter_mut().enumerate().take(pn) {
                            let s = (p0 + pp) * a.cs + r0;
                            convert_row(&mut t[..rows], &a.data[s..s + rows]);
                        }
                        for r in 0..rows {
                            let d = r0 * lda + at(r, p0);
                            // SAFETY: group g writes only its own rows, inside the buffer (the layouts place
                            // column p of row r at `r0 · lda + at(r, p)`, below m_pad · lda).
                            let out = unsafe { std::slice::from_raw_parts_mut(dst.get().add(d), pn) };
                            for (pp, v) in out.iter_mut().enumerate() {
                                *v = tile[pp][r];
                            }
                        }
                    }
                }
            };
            let groups = m.div_ceil(GROUP);
            if parallel {
                (0..groups).into_par_iter().for_each(group);
            } else {
                (0..groups).for_each(group);
            }
        } else if parallel {
            data.par_chunks_mut(BLOCK * lda).enumerate().for_each(fill);
        } else {
            data.chunks_mut(BLOCK * lda).enumerate().for_each(fill);
        }
        PackedA { k_pad, lda, tiled, data }
    }
}

impl Drop for PackedA {
    fn drop(&mut self) {
        scratch_give(std::mem::take(&mut self.data));
    }
}

thread_local! {
    /// Packing buffers kept for the thread's next call: a fresh multi-megabyte allocation per matmul costs its
    /// page faults and zeroing every time (measured: packing A took 4x its conversion). A stack, so that a
    /// nested call (rayon may run another matmul on this thread while it waits) gets its own buffer.
    static SCRATCH: std::cell::RefCell<Vec<Vec<u16>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A buffer of `len` values, reusing one this thread gave back: all zero when `zeroed`, else holding stale
/// values that the caller overwrites (a megabyte memset per call showed in profiles).
fn scratch_take(len: usize, zeroed: bool) -> Vec<u16> {
    let mut v = SCRATCH.with(|s| s.borrow_mut().pop()).unwrap_or_default();
    if zeroed {
        v.clear();
    }
    v.resize(len, 0);
    v.truncate(len);
    v
}

/// Keeps `v` for the thread's next [`scratch_take`] (at most four buffers are kept).
fn scratch_give(v: Vec<u16>) {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < 4 {
            s.push(v);
        }
    });
}

crate::simd_fn! {
/// One row of A into the tiled layout: its 32-value runs go 512 values (one tile) apart; the tail stays zero.
fn convert_row_tiled(dst: &mut [u16], src: &[f32]) {
    for (i, s) in src.chunks(BLOCK).enumerate() {
        for (d, x) in dst[i * 512..i * 512 + s.len()].iter_mut().zip(s) {
            *d = to_bf16(*x);
        }
    }
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
                // Columns contiguous along k (a transposed weight): each column is converted whole, and a VNNI
                // pair (two consecutive k of one column) is then one 32-bit value, so the panel is a transpose of
                // 16 columns of pairs; writing it row by row of the panel keeps the stores contiguous (an
                // element-by-element scatter of 16-bit values cost twice the conversion).
                let mut cvt = scratch_take(16 * k_pad, false);
                for jj in 0..16 {
                    let row = &mut cvt[jj * k_pad..(jj + 1) * k_pad];
                    if jj < cols {
                        let src = (j0 + jj) * b.cs;
                        convert_row(&mut row[..k], &b.data[src..src + k]);
                        row[k..].fill(0);
                    } else {
                        row.fill(0);
                    }
                }
                transpose_pairs(dst, &cvt, k_pad);
                scratch_give(cvt);
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
    assert!(needed(m, n, c_rs, 1) <= c.len(), "bf16 matmul: C too small");
    // SAFETY: C is an exclusive slice that holds every element written (asserted above).
    unsafe { gemm_ptr_with(kernel, c.as_mut_ptr(), c_rs, a, b, m, n, k, scale, accumulate, par) }
}

/// [`gemm_view_with`] into a raw C, for callers whose threads write disjoint blocks of one matrix.
///
/// # Safety
/// C is valid for reads and writes at `c[i * c_rs + j]` for i < m, j < n, and no one else touches those
/// elements during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_ptr_with(
    kernel: Kernel,
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
    if kernel == Kernel::F32 || tiny(m, n, k) {
        return crate::matmul::gemm_ptr(c, c_rs, a, b, m, n, k, scale, accumulate, par);
    }
    assert!(needed(k, n, b.rs, b.cs) <= b.data.len(), "bf16 matmul: B too small");
    assert!(needed(m, k, a.rs, a.cs) <= a.data.len(), "bf16 matmul: A too small");
    assert!(kernel.available(), "bf16 matmul: kernel {} unavailable on this CPU", kernel.name());
    // A temporary B from the thread's packing buffers (no allocation per call).
    let mut pb = PackedB { data: scratch_take(0, true), ..PackedB::default() };
    pb.repack(b, k, n, par);
    let pa = PackedA::pack(a, m, k, kernel == Kernel::Amx, par);
    run_blocks(kernel, &pa, &pb, CPtr(c), c_rs, m, scale, accumulate, &Epi::default(), par);
    scratch_give(std::mem::take(&mut pb.data));
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
    gemm_packed_epi(kernel, c, c_rs, a, b, m, scale, accumulate, &Epi::default(), par)
}

#[allow(clippy::too_many_arguments)]
fn gemm_packed_epi(
    kernel: Kernel,
    c: &mut [f32],
    c_rs: usize,
    a: View<'_>,
    b: &PackedB,
    m: usize,
    scale: f32,
    accumulate: bool,
    epi: &Epi<'_>,
    par: Par,
) {
    let (k, n) = (b.k, b.n);
    assert!(needed(m, n, c_rs, 1) <= c.len(), "bf16 matmul: C too small");
    assert!(needed(m, k, a.rs, a.cs) <= a.data.len(), "bf16 matmul: A too small");
    if m == 0 || n == 0 {
        return;
    }
    let cp = CPtr(c.as_mut_ptr());
    if k == 0 || kernel == Kernel::F32 || tiny(m, n, k) {
        if k == 0 {
            if !accumulate {
                for i in 0..m {
                    c[i * c_rs..i * c_rs + n].fill(0.0);
                }
            }
        } else {
            // Unpack B (already rounded to bf16) and multiply in f32.
            let mut bf = vec![0.0f32; k * n];
            for p in 0..k {
                for j in 0..n {
                    bf[p * n + j] = b.get(p, j);
                }
            }
            crate::matmul::gemm_view(c, c_rs, a, View::new(&bf, n, false), m, n, k, scale, accumulate, par);
        }
        // SAFETY: C holds the m × n block (asserted); the caller checked the epilogue's buffers.
        unsafe { epi.apply(cp, c_rs, 0, 0, m, n) };
        return;
    }
    assert!(kernel.available(), "bf16 matmul: kernel {} unavailable on this CPU", kernel.name());
    let pa = PackedA::pack(a, m, k, kernel == Kernel::Amx, par);
    run_blocks(kernel, &pa, b, cp, c_rs, m, scale, accumulate, epi, par);
}

/// Post-ops applied to each finished 32 × 32 block of C while it is still in L1, in this order: `C += bias`
/// (one value per column), `C += residual` (laid out as C), `gelu_out = gelu(C)` (laid out as C; erf in f32,
/// [`crate::kernels::gelu::gelu_f32`]). Each saves a
/// pass over C through memory (a linear layer's output is written once instead of three times).
#[derive(Clone, Copy, Default)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a [f32]>,
    pub residual: Option<&'a [f32]>,
}

/// [`Epilogue`] as the block loops see it: the GELU output as a raw pointer, since tasks write disjoint blocks.
#[derive(Clone, Copy, Default)]
struct Epi<'a> {
    bias: Option<&'a [f32]>,
    residual: Option<&'a [f32]>,
    gelu: Option<CPtr>,
    /// Instead of C: `gelu(C + bias)` rounded to bf16 into the packed A of a following matmul.
    to_packed: Option<PackOut>,
}

/// Where [`Epi::to_packed`] writes: a [`PackedA`]'s buffer and layout (its k is this product's n).
#[derive(Clone, Copy)]
struct PackOut {
    dst: UPtr,
    k_pad: usize,
    lda: usize,
    tiled: bool,
}

impl PackOut {
    /// Writes `gelu(acc + bias)` of the block at (i0, j0), `rows × cols` valid, as bf16 A values.
    ///
    /// # Safety
    /// The block's elements of the packed buffer are valid and touched by no one else (j0 is a multiple of 32,
    /// so each row's run is contiguous in both layouts).
    #[allow(clippy::too_many_arguments)]
    unsafe fn write(&self, acc: &[f32; BLOCK * BLOCK], i0: usize, j0: usize, rows: usize, cols: usize, bias: &[f32]) {
        for r in 0..rows {
            let i = i0 + r;
            let at = packed_at(self.tiled, self.k_pad, self.lda, i, j0);
            let dst = std::slice::from_raw_parts_mut(self.dst.get().add(at), cols);
            gelu_bf16_row(dst, &acc[r * BLOCK..r * BLOCK + cols], &bias[j0..j0 + cols]);
        }
    }
}

crate::simd_fn! {
/// `dst = bf16(gelu(src + bias))`: the f32 arithmetic of the unfused path (bias, then erf GELU), rounded once.
fn gelu_bf16_row(dst: &mut [u16], src: &[f32], bias: &[f32]) {
    for ((d, &x), &b) in dst.iter_mut().zip(src).zip(bias) {
        *d = to_bf16(crate::kernels::gelu::gelu_f32(x + b));
    }
}
}

impl Epi<'_> {
    fn is_empty(&self) -> bool {
        self.bias.is_none() && self.residual.is_none() && self.gelu.is_none() && self.to_packed.is_none()
    }

    /// Writes C = acc with the post-ops applied, rows i0.. and columns j0.. (`rows × cols`), in one pass.
    ///
    /// # Safety
    /// As [`apply`](Self::apply).
    #[allow(clippy::too_many_arguments)]
    unsafe fn store(
        &self,
        acc: &[f32; BLOCK * BLOCK],
        c: CPtr,
        c_rs: usize,
        i0: usize,
        j0: usize,
        rows: usize,
        cols: usize,
    ) {
        let at = i0 * c_rs + j0;
        let bias = self.bias.map(|b| &b[j0..j0 + cols]);
        let res = self.residual.map(|x| &x[at..at + (rows - 1) * c_rs + cols]);
        let act = self.gelu.map(|g| g.0.add(at));
        post_ops_block(c.0.add(at), c_rs, acc.as_ptr(), BLOCK, rows, cols, bias, res, act);
    }

    /// Applies the post-ops to rows i0.. and columns j0.. (`rows × cols`) of C.
    ///
    /// # Safety
    /// The block of C and of the GELU output is valid and touched by no one else.
    #[allow(clippy::too_many_arguments)]
    unsafe fn apply(&self, c: CPtr, c_rs: usize, i0: usize, j0: usize, rows: usize, cols: usize) {
        if self.is_empty() {
            return;
        }
        let at = i0 * c_rs + j0;
        let bias = self.bias.map(|b| &b[j0..j0 + cols]);
        // The residual's rows between the block's (other blocks' columns) are only read: a shared slice.
        let res = self.residual.map(|x| &x[at..at + (rows - 1) * c_rs + cols]);
        let c = c.0.add(at);
        post_ops_block(c, c_rs, c, c_rs, rows, cols, bias, res, self.gelu.map(|g| g.0.add(at)));
    }
}

crate::simd_fn! {
/// The post-ops on one block, in one call (per row, the dispatch cost more than the 32 additions): row r of
/// C = `src` row r (`src_rs` apart: C itself for in place, or the L1 block) + bias + residual, in that order,
/// written once; `act` row r = gelu of it. `c`, `src` and `act` point at the block's first element; the caller
/// owns the C and GELU elements.
#[allow(clippy::too_many_arguments)]
fn post_ops_block(
    c: *mut f32,
    rs: usize,
    src: *const f32,
    src_rs: usize,
    rows: usize,
    cols: usize,
    bias: Option<&[f32]>,
    res: Option<&[f32]>,
    act: Option<*mut f32>,
) {
    let mut row = [0.0f32; BLOCK];
    for r in 0..rows {
        let row = &mut row[..cols];
        // SAFETY: the caller's block of `src` holds `cols` values at row r (read before C's row is written).
        row.copy_from_slice(unsafe { std::slice::from_raw_parts(src.add(r * src_rs), cols) });
        if let Some(b) = bias {
            for (x, b) in row.iter_mut().zip(b) {
                *x += b;
            }
        }
        if let Some(res) = res {
            for (x, v) in row.iter_mut().zip(&res[r * rs..r * rs + cols]) {
                *x += v;
            }
        }
        // SAFETY: the caller owns `cols` elements at row r of the block in C (and in the GELU output).
        unsafe { std::slice::from_raw_parts_mut(c.add(r * rs), cols) }.copy_from_slice(row);
        if let Some(a) = act {
            // SAFETY: as above.
            let g = unsafe { std::slice::from_raw_parts_mut(a.add(r * rs), cols) };
            for (o, &x) in g.iter_mut().zip(row.iter()) {
                *o = crate::kernels::gelu::gelu_f32(x);
            }
        }
    }
}
}

/// `C[m, n] = bf16(A) · B` followed by the [`Epilogue`] (and `gelu_out = gelu(C)` when given, laid out as C),
/// with the kernel from [`Kernel::current`]: a linear layer's forward with its bias, residual and activation
/// fused.
#[allow(clippy::too_many_arguments)]
pub fn gemm_packed_fused(
    c: &mut [f32],
    c_rs: usize,
    a: View<'_>,
    b: &PackedB,
    m: usize,
    epilogue: Epilogue<'_>,
    gelu_out: Option<&mut [f32]>,
    par: Par,
) {
    gemm_packed_fused_with(Kernel::current(), c, c_rs, a, b, m, epilogue, gelu_out, par)
}

/// [`gemm_packed_fused`] with an explicit kernel. Panics if the CPU cannot run it.
#[allow(clippy::too_many_arguments)]
pub fn gemm_packed_fused_with(
    kernel: Kernel,
    c: &mut [f32],
    c_rs: usize,
    a: View<'_>,
    b: &PackedB,
    m: usize,
    epilogue: Epilogue<'_>,
    gelu_out: Option<&mut [f32]>,
    par: Par,
) {
    let n = b.n;
    let need = needed(m, n, c_rs, 1);
    assert!(epilogue.bias.is_none_or(|x| x.len() >= n), "bf16 matmul: bias too small");
    assert!(epilogue.residual.is_none_or(|x| x.len() >= need), "bf16 matmul: residual too small");
    let gelu = gelu_out.map(|g| {
        assert!(g.len() >= need, "bf16 matmul: GELU output too small");
        CPtr(g.as_mut_ptr())
    });
    let epi = Epi { bias: epilogue.bias, residual: epilogue.residual, gelu, to_packed: None };
    gemm_packed_epi(kernel, c, c_rs, a, b, m, 1.0, false, &epi, par)
}

/// bf16 activations already packed as the A operand of a matmul (`[m, k]`), from [`gemm_gelu_packed_with`]: an
/// activation that only feeds the next matmul need not be written in f32 at all.
pub struct PackedActs {
    a: PackedA,
    m: usize,
    k: usize,
}

impl PackedActs {
    pub fn m(&self) -> usize {
        self.m
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// Element (i, p) as f32 (tests).
    pub fn get(&self, i: usize, p: usize) -> f32 {
        let a = &self.a;
        from_bf16(a.data[packed_at(a.tiled, a.k_pad, a.lda, i, p)])
    }
}

/// `gelu(bf16(A) · B + bias)` (`[m, n]`, f32 arithmetic as [`gemm_packed_fused_with`] with a GELU output),
/// rounded to bf16 and packed as the A operand of a following matmul with k = n: each finished block goes
/// from the tiles to the packed bf16 values while in L1, and no f32 matrix is written. A forward-only FFN
/// (inference) writes a sixth of the bytes it would through f32 pre-activation and activation buffers.
/// Panics for the f32 kernel or a product with a dimension under 16 (callers check [`tiny`] first).
pub fn gemm_gelu_packed_with(kernel: Kernel, a: View<'_>, b: &PackedB, m: usize, bias: &[f32], par: Par) -> PackedActs {
    let (k, n) = (b.k, b.n);
    assert!(kernel != Kernel::F32 && !tiny(m, n, k), "bf16 matmul: packed GELU output needs a bf16 kernel and tiles");
    assert!(kernel.available(), "bf16 matmul: kernel {} unavailable on this CPU", kernel.name());
    assert!(needed(m, k, a.rs, a.cs) <= a.data.len(), "bf16 matmul: A too small");
    assert!(bias.len() >= n, "bf16 matmul: bias too small");
    let tiled = kernel == Kernel::Amx;
    let pa = PackedA::pack(a, m, k, tiled, par);
    let k_pad = round_up(n, BLOCK);
    let lda = if tiled { k_pad } else { lda_for(k_pad) };
    let m_pad = round_up(m, BLOCK);
    // Zeros are needed only where padding is read: rows past m, or k past n.
    let mut out = PackedA { k_pad, lda, tiled, data: scratch_take(m_pad * lda, m != m_pad || n != k_pad) };
    let to_packed = PackOut { dst: UPtr(out.data.as_mut_ptr()), k_pad, lda, tiled };
    let epi = Epi { bias: Some(bias), to_packed: Some(to_packed), ..Epi::default() };
    run_blocks(kernel, &pa, b, CPtr(std::ptr::null_mut()), 0, m, 1.0, false, &epi, par);
    PackedActs { a: out, m, k: n }
}

/// `C[m, n] = A · B` followed by the [`Epilogue`], for an A from [`gemm_gelu_packed_with`] (`m` and k from it,
/// packed by the same kernel).
pub fn gemm_prepacked_fused_with(
    kernel: Kernel,
    c: &mut [f32],
    c_rs: usize,
    a: &PackedActs,
    b: &PackedB,
    epilogue: Epilogue<'_>,
    par: Par,
) {
    let (m, n) = (a.m, b.n);
    assert_eq!(a.k, b.k, "bf16 matmul: packed A has k = {}, B has {}", a.k, b.k);
    assert_eq!(a.a.tiled, kernel == Kernel::Amx, "bf16 matmul: A packed for another kernel");
    assert!(kernel.available(), "bf16 matmul: kernel {} unavailable on this CPU", kernel.name());
    let need = needed(m, n, c_rs, 1);
    assert!(need <= c.len(), "bf16 matmul: C too small");
    assert!(epilogue.bias.is_none_or(|x| x.len() >= n), "bf16 matmul: bias too small");
    assert!(epilogue.residual.is_none_or(|x| x.len() >= need), "bf16 matmul: residual too small");
    if m == 0 || n == 0 {
        return;
    }
    let epi = Epi { bias: epilogue.bias, residual: epilogue.residual, ..Epi::default() };
    run_blocks(kernel, &a.a, b, CPtr(c.as_mut_ptr()), c_rs, m, 1.0, false, &epi, par);
}

/// The packed-A buffer, written by tasks that own disjoint parts of it.
#[derive(Clone, Copy)]
struct UPtr(*mut u16);
// SAFETY: every task writes a disjoint set of elements.
unsafe impl Send for UPtr {}
unsafe impl Sync for UPtr {}

impl UPtr {
    // A method, so that closures capture the whole (Sync) wrapper rather than its raw-pointer field.
    fn get(self) -> *mut u16 {
        self.0
    }
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
/// One 16-column panel of B from its columns in bf16 (`cols[jj * k_pad..]`): pair q of column jj goes to
/// `dst[(q * 16 + jj) * 2..]`.
fn transpose_pairs(dst: &mut [u16], cols: &[u16], k_pad: usize) {
    for (q, out) in dst[..k_pad * 16].chunks_exact_mut(32).enumerate() {
        for (jj, pair) in out.chunks_exact_mut(2).enumerate() {
            let at = jj * k_pad + 2 * q;
            pair.copy_from_slice(&cols[at..at + 2]);
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
    epi: &Epi<'_>,
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
        unsafe { run_range(kernel, pa, pb, c, c_rs, m, m0..m1, n0..n1, scale, accumulate, epi) }
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
    epi: &Epi<'_>,
) {
    if kernel == Kernel::Amx {
        amx::configure();
        run_range_amx(pa, pb, c, c_rs, m, mbs, nbs, scale, accumulate, epi);
        amx::release();
        return;
    }
    let n = pb.n;
    let (k_pad, lda) = (pa.k_pad, pa.lda);
    debug_assert_eq!(k_pad, pb.k_pad);
    // Rows of A per pass so that they stay in L2 (~1 MiB) while every column block of B streams past.
    let chunk = (((1 << 20) / (lda * 2)) / BLOCK).max(1);
    let mut acc = Box::new([0.0f32; BLOCK * BLOCK]);
    let mut mc = mbs.start;
    while mc < mbs.end {
        let mc_end = (mc + chunk).min(mbs.end);
        for jb in nbs.clone() {
            let b_panel = pb.data.as_ptr().add(jb * 2 * 16 * k_pad);
            for ib in mc..mc_end {
                let a_rows = pa.data.as_ptr().add(ib * BLOCK * lda);
                let (i0, j0) = (ib * BLOCK, jb * BLOCK);
                let (rows, cols) = (BLOCK.min(m - i0), BLOCK.min(n - j0));
                avx512::block(a_rows, lda, b_panel, k_pad, &mut acc);
                if let Some(po) = epi.to_packed {
                    po.write(&acc, i0, j0, rows, cols, epi.bias.unwrap_or(&[]));
                    continue;
                }
                if !accumulate && scale == 1.0 && !epi.is_empty() {
                    epi.store(&acc, c, c_rs, i0, j0, rows, cols);
                    continue;
                }
                store_block(c, c_rs, i0, j0, rows, cols, &acc, scale, accumulate);
                epi.apply(c, c_rs, i0, j0, rows, cols);
            }
        }
        mc = mc_end;
    }
}

/// The AMX loop over C's blocks. The loads bound the kernel (see [`amx::block`]), so the order keeps one
/// operand in L1: when a 32-row block of A fits (k_pad ≤ 512: 32 KiB), it stays there while every column
/// block of B streams past from L2; for longer k, a 32-column panel of B stays in L1 while the rows of A
/// stream (prefetched), a batch of rows that fits L2 at a time.
///
/// # Safety
/// As [`run_range`]; the tile configuration is loaded on this thread.
#[allow(clippy::too_many_arguments)]
unsafe fn run_range_amx(
    pa: &PackedA,
    pb: &PackedB,
    c: CPtr,
    c_rs: usize,
    m: usize,
    mbs: std::ops::Range<usize>,
    nbs: std::ops::Range<usize>,
    scale: f32,
    accumulate: bool,
    epi: &Epi<'_>,
) {
    debug_assert!(pa.tiled);
    let n = pb.n;
    let k_pad = pa.k_pad;
    debug_assert_eq!(k_pad, pb.k_pad);
    let steps = k_pad / BLOCK;
    // Tiles store C in place unless its rows are a multiple of 16 cache lines apart: then a tile's 16 rows
    // would share a few L1 sets, and a contiguous buffer is faster.
    let c_direct = !c_rs.is_multiple_of(16 * 16);
    let mut acc = Box::new([0.0f32; BLOCK * BLOCK]);
    let mut one = |ib: usize, jb: usize| {
        let a0 = pa.data.as_ptr().add(ib * BLOCK * k_pad);
        let a1 = a0.add(16 * k_pad);
        let b = pb.data.as_ptr().add(jb * 2 * 16 * k_pad);
        let (i0, j0) = (ib * BLOCK, jb * BLOCK);
        let (rows, cols) = (BLOCK.min(m - i0), BLOCK.min(n - j0));
        if let Some(po) = epi.to_packed {
            amx::block(a0, a1, b, k_pad, steps, acc.as_mut_ptr(), BLOCK * 4, false);
            po.write(&acc, i0, j0, rows, cols, epi.bias.unwrap_or(&[]));
            return;
        }
        if !accumulate && scale == 1.0 && !epi.is_empty() {
            // A forward product with post-ops: the tiles go to the L1 block, and one pass writes C (and the GELU
            // output) from there; storing the tiles into C and reading them back for the post-ops cost a second
            // pass over C in memory.
            amx::block(a0, a1, b, k_pad, steps, acc.as_mut_ptr(), BLOCK * 4, false);
            epi.store(&acc, c, c_rs, i0, j0, rows, cols);
            return;
        }
        if c_direct && rows == BLOCK && cols == BLOCK && scale == 1.0 {
            // A whole block at scale 1: the tiles load and store C in place.
            amx::block(a0, a1, b, k_pad, steps, c.0.add(i0 * c_rs + j0), c_rs * 4, accumulate);
        } else {
            amx::block(a0, a1, b, k_pad, steps, acc.as_mut_ptr(), BLOCK * 4, false);
            store_block(c, c_rs, i0, j0, rows, cols, &acc, scale, accumulate);
        }
        epi.apply(c, c_rs, i0, j0, rows, cols);
    };
    if k_pad <= 512 {
        for ib in mbs {
            for jb in nbs.clone() {
                one(ib, jb);
            }
        }
    } else {
        let chunk = (((1 << 20) / (k_pad * 2)) / BLOCK).max(1);
        let mut mc = mbs.start;
        while mc < mbs.end {
            let mc_end = (mc + chunk).min(mbs.end);
            for jb in nbs.clone() {
                for ib in mc..mc_end {
                    one(ib, jb);
                }
            }
            mc = mc_end;
        }
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
            let _prof = crate::profile::scope("bf16.weight_pack");
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
