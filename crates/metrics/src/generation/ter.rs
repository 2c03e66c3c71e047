//! TER as `sacrebleu.corpus_ter` / `sacrebleu.sentence_ter` (sacrebleu 2.6.0, `sacrebleu.metrics.ter` and
//! `lib_ter`): Tercom's greedy block-shift search (shift size <= 10, distance <= 50, at most 1000 candidates)
//! over a beam edit distance (width 25 around the length-ratio diagonal) with a prefix-row cache.
//! `TER = 100 * sum(best edits) / sum(average reference length)`.

use super::ngrams::{FxMap, Interner};
use super::tokenize::{py_isspace, py_split, tokenize_tercom, TercomOptions};
use super::{signature_nrefs, NumRefs, VERSION};
use crate::error::{MetricError, Result};

const MAX_SHIFT_SIZE: usize = 10;
const MAX_SHIFT_DIST: usize = 50;
const BEAM_WIDTH: usize = 25;
const MAX_CACHE_SIZE: usize = 10000;
const MAX_SHIFT_CANDIDATES: usize = 1000;
const INF: i64 = 10_000_000_000_000_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Ins,
    Del,
    Nop,
    Sub,
    Undef,
}

type Row = Vec<(i64, Op)>;

/// `BeamEditDistance`: edit distance to a fixed reference, caching matrix rows by hypothesis prefix.
struct BeamEditDistance<'r> {
    words_ref: &'r [u32],
    initial_row: Row,
    /// Trie over hypothesis prefixes: node -> (children by word, row for this prefix).
    nodes: Vec<(FxMap<u32, usize>, Row)>,
    cache_size: usize,
}

impl<'r> BeamEditDistance<'r> {
    fn new(words_ref: &'r [u32]) -> Self {
        let initial_row = (0..=words_ref.len()).map(|i| (i as i64, Op::Ins)).collect();
        BeamEditDistance { words_ref, initial_row, nodes: vec![(FxMap::default(), Vec::new())], cache_size: 0 }
    }

    fn call(&mut self, words_hyp: &[u32]) -> (i64, Vec<Op>) {
        // `_find_cache`
        let mut node = 0;
        let mut cached_nodes = Vec::new();
        for w in words_hyp {
            match self.nodes[node].0.get(w) {
                Some(&next) => {
                    node = next;
                    cached_nodes.push(next);
                }
                None => break,
            }
        }
        let start = cached_nodes.len();
        let (dist, new_rows, trace) = self.edit_distance(words_hyp, start, &cached_nodes);
        self.add_cache(words_hyp, new_rows);
        (dist, trace)
    }

    fn row<'a>(&'a self, cached: &[usize], rows: &'a [Row], i: usize) -> &'a Row {
        if i == 0 {
            &self.initial_row
        } else if i <= cached.len() {
            &self.nodes[cached[i - 1]].1
        } else {
            &rows[i - cached.len() - 1]
        }
    }

    fn edit_distance(&self, words_h: &[u32], start_h: usize, cached: &[usize]) -> (i64, Vec<Row>, Vec<Op>) {
        let n_h = words_h.len();
        let n_r = self.words_ref.len();
        let mut rows: Vec<Row> = Vec::with_capacity(n_h - start_h);
        let length_ratio = if n_h > 0 { n_r as f64 / n_h as f64 } else { 1.0 };
        let beam_width = if (BEAM_WIDTH as f64) < length_ratio / 2.0 {
            (length_ratio / 2.0 + BEAM_WIDTH as f64).ceil() as i64
        } else {
            BEAM_WIDTH as i64
        };
        for i in start_h + 1..=n_h {
            let mut cur: Row = vec![(INF, Op::Undef); n_r + 1];
            let prev = self.row(cached, &rows, i - 1);
            let pseudo_diag = (i as f64 * length_ratio).floor() as i64;
            let min_j = (pseudo_diag - beam_width).max(0) as usize;
            let mut max_j = ((pseudo_diag + beam_width).min(n_r as i64 + 1)).max(0) as usize;
            if i == n_h {
                max_j = n_r + 1;
            }
            for j in min_j..max_j {
                if j == 0 {
                    cur[0] = (prev[0].0 + 1, Op::Del);
                } else {
                    let (cost_sub, op_sub) =
                        if words_h[i - 1] == self.words_ref[j - 1] { (0, Op::Nop) } else { (1, Op::Sub) };
                    let ops =
                        [(prev[j - 1].0 + cost_sub, op_sub), (prev[j].0 + 1, Op::Del), (cur[j - 1].0 + 1, Op::Ins)];
                    for (cost, op) in ops {
                        if cur[j].0 > cost {
                            cur[j] = (cost, op);
                        }
                    }
                }
            }
            rows.push(cur);
        }
        let mut trace = Vec::new();
        let (mut i, mut j) = (n_h, n_r);
        while i > 0 || j > 0 {
            let op = self.row(cached, &rows, i)[j].1;
            trace.push(op);
            match op {
                Op::Sub | Op::Nop => {
                    i -= 1;
                    j -= 1;
                }
                Op::Ins => j -= 1,
                Op::Del => i -= 1,
                // Unreachable for beam rows; stop rather than loop.
                Op::Undef => break,
            }
        }
        trace.reverse();
        let d = self.row(cached, &rows, n_h)[n_r].0;
        (d, rows, trace)
    }

