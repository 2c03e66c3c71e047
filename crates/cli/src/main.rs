//! `finetune`: the command line. Argument parsing and glue only; the work is done by the library crates.

mod compare_classifiers;
mod cv_cmd;
mod data_cmd;
mod decoder_cmd;
mod export_cmd;
mod gen_eval;
mod input;
mod metrics_cmd;
mod report_cmd;
mod serve_cmd;
mod sweep_cmd;
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
    /// Hyper-parameter search over training runs: grid, random or TPE, median/successive-halving pruning, a
    /// SQLite study store that several workers share.
    Sweep(Box<sweep_cmd::SweepArgs>),
    /// Predict labels (or per-word tags of a NER model) with a saved model (JSON lines).
    Predict(train_cmd::PredictArgs),
    /// Fine-tune a Llama-family decoder (SmolLM2, Qwen2, Llama): instruction SFT or continued pretraining, full or
    /// LoRA (TRL's `trl sft` names).
    Sft(Box<decoder_cmd::SftArgs>),
    /// Generate completions for prompt records with a decoder (or base + LoRA adapter); BLEU, chrF, ROUGE, EM.
    Generate(decoder_cmd::GenerateArgs),
    /// Compare two models on the same data: decoders (metrics, paired bootstrap), or classifiers and NER models
    /// (bootstrap CIs, paired bootstrap, approximate randomisation, McNemar's exact test).
    Compare(decoder_cmd::CompareArgs),
    /// Sliding-window perplexity of a text set (Hugging Face's perplexity guide).
    Perplexity(decoder_cmd::PerplexityArgs),
    /// A self-contained HTML report (inline SVG plots) of one or more run directories, runs overlaid.
    Report(report_cmd::ReportArgs),
    /// One line per run found under a directory (task, model, hyper-parameters, final metrics, wall time).
    Runs(report_cmd::RunsArgs),
    /// Merge a LoRA adapter into its base model and save a full Hugging Face model directory.
    Merge(decoder_cmd::MergeArgs),
    /// Export a decoder (or base + LoRA adapter) as GGUF for llama.cpp (f32, f16, q8_0), with a drift check.
    Export(export_cmd::ExportArgs),
    /// Serve a model over HTTP: /predict for classifiers and NER, OpenAI-compatible completions for decoders.
    Serve(Box<serve_cmd::ServeArgs>),
}

/// The launcher's world size when this process was started by `mpirun`/`srun` (their environment variables).
#[cfg(not(feature = "mpi"))]
fn launcher_world_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"].iter().find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// Data-parallel ranks run `train` and `sft`; anything else would run N times over the same outputs.
fn check_ranks(command: &Command, ranks: usize) -> anyhow::Result<()> {
    if ranks > 1 && !matches!(command, Command::Train(_) | Command::Sft(_)) {
        anyhow::bail!(
            "this command runs in one process, not on {ranks} MPI ranks: start it without mpirun (data-parallel \
             ranks run `finetune train` and `finetune sft`)"
        );
    }
    if ranks > 1 && !cfg!(feature = "mpi") {
        anyhow::bail!(
            "started on {ranks} MPI ranks, but this finetune was built without data-parallel support: build it \
             with `cargo build --release --features mpi` (Open MPI: Debian's libopenmpi-dev)"
        );
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    #[cfg(feature = "mpi")]
    let mpi_world = finetune_train::dist::mpi::MpiWorld::from_launcher().map(std::sync::Arc::new);
    #[cfg(feature = "mpi")]
    let ranks = mpi_world.as_ref().map_or(1, |w| finetune_train::dist::Collective::size(&**w));
    #[cfg(not(feature = "mpi"))]
    let ranks = launcher_world_size().unwrap_or(1);
    if let Err(e) = check_ranks(&cli.command, ranks) {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
    #[cfg(feature = "mpi")]
    if let Some(w) = &mpi_world {
        finetune_train::dist::install(w.clone());
    }
    let result = match cli.command {
        Command::Metrics(cmd) => metrics_cmd::run(cmd),
        Command::Data(cmd) => data_cmd::run(cmd),
        Command::Train(a) => train_cmd::run_train(*a),
        Command::Eval(a) => train_cmd::run_eval(a),
        Command::Predict(a) => train_cmd::run_predict(a),
        Command::Sft(a) => decoder_cmd::run_sft(*a),
        Command::Generate(a) => decoder_cmd::run_generate(a),
        Command::Compare(a) => decoder_cmd::run_compare(a),
        Command::Perplexity(a) => decoder_cmd::run_perplexity(a),
        Command::Merge(a) => decoder_cmd::run_merge(a),
        Command::Export(a) => export_cmd::run_export(a),
        Command::Cv(a) => cv_cmd::run_cv(*a),
        Command::Sweep(a) => sweep_cmd::run_sweep(*a),
        Command::Report(a) => report_cmd::run_report(a),
        Command::Runs(a) => report_cmd::run_runs(a),
        Command::Serve(a) => serve_cmd::run_serve(*a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        // One rank's error ends them all (the others may wait in a collective).
        #[cfg(feature = "mpi")]
        if let Some(w) = mpi_world.filter(|_| ranks > 1) {
            w.abort(2);
        }
        std::process::exit(2);
    }
    // An MPI world finalizes when its last reference drops.
    finetune_train::dist::uninstall();
}
