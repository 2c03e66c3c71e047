//! Heuristic quality filters in the style of those used to clean pretraining corpora (Gopher: Rae et al. 2021,
//! "Scaling Language Models", appendix A; as implemented in datatrove's `GopherQualityFilter` and
//! `GopherRepetitionFilter`). Each filter has a name and a threshold and is off unless given one; a text is
//! removed by the first filter it fails, and the counts are reported per filter.
//!
//! Definitions (words are whitespace-separated runs; "characters" are Unicode scalar values):
//! - `min_words` / `max_words`: number of words;
//! - `min_mean_word_length` / `max_mean_word_length`: mean characters per word;
//! - `max_symbol_word_ratio`: occurrences of `#`, `...` and `…` per word;
//! - `min_alpha_word_fraction`: fraction of words with at least one letter;
//! - `max_non_letter_fraction`: fraction of non-whitespace characters that are not letters;
//! - `max_line_length`: characters in the longest line;
//! - `max_duplicate_line_fraction`: lines (non-empty, trimmed) equal to an earlier line, over all lines;
//! - `max_duplicate_line_char_fraction`: characters in those duplicate lines over all characters;
//! - `max_top_ngram_fraction` (n=2,3,4): characters covered by the most frequent word n-gram (its length with
//!   single spaces times its count) over the text's characters, as Gopher's `top_n_gram`;
//! - `max_duplicate_ngram_fraction` (n=5..10): characters in word n-grams that repeat an earlier one (scanning
//!   left to right, skipping past each repeat), over the text's characters, as Gopher's `duplicated_n_grams`;
//! - `language` (as datatrove's `LanguageFilter`): the detected language must be the one given, with a confidence of
//!   at least the threshold. Detection is the `whatlang` crate's (trigram profiles of 69 languages, ISO 639-3
//!   codes such as `eng`); its confidence is in [0, 1]. A text with no detectable language measures 0.

use std::collections::{HashMap, HashSet};

use crate::error::{DataError, Result};

/// One named filter with its threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Filter {
    MinWords(usize),
    MaxWords(usize),
    MinMeanWordLength(f64),
    MaxMeanWordLength(f64),
    MaxSymbolWordRatio(f64),
    MinAlphaWordFraction(f64),
    MaxNonLetterFraction(f64),
    MaxLineLength(usize),
    MaxDuplicateLineFraction(f64),
    MaxDuplicateLineCharFraction(f64),
    /// (n, fraction)
    MaxTopNgramFraction(usize, f64),
    /// (n, fraction)
    MaxDuplicateNgramFraction(usize, f64),
    /// (language, minimum confidence)
    Language(whatlang::Lang, f64),
}

impl Filter {
    /// The filter's name, as in the report and the CLI flag (with `-` for `_`).
    pub fn name(&self) -> String {
        match self {
            Filter::MinWords(_) => "min_words".into(),
            Filter::MaxWords(_) => "max_words".into(),
            Filter::MinMeanWordLength(_) => "min_mean_word_length".into(),
            Filter::MaxMeanWordLength(_) => "max_mean_word_length".into(),
            Filter::MaxSymbolWordRatio(_) => "max_symbol_word_ratio".into(),
            Filter::MinAlphaWordFraction(_) => "min_alpha_word_fraction".into(),
            Filter::MaxNonLetterFraction(_) => "max_non_letter_fraction".into(),
            Filter::MaxLineLength(_) => "max_line_length".into(),
            Filter::MaxDuplicateLineFraction(_) => "max_duplicate_line_fraction".into(),
            Filter::MaxDuplicateLineCharFraction(_) => "max_duplicate_line_char_fraction".into(),
            Filter::MaxTopNgramFraction(n, _) => format!("max_top_{n}gram_fraction"),
            Filter::MaxDuplicateNgramFraction(n, _) => format!("max_duplicate_{n}gram_fraction"),
            Filter::Language(lang, _) => format!("language_{}", lang.code()),
        }
    }

