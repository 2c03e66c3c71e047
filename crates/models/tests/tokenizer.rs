//! Tokenizer loading and encoding. Expected ids come from transformers' AutoTokenizer
//! (scripts/reference/gen_io_fixtures.py); the real-model tests need scripts/fetch.sh.

use std::path::{Path, PathBuf};

use finetune_models::tokenizer::{TextTokenizer, TokenizerError, TokenizerSource};
use serde_json::Value;

/// Writes to stderr directly (not through `eprintln!`, which the test harness captures) so that a skipped
/// real-model test is visible in a normal `cargo test` run.
macro_rules! skipped {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "SKIPPED: {}", format!($($arg)*));
    }};
}

fn minilm_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/all-MiniLM-L6-v2");
    if dir.join("tokenizer.json").is_file() && dir.join("vocab.txt").is_file() {
        Some(dir)
    } else {
        skipped!("{} is absent; run scripts/fetch.sh to test the real MiniLM tokenizer", dir.display());
        None
    }
}

fn cases(key: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/io/minilm_tokens.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v[key].as_array().unwrap().clone()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn check_cases(tok: &mut TextTokenizer, key: &str) {
    let cases = cases(key);
    assert!(cases.len() >= 50, "{} cases", cases.len());
    let mut truncated = 0;
    for (i, c) in cases.iter().enumerate() {
        let text = c["text"].as_str().unwrap();
        let max_length = c["max_length"].as_u64().map(|n| n as usize);
        tok.set_max_length(max_length).unwrap();
        let enc = match c["pair"].as_str() {
            Some(pair) => tok.encode_pair(text, pair).unwrap(),
            None => tok.encode(text).unwrap(),
        };
        let what = format!("case {i} {:?} pair {:?} max_length {max_length:?}", text, c["pair"]);
        assert_eq!(enc.input_ids, u32s(&c["input_ids"]), "{what}: input_ids");
        assert_eq!(enc.token_type_ids, u32s(&c["token_type_ids"]), "{what}: token_type_ids");
        assert_eq!(enc.attention_mask, u32s(&c["attention_mask"]), "{what}: attention_mask");
        let word_ids: Vec<Option<u32>> =
            c["word_ids"].as_array().unwrap().iter().map(|x| x.as_u64().map(|n| n as u32)).collect();
        assert_eq!(enc.word_ids, word_ids, "{what}: word_ids");
        if let Some(m) = max_length {
            assert!(enc.len() <= m);
            truncated += 1;
        }
    }
    assert!(truncated > 10);
    // Untruncated long input really is longer than the 128 the tokenizer.json stores as its own default.
    tok.set_max_length(None).unwrap();
    let long = "A long sentence that repeats itself. ".repeat(40);
    assert!(tok.encode(&long).unwrap().len() > 200);
}

#[test]
fn minilm_tokenizer_json_matches_transformers() {
    let Some(dir) = minilm_dir() else { return };
    let mut tok = TextTokenizer::from_dir(&dir).unwrap();
    assert!(matches!(tok.source(), TokenizerSource::TokenizerJson(_)));
    assert_eq!(tok.model_max_length, Some(512));
    check_cases(&mut tok, "tokenizer_json");
}

#[test]
fn minilm_vocab_txt_fallback_matches_transformers() {
    let Some(dir) = minilm_dir() else { return };
    let only_vocab = tempfile::tempdir().unwrap();
    for f in ["vocab.txt", "tokenizer_config.json", "special_tokens_map.json"] {
        std::fs::copy(dir.join(f), only_vocab.path().join(f)).unwrap();
    }
    let mut tok = TextTokenizer::from_dir(only_vocab.path()).unwrap();
    assert!(matches!(tok.source(), TokenizerSource::VocabTxt(_)));
    assert_eq!(tok.vocab_size(), 30522);
    check_cases(&mut tok, "vocab_txt");
}

#[test]
fn minilm_batch_encoding_equals_one_by_one() {
    let Some(dir) = minilm_dir() else { return };
    let mut tok = TextTokenizer::from_dir(&dir).unwrap();
    tok.set_max_length(Some(16)).unwrap();
    let texts: Vec<String> =
        (0..64).map(|i| format!("sentence number {i} with some wörds and 漢字 {}", "x".repeat(i))).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batch = tok.encode_batch(&refs).unwrap();
    for (t, e) in refs.iter().zip(&batch) {
        assert_eq!(&tok.encode(t).unwrap(), e);
    }
    let pairs: Vec<(&str, &str)> = refs.iter().zip(refs.iter().rev()).map(|(a, b)| (*a, *b)).collect();
    let batch = tok.encode_pair_batch(&pairs).unwrap();
    for ((a, b), e) in pairs.iter().zip(&batch) {
        assert_eq!(&tok.encode_pair(a, b).unwrap(), e);
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

const TINY_VOCAB: &str = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nworld\n##s\nHello\n,\n";

#[test]
fn vocab_txt_pipeline_on_a_tiny_vocab() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "vocab.txt", TINY_VOCAB);
    let tok = TextTokenizer::from_dir(dir.path()).unwrap();
    // Lowercased by default, WordPiece continuation, unknown word, special tokens around.
    let e = tok.encode("Hello, worlds zzz").unwrap();
    assert_eq!(e.input_ids, vec![2, 5, 9, 6, 7, 1, 3]);
    assert_eq!(e.word_ids, vec![None, Some(0), Some(1), Some(2), Some(2), Some(3), None]);
    let e = tok.encode_pair("hello", "world").unwrap();
    assert_eq!(e.input_ids, vec![2, 5, 3, 6, 3]);
    assert_eq!(e.token_type_ids, vec![0, 0, 0, 1, 1]);
    assert_eq!(e.attention_mask, vec![1; 5]);
    // A special token written in the text stays one token.
    assert_eq!(tok.encode("hello [MASK]").unwrap().input_ids, vec![2, 5, 4, 3]);
}

#[test]
fn do_lower_case_false_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "vocab.txt", TINY_VOCAB);
    write(dir.path(), "tokenizer_config.json", r#"{"do_lower_case": false}"#);
    let tok = TextTokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(tok.encode("Hello hello").unwrap().input_ids, vec![2, 8, 5, 3]);
}

