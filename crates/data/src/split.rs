//! Seeded splits, stratified k-fold, class weights and re-sampling. Everything is deterministic for a seed on
//! every platform: the generator is our own (SplitMix64), not an OS or library default.

use std::collections::BTreeMap;

use crate::error::{DataError, Result};

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast, passes BigCrush, and its output is fixed by the seed
/// alone, so a split made on one machine is the same on any other.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) (the top 53 bits).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in `0..n` without modulo bias (Lemire's multiply-and-reject). `n` must be > 0.
    pub fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as usize;
            }
        }
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// Percentages of a split: `80/10/10` is train/validation/test, `90/10` is train/validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitSpec(pub Vec<u32>);

impl SplitSpec {
    /// Parses `"80/10/10"` or `"90/10"`: two or three whole percentages that sum to 100; only the last may be 0.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| DataError::Invalid(format!("invalid split {s:?}: {why} (e.g. 80/10/10 or 90/10)"));
        let parts: Vec<u32> = s
            .split('/')
            .map(|p| p.trim().parse::<u32>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad("not whole numbers"))?;
        if !(2..=3).contains(&parts.len()) {
            return Err(bad("expected 2 or 3 parts"));
        }
        if parts.iter().sum::<u32>() != 100 {
            return Err(bad("parts must sum to 100"));
        }
        if parts[0] == 0 {
            return Err(bad("the train part must not be 0"));
        }
        Ok(SplitSpec(parts))
    }

    /// Names of the parts: train, validation[, test].
    pub fn names(&self) -> &'static [&'static str] {
        if self.0.len() == 3 {
            &["train", "validation", "test"]
        } else {
            &["train", "validation"]
        }
    }
}

/// Splits `total` into parts proportional to `weights` with largest-remainder rounding, so the parts sum to
/// `total` exactly. Ties go to the earlier part.
fn apportion(total: usize, weights: &[u32]) -> Vec<usize> {
    let sum: u64 = weights.iter().map(|&w| w as u64).sum();
    let exact: Vec<(usize, u64)> = weights
        .iter()
        .map(|&w| {
            let num = total as u64 * w as u64;
            ((num / sum) as usize, num % sum)
        })
        .collect();
    let mut out: Vec<usize> = exact.iter().map(|e| e.0).collect();
    let mut left = total - out.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| exact[b].1.cmp(&exact[a].1).then(a.cmp(&b)));
    for &i in order.iter().cycle() {
        if left == 0 {
            break;
        }
        out[i] += 1;
        left -= 1;
    }
    out
}

/// Seeded random split of `n` items: index lists per part, each in ascending (file) order.
pub fn random_split(n: usize, spec: &SplitSpec, seed: u64) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..n).collect();
    Rng::new(seed).shuffle(&mut idx);
    let sizes = apportion(n, &spec.0);
    let mut parts = Vec::with_capacity(sizes.len());
    let mut start = 0;
    for s in sizes {
        let mut p = idx[start..start + s].to_vec();
        p.sort_unstable();
        parts.push(p);
        start += s;
    }
    parts
}

/// Seeded stratified split in the spirit of scikit-learn's `StratifiedShuffleSplit`: part sizes are fixed
/// first (largest remainder over all `n`), then every class is split in proportion, its rounding chosen so
/// that the class totals and the part totals both come out exact. `strata[i]` is item `i`'s class.
/// Index lists come back in ascending (file) order.
pub fn stratified_split<K: Ord + Clone>(strata: &[K], spec: &SplitSpec, seed: u64) -> Vec<Vec<usize>> {
    let n = strata.len();
    let k = spec.0.len();
    let sum: u64 = spec.0.iter().map(|&w| w as u64).sum();
    let targets = apportion(n, &spec.0);
    let mut classes: BTreeMap<K, Vec<usize>> = BTreeMap::new();
    for (i, s) in strata.iter().enumerate() {
        classes.entry(s.clone()).or_default().push(i);
    }
    let members: Vec<Vec<usize>> = classes.into_values().collect();
    // Floors per (class, part) and the fractional remainders that decide who gets the leftover items.
    let mut alloc: Vec<Vec<usize>> = Vec::with_capacity(members.len());
    let mut rema: Vec<(u64, usize, usize)> = Vec::new();
    let mut deficit = targets.clone();
    let mut left: Vec<usize> = Vec::with_capacity(members.len());
    for (c, m) in members.iter().enumerate() {
        let mut row = Vec::with_capacity(k);
        for (p, &w) in spec.0.iter().enumerate() {
            let num = m.len() as u64 * w as u64;
            let fl = (num / sum) as usize;
            row.push(fl);
            deficit[p] -= fl;
            rema.push((num % sum, c, p));
        }
        left.push(m.len() - row.iter().sum::<usize>());
        alloc.push(row);
    }
    // Largest remainders first; ties to the bigger class, then the earlier part, then the earlier class.
    rema.sort_by(|a, b| {
        b.0.cmp(&a.0).then(members[b.1].len().cmp(&members[a.1].len())).then(a.2.cmp(&b.2)).then(a.1.cmp(&b.1))
    });
    for &(_, c, p) in &rema {
        if left[c] > 0 && deficit[p] > 0 {
            alloc[c][p] += 1;
            left[c] -= 1;
            deficit[p] -= 1;
        }
    }
    // Whatever is still unplaced goes to parts still short; the totals agree, so this always finishes.
    for c in 0..members.len() {
        for p in 0..k {
            let t = left[c].min(deficit[p]);
            alloc[c][p] += t;
            left[c] -= t;
            deficit[p] -= t;
        }
    }
    let mut rng = Rng::new(seed);
    let mut parts: Vec<Vec<usize>> = targets.iter().map(|&t| Vec::with_capacity(t)).collect();
    for (c, m) in members.iter().enumerate() {
        let mut m = m.clone();
        rng.shuffle(&mut m);
        let mut start = 0;
        for p in 0..k {
            parts[p].extend_from_slice(&m[start..start + alloc[c][p]]);
            start += alloc[c][p];
        }
    }
    for p in &mut parts {
        p.sort_unstable();
    }
    parts
}

