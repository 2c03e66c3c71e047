//! sacrebleu's tokenizers and Python string helpers, reproduced exactly.
//!
//! Every regex pass of the reference (`re.sub` with a one- or two-character pattern) is a left-to-right,
//! non-overlapping scan; they are written here as plain character loops, which are both exact and fast.

use super::tables;
use crate::error::{MetricError, Result};

/// Python's `str.isspace()` (what `str.split()` and `str.strip()` split on); it differs from Rust's
/// `char::is_whitespace` on U+001C..U+001F.
pub fn py_isspace(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n'
            | '\x0b'
            | '\x0c'
            | '\r'
            | '\x1c'..='\x1f'
            | ' '
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

/// Python's `str.split()` with no arguments.
pub fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(py_isspace).filter(|w| !w.is_empty())
}

/// Python's `' '.join(s.split())`, appended to `out`.
fn join_split_into(s: &str, out: &mut String) {
    for (i, w) in py_split(s).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(w);
    }
}

fn join_split(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    join_split_into(s, &mut out);
    out
}

/// Upper-case letters that Rust's newer Unicode tables lowercase but Python 3.11 (Unicode 14) does not.
fn python_keeps_case(c: char) -> bool {
    matches!(
        c as u32,
        0x1C89 | 0xA7CB | 0xA7CC | 0xA7CE | 0xA7D2 | 0xA7D4 | 0xA7DA | 0xA7DC | 0x10D50..=0x10D65 | 0x16EA0..=0x16EB8
    )
}

