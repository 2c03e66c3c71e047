//! ROUGE exactly as rouge-score 0.1.2 (`rouge_score.rouge_scorer.RougeScorer`), the implementation behind HF
//! evaluate's `rouge`.
//!
//! * Tokenizer (`rouge_score.tokenize.tokenize`): Python `str.lower()`, every run of characters outside
//!   `[a-z0-9]` becomes a separator, and with `use_stemmer` NLTK's Porter stemmer is applied to tokens longer
//!   than 3 characters.
//! * `rougeN` (N = 1..9): clipped n-gram overlap; precision = overlap / max(#prediction n-grams, 1), recall =
//!   overlap / max(#target n-grams, 1).
//! * `rougeL`: longest common subsequence over the whole token sequences (all zero if either is empty).
//! * `rougeLsum`: summary-level LCS (ROUGE paper §3.2 as ROUGE-1.5.5 implements it): sentences are the
//!   non-empty lines of the text; for every target sentence the union of its LCS index sets with every
//!   prediction sentence, counted without double-counting tokens.
//! * F-measure: `2 p r / (p + r)`, or 0 when `p + r == 0`.
//!
//! `split_summaries=True` makes rouge-score split sentences with NLTK's punkt model; that model is not
//! reproduced here, so asking for `rougeLsum` with `split_summaries` is a `ValueError` (any other rouge type
//! is unaffected by the flag and works).

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::call::MetricInfo;
use crate::error::{MetricError, Result};
use crate::json::{num, Args};

pub(crate) const METRICS: &[MetricInfo] = &[
    MetricInfo { name: "rouge_score.score", reference: "rouge_score.rouge_scorer.RougeScorer.score" },
    MetricInfo { name: "rouge_score.score_multi", reference: "rouge_score.rouge_scorer.RougeScorer.score_multi" },
    MetricInfo {
        name: "rouge_score.mean",
        reference: "mean over pairs of rouge_score.rouge_scorer.RougeScorer.score / score_multi (HF evaluate rouge, use_aggregator=False, then mean)",
    },
];

/// NLTK's Porter stemmer (`nltk.stem.porter.PorterStemmer().stem`, default `NLTK_EXTENSIONS` mode) as
/// rouge-score uses it.
pub fn porter_stem(word: &str) -> String {
    crate::porter::stem(word)
}

/// `rouge_score.tokenize.tokenize(text, stemmer)`: the tokens a `RougeScorer` compares.
pub fn tokenize(text: &str, use_stemmer: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    for_each_token(text, &mut buf, |tok| {
        if use_stemmer && tok.len() > 3 {
            crate::porter::stem_ascii_in_place(tok);
        }
        if !tok.is_empty() {
            out.push(tok.iter().map(|&b| char::from(b)).collect());
        }
    });
    out
}

/// Calls `f` on every raw token (lowercase ASCII `[a-z0-9]+`) of `text` as Python's
/// `re.sub("[^a-z0-9]+", " ", text.lower()).split()` yields them.
fn for_each_token(text: &str, buf: &mut Vec<u8>, mut f: impl FnMut(&mut Vec<u8>)) {
    buf.clear();
    let mut flush = |buf: &mut Vec<u8>| {
        if !buf.is_empty() {
            f(buf);
            buf.clear();
        }
    };
    for c in text.chars() {
        match c {
            'a'..='z' | '0'..='9' => buf.push(c as u8),
            'A'..='Z' => buf.push(c.to_ascii_lowercase() as u8),
            // The only non-ASCII characters whose Python lowercase contains [a-z0-9]:
            // KELVIN SIGN -> "k"; LATIN CAPITAL I WITH DOT ABOVE -> "i" + COMBINING DOT (a separator).
            '\u{212A}' => buf.push(b'k'),
            '\u{130}' => {
                buf.push(b'i');
                flush(buf);
            }
            _ => flush(buf),
        }
    }
    flush(buf);
}

/// One rouge type of `RougeScorer(rouge_types=...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RougeType {
    /// `rouge1` … `rouge9`.
    N(usize),
    /// `rougeL`.
    L,
    /// `rougeLsum`.
    LSum,
}

