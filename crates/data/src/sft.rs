//! Data for decoder fine-tuning: supervised fine-tuning (SFT) records and continued-pretraining text, tokenised
//! into causal-LM examples, packed or padded into batches.
//!
//! Records are JSON Lines, or the rows of a Parquet file or Arrow dataset (columns as fields), in one of four
//! formats, detected from the keys of the first record (or forced):
//! - prompt/completion: `{"prompt": ..., "completion": ...}`;
//! - alpaca: `{"instruction": ..., "input": ... (optional), "output": ...}`; without a chat template the prompt
//!   is the Stanford Alpaca template ([`ALPACA_PROMPT_WITH_INPUT`], [`ALPACA_PROMPT_NO_INPUT`]); with one the user
//!   message is the instruction, followed by a blank line and the input when there is one;
//! - chat: `{"messages": [{"role": ..., "content": ...}, ...]}`;
//! - text: `{"text": ...}` (continued pretraining, grouped as `run_clm.py`'s `group_texts`).
//!
//! Labels follow TRL's `SFTTrainer`: `completion_only_loss` puts -100 on prompt tokens, the EOS (or the chat
//! template's end-of-turn) stays in the labels; for chats `assistant_only_loss` keeps only assistant turns. The
//! shift (token t predicts t+1) happens in the model's loss, as in `transformers`. Text rendered by a chat
//! template is tokenised without added special tokens (the template writes BOS itself, as
//! `apply_chat_template(tokenize=True)` does); plain prompts get BOS when the tokenizer adds it, and EOS after
//! the completion. Each example's text is tokenised whole and labels are masked by token offsets (a token is
//! trained when it starts inside a trained piece), so the ids equal `transformers`' for the whole text.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use serde_json::Value;

use crate::chat::{ChatMessage, ChatTemplate};
use crate::encode::IGNORE_INDEX;
use crate::error::{DataError, Result};
use crate::read::columnar;
use crate::read::{json_kind, utf8_line, At, ColumnarSource, Format, Lines, ReadOptions};

/// Stanford Alpaca's prompt for records with a non-empty `input`.
pub const ALPACA_PROMPT_WITH_INPUT: &str = "Below is an instruction that describes a task, paired with an input \
that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n\
{instruction}\n\n### Input:\n{input}\n\n### Response:\n";
/// Stanford Alpaca's prompt for records without `input` (or with an empty one).
pub const ALPACA_PROMPT_NO_INPUT: &str = "Below is an instruction that describes a task. Write a response that \
appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n";

/// A causal-LM tokenizer as SFT needs it. Implemented by `finetune-models` for Hugging Face tokenizer directories
/// and GGUF files.
pub trait CausalTokenize: Sync {
    /// Token ids of `text` with no special tokens added (`add_special_tokens=False`); special tokens written in
    /// the text (`<|im_start|>`) are still recognised, as chat templates need.
    fn encode_plain(&self, text: &str) -> Result<Vec<u32>>;
    /// Like `encode_plain`, with the byte offset in `text` where each token starts. Tokenizers that can give
    /// offsets let SFT tokenise a whole conversation at once, exactly as `transformers` does, and mask by
    /// position; without them (None) each piece is tokenised on its own, which can differ at piece boundaries.
    fn encode_plain_offsets(&self, text: &str) -> Result<Option<Vec<(u32, usize)>>> {
        let _ = text;
        Ok(None)
    }
    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String>;
    fn bos_token(&self) -> Option<(String, u32)>;
    fn eos_token(&self) -> Option<(String, u32)>;
    fn pad_token_id(&self) -> Option<u32>;
    fn chat_template(&self) -> Option<&str>;
    /// Whether `tokenizer(text)` prepends BOS.
    fn add_bos_token(&self) -> bool;
}

/// The record format of an SFT file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SftFormat {
    /// Decide from the keys of the first record: `messages`, then `prompt`+`completion`, then
    /// `instruction`+`output`, then `text`.
    Auto,
    PromptCompletion,
    Alpaca,
    Chat,
    Text,
}

impl std::str::FromStr for SftFormat {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(SftFormat::Auto),
            "prompt_completion" | "prompt-completion" => Ok(SftFormat::PromptCompletion),
            "alpaca" => Ok(SftFormat::Alpaca),
            "chat" | "messages" | "conversational" => Ok(SftFormat::Chat),
            "text" => Ok(SftFormat::Text),
            _ => Err(DataError::Invalid(format!(
                "unknown SFT format {s:?} (expected auto, prompt_completion, alpaca, chat or text)"
            ))),
        }
    }
}

/// The content of one record.
#[derive(Debug, Clone, PartialEq)]
pub enum SftContent {
    PromptCompletion { prompt: String, completion: String },
    Alpaca { instruction: String, input: String, output: String },
    Chat(Vec<ChatMessage>),
    Text(String),
}

/// One record with where it came from, so later errors can name `file:line`.
#[derive(Debug, Clone, PartialEq)]
pub struct SftRecord {
    pub path: String,
    pub line: u64,
    pub content: SftContent,
}

impl SftContent {
    /// The prompt and completion texts without a chat template (alpaca: the Alpaca prompt).
    pub fn plain_prompt_completion(&self) -> Option<(String, &str)> {
        match self {
            SftContent::PromptCompletion { prompt, completion } => Some((prompt.clone(), completion)),
            SftContent::Alpaca { instruction, input, output } => {
                let p = if input.is_empty() {
                    ALPACA_PROMPT_NO_INPUT.replace("{instruction}", instruction)
                } else {
                    ALPACA_PROMPT_WITH_INPUT.replace("{instruction}", instruction).replace("{input}", input)
                };
                Some((p, output))
            }
            _ => None,
        }
    }

