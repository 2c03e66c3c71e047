//! `finetune compare` for two sequence classifiers or two NER models on the same labelled data: each metric
//! with its bootstrap confidence interval, the paired bootstrap and approximate-randomisation p-values, and
//! McNemar's exact test on per-item correctness (per text, or per word for NER).

use std::path::Path;

use anyhow::{anyhow, bail, Result};
use finetune_metrics::significance::{self, System};
use finetune_train::workflow::{read, read_conll, read_opts, InferOptions, PredictInput, Predictor};
use serde_json::{json, Map, Value};

/// Whether `spec` is a saved encoder classifier (sequence or token classification) rather than a decoder.
pub fn is_classifier(spec: &str) -> bool {
    finetune_models::checkpoint::model_architecture(spec)
        .is_ok_and(|arch| finetune_models::checkpoint::is_classifier_architecture(&arch))
}

/// Scores a system's predictions on a subset of items (by index).
type ScoreFn = Box<dyn Fn(&[Value], &[usize]) -> Result<f64>>;

/// One compared quantity: its name and how to score predictions.
struct Metric {
    name: &'static str,
    score: ScoreFn,
}

fn subset(v: &[Value], idx: &[usize]) -> Value {
    Value::Array(idx.iter().map(|&i| v[i].clone()).collect())
}

fn call(name: &str, args: Value) -> Result<f64> {
    let v = finetune_metrics::call::call(name, &args).map_err(|e| anyhow!("{name}: {e}"))?;
    finetune_metrics::json::as_f64(&v).ok_or_else(|| anyhow!("{name}: not a number: {v}"))
}

pub struct Options<'a> {
    pub base: &'a str,
    pub tuned: &'a str,
    pub data: &'a Path,
    pub max_seq_length: usize,
    pub batch_size: usize,
    pub seed: u64,
    pub json: bool,
    pub out: Option<&'a Path>,
    pub output_dir: Option<&'a Path>,
}

