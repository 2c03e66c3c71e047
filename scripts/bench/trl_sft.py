"""TRL side of scripts/bench/sft.sh: `SFTTrainer` + PEFT LoRA on the same SFT config as `finetune sft --config`.

Reads the example's TOML and maps it key for key: the model from the same GGUF (dequantised to f32 by transformers),
the train and test JSON Lines of prompt/completion records given to TRL as conversational prompt/completion (the
tokenizer's chat template renders them, as our side does), `max_seq_length` -> `max_length`, `packing`,
completion-only loss (TRL's default for prompt/completion data), LoRA r/alpha/dropout/target modules, batch size,
steps, learning rate, scheduler, warm-up (`warmup_ratio` as transformers 5's fractional `warmup_steps`), weight decay, logging steps, seed; `bf16` -> `SFTConfig(bf16=True)`
(autocast). No checkpoints are saved (`save_strategy="no"` on both sides), and evaluation during training is off.

After training: the loss on the validation and test sets' completion tokens (`trainer.evaluate`), then greedy generation of
`max_new_tokens` for every test prompt (chat template with the generation prompt, batch of
`per_device_eval_batch_size`, left padding) and exact match of the stripped generation against the completion.
Writes all_results.json (train_runtime, eval_loss, test_loss, test_exact_match, in %) to --output-dir.
"""

import argparse
import json
import os
import sys
import time
import tomllib
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
# Keys this script maps; any other key of the config is refused, so no setting is silently dropped. output_dir and
# the save_* keys are overridden on both sides (--output-dir, save_strategy = "no").
MAPPED = {
    "model_name_or_path", "train_file", "validation_file", "test_file", "max_seq_length", "packing",
    "max_new_tokens", "use_peft", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "output_dir",
    "overwrite_output_dir", "seed", "max_steps", "per_device_train_batch_size", "per_device_eval_batch_size",
    "learning_rate", "lr_scheduler_type", "warmup_ratio", "weight_decay", "eval_strategy", "save_strategy",
    "save_steps", "save_total_limit", "logging_steps", "bf16",
}


def records(path):
    out = []
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            r = json.loads(line)
            if set(r) != {"prompt", "completion"}:
                sys.exit(f"{path}:{i}: expected prompt/completion records, got keys {sorted(r)}")
            out.append(r)
    return out


def conversational(rs):
    return [
        {"prompt": [{"role": "user", "content": r["prompt"]}],
         "completion": [{"role": "assistant", "content": r["completion"]}]}
        for r in rs
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--max-steps", type=int)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = tomllib.load(open(a.config, "rb"))
    unknown = sorted(set(cfg) - MAPPED)
    if unknown:
        sys.exit(f"{a.config}: keys not mapped to TRL here: {', '.join(unknown)}")
    if cfg.get("eval_strategy", "no") != "no":
        sys.exit(f"{a.config}: eval_strategy = {cfg['eval_strategy']!r}: this comparison evaluates after training only")
    if not cfg.get("use_peft", False):
        sys.exit(f"{a.config}: this comparison is for LoRA (use_peft = true)")

    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    model_dir = ROOT / cfg["model_name_or_path"]
    ggufs = sorted(model_dir.glob("*.gguf"))
    if not ggufs:
        sys.exit(f"{model_dir}: no GGUF file")
    gguf = ggufs[0].name
    tok = AutoTokenizer.from_pretrained(str(model_dir), gguf_file=gguf)
    if tok.chat_template is None:
        sys.exit(f"{model_dir / gguf}: the tokenizer has no chat template")
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), gguf_file=gguf, dtype=torch.float32)
    # Every parameter is a dequantised f32 tensor, but transformers keeps the GGUF "quantizer" attached, and
    # Trainer refuses to train a model it thinks is quantized.
    assert all(p.dtype == torch.float32 for p in model.parameters())
    model.hf_quantizer, model.is_quantized, model.quantization_method = None, False, None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    train = Dataset.from_list(conversational(records(ROOT / cfg["train_file"])))
    test_records = records(ROOT / cfg["test_file"])
    test = Dataset.from_list(conversational(test_records))
    target = cfg.get("lora_target_modules", "all-linear")
    lora = LoraConfig(
        r=cfg["lora_r"], lora_alpha=cfg["lora_alpha"], lora_dropout=cfg["lora_dropout"],
        target_modules=target if target == "all-linear" else [t.strip() for t in target.split(",")],
        task_type="CAUSAL_LM",
    )
    args = SFTConfig(
        output_dir=a.output_dir,
        max_length=cfg["max_seq_length"],
        packing=cfg.get("packing", False),
        completion_only_loss=True,
        max_steps=a.max_steps or cfg["max_steps"],
        per_device_train_batch_size=cfg["per_device_train_batch_size"],
        per_device_eval_batch_size=cfg["per_device_eval_batch_size"],
        learning_rate=cfg["learning_rate"],
        lr_scheduler_type=cfg["lr_scheduler_type"],
        # transformers 5 folds warmup_ratio into warmup_steps: a value below 1 is a ratio of the total steps.
        warmup_steps=float(cfg.get("warmup_ratio", 0.0)),
        weight_decay=cfg.get("weight_decay", 0.0),
        logging_steps=cfg.get("logging_steps", 500),
        seed=cfg.get("seed", 42),
        bf16=a.bf16,
        eval_strategy="no",
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, processing_class=tok, peft_config=lora)
    out = trainer.train()
    results = {"train_runtime": out.metrics["train_runtime"], "train_loss": out.metrics["train_loss"]}

    t0 = time.time()
    if cfg.get("validation_file"):
        val = Dataset.from_list(conversational(records(ROOT / cfg["validation_file"])))
        results["eval_loss"] = trainer.evaluate(eval_dataset=val, metric_key_prefix="eval")["eval_loss"]
    ev = trainer.evaluate(eval_dataset=test, metric_key_prefix="test")
    results["test_loss"] = ev["test_loss"]

    # Greedy generation on the (unmerged) LoRA model, left-padded batches.
    m = trainer.model.eval()
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    prompts = [tok.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) for r in test]
    bs = cfg["per_device_eval_batch_size"]
    hits = 0
    preds = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16):
        for i in range(0, len(prompts), bs):
            enc = tok(prompts[i:i + bs], return_tensors="pt", padding=True, add_special_tokens=False)
            gen = m.generate(**enc, max_new_tokens=cfg["max_new_tokens"], do_sample=False,
                             pad_token_id=tok.pad_token_id)
            for j, row in enumerate(gen[:, enc["input_ids"].shape[1]:]):
                p = tok.decode(row, skip_special_tokens=True).strip()
                preds.append(p)
                hits += p == test_records[i + j]["completion"].strip()
    results["test_exact_match"] = 100.0 * hits / len(prompts)
    results["test_runtime"] = time.time() - t0
    Path(a.output_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(a.output_dir) / "all_results.json", "w") as f:
        json.dump(results, f, indent=2)
    with open(Path(a.output_dir) / "predictions.jsonl", "w") as f:
        for r, p in zip(test_records, preds):
            f.write(json.dumps({"prediction": p, "reference": r["completion"]}) + "\n")
    from importlib.metadata import version
    print(f"trl_sft: trl {version('trl')}, peft {version('peft')}, transformers {version('transformers')}, "
          f"torch {torch.__version__}, {a.threads} threads; {json.dumps(results)}")


if __name__ == "__main__":
    main()
