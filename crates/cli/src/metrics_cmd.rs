//! `finetune metrics ...`: metric reports from files, through the library's `call` interface, so that what the
//! command prints is exactly what a library or JSON user gets.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use finetune_metrics::call::call;
use finetune_metrics::significance::{self, System};

use crate::input;

#[derive(Subcommand)]
pub enum MetricsCommand {
    /// List the metrics of `finetune metrics call` and the Python function each one mirrors.
    List,
    /// Read JSON lines {"metric": NAME, "args": {...}} on stdin; write one JSON answer per line.
    ///
    /// Answers are {"result": ...} or {"error": {"kind": "ValueError", "message": ...}}; non-finite floats are
    /// the strings "NaN", "Infinity", "-Infinity".
    Call,
    /// sklearn's classification_report (and --json: accuracy, F1s, MCC, kappa, confusion matrix).
    ///
    /// Example: finetune metrics classification --y-true gold.txt --y-pred pred.txt --digits 4 --ci
    Classification(ClassificationArgs),
    /// ROC AUC and average precision from JSON lines {"label": L, "score": S} (binary) or
    /// {"label": L, "scores": [S0, S1, ...]} (multiclass, one-vs-rest).
    ///
    /// Example: finetune metrics ranking --data scores.jsonl --ci
    Ranking(RankingArgs),
    /// Entity-level seqeval report from two CoNLL files (token ... tag; the last column is the tag).
    ///
    /// Example: finetune metrics ner --gold test.conll --pred pred.conll --mode strict --scheme IOB2
    Ner(NerArgs),
    /// sacrebleu corpus BLEU of a hypothesis file (one sentence per line) against one or more reference files.
    ///
    /// Example: finetune metrics bleu --hyp out.txt --ref ref1.txt --ref ref2.txt --tokenize 13a
    Bleu(BleuArgs),
    /// sacrebleu corpus chrF (chrF++ with --word-order 2).
    Chrf(ChrfArgs),
    /// sacrebleu corpus TER.
    Ter(TerArgs),
    /// rouge-score ROUGE (mean of per-pair precision, recall and F-measure); several --ref files = several
    /// targets per prediction (rouge-score's score_multi).
    ///
    /// Example: finetune metrics rouge --hyp summaries.txt --ref gold.txt --use-stemmer
    Rouge(RougeArgs),
    /// SQuAD exact match and F1 (HF evaluate's "squad"): predictions JSON lines {"id", "prediction_text"},
    /// references JSON lines {"id", "answers": {"text": [...], "answer_start": [...]}}.
    Squad(SquadArgs),
    /// HF evaluate's "exact_match" between two parallel text files.
    ExactMatch(ExactMatchArgs),
    /// Perplexity from JSON lines with "log_probs" (natural log), "log2_probs" or "probs" of each token.
    Perplexity(PerplexityArgs),
}

#[derive(Args)]
pub struct RougeArgs {
    #[arg(long)]
    hyp: PathBuf,
    #[arg(long = "ref", required = true)]
    refs: Vec<PathBuf>,
    /// Comma-separated rouge types.
    #[arg(long, default_value = "rouge1,rouge2,rougeL,rougeLsum", value_delimiter = ',')]
    rouge_types: Vec<String>,
    /// Porter-stem tokens (rouge-score's use_stemmer).
    #[arg(long)]
    use_stemmer: bool,
    #[command(flatten)]
    stats: Stats,
}

