//! Label alignment, padding and samplers with a fake tokenizer: words split into sub-tokens of at most three
//! characters (`"Washington"` → `Was ##hin ##gto ##n`), `[CLS]`=101, `[SEP]`=102, `[PAD]`=0.

use finetune_data::batch::{length_grouped_indices, EpochBatches};
use finetune_data::encode::{align_labels, b_to_i_label, coverage, word_predictions};
use finetune_data::{
    BatchLabels, Collator, Encoded, Example, Label, LabelMap, Result, Rng, Sampler, SamplerState, Sampling, SeqDataset,
    SeqTargets, SeqTask, TokenDatasetEncoded, TokenExample, Tokenize, IGNORE_INDEX,
};

struct Fake;

const CLS: u32 = 101;
const SEP: u32 = 102;

fn pieces(word: &str) -> Vec<u32> {
    let chars: Vec<char> = word.chars().collect();
    chars.chunks(3).map(|c| 1000 + c.iter().map(|&ch| ch as u32).sum::<u32>()).collect()
}

/// Words of a text: whitespace-separated, as (word index, sub-token ids).
fn tokens(words: &[&str]) -> Vec<(u32, u32)> {
    words.iter().enumerate().flat_map(|(w, s)| pieces(s).into_iter().map(move |p| (w as u32, p))).collect()
}

fn build(a: Vec<(u32, u32)>, b: Option<Vec<(u32, u32)>>, max: Option<usize>) -> Encoded {
    let specials = if b.is_some() { 3 } else { 2 };
    let (mut a, mut b) = (a, b);
    let mut truncated = false;
    if let Some(max) = max {
        // longest_first: take a token off the longer sequence until it fits.
        while a.len() + b.as_ref().map_or(0, Vec::len) + specials > max {
            truncated = true;
            match &mut b {
                Some(bb) if bb.len() > a.len() => {
                    bb.pop();
                }
                _ => {
                    a.pop();
                }
            }
        }
    }
    let mut e = Encoded { truncated, ..Encoded::default() };
    let mut push = |id: u32, ty: u32, w: Option<u32>| {
        e.input_ids.push(id);
        e.token_type_ids.push(ty);
        e.attention_mask.push(1);
        e.word_ids.push(w);
    };
    push(CLS, 0, None);
    for (w, p) in a {
        push(p, 0, Some(w));
    }
    push(SEP, 0, None);
    if let Some(b) = b {
        for (w, p) in b {
            push(p, 1, Some(w));
        }
        push(SEP, 1, None);
    }
    e
}

impl Tokenize for Fake {
    fn encode(&self, text: &str, pair: Option<&str>, max: Option<usize>) -> Result<Encoded> {
        let a: Vec<&str> = text.split_whitespace().collect();
        let b = pair.map(|p| tokens(&p.split_whitespace().collect::<Vec<_>>()));
        Ok(build(tokens(&a), b, max))
    }

    fn encode_words(&self, words: &[String], max: Option<usize>) -> Result<Encoded> {
        let w: Vec<&str> = words.iter().map(String::as_str).collect();
        Ok(build(tokens(&w), None, max))
    }

    fn pad_token_id(&self) -> u32 {
        0
    }
}

fn sentence(words: &str, tags: &str) -> TokenExample {
    TokenExample {
        tokens: words.split(' ').map(str::to_string).collect(),
        tags: tags.split(' ').map(str::to_string).collect(),
        line: 1,
    }
}

fn ner_map() -> LabelMap {
    LabelMap::new(["O", "B-loc", "I-loc", "B-per", "I-per", "B-misc"].map(String::from).to_vec()).unwrap()
}

#[test]
fn b_to_i_maps_only_existing_i_labels() {
    // B-misc has no I-misc: it stays itself, as run_ner.py's b_to_i_label.
    assert_eq!(b_to_i_label(&ner_map()), [0, 2, 2, 4, 4, 5]);
}

