//! OpenAI-compatible completions for decoders: requests generated with continuous batching on the model's
//! thread (a request joins the running batch between decode steps and leaves it when it ends), text streamed
//! back as it is generated (server-sent events), stop sequences, per-request seeds and deadlines.

use std::convert::Infallible;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
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
use finetune_models::batch::{ContinuousBatch, Token};
use finetune_models::causal::CausalModel;
use finetune_models::causal_tokenizer::CausalTokenizer;
use finetune_models::generate::{GenerateError, GenerationConfig};
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
        if opts.bf16 {
            return Err(ServeError::Model(
                "--bf16 is for classifiers; a decoder generates in f32, or from int8 weights with --int8".into(),
            ));
        }
        let mut model = CausalLm::for_inference(&opts.model, opts.base.as_deref()).map_err(err)?;
        if opts.int8 {
            let bytes = model.model.quantize_int8().map_err(|e| ServeError::Model(e.to_string()))?;
            eprintln!(
                "int8: {:.0} MB of int8 weight copies for the decode steps, {} kernel",
                bytes as f64 / 1e6,
                finetune_engine::int8::kernel_name()
            );
        }
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
    let mut batch = ContinuousBatch::new(&model.model, max_batch);
    let mut rows: Vec<Option<Live>> = (0..batch.capacity()).map(|_| None).collect();
    while let Some(jobs) = take_jobs(&rx, batch.free(), batch.is_empty(), window) {
        let now = Instant::now();
        for job in jobs {
            // Clients that left are dropped; requests whose deadline passed in the queue get their 504 now.
            if job.tx.is_closed() {
                continue;
            }
            if job.deadline <= now {
                let _ = job.tx.send(Gen::Error(ApiError::timeout(timeout)));
                continue;
            }
            admit(&mut batch, &mut rows, &tok, job);
        }
        let now = Instant::now();
        for (slot, r) in rows.iter_mut().enumerate() {
            let Some(row) = r.as_ref() else { continue };
            if row.job.tx.is_closed() || now > row.job.deadline {
                if !row.job.tx.is_closed() {
                    let _ = row.job.tx.send(Gen::Error(ApiError::timeout(timeout)));
                }
                *r = None;
                batch.finish(slot);
            }
        }
        if !batch.is_empty() {
            step(&mut batch, &mut rows, &tok);
        }
    }
}

