//! scikit-learn 1.9.1 classification metrics (`sklearn.metrics.*`): accuracy, precision / recall / F-beta,
//! confusion matrix, classification report, Matthews correlation, Cohen's kappa, balanced accuracy and top-k
//! accuracy — same values, same label ordering, same degenerate cases and the same report text.
//!
//! # Labels
//! Functions are generic over [`Label`], implemented for the integer types, `String` and `&str`. As in sklearn,
//! the classes are the sorted union of the labels seen in `y_true` and `y_pred`. (sklearn's rule that string
//! and integer labels cannot be mixed is enforced by the type system here, and by the JSON interface.)
//!
//! # Design
//! Every metric except top-k accuracy is a function of the (weighted) confusion matrix. Labels are mapped to
//! dense indices once ([`ConfusionAccumulator::update`], one hash lookup per label); everything else works on
//! the `k × k` count table. The one-shot functions are thin wrappers over the accumulator, so streaming and
//! one-shot results are identical by construction. Per-label sums are accumulated in sample order and totals
//! use numpy's pairwise summation, so even weighted supports — which the report prints in full — match.
//!
//! # JSON interface ([`crate::call`])
//! Names are sklearn's (`"f1_score"`, `"classification_report"`, ...) with sklearn's keyword arguments;
//! `y_true`/`y_pred` (`y1`/`y2` for kappa) are arrays of integers or strings. Results: a number for scores and
//! averaged P/R/F, an array per label for `average=null`, nested arrays for `confusion_matrix`,
//! `{"precision", "recall", "fbeta", "support"}` for `precision_recall_fscore_support` (support `null` when
//! averaged), and the report text or, with `output_dict`, sklearn's dict. Errors carry the Python exception
//! class; sklearn's `InvalidParameterError` (a `ValueError` subclass) is reported as `ValueError`.

mod dispatch;
mod report;
mod topk;

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};

pub(crate) use dispatch::{dispatch, METRICS};
pub use report::{ClassificationReport, ReportOptions, ReportRow};
pub use topk::{top_k_accuracy_score, TopKScores};

use crate::common::{Average, ZeroDivision};
use crate::error::{MetricError, Result};
pub(crate) use crate::ranking::np_sum;

/// The Fx hash (as in rustc) with a final mix: labels are trusted input and few, so a fast non-keyed hash is enough.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(b));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(b));
        }
    }

    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    #[inline]
    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // Fx only mixes upwards; fold the high bits down so labels differing in their last bytes spread
        // over the buckets.
        let x = (self.0 ^ (self.0 >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^ (x >> 33)
    }
}

/// A class label: anything ordered, hashable and printable (the report prints labels with `Display`, which
/// for integers and strings is Python's `"%s" % label`).
pub trait Label: Ord + Hash + Clone + fmt::Display {
    /// sklearn's default `pos_label=1` expressed in this label type, or `None` when no label of this type can
    /// equal the integer 1 (strings).
    fn default_pos_label() -> Option<Self>;

    /// A small non-negative integer identifying this label, if it has one: such labels are indexed through
    /// a flat table instead of the hash map (the common case of class ids `0..k`).
    fn small_key(&self) -> Option<usize> {
        None
    }
}

/// Labels below this value use the flat index table.
const SMALL_KEYS: usize = 1 << 12;

macro_rules! int_label {
    ($($t:ty),*) => {$(
        impl Label for $t {
            fn default_pos_label() -> Option<Self> {
                Some(1)
            }

            fn small_key(&self) -> Option<usize> {
                usize::try_from(*self).ok().filter(|&k| k < SMALL_KEYS)
            }
        }
    )*};
}
int_label!(i8, i16, i32, i64, u8, u16, u32, u64, usize, isize);

impl Label for String {
    fn default_pos_label() -> Option<Self> {
        None
    }
}

impl Label for &str {
    fn default_pos_label() -> Option<Self> {
        None
    }
}

/// `normalize=` of `confusion_matrix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmNormalize {
    /// Divide each row by its sum (over the true condition).
    True,
    /// Divide each column by its sum (over the predicted condition).
    Pred,
    /// Divide by the total.
    All,
}

/// `weights=` of `cohen_kappa_score` (`None` in Python is `Option::None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KappaWeights {
    Linear,
    Quadratic,
}

/// Options of `precision_recall_fscore_support` and its wrappers (`precision_score`, `recall_score`,
/// `f1_score`, `fbeta_score`).
#[derive(Debug, Clone)]
pub struct PrfOptions<'a, L> {
    /// F-beta's `beta` (≥ 0; `f64::INFINITY` gives recall, 0 gives precision).
    pub beta: f64,
    /// Labels to report / average over, in this order; `None`: all present labels, sorted.
    pub labels: Option<&'a [L]>,
    /// Positive class for `average=binary`; `None` is sklearn's default `pos_label=1`.
    pub pos_label: Option<&'a L>,
    pub average: Average,
    pub zero_division: ZeroDivision,
}

