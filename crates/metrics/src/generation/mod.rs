//! sacrebleu 2.6.0: BLEU, chrF / chrF++ and TER, with the reference's tokenizers, signatures and score
//! strings. Corpus functions take sacrebleu's reference *streams* (each parallel to the hypotheses; `None`
//! entries give a variable number of references per segment). BLEU and chrF also expose per-segment
//! sufficient statistics (for paired bootstrap resampling) and all three have streaming accumulators.
//!
//! Besides the compat functions (`corpus_bleu`, `sentence_chrf`, ...), the `call` interface answers the
//! metric classes' methods, `BLEU.corpus_score`, `BLEU.sentence_score`, `CHRF.corpus_score` and
//! `CHRF.sentence_score`: their arguments are the class's constructor keywords (`max_ngram_order`,
//! `effective_order`, `trg_lang`, ... for `BLEU`; `lowercase`, `whitespace`, ... for `CHRF`) together with
//! the method's (`hypotheses` or `hypothesis`, `references`).
//!
//! Differences from the reference, by design: the mecab and sentencepiece tokenizers (which need external
//! models) are rejected with `ValueError`, and an unknown `smooth_method` is a `ValueError` where sacrebleu
//! fails an `assert`. The classes' `references=` (reference caching) is not a constructor keyword here, as
//! `references` names the method's argument, and `corpus_score`'s `n_bootstrap` above 1 (confidence
//! intervals) is a `ValueError`.

pub mod bleu;
pub mod chrf;
mod ngrams;
mod tables;
pub mod ter;
pub mod tokenize;

use serde_json::{json, Value};

use crate::call::MetricInfo;
use crate::error::{MetricError, Result};
use crate::json::{num, nums, Args};

pub use bleu::{
    bleu_from_stats, bleu_stats, corpus_bleu, sentence_bleu, BleuAccumulator, BleuOptions, BleuScore, Smooth,
};
pub use chrf::{chrf_from_stats, chrf_stats, corpus_chrf, sentence_chrf, ChrfAccumulator, ChrfOptions, ChrfScore};
pub use ter::{corpus_ter, sentence_ter, ter_from_stats, ter_stats, TerAccumulator, TerScore};
pub use tokenize::{TercomOptions, Tokenizer};

/// The sacrebleu version whose behaviour (and signature strings) this module reproduces.
pub const VERSION: &str = "2.6.0";

/// Number of references per segment, as shown in signatures (`nrefs:1`, or `nrefs:var` when it varies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumRefs {
    Fixed(usize),
    Variable,
}

pub(crate) fn signature_nrefs(n: NumRefs) -> String {
    match n {
        NumRefs::Fixed(k) => k.to_string(),
        NumRefs::Variable => "var".into(),
    }
}

/// Tracks the distinct numbers of references seen over segments.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RefCounter {
    first: Option<usize>,
    varies: bool,
}

impl RefCounter {
    pub(crate) fn add(&mut self, n: usize) {
        match self.first {
            None => self.first = Some(n),
            Some(f) if f != n => self.varies = true,
            _ => {}
        }
    }

    /// `None` when no segment was seen.
    pub(crate) fn get(&self) -> Option<NumRefs> {
        self.first.map(|f| if self.varies { NumRefs::Variable } else { NumRefs::Fixed(f) })
    }
}

/// Segments as `zip(hypotheses, zip(*references))`: truncated to the shortest stream.
pub(crate) fn segments<'a>(
    hyps: &'a [&'a str],
    refs: &'a [Vec<Option<&'a str>>],
) -> impl Iterator<Item = (&'a str, Vec<Option<&'a str>>)> + 'a {
    let n = refs.iter().map(Vec::len).min().unwrap_or(0).min(hyps.len());
    (0..n).map(move |i| (hyps[i], refs.iter().map(|s| s[i]).collect()))
}

fn index_error() -> MetricError {
    MetricError::Index("list index out of range".into())
}

