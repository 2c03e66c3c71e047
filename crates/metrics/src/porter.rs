//! The Porter stemmer exactly as NLTK 3.9's `nltk.stem.porter.PorterStemmer()` (default `NLTK_EXTENSIONS`
//! mode), which rouge-score applies to tokens longer than three characters when `use_stemmer=True`.
//!
//! The algorithm runs on ASCII bytes when the word is ASCII (every rouge token is `[a-z0-9]+`) and on
//! `char`s otherwise, so any Unicode word stems as NLTK stems it.

/// A letter of the word being stemmed: an ASCII byte or a Unicode scalar.
trait Letter: Copy + Eq {
    fn is(self, b: u8) -> bool;
    fn from_ascii(b: u8) -> Self;
}

impl Letter for u8 {
    fn is(self, b: u8) -> bool {
        self == b
    }
    fn from_ascii(b: u8) -> Self {
        b
    }
}

impl Letter for char {
    fn is(self, b: u8) -> bool {
        self == char::from(b)
    }
    fn from_ascii(b: u8) -> Self {
        char::from(b)
    }
}

/// NLTK's irregular forms pool: these words map straight to their stem.
const POOL: &[(&str, &str)] = &[
    ("sky", "sky"),
    ("skies", "sky"),
    ("dying", "die"),
    ("lying", "lie"),
    ("tying", "tie"),
    ("news", "news"),
    ("innings", "inning"),
    ("inning", "inning"),
    ("outings", "outing"),
    ("outing", "outing"),
    ("cannings", "canning"),
    ("canning", "canning"),
    ("howe", "howe"),
    ("proceed", "proceed"),
    ("exceed", "exceed"),
    ("succeed", "succeed"),
];

/// `PorterStemmer().stem(word)` of NLTK (lowercases the word first, as NLTK's `to_lowercase=True`).
pub fn stem(word: &str) -> String {
    if let Some(&(_, s)) = POOL.iter().find(|(w, _)| *w == word) {
        return s.to_owned();
    }
    if word.is_ascii() {
        let mut w = word.as_bytes().to_ascii_lowercase();
        if w.len() > 2 {
            stem_letters(&mut w);
        }
        // Only ASCII bytes are ever written, so the buffer stays valid UTF-8.
        w.into_iter().map(char::from).collect()
    } else {
        let lower = word.to_lowercase();
        if word.chars().count() <= 2 {
            return lower;
        }
        let mut w: Vec<char> = lower.chars().collect();
        stem_letters(&mut w);
        w.into_iter().collect()
    }
}

/// Stems an ASCII-lowercase token of more than 2 bytes in place (the rouge tokenizer's fast path).
pub(crate) fn stem_ascii_in_place(word: &mut Vec<u8>) {
    if let Some(&(_, s)) = POOL.iter().find(|(w, _)| w.as_bytes() == word.as_slice()) {
        word.clear();
        word.extend_from_slice(s.as_bytes());
        return;
    }
    if word.len() > 2 {
        stem_letters(word);
    }
}

fn stem_letters<C: Letter>(w: &mut Vec<C>) {
    step1a(w);
    step1b(w);
    step1c(w);
    step2(w);
    step3(w);
    step4(w);
    step5a(w);
    step5b(w);
}

fn is_vowel<C: Letter>(c: C) -> bool {
    c.is(b'a') || c.is(b'e') || c.is(b'i') || c.is(b'o') || c.is(b'u')
}

/// Consonant per the paper: not a vowel, and `y` only when at the start or after a vowel.
fn is_consonant<C: Letter>(w: &[C], i: usize) -> bool {
    // `y` alternates with what precedes it; walk back over the run of `y`s.
    let mut j = i;
    let mut flips = false;
    loop {
        let c = w[j];
        if is_vowel(c) {
            return flips;
        }
        if !c.is(b'y') {
            return !flips;
        }
        if j == 0 {
            return !flips;
        }
        flips = !flips;
        j -= 1;
    }
}

