//! Our f32 GEMM for CPUs with AVX2 + FMA and no AVX-512 (AMD Zen 2/3, Intel client cores).
//!
//! Why not the `gemm` crate here: on an AVX2-only AMD EPYC (Zen 3) its kernels reached 0.10–0.13 TFLOP/s on
//! 2 cores at MiniLM's shapes, behind MKL on every forward shape (BENCHMARKS.md), and a training step spends
//! about 70 % of its time in them. The scheme is the classic blocked one (Goto / BLIS) with two changes for
//! the shapes of fine-tuning: B in `KC × NC` blocks packed into 16-column panels (one panel stays in L1 while
//! it meets every row panel of an `MC × KC` block of A, which stays in L2), but A read in place rather than
//! packed, since with n of a few hundred packing A cost as much as a sixth of the time; and one parallel
//! region per call. The register tile is 6 × 16: 12 accumulators, two B vectors and one broadcast of A, 12
//! FMAs per k.

use rayon::prelude::*;

use super::{Par, View};

/// Rows of the register tile (row panels of packed A).
const MR: usize = 6;
/// Columns of the register tile (column panels of packed B): two 8-lane vectors.
const NR: usize = 16;
/// Depth of a packed block: a 6 × 256 A panel (6 KiB) and a 16 × 256 B panel (16 KiB) share the 32 KiB L1.
const KC: usize = 256;
/// Rows of an A block: 120 × 256 × 4 B = 120 KiB, a quarter of a 512 KiB L2.
const MC: usize = 120;
/// Columns of a packed B block: 256 × 4096 × 4 B = 4 MiB, in L3 (a multiple of NR).
const NC: usize = 4096;

/// Whether the CPU runs this kernel.
pub(super) fn usable() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `C[m, n] = scale · A · B` (+ the old C when `accumulate`), C at `c[i * c_rs + j]`.
///
/// # Safety
/// [`usable`]; C valid for reads and writes at every (i < m, j < n) and touched by no one else during the
/// call; A and B hold every element their views address; m, n, k > 0.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm(
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
    let threads = if par == Par::Rayon { rayon::current_num_threads().max(1) } else { 1 };
    let panels = n.div_ceil(NR);
    let grid = Grid::new(m, panels, threads);
    let c = CPtr(c);
    // One parallel region per call: each task owns a block of C and runs every k step itself, packing the B
    // panels it uses (a fork-join per k step waited each time for the slowest thread).
    let task = |t: usize| {
        let (i0, rows, q0, q1) = grid.task(t, m, panels);
        // A is read in place, strided: packing it cost up to a sixth of the time when n is small (each element
        // packed once per n / 16 tiles' worth of FMAs). Only a ragged last row panel is copied, zero padded, so
        // that the tile never reads past A.
        let ragged = if i0 + rows == m { rows % MR } else { 0 };
        let mut edge = [0.0f32; MR * KC];
        for qb in (q0..q1).step_by(NC / NR) {
            let qe = (qb + NC / NR).min(q1);
            let j0 = qb * NR;
            let nc = (qe * NR).min(n) - j0;
            for p0 in (0..k).step_by(KC) {
                let kc = KC.min(k - p0);
                // Later k blocks add to what the first one wrote.
                let add = accumulate || p0 > 0;
                let mut bp = Scratch::take((qe - qb) * kc * NR);
                pack_b(bp.as_mut(), b, p0, kc, j0, nc);
                for r in 0..ragged {
                    let s = (m - ragged + r) * a.rs + p0 * a.cs;
                    for p in 0..kc {
                        edge[p * MR + r] = a.data[s + p * a.cs];
                    }
                }
                for ib in (0..rows).step_by(MC) {
                    let ie = (ib + MC).min(rows);
                    for q in 0..qe - qb {
                        let jq = q * NR;
                        let cols = NR.min(nc - jq);
                        let bq = bp.as_ref()[q * kc * NR..].as_ptr();
                        for r in (ib..ie).step_by(MR) {
                            let tile_rows = MR.min(ie - r);
                            let (ap, a_rs, a_cs) = if tile_rows == MR {
                                (a.data[(i0 + r) * a.rs + p0 * a.cs..].as_ptr(), a.rs, a.cs)
                            } else {
                                (edge.as_ptr(), 1, MR)
                            };
                            // SAFETY: the tile lies inside C (rows below m, columns below n), which this task
                            // alone writes; A's MR rows and kc columns from `ap` lie inside A (or the edge copy);
                            // the B panel holds kc · NR values; the caller checked the CPU.
                            unsafe {
                                let at = c.get().add((i0 + r) * c_rs + j0 + jq);
                                tile(kc, ap, a_rs, a_cs, bq, at, c_rs, tile_rows, cols, scale, add);
                            }
                        }
                    }
                }
                bp.give();
            }
        }
    };
    if grid.tasks() > 1 {
        (0..grid.tasks()).into_par_iter().for_each(task);
    } else {
        task(0);
    }
}

