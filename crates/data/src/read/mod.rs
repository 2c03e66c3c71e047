//! Streaming readers: each yields one `Result` per record, so a huge file is never held as one string and a bad
//! record is reported with its `file:line` instead of stopping silently. Columnar files (Parquet, Arrow) are read
//! one row group or record batch at a time and name `file: row group N, row R` instead.

pub(crate) mod columnar;
mod conll;
mod delimited;
mod jsonl;
mod text;

use std::fmt;
use std::path::Path;

use serde_json::Value;

pub use columnar::ColumnarSource;
pub use conll::ConllReader;
pub use delimited::DelimitedReader;
pub use jsonl::JsonlReader;
pub use text::TextReader;

use crate::error::{DataError, Result};
use crate::example::{Example, TokenExample};

/// File formats. `Format::from_path` picks one by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated with a header row.
    Csv,
    /// Tab-separated with a header row.
    Tsv,
    /// One JSON object per line.
    Jsonl,
    /// CoNLL token-per-line with blank-line sentence breaks.
    Conll,
    /// One example per line, no labels.
    Text,
    /// Apache Parquet (the format of most Hugging Face datasets), read one row group at a time.
    Parquet,
    /// Arrow IPC streams: a `datasets` `save_to_disk` folder (or `DatasetDict` folder), or one `.arrow` file.
    Arrow,
}

impl Format {
    /// `.csv` → Csv, `.tsv`/`.tab` → Tsv, `.jsonl`/`.ndjson`/`.json` → Jsonl, `.conll`/`.bio`/`.iob` → Conll,
    /// `.txt` → Text, `.parquet`/`.pq` and folders of Parquet shards → Parquet, `.arrow` and folders
    /// (`save_to_disk`) → Arrow.
    pub fn from_path(path: &Path) -> Option<Format> {
        if path.is_dir() {
            return Some(if columnar::is_parquet_folder(path) { Format::Parquet } else { Format::Arrow });
        }
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "csv" => Format::Csv,
            "tsv" | "tab" => Format::Tsv,
            "jsonl" | "ndjson" | "json" => Format::Jsonl,
            "conll" | "bio" | "iob" | "iob2" => Format::Conll,
            "txt" => Format::Text,
            "parquet" | "pq" => Format::Parquet,
            "arrow" => Format::Arrow,
            _ => return None,
        })
    }

    /// Parses a format name as given on the command line.
    pub fn parse(name: &str) -> Result<Format> {
        Ok(match name.to_ascii_lowercase().as_str() {
            "csv" => Format::Csv,
            "tsv" => Format::Tsv,
            "jsonl" | "json" | "ndjson" => Format::Jsonl,
            "conll" => Format::Conll,
            "text" | "txt" => Format::Text,
            "parquet" => Format::Parquet,
            "arrow" => Format::Arrow,
            _ => {
                return Err(DataError::Invalid(format!(
                    "unknown format {name:?} (csv, tsv, jsonl, conll, text, parquet, arrow)"
                )))
            }
        })
    }

    /// True for token-classification formats. Parquet and Arrow files hold either kind: see [`is_token_level`].
    pub fn is_token_level(self) -> bool {
        self == Format::Conll
    }

    /// True for the columnar formats (Parquet, Arrow), read but not written.
    pub fn is_columnar(self) -> bool {
        matches!(self, Format::Parquet | Format::Arrow)
    }
}

/// Options shared by the readers. Column names follow the HF example scripts.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Explicit format; `None` picks it from the file extension.
    pub format: Option<Format>,
    /// CSV/TSV field delimiter; `None` takes it from the format (`,` or TAB).
    pub delimiter: Option<u8>,
    /// Column (CSV) or field (JSONL) holding the text.
    pub text_column_name: String,
    /// Column or field holding the second segment of sentence pairs.
    pub text_pair_column_name: Option<String>,
    /// Column or field holding the label; `None` reads unlabelled data (e.g. a test file without gold labels).
    pub label_column_name: Option<String>,
    /// Split CSV/TSV label cells on this string for multi-label data (e.g. `"|"`). JSONL uses lists instead.
    pub label_separator: Option<String>,
    /// CoNLL: 0-based column of the token.
    pub token_column: usize,
    /// CoNLL: 0-based column of the tag; `None` is the last column (as in CoNLL-2003).
    pub tag_column: Option<usize>,
    /// Count malformed records and go on, instead of failing on the first one.
    pub skip_bad_records: bool,
    /// The split to read from a `datasets` `DatasetDict` folder (`dataset_dict.json` and one folder per split);
    /// `None` reads its only split, and a folder with several is an error naming them.
    pub dataset_split: Option<String>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            format: None,
            delimiter: None,
            text_column_name: "text".into(),
            text_pair_column_name: None,
            label_column_name: Some("label".into()),
            label_separator: None,
            token_column: 0,
            tag_column: None,
            skip_bad_records: false,
            dataset_split: None,
        }
    }
}