impl RougeType {
    /// Parses a name as rouge-score does (`rouge[0-9]`, `rougeL`, `rougeLsum`); `rouge0` and anything else is
    /// a `ValueError`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "rougeL" => Ok(RougeType::L),
            "rougeLsum" => Ok(RougeType::LSum),
            _ => match name.strip_prefix("rouge").map(str::as_bytes) {
                // Python's `$` in `rouge[0-9]$` also matches before a final newline.
                Some([d @ b'0'..=b'9']) | Some([d @ b'0'..=b'9', b'\n']) => {
                    let n = usize::from(d - b'0');
                    if n == 0 {
                        Err(MetricError::value(format!("rougen requires positive n: {name}")))
                    } else {
                        Ok(RougeType::N(n))
                    }
                }
                _ => Err(MetricError::value(format!("Invalid rouge type: {name}"))),
            },
        }
    }
}

/// `rouge_score.scoring.Score`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Score {
    pub precision: f64,
    pub recall: f64,
    pub fmeasure: f64,
}

impl Score {
    fn new(precision: f64, recall: f64) -> Self {
        Score { precision, recall, fmeasure: fmeasure(precision, recall) }
    }
}

/// `rouge_score.scoring.fmeasure`.
pub fn fmeasure(precision: f64, recall: f64) -> f64 {
    if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    }
}

/// `rouge_score.rouge_scorer.RougeScorer(rouge_types, use_stemmer, split_summaries)`.
#[derive(Debug, Clone)]
pub struct RougeScorer {
    names: Vec<String>,
    types: Vec<RougeType>,
    use_stemmer: bool,
}

/// Scores in the order of the scorer's `rouge_types` (a repeated type appears twice, with equal scores).
pub type Scores = Vec<(String, Score)>;

impl RougeScorer {
    /// Validates the rouge types (`ValueError` as rouge-score raises on `score`). See the module docs for
    /// `split_summaries`.
    pub fn new<S: AsRef<str>>(rouge_types: &[S], use_stemmer: bool, split_summaries: bool) -> Result<Self> {
        let types = rouge_types.iter().map(|t| RougeType::parse(t.as_ref())).collect::<Result<Vec<_>>>()?;
        if split_summaries && types.contains(&RougeType::LSum) {
            return Err(MetricError::value(
                "rougeLsum with split_summaries=True needs NLTK's punkt sentence splitter, which is not supported; \
                 separate sentences with newlines and use split_summaries=False",
            ));
        }
        Ok(RougeScorer { names: rouge_types.iter().map(|t| t.as_ref().to_owned()).collect(), types, use_stemmer })
    }

    pub fn rouge_types(&self) -> &[String] {
        &self.names
    }

    /// `RougeScorer.score(target, prediction)`.
    pub fn score(&self, target: &str, prediction: &str) -> Scores {
        let mut ws = Workspace::default();
        let pred = ws.prepare(prediction, self);
        self.score_prepared(&mut ws, target, &pred)
    }

    /// `RougeScorer.score_multi(targets, prediction)`: per rouge type, the score of the first target with the
    /// highest F-measure. No targets is a `ValueError` (numpy's argmax of an empty sequence) unless there are
    /// no rouge types.
    pub fn score_multi<S: AsRef<str>>(&self, targets: &[S], prediction: &str) -> Result<Scores> {
        if targets.is_empty() {
            if self.types.is_empty() {
                return Ok(Vec::new());
            }
            return Err(MetricError::value("attempt to get argmax of an empty sequence"));
        }
        let mut ws = Workspace::default();
        let pred = ws.prepare(prediction, self);
        let mut best: Scores = Vec::new();
        for (i, t) in targets.iter().enumerate() {
            let s = self.score_prepared(&mut ws, t.as_ref(), &pred);
            if i == 0 {
                best = s;
            } else {
                for (b, (_, x)) in best.iter_mut().zip(s) {
                    if x.fmeasure > b.1.fmeasure {
                        b.1 = x;
                    }
                }
            }
        }
        Ok(best)
    }

    fn score_prepared(&self, ws: &mut Workspace, target: &str, pred: &Prepared) -> Scores {
        let tgt = ws.prepare(target, self);
        self.types
            .iter()
            .zip(&self.names)
            .map(|(ty, name)| {
                let s = match *ty {
                    RougeType::N(n) => score_ngrams(&tgt.tokens, &pred.tokens, n, ws.vocab_len()),
                    RougeType::L => score_lcs(&tgt.tokens, &pred.tokens, &mut ws.row),
                    RougeType::LSum => score_summary_lcs(&tgt.sents, &pred.sents, ws),
                };
                (name.clone(), s)
            })
            .collect()
    }
}

