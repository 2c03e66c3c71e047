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

/// `finetune runs DIR [--sort COLUMN [--desc]] [--diff A B]`.
#[derive(Args, Debug)]
#[command(after_help = "Lists every run directory under DIR (train or cv output: trainer_state.json, \
all_results.json or cv_results.json): task, model, learning rate, epochs, batch size, seed, the final eval_* metrics \
(cv: the fold means) and the wall time.\n\nExamples:\n  finetune runs bench-out --sort eval_accuracy --desc\n  \
finetune runs bench-out --diff lr-2e-5 lr-5e-5")]
pub struct RunsArgs {
    /// Directory to search (up to 4 levels deep).
    pub dir: PathBuf,
    /// Sort by this column (a header name, e.g. eval_accuracy, lr, wall_s).
    #[arg(long)]
    pub sort: Option<String>,
    /// Sort in descending order.
    #[arg(long, requires = "sort")]
    pub desc: bool,
    /// Show the settings and final metrics that differ between two runs (paths, or names under DIR).
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    pub diff: Option<Vec<PathBuf>>,
}

pub fn run_runs(a: RunsArgs) -> Result<()> {
    if let Some(pair) = &a.diff {
        let load = |p: &PathBuf| {
            let path = if p.is_dir() { p.clone() } else { a.dir.join(p) };
            let mut r = finetune_report::Run::load(&path)?;
            r.name = p.display().to_string();
            Ok::<_, anyhow::Error>(r)
        };
        let (x, y) = (load(&pair[0])?, load(&pair[1])?);
        print!("{}", finetune_report::runs::diff(&x, &y));
        return Ok(());
    }
    let runs = finetune_report::runs::find_runs(&a.dir)?;
    if runs.is_empty() {
        anyhow::bail!("{}: no run directories found", a.dir.display());
    }
    print!("{}", finetune_report::runs::runs_table(&runs, a.sort.as_deref(), a.desc)?);
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
        ("class_weight", &run.class_weight),
        ("resample", &run.resample),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), json!(v));
        }
    }
    m.insert("max_seq_length".into(), json!(run.max_seq_length));
    if let Some(a) = &run.augment {
        let e = &a.eda;
        m.insert(
            "augment".into(),
            json!(format!(
                "EDA num_aug {} alpha_sr {} alpha_ri {} alpha_rs {} alpha_rd {}",
                e.num_aug, e.alpha_sr, e.alpha_ri, e.alpha_rs, e.alpha_rd
            )),
        );
    }
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
