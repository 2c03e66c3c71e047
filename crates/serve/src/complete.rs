//! OpenAI-compatible completions for decoders: requests batched on the model's thread, text streamed back as
//! it is generated (server-sent events), stop sequences, per-request seeds and deadlines.

use std::convert::Infallible;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use finetune_data::sft::{CausalTokenize, SftTokenizer};
use finetune_models::causal_tokenizer::CausalTokenizer;
use finetune_models::generate::{generate_rows, GenerationConfig};
use finetune_train::decoder::pad_id;
use finetune_train::CausalLm;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::openai::{parse_request, ChatRequest, Checked, CompletionRequest, CHAT_FIELDS, COMPLETION_FIELDS};
use crate::{access_log, parse_body, response_id, unix_time, ApiError, App, Backend, ServeError, ServeOptions};

/// What the model thread sends back for one request.
#[derive(Debug)]
enum Gen {
    /// New text, in order.
    Text(String),
    Done {
        finish_reason: &'static str,
        completion_tokens: usize,
    },
    Error(ApiError),
}

struct Job {
    prompt: Vec<u32>,
    cfg: GenerationConfig,
    stop: Vec<String>,
    deadline: Instant,
    tx: UnboundedSender<Gen>,
}

/// The decoder's request queue and what request handling needs of the model.
pub(crate) struct Queue {
    tx: SyncSender<Job>,
    tok: Arc<CausalTokenizer>,
    /// The context length: prompt + completion tokens must fit.
    context: Option<usize>,
    eos: Vec<u32>,
    pad: u32,
    timeout: Duration,
}

impl Queue {
    pub fn start(opts: &ServeOptions) -> Result<Self, ServeError> {
        let err = |e: finetune_train::TrainError| ServeError::Model(e.to_string());
        let model = CausalLm::for_inference(&opts.model, opts.base.as_deref()).map_err(err)?;
        let tok = Arc::new(model.inference_tokenizer(&opts.model).map_err(err)?);
        let context = model
            .model
            .max_positions()
            .or_else(|| model.config.get("max_position_embeddings").and_then(Value::as_u64).map(|n| n as usize));
        let eos = model.eos_token_ids(&tok);
        let pad = pad_id(&tok);
        let (tx, rx) = sync_channel::<Job>(opts.max_queue);
        let (max_batch, window) = (opts.max_batch_size.max(1), opts.batch_window);
        let worker_tok = Arc::clone(&tok);
        let timeout = opts.timeout;
        std::thread::Builder::new()
            .name("decoder".into())
            .spawn(move || worker(model, worker_tok, rx, max_batch, window, timeout))
            .map_err(|e| ServeError::Io(format!("worker thread: {e}")))?;
        Ok(Queue { tx, tok, context, eos, pad, timeout })
    }
}

fn worker(
    model: CausalLm,
    tok: Arc<CausalTokenizer>,
    rx: Receiver<Job>,
    max_batch: usize,
    window: Duration,
    timeout: Duration,
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let until = Instant::now() + window;
        while jobs.len() < max_batch {
            match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(j) => jobs.push(j),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        let now = Instant::now();
        // Clients that left are dropped; requests whose deadline passed in the queue get their 504 now.
        jobs.retain(|j| !j.tx.is_closed());
        let (live, late): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| j.deadline > now);
        for j in late {
            let _ = j.tx.send(Gen::Error(ApiError::timeout(timeout)));
        }
        if live.is_empty() {
            continue;
        }
        let senders: Vec<UnboundedSender<Gen>> = live.iter().map(|j| j.tx.clone()).collect();
        match catch_unwind(AssertUnwindSafe(|| run_batch(&model, &tok, &live, timeout))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                for tx in senders {
                    let _ = tx.send(Gen::Error(e.clone()));
                }
            }
            Err(_) => {
                for tx in senders {
                    let _ = tx.send(Gen::Error(ApiError::internal("generation failed on this batch")));
                }
            }
        }
    }
}

