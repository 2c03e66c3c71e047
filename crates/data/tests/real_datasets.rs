//! The three real datasets of `scripts/fetch-datasets.sh`, read through the readers. Skipped (with a visible
//! note) when `assets/` has not been fetched.

use std::io::Write;
use std::path::PathBuf;

use finetune_data::stats::{stats, token_stats};
use finetune_data::{read_examples, read_tokens, Label, LabelMap, ReadOptions, SplitSpec};

fn asset(rel: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/data").join(rel);
    if p.exists() {
        Some(p)
    } else {
        // Straight to the stderr handle: the test harness captures `eprintln!` of passing tests, which would
        // hide that the test checked nothing.
        let _ = writeln!(std::io::stderr(), "SKIPPED: {} is absent; run scripts/fetch-datasets.sh", p.display());
        None
    }
}

fn count(labels: &[(String, usize)], name: &str) -> usize {
    labels.iter().find(|(n, _)| n == name).map_or(0, |c| c.1)
}

#[test]
fn movie_review_sentiment_csv() {
    let Some(p) = asset("sentiment/movie_reviews.csv") else { return };
    let d = read_examples(&p, &ReadOptions::default()).unwrap();
    // 10 605 VADER movie-review snippets less the 37 rated exactly 0.
    assert_eq!(d.examples.len(), 10_568);
    assert_eq!(d.report.skipped, 0);
    let s = stats(&d.examples);
    assert_eq!(count(&s.label_counts, "negative"), 5_326);
    assert_eq!(count(&s.label_counts, "positive"), 5_242);
    let m = LabelMap::from_examples(&d.examples).unwrap();
    assert_eq!(m.names(), ["negative", "positive"]);
    let y = m.encode_examples(&d.examples, &d.path).unwrap();
    let parts = finetune_data::split::stratified_split(&y, &SplitSpec::parse("80/10/10").unwrap(), 42);
    assert_eq!(parts.iter().map(Vec::len).collect::<Vec<_>>(), [8_454, 1_057, 1_057]);
}

#[test]
fn wnut16_ner_conll() {
    let Some(p) = asset("ner/wnut16.conll") else { return };
    let d = read_tokens(&p, &ReadOptions::default()).unwrap();
    let s = token_stats(&d.sentences);
    assert_eq!(s.sentences, 2_394);
    assert_eq!(s.tokens, 46_469);
    // BIO over 10 entity types, plus O.
    let m = LabelMap::from_tags(&d.sentences).unwrap();
    assert_eq!(m.len(), 21);
    assert_eq!(s.entity_counts.len(), 10);
    assert_eq!(count(&s.tag_counts, "B-person"), 449);
    assert!(d.sentences.iter().all(|s| s.tokens.len() == s.tags.len() && !s.tokens.is_empty()));
}

#[test]
fn spam_assassin_jsonl() {
    let Some(p) = asset("spam/spam_assassin.jsonl") else { return };
    let d = read_examples(&p, &ReadOptions::default()).unwrap();
    assert_eq!(d.examples.len(), 6_046);
    let s = stats(&d.examples);
    // easy-ham-1 2 500 + easy-ham-2 1 400 + hard-ham-1 250; spam-1 500 + spam-2 1 396.
    assert_eq!(count(&s.label_counts, "ham"), 4_150);
    assert_eq!(count(&s.label_counts, "spam"), 1_896);
    assert!(d.examples.iter().all(|e| matches!(&e.label, Some(Label::Single(_)))));
    // The group field reads as a label too.
    let by_group =
        read_examples(&p, &ReadOptions { label_column_name: Some("group".into()), ..Default::default() }).unwrap();
    assert_eq!(LabelMap::from_examples(&by_group.examples).unwrap().len(), 5);
}
