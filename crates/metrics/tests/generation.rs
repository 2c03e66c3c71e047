mod common;

use finetune_metrics::generation::tokenize::{tokenize_tercom, TercomOptions, Tokenizer};
use finetune_metrics::generation::{
    bleu_from_stats, bleu_stats, corpus_bleu, corpus_chrf, BleuAccumulator, BleuOptions, ChrfAccumulator, ChrfOptions,
    NumRefs, Smooth, TerAccumulator,
};

#[test]
fn generation_fixtures() {
    let n = common::run_fixture_file("generation.json");
    assert!(n >= 500, "only {n} cases");
}

/// Tokenizer outputs recorded from sacrebleu's tokenizer objects, including a wide Unicode sample.
#[test]
fn tokenizers_match_sacrebleu() {
    let fixture = common::load("generation.json");
    check_tokenizer_cases(&fixture, 1000);
}

/// The same check on a larger file in the fixture's format (e.g. every code point), named by
/// `GEN_TOKENIZER_CASES`.
#[test]
#[ignore]
fn tokenizers_match_file() {
    let path = std::env::var("GEN_TOKENIZER_CASES").expect("GEN_TOKENIZER_CASES must name a JSON file");
    let text = std::fs::read_to_string(path).expect("read");
    check_tokenizer_cases(&serde_json::from_str(&text).expect("JSON"), 1);
}

fn check_tokenizer_cases(fixture: &serde_json::Value, min_cases: usize) {
    let cases = fixture["tokenizer_cases"].as_array().expect("tokenizer_cases");
    assert!(cases.len() >= min_cases);
    let mut failures = Vec::new();
    for c in cases {
        let name = c["tokenize"].as_str().expect("name");
        let input = c["input"].as_str().expect("input");
        let expected = c["output"].as_str().expect("output");
        let got = if name == "tercom" {
            let flag = |k: &str| c[k].as_bool().expect("flag");
            let opts = TercomOptions {
                normalized: flag("normalized"),
                no_punct: flag("no_punct"),
                asian_support: flag("asian_support"),
                case_sensitive: flag("case_sensitive"),
            };
            tokenize_tercom(input, opts)
        } else {
            Tokenizer::parse(name).expect("tokenizer").tokenize(input).into_owned()
        };
        if got != expected {
            let diverge = got.chars().zip(expected.chars()).take_while(|(a, b)| a == b).count();
            let around: String = expected.chars().skip(diverge.saturating_sub(10)).take(30).collect();
            let got_around: String = got.chars().skip(diverge.saturating_sub(10)).take(30).collect();
            failures
                .push(format!("{name} {c:.200}: differs at char {diverge}: expected {around:?}, got {got_around:?}"));
        }
    }
    assert!(failures.is_empty(), "{} tokenizer differences:\n{}", failures.len(), failures.join("\n"));
}

fn corpus_from_fixture(id: &str) -> (Vec<String>, Vec<Vec<Option<String>>>) {
    let fixture = common::load("generation.json");
    let case = fixture["cases"].as_array().expect("cases").iter().find(|c| c["id"] == id).expect("case").clone();
    let hyps = case["args"]["hypotheses"]
        .as_array()
        .expect("hyps")
        .iter()
        .map(|h| h.as_str().expect("str").to_owned())
        .collect();
    let refs = case["args"]["references"]
        .as_array()
        .expect("refs")
        .iter()
        .map(|s| s.as_array().expect("stream").iter().map(|r| r.as_str().map(str::to_owned)).collect())
        .collect();
    (hyps, refs)
}

fn as_refs(refs: &[Vec<Option<String>>], lo: usize, hi: usize) -> Vec<Vec<Option<&str>>> {
    refs.iter().map(|s| s[lo..hi].iter().map(|r| r.as_deref()).collect()).collect()
}

