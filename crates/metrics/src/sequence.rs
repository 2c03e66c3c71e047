//! Entity-level sequence labeling metrics, identical to seqeval 1.2.2 (`seqeval.metrics`).
//!
//! Two chunkers are provided, as in seqeval:
//! - the default (lenient, conlleval-compatible) one of `seqeval.metrics.sequence_labeling.get_entities`:
//!   a tag is its first character (last with `suffix`), the type is what follows the first `-`
//!   (precedes the last `-` with `suffix`), `"_"` when empty; chunks start and end by the
//!   `start_of_chunk` / `end_of_chunk` rules. Sentences are joined into one sequence with an `"O"`
//!   between them, exactly as seqeval does, so positions count those separators;
//! - the strict one of `seqeval.scheme.Entities` (`mode="strict"` with a scheme such as [`Scheme::IOB2`]):
//!   a token's prefix must be one of `I O B E S U L` (else `KeyError`) and allowed by the scheme (else
//!   `ValueError`), its type is the rest with `-` stripped from both ends.
//!
//! Scores count entities: per type, `tp` = entities present in both truth and prediction (same type, start
//! and end), `pred`/`true` = entities predicted / in the truth. precision = tp/pred, recall = tp/true,
//! F-beta = (1+beta²)·p·r/(beta²·p + r) (0 when that denominator is 0). A zero denominator gives the
//! `zero_division` value: 0 for `"warn"` and 0, 1 for anything else (seqeval's rule, so NaN gives 1 too).
//!
//! The JSON interface also answers `seqeval.v1.precision_recall_fscore_support` (the strict scores of a given
//! `scheme`, with no auto-detection: `scheme=None` fails as in seqeval; extra keywords are ignored, as its
//! `**kwargs` does, except precomputed `entities_true` / `entities_pred`, which are refused).
//!
//! `sample_weight` is accepted and ignored by the JSON interface, as seqeval only reads it for
//! `average="samples"`, which it rejects.
//!
//! Everything is computed by [`EntityAccumulator`], which borrows the tag strings and keys its counts by an
//! interned type index; the one-shot functions are a single `update`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use serde_json::{json, Map, Value};

use crate::call::MetricInfo;
use crate::common::{Average, ZeroDivision};
use crate::error::{MetricError, Result};
use crate::json::{num, nums, Args};

// ---------------------------------------------------------------------------------------------------------
// Schemes
// ---------------------------------------------------------------------------------------------------------

/// A tagging scheme of `seqeval.scheme` (the class passed as `scheme=`). `Token` is the abstract base class:
/// seqeval accepts it but fails with a `TypeError` as soon as it checks a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::upper_case_acronyms)]
pub enum Scheme {
    IOB1,
    IOE1,
    IOB2,
    IOE2,
    IOBES,
    BILOU,
    Token,
}

impl Scheme {
    /// The scheme with this class name (`KeyError` for an unknown name).
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "IOB1" => Scheme::IOB1,
            "IOE1" => Scheme::IOE1,
            "IOB2" => Scheme::IOB2,
            "IOE2" => Scheme::IOE2,
            "IOBES" => Scheme::IOBES,
            "BILOU" => Scheme::BILOU,
            "Token" => Scheme::Token,
            _ => return Err(MetricError::Key(format!("'{name}'"))),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Scheme::IOB1 => "IOB1",
            Scheme::IOE1 => "IOE1",
            Scheme::IOB2 => "IOB2",
            Scheme::IOE2 => "IOE2",
            Scheme::IOBES => "IOBES",
            Scheme::BILOU => "BILOU",
            Scheme::Token => "Token",
        }
    }

    fn rules(self) -> Option<&'static Rules> {
        match self {
            Scheme::IOB1 => Some(&IOB1_RULES),
            Scheme::IOE1 => Some(&IOE1_RULES),
            Scheme::IOB2 => Some(&IOB2_RULES),
            Scheme::IOE2 => Some(&IOE2_RULES),
            Scheme::IOBES => Some(&IOBES_RULES),
            Scheme::BILOU => Some(&BILOU_RULES),
            Scheme::Token => None,
        }
    }
}

// Prefix flags (`seqeval.scheme.Prefix`) and tag conditions (`seqeval.scheme.Tag`).
const P_I: u8 = 1;
const P_O: u8 = 2;
const P_B: u8 = 4;
const P_E: u8 = 8;
const P_S: u8 = 16;
const P_U: u8 = 32;
const P_L: u8 = 64;
const P_ANY: u8 = 127;
const SAME: u8 = 1;
const DIFF: u8 = 2;
const ANY: u8 = 3;

/// (previous prefixes, current prefixes, tag condition)
type Pattern = (u8, u8, u8);

struct Rules {
    allowed: u8,
    allowed_text: &'static str,
    start: &'static [Pattern],
    inside: &'static [Pattern],
    end: &'static [Pattern],
}

const IOB1_RULES: Rules = Rules {
    allowed: P_I | P_O | P_B,
    allowed_text: "B|O|I",
    start: &[(P_O, P_I, ANY), (P_I, P_I, DIFF), (P_B, P_I, ANY), (P_I, P_B, SAME), (P_B, P_B, SAME)],
    inside: &[(P_B, P_I, SAME), (P_I, P_I, SAME)],
    end: &[(P_I, P_I, DIFF), (P_I, P_O, ANY), (P_I, P_B, ANY), (P_B, P_O, ANY), (P_B, P_I, DIFF), (P_B, P_B, SAME)],
};
const IOE1_RULES: Rules = Rules {
    allowed: P_I | P_O | P_E,
    allowed_text: "E|O|I",
    start: &[(P_O, P_I, ANY), (P_I, P_I, DIFF), (P_E, P_I, ANY), (P_E, P_E, SAME)],
    inside: &[(P_I, P_I, SAME), (P_I, P_E, SAME)],
    end: &[(P_I, P_I, DIFF), (P_I, P_O, ANY), (P_I, P_E, DIFF), (P_E, P_I, SAME), (P_E, P_E, SAME)],
};
const IOB2_RULES: Rules = Rules {
    allowed: P_I | P_O | P_B,
    allowed_text: "B|O|I",
    start: &[(P_ANY, P_B, ANY)],
    inside: &[(P_B, P_I, SAME), (P_I, P_I, SAME)],
    end: &[(P_I, P_O, ANY), (P_I, P_I, DIFF), (P_I, P_B, ANY), (P_B, P_O, ANY), (P_B, P_I, DIFF), (P_B, P_B, ANY)],
};
const IOE2_RULES: Rules = Rules {
    allowed: P_I | P_O | P_E,
    allowed_text: "E|O|I",
    start: &[(P_O, P_I, ANY), (P_O, P_E, ANY), (P_E, P_I, ANY), (P_E, P_E, ANY), (P_I, P_I, DIFF), (P_I, P_E, DIFF)],
    inside: &[(P_I, P_E, SAME), (P_I, P_I, SAME)],
    end: &[(P_E, P_ANY, ANY)],
};
const IOBES_RULES: Rules = Rules {
    allowed: P_I | P_O | P_B | P_E | P_S,
    allowed_text: "S|E|B|O|I",
    start: &[(P_ANY, P_B, ANY), (P_ANY, P_S, ANY)],
    inside: &[(P_B, P_I, SAME), (P_B, P_E, SAME), (P_I, P_I, SAME), (P_I, P_E, SAME)],
    end: &[(P_S, P_ANY, ANY), (P_E, P_ANY, ANY)],
};
const BILOU_RULES: Rules = Rules {
    allowed: P_B | P_I | P_L | P_O | P_U,
    allowed_text: "L|U|B|O|I",
    start: &[(P_ANY, P_B, ANY), (P_ANY, P_U, ANY)],
    inside: &[(P_B, P_I, SAME), (P_B, P_L, SAME), (P_I, P_I, SAME), (P_I, P_L, SAME)],
    end: &[(P_U, P_ANY, ANY), (P_L, P_ANY, ANY)],
};

