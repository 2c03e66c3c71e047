//! EDA, "Easy Data Augmentation" (Wei & Zou, 2019): new training texts made from each text by synonym
//! replacement, random insertion, random swap and random deletion, with the reference implementation's
//! parameters (`alpha_sr`, `alpha_ri`, `alpha_rs`, `alpha_rd` as `p_rd`, `num_aug`), its text cleaning
//! (lowercase letters and single spaces) and its stop words; synonyms from WordNet ([`WordNet::synonyms`]).
//!
//! Seeded: the copies of example `i` depend only on the seed and `i`. Where the reference picks from a Python
//! set (an order that changes between runs), this picks from the sorted synonyms with the seeded generator.

use crate::error::{DataError, Result};
use crate::example::Example;
use crate::split::Rng;
use crate::wordnet::WordNet;

/// The stop words EDA never replaces by a synonym (the reference implementation's list).
const STOP_WORDS: &[&str] = &[
    "i",
    "me",
    "my",
    "myself",
    "we",
    "our",
    "ours",
    "ourselves",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
    "he",
    "him",
    "his",
    "himself",
    "she",
    "her",
    "hers",
    "herself",
    "it",
    "its",
    "itself",
    "they",
    "them",
    "their",
    "theirs",
    "themselves",
    "what",
    "which",
    "who",
    "whom",
    "this",
    "that",
    "these",
    "those",
    "am",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "have",
    "has",
    "had",
    "having",
    "do",
    "does",
    "did",
    "doing",
    "a",
    "an",
    "the",
    "and",
    "but",
    "if",
    "or",
    "because",
    "as",
    "until",
    "while",
    "of",
    "at",
    "by",
    "for",
    "with",
    "about",
    "against",
    "between",
    "into",
    "through",
    "during",
    "before",
    "after",
    "above",
    "below",
    "to",
    "from",
    "up",
    "down",
    "in",
    "out",
    "on",
    "off",
    "over",
    "under",
    "again",
    "further",
    "then",
    "once",
    "here",
    "there",
    "when",
    "where",
    "why",
    "how",
    "all",
    "any",
    "both",
    "each",
    "few",
    "more",
    "most",
    "other",
    "some",
    "such",
    "no",
    "nor",
    "not",
    "only",
    "own",
    "same",
    "so",
    "than",
    "too",
    "very",
    "s",
    "t",
    "can",
    "will",
    "just",
    "don",
    "should",
    "now",
    "",
];

/// EDA's parameters, with the reference implementation's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct EdaOptions {
    /// Fraction of words replaced by a synonym (at least one when > 0).
    pub alpha_sr: f64,
    /// Fraction of words inserted as a synonym of a random word.
    pub alpha_ri: f64,
    /// Fraction of words swapped.
    pub alpha_rs: f64,
    /// Probability that each word is deleted.
    pub alpha_rd: f64,
    /// New texts per original text.
    pub num_aug: usize,
}

impl Default for EdaOptions {
    fn default() -> Self {
        EdaOptions { alpha_sr: 0.1, alpha_ri: 0.1, alpha_rs: 0.1, alpha_rd: 0.1, num_aug: 9 }
    }
}

impl EdaOptions {
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("alpha_sr", self.alpha_sr),
            ("alpha_ri", self.alpha_ri),
            ("alpha_rs", self.alpha_rs),
            ("alpha_rd", self.alpha_rd),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(DataError::Invalid(format!("{name} = {v}: must be in [0, 1]")));
            }
        }
        if self.num_aug == 0 {
            return Err(DataError::Invalid("num_aug = 0: must be at least 1".into()));
        }
        if [self.alpha_sr, self.alpha_ri, self.alpha_rs, self.alpha_rd].iter().all(|&a| a == 0.0) {
            return Err(DataError::Invalid(
                "alpha_sr, alpha_ri, alpha_rs and alpha_rd are all 0: nothing to do".into(),
            ));
        }
        Ok(())
    }
}

/// EDA's `get_only_chars`: apostrophes dropped, lowercase, every character but a-z a space, runs of spaces one.
pub fn only_chars(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().filter(|&c| c != '\'') {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() { c } else { ' ' };
        if !(c == ' ' && (out.is_empty() || out.ends_with(' '))) {
            out.push(c);
        }
    }
    out
}

fn join(words: &[String]) -> Vec<String> {
    // A multi-word synonym becomes several words, as the reference's join-then-split does.
    words.join(" ").split(' ').filter(|w| !w.is_empty()).map(str::to_string).collect()
}

