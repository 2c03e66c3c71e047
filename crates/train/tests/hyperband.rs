//! Hyperband as Optuna's `HyperbandPruner` (the fixture of scripts/reference/gen_hyperband.py, optuna 4.5.0): the
//! number of brackets, each bracket's trial budget and every trial's bracket; then pruning within a bracket only.

use std::collections::BTreeMap;

use finetune_train::sweep::pruner::{hyperband_bracket, hyperband_budgets, rung_key};
use finetune_train::sweep::{Direction, FrozenTrial, Pruner, TrialState};

#[test]
fn brackets_and_budgets_equal_optunas() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hyperband.json"))
        .expect("fixture");
    let f: serde_json::Value = serde_json::from_str(&text).expect("json");
    let cases = f["cases"].as_array().expect("cases");
    assert_eq!(cases.len(), 6);
    for c in cases {
        let u = |k: &str| c[k].as_u64().expect(k);
        let name = c["study_name"].as_str().expect("name");
        let budgets = hyperband_budgets(u("min_resource"), u("max_resource"), u("reduction_factor"));
        let want: Vec<u64> = serde_json::from_value(c["budgets"].clone()).expect("budgets");
        assert_eq!(budgets, want, "{c}");
        assert_eq!(budgets.len() as u64, u("n_brackets"));
        let brackets: Vec<usize> = serde_json::from_value(c["brackets"].clone()).expect("brackets");
        for (number, &b) in brackets.iter().enumerate() {
            assert_eq!(hyperband_bracket(name, number as u64, &budgets), b, "{name} trial {number}");
        }
    }
}

fn trial(number: u64, state: TrialState, points: &[(u64, f64)]) -> FrozenTrial {
    FrozenTrial { number, state, intermediate: points.iter().copied().collect(), ..Default::default() }
}

#[test]
fn a_trial_is_compared_with_its_own_bracket_only() {
    let (lo, hi, rf) = (1, 27, 3);
    let budgets = hyperband_budgets(lo, hi, rf);
    let pruner = Pruner::Hyperband {
        min_resource: lo,
        max_resource: Some(hi),
        reduction_factor: rf,
        study_name: "sweep".into(),
    };
    // Trials of bracket 0 (rungs at steps 1, 3, 9) and of another bracket.
    let in0: Vec<u64> = (0..200).filter(|&n| hyperband_bracket("sweep", n, &budgets) == 0).take(4).collect();
    let other = (0..200).find(|&n| hyperband_bracket("sweep", n, &budgets) != 0).expect("another bracket");
    // Bracket-0 trials that reached rung 0 (step 1) with values 0.9, 0.8 and 0.7; the other bracket's trial did
    // far better.
    let mut others: Vec<FrozenTrial> = in0[..3]
        .iter()
        .zip([0.9, 0.8, 0.7])
        .map(|(&n, v)| {
            let mut t = trial(n, TrialState::Complete, &[(1, v)]);
            t.attrs = BTreeMap::from([(rung_key(0), v)]);
            t
        })
        .collect();
    let mut strong = trial(other, TrialState::Complete, &[(9, 1.0)]);
    strong.attrs = BTreeMap::from([(rung_key(0), 1.0), (rung_key(1), 1.0)]);
    others.push(strong);
    // 0.95 at step 1 is the best of its bracket's four values at rung 0: promoted; 0.75 is not in the top third.
    let me = trial(in0[3], TrialState::Running, &[(1, 0.95)]);
    let (prune, record) = pruner.prune(&me, &others, Direction::Maximize);
    assert!(!prune);
    assert_eq!(record, vec![(rung_key(0), 0.95)]);
    let me = trial(in0[3], TrialState::Running, &[(1, 0.75)]);
    assert!(pruner.prune(&me, &others, Direction::Maximize).0);
    // Without a max_resource, nothing is pruned until a trial has finished; then its last step + 1 is used.
    let auto =
        Pruner::Hyperband { min_resource: lo, max_resource: None, reduction_factor: rf, study_name: "sweep".into() };
    assert!(!auto.prune(&me, &[], Direction::Maximize).0);
    let finished = trial(999, TrialState::Pruned, &[(26, 0.1)]);
    let with_finished: Vec<FrozenTrial> = others.iter().cloned().chain([finished]).collect();
    assert_eq!(
        auto.prune(&me, &with_finished, Direction::Maximize).0,
        pruner.prune(&me, &with_finished, Direction::Maximize).0
    );
}
