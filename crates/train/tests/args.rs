//! TOML parsing, `--set` overrides and HF validation of `TrainingArguments`.

use finetune_train::{IntervalStrategy, SaveStrategy, SchedulerType, TrainingArguments};

fn err_of<T: std::fmt::Debug>(r: finetune_train::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn defaults_are_hf_defaults() {
    let a = TrainingArguments::default();
    assert_eq!(a.num_train_epochs, 3.0);
    assert_eq!(a.max_steps, -1);
    assert_eq!((a.per_device_train_batch_size, a.per_device_eval_batch_size, a.gradient_accumulation_steps), (8, 8, 1));
    assert_eq!((a.learning_rate, a.weight_decay, a.max_grad_norm), (5e-5, 0.0, 1.0));
    assert_eq!((a.adam_beta1, a.adam_beta2, a.adam_epsilon), (0.9, 0.999, 1e-8));
    assert_eq!(a.lr_scheduler_type, SchedulerType::Linear);
    assert_eq!((a.seed, a.logging_steps, a.save_steps), (42, 500.0, 500.0));
    assert_eq!(a.eval_strategy, IntervalStrategy::No);
    assert_eq!(a.save_strategy, SaveStrategy::Steps);
    // An empty file gives the defaults.
    assert_eq!(TrainingArguments::from_toml_str("", "empty.toml").unwrap(), a);
}

#[test]
fn toml_fields_parse() {
    let a = TrainingArguments::from_toml_str(
        "output_dir = \"out\"\nlearning_rate = 2e-5\nnum_train_epochs = 2\nlr_scheduler_type = \"cosine\"\n\
         eval_strategy = \"epoch\"\nsave_total_limit = 2\nmetric_for_best_model = \"f1\"\n",
        "run.toml",
    )
    .unwrap();
    assert_eq!(a.output_dir, "out");
    assert_eq!(a.learning_rate, 2e-5);
    assert_eq!(a.num_train_epochs, 2.0);
    assert_eq!(a.lr_scheduler_type, SchedulerType::Cosine);
    assert_eq!(a.save_total_limit, Some(2));
}

#[test]
fn unknown_toml_key_names_key_and_file() {
    let e = err_of(TrainingArguments::from_toml_str("learning_rat = 1e-4\n", "cfg/run.toml"));
    assert!(e.contains("cfg/run.toml") && e.contains("learning_rat"), "{e}");
    let e = err_of(TrainingArguments::from_toml_str("lr_scheduler_type = \"polynomial\"\n", "a.toml"));
    assert!(e.contains("a.toml") && e.contains("polynomial"), "{e}");
    let e = err_of(TrainingArguments::from_toml_str("seed = \"x\"\n", "a.toml"));
    assert!(e.contains("a.toml") && e.contains("seed"), "{e}");
}

#[test]
fn set_overrides_parse_with_field_type() {
    let mut a = TrainingArguments::default();
    a.set("learning_rate=1e-4").unwrap();
    a.set("max_steps=20").unwrap();
    a.set("eval_strategy=steps").unwrap();
    a.set("save_total_limit=3").unwrap();
    a.set("save_total_limit=none").unwrap();
    a.set("load_best_model_at_end=true").unwrap();
    a.set("output_dir=runs/x=y").unwrap();
    assert_eq!((a.learning_rate, a.max_steps), (1e-4, 20));
    assert_eq!(a.eval_strategy, IntervalStrategy::Steps);
    assert_eq!(a.save_total_limit, None);
    assert!(a.load_best_model_at_end);
    assert_eq!(a.output_dir, "runs/x=y");

    let e = err_of(a.set("max_steps=ten"));
    assert!(e.contains("max_steps") && e.contains("an integer"), "{e}");
    let e = err_of(a.set("per_device_train_batch_size=-1"));
    assert!(e.contains("per_device_train_batch_size") && e.contains("non-negative integer"), "{e}");
    let e = err_of(a.set("eval_strategy=sometimes"));
    assert!(e.contains("eval_strategy") && e.contains("no, steps, epoch"), "{e}");
    let e = err_of(a.set("overwrite_output_dir=yes"));
    assert!(e.contains("overwrite_output_dir") && e.contains("boolean"), "{e}");
    let e = err_of(a.set("learnin_rate=1"));
    assert!(e.contains("learnin_rate") && e.contains("unknown"), "{e}");
    let e = err_of(a.set("learning_rate"));
    assert!(e.contains("key=value"), "{e}");
}

#[test]
fn derived_values_as_hf() {
    let mut a = TrainingArguments { eval_strategy: IntervalStrategy::Steps, logging_steps: 50.0, ..Default::default() };
    a.finalize().unwrap();
    assert_eq!(a.eval_steps, Some(50.0));
    assert_eq!(a.metric_for_best_model, None);

    let mut a = TrainingArguments {
        load_best_model_at_end: true,
        eval_strategy: IntervalStrategy::Steps,
        eval_steps: Some(100.0),
        ..Default::default()
    };
    a.finalize().unwrap();
    assert_eq!(a.metric_for_best_model.as_deref(), Some("loss"));
    assert_eq!(a.greater_is_better, Some(false));

    let mut a = TrainingArguments { metric_for_best_model: Some("accuracy".into()), ..Default::default() };
    a.finalize().unwrap();
    assert_eq!(a.greater_is_better, Some(true));
    let mut a = TrainingArguments { metric_for_best_model: Some("eval_nll_loss".into()), ..Default::default() };
    a.finalize().unwrap();
    assert_eq!(a.greater_is_better, Some(false));
    assert_eq!(a.best_metric_key().as_deref(), Some("eval_nll_loss"));
}

#[test]
fn validation_errors_are_hf_messages() {
    let mut a = TrainingArguments {
        load_best_model_at_end: true,
        eval_strategy: IntervalStrategy::Epoch,
        ..Default::default()
    };
    let e = err_of(a.finalize());
    assert!(e.starts_with("--load_best_model_at_end requires the save and eval strategy to match"), "{e}");
    assert!(e.contains("IntervalStrategy.EPOCH") && e.contains("SaveStrategy.STEPS"), "{e}");

    let mut a = TrainingArguments {
        load_best_model_at_end: true,
        eval_strategy: IntervalStrategy::Steps,
        eval_steps: Some(300.0),
        ..Default::default()
    };
    let e = err_of(a.finalize());
    assert!(
        e.contains("round multiple of the evaluation steps, but found 500, which is not a round multiple of 300"),
        "{e}"
    );

    // save_strategy = "best" needs no matching eval strategy beyond having one.
    let mut a = TrainingArguments {
        load_best_model_at_end: true,
        eval_strategy: IntervalStrategy::Epoch,
        save_strategy: SaveStrategy::Best,
        ..Default::default()
    };
    a.finalize().unwrap();

    let mut a = TrainingArguments { logging_steps: 0.0, ..Default::default() };
    assert!(err_of(a.finalize()).contains("requires non-zero --logging_steps"));
    let mut a = TrainingArguments { logging_steps: 12.5, ..Default::default() };
    assert!(err_of(a.finalize()).contains("--logging_steps must be an integer if bigger than 1: 12.5"));
    let mut a = TrainingArguments { warmup_steps: -1.0, ..Default::default() };
    assert!(err_of(a.finalize()).contains("Expected value warmup_steps >= 0"));
    let mut a = TrainingArguments { early_stopping_patience: Some(2), ..Default::default() };
    assert!(err_of(a.finalize()).contains("EarlyStoppingCallback requires IntervalStrategy of steps or epoch"));
    let mut a = TrainingArguments { gradient_accumulation_steps: 0, ..Default::default() };
    assert!(err_of(a.finalize()).contains("gradient_accumulation_steps"));
}

#[test]
fn load_reads_file_and_applies_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.toml");
    std::fs::write(&p, "learning_rate = 1e-3\nmax_steps = 5\n").unwrap();
    let a = TrainingArguments::load(Some(&p), &["max_steps=7".into()]).unwrap();
    assert_eq!((a.learning_rate, a.max_steps), (1e-3, 7));
    let e = err_of(TrainingArguments::load(Some(&dir.path().join("missing.toml")), &[]));
    assert!(e.contains("missing.toml"), "{e}");
    std::fs::write(&p, "foo = 1\n").unwrap();
    let e = err_of(TrainingArguments::load(Some(&p), &[]));
    assert!(e.contains("t.toml") && e.contains("foo"), "{e}");
}