    /// The user message and the assistant reply under a chat template.
    pub fn chat_prompt_completion(&self) -> Option<(String, &str)> {
        match self {
            SftContent::PromptCompletion { prompt, completion } => Some((prompt.clone(), completion)),
            SftContent::Alpaca { instruction, input, output } if input.is_empty() => {
                Some((instruction.clone(), output))
            }
            SftContent::Alpaca { instruction, input, output } => Some((format!("{instruction}\n\n{input}"), output)),
            _ => None,
        }
    }
}

fn string_field(at: At, obj: &serde_json::Map<String, Value>, key: &str, name: &str) -> Result<String> {
    match obj.get(key) {
        None => Err(at.err(format_args!("field {name:?} is missing"))),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(at.err(format_args!("field {name:?} must be a string, found {}", json_kind(v)))),
    }
}

fn detect(at: At, obj: &serde_json::Map<String, Value>) -> Result<SftFormat> {
    let has = |k: &str| obj.contains_key(k);
    if has("messages") {
        Ok(SftFormat::Chat)
    } else if has("prompt") || has("completion") {
        Ok(SftFormat::PromptCompletion)
    } else if has("instruction") || has("output") {
        Ok(SftFormat::Alpaca)
    } else if has("text") {
        Ok(SftFormat::Text)
    } else {
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        Err(at.err(format_args!(
            "cannot tell the SFT format from fields {keys:?} (expected \"messages\", \"prompt\"+\"completion\", \
                 \"instruction\"+\"output\" or \"text\")"
        )))
    }
}

fn parse(at: At, obj: &serde_json::Map<String, Value>, format: SftFormat) -> Result<SftContent> {
    Ok(match format {
        SftFormat::PromptCompletion => SftContent::PromptCompletion {
            prompt: string_field(at, obj, "prompt", "prompt")?,
            completion: string_field(at, obj, "completion", "completion")?,
        },
        SftFormat::Alpaca => SftContent::Alpaca {
            instruction: string_field(at, obj, "instruction", "instruction")?,
            input: match obj.get("input") {
                None | Some(Value::Null) => String::new(),
                Some(_) => string_field(at, obj, "input", "input")?,
            },
            output: string_field(at, obj, "output", "output")?,
        },
        SftFormat::Text => SftContent::Text(string_field(at, obj, "text", "text")?),
        SftFormat::Chat => {
            let msgs = match obj.get("messages") {
                None => return Err(at.err("field \"messages\" is missing")),
                Some(Value::Array(a)) => a,
                Some(v) => {
                    return Err(at.err(format_args!("field \"messages\" must be a list, found {}", json_kind(v))))
                }
            };
            if msgs.is_empty() {
                return Err(at.err("field \"messages\" is empty"));
            }
            let mut out = Vec::with_capacity(msgs.len());
            for (i, m) in msgs.iter().enumerate() {
                let Value::Object(m) = m else {
                    return Err(
                        at.err(format_args!("field \"messages[{i}]\" must be an object, found {}", json_kind(m)))
                    );
                };
                let role = string_field(at, m, "role", &format!("messages[{i}].role"))?;
                let content = string_field(at, m, "content", &format!("messages[{i}].content"))?;
                let extra =
                    m.iter().filter(|(k, _)| *k != "role" && *k != "content").map(|(k, v)| (k.clone(), v.clone()));
                out.push(ChatMessage { role, content, extra: extra.collect() });
            }
            SftContent::Chat(out)
        }
        SftFormat::Auto => return Err(DataError::Invalid("internal: format not resolved".into())),
    })
}

/// Reads an SFT file: JSON Lines, or a Parquet file or Arrow dataset (by extension or a folder) whose columns
/// are the fields. Blank lines are skipped; every record must have the format of the first (or the forced one).
/// Returns the resolved format and the records.
pub fn read_sft(path: &Path, format: SftFormat) -> Result<(SftFormat, Vec<SftRecord>)> {
    read_sft_split(path, format, None)
}

/// [`read_sft`] with the split to read when `path` is a `datasets` `DatasetDict` folder (ignored otherwise, so a
/// caller may pass its role's split for any file).
pub fn read_sft_split(path: &Path, format: SftFormat, split: Option<&str>) -> Result<(SftFormat, Vec<SftRecord>)> {
    let name = path.display().to_string();
    let mut format = format;
    let mut record = |at: At, line: u64, obj: &serde_json::Map<String, Value>| -> Result<SftRecord> {
        if format == SftFormat::Auto {
            format = detect(at, obj)?;
        }
        Ok(SftRecord { path: name.clone(), line, content: parse(at, obj, format)? })
    };
    let mut records = Vec::new();
    match Format::from_path(path) {
        Some(f @ (Format::Parquet | Format::Arrow)) => {
            let split = split.filter(|_| crate::read::has_splits(path)).map(str::to_string);
            let source = ColumnarSource::open(path, f, &ReadOptions { dataset_split: split, ..Default::default() })?;
            for r in columnar::objects(source, SFT_FIELDS, &mut record)? {
                records.push(r?);
            }
        }
        _ => {
            let file = File::open(path).map_err(|e| DataError::io(&name, e))?;
            let mut lines = Lines::new(BufReader::with_capacity(1 << 16, file));
            while let Some(next) = lines.next_line() {
                let (line, bytes) = next.map_err(|e| DataError::io(&name, e))?;
                let text = utf8_line(&name, line, bytes)?;
                if text.trim().is_empty() {
                    continue;
                }
                let at = At::Line { path: &name, line };
                let obj = match serde_json::from_str::<Value>(text) {
                    Ok(Value::Object(o)) => o,
                    Ok(v) => return Err(at.err(format_args!("expected a JSON object, found {}", json_kind(&v)))),
                    Err(e) => return Err(at.err(format_args!("invalid JSON: {e}"))),
                };
                records.push(record(at, line, &obj)?);
            }
        }
    }
    if records.is_empty() {
        return Err(DataError::file(&name, "no records"));
    }
    Ok((format, records))
}