/// The requests to start now, up to `free`: while rows are generating, whatever is already waiting (new rows
/// join between decode steps); when none is, the first to arrive and those within `window` after it. None once
/// the queue is closed and nothing is left to do.
fn take_jobs(rx: &Receiver<Job>, free: usize, idle: bool, window: Duration) -> Option<Vec<Job>> {
    let mut jobs = Vec::new();
    if idle {
        jobs.push(rx.recv().ok()?);
        let until = Instant::now() + window;
        while jobs.len() < free {
            match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(j) => jobs.push(j),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
    } else {
        while jobs.len() < free {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
    }
    Some(jobs)
}

/// Prefills `job` on a free slot and handles its first token.
fn admit(batch: &mut ContinuousBatch<'_, CausalModel>, rows: &mut [Option<Live>], tok: &CausalTokenizer, job: Job) {
    let tx = job.tx.clone();
    let run = catch_unwind(AssertUnwindSafe(|| {
        let t = batch.add(&job.prompt, job.cfg.clone())?;
        let mut row = Live::new(job);
        if !row.take(tok, t.id, t.done) {
            rows[t.slot] = Some(row);
        } else if !t.done {
            batch.finish(t.slot);
        }
        Ok::<(), GenerateError>(())
    }));
    match run {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = tx.send(Gen::Error(ApiError::internal(format!("generation: {e}"))));
        }
        Err(_) => {
            let _ = tx.send(Gen::Error(ApiError::internal("generation failed on this request")));
            // What the batch held may be half-updated: its rows end too.
            fail_all(batch, rows, ApiError::internal("generation failed on this batch"));
        }
    }
}

/// One decode step of every row; rows that end leave the batch.
fn step(batch: &mut ContinuousBatch<'_, CausalModel>, rows: &mut [Option<Live>], tok: &CausalTokenizer) {
    let run = catch_unwind(AssertUnwindSafe(|| {
        let tokens: Vec<Token> = batch.step()?.to_vec();
        for t in tokens {
            let ended = match rows.get_mut(t.slot).and_then(Option::as_mut) {
                Some(row) => row.take(tok, t.id, t.done),
                None => true,
            };
            if ended {
                rows[t.slot] = None;
                if !t.done {
                    batch.finish(t.slot);
                }
            }
        }
        Ok::<(), GenerateError>(())
    }));
    match run {
        Ok(Ok(())) => {}
        Ok(Err(e)) => fail_all(batch, rows, ApiError::internal(format!("generation: {e}"))),
        Err(_) => fail_all(batch, rows, ApiError::internal("generation failed on this batch")),
    }
}

/// Ends every row with `e`.
fn fail_all(batch: &mut ContinuousBatch<'_, CausalModel>, rows: &mut [Option<Live>], e: ApiError) {
    for row in rows.iter_mut().filter_map(Option::take) {
        let _ = row.job.tx.send(Gen::Error(e.clone()));
    }
    batch.clear();
}

/// Text of a growing token sequence, decoded a few tokens at a time as `tokenizers`' `DecodeStream` does: each
/// new token decodes only the tokens since the last complete piece, after one piece of context (so that
/// decoders that drop a leading space see the same text as when decoding the whole), whatever the length.
#[derive(Default)]
struct DecodeStream {
    ids: Vec<u32>,
    /// Start of the context in `ids`.
    prefix: usize,
    /// Tokens before this have been turned into text.
    read: usize,
}

impl DecodeStream {
    /// Adds `id`; returns the new text once it forms complete characters (an incomplete UTF-8 sequence decodes
    /// to U+FFFD until its last byte arrives).
    fn push(&mut self, tok: &CausalTokenizer, id: u32) -> Result<String, ApiError> {
        self.ids.push(id);
        let (done, full) = self.window(tok)?;
        if full.len() <= done.len() || full.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        self.prefix = self.read;
        self.read = self.ids.len();
        Ok(full[common_prefix(&done, &full)..].to_string())
    }

    /// The text still held back when the sequence ends.
    fn flush(&mut self, tok: &CausalTokenizer) -> Result<String, ApiError> {
        let (done, full) = self.window(tok)?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        Ok(full[common_prefix(&done, &full)..].to_string())
    }

    /// The context alone and the context with the tokens after it, decoded.
    fn window(&self, tok: &CausalTokenizer) -> Result<(String, String), ApiError> {
        let dec = |ids: &[u32]| tok.decode(ids, true).map_err(|e| ApiError::internal(format!("decoding: {e}")));
        Ok((dec(&self.ids[self.prefix..self.read])?, dec(&self.ids[self.prefix..])?))
    }
}

/// Bytes at the start of `b` equal to the start of `a` (normally all of `a`: decoding more tokens only appends).
fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices().zip(b.chars()).find(|((_, x), y)| x != y).map_or(a.len().min(b.len()), |((i, _), _)| i)
}

/// A request generating on a slot of the batch.
struct Live {
    job: Job,
    tokens: usize,
    stream: DecodeStream,
    /// The decoded text so far, and how many of its bytes were sent.
    text: String,
    sent: usize,
}

impl Live {
    fn new(job: Job) -> Self {
        Live { job, tokens: 0, stream: DecodeStream::default(), text: String::new(), sent: 0 }
    }

    /// Takes the row's next token (`last`: its final one): sends the text that can no longer change and, when
    /// the row ends here (a stop sequence, the last token, a decoding failure), its end. True when it ended.
    fn take(&mut self, tok: &CausalTokenizer, id: u32, last: bool) -> bool {
        self.tokens += 1;
        let before = self.text.len();
        let new = self.stream.push(tok, id).and_then(|t| if last { Ok(t + &self.stream.flush(tok)?) } else { Ok(t) });
        match new {
            Ok(t) => self.text.push_str(&t),
            Err(e) => {
                let _ = self.job.tx.send(Gen::Error(e));
                return true;
            }
        }
        if let Some(cut) = self.find_stop(before) {
            self.send(cut);
            return self.end("stop");
        }
        if last {
            self.send(self.text.len());
            return self.end(if self.job.cfg.eos_token_id.contains(&id) { "stop" } else { "length" });
        }
        // What could be the beginning of a stop sequence waits for the next token.
        let end = self.text.len() - held_back(&self.text, &self.job.stop);
        self.send(end);
        false
    }

    /// The first stop sequence in the text; only one reaching past `before` (the text's length before this
    /// token) can be new, so the search starts a stop's length before it.
    fn find_stop(&self, before: usize) -> Option<usize> {
        let longest = self.job.stop.iter().map(String::len).max()?;
        let mut from = before.saturating_sub(longest.saturating_sub(1));
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        let tail = &self.text[from..];
        self.job.stop.iter().filter_map(|s| tail.find(s.as_str())).min().map(|i| from + i)
    }

