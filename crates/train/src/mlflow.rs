//! `report_to = ["mlflow"]`: the run's parameters, its metrics at every log and evaluation (with the step), and
//! at the end the output directory's files as artifacts, sent to the MLflow tracking server named by
//! `MLFLOW_TRACKING_URI` through its REST API (`/api/2.0/mlflow/...`), as HF's `MLflowCallback` does through the
//! `mlflow` package.
//!
//! The environment variables are the callback's: `MLFLOW_TRACKING_URI` (required, `http://host:port`),
//! `MLFLOW_EXPERIMENT_NAME` (created when missing; default: the server's "Default" experiment),
//! `MLFLOW_RUN_NAME` (default: `run_name`, else the output directory's name), `MLFLOW_RUN_ID` (continue a run),
//! `MLFLOW_TAGS` (a JSON object of tags), `HF_MLFLOW_LOG_ARTIFACTS` (default on here: the final model is the
//! point of the run; `0`/`false` turns it off), `MLFLOW_TRACKING_TOKEN` or `MLFLOW_TRACKING_USERNAME` /
//! `MLFLOW_TRACKING_PASSWORD` (sent as bearer or basic authentication).
//!
//! A tracking server that cannot be reached when training starts is an error; one that fails later stops the
//! logging with a message, never the training.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::error::{Result, TrainError};

/// MLflow's limits per `log-batch` request.
const MAX_PARAMS_PER_BATCH: usize = 100;
const MAX_METRICS_PER_BATCH: usize = 1000;
/// MLflow's longest parameter value (longer ones are cut, as HF's callback does).
const MAX_PARAM_VALUE: usize = 6000;

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.trim().is_empty())
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn err(m: impl std::fmt::Display) -> TrainError {
    TrainError::Args(format!("report_to mlflow: {m}"))
}

/// The tracking server's address and credentials.
#[derive(Debug, Clone)]
struct Client {
    base: String,
    auth: Option<String>,
}

impl Client {
    fn from_env() -> Result<Self> {
        let uri = env("MLFLOW_TRACKING_URI")
            .ok_or_else(|| err("set MLFLOW_TRACKING_URI to the tracking server (http://host:port)"))?;
        if !uri.starts_with("http://") {
            return Err(err(format!(
                "MLFLOW_TRACKING_URI {uri:?} is not an http:// server address (file stores and https are not supported)"
            )));
        }
        let auth = match (env("MLFLOW_TRACKING_TOKEN"), env("MLFLOW_TRACKING_USERNAME")) {
            (Some(t), _) => Some(format!("Bearer {t}")),
            (None, Some(u)) => {
                let p = env("MLFLOW_TRACKING_PASSWORD").unwrap_or_default();
                Some(format!("Basic {}", base64(format!("{u}:{p}").as_bytes())))
            }
            (None, None) => None,
        };
        Ok(Client { base: uri.trim_end_matches('/').to_string(), auth })
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let r = ureq::request(method, &format!("{}{path}", self.base)).timeout(std::time::Duration::from_secs(60));
        match &self.auth {
            Some(a) => r.set("Authorization", a),
            None => r,
        }
    }

    /// A JSON call; MLflow's error body (`error_code`, `message`) becomes the error.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> std::result::Result<Value, String> {
        let r = self.request(method, path);
        let sent = match body {
            Some(b) => r.set("Content-Type", "application/json").send_string(&b.to_string()),
            None => r.call(),
        };
        match sent {
            Ok(resp) => {
                let text = resp.into_string().map_err(|e| format!("{path}: reading the answer: {e}"))?;
                if text.trim().is_empty() {
                    return Ok(json!({}));
                }
                serde_json::from_str(&text).map_err(|e| format!("{path}: the answer is not JSON: {e}"))
            }
            Err(ureq::Error::Status(code, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                let msg = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
                    .unwrap_or(text);
                Err(format!("{path}: HTTP {code}: {}", msg.trim()))
            }
            Err(ureq::Error::Transport(t)) => {
                let detail = t.message().map_or_else(|| t.kind().to_string(), |m| format!("{}: {m}", t.kind()));
                Err(format!("{}{path}: {detail}", self.base))
            }
        }
    }
}