/// The fields SFT records are made of, in every format.
const SFT_FIELDS: &[&str] = &["messages", "prompt", "completion", "instruction", "input", "output", "text"];

/// One tokenised causal-LM example: `labels[t]` is the target of position t before the shift (-100: no loss).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CausalExample {
    pub input_ids: Vec<u32>,
    pub labels: Vec<i64>,
}

impl CausalExample {
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// Tokens that contribute to the loss after the shift (labels[1..] that are not -100).
    pub fn num_label_tokens(&self) -> usize {
        self.labels.iter().skip(1).filter(|&&l| l != IGNORE_INDEX).count()
    }
}

/// How SFT records become examples. Defaults follow TRL's `SFTConfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftOptions {
    /// Render prompt/completion and alpaca records through the tokenizer's chat template when it has one.
    pub use_chat_template: bool,
    /// Prompt tokens get label -100.
    pub completion_only_loss: bool,
    /// In chats, only assistant turns carry labels.
    pub assistant_only_loss: bool,
    /// Longest example in tokens; None keeps everything.
    pub max_seq_length: Option<usize>,
    /// How an example longer than `max_seq_length` is cut.
    pub truncation_mode: TruncationMode,
}

/// How an SFT example longer than `max_seq_length` is cut. `keep_start` and `keep_end` are TRL's
/// `SFTConfig.truncation_mode` values; `keep_completion` is the default here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TruncationMode {
    /// Cut the prompt's user content (prompt/completion: the prompt; alpaca: the input, or the instruction when
    /// there is no input; chat: the last non-assistant, non-system message before the last assistant turn) so
    /// that the whole completion fits. The chat template's special tokens, the generation prompt, BOS and EOS are
    /// never cut. The middle of the user content goes (as LongBench truncates inputs): the start (where an
    /// instruction usually is) and the end (where the question or cue usually is) stay, half of the kept tokens
    /// each. The number of kept user tokens is the largest that fits, found by bisection over re-rendered,
    /// re-tokenised examples. When the rest alone (the template, other turns and the completion) is longer than
    /// `max_seq_length`, the user content is emptied and the end of the example is cut as `keep_start` does.
    #[default]
    KeepCompletion,
    /// Keep the first `max_seq_length` tokens (TRL's default): long prompts lose their completion, and an example
    /// left without label tokens is dropped.
    KeepStart,
    /// Keep the last `max_seq_length` tokens.
    KeepEnd,
}

impl std::str::FromStr for TruncationMode {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "keep_completion" => Ok(TruncationMode::KeepCompletion),
            "keep_start" => Ok(TruncationMode::KeepStart),
            "keep_end" => Ok(TruncationMode::KeepEnd),
            _ => Err(DataError::Invalid(format!(
                "unknown truncation_mode {s:?} (expected keep_completion, keep_start or keep_end)"
            ))),
        }
    }
}

impl std::fmt::Display for TruncationMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TruncationMode::KeepCompletion => "keep_completion",
            TruncationMode::KeepStart => "keep_start",
            TruncationMode::KeepEnd => "keep_end",
        })
    }
}

/// What truncation did to one example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// It fitted as it was.
    Whole,
    /// Only prompt tokens were cut: every label token is still there.
    PromptCut,
    /// Label tokens were cut too.
    CompletionCut,
}

impl Default for SftOptions {
    fn default() -> Self {
        SftOptions {
            use_chat_template: true,
            completion_only_loss: true,
            assistant_only_loss: true,
            max_seq_length: Some(1024),
            truncation_mode: TruncationMode::KeepCompletion,
        }
    }
}

/// Tokenised examples and what happened on the way.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SftEncoded {
    pub examples: Vec<CausalExample>,
    /// Examples longer than `max_seq_length`, cut (`prompt_cut + completion_cut`).
    pub truncated: usize,
    /// Of those, examples that kept every label token (only the prompt was cut).
    pub prompt_cut: usize,
    /// Of those, examples whose label tokens were cut too (a completion longer than the limit by itself, or
    /// `keep_start`/`keep_end` cutting into it).
    pub completion_cut: usize,
    /// Examples dropped because truncation left no label.
    pub dropped_no_labels: usize,
}

fn rec_err(r: &SftRecord, e: impl std::fmt::Display) -> DataError {
    DataError::record(&r.path, r.line, e)
}

/// A tokenizer with its compiled chat template.
pub struct SftTokenizer<'a, T: CausalTokenize + ?Sized> {
    tok: &'a T,
    template: Option<ChatTemplate>,
}

