mod common;

use finetune_metrics::rouge::{porter_stem, rouge_mean, RougeMean, RougeScorer};

#[test]
fn rouge_fixtures() {
    assert!(common::run_fixture_file("rouge.json") >= 200);
}

/// The Porter stemmer against NLTK's `PorterStemmer().stem` on the fixture's word list.
#[test]
fn porter_matches_nltk() {
    let fixture = common::load("rouge.json");
    let words = fixture["porter"]["words"].as_array().expect("porter.words");
    let stems = fixture["porter"]["stems"].as_array().expect("porter.stems");
    assert_eq!(words.len(), stems.len());
    assert!(words.len() > 3000);
    let bad: Vec<String> = words
        .iter()
        .zip(stems)
        .filter_map(|(w, s)| {
            let (w, s) = (w.as_str().expect("word"), s.as_str().expect("stem"));
            let got = porter_stem(w);
            (got != s).then(|| format!("{w}: got {got}, nltk {s}"))
        })
        .collect();
    assert!(bad.is_empty(), "{} of {} words differ:\n{}", bad.len(), words.len(), bad.join("\n"));
}

/// The streaming mean equals the one-shot mean and the per-pair scores it averages.
#[test]
fn streaming_mean_equals_one_shot() {
    let scorer = RougeScorer::new(&["rouge1", "rouge2", "rougeL", "rougeLsum"], true, false).expect("scorer");
    let preds = ["the cat sat on the mat", "a dog ran\nquickly home", "", "nothing in common"];
    let targets = [
        vec!["the cat was on the mat"],
        vec!["a dog runs home quickly", "the dog ran"],
        vec!["empty prediction"],
        vec!["zzz"],
    ];
    let mut acc = RougeMean::new(scorer.clone());
    for (t, p) in targets.iter().zip(preds) {
        acc.update_multi(t, p).expect("update");
    }
    let streamed = acc.compute().expect("compute");
    let one_shot = rouge_mean(&scorer, &targets, &preds).expect("one shot");
    assert_eq!(streamed, one_shot);
    let per: Vec<_> = targets.iter().zip(preds).map(|(t, p)| scorer.score_multi(t, p).expect("score_multi")).collect();
    for (k, (name, s)) in streamed.iter().enumerate() {
        let mean = per.iter().map(|x| x[k].1.fmeasure).sum::<f64>() / per.len() as f64;
        assert_eq!(name, scorer.rouge_types()[k].as_str());
        assert!((s.fmeasure - mean).abs() < 1e-15, "{name}");
    }
    assert!(streamed[0].1.fmeasure > 0.0);
    assert!(RougeMean::new(scorer).compute().is_err());
}
