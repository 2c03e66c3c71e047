//! SFT records, label masks, grouping, packing and collation, on a character-level tokenizer whose ids can be
//! checked by hand.

use std::io::Write;

use finetune_data::sft::{
    encode_sft, group_texts, group_token_lists, pack, pad_examples, pad_packed, read_sft, CausalExample,
    CausalTokenize, GroupTexts, SftContent, SftFormat, SftOptions, SftRecord, SftTokenizer, TruncationMode,
    ALPACA_PROMPT_NO_INPUT,
};
use finetune_data::{DataError, IGNORE_INDEX};

const SPECIALS: [&str; 3] = ["<s>", "</s>", "<|im_start|>"];
const IM_END: &str = "<|im_end|>";

/// Specials get ids 0..4 (`<s>`=0, `</s>`=1, `<|im_start|>`=2, `<|im_end|>`=3); any other character c gets
/// 10 + c as u32.
struct CharTok {
    template: Option<String>,
    add_bos: bool,
}

/// The same tokenizer reporting token offsets, so SFT tokenises whole texts and masks by position.
struct OffsetTok(CharTok);

impl CausalTokenize for OffsetTok {
    fn encode_plain(&self, text: &str) -> finetune_data::Result<Vec<u32>> {
        self.0.encode_plain(text)
    }
    fn encode_plain_offsets(&self, text: &str) -> finetune_data::Result<Option<Vec<(u32, usize)>>> {
        let ids = self.0.encode_plain(text)?;
        let sp = specials();
        let mut at = 0;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push((id, at));
            at += match sp.get(id as usize) {
                Some(s) => s.len(),
                None => char::from_u32(id - 10).map_or(1, char::len_utf8),
            };
        }
        Ok(Some(out))
    }
    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> finetune_data::Result<String> {
        self.0.decode(ids, skip_special_tokens)
    }
    fn bos_token(&self) -> Option<(String, u32)> {
        self.0.bos_token()
    }
    fn eos_token(&self) -> Option<(String, u32)> {
        self.0.eos_token()
    }
    fn pad_token_id(&self) -> Option<u32> {
        self.0.pad_token_id()
    }
    fn chat_template(&self) -> Option<&str> {
        self.0.chat_template()
    }
    fn add_bos_token(&self) -> bool {
        self.0.add_bos_token()
    }
}

fn specials() -> Vec<&'static str> {
    let mut v = SPECIALS.to_vec();
    v.push(IM_END);
    v
}

impl CausalTokenize for CharTok {
    fn encode_plain(&self, text: &str) -> finetune_data::Result<Vec<u32>> {
        let mut out = Vec::new();
        let mut rest = text;
        'outer: while !rest.is_empty() {
            for (id, s) in specials().iter().enumerate() {
                if let Some(r) = rest.strip_prefix(s) {
                    out.push(id as u32);
                    rest = r;
                    continue 'outer;
                }
            }
            let c = rest.chars().next().expect("non-empty");
            out.push(10 + c as u32);
            rest = &rest[c.len_utf8()..];
        }
        Ok(out)
    }
    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> finetune_data::Result<String> {
        let sp = specials();
        Ok(ids
            .iter()
            .filter_map(|&i| match sp.get(i as usize) {
                Some(s) => (!skip_special_tokens).then(|| s.to_string()),
                None => char::from_u32(i - 10).map(String::from),
            })
            .collect())
    }
    fn bos_token(&self) -> Option<(String, u32)> {
        Some(("<s>".into(), 0))
    }
    fn eos_token(&self) -> Option<(String, u32)> {
        Some(("</s>".into(), 1))
    }
    fn pad_token_id(&self) -> Option<u32> {
        Some(1)
    }
    fn chat_template(&self) -> Option<&str> {
        self.template.as_deref()
    }
    fn add_bos_token(&self) -> bool {
        self.add_bos
    }
}

/// SmolLM2's template (from its GGUF file, via the chat fixture).
fn smollm2_template() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/chat_templates.json");
    let fx: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
    fx["templates"]["smollm2"].as_str().expect("smollm2").to_owned()
}

