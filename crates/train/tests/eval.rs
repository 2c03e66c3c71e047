//! Evaluation accumulators: streamed batches give the scikit-learn / seqeval values of the whole set.

use finetune_train::{ClassificationEval, TokenClassificationEval};

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-12, "{a} vs {b}");
}

#[test]
fn classification_metrics_over_batches() {
    let mut e = ClassificationEval::new();
    e.add_batch(0.5, &[0, 1], &[0, 2]).unwrap();
    e.add_batch(1.0, &[2, 2, 1], &[2, 2, 1]).unwrap();
    let out = e.finish().unwrap();
    let m = &out.metrics;
    close(m["loss"], 0.8); // (0.5 * 2 + 1.0 * 3) / 5
    close(m["accuracy"], 0.8);
    close(m["precision"], (1.0 + 1.0 + 2.0 / 3.0) / 3.0);
    close(m["recall"], (1.0 + 0.5 + 1.0) / 3.0);
    close(m["f1"], (1.0 + 2.0 / 3.0 + 0.8) / 3.0);
    assert_eq!((out.num_samples, out.num_batches), (5, 2));
    assert!(e.add_batch(0.1, &[1, 2], &[1]).is_err());
}

#[test]
fn token_classification_metrics_over_batches() {
    let mut e = TokenClassificationEval::new();
    e.add_batch(0.2, &[vec!["B-PER", "I-PER", "O"]], &[vec!["B-PER", "I-PER", "O"]]).unwrap();
    e.add_batch(0.4, &[vec!["B-LOC"]], &[vec!["O"]]).unwrap();
    let m = e.finish().unwrap().metrics;
    close(m["precision"], 1.0);
    close(m["recall"], 0.5);
    close(m["f1"], 2.0 / 3.0);
    close(m["accuracy"], 0.75);
    close(m["loss"], 0.3);
}