fn synonym_replacement(wn: &WordNet, words: &[String], n: usize, rng: &mut Rng) -> Result<Vec<String>> {
    let mut out = words.to_vec();
    let mut candidates: Vec<&String> = Vec::new();
    for w in words {
        if !STOP_WORDS.contains(&w.as_str()) && !candidates.contains(&w) {
            candidates.push(w);
        }
    }
    rng.shuffle(&mut candidates);
    let mut replaced = 0;
    for w in candidates {
        let syns = wn.synonyms(w)?;
        if !syns.is_empty() {
            let s = &syns[rng.below(syns.len())];
            for x in out.iter_mut().filter(|x| *x == w) {
                x.clone_from(s);
            }
            replaced += 1;
        }
        if replaced >= n {
            break;
        }
    }
    Ok(join(&out))
}

fn random_insertion(wn: &WordNet, words: &[String], n: usize, rng: &mut Rng) -> Result<Vec<String>> {
    let mut out = words.to_vec();
    for _ in 0..n {
        // Ten tries at a word that has a synonym, as the reference; an insertion that finds none is skipped.
        for _ in 0..10 {
            let syns = wn.synonyms(&out[rng.below(out.len())])?;
            if !syns.is_empty() {
                let s = syns[rng.below(syns.len())].clone();
                let at = rng.below(out.len());
                out.insert(at, s);
                break;
            }
        }
    }
    Ok(join(&out))
}

fn random_swap(words: &[String], n: usize, rng: &mut Rng) -> Vec<String> {
    let mut out = words.to_vec();
    for _ in 0..n {
        let a = rng.below(out.len());
        // Three tries at a second, different position, as the reference; a swap that finds none is skipped.
        for _ in 0..3 {
            let b = rng.below(out.len());
            if b != a {
                out.swap(a, b);
                break;
            }
        }
    }
    out
}

fn random_deletion(words: &[String], p: f64, rng: &mut Rng) -> Vec<String> {
    if words.len() == 1 {
        return words.to_vec();
    }
    let kept: Vec<String> = words.iter().filter(|_| rng.uniform() > p).cloned().collect();
    if kept.is_empty() {
        return vec![words[rng.below(words.len())].clone()];
    }
    kept
}

/// EDA's `eda(sentence, ...)` without the original at the end: up to `num_aug` new texts (fewer for a text with
/// no letters, none for an empty one), each cleaned as [`only_chars`].
pub fn eda(wn: &WordNet, text: &str, o: &EdaOptions, rng: &mut Rng) -> Result<Vec<String>> {
    let clean = only_chars(text);
    let words: Vec<String> = clean.split(' ').filter(|w| !w.is_empty()).map(str::to_string).collect();
    if words.is_empty() {
        return Ok(Vec::new());
    }
    let n = words.len() as f64;
    let per_technique = o.num_aug / 4 + 1;
    let count = |alpha: f64| ((alpha * n) as usize).max(1);
    let mut out: Vec<Vec<String>> = Vec::new();
    if o.alpha_sr > 0.0 {
        for _ in 0..per_technique {
            out.push(synonym_replacement(wn, &words, count(o.alpha_sr), rng)?);
        }
    }
    if o.alpha_ri > 0.0 {
        for _ in 0..per_technique {
            out.push(random_insertion(wn, &words, count(o.alpha_ri), rng)?);
        }
    }
    if o.alpha_rs > 0.0 {
        for _ in 0..per_technique {
            out.push(random_swap(&words, count(o.alpha_rs), rng));
        }
    }
    if o.alpha_rd > 0.0 {
        for _ in 0..per_technique {
            out.push(random_deletion(&words, o.alpha_rd, rng));
        }
    }
    let mut texts: Vec<String> = out.iter().map(|w| only_chars(&w.join(" "))).collect();
    rng.shuffle(&mut texts);
    texts.truncate(o.num_aug);
    Ok(texts)
}

/// What [`augment_examples`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AugmentReport {
    pub originals: usize,
    pub added: usize,
    /// Texts with no letter a-z, which EDA cannot change.
    pub unchanged: usize,
}

/// Each example followed by its EDA copies (same label, same source line). Sentence pairs are refused: EDA
/// changes one text at a time and would break what a pair's label says about both.
pub fn augment_examples(
    wn: &WordNet,
    examples: &[Example],
    o: &EdaOptions,
    seed: u64,
) -> Result<(Vec<Example>, AugmentReport)> {
    o.validate()?;
    let mut out = Vec::with_capacity(examples.len() * (o.num_aug + 1));
    let mut report = AugmentReport { originals: examples.len(), ..Default::default() };
    for (i, e) in examples.iter().enumerate() {
        if e.text_pair.is_some() {
            return Err(DataError::Invalid(format!(
                "line {}: EDA augments single texts, not sentence pairs (text_pair_column_name is set)",
                e.line
            )));
        }
        let mut rng = Rng::new(seed ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
        let texts = eda(wn, &e.text, o, &mut rng)?;
        if texts.is_empty() {
            report.unchanged += 1;
        }
        report.added += texts.len();
        out.push(e.clone());
        out.extend(texts.into_iter().map(|text| Example { text, ..e.clone() }));
    }
    Ok((out, report))
}
