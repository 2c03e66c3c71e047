//! chrF / chrF++ as `sacrebleu.corpus_chrf` / `sacrebleu.sentence_chrf` (sacrebleu 2.6.0,
//! `sacrebleu.metrics.chrf`).
//!
//! Per segment and order the statistics are `[hyp n-grams, ref n-grams, clipped matches]` for character
//! orders `1..=char_order` then word orders `1..=word_order`, taken from the reference with the best F-score.
//! The score is the F-beta of the precision and recall averaged over the orders with both sides non-empty
//! ("effective order"), or with `eps_smoothing` the average of per-order F-scores with 1e-16 smoothing.

use super::ngrams::{bits_for, consume_matches, count, fill, Counts, Interner, Key, Maps, Tables};
use super::tokenize::{py_isspace, py_lower, py_split};
use super::{signature_nrefs, NumRefs, VERSION};
use crate::error::{MetricError, Result};

/// Options of sacrebleu's `CHRF`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChrfOptions {
    pub char_order: usize,
    /// 0 for chrF, 2 for chrF++.
    pub word_order: usize,
    pub beta: i64,
    /// Not exposed by `corpus_chrf` (always `false` there).
    pub lowercase: bool,
    /// Keep whitespace in character n-grams (`remove_whitespace=False`).
    pub whitespace: bool,
    pub eps_smoothing: bool,
}

impl Default for ChrfOptions {
    fn default() -> Self {
        ChrfOptions { char_order: 6, word_order: 0, beta: 2, lowercase: false, whitespace: false, eps_smoothing: false }
    }
}

impl ChrfOptions {
    /// Number of statistics per segment (`3 * (char_order + word_order)`).
    pub fn n_stats(&self) -> usize {
        3 * (self.char_order + self.word_order)
    }
}

/// `CHRFScore` plus the metric's signature.
#[derive(Debug, Clone, PartialEq)]
pub struct ChrfScore {
    pub score: f64,
    pub char_order: usize,
    pub word_order: usize,
    pub beta: i64,
    /// e.g. `nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0`.
    pub signature: String,
}

impl ChrfScore {
    /// `str(CHRFScore)`, e.g. `chrF2++ = 45.67`.
    pub fn format(&self) -> String {
        format!("chrF{}{} = {:.2}", self.beta, "+".repeat(self.word_order), self.score)
    }
}

/// `string.punctuation`, which is exactly the ASCII punctuation set.
fn is_punct(c: char) -> bool {
    c.is_ascii_punctuation()
}

/// `CHRF._remove_punctuation`: splits one leading or trailing ASCII punctuation mark off each word.
fn remove_punctuation(sent: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for w in py_split(sent) {
        let mut chars = w.chars();
        let first = chars.next();
        let last = w.chars().next_back();
        match (first, last) {
            (Some(f), Some(l)) if w.len() > f.len_utf8() => {
                if is_punct(l) {
                    out.push(&w[..w.len() - l.len_utf8()]);
                    out.push(&w[w.len() - l.len_utf8()..]);
                } else if is_punct(f) {
                    out.push(&w[..f.len_utf8()]);
                    out.push(&w[f.len_utf8()..]);
                } else {
                    out.push(w);
                }
            }
            _ => out.push(w),
        }
    }
    out
}

/// `CHRF._compute_f_score`.
pub fn chrf_f_score(stats: &[f64], opts: &ChrfOptions) -> Result<f64> {
    let order = opts.char_order + opts.word_order;
    let eps = 1e-16;
    let factor = (opts.beta * opts.beta) as f64;
    let mut score = 0.0;
    let mut effective_order = 0usize;
    let (mut avg_prec, mut avg_rec) = (0.0, 0.0);
    for i in 0..order {
        let (n_hyp, n_ref, n_match) = (stats[3 * i], stats[3 * i + 1], stats[3 * i + 2]);
        let prec = if n_hyp > 0.0 { n_match / n_hyp } else { eps };
        let rec = if n_ref > 0.0 { n_match / n_ref } else { eps };
        let denom = factor * prec + rec;
        score += if denom > 0.0 { (1.0 + factor) * prec * rec / denom } else { eps };
        if n_hyp > 0.0 && n_ref > 0.0 {
            avg_prec += prec;
            avg_rec += rec;
            effective_order += 1;
        }
    }
    if opts.eps_smoothing {
        if order == 0 {
            return Err(MetricError::ZeroDivision("division by zero".into()));
        }
        return Ok(100.0 * score / order as f64);
    }
    if effective_order == 0 {
        avg_prec = 0.0;
        avg_rec = 0.0;
    } else {
        avg_prec /= effective_order as f64;
        avg_rec /= effective_order as f64;
    }
    if avg_prec + avg_rec != 0.0 {
        let mut s = (1.0 + factor) * avg_prec * avg_rec;
        s /= (factor * avg_prec) + avg_rec;
        Ok(100.0 * s)
    } else {
        Ok(0.0)
    }
}