#[test]
fn truncation_longest_first_and_too_short_budget() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "vocab.txt", TINY_VOCAB);
    let mut tok = TextTokenizer::from_dir(dir.path()).unwrap();
    tok.set_max_length(Some(6)).unwrap();
    // 3 special tokens + 3 content tokens: the longer side loses first.
    let e = tok.encode_pair("hello hello hello hello", "world").unwrap();
    assert_eq!(e.input_ids, vec![2, 5, 5, 3, 6, 3]);
    // A budget below the special-token count is an error, never a panic.
    tok.set_max_length(Some(2)).unwrap();
    assert!(matches!(tok.encode_pair("hello", "world"), Err(TokenizerError::Encode { .. })));
    assert!(matches!(tok.encode_pair_batch(&[("hello", "world")]), Err(TokenizerError::Encode { .. })));
    assert_eq!(tok.encode("hello").unwrap().input_ids, vec![2, 3]);
    assert!(matches!(tok.set_max_length(Some(1)), Err(TokenizerError::Encode { .. })));
    assert!(tok.set_max_length(Some(0)).is_err());
    // A refused setting leaves the previous one in place.
    assert_eq!(tok.max_length(), Some(2));
}

#[test]
fn missing_tokenizer_files_are_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = TextTokenizer::from_dir(dir.path()).unwrap_err();
    assert!(matches!(e, TokenizerError::NotFound { .. }));
    let msg = e.to_string();
    assert!(msg.contains("tokenizer.json") && msg.contains("vocab.txt"), "{msg}");
    let e = TextTokenizer::from_tokenizer_json(dir.path().join("tokenizer.json")).unwrap_err();
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
}

