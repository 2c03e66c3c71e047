//! The encoder workflows as library functions: what `finetune train`, `eval`, `predict` and `cv` do, callable
//! from Rust, so the command line, the hyper-parameter search and library users share one path.
//!
//! ```text
//! use finetune_train::workflow::{self, RunOptions};
//! let (run, mut args) = workflow::load_config(Some(Path::new("examples/sentiment.toml")))?;  // run keys + TrainingArguments
//! workflow::apply_set(&mut run, &mut args, "learning_rate=3e-5")?;
//! args.finalize()?;
//! let result = workflow::train(&run, &args, &RunOptions::default())?;   // do_train / do_eval / do_predict
//! println!("{:?} {:?}", result.eval_metrics, result.evaluations);       // final and per-evaluation metrics
//! let ev = workflow::evaluate("bench-out/sentiment", Path::new("test.csv"), &InferOptions::default())?;
//! let cv = workflow::cross_validate(&run, &args, 5, &RunOptions::default())?;  // mean ± std over folds
//! ```

mod classify;
mod cv;
mod mlm;
mod run_file;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use classify::{
    embed_examples, encode, encode_tokens, evaluate, example_losses, metric_value, parse_problem, predict, prefixed,
    print_metrics, read, read_conll, read_opts, read_token_data, save_metrics, split_opts, token_read_opts,
    tokenizer_for, train, write_json_file, PredictInput, Predictor, TokenSplit,
};
pub use cv::{cross_validate, CvResult};
pub use run_file::{
    apply_set, closest, from_table, is_run_key, load_config, one_line, read_table, training_keys, Augment, MlmKeys,
    RunConfig, AUGMENT_KEYS, RUN_KEYS,
};

use crate::{EvalCallback, ProgressMode, Resume, TrainError, TrainOptions, TrainOutput};

/// Errors of a workflow: bad run keys or data (one line naming the file, line or key) or an error of the
/// training loop, the data, the model or the metrics.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// A run key, flag or input file that cannot be used; the message names it.
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Data(#[from] finetune_data::DataError),
    /// Model loading, tokenizers, metrics, JSON.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

macro_rules! other_errors {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for WorkflowError {
            fn from(e: $t) -> Self {
                WorkflowError::Other(Box::new(e))
            }
        }
    )*};
}
other_errors!(
    finetune_models::checkpoint::CheckpointError,
    finetune_models::config::ConfigError,
    finetune_models::tokenizer::TokenizerError,
    finetune_metrics::MetricError,
    serde_json::Error,
    std::io::Error,
);

pub type Result<T> = std::result::Result<T, WorkflowError>;

/// How a workflow runs: progress display, whether it prints metrics and reports to stdout (as the command line
/// does), and a callback after each evaluation during training.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub progress: ProgressMode,
    /// Print `***** split metrics *****` blocks and the test classification report to stdout.
    pub print: bool,
    /// Called after each evaluation during training; `true` stops the run (see [`EvalCallback`]).
    pub on_evaluate: Option<EvalCallback>,
}

impl RunOptions {
    fn train_options(&self, run: &RunConfig) -> TrainOptions {
        let resume = run.resume_from_checkpoint.as_deref().map(|r| match r {
            "latest" | "true" => Resume::Latest,
            p => Resume::From(PathBuf::from(p)),
        });
        TrainOptions { resume, progress: self.progress, on_evaluate: self.on_evaluate.clone() }
    }

    fn print_metrics(&self, title: &str, m: &BTreeMap<String, f64>) {
        if self.print {
            print_metrics(title, m);
        }
    }
}

/// What [`train`] did: the output directory and the metrics it wrote.
#[derive(Debug, Clone, Default)]
pub struct TrainResult {
    pub output_dir: PathBuf,
    /// `train_runtime`, `train_loss`, ... (None without do_train).
    pub train_metrics: Option<BTreeMap<String, f64>>,
    /// The `eval_*` metrics of each evaluation during training, with its `step` and `epoch`, in order.
    pub evaluations: Vec<BTreeMap<String, f64>>,
    /// Final validation metrics (eval_results.json), with the best model when `load_best_model_at_end`.
    pub eval_metrics: Option<BTreeMap<String, f64>>,
    /// Test metrics (test_results.json) when the test data has labels.
    pub test_metrics: Option<BTreeMap<String, f64>>,
    pub global_step: u64,
    pub best_metric: Option<f64>,
    pub best_model_checkpoint: Option<String>,
    /// The MLflow run of `report_to = ["mlflow"]`.
    pub mlflow_run_id: Option<String>,
}

impl TrainResult {
    fn new(out: &Path) -> Self {
        TrainResult { output_dir: out.to_path_buf(), ..Default::default() }
    }

    fn record_training(&mut self, output: &TrainOutput) {
        self.train_metrics = Some(output.metrics.clone());
        self.global_step = output.global_step;
        self.best_metric = output.state.best_metric;
        self.best_model_checkpoint = output.state.best_model_checkpoint.clone();
        self.mlflow_run_id = output.mlflow_run_id.clone();
        self.evaluations = output
            .state
            .log_history
            .iter()
            .filter(|e| e.keys().any(|k| k.starts_with("eval_")))
            .map(|e| e.iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect())
            .collect();
    }
}

/// Inference settings of [`evaluate`] and [`predict`] (the `finetune eval`/`predict` flags).
#[derive(Debug, Clone)]
pub struct InferOptions {
    pub text_column_name: String,
    pub text_pair_column_name: Option<String>,
    pub label_column_name: String,
    pub label_separator: Option<String>,
    /// Tokens per example after truncation (capped by the model).
    pub max_seq_length: usize,
    /// Examples per forward pass.
    pub batch_size: usize,
    /// Token classification: score every sub-token, not only each word's first.
    pub label_all_tokens: bool,
    /// Matmuls in bfloat16 with f32 accumulation, as `bf16 = true` in training.
    pub bf16: bool,
}

impl Default for InferOptions {
    fn default() -> Self {
        InferOptions {
            text_column_name: "text".into(),
            text_pair_column_name: None,
            label_column_name: "label".into(),
            label_separator: None,
            max_seq_length: 128,
            batch_size: 32,
            label_all_tokens: false,
            bf16: false,
        }
    }
}

/// What [`evaluate`] returns: `eval_*` metrics and the classification report (scikit-learn's, or seqeval's for
/// token classification; None for data without labels).
#[derive(Debug, Clone)]
pub struct EvalResult {
    pub metrics: BTreeMap<String, f64>,
    pub report: Option<String>,
}

/// What [`predict`] wrote: the number of predictions (examples, or sentences for token classification).
#[derive(Debug, Clone, Copy)]
pub struct PredictResult {
    pub count: usize,
    pub token_classification: bool,
}
