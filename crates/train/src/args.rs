//! `TrainingArguments` with Hugging Face's names, defaults and validation rules (transformers 5.23.0), read from
//! TOML and overridden with `--set key=value`.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// When to log, evaluate (HF `IntervalStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntervalStrategy {
    No,
    Steps,
    Epoch,
}

/// When to save checkpoints (HF `SaveStrategy`): `best` saves only when the best metric improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaveStrategy {
    No,
    Steps,
    Epoch,
    Best,
}

/// Learning-rate schedule (the subset of HF `SchedulerType` that needs no evaluation feedback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerType {
    Linear,
    Cosine,
    Constant,
    ConstantWithWarmup,
}

macro_rules! string_enum {
    ($ty:ident, $expected:literal, $($name:literal => $var:ident),+) => {
        impl $ty {
            pub const EXPECTED: &'static str = $expected;
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$var => $name),+ }
            }
        }
        impl FromStr for $ty {
            type Err = ();
            fn from_str(s: &str) -> std::result::Result<Self, ()> {
                match s { $($name => Ok($ty::$var),)+ _ => Err(()) }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // HF prints the enum repr in its messages, e.g. `IntervalStrategy.STEPS`.
                write!(f, "{}.{}", stringify!($ty), self.as_str().to_uppercase())
            }
        }
        impl SetValue for $ty {
            const EXPECTED: &'static str = $expected;
            fn parse_set(s: &str) -> Option<Self> {
                s.parse().ok()
            }
        }
    };
}

string_enum!(IntervalStrategy, "one of: no, steps, epoch", "no" => No, "steps" => Steps, "epoch" => Epoch);
string_enum!(SaveStrategy, "one of: no, steps, epoch, best", "no" => No, "steps" => Steps, "epoch" => Epoch, "best" => Best);
string_enum!(SchedulerType, "one of: linear, cosine, constant, constant_with_warmup",
    "linear" => Linear, "cosine" => Cosine, "constant" => Constant, "constant_with_warmup" => ConstantWithWarmup);

/// Training hyper-parameters. Field names, meanings and defaults are those of `transformers.TrainingArguments`;
/// `early_stopping_*` are the arguments of HF's `EarlyStoppingCallback` (early stopping is on when
/// `early_stopping_patience` is set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingArguments {
    pub output_dir: String,
    pub overwrite_output_dir: bool,
    pub num_train_epochs: f64,
    /// Total optimizer steps; overrides `num_train_epochs` when > 0.
    pub max_steps: i64,
    pub per_device_train_batch_size: usize,
    pub per_device_eval_batch_size: usize,
    pub gradient_accumulation_steps: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    /// Gradient clipping threshold; 0 disables clipping.
    pub max_grad_norm: f64,
    pub lr_scheduler_type: SchedulerType,
    /// Warmup steps; as in transformers 5, a value in (0, 1) is a ratio of the total steps.
    pub warmup_steps: f64,
    /// Warmup as a ratio of total steps (transformers 4 name), used when `warmup_steps` is 0.
    pub warmup_ratio: f64,
    pub seed: u64,
    pub eval_strategy: IntervalStrategy,
    /// Defaults to `logging_steps` when `eval_strategy = "steps"`; a value < 1 is a ratio of the total steps.
    pub eval_steps: Option<f64>,
    pub logging_strategy: IntervalStrategy,
    pub logging_steps: f64,
    pub logging_first_step: bool,
    pub save_strategy: SaveStrategy,
    pub save_steps: f64,
    pub save_total_limit: Option<usize>,
    pub load_best_model_at_end: bool,
    pub metric_for_best_model: Option<String>,
    /// Derived as HF does when absent: true unless `metric_for_best_model` ends with "loss".
    pub greater_is_better: Option<bool>,
    pub early_stopping_patience: Option<usize>,
    pub early_stopping_threshold: f64,
    pub group_by_length: bool,
    pub dataloader_drop_last: bool,
    pub label_smoothing_factor: f64,
    /// Where to report logs besides `trainer_state.json`: `["tensorboard"]` (event files in
    /// `output_dir/runs/`), or empty / `"none"`. A string or a list, as HF accepts.
    #[serde(deserialize_with = "string_or_list")]
    pub report_to: Vec<String>,
    /// Matmuls in bfloat16 with f32 accumulation (AMX or AVX512-BF16 when the CPU has them); master weights,
    /// LayerNorm, softmax, losses and AdamW stay f32, and checkpoints are saved in f32.
    pub bf16: bool,
    /// Data-parallel runs (`mpirun`): the size of the gradient buckets that leave during the backward pass, in
    /// MiB (PyTorch DDP's `bucket_cap_mb`; default 25). A fraction is allowed.
    pub ddp_bucket_cap_mb: Option<f64>,
}

