//! Reading and preparing fine-tuning data: streaming readers for CSV/TSV, JSONL, CoNLL and plain text, text
//! cleaning, de-duplication and train/test overlap checks, label maps, seeded stratified splits and k-fold,
//! class weights and re-sampling, and dataset statistics.
//!
//! Every malformed record is a [`DataError`] whose message is one line naming `file:line` and the field; with
//! `skip_bad_records` such records are counted in a [`ReadReport`] instead. Nothing is dropped silently.
//! Tokenization goes through the [`Tokenize`] trait (implemented by `finetune-models`' tokenizer) into encoded
//! datasets with aligned labels; [`batch`] pads them into flat batches in seeded, resumable orders.

pub mod augment;
pub mod batch;
pub mod chat;
pub mod clean;
pub mod encode;
pub mod error;
pub mod example;
pub mod labels;
pub mod mlm;
pub mod near_dup;
pub mod quality;
pub mod read;
pub mod select;
pub mod sft;
pub mod split;
pub mod stats;
pub mod wordnet;
pub mod write;

pub use batch::{Batch, BatchLabels, Collator, Sampler, SamplerState, Sampling};
pub use clean::{clean, clean_examples, dedup, overlap, CleanOptions, Normalization};
pub use encode::{Encoded, SeqDataset, SeqTargets, SeqTask, TokenDatasetEncoded, Tokenize, IGNORE_INDEX};
pub use error::{DataError, Result};
pub use example::{Example, Label, TokenExample};
pub use labels::LabelMap;
pub use read::{read_examples, read_tokens, Dataset, Format, ReadOptions, ReadReport, TokenDataset};
pub use split::{Rng, SplitSpec};
