//! `finetune`: the command line. Argument parsing and glue only; the work is done by the library crates.

use std::io::{BufRead, Write};

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
    Metrics(MetricsCommand),
}

#[derive(Subcommand)]
enum MetricsCommand {
    /// List the metrics of `finetune metrics call` and the Python function each one mirrors.
    List,
    /// Read JSON lines {"metric": NAME, "args": {...}} on stdin; write one JSON result per line.
    Call,
}

fn main() {
    let cli = Cli::parse();
    let code = match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Metrics(MetricsCommand::List) => {
            for m in finetune_metrics::call::list() {
                println!("{:<36} {}", m.name, m.reference);
            }
        }
        Command::Metrics(MetricsCommand::Call) => {
            let stdin = std::io::stdin();
            let mut out = std::io::stdout().lock();
            for line in stdin.lock().lines() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let answer = finetune_metrics::call::call_line(&line);
                writeln!(out, "{answer}")?;
            }
        }
    }
    Ok(())
}
