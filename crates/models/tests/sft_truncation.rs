//! SFT truncation (`truncation_mode`) with SmolLM2-135M-Instruct's real tokenizer and chat template, against
//! scripts/reference/gen_sft_truncation.py (transformers 5.23.0 tokenising and rendering, the cutting rule written
//! out in Python): token ids, labels and what was cut, for long e-mails, a tweet, an alpaca record, a chat with a
//! system prompt and a completion longer than the limit; and the generation prompts fitted to a budget. The
//! tokenizer is committed under fixtures/smollm2_tokenizer, so no download is needed.

use std::path::Path;

use finetune_data::chat::ChatMessage;
use finetune_data::sft::{encode_sft, Fit, SftContent, SftOptions, SftRecord, SftTokenizer, TruncationMode};
use finetune_models::causal_tokenizer::CausalTokenizer;
use serde_json::Value;

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn content(rec: &Value) -> SftContent {
    let s = |k: &str| rec[k].as_str().expect(k).to_owned();
    if let Some(msgs) = rec.get("messages") {
        let msgs = msgs
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| ChatMessage::new(m["role"].as_str().expect("role"), m["content"].as_str().expect("content")))
            .collect();
        SftContent::Chat(msgs)
    } else if rec.get("instruction").is_some() {
        SftContent::Alpaca { instruction: s("instruction"), input: s("input"), output: s("output") }
    } else {
        SftContent::PromptCompletion { prompt: s("prompt"), completion: s("completion") }
    }
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array().expect("ids").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

fn i64s(v: &Value) -> Vec<i64> {
    v.as_array().expect("labels").iter().map(|x| x.as_i64().expect("label")).collect()
}

#[test]
fn truncation_matches_the_reference() {
    let tok = CausalTokenizer::from_dir(fixtures().join("smollm2_tokenizer")).expect("tokenizer");
    let fx: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("smollm2_sft_truncation.json")).expect("fixture"),
    )
    .expect("json");
    let cases = fx["cases"].as_array().expect("cases");
    let mut seen = std::collections::BTreeSet::new();
    for c in cases {
        let name = c["name"].as_str().expect("name");
        let mode: TruncationMode = c["truncation_mode"].as_str().expect("mode").parse().expect("mode");
        let max = c["max_seq_length"].as_u64().expect("max") as usize;
        let chat = c["use_chat_template"].as_bool().expect("chat");
        let opts = SftOptions {
            use_chat_template: chat,
            max_seq_length: Some(max),
            truncation_mode: mode,
            ..SftOptions::default()
        };
        let r = SftRecord { path: "x.jsonl".into(), line: 1, content: content(&c["record"]) };
        let st = SftTokenizer::new(&tok).expect("template");
        let (ex, fit) = st.encode_record_fit(&r, &opts).expect("encode");
        let what = format!("{name} chat={chat} max={max} {mode}");
        assert_eq!(ex.input_ids, u32s(&c["input_ids"]), "{what}: input_ids");
        assert_eq!(ex.labels, i64s(&c["labels"]), "{what}: labels");
        let want = match c["fit"].as_str().expect("fit") {
            "whole" => Fit::Whole,
            "prompt_cut" => Fit::PromptCut,
            _ => Fit::CompletionCut,
        };
        assert_eq!(fit, want, "{what}: fit");
        seen.insert((mode.to_string(), format!("{fit:?}")));
        // encode_sft counts the same way.
        let enc = encode_sft(&tok, std::slice::from_ref(&r), &opts).expect("encode_sft");
        assert_eq!(
            (enc.truncated, enc.prompt_cut, enc.completion_cut),
            (
                usize::from(fit != Fit::Whole),
                usize::from(fit == Fit::PromptCut),
                usize::from(fit == Fit::CompletionCut)
            )
        );
    }
    // The fixture exercises every mode and both outcomes of keep_completion.
    for k in ["keep_completion", "keep_start", "keep_end"] {
        assert!(seen.contains(&(k.to_string(), "CompletionCut".to_string())), "{k}: {seen:?}");
    }
    assert!(seen.contains(&("keep_completion".to_string(), "PromptCut".to_string())));

    for p in fx["prompts"].as_array().expect("prompts") {
        let name = p["name"].as_str().expect("name");
        let chat = p["use_chat_template"].as_bool().expect("chat");
        let budget = p["budget"].as_u64().expect("budget") as usize;
        let opts = SftOptions { use_chat_template: chat, ..SftOptions::default() };
        let r = SftRecord { path: "x.jsonl".into(), line: 1, content: content(&p["record"]) };
        let st = SftTokenizer::new(&tok).expect("template");
        let (ids, _, _) = st.fit_prompt(&r, &opts, budget).expect("prompt");
        assert_eq!(ids, u32s(&p["prompt_ids"]), "{name} chat={chat} budget={budget}");
    }
}

/// With keep_completion every label token of an e-mail → subject example survives, and the chat template's
/// special tokens and the generation prompt are all there.
#[test]
fn keep_completion_keeps_every_label_and_the_template() {
    let tok = CausalTokenizer::from_dir(fixtures().join("smollm2_tokenizer")).expect("tokenizer");
    let fx: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("smollm2_sft_truncation.json")).expect("fixture"),
    )
    .expect("json");
    let rec = &fx["cases"][0]["record"];
    let r = SftRecord { path: "x.jsonl".into(), line: 1, content: content(rec) };
    let whole = SftOptions { max_seq_length: None, ..SftOptions::default() };
    let st = SftTokenizer::new(&tok).expect("template");
    let (full, _) = st.encode_record_fit(&r, &whole).expect("encode");
    let max = full.len() / 2;
    let (cut, fit) =
        st.encode_record_fit(&r, &SftOptions { max_seq_length: Some(max), ..SftOptions::default() }).expect("encode");
    assert_eq!(fit, Fit::PromptCut);
    assert!(cut.len() <= max && cut.len() + 3 >= max, "{} tokens for {max}", cut.len());
    let labels = |e: &finetune_data::sft::CausalExample| -> Vec<i64> {
        e.labels.iter().copied().filter(|&l| l != finetune_data::IGNORE_INDEX).collect()
    };
    assert_eq!(labels(&cut), labels(&full));
    let count = |e: &finetune_data::sft::CausalExample, id: u32| e.input_ids.iter().filter(|&&t| t == id).count();
    let im_start = 1; // <|im_start|>
    let im_end = 2; // <|im_end|>
    assert_eq!(count(&cut, im_start), count(&full, im_start));
    assert_eq!(count(&cut, im_end), count(&full, im_end));
    // The prompt ends with the instruction's cue and the generation prompt, as the whole one does.
    let n = 12;
    let prompt_len = cut.labels.iter().take_while(|&&l| l == finetune_data::IGNORE_INDEX).count();
    let full_prompt_len = full.labels.iter().take_while(|&&l| l == finetune_data::IGNORE_INDEX).count();
    assert_eq!(cut.input_ids[prompt_len - n..prompt_len], full.input_ids[full_prompt_len - n..full_prompt_len]);
    assert_eq!(cut.input_ids[..n], full.input_ids[..n]);
}
