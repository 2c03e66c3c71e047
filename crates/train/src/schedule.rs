//! Learning-rate schedules and step arithmetic, computed exactly as transformers 5.23.0 does.

use crate::args::{SchedulerType, TrainingArguments};
use crate::error::{Result, TrainError};

/// A learning-rate schedule: the multiplier of the base LR at each optimizer step, as the `lr_lambda`s of
/// `get_linear_schedule_with_warmup`, `get_cosine_schedule_with_warmup` (`num_cycles = 0.5`),
/// `get_constant_schedule` and `get_constant_schedule_with_warmup`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub kind: SchedulerType,
    pub num_warmup_steps: u64,
    pub num_training_steps: u64,
}

impl Schedule {
    /// HF `get_scheduler(kind, optimizer, num_warmup_steps, num_training_steps)`.
    pub fn new(kind: SchedulerType, num_warmup_steps: u64, num_training_steps: u64) -> Self {
        Schedule { kind, num_warmup_steps, num_training_steps }
    }

    /// From training arguments, with warmup from [`TrainingArguments::get_warmup_steps`].
    pub fn from_args(args: &TrainingArguments, num_training_steps: u64) -> Self {
        Schedule::new(args.lr_scheduler_type, args.get_warmup_steps(num_training_steps), num_training_steps)
    }

    /// LR multiplier for optimizer step `step` (0-based: the LR used by the first update is `multiplier(0)`).
    pub fn multiplier(&self, step: u64) -> f64 {
        let (w, n) = (self.num_warmup_steps, self.num_training_steps);
        // Integer subtraction as in Python: step may exceed n, giving a negative numerator.
        let (step_i, w_i, n_i) = (step as i64, w as i64, n as i64);
        let warmup = || step as f64 / (w.max(1)) as f64;
        match self.kind {
            SchedulerType::Constant => 1.0,
            SchedulerType::ConstantWithWarmup => {
                if step < w {
                    warmup()
                } else {
                    1.0
                }
            }
            SchedulerType::Linear => {
                if step < w {
                    warmup()
                } else {
                    (0.0f64).max((n_i - step_i) as f64 / (n_i - w_i).max(1) as f64)
                }
            }
            SchedulerType::Cosine => {
                if step < w {
                    warmup()
                } else {
                    let progress = (step_i - w_i) as f64 / (n_i - w_i).max(1) as f64;
                    (0.0f64).max(0.5 * (1.0 + (std::f64::consts::PI * 0.5 * 2.0 * progress).cos()))
                }
            }
        }
    }

    /// The learning rate at optimizer step `step` (torch's `LambdaLR`: `base_lr * lambda(step)`).
    pub fn lr(&self, base_lr: f64, step: u64) -> f64 {
        base_lr * self.multiplier(step)
    }
}

/// Step counts of a run, as HF `Trainer.set_initial_training_values` computes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainingPlan {
    /// Batches per epoch (`len(train_dataloader)`).
    pub steps_in_epoch: u64,
    /// `max(ceil(len(dataloader) / gradient_accumulation_steps), 1)`.
    pub num_update_steps_per_epoch: u64,
    /// Total optimizer steps.
    pub max_steps: u64,
    /// Number of epochs the loop iterates over.
    pub num_train_epochs: u64,
    pub num_examples: u64,
    /// `per_device_train_batch_size * gradient_accumulation_steps`.
    pub total_train_batch_size: u64,
    /// HF's estimate of samples seen, used for `train_samples_per_second`.
    pub num_train_samples: f64,
    pub logging_steps: u64,
    pub eval_steps: u64,
    pub save_steps: u64,
}

/// `len(DataLoader)` for `num_examples` at `batch_size`.
pub fn num_batches(num_examples: usize, batch_size: usize, drop_last: bool) -> usize {
    if drop_last {
        num_examples / batch_size
    } else {
        num_examples.div_ceil(batch_size)
    }
}

impl TrainingPlan {
    /// `len_dataloader` batches holding `num_examples` examples.
    pub fn new(args: &TrainingArguments, len_dataloader: u64, num_examples: u64) -> Result<Self> {
        if len_dataloader == 0 {
            return Err(TrainError::Args(format!(
                "the training data has no batch ({num_examples} examples, per_device_train_batch_size {}, \
                 dataloader_drop_last {})",
                args.per_device_train_batch_size, args.dataloader_drop_last
            )));
        }
        let gas = args.gradient_accumulation_steps as u64;
        let total_train_batch_size = args.total_train_batch_size() as u64;
        let num_update_steps_per_epoch = len_dataloader.div_ceil(gas).max(1);
        let (max_steps, num_train_epochs, num_train_samples) = if args.max_steps > 0 {
            let m = args.max_steps as u64;
            let epochs = m.div_ceil(num_update_steps_per_epoch);
            (m, epochs, (m * total_train_batch_size) as f64)
        } else {
            let m = (args.num_train_epochs * num_update_steps_per_epoch as f64).ceil() as u64;
            (m, args.num_train_epochs.ceil() as u64, num_examples as f64 * args.num_train_epochs)
        };
        // HF `TrainerState.compute_steps`: a value < 1 is a ratio of max_steps.
        let abs = |v: f64| if v < 1.0 { (max_steps as f64 * v).ceil() as u64 } else { v as u64 };
        Ok(TrainingPlan {
            steps_in_epoch: len_dataloader,
            num_update_steps_per_epoch,
            max_steps,
            num_train_epochs,
            num_examples,
            total_train_batch_size,
            num_train_samples,
            logging_steps: abs(args.logging_steps),
            eval_steps: args.eval_steps.map_or(500, abs),
            save_steps: abs(args.save_steps),
        })
    }
}