impl<L> Default for PrfOptions<'_, L> {
    /// sklearn's defaults of `f1_score`: `beta=1`, `average="binary"`, `zero_division="warn"`.
    fn default() -> Self {
        PrfOptions {
            beta: 1.0,
            labels: None,
            pos_label: None,
            average: Average::Binary,
            zero_division: ZeroDivision::Warn,
        }
    }
}

/// Result of `precision_recall_fscore_support`. Per-class (`average=None`): one entry per label and `support`
/// is set; averaged: each vector has one element and `support` is `None` (as sklearn returns `None`).
#[derive(Debug, Clone, PartialEq)]
pub struct PrecisionRecallFscore {
    pub precision: Vec<f64>,
    pub recall: Vec<f64>,
    pub fbeta: Vec<f64>,
    pub support: Option<Vec<f64>>,
}

/// Streaming confusion counts. `update` maps each label to a dense index once and adds to a growing
/// count table; the metric methods then read only the `k × k` table. Results equal the one-shot functions.
#[derive(Debug, Clone)]
pub struct ConfusionAccumulator<L: Label> {
    index: HashMap<L, usize, BuildHasherDefault<FxHasher>>,
    /// Dense index of labels with a [`Label::small_key`] (`usize::MAX`: not seen yet).
    small: Vec<usize>,
    /// Labels in first-seen order (the index order of `counts`).
    labels: Vec<L>,
    in_true: Vec<bool>,
    /// Per-class weight sums of `y_true` / `y_pred`, accumulated in sample order like numpy's `bincount`
    /// (the report prints weighted supports in full, so the summation order matters).
    true_w: Vec<f64>,
    pred_w: Vec<f64>,
    /// Whether any sample has `y_pred == y_true` (sklearn's counts turn float when none does).
    any_correct: bool,
    /// Correct predictions per class (the diagonal of the confusion matrix).
    diag: Vec<f64>,
    /// The off-diagonal confusion counts.
    off: OffDiagonal,
    n_samples: usize,
    weighted: bool,
    nonzero_weight: bool,
}

impl<L: Label> Default for ConfusionAccumulator<L> {
    fn default() -> Self {
        Self::new()
    }
}

/// The confusion counts over the present labels in sorted order.
pub(crate) struct Table {
    pub n: usize,
    /// Diagonal of the confusion matrix.
    pub diag: Vec<f64>,
    /// Off-diagonal entries `(true, predicted, count)`.
    pub cells: Vec<(usize, usize, f64)>,
    pub rows: Vec<f64>,
    pub cols: Vec<f64>,
    pub in_true: Vec<bool>,
    /// sklearn's supports are floats (printed as such) with weights, or when no prediction is correct.
    pub float_counts: bool,
}

impl<L: Label> ConfusionAccumulator<L> {
    pub fn new() -> Self {
        ConfusionAccumulator {
            index: HashMap::default(),
            small: Vec::new(),
            labels: Vec::new(),
            in_true: Vec::new(),
            true_w: Vec::new(),
            pred_w: Vec::new(),
            any_correct: false,
            diag: Vec::new(),
            off: OffDiagonal::Dense { cap: 0, counts: Vec::new() },
            n_samples: 0,
            weighted: false,
            nonzero_weight: false,
        }
    }

    /// Adds samples with weight 1. Fails (ValueError) on different lengths.
    pub fn update(&mut self, y_true: &[L], y_pred: &[L]) -> Result<()> {
        check_lengths(y_true.len(), y_pred.len(), None)?;
        let mut last: Option<(&L, usize)> = None;
        for (t, p) in y_true.iter().zip(y_pred) {
            // Runs of equal labels are common (sorted or grouped data); skip the hash lookup for them.
            let ti = match last {
                Some((l, i)) if l == t => i,
                _ => self.intern(t),
            };
            last = Some((t, ti));
            let pi = if p == t { ti } else { self.intern(p) };
            self.in_true[ti] = true;
            self.any_correct |= ti == pi;
            self.true_w[ti] += 1.0;
            self.pred_w[pi] += 1.0;
            self.add(ti, pi, 1.0);
        }
        self.n_samples += y_true.len();
        self.nonzero_weight |= !y_true.is_empty();
        Ok(())
    }