/// A fresh directory per test under the system temp dir (tests run in parallel).
fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("finetune-sft-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

fn write(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).expect("create");
    f.write_all(body.as_bytes()).expect("write");
    p
}

fn ids(tok: &CharTok, s: &str) -> Vec<u32> {
    tok.encode_plain(s).expect("encode")
}

fn rec(content: SftContent) -> SftRecord {
    SftRecord { path: "mem.jsonl".into(), line: 1, content }
}

#[test]
fn detects_the_four_formats() {
    let dir = tempdir("detect");
    let cases = [
        ("pc.jsonl", "{\"prompt\": \"a\", \"completion\": \"b\"}\n\n{\"prompt\": \"c\", \"completion\": \"d\"}\n", SftFormat::PromptCompletion),
        ("al.jsonl", "{\"instruction\": \"i\", \"output\": \"o\"}\n{\"instruction\": \"i\", \"input\": \"x\", \"output\": \"o\"}\n", SftFormat::Alpaca),
        ("chat.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}]}\n", SftFormat::Chat),
        ("text.jsonl", "\u{feff}{\"text\": \"hello\"}\r\n{\"text\": \"world\", \"meta\": 1}\r\n", SftFormat::Text),
    ];
    for (name, body, expected) in cases {
        let p = write(&dir, name, body);
        let (format, records) = read_sft(&p, SftFormat::Auto).expect(name);
        assert_eq!(format, expected, "{name}");
        assert!(!records.is_empty());
    }
    let p = write(
        &dir,
        "pc2.jsonl",
        "{\"prompt\": \"a\", \"completion\": \"b\"}\n\n{\"prompt\": \"c\", \"completion\": \"d\"}\n",
    );
    let (_, records) = read_sft(&p, SftFormat::Auto).expect("read");
    assert_eq!(records[1].line, 3, "blank lines keep line numbers");
    assert_eq!(records[1].content, SftContent::PromptCompletion { prompt: "c".into(), completion: "d".into() });
    // A forced format reads fields the auto-detection would not pick.
    let p = write(&dir, "forced.jsonl", "{\"text\": \"t\", \"prompt\": \"p\", \"completion\": \"c\"}\n");
    let (format, records) = read_sft(&p, SftFormat::Text).expect("forced");
    assert_eq!(format, SftFormat::Text);
    assert_eq!(records[0].content, SftContent::Text("t".into()));
}

#[test]
fn errors_name_file_line_and_field() {
    let dir = tempdir("errors");
    let cases = [
        (
            "a.jsonl",
            "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\"}\n",
            ":2: field \"completion\" is missing",
        ),
        (
            "b.jsonl",
            "{\"prompt\": \"a\", \"completion\": 3}\n",
            ":1: field \"completion\" must be a string, found a number",
        ),
        (
            "c.jsonl",
            "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\"}]}\n",
            ":1: field \"messages[1].content\" is missing",
        ),
        (
            "d.jsonl",
            "{\"messages\": [{\"role\": \"user\", \"content\": [1]}]}\n",
            ":1: field \"messages[0].content\" must be a string, found a list",
        ),
        ("e.jsonl", "{\"foo\": 1}\n", ":1: cannot tell the SFT format"),
        ("f.jsonl", "{\"text\": \"x\"}\n{oops\n", ":2: invalid JSON"),
        ("g.jsonl", "[1, 2]\n", ":1: expected a JSON object, found a list"),
        (
            "h.jsonl",
            "{\"instruction\": \"i\", \"input\": 5, \"output\": \"o\"}\n",
            ":1: field \"input\" must be a string",
        ),
        ("i.jsonl", "{\"messages\": []}\n", ":1: field \"messages\" is empty"),
    ];
    for (name, body, expected) in cases {
        let p = write(&dir, name, body);
        let err = read_sft(&p, SftFormat::Auto).expect_err(name);
        let msg = err.to_string();
        assert!(matches!(err, DataError::Record { .. }), "{name}: {msg}");
        assert!(msg.starts_with(&p.display().to_string()), "{name}: {msg}");
        assert!(msg.contains(expected), "{name}: {msg} lacks {expected}");
    }
    let p = write(&dir, "empty.jsonl", "\n\n");
    assert!(read_sft(&p, SftFormat::Auto).expect_err("empty").to_string().contains("no records"));
}