#[test]
fn malformed_tokenizer_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "tokenizer.json", "{ not json");
    let e = TextTokenizer::from_dir(dir.path()).unwrap_err();
    assert!(matches!(&e, TokenizerError::Load { path, .. } if path.ends_with("tokenizer.json")), "{e}");

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "vocab.txt", "hello\nworld\n");
    let e = TextTokenizer::from_dir(dir.path()).unwrap_err();
    assert!(e.to_string().contains("[CLS]") && e.to_string().contains("vocab.txt"), "{e}");

    write(dir.path(), "vocab.txt", TINY_VOCAB);
    write(dir.path(), "tokenizer_config.json", r#"{"do_lower_case": "yes"}"#);
    let e = TextTokenizer::from_dir(dir.path()).unwrap_err();
    assert!(e.to_string().contains("do_lower_case") && e.to_string().contains("tokenizer_config.json"), "{e}");

    write(dir.path(), "vocab.txt", "");
    std::fs::remove_file(dir.path().join("tokenizer_config.json")).unwrap();
    assert!(TextTokenizer::from_dir(dir.path()).is_err());
}

/// Inputs found by `scripts/fuzz.sh` on which the `tokenizers` crate panics (a malformed decoder while loading;
/// a template post-processor naming special tokens it does not define, while encoding): each is one error.
#[test]
fn tokenizer_json_that_makes_the_tokenizers_crate_panic_is_an_error() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz");
    let load = TextTokenizer::from_tokenizer_json(fixtures.join("tokenizer_decoder_panic.json"));
    let Err(err) = load else { panic!("a malformed decoder must be refused") };
    let err = err.to_string();
    assert!(err.contains("tokenizer_decoder_panic.json") && err.contains("malformed") && !err.contains('\n'), "{err}");
    for name in ["tokenizer_template_missing_special.json", "tokenizer_template_index.json"] {
        let tok = TextTokenizer::from_tokenizer_json(fixtures.join(name)).expect("loads");
        let Err(err) = tok.encode("Hello, the movie wasn't good! 1990 ##s") else { panic!("{name}: encoded") };
        let err = err.to_string();
        assert!(err.contains("malformed") && !err.contains('\n'), "{name}: {err}");
    }
}

/// Found by `scripts/fuzz.sh`: a byte-level BPE vocabulary giving one id to two tokens made each encode allocate
/// megabytes for a kilobyte file. Such a file is refused at load, naming the id and both tokens.
#[test]
fn a_vocabulary_with_a_duplicate_id_is_refused() {
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/tokenizer/bpe.json");
    let mut json: Value = serde_json::from_str(&std::fs::read_to_string(&seed).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, json.to_string()).unwrap();
    assert!(TextTokenizer::from_tokenizer_json(&path).is_ok(), "the seed itself loads");
    json["model"]["vocab"]["ĠP"] = Value::from(101);
    let other = json["model"]["vocab"].as_object().unwrap().iter().find(|(k, v)| **v == 101 && *k != "ĠP");
    let other = other.map(|(k, _)| k.clone()).expect("some token has id 101");
    std::fs::write(&path, json.to_string()).unwrap();
    let err = TextTokenizer::from_tokenizer_json(&path).unwrap_err().to_string();
    assert!(err.contains("tokenizer.json") && err.contains("id 101") && err.contains(&format!("{other:?}")), "{err}");
    std::fs::write(dir.path().join("tokenizer_config.json"), "{}").unwrap();
    let err = finetune_models::causal_tokenizer::CausalTokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("id 101"), "{err}");
    // An id far beyond the vocabulary (the crate sized tables by it) is refused too.
    json["model"]["vocab"]["ĠP"] = Value::from(65536);
    std::fs::write(&path, json.to_string()).unwrap();
    let err = TextTokenizer::from_tokenizer_json(&path).unwrap_err().to_string();
    assert!(err.contains("id 65536") && err.contains("beyond"), "{err}");
}