    /// Checks the threshold: fractions in [0, 1], ratios and lengths non-negative, n-gram sizes as Gopher's.
    pub fn check(&self) -> Result<()> {
        let frac = |f: f64| (0.0..=1.0).contains(&f);
        let ok = match *self {
            Filter::MinAlphaWordFraction(f)
            | Filter::MaxNonLetterFraction(f)
            | Filter::MaxDuplicateLineFraction(f)
            | Filter::MaxDuplicateLineCharFraction(f)
            | Filter::Language(_, f) => frac(f),
            Filter::MaxTopNgramFraction(n, f) => frac(f) && (2..=4).contains(&n),
            Filter::MaxDuplicateNgramFraction(n, f) => frac(f) && (5..=10).contains(&n),
            Filter::MinMeanWordLength(f) | Filter::MaxMeanWordLength(f) | Filter::MaxSymbolWordRatio(f) => {
                f >= 0.0 && f.is_finite()
            }
            Filter::MinWords(_) | Filter::MaxWords(_) | Filter::MaxLineLength(_) => true,
        };
        if ok {
            Ok(())
        } else {
            Err(DataError::Invalid(format!(
                "{}: threshold out of range (fractions in [0, 1]; top n-grams for n = 2..4, duplicate n-grams for \
                 n = 5..10)",
                self.name()
            )))
        }
    }

    /// Whether `t` passes, with the measured value.
    pub fn apply(&self, t: &TextStats) -> (bool, f64) {
        match *self {
            Filter::MinWords(m) => (t.words >= m, t.words as f64),
            Filter::MaxWords(m) => (t.words <= m, t.words as f64),
            Filter::MinMeanWordLength(m) => (t.mean_word_length >= m, t.mean_word_length),
            Filter::MaxMeanWordLength(m) => (t.mean_word_length <= m, t.mean_word_length),
            Filter::MaxSymbolWordRatio(m) => (t.symbol_word_ratio <= m, t.symbol_word_ratio),
            Filter::MinAlphaWordFraction(m) => (t.alpha_word_fraction >= m, t.alpha_word_fraction),
            Filter::MaxNonLetterFraction(m) => (t.non_letter_fraction <= m, t.non_letter_fraction),
            Filter::MaxLineLength(m) => (t.max_line_length <= m, t.max_line_length as f64),
            Filter::MaxDuplicateLineFraction(m) => (t.duplicate_line_fraction <= m, t.duplicate_line_fraction),
            Filter::MaxDuplicateLineCharFraction(m) => {
                (t.duplicate_line_char_fraction <= m, t.duplicate_line_char_fraction)
            }
            Filter::MaxTopNgramFraction(n, m) => {
                let v = top_ngram_fraction(&t.word_list, n, t.chars);
                (v <= m, v)
            }
            Filter::MaxDuplicateNgramFraction(n, m) => {
                let v = duplicate_ngram_fraction(&t.word_list, n, t.chars);
                (v <= m, v)
            }
            Filter::Language(lang, m) => match t.language {
                Some((l, c)) if l == lang => (c >= m, c),
                _ => (false, 0.0),
            },
        }
    }
}

/// The language of an ISO 639-3 code (`eng`, `deu`, ...), as the `language` filter takes it.
pub fn language(code: &str) -> Result<whatlang::Lang> {
    whatlang::Lang::from_code(code.trim()).ok_or_else(|| {
        let codes: Vec<&str> = whatlang::Lang::all().iter().map(|l| l.code()).collect();
        DataError::Invalid(format!("{code}: not a language code the detector knows ({})", codes.join(", ")))
    })
}

