//! JSON Lines: one object per line, parsed with serde_json.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use serde_json::Value;

use super::{json_kind, utf8_line, At, BlankCount, Lines, ReadOptions};
use crate::error::{DataError, Result};
use crate::example::{Example, Label};

/// Streams `Example`s from a JSONL file. Labels may be a string, a number or a list of them (multi-label).
pub struct JsonlReader {
    path: String,
    lines: Lines<BufReader<File>>,
    fields: ExampleFields,
    blank: usize,
}

impl JsonlReader {
    pub fn open(path: &Path, opts: &ReadOptions) -> Result<Self> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|e| DataError::io(&name, e))?;
        Ok(JsonlReader {
            path: name,
            lines: Lines::new(BufReader::with_capacity(1 << 16, file)),
            fields: ExampleFields::new(opts),
            blank: 0,
        })
    }
}

/// The fields (JSONL) or columns (Parquet, Arrow) an `Example` is made of.
#[derive(Debug, Clone)]
pub(crate) struct ExampleFields {
    pub(crate) text: String,
    pub(crate) pair: Option<String>,
    pub(crate) label: Option<String>,
    pub(crate) label_separator: Option<String>,
}

impl ExampleFields {
    pub(crate) fn new(opts: &ReadOptions) -> Self {
        ExampleFields {
            text: opts.text_column_name.clone(),
            pair: opts.text_pair_column_name.clone(),
            label: opts.label_column_name.clone(),
            label_separator: opts.label_separator.clone(),
        }
    }
}

fn text_field(at: At, obj: &serde_json::Map<String, Value>, key: &str) -> Result<String> {
    let noun = at.noun();
    match obj.get(key) {
        None => Err(at.err(format_args!("{noun} {key:?} is missing"))),
        Some(Value::Null) if at.is_row() => Err(at.err(format_args!("{noun} {key:?} is null"))),
        Some(Value::String(s)) if s.trim().is_empty() => Err(at.err(format_args!("{noun} {key:?} is empty"))),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(at.err(format_args!("{noun} {key:?} must be a string, found {}", json_kind(v)))),
    }
}

fn label_name(at: At, key: &str, v: &Value) -> Result<String> {
    let noun = at.noun();
    match v {
        Value::String(s) if s.trim().is_empty() => Err(at.err(format_args!("{noun} {key:?} is empty"))),
        Value::String(s) => Ok(s.trim().to_string()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        // A typed float column (STS-B's float32 label) holds regression targets: the shortest decimal that reads
        // back to the same float, as a CSV cell would hold it.
        Value::Number(n) if at.is_row() => Ok(n.to_string()),
        v if at.is_row() => Err(
            at.err(format_args!("{noun} {key:?} must be a string, a number or a list of them, found {}", json_kind(v)))
        ),
        v => Err(at.err(format_args!(
            "{noun} {key:?} must be a string, an integer or a list of them, found {}",
            json_kind(v)
        ))),
    }
}

/// One `Example` from a JSON object: a JSONL line, or a row of a columnar file.
pub(crate) fn example_from_object(
    at: At,
    line: u64,
    obj: &serde_json::Map<String, Value>,
    f: &ExampleFields,
) -> Result<Example> {
    let text = text_field(at, obj, &f.text)?;
    let text_pair = f.pair.as_deref().map(|k| text_field(at, obj, k)).transpose()?;
    let noun = at.noun();
    let label = match f.label.as_deref() {
        None => None,
        Some(key) => Some(match obj.get(key) {
            Some(Value::Null) if at.is_row() => return Err(at.err(format_args!("{noun} {key:?} is null"))),
            None | Some(Value::Null) => return Err(at.err(format_args!("{noun} {key:?} is missing"))),
            Some(Value::Array(items)) => {
                if items.is_empty() {
                    return Err(at.err(format_args!("{noun} {key:?} is an empty list")));
                }
                Label::Multi(items.iter().map(|v| label_name(at, key, v)).collect::<Result<_>>()?)
            }
            Some(v) => {
                let name = label_name(at, key, v)?;
                match f.label_separator.as_deref() {
                    Some(sep) if v.is_string() => split_labels(&name, sep)
                        .ok_or_else(|| at.err(format_args!("{noun} {key:?} holds no labels")))?,
                    _ => Label::Single(name),
                }
            }
        }),
    };
    Ok(Example { text, text_pair, label, line })
}

/// A multi-label cell split on `sep` (empty parts dropped); `None` when nothing is left.
pub(crate) fn split_labels(cell: &str, sep: &str) -> Option<Label> {
    let parts: Vec<String> = cell.split(sep).map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    (!parts.is_empty()).then_some(Label::Multi(parts))
}

fn parse(path: &str, line: u64, s: &str, fields: &ExampleFields) -> Result<Example> {
    let at = At::Line { path, line };
    let v: Value = serde_json::from_str(s).map_err(|e| at.err(format_args!("invalid JSON: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(at.err(format_args!("expected a JSON object, found {}", json_kind(&v))));
    };
    example_from_object(at, line, &obj, fields)
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
            return Some(parse(&self.path, line, &s, &self.fields));
        }
    }
}

impl BlankCount for JsonlReader {
    fn blank_lines(&self) -> usize {
        self.blank
    }
}
