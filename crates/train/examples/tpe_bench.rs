//! Our TPE (and random) sampler on standard test functions, for `scripts/bench/tpe.sh`, which runs Optuna's
//! `TPESampler` on the same functions and compares the median best-so-far curves.
//!
//! cargo run --release -p finetune-train --example tpe_bench -- --sampler tpe --seeds 10 --trials 50
//!
//! Prints one JSON line per (function, seed): `{"function", "seed", "sampler", "best": [best-so-far per trial]}`.
//! For the noisy quadratic the sampler sees noisy values; the curve is the noise-free value of the incumbent.

use std::collections::BTreeMap;
use std::f64::consts::PI;

use finetune_data::split::Rng;
use finetune_train::sweep::{Direction, Distribution, FrozenTrial, Sampler, SearchSpace, TpeSettings, TrialState};

fn branin(x: &[f64]) -> f64 {
    let (a, b, c, r, s, t) = (1.0, 5.1 / (4.0 * PI * PI), 5.0 / PI, 6.0, 10.0, 1.0 / (8.0 * PI));
    a * (x[1] - b * x[0] * x[0] + c * x[0] - r).powi(2) + s * (1.0 - t) * x[0].cos() + s
}

fn hartmann6(x: &[f64]) -> f64 {
    const ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
    const A: [[f64; 6]; 4] = [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ];
    const P: [[f64; 6]; 4] = [
        [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
        [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
        [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
        [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
    ];
    -(0..4).map(|i| ALPHA[i] * (-(0..6).map(|j| A[i][j] * (x[j] - P[i][j]).powi(2)).sum::<f64>()).exp()).sum::<f64>()
}

fn quadratic(x: &[f64]) -> f64 {
    x.iter().map(|v| (v - 1.0).powi(2)).sum()
}

fn space(bounds: &[(f64, f64)]) -> SearchSpace {
    let mut s = SearchSpace::default();
    for (i, &(low, high)) in bounds.iter().enumerate() {
        s.params.insert(format!("x{i}"), Distribution::Float { low, high, log: false, step: None });
    }
    s
}

fn normal(rng: &mut Rng) -> f64 {
    let (u, v) = (rng.uniform().max(1e-300), rng.uniform());
    (-2.0 * u.ln()).sqrt() * (2.0 * PI * v).cos()
}

type Function = (&'static str, fn(&[f64]) -> f64, Vec<(f64, f64)>, f64);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |k: &str, d: &str| -> String {
        args.iter().position(|a| a == k).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| d.to_string())
    };
    let sampler_name = get("--sampler", "tpe");
    let seeds: u64 = get("--seeds", "10").parse().unwrap_or(10);
    let n: u64 = get("--trials", "50").parse().unwrap_or(50);
    let functions: Vec<Function> = vec![
        ("branin", branin, vec![(-5.0, 10.0), (0.0, 15.0)], 0.0),
        ("hartmann6", hartmann6, vec![(0.0, 1.0); 6], 0.0),
        ("noisy_quadratic", quadratic, vec![(-5.0, 5.0); 4], 0.5),
    ];
    for (name, f, bounds, noise) in &functions {
        let sp = space(bounds);
        for seed in 0..seeds {
            let sampler = match sampler_name.as_str() {
                "random" => Sampler::Random { seed },
                _ => Sampler::Tpe { seed, settings: TpeSettings::default() },
            };
            let mut noise_rng = Rng::new(seed.wrapping_mul(7919).wrapping_add(17));
            let mut trials: Vec<FrozenTrial> = Vec::new();
            let (mut best_obs, mut best_true) = (f64::INFINITY, f64::INFINITY);
            let mut curve = Vec::new();
            for number in 0..n {
                let params: BTreeMap<String, f64> = sampler.sample(&sp, &trials, Direction::Minimize, number);
                let x: Vec<f64> = (0..bounds.len()).map(|i| params[&format!("x{i}")]).collect();
                let truth = f(&x);
                let observed = truth + noise * normal(&mut noise_rng);
                if observed < best_obs {
                    best_obs = observed;
                    best_true = truth;
                }
                curve.push(best_true);
                trials.push(FrozenTrial {
                    number,
                    state: TrialState::Complete,
                    value: Some(observed),
                    params,
                    ..Default::default()
                });
            }
            let line = serde_json::json!({
                "function": name, "seed": seed, "sampler": format!("ours-{sampler_name}"), "best": curve
            });
            println!("{line}");
        }
    }
}
