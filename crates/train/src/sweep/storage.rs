//! The study store: one SQLite file (`output_dir/sweep.db`) shared by every worker of a sweep, as Optuna's RDB
//! storage is. Workers coordinate only through it: a trial is claimed inside a `BEGIN IMMEDIATE` transaction
//! (one writer at a time), so two workers never run the same trial or the same grid point.
//!
//! Schema (version 1):
//!
//! ```sql
//! studies(study_id INTEGER PRIMARY KEY, name TEXT UNIQUE, direction TEXT,   -- 'maximize' | 'minimize'
//!         objective TEXT,            -- metric key, e.g. eval_accuracy
//!         sampler TEXT, pruner TEXT, space_json TEXT,  -- Optuna-style distributions, checked on resume
//!         n_trials INTEGER, created_at REAL, finalized_best INTEGER)   -- best trial whose test run was done
//! trials(trial_id INTEGER PRIMARY KEY, study_id INTEGER, number INTEGER,   -- number: 0, 1, ... per study
//!        state TEXT,                 -- WAITING (queued grid point), RUNNING, COMPLETE, PRUNED, FAIL
//!        value REAL,                 -- objective (final validation metric) of a COMPLETE trial
//!        worker TEXT,                -- host:pid:n of the worker running it
//!        heartbeat REAL,             -- unix seconds, refreshed every few seconds while RUNNING
//!        started_at REAL, finished_at REAL, output_dir TEXT, message TEXT, attempts INTEGER,
//!        UNIQUE(study_id, number))
//! params(trial_id INTEGER, name TEXT, value_json TEXT, internal REAL, PRIMARY KEY(trial_id, name))
//! intermediate_values(trial_id INTEGER, step INTEGER, value REAL, PRIMARY KEY(trial_id, step))
//! trial_attrs(trial_id INTEGER, key TEXT, value REAL, PRIMARY KEY(trial_id, key))  -- successive-halving rungs
//! ```
//!
//! A RUNNING trial whose worker is gone (same host and its process no longer exists, or no heartbeat for
//! `stale_after` seconds) is claimed again by the next worker and re-run from the start with the same
//! parameters; its earlier intermediate values are discarded.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::space::SearchSpace;
use super::{Direction, FrozenTrial, SweepError, TrialState};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS studies (
    study_id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, direction TEXT NOT NULL, objective TEXT NOT NULL,
    sampler TEXT NOT NULL, pruner TEXT NOT NULL, space_json TEXT NOT NULL, n_trials INTEGER NOT NULL,
    created_at REAL NOT NULL, finalized_best INTEGER);
CREATE TABLE IF NOT EXISTS trials (
    trial_id INTEGER PRIMARY KEY, study_id INTEGER NOT NULL REFERENCES studies(study_id), number INTEGER NOT NULL,
    state TEXT NOT NULL, value REAL, worker TEXT, heartbeat REAL, started_at REAL, finished_at REAL,
    output_dir TEXT, message TEXT, attempts INTEGER NOT NULL DEFAULT 0, UNIQUE(study_id, number));
CREATE TABLE IF NOT EXISTS params (
    trial_id INTEGER NOT NULL REFERENCES trials(trial_id), name TEXT NOT NULL, value_json TEXT NOT NULL,
    internal REAL NOT NULL, PRIMARY KEY(trial_id, name));
CREATE TABLE IF NOT EXISTS intermediate_values (
    trial_id INTEGER NOT NULL REFERENCES trials(trial_id), step INTEGER NOT NULL, value REAL NOT NULL,
    PRIMARY KEY(trial_id, step));
CREATE TABLE IF NOT EXISTS trial_attrs (
    trial_id INTEGER NOT NULL REFERENCES trials(trial_id), key TEXT NOT NULL, value REAL NOT NULL,
    PRIMARY KEY(trial_id, key));
";

/// What identifies a study in the store; a second sweep on the same file must agree on all of it.
#[derive(Debug, Clone, PartialEq)]
pub struct StudySpec {
    pub name: String,
    pub direction: Direction,
    pub objective: String,
    pub sampler: String,
    pub pruner: String,
    pub space: SearchSpace,
    pub n_trials: u64,
}

/// A trial handed to a worker.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub trial_id: i64,
    pub number: u64,
    pub params: BTreeMap<String, f64>,
    /// Earlier attempts of this trial (a re-run after a dead worker).
    pub attempts: u32,
}

