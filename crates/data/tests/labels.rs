//! Label maps: stable inferred order, given maps, unknown labels, multi-label.

use std::path::PathBuf;

use finetune_data::{read_examples, DataError, Example, Label, LabelMap, ReadOptions};

fn names(m: &LabelMap) -> Vec<&str> {
    m.names().iter().map(String::as_str).collect()
}

#[test]
fn inferred_order_is_sorted_and_stable() {
    let m = LabelMap::infer(["positive", "negative", "neutral", "negative"]).unwrap();
    assert_eq!(names(&m), ["negative", "neutral", "positive"]);
    // Code point order, as Python's sorted() on str: upper case before lower case.
    assert_eq!(names(&LabelMap::infer(["b", "B", "a", "é"]).unwrap()), ["B", "a", "b", "é"]);
    // Integer-looking labels sort numerically, as an integer column does in HF's `label_list.sort()`.
    assert_eq!(names(&LabelMap::infer(["10", "2", "1", "-3"]).unwrap()), ["-3", "1", "2", "10"]);
    assert_eq!(names(&LabelMap::infer(["1.5", "10", "2"]).unwrap()), ["1.5", "2", "10"]);
    // One non-number makes the whole column strings.
    assert_eq!(names(&LabelMap::infer(["10", "2", "x"]).unwrap()), ["10", "2", "x"]);
    // Same set in any order gives the same map.
    assert_eq!(LabelMap::infer(["c", "a", "b"]).unwrap(), LabelMap::infer(["b", "c", "a", "a"]).unwrap());
}

#[test]
fn given_map_keeps_order_and_rejects_duplicates() {
    let m = LabelMap::new(vec!["O".into(), "B-PER".into(), "I-PER".into()]).unwrap();
    assert_eq!(m.id("B-PER"), Some(1));
    assert_eq!(m.name(2), Some("I-PER"));
    assert!(LabelMap::new(vec!["a".into(), "a".into()]).is_err());
    assert!(LabelMap::new(vec![]).is_err());
    let cfg = m.to_config_json();
    assert_eq!(cfg["id2label"]["1"], "B-PER");
    assert_eq!(cfg["label2id"]["I-PER"], 2);
}

#[test]
fn unknown_label_in_eval_data_names_file_line_and_label() {
    let dir = std::env::temp_dir().join(format!("finetune-data-labels-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let train = dir.join("train.csv");
    let test = dir.join("test.csv");
    std::fs::write(&train, "text,label\na,pos\nb,neg\n").unwrap();
    std::fs::write(&test, "text,label\nc,neg\nd,neutral\n").unwrap();
    let tr = read_examples(&train, &ReadOptions::default()).unwrap();
    let te = read_examples(&test, &ReadOptions::default()).unwrap();
    let m = LabelMap::from_examples(&tr.examples).unwrap();
    assert_eq!(m.encode_examples(&tr.examples, &tr.path).unwrap(), [1, 0]);
    let err = m.check_examples(&te.examples, &te.path).unwrap_err();
    assert!(matches!(err, DataError::UnknownLabel { line: 3, .. }));
    assert_eq!(err.to_string(), format!("{}:3: unknown label \"neutral\" (not in the label map)", te.path));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn multi_label_maps_and_multi_hot() {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good.jsonl");
    let d = read_examples(&fixture, &ReadOptions::default()).unwrap();
    let m = LabelMap::from_examples(&d.examples).unwrap();
    // "3" and "2" are mixed with words, so all sort as strings.
    assert_eq!(names(&m), ["2", "3", "a", "pos"]);
    let l = Label::Multi(vec!["a".into(), "2".into()]);
    assert_eq!(m.multi_hot(&l, "f", 1).unwrap(), [1.0, 0.0, 1.0, 0.0]);
    assert!(m.multi_hot(&Label::Multi(vec!["zzz".into()]), "f", 9).is_err());
    let e = Example { text: "t".into(), text_pair: None, label: Some(l), line: 4 };
    let err = m.encode_examples(&[e], "f.jsonl").unwrap_err();
    assert_eq!(err.to_string(), "f.jsonl:4: a list of labels where a single label was expected");
}

#[test]
fn unknown_tag_names_its_own_line() {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good.conll");
    let d = finetune_data::read_tokens(&fixture, &ReadOptions::default()).unwrap();
    let m = LabelMap::new(["O", "B-ORG", "B-MISC", "B-PER", "I-PER"].map(String::from).to_vec()).unwrap();
    let err = m.check_tags(&d.sentences, &d.path).unwrap_err();
    // BRUSSELS B-LOC is on line 11.
    assert_eq!(err.to_string(), format!("{}:11: unknown label \"B-LOC\" (not in the label map)", d.path));
    assert_eq!(LabelMap::from_tags(&d.sentences).unwrap().len(), 6);
}
