//! What the loop needs from the data: batches that know their loss-item count, and a per-epoch batch order
//! that is a pure function of (seed, epoch) so a resumed run sees exactly the same batches.

use finetune_data::Rng;

/// One micro-batch.
pub trait Batch {
    /// Items the loss is averaged over: label tokens for token-level losses, examples otherwise. The loss of
    /// an accumulation window is normalised by the sum of this over the window (HF `num_items_in_batch`).
    fn num_items(&self) -> usize;
    /// Examples in the batch.
    fn num_examples(&self) -> usize;
}

/// The training data as batches per epoch.
pub trait BatchSource {
    type Batch: Batch;
    /// Examples in one epoch.
    fn num_examples(&self) -> usize;
    /// Batches in one epoch (`len(train_dataloader)`).
    fn num_batches(&self) -> usize;
    /// The batches of `epoch` from batch index `skip` on. The order must depend only on the epoch (and the
    /// source's own seed), never on earlier calls: resume relies on it.
    fn epoch_batches(&self, epoch: u64, skip: usize) -> Box<dyn Iterator<Item = Self::Batch> + '_>;
}

/// Batch order over example indices, as HF's `RandomSampler` + `BatchSampler` (or `LengthGroupedSampler`
/// with `group_by_length`). The permutation is reseeded every epoch from (seed, epoch), which makes any
/// epoch reproducible on its own.
#[derive(Debug, Clone)]
pub struct Sampler {
    pub num_examples: usize,
    pub batch_size: usize,
    pub drop_last: bool,
    pub seed: u64,
    pub shuffle: bool,
    /// Example lengths for `group_by_length`; `None` for a plain random order.
    pub lengths: Option<Vec<usize>>,
}

impl Sampler {
    pub fn new(num_examples: usize, batch_size: usize, seed: u64) -> Self {
        Sampler { num_examples, batch_size: batch_size.max(1), drop_last: false, seed, shuffle: true, lengths: None }
    }

    /// The training sampler the arguments ask for: `seed`, `per_device_train_batch_size`,
    /// `dataloader_drop_last`, and length grouping when `group_by_length` (with `lengths` given).
    pub fn from_args(args: &crate::TrainingArguments, num_examples: usize, lengths: Option<Vec<usize>>) -> Self {
        Sampler {
            drop_last: args.dataloader_drop_last,
            lengths: if args.group_by_length { lengths } else { None },
            ..Sampler::new(num_examples, args.per_device_train_batch_size, args.seed)
        }
    }

    /// `len(dataloader)`.
    pub fn num_batches(&self) -> usize {
        crate::schedule::num_batches(self.num_examples, self.batch_size, self.drop_last)
    }

    fn epoch_rng(&self, epoch: u64) -> Rng {
        // Decorrelate epochs: a SplitMix step on the mixed seed, not seed + epoch (adjacent seeds would overlap).
        let mut r = Rng::new(self.seed ^ epoch.wrapping_mul(0xD1B5_4A32_D192_ED03));
        Rng::new(r.next_u64())
    }

    /// Example order of `epoch`.
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.num_examples).collect();
        if !self.shuffle {
            return order;
        }
        let mut rng = self.epoch_rng(epoch);
        rng.shuffle(&mut order);
        if let Some(lengths) = &self.lengths {
            // HF get_length_grouped_indices: mega-batches of min(n / (4 * batch), 50) batches (at least one),
            // each sorted by decreasing length, and the longest example moved to the very first batch so an
            // out-of-memory error shows up at once.
            let mult = (self.num_examples / (self.batch_size * 4)).clamp(1, 50);
            let mega = self.batch_size * mult;
            for chunk in order.chunks_mut(mega) {
                chunk.sort_by_key(|&i| std::cmp::Reverse(lengths.get(i).copied().unwrap_or(0)));
            }
            let len_of = |i: usize| lengths.get(i).copied().unwrap_or(0);
            let mut best = 0;
            for start in (0..order.len()).step_by(mega) {
                if len_of(order[start]) > len_of(order[best]) {
                    best = start;
                }
            }
            order.swap(0, best);
        }
        order
    }

    /// Batches of example indices of `epoch` (the last one short unless `drop_last`).
    pub fn epoch_batches(&self, epoch: u64) -> Vec<Vec<usize>> {
        let order = self.epoch_order(epoch);
        let mut out: Vec<Vec<usize>> = order.chunks(self.batch_size).map(<[usize]>::to_vec).collect();
        if self.drop_last && out.last().is_some_and(|b| b.len() < self.batch_size) {
            out.pop();
        }
        out
    }
}
