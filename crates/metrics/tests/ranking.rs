mod common;

use finetune_metrics::ranking::{average_precision_binary, roc_auc_binary, roc_curve_binary, BinaryScoreAccumulator};

#[test]
fn ranking_fixtures() {
    let n = common::run_fixture_file("ranking.json");
    assert!(n >= 500, "only {n} cases");
}

/// A deterministic pseudo-random stream (xorshift) so the test needs no extra dependency.
fn stream(n: usize, seed: u64) -> (Vec<bool>, Vec<f64>, Vec<f64>) {
    let mut x = seed;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut y = Vec::with_capacity(n);
    let mut s = Vec::with_capacity(n);
    let mut w = Vec::with_capacity(n);
    for _ in 0..n {
        y.push(next() % 3 == 0);
        // few distinct values: many ties
        s.push((next() % 97) as f64 / 13.0);
        w.push(if next() % 5 == 0 { 0.0 } else { (next() % 1000) as f64 / 250.0 });
    }
    (y, s, w)
}

#[test]
fn accumulator_equals_one_shot() {
    let (y, s, w) = stream(5000, 0x9E37_79B9_7F4A_7C15);
    let mut acc = BinaryScoreAccumulator::new();
    for (yc, sc) in y.chunks(777).zip(s.chunks(777)) {
        acc.update(yc, sc).unwrap();
    }
    assert_eq!(acc.len(), y.len());
    assert_eq!(acc.roc_auc(None).unwrap(), roc_auc_binary(&y, &s, None, None).unwrap());
    assert_eq!(acc.roc_auc(Some(0.3)).unwrap(), roc_auc_binary(&y, &s, None, Some(0.3)).unwrap());
    assert_eq!(acc.roc_curve(true).unwrap(), roc_curve_binary(&y, &s, None, true).unwrap());
    assert_eq!(acc.average_precision().unwrap(), average_precision_binary(&y, &s, None).unwrap());

    let mut acc = BinaryScoreAccumulator::new();
    for ((yc, sc), wc) in y.chunks(1000).zip(s.chunks(1000)).zip(w.chunks(1000)) {
        acc.update_weighted(yc, sc, wc).unwrap();
    }
    assert_eq!(acc.roc_auc(None).unwrap(), roc_auc_binary(&y, &s, Some(&w), None).unwrap());
    assert_eq!(acc.average_precision().unwrap(), average_precision_binary(&y, &s, Some(&w)).unwrap());
    assert!(acc.update(&[true], &[]).is_err());
}

/// The radix path (large inputs) and the comparison-sort path (small inputs) must order ties identically:
/// an AUC computed on a large input equals the one computed from per-score counts.
#[test]
fn large_input_matches_pair_counting() {
    let (y, s, _) = stream(20_000, 42);
    let auc = roc_auc_binary(&y, &s, None, None).unwrap();
    // Mann-Whitney U with ties counted as one half.
    let mut pos = [0f64; 97];
    let mut neg = [0f64; 97];
    for (&t, &v) in y.iter().zip(&s) {
        let k = (v * 13.0).round() as usize;
        if t {
            pos[k] += 1.0
        } else {
            neg[k] += 1.0
        }
    }
    let (mut u, mut neg_below) = (0.0, 0.0);
    for k in 0..97 {
        u += pos[k] * (neg_below + 0.5 * neg[k]);
        neg_below += neg[k];
    }
    let np: f64 = pos.iter().sum();
    let expected = u / (np * neg_below);
    assert!((auc - expected).abs() < 1e-12, "{auc} vs {expected}");
}