/// Per-row progress of a batch.
#[derive(Default)]
struct Row {
    /// Bytes of the decoded text already sent.
    sent: usize,
    /// Why the row stopped early: a stop sequence, or the client leaving / the deadline.
    stopped: Option<&'static str>,
    timed_out: bool,
}

/// How many trailing bytes of `text` could begin one of `stops` and so must wait for the next token.
fn held_back(text: &str, stops: &[String]) -> usize {
    let mut hold = 0;
    for s in stops {
        for k in (1..s.len()).rev() {
            if k > hold && s.is_char_boundary(k) && text.ends_with(&s[..k]) {
                hold = k;
                break;
            }
        }
    }
    hold
}

fn run_batch(model: &CausalLm, tok: &CausalTokenizer, jobs: &[Job], timeout: Duration) -> Result<(), ApiError> {
    let prompts: Vec<Vec<u32>> = jobs.iter().map(|j| j.prompt.clone()).collect();
    let cfgs: Vec<GenerationConfig> = jobs.iter().map(|j| j.cfg.clone()).collect();
    let mut rows: Vec<Row> = jobs.iter().map(|_| Row::default()).collect();
    let mut failure: Option<ApiError> = None;
    let mut on_token = |b: usize, ids: &[u32]| -> bool {
        let (job, row) = (&jobs[b], &mut rows[b]);
        if job.tx.is_closed() {
            row.stopped = Some("cancelled");
            return true;
        }
        if Instant::now() > job.deadline {
            row.timed_out = true;
            return true;
        }
        let text = match tok.decode(ids, true) {
            Ok(t) => t,
            Err(e) => {
                failure = Some(ApiError::internal(format!("decoding: {e}")));
                return true;
            }
        };
        if let Some(cut) = job.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
            if cut > row.sent {
                let _ = job.tx.send(Gen::Text(text[row.sent..cut].to_string()));
            }
            row.sent = cut.max(row.sent);
            row.stopped = Some("stop");
            return true;
        }
        // An incomplete UTF-8 sequence decodes to U+FFFD until its last byte arrives; a possible stop
        // sequence's beginning waits too.
        let mut end = text.len() - held_back(&text, &job.stop);
        while end > row.sent && text[..end].ends_with('\u{FFFD}') {
            end -= '\u{FFFD}'.len_utf8();
        }
        if end > row.sent && text.is_char_boundary(end) && text.is_char_boundary(row.sent) {
            let _ = job.tx.send(Gen::Text(text[row.sent..end].to_string()));
            row.sent = end;
        }
        false
    };
    let generated = generate_rows(&model.model, &prompts, &cfgs, &mut on_token)
        .map_err(|e| ApiError::internal(format!("generation: {e}")))?;
    if let Some(e) = failure {
        return Err(e);
    }
    for ((job, row), ids) in jobs.iter().zip(&rows).zip(&generated) {
        if row.timed_out {
            let _ = job.tx.send(Gen::Error(ApiError::timeout(timeout)));
            continue;
        }
        let finish_reason = match row.stopped {
            Some(r) => r,
            None if ids.last().is_some_and(|t| job.cfg.eos_token_id.contains(t)) => "stop",
            None => "length",
        };
        if row.stopped.is_none() {
            // What was held back for a stop sequence that never came.
            let text = tok.decode(ids, true).map_err(|e| ApiError::internal(format!("decoding: {e}")))?;
            if text.len() > row.sent && text.is_char_boundary(row.sent) {
                let _ = job.tx.send(Gen::Text(text[row.sent..].to_string()));
            }
        }
        let _ = job.tx.send(Gen::Done { finish_reason, completion_tokens: ids.len() });
    }
    Ok(())
}

/// The seed of a request without one: different per request, as OpenAI's sampling is.
fn fresh_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    t ^ COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
}