#[derive(Args)]
pub struct SquadArgs {
    #[arg(long)]
    pred: PathBuf,
    #[arg(long = "ref")]
    reference: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ExactMatchArgs {
    #[arg(long)]
    pred: PathBuf,
    #[arg(long = "ref")]
    reference: PathBuf,
    #[arg(long)]
    ignore_case: bool,
    #[arg(long)]
    ignore_punctuation: bool,
    #[arg(long)]
    ignore_numbers: bool,
    /// Regular expression removed before comparing; repeatable.
    #[arg(long)]
    regexes_to_ignore: Vec<String>,
    #[command(flatten)]
    stats: Stats,
}

#[derive(Args)]
pub struct PerplexityArgs {
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
pub struct Stats {
    /// Print JSON instead of the reference's report text.
    #[arg(long)]
    json: bool,
    /// Add bootstrap confidence intervals (percentile method).
    #[arg(long)]
    ci: bool,
    /// A second system's predictions: paired significance test of the main predictions against them.
    #[arg(long, value_name = "OTHER_PRED")]
    compare: Option<PathBuf>,
    /// Paired test: `bs` (paired bootstrap, as sacrebleu --paired-bs) or `ar` (approximate randomisation).
    #[arg(long, default_value = "bs", value_parser = ["bs", "ar"])]
    test: String,
    /// Resamples (bootstrap) or trials (approximate randomisation); 0 = 1000 for bs and CIs, 10000 for ar.
    #[arg(long, default_value_t = 0)]
    n_samples: usize,
    /// Coverage of the confidence intervals.
    #[arg(long, default_value_t = 0.95)]
    confidence: f64,
    /// Seed of the resampling.
    #[arg(long, default_value_t = 12345)]
    seed: u64,
}

#[derive(Args)]
pub struct ClassificationArgs {
    /// Gold labels: one per line, a labelled data file (.csv/.tsv/.jsonl: its label column), or JSON lines.
    #[arg(long)]
    y_true: PathBuf,
    /// Predicted labels, parallel to --y-true: one per line, or `finetune predict`'s predictions.jsonl as is.
    #[arg(long)]
    y_pred: PathBuf,
    /// Text column of a labelled data file given as --y-true (tells data records from predictions).
    #[arg(long, default_value = "text")]
    text_column_name: String,
    /// Label column of a data file, or label field of JSON lines.
    #[arg(long, default_value = "label")]
    label_column_name: String,
    /// Decimal digits of the report.
    #[arg(long, default_value_t = 2)]
    digits: usize,
    #[command(flatten)]
    stats: Stats,
}

#[derive(Args)]
pub struct RankingArgs {
    /// JSON lines with "label" and "score" (binary) or "scores" (one per class, classes in sorted label order);
    /// or `finetune predict`'s predictions.jsonl as is ("probabilities" by class name), with --y-true.
    #[arg(long)]
    data: PathBuf,
    /// Gold labels for records without "label" (predictions.jsonl): one per line or a labelled data file.
    #[arg(long)]
    y_true: Option<PathBuf>,
    /// Text column of a labelled data file given as --y-true.
    #[arg(long, default_value = "text")]
    text_column_name: String,
    /// Label column of a data file given as --y-true.
    #[arg(long, default_value = "label")]
    label_column_name: String,
    /// The positive class for binary data (default: sklearn's rule, 1 for {0, 1} labels).
    #[arg(long)]
    pos_label: Option<String>,
    /// Include the ROC and precision-recall curves in --json output.
    #[arg(long)]
    curves: bool,
    #[command(flatten)]
    stats: Stats,
}

#[derive(Args)]
pub struct NerArgs {
    /// Gold CoNLL file.
    #[arg(long)]
    gold: PathBuf,
    /// Predicted CoNLL file with the same tokens.
    #[arg(long)]
    pred: PathBuf,
    /// `strict` for exact scheme matching (needs --scheme); default: conlleval-compatible lenient chunking.
    #[arg(long)]
    mode: Option<String>,
    /// IOB1, IOB2, IOE1, IOE2, IOBES or BILOU (with --mode strict).
    #[arg(long)]
    scheme: Option<String>,
    #[arg(long, default_value_t = 2)]
    digits: usize,
    #[command(flatten)]
    stats: Stats,
}

#[derive(Args)]
pub struct BleuArgs {
    /// System output, one sentence per line.
    #[arg(long)]
    hyp: PathBuf,
    /// Reference file(s), parallel to --hyp; repeat for several references.
    #[arg(long = "ref", required = true)]
    refs: Vec<PathBuf>,
    /// 13a, intl, char, none or zh.
    #[arg(long, default_value = "13a")]
    tokenize: String,
    #[arg(long)]
    lowercase: bool,
    /// exp, floor, add-k or none.
    #[arg(long, default_value = "exp")]
    smooth_method: String,
    #[arg(long)]
    smooth_value: Option<f64>,
    #[command(flatten)]
    stats: Stats,
}

#[derive(Args)]
pub struct ChrfArgs {
    #[arg(long)]
    hyp: PathBuf,
    #[arg(long = "ref", required = true)]
    refs: Vec<PathBuf>,
    /// 0 for chrF, 2 for chrF++.
    #[arg(long, default_value_t = 0)]
    word_order: usize,
    #[command(flatten)]
    stats: Stats,
}

#[derive(Args)]
pub struct TerArgs {
    #[arg(long)]
    hyp: PathBuf,
    #[arg(long = "ref", required = true)]
    refs: Vec<PathBuf>,
    #[arg(long)]
    normalized: bool,
    #[arg(long)]
    no_punct: bool,
    #[arg(long)]
    case_sensitive: bool,
    #[command(flatten)]
    stats: Stats,
}

/// Builds a metric's keyword arguments for the items at `idx` of one system's predictions.
type ArgsFn = Box<dyn Fn(&[usize], System) -> Map<String, Value>>;

/// A metric that can be recomputed on any multiset of items, for one of two systems.
struct Scalar {
    name: &'static str,
    metric: &'static str,
    /// Keyword arguments for the items at `idx` of the given system's predictions.
    args: ArgsFn,
    /// Picks the number out of the metric's result.
    pick: fn(&Value) -> Option<f64>,
    /// For corpus metrics that are functions of summed per-item statistics (BLEU, chrF): scores a mixed
    /// system directly from those statistics instead of re-tokenising every resample.
    fast: Option<FastFn>,
}

/// Score of a system made of the baseline's outputs on the first items and the candidate's on the second.
type FastFn = Box<dyn Fn(&[usize], &[usize]) -> Result<f64>>;

impl Scalar {
    fn eval(&self, idx: &[usize], system: System) -> Result<f64> {
        match system {
            System::Baseline => self.mixed(idx, &[]),
            System::Candidate => self.mixed(&[], idx),
        }
    }

