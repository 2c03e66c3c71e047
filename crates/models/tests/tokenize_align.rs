//! `TextTokenizer` through the data crate's `Tokenize`: label alignment on a tiny WordPiece vocabulary, the
//! reference fixture of `scripts/reference/gen_alignment.py` (transformers + run_ner.py's alignment) on the real
//! MiniLM tokenizer, and alignment invariants over WNUT-16. Tests needing `assets/` print SKIPPED when absent.

use std::io::Write;
use std::path::{Path, PathBuf};

use finetune_data::{
    read_tokens, Collator, LabelMap, ReadOptions, Sampler, Sampling, TokenDatasetEncoded, TokenExample, Tokenize,
    IGNORE_INDEX,
};
use finetune_models::tokenizer::TextTokenizer;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn require(p: PathBuf) -> Option<PathBuf> {
    if p.exists() {
        Some(p)
    } else {
        // Straight to stderr: the harness hides eprintln! of passing tests.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: {} is absent; run scripts/fetch.sh and scripts/fetch-datasets.sh",
            p.display()
        );
        None
    }
}

fn tiny_tokenizer(dir: &Path) -> TextTokenizer {
    let vocab =
        "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nun\n##aff\n##able\nnew\nyork\nis\nbig\n##gest\n.\nz\n##ur\n##ich\n";
    std::fs::write(dir.join("vocab.txt"), vocab).unwrap();
    TextTokenizer::from_dir(dir).unwrap()
}

fn sentence(words: &[&str], tags: &[&str]) -> TokenExample {
    TokenExample {
        tokens: words.iter().map(|s| s.to_string()).collect(),
        tags: tags.iter().map(|s| s.to_string()).collect(),
        line: 1,
    }
}

#[test]
fn tiny_vocab_alignment() {
    let dir = tempfile::tempdir().unwrap();
    let t = tiny_tokenizer(dir.path());
    assert_eq!(Tokenize::pad_token_id(&t), 0);
    let m = LabelMap::new(["O", "B-loc", "I-loc"].map(String::from).to_vec()).unwrap();
    // "Zürich" → z ##ur ##ich (lower-cased, accent stripped), "unaffable" → un ##aff ##able, "qq" → [UNK].
    let s = sentence(
        &["Zürich", "is", "unaffable", "qq", "New", "York", "."],
        &["B-loc", "O", "O", "O", "B-loc", "I-loc", "O"],
    );
    let d = TokenDatasetEncoded::encode(&t, std::slice::from_ref(&s), &m, false, None, "t").unwrap();
    assert_eq!(d.encodings[0].input_ids, [2, 14, 15, 16, 10, 5, 6, 7, 1, 8, 9, 13, 3]);
    assert_eq!(d.labels[0], [-100, 1, -100, -100, 0, 0, -100, -100, 0, 1, 2, 0, -100]);
    let d2 = TokenDatasetEncoded::encode(&t, std::slice::from_ref(&s), &m, true, None, "t").unwrap();
    assert_eq!(d2.labels[0], [-100, 1, 2, 2, 0, 0, 0, 0, 0, 1, 2, 0, -100]);

    // Truncation to 6: [CLS] z ##ur ##ich is [SEP]; five words lost.
    let d = TokenDatasetEncoded::encode(&t, &[s], &m, false, Some(6), "t").unwrap();
    assert_eq!(d.labels[0], [-100, 1, -100, -100, 0, -100]);
    assert!(d.encodings[0].truncated);
    assert_eq!((d.truncated_words, d.truncated_sentences, d.empty_words), (5, 1, 0));
    let tags = d.word_tags(0, &[0, 1, 0, 0, 0, 0], &m).unwrap();
    assert_eq!(tags, ["B-loc", "O", "O", "O", "O", "O", "O"]);

    // Text pairs: segment ids and longest_first truncation; a budget below the specials is an error.
    let e = Tokenize::encode(&t, "new york is big", Some("biggest"), Some(6)).unwrap();
    assert_eq!(e.input_ids, [2, 8, 9, 3, 11, 3]);
    assert_eq!(e.token_type_ids, [0, 0, 0, 0, 1, 1]);
    assert!(e.truncated);
    let e = Tokenize::encode(&t, "new york", None, Some(6)).unwrap();
    assert!(!e.truncated);
    assert!(Tokenize::encode(&t, "new", Some("york"), Some(2)).is_err());
    // The per-call max length does not change the tokenizer's own setting.
    assert_eq!(t.max_length(), None);
}

