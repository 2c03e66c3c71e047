"""The HF Trainer (PyTorch) side of scripts/bench/trainer.sh: fine-tunes and evaluates an encoder from one of our
example run files (examples/*.toml) as transformers' run_glue.py / run_ner.py would, on the train/validation/test
files the driver wrote with `finetune data split`, and writes output_dir/all_results.json with the same keys as
`finetune train` (test_accuracy, test_f1, ...).

Kept equal to our side on purpose:
- Hyper-parameters: every TrainingArguments key of the TOML is passed to TrainingArguments under the same name
  (an unknown key is an error, so nothing is silently dropped). Keys transformers 5 renamed or dropped are
  mapped: warmup_ratio -> warmup_steps (a value < 1 is a ratio: ceil(total steps * ratio), as ours),
  group_by_length -> train_sampling_strategy="group_by_length", early_stopping_* -> EarlyStoppingCallback;
  overwrite_output_dir is left out (no such argument; the driver empties the folder before each run).
- Dynamic padding to a multiple of 8 per batch (DataCollatorWithPadding / DataCollatorForTokenClassification with
  pad_to_multiple_of=8), as our collator pads.
- Labels: sorted unique labels of the training file (run_glue.py / run_ner.py); NER labels only a word's first
  sub-token unless label_all_tokens (run_ner.py).
- Saving: checkpoints as save_strategy / save_total_limit say, then the final model and tokenizer in output_dir
  (run_glue.py's trainer.save_model), as `finetune train` does.
- Evaluation: with eval_strategy != "no" the validation metrics are those of the last in-training evaluation (our
  CLI reuses them too); run_glue.py's extra trainer.evaluate() after training is skipped so both sides do the
  same work. The test split is evaluated and predicted once (trainer.predict).
- CPU only (use_cpu=True), f32 unless --bf16 or the config's bf16 = true (then TrainingArguments(bf16=True)),
  dataloader_num_workers=0, torch.set_num_threads(--threads).

Metrics: sequence classification: accuracy and macro precision/recall/F1 (scikit-learn, zero_division=0);
token classification: seqeval default-mode entity-level micro precision/recall/F1 and token accuracy, on the
labelled (first) sub-tokens as run_ner.py computes them.
"""

import argparse
import csv
import dataclasses
import json
import os
import sys
import time
import tomllib

T0 = time.time()

# Run keys of `finetune train` (crates/cli/src/train_cmd.rs RUN_KEYS): not TrainingArguments.
RUN_KEYS = {
    "model_name_or_path", "task", "train_file", "validation_file", "test_file", "text_column_name",
    "text_pair_column_name", "label_column_name", "label_separator", "problem_type", "max_seq_length", "split",
    "do_train", "do_eval", "do_predict", "resume_from_checkpoint", "label_all_tokens", "format",
}


def read_examples(path, text_col, pair_col, label_col):
    """CSV/TSV/JSONL as our split writes them: (text, pair or None, label as str)."""
    out = []
    if path.endswith(".jsonl") or path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    out.append((r[text_col], r[pair_col] if pair_col else None, str(r[label_col])))
    else:
        delim = "\t" if path.endswith(".tsv") else ","
        with open(path, encoding="utf-8", newline="") as f:
            for r in csv.DictReader(f, delimiter=delim):
                out.append((r[text_col], r[pair_col] if pair_col else None, r[label_col]))
    if not out:
        sys.exit(f"{path}: no examples")
    return out


def read_conll(path):
    """CoNLL: token and tag per line (first and last column), blank line between sentences."""
    sentences, tokens, tags = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\r\n")
            if not line.strip():
                if tokens:
                    sentences.append((tokens, tags))
                    tokens, tags = [], []
                continue
            cols = line.split("\t") if "\t" in line else line.split()
            if cols[0] == "-DOCSTART-":
                continue
            tokens.append(cols[0])
            tags.append(cols[-1])
    if tokens:
        sentences.append((tokens, tags))
    if not sentences:
        sys.exit(f"{path}: no sentences")
    return sentences


