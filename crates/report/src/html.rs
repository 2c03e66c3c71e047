//! The page: summary and hyper-parameter tables, then the plots, all in one HTML string.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use serde_json::{Map, Value};

use crate::run::{is_speed, Run};
use crate::svg::{bar_chart, escape, fmt_num, heatmap, line_chart, Corner, LineOptions, Series};

const CSS: &str = r#"
:root { color-scheme: light dark; --bg:#ffffff; --fg:#1f2328; --muted:#656d76; --grid:#d8dee4; --panel:#f6f8fa;
  --diff:#fff3bf; --heat:#2f6fb3;
  --c0:#1f77b4; --c1:#e8710a; --c2:#2ca02c; --c3:#d62728; --c4:#9467bd; --c5:#8c564b; --c6:#d6399c; --c7:#5f6b7a; }
@media (prefers-color-scheme: dark) {
  :root { --bg:#0d1117; --fg:#e6edf3; --muted:#9198a1; --grid:#30363d; --panel:#161b22; --diff:#4d3d00;
    --heat:#58a6ff;
    --c0:#58a6ff; --c1:#ffa657; --c2:#56d364; --c3:#ff7b72; --c4:#d2a8ff; --c5:#e3b341; --c6:#ff8fd0; --c7:#a5b3c2; }
}
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1180px; padding: 24px; background: var(--bg); color: var(--fg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid var(--grid);
  padding-bottom: 4px; } h3 { font-size: 15px; margin: 18px 0 6px; }
.muted { color: var(--muted); }
table { border-collapse: collapse; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--grid); padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.text { text-align: left; white-space: pre-wrap; max-width: 36em; }
thead th { background: var(--panel); }
tr.diff td, td.diff { background: var(--diff); }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); gap: 12px; }
figure { margin: 0; background: var(--panel); border: 1px solid var(--grid); border-radius: 6px; padding: 6px; }
svg.plot { width: 100%; height: auto; display: block; font-size: 11px; }
svg .title { fill: var(--fg); font-size: 13px; font-weight: 600; }
svg .tick, svg .axis, svg .legend text, svg .empty { fill: var(--fg); }
svg .axis { font-size: 12px; }
svg .grid { stroke: var(--grid); stroke-width: 1; }
svg .frame { fill: none; stroke: var(--muted); stroke-width: 1; }
svg .ref { stroke: var(--muted); stroke-dasharray: 4 4; stroke-width: 1; }
svg .legend rect { fill: var(--bg); fill-opacity: .85; stroke: var(--grid); }
svg path { fill: none; stroke-width: 2; stroke-linejoin: round; }
svg .cell { fill: var(--heat); stroke: var(--bg); stroke-width: 1; }
svg .cv { fill: var(--fg); } svg .cv.hi { fill: #ffffff; }
"#;

fn palette_css() -> String {
    let mut s = String::new();
    for i in 0..crate::svg::PALETTE {
        let _ = writeln!(
            s,
            "svg .s{i} {{ stroke: var(--c{i}); stroke-width: 2; }} svg .m{i}, svg .b{i} {{ fill: var(--c{i}); }}"
        );
    }
    s.push_str(
        "@media print { body { max-width: none; padding: 0; } figure { break-inside: avoid; } \
         h2 { break-after: avoid; } .grid { grid-template-columns: 1fr 1fr; } }\n",
    );
    s
}

fn fig(out: &mut String, svg: String) {
    let _ = write!(out, "<figure>{svg}</figure>");
}

fn cell(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_string(), fmt_num)
}

fn detail_f64(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().map(|a| a.iter().map(detail_f64).collect()).unwrap_or_default()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().map(|x| x.as_str().unwrap_or("").to_string()).collect()).unwrap_or_default()
}

