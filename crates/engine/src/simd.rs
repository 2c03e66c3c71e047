//! Runtime CPU-feature dispatch for elementwise loops. The crate is compiled for baseline x86-64 (SSE2), so a
//! hot loop written as plain Rust is re-instantiated inside functions compiled for AVX2 and AVX-512 and the
//! widest one the CPU supports is called; LLVM then vectorises the same source with wider registers.

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
    pub unsafe fn avx512<R, F: FnOnce() -> R>(f: F) -> R {
        f()
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn avx2<R, F: FnOnce() -> R>(f: F) -> R {
        f()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Base,
    Avx2,
    Avx512,
}

fn level() -> Level {
    use std::sync::OnceLock;
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Level::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                return Level::Avx2;
            }
        }
        Level::Base
    })
}

/// Runs `f` compiled for the widest vector extension available. `f` must be `#[inline(always)]`-friendly
/// straight-line code (a closure over an `#[inline(always)]` loop) for the wider instantiation to pay off.
#[inline(always)]
pub fn run<R, F: FnOnce() -> R>(f: F) -> R {
    match level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU was checked for every feature the instantiation enables.
        Level::Avx512 => unsafe { x86::avx512(f) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Level::Avx2 => unsafe { x86::avx2(f) },
        _ => f(),
    }
}

/// `f(a, b)` through [`run`].
#[inline(always)]
pub fn dispatch2<F: Fn(&mut [f32], &[f32])>(f: F, a: &mut [f32], b: &[f32]) {
    run(|| f(a, b))
}
