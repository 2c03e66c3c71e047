//! Every harness for a couple of thousand inputs, so that none of them rots; the long runs are
//! `scripts/fuzz.sh`.

use finetune_fuzz::alloc::TrackingAlloc;
use finetune_fuzz::{all_targets, run_target};

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

#[test]
fn every_target_survives_two_thousand_inputs() {
    // The guard sees a large allocation (one test only: the maximum it keeps is process-wide).
    finetune_fuzz::alloc::reset();
    let v = std::hint::black_box(vec![0u8; 3 << 20]);
    assert!(finetune_fuzz::alloc::largest() >= 3 << 20);
    drop(v);
    let targets = all_targets();
    assert_eq!(targets.len(), 13);
    // Targets run one after another: the allocation check reads a process-wide maximum.
    for t in &targets {
        let r = run_target(t, 2_000, 7, 5);
        assert_eq!(r.inputs, 2_000);
        assert!(r.accepted > 0, "{}: even the seeds were refused", t.name);
        assert!(r.accepted < r.inputs, "{}: every mutation was accepted, the mutator does nothing", t.name);
        let findings: Vec<String> =
            r.findings.iter().map(|f| format!("{} #{} {}: {}", f.target, f.index, f.kind, f.detail)).collect();
        assert!(findings.is_empty(), "{findings:#?}");
    }
}