/// `report_to` values that are implemented.
pub const REPORT_TO: &[&str] = &["none", "tensorboard", "mlflow", "all"];

fn string_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// `--set report_to=tensorboard` or `report_to=a,b`.
impl SetValue for Vec<String> {
    const EXPECTED: &'static str = "a name or a comma-separated list of names";
    fn parse_set(s: &str) -> Option<Self> {
        Some(s.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect())
    }
}

impl Default for TrainingArguments {
    fn default() -> Self {
        TrainingArguments {
            output_dir: "trainer_output".into(),
            overwrite_output_dir: false,
            num_train_epochs: 3.0,
            max_steps: -1,
            per_device_train_batch_size: 8,
            per_device_eval_batch_size: 8,
            gradient_accumulation_steps: 1,
            learning_rate: 5e-5,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            max_grad_norm: 1.0,
            lr_scheduler_type: SchedulerType::Linear,
            warmup_steps: 0.0,
            warmup_ratio: 0.0,
            seed: 42,
            eval_strategy: IntervalStrategy::No,
            eval_steps: None,
            logging_strategy: IntervalStrategy::Steps,
            logging_steps: 500.0,
            logging_first_step: false,
            save_strategy: SaveStrategy::Steps,
            save_steps: 500.0,
            save_total_limit: None,
            load_best_model_at_end: false,
            metric_for_best_model: None,
            greater_is_better: None,
            early_stopping_patience: None,
            early_stopping_threshold: 0.0,
            group_by_length: false,
            dataloader_drop_last: false,
            label_smoothing_factor: 0.0,
            report_to: Vec::new(),
            bf16: false,
            ddp_bucket_cap_mb: None,
        }
    }
}

/// `torch.optim.AdamW` settings from the training arguments. As HF's `Trainer.get_decay_parameter_names`,
/// models should exempt biases and LayerNorm weights from `weight_decay`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamW {
    /// The optimizer's hyperparameters at learning rate `lr`.
    pub fn hyper(&self, lr: f64) -> finetune_engine::kernels::adamw::Hyper {
        let AdamW { beta1, beta2, eps, weight_decay } = *self;
        finetune_engine::kernels::adamw::Hyper { lr, beta1, beta2, eps, weight_decay }
    }
}

/// A type a `--set` value can be parsed as; `EXPECTED` names it in errors.
pub trait SetValue: Sized {
    const EXPECTED: &'static str;
    fn parse_set(s: &str) -> Option<Self>;
}

impl SetValue for bool {
    const EXPECTED: &'static str = "a boolean (true or false)";
    fn parse_set(s: &str) -> Option<Self> {
        match s {
            "true" | "True" => Some(true),
            "false" | "False" => Some(false),
            _ => None,
        }
    }
}

impl SetValue for f64 {
    const EXPECTED: &'static str = "a number";
    fn parse_set(s: &str) -> Option<Self> {
        s.parse().ok()
    }
}

macro_rules! int_set_value {
    ($($t:ty => $e:literal),+) => {$(
        impl SetValue for $t {
            const EXPECTED: &'static str = $e;
            fn parse_set(s: &str) -> Option<Self> {
                s.parse().ok()
            }
        }
    )+};
}
int_set_value!(i64 => "an integer", u64 => "a non-negative integer", usize => "a non-negative integer");

impl SetValue for String {
    const EXPECTED: &'static str = "a string";
    fn parse_set(s: &str) -> Option<Self> {
        Some(s.to_string())
    }
}

/// `none` (or `null`) clears an optional field, as HF's CLI parser accepts `None`.
impl<T: SetValue> SetValue for Option<T> {
    const EXPECTED: &'static str = T::EXPECTED;
    fn parse_set(s: &str) -> Option<Self> {
        match s {
            "none" | "None" | "null" => Some(None),
            _ => T::parse_set(s).map(Some),
        }
    }
}

fn parse_field<T: SetValue>(key: &str, value: &str) -> Result<T> {
    T::parse_set(value).ok_or_else(|| TrainError::Args(format!("--set {key}={value}: expected {}", T::EXPECTED)))
}

