//! Dataset statistics.

use finetune_data::stats::{percentile, stats, token_stats};
use finetune_data::{Example, Label, TokenExample};

fn ex(text: &str, label: &str) -> Example {
    Example { text: text.into(), text_pair: None, label: Some(Label::Single(label.into())), line: 1 }
}

#[test]
fn percentiles_match_numpy_linear() {
    // numpy.percentile([1, 2, 3, 4, 10], [50, 90, 95, 99]) = [3.0, 7.6, 8.8, 9.76]
    let v = [1, 2, 3, 4, 10];
    assert_eq!(percentile(&v, 50.0), 3.0);
    assert!((percentile(&v, 90.0) - 7.6).abs() < 1e-12);
    assert!((percentile(&v, 95.0) - 8.8).abs() < 1e-12);
    assert!((percentile(&v, 99.0) - 9.76).abs() < 1e-12);
    assert_eq!(percentile(&[7], 99.0), 7.0);
}

#[test]
fn classification_stats() {
    let v = vec![ex("one two three", "b"), ex("héllo", "a"), ex("one two three", "b"), ex("x  y", "b")];
    let s = stats(&v);
    assert_eq!(s.examples, 4);
    assert_eq!(s.labelled, 4);
    assert_eq!(s.label_counts, [("a".to_string(), 1), ("b".to_string(), 3)]);
    assert_eq!(s.imbalance_ratio, Some(3.0));
    assert_eq!(s.duplicates, 1);
    let chars = s.chars.unwrap();
    // Lengths in characters (not bytes): 13, 5, 13, 4.
    assert_eq!((chars.min, chars.max, chars.mean), (4.0, 13.0, 8.75));
    let words = s.words.unwrap();
    assert_eq!((words.min, words.p50, words.max), (1.0, 2.5, 3.0));
    assert!(stats(&[]).chars.is_none());
}

#[test]
fn token_stats_count_entities() {
    let s = TokenExample {
        tokens: ["a", "b", "c", "d", "e", "f"].map(String::from).to_vec(),
        tags: ["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "B-LOC"].map(String::from).to_vec(),
        line: 1,
    };
    let t = token_stats(&[s]);
    assert_eq!(t.tokens, 6);
    // PER once; LOC three times: a stray I-LOC starts an entity, and so does each B-LOC.
    assert_eq!(t.entity_counts, [("LOC".to_string(), 3), ("PER".to_string(), 1)]);
    assert_eq!(t.tag_counts.len(), 5);
}