/// Python's `str.lower()`: full case mapping (Unicode 14, as in Python 3.11) with CPython's final-sigma rule,
/// whose Case_Ignorable / Cased properties come from generated tables (Rust's newer Unicode assigns more).
pub fn py_lower(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    for (i, &c) in chars.iter().enumerate() {
        if c == '\u{3a3}' {
            out.push(if final_sigma(&chars, i) { '\u{3c2}' } else { '\u{3c3}' });
        } else if python_keeps_case(c) {
            out.push(c);
        } else {
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// CPython `handle_capital_sigma`: `\p{cased} \p{case-ignorable}* SIGMA !(\p{case-ignorable}* \p{cased})`.
fn final_sigma(chars: &[char], i: usize) -> bool {
    let ignorable = |c: char| in_ranges(tables::CASE_IGNORABLE, c);
    let cased = |c: char| in_ranges(tables::CASED, c);
    let before = chars[..i].iter().rev().find(|&&c| !ignorable(c));
    if !before.is_some_and(|&c| cased(c)) {
        return false;
    }
    !chars[i + 1..].iter().find(|&&c| !ignorable(c)).is_some_and(|&c| cased(c))
}

/// `re.sub('(X)', r' \1 ', s)` for a one-character class X.
fn pad_chars(s: &str, class: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if class(c) {
            out.push(' ');
            out.push(c);
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// `re.sub('(A)(B)', template, s)` where A and B are one-character classes; `emit` writes the replacement.
fn sub_pairs(s: &str, a: impl Fn(char) -> bool, b: impl Fn(char) -> bool, emit: fn(&mut String, char, char)) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match it.peek() {
            Some(&d) if a(c) && b(d) => {
                emit(&mut out, c, d);
                it.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// `\1 \2 `
fn emit_a_sp_b_sp(out: &mut String, a: char, b: char) {
    out.push(a);
    out.push(' ');
    out.push(b);
    out.push(' ');
}

/// ` \1 \2`
fn emit_sp_a_sp_b(out: &mut String, a: char, b: char) {
    out.push(' ');
    out.push(a);
    out.push(' ');
    out.push(b);
}

/// The 13a punctuation class `[\{-\~\[-\` -\&\(-\+\:-\@\/]`.
fn is_13a_punct(c: char) -> bool {
    matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/')
}

/// The mteval-v13a regex passes shared by `13a`, `zh` and Tercom normalisation, run on UTF-8 bytes: every
/// class involved is ASCII, a multi-byte character is "not a digit / not punctuation" in all of them, and
/// spaces are only inserted next to ASCII bytes, so this equals the character-level `re.sub` sequence.
struct Passes {
    a: Vec<u8>,
    b: Vec<u8>,
}

impl Passes {
    fn new(s: &str) -> Self {
        Passes { a: s.as_bytes().to_vec(), b: Vec::with_capacity(s.len() * 2) }
    }

    /// `re.sub('(X)', r' \1 ', s)` for an ASCII class X.
    fn pad(&mut self, class: fn(u8) -> bool) {
        self.b.clear();
        for &c in &self.a {
            if class(c) {
                self.b.extend_from_slice(&[b' ', c, b' ']);
            } else {
                self.b.push(c);
            }
        }
        std::mem::swap(&mut self.a, &mut self.b);
    }

    /// `re.sub('(A)(B)', r'\1 \2 ' or r' \1 \2', s)`.
    fn pairs(&mut self, x: fn(u8) -> bool, y: fn(u8) -> bool, space_first: bool) {
        self.b.clear();
        let s = &self.a;
        let mut i = 0;
        while i < s.len() {
            if i + 1 < s.len() && x(s[i]) && y(s[i + 1]) {
                if space_first {
                    self.b.extend_from_slice(&[b' ', s[i], b' ', s[i + 1]]);
                } else {
                    self.b.extend_from_slice(&[s[i], b' ', s[i + 1], b' ']);
                }
                i += 2;
            } else {
                self.b.push(s[i]);
                i += 1;
            }
        }
        std::mem::swap(&mut self.a, &mut self.b);
    }

    /// Period/comma and digit-dash rules of mteval-v13a.
    fn number_rules(&mut self) {
        self.pairs(|c| !c.is_ascii_digit(), |c| c == b'.' || c == b',', false);
        self.pairs(|c| c == b'.' || c == b',', |c| !c.is_ascii_digit(), true);
        self.pairs(|c| c.is_ascii_digit(), |c| c == b'-', false);
    }

    fn finish(self) -> String {
        // Only ASCII spaces were inserted next to whole characters, so the bytes are valid UTF-8.
        String::from_utf8(self.a).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

fn is_13a_punct_byte(c: u8) -> bool {
    is_13a_punct(char::from(c))
}

/// sacrebleu `TokenizerRegexp`: the mteval-v13a punctuation rules, then whitespace normalisation.
fn regexp_tokenize(line: &str) -> String {
    let mut p = Passes::new(line);
    p.pad(is_13a_punct_byte);
    p.number_rules();
    join_split(&p.finish())
}

/// `s.replace(from, to)` without allocating when `from` does not occur.
fn replace_cow<'a>(s: std::borrow::Cow<'a, str>, from: &str, to: &str) -> std::borrow::Cow<'a, str> {
    if s.contains(from) {
        s.replace(from, to).into()
    } else {
        s
    }
}

/// sacrebleu `Tokenizer13a` (mteval-v13a), the default BLEU tokenizer.
pub fn tokenize_13a(line: &str) -> String {
    let mut s = std::borrow::Cow::Borrowed(line);
    s = replace_cow(s, "<skipped>", "");
    s = replace_cow(s, "-\n", "");
    s = replace_cow(s, "\n", " ");
    if s.contains('&') {
        s = replace_cow(s, "&quot;", "\"");
        s = replace_cow(s, "&amp;", "&");
        s = replace_cow(s, "&lt;", "<");
        s = replace_cow(s, "&gt;", ">");
    }
    // The reference pads the line with spaces before the regex passes.
    let mut p = Passes { a: Vec::with_capacity(s.len() * 2), b: Vec::with_capacity(s.len() * 2) };
    p.a.push(b' ');
    p.a.extend_from_slice(s.as_bytes());
    p.a.push(b' ');
    p.pad(is_13a_punct_byte);
    p.number_rules();
    join_split(&p.finish())
}

fn in_ranges(table: &[(u32, u32)], c: char) -> bool {
    let c = c as u32;
    match table.binary_search_by(|&(lo, _)| lo.cmp(&c)) {
        Ok(_) => true,
        Err(0) => false,
        Err(i) => c <= table[i - 1].1,
    }
}

fn is_p(c: char) -> bool {
    in_ranges(tables::P, c)
}

fn is_s(c: char) -> bool {
    in_ranges(tables::S, c)
}

fn is_n(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    in_ranges(tables::N, c)
}

/// sacrebleu `TokenizerV14International` (mteval-v14 `--international-tokenization`), with the `regex`
/// module's Unicode classes.
pub fn tokenize_intl(line: &str) -> String {
    let s = sub_pairs(line, |c| !is_n(c), is_p, emit_a_sp_b_sp);
    let s = sub_pairs(&s, is_p, |c| !is_n(c), emit_sp_a_sp_b);
    let s = pad_chars(&s, is_s);
    join_split(&s)
}

/// sacrebleu `TokenizerChar`: every character becomes a token.
pub fn tokenize_char(line: &str) -> String {
    let mut out = String::with_capacity(line.len() * 2);
    for (i, c) in line.chars().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// `_is_chinese_char` of sacrebleu's zh tokenizer. The reference compares one-character strings with range
/// bounds written as `u'\u20000'`, which Python reads as the two characters U+2000 '0': those two ranges are
/// effectively U+2001..=U+2A6D and U+2F81..=U+2FA1, reproduced here (the first one also covers the
/// reference's U+2600..=U+27BF ranges).
fn is_chinese_char(c: char) -> bool {
    matches!(
        c as u32,
        0x3400..=0x4db5
            | 0x4e00..=0x9fa5
            | 0x9fa6..=0x9fbb
            | 0xf900..=0xfa2d
            | 0xfa30..=0xfa6a
            | 0xfa70..=0xfad9
            | 0x2001..=0x2a6d
            | 0x2f81..=0x2fa1
            | 0xff00..=0xffef
            | 0x2e80..=0x2eff
            | 0x3000..=0x303f
            | 0x31c0..=0x31ef
            | 0x2f00..=0x2fdf
            | 0x2ff0..=0x2fff
            | 0x3100..=0x312f
            | 0x31a0..=0x31bf
            | 0xfe10..=0xfe1f
            | 0xfe30..=0xfe4f
            | 0x3200..=0x32ff
            | 0x3300..=0x33ff
    )
}

/// sacrebleu `TokenizerZh`: Chinese characters are split, the rest follows the 13a regex rules.
pub fn tokenize_zh(line: &str) -> String {
    let line = line.trim_matches(py_isspace);
    let s = pad_chars(line, is_chinese_char);
    regexp_tokenize(&s)
}

/// A BLEU tokenizer by its sacrebleu name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokenizer {
    None,
    T13a,
    Intl,
    Char,
    Zh,
}

impl Tokenizer {
    /// Parses sacrebleu's `tokenize=` name. Unknown names raise `KeyError` as in the reference; the tokenizers
    /// that need external models (mecab, sentencepiece) are not available.
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "none" => Tokenizer::None,
            "13a" => Tokenizer::T13a,
            "intl" => Tokenizer::Intl,
            "char" => Tokenizer::Char,
            "zh" => Tokenizer::Zh,
            "ja-mecab" | "ko-mecab" | "spm" | "flores101" | "flores200" | "spBLEU-1K" => {
                return Err(MetricError::value(format!(
                    "tokenizer '{name}' needs an external model and is not supported"
                )))
            }
            _ => return Err(MetricError::Key(format!("'{name}'"))),
        })
    }

    /// The name used in the signature (`tok:...`).
    pub fn signature(self) -> &'static str {
        match self {
            Tokenizer::None => "none",
            Tokenizer::T13a => "13a",
            Tokenizer::Intl => "intl",
            Tokenizer::Char => "char",
            Tokenizer::Zh => "zh",
        }
    }

    /// Tokenizes one line (the reference's `tokenizer(line)`).
    pub fn tokenize(self, line: &str) -> std::borrow::Cow<'_, str> {
        match self {
            Tokenizer::None => std::borrow::Cow::Borrowed(line),
            Tokenizer::T13a => tokenize_13a(line).into(),
            Tokenizer::Intl => tokenize_intl(line).into(),
            Tokenizer::Char => tokenize_char(line).into(),
            Tokenizer::Zh => tokenize_zh(line).into(),
        }
    }
}

/// Options of sacrebleu's `TercomTokenizer`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TercomOptions {
    pub normalized: bool,
    pub no_punct: bool,
    pub asian_support: bool,
    pub case_sensitive: bool,
}

fn is_asian_punct(c: char) -> bool {
    matches!(c as u32, 0x3001 | 0x3002 | 0x3008..=0x3011 | 0x3014..=0x301f | 0xff61..=0xff65 | 0x30fb)
}

fn is_full_width_punct(c: char) -> bool {
    matches!(c as u32, 0xff0e | 0xff0c | 0xff1f | 0xff1a | 0xff1b | 0xff01 | 0xff02 | 0xff08 | 0xff09)
}

fn normalize_general_and_western(s: &str) -> String {
    let s = s.replace("\n-", "").replace('\n', " ");
    let s = s.replace("&quot;", "\"").replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">");
    let mut p = Passes::new(&format!(" {s} "));
    p.pad(is_13a_punct_byte);
    // `'s$` cannot match: the line ends with the padding space.
    let s = p.finish().replace("'s ", " 's ");
    let mut p = Passes::new(&s);
    p.number_rules();
    p.finish()
}

