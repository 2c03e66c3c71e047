//! scikit-learn classification metrics: reference fixtures and streaming-vs-one-shot equality.

mod common;

use finetune_metrics::classification::{self as cls, ConfusionAccumulator, PrfOptions, ReportOptions};
use finetune_metrics::{Average, ZeroDivision};

#[test]
fn sklearn_fixtures() {
    let n = common::run_fixture_file("classification.json");
    assert!(n >= 300, "only {n} cases");
}

/// A deterministic pseudo-random multiclass data set (labels 0..k, about half the predictions correct).
fn data(n: usize, k: u64, seed: u64) -> (Vec<i64>, Vec<i64>, Vec<f64>) {
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        s >> 33
    };
    let mut yt = Vec::with_capacity(n);
    let mut yp = Vec::with_capacity(n);
    let mut w = Vec::with_capacity(n);
    for _ in 0..n {
        let t = (next() % k) as i64;
        let p = if next() % 2 == 0 { t } else { (next() % k) as i64 };
        yt.push(t);
        yp.push(p);
        w.push((next() % 1000) as f64 / 250.0);
    }
    (yt, yp, w)
}

#[test]
fn streaming_equals_one_shot() {
    for (seed, weighted) in [(1, false), (2, true), (3, false), (4, true)] {
        let (yt, yp, w) = data(5000, 3 + seed, seed);
        let weights = weighted.then_some(w.as_slice());
        let mut acc = ConfusionAccumulator::new();
        for start in (0..yt.len()).step_by(777) {
            let end = (start + 777).min(yt.len());
            acc.update_opt(&yt[start..end], &yp[start..end], weights.map(|w| &w[start..end])).unwrap();
        }
        assert_eq!(acc.n_samples(), yt.len());
        assert_eq!(acc.accuracy_score(true).unwrap(), cls::accuracy_score(&yt, &yp, true, weights).unwrap());
        let labels = [2i64, 0, 9];
        assert_eq!(
            acc.confusion_matrix(Some(&labels), None).unwrap(),
            cls::confusion_matrix(&yt, &yp, Some(&labels), weights, None).unwrap()
        );
        for average in [Average::None, Average::Micro, Average::Macro, Average::Weighted] {
            let opts = PrfOptions { average, beta: 0.5, zero_division: ZeroDivision::One, ..PrfOptions::default() };
            assert_eq!(
                acc.precision_recall_fscore_support(&opts).unwrap(),
                cls::precision_recall_fscore_support(&yt, &yp, weights, &opts).unwrap()
            );
        }
        assert_eq!(acc.matthews_corrcoef().unwrap(), cls::matthews_corrcoef(&yt, &yp, weights).unwrap());
        assert_eq!(
            acc.cohen_kappa_score(None, Some(cls::KappaWeights::Quadratic)).unwrap(),
            cls::cohen_kappa_score(&yt, &yp, None, Some(cls::KappaWeights::Quadratic), weights).unwrap()
        );
        assert_eq!(
            acc.balanced_accuracy_score(true).unwrap(),
            cls::balanced_accuracy_score(&yt, &yp, weights, true).unwrap()
        );
        let opts = ReportOptions::default();
        let streamed = acc.classification_report(&opts).unwrap();
        let one_shot = cls::classification_report(&yt, &yp, weights, &opts).unwrap();
        assert_eq!(streamed.to_text(4).unwrap(), one_shot.to_text(4).unwrap());
        assert_eq!(streamed.to_json(), one_shot.to_json());
    }
}

#[test]
fn streaming_report_matches_sklearn_text() {
    // sklearn.metrics.classification_report(["cat","ant","cat","cat","ant","bird"],
    //                                       ["ant","ant","cat","cat","ant","cat"])
    let expected = "              precision    recall  f1-score   support

         ant       0.67      1.00      0.80         2
        bird       0.00      0.00      0.00         1
         cat       0.67      0.67      0.67         3

    accuracy                           0.67         6
   macro avg       0.44      0.56      0.49         6
weighted avg       0.56      0.67      0.60         6
";
    let mut acc = ConfusionAccumulator::new();
    acc.update(&["cat", "ant", "cat"], &["ant", "ant", "cat"]).unwrap();
    acc.update(&["cat", "ant", "bird"], &["cat", "ant", "cat"]).unwrap();
    assert_eq!(acc.classification_report(&ReportOptions::default()).unwrap().to_text(2).unwrap(), expected);
}

#[test]
fn accumulator_rejects_bad_input() {
    let mut acc: ConfusionAccumulator<i64> = ConfusionAccumulator::new();
    assert_eq!(acc.update(&[1, 2], &[1]).unwrap_err().kind(), "ValueError");
    assert_eq!(acc.accuracy_score(true).unwrap_err().kind(), "ValueError");
    acc.update_weighted(&[1, 2], &[1, 2], &[0.0, 0.0]).unwrap();
    assert_eq!(acc.accuracy_score(true).unwrap_err().kind(), "ValueError");
    acc.update(&[3], &[3]).unwrap();
    assert_eq!(acc.accuracy_score(true).unwrap(), 1.0);
    assert_eq!(acc.classes(), vec![1, 2, 3]);
}

