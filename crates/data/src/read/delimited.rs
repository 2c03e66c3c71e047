//! CSV and TSV through the `csv` crate: header row, RFC 4180 quoting, CRLF, configurable columns.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use csv::{ErrorKind, StringRecord};

use super::jsonl::split_labels;
use super::{BlankCount, Format, ReadOptions};
use crate::error::{DataError, Result};
use crate::example::{Example, Label};

/// Streams `Example`s from a CSV/TSV file with a header row.
pub struct DelimitedReader {
    path: String,
    rdr: csv::Reader<BufReader<File>>,
    headers: Vec<String>,
    text: usize,
    pair: Option<usize>,
    label: Option<usize>,
    label_separator: Option<String>,
    delimiter: u8,
    record: StringRecord,
    finished: bool,
    /// The header row ends in CRLF (see `line_of`).
    crlf: bool,
}

impl DelimitedReader {
    /// Opens `path` and checks that the configured columns are in its header.
    pub fn open(path: &Path, opts: &ReadOptions) -> Result<Self> {
        let name = path.display().to_string();
        let delimiter = opts.delimiter.unwrap_or(match opts.format_for(path) {
            Ok(Format::Tsv) => b'\t',
            _ => b',',
        });
        let file = File::open(path).map_err(|e| DataError::io(&name, e))?;
        let mut file = BufReader::with_capacity(1 << 16, file);
        let crlf = {
            let head = file.fill_buf().map_err(|e| DataError::io(&name, e))?;
            head.iter().position(|&b| b == b'\n').is_some_and(|i| i > 0 && head[i - 1] == b'\r')
        };
        let mut rdr =
            csv::ReaderBuilder::new().delimiter(delimiter).has_headers(true).flexible(false).from_reader(file);
        let headers: Vec<String> = match rdr.headers() {
            Ok(h) => h.iter().map(str::to_string).collect(),
            Err(e) => return Err(header_error(&name, e)),
        };
        if headers.is_empty() || (headers.len() == 1 && headers[0].is_empty()) {
            return Err(DataError::file(&name, "empty file: expected a header row"));
        }
        let find = |col: &str| -> Result<usize> {
            headers.iter().position(|h| h == col).ok_or_else(|| {
                DataError::file(
                    &name,
                    format_args!("no column {col:?} in the header (columns: {})", headers.join(", ")),
                )
            })
        };
        let text = find(&opts.text_column_name)?;
        let pair = opts.text_pair_column_name.as_deref().map(find).transpose()?;
        let label = opts.label_column_name.as_deref().map(find).transpose()?;
        Ok(DelimitedReader {
            path: name,
            rdr,
            text,
            pair,
            label,
            headers,
            label_separator: opts.label_separator.clone(),
            delimiter,
            record: StringRecord::new(),
            finished: false,
            crlf,
        })
    }

    /// The header row.
    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    fn cell(&self, idx: usize, line: u64) -> Result<String> {
        let v = self.record.get(idx).unwrap_or("");
        if v.trim().is_empty() {
            return Err(DataError::record(&self.path, line, format_args!("column {:?} is empty", self.headers[idx])));
        }
        Ok(v.to_string())
    }

    fn example(&self, line: u64) -> Result<Example> {
        let text = self.cell(self.text, line)?;
        let text_pair = self.pair.map(|i| self.cell(i, line)).transpose()?;
        let label = match self.label {
            None => None,
            Some(i) => {
                let raw = self.cell(i, line)?;
                Some(match &self.label_separator {
                    None => Label::Single(raw.trim().to_string()),
                    Some(sep) => split_labels(&raw, sep).ok_or_else(|| {
                        DataError::record(
                            &self.path,
                            line,
                            format_args!("column {:?} holds no labels", self.headers[i]),
                        )
                    })?,
                })
            }
        };
        Ok(Example { text, text_pair, label, line })
    }

    /// The csv crate accepts a quote that is never closed: the field silently swallows the rest of the file.
    /// Re-scan the raw bytes of a suspicious record (a parse error, a field with a line break, or the last
    /// record) from its start; the scan stops at the record's end, so a sound record costs only its own bytes.
    fn unterminated_quote(&self, start_byte: u64, start_line: u64) -> Option<DataError> {
        let mut f = File::open(&self.path).ok()?;
        f.seek(SeekFrom::Start(start_byte)).ok()?;
        let (line_off, field) = open_quote(BufReader::new(f).bytes().map_while(|b| b.ok()), self.delimiter, b'"')?;
        let col = self.headers.get(field).map(|h| format!("{h:?}")).unwrap_or_else(|| format!("#{}", field + 1));
        Some(DataError::record(
            &self.path,
            start_line + line_off,
            format_args!("unterminated quote in column {col} (the field runs to the end of the file)"),
        ))
    }