    fn add_cache(&mut self, words_hyp: &[u32], rows: Vec<Row>) {
        if self.cache_size >= MAX_CACHE_SIZE {
            return;
        }
        let skip = words_hyp.len() - rows.len();
        let mut node = 0;
        for w in &words_hyp[..skip] {
            match self.nodes[node].0.get(w) {
                Some(&n) => node = n,
                None => return,
            }
        }
        for (w, row) in words_hyp[skip..].iter().zip(rows) {
            let next = match self.nodes[node].0.get(w) {
                Some(&n) => n,
                None => {
                    let n = self.nodes.len();
                    self.nodes.push((FxMap::default(), row));
                    self.nodes[node].0.insert(*w, n);
                    self.cache_size += 1;
                    n
                }
            };
            node = next;
        }
    }
}

/// `trace_to_alignment` of the flipped trace: (alignment ref pos -> hyp pos, ref errors, hyp errors).
fn trace_to_alignment(trace: &[Op]) -> (Vec<i64>, Vec<u8>, Vec<u8>) {
    let mut pos_hyp = -1i64;
    let (mut hyp_err, mut ref_err, mut align) = (Vec::new(), Vec::new(), Vec::new());
    for &op in trace {
        // Flipped: the reference's insertions (consume a reference word) become deletions and vice versa.
        match op {
            Op::Nop | Op::Sub => {
                pos_hyp += 1;
                align.push(pos_hyp);
                let e = u8::from(op == Op::Sub);
                hyp_err.push(e);
                ref_err.push(e);
            }
            Op::Del => {
                pos_hyp += 1;
                hyp_err.push(1);
            }
            Op::Ins => {
                align.push(pos_hyp);
                ref_err.push(1);
            }
            Op::Undef => {}
        }
    }
    (align, ref_err, hyp_err)
}

/// Python slice `v[a:b]` with clamping.
fn sl(v: &[u32], a: usize, b: usize) -> &[u32] {
    let b = b.min(v.len());
    let a = a.min(b);
    &v[a..b]
}

/// `_perform_shift`.
fn perform_shift(words: &[u32], start: usize, length: usize, target: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(words.len());
    if target < start {
        out.extend_from_slice(sl(words, 0, target));
        out.extend_from_slice(sl(words, start, start + length));
        out.extend_from_slice(sl(words, target, start));
        out.extend_from_slice(sl(words, start + length, usize::MAX));
    } else if target > start + length {
        out.extend_from_slice(sl(words, 0, start));
        out.extend_from_slice(sl(words, start + length, target));
        out.extend_from_slice(sl(words, start, start + length));
        out.extend_from_slice(sl(words, target, usize::MAX));
    } else {
        out.extend_from_slice(sl(words, 0, start));
        out.extend_from_slice(sl(words, start + length, length + target));
        out.extend_from_slice(sl(words, start, start + length));
        out.extend_from_slice(sl(words, length + target, usize::MAX));
    }
    out
}

/// Candidate order of `_shift`: (gain, length, -start_h, -target).
type ShiftKey = (i64, usize, i64, i64);