    /// Adds samples with weights. Fails (ValueError) on different lengths or non-finite weights.
    pub fn update_weighted(&mut self, y_true: &[L], y_pred: &[L], sample_weight: &[f64]) -> Result<()> {
        check_lengths(y_true.len(), y_pred.len(), Some(sample_weight.len()))?;
        check_weights_finite(sample_weight)?;
        for ((t, p), &w) in y_true.iter().zip(y_pred).zip(sample_weight) {
            let ti = self.intern(t);
            let pi = if p == t { ti } else { self.intern(p) };
            self.in_true[ti] = true;
            self.any_correct |= ti == pi;
            self.true_w[ti] += w;
            self.pred_w[pi] += w;
            self.add(ti, pi, w);
        }
        self.n_samples += y_true.len();
        self.weighted = true;
        self.nonzero_weight |= sample_weight.iter().any(|&w| w != 0.0);
        Ok(())
    }

    /// `update` or `update_weighted` depending on `sample_weight`.
    pub fn update_opt(&mut self, y_true: &[L], y_pred: &[L], sample_weight: Option<&[f64]>) -> Result<()> {
        match sample_weight {
            Some(w) => self.update_weighted(y_true, y_pred, w),
            None => self.update(y_true, y_pred),
        }
    }

    #[inline]
    fn add(&mut self, t: usize, p: usize, w: f64) {
        if t == p {
            self.diag[t] += w;
        } else {
            self.off.add(t, p, w);
        }
    }

    #[inline]
    fn intern(&mut self, l: &L) -> usize {
        if let Some(k) = l.small_key() {
            if let Some(&i) = self.small.get(k) {
                if i != usize::MAX {
                    return i;
                }
            }
        } else if let Some(&i) = self.index.get(l) {
            return i;
        }
        self.insert(l)
    }

    #[cold]
    fn insert(&mut self, l: &L) -> usize {
        if let Some(&i) = self.index.get(l) {
            return i;
        }
        let i = self.labels.len();
        self.off.reserve(i + 1);
        self.index.insert(l.clone(), i);
        if let Some(k) = l.small_key() {
            if self.small.len() <= k {
                self.small.resize(k + 1, usize::MAX);
            }
            self.small[k] = i;
        }
        self.labels.push(l.clone());
        self.in_true.push(false);
        self.true_w.push(0.0);
        self.pred_w.push(0.0);
        self.diag.push(0.0);
        i
    }

    /// Number of samples added so far.
    pub fn n_samples(&self) -> usize {
        self.n_samples
    }

    /// The present labels (union of `y_true` and `y_pred`), sorted — sklearn's `unique_labels`.
    pub fn classes(&self) -> Vec<L> {
        let mut v = self.labels.clone();
        v.sort();
        v
    }

    /// Sorted position of each first-seen index.
    fn sorted_positions(&self) -> (Vec<usize>, Vec<usize>) {
        let mut order: Vec<usize> = (0..self.labels.len()).collect();
        order.sort_by(|&a, &b| self.labels[a].cmp(&self.labels[b]));
        let mut pos = vec![0; order.len()];
        for (p, &i) in order.iter().enumerate() {
            pos[i] = p;
        }
        (order, pos)
    }

    /// The position of `label` among the sorted present labels.
    fn position(&self, label: &L) -> Option<usize> {
        let i = *self.index.get(label)?;
        Some(self.labels.iter().filter(|l| *l < &self.labels[i]).count())
    }

    pub(crate) fn select(&self, labels: &[L]) -> Vec<Option<usize>> {
        let (_, pos) = self.sorted_positions();
        labels.iter().map(|l| self.index.get(l).map(|&i| pos[i])).collect()
    }

    /// The sorted count table; fails like sklearn's `_check_targets` on empty input or all-zero weights.
    pub(crate) fn table(&self) -> Result<Table> {
        if self.n_samples == 0 {
            return Err(MetricError::value(
                "Found empty input array (e.g., `y_true` or `y_pred`) while a minimum of 1 sample is required.",
            ));
        }
        if !self.nonzero_weight {
            return Err(MetricError::value("Sample weights must contain at least one non-zero number."));
        }
        let (order, pos) = self.sorted_positions();
        let n = order.len();
        let diag = order.iter().map(|&i| self.diag[i]).collect();
        let cells = self.off.cells().map(|(t, p, w)| (pos[t], pos[p], w)).collect();
        let rows = order.iter().map(|&i| self.true_w[i]).collect();
        let cols = order.iter().map(|&i| self.pred_w[i]).collect();
        let in_true = order.iter().map(|&i| self.in_true[i]).collect();
        Ok(Table { n, diag, cells, rows, cols, in_true, float_counts: self.weighted || !self.any_correct })
    }

