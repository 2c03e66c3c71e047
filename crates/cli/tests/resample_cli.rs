//! `resample = "over" | "under"` at train time on an imbalanced training file (tiny random BERT).

mod common;

use common::*;

/// 20 "pos" and 4 "neg" training sentences.
fn imbalanced(s: &Setup) {
    let mut text = String::from("text,label\n");
    for i in 0..24 {
        let (w, l) = if i < 20 { (WORDS[i % 5], "pos") } else { (WORDS[5 + i % 5], "neg") };
        text.push_str(&format!("{w} {w},{l}\n"));
    }
    std::fs::write(s.root.join("train.csv"), text).expect("write");
}

fn num_examples(out: &std::path::Path) -> u64 {
    let events = std::fs::read_to_string(out.join("events.jsonl")).expect("events");
    let begin = events.lines().find(|l| l.contains("\"train_begin\"")).expect("train_begin");
    let v: serde_json::Value = serde_json::from_str(begin).expect("json");
    v["num_examples"].as_u64().expect("num_examples")
}

#[test]
fn resampling_balances_the_training_data_and_says_so() {
    let s = setup();
    imbalanced(&s);
    for (how, n) in [("over", 40), ("under", 8)] {
        let cfg = config(&s, how, &format!("max_steps = 1\nresample = \"{how}\"\n"));
        let o = ok(finetune(&["train", "--config", cfg.to_str().unwrap_or_default(), "--progress", "off"]));
        assert_eq!(num_examples(&s.root.join(how)), n, "resample = {how}");
        let e = stderr(&o);
        assert!(e.contains(&format!("resample = \"{how}\" (seed 42): 24 -> {n} training examples")), "{e}");
    }
    let cfg = config(&s, "plain", "max_steps = 1\n");
    ok(finetune(&["train", "--config", cfg.to_str().unwrap_or_default(), "--progress", "off"]));
    assert_eq!(num_examples(&s.root.join("plain")), 24);
}

#[test]
fn resample_refuses_what_it_cannot_do() {
    let s = setup();
    let cfg = config(&s, "bad", "resample = \"sideways\"\n");
    let o = finetune(&["train", "--config", cfg.to_str().unwrap_or_default()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("key `resample`"), "{}", stderr(&o));
}
