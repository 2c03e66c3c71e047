//! Choosing N examples out of a larger set: a seeded random sample, or a sample balanced over classes or over
//! length bins. Deterministic for a seed on every machine (the crate's own [`Rng`]); the chosen indices are
//! returned in their original order.

use std::collections::BTreeMap;

use crate::error::{DataError, Result};
use crate::split::Rng;

/// `n` of `total` indices, uniformly at random without replacement, ascending.
pub fn select_random(total: usize, n: usize, seed: u64) -> Result<Vec<usize>> {
    check_n(total, n)?;
    let mut idx: Vec<usize> = (0..total).collect();
    Rng::new(seed).shuffle(&mut idx);
    idx.truncate(n);
    idx.sort_unstable();
    Ok(idx)
}

fn check_n(total: usize, n: usize) -> Result<()> {
    if n == 0 || n > total {
        return Err(DataError::Invalid(format!("cannot select {n} of {total} examples (need 1..={total})")));
    }
    Ok(())
}

/// How many to take from each group so that the counts are as equal as possible: every group gets
/// `min(size, level)` for the highest level that fits in `n`, and what is left goes one each to the groups that
/// still have examples, in key order.
pub fn balanced_quotas<K: Ord + Clone>(sizes: &BTreeMap<K, usize>, n: usize) -> BTreeMap<K, usize> {
    let total: usize = sizes.values().sum();
    let n = n.min(total);
    let fits = |level: usize| sizes.values().map(|&c| c.min(level)).sum::<usize>() <= n;
    let (mut lo, mut hi) = (0, sizes.values().copied().max().unwrap_or(0));
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let mut quotas: BTreeMap<K, usize> = sizes.iter().map(|(k, &c)| (k.clone(), c.min(lo))).collect();
    let mut left = n - quotas.values().sum::<usize>();
    for (k, &c) in sizes {
        if left == 0 {
            break;
        }
        let q = quotas.get_mut(k).expect("same keys");
        if c > *q {
            *q += 1;
            left -= 1;
        }
    }
    quotas
}

/// `n` indices balanced over the groups `keys[i]` (class-balanced sampling when the keys are labels): each
/// group's quota from [`balanced_quotas`], drawn at random within the group (seeded). Ascending.
pub fn select_balanced<K: Ord + Clone>(keys: &[K], n: usize, seed: u64) -> Result<Vec<usize>> {
    check_n(keys.len(), n)?;
    let mut groups: BTreeMap<K, Vec<usize>> = BTreeMap::new();
    for (i, k) in keys.iter().enumerate() {
        groups.entry(k.clone()).or_default().push(i);
    }
    let sizes: BTreeMap<K, usize> = groups.iter().map(|(k, v)| (k.clone(), v.len())).collect();
    let quotas = balanced_quotas(&sizes, n);
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(n);
    for (k, mut members) in groups {
        rng.shuffle(&mut members);
        members.truncate(quotas[&k]);
        out.extend(members);
    }
    out.sort_unstable();
    Ok(out)
}

/// Length bins: each length's bin among `bins` equal-count (quantile) bins of the sorted lengths; equal lengths
/// share a bin.
pub fn length_bins(lengths: &[usize], bins: usize) -> Result<Vec<usize>> {
    if bins == 0 {
        return Err(DataError::Invalid("the number of length bins must be at least 1".into()));
    }
    let mut sorted = lengths.to_vec();
    sorted.sort_unstable();
    // Upper edges: the length at each quantile.
    let edges: Vec<usize> =
        (1..bins).map(|b| sorted[(b * sorted.len() / bins).min(sorted.len().saturating_sub(1))]).collect();
    Ok(lengths.iter().map(|l| edges.iter().filter(|&&e| *l >= e).count()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_fill_small_groups_first() {
        let sizes: BTreeMap<&str, usize> = [("a", 2), ("b", 10), ("c", 10)].into_iter().collect();
        let q = balanced_quotas(&sizes, 12);
        assert_eq!(q.values().copied().collect::<Vec<_>>(), vec![2, 5, 5]);
        let q = balanced_quotas(&sizes, 13);
        assert_eq!(q.values().copied().collect::<Vec<_>>(), vec![2, 6, 5]);
        let q = balanced_quotas(&sizes, 3);
        assert_eq!(q.values().copied().collect::<Vec<_>>(), vec![1, 1, 1]);
    }

    #[test]
    fn balanced_and_random_selection() {
        let keys = ["pos", "pos", "pos", "pos", "neg", "pos", "neg", "pos"];
        let s = select_balanced(&keys, 4, 1).expect("select");
        assert_eq!(s.len(), 4);
        assert_eq!(s.iter().filter(|&&i| keys[i] == "neg").count(), 2);
        assert_eq!(s, select_balanced(&keys, 4, 1).expect("select"));
        let r = select_random(8, 3, 5).expect("select");
        assert_eq!(r.len(), 3);
        assert!(r.windows(2).all(|w| w[0] < w[1]));
        assert!(select_random(8, 9, 5).is_err());
        assert!(select_random(8, 0, 5).is_err());
    }

    #[test]
    fn length_bins_are_quantiles() {
        let lengths = [1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(length_bins(&lengths, 2).expect("bins"), vec![0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(length_bins(&lengths, 4).expect("bins"), vec![0, 0, 1, 1, 2, 2, 3, 3]);
        assert_eq!(length_bins(&[3, 3, 3], 3).expect("bins"), vec![2, 2, 2]);
    }
}
