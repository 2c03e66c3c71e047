//! Choosing N examples out of a larger set: a seeded random sample, a sample balanced over classes or over
//! length bins, the k-center greedy cover of an embedding space, or the examples a model finds hardest (or
//! easiest) by their loss. Deterministic for a seed on every machine (the crate's own [`Rng`]); the chosen indices
//! are returned in their original order. Embeddings and losses come from a model; this crate only chooses.

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

/// k-center greedy (Sener & Savarese, 2018, "Active Learning for Convolutional Neural Networks: A Core-Set
/// Approach"): starting from one seeded random point, repeatedly add the point farthest (Euclidean) from every
/// point chosen so far, so that the `n` chosen points cover the set with the smallest radius greedy can reach.
/// Ties go to the lowest index. O(total · n · dim).
pub fn k_center_greedy(points: &[Vec<f32>], n: usize, seed: u64) -> Result<Vec<usize>> {
    check_n(points.len(), n)?;
    let dim = points[0].len();
    if let Some(i) = points.iter().position(|p| p.len() != dim) {
        return Err(DataError::Invalid(format!("embedding {i} has {} values, the first has {dim}", points[i].len())));
    }
    if let Some(i) = points.iter().position(|p| p.iter().any(|v| !v.is_finite())) {
        return Err(DataError::Invalid(format!("embedding {i} has a value that is not finite")));
    }
    let dist2 = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>();
    let first = Rng::new(seed).below(points.len());
    let mut chosen = vec![first];
    // Squared distance of each point to its nearest chosen point; a chosen point is out of the running (-inf),
    // so that equal points cannot make it chosen twice.
    let mut nearest: Vec<f64> = points.iter().map(|p| dist2(p, &points[first])).collect();
    nearest[first] = f64::NEG_INFINITY;
    while chosen.len() < n {
        let (far, _) = nearest.iter().enumerate().fold(
            (0, f64::NEG_INFINITY),
            |best, (i, &d)| {
                if d > best.1 {
                    (i, d)
                } else {
                    best
                }
            },
        );
        chosen.push(far);
        nearest[far] = f64::NEG_INFINITY;
        let c = &points[far];
        for (d, p) in nearest.iter_mut().zip(points) {
            *d = d.min(dist2(p, c));
        }
    }
    chosen.sort_unstable();
    Ok(chosen)
}

/// The `n` examples with the highest loss (`highest`), or the lowest, under a model, class by class: each class
/// of `classes` gets the share that class-balanced selection gives it ([`balanced_quotas`]) and its hardest (or
/// easiest) examples fill it, so that a model that errs on one class does not make the subset one class. Ties go
/// to the lower index.
pub fn select_by_loss<K: Ord + Clone>(losses: &[f64], classes: &[K], n: usize, highest: bool) -> Result<Vec<usize>> {
    check_n(losses.len(), n)?;
    if classes.len() != losses.len() {
        return Err(DataError::Invalid(format!("{} losses for {} examples", losses.len(), classes.len())));
    }
    if let Some(i) = losses.iter().position(|l| l.is_nan()) {
        return Err(DataError::Invalid(format!("the loss of example {i} is NaN")));
    }
    let mut groups: BTreeMap<K, Vec<usize>> = BTreeMap::new();
    for (i, k) in classes.iter().enumerate() {
        groups.entry(k.clone()).or_default().push(i);
    }
    let sizes: BTreeMap<K, usize> = groups.iter().map(|(k, v)| (k.clone(), v.len())).collect();
    let quotas = balanced_quotas(&sizes, n);
    let mut out = Vec::with_capacity(n);
    for (k, mut members) in groups {
        members.sort_by(|&a, &b| {
            let o = losses[a].total_cmp(&losses[b]);
            (if highest { o.reverse() } else { o }).then(a.cmp(&b))
        });
        members.truncate(quotas[&k]);
        out.extend(members);
    }
    out.sort_unstable();
    Ok(out)
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

    #[test]
    fn k_center_adds_the_farthest_point_each_time() {
        // Two tight clusters and one outlier: three centers take one of each.
        let pts: Vec<Vec<f32>> = [[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [5.0, 5.0], [5.1, 5.0], [20.0, 0.0]]
            .iter()
            .map(|p| p.to_vec())
            .collect();
        for seed in 0..10 {
            let c = k_center_greedy(&pts, 3, seed).expect("k-center");
            assert!(c.iter().any(|&i| i < 3) && c.iter().any(|&i| (3..5).contains(&i)) && c.contains(&5), "{c:?}");
        }
        // Brute force on a larger random set: every pick after the first is a farthest point from those before.
        let mut rng = Rng::new(3);
        let pts: Vec<Vec<f32>> = (0..60).map(|_| (0..4).map(|_| rng.uniform() as f32).collect()).collect();
        let d = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>();
        let picked = k_center_greedy(&pts, 10, 9).expect("k-center");
        assert_eq!(picked.len(), 10);
        // The covering radius of the greedy set is at most twice the best (the 2-approximation), and no point
        // left out is farther from the set than the closest pair of chosen points (each pick was farthest).
        let radius =
            pts.iter().map(|p| picked.iter().map(|&c| d(p, &pts[c])).fold(f64::INFINITY, f64::min)).fold(0.0, f64::max);
        let min_pair = picked
            .iter()
            .flat_map(|&a| picked.iter().filter(move |&&b| b != a).map(move |&b| (a, b)))
            .map(|(a, b)| d(&pts[a], &pts[b]))
            .fold(f64::INFINITY, f64::min);
        assert!(radius <= min_pair + 1e-12, "radius {radius} > min pair {min_pair}");
        assert!(k_center_greedy(&pts, 61, 0).is_err());
        // Equal points: every index at most once, however many are asked for.
        let same = vec![vec![1.0f32, 2.0]; 5];
        assert_eq!(k_center_greedy(&same, 5, 2).expect("k-center"), vec![0, 1, 2, 3, 4]);
        assert!(k_center_greedy(&[vec![0.0], vec![0.0, 1.0]], 1, 0).is_err());
        assert!(k_center_greedy(&[vec![f32::NAN]], 1, 0).is_err());
    }

    #[test]
    fn loss_selection_keeps_the_extremes_of_each_class_in_file_order() {
        let losses = [0.5, 2.0, 0.1, 2.0, 1.0];
        let one = ["a"; 5];
        assert_eq!(select_by_loss(&losses, &one, 2, true).expect("loss"), vec![1, 3]);
        assert_eq!(select_by_loss(&losses, &one, 3, true).expect("loss"), vec![1, 3, 4]);
        assert_eq!(select_by_loss(&losses, &one, 2, false).expect("loss"), vec![0, 2]);
        // Two classes: the hardest of each, not the four hardest overall (1, 3, 4 and 0 are all "a" but 0).
        let two = ["b", "a", "b", "a", "a"];
        assert_eq!(select_by_loss(&losses, &two, 2, true).expect("loss"), vec![0, 1]);
        assert_eq!(select_by_loss(&losses, &two, 4, true).expect("loss"), vec![0, 1, 2, 3]);
        assert_eq!(select_by_loss(&losses, &two, 2, false).expect("loss"), vec![2, 4]);
        assert!(select_by_loss(&[f64::NAN], &["a"], 1, true).is_err());
        assert!(select_by_loss(&[1.0, 2.0], &["a"], 1, true).is_err());
    }
}
