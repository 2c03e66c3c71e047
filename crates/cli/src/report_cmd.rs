//! `finetune report` and what `train`/`cv` leave for it: `{split}_details.json`, `run_config.json` and
//! `report.html` in the output directory.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use finetune_train::TrainingArguments;
use serde_json::{json, Map, Value};

use finetune_train::workflow::{write_json_file, RunConfig};

/// `finetune report RUN_DIR [RUN_DIR ...] -o report.html`.
#[derive(Args, Debug)]
#[command(after_help = "Reads what train/cv write in a run directory: trainer_state.json (loss, learning rate and \
evaluations per step), all_results.json, run_config.json (model, data, hyper-parameters, wall time, memory), \
eval_details.json / test_details.json (confusion matrix, ROC/PR curves, calibration, NER reports) and \
cv_results.json with fold-K/. Several runs are overlaid and their differing hyper-parameters highlighted.\n\n\
Examples:\n  finetune report bench-out/sentiment -o sentiment.html\n  finetune report runs/lr-2e-5 runs/lr-5e-5 -o lr.html")]
pub struct ReportArgs {
    /// Run directories (train or cv output_dir).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Where to write the HTML file.
    #[arg(short = 'o', long = "output", default_value = "report.html")]
    pub output: PathBuf,
}

pub fn run_report(a: ReportArgs) -> Result<()> {
    let dirs: Vec<&Path> = a.runs.iter().map(PathBuf::as_path).collect();
    let html = finetune_report::report_dirs(&dirs)?;
    finetune_report::write_html(&a.output, &html)?;
    eprintln!("report written to {}", a.output.display());
    Ok(())
}

/// The run settings that describe a run in its report (data files, model, task).
pub(crate) fn run_meta(run: &RunConfig, _args: &TrainingArguments, command: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("command".into(), json!(command));
    m.insert("task".into(), json!(run.task));
    for (k, v) in [
        ("model_name_or_path", &run.model_name_or_path),
        ("train_file", &run.train_file),
        ("validation_file", &run.validation_file),
        ("test_file", &run.test_file),
        ("problem_type", &run.problem_type),
        ("split", &run.split),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    }
    m.insert("max_seq_length".into(), json!(run.max_seq_length));
    m
}

/// End of a run: `run_config.json` (settings, wall time, peak memory, versions), then `report.html`.
pub(crate) fn finish_run(
    out: &Path,
    meta: Map<String, Value>,
    args: &TrainingArguments,
    started: Instant,
) -> Result<()> {
    if !out.is_dir() {
        return Ok(());
    }
    let config = finetune_report::run_config(meta, args, started.elapsed().as_secs_f64())?;
    write_json_file(&out.join("run_config.json"), &config)?;
    let html = finetune_report::report_dirs(&[out]).with_context(|| format!("report of {}", out.display()))?;
    let path = out.join("report.html");
    finetune_report::write_html(&path, &html)?;
    eprintln!("report written to {}", path.display());
    Ok(())
}

