//! OpenAI's request bodies for `/v1/completions` and `/v1/chat/completions`, checked field by field. A field
//! this server does not implement is refused by name when set to anything but its no-op value, never ignored.

use serde::Deserialize;
use serde_json::Value;

use crate::ApiError;

/// `prompt` or `stop`: one string or a list.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Fields of [`Sampling`]; with each request's own, the only keys a request may carry (serde cannot deny
/// unknown fields through `flatten`).
const SAMPLING_FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stream",
    "stream_options",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "logit_bias",
    "user",
];
pub const COMPLETION_FIELDS: &[&str] = &["prompt", "echo", "best_of", "suffix"];
pub const CHAT_FIELDS: &[&str] = &["messages", "max_completion_tokens", "top_logprobs"];

/// Parses a request body whose keys must all be `own` or sampling fields; an unknown key is named in the error.
pub fn parse_request<T: serde::de::DeserializeOwned>(body: Value, own: &[&str]) -> Result<T, ApiError> {
    let Value::Object(map) = &body else {
        return Err(ApiError::bad_request("the request body must be a JSON object", None));
    };
    if let Some(k) = map.keys().find(|k| !own.contains(&k.as_str()) && !SAMPLING_FIELDS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!("unknown field `{k}`"), Some(k)));
    }
    serde_json::from_value(body).map_err(|e| ApiError::bad_request(format!("request body: {e}"), None))
}

/// The sampling fields both endpoints share.
#[derive(Deserialize, Debug, Clone, Default)]
pub struct Sampling {
    pub model: Option<String>,
    pub max_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub n: Option<usize>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub stop: Option<OneOrMany>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub logprobs: Option<Value>,
    pub logit_bias: Option<Value>,
    /// An end-user id; written to the access log.
    pub user: Option<String>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct CompletionRequest {
    pub prompt: OneOrMany,
    pub echo: Option<bool>,
    pub best_of: Option<usize>,
    pub suffix: Option<String>,
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// A chat message's content: a string or a list of `{"type": "text", "text": ...}` parts.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize, Debug, Clone)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub role: String,
    pub content: Option<Content>,
    pub name: Option<String>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub max_completion_tokens: Option<usize>,
    pub top_logprobs: Option<usize>,
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// Sampling settings after checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub max_tokens: usize,
    /// 0 is greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub stop: Vec<String>,
    pub seed: Option<u64>,
    pub stream: bool,
    pub include_usage: bool,
}

fn refuse(field: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!("`{field}` {why}"), Some(field))
}

impl Sampling {
    /// Checks every field against OpenAI's ranges and what this server implements.
    pub fn check(&self, default_max_tokens: usize, limit: usize) -> Result<Checked, ApiError> {
        let max_tokens = self.max_tokens.unwrap_or(default_max_tokens);
        if max_tokens == 0 {
            return Err(refuse("max_tokens", "must be at least 1"));
        }
        if max_tokens > limit {
            return Err(refuse("max_tokens", &format!("is {max_tokens}; this server allows at most {limit}")));
        }
        let temperature = self.temperature.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(refuse("temperature", &format!("must be between 0 and 2, got {temperature}")));
        }
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(refuse("top_p", &format!("must be in (0, 1], got {top_p}")));
        }
        if self.n.is_some_and(|n| n != 1) {
            return Err(refuse("n", "other than 1 is not supported by this server"));
        }
        for (field, v) in [("presence_penalty", self.presence_penalty), ("frequency_penalty", self.frequency_penalty)] {
            if v.is_some_and(|v| v != 0.0) {
                return Err(refuse(field, "other than 0 is not supported by this server"));
            }
        }
        if self.logprobs.as_ref().is_some_and(|v| !v.is_null() && *v != Value::Bool(false)) {
            return Err(refuse("logprobs", "is not supported by this server"));
        }
        if self.logit_bias.as_ref().is_some_and(|v| !v.is_null() && v.as_object().is_none_or(|m| !m.is_empty())) {
            return Err(refuse("logit_bias", "is not supported by this server"));
        }
        let stop = self.stop.clone().map(OneOrMany::into_vec).unwrap_or_default();
        if stop.len() > 4 {
            return Err(refuse("stop", &format!("has {} sequences; at most 4 are allowed", stop.len())));
        }
        if stop.iter().any(String::is_empty) {
            return Err(refuse("stop", "sequences must not be empty"));
        }
        let stream = self.stream.unwrap_or(false);
        if self.stream_options.is_some() && !stream {
            return Err(refuse("stream_options", "is only allowed with `stream: true`"));
        }
        let include_usage = self.stream_options.as_ref().is_some_and(|o| o.include_usage);
        // OpenAI's seed is an integer; any value (negative too) picks a reproducible random stream.
        let seed = self.seed.map(|s| s as u64);
        Ok(Checked { max_tokens, temperature, top_p, stop, seed, stream, include_usage })
    }
}

impl CompletionRequest {
    pub fn check_extra(&self) -> Result<(), ApiError> {
        if self.echo == Some(true) {
            return Err(refuse("echo", "is not supported by this server"));
        }
        if self.best_of.is_some_and(|b| b != 1) {
            return Err(refuse("best_of", "other than 1 is not supported by this server"));
        }
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(refuse("suffix", "is not supported by this server"));
        }
        Ok(())
    }
}

