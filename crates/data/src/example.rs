//! Examples as read from the user's files, before tokenization.

use serde::{Deserialize, Serialize};

/// The label of one example: a single class, or a set of classes for multi-label classification.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Label {
    Single(String),
    Multi(Vec<String>),
}

impl Label {
    /// The class names of this label (one for `Single`).
    pub fn names(&self) -> &[String] {
        match self {
            Label::Single(s) => std::slice::from_ref(s),
            Label::Multi(v) => v,
        }
    }

    /// A key for stratification: the class, or for multi-label the sorted set joined (label powerset).
    pub fn strata_key(&self) -> String {
        match self {
            Label::Single(s) => s.clone(),
            Label::Multi(v) => {
                let mut v: Vec<&str> = v.iter().map(String::as_str).collect();
                v.sort_unstable();
                v.dedup();
                v.join("\u{1f}")
            }
        }
    }
}

/// One sequence-classification example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub text: String,
    /// Second segment for sentence-pair tasks (`text_pair_column_name`).
    pub text_pair: Option<String>,
    pub label: Option<Label>,
    /// 1-based line where the record starts in its file, for error messages.
    pub line: u64,
}

/// One token-classification (NER) sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenExample {
    pub tokens: Vec<String>,
    pub tags: Vec<String>,
    /// 1-based line of the sentence's first token.
    pub line: u64,
}