/// A token of the strict chunker: its prefix flag and interned type.
#[derive(Debug, Clone, Copy)]
struct Tok {
    prefix: u8,
    ty: u32,
}

fn matches(patterns: &[Pattern], prev: Tok, cur: Tok) -> bool {
    patterns.iter().any(|&(pp, cp, cond)| {
        prev.prefix & pp != 0
            && cur.prefix & cp != 0
            && (cond == ANY || (cond == SAME && prev.ty == cur.ty) || (cond == DIFF && prev.ty != cur.ty))
    })
}

fn prefix_flag(c: char) -> Option<u8> {
    Some(match c {
        'I' => P_I,
        'O' => P_O,
        'B' => P_B,
        'E' => P_E,
        'S' => P_S,
        'U' => P_U,
        'L' => P_L,
        _ => return None,
    })
}

/// Splits a strict-mode token into its prefix character and type (`seqeval.scheme.Token.__init__`).
fn split_strict(token: &str, suffix: bool) -> Result<(char, &str)> {
    let (c, rest) = split_char(token, suffix)?;
    let ty = rest.trim_matches('-');
    Ok((c, if ty.is_empty() { "_" } else { ty }))
}

/// The first (or with `suffix` the last) character and the remainder; Python's `''[0]` is an `IndexError`.
fn split_char(token: &str, suffix: bool) -> Result<(char, &str)> {
    let c = if suffix { token.chars().next_back() } else { token.chars().next() };
    match c {
        None => Err(MetricError::Index("string index out of range".into())),
        Some(c) if suffix => Ok((c, &token[..token.len() - c.len_utf8()])),
        Some(c) => Ok((c, &token[c.len_utf8()..])),
    }
}

/// Splits a default-mode tag into its tag character and type (`get_entities`).
fn split_lenient(token: &str, suffix: bool) -> Result<(char, &str)> {
    let (c, rest) = split_char(token, suffix)?;
    let ty = if suffix {
        rest.rsplit_once('-').map_or(rest, |(head, _)| head)
    } else {
        rest.split_once('-').map_or(rest, |(_, tail)| tail)
    };
    Ok((c, if ty.is_empty() { "_" } else { ty }))
}

/// `seqeval.scheme.auto_detect`: the scheme whose prefix set equals that of `sequences`.
pub fn auto_detect<S: AsRef<str>>(sequences: &[Vec<S>], suffix: bool) -> Result<Scheme> {
    let mut set = 0u8;
    for token in sequences.iter().flatten() {
        let token = token.as_ref();
        let (c, _) = split_char(token, suffix)?;
        set |= prefix_flag(c).ok_or_else(|| MetricError::value(format!("This scheme is not supported: {token}")))?;
    }
    const IOB2: [u8; 4] = [P_I | P_O | P_B, P_I | P_B, P_B | P_O, P_B];
    const IOE2: [u8; 4] = [P_I | P_O | P_E, P_I | P_E, P_E | P_O, P_E];
    const IOBES: [u8; 9] = [
        P_I | P_O | P_B | P_E | P_S,
        P_I | P_B | P_E | P_S,
        P_I | P_O | P_B | P_E,
        P_O | P_B | P_E | P_S,
        P_I | P_B | P_E,
        P_B | P_E | P_S,
        P_O | P_B | P_E,
        P_B | P_E,
        P_S,
    ];
    const BILOU: [u8; 9] = [
        P_I | P_O | P_B | P_L | P_U,
        P_I | P_B | P_L | P_U,
        P_I | P_O | P_B | P_L,
        P_O | P_B | P_L | P_U,
        P_I | P_B | P_L,
        P_B | P_L | P_U,
        P_O | P_B | P_L,
        P_B | P_L,
        P_U,
    ];
    if IOB2.contains(&set) {
        Ok(Scheme::IOB2)
    } else if IOE2.contains(&set) {
        Ok(Scheme::IOE2)
    } else if IOBES.contains(&set) {
        Ok(Scheme::IOBES)
    } else if BILOU.contains(&set) {
        Ok(Scheme::BILOU)
    } else {
        Err(MetricError::value("This scheme is not supported"))
    }
}

// ---------------------------------------------------------------------------------------------------------
// Type interning
// ---------------------------------------------------------------------------------------------------------

/// FxHash: entity types are short strings; SipHash would dominate the per-token cost.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(buf)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

#[derive(Default, Clone)]
struct Interner {
    ids: HashMap<String, u32, BuildHasherDefault<FxHasher>>,
    names: Vec<String>,
}

impl Interner {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.names.len() as u32;
        self.ids.insert(s.to_owned(), id);
        self.names.push(s.to_owned());
        id
    }
}

/// The `prev_type` of the lenient chunker before the first token (`''`, which no token's type equals).
const NO_TYPE: u32 = u32::MAX;

// ---------------------------------------------------------------------------------------------------------
// Chunkers
// ---------------------------------------------------------------------------------------------------------

/// One entity: interned type and inclusive start/end positions (strict mode: exclusive end, as seqeval).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chunk {
    ty: u32,
    start: usize,
    end: usize,
}

/// `end_of_chunk` of seqeval.
fn end_of_chunk(prev_tag: char, tag: char, prev_type: u32, ty: u32) -> bool {
    matches!(prev_tag, 'E' | 'S')
        || (matches!(prev_tag, 'B' | 'I') && matches!(tag, 'B' | 'S' | 'O'))
        || (prev_tag != 'O' && prev_tag != '.' && prev_type != ty)
}

