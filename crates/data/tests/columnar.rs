//! Parquet files and `datasets` `save_to_disk` folders read exactly the records of their JSONL/CSV/CoNLL twins,
//! both written by `datasets` and `pyarrow` (scripts/reference/gen_parquet_fixtures.py); bad files give one-line
//! errors naming the file, the row group and the column; corrupt bytes never panic.

use std::path::{Path, PathBuf};

use finetune_data::read::is_token_level;
use finetune_data::sft::{read_sft, SftFormat};
use finetune_data::{read_examples, read_tokens, DataError, Format, Label, ReadOptions};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/columnar").join(name)
}

fn shown(name: &str) -> String {
    fixture(name).display().to_string()
}

/// The examples of a columnar file and of its twin must be equal, `line` (row number) included.
fn same_examples(columnar: &str, twin: &str, opts: &ReadOptions) {
    let a = read_examples(&fixture(columnar), opts).unwrap_or_else(|e| panic!("{columnar}: {e}"));
    let twin_opts = ReadOptions { format: None, dataset_split: None, ..opts.clone() };
    let mut b = read_examples(&fixture(twin), &twin_opts).unwrap_or_else(|e| panic!("{twin}: {e}"));
    if twin.ends_with(".csv") {
        // Row n is on line n + 1, below the header.
        b.examples.iter_mut().for_each(|e| e.line -= 1);
    }
    assert!(!a.examples.is_empty());
    assert_eq!(a.examples, b.examples, "{columnar} vs {twin}");
    assert_eq!(a.report.records, b.report.records);
}

fn error(name: &str, opts: &ReadOptions) -> DataError {
    match read_examples(&fixture(name), opts) {
        Ok(d) => panic!("{name} read without error: {:?}", d.examples),
        Err(e) => {
            assert!(!e.to_string().contains('\n'), "multi-line error: {e}");
            e
        }
    }
}

#[test]
fn parquet_by_extension_and_by_name() {
    assert_eq!(Format::from_path(Path::new("train.parquet")), Some(Format::Parquet));
    assert_eq!(Format::from_path(Path::new("data-00000-of-00001.arrow")), Some(Format::Arrow));
    assert_eq!(Format::from_path(&fixture("sentiment_saved")), Some(Format::Arrow));
    assert_eq!(Format::parse("parquet").unwrap(), Format::Parquet);
    assert_eq!(Format::parse("arrow").unwrap(), Format::Arrow);
}

#[test]
fn sentiment_parquet_snappy_row_groups_and_class_label_names() {
    same_examples("sentiment.parquet", "sentiment.jsonl", &ReadOptions::default());
    let d = read_examples(&fixture("sentiment.parquet"), &ReadOptions::default()).unwrap();
    assert_eq!(d.examples.len(), 11);
    assert_eq!(d.examples[0].label, Some(Label::Single("pos".into())));
    assert_eq!(d.examples[10].line, 11);
    // Forced format, and zstd.
    let forced = ReadOptions { format: Some(Format::Parquet), ..Default::default() };
    same_examples("sentiment.parquet", "sentiment.jsonl", &forced);
    same_examples("sentiment_zstd.parquet", "sentiment.jsonl", &ReadOptions::default());
}

#[test]
fn unlabelled_and_other_columns() {
    let opts = ReadOptions { label_column_name: None, ..Default::default() };
    same_examples("sentiment.parquet", "sentiment.jsonl", &opts);
    // The integer column as the label: ints as JSONL reads them.
    let opts = ReadOptions { label_column_name: Some("idx".into()), ..Default::default() };
    same_examples("sentiment.parquet", "sentiment.jsonl", &opts);
}

#[test]
fn sentence_pairs_with_float_labels_read_as_the_csv() {
    let opts = ReadOptions {
        text_column_name: "sentence1".into(),
        text_pair_column_name: Some("sentence2".into()),
        ..Default::default()
    };
    same_examples("stsb.parquet", "stsb.csv", &opts);
}

#[test]
fn multi_label_lists_of_class_labels() {
    let opts = ReadOptions { label_column_name: Some("labels".into()), ..Default::default() };
    same_examples("multi.parquet", "multi.jsonl", &opts);
}