/// The HTML page for `runs` (one run, or several overlaid).
pub fn render(runs: &[Run]) -> String {
    let mut o = String::new();
    let title = match runs {
        [r] => format!("finetune report: {}", r.name),
        _ => format!("finetune report: {} runs", runs.len()),
    };
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width, initial-scale=1\"><meta name=\"color-scheme\" content=\"light dark\">\
         <title>{t}</title><style>{CSS}{p}</style></head><body><h1>{t}</h1>",
        t = escape(&title),
        p = palette_css()
    );
    let _ = write!(
        o,
        "<p class=\"muted\">{}</p>",
        escape(&runs.iter().map(|r| r.dir.display().to_string()).collect::<Vec<_>>().join(" · "))
    );
    summary(&mut o, runs);
    hyperparameters(&mut o, runs);
    for r in runs {
        cv_section(&mut o, r);
        sweep_section(&mut o, r);
        compare_section(&mut o, r);
    }
    training_curves(&mut o, runs);
    eval_curves(&mut o, runs);
    final_metrics(&mut o, runs);
    for r in runs {
        for (split, d) in &r.details {
            details(&mut o, r, split, d, runs.len() > 1);
        }
        generations_section(&mut o, r);
    }
    o.push_str("</body></html>\n");
    o
}

/// One row of the summary table: how to read its value from a run.
type SummaryRow = Box<dyn Fn(&Run) -> Option<String>>;

