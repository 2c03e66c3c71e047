//! Label maps: class name ↔ id, inferred in a stable order or given by the user.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};

use crate::error::{DataError, Result};
use crate::example::{Example, Label, TokenExample};

/// A fixed list of class names; the id of a class is its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelMap {
    names: Vec<String>,
    ids: HashMap<String, usize>,
}

/// The order of inferred label maps, as the HF example scripts get it (`label_list.sort()` over the column's
/// unique values): when every label reads as an integer (the column loads as integers) they sort numerically,
/// else when every label reads as a finite number they sort numerically as floats, else by Unicode code point
/// (Python's `str` order, which is also UTF-8 byte order). Numeric ties (`"1"` and `"01"`) fall back to the
/// string order so the result is total and stable.
pub fn label_order(names: &mut [String]) {
    if names.iter().all(|n| n.parse::<i128>().is_ok()) {
        names.sort_by(|a, b| {
            let (x, y) = (a.parse::<i128>().unwrap_or(0), b.parse::<i128>().unwrap_or(0));
            x.cmp(&y).then_with(|| a.cmp(b))
        });
    } else if names.iter().all(|n| n.parse::<f64>().is_ok_and(f64::is_finite)) {
        names.sort_by(|a, b| {
            let (x, y) = (a.parse::<f64>().unwrap_or(0.0), b.parse::<f64>().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal).then_with(|| a.cmp(b))
        });
    } else {
        names.sort();
    }
}

impl LabelMap {
    /// A label map in the given order. Duplicates and empty names are errors.
    pub fn new(names: Vec<String>) -> Result<Self> {
        let mut ids = HashMap::with_capacity(names.len());
        for (i, n) in names.iter().enumerate() {
            if n.trim().is_empty() {
                return Err(DataError::Invalid("label map: empty label name".into()));
            }
            if ids.insert(n.clone(), i).is_some() {
                return Err(DataError::Invalid(format!("label map: label {n:?} given twice")));
            }
        }
        if names.is_empty() {
            return Err(DataError::Invalid("label map: no labels".into()));
        }
        Ok(LabelMap { names, ids })
    }

    /// Infers the map from label names (see `label_order`).
    pub fn infer<'a>(labels: impl IntoIterator<Item = &'a str>) -> Result<Self> {
        let set: BTreeSet<&str> = labels.into_iter().collect();
        let mut names: Vec<String> = set.into_iter().map(str::to_string).collect();
        label_order(&mut names);
        LabelMap::new(names)
    }

    /// Infers the map from the labels of classification examples (multi-label lists included).
    pub fn from_examples(examples: &[Example]) -> Result<Self> {
        LabelMap::infer(examples.iter().filter_map(|e| e.label.as_ref()).flat_map(|l| l.names()).map(String::as_str))
    }

    /// Infers the map from the tags of token-classification sentences.
    pub fn from_tags(sentences: &[TokenExample]) -> Result<Self> {
        LabelMap::infer(sentences.iter().flat_map(|s| s.tags.iter().map(String::as_str)))
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Class names in id order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn id(&self, name: &str) -> Option<usize> {
        self.ids.get(name).copied()
    }

    pub fn name(&self, id: usize) -> Option<&str> {
        self.names.get(id).map(String::as_str)
    }

    /// The id of `name`, or an error naming the file, line and label.
    pub fn encode(&self, name: &str, path: &str, line: u64) -> Result<usize> {
        self.id(name).ok_or_else(|| DataError::UnknownLabel { path: path.to_string(), line, label: name.to_string() })
    }

    /// Ids of a (possibly multi-) label, in the label's order.
    pub fn encode_label(&self, label: &Label, path: &str, line: u64) -> Result<Vec<usize>> {
        label.names().iter().map(|n| self.encode(n, path, line)).collect()
    }

    /// Multi-hot target vector of a multi-label example (`BCEWithLogits` targets).
    pub fn multi_hot(&self, label: &Label, path: &str, line: u64) -> Result<Vec<f32>> {
        let mut v = vec![0.0; self.len()];
        for id in self.encode_label(label, path, line)? {
            v[id] = 1.0;
        }
        Ok(v)
    }

    /// Class ids of single-label examples; unknown labels, missing labels and lists are errors.
    pub fn encode_examples(&self, examples: &[Example], path: &str) -> Result<Vec<usize>> {
        examples
            .iter()
            .map(|e| match &e.label {
                Some(Label::Single(s)) => self.encode(s, path, e.line),
                Some(Label::Multi(_)) => {
                    Err(DataError::record(path, e.line, "a list of labels where a single label was expected"))
                }
                None => Err(DataError::record(path, e.line, "example has no label")),
            })
            .collect()
    }

    /// Checks that every label of an evaluation set is known, failing on the first unknown one.
    pub fn check_examples(&self, examples: &[Example], path: &str) -> Result<()> {
        for e in examples {
            if let Some(l) = &e.label {
                self.encode_label(l, path, e.line)?;
            }
        }
        Ok(())
    }

    /// Checks that every tag of evaluation sentences is known. A sentence's tokens sit on consecutive lines, so
    /// the error names the tag's own line.
    pub fn check_tags(&self, sentences: &[TokenExample], path: &str) -> Result<()> {
        for s in sentences {
            for (i, t) in s.tags.iter().enumerate() {
                self.encode(t, path, s.line + i as u64)?;
            }
        }
        Ok(())
    }

    /// `{"id2label": {...}, "label2id": {...}}` as in a HF `config.json`.
    pub fn to_config_json(&self) -> serde_json::Value {
        let id2label: serde_json::Map<String, serde_json::Value> =
            self.names.iter().enumerate().map(|(i, n)| (i.to_string(), n.clone().into())).collect();
        let label2id: serde_json::Map<String, serde_json::Value> =
            self.names.iter().enumerate().map(|(i, n)| (n.clone(), i.into())).collect();
        serde_json::json!({ "id2label": id2label, "label2id": label2id })
    }
}
