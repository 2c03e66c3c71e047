//! `fuzz [N] [TARGET...]`: runs every target (or the named ones) for N inputs each (default 1 000 000; at most
//! `FUZZ_MAX_SECS` seconds each when set), prints
//! one line per target, writes each finding's input to `fuzz-findings/`, and exits 1 on any finding.

use std::process::ExitCode;

use finetune_fuzz::alloc::TrackingAlloc;
use finetune_fuzz::{all_targets, run_target_within};

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let n: u64 = match args.next().map(|a| a.replace('_', "").parse()) {
        None => 1_000_000,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            eprintln!("usage: fuzz [N] [TARGET...]");
            return ExitCode::from(2);
        }
    };
    let only: Vec<String> = args.collect();
    let seed: u64 = std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    // FUZZ_MAX_SECS caps each target's time (the table then shows how many inputs ran).
    let budget = std::env::var("FUZZ_MAX_SECS").ok().and_then(|s| s.parse().ok()).map(std::time::Duration::from_secs);
    println!(
        "seed {seed}, {n} inputs per target{}",
        budget.map_or(String::new(), |b| format!(", at most {} s each", b.as_secs()))
    );
    println!(
        "{:<14} {:>10} {:>10} {:>9} {:>9} {:>14}",
        "target", "inputs", "accepted", "secs", "findings", "largest alloc"
    );
    let mut failed = false;
    for t in all_targets().iter().filter(|t| only.is_empty() || only.iter().any(|o| o == t.name)) {
        let r = run_target_within(t, n, seed, 20, budget);
        println!(
            "{:<14} {:>10} {:>10} {:>9.1} {:>9} {:>14}",
            r.target,
            r.inputs,
            r.accepted,
            r.elapsed.as_secs_f64(),
            r.findings.len(),
            format!("{}B/{}B", r.peak_alloc.0, r.peak_alloc.1)
        );
        for f in &r.findings {
            failed = true;
            let dir = std::path::Path::new("fuzz-findings");
            let _ = std::fs::create_dir_all(dir);
            let file = dir.join(format!("{}-{}-{}.bin", f.target, f.kind, f.index));
            let _ = std::fs::write(&file, &f.input);
            println!("  {} at input {}: {} ({})", f.kind, f.index, f.detail, file.display());
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