#[test]
fn first_subtoken_holds_the_label() {
    let m = ner_map();
    // "Washington" = 4 pieces, "is" = 1, "Obamaland" = 3.
    let s = sentence("Washington is Obamaland", "B-loc O B-per");
    let d = TokenDatasetEncoded::encode(&Fake, std::slice::from_ref(&s), &m, false, None, "t").unwrap();
    assert_eq!(d.labels[0], [-100, 1, -100, -100, -100, 0, 3, -100, -100, -100]);
    assert_eq!(d.encodings[0].len(), 10);
    assert_eq!((d.truncated_words, d.truncated_sentences, d.empty_words), (0, 0, 0));

    let d = TokenDatasetEncoded::encode(&Fake, &[s], &m, true, None, "t").unwrap();
    // label_all_tokens: other sub-tokens get the word's label with B- turned into I-.
    assert_eq!(d.labels[0], [-100, 1, 2, 2, 2, 0, 3, 4, 4, -100]);
}

#[test]
fn label_all_tokens_keeps_b_without_i_form() {
    let m = ner_map();
    let d = TokenDatasetEncoded::encode(&Fake, &[sentence("abcdef", "B-misc")], &m, true, None, "t").unwrap();
    assert_eq!(d.labels[0], [-100, 5, 5, -100]);
}

#[test]
fn truncation_counts_lost_words_and_predicts_o_for_them() {
    let m = ner_map();
    let s = sentence("Washington is Obamaland now", "B-loc O B-per O");
    // 2 specials + 8 slots: Washington (4) + is (1) + 3 of Obamaland... max 8 keeps 6 tokens: 4 + 1 + 1.
    let d = TokenDatasetEncoded::encode(&Fake, &[s], &m, false, Some(8), "t").unwrap();
    assert_eq!(d.labels[0], [-100, 1, -100, -100, -100, 0, 3, -100]);
    assert_eq!(d.encodings[0].len(), 8);
    assert!(d.encodings[0].truncated);
    assert_eq!((d.truncated_words, d.truncated_sentences), (1, 1));
    let labelled = d.labels[0].iter().filter(|&&l| l != IGNORE_INDEX).count();
    assert_eq!(labelled, d.word_counts[0] - d.truncated_words);
    // Predictions: first sub-token per word; padding and later sub-tokens are ignored.
    let preds = [0, 1, 4, 4, 4, 0, 3, 0, 0, 0];
    assert_eq!(d.word_tags(0, &preds, &m).unwrap(), ["B-loc", "O", "B-per", "O"]);
    let preds = [0, 2, 1, 1, 1, 3, 4, 2];
    assert_eq!(d.word_tags(0, &preds, &m).unwrap(), ["I-loc", "B-per", "I-per", "O"]);
}

#[test]
fn words_without_tokens_are_empty_not_truncated() {
    // Word 1 made no token (a normalizer removed it); the encoding was not truncated.
    let ids = [None, Some(0), Some(2), None];
    assert_eq!(coverage(&ids, 3, false), finetune_data::encode::Coverage { truncated: 0, empty: 1 });
    assert_eq!(coverage(&ids, 5, true), finetune_data::encode::Coverage { truncated: 2, empty: 1 });
    assert_eq!(word_predictions(&ids, &[9, 7, 8, 9], 3), [Some(7), None, Some(8)]);
    // A word id past the label list is an error, not a panic.
    assert!(align_labels(&[Some(3)], &[0], &[0], false).is_err());
}

#[test]
fn unknown_tag_names_its_line() {
    let mut s = sentence("a b", "O B-xyz");
    s.line = 40;
    let e = TokenDatasetEncoded::encode(&Fake, &[s], &ner_map(), false, None, "f.conll").unwrap_err();
    assert_eq!(e.to_string(), "f.conll:41: unknown label \"B-xyz\" (not in the label map)");
}

fn ex(text: &str, pair: Option<&str>, label: Label) -> Example {
    Example { text: text.into(), text_pair: pair.map(str::to_string), label: Some(label), line: 2 }
}

