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

/// Deterministic softmax rows and labels (xorshift), `k` classes.
fn probs(n: usize, k: usize, seed: u64) -> (Vec<usize>, Vec<Vec<f64>>) {
    let mut x = seed;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut y = Vec::new();
    let mut p = Vec::new();
    for _ in 0..n {
        let c = (next() % k as u64) as usize;
        let z: Vec<f64> = (0..k).map(|j| (next() % 1000) as f64 / 300.0 + if j == c { 1.0 } else { 0.0 }).collect();
        let s: f64 = z.iter().map(|v| v.exp()).sum();
        p.push(z.iter().map(|v| v.exp() / s).collect());
        y.push(c);
    }
    (y, p)
}

fn argmax(r: &[f64]) -> usize {
    (0..r.len()).fold(0, |b, i| if r[i] > r[b] { i } else { b })
}

fn streamed(y: &[usize], p: &[Vec<f64>]) -> ClassificationEval {
    let mut e = ClassificationEval::new();
    for (yc, pc) in y.chunks(13).zip(p.chunks(13)) {
        let pred: Vec<usize> = pc.iter().map(|r| argmax(r)).collect();
        e.add_batch(0.1, yc, &pred).unwrap();
        e.add_probabilities(yc, pc).unwrap();
    }
    e
}

#[test]
fn ranking_and_probabilistic_metrics_equal_the_one_shot_sklearn_functions() {
    use finetune_metrics::calibration::log_loss;
    use finetune_metrics::ranking::{
        average_precision_score, roc_auc_score, Label, Labels, Matrix, MultiClass, RocAucOptions, Scores, YScore, YTrue,
    };
    use finetune_metrics::Average;
    for k in [2usize, 4] {
        let (y, p) = probs(301, k, 0x1234_5678 + k as u64);
        let m = streamed(&y, &p).finish().unwrap().metrics;
        let yt = YTrue::Labels(Labels::Num(y.iter().map(|&v| v as f64).collect()));
        let scalar = |s: Scores| match s {
            Scores::Scalar(v) => v,
            Scores::PerClass(_) => panic!("per class"),
        };
        let (ys, opts) = if k == 2 {
            (YScore::Vector(p.iter().map(|r| r[1]).collect()), RocAucOptions::default())
        } else {
            (
                YScore::Matrix(Matrix::from_rows(&p).unwrap()),
                RocAucOptions { multi_class: Some(MultiClass::Ovr), ..Default::default() },
            )
        };
        assert_eq!(m["roc_auc"], scalar(roc_auc_score(&yt, &ys, &opts).unwrap()), "k={k}");
        let ap = average_precision_score(&yt, &ys, Average::Macro, &Label::Num(1.0), None).unwrap();
        assert_eq!(m["average_precision"], scalar(ap), "k={k}");
        if k > 2 {
            let w = RocAucOptions { average: Some(Average::Weighted), ..opts.clone() };
            assert_eq!(m["roc_auc_weighted"], scalar(roc_auc_score(&yt, &ys, &w).unwrap()));
            let apw = average_precision_score(&yt, &ys, Average::Weighted, &Label::Num(1.0), None).unwrap();
            assert_eq!(m["average_precision_weighted"], scalar(apw));
        }
        assert_eq!(m["log_loss"], log_loss(&y, &p).unwrap());
        assert!(m.contains_key("matthews_correlation") && m.contains_key("balanced_accuracy"));
    }
}

#[test]
fn classification_details_hold_the_plots_data() {
    let (y, p) = probs(200, 3, 99);
    let names: Vec<String> = ["neg", "neu", "pos"].iter().map(|s| s.to_string()).collect();
    let d = streamed(&y, &p).details(&names).unwrap();
    assert_eq!(d.labels, names);
    assert_eq!(d.confusion_matrix.iter().flatten().sum::<f64>(), 200.0);
    assert_eq!((d.roc.len(), d.pr.len(), d.per_class.len()), (3, 3, 3));
    assert!(d.roc.iter().all(|c| c.x.len() == c.y.len() && c.area.is_some()));
    let cal = d.calibration.unwrap();
    assert_eq!(cal.count.iter().sum::<u64>(), 200);
    // binary: one curve, for class 1
    let (y, p) = probs(50, 2, 7);
    let d = streamed(&y, &p).details(&names[..2]).unwrap();
    assert_eq!((d.roc.len(), d.roc[0].label.as_str()), (1, "neu"));
}

#[test]
fn token_details_report_both_seqeval_modes_and_tags() {
    let mut e = TokenClassificationEval::new();
    e.add_batch(0.2, &[vec!["B-PER", "I-PER", "O"]], &[vec!["B-PER", "I-PER", "O"]]).unwrap();
    e.add_batch(0.4, &[vec!["B-LOC", "O"]], &[vec!["I-LOC", "O"]]).unwrap();
    let d = e.details().unwrap();
    let f1 = |rows: &[finetune_train::ClassScores], l: &str| rows.iter().find(|r| r.label == l).unwrap().f1;
    // lenient: I-LOC starts an entity and matches; strict IOB2: it does not
    assert_eq!(f1(&d.entities, "LOC"), 1.0);
    assert_eq!(f1(&d.entities_strict, "LOC"), 0.0);
    assert_eq!(d.scheme.as_deref(), Some("IOB2"));
    assert_eq!(f1(&d.tags, "B-LOC"), 0.0);
    assert_eq!(d.tags.iter().find(|r| r.label == "accuracy").unwrap().precision, 0.8);
}
