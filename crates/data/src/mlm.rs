//! Masked-language-model data as `transformers/examples/pytorch/language-modeling/run_mlm.py` prepares it:
//! texts tokenized with special tokens, then either concatenated and cut into blocks of `max_seq_length`
//! (`group_texts`, the default) or kept one per line (`line_by_line`); and masking as
//! `DataCollatorForLanguageModeling(mlm_probability=…)` does it, drawn anew for every epoch (dynamic masking).
//!
//! Masking draws from this crate's seeded [`Rng`], one stream per (seed, example), so a batch's masks depend
//! only on the epoch seed and the example and a resumed run masks as the uninterrupted one did. The
//! probabilities are the collator's; the random numbers are not torch's.

use crate::encode::Encoded;
use crate::error::{DataError, Result};
use crate::split::Rng;

/// `run_mlm.py` maps `group_texts` over `datasets` batches of this many texts (`Dataset.map(batched=True)`'s
/// default), so each batch's remainder shorter than a block is dropped.
pub const GROUP_TEXTS_BATCH: usize = 1000;

const SPECIAL: u8 = 1;
const WORD_START: u8 = 2;

/// Tokenized sequences for masked-LM training: ragged rows with, per token, whether it is a special token
/// (never masked) and whether it starts a word (whole-word masking).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MlmDataset {
    ids: Vec<u32>,
    flags: Vec<u8>,
    /// Row `i` is `starts[i]..starts[i + 1]`.
    starts: Vec<usize>,
}

/// Per token: special, word start. A token starts a word when it is not special and either follows a special
/// token or does not touch the previous token's end (`DataCollatorForLanguageModeling`'s whole-word rule, from
/// the offsets); without offsets, when its word id differs from the previous token's.
fn flags(e: &Encoded) -> Vec<u8> {
    let n = e.input_ids.len();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let special = e.word_ids.get(i).is_none_or(|w| w.is_none());
        if special {
            out.push(SPECIAL);
            continue;
        }
        let prev_special = i == 0 || e.word_ids.get(i - 1).is_none_or(|w| w.is_none());
        let new_word = prev_special
            || if e.offsets.len() == n {
                e.offsets[i].0 != e.offsets[i - 1].1
            } else {
                e.word_ids[i] != e.word_ids[i - 1]
            };
        out.push(if new_word { WORD_START } else { 0 });
    }
    out
}

impl MlmDataset {
    /// `group_texts`: every batch of [`GROUP_TEXTS_BATCH`] texts concatenated and cut into blocks of
    /// `block_size` tokens, the remainder of each batch dropped.
    pub fn group_texts(encoded: &[Encoded], block_size: usize) -> Result<Self> {
        if block_size == 0 {
            return Err(DataError::Invalid("max_seq_length must be positive".into()));
        }
        let mut d = MlmDataset { starts: vec![0], ..Default::default() };
        for chunk in encoded.chunks(GROUP_TEXTS_BATCH) {
            let total: usize = chunk.iter().map(Encoded::len).sum();
            let keep = total / block_size * block_size;
            let (mut ids, mut fl) = (Vec::with_capacity(total), Vec::with_capacity(total));
            for e in chunk {
                ids.extend_from_slice(&e.input_ids);
                fl.extend(flags(e));
            }
            d.ids.extend_from_slice(&ids[..keep]);
            d.flags.extend_from_slice(&fl[..keep]);
            for _ in 0..keep / block_size {
                d.starts.push(d.starts[d.starts.len() - 1] + block_size);
            }
        }
        Ok(d)
    }

    /// `line_by_line`: one row per text (already truncated by the tokenizer).
    pub fn line_by_line(encoded: &[Encoded]) -> Self {
        let mut d = MlmDataset { starts: vec![0], ..Default::default() };
        for e in encoded.iter().filter(|e| !e.is_empty()) {
            d.ids.extend_from_slice(&e.input_ids);
            d.flags.extend(flags(e));
            d.starts.push(d.ids.len());
        }
        d
    }

