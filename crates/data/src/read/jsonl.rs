//! JSON Lines: one object per line, parsed with serde_json.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use serde_json::Value;

use super::{utf8_line, BlankCount, Lines, ReadOptions};
use crate::error::{DataError, Result};
use crate::example::{Example, Label};

/// Streams `Example`s from a JSONL file. Labels may be a string, an integer or a list of them (multi-label).
pub struct JsonlReader {
    path: String,
    lines: Lines<BufReader<File>>,
    text: String,
    pair: Option<String>,
    label: Option<String>,
    blank: usize,
}

impl JsonlReader {
    pub fn open(path: &Path, opts: &ReadOptions) -> Result<Self> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|e| DataError::io(&name, e))?;
        Ok(JsonlReader {
            path: name,
            lines: Lines::new(BufReader::with_capacity(1 << 16, file)),
            text: opts.text_column_name.clone(),
            pair: opts.text_pair_column_name.clone(),
            label: opts.label_column_name.clone(),
            blank: 0,
        })
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn text_field(path: &str, line: u64, obj: &serde_json::Map<String, Value>, key: &str) -> Result<String> {
    match obj.get(key) {
        None => Err(DataError::record(path, line, format_args!("field {key:?} is missing"))),
        Some(Value::String(s)) if s.trim().is_empty() => {
            Err(DataError::record(path, line, format_args!("field {key:?} is empty")))
        }
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => {
            Err(DataError::record(path, line, format_args!("field {key:?} must be a string, found {}", kind(v))))
        }
    }
}

fn label_name(path: &str, line: u64, key: &str, v: &Value) -> Result<String> {
    match v {
        Value::String(s) if s.trim().is_empty() => {
            Err(DataError::record(path, line, format_args!("field {key:?} is empty")))
        }
        Value::String(s) => Ok(s.trim().to_string()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        v => Err(DataError::record(
            path,
            line,
            format_args!("field {key:?} must be a string, an integer or a list of them, found {}", kind(v)),
        )),
    }
}

fn parse(path: &str, line: u64, s: &str, r: &JsonlReader) -> Result<Example> {
    let v: Value =
        serde_json::from_str(s).map_err(|e| DataError::record(path, line, format_args!("invalid JSON: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(DataError::record(path, line, format_args!("expected a JSON object, found {}", kind(&v))));
    };
    let text = text_field(path, line, &obj, &r.text)?;
    let text_pair = r.pair.as_deref().map(|k| text_field(path, line, &obj, k)).transpose()?;
    let label = match r.label.as_deref() {
        None => None,
        Some(key) => Some(match obj.get(key) {
            None | Some(Value::Null) => {
                return Err(DataError::record(path, line, format_args!("field {key:?} is missing")));
            }
            Some(Value::Array(items)) => {
                if items.is_empty() {
                    return Err(DataError::record(path, line, format_args!("field {key:?} is an empty list")));
                }
                Label::Multi(items.iter().map(|v| label_name(path, line, key, v)).collect::<Result<_>>()?)
            }
            Some(v) => Label::Single(label_name(path, line, key, v)?),
        }),
    };
    Ok(Example { text, text_pair, label, line })
}

impl Iterator for JsonlReader {
    type Item = Result<Example>;

    fn next(&mut self) -> Option<Result<Example>> {
        loop {
            let (line, bytes) = match self.lines.next_line()? {
                Ok(lb) => lb,
                Err(e) => return Some(Err(DataError::io(&self.path, e))),
            };
            // Decode separately from `self.lines` so the borrow of its buffer ends before `parse`.
            let s = match utf8_line(&self.path, line, bytes) {
                Ok(s) => s.to_string(),
                Err(e) => return Some(Err(e)),
            };
            if s.trim().is_empty() {
                self.blank += 1;
                continue;
            }
            return Some(parse(&self.path, line, &s, self));
        }
    }
}

impl BlankCount for JsonlReader {
    fn blank_lines(&self) -> usize {
        self.blank
    }
}
