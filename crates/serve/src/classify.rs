//! `POST /predict` for sequence- and token-classification models, micro-batched across requests.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use finetune_train::workflow::{InferOptions, PredictInput, Predictor};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::{access_log, parse_body, ApiError, App, Backend, ServeError, ServeOptions};

struct Job {
    inputs: Vec<PredictInput>,
    deadline: Instant,
    reply: oneshot::Sender<Result<Vec<Value>, ApiError>>,
}

/// The classifier's request queue; the model runs on its own thread.
pub(crate) struct Queue {
    tx: SyncSender<Job>,
    token_classification: bool,
}

impl Queue {
    pub fn start(opts: &ServeOptions) -> Result<Self, ServeError> {
        if opts.int8 {
            return Err(ServeError::Model("--int8 is for decoders (generation); a classifier takes --bf16".into()));
        }
        let infer = InferOptions {
            max_seq_length: opts.max_seq_length,
            batch_size: opts.max_batch_size.max(1),
            bf16: opts.bf16,
            ..InferOptions::default()
        };
        let predictor = Predictor::load(&opts.model, &infer).map_err(|e| ServeError::Model(e.to_string()))?;
        let token_classification = predictor.is_token_classification();
        let (tx, rx) = sync_channel::<Job>(opts.max_queue);
        let (max_batch, window) = (opts.max_batch_size.max(1), opts.batch_window);
        std::thread::Builder::new()
            .name("classifier".into())
            .spawn(move || worker(predictor, rx, max_batch, window))
            .map_err(|e| ServeError::Io(format!("worker thread: {e}")))?;
        Ok(Queue { tx, token_classification })
    }
}

/// Collects jobs for up to `window` after the first, until `max_batch` texts wait, and runs them as one batch.
fn worker(mut predictor: Predictor, rx: std::sync::mpsc::Receiver<Job>, max_batch: usize, window: Duration) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let until = Instant::now() + window;
        while jobs.iter().map(|j| j.inputs.len()).sum::<usize>() < max_batch {
            match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(j) => jobs.push(j),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let now = Instant::now();
        let (live, late): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().filter(|j| !j.reply.is_closed()).partition(|j| j.deadline > now);
        for j in late {
            let _ = j.reply.send(Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timed out in the queue",
                Some("timeout"),
            )));
        }
        if live.is_empty() {
            continue;
        }
        let inputs: Vec<PredictInput> = live.iter().flat_map(|j| j.inputs.iter().cloned()).collect();
        let result = catch_unwind(AssertUnwindSafe(|| predictor.predict(&inputs, "request")));
        match result {
            Ok(Ok(values)) => {
                let mut values = values.into_iter();
                for j in live {
                    let part: Vec<Value> = values.by_ref().take(j.inputs.len()).collect();
                    let _ = j.reply.send(Ok(part));
                }
            }
            Ok(Err(e)) => {
                for j in live {
                    let _ = j.reply.send(Err(ApiError::bad_request(e.to_string(), Some("inputs"))));
                }
            }
            Err(_) => {
                for j in live {
                    let _ = j.reply.send(Err(ApiError::internal("the model failed on this batch")));
                }
            }
        }
    }
}

/// `{"inputs": "text"}`, `{"inputs": ["text", ...]}`, `{"inputs": [{"text": ..., "text_pair": ...}, ...]}` or,
/// for token classification, `{"inputs": [["word", ...], ...]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictRequest {
    inputs: Inputs,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Inputs {
    One(String),
    Many(Vec<Input>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    Text(String),
    Words(Vec<String>),
    Pair(Pair),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Pair {
    text: String,
    #[serde(default)]
    text_pair: Option<String>,
}

fn to_inputs(req: PredictRequest, token: bool, limit: usize) -> Result<Vec<PredictInput>, ApiError> {
    let items = match req.inputs {
        Inputs::One(t) => vec![Input::Text(t)],
        Inputs::Many(v) => v,
    };
    if items.is_empty() {
        return Err(ApiError::bad_request("`inputs` is empty", Some("inputs")));
    }
    if items.len() > limit {
        return Err(ApiError::bad_request(
            format!("`inputs` has {} items; this server takes at most {limit} per request", items.len()),
            Some("inputs"),
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, x) in items.into_iter().enumerate() {
        out.push(match (x, token) {
            (Input::Text(text), _) => PredictInput::Text { text, text_pair: None },
            (Input::Pair(p), false) => PredictInput::Text { text: p.text, text_pair: p.text_pair },
            (Input::Words(w), true) => PredictInput::Words(w),
            (Input::Pair(_), true) => {
                return Err(ApiError::bad_request(
                    format!("inputs[{i}]: a token-classification model takes a text or a list of words"),
                    Some("inputs"),
                ))
            }
            (Input::Words(_), false) => {
                return Err(ApiError::bad_request(
                    format!("inputs[{i}]: a sequence-classification model takes texts, not word lists"),
                    Some("inputs"),
                ))
            }
        });
    }
    Ok(out)
}

pub(crate) async fn predict(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let result = run(&app, body).await;
    let status = result.as_ref().map_or_else(|e| e.status, |_| StatusCode::OK);
    match result {
        Ok(values) => {
            access_log("/predict", status, &format!("{} inputs", values.len()), started);
            Json(json!({ "predictions": values })).into_response()
        }
        Err(e) => {
            access_log("/predict", status, &e.message, started);
            e.into_response()
        }
    }
}

async fn run(app: &App, body: Result<Bytes, BytesRejection>) -> Result<Vec<Value>, ApiError> {
    let Backend::Classifier(q) = &app.backend else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "this server runs a decoder: use /v1/completions or /v1/chat/completions",
            Some("not_found"),
        ));
    };
    let req: PredictRequest = parse_body(body)?;
    let inputs = to_inputs(req, q.token_classification, app.opts.max_inputs_per_request)?;
    let (reply, rx) = oneshot::channel();
    let deadline = Instant::now() + app.opts.timeout;
    match q.tx.try_send(Job { inputs, deadline, reply }) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => return Err(ApiError::queue_full()),
        Err(TrySendError::Disconnected(_)) => return Err(ApiError::internal("the model worker has stopped")),
    }
    match tokio::time::timeout_at(deadline.into(), rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(ApiError::internal("the model worker dropped the request")),
        Err(_) => Err(ApiError::timeout(app.opts.timeout)),
    }
}
