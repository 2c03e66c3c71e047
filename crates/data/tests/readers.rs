//! Readers: good files parse as expected; every kind of malformed record gives a one-line `file:line` error,
//! or is counted with `skip_bad_records`.

use std::path::PathBuf;

use finetune_data::read::{ConllReader, DelimitedReader, JsonlReader};
use finetune_data::{read_examples, read_tokens, DataError, Example, Format, Label, ReadOptions};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn shown(name: &str) -> String {
    fixture(name).display().to_string()
}

fn single(s: &str) -> Option<Label> {
    Some(Label::Single(s.into()))
}

/// The error of reading `name` strictly; asserts it is one line and starts with `file:line:`.
fn error_of(name: &str, opts: &ReadOptions, line: u64) -> String {
    let err = match read_examples(&fixture(name), opts) {
        Ok(d) => panic!("{name} read without error: {:?}", d.examples),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "multi-line error: {msg:?}");
    assert!(msg.starts_with(&format!("{}:{line}: ", shown(name))), "unexpected location: {msg}");
    assert!(err.is_record_error());
    msg
}

#[test]
fn csv_quoting_crlf_and_multiline_fields() {
    let d = read_examples(&fixture("good.csv"), &ReadOptions::default()).unwrap();
    let texts: Vec<&str> = d.examples.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(texts, ["Hello, world", "She said \"hi\"\r\nover two lines", "plain text"]);
    assert_eq!(d.examples.iter().map(|e| e.line).collect::<Vec<_>>(), [2, 3, 5]);
    assert_eq!(d.examples[1].label, single("negative"));
    assert_eq!(d.report.records, 3);
}

#[test]
fn tsv_by_extension_with_text_pair() {
    let opts = ReadOptions {
        text_column_name: "sentence1".into(),
        text_pair_column_name: Some("sentence2".into()),
        ..ReadOptions::default()
    };
    let d = read_examples(&fixture("pair.tsv"), &opts).unwrap();
    assert_eq!(
        d.examples,
        vec![
            Example {
                text: "A man eats.".into(),
                text_pair: Some("Someone eats.".into()),
                label: single("0"),
                line: 2
            },
            Example { text: "Quoted\ttab".into(), text_pair: Some("Other".into()), label: single("1"), line: 3 },
        ]
    );
}

#[test]
fn csv_multi_label_separator() {
    let opts =
        ReadOptions { label_column_name: Some("tags".into()), label_separator: Some("|".into()), ..Default::default() };
    let d = read_examples(&fixture("multi.csv"), &opts).unwrap();
    assert_eq!(d.examples[0].label, Some(Label::Multi(vec!["a".into(), "b".into()])));
    assert_eq!(d.examples[1].label, Some(Label::Multi(vec!["c".into()])));
}

#[test]
fn csv_unterminated_quote() {
    let msg = error_of("unterminated_quote.csv", &ReadOptions::default(), 4);
    assert!(msg.ends_with("unterminated quote in column \"text\" (the field runs to the end of the file)"), "{msg}");
}

#[test]
fn csv_wrong_column_count() {
    let msg = error_of("wrong_columns.csv", &ReadOptions::default(), 3);
    assert!(msg.ends_with("expected 2 columns (as in the header), found 3"), "{msg}");
}

#[test]
fn csv_missing_column_is_a_file_error() {
    let err = read_examples(&fixture("missing_column.csv"), &ReadOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: no column \"text\" in the header (columns: sentence, target)", shown("missing_column.csv"))
    );
    assert!(!err.is_record_error());
    // Not skippable either: a missing column would drop every record.
    let opts = ReadOptions { skip_bad_records: true, ..Default::default() };
    assert!(read_examples(&fixture("missing_column.csv"), &opts).is_err());
    let opts = ReadOptions { text_column_name: "sentence".into(), ..Default::default() };
    let err = read_examples(&fixture("missing_column.csv"), &opts).unwrap_err();
    assert!(err.to_string().ends_with("no column \"label\" in the header (columns: sentence, target)"));
}

