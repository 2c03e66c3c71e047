//! Pruners on the intermediate validation metric (one value per evaluation, keyed by global step): Optuna's
//! `MedianPruner`, `SuccessiveHalvingPruner` and `HyperbandPruner`, with their arguments and defaults.

use std::collections::BTreeMap;

use super::{Direction, FrozenTrial, TrialState};

/// When to stop a trial early.
#[derive(Debug, Clone, PartialEq)]
pub enum Pruner {
    None,
    /// Optuna's `MedianPruner`: prune when the trial's best value so far is worse than the median of the complete
    /// trials' values at the same step. No pruning before `n_startup_trials` trials are complete, before step
    /// `n_warmup_steps`, or off the `interval_steps` grid; at least `n_min_trials` values at the step are needed.
    Median {
        n_startup_trials: usize,
        n_warmup_steps: u64,
        interval_steps: u64,
        n_min_trials: usize,
    },
    /// Optuna's `SuccessiveHalvingPruner` (asynchronous successive halving): rung `r` is reached at step
    /// `min_resource * reduction_factor^(min_early_stopping_rate + r)`; a trial goes on only when its value there
    /// is in the top `1 / reduction_factor` of the values recorded at that rung. `min_resource = None` ("auto")
    /// is `max(last step of the longest complete trial / 100, 1)` once a trial is complete.
    SuccessiveHalving {
        min_resource: Option<u64>,
        reduction_factor: u64,
        min_early_stopping_rate: u32,
    },
    /// Optuna's `HyperbandPruner`: `n_brackets = floor(log_rf(max_resource / min_resource)) + 1` successive-
    /// halving brackets, bracket `b` with `min_early_stopping_rate = b`; a trial joins the bracket that
    /// `crc32("{study_name}_{number}")` falls in, brackets weighted by Hyperband's trial budgets, and is compared
    /// only with the trials of its bracket. `max_resource = None` ("auto") is one more than the last step of the
    /// longest finished (complete or pruned) trial, once there is one.
    Hyperband {
        min_resource: u64,
        max_resource: Option<u64>,
        reduction_factor: u64,
        study_name: String,
    },
}

/// Hyperband's brackets: how many, and each one's share of the trials (Optuna's
/// `_calculate_trial_allocation_budget`: `ceil(n_brackets * rf^s / (s + 1))` with `s = n_brackets - 1 - b`).
pub fn hyperband_budgets(min_resource: u64, max_resource: u64, reduction_factor: u64) -> Vec<u64> {
    // As Python's math.log(x, base): log(x) / log(base), in f64.
    let ratio = max_resource as f64 / min_resource.max(1) as f64;
    let n = ((ratio.ln() / (reduction_factor as f64).ln()).floor() as i64 + 1).max(1) as u64;
    (0..n)
        .map(|b| {
            let s = n - 1 - b;
            (n as f64 * (reduction_factor as f64).powi(s as i32) / (s + 1) as f64).ceil() as u64
        })
        .collect()
}

/// The Hyperband bracket of trial `number` (Optuna's `_get_bracket_id`).
pub fn hyperband_bracket(study_name: &str, number: u64, budgets: &[u64]) -> usize {
    let total: u64 = budgets.iter().sum();
    if total == 0 {
        return 0;
    }
    let mut n = crc32fast::hash(format!("{study_name}_{number}").as_bytes()) as i64 % total as i64;
    for (b, &budget) in budgets.iter().enumerate() {
        n -= budget as i64;
        if n < 0 {
            return b;
        }
    }
    budgets.len() - 1
}

impl Pruner {
    pub fn median() -> Self {
        Pruner::Median { n_startup_trials: 5, n_warmup_steps: 0, interval_steps: 1, n_min_trials: 1 }
    }

