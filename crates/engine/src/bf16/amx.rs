//! The AMX kernel: `tdpbf16ps` on tile registers, through `asm!` (the AMX intrinsics are not stable Rust).
//!
//! One call computes a 32 × 32 block of C in tiles 0–3 (2 × 2 blocks of 16 × 16 f32) while the k dimension
//! streams through tiles 4–5 (two 16-row slices of A, 32 bf16 each) and 6–7 (two 16-column panels of B,
//! 16 VNNI pair rows each): four loads feed four tile products per 32 values of k.

use std::sync::OnceLock;

/// Linux `arch_prctl` code that asks for permission to use a dynamically enabled XSAVE feature.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
/// The XSAVE feature number of the AMX tile data (`XFEATURE_XTILEDATA`).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
const XFEATURE_XTILEDATA: libc::c_long = 18;

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Usable,
    NoCpu,
    NoPermission(i32),
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    NotLinux,
}

/// Whether the CPU has AMX-TILE and AMX-BF16 (CPUID leaf 7: EDX bits 24 and 22).
#[cfg(target_arch = "x86_64")]
fn cpu_has_amx() -> bool {
    // SAFETY: CPUID exists on every x86-64 CPU; leaf 7 is checked against the maximum leaf first. (The block is
    // needed on older compilers, where `__cpuid` is still an unsafe function.)
    #[allow(unused_unsafe)]
    unsafe {
        let max = std::arch::x86_64::__cpuid(0).eax;
        if max < 7 {
            return false;
        }
        let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
        edx & (1 << 24) != 0 && edx & (1 << 22) != 0
    }
}

fn state() -> State {
    static STATE: OnceLock<State> = OnceLock::new();
    *STATE.get_or_init(|| {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            if !cpu_has_amx() {
                return State::NoCpu;
            }
            // Linux enables the 8 KiB tile state per process on request (once; it then holds for every
            // thread), so that processes that never use AMX do not pay for saving it.
            // SAFETY: a plain syscall with integer arguments.
            let rc = unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) };
            if rc == 0 {
                State::Usable
            } else {
                State::NoPermission(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
            }
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        {
            State::NotLinux
        }
    })
}

pub(super) fn usable() -> bool {
    state() == State::Usable
}