/// `Metric._check_corpus_score_args`; returns the hypotheses as strings.
pub(crate) fn check_corpus<'a>(
    prefix: &str,
    hyps: &[Option<&'a str>],
    refs: &[Vec<Option<&str>>],
) -> Result<Vec<&'a str>> {
    let first = hyps.first().ok_or_else(index_error)?;
    let mut err = None;
    if first.is_none() {
        err = Some("Each element of `hyps` should be a string.");
    } else if hyps.iter().any(Option::is_none) {
        err = Some("Undefined line in hypotheses stream!");
    }
    refs.first().ok_or_else(index_error)?.first().ok_or_else(index_error)?;
    if let Some(e) = err {
        return Err(MetricError::type_error(format!("{prefix}: {e}")));
    }
    Ok(hyps.iter().flatten().copied().collect())
}

/// `Metric._check_sentence_score_args` (the type checks are done when reading JSON).
pub(crate) fn check_sentence(refs: &[Option<&str>]) -> Result<()> {
    refs.first().map(|_| ()).ok_or_else(index_error)
}

pub(crate) const METRICS: &[MetricInfo] = &[
    MetricInfo { name: "corpus_bleu", reference: "sacrebleu.corpus_bleu" },
    MetricInfo { name: "sentence_bleu", reference: "sacrebleu.sentence_bleu" },
    MetricInfo { name: "corpus_chrf", reference: "sacrebleu.corpus_chrf" },
    MetricInfo { name: "sentence_chrf", reference: "sacrebleu.sentence_chrf" },
    MetricInfo { name: "corpus_ter", reference: "sacrebleu.corpus_ter" },
    MetricInfo { name: "sentence_ter", reference: "sacrebleu.sentence_ter" },
    MetricInfo { name: "BLEU.corpus_score", reference: "sacrebleu.metrics.BLEU.corpus_score" },
    MetricInfo { name: "BLEU.sentence_score", reference: "sacrebleu.metrics.BLEU.sentence_score" },
    MetricInfo { name: "CHRF.corpus_score", reference: "sacrebleu.metrics.CHRF.corpus_score" },
    MetricInfo { name: "CHRF.sentence_score", reference: "sacrebleu.metrics.CHRF.sentence_score" },
];

/// How a metric is called: a compat function, or a method of the metric class built from keywords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Function,
    Class,
}

pub(crate) fn dispatch(name: &str, args: &Args) -> Option<Result<Value>> {
    let r = match name {
        "corpus_bleu" | "sentence_bleu" => run_bleu(name, args, Api::Function),
        "corpus_chrf" | "sentence_chrf" => run_chrf(name, args, Api::Function),
        "BLEU.corpus_score" | "BLEU.sentence_score" => run_bleu(name, args, Api::Class),
        "CHRF.corpus_score" | "CHRF.sentence_score" => run_chrf(name, args, Api::Class),
        "corpus_ter" | "sentence_ter" => run_ter(name, args),
        _ => return None,
    };
    Some(r)
}

/// A flag read with Python truthiness (the reference only tests these with `if`/`not`): absent is the
/// default, `null`, `false`, 0 and "" are false.
fn flag(args: &Args, key: &str, default: bool) -> bool {
    match args.get(key) {
        None => default,
        Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|x| x != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

/// Class-name prefix of the reference's type-check messages.
fn prefix(name: &str) -> &'static str {
    let lower = name.to_ascii_lowercase();
    if lower.contains("bleu") {
        "BLEU"
    } else if lower.contains("chrf") {
        "CHRF"
    } else {
        "TER"
    }
}

fn type_err(name: &str, msg: &str) -> MetricError {
    MetricError::type_error(format!("{}: {msg}", prefix(name)))
}

/// A string or `None` element; other types are rejected.
fn opt_str<'a>(v: &'a Value, name: &str, msg: &str) -> Result<Option<&'a str>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        _ => Err(type_err(name, msg)),
    }
}

/// Corpus inputs: (`hypotheses`, `references` streams).
type CorpusInput<'a> = (Vec<Option<&'a str>>, Vec<Vec<Option<&'a str>>>);

