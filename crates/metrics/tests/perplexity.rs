mod common;

use finetune_metrics::perplexity::{
    perplexity, perplexity_from_logits, PerplexityAccumulator, PerplexityResult, TokenScores,
};

#[test]
fn perplexity_fixtures() {
    assert!(common::run_fixture_file("perplexity.json") >= 100);
}

fn same(a: &PerplexityResult, b: &PerplexityResult) -> bool {
    let eq = |x: f64, y: f64| x == y || (x.is_nan() && y.is_nan());
    eq(a.perplexity, b.perplexity)
        && eq(a.mean_perplexity, b.mean_perplexity)
        && a.perplexities.len() == b.perplexities.len()
        && a.perplexities.iter().zip(&b.perplexities).all(|(&x, &y)| eq(x, y))
}

#[test]
fn streaming_equals_one_shot_for_token_scores() {
    let values = vec![vec![-0.5, -1.25, -3.0], vec![-0.1, -9.0, 0.0], vec![-2.0, -2.0, -2.0]];
    let mask = vec![vec![true, true, false], vec![true, false, false], vec![false, false, false]];
    let one_shot = perplexity(TokenScores::LogProbs, &values, Some(&mask)).expect("perplexity");
    let mut acc = PerplexityAccumulator::new();
    for (v, m) in values.iter().zip(&mask) {
        acc.update(TokenScores::LogProbs, v, Some(m)).expect("update");
    }
    assert!(same(&acc.compute(), &one_shot));
    let (nll, n) = acc.totals();
    assert_eq!(n, 3);
    assert!((one_shot.perplexity - (nll / 3.0).exp()).abs() < 1e-15);
    assert!((one_shot.perplexity - ((0.5f64 + 1.25 + 0.1) / 3.0).exp()).abs() < 1e-12);
    assert!(one_shot.perplexities[2].is_nan() && one_shot.mean_perplexity.is_nan());
}

#[test]
fn streaming_equals_one_shot_for_logits() {
    let logits = vec![
        vec![vec![0.0, 1.0, 2.0], vec![3.0, 0.5, -1.0], vec![0.0, 0.0, 0.0]],
        vec![vec![1.0, 1.0, 1.0], vec![-2.0, 4.0, 0.0], vec![9.0, 9.0, 9.0]],
    ];
    let labels = vec![vec![-100, 2, 0], vec![1, -100, 1]];
    let one_shot = perplexity_from_logits(&logits, &labels, -100).expect("perplexity");
    let mut acc = PerplexityAccumulator::new();
    for (l, y) in logits.iter().zip(&labels) {
        acc.update_logits(l, y, -100).expect("update");
    }
    assert!(same(&acc.compute(), &one_shot));
    // Uniform logits over 3 classes score ln 3 per token.
    let uniform = perplexity_from_logits(&[vec![vec![0.0; 3]; 2]], &[vec![0, 1]], -100).expect("uniform");
    assert!((uniform.perplexity - 3.0).abs() < 1e-12);
}
