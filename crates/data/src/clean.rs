//! Text cleaning, exact de-duplication and train/test overlap detection. Every step is an option; with all
//! options off `clean` returns the text unchanged.

use std::collections::HashSet;

use unicode_normalization::{is_nfc_quick, is_nfkc_quick, IsNormalized, UnicodeNormalization};

use crate::example::Example;

/// Unicode normalisation form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalization {
    /// Canonical composition: same look, same meaning (é as one code point).
    Nfc,
    /// Compatibility composition: also folds ligatures, full-width forms, superscripts (ﬁ → fi, ２ → 2).
    Nfkc,
}

/// Which cleaning steps to apply. They run in the order of the fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanOptions {
    /// Remove HTML tags (and the contents of `<script>`/`<style>`), then decode HTML entities.
    pub strip_html: bool,
    /// Unicode normalisation.
    pub normalization: Option<Normalization>,
    /// Remove control and invisible format characters (as BERT's tokenizer does); TAB/CR/LF become spaces.
    pub remove_control: bool,
    /// Collapse runs of whitespace to one space and trim both ends.
    pub collapse_whitespace: bool,
}

impl CleanOptions {
    /// Every step on, NFC normalisation.
    pub fn all() -> Self {
        CleanOptions {
            strip_html: true,
            normalization: Some(Normalization::Nfc),
            remove_control: true,
            collapse_whitespace: true,
        }
    }

    fn is_noop(&self) -> bool {
        *self == CleanOptions::default()
    }
}

/// Cleans one text.
pub fn clean(text: &str, opts: &CleanOptions) -> String {
    if opts.is_noop() {
        return text.to_string();
    }
    let mut s = if opts.strip_html { decode_entities(&strip_tags(text)) } else { text.to_string() };
    // The quick checks answer "already normalised" for almost all real text without allocating.
    match opts.normalization {
        Some(Normalization::Nfc) if is_nfc_quick(s.chars()) != IsNormalized::Yes => s = s.nfc().collect(),
        Some(Normalization::Nfkc) if is_nfkc_quick(s.chars()) != IsNormalized::Yes => s = s.nfkc().collect(),
        _ => {}
    }
    if opts.remove_control && s.chars().any(|c| is_control(c) || matches!(c, '\t' | '\n' | '\r')) {
        s = s
            .chars()
            .filter_map(|c| if matches!(c, '\t' | '\n' | '\r') { Some(' ') } else { (!is_control(c)).then_some(c) })
            .collect();
    }
    if opts.collapse_whitespace {
        s = collapse_whitespace(&s);
    }
    s
}

/// Cleans the text (and text pair) of every example in place.
pub fn clean_examples(examples: &mut [Example], opts: &CleanOptions) {
    if opts.is_noop() {
        return;
    }
    for ex in examples {
        ex.text = clean(&ex.text, opts);
        if let Some(p) = &ex.text_pair {
            ex.text_pair = Some(clean(p, opts));
        }
    }
}

