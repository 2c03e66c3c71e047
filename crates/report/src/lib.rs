//! `finetune-report`: one self-contained HTML file describing one or more fine-tuning runs — summary,
//! hyper-parameters (those that differ between runs highlighted), training loss and learning rate per step,
//! every evaluation metric per evaluation, and for classifiers the confusion matrix, ROC and precision-recall
//! curves, per-class bars and a calibration curve; for NER the per-type bars; for `cv` the per-fold table.
//!
//! Plots are inline SVG written by [`svg`] (no plotting crate: the SVG takes its colours from the page's CSS
//! variables, which is what makes one file readable in light and dark mode and in print). No script, no
//! network: the file can be attached to an e-mail.
//!
//! ```text
//! let runs = vec![Run::load(Path::new("out/a"))?, Run::load(Path::new("out/b"))?];
//! std::fs::write("report.html", render(&runs))?;
//! ```

pub mod html;
pub mod run;
pub mod runs;
pub mod svg;

use std::path::Path;

use serde_json::{json, Map, Value};

pub use html::render;
pub use run::Run;

/// Errors of the report: a run directory or file that cannot be read (named in the message).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}")]
    Input(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

pub type Result<T, E = ReportError> = std::result::Result<T, E>;

/// Loads every run directory (legend names made unique) and renders the report.
pub fn report_dirs(dirs: &[&Path]) -> Result<String> {
    let mut runs = dirs.iter().map(|d| Run::load(d)).collect::<Result<Vec<_>>>()?;
    // Same directory names (out/a/run, out/b/run): fall back to the path as given.
    for i in 0..runs.len() {
        if runs.iter().filter(|r| r.name == runs[i].name).count() > 1 {
            runs[i].name = dirs[i].display().to_string();
        }
    }
    Ok(render(&runs))
}

/// Writes `html` to `path` through a temporary file and a rename (no half-written report).
pub fn write_html(path: &Path, html: &str) -> Result<()> {
    let io = |e| ReportError::Io { path: path.display().to_string(), source: e };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("html.tmp");
    std::fs::write(&tmp, html).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Keys that name where a run writes rather than how it trains; left out of the hyper-parameter comparison.
const NOT_HYPERPARAMETERS: &[&str] = &["output_dir", "overwrite_output_dir", "logging_dir"];

/// The `run_config.json` of a run: `meta` (task, model, data files, ...), all `training_args`, the
/// `non_default_args` (those that differ from `TrainingArguments::default()`), `wall_time_s`, `peak_rss_mib`
/// (Linux: the process's VmHWM) and `versions`.
pub fn run_config(
    meta: Map<String, Value>,
    args: &finetune_train::TrainingArguments,
    wall_time_s: f64,
) -> Result<Value> {
    let to_map = |a: &finetune_train::TrainingArguments| match serde_json::to_value(a) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ReportError::Input("training arguments are not a table".into())),
        Err(e) => Err(ReportError::Input(format!("training arguments: {e}"))),
    };
    let all = to_map(args)?;
    let defaults = to_map(&finetune_train::TrainingArguments::default())?;
    let non_default: Map<String, Value> = all
        .iter()
        .filter(|(k, v)| !NOT_HYPERPARAMETERS.contains(&k.as_str()) && defaults.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut out = meta;
    out.insert("training_args".into(), Value::Object(all));
    out.insert("non_default_args".into(), Value::Object(non_default));
    out.insert("wall_time_s".into(), json!((wall_time_s * 1000.0).round() / 1000.0));
    if let Some(m) = peak_rss_mib() {
        out.insert("peak_rss_mib".into(), json!(m));
    }
    out.insert("versions".into(), json!({ "finetune": env!("CARGO_PKG_VERSION") }));
    Ok(Value::Object(out))
}

/// Peak resident memory of this process in MiB (Linux `/proc/self/status` VmHWM), if known.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kib / 1024.0 * 10.0).round() / 10.0)
}