    /// The score of a system that uses the baseline's outputs on `from_baseline` and the candidate's on
    /// `from_candidate` (approximate randomisation swaps outputs item by item).
    fn mixed(&self, from_baseline: &[usize], from_candidate: &[usize]) -> Result<f64> {
        if let Some(fast) = &self.fast {
            return fast(from_baseline, from_candidate);
        }
        let args = if from_candidate.is_empty() {
            (self.args)(from_baseline, System::Baseline)
        } else if from_baseline.is_empty() {
            (self.args)(from_candidate, System::Candidate)
        } else {
            let mut a = (self.args)(from_baseline, System::Baseline);
            for (k, v) in (self.args)(from_candidate, System::Candidate) {
                match (a.get_mut(&k), v) {
                    // Reference streams: extend each stream.
                    (Some(Value::Array(x)), Value::Array(y))
                        if k == "references" && self.metric.starts_with("corpus_") =>
                    {
                        for (xs, ys) in x.iter_mut().zip(y) {
                            if let (Value::Array(xs), Value::Array(ys)) = (xs, ys) {
                                xs.extend(ys);
                            }
                        }
                    }
                    (Some(Value::Array(x)), Value::Array(y)) => x.extend(y),
                    _ => {}
                }
            }
            a
        };
        let result =
            call(self.metric, &Value::Object(args)).map_err(|e| anyhow!("{}: {}: {e}", self.metric, e.kind()))?;
        (self.pick)(&result).ok_or_else(|| anyhow!("{}: unexpected result {result}", self.metric))
    }
}

fn metric_call(metric: &str, args: Value) -> Result<Value> {
    call(metric, &args).map_err(|e| anyhow!("{metric}: {}: {e}", e.kind()))
}

pub fn run(cmd: MetricsCommand) -> Result<()> {
    match cmd {
        MetricsCommand::List => {
            for m in finetune_metrics::call::list() {
                println!("{:<40} {}", m.name, m.reference);
            }
            Ok(())
        }
        MetricsCommand::Call => call_stdin(),
        MetricsCommand::Classification(a) => classification(a),
        MetricsCommand::Ranking(a) => ranking(a),
        MetricsCommand::Ner(a) => ner(a),
        MetricsCommand::Bleu(a) => bleu(a),
        MetricsCommand::Chrf(a) => chrf(a),
        MetricsCommand::Ter(a) => ter(a),
        MetricsCommand::Rouge(a) => rouge(a),
        MetricsCommand::Squad(a) => squad(a),
        MetricsCommand::ExactMatch(a) => exact_match(a),
        MetricsCommand::Perplexity(a) => perplexity(a),
    }
}

fn call_stdin() -> Result<()> {
    use std::io::{BufRead, Write};
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for line in stdin.lock().lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        writeln!(out, "{}", finetune_metrics::call::call_line(&line))?;
    }
    Ok(())
}

fn pick_number(v: &Value) -> Option<f64> {
    finetune_metrics::json::as_f64(v)
}

fn pick_score(v: &Value) -> Option<f64> {
    v.get("score").and_then(finetune_metrics::json::as_f64)
}

fn subset(values: &[Value], idx: &[usize]) -> Value {
    Value::Array(idx.iter().map(|&i| values[i].clone()).collect())
}

fn classification(a: ClassificationArgs) -> Result<()> {
    let labels = |p: &Path| input::read_label_file(p, &a.text_column_name, &a.label_column_name);
    let gold = labels(&a.y_true)?;
    let pred = labels(&a.y_pred)?;
    input::same_length((&a.y_true, gold.len()), (&a.y_pred, pred.len()), "labels")?;
    let other = match &a.stats.compare {
        Some(p) => {
            let o = labels(p)?;
            input::same_length((&a.y_true, gold.len()), (p, o.len()), "labels")?;
            Some(o)
        }
        None => None,
    };
    let mut sets: Vec<&[String]> = vec![&gold, &pred];
    if let Some(o) = &other {
        sets.push(o);
    }
    let mut encoded = input::labels_json(&sets).into_iter();
    let (y_true, y_pred) = (encoded.next().unwrap_or_default(), encoded.next().unwrap_or_default());
    let y_other = encoded.next();
    let both = json!({ "y_true": y_true, "y_pred": y_pred });

    let report =
        metric_call("classification_report", json!({ "y_true": y_true, "y_pred": y_pred, "digits": a.digits }))?;
    let mut out = Map::new();
    if a.stats.json {
        let dict = metric_call(
            "classification_report",
            json!({ "y_true": y_true, "y_pred": y_pred, "output_dict": true, "digits": a.digits }),
        )?;
        out.insert("classification_report".into(), dict);
        for m in ["accuracy_score", "balanced_accuracy_score", "matthews_corrcoef"] {
            out.insert(m.into(), metric_call(m, both.clone())?);
        }
        out.insert(
            "cohen_kappa_score".into(),
            metric_call("cohen_kappa_score", json!({ "y1": y_true, "y2": y_pred }))?,
        );
        out.insert("confusion_matrix".into(), metric_call("confusion_matrix", both.clone())?);
    } else {
        print!("{}", report.as_str().unwrap_or_default());
    }

    let (t, p, o) = (std::rc::Rc::new(y_true), std::rc::Rc::new(y_pred), std::rc::Rc::new(y_other.unwrap_or_default()));
    let make = |metric: &'static str, name: &'static str, average: Option<&'static str>| {
        let (t, p, o) = (t.clone(), p.clone(), o.clone());
        Scalar {
            name,
            metric,
            args: Box::new(move |idx, system| {
                let preds = if system == System::Candidate { &p } else { &o };
                let mut m = Map::new();
                m.insert("y_true".into(), subset(&t, idx));
                m.insert("y_pred".into(), subset(preds, idx));
                if let Some(avg) = average {
                    m.insert("average".into(), avg.into());
                    m.insert("zero_division".into(), 0.into());
                }
                m
            }),
            pick: pick_number,
            fast: None,
        }
    };
    let scalars = vec![
        make("accuracy_score", "accuracy", None),
        make("f1_score", "macro_f1", Some("macro")),
        make("f1_score", "weighted_f1", Some("weighted")),
    ];
    statistics(&a.stats, gold.len(), &scalars, &mut out)?;
    finish(&a.stats, out)
}

/// Labels and scores of a ranking JSONL file; `width` is the number of classes for multiclass `scores`.
struct Scored {
    labels: Vec<String>,
    scores: Vec<Value>,
    width: Option<usize>,
}

