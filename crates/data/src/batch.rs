//! Batching as the Hugging Face `Trainer` does it: samplers that choose which examples form each batch
//! (`RandomSampler` with a per-epoch seed, `SequentialSampler` for evaluation, `LengthGroupedSampler` for
//! `group_by_length`, `dataloader_drop_last`), and a collator that pads each batch to its longest sequence
//! (`DataCollatorWithPadding` / `DataCollatorForTokenClassification`).
//!
//! Batches are flat row-major buffers plus `(batch_size, seq_len)`, so an engine reads them without copying, and
//! [`Collator`] can refill one [`Batch`] in place to keep the training loop free of allocation.

use crate::encode::{Encoded, SeqDataset, SeqTargets, TokenDatasetEncoded, IGNORE_INDEX};
use crate::error::{DataError, Result};
use crate::split::Rng;

/// Labels of a batch, row-major.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum BatchLabels {
    #[default]
    None,
    /// One class id per row.
    Class(Vec<i64>),
    /// `num_labels` multi-hot floats per row.
    MultiHot { num_labels: usize, values: Vec<f32> },
    /// One float per row.
    Regression(Vec<f32>),
    /// `seq_len` label ids per row; -100 on ignored tokens and padding.
    Tokens(Vec<i64>),
}

/// One padded batch. Every per-token buffer holds `batch_size * seq_len` values, row-major.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    pub batch_size: usize,
    pub seq_len: usize,
    pub input_ids: Vec<u32>,
    pub token_type_ids: Vec<u32>,
    /// 1 on real tokens, 0 on padding.
    pub attention_mask: Vec<u32>,
    pub labels: BatchLabels,
    /// Dataset index of each row, to map predictions back to examples.
    pub indices: Vec<usize>,
}

/// Pads batches to their longest sequence, on the right (BERT's `padding_side`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Collator {
    /// `tokenizer.pad_token_id`.
    pub pad_token_id: u32,
    /// Round `seq_len` up to a multiple of this (`pad_to_multiple_of`, which `run_glue.py` sets to 8 under fp16).
    pub pad_to_multiple_of: Option<usize>,
}

impl Collator {
    pub fn new(pad_token_id: u32) -> Self {
        Collator { pad_token_id, pad_to_multiple_of: None }
    }

    /// Pads the examples `indices` of a sequence-classification dataset into a new batch.
    pub fn seq(&self, data: &SeqDataset, indices: &[usize]) -> Result<Batch> {
        let mut b = Batch::default();
        self.seq_into(data, indices, &mut b)?;
        Ok(b)
    }

    /// As [`Collator::seq`], reusing the buffers of `out`.
    pub fn seq_into(&self, data: &SeqDataset, indices: &[usize], out: &mut Batch) -> Result<()> {
        let targets = match &data.targets {
            SeqTargets::None => data.len(),
            SeqTargets::Class(v) => v.len(),
            SeqTargets::Regression(v) => v.len(),
            SeqTargets::MultiHot { num_labels, values } => values.len() / (*num_labels).max(1),
        };
        if targets != data.len() {
            return Err(DataError::Invalid(format!("{targets} targets for {} examples", data.len())));
        }
        self.inputs_into(&data.encodings, indices, out)?;
        // Take the old label buffer to reuse its allocation when the kind matches.
        let old = std::mem::take(&mut out.labels);
        out.labels = match &data.targets {
            SeqTargets::None => BatchLabels::None,
            SeqTargets::Class(v) => {
                let mut buf = if let BatchLabels::Class(b) = old { b } else { Vec::new() };
                buf.clear();
                buf.extend(indices.iter().map(|&i| v[i]));
                BatchLabels::Class(buf)
            }
            SeqTargets::Regression(v) => {
                let mut buf = if let BatchLabels::Regression(b) = old { b } else { Vec::new() };
                buf.clear();
                buf.extend(indices.iter().map(|&i| v[i]));
                BatchLabels::Regression(buf)
            }
            SeqTargets::MultiHot { num_labels, values } => {
                let mut buf = if let BatchLabels::MultiHot { values: b, .. } = old { b } else { Vec::new() };
                buf.clear();
                for &i in indices {
                    buf.extend_from_slice(&values[i * num_labels..(i + 1) * num_labels]);
                }
                BatchLabels::MultiHot { num_labels: *num_labels, values: buf }
            }
        };
        Ok(())
    }

    /// Pads the sentences `indices` of a token-classification dataset into a new batch (labels padded -100).
    pub fn tokens(&self, data: &TokenDatasetEncoded, indices: &[usize]) -> Result<Batch> {
        let mut b = Batch::default();
        self.tokens_into(data, indices, &mut b)?;
        Ok(b)
    }