/// `start_of_chunk` of seqeval.
fn start_of_chunk(prev_tag: char, tag: char, prev_type: u32, ty: u32) -> bool {
    matches!(tag, 'B' | 'S')
        || (matches!(prev_tag, 'E' | 'S' | 'O') && matches!(tag, 'E' | 'I'))
        || (tag != 'O' && tag != '.' && prev_type != ty)
}

/// State of `get_entities` over the joined sequence; it carries over sentence boundaries (and batches)
/// because seqeval's only separation between sentences is the inserted `"O"`.
#[derive(Debug, Clone, Copy)]
struct Lenient {
    prev_tag: char,
    prev_type: u32,
    begin: usize,
    pos: usize,
}

impl Default for Lenient {
    fn default() -> Self {
        Lenient { prev_tag: 'O', prev_type: NO_TYPE, begin: 0, pos: 0 }
    }
}

impl Lenient {
    #[inline]
    fn step(&mut self, tag: char, ty: u32, out: &mut Vec<Chunk>) {
        let i = self.pos;
        if end_of_chunk(self.prev_tag, tag, self.prev_type, ty) {
            out.push(Chunk { ty: self.prev_type, start: self.begin, end: i - 1 });
        }
        if start_of_chunk(self.prev_tag, tag, self.prev_type, ty) {
            self.begin = i;
        }
        self.prev_tag = tag;
        self.prev_type = ty;
        self.pos += 1;
    }
}

/// How entities are extracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunking {
    /// `get_entities` (seqeval's default mode, conlleval-compatible).
    Lenient,
    /// `seqeval.scheme.Entities` with this scheme (`mode="strict"`).
    Strict(Scheme),
}

/// Extracts the entities of one side (truth or prediction), sentence after sentence.
#[derive(Clone)]
struct Extractor {
    lenient: Lenient,
    toks: Vec<Tok>,
}

impl Extractor {
    fn new() -> Self {
        Extractor { lenient: Lenient::default(), toks: Vec::new() }
    }

    /// Appends the entities of `sentences` (global positions) to `out`.
    fn extract<S: AsRef<str>>(
        &mut self,
        sentences: &[Vec<S>],
        chunking: Chunking,
        suffix: bool,
        types: &mut Interner,
        out: &mut Vec<Chunk>,
    ) -> Result<()> {
        let o_type = types.id("_");
        match chunking {
            Chunking::Lenient => {
                for sentence in sentences {
                    // Consecutive equal tags (runs of "O", "I-X") skip the parse and the hash lookup.
                    let mut last: Option<(&str, char, u32)> = None;
                    for token in sentence {
                        let token = token.as_ref();
                        let (tag, ty) = match last {
                            Some((s, tag, ty)) if s == token => (tag, ty),
                            _ => {
                                let (tag, ty) = split_lenient(token, suffix)?;
                                let ty = if ty == "_" { o_type } else { types.id(ty) };
                                last = Some((token, tag, ty));
                                (tag, ty)
                            }
                        };
                        self.lenient.step(tag, ty, out);
                    }
                    self.lenient.step('O', o_type, out);
                }
            }
            Chunking::Strict(scheme) => {
                for sentence in sentences {
                    let offset = self.lenient.pos;
                    self.toks.clear();
                    for token in sentence {
                        let (c, ty) = split_strict(token.as_ref(), suffix)?;
                        let prefix = prefix_flag(c).ok_or_else(|| MetricError::Key(format!("'{c}'")))?;
                        self.toks.push(Tok { prefix, ty: types.id(ty) });
                    }
                    self.toks.push(Tok { prefix: P_O, ty: o_type });
                    strict_entities(&self.toks, scheme, offset, sentence, out)?;
                    self.lenient.pos += sentence.len() + 1;
                }
            }
        }
        Ok(())
    }
}

