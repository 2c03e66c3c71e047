//! The data crate's [`CausalTokenize`] for decoder tokenizers: a Hugging Face tokenizer directory
//! (`tokenizer.json` + `tokenizer_config.json`, optionally `chat_template.jinja`) or the tokenizer stored in a GGUF
//! file, with its special tokens and chat template.

use std::path::Path;

use finetune_data::sft::CausalTokenize;
use finetune_data::DataError;
use serde_json::Value;
use tokenizers::Tokenizer;

use crate::gguf::{gguf_tokenizer, GgufFile, GgufTokenizer};
use crate::tokenizer::{no_panic, TokenizerError};

/// A causal-LM tokenizer with what SFT needs beside the vocabulary.
#[derive(Clone)]
pub struct CausalTokenizer {
    tokenizer: Tokenizer,
    bos: Option<(String, u32)>,
    eos: Option<(String, u32)>,
    pad: Option<u32>,
    chat_template: Option<String>,
    add_bos_token: bool,
}

impl std::fmt::Debug for CausalTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CausalTokenizer")
            .field("vocab_size", &self.tokenizer.get_vocab_size(true))
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("pad", &self.pad)
            .field("add_bos_token", &self.add_bos_token)
            .field("chat_template", &self.chat_template.is_some())
            .finish()
    }
}

fn load_err(path: &Path, message: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Load { path: path.to_path_buf(), message: message.to_string() }
}

/// A special token in `tokenizer_config.json`: a string or an AddedToken object `{"content": ...}`.
fn token_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

impl CausalTokenizer {
    /// Loads `dir/tokenizer.json` and `dir/tokenizer_config.json` (special tokens, `add_bos_token`,
    /// `chat_template`). A `chat_template.jinja` file, which newer `transformers` writes, takes precedence over
    /// the config's `chat_template`, as in `transformers`; of a list of named templates the `default` one is used.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let dir = dir.as_ref();
        let tj = dir.join("tokenizer.json");
        if !tj.is_file() {
            return Err(TokenizerError::NotFound { dir: dir.to_path_buf() });
        }
        let tokenizer = crate::tokenizer::load_tokenizer_json(&tj)?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: Value = if cfg_path.is_file() {
            let text = std::fs::read_to_string(&cfg_path).map_err(|e| load_err(&cfg_path, e))?;
            serde_json::from_str(&text).map_err(|e| load_err(&cfg_path, e))?
        } else {
            Value::Object(Default::default())
        };
        let lookup = |key: &str| -> Result<Option<(String, u32)>, TokenizerError> {
            match token_string(cfg.get(key)) {
                None => Ok(None),
                Some(s) => match tokenizer.token_to_id(&s) {
                    Some(id) => Ok(Some((s, id))),
                    None => Err(load_err(&cfg_path, format!("{key} {s:?} is not in the vocabulary"))),
                },
            }
        };
        let bos = lookup("bos_token")?;
        let eos = lookup("eos_token")?;
        let pad = lookup("pad_token")?.map(|p| p.1);
        let jinja = dir.join("chat_template.jinja");
        let chat_template = if jinja.is_file() {
            Some(std::fs::read_to_string(&jinja).map_err(|e| load_err(&jinja, e))?)
        } else {
            match cfg.get("chat_template") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                    .and_then(|t| t.get("template").and_then(Value::as_str))
                    .map(str::to_owned),
                Some(_) => {
                    return Err(load_err(&cfg_path, "chat_template must be a string or a list of named templates"))
                }
            }
        };
        // The config's flag when given; otherwise whatever the post-processor does, which is what
        // `tokenizer(text)` does.
        let add_bos_token = match cfg.get("add_bos_token").and_then(Value::as_bool) {
            Some(b) => b,
            None => match &bos {
                None => false,
                Some((_, id)) => {
                    let e = no_panic(|| tokenizer.encode("a", true)).map_err(|e| load_err(&tj, e))?;
                    e.get_ids().first() == Some(id)
                }
            },
        };
        Ok(CausalTokenizer { tokenizer, bos, eos, pad, chat_template, add_bos_token })
    }

    /// The tokenizer of a GGUF file with its chat template (`tokenizer.chat_template`) and padding token
    /// (`tokenizer.ggml.padding_token_id`); reads metadata only.
    pub fn from_gguf(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        let file = GgufFile::open(path).map_err(|e| load_err(path, e))?;
        let tok = gguf_tokenizer(&file)
            .map_err(|e| load_err(path, e))?
            .ok_or_else(|| load_err(path, "the file has no tokenizer (tokenizer.ggml.model)"))?;
        let template = file.get_str("tokenizer.chat_template").map_err(|e| load_err(path, e))?.map(str::to_owned);
        let pad = file.get_u64("tokenizer.ggml.padding_token_id").map_err(|e| load_err(path, e))?;
        let pad = pad.and_then(|p| u32::try_from(p).ok());
        Ok(Self::from_gguf_tokenizer(tok, template, pad))
    }

    /// From an already loaded GGUF tokenizer (e.g. `LlamaGguf::tokenizer` and `LlamaGguf::chat_template`).
    pub fn from_gguf_tokenizer(tok: GgufTokenizer, chat_template: Option<String>, pad_token_id: Option<u32>) -> Self {
        let named = |id: Option<u32>| id.and_then(|i| tok.tokenizer.id_to_token(i).map(|s| (s, i)));
        CausalTokenizer {
            bos: named(tok.bos_token_id),
            eos: named(tok.eos_token_id),
            pad: pad_token_id,
            chat_template,
            add_bos_token: tok.add_bos_token,
            tokenizer: tok.tokenizer,
        }
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Replaces the chat template (e.g. a user-supplied one).
    pub fn set_chat_template(&mut self, template: Option<String>) {
        self.chat_template = template;
    }
}