#[test]
fn sequence_targets_and_pair_truncation() {
    let m = LabelMap::new(vec!["neg".into(), "pos".into()]).unwrap();
    let xs = vec![
        ex("good film", None, Label::Single("pos".into())),
        ex("abcdefghijklmno", Some("xyz"), Label::Single("neg".into())),
    ];
    let d = SeqDataset::encode(&Fake, &xs, Some(&m), SeqTask::SingleLabel, Some(6), "t").unwrap();
    assert_eq!(d.targets, SeqTargets::Class(vec![1, 0]));
    assert_eq!(d.truncated, 1);
    // Pair: a has 5 pieces, b 1; longest_first cuts a down to 2 so that 2 + 1 + 3 specials = 6.
    assert_eq!(d.encodings[1].token_type_ids, [0, 0, 0, 0, 1, 1]);
    assert_eq!(d.encodings[1].word_ids, [None, Some(0), Some(0), None, Some(0), None]);

    let multi =
        vec![ex("a", None, Label::Multi(vec!["pos".into(), "neg".into()])), ex("b", None, Label::Single("pos".into()))];
    let d = SeqDataset::encode(&Fake, &multi, Some(&m), SeqTask::MultiLabel, None, "t").unwrap();
    assert_eq!(d.targets, SeqTargets::MultiHot { num_labels: 2, values: vec![1.0, 1.0, 0.0, 1.0] });

    let reg = vec![ex("a", None, Label::Single("0.25".into())), ex("b", None, Label::Single(" 3 ".into()))];
    let d = SeqDataset::encode(&Fake, &reg, None, SeqTask::Regression, None, "t").unwrap();
    assert_eq!(d.targets, SeqTargets::Regression(vec![0.25, 3.0]));
    let bad = vec![ex("a", None, Label::Single("nan".into()))];
    let e = SeqDataset::encode(&Fake, &bad, None, SeqTask::Regression, None, "r.csv").unwrap_err();
    assert!(e.to_string().starts_with("r.csv:2: regression label \"nan\""), "{e}");
    assert!(SeqDataset::encode(&Fake, &xs, None, SeqTask::SingleLabel, None, "t").is_err());
}