    pub fn successive_halving() -> Self {
        Pruner::SuccessiveHalving { min_resource: None, reduction_factor: 4, min_early_stopping_rate: 0 }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Pruner::None => "none",
            Pruner::Median { .. } => "median",
            Pruner::SuccessiveHalving { .. } => "successive_halving",
            Pruner::Hyperband { .. } => "hyperband",
        }
    }

    /// Whether `trial` (with its intermediate values up to its last step) should stop, given the other trials
    /// of the study. Successive halving returns the rung values to record on the trial (`completed_rung_K`).
    pub fn prune(
        &self,
        trial: &FrozenTrial,
        others: &[FrozenTrial],
        direction: Direction,
    ) -> (bool, Vec<(String, f64)>) {
        let Some((&step, &value)) = trial.intermediate.iter().next_back() else { return (false, Vec::new()) };
        match *self {
            Pruner::None => (false, Vec::new()),
            Pruner::Hyperband { min_resource, max_resource, reduction_factor, ref study_name } => {
                let max_resource = match max_resource {
                    Some(m) => m,
                    None => {
                        let finished = others
                            .iter()
                            .filter(|t| matches!(t.state, TrialState::Complete | TrialState::Pruned))
                            .filter_map(|t| t.intermediate.keys().next_back().copied())
                            .max();
                        match finished {
                            Some(l) => l + 1,
                            None => return (false, Vec::new()),
                        }
                    }
                };
                let budgets = hyperband_budgets(min_resource, max_resource, reduction_factor);
                let bracket = hyperband_bracket(study_name, trial.number, &budgets);
                let same: Vec<FrozenTrial> = others
                    .iter()
                    .filter(|t| hyperband_bracket(study_name, t.number, &budgets) == bracket)
                    .cloned()
                    .collect();
                let sha = Pruner::SuccessiveHalving {
                    min_resource: Some(min_resource),
                    reduction_factor,
                    min_early_stopping_rate: bracket as u32,
                };
                sha.prune(trial, &same, direction)
            }
            Pruner::Median { n_startup_trials, n_warmup_steps, interval_steps, n_min_trials } => {
                let complete: Vec<&FrozenTrial> =
                    others.iter().filter(|t| t.state == TrialState::Complete && t.number != trial.number).collect();
                if complete.is_empty() || complete.len() < n_startup_trials || step < n_warmup_steps {
                    return (false, Vec::new());
                }
                // Optuna's _is_first_in_interval_step.
                let interval = interval_steps.max(1);
                let nearest_lower = (step - n_warmup_steps) / interval * interval + n_warmup_steps;
                let second_last = trial.intermediate.keys().filter(|&&s| s != step).max().map_or(-1, |&s| s as i64);
                if second_last >= nearest_lower as i64 {
                    return (false, Vec::new());
                }
                let vals = trial.intermediate.values().filter(|v| !v.is_nan());
                let best = match direction {
                    Direction::Maximize => vals.fold(f64::NAN, |a, &b| a.max(b)),
                    Direction::Minimize => vals.fold(f64::NAN, |a, &b| a.min(b)),
                };
                if best.is_nan() {
                    return (true, Vec::new());
                }
                let at: Vec<f64> = complete
                    .iter()
                    .filter_map(|t| t.intermediate.get(&step).copied())
                    .filter(|v| !v.is_nan())
                    .collect();
                if at.len() < n_min_trials.max(1) {
                    return (false, Vec::new());
                }
                let p = percentile(&at, 50.0);
                let prune = match direction {
                    Direction::Maximize => best < p,
                    Direction::Minimize => best > p,
                };
                (prune, Vec::new())
            }
            Pruner::SuccessiveHalving { min_resource, reduction_factor, min_early_stopping_rate } => {
                let min_resource = match min_resource {
                    Some(m) => m,
                    None => {
                        let last = others
                            .iter()
                            .filter(|t| t.state == TrialState::Complete)
                            .filter_map(|t| t.intermediate.keys().next_back().copied())
                            .max();
                        match last {
                            Some(l) => (l / 100).max(1),
                            None => return (false, Vec::new()),
                        }
                    }
                };
                let mut rung = (0..).take_while(|r| trial.attrs.contains_key(&rung_key(*r))).count() as u32;
                let mut record = Vec::new();
                loop {
                    let promotion =
                        min_resource.saturating_mul(reduction_factor.saturating_pow(min_early_stopping_rate + rung));
                    if step < promotion {
                        return (false, record);
                    }
                    if value.is_nan() {
                        return (true, record);
                    }
                    let key = rung_key(rung);
                    record.push((key.clone(), value));
                    let mut competing: Vec<f64> = others
                        .iter()
                        .filter(|t| t.number != trial.number)
                        .filter_map(|t| t.attrs.get(&key).copied())
                        .collect();
                    competing.push(value);
                    competing.sort_by(f64::total_cmp);
                    let idx = (competing.len() / reduction_factor.max(1) as usize).saturating_sub(1);
                    let promotable = match direction {
                        Direction::Maximize => value >= competing[competing.len() - 1 - idx],
                        Direction::Minimize => value <= competing[idx],
                    };
                    if !promotable {
                        return (true, record);
                    }
                    rung += 1;
                }
            }
        }
    }
}

/// The trial attribute under which successive halving records a trial's value at rung `r`.
pub fn rung_key(r: u32) -> String {
    format!("completed_rung_{r}")
}