#[test]
fn streaming_equals_corpus() {
    let (hyps, refs) = corpus_from_fixture("bleu_big");
    let n = hyps.len();
    let h: Vec<&str> = hyps.iter().map(String::as_str).collect();
    let h_opt: Vec<Option<&str>> = h.iter().map(|&s| Some(s)).collect();

    for opts in
        [BleuOptions::default(), BleuOptions { smooth_method: Smooth::AddK, lowercase: true, ..BleuOptions::default() }]
    {
        let one = corpus_bleu(&h_opt, &as_refs(&refs, 0, n), &opts).expect("bleu");
        let mut acc = BleuAccumulator::new(opts);
        for lo in (0..n).step_by(37) {
            let hi = (lo + 37).min(n);
            acc.update(&h[lo..hi], &as_refs(&refs, lo, hi)).expect("update");
        }
        assert_eq!(acc.compute().expect("compute"), one);

        // Summed per-segment statistics give the same score (the basis of bootstrap resampling).
        let mut sum = [0.0; 10];
        for i in 0..n {
            let seg: Vec<Option<&str>> = refs.iter().map(|s| s[i].as_deref()).collect();
            for (a, x) in sum.iter_mut().zip(bleu_stats(h[i], &seg, &opts).expect("stats")) {
                *a += x;
            }
        }
        assert_eq!(bleu_from_stats(&sum, &opts, NumRefs::Fixed(refs.len())), one);
    }

    for opts in [ChrfOptions::default(), ChrfOptions { word_order: 2, eps_smoothing: true, ..ChrfOptions::default() }] {
        let one = corpus_chrf(&h_opt, &as_refs(&refs, 0, n), &opts).expect("chrf");
        let mut acc = ChrfAccumulator::new(opts);
        for lo in (0..n).step_by(50) {
            let hi = (lo + 50).min(n);
            acc.update(&h[lo..hi], &as_refs(&refs, lo, hi)).expect("update");
        }
        assert_eq!(acc.compute().expect("compute"), one);
    }
    let t_opts = TercomOptions { normalized: true, ..TercomOptions::default() };
    let m = 120.min(n);
    let one = finetune_metrics::generation::corpus_ter(&h_opt[..m], &as_refs(&refs, 0, m), &t_opts).expect("ter");
    let mut acc = TerAccumulator::new(t_opts);
    for lo in (0..m).step_by(25) {
        let hi = (lo + 25).min(m);
        acc.update(&h[lo..hi], &as_refs(&refs, lo, hi)).expect("update");
    }
    assert_eq!(acc.compute().expect("compute"), one);
    assert!(BleuAccumulator::new(BleuOptions::default()).compute().is_err());
}

/// With other n-gram orders, summed per-segment statistics and the streaming accumulator still give the
/// corpus score (the corpus scores themselves are checked against sacrebleu by the fixtures).
#[test]
fn statistics_follow_max_ngram_order() {
    let (hyps, refs) = corpus_from_fixture("cbleu_big_defaults");
    let n = hyps.len();
    let h: Vec<&str> = hyps.iter().map(String::as_str).collect();
    let h_opt: Vec<Option<&str>> = h.iter().map(|&s| Some(s)).collect();
    for order in [0, 1, 2, 6, 10, 16] {
        let opts =
            BleuOptions { max_ngram_order: order, use_effective_order: order % 2 == 0, ..BleuOptions::default() };
        let one = corpus_bleu(&h_opt, &as_refs(&refs, 0, n), &opts).expect("bleu");
        assert_eq!(one.precisions.len(), order);
        let mut acc = BleuAccumulator::new(opts);
        let mut sum = vec![0.0; opts.n_stats()];
        for i in 0..n {
            acc.update(&h[i..=i], &as_refs(&refs, i, i + 1)).expect("update");
            let seg: Vec<Option<&str>> = refs.iter().map(|s| s[i].as_deref()).collect();
            let stats = bleu_stats(h[i], &seg, &opts).expect("stats");
            assert_eq!(stats.len(), opts.n_stats());
            for (a, x) in sum.iter_mut().zip(stats) {
                *a += x;
            }
        }
        assert_eq!(acc.compute().expect("compute"), one);
        assert_eq!(bleu_from_stats(&sum, &opts, NumRefs::Fixed(refs.len())), one);
    }
}

