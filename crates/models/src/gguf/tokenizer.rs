//! The tokenizer stored in GGUF metadata (`tokenizer.ggml.*`), rebuilt as a `tokenizers::Tokenizer`.
//!
//! Supported: `tokenizer.ggml.model = "gpt2"` (byte-level BPE) with `tokenizer.ggml.pre` one of `default`,
//! `gpt2` or `gpt-2` (llama.cpp's name; the GPT-2 split regex of the ByteLevel pre-tokenizer), `smollm` (digits
//! split one by one, then the GPT-2 regex, as llama.cpp and SmolLM's own `tokenizer.json` do) or `llama-bpe`
//! (also `llama3`, `llama-v3`: Llama 3's split regex, then bytes, and whole words in the vocabulary taken as they
//! are, Llama 3's `tokenizer.json` and llama.cpp's `ignore_merges`) or `qwen2` (Qwen2's split regex, digits one by
//! one, after Qwen2's NFC normalizer). Other models (`llama` SentencePiece, `bert`, `t5`, ...) and other
//! pre-tokenizer types (`deepseek-llm`, `tekken`, ...) are rejected with an error naming them rather than
//! approximated.
//!
//! Two choices differ from one of the references, on purpose:
//! - `smollm` splits digits one by one (llama.cpp and SmolLM's `tokenizer.json` do; transformers' GGUF loader
//!   does not). The ids differ only when the vocabulary merges digits, which SmolLM's does not.
//! - `default` (and an absent `tokenizer.ggml.pre`) uses the GPT-2 ByteLevel regex, as transformers does;
//!   llama.cpp's own `default` BPE split is a Llama-3-like regex instead.
//! - `qwen2` applies NFC first, as Qwen2's own `tokenizer.json` (and transformers' GGUF loader) does; llama.cpp
//!   does not normalize. The ids differ only on text that is not already NFC.

use ahash::AHashMap;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::reader::{GgufFile, MetaArray};
use super::GgufError;

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// `tokenizer.ggml.pre` values this loader reproduces.
pub const SUPPORTED_PRE_TOKENIZERS: &[&str] =
    &["default", "gpt2", "gpt-2", "smollm", "llama-bpe", "llama3", "llama-v3", "qwen2"];

/// The split regex of Llama 3's `tokenizer.json` (`Split`, `Isolated`, before a `ByteLevel` without its own
/// regex); llama.cpp's `llama-bpe` is the same expression with the case-insensitive group spelt out.
pub const LLAMA3_SPLIT_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The split regex of Qwen2's `tokenizer.json`: Llama 3's with digits one by one.
pub const QWEN2_SPLIT_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A tokenizer rebuilt from GGUF metadata.
#[derive(Clone)]
pub struct GgufTokenizer {
    pub tokenizer: Tokenizer,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// Whether encoding prepends BOS / appends EOS (`tokenizer.ggml.add_bos_token` / `add_eos_token`); the
    /// post-processor already does it.
    pub add_bos_token: bool,
    pub add_eos_token: bool,
}

impl std::fmt::Debug for GgufTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufTokenizer")
            .field("vocab_size", &self.tokenizer.get_vocab_size(true))
            .field("bos_token_id", &self.bos_token_id)
            .field("eos_token_id", &self.eos_token_id)
            .finish()
    }
}

fn strings<'a>(file: &'a GgufFile, key: &str) -> Result<Option<&'a [String]>, GgufError> {
    match file.get_array(key)? {
        None => Ok(None),
        Some(MetaArray::String(v)) => Ok(Some(v)),
        Some(_) => Err(file.key_err(key, "expected an array of strings")),
    }
}