    /// As [`Collator::tokens`], reusing the buffers of `out`.
    pub fn tokens_into(&self, data: &TokenDatasetEncoded, indices: &[usize], out: &mut Batch) -> Result<()> {
        self.inputs_into(&data.encodings, indices, out)?;
        // Checked before writing so that a malformed dataset is an error, not a panic.
        for &i in indices {
            if data.labels.get(i).map(Vec::len) != Some(data.encodings[i].len()) {
                return Err(DataError::Invalid(format!("sentence {i}: labels do not match its tokens")));
            }
        }
        let mut buf = if let BatchLabels::Tokens(b) = std::mem::take(&mut out.labels) { b } else { Vec::new() };
        buf.clear();
        buf.reserve(out.batch_size * out.seq_len);
        for &i in indices {
            let l = &data.labels[i];
            buf.extend_from_slice(l);
            buf.resize(buf.len() + (out.seq_len - l.len()), IGNORE_INDEX);
        }
        out.labels = BatchLabels::Tokens(buf);
        Ok(())
    }

    /// Input buffers: ids padded with the pad id, token types with 0, attention mask with 0.
    fn inputs_into(&self, encodings: &[Encoded], indices: &[usize], out: &mut Batch) -> Result<()> {
        let mut seq_len = 0;
        for &i in indices {
            let e = encodings.get(i).ok_or_else(|| {
                DataError::Invalid(format!("batch index {i} is past the {} examples", encodings.len()))
            })?;
            seq_len = seq_len.max(e.len());
        }
        if let Some(m) = self.pad_to_multiple_of.filter(|&m| m > 1) {
            seq_len = seq_len.div_ceil(m) * m;
        }
        let n = indices.len() * seq_len;
        out.batch_size = indices.len();
        out.seq_len = seq_len;
        for v in [&mut out.input_ids, &mut out.token_type_ids, &mut out.attention_mask] {
            v.clear();
            v.reserve(n);
        }
        out.indices.clear();
        out.indices.extend_from_slice(indices);
        for &i in indices {
            let e = &encodings[i];
            let pad = seq_len - e.len();
            out.input_ids.extend_from_slice(&e.input_ids);
            out.input_ids.resize(out.input_ids.len() + pad, self.pad_token_id);
            out.token_type_ids.extend_from_slice(&e.token_type_ids);
            out.token_type_ids.resize(out.token_type_ids.len() + pad, 0);
            out.attention_mask.extend_from_slice(&e.attention_mask);
            out.attention_mask.resize(out.attention_mask.len() + pad, 0);
        }
        Ok(())
    }
}

/// How a sampler orders examples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sampling {
    /// Dataset order (`SequentialSampler`, evaluation).
    Sequential,
    /// A fresh seeded permutation each epoch (`RandomSampler`).
    Random,
    /// `LengthGroupedSampler`: a seeded permutation cut into megabatches, each sorted longest first, with the
    /// longest example of all moved to the front. `lengths[i]` is example `i`'s token count; `group_batch_size`
    /// is the batch size HF passes (`train_batch_size * gradient_accumulation_steps` for training, the eval
    /// batch size for evaluation, where `transformers` seeds the grouping once: use epoch 0 there).
    GroupByLength { lengths: Vec<usize>, group_batch_size: usize },
}

/// Where an epoch stands: `position` batches of epoch `epoch` have been handed out. Saving it with a
/// checkpoint and passing it to [`Sampler::resume`] continues with exactly the batches that would have followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct SamplerState {
    pub epoch: u64,
    pub position: usize,
}

/// Chooses the examples of each batch. The order of an epoch depends only on the seed, the epoch number and
/// the dataset (our own SplitMix64 generator), so it is the same on every platform and after a resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sampler {
    len: usize,
    batch_size: usize,
    sampling: Sampling,
    seed: u64,
    drop_last: bool,
}

impl Sampler {
    /// A sampler over `len` examples. `drop_last` drops the final incomplete batch (`dataloader_drop_last`).
    pub fn new(len: usize, batch_size: usize, sampling: Sampling, seed: u64, drop_last: bool) -> Result<Self> {
        if batch_size == 0 {
            return Err(DataError::Invalid("batch size must be at least 1".into()));
        }
        if let Sampling::GroupByLength { lengths, group_batch_size } = &sampling {
            if lengths.len() != len {
                return Err(DataError::Invalid(format!("{} lengths for {len} examples", lengths.len())));
            }
            if *group_batch_size == 0 {
                return Err(DataError::Invalid("group_by_length batch size must be at least 1".into()));
            }
        }
        Ok(Sampler { len, batch_size, sampling, seed, drop_last })
    }