/// `numpy.percentile` with linear interpolation.
pub fn percentile(values: &[f64], q: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q / 100.0 * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Intermediate values as a map (helper for tests and callers).
pub fn curve(points: &[(u64, f64)]) -> BTreeMap<u64, f64> {
    points.iter().copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(number: u64, pts: &[(u64, f64)]) -> FrozenTrial {
        FrozenTrial {
            number,
            state: TrialState::Complete,
            value: pts.last().map(|p| p.1),
            intermediate: curve(pts),
            ..Default::default()
        }
    }

    #[test]
    fn median_prunes_below_the_median_at_the_same_step() {
        let others: Vec<FrozenTrial> =
            (0..5).map(|i| done(i, &[(10, 0.5 + 0.1 * i as f64), (20, 0.6 + 0.1 * i as f64)])).collect();
        let p = Pruner::median();
        let mut t = FrozenTrial { number: 9, state: TrialState::Running, ..Default::default() };
        t.intermediate = curve(&[(10, 0.69)]);
        // Median at step 10 is 0.7: 0.69 is worse when maximising, better when minimising.
        assert!(p.prune(&t, &others, Direction::Maximize).0);
        assert!(!p.prune(&t, &others, Direction::Minimize).0);
        t.intermediate = curve(&[(10, 0.71)]);
        assert!(!p.prune(&t, &others, Direction::Maximize).0);
        // No completed trial has step 15: nothing to compare with.
        t.intermediate = curve(&[(15, 0.0)]);
        assert!(!p.prune(&t, &others, Direction::Maximize).0);
        // Fewer complete trials than n_startup_trials: never prune.
        assert!(
            !p.prune(
                &FrozenTrial { intermediate: curve(&[(10, 0.0)]), ..t.clone() },
                &others[..4],
                Direction::Maximize
            )
            .0
        );
        // Warm-up and interval.
        let warm = Pruner::Median { n_startup_trials: 1, n_warmup_steps: 15, interval_steps: 1, n_min_trials: 1 };
        t.intermediate = curve(&[(10, 0.0)]);
        assert!(!warm.prune(&t, &others, Direction::Maximize).0);
        t.intermediate = curve(&[(10, 0.0), (20, 0.0)]);
        assert!(warm.prune(&t, &others, Direction::Maximize).0);
        let every20 = Pruner::Median { n_startup_trials: 1, n_warmup_steps: 0, interval_steps: 20, n_min_trials: 1 };
        // Step 20 is the first report in the interval [20, 40): checked (and worse than the median there).
        t.intermediate = curve(&[(10, 0.0), (20, 0.0)]);
        assert!(every20.prune(&t, &others, Direction::Maximize).0);
        // Step 30 follows a report at 20 in the same interval: not checked.
        t.intermediate = curve(&[(20, 0.0), (30, 0.0)]);
        assert!(!every20.prune(&t, &others, Direction::Maximize).0);
    }

    #[test]
    fn percentile_interpolates_like_numpy() {
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.5);
        assert_eq!(percentile(&[5.0, 1.0, 3.0], 50.0), 3.0);
        assert!((percentile(&[1.0, 2.0, 3.0, 4.0], 30.0) - 1.9).abs() < 1e-12);
    }

    #[test]
    fn successive_halving_keeps_the_top_quarter_per_rung() {
        let p = Pruner::SuccessiveHalving { min_resource: Some(1), reduction_factor: 4, min_early_stopping_rate: 0 };
        let mut others = Vec::new();
        for (i, v) in [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3].iter().enumerate() {
            let mut t = done(i as u64, &[(1, *v)]);
            t.attrs.insert(rung_key(0), *v);
            others.push(t);
        }
        // 8 values at rung 0 -> index 8/4 - 1 = 1: promotable when >= the second best (0.8).
        let t = FrozenTrial { number: 20, intermediate: curve(&[(1, 0.85)]), ..Default::default() };
        let (prune, rec) = p.prune(&t, &others, Direction::Maximize);
        assert!(!prune);
        assert_eq!(rec, vec![(rung_key(0), 0.85)]);
        let t = FrozenTrial { number: 21, intermediate: curve(&[(1, 0.75)]), ..Default::default() };
        assert!(p.prune(&t, &others, Direction::Maximize).0);
        // Before the first rung step nothing is decided; "auto" needs a complete trial.
        let late = Pruner::SuccessiveHalving { min_resource: Some(4), reduction_factor: 4, min_early_stopping_rate: 0 };
        assert!(!late.prune(&t, &others, Direction::Maximize).0);
        assert!(!Pruner::successive_halving().prune(&t, &[], Direction::Maximize).0);
    }
}