impl Queue {
    /// Checks the prompt's length and queues it; the receiver gets the text as it is generated.
    fn submit(
        &self,
        prompt: Vec<u32>,
        c: &Checked,
        max_prompt: Option<usize>,
    ) -> Result<UnboundedReceiver<Gen>, ApiError> {
        if prompt.is_empty() {
            return Err(ApiError::bad_request("the prompt is empty (no tokens)", Some("prompt")));
        }
        let n = prompt.len();
        if let Some(limit) = max_prompt.filter(|&l| n > l) {
            return Err(ApiError::bad_request(
                format!("the prompt has {n} tokens; this server takes at most {limit}"),
                Some("prompt"),
            ));
        }
        if let Some(ctx) = self.context.filter(|&ctx| n + c.max_tokens > ctx) {
            return Err(ApiError::bad_request(
                format!(
                    "This model's maximum context length is {ctx} tokens. However, you requested {} tokens ({n} in \
                     the prompt, {} for the completion). Please reduce the prompt or max_tokens.",
                    n + c.max_tokens,
                    c.max_tokens
                ),
                Some("max_tokens"),
            ));
        }
        let cfg = GenerationConfig {
            max_new_tokens: c.max_tokens,
            do_sample: c.temperature > 0.0,
            temperature: if c.temperature > 0.0 { c.temperature } else { 1.0 },
            // OpenAI's sampling has no top-k.
            top_k: 0,
            top_p: c.top_p,
            repetition_penalty: 1.0,
            eos_token_id: self.eos.clone(),
            pad_token_id: Some(self.pad),
            seed: c.seed.unwrap_or_else(fresh_seed),
        };
        let (tx, rx) = unbounded_channel();
        let job = Job { prompt, cfg, stop: c.stop.clone(), deadline: Instant::now() + self.timeout, tx };
        match self.tx.try_send(job) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(ApiError::queue_full()),
            Err(TrySendError::Disconnected(_)) => Err(ApiError::internal("the model worker has stopped")),
        }
    }
}

/// The whole completion of one request.
struct Finished {
    text: String,
    finish_reason: &'static str,
    completion_tokens: usize,
}

async fn collect(mut rx: UnboundedReceiver<Gen>, timeout: Duration) -> Result<Finished, ApiError> {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + timeout + Duration::from_secs(1);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => return Err(ApiError::timeout(timeout)),
            Ok(None) => return Err(ApiError::internal("the model worker dropped the request")),
            Ok(Some(Gen::Text(t))) => text.push_str(&t),
            Ok(Some(Gen::Done { finish_reason, completion_tokens })) => {
                return Ok(Finished { text, finish_reason, completion_tokens })
            }
            Ok(Some(Gen::Error(e))) => return Err(e),
        }
    }
}

fn decoder(app: &App) -> Result<&Queue, ApiError> {
    match &app.backend {
        Backend::Decoder(q) => Ok(q),
        Backend::Classifier(_) => {
            Err(ApiError::new(StatusCode::NOT_FOUND, "this server runs a classifier: use /predict", Some("not_found")))
        }
    }
}

fn check_model(app: &App, model: Option<&str>) -> Result<(), ApiError> {
    match model {
        Some(m) if m != app.name => Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("The model `{m}` does not exist. This server serves `{}`.", app.name),
            param: Some("model".into()),
            code: Some("model_not_found"),
        }),
        _ => Ok(()),
    }
}

fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
           "total_tokens": prompt_tokens + completion_tokens})
}

/// Which endpoint a response is for: the object names and the shape of a choice.
#[derive(Clone, Copy, PartialEq)]
enum Endpoint {
    Completions,
    Chat,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Endpoint::Completions => "/v1/completions",
            Endpoint::Chat => "/v1/chat/completions",
        }
    }
    fn choice(self, index: usize, text: &str, finish: &str) -> Value {
        match self {
            Endpoint::Completions => {
                json!({"index": index, "text": text, "logprobs": null, "finish_reason": finish})
            }
            Endpoint::Chat => json!({"index": index, "message": {"role": "assistant", "content": text},
                                     "logprobs": null, "finish_reason": finish}),
        }
    }
    fn chunk(self, id: &str, created: u64, model: &str, delta: Option<&str>, finish: Option<&str>) -> Value {
        let choice = match self {
            Endpoint::Completions => {
                json!({"index": 0, "text": delta.unwrap_or(""), "logprobs": null, "finish_reason": finish})
            }
            Endpoint::Chat => {
                let d = delta.map_or(json!({}), |t| json!({"content": t}));
                json!({"index": 0, "delta": d, "logprobs": null, "finish_reason": finish})
            }
        };
        let object = if self == Endpoint::Chat { "chat.completion.chunk" } else { "text_completion" };
        json!({"id": id, "object": object, "created": created, "model": model, "choices": [choice]})
    }
}

