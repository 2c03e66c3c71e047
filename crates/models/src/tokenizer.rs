//! Tokenizers through the `tokenizers` crate: `tokenizer.json` when the model has one, otherwise the BERT
//! WordPiece pipeline `transformers` builds from `vocab.txt` (+ `tokenizer_config.json`).
//!
//! Encoding matches `transformers`' `tokenizer(text[, pair], truncation=True, max_length=N)`: special tokens
//! added by the post-processor, truncation `longest_first` for pairs, no padding (batching pads later).

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, EncodeInput, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// Errors loading a tokenizer or encoding text.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{dir}: no tokenizer found (neither tokenizer.json nor vocab.txt)")]
    NotFound { dir: PathBuf },
    #[error("{path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("encoding failed: {message}")]
    Encode { message: String },
}

/// Where the tokenizer came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerSource {
    TokenizerJson(PathBuf),
    VocabTxt(PathBuf),
}

/// One encoded text (or text pair), unpadded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Encoding {
    pub input_ids: Vec<u32>,
    /// Segment ids: 0 for the first text (and its special tokens), 1 for the second.
    pub token_type_ids: Vec<u32>,
    pub attention_mask: Vec<u32>,
    /// For each token the index of the word it came from within its own text; None for special tokens.
    /// Used to align word-level labels (NER) with tokens.
    pub word_ids: Vec<Option<u32>>,
}

impl Encoding {
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    fn from_tk(e: &tokenizers::Encoding) -> Self {
        Encoding {
            input_ids: e.get_ids().to_vec(),
            token_type_ids: e.get_type_ids().to_vec(),
            attention_mask: e.get_attention_mask().to_vec(),
            word_ids: e.get_word_ids().to_vec(),
        }
    }
}

/// A text tokenizer with its truncation setting.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    source: TokenizerSource,
    max_length: Option<usize>,
    /// `model_max_length` from `tokenizer_config.json`, when given.
    pub model_max_length: Option<usize>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("source", &self.source)
            .field("max_length", &self.max_length)
            .field("vocab_size", &self.inner.get_vocab_size(true))
            .finish()
    }
}

/// Runs a call into the `tokenizers` crate, which panics on some malformed `tokenizer.json` files (at load
/// and at encode time); its panic becomes an error message instead of aborting the caller.
pub(crate) fn no_panic<T, E: std::fmt::Display>(call: impl FnOnce() -> Result<T, E>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(format!("the tokenizer is malformed (tokenizers panicked: {})", what.replace('\n', " ")))
        }
    }
}

/// Loads a `tokenizer.json` through the `tokenizers` crate (its panics become errors) and refuses a model
/// vocabulary that gives one id to two tokens or an id beyond its entries: no real tokenizer has either.
pub(crate) fn load_tokenizer_json(path: &Path) -> Result<Tokenizer, TokenizerError> {
    let t = no_panic(|| Tokenizer::from_file(path)).map_err(|e| load_err(path, e))?;
    let vocab = tokenizers::Model::get_vocab(t.get_model());
    let mut by_id: std::collections::HashMap<u32, &String> = std::collections::HashMap::with_capacity(vocab.len());
    // Ids are dense in every real tokenizer (model vocabulary, then added tokens); an id far beyond the entries
    // makes the crate size tables by it (megabytes for a kilobyte file, found by fuzzing).
    let entries = vocab.len() + t.get_added_tokens_decoder().len();
    for (token, &id) in &vocab {
        if id as usize >= entries {
            return Err(load_err(path, format!("model.vocab gives {token:?} id {id}, beyond its {entries} entries")));
        }
        if let Some(other) = by_id.insert(id, token) {
            let (a, b) = if other < token { (other, token) } else { (token, other) };
            return Err(load_err(path, format!("model.vocab gives id {id} to both {a:?} and {b:?}")));
        }
    }
    Ok(t)
}

