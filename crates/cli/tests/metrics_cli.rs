//! The `finetune metrics` commands end to end: outputs, exit codes and one-line errors naming file and line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn finetune(args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_finetune"));
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn finetune");
    if let Some(s) = stdin {
        child.stdin.take().expect("stdin").write_all(s.as_bytes()).expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("wait")
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/metrics")
}

fn ex(name: &str) -> String {
    examples().join(name).display().to_string()
}

fn tmp(name: &str, content: &str) -> String {
    let dir = std::env::temp_dir().join(format!("finetune-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let p = dir.join(name);
    std::fs::write(&p, content).expect("write tmp");
    p.display().to_string()
}

fn stderr_line(o: &Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(e.trim_end().lines().count(), 1, "error must be one line: {e:?}");
    e
}

#[test]
fn classification_report_text_and_json() {
    let o = finetune(&["metrics", "classification", "--y-true", &ex("gold.txt"), "--y-pred", &ex("pred.txt")], None);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("    accuracy ") && out.contains("weighted avg"), "{out}");

    let o = finetune(
        &[
            "metrics",
            "classification",
            "--y-true",
            &ex("gold.txt"),
            "--y-pred",
            &ex("pred.txt"),
            "--json",
            "--ci",
            "--n-samples",
            "200",
        ],
        None,
    );
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json output");
    let acc = v["accuracy_score"].as_f64().expect("accuracy");
    assert_eq!(v["classification_report"]["accuracy"].as_f64(), Some(acc));
    let ci = &v["confidence_intervals"]["accuracy"];
    assert!(ci["lower"].as_f64() <= Some(acc) && Some(acc) <= ci["upper"].as_f64(), "{ci}");
    // The confusion matrix counts every item once.
    let total: i64 = v["confusion_matrix"]
        .as_array()
        .expect("matrix")
        .iter()
        .flat_map(|r| r.as_array().expect("row"))
        .map(|x| x.as_f64().expect("count") as i64)
        .sum();
    assert_eq!(total, 300);
}

#[test]
fn bad_label_file_is_one_line_error_with_file_and_line() {
    let gold = tmp("gold.txt", "a\nb\n\nc\n");
    let pred = tmp("pred.txt", "a\nb\nc\nc\n");
    let o = finetune(&["metrics", "classification", "--y-true", &gold, "--y-pred", &pred], None);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr_line(&o);
    assert!(e.contains(&format!("{gold}:3: empty label")), "{e}");
    assert!(o.stdout.is_empty(), "nothing may be printed on error");

    let short = tmp("short.txt", "a\nb\n");
    let o = finetune(&["metrics", "classification", "--y-true", &pred, "--y-pred", &short], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_line(&o).contains("4 labels but"), "{}", String::from_utf8_lossy(&o.stderr));

    let bad_utf8 = std::env::temp_dir().join(format!("finetune-cli-test-{}/bad.txt", std::process::id()));
    std::fs::write(&bad_utf8, b"a\n\xff\n").expect("write");
    let o =
        finetune(&["metrics", "classification", "--y-true", &bad_utf8.display().to_string(), "--y-pred", &short], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_line(&o).contains("bad.txt:2: invalid UTF-8"));
}

#[test]
fn ner_conll_errors_name_the_line() {
    let bad = tmp("bad.conll", "EU B-ORG\nrejects\n");
    let o = finetune(&["metrics", "ner", "--gold", &bad, "--pred", &ex("ner_pred.conll")], None);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_line(&o).contains("bad.conll:2: expected at least 2 columns"));
    let o = finetune(
        &[
            "metrics",
            "ner",
            "--gold",
            &ex("ner_gold.conll"),
            "--pred",
            &ex("ner_pred.conll"),
            "--mode",
            "strict",
            "--scheme",
            "IOB2",
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("micro avg"));
}

#[test]
fn bleu_matches_the_library_and_significance_runs() {
    let o = finetune(
        &[
            "metrics",
            "bleu",
            "--hyp",
            &ex("hyp.txt"),
            "--ref",
            &ex("ref.txt"),
            "--json",
            "--compare",
            &ex("ref.txt"),
            "--n-samples",
            "100",
        ],
        None,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let hyps: Vec<String> = std::fs::read_to_string(ex("hyp.txt")).expect("hyp").lines().map(str::to_owned).collect();
    let refs: Vec<String> = std::fs::read_to_string(ex("ref.txt")).expect("ref").lines().map(str::to_owned).collect();
    let lib =
        finetune_metrics::call::call("corpus_bleu", &serde_json::json!({ "hypotheses": hyps, "references": [refs] }))
            .expect("bleu");
    assert_eq!(v["corpus_bleu"]["score"], lib["score"]);
    // Against the references themselves the candidate scores 100 and the test reports the fitted baseline.
    assert!((v["paired_test"]["score"]["baseline"].as_f64().expect("baseline") - 100.0).abs() < 1e-9);
}

#[test]
fn call_answers_every_line_and_reports_errors_in_band() {
    let input = concat!(
        r#"{"metric": "f1_score", "args": {"y_true": [0, 1, 1], "y_pred": [0, 1, 0], "average": "macro"}}"#,
        "\n",
        r#"{"metric": "f1_score", "args": {"y_true": [0, 1], "y_pred": [0]}}"#,
        "\n",
        "not json\n",
        r#"{"metric": "no_such_metric", "args": {}}"#,
        "\n",
        r#"{"metric": "seqeval.f1_score", "args": {"y_true": [["B-PER", "O"]], "y_pred": [["B-PER", "O"]]}}"#,
        "\n",
    );
    let o = finetune(&["metrics", "call"], Some(input));
    assert!(o.status.success());
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    assert_eq!(lines.len(), 5);
    assert!((lines[0]["result"].as_f64().expect("f1") - 2.0 / 3.0).abs() < 1e-15);
    assert_eq!(lines[1]["error"]["kind"], "ValueError");
    assert_eq!(lines[2]["error"]["kind"], "JSONDecodeError");
    assert_eq!(lines[3]["error"]["kind"], "KeyError");
    assert_eq!(lines[4]["result"].as_f64(), Some(1.0));
}

#[test]
fn list_names_each_reference() {
    let o = finetune(&["metrics", "list"], None);
    let out = String::from_utf8_lossy(&o.stdout);
    for (name, reference) in [
        ("classification_report", "sklearn.metrics.classification_report"),
        ("roc_auc_score", "sklearn.metrics.roc_auc_score"),
        ("seqeval.classification_report", "seqeval.metrics.classification_report"),
        ("corpus_bleu", "sacrebleu.corpus_bleu"),
    ] {
        assert!(out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == [name, reference]), "{name}\n{out}");
    }
}
