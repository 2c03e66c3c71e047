//! `finetune runs DIR`: one line per run found under a directory, sortable by any column, and the settings
//! that differ between two runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::run::{is_speed, Run};
use crate::{ReportError, Result};

/// Run directories under `root` (itself included): directories holding trainer_state.json, all_results.json
/// or cv_results.json. Checkpoints, TensorBoard `runs/` and a cv run's `fold-K/` are not listed separately.
pub fn find_runs(root: &Path) -> Result<Vec<Run>> {
    if !root.is_dir() {
        return Err(ReportError::Input(format!("{}: not a directory", root.display())));
    }
    let mut dirs = Vec::new();
    walk(root, 0, &mut dirs)?;
    dirs.sort();
    let mut runs = Vec::new();
    for d in dirs {
        let mut r = Run::load(&d)?;
        r.name = d.strip_prefix(root).ok().filter(|p| !p.as_os_str().is_empty()).map_or_else(
            || d.file_name().map_or_else(|| d.display().to_string(), |n| n.to_string_lossy().into_owned()),
            |p| p.display().to_string(),
        );
        runs.push(r);
    }
    Ok(runs)
}

fn is_run_dir(d: &Path) -> bool {
    ["trainer_state.json", "all_results.json", "cv_results.json"].iter().any(|f| d.join(f).is_file())
}

fn walk(d: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    let run = is_run_dir(d);
    if run {
        out.push(d.to_path_buf());
    }
    if depth >= 4 || d.join("cv_results.json").is_file() {
        return Ok(());
    }
    let entries = std::fs::read_dir(d).map_err(|e| ReportError::Io { path: d.display().to_string(), source: e })?;
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let skip = name.starts_with("checkpoint-") || name.starts_with('.') || (run && name == "runs");
        if p.is_dir() && !skip {
            walk(&p, depth + 1, out)?;
        }
    }
    Ok(())
}

/// The hyper-parameter columns shown for every run.
const ARG_COLUMNS: &[(&str, &str)] = &[
    ("learning_rate", "lr"),
    ("num_train_epochs", "epochs"),
    ("per_device_train_batch_size", "batch"),
    ("seed", "seed"),
];

/// Final metrics of a run: all_results.json's eval_* (else test_*), or a cv run's fold means.
fn final_metrics(r: &Run) -> BTreeMap<String, f64> {
    if let Some(mean) = r.cv.as_ref().and_then(|c| c.get("mean")).and_then(Value::as_object) {
        return mean.iter().filter(|(k, _)| !is_speed(k)).filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect();
    }
    let pick = |p: &str| -> BTreeMap<String, f64> {
        r.results.iter().filter(|(k, _)| k.starts_with(p) && !is_speed(k)).map(|(k, v)| (k.clone(), *v)).collect()
    };
    let m = pick("eval_");
    if m.is_empty() {
        pick("test_")
    } else {
        m
    }
}