fn load_err(path: &Path, message: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Load { path: path.to_path_buf(), message: message.to_string() }
}

/// The parts of `tokenizer_config.json` the vocab.txt pipeline needs (with `BertTokenizer`'s defaults).
struct BertOptions {
    do_lower_case: bool,
    tokenize_chinese_chars: bool,
    strip_accents: Option<bool>,
    unk: String,
    sep: String,
    pad: String,
    cls: String,
    mask: String,
    model_max_length: Option<usize>,
}

impl BertOptions {
    fn read(path: Option<&Path>) -> Result<Self, TokenizerError> {
        let mut o = BertOptions {
            do_lower_case: true,
            tokenize_chinese_chars: true,
            strip_accents: None,
            unk: "[UNK]".into(),
            sep: "[SEP]".into(),
            pad: "[PAD]".into(),
            cls: "[CLS]".into(),
            mask: "[MASK]".into(),
            model_max_length: None,
        };
        let Some(path) = path else { return Ok(o) };
        let text = std::fs::read_to_string(path).map_err(|e| load_err(path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| load_err(path, format!("not valid JSON: {e}")))?;
        let Value::Object(m) = v else { return Err(load_err(path, "expected a JSON object")) };
        let boolean = |k: &str| -> Result<Option<bool>, TokenizerError> {
            match m.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Bool(b)) => Ok(Some(*b)),
                Some(other) => Err(load_err(path, format!("field `{k}`: expected a boolean, got {other}"))),
            }
        };
        // Special tokens appear as strings or as AddedToken objects {"content": ...}.
        let token = |k: &str, slot: &mut String| -> Result<(), TokenizerError> {
            match m.get(k) {
                None | Some(Value::Null) => Ok(()),
                Some(Value::String(s)) => {
                    *slot = s.clone();
                    Ok(())
                }
                Some(Value::Object(t)) => match t.get("content") {
                    Some(Value::String(s)) => {
                        *slot = s.clone();
                        Ok(())
                    }
                    _ => Err(load_err(path, format!("field `{k}`: token object without string `content`"))),
                },
                Some(other) => Err(load_err(path, format!("field `{k}`: expected a token string, got {other}"))),
            }
        };
        if let Some(b) = boolean("do_lower_case")? {
            o.do_lower_case = b;
        }
        if let Some(b) = boolean("tokenize_chinese_chars")? {
            o.tokenize_chinese_chars = b;
        }
        o.strip_accents = boolean("strip_accents")?;
        token("unk_token", &mut o.unk)?;
        token("sep_token", &mut o.sep)?;
        token("pad_token", &mut o.pad)?;
        token("cls_token", &mut o.cls)?;
        token("mask_token", &mut o.mask)?;
        // Absurdly large values (transformers writes 1e30 for "no limit") mean no limit.
        o.model_max_length = m.get("model_max_length").and_then(Value::as_u64).and_then(|n| usize::try_from(n).ok());
        Ok(o)
    }
}

/// Reads `vocab.txt` as `transformers` does: one token per line, id = line number, a later duplicate wins.
fn read_vocab(path: &Path) -> Result<ahash::AHashMap<String, u32>, TokenizerError> {
    let text = std::fs::read_to_string(path).map_err(|e| load_err(path, e))?;
    let mut vocab = ahash::AHashMap::new();
    let body = text.strip_suffix('\n').unwrap_or(&text);
    if body.is_empty() {
        return Err(load_err(path, "empty vocabulary"));
    }
    for (i, line) in body.split('\n').enumerate() {
        let id = u32::try_from(i).map_err(|_| load_err(path, "too many lines"))?;
        vocab.insert(line.strip_suffix('\r').unwrap_or(line).to_string(), id);
    }
    Ok(vocab)
}