    /// `sklearn.metrics.accuracy_score`: fraction (or, with `normalize=false`, weighted count) of samples with
    /// `y_pred == y_true`. With weights summing to zero the normalized score raises ZeroDivisionError.
    pub fn accuracy_score(&self, normalize: bool) -> Result<f64> {
        self.table()?.accuracy(normalize)
    }

    /// `sklearn.metrics.confusion_matrix`: `C[i][j]` = (weighted) count of samples with true label `labels[i]`
    /// and predicted label `labels[j]`; samples whose labels are not in `labels` are dropped. `normalize`
    /// divides by row / column / total sums (0/0 becomes 0).
    pub fn confusion_matrix(&self, labels: Option<&[L]>, normalize: Option<CmNormalize>) -> Result<Vec<Vec<f64>>> {
        let t = self.table()?;
        let sel = labels.map(|l| self.select(l));
        t.confusion_matrix(sel.as_deref(), normalize)
    }

    /// `sklearn.metrics.precision_recall_fscore_support` (see [`PrfOptions`]).
    pub fn precision_recall_fscore_support(&self, opts: &PrfOptions<L>) -> Result<PrecisionRecallFscore> {
        let t = self.table()?;
        let sel = opts.labels.map(|l| self.select(l));
        let pos_label = match opts.pos_label {
            Some(l) => PosLabel { position: self.position(l), name: l.to_string() },
            None => match L::default_pos_label() {
                Some(l) => PosLabel { position: self.position(&l), name: l.to_string() },
                None => PosLabel { position: None, name: "1".into() },
            },
        };
        t.prfs(sel.as_deref(), &pos_label, opts.average, opts.beta, opts.zero_division)
    }

    /// `sklearn.metrics.matthews_corrcoef` (multiclass form):
    /// `(c·s − Σ t_k p_k) / sqrt((s² − Σ p_k²)(s² − Σ t_k²))`, 0 when the denominator is 0.
    pub fn matthews_corrcoef(&self) -> Result<f64> {
        Ok(self.table()?.matthews())
    }

    /// `sklearn.metrics.cohen_kappa_score` with `y1` = the accumulated `y_true`, `y2` = `y_pred`:
    /// `1 − Σ w·C / Σ w·E` with `E` the outer product of the marginals over the total. Undefined cases
    /// (no samples within `labels`, or a zero expected disagreement) give NaN (`replace_undefined_by`).
    pub fn cohen_kappa_score(&self, labels: Option<&[L]>, weights: Option<KappaWeights>) -> Result<f64> {
        let t = self.table()?;
        let sel = labels.map(|l| self.select(l));
        t.cohen_kappa(sel.as_deref(), weights)
    }

    /// `sklearn.metrics.balanced_accuracy_score`: mean per-class recall over the classes present in `y_true`;
    /// `adjusted` rescales so that chance is 0 (`(s − 1/k) / (1 − 1/k)`).
    pub fn balanced_accuracy_score(&self, adjusted: bool) -> Result<f64> {
        self.table()?.balanced_accuracy(adjusted)
    }

    /// `sklearn.metrics.classification_report` as a structured report; render it with
    /// [`ClassificationReport::to_text`] or [`ClassificationReport::to_json`].
    pub fn classification_report(&self, opts: &ReportOptions<L>) -> Result<ClassificationReport> {
        self.report_impl(opts, false)
    }

    /// `never_accuracy`: the micro row is "micro avg" even when the labels cover the data.
    pub(crate) fn report_impl(&self, opts: &ReportOptions<L>, never_accuracy: bool) -> Result<ClassificationReport> {
        let t = self.table()?;
        let (labels, names, covers) = match opts.labels {
            Some(l) => {
                let sel = self.select(l);
                let mut seen = vec![false; t.n];
                for p in sel.iter().flatten() {
                    seen[*p] = true;
                }
                (Some(sel), l.iter().map(|x| x.to_string()).collect(), !never_accuracy && seen.iter().all(|&s| s))
            }
            None => (None, self.classes().iter().map(|x| x.to_string()).collect(), true),
        };
        report::build(&t, labels.as_deref(), names, covers, opts.target_names, opts.zero_division)
    }
}

/// Off-diagonal confusion counts: a dense table while there are few classes, a hash map beyond (sklearn's
/// report needs only per-class sums, so many-class data must not cost `k²` memory).
#[derive(Debug, Clone)]
enum OffDiagonal {
    /// Row-major with row stride `cap`.
    Dense {
        cap: usize,
        counts: Vec<f64>,
    },
    Sparse(HashMap<(usize, usize), f64, BuildHasherDefault<FxHasher>>),
}