fn normalize_asian(s: &str) -> String {
    let s = pad_chars(s, |c| matches!(c as u32, 0x4e00..=0x9fff | 0x3400..=0x4dbf));
    let s = pad_chars(&s, |c| matches!(c as u32, 0x31c0..=0x31ef | 0x2e80..=0x2eff));
    let s = pad_chars(&s, |c| matches!(c as u32, 0x3300..=0x33ff | 0xf900..=0xfaff | 0xfe30..=0xfe4f));
    let s = pad_chars(&s, |c| matches!(c as u32, 0x3200..=0x3f22));
    // The reference's Hiragana/Katakana rules are anchored at `^` and the line starts with a padding space
    // here, so they never match.
    let s = pad_chars(&s, is_asian_punct);
    pad_chars(&s, is_full_width_punct)
}

/// sacrebleu `TercomTokenizer.__call__`.
pub fn tokenize_tercom(sent: &str, opts: TercomOptions) -> String {
    if sent.is_empty() {
        return String::new();
    }
    let mut s = if opts.case_sensitive { sent.to_owned() } else { py_lower(sent) };
    if opts.normalized {
        s = normalize_general_and_western(&s);
        if opts.asian_support {
            s = normalize_asian(&s);
        }
    }
    if opts.no_punct {
        s.retain(|c| !matches!(c, '.' | ',' | '?' | ':' | ';' | '!' | '"' | '(' | ')'));
        if opts.asian_support {
            s.retain(|c| !is_asian_punct(c) && !is_full_width_punct(c));
        }
    }
    join_split(&s)
}