/// One fold of cross-validation: indices to train on and to evaluate on, each ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fold {
    pub train: Vec<usize>,
    pub test: Vec<usize>,
}

/// Seeded stratified k-fold (like scikit-learn's `StratifiedKFold(shuffle=True)` in spirit): each class is
/// shuffled, classes are laid end to end, and item `j` of that order goes to fold `j % k`; so every fold holds
/// each class within one item of its share, and fold sizes differ by at most one.
pub fn stratified_kfold<K: Ord + Clone>(strata: &[K], k: usize, seed: u64) -> Result<Vec<Fold>> {
    let n = strata.len();
    if k < 2 || k > n {
        return Err(DataError::Invalid(format!("k-fold needs 2 <= k <= number of examples ({n}), got k = {k}")));
    }
    let mut classes: BTreeMap<K, Vec<usize>> = BTreeMap::new();
    for (i, s) in strata.iter().enumerate() {
        classes.entry(s.clone()).or_default().push(i);
    }
    let mut rng = Rng::new(seed);
    let mut fold_of = vec![0usize; n];
    let mut j = 0;
    for mut m in classes.into_values() {
        rng.shuffle(&mut m);
        for i in m {
            fold_of[i] = j % k;
            j += 1;
        }
    }
    Ok((0..k)
        .map(|f| {
            let (test, train): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| fold_of[i] == f);
            Fold { train, test }
        })
        .collect())
}

/// `class_weight="balanced"` as scikit-learn's `compute_class_weight`: `n_samples / (n_classes * bincount(y))`.
/// `y` holds class ids `< n_classes`; a class with no sample is an error, as in scikit-learn.
pub fn balanced_class_weights(y: &[usize], n_classes: usize) -> Result<Vec<f64>> {
    let mut counts = vec![0usize; n_classes];
    for &c in y {
        if c >= n_classes {
            return Err(DataError::Invalid(format!("class id {c} out of range for {n_classes} classes")));
        }
        counts[c] += 1;
    }
    if let Some(c) = counts.iter().position(|&n| n == 0) {
        return Err(DataError::Invalid(format!("class id {c} has no examples: balanced class weights are undefined")));
    }
    let n = y.len() as f64;
    Ok(counts.iter().map(|&b| n / (n_classes as f64 * b as f64)).collect())
}

fn by_class(y: &[usize]) -> BTreeMap<usize, Vec<usize>> {
    let mut m: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, &c) in y.iter().enumerate() {
        m.entry(c).or_default().push(i);
    }
    m
}

/// Random over-sampling: every class is topped up to the majority count by drawing its items with replacement
/// (all originals are kept). Returns indices into `y`, ascending.
pub fn oversample(y: &[usize], seed: u64) -> Vec<usize> {
    let classes = by_class(y);
    let max = classes.values().map(Vec::len).max().unwrap_or(0);
    let mut rng = Rng::new(seed);
    let mut out: Vec<usize> = (0..y.len()).collect();
    for m in classes.values() {
        for _ in m.len()..max {
            out.push(m[rng.below(m.len())]);
        }
    }
    out.sort_unstable();
    out
}

/// Random under-sampling: every class is cut to the minority count by drawing without replacement.
/// Returns indices into `y`, ascending.
pub fn undersample(y: &[usize], seed: u64) -> Vec<usize> {
    let classes = by_class(y);
    let min = classes.values().map(Vec::len).min().unwrap_or(0);
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(min * classes.len());
    for mut m in classes.into_values() {
        rng.shuffle(&mut m);
        out.extend_from_slice(&m[..min]);
    }
    out.sort_unstable();
    out
}
