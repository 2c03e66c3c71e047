//! Princeton WordNet 3.0 in its database files (`index.*`, `data.*`, `*.exc`, as Debian's `wordnet-base`
//! installs them), read for synonyms: the lemma names of every synset of a word, found through NLTK's `morphy`
//! (exception list, else suffix rules), so `synonyms` gives what `nltk.corpus.wordnet.synsets(word)` does.
//!
//! Written here rather than taken from a crate: no maintained crate reads the WordNet database with NLTK's
//! lemmatisation, and the format is small (wndb(5)). The data files stay in memory as bytes and a synset is
//! parsed from its line when asked for (the index stores byte offsets into the data files).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};

/// Parts of speech in NLTK's `POS_LIST` order: noun, verb, adjective, adverb.
const POS: [(&str, char); 4] = [("noun", 'n'), ("verb", 'v'), ("adj", 'a'), ("adv", 'r')];

/// NLTK's `MORPHOLOGICAL_SUBSTITUTIONS` per part of speech (suffix, replacement), in its order.
const SUBSTITUTIONS: [&[(&str, &str)]; 4] = [
    &[
        ("s", ""),
        ("ses", "s"),
        ("ves", "f"),
        ("xes", "x"),
        ("zes", "z"),
        ("ches", "ch"),
        ("shes", "sh"),
        ("men", "man"),
        ("ies", "y"),
    ],
    &[("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")],
    &[("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
    &[],
];

/// Largest database file accepted (the biggest, data.noun, is 15 MB).
const MAX_FILE_BYTES: u64 = 256 << 20;

pub struct WordNet {
    dir: PathBuf,
    /// lemma -> synset byte offsets per part of speech (index.*).
    index: HashMap<String, [Vec<u32>; 4]>,
    /// inflected form -> base forms per part of speech (*.exc).
    exceptions: [HashMap<String, Vec<String>>; 4],
    /// data.* bytes per part of speech.
    data: [Vec<u8>; 4],
}

fn read(path: &Path) -> Result<Vec<u8>> {
    let io = |e: std::io::Error| DataError::Invalid(format!("{}: {e}", path.display()));
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_FILE_BYTES {
        return Err(DataError::Invalid(format!(
            "{}: {len} bytes, more than a WordNet database file can be ({MAX_FILE_BYTES})",
            path.display()
        )));
    }
    std::fs::read(path).map_err(io)
}

/// Lines of a database file with their 1-based numbers, without the license header (lines starting with two
/// spaces) and blank lines.
fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with(b"  "))
}

impl WordNet {
    /// The WordNet folder: `explicit` when given, else Debian's `/usr/share/wordnet` (package `wordnet-base`),
    /// else `assets/wordnet` (scripts/fetch.sh wordnet).
    pub fn locate(explicit: Option<&Path>) -> Result<PathBuf> {
        if let Some(p) = explicit {
            return Ok(p.to_path_buf());
        }
        let candidates = [PathBuf::from("/usr/share/wordnet"), PathBuf::from("assets/wordnet")];
        candidates.iter().find(|p| p.join("data.noun").is_file()).cloned().ok_or_else(|| {
            DataError::Invalid(
                "WordNet not found in /usr/share/wordnet or assets/wordnet: install Debian's wordnet-base, run \
                 scripts/fetch.sh wordnet, or name the folder (--wordnet, augment.wordnet)"
                    .into(),
            )
        })
    }

    /// Reads `dir/index.{noun,verb,adj,adv}`, `dir/data.*` and `dir/*.exc`.
    pub fn open(dir: &Path) -> Result<WordNet> {
        let mut wn = WordNet {
            dir: dir.to_path_buf(),
            index: HashMap::new(),
            exceptions: Default::default(),
            data: Default::default(),
        };
        for (p, (name, _)) in POS.iter().enumerate() {
            let path = dir.join(format!("index.{name}"));
            let bytes = read(&path)?;
            for (n, line) in lines(&bytes) {
                wn.index_line(p, line).map_err(|why| {
                    DataError::Invalid(format!("{}:{n}: field `synset_offset`: {why}", path.display()))
                })?;
            }
            let path = dir.join(format!("{name}.exc"));
            let bytes = read(&path)?;
            for (_, line) in lines(&bytes) {
                let line = String::from_utf8_lossy(line);
                let mut words = line.split_whitespace().map(str::to_string);
                if let Some(form) = words.next() {
                    wn.exceptions[p].insert(form, words.collect());
                }
            }
            wn.data[p] = read(&dir.join(format!("data.{name}")))?;
        }
        if wn.index.is_empty() {
            return Err(DataError::Invalid(format!("{}: the WordNet index files hold no lemma", dir.display())));
        }
        Ok(wn)
    }