impl<'a, T: CausalTokenize + ?Sized> SftTokenizer<'a, T> {
    /// Compiles the tokenizer's chat template, if any.
    pub fn new(tok: &'a T) -> Result<Self> {
        let template = match tok.chat_template() {
            None => None,
            Some(src) => {
                let bos = tok.bos_token().map(|b| b.0);
                let eos = tok.eos_token().map(|e| e.0);
                Some(ChatTemplate::new(src, bos.as_deref(), eos.as_deref())?)
            }
        };
        Ok(SftTokenizer { tok, template })
    }

    pub fn template(&self) -> Option<&ChatTemplate> {
        self.template.as_ref()
    }

    fn render(&self, r: &SftRecord, msgs: &[ChatMessage], agp: bool) -> Result<String> {
        let Some(t) = &self.template else {
            return Err(rec_err(r, "chat records need a tokenizer with a chat template"));
        };
        // An empty prefix renders to nothing in every template; some templates index messages[0] unguarded.
        if msgs.is_empty() && !agp {
            return Ok(String::new());
        }
        t.render(msgs, agp).map_err(|e| rec_err(r, e))
    }

    fn encode(&self, r: &SftRecord, text: &str) -> Result<Vec<u32>> {
        self.tok.encode_plain(text).map_err(|e| rec_err(r, e))
    }