pub(crate) async fn completions(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let prepared = (|| {
        let q = decoder(&app)?;
        let req: CompletionRequest = parse_request(parse_body(body)?, COMPLETION_FIELDS)?;
        req.check_extra()?;
        check_model(&app, req.sampling.model.as_deref())?;
        let c = req.sampling.check(app.opts.default_max_tokens, app.opts.max_tokens_limit)?;
        let prompts = req.prompt.into_vec();
        if prompts.is_empty() {
            return Err(ApiError::bad_request("`prompt` is an empty list", Some("prompt")));
        }
        if c.stream && prompts.len() > 1 {
            return Err(ApiError::bad_request("streaming takes one prompt per request", Some("prompt")));
        }
        let st = SftTokenizer::new(q.tok.as_ref()).map_err(|e| ApiError::internal(e.to_string()))?;
        let mut ids = Vec::with_capacity(prompts.len());
        for p in &prompts {
            ids.push(st.text_prompt(p).map_err(|e| ApiError::bad_request(e.to_string(), Some("prompt")))?);
        }
        Ok((c, ids, req.sampling.user))
    })();
    match prepared {
        Ok((c, ids, user)) => respond(app, Endpoint::Completions, c, ids, user, started).await,
        Err(e) => {
            access_log(Endpoint::Completions.path(), e.status, &e.message, started);
            e.into_response()
        }
    }
}

pub(crate) async fn chat_completions(State(app): State<Arc<App>>, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let prepared = (|| {
        let q = decoder(&app)?;
        let mut req: ChatRequest = parse_request(parse_body(body)?, CHAT_FIELDS)?;
        check_model(&app, req.sampling.model.as_deref())?;
        if let Some(m) = req.max_completion_tokens {
            if req.sampling.max_tokens.is_some_and(|t| t != m) {
                return Err(ApiError::bad_request(
                    "`max_tokens` and `max_completion_tokens` disagree; give one",
                    Some("max_completion_tokens"),
                ));
            }
            req.sampling.max_tokens = Some(m);
        }
        // Chat has no completions-style default of 16: the answer may run to the server's limit.
        let explicit = req.sampling.max_tokens.is_some();
        let c = req.sampling.check(app.opts.max_tokens_limit, app.opts.max_tokens_limit)?;
        let messages = req.messages()?;
        let st = SftTokenizer::new(q.tok.as_ref()).map_err(|e| ApiError::internal(e.to_string()))?;
        let ids = st.chat_prompt(&messages).map_err(|e| ApiError::bad_request(e.to_string(), Some("messages")))?;
        Ok((c, vec![ids], req.sampling.user, explicit))
    })();
    match prepared {
        Ok((mut c, ids, user, explicit)) => {
            // Without an explicit max_tokens the answer may use what the context leaves, up to the limit.
            if let (false, Ok(q)) = (explicit, decoder(&app)) {
                if let Some(room) = q.context.map(|ctx| ctx.saturating_sub(ids[0].len())).filter(|&r| r > 0) {
                    c.max_tokens = c.max_tokens.min(room);
                }
            }
            respond(app, Endpoint::Chat, c, ids, user, started).await
        }
        Err(e) => {
            access_log(Endpoint::Chat.path(), e.status, &e.message, started);
            e.into_response()
        }
    }
}