/// `seqeval.scheme.Tokens.entities` over `toks` (the sentence plus the trailing outside token).
fn strict_entities<S: AsRef<str>>(
    toks: &[Tok],
    scheme: Scheme,
    offset: usize,
    sentence: &[S],
    out: &mut Vec<Chunk>,
) -> Result<()> {
    let Some(rules) = scheme.rules() else {
        return Err(MetricError::type_error("argument of type 'NoneType' is not iterable"));
    };
    let n = toks.len();
    let mut prev = toks[n - 1];
    let mut i = 0;
    while i < n {
        let tok = toks[i];
        if tok.prefix & rules.allowed == 0 {
            let text = sentence.get(i).map_or("O", |s| s.as_ref());
            return Err(MetricError::value(format!(
                "Invalid token is found: {text}. Allowed prefixes are: {}.",
                rules.allowed_text
            )));
        }
        if matches(rules.start, prev, tok) {
            // The trailing outside token is never "inside", so `end` stays within `toks`.
            let mut end = i + 1;
            let mut p = tok;
            while end < n - 1 && matches(rules.inside, p, toks[end]) {
                p = toks[end];
                end += 1;
            }
            if matches(rules.end, toks[end - 1], toks[end]) {
                out.push(Chunk { ty: tok.ty, start: offset + i, end: offset + end });
            }
            i = end;
        } else {
            i += 1;
        }
        prev = toks[i - 1];
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// get_entities
// ---------------------------------------------------------------------------------------------------------

/// An entity as `get_entities` returns it: (type, start, end), `end` inclusive.
pub type Entity = (String, usize, usize);

fn named(chunks: &[Chunk], types: &Interner) -> Vec<Entity> {
    chunks.iter().map(|c| (types.names[c.ty as usize].clone(), c.start, c.end)).collect()
}

/// `seqeval.metrics.sequence_labeling.get_entities(seq, suffix)` for one flat sequence of tags.
/// Errors: an empty tag is an `IndexError` (Python's `''[0]`).
pub fn get_entities<S: AsRef<str>>(seq: &[S], suffix: bool) -> Result<Vec<Entity>> {
    let mut types = Interner::default();
    let o_type = types.id("_");
    let mut state = Lenient::default();
    let mut out = Vec::new();
    for token in seq {
        let (tag, ty) = split_lenient(token.as_ref(), suffix)?;
        let ty = types.id(ty);
        state.step(tag, ty, &mut out);
    }
    state.step('O', o_type, &mut out);
    Ok(named(&out, &types))
}

/// `get_entities` for a list of sentences: seqeval joins them with an `"O"` after each, so positions count
/// those separators (sentence 2 of `[["B-X"], ["B-Y"]]` starts at 2).
pub fn get_entities_nested<S: AsRef<str>>(seqs: &[Vec<S>], suffix: bool) -> Result<Vec<Entity>> {
    let mut types = Interner::default();
    let mut out = Vec::new();
    Extractor::new().extract(seqs, Chunking::Lenient, suffix, &mut types, &mut out)?;
    Ok(named(&out, &types))
}

// ---------------------------------------------------------------------------------------------------------
// Accumulator and scores
// ---------------------------------------------------------------------------------------------------------

/// Per-type entity counts, types sorted as seqeval sorts them (code point order).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EntityCounts {
    pub labels: Vec<String>,
    pub tp: Vec<u64>,
    pub pred: Vec<u64>,
    pub true_: Vec<u64>,
}

/// Streaming entity counter: `update` with batches of (truth, prediction) sentences, then read scores or the
/// report. The result equals the one-shot functions on the concatenated batches (the lenient chunker's
/// state carries over batch boundaries as it does over sentence boundaries).
#[derive(Clone)]
pub struct EntityAccumulator {
    chunking: Chunking,
    suffix: bool,
    types: Interner,
    true_side: Extractor,
    pred_side: Extractor,
    tp: Vec<u64>,
    pred: Vec<u64>,
    true_: Vec<u64>,
    sentences: usize,
    buf_true: Vec<Chunk>,
    buf_pred: Vec<Chunk>,
}

impl EntityAccumulator {
    pub fn new(chunking: Chunking, suffix: bool) -> Self {
        EntityAccumulator {
            chunking,
            suffix,
            types: Interner::default(),
            true_side: Extractor::new(),
            pred_side: Extractor::new(),
            tp: Vec::new(),
            pred: Vec::new(),
            true_: Vec::new(),
            sentences: 0,
            buf_true: Vec::new(),
            buf_pred: Vec::new(),
        }
    }

    /// Adds a batch. `ValueError` if the batch's sentence counts or lengths differ (seqeval's
    /// `check_consistent_length`); tag errors as seqeval raises them, truth checked before prediction. On
    /// error the accumulator is unchanged.
    pub fn update<S: AsRef<str>, T: AsRef<str>>(&mut self, y_true: &[Vec<S>], y_pred: &[Vec<T>]) -> Result<()> {
        check_consistent_length(y_true, y_pred)?;
        let mut true_side = self.true_side.clone();
        let mut pred_side = self.pred_side.clone();
        self.buf_true.clear();
        self.buf_pred.clear();
        true_side.extract(y_true, self.chunking, self.suffix, &mut self.types, &mut self.buf_true)?;
        pred_side.extract(y_pred, self.chunking, self.suffix, &mut self.types, &mut self.buf_pred)?;
        self.true_side = true_side;
        self.pred_side = pred_side;
        self.sentences += y_true.len();

        let n = self.types.names.len();
        for v in [&mut self.tp, &mut self.pred, &mut self.true_] {
            v.resize(n, 0);
        }
        for c in &self.buf_true {
            self.true_[c.ty as usize] += 1;
        }
        for c in &self.buf_pred {
            self.pred[c.ty as usize] += 1;
        }
        // Both lists are strictly increasing in a position that identifies an entity within one side (the
        // inclusive end for the lenient chunker, the start for the strict one): merge them.
        let key: fn(&Chunk) -> usize = match self.chunking {
            Chunking::Lenient => |c: &Chunk| c.end,
            Chunking::Strict(_) => |c: &Chunk| c.start,
        };
        let (t, p) = (&self.buf_true, &self.buf_pred);
        let (mut a, mut b) = (0, 0);
        while a < t.len() && b < p.len() {
            let (ka, kb) = (key(&t[a]), key(&p[b]));
            if ka < kb {
                a += 1;
            } else if ka > kb {
                b += 1;
            } else {
                if t[a] == p[b] {
                    self.tp[t[a].ty as usize] += 1;
                }
                a += 1;
                b += 1;
            }
        }
        Ok(())
    }

    /// Counts of every type found in the truth or the prediction. `TypeError` if no sentence was added
    /// (seqeval: "Found input variables without list of list.").
    pub fn counts(&self) -> Result<EntityCounts> {
        if self.sentences == 0 {
            return Err(not_list_of_lists());
        }
        let mut idx: Vec<usize> = (0..self.true_.len()).filter(|&i| self.true_[i] + self.pred[i] > 0).collect();
        idx.sort_unstable_by(|&a, &b| self.types.names[a].cmp(&self.types.names[b]));
        Ok(EntityCounts {
            labels: idx.iter().map(|&i| self.types.names[i].clone()).collect(),
            tp: idx.iter().map(|&i| self.tp[i]).collect(),
            pred: idx.iter().map(|&i| self.pred[i]).collect(),
            true_: idx.iter().map(|&i| self.true_[i]).collect(),
        })
    }

    /// `precision_recall_fscore_support` of everything added so far.
    pub fn scores(&self, average: Average, beta: f64, zero_division: ZeroDivision) -> Result<Scores> {
        let average = check_average(average)?;
        check_beta(beta)?;
        Ok(scores_from_counts(&self.counts()?, average, beta, zero_division))
    }

    /// `classification_report` of everything added so far.
    pub fn report(&self, zero_division: ZeroDivision) -> Result<Report> {
        Ok(report_from_counts(&self.counts()?, zero_division))
    }
}

fn not_list_of_lists() -> MetricError {
    MetricError::type_error("Found input variables without list of list.")
}

/// `seqeval.metrics.v1.check_consistent_length` (the list-of-lists type check is the caller's).
fn check_consistent_length<S: AsRef<str>, T: AsRef<str>>(y_true: &[Vec<S>], y_pred: &[Vec<T>]) -> Result<()> {
    if y_true.len() != y_pred.len() || y_true.iter().zip(y_pred).any(|(t, p)| t.len() != p.len()) {
        let lens = |v: Vec<usize>| format!("{v:?}");
        return Err(MetricError::value(format!(
            "Found input variables with inconsistent numbers of samples:\n{}\n{}",
            lens(y_true.iter().map(Vec::len).collect()),
            lens(y_pred.iter().map(Vec::len).collect())
        )));
    }
    Ok(())
}

fn check_average(average: Average) -> Result<Average> {
    match average {
        Average::None | Average::Micro | Average::Macro | Average::Weighted => Ok(average),
        _ => Err(MetricError::value("average has to be one of (None, 'micro', 'macro', 'weighted')")),
    }
}

fn check_beta(beta: f64) -> Result<()> {
    if beta < 0.0 {
        return Err(MetricError::value("beta should be >=0 in the F-beta score"));
    }
    Ok(())
}

/// seqeval's zero-division value: `0.0 if zero_division in ['warn', 0] else 1.0`.
fn zd_value(zd: ZeroDivision) -> f64 {
    match zd {
        ZeroDivision::Warn | ZeroDivision::Zero => 0.0,
        ZeroDivision::One | ZeroDivision::NaN => 1.0,
    }
}

/// Result of `precision_recall_fscore_support`: per type (sorted labels) or averaged.
#[derive(Debug, Clone, PartialEq)]
pub enum Scores {
    PerClass { labels: Vec<String>, precision: Vec<f64>, recall: Vec<f64>, fscore: Vec<f64>, support: Vec<u64> },
    Averaged { precision: f64, recall: f64, fscore: f64, support: u64 },
}

/// One score (precision, recall or F1) averaged, or per type.
#[derive(Debug, Clone, PartialEq)]
pub enum Score {
    Averaged(f64),
    PerClass(Vec<f64>),
}

fn prf(tp: &[u64], pred: &[u64], true_: &[u64], beta: f64, zdv: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let divide = |n: u64, d: u64| if d == 0 { zdv } else { n as f64 / d as f64 };
    let p: Vec<f64> = tp.iter().zip(pred).map(|(&n, &d)| divide(n, d)).collect();
    let r: Vec<f64> = tp.iter().zip(true_).map(|(&n, &d)| divide(n, d)).collect();
    let beta2 = beta * beta;
    let f = p
        .iter()
        .zip(&r)
        .map(|(&p, &r)| {
            if beta == f64::INFINITY {
                return r;
            }
            let denom = beta2 * p + r;
            let denom = if denom == 0.0 { 1.0 } else { denom };
            (1.0 + beta2) * p * r / denom
        })
        .collect();
    (p, r, f)
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn weighted_mean(xs: &[f64], w: &[u64], total: u64) -> f64 {
    xs.iter().zip(w).map(|(&x, &w)| x * w as f64).sum::<f64>() / total as f64
}

/// seqeval's `_precision_recall_fscore_support` after counting.
fn scores_from_counts(c: &EntityCounts, average: Average, beta: f64, zd: ZeroDivision) -> Scores {
    let zdv = zd_value(zd);
    let total_true: u64 = c.true_.iter().sum();
    if average == Average::Micro {
        let (p, r, f) = prf(&[c.tp.iter().sum()], &[c.pred.iter().sum()], &[total_true], beta, zdv);
        return Scores::Averaged { precision: p[0], recall: r[0], fscore: f[0], support: total_true };
    }
    let (p, r, f) = prf(&c.tp, &c.pred, &c.true_, beta, zdv);
    match average {
        Average::Macro => {
            Scores::Averaged { precision: mean(&p), recall: mean(&r), fscore: mean(&f), support: total_true }
        }
        Average::Weighted if total_true == 0 => {
            let pz = if c.pred.iter().sum::<u64>() == 0 { zdv } else { 0.0 };
            Scores::Averaged { precision: pz, recall: zdv, fscore: pz, support: 0 }
        }
        Average::Weighted => Scores::Averaged {
            precision: weighted_mean(&p, &c.true_, total_true),
            recall: weighted_mean(&r, &c.true_, total_true),
            fscore: weighted_mean(&f, &c.true_, total_true),
            support: total_true,
        },
        _ => {
            Scores::PerClass { labels: c.labels.clone(), precision: p, recall: r, fscore: f, support: c.true_.clone() }
        }
    }
}

/// Options shared by the scoring functions, with seqeval's keyword names and defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// `suffix=`: tags written `PER-B` instead of `B-PER`.
    pub suffix: bool,
    /// `mode="strict"`: only used together with `scheme` (seqeval ignores either alone in the `*_score`
    /// functions; `classification_report` auto-detects the scheme when it is missing).
    pub strict: bool,
    pub scheme: Option<Scheme>,
    pub zero_division: ZeroDivision,
}

impl Default for Options {
    fn default() -> Self {
        Options { suffix: false, strict: false, scheme: None, zero_division: ZeroDivision::Warn }
    }
}

impl Options {
    fn score_chunking(&self) -> Chunking {
        match (self.strict, self.scheme) {
            (true, Some(s)) => Chunking::Strict(s),
            _ => Chunking::Lenient,
        }
    }
}

fn accumulate<S: AsRef<str>, T: AsRef<str>>(
    y_true: &[Vec<S>],
    y_pred: &[Vec<T>],
    chunking: Chunking,
    suffix: bool,
) -> Result<EntityAccumulator> {
    if y_true.is_empty() && y_pred.is_empty() {
        return Err(not_list_of_lists());
    }
    let mut acc = EntityAccumulator::new(chunking, suffix);
    acc.update(y_true, y_pred)?;
    Ok(acc)
}

/// `seqeval.metrics.sequence_labeling.precision_recall_fscore_support` (default chunking; the strict path is
/// `options.strict` with a scheme, as `seqeval.metrics.v1.precision_recall_fscore_support`).
/// Errors: `ValueError` for beta < 0, an average other than None/micro/macro/weighted, or inconsistent
/// lengths; `TypeError` for empty input. Macro average over no types is NaN; weighted with zero support
/// returns (zd if nothing predicted else 0, zd, same as precision, 0).
pub fn precision_recall_fscore_support<S: AsRef<str>, T: AsRef<str>>(
    y_true: &[Vec<S>],
    y_pred: &[Vec<T>],
    average: Average,
    beta: f64,
    options: &Options,
) -> Result<Scores> {
    check_beta(beta)?;
    let average = check_average(average)?;
    let acc = accumulate(y_true, y_pred, options.score_chunking(), options.suffix)?;
    Ok(scores_from_counts(&acc.counts()?, average, beta, options.zero_division))
}

fn pick(scores: Scores, which: usize) -> Score {
    match scores {
        Scores::Averaged { precision, recall, fscore, .. } => Score::Averaged([precision, recall, fscore][which]),
        Scores::PerClass { precision, recall, fscore, .. } => {
            Score::PerClass([precision, recall, fscore].into_iter().nth(which).unwrap_or_default())
        }
    }
}

/// `seqeval.metrics.precision_score`: tp / pred per entity type (micro by default).
pub fn precision_score<S: AsRef<str>, T: AsRef<str>>(
    y_true: &[Vec<S>],
    y_pred: &[Vec<T>],
    average: Average,
    options: &Options,
) -> Result<Score> {
    Ok(pick(precision_recall_fscore_support(y_true, y_pred, average, 1.0, options)?, 0))
}

/// `seqeval.metrics.recall_score`: tp / true per entity type (micro by default).
pub fn recall_score<S: AsRef<str>, T: AsRef<str>>(
    y_true: &[Vec<S>],
    y_pred: &[Vec<T>],
    average: Average,
    options: &Options,
) -> Result<Score> {
    Ok(pick(precision_recall_fscore_support(y_true, y_pred, average, 1.0, options)?, 1))
}

/// `seqeval.metrics.f1_score`: 2·p·r/(p + r) per entity type (micro by default).
pub fn f1_score<S: AsRef<str>, T: AsRef<str>>(
    y_true: &[Vec<S>],
    y_pred: &[Vec<T>],
    average: Average,
    options: &Options,
) -> Result<Score> {
    Ok(pick(precision_recall_fscore_support(y_true, y_pred, average, 1.0, options)?, 2))
}

/// `seqeval.metrics.accuracy_score` on the flattened sentences: matching tags / tags of `y_true`; like
/// seqeval, pairs beyond the shorter input are ignored. `ZeroDivisionError` when `y_true` has no tag.
pub fn accuracy_score<S: AsRef<str>, T: AsRef<str>>(y_true: &[Vec<S>], y_pred: &[Vec<T>]) -> Result<f64> {
    let t = y_true.iter().flatten().map(AsRef::as_ref);
    let p = y_pred.iter().flatten().map(AsRef::as_ref);
    let correct = t.clone().zip(p).filter(|(a, b)| a == b).count();
    let n = t.count();
    if n == 0 {
        return Err(MetricError::ZeroDivision("division by zero".into()));
    }
    Ok(correct as f64 / n as f64)
}

/// `seqeval.metrics.performance_measure`: token-level TP (equal, not both "O"), FP (different, predicted
/// not "O"), FN (true not "O", predicted "O"), TN (both "O"), over the flattened sentences.
pub fn performance_measure<S: AsRef<str>, T: AsRef<str>>(y_true: &[Vec<S>], y_pred: &[Vec<T>]) -> [u64; 4] {
    let t = y_true.iter().flatten().map(|s| Some(s.as_ref()));
    let p = y_pred.iter().flatten().map(|s| Some(s.as_ref()));
    perf_counts(t.zip(p))
}

/// `None` stands for a Python list compared with a string (never equal, never "O").
fn perf_counts<'a>(pairs: impl Iterator<Item = (Option<&'a str>, Option<&'a str>)>) -> [u64; 4] {
    let mut c = [0u64; 4];
    for (t, p) in pairs {
        let (t_o, p_o) = (t == Some("O"), p == Some("O"));
        c[0] += u64::from(t == p && (!t_o || !p_o));
        c[1] += u64::from(t != p && !p_o);
        c[2] += u64::from(!t_o && p_o);
        c[3] += u64::from(t_o && p_o);
    }
    c
}