impl TextTokenizer {
    /// Loads the tokenizer of a model directory: `tokenizer.json` if present, else `vocab.txt` (BERT
    /// WordPiece, configured from `tokenizer_config.json` when present).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let dir = dir.as_ref();
        let config = dir.join("tokenizer_config.json");
        let config = config.is_file().then_some(config);
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            let mut t = Self::from_tokenizer_json(&json)?;
            if let Some(c) = &config {
                t.model_max_length = BertOptions::read(Some(c))?.model_max_length;
            }
            return Ok(t);
        }
        let vocab = dir.join("vocab.txt");
        if vocab.is_file() {
            return Self::from_vocab_txt(&vocab, config.as_deref());
        }
        Err(TokenizerError::NotFound { dir: dir.to_path_buf() })
    }

    /// Loads a `tokenizer.json`. Truncation and padding stored in the file are cleared, as `transformers` does
    /// at call time; set truncation with [`TextTokenizer::set_max_length`].
    pub fn from_tokenizer_json(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(load_err(path, "no such file"));
        }
        let mut inner = load_tokenizer_json(path)?;
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| load_err(path, e))?;
        Ok(TextTokenizer {
            inner,
            source: TokenizerSource::TokenizerJson(path.to_path_buf()),
            max_length: None,
            model_max_length: None,
        })
    }

    /// Builds BERT's WordPiece tokenizer from `vocab.txt` the way `transformers`' `BertTokenizer` does:
    /// BertNormalizer (lowercase per `do_lower_case`), BertPreTokenizer, WordPiece with `##` continuation,
    /// and the template `[CLS] $A [SEP]` / `[CLS] $A [SEP] $B [SEP]`.
    pub fn from_vocab_txt(vocab: impl AsRef<Path>, tokenizer_config: Option<&Path>) -> Result<Self, TokenizerError> {
        let vocab_path = vocab.as_ref();
        let o = BertOptions::read(tokenizer_config)?;
        let vocab = read_vocab(vocab_path)?;
        let id = |t: &str| {
            vocab
                .get(t)
                .copied()
                .ok_or_else(|| load_err(vocab_path, format!("special token {t:?} is not in the vocabulary")))
        };
        let (cls_id, sep_id) = (id(&o.cls)?, id(&o.sep)?);
        id(&o.unk)?;
        let specials: Vec<AddedToken> = [&o.pad, &o.unk, &o.cls, &o.sep, &o.mask]
            .into_iter()
            .filter(|t| vocab.contains_key(t.as_str()))
            .map(|t| AddedToken::from(t.clone(), true))
            .collect();
        let model = WordPiece::builder()
            .vocab(vocab)
            .unk_token(o.unk.clone())
            .continuing_subword_prefix("##".into())
            .max_input_chars_per_word(100)
            .build()
            .map_err(|e| load_err(vocab_path, e))?;
        let template = TemplateProcessing::builder()
            .try_single(format!("{}:0 $A:0 {}:0", o.cls, o.sep))
            .and_then(|b| b.try_pair(format!("{}:0 $A:0 {}:0 $B:1 {}:1", o.cls, o.sep, o.sep)))
            .map_err(|e| load_err(vocab_path, e))?
            .special_tokens(vec![(o.cls.clone(), cls_id), (o.sep.clone(), sep_id)])
            .build()
            .map_err(|e| load_err(vocab_path, e))?;
        let mut inner = Tokenizer::new(model);
        inner
            .with_normalizer(Some(BertNormalizer::new(
                true,
                o.tokenize_chinese_chars,
                o.strip_accents,
                o.do_lower_case,
            )))
            .map_err(|e| load_err(vocab_path, e))?;
        inner.with_pre_tokenizer(Some(BertPreTokenizer));
        inner.with_post_processor(Some(template));
        inner.with_decoder(Some(tokenizers::decoders::wordpiece::WordPiece::default()));
        inner.add_special_tokens(specials).map_err(|e| load_err(vocab_path, e))?;
        Ok(TextTokenizer {
            inner,
            source: TokenizerSource::VocabTxt(vocab_path.to_path_buf()),
            max_length: None,
            model_max_length: o.model_max_length,
        })
    }

    pub fn source(&self) -> &TokenizerSource {
        &self.source
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The underlying `tokenizers` tokenizer, for what this wrapper does not expose.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    pub fn max_length(&self) -> Option<usize> {
        self.max_length
    }

    /// Truncates every later encoding to `max_length` tokens, special tokens included (`longest_first` for
    /// pairs: the longer text loses a token at a time, as `transformers`). None disables truncation.
    /// A max_length below the special-token count of a single text is an error (the crate would underflow).
    pub fn set_max_length(&mut self, max_length: Option<usize>) -> Result<(), TokenizerError> {
        use tokenizers::PostProcessor;
        let specials = self.inner.get_post_processor().map_or(0, |pp| pp.added_tokens(false));
        if let Some(max) = max_length.filter(|&m| m < specials) {
            return Err(TokenizerError::Encode {
                message: format!("max_length {max} is smaller than the {specials} special tokens of a single text"),
            });
        }
        let params = max_length.map(|max_length| TruncationParams {
            direction: TruncationDirection::Right,
            max_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        });
        self.inner.with_truncation(params).map_err(|e| TokenizerError::Encode { message: e.to_string() })?;
        self.max_length = max_length;
        Ok(())
    }

    /// Encodes one text with special tokens.
    pub fn encode(&self, text: &str) -> Result<Encoding, TokenizerError> {
        self.encode_input(EncodeInput::Single(text.into()))
    }

    /// Encodes a text pair (`[CLS] a [SEP] b [SEP]` for BERT).
    pub fn encode_pair(&self, a: &str, b: &str) -> Result<Encoding, TokenizerError> {
        self.encode_input(EncodeInput::Dual(a.into(), b.into()))
    }

    /// The crate subtracts the special-token count from max_length unchecked; refuse budgets that small.
    fn check_budget(&self, is_pair: bool) -> Result<(), TokenizerError> {
        use tokenizers::PostProcessor;
        let (Some(max), Some(pp)) = (self.max_length, self.inner.get_post_processor()) else { return Ok(()) };
        let specials = pp.added_tokens(is_pair);
        if max < specials {
            return Err(TokenizerError::Encode {
                message: format!(
                    "max_length {max} is smaller than the {specials} special tokens a {} needs",
                    if is_pair { "pair" } else { "single text" }
                ),
            });
        }
        Ok(())
    }

    fn encode_input(&self, input: EncodeInput<'_>) -> Result<Encoding, TokenizerError> {
        self.check_budget(matches!(input, EncodeInput::Dual(..)))?;
        let e = no_panic(|| self.inner.encode(input, true)).map_err(|message| TokenizerError::Encode { message })?;
        Ok(Encoding::from_tk(&e))
    }

    /// Encodes many texts in parallel (rayon, through the crate's `encode_batch`).
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Encoding>, TokenizerError> {
        let inputs: Vec<EncodeInput<'_>> = texts.iter().map(|t| EncodeInput::Single((*t).into())).collect();
        self.batch(inputs)
    }

    /// Encodes many text pairs in parallel.
    pub fn encode_pair_batch(&self, pairs: &[(&str, &str)]) -> Result<Vec<Encoding>, TokenizerError> {
        let inputs: Vec<EncodeInput<'_>> =
            pairs.iter().map(|(a, b)| EncodeInput::Dual((*a).into(), (*b).into())).collect();
        self.batch(inputs)
    }

    fn batch(&self, inputs: Vec<EncodeInput<'_>>) -> Result<Vec<Encoding>, TokenizerError> {
        if let Some(first) = inputs.first() {
            self.check_budget(matches!(first, EncodeInput::Dual(..)))?;
        }
        let out =
            no_panic(|| self.inner.encode_batch(inputs, true)).map_err(|message| TokenizerError::Encode { message })?;
        Ok(out.iter().map(Encoding::from_tk).collect())
    }
}