/// One connection to the study store.
pub struct Storage {
    conn: Connection,
    pub study_id: i64,
    path: String,
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn db_err(path: &str) -> impl Fn(rusqlite::Error) -> SweepError + '_ {
    move |e| SweepError::Store(format!("{path}: {e}"))
}

/// This machine's host name (for telling a dead local worker from a live remote one).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether the worker `host:pid:n` is known to be dead: same host and no such process (Linux `/proc`).
fn worker_dead_locally(worker: &str) -> bool {
    let mut it = worker.split(':');
    let (Some(host), Some(pid)) = (it.next(), it.next()) else { return false };
    if host != host_name() || !Path::new("/proc/self").exists() {
        return false;
    }
    !Path::new(&format!("/proc/{pid}")).exists()
}

impl Storage {
    /// Opens (creating if needed) the store at `path` and the study `spec.name` in it. An existing study must have
    /// the same objective, direction, sampler and search space.
    pub fn open(path: &Path, spec: &StudySpec) -> Result<Self, SweepError> {
        let p = path.display().to_string();
        let conn = Connection::open(path).map_err(db_err(&p))?;
        conn.busy_timeout(Duration::from_secs(120)).map_err(db_err(&p))?;
        conn.execute_batch(SCHEMA).map_err(db_err(&p))?;
        let mut s = Storage { conn, study_id: 0, path: p };
        s.study_id = s.create_or_check(spec)?;
        Ok(s)
    }

    /// Opens the store again (one connection per thread: heartbeats, pruning callbacks).
    pub fn reopen(&self) -> Result<Self, SweepError> {
        let conn = Connection::open(&self.path).map_err(db_err(&self.path))?;
        conn.busy_timeout(Duration::from_secs(120)).map_err(db_err(&self.path))?;
        Ok(Storage { conn, study_id: self.study_id, path: self.path.clone() })
    }

    fn create_or_check(&mut self, spec: &StudySpec) -> Result<i64, SweepError> {
        let p = self.path.clone();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err(&p))?;
        let space_json = spec.space.describe().to_string();
        let row: Option<(i64, String, String, String, String)> = tx
            .query_row(
                "SELECT study_id, direction, objective, sampler, space_json FROM studies WHERE name = ?1",
                params![spec.name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()
            .map_err(db_err(&p))?;
        let id = match row {
            Some((id, direction, objective, sampler, space)) => {
                let mut diff = Vec::new();
                if direction != spec.direction.as_str() {
                    diff.push(format!("direction {direction} (now {})", spec.direction.as_str()));
                }
                if objective != spec.objective {
                    diff.push(format!("objective {objective} (now {})", spec.objective));
                }
                if sampler != spec.sampler {
                    diff.push(format!("sampler {sampler} (now {})", spec.sampler));
                }
                if space != space_json {
                    diff.push(format!("search space {space} (now {space_json})"));
                }
                if !diff.is_empty() {
                    return Err(SweepError::Input(format!(
                        "{p}: holds a sweep with {}; use another output_dir for a different sweep",
                        diff.join(", ")
                    )));
                }
                tx.execute(
                    "UPDATE studies SET n_trials = ?1, pruner = ?2 WHERE study_id = ?3",
                    params![spec.n_trials as i64, spec.pruner, id],
                )
                .map_err(db_err(&p))?;
                id
            }
            None => {
                tx.execute(
                    "INSERT INTO studies (name, direction, objective, sampler, pruner, space_json, n_trials, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        spec.name,
                        spec.direction.as_str(),
                        spec.objective,
                        spec.sampler,
                        spec.pruner,
                        space_json,
                        spec.n_trials as i64,
                        now()
                    ],
                )
                .map_err(db_err(&p))?;
                let id = tx.last_insert_rowid();
                if spec.sampler == "grid" {
                    // Queue every grid point; workers claim them in order.
                    for (number, point) in spec.space.grid_points()?.iter().enumerate() {
                        tx.execute(
                            "INSERT INTO trials (study_id, number, state) VALUES (?1, ?2, 'WAITING')",
                            params![id, number as i64],
                        )
                        .map_err(db_err(&p))?;
                        let tid = tx.last_insert_rowid();
                        insert_params(&tx, tid, point, &spec.space).map_err(db_err(&p))?;
                    }
                }
                id
            }
        };
        tx.commit().map_err(db_err(&p))?;
        Ok(id)
    }