/// What the filters measure on one text.
#[derive(Debug, Clone, PartialEq)]
pub struct TextStats {
    pub word_list: Vec<String>,
    pub words: usize,
    pub chars: usize,
    pub mean_word_length: f64,
    pub symbol_word_ratio: f64,
    pub alpha_word_fraction: f64,
    pub non_letter_fraction: f64,
    pub max_line_length: usize,
    pub duplicate_line_fraction: f64,
    pub duplicate_line_char_fraction: f64,
    /// The detected language and its confidence; only measured by [`TextStats::with_language`].
    pub language: Option<(whatlang::Lang, f64)>,
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl TextStats {
    /// As [`of`](Self::of), with the language detected for the `language` filter.
    pub fn with_language(text: &str) -> Self {
        let language = whatlang::detect(text).map(|i| (i.lang(), i.confidence()));
        TextStats { language, ..Self::of(text) }
    }

    pub fn of(text: &str) -> Self {
        let word_list: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
        let words = word_list.len();
        let chars = text.chars().count();
        let word_chars: usize = word_list.iter().map(|w| w.chars().count()).sum();
        let symbols = text.matches('#').count() + text.matches("...").count() + text.matches('…').count();
        let alpha_words = word_list.iter().filter(|w| w.chars().any(char::is_alphabetic)).count();
        let non_space = text.chars().filter(|c| !c.is_whitespace()).count();
        let non_letter = text.chars().filter(|c| !c.is_whitespace() && !c.is_alphabetic()).count();
        let lines: Vec<&str> = text.lines().collect();
        let max_line_length = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0);
        let mut seen = HashSet::new();
        let (mut dup_lines, mut dup_chars, mut n_lines) = (0, 0, 0);
        for l in &lines {
            let l = l.trim();
            if l.is_empty() {
                continue;
            }
            n_lines += 1;
            if !seen.insert(l) {
                dup_lines += 1;
                dup_chars += l.chars().count();
            }
        }
        TextStats {
            words,
            chars,
            mean_word_length: ratio(word_chars, words),
            symbol_word_ratio: ratio(symbols, words),
            alpha_word_fraction: if words == 0 { 1.0 } else { ratio(alpha_words, words) },
            non_letter_fraction: ratio(non_letter, non_space),
            max_line_length,
            duplicate_line_fraction: ratio(dup_lines, n_lines),
            duplicate_line_char_fraction: ratio(dup_chars, chars),
            language: None,
            word_list,
        }
    }
}

/// Gopher's `top_n_gram`: characters of the most frequent n-gram (joined by single spaces) times its count, over
/// `chars`. Ties go to the n-gram seen first.
pub fn top_ngram_fraction(words: &[String], n: usize, chars: usize) -> f64 {
    if words.len() < n || n == 0 {
        return 0.0;
    }
    let mut counts: HashMap<Vec<&str>, (usize, usize)> = HashMap::new();
    for (i, w) in words.windows(n).enumerate() {
        let key: Vec<&str> = w.iter().map(String::as_str).collect();
        counts.entry(key).or_insert((0, i)).0 += 1;
    }
    let best = counts
        .iter()
        .max_by(|a, b| a.1 .0.cmp(&b.1 .0).then(b.1 .1.cmp(&a.1 .1)))
        .map(|(k, &(c, _))| (k.iter().map(|w| w.chars().count()).sum::<usize>() + n - 1) * c)
        .unwrap_or(0);
    ratio(best, chars)
}

/// Gopher's `duplicated_n_grams`: scanning left to right, an n-gram equal to an earlier one adds its characters
/// (words concatenated) and the scan jumps past it; over `chars`.
pub fn duplicate_ngram_fraction(words: &[String], n: usize, chars: usize) -> f64 {
    if words.len() < n || n == 0 {
        return 0.0;
    }
    let mut seen: HashSet<&[String]> = HashSet::new();
    let mut repeated = 0;
    let mut i = 0;
    while i + n <= words.len() {
        let g = &words[i..i + n];
        if seen.contains(g) {
            repeated += g.iter().map(|w| w.chars().count()).sum::<usize>();
            i += n;
        } else {
            seen.insert(g);
            i += 1;
        }
    }
    ratio(repeated, chars)
}

/// How many texts each filter removed (the first filter a text fails removes it).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FilterReport {
    pub total: usize,
    pub kept: usize,
    /// (filter name, texts removed), in the order the filters were given.
    pub removed: Vec<(String, usize)>,
}

/// What happened to one text: None when kept, else the index of the filter that removed it and the value it
/// measured.
pub type Verdict = Option<(usize, f64)>;