#[test]
fn prompt_completion_masks_the_prompt_and_keeps_eos() {
    let tok = CharTok { template: None, add_bos: true };
    let r = rec(SftContent::PromptCompletion { prompt: "ab".into(), completion: "cd".into() });
    let enc = encode_sft(&tok, std::slice::from_ref(&r), &SftOptions::default()).expect("encode");
    let ex = &enc.examples[0];
    let (a, b, c, d) = (10 + 'a' as u32, 10 + 'b' as u32, 10 + 'c' as u32, 10 + 'd' as u32);
    assert_eq!(ex.input_ids, vec![0, a, b, c, d, 1]);
    assert_eq!(ex.labels, vec![IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, c as i64, d as i64, 1]);
    assert_eq!(ex.num_label_tokens(), 3);

    let all = SftOptions { completion_only_loss: false, ..SftOptions::default() };
    let ex = &encode_sft(&tok, std::slice::from_ref(&r), &all).expect("encode").examples[0];
    assert_eq!(ex.labels, ex.input_ids.iter().map(|&t| t as i64).collect::<Vec<_>>());

    let no_bos = CharTok { template: None, add_bos: false };
    let ex = &encode_sft(&no_bos, std::slice::from_ref(&r), &SftOptions::default()).expect("encode").examples[0];
    assert_eq!(ex.input_ids, vec![a, b, c, d, 1]);
}

#[test]
fn alpaca_uses_the_alpaca_prompt_without_a_template() {
    let tok = CharTok { template: None, add_bos: false };
    let r = rec(SftContent::Alpaca { instruction: "Say hi".into(), input: String::new(), output: "hi".into() });
    let ex = &encode_sft(&tok, std::slice::from_ref(&r), &SftOptions::default()).expect("encode").examples[0];
    let prompt = ALPACA_PROMPT_NO_INPUT.replace("{instruction}", "Say hi");
    let mut expected = ids(&tok, &prompt);
    let n_prompt = expected.len();
    expected.extend(ids(&tok, "hi"));
    expected.push(1);
    assert_eq!(ex.input_ids, expected);
    assert!(ex.labels[..n_prompt].iter().all(|&l| l == IGNORE_INDEX));
    assert!(ex.labels[n_prompt..].iter().all(|&l| l != IGNORE_INDEX));
    assert!(tok.decode(&ex.input_ids, true).expect("decode").ends_with("### Response:\nhi"));
}

#[test]
fn prompt_completion_under_a_chat_template() {
    let tok = CharTok { template: Some(smollm2_template()), add_bos: true };
    let r = rec(SftContent::PromptCompletion { prompt: "Q?".into(), completion: "A.".into() });
    let ex = &encode_sft(&tok, std::slice::from_ref(&r), &SftOptions::default()).expect("encode").examples[0];
    let text = tok.decode(&ex.input_ids, false).expect("decode");
    assert_eq!(
        text,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\nA.<|im_end|>\n"
    );
    let kept: Vec<u32> = ex.labels.iter().filter(|&&l| l != IGNORE_INDEX).map(|&l| l as u32).collect();
    // The reply and its end-of-turn are trained; nothing else, and no BOS was added to the rendered text.
    assert_eq!(tok.decode(&kept, false).expect("decode"), "A.<|im_end|>\n");
    assert_eq!(ex.input_ids[0], 2);

    let plain = SftOptions { use_chat_template: false, ..SftOptions::default() };
    let ex = &encode_sft(&tok, std::slice::from_ref(&r), &plain).expect("encode").examples[0];
    assert_eq!(tok.decode(&ex.input_ids, false).expect("decode"), "<s>Q?A.</s>");
}