/// `_shift`: the best single block shift, as (gain, shifted words); updates the candidate count.
fn best_shift(words_h: &[u32], words_r: &[u32], ed: &mut BeamEditDistance<'_>, checked: &mut usize) -> (i64, Vec<u32>) {
    let (pre_score, trace) = ed.call(words_h);
    let (align, ref_err, hyp_err) = trace_to_alignment(&trace);
    // (gain, length, -start_h, -idx) compared lexicographically, as the reference's tuples.
    let mut best: Option<(ShiftKey, Vec<u32>)> = None;
    let (n_h, n_r) = (words_h.len(), words_r.len());
    'outer: for start_h in 0..n_h {
        for start_r in 0..n_r {
            if start_h.abs_diff(start_r) > MAX_SHIFT_DIST {
                continue;
            }
            let mut length = 0;
            while words_h[start_h + length] == words_r[start_r + length] && length < MAX_SHIFT_SIZE {
                length += 1;
                // One yielded candidate pair (start_h, start_r, length).
                let no_errors = |err: &[u8], a: usize| err.get(a..a + length).is_none_or(|e| e.iter().all(|&x| x == 0));
                let skip = no_errors(&hyp_err, start_h)
                    || no_errors(&ref_err, start_r)
                    || align.get(start_r).is_none_or(|&a| start_h as i64 <= a && a < (start_h + length) as i64);
                if !skip {
                    let mut prev_idx: i64 = -1;
                    for offset in -1..length as i64 {
                        let pos = start_r as i64 + offset;
                        let idx = if pos == -1 {
                            0
                        } else if (pos as usize) < align.len() {
                            align[pos as usize] + 1
                        } else {
                            break;
                        };
                        if idx == prev_idx {
                            continue;
                        }
                        prev_idx = idx;
                        let shifted = perform_shift(words_h, start_h, length, idx as usize);
                        let key = (pre_score - ed.call(&shifted).0, length, -(start_h as i64), -idx);
                        *checked += 1;
                        if best.as_ref().is_none_or(|(b, _)| key > *b) {
                            best = Some((key, shifted));
                        }
                    }
                    if *checked >= MAX_SHIFT_CANDIDATES {
                        break 'outer;
                    }
                }
                if n_h == start_h + length || n_r == start_r + length {
                    break;
                }
            }
        }
    }
    match best {
        None => (0, words_h.to_vec()),
        Some((key, shifted)) => (key.0, shifted),
    }
}

/// `translation_edit_rate`: (number of edits including shifts, reference length).
fn translation_edit_rate(words_hyp: &[u32], words_ref: &[u32]) -> (i64, usize) {
    if words_ref.is_empty() {
        return (words_hyp.len() as i64, 0);
    }
    let mut ed = BeamEditDistance::new(words_ref);
    let mut shifts = 0;
    let mut input = words_hyp.to_vec();
    let mut checked = 0;
    loop {
        let (delta, shifted) = best_shift(&input, words_ref, &mut ed, &mut checked);
        if checked >= MAX_SHIFT_CANDIDATES || delta <= 0 {
            break;
        }
        shifts += 1;
        input = shifted;
    }
    let (dist, _) = ed.call(&input);
    (shifts + dist, words_ref.len())
}

/// `TER._preprocess_segment`.
fn preprocess(s: &str, opts: &TercomOptions) -> String {
    tokenize_tercom(s.trim_end_matches(py_isspace), *opts)
}

/// Per-segment statistics `[best number of edits, average reference length]` (`None` references skipped;
/// none at all is `ZeroDivisionError` as in the reference).
pub fn ter_stats(hyp: &str, refs: &[Option<&str>], opts: &TercomOptions) -> Result<[f64; 2]> {
    // The reference preprocesses references twice (once when caching, once when extracting words).
    let refs: Vec<String> = refs.iter().flatten().map(|r| preprocess(&preprocess(r, opts), opts)).collect();
    if refs.is_empty() {
        return Err(MetricError::ZeroDivision("division by zero".into()));
    }
    let hyp = preprocess(hyp, opts);
    let mut interner = Interner::default();
    let hyp_words: Vec<u32> = py_split(&hyp).map(|w| interner.id(w)).collect();
    let mut ref_lengths = 0usize;
    let mut best = INF;
    for r in &refs {
        let ref_words: Vec<u32> = py_split(r).map(|w| interner.id(w)).collect();
        let (edits, len) = translation_edit_rate(&hyp_words, &ref_words);
        ref_lengths += len;
        best = best.min(edits);
    }
    Ok([best as f64, ref_lengths as f64 / refs.len() as f64])
}