fn fixture() -> Option<(TextTokenizer, Value)> {
    let model = require(root().join("assets/all-MiniLM-L6-v2"))?;
    let t = TextTokenizer::from_dir(model).unwrap();
    let text = std::fs::read_to_string(root().join("crates/data/tests/fixtures/alignment.json")).unwrap();
    Some((t, serde_json::from_str(&text).unwrap()))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

fn check_alignment_fixture(t: &TextTokenizer, doc: &Value) {
    let m = LabelMap::new(strings(&doc["label_list"])).unwrap();
    let cases = doc["ner"].as_array().unwrap();
    assert!(cases.len() >= 24);
    for c in cases {
        let id = c["id"].as_str().unwrap();
        let s = TokenExample { tokens: strings(&c["words"]), tags: strings(&c["tags"]), line: 1 };
        let max = c["max_length"].as_u64().map(|m| m as usize);
        let all = c["label_all_tokens"].as_bool().unwrap();
        let d = TokenDatasetEncoded::encode(t, std::slice::from_ref(&s), &m, all, max, "fixture").unwrap();
        let e = &d.encodings[0];
        let ids: Vec<i64> = e.input_ids.iter().map(|&x| x as i64).collect();
        assert_eq!(ids, ints(&c["input_ids"]), "{id}: input_ids");
        let wids: Vec<Option<i64>> = c["word_ids"].as_array().unwrap().iter().map(Value::as_i64).collect();
        let ours: Vec<Option<i64>> = e.word_ids.iter().map(|w| w.map(i64::from)).collect();
        assert_eq!(ours, wids, "{id}: word_ids");
        assert_eq!(d.labels[0], ints(&c["labels"]), "{id}: labels");
        // Not truncated exactly when the reference without truncation is longer than the limit.
        let full = cases
            .iter()
            .find(|o| o["words"] == c["words"] && o["max_length"].is_null())
            .map(|o| o["input_ids"].as_array().unwrap().len())
            .unwrap();
        assert_eq!(e.truncated, max.is_some_and(|m| full > m), "{id}: truncated flag");
    }
    let pad = doc["pad_token_id"].as_u64().unwrap() as u32;
    assert_eq!(Tokenize::pad_token_id(t), pad);
    for c in doc["seq"].as_array().unwrap() {
        let id = c["id"].as_str().unwrap();
        let max = c["max_length"].as_u64().map(|m| m as usize);
        let e = Tokenize::encode(t, c["text"].as_str().unwrap(), c["pair"].as_str(), max).unwrap();
        let to64 = |v: &[u32]| v.iter().map(|&x| x as i64).collect::<Vec<_>>();
        assert_eq!(to64(&e.input_ids), ints(&c["input_ids"]), "{id}: input_ids");
        assert_eq!(to64(&e.token_type_ids), ints(&c["token_type_ids"]), "{id}: token_type_ids");
        assert_eq!(to64(&e.attention_mask), ints(&c["attention_mask"]), "{id}: attention_mask");
    }
}

#[test]
fn matches_run_ner_alignment_on_minilm_tokenizer_json() {
    let Some((t, doc)) = fixture() else { return };
    assert!(matches!(t.source(), finetune_models::tokenizer::TokenizerSource::TokenizerJson(_)));
    check_alignment_fixture(&t, &doc);
}

#[test]
fn matches_run_ner_alignment_on_minilm_vocab_txt() {
    let Some((_, doc)) = fixture() else { return };
    let dir = root().join("assets/all-MiniLM-L6-v2");
    let t = TextTokenizer::from_vocab_txt(dir.join("vocab.txt"), Some(&dir.join("tokenizer_config.json"))).unwrap();
    check_alignment_fixture(&t, &doc);
}

#[test]
fn wnut16_alignment_invariants() {
    let (Some(model), Some(data)) =
        (require(root().join("assets/all-MiniLM-L6-v2")), require(root().join("assets/data/ner/wnut16.conll")))
    else {
        return;
    };
    let t = TextTokenizer::from_dir(model).unwrap();
    let ds = read_tokens(&data, &ReadOptions::default()).unwrap();
    let m = LabelMap::from_tags(&ds.sentences).unwrap();
    for (max, all) in [(None, false), (Some(32), false), (Some(32), true)] {
        let d = TokenDatasetEncoded::encode(&t, &ds.sentences, &m, all, max, &ds.path).unwrap();
        assert_eq!(d.len(), 2_394);
        let mut first_labels = 0;
        for (i, s) in ds.sentences.iter().enumerate() {
            let e = &d.encodings[i];
            let l = &d.labels[i];
            assert_eq!(l.len(), e.len());
            if let Some(max) = max {
                assert!(e.len() <= max);
            }
            let mut prev = None;
            for (k, w) in e.word_ids.iter().enumerate() {
                match w {
                    None => assert_eq!(l[k], IGNORE_INDEX),
                    Some(w) if Some(*w) != prev => {
                        // The first sub-token of every word holds the word's own label.
                        assert_eq!(l[k], m.id(&s.tags[*w as usize]).unwrap() as i64);
                        first_labels += 1;
                    }
                    Some(_) => assert!(all || l[k] == IGNORE_INDEX),
                }
                prev = *w;
            }
            if !all {
                let c = finetune_data::encode::coverage(&e.word_ids, s.tokens.len(), e.truncated);
                let labelled = l.iter().filter(|&&x| x != IGNORE_INDEX).count();
                assert_eq!(labelled, s.tokens.len() - c.truncated - c.empty, "sentence {i}");
            }
            // Perfect token predictions (the labels themselves) give back the words' tags, "O" where cut off.
            let preds: Vec<usize> =
                l.iter().zip(&e.word_ids).map(|(&x, w)| if x >= 0 && w.is_some() { x as usize } else { 0 }).collect();
            let tags = d.word_tags(i, &preds, &m).unwrap();
            let c = finetune_data::encode::coverage(&e.word_ids, s.tokens.len(), e.truncated);
            let kept = s.tokens.len() - c.truncated;
            assert!(tags[..kept].iter().zip(&s.tags).filter(|(a, b)| a != b).count() <= c.empty);
            assert!(tags[kept..].iter().all(|x| x == "O"));
        }
        let words: usize = ds.sentences.iter().map(|s| s.tokens.len()).sum();
        assert_eq!(first_labels, words - d.truncated_words - d.empty_words);
        let _ = writeln!(
            std::io::stderr(),
            "wnut16 max_seq_length={max:?} label_all_tokens={all}: {} of {} sentences truncated, {} of {words} words \
             truncated, {} words without tokens",
            d.truncated_sentences,
            d.len(),
            d.truncated_words,
            d.empty_words
        );
        if max.is_none() {
            assert_eq!((d.truncated_sentences, d.truncated_words), (0, 0));
        } else {
            assert!(d.truncated_sentences > 0);
        }
        // Batches of the real data: padded rows, labels -100 on padding, group_by_length puts the longest first.
        let lengths = d.lengths();
        let s = Sampler::new(
            d.len(),
            16,
            Sampling::GroupByLength { lengths: lengths.clone(), group_batch_size: 16 },
            42,
            false,
        )
        .unwrap();
        let mut it = s.epoch(0);
        let first = it.next_batch().unwrap().to_vec();
        let b = Collator::new(Tokenize::pad_token_id(&t)).tokens(&d, &first).unwrap();
        assert_eq!(b.seq_len, *lengths.iter().max().unwrap());
        let finetune_data::BatchLabels::Tokens(labels) = &b.labels else { panic!("token labels expected") };
        for (k, &mask) in b.attention_mask.iter().enumerate() {
            if mask == 0 {
                assert_eq!((b.input_ids[k], labels[k]), (0, IGNORE_INDEX));
            }
        }
    }
}
