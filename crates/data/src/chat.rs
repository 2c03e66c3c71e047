//! Chat templates: the Jinja template a chat model ships (`chat_template` in `tokenizer_config.json`, or
//! `tokenizer.chat_template` in a GGUF file), rendered as `transformers`' `apply_chat_template(tokenize=False)`
//! renders it.
//!
//! The environment matches `transformers.utils.chat_template_utils`: `trim_blocks` and `lstrip_blocks`, the
//! `loopcontrols` extension (`{% break %}`, `{% continue %}`), no auto-escaping, Python string and dict methods
//! (`.strip()`, `.startswith()`, `.get()`, ... through `minijinja-contrib`'s pycompat), a `tojson` filter equal to
//! `json.dumps(x, ensure_ascii=False)` with its `indent`/`separators`/`sort_keys`/`ensure_ascii` options, the globals
//! `raise_exception(message)` and `strftime_now(format)`, and the variables `messages`, `add_generation_prompt`,
//! `bos_token`, `eos_token`, `tools` (none) and `documents` (none).
//!
//! Known differences, none of which real templates rely on: `strftime_now` formats the current UTC time (Python
//! uses local time, which is UTC in most containers) and knows the common directives only; `tojson` writes
//! floats with Rust's shortest round-trip digits in Python's layout.

use std::sync::{Arc, Mutex};

use minijinja::value::{Kwargs, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};
use serde::{Deserialize, Serialize};

/// Errors of compiling or rendering a chat template. Display is one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// The template does not parse.
    #[error("chat template does not compile: {0}")]
    Syntax(String),
    /// The template called `raise_exception(message)` (e.g. roles that do not alternate).
    #[error("chat template refused the conversation: {0}")]
    Raised(String),
    /// Any other rendering failure (an undefined attribute, a type error, ...).
    #[error("chat template failed: {0}")]
    Render(String),
}

impl From<ChatError> for crate::error::DataError {
    fn from(e: ChatError) -> Self {
        crate::error::DataError::Invalid(e.to_string())
    }
}

/// One chat message. Fields other than `role` and `content` (`name`, `tool_calls`, ...) are passed to the
/// template as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { role: role.into(), content: content.into(), extra: serde_json::Map::new() }
    }
}

/// A compiled chat template with the special tokens it may reference.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_len", &self.source.len())
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

const NAME: &str = "chat_template";

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn describe(e: &Error) -> String {
    // minijinja's Display already names the line; chained causes carry the original message.
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    one_line(&msg)
}

/// Instructions one render may execute: far above what a conversation of thousands of messages needs.
pub const RENDER_FUEL: u64 = 10_000_000;

impl ChatTemplate {
    /// Compiles `source`. `bos_token`/`eos_token` are the strings the template sees (None leaves them undefined,
    /// as `transformers` does for a tokenizer without that token).
    pub fn new(source: &str, bos_token: Option<&str>, eos_token: Option<&str>) -> Result<Self, ChatError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        // A template comes with a downloaded model: bound the work a render may do (a runaway loop is an error).
        env.set_fuel(Some(RENDER_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("strftime_now", |format: String| -> Result<String, Error> { Ok(strftime_utc_now(&format)) });
        env.add_template_owned(NAME, source.to_owned()).map_err(|e| ChatError::Syntax(describe(&e)))?;
        Ok(ChatTemplate {
            env,
            source: source.to_owned(),
            bos_token: bos_token.map(str::to_owned),
            eos_token: eos_token.map(str::to_owned),
        })
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders a conversation: `apply_chat_template(messages, tokenize=False, add_generation_prompt=...)`.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, ChatError> {
        let tmpl = self.env.get_template(NAME).map_err(|e| ChatError::Syntax(describe(&e)))?;
        // raise_exception is bound per call so the message it carries cannot leak between concurrent renders.
        let raised: Arc<Mutex<Option<String>>> = Arc::default();
        let slot = Arc::clone(&raised);
        let raise = Value::from_function(move |message: String| -> Result<Value, Error> {
            if let Ok(mut s) = slot.lock() {
                *s = Some(message.clone());
            }
            Err(Error::new(ErrorKind::InvalidOperation, message))
        });
        let ctx = minijinja::context! {
            messages => Value::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_deref().map(Value::from).unwrap_or(Value::UNDEFINED),
            eos_token => self.eos_token.as_deref().map(Value::from).unwrap_or(Value::UNDEFINED),
            tools => Value::from(()),
            documents => Value::from(()),
            raise_exception => raise,
        };
        // minijinja panics on a few malformed templates (e.g. `''[::-1]`): that is a render error too.
        let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tmpl.render(ctx)))
            .map_err(|_| ChatError::Render("the template engine failed on this template".into()))?;
        rendered.map_err(|e| match raised.lock().ok().and_then(|mut s| s.take()) {
            Some(message) => ChatError::Raised(one_line(&message)),
            None => ChatError::Render(describe(&e)),
        })
    }
}

/// Largest `tojson(indent=n)` a template may ask for (a huge one would be an allocation the size of n).
const MAX_TOJSON_INDENT: i64 = 1024;

