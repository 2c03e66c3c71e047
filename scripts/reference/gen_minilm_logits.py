"""Reference logits of the real all-MiniLM-L6-v2 with a sequence-classification head (transformers, eval mode).

Run with the pinned torch venv after scripts/fetch.sh:
    .venv-torch/bin/python scripts/reference/gen_minilm_logits.py
Writes crates/models/tests/fixtures/minilm_seqcls.safetensors: the seeded classifier head (the rest of the model
is the fetched checkpoint), the padded batch, and transformers' logits.
"""
import os

import torch
from safetensors.torch import save_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

root = os.path.join(os.path.dirname(__file__), "..", "..")
model_dir = os.path.join(root, "assets", "all-MiniLM-L6-v2")
out = os.path.join(root, "crates", "models", "tests", "fixtures", "minilm_seqcls.safetensors")

torch.manual_seed(0)
model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=3, attn_implementation="eager").eval()
# A larger head than the default N(0, 0.02) init gives O(1) logits, so the comparison is sensitive.
with torch.no_grad():
    model.classifier.weight.mul_(50.0)
tok = AutoTokenizer.from_pretrained(model_dir)
sentences = [
    "A gripping, beautifully acted film.",
    "The plot never comes together, and the jokes fall flat.",
    "Café au lait, naïve résumé — accents everywhere.",
    "東京で映画を見ました",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism",
    "ok",
    "It is neither good nor bad; it simply exists, for two long hours, on a screen in front of you.",
]
enc = tok(sentences, padding=True, truncation=True, max_length=64, return_tensors="pt")
with torch.no_grad():
    logits = model(**enc).logits
save_file(
    {
        "classifier.weight": model.classifier.weight.detach().contiguous(),
        "classifier.bias": model.classifier.bias.detach().contiguous(),
        "input_ids": enc["input_ids"].to(torch.int32).contiguous(),
        "attention_mask": enc["attention_mask"].to(torch.int32).contiguous(),
        "token_type_ids": enc["token_type_ids"].to(torch.int32).contiguous(),
        "logits": logits.contiguous(),
    },
    out,
)
print(out, tuple(enc["input_ids"].shape), logits)
