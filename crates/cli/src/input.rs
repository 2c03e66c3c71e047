//! Reading the user's metric input files. Every problem is one line naming the file and line; nothing is
//! partially processed.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// The lines of a UTF-8 text file without their line endings (`\n` or `\r\n`).
pub fn read_lines(path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut lines = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        match std::str::from_utf8(raw) {
            Ok(s) => lines.push(s.to_owned()),
            Err(e) => bail!("{}:{}: invalid UTF-8 at byte {}", path.display(), i + 1, e.valid_up_to()),
        }
    }
    // A final newline does not start another line.
    if bytes.ends_with(b"\n") || bytes.is_empty() {
        lines.pop();
    }
    Ok(lines)
}

/// One label per line; blank lines are errors (a label file has no separators).
pub fn read_labels(path: &Path) -> Result<Vec<String>> {
    let lines = read_lines(path)?;
    if lines.is_empty() {
        bail!("{}: no labels (the file is empty)", path.display());
    }
    for (i, l) in lines.iter().enumerate() {
        if l.trim().is_empty() {
            bail!("{}:{}: empty label", path.display(), i + 1);
        }
    }
    Ok(lines.into_iter().map(|l| l.trim().to_owned()).collect())
}

/// Labels from a file in any form the tools read or write: a data file's label column (`.csv`/`.tsv`, and
/// `.jsonl` records with `text_column`), the `"label"` field of JSON lines (`finetune predict`'s
/// predictions.jsonl), or one label per line (any other extension).
pub fn read_label_file(path: &Path, text_column: &str, label_column: &str) -> Result<Vec<String>> {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
    match ext.as_str() {
        "csv" | "tsv" => data_labels(path, text_column, label_column),
        "jsonl" | "json" => {
            let records = read_jsonl(path)?;
            // Labelled data has the text column; predictions.jsonl has only the prediction.
            if records.first().is_some_and(|(_, r)| r.get(text_column).is_some()) {
                return data_labels(path, text_column, label_column);
            }
            let mut out = Vec::with_capacity(records.len());
            for (line, r) in &records {
                out.push(match r.get(label_column) {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(serde_json::Value::Number(n)) => n.to_string(),
                    Some(serde_json::Value::Bool(b)) => u8::from(*b).to_string(),
                    _ => bail!("{}:{line}: field {label_column:?} is missing or not a string/number", path.display()),
                });
            }
            Ok(out)
        }
        _ => read_labels(path),
    }
}

fn data_labels(path: &Path, text_column: &str, label_column: &str) -> Result<Vec<String>> {
    let opts = finetune_data::ReadOptions {
        text_column_name: text_column.to_string(),
        label_column_name: Some(label_column.to_string()),
        ..finetune_data::ReadOptions::default()
    };
    let data = finetune_data::read::read_examples(path, &opts)?;
    let mut out = Vec::with_capacity(data.examples.len());
    for e in &data.examples {
        match &e.label {
            Some(finetune_data::Label::Single(l)) => out.push(l.clone()),
            Some(finetune_data::Label::Multi(_)) => {
                bail!("{}:{}: a multi-label record; these metrics take one label per item", path.display(), e.line)
            }
            None => bail!("{}:{}: field {label_column:?} is missing", path.display(), e.line),
        }
    }
    if out.is_empty() {
        bail!("{}: no labels (the file is empty)", path.display());
    }
    Ok(out)
}

/// Fails unless two parallel files have the same number of items.
pub fn same_length(a: (&Path, usize), b: (&Path, usize), what: &str) -> Result<()> {
    if a.1 != b.1 {
        bail!("{}: {} {what} but {} has {}; the files must be parallel", a.0.display(), a.1, b.0.display(), b.1);
    }
    Ok(())
}

/// Labels as JSON: integers when every label of both files is an integer (so 2 sorts before 10, as numpy
/// would with integer arrays), strings otherwise.
pub fn labels_json(sets: &[&[String]]) -> Vec<Vec<serde_json::Value>> {
    let all_int = sets.iter().all(|s| s.iter().all(|l| l.parse::<i64>().is_ok()));
    sets.iter()
        .map(|s| {
            s.iter()
                .map(|l| match l.parse::<i64>() {
                    Ok(i) if all_int => serde_json::Value::from(i),
                    _ => serde_json::Value::from(l.as_str()),
                })
                .collect()
        })
        .collect()
}

/// A CoNLL file: sentences of (token, tag) taken from the first and last whitespace-separated columns;
/// blank lines end sentences; `-DOCSTART-` lines are skipped.
pub fn read_conll(path: &Path) -> Result<Vec<Vec<(String, String)>>> {
    let mut sentences = Vec::new();
    let mut current = Vec::new();
    for (i, line) in read_lines(path)?.iter().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            if !current.is_empty() {
                sentences.push(std::mem::take(&mut current));
            }
            continue;
        }
        if line.starts_with("-DOCSTART-") {
            continue;
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 2 {
            bail!("{}:{}: expected at least 2 columns (token ... tag), found {}", path.display(), i + 1, cols.len());
        }
        current.push((cols[0].to_owned(), cols[cols.len() - 1].to_owned()));
    }
    if !current.is_empty() {
        sentences.push(current);
    }
    if sentences.is_empty() {
        bail!("{}: no sentences", path.display());
    }
    Ok(sentences)
}

/// A JSON Lines file, one object per non-blank line.
pub fn read_jsonl(path: &Path) -> Result<Vec<(usize, serde_json::Value)>> {
    let mut out = Vec::new();
    for (i, line) in read_lines(path)?.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("{}:{}: invalid JSON: {e}", path.display(), i + 1))?;
        out.push((i + 1, v));
    }
    if out.is_empty() {
        bail!("{}: no records", path.display());
    }
    Ok(out)
}