    /// Sends the text up to byte `end` not sent yet.
    fn send(&mut self, end: usize) {
        if end > self.sent && self.text.is_char_boundary(end) && self.text.is_char_boundary(self.sent) {
            let _ = self.job.tx.send(Gen::Text(self.text[self.sent..end].to_string()));
            self.sent = end;
        }
    }

    fn end(&self, finish_reason: &'static str) -> bool {
        let _ = self.job.tx.send(Gen::Done { finish_reason, completion_tokens: self.tokens });
        true
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use finetune_data::sft::CausalTokenize;
    use std::path::PathBuf;

    fn gguf() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/gguf/tiny_llama.gguf")
    }

    fn tokenizer() -> CausalTokenizer {
        CausalTokenizer::from_gguf(gguf()).expect("tokenizer")
    }

    /// The pieces of a stream, the held-back rest included, as one string.
    fn streamed(tok: &CausalTokenizer, ids: &[u32]) -> String {
        let mut s = DecodeStream::default();
        let mut text = String::new();
        for &id in ids {
            text.push_str(&s.push(tok, id).expect("push"));
        }
        text + &s.flush(tok).expect("flush")
    }

    #[test]
    fn streamed_pieces_add_up_to_the_whole_decode() {
        let tok = tokenizer();
        // Multi-byte characters split over byte tokens, spaces, newlines, special tokens.
        let text = "Hello world  \n\tü ✓ <|im_start|>user\nHello<|im_end|> 12 123 x2 — ok";
        let text_ids = tok.encode_plain(text).expect("encode");
        assert!(text_ids.len() > 10);
        assert_eq!(streamed(&tok, &text_ids), tok.decode(&text_ids, true).expect("decode"));
        // Any ids, invalid UTF-8 included.
        let n = tok.vocab_size() as u32;
        for seed in 0..20u32 {
            let ids: Vec<u32> = (0..64u32).map(|i| (i * 7919 + seed * 104_729) % n).collect();
            assert_eq!(streamed(&tok, &ids), tok.decode(&ids, true).expect("decode"), "seed {seed}");
        }
        // Each token decodes a window of a few tokens, not the whole sequence.
        let mut s = DecodeStream::default();
        for &id in text_ids.iter().cycle().take(400) {
            s.push(&tok, id).expect("push");
            assert!(s.ids.len() - s.prefix <= 8, "window of {} tokens", s.ids.len() - s.prefix);
        }
    }

    type Rx = UnboundedReceiver<Gen>;

    fn job(tok: &CausalTokenizer, prompt: &str, max_tokens: usize, temperature: f32, stop: &[&str]) -> (Job, Rx) {
        let (tx, rx) = unbounded_channel();
        let cfg = GenerationConfig {
            max_new_tokens: max_tokens,
            do_sample: temperature > 0.0,
            temperature: if temperature > 0.0 { temperature } else { 1.0 },
            top_k: 0,
            seed: 5,
            ..Default::default()
        };
        let prompt = tok.encode_plain(prompt).expect("encode");
        let stop = stop.iter().map(|s| s.to_string()).collect();
        (Job { prompt, cfg, stop, deadline: Instant::now() + Duration::from_secs(600), tx }, rx)
    }