/// Builds the tokenizer described by the metadata; Ok(None) when the file has no `tokenizer.ggml.model`.
pub fn gguf_tokenizer(file: &GgufFile) -> Result<Option<GgufTokenizer>, GgufError> {
    let unsupported = |message: String| GgufError::Unsupported { path: file.path().to_path_buf(), message };
    let Some(model) = file.get_str("tokenizer.ggml.model")? else { return Ok(None) };
    if model != "gpt2" {
        return Err(unsupported(format!("tokenizer model `{model}` (only `gpt2` byte-level BPE is supported)")));
    }
    let pre = file.get_str("tokenizer.ggml.pre")?.unwrap_or("default");
    if !SUPPORTED_PRE_TOKENIZERS.contains(&pre) {
        return Err(unsupported(format!(
            "pre-tokenizer `{pre}` (tokenizer.ggml.pre; supported: {})",
            SUPPORTED_PRE_TOKENIZERS.join(", ")
        )));
    }
    let tokens_key = "tokenizer.ggml.tokens";
    let tokens = strings(file, tokens_key)?.ok_or_else(|| file.key_err(tokens_key, "missing"))?;
    let n = tokens.len();
    if u32::try_from(n).is_err() {
        return Err(file.key_err(tokens_key, format!("{n} tokens do not fit u32 ids")));
    }
    let types_key = "tokenizer.ggml.token_type";
    let types = match file.get_array(types_key)? {
        None => vec![1; n],
        Some(a) => {
            let t = a.to_i64s().ok_or_else(|| file.key_err(types_key, "expected an array of integers"))?;
            if t.len() != n {
                return Err(file.key_err(types_key, format!("{} types for {n} tokens", t.len())));
            }
            t
        }
    };
    let merges_key = "tokenizer.ggml.merges";
    let merges = strings(file, merges_key)?.ok_or_else(|| file.key_err(merges_key, "missing (required for BPE)"))?;
    let merges = merges
        .iter()
        .enumerate()
        .map(|(i, m)| match m.split_once(' ') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => Ok((a.to_owned(), b.to_owned())),
            _ => Err(file.key_err(merges_key, format!("merge {i} `{m}` is not two tokens separated by one space"))),
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut vocab: AHashMap<String, u32> = AHashMap::with_capacity(n);
    for (id, tok) in tokens.iter().enumerate() {
        // First occurrence wins, as in llama.cpp's token-to-id map.
        vocab.entry(tok.clone()).or_insert(id as u32);
    }
    let llama3 = matches!(pre, "llama-bpe" | "llama3" | "llama-v3");
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(llama3)
        .build()
        .map_err(|e| file.key_err(merges_key, format!("cannot build BPE: {e}")))?;
    let mut tk = Tokenizer::new(bpe);
    let byte_level = ByteLevel::new(false, true, true);
    let pre_tokenizer: PreTokenizerWrapper = if pre == "smollm" {
        Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
    } else if llama3 || pre == "qwen2" {
        let regex = if llama3 { LLAMA3_SPLIT_REGEX } else { QWEN2_SPLIT_REGEX };
        let split = Split::new(SplitPattern::Regex(regex.into()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| file.key_err("tokenizer.ggml.pre", format!("split regex: {e}")))?;
        Sequence::new(vec![split.into(), ByteLevel::new(false, true, false).into()]).into()
    } else {
        byte_level.into()
    };
    tk.with_pre_tokenizer(Some(pre_tokenizer));
    if pre == "qwen2" {
        tk.with_normalizer(Some(NFC))
            .map_err(|e| file.key_err("tokenizer.ggml.pre", format!("NFC normalizer: {e}")))?;
    }
    tk.with_decoder(Some(ByteLevelDecoder::default()));

    let special: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL)
        .map(|(tok, _)| AddedToken::from(tok.clone(), true).normalized(false))
        .collect();
    tk.add_special_tokens(special).map_err(|e| file.key_err(types_key, format!("adding control tokens: {e}")))?;
    let user: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, &t)| t == TOKEN_TYPE_USER_DEFINED)
        .map(|(tok, _)| AddedToken::from(tok.clone(), false).normalized(false))
        .collect();
    tk.add_tokens(user).map_err(|e| file.key_err(types_key, format!("adding user-defined tokens: {e}")))?;

    let id = |key: &str| -> Result<Option<u32>, GgufError> {
        match file.get_u64(key)? {
            None => Ok(None),
            Some(v) if (v as usize) < n => Ok(Some(v as u32)),
            Some(v) => Err(file.key_err(key, format!("token id {v} is outside the {n}-token vocabulary"))),
        }
    };
    let bos_token_id = id("tokenizer.ggml.bos_token_id")?;
    let eos_token_id = id("tokenizer.ggml.eos_token_id")?;
    let add_bos_token = file.get_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false);
    let add_eos_token = file.get_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
    let mut pieces = Vec::new();
    let mut specials = Vec::new();
    for (add, tok_id, key, before) in [
        (add_bos_token, bos_token_id, "tokenizer.ggml.bos_token_id", true),
        (add_eos_token, eos_token_id, "tokenizer.ggml.eos_token_id", false),
    ] {
        if !add {
            continue;
        }
        let tok_id = tok_id.ok_or_else(|| file.key_err(key, "missing, but the file asks to add it"))?;
        let tok = tokens[tok_id as usize].clone();
        pieces.push((before, format!("{tok}:0")));
        specials.push((tok, tok_id));
    }
    let single: Vec<String> = pieces
        .iter()
        .filter(|(before, _)| *before)
        .map(|(_, p)| p.clone())
        .chain(std::iter::once("$A:0".to_owned()))
        .chain(pieces.iter().filter(|(before, _)| !*before).map(|(_, p)| p.clone()))
        .collect();
    if !specials.is_empty() {
        let post = TemplateProcessing::builder()
            .try_single(single)
            .map_err(|e| file.key_err("tokenizer.ggml.add_bos_token", format!("post-processor: {e}")))?
            .special_tokens(specials)
            .build()
            .map_err(|e| file.key_err("tokenizer.ggml.add_bos_token", format!("post-processor: {e}")))?;
        tk.with_post_processor(Some(post));
    }
    Ok(Some(GgufTokenizer { tokenizer: tk, bos_token_id, eos_token_id, add_bos_token, add_eos_token }))
}