    pub fn len(&self) -> usize {
        self.starts.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Token ids of row `i`.
    pub fn row(&self, i: usize) -> &[u32] {
        &self.ids[self.starts[i]..self.starts[i + 1]]
    }

    /// Rows' lengths.
    pub fn lengths(&self) -> Vec<usize> {
        self.starts.windows(2).map(|w| w[1] - w[0]).collect()
    }

    /// Tokens in all rows.
    pub fn num_tokens(&self) -> usize {
        self.ids.len()
    }

    /// Row `i` masked: `(input_ids, labels)`, labels −100 except at the masked positions.
    pub fn masked(&self, i: usize, opts: &MaskOptions, seed: u64) -> (Vec<u32>, Vec<i64>) {
        let r = self.starts[i]..self.starts[i + 1];
        let mut rng = Rng::new(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x6D4C_4D5F_6D61_736B);
        mask_tokens(&self.ids[r.clone()], &self.flags[r], opts, &mut rng)
    }
}

/// `DataCollatorForLanguageModeling`'s masking arguments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskOptions {
    /// Chance that a token (with whole-word masking: a word) is selected for prediction (`mlm_probability`).
    pub mlm_probability: f64,
    /// Chance that a selected token is replaced by the mask token (`mask_replace_prob`, 0.8).
    pub mask_replace_prob: f64,
    /// Chance that a selected token is replaced by a random token (`random_replace_prob`, 0.1); the rest keep
    /// their token.
    pub random_replace_prob: f64,
    /// Select whole words: a word's first token is drawn and every token of the word follows it.
    pub whole_word_mask: bool,
    /// `tokenizer.mask_token_id`.
    pub mask_token_id: u32,
    /// `len(tokenizer)`: random replacements are drawn from `0..vocab_size`.
    pub vocab_size: u32,
}

impl MaskOptions {
    /// Checks the probabilities as the collator's constructor does.
    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, v: f64| DataError::Invalid(format!("key `{k}`: {v} is not a probability in [0, 1]"));
        for (k, v) in [
            ("mlm_probability", self.mlm_probability),
            ("mask_replace_prob", self.mask_replace_prob),
            ("random_replace_prob", self.random_replace_prob),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(bad(k, v));
            }
        }
        if self.mask_replace_prob + self.random_replace_prob > 1.0 {
            return Err(DataError::Invalid(
                "mask_replace_prob + random_replace_prob must not exceed 1 (the rest keep their token)".into(),
            ));
        }
        if self.vocab_size == 0 || self.mask_token_id >= self.vocab_size {
            return Err(DataError::Invalid(format!(
                "mask token id {} is outside the vocabulary of {}",
                self.mask_token_id, self.vocab_size
            )));
        }
        Ok(())
    }
}