/// Standard base64 (for the basic-authentication header).
fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Flattens a JSON object into `key` / `parent.key` string parameters (lists and scalars as their JSON text,
/// strings as themselves, nulls as "None" as Python's `str(None)`).
pub fn flatten_params(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten_params(&key, x, out);
            }
        }
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        Value::Null => out.push((prefix.to_string(), "None".into())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// An MLflow run being logged to.
pub struct MlflowRun {
    client: Client,
    pub run_id: String,
    pub experiment_id: String,
    /// The logging stopped after a failure (or the run was handed on).
    broken: bool,
}

impl MlflowRun {
    /// Starts (or, with `MLFLOW_RUN_ID`, continues) a run and logs `params`.
    pub fn start(default_name: &str, params: &[(String, String)]) -> Result<Self> {
        let client = Client::from_env()?;
        let experiment_id = match env("MLFLOW_EXPERIMENT_NAME") {
            None => "0".to_string(),
            Some(name) => experiment_id(&client, &name)?,
        };
        let info = match env("MLFLOW_RUN_ID") {
            Some(id) => {
                let path = format!("/api/2.0/mlflow/runs/get?run_id={id}");
                client.call("GET", &path, None).map_err(err)?["run"]["info"].clone()
            }
            None => {
                let name = env("MLFLOW_RUN_NAME").unwrap_or_else(|| default_name.to_string());
                let mut tags = vec![json!({"key": "mlflow.runName", "value": name})];
                if let Some(t) = env("MLFLOW_TAGS") {
                    let map: serde_json::Map<String, Value> =
                        serde_json::from_str(&t).map_err(|e| err(format!("MLFLOW_TAGS is not a JSON object: {e}")))?;
                    for (k, v) in map {
                        let value = v.as_str().map_or_else(|| v.to_string(), String::from);
                        tags.push(json!({"key": k, "value": value}));
                    }
                }
                let body = json!({
                    "experiment_id": experiment_id, "run_name": name, "start_time": now_ms(), "tags": tags,
                });
                client.call("POST", "/api/2.0/mlflow/runs/create", Some(&body)).map_err(err)?["run"]["info"].clone()
            }
        };
        let s = |k: &str| info.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let run = MlflowRun { client, run_id: s("run_id"), experiment_id: s("experiment_id"), broken: false };
        if run.run_id.is_empty() {
            return Err(err("the server's answer names no run_id"));
        }
        for chunk in params.chunks(MAX_PARAMS_PER_BATCH) {
            let ps: Vec<Value> = chunk
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v.chars().take(MAX_PARAM_VALUE).collect::<String>()}))
                .collect();
            run.batch(json!({"run_id": run.run_id, "params": ps})).map_err(err)?;
        }
        Ok(run)
    }

    fn batch(&self, body: Value) -> std::result::Result<(), String> {
        self.client.call("POST", "/api/2.0/mlflow/runs/log-batch", Some(&body)).map(drop)
    }

    /// Logs `metrics` at `step`; returns the message of a failure, after which nothing more is sent.
    pub fn log_metrics<'a>(&mut self, step: u64, metrics: impl Iterator<Item = (&'a String, f64)>) -> Option<String> {
        if self.broken {
            return None;
        }
        let ts = now_ms();
        let ms: Vec<Value> = metrics
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| json!({"key": k, "value": v, "timestamp": ts, "step": step}))
            .collect();
        for chunk in ms.chunks(MAX_METRICS_PER_BATCH) {
            if let Err(e) = self.batch(json!({"run_id": self.run_id, "metrics": chunk})) {
                self.broken = true;
                return Some(format!("MLflow logging stopped: {e}"));
            }
        }
        None
    }

    /// Hands the run over to [`finish_run`], which the caller calls once the final model is saved: the run stays
    /// open (not marked failed) when this value goes.
    pub fn into_id(mut self) -> String {
        self.broken = true;
        std::mem::take(&mut self.run_id)
    }

    fn end(&self, status: &str) -> std::result::Result<(), String> {
        end_run(&self.client, &self.run_id, status)
    }
}

fn end_run(client: &Client, run_id: &str, status: &str) -> std::result::Result<(), String> {
    let body = json!({"run_id": run_id, "status": status, "end_time": now_ms()});
    client.call("POST", "/api/2.0/mlflow/runs/update", Some(&body)).map(drop)
}

