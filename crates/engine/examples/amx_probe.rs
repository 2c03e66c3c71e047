//! What bounds the AMX kernel on this CPU: the throughput of `tdpbf16ps` on tiles already loaded (four
//! independent accumulators) and of a 1 KiB `tileloadd` from buffers of growing size (L1, L2, L3), contiguous
//! (B's panels, A's tiles) or strided (rows of a row-major operand). In TSC cycles at the nominal clock.
//!
//! cargo run --release -p finetune-engine --example amx_probe
//!
//! Prints why it is skipped on a CPU or OS without AMX.

#[cfg(target_arch = "x86_64")]
fn main() {
    use std::arch::asm;
    use std::arch::x86_64::_rdtsc;
    if let Err(why) = finetune_engine::bf16::Kernel::parse("amx") {
        println!("skipped: {why}");
        return;
    }
    #[repr(C, align(64))]
    struct Cfg {
        palette: u8,
        start: u8,
        reserved: [u8; 14],
        colsb: [u16; 16],
        rows: [u8; 16],
    }
    let mut cfg = Cfg { palette: 1, start: 0, reserved: [0; 14], colsb: [0; 16], rows: [0; 16] };
    for t in 0..8 {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    println!("cpu: {}", finetune_engine_cpu_name());
    // SAFETY: AMX is usable (checked above; `Kernel::parse` requested the tile state from Linux); `cfg` is a
    // valid palette-1 configuration; every tile load reads inside `buf`.
    unsafe {
        asm!("ldtilecfg [{}]", in(reg) &cfg);
        let n = 3_000_000u64;
        let t0 = _rdtsc();
        asm!("tilezero tmm4", "tilezero tmm5", "tilezero tmm6", "tilezero tmm7",
            "2:", "tdpbf16ps tmm0, tmm4, tmm6", "tdpbf16ps tmm1, tmm4, tmm7", "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7", "dec {n}", "jnz 2b", n = inout(reg) n => _);
        let c = (_rdtsc() - t0) as f64 / (4 * n) as f64;
        println!("tdpbf16ps, loaded tiles: {c:.1} TSC cycles each ({:.0} FLOP per TSC cycle)", 16384.0 / c);
        for &(kib, stride) in &[(8usize, 64usize), (32, 64), (256, 64), (256, 832), (8192, 64), (8, 64)] {
            let bytes = kib * 1024;
            let buf: Vec<u8> = (0..bytes + 16 * stride).map(|i| i as u8).collect();
            // A tile is 16 rows `stride` apart; the next tile starts 1 KiB (contiguous) or 64 B (strided) on.
            let step = if stride == 64 { 1024 } else { 64 };
            let tiles = if stride == 64 { bytes / 1024 } else { (bytes / (16 * stride)).max(1) * (stride / 64) };
            let passes = (2_000_000 / tiles).max(1);
            let t0 = _rdtsc();
            for _ in 0..passes {
                if stride == 64 {
                    asm!("2:", "tileloadd tmm4, [{q} + {s}*1]", "add {q}, {st:r}", "dec {c}", "jnz 2b",
                        q = inout(reg) buf.as_ptr() => _, c = inout(reg) tiles => _, s = in(reg) stride,
                        st = in(reg) step);
                } else {
                    for blk in 0..(bytes / (16 * stride)).max(1) {
                        asm!("2:", "tileloadd tmm4, [{q} + {s}*1]", "add {q}, 64", "dec {c}", "jnz 2b",
                            q = inout(reg) buf.as_ptr().add(blk * 16 * stride) => _, c = inout(reg) stride / 64 => _,
                            s = in(reg) stride);
                    }
                }
            }
            let c = (_rdtsc() - t0) as f64 / (passes * tiles) as f64;
            let how = if stride == 64 { "contiguous".to_string() } else { format!("rows {stride} B apart") };
            println!("tileloadd 1 KiB, {kib} KiB buffer, {how}: {c:.1} TSC cycles");
        }
        asm!("tilerelease");
    }
}

#[cfg(target_arch = "x86_64")]
fn finetune_engine_cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default()
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    println!("skipped: AMX is x86-64 only");
}