fn corpus_input<'a>(name: &str, args: &Args<'a>) -> Result<CorpusInput<'a>> {
    let hyps_v = args.required("hypotheses")?;
    let refs_v = args.required("references")?;
    let hyps_a = hyps_v.as_array().ok_or_else(|| type_err(name, "`hyps` should be a sequence of strings."))?;
    let first = hyps_a.first().ok_or_else(index_error)?;
    if !first.is_string() {
        return Err(type_err(name, "Each element of `hyps` should be a string."));
    }
    let hyps = hyps_a
        .iter()
        .map(|h| opt_str(h, name, "Each element of `hyps` should be a string."))
        .collect::<Result<Vec<_>>>()?;
    let refs_a =
        refs_v.as_array().ok_or_else(|| type_err(name, "`refs` should be a sequence of sequence of strings."))?;
    let stream0 = refs_a.first().ok_or_else(index_error)?;
    let s0 =
        stream0.as_array().ok_or_else(|| type_err(name, "Each element of `refs` should be a sequence of strings."))?;
    let r00 = s0.first().ok_or_else(index_error)?;
    opt_str(r00, name, "`refs` should be a sequence of sequence of strings.")?;
    let refs = refs_a
        .iter()
        .map(|s| {
            s.as_array()
                .ok_or_else(|| type_err(name, "Each element of `refs` should be a sequence of strings."))?
                .iter()
                .map(|r| opt_str(r, name, "`refs` should be a sequence of sequence of strings."))
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((hyps, refs))
}

fn sentence_input<'a>(name: &str, args: &Args<'a>) -> Result<(&'a str, Vec<Option<&'a str>>)> {
    let hyp = args
        .required("hypothesis")?
        .as_str()
        .ok_or_else(|| type_err(name, "The argument `hyp` should be a string."))?;
    let refs_a = args
        .required("references")?
        .as_array()
        .ok_or_else(|| type_err(name, "The argument `refs` should be a sequence of strings."))?;
    let first = refs_a.first().ok_or_else(index_error)?;
    opt_str(first, name, "Each element of `refs` should be a string.")?;
    let refs = refs_a
        .iter()
        .map(|r| opt_str(r, name, "Each element of `refs` should be a string."))
        .collect::<Result<Vec<_>>>()?;
    Ok((hyp, refs))
}

/// Whether a sacrebleu metric name scores a corpus (else one sentence).
fn is_corpus(name: &str) -> bool {
    name.starts_with("corpus_") || name.ends_with(".corpus_score")
}

/// The `BLEU` class's `max_ngram_order`: an integer (a bool is one, as in Python). Negative orders are
/// returned as given: the reference then slices its statistics with a negative index (see [`run_bleu`]).
fn max_ngram_order(args: &Args) -> Result<i64> {
    match args.get("max_ngram_order") {
        None => Ok(bleu::MAX_NGRAM_ORDER as i64),
        Some(Value::Bool(b)) => Ok(i64::from(*b)),
        Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64().unwrap_or_default()),
        Some(Value::Number(_)) => Err(MetricError::type_error("'float' object cannot be interpreted as an integer")),
        Some(Value::Null) => Err(MetricError::type_error("unsupported operand type(s) for +: 'NoneType' and 'int'")),
        Some(Value::String(_)) => Err(MetricError::type_error("can only concatenate str (not \"int\") to str")),
        Some(_) => Err(MetricError::type_error("max_ngram_order must be an integer")),
    }
}

/// The `BLEU` class's tokenizer: `tokenize=None` picks by `trg_lang` (`zh` for Chinese, mecab for Japanese
/// and Korean, else 13a).
fn class_tokenizer(args: &Args) -> Result<Tokenizer> {
    let name = match args.opt_str("tokenize")? {
        Some(t) => t,
        None => {
            match args.some("trg_lang").map(|v| v.as_str().ok_or_else(|| type_err("BLEU", "trg_lang must be a string")))
            {
                Some(Err(e)) => return Err(e),
                Some(Ok("zh")) => "zh",
                Some(Ok("ja")) => "ja-mecab",
                Some(Ok("ko")) => "ko-mecab",
                _ => "13a",
            }
        }
    };
    Tokenizer::parse(name)
}