/// A text as token ids: the whole text and, for rougeLsum, its non-empty lines.
struct Prepared {
    tokens: Vec<u32>,
    sents: Vec<Vec<u32>>,
}

/// Token interning and reusable buffers for one scoring call.
#[derive(Default)]
struct Workspace {
    /// Raw token -> id of its (possibly stemmed) form.
    raw: HashMap<Vec<u8>, u32>,
    /// Stemmed form -> id (only used with the stemmer, so that different raw tokens share a stem's id).
    stemmed: HashMap<Vec<u8>, u32>,
    next_id: u32,
    buf: Vec<u8>,
    row: Vec<u32>,
    table: Vec<u32>,
    counts: Vec<i64>,
}

impl Workspace {
    fn vocab_len(&self) -> usize {
        self.next_id as usize
    }

    fn prepare(&mut self, text: &str, scorer: &RougeScorer) -> Prepared {
        let need_tokens = scorer.types.iter().any(|t| *t != RougeType::LSum);
        let need_sents = scorer.types.contains(&RougeType::LSum);
        let tokens = if need_tokens { self.ids(text, scorer.use_stemmer) } else { Vec::new() };
        let sents = if need_sents {
            text.split('\n').filter(|s| !s.is_empty()).map(|s| self.ids(s, scorer.use_stemmer)).collect()
        } else {
            Vec::new()
        };
        Prepared { tokens, sents }
    }

    fn ids(&mut self, text: &str, use_stemmer: bool) -> Vec<u32> {
        let mut out = Vec::new();
        let mut buf = std::mem::take(&mut self.buf);
        for_each_token(text, &mut buf, |tok| {
            if let Some(&id) = self.raw.get(tok.as_slice()) {
                out.push(id);
                return;
            }
            let id = if use_stemmer {
                let mut s = tok.clone();
                if s.len() > 3 {
                    crate::porter::stem_ascii_in_place(&mut s);
                }
                match self.stemmed.get(&s) {
                    Some(&id) => id,
                    None => {
                        let id = self.next_id;
                        self.next_id += 1;
                        self.stemmed.insert(s, id);
                        id
                    }
                }
            } else {
                let id = self.next_id;
                self.next_id += 1;
                id
            };
            self.raw.insert(tok.clone(), id);
            out.push(id);
        });
        self.buf = buf;
        out
    }
}

fn score_ngrams(target: &[u32], prediction: &[u32], n: usize, vocab: usize) -> Score {
    let t_count = (target.len() + 1).saturating_sub(n);
    let p_count = (prediction.len() + 1).saturating_sub(n);
    let overlap: usize = if t_count == 0 || p_count == 0 {
        0
    } else if n == 1 {
        // Unigrams: dense counts by token id.
        let mut counts = vec![0i64; vocab];
        for &t in prediction {
            counts[t as usize] += 1;
        }
        let mut hits = 0;
        for &t in target {
            let c = &mut counts[t as usize];
            if *c > 0 {
                *c -= 1;
                hits += 1;
            }
        }
        hits
    } else {
        let mut counts: HashMap<&[u32], i64> = HashMap::with_capacity(p_count);
        for g in prediction.windows(n) {
            *counts.entry(g).or_insert(0) += 1;
        }
        let mut hits = 0;
        for g in target.windows(n) {
            if let Some(c) = counts.get_mut(g) {
                if *c > 0 {
                    *c -= 1;
                    hits += 1;
                }
            }
        }
        hits
    };
    Score::new(overlap as f64 / p_count.max(1) as f64, overlap as f64 / t_count.max(1) as f64)
}

/// Length of the longest common subsequence, with one rolling DP row.
fn lcs_length(a: &[u32], b: &[u32], row: &mut Vec<u32>) -> usize {
    row.clear();
    row.resize(b.len() + 1, 0);
    for &x in a {
        let mut diag = 0;
        for (j, &y) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if x == y { diag + 1 } else { up.max(row[j]) };
            diag = up;
        }
    }
    row[b.len()] as usize
}

fn score_lcs(target: &[u32], prediction: &[u32], row: &mut Vec<u32>) -> Score {
    if target.is_empty() || prediction.is_empty() {
        return Score::default();
    }
    let lcs = lcs_length(target, prediction, row) as f64;
    Score::new(lcs / prediction.len() as f64, lcs / target.len() as f64)
}

