//! Streaming readers: each yields one `Result` per record, so a huge file is never held as one string and a bad
//! record is reported with its `file:line` instead of stopping silently.

mod conll;
mod delimited;
mod jsonl;
mod text;

use std::path::Path;

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
}

impl Format {
    /// `.csv` → Csv, `.tsv`/`.tab` → Tsv, `.jsonl`/`.ndjson`/`.json` → Jsonl, `.conll`/`.bio`/`.iob` → Conll,
    /// `.txt` → Text.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "csv" => Format::Csv,
            "tsv" | "tab" => Format::Tsv,
            "jsonl" | "ndjson" | "json" => Format::Jsonl,
            "conll" | "bio" | "iob" | "iob2" => Format::Conll,
            "txt" => Format::Text,
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
            _ => return Err(DataError::Invalid(format!("unknown format {name:?} (csv, tsv, jsonl, conll, text)"))),
        })
    }

    /// True for token-classification formats.
    pub fn is_token_level(self) -> bool {
        self == Format::Conll
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
                "cannot tell the format from the extension; give it explicitly (csv, tsv, jsonl, conll, text)",
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

/// Reads a classification file (CSV, TSV, JSONL or plain text) whole, honouring `skip_bad_records`.
pub fn read_examples(path: &Path, opts: &ReadOptions) -> Result<Dataset> {
    let name = path.display().to_string();
    let (examples, report) = match opts.format_for(path)? {
        Format::Csv | Format::Tsv => collect(DelimitedReader::open(path, opts)?, opts.skip_bad_records)?,
        Format::Jsonl => collect(JsonlReader::open(path, opts)?, opts.skip_bad_records)?,
        Format::Text => collect(TextReader::open(path)?, opts.skip_bad_records)?,
        Format::Conll => {
            return Err(DataError::file(&name, "CoNLL files hold token-level data; read them with read_tokens"));
        }
    };
    Ok(Dataset { path: name, examples, report })
}

/// Reads a CoNLL file whole, honouring `skip_bad_records`.
pub fn read_tokens(path: &Path, opts: &ReadOptions) -> Result<TokenDataset> {
    let (sentences, report) = collect(ConllReader::open(path, opts)?, opts.skip_bad_records)?;
    Ok(TokenDataset { path: path.display().to_string(), sentences, report })
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
