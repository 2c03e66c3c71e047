//! `finetune`: the command line. Argument parsing and glue only; the work is done by the library crates.

mod cv_cmd;
mod data_cmd;
mod input;
mod metrics_cmd;
mod train_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "finetune", version, about = "Fine-tune and evaluate language models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Evaluation metrics identical to scikit-learn, seqeval, sacrebleu, rouge-score and HF evaluate.
    #[command(subcommand)]
    Metrics(metrics_cmd::MetricsCommand),
    /// Data preparation: split, clean and describe datasets (CSV/TSV, JSONL, CoNLL, text).
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
    /// Fine-tune a BERT-family encoder for sequence classification (run_glue.py) or NER (run_ner.py), HF layout.
    Train(Box<train_cmd::TrainArgs>),
    /// Evaluate a saved classification or NER model on labelled data (metrics and classification report).
    Eval(train_cmd::EvalArgs),
    /// K-fold cross-validation of a training run: a fresh model per fold, metrics per fold and mean ± std.
    Cv(Box<cv_cmd::CvArgs>),
    /// Predict labels (or per-word tags of a NER model) with a saved model (JSON lines).
    Predict(train_cmd::PredictArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Metrics(cmd) => metrics_cmd::run(cmd),
        Command::Data(cmd) => data_cmd::run(cmd),
        Command::Train(a) => train_cmd::run_train(*a),
        Command::Eval(a) => train_cmd::run_eval(a),
        Command::Predict(a) => train_cmd::run_predict(a),
        Command::Cv(a) => cv_cmd::run_cv(*a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
}