    /// Token ids of the prompt a chat model answers: `messages` through the chat template with the generation
    /// prompt, as `tokenizer.apply_chat_template(messages, add_generation_prompt=True)` gives them.
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let Some(t) = &self.template else {
            return Err(DataError::Invalid("the tokenizer has no chat template (tokenizer_config.json)".into()));
        };
        let text = t.render(messages, true).map_err(|e| DataError::Invalid(e.to_string()))?;
        self.tok.encode_plain(&text)
    }

    /// Token ids of a plain-text prompt as `tokenizer(text)` gives them (BOS first when the tokenizer adds it).
    pub fn text_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if let Some((_, bos)) = self.tok.bos_token().filter(|_| self.tok.add_bos_token()) {
            ids.push(bos);
        }
        ids.extend(self.tok.encode_plain(text)?);
        Ok(ids)
    }

    /// Tokenises one record (not text records: see [`group_texts`]). Returns the example before truncation.
    pub fn encode_record(&self, r: &SftRecord, opts: &SftOptions) -> Result<CausalExample> {
        // The text as consecutive pieces, each trained on or not.
        let mut pieces: Vec<(String, bool)> = Vec::new();
        let mut bos = None;
        let mut eos = None;
        match &r.content {
            SftContent::Text(_) => {
                return Err(rec_err(r, "text records are grouped with group_texts, not encoded one by one"))
            }
            SftContent::Chat(msgs) => {
                for (start, end, text) in self.chat_segments(r, msgs)? {
                    pieces.push((text, is_assistant_span(msgs, start, end) || !opts.assistant_only_loss));
                }
            }
            content if opts.use_chat_template && self.template.is_some() => {
                let (user, reply) =
                    content.chat_prompt_completion().ok_or_else(|| rec_err(r, "not a prompt/completion record"))?;
                let prompt_msgs = [ChatMessage::new("user", user)];
                let full_msgs = [prompt_msgs[0].clone(), ChatMessage::new("assistant", reply)];
                let prompt = self.render(r, &prompt_msgs, true)?;
                let full = self.render(r, &full_msgs, false)?;
                let completion = full.strip_prefix(prompt.as_str()).ok_or_else(|| {
                    rec_err(r, "the chat template's rendering of [user] with add_generation_prompt is not a prefix of [user, assistant]; cannot separate the completion")
                })?;
                pieces.push((completion.to_owned(), true));
                pieces.insert(0, (prompt, !opts.completion_only_loss));
            }
            content => {
                let (prompt, completion) =
                    content.plain_prompt_completion().ok_or_else(|| rec_err(r, "not a prompt/completion record"))?;
                if self.tok.add_bos_token() {
                    let b = self
                        .tok
                        .bos_token()
                        .ok_or_else(|| rec_err(r, "the tokenizer adds BOS but has no BOS token"))?;
                    bos = Some(b.1);
                }
                let e = self
                    .tok
                    .eos_token()
                    .ok_or_else(|| rec_err(r, "the tokenizer has no EOS token to end the completion"))?;
                eos = Some(e.1);
                pieces.push((prompt, !opts.completion_only_loss));
                pieces.push((completion.to_owned(), true));
            }
        }
        let mut ids: Vec<u32> = Vec::new();
        let mut labels: Vec<i64> = Vec::new();
        if let Some(b) = bos {
            ids.push(b);
            labels.push(if pieces.first().is_some_and(|p| p.1) { i64::from(b) } else { IGNORE_INDEX });
        }
        let text: String = pieces.iter().map(|p| p.0.as_str()).collect();
        match self.tok.encode_plain_offsets(&text).map_err(|e| rec_err(r, e))? {
            Some(tokens) => {
                // The whole text is tokenised once (as transformers does); a token is trained when it starts
                // inside a trained piece.
                let mut ends = Vec::with_capacity(pieces.len());
                let mut at = 0;
                for (t, train) in &pieces {
                    at += t.len();
                    ends.push((at, *train));
                }
                let mut k = 0;
                for (id, start) in tokens {
                    while k + 1 < ends.len() && start >= ends[k].0 {
                        k += 1;
                    }
                    ids.push(id);
                    labels.push(if ends.get(k).is_some_and(|e| e.1) { i64::from(id) } else { IGNORE_INDEX });
                }
            }
            None => {
                for (t, train) in &pieces {
                    let toks = self.encode(r, t)?;
                    labels.extend(toks.iter().map(|&id| if *train { i64::from(id) } else { IGNORE_INDEX }));
                    ids.extend(toks);
                }
            }
        }
        if let Some(e) = eos {
            ids.push(e);
            labels.push(i64::from(e));
        }
        Ok(CausalExample { input_ids: ids, labels })
    }

    /// Tokenises one record and fits it to `max_seq_length` by `truncation_mode`.
    pub fn encode_record_fit(&self, r: &SftRecord, opts: &SftOptions) -> Result<(CausalExample, Fit)> {
        let ex = self.encode_record(r, opts)?;
        let Some(max) = opts.max_seq_length.filter(|&m| ex.len() > m) else {
            return Ok((ex, Fit::Whole));
        };
        match opts.truncation_mode {
            // The last tokens of a prompt/completion or chat example are always completion tokens.
            TruncationMode::KeepStart => Ok((keep_start(ex, max), Fit::CompletionCut)),
            TruncationMode::KeepEnd => {
                let removed = ex.len() - max;
                let masked = SftOptions { completion_only_loss: true, assistant_only_loss: true, ..opts.clone() };
                let prompt_len = if opts.completion_only_loss && opts.assistant_only_loss {
                    leading_ignored(&ex)
                } else {
                    leading_ignored(&self.encode_record(r, &masked)?)
                };
                let fit = if removed <= prompt_len { Fit::PromptCut } else { Fit::CompletionCut };
                let ids = ex.input_ids[removed..].to_vec();
                let labels = ex.labels[removed..].to_vec();
                Ok((CausalExample { input_ids: ids, labels }, fit))
            }
            TruncationMode::KeepCompletion => {
                let Some((content, target)) = self.cuttable(&r.content, opts) else {
                    return Ok((keep_start(ex, max), Fit::CompletionCut));
                };
                let user = target.text(&content);
                let pts = self.cut_points(r, user)?;
                let encode_k = |k: usize| {
                    let content = target.replace(&content, middle_cut(user, &pts, k));
                    self.encode_record(&SftRecord { path: r.path.clone(), line: r.line, content }, opts)
                };
                let (found, fitted) = bisect_fit(pts.len() - 1, max, encode_k, CausalExample::len)?;
                Ok(if found { (fitted, Fit::PromptCut) } else { (keep_start(fitted, max), Fit::CompletionCut) })
            }
        }
    }

    /// The generation prompt of a prompt/completion, alpaca or chat record (the chat template with its generation
    /// prompt when used; the last assistant turn of a chat is the reference) as text, and the reference
    /// completion.
    pub fn prompt_and_reference(&self, r: &SftRecord, opts: &SftOptions) -> Result<(String, String)> {
        let (prompt, reference) = self.prompt_text(r, &r.content, opts)?;
        Ok((prompt, reference.to_owned()))
    }

    fn prompt_text<'c>(&self, r: &SftRecord, content: &'c SftContent, opts: &SftOptions) -> Result<(String, &'c str)> {
        match content {
            SftContent::Text(_) => Err(rec_err(r, "text records have no prompt")),
            SftContent::Chat(msgs) => {
                let last = msgs
                    .iter()
                    .rposition(|m| m.role == "assistant")
                    .ok_or_else(|| rec_err(r, "field \"messages\": no assistant turn to take as the reference"))?;
                Ok((self.render(r, &msgs[..last], true)?, msgs[last].content.as_str()))
            }
            c if opts.use_chat_template && self.template.is_some() => {
                let (user, reply) =
                    c.chat_prompt_completion().ok_or_else(|| rec_err(r, "not a prompt/completion record"))?;
                Ok((self.render(r, &[ChatMessage::new("user", user)], true)?, reply))
            }
            c => {
                let (p, reply) =
                    c.plain_prompt_completion().ok_or_else(|| rec_err(r, "not a prompt/completion record"))?;
                let p = match self.tok.bos_token().filter(|_| self.tok.add_bos_token()) {
                    Some((b, _)) => format!("{b}{p}"),
                    None => p,
                };
                Ok((p, reply))
            }
        }
    }

    /// The generation prompt's token ids, at most `budget` of them, with the reference completion. An over-long
    /// prompt is cut as `keep_completion` cuts training examples (the middle of the user content, never the
    /// template's tokens or the generation prompt) when that is the mode; otherwise, or when the rest alone is
    /// longer than `budget`, its last `budget` tokens are kept.
    pub fn fit_prompt(&self, r: &SftRecord, opts: &SftOptions, budget: usize) -> Result<(Vec<u32>, String, Fit)> {
        let (text, reference) = self.prompt_text(r, &r.content, opts)?;
        let reference = reference.to_owned();
        let ids = self.encode(r, &text)?;
        if ids.len() <= budget {
            return Ok((ids, reference, Fit::Whole));
        }
        let keep_last = |mut ids: Vec<u32>| {
            ids.drain(..ids.len() - budget);
            ids
        };
        let cuttable =
            if opts.truncation_mode == TruncationMode::KeepCompletion { self.cuttable(&r.content, opts) } else { None };
        let Some((content, target)) = cuttable else {
            return Ok((keep_last(ids), reference, Fit::PromptCut));
        };
        let user = target.text(&content);
        let pts = self.cut_points(r, user)?;
        let encode_k = |k: usize| {
            let c = target.replace(&content, middle_cut(user, &pts, k));
            let (text, _) = self.prompt_text(r, &c, opts)?;
            self.encode(r, &text)
        };
        let (found, ids) = bisect_fit(pts.len() - 1, budget, encode_k, Vec::len)?;
        Ok((if found { ids } else { keep_last(ids) }, reference, Fit::PromptCut))
    }

    /// The record in a form whose user content `keep_completion` can cut, and where that content is.
    fn cuttable(&self, content: &SftContent, opts: &SftOptions) -> Option<(SftContent, CutTarget)> {
        let templated = opts.use_chat_template && self.template.is_some();
        match content {
            SftContent::PromptCompletion { .. } => Some((content.clone(), CutTarget::Prompt)),
            // Under a template the user message is the instruction and the input together.
            SftContent::Alpaca { .. } if templated => {
                let (prompt, completion) = content.chat_prompt_completion()?;
                Some((SftContent::PromptCompletion { prompt, completion: completion.to_owned() }, CutTarget::Prompt))
            }
            SftContent::Alpaca { input, .. } if !input.is_empty() => Some((content.clone(), CutTarget::AlpacaInput)),
            SftContent::Alpaca { .. } => Some((content.clone(), CutTarget::AlpacaInstruction)),
            SftContent::Chat(msgs) => {
                let last = msgs.iter().rposition(|m| m.role == "assistant")?;
                let i = (0..last).rev().find(|&i| msgs[i].role != "assistant" && msgs[i].role != "system")?;
                Some((content.clone(), CutTarget::Message(i)))
            }
            SftContent::Text(_) => None,
        }
    }

    /// Byte offsets where the user content may be cut: the start of every token (every character when the
    /// tokenizer gives no offsets), then the end.
    fn cut_points(&self, r: &SftRecord, user: &str) -> Result<Vec<usize>> {
        let mut pts: Vec<usize> = match self.tok.encode_plain_offsets(user).map_err(|e| rec_err(r, e))? {
            Some(tokens) => tokens
                .into_iter()
                .map(|(_, s)| {
                    let mut s = s.min(user.len());
                    while !user.is_char_boundary(s) {
                        s -= 1;
                    }
                    s
                })
                .collect(),
            None => user.char_indices().map(|(i, _)| i).collect(),
        };
        if let Some(first) = pts.first_mut() {
            *first = 0;
        }
        // Offsets never go back; keep them so if a tokenizer's do.
        for i in 1..pts.len() {
            pts[i] = pts[i].max(pts[i - 1]);
        }
        pts.push(user.len());
        Ok(pts)
    }

    /// Splits a rendered chat into consecutive text pieces, each tagged with the messages it comes from:
    /// `(first, end, text)` covers `messages[first..end]`. An assistant turn's piece starts after the
    /// generation prompt, which belongs to the piece before. Rendering prefixes of the conversation must extend
    /// each other (the prefix property); templates that rewrite earlier turns are rejected.
    pub fn chat_segments(&self, r: &SftRecord, msgs: &[ChatMessage]) -> Result<Vec<(usize, usize, String)>> {
        let mut out = Vec::new();
        let mut done = String::new(); // rendering of msgs[..i]
        let mut seg_start = 0usize;
        for i in 0..msgs.len() {
            if msgs[i].role == "assistant" {
                let gen = self.render(r, &msgs[..i], true)?;
                let head = gen.strip_prefix(done.as_str()).ok_or_else(|| prefix_err(r, i, true))?;
                if !head.is_empty() || seg_start < i {
                    out.push((seg_start, i, head.to_owned()));
                }
                let full = self.render(r, &msgs[..=i], false)?;
                let body = full.strip_prefix(gen.as_str()).ok_or_else(|| prefix_err(r, i, false))?;
                out.push((i, i + 1, body.to_owned()));
                done = full;
                seg_start = i + 1;
            } else if i + 1 == msgs.len() || msgs[i + 1].role == "assistant" {
                let full = self.render(r, &msgs[..=i], false)?;
                let body = full.strip_prefix(done.as_str()).ok_or_else(|| prefix_err(r, i, false))?;
                out.push((seg_start, i + 1, body.to_owned()));
                done = full;
                seg_start = i + 1;
            }
        }
        // The generation prompt was attached to the piece before the assistant turn: merge pieces of the same
        // non-assistant span so each span is tokenised once.
        let mut merged: Vec<(usize, usize, String)> = Vec::with_capacity(out.len());
        for (s, e, t) in out {
            match merged.last_mut() {
                Some(last) if !is_assistant_span(msgs, last.0, last.1) && !is_assistant_span(msgs, s, e) => {
                    last.1 = e;
                    last.2.push_str(&t);
                }
                _ => merged.push((s, e, t)),
            }
        }
        Ok(merged)
    }
}