/// Control (Cc) characters other than whitespace, and the invisible format (Cf) characters that turn up in
/// scraped text: soft hyphen, zero-width space/joiners, directional marks, word joiner, BOM. This mirrors
/// BERT's `_is_control` for the characters that matter without a full Unicode category table.
pub fn is_control(c: char) -> bool {
    (c.is_control() && !c.is_whitespace())
        || matches!(c,
            '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// Collapses whitespace runs to one ASCII space and trims.
pub fn collapse_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for w in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

/// Tags after which text reads as a new word or line: replaced by a space, the rest by nothing
/// (`<b>bo</b>ld` stays one word).
const BLOCK_TAGS: &[&str] = &[
    "br",
    "p",
    "div",
    "li",
    "ul",
    "ol",
    "tr",
    "td",
    "th",
    "table",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "blockquote",
    "pre",
    "section",
    "article",
    "header",
    "footer",
    "title",
    "body",
    "head",
    "html",
];

/// Removes HTML tags and comments. A `<` not followed by a letter, `/`, `!` or `?` is text (`a < b`), and so is
/// a `<` with no closing `>`.
pub fn strip_tags(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut last = 0;
    while i < bytes.len() {
        if bytes[i] != b'<' {
            i += 1;
            continue;
        }
        let next = bytes.get(i + 1).copied().unwrap_or(b' ');
        if !(next.is_ascii_alphabetic() || next == b'/' || next == b'!' || next == b'?') {
            i += 1;
            continue;
        }
        let end = if s[i..].starts_with("<!--") {
            s[i + 4..].find("-->").map(|e| i + 4 + e + 3)
        } else {
            s[i..].find('>').map(|e| i + e + 1)
        };
        let Some(end) = end else {
            i += 1;
            continue;
        };
        out.push_str(&s[last..i]);
        let name: String = s[i + 1..end]
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let mut resume = end;
        if (name == "script" || name == "style") && !s[i + 1..].starts_with('/') {
            // Skip the element's contents up to its closing tag (or to the end).
            let close = format!("</{name}");
            let lower = s[end..].to_ascii_lowercase();
            resume = match lower.find(&close) {
                Some(c) => s[end + c..].find('>').map_or(s.len(), |g| end + c + g + 1),
                None => s.len(),
            };
            out.push(' ');
        } else if BLOCK_TAGS.contains(&name.as_str()) {
            out.push(' ');
        }
        i = resume;
        last = resume;
    }
    out.push_str(&s[last..]);
    out
}

/// Named entities decoded by `decode_entities`. A small table instead of the full HTML5 list (2 231 names,
/// another dependency): these cover what real scraped review, tweet and e-mail text uses; any other name is
/// left as written rather than guessed. Numeric references (`&#233;`, `&#xE9;`) are always decoded.
const ENTITIES: &[(&str, char)] = &[
    ("amp", '&'),
    ("lt", '<'),
    ("gt", '>'),
    ("quot", '"'),
    ("apos", '\''),
    ("nbsp", '\u{00A0}'),
    ("ndash", '\u{2013}'),
    ("mdash", '\u{2014}'),
    ("hellip", '\u{2026}'),
    ("lsquo", '\u{2018}'),
    ("rsquo", '\u{2019}'),
    ("sbquo", '\u{201A}'),
    ("ldquo", '\u{201C}'),
    ("rdquo", '\u{201D}'),
    ("bdquo", '\u{201E}'),
    ("laquo", '\u{00AB}'),
    ("raquo", '\u{00BB}'),
    ("bull", '\u{2022}'),
    ("middot", '\u{00B7}'),
    ("copy", '\u{00A9}'),
    ("reg", '\u{00AE}'),
    ("trade", '\u{2122}'),
    ("euro", '\u{20AC}'),
    ("pound", '\u{00A3}'),
    ("cent", '\u{00A2}'),
    ("yen", '\u{00A5}'),
    ("sect", '\u{00A7}'),
    ("para", '\u{00B6}'),
    ("deg", '\u{00B0}'),
    ("plusmn", '\u{00B1}'),
    ("times", '\u{00D7}'),
    ("divide", '\u{00F7}'),
    ("iexcl", '\u{00A1}'),
    ("iquest", '\u{00BF}'),
    ("shy", '\u{00AD}'),
    ("eacute", '\u{00E9}'),
    ("egrave", '\u{00E8}'),
    ("aacute", '\u{00E1}'),
    ("agrave", '\u{00E0}'),
    ("ccedil", '\u{00E7}'),
    ("ntilde", '\u{00F1}'),
    ("ouml", '\u{00F6}'),
    ("uuml", '\u{00FC}'),
    ("auml", '\u{00E4}'),
    ("szlig", '\u{00DF}'),
];

/// Decodes HTML character references. Invalid numeric ones (zero, surrogates, beyond U+10FFFF) become U+FFFD,
/// as in HTML5.
pub fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        // References are short; look for the `;` only in the next few bytes.
        let semi = after.as_bytes().iter().take(32).position(|&b| b == b';');
        let decoded = semi.and_then(|e| {
            let body = &after[..e];
            let c = if let Some(num) = body.strip_prefix('#') {
                let v = match num.strip_prefix(['x', 'X']) {
                    Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                        u32::from_str_radix(hex, 16).ok().or(Some(u32::MAX))
                    }
                    None if !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) => {
                        num.parse::<u32>().ok().or(Some(u32::MAX))
                    }
                    _ => None,
                }?;
                if v == 0 {
                    '\u{FFFD}'
                } else {
                    char::from_u32(v).unwrap_or('\u{FFFD}')
                }
            } else {
                ENTITIES.iter().find(|(n, _)| *n == body)?.1
            };
            Some((c, e + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &after[len..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The key two texts must share to count as duplicates: NFC form with whitespace collapsed, so that texts
/// differing only in spacing or composition are caught whatever cleaning was chosen.
pub fn dedup_key(text: &str) -> String {
    if is_nfc_quick(text.chars()) == IsNormalized::Yes {
        collapse_whitespace(text)
    } else {
        collapse_whitespace(&text.nfc().collect::<String>())
    }
}

fn example_key(ex: &Example) -> String {
    match &ex.text_pair {
        None => dedup_key(&ex.text),
        Some(p) => format!("{}\u{1f}{}", dedup_key(&ex.text), dedup_key(p)),
    }
}

/// What `dedup` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DedupReport {
    /// Examples removed.
    pub removed: usize,
    /// Removed duplicates whose label differs from the kept first occurrence (conflicting annotations).
    pub conflicting_labels: usize,
    /// Lines of the first few removed examples.
    pub first_lines: Vec<u64>,
}

/// Removes exact duplicates by `dedup_key` (text and text pair), keeping the first occurrence.
pub fn dedup(examples: &mut Vec<Example>) -> DedupReport {
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::with_capacity(examples.len());
    let mut report = DedupReport::default();
    let mut keep = vec![true; examples.len()];
    for (i, ex) in examples.iter().enumerate() {
        match seen.entry(example_key(ex)) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(i);
            }
            std::collections::hash_map::Entry::Occupied(o) => {
                keep[i] = false;
                report.removed += 1;
                if examples[*o.get()].label != ex.label {
                    report.conflicting_labels += 1;
                }
                if report.first_lines.len() < crate::read::REPORT_LOCATIONS {
                    report.first_lines.push(ex.line);
                }
            }
        }
    }
    let mut k = keep.into_iter();
    examples.retain(|_| k.next().unwrap_or(true));
    report
}

/// Number of examples whose text duplicates an earlier one (by `dedup_key`).
pub fn count_duplicates(examples: &[Example]) -> usize {
    let mut seen = HashSet::with_capacity(examples.len());
    examples.iter().filter(|ex| !seen.insert(example_key(ex))).count()
}

/// Texts of an evaluation set that also occur in the training set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overlap {
    /// Evaluation examples checked.
    pub eval_examples: usize,
    /// Evaluation examples whose text (and pair) also occurs in train.
    pub overlapping: usize,
    /// Lines (in the evaluation file) of the first few overlapping examples.
    pub first_lines: Vec<u64>,
}

impl Overlap {
    /// A one-line warning, or `None` when there is no overlap.
    pub fn warning(&self, train: &str, eval: &str) -> Option<String> {
        (self.overlapping > 0).then(|| {
            format!(
                "warning: {} of {} examples in {eval} ({:.2}%) also appear in {train}",
                self.overlapping,
                self.eval_examples,
                100.0 * self.overlapping as f64 / self.eval_examples.max(1) as f64
            )
        })
    }
}

/// Counts evaluation examples whose text also appears in train (by `dedup_key`).
pub fn overlap(train: &[Example], eval: &[Example]) -> Overlap {
    let keys: HashSet<String> = train.iter().map(example_key).collect();
    let mut o = Overlap { eval_examples: eval.len(), ..Overlap::default() };
    for ex in eval {
        if keys.contains(&example_key(ex)) {
            o.overlapping += 1;
            if o.first_lines.len() < crate::read::REPORT_LOCATIONS {
                o.first_lines.push(ex.line);
            }
        }
    }
    o
}