fn err(e: impl std::fmt::Display) -> DataError {
    DataError::Invalid(format!("tokenizer: {e}"))
}

impl CausalTokenize for CausalTokenizer {
    fn encode_plain(&self, text: &str) -> Result<Vec<u32>, DataError> {
        Ok(no_panic(|| self.tokenizer.encode(text, false)).map_err(err)?.get_ids().to_vec())
    }

    fn encode_plain_offsets(&self, text: &str) -> Result<Option<Vec<(u32, usize)>>, DataError> {
        // `encode` reports byte offsets into `text`.
        let e = no_panic(|| self.tokenizer.encode(text, false)).map_err(err)?;
        Ok(Some(e.get_ids().iter().copied().zip(e.get_offsets().iter().map(|o| o.0)).collect()))
    }

    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, DataError> {
        no_panic(|| self.tokenizer.decode(ids, skip_special_tokens)).map_err(err)
    }

    fn bos_token(&self) -> Option<(String, u32)> {
        self.bos.clone()
    }

    fn eos_token(&self) -> Option<(String, u32)> {
        self.eos.clone()
    }

    fn pad_token_id(&self) -> Option<u32> {
        self.pad
    }

    fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    fn add_bos_token(&self) -> bool {
        self.add_bos_token
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use finetune_data::chat::ChatMessage;
    use finetune_data::sft::{encode_sft, SftContent, SftOptions, SftRecord};
    use finetune_data::IGNORE_INDEX;
    use std::path::PathBuf;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf")
    }

    #[test]
    fn gguf_tokenizer_exposes_special_tokens() {
        let path = fixtures().join("tiny_llama.gguf");
        let file = GgufFile::open(&path).expect("open");
        let raw = gguf_tokenizer(&file).expect("tokenizer").expect("present");
        let t = CausalTokenizer::from_gguf(&path).expect("load");
        assert_eq!(t.bos_token().map(|b| b.1), raw.bos_token_id);
        assert_eq!(t.eos_token().map(|e| e.1), raw.eos_token_id);
        assert_eq!(t.add_bos_token(), raw.add_bos_token);
        let (bos, id) = t.bos_token().expect("bos");
        assert_eq!(raw.tokenizer.token_to_id(&bos), Some(id));
        // encode_plain adds nothing even where the post-processor would add BOS.
        let with = raw.tokenizer.encode("hello", true).expect("encode");
        let plain = t.encode_plain("hello").expect("encode");
        let n_added = usize::from(raw.add_bos_token) + usize::from(raw.add_eos_token);
        assert_eq!(plain.len() + n_added, with.get_ids().len());
        // Special tokens written in the text are recognised as single tokens.
        let ids = t.encode_plain(&format!("{bos}hello")).expect("encode");
        assert_eq!(ids[0], id);
        assert_eq!(&ids[1..], &plain[..]);
    }