/// How C splits over threads: `gm` row ranges of `mc` rows (a multiple of MR) times `gn` ranges of `pn`
/// column panels, about two tasks per thread so that a thread slowed by others' work on the machine hands
/// part of its share over. Columns first: a task packs the B panels of its columns and reads A in place, so
/// splitting rows packs B once more per range.
#[derive(Clone, Copy)]
struct Grid {
    mc: usize,
    pn: usize,
    gn: usize,
    gm: usize,
}

impl Grid {
    fn new(m: usize, panels: usize, threads: usize) -> Self {
        let (mut gm, mut gn) = (1, 1);
        if threads > 1 {
            let want = 2 * threads;
            gn = panels.min(want);
            gm = want.div_ceil(gn).min(m.div_ceil(MR));
        }
        let mc = m.div_ceil(gm).div_ceil(MR) * MR;
        let pn = panels.div_ceil(gn);
        Grid { mc, pn, gn: panels.div_ceil(pn), gm: m.div_ceil(mc) }
    }

    fn tasks(&self) -> usize {
        self.gm * self.gn
    }

    /// Task t's first row, row count, and column panels q0..q1.
    fn task(&self, t: usize, m: usize, panels: usize) -> (usize, usize, usize, usize) {
        let (ti, tj) = (t / self.gn, t % self.gn);
        let i0 = ti * self.mc;
        let q0 = tj * self.pn;
        (i0, self.mc.min(m - i0), q0, (q0 + self.pn).min(panels))
    }
}

/// Rows p0..p0 + kc and columns j0..j0 + nc of B into column panels `[nc / NR][kc][NR]`, the last panel's
/// missing columns zero.
fn pack_b(dst: &mut [f32], b: View<'_>, p0: usize, kc: usize, j0: usize, nc: usize) {
    for (q, panel) in dst.chunks_exact_mut(kc * NR).enumerate() {
        let c0 = j0 + q * NR;
        let live = NR.min(j0 + nc - c0);
        if b.cs == 1 {
            // Rows contiguous: NR values per k.
            for p in 0..kc {
                let s = (p0 + p) * b.rs + c0;
                let d = &mut panel[p * NR..(p + 1) * NR];
                d[..live].copy_from_slice(&b.data[s..s + live]);
                d[live..].fill(0.0);
            }
        } else {
            // Columns contiguous (a weight `[out, in]` used as its transpose): each column read once, written
            // NR apart into a panel that fits L1.
            for j in 0..NR {
                if j < live {
                    let s = (c0 + j) * b.cs + p0 * b.rs;
                    for p in 0..kc {
                        panel[p * NR + j] = b.data[s + p * b.rs];
                    }
                } else {
                    for p in 0..kc {
                        panel[p * NR + j] = 0.0;
                    }
                }
            }
        }
    }
}

/// One `rows × cols` (≤ MR × NR) tile of C from packed panels: straight into C when whole, else through a
/// local tile so that nothing outside the matrix is touched.
///
/// # Safety
/// As [`gemm`]; A's element (r, p) for r < MR, p < kc is at `a + r · a_rs + p · a_cs`, with `a_cs` or
/// `a_rs` 1; `b` holds `kc · NR` values; `c` points at the tile's first element.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn tile(
    kc: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    c: *mut f32,
    c_rs: usize,
    rows: usize,
    cols: usize,
    scale: f32,
    add: bool,
) {
    if rows == MR && cols == NR {
        micro(kc, a, a_rs, a_cs, b, c, c_rs, scale, add);
        return;
    }
    let mut t = [0.0f32; MR * NR];
    micro(kc, a, a_rs, a_cs, b, t.as_mut_ptr(), NR, scale, false);
    for r in 0..rows {
        for j in 0..cols {
            let d = c.add(r * c_rs + j);
            *d = if add { *d + t[r * NR + j] } else { t[r * NR + j] };
        }
    }
}