/// The measure m of `[C](VC){m}[V]`: the number of vowel-to-consonant transitions.
fn measure<C: Letter>(w: &[C]) -> usize {
    let mut m = 0;
    let mut prev_vowel = false;
    let mut prev_cons = true;
    for (i, &c) in w.iter().enumerate() {
        // Track consonant-ness incrementally (same rule as `is_consonant`).
        let cons = if is_vowel(c) {
            false
        } else if c.is(b'y') {
            i == 0 || !prev_cons
        } else {
            true
        };
        if cons && prev_vowel {
            m += 1;
        }
        prev_vowel = !cons;
        prev_cons = cons;
    }
    m
}

fn contains_vowel<C: Letter>(w: &[C]) -> bool {
    (0..w.len()).any(|i| !is_consonant(w, i))
}

fn ends_double_consonant<C: Letter>(w: &[C]) -> bool {
    let n = w.len();
    n >= 2 && w[n - 1] == w[n - 2] && is_consonant(w, n - 1)
}

/// Condition *o (with NLTK's extension for two-letter stems).
fn ends_cvc<C: Letter>(w: &[C]) -> bool {
    let n = w.len();
    (n >= 3
        && is_consonant(w, n - 3)
        && !is_consonant(w, n - 2)
        && is_consonant(w, n - 1)
        && !(w[n - 1].is(b'w') || w[n - 1].is(b'x') || w[n - 1].is(b'y')))
        || (n == 2 && !is_consonant(w, 0) && is_consonant(w, 1))
}

fn ends_with<C: Letter>(w: &[C], suffix: &[u8]) -> bool {
    w.len() >= suffix.len() && w[w.len() - suffix.len()..].iter().zip(suffix).all(|(&c, &b)| c.is(b))
}

fn replace_tail<C: Letter>(w: &mut Vec<C>, strip: usize, replacement: &[u8]) {
    w.truncate(w.len() - strip);
    w.extend(replacement.iter().map(|&b| C::from_ascii(b)));
}

/// NLTK's `_apply_rule_list`: the first rule whose suffix matches decides; if its condition (given the stem
/// and the rule index) fails the word is left unchanged.
fn apply_rules<C: Letter>(w: &mut Vec<C>, rules: &[(&[u8], &[u8])], cond: impl Fn(&[C], usize) -> bool) {
    for (k, (suffix, replacement)) in rules.iter().enumerate() {
        if ends_with(w, suffix) {
            let stem_len = w.len() - suffix.len();
            if cond(&w[..stem_len], k) {
                replace_tail(w, suffix.len(), replacement);
            }
            return;
        }
    }
}

fn step1a<C: Letter>(w: &mut Vec<C>) {
    if w.len() == 4 && ends_with(w, b"ies") {
        replace_tail(w, 3, b"ie");
        return;
    }
    apply_rules(w, &[(b"sses", b"ss"), (b"ies", b"i"), (b"ss", b"ss"), (b"s", b"")], |_, _| true);
}

fn step1b<C: Letter>(w: &mut Vec<C>) {
    if ends_with(w, b"ied") {
        let rep: &[u8] = if w.len() == 4 { b"ie" } else { b"i" };
        replace_tail(w, 3, rep);
        return;
    }
    if ends_with(w, b"eed") {
        if measure(&w[..w.len() - 3]) > 0 {
            replace_tail(w, 3, b"ee");
        }
        return;
    }
    let mut stripped = None;
    for suffix in [&b"ed"[..], &b"ing"[..]] {
        if ends_with(w, suffix) && contains_vowel(&w[..w.len() - suffix.len()]) {
            stripped = Some(suffix.len());
            break;
        }
    }
    let Some(strip) = stripped else { return };
    w.truncate(w.len() - strip);
    for (suffix, replacement) in [(&b"at"[..], &b"ate"[..]), (b"bl", b"ble"), (b"iz", b"ize")] {
        if ends_with(w, suffix) {
            replace_tail(w, suffix.len(), replacement);
            return;
        }
    }
    if ends_double_consonant(w) {
        let last = w[w.len() - 1];
        if !(last.is(b'l') || last.is(b's') || last.is(b'z')) {
            w.pop();
        }
        return;
    }
    if measure(w) == 1 && ends_cvc(w) {
        w.push(C::from_ascii(b'e'));
    }
}

