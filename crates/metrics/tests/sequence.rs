mod common;

use finetune_metrics::sequence::{
    classification_report, get_entities_nested, precision_recall_fscore_support, Chunking, EntityAccumulator, Options,
    Scheme, Scores,
};
use finetune_metrics::{Average, MetricError, ZeroDivision};

#[test]
fn sequence_fixtures() {
    let n = common::run_fixture_file("sequence.json");
    assert!(n >= 300, "only {n} cases");
}

/// The strict-mode `seqeval.metrics.v1.precision_recall_fscore_support` is listed and covered by fixtures for
/// the schemes, averages and zero-division settings.
#[test]
fn v1_prfs_is_listed_and_covered() {
    let name = "seqeval.v1.precision_recall_fscore_support";
    let info = finetune_metrics::call::list().into_iter().find(|m| m.name == name).expect("listed");
    assert_eq!(info.reference, "seqeval.metrics.v1.precision_recall_fscore_support");
    let fixture = common::load("sequence.json");
    let cases: Vec<_> = fixture["cases"].as_array().expect("cases").iter().filter(|c| c["metric"] == name).collect();
    for scheme in ["IOB2", "IOBES", "BILOU"] {
        for average in [serde_json::json!(null), "micro".into(), "macro".into(), "weighted".into()] {
            let n = cases
                .iter()
                .filter(|c| {
                    c["args"]["scheme"] == scheme && c["args"]["average"] == average && c.get("result").is_some()
                })
                .count();
            assert!(n >= 10, "{scheme} {average}: {n} cases");
        }
    }
    assert!(cases.iter().filter(|c| c.get("error").is_some()).count() >= 10);
}

/// Small deterministic generator (64-bit LCG), so the test needs no dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

/// Sentences of tags drawn from `alphabet` (including ill-formed ones that make lenient chunks cross sentence
/// boundaries, such as a bare "X").
fn random_corpus(rng: &mut Lcg, alphabet: &[&str], sentences: usize) -> Vec<Vec<String>> {
    (0..sentences).map(|_| (0..rng.next(9)).map(|_| alphabet[rng.next(alphabet.len())].to_owned()).collect()).collect()
}

fn perturb(rng: &mut Lcg, corpus: &[Vec<String>], alphabet: &[&str]) -> Vec<Vec<String>> {
    corpus
        .iter()
        .map(|s| {
            s.iter()
                .map(|t| if rng.next(4) == 0 { alphabet[rng.next(alphabet.len())].to_owned() } else { t.clone() })
                .collect()
        })
        .collect()
}

fn check_streaming(chunking: Chunking, alphabet: &[&str], seed: u64) {
    let mut rng = Lcg(seed);
    let y_true = random_corpus(&mut rng, alphabet, 60);
    let y_pred = perturb(&mut rng, &y_true, alphabet);
    let options = match chunking {
        Chunking::Lenient => Options::default(),
        Chunking::Strict(s) => Options { strict: true, scheme: Some(s), ..Options::default() },
    };
    let one_shot = classification_report(&y_true, &y_pred, &options).expect("report");
    let all = precision_recall_fscore_support(&y_true, &y_pred, Average::None, 1.0, &options).expect("prfs");

    // Random batch boundaries, including empty batches and single sentences.
    let mut acc = EntityAccumulator::new(chunking, false);
    let mut i = 0;
    while i < y_true.len() {
        let j = (i + rng.next(7)).min(y_true.len());
        acc.update(&y_true[i..j], &y_pred[i..j]).expect("update");
        i = j;
    }
    assert_eq!(acc.report(ZeroDivision::Warn).expect("report"), one_shot, "seed {seed}");
    assert_eq!(acc.scores(Average::None, 1.0, ZeroDivision::Warn).expect("scores"), all, "seed {seed}");
    for avg in [Average::Micro, Average::Macro, Average::Weighted] {
        let streamed = acc.scores(avg, 0.5, ZeroDivision::One).expect("scores");
        let direct = precision_recall_fscore_support(
            &y_true,
            &y_pred,
            avg,
            0.5,
            &Options { zero_division: ZeroDivision::One, ..options },
        )
        .expect("prfs");
        assert_eq!(streamed, direct, "seed {seed} {avg:?}");
    }
}