/// Every key the TOML reader accepts (the serialised field names) is settable with `--set` and has a row in
/// `KEY_USES` saying where it acts or is refused; a row without a key is stale.
#[test]
fn every_key_is_used_or_refused() {
    let keys: Vec<String> = match serde_json::to_value(TrainingArguments::default()) {
        Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
        other => panic!("TrainingArguments serialises to an object, got {other:?}"),
    };
    let uses: Vec<&str> = finetune_train::args::KEY_USES.iter().map(|(k, _)| *k).collect();
    for k in &keys {
        assert!(uses.contains(&k.as_str()), "training argument `{k}` is accepted but KEY_USES says nothing of it");
        let d = serde_json::to_value(TrainingArguments::default()).expect("json")[k].clone();
        let text = match d {
            serde_json::Value::String(s) => s,
            serde_json::Value::Null => "none".into(),
            v => v.to_string(),
        };
        TrainingArguments::default().set(&format!("{k}={text}")).unwrap_or_else(|e| panic!("--set {k}: {e}"));
    }
    for u in &uses {
        assert!(keys.iter().any(|k| k == u), "KEY_USES lists `{u}`, which is not a training argument");
        let e = err_of(TrainingArguments::default().set(&format!("{u}x=1")));
        assert!(e.contains("unknown"), "{e}");
    }
    assert_eq!(keys.len(), uses.len());
}
