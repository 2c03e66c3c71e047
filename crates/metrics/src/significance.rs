//! Bootstrap confidence intervals and paired significance tests between two systems scored on the same items.
//!
//! The methods follow sacrebleu's `significance` module (paired bootstrap resampling as Moses'
//! `bootstrap-hypothesis-difference-significance.pl`, and paired approximate randomisation), generalised to any
//! metric: a metric is a closure that scores a multiset of items given by their indices. The random streams are
//! our own (seeded xoshiro256++), so resampled values are reproducible here but are not numpy's draws.

use crate::error::{MetricError, Result};

/// xoshiro256++ seeded through SplitMix64: small, fast, and reproducible across platforms.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng { s: [next(), next(), next(), next()] }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[0].wrapping_add(self.s[3]).rotate_left(23).wrapping_add(self.s[0]);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform integer in `0..n` (Lemire's multiply-shift with rejection: no modulo bias).
    pub fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as usize
    }

    pub fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }
}

/// A bootstrap percentile confidence interval around a metric's score.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    /// The metric on the full item set.
    pub score: f64,
    /// Mean of the resampled scores.
    pub mean: f64,
    pub lower: f64,
    pub upper: f64,
    /// Coverage, e.g. 0.95.
    pub confidence: f64,
    pub n_resamples: usize,
}

fn check(n_items: usize, n_resamples: usize) -> Result<()> {
    if n_items == 0 {
        return Err(MetricError::value("bootstrap needs at least one item"));
    }
    if n_resamples == 0 {
        return Err(MetricError::value("n_resamples must be positive"));
    }
    Ok(())
}

/// Linear-interpolation percentile of sorted data (numpy's default `method="linear"`), `q` in [0, 1].
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn sort_scores(scores: &mut [f64]) {
    scores.sort_by(|a, b| a.total_cmp(b));
}

/// Percentile bootstrap: resamples the `n_items` items with replacement `n_resamples` times and scores each
/// resample with `metric(indices)`. The interval is the [(1-c)/2, (1+c)/2] percentiles of those scores.
pub fn bootstrap_ci(
    n_items: usize,
    n_resamples: usize,
    confidence: f64,
    seed: u64,
    mut metric: impl FnMut(&[usize]) -> f64,
) -> Result<Interval> {
    check(n_items, n_resamples)?;
    if !(confidence > 0.0 && confidence < 1.0) {
        return Err(MetricError::value(format!("confidence must be in (0, 1), got {confidence}")));
    }
    let all: Vec<usize> = (0..n_items).collect();
    let score = metric(&all);
    let mut rng = Rng::new(seed);
    let mut idx = vec![0usize; n_items];
    let mut scores = Vec::with_capacity(n_resamples);
    for _ in 0..n_resamples {
        idx.iter_mut().for_each(|i| *i = rng.below(n_items));
        scores.push(metric(&idx));
    }
    let mean = scores.iter().sum::<f64>() / n_resamples as f64;
    sort_scores(&mut scores);
    let alpha = (1.0 - confidence) / 2.0;
    Ok(Interval {
        score,
        mean,
        lower: percentile(&scores, alpha),
        upper: percentile(&scores, 1.0 - alpha),
        confidence,
        n_resamples,
    })
}

/// Which of the two compared systems a score is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Baseline,
    Candidate,
}

/// Result of a paired test of a candidate system against a baseline on the same items.
#[derive(Debug, Clone, PartialEq)]
pub struct PairedResult {
    pub baseline: f64,
    pub candidate: f64,
    /// Probability of a difference at least this large under the null hypothesis, (c + 1) / (n + 1).
    pub p_value: f64,
    /// Bootstrap mean of the candidate's score and the half-width of its 95% interval (paired bootstrap only).
    pub candidate_mean: Option<f64>,
    pub candidate_ci: Option<f64>,
    pub n_samples: usize,
}

/// sacrebleu's `estimate_ci`: mean and half the distance between the 2.5% and 97.5% order statistics.
fn estimate_ci(scores: &mut [f64]) -> (f64, f64) {
    sort_scores(scores);
    let n = scores.len();
    let lower_idx = n / 40;
    let upper_idx = n - lower_idx - 1;
    let mean = scores.iter().sum::<f64>() / n as f64;
    (mean, 0.5 * (scores[upper_idx] - scores[lower_idx]))
}

fn p_value(stats: &[f64], real_difference: f64) -> f64 {
    let c = stats.iter().filter(|&&s| s > real_difference).count();
    (c + 1) as f64 / (stats.len() + 1) as f64
}