pub(super) fn why_not() -> String {
    match state() {
        State::Usable => "usable".into(),
        State::NoCpu => "the CPU lacks AMX-TILE/AMX-BF16 (Intel Sapphire Rapids or later has them)".into(),
        State::NoPermission(e) => {
            format!("Linux refused the AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM, errno {e})")
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        State::NotLinux => "AMX is used on Linux x86-64 only".into(),
    }
}

/// Palette 1, eight tiles of 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// Loads the tile configuration on the calling thread. Call [`release`] when done.
pub(super) fn configure() {
    debug_assert!(usable());
    let mut cfg = TileConfig { palette: 1, start_row: 0, reserved: [0; 14], colsb: [0; 16], rows: [0; 16] };
    for t in 0..8 {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AMX is usable (checked by the caller through `Kernel::available`) and `cfg` is a valid,
    // 64-byte aligned palette-1 configuration.
    unsafe {
        std::arch::asm!("ldtilecfg [{}]", in(reg) &cfg, options(nostack, readonly));
    }
}

/// Returns the tile state to its initial (unused) state, so the thread's context switches stay cheap.
pub(super) fn release() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `tilerelease` only resets tile registers, which nothing else holds.
    unsafe {
        std::arch::asm!("tilerelease", options(nostack, nomem));
    }
}

/// `C[32 × 32] (+)= A[32 rows, 32 · steps] · B[32 · steps, 32 cols]` over `steps` steps of 32 values of k:
/// `a0` and `a1` point at the first A tiles of rows 0..16 and 16..32 in the tiled layout (each step's 16 × 32
/// bf16 tile is 1 KiB, contiguous, the next step's right after it), `b` at the first B tile of two 16-column
/// VNNI panels that lie `16 · k_pad` values apart (each step 1 KiB, contiguous), `c` at the block's first f32
/// with rows `c_stride` bytes apart. When `load_c` the block starts from C's values (accumulation), else from
/// zero.
///
/// Why this shape: on Sapphire Rapids a `tileloadd` of 1 KiB costs about three `tdpbf16ps` (measured: ~45 TSC
/// cycles from L1, ~60 contiguous from L2, ~85 strided from L2, against ~13 per `tdpbf16ps`), and tiles are not
/// renamed, so the loop is bound by its loads. The 2 × 2 block needs one load per product, the fewest that
/// eight tiles allow; contiguous tiles keep the loads cheap, each load sits right before its first consumer
/// so the remaining products overlap it, and A is prefetched two steps ahead into L1.
///
/// # Safety
/// [`configure`] ran on this thread; the A and B tiles of `steps` steps are readable (prefetches may touch
/// up to 2 KiB past A's last tile, which is harmless); steps ≥ 1; the 32 × 32 block of C is valid for reads and
/// writes and touched by no one else.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(super) unsafe fn block(
    a0: *const u16,
    a1: *const u16,
    b: *const u16,
    k_pad: usize,
    steps: usize,
    c: *mut f32,
    c_stride: usize,
    load_c: bool,
) {
    #[cfg(target_arch = "x86_64")]
    {
        debug_assert!(steps > 0);
        let b1 = b.add(16 * k_pad);
        // Rows 16..32 of the C block.
        let c1 = c.add(16 * c_stride / 4);
        std::arch::asm!(
            "test {ld}, {ld}",
            "jz 3f",
            "tileloadd tmm0, [{c} + {sc}*1]",
            "tileloadd tmm1, [{c} + {sc}*1 + 64]",
            "tileloadd tmm2, [{c1} + {sc}*1]",
            "tileloadd tmm3, [{c1} + {sc}*1 + 64]",
            "jmp 2f",
            "3:",
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
            "prefetcht0 [{a0} + 2048]",
            "prefetcht0 [{a0} + 2112]",
            "prefetcht0 [{a0} + 2176]",
            "prefetcht0 [{a0} + 2240]",
            "prefetcht0 [{a0} + 2304]",
            "prefetcht0 [{a0} + 2368]",
            "prefetcht0 [{a0} + 2432]",
            "prefetcht0 [{a0} + 2496]",
            "prefetcht0 [{a0} + 2560]",
            "prefetcht0 [{a0} + 2624]",
            "prefetcht0 [{a0} + 2688]",
            "prefetcht0 [{a0} + 2752]",
            "prefetcht0 [{a0} + 2816]",
            "prefetcht0 [{a0} + 2880]",
            "prefetcht0 [{a0} + 2944]",
            "prefetcht0 [{a0} + 3008]",
            "tileloadd tmm4, [{a0} + {s64}*1]",
            "tileloadd tmm6, [{b0} + {s64}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "prefetcht0 [{a1} + 2048]",
            "prefetcht0 [{a1} + 2112]",
            "prefetcht0 [{a1} + 2176]",
            "prefetcht0 [{a1} + 2240]",
            "prefetcht0 [{a1} + 2304]",
            "prefetcht0 [{a1} + 2368]",
            "prefetcht0 [{a1} + 2432]",
            "prefetcht0 [{a1} + 2496]",
            "prefetcht0 [{a1} + 2560]",
            "prefetcht0 [{a1} + 2624]",
            "prefetcht0 [{a1} + 2688]",
            "prefetcht0 [{a1} + 2752]",
            "prefetcht0 [{a1} + 2816]",
            "prefetcht0 [{a1} + 2880]",
            "prefetcht0 [{a1} + 2944]",
            "prefetcht0 [{a1} + 3008]",
            "tileloadd tmm7, [{b1} + {s64}*1]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a1} + {s64}*1]",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a0}, 1024",
            "add {a1}, 1024",
            "add {b0}, 1024",
            "add {b1}, 1024",
            "dec {cnt}",
            "jnz 2b",
            "tilestored [{c} + {sc}*1], tmm0",
            "tilestored [{c} + {sc}*1 + 64], tmm1",
            "tilestored [{c1} + {sc}*1], tmm2",
            "tilestored [{c1} + {sc}*1 + 64], tmm3",
            ld = in(reg) load_c as usize,
            a0 = inout(reg) a0 => _,
            a1 = inout(reg) a1 => _,
            b0 = inout(reg) b => _,
            b1 = inout(reg) b1 => _,
            cnt = inout(reg) steps => _,
            s64 = in(reg) 64usize,
            c = in(reg) c,
            c1 = in(reg) c1,
            sc = in(reg) c_stride,
            options(nostack),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (a0, a1, b, k_pad, steps, c, c_stride, load_c);
        unreachable!("AMX is x86-64 only");
    }
}
