//! `finetune sweep`: hyper-parameter search over `finetune train` runs (grid, random, TPE; median or successive
//! halving pruning; a SQLite study store shared by workers). Argument parsing and printing only; the search is
//! `finetune_train::sweep`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use finetune_train::sweep::{self, Sweep, SweepOptions, SWEEP_KEYS};
use finetune_train::workflow;

use crate::train_cmd::progress_mode;

const EXAMPLE: &str = "\
Examples:
  finetune sweep --config examples/sentiment-sweep.toml
  finetune sweep --config examples/sentiment.toml --space space.toml --n-trials 16 --sampler tpe --pruner median
  finetune sweep --config run.toml --worker &  finetune sweep --config run.toml --worker &  wait
  finetune sweep --config run.toml            # after the workers: trials table, results, test of the best trial
  finetune train --config bench-out/sweep/best_run.toml

Search space (the run file's [sweep] table, or --space FILE), Optuna's vocabulary; any run key or
TrainingArguments key:
  [sweep]
  sampler = \"tpe\"
  n_trials = 16
  pruner = \"median\"
  learning_rate = { type = \"float\", low = 1e-5, high = 1e-3, log = true }
  per_device_train_batch_size = { type = \"categorical\", choices = [16, 32] }
  num_train_epochs = { type = \"int\", low = 1, high = 4 }
  warmup_ratio = { type = \"float\", low = 0.0, high = 0.2, step = 0.05 }

Objective: metric_for_best_model (eval_ prefixed; default eval_loss) on the validation data, direction from
greater_is_better. Trials never see the test data: the best trial is scored on it once, at the end.

Output (output_dir): sweep.db (SQLite: studies, trials, params, intermediate_values, trial_attrs), trial-N/ (a
`finetune train` output per trial; model files of other than the best trial are deleted with keep_models =
\"best\"), sweep_results.json, sweep_results.csv, best_run.toml (a run file for `finetune train --config`).
A sweep that is stopped and started again continues: finished trials are kept, a trial whose worker died is
re-run. Workers started on one store (same output_dir, also from a Slurm job array or a Kubernetes Indexed Job on
a shared file system) never run the same trial twice.";

/// `finetune sweep`: hyper-parameter search.
#[derive(Args, Debug)]
#[command(after_long_help = sweep_long_help(), after_help = EXAMPLE)]
pub struct SweepArgs {
    /// TOML run file as for `finetune train`, with an optional [sweep] table (search space and settings).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// TOML file with the search space (and settings) at top level; adds to and overrides [sweep].
    #[arg(long, value_name = "FILE")]
    space: Option<PathBuf>,
    /// Sampler: grid, random or tpe [sweep: sampler; default: tpe].
    #[arg(long, value_parser = ["grid", "random", "tpe"])]
    sampler: Option<String>,
    /// Pruner: none, median or successive_halving [sweep: pruner; default: none].
    #[arg(long, value_parser = ["none", "median", "successive_halving"])]
    pruner: Option<String>,
    /// Trials in the study, all workers together [sweep: n_trials; default: 10, grid: its size].
    #[arg(long)]
    n_trials: Option<u64>,
    /// Sampler seed [sweep: seed; default: the run's seed].
    #[arg(long)]
    seed: Option<u64>,
    /// Only run trials (for several workers on one store): no summary and no test evaluation; run `finetune
    /// sweep` without --worker afterwards for those.
    #[arg(long)]
    worker: bool,
    /// Override a run key or TrainingArguments key of every trial, e.g. --set max_steps=50 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Progress display of each trial: auto, lines, off.
    #[arg(long, default_value = "off", value_parser = ["auto", "lines", "off"])]
    progress: String,
}

fn sweep_long_help() -> String {
    let mut s = String::from("Sweep settings ([sweep] scalars; tables are searched parameters):\n");
    for (k, d, m) in SWEEP_KEYS {
        s.push_str(&format!("  {k:<24} default {d:<22} {m}\n"));
    }
    s.push('\n');
    s.push_str(EXAMPLE);
    s
}

pub fn run_sweep(a: SweepArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let origin = a.config.display().to_string();
    let table = workflow::read_table(&a.config)?;
    let space = match &a.space {
        Some(p) => Some((p.display().to_string(), workflow::read_table(p)?)),
        None => None,
    };
    let mut flags: Vec<(&str, toml::Value)> = Vec::new();
    if let Some(s) = &a.sampler {
        flags.push(("sampler", toml::Value::String(s.clone())));
    }
    if let Some(p) = &a.pruner {
        flags.push(("pruner", toml::Value::String(p.clone())));
    }
    if let Some(n) = a.n_trials {
        if n == 0 {
            bail!("--n-trials: must be >= 1");
        }
        flags.push(("n_trials", toml::Value::Integer(n as i64)));
    }
    if let Some(s) = a.seed {
        flags.push(("seed", toml::Value::Integer(i64::try_from(s).map_err(|_| anyhow!("--seed {s}: too large"))?)));
    }
    let space = if flags.is_empty() {
        space
    } else {
        let (o, mut t) = space.unwrap_or_else(|| {
            let inner = match table.get("sweep") {
                Some(toml::Value::Table(t)) => t.clone(),
                _ => toml::Table::new(),
            };
            (format!("{origin}: [sweep]"), inner)
        });
        for (k, v) in flags {
            t.insert(k.to_string(), v);
        }
        Some((o, t))
    };
    let sweep = Sweep::from_run_table(&origin, table, space.as_ref().map(|(o, t)| (o.as_str(), t.clone())), &a.set)?;
    let opts = SweepOptions { progress: progress_mode(&a.progress), worker: a.worker, print: true };
    let r = sweep::run_sweep(&sweep, &opts)?;
    if a.worker {
        let mine = r.trials.iter().filter(|t| t.finished_at.is_some()).count();
        eprintln!("sweep worker: done ({mine} finished trials in {})", r.output_dir.join("sweep.db").display());
        return Ok(());
    }
    print!("{}", sweep::trials_table(&sweep, &r));
    match &r.best {
        Some(b) => {
            println!(
                "\nbest trial {}: {} = {} ({})",
                b.number,
                r.objective,
                b.value.unwrap_or(f64::NAN),
                b.output_dir.as_deref().unwrap_or("-")
            );
            if let Some(m) = &r.test_metrics {
                workflow::print_metrics(&format!("best trial {} test", b.number), m);
            }
        }
        None => println!("\nno trial completed"),
    }
    for f in &r.files {
        println!("written: {}", f.display());
    }
    // run_config.json from the base run (model, data, the settings every trial shares, wall time), then the
    // report: trials table, best-so-far curve and each parameter against the objective.
    let (run, args) = sweep.trial_config(&BTreeMap::new(), None)?;
    crate::report_cmd::finish_run(&r.output_dir, crate::report_cmd::run_meta(&run, &args, "sweep"), &args, started)
}