    /// Everything a request received so far: its text, and its end when it came.
    fn drain(rx: &mut Rx) -> (String, Option<(&'static str, usize)>) {
        let (mut text, mut end) = (String::new(), None);
        while let Ok(g) = rx.try_recv() {
            match g {
                Gen::Text(t) => text.push_str(&t),
                Gen::Done { finish_reason, completion_tokens } => end = Some((finish_reason, completion_tokens)),
                Gen::Error(e) => panic!("{e:?}"),
            }
        }
        (text, end)
    }

    /// Runs one request alone to its end.
    fn alone(model: &CausalModel, tok: &CausalTokenizer, j: (Job, Rx)) -> (String, (&'static str, usize)) {
        let mut batch = ContinuousBatch::new(model, 2);
        let mut rows: Vec<Option<Live>> = vec![None, None];
        let (job, mut rx) = j;
        admit(&mut batch, &mut rows, tok, job);
        while !batch.is_empty() {
            step(&mut batch, &mut rows, tok);
        }
        let (text, end) = drain(&mut rx);
        (text, end.expect("done"))
    }

    /// A short request that joins while a long one is mid-generation ends first, and both get what they get
    /// alone (greedy and seeded sampling, a stop sequence).
    #[test]
    fn a_short_request_joins_a_long_one_and_ends_first() {
        let model = CausalLm::for_inference(gguf().to_str().unwrap_or_default(), None).expect("model");
        let tok = model.inference_tokenizer(gguf().to_str().unwrap_or_default()).expect("tokenizer");
        let m = &model.model;
        let long = || job(&tok, "hello anna", 120, 0.0, &[]);
        let short = || job(&tok, "hello bob", 6, 1.0, &[]);
        let (want_long, want_short) = (alone(m, &tok, long()), alone(m, &tok, short()));
        assert_eq!(want_long.1, ("length", 120));

        let mut batch = ContinuousBatch::new(m, 4);
        let mut rows: Vec<Option<Live>> = (0..4).map(|_| None).collect();
        let ((lj, mut lrx), (sj, mut srx)) = (long(), short());
        admit(&mut batch, &mut rows, &tok, lj);
        for _ in 0..10 {
            step(&mut batch, &mut rows, &tok);
        }
        admit(&mut batch, &mut rows, &tok, sj);
        let (mut short_text, mut short_end) = (String::new(), None);
        while short_end.is_none() {
            step(&mut batch, &mut rows, &tok);
            let (t, e) = drain(&mut srx);
            short_text.push_str(&t);
            short_end = e;
        }
        let (mut long_text, long_end) = drain(&mut lrx);
        assert!(long_end.is_none(), "the long request is still generating");
        assert_eq!((short_text, short_end.expect("done")), want_short);
        while !batch.is_empty() {
            step(&mut batch, &mut rows, &tok);
        }
        let (rest, long_end) = drain(&mut lrx);
        long_text.push_str(&rest);
        assert_eq!((long_text, long_end.expect("done")), want_long);

        // A stop sequence found in the middle of the long answer ends it there, and frees its slot.
        let whole = &want_long.0;
        let (at, _) = whole.char_indices().nth(20).expect("a long answer");
        let stop: String = whole[at..].chars().take(3).collect();
        let cut = whole.find(&stop).expect("stop in the text");
        let (text, (reason, _)) = alone(m, &tok, job(&tok, "hello anna", 120, 0.0, &[&stop]));
        assert_eq!((text.as_str(), reason), (&whole[..cut], "stop"));
    }

    /// The worker thread: requests queued behind others and behind one whose client left are answered as
    /// alone, and the worker ends when the queue closes.
    #[test]
    fn the_worker_takes_requests_while_generating() {
        let spec = gguf().to_str().unwrap_or_default().to_string();
        let model = CausalLm::for_inference(&spec, None).expect("model");
        let tok = Arc::new(model.inference_tokenizer(&spec).expect("tokenizer"));
        let (want_long, want_short) = (
            alone(&model.model, &tok, job(&tok, "hello anna", 200, 0.0, &[])),
            alone(&model.model, &tok, job(&tok, "hello bob", 6, 1.0, &[])),
        );
        let (tx, rx) = sync_channel::<Job>(8);
        let worker_tok = Arc::clone(&tok);
        let w = std::thread::spawn(move || worker(model, worker_tok, rx, 1, Duration::ZERO, Duration::from_secs(600)));
        let collect = |mut rx: Rx| {
            let (mut text, mut end) = (String::new(), None);
            while let Some(g) = rx.blocking_recv() {
                match g {
                    Gen::Text(t) => text.push_str(&t),
                    Gen::Done { finish_reason, completion_tokens } => end = Some((finish_reason, completion_tokens)),
                    Gen::Error(e) => panic!("{e:?}"),
                }
            }
            (text, end.expect("done"))
        };
        // One slot: the request whose client left is dropped, the others wait for the slot in turn.
        let (gone, gone_rx) = job(&tok, "hello anna", 200, 0.0, &[]);
        tx.send(gone).expect("send");
        drop(gone_rx);
        let ((l, lrx), (s, srx)) = (job(&tok, "hello anna", 200, 0.0, &[]), job(&tok, "hello bob", 6, 1.0, &[]));
        tx.send(l).expect("send");
        tx.send(s).expect("send");
        assert_eq!(collect(lrx), want_long);
        assert_eq!(collect(srx), want_short);
        drop(tx);
        w.join().expect("the worker ends when the queue closes");
    }
}
