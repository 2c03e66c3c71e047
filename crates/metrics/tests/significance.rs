mod common;

use finetune_metrics::significance::{mcnemar_exact, mcnemar_paired};

/// McNemar's exact test equals statsmodels' `mcnemar(table, exact=True)` (scripts/reference/gen_mcnemar.py).
#[test]
fn mcnemar_fixtures() {
    assert!(common::run_fixture_file("mcnemar.json") >= 70);
}

#[test]
fn mcnemar_counts_discordant_pairs() {
    let a = [true, true, false, false, true, true, true];
    let b = [true, false, true, false, false, false, true];
    // A right and B wrong on 3 items, the reverse on 1.
    assert_eq!(mcnemar_paired(&a, &b), mcnemar_exact(3, 1));
    assert_eq!(mcnemar_exact(1, 3).statistic, 1.0);
    assert_eq!(mcnemar_exact(0, 0).pvalue, 1.0);
}