/// Applies `filters` to `texts`: the verdict for each text (None: kept; Some(k): removed by filter k, with the
/// measured value) and the per-filter counts.
pub fn apply_filters(texts: &[&str], filters: &[Filter]) -> Result<(Vec<Verdict>, FilterReport)> {
    for f in filters {
        f.check()?;
    }
    let mut report =
        FilterReport { total: texts.len(), kept: 0, removed: filters.iter().map(|f| (f.name(), 0)).collect() };
    let detect = filters.iter().any(|f| matches!(f, Filter::Language(..)));
    let verdicts: Vec<Verdict> = texts
        .iter()
        .map(|t| {
            let s = if detect { TextStats::with_language(t) } else { TextStats::of(t) };
            filters.iter().enumerate().find_map(|(k, f)| {
                let (pass, v) = f.apply(&s);
                (!pass).then_some((k, v))
            })
        })
        .collect();
    for v in &verdicts {
        match v {
            None => report.kept += 1,
            Some((k, _)) => report.removed[*k].1 += 1,
        }
    }
    Ok((verdicts, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn text_stats_by_hand() {
        let s = TextStats::of("Hello world #1 ...\nHello world #1 ...\n\n42");
        assert_eq!(s.words, 9);
        assert_eq!(s.chars, 41);
        // "#1" twice and "..." twice: 2 '#' + 2 "..." = 4 symbols over 9 words.
        assert!((s.symbol_word_ratio - 4.0 / 9.0).abs() < 1e-12);
        // Words with a letter: Hello, world (twice) = 4 of 9.
        assert!((s.alpha_word_fraction - 4.0 / 9.0).abs() < 1e-12);
        // Non-space chars: 2 * (5 + 5 + 2 + 3) + 2 = 32; letters 20; non-letters 12.
        assert!((s.non_letter_fraction - 12.0 / 32.0).abs() < 1e-12);
        assert_eq!(s.max_line_length, 18);
        // Non-empty lines: 3, one repeats an earlier one (18 chars of 41).
        assert!((s.duplicate_line_fraction - 1.0 / 3.0).abs() < 1e-12);
        assert!((s.duplicate_line_char_fraction - 18.0 / 41.0).abs() < 1e-12);
    }

    #[test]
    fn gopher_ngram_repetition_by_hand() {
        let words = w("a b a b a b c");
        // Bigrams: "a b" x3, "b a" x2, "b c" x1 -> top "a b": 3 chars * 3 = 9 over 13 chars.
        assert!((top_ngram_fraction(&words, 2, 13) - 9.0 / 13.0).abs() < 1e-12);
        // 5-grams: [a b a b a], [b a b a b], [a b a b c]: none repeats.
        assert_eq!(duplicate_ngram_fraction(&words, 5, 13), 0.0);
        let words = w("x y z w v x y z w v x y z w v");
        // The 5-gram at 5 repeats the one at 0 (5 chars), the scan jumps to 10, which repeats again (5 chars).
        assert!((duplicate_ngram_fraction(&words, 5, 29) - 10.0 / 29.0).abs() < 1e-12);
    }

    #[test]
    fn first_failing_filter_counts() {
        let texts = ["one two", "a fine sentence with enough words in it", "### ### ### ### ###"];
        let filters = [Filter::MinWords(3), Filter::MaxSymbolWordRatio(0.5)];
        let (v, r) = apply_filters(&texts, &filters).expect("filters");
        assert_eq!(v[0], Some((0, 2.0)));
        assert_eq!(v[1], None);
        assert_eq!(v[2].map(|x| x.0), Some(1));
        assert_eq!(r.removed, vec![("min_words".to_string(), 1), ("max_symbol_word_ratio".to_string(), 1)]);
        assert_eq!((r.total, r.kept), (3, 1));
        assert!(apply_filters(&texts, &[Filter::MaxTopNgramFraction(7, 0.2)]).is_err());
    }

    #[test]
    fn language_filter_keeps_the_language_asked_for() {
        let texts = [
            "This film was a delight from start to finish, and the acting was superb throughout.",
            "Dieser Film war von Anfang bis Ende ein Vergnügen, und die Schauspieler waren großartig.",
            "Ce film était un plaisir du début à la fin, et les acteurs étaient excellents.",
            "12345 678 ### !!!",
        ];
        let eng = whatlang::Lang::from_code("eng").expect("eng");
        let (v, r) = apply_filters(&texts, &[Filter::Language(eng, 0.0)]).expect("filters");
        assert_eq!(v[0], None);
        assert!(v[1..].iter().all(|x| x.is_some_and(|(k, value)| k == 0 && value == 0.0)), "{v:?}");
        assert_eq!(r.removed, vec![("language_eng".to_string(), 3)]);
        let s = TextStats::with_language(texts[1]);
        assert_eq!(s.language.map(|l| l.0.code()), Some("deu"));
        // A confidence threshold above what the text reaches removes it too, with its confidence as the value.
        let c = TextStats::with_language(texts[0]).language.expect("detected").1;
        assert!(c > 0.0 && c <= 1.0);
        let (v, _) = apply_filters(&texts[..1], &[Filter::Language(eng, 1.0)]).expect("filters");
        assert_eq!(v[0].is_some(), c < 1.0);
        assert!(apply_filters(&texts, &[Filter::Language(eng, 1.5)]).is_err());
    }
}