/// `TERScore` plus the metric's signature.
#[derive(Debug, Clone, PartialEq)]
pub struct TerScore {
    pub score: f64,
    pub num_edits: i64,
    pub ref_length: f64,
    /// e.g. `nrefs:1|case:lc|tok:tercom|norm:no|punct:yes|asian:no|version:2.6.0`.
    pub signature: String,
}

impl TerScore {
    /// `str(TERScore)`, e.g. `TER = 50.00`.
    pub fn format(&self) -> String {
        format!("TER = {:.2}", self.score)
    }
}

/// `TERSignature.format()`.
pub fn ter_signature(opts: &TercomOptions, nrefs: NumRefs) -> String {
    let yn = |b: bool| if b { "yes" } else { "no" };
    format!(
        "nrefs:{}|case:{}|tok:tercom|norm:{}|punct:{}|asian:{}|version:{VERSION}",
        signature_nrefs(nrefs),
        if opts.case_sensitive { "mixed" } else { "lc" },
        yn(opts.normalized),
        yn(!opts.no_punct),
        yn(opts.asian_support)
    )
}

/// `TER._compute_score_from_stats` on summed statistics.
pub fn ter_from_stats(stats: &[f64; 2], opts: &TercomOptions, nrefs: NumRefs) -> TerScore {
    let (edits, ref_len) = (stats[0], stats[1]);
    let score = if ref_len > 0.0 {
        edits / ref_len
    } else if edits > 0.0 {
        1.0
    } else {
        0.0
    };
    TerScore {
        score: 100.0 * score,
        num_edits: edits as i64,
        ref_length: ref_len,
        signature: ter_signature(opts, nrefs),
    }
}

/// Streaming corpus TER: `update` then `compute`, equal to [`corpus_ter`] over all batches (the statistics
/// `[edits, average reference length]` are sums over segments).
#[derive(Debug, Clone)]
pub struct TerAccumulator {
    opts: TercomOptions,
    sum: [f64; 2],
    nrefs: super::RefCounter,
}

impl TerAccumulator {
    pub fn new(opts: TercomOptions) -> Self {
        TerAccumulator { opts, sum: [0.0; 2], nrefs: super::RefCounter::default() }
    }

    pub fn update_segment(&mut self, hyp: &str, refs: &[Option<&str>]) -> Result<()> {
        let s = ter_stats(hyp, refs, &self.opts)?;
        self.nrefs.add(refs.iter().flatten().count());
        self.sum[0] += s[0];
        self.sum[1] += s[1];
        Ok(())
    }

    /// Adds segments given as reference streams parallel to `hyps` (truncated to the shortest, like `zip`).
    pub fn update(&mut self, hyps: &[&str], refs: &[Vec<Option<&str>>]) -> Result<()> {
        for (hyp, seg) in super::segments(hyps, refs) {
            self.update_segment(hyp, &seg)?;
        }
        Ok(())
    }

    pub fn compute(&self) -> Result<TerScore> {
        let nrefs = self.nrefs.get().ok_or_else(|| MetricError::Index("list index out of range".into()))?;
        Ok(ter_from_stats(&self.sum, &self.opts, nrefs))
    }
}

/// `sacrebleu.corpus_ter(hypotheses, references, normalized, no_punct, asian_support, case_sensitive)`.
pub fn corpus_ter(hyps: &[Option<&str>], refs: &[Vec<Option<&str>>], opts: &TercomOptions) -> Result<TerScore> {
    let hyps = super::check_corpus("TER", hyps, refs)?;
    let mut acc = TerAccumulator::new(*opts);
    acc.update(&hyps, refs)?;
    acc.compute()
}

/// `sacrebleu.sentence_ter(hypothesis, references, ...)`.
pub fn sentence_ter(hyp: &str, refs: &[Option<&str>], opts: &TercomOptions) -> Result<TerScore> {
    super::check_sentence(refs)?;
    let mut acc = TerAccumulator::new(*opts);
    acc.update_segment(hyp, refs)?;
    acc.compute()
}