#[test]
fn fixture_covers_every_function() {
    let fixture = common::load("generation.json");
    for name in [
        "corpus_bleu",
        "sentence_bleu",
        "corpus_chrf",
        "sentence_chrf",
        "corpus_ter",
        "sentence_ter",
        "BLEU.corpus_score",
        "BLEU.sentence_score",
        "CHRF.corpus_score",
        "CHRF.sentence_score",
    ] {
        let n = fixture["cases"].as_array().expect("cases").iter().filter(|c| c["metric"] == name).count();
        assert!(n >= 50, "{name}: {n} cases");
    }
    let listed = finetune_metrics::call::list();
    for (name, reference) in [
        ("BLEU.corpus_score", "sacrebleu.metrics.BLEU.corpus_score"),
        ("BLEU.sentence_score", "sacrebleu.metrics.BLEU.sentence_score"),
        ("CHRF.corpus_score", "sacrebleu.metrics.CHRF.corpus_score"),
        ("CHRF.sentence_score", "sacrebleu.metrics.CHRF.sentence_score"),
    ] {
        assert!(listed.iter().any(|m| m.name == name && m.reference == reference), "{name} not listed");
    }
    // Every n-gram order 0..=8 at both levels, with and without effective order, and both lowercase settings.
    let cases = fixture["cases"].as_array().expect("cases");
    for name in ["BLEU.corpus_score", "BLEU.sentence_score"] {
        for order in 0..=8 {
            for eff in [false, true] {
                let n = cases
                    .iter()
                    .filter(|c| {
                        c["metric"] == name
                            && c["args"]["max_ngram_order"] == order
                            && c["args"]["effective_order"] == eff
                            && c.get("result").is_some()
                    })
                    .count();
                assert!(n >= 4, "{name} order {order} eff {eff}: {n} cases");
            }
        }
    }
    for lc in [false, true] {
        let n = cases.iter().filter(|c| c["metric"] == "CHRF.corpus_score" && c["args"]["lowercase"] == lc).count();
        assert!(n >= 20, "CHRF lowercase={lc}: {n} cases");
    }
}

/// Timing on a corpus written by the sacrebleu timing script (run with
/// `GEN_BENCH=/path/corpus.json cargo test --release -p finetune-metrics --test generation -- --ignored --nocapture`).
#[test]
#[ignore]
fn bench_corpus() {
    let path = std::env::var("GEN_BENCH").expect("GEN_BENCH must name a JSON file with hypotheses and references");
    let text = std::fs::read_to_string(path).expect("read GEN_BENCH");
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let hyps: Vec<Option<&str>> = v["hypotheses"].as_array().expect("hyps").iter().map(|h| h.as_str()).collect();
    let refs: Vec<Vec<Option<&str>>> = v["references"]
        .as_array()
        .expect("refs")
        .iter()
        .map(|s| s.as_array().expect("stream").iter().map(|r| r.as_str()).collect())
        .collect();
    let time = |name: &str, f: &dyn Fn() -> String| {
        let mut best = f64::INFINITY;
        let mut out = String::new();
        for _ in 0..3 {
            let t = std::time::Instant::now();
            out = f();
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("{name}: {:.1} ms  {out}", best * 1e3);
    };
    time("bleu", &|| corpus_bleu(&hyps, &refs, &BleuOptions::default()).expect("bleu").format());
    time("chrf", &|| corpus_chrf(&hyps, &refs, &ChrfOptions::default()).expect("chrf").format());
    time("chrf++", &|| {
        corpus_chrf(&hyps, &refs, &ChrfOptions { word_order: 2, ..ChrfOptions::default() }).expect("chrf").format()
    });
    let ter_refs: Vec<Vec<Option<&str>>> = refs.iter().map(|s| s[..2000.min(s.len())].to_vec()).collect();
    let ter_hyps = &hyps[..2000.min(hyps.len())];
    time("ter", &|| {
        finetune_metrics::generation::corpus_ter(ter_hyps, &ter_refs, &TercomOptions::default()).expect("ter").format()
    });
}