/// Ends run `run_id` (from [`MlflowRun::into_id`]) once the final model is in `dir`: uploads the files of `dir`
/// (without the `checkpoint-*` directories and `runs/`) as the run's artifacts unless `HF_MLFLOW_LOG_ARTIFACTS`
/// turns that off, and marks the run finished. Returns the number of files uploaded.
pub fn finish_run(run_id: &str, dir: &Path) -> Result<usize> {
    let client = Client::from_env()?;
    let log_artifacts =
        env("HF_MLFLOW_LOG_ARTIFACTS").is_none_or(|v| !matches!(v.to_lowercase().as_str(), "0" | "false" | "no"));
    let mut uploaded = 0;
    if log_artifacts {
        let info = client.call("GET", &format!("/api/2.0/mlflow/runs/get?run_id={run_id}"), None).map_err(err)?;
        let uri = info["run"]["info"]["artifact_uri"].as_str().unwrap_or_default();
        uploaded = upload_dir(&client, uri, dir).map_err(err)?;
    }
    end_run(&client, run_id, "FINISHED").map_err(err)?;
    Ok(uploaded)
}

fn upload_dir(client: &Client, artifact_uri: &str, dir: &Path) -> std::result::Result<usize, String> {
    // A server that proxies artifacts (`mlflow server`, the default since 2.0) takes them by PUT under
    // /api/2.0/mlflow-artifacts/artifacts/<the artifact URI's path>.
    let root = artifact_uri.strip_prefix("mlflow-artifacts:").ok_or_else(|| {
        format!(
            "the run's artifact location {artifact_uri:?} is not served by the tracking server (start it with \
             --serve-artifacts, or set HF_MLFLOW_LOG_ARTIFACTS=0)"
        )
    })?;
    let root = root.trim_start_matches('/');
    let mut files: Vec<PathBuf> = Vec::new();
    collect_files(dir, &mut files).map_err(|e| format!("{}: {e}", dir.display()))?;
    for f in &files {
        let rel = f.strip_prefix(dir).unwrap_or(f);
        let rel: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        let path = format!("/api/2.0/mlflow-artifacts/artifacts/{root}/{}", rel.join("/"));
        let file = std::fs::File::open(f).map_err(|e| format!("{}: {e}", f.display()))?;
        match client.request("PUT", &path).send(file) {
            Ok(_) => {}
            Err(ureq::Error::Status(code, r)) => {
                return Err(format!("{path}: HTTP {code}: {}", r.into_string().unwrap_or_default().trim()))
            }
            Err(e) => return Err(format!("{path}: {e}")),
        }
    }
    Ok(files.len())
}

impl Drop for MlflowRun {
    /// A run dropped without `finish` (an error ended the training) is marked failed, as `mlflow` marks a run
    /// whose process raised.
    fn drop(&mut self) {
        if !self.broken {
            let _ = self.end("FAILED");
        }
    }
}

/// Files under `dir`, in sorted order, without the `checkpoint-*` directories and the TensorBoard `runs/`.
fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type()?.is_dir() {
            if !name.starts_with("checkpoint-") && name != "runs" {
                collect_files(&p, out)?;
            }
        } else if !name.ends_with(".tmp") {
            out.push(p);
        }
    }
    Ok(())
}

/// The id of experiment `name`, created when the server has none.
fn experiment_id(client: &Client, name: &str) -> Result<String> {
    let q: String = name
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    match client.call("GET", &format!("/api/2.0/mlflow/experiments/get-by-name?experiment_name={q}"), None) {
        Ok(v) => Ok(v["experiment"]["experiment_id"].as_str().unwrap_or_default().to_string()),
        Err(e) if e.contains("HTTP 404") => {
            let v =
                client.call("POST", "/api/2.0/mlflow/experiments/create", Some(&json!({"name": name}))).map_err(err)?;
            Ok(v["experiment_id"].as_str().unwrap_or_default().to_string())
        }
        Err(e) => Err(err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn params_flatten_as_strings() {
        let mut out = Vec::new();
        flatten_params("", &json!({"a": 1, "b": {"c": "x", "d": [1, 2]}, "e": null, "f": true}), &mut out);
        let want = [("a", "1"), ("b.c", "x"), ("b.d", "[1,2]"), ("e", "None"), ("f", "true")];
        assert_eq!(out, want.map(|(k, v)| (k.to_string(), v.to_string())));
    }
}