/// Largest class count kept in the dense table (8 MiB).
const DENSE_MAX: usize = 1024;

impl OffDiagonal {
    #[inline]
    fn add(&mut self, t: usize, p: usize, w: f64) {
        match self {
            OffDiagonal::Dense { cap, counts } => counts[t * *cap + p] += w,
            OffDiagonal::Sparse(map) => *map.entry((t, p)).or_insert(0.0) += w,
        }
    }

    /// Makes room for `n` classes.
    fn reserve(&mut self, n: usize) {
        let OffDiagonal::Dense { cap, counts } = self else { return };
        if n <= *cap {
            return;
        }
        let new_cap = (*cap * 2).max(4);
        if new_cap > DENSE_MAX {
            *self = OffDiagonal::Sparse(self.cells().filter(|c| c.2 != 0.0).map(|(t, p, w)| ((t, p), w)).collect());
            return;
        }
        let mut grown = vec![0.0; new_cap * new_cap];
        for r in 0..*cap {
            grown[r * new_cap..r * new_cap + *cap].copy_from_slice(&counts[r * *cap..(r + 1) * *cap]);
        }
        *counts = grown;
        *cap = new_cap;
    }

    /// Nonzero off-diagonal entries `(true, predicted, count)` by first-seen class index.
    fn cells(&self) -> Box<dyn Iterator<Item = (usize, usize, f64)> + '_> {
        match self {
            OffDiagonal::Dense { cap, counts } => {
                Box::new(counts.iter().enumerate().filter(|(_, &w)| w != 0.0).map(move |(i, &w)| (i / cap, i % cap, w)))
            }
            OffDiagonal::Sparse(map) => Box::new(map.iter().map(|(&(t, p), &w)| (t, p, w))),
        }
    }
}

/// The resolved `pos_label`: its sorted position if present, and its text for messages.
pub(crate) struct PosLabel {
    pub position: Option<usize>,
    pub name: String,
}

pub(crate) fn check_lengths(a: usize, b: usize, w: Option<usize>) -> Result<()> {
    let mut lens = vec![a, b];
    lens.extend(w);
    if lens.iter().any(|&l| l != a) {
        let list: Vec<String> = lens.iter().map(|l| l.to_string()).collect();
        return Err(MetricError::value(format!(
            "Found input variables with inconsistent numbers of samples: [{}]",
            list.join(", ")
        )));
    }
    Ok(())
}

fn check_weights_finite(w: &[f64]) -> Result<()> {
    if w.iter().any(|x| !x.is_finite()) {
        return Err(MetricError::value("Input sample_weight contains NaN or infinity."));
    }
    Ok(())
}

/// `x / d`, or the `zero_division` value when `d == 0` (sklearn's `_prf_divide`).
fn prf_divide(x: f64, d: f64, zd: ZeroDivision) -> f64 {
    if d == 0.0 {
        zd.value()
    } else {
        x / d
    }
}

/// sklearn's `_nanaverage`: NaN for empty or all-NaN input; NaNs are dropped; weights summing to 0 fall back
/// to the plain mean.
fn nanaverage(a: &[f64], weights: Option<&[f64]>) -> f64 {
    let count = a.iter().filter(|x| !x.is_nan()).count();
    if count == 0 {
        return f64::NAN;
    }
    // Same summation as numpy: `nanmean` sums the whole array with NaN as 0, `average` the kept entries.
    if let Some(w) = weights {
        let keep: Vec<usize> = (0..a.len()).filter(|&i| !a[i].is_nan()).collect();
        let ws = np_sum(&keep.iter().map(|&i| w[i]).collect::<Vec<_>>());
        let kept: Vec<f64> = keep.iter().map(|&i| a[i]).collect();
        if ws != 0.0 {
            return np_sum(&keep.iter().map(|&i| a[i] * w[i]).collect::<Vec<_>>()) / ws;
        }
        return np_sum(&kept) / kept.len() as f64;
    }
    np_sum(&a.iter().map(|&x| if x.is_nan() { 0.0 } else { x }).collect::<Vec<_>>()) / count as f64
}

impl Table {
    fn accuracy(&self, normalize: bool) -> Result<f64> {
        let correct: f64 = self.diag.iter().sum();
        if !normalize {
            return Ok(correct);
        }
        let total: f64 = self.rows.iter().sum();
        if total == 0.0 {
            return Err(MetricError::ZeroDivision("Weights sum to zero, can't be normalized".into()));
        }
        Ok(correct / total)
    }