/// Paired bootstrap resampling (sacrebleu `--paired-bs`, default 1000 samples): both systems are scored on the
/// same resampled item sets; the p-value counts resamples whose centred absolute difference exceeds the
/// observed one.
pub fn paired_bootstrap(
    n_items: usize,
    n_samples: usize,
    seed: u64,
    mut metric: impl FnMut(System, &[usize]) -> f64,
) -> Result<PairedResult> {
    check(n_items, n_samples)?;
    let all: Vec<usize> = (0..n_items).collect();
    let baseline = metric(System::Baseline, &all);
    let candidate = metric(System::Candidate, &all);
    let mut rng = Rng::new(seed);
    let mut idx = vec![0usize; n_items];
    let mut diffs = Vec::with_capacity(n_samples);
    let mut cand_scores = Vec::with_capacity(n_samples);
    for _ in 0..n_samples {
        idx.iter_mut().for_each(|i| *i = rng.below(n_items));
        let b = metric(System::Baseline, &idx);
        let c = metric(System::Candidate, &idx);
        diffs.push((c - b).abs());
        cand_scores.push(c);
    }
    let mean_diff = diffs.iter().sum::<f64>() / n_samples as f64;
    diffs.iter_mut().for_each(|d| *d -= mean_diff);
    let p = p_value(&diffs, (baseline - candidate).abs());
    let (mean, ci) = estimate_ci(&mut cand_scores);
    Ok(PairedResult { baseline, candidate, p_value: p, candidate_mean: Some(mean), candidate_ci: Some(ci), n_samples })
}

/// Paired approximate randomisation (sacrebleu `--paired-ar`, default 10000 trials): each trial swaps the two
/// systems' outputs on a random half of the items; `metric(swap)` returns the (baseline', candidate') scores
/// for a swap mask (`swap[i]` = item i's outputs are exchanged). Two-sided.
pub fn approximate_randomization(
    n_items: usize,
    n_trials: usize,
    seed: u64,
    mut metric: impl FnMut(&[bool]) -> (f64, f64),
) -> Result<PairedResult> {
    check(n_items, n_trials)?;
    let mut swap = vec![false; n_items];
    let (baseline, candidate) = metric(&swap);
    let mut rng = Rng::new(seed);
    let mut stats = Vec::with_capacity(n_trials);
    for _ in 0..n_trials {
        swap.iter_mut().for_each(|s| *s = rng.coin());
        let (a, b) = metric(&swap);
        stats.push((a - b).abs());
    }
    Ok(PairedResult {
        baseline,
        candidate,
        p_value: p_value(&stats, (baseline - candidate).abs()),
        candidate_mean: None,
        candidate_ci: None,
        n_samples: n_trials,
    })
}