/// Character sequence used for character n-grams.
fn char_seq(s: &str, whitespace: bool) -> Vec<u32> {
    if whitespace {
        s.chars().map(u32::from).collect()
    } else {
        s.chars().filter(|&c| !py_isspace(c)).map(u32::from).collect()
    }
}

/// Per-segment statistics (see the module documentation) of one hypothesis against its references (`None`
/// entries skipped). Without any reference the reference fails (`ValueError` for a single segment).
pub fn chrf_stats(hyp: &str, refs: &[Option<&str>], opts: &ChrfOptions) -> Result<Vec<f64>> {
    chrf_stats_with(hyp, refs, opts, &mut Tables::default())
}

/// One order's `[hyp, ref, match]` statistics for every reference, appended to `per_ref[k]`.
fn order_stats(seq_h: &[u32], seqs_r: &[&[u32]], n: usize, bits: u32, t: &mut Tables, per_ref: &mut [Vec<f64>]) {
    let width = n as u32 * bits;
    if width <= u64::BITS {
        order_stats_packed(seq_h, seqs_r, n, bits, &mut t.small, per_ref);
    } else if width <= u128::BITS {
        order_stats_packed(seq_h, seqs_r, n, bits, &mut t.large, per_ref);
    } else {
        let h = count(seq_h, n, bits);
        for (k, r) in seqs_r.iter().enumerate() {
            push_match(&mut per_ref[k], &h, &count(r, n, bits));
        }
    }
}

fn order_stats_packed<K: Key>(
    seq_h: &[u32],
    seqs_r: &[&[u32]],
    n: usize,
    bits: u32,
    m: &mut Maps<K>,
    per_ref: &mut [Vec<f64>],
) {
    let hyp_total = seq_h.len().saturating_sub(n - 1) as u64;
    for (k, r) in seqs_r.iter().enumerate() {
        let ref_total = fill(&mut m.reference, r, n, bits);
        let matches = consume_matches(&mut m.reference, seq_h, n, bits);
        // `_get_match_statistics`: hypothesis n-grams only count when the reference has some.
        let hyp_count = if ref_total == 0 { 0 } else { hyp_total };
        per_ref[k].extend([hyp_count as f64, ref_total as f64, matches as f64]);
    }
}

/// Largest symbol of a segment, for the key width.
fn max_symbol(h: &[u32], r: &[Vec<u32>]) -> u32 {
    h.iter().chain(r.iter().flatten()).copied().max().unwrap_or(0)
}

pub(crate) fn chrf_stats_with(
    hyp: &str,
    refs: &[Option<&str>],
    opts: &ChrfOptions,
    t: &mut Tables,
) -> Result<Vec<f64>> {
    let prep = |s: &str| if opts.lowercase { py_lower(s) } else { s.to_owned() };
    let hyp = prep(hyp);
    let refs: Vec<String> = refs.iter().flatten().map(|r| prep(r)).collect();
    if refs.is_empty() {
        return Err(MetricError::value("not enough values to unpack (expected 3, got 0)"));
    }
    let mut per_ref: Vec<Vec<f64>> = vec![Vec::with_capacity(opts.n_stats()); refs.len()];
    let hyp_chars = char_seq(&hyp, opts.whitespace);
    let ref_chars: Vec<Vec<u32>> = refs.iter().map(|r| char_seq(r, opts.whitespace)).collect();
    let ref_char_slices: Vec<&[u32]> = ref_chars.iter().map(Vec::as_slice).collect();
    // Characters are packed by code point with as few bits as this segment needs.
    let bits = bits_for(max_symbol(&hyp_chars, &ref_chars));
    for n in 1..=opts.char_order {
        order_stats(&hyp_chars, &ref_char_slices, n, bits, t, &mut per_ref);
    }
    if opts.word_order > 0 {
        // Words are interned over the hypothesis and all references of the segment.
        let mut interner = Interner::default();
        let hyp_words: Vec<u32> = remove_punctuation(&hyp).into_iter().map(|w| interner.id(w)).collect();
        let ref_words: Vec<Vec<u32>> =
            refs.iter().map(|r| remove_punctuation(r).into_iter().map(|w| interner.id(w)).collect()).collect();
        let ref_word_slices: Vec<&[u32]> = ref_words.iter().map(Vec::as_slice).collect();
        let bits = bits_for(max_symbol(&hyp_words, &ref_words));
        for n in 1..=opts.word_order {
            order_stats(&hyp_words, &ref_word_slices, n, bits, t, &mut per_ref);
        }
    }
    let mut best = 0;
    let mut best_f = -1.0;
    for (k, stats) in per_ref.iter().enumerate() {
        let f = chrf_f_score(stats, opts)?;
        if f > best_f {
            best_f = f;
            best = k;
        }
    }
    Ok(per_ref.swap_remove(best))
}