#[test]
fn chat_trains_on_assistant_turns_only() {
    let tok = CharTok { template: Some(smollm2_template()), add_bos: false };
    let msgs = vec![
        finetune_data::chat::ChatMessage::new("system", "S"),
        finetune_data::chat::ChatMessage::new("user", "u1"),
        finetune_data::chat::ChatMessage::new("assistant", "a1"),
        finetune_data::chat::ChatMessage::new("user", "u2"),
        finetune_data::chat::ChatMessage::new("assistant", "a2"),
    ];
    let r = rec(SftContent::Chat(msgs));
    let ex = &encode_sft(&tok, std::slice::from_ref(&r), &SftOptions::default()).expect("encode").examples[0];
    let full = tok.decode(&ex.input_ids, false).expect("decode");
    assert_eq!(
        full,
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nu1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n\
         <|im_start|>user\nu2<|im_end|>\n<|im_start|>assistant\na2<|im_end|>\n"
    );
    // Decode the trained spans one by one.
    let mut spans = Vec::new();
    let mut cur = Vec::new();
    for (&id, &l) in ex.input_ids.iter().zip(&ex.labels) {
        if l == IGNORE_INDEX {
            if !cur.is_empty() {
                spans.push(tok.decode(&cur, false).expect("decode"));
                cur.clear();
            }
        } else {
            assert_eq!(l, id as i64);
            cur.push(id);
        }
    }
    if !cur.is_empty() {
        spans.push(tok.decode(&cur, false).expect("decode"));
    }
    assert_eq!(spans, vec!["a1<|im_end|>\n".to_owned(), "a2<|im_end|>\n".to_owned()]);

    let all = SftOptions { assistant_only_loss: false, ..SftOptions::default() };
    let ex2 = &encode_sft(&tok, std::slice::from_ref(&r), &all).expect("encode").examples[0];
    assert_eq!(ex2.input_ids, ex.input_ids);
    assert!(ex2.labels.iter().all(|&l| l != IGNORE_INDEX));
}

#[test]
fn whole_text_tokenisation_with_offsets_gives_the_same_masks() {
    let records = [
        rec(SftContent::PromptCompletion { prompt: "ab".into(), completion: "cd".into() }),
        rec(SftContent::Alpaca { instruction: "Say hi".into(), input: "now".into(), output: "hi".into() }),
        rec(SftContent::Chat(vec![
            finetune_data::chat::ChatMessage::new("system", "S"),
            finetune_data::chat::ChatMessage::new("user", "u1"),
            finetune_data::chat::ChatMessage::new("assistant", "a1"),
            finetune_data::chat::ChatMessage::new("user", "u2"),
            finetune_data::chat::ChatMessage::new("assistant", "a2"),
        ])),
    ];
    for template in [None, Some(smollm2_template())] {
        for add_bos in [false, true] {
            let records: Vec<SftRecord> = records
                .iter()
                .filter(|r| template.is_some() || !matches!(r.content, SftContent::Chat(_)))
                .cloned()
                .collect();
            let pieces = CharTok { template: template.clone(), add_bos };
            let whole = OffsetTok(CharTok { template: template.clone(), add_bos });
            for opts in [
                SftOptions::default(),
                SftOptions { completion_only_loss: false, assistant_only_loss: false, ..SftOptions::default() },
            ] {
                let a = encode_sft(&pieces, &records, &opts).expect("pieces");
                let b = encode_sft(&whole, &records, &opts).expect("whole");
                assert_eq!(a, b);
            }
        }
    }
}