#[test]
fn save_to_disk_folders_and_arrow_files() {
    same_examples("sentiment_saved", "sentiment.jsonl", &ReadOptions::default());
    same_examples("sentiment_dict/train", "sentiment_train.jsonl", &ReadOptions::default());
    let test = ReadOptions { dataset_split: Some("test".into()), ..Default::default() };
    same_examples("sentiment_dict", "sentiment_test.jsonl", &test);
    // A shard on its own: rows count from its start.
    same_examples("sentiment_shard1.arrow", "sentiment_shard1.jsonl", &ReadOptions::default());
    let e = error("sentiment_dict", &ReadOptions::default()).to_string();
    assert!(e.contains("a DatasetDict with splits train, test: read one of its folders"), "{e}");
    let e = error("sentiment_dict", &ReadOptions { dataset_split: Some("dev".into()), ..Default::default() });
    assert!(e.to_string().ends_with("the DatasetDict has no split \"dev\" (splits: train, test)"), "{e}");
}

#[test]
fn ner_lists_read_as_the_conll_file() {
    let conll = read_tokens(&fixture("ner.conll"), &ReadOptions::default()).unwrap();
    for name in ["ner.parquet", "ner_str.parquet"] {
        // run_ner.py's columns: "tokens" and "ner_tags" when the default names are absent.
        assert!(is_token_level(&fixture(name), &ReadOptions::default()).unwrap());
        let d = read_tokens(&fixture(name), &ReadOptions::default()).unwrap();
        let strip = |s: &[finetune_data::TokenExample]| -> Vec<(Vec<String>, Vec<String>)> {
            s.iter().map(|x| (x.tokens.clone(), x.tags.clone())).collect()
        };
        assert_eq!(strip(&d.sentences), strip(&conll.sentences), "{name}");
        assert_eq!(d.sentences.iter().map(|s| s.line).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    }
    let named = ReadOptions {
        text_column_name: "tokens".into(),
        label_column_name: Some("ner_tags".into()),
        ..Default::default()
    };
    assert_eq!(read_tokens(&fixture("ner.parquet"), &named).unwrap().sentences.len(), 5);
    assert!(!is_token_level(&fixture("sentiment.parquet"), &ReadOptions::default()).unwrap());
    // A tokens column that is not a list of strings.
    let wrong = ReadOptions { text_column_name: "id".into(), ..named };
    let e = read_tokens(&fixture("ner.parquet"), &wrong).unwrap_err().to_string();
    assert_eq!(e, format!("{}: column \"id\" is Utf8; expected a list of strings", shown("ner.parquet")));
}

#[test]
fn sft_chat_and_prompt_completion() {
    for (parquet, jsonl, format) in [
        ("sft_chat.parquet", "sft_chat.jsonl", SftFormat::Chat),
        ("sft_pc.parquet", "sft_pc.jsonl", SftFormat::PromptCompletion),
    ] {
        let (fa, a) = read_sft(&fixture(parquet), SftFormat::Auto).unwrap();
        let (fb, b) = read_sft(&fixture(jsonl), SftFormat::Auto).unwrap();
        assert_eq!((fa, fb), (format, format));
        let strip =
            |r: &[finetune_data::sft::SftRecord]| r.iter().map(|r| (r.line, r.content.clone())).collect::<Vec<_>>();
        assert_eq!(strip(&a), strip(&b), "{parquet}");
    }
}

#[test]
fn bad_files_name_file_row_group_and_column() {
    let opts = ReadOptions::default();
    let e = error("bad_truncated.parquet", &opts).to_string();
    assert!(e.starts_with(&format!("{}: not a readable Parquet file: ", shown("bad_truncated.parquet"))), "{e}");

    let e = error("bad_page.parquet", &opts).to_string();
    assert!(
        e.starts_with(&format!("{}: row group 1, column \"text\": cannot decode: ", shown("bad_page.parquet"))),
        "{e}"
    );

    let e = error("bad_type.parquet", &opts).to_string();
    assert_eq!(e, format!("{}: column \"text\" is Int64; expected a string column", shown("bad_type.parquet")));

    let e = error("sentiment.parquet", &ReadOptions { label_column_name: Some("sentiment".into()), ..opts.clone() });
    assert_eq!(
        e.to_string(),
        format!("{}: no column \"sentiment\" (columns: text, label, idx)", shown("sentiment.parquet"))
    );

    let e = error("bad_null_label.parquet", &opts);
    assert!(e.is_record_error());
    assert_eq!(
        e.to_string(),
        format!("{}: row group 1, row 4: column \"label\" is null", shown("bad_null_label.parquet"))
    );
    // skip_bad_records counts it and goes on.
    let d = read_examples(&fixture("bad_null_label.parquet"), &ReadOptions { skip_bad_records: true, ..opts }).unwrap();
    assert_eq!((d.report.records, d.report.skipped), (4, 1));
    assert_eq!(d.examples.iter().map(|e| e.line).collect::<Vec<_>>(), [1, 2, 3, 5]);
}

#[test]
fn folders_that_are_not_datasets() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(tmp.path().join("notes.txt"), "not data\n").expect("write");
    let e = read_examples(tmp.path(), &ReadOptions::default()).expect_err("not a dataset").to_string();
    assert!(
        e.ends_with(
            "a folder that is not a `datasets` save_to_disk folder (no state.json or dataset_dict.json) or cache \
             folder (no dataset_info.json) and holds no Parquet files"
        ),
        "{e}"
    );
    let forced = ReadOptions { format: Some(Format::Parquet), ..Default::default() };
    let e = read_examples(tmp.path(), &forced).expect_err("no Parquet files").to_string();
    assert!(e.ends_with("no Parquet files in the folder or in its data/ folder"), "{e}");
    // A folder of unrelated Parquet files reads as shards of several splits, and needs one named.
    let e = error("", &ReadOptions::default()).to_string();
    assert!(e.contains("Parquet shards of the splits bad_null_label, bad_page"), "{e}");
}

