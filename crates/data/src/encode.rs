//! The tokenizer interface the data crate needs, and encoded datasets built through it, as the Hugging Face
//! example scripts build them: `run_glue.py`'s `preprocess_function` (text or text pair, `truncation=True`,
//! `max_length=max_seq_length`, no padding) and `run_ner.py`'s `tokenize_and_align_labels`
//! (`is_split_into_words=True`, word labels aligned to sub-tokens).
//!
//! The data crate does not depend on any tokenizer implementation: `finetune-models` implements [`Tokenize`]
//! for its `TextTokenizer`, and tests implement it with small fakes.

use crate::error::{DataError, Result};
use crate::example::{Example, Label, TokenExample};
use crate::labels::LabelMap;

/// The label id that the loss ignores (PyTorch `CrossEntropyLoss(ignore_index=-100)`): special tokens, padding,
/// and sub-tokens after a word's first.
pub const IGNORE_INDEX: i64 = -100;

/// One encoded text (or text pair) or pre-split sentence, unpadded, special tokens included.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Encoded {
    pub input_ids: Vec<u32>,
    /// Segment ids: 0 for the first text and its special tokens, 1 for the second.
    pub token_type_ids: Vec<u32>,
    pub attention_mask: Vec<u32>,
    /// Per token, the index of the word it came from (for pre-split input: the index into the word list);
    /// None for special tokens.
    pub word_ids: Vec<Option<u32>>,
    /// Per token, its (start, end) offsets in its text (`offset_mapping`); (0, 0) for special tokens. May be
    /// empty where nothing reads it.
    pub offsets: Vec<(u32, u32)>,
    /// True when truncation to `max_seq_length` cut tokens off.
    pub truncated: bool,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}

/// A tokenizer as the data pipeline uses it. `max_seq_length` counts special tokens; None means no truncation.
/// Pairs truncate `longest_first` (the longer text loses a token at a time), as `transformers` does.
pub trait Tokenize: Sync {
    /// Encodes a text, or a text pair when `pair` is given, with special tokens.
    fn encode(&self, text: &str, pair: Option<&str>, max_seq_length: Option<usize>) -> Result<Encoded>;

    /// Encodes a sentence already split into words (`is_split_into_words=True`): each word is tokenized on its
    /// own and `word_ids` index into `words`.
    fn encode_words(&self, words: &[String], max_seq_length: Option<usize>) -> Result<Encoded>;

    /// The id that padding uses (`tokenizer.pad_token_id`).
    fn pad_token_id(&self) -> u32;

    /// Encodes many texts or pairs; implementations may run in parallel. The result is in input order.
    fn encode_batch(&self, inputs: &[(&str, Option<&str>)], max_seq_length: Option<usize>) -> Result<Vec<Encoded>> {
        inputs.iter().map(|(a, b)| self.encode(a, *b, max_seq_length)).collect()
    }

    /// Encodes many pre-split sentences; implementations may run in parallel. The result is in input order.
    fn encode_words_batch(&self, sentences: &[&[String]], max_seq_length: Option<usize>) -> Result<Vec<Encoded>> {
        sentences.iter().map(|w| self.encode_words(w, max_seq_length)).collect()
    }
}

/// Targets of a sequence-classification dataset, one per example.
#[derive(Debug, Clone, PartialEq)]
pub enum SeqTargets {
    /// No labels (prediction on unlabelled data).
    None,
    /// Single-label class ids (`CrossEntropyLoss` targets).
    Class(Vec<i64>),
    /// Multi-label multi-hot rows, `num_labels` floats per example, row-major (`BCEWithLogitsLoss` targets).
    MultiHot { num_labels: usize, values: Vec<f32> },
    /// Regression targets (`MSELoss`), as `run_glue.py` does for a float label column (`num_labels=1`).
    Regression(Vec<f32>),
}

/// What kind of targets to build from the examples' labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqTask {
    /// One class per example, through the label map.
    SingleLabel,
    /// A set of classes per example (a single label counts as a set of one), through the label map.
    MultiLabel,
    /// A number per example, parsed from the label text.
    Regression,
    /// Ignore labels.
    Unlabelled,
}

/// An encoded sequence-classification dataset: one encoding and one target per example, in example order.
#[derive(Debug, Clone, PartialEq)]
pub struct SeqDataset {
    pub encodings: Vec<Encoded>,
    pub targets: SeqTargets,
    /// How many examples truncation shortened.
    pub truncated: usize,
}

impl SeqDataset {
    /// Tokenizes examples and encodes their labels. `path` names the file in label errors (`file:line`).
    pub fn encode(
        tokenizer: &impl Tokenize,
        examples: &[Example],
        labels: Option<&LabelMap>,
        task: SeqTask,
        max_seq_length: Option<usize>,
        path: &str,
    ) -> Result<Self> {
        let targets = seq_targets(examples, labels, task, path)?;
        let inputs: Vec<(&str, Option<&str>)> =
            examples.iter().map(|e| (e.text.as_str(), e.text_pair.as_deref())).collect();
        let encodings = tokenizer.encode_batch(&inputs, max_seq_length)?;
        if encodings.len() != examples.len() {
            return Err(DataError::Invalid(format!(
                "tokenizer returned {} encodings for {} examples",
                encodings.len(),
                examples.len()
            )));
        }
        let truncated = encodings.iter().filter(|e| e.truncated).count();
        Ok(SeqDataset { encodings, targets, truncated })
    }

