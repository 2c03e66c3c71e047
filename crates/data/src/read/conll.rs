//! CoNLL: one token per line with its tag in another column, blank lines between sentences.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use super::{utf8_line, BlankCount, Lines, ReadOptions};
use crate::error::{DataError, Result};
use crate::example::TokenExample;

/// Streams sentences from a CoNLL file. Columns are TAB-separated when the line has a TAB (so tokens may hold
/// spaces), else whitespace-separated. `-DOCSTART-` lines are skipped; the last sentence needs no blank line.
pub struct ConllReader {
    path: String,
    lines: Lines<BufReader<File>>,
    token_col: usize,
    tag_col: Option<usize>,
    /// Column count and line of the first token line: every later line must have as many.
    width: Option<(usize, u64)>,
    done: bool,
}

impl ConllReader {
    pub fn open(path: &Path, opts: &ReadOptions) -> Result<Self> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|e| DataError::io(&name, e))?;
        if opts.tag_column == Some(opts.token_column) {
            return Err(DataError::Invalid("token and tag columns must differ".into()));
        }
        Ok(ConllReader {
            path: name,
            lines: Lines::new(BufReader::with_capacity(1 << 16, file)),
            token_col: opts.token_column,
            tag_col: opts.tag_column,
            width: None,
            done: false,
        })
    }

    fn needed(&self) -> usize {
        self.token_col.max(self.tag_col.unwrap_or(0)).max(1) + 1
    }
}

impl Iterator for ConllReader {
    type Item = Result<TokenExample>;

    fn next(&mut self) -> Option<Result<TokenExample>> {
        if self.done {
            return None;
        }
        let mut sent = TokenExample { tokens: Vec::new(), tags: Vec::new(), line: 0 };
        // A bad line poisons its sentence: read to the sentence's end, then report the first error.
        let mut error: Option<DataError> = None;
        let needed = self.needed();
        loop {
            let (line, bytes) = match self.lines.next_line() {
                None => {
                    self.done = true;
                    break;
                }
                Some(Ok(lb)) => lb,
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(DataError::io(&self.path, e)));
                }
            };
            let s = match utf8_line(&self.path, line, bytes) {
                Ok(s) => s,
                Err(e) => {
                    error.get_or_insert(e);
                    if sent.line == 0 {
                        sent.line = line;
                    }
                    continue;
                }
            };
            let trimmed = s.trim();
            if trimmed.is_empty() {
                if sent.line != 0 {
                    break;
                }
                continue;
            }
            if trimmed.starts_with("-DOCSTART-") {
                continue;
            }
            if sent.line == 0 {
                sent.line = line;
            }
            if error.is_some() {
                continue;
            }
            let cols: Vec<&str> =
                if s.contains('\t') { s.split('\t').map(str::trim).collect() } else { s.split_whitespace().collect() };
            if cols.len() < needed {
                let what = if needed == 2 { " (token, tag)" } else { "" };
                error = Some(DataError::record(
                    &self.path,
                    line,
                    format_args!("expected {needed} columns{what}, found {}", cols.len()),
                ));
                continue;
            }
            match self.width {
                None => self.width = Some((cols.len(), line)),
                Some((w, first)) if w != cols.len() => {
                    error = Some(DataError::record(
                        &self.path,
                        line,
                        format_args!("expected {w} columns (as on line {first}), found {}", cols.len()),
                    ));
                    continue;
                }
                Some(_) => {}
            }
            let tag = cols[self.tag_col.unwrap_or(cols.len() - 1)];
            let token = cols[self.token_col];
            if token.is_empty() || tag.is_empty() {
                let which = if token.is_empty() { "token" } else { "tag" };
                error = Some(DataError::record(&self.path, line, format_args!("{which} column is empty")));
                continue;
            }
            sent.tokens.push(token.to_string());
            sent.tags.push(tag.to_string());
        }
        match error {
            Some(e) => Some(Err(e)),
            None if sent.line == 0 => None,
            None => Some(Ok(sent)),
        }
    }
}

impl BlankCount for ConllReader {}
