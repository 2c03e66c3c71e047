//! BLEU as `sacrebleu.corpus_bleu` / `sacrebleu.sentence_bleu` (sacrebleu 2.6.0, `sacrebleu.metrics.bleu`).
//!
//! Per segment the sufficient statistics are `[hyp_len, ref_len, correct_1..N, total_1..N]` (`N` is
//! `max_ngram_order`, 4 by default) where `ref_len` is the reference length closest to the hypothesis length
//! (ties: the shorter) and `correct_n` are n-gram matches clipped by the maximum count over the references. The corpus score sums them, then
//! `BLEU = BP * exp(mean(log p_n))` with `BP = exp(1 - ref_len / sys_len)` when `sys_len < ref_len`.

use super::ngrams::{bits_for, consume_matches, fill, FxMap, Interner, Key, Maps, Tables};
use super::tokenize::{py_isspace, py_lower, py_split, Tokenizer};
use super::{signature_nrefs, NumRefs, VERSION};
use crate::error::{MetricError, Result};

/// The default maximum n-gram order (sacrebleu's `MAX_NGRAM_ORDER`).
pub const MAX_NGRAM_ORDER: usize = 4;
/// Length of the per-segment statistics vector with the default order (see [`BleuOptions::n_stats`]).
pub const BLEU_STATS: usize = 2 + 2 * MAX_NGRAM_ORDER;

/// `smooth_method=` of sacrebleu's BLEU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Smooth {
    /// No smoothing.
    None,
    /// Method 1: a zero-match precision becomes `smooth_value / total` (default 0.1).
    Floor,
    /// Method 2: add `smooth_value` (default 1) to matches and totals of orders > 1.
    AddK,
    /// Method 3 (NIST / mteval-v13a): the k-th zero-match precision becomes `1 / (2^k * total)`.
    Exp,
}

impl Smooth {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "none" => Smooth::None,
            "floor" => Smooth::Floor,
            "add-k" => Smooth::AddK,
            "exp" => Smooth::Exp,
            // The reference fails an `assert` here.
            _ => return Err(MetricError::value(format!("Unknown smooth_method '{name}'"))),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Smooth::None => "none",
            Smooth::Floor => "floor",
            Smooth::AddK => "add-k",
            Smooth::Exp => "exp",
        }
    }

    /// `BLEU.SMOOTH_DEFAULTS`.
    pub fn default_value(self) -> Option<f64> {
        match self {
            Smooth::None | Smooth::Exp => None,
            Smooth::Floor => Some(0.1),
            Smooth::AddK => Some(1.0),
        }
    }
}

/// Options of sacrebleu's `BLEU` (as exposed by `corpus_bleu` / `sentence_bleu`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BleuOptions {
    pub lowercase: bool,
    pub tokenize: Tokenizer,
    pub smooth_method: Smooth,
    /// `None` uses the method's default.
    pub smooth_value: Option<f64>,
    pub use_effective_order: bool,
    /// `max_ngram_order=` of the `BLEU` class: the n-gram orders 1..=N of the precisions (0 gives no
    /// precisions and a score of 0). The brevity penalty does not depend on it.
    pub max_ngram_order: usize,
    /// Only silences the reference's "tokenized period" warning; no effect on scores.
    pub force: bool,
}

impl Default for BleuOptions {
    /// The defaults of `corpus_bleu`.
    fn default() -> Self {
        BleuOptions {
            lowercase: false,
            tokenize: Tokenizer::T13a,
            smooth_method: Smooth::Exp,
            smooth_value: None,
            use_effective_order: false,
            max_ngram_order: MAX_NGRAM_ORDER,
            force: false,
        }
    }
}

impl BleuOptions {
    /// The defaults of `sentence_bleu` (effective order on).
    pub fn sentence() -> Self {
        BleuOptions { use_effective_order: true, ..Self::default() }
    }

    /// Length of the per-segment statistics vector: `2 + 2 * max_ngram_order`.
    pub fn n_stats(&self) -> usize {
        2 + 2 * self.max_ngram_order
    }

    fn preprocess(&self, sent: &str) -> String {
        let lowered;
        let s = if self.lowercase {
            lowered = py_lower(sent);
            lowered.as_str()
        } else {
            sent
        };
        self.tokenize.tokenize(s.trim_end_matches(py_isspace)).into_owned()
    }
}