    pub fn len(&self) -> usize {
        self.encodings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.encodings.is_empty()
    }

    /// Token counts per example (what `group_by_length` sorts by).
    pub fn lengths(&self) -> Vec<usize> {
        self.encodings.iter().map(Encoded::len).collect()
    }
}

fn seq_targets(examples: &[Example], labels: Option<&LabelMap>, task: SeqTask, path: &str) -> Result<SeqTargets> {
    let missing = |e: &Example| DataError::record(path, e.line, "example has no label");
    let need_map = || DataError::Invalid("classification targets need a label map".into());
    Ok(match task {
        SeqTask::Unlabelled => SeqTargets::None,
        SeqTask::SingleLabel => {
            let map = labels.ok_or_else(need_map)?;
            let ids = map.encode_examples(examples, path)?;
            SeqTargets::Class(ids.into_iter().map(|i| i as i64).collect())
        }
        SeqTask::MultiLabel => {
            let map = labels.ok_or_else(need_map)?;
            let mut values = Vec::with_capacity(examples.len() * map.len());
            for e in examples {
                let l = e.label.as_ref().ok_or_else(|| missing(e))?;
                values.extend(map.multi_hot(l, path, e.line)?);
            }
            SeqTargets::MultiHot { num_labels: map.len(), values }
        }
        SeqTask::Regression => {
            let mut values = Vec::with_capacity(examples.len());
            for e in examples {
                let v = match &e.label {
                    Some(Label::Single(s)) => {
                        s.trim().parse::<f32>().ok().filter(|v| v.is_finite()).ok_or_else(|| {
                            DataError::record(path, e.line, format!("regression label {s:?} is not a finite number"))
                        })?
                    }
                    Some(Label::Multi(_)) => {
                        return Err(DataError::record(path, e.line, "a list of labels where a number was expected"))
                    }
                    None => return Err(missing(e)),
                };
                values.push(v);
            }
            SeqTargets::Regression(values)
        }
    })
}

/// `run_ner.py`'s `b_to_i_label`: for each label id, the id of its `I-` form when the label starts with `B-`
/// and the `I-` form exists (Python's `label.replace("B-", "I-")`, every occurrence), else itself.
pub fn b_to_i_label(labels: &LabelMap) -> Vec<usize> {
    labels
        .names()
        .iter()
        .enumerate()
        .map(|(i, n)| if n.starts_with("B-") { labels.id(&n.replace("B-", "I-")).unwrap_or(i) } else { i })
        .collect()
}

/// `run_ner.py`'s `tokenize_and_align_labels` for one sentence: the word's label on the first sub-token of each
/// word, -100 on special tokens, and on the other sub-tokens -100 (or, with `label_all_tokens`, the word's label
/// with `B-` turned into `I-`). `word_labels[w]` is word `w`'s label id.
pub fn align_labels(
    word_ids: &[Option<u32>],
    word_labels: &[usize],
    b_to_i: &[usize],
    label_all_tokens: bool,
) -> Result<Vec<i64>> {
    let mut out = Vec::with_capacity(word_ids.len());
    let mut previous: Option<u32> = None;
    for &w in word_ids {
        let id = match w {
            None => IGNORE_INDEX,
            Some(w) => {
                let label = *word_labels.get(w as usize).ok_or_else(|| {
                    DataError::Invalid(format!("token of word {w} but the sentence has {} words", word_labels.len()))
                })?;
                if Some(w) != previous {
                    label as i64
                } else if label_all_tokens {
                    b_to_i.get(label).copied().unwrap_or(label) as i64
                } else {
                    IGNORE_INDEX
                }
            }
        };
        out.push(id);
        previous = w;
    }
    Ok(out)
}

/// An encoded token-classification dataset with sub-token labels aligned as `run_ner.py` aligns them.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenDatasetEncoded {
    pub encodings: Vec<Encoded>,
    /// Per sentence, one label id per token (-100 where the loss ignores the token).
    pub labels: Vec<Vec<i64>>,
    /// Per sentence, its number of words.
    pub word_counts: Vec<usize>,
    /// How many sentences truncation shortened.
    pub truncated_sentences: usize,
    /// Words that lost every sub-token to truncation; they get no label and are predicted "O".
    pub truncated_words: usize,
    /// Words that produced no token at all (e.g. only characters the normalizer removes); predicted "O".
    pub empty_words: usize,
}