/// Marks in `hit` the indices of `r` on rouge-score's LCS of `r` and `c` (`lcs_ind`: full table, then the
/// same backtrack, which prefers moving left only when strictly better).
fn mark_lcs(r: &[u32], c: &[u32], table: &mut Vec<u32>, hit: &mut [bool]) {
    let w = c.len() + 1;
    table.clear();
    table.resize((r.len() + 1) * w, 0);
    for i in 1..=r.len() {
        for j in 1..=c.len() {
            table[i * w + j] = if r[i - 1] == c[j - 1] {
                table[(i - 1) * w + j - 1] + 1
            } else {
                table[(i - 1) * w + j].max(table[i * w + j - 1])
            };
        }
    }
    let (mut i, mut j) = (r.len(), c.len());
    while i > 0 && j > 0 {
        if r[i - 1] == c[j - 1] {
            hit[i - 1] = true;
            i -= 1;
            j -= 1;
        } else if table[i * w + j - 1] > table[(i - 1) * w + j] {
            j -= 1;
        } else {
            i -= 1;
        }
    }
}

fn score_summary_lcs(refs: &[Vec<u32>], cands: &[Vec<u32>], ws: &mut Workspace) -> Score {
    let m: usize = refs.iter().map(Vec::len).sum();
    let n: usize = cands.iter().map(Vec::len).sum();
    if m == 0 || n == 0 {
        return Score::default();
    }
    // Token budgets prevent counting a token more often than it occurs on either side.
    let counts = &mut ws.counts;
    counts.clear();
    counts.resize(2 * ws.next_id as usize, 0);
    for &t in refs.iter().flatten() {
        counts[2 * t as usize] += 1;
    }
    for &t in cands.iter().flatten() {
        counts[2 * t as usize + 1] += 1;
    }
    let mut hits = 0usize;
    let mut hit = Vec::new();
    for r in refs {
        hit.clear();
        hit.resize(r.len(), false);
        for c in cands {
            mark_lcs(r, c, &mut ws.table, &mut hit);
        }
        for (&t, _) in r.iter().zip(&hit).filter(|(_, &h)| h) {
            let k = 2 * t as usize;
            if counts[k] > 0 && counts[k + 1] > 0 {
                hits += 1;
                counts[k] -= 1;
                counts[k + 1] -= 1;
            }
        }
    }
    Score::new(hits as f64 / n as f64, hits as f64 / m as f64)
}

/// Streaming mean of per-pair ROUGE scores: `update` with each (target(s), prediction) pair, then `compute`
/// gives, per rouge type, the arithmetic mean of precision, recall and F-measure over the pairs — what HF
/// evaluate's `rouge` returns with `use_aggregator=False`, averaged (not its bootstrap `mid` estimate).
#[derive(Debug, Clone)]
pub struct RougeMean {
    scorer: RougeScorer,
    sums: Vec<Score>,
    count: usize,
}

impl RougeMean {
    pub fn new(scorer: RougeScorer) -> Self {
        let sums = vec![Score::default(); scorer.types.len()];
        RougeMean { scorer, sums, count: 0 }
    }

    fn add(&mut self, scores: &Scores) {
        for (s, (_, x)) in self.sums.iter_mut().zip(scores) {
            s.precision += x.precision;
            s.recall += x.recall;
            s.fmeasure += x.fmeasure;
        }
        self.count += 1;
    }

    /// Adds one pair scored with `RougeScorer.score`.
    pub fn update(&mut self, target: &str, prediction: &str) {
        let s = self.scorer.score(target, prediction);
        self.add(&s);
    }

    /// Adds one pair scored with `RougeScorer.score_multi`.
    pub fn update_multi<S: AsRef<str>>(&mut self, targets: &[S], prediction: &str) -> Result<()> {
        let s = self.scorer.score_multi(targets, prediction)?;
        self.add(&s);
        Ok(())
    }

    /// Mean scores per rouge type; no pairs is a `ZeroDivisionError` (`sum([]) / len([])`).
    pub fn compute(&self) -> Result<Scores> {
        if self.count == 0 {
            return Err(MetricError::ZeroDivision("division by zero: no pairs were scored".into()));
        }
        let n = self.count as f64;
        Ok(self
            .scorer
            .names
            .iter()
            .zip(&self.sums)
            .map(|(name, s)| {
                (name.clone(), Score { precision: s.precision / n, recall: s.recall / n, fmeasure: s.fmeasure / n })
            })
            .collect())
    }
}

