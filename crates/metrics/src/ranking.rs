//! Ranking metrics of scikit-learn 1.9.1 (`sklearn.metrics._ranking`): [`roc_curve`], [`roc_auc_score`],
//! [`precision_recall_curve`], [`average_precision_score`] and [`auc`], with the same values, the same
//! degenerate-case results (NaN where sklearn warns) and the same error classes.
//!
//! Every curve is built from one descending sort of the scores (a stable LSD radix sort on the f64 bits for
//! large inputs) followed by one pass that accumulates true/false positives at the end of each run of tied
//! scores, exactly like sklearn's `confusion_matrix_at_thresholds`. Reductions use numpy's pairwise summation
//! so that sums agree with the reference to the last bits.

use serde_json::Value;

use crate::call::MetricInfo;
use crate::common::Average;
use crate::error::{MetricError, Result};
use crate::json::{self, Args};

pub(crate) const METRICS: &[MetricInfo] = &[
    MetricInfo { name: "roc_curve", reference: "sklearn.metrics.roc_curve" },
    MetricInfo { name: "roc_auc_score", reference: "sklearn.metrics.roc_auc_score" },
    MetricInfo { name: "precision_recall_curve", reference: "sklearn.metrics.precision_recall_curve" },
    MetricInfo { name: "average_precision_score", reference: "sklearn.metrics.average_precision_score" },
    MetricInfo { name: "auc", reference: "sklearn.metrics.auc" },
];

// ---------------------------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------------------------

/// One class label: a number (booleans are 0/1, as in numpy) or a string.
#[derive(Debug, Clone, PartialEq)]
pub enum Label {
    Num(f64),
    Str(String),
}

impl Label {
    fn is_one(&self) -> bool {
        matches!(self, Label::Num(x) if *x == 1.0)
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Label::Num(x) => write!(f, "{x}"),
            Label::Str(s) => write!(f, "{s}"),
        }
    }
}

/// A 1-d array of class labels (numbers or strings, never mixed).
#[derive(Debug, Clone, PartialEq)]
pub enum Labels {
    Num(Vec<f64>),
    Str(Vec<String>),
}

/// A dense row-major matrix (`rows` × `cols`).
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

impl Matrix {
    /// Builds a matrix from rows; ragged rows are a `ValueError` as in numpy.
    pub fn from_rows(rows: &[Vec<f64>]) -> Result<Self> {
        let cols = rows.first().map_or(0, Vec::len);
        if rows.iter().any(|r| r.len() != cols) {
            return Err(MetricError::value("setting an array element with a sequence: inhomogeneous shape"));
        }
        Ok(Matrix { rows: rows.len(), cols, data: rows.concat() })
    }

    fn column(&self, c: usize) -> Vec<f64> {
        (0..self.rows).map(|r| self.data[r * self.cols + c]).collect()
    }

    fn row(&self, r: usize) -> &[f64] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}

/// `y_true`: 1-d labels or a 2-d multilabel indicator matrix.
#[derive(Debug, Clone, PartialEq)]
pub enum YTrue {
    Labels(Labels),
    Indicator(Matrix),
}

/// `y_score`: a 1-d score vector or an `n × k` score matrix.
#[derive(Debug, Clone, PartialEq)]
pub enum YScore {
    Vector(Vec<f64>),
    Matrix(Matrix),
}

impl YScore {
    /// `column_or_1d`: a vector, or a matrix with one column.
    fn to_1d(&self) -> Result<Vec<f64>> {
        match self {
            YScore::Vector(v) => Ok(v.clone()),
            YScore::Matrix(m) if m.cols == 1 => Ok(m.data.clone()),
            YScore::Matrix(m) => Err(MetricError::value(format!(
                "y should be a 1d array, got an array of shape ({}, {}) instead.",
                m.rows, m.cols
            ))),
        }
    }

    fn len(&self) -> usize {
        match self {
            YScore::Vector(v) => v.len(),
            YScore::Matrix(m) => m.rows,
        }
    }

    fn values(&self) -> &[f64] {
        match self {
            YScore::Vector(v) => v,
            YScore::Matrix(m) => &m.data,
        }
    }
}

/// sklearn's `type_of_target` for the cases the ranking metrics distinguish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetType {
    Binary,
    Multiclass,
    Continuous,
    MultilabelIndicator,
    MulticlassMultioutput,
}

impl TargetType {
    fn name(self) -> &'static str {
        match self {
            TargetType::Binary => "binary",
            TargetType::Multiclass => "multiclass",
            TargetType::Continuous => "continuous",
            TargetType::MultilabelIndicator => "multilabel-indicator",
            TargetType::MulticlassMultioutput => "multiclass-multioutput",
        }
    }

    fn unsupported(self) -> MetricError {
        MetricError::value(format!("{} format is not supported", self.name()))
    }
}