#[test]
fn streaming_equals_one_shot_lenient() {
    let alphabet = ["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "E-LOC", "S-PER", "X", "B", "I", ".-PER", "b-loc"];
    for seed in 0..40 {
        check_streaming(Chunking::Lenient, &alphabet, seed);
    }
}

#[test]
fn streaming_equals_one_shot_strict() {
    let cases: [(Scheme, &[&str]); 4] = [
        (Scheme::IOB2, &["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC"]),
        (Scheme::IOBES, &["O", "B-PER", "I-PER", "E-PER", "S-LOC", "S-PER"]),
        (Scheme::BILOU, &["O", "B-PER", "I-PER", "L-PER", "U-LOC"]),
        (Scheme::IOE2, &["O", "I-PER", "E-PER", "E-LOC", "I-LOC"]),
    ];
    for (scheme, alphabet) in cases {
        for seed in 0..20 {
            check_streaming(Chunking::Strict(scheme), alphabet, seed);
        }
    }
}

#[test]
fn lenient_chunk_crosses_a_batch_boundary_as_it_crosses_sentences() {
    // seqeval joins sentences with "O", which does not end a chunk opened by a tag such as "X".
    let whole = vec![vec!["X"], vec!["X", "B-A"]];
    assert_eq!(get_entities_nested(&whole, false).expect("entities"), vec![("_".into(), 0, 2), ("A".into(), 3, 3)]);
    let mut acc = EntityAccumulator::new(Chunking::Lenient, false);
    acc.update(&whole[..1], &whole[..1]).expect("update");
    acc.update(&whole[1..], &whole[1..]).expect("update");
    let counts = acc.counts().expect("counts");
    assert_eq!(counts.labels, ["A", "_"]);
    assert_eq!((counts.tp, counts.true_), (vec![1, 1], vec![1, 1]));
}

#[test]
fn failed_update_leaves_the_accumulator_unchanged() {
    let mut acc = EntityAccumulator::new(Chunking::Strict(Scheme::IOB2), false);
    acc.update(&[vec!["B-A", "I-A"]], &[vec!["B-A", "O"]]).expect("update");
    let before = acc.report(ZeroDivision::Warn).expect("report");
    assert!(matches!(acc.update(&[vec!["B-A"]], &[vec!["B-A", "O"]]), Err(MetricError::Value(_))));
    assert!(matches!(acc.update(&[vec!["B-NEW"]], &[vec!["E-NEW"]]), Err(MetricError::Value(_))));
    assert!(matches!(acc.update(&[vec!["x"]], &[vec!["O"]]), Err(MetricError::Key(_))));
    assert_eq!(acc.report(ZeroDivision::Warn).expect("report"), before);
    assert!(matches!(EntityAccumulator::new(Chunking::Lenient, false).counts(), Err(MetricError::Type(_))));
}

#[test]
fn report_text_matches_seqeval_docstring() {
    let y_true = vec![vec!["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], vec!["B-PER", "I-PER", "O"]];
    let y_pred = vec![vec!["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], vec!["B-PER", "I-PER", "O"]];
    let text = classification_report(&y_true, &y_pred, &Options::default()).expect("report").text(2).expect("text");
    let expected = "              precision    recall  f1-score   support\n\n        MISC       0.00      0.00      0.00         1\n         PER       1.00      1.00      1.00         1\n\n   micro avg       0.50      0.50      0.50         2\n   macro avg       0.50      0.50      0.50         2\nweighted avg       0.50      0.50      0.50         2\n";
    assert_eq!(text, expected);
    let macro_avg = precision_recall_fscore_support(&y_true, &y_pred, Average::Macro, 1.0, &Options::default());
    assert_eq!(macro_avg, Ok(Scores::Averaged { precision: 0.5, recall: 0.5, fscore: 0.5, support: 2 }));
}