/// Reads scored records; `gold` gives the labels of records that carry only predictions (`finetune predict`'s
/// `{"label": predicted, "probabilities": {class: p}}`), whose scores are then the probabilities: of `pos_label`
/// (default: the last class in sorted order, sklearn's positive) for two classes, all in sorted order otherwise.
fn read_scored(path: &Path, gold: Option<&[String]>, pos_label: Option<&str>) -> Result<Scored> {
    let records = input::read_jsonl(path)?;
    if let Some(g) = gold {
        input::same_length((path, records.len()), (Path::new("--y-true"), g.len()), "records")?;
    }
    let mut labels = Vec::with_capacity(records.len());
    let mut scores = Vec::with_capacity(records.len());
    let mut width = None;
    for (i, (line, r)) in records.iter().enumerate() {
        if let (Some(g), Some(Value::Object(probs))) = (gold, r.get("probabilities")) {
            let mut classes: Vec<&String> = probs.keys().collect();
            classes.sort();
            let p = |c: &str| {
                finetune_metrics::json::as_f64(&probs[c]).ok_or_else(|| {
                    anyhow::anyhow!("{}:{line}: \"probabilities\".{c:?} is not a number", path.display())
                })
            };
            let score = if classes.len() == 2 {
                let pos = pos_label.unwrap_or(classes[1].as_str());
                if !probs.contains_key(pos) {
                    bail!("{}:{line}: no probability for the positive class {pos:?}", path.display());
                }
                json!(p(pos)?)
            } else {
                let row: Vec<f64> = classes.iter().map(|c| p(c)).collect::<Result<_>>()?;
                let w = *width.get_or_insert(row.len());
                if w != row.len() {
                    bail!("{}:{line}: {} classes, the first record has {w}", path.display(), row.len());
                }
                json!(row)
            };
            labels.push(g[i].clone());
            scores.push(score);
            continue;
        }
        let label = match r.get("label") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => u8::from(*b).to_string(),
            _ => bail!("{}:{line}: field \"label\" is missing or not a string/number", path.display()),
        };
        let score = if let Some(s) = r.get("score") {
            finetune_metrics::json::as_f64(s).map(Value::from)
        } else if let Some(Value::Array(xs)) = r.get("scores") {
            let row: Option<Vec<f64>> = xs.iter().map(finetune_metrics::json::as_f64).collect();
            row.and_then(|row| {
                let w = *width.get_or_insert(row.len());
                (w == row.len()).then(|| json!(row))
            })
        } else {
            None
        };
        let Some(score) = score else {
            bail!(
                "{}:{line}: field \"score\" (a number) or \"scores\" (numbers, one per class) is missing or invalid",
                path.display()
            );
        };
        labels.push(label);
        scores.push(score);
    }
    Ok(Scored { labels, scores, width })
}

fn ranking(a: RankingArgs) -> Result<()> {
    let gold = match &a.y_true {
        Some(p) => Some(input::read_label_file(p, &a.text_column_name, &a.label_column_name)?),
        None => None,
    };
    let Scored { labels, scores, width } = read_scored(&a.data, gold.as_deref(), a.pos_label.as_deref())?;
    let other_scores = match &a.stats.compare {
        Some(p) => {
            let o = read_scored(p, gold.as_deref(), a.pos_label.as_deref())?;
            input::same_length((&a.data, labels.len()), (p, o.labels.len()), "records")?;
            if let Some(i) = (0..labels.len()).find(|&i| labels[i] != o.labels[i]) {
                bail!(
                    "{}:{}: label differs from {} (the systems must score the same items)",
                    p.display(),
                    i + 1,
                    a.data.display()
                );
            }
            if o.width != width {
                bail!("{}: scores have a different shape than in {}", p.display(), a.data.display());
            }
            o.scores
        }
        None => Vec::new(),
    };
    let y_true = input::labels_json(&[&labels]).pop().unwrap_or_default();
    let multiclass = width.is_some();
    let mut base = Map::new();
    if let Some(p) = &a.pos_label {
        let v = if y_true.first().is_some_and(Value::is_i64) {
            p.parse::<i64>().map(Value::from).unwrap_or_else(|_| p.as_str().into())
        } else {
            p.as_str().into()
        };
        base.insert("pos_label".into(), v);
    }
    let args_for = |idx: &[usize], base: &Map<String, Value>, multiclass: bool, y_true: &[Value], scores: &[Value]| {
        let mut m = if multiclass { Map::new() } else { base.clone() };
        m.insert("y_true".into(), subset(y_true, idx));
        m.insert("y_score".into(), subset(scores, idx));
        if multiclass {
            m.insert("multi_class".into(), "ovr".into());
        }
        m
    };
    let all: Vec<usize> = (0..labels.len()).collect();
    let mut out = Map::new();
    let auc =
        metric_call("roc_auc_score", Value::Object(auc_args(args_for(&all, &base, multiclass, &y_true, &scores))))?;
    let ap = if multiclass {
        None
    } else {
        Some(metric_call("average_precision_score", Value::Object(args_for(&all, &base, false, &y_true, &scores)))?)
    };
    if a.stats.json {
        out.insert("roc_auc_score".into(), auc);
        if let Some(ap) = ap {
            out.insert("average_precision_score".into(), ap);
        }
        if a.curves && !multiclass {
            for m in ["roc_curve", "precision_recall_curve"] {
                out.insert(m.into(), metric_call(m, Value::Object(args_for(&all, &base, false, &y_true, &scores)))?);
            }
        }
    } else {
        let f =
            |v: &Value| finetune_metrics::json::as_f64(v).map(|x| format!("{x:.4}")).unwrap_or_else(|| v.to_string());
        println!("roc_auc_score: {}", f(&auc));
        if let Some(ap) = &ap {
            println!("average_precision_score: {}", f(ap));
        }
    }
    let (t, s, o) = (std::rc::Rc::new(y_true), std::rc::Rc::new(scores), std::rc::Rc::new(other_scores));
    let scalars = vec![Scalar {
        name: "roc_auc",
        metric: "roc_auc_score",
        args: Box::new(move |idx, system| {
            let scores = if system == System::Candidate { &s } else { &o };
            auc_args(args_for(idx, &base, multiclass, &t, scores))
        }),
        pick: pick_number,
        fast: None,
    }];
    statistics(&a.stats, labels.len(), &scalars, &mut out)?;
    finish(&a.stats, out)
}