/// `CHRF._get_match_statistics`.
fn push_match(stats: &mut Vec<f64>, h: &Counts<'_>, r: &Counts<'_>) {
    let hyp_count = if r.is_empty() { 0 } else { h.total() };
    stats.push(hyp_count as f64);
    stats.push(r.total() as f64);
    stats.push(h.matches(r) as f64);
}

/// `CHRFSignature.format()`.
pub fn chrf_signature(opts: &ChrfOptions, nrefs: NumRefs) -> String {
    format!(
        "nrefs:{}|case:{}|eff:{}|nc:{}|nw:{}|space:{}|version:{VERSION}",
        signature_nrefs(nrefs),
        if opts.lowercase { "lc" } else { "mixed" },
        if opts.eps_smoothing { "no" } else { "yes" },
        opts.char_order,
        opts.word_order,
        if opts.whitespace { "yes" } else { "no" }
    )
}

/// Score from summed statistics.
pub fn chrf_from_stats(stats: &[f64], opts: &ChrfOptions, nrefs: NumRefs) -> Result<ChrfScore> {
    Ok(ChrfScore {
        score: chrf_f_score(stats, opts)?,
        char_order: opts.char_order,
        word_order: opts.word_order,
        beta: opts.beta,
        signature: chrf_signature(opts, nrefs),
    })
}

/// Streaming corpus chrF: `update` then `compute`, equal to [`corpus_chrf`] over all batches.
#[derive(Debug, Clone)]
pub struct ChrfAccumulator {
    opts: ChrfOptions,
    sum: Vec<f64>,
    segments: usize,
    /// A segment without references makes the reference fail when summing (`IndexError`).
    missing_refs: bool,
    nrefs: super::RefCounter,
    tables: Tables,
}

impl ChrfAccumulator {
    pub fn new(opts: ChrfOptions) -> Self {
        ChrfAccumulator {
            opts,
            sum: vec![0.0; opts.n_stats()],
            segments: 0,
            missing_refs: false,
            nrefs: super::RefCounter::default(),
            tables: Tables::default(),
        }
    }

    pub fn update_segment(&mut self, hyp: &str, refs: &[Option<&str>]) -> Result<()> {
        self.segments += 1;
        self.nrefs.add(refs.iter().flatten().count());
        match chrf_stats_with(hyp, refs, &self.opts, &mut self.tables) {
            Ok(s) => {
                for (acc, x) in self.sum.iter_mut().zip(s) {
                    *acc += x;
                }
            }
            Err(_) if refs.iter().all(Option::is_none) => self.missing_refs = true,
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Adds segments given as reference streams parallel to `hyps` (truncated to the shortest, like `zip`).
    pub fn update(&mut self, hyps: &[&str], refs: &[Vec<Option<&str>>]) -> Result<()> {
        for (hyp, seg) in super::segments(hyps, refs) {
            self.update_segment(hyp, &seg)?;
        }
        Ok(())
    }

    pub fn compute(&self) -> Result<ChrfScore> {
        let index_error = || MetricError::Index("list index out of range".into());
        if self.missing_refs {
            if self.segments == 1 {
                return Err(MetricError::value("not enough values to unpack (expected 3, got 0)"));
            }
            return Err(index_error());
        }
        let nrefs = self.nrefs.get().ok_or_else(index_error)?;
        chrf_from_stats(&self.sum, &self.opts, nrefs)
    }
}

/// `sacrebleu.corpus_chrf(hypotheses, references, char_order, word_order, beta, remove_whitespace,
/// eps_smoothing)`.
pub fn corpus_chrf(hyps: &[Option<&str>], refs: &[Vec<Option<&str>>], opts: &ChrfOptions) -> Result<ChrfScore> {
    let hyps = super::check_corpus("CHRF", hyps, refs)?;
    let mut acc = ChrfAccumulator::new(*opts);
    acc.update(&hyps, refs)?;
    acc.compute()
}

/// `sacrebleu.sentence_chrf(hypothesis, references, ...)`.
pub fn sentence_chrf(hyp: &str, refs: &[Option<&str>], opts: &ChrfOptions) -> Result<ChrfScore> {
    super::check_sentence(refs)?;
    let mut acc = ChrfAccumulator::new(*opts);
    acc.update_segment(hyp, refs)?;
    acc.compute()
}
