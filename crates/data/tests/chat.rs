//! Chat templates rendered byte for byte as transformers 5.23.0 renders them
//! (fixture: scripts/reference/gen_chat_templates.py).

use finetune_data::chat::{strftime, ChatError, ChatMessage, ChatTemplate};
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/chat_templates.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("fixture json")
}

#[test]
fn renders_like_transformers() {
    let fx = fixture();
    let cases = fx["cases"].as_array().expect("cases");
    assert!(cases.len() >= 60);
    let mut rendered = 0;
    let mut raised = 0;
    for case in cases {
        let name = case["template"].as_str().expect("template");
        let conv = case["conversation"].as_str().expect("conversation");
        let agp = case["add_generation_prompt"].as_bool().expect("agp");
        let template = ChatTemplate::new(
            fx["templates"][name].as_str().expect("template text"),
            case["bos_token"].as_str(),
            case["eos_token"].as_str(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let messages: Vec<ChatMessage> = serde_json::from_value(fx["conversations"][conv].clone()).expect("messages");
        let got = template.render(&messages, agp);
        let what = format!("{name} / {conv} / add_generation_prompt={agp}");
        match (case.get("rendered"), case.get("error")) {
            (Some(expected), _) => {
                let got = got.unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(got, expected.as_str().expect("str"), "{what}");
                rendered += 1;
            }
            (None, Some(err)) => {
                assert_eq!(got, Err(ChatError::Raised(err.as_str().expect("str").to_owned())), "{what}");
                raised += 1;
            }
            _ => panic!("{what}: fixture case has neither rendered nor error"),
        }
    }
    assert!(rendered > 0 && raised > 0);
}

#[test]
fn syntax_and_render_errors_are_typed() {
    assert!(matches!(ChatTemplate::new("{% for m in messages %}", None, None), Err(ChatError::Syntax(_))));
    let t = ChatTemplate::new("{{ messages[0].content.nope.deeper }}", None, None).expect("compiles");
    let err = t.render(&[ChatMessage::new("user", "x")], false).expect_err("undefined attribute of undefined");
    assert!(matches!(err, ChatError::Render(_)), "{err:?}");
}

#[test]
fn strftime_matches_python() {
    let fx = fixture();
    let cases = fx["strftime"].as_array().expect("strftime cases");
    assert!(!cases.is_empty());
    for c in cases {
        let unix = c["unix"].as_i64().expect("unix");
        let format = c["format"].as_str().expect("format");
        assert_eq!(strftime(unix, format), c["text"].as_str().expect("text"), "{unix} {format}");
    }
    let t = ChatTemplate::new("{{ strftime_now('%Y') }}", None, None).expect("compiles");
    let year: i32 = t.render(&[], false).expect("renders").parse().expect("a year");
    assert!(year >= 2024);
}

/// Templates found by `scripts/fuzz.sh` on which minijinja panics (reversing an empty string), and a `tojson`
/// indent that would allocate its own size: each is a render error, not a crash.
#[test]
fn templates_that_crash_the_engine_or_allocate_absurdly_are_errors() {
    let messages = [ChatMessage::new("user", "hi")];
    for src in [
        "{% set sys = messages[0].content if messages[0].role == 'system' else ''[::-1] %}{{ sys }}",
        "{{ ''[::-1] }}",
        "{{ messages | tojson(indent=99999999999) }}",
    ] {
        let t = ChatTemplate::new(src, None, None).expect("compiles");
        let err = t.render(&messages, false).expect_err(src).to_string();
        assert!(!err.contains('\n'), "{src}: {err}");
    }
}