/// sklearn's `roc_auc_score` has no `pos_label` (the greater label is positive): with one, the labels become
/// 1 for the positive class and 0 otherwise, which is what `pos_label` means for the other ranking metrics.
fn auc_args(mut m: Map<String, Value>) -> Map<String, Value> {
    if let Some(pos) = m.remove("pos_label") {
        if let Some(Value::Array(y)) = m.get_mut("y_true") {
            for v in y.iter_mut() {
                *v = Value::from(i64::from(*v == pos));
            }
        }
    }
    m
}

fn ner(a: NerArgs) -> Result<()> {
    let gold = input::read_conll(&a.gold)?;
    let pred = input::read_conll(&a.pred)?;
    input::same_length((&a.gold, gold.len()), (&a.pred, pred.len()), "sentences")?;
    for (i, (g, p)) in gold.iter().zip(&pred).enumerate() {
        if g.len() != p.len() {
            bail!(
                "{}: sentence {} has {} tokens but {} has {} in that sentence",
                a.pred.display(),
                i + 1,
                p.len(),
                a.gold.display(),
                g.len()
            );
        }
    }
    let tags = |s: &[Vec<(String, String)>]| -> Vec<Value> {
        s.iter().map(|sent| Value::Array(sent.iter().map(|(_, t)| Value::from(t.as_str())).collect())).collect()
    };
    let (y_true, y_pred) = (tags(&gold), tags(&pred));
    let y_other = match &a.stats.compare {
        Some(p) => {
            let o = input::read_conll(p)?;
            input::same_length((&a.gold, gold.len()), (p, o.len()), "sentences")?;
            tags(&o)
        }
        None => Vec::new(),
    };
    let mut base = Map::new();
    if let Some(m) = &a.mode {
        base.insert("mode".into(), m.as_str().into());
    }
    if let Some(s) = &a.scheme {
        base.insert("scheme".into(), s.as_str().into());
    }
    let with = |extra: Value| -> Value {
        let mut m = base.clone();
        m.insert("y_true".into(), Value::Array(y_true.clone()));
        m.insert("y_pred".into(), Value::Array(y_pred.clone()));
        if let Value::Object(e) = extra {
            m.extend(e);
        }
        Value::Object(m)
    };
    let mut out = Map::new();
    if a.stats.json {
        out.insert(
            "classification_report".into(),
            metric_call("seqeval.classification_report", with(json!({ "output_dict": true, "digits": a.digits })))?,
        );
        out.insert("accuracy_score".into(), metric_call("seqeval.accuracy_score", with(json!({})))?);
    } else {
        let report = metric_call("seqeval.classification_report", with(json!({ "digits": a.digits })))?;
        print!("{}", report.as_str().unwrap_or_default());
    }
    let (t, p, o) = (std::rc::Rc::new(y_true), std::rc::Rc::new(y_pred), std::rc::Rc::new(y_other));
    let scalars = vec![Scalar {
        name: "f1",
        metric: "seqeval.f1_score",
        args: Box::new(move |idx, system| {
            let preds = if system == System::Candidate { &p } else { &o };
            let mut m = base.clone();
            m.insert("y_true".into(), subset(&t, idx));
            m.insert("y_pred".into(), subset(preds, idx));
            m.insert("zero_division".into(), 0.into());
            m
        }),
        pick: pick_number,
        fast: None,
    }];
    statistics(&a.stats, gold.len(), &scalars, &mut out)?;
    finish(&a.stats, out)
}

/// Hypotheses, reference streams and an optional second system for the sacrebleu commands.
struct Corpus {
    hyps: Vec<Value>,
    refs: Vec<Vec<Value>>,
    other: Vec<Value>,
}

fn read_corpus(hyp: &Path, refs: &[PathBuf], stats: &Stats) -> Result<Corpus> {
    let as_values = |v: Vec<String>| v.into_iter().map(Value::from).collect::<Vec<_>>();
    let hyps = input::read_lines(hyp)?;
    let mut streams = Vec::new();
    for r in refs {
        let lines = input::read_lines(r)?;
        input::same_length((hyp, hyps.len()), (r, lines.len()), "lines")?;
        streams.push(as_values(lines));
    }
    let other = match &stats.compare {
        Some(p) => {
            let o = input::read_lines(p)?;
            input::same_length((hyp, hyps.len()), (p, o.len()), "lines")?;
            as_values(o)
        }
        None => Vec::new(),
    };
    if hyps.is_empty() {
        bail!("{}: no sentences (the file is empty)", hyp.display());
    }
    Ok(Corpus { hyps: as_values(hyps), refs: streams, other })
}

/// The corpus score of summed statistics.
type StatsScore = Box<dyn Fn(&[f64]) -> Result<f64>>;

/// Per-item sufficient statistics (`k` per item) of both systems, and the score of their sum.
struct ItemStats {
    k: usize,
    candidate: Vec<f64>,
    baseline: Vec<f64>,
    score: StatsScore,
}

impl ItemStats {
    fn into_fast(self) -> FastFn {
        Box::new(move |from_baseline: &[usize], from_candidate: &[usize]| {
            let mut sum = vec![0.0; self.k];
            let mut part = vec![0.0; self.k];
            significance::sum_rows(&self.baseline, self.k, from_baseline, &mut part);
            sum.iter_mut().zip(&part).for_each(|(s, p)| *s += p);
            significance::sum_rows(&self.candidate, self.k, from_candidate, &mut part);
            sum.iter_mut().zip(&part).for_each(|(s, p)| *s += p);
            (self.score)(&sum)
        })
    }
}