    /// 1-based line of a csv position: the crate counts a CRLF line break only when it consumes the LF, which
    /// happens at the start of the next record, so in CRLF files its record lines lag by one.
    fn line_of(&self, pos: &csv::Position) -> u64 {
        pos.line() + u64::from(self.crlf)
    }
}

/// Scans one raw record (RFC 4180) from its first byte: `Some((line offset, field index))` of a quoted field
/// still open at the end of input, `None` as soon as the record ends outside quotes.
fn open_quote(raw: impl Iterator<Item = u8>, delimiter: u8, quote: u8) -> Option<(u64, usize)> {
    let (mut in_quotes, mut at_start, mut pending_quote) = (false, true, false);
    let (mut line, mut field) = (0u64, 0usize);
    let mut opened = (0u64, 0usize);
    // A record position may point at the LF of the previous record's CRLF.
    let mut leading = true;
    for b in raw {
        if leading && (b == b'\n' || b == b'\r') {
            continue;
        }
        leading = false;
        if pending_quote {
            pending_quote = false;
            if b == quote {
                continue; // an escaped "" inside quotes
            }
            in_quotes = false;
        }
        if in_quotes {
            if b == quote {
                pending_quote = true;
            } else if b == b'\n' {
                line += 1;
            }
        } else if at_start && b == quote {
            in_quotes = true;
            at_start = false;
            opened = (line, field);
        } else if b == delimiter {
            at_start = true;
            field += 1;
        } else if b == b'\n' || b == b'\r' {
            return None;
        } else {
            at_start = false;
        }
    }
    (in_quotes && !pending_quote).then_some(opened)
}

fn header_error(path: &str, e: csv::Error) -> DataError {
    match e.kind() {
        ErrorKind::Utf8 { .. } => DataError::file(path, "header row is not valid UTF-8"),
        ErrorKind::Io(_) => match e.into_kind() {
            ErrorKind::Io(io) => DataError::io(path, io),
            _ => DataError::file(path, "cannot read the header row"),
        },
        _ => DataError::file(path, format_args!("cannot read the header row: {e}")),
    }
}

impl Iterator for DelimitedReader {
    type Item = Result<Example>;

    fn next(&mut self) -> Option<Result<Example>> {
        if self.finished {
            return None;
        }
        let start = self.rdr.position().clone();
        let mut record = std::mem::take(&mut self.record);
        let res = self.rdr.read_record(&mut record);
        self.record = record;
        let line = self.line_of(self.record.position().unwrap_or(&start));
        match res {
            Ok(false) => {
                self.finished = true;
                None
            }
            Ok(true) => {
                let suspicious = self.rdr.is_done() || self.record.iter().any(|f| f.contains(['\n', '\r']));
                if suspicious {
                    if let Some(e) = self.unterminated_quote(start.byte(), line) {
                        self.finished = true;
                        return Some(Err(e));
                    }
                }
                Some(self.example(line))
            }
            Err(e) => {
                let line = self.line_of(e.position().unwrap_or(&start));
                if matches!(e.kind(), ErrorKind::UnequalLengths { .. }) {
                    if let Some(q) = self.unterminated_quote(start.byte(), line) {
                        self.finished = true;
                        return Some(Err(q));
                    }
                }
                Some(Err(match e.kind() {
                    ErrorKind::UnequalLengths { expected_len, len, .. } => DataError::record(
                        &self.path,
                        line,
                        format_args!("expected {expected_len} columns (as in the header), found {len}"),
                    ),
                    ErrorKind::Utf8 { err, .. } => {
                        let col = self.headers.get(err.field()).map_or_else(String::new, |h| format!(" {h:?}"));
                        DataError::record(&self.path, line, format_args!("invalid UTF-8 in column{col}"))
                    }
                    ErrorKind::Io(_) => {
                        self.finished = true;
                        match e.into_kind() {
                            ErrorKind::Io(io) => DataError::io(&self.path, io),
                            _ => DataError::file(&self.path, "read error"),
                        }
                    }
                    _ => DataError::record(&self.path, line, e),
                }))
            }
        }
    }
}

impl BlankCount for DelimitedReader {}

#[cfg(test)]
mod tests {
    use super::open_quote;

    #[test]
    fn quote_scanner() {
        let scan = |s: &[u8]| open_quote(s.iter().copied(), b',', b'"');
        assert_eq!(scan(b"a,\"b\"\"c\"\n"), None);
        assert_eq!(scan(b"a,\"b\"\"c\""), None);
        assert_eq!(scan(b"a,\"b\nc,d\n"), Some((0, 1)));
        assert_eq!(scan(b"\nx,\"two\nlines\"\ny,\"open\n"), None);
        assert_eq!(scan(b"x,\"open\nz\n"), Some((0, 1)));
        assert_eq!(scan(b"a\"b,c\n"), None);
    }
}