    /// Sequential evaluation batches.
    pub fn sequential(len: usize, batch_size: usize, drop_last: bool) -> Result<Self> {
        Sampler::new(len, batch_size, Sampling::Sequential, 0, drop_last)
    }

    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Batches per epoch.
    pub fn num_batches(&self) -> usize {
        if self.drop_last {
            self.len / self.batch_size
        } else {
            self.len.div_ceil(self.batch_size)
        }
    }

    /// The example order of an epoch (all examples, before `drop_last`).
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        match &self.sampling {
            Sampling::Sequential => (0..self.len).collect(),
            Sampling::Random => {
                let mut v: Vec<usize> = (0..self.len).collect();
                self.epoch_rng(epoch).shuffle(&mut v);
                v
            }
            Sampling::GroupByLength { lengths, group_batch_size } => {
                length_grouped_indices(lengths, *group_batch_size, &mut self.epoch_rng(epoch))
            }
        }
    }

    /// As accelerate's seedable sampler, epoch `e` draws from seed `seed + e`.
    fn epoch_rng(&self, epoch: u64) -> Rng {
        Rng::new(self.seed.wrapping_add(epoch))
    }

    /// The batches of an epoch from its start.
    pub fn epoch(&self, epoch: u64) -> EpochBatches {
        self.resume(SamplerState { epoch, position: 0 })
    }

    /// The batches of `state.epoch` from batch `state.position` on.
    pub fn resume(&self, state: SamplerState) -> EpochBatches {
        EpochBatches {
            order: self.order(state.epoch),
            batch_size: self.batch_size,
            num_batches: self.num_batches(),
            state: SamplerState { epoch: state.epoch, position: state.position.min(self.num_batches()) },
        }
    }
}

/// The batches of one epoch, handed out as slices of example indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochBatches {
    order: Vec<usize>,
    batch_size: usize,
    num_batches: usize,
    state: SamplerState,
}

impl EpochBatches {
    /// The next batch's example indices, or None at the end of the epoch.
    pub fn next_batch(&mut self) -> Option<&[usize]> {
        let k = self.state.position;
        if k >= self.num_batches {
            return None;
        }
        self.state.position += 1;
        let start = k * self.batch_size;
        Some(&self.order[start..(start + self.batch_size).min(self.order.len())])
    }

    /// The state to save: resuming from it yields the batches this iterator has not yet handed out.
    pub fn state(&self) -> SamplerState {
        self.state
    }

    /// The state that starts the following epoch.
    pub fn next_epoch(&self) -> SamplerState {
        SamplerState { epoch: self.state.epoch + 1, position: 0 }
    }

    /// Batches left in this epoch.
    pub fn remaining(&self) -> usize {
        self.num_batches - self.state.position
    }

    /// The whole epoch's example order.
    pub fn order(&self) -> &[usize] {
        &self.order
    }
}

/// `transformers`' `get_length_grouped_indices`: megabatches of `min(len / (4 * batch_size), 50)` (at least 1)
/// batches of a random permutation, each sorted by length longest first (stable, as Python's `sorted`), then
/// the first element of the first megabatch swapped with the longest element overall (the first of the first
/// megabatch holding the maximum), so that running out of memory happens on the first step.
pub fn length_grouped_indices(lengths: &[usize], batch_size: usize, rng: &mut Rng) -> Vec<usize> {
    let mut indices: Vec<usize> = (0..lengths.len()).collect();
    rng.shuffle(&mut indices);
    length_grouped_order(indices, lengths, batch_size)
}

/// The deterministic part of [`length_grouped_indices`], applied to a given permutation `indices` (what
/// `torch.randperm` returns in `transformers`).
pub fn length_grouped_order(mut indices: Vec<usize>, lengths: &[usize], batch_size: usize) -> Vec<usize> {
    let n = indices.len();
    let mult = (n / (batch_size.max(1) * 4)).clamp(1, 50);
    let mega = mult * batch_size.max(1);
    for chunk in indices.chunks_mut(mega) {
        chunk.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]));
    }
    // The first megabatch whose maximum is the overall maximum (torch.argmax returns the first).
    let mut best = 0;
    for (k, chunk) in indices.chunks(mega).enumerate() {
        if lengths[chunk[0]] > lengths[indices[best * mega]] {
            best = k;
        }
    }
    if n > 0 {
        indices.swap(0, best * mega);
    }
    indices
}