/// The table: a header, then one line per run (columns: run, task, model, lr, epochs, batch, seed, each final
/// metric, wall_s). `sort` names a column (numbers compare as numbers, missing values last); `desc` reverses.
pub fn runs_table(runs: &[Run], sort: Option<&str>, desc: bool) -> Result<String> {
    let metric_keys: BTreeSet<String> = runs.iter().flat_map(|r| final_metrics(r).into_keys()).collect();
    let mut header: Vec<String> = vec!["run".into(), "task".into(), "model".into()];
    header.extend(ARG_COLUMNS.iter().map(|(_, h)| h.to_string()));
    header.extend(metric_keys.iter().cloned());
    header.push("wall_s".into());
    let mut rows: Vec<Vec<(String, Option<f64>)>> = runs
        .iter()
        .map(|r| {
            let text = |s: Option<String>| (s.unwrap_or_else(|| "-".into()), None);
            let mut row = vec![
                (r.name.clone(), None),
                text(r.setting("task").map(|t| if r.cv.is_some() { format!("{t} (cv)") } else { t })),
                text(r.setting("model_name_or_path")),
            ];
            for (k, _) in ARG_COLUMNS {
                let v = r.setting(k);
                let n = v.as_deref().and_then(|s| s.parse::<f64>().ok());
                row.push((v.unwrap_or_else(|| "-".into()), n));
            }
            let m = final_metrics(r);
            for k in &metric_keys {
                let v = m.get(k).copied();
                row.push((v.map_or_else(|| "-".into(), |x| format!("{x:.4}")), v));
            }
            let wall = r.config.get("wall_time_s").and_then(Value::as_f64);
            row.push((wall.map_or_else(|| "-".into(), |x| format!("{x:.1}")), wall));
            row
        })
        .collect();
    if let Some(col) = sort {
        let Some(i) = header.iter().position(|h| h == col) else {
            return Err(ReportError::Input(format!("--sort {col}: no such column (columns: {})", header.join(", "))));
        };
        rows.sort_by(|a, b| {
            let ord = match (a[i].1, b[i].1) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => a[i].0.cmp(&b[i].0),
            };
            if desc {
                ord.reverse()
            } else {
                ord
            }
        });
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.0.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_string()
    };
    let mut out = line(header.iter().map(String::as_str).collect());
    out.push('\n');
    for r in &rows {
        out.push_str(&line(r.iter().map(|c| c.0.as_str()).collect()));
        out.push('\n');
    }
    Ok(out)
}

/// The settings (run keys and training arguments) and final metrics that differ between two runs.
pub fn diff(a: &Run, b: &Run) -> String {
    let flat = |r: &Run| -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        for (k, v) in &r.config {
            if matches!(k.as_str(), "training_args" | "non_default_args" | "wall_time_s" | "peak_rss_mib") {
                continue;
            }
            m.insert(k.clone(), show(v));
        }
        if let Some(args) = r.config.get("training_args").and_then(Value::as_object) {
            for (k, v) in args {
                if k != "output_dir" {
                    m.insert(k.clone(), show(v));
                }
            }
        }
        m
    };
    let (fa, fb) = (flat(a), flat(b));
    let keys: BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
    let rows: Vec<(String, String, String)> = keys
        .into_iter()
        .filter(|k| fa.get(*k) != fb.get(*k))
        .map(|k| (k.clone(), fa.get(k).cloned().unwrap_or("-".into()), fb.get(k).cloned().unwrap_or("-".into())))
        .collect();
    let (ma, mb) = (final_metrics(a), final_metrics(b));
    let mkeys: BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
    let fmt = |v: Option<&f64>| v.map_or_else(|| "-".to_string(), |x| format!("{x:.4}"));
    let metrics: Vec<(String, String, String)> =
        mkeys.into_iter().map(|k| (k.clone(), fmt(ma.get(k)), fmt(mb.get(k)))).collect();
    let all: Vec<&(String, String, String)> = rows.iter().chain(&metrics).collect();
    let w0 = all.iter().map(|r| r.0.len()).max().unwrap_or(0).max("setting".len());
    let w1 = all.iter().map(|r| r.1.chars().count()).max().unwrap_or(0).max(a.name.chars().count());
    let mut out = format!("{:<w0$}  {:<w1$}  {}\n", "setting", a.name, b.name);
    if rows.is_empty() {
        out.push_str("(same settings)\n");
    }
    for (k, x, y) in &rows {
        out.push_str(&format!("{k:<w0$}  {x:<w1$}  {y}\n"));
    }
    if !metrics.is_empty() {
        out.push_str(&format!("\n{:<w0$}  {:<w1$}  {}\n", "final metric", a.name, b.name));
        for (k, x, y) in &metrics {
            out.push_str(&format!("{k:<w0$}  {x:<w1$}  {y}\n"));
        }
    }
    out
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "none".into(),
        v => v.to_string(),
    }
}