#[test]
fn every_metric_is_listed_and_has_fixtures() {
    let fixture = common::load("classification.json");
    let cases = fixture["cases"].as_array().expect("cases");
    let listed = finetune_metrics::call::list();
    for name in [
        "accuracy_score",
        "precision_score",
        "recall_score",
        "f1_score",
        "fbeta_score",
        "precision_recall_fscore_support",
        "confusion_matrix",
        "classification_report",
        "matthews_corrcoef",
        "cohen_kappa_score",
        "balanced_accuracy_score",
        "top_k_accuracy_score",
    ] {
        let info = listed.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("{name} not listed"));
        assert_eq!(info.reference, format!("sklearn.metrics.{name}"));
        let ok = cases.iter().filter(|c| c["metric"] == name && c.get("error").is_none()).count();
        let err = cases.iter().filter(|c| c["metric"] == name && c.get("error").is_some()).count();
        assert!(ok >= 5 && err >= 1, "{name}: {ok} result cases, {err} error cases");
    }
}

#[test]
fn string_labels_stream_like_one_shot() {
    let yt = ["b", "é", "a", "b", "日本", "a", "b"];
    let yp = ["b", "a", "a", "é", "日本", "b", "b"];
    let w = [1.0, 0.5, 2.0, 0.25, 1.0, 3.0, 0.1];
    let mut acc = ConfusionAccumulator::new();
    acc.update_weighted(&yt[..3], &yp[..3], &w[..3]).unwrap();
    acc.update_weighted(&yt[3..], &yp[3..], &w[3..]).unwrap();
    assert_eq!(acc.classes(), vec!["a", "b", "é", "日本"]);
    let opts = ReportOptions { labels: Some(&["b", "zzz"]), ..ReportOptions::default() };
    let one_shot = cls::classification_report(&yt, &yp, Some(&w), &opts).unwrap();
    let streamed = acc.classification_report(&opts).unwrap();
    assert!(!streamed.micro_is_accuracy);
    assert_eq!(streamed.to_text(3).unwrap(), one_shot.to_text(3).unwrap());
    assert_eq!(
        acc.cohen_kappa_score(Some(&["a", "b", "é"]), None).unwrap(),
        cls::cohen_kappa_score(&yt, &yp, Some(&["a", "b", "é"]), None, Some(&w)).unwrap()
    );
}

#[test]
fn many_classes_use_sparse_counts_correctly() {
    // 3000 classes: past the dense off-diagonal table, which is converted mid-stream.
    let (yt, yp, w) = data(20_000, 3000, 11);
    let yt: Vec<i64> = yt.iter().map(|x| x * 7 - 5000).collect();
    let yp: Vec<i64> = yp.iter().map(|x| x * 7 - 5000).collect();
    let mut acc = ConfusionAccumulator::new();
    for start in (0..yt.len()).step_by(1000) {
        acc.update_weighted(&yt[start..start + 1000], &yp[start..start + 1000], &w[start..start + 1000]).unwrap();
    }
    let labels: Vec<i64> = acc.classes().into_iter().step_by(50).collect();
    let cm = acc.confusion_matrix(Some(&labels), None).unwrap();
    let index = |l: i64| labels.iter().position(|&x| x == l);
    let mut naive = vec![vec![0.0; labels.len()]; labels.len()];
    for ((t, p), x) in yt.iter().zip(&yp).zip(&w) {
        if let (Some(i), Some(j)) = (index(*t), index(*p)) {
            naive[i][j] += x;
        }
    }
    assert_eq!(cm, naive);
    let correct: f64 = yt.iter().zip(&yp).zip(&w).filter(|((t, p), _)| t == p).map(|(_, x)| x).sum();
    let total: f64 = w.iter().sum();
    assert!((acc.accuracy_score(true).unwrap() - correct / total).abs() < 1e-12);
    let report = acc.classification_report(&ReportOptions::default()).unwrap();
    assert_eq!(report.rows.len(), acc.classes().len());
}

/// Found by `scripts/fuzz.sh`: a huge `digits` made the report's formatter panic (precision above 65 535).
#[test]
fn report_digits_beyond_any_precision_are_a_value_error() {
    for (metric, y) in [
        ("classification_report", serde_json::json!([0, 1, 1, 0])),
        ("seqeval.classification_report", serde_json::json!([["B-PER", "O"], ["O", "B-LOC"]])),
    ] {
        for digits in [65_536u64, 9_007_199_254_740_992] {
            let args = serde_json::json!({ "y_true": y, "y_pred": y, "digits": digits });
            let err = finetune_metrics::call::call(metric, &args).expect_err("refused");
            assert_eq!(err.kind(), "ValueError", "{metric}: {err}");
        }
    }
    let ok = serde_json::json!({ "y_true": [0, 1], "y_pred": [0, 1], "digits": 4 });
    assert!(finetune_metrics::call::call("classification_report", &ok).is_ok());
}