// ---------------------------------------------------------------------------------------------------------
// classification_report
// ---------------------------------------------------------------------------------------------------------

/// One line of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    pub name: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

/// `classification_report`: one row per type, then "micro avg", "macro avg", "weighted avg".
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub rows: Vec<ReportRow>,
    pub averages: Vec<ReportRow>,
}

fn report_from_counts(c: &EntityCounts, zd: ZeroDivision) -> Report {
    let mut rows = Vec::with_capacity(c.labels.len());
    if let Scores::PerClass { labels, precision, recall, fscore, support } =
        scores_from_counts(c, Average::None, 1.0, zd)
    {
        for (i, name) in labels.into_iter().enumerate() {
            rows.push(ReportRow {
                name,
                precision: precision[i],
                recall: recall[i],
                f1: fscore[i],
                support: support[i],
            });
        }
    }
    let averages = [(Average::Micro, "micro avg"), (Average::Macro, "macro avg"), (Average::Weighted, "weighted avg")]
        .into_iter()
        .map(|(avg, name)| match scores_from_counts(c, avg, 1.0, zd) {
            Scores::Averaged { precision, recall, fscore, support } => {
                ReportRow { name: name.into(), precision, recall, f1: fscore, support }
            }
            Scores::PerClass { .. } => {
                ReportRow { name: name.into(), precision: 0.0, recall: 0.0, f1: 0.0, support: 0 }
            }
        })
        .collect();
    Report { rows, averages }
}