    /// Every trial of the study with its parameters, intermediate values and attributes, by number.
    pub fn trials(&self) -> Result<Vec<FrozenTrial>, SweepError> {
        load_trials(&self.conn, self.study_id).map_err(db_err(&self.path))
    }

    /// Claims the next trial for `worker`, in one `BEGIN IMMEDIATE` transaction: a RUNNING trial of a dead worker
    /// first (re-run), then a queued grid point, then a new trial whose parameters `propose` draws from the
    /// trials so far, while fewer than `n_trials` trials exist. `None` when the sweep has all its trials.
    pub fn claim(
        &mut self,
        worker: &str,
        n_trials: u64,
        stale_after: f64,
        space: &SearchSpace,
        mut propose: impl FnMut(&[FrozenTrial], u64) -> BTreeMap<String, f64>,
    ) -> Result<Option<Claimed>, SweepError> {
        let p = self.path.clone();
        let study = self.study_id;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err(&p))?;
        let trials = load_trials(&tx, study).map_err(db_err(&p))?;
        let t = now();
        let stale = trials.iter().find(|tr| {
            tr.state == TrialState::Running
                && (tr.worker.as_deref().is_some_and(worker_dead_locally)
                    || tr.heartbeat.is_none_or(|h| t - h > stale_after))
        });
        let chosen = if let Some(tr) = stale {
            tx.execute("DELETE FROM intermediate_values WHERE trial_id = ?1", params![tr.trial_id])
                .map_err(db_err(&p))?;
            tx.execute("DELETE FROM trial_attrs WHERE trial_id = ?1", params![tr.trial_id]).map_err(db_err(&p))?;
            Some((tr.trial_id, tr.number, tr.params.clone(), tr.attempts))
        } else {
            let started = trials.iter().filter(|tr| tr.state != TrialState::Waiting).count() as u64;
            if started >= n_trials {
                None
            } else if let Some(tr) = trials.iter().find(|tr| tr.state == TrialState::Waiting) {
                Some((tr.trial_id, tr.number, tr.params.clone(), tr.attempts))
            } else {
                let number = trials.iter().map(|tr| tr.number + 1).max().unwrap_or(0);
                let params = propose(&trials, number);
                tx.execute(
                    "INSERT INTO trials (study_id, number, state) VALUES (?1, ?2, 'WAITING')",
                    params![study, number as i64],
                )
                .map_err(db_err(&p))?;
                let tid = tx.last_insert_rowid();
                insert_params(&tx, tid, &params, space).map_err(db_err(&p))?;
                Some((tid, number, params, 0))
            }
        };
        let claimed = match chosen {
            None => None,
            Some((trial_id, number, params, attempts)) => {
                tx.execute(
                    "UPDATE trials SET state = 'RUNNING', worker = ?1, heartbeat = ?2, started_at = ?2, finished_at = NULL, \
                     value = NULL, message = NULL, attempts = attempts + 1 WHERE trial_id = ?3",
                    params![worker, t, trial_id],
                )
                .map_err(db_err(&p))?;
                Some(Claimed { trial_id, number, params, attempts })
            }
        };
        tx.commit().map_err(db_err(&p))?;
        Ok(claimed)
    }

    pub fn set_output_dir(&self, trial_id: i64, dir: &str) -> Result<(), SweepError> {
        self.conn
            .execute("UPDATE trials SET output_dir = ?1 WHERE trial_id = ?2", params![dir, trial_id])
            .map_err(db_err(&self.path))?;
        Ok(())
    }

    pub fn heartbeat(&self, trial_id: i64) -> Result<(), SweepError> {
        self.conn
            .execute(
                "UPDATE trials SET heartbeat = ?1 WHERE trial_id = ?2 AND state = 'RUNNING'",
                params![now(), trial_id],
            )
            .map_err(db_err(&self.path))?;
        Ok(())
    }

    pub fn report(&self, trial_id: i64, step: u64, value: f64) -> Result<(), SweepError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO intermediate_values (trial_id, step, value) VALUES (?1, ?2, ?3)",
                params![trial_id, step as i64, value],
            )
            .map_err(db_err(&self.path))?;
        self.heartbeat(trial_id)
    }

    pub fn set_attr(&self, trial_id: i64, key: &str, value: f64) -> Result<(), SweepError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO trial_attrs (trial_id, key, value) VALUES (?1, ?2, ?3)",
                params![trial_id, key, value],
            )
            .map_err(db_err(&self.path))?;
        Ok(())
    }

    /// Ends a trial: COMPLETE (with its value), PRUNED or FAIL (with a message).
    pub fn finish(
        &self,
        trial_id: i64,
        state: TrialState,
        value: Option<f64>,
        message: Option<&str>,
    ) -> Result<(), SweepError> {
        self.conn
            .execute(
                "UPDATE trials SET state = ?1, value = ?2, message = ?3, finished_at = ?4 WHERE trial_id = ?5",
                params![state.as_str(), value, message, now(), trial_id],
            )
            .map_err(db_err(&self.path))?;
        Ok(())
    }

    /// Records that the test evaluation of best trial `number` is being done; `false` when another worker has
    /// already done it for that trial.
    pub fn claim_final(&mut self, number: u64) -> Result<bool, SweepError> {
        let n = self
            .conn
            .execute(
                "UPDATE studies SET finalized_best = ?1 WHERE study_id = ?2 AND (finalized_best IS NULL OR finalized_best != ?1)",
                params![number as i64, self.study_id],
            )
            .map_err(db_err(&self.path))?;
        Ok(n == 1)
    }
}