#[test]
fn csv_empty_label() {
    let msg = error_of("empty_label.csv", &ReadOptions::default(), 3);
    assert!(msg.ends_with("column \"label\" is empty"), "{msg}");
}

#[test]
fn csv_invalid_utf8() {
    let msg = error_of("invalid_utf8.csv", &ReadOptions::default(), 3);
    assert!(msg.ends_with("invalid UTF-8 in column \"text\""), "{msg}");
}

#[test]
fn csv_skip_bad_records_counts_and_locates() {
    let opts = ReadOptions { skip_bad_records: true, ..Default::default() };
    for (name, good, line) in [
        ("empty_label.csv", 2, 3),
        ("invalid_utf8.csv", 2, 3),
        ("wrong_columns.csv", 2, 3),
        ("unterminated_quote.csv", 2, 4),
    ] {
        let d = read_examples(&fixture(name), &opts).unwrap();
        assert_eq!(d.examples.len(), good, "{name}");
        assert_eq!(d.report.skipped, 1, "{name}");
        assert!(d.report.first_errors[0].starts_with(&format!("{}:{line}: ", shown(name))), "{name}");
    }
}

#[test]
fn jsonl_label_kinds_and_blank_lines() {
    let d = read_examples(&fixture("good.jsonl"), &ReadOptions::default()).unwrap();
    assert_eq!(d.examples[0].label, single("pos"));
    assert_eq!(d.examples[1].label, single("3"));
    assert_eq!(d.examples[2].label, Some(Label::Multi(vec!["a".into(), "2".into()])));
    assert_eq!(d.examples.iter().map(|e| e.line).collect::<Vec<_>>(), [1, 3, 4]);
    assert_eq!(d.report.blank_lines, 1);
}

#[test]
fn jsonl_invalid_json_line() {
    let msg = error_of("bad_json.jsonl", &ReadOptions::default(), 2);
    assert!(msg.contains(": invalid JSON: "), "{msg}");
}

#[test]
fn jsonl_bad_fields_each_named() {
    let opts = ReadOptions { skip_bad_records: true, ..Default::default() };
    let d = read_examples(&fixture("bad_fields.jsonl"), &opts).unwrap();
    assert_eq!(d.examples.len(), 1);
    assert_eq!(d.report.skipped, 5);
    let p = shown("bad_fields.jsonl");
    assert_eq!(
        d.report.first_errors,
        vec![
            format!("{p}:1: field \"text\" must be a string, found a number"),
            format!("{p}:2: field \"text\" is missing"),
            format!("{p}:3: field \"label\" must be a string, an integer or a list of them, found a number"),
            format!("{p}:4: field \"label\" is empty"),
            format!("{p}:5: expected a JSON object, found a list"),
        ]
    );
}

#[test]
fn jsonl_invalid_utf8() {
    let msg = error_of("invalid_utf8.jsonl", &ReadOptions::default(), 2);
    assert!(msg.ends_with("invalid UTF-8 at byte 12 of the line"), "{msg}");
}

#[test]
fn conll_docstart_tabs_and_trailing_sentence() {
    let d = read_tokens(&fixture("good.conll"), &ReadOptions::default()).unwrap();
    let s = &d.sentences;
    assert_eq!(s.len(), 3);
    assert_eq!(s[0].tokens, ["EU", "rejects", "German"]);
    assert_eq!(s[0].tags, ["B-ORG", "O", "B-MISC"]);
    assert_eq!(s[0].line, 3);
    assert_eq!(s[1].tokens, ["Peter", "Blackburn"]);
    assert_eq!(s[1].tags, ["B-PER", "I-PER"]);
    assert_eq!(s[2].tokens, ["BRUSSELS", "1996-08-22"]);
    assert_eq!(s[2].line, 11);
}

