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

#[doc(hidden)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Base,
    Avx2,
    Avx512,
}

#[doc(hidden)]
pub fn level() -> Level {
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

/// Defines `fn name(args)` whose body is compiled three times (baseline, AVX2+FMA, AVX-512) and dispatched
/// at run time. The body sits in an `#[inline(always)]` function called directly from each
/// `#[target_feature]` wrapper, so inlining is guaranteed and the whole loop nest gets the wide registers
/// (a closure passed to a wrapper is not reliably inlined once it grows).
#[macro_export]
macro_rules! simd_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn inner($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn v4($($arg: $ty),*) { inner($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn v3($($arg: $ty),*) { inner($($arg),*) }
            match $crate::simd::level() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU supports every feature v4 is compiled for.
                $crate::simd::Level::Avx512 => unsafe { v4($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above, for v3.
                $crate::simd::Level::Avx2 => unsafe { v3($($arg),*) },
                _ => inner($($arg),*),
            }
        }
    };
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