fn insert_params(
    tx: &rusqlite::Transaction<'_>,
    trial_id: i64,
    point: &BTreeMap<String, f64>,
    space: &SearchSpace,
) -> rusqlite::Result<()> {
    for (name, &x) in point {
        let json = space.params.get(name).map_or(serde_json::json!(x), |d| d.to_json(x));
        tx.execute(
            "INSERT OR REPLACE INTO params (trial_id, name, value_json, internal) VALUES (?1, ?2, ?3, ?4)",
            params![trial_id, name, json.to_string(), x],
        )?;
    }
    Ok(())
}

fn load_trials(conn: &Connection, study: i64) -> rusqlite::Result<Vec<FrozenTrial>> {
    let mut st = conn.prepare(
        "SELECT trial_id, number, state, value, worker, heartbeat, started_at, finished_at, output_dir, message, attempts \
         FROM trials WHERE study_id = ?1 ORDER BY number",
    )?;
    let mut trials: Vec<FrozenTrial> = st
        .query_map(params![study], |r| {
            let state: String = r.get(2)?;
            Ok(FrozenTrial {
                trial_id: r.get(0)?,
                number: r.get::<_, i64>(1)? as u64,
                state: TrialState::parse(&state),
                value: r.get(3)?,
                worker: r.get(4)?,
                heartbeat: r.get(5)?,
                started_at: r.get(6)?,
                finished_at: r.get(7)?,
                output_dir: r.get(8)?,
                message: r.get(9)?,
                attempts: r.get::<_, i64>(10)? as u32,
                ..Default::default()
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let index: BTreeMap<i64, usize> = trials.iter().enumerate().map(|(i, t)| (t.trial_id, i)).collect();
    let mut st = conn.prepare(
        "SELECT p.trial_id, p.name, p.internal FROM params p JOIN trials t ON t.trial_id = p.trial_id WHERE t.study_id = ?1",
    )?;
    for row in
        st.query_map(params![study], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, f64>(2)?)))?
    {
        let (id, name, x) = row?;
        if let Some(&i) = index.get(&id) {
            trials[i].params.insert(name, x);
        }
    }
    let mut st = conn.prepare(
        "SELECT v.trial_id, v.step, v.value FROM intermediate_values v JOIN trials t ON t.trial_id = v.trial_id \
         WHERE t.study_id = ?1",
    )?;
    for row in st.query_map(params![study], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, f64>(2)?)))? {
        let (id, step, v) = row?;
        if let Some(&i) = index.get(&id) {
            trials[i].intermediate.insert(step as u64, v);
        }
    }
    let mut st = conn.prepare(
        "SELECT a.trial_id, a.key, a.value FROM trial_attrs a JOIN trials t ON t.trial_id = a.trial_id WHERE t.study_id = ?1",
    )?;
    for row in
        st.query_map(params![study], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, f64>(2)?)))?
    {
        let (id, k, v) = row?;
        if let Some(&i) = index.get(&id) {
            trials[i].attrs.insert(k, v);
        }
    }
    Ok(trials)
}
