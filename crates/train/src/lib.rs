//! The fine-tuning loop with Hugging Face `Trainer` semantics: `TrainingArguments` (names, defaults and
//! validation of transformers 5.23.0), its learning-rate schedules and step arithmetic, gradient accumulation
//! normalised over the accumulation window, logging into `log_history`, evaluation, checkpoints in HF's layout
//! (`checkpoint-N/trainer_state.json`) with rotation and best-model tracking, early stopping, and exact resume.
//!
//! Models plug in through [`TrainableModel`]; data through [`BatchSource`]. The loop knows nothing about tensors;
//! [`encoder`] adapts the BERT-family sequence classifiers of `finetune-models` to it.
//!
//! ```text
//! let args = TrainingArguments::load(Some(Path::new("train.toml")), &overrides)?;   // TOML + --set, validated
//! let sampler = Sampler::from_args(&args, train_set.len(), Some(lengths));         // order fixed by (seed, epoch)
//! let mut eval = |m: &mut MyModel| { let mut acc = ClassificationEval::new(); /* add_batch... */ acc.finish() };
//! let out = train(&args, &mut model, &source, Some(&mut eval), &TrainOptions::default())?;
//! // output_dir/: checkpoint-N/ (model, optimizer, scheduler.json, rng_state.json, trainer_state.json),
//! //              trainer_state.json, train_results.json, eval_results.json, all_results.json, events.jsonl
//! ```
//!
//! A resumed run ([`Resume`]) continues bit for bit: batch order is a pure function of (seed, epoch), the
//! loss accumulated since the last log is checkpointed, and the model checkpoints its optimizer and RNG state.

pub mod args;
pub mod error;
pub mod schedule;

pub use args::{AdamW, IntervalStrategy, SaveStrategy, SchedulerType, TrainingArguments};
pub use error::{Result, TrainError};
pub use schedule::{num_batches, Schedule, TrainingPlan};

pub mod data;
pub mod decoder;
pub mod dist;
pub mod encoder;
pub mod eval;
mod grads;
pub mod mlflow;
pub mod progress;
pub mod state;
pub mod sweep;
pub mod tensorboard;
pub mod trainer;
pub mod workflow;
mod workspace;

pub use data::{Batch, BatchSource, Sampler};
pub use decoder::{CausalBatch, CausalBatches, CausalLm, CausalRow, LmEvaluation};
pub use encoder::{
    DropoutOverrides, EncoderClassifier, Evaluation, MlmBatches, Pooling, SeqBatches, TokenBatches, TokenEvaluation,
};
pub use eval::{ClassScores, ClassificationDetails, ClassificationEval, Curve, TokenClassificationEval, TokenDetails};
pub use progress::ProgressMode;
pub use state::{last_checkpoint, rotate_checkpoints, sorted_checkpoints, write_atomic, LogEntry, TrainerState};
pub use trainer::{train, EvalCallback, EvalOutput, Evaluator, Resume, TrainOptions, TrainOutput, TrainableModel};