/// Statistics of every item of one system, row-major.
fn stats_rows(
    hyps: &[Value],
    corpus: &Corpus,
    k: usize,
    f: impl Fn(&str, &[Option<&str>]) -> finetune_metrics::Result<Vec<f64>>,
) -> Result<Vec<f64>> {
    let mut rows = Vec::with_capacity(hyps.len() * k);
    for (i, h) in hyps.iter().enumerate() {
        let refs: Vec<Option<&str>> = corpus.refs.iter().map(|r| r[i].as_str()).collect();
        rows.extend(f(h.as_str().unwrap_or_default(), &refs).map_err(|e| anyhow!("{}: {e}", e.kind()))?);
    }
    Ok(rows)
}

fn sacrebleu_command(
    metric: &'static str,
    corpus: Corpus,
    options: Map<String, Value>,
    stats: &Stats,
    item_stats: Option<ItemStats>,
) -> Result<()> {
    let mut args = options.clone();
    args.insert("hypotheses".into(), Value::Array(corpus.hyps.clone()));
    args.insert("references".into(), Value::Array(corpus.refs.iter().map(|r| Value::Array(r.clone())).collect()));
    let result = metric_call(metric, Value::Object(args))?;
    let mut out = Map::new();
    if stats.json {
        out.insert(metric.into(), result);
    } else {
        println!("{}", result.get("str").and_then(Value::as_str).unwrap_or_default());
        if let Some(sig) = result.get("signature").and_then(Value::as_str) {
            println!("signature: {sig}");
        }
    }
    let n = corpus.hyps.len();
    let corpus = std::rc::Rc::new(corpus);
    let scalars = vec![Scalar {
        name: "score",
        metric,
        args: Box::new(move |idx, system| {
            let hyps = if system == System::Candidate { &corpus.hyps } else { &corpus.other };
            let mut m = options.clone();
            m.insert("hypotheses".into(), subset(hyps, idx));
            m.insert("references".into(), Value::Array(corpus.refs.iter().map(|r| subset(r, idx)).collect()));
            m
        }),
        pick: pick_score,
        fast: item_stats.map(ItemStats::into_fast),
    }];
    statistics(stats, n, &scalars, &mut out)?;
    finish(stats, out)
}

fn bleu(a: BleuArgs) -> Result<()> {
    let corpus = read_corpus(&a.hyp, &a.refs, &a.stats)?;
    let mut o = Map::new();
    o.insert("tokenize".into(), a.tokenize.as_str().into());
    o.insert("lowercase".into(), a.lowercase.into());
    o.insert("smooth_method".into(), a.smooth_method.as_str().into());
    if let Some(v) = a.smooth_value {
        o.insert("smooth_value".into(), v.into());
    }
    let wants_stats = a.stats.ci || a.stats.compare.is_some();
    let item_stats = if wants_stats {
        use finetune_metrics::generation::{bleu, tokenize::Tokenizer, NumRefs};
        let opts = bleu::BleuOptions {
            lowercase: a.lowercase,
            tokenize: Tokenizer::parse(&a.tokenize).map_err(|e| anyhow!("--tokenize: {e}"))?,
            smooth_method: bleu::Smooth::parse(&a.smooth_method).map_err(|e| anyhow!("--smooth-method: {e}"))?,
            smooth_value: a.smooth_value,
            ..Default::default()
        };
        let k = bleu::BLEU_STATS;
        let f = |h: &str, r: &[Option<&str>]| bleu::bleu_stats(h, r, &opts).map(|s| s.to_vec());
        let candidate = stats_rows(&corpus.hyps, &corpus, k, f)?;
        let baseline = stats_rows(&corpus.other, &corpus, k, f)?;
        let nrefs = NumRefs::Fixed(corpus.refs.len());
        Some(ItemStats {
            k,
            candidate,
            baseline,
            score: Box::new(move |sum| {
                let mut s = [0.0; bleu::BLEU_STATS];
                s.copy_from_slice(sum);
                Ok(bleu::bleu_from_stats(&s, &opts, nrefs).score)
            }),
        })
    } else {
        None
    };
    sacrebleu_command("corpus_bleu", corpus, o, &a.stats, item_stats)
}

fn chrf(a: ChrfArgs) -> Result<()> {
    let corpus = read_corpus(&a.hyp, &a.refs, &a.stats)?;
    let mut o = Map::new();
    o.insert("word_order".into(), a.word_order.into());
    let item_stats = if a.stats.ci || a.stats.compare.is_some() {
        use finetune_metrics::generation::chrf;
        let opts = chrf::ChrfOptions { word_order: a.word_order, ..Default::default() };
        let k = opts.n_stats();
        let f = |h: &str, r: &[Option<&str>]| chrf::chrf_stats(h, r, &opts);
        let candidate = stats_rows(&corpus.hyps, &corpus, k, f)?;
        let baseline = stats_rows(&corpus.other, &corpus, k, f)?;
        Some(ItemStats {
            k,
            candidate,
            baseline,
            score: Box::new(move |sum| chrf::chrf_f_score(sum, &opts).map_err(|e| anyhow!("{}: {e}", e.kind()))),
        })
    } else {
        None
    };
    sacrebleu_command("corpus_chrf", corpus, o, &a.stats, item_stats)
}

fn ter(a: TerArgs) -> Result<()> {
    let corpus = read_corpus(&a.hyp, &a.refs, &a.stats)?;
    let mut o = Map::new();
    o.insert("normalized".into(), a.normalized.into());
    o.insert("no_punct".into(), a.no_punct.into());
    o.insert("case_sensitive".into(), a.case_sensitive.into());
    sacrebleu_command("corpus_ter", corpus, o, &a.stats, None)
}

