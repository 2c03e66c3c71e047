mod common;

use finetune_metrics::qa::{
    exact_match, squad, ExactMatchAccumulator, ExactMatchOptions, SquadAccumulator, SquadReference,
};

#[test]
fn qa_fixtures() {
    assert!(common::run_fixture_file("qa.json") >= 100);
}

#[test]
fn squad_streaming_equals_one_shot() {
    let preds: Vec<(String, String)> = [("q1", "The Broncos"), ("q2", "an apple pie"), ("q3", "nothing")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let refs: Vec<SquadReference> =
        [("q1", vec!["Denver Broncos"]), ("q2", vec!["apple", "apple pie"]), ("q4", vec!["x"])]
            .iter()
            .map(|(id, a)| SquadReference { id: id.to_string(), answers: a.iter().map(|s| s.to_string()).collect() })
            .collect();
    let one_shot = squad(&preds, &refs).expect("squad");
    let mut acc = SquadAccumulator::new();
    acc.update(Some("The Broncos"), &["Denver Broncos"]).expect("update");
    acc.update(Some("an apple pie"), &["apple", "apple pie"]).expect("update");
    acc.update(None, &["x"]).expect("update");
    assert_eq!(acc.compute().expect("compute"), one_shot);
    assert!((one_shot.exact_match - 100.0 / 3.0).abs() < 1e-12);
    assert!((one_shot.f1 - 100.0 * (2.0 / 3.0 + 1.0) / 3.0).abs() < 1e-12);
}

#[test]
fn exact_match_streaming_equals_one_shot() {
    let options = ExactMatchOptions { ignore_case: true, ignore_punctuation: true, ..Default::default() }
        .with_regexes(&["the "])
        .expect("regex");
    let preds = ["the cat", "Theater!", "dog", "a"];
    let refs = ["cat", "theater", "cat", "a"];
    let one_shot = exact_match(&preds, &refs, &options).expect("exact_match");
    let mut acc = ExactMatchAccumulator::new(options);
    for (p, r) in preds.iter().zip(refs) {
        acc.update(p, r);
    }
    assert_eq!(acc.compute(), one_shot);
    assert_eq!(one_shot, 0.75);
    assert!(ExactMatchAccumulator::default().compute().is_nan());
}