/// Python's `'{:>9.{d}f}'` (nan/inf spelled as Python does).
fn fmt_float(x: f64, digits: usize) -> String {
    if x.is_nan() {
        format!("{:>9}", "nan")
    } else if x.is_infinite() {
        format!("{:>9}", if x > 0.0 { "inf" } else { "-inf" })
    } else {
        format!("{x:>9.digits$}")
    }
}

impl Report {
    /// The text form, byte for byte seqeval's `StringReporter` output. `ValueError` when there is no entity
    /// type (seqeval's `max()` of an empty sequence) or `digits` is negative (an invalid format spec).
    pub fn text(&self, digits: i64) -> Result<String> {
        let name_width = self.rows.iter().map(|r| r.name.chars().count()).max();
        let Some(name_width) = name_width else {
            return Err(MetricError::value("max() arg is an empty sequence"));
        };
        let Ok(d) = usize::try_from(digits) else {
            return Err(MetricError::value("Format specifier missing precision"));
        };
        let width = name_width.max("weighted avg".len()).max(d);
        let mut s = format!("{:>width$} ", "");
        for h in ["precision", "recall", "f1-score", "support"] {
            s.push_str(&format!(" {h:>9}"));
        }
        s.push_str("\n\n");
        let line = |s: &mut String, r: &ReportRow| {
            s.push_str(&format!("{:>width$} ", r.name));
            for x in [r.precision, r.recall, r.f1] {
                s.push(' ');
                s.push_str(&fmt_float(x, d));
            }
            s.push_str(&format!(" {:>9}\n", r.support));
        };
        for r in &self.rows {
            line(&mut s, r);
        }
        s.push('\n');
        for r in &self.averages {
            line(&mut s, r);
        }
        Ok(s)
    }

    /// The `output_dict=True` form: `{name: {"precision", "recall", "f1-score", "support"}}` (a type named
    /// like an average row is overwritten by it, as in Python's dict).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        for r in self.rows.iter().chain(&self.averages) {
            m.insert(
                r.name.clone(),
                json!({"precision": num(r.precision), "recall": num(r.recall), "f1-score": num(r.f1), "support": r.support}),
            );
        }
        Value::Object(m)
    }
}

/// `seqeval.metrics.classification_report`. With `options.strict` the scheme is `options.scheme` or, when
/// absent, `auto_detect(y_true)` (seqeval.metrics.v1); otherwise default chunking (scheme ignored).
pub fn classification_report<S: AsRef<str>, T: AsRef<str>>(
    y_true: &[Vec<S>],
    y_pred: &[Vec<T>],
    options: &Options,
) -> Result<Report> {
    let chunking = if options.strict {
        if y_true.is_empty() && y_pred.is_empty() {
            return Err(not_list_of_lists());
        }
        check_consistent_length(y_true, y_pred)?;
        Chunking::Strict(match options.scheme {
            Some(s) => s,
            None => auto_detect(y_true, options.suffix)?,
        })
    } else {
        Chunking::Lenient
    };
    let acc = accumulate(y_true, y_pred, chunking, options.suffix)?;
    acc.report(options.zero_division)
}

