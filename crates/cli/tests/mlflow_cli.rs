//! `report_to = ["mlflow"]` over loopback against a recording stand-in for the tracking server's REST API (the
//! real `mlflow server` and client are checked by scripts/mlflow-check.sh): what `finetune train` sends is the
//! run's parameters, every logged value at its step as in trainer_state.json, the final model's files as
//! artifacts (byte for byte) and the finished status; a missing or unreachable server is a one-line error.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::{config, read_json, setup, stderr};
use serde_json::{json, Value};

/// What the stand-in received: JSON calls by path, and uploaded artifacts by path.
#[derive(Default)]
struct Seen {
    calls: Vec<(String, Value)>,
    artifacts: BTreeMap<String, Vec<u8>>,
}

/// Reads one HTTP/1.1 request (fixed-length or chunked body); `None` at the end of the connection.
fn read_request(r: &mut BufReader<std::net::TcpStream>) -> Option<(String, String, Vec<u8>)> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let (mut len, mut chunked) = (0usize, false);
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        match k.to_ascii_lowercase().as_str() {
            "content-length" => len = v.trim().parse().ok()?,
            "transfer-encoding" => chunked = v.trim().eq_ignore_ascii_case("chunked"),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).ok()?;
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk).ok()?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        body.resize(len, 0);
        r.read_exact(&mut body).ok()?;
    }
    Some((method, path, body))
}

