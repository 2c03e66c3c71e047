//! `finetune serve`: an HTTP server for a fine-tuned model, speaking what clients already speak.
//!
//! - Sequence/token classifiers: `POST /predict` (`{"inputs": ...}` in, the JSON lines of `finetune predict` out).
//! - Decoders: OpenAI's `POST /v1/completions`, `POST /v1/chat/completions` (chat template as in `sft`, streaming
//!   with server-sent events) and `GET /v1/models`.
//! - `GET /health` for both.
//!
//! The model lives on one worker thread (its kernels use every core); HTTP runs on a small tokio runtime.
//! Requests reach the worker through a bounded queue. Classifiers batch per window: whatever arrives within
//! `batch_window` of the first waiting request, up to `max_batch_size` texts, runs as one forward pass. Decoders
//! batch continuously: up to `max_batch_size` requests generate together over one KV cache, a new request
//! joins between decode steps and a finished one leaves at once, each row with its own sampling settings and
//! random stream. A full queue answers 429, a request past its deadline 504, bad input 400/404/413 with OpenAI's
//! error body; no request can panic the server. SIGTERM or Ctrl-C stops accepting connections and lets in-flight
//! requests finish.

mod classify;
mod complete;
mod openai;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// What `finetune serve` runs: the model and the server's limits.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// A classifier directory, a decoder (HF directory or GGUF file) or a LoRA adapter directory (with `base`).
    pub model: String,
    pub base: Option<String>,
    pub host: String,
    /// 0 picks a free port (printed at start).
    pub port: u16,
    /// The name clients send as `model` (default: the model directory's name).
    pub model_name: Option<String>,
    /// Most requests generating at once (decoders) or texts per batch (classifiers).
    pub max_batch_size: usize,
    /// How long the first waiting request waits for others to join its batch (decoders: only when none is
    /// generating; otherwise requests join the running batch at the next step).
    pub batch_window: Duration,
    /// Requests waiting for the model beyond the running batch; more get 429.
    pub max_queue: usize,
    /// Largest request body in bytes; more get 413.
    pub max_body_bytes: usize,
    /// Largest prompt in tokens (default: the model's context less `max_tokens`).
    pub max_prompt_tokens: Option<usize>,
    /// Largest `max_tokens` a request may ask for.
    pub max_tokens_limit: usize,
    /// `max_tokens` when a request gives none (OpenAI's completions default is 16).
    pub default_max_tokens: usize,
    /// Deadline of a request from its arrival; past it the request gets 504 (a stream ends with an error event).
    pub timeout: Duration,
    /// Classifiers: tokens per text (capped by the model).
    pub max_seq_length: usize,
    /// Classifiers: most texts in one `/predict` request.
    pub max_inputs_per_request: usize,
    /// Matmuls in bfloat16 (classifiers), as `bf16 = true` in training.
    pub bf16: bool,
    /// Decoders: decode steps from int8 (Q8_0) copies of the weights (`--int8`).
    pub int8: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            model: String::new(),
            base: None,
            host: "127.0.0.1".into(),
            port: 8080,
            model_name: None,
            max_batch_size: 8,
            batch_window: Duration::from_millis(5),
            max_queue: 64,
            max_body_bytes: 1 << 20,
            max_prompt_tokens: None,
            max_tokens_limit: 512,
            default_max_tokens: 16,
            timeout: Duration::from_secs(120),
            max_seq_length: 128,
            max_inputs_per_request: 256,
            bf16: false,
            int8: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Model(String),
    #[error("{0}")]
    Io(String),
}

/// An error answer: HTTP status and OpenAI's `{"error": {"message", "type", "param", "code"}}` body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>, param: Option<&str>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            param: param.map(str::to_string),
            code: None,
        }
    }
    pub fn new(status: StatusCode, message: impl Into<String>, code: Option<&'static str>) -> Self {
        ApiError { status, message: message.into(), param: None, code }
    }
    pub fn queue_full() -> Self {
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "the request queue is full; retry later", Some("queue_full"))
    }
    pub fn timeout(t: Duration) -> Self {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("the request did not finish within the server's timeout of {} s", t.as_secs_f64()),
            Some("timeout"),
        )
    }
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message, Some("internal_error"))
    }
    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            400 | 404 | 413 | 422 => "invalid_request_error",
            429 => "rate_limit_error",
            504 => "timeout_error",
            _ => "server_error",
        }
    }
    pub fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind(), "param": self.param, "code": self.code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// A JSON request body, or the error naming what is wrong with it (too large, not JSON, a bad field).
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| ApiError::new(e.status(), e.body_text(), None))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("request body: {e}"), None))
}

pub(crate) fn unix_time() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A short unique id for responses (`cmpl-…`, `chatcmpl-…`).
pub(crate) fn response_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    format!("{prefix}-{:x}{n:x}", t ^ u64::from(std::process::id()) << 40)
}