impl Labels {
    pub fn len(&self) -> usize {
        match self {
            Labels::Num(v) => v.len(),
            Labels::Str(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sorted distinct labels (`np.unique`).
    pub fn unique(&self) -> Labels {
        match self {
            Labels::Num(v) => {
                let mut u: Vec<f64> = v.iter().map(|&x| x + 0.0).collect();
                u.sort_by(f64::total_cmp);
                u.dedup();
                Labels::Num(u)
            }
            Labels::Str(v) => {
                let mut u = v.clone();
                u.sort_unstable();
                u.dedup();
                Labels::Str(u)
            }
        }
    }

    fn get(&self, i: usize) -> Label {
        match self {
            Labels::Num(v) => Label::Num(v[i]),
            Labels::Str(v) => Label::Str(v[i].clone()),
        }
    }

    fn contains(&self, l: &Label) -> bool {
        self.mask(l).iter().any(|&b| b)
    }

    /// `y == label` elementwise; a string never equals a number (numpy compares them as unequal).
    pub fn mask(&self, l: &Label) -> Vec<bool> {
        match (self, l) {
            (Labels::Num(v), Label::Num(x)) => v.iter().map(|y| y == x).collect(),
            (Labels::Str(v), Label::Str(x)) => v.iter().map(|y| y == x).collect(),
            _ => vec![false; self.len()],
        }
    }

    /// Index of each label in the sorted `classes` (`_encode`); `None` for a label not in `classes`.
    fn encode(&self, classes: &Labels) -> Option<Vec<usize>> {
        match (self, classes) {
            (Labels::Num(v), Labels::Num(c)) => {
                v.iter().map(|x| c.binary_search_by(|p| p.total_cmp(&(x + 0.0))).ok()).collect()
            }
            (Labels::Str(v), Labels::Str(c)) => v.iter().map(|x| c.binary_search(x).ok()).collect(),
            _ if self.is_empty() => Some(Vec::new()),
            _ => None,
        }
    }

    /// `type_of_target` of a 1-d label array.
    pub fn target_type(&self) -> Result<TargetType> {
        if let Labels::Num(v) = self {
            if v.iter().any(|x| !x.is_finite()) {
                return Err(MetricError::value("Input y_true contains NaN or infinity."));
            }
            if v.iter().any(|x| x.fract() != 0.0) {
                return Ok(TargetType::Continuous);
            }
        }
        Ok(if self.unique().len() <= 2 { TargetType::Binary } else { TargetType::Multiclass })
    }

    fn repr(&self) -> String {
        match self {
            Labels::Num(v) => v.iter().map(|x| format!("{x}")).collect::<Vec<_>>().join(", "),
            Labels::Str(v) => v.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", "),
        }
    }
}

impl YTrue {
    /// `type_of_target`; a one-column matrix is a column vector.
    pub fn target_type(&self) -> Result<TargetType> {
        match self {
            YTrue::Labels(l) => l.target_type(),
            YTrue::Indicator(m) if m.cols == 1 => Labels::Num(m.data.clone()).target_type(),
            YTrue::Indicator(m) => {
                if m.data.iter().all(|&x| x == 0.0 || x == 1.0) {
                    Ok(TargetType::MultilabelIndicator)
                } else if m.data.iter().all(|x| x.fract() == 0.0) {
                    Ok(TargetType::MulticlassMultioutput)
                } else {
                    Ok(TargetType::Continuous)
                }
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            YTrue::Labels(l) => l.len(),
            YTrue::Indicator(m) => m.rows,
        }
    }

    /// The 1-d labels (`column_or_1d`).
    fn to_labels(&self) -> Result<Labels> {
        match self {
            YTrue::Labels(l) => Ok(l.clone()),
            YTrue::Indicator(m) if m.cols == 1 => Ok(Labels::Num(m.data.clone())),
            YTrue::Indicator(m) => Err(MetricError::value(format!(
                "y should be a 1d array, got an array of shape ({}, {}) instead.",
                m.rows, m.cols
            ))),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Numerics shared with numpy
// ---------------------------------------------------------------------------------------------------------------

/// `np.sum` of a contiguous 1-d array: numpy's pairwise summation (8-way unrolled blocks of up to 128).
pub fn np_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = -0.0;
        for &x in a {
            res += x;
        }
        res
    } else if n <= 128 {
        let mut r = [0.0; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i + 8 <= n {
            for j in 0..8 {
                r[j] += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &a[i..] {
            res += x;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        np_sum(&a[..n2]) + np_sum(&a[n2..])
    }
}

fn mean(a: &[f64]) -> f64 {
    np_sum(a) / a.len() as f64
}

/// `np.average(a, weights=w)`.
fn weighted_mean(a: &[f64], w: &[f64]) -> Result<f64> {
    let scale = np_sum(w);
    if scale == 0.0 {
        return Err(MetricError::ZeroDivision("Weights sum to zero, can't be normalized".into()));
    }
    let prod: Vec<f64> = a.iter().zip(w).map(|(x, y)| x * y).collect();
    Ok(np_sum(&prod) / scale)
}

/// Key whose ascending order is the descending order of the float; -0.0 and 0.0 share a key (numpy sees
/// them as equal). Scores are finite here.
fn desc_key(x: f64) -> u64 {
    let b = (x + 0.0).to_bits();
    let asc = if b >> 63 == 1 { !b } else { b | (1 << 63) };
    !asc
}

/// Stable sort by a u64 key: LSD radix on 16-bit digits, skipping digits that are equal everywhere
/// (common for the high bits of scores in a narrow range).
fn radix_sort_by<T: Copy + Default>(a: &mut Vec<T>, key: impl Fn(&T) -> u64) {
    const BITS: usize = 16;
    const DIGITS: usize = 4;
    const BUCKETS: usize = 1 << BITS;
    let n = a.len();
    let mut counts = vec![[0usize; DIGITS]; BUCKETS];
    for p in a.iter() {
        let k = key(p);
        for (d, c) in (0..DIGITS).map(|d| (d, ((k >> (d * BITS)) as usize) & (BUCKETS - 1))) {
            counts[c][d] += 1;
        }
    }
    let mut buf = vec![T::default(); n];
    let mut offsets = vec![0usize; BUCKETS];
    for d in 0..DIGITS {
        if counts.iter().any(|c| c[d] == n) {
            continue;
        }
        let mut sum = 0;
        for (o, c) in offsets.iter_mut().zip(&counts) {
            *o = sum;
            sum += c[d];
        }
        for &p in a.iter() {
            let digit = ((key(&p) >> (d * BITS)) as usize) & (BUCKETS - 1);
            buf[offsets[digit]] = p;
            offsets[digit] += 1;
        }
        std::mem::swap(a, &mut buf);
    }
}

/// Inverse of [`desc_key`] (-0.0 comes back as 0.0).
fn from_desc_key(k: u64) -> f64 {
    let asc = !k;
    f64::from_bits(if asc >> 63 == 1 { asc & !(1 << 63) } else { !asc })
}

fn sort_keys(mut keys: Vec<u64>) -> Vec<u64> {
    if keys.len() <= 512 {
        keys.sort_unstable();
    } else {
        radix_sort_by(&mut keys, |&k| k);
    }
    keys
}

/// Indices ordering `scores` descending, ties in input order (numpy's stable descending argsort), with the
/// sort keys.
fn sort_desc(scores: &[f64]) -> Vec<(u64, u32)> {
    let mut pairs: Vec<(u64, u32)> = scores.iter().enumerate().map(|(i, &x)| (desc_key(x), i as u32)).collect();
    if pairs.len() <= 512 {
        // The index breaks ties, so the unstable sort gives the stable order.
        pairs.sort_unstable();
    } else {
        radix_sort_by(&mut pairs, |p| p.0);
    }
    pairs
}

fn check_finite(x: &[f64], name: &str) -> Result<()> {
    if x.iter().any(|v| !v.is_finite()) {
        return Err(MetricError::value(format!("Input {name} contains NaN or infinity.")));
    }
    Ok(())
}

fn inconsistent(lengths: &[usize]) -> MetricError {
    MetricError::value(format!("Found input variables with inconsistent numbers of samples: {lengths:?}"))
}

// ---------------------------------------------------------------------------------------------------------------
// Binary building blocks
// ---------------------------------------------------------------------------------------------------------------

/// False and true positive counts (weighted sums) at each distinct score, scores descending
/// (sklearn's `confusion_matrix_at_thresholds` without the negatives).
#[derive(Debug, Clone, Default)]
struct ClfCurve {
    fps: Vec<f64>,
    tps: Vec<f64>,
    thresholds: Vec<f64>,
}

fn clf_curve(y: &[bool], scores: &[f64], weight: Option<&[f64]>) -> Result<ClfCurve> {
    match weight {
        Some(w) if w.len() != y.len() || scores.len() != y.len() => {
            return Err(inconsistent(&[y.len(), scores.len(), w.len()]))
        }
        None if scores.len() != y.len() => return Err(inconsistent(&[y.len(), scores.len()])),
        _ => {}
    }
    check_finite(scores, "y_score")?;
    let mut curve = ClfCurve::default();
    match weight {
        None => {
            // Unit weights: counts are exact integers, so the order within ties is irrelevant; sorting the
            // positive and negative keys apart (8-byte items) and merging is the fastest exact route.
            let pos = sort_keys(scores.iter().zip(y).filter(|p| *p.1).map(|p| desc_key(*p.0)).collect());
            let neg = sort_keys(scores.iter().zip(y).filter(|p| !*p.1).map(|p| desc_key(*p.0)).collect());
            let (mut i, mut j) = (0, 0);
            while i < pos.len() || j < neg.len() {
                let key = match (pos.get(i), neg.get(j)) {
                    (Some(&a), Some(&b)) => a.min(b),
                    (Some(&a), None) => a,
                    (None, Some(&b)) => b,
                    (None, None) => break,
                };
                while pos.get(i) == Some(&key) {
                    i += 1;
                }
                while neg.get(j) == Some(&key) {
                    j += 1;
                }
                curve.tps.push(i as f64);
                curve.fps.push(j as f64);
                curve.thresholds.push(from_desc_key(key));
            }
        }
        Some(w) => {
            check_finite(w, "sample_weight")?;
            if w.iter().all(|&x| x == 0.0) {
                return Err(MetricError::value("Sample weights must contain at least one non-zero number."));
            }
            // Zero-weight samples are removed before sorting, so they never create a threshold.
            let keep: Vec<usize> = (0..y.len()).filter(|&i| w[i] != 0.0).collect();
            let s: Vec<f64> = keep.iter().map(|&i| scores[i]).collect();
            let order = sort_desc(&s);
            let (mut tp, mut fp) = (0.0, 0.0);
            for (i, &(key, k)) in order.iter().enumerate() {
                let j = keep[k as usize];
                if y[j] {
                    tp += w[j];
                } else {
                    fp += w[j];
                }
                if order.get(i + 1).is_none_or(|next| next.0 != key) {
                    curve.tps.push(tp);
                    curve.fps.push(fp);
                    curve.thresholds.push(scores[j]);
                }
            }
        }
    }
    if curve.fps.is_empty() {
        // sklearn reads `fps[-1]` of the empty curve.
        return Err(MetricError::Index("index -1 is out of bounds for axis 0 with size 0".into()));
    }
    Ok(curve)
}

/// Receiver operating characteristic: `fpr`, `tpr` and decreasing `thresholds` (the first is `+inf`).
#[derive(Debug, Clone, PartialEq)]
pub struct RocCurve {
    pub fpr: Vec<f64>,
    pub tpr: Vec<f64>,
    pub thresholds: Vec<f64>,
}

/// Precision-recall pairs: `precision` and `recall` end with 1 and 0; `thresholds` increase.
#[derive(Debug, Clone, PartialEq)]
pub struct PrCurve {
    pub precision: Vec<f64>,
    pub recall: Vec<f64>,
    pub thresholds: Vec<f64>,
}

fn roc_from_clf(c: ClfCurve, drop_intermediate: bool) -> RocCurve {
    let ClfCurve { mut fps, mut tps, mut thresholds } = c;
    let n = fps.len();
    if drop_intermediate && n > 2 {
        // Keep the ends and every point where the curve bends (non-zero second difference).
        let keep: Vec<usize> = (0..n)
            .filter(|&i| {
                i == 0
                    || i == n - 1
                    || (fps[i + 1] - fps[i]) - (fps[i] - fps[i - 1]) != 0.0
                    || (tps[i + 1] - tps[i]) - (tps[i] - tps[i - 1]) != 0.0
            })
            .collect();
        fps = keep.iter().map(|&i| fps[i]).collect();
        tps = keep.iter().map(|&i| tps[i]).collect();
        thresholds = keep.iter().map(|&i| thresholds[i]).collect();
    }
    let last_fp = fps.last().copied().unwrap_or(0.0);
    let last_tp = tps.last().copied().unwrap_or(0.0);
    let ratio = |v: &[f64], last: f64| -> Vec<f64> {
        let mut out = Vec::with_capacity(v.len() + 1);
        // sklearn: no negatives (positives) leaves the rate undefined, with an UndefinedMetricWarning.
        out.push(if last > 0.0 { 0.0 } else { f64::NAN });
        out.extend(v.iter().map(|&x| if last > 0.0 { x / last } else { f64::NAN }));
        out
    };
    let mut thr = Vec::with_capacity(thresholds.len() + 1);
    thr.push(f64::INFINITY);
    thr.extend(thresholds);
    RocCurve { fpr: ratio(&fps, last_fp), tpr: ratio(&tps, last_tp), thresholds: thr }
}

fn pr_from_clf(c: ClfCurve, drop_intermediate: bool) -> Result<PrCurve> {
    let ClfCurve { mut fps, mut tps, mut thresholds } = c;
    let n = fps.len();
    if drop_intermediate && n > 2 {
        // Keep the points where recall changes on either side (the corners of the step curve).
        let keep: Vec<usize> = (0..n)
            .filter(|&i| i == 0 || i == n - 1 || tps[i] - tps[i - 1] != 0.0 || tps[i + 1] - tps[i] != 0.0)
            .collect();
        fps = keep.iter().map(|&i| fps[i]).collect();
        tps = keep.iter().map(|&i| tps[i]).collect();
        thresholds = keep.iter().map(|&i| thresholds[i]).collect();
    }
    let last_tp = tps.last().copied().unwrap_or(0.0);
    let mut precision: Vec<f64> = tps
        .iter()
        .zip(&fps)
        .rev()
        .map(|(&tp, &fp)| {
            let ps = tp + fp;
            if ps != 0.0 {
                tp / ps
            } else {
                0.0
            }
        })
        .collect();
    precision.push(1.0);
    // No positives: sklearn sets recall to 1 everywhere (with a warning).
    let mut recall: Vec<f64> = tps.iter().rev().map(|&tp| if last_tp == 0.0 { 1.0 } else { tp / last_tp }).collect();
    recall.push(0.0);
    thresholds.reverse();
    Ok(PrCurve { precision, recall, thresholds })
}

/// `sklearn.metrics.roc_curve` on boolean truth (`true` = positive class).
///
/// Thresholds are the distinct scores, descending, preceded by `+inf`; `fpr = fps / fps[-1]`,
/// `tpr = tps / tps[-1]`, NaN when there are no negatives (resp. positives). `drop_intermediate` removes
/// collinear points. Zero-weight samples are ignored; non-finite scores and all-zero weights are errors.
pub fn roc_curve_binary(
    y_true: &[bool],
    y_score: &[f64],
    sample_weight: Option<&[f64]>,
    drop_intermediate: bool,
) -> Result<RocCurve> {
    Ok(roc_from_clf(clf_curve(y_true, y_score, sample_weight)?, drop_intermediate))
}

/// `sklearn.metrics.precision_recall_curve` on boolean truth: precision `tp / (tp + fp)` (0 when undefined)
/// and recall `tp / P` (1 everywhere when there are no positives) per distinct score, by increasing
/// threshold, followed by the point (precision 1, recall 0).
pub fn precision_recall_curve_binary(
    y_true: &[bool],
    y_score: &[f64],
    sample_weight: Option<&[f64]>,
    drop_intermediate: bool,
) -> Result<PrCurve> {
    pr_from_clf(clf_curve(y_true, y_score, sample_weight)?, drop_intermediate)
}

/// Trapezoid area `Σ (x[i+1]-x[i]) (y[i+1]+y[i]) / 2` as `np.trapezoid` computes it (pairwise sum).
fn trapezoid(x: &[f64], y: &[f64]) -> f64 {
    let terms: Vec<f64> = (1..x.len()).map(|i| (x[i] - x[i - 1]) * (y[i] + y[i - 1]) / 2.0).collect();
    np_sum(&terms)
}

/// `sklearn.metrics.auc`: area under the curve `(x, y)` by the trapezoidal rule.
///
/// `x` must be monotonic (increasing or decreasing; a decreasing `x` gives the positive area), at least
/// two points are required, and the lengths must agree; each violation is a `ValueError`.
pub fn auc(x: &[f64], y: &[f64]) -> Result<f64> {
    if x.len() != y.len() {
        return Err(inconsistent(&[x.len(), y.len()]));
    }
    if x.len() < 2 {
        return Err(MetricError::value(format!(
            "At least 2 points are needed to compute area under curve, but x.shape = {}",
            x.len()
        )));
    }
    let mut direction = 1.0;
    if x.windows(2).any(|w| w[1] - w[0] < 0.0) {
        if x.windows(2).all(|w| w[1] - w[0] <= 0.0) {
            direction = -1.0;
        } else {
            return Err(MetricError::value(format!("x is neither increasing nor decreasing : {x:?}.")));
        }
    }
    Ok(direction * trapezoid(x, y))
}

/// `_binary_roc_auc_score`: NaN unless both classes occur (before weights are applied); with `max_fpr`,
/// McClish's standardised partial AUC `0.5 (1 + (A - m²/2) / (m - m²/2))` over `fpr ≤ m`.
pub fn roc_auc_binary(
    y_true: &[bool],
    y_score: &[f64],
    sample_weight: Option<&[f64]>,
    max_fpr: Option<f64>,
) -> Result<f64> {
    let pos = y_true.iter().filter(|&&b| b).count();
    if pos == 0 || pos == y_true.len() {
        return Ok(f64::NAN);
    }
    let roc = roc_curve_binary(y_true, y_score, sample_weight, true)?;
    partial_auc(&roc, max_fpr)
}

fn partial_auc(roc: &RocCurve, max_fpr: Option<f64>) -> Result<f64> {
    let (fpr, tpr) = (&roc.fpr, &roc.tpr);
    let m = match max_fpr {
        None | Some(1.0) => return auc(fpr, tpr),
        Some(m) if m <= 0.0 || m > 1.0 || m.is_nan() => {
            return Err(MetricError::value(format!("Expected max_fpr in range (0, 1], got: {m}")))
        }
        Some(m) => m,
    };
    let stop = fpr.partition_point(|&f| f <= m);
    if stop == 0 || stop >= fpr.len() {
        return Err(MetricError::Index(format!("index {stop} is out of bounds for the ROC curve")));
    }
    let (x0, x1, y0, y1) = (fpr[stop - 1], fpr[stop], tpr[stop - 1], tpr[stop]);
    // np.interp on two points
    let slope = (y1 - y0) / (x1 - x0);
    let y_m = slope * (m - x0) + y0;
    let mut xs = fpr[..stop].to_vec();
    xs.push(m);
    let mut ys = tpr[..stop].to_vec();
    ys.push(y_m);
    let partial = auc(&xs, &ys)?;
    let min_area = 0.5 * m * m;
    let max_area = m;
    Ok(0.5 * (1.0 + (partial - min_area) / (max_area - min_area)))
}

/// `_binary_uninterpolated_average_precision`: `max(0, -Σ (R[i+1]-R[i]) P[i])` over the precision-recall
/// curve, i.e. `Σ (R_n - R_{n-1}) P_n` without interpolation.
pub fn average_precision_binary(y_true: &[bool], y_score: &[f64], sample_weight: Option<&[f64]>) -> Result<f64> {
    let pr = precision_recall_curve_binary(y_true, y_score, sample_weight, false)?;
    let terms: Vec<f64> =
        (0..pr.recall.len() - 1).map(|i| (pr.recall[i + 1] - pr.recall[i]) * pr.precision[i]).collect();
    Ok(0.0f64.max(-np_sum(&terms)))
}

// ---------------------------------------------------------------------------------------------------------------
// Label handling and averaging
// ---------------------------------------------------------------------------------------------------------------

/// sklearn's `_check_pos_label_consistency` plus the target-type check of the curve functions; returns
/// `y_true == pos_label`.
fn binarize_for_curve(y_true: &YTrue, pos_label: Option<&Label>) -> Result<Vec<bool>> {
    let tt = y_true.target_type()?;
    if !(tt == TargetType::Binary || (tt == TargetType::Multiclass && pos_label.is_some())) {
        return Err(tt.unsupported());
    }
    let y = y_true.to_labels()?;
    let pos = match pos_label {
        Some(p) => p.clone(),
        None => {
            let classes = y.unique();
            let ok = match &classes {
                Labels::Num(c) => {
                    matches!(
                        c.as_slice(),
                        [a, b] if (*a == 0.0 || *a == -1.0) && *b == 1.0
                    ) || matches!(c.as_slice(), [a] if *a == 0.0 || *a == -1.0 || *a == 1.0)
                }
                Labels::Str(_) => false,
            };
            if !ok {
                return Err(MetricError::value(format!(
                    "y_true takes value in {{{}}} and pos_label is not specified: either make y_true take value \
                     in {{0, 1}} or {{-1, 1}} or pass pos_label explicitly.",
                    classes.repr()
                )));
            }
            Label::Num(1.0)
        }
    };
    Ok(y.mask(&pos))
}

/// `sklearn.metrics.roc_curve(y_true, y_score, pos_label=, sample_weight=, drop_intermediate=)`.
///
/// `y_true` must be binary, or multiclass with an explicit `pos_label` (one-vs-rest). Without `pos_label`,
/// labels must be {0, 1} or {-1, 1} (positive = 1), otherwise `ValueError`.
pub fn roc_curve(
    y_true: &YTrue,
    y_score: &YScore,
    pos_label: Option<&Label>,
    sample_weight: Option<&[f64]>,
    drop_intermediate: bool,
) -> Result<RocCurve> {
    let y = binarize_for_curve(y_true, pos_label)?;
    roc_curve_binary(&y, &y_score.to_1d()?, sample_weight, drop_intermediate)
}

/// `sklearn.metrics.precision_recall_curve(y_true, y_score, pos_label=, sample_weight=,
/// drop_intermediate=)`; label rules as [`roc_curve`].
pub fn precision_recall_curve(
    y_true: &YTrue,
    y_score: &YScore,
    pos_label: Option<&Label>,
    sample_weight: Option<&[f64]>,
    drop_intermediate: bool,
) -> Result<PrCurve> {
    let y = binarize_for_curve(y_true, pos_label)?;
    precision_recall_curve_binary(&y, &y_score.to_1d()?, sample_weight, drop_intermediate)
}

/// A score averaged over classes / samples, or one score per class (`average=None`).
#[derive(Debug, Clone, PartialEq)]
pub enum Scores {
    Scalar(f64),
    PerClass(Vec<f64>),
}

type BinaryMetric<'a> = dyn Fn(&[bool], &[f64], Option<&[f64]>) -> Result<f64> + 'a;

/// sklearn's `_average_binary_score` for a multilabel indicator `y_true` and an `n × k` score matrix.
fn average_binary_score(
    metric: &BinaryMetric<'_>,
    y: &Matrix,
    s: &Matrix,
    average: Average,
    sample_weight: Option<&[f64]>,
) -> Result<Scores> {
    let mut lengths = vec![y.rows, s.rows];
    if let Some(w) = sample_weight {
        lengths.push(w.len());
    }
    if lengths.iter().any(|&l| l != y.rows) {
        return Err(inconsistent(&lengths));
    }
    let truth = |v: &[f64]| -> Vec<bool> { v.iter().map(|&x| x == 1.0).collect() };
    let mut average_weight: Option<Vec<f64>> = None;
    let scores: Vec<f64> = match average {
        Average::Micro => {
            if y.data.len() != s.data.len() {
                return Err(inconsistent(&[y.data.len(), s.data.len()]));
            }
            let w: Option<Vec<f64>> =
                sample_weight.map(|w| w.iter().flat_map(|&x| std::iter::repeat_n(x, y.cols)).collect());
            return Ok(Scores::Scalar(metric(&truth(&y.data), &s.data, w.as_deref())?));
        }
        Average::Samples => {
            average_weight = sample_weight.map(<[f64]>::to_vec);
            (0..y.rows)
                .map(|r| {
                    if y.cols != s.cols {
                        return Err(inconsistent(&[y.cols, s.cols]));
                    }
                    metric(&truth(y.row(r)), s.row(r), None)
                })
                .collect::<Result<_>>()?
        }
        _ => {
            if average == Average::Weighted {
                // Column sums run over rows in order, as numpy reduces axis 0.
                let mut aw = vec![0.0; y.cols];
                for r in 0..y.rows {
                    let wr = sample_weight.map_or(1.0, |w| w[r]);
                    for (c, a) in aw.iter_mut().enumerate() {
                        *a += y.data[r * y.cols + c] * wr;
                    }
                }
                if np_sum(&aw).abs() <= 1e-8 {
                    return Ok(Scores::Scalar(0.0));
                }
                if aw.len() != s.cols {
                    return Err(MetricError::Index(format!(
                        "boolean index did not match indexed array along axis 0; size of axis is {} but size of \
                         corresponding boolean axis is {}",
                        s.cols,
                        aw.len()
                    )));
                }
                average_weight = Some(aw);
            }
            if s.cols > y.cols {
                return Err(MetricError::Index(format!(
                    "index {} is out of bounds for axis 1 with size {}",
                    y.cols, y.cols
                )));
            }
            (0..s.cols).map(|c| metric(&truth(&y.column(c)), &s.column(c), sample_weight)).collect::<Result<_>>()?
        }
    };
    match (average, average_weight) {
        (Average::None, _) => Ok(Scores::PerClass(scores)),
        (_, Some(w)) => {
            let scores: Vec<f64> = scores.iter().zip(&w).map(|(&s, &w)| if w == 0.0 { 0.0 } else { s }).collect();
            Ok(Scores::Scalar(weighted_mean(&scores, &w)?))
        }
        (_, None) => Ok(Scores::Scalar(mean(&scores))),
    }
}

fn check_average(average: Average, metric: &str) -> Result<()> {
    if average == Average::Binary {
        return Err(MetricError::value(format!(
            "The 'average' parameter of {metric} must be a str among {{'weighted', 'micro', 'macro', 'samples'}} \
             or None. Got 'binary' instead."
        )));
    }
    Ok(())
}

/// `multi_class=` of `roc_auc_score`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultiClass {
    Raise,
    Ovr,
    Ovo,
}

/// Options of [`roc_auc_score`] (the keyword arguments of sklearn, same defaults).
#[derive(Debug, Clone, Default)]
pub struct RocAucOptions<'a> {
    /// Default `Macro`.
    pub average: Option<Average>,
    pub sample_weight: Option<&'a [f64]>,
    pub max_fpr: Option<f64>,
    /// Default `Raise`.
    pub multi_class: Option<MultiClass>,
    pub labels: Option<&'a Labels>,
}

/// `sklearn.metrics.roc_auc_score`.
///
/// Binary `y_true` (positive = the greater of the two labels): area under the ROC curve, NaN when only one
/// class occurs, McClish-standardised partial AUC with `max_fpr`. Multilabel indicator `y_true`: per-column
/// AUC averaged (`micro`, `macro`, `weighted`, `samples`, or `None` for per-class). Multiclass `y_true` with an
/// `n × k` probability matrix (rows must sum to 1): `ovr` (one-vs-rest, averages `micro`/`macro`/`weighted`/
/// `None`) or `ovo` (Hand & Till pairwise, `macro`/`weighted`); `labels` orders the score columns.
pub fn roc_auc_score(y_true: &YTrue, y_score: &YScore, opts: &RocAucOptions<'_>) -> Result<Scores> {
    let average = opts.average.unwrap_or(Average::Macro);
    check_average(average, "roc_auc_score")?;
    if let Some(m) = opts.max_fpr {
        if !(m > 0.0 && m <= 1.0) {
            return Err(MetricError::value(format!(
                "The 'max_fpr' parameter of roc_auc_score must be a float in the range (0.0, 1] or None. Got {m} \
                 instead."
            )));
        }
    }
    let multi_class = opts.multi_class.unwrap_or(MultiClass::Raise);
    let tt = y_true.target_type()?;
    if y_true.len() == 0 || y_score.len() == 0 {
        return Err(MetricError::value("Found array with 0 sample(s) while a minimum of 1 is required."));
    }
    check_finite(y_score.values(), "y_score")?;
    if let Some(w) = opts.sample_weight {
        check_finite(w, "sample_weight")?;
    }
    let wide = matches!(y_score, YScore::Matrix(m) if m.cols > 2);
    if tt == TargetType::Multiclass || (tt == TargetType::Binary && wide) {
        if opts.max_fpr.is_some_and(|m| m != 1.0) {
            return Err(MetricError::value(format!(
                "Partial AUC computation not available in multiclass setting, 'max_fpr' must be set to `None`, \
                 received `max_fpr={}` instead",
                opts.max_fpr.unwrap_or(f64::NAN)
            )));
        }
        if multi_class == MultiClass::Raise {
            return Err(MetricError::value("multi_class must be in ('ovo', 'ovr')"));
        }
        let YScore::Matrix(s) = y_score else {
            return Err(MetricError::value(format!(
                "`y_score` needs to be of shape `(n_samples, n_classes)`, since `y_true` contains multiple classes. \
                 Got `y_score.shape=({},)`.",
                y_score.len()
            )));
        };
        return multiclass_roc_auc(&y_true.to_labels()?, s, opts.labels, multi_class, average, opts.sample_weight);
    }
    let metric = |y: &[bool], s: &[f64], w: Option<&[f64]>| roc_auc_binary(y, s, w, opts.max_fpr);
    match tt {
        TargetType::Binary => {
            let y = y_true.to_labels()?;
            let classes = y.unique();
            if classes.len() != 2 {
                return Ok(Scores::Scalar(f64::NAN));
            }
            let y = y.mask(&classes.get(1));
            Ok(Scores::Scalar(metric(&y, &y_score.to_1d()?, opts.sample_weight)?))
        }
        TargetType::MultilabelIndicator => {
            let (YTrue::Indicator(y), YScore::Matrix(s)) = (y_true, y_score) else {
                return Err(MetricError::value("y_score must be a matrix for a multilabel-indicator y_true"));
            };
            average_binary_score(&metric, y, s, average, opts.sample_weight)
        }
        other => Err(other.unsupported()),
    }
}

fn multiclass_roc_auc(
    y: &Labels,
    s: &Matrix,
    labels: Option<&Labels>,
    multi_class: MultiClass,
    average: Average,
    sample_weight: Option<&[f64]>,
) -> Result<Scores> {
    for r in 0..s.rows {
        let sum = np_sum(s.row(r));
        if (1.0 - sum).abs() > 1e-8 + 1e-5 * sum.abs() || sum.is_nan() {
            return Err(MetricError::value(
                "Target scores need to be probabilities for multiclass roc_auc, i.e. they should sum up to 1.0 over \
                 classes",
            ));
        }
    }
    let allowed = matches!(
        (multi_class, average),
        (MultiClass::Ovr, Average::Micro | Average::Macro | Average::Weighted | Average::None)
            | (MultiClass::Ovo, Average::Macro | Average::Weighted | Average::None)
    );
    if !allowed {
        let opts = if multi_class == MultiClass::Ovr {
            "('micro', 'macro', 'weighted', None)"
        } else {
            "('macro', 'weighted', None)"
        };
        return Err(MetricError::value(format!("average must be one of {opts} for multiclass problems")));
    }
    if average == Average::None && multi_class == MultiClass::Ovo {
        // sklearn raises NotImplementedError here.
        return Err(MetricError::value("average=None is not implemented for multi_class='ovo'."));
    }
    let classes = match labels {
        Some(l) => {
            let u = l.unique();
            if u.len() != l.len() {
                return Err(MetricError::value("Parameter 'labels' must be unique"));
            }
            if &u != l {
                return Err(MetricError::value("Parameter 'labels' must be ordered"));
            }
            if u.len() != s.cols {
                return Err(MetricError::value(format!(
                    "Number of given labels, {}, not equal to the number of columns in 'y_score', {}",
                    u.len(),
                    s.cols
                )));
            }
            if y.encode(&u).is_none() {
                return Err(MetricError::value("'y_true' contains labels not in parameter 'labels'"));
            }
            u
        }
        None => {
            let u = y.unique();
            if u.len() != s.cols {
                return Err(MetricError::value(
                    "Number of classes in y_true not equal to the number of columns in 'y_score'",
                ));
            }
            u
        }
    };
    if y.len() != s.rows {
        return Err(inconsistent(&[y.len(), s.rows]));
    }
    let encoded =
        y.encode(&classes).ok_or_else(|| MetricError::value("'y_true' contains labels not in parameter 'labels'"))?;
    match multi_class {
        MultiClass::Ovo => {
            if sample_weight.is_some() {
                return Err(MetricError::value(
                    "sample_weight is not supported for multiclass one-vs-one ROC AUC, 'sample_weight' must be None \
                     in this case.",
                ));
            }
            ovo_roc_auc(&encoded, s, average)
        }
        _ => {
            let mut ind = Matrix { rows: s.rows, cols: classes.len(), data: vec![0.0; s.rows * classes.len()] };
            for (r, &c) in encoded.iter().enumerate() {
                ind.data[r * ind.cols + c] = 1.0;
            }
            let metric = |y: &[bool], s: &[f64], w: Option<&[f64]>| roc_auc_binary(y, s, w, None);
            average_binary_score(&metric, &ind, s, average, sample_weight)
        }
    }
}

/// Hand & Till one-vs-one: mean over present class pairs (a, b) of (AUC(a | a,b) + AUC(b | a,b)) / 2,
/// weighted by the pair's prevalence for `weighted`.
fn ovo_roc_auc(encoded: &[usize], s: &Matrix, average: Average) -> Result<Scores> {
    let mut present: Vec<usize> = encoded.to_vec();
    present.sort_unstable();
    present.dedup();
    let n = encoded.len() as f64;
    let mut pair_scores = Vec::new();
    let mut prevalence = Vec::new();
    for (i, &a) in present.iter().enumerate() {
        for &b in &present[i + 1..] {
            let rows: Vec<usize> = (0..encoded.len()).filter(|&r| encoded[r] == a || encoded[r] == b).collect();
            let a_true: Vec<bool> = rows.iter().map(|&r| encoded[r] == a).collect();
            let b_true: Vec<bool> = rows.iter().map(|&r| encoded[r] == b).collect();
            let a_score: Vec<f64> = rows.iter().map(|&r| s.data[r * s.cols + a]).collect();
            let b_score: Vec<f64> = rows.iter().map(|&r| s.data[r * s.cols + b]).collect();
            let sa = roc_auc_binary(&a_true, &a_score, None, None)?;
            let sb = roc_auc_binary(&b_true, &b_score, None, None)?;
            pair_scores.push((sa + sb) / 2.0);
            prevalence.push(rows.len() as f64 / n);
        }
    }
    Ok(Scores::Scalar(if average == Average::Weighted {
        weighted_mean(&pair_scores, &prevalence)?
    } else {
        mean(&pair_scores)
    }))
}

/// `sklearn.metrics.average_precision_score(y_true, y_score, average=, pos_label=, sample_weight=)`.
///
/// Binary `y_true`: AP of the class `pos_label` (default 1; must be one of the labels when two occur).
/// Multilabel indicator or multiclass `y_true` (binarized over the present labels; `y_score` must be
/// `n × n_classes`): per-class AP averaged like [`roc_auc_score`]; `pos_label` must be 1 there.
pub fn average_precision_score(
    y_true: &YTrue,
    y_score: &YScore,
    average: Average,
    pos_label: &Label,
    sample_weight: Option<&[f64]>,
) -> Result<Scores> {
    check_average(average, "average_precision_score")?;
    let tt = y_true.target_type()?;
    let fixed = |what: &str| {
        MetricError::value(format!(
            "Parameter pos_label is fixed to 1 for {what} y_true. Do not set pos_label or set pos_label to 1."
        ))
    };
    let metric = |y: &[bool], s: &[f64], w: Option<&[f64]>| average_precision_binary(y, s, w);
    match tt {
        TargetType::Binary => {
            let y = y_true.to_labels()?;
            let present = y.unique();
            if present.len() == 2 && !present.contains(pos_label) {
                return Err(MetricError::value(format!(
                    "pos_label={pos_label} is not a valid label. It should be one of [{}]",
                    present.repr()
                )));
            }
            Ok(Scores::Scalar(metric(&y.mask(pos_label), &y_score.to_1d()?, sample_weight)?))
        }
        TargetType::MultilabelIndicator => {
            if !pos_label.is_one() {
                return Err(fixed("multilabel-indicator"));
            }
            let (YTrue::Indicator(y), YScore::Matrix(s)) = (y_true, y_score) else {
                return Err(MetricError::value("y_score must be a matrix for a multilabel-indicator y_true"));
            };
            average_binary_score(&metric, y, s, average, sample_weight)
        }
        TargetType::Multiclass => {
            if !pos_label.is_one() {
                return Err(fixed("multiclass"));
            }
            let y = y_true.to_labels()?;
            let classes = y.unique();
            let shape_err = || {
                MetricError::value(
                    "`y_score` needs to be of shape `(n_samples, n_classes)`, since `y_true` contains multiple \
                     classes.",
                )
            };
            let YScore::Matrix(s) = y_score else { return Err(shape_err()) };
            if s.rows != y.len() || s.cols != classes.len() {
                return Err(shape_err());
            }
            let encoded = y.encode(&classes).ok_or_else(shape_err)?;
            let mut ind = Matrix { rows: s.rows, cols: s.cols, data: vec![0.0; s.data.len()] };
            for (r, &c) in encoded.iter().enumerate() {
                ind.data[r * ind.cols + c] = 1.0;
            }
            average_binary_score(&metric, &ind, s, average, sample_weight)
        }
        other => Err(other.unsupported()),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------------------------------------------

/// Collects binary truth and scores batch by batch; the results equal the one-shot functions on the
/// concatenated batches ([`roc_auc_binary`], [`roc_curve_binary`], [`average_precision_binary`]).
#[derive(Debug, Clone, Default)]
pub struct BinaryScoreAccumulator {
    y_true: Vec<bool>,
    y_score: Vec<f64>,
    weight: Option<Vec<f64>>,
}

impl BinaryScoreAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a batch with unit weights. Batches must have equal lengths.
    pub fn update(&mut self, y_true: &[bool], y_score: &[f64]) -> Result<()> {
        self.push(y_true, y_score, None)
    }

    /// Adds a weighted batch (earlier unweighted batches count with weight 1).
    pub fn update_weighted(&mut self, y_true: &[bool], y_score: &[f64], sample_weight: &[f64]) -> Result<()> {
        self.push(y_true, y_score, Some(sample_weight))
    }

    fn push(&mut self, y_true: &[bool], y_score: &[f64], w: Option<&[f64]>) -> Result<()> {
        if y_true.len() != y_score.len() || w.is_some_and(|w| w.len() != y_true.len()) {
            return Err(inconsistent(&[y_true.len(), y_score.len(), w.map_or(y_true.len(), <[f64]>::len)]));
        }
        if let Some(w) = w {
            let acc = self.weight.get_or_insert_with(|| vec![1.0; self.y_true.len()]);
            acc.extend_from_slice(w);
        } else if let Some(acc) = &mut self.weight {
            acc.resize(acc.len() + y_true.len(), 1.0);
        }
        self.y_true.extend_from_slice(y_true);
        self.y_score.extend_from_slice(y_score);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.y_true.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y_true.is_empty()
    }

    pub fn roc_auc(&self, max_fpr: Option<f64>) -> Result<f64> {
        roc_auc_binary(&self.y_true, &self.y_score, self.weight.as_deref(), max_fpr)
    }

    pub fn roc_curve(&self, drop_intermediate: bool) -> Result<RocCurve> {
        roc_curve_binary(&self.y_true, &self.y_score, self.weight.as_deref(), drop_intermediate)
    }

    pub fn precision_recall_curve(&self, drop_intermediate: bool) -> Result<PrCurve> {
        precision_recall_curve_binary(&self.y_true, &self.y_score, self.weight.as_deref(), drop_intermediate)
    }

    pub fn average_precision(&self) -> Result<f64> {
        average_precision_binary(&self.y_true, &self.y_score, self.weight.as_deref())
    }
}

// ---------------------------------------------------------------------------------------------------------------
// JSON adapter
// ---------------------------------------------------------------------------------------------------------------

fn parse_label(v: &Value) -> Option<Label> {
    match v {
        Value::String(s) => Some(Label::Str(s.clone())),
        other => json::as_f64(other).map(Label::Num),
    }
}

fn parse_labels(v: &Value, name: &str) -> Result<Labels> {
    let arr = v.as_array().ok_or_else(|| MetricError::type_error(format!("{name} must be an array")))?;
    if !arr.is_empty() && arr.iter().all(Value::is_string) {
        return Ok(Labels::Str(arr.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()));
    }
    arr.iter()
        .map(|x| match x {
            Value::Number(_) | Value::Bool(_) => json::as_f64(x),
            _ => None,
        })
        .collect::<Option<Vec<f64>>>()
        .map(Labels::Num)
        .ok_or_else(|| MetricError::type_error(format!("{name} must be an array of numbers or of strings")))
}

fn parse_matrix(arr: &[Value], name: &str) -> Result<Matrix> {
    let rows = arr
        .iter()
        .map(|r| r.as_array().and_then(|r| r.iter().map(json::as_f64).collect::<Option<Vec<f64>>>()))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| MetricError::type_error(format!("{name} must be an array of arrays of numbers")))?;
    Matrix::from_rows(&rows)
}

fn parse_y_true(args: &Args) -> Result<YTrue> {
    let v = args.required("y_true")?;
    match v.as_array() {
        Some(arr) if arr.first().is_some_and(Value::is_array) => Ok(YTrue::Indicator(parse_matrix(arr, "y_true")?)),
        _ => Ok(YTrue::Labels(parse_labels(v, "y_true")?)),
    }
}

fn parse_y_score(args: &Args) -> Result<YScore> {
    let v = args.required("y_score")?;
    match v.as_array() {
        Some(arr) if arr.first().is_some_and(Value::is_array) => Ok(YScore::Matrix(parse_matrix(arr, "y_score")?)),
        _ => Ok(YScore::Vector(args.f64_vec("y_score")?)),
    }
}

fn parse_pos_label(args: &Args) -> Result<Option<Label>> {
    args.some("pos_label")
        .map(|v| parse_label(v).ok_or_else(|| MetricError::type_error("pos_label must be a number or a string")))
        .transpose()
}

fn scores_json(s: Scores) -> Value {
    match s {
        Scores::Scalar(x) => json::num(x),
        Scores::PerClass(v) => json::nums(&v),
    }
}

pub(crate) fn dispatch(name: &str, args: &Args) -> Option<Result<Value>> {
    let run = || -> Result<Value> {
        match name {
            "roc_curve" | "precision_recall_curve" => {
                args.check_known(&["y_true", "y_score", "pos_label", "sample_weight", "drop_intermediate"])?;
                let y = parse_y_true(args)?;
                let s = parse_y_score(args)?;
                let pos = parse_pos_label(args)?;
                let w = args.opt_f64_vec("sample_weight")?;
                if name == "roc_curve" {
                    let c = roc_curve(&y, &s, pos.as_ref(), w.as_deref(), args.bool("drop_intermediate", true)?)?;
                    Ok(serde_json::json!({
                        "fpr": json::nums(&c.fpr), "tpr": json::nums(&c.tpr), "thresholds": json::nums(&c.thresholds)
                    }))
                } else {
                    let c = precision_recall_curve(
                        &y,
                        &s,
                        pos.as_ref(),
                        w.as_deref(),
                        args.bool("drop_intermediate", false)?,
                    )?;
                    Ok(serde_json::json!({
                        "precision": json::nums(&c.precision), "recall": json::nums(&c.recall),
                        "thresholds": json::nums(&c.thresholds)
                    }))
                }
            }
            "roc_auc_score" => {
                args.check_known(&[
                    "y_true",
                    "y_score",
                    "average",
                    "sample_weight",
                    "max_fpr",
                    "multi_class",
                    "labels",
                ])?;
                let y = parse_y_true(args)?;
                let s = parse_y_score(args)?;
                let w = args.opt_f64_vec("sample_weight")?;
                let labels = args.some("labels").map(|v| parse_labels(v, "labels")).transpose()?;
                let multi_class = match args.str("multi_class", "raise")? {
                    "raise" => MultiClass::Raise,
                    "ovr" => MultiClass::Ovr,
                    "ovo" => MultiClass::Ovo,
                    other => {
                        return Err(MetricError::value(format!(
                            "The 'multi_class' parameter of roc_auc_score must be a str among {{'raise', 'ovr', \
                             'ovo'}}. Got '{other}' instead."
                        )))
                    }
                };
                let opts = RocAucOptions {
                    average: Some(args.average(Some("macro"))?),
                    sample_weight: w.as_deref(),
                    max_fpr: args.opt_f64("max_fpr")?,
                    multi_class: Some(multi_class),
                    labels: labels.as_ref(),
                };
                Ok(scores_json(roc_auc_score(&y, &s, &opts)?))
            }
            "average_precision_score" => {
                args.check_known(&["y_true", "y_score", "average", "pos_label", "sample_weight"])?;
                let y = parse_y_true(args)?;
                let s = parse_y_score(args)?;
                let w = args.opt_f64_vec("sample_weight")?;
                let pos = match args.get("pos_label") {
                    None => Label::Num(1.0),
                    Some(v) => parse_label(v).ok_or_else(|| {
                        MetricError::value("The 'pos_label' parameter must be a number, a string or a boolean")
                    })?,
                };
                Ok(scores_json(average_precision_score(&y, &s, args.average(Some("macro"))?, &pos, w.as_deref())?))
            }
            "auc" => {
                args.check_known(&["x", "y"])?;
                Ok(json::num(auc(&args.f64_vec("x")?, &args.f64_vec("y")?)?))
            }
            other => Err(MetricError::Key(format!("unknown ranking metric '{other}'"))),
        }
    };
    METRICS.iter().any(|m| m.name == name).then(run)
}
