//! Plain text: one unlabelled example per line.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use super::{utf8_line, BlankCount, Lines};
use crate::error::{DataError, Result};
use crate::example::Example;

/// Streams one `Example` per non-blank line; blank lines are counted in the report.
pub struct TextReader {
    path: String,
    lines: Lines<BufReader<File>>,
    blank: usize,
}

impl TextReader {
    pub fn open(path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|e| DataError::io(&name, e))?;
        Ok(TextReader { path: name, lines: Lines::new(BufReader::with_capacity(1 << 16, file)), blank: 0 })
    }
}

impl Iterator for TextReader {
    type Item = Result<Example>;

    fn next(&mut self) -> Option<Result<Example>> {
        loop {
            let (line, bytes) = match self.lines.next_line()? {
                Ok(lb) => lb,
                Err(e) => return Some(Err(DataError::io(&self.path, e))),
            };
            let text = match utf8_line(&self.path, line, bytes) {
                Ok(s) if s.trim().is_empty() => {
                    self.blank += 1;
                    continue;
                }
                Ok(s) => s.to_string(),
                Err(e) => return Some(Err(e)),
            };
            return Some(Ok(Example { text, text_pair: None, label: None, line }));
        }
    }
}

impl BlankCount for TextReader {
    fn blank_lines(&self) -> usize {
        self.blank
    }
}