macro_rules! settable {
    ($($f:ident),+ $(,)?) => {
        const FIELD_NAMES: &[&str] = &[$(stringify!($f)),+];

        impl TrainingArguments {
            /// Applies one `key=value` override, parsing `value` as the field's type.
            pub fn set(&mut self, assignment: &str) -> Result<()> {
                let Some((key, value)) = assignment.split_once('=') else {
                    return Err(TrainError::Args(format!("--set {assignment}: expected key=value")));
                };
                let (key, value) = (key.trim(), value.trim());
                match key {
                    $(stringify!($f) => self.$f = parse_field(key, value)?,)+
                    _ => return Err(TrainError::Args(format!(
                        "--set {key}: unknown training argument `{key}` (known: {})", FIELD_NAMES.join(", ")))),
                }
                Ok(())
            }
        }
    };
}

settable!(
    output_dir,
    overwrite_output_dir,
    num_train_epochs,
    max_steps,
    per_device_train_batch_size,
    per_device_eval_batch_size,
    gradient_accumulation_steps,
    learning_rate,
    weight_decay,
    adam_beta1,
    adam_beta2,
    adam_epsilon,
    max_grad_norm,
    lr_scheduler_type,
    warmup_steps,
    warmup_ratio,
    seed,
    eval_strategy,
    eval_steps,
    logging_strategy,
    logging_steps,
    logging_first_step,
    save_strategy,
    save_steps,
    save_total_limit,
    load_best_model_at_end,
    metric_for_best_model,
    greater_is_better,
    early_stopping_patience,
    early_stopping_threshold,
    group_by_length,
    dataloader_drop_last,
    label_smoothing_factor,
    report_to,
    bf16,
    ddp_bucket_cap_mb,
);

/// Where each training argument acts (or, for some commands, is refused with an error naming it). Every key the
/// TOML reader and `--set` accept has a row; the `every_key_is_used_or_refused` test fails when a key is added
/// without one, so that no accepted key is silently ignored.
pub const KEY_USES: &[(&str, &str)] = &[
    ("output_dir", "checkpoints, final model, metrics and predictions are written there"),
    ("overwrite_output_dir", "allows a run into an output_dir that already holds checkpoints"),
    ("num_train_epochs", "training plan (schedule::TrainingPlan)"),
    ("max_steps", "training plan; overrides num_train_epochs when > 0"),
    ("per_device_train_batch_size", "training sampler batch size"),
    ("per_device_eval_batch_size", "evaluation and prediction batch size"),
    ("gradient_accumulation_steps", "micro-batches per optimizer step (token-normalised for causal LMs)"),
    ("learning_rate", "peak learning rate of the schedule"),
    ("weight_decay", "AdamW decoupled weight decay (ParamStore::adamw_step, no decay for biases and norms)"),
    ("adam_beta1", "AdamW beta1"),
    ("adam_beta2", "AdamW beta2"),
    ("adam_epsilon", "AdamW epsilon"),
    ("max_grad_norm", "gradient clipping (ParamStore::clip_grad_norm); 0 measures without clipping"),
    ("lr_scheduler_type", "learning-rate schedule"),
    ("warmup_steps", "schedule warmup"),
    ("warmup_ratio", "schedule warmup when warmup_steps is 0"),
    ("seed", "initialisation of new heads and adapters, data order, dropout"),
    ("eval_strategy", "when the loop evaluates"),
    ("eval_steps", "evaluation interval"),
    ("logging_strategy", "when the loop logs"),
    ("logging_steps", "logging interval"),
    ("logging_first_step", "logs the first step"),
    ("save_strategy", "when the loop checkpoints"),
    ("save_steps", "checkpoint interval"),
    ("save_total_limit", "checkpoint rotation"),
    ("load_best_model_at_end", "reloads the best checkpoint at the end"),
    ("metric_for_best_model", "best-checkpoint and early-stopping metric"),
    ("greater_is_better", "direction of metric_for_best_model"),
    ("early_stopping_patience", "EarlyStoppingCallback patience"),
    ("early_stopping_threshold", "EarlyStoppingCallback threshold"),
    ("group_by_length", "length-grouped training sampler"),
    ("dataloader_drop_last", "drops the last incomplete training batch"),
    (
        "label_smoothing_factor",
        "the cross-entropy of sft (LabelSmoother) and of train/cv's single-label and token heads; refused for BCE/MSE heads",
    ),
    (
        "report_to",
        "TensorBoard event files in output_dir/runs/, MLflow runs on MLFLOW_TRACKING_URI; others are refused by finalize",
    ),
    ("bf16", "finetune train/cv: bf16 matmuls in the encoder (bf16 module); refused with an error by finetune sft"),
    (
        "ddp_bucket_cap_mb",
        "gradient bucket size of data-parallel runs under mpirun (dist::Reducer); a one-process run says it is unused",
    ),
];