    /// `lemma pos synset_cnt p_cnt [ptr_symbol...] sense_cnt tagsense_cnt synset_offset...`
    fn index_line(&mut self, p: usize, line: &[u8]) -> std::result::Result<(), String> {
        let line = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_string())?;
        let f: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| -> std::result::Result<usize, String> {
            f.get(i).and_then(|s| s.parse().ok()).ok_or_else(|| format!("field {} is not a count", i + 1))
        };
        let synsets = num(2)?;
        let pointers = num(3)?;
        let first = 4 + pointers + 2;
        if f.len() != first + synsets {
            return Err(format!("{} fields, expected {} for {synsets} synsets", f.len(), first + synsets));
        }
        let offsets = f[first..]
            .iter()
            .map(|s| s.parse::<u32>().ok().filter(|&o| (o as usize) < MAX_FILE_BYTES as usize).ok_or(format!("{s:?}")))
            .collect::<std::result::Result<Vec<u32>, String>>()?;
        self.index.entry(f[0].to_string()).or_default()[p] = offsets;
        Ok(())
    }

    /// NLTK's `_morphy(form, pos)` (3.9): the form itself and either its exception-list bases or, for a form
    /// not in the list, each suffix rule applied once; those that WordNet lists for part of speech `p`.
    fn morphy(&self, form: &str, p: usize) -> Vec<String> {
        let mut forms = vec![form.to_string()];
        match self.exceptions[p].get(form) {
            Some(bases) => forms.extend(bases.iter().cloned()),
            None => forms.extend(
                SUBSTITUTIONS[p]
                    .iter()
                    .filter(|(old, _)| form.ends_with(old))
                    .map(|(old, new)| format!("{}{new}", &form[..form.len() - old.len()])),
            ),
        }
        let mut out: Vec<String> = Vec::new();
        for f in forms {
            if self.index.get(&f).is_some_and(|o| !o[p].is_empty()) && !out.contains(&f) {
                out.push(f);
            }
        }
        out
    }

    /// The lemma names of the synset at byte `offset` of data file `p`
    /// (`synset_offset lex_filenum ss_type w_cnt word lex_id [word lex_id...] ...`), adjective markers such as
    /// `(a)` removed as NLTK does.
    fn synset_lemmas(&self, p: usize, offset: u32) -> Result<Vec<String>> {
        let path = || self.dir.join(format!("data.{}", POS[p].0));
        let bad = |why: String| DataError::Invalid(format!("{}: synset at byte {offset}: {why}", path().display()));
        let data = &self.data[p];
        let start = offset as usize;
        if start >= data.len() {
            return Err(bad(format!("past the end of the file ({} bytes)", data.len())));
        }
        let end = data[start..].iter().position(|&b| b == b'\n').map_or(data.len(), |e| start + e);
        let line = std::str::from_utf8(&data[start..end]).map_err(|_| bad("not UTF-8".into()))?;
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first().and_then(|s| s.parse::<u32>().ok()) != Some(offset) {
            return Err(bad("the line there does not start with that offset".into()));
        }
        let count = f
            .get(3)
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .ok_or_else(|| bad("field `w_cnt` is not a hexadecimal count".into()))?;
        if f.len() < 4 + 2 * count {
            return Err(bad(format!("w_cnt {count} but only {} fields", f.len())));
        }
        Ok((0..count)
            .map(|i| {
                let w = f[4 + 2 * i];
                // NLTK: `re.match(r"(.*?)(\(.*\))?$", name)`: an adjective's syntactic marker is not part of it.
                match w.find('(') {
                    Some(k) if w.ends_with(')') => w[..k].to_string(),
                    _ => w.to_string(),
                }
            })
            .collect())
    }

    /// NLTK's `wordnet.synsets(word)`: the synsets of every base form of the lowercased word, nouns, verbs,
    /// adjectives, adverbs in turn, each as its lemma names.
    pub fn synsets(&self, word: &str) -> Result<Vec<Vec<String>>> {
        let word = word.to_lowercase();
        let mut out = Vec::new();
        for p in 0..POS.len() {
            for form in self.morphy(&word, p) {
                for &offset in self.index.get(&form).map(|o| o[p].as_slice()).unwrap_or(&[]) {
                    out.push(self.synset_lemmas(p, offset)?);
                }
            }
        }
        Ok(out)
    }

    /// EDA's `get_synonyms(word)`: every lemma name of every synset of `word`, `_` and `-` as spaces, lowercased,
    /// letters a-z and spaces only; without the word itself (and without names left empty). Sorted.
    pub fn synonyms(&self, word: &str) -> Result<Vec<String>> {
        let mut set = BTreeSet::new();
        for synset in self.synsets(word)? {
            for name in synset {
                let s: String = name
                    .replace(['_', '-'], " ")
                    .to_lowercase()
                    .chars()
                    .filter(|c| c.is_ascii_lowercase() || *c == ' ')
                    .collect();
                if !s.trim().is_empty() {
                    set.insert(s);
                }
            }
        }
        set.remove(word);
        Ok(set.into_iter().collect())
    }
}