    /// `labels` as sorted positions (None: absent label); `None` selects all present labels in order.
    pub(crate) fn confusion_matrix(
        &self,
        labels: Option<&[Option<usize>]>,
        normalize: Option<CmNormalize>,
    ) -> Result<Vec<Vec<f64>>> {
        let all: Vec<Option<usize>>;
        let labels = match labels {
            Some(l) => {
                if l.is_empty() {
                    return Err(MetricError::value("'labels' should contain at least one label."));
                }
                if !l.iter().flatten().any(|&p| self.in_true[p]) {
                    return Err(MetricError::value("At least one label specified must be in y_true"));
                }
                l
            }
            None => {
                all = (0..self.n).map(Some).collect();
                &all
            }
        };
        let k = labels.len();
        // A label listed twice keeps only its last position (sklearn builds a dict label -> index).
        let mut slot: Vec<Option<usize>> = vec![None; self.n];
        for (j, p) in labels.iter().enumerate() {
            if let Some(p) = p {
                slot[*p] = Some(j);
            }
        }
        let mut cm = vec![vec![0.0; k]; k];
        for (r, &d) in self.diag.iter().enumerate() {
            if let Some(i) = slot[r] {
                cm[i][i] = d;
            }
        }
        for &(r, c, w) in &self.cells {
            if let (Some(i), Some(j)) = (slot[r], slot[c]) {
                cm[i][j] = w;
            }
        }
        let nan_to_zero = |x: f64| if x.is_nan() { 0.0 } else { x };
        match normalize {
            None => {}
            Some(CmNormalize::True) => {
                for row in &mut cm {
                    let s: f64 = row.iter().sum();
                    row.iter_mut().for_each(|x| *x = nan_to_zero(*x / s));
                }
            }
            Some(CmNormalize::Pred) => {
                for j in 0..k {
                    let s: f64 = cm.iter().map(|r| r[j]).sum();
                    cm.iter_mut().for_each(|r| r[j] = nan_to_zero(r[j] / s));
                }
            }
            Some(CmNormalize::All) => {
                let s: f64 = cm.iter().flatten().sum();
                cm.iter_mut().flatten().for_each(|x| *x = nan_to_zero(*x / s));
            }
        }
        Ok(cm)
    }

    /// Per-label (tp, predicted, true) sums.
    fn counts(&self, p: Option<usize>) -> (f64, f64, f64) {
        match p {
            // sklearn derives the sums back from its per-label confusion matrix (`tp + fp`, `tp + fn`),
            // which can differ from the raw sums in the last bit; weighted supports are printed in full.
            Some(p) => {
                let tp = self.diag[p];
                (tp, tp + (self.cols[p] - tp), tp + (self.rows[p] - tp))
            }
            None => (0.0, 0.0, 0.0),
        }
    }

    pub(crate) fn prfs(
        &self,
        labels: Option<&[Option<usize>]>,
        pos_label: &PosLabel,
        average: Average,
        beta: f64,
        zd: ZeroDivision,
    ) -> Result<PrecisionRecallFscore> {
        if beta.is_nan() || beta < 0.0 {
            return Err(MetricError::value(format!(
                "The 'beta' parameter of fbeta_score must be a float in the range [0.0, inf]. Got {beta} instead."
            )));
        }
        let binary_type = self.n <= 2;
        let all: Vec<Option<usize>>;
        let labels: &[Option<usize>] = match average {
            Average::Binary => {
                if !binary_type {
                    return Err(MetricError::value(
                        "Target is multiclass but average='binary'. Please choose another average setting, one of [None, 'micro', 'macro', 'weighted'].",
                    ));
                }
                if pos_label.position.is_none() && self.n >= 2 {
                    return Err(MetricError::value(format!(
                        "pos_label={} is not a valid label. It should be one of the present labels",
                        pos_label.name
                    )));
                }
                all = vec![pos_label.position];
                &all
            }
            Average::Samples => {
                return Err(MetricError::value(
                    "Samplewise metrics are not available outside of multilabel classification.",
                ))
            }
            _ => match labels {
                Some(l) => l,
                None => {
                    all = (0..self.n).map(Some).collect();
                    &all
                }
            },
        };
        let (mut tp, mut pred, mut truth): (Vec<f64>, Vec<f64>, Vec<f64>) =
            (Vec::with_capacity(labels.len()), Vec::with_capacity(labels.len()), Vec::with_capacity(labels.len()));
        for &p in labels {
            let (a, b, c) = self.counts(p);
            tp.push(a);
            pred.push(b);
            truth.push(c);
        }
        if average == Average::Micro {
            tp = vec![np_sum(&tp)];
            pred = vec![np_sum(&pred)];
            truth = vec![np_sum(&truth)];
        }
        let beta2 = beta * beta;
        let precision: Vec<f64> = tp.iter().zip(&pred).map(|(&t, &p)| prf_divide(t, p, zd)).collect();
        let recall: Vec<f64> = tp.iter().zip(&truth).map(|(&t, &s)| prf_divide(t, s, zd)).collect();
        let fbeta: Vec<f64> = if beta == f64::INFINITY {
            recall.clone()
        } else if beta == 0.0 {
            precision.clone()
        } else {
            (0..tp.len()).map(|i| prf_divide((1.0 + beta2) * tp[i], beta2 * truth[i] + pred[i], zd)).collect()
        };
        if average == Average::None {
            return Ok(PrecisionRecallFscore { precision, recall, fbeta, support: Some(truth) });
        }
        let w = (average == Average::Weighted).then_some(truth.as_slice());
        Ok(PrecisionRecallFscore {
            precision: vec![nanaverage(&precision, w)],
            recall: vec![nanaverage(&recall, w)],
            fbeta: vec![nanaverage(&fbeta, w)],
            support: None,
        })
    }

