//! WordNet synonyms against NLTK's (the committed fixture of scripts/reference/gen_wordnet.py), and EDA's four
//! operations checked by what each may and may not do to a text. The WordNet tests need `assets/wordnet`
//! (scripts/fetch.sh wordnet) and say SKIPPED when it is absent.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;

use finetune_data::augment::{augment_examples, eda, only_chars, EdaOptions};
use finetune_data::split::Rng;
use finetune_data::wordnet::WordNet;
use finetune_data::{Example, Label};

fn wordnet() -> Option<WordNet> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets/wordnet");
    if !p.join("data.noun").is_file() {
        let _ = writeln!(std::io::stderr(), "SKIPPED: {} is absent; run scripts/fetch.sh wordnet", p.display());
        return None;
    }
    Some(WordNet::open(&p).expect("assets/wordnet"))
}

fn words(s: &str) -> Vec<&str> {
    s.split(' ').filter(|w| !w.is_empty()).collect()
}

#[test]
fn synonyms_equal_nltk_wordnet_for_every_fixture_word() {
    let Some(wn) = wordnet() else { return };
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/wordnet_synonyms.json"))
        .expect("fixture");
    let fixture: serde_json::Value = serde_json::from_str(&text).expect("json");
    let expected: BTreeMap<String, Vec<String>> =
        serde_json::from_value(fixture["synonyms"].clone()).expect("synonyms map");
    assert!(expected.len() > 2000, "{} words", expected.len());
    let mut with_synonyms = 0;
    for (word, want) in &expected {
        let got = wn.synonyms(word).expect("synonyms");
        assert_eq!(&got, want, "synonyms of {word:?}");
        with_synonyms += usize::from(!got.is_empty());
    }
    // Irregular forms go through the exception lists, regular ones through the suffix rules.
    assert!(expected["geese"].contains(&"goose".to_string()));
    assert!(expected["went"].contains(&"move".to_string()) || expected["went"].contains(&"travel".to_string()));
    assert!(with_synonyms > 1500, "{with_synonyms}");
}

#[test]
fn only_chars_is_eda_cleaning() {
    assert_eq!(only_chars("It's a GREAT film -- 10/10!!  Don't miss."), "its a great film dont miss ");
    assert_eq!(only_chars("  x\ty\nz"), "x y z");
    assert_eq!(only_chars("123 !!"), "");
}

#[test]
fn each_operation_does_only_what_it_may() {
    let Some(wn) = wordnet() else { return };
    let text = "the movie was a wonderful and moving story about a brave young soldier";
    let orig = words(text);
    let only = |sr: f64, ri: f64, rs: f64, rd: f64| EdaOptions {
        alpha_sr: sr,
        alpha_ri: ri,
        alpha_rs: rs,
        alpha_rd: rd,
        num_aug: 8,
    };
    for seed in 0..20 {
        // Random swap: the same words, in another order.
        let out = eda(&wn, text, &only(0.0, 0.0, 0.2, 0.0), &mut Rng::new(seed)).expect("rs");
        assert_eq!(out.len(), 3, "num_aug / 4 + 1 = 3 per technique, one technique");
        for s in &out {
            let mut a = words(s);
            let mut b = orig.clone();
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b, "swap changed the words: {s}");
        }
        assert!(out.iter().any(|s| s != text), "swap moved nothing in 3 tries (seed {seed})");
        // Random deletion: a subsequence, never empty.
        for s in eda(&wn, text, &only(0.0, 0.0, 0.0, 0.3), &mut Rng::new(seed)).expect("rd") {
            let w = words(&s);
            assert!(!w.is_empty());
            let mut it = orig.iter();
            assert!(w.iter().all(|x| it.any(|y| y == x)), "deletion is not a subsequence: {s}");
        }
        // Synonym replacement: same length in positions of the original words; stop words are kept.
        for s in eda(&wn, text, &only(0.2, 0.0, 0.0, 0.0), &mut Rng::new(seed)).expect("sr") {
            assert_ne!(s, text, "a replacement was made");
            for stop in ["the", "was", "a", "and", "about"] {
                assert!(words(&s).contains(&stop), "stop word {stop} replaced: {s}");
            }
        }
        // Random insertion: every original word still there in order, plus at least one more.
        for s in eda(&wn, text, &only(0.0, 0.2, 0.0, 0.0), &mut Rng::new(seed)).expect("ri") {
            let w = words(&s);
            assert!(w.len() > orig.len(), "nothing inserted: {s}");
            let mut it = w.iter();
            assert!(orig.iter().all(|x| it.any(|y| y == x)), "an original word is gone: {s}");
        }
    }
    // A word replaced is replaced by one of its WordNet synonyms.
    let out = eda(&wn, "wonderful", &only(1.0, 0.0, 0.0, 0.0), &mut Rng::new(1)).expect("sr");
    let syns: BTreeSet<String> = wn.synonyms("wonderful").expect("syn").into_iter().collect();
    assert!(out.iter().all(|s| syns.contains(s.trim())), "{out:?} not in {syns:?}");
}