// ---------------------------------------------------------------------------------------------------------
// JSON interface
// ---------------------------------------------------------------------------------------------------------

pub(crate) const METRICS: &[MetricInfo] = &[
    MetricInfo { name: "seqeval.get_entities", reference: "seqeval.metrics.sequence_labeling.get_entities" },
    MetricInfo { name: "seqeval.accuracy_score", reference: "seqeval.metrics.accuracy_score" },
    MetricInfo { name: "seqeval.precision_score", reference: "seqeval.metrics.precision_score" },
    MetricInfo { name: "seqeval.recall_score", reference: "seqeval.metrics.recall_score" },
    MetricInfo { name: "seqeval.f1_score", reference: "seqeval.metrics.f1_score" },
    MetricInfo {
        name: "seqeval.precision_recall_fscore_support",
        reference: "seqeval.metrics.sequence_labeling.precision_recall_fscore_support",
    },
    MetricInfo {
        name: "seqeval.v1.precision_recall_fscore_support",
        reference: "seqeval.metrics.v1.precision_recall_fscore_support",
    },
    MetricInfo { name: "seqeval.classification_report", reference: "seqeval.metrics.classification_report" },
    MetricInfo { name: "seqeval.performance_measure", reference: "seqeval.metrics.performance_measure" },
];

/// A JSON tag sequence as Python sees it: a list of sentences, a flat list of tags, or a mix.
enum Seq<'a> {
    Nested(Vec<Vec<&'a str>>),
    Flat(Vec<&'a str>),
    Mixed(Vec<Item<'a>>),
}

enum Item<'a> {
    Tag(&'a str),
    List(Vec<&'a str>),
}

fn parse_seq<'a>(args: &Args<'a>, key: &str) -> Result<Seq<'a>> {
    let wrong =
        || MetricError::type_error(format!("{}: argument '{key}' must be a list of lists of strings", args.metric()));
    let v = args.required(key)?.as_array().ok_or_else(wrong)?;
    let items: Vec<Item<'a>> = v
        .iter()
        .map(|x| match x {
            Value::String(s) => Ok(Item::Tag(s.as_str())),
            Value::Array(a) => a.iter().map(|t| t.as_str().ok_or_else(wrong)).collect::<Result<_>>().map(Item::List),
            _ => Err(wrong()),
        })
        .collect::<Result<_>>()?;
    let lists = items.iter().filter(|i| matches!(i, Item::List(_))).count();
    Ok(if lists == items.len() && !items.is_empty() {
        Seq::Nested(items.into_iter().map(|i| if let Item::List(l) = i { l } else { Vec::new() }).collect())
    } else if lists == 0 {
        Seq::Flat(items.into_iter().map(|i| if let Item::Tag(t) = i { t } else { "" }).collect())
    } else {
        Seq::Mixed(items)
    })
}

/// The sentences when every element is a list (the scoring functions' `check_consistent_length`).
type Sentences<'a> = Vec<Vec<&'a str>>;
type Tokens<'a> = Vec<Option<&'a str>>;

fn nested_pair<'a>(t: Seq<'a>, p: Seq<'a>) -> Result<(Sentences<'a>, Sentences<'a>)> {
    let lists = |s: Seq<'a>| match s {
        Seq::Nested(v) => Some(v),
        Seq::Flat(v) if v.is_empty() => Some(Vec::new()),
        _ => None,
    };
    match (lists(t), lists(p)) {
        (Some(t), Some(p)) if !(t.is_empty() && p.is_empty()) => Ok((t, p)),
        _ => Err(not_list_of_lists()),
    }
}

/// Tokens after seqeval's flattening in `accuracy_score`/`performance_measure`: if `y_true` has a list,
/// both sides are flattened one level (a string then yields its characters); `None` is a list element.
fn flat_tokens<'a>(s: &Seq<'a>, flatten: bool) -> Tokens<'a> {
    let chars = |t: &'a str| t.char_indices().map(move |(i, c)| Some(&t[i..i + c.len_utf8()]));
    match s {
        Seq::Flat(v) if flatten => v.iter().flat_map(|t| chars(t)).collect(),
        Seq::Flat(v) => v.iter().map(|t| Some(*t)).collect(),
        Seq::Nested(v) if flatten => v.iter().flatten().map(|t| Some(*t)).collect(),
        Seq::Nested(v) => v.iter().map(|_| None).collect(),
        Seq::Mixed(items) => items
            .iter()
            .flat_map(|i| -> Box<dyn Iterator<Item = Option<&'a str>> + '_> {
                match (i, flatten) {
                    (Item::Tag(t), true) => Box::new(chars(t)),
                    (Item::Tag(t), false) => Box::new(std::iter::once(Some(*t))),
                    (Item::List(l), true) => Box::new(l.iter().map(|t| Some(*t))),
                    (Item::List(_), false) => Box::new(std::iter::once(None)),
                }
            })
            .collect(),
    }
}

fn token_pairs<'a>(args: &Args<'a>) -> Result<(Tokens<'a>, Tokens<'a>)> {
    let (t, p) = (parse_seq(args, "y_true")?, parse_seq(args, "y_pred")?);
    let flatten = matches!(t, Seq::Nested(_) | Seq::Mixed(_));
    Ok((flat_tokens(&t, flatten), flat_tokens(&p, flatten)))
}

/// `get_entities` on any JSON sequence: a mix of lists and strings fails like Python's `str + list`.
fn entities_of(seq: &Seq, suffix: bool) -> Result<Vec<Entity>> {
    match seq {
        Seq::Nested(v) => get_entities_nested(v, suffix),
        Seq::Flat(v) => get_entities(v, suffix),
        Seq::Mixed(_) => Err(MetricError::type_error("can only concatenate str (not \"list\") to str")),
    }
}

/// seqeval's `zero_division`: "warn", 0 (or False) give 0 on a zero denominator, anything else gives 1.
fn zero_division(args: &Args) -> ZeroDivision {
    match args.get("zero_division") {
        None => ZeroDivision::Warn,
        Some(Value::String(s)) if s == "warn" => ZeroDivision::Warn,
        Some(Value::Bool(false)) => ZeroDivision::Zero,
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => ZeroDivision::Zero,
        Some(_) => ZeroDivision::One,
    }
}

fn average(args: &Args, default: Option<&str>) -> Result<Average> {
    let bad = || check_average(Average::Samples).map(|_| Average::None);
    match args.get("average") {
        None => Ok(Average::parse(default)?),
        Some(Value::Null) => Ok(Average::None),
        Some(Value::String(s)) => match s.as_str() {
            "micro" | "macro" | "weighted" => Average::parse(Some(s)),
            _ => bad(),
        },
        Some(_) => bad(),
    }
}