pub fn run(o: Options<'_>) -> Result<()> {
    let infer = InferOptions { max_seq_length: o.max_seq_length, batch_size: o.batch_size, ..InferOptions::default() };
    let mut base = Predictor::load(o.base, &infer)?;
    let mut tuned = Predictor::load(o.tuned, &infer)?;
    if base.is_token_classification() != tuned.is_token_classification() {
        bail!("{} and {} are not the same kind of model (sequence vs token classification)", o.base, o.tuned);
    }
    let token = base.is_token_classification();
    let path = o.data.display().to_string();
    // Gold labels (or tag sequences) and the inputs both models see.
    let (inputs, gold): (Vec<PredictInput>, Vec<Value>) = if token {
        let sentences = read_conll(&path)?;
        let gold = sentences.iter().map(|s| json!(s.tags)).collect();
        (sentences.into_iter().map(|s| PredictInput::Words(s.tokens)).collect(), gold)
    } else {
        let examples = read(&path, &read_opts("text", None, Some("label"), None))?;
        let mut gold = Vec::with_capacity(examples.len());
        for e in &examples {
            match &e.label {
                Some(finetune_data::Label::Single(l)) => gold.push(json!(l)),
                _ => bail!("{path}:{}: compare needs one gold label per record", e.line),
            }
        }
        (examples.into_iter().map(|e| PredictInput::Text { text: e.text, text_pair: e.text_pair }).collect(), gold)
    };
    let field = if token { "tags" } else { "label" };
    let preds = |p: &mut Predictor| -> Result<Vec<Value>> {
        Ok(p.predict(&inputs, &path)?.into_iter().map(|v| v[field].clone()).collect())
    };
    let (pa, pb) = (preds(&mut base)?, preds(&mut tuned)?);
    let n = gold.len();

    let g = gold.clone();
    let metrics: Vec<Metric> = if token {
        let g2 = gold.clone();
        vec![
            Metric {
                name: "entity_f1",
                score: Box::new(move |p, idx| {
                    call("seqeval.f1_score", json!({"y_true": subset(&g, idx), "y_pred": subset(p, idx)}))
                }),
            },
            Metric {
                name: "token_accuracy",
                score: Box::new(move |p, idx| {
                    call("seqeval.accuracy_score", json!({"y_true": subset(&g2, idx), "y_pred": subset(p, idx)}))
                }),
            },
        ]
    } else {
        let g2 = gold.clone();
        vec![
            Metric {
                name: "accuracy",
                score: Box::new(move |p, idx| {
                    Ok(idx.iter().filter(|&&i| p[i] == g[i]).count() as f64 / idx.len().max(1) as f64)
                }),
            },
            Metric {
                name: "macro_f1",
                score: Box::new(move |p, idx| {
                    call(
                        "f1_score",
                        json!({"y_true": subset(&g2, idx), "y_pred": subset(p, idx), "average": "macro", "zero_division": 0}),
                    )
                }),
            },
        ]
    };

    let mut err: Option<anyhow::Error> = None;
    let mut keep = |r: Result<f64>| {
        r.unwrap_or_else(|e| {
            err.get_or_insert(e);
            f64::NAN
        })
    };
    let mut report = Map::new();
    for m in &metrics {
        let score = |p: &[Value], idx: &[usize]| (m.score)(p, idx);
        let ci_a = significance::bootstrap_ci(n, 1000, 0.95, o.seed, |idx| keep(score(&pa, idx)))?;
        let ci_b = significance::bootstrap_ci(n, 1000, 0.95, o.seed, |idx| keep(score(&pb, idx)))?;
        let bs = significance::paired_bootstrap(n, 1000, o.seed, |sys, idx| {
            keep(score(if sys == System::Baseline { &pa } else { &pb }, idx))
        })?;
        let all: Vec<usize> = (0..n).collect();
        let ar = significance::approximate_randomization(n, 10_000, o.seed, |swap| {
            let mix = |x: &[Value], y: &[Value]| -> Vec<Value> {
                (0..n).map(|i| if swap[i] { y[i].clone() } else { x[i].clone() }).collect()
            };
            (keep(score(&mix(&pa, &pb), &all)), keep(score(&mix(&pb, &pa), &all)))
        })?;
        let ci = |c: &significance::Interval| json!({"score": c.score, "lower": c.lower, "upper": c.upper});
        report.insert(
            m.name.into(),
            json!({"base": ci(&ci_a), "tuned": ci(&ci_b), "delta": ci_b.score - ci_a.score,
                   "p_value_paired_bootstrap": bs.p_value, "p_value_approximate_randomization": ar.p_value}),
        );
    }
    if let Some(e) = err {
        return Err(e);
    }
    // McNemar on per-item correctness: a text's label, or each word's tag for NER.
    let correct = |p: &[Value]| -> Vec<bool> {
        if token {
            p.iter()
                .zip(&gold)
                .flat_map(|(p, g)| {
                    let (p, g) = (p.as_array().cloned().unwrap_or_default(), g.as_array().cloned().unwrap_or_default());
                    g.iter().enumerate().map(|(i, t)| p.get(i) == Some(t)).collect::<Vec<_>>()
                })
                .collect()
        } else {
            p.iter().zip(&gold).map(|(p, g)| p == g).collect()
        }
    };
    let (ca, cb) = (correct(&pa), correct(&pb));
    let mc = significance::mcnemar_paired(&ca, &cb);
    let only_base = ca.iter().zip(&cb).filter(|(a, b)| **a && !**b).count();
    let only_tuned = ca.iter().zip(&cb).filter(|(a, b)| !**a && **b).count();
    let unit = if token { "words" } else { "texts" };
    report.insert(
        "mcnemar".into(),
        json!({"unit": unit, "only_base_correct": only_base, "only_tuned_correct": only_tuned,
               "statistic": mc.statistic, "pvalue": mc.pvalue}),
    );
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&json!({"gold": gold[i], "base": pa[i], "tuned": pb[i]}).to_string());
        text.push('\n');
    }
    if let Some(out) = o.out {
        finetune_train::write_atomic(out, text.as_bytes())?;
    }
    if let Some(dir) = o.output_dir {
        let results = json!({
            "command": "compare", "base": o.base, "tuned": o.tuned, "data": path, "n": n,
            "test": "bootstrap 95% CIs and paired bootstrap (1000 resamples), approximate randomisation (10000)",
            "metrics": Value::Object(report.clone()),
        });
        crate::decoder_cmd::write_compare_dir(dir, &results, "predictions.jsonl", &text)?;
    }
    if o.json {
        println!("{}", Value::Object(report));
        return Ok(());
    }
    println!("{n} {} from {path}; base {}, tuned {}", if token { "sentences" } else { "examples" }, o.base, o.tuned);
    println!(
        "{:<16} {:>24} {:>24} {:>8} {:>9} {:>9}",
        "metric", "base [95% CI]", "tuned [95% CI]", "delta", "p (boot)", "p (AR)"
    );
    for m in &metrics {
        let r = &report[m.name];
        let f = |s: &Value| {
            format!(
                "{:.4} [{:.4}, {:.4}]",
                s["score"].as_f64().unwrap_or(f64::NAN),
                s["lower"].as_f64().unwrap_or(f64::NAN),
                s["upper"].as_f64().unwrap_or(f64::NAN)
            )
        };
        println!(
            "{:<16} {:>24} {:>24} {:>+8.4} {:>9.4} {:>9.4}",
            m.name,
            f(&r["base"]),
            f(&r["tuned"]),
            r["delta"].as_f64().unwrap_or(f64::NAN),
            r["p_value_paired_bootstrap"].as_f64().unwrap_or(f64::NAN),
            r["p_value_approximate_randomization"].as_f64().unwrap_or(f64::NAN)
        );
    }
    println!(
        "McNemar's exact test ({unit}): {only_base} right only by base, {only_tuned} right only by tuned, p = {:.4}",
        mc.pvalue
    );
    println!("(paired bootstrap: 1000 resamples, approximate randomisation: 10000 trials, seed {})", o.seed);
    Ok(())
}