impl ReadOptions {
    /// The format for `path`: the explicit one, else by extension.
    pub fn format_for(&self, path: &Path) -> Result<Format> {
        match self.format.or_else(|| Format::from_path(path)) {
            Some(f) => Ok(f),
            None => Err(DataError::file(
                &path.display().to_string(),
                "cannot tell the format from the extension; give it explicitly (csv, tsv, jsonl, conll, text, parquet, arrow)",
            )),
        }
    }
}

/// How many locations of skipped records a report keeps.
pub const REPORT_LOCATIONS: usize = 10;

/// What a read skipped. Nothing is dropped without being counted here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadReport {
    /// Records read successfully.
    pub records: usize,
    /// Malformed records skipped (only with `skip_bad_records`).
    pub skipped: usize,
    /// The first few skipped records' one-line errors (`file:line: ...`).
    pub first_errors: Vec<String>,
    /// Whitespace-only lines skipped by line-based formats (JSONL, plain text); they are not records.
    pub blank_lines: usize,
}

impl ReadReport {
    pub(crate) fn note_skip(&mut self, e: &DataError) {
        self.skipped += 1;
        if self.first_errors.len() < REPORT_LOCATIONS {
            self.first_errors.push(e.to_string());
        }
    }
}

/// Drains a reader: errors stop the read unless `skip_bad_records`, in which case record errors are counted.
/// File-level errors (I/O, missing columns) always stop it.
pub fn collect<T, I>(records: I, skip_bad_records: bool) -> Result<(Vec<T>, ReadReport)>
where
    I: Iterator<Item = Result<T>> + BlankCount,
{
    let mut out = Vec::new();
    let mut report = ReadReport::default();
    let mut records = records;
    for r in records.by_ref() {
        match r {
            Ok(x) => out.push(x),
            Err(e) if skip_bad_records && e.is_record_error() => report.note_skip(&e),
            Err(e) => return Err(e),
        }
    }
    report.records = out.len();
    report.blank_lines = records.blank_lines();
    Ok((out, report))
}

/// Readers that skip blank lines say how many.
pub trait BlankCount {
    fn blank_lines(&self) -> usize {
        0
    }
}

/// A classification dataset read from one file.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub path: String,
    pub examples: Vec<Example>,
    pub report: ReadReport,
}

/// A token-classification dataset read from one file.
#[derive(Debug, Clone)]
pub struct TokenDataset {
    pub path: String,
    pub sentences: Vec<TokenExample>,
    pub report: ReadReport,
}

/// Reads a classification file (CSV, TSV, JSONL, plain text, Parquet or Arrow) whole, honouring
/// `skip_bad_records`. Parquet and Arrow columns are found by the same names as CSV columns and JSONL fields.
pub fn read_examples(path: &Path, opts: &ReadOptions) -> Result<Dataset> {
    let name = path.display().to_string();
    check_dataset_split(path, opts)?;
    let (examples, report) = match opts.format_for(path)? {
        Format::Csv | Format::Tsv => collect(DelimitedReader::open(path, opts)?, opts.skip_bad_records)?,
        Format::Jsonl => collect(JsonlReader::open(path, opts)?, opts.skip_bad_records)?,
        Format::Text => collect(TextReader::open(path)?, opts.skip_bad_records)?,
        f @ (Format::Parquet | Format::Arrow) => {
            collect(columnar::examples(ColumnarSource::open(path, f, opts)?, opts)?, opts.skip_bad_records)?
        }
        Format::Conll => {
            return Err(DataError::file(&name, "CoNLL files hold token-level data; read them with read_tokens"));
        }
    };
    Ok(Dataset { path: name, examples, report })
}

/// Reads token-classification data whole, honouring `skip_bad_records`: a CoNLL file, or a Parquet/Arrow
/// dataset with a list-of-strings tokens column and a list tags column (see [`token_columns`]). Any other
/// format is read as CoNLL.
pub fn read_tokens(path: &Path, opts: &ReadOptions) -> Result<TokenDataset> {
    check_dataset_split(path, opts)?;
    let (sentences, report) = match opts.format_for(path).ok() {
        Some(f @ (Format::Parquet | Format::Arrow)) => {
            let source = ColumnarSource::open(path, f, opts)?;
            collect(columnar::sentences(source, opts)?, opts.skip_bad_records)?
        }
        _ => collect(ConllReader::open(path, opts)?, opts.skip_bad_records)?,
    };
    Ok(TokenDataset { path: path.display().to_string(), sentences, report })
}

/// True for a `datasets` `DatasetDict` folder (`dataset_dict.json` and one folder per split).
pub fn is_dataset_dict(path: &Path) -> bool {
    path.join("dataset_dict.json").is_file()
}