fn summary(o: &mut String, runs: &[Run]) {
    o.push_str("<h2>Summary</h2><table><thead><tr><th></th>");
    for r in runs {
        let _ = write!(o, "<th>{}</th>", escape(&r.name));
    }
    o.push_str("</tr></thead><tbody>");
    let rows: Vec<(&str, SummaryRow)> = vec![
        ("command", Box::new(|r: &Run| r.setting("command"))),
        ("task", Box::new(|r: &Run| r.setting("task"))),
        ("model", Box::new(|r: &Run| r.setting("model_name_or_path"))),
        ("train file", Box::new(|r: &Run| r.setting("train_file"))),
        ("validation file", Box::new(|r: &Run| r.setting("validation_file"))),
        ("test file", Box::new(|r: &Run| r.setting("test_file"))),
        ("class weight", Box::new(|r: &Run| r.setting("class_weight"))),
        ("resample", Box::new(|r: &Run| r.setting("resample"))),
        ("augment", Box::new(|r: &Run| r.setting("augment"))),
        ("train samples", Box::new(|r: &Run| r.results.get("train_samples").map(|v| fmt_num(*v)))),
        ("eval samples", Box::new(|r: &Run| r.results.get("eval_samples").map(|v| fmt_num(*v)))),
        ("test samples", Box::new(|r: &Run| r.results.get("test_samples").map(|v| fmt_num(*v)))),
        ("folds", Box::new(|r: &Run| (!r.folds.is_empty()).then(|| r.folds.len().to_string()))),
        ("sampler", Box::new(|r: &Run| sweep_field(r, "sampler"))),
        ("pruner", Box::new(|r: &Run| sweep_field(r, "pruner"))),
        ("objective", Box::new(|r: &Run| sweep_field(r, "objective"))),
        ("trials", Box::new(sweep_trials)),
        ("best trial", Box::new(sweep_best)),
        (
            "steps",
            Box::new(|r: &Run| {
                r.global_step
                    .map(|s| s.to_string())
                    .or_else(|| r.train_log.last().and_then(|e| e.get("step")).map(|v| v.to_string()))
            }),
        ),
        ("epochs", Box::new(|r: &Run| r.results.get("epoch").map(|v| fmt_num(*v)))),
        ("train runtime (s)", Box::new(|r: &Run| r.results.get("train_runtime").map(|v| fmt_num(*v)))),
        ("wall time (s)", Box::new(|r: &Run| r.setting("wall_time_s"))),
        ("peak memory (MiB)", Box::new(|r: &Run| r.setting("peak_rss_mib"))),
        (
            "versions",
            Box::new(|r: &Run| {
                r.config.get("versions").and_then(Value::as_object).map(|m| {
                    m.iter().map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(", ")
                })
            }),
        ),
    ];
    for (name, f) in rows {
        let vals: Vec<Option<String>> = runs.iter().map(&f).collect();
        if vals.iter().all(Option::is_none) {
            continue;
        }
        let _ = write!(o, "<tr><td>{name}</td>");
        for v in vals {
            let _ = write!(o, "<td>{}</td>", escape(v.as_deref().unwrap_or("–")));
        }
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table>");
}

fn sweep_field(r: &Run, key: &str) -> Option<String> {
    r.sweep.as_ref()?.get(key).and_then(Value::as_str).map(str::to_string)
}

/// "N (complete C, pruned P, failed F)" from the sweep's trial states.
fn sweep_trials(r: &Run) -> Option<String> {
    let trials = r.sweep.as_ref()?.get("trials")?.as_array()?;
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    for t in trials {
        *states.entry(t.get("state").and_then(Value::as_str).unwrap_or("?")).or_default() += 1;
    }
    let parts: Vec<String> = states.iter().map(|(s, n)| format!("{} {n}", s.to_lowercase())).collect();
    Some(format!("{} ({})", trials.len(), parts.join(", ")))
}

/// "#N: objective = value; params".
fn sweep_best(r: &Run) -> Option<String> {
    let b = r.sweep.as_ref()?.get("best_trial")?;
    let params = b.get("params").and_then(Value::as_object).map(|m| {
        m.iter().map(|(k, v)| format!("{k}={}", v.as_f64().map_or_else(|| v.to_string(), fmt_num))).collect::<Vec<_>>()
    });
    Some(format!(
        "#{}: {} = {}; {}",
        b.get("number").and_then(Value::as_u64)?,
        sweep_field(r, "objective").unwrap_or_default(),
        b.get("value").and_then(Value::as_f64).map_or_else(|| "–".into(), fmt_num),
        params.unwrap_or_default().join(", ")
    ))
}

fn hyperparameters(o: &mut String, runs: &[Run]) {
    let per_run: Vec<BTreeMap<String, String>> = runs.iter().map(Run::non_default_args).collect();
    let keys: BTreeSet<&String> = per_run.iter().flat_map(|m| m.keys()).collect();
    if keys.is_empty() {
        return;
    }
    o.push_str(
        "<h2>Hyper-parameters</h2><p class=\"muted\">Those that differ from the defaults of HF \
                `TrainingArguments`",
    );
    if runs.len() > 1 {
        o.push_str("; rows highlighted differ between runs");
    }
    o.push_str(".</p><table><thead><tr><th>key</th>");
    for r in runs {
        let _ = write!(o, "<th>{}</th>", escape(&r.name));
    }
    o.push_str("</tr></thead><tbody>");
    for k in keys {
        // A run without the key in its non-defaults has the default: show the value from training_args.
        let vals: Vec<String> = runs
            .iter()
            .zip(&per_run)
            .map(|(r, m)| m.get(k).cloned().or_else(|| r.setting(k)).unwrap_or_else(|| "–".into()))
            .collect();
        let differs = runs.len() > 1 && vals.iter().any(|v| v != &vals[0]);
        let _ = write!(o, "<tr{}><td>{}</td>", if differs { " class=\"diff\"" } else { "" }, escape(k));
        for v in vals {
            let _ = write!(o, "<td>{}</td>", escape(&v));
        }
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table>");
}

/// The runs whose curves are drawn: the runs themselves, or a cv run's folds. A lone curve gets no name, so no
/// legend covers it (the page's title names the run).
fn curve_runs(runs: &[Run]) -> Vec<(&Run, String)> {
    let mut out = Vec::new();
    for r in runs {
        if r.folds.is_empty() {
            out.push((r, r.name.clone()));
        } else {
            for f in &r.folds {
                let name = if runs.len() > 1 { format!("{} {}", r.name, f.name) } else { f.name.clone() };
                out.push((f, name));
            }
        }
    }
    if let [(_, name)] = out.as_mut_slice() {
        name.clear();
    }
    out
}

fn training_curves(o: &mut String, runs: &[Run]) {
    let cr = curve_runs(runs);
    if cr.iter().all(|(r, _)| r.train_log.is_empty()) {
        return;
    }
    o.push_str("<h2>Training</h2><div class=\"grid\">");
    for (key, label) in [("loss", "training loss"), ("learning_rate", "learning rate"), ("grad_norm", "gradient norm")]
    {
        let series: Vec<Series> = cr
            .iter()
            .map(|(r, n)| Series { name: n.clone(), points: r.train_series(key), markers: false, scatter: false })
            .collect();
        if series.iter().all(|s| s.points.is_empty()) {
            continue;
        }
        let opts =
            LineOptions { title: label.into(), x_label: "step".into(), y_label: key.into(), ..Default::default() };
        fig(o, line_chart(&series, &opts));
    }
    o.push_str("</div>");
}

fn eval_curves(o: &mut String, runs: &[Run]) {
    let cr = curve_runs(runs);
    // A curve needs evaluations at two steps; one step (a single epoch, whose end-of-training evaluation is
    // logged at the same step) is in the final metrics table.
    let steps = |r: &Run, k: &str| r.eval_series(k).iter().map(|p| p.0.to_bits()).collect::<BTreeSet<u64>>().len();
    let keys: BTreeSet<String> = cr
        .iter()
        .flat_map(|(r, _)| r.eval_metrics().into_iter().filter(|k| steps(r, k) > 1).collect::<Vec<_>>())
        .collect();
    if keys.is_empty() {
        return;
    }
    o.push_str("<h2>Evaluation during training</h2><div class=\"grid\">");
    for k in &keys {
        let series: Vec<Series> = cr
            .iter()
            .map(|(r, n)| Series { name: n.clone(), points: r.eval_series(k), markers: true, scatter: false })
            .collect();
        let opts = LineOptions { title: k.clone(), x_label: "step".into(), y_label: k.clone(), ..Default::default() };
        fig(o, line_chart(&series, &opts));
    }
    o.push_str("</div>");
}

fn final_metrics(o: &mut String, runs: &[Run]) {
    let keys: BTreeSet<&String> = runs
        .iter()
        .flat_map(|r| r.results.keys())
        .filter(|k| (k.starts_with("eval_") || k.starts_with("test_") || k.as_str() == "train_loss") && !is_speed(k))
        .collect();
    if keys.is_empty() {
        return;
    }
    o.push_str("<h2>Final metrics</h2><table><thead><tr><th>metric</th>");
    for r in runs {
        let _ = write!(o, "<th>{}</th>", escape(&r.name));
    }
    o.push_str("</tr></thead><tbody>");
    for k in keys {
        let _ = write!(o, "<tr><td>{}</td>", escape(k));
        for r in runs {
            let _ = write!(o, "<td>{}</td>", cell(r.results.get(k).copied()));
        }
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table>");
}

/// `finetune sweep`: the trials table (best trial marked), each trial's objective with the best so far, and the
/// objective against each searched parameter (categorical ones by their index in the choices).
fn sweep_section(o: &mut String, r: &Run) {
    let Some(sw) = &r.sweep else { return };
    let text = |k: &str| sw.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (objective, direction) = (text("objective"), text("direction"));
    let trials = sw.get("trials").and_then(Value::as_array).cloned().unwrap_or_default();
    let best = sw.get("best_trial").and_then(|b| b.get("number")).and_then(Value::as_u64);
    let mut names: Vec<String> =
        sw.get("search_space").and_then(Value::as_object).map(|m| m.keys().cloned().collect()).unwrap_or_default();
    if names.is_empty() {
        names = trials
            .iter()
            .filter_map(|t| t.get("params").and_then(Value::as_object))
            .flat_map(|m| m.keys().cloned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
    }
    let _ = write!(
        o,
        "<h2>Hyper-parameter search: {}</h2><p class=\"muted\">{} trials, {} {} ({} sampler, {} pruner); best \
         trial {}</p>",
        escape(&r.name),
        trials.len(),
        escape(&direction),
        escape(&objective),
        escape(&text("sampler")),
        escape(&text("pruner")),
        best.map_or_else(|| "–".to_string(), |b| b.to_string()),
    );
    o.push_str("<table><thead><tr><th>trial</th><th>state</th><th>value</th>");
    for n in &names {
        let _ = write!(o, "<th>{}</th>", escape(n));
    }
    o.push_str("<th>seconds</th></tr></thead><tbody>");
    let param_text = |t: &Value, n: &str| match t.get("params").and_then(|p| p.get(n)) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(x)) => x.as_f64().map_or_else(|| x.to_string(), fmt_num),
        Some(v) => v.to_string(),
        None => "–".into(),
    };
    for t in &trials {
        let number = t.get("number").and_then(Value::as_u64);
        let class = if number.is_some() && number == best { " class=\"diff\"" } else { "" };
        let _ = write!(
            o,
            "<tr{class}><td>{}</td><td>{}</td><td>{}</td>",
            number.map_or_else(|| "–".to_string(), |n| n.to_string()),
            escape(t.get("state").and_then(Value::as_str).unwrap_or("")),
            cell(t.get("value").and_then(Value::as_f64)),
        );
        for n in &names {
            let _ = write!(o, "<td>{}</td>", escape(&param_text(t, n)));
        }
        let _ = write!(o, "<td>{}</td></tr>", cell(t.get("duration_s").and_then(Value::as_f64)));
    }
    o.push_str("</tbody></table><div class=\"grid\">");
    let done: Vec<(f64, f64, &Value)> =
        trials.iter().filter_map(|t| Some((t.get("number")?.as_f64()?, t.get("value")?.as_f64()?, t))).collect();
    let maximize = direction == "maximize";
    let mut best_so_far = Vec::new();
    let mut acc: Option<f64> = None;
    for &(x, y, _) in &done {
        acc = Some(acc.map_or(y, |b| if maximize { b.max(y) } else { b.min(y) }));
        best_so_far.push((x, acc.unwrap_or(y)));
    }
    let series = [
        Series {
            name: "trial".into(),
            points: done.iter().map(|&(x, y, _)| (x, y)).collect(),
            scatter: true,
            ..Default::default()
        },
        Series { name: "best so far".into(), points: best_so_far, ..Default::default() },
    ];
    let opts = LineOptions {
        title: format!("{objective} per trial"),
        x_label: "trial".into(),
        y_label: objective.clone(),
        steps: true,
        legend: if maximize { Corner::BottomRight } else { Corner::TopRight },
        ..Default::default()
    };
    fig(o, line_chart(&series, &opts));
    for n in &names {
        // A parameter searched on a log scale is plotted on one (log10 of the value).
        let log =
            sw.get("search_space").and_then(|sp| sp.get(n)).and_then(|d| d.get("log")) == Some(&Value::Bool(true));
        // Categorical values by their place among the values the trials took.
        let mut cats: Vec<String> = Vec::new();
        let mut points = Vec::new();
        for &(_, y, t) in &done {
            let x = match t.get("params").and_then(|p| p.get(n)) {
                Some(Value::Number(x)) => x.as_f64().map(|x| if log { x.log10() } else { x }),
                Some(v) => {
                    let key = v.as_str().map_or_else(|| v.to_string(), String::from);
                    let i = cats.iter().position(|c| *c == key).unwrap_or_else(|| {
                        cats.push(key);
                        cats.len() - 1
                    });
                    Some(i as f64)
                }
                None => None,
            };
            if let Some(x) = x {
                points.push((x, y));
            }
        }
        let x_label = match (cats.is_empty(), log) {
            (true, true) => format!("log10({n})"),
            (true, false) => n.clone(),
            _ => format!("{n} (0 = {})", cats.join(", 1 = ")),
        };
        let series = [Series { name: String::new(), points, scatter: true, ..Default::default() }];
        let opts = LineOptions {
            title: format!("{objective} against {n}"),
            x_label,
            y_label: objective.clone(),
            ..Default::default()
        };
        fig(o, line_chart(&series, &opts));
    }
    o.push_str("</div>");
}

/// A value of `compare_results.json`: a number, a `{score, lower, upper}` interval, or null.
fn compare_cell(v: Option<&Value>) -> String {
    match v {
        Some(Value::Object(c)) if c.contains_key("score") => {
            let f = |k: &str| c.get(k).and_then(Value::as_f64);
            format!("{} [{}, {}]", cell(f("score")), cell(f("lower")), cell(f("upper")))
        }
        Some(v) => cell(v.as_f64()),
        None => cell(None),
    }
}

/// `finetune compare --output-dir`: base against tuned per metric, with the intervals and p-values the
/// comparison computed (decoders: paired bootstrap; classifiers: bootstrap CIs, paired bootstrap, approximate
/// randomisation, and McNemar's test).
fn compare_section(o: &mut String, r: &Run) {
    let Some(c) = &r.compare else { return };
    let text = |k: &str| c.get(k).map(|v| v.as_str().map_or_else(|| v.to_string(), String::from)).unwrap_or_default();
    let _ = write!(
        o,
        "<h2>Comparison: {}</h2><p class=\"muted\">base {} · tuned {} · {} examples of {} · {}</p>",
        escape(&r.name),
        escape(&text("base")),
        escape(&text("tuned")),
        escape(&text("n")),
        escape(&text("data")),
        escape(&text("test")),
    );
    let Some(metrics) = c.get("metrics").and_then(Value::as_object) else { return };
    let rows: Vec<(&String, &Map<String, Value>)> =
        metrics.iter().filter_map(|(k, v)| v.as_object().map(|m| (k, m))).filter(|(k, _)| *k != "mcnemar").collect();
    // Columns: base, tuned, delta, then whatever interval and p-value fields the comparison wrote.
    let mut cols: Vec<String> = vec!["base".into(), "tuned".into(), "delta".into()];
    for (_, m) in &rows {
        for k in m.keys() {
            if !cols.contains(k) {
                cols.push(k.clone());
            }
        }
    }
    o.push_str("<table><thead><tr><th>metric</th>");
    for k in &cols {
        let _ = write!(o, "<th>{}</th>", escape(&k.replace('_', " ")));
    }
    o.push_str("</tr></thead><tbody>");
    for (name, m) in &rows {
        let better = m.get("delta").and_then(Value::as_f64).is_some_and(|d| d > 0.0) != (name.as_str() == "perplexity");
        let _ = write!(o, "<tr><td>{}</td>", escape(name));
        for k in &cols {
            let class = if k == "delta" && better { " class=\"diff\"" } else { "" };
            let _ = write!(o, "<td{class}>{}</td>", compare_cell(m.get(k)));
        }
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table>");
    if let Some(mc) = metrics.get("mcnemar") {
        let f = |k: &str| mc.get(k).map(|v| v.to_string()).unwrap_or_default();
        let _ = write!(
            o,
            "<p>McNemar's exact test on the {}: only the base right {}, only the tuned model right {}, p = {}</p>",
            escape(&f("unit").replace('"', "")),
            escape(&f("only_base_correct")),
            escape(&f("only_tuned_correct")),
            cell(mc.get("pvalue").and_then(Value::as_f64)),
        );
    }
}

/// The first generations beside their references (`sft`'s test predictions, `compare`'s base and tuned).
fn generations_section(o: &mut String, r: &Run) {
    let Some(first) = r.generations.first() else { return };
    let cols: Vec<&str> =
        ["reference", "prediction", "base", "tuned"].into_iter().filter(|k| first.contains_key(*k)).collect();
    let _ = write!(o, "<h2>Generations: {} (first {})</h2><table><thead><tr>", escape(&r.name), r.generations.len());
    for k in &cols {
        let _ = write!(o, "<th>{k}</th>");
    }
    o.push_str("</tr></thead><tbody>");
    for g in &r.generations {
        o.push_str("<tr>");
        for k in &cols {
            let v = g.get(*k).map(|v| v.as_str().map_or_else(|| v.to_string(), String::from)).unwrap_or_default();
            let _ = write!(o, "<td class=\"text\">{}</td>", escape(&v));
        }
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table>");
}

fn cv_section(o: &mut String, r: &Run) {
    let Some(cv) = &r.cv else { return };
    let folds = cv.get("folds").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut keys: Vec<String> = cv
        .get("mean")
        .and_then(Value::as_object)
        .map(|m| m.keys().filter(|k| !is_speed(k)).cloned().collect())
        .unwrap_or_default();
    keys.sort();
    // One row per metric, one column per fold, then mean and std (ddof=1): narrow enough for many metrics.
    let _ = write!(o, "<h2>Cross-validation: {}</h2><table><thead><tr><th>metric</th>", escape(&r.name));
    for f in &folds {
        let _ = write!(o, "<th>fold {}</th>", escape(&f.get("fold").map(|v| v.to_string()).unwrap_or_default()));
    }
    o.push_str("<th>mean</th><th>std</th></tr></thead><tbody>");
    for k in &keys {
        let _ = write!(o, "<tr><td>{}</td>", escape(k));
        for f in &folds {
            let _ = write!(o, "<td>{}</td>", cell(f.get(k).and_then(Value::as_f64)));
        }
        for stat in ["mean", "std"] {
            let v = cv.get(stat).and_then(|m| m.get(k)).and_then(Value::as_f64);
            let _ = write!(o, "<td class=\"diff\">{}</td>", cell(v));
        }
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table><div class=\"grid\">");
    let cats: Vec<String> = keys.iter().map(|k| k.trim_start_matches("eval_").to_string()).collect();
    let bounded: Vec<usize> = (0..keys.len()).filter(|&i| !keys[i].ends_with("loss")).collect();
    if !bounded.is_empty() {
        let groups: Vec<(String, Vec<f64>)> = folds
            .iter()
            .enumerate()
            .map(|(i, f)| {
                (
                    format!("fold {}", i + 1),
                    bounded.iter().map(|&j| f.get(&keys[j]).and_then(Value::as_f64).unwrap_or(f64::NAN)).collect(),
                )
            })
            .collect();
        let c: Vec<String> = bounded.iter().map(|&j| cats[j].clone()).collect();
        fig(o, bar_chart("metrics per fold", &c, &groups, None));
    }
    o.push_str("</div>");
}

fn details(o: &mut String, r: &Run, split: &str, d: &Value, many: bool) {
    let who = if many { format!("{} — {split}", r.name) } else { split.to_string() };
    if d.get("confusion_matrix").is_some() {
        classification(o, &who, d);
    } else if d.get("entities").is_some() {
        token(o, &who, d);
    }
}

fn rows_of(v: &Value) -> Vec<(String, [f64; 4])> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r.get("label").and_then(Value::as_str).unwrap_or("").to_string(),
                        [
                            detail_f64(&r["precision"]),
                            detail_f64(&r["recall"]),
                            detail_f64(&r["f1"]),
                            detail_f64(&r["support"]),
                        ],
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn prf_table(o: &mut String, rows: &[(String, [f64; 4])]) {
    o.push_str("<table><thead><tr><th></th><th>precision</th><th>recall</th><th>f1-score</th><th>support</th></tr></thead><tbody>");
    for (name, v) in rows {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{}</td></tr>",
            escape(name),
            v[0],
            v[1],
            v[2],
            fmt_num(v[3])
        );
    }
    o.push_str("</tbody></table>");
}

fn prf_bars(title: &str, rows: &[(String, [f64; 4])]) -> String {
    let cats: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    let groups = ["precision", "recall", "f1"]
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), rows.iter().map(|r| r.1[i]).collect()))
        .collect::<Vec<_>>();
    bar_chart(title, &cats, &groups, Some(1.0))
}