/// `torch_mask_tokens` on one sequence: select, then replace by the mask token, by a random token, or keep.
fn mask_tokens(ids: &[u32], flags: &[u8], o: &MaskOptions, rng: &mut Rng) -> (Vec<u32>, Vec<i64>) {
    let n = ids.len();
    let mut selected = vec![false; n];
    if o.whole_word_mask {
        // The probability sits on each word's first token; the word's other tokens follow it.
        let mut on = false;
        for i in 0..n {
            if flags[i] & SPECIAL != 0 {
                on = false;
            } else if flags[i] & WORD_START != 0 {
                on = rng.uniform() < o.mlm_probability;
            }
            selected[i] = on && flags[i] & SPECIAL == 0;
        }
    } else {
        for i in 0..n {
            selected[i] = flags[i] & SPECIAL == 0 && rng.uniform() < o.mlm_probability;
        }
    }
    let (mut input, mut labels) = (ids.to_vec(), vec![-100i64; n]);
    // The collator scales the random-replacement chance to what the mask replacement leaves.
    let rest = 1.0 - o.mask_replace_prob;
    let random_scaled = if rest > 0.0 { o.random_replace_prob / rest } else { 0.0 };
    for i in (0..n).filter(|&i| selected[i]) {
        labels[i] = ids[i] as i64;
        if rng.uniform() < o.mask_replace_prob {
            input[i] = o.mask_token_id;
        } else if rng.uniform() < random_scaled {
            input[i] = rng.below(o.vocab_size as usize) as u32;
        }
    }
    (input, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(ids: &[u32], words: &[Option<u32>], offsets: &[(u32, u32)]) -> Encoded {
        Encoded {
            input_ids: ids.to_vec(),
            token_type_ids: vec![0; ids.len()],
            attention_mask: vec![1; ids.len()],
            word_ids: words.to_vec(),
            offsets: offsets.to_vec(),
            truncated: false,
        }
    }

    fn opts() -> MaskOptions {
        MaskOptions {
            mlm_probability: 0.15,
            mask_replace_prob: 0.8,
            random_replace_prob: 0.1,
            whole_word_mask: false,
            mask_token_id: 4,
            vocab_size: 1000,
        }
    }

    #[test]
    fn group_texts_concatenates_and_drops_the_remainder() {
        let texts: Vec<Encoded> =
            (0..3).map(|k| enc(&[101, 10 + k, 20 + k, 102], &[None, Some(0), Some(1), None], &[])).collect();
        let d = MlmDataset::group_texts(&texts, 5).expect("groups");
        assert_eq!(d.len(), 2);
        assert_eq!(d.row(0), [101, 10, 20, 102, 101]);
        assert_eq!(d.row(1), [11, 21, 102, 101, 12]);
        assert_eq!(d.num_tokens(), 10, "two tokens of twelve dropped");
    }

    #[test]
    fn group_texts_works_per_thousand_texts() {
        // 1 001 texts of 3 tokens, blocks of 2: the first 1 000 give 1 500 blocks, the last text one more.
        let texts: Vec<Encoded> = (0..1001).map(|_| enc(&[1, 2, 3], &[None, Some(0), None], &[])).collect();
        let d = MlmDataset::group_texts(&texts, 2).expect("groups");
        assert_eq!(d.len(), 1501);
        assert!(MlmDataset::group_texts(&texts, 0).is_err());
    }

    #[test]
    fn special_tokens_are_never_masked_and_the_rates_are_the_collators() {
        let n = 200;
        let mut ids = vec![101];
        let mut words = vec![None];
        for k in 0..n {
            ids.push(500 + k);
            words.push(Some(k));
        }
        ids.push(102);
        words.push(None);
        let d = MlmDataset::line_by_line(&[enc(&ids, &words, &[])]);
        let o = opts();
        let (mut selected, mut masked, mut random, mut kept, mut total) = (0usize, 0usize, 0usize, 0usize, 0usize);
        for seed in 0..500u64 {
            let (input, labels) = d.masked(0, &o, seed);
            assert_eq!(labels[0], -100);
            assert_eq!(labels[n as usize + 1], -100);
            assert_eq!((input[0], input[n as usize + 1]), (101, 102));
            total += n as usize;
            for i in 0..input.len() {
                if labels[i] == -100 {
                    assert_eq!(input[i], ids[i], "an unselected token is unchanged");
                    continue;
                }
                assert_eq!(labels[i], ids[i] as i64);
                selected += 1;
                match input[i] {
                    4 => masked += 1,
                    x if x == ids[i] => kept += 1,
                    _ => random += 1,
                }
            }
        }
        let rate = selected as f64 / total as f64;
        assert!((rate - 0.15).abs() < 0.005, "selection rate {rate}");
        let s = selected as f64;
        assert!((masked as f64 / s - 0.8).abs() < 0.01, "mask share {}", masked as f64 / s);
        // A random draw can hit the original token (1 in 1000), counted as kept.
        assert!((random as f64 / s - 0.1).abs() < 0.01, "random share {}", random as f64 / s);
        assert!((kept as f64 / s - 0.1).abs() < 0.01, "kept share {}", kept as f64 / s);
        // The same (seed, row) masks the same way; another seed differently.
        assert_eq!(d.masked(0, &o, 3), d.masked(0, &o, 3));
        assert_ne!(d.masked(0, &o, 3), d.masked(0, &o, 4));
    }

    #[test]
    fn whole_word_masking_takes_every_piece_of_a_word() {
        // "[CLS] un ##believ ##able , don ' t [SEP]": offsets make "un##believ##able" one word and "don't"
        // another (no gaps), "," its own.
        let ids = [101, 10, 11, 12, 13, 14, 15, 16, 102];
        let words = [None, Some(0), Some(0), Some(0), Some(1), Some(2), Some(3), Some(4), None];
        let offs = [(0, 0), (0, 2), (2, 7), (7, 11), (11, 12), (13, 16), (16, 17), (17, 18), (0, 0)];
        let d = MlmDataset::line_by_line(&[enc(&ids, &words, &offs)]);
        let o = MaskOptions { whole_word_mask: true, mlm_probability: 0.5, mask_replace_prob: 1.0, ..opts() };
        let groups: [&[usize]; 3] = [&[1, 2, 3], &[4], &[5, 6, 7]];
        let mut seen = [0usize; 3];
        for seed in 0..400 {
            let (input, labels) = d.masked(0, &o, seed);
            assert_eq!((labels[0], labels[8]), (-100, -100));
            for (g, idx) in groups.iter().enumerate() {
                let on: Vec<bool> = idx.iter().map(|&i| labels[i] != -100).collect();
                assert!(on.iter().all(|&x| x == on[0]), "seed {seed}: word {g} partly masked: {labels:?}");
                if on[0] {
                    seen[g] += 1;
                    assert!(idx.iter().all(|&i| input[i] == 4));
                }
            }
        }
        for s in seen {
            assert!((150..250).contains(&s), "each word selected about half the time: {seen:?}");
        }
        // Without offsets, word ids decide: "don", "'", "t" are three words.
        let d = MlmDataset::line_by_line(&[enc(&ids, &words, &[])]);
        let split = (0..400).any(|seed| {
            let (_, l) = d.masked(0, &o, seed);
            (l[5] != -100) != (l[6] != -100)
        });
        assert!(split);
    }

    #[test]
    fn options_are_checked() {
        assert!(opts().validate().is_ok());
        let e = MaskOptions { mlm_probability: 1.5, ..opts() }.validate().expect_err("bad");
        assert!(e.to_string().contains("mlm_probability"), "{e}");
        assert!(MaskOptions { mask_replace_prob: 0.95, ..opts() }.validate().is_err());
        assert!(MaskOptions { mask_token_id: 1000, ..opts() }.validate().is_err());
    }
}