/// `BLEUScore` plus the metric's signature.
#[derive(Debug, Clone, PartialEq)]
pub struct BleuScore {
    pub score: f64,
    /// Matches per order 1..=N (after add-k smoothing, as the reference returns them).
    pub counts: Vec<f64>,
    /// N-grams of the hypotheses per order 1..=N (after add-k smoothing).
    pub totals: Vec<f64>,
    pub precisions: Vec<f64>,
    pub bp: f64,
    pub sys_len: i64,
    pub ref_len: i64,
    /// `BLEU.get_signature().format()`, e.g. `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0`.
    pub signature: String,
}

impl BleuScore {
    /// `str(BLEUScore)`, e.g. `BLEU = 36.56 60.0/40.0/30.0/20.0 (BP = 1.000 ratio = 1.000 hyp_len = 5 ref_len = 5)`.
    pub fn format(&self) -> String {
        let prec: Vec<String> = self.precisions.iter().map(|p| format!("{p:.1}")).collect();
        let ratio = if self.ref_len != 0 { self.sys_len as f64 / self.ref_len as f64 } else { 0.0 };
        format!(
            "BLEU = {:.2} {} (BP = {:.3} ratio = {:.3} hyp_len = {} ref_len = {})",
            self.score,
            prec.join("/"),
            self.bp,
            ratio,
            self.sys_len,
            self.ref_len
        )
    }
}

/// `sacrebleu.utils.my_log`: log with log(0) floored to -9999999999.
fn my_log(x: f64) -> f64 {
    if x == 0.0 {
        -9_999_999_999.0
    } else {
        x.ln()
    }
}

/// `BLEU.compute_bleu` from summed statistics (`[sys_len, ref_len, correct_1..N, total_1..N]`, `N` being
/// `opts.max_ngram_order`; see [`BleuOptions::n_stats`]). Missing entries count as 0.
pub fn bleu_from_stats(stats: &[f64], opts: &BleuOptions, nrefs: NumRefs) -> BleuScore {
    let n_max = opts.max_ngram_order;
    let at = |i: usize| stats.get(i).copied().unwrap_or(0.0);
    let sys_len = at(0);
    let ref_len = at(1);
    let mut correct: Vec<f64> = (0..n_max).map(|i| at(2 + i)).collect();
    let mut total: Vec<f64> = (0..n_max).map(|i| at(2 + n_max + i)).collect();
    let smooth_value = opts.smooth_value.or(opts.smooth_method.default_value());
    let mut bp = 1.0;
    if sys_len < ref_len {
        bp = if sys_len > 0.0 { (1.0 - ref_len / sys_len).exp() } else { 0.0 };
    }
    let mut precisions = vec![0.0; n_max];
    let mut score = 0.0;
    if correct.iter().any(|&c| c != 0.0) {
        let mut smooth_mteval = 1.0;
        let mut eff_order = n_max;
        for n in 1..=n_max {
            if opts.smooth_method == Smooth::AddK && n > 1 {
                let k = smooth_value.unwrap_or(1.0);
                correct[n - 1] += k;
                total[n - 1] += k;
            }
            if total[n - 1] == 0.0 {
                break;
            }
            if opts.use_effective_order {
                eff_order = n;
            }
            if correct[n - 1] == 0.0 {
                match opts.smooth_method {
                    Smooth::Exp => {
                        smooth_mteval *= 2.0;
                        precisions[n - 1] = 100.0 / (smooth_mteval * total[n - 1]);
                    }
                    Smooth::Floor => precisions[n - 1] = 100.0 * smooth_value.unwrap_or(0.1) / total[n - 1],
                    _ => {}
                }
            } else {
                precisions[n - 1] = 100.0 * correct[n - 1] / total[n - 1];
            }
        }
        // Python's `sum()` adds left to right.
        let log_sum = precisions[..eff_order].iter().fold(0.0, |acc, &p| acc + my_log(p));
        score = bp * (log_sum / eff_order as f64).exp();
    }
    BleuScore {
        score,
        counts: correct,
        totals: total,
        precisions,
        bp,
        sys_len: sys_len as i64,
        ref_len: ref_len as i64,
        signature: bleu_signature(opts, nrefs),
    }
}

