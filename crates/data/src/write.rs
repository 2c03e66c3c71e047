//! Writing prepared data. Every file is written atomically: to a temporary file beside the target, synced,
//! then renamed over it, so a crash never leaves a half-written dataset behind.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::example::{Example, Label, TokenExample};
use crate::read::Format;

/// Writes `path` atomically with `fill`.
pub fn atomic_write<F>(path: &Path, fill: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
{
    let name = path.display().to_string();
    let file_name = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp: PathBuf = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut w = BufWriter::with_capacity(1 << 16, File::create(&tmp)?);
        fill(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(DataError::io(&name, e));
    }
    Ok(())
}

/// Column names used when writing classification examples.
#[derive(Debug, Clone)]
pub struct Columns {
    pub text: String,
    pub text_pair: Option<String>,
    pub label: Option<String>,
    /// Joins multi-label lists in CSV/TSV cells.
    pub label_separator: String,
}

impl Default for Columns {
    fn default() -> Self {
        Columns { text: "text".into(), text_pair: None, label: Some("label".into()), label_separator: "|".into() }
    }
}

fn label_cell(label: &Option<Label>, sep: &str) -> String {
    match label {
        None => String::new(),
        Some(Label::Single(s)) => s.clone(),
        Some(Label::Multi(v)) => v.join(sep),
    }
}

/// Writes classification examples as CSV, TSV, JSONL or plain text (text only). Parquet and Arrow are read,
/// not written: asking for them is an error.
pub fn write_examples<'a>(
    path: &Path,
    format: Format,
    columns: &Columns,
    examples: impl IntoIterator<Item = &'a Example>,
) -> Result<()> {
    if format.is_columnar() {
        return Err(DataError::file(
            &path.display().to_string(),
            "Parquet and Arrow are read, not written: name the output .csv, .tsv, .jsonl or .txt",
        ));
    }
    atomic_write(path, |w| match format {
        Format::Csv | Format::Tsv => {
            let delim = if format == Format::Tsv { b'\t' } else { b',' };
            let mut cw = csv::WriterBuilder::new().delimiter(delim).from_writer(w);
            let mut header = vec![columns.text.as_str()];
            header.extend(columns.text_pair.as_deref());
            header.extend(columns.label.as_deref());
            cw.write_record(&header)?;
            for e in examples {
                let mut row = vec![e.text.clone()];
                if columns.text_pair.is_some() {
                    row.push(e.text_pair.clone().unwrap_or_default());
                }
                if columns.label.is_some() {
                    row.push(label_cell(&e.label, &columns.label_separator));
                }
                cw.write_record(&row)?;
            }
            cw.flush()
        }
        Format::Jsonl => {
            for e in examples {
                let mut obj = serde_json::Map::new();
                obj.insert(columns.text.clone(), e.text.clone().into());
                if let (Some(k), Some(p)) = (&columns.text_pair, &e.text_pair) {
                    obj.insert(k.clone(), p.clone().into());
                }
                if let (Some(k), Some(l)) = (&columns.label, &e.label) {
                    obj.insert(k.clone(), serde_json::to_value(l).unwrap_or(serde_json::Value::Null));
                }
                serde_json::to_writer(&mut *w, &obj)?;
                w.write_all(b"\n")?;
            }
            Ok(())
        }
        Format::Text | Format::Conll | Format::Parquet | Format::Arrow => {
            for e in examples {
                // One example per line: embedded line breaks would split it in two on reading.
                let t = e.text.replace(['\n', '\r'], " ");
                writeln!(w, "{t}")?;
            }
            Ok(())
        }
    })
}

/// Writes token-classification sentences as `token<TAB>tag` lines with blank lines between sentences.
pub fn write_conll<'a>(path: &Path, sentences: impl IntoIterator<Item = &'a TokenExample>) -> Result<()> {
    atomic_write(path, |w| {
        for s in sentences {
            for (t, g) in s.tokens.iter().zip(&s.tags) {
                writeln!(w, "{t}\t{g}")?;
            }
            w.write_all(b"\n")?;
        }
        Ok(())
    })
}
