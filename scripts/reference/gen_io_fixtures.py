"""Writes the checkpoint and tokenizer fixtures under crates/models/tests/fixtures/io/.

Run with the torch reference venv (torch, transformers, safetensors, tokenizers):
    /work/main/.venv-torch/bin/python scripts/reference/gen_io_fixtures.py
The MiniLM tokenizer expectations need scripts/fetch.sh to have run first (assets/all-MiniLM-L6-v2).

Every expected value comes from torch / transformers, never from our own output.
"""

import io
import json
import os
import pickle
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
import transformers
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "crates" / "models" / "tests" / "fixtures" / "io"
MINILM = ROOT / "assets" / "all-MiniLM-L6-v2"


def values(t):
    # float32 values as Python floats (exact), row-major.
    return t.detach().to(torch.float32).contiguous().reshape(-1).tolist()


def tensors():
    g = torch.Generator().manual_seed(1234)
    base = torch.randn(4, 6, generator=g)
    sd = {
        "encoder.dense.weight": torch.randn(3, 5, generator=g),
        "encoder.dense.bias": torch.randn(5, generator=g),
        # Non-contiguous views: transpose, slice with offset, step slice; they share `base`'s storage.
        "view.base": base,
        "view.transposed": base.t(),
        "view.sliced": base[1:3, 2:5],
        "view.strided": base[::2, ::3],
        "half.weight": torch.randn(2, 3, generator=g).half(),
        "bf16.weight": torch.randn(3, 2, generator=g).bfloat16(),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "param": torch.nn.Parameter(torch.randn(2, 2, generator=g)),
        # Integer buffer as older BERT checkpoints carry: skipped by the loader.
        "embeddings.position_ids": torch.arange(8).unsqueeze(0),
    }
    return sd


def expected(sd):
    out = {}
    for k, v in sd.items():
        if not v.is_floating_point():
            continue
        out[k] = {"shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", ""), "values": values(v)}
    return out


class Evil:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


def malicious_bin(path, fn, arg):
    """A torch-style zip whose data.pkl calls fn(arg) when unpickled by a permissive loader."""
    pkl = pickle.dumps({"weight": Evil(fn, arg)}, protocol=2)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        # Fixed timestamps keep the fixture byte-stable across runs.
        for name, data in [("archive/data.pkl", pkl), ("archive/byteorder", b"little"), ("archive/version", b"3\n")]:
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)


SENTENCES = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "HELLO World, MiXeD CaSe",
    "Café déjà vu: naïve façade, coöperate, résumé.",
    "Ångström and Ørsted met Ñoño in São Paulo.",
    "北京是中国的首都。",
    "東京タワーに行きました",
    "한국어 문장도 있습니다.",
    "Emoji time 😀🎉👍🏽 and 🧑‍🚀!",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism",
    "pneumonoultramicroscopicsilicovolcanoconiosis" * 3,
    "a" * 150,
    "Numbers 3.14159, 1,000,000 and 42% of $100.",
    "email me at someone@example.com or visit https://example.org/path?q=1",
    "Tabs\tand\nnewlines\r\nand   multiple   spaces",
    "",
    "   ",
    "[CLS] special [SEP] tokens [MASK] in text [UNK] [PAD]",
    "Straße, Œuvre, ﬁ ligature, and ＦＵＬＬＷＩＤＴＨ letters",
    "Ελληνικά και Русский текст",
    "עברית ועربي mixed",
    "Zero\u200bwidth\u200dspaces and soft\u00adhyphen",
    "Control \x00 chars \x07 removed?",
    "don't won't can't it's y'all",
    "C++ and C# are languages; so is Rust-lang.",
    "ॐ हिन्दी भाषा",
    "A long sentence that repeats itself. " * 40,
    "Mr. O'Neil's dog—called \"Rex\"—barked…",
    "ÀÉÎÕÜ àéîõü",
    "tokenization of hyphenated-compound-words and under_scores",
]

PAIRS = [
    ("What is the capital of France?", "Paris is the capital and most populous city of France."),
    ("Short", "A considerably longer second sequence that should be truncated first when the budget is tight."),
    ("A first sequence that is definitely the longer of the two sequences here.", "tiny"),
    ("Café", "北京"),
    ("", "only second"),
]


def encode_cases(tok):
    cases = []

    def add(text, pair=None, max_length=None):
        kw = {"add_special_tokens": True}
        if max_length is not None:
            kw.update(truncation=True, max_length=max_length)
        enc = tok(text, pair, **kw) if pair is not None else tok(text, **kw)
        cases.append(
            {
                "text": text,
                "pair": pair,
                "max_length": max_length,
                "input_ids": enc["input_ids"],
                "token_type_ids": enc["token_type_ids"],
                "attention_mask": enc["attention_mask"],
                "word_ids": enc.word_ids(),
            }
        )

    for s in SENTENCES:
        add(s)
    for s in SENTENCES[:12] + SENTENCES[26:27]:
        add(s, max_length=8)
    add(SENTENCES[26], max_length=128)
    for a, b in PAIRS:
        add(a, b)
        add(a, b, max_length=12)
    add(PAIRS[0][0], PAIRS[0][1], max_length=5)
    return cases


def tokenizer_fixtures():
    if not MINILM.is_dir():
        print(f"skipping tokenizer fixtures: {MINILM} missing (run scripts/fetch.sh)", file=sys.stderr)
        return
    fast = transformers.AutoTokenizer.from_pretrained(str(MINILM))
    with tempfile.TemporaryDirectory() as tmp:
        # The vocab.txt-only layout: transformers builds the WordPiece pipeline from vocab + tokenizer_config.
        for f in ["vocab.txt", "tokenizer_config.json", "special_tokens_map.json"]:
            shutil.copy(MINILM / f, Path(tmp) / f)
        from_vocab = transformers.AutoTokenizer.from_pretrained(tmp)
        data = {
            "generator": "scripts/reference/gen_io_fixtures.py",
            "packages": {"transformers": transformers.__version__, "tokenizers": __import__("tokenizers").__version__},
            "tokenizer_json": encode_cases(fast),
            "vocab_txt": encode_cases(from_vocab),
        }
    (OUT / "minilm_tokens.json").write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    sd = tensors()
    torch.save(sd, OUT / "tiny.bin")
    # safetensors needs contiguous, unshared tensors.
    save_file({k: v.detach().contiguous().clone() for k, v in sd.items()}, str(OUT / "tiny.safetensors"))
    (OUT / "tiny_expected.json").write_text(
        json.dumps(
            {
                "generator": "scripts/reference/gen_io_fixtures.py",
                "packages": {"torch": torch.__version__},
                "skipped": ["embeddings.position_ids"],
                "tensors": expected(sd),
            },
            indent=1,
        )
        + "\n"
    )
    # Legacy (pre-1.6, non-zip) serialisation: must be refused with a clear message.
    torch.save({"w": torch.ones(2)}, OUT / "legacy.bin", _use_new_zipfile_serialization=False)
    malicious_bin(OUT / "malicious_os_system.bin", os.system, "echo pwned")
    malicious_bin(OUT / "malicious_eval.bin", eval, "__import__('os').system('echo pwned')")
    tokenizer_fixtures()


if __name__ == "__main__":
    main()
