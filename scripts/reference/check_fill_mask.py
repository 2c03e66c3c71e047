"""Loads a masked-LM directory written by `finetune train` (task = "fill-mask") with transformers'
AutoModelForMaskedLM (every weight found, the decoder tied to the word embeddings) and compares the fill-mask
pipeline's top 5 per mask with `finetune predict` on the same texts: the same token ids, token strings and
filled sequences, scores within 1e-4.

    finetune predict --model bench-out/mlm --data masked.csv --out fill.jsonl
    .venv-torch/bin/python scripts/reference/check_fill_mask.py bench-out/mlm masked.csv fill.jsonl
"""
import csv
import json
import sys

from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline


def main(model_dir, data, preds):
    model, info = AutoModelForMaskedLM.from_pretrained(model_dir, output_loading_info=True)
    missing = [k for k in info["missing_keys"] if not k.endswith("decoder.weight") and not k.endswith("decoder.bias")]
    assert not missing and not info["mismatched_keys"], info
    emb = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight.data_ptr() == emb.data_ptr(), "decoder tied to the embeddings"
    fill = pipeline("fill-mask", model=model.eval(), tokenizer=AutoTokenizer.from_pretrained(model_dir), top_k=5)
    rows = [r["text"] for r in csv.DictReader(open(data, newline="", encoding="utf-8"))]
    ours = [json.loads(line) for line in open(preds, encoding="utf-8")]
    assert len(ours) == len(rows), f"{len(ours)} predictions for {len(rows)} rows"
    worst, masks, same = 0.0, 0, 0
    for text, o in zip(rows, ours):
        ref = fill(text)
        ref = ref if isinstance(ref[0], list) else [ref]
        assert len(ref) == len(o["masks"]), f"{text!r}: {len(ref)} masks vs {len(o['masks'])}"
        for r, m in zip(ref, o["masks"]):
            masks += 1
            key = lambda c: (c["token"], c["token_str"], c["sequence"])  # noqa: E731
            same += [key(c) for c in r] == [key(c) for c in m]
            worst = max(worst, max(abs(c["score"] - d["score"]) for c, d in zip(r, m)))
    print(f"{len(rows)} texts, {masks} masks: the same top-5 tokens, token_str and sequence on {same}, max |score difference| {worst:.2e}; "
          f"loading info {info}")
    return 0 if same == masks and worst < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