/// The 6 × 16 register tile: `C = scale · Σ_k a_k b_kᵀ` (+ C when `add`).
///
/// # Safety
/// As [`tile`], with a whole MR × NR tile at `c`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn micro(
    kc: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    c: *mut f32,
    c_rs: usize,
    scale: f32,
    add: bool,
) {
    use std::arch::x86_64::*;
    // C's tile is needed only at the end; its lines (in L2 or L3, not L1) load while the k loop runs.
    for r in 0..MR {
        _mm_prefetch::<_MM_HINT_T0>(c.add(r * c_rs) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(c.add(r * c_rs + NR - 1) as *const i8);
    }
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    // One FMA step: row r's value of A times the 16 B values of this k.
    macro_rules! step {
        ($b:expr, $x:expr) => {{
            let b0 = _mm256_loadu_ps($b);
            let b1 = _mm256_loadu_ps($b.add(8));
            for r in 0..MR {
                let x = _mm256_broadcast_ss(&*$x(r));
                acc[r][0] = _mm256_fmadd_ps(x, b0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(x, b1, acc[r][1]);
            }
        }};
    }
    // Two loops, so that the A addresses are independent of each other: written once with both strides, the
    // compiler stepped one pointer row by row, a chain of six dependent adds per k, as long as its 12 FMAs.
    if a_cs == 1 {
        // Rows contiguous: six row pointers, one index.
        let rows = [a, a.add(a_rs), a.add(2 * a_rs), a.add(3 * a_rs), a.add(4 * a_rs), a.add(5 * a_rs)];
        for p in 0..kc {
            step!(b.add(p * NR), |r: usize| rows[r].add(p));
        }
    } else {
        debug_assert_eq!(a_rs, 1);
        // Columns contiguous (or a copied panel): the six values of a k side by side.
        for p in 0..kc {
            let ap = a.add(p * a_cs);
            step!(b.add(p * NR), |r: usize| ap.add(r));
        }
    }
    let s = _mm256_set1_ps(scale);
    for r in 0..MR {
        let row = c.add(r * c_rs);
        for h in 0..2 {
            let p = row.add(8 * h);
            let v = if add { _mm256_fmadd_ps(acc[r][h], s, _mm256_loadu_ps(p)) } else { _mm256_mul_ps(acc[r][h], s) };
            _mm256_storeu_ps(p, v);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn micro(_: usize, _: *const f32, _: usize, _: usize, _: *const f32, _: *mut f32, _: usize, _: f32, _: bool) {
    unreachable!("the AVX2 kernel is x86-64 only");
}

/// C, written by tasks that own disjoint tiles.
#[derive(Clone, Copy)]
struct CPtr(*mut f32);
// SAFETY: every task writes a disjoint set of C tiles.
unsafe impl Send for CPtr {}
unsafe impl Sync for CPtr {}

impl CPtr {
    // A method, so that closures capture the whole (Sync) wrapper rather than its raw-pointer field.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// A packing buffer, 64-byte aligned, reused by the thread's next call: a fresh allocation per block would
/// cost its page faults every time.
struct Scratch {
    buf: Vec<f32>,
    off: usize,
    len: usize,
}

thread_local! {
    /// A stack, so that a nested call (rayon may run another matmul on this thread while it waits) gets its
    /// own buffer.
    static SCRATCH: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Scratch {
    /// `len` values of stale contents (the packers write every one).
    fn take(len: usize) -> Self {
        let mut buf = SCRATCH.with(|s| s.borrow_mut().pop()).unwrap_or_default();
        // Room to start at a 64-byte boundary.
        if buf.len() < len + 16 {
            buf.resize(len + 16, 0.0);
        }
        let off = buf.as_ptr().align_offset(64).min(15);
        Scratch { buf, off, len }
    }

    fn as_ref(&self) -> &[f32] {
        &self.buf[self.off..self.off + self.len]
    }

    fn as_mut(&mut self) -> &mut [f32] {
        &mut self.buf[self.off..self.off + self.len]
    }

    /// Keeps the buffer for the thread's next [`take`](Self::take) (at most four are kept).
    fn give(self) {
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < 4 {
                s.push(self.buf);
            }
        });
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// The register tile alone on L1-resident panels (`cargo test --release -p finetune-engine --lib
    /// micro_speed -- --ignored --nocapture`): its GFLOP/s against the core's FMA rate.
    #[test]
    #[ignore]
    fn micro_speed() {
        if !usable() {
            crate::kernels::testutil::skipped("micro_speed: the avx2 kernel: the CPU lacks AVX2 and FMA");
            return;
        }
        let a = vec![0.5f32; MR * KC];
        let b = vec![0.25f32; NR * KC];
        let mut c = vec![0.0f32; MR * NR];
        for kc in [64usize, 256] {
            let reps = 200_000;
            let s = std::time::Instant::now();
            for _ in 0..reps {
                // SAFETY: the CPU check above; the panels hold kc · MR and kc · NR values, C one tile.
                unsafe { micro(kc, a.as_ptr(), 1, MR, b.as_ptr(), c.as_mut_ptr(), NR, 1.0, true) };
            }
            let t = s.elapsed().as_secs_f64();
            eprintln!("kc {kc}: {:.1} GFLOP/s", (2 * MR * NR * kc * reps) as f64 / t / 1e9);
        }
    }
}