#[test]
fn padding_to_the_longest_in_the_batch() {
    let m = LabelMap::new(vec!["neg".into(), "pos".into()]).unwrap();
    let xs = vec![
        ex("good film", None, Label::Single("pos".into())),
        ex("abcdefghijklmno", Some("xyz"), Label::Single("neg".into())),
        ex("x", None, Label::Single("neg".into())),
    ];
    let d = SeqDataset::encode(&Fake, &xs, Some(&m), SeqTask::SingleLabel, None, "t").unwrap();
    let c = Collator { pad_token_id: 7, pad_to_multiple_of: None };
    let b = c.seq(&d, &[2, 0]).unwrap();
    // "good film" = goo ##d fil ##m: 6 tokens with [CLS] and [SEP].
    assert_eq!((b.batch_size, b.seq_len), (2, 6));
    let x = 1000 + 'x' as u32;
    assert_eq!(&b.input_ids[..6], [CLS, x, SEP, 7, 7, 7]);
    assert_eq!(&b.attention_mask[..], [1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1]);
    assert_eq!(&b.token_type_ids[..], [0; 12]);
    assert_eq!(b.labels, BatchLabels::Class(vec![0, 1]));
    assert_eq!(b.indices, [2, 0]);

    // Refilling in place; pair row keeps its segment ids, pad_to_multiple_of rounds the length up.
    let c = Collator { pad_token_id: 0, pad_to_multiple_of: Some(8) };
    let mut b = b;
    c.seq_into(&d, &[1, 2], &mut b).unwrap();
    assert_eq!((b.batch_size, b.seq_len), (2, 16));
    assert_eq!(&b.token_type_ids[..16], [0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(b.attention_mask.iter().sum::<u32>(), 9 + 3);
    assert_eq!(b.input_ids.len(), 32);
    assert!(c.seq(&d, &[3]).is_err());
}

#[test]
fn token_labels_pad_with_ignore_index() {
    let m = ner_map();
    let s = [sentence("Washington is", "B-loc O"), sentence("a", "B-per")];
    let d = TokenDatasetEncoded::encode(&Fake, &s, &m, false, None, "t").unwrap();
    let b = Collator::new(0).tokens(&d, &[1, 0]).unwrap();
    assert_eq!((b.batch_size, b.seq_len), (2, 7));
    assert_eq!(
        b.labels,
        BatchLabels::Tokens(vec![-100, 3, -100, -100, -100, -100, -100, -100, 1, -100, -100, -100, 0, -100])
    );
    assert_eq!(&b.input_ids[..7], [CLS, 1000 + 'a' as u32, SEP, 0, 0, 0, 0]);
}

fn collect(mut e: EpochBatches) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    while let Some(b) = e.next_batch() {
        out.push(b.to_vec());
    }
    out
}

#[test]
fn random_sampler_is_seeded_per_epoch_and_resumable() {
    let s = Sampler::new(103, 10, Sampling::Random, 42, false).unwrap();
    assert_eq!(s.num_batches(), 11);
    let e0 = collect(s.epoch(0));
    assert_eq!(e0, collect(s.epoch(0)));
    assert_ne!(e0, collect(s.epoch(1)));
    assert_ne!(e0, collect(Sampler::new(103, 10, Sampling::Random, 43, false).unwrap().epoch(0)));
    let mut all: Vec<usize> = e0.concat();
    all.sort_unstable();
    assert_eq!(all, (0..103).collect::<Vec<_>>());
    assert_eq!(e0.last().map(Vec::len), Some(3));
    // Pinned order: the same on every platform (SplitMix64, Lemire's bounded draw, Fisher-Yates; epoch e uses
    // seed + e). Values from an independent Python implementation of the same three steps.
    assert_eq!(e0[0], [72, 8, 26, 41, 65, 75, 56, 69, 53, 15]);
    assert_eq!(s.order(1)[..10], [37, 38, 55, 44, 13, 85, 25, 94, 2, 73]);
    let mut rng = Rng::new(42);
    let mut expect: Vec<usize> = (0..103).collect();
    rng.shuffle(&mut expect);
    assert_eq!(s.order(0), expect);

    // Stop after 4 batches, save the state, resume.
    let mut it = s.epoch(1);
    for _ in 0..4 {
        it.next_batch();
    }
    let state = it.state();
    assert_eq!(state, SamplerState { epoch: 1, position: 4 });
    let json = serde_json::to_string(&state).unwrap();
    let back: SamplerState = serde_json::from_str(&json).unwrap();
    assert_eq!(collect(s.resume(back)), collect(s.epoch(1))[4..]);
    assert_eq!(it.remaining(), 7);
    assert_eq!(it.next_epoch(), SamplerState { epoch: 2, position: 0 });
}

#[test]
fn drop_last_and_sequential() {
    let s = Sampler::new(103, 10, Sampling::Random, 1, true).unwrap();
    let b = collect(s.epoch(0));
    assert_eq!(b.len(), 10);
    assert!(b.iter().all(|x| x.len() == 10));
    let s = Sampler::sequential(5, 2, false).unwrap();
    assert_eq!(collect(s.epoch(3)), [vec![0, 1], vec![2, 3], vec![4]]);
    assert!(Sampler::sequential(5, 0, false).is_err());
    assert!(Sampler::new(3, 1, Sampling::GroupByLength { lengths: vec![1], group_batch_size: 1 }, 0, false).is_err());
}

#[test]
fn group_by_length_orders_megabatches_longest_first() {
    // Lengths with ties; 1000 examples, batch 4 → megabatches of min(1000 / 16, 50) = 50 batches = 200.
    let lengths: Vec<usize> = (0..1000).map(|i| 3 + (i * 7919 % 509) % 120).collect();
    let max = *lengths.iter().max().unwrap();
    let order = length_grouped_indices(&lengths, 4, &mut Rng::new(7));
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
    assert_eq!(lengths[order[0]], max);
    // Same permutation as the random sampler draws, cut into megabatches of 200.
    let mut perm: Vec<usize> = (0..1000).collect();
    Rng::new(7).shuffle(&mut perm);
    let mut best = 0;
    for (k, mb) in order.chunks(200).enumerate() {
        let mut set_a = mb.to_vec();
        let mut set_b = perm[k * 200..(k + 1) * 200].to_vec();
        if k == 0 {
            continue; // its first element may have been swapped with another megabatch's
        }
        set_a.sort_unstable();
        set_b.sort_unstable();
        if set_a != set_b {
            best = k;
        }
    }
    // Every megabatch but the first and the one that gave up its maximum is a sorted chunk of the permutation.
    for (k, mb) in order.chunks(200).enumerate() {
        let ls: Vec<usize> = mb.iter().map(|&i| lengths[i]).collect();
        if k != 0 && k != best {
            assert!(ls.windows(2).all(|w| w[0] >= w[1]), "megabatch {k} not sorted");
            // Stable: equal lengths keep their permutation order.
            let pos = |i: usize| perm.iter().position(|&p| p == i).unwrap();
            for w in mb.windows(2) {
                if lengths[w[0]] == lengths[w[1]] {
                    assert!(pos(w[0]) < pos(w[1]));
                }
            }
        } else {
            assert!(ls[1..].windows(2).all(|w| w[0] >= w[1]));
        }
    }
    // Small datasets: megabatch of one batch at least.
    let tiny = length_grouped_indices(&[5, 9, 1], 4, &mut Rng::new(0));
    assert_eq!(tiny.iter().map(|&i| [5, 9, 1][i]).collect::<Vec<_>>(), [9, 5, 1]);
    assert!(length_grouped_indices(&[], 4, &mut Rng::new(0)).is_empty());

    // Through the sampler: batches of similar lengths, deterministic per epoch.
    let s = Sampler::new(1000, 4, Sampling::GroupByLength { lengths: lengths.clone(), group_batch_size: 4 }, 7, false)
        .unwrap();
    assert_eq!(s.order(0), order);
    assert_ne!(s.order(1), order);
    assert_eq!(collect(s.epoch(0))[0].iter().map(|&i| lengths[i]).max(), Some(max));
}

#[test]
fn group_by_length_hand_checked() {
    // Python transformers' get_length_grouped_indices with the permutation replaced by ours: megabatch size
    // = max(1, min(10 // 8, 50)) * 2 = 2.
    let lengths = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    let mut perm: Vec<usize> = (0..10).collect();
    Rng::new(3).shuffle(&mut perm);
    let order = length_grouped_indices(&lengths, 2, &mut Rng::new(3));
    let mut expect: Vec<Vec<usize>> = perm
        .chunks(2)
        .map(|c| {
            let mut c = c.to_vec();
            c.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]));
            c
        })
        .collect();
    let k = expect.iter().position(|c| c[0] == 9).unwrap();
    let first = expect[0][0];
    expect[0][0] = 9;
    expect[k][0] = first;
    assert_eq!(order, expect.concat());
}