fn rouge(a: RougeArgs) -> Result<()> {
    let corpus = read_corpus(&a.hyp, &a.refs, &a.stats)?;
    let n = corpus.hyps.len();
    let targets: Vec<Value> =
        (0..n).map(|i| Value::Array(corpus.refs.iter().map(|r| r[i].clone()).collect())).collect();
    let mut options = Map::new();
    options.insert("rouge_types".into(), json!(a.rouge_types));
    options.insert("use_stemmer".into(), a.use_stemmer.into());
    let mut args = options.clone();
    args.insert("predictions".into(), Value::Array(corpus.hyps.clone()));
    args.insert("targets".into(), Value::Array(targets.clone()));
    let result = metric_call("rouge_score.mean", Value::Object(args))?;
    let mut out = Map::new();
    if a.stats.json {
        out.insert("rouge".into(), result.clone());
    } else {
        println!("{:<10} {:>9} {:>9} {:>9}", "", "precision", "recall", "fmeasure");
        for t in &a.rouge_types {
            let f = |k: &str| result[t.as_str()][k].as_f64().map(|x| format!("{x:.4}")).unwrap_or_default();
            println!("{t:<10} {:>9} {:>9} {:>9}", f("precision"), f("recall"), f("fmeasure"));
        }
    }
    let (targets, corpus) = (std::rc::Rc::new(targets), std::rc::Rc::new(corpus));
    let scalars: Vec<Scalar> = a
        .rouge_types
        .iter()
        .map(|t| {
            let (targets, corpus, options, t) = (targets.clone(), corpus.clone(), options.clone(), t.clone());
            Scalar {
                name: leak(format!("{t}_f")),
                metric: "rouge_score.mean",
                args: Box::new(move |idx, system| {
                    let hyps = if system == System::Candidate { &corpus.hyps } else { &corpus.other };
                    let mut m = options.clone();
                    m.insert("rouge_types".into(), json!([t]));
                    m.insert("predictions".into(), subset(hyps, idx));
                    m.insert("targets".into(), subset(&targets, idx));
                    m
                }),
                pick: |v| v.as_object().and_then(|o| o.values().next()).and_then(|s| s["fmeasure"].as_f64()),
                fast: None,
            }
        })
        .collect();
    statistics(&a.stats, n, &scalars, &mut out)?;
    finish(&a.stats, out)
}

/// A metric label that lives for the whole (short) process.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn squad(a: SquadArgs) -> Result<()> {
    let preds = input::read_jsonl(&a.pred)?;
    let refs = input::read_jsonl(&a.reference)?;
    input::same_length((&a.pred, preds.len()), (&a.reference, refs.len()), "records")?;
    for (line, p) in &preds {
        if !p.get("id").is_some_and(Value::is_string) || !p.get("prediction_text").is_some_and(Value::is_string) {
            bail!("{}:{line}: expected string fields \"id\" and \"prediction_text\"", a.pred.display());
        }
    }
    for (line, r) in &refs {
        if !r.get("id").is_some_and(Value::is_string) || !r.pointer("/answers/text").is_some_and(Value::is_array) {
            bail!("{}:{line}: expected \"id\" and \"answers\": {{\"text\": [...]}}", a.reference.display());
        }
    }
    let args = json!({
        "predictions": preds.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
        "references": refs.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
    });
    let result = metric_call("squad", args)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        for k in ["exact_match", "f1"] {
            println!("{k}: {:.4}", result[k].as_f64().unwrap_or(f64::NAN));
        }
    }
    Ok(())
}

fn exact_match(a: ExactMatchArgs) -> Result<()> {
    let preds: Vec<Value> = input::read_lines(&a.pred)?.into_iter().map(Value::from).collect();
    let refs: Vec<Value> = input::read_lines(&a.reference)?.into_iter().map(Value::from).collect();
    input::same_length((&a.pred, preds.len()), (&a.reference, refs.len()), "lines")?;
    let other: Vec<Value> = match &a.stats.compare {
        Some(p) => {
            let o: Vec<Value> = input::read_lines(p)?.into_iter().map(Value::from).collect();
            input::same_length((&a.pred, preds.len()), (p, o.len()), "lines")?;
            o
        }
        None => Vec::new(),
    };
    let mut options = Map::new();
    options.insert("ignore_case".into(), a.ignore_case.into());
    options.insert("ignore_punctuation".into(), a.ignore_punctuation.into());
    options.insert("ignore_numbers".into(), a.ignore_numbers.into());
    if !a.regexes_to_ignore.is_empty() {
        options.insert("regexes_to_ignore".into(), json!(a.regexes_to_ignore));
    }
    let mut args = options.clone();
    args.insert("predictions".into(), Value::Array(preds.clone()));
    args.insert("references".into(), Value::Array(refs.clone()));
    let result = metric_call("exact_match", Value::Object(args))?;
    let mut out = Map::new();
    if a.stats.json {
        out.insert("exact_match".into(), result["exact_match"].clone());
    } else {
        println!("exact_match: {:.4}", result["exact_match"].as_f64().unwrap_or(f64::NAN));
    }
    let n = preds.len();
    let (p, r, o) = (std::rc::Rc::new(preds), std::rc::Rc::new(refs), std::rc::Rc::new(other));
    let scalars = vec![Scalar {
        name: "exact_match",
        metric: "exact_match",
        args: Box::new(move |idx, system| {
            let preds = if system == System::Candidate { &p } else { &o };
            let mut m = options.clone();
            m.insert("predictions".into(), subset(preds, idx));
            m.insert("references".into(), subset(&r, idx));
            m
        }),
        pick: |v| v["exact_match"].as_f64(),
        fast: None,
    }];
    statistics(&a.stats, n, &scalars, &mut out)?;
    finish(&a.stats, out)
}