#[test]
fn templates_that_rewrite_earlier_turns_are_rejected() {
    // Shows only the last message: rendering a longer prefix does not extend a shorter one.
    let tok = CharTok {
        template: Some("{{ messages[-1].content }}{% if add_generation_prompt %}>{% endif %}".into()),
        add_bos: false,
    };
    let msgs = vec![
        finetune_data::chat::ChatMessage::new("user", "u1"),
        finetune_data::chat::ChatMessage::new("assistant", "a1"),
        finetune_data::chat::ChatMessage::new("user", "u2"),
        finetune_data::chat::ChatMessage::new("assistant", "a2"),
    ];
    let r = SftRecord { path: "c.jsonl".into(), line: 7, content: SftContent::Chat(msgs) };
    let err = encode_sft(&tok, &[r], &SftOptions::default()).expect_err("prefix property");
    let msg = err.to_string();
    assert!(msg.starts_with("c.jsonl:7: field \"messages["), "{msg}");
    assert!(msg.contains("does not start with"), "{msg}");

    let no_template = CharTok { template: None, add_bos: false };
    let r = rec(SftContent::Chat(vec![finetune_data::chat::ChatMessage::new("user", "x")]));
    assert!(encode_sft(&no_template, &[r], &SftOptions::default())
        .expect_err("no template")
        .to_string()
        .contains("chat template"));
}

#[test]
fn truncation_keeps_the_start_and_drops_label_free_examples() {
    let tok = CharTok { template: None, add_bos: false };
    let records = vec![
        rec(SftContent::PromptCompletion { prompt: "abcdef".into(), completion: "xy".into() }),
        rec(SftContent::PromptCompletion { prompt: "ab".into(), completion: "xy".into() }),
    ];
    let opts =
        SftOptions { max_seq_length: Some(4), truncation_mode: TruncationMode::KeepStart, ..SftOptions::default() };
    let enc = encode_sft(&tok, &records, &opts).expect("encode");
    assert_eq!(enc.truncated, 2);
    assert_eq!((enc.prompt_cut, enc.completion_cut), (0, 2));
    assert_eq!(enc.dropped_no_labels, 1);
    assert_eq!(enc.examples.len(), 1);
    assert_eq!(enc.examples[0].input_ids, ids(&tok, "abxy"));
}

#[test]
fn keep_completion_cuts_the_middle_of_the_prompt() {
    // Plain: "abcdefgh" + "XY" + EOS = 11 tokens; max 7 leaves 4 prompt characters: "ab" + "gh".
    let tok = CharTok { template: None, add_bos: false };
    let r = rec(SftContent::PromptCompletion { prompt: "abcdefgh".into(), completion: "XY".into() });
    let opts = SftOptions { max_seq_length: Some(7), ..SftOptions::default() };
    let enc = encode_sft(&tok, std::slice::from_ref(&r), &opts).expect("encode");
    assert_eq!((enc.truncated, enc.prompt_cut, enc.completion_cut, enc.dropped_no_labels), (1, 1, 0, 0));
    let mut want = ids(&tok, "abghXY");
    want.push(1);
    assert_eq!(enc.examples[0].input_ids, want);
    assert_eq!(enc.examples[0].num_label_tokens(), 3);
    // An odd number kept: the extra one comes from the start.
    let opts = SftOptions { max_seq_length: Some(6), ..SftOptions::default() };
    let enc = encode_sft(&tok, std::slice::from_ref(&r), &opts).expect("encode");
    assert_eq!(&enc.examples[0].input_ids[..3], &ids(&tok, "abh")[..]);
    // The completion alone is too long: the prompt is emptied and the completion's end cut.
    let opts = SftOptions { max_seq_length: Some(2), ..SftOptions::default() };
    let enc = encode_sft(&tok, std::slice::from_ref(&r), &opts).expect("encode");
    assert_eq!((enc.prompt_cut, enc.completion_cut), (0, 1));
    assert_eq!(enc.examples[0].input_ids, ids(&tok, "XY"));
    // keep_end keeps the last tokens: here only prompt tokens go.
    let opts =
        SftOptions { max_seq_length: Some(7), truncation_mode: TruncationMode::KeepEnd, ..SftOptions::default() };
    let enc = encode_sft(&tok, std::slice::from_ref(&r), &opts).expect("encode");
    assert_eq!((enc.prompt_cut, enc.completion_cut), (1, 0));
    assert_eq!(&enc.examples[0].input_ids[..6], &ids(&tok, "efghXY")[..]);
}

