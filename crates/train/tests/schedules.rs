//! Learning rates against transformers 5.23.0 (`scripts/reference/gen_schedules.py`).

use finetune_train::{Schedule, SchedulerType, TrainingArguments, TrainingPlan};
use serde_json::Value;

fn kind(s: &str) -> SchedulerType {
    match s {
        "linear" => SchedulerType::Linear,
        "cosine" => SchedulerType::Cosine,
        "constant" => SchedulerType::Constant,
        "constant_with_warmup" => SchedulerType::ConstantWithWarmup,
        other => panic!("unknown scheduler {other}"),
    }
}

#[test]
fn schedules_match_transformers() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schedules.json"))
        .expect("fixture");
    let fx: Value = serde_json::from_str(&text).expect("json");
    let cases = fx["cases"].as_array().expect("cases");
    assert!(cases.len() > 100);
    let mut checked = 0;
    for c in cases {
        let total = c["num_training_steps"].as_u64().unwrap();
        let args = TrainingArguments {
            warmup_steps: c["warmup_steps"].as_f64().unwrap(),
            lr_scheduler_type: kind(c["scheduler"].as_str().unwrap()),
            learning_rate: c["learning_rate"].as_f64().unwrap(),
            ..Default::default()
        };
        let s = Schedule::from_args(&args, total);
        assert_eq!(s.num_warmup_steps, c["num_warmup_steps"].as_u64().unwrap(), "{c}");
        for (step, want) in c["lrs"].as_array().unwrap().iter().enumerate() {
            let want = want.as_f64().unwrap();
            let got = s.lr(args.learning_rate, step as u64);
            let tol = 1e-12 * want.abs().max(f64::MIN_POSITIVE);
            assert!((got - want).abs() <= tol, "{} step {step}: got {got}, want {want}", c["scheduler"]);
            checked += 1;
        }
    }
    assert!(checked > 10_000, "{checked}");
}

#[test]
fn warmup_ratio_is_used_when_warmup_steps_is_zero() {
    let args = TrainingArguments { warmup_ratio: 0.1, ..Default::default() };
    assert_eq!(args.get_warmup_steps(95), 10);
    let args = TrainingArguments { warmup_ratio: 0.1, warmup_steps: 3.0, ..Default::default() };
    assert_eq!(args.get_warmup_steps(95), 3);
}

fn plan(args: TrainingArguments, len: u64, n: u64) -> TrainingPlan {
    TrainingPlan::new(&args, len, n).unwrap()
}

#[test]
fn step_arithmetic_follows_trainer() {
    // 10 batches, accumulation 3: ceil(10/3) = 4 updates per epoch; 3 epochs = 12 steps.
    let p = plan(TrainingArguments { gradient_accumulation_steps: 3, ..Default::default() }, 10, 80);
    assert_eq!((p.num_update_steps_per_epoch, p.max_steps, p.num_train_epochs), (4, 12, 3));
    assert_eq!(p.num_train_samples, 240.0);
    // Fractional epochs: ceil(2.5 * 4) = 10 steps over ceil(2.5) = 3 epochs.
    let p =
        plan(TrainingArguments { gradient_accumulation_steps: 3, num_train_epochs: 2.5, ..Default::default() }, 10, 80);
    assert_eq!((p.max_steps, p.num_train_epochs), (10, 3));
    // max_steps wins over epochs: 9 steps at 4 per epoch span 3 epochs.
    let p = plan(TrainingArguments { gradient_accumulation_steps: 3, max_steps: 9, ..Default::default() }, 10, 80);
    assert_eq!((p.max_steps, p.num_train_epochs), (9, 3));
    assert_eq!(p.num_train_samples, (9 * 24) as f64);
    // Fewer batches than the accumulation window still make one update per epoch.
    let p = plan(TrainingArguments { gradient_accumulation_steps: 8, ..Default::default() }, 3, 20);
    assert_eq!(p.num_update_steps_per_epoch, 1);
    // Ratios of max_steps for logging/eval/save, rounded up as TrainerState.compute_steps.
    let mut a = TrainingArguments {
        logging_steps: 0.1,
        save_steps: 0.25,
        eval_strategy: finetune_train::IntervalStrategy::Steps,
        ..Default::default()
    };
    a.finalize().unwrap();
    let p = plan(a, 10, 80);
    assert_eq!((p.max_steps, p.logging_steps, p.eval_steps, p.save_steps), (30, 3, 3, 8));
    assert!(TrainingPlan::new(&TrainingArguments::default(), 0, 0).is_err());
}

#[test]
fn dataloader_length() {
    assert_eq!(finetune_train::num_batches(10, 4, false), 3);
    assert_eq!(finetune_train::num_batches(10, 4, true), 2);
    assert_eq!(finetune_train::num_batches(0, 4, false), 0);
}
