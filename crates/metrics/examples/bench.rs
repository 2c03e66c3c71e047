//! Our side of the metrics benchmark (`scripts/bench/metrics.sh`): reads the inputs written by
//! `scripts/bench/metrics_ref.py`, times each metric on data already in memory (as the Python side does), checks
//! the result equals the reference's, and writes `ours.json` with the median seconds.

use std::time::Instant;

use finetune_metrics::generation::{bleu, chrf};
use finetune_metrics::{classification, ranking, sequence};
use serde_json::{json, Value};

fn median_secs(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[runs / 2]
}

fn lines(dir: &str, name: &str) -> Vec<String> {
    let path = format!("{dir}/{name}");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (run scripts/bench/metrics.sh)"))
        .lines()
        .map(str::to_owned)
        .collect()
}

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "bench-out/metrics".into());
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/reference.json")).expect("reference.json"))
            .expect("json");
    let expected = &reference["_expected"];
    let mut ours = serde_json::Map::new();
    let mut check = |name: &str, secs: f64, same: bool| {
        println!("{name}: {secs:.4} s (same result as the reference: {})", if same { "yes" } else { "NO" });
        ours.insert(name.into(), json!({ "seconds": secs, "same": same }));
    };

    let y_true: Vec<i64> = lines(&dir, "cls_true.txt").iter().map(|l| l.parse().expect("int")).collect();
    let y_pred: Vec<i64> = lines(&dir, "cls_pred.txt").iter().map(|l| l.parse().expect("int")).collect();
    let opts = classification::ReportOptions::default();
    let mut text = String::new();
    let secs = median_secs(5, || {
        let r = classification::classification_report(&y_true, &y_pred, None, &opts).expect("report");
        text = r.to_text(4).expect("text");
    });
    check("classification_report_1M", secs, expected["classification_report_1M"].as_str() == Some(&text));

    let labels: Vec<f64> = lines(&dir, "auc_true.txt").iter().map(|l| l.parse().expect("int")).collect();
    let scores: Vec<f64> = lines(&dir, "auc_score.txt").iter().map(|l| l.parse().expect("float")).collect();
    let (yt, ys) = (ranking::YTrue::Labels(ranking::Labels::Num(labels)), ranking::YScore::Vector(scores));
    let mut auc = f64::NAN;
    let secs = median_secs(5, || {
        if let ranking::Scores::Scalar(a) = ranking::roc_auc_score(&yt, &ys, &Default::default()).expect("auc") {
            auc = a;
        }
    });
    let want = expected["roc_auc_score_1M"].as_f64().unwrap_or(f64::NAN);
    check("roc_auc_score_1M", secs, (auc - want).abs() <= 1e-9 * want.abs());

    let split = |name: &str| -> Vec<Vec<String>> {
        lines(&dir, name).iter().map(|l| l.split(' ').map(str::to_owned).collect()).collect()
    };
    let (st, sp) = (split("ner_true.txt"), split("ner_pred.txt"));
    let mut text = String::new();
    let secs = median_secs(5, || {
        let r = sequence::classification_report(&st, &sp, &Default::default()).expect("seqeval report");
        text = r.text(4).expect("text");
    });
    check("seqeval_report_100k", secs, expected["seqeval_report_100k"].as_str() == Some(&text));

    let hyps = lines(&dir, "mt_hyp.txt");
    let refs = lines(&dir, "mt_ref.txt");
    let hyps_opt: Vec<Option<&str>> = hyps.iter().map(|h| Some(h.as_str())).collect();
    let ref_stream: Vec<Vec<Option<&str>>> = vec![refs.iter().map(|r| Some(r.as_str())).collect()];
    let mut score = f64::NAN;
    let secs = median_secs(5, || {
        score = bleu::corpus_bleu(&hyps_opt, &ref_stream, &Default::default()).expect("bleu").score;
    });
    let want = expected["corpus_bleu_10k"].as_f64().unwrap_or(f64::NAN);
    check("corpus_bleu_10k", secs, (score - want).abs() <= 1e-9 * want.abs());
    let secs = median_secs(5, || {
        score = chrf::corpus_chrf(&hyps_opt, &ref_stream, &Default::default()).expect("chrf").score;
    });
    let want = expected["corpus_chrf_10k"].as_f64().unwrap_or(f64::NAN);
    check("corpus_chrf_10k", secs, (score - want).abs() <= 1e-9 * want.abs());

    let out = format!("{dir}/ours.json");
    std::fs::write(&out, serde_json::to_string_pretty(&Value::Object(ours)).expect("json")).expect("write ours.json");
}
