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