/// Truncations and byte flips of every kind of input end in an error or a read, never a panic or an abort.
#[test]
fn corrupt_bytes_never_panic() {
    let dir = std::env::temp_dir().join(format!("finetune-columnar-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sources = [
        ("sentiment.parquet", ReadOptions::default()),
        ("sentiment_zstd.parquet", ReadOptions::default()),
        ("ner.parquet", ReadOptions::default()),
        ("sentiment_saved/data-00000-of-00002.arrow", ReadOptions::default()),
    ];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (name, opts) in &sources {
        let good = std::fs::read(fixture(name)).unwrap();
        let ext = Path::new(name).extension().unwrap().to_str().unwrap();
        let path = dir.join(format!("mutant.{ext}"));
        let token = name.starts_with("ner");
        for k in 0..400 {
            let mut bytes = good.clone();
            if k % 4 == 0 {
                bytes.truncate((next() as usize) % bytes.len());
            } else {
                for _ in 0..1 + k % 3 {
                    let i = (next() as usize) % bytes.len();
                    bytes[i] = next() as u8;
                }
            }
            std::fs::write(&path, &bytes).unwrap();
            let run = std::panic::catch_unwind(|| {
                if token {
                    read_tokens(&path, opts).map(|_| ())
                } else {
                    read_examples(&path, opts).map(|_| ())
                }
            });
            match run {
                Err(_) => panic!("{name}: mutant {k} panicked"),
                Ok(Err(e)) => assert!(!e.to_string().contains('\n'), "{e}"),
                Ok(Ok(())) => {}
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn options_that_do_not_apply_are_refused() {
    let refused = |opts: ReadOptions, expected: &str| {
        let e = read_examples(&fixture("sentiment.parquet"), &opts).unwrap_err().to_string();
        assert!(e.contains(expected), "{e}");
    };
    refused(ReadOptions { dataset_split: Some("train".into()), ..Default::default() }, "is not a DatasetDict folder");
    refused(ReadOptions { delimiter: Some(b';'), ..Default::default() }, "the delimiter applies to CSV/TSV files");
    refused(ReadOptions { tag_column: Some(1), ..Default::default() }, "token and tag column numbers apply to CoNLL");
}

#[test]
fn parquet_shard_folders_in_the_hub_layout() {
    // data/train-0000{0,1}-of-00002.parquet and data/test-00000-of-00001.parquet, written by `datasets`.
    assert_eq!(Format::from_path(&fixture("sentiment_hub")), Some(Format::Parquet));
    let split = |s: &str| ReadOptions { dataset_split: Some(s.into()), ..Default::default() };
    same_examples("sentiment_hub", "sentiment_train.jsonl", &split("train"));
    same_examples("sentiment_hub", "sentiment_test.jsonl", &split("test"));
    same_examples("sentiment_hub/data", "sentiment_test.jsonl", &split("test"));
    let e = error("sentiment_hub", &ReadOptions::default());
    assert!(e.to_string().contains("Parquet shards of the splits test, train"), "{e}");
    let e = error("sentiment_hub", &split("validation"));
    assert!(e.to_string().contains("no split \"validation\" (splits: test, train)"), "{e}");

    // A folder of one split reads whole, whatever split is asked for; shards must share their columns.
    let tmp = tempfile::tempdir().expect("tmp");
    for i in 0..2 {
        let name = format!("train-{i:05}-of-00002.parquet");
        std::fs::copy(fixture("sentiment_hub/data").join(&name), tmp.path().join(&name)).expect("copy");
    }
    let d = read_examples(tmp.path(), &split("test")).expect("one split");
    let twin = read_examples(&fixture("sentiment_train.jsonl"), &ReadOptions::default()).expect("twin");
    assert_eq!(d.examples, twin.examples);
    std::fs::copy(fixture("stsb.parquet"), tmp.path().join("train-00001-of-00002.parquet")).expect("copy");
    let e = read_examples(tmp.path(), &ReadOptions::default()).expect_err("mixed columns");
    assert!(e.to_string().contains("train-00001-of-00002.parquet: its columns differ"), "{e}");
    // The split option names a folder with splits only.
    let e = read_examples(&fixture("sentiment.parquet"), &split("train")).expect_err("a file has no splits");
    assert!(e.to_string().contains("not a DatasetDict folder"), "{e}");
}

#[test]
fn datasets_cache_folders() {
    // load_dataset's cache folder: dataset_info.json, parquet-train.arrow, parquet-test.arrow.
    let folder = "sentiment_cache";
    assert_eq!(Format::from_path(&fixture(folder)), Some(Format::Arrow));
    assert!(finetune_data::read::has_splits(&fixture(folder)));
    let split = |s: &str| ReadOptions { dataset_split: Some(s.into()), ..Default::default() };
    same_examples(folder, "sentiment_train.jsonl", &split("train"));
    same_examples(folder, "sentiment_test.jsonl", &split("test"));
    let e = error(folder, &ReadOptions::default());
    assert!(e.to_string().contains("cache folder of the splits test, train"), "{e}");
    let e = error(folder, &split("validation"));
    assert!(e.to_string().contains("no split \"validation\" (splits: test, train)"), "{e}");

    // Shards of a split ("parquet-train-00000-of-00002.arrow") read in name order; other files are ignored.
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::copy(fixture(folder).join("dataset_info.json"), tmp.path().join("dataset_info.json")).expect("copy");
    for name in ["parquet-train-00000-of-00002.arrow", "parquet-train-00001-of-00002.arrow", "notes-train.arrow"] {
        std::fs::copy(fixture(folder).join("parquet-train.arrow"), tmp.path().join(name)).expect("copy");
    }
    let d = read_examples(tmp.path(), &split("train")).expect("shards");
    let twin = read_examples(&fixture("sentiment_train.jsonl"), &ReadOptions::default()).expect("twin");
    assert_eq!(d.examples.len(), 2 * twin.examples.len());
    assert_eq!(
        d.examples[..twin.examples.len()].iter().map(|e| &e.text).collect::<Vec<_>>(),
        twin.examples.iter().map(|e| &e.text).collect::<Vec<_>>()
    );
    // One split only: read whole without a split named.
    assert_eq!(read_examples(tmp.path(), &ReadOptions::default()).expect("one split").examples.len(), d.examples.len());
}
