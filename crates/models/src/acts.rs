//! Per-layer activation sets of a workspace, shared by every architecture: a training workspace keeps one set
//! per layer for the backward pass; a forward-only (inference) workspace keeps two and uses them in turn, since
//! a layer only reads the previous layer's output.

/// How many activation sets a workspace for `layers` layers holds.
pub(crate) fn sets(layers: usize, inference: bool) -> usize {
    if inference {
        layers.min(2)
    } else {
        layers
    }
}

/// Layer `li`'s activation set and the previous layer's (its input; `None` for layer 0), with one set per layer
/// or two used in turn.
pub(crate) fn layer_pair<T>(acts: &mut [T], li: usize) -> (Option<&T>, &mut T) {
    let k = acts.len();
    if li == 0 {
        return (None, &mut acts[0]);
    }
    let (cur, prev) = (li % k, (li - 1) % k);
    if prev < cur {
        let (lo, hi) = acts.split_at_mut(cur);
        (Some(&lo[prev]), &mut hi[0])
    } else {
        let (lo, hi) = acts.split_at_mut(prev);
        (Some(&hi[0]), &mut lo[cur])
    }
}

/// The activation set of the last of `layers` layers (`None` without layers).
pub(crate) fn last<T>(acts: &[T], layers: usize) -> Option<&T> {
    layers.checked_sub(1).and_then(|li| acts.get(li % acts.len().max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_sets_alternate_and_one_per_layer_is_direct() {
        let mut two = [0usize, 0];
        for li in 0..5 {
            let (prev, cur) = layer_pair(&mut two, li);
            assert_eq!(prev.copied(), (li > 0).then(|| li - 1));
            *cur = li;
        }
        assert_eq!(last(&two, 5), Some(&4));
        let mut all = [0usize; 4];
        for li in 0..4 {
            let (prev, cur) = layer_pair(&mut all, li);
            assert_eq!(prev.copied(), (li > 0).then(|| li - 1));
            *cur = li;
        }
        assert_eq!(all, [0, 1, 2, 3]);
        assert_eq!(last(&all, 4), Some(&3));
        assert_eq!(last::<usize>(&[], 0), None);
        assert_eq!((sets(6, true), sets(6, false), sets(1, true)), (2, 6, 1));
    }
}