    fn matthews(&self) -> f64 {
        let t = &self.rows;
        let p = &self.cols;
        let n_correct: f64 = self.diag.iter().sum();
        let n_samples: f64 = p.iter().sum();
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let cov_ytyp = n_correct * n_samples - dot(t, p);
        let cov_ypyp = n_samples * n_samples - dot(p, p);
        let cov_ytyt = n_samples * n_samples - dot(t, t);
        let prod = cov_ypyp * cov_ytyt;
        if prod == 0.0 {
            0.0
        } else {
            cov_ytyp / prod.sqrt()
        }
    }

    pub(crate) fn cohen_kappa(&self, labels: Option<&[Option<usize>]>, weights: Option<KappaWeights>) -> Result<f64> {
        let cm = self.confusion_matrix(labels, None).map_err(|e| match e {
            MetricError::Value(m) if m.starts_with("At least one label specified") => MetricError::value(
                "At least one label in `labels` must be present in `y1` (even though `cohen_kappa_score` is otherwise agnostic to the order of `y1` and `y2`).",
            ),
            e => e,
        })?;
        let k = cm.len();
        let sum0: Vec<f64> = (0..k).map(|j| cm.iter().map(|r| r[j]).sum()).collect();
        let sum1: Vec<f64> = cm.iter().map(|r| r.iter().sum()).collect();
        let total: f64 = sum0.iter().sum();
        if total == 0.0 {
            return Ok(f64::NAN);
        }
        let w = |i: usize, j: usize| -> f64 {
            let d = i.abs_diff(j) as f64;
            match weights {
                None => f64::from(u8::from(i != j)),
                Some(KappaWeights::Linear) => d,
                Some(KappaWeights::Quadratic) => d * d,
            }
        };
        let (mut num, mut den) = (0.0, 0.0);
        for i in 0..k {
            for j in 0..k {
                num += w(i, j) * cm[i][j];
                den += w(i, j) * (sum0[i] * sum1[j] / total);
            }
        }
        if den == 0.0 {
            return Ok(f64::NAN);
        }
        Ok(1.0 - num / den)
    }

    fn balanced_accuracy(&self, adjusted: bool) -> Result<f64> {
        let per_class: Vec<f64> = (0..self.n).map(|i| self.diag[i] / self.rows[i]).filter(|x| !x.is_nan()).collect();
        let mut score = per_class.iter().sum::<f64>() / per_class.len() as f64;
        if adjusted {
            if per_class.is_empty() {
                return Err(MetricError::ZeroDivision("division by zero".into()));
            }
            let chance = 1.0 / per_class.len() as f64;
            score -= chance;
            score /= 1.0 - chance;
        }
        Ok(score)
    }
}

fn accumulate<L: Label>(y_true: &[L], y_pred: &[L], sample_weight: Option<&[f64]>) -> Result<ConfusionAccumulator<L>> {
    let mut acc = ConfusionAccumulator::new();
    acc.update_opt(y_true, y_pred, sample_weight)?;
    Ok(acc)
}

/// `sklearn.metrics.accuracy_score(y_true, y_pred, normalize=, sample_weight=)`.
pub fn accuracy_score<L: Label>(
    y_true: &[L],
    y_pred: &[L],
    normalize: bool,
    sample_weight: Option<&[f64]>,
) -> Result<f64> {
    accumulate(y_true, y_pred, sample_weight)?.accuracy_score(normalize)
}