/// Which text of a record `keep_completion` cuts.
#[derive(Debug, Clone, Copy)]
enum CutTarget {
    Prompt,
    AlpacaInput,
    AlpacaInstruction,
    Message(usize),
}

impl CutTarget {
    fn text(self, c: &SftContent) -> &str {
        match (self, c) {
            (CutTarget::Prompt, SftContent::PromptCompletion { prompt, .. }) => prompt,
            (CutTarget::AlpacaInput, SftContent::Alpaca { input, .. }) => input,
            (CutTarget::AlpacaInstruction, SftContent::Alpaca { instruction, .. }) => instruction,
            (CutTarget::Message(i), SftContent::Chat(m)) => &m[i].content,
            _ => "",
        }
    }

    fn replace(self, c: &SftContent, text: String) -> SftContent {
        let mut c = c.clone();
        match (self, &mut c) {
            (CutTarget::Prompt, SftContent::PromptCompletion { prompt, .. }) => *prompt = text,
            (CutTarget::AlpacaInput, SftContent::Alpaca { input, .. }) => *input = text,
            (CutTarget::AlpacaInstruction, SftContent::Alpaca { instruction, .. }) => *instruction = text,
            (CutTarget::Message(i), SftContent::Chat(m)) => m[i].content = text,
            _ => {}
        }
        c
    }
}