/// `corpus_score(..., n_bootstrap=1)`: only a single (non-bootstrapped) score is supported.
fn check_n_bootstrap(args: &Args) -> Result<()> {
    match args.get("n_bootstrap") {
        None => Ok(()),
        Some(v) => match v.as_f64() {
            Some(n) if n <= 1.0 => Ok(()),
            Some(_) => Err(MetricError::value("n_bootstrap > 1 (bootstrap confidence intervals) is not supported")),
            None => Err(MetricError::type_error("n_bootstrap must be a number")),
        },
    }
}

fn run_bleu(name: &str, args: &Args, api: Api) -> Result<Value> {
    let corpus = is_corpus(name);
    let mut order = bleu::MAX_NGRAM_ORDER as i64;
    let opts = match api {
        Api::Function => {
            let mut known =
                vec!["references", "smooth_method", "smooth_value", "lowercase", "tokenize", "use_effective_order"];
            known.extend(if corpus { ["hypotheses", "force"] } else { ["hypothesis", "hypothesis"] });
            args.check_known(&known)?;
            BleuOptions {
                lowercase: flag(args, "lowercase", false),
                tokenize: Tokenizer::parse(args.str("tokenize", "13a")?)?,
                smooth_method: Smooth::parse(args.str("smooth_method", "exp")?)?,
                smooth_value: args.opt_f64("smooth_value")?,
                use_effective_order: flag(args, "use_effective_order", !corpus),
                force: if corpus { flag(args, "force", false) } else { false },
                ..BleuOptions::default()
            }
        }
        Api::Class => {
            let mut known = vec![
                "references",
                "lowercase",
                "force",
                "tokenize",
                "smooth_method",
                "smooth_value",
                "max_ngram_order",
                "effective_order",
                "trg_lang",
            ];
            known.extend(if corpus { ["hypotheses", "n_bootstrap"] } else { ["hypothesis", "hypothesis"] });
            args.check_known(&known)?;
            // The constructor checks the smoothing method before it builds the tokenizer.
            let smooth_method = Smooth::parse(args.str("smooth_method", "exp")?)?;
            let tokenize = class_tokenizer(args)?;
            BleuOptions {
                lowercase: flag(args, "lowercase", false),
                tokenize,
                smooth_method,
                smooth_value: args.opt_f64("smooth_value")?,
                use_effective_order: flag(args, "effective_order", false),
                force: flag(args, "force", false),
                ..BleuOptions::default()
            }
        }
    };
    let inputs = if corpus {
        let (hyps, refs) = corpus_input(name, args)?;
        check_corpus("BLEU", &hyps, &refs)?;
        Ok((hyps, refs))
    } else {
        let (hyp, refs) = sentence_input(name, args)?;
        check_sentence(&refs)?;
        Err((hyp, refs))
    };
    if api == Api::Class {
        if corpus {
            check_n_bootstrap(args)?;
        }
        order = max_ngram_order(args)?;
    }
    // A negative order extracts no n-grams; the reference then reads `correct = stats[2:2+N]` (empty) and
    // `total = stats[2+N:]` with Python's negative slicing of `[sys_len, ref_len]`.
    let opts = BleuOptions { max_ngram_order: order.max(0) as usize, ..opts };
    let mut score = match inputs {
        Ok((hyps, refs)) => corpus_bleu(&hyps, &refs, &opts)?,
        Err((hyp, refs)) => sentence_bleu(hyp, &refs, &opts)?,
    };
    if order < 0 {
        let lens = [score.sys_len as f64, score.ref_len as f64];
        let start = 2 + order;
        let start = if start < 0 { (start + 2).max(0) } else { start } as usize;
        score.totals = lens[start.min(2)..].to_vec();
    }
    Ok(json!({
        "score": num(score.score),
        "counts": nums(&score.counts),
        "totals": nums(&score.totals),
        "precisions": nums(&score.precisions),
        "bp": num(score.bp),
        "sys_len": score.sys_len,
        "ref_len": score.ref_len,
        "signature": score.signature,
        "str": score.format(),
    }))
}