impl TrainingArguments {
    /// Parses TOML text; `origin` (usually the file name) is named in errors, as is any unknown key.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| TrainError::Args(format!("{origin}: {}", e.to_string().trim_end())))
    }

    /// Reads a TOML file, applies `--set` overrides in order, then [`finalize`](Self::finalize)s.
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Self> {
        let mut args = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| TrainError::Args(format!("{}: cannot read: {e}", p.display())))?;
                Self::from_toml_str(&text, &p.display().to_string())?
            }
            None => Self::default(),
        };
        for o in overrides {
            args.set(o)?;
        }
        args.finalize()?;
        Ok(args)
    }

    /// Derives defaults and validates as HF's `TrainingArguments.__post_init__` does (messages are HF's).
    pub fn finalize(&mut self) -> Result<()> {
        let err = |m: String| Err(TrainError::Args(m));
        let unsupported: Vec<String> =
            self.report_to.iter().filter(|r| !REPORT_TO.contains(&r.as_str())).map(|r| format!("{r:?}")).collect();
        if !unsupported.is_empty() {
            return err(format!(
                "report_to: {} not supported (supported: \"tensorboard\", \"mlflow\", \"all\", \"none\")",
                unsupported.join(", ")
            ));
        }
        if self.eval_strategy == IntervalStrategy::Steps && self.eval_steps.is_none_or(|s| s == 0.0) {
            if self.logging_steps > 0.0 {
                self.eval_steps = Some(self.logging_steps);
            } else {
                return err(format!(
                    "evaluation strategy {} requires either non-zero --eval_steps or --logging_steps",
                    self.eval_strategy
                ));
            }
        }
        if (self.load_best_model_at_end || self.early_stopping_patience.is_some())
            && self.metric_for_best_model.is_none()
        {
            self.metric_for_best_model = Some("loss".into());
        }
        if self.greater_is_better.is_none() {
            if let Some(m) = &self.metric_for_best_model {
                self.greater_is_better = Some(!m.ends_with("loss"));
            }
        }

        if self.logging_strategy == IntervalStrategy::Steps && self.logging_steps == 0.0 {
            return err(format!("logging strategy {} requires non-zero --logging_steps", self.logging_strategy));
        }
        for (name, v, on) in [
            ("logging_steps", Some(self.logging_steps), self.logging_strategy == IntervalStrategy::Steps),
            ("eval_steps", self.eval_steps, self.eval_strategy == IntervalStrategy::Steps),
            ("save_steps", Some(self.save_steps), self.save_strategy == SaveStrategy::Steps),
        ] {
            if let Some(v) = v {
                if on && v > 1.0 && v != v.trunc() {
                    return err(format!("--{name} must be an integer if bigger than 1: {v}"));
                }
                if v < 0.0 || v.is_nan() {
                    return err(format!("--{name} must be >= 0, got {v}"));
                }
            }
        }

        if self.load_best_model_at_end && self.save_strategy != SaveStrategy::Best {
            let same = matches!(
                (self.eval_strategy, self.save_strategy),
                (IntervalStrategy::No, SaveStrategy::No)
                    | (IntervalStrategy::Steps, SaveStrategy::Steps)
                    | (IntervalStrategy::Epoch, SaveStrategy::Epoch)
            );
            if !same {
                return err(format!(
                    "--load_best_model_at_end requires the save and eval strategy to match, except when \
                     --save_strategy=\"best\", but found\n- Evaluation strategy: {}\n- Save strategy: {}",
                    self.eval_strategy, self.save_strategy
                ));
            }
            let eval_steps = self.eval_steps.unwrap_or(0.0);
            if self.eval_strategy == IntervalStrategy::Steps && eval_steps > 0.0 && self.save_steps % eval_steps != 0.0
            {
                if eval_steps < 1.0 || self.save_steps < 1.0 {
                    if !(eval_steps < 1.0 && self.save_steps < 1.0) {
                        return err(format!(
                            "--load_best_model_at_end requires the saving steps to be a multiple of the evaluation \
                             steps, which cannot get guaranteed when mixing ratio and absolute steps for save_steps \
                             {} and eval_steps {}.",
                            self.save_steps, eval_steps
                        ));
                    }
                    // Integer arithmetic as HF, so 0.2 / 0.1 is a multiple despite float rounding.
                    let (s, e) = ((self.save_steps * 1e6).round() as i64, (eval_steps * 1e6).round() as i64);
                    if e != 0 && s % e != 0 {
                        return err(format!(
                            "--load_best_model_at_end requires the saving steps to be a multiple of the evaluation \
                             steps, but found {}, which is not a multiple of {}.",
                            self.save_steps, eval_steps
                        ));
                    }
                } else {
                    return err(format!(
                        "--load_best_model_at_end requires the saving steps to be a round multiple of the evaluation \
                         steps, but found {}, which is not a round multiple of {}.",
                        self.save_steps, eval_steps
                    ));
                }
            }
        }

        if self.warmup_steps < 0.0 || self.warmup_steps.is_nan() {
            return err(format!("Got warmup_steps = {}, Expected value warmup_steps >= 0", self.warmup_steps));
        }
        if !(0.0..=1.0).contains(&self.warmup_ratio) {
            return err("warmup_ratio must lie in range [0,1]".into());
        }
        if self.early_stopping_patience.is_some() && self.eval_strategy == IntervalStrategy::No {
            return err("EarlyStoppingCallback requires IntervalStrategy of steps or epoch".into());
        }
        if self.per_device_train_batch_size == 0 || self.per_device_eval_batch_size == 0 {
            return err("per_device_train_batch_size and per_device_eval_batch_size must be >= 1".into());
        }
        if self.gradient_accumulation_steps == 0 {
            return err("gradient_accumulation_steps must be >= 1".into());
        }
        if self.ddp_bucket_cap_mb.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
            return err(format!("ddp_bucket_cap_mb must be > 0, got {}", self.ddp_bucket_cap_mb.unwrap_or(0.0)));
        }
        if [self.learning_rate, self.max_grad_norm].iter().any(|v| v.is_nan() || *v < 0.0) {
            return err("learning_rate and max_grad_norm must be >= 0".into());
        }
        if !(0.0..1.0).contains(&self.label_smoothing_factor) {
            return err(format!("label_smoothing_factor must lie in [0, 1), got {}", self.label_smoothing_factor));
        }
        if self.max_steps <= 0 && (self.num_train_epochs.is_nan() || self.num_train_epochs <= 0.0) {
            return err(format!(
                "num_train_epochs must be > 0 when max_steps is not set, got {}",
                self.num_train_epochs
            ));
        }
        Ok(())
    }

    /// Warmup steps for a run of `num_training_steps`, as HF's `get_warmup_steps` (with the transformers 4
    /// `warmup_ratio` used when `warmup_steps` is 0).
    pub fn get_warmup_steps(&self, num_training_steps: u64) -> u64 {
        if self.warmup_steps >= 1.0 {
            self.warmup_steps.trunc() as u64
        } else if self.warmup_steps > 0.0 {
            (num_training_steps as f64 * self.warmup_steps).ceil() as u64
        } else {
            (num_training_steps as f64 * self.warmup_ratio).ceil() as u64
        }
    }

    /// The AdamW hyper-parameters a model's optimizer is built with (the learning rate comes per step).
    pub fn adamw(&self) -> AdamW {
        AdamW {
            beta1: self.adam_beta1,
            beta2: self.adam_beta2,
            eps: self.adam_epsilon,
            weight_decay: self.weight_decay,
        }
    }

    /// `per_device_train_batch_size * gradient_accumulation_steps` (one process).
    pub fn total_train_batch_size(&self) -> usize {
        self.per_device_train_batch_size * self.gradient_accumulation_steps
    }

    /// The metric key compared for the best model, prefixed with `eval_` as HF does.
    /// Whether TensorBoard event files are written (`report_to` has "tensorboard" or "all").
    pub fn report_to_tensorboard(&self) -> bool {
        self.report_to.iter().any(|r| r == "tensorboard" || r == "all")
    }

    /// Whether runs are logged to MLflow: `report_to` has "mlflow", or "all" while `MLFLOW_TRACKING_URI` is set
    /// (as HF's "all" reports to the integrations that are set up).
    pub fn report_to_mlflow(&self) -> bool {
        self.report_to.iter().any(|r| r == "mlflow")
            || (self.report_to.iter().any(|r| r == "all")
                && std::env::var("MLFLOW_TRACKING_URI").is_ok_and(|v| !v.trim().is_empty()))
    }

    pub fn best_metric_key(&self) -> Option<String> {
        self.metric_for_best_model
            .as_ref()
            .map(|m| if m.starts_with("eval_") { m.clone() } else { format!("eval_{m}") })
    }
}