/// The user content with all but `k` of its `pts.len() - 1` tokens removed from the middle: the first
/// `ceil(k / 2)` and the last `floor(k / 2)` stay.
fn middle_cut(user: &str, pts: &[usize], k: usize) -> String {
    let n = pts.len() - 1;
    let (head, tail) = (k.div_ceil(2), k / 2);
    format!("{}{}", &user[..pts[head]], &user[pts[n - tail]..])
}

/// The largest `k` in `0..n` whose encoding is at most `max` long, by bisection (`k = n`, the whole content, is
/// known to be too long). Returns (true, that encoding), or (false, the encoding of `k = 0`) when even that is
/// too long.
fn bisect_fit<E>(
    n: usize,
    max: usize,
    mut encode: impl FnMut(usize) -> Result<E>,
    len: impl Fn(&E) -> usize,
) -> Result<(bool, E)> {
    let mut best = encode(0)?;
    if len(&best) > max {
        return Ok((false, best));
    }
    let (mut lo, mut hi) = (0, n);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let e = encode(mid)?;
        if len(&e) <= max {
            lo = mid;
            best = e;
        } else {
            hi = mid;
        }
    }
    Ok((true, best))
}

fn keep_start(mut ex: CausalExample, max: usize) -> CausalExample {
    ex.input_ids.truncate(max);
    ex.labels.truncate(max);
    ex
}

fn leading_ignored(ex: &CausalExample) -> usize {
    ex.labels.iter().take_while(|&&l| l == IGNORE_INDEX).count()
}

fn is_assistant_span(msgs: &[ChatMessage], s: usize, e: usize) -> bool {
    e > s && msgs[s..e].iter().all(|m| m.role == "assistant")
}

fn prefix_err(r: &SftRecord, i: usize, gen: bool) -> DataError {
    let what = if gen { "with add_generation_prompt " } else { "" };
    rec_err(
        r,
        format_args!(
            "field \"messages[{i}]\": the chat template's rendering of messages[..{i}] {what}does not start with the \
             rendering of the turns before it, so assistant turns cannot be located (the template rewrites earlier \
             turns); set assistant_only_loss = false or use another template"
        ),
    )
}

/// Tokenises prompt/completion, alpaca and chat records; fits them to `max_seq_length` by `truncation_mode` and
/// drops examples left without labels.
pub fn encode_sft<T: CausalTokenize + ?Sized>(tok: &T, records: &[SftRecord], opts: &SftOptions) -> Result<SftEncoded> {
    let st = SftTokenizer::new(tok)?;
    let mut out = SftEncoded::default();
    for r in records {
        let (ex, fit) = st.encode_record_fit(r, opts)?;
        match fit {
            Fit::Whole => {}
            Fit::PromptCut => out.prompt_cut += 1,
            Fit::CompletionCut => out.completion_cut += 1,
        }
        out.truncated += usize::from(fit != Fit::Whole);
        // The first label never counts after the shift.
        if ex.num_label_tokens() == 0 {
            out.dropped_no_labels += 1;
            continue;
        }
        out.examples.push(ex);
    }
    Ok(out)
}

/// Options of [`group_texts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupTexts {
    pub block_size: usize,
    /// Append EOS after every text so documents stay apart (`run_clm.py` itself does not).
    pub append_eos: bool,
    /// `run_clm.py` groups inside `datasets.map(batched=True)` batches of 1000 texts and drops each batch's
    /// remainder; None concatenates everything and drops one remainder.
    pub map_batch_size: Option<usize>,
}

impl GroupTexts {
    pub fn new(block_size: usize) -> Self {
        GroupTexts { block_size, append_eos: true, map_batch_size: Some(1000) }
    }
}

/// `run_clm.py`: tokenise each text as `tokenizer(text)` does (BOS when the tokenizer adds it), concatenate,
/// cut into `block_size` blocks with labels = input_ids, and drop the remainder.
pub fn group_texts<T: CausalTokenize + ?Sized>(
    tok: &T,
    records: &[SftRecord],
    opts: GroupTexts,
) -> Result<Vec<CausalExample>> {
    if opts.block_size == 0 {
        return Err(DataError::Invalid("block_size must be at least 1".into()));
    }
    let bos = if tok.add_bos_token() {
        Some(tok.bos_token().ok_or_else(|| DataError::Invalid("the tokenizer adds BOS but has no BOS token".into()))?.1)
    } else {
        None
    };
    let eos = if opts.append_eos {
        Some(tok.eos_token().ok_or_else(|| DataError::Invalid("append_eos needs an EOS token".into()))?.1)
    } else {
        None
    };
    let mut texts = Vec::with_capacity(records.len());
    for r in records {
        let SftContent::Text(t) = &r.content else {
            return Err(rec_err(r, "field \"text\": group_texts takes text records"));
        };
        let mut ids: Vec<u32> = bos.into_iter().collect();
        ids.extend(tok.encode_plain(t).map_err(|e| rec_err(r, e))?);
        ids.extend(eos);
        texts.push(ids);
    }
    Ok(group_token_lists(&texts, opts.block_size, opts.map_batch_size))
}