/// `json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)` as `transformers`
/// overrides Jinja's `tojson` (no HTML escaping).
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let ensure_ascii: bool = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    let indent: Option<Value> = kwargs.get("indent")?;
    let separators: Option<Vec<String>> = kwargs.get("separators")?;
    let sort_keys: bool = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    kwargs.assert_all_used()?;
    let indent: Option<String> = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => match v.as_str() {
            Some(s) => Some(s.to_owned()),
            None => {
                let n = i64::try_from(v.clone())
                    .map_err(|_| Error::new(ErrorKind::InvalidOperation, "tojson: indent must be an int or str"))?;
                if n > MAX_TOJSON_INDENT {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        format!("tojson: indent {n} is larger than {MAX_TOJSON_INDENT}"),
                    ));
                }
                Some(" ".repeat(n.max(0) as usize))
            }
        },
    };
    let (item_sep, key_sep) = match separators {
        Some(s) if s.len() == 2 => (s[0].clone(), s[1].clone()),
        Some(_) => return Err(Error::new(ErrorKind::InvalidOperation, "tojson: separators must be a pair")),
        None if indent.is_some() => (",".to_owned(), ": ".to_owned()),
        None => (", ".to_owned(), ": ".to_owned()),
    };
    let opts = JsonOpts { ensure_ascii, indent, item_sep, key_sep, sort_keys };
    let mut out = String::new();
    dump(&value, &opts, 0, &mut out)?;
    Ok(Value::from(out))
}

struct JsonOpts {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

fn newline(opts: &JsonOpts, depth: usize, out: &mut String) {
    if let Some(ind) = &opts.indent {
        out.push('\n');
        for _ in 0..depth {
            out.push_str(ind);
        }
    }
}

/// Walks the template value directly (not through serde_json) so maps keep their insertion order, as Python
/// dicts do.
fn dump(v: &Value, opts: &JsonOpts, depth: usize, out: &mut String) -> Result<(), Error> {
    use minijinja::value::ValueKind as K;
    match v.kind() {
        K::Undefined | K::None => out.push_str("null"),
        K::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        K::Number if v.is_integer() => out.push_str(&v.to_string()),
        K::Number => {
            let f = f64::try_from(v.clone())?;
            out.push_str(&python_float_repr(f));
        }
        K::String => dump_str(v.as_str().unwrap_or_default(), opts.ensure_ascii, out),
        K::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            if opts.sort_keys {
                keys.sort();
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(&opts.item_sep);
                }
                newline(opts, depth + 1, out);
                match k.as_str() {
                    Some(s) => dump_str(s, opts.ensure_ascii, out),
                    None => dump_str(&k.to_string(), opts.ensure_ascii, out),
                }
                out.push_str(&opts.key_sep);
                dump(&v.get_item(k)?, opts, depth + 1, out)?;
            }
            newline(opts, depth, out);
            out.push('}');
        }
        K::Seq | K::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&opts.item_sep);
                }
                newline(opts, depth + 1, out);
                dump(item, opts, depth + 1, out)?;
            }
            newline(opts, depth, out);
            out.push(']');
        }
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: object of type {} is not JSON serializable", v.kind()),
            ))
        }
    }
    Ok(())
}

/// Python's `json` string escaping.
fn dump_str(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if ensure_ascii && (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `repr(float)`: shortest round-trip digits, scientific below 1e-4 and from 1e16 up.
fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    let sci = format!("{f:e}"); // e.g. "-1.5e-7", "1e16"
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let s = format!("{f}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

/// Calendar fields of a Unix time (UTC): year, month 1-12, day 1-31, hour, minute, second, weekday 0=Monday,
/// day of the year 1-366.
fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32, usize, u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days_from_civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy_mar = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy_mar + 2) / 153;
    let d = (doy_mar - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    const CUM: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = CUM[(m - 1) as usize] + d + u32::from(leap && m > 2);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    (y, m, d, (rem / 3600) as u32, (rem / 60 % 60) as u32, (rem % 60) as u32, weekday, yday)
}

/// `datetime.strftime` for the directives chat templates use (`%d %b %Y` and friends), on a Unix time.
pub fn strftime(secs: i64, format: &str) -> String {
    let (y, m, d, hh, mm, ss, wd, yday) = civil(secs);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('-') => match chars.next() {
                Some('d') => out.push_str(&d.to_string()),
                Some('m') => out.push_str(&m.to_string()),
                Some(o) => {
                    out.push_str("%-");
                    out.push(o);
                }
                None => out.push_str("%-"),
            },
            Some('b') => out.push_str(&MONTHS[(m - 1) as usize][..3]),
            Some('B') => out.push_str(MONTHS[(m - 1) as usize]),
            Some('a') => out.push_str(&WEEKDAYS[wd][..3]),
            Some('A') => out.push_str(WEEKDAYS[wd]),
            Some('H') => out.push_str(&format!("{hh:02}")),
            Some('I') => out.push_str(&format!("{:02}", if hh % 12 == 0 { 12 } else { hh % 12 })),
            Some('p') => out.push_str(if hh < 12 { "AM" } else { "PM" }),
            Some('M') => out.push_str(&format!("{mm:02}")),
            Some('S') => out.push_str(&format!("{ss:02}")),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

fn strftime_utc_now(format: &str) -> String {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    strftime(secs, format)
}