impl ChatRequest {
    /// The messages as the chat template takes them (text parts joined), and `max_tokens` from either name.
    pub fn messages(&self) -> Result<Vec<finetune_data::chat::ChatMessage>, ApiError> {
        if self.top_logprobs.is_some() {
            return Err(refuse("top_logprobs", "is not supported by this server"));
        }
        if self.messages.is_empty() {
            return Err(refuse("messages", "must not be empty"));
        }
        let mut out = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.iter().enumerate() {
            if !matches!(m.role.as_str(), "system" | "developer" | "user" | "assistant") {
                return Err(ApiError::bad_request(
                    format!("messages[{i}].role: {:?} is not one of system, developer, user, assistant", m.role),
                    Some("messages"),
                ));
            }
            let content = match &m.content {
                None => String::new(),
                Some(Content::Text(t)) => t.clone(),
                Some(Content::Parts(parts)) => {
                    let mut s = String::new();
                    for (j, p) in parts.iter().enumerate() {
                        match (p.kind.as_str(), &p.text) {
                            ("text", Some(t)) => s.push_str(t),
                            (kind, _) => {
                                return Err(ApiError::bad_request(
                                    format!(
                                        "messages[{i}].content[{j}]: part type {kind:?} is not supported (text only)"
                                    ),
                                    Some("messages"),
                                ))
                            }
                        }
                    }
                    s
                }
            };
            // Chat templates know "system"; OpenAI's newer "developer" role means the same.
            let role = if m.role == "developer" { "system" } else { m.role.as_str() };
            let mut msg = finetune_data::chat::ChatMessage::new(role, &content);
            if let Some(n) = &m.name {
                msg.extra.insert("name".into(), Value::String(n.clone()));
            }
            out.push(msg);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod fuzz {
    //! Random request bodies (structure-aware: real field names, values of every JSON type, nesting) through
    //! the request checks: every body gets a parse or an `ApiError`, never a panic. `FINETUNE_FUZZ_ITERS` sets
    //! the count (scripts/fuzz.sh runs a million).
    use serde_json::{json, Map, Value};

    use super::*;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    const KEYS: &[&str] = &[
        "model",
        "prompt",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "n",
        "stream",
        "stream_options",
        "include_usage",
        "stop",
        "seed",
        "logprobs",
        "logit_bias",
        "user",
        "echo",
        "best_of",
        "suffix",
        "role",
        "content",
        "type",
        "text",
        "name",
        "presence_penalty",
        "frequency_penalty",
        "x",
    ];

    fn value(r: &mut Rng, depth: usize) -> Value {
        match r.below(if depth > 3 { 6 } else { 9 }) {
            0 => Value::Null,
            1 => Value::Bool(r.below(2) == 1),
            2 => json!([-1i64, 0, 1, 2, 4, 16, 512, 513, i64::MAX, i64::MIN][r.below(10)]),
            3 => json!([0.0, 0.5, 1.0, 2.0, 2.5, -0.1, 1e308, -1e-308, f64::MAX][r.below(9)]),
            4 => json!(
                ["", "user", "assistant", "system", "robot", "text", "image_url", "hi", "\u{0}", "é"][r.below(10)]
            ),
            5 => json!(u64::MAX - r.below(3) as u64),
            6 | 7 => Value::Array((0..r.below(6)).map(|_| value(r, depth + 1)).collect()),
            _ => object(r, depth + 1),
        }
    }

    fn object(r: &mut Rng, depth: usize) -> Value {
        let mut m = Map::new();
        for _ in 0..r.below(7) {
            m.insert(KEYS[r.below(KEYS.len())].to_string(), value(r, depth));
        }
        Value::Object(m)
    }

    #[test]
    fn request_checks_never_panic() {
        let iters: usize = std::env::var("FINETUNE_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
        let mut r = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut ok, mut refused) = (0usize, 0usize);
        for _ in 0..iters {
            // Half the bodies get the endpoint's required field (and lose the other's), so the sampling checks
            // see many values, not only the missing-field refusal.
            let body = if r.below(8) == 0 { value(&mut r, 0) } else { object(&mut r, 0) };
            let (mut cb, mut mb) = (body.clone(), body);
            if r.below(2) == 0 {
                if let (Value::Object(c), Value::Object(m)) = (&mut cb, &mut mb) {
                    c.insert("prompt".into(), json!("hello"));
                    c.remove("messages");
                    m.insert("messages".into(), json!([{"role": "user", "content": "hi"}]));
                    m.remove("prompt");
                }
            }
            let c = parse_request::<CompletionRequest>(cb, COMPLETION_FIELDS)
                .and_then(|q| q.check_extra().and_then(|()| q.sampling.check(16, 512)));
            let m = parse_request::<ChatRequest>(mb, CHAT_FIELDS)
                .and_then(|q| q.messages().and_then(|_| q.sampling.check(512, 512)));
            for res in [c.map(|_| ()), m.map(|_| ())] {
                match res {
                    Ok(()) => ok += 1,
                    Err(e) => {
                        assert!(e.status.is_client_error(), "{e:?}");
                        refused += 1;
                    }
                }
            }
        }
        eprintln!("request fuzz: {iters} bodies, {ok} accepted, {refused} refused with a 4xx");
        assert!(ok > 0 && refused > 0);
    }
}