/// `BLEUSignature.format()`.
pub fn bleu_signature(opts: &BleuOptions, nrefs: NumRefs) -> String {
    let mut smooth = opts.smooth_method.name().to_owned();
    if let Some(def) = opts.smooth_method.default_value() {
        smooth.push_str(&format!("[{:.2}]", opts.smooth_value.unwrap_or(def)));
    }
    format!(
        "nrefs:{}|case:{}|eff:{}|tok:{}|smooth:{}|version:{VERSION}",
        signature_nrefs(nrefs),
        if opts.lowercase { "lc" } else { "mixed" },
        if opts.use_effective_order { "yes" } else { "no" },
        opts.tokenize.signature(),
        smooth
    )
}

/// `_get_closest_ref_len`: the closest reference length, the shorter one on ties; -1 without references.
fn closest_ref_len(hyp_len: usize, ref_lens: &[usize]) -> i64 {
    let mut best: Option<(usize, usize)> = None;
    for &r in ref_lens {
        let diff = hyp_len.abs_diff(r);
        match best {
            None => best = Some((diff, r)),
            Some((d, l)) if diff < d || (diff == d && r < l) => best = Some((diff, r)),
            _ => {}
        }
    }
    best.map_or(-1, |(_, l)| l as i64)
}

/// Segment statistics of already preprocessed (tokenized) text.
fn stats_tokenized(hyp: &str, refs: &[String], n_max: usize, t: &mut Tables) -> Result<Vec<f64>> {
    // Token ids are interned over the hypothesis and all references of this segment only, so that n ids
    // usually pack exactly into one integer key.
    let mut interner = Interner::default();
    let hyp_ids: Vec<u32> = py_split(hyp).map(|w| interner.id(w)).collect();
    let ref_ids: Vec<Vec<u32>> = refs.iter().map(|r| py_split(r).map(|w| interner.id(w)).collect()).collect();

    let mut out = vec![0.0; 2 + 2 * n_max];
    let hyp_len = hyp_ids.len();
    out[0] = hyp_len as f64;
    let ref_lens: Vec<usize> = ref_ids.iter().map(Vec::len).collect();
    out[1] = closest_ref_len(hyp_len, &ref_lens) as f64;
    if hyp_ids.is_empty() || n_max == 0 {
        return Ok(out);
    }
    if ref_ids.is_empty() {
        // The reference looks n-grams up in `None`.
        return Err(MetricError::type_error("argument of type 'NoneType' is not iterable"));
    }
    let bits = bits_for(interner.len().saturating_sub(1) as u32);
    for n in 1..=n_max {
        let total = hyp_len.saturating_sub(n - 1) as u64;
        if total == 0 {
            break;
        }
        // The key width is chosen per order: `n` symbols of `bits` bits in a u64 or u128, else the n-gram's
        // slice of ids.
        let width = n as u64 * u64::from(bits);
        let matches = if width <= 64 {
            order_matches(&hyp_ids, &ref_ids, n, bits, &mut t.small)
        } else if width <= 128 {
            order_matches(&hyp_ids, &ref_ids, n, bits, &mut t.large)
        } else {
            order_matches_slices(&hyp_ids, &ref_ids, n)
        };
        out[2 + n - 1] = matches as f64;
        out[2 + n_max + n - 1] = total as f64;
    }
    Ok(out)
}

/// Clipped matches of order `n`: clipped by the maximum count over the references.
fn order_matches<K: Key>(hyp: &[u32], refs: &[Vec<u32>], n: usize, bits: u32, m: &mut Maps<K>) -> u64 {
    if let [single] = refs {
        fill(&mut m.reference, single, n, bits);
        consume_matches(&mut m.reference, hyp, n, bits)
    } else {
        m.best.clear();
        for ids in refs {
            fill(&mut m.reference, ids, n, bits);
            for (&k, &c) in &m.reference {
                let e = m.best.entry(k).or_insert(0);
                *e = (*e).max(c);
            }
        }
        consume_matches(&mut m.best, hyp, n, bits)
    }
}

