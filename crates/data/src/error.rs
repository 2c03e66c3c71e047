//! The one error type of the crate. Every message is a single line that names the file and line, so a user can
//! jump straight to the bad record.

use std::fmt;

/// Errors of reading and preparing data. `Display` is always one line: `file:line: what is wrong`.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{path}: cannot read")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// One malformed record. With `skip_bad_records` these are counted instead of returned.
    #[error("{path}:{line}: {message}")]
    Record { path: String, line: u64, message: String },
    /// One malformed row of a columnar file (Parquet, Arrow): the file, its row group (Parquet) or record batch
    /// (Arrow), and the 1-based row in the file. With `skip_bad_records` these are counted instead of returned.
    #[error("{path}: {part}, row {row}: {message}")]
    Row { path: String, part: String, row: u64, message: String },
    /// A label in evaluation data that the label map does not know.
    #[error("{path}:{line}: unknown label {label:?} (not in the label map)")]
    UnknownLabel { path: String, line: u64, label: String },
    /// A file-level problem that no record-skipping can fix (e.g. a column missing from the header).
    #[error("{path}: {message}")]
    File { path: String, message: String },
    /// An invalid option or argument (split spec, label map, ...).
    #[error("{0}")]
    Invalid(String),
}

impl DataError {
    pub(crate) fn record(path: &str, line: u64, message: impl fmt::Display) -> Self {
        DataError::Record { path: path.to_string(), line, message: one_line(&message.to_string()) }
    }

    pub(crate) fn file(path: &str, message: impl fmt::Display) -> Self {
        DataError::File { path: path.to_string(), message: one_line(&message.to_string()) }
    }

    pub(crate) fn row(path: &str, part: &str, row: u64, message: impl fmt::Display) -> Self {
        DataError::Row { path: path.to_string(), part: part.to_string(), row, message: one_line(&message.to_string()) }
    }

    pub(crate) fn io(path: &str, source: std::io::Error) -> Self {
        DataError::Io { path: path.to_string(), source }
    }

    /// True for errors confined to one record: `skip_bad_records` may count and skip them.
    pub fn is_record_error(&self) -> bool {
        matches!(self, DataError::Record { .. } | DataError::Row { .. } | DataError::UnknownLabel { .. })
    }

    /// `file:line` of a record error, for reports.
    pub fn location(&self) -> Option<String> {
        match self {
            DataError::Record { path, line, .. } | DataError::UnknownLabel { path, line, .. } => {
                Some(format!("{path}:{line}"))
            }
            DataError::Row { path, part, row, .. } => Some(format!("{path}: {part}, row {row}")),
            _ => None,
        }
    }
}

/// Error messages quote user data; keep them on one line whatever the data holds.
fn one_line(s: &str) -> String {
    if s.contains(['\n', '\r']) {
        s.replace("\r\n", " ").replace(['\n', '\r'], " ")
    } else {
        s.to_string()
    }
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;