fn perplexity(a: PerplexityArgs) -> Result<()> {
    let records = input::read_jsonl(&a.data)?;
    let key =
        ["log_probs", "log2_probs", "probs"].into_iter().find(|k| records[0].1.get(*k).is_some()).ok_or_else(|| {
            anyhow!(
                "{}:{}: expected a field \"log_probs\", \"log2_probs\" or \"probs\"",
                a.data.display(),
                records[0].0
            )
        })?;
    let mut rows = Vec::with_capacity(records.len());
    for (line, r) in &records {
        match r.get(key) {
            Some(Value::Array(xs)) if xs.iter().all(|x| finetune_metrics::json::as_f64(x).is_some()) => {
                rows.push(Value::Array(xs.clone()))
            }
            _ => bail!("{}:{line}: field \"{key}\" must be an array of numbers", a.data.display()),
        }
    }
    // Sequences of different lengths: pad and mask.
    let width = rows.iter().map(|r| r.as_array().map_or(0, Vec::len)).max().unwrap_or(0);
    let pad = if key == "probs" { 1.0 } else { 0.0 };
    let mut mask = Vec::with_capacity(rows.len());
    for r in rows.iter_mut() {
        if let Value::Array(xs) = r {
            mask.push(json!((0..width).map(|i| u8::from(i < xs.len())).collect::<Vec<_>>()));
            xs.resize(width, json!(pad));
        }
    }
    let result = metric_call("perplexity", json!({ key: rows, "mask": mask }))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        let f = |k: &str| finetune_metrics::json::as_f64(&result[k]).unwrap_or(f64::NAN);
        println!("perplexity: {:.4}  (token-weighted over {} sequences)", f("perplexity"), records.len());
        println!("mean_perplexity: {:.4}  (mean of per-sequence perplexities)", f("mean_perplexity"));
    }
    Ok(())
}

/// Bootstrap intervals (--ci) and the paired test (--compare) for each scalar, printed or added to `out`.
fn statistics(stats: &Stats, n: usize, scalars: &[Scalar], out: &mut Map<String, Value>) -> Result<()> {
    if stats.ci {
        let n_samples = if stats.n_samples == 0 { 1000 } else { stats.n_samples };
        let mut cis = Map::new();
        if !stats.json {
            println!(
                "\nbootstrap {:.0}% confidence intervals ({n_samples} resamples, seed {}):",
                stats.confidence * 100.0,
                stats.seed
            );
        }
        for s in scalars {
            let mut err = None;
            let ci = significance::bootstrap_ci(n, n_samples, stats.confidence, stats.seed, |idx| {
                s.eval(idx, System::Candidate).unwrap_or_else(|e| {
                    err.get_or_insert(e);
                    f64::NAN
                })
            })?;
            if let Some(e) = err {
                return Err(e);
            }
            if stats.json {
                cis.insert(
                    s.name.into(),
                    json!({ "score": num(ci.score), "mean": num(ci.mean), "lower": num(ci.lower), "upper": num(ci.upper),
                            "confidence": ci.confidence, "n_resamples": ci.n_resamples }),
                );
            } else {
                println!("  {:<12} {:.4}  [{:.4}, {:.4}]", s.name, ci.score, ci.lower, ci.upper);
            }
        }
        out.insert("confidence_intervals".into(), Value::Object(cis));
    }
    if let Some(other) = &stats.compare {
        let mut tests = Map::new();
        if !stats.json {
            println!(
                "\npaired {} test against {} (baseline), seed {}:",
                test_name(&stats.test),
                other.display(),
                stats.seed
            );
        }
        for s in scalars {
            let mut err = None;
            let mut record = |r: Result<f64>| {
                r.unwrap_or_else(|e| {
                    err.get_or_insert(e);
                    f64::NAN
                })
            };
            let result = if stats.test == "ar" {
                let trials = if stats.n_samples == 0 { 10_000 } else { stats.n_samples };
                // Swapping item i's outputs between the systems: rebuild both systems' item lists.
                significance::approximate_randomization(n, trials, stats.seed, |swap| {
                    let (a_idx, b_idx) = split_by_swap(swap);
                    let a = record(s.mixed(&a_idx, &b_idx));
                    let b = record(s.mixed(&b_idx, &a_idx));
                    (a, b)
                })?
            } else {
                let samples = if stats.n_samples == 0 { 1000 } else { stats.n_samples };
                significance::paired_bootstrap(n, samples, stats.seed, |system, idx| record(s.eval(idx, system)))?
            };
            if let Some(e) = err {
                return Err(e);
            }
            if stats.json {
                tests.insert(
                    s.name.into(),
                    json!({ "baseline": num(result.baseline), "candidate": num(result.candidate),
                            "p_value": num(result.p_value), "test": stats.test, "n_samples": result.n_samples }),
                );
            } else {
                println!(
                    "  {:<12} baseline {:.4}  candidate {:.4}  p = {:.4}{}",
                    s.name,
                    result.baseline,
                    result.candidate,
                    result.p_value,
                    if result.p_value < 0.05 { "  (significant at 0.05)" } else { "" }
                );
            }
        }
        out.insert("paired_test".into(), Value::Object(tests));
    }
    Ok(())
}

fn test_name(t: &str) -> &'static str {
    if t == "ar" {
        "approximate randomisation"
    } else {
        "bootstrap"
    }
}

/// Items kept (`false`) and swapped (`true`).
fn split_by_swap(swap: &[bool]) -> (Vec<usize>, Vec<usize>) {
    let mut kept = Vec::new();
    let mut swapped = Vec::new();
    for (i, &s) in swap.iter().enumerate() {
        if s {
            swapped.push(i)
        } else {
            kept.push(i)
        }
    }
    (kept, swapped)
}

fn num(x: f64) -> Value {
    finetune_metrics::json::num(x)
}

fn finish(stats: &Stats, out: Map<String, Value>) -> Result<()> {
    if stats.json {
        println!("{}", serde_json::to_string_pretty(&Value::Object(out))?);
    }
    Ok(())
}
