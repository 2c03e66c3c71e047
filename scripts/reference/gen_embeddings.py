"""Reference sentence vectors of the real all-MiniLM-L6-v2 (transformers, eval mode), for `finetune data select
--by k-center`: the last layer's [CLS] hidden state, and sentence-transformers' embedding of this model (the mean
of the last hidden states over the attention mask, L2-normalised).

Run with the pinned torch venv after scripts/fetch.sh:
    .venv-torch/bin/python scripts/reference/gen_embeddings.py
Writes crates/train/tests/fixtures/minilm_embeddings.json.
"""
import json
import os

import torch
import transformers
from transformers import AutoModel, AutoTokenizer

root = os.path.join(os.path.dirname(__file__), "..", "..")
model_dir = os.path.join(root, "assets", "all-MiniLM-L6-v2")
out = os.path.join(root, "crates", "train", "tests", "fixtures", "minilm_embeddings.json")

sentences = [
    "A gripping, beautifully acted film.",
    "The plot never comes together, and the jokes fall flat.",
    "Café au lait, naïve résumé — accents everywhere.",
    "東京で映画を見ました",
    "ok",
    "It is neither good nor bad; it simply exists, for two long hours, on a screen in front of you.",
]
model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
tok = AutoTokenizer.from_pretrained(model_dir)
enc = tok(sentences, padding=True, truncation=True, max_length=128, return_tensors="pt")
with torch.no_grad():
    hidden = model(**enc).last_hidden_state
mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
mean = torch.nn.functional.normalize(mean, p=2, dim=1)
fixture = {
    "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
    "max_length": 128,
    "sentences": sentences,
    "cls": hidden[:, 0].tolist(),
    "mean": mean.tolist(),
}
with open(out, "w", encoding="utf-8") as f:
    json.dump(fixture, f, ensure_ascii=False)
    f.write("\n")
print(out, tuple(hidden.shape))