#[test]
fn augment_examples_keeps_originals_labels_and_is_seeded() {
    let Some(wn) = wordnet() else { return };
    let ex = |text: &str, label: &str, line: u64| Example {
        text: text.into(),
        text_pair: None,
        label: Some(Label::Single(label.into())),
        line,
    };
    let data = vec![
        ex("A gripping, beautifully shot thriller.", "positive", 2),
        ex("Dull and far too long; I left early.", "negative", 3),
        ex("10/10 !!!", "positive", 4),
    ];
    let o = EdaOptions { num_aug: 4, ..Default::default() };
    let (out, report) = augment_examples(&wn, &data, &o, 42).expect("augment");
    assert_eq!(report.originals, 3);
    assert_eq!(report.unchanged, 1, "a text without letters gets no copies");
    assert_eq!(report.added, 8);
    assert_eq!(out.len(), 11);
    assert_eq!(out[0], data[0], "the original comes first, verbatim");
    assert_eq!(out[5], data[1]);
    assert_eq!(out[10], data[2]);
    for e in &out[1..5] {
        assert_eq!(e.label, data[0].label);
        assert_eq!(e.line, 2);
        assert_eq!(e.text, only_chars(&e.text), "copies are EDA-cleaned");
    }
    let (again, _) = augment_examples(&wn, &data, &o, 42).expect("again");
    assert_eq!(again, out, "same seed, same copies");
    let (other, _) = augment_examples(&wn, &data, &o, 7).expect("other seed");
    assert_ne!(other, out, "another seed, other copies");
    // A prefix of the data gets the same copies: example i's copies depend on the seed and i only.
    let (prefix, _) = augment_examples(&wn, &data[..1], &o, 42).expect("prefix");
    assert_eq!(prefix[..], out[..5]);
}

#[test]
fn bad_options_pairs_and_folders_are_refused_by_name() {
    let dir = std::env::temp_dir().join(format!("finetune-wordnet-{}", std::process::id()));
    let err = WordNet::open(&dir).err().expect("missing folder").to_string();
    assert!(err.contains("index.noun"), "{err}");
    // A malformed index line is named by file and line.
    std::fs::create_dir_all(&dir).expect("dir");
    for pos in ["noun", "verb", "adj", "adv"] {
        std::fs::write(dir.join(format!("index.{pos}")), "  1 license\ndog n 2 0 2 0 00001 00002\n").expect("w");
        std::fs::write(dir.join(format!("{pos}.exc")), "").expect("w");
        std::fs::write(dir.join(format!("data.{pos}")), "").expect("w");
    }
    std::fs::write(dir.join("index.verb"), "  1 license\nrun v 3 0 3 0 00001\n").expect("w");
    let err = WordNet::open(&dir).err().expect("bad index").to_string();
    assert!(err.contains("index.verb:2") && err.contains("3 synsets"), "{err}");
    // An offset that points at no synset line is an error, not a panic.
    std::fs::write(dir.join("index.verb"), "").expect("w");
    let wn = WordNet::open(&dir).expect("open");
    let err = wn.synonyms("dog").expect_err("bad offset").to_string();
    assert!(err.contains("data.noun") && err.contains("byte 1"), "{err}");
    std::fs::remove_dir_all(&dir).ok();

    let Some(wn) = wordnet() else { return };
    let bad = EdaOptions { alpha_sr: 1.5, ..Default::default() };
    assert!(augment_examples(&wn, &[], &bad, 1).expect_err("alpha").to_string().contains("alpha_sr"));
    let zero = EdaOptions { num_aug: 0, ..Default::default() };
    assert!(augment_examples(&wn, &[], &zero, 1).expect_err("num_aug").to_string().contains("num_aug"));
    let pair = Example { text: "a b".into(), text_pair: Some("c".into()), label: None, line: 9 };
    let err = augment_examples(&wn, &[pair], &EdaOptions::default(), 1).expect_err("pair").to_string();
    assert!(err.contains("line 9") && err.contains("sentence pairs"), "{err}");
}