fn curves(v: &Value, prefix: &str) -> Vec<Series> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    let label = c.get("label").and_then(Value::as_str).unwrap_or("");
                    let area = c.get("area").and_then(Value::as_f64);
                    let name = match area {
                        Some(x) => format!("{label} ({prefix} = {x:.3})"),
                        None => label.to_string(),
                    };
                    let points: Vec<(f64, f64)> = f64s(&c["x"]).into_iter().zip(f64s(&c["y"])).collect();
                    Series { name, points: thin(points, MAX_CURVE_POINTS), markers: false, scatter: false }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Curve points drawn per curve: beyond this a large evaluation set's curve is thinned (the JSON keeps them all).
const MAX_CURVE_POINTS: usize = 2000;

/// Every k-th point, first and last kept, so that at most about `max` remain (a 640-pixel plot shows no more).
fn thin(points: Vec<(f64, f64)>, max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max {
        return points;
    }
    let k = points.len().div_ceil(max);
    let last = points.len() - 1;
    points.into_iter().enumerate().filter(|(i, _)| i % k == 0 || *i == last).map(|(_, p)| p).collect()
}

fn classification(o: &mut String, who: &str, d: &Value) {
    let labels = strings(&d["labels"]);
    let cm: Vec<Vec<f64>> = d["confusion_matrix"].as_array().map(|a| a.iter().map(f64s).collect()).unwrap_or_default();
    let _ = write!(o, "<h2>Classifier: {}</h2><div class=\"grid\">", escape(who));
    fig(o, heatmap("confusion matrix (counts)", &labels, &cm, false));
    let norm: Vec<Vec<f64>> = cm
        .iter()
        .map(|row| {
            let s: f64 = row.iter().sum();
            row.iter().map(|v| if s > 0.0 { v / s } else { 0.0 }).collect()
        })
        .collect();
    fig(o, heatmap("confusion matrix (normalised over gold rows)", &labels, &norm, true));
    let roc = curves(&d["roc"], "AUC");
    if !roc.is_empty() {
        let opts = LineOptions {
            title: "ROC curve".into(),
            x_label: "false positive rate".into(),
            y_label: "true positive rate".into(),
            x_range: Some((0.0, 1.0)),
            y_range: Some((0.0, 1.0)),
            reference: Some(((0.0, 0.0), (1.0, 1.0))),
            steps: false,
            legend: Corner::BottomRight,
        };
        fig(o, line_chart(&roc, &opts));
    }
    let pr = curves(&d["pr"], "AP");
    if !pr.is_empty() {
        let opts = LineOptions {
            title: "precision-recall curve".into(),
            x_label: "recall".into(),
            y_label: "precision".into(),
            x_range: Some((0.0, 1.0)),
            y_range: Some((0.0, 1.02)),
            reference: None,
            steps: true,
            legend: Corner::BottomLeft,
        };
        // sklearn returns recall decreasing; draw from recall 0 upwards.
        let pr: Vec<Series> = pr
            .into_iter()
            .map(|mut s| {
                s.points.reverse();
                s
            })
            .collect();
        fig(o, line_chart(&pr, &opts));
    }
    let rows = rows_of(&d["per_class"]);
    if !rows.is_empty() {
        fig(o, prf_bars("per-class precision, recall, F1", &rows));
    }
    if let Some(c) = d.get("calibration").filter(|c| !c.is_null()) {
        let points: Vec<(f64, f64)> = f64s(&c["prob_pred"]).into_iter().zip(f64s(&c["prob_true"])).collect();
        let binary = d["roc"].as_array().is_some_and(|a| a.len() == 1);
        let (title, x, y) = if binary {
            (
                "calibration (reliability) curve",
                "mean predicted probability of the positive class",
                "fraction of positives",
            )
        } else {
            ("calibration of the top prediction", "mean confidence of the predicted class", "accuracy")
        };
        let opts = LineOptions {
            title: title.into(),
            x_label: x.into(),
            y_label: y.into(),
            x_range: Some((0.0, 1.0)),
            y_range: Some((0.0, 1.0)),
            reference: Some(((0.0, 0.0), (1.0, 1.0))),
            steps: false,
            legend: Corner::BottomRight,
        };
        fig(o, line_chart(&[Series { name: "model".into(), points, markers: true, scatter: false }], &opts));
    }
    o.push_str("</div>");
    if !rows.is_empty() {
        prf_table(o, &rows);
    }
}