/// Serves MLflow's REST calls from `finetune` on a loopback port, recording them.
fn stand_in() -> (String, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut w = stream.try_clone().expect("clone");
                let mut r = BufReader::new(stream);
                while let Some((method, path, body)) = read_request(&mut r) {
                    let info = json!({"run_id": "r1", "experiment_id": "7", "artifact_uri": "mlflow-artifacts:/7/r1/artifacts"});
                    let (status, answer) = if path.starts_with("/api/2.0/mlflow/experiments/get-by-name") {
                        (404, json!({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no such experiment"}))
                    } else if path.starts_with("/api/2.0/mlflow/runs/get") {
                        (200, json!({"run": {"info": info}}))
                    } else if path.starts_with("/api/2.0/mlflow/experiments/create") {
                        (200, json!({"experiment_id": "7"}))
                    } else if path.starts_with("/api/2.0/mlflow/runs/create") {
                        (200, json!({"run": {"info": info}}))
                    } else {
                        (200, json!({}))
                    };
                    {
                        let mut seen = s.lock().expect("lock");
                        if method == "PUT" {
                            seen.artifacts.insert(path.clone(), body);
                        } else {
                            let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            seen.calls.push((path.clone(), v));
                        }
                    }
                    let text = answer.to_string();
                    let reason = if status == 200 { "OK" } else { "Not Found" };
                    let head = format!(
                        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        text.len()
                    );
                    if w.write_all(head.as_bytes()).and_then(|_| w.write_all(text.as_bytes())).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, seen)
}

fn train_with(env: &[(&str, &str)], cfg: &std::path::Path) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_finetune"));
    cmd.args(["train", "--config", cfg.to_str().expect("utf-8"), "--progress", "off"]);
    for k in
        ["MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID", "MLFLOW_TAGS", "HF_MLFLOW_LOG_ARTIFACTS"]
    {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run finetune")
}

#[test]
fn train_logs_params_metrics_and_the_model_to_mlflow() {
    let s = setup();
    let cfg = config(&s, "out", "max_steps = 6\neval_strategy = \"steps\"\neval_steps = 3\nreport_to = \"mlflow\"\n");
    let (url, seen) = stand_in();
    let env = [
        ("MLFLOW_TRACKING_URI", url.as_str()),
        ("MLFLOW_EXPERIMENT_NAME", "my exp"),
        ("MLFLOW_TAGS", r#"{"team": "nlp"}"#),
    ];
    let o = train_with(&env, &cfg);
    assert!(o.status.success(), "{}", stderr(&o));
    let seen = seen.lock().expect("lock");
    let path =
        |p: &str| seen.calls.iter().filter(|(q, _)| q.starts_with(p)).map(|(_, v)| v.clone()).collect::<Vec<_>>();

    let create = path("/api/2.0/mlflow/experiments/create");
    assert_eq!(create, [json!({"name": "my exp"})], "the experiment is created by name when missing");
    let run = &path("/api/2.0/mlflow/runs/create")[0];
    assert_eq!(run["experiment_id"], "7");
    assert_eq!(run["run_name"], "out", "the run is named after the output directory");
    assert!(run["tags"].as_array().expect("tags").contains(&json!({"key": "team", "value": "nlp"})), "{run}");

    let batches = path("/api/2.0/mlflow/runs/log-batch");
    let params: BTreeMap<String, String> = batches
        .iter()
        .flat_map(|b| b["params"].as_array().cloned().unwrap_or_default())
        .map(|p| (p["key"].as_str().expect("key").into(), p["value"].as_str().expect("value").into()))
        .collect();
    assert_eq!(params["learning_rate"], "0.001");
    assert_eq!(params["max_steps"], "6");
    assert_eq!(params["report_to"], r#"["mlflow"]"#);
    // Every numeric value of the log history, at its step.
    let mut sent: Vec<(String, u64, f64)> = batches
        .iter()
        .flat_map(|b| b["metrics"].as_array().cloned().unwrap_or_default())
        .map(|m| {
            (
                m["key"].as_str().expect("key").into(),
                m["step"].as_u64().expect("step"),
                m["value"].as_f64().expect("value"),
            )
        })
        .collect();
    let state = read_json(&s.root.join("out/trainer_state.json"));
    let mut want: Vec<(String, u64, f64)> = Vec::new();
    for e in state["log_history"].as_array().expect("history") {
        let step = e["step"].as_u64().expect("step");
        for (k, v) in e.as_object().expect("entry") {
            if let Some(x) = v.as_f64().filter(|_| k != "step") {
                want.push((k.clone(), step, x));
            }
        }
    }
    sent.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    want.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    assert_eq!(sent, want);
    assert!(want.iter().any(|(k, _, _)| k == "eval_accuracy") && want.iter().any(|(k, _, _)| k == "loss"));

    // The final model and results, without checkpoints, byte for byte.
    let prefix = "/api/2.0/mlflow-artifacts/artifacts/7/r1/artifacts/";
    let names: Vec<&str> = seen.artifacts.keys().map(|k| k.strip_prefix(prefix).expect("under the run")).collect();
    for f in ["model.safetensors", "config.json", "vocab.txt", "trainer_state.json", "eval_results.json"] {
        assert!(names.contains(&f), "{f} not uploaded: {names:?}");
        let local = std::fs::read(s.root.join("out").join(f)).expect("local file");
        assert!(seen.artifacts[&format!("{prefix}{f}")] == local, "{f} differs");
    }
    assert!(!names.iter().any(|n| n.starts_with("checkpoint-")), "{names:?}");
    let end = path("/api/2.0/mlflow/runs/update");
    assert_eq!(end.len(), 1);
    assert_eq!((end[0]["run_id"].clone(), end[0]["status"].clone()), (json!("r1"), json!("FINISHED")));
}

#[test]
fn a_missing_or_unreachable_server_is_one_line_error() {
    let s = setup();
    let cfg = config(&s, "out", "max_steps = 2\nreport_to = \"mlflow\"\n");
    let o = train_with(&[], &cfg);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("MLFLOW_TRACKING_URI"), "{}", stderr(&o));
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let url = format!("http://127.0.0.1:{port}");
    let o = train_with(&[("MLFLOW_TRACKING_URI", url.as_str())], &cfg);
    assert!(!o.status.success());
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("report_to mlflow") && lines[0].matches(&url).count() == 1, "{err}");
    assert!(!s.root.join("out/model.safetensors").exists(), "no output after a failed start");
}