async fn respond(
    app: Arc<App>,
    ep: Endpoint,
    c: Checked,
    prompts: Vec<Vec<u32>>,
    user: Option<String>,
    started: Instant,
) -> Response {
    let q = match decoder(&app) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let max_prompt = app.opts.max_prompt_tokens;
    let prompt_tokens: usize = prompts.iter().map(Vec::len).sum();
    let who = user.map(|u| format!(" user={u}")).unwrap_or_default();
    let mut receivers = Vec::with_capacity(prompts.len());
    for p in prompts {
        match q.submit(p, &c, max_prompt) {
            Ok(rx) => receivers.push(rx),
            Err(e) => {
                access_log(ep.path(), e.status, &e.message, started);
                return e.into_response();
            }
        }
    }
    let id = response_id(if ep == Endpoint::Chat { "chatcmpl" } else { "cmpl" });
    let created = unix_time();
    if c.stream {
        let rx = receivers.pop().expect("one prompt when streaming");
        return stream(app.clone(), ep, id, created, rx, prompt_tokens, c.include_usage, who, started);
    }
    let mut choices = Vec::with_capacity(receivers.len());
    let mut completion_tokens = 0;
    for (i, rx) in receivers.into_iter().enumerate() {
        match collect(rx, q.timeout).await {
            Ok(f) => {
                completion_tokens += f.completion_tokens;
                choices.push(ep.choice(i, &f.text, f.finish_reason));
            }
            Err(e) => {
                access_log(ep.path(), e.status, &format!("{}{who}", e.message), started);
                return e.into_response();
            }
        }
    }
    let object = if ep == Endpoint::Chat { "chat.completion" } else { "text_completion" };
    let detail = format!("{prompt_tokens} prompt + {completion_tokens} completion tokens{who}");
    access_log(ep.path(), StatusCode::OK, &detail, started);
    Json(json!({
        "id": id, "object": object, "created": created, "model": app.name, "choices": choices,
        "usage": usage(prompt_tokens, completion_tokens),
    }))
    .into_response()
}

/// Server-sent events: OpenAI's chunks as the text is generated, then `data: [DONE]`. A failure after the
/// stream began (e.g. the deadline) is sent as an `{"error": ...}` event before the stream ends.
#[allow(clippy::too_many_arguments)]
fn stream(
    app: Arc<App>,
    ep: Endpoint,
    id: String,
    created: u64,
    mut rx: UnboundedReceiver<Gen>,
    prompt_tokens: usize,
    include_usage: bool,
    who: String,
    started: Instant,
) -> Response {
    let (out, events) = unbounded_channel::<Result<Event, Infallible>>();
    let name = app.name.clone();
    tokio::spawn(async move {
        let send = |v: Value| out.send(Ok(Event::default().data(v.to_string()))).is_ok();
        if ep == Endpoint::Chat {
            let first = ep.chunk(&id, created, &name, None, None);
            let mut first = first;
            first["choices"][0]["delta"] = json!({"role": "assistant", "content": ""});
            if !send(first) {
                return;
            }
        }
        while let Some(g) = rx.recv().await {
            match g {
                Gen::Text(t) => {
                    if !send(ep.chunk(&id, created, &name, Some(&t), None)) {
                        return;
                    }
                }
                Gen::Done { finish_reason, completion_tokens } => {
                    let mut last = ep.chunk(&id, created, &name, None, Some(finish_reason));
                    if ep == Endpoint::Completions {
                        last["choices"][0]["text"] = json!("");
                    }
                    send(last);
                    if include_usage {
                        send(
                            json!({"id": id, "object": if ep == Endpoint::Chat { "chat.completion.chunk" } else { "text_completion" },
                                    "created": created, "model": name, "choices": [],
                                    "usage": usage(prompt_tokens, completion_tokens)}),
                        );
                    }
                    let _ = out.send(Ok(Event::default().data("[DONE]")));
                    let detail =
                        format!("{prompt_tokens} prompt + {completion_tokens} completion tokens, streamed{who}");
                    access_log(ep.path(), StatusCode::OK, &detail, started);
                    return;
                }
                Gen::Error(e) => {
                    send(e.body());
                    access_log(ep.path(), e.status, &format!("{} (streaming){who}", e.message), started);
                    return;
                }
            }
        }
    });
    Sse::new(UnboundedReceiverStream::new(events)).keep_alive(KeepAlive::default()).into_response()
}