/// [`order_matches`] keyed by the n-grams' id slices, for orders too long to pack into 128 bits.
fn order_matches_slices(hyp: &[u32], refs: &[Vec<u32>], n: usize) -> u64 {
    let mut best: FxMap<&[u32], u32> = FxMap::default();
    let mut one: FxMap<&[u32], u32> = FxMap::default();
    for ids in refs {
        one.clear();
        for w in ids.windows(n) {
            *one.entry(w).or_insert(0) += 1;
        }
        for (&k, &c) in &one {
            let e = best.entry(k).or_insert(0);
            *e = (*e).max(c);
        }
    }
    let mut m = 0;
    for w in hyp.windows(n) {
        if let Some(c) = best.get_mut(w) {
            if *c > 0 {
                *c -= 1;
                m += 1;
            }
        }
    }
    m
}

/// Per-segment sufficient statistics `[hyp_len, ref_len, correct_1..N, total_1..N]` of one hypothesis against
/// its references (`None` entries are skipped, as sacrebleu does for variable numbers of references).
/// Summing these over segments and calling [`bleu_from_stats`] gives the corpus score (e.g. for bootstrap
/// resampling).
pub fn bleu_stats(hyp: &str, refs: &[Option<&str>], opts: &BleuOptions) -> Result<Vec<f64>> {
    bleu_stats_with(hyp, refs, opts, &mut Tables::default())
}

fn bleu_stats_with(hyp: &str, refs: &[Option<&str>], opts: &BleuOptions, t: &mut Tables) -> Result<Vec<f64>> {
    let refs: Vec<String> = refs.iter().flatten().map(|r| opts.preprocess(r)).collect();
    stats_tokenized(&opts.preprocess(hyp), &refs, opts.max_ngram_order, t)
}

/// Streaming corpus BLEU: `update` with batches of segments, then `compute`; equal to [`corpus_bleu`] over
/// the concatenated batches.
#[derive(Debug, Clone)]
pub struct BleuAccumulator {
    opts: BleuOptions,
    sum: Vec<f64>,
    nrefs: super::RefCounter,
    tables: Tables,
}

impl BleuAccumulator {
    pub fn new(opts: BleuOptions) -> Self {
        BleuAccumulator {
            opts,
            sum: vec![0.0; opts.n_stats()],
            nrefs: super::RefCounter::default(),
            tables: Tables::default(),
        }
    }

    /// Adds one segment.
    pub fn update_segment(&mut self, hyp: &str, refs: &[Option<&str>]) -> Result<()> {
        let s = bleu_stats_with(hyp, refs, &self.opts, &mut self.tables)?;
        self.nrefs.add(refs.iter().flatten().count());
        for (acc, x) in self.sum.iter_mut().zip(s) {
            *acc += x;
        }
        Ok(())
    }

    /// Adds segments given as sacrebleu reference streams (each stream parallel to `hyps`; extra
    /// segments beyond the shortest are ignored, as `zip` does in the reference).
    pub fn update(&mut self, hyps: &[&str], refs: &[Vec<Option<&str>>]) -> Result<()> {
        for (hyp, seg) in super::segments(hyps, refs) {
            self.update_segment(hyp, &seg)?;
        }
        Ok(())
    }

    /// The corpus score so far (`IndexError` without segments, like the reference on empty input).
    pub fn compute(&self) -> Result<BleuScore> {
        let nrefs = self.nrefs.get().ok_or_else(|| MetricError::Index("list index out of range".into()))?;
        Ok(bleu_from_stats(&self.sum, &self.opts, nrefs))
    }
}

/// `sacrebleu.corpus_bleu(hypotheses, references, ...)`: `references` is a list of reference streams, each
/// parallel to `hypotheses`; `None` entries allow a variable number of references per segment.
pub fn corpus_bleu(hyps: &[Option<&str>], refs: &[Vec<Option<&str>>], opts: &BleuOptions) -> Result<BleuScore> {
    let hyps = super::check_corpus("BLEU", hyps, refs)?;
    let mut acc = BleuAccumulator::new(*opts);
    acc.update(&hyps, refs)?;
    acc.compute()
}

/// `sacrebleu.sentence_bleu(hypothesis, references, ...)` (use [`BleuOptions::sentence`] for its defaults).
pub fn sentence_bleu(hyp: &str, refs: &[Option<&str>], opts: &BleuOptions) -> Result<BleuScore> {
    super::check_sentence(refs)?;
    let mut acc = BleuAccumulator::new(*opts);
    acc.update_segment(hyp, refs)?;
    acc.compute()
}