#[test]
fn group_by_length_matches_transformers() {
    // transformers' get_length_grouped_indices on the same permutations (scripts/reference/gen_length_grouped.py).
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/length_grouped.json");
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let list = |v: &serde_json::Value| -> Vec<usize> {
        v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
    };
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 12);
    for c in cases {
        let (lengths, perm, expected) = (list(&c["lengths"]), list(&c["permutation"]), list(&c["expected"]));
        let bs = c["batch_size"].as_u64().unwrap() as usize;
        let ours = finetune_data::batch::length_grouped_order(perm.clone(), &lengths, bs);
        assert_eq!(ours, expected, "{}", c["id"]);
        assert!(perm.len() <= 8 || perm != expected, "{}: fixture did not group", c["id"]);
    }
}

#[test]
fn malformed_datasets_are_errors_not_panics() {
    let m = LabelMap::new(vec!["neg".into(), "pos".into()]).unwrap();
    let xs = vec![ex("a b", None, Label::Single("pos".into()))];
    let mut d = SeqDataset::encode(&Fake, &xs, Some(&m), SeqTask::SingleLabel, None, "t").unwrap();
    d.targets = SeqTargets::Class(vec![]);
    assert!(Collator::new(0).seq(&d, &[0]).is_err());
    let mut t = TokenDatasetEncoded::encode(&Fake, &[sentence("a b", "O O")], &ner_map(), false, None, "t").unwrap();
    t.labels[0].push(0);
    assert!(Collator::new(0).tokens(&t, &[0]).is_err());
    assert!(t.word_tags(1, &[], &ner_map()).is_err());
    assert!(t.word_tags(0, &[0, 99, 0, 0, 0], &ner_map()).is_err());
}