/// `sklearn.metrics.confusion_matrix(y_true, y_pred, labels=, sample_weight=, normalize=)`; rows are true
/// labels, columns predicted labels, in `labels` order (default: sorted present labels).
pub fn confusion_matrix<L: Label>(
    y_true: &[L],
    y_pred: &[L],
    labels: Option<&[L]>,
    sample_weight: Option<&[f64]>,
    normalize: Option<CmNormalize>,
) -> Result<Vec<Vec<f64>>> {
    accumulate(y_true, y_pred, sample_weight)?.confusion_matrix(labels, normalize)
}

/// `sklearn.metrics.precision_recall_fscore_support`: precision `tp/(tp+fp)`, recall `tp/(tp+fn)`,
/// F-beta `(1+β²)tp / ((1+β²)tp + β²fn + fp)` and support, per label or averaged (`micro` pools counts,
/// `macro` is the NaN-ignoring mean, `weighted` weights by support, `binary` reports `pos_label` only).
/// Zero denominators give `zero_division`'s value.
pub fn precision_recall_fscore_support<L: Label>(
    y_true: &[L],
    y_pred: &[L],
    sample_weight: Option<&[f64]>,
    opts: &PrfOptions<L>,
) -> Result<PrecisionRecallFscore> {
    accumulate(y_true, y_pred, sample_weight)?.precision_recall_fscore_support(opts)
}

/// `sklearn.metrics.fbeta_score`: the F-beta part of [`precision_recall_fscore_support`].
pub fn fbeta_score<L: Label>(
    y_true: &[L],
    y_pred: &[L],
    sample_weight: Option<&[f64]>,
    opts: &PrfOptions<L>,
) -> Result<Vec<f64>> {
    Ok(precision_recall_fscore_support(y_true, y_pred, sample_weight, opts)?.fbeta)
}

/// `sklearn.metrics.f1_score`: [`fbeta_score`] with β = 1 (`opts.beta` is ignored).
pub fn f1_score<L: Label>(
    y_true: &[L],
    y_pred: &[L],
    sample_weight: Option<&[f64]>,
    opts: &PrfOptions<L>,
) -> Result<Vec<f64>> {
    let opts = PrfOptions { beta: 1.0, ..opts.clone() };
    fbeta_score(y_true, y_pred, sample_weight, &opts)
}

/// `sklearn.metrics.precision_score`: `tp / (tp + fp)`.
pub fn precision_score<L: Label>(
    y_true: &[L],
    y_pred: &[L],
    sample_weight: Option<&[f64]>,
    opts: &PrfOptions<L>,
) -> Result<Vec<f64>> {
    Ok(precision_recall_fscore_support(y_true, y_pred, sample_weight, opts)?.precision)
}

/// `sklearn.metrics.recall_score`: `tp / (tp + fn)`.
pub fn recall_score<L: Label>(
    y_true: &[L],
    y_pred: &[L],
    sample_weight: Option<&[f64]>,
    opts: &PrfOptions<L>,
) -> Result<Vec<f64>> {
    Ok(precision_recall_fscore_support(y_true, y_pred, sample_weight, opts)?.recall)
}

/// `sklearn.metrics.matthews_corrcoef` (see [`ConfusionAccumulator::matthews_corrcoef`]).
pub fn matthews_corrcoef<L: Label>(y_true: &[L], y_pred: &[L], sample_weight: Option<&[f64]>) -> Result<f64> {
    accumulate(y_true, y_pred, sample_weight)?.matthews_corrcoef()
}

/// `sklearn.metrics.cohen_kappa_score(y1, y2, labels=, weights=, sample_weight=)` (see
/// [`ConfusionAccumulator::cohen_kappa_score`]).
pub fn cohen_kappa_score<L: Label>(
    y1: &[L],
    y2: &[L],
    labels: Option<&[L]>,
    weights: Option<KappaWeights>,
    sample_weight: Option<&[f64]>,
) -> Result<f64> {
    accumulate(y1, y2, sample_weight)?.cohen_kappa_score(labels, weights)
}

/// `sklearn.metrics.balanced_accuracy_score` (see [`ConfusionAccumulator::balanced_accuracy_score`]).
pub fn balanced_accuracy_score<L: Label>(
    y_true: &[L],
    y_pred: &[L],
    sample_weight: Option<&[f64]>,
    adjusted: bool,
) -> Result<f64> {
    accumulate(y_true, y_pred, sample_weight)?.balanced_accuracy_score(adjusted)
}

/// `sklearn.metrics.classification_report` (structured; see [`ClassificationReport`]).
pub fn classification_report<L: Label>(
    y_true: &[L],
    y_pred: &[L],
    sample_weight: Option<&[f64]>,
    opts: &ReportOptions<L>,
) -> Result<ClassificationReport> {
    accumulate(y_true, y_pred, sample_weight)?.classification_report(opts)
}