    #[test]
    fn hf_directory_reads_config_and_template() {
        use tokenizers::models::wordlevel::WordLevel;
        use tokenizers::pre_tokenizers::whitespace::Whitespace;
        use tokenizers::AddedToken;
        let vocab: ahash::AHashMap<String, u32> =
            ["<unk>", "<s>", "</s>", "<pad>", "hello", "world", "user", "assistant", "|"]
                .iter()
                .enumerate()
                .map(|(i, s)| (s.to_string(), i as u32))
                .collect();
        let model = WordLevel::builder().vocab(vocab).unk_token("<unk>".into()).build().expect("model");
        let mut tk = Tokenizer::new(model);
        tk.with_pre_tokenizer(Some(tokenizers::PreTokenizerWrapper::from(Whitespace)));
        tk.add_special_tokens([
            AddedToken::from("<s>", true),
            AddedToken::from("</s>", true),
            AddedToken::from("<pad>", true),
        ])
        .expect("specials");
        let dir = std::env::temp_dir().join(format!("finetune-causal-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        tk.save(dir.join("tokenizer.json"), false).expect("save");
        let template = "{% for m in messages %}{{ m.role }} {{ m.content }} {{ eos_token }}{% endfor %}{% if add_generation_prompt %}assistant {% endif %}";
        let cfg = serde_json::json!({
            "bos_token": {"content": "<s>", "special": true},
            "eos_token": "</s>",
            "pad_token": "<pad>",
            "add_bos_token": true,
            "chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": template}],
        });
        std::fs::write(dir.join("tokenizer_config.json"), cfg.to_string()).expect("write");
        let t = CausalTokenizer::from_dir(&dir).expect("load");
        assert_eq!(t.bos_token(), Some(("<s>".into(), 1)));
        assert_eq!(t.eos_token(), Some(("</s>".into(), 2)));
        assert_eq!(t.pad_token_id(), Some(3));
        assert!(t.add_bos_token());
        assert_eq!(t.chat_template(), Some(template));
        assert_eq!(t.encode_plain("hello </s> world").expect("encode"), vec![4, 2, 5]);
        assert_eq!(t.decode(&[1, 4, 5, 2], true).expect("decode"), "hello world");

        // Through the SFT pipeline: the prompt is masked, the reply and its end-of-turn are trained.
        let r = SftRecord {
            path: "x.jsonl".into(),
            line: 1,
            content: SftContent::PromptCompletion { prompt: "hello".into(), completion: "world".into() },
        };
        let ex = &encode_sft(&t, &[r], &SftOptions::default()).expect("encode").examples[0];
        assert_eq!(ex.input_ids, vec![6, 4, 2, 7, 5, 2]);
        assert_eq!(ex.labels, vec![IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 5, 2]);
        let chat = SftContent::Chat(vec![ChatMessage::new("user", "hello"), ChatMessage::new("assistant", "world")]);
        let r = SftRecord { path: "x.jsonl".into(), line: 2, content: chat };
        let ex2 = &encode_sft(&t, &[r], &SftOptions::default()).expect("encode").examples[0];
        assert_eq!(ex2, ex);

        // A chat_template.jinja file wins over the config.
        std::fs::write(dir.join("chat_template.jinja"), "{{ messages[0].content }}").expect("write");
        assert_eq!(CausalTokenizer::from_dir(&dir).expect("load").chat_template(), Some("{{ messages[0].content }}"));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// transformers' token ids for SmolLM2's GGUF tokenizer (scripts/reference/gen_chat_templates.py); needs the
    /// real file (scripts/fetch.sh SmolLM2-135M-Instruct), else prints SKIPPED.
    #[test]
    fn smollm2_sft_ids_match_transformers() {
        use std::io::Write;
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../assets/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
        if !path.is_file() {
            let _ = writeln!(std::io::stderr(), "SKIPPED: {} is absent", path.display());
            return;
        }
        let fx: Value =
            serde_json::from_str(&std::fs::read_to_string(fixtures().join("smollm2_sft.json")).expect("fixture"))
                .expect("json");
        let t = CausalTokenizer::from_gguf(&path).expect("load");
        assert_eq!(t.bos_token().map(|b| b.1), fx["bos_token_id"].as_u64().map(|v| v as u32));
        assert_eq!(t.eos_token().map(|b| b.1), fx["eos_token_id"].as_u64().map(|v| v as u32));
        let u32s = |v: &Value| -> Vec<u32> {
            v.as_array().expect("ids").iter().map(|x| x.as_u64().expect("id") as u32).collect()
        };
        let opts = SftOptions { max_seq_length: None, ..SftOptions::default() };
        let convs = fx["conversations"].as_object().expect("conversations");
        for (name, conv) in convs {
            let msgs: Vec<ChatMessage> = conv
                .as_array()
                .expect("messages")
                .iter()
                .map(|m| ChatMessage::new(m["role"].as_str().expect("role"), m["content"].as_str().expect("content")))
                .collect();
            let n_assistant = msgs.iter().filter(|m| m.role == "assistant" && !m.content.is_empty()).count();
            let r = SftRecord { path: "x.jsonl".into(), line: 1, content: SftContent::Chat(msgs) };
            let enc = encode_sft(&t, &[r], &opts).expect("encode");
            if n_assistant == 0 && enc.examples.is_empty() {
                continue; // nothing to train on
            }
            let ex = &enc.examples[0];
            assert_eq!(ex.input_ids, u32s(&fx["conversation_ids"][name]), "{name}");
        }
        for pair in fx["pairs"].as_array().expect("pairs") {
            let content = SftContent::PromptCompletion {
                prompt: pair["prompt"].as_str().expect("prompt").into(),
                completion: pair["completion"].as_str().expect("completion").into(),
            };
            let r = SftRecord { path: "x.jsonl".into(), line: 1, content };
            for (chat, key, len_key) in
                [(false, "plain_ids", "plain_prompt_len"), (true, "chat_ids", "chat_prompt_len")]
            {
                let o = SftOptions { use_chat_template: chat, ..opts.clone() };
                let ex = &encode_sft(&t, std::slice::from_ref(&r), &o).expect("encode").examples[0];
                let want = u32s(&pair[key]);
                assert_eq!(ex.input_ids, want, "{key}");
                let n_prompt = pair[len_key].as_u64().expect("len") as usize;
                let want_labels: Vec<i64> = want
                    .iter()
                    .enumerate()
                    .map(|(i, &id)| if i < n_prompt { IGNORE_INDEX } else { i64::from(id) })
                    .collect();
                assert_eq!(ex.labels, want_labels, "{key} labels");
            }
        }
    }

    /// The tasks scripts/make-sft-tasks.sh builds read and tokenise with SmolLM2's tokenizer and template; needs
    /// both (else prints SKIPPED).
    #[test]
    fn real_sft_tasks_encode() {
        use finetune_data::sft::{group_texts, read_sft, GroupTexts, SftFormat};
        use std::io::Write;
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets");
        let gguf = root.join("SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
        let data = root.join("data/sft");
        if !gguf.is_file() || !data.join("email_subject.train.jsonl").is_file() {
            let _ = writeln!(std::io::stderr(), "SKIPPED: run scripts/fetch.sh and scripts/make-sft-tasks.sh");
            return;
        }
        let t = CausalTokenizer::from_gguf(&gguf).expect("load");
        for task in ["email_subject", "review_sentiment", "tweet_entities"] {
            let (format, records) =
                read_sft(&data.join(format!("{task}.validation.jsonl")), SftFormat::Auto).expect("read");
            assert_eq!(format, SftFormat::PromptCompletion);
            let opts = SftOptions { max_seq_length: Some(512), ..SftOptions::default() };
            let enc = encode_sft(&t, &records, &opts).expect("encode");
            let lens: Vec<usize> = enc.examples.iter().map(|e| e.len()).collect();
            let labels: usize = enc.examples.iter().map(|e| e.num_label_tokens()).sum();
            let _ = writeln!(
                std::io::stderr(),
                "{task}: {} records, {} examples, {} truncated, {} dropped, mean {:.1} tokens, max {}, {} label tokens",
                records.len(),
                enc.examples.len(),
                enc.truncated,
                enc.dropped_no_labels,
                lens.iter().sum::<usize>() as f64 / lens.len().max(1) as f64,
                lens.iter().max().copied().unwrap_or(0),
                labels
            );
            assert_eq!(enc.examples.len() + enc.dropped_no_labels, records.len());
            assert!(enc.examples.len() * 10 >= records.len() * 9, "{task}: most examples fit in 512 tokens");
        }
        let (format, records) =
            read_sft(&data.join("movie_reviews_text.validation.jsonl"), SftFormat::Auto).expect("read");
        assert_eq!(format, SftFormat::Text);
        let blocks = group_texts(&t, &records, GroupTexts::new(128)).expect("group");
        let _ = writeln!(
            std::io::stderr(),
            "movie_reviews_text: {} texts -> {} blocks of 128",
            records.len(),
            blocks.len()
        );
        assert!(!blocks.is_empty() && blocks.iter().all(|b| b.len() == 128));
    }
}