/// One-shot mean of per-pair scores (see [`RougeMean`]); `targets[i]` holds the target(s) of `predictions[i]`.
pub fn rouge_mean<S: AsRef<str>>(scorer: &RougeScorer, targets: &[Vec<S>], predictions: &[S]) -> Result<Scores> {
    if targets.len() != predictions.len() {
        return Err(MetricError::value(format!(
            "targets and predictions have different lengths: {} != {}",
            targets.len(),
            predictions.len()
        )));
    }
    let mut acc = RougeMean::new(scorer.clone());
    for (t, p) in targets.iter().zip(predictions) {
        acc.update_multi(t, p.as_ref())?;
    }
    acc.compute()
}

fn scores_json(scores: &Scores) -> Value {
    let mut m = Map::new();
    for (name, s) in scores {
        let mut o = Map::new();
        o.insert("precision".into(), num(s.precision));
        o.insert("recall".into(), num(s.recall));
        o.insert("fmeasure".into(), num(s.fmeasure));
        m.insert(name.clone(), Value::Object(o));
    }
    Value::Object(m)
}

fn scorer_from(args: &Args) -> Result<RougeScorer> {
    let types = args.str_vec("rouge_types")?;
    RougeScorer::new(&types, args.bool("use_stemmer", false)?, args.bool("split_summaries", false)?)
}

fn run(name: &str, args: &Args) -> Result<Value> {
    const COMMON: [&str; 3] = ["rouge_types", "use_stemmer", "split_summaries"];
    match name {
        "rouge_score.score" => {
            args.check_known(&[&COMMON[..], &["target", "prediction"]].concat())?;
            let scorer = scorer_from(args)?;
            let target = args.opt_str("target")?.ok_or_else(|| missing(args, "target"))?;
            let prediction = args.opt_str("prediction")?.ok_or_else(|| missing(args, "prediction"))?;
            Ok(scores_json(&scorer.score(target, prediction)))
        }
        "rouge_score.score_multi" => {
            args.check_known(&[&COMMON[..], &["targets", "prediction"]].concat())?;
            let scorer = scorer_from(args)?;
            let targets = args.str_vec("targets")?;
            let prediction = args.opt_str("prediction")?.ok_or_else(|| missing(args, "prediction"))?;
            Ok(scores_json(&scorer.score_multi(&targets, prediction)?))
        }
        _ => {
            args.check_known(&[&COMMON[..], &["targets", "predictions"]].concat())?;
            let scorer = scorer_from(args)?;
            let predictions = args.str_vec("predictions")?;
            let raw = args.required("targets")?;
            let items = raw.as_array().ok_or_else(|| MetricError::type_error("targets must be an array"))?;
            // Each item is one target string or a list of targets (scored with score_multi).
            let targets = items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(vec![s.clone()]),
                    Value::Array(a) => a
                        .iter()
                        .map(|x| x.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| MetricError::type_error("targets must hold strings or lists of strings")),
                    _ => Err(MetricError::type_error("targets must hold strings or lists of strings")),
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(scores_json(&rouge_mean(&scorer, &targets, &predictions)?))
        }
    }
}

fn missing(args: &Args, key: &str) -> MetricError {
    MetricError::type_error(format!("{}() missing required argument: '{key}'", args.metric()))
}

pub(crate) fn dispatch(name: &str, args: &Args) -> Option<Result<Value>> {
    METRICS.iter().any(|m| m.name == name).then(|| run(name, args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsum_with_split_summaries_is_rejected() {
        assert!(matches!(RougeScorer::new(&["rougeLsum"], false, true), Err(MetricError::Value(_))));
        assert!(RougeScorer::new(&["rouge1", "rougeL"], false, true).is_ok());
    }

    #[test]
    fn tokenizer_matches_python_lowercasing() {
        assert_eq!(tokenize("İstanbul \u{212A}ELVIN, it's", false), ["i", "stanbul", "kelvin", "it", "s"]);
        assert_eq!(tokenize("Running dogs quickly", true), ["run", "dog", "quickli"]);
    }
}