/// The grouping step alone, on already tokenised texts.
pub fn group_token_lists(texts: &[Vec<u32>], block_size: usize, map_batch_size: Option<usize>) -> Vec<CausalExample> {
    let chunk = map_batch_size.unwrap_or(texts.len()).max(1);
    let mut out = Vec::new();
    for batch in texts.chunks(chunk) {
        let all: Vec<u32> = batch.iter().flatten().copied().collect();
        let total = all.len() / block_size * block_size;
        for block in all[..total].chunks(block_size) {
            out.push(CausalExample {
                input_ids: block.to_vec(),
                labels: block.iter().map(|&t| i64::from(t)).collect(),
            });
        }
    }
    out
}

/// One packed row: several examples back to back, positions restarting at 0 at each example start so
/// boundary-aware attention keeps them apart.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PackedRow {
    pub input_ids: Vec<u32>,
    /// Each example's first label is -100: across a boundary the previous example's last token would otherwise
    /// be trained to predict the next example's first (as TRL's `DataCollatorWithFlattening`).
    pub labels: Vec<i64>,
    pub position_ids: Vec<u32>,
}

/// Packs examples into rows of at most `block_size` tokens, first-fit decreasing (longest first, ties in input
/// order; each goes into the first row with room). Longer examples are truncated to `block_size`. Deterministic.
pub fn pack(examples: &[CausalExample], block_size: usize) -> Vec<PackedRow> {
    if block_size == 0 {
        return Vec::new();
    }
    let mut order: Vec<usize> = (0..examples.len()).filter(|&i| !examples[i].is_empty()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(examples[i].len().min(block_size)));
    let mut rows: Vec<PackedRow> = Vec::new();
    for i in order {
        let ex = &examples[i];
        let n = ex.len().min(block_size);
        let slot = rows.iter().position(|r| r.input_ids.len() + n <= block_size);
        let row = match slot {
            Some(k) => &mut rows[k],
            None => {
                rows.push(PackedRow::default());
                let last = rows.len() - 1;
                &mut rows[last]
            }
        };
        row.input_ids.extend_from_slice(&ex.input_ids[..n]);
        row.labels.push(IGNORE_INDEX);
        row.labels.extend_from_slice(&ex.labels[1..n]);
        row.position_ids.extend(0..n as u32);
    }
    rows
}

/// A padded batch, row-major `[batch_size, seq_len]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CausalBatch {
    pub batch_size: usize,
    pub seq_len: usize,
    pub input_ids: Vec<u32>,
    /// -100 on padding.
    pub labels: Vec<i64>,
    /// 1 on tokens, 0 on padding.
    pub attention_mask: Vec<u32>,
    /// Positions restart at 0 at each packed example; padding positions continue counting.
    pub position_ids: Vec<u32>,
}

impl CausalBatch {
    /// Tokens that count in the loss after the shift: labels[b, 1..] that are not -100, summed over rows. Sum this
    /// over an accumulation window to normalise the loss as `transformers` does with `num_items_in_batch`.
    pub fn num_label_tokens(&self) -> usize {
        if self.seq_len == 0 {
            return 0;
        }
        self.labels.chunks(self.seq_len).map(|row| row.iter().skip(1).filter(|&&l| l != IGNORE_INDEX).count()).sum()
    }
}

fn collate<'a>(
    rows: impl Iterator<Item = (&'a [u32], &'a [i64], Option<&'a [u32]>)> + Clone,
    pad_id: u32,
) -> CausalBatch {
    let seq_len = rows.clone().map(|r| r.0.len()).max().unwrap_or(0);
    let mut b = CausalBatch { seq_len, ..Default::default() };
    for (ids, labels, pos) in rows {
        let n = ids.len();
        b.input_ids.extend_from_slice(ids);
        b.input_ids.extend(std::iter::repeat_n(pad_id, seq_len - n));
        b.labels.extend_from_slice(labels);
        b.labels.extend(std::iter::repeat_n(IGNORE_INDEX, seq_len - n));
        b.attention_mask.extend(std::iter::repeat_n(1, n));
        b.attention_mask.extend(std::iter::repeat_n(0, seq_len - n));
        match pos {
            Some(p) => {
                b.position_ids.extend_from_slice(p);
                let next = p.last().map_or(0, |&x| x + 1);
                b.position_ids.extend(next..next + (seq_len - n) as u32);
            }
            None => b.position_ids.extend(0..seq_len as u32),
        }
        b.batch_size += 1;
    }
    b
}

/// Right-pads examples to the longest in the batch (`DataCollatorForLanguageModeling`-style: pad id on inputs,
/// -100 on labels, attention mask 0).
pub fn pad_examples(examples: &[&CausalExample], pad_id: u32) -> CausalBatch {
    collate(examples.iter().map(|e| (e.input_ids.as_slice(), e.labels.as_slice(), None)), pad_id)
}

/// Right-pads packed rows the same way, keeping their position ids.
pub fn pad_packed(rows: &[&PackedRow], pad_id: u32) -> CausalBatch {
    collate(rows.iter().map(|r| (r.input_ids.as_slice(), r.labels.as_slice(), Some(r.position_ids.as_slice()))), pad_id)
}