fn run_chrf(name: &str, args: &Args, api: Api) -> Result<Value> {
    let corpus = is_corpus(name);
    let first = if corpus { "hypotheses" } else { "hypothesis" };
    let common = [first, "references", "char_order", "word_order", "beta", "eps_smoothing"];
    match api {
        Api::Function => args.check_known(&[&common[..], &["remove_whitespace"]].concat())?,
        Api::Class => {
            let extra: &[&str] =
                if corpus { &["lowercase", "whitespace", "n_bootstrap"] } else { &["lowercase", "whitespace"] };
            args.check_known(&[&common[..], extra].concat())?;
            check_n_bootstrap(args)?;
        }
    }
    let beta = match args.some("beta") {
        None => 2,
        Some(v) => {
            v.as_i64().ok_or_else(|| MetricError::type_error(format!("{name}: argument 'beta' must be an integer")))?
        }
    };
    let opts = ChrfOptions {
        char_order: args.usize("char_order", 6)?,
        word_order: args.usize("word_order", 0)?,
        beta,
        lowercase: api == Api::Class && flag(args, "lowercase", false),
        whitespace: match api {
            Api::Function => !flag(args, "remove_whitespace", true),
            Api::Class => flag(args, "whitespace", false),
        },
        eps_smoothing: flag(args, "eps_smoothing", false),
    };
    let score = if corpus {
        let (hyps, refs) = corpus_input(name, args)?;
        corpus_chrf(&hyps, &refs, &opts)?
    } else {
        let (hyp, refs) = sentence_input(name, args)?;
        sentence_chrf(hyp, &refs, &opts)?
    };
    Ok(json!({
        "score": num(score.score),
        "char_order": score.char_order,
        "word_order": score.word_order,
        "beta": score.beta,
        "signature": score.signature,
        "str": score.format(),
    }))
}

fn run_ter(name: &str, args: &Args) -> Result<Value> {
    let corpus = name == "corpus_ter";
    args.check_known(&[
        if corpus { "hypotheses" } else { "hypothesis" },
        "references",
        "normalized",
        "no_punct",
        "asian_support",
        "case_sensitive",
    ])?;
    let opts = TercomOptions {
        normalized: flag(args, "normalized", false),
        no_punct: flag(args, "no_punct", false),
        asian_support: flag(args, "asian_support", false),
        case_sensitive: flag(args, "case_sensitive", false),
    };
    let score = if corpus {
        let (hyps, refs) = corpus_input(name, args)?;
        corpus_ter(&hyps, &refs, &opts)?
    } else {
        let (hyp, refs) = sentence_input(name, args)?;
        sentence_ter(hyp, &refs, &opts)?
    };
    Ok(json!({
        "score": num(score.score),
        "num_edits": score.num_edits,
        "ref_length": num(score.ref_length),
        "signature": ter_signature_raw(&score.signature, args),
        "str": score.format(),
    }))
}

/// TER's signature shows `normalized` and `asian_support` as given (sacrebleu formats the raw argument:
/// booleans as yes/no, `None` omitted, anything else as Python prints it).
fn ter_signature_raw(signature: &str, args: &Args) -> String {
    signature
        .split('|')
        .filter_map(|pair| {
            let key = match pair.split(':').next() {
                Some("norm") => "normalized",
                Some("asian") => "asian_support",
                _ => return Some(pair.to_owned()),
            };
            let name = &pair[..pair.find(':').unwrap_or(pair.len())];
            match args.get(key) {
                None | Some(Value::Bool(_)) => Some(pair.to_owned()),
                Some(Value::Null) => None,
                Some(Value::String(v)) => Some(format!("{name}:{v}")),
                Some(v) => Some(format!("{name}:{v}")),
            }
        })
        .collect::<Vec<_>>()
        .join("|")
}