/// What kind of model a path holds: a decoder (GGUF file, LoRA adapter, `*ForCausalLM`/`*LMHeadModel`) or an
/// encoder classifier (anything else with a config.json).
fn is_decoder(spec: &str) -> Result<bool, ServeError> {
    let p = Path::new(spec);
    if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) || p.join("adapter_config.json").is_file() {
        return Ok(true);
    }
    if p.is_dir()
        && std::fs::read_dir(p).is_ok_and(|mut d| {
            d.any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x.eq_ignore_ascii_case("gguf"))))
        })
        && !p.join("config.json").is_file()
    {
        return Ok(true);
    }
    let model = |e: finetune_models::checkpoint::CheckpointError| ServeError::Model(e.to_string());
    let arch = finetune_models::checkpoint::model_architecture(spec).map_err(model)?;
    if !arch.is_empty() {
        return Ok(finetune_models::checkpoint::is_causal_lm_architecture(&arch));
    }
    // A config.json without `architectures`: its model_type decides, by the decoder architecture table.
    let mt = finetune_models::checkpoint::model_type(spec).map_err(model)?;
    Ok(finetune_models::causal::MODEL_TYPES.iter().any(|t| t.contains(&mt.as_str())))
}

/// The state every handler shares.
pub(crate) struct App {
    pub name: String,
    pub opts: ServeOptions,
    pub backend: Backend,
    pub created: u64,
}

pub(crate) enum Backend {
    Classifier(classify::Queue),
    Decoder(complete::Queue),
}

/// Every batch of requests has its own shape (dynamic padding), so its activation buffers are allocated and freed
/// per batch. glibc hands large freed blocks back to the kernel (`munmap`, heap trimming), and the next batch
/// pays a page fault per 4 KiB to get them back (measured: 700 000 faults, about a tenth of the server's CPU
/// time, for 1 280 short reviews). Raising the mmap threshold to its maximum (32 MiB) and the trim threshold keeps
/// them in the heap for the next batch; the server's resident memory then stays at its peak.
fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before the server's threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Loads the model, binds the address, calls `ready` with it, and serves until SIGTERM or Ctrl-C; in-flight
/// requests finish before it returns.
pub fn serve(opts: ServeOptions, ready: impl FnOnce(SocketAddr, &str, &str)) -> Result<(), ServeError> {
    retain_freed_memory();
    let name = opts.model_name.clone().unwrap_or_else(|| {
        let p = Path::new(opts.model.trim_end_matches('/'));
        p.file_stem().map_or_else(|| opts.model.clone(), |s| s.to_string_lossy().into_owned())
    });
    let (backend, kind) = if is_decoder(&opts.model)? {
        (Backend::Decoder(complete::Queue::start(&opts)?), "decoder: /v1/completions, /v1/chat/completions")
    } else {
        (Backend::Classifier(classify::Queue::start(&opts)?), "classifier: /predict")
    };
    let app = Arc::new(App { name: name.clone(), opts: opts.clone(), backend, created: unix_time() });
    let router = Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/predict", post(classify::predict))
        .route("/v1/completions", post(complete::completions))
        .route("/v1/chat/completions", post(complete::chat_completions))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(opts.max_body_bytes))
        .with_state(app);
    // Two threads are plenty for HTTP: the model's work runs on the worker thread and its kernels' own pool.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| ServeError::Io(format!("tokio runtime: {e}")))?;
    rt.block_on(async move {
        let addr = format!("{}:{}", opts.host, opts.port);
        let listener =
            tokio::net::TcpListener::bind(&addr).await.map_err(|e| ServeError::Io(format!("bind {addr}: {e}")))?;
        let local = listener.local_addr().map_err(|e| ServeError::Io(format!("bind {addr}: {e}")))?;
        ready(local, &name, kind);
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(|e| ServeError::Io(format!("serve: {e}")))
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    eprintln!("finetune serve: shutting down; finishing in-flight requests");
}

async fn health(State(app): State<Arc<App>>) -> Json<Value> {
    let kind = match app.backend {
        Backend::Classifier(_) => "classifier",
        Backend::Decoder(_) => "decoder",
    };
    Json(json!({"status": "ok", "model": app.name, "kind": kind}))
}

async fn models(State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{"id": app.name, "object": "model", "created": app.created, "owned_by": "finetune"}],
    }))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint", Some("not_found"))
}

/// One line per request on stderr: endpoint, status, sizes and time.
pub(crate) fn access_log(endpoint: &str, status: StatusCode, detail: &str, started: Instant) {
    eprintln!("{endpoint} {} {detail} {:.3} s", status.as_u16(), started.elapsed().as_secs_f64());
}