/// Sums the rows of per-item sufficient statistics (`k` values per item, row-major) over `indices` into `out`:
/// the resampling step of corpus metrics such as BLEU and chrF, whose score is a function of summed statistics.
pub fn sum_rows(stats: &[f64], k: usize, indices: &[usize], out: &mut [f64]) {
    out.iter_mut().for_each(|x| *x = 0.0);
    for &i in indices {
        for (o, s) in out.iter_mut().zip(&stats[i * k..(i + 1) * k]) {
            *o += s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_is_uniform_and_in_range() {
        let mut rng = Rng::new(7);
        let mut counts = [0usize; 7];
        for _ in 0..70_000 {
            counts[rng.below(7)] += 1;
        }
        // Each bucket expects 10 000; 5 sigma is about 470.
        for c in counts {
            assert!((c as i64 - 10_000).abs() < 500, "{counts:?}");
        }
    }

    #[test]
    fn percentile_matches_numpy_linear() {
        // numpy.percentile([1, 2, 3, 4], [25, 50, 90]) == [1.75, 2.5, 3.7]
        let v = [1.0, 2.0, 3.0, 4.0];
        assert!((percentile(&v, 0.25) - 1.75).abs() < 1e-12);
        assert!((percentile(&v, 0.5) - 2.5).abs() < 1e-12);
        assert!((percentile(&v, 0.9) - 3.7).abs() < 1e-12);
    }

    #[test]
    fn bootstrap_of_mean_covers_the_mean_and_is_seeded() {
        let xs: Vec<f64> = (0..500).map(|i| (i % 10) as f64).collect();
        let mean = |idx: &[usize]| idx.iter().map(|&i| xs[i]).sum::<f64>() / idx.len() as f64;
        let a = bootstrap_ci(xs.len(), 1000, 0.95, 1, mean).unwrap();
        let b = bootstrap_ci(xs.len(), 1000, 0.95, 1, mean).unwrap();
        assert_eq!(a, b);
        assert!((a.score - 4.5).abs() < 1e-12);
        assert!(a.lower < 4.5 && 4.5 < a.upper, "{a:?}");
        // Standard error of the mean is 2.87/sqrt(500) = 0.128; the 95% interval is about ±0.25.
        assert!(a.upper - a.lower > 0.3 && a.upper - a.lower < 0.7, "{a:?}");
    }

    #[test]
    fn paired_tests_separate_different_systems_and_not_equal_ones() {
        let n = 400;
        let gold: Vec<u8> = (0..n).map(|i| (i % 2) as u8).collect();
        // Candidate is right on every item; baseline on 60%.
        let cand = gold.clone();
        let base: Vec<u8> = gold.iter().enumerate().map(|(i, &g)| if i % 5 < 3 { g } else { 1 - g }).collect();
        let acc =
            |pred: &[u8], idx: &[usize]| idx.iter().filter(|&&i| pred[i] == gold[i]).count() as f64 / idx.len() as f64;
        let r = paired_bootstrap(n, 1000, 3, |s, idx| match s {
            System::Baseline => acc(&base, idx),
            System::Candidate => acc(&cand, idx),
        })
        .unwrap();
        assert!(r.p_value < 0.01, "{r:?}");
        let ar = approximate_randomization(n, 2000, 3, |swap| {
            let mut a = 0.0;
            let mut b = 0.0;
            for i in 0..n {
                let (x, y) = if swap[i] { (cand[i], base[i]) } else { (base[i], cand[i]) };
                a += f64::from(u8::from(x == gold[i]));
                b += f64::from(u8::from(y == gold[i]));
            }
            (a / n as f64, b / n as f64)
        })
        .unwrap();
        assert!(ar.p_value < 0.01, "{ar:?}");
        // Equally good systems that err on different items: no significant difference.
        let other: Vec<u8> = gold.iter().enumerate().map(|(i, &g)| if (i + 2) % 5 < 3 { g } else { 1 - g }).collect();
        let same = paired_bootstrap(n, 1000, 3, |s, idx| match s {
            System::Baseline => acc(&base, idx),
            System::Candidate => acc(&other, idx),
        })
        .unwrap();
        assert!(same.p_value > 0.3, "{same:?}");
    }
}

/// McNemar's exact test, as `statsmodels.stats.contingency_tables.mcnemar(table, exact=True)`: of the two
/// discordant counts (`table[0][1]`: A right and B wrong; `table[1][0]`: the reverse), the statistic is the
/// smaller and the p-value twice the binomial(b + c, ½) probability of a count at most that small, capped at 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct McNemar {
    pub statistic: f64,
    pub pvalue: f64,
}

pub fn mcnemar_exact(b: u64, c: u64) -> McNemar {
    let k = b.min(c);
    let n = b + c;
    // P(X <= k) for X ~ Binomial(n, 1/2): terms C(n, i) / 2^n summed in log space, so large n cannot
    // overflow; ln C(n, i) is built up from ln C(n, i - 1).
    let mut ln_terms = Vec::with_capacity(k as usize + 1);
    let mut ln_c = 0.0f64;
    for i in 0..=k {
        if i > 0 {
            ln_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        ln_terms.push(ln_c);
    }
    let top = ln_terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = ln_terms.iter().map(|t| (t - top).exp()).sum();
    let cdf = (top + sum.ln() - n as f64 * std::f64::consts::LN_2).exp();
    McNemar { statistic: k as f64, pvalue: (2.0 * cdf).min(1.0) }
}

/// McNemar's exact test of two classifiers on the same items: `a_correct[i]`, `b_correct[i]` say whether each
/// got item i right.
pub fn mcnemar_paired(a_correct: &[bool], b_correct: &[bool]) -> McNemar {
    let b = a_correct.iter().zip(b_correct).filter(|(a, b)| **a && !**b).count() as u64;
    let c = a_correct.iter().zip(b_correct).filter(|(a, b)| !**a && **b).count() as u64;
    mcnemar_exact(b, c)
}

pub(crate) const METRICS: &[crate::call::MetricInfo] = &[crate::call::MetricInfo {
    name: "mcnemar",
    reference: "statsmodels.stats.contingency_tables.mcnemar (exact=True)",
}];

pub(crate) fn dispatch(name: &str, args: &crate::json::Args) -> Option<Result<serde_json::Value>> {
    (name == "mcnemar").then(|| {
        args.check_known(&["table", "exact", "correction"])?;
        if !args.bool("exact", true)? {
            return Err(MetricError::Value(
                "mcnemar: exact=False (the chi-square approximation) is not implemented; use exact=True".into(),
            ));
        }
        let table = args.f64_matrix("table")?;
        let square = table.len() == 2 && table.iter().all(|r| r.len() == 2);
        let counts = table.iter().flatten().all(|&v| v >= 0.0 && v.fract() == 0.0 && v < 2f64.powi(53));
        if !square || !counts {
            return Err(MetricError::Value("mcnemar: table must be 2x2 of non-negative integer counts".into()));
        }
        let r = mcnemar_exact(table[0][1] as u64, table[1][0] as u64);
        Ok(serde_json::json!({ "statistic": r.statistic, "pvalue": r.pvalue }))
    })
}