/// A folder that holds splits: a `DatasetDict` folder, a folder of Parquet shards (`train-00000-of-00002.parquet`,
/// `test-...`, directly or in `data/`), or a `datasets` cache folder (`csv-train.arrow`, `csv-test.arrow`).
pub fn has_splits(path: &Path) -> bool {
    is_dataset_dict(path) || columnar::is_parquet_folder(path) || columnar::is_cache_folder(path)
}

/// `dataset_split` picks a split of a `DatasetDict` folder or of a folder of Parquet shards, and nothing else:
/// refused for any other input.
fn check_dataset_split(path: &Path, opts: &ReadOptions) -> Result<()> {
    match &opts.dataset_split {
        Some(s) if !has_splits(path) => Err(DataError::Invalid(format!(
            "dataset split {s:?}: {} is not a DatasetDict folder (no dataset_dict.json), a folder of Parquet shards or a \
             `datasets` cache folder",
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// The tokens and tags columns of columnar token-classification data, as `run_ner.py` picks them:
/// `text_column_name` and `label_column_name`, except that the defaults ("text", "label") fall back to "tokens"
/// and "ner_tags" when the file has no such column.
pub fn token_columns(opts: &ReadOptions, has: impl Fn(&str) -> bool) -> (String, Option<String>) {
    let defaults = ReadOptions::default();
    let pick = |given: &str, default: &str, fallback: &str| {
        if given == default && !has(given) && has(fallback) {
            fallback.to_string()
        } else {
            given.to_string()
        }
    };
    let tokens = pick(&opts.text_column_name, &defaults.text_column_name, "tokens");
    let tags = opts.label_column_name.as_deref().map(|l| pick(l, "label", "ner_tags"));
    (tokens, tags)
}

/// True when `path` holds token-classification data: a CoNLL file, or a Parquet/Arrow dataset whose tokens
/// column (see [`token_columns`]) is a list of strings. Reads only the schema.
pub fn is_token_level(path: &Path, opts: &ReadOptions) -> Result<bool> {
    match opts.format_for(path)? {
        Format::Conll => Ok(true),
        f @ (Format::Parquet | Format::Arrow) => Ok(ColumnarSource::open(path, f, opts)?.is_token_level(opts)),
        _ => Ok(false),
    }
}

/// Where a record came from, for its error: a line of a text file or a row of a columnar file.
#[derive(Debug, Clone, Copy)]
pub(crate) enum At<'a> {
    Line {
        path: &'a str,
        line: u64,
    },
    /// `part` is "row group N" (Parquet) or "record batch N" (Arrow); `row` is 1-based in the file.
    Row {
        path: &'a str,
        part: &'a str,
        row: u64,
    },
}

impl At<'_> {
    pub(crate) fn err(&self, message: impl fmt::Display) -> DataError {
        match *self {
            At::Line { path, line } => DataError::record(path, line, message),
            At::Row { path, part, row } => DataError::row(path, part, row, message),
        }
    }

    pub(crate) fn is_row(&self) -> bool {
        matches!(self, At::Row { .. })
    }

    /// What a named value is called: a JSON "field", or a "column" of a table.
    pub(crate) fn noun(&self) -> &'static str {
        if self.is_row() {
            "column"
        } else {
            "field"
        }
    }
}

/// "a string", "a list", ... for error messages.
pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Reads lines as raw bytes so invalid UTF-8 is reported with its line instead of failing the whole file.
pub(crate) struct Lines<R> {
    inner: R,
    buf: Vec<u8>,
    pub(crate) line: u64,
}

impl<R: std::io::BufRead> Lines<R> {
    pub(crate) fn new(inner: R) -> Self {
        Lines { inner, buf: Vec::new(), line: 0 }
    }

    /// The next line's 1-based number and bytes without its `\n`/`\r\n`; `None` at end of file.
    pub(crate) fn next_line(&mut self) -> Option<std::io::Result<(u64, &[u8])>> {
        self.buf.clear();
        match self.inner.read_until(b'\n', &mut self.buf) {
            Ok(0) => None,
            Ok(_) => {
                self.line += 1;
                let mut end = self.buf.len();
                if end > 0 && self.buf[end - 1] == b'\n' {
                    end -= 1;
                }
                if end > 0 && self.buf[end - 1] == b'\r' {
                    end -= 1;
                }
                // A UTF-8 byte-order mark some editors write is not part of the first record.
                let start = if self.line == 1 && self.buf[..end].starts_with(b"\xEF\xBB\xBF") { 3 } else { 0 };
                Some(Ok((self.line, &self.buf[start..end])))
            }
            Err(e) => Some(Err(e)),
        }
    }
}

/// Decodes one line, naming the byte offset of the first invalid byte.
pub(crate) fn utf8_line<'a>(path: &str, line: u64, bytes: &'a [u8]) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|e| {
        DataError::record(path, line, format_args!("invalid UTF-8 at byte {} of the line", e.valid_up_to() + 1))
    })
}