fn token(o: &mut String, who: &str, d: &Value) {
    let _ = write!(o, "<h2>NER: {}</h2><div class=\"grid\">", escape(who));
    let ent = rows_of(&d["entities"]);
    let types: Vec<_> = ent.iter().filter(|r| !r.0.ends_with(" avg")).cloned().collect();
    if !types.is_empty() {
        fig(o, prf_bars("per entity type (seqeval, default mode)", &types));
    }
    let strict = rows_of(&d["entities_strict"]);
    let strict_types: Vec<_> = strict.iter().filter(|r| !r.0.ends_with(" avg")).cloned().collect();
    if !strict_types.is_empty() {
        let scheme = d.get("scheme").and_then(Value::as_str).unwrap_or("");
        fig(o, prf_bars(&format!("per entity type (strict, {scheme})"), &strict_types));
    }
    let tags = rows_of(&d["tags"]);
    let tag_rows: Vec<_> =
        tags.iter().filter(|r| !r.0.ends_with(" avg") && r.0 != "accuracy" && r.0 != "micro avg").cloned().collect();
    if !tag_rows.is_empty() {
        fig(o, prf_bars("per tag (token level)", &tag_rows));
    }
    o.push_str("</div><h3>Entities, default mode (seqeval)</h3>");
    prf_table(o, &ent);
    if !strict.is_empty() {
        o.push_str("<h3>Entities, strict mode</h3>");
        prf_table(o, &strict);
    }
    if !tags.is_empty() {
        o.push_str("<h3>Tokens (sklearn classification_report over tags)</h3>");
        prf_table(o, &tags);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn thinning_keeps_the_ends_and_bounds_the_count() {
        let pts: Vec<(f64, f64)> = (0..10_001).map(|i| (i as f64, i as f64)).collect();
        let t = super::thin(pts.clone(), 2000);
        assert!(t.len() <= 2001 && t.len() > 1000);
        assert_eq!((t[0], *t.last().unwrap()), (pts[0], pts[10_000]));
        assert_eq!(super::thin(pts[..5].to_vec(), 2000).len(), 5);
    }
}
