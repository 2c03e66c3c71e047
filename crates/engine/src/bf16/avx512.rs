//! The AVX512-BF16 kernel: `vdpbf16ps` (`_mm512_dpbf16_ps`) on 8 × 32 blocks of C held in 16 zmm registers;
//! each step broadcasts one bf16 pair of a row of A and multiplies it with 16 columns' pairs of B.

use super::BLOCK;

pub(super) fn usable() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `acc[32][32] = A[32 rows, k_pad] · B[k_pad, 32 cols]`, the same operands as the AMX block.
///
/// # Safety
/// The CPU has AVX512-BF16; `a` holds 32 rows of `lda ≥ k_pad` and `b` 32 · k_pad bf16 values; k_pad is even.
#[inline]
pub(super) unsafe fn block(a: *const u16, lda: usize, b: *const u16, k_pad: usize, acc: &mut [f32; BLOCK * BLOCK]) {
    #[cfg(target_arch = "x86_64")]
    for r0 in (0..BLOCK).step_by(8) {
        micro(a.add(r0 * lda), lda, b, b.add(16 * k_pad), k_pad / 2, acc.as_mut_ptr().add(r0 * BLOCK));
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (a, lda, b, k_pad, acc);
        unreachable!("AVX512-BF16 is x86-64 only");
    }
}

/// 8 rows × 32 columns over `kp` pairs of k.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn micro(a: *const u16, lda: usize, b0: *const u16, b1: *const u16, kp: usize, out: *mut f32) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; 8];
    for p in 0..kp {
        let x0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b0.add(p * 32) as *const __m512i));
        let x1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b1.add(p * 32) as *const __m512i));
        for r in 0..8 {
            let pair = (a.add(r * lda + 2 * p) as *const i32).read_unaligned();
            let y: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], y, x0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], y, x1);
        }
    }
    for r in 0..8 {
        _mm512_storeu_ps(out.add(r * BLOCK), acc[r][0]);
        _mm512_storeu_ps(out.add(r * BLOCK + 16), acc[r][1]);
    }
}
