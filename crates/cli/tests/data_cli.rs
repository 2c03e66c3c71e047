//! `finetune data dedup | filter | select` end to end on small files written here: outputs, reports, counts, and
//! bad input named by file and line with exit code 2 and no output written.

mod common;

use std::path::Path;

use common::{finetune, ok, stderr};
use finetune_train::Pooling;

fn write(dir: &Path, name: &str, lines: &[serde_json::Value]) -> String {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p.display().to_string()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn lines(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p).expect("read").lines().map(|l| serde_json::from_str(l).expect("json line")).collect()
}

const BASE: &str = "the committee met on tuesday to discuss the budget for the new library and agreed to \
                    postpone the vote until the next meeting in march because several members were absent";

#[test]
fn near_dedup_within_and_against_a_test_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let near = BASE.replace("absent", "away");
    let other = "a completely different text about cooking pasta with garlic olive oil and fresh basil leaves \
                 from the garden which takes about twenty minutes from start to finish on a weeknight";
    let third = "the weather report says it will rain all weekend so the football match has been moved indoors \
                 to the sports hall near the station where parking is limited and tickets are sold out";
    let train = write(
        tmp.path(),
        "train.jsonl",
        &[
            serde_json::json!({"text": BASE, "label": "a"}),
            serde_json::json!({"text": other, "label": "b"}),
            serde_json::json!({"text": near, "label": "a"}),
            serde_json::json!({"text": third, "label": "b"}),
        ],
    );
    let test = write(tmp.path(), "test.jsonl", &[serde_json::json!({"text": third.to_uppercase(), "label": "b"})]);
    let out = tmp.path().join("kept.jsonl");
    let report = tmp.path().join("report.jsonl");
    let o = ok(finetune(&[
        "data",
        "dedup",
        &train,
        "--near",
        "--threshold",
        "0.7",
        "--against",
        &test,
        "-o",
        out.to_str().expect("path"),
        "--report",
        report.to_str().expect("path"),
    ]));
    let s = stdout(&o);
    assert!(s.contains("1 clusters, 1 near-duplicates removed") && s.contains("1 more removed"), "{s}");
    let kept = lines(&out);
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert_eq!(kept[0]["text"], BASE);
    assert_eq!(kept[1]["text"], other);
    let rep = lines(&report);
    assert_eq!(rep.len(), 2);
    assert_eq!(rep[0]["kept"]["line"], 1);
    assert_eq!(rep[0]["duplicates"][0]["line"], 3);
    assert!(rep[0]["duplicates"][0]["jaccard"].as_f64().expect("jaccard") >= 0.7);
    assert_eq!(rep[1]["removed"]["line"], 4);
    assert_eq!(rep[1]["matches"][0]["line"], 1);

    // --report is for --near only.
    let o = finetune(&["data", "dedup", &train, "-o", out.to_str().expect("path"), "--report", "r.jsonl"]);
    assert_eq!(o.status.code(), Some(2));
    // Exact de-duplication without --near.
    let o = ok(finetune(&["data", "dedup", &train, "-o", out.to_str().expect("path")]));
    assert!(stdout(&o).contains("removed 0 exact duplicates"), "{}", stdout(&o));

    // A bad record: file and line named, exit 2, nothing written.
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"fine\", \"label\": \"a\"}\n{\"text\": 3, \"label\": \"a\"}\n").expect("write");
    let out2 = tmp.path().join("never.jsonl");
    let o = finetune(&["data", "dedup", bad.to_str().expect("p"), "--near", "-o", out2.to_str().expect("p")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("bad.jsonl:2"), "{}", stderr(&o));
    assert!(!out2.exists());
    // Options that cannot work are refused.
    let o = finetune(&["data", "dedup", &train, "--near", "--threshold", "1.5", "-o", out2.to_str().expect("p")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("threshold"), "{}", stderr(&o));
}

#[test]
fn quality_filters_report_per_filter() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = write(
        tmp.path(),
        "d.jsonl",
        &[
            serde_json::json!({"text": "too short", "label": "a"}),
            serde_json::json!({"text": "a perfectly ordinary sentence with enough words", "label": "a"}),
            serde_json::json!({"text": "### ### ### !!! ### ### ###", "label": "b"}),
            serde_json::json!({"text": "spam spam spam\nspam spam spam\nspam spam spam", "label": "b"}),
        ],
    );
    let out = tmp.path().join("kept.jsonl");
    let report = tmp.path().join("removed.jsonl");
    let o = ok(finetune(&[
        "data",
        "filter",
        &data,
        "--min-words",
        "3",
        "--min-alpha-word-fraction",
        "0.5",
        "--max-duplicate-line-fraction",
        "0.3",
        "-o",
        out.to_str().expect("p"),
        "--report",
        report.to_str().expect("p"),
    ]));
    let s = stdout(&o);
    assert!(s.contains("4 records, 1 kept, 3 removed"), "{s}");
    for (name, n) in [("min_words", 1), ("min_alpha_word_fraction", 1), ("max_duplicate_line_fraction", 1)] {
        assert!(s.lines().any(|l| l.contains(name) && l.trim_end().ends_with(&format!("removed {n}"))), "{name}: {s}");
    }
    assert_eq!(lines(&out).len(), 1);
    let rep = lines(&report);
    assert_eq!(rep[0]["filter"], "min_words");
    assert_eq!(rep[0]["value"], 2.0);
    assert_eq!(rep[2]["line"], 4);

    let o = finetune(&["data", "filter", &data, "-o", out.to_str().expect("p")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no filter given"), "{}", stderr(&o));
    let o = finetune(&["data", "filter", &data, "--max-top-ngram-fraction", "2=x", "-o", out.to_str().expect("p")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("max-top-ngram-fraction"), "{}", stderr(&o));
}

#[test]
fn filter_by_language() {
    let tmp = tempfile::tempdir().expect("tmp");
    let rows = [
        serde_json::json!({"text": "The plot is thin, but the two leads carry the film with real warmth and wit.", "label": 1}),
        serde_json::json!({"text": "Die Handlung ist dünn, aber die beiden Hauptdarsteller tragen den Film mit Wärme.", "label": 1}),
        serde_json::json!({"text": "A slow, dull and overlong story that never finds a reason to exist at all.", "label": 0}),
    ];
    let data = write(tmp.path(), "d.jsonl", &rows);
    let out = tmp.path().join("kept.jsonl");
    let report = tmp.path().join("removed.jsonl");
    let p = out.to_str().expect("p");
    let o =
        ok(finetune(&["data", "filter", &data, "--language", "eng", "-o", p, "--report", report.to_str().expect("p")]));
    assert!(stdout(&o).contains("3 records, 2 kept, 1 removed"), "{}", stdout(&o));
    assert!(stdout(&o).contains("language_eng"), "{}", stdout(&o));
    let kept = lines(&out);
    assert!(kept.iter().all(|r| r["text"].as_str().is_some_and(|t| t.starts_with('T') || t.starts_with('A'))));
    let rep = lines(&report);
    assert_eq!((rep.len(), rep[0]["line"].as_u64(), rep[0]["filter"].as_str()), (1, Some(2), Some("language_eng")));

    let o = finetune(&["data", "filter", &data, "--language", "english", "-o", p]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--language english: not a language code"), "{}", stderr(&o));
    let o = finetune(&["data", "filter", &data, "--min-language-confidence", "0.5", "-o", p]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--language"), "{}", stderr(&o));
    let o = finetune(&["data", "filter", &data, "--language", "eng", "--min-language-confidence", "2", "-o", p]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("language"), "{}", stderr(&o));
}

#[test]
fn select_by_class_and_length() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut rows = Vec::new();
    for i in 0..20 {
        let label = if i % 5 == 0 { "rare" } else { "common" };
        rows.push(serde_json::json!({"text": "word ".repeat(1 + i).trim_end(), "label": label}));
    }
    let data = write(tmp.path(), "d.jsonl", &rows);
    let out = tmp.path().join("sel.jsonl");
    let o = ok(finetune(&["data", "select", &data, "-n", "8", "--by", "class", "-o", out.to_str().expect("p")]));
    let sel = lines(&out);
    assert_eq!(sel.len(), 8);
    assert_eq!(sel.iter().filter(|r| r["label"] == "rare").count(), 4, "{}", stdout(&o));
    let o = ok(finetune(&[
        "data",
        "select",
        &data,
        "-n",
        "4",
        "--by",
        "length",
        "--bins",
        "4",
        "-o",
        out.to_str().expect("p"),
    ]));
    assert!(stdout(&o).contains("length bin 0000: 1 of 5"), "{}", stdout(&o));
    let o = ok(finetune(&["data", "select", &data, "-n", "5", "--seed", "3", "-o", out.to_str().expect("p")]));
    assert!(stdout(&o).contains("selected 5 of 20"), "{}", stdout(&o));
    let o = finetune(&["data", "select", &data, "-n", "5", "--bins", "3", "-o", out.to_str().expect("p")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--bins"), "{}", stderr(&o));
    let o = finetune(&["data", "select", &data, "-n", "50", "-o", out.to_str().expect("p")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot select 50 of 20"), "{}", stderr(&o));
}

#[test]
fn augment_adds_seeded_eda_copies_with_the_original_label() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let wn = common::mini_wordnet(d);
    let input = d.join("in.csv");
    common::csv(&input, 6, 0);
    let run = |out: &Path, seed: &str, extra: &[&str]| {
        let mut args = vec!["data", "augment", input.to_str().unwrap_or_default(), "-o"];
        args.push(out.to_str().unwrap_or_default());
        args.extend_from_slice(&["--num-aug", "3", "--wordnet", wn.to_str().unwrap_or_default(), "--seed", seed]);
        args.extend_from_slice(extra);
        finetune(&args)
    };
    let out = d.join("out.csv");
    let o = ok(run(&out, "1", &[]));
    assert!(stdout(&o).contains("6 records + 18 EDA copies"), "{}", stdout(&o));
    let read = |p: &Path| -> Vec<(String, String)> {
        let text = std::fs::read_to_string(p).expect("read");
        let mut rows = text.lines();
        assert_eq!(rows.next(), Some("text,label"));
        rows.map(|l| l.rsplit_once(',').map(|(t, l)| (t.to_string(), l.to_string())).expect("row")).collect()
    };
    let original = read(&input);
    let rows = read(&out);
    assert_eq!(rows.len(), 24);
    let mut vocab: Vec<&str> = common::WORDS.to_vec();
    vocab.extend(["passion", "detest"]);
    for (i, orig) in original.iter().enumerate() {
        assert_eq!(&rows[4 * i], orig, "the original first, as it was");
        for (text, label) in &rows[4 * i + 1..4 * i + 4] {
            assert_eq!(label, &orig.1, "a copy keeps its original's label");
            assert!(text.split(' ').all(|w| vocab.contains(&w)), "a word from nowhere in {text:?}");
        }
    }
    assert!(rows.iter().any(|(t, _)| t.contains("fine") || t.contains("nice") || t.contains("awful")));
    // Seeded: the same seed writes the same file, another seed another.
    let again = d.join("again.csv");
    ok(run(&again, "1", &[]));
    assert_eq!(std::fs::read(&out).expect("out"), std::fs::read(&again).expect("again"));
    let other = d.join("other.csv");
    ok(run(&other, "2", &[]));
    assert_ne!(std::fs::read(&out).expect("out"), std::fs::read(&other).expect("other"));
    // Bad flags are named, exit 2, nothing written.
    let bad = d.join("bad.csv");
    let o = run(&bad, "1", &["--alpha-rd", "1.5"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--alpha-rd"), "{}", stderr(&o));
    assert!(!bad.exists());
    let o =
        finetune(&["data", "augment", input.to_str().unwrap_or_default(), "-o", "x.csv", "--wordnet", "/nonexistent"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/index.noun"), "{}", stderr(&o));
}

#[test]
fn select_by_k_center_and_by_loss_with_a_model() {
    let s = common::setup();
    let (train, model) = (s.root.join("train.csv"), s.model.to_str().unwrap_or_default().to_string());
    let train = train.to_str().unwrap_or_default().to_string();
    let out = s.root.join("sel.csv");
    let o_path = out.to_str().unwrap_or_default().to_string();
    let sel = |args: &[&str]| {
        let mut a = vec!["data", "select", &train, "-n", "6", "-o", &o_path, "--max-seq-length", "16"];
        a.extend_from_slice(args);
        finetune(&a)
    };
    let rows = || -> Vec<String> {
        std::fs::read_to_string(&out).expect("selection").lines().skip(1).map(str::to_string).collect()
    };

    // k-center over the base encoder's sentence vectors (mean pooling by default, or [CLS]): the rows the
    // library's embeddings and k-center choose.
    let read = finetune_train::workflow::read_opts("text", None, Some("label"), None);
    let examples = finetune_train::workflow::read(&train, &read).expect("read");
    let infer = finetune_train::workflow::InferOptions { max_seq_length: 16, ..Default::default() };
    let lines: Vec<String> =
        std::fs::read_to_string(&train).expect("csv").lines().skip(1).map(str::to_string).collect();
    for (flags, pooling) in [(vec![], Pooling::Mean), (vec!["--pooling", "cls"], Pooling::Cls)] {
        let mut args = vec!["--by", "k-center", "--model", &model, "--seed", "3"];
        args.extend(flags);
        let o = ok(sel(&args));
        assert!(stdout(&o).contains("selected 6 of 24"), "{}", stdout(&o));
        let vectors = finetune_train::workflow::embed_examples(&model, &examples, &infer, "t", pooling).expect("embed");
        assert_eq!((vectors.len(), vectors[0].len()), (24, 32));
        let expect = finetune_data::select::k_center_greedy(&vectors, 6, 3).expect("k-center");
        assert_eq!(rows(), expect.iter().map(|&i| lines[i].clone()).collect::<Vec<_>>(), "{pooling:?}");
    }

    // Loss under a trained classifier: the six rows with the highest -ln p(label) of `finetune predict`.
    let cfg = common::config(&s, "run", "max_steps = 4\n");
    ok(finetune(&["train", "--config", cfg.to_str().unwrap_or_default(), "--progress", "off"]));
    let run = s.root.join("run").to_str().unwrap_or_default().to_string();
    let p = s.root.join("p.jsonl");
    let ps = p.to_str().unwrap_or_default();
    ok(finetune(&["predict", "--model", &run, "--data", &train, "--out", ps, "--max-seq-length", "16"]));
    let losses: Vec<f64> = std::fs::read_to_string(&p)
        .expect("predictions")
        .lines()
        .zip(&lines)
        .map(|(l, row)| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            let label = row.rsplit(',').next().unwrap_or_default();
            -v["probabilities"][label].as_f64().expect("probability").ln()
        })
        .collect();
    for (lowest, flag) in [(false, None), (true, Some("--lowest"))] {
        let mut args = vec!["--by", "loss", "--model", &run];
        args.extend(flag);
        let o = ok(sel(&args));
        assert!(stdout(&o).contains("loss under") && stdout(&o).contains("class pos: 3 of 12"), "{}", stdout(&o));
        // Class by class: the three hardest (or easiest) "pos" rows and the three of "neg" (12 of each).
        let mut keep = Vec::new();
        for class in ["neg", "pos"] {
            let mut order: Vec<usize> = (0..24).filter(|&i| lines[i].ends_with(class)).collect();
            order.sort_by(|&a, &b| {
                let c = losses[a].total_cmp(&losses[b]);
                if lowest {
                    c
                } else {
                    c.reverse()
                }
            });
            keep.extend_from_slice(&order[..3]);
        }
        keep.sort_unstable();
        assert_eq!(rows(), keep.iter().map(|&i| lines[i].clone()).collect::<Vec<_>>(), "lowest = {lowest}");
    }

    for (args, msg) in [
        (vec!["--by", "loss"], "--by loss needs --model"),
        (vec!["--by", "random", "--model", &model], "--model applies to --by k-center and --by loss only"),
        (vec!["--by", "k-center", "--model", &model, "--lowest"], "--lowest applies to --by loss only"),
        (vec!["--by", "class", "--pooling", "cls"], "--pooling applies to --by k-center only"),
        (vec!["--by", "loss", "--model", &model, "--seed", "1"], "--seed does not apply to --by loss"),
        // The helper passes --max-seq-length, which only the model-based criteria take.
        (vec!["--by", "class"], "--max-seq-length applies to --by k-center and --by loss only"),
        // The fixture's own head has other labels than the data.
        (vec!["--by", "loss", "--model", &model], "train.csv:2: unknown label \"pos\""),
    ] {
        let o = sel(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains(msg), "{args:?}: {}", stderr(&o));
    }
}