fn step1c<C: Letter>(w: &mut Vec<C>) {
    apply_rules(w, &[(b"y", b"i")], |stem, _| stem.len() > 1 && is_consonant(stem, stem.len() - 1));
}

const STEP2: &[(&[u8], &[u8])] = &[
    (b"ational", b"ate"),
    (b"tional", b"tion"),
    (b"enci", b"ence"),
    (b"anci", b"ance"),
    (b"izer", b"ize"),
    (b"bli", b"ble"),
    (b"alli", b"al"),
    (b"entli", b"ent"),
    (b"eli", b"e"),
    (b"ousli", b"ous"),
    (b"ization", b"ize"),
    (b"ation", b"ate"),
    (b"ator", b"ate"),
    (b"alism", b"al"),
    (b"iveness", b"ive"),
    (b"fulness", b"ful"),
    (b"ousness", b"ous"),
    (b"aliti", b"al"),
    (b"iviti", b"ive"),
    (b"biliti", b"ble"),
    (b"fulli", b"ful"),
    (b"logi", b"log"),
];
const LOGI: usize = STEP2.len() - 1;

fn step2<C: Letter>(w: &mut Vec<C>) {
    // NLTK extension: -alli -> -al, then step 2 again on the result.
    while ends_with(w, b"alli") && measure(&w[..w.len() - 4]) > 0 {
        replace_tail(w, 4, b"al");
    }
    // `logi` tests the measure of the stem plus its `l` (NLTK: `word[:-3]`).
    apply_rules(w, STEP2, |stem, k| if k == LOGI { measure(&w_with_l(stem)) > 0 } else { measure(stem) > 0 });
}

/// The stem followed by `l` (only for the `logi` rule; rare, so allocating is fine).
fn w_with_l<C: Letter>(stem: &[C]) -> Vec<C> {
    let mut v = stem.to_vec();
    v.push(C::from_ascii(b'l'));
    v
}

fn step3<C: Letter>(w: &mut Vec<C>) {
    apply_rules(
        w,
        &[
            (b"icate", b"ic"),
            (b"ative", b""),
            (b"alize", b"al"),
            (b"iciti", b"ic"),
            (b"ical", b"ic"),
            (b"ful", b""),
            (b"ness", b""),
        ],
        |stem, _| measure(stem) > 0,
    );
}

const STEP4: &[(&[u8], &[u8])] = &[
    (b"al", b""),
    (b"ance", b""),
    (b"ence", b""),
    (b"er", b""),
    (b"ic", b""),
    (b"able", b""),
    (b"ible", b""),
    (b"ant", b""),
    (b"ement", b""),
    (b"ment", b""),
    (b"ent", b""),
    (b"ion", b""),
    (b"ou", b""),
    (b"ism", b""),
    (b"ate", b""),
    (b"iti", b""),
    (b"ous", b""),
    (b"ive", b""),
    (b"ize", b""),
];
const ION: usize = 11;

fn step4<C: Letter>(w: &mut Vec<C>) {
    apply_rules(w, STEP4, |stem, k| {
        measure(stem) > 1 && (k != ION || stem.last().is_some_and(|c| c.is(b's') || c.is(b't')))
    });
}

fn step5a<C: Letter>(w: &mut Vec<C>) {
    if ends_with(w, b"e") {
        let stem = &w[..w.len() - 1];
        let m = measure(stem);
        if m > 1 || (m == 1 && !ends_cvc(stem)) {
            w.pop();
        }
    }
}

fn step5b<C: Letter>(w: &mut Vec<C>) {
    if ends_with(w, b"ll") && measure(&w[..w.len() - 1]) > 1 {
        w.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::stem;

    #[test]
    fn paper_examples() {
        for (w, s) in [
            ("caresses", "caress"),
            ("ponies", "poni"),
            ("ties", "tie"),
            ("agreed", "agre"),
            ("hopping", "hop"),
            ("filing", "file"),
            ("happy", "happi"),
            ("relational", "relat"),
            ("generalization", "gener"),
            ("controll", "control"),
            ("skies", "sky"),
            ("dying", "die"),
            ("by", "by"),
        ] {
            assert_eq!(stem(w), s, "{w}");
        }
    }
}