#[test]
fn keep_completion_never_cuts_the_chat_template() {
    // ChatML: only the user's content shrinks; <|im_start|>, <|im_end|>, the roles and the generation prompt stay.
    let template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    {
        let t = OffsetTok(CharTok { template: Some(template.into()), add_bos: false });
        let msgs = vec![
            finetune_data::chat::ChatMessage::new("system", "S"),
            finetune_data::chat::ChatMessage::new("user", "0123456789"),
            finetune_data::chat::ChatMessage::new("assistant", "ok"),
        ];
        let r = rec(SftContent::Chat(msgs.clone()));
        let whole = encode_sft(&t, std::slice::from_ref(&r), &SftOptions::default()).expect("encode");
        let n = whole.examples[0].len();
        let opts = SftOptions { max_seq_length: Some(n - 6), ..SftOptions::default() };
        let enc = encode_sft(&t, std::slice::from_ref(&r), &opts).expect("encode");
        assert_eq!((enc.prompt_cut, enc.completion_cut), (1, 0));
        let text = t.decode(&enc.examples[0].input_ids, false).expect("decode");
        assert_eq!(
            text,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n0189<|im_end|>\n<|im_start|>assistant\nok<|im_end|>\n"
        );
        // The generation prompt of the same record, fitted to a budget, keeps the template too.
        let st = SftTokenizer::new(&t).expect("template");
        let (p, reference, _) = st.fit_prompt(&r, &SftOptions::default(), 35).expect("prompt");
        assert_eq!(reference, "ok");
        assert_eq!(
            t.decode(&p, false).expect("decode"),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n01289<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(p.len(), 35);
    }
}

#[test]
fn truncation_mode_parses_trl_names() {
    assert_eq!("keep_start".parse::<TruncationMode>().expect("parse"), TruncationMode::KeepStart);
    assert_eq!("keep_end".parse::<TruncationMode>().expect("parse"), TruncationMode::KeepEnd);
    assert_eq!("keep_completion".parse::<TruncationMode>().expect("parse"), TruncationMode::KeepCompletion);
    assert!("middle".parse::<TruncationMode>().expect_err("bad").to_string().contains("keep_completion"));
}

#[test]
fn group_texts_concatenates_and_drops_the_remainder() {
    // Three texts of 3, 4 and 2 tokens (+ EOS each): 4 + 5 + 3 = 12 tokens, block 5 → 2 blocks, 2 dropped.
    let tok = CharTok { template: None, add_bos: false };
    let records: Vec<SftRecord> = ["abc", "defg", "hi"].iter().map(|t| rec(SftContent::Text((*t).into()))).collect();
    let blocks = group_texts(&tok, &records, GroupTexts::new(5)).expect("group");
    let e = |s: &str| ids(&tok, s);
    let mut b0 = e("abc");
    b0.push(1);
    b0.extend(e("d"));
    let mut b1 = e("efg");
    b1.push(1);
    b1.extend(e("h"));
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0].input_ids, b0);
    assert_eq!(blocks[1].input_ids, b1);
    for b in &blocks {
        assert_eq!(b.labels, b.input_ids.iter().map(|&t| t as i64).collect::<Vec<_>>());
    }
    // run_clm's own behaviour: no EOS, remainder dropped per map batch of `map_batch_size` texts.
    let lists = vec![vec![1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]];
    let got: Vec<Vec<u32>> = group_token_lists(&lists, 2, Some(2)).into_iter().map(|b| b.input_ids).collect();
    assert_eq!(got, vec![vec![1, 2], vec![3, 4], vec![5, 6], vec![8, 9]]);
    let got: Vec<Vec<u32>> = group_token_lists(&lists, 4, None).into_iter().map(|b| b.input_ids).collect();
    assert_eq!(got, vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8]]);
    assert!(group_texts(&tok, &records, GroupTexts { block_size: 0, ..GroupTexts::new(1) }).is_err());
}

