//! The data crate's [`finetune_data::Tokenize`] for [`TextTokenizer`], so datasets are encoded exactly as
//! `transformers`' tokenizer call encodes them (`truncation=True, max_length=N`, `is_split_into_words=True` for
//! pre-split NER sentences).

use std::borrow::Cow;

use finetune_data::{DataError, Encoded, Tokenize};
use tokenizers::{EncodeInput, PostProcessor};

use crate::tokenizer::TextTokenizer;

fn err(e: impl std::fmt::Display) -> DataError {
    DataError::Invalid(format!("tokenizer: {e}"))
}

fn convert(e: &tokenizers::Encoding) -> Encoded {
    Encoded {
        input_ids: e.get_ids().to_vec(),
        token_type_ids: e.get_type_ids().to_vec(),
        attention_mask: e.get_attention_mask().to_vec(),
        word_ids: e.get_word_ids().to_vec(),
        offsets: e.get_offsets().iter().map(|&(a, b)| (a as u32, b as u32)).collect(),
        // Truncation keeps the cut-off tokens as overflow (stride 0), so a non-empty overflow means a cut.
        truncated: !e.get_overflowing().is_empty(),
    }
}

impl TextTokenizer {
    /// This tokenizer with truncation at `max_seq_length`: itself when already set so (the fast path: call
    /// `set_max_length` once), else a reconfigured copy.
    fn truncating(&self, max_seq_length: Option<usize>) -> Result<Cow<'_, TextTokenizer>, DataError> {
        if self.max_length() == max_seq_length {
            return Ok(Cow::Borrowed(self));
        }
        let mut t = self.clone();
        t.set_max_length(max_seq_length).map_err(err)?;
        Ok(Cow::Owned(t))
    }

    /// Encodes through the inner tokenizer after the same special-token budget check as `encode`.
    fn encode_inputs(&self, inputs: Vec<EncodeInput<'_>>, is_pair: bool) -> Result<Vec<Encoded>, DataError> {
        if let (Some(max), Some(pp)) = (self.max_length(), self.inner().get_post_processor()) {
            let specials = pp.added_tokens(is_pair);
            if max < specials {
                return Err(err(format!("max_seq_length {max} is smaller than the {specials} special tokens")));
            }
        }
        // One input: skip the thread pool.
        let out = match <[EncodeInput<'_>; 1]>::try_from(inputs) {
            Ok([one]) => vec![self.inner().encode(one, true).map_err(err)?],
            Err(inputs) => self.inner().encode_batch(inputs, true).map_err(err)?,
        };
        Ok(out.iter().map(convert).collect())
    }
}

impl Tokenize for TextTokenizer {
    fn encode(&self, text: &str, pair: Option<&str>, max_seq_length: Option<usize>) -> Result<Encoded, DataError> {
        Tokenize::encode_batch(self, &[(text, pair)], max_seq_length)?.pop().ok_or_else(|| err("no encoding returned"))
    }

    fn encode_words(&self, words: &[String], max_seq_length: Option<usize>) -> Result<Encoded, DataError> {
        Tokenize::encode_words_batch(self, &[words], max_seq_length)?.pop().ok_or_else(|| err("no encoding returned"))
    }

    fn pad_token_id(&self) -> u32 {
        // BERT vocabularies put [PAD] at 0, which is also what `transformers` pads with when the token is absent.
        self.token_to_id("[PAD]").unwrap_or(0)
    }

    fn encode_batch(
        &self,
        inputs: &[(&str, Option<&str>)],
        max_seq_length: Option<usize>,
    ) -> Result<Vec<Encoded>, DataError> {
        let t = self.truncating(max_seq_length)?;
        let mut out = Vec::with_capacity(inputs.len());
        // Singles and pairs have different special-token budgets; check and encode each kind in runs.
        let mut start = 0;
        while start < inputs.len() {
            let is_pair = inputs[start].1.is_some();
            let end = inputs[start..].iter().position(|i| i.1.is_some() != is_pair).map_or(inputs.len(), |p| start + p);
            let run: Vec<EncodeInput<'_>> = inputs[start..end]
                .iter()
                .map(|&(a, b)| match b {
                    Some(b) => EncodeInput::Dual(a.into(), b.into()),
                    None => EncodeInput::Single(a.into()),
                })
                .collect();
            out.extend(t.encode_inputs(run, is_pair)?);
            start = end;
        }
        Ok(out)
    }

    fn encode_words_batch(
        &self,
        sentences: &[&[String]],
        max_seq_length: Option<usize>,
    ) -> Result<Vec<Encoded>, DataError> {
        let t = self.truncating(max_seq_length)?;
        let inputs: Vec<EncodeInput<'_>> = sentences.iter().map(|&w| EncodeInput::Single(w.into())).collect();
        t.encode_inputs(inputs, false)
    }
}