#[test]
fn conll_one_column_line() {
    let err = read_tokens(&fixture("one_column.conll"), &ReadOptions::default()).unwrap_err();
    assert_eq!(err.to_string(), format!("{}:5: expected 2 columns (token, tag), found 1", shown("one_column.conll")));
    let opts = ReadOptions { skip_bad_records: true, ..Default::default() };
    let d = read_tokens(&fixture("one_column.conll"), &opts).unwrap();
    // The bad line's whole sentence is skipped, the others kept.
    assert_eq!(d.sentences.len(), 2);
    assert_eq!(d.report.skipped, 1);
}

#[test]
fn conll_invalid_utf8() {
    let err = read_tokens(&fixture("invalid_utf8.conll"), &ReadOptions::default()).unwrap_err();
    assert_eq!(err.to_string(), format!("{}:3: invalid UTF-8 at byte 1 of the line", shown("invalid_utf8.conll")));
}

#[test]
fn conll_column_count_must_stay_the_same() {
    let dir = std::env::temp_dir().join(format!("finetune-data-conll-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("wide.conll");
    std::fs::write(&p, "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-MISC\n").unwrap();
    let err = read_tokens(&p, &ReadOptions::default()).unwrap_err();
    assert!(err.to_string().ends_with(":3: expected 4 columns (as on line 1), found 3"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plain_text_lines() {
    let opts = ReadOptions { label_column_name: None, ..Default::default() };
    let d = read_examples(&fixture("lines.txt"), &opts).unwrap();
    assert_eq!(
        d.examples.iter().map(|e| (e.text.as_str(), e.line)).collect::<Vec<_>>(),
        [("first line", 1), ("second line", 3), ("third", 5)]
    );
    assert_eq!(d.report.blank_lines, 2);
    assert!(d.examples.iter().all(|e| e.label.is_none()));
}

#[test]
fn readers_stream_record_by_record() {
    // Iterators keep going after a bad record, which is what lets skip_bad_records count them.
    let r = DelimitedReader::open(&fixture("wrong_columns.csv"), &ReadOptions::default()).unwrap();
    let oks: Vec<bool> = r.map(|x| x.is_ok()).collect();
    assert_eq!(oks, [true, false, true]);
    let r = JsonlReader::open(&fixture("bad_json.jsonl"), &ReadOptions::default()).unwrap();
    assert_eq!(r.map(|x| x.is_ok()).collect::<Vec<_>>(), [true, false, true]);
    let r = ConllReader::open(&fixture("one_column.conll"), &ReadOptions::default()).unwrap();
    assert_eq!(r.map(|x| x.is_ok()).collect::<Vec<_>>(), [true, false, true]);
}

#[test]
fn missing_file_and_unknown_extension() {
    let err = read_examples(&fixture("nope.csv"), &ReadOptions::default()).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }));
    assert!(err.to_string().starts_with(&shown("nope.csv")));
    let err = read_examples(&fixture("data.xyz"), &ReadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("cannot tell the format"), "{err}");
    assert_eq!(Format::parse("TSV").unwrap(), Format::Tsv);
    assert!(Format::parse("xlsx").is_err());
}

#[test]
fn crlf_lines_and_unterminated_quote_in_last_column() {
    let opts = ReadOptions { skip_bad_records: true, ..Default::default() };
    let d = read_examples(&fixture("crlf_bad.csv"), &opts).unwrap();
    assert_eq!(d.examples.len(), 1);
    assert_eq!(d.examples[0].line, 2);
    let p = shown("crlf_bad.csv");
    assert_eq!(
        d.report.first_errors,
        vec![
            format!("{p}:4: expected 2 columns (as in the header), found 3"),
            format!("{p}:5: unterminated quote in column \"label\" (the field runs to the end of the file)"),
        ]
    );
}

#[test]
fn byte_order_mark_is_ignored() {
    let d = read_examples(&fixture("bom.csv"), &ReadOptions::default()).unwrap();
    assert_eq!(d.examples[0].text, "hello");
    let d = read_examples(&fixture("bom.jsonl"), &ReadOptions::default()).unwrap();
    assert_eq!(d.examples[0].text, "hello");
}