fn options(args: &Args) -> Result<Options> {
    let scheme = args.opt_str("scheme")?.map(Scheme::from_name).transpose()?;
    Ok(Options {
        suffix: args.bool("suffix", false)?,
        strict: args.get("mode").and_then(Value::as_str) == Some("strict"),
        scheme,
        zero_division: zero_division(args),
    })
}

/// Python truthiness of an optional keyword (absent is false).
fn flag(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|x| x != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
    }
}

fn scores_json(s: Scores) -> Value {
    match s {
        Scores::Averaged { precision, recall, fscore, support } => {
            json!([num(precision), num(recall), num(fscore), support])
        }
        Scores::PerClass { precision, recall, fscore, support, .. } => {
            json!([nums(&precision), nums(&recall), nums(&fscore), support])
        }
    }
}

fn score_json(s: Score) -> Value {
    match s {
        Score::Averaged(x) => num(x),
        Score::PerClass(v) => nums(&v),
    }
}

const SCORE_ARGS: &[&str] =
    &["y_true", "y_pred", "average", "suffix", "mode", "sample_weight", "zero_division", "scheme"];

pub(crate) fn dispatch(name: &str, args: &Args) -> Option<Result<Value>> {
    let name = name.strip_prefix("seqeval.")?;
    Some(match name {
        "get_entities" => (|| {
            args.check_known(&["seq", "suffix"])?;
            let suffix = args.bool("suffix", false)?;
            let entities = entities_of(&parse_seq(args, "seq")?, suffix)?;
            Ok(Value::Array(entities.into_iter().map(|(t, s, e)| json!([t, s, e])).collect()))
        })(),
        "accuracy_score" => (|| {
            args.check_known(&["y_true", "y_pred"])?;
            let (t, p) = token_pairs(args)?;
            let correct = t.iter().zip(&p).filter(|(a, b)| a.is_some() && a == b).count();
            if t.is_empty() {
                return Err(MetricError::ZeroDivision("division by zero".into()));
            }
            Ok(num(correct as f64 / t.len() as f64))
        })(),
        "performance_measure" => (|| {
            args.check_known(&["y_true", "y_pred"])?;
            let (t, p) = token_pairs(args)?;
            let [tp, fp, fn_, tn] = perf_counts(t.into_iter().zip(p));
            Ok(json!({"TP": tp, "FP": fp, "FN": fn_, "TN": tn}))
        })(),
        "precision_score" | "recall_score" | "f1_score" => (|| {
            args.check_known(SCORE_ARGS)?;
            let opts = options(args)?;
            let avg = average(args, Some("micro"))?;
            let (t, p) = nested_pair(parse_seq(args, "y_true")?, parse_seq(args, "y_pred")?)?;
            let s = match name {
                "precision_score" => precision_score(&t, &p, avg, &opts)?,
                "recall_score" => recall_score(&t, &p, avg, &opts)?,
                _ => f1_score(&t, &p, avg, &opts)?,
            };
            Ok(score_json(s))
        })(),
        "precision_recall_fscore_support" => (|| {
            args.check_known(&[
                "y_true",
                "y_pred",
                "average",
                "warn_for",
                "beta",
                "sample_weight",
                "zero_division",
                "suffix",
            ])?;
            let opts = Options {
                suffix: args.bool("suffix", false)?,
                zero_division: zero_division(args),
                ..Options::default()
            };
            let beta = args.f64("beta", 1.0)?;
            check_beta(beta)?;
            let avg = average(args, None)?;
            let (t, p) = nested_pair(parse_seq(args, "y_true")?, parse_seq(args, "y_pred")?)?;
            Ok(scores_json(precision_recall_fscore_support(&t, &p, avg, beta, &opts)?))
        })(),
        "v1.precision_recall_fscore_support" => (|| {
            // The reference takes `**kwargs` (so `mode`, `parallel`, ... are accepted and ignored); only the
            // precomputed `entities_true` / `entities_pred` it reads from them are not supported.
            for key in ["entities_true", "entities_pred"] {
                if flag(args.get(key)) {
                    return Err(MetricError::type_error(format!(
                        "{}: precomputed '{key}' (seqeval Entities objects) are not supported",
                        args.metric()
                    )));
                }
            }
            args.required("y_true")?;
            args.required("y_pred")?;
            let scheme = args.opt_str("scheme")?.map(Scheme::from_name).transpose()?;
            let opts = Options {
                suffix: args.bool("suffix", false)?,
                strict: true,
                scheme,
                zero_division: zero_division(args),
            };
            let beta = args.f64("beta", 1.0)?;
            check_beta(beta)?;
            let avg = average(args, None)?;
            let (t, p) = nested_pair(parse_seq(args, "y_true")?, parse_seq(args, "y_pred")?)?;
            check_consistent_length(&t, &p)?;
            if opts.scheme.is_none() {
                // `Entities(y_true, None)` calls the scheme class to build its first token.
                return Err(MetricError::type_error("'NoneType' object is not callable"));
            }
            Ok(scores_json(precision_recall_fscore_support(&t, &p, avg, beta, &opts)?))
        })(),
        "classification_report" => (|| {
            args.check_known(&[
                "y_true",
                "y_pred",
                "digits",
                "suffix",
                "output_dict",
                "mode",
                "sample_weight",
                "zero_division",
                "scheme",
            ])?;
            let opts = options(args)?;
            let output_dict = args.bool("output_dict", false)?;
            let digits = match args.some("digits") {
                None => 2,
                Some(v) => v.as_i64().ok_or_else(|| MetricError::type_error("digits must be an integer"))?,
            };
            crate::json::check_digits(digits.max(0) as u64)?;
            let (t, p) = (parse_seq(args, "y_true")?, parse_seq(args, "y_pred")?);
            let consistent = matches!((&t, &p), (Seq::Nested(a), Seq::Nested(b))
                if a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.len() == y.len()));
            if !opts.strict && !consistent {
                // The default path extracts the type names (and fails on a bad tag, or on no types in text
                // mode) before it checks that the inputs are lists of lists.
                let has_types = !entities_of(&t, opts.suffix)?.is_empty() | !entities_of(&p, opts.suffix)?.is_empty();
                if !has_types && !output_dict {
                    return Err(MetricError::value("max() arg is an empty sequence"));
                }
            }
            let (t, p) = nested_pair(t, p)?;
            let report = classification_report(&t, &p, &opts)?;
            if output_dict {
                Ok(report.to_json())
            } else {
                report.text(digits).map(Value::String)
            }
        })(),
        _ => return None,
    })
}
