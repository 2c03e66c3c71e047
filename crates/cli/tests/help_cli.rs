//! `--help` teaches: every subcommand that runs a job shows its defaults and worked examples.

mod common;

use common::*;

#[test]
fn help_of_every_job_command_has_examples_and_defaults() {
    for cmd in [
        &["train"][..],
        &["eval"],
        &["predict"],
        &["cv"],
        &["data", "split"],
        &["data", "clean"],
        &["data", "stats"],
        &["data", "dedup"],
        &["data", "filter"],
        &["data", "select"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let o = ok(finetune(&args));
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let name = cmd.join(" ");
        assert!(text.contains("Examples:"), "`finetune {name} --help` has no examples:\n{text}");
        assert!(text.contains(&format!("finetune {name} ")), "`{name}` examples do not run `{name}`:\n{text}");
        assert!(text.contains("[default: "), "`finetune {name} --help` shows no defaults:\n{text}");
    }
    // train --help lists every TrainingArguments key with its HF default.
    let text = String::from_utf8_lossy(&ok(finetune(&["train", "--help"])).stdout).into_owned();
    for key in ["learning_rate", "num_train_epochs", "per_device_train_batch_size", "save_steps", "max_seq_length"] {
        assert!(text.lines().any(|l| l.trim_start().starts_with(key) && l.contains("default")), "{key}:\n{text}");
    }
    let cv = String::from_utf8_lossy(&ok(finetune(&["cv", "--help"])).stdout).into_owned();
    assert!(cv.contains("--folds <FOLDS>") && cv.contains("[default: 5]"), "{cv}");
}