fn example(start: u32, n: usize) -> CausalExample {
    let input_ids: Vec<u32> = (start..start + n as u32).collect();
    CausalExample { labels: input_ids.iter().map(|&t| t as i64).collect(), input_ids }
}

#[test]
fn packing_restarts_positions_and_loses_nothing() {
    let examples = vec![example(100, 3), example(200, 6), example(300, 2), example(400, 5), example(500, 9)];
    let rows = pack(&examples, 8);
    // First-fit decreasing: 9→8 (truncated), 6, 5, 3, 2 → [8], [6, 2], [5, 3].
    let firsts: Vec<Vec<u32>> = rows
        .iter()
        .map(|r| r.input_ids.iter().zip(&r.position_ids).filter(|(_, &p)| p == 0).map(|(&t, _)| t).collect())
        .collect();
    assert_eq!(firsts, vec![vec![500], vec![200, 300], vec![400, 100]]);
    let mut seen: Vec<u32> = rows.iter().flat_map(|r| r.input_ids.clone()).collect();
    seen.sort();
    let mut expected: Vec<u32> = examples.iter().flat_map(|e| e.input_ids.iter().copied().take(8)).collect();
    expected.sort();
    assert_eq!(seen, expected, "every token of every example is in exactly one row");
    for r in &rows {
        assert!(r.input_ids.len() <= 8);
        assert_eq!(r.input_ids.len(), r.labels.len());
        assert_eq!(r.input_ids.len(), r.position_ids.len());
        for (i, (&t, &p)) in r.input_ids.iter().zip(&r.position_ids).enumerate() {
            if p == 0 {
                assert_eq!(r.labels[i], IGNORE_INDEX, "no loss across a boundary");
            } else {
                assert_eq!(r.labels[i], t as i64);
                assert_eq!(r.position_ids[i - 1] + 1, p);
            }
        }
    }
    assert_eq!(rows[1].position_ids, vec![0, 1, 2, 3, 4, 5, 0, 1]);
    assert_eq!(pack(&examples, 8), rows, "deterministic");
}

#[test]
fn padding_collator_and_token_counts() {
    let a = example(10, 3);
    let mut b = example(20, 5);
    b.labels[1] = IGNORE_INDEX;
    let batch = pad_examples(&[&a, &b], 7);
    assert_eq!((batch.batch_size, batch.seq_len), (2, 5));
    assert_eq!(batch.input_ids, vec![10, 11, 12, 7, 7, 20, 21, 22, 23, 24]);
    assert_eq!(batch.labels, vec![10, 11, 12, -100, -100, 20, -100, 22, 23, 24]);
    assert_eq!(batch.attention_mask, vec![1, 1, 1, 0, 0, 1, 1, 1, 1, 1]);
    assert_eq!(batch.position_ids, vec![0, 1, 2, 3, 4, 0, 1, 2, 3, 4]);
    // After the shift: row a keeps labels 11, 12; row b keeps 22, 23, 24.
    assert_eq!(batch.num_label_tokens(), 5);

    let rows = pack(&[example(1, 2), example(5, 3)], 5);
    let packed = pad_packed(&[&rows[0]], 0);
    assert_eq!(packed.position_ids, vec![0, 1, 2, 0, 1]);
    assert_eq!(packed.num_label_tokens(), 3);
}

#[test]
fn sft_tokenizer_reports_segments() {
    let tok = CharTok { template: Some(smollm2_template()), add_bos: false };
    let st = SftTokenizer::new(&tok).expect("template");
    let msgs = vec![
        finetune_data::chat::ChatMessage::new("user", "q"),
        finetune_data::chat::ChatMessage::new("assistant", "a"),
    ];
    let segs = st.chat_segments(&rec(SftContent::Chat(msgs.clone())), &msgs).expect("segments");
    let texts: Vec<(usize, usize, &str)> = segs.iter().map(|(s, e, t)| (*s, *e, t.as_str())).collect();
    assert_eq!(
        texts,
        vec![
            (0, 1, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"),
            (1, 2, "a<|im_end|>\n"),
        ]
    );
}
