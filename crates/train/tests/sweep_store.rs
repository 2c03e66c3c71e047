//! The sweep's study store: resume after a dead worker, and workers sharing one SQLite file without running a
//! trial (or a grid point) twice.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use finetune_train::sweep::storage::{host_name, Storage, StudySpec};
use finetune_train::sweep::{Direction, Distribution, Sampler, SearchSpace, TpeSettings, TrialState};

fn space() -> SearchSpace {
    let mut s = SearchSpace::default();
    s.params.insert("learning_rate".into(), Distribution::Float { low: 1e-5, high: 1e-2, log: true, step: None });
    s.params.insert("num_train_epochs".into(), Distribution::Int { low: 1, high: 4, log: false, step: 1 });
    s
}

fn spec(sampler: &str, n_trials: u64) -> StudySpec {
    StudySpec {
        name: "sweep".into(),
        direction: Direction::Minimize,
        objective: "eval_loss".into(),
        sampler: sampler.into(),
        pruner: "none".into(),
        space: space(),
        n_trials,
    }
}

/// Claims and finishes trials until none is left; returns the numbers this worker ran.
fn work(db: &Path, sampler: &str, n_trials: u64, worker: &str) -> Vec<u64> {
    let mut store = Storage::open(db, &spec(sampler, n_trials)).expect("open");
    let s = match sampler {
        "grid" => Sampler::Grid,
        _ => Sampler::Tpe { seed: 1, settings: TpeSettings { n_startup_trials: 3, ..Default::default() } },
    };
    let sp = space();
    let mut mine = Vec::new();
    while let Some(c) = store
        .claim(worker, n_trials, 60.0, &sp, |trials, number| s.sample(&sp, trials, Direction::Minimize, number))
        .expect("claim")
    {
        let value = (c.params["learning_rate"].log10() + 3.0).powi(2) + c.params["num_train_epochs"];
        store.report(c.trial_id, 1, value).expect("report");
        std::thread::sleep(std::time::Duration::from_millis(2));
        store.finish(c.trial_id, TrialState::Complete, Some(value), None).expect("finish");
        mine.push(c.number);
    }
    mine
}

#[test]
fn two_workers_share_one_store_without_running_a_trial_twice() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("sweep.db");
    let (a, b) = std::thread::scope(|s| {
        let h1 = s.spawn(|| work(&db, "tpe", 24, "w1"));
        let h2 = s.spawn(|| work(&db, "tpe", 24, "w2"));
        (h1.join().expect("w1"), h2.join().expect("w2"))
    });
    let all: BTreeSet<u64> = a.iter().chain(&b).copied().collect();
    assert_eq!(a.len() + b.len(), 24, "{a:?} {b:?}");
    assert_eq!(all, (0..24).collect(), "every trial number exactly once");
    let store = Storage::open(&db, &spec("tpe", 24)).expect("open");
    let trials = store.trials().expect("trials");
    assert_eq!(trials.len(), 24);
    assert!(trials.iter().all(|t| t.state == TrialState::Complete && t.intermediate.len() == 1));
}

#[test]
fn two_workers_split_a_grid_without_duplicates() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("sweep.db");
    let mut s = space();
    s.params.insert(
        "learning_rate".into(),
        Distribution::Categorical { choices: vec![1e-4.into(), 1e-3.into(), 1e-2.into()] },
    );
    let grid_spec = StudySpec { space: s.clone(), sampler: "grid".into(), ..spec("grid", 12) };
    let run = |worker: &str| {
        let mut store = Storage::open(&db, &grid_spec).expect("open");
        let mut points = Vec::new();
        while let Some(c) = store.claim(worker, 12, 60.0, &s, |_, _| BTreeMap::new()).expect("claim") {
            store.finish(c.trial_id, TrialState::Complete, Some(0.0), None).expect("finish");
            points.push(format!("{:?}", c.params));
        }
        points
    };
    let (a, b) = std::thread::scope(|sc| {
        let h1 = sc.spawn(|| run("w1"));
        let h2 = sc.spawn(|| run("w2"));
        (h1.join().expect("w1"), h2.join().expect("w2"))
    });
    let all: BTreeSet<String> = a.iter().chain(&b).cloned().collect();
    assert_eq!(a.len() + b.len(), 12);
    assert_eq!(all.len(), 12, "3 learning rates x 4 epochs, each once");
}

#[test]
fn a_restarted_sweep_keeps_finished_trials_and_reruns_a_dead_workers_trial() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("sweep.db");
    let sp = space();
    let sampler = Sampler::Random { seed: 5 };
    let mut store = Storage::open(&db, &spec("random", 4)).expect("open");
    let propose = |t: &[_], n| sampler.sample(&sp, t, Direction::Minimize, n);
    // Trial 0 finishes; trial 1 runs in a live worker elsewhere (fresh heartbeat); trial 2 is left RUNNING by a
    // worker of this host whose process is gone.
    let c0 = store.claim("w", 4, 60.0, &sp, propose).expect("claim").expect("trial 0");
    store.finish(c0.trial_id, TrialState::Complete, Some(1.0), None).expect("finish");
    let c1 = store.claim("other-host:1:0", 4, 60.0, &sp, propose).expect("claim").expect("trial 1");
    let dead = format!("{}:{}:0", host_name(), u32::MAX - 1);
    let c2 = store.claim(&dead, 4, 60.0, &sp, propose).expect("claim").expect("trial 2");
    store.report(c2.trial_id, 5, 0.5).expect("report");
    drop(store);

    let mut store = Storage::open(&db, &spec("random", 4)).expect("reopen");
    let again = store.claim("w2", 4, 60.0, &sp, propose).expect("claim").expect("re-run");
    assert_eq!((again.number, &again.params), (2, &c2.params), "the dead worker's trial is re-run first");
    assert_eq!(again.attempts, 1);
    let trials = store.trials().expect("trials");
    assert!(trials[2].intermediate.is_empty(), "the interrupted attempt's values are dropped");
    assert_eq!((trials[0].state, trials[0].value), (TrialState::Complete, Some(1.0)), "finished trial kept");
    assert_eq!((trials[1].state, trials[1].worker.as_deref()), (TrialState::Running, Some("other-host:1:0")));
    store.finish(again.trial_id, TrialState::Complete, Some(0.2), None).expect("finish");
    // Trial 3 is new; then the study is full (trial 1 still runs elsewhere).
    let c3 = store.claim("w2", 4, 60.0, &sp, propose).expect("claim").expect("trial 3");
    assert_eq!(c3.number, 3);
    store.finish(c3.trial_id, TrialState::Complete, Some(0.3), None).expect("finish");
    assert!(store.claim("w2", 4, 60.0, &sp, propose).expect("claim").is_none());
    // Without heartbeats for longer than the timeout, trial 1 counts as dead too.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let c1b = store.claim("w2", 4, 0.01, &sp, propose).expect("claim").expect("stale trial 1");
    assert_eq!((c1b.number, &c1b.params), (1, &c1.params));
}

#[test]
fn a_store_refuses_a_different_search_space() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("sweep.db");
    Storage::open(&db, &spec("random", 4)).expect("open");
    let mut other = spec("random", 4);
    other
        .space
        .params
        .insert("warmup_ratio".into(), Distribution::Float { low: 0.0, high: 0.1, log: false, step: None });
    let e = Storage::open(&db, &other).err().expect("refused").to_string();
    assert!(e.contains("search space") && e.contains("another output_dir"), "{e}");
}