impl TokenDatasetEncoded {
    /// Tokenizes pre-split sentences and aligns their tags (`label_all_tokens` as `run_ner.py`'s flag). Unknown
    /// tags are errors naming their own line.
    pub fn encode(
        tokenizer: &impl Tokenize,
        sentences: &[TokenExample],
        labels: &LabelMap,
        label_all_tokens: bool,
        max_seq_length: Option<usize>,
        path: &str,
    ) -> Result<Self> {
        let b_to_i = b_to_i_label(labels);
        let words: Vec<&[String]> = sentences.iter().map(|s| s.tokens.as_slice()).collect();
        let encodings = tokenizer.encode_words_batch(&words, max_seq_length)?;
        if encodings.len() != sentences.len() {
            return Err(DataError::Invalid(format!(
                "tokenizer returned {} encodings for {} sentences",
                encodings.len(),
                sentences.len()
            )));
        }
        let mut out = TokenDatasetEncoded {
            labels: Vec::with_capacity(sentences.len()),
            word_counts: Vec::with_capacity(sentences.len()),
            encodings: Vec::new(),
            truncated_sentences: 0,
            truncated_words: 0,
            empty_words: 0,
        };
        let mut word_labels = Vec::new();
        for (s, e) in sentences.iter().zip(&encodings) {
            if s.tags.len() != s.tokens.len() {
                return Err(DataError::record(
                    path,
                    s.line,
                    format!("{} tokens but {} tags", s.tokens.len(), s.tags.len()),
                ));
            }
            word_labels.clear();
            for (i, t) in s.tags.iter().enumerate() {
                word_labels.push(labels.encode(t, path, s.line + i as u64)?);
            }
            out.labels.push(align_labels(&e.word_ids, &word_labels, &b_to_i, label_all_tokens)?);
            out.word_counts.push(s.tokens.len());
            let c = coverage(&e.word_ids, s.tokens.len(), e.truncated);
            out.truncated_words += c.truncated;
            out.empty_words += c.empty;
            out.truncated_sentences += usize::from(e.truncated);
        }
        out.encodings = encodings;
        Ok(out)
    }

    pub fn len(&self) -> usize {
        self.encodings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.encodings.is_empty()
    }

    /// Token counts per sentence (what `group_by_length` sorts by).
    pub fn lengths(&self) -> Vec<usize> {
        self.encodings.iter().map(Encoded::len).collect()
    }

    /// Word-level tags of sentence `i` from its token predictions (`token_preds[t]` = predicted label id of
    /// token `t`; a padded row is fine, only the sentence's own tokens are read). See [`word_predictions`].
    pub fn word_tags(&self, i: usize, token_preds: &[usize], labels: &LabelMap) -> Result<Vec<String>> {
        let (Some(e), Some(&n)) = (self.encodings.get(i), self.word_counts.get(i)) else {
            return Err(DataError::Invalid(format!("no sentence {i}")));
        };
        word_predictions(&e.word_ids, token_preds, n)
            .into_iter()
            .map(|p| match p {
                None => Ok("O".to_string()),
                Some(id) => labels
                    .name(id)
                    .map(str::to_string)
                    .ok_or_else(|| DataError::Invalid(format!("predicted label id {id} is not in the label map"))),
            })
            .collect()
    }
}

/// Words of a sentence that have no token: truncated (after the last word that kept a token, in a truncated
/// encoding) or empty (produced no token at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Coverage {
    pub truncated: usize,
    pub empty: usize,
}

/// Counts the words of an `n_words` sentence that have no token. When the encoding was truncated, the words
/// after the last word that kept a token count as truncated; every other word without a token counts as empty.
pub fn coverage(word_ids: &[Option<u32>], n_words: usize, truncated: bool) -> Coverage {
    let mut seen = vec![false; n_words];
    for w in word_ids.iter().flatten() {
        if let Some(s) = seen.get_mut(*w as usize) {
            *s = true;
        }
    }
    let cut = if truncated { seen.iter().rposition(|&s| s).map_or(0, |p| p + 1) } else { n_words };
    let empty = seen[..cut].iter().filter(|&&s| !s).count();
    Coverage { truncated: n_words - cut, empty }
}

/// Maps token predictions back to words: each word takes the prediction of its first sub-token. Words without
/// a token (cut off by truncation, or empty) get None, which [`TokenDatasetEncoded::word_tags`] turns into "O",
/// so every word of the input has a tag and evaluation sees the whole sentence. (`run_ner.py` instead drops
/// the positions labelled -100 from both predictions and references, so truncated words vanish from its scores;
/// the counts in [`TokenDatasetEncoded`] tell how many words this concerns.)
pub fn word_predictions(word_ids: &[Option<u32>], token_preds: &[usize], n_words: usize) -> Vec<Option<usize>> {
    let mut out = vec![None; n_words];
    let mut previous = None;
    for (&w, &p) in word_ids.iter().zip(token_preds) {
        if let Some(wi) = w {
            if Some(wi) != previous {
                if let Some(slot) = out.get_mut(wi as usize) {
                    if slot.is_none() {
                        *slot = Some(p);
                    }
                }
            }
        }
        previous = w;
    }
    out
}