def training_arguments(cfg, output_dir, max_steps, bf16=False):
    import transformers
    from transformers import TrainingArguments

    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    kw, callbacks, early, ratio = {}, [], {}, 0.0
    for k, v in cfg.items():
        if k in RUN_KEYS or k == "overwrite_output_dir":
            continue
        if k == "group_by_length":
            if v:
                kw["train_sampling_strategy"] = "group_by_length"
        elif k == "warmup_ratio" and k not in fields:
            ratio = v
        elif k in ("early_stopping_patience", "early_stopping_threshold"):
            early[k] = v
        elif k in fields:
            kw[k] = v
        else:
            sys.exit(f"TrainingArguments {transformers.__version__} has no key `{k}`: cannot mirror it")
    if early.get("early_stopping_patience") is not None:
        callbacks.append(transformers.EarlyStoppingCallback(
            early_stopping_patience=early["early_stopping_patience"],
            early_stopping_threshold=early.get("early_stopping_threshold", 0.0)))
    # transformers 5 folds warmup_ratio into warmup_steps (a value < 1 is a ratio, ceil(total * ratio) steps); ours
    # keeps the transformers 4 rule: warmup_ratio is used when warmup_steps is 0.
    if ratio and not kw.get("warmup_steps"):
        if not 0 < ratio < 1:
            sys.exit(f"warmup_ratio = {ratio}: only 0 < ratio < 1 can be mirrored as transformers 5 warmup_steps")
        kw["warmup_steps"] = float(ratio)
    kw["output_dir"] = output_dir
    if max_steps is not None:
        kw["max_steps"] = max_steps
    # bf16 (the config's key or --bf16): HF's mixed precision, forward and loss under torch.autocast(cpu, bfloat16).
    bf16 = bool(bf16 or kw.get("bf16", False))
    kw.update(use_cpu=True, fp16=False, bf16=bf16, dataloader_num_workers=0, report_to="none", disable_tqdm=True)
    return TrainingArguments(**kw), callbacks


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--train-file", required=True)
    ap.add_argument("--validation-file")
    ap.add_argument("--test-file")
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--max-steps", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, help="training seed instead of the config's")
    ap.add_argument("--bf16", action="store_true", help="TrainingArguments(bf16=True): bf16 autocast")
    a = ap.parse_args()

    import numpy as np
    import torch
    import transformers
    from transformers import AutoConfig, AutoTokenizer, Trainer, set_seed

    torch.set_num_threads(a.threads)
    with open(a.config, "rb") as f:
        cfg = tomllib.load(f)
    if a.seed is not None:
        cfg["seed"] = a.seed
    task = cfg.get("task", "sequence-classification")
    if task not in ("sequence-classification", "token-classification"):
        sys.exit(f"{a.config}: task {task!r} is not benchmarked")
    if cfg.get("problem_type", "single_label_classification") != "single_label_classification":
        sys.exit(f"{a.config}: only single_label_classification is benchmarked")
    args, callbacks = training_arguments(cfg, a.output_dir, a.max_steps, a.bf16)
    # run_glue.py / run_ner.py seed before the model is created, so the new head is seeded.
    set_seed(args.seed)

    model_path = cfg["model_name_or_path"]
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    max_len = min(int(cfg.get("max_seq_length", 128)), tokenizer.model_max_length)
    text_col = cfg.get("text_column_name", "text")
    pair_col = cfg.get("text_pair_column_name")
    label_col = cfg.get("label_column_name", "label")
    files = {"train": a.train_file, "validation": a.validation_file, "test": a.test_file}
    files = {k: v for k, v in files.items() if v}

    if task == "sequence-classification":
        from sklearn.metrics import accuracy_score, precision_recall_fscore_support
        from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

        raw = {k: read_examples(p, text_col, pair_col, label_col) for k, p in files.items()}
        labels = sorted({e[2] for e in raw["train"]})
        label2id = {l: i for i, l in enumerate(labels)}

        def encode(rows, path):
            texts = [r[0] for r in rows]
            pairs = [r[1] for r in rows] if pair_col else None
            enc = tokenizer(texts, pairs, padding=False, max_length=max_len, truncation=True)
            out = []
            for i, r in enumerate(rows):
                if r[2] not in label2id:
                    sys.exit(f"{path}: label {r[2]!r} is not in the training labels {labels}")
                item = {k: enc[k][i] for k in enc.keys()}
                item["labels"] = label2id[r[2]]
                out.append(item)
            return out

        data = {k: encode(rows, files[k]) for k, rows in raw.items()}
        config = AutoConfig.from_pretrained(model_path, num_labels=len(labels), id2label=dict(enumerate(labels)),
                                            label2id=label2id)
        model = AutoModelForSequenceClassification.from_pretrained(model_path, config=config)
        collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)

        def compute_metrics(p):
            y_pred = np.argmax(p.predictions, axis=-1)
            y_true = p.label_ids
            prec, rec, f1, _ = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=0)
            return {"accuracy": float(accuracy_score(y_true, y_pred)), "precision": float(prec),
                    "recall": float(rec), "f1": float(f1)}
    else:
        from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score
        from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification

        raw = {k: read_conll(p) for k, p in files.items()}
        labels = sorted({t for _, tags in raw["train"] for t in tags})
        label2id = {l: i for i, l in enumerate(labels)}
        label_all_tokens = bool(cfg.get("label_all_tokens", False))
        # run_ner.py's b_to_i_label: with label_all_tokens, continuation sub-tokens of a B-X word get I-X.
        b_to_i = [label2id.get("I-" + l[2:], i) if l.startswith("B-") else i for i, l in enumerate(labels)]

        def encode(sentences, path):
            enc = tokenizer([s[0] for s in sentences], padding=False, truncation=True, max_length=max_len,
                            is_split_into_words=True)
            out = []
            for i, (_, tags) in enumerate(sentences):
                ids = []
                for t in tags:
                    if t not in label2id:
                        sys.exit(f"{path}: tag {t!r} is not in the training tags {labels}")
                    ids.append(label2id[t])
                # run_ner.py's tokenize_and_align_labels.
                word_ids, prev, lab = enc.word_ids(batch_index=i), None, []
                for w in word_ids:
                    if w is None:
                        lab.append(-100)
                    elif w != prev:
                        lab.append(ids[w])
                    else:
                        lab.append(b_to_i[ids[w]] if label_all_tokens else -100)
                    prev = w
                item = {k: enc[k][i] for k in enc.keys()}
                item["labels"] = lab
                out.append(item)
            return out

        data = {k: encode(s, files[k]) for k, s in raw.items()}
        config = AutoConfig.from_pretrained(model_path, num_labels=len(labels), id2label=dict(enumerate(labels)),
                                            label2id=label2id)
        model = AutoModelForTokenClassification.from_pretrained(model_path, config=config)
        collator = DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=8)

        def tags_of(p):
            pred = np.argmax(p.predictions, axis=-1)
            gold_tags, pred_tags = [], []
            for ps, ls in zip(pred, p.label_ids):
                keep = [(labels[q], labels[g]) for q, g in zip(ps, ls) if g != -100]
                pred_tags.append([q for q, _ in keep])
                gold_tags.append([g for _, g in keep])
            return gold_tags, pred_tags

        def compute_metrics(p):
            g, q = tags_of(p)
            return {"precision": float(precision_score(g, q)), "recall": float(recall_score(g, q)),
                    "f1": float(f1_score(g, q)), "accuracy": float(accuracy_score(g, q))}

    trainer = Trainer(model=model, args=args, train_dataset=data["train"], eval_dataset=data.get("validation"),
                      processing_class=tokenizer, data_collator=collator, compute_metrics=compute_metrics,
                      callbacks=callbacks)
    result = trainer.train()
    trainer.save_model()
    train_metrics = dict(result.metrics, train_samples=len(data["train"]))
    trainer.save_metrics("train", train_metrics)
    trainer.save_state()

    if "validation" in data:
        evals = [h for h in trainer.state.log_history if "eval_loss" in h]
        if args.eval_strategy != "no" and evals:
            m = {k: v for k, v in evals[-1].items() if k.startswith("eval_")}
        else:
            m = trainer.evaluate()
        m["eval_samples"] = len(data["validation"])
        trainer.save_metrics("eval", m)
    if "test" in data:
        p = trainer.predict(data["test"], metric_key_prefix="test")
        m = dict(p.metrics)
        m["test_samples"] = len(data["test"])
        trainer.save_metrics("test", m)
        with open(os.path.join(a.output_dir, "predict_results.txt"), "w", encoding="utf-8") as f:
            if task == "sequence-classification":
                f.write("index\tprediction\n")
                for i, c in enumerate(np.argmax(p.predictions, axis=-1)):
                    f.write(f"{i}\t{labels[c]}\n")
            else:
                for q in tags_of(p)[1]:
                    f.write(" ".join(q) + "\n")
        print("***** test metrics *****")
        for k, v in sorted(m.items()):
            print(f"  {k:<28} = {v}")
    print(f"hf_trainer: transformers {transformers.__version__}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {time.time() - T0:.1f} s in the script")


if __name__ == "__main__":
    main()
